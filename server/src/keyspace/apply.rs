//! Applying ops: the deterministic state transition behind every write. Reads inside a batch
//! see the batch's own earlier writes (an overlay), and every change lands in one RocksDB
//! write batch together with the expiry index, the key counts, the replication watermarks
//! and (for batches that originated in this region) the outbox entry other regions receive.
//!
//! Every write produces a new [`KeyState`] stamped with the batch's (HLC, region); remote
//! states are merged, never re-executed, so all regions converge.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rocksdb::WriteBatch;
use smallvec::SmallVec;

use super::bitfield;
use super::hot::{Change, Slot};
use super::notify::{Event, EXPIRED, GENERIC, STRING};
use super::number::{incr_by_float, parse_f64_strict, parse_i64_strict};
use super::value::{Floors, KeyState, Stamp};
use super::write_back::Changes;
use super::{rocks, Keyspace, StorageError, StoredValue, DATABASES};
use crate::op::{
    BitFieldAction, BitOpKind, ExpireCond, ExpireSet, Op, OpBatch, OpError, OpResult, SetCond,
    SetReply,
};

/// Bytes of key states one batch may ship to other regions before its further local writes
/// are refused: with the largest single write's states (32 MB) on top, an outbox entry stays
/// under the 64 MB node-to-node frame.
const MAX_SHIPPED_BATCH_BYTES: usize = 24 * 1024 * 1024;

/// What a batch wrote at one key so far. The data column family gets each key's final value
/// once, when the batch is committed, in key order: RocksDB's memtable inserts sorted keys
/// far more cheaply than random ones (its skip list resumes from the previous insert).
struct Written {
    /// The stored value (`None`: nothing stored).
    value: Option<StoredValue>,
    /// A local (not merged) op wrote the key: its final state goes to the outbox.
    ship: bool,
    /// RocksDB may hold a value from before this batch (so `None` must delete it).
    in_storage: bool,
    /// The hot-cache slot the key's old value was read from (the new one may go into it).
    slot: Option<Arc<Slot>>,
}

type Overlay = HashMap<DataKey, Written, ahash::RandomState>;

/// A data key (`[db][key]`, see [`rocks::data_key`]) as the batch holds it: inline up to 32
/// bytes, so that a write of a short key allocates nothing for it.
type DataKey = SmallVec<[u8; 32]>;

/// `key`'s data key in database `db`.
fn data_key(db: u8, key: &[u8]) -> DataKey {
    let mut out = DataKey::with_capacity(1 + key.len());
    out.push(db);
    out.extend_from_slice(key);
    out
}

/// Bytes serialized as such (like `Bytes`), borrowed.
struct RawBytes<'a>(&'a [u8]);

impl serde::Serialize for RawBytes<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

/// An [`OutboxEntry`] borrowing its states from the batch (the same encoding).
#[derive(serde::Serialize)]
struct OutboxEntryRef<'a> {
    hlc: u64,
    states: Vec<(u8, RawBytes<'a>, RawBytes<'a>)>,
}

/// One shipped key state: database, key, encoded state.
pub type ShippedState = (u8, Bytes, Bytes);

/// What the outbox keeps for one locally originated log entry.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
pub struct OutboxEntry {
    /// HLC of the entry (for lag in milliseconds).
    pub hlc: u64,
    /// The final state of every key the entry's local writes touched.
    pub states: Vec<ShippedState>,
}

impl OutboxEntry {
    /// The HLC of an encoded entry, without decoding its states (it is the first field).
    pub fn hlc_of(encoded: &[u8]) -> Result<u64, StorageError> {
        bincode::deserialize(encoded).map_err(|_| StorageError::Corrupt { key_len: 0 })
    }
}

/// What a key holds as a batch sees it.
struct Current {
    /// The stored bytes (maybe expired, maybe a tombstone).
    raw: Option<StoredValue>,
    /// The decoded state (a fresh tombstone when absent).
    state: KeyState,
    /// The visible value, if the key exists and has not expired.
    live: Option<Bytes>,
}

impl Current {
    /// The key's expiry as a write carries it to another key (RENAME, COPY, MOVE).
    fn expiry(&self) -> ExpireSet {
        self.state.expire_at.map_or(ExpireSet::Clear, ExpireSet::At)
    }
}

/// Where a batch finds a key's stored value (see [`BatchCtx::locate`]).
enum Located {
    /// The value itself (`None`: nothing stored), from the batch's overlay or from storage.
    Value(Option<StoredValue>),
    /// The hot-cache slot holding it, read in place.
    Slot(Arc<Slot>),
}

/// What a write needs to know of the value it replaces.
struct Replaced<'r> {
    /// A value is stored, maybe expired or a tombstone (so RocksDB may hold one).
    stored: bool,
    /// Its expiry (its record in the expiry index).
    expire_at: Option<u64>,
    /// It counts as a key (DBSIZE).
    visible: bool,
    /// The value itself when it is stored but not visible (a tombstone's index record may go).
    hidden: Option<&'r StoredValue>,
}

impl<'r> Replaced<'r> {
    /// What `old_raw` (the stored value, if any) tells.
    fn of(old_raw: Option<&'r StoredValue>) -> Replaced<'r> {
        let visible = old_raw.is_some_and(StoredValue::is_visible);
        Replaced {
            stored: old_raw.is_some(),
            // A fired state has no record in the expiry index.
            expire_at: old_raw
                .filter(|v| !v.is_fired())
                .and_then(StoredValue::expire_at),
            visible,
            hidden: old_raw.filter(|_| !visible),
        }
    }

    /// Nothing stored.
    const NOTHING: Replaced<'static> = Replaced {
        stored: false,
        expire_at: None,
        visible: false,
        hidden: None,
    };

    /// What `encoded` tells if it holds a string with no counter entries (`None`: any other
    /// state), read where it lies, without copying or decoding its value.
    fn string(encoded: &[u8]) -> Option<Replaced<'static>> {
        let expire_at = super::value::string_expiry(encoded)?;
        Some(Replaced {
            stored: true,
            expire_at,
            visible: true,
            hidden: None,
        })
    }

    /// [`Replaced::string`] and the string's floors.
    fn string_with_floors(encoded: &[u8]) -> Option<(Replaced<'static>, Floors)> {
        let old = Replaced::string(encoded)?;
        Some((old, super::value::string_floors(encoded)))
    }
}

/// The state of one batch being applied.
pub(super) struct BatchCtx<'a> {
    ks: &'a Keyspace,
    now_ms: u64,
    stamp: Stamp,
    /// True when the batch was proposed in this region (its effects go to the outbox).
    local: bool,
    batch: WriteBatch,
    overlay: Overlay,
    count_delta: [i64; DATABASES],
    flushed: [bool; DATABASES],
    /// Watermarks advanced in this batch: origin region → index.
    watermarks: HashMap<u8, u64>,
    /// HLC of the last merged entry per origin, advanced in this batch.
    merged_hlc: HashMap<u8, u64>,
    /// What other regions reported merging, advanced in this batch: (from, origin) → HLC.
    seen: HashMap<(u8, u8), u64>,
    /// Outbox trimmed up to (inclusive).
    trim_outbox: Option<u64>,
    /// The outbox entry written (index, bytes): shippers get woken, the tail gets it.
    wrote_outbox: Option<(u64, Bytes)>,
    /// Applying an `Op::Merge` right now.
    merging: bool,
    /// Floors for states created from nothing in this batch (computed on first use).
    fresh_floors: Option<Vec<(u8, u64)>>,
    /// The hot cache's replacement count before the batch read it (see `hot`).
    cache_replacements: u64,
    /// The data key and cache slot of the latest read served by the cache: the next write
    /// of that key remembers the slot.
    last_slot: Option<(DataKey, Arc<Slot>)>,
    /// Origins one of whose merges this batch refused: their later merges are refused too,
    /// so that no watermark moves past the refused entry.
    refused_origins: Vec<u8>,
    /// Expiry index changes (key, put or delete), in order, kept apart from `batch` until the
    /// commit: they go to the write-back set, or into the batch (before a flush's range deletes
    /// when the batch flushes a database).
    expiry_changes: Vec<(Vec<u8>, bool)>,
    /// Tombstone index changes (key, put or delete), in order, kept apart like
    /// `expiry_changes`.
    tombstone_changes: Vec<(Vec<u8>, bool)>,
    /// The batch collects tombstones (`Op::Forget`): it goes to RocksDB directly, so that the
    /// next collection, which reads the index as RocksDB has it, does not see them again.
    collecting: bool,
    /// Ops still to skip (answering nil) after a failed `Op::Unchanged`.
    skip: u32,
    /// Keyspace notifications of this batch, when they are on.
    events: Option<Vec<Event>>,
    /// Keys this batch changed, while a client tracks keys (CLIENT TRACKING).
    touched: Option<Vec<Bytes>>,
    /// Bytes of the key states this batch ships to other regions so far (counted per write).
    shipped_bytes: usize,
    /// Churn counter slot → bumps by this batch (see [`Keyspace::churn`]).
    churn_delta: HashMap<u16, u64>,
    /// Applying expiry's own delete (it bumps no churn counter: Redis does not abort a WATCH
    /// of a key already expired when watched).
    quiet_churn: bool,
    /// The churn epoch this batch starts (an `Op::ChurnEpoch` in it): the counters restart
    /// from zero at it.
    new_churn_epoch: Option<u64>,
    /// The log index of the entry being applied (`None` outside the Raft log: unit tests).
    log_index: Option<u64>,
}

impl<'a> BatchCtx<'a> {
    pub(super) fn new(ks: &'a Keyspace, batch: &OpBatch, log_index: Option<u64>) -> BatchCtx<'a> {
        let my_region = ks.region_id();
        BatchCtx {
            ks,
            now_ms: batch.now_ms,
            stamp: Stamp {
                hlc: batch.hlc,
                region: batch.origin,
            },
            local: batch.origin == my_region,
            batch: WriteBatch::default(),
            overlay: Overlay::default(),
            count_delta: [0; DATABASES],
            flushed: [false; DATABASES],
            watermarks: HashMap::new(),
            merged_hlc: HashMap::new(),
            seen: HashMap::new(),
            trim_outbox: None,
            wrote_outbox: None,
            merging: false,
            fresh_floors: None,
            cache_replacements: ks.hot.replacements(),
            last_slot: None,
            refused_origins: Vec::new(),
            expiry_changes: Vec::new(),
            tombstone_changes: Vec::new(),
            collecting: false,
            skip: 0,
            events: ks.notifier.enabled().then(Vec::new),
            touched: ks.tracking.active().then(Vec::new),
            shipped_bytes: 0,
            churn_delta: HashMap::new(),
            quiet_churn: false,
            new_churn_epoch: None,
            log_index,
        }
    }

    /// Records a keyspace notification (when they are on).
    fn notify(&mut self, db: u8, key: &Bytes, class: u32, name: &'static str) {
        if let Some(events) = self.events.as_mut() {
            // A copy: the event may wait in subscribers' queues, the op's buffer need not.
            events.push(Event {
                db,
                key: Bytes::copy_from_slice(key),
                class,
                name,
            });
        }
    }

    /// The keys changed so far (for tracking clients, once the batch is committed) and whether
    /// a database was flushed.
    pub(super) fn take_touched(&mut self) -> (Vec<Bytes>, bool) {
        let touched = self
            .touched
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        (touched, self.flushed.iter().any(|f| *f))
    }

    /// The notifications recorded so far (to publish once the batch is committed).
    pub(super) fn take_events(&mut self) -> Vec<Event> {
        self.events.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Where `key`'s physically stored value is, as this batch sees it: the batch's own write,
    /// nothing (its database was flushed in the batch), a hot-cache slot (remembered for the
    /// key's next write), or storage (the pending set, then RocksDB).
    fn locate(&mut self, db: u8, key: &[u8]) -> Result<Located, StorageError> {
        let data_key = data_key(db, key);
        if let Some(w) = self.overlay.get(&data_key[..]) {
            return Ok(Located::Value(w.value.clone()));
        }
        if self.flushed[db as usize] {
            return Ok(Located::Value(None));
        }
        if let Some(slot) = self.ks.hot.slot(&data_key) {
            self.last_slot = Some((data_key, slot.clone()));
            return Ok(Located::Slot(slot));
        }
        Ok(Located::Value(self.ks.read_storage(&data_key)?))
    }

    /// The value physically stored (maybe expired or a tombstone), as this batch sees it.
    fn read_raw(&mut self, db: u8, key: &[u8]) -> Result<Option<StoredValue>, StorageError> {
        Ok(match self.locate(db, key)? {
            Located::Value(value) => value,
            Located::Slot(slot) => slot.value(),
        })
    }

    /// What `key` holds as this batch sees it.
    fn read(&mut self, db: u8, key: &[u8]) -> Result<Current, StorageError> {
        let raw = self.read_raw(db, key)?;
        let state = match &raw {
            Some(v) => v.state(),
            // Nothing here. A merge takes the remote state as it is; a local write creates the
            // key from nothing, with this region's floors (which a SET's register carries).
            None if self.merging => KeyState {
                deleted: true,
                ..KeyState::default()
            },
            None => KeyState {
                deleted: true,
                floors: self.fresh_floors(),
                ..KeyState::default()
            },
        };
        let expired = state.expire_at.is_some_and(|at| at <= self.now_ms);
        let live = if expired { None } else { state.visible() };
        Ok(Current { raw, state, live })
    }

    /// The floors of a state created from nothing here (see `value`): per other region, one
    /// past the HLC up to which this region merged its entries (an entry below it that this
    /// region does not hold was dropped with a collected tombstone); for this region, the
    /// batch's own clock. Empty with one region (nothing is ever collected there).
    fn fresh_floors(&mut self) -> Vec<(u8, u64)> {
        if !self.ks.keeps_tombstones() {
            return Vec::new();
        }
        if let Some(f) = &self.fresh_floors {
            return f.clone();
        }
        let me = self.stamp.region;
        let mut floors: Vec<(u8, u64)> = self
            .ks
            .merged_hlcs()
            .into_iter()
            .filter(|(r, _)| *r != me)
            .map(|(r, h)| (r, h.saturating_add(1)))
            .collect();
        floors.push((me, self.stamp.hlc));
        floors.sort_unstable();
        self.fresh_floors = Some(floors.clone());
        floors
    }

    /// Writes `new` at `key`, given what was physically there.
    fn write(&mut self, db: u8, key: &[u8], old_raw: Option<&StoredValue>, new: KeyState) {
        self.write_over(db, key, Replaced::of(old_raw), new);
    }

    /// Writes `new` at `key` over what `old` tells of the value there.
    fn write_over(&mut self, db: u8, key: &[u8], old: Replaced<'_>, mut new: KeyState) {
        if new.has_old_incarnations() && self.ks.keeps_tombstones() && self.ks.region_count() > 0 {
            let bounds: SmallVec<[u64; 8]> = (0..self.ks.region_count())
                .map(|origin| self.merged_everywhere(origin))
                .collect();
            new.compact(|origin| bounds.get(origin as usize).copied().unwrap_or(0));
        }
        let encoded = new.encode();
        self.write_encoded(db, key, old, &new, encoded);
    }

    /// [`super::merged_everywhere`] for `origin` as this batch sees the reports (those it
    /// applied itself first); 0 for a report that cannot be read. Reports are applied through
    /// the log, so every replica of the region computes the same bound at the same entry.
    fn merged_everywhere(&self, origin: u8) -> u64 {
        super::merged_everywhere(
            0..self.ks.region_count(),
            self.ks.region_id(),
            origin,
            |from| match self.seen.get(&(from, origin)) {
                Some(h) => *h,
                None => self.ks.seen(from, origin).unwrap_or(0),
            },
        )
    }

    /// [`BatchCtx::write_over`] with `new`'s encoding made by the caller, who may leave `new`'s
    /// own value empty: only its stamps and flags are read here.
    fn write_encoded(
        &mut self,
        db: u8,
        key: &[u8],
        old: Replaced<'_>,
        new: &KeyState,
        encoded: StoredValue,
    ) {
        if let Some(touched) = self.touched.as_mut() {
            touched.push(Bytes::copy_from_slice(key));
        }
        // The key's cache slot, if the read before this write found it there: its data key
        // was built for that lookup and is taken over rather than built again.
        let (data_key, read_slot) = match self.last_slot.take() {
            Some((read_key, slot)) if read_key.first() == Some(&db) && read_key[1..] == *key => {
                (read_key, Some(slot))
            }
            _ => (data_key(db, key), None),
        };
        let old_at = old.expire_at;
        let old_visible = old.visible;
        let new_visible = encoded.is_visible();
        // A single region never needs tombstones: nobody can send an older state.
        let keep = new_visible || self.ks.keeps_tombstones();
        let new_at = if keep && !new.fired {
            encoded.expire_at()
        } else {
            None
        };
        if old_at != new_at {
            if let Some(at) = old_at {
                self.expiry_change(rocks::expiry_key(db, at, key), false);
            }
            if let Some(at) = new_at {
                self.expiry_change(rocks::expiry_key(db, at, key), true);
            }
        }
        self.index_tombstone(&data_key, old.hidden, keep.then_some(new));
        // Merged remote states are not shipped again (each region ships only its own writes).
        let ship = self.local && !self.merging;
        if ship && self.ks.keeps_tombstones() {
            self.shipped_bytes += data_key.len() + encoded.len();
        }
        let stored = keep.then_some(encoded);
        self.count_delta[db as usize] += i64::from(new_visible) - i64::from(old_visible);
        // A key created or removed (or written over while missing or expired) churns its slot.
        let old_live = old_visible && old_at.is_none_or(|at| at > self.now_ms);
        let churned = !old_live || !new_visible;
        if churned && !self.quiet_churn {
            let slot = super::churn_slot(self.current_churn_epoch(), db, key) as u16;
            *self.churn_delta.entry(slot).or_insert(0) += 1;
        }
        match self.overlay.entry(data_key) {
            Entry::Occupied(mut e) => {
                let w = e.get_mut();
                w.value = stored;
                w.ship |= ship;
            }
            // The first write of the key in this batch: `old_raw` came from storage.
            Entry::Vacant(e) => {
                e.insert(Written {
                    value: stored,
                    ship,
                    in_storage: old.stored,
                    slot: read_slot,
                });
            }
        }
    }

    /// Keeps the tombstone index in step with one key's change to `new` (`None`: nothing
    /// stored) from a value that was not visible, `hidden` (`None`: a visible one or nothing).
    fn index_tombstone(
        &mut self,
        data_key: &[u8],
        hidden: Option<&StoredValue>,
        new: Option<&KeyState>,
    ) {
        let new_stamp = new.and_then(KeyState::collect_stamp);
        if let Some(old) = hidden {
            if let Some(old_stamp) = old.state().collect_stamp() {
                if Some(old_stamp) != new_stamp {
                    let key = rocks::tombstone_key(old_stamp.hlc, old_stamp.region, data_key);
                    self.tombstone_changes.push((key, false));
                }
            }
        }
        if let Some(stamp) = new_stamp {
            let key = rocks::tombstone_key(stamp.hlc, stamp.region, data_key);
            self.tombstone_changes.push((key, true));
        }
    }

    /// Drops `key`'s tombstone stamped `stamp` if the key still holds exactly it, and its
    /// index record either way. Returns whether the key was dropped.
    fn forget(&mut self, db: u8, key: &[u8], stamp: Stamp) -> Result<bool, StorageError> {
        let data_key = data_key(db, key);
        let index_key = rocks::tombstone_key(stamp.hlc, stamp.region, &data_key);
        self.tombstone_changes.push((index_key, false));
        let Some(raw) = self.read_raw(db, key)? else {
            return Ok(false);
        };
        // A collectable tombstone or fired state is never visible: nothing else to check.
        if raw.state().collect_stamp() != Some(stamp) {
            return Ok(false);
        }
        self.overlay
            .entry(data_key)
            .and_modify(|w| w.value = None)
            .or_insert(Written {
                value: None,
                ship: false,
                in_storage: true,
                slot: None,
            });
        Ok(true)
    }

    fn cf(&self, name: &str) -> &'a rocksdb::ColumnFamily {
        rocks::cf(&self.ks.db, name)
    }

    /// Puts (`put`) or deletes an expiry index record.
    fn expiry_change(&mut self, key: Vec<u8>, put: bool) {
        self.expiry_changes.push((key, put));
    }

    /// Moves the expiry and tombstone index changes kept aside into the write batch, in order.
    fn expiry_changes_to_batch(&mut self) {
        let records = [
            (rocks::CF_EXPIRY, std::mem::take(&mut self.expiry_changes)),
            (rocks::CF_META, std::mem::take(&mut self.tombstone_changes)),
        ];
        for (cf, changes) in records {
            let cf = self.cf(cf);
            for (key, put) in changes {
                if put {
                    self.batch.put_cf(cf, key, b"");
                } else {
                    self.batch.delete_cf(cf, key);
                }
            }
        }
    }

    fn flush_db(&mut self, db: u8) {
        // Expiry changes before the flush go before its range deletes.
        self.expiry_changes_to_batch();
        self.batch
            .delete_range_cf(self.cf(rocks::CF_DATA), vec![db], vec![db + 1]);
        self.batch
            .delete_range_cf(self.cf(rocks::CF_EXPIRY), vec![db], vec![db + 1]);
        self.overlay.retain(|k, _| k.first() != Some(&db));
        let current = self.ks.counts[db as usize].load(std::sync::atomic::Ordering::Relaxed);
        self.count_delta[db as usize] = -current;
        self.flushed[db as usize] = true;
    }

    /// Sets the value of a key (SET-like) over what it held, applying the expiry rule.
    fn put_string(&mut self, db: u8, key: &[u8], cur: Current, value: &[u8], expire: ExpireSet) {
        let Current {
            raw,
            mut state,
            live,
        } = cur;
        let stamp = self.stamp;
        state.set_register(value, stamp);
        match expire {
            ExpireSet::Clear => state.set_expire(None, stamp),
            ExpireSet::At(at) => state.set_expire(Some(at), stamp),
            ExpireSet::Keep if live.is_some() => {}
            ExpireSet::Keep => state.set_expire(None, stamp),
        }
        self.write(db, key, raw.as_ref(), state);
    }

    /// A plain SET (no condition, no reply but OK, no KEEPTTL), made here, of a key holding a
    /// string without counter entries, or nothing: the new state is a fresh string that keeps
    /// only the old one's floors (or, from nothing, a new key's), so the old value is neither
    /// copied out of its cache slot nor decoded; only its expiry and floors are read. Returns
    /// false, having written nothing, where the general path must run (the key holds counters
    /// or a tombstone, or the batch merges another region's states).
    fn set_plain(
        &mut self,
        db: u8,
        key: &[u8],
        value: &Bytes,
        expire: ExpireSet,
    ) -> Result<bool, StorageError> {
        let expire_at = match expire {
            ExpireSet::Clear => None,
            ExpireSet::At(at) => Some(at),
            ExpireSet::Keep => return Ok(false),
        };
        if self.merging {
            return Ok(false);
        }
        let Some((old, floors)) = self.peek_string(db, key)? else {
            return Ok(false);
        };
        // The value is encoded from the op where it lies, neither cloned nor copied first.
        let mut new = KeyState::string(b"", self.stamp, expire_at);
        new.floors = match floors {
            Some(floors) => floors,
            None => self.fresh_floors(),
        };
        let encoded = new.encode_with_value(value);
        self.write_encoded(db, key, old, &new, encoded);
        Ok(true)
    }

    /// Merges `remote` into `key` by storing it as it came, where that is what the merge
    /// yields ([`super::value::merge_yields_remote`]: the key holds a string without counter
    /// entries, or nothing, stamped before the remote state): neither state is decoded nor its
    /// value copied (the local one is read in its cache slot). Returns false, having written
    /// nothing, where the general path must run, and always while keyspace notifications are
    /// on (they compare the values before and after).
    fn merge_in_place(
        &mut self,
        db: u8,
        key: &[u8],
        remote: &StoredValue,
    ) -> Result<bool, StorageError> {
        if self.events.is_some() || !self.ks.merges_in_place() {
            return Ok(false);
        }
        let takes = |local: Option<&[u8]>| -> Option<Replaced<'static>> {
            if !super::value::merge_yields_remote(local, remote.as_bytes()) {
                return None;
            }
            match local {
                None => Some(Replaced::NOTHING),
                Some(encoded) => Replaced::string(encoded),
            }
        };
        let old = match self.locate(db, key)? {
            Located::Value(value) => takes(value.as_ref().map(|v| &v.as_bytes()[..])),
            Located::Slot(slot) => slot.with_encoded(takes),
        };
        let Some(old) = old else {
            return Ok(false);
        };
        // (Its stamps and flags; the value stays a slice of the remote's buffer.)
        let new = remote.state();
        self.write_encoded(db, key, old, &new, remote.clone());
        Ok(true)
    }

    /// What a write over `key` replaces, where the key holds a string without counter entries
    /// (with its floors) or nothing (no floors) as this batch sees it (found by
    /// [`BatchCtx::locate`], as every read of the batch; a cached value is read in its slot,
    /// not copied out); `None` for any other state.
    fn peek_string(
        &mut self,
        db: u8,
        key: &[u8],
    ) -> Result<Option<(Replaced<'static>, Option<Floors>)>, StorageError> {
        let string = |encoded: Option<&[u8]>| match encoded {
            None => Some((Replaced::NOTHING, None)),
            Some(e) => Replaced::string_with_floors(e).map(|(old, floors)| (old, Some(floors))),
        };
        Ok(match self.locate(db, key)? {
            Located::Value(value) => string(value.as_ref().map(|v| &v.as_bytes()[..])),
            Located::Slot(slot) => slot.with_encoded(string),
        })
    }

    /// A churn counter as stored before this batch (zero once the batch started an epoch).
    fn stored_churn(&self, slot: usize) -> u64 {
        if self.new_churn_epoch.is_some() {
            return 0;
        }
        self.ks.churn[slot].load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The churn epoch as this point of the batch sees it.
    fn current_churn_epoch(&self) -> u64 {
        self.new_churn_epoch
            .unwrap_or_else(|| self.ks.churn_epoch())
    }

    /// The churn counters this batch changed, with their new values.
    fn new_churn(&self) -> Vec<(u16, u64)> {
        self.churn_delta
            .iter()
            .map(|(slot, bumps)| (*slot, self.stored_churn(usize::from(*slot)) + bumps))
            .collect()
    }

    /// Makes the batch's churn counters (and epoch) visible to WATCH, after its keys were
    /// published: a WATCH that reads the counter, then the key, may only see the key newer
    /// than the counter, which aborts its transaction needlessly at worst.
    fn store_churn(&self, churn: &[(u16, u64)]) {
        use std::sync::atomic::Ordering::Release;
        if let Some(epoch) = self.new_churn_epoch {
            for counter in self.ks.churn.iter() {
                counter.store(0, Release);
            }
            self.ks.churn_epoch.store(epoch, Release);
        }
        for (slot, value) in churn {
            self.ks.churn[usize::from(*slot)].store(*value, Release);
        }
    }

    /// `key`'s churn counter as this point of the batch sees it.
    fn churn_now(&self, db: u8, key: &[u8]) -> u64 {
        let slot = super::churn_slot(self.current_churn_epoch(), db, key);
        self.stored_churn(slot) + self.churn_delta.get(&(slot as u16)).copied().unwrap_or(0)
    }

    /// Deletes a key (leaves a tombstone where tombstones are kept).
    fn delete_key(&mut self, db: u8, key: &[u8], cur: Current) {
        let Current { raw, mut state, .. } = cur;
        state.delete(self.stamp);
        self.write(db, key, raw.as_ref(), state);
    }

    /// Applies one op.
    pub(super) fn apply(&mut self, op: &Op) -> Result<OpResult, StorageError> {
        if self.skip > 0 {
            // The rest of a transaction whose watched keys changed.
            self.skip -= 1;
            return Ok(OpResult::Nil);
        }
        // With several regions the batch's states are shipped as one outbox entry, in one
        // node-to-node frame: once they pass the budget, this batch's further local writes are
        // refused (the same on every replica) rather than making an entry that cannot ship.
        if self.shipped_bytes > MAX_SHIPPED_BATCH_BYTES && self.local && op.changes_keys() {
            return Ok(OpResult::Err(OpError::ShippedBatchTooLarge));
        }
        if let Err(e) = op.check_dbs() {
            if let Op::Merge { origin, .. } = op {
                self.refused_origins.push(*origin);
            }
            // A bad WATCH check fails closed: its transaction is skipped.
            if let Op::Unchanged { then, .. } | Op::UnchangedSince { then, .. } = op {
                self.skip = *then;
            }
            return Ok(OpResult::Err(e));
        }
        Ok(match op {
            Op::Set {
                db,
                key,
                value,
                expire,
                cond,
                reply,
            } => {
                if *cond == SetCond::Always
                    && *reply == SetReply::OkOrNil
                    && self.set_plain(*db, key, value, *expire)?
                {
                    self.notify(*db, key, STRING, "set");
                    if matches!(expire, ExpireSet::At(_)) {
                        self.notify(*db, key, GENERIC, "expire");
                    }
                    return Ok(OpResult::Ok);
                }
                let cur = self.read(*db, key)?;
                let live = cur.live.clone();
                let allowed = match cond {
                    SetCond::Always => true,
                    SetCond::Nx => live.is_none(),
                    SetCond::Xx => live.is_some(),
                };
                if allowed {
                    self.put_string(*db, key, cur, value, *expire);
                    self.notify(*db, key, STRING, "set");
                    if matches!(expire, ExpireSet::At(_)) {
                        self.notify(*db, key, GENERIC, "expire");
                    }
                }
                match reply {
                    SetReply::OkOrNil if allowed => OpResult::Ok,
                    SetReply::OkOrNil => OpResult::Nil,
                    SetReply::Flag => OpResult::Int(allowed as i64),
                    SetReply::Old => live.map_or(OpResult::Nil, OpResult::Bulk),
                }
            }
            Op::MSet { db, pairs, nx } => {
                if *nx {
                    for (k, _) in pairs {
                        if self.read(*db, k)?.live.is_some() {
                            return Ok(OpResult::Int(0));
                        }
                    }
                }
                for (k, v) in pairs {
                    if !self.set_plain(*db, k, v, ExpireSet::Clear)? {
                        let cur = self.read(*db, k)?;
                        self.put_string(*db, k, cur, v, ExpireSet::Clear);
                    }
                    self.notify(*db, k, STRING, "set");
                }
                if *nx {
                    OpResult::Int(1)
                } else {
                    OpResult::Ok
                }
            }
            Op::Del { db, keys } => {
                let mut removed = 0;
                for k in keys {
                    let cur = self.read(*db, k)?;
                    let existed = cur.live.is_some();
                    if cur.raw.is_some() && !cur.state.deleted || existed {
                        self.delete_key(*db, k, cur);
                    }
                    if existed {
                        self.notify(*db, k, GENERIC, "del");
                    }
                    removed += existed as i64;
                }
                OpResult::Int(removed)
            }
            Op::GetDel { db, key } => {
                let cur = self.read(*db, key)?;
                match cur.live.clone() {
                    None => OpResult::Nil,
                    Some(v) => {
                        self.delete_key(*db, key, cur);
                        self.notify(*db, key, GENERIC, "del");
                        OpResult::Bulk(v)
                    }
                }
            }
            Op::GetEx { db, key, expire } => {
                let Current {
                    raw,
                    mut state,
                    live,
                } = self.read(*db, key)?;
                match live.clone() {
                    None => OpResult::Nil,
                    Some(v) => {
                        let stamp = self.stamp;
                        match expire {
                            ExpireSet::Keep => {}
                            ExpireSet::At(at) if *at <= self.now_ms => {
                                self.delete_key(*db, key, Current { raw, state, live });
                                self.notify(*db, key, GENERIC, "del");
                            }
                            ExpireSet::At(at) => {
                                state.set_expire(Some(*at), stamp);
                                self.write(*db, key, raw.as_ref(), state);
                                self.notify(*db, key, GENERIC, "expire");
                            }
                            ExpireSet::Clear if state.expire_at.is_some() => {
                                state.set_expire(None, stamp);
                                self.write(*db, key, raw.as_ref(), state);
                                self.notify(*db, key, GENERIC, "persist");
                            }
                            ExpireSet::Clear => {}
                        }
                        OpResult::Bulk(v)
                    }
                }
            }
            Op::IncrBy { db, key, delta } => {
                let Current {
                    raw,
                    mut state,
                    live,
                } = self.read(*db, key)?;
                let current = match &live {
                    None => 0,
                    Some(v) => match parse_i64_strict(v) {
                        Some(n) => n,
                        None => return Ok(OpResult::Err(OpError::NotInteger)),
                    },
                };
                let Some(next) = current.checked_add(*delta) else {
                    return Ok(OpResult::Err(OpError::Overflow));
                };
                if live.is_none() && !state.deleted {
                    // Expired: start from "0", observing the old counter.
                    state.set_register(b"0", self.stamp);
                    state.set_expire(None, self.stamp);
                }
                // Absent or deleted: the increment counts on the tombstone (base 0) and writes
                // no register, so a SET or DEL made concurrently in another region keeps its
                // place in the registers' order and this increment counts on top of it. (As a
                // register write of "0" stamped now, it beat an earlier SET from elsewhere:
                // eu SET k 15, us INCRBY k 100 gave 100 instead of 115.)
                if live.is_none() && *delta == 0 {
                    // INCRBY k 0 creates k as "0": on a tombstone the counter must move to
                    // make the key visible, so it moves by +1 and -1.
                    state.add(self.stamp.region, 1, self.stamp.hlc);
                    state.add(self.stamp.region, -1, self.stamp.hlc);
                } else {
                    state.add(self.stamp.region, *delta, self.stamp.hlc);
                }
                self.write(*db, key, raw.as_ref(), state);
                self.notify(*db, key, STRING, "incrby");
                OpResult::Int(next)
            }
            Op::IncrByFloat { db, key, .. } | Op::IncrByDecimal { db, key, .. } => {
                let cur = self.read(*db, key)?;
                if let Some(v) = &cur.live {
                    if parse_f64_strict(v).is_none() {
                        return Ok(OpResult::Err(OpError::NotFloat));
                    }
                }
                let sum = match op {
                    Op::IncrByDecimal { delta, .. } => incr_by_float(cur.live.as_deref(), delta),
                    Op::IncrByFloat { delta, .. } => {
                        incr_by_float(cur.live.as_deref(), format!("{delta}").as_bytes())
                    }
                    _ => unreachable!("matched above"),
                };
                let Some(text) = sum else {
                    return Ok(OpResult::Err(OpError::NanOrInfinity));
                };
                self.put_string(*db, key, cur, text.as_bytes(), ExpireSet::Keep);
                self.notify(*db, key, STRING, "incrbyfloat");
                OpResult::Bulk(Bytes::from(text))
            }
            Op::Append { db, key, value } => {
                let cur = self.read(*db, key)?;
                let mut buf = BytesMut::from(&cur.live.clone().unwrap_or_default()[..]);
                if buf.len() + value.len() > self.ks.max_string_len() {
                    return Ok(OpResult::Err(OpError::StringTooLong));
                }
                buf.extend_from_slice(value);
                let len = buf.len() as i64;
                self.put_string(*db, key, cur, &buf, ExpireSet::Keep);
                self.notify(*db, key, STRING, "append");
                OpResult::Int(len)
            }
            Op::SetRange {
                db,
                key,
                offset,
                value,
            } => {
                let cur = self.read(*db, key)?;
                let mut buf = cur.live.clone().unwrap_or_default().to_vec();
                if value.is_empty() {
                    return Ok(OpResult::Int(buf.len() as i64));
                }
                let Some(end) = usize::try_from(*offset)
                    .ok()
                    .and_then(|o| o.checked_add(value.len()))
                else {
                    return Ok(OpResult::Err(OpError::StringTooLong));
                };
                if end > self.ks.max_string_len() {
                    return Ok(OpResult::Err(OpError::StringTooLong));
                }
                if buf.len() < end {
                    buf.resize(end, 0);
                }
                buf[end - value.len()..end].copy_from_slice(value);
                self.put_string(*db, key, cur, &buf, ExpireSet::Keep);
                self.notify(*db, key, STRING, "setrange");
                OpResult::Int(buf.len() as i64)
            }
            Op::SetBit {
                db,
                key,
                offset,
                on,
            } => {
                let cur = self.read(*db, key)?;
                let byte = usize::try_from(*offset >> 3).unwrap_or(usize::MAX);
                if byte >= self.ks.max_string_len() {
                    return Ok(OpResult::Err(OpError::StringTooLong));
                }
                let mut buf = cur.live.clone().unwrap_or_default().to_vec();
                let grown = cur.live.is_none() || buf.len() <= byte;
                if buf.len() <= byte {
                    buf.resize(byte + 1, 0);
                }
                let mask = 1u8 << (7 - (*offset & 7));
                let old = buf[byte] & mask != 0;
                // As Redis 7.0: a bit already as asked on an existing string of that length
                // changes nothing (no write, no event).
                if grown || old != *on {
                    if *on {
                        buf[byte] |= mask;
                    } else {
                        buf[byte] &= !mask;
                    }
                    self.put_string(*db, key, cur, &buf, ExpireSet::Keep);
                    self.notify(*db, key, STRING, "setbit");
                }
                OpResult::Int(i64::from(old))
            }
            Op::BitOp {
                db,
                kind,
                dst,
                srcs,
            } => {
                let mut values = Vec::with_capacity(srcs.len());
                for src in srcs {
                    values.push(self.read(*db, src)?.live.unwrap_or_default());
                }
                let result = bit_op(*kind, &values);
                let cur = self.read(*db, dst)?;
                if result.is_empty() {
                    if cur.live.is_some() {
                        self.delete_key(*db, dst, cur);
                        self.notify(*db, dst, GENERIC, "del");
                    }
                    return Ok(OpResult::Int(0));
                }
                if result.len() > self.ks.max_string_len() {
                    return Ok(OpResult::Err(OpError::StringTooLong));
                }
                self.put_string(*db, dst, cur, &result, ExpireSet::Clear);
                self.notify(*db, dst, STRING, "set");
                OpResult::Int(result.len() as i64)
            }
            Op::BitField { db, key, ops } => {
                let cur = self.read(*db, key)?;
                let Some(highest) = bitfield::highest_written_bit(ops) else {
                    let value = cur.live.unwrap_or_default();
                    return Ok(OpResult::Ints(bitfield::read(&value, ops)));
                };
                let len = usize::try_from(highest >> 3).unwrap_or(usize::MAX);
                if len >= self.ks.max_string_len() {
                    return Ok(OpResult::Err(OpError::StringTooLong));
                }
                let mut buf = cur.live.clone().unwrap_or_default().to_vec();
                // A missing key is created, a short one grown, even if no write then lands.
                let grown = cur.live.is_none() || buf.len() <= len;
                if buf.len() <= len {
                    buf.resize(len + 1, 0);
                }
                let (replies, changed) = bitfield::run(&mut buf, ops);
                if grown || changed {
                    self.put_string(*db, key, cur, &buf, ExpireSet::Keep);
                }
                // As Redis 7.0: the event when a write landed on a created or grown string, or
                // changed a field's value.
                let landed = ops
                    .iter()
                    .zip(&replies)
                    .any(|(op, reply)| op.action != BitFieldAction::Get && reply.is_some());
                if changed || (grown && landed) {
                    self.notify(*db, key, STRING, "setbit");
                }
                OpResult::Ints(replies)
            }
            Op::Expire {
                db,
                key,
                at_ms,
                cond,
            } => {
                let Current {
                    raw,
                    mut state,
                    live,
                } = self.read(*db, key)?;
                if live.is_none() {
                    return Ok(OpResult::Int(0));
                }
                let current = state.expire_at;
                let allowed = match (cond, at_ms) {
                    (ExpireCond::Always, _) => true,
                    (ExpireCond::Nx, _) => current.is_none(),
                    (ExpireCond::Xx, _) => current.is_some(),
                    // No expiry counts as infinite.
                    (ExpireCond::Gt, Some(new)) => current.is_some_and(|c| *new > c),
                    (ExpireCond::Lt, Some(new)) => current.is_none_or(|c| *new < c),
                    (ExpireCond::XxLt, Some(new)) => current.is_some_and(|c| *new < c),
                    (ExpireCond::Gt | ExpireCond::Lt | ExpireCond::XxLt, None) => false,
                };
                if !allowed {
                    return Ok(OpResult::Int(0));
                }
                match at_ms {
                    None if current.is_none() => OpResult::Int(0),
                    Some(at) if *at <= self.now_ms => {
                        self.delete_key(*db, key, Current { raw, state, live });
                        self.notify(*db, key, GENERIC, "del");
                        OpResult::Int(1)
                    }
                    at => {
                        state.set_expire(*at, self.stamp);
                        self.write(*db, key, raw.as_ref(), state);
                        let name = if at.is_some() { "expire" } else { "persist" };
                        self.notify(*db, key, GENERIC, name);
                        OpResult::Int(1)
                    }
                }
            }
            Op::Rename { db, src, dst, nx } => {
                let src_cur = self.read(*db, src)?;
                let Some(value) = src_cur.live.clone() else {
                    return Ok(OpResult::Err(OpError::NoSuchKey));
                };
                if src == dst {
                    return Ok(if *nx { OpResult::Int(0) } else { OpResult::Ok });
                }
                let dst_cur = self.read(*db, dst)?;
                if *nx && dst_cur.live.is_some() {
                    return Ok(OpResult::Int(0));
                }
                let expire = src_cur.expiry();
                self.delete_key(*db, src, src_cur);
                self.put_string(*db, dst, dst_cur, &value, expire);
                self.notify(*db, src, GENERIC, "rename_from");
                self.notify(*db, dst, GENERIC, "rename_to");
                if *nx {
                    OpResult::Int(1)
                } else {
                    OpResult::Ok
                }
            }
            Op::Copy {
                db,
                src,
                dst_db,
                dst,
                replace,
            } => {
                let src_cur = self.read(*db, src)?;
                let expire = src_cur.expiry();
                let Some(value) = src_cur.live else {
                    return Ok(OpResult::Int(0));
                };
                if db == dst_db && src == dst {
                    return Ok(OpResult::Int(0));
                }
                let dst_cur = self.read(*dst_db, dst)?;
                if dst_cur.live.is_some() && !replace {
                    return Ok(OpResult::Int(0));
                }
                self.put_string(*dst_db, dst, dst_cur, &value, expire);
                self.notify(*dst_db, dst, GENERIC, "copy_to");
                OpResult::Int(1)
            }
            Op::Move { db, key, dst_db } => {
                let src_cur = self.read(*db, key)?;
                let Some(value) = src_cur.live.clone() else {
                    return Ok(OpResult::Int(0));
                };
                if db == dst_db {
                    return Ok(OpResult::Int(0));
                }
                let dst_cur = self.read(*dst_db, key)?;
                if dst_cur.live.is_some() {
                    return Ok(OpResult::Int(0));
                }
                let expire = src_cur.expiry();
                self.put_string(*dst_db, key, dst_cur, &value, expire);
                self.delete_key(*db, key, src_cur);
                self.notify(*db, key, GENERIC, "move_from");
                self.notify(*dst_db, key, GENERIC, "move_to");
                OpResult::Int(1)
            }
            Op::ChurnEpoch | Op::ChurnEpochMixed => {
                // (Outside the log, a number that still changes with each new epoch.)
                let index = self
                    .log_index
                    .unwrap_or_else(|| (self.current_churn_epoch() & !super::CHURN_MIXED) + 1);
                let mixed = matches!(op, Op::ChurnEpochMixed);
                let epoch = if mixed {
                    index | super::CHURN_MIXED
                } else {
                    index
                };
                self.new_churn_epoch = Some(epoch);
                self.churn_delta.clear();
                OpResult::Ok
            }
            Op::Unchanged { keys, then } | Op::UnchangedSince { keys, then, .. } => {
                // The counters compare only where they were read (this region), in the epoch
                // they were read in; otherwise the check is the fingerprints' alone.
                let churn = match op {
                    Op::UnchangedSince { churn, region, .. } if *region == self.ks.region_id() => {
                        Some(churn)
                    }
                    _ => None,
                };
                let epoch = self.current_churn_epoch();
                let mut same = true;
                for (i, (db, key, watched)) in keys.iter().enumerate() {
                    let cur = self.read(*db, key)?;
                    same &= match watched {
                        // Absent (or expired) when watched: unchanged while still not live and
                        // (where the check carries it) no key of its churn slot was created or
                        // removed since: the key was not created and removed again.
                        None => {
                            cur.live.is_none()
                                && churn.and_then(|c| c.get(i)).is_none_or(|(e, n)| {
                                    *e != epoch || epoch == 0 || *n == self.churn_now(*db, key)
                                })
                        }
                        // The same encoding (every write restamps it), not expired since.
                        Some(w) => {
                            cur.live.is_some()
                                && cur.raw.as_ref().is_some_and(|r| r.fingerprint() == *w)
                        }
                    };
                }
                if same {
                    OpResult::Ok
                } else {
                    self.skip = *then;
                    OpResult::Nil
                }
            }
            Op::ReadKey { db, key } => {
                let cur = self.read(*db, key)?;
                match (cur.live, cur.raw) {
                    (Some(_), Some(raw)) => OpResult::Bulk(raw.as_bytes().clone()),
                    _ => OpResult::Nil,
                }
            }
            Op::FailIfLive { db, key, error } => match self.read(*db, key)?.live {
                None => OpResult::Nil,
                Some(_) => OpResult::Err(*error),
            },
            Op::CountKeys { db } => {
                let db = *db as usize;
                let stored = self.ks.counts[db].load(std::sync::atomic::Ordering::Relaxed);
                OpResult::Int((stored + self.count_delta[db]).max(0))
            }
            Op::ExpireIfDue { db, key, at_ms } => {
                let cur = self.read(*db, key)?;
                match cur.raw {
                    Some(_)
                        if cur.state.expire_at == Some(*at_ms)
                            && *at_ms <= self.now_ms
                            && !cur.state.fired =>
                    {
                        self.quiet_churn = true;
                        if self.ks.keeps_tombstones() {
                            // Between regions the state stays, fired, until every region has
                            // it: a later expiry decision made elsewhere still wins over this
                            // one (see `value`).
                            let Current { raw, mut state, .. } = cur;
                            state.fire();
                            self.write(*db, key, raw.as_ref(), state);
                        } else {
                            self.delete_key(*db, key, cur);
                        }
                        self.quiet_churn = false;
                        self.notify(*db, key, EXPIRED, "expired");
                        OpResult::Int(1)
                    }
                    Some(_) => OpResult::Int(0),
                    None => {
                        // A stale index entry: drop it.
                        self.expiry_change(rocks::expiry_key(*db, *at_ms, key), false);
                        OpResult::Int(0)
                    }
                }
            }
            Op::FlushDb { db } => {
                if (*db as usize) < DATABASES {
                    self.flush_db(*db);
                }
                OpResult::Ok
            }
            Op::FlushAll => {
                for db in 0..DATABASES as u8 {
                    self.flush_db(db);
                }
                OpResult::Ok
            }
            Op::Merge {
                origin,
                index,
                hlc,
                states,
            } => {
                if self.refused_origins.contains(origin) {
                    return Ok(OpResult::Err(OpError::CorruptState));
                }
                let resync = *index == crate::replication::RESYNC_INDEX;
                let applied = match self.watermarks.get(origin) {
                    Some(wm) => *wm,
                    None => self.ks.watermark(*origin)?,
                };
                if !resync && *index <= applied {
                    return Ok(OpResult::Int(0));
                }
                // Every state decodes, or none is merged (a storage error here would stop the
                // state machine on every replica).
                let Some(remotes) = states
                    .iter()
                    .map(|(_, _, encoded)| StoredValue::from_stored(encoded.clone()))
                    .collect::<Option<Vec<_>>>()
                else {
                    self.refused_origins.push(*origin);
                    return Ok(OpResult::Err(OpError::CorruptState));
                };
                self.merging = true;
                for ((db, key, _), remote) in states.iter().zip(remotes) {
                    if self.merge_in_place(*db, key, &remote)? {
                        continue;
                    }
                    let Current {
                        raw,
                        mut state,
                        live,
                    } = self.read(*db, key)?;
                    state.merge(&remote.state());
                    if self.events.is_some() {
                        // Another region's write as this region now sees it: a new value is a
                        // `set`, a key gone is a `del`.
                        let expired = state.expire_at.is_some_and(|at| at <= self.now_ms);
                        let now_live = if expired { None } else { state.visible() };
                        match (&live, &now_live) {
                            (_, Some(v)) if live.as_ref() != Some(v) => {
                                self.notify(*db, key, STRING, "set")
                            }
                            (Some(_), None) => self.notify(*db, key, GENERIC, "del"),
                            _ => {}
                        }
                    }
                    self.write(*db, key, raw.as_ref(), state);
                }
                self.merging = false;
                if !resync {
                    self.watermarks.insert(*origin, *index);
                    let merged = match self.merged_hlc.get(origin) {
                        Some(h) => *h,
                        None => self.ks.merged_hlc(*origin),
                    };
                    if *hlc > merged {
                        self.merged_hlc.insert(*origin, *hlc);
                    }
                }
                OpResult::Int(states.len() as i64)
            }
            Op::TrimOutbox { upto } => {
                self.trim_outbox = Some(*upto);
                OpResult::Ok
            }
            Op::Seen { from, hlcs } => {
                for (origin, hlc) in hlcs {
                    let known = match self.seen.get(&(*from, *origin)) {
                        Some(h) => *h,
                        None => self.ks.seen(*from, *origin)?,
                    };
                    if *hlc > known {
                        self.seen.insert((*from, *origin), *hlc);
                    }
                }
                OpResult::Ok
            }
            Op::Forget { tombstones } => {
                self.collecting = true;
                let mut dropped = 0;
                for (db, key, stamp) in tombstones {
                    dropped += i64::from(self.forget(*db, key, *stamp)?);
                }
                OpResult::Int(dropped)
            }
        })
    }

    /// Writes the batch (with `extra_meta` and, for a local batch, its outbox entry at
    /// `log_index`) and publishes it to the hot cache.
    pub(super) fn commit(
        mut self,
        extra_meta: &[(&[u8], Vec<u8>)],
        log_index: Option<u64>,
    ) -> Result<(), StorageError> {
        if self.overlay.is_empty()
            && !self.flushed.iter().any(|f| *f)
            && self.batch.is_empty()
            && extra_meta.is_empty()
            && self.trim_outbox.is_none()
            && self.merged_hlc.is_empty()
            && self.seen.is_empty()
            && self.expiry_changes.is_empty()
            && self.tombstone_changes.is_empty()
            && self.new_churn_epoch.is_none()
        {
            return Ok(());
        }
        if self.ks.defers_writes()
            && !self.flushed.iter().any(|f| *f)
            && self.batch.is_empty()
            && self.new_churn_epoch.is_none()
            && !self.collecting
        {
            return self.commit_later(extra_meta, log_index);
        }
        // Whatever is pending goes to RocksDB before this batch.
        self.ks.write_pending()?;
        self.expiry_changes_to_batch();
        let data = self.cf(rocks::CF_DATA);
        let mut written: Vec<(&DataKey, &Written)> = self.overlay.iter().collect();
        written.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (key, w) in written {
            match &w.value {
                Some(value) => self.batch.put_cf(data, key, value.as_bytes()),
                None if w.in_storage => self.batch.delete_cf(data, key),
                None => {}
            }
        }
        let meta = self.cf(rocks::CF_META);
        for (k, v) in extra_meta {
            self.batch.put_cf(meta, k, v);
        }
        for (k, v) in self.replication_meta() {
            self.batch.put_cf(meta, k, v);
        }
        if let Some(upto) = self.trim_outbox {
            self.batch.delete_range_cf(
                self.cf(rocks::CF_OUTBOX),
                0u64.to_be_bytes(),
                upto.saturating_add(1).to_be_bytes(),
            );
        }
        if let Some((index, bytes)) = self.outbox_entry(log_index)? {
            self.batch
                .put_cf(self.cf(rocks::CF_OUTBOX), index.to_be_bytes(), &bytes);
            self.wrote_outbox = Some((index, bytes));
        }
        let mut new_counts = [0i64; DATABASES];
        for (db, delta) in self.count_delta.iter().enumerate() {
            let current = self.ks.counts[db].load(std::sync::atomic::Ordering::Relaxed);
            new_counts[db] = current + delta;
            if *delta != 0 {
                self.batch.put_cf(
                    meta,
                    rocks::count_key(db as u8),
                    new_counts[db].to_be_bytes(),
                );
            }
        }
        if let Some(epoch) = self.new_churn_epoch {
            // The counters restart from zero: the old records go (the epoch's key, which sorts
            // after every counter's, is written again below).
            let mut end = rocks::CHURN_PREFIX.to_vec();
            end.extend_from_slice(&[0xff, 0xff, 0xff]);
            self.batch
                .delete_range_cf(meta, rocks::CHURN_PREFIX, &end[..]);
            self.batch
                .put_cf(meta, rocks::CHURN_EPOCH_KEY, epoch.to_be_bytes());
        }
        let churn = self.new_churn();
        for (slot, value) in &churn {
            self.batch
                .put_cf(meta, rocks::churn_key(*slot), value.to_be_bytes());
        }
        let batch = std::mem::take(&mut self.batch);
        self.ks.db.write_opt(batch, &self.ks.write_options())?;
        for (db, count) in new_counts.iter().enumerate() {
            self.ks.counts[db].store(*count, std::sync::atomic::Ordering::Relaxed);
        }
        let _ = self.publish();
        self.store_churn(&churn);
        self.publish_replication();
        Ok(())
    }

    /// The meta records the batch's replication bookkeeping changed: watermarks, merged HLCs,
    /// other regions' reports, the outbox trim point.
    fn replication_meta(&self) -> Vec<(Vec<u8>, [u8; 8])> {
        let watermarks = self
            .watermarks
            .iter()
            .map(|(origin, index)| (rocks::watermark_key(*origin).to_vec(), index.to_be_bytes()));
        let merged = self
            .merged_hlc
            .iter()
            .map(|(origin, hlc)| (rocks::merged_hlc_key(*origin).to_vec(), hlc.to_be_bytes()));
        let seen = self.seen.iter().map(|((from, origin), hlc)| {
            (rocks::seen_key(*from, *origin).to_vec(), hlc.to_be_bytes())
        });
        let trimmed = self
            .trim_outbox
            .map(|upto| (rocks::OUTBOX_TRIMMED_KEY.to_vec(), upto.to_be_bytes()));
        watermarks
            .chain(merged)
            .chain(seen)
            .chain(trimmed)
            .collect()
    }

    /// The outbox entry of a batch proposed in this region, when other regions exist and the
    /// batch wrote states to ship: (its log index, its encoding).
    fn outbox_entry(&self, log_index: Option<u64>) -> Result<Option<(u64, Bytes)>, StorageError> {
        let (Some(index), true, true) = (log_index, self.local, self.ks.keeps_tombstones()) else {
            return Ok(None);
        };
        let states: Vec<_> = self
            .overlay
            .iter()
            .filter(|(_, w)| w.ship)
            .filter_map(|(k, w)| {
                let state = w.value.as_ref()?.as_bytes();
                (!state.is_empty()).then(|| (k[0], RawBytes(&k[1..]), RawBytes(state)))
            })
            .collect();
        if states.is_empty() {
            return Ok(None);
        }
        let entry = OutboxEntryRef {
            hlc: self.stamp.hlc,
            states,
        };
        let bytes = Bytes::from(
            bincode::serialize(&entry).map_err(|_| StorageError::Corrupt { key_len: 0 })?,
        );
        Ok(Some((index, bytes)))
    }

    /// After a committed batch: the in-memory tail trimmed, the merged HLCs this region
    /// reports, and the outbox entry written, for the shippers (woken) and the tail.
    fn publish_replication(self) {
        if let Some(upto) = self.trim_outbox {
            self.ks.outbox_tail.trim(upto);
        }
        if !self.merged_hlc.is_empty() {
            self.ks
                .note_merged_hlcs(self.merged_hlc.iter().map(|(o, h)| (*o, *h)));
        }
        if let Some((index, bytes)) = self.wrote_outbox {
            self.ks
                .outbox_last
                .fetch_max(index, std::sync::atomic::Ordering::Relaxed);
            self.ks.outbox_tail.push(index, bytes);
            self.ks.outbox_notify.notify_waiters();
        }
    }

    /// Commits a batch by adding its changes to the keyspace's pending set (written to RocksDB
    /// later, see `write_back`); with several regions, its outbox entry (at `log_index`) and
    /// merge bookkeeping too.
    fn commit_later(
        mut self,
        extra_meta: &[(&[u8], Vec<u8>)],
        log_index: Option<u64>,
    ) -> Result<(), StorageError> {
        self.wrote_outbox = self.outbox_entry(log_index)?;
        let churn = self.new_churn();
        let mut new_counts = [0i64; DATABASES];
        for (db, delta) in self.count_delta.iter().enumerate() {
            new_counts[db] = self.ks.counts[db].load(std::sync::atomic::Ordering::Relaxed) + delta;
        }
        let added = self.ks.defer_changes(|changes: &mut Changes| {
            if self.overlay.len() >= super::WARM_MIN_OPS {
                changes.warm(self.overlay.keys().map(|k| &k[..]));
            }
            for (key, w) in &self.overlay {
                match &w.value {
                    Some(value) => changes.data(key, Some(value)),
                    None if w.in_storage => changes.data(key, None),
                    None => {}
                }
            }
            for (key, put) in &self.expiry_changes {
                changes.expiry(key.clone(), *put);
            }
            for (key, put) in &self.tombstone_changes {
                changes.tombstone(key.clone(), *put);
            }
            for (k, v) in extra_meta {
                changes.meta(k, v.clone());
            }
            for (db, delta) in self.count_delta.iter().enumerate() {
                if *delta != 0 {
                    changes.meta(
                        &rocks::count_key(db as u8),
                        new_counts[db].to_be_bytes().to_vec(),
                    );
                }
            }
            for (slot, value) in &churn {
                changes.meta(&rocks::churn_key(*slot), value.to_be_bytes().to_vec());
            }
            for (k, v) in self.replication_meta() {
                changes.meta(&k, v.to_vec());
            }
            if let Some(upto) = self.trim_outbox {
                changes.trim_outbox(upto);
            }
            if let Some((index, bytes)) = &self.wrote_outbox {
                changes.outbox(*index, bytes.clone());
            }
        });
        // The changes are pending even if writing the set out failed (the error stops the
        // Raft group, and the writer retries): counts and cache follow them either way.
        for (db, count) in new_counts.iter().enumerate() {
            self.ks.counts[db].store(*count, std::sync::atomic::Ordering::Relaxed);
        }
        let rewrites = self.publish();
        self.store_churn(&churn);
        self.ks.note_writes(self.overlay.len(), rewrites);
        self.publish_replication();
        added
    }

    /// Puts the batch's new values in the hot cache; returns how many were rewrites (see
    /// [`HotCache::publish`](super::HotCache::publish)).
    fn publish(&self) -> usize {
        let flushed = self.flushed.iter().any(|f| *f);
        self.ks.hot.publish(
            flushed,
            self.cache_replacements,
            self.overlay.iter().map(|(key, w)| Change {
                key,
                value: &w.value,
                slot: w.slot.as_ref(),
            }),
        )
    }
}

/// BITOP's result: as long as the longest source, shorter sources read as zero bytes.
fn bit_op(kind: BitOpKind, sources: &[Bytes]) -> Vec<u8> {
    let len = sources.iter().map(Bytes::len).max().unwrap_or(0);
    let Some((first, rest)) = sources.split_first() else {
        return Vec::new();
    };
    let mut out = first.to_vec();
    out.resize(len, 0);
    match kind {
        BitOpKind::Not => out.iter_mut().for_each(|b| *b = !*b),
        BitOpKind::And => {
            for src in rest {
                out.iter_mut().zip(src.iter()).for_each(|(o, b)| *o &= b);
                out[src.len()..].fill(0);
            }
        }
        BitOpKind::Or => {
            for src in rest {
                out.iter_mut().zip(src.iter()).for_each(|(o, b)| *o |= b);
            }
        }
        BitOpKind::Xor => {
            for src in rest {
                out.iter_mut().zip(src.iter()).for_each(|(o, b)| *o ^= b);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyspace::{FsyncPolicy, KeyspaceOptions};
    use crate::op::{ExpireSet, OpBatch, SetCond, SetReply};

    /// A keyspace of one region (no tombstones kept).
    fn single_region_keyspace(dir: &std::path::Path) -> Keyspace {
        Keyspace::open(single_region_options(dir)).expect("open")
    }

    fn single_region_options(dir: &std::path::Path) -> KeyspaceOptions {
        KeyspaceOptions {
            path: dir.to_path_buf(),
            hot_cache_bytes: 1 << 20,
            block_cache_bytes: 1 << 20,
            write_buffer_bytes: 1 << 20,
            max_write_buffers: 2,
            fsync: FsyncPolicy::No,
            outbox_memory_bytes: 1 << 20,
            write_back: None,
        }
    }

    /// A keyspace of region 0 in a multi-region cluster.
    fn keyspace(dir: &std::path::Path) -> Keyspace {
        let ks = single_region_keyspace(dir);
        ks.set_geo(0, true);
        ks
    }

    fn apply(ks: &Keyspace, hlc: u64, ops: Vec<Op>) -> Vec<OpResult> {
        ks.apply_batch(&OpBatch {
            now_ms: 1,
            hlc,
            origin: 0,
            ops: ops.into(),
        })
        .expect("apply")
    }

    fn set(key: &str) -> Op {
        Op::Set {
            db: 0,
            key: Bytes::from(key.to_string()),
            value: Bytes::from_static(b"v"),
            expire: ExpireSet::Clear,
            cond: SetCond::Always,
            reply: SetReply::OkOrNil,
        }
    }

    fn del(key: &str) -> Op {
        Op::Del {
            db: 0,
            keys: vec![Bytes::from(key.to_string())],
        }
    }

    fn all(_: u8) -> u64 {
        u64::MAX
    }

    #[test]
    fn a_plain_set_writes_what_the_general_path_writes() {
        let b = |s: &str| Bytes::from(s.to_string());
        let set_k = |value: &str, expire, reply| Op::Set {
            db: 0,
            key: b("k"),
            value: b(value),
            expire,
            cond: SetCond::Always,
            reply,
        };
        let incr_k = || Op::IncrBy {
            db: 0,
            key: b("k"),
            delta: 5,
        };
        let plain = |value: &str| set_k(value, ExpireSet::Clear, SetReply::OkOrNil);
        // What the key holds: ops of a first batch, then ops of the batch whose last op is the
        // SET under test (the overlay path).
        let cases: Vec<(Vec<Op>, Vec<Op>)> = vec![
            (vec![], vec![]),
            (vec![plain("old")], vec![]),
            (
                vec![set_k("old", ExpireSet::At(9_000_000), SetReply::OkOrNil)],
                vec![],
            ),
            // Expired at the batches' now_ms (1), not yet removed.
            (
                vec![set_k("old", ExpireSet::At(1), SetReply::OkOrNil)],
                vec![],
            ),
            (vec![incr_k()], vec![]),
            (vec![plain("7"), incr_k()], vec![]),
            (vec![plain("old")], vec![del("k")]),
            (vec![], vec![plain("first")]),
            (vec![plain("7")], vec![incr_k()]),
        ];
        // One region, and several (where states carry floors and deletes leave tombstones).
        for (multi, (before, same_batch)) in [false, true]
            .into_iter()
            .flat_map(|multi| cases.iter().map(move |case| (multi, case)))
        {
            for expire in [ExpireSet::Clear, ExpireSet::At(5_000_000)] {
                for reopen in [false, true] {
                    // SET's flag reply takes the general path and writes the same state.
                    let outcome = |reply: SetReply| {
                        let dir = tempfile::tempdir().expect("tempdir");
                        let mut ks = single_region_keyspace(dir.path());
                        ks.set_geo(0, multi);
                        apply(&ks, 1 << 16, before.clone());
                        if reopen {
                            // Cold cache: the old value comes from RocksDB.
                            drop(ks);
                            ks = single_region_keyspace(dir.path());
                            ks.set_geo(0, multi);
                        }
                        let mut ops = same_batch.clone();
                        ops.push(set_k("new", expire, reply));
                        apply(&ks, 2 << 16, ops);
                        let stored = ks.get_raw(0, b"k").expect("read");
                        let expiries = ks.due_expiries(u64::MAX, 100).expect("expiries");
                        (stored, ks.dbsize(0), expiries)
                    };
                    assert_eq!(
                        outcome(SetReply::OkOrNil),
                        outcome(SetReply::Flag),
                        "before {before:?}, same batch {same_batch:?}, {expire:?}, reopen \
                         {reopen}, several regions {multi}"
                    );
                }
            }
        }
    }

    #[test]
    fn randomkey_finds_a_live_key_behind_many_tombstones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ks = keyspace(dir.path());
        let keys: Vec<String> = (0..2000).map(|i| format!("a{i:04}")).collect();
        apply(&ks, 1 << 16, keys.iter().map(|k| set(k)).collect());
        apply(&ks, 2 << 16, keys.iter().map(|k| del(k)).collect());
        apply(&ks, 3 << 16, vec![set("z")]);
        for _ in 0..5 {
            let k = ks.random_key(0, 1).expect("random_key");
            assert_eq!(k.as_deref(), Some(&b"z"[..]));
        }
    }

    #[test]
    fn counters_whose_history_passes_the_64_bit_range_keep_their_value() {
        let dir = tempfile::tempdir().expect("tempdir");
        // With tombstones and counters as several regions keep them, and as one region does.
        for multi in [true, false] {
            let ks = single_region_keyspace(dir.path().join(multi.to_string()).as_path());
            ks.set_geo(0, multi);
            let by = |delta: i64| Op::IncrBy {
                db: 0,
                key: Bytes::from_static(b"n"),
                delta,
            };
            let value = |ks: &Keyspace| {
                let v = ks.get(0, b"n", 1).expect("get").expect("stored");
                String::from_utf8(v.state().visible().expect("visible").to_vec()).unwrap()
            };
            let max = i64::MAX;
            let mut hlc = 1 << 16;
            let mut step = |ops: Vec<Op>| {
                hlc += 1 << 16;
                apply(&ks, hlc, ops)
            };
            // The sums of increments and of decrements pass 2^64; the value does not.
            let r = step(vec![by(max), by(-max), by(max), by(-max), by(5)]);
            assert_eq!(r[4], OpResult::Int(5));
            assert_eq!(value(&ks), "5", "multi-region: {multi}");
            // Through SETs in between, too.
            let set0 = || Op::Set {
                db: 0,
                key: Bytes::from_static(b"n"),
                value: Bytes::from_static(b"0"),
                expire: ExpireSet::Clear,
                cond: SetCond::Always,
                reply: SetReply::OkOrNil,
            };
            let r = step(vec![
                by(max),
                set0(),
                by(max),
                set0(),
                by(max),
                set0(),
                by(5),
            ]);
            assert_eq!(r[6], OpResult::Int(5));
            assert_eq!(value(&ks), "5");
            let r = step(vec![by(-max), set0(), by(-max), set0(), by(-max)]);
            assert_eq!(r[4], OpResult::Int(-max));
            assert_eq!(value(&ks), (-max).to_string());
            // At the bounds, the next step overflows as in Redis.
            let r = step(vec![by(-1), by(-1), by(max), set0(), by(max), by(1)]);
            assert_eq!(r[0], OpResult::Int(i64::MIN));
            assert_eq!(r[1], OpResult::Err(OpError::Overflow));
            assert_eq!(r[2], OpResult::Int(-1));
            assert_eq!(r[4], OpResult::Int(max));
            assert_eq!(r[5], OpResult::Err(OpError::Overflow));
            assert_eq!(value(&ks), max.to_string());
            let r = step(vec![by(-1)]);
            assert_eq!(r[0], OpResult::Int(max - 1));
        }
    }

    /// With several regions, a batch whose states to ship pass the budget refuses its further
    /// local writes (the outbox entry must fit one frame); another batch takes them.
    #[test]
    fn a_batch_ships_a_bounded_amount_of_state() {
        let dir = tempfile::tempdir().unwrap();
        let ks = keyspace(dir.path());
        let big = |key: &str| Op::Set {
            db: 0,
            key: Bytes::from(key.to_string()),
            value: Bytes::from(vec![b'x'; 13 << 20]),
            expire: ExpireSet::Clear,
            cond: SetCond::Always,
            reply: SetReply::OkOrNil,
        };
        let results = apply(
            &ks,
            10,
            vec![
                big("a"),
                big("b"),
                big("c"),
                Op::ReadKey {
                    db: 0,
                    key: Bytes::from("a"),
                },
            ],
        );
        assert_eq!(results[..2], [OpResult::Ok, OpResult::Ok]);
        assert_eq!(results[2], OpResult::Err(OpError::ShippedBatchTooLarge));
        assert!(matches!(results[3], OpResult::Bulk(_)), "reads still run");
        assert_eq!(apply(&ks, 20, vec![big("c")]), [OpResult::Ok]);
    }

    #[test]
    fn ops_from_a_faulty_peer_get_an_error_and_change_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ks = keyspace(dir.path());
        let mut bad_db = set("k");
        if let Op::Set { db, .. } = &mut bad_db {
            *db = 200;
        }
        let good_state = {
            apply(&ks, 1 << 16, vec![set("src")]);
            ks.get(0, b"src", 1).expect("get").expect("stored")
        };
        let merge = |states: Vec<(u8, Bytes, Bytes)>| Op::Merge {
            origin: 1,
            index: 5,
            hlc: 9 << 16,
            states,
        };
        let results = apply(
            &ks,
            2 << 16,
            vec![
                bad_db,
                merge(vec![(
                    200,
                    Bytes::from_static(b"m"),
                    good_state.as_bytes().clone(),
                )]),
                // The first state is fine, the second does not decode: neither is merged.
                merge(vec![
                    (0, Bytes::from_static(b"m1"), good_state.as_bytes().clone()),
                    (
                        0,
                        Bytes::from_static(b"m2"),
                        Bytes::from_static(b"\xff\xff"),
                    ),
                ]),
                set("after"),
            ],
        );
        assert_eq!(
            results,
            vec![
                OpResult::Err(OpError::DbIndexOutOfRange),
                OpResult::Err(OpError::DbIndexOutOfRange),
                OpResult::Err(OpError::CorruptState),
                OpResult::Ok,
            ]
        );
        assert!(ks.get(0, b"m1", 1).expect("get").is_none());
        assert_eq!(ks.watermark(1).expect("watermark"), 0);
        assert!(ks.get(0, b"after", 1).expect("get").is_some());
        // A refused merge holds back the later merges of its origin in the same batch, so
        // that no watermark passes it.
        let held = apply(
            &ks,
            (5 << 16) + 1,
            vec![
                merge(vec![(
                    0,
                    Bytes::from_static(b"m4"),
                    Bytes::from_static(b"\xff"),
                )]),
                Op::Merge {
                    origin: 1,
                    index: 6,
                    hlc: 9 << 16,
                    states: vec![(0, Bytes::from_static(b"m5"), good_state.as_bytes().clone())],
                },
            ],
        );
        assert_eq!(
            held,
            vec![
                OpResult::Err(OpError::CorruptState),
                OpResult::Err(OpError::CorruptState)
            ]
        );
        assert_eq!(ks.watermark(1).expect("watermark"), 0);
        // The same good state alone merges.
        let ok = apply(
            &ks,
            3 << 16,
            vec![merge(vec![(
                0,
                Bytes::from_static(b"m3"),
                good_state.as_bytes().clone(),
            )])],
        );
        assert_eq!(ok, vec![OpResult::Int(1)]);
        assert!(ks.get(0, b"m3", 1).expect("get").is_some());
    }

    #[test]
    fn a_failed_watch_skips_only_its_transaction() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ks = single_region_keyspace(dir.path());
        apply(&ks, 10, vec![set("a")]);
        let watch = |then| Op::Unchanged {
            keys: vec![(0, Bytes::from_static(b"a"), None)],
            then,
        };
        // "a" exists although it was watched missing: the next op is skipped, the one after
        // it (another client's) is not.
        let results = apply(&ks, 20, vec![watch(1), set("b"), set("c")]);
        assert_eq!(results, vec![OpResult::Nil, OpResult::Nil, OpResult::Ok]);
        let stored = |key: &[u8]| ks.read_storage(&rocks::data_key(0, key)).expect("read");
        assert!(stored(b"b").is_none());
        assert!(stored(b"c").is_some());
        // Watched with what it holds now: the transaction runs.
        let now = stored(b"a").expect("a").fingerprint();
        let results = apply(
            &ks,
            30,
            vec![
                Op::Unchanged {
                    keys: vec![(0, Bytes::from_static(b"a"), Some(now))],
                    then: 1,
                },
                set("b"),
            ],
        );
        assert_eq!(results, vec![OpResult::Ok, OpResult::Ok]);
        assert!(stored(b"b").is_some());
    }

    #[test]
    fn each_key_lands_in_storage_once_with_its_final_value() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ks = single_region_keyspace(dir.path());
        let value = |v: &'static [u8]| Op::Set {
            db: 0,
            key: Bytes::from_static(b"a"),
            value: Bytes::from_static(v),
            expire: ExpireSet::Clear,
            cond: SetCond::Always,
            reply: SetReply::OkOrNil,
        };
        apply(&ks, 10, vec![set("b"), value(b"1"), set("d")]);
        // One region keeps no tombstones: a deleted key leaves storage.
        apply(
            &ks,
            20,
            vec![
                value(b"2"),
                value(b"3"),
                set("c"),
                del("c"),
                del("b"),
                del("d"),
                set("d"),
            ],
        );
        let stored = |key: &[u8]| ks.read_storage(&rocks::data_key(0, key)).expect("read");
        let a = stored(b"a").expect("a is stored");
        assert_eq!(a.state().visible().as_deref(), Some(&b"3"[..]));
        assert!(stored(b"b").is_none());
        assert!(stored(b"c").is_none());
        assert!(stored(b"d").is_some());
        assert_eq!(ks.dbsize(0), 2);
    }

    /// A single-region keyspace fed by a Raft log that writes applied changes back after
    /// `window` or `bytes`.
    fn write_back_keyspace(dir: &std::path::Path, window_ms: u64, bytes: usize) -> Keyspace {
        let ks = Keyspace::open(KeyspaceOptions {
            write_back: Some(crate::keyspace::WriteBackOptions {
                window: std::time::Duration::from_millis(window_ms),
                bytes,
            }),
            ..single_region_options(dir)
        })
        .expect("open");
        ks.set_log_is_wal(true);
        ks
    }

    /// What RocksDB itself holds for `key` of db 0 (not the pending changes).
    fn in_rocksdb(ks: &Keyspace, key: &[u8]) -> Option<Vec<u8>> {
        ks.db
            .get_cf(rocks::cf(&ks.db, rocks::CF_DATA), rocks::data_key(0, key))
            .expect("read")
    }

    fn applied_index(ks: &Keyspace) -> Option<u64> {
        ks.db
            .get_cf(rocks::cf(&ks.db, rocks::CF_META), b"applied")
            .expect("read")
            .map(|raw| u64::from_be_bytes(raw.try_into().expect("8 bytes")))
    }

    fn apply_with_index(ks: &Keyspace, index: u64, ops: Vec<Op>) -> Vec<OpResult> {
        let batch = OpBatch {
            now_ms: 1,
            hlc: index * 10,
            origin: 0,
            ops: ops.into(),
        };
        ks.apply_batch_with_meta(
            &batch,
            &[(b"applied", index.to_be_bytes().to_vec())],
            Some(index),
        )
        .expect("apply")
    }

    fn set_expiring(key: &str, at_ms: u64) -> Op {
        Op::Set {
            db: 0,
            key: Bytes::from(key.to_string()),
            value: Bytes::from_static(b"v"),
            expire: ExpireSet::At(at_ms),
            cond: SetCond::Always,
            reply: SetReply::OkOrNil,
        }
    }

    #[test]
    fn written_back_changes_are_read_before_they_reach_rocksdb() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ks = write_back_keyspace(dir.path(), 3_600_000, 1 << 30);
        apply_with_index(&ks, 1, vec![set("a"), set("b"), set_expiring("c", 1 << 40)]);
        apply_with_index(&ks, 2, vec![del("b")]);
        // Pending: RocksDB has none of it yet, storage reads see all of it.
        assert!(in_rocksdb(&ks, b"a").is_none());
        assert_eq!(applied_index(&ks), None);
        let stored = |key: &[u8]| ks.read_storage(&rocks::data_key(0, key)).expect("read");
        assert!(stored(b"a").is_some());
        assert!(stored(b"b").is_none());
        assert_eq!(stored(b"c").and_then(|v| v.expire_at()), Some(1 << 40));
        assert_eq!(ks.dbsize(0), 2);
        // A scan writes the pending changes first, so it sees them all.
        let (live, _) = ks.scan(0, None, 10, 1).expect("scan");
        let keys: Vec<&[u8]> = live.iter().map(|(k, _)| &k[..]).collect();
        assert_eq!(keys, vec![&b"a"[..], &b"c"[..]]);
        assert!(in_rocksdb(&ks, b"a").is_some());
        assert!(in_rocksdb(&ks, b"b").is_none());
        assert_eq!(applied_index(&ks), Some(2));
        assert_eq!(ks.expires_estimate(0), 1);
    }

    /// Active expiry passes over index records pending deletion (each would otherwise be
    /// proposed again at every pass until written out), and finds the rest.
    #[test]
    fn active_expiry_passes_over_records_pending_deletion() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ks = write_back_keyspace(dir.path(), 3_600_000, 1 << 30);
        let keys = ["a", "b", "c", "d"];
        apply_with_index(&ks, 1, keys.iter().map(|k| set_expiring(k, 5)).collect());
        ks.write_pending().expect("write");
        let due = |ks: &Keyspace, limit| {
            let due = ks.due_expiries(10, limit).expect("due");
            due.into_iter().map(|(_, k, _)| k).collect::<Vec<_>>()
        };
        // "a" no longer expires, "b" later, "c" expired: their records are pending deletion.
        let batch = OpBatch {
            now_ms: 10,
            hlc: 20,
            origin: 0,
            ops: vec![
                set("a"),
                set_expiring("b", 50),
                Op::ExpireIfDue {
                    db: 0,
                    key: Bytes::from_static(b"c"),
                    at_ms: 5,
                },
            ]
            .into(),
        };
        let results = ks
            .apply_batch_with_meta(
                &batch,
                &[(b"applied", 2u64.to_be_bytes().to_vec())],
                Some(2),
            )
            .expect("apply");
        assert_eq!(results[2], OpResult::Int(1), "c expired");
        assert_eq!(due(&ks, 10), vec![Bytes::from_static(b"d")]);
        assert_eq!(due(&ks, 1), vec![Bytes::from_static(b"d")]);
        ks.write_pending().expect("write");
        assert_eq!(due(&ks, 10), vec![Bytes::from_static(b"d")]);
    }

    #[test]
    fn a_flush_after_pending_changes_removes_them_from_rocksdb_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ks = write_back_keyspace(dir.path(), 3_600_000, 1 << 30);
        apply_with_index(&ks, 1, vec![set("a"), set_expiring("b", 1 << 40)]);
        apply_with_index(&ks, 2, vec![Op::FlushDb { db: 0 }, set("c")]);
        // The flush is written directly, after what was pending before it.
        assert!(in_rocksdb(&ks, b"a").is_none());
        assert!(in_rocksdb(&ks, b"b").is_none());
        assert!(in_rocksdb(&ks, b"c").is_some());
        assert_eq!(applied_index(&ks), Some(2));
        assert_eq!(ks.expires_estimate(0), 0);
        assert_eq!(ks.dbsize(0), 1);
    }

    #[test]
    fn pending_changes_are_written_by_the_writer_at_the_bound_and_at_close() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            // The writer thread writes them once the window has passed.
            let ks = write_back_keyspace(dir.path(), 20, 1 << 30);
            apply_with_index(&ks, 1, vec![set("a")]);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while in_rocksdb(&ks, b"a").is_none() {
                assert!(std::time::Instant::now() < deadline, "never written back");
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
        {
            // Past twice the byte bound, the applying thread writes them itself.
            let ks = write_back_keyspace(dir.path(), 3_600_000, 1);
            apply_with_index(&ks, 2, vec![set("b")]);
            assert!(in_rocksdb(&ks, b"b").is_some());
            apply_with_index(&ks, 3, vec![set("c")]);
        }
        {
            // Closing writes what is pending.
            let ks = write_back_keyspace(dir.path(), 3_600_000, 1 << 30);
            apply_with_index(&ks, 4, vec![set("d"), del("a")]);
        }
        let ks = single_region_keyspace(dir.path());
        assert!(in_rocksdb(&ks, b"a").is_none());
        assert!(in_rocksdb(&ks, b"c").is_some());
        assert!(in_rocksdb(&ks, b"d").is_some());
        assert_eq!(applied_index(&ks), Some(4));
        assert_eq!(ks.dbsize(0), 3);
    }

    /// A WATCH check of missing `keys`, watched with (churn epoch, counter) `churn` in
    /// region 0.
    fn watch_missing(keys: &[&str], churn: Vec<(u64, u64)>) -> Op {
        Op::UnchangedSince {
            keys: keys
                .iter()
                .map(|k| (0, Bytes::from(k.to_string()), None))
                .collect(),
            churn,
            region: 0,
            then: 0,
        }
    }

    /// Applies `ops` at `now_ms` (the batch's clock), stamped `hlc`, from region `origin`.
    fn apply_at(ks: &Keyspace, now_ms: u64, hlc: u64, origin: u8, ops: Vec<Op>) -> Vec<OpResult> {
        ks.apply_batch(&OpBatch {
            now_ms,
            hlc,
            origin,
            ops: ops.into(),
        })
        .expect("apply")
    }

    #[test]
    fn churn_counters_count_creations_and_removals_and_survive_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a_then, b_then) = {
            // Through the write-back set: the counters go out with the data.
            let ks = write_back_keyspace(dir.path(), 3_600_000, 1 << 30);
            assert_eq!(ks.churn_epoch(), 0, "no epoch yet");
            apply_with_index(&ks, 1, vec![set("a"), Op::ChurnEpoch]);
            assert_eq!(ks.churn_epoch(), 1, "the epoch is its entry's index");
            assert_eq!(ks.churn(0, b"a").1, 0, "counted before the epoch: zeroed");
            apply_with_index(&ks, 2, vec![del("a")]);
            assert_eq!(ks.churn(0, b"a").1, 1, "removed");
            apply_with_index(&ks, 3, vec![set("a"), set("a")]);
            assert_eq!(ks.churn(0, b"a").1, 2, "created, then rewritten: one churn");
            // Created and removed within one batch; a check after it in the batch sees both.
            let results = apply_with_index(
                &ks,
                4,
                vec![
                    del("a"),
                    set("a"),
                    del("a"),
                    watch_missing(&["a"], vec![(1, 2)]),
                ],
            );
            assert_eq!(results[3], OpResult::Nil, "{results:?}");
            assert_eq!(ks.churn(0, b"a").1, 5);
            (ks.churn(0, b"a").1, ks.churn(0, b"b").1)
        };
        // Reopened (the pending changes were written at close): the same counters and epoch,
        // and a check against them passes.
        let ks = single_region_keyspace(dir.path());
        assert_eq!(ks.churn_epoch(), 1);
        assert_eq!((ks.churn(0, b"a").1, ks.churn(0, b"b").1), (a_then, b_then));
        let results = apply(
            &ks,
            10,
            vec![watch_missing(&["a", "b"], vec![(1, a_then), (1, b_then)])],
        );
        assert_eq!(results, vec![OpResult::Ok]);
        // Watched in another epoch, or without one: the counters are not compared (the
        // check is the fingerprints' alone), the same way on every replica.
        let results = apply(&ks, 11, vec![watch_missing(&["a"], vec![(7, 999)])]);
        assert_eq!(results, vec![OpResult::Ok]);
    }

    /// Two replicas that counted different histories before the epoch (one replayed entries
    /// after an upgrade that the other applied uncounted) hold the same counters from it on,
    /// and a replica fed a snapshot holds the counters and epoch of its source.
    #[test]
    fn replicas_agree_on_churn_from_the_epoch_and_through_snapshots() {
        let (d1, d2, d3) = (
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
            tempfile::tempdir().unwrap(),
        );
        let (r1, r2) = (
            single_region_keyspace(d1.path()),
            single_region_keyspace(d2.path()),
        );
        apply_with_index(&r1, 1, vec![set("a"), del("a"), set("b")]);
        apply_with_index(&r2, 1, vec![set("b")]);
        assert_ne!(r1.churn(0, b"a"), r2.churn(0, b"a"));
        for r in [&r1, &r2] {
            apply_with_index(r, 2, vec![Op::ChurnEpoch]);
            apply_with_index(r, 3, vec![set("c"), del("b"), set("a")]);
        }
        let slots = |ks: &Keyspace| -> Vec<u64> {
            (0..super::super::CHURN_SLOTS)
                .map(|i| ks.churn[i].load(std::sync::atomic::Ordering::Relaxed))
                .collect()
        };
        assert_eq!(slots(&r1), slots(&r2));
        assert_eq!((r1.churn_epoch(), r2.churn_epoch()), (2, 2));
        // A snapshot of r1 imported elsewhere carries them.
        let r3 = single_region_keyspace(d3.path());
        apply_with_index(&r3, 1, vec![set("x"), del("x")]);
        let mut image = Vec::new();
        r1.export_to(&mut image, &[], |_, _| Ok(())).unwrap();
        r3.import_from(&mut image.as_slice(), &[]).unwrap();
        assert_eq!(slots(&r3), slots(&r1));
        assert_eq!(r3.churn_epoch(), 2);
    }

    /// A mixed-hash epoch (`Op::ChurnEpochMixed`) separates keys that FNV-1a's low bits put in
    /// one slot (`k17` in database 8, `k5` in database 9), starts where its entry is in the log
    /// (after a plain epoch too), and a WATCH of a missing `k5` then survives churn of `k17`.
    #[test]
    fn a_mixed_churn_epoch_separates_keys_the_plain_hash_put_together() {
        use super::super::{churn_slot, CHURN_MIXED};
        assert_eq!(churn_slot(1, 8, b"k17"), churn_slot(1, 9, b"k5"), "plain");
        assert_ne!(
            churn_slot(CHURN_MIXED | 1, 8, b"k17"),
            churn_slot(CHURN_MIXED | 1, 9, b"k5")
        );
        let dir = tempfile::tempdir().unwrap();
        let ks = single_region_keyspace(dir.path());
        apply_with_index(&ks, 1, vec![Op::ChurnEpoch]);
        apply_with_index(&ks, 2, vec![set("x"), Op::ChurnEpochMixed]);
        assert_eq!(ks.churn_epoch(), 2 | CHURN_MIXED);
        let (epoch, count) = ks.churn(9, b"k5");
        assert_eq!((epoch, count), (2 | CHURN_MIXED, 0));
        let Op::Set {
            key,
            value,
            expire,
            cond,
            reply,
            ..
        } = set("k17")
        else {
            unreachable!()
        };
        let set_k17 = Op::Set {
            db: 8,
            key,
            value,
            expire,
            cond,
            reply,
        };
        let check = Op::UnchangedSince {
            keys: vec![(9, Bytes::from_static(b"k5"), None)],
            churn: vec![(epoch, count)],
            region: ks.region_id(),
            then: 0,
        };
        let results = apply_with_index(&ks, 3, vec![set_k17, check]);
        assert_eq!(results[1], OpResult::Ok, "{results:?}");
        assert_eq!(ks.churn(8, b"k17").1, 1, "k17 churned its own slot");
        assert_eq!(ks.churn(9, b"k5"), (epoch, 0));
    }

    /// Expiry's own removal churns nothing (Redis 7.0 does not abort a WATCH of a key already
    /// expired when watched); a key rewritten while expired does, even if expiry removes it
    /// again before EXEC (Redis aborts: the SET touched it).
    #[test]
    fn churn_of_expired_keys_follows_redis() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ks = single_region_keyspace(dir.path());
        apply_at(&ks, 1, 1, 0, vec![Op::ChurnEpoch, set_expiring("k", 20)]);
        let k = || Bytes::from_static(b"k");
        // Watched at t=30: stored, expired.
        let watched = ks.churn(0, b"k");
        assert!(
            ks.get(0, b"k", 30).unwrap().is_none(),
            "missing when watched"
        );
        apply_at(
            &ks,
            31,
            31 << 16,
            0,
            vec![Op::ExpireIfDue {
                db: 0,
                key: k(),
                at_ms: 20,
            }],
        );
        assert_eq!(
            ks.churn(0, b"k"),
            watched,
            "expiry's removal churns nothing"
        );
        let check = || watch_missing(&["k"], vec![watched]);
        assert_eq!(
            apply_at(&ks, 32, 32 << 16, 0, vec![check()]),
            vec![OpResult::Ok]
        );
        // Stored and expired again; another client sets it while expired; expiry removes it.
        apply_at(&ks, 40, 40 << 16, 0, vec![set_expiring("k", 50)]);
        let watched = ks.churn(0, b"k");
        apply_at(&ks, 60, 60 << 16, 0, vec![set_expiring("k", 70)]);
        apply_at(
            &ks,
            80,
            80 << 16,
            0,
            vec![Op::ExpireIfDue {
                db: 0,
                key: k(),
                at_ms: 70,
            }],
        );
        let check = watch_missing(&["k"], vec![watched]);
        assert_eq!(
            apply_at(&ks, 90, 90 << 16, 0, vec![check]),
            vec![OpResult::Nil]
        );
    }

    /// A transaction forwarded to another region is checked there without the counters,
    /// which count that region's own history.
    #[test]
    fn another_regions_counters_are_not_compared() {
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (
            single_region_keyspace(da.path()),
            single_region_keyspace(db.path()),
        );
        a.set_geo(1, true);
        b.set_geo(0, true);
        apply_at(&a, 1, 1 << 16, 1, vec![Op::ChurnEpoch]);
        apply_at(&b, 1, 1 << 16, 0, vec![Op::ChurnEpoch]);
        // Region 1 creates and removes x in one entry; region 0 merges only the tombstone.
        apply_at(&a, 10, 10 << 16, 1, vec![set("x"), del("x")]);
        let raw = a.get_raw(0, b"x").unwrap().expect("tombstone kept");
        let merge = Op::Merge {
            origin: 1,
            index: 1,
            hlc: 10 << 16,
            states: vec![(0, Bytes::from_static(b"x"), raw.as_bytes().clone())],
        };
        apply_at(&b, 20, 20 << 16, 0, vec![merge]);
        assert_ne!(a.churn(0, b"x"), b.churn(0, b"x"));
        // Watched in region 1, checked in region 0: the fingerprints' check alone.
        let check = Op::UnchangedSince {
            keys: vec![(0, Bytes::from_static(b"x"), None)],
            churn: vec![a.churn(0, b"x")],
            region: 1,
            then: 0,
        };
        assert_eq!(
            apply_at(&b, 30, 30 << 16, 0, vec![check]),
            vec![OpResult::Ok]
        );
    }

    /// Two regions' keyspaces: region 0 and region 1.
    fn two_regions() -> (tempfile::TempDir, Keyspace, Keyspace) {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            single_region_keyspace(&dir.path().join("r0")),
            single_region_keyspace(&dir.path().join("r1")),
        );
        a.set_geo(0, true);
        b.set_geo(1, true);
        (dir, a, b)
    }

    /// Merges `key`'s state in `from` (region `origin`) into `to`, as a shipped entry would.
    fn ship(from: &Keyspace, origin: u8, to: &Keyspace, key: &str, hlc: u64) {
        let raw = from
            .get_raw(0, key.as_bytes())
            .unwrap()
            .expect("state kept");
        let merge = Op::Merge {
            origin,
            index: hlc,
            hlc,
            states: vec![(0, Bytes::from(key.to_string()), raw.as_bytes().clone())],
        };
        apply_at(to, hlc >> 16, hlc, 1 - origin, vec![merge]);
    }

    #[test]
    fn a_merge_in_place_writes_what_the_general_path_writes() {
        let expire = |at_ms: Option<u64>| Op::Expire {
            db: 0,
            key: Bytes::from_static(b"k"),
            at_ms,
            cond: ExpireCond::Always,
        };
        let set_ttl = |value: &'static str, at: u64| Op::Set {
            db: 0,
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(value.as_bytes()),
            expire: ExpireSet::At(at),
            cond: SetCond::Always,
            reply: SetReply::OkOrNil,
        };
        let fire = |at_ms| Op::ExpireIfDue {
            db: 0,
            key: Bytes::from_static(b"k"),
            at_ms,
        };
        // Steps before eu's state of k is merged into us at 50: (region, time, ops); region 2
        // ships eu's state to us.
        type Steps = Vec<(u8, u64, Vec<Op>)>;
        let cases: Vec<(&str, Steps)> = vec![
            ("absent here", vec![(0, 20, vec![set_to("k", "new")])]),
            (
                "older string here",
                vec![
                    (1, 10, vec![set_to("k", "old")]),
                    (0, 20, vec![set_to("k", "new")]),
                ],
            ),
            (
                "newer string here",
                vec![
                    (0, 20, vec![set_to("k", "new")]),
                    (1, 30, vec![set_to("k", "old")]),
                ],
            ),
            (
                "older string with a TTL here",
                vec![
                    (1, 10, vec![set_ttl("old", 9_000)]),
                    (0, 20, vec![set_to("k", "new")]),
                ],
            ),
            (
                "a TTL set over there",
                vec![
                    (1, 10, vec![set_to("k", "old")]),
                    (0, 20, vec![set_ttl("new", 8_000)]),
                ],
            ),
            (
                "a later PERSIST here",
                vec![
                    (0, 10, vec![set_ttl("old", 3_600_000)]),
                    (2, 11, vec![]),
                    (0, 20, vec![set_to("k", "new")]),
                    (1, 25, vec![expire(None)]),
                ],
            ),
            (
                "the same expiry decision on both sides",
                vec![
                    (0, 10, vec![set_to("k", "old"), expire(Some(3_600_000))]),
                    (2, 11, vec![]),
                    (1, 15, vec![set_to("k", "mine")]),
                    (0, 20, vec![set_to("k", "theirs")]),
                ],
            ),
            (
                "a fired expiry here",
                vec![
                    (0, 10, vec![set_ttl("old", 30)]),
                    (2, 11, vec![]),
                    (1, 31, vec![fire(30)]),
                    (0, 40, vec![set_to("k", "new")]),
                ],
            ),
            (
                "counts here",
                vec![
                    (1, 10, vec![incr_by("k", 3)]),
                    (0, 20, vec![set_to("k", "new")]),
                ],
            ),
            (
                "counts over there",
                vec![
                    (1, 10, vec![set_to("k", "old")]),
                    (0, 20, vec![incr_by("k", 3)]),
                ],
            ),
            (
                "a later delete over there",
                vec![
                    (0, 5, vec![set_to("k", "first")]),
                    (2, 6, vec![]),
                    (1, 10, vec![set_to("k", "old")]),
                    (0, 20, vec![del("k")]),
                ],
            ),
            (
                "a tombstone here",
                vec![
                    (0, 5, vec![set_to("k", "first")]),
                    (2, 6, vec![]),
                    (1, 10, vec![del("k")]),
                    (0, 20, vec![set_to("k", "new")]),
                ],
            ),
        ];
        for (what, steps) in &cases {
            for reopen in [false, true] {
                let outcome = |general_only: bool| {
                    let (dir, eu, mut us) = two_regions();
                    us.set_general_merges_only(general_only);
                    for (region, at, ops) in steps {
                        match region {
                            2 => ship(&eu, 0, &us, "k", at << 16),
                            r => {
                                let ks = if *r == 0 { &eu } else { &us };
                                apply_at(ks, *at, at << 16, *r, ops.clone());
                            }
                        }
                    }
                    if reopen {
                        // Cold cache: us's state comes from RocksDB.
                        drop(us);
                        us = single_region_keyspace(&dir.path().join("r1"));
                        us.set_geo(1, true);
                        us.set_general_merges_only(general_only);
                    }
                    ship(&eu, 0, &us, "k", 50 << 16);
                    (
                        us.get_raw(0, b"k").expect("read"),
                        us.dbsize(0),
                        us.due_expiries(u64::MAX, 100).expect("expiries"),
                        us.tombstones_indexed(100).expect("tombstones"),
                    )
                };
                assert_eq!(outcome(false), outcome(true), "{what}, reopen {reopen}");
            }
        }
    }

    fn incr_by(key: &str, delta: i64) -> Op {
        Op::IncrBy {
            db: 0,
            key: Bytes::from(key.to_string()),
            delta,
        }
    }

    fn set_to(key: &str, value: &'static str) -> Op {
        Op::Set {
            db: 0,
            key: Bytes::from(key.to_string()),
            value: Bytes::from_static(value.as_bytes()),
            expire: ExpireSet::Clear,
            cond: SetCond::Always,
            reply: SetReply::OkOrNil,
        }
    }

    /// An INCRBY on a key absent in its region counts on top of a concurrent SET or DEL made
    /// elsewhere, earlier or later, as the README's rules say (found by a chaos run: the
    /// increment acted as a register write of "0" and erased an earlier SET).
    #[test]
    fn an_increment_of_an_absent_key_counts_on_top_of_concurrent_writes_elsewhere() {
        let value_of = |ks: &Keyspace, key: &str| {
            ks.get(0, key.as_bytes(), 1_000)
                .unwrap()
                .map(|v| String::from_utf8_lossy(&v.payload()).into_owned())
        };
        let value = |ks: &Keyspace| value_of(ks, "k");
        for set_first in [true, false] {
            let (_dir, eu, us) = two_regions();
            let (set_at, incr_at) = if set_first { (10, 11) } else { (11, 10) };
            apply_at(&eu, set_at, set_at << 16, 0, vec![set_to("k", "15")]);
            apply_at(&us, incr_at, incr_at << 16, 1, vec![incr_by("k", 100)]);
            ship(&eu, 0, &us, "k", 20 << 16);
            ship(&us, 1, &eu, "k", 21 << 16);
            assert_eq!(value(&eu).as_deref(), Some("115"), "set first: {set_first}");
            assert_eq!(value(&us).as_deref(), Some("115"), "set first: {set_first}");
        }
        // INCRBY k 0 on nothing creates "0", in one region and after a merge.
        let (_dir, eu, us) = two_regions();
        apply_at(&eu, 10, 10 << 16, 0, vec![incr_by("z", 0)]);
        assert_eq!(value(&eu).map(|_| ()), None, "k untouched");
        let z = |ks: &Keyspace| value_of(ks, "z");
        assert_eq!(z(&eu).as_deref(), Some("0"));
        apply_at(&us, 11, 11 << 16, 1, vec![set_to("z", "7")]);
        ship(&eu, 0, &us, "z", 20 << 16);
        ship(&us, 1, &eu, "z", 21 << 16);
        assert_eq!(z(&eu).as_deref(), Some("7"));
        assert_eq!(z(&us).as_deref(), Some("7"));
        // A DEL observed eu's increment; us's concurrent one, from nothing, still counts.
        let (_dir, eu, us) = two_regions();
        apply_at(&eu, 10, 10 << 16, 0, vec![incr_by("k", 1)]);
        apply_at(&eu, 11, 11 << 16, 0, vec![del("k")]);
        apply_at(&us, 12, 12 << 16, 1, vec![incr_by("k", -3)]);
        ship(&eu, 0, &us, "k", 20 << 16);
        ship(&us, 1, &eu, "k", 21 << 16);
        assert_eq!(value(&eu).as_deref(), Some("-3"));
        assert_eq!(value(&us).as_deref(), Some("-3"));
    }

    /// An expiry that fires in one region does not delete a key another region wrote, or whose
    /// expiry it changed, after the EXPIRE that fired (found by a chaos run: the tombstone
    /// written when the expiry fired was stamped then, and beat the later SET, PERSIST or
    /// EXPIRE). Without a later decision the key is gone everywhere, and the fired state is
    /// collected like a tombstone.
    #[test]
    fn an_expiry_that_fires_loses_to_a_later_decision_made_elsewhere() {
        let read = |ks: &Keyspace, now: u64| {
            ks.get(0, b"k", now).unwrap().map(|v| {
                (
                    String::from_utf8_lossy(&v.payload()).into_owned(),
                    v.expire_at(),
                )
            })
        };
        let expire = |at_ms: Option<u64>| Op::Expire {
            db: 0,
            key: Bytes::from_static(b"k"),
            at_ms,
            cond: ExpireCond::Always,
        };
        let fire = || Op::ExpireIfDue {
            db: 0,
            key: Bytes::from_static(b"k"),
            at_ms: 30,
        };
        // (value, expiry) the key should read afterwards; None: gone.
        type Expected = Option<(&'static str, Option<u64>)>;
        let later: [(Op, Expected); 4] = [
            (set_to("k", "new"), Some(("new", None))),
            (expire(None), Some(("old", None))),
            (expire(Some(5_000)), Some(("old", Some(5_000)))),
            // Nothing later: the expiry holds everywhere.
            (del("nothing"), None),
        ];
        for (op, expected) in later {
            let what = format!("{op:?}");
            let (_dir, eu, us) = two_regions();
            // "old" with an hour's TTL everywhere (so us's PERSIST has a TTL to remove).
            apply_at(
                &eu,
                10,
                10 << 16,
                0,
                vec![set_to("k", "old"), expire(Some(3_600_000))],
            );
            ship(&eu, 0, &us, "k", 11 << 16);
            // eu's EXPIRE at 20 (for 30); us's later decision at 25; eu's expiry fires at 31.
            apply_at(&eu, 20, 20 << 16, 0, vec![expire(Some(30))]);
            apply_at(&us, 25, 25 << 16, 1, vec![op]);
            assert_eq!(
                apply_at(&eu, 31, 31 << 16, 0, vec![fire()]),
                vec![OpResult::Int(1)]
            );
            assert_eq!(eu.dbsize(0), 0, "{what}: fired");
            ship(&eu, 0, &us, "k", 40 << 16);
            if us.get_raw(0, b"k").unwrap().is_some() {
                ship(&us, 1, &eu, "k", 41 << 16);
            }
            for (name, ks) in [("eu", &eu), ("us", &us)] {
                let got = read(ks, 100);
                let got = got.as_ref().map(|(v, at)| (v.as_str(), *at));
                assert_eq!(got, expected, "{what} in {name}");
                assert_eq!(
                    ks.dbsize(0),
                    u64::from(expected.is_some()),
                    "{what} in {name}"
                );
            }
            if expected.is_none() {
                // Collected once every region has it, like a tombstone.
                let found = eu.collectable_tombstones(all, u64::MAX, 10).unwrap();
                assert_eq!(found.len(), 1, "{what}: one record to collect");
                apply_at(&eu, 50, 50 << 16, 0, vec![Op::Forget { tombstones: found }]);
                assert!(eu.get_raw(0, b"k").unwrap().is_none(), "{what}: collected");
            }
        }
    }

    /// Applies `ops` as the local log entry at `index` (outbox entries are keyed by it).
    fn apply_entry(ks: &Keyspace, index: u64, ops: Vec<Op>) {
        let batch = OpBatch {
            now_ms: 1,
            hlc: index * 10,
            origin: 0,
            ops: ops.into(),
        };
        ks.apply_batch_with_meta(&batch, &[], Some(index))
            .expect("apply");
    }

    #[test]
    fn the_shipper_reads_the_same_outbox_from_memory_as_from_storage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let indexes = |v: Vec<(u64, Bytes)>| v.into_iter().map(|(i, _)| i).collect::<Vec<_>>();
        let after = |ks: &Keyspace, index| {
            indexes(ks.outbox_raw_after(index, 10, usize::MAX).expect("read"))
        };
        {
            let ks = keyspace(dir.path());
            for index in [3u64, 4, 7, 9] {
                apply_entry(&ks, index, vec![set(&format!("k{index}"))]);
            }
            let from_memory = ks.outbox_raw_after(3, 10, usize::MAX).expect("read");
            assert_eq!(
                from_memory,
                ks.outbox_stored_after(3, 10, usize::MAX).expect("read")
            );
            assert_eq!(indexes(from_memory), vec![4, 7, 9]);
            assert!(ks.outbox_memory() > 0);
            assert_eq!(ks.outbox_last(), 9);
            apply_entry(&ks, 10, vec![Op::TrimOutbox { upto: 7 }]);
            assert_eq!(after(&ks, 0), vec![9]);
            assert_eq!(after(&ks, 7), vec![9]);
        }
        // Reopened: memory starts empty and the stored entries are read from RocksDB.
        let ks = keyspace(dir.path());
        assert_eq!(ks.outbox_memory(), 0);
        assert_eq!(ks.outbox_last(), 9);
        assert_eq!(after(&ks, 0), vec![9]);
        apply_entry(&ks, 12, vec![set("k12")]);
        assert_eq!(after(&ks, 0), vec![9, 12]);
        assert_eq!(after(&ks, 9), vec![12]);
        // Trimmed empty, then reopened: the newest index written is still known.
        apply_entry(&ks, 13, vec![Op::TrimOutbox { upto: 12 }]);
        drop(ks);
        let ks = keyspace(dir.path());
        assert_eq!(ks.outbox_last(), 12);
        assert!(after(&ks, 0).is_empty());
    }

    /// A keyspace of region `region` among several, fed by a Raft log; with `write_back`, its
    /// applied changes wait in the pending set (an hour's window: until something reads
    /// RocksDB by iterating it, or the keyspace closes).
    fn region_keyspace(dir: &std::path::Path, region: u8, write_back: bool) -> Keyspace {
        let ks = Keyspace::open(KeyspaceOptions {
            write_back: write_back.then_some(crate::keyspace::WriteBackOptions {
                window: std::time::Duration::from_secs(3600),
                bytes: 1 << 30,
            }),
            ..single_region_options(dir)
        })
        .expect("open");
        ks.set_geo(region, true);
        ks.set_log_is_wal(true);
        ks
    }

    /// An outbox entry with its states in key order (a batch lists them in no set order).
    fn sorted_entry(encoded: &[u8]) -> (u64, Vec<ShippedState>) {
        let mut entry: OutboxEntry = bincode::deserialize(encoded).expect("entry");
        entry.states.sort();
        (entry.hlc, entry.states)
    }

    /// A RocksDB record: column family, key, value.
    type StoredRecord = (&'static str, Box<[u8]>, Box<[u8]>);

    /// Every record of every column family, the pending changes written first (outbox entries
    /// with their states in key order).
    fn stored_records(ks: &Keyspace) -> Vec<StoredRecord> {
        ks.write_pending().expect("write pending");
        let mut out = Vec::new();
        for name in rocks::COLUMN_FAMILIES {
            for item in ks
                .db
                .iterator_cf(rocks::cf(&ks.db, name), rocksdb::IteratorMode::Start)
            {
                let (k, mut v) = item.expect("read");
                if *name == rocks::CF_OUTBOX {
                    let (hlc, states) = sorted_entry(&v);
                    let sorted = OutboxEntry { hlc, states };
                    v = bincode::serialize(&sorted).expect("encode").into();
                }
                out.push((*name, k, v));
            }
        }
        out
    }

    /// Two regions write, ship their outbox entries to each other, trim their outboxes, report
    /// what they merged and collect tombstones, at random, twice side by side: once writing back
    /// (with several regions: outbox entries, trims, watermarks, reports and the tombstone index
    /// pending too) and once writing each
    /// batch to RocksDB. Every read, every outbox read and at the end every stored record must be
    /// the same; the writing-back pair is also closed and reopened now and then (its pending
    /// changes then written by the writer at close).
    #[test]
    fn regions_that_write_back_store_and_ship_what_direct_writes_do() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = |r: u8, wb: bool| dir.path().join(format!("r{r}-{wb}"));
        let mut back = [0u8, 1].map(|r| region_keyspace(&path(r, true), r, true));
        let direct = [0u8, 1].map(|r| region_keyspace(&path(r, false), r, false));
        let mut seed = 0x243f_6a88_85a3_08d3u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut index = [0u64; 2];
        let mut shipped = [0u64; 2];
        let values = ["a", "bb", "ccc"];
        let mut pending_entries = 0;
        let mut forgotten = 0;
        let mut both = |back: &[Keyspace; 2], r: usize, step: u64, ops: Vec<Op>| {
            index[r] += 1;
            let batch = OpBatch {
                now_ms: 1_000 + step,
                hlc: (step + 1) << 16,
                origin: r as u8,
                ops: ops.into(),
            };
            let meta = [(&b"applied"[..], index[r].to_be_bytes().to_vec())];
            let a = back[r].apply_batch_with_meta(&batch, &meta, Some(index[r]));
            let b = direct[r].apply_batch_with_meta(&batch, &meta, Some(index[r]));
            assert_eq!(a.expect("apply"), b.expect("apply"), "step {step}");
            // An outbox entry the direct pair stored and the other holds pending.
            let outbox = |ks: &Keyspace| {
                let cf = rocks::cf(&ks.db, rocks::CF_OUTBOX);
                ks.db.get_cf(cf, index[r].to_be_bytes()).expect("read")
            };
            if outbox(&direct[r]).is_some() && outbox(&back[r]).is_none() {
                pending_entries += 1;
            }
        };
        for step in 0..3000u64 {
            let r = next(2) as usize;
            let key = format!("k{}", next(12));
            match next(20) {
                0..=7 => {
                    let op = match next(5) {
                        0 => del(&key),
                        1 => incr_by(&key, next(7) as i64 - 3),
                        2 => Op::Expire {
                            db: 0,
                            key: Bytes::from(key.clone()),
                            at_ms: Some(1_000 + step + next(40)),
                            cond: ExpireCond::Always,
                        },
                        _ => set_to(&key, values[next(3) as usize]),
                    };
                    let more = (0..next(3)).map(|i| set(&format!("k{}", (step + i) % 12)));
                    both(&back, r, step, std::iter::once(op).chain(more).collect());
                }
                8..=12 => {
                    // Ship region r's outbox entries after the last shipped to the other region.
                    let from_back = back[r].outbox_raw_after(shipped[r], 3, usize::MAX);
                    let from_direct = direct[r].outbox_raw_after(shipped[r], 3, usize::MAX);
                    let entries = from_back.expect("outbox");
                    let sorted = |entries: &[(u64, Bytes)]| {
                        let sorted = entries.iter().map(|(i, e)| (*i, sorted_entry(e)));
                        sorted.collect::<Vec<_>>()
                    };
                    let from_direct = from_direct.expect("outbox");
                    assert_eq!(sorted(&entries), sorted(&from_direct), "step {step}");
                    let merges = entries
                        .iter()
                        .map(|(i, encoded)| {
                            let entry: OutboxEntry = bincode::deserialize(encoded).expect("entry");
                            shipped[r] = *i;
                            Op::Merge {
                                origin: r as u8,
                                index: *i,
                                hlc: entry.hlc,
                                states: entry.states,
                            }
                        })
                        .collect::<Vec<_>>();
                    if !merges.is_empty() {
                        both(&back, 1 - r, step, merges);
                    }
                }
                13 => {
                    let upto = next(shipped[r] + 1);
                    both(&back, r, step, vec![Op::TrimOutbox { upto }]);
                }
                14 => {
                    // Collects a few tombstones: the candidates as the writing-back region's
                    // RocksDB has them (maybe stale), which the Forget checks again.
                    let found = back[r].collectable_tombstones(all, u64::MAX, 3).unwrap();
                    if !found.is_empty() {
                        forgotten += found.len();
                        both(&back, r, step, vec![Op::Forget { tombstones: found }]);
                    }
                }
                15..=16 => {
                    let hlc = next((step + 1) << 16);
                    let report = Op::Seen {
                        from: 1 - r as u8,
                        hlcs: vec![(r as u8, hlc)],
                    };
                    both(&back, r, step, vec![report]);
                }
                17 => {
                    // Closed (the writer writes what is pending) and opened again.
                    let ks = std::mem::replace(
                        &mut back[r],
                        region_keyspace(&path(9, true), r as u8, true),
                    );
                    drop(ks);
                    back[r] = region_keyspace(&path(r as u8, true), r as u8, true);
                }
                _ => {
                    for (a, b) in back.iter().zip(&direct) {
                        assert_eq!(
                            a.get_raw(0, key.as_bytes()).unwrap(),
                            b.get_raw(0, key.as_bytes()).unwrap()
                        );
                        assert_eq!(a.dbsize(0), b.dbsize(0), "step {step}");
                        assert_eq!(a.merged_hlcs(), b.merged_hlcs(), "step {step}");
                        assert_eq!(a.outbox_last(), b.outbox_last(), "step {step}");
                        assert_eq!(a.outbox_trimmed().unwrap(), b.outbox_trimmed().unwrap());
                        let indexed = |ks: &Keyspace| ks.tombstones_indexed(1000).unwrap();
                        assert_eq!(indexed(a), indexed(b), "step {step}");
                        for o in 0..2 {
                            assert_eq!(a.watermark(o).unwrap(), b.watermark(o).unwrap());
                            assert_eq!(a.seen(1 - o, o).unwrap(), b.seen(1 - o, o).unwrap());
                        }
                    }
                }
            }
        }
        for (a, b) in back.iter().zip(&direct) {
            assert!(a.defers_writes() && !b.defers_writes());
            assert_eq!(stored_records(a), stored_records(b));
        }
        assert!(
            shipped.iter().all(|s| *s > 50),
            "entries shipped: {shipped:?}"
        );
        assert!(
            pending_entries > 100,
            "outbox entries pending: {pending_entries}"
        );
        assert!(forgotten > 20, "tombstones collected: {forgotten}");
    }

    #[test]
    fn tombstones_are_indexed_and_forget_drops_only_unchanged_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ks = keyspace(dir.path());
        apply(&ks, 10, vec![set("a"), set("b"), set("c")]);
        apply(&ks, 20, vec![del("a"), del("b"), del("c")]);
        // A counter's tombstone is collectable too (new counts start a new incarnation).
        apply(
            &ks,
            25,
            vec![Op::IncrBy {
                db: 0,
                key: Bytes::from_static(b"n"),
                delta: 1,
            }],
        );
        apply(&ks, 26, vec![del("n")]);
        assert_eq!(ks.tombstones_indexed(100).unwrap(), 4);
        // Only stamps at or below the bound are offered.
        assert!(ks
            .collectable_tombstones(|_| 19, 19, 100)
            .unwrap()
            .is_empty());
        let found = ks.collectable_tombstones(all, u64::MAX, 100).unwrap();
        assert_eq!(found.len(), 4);
        // "b" is written again before the Forget applies: it stays (and leaves the index).
        apply(&ks, 30, vec![set("b")]);
        let dropped = apply(&ks, 40, vec![Op::Forget { tombstones: found }]);
        assert_eq!(dropped, vec![OpResult::Int(3)]);
        assert_eq!(ks.tombstones_indexed(100).unwrap(), 0);
        assert!(ks.get(0, b"a", 1).unwrap().is_none());
        assert!(ks.get(0, b"b", 1).unwrap().is_some());
        // A tombstone over a tombstone moves the index record to the newer stamp.
        apply(&ks, 50, vec![del("b")]);
        apply(&ks, 60, vec![del("b")]);
        let found = ks.collectable_tombstones(all, u64::MAX, 100).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].2.hlc, 50);
    }

    #[test]
    fn merges_and_reports_advance_the_collection_inputs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ks = keyspace(dir.path());
        apply(
            &ks,
            10,
            vec![
                Op::Merge {
                    origin: 1,
                    index: 5,
                    hlc: 7,
                    states: Vec::new(),
                },
                Op::Seen {
                    from: 1,
                    hlcs: vec![(0, 3), (2, 9)],
                },
            ],
        );
        // Older reports never move them back.
        apply(
            &ks,
            11,
            vec![Op::Seen {
                from: 1,
                hlcs: vec![(0, 2)],
            }],
        );
        assert_eq!(ks.merged_hlc(1), 7);
        assert_eq!(ks.merged_hlcs(), vec![(1, 7)]);
        assert_eq!(ks.seen(1, 0).unwrap(), 3);
        assert_eq!(ks.seen(1, 2).unwrap(), 9);
        assert_eq!(ks.seen(2, 0).unwrap(), 0);
        // The merged HLCs are held in memory too: a reopened keyspace reads them back.
        drop(ks);
        let ks = keyspace(dir.path());
        assert_eq!(ks.merged_hlcs(), vec![(1, 7)]);
    }

    #[test]
    fn export_stream_imports_into_another_keyspace() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (a, b) = (keyspace(d1.path()), keyspace(d2.path()));
        apply(&a, 10, vec![set("x"), set("y")]);
        apply(
            &a,
            11,
            vec![Op::Merge {
                origin: 1,
                index: 5,
                hlc: 7,
                states: Vec::new(),
            }],
        );
        apply(&b, 10, vec![set("only-in-b")]);
        let mut image = Vec::new();
        let n = a
            .export_to(&mut image, &[b"count\x00".as_slice()], |values, _| {
                Ok(values.len())
            })
            .unwrap();
        assert_eq!(n, 1);
        // A stream cut inside a record is refused before anything is written.
        let mut cut = &image[..image.len() - 3];
        assert!(matches!(
            b.import_from(&mut cut, &[]),
            Err(StorageError::SnapshotCorrupt(_))
        ));
        assert!(b.get(0, b"only-in-b", 1).unwrap().is_some());
        assert!(!b.import_interrupted().unwrap());
        b.import_from(&mut image.as_slice(), &[]).unwrap();
        assert!(b.get(0, b"x", 1).unwrap().is_some());
        assert!(b.get(0, b"only-in-b", 1).unwrap().is_none());
        assert_eq!(b.dbsize(0), 2);
        assert_eq!(b.merged_hlcs(), vec![(1, 7)], "held in memory anew");
        assert!(!b.import_interrupted().unwrap());
    }

    /// `count` plain SETs of new keys `k0`, `k1`, … holding their number.
    fn numbered_sets(count: usize) -> Vec<Op> {
        (0..count)
            .map(|i| Op::Set {
                db: 0,
                key: Bytes::from(format!("k{i}")),
                value: Bytes::from(i.to_string()),
                expire: ExpireSet::Clear,
                cond: SetCond::Always,
                reply: SetReply::OkOrNil,
            })
            .collect()
    }

    /// INCRBY 1 of every key `numbered_sets(count)` wrote: each must find its number.
    fn assert_increments_find_every_number(ks: &Keyspace, count: usize) {
        let incrs = (0..count).map(|i| incr_by(&format!("k{i}"), 1)).collect();
        let results = apply(ks, 3 << 16, incrs);
        for (i, result) in results.iter().enumerate() {
            assert_eq!(*result, OpResult::Int(i as i64 + 1), "k{i}");
        }
        assert_eq!(ks.dbsize(0), count as u64);
    }

    #[test]
    fn a_cache_over_empty_storage_is_complete_until_it_lets_a_key_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ks = single_region_keyspace(dir.path());
        assert!(ks.hot_cache_complete(), "opened over no data");
        apply(&ks, 1 << 16, numbered_sets(100));
        assert!(ks.hot_cache_complete(), "100 keys fit in 1 MiB");
        assert_increments_find_every_number(&ks, 100);
        drop(ks);
        let ks = single_region_keyspace(dir.path());
        assert!(!ks.hot_cache_complete(), "reopened over stored keys");
        let results = apply(&ks, 4 << 16, vec![incr_by("k7", 1), incr_by("k99", 1)]);
        assert_eq!(results, vec![OpResult::Int(9), OpResult::Int(101)]);
        assert_eq!(ks.dbsize(0), 100);
    }

    #[test]
    fn keys_the_cache_let_go_are_read_from_storage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ks = Keyspace::open(KeyspaceOptions {
            hot_cache_bytes: 64 << 10,
            ..single_region_options(dir.path())
        })
        .expect("open");
        assert!(ks.hot_cache_complete());
        // About 700 bytes charged per entry: 5,000 keys overflow 64 KiB many times over.
        for chunk in numbered_sets(5_000).chunks(500) {
            apply(&ks, 2 << 16, chunk.to_vec());
        }
        ks.hot.run_pending_tasks();
        assert!(!ks.hot_cache_complete(), "keys were evicted");
        // Were evicted keys taken for new ones, each INCR would answer 1 and add a key.
        assert_increments_find_every_number(&ks, 5_000);
    }

    #[test]
    fn a_snapshot_installed_into_a_complete_cache_is_read_from_storage() {
        let a_dir = tempfile::tempdir().expect("tempdir");
        let a = single_region_keyspace(a_dir.path());
        apply(&a, 1 << 16, numbered_sets(50));
        let mut image = Vec::new();
        a.export_to(&mut image, &[], |_, _| Ok(())).unwrap();
        let b_dir = tempfile::tempdir().expect("tempdir");
        let b = single_region_keyspace(b_dir.path());
        assert!(b.hot_cache_complete());
        b.import_from(&mut image.as_slice(), &[]).unwrap();
        assert!(
            !b.hot_cache_complete(),
            "the import wrote keys around the cache"
        );
        assert_increments_find_every_number(&b, 50);
    }

    #[test]
    fn a_flush_ends_completeness_and_other_databases_keep_their_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ks = single_region_keyspace(dir.path());
        apply(&ks, 1 << 16, numbered_sets(20));
        apply(&ks, 2 << 16, vec![Op::FlushDb { db: 1 }]);
        assert!(!ks.hot_cache_complete());
        assert_increments_find_every_number(&ks, 20);
    }

    #[test]
    fn concurrent_reads_of_new_keys_never_hide_an_applied_write() {
        // Reads race the apply of new keys: a read that missed just before a batch published
        // must not fill the cache with the key's absence over the published value.
        let dir = tempfile::tempdir().expect("tempdir");
        let ks = Arc::new(keyspace(dir.path()));
        assert!(ks.hot_cache_complete());
        let applied = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (ks, applied, done) = (ks.clone(), applied.clone(), done.clone());
                std::thread::spawn(move || {
                    let mut checked = 0u64;
                    while !done.load(std::sync::atomic::Ordering::Acquire) {
                        let upto = applied.load(std::sync::atomic::Ordering::Acquire);
                        // The next keys (racing their apply), then an applied one.
                        for i in upto..upto + 4 {
                            let _ = ks.get(0, format!("k{i}").as_bytes(), 1).expect("get");
                        }
                        if upto > 0 {
                            let i = upto - 1;
                            let found = ks.get(0, format!("k{i}").as_bytes(), 1).expect("get");
                            assert!(found.is_some(), "k{i} was applied");
                            checked += 1;
                        }
                    }
                    checked
                })
            })
            .collect();
        for i in 0..3_000 {
            apply(&ks, (i as u64 + 1) << 16, vec![set(&format!("k{i}"))]);
            applied.store(i + 1, std::sync::atomic::Ordering::Release);
        }
        done.store(true, std::sync::atomic::Ordering::Release);
        for reader in readers {
            assert!(reader.join().expect("reader") > 0);
        }
        for i in 0..3_000 {
            let found = ks.get(0, format!("k{i}").as_bytes(), 1).expect("get");
            assert!(found.is_some(), "k{i}");
        }
    }
}

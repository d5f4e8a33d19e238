//! Write-back of applied state: an applied batch's changes (values, expiry index records, key
//! counts, the applied position and, with several regions, the batch's outbox entry and its
//! merge bookkeeping) go to an in-memory set of pending changes instead of a RocksDB write of
//! their own. A writer thread writes the pending set as one RocksDB batch, in key order, when
//! it grows past a byte bound or a time window has passed; readers look in the pending set
//! before RocksDB.
//!
//! Why: the memtable insert of every key (a skip-list search, cache misses all the way down)
//! was most of the Raft thread's work per SET. Written later, on another thread, the keys of
//! many entries go in together, in order, and a key written several times in the window goes
//! in once.
//!
//! Why it is safe: the Raft log is the write-ahead log. The applied position is written in the
//! same RocksDB batch as the changes it covers, so after a crash the keyspace is at some applied
//! position and openraft applies the log again from there (the apply is deterministic, and an
//! outbox entry is keyed by its log index, so the same entry is written again). The log is
//! never purged past what RocksDB holds: the purge first writes the pending set (see
//! [`Keyspace::flush_applied`](super::Keyspace::flush_applied)). A batch whose changes a
//! key-by-key set cannot hold in order (FLUSHDB's range deletes, a churn epoch), and a tombstone
//! collection's, writes the pending set first and then goes to RocksDB directly, so RocksDB
//! always holds a prefix of the applied batches.
//!
//! Reads that iterate RocksDB (SCAN, KEYS, RANDOMKEY, snapshots, log purges, a cross-region
//! resync, the outbox read from storage) first write the pending set, so they see every applied
//! change; single records (a key's value, a meta record) are looked up in the set first. The
//! tombstone collection reads the index as RocksDB has it: it only proposes candidates, which
//! `Op::Forget` checks again, and a batch with that op writes the set out first.
//! Active expiry does not write it: an expiry set in the last moments is found by a later pass
//! (reads hide the key meanwhile), and a record pending deletion is passed over.
//!
//! The long window pays only while keys are rewritten within it: the pending set then takes
//! each key's last state once, and RocksDB gets a fraction of the writes. Writes of keys not
//! written lately (a bulk load of new keys) gain nothing from waiting and would only make the
//! set, and each RocksDB write of it, larger. So the writer uses the configured window and
//! bound only while at least a quarter of recent writes were rewrites (the hot cache tells:
//! see [`HotCache::publish`](super::HotCache::publish)), and [`SHORT_WINDOW`] and
//! [`SHORT_BYTES`] otherwise.
//!
//! Memory: the set being filled reaches twice `bytes` at most (then the applying thread
//! writes it itself), the set being written as much again, and its RocksDB batch copies it
//! while it is written: about six times `bytes` at the worst.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rocksdb::{WriteBatch, WriteOptions, DB};
use tracing::warn;

use super::value::StoredValue;
use super::{rocks, StorageError};

/// The window while keys are not being rewritten (see the module doc).
pub const SHORT_WINDOW: Duration = Duration::from_millis(5);
/// The byte bound while keys are not being rewritten.
pub const SHORT_BYTES: usize = 1 << 20;
/// Writes counted before the writer decides whether keys are being rewritten.
const MIN_WRITES_TO_DECIDE: u64 = 1000;

/// Bounds of the pending set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteBackOptions {
    /// Pending changes are written at most this long after the first of them.
    pub window: Duration,
    /// Pending changes are written once they take this many bytes (keys and values); at twice
    /// this, the applying thread writes them itself instead of waiting for the writer.
    pub bytes: usize,
}

type Map<K, V> = HashMap<K, V, ahash::RandomState>;

/// Longest encoding a pending change keeps in its table entry (longer ones are shared).
const INLINE_VALUE: usize = 110;

/// A key's pending change, as its table entry holds it.
///
/// Short encodings are copied into the entry rather than kept as the shared buffer the batch
/// encoded: a buffer held by the set for up to a second was cold when the next change of its
/// key dropped it (a cache miss and a free on the Raft thread, for every rewrite), and the
/// allocator then handed out cold blocks to new encodings; copied, the batch's buffers die
/// with the batch, and a rewrite overwrites the entry it has already brought into the cache.
#[derive(Clone)]
enum PendingValue {
    /// The key is deleted.
    Deleted,
    /// An encoding of up to [`INLINE_VALUE`] bytes.
    Inline { len: u8, bytes: [u8; INLINE_VALUE] },
    /// A longer encoding.
    Shared(StoredValue),
}

impl PendingValue {
    fn of(value: Option<&StoredValue>) -> PendingValue {
        match value {
            None => PendingValue::Deleted,
            Some(v) if v.len() <= INLINE_VALUE => {
                let mut bytes = [0u8; INLINE_VALUE];
                bytes[..v.len()].copy_from_slice(v.as_bytes());
                PendingValue::Inline {
                    len: v.len() as u8,
                    bytes,
                }
            }
            Some(v) => PendingValue::Shared(v.clone()),
        }
    }

    /// The encoding (`None`: deleted).
    fn encoded(&self) -> Option<&[u8]> {
        match self {
            PendingValue::Deleted => None,
            PendingValue::Inline { len, bytes } => Some(&bytes[..usize::from(*len)]),
            PendingValue::Shared(v) => Some(v.as_bytes()),
        }
    }

    /// A copy as a value (`None`: deleted).
    fn to_value(&self) -> Option<StoredValue> {
        match self {
            PendingValue::Shared(v) => Some(v.clone()),
            other => other.encoded().map(StoredValue::copy_of),
        }
    }
}

/// A data key as the pending set holds it: copied into the table entry (inline like the hot
/// cache's keys), not shared with the batch that wrote it. Shared, each first clone of the
/// batch's key allocated the `Bytes` reference count, and dropping it freed it (together about
/// 5 % of the Raft thread at SET -P16 on every node of a region).
type PendingKey = super::hot::HotKey;

/// Data key → its pending change: a hash table that can also be probed without comparing keys
/// (see [`DataChanges::warm`]).
#[derive(Clone, Default)]
struct DataChanges {
    table: hashbrown::HashTable<(PendingKey, PendingValue)>,
    hasher: ahash::RandomState,
}

impl DataChanges {
    fn with_capacity(keys: usize) -> DataChanges {
        DataChanges {
            table: hashbrown::HashTable::with_capacity(keys),
            hasher: ahash::RandomState::new(),
        }
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    fn len(&self) -> usize {
        self.table.len()
    }

    /// Keys the table holds without growing.
    fn capacity(&self) -> usize {
        self.table.capacity()
    }

    /// Empties the table, keeping its memory.
    fn clear(&mut self) {
        self.table.clear();
    }

    fn get(&self, key: &[u8]) -> Option<&PendingValue> {
        self.table
            .find(self.hash(key), |(k, _)| k[..] == *key)
            .map(|(_, v)| v)
    }

    /// Sets `key`'s change; returns the encoded length of the one it replaces (0: a delete).
    fn insert(&mut self, key: &[u8], value: PendingValue) -> Option<usize> {
        let hash = self.hash(key);
        let hasher = &self.hasher;
        match self.table.entry(
            hash,
            |(k, _)| k[..] == *key,
            |(k, _)| hasher.hash_one(&k[..]),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut e) => {
                let held = &mut e.get_mut().1;
                let old = held.encoded().map_or(0, <[u8]>::len);
                *held = value;
                Some(old)
            }
            hashbrown::hash_table::Entry::Vacant(e) => {
                e.insert((PendingKey::from_slice(key), value));
                None
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = &(PendingKey, PendingValue)> {
        self.table.iter()
    }

    /// Brings into the CPU's caches, for the inserts of `keys` that follow, the table entries
    /// they land on and the keys those hold. Probes without comparing keys (the probe never
    /// matches), so one key's misses do not wait for another's: an insert over a pending key
    /// otherwise misses on the table, then on the stored key it compares, one after the other.
    fn warm<'k>(&self, keys: impl Iterator<Item = &'k [u8]>) {
        use super::hot::prefetch;
        for key in keys {
            let _ = self.table.find(self.hash(key), |(k, _)| {
                prefetch(k.as_ptr(), 1);
                false
            });
        }
    }
}

/// Changes of applied batches not yet in RocksDB: the last change of each key.
#[derive(Clone, Default)]
pub(super) struct Changes {
    /// Data key → its new encoded state (`None`: deleted).
    data: DataChanges,
    /// Expiry index key → put (true) or delete (false).
    expiry: Map<Vec<u8>, bool>,
    /// Tombstone index key (a meta record) → put (true) or delete (false).
    tombstones: Map<Vec<u8>, bool>,
    /// Meta key → value (key counts, the applied position, the membership; with several
    /// regions also watermarks, merged HLCs and what other regions reported).
    meta: Map<Vec<u8>, Vec<u8>>,
    /// Outbox entries (log index, encoded entry), in the order they were applied.
    outbox: Vec<(u64, bytes::Bytes)>,
    /// The outbox is trimmed up to this index (inclusive), in RocksDB too.
    outbox_trim: Option<u64>,
    /// Approximate bytes held (keys and values; an overwritten change no longer counts).
    bytes: usize,
}

impl Changes {
    /// Empty, with room for `keys` data keys.
    fn with_capacity(keys: usize) -> Changes {
        Changes {
            data: DataChanges::with_capacity(keys),
            ..Changes::default()
        }
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
            && self.expiry.is_empty()
            && self.tombstones.is_empty()
            && self.meta.is_empty()
            && self.outbox.is_empty()
            && self.outbox_trim.is_none()
    }

    /// Empties the set, keeping its tables' memory.
    fn clear(&mut self) {
        self.data.clear();
        self.expiry.clear();
        self.tombstones.clear();
        self.meta.clear();
        self.outbox.clear();
        self.outbox_trim = None;
        self.bytes = 0;
    }

    /// Takes `newer`'s changes over these.
    fn absorb(&mut self, newer: Changes) {
        self.bytes += newer.bytes;
        for (key, value) in newer.data.table {
            self.data.insert(&key, value);
        }
        self.expiry.extend(newer.expiry);
        self.tombstones.extend(newer.tombstones);
        self.meta.extend(newer.meta);
        self.outbox.extend(newer.outbox);
        self.outbox_trim = self.outbox_trim.max(newer.outbox_trim);
    }

    /// Prepares the inserts of `keys`' changes that follow (see [`DataChanges::warm`]).
    pub fn warm<'k>(&self, keys: impl Iterator<Item = &'k [u8]>) {
        self.data.warm(keys);
    }

    /// Adds the changes of one applied batch.
    pub fn data(&mut self, key: &[u8], value: Option<&StoredValue>) {
        let key_len = key.len();
        let size = |value_len: usize| key_len + value_len + 48;
        self.bytes += size(value.map_or(0, StoredValue::len));
        if let Some(old_len) = self.data.insert(key, PendingValue::of(value)) {
            self.bytes = self.bytes.saturating_sub(size(old_len));
        }
    }

    /// Adds a put (`true`) or delete of an expiry index record.
    pub fn expiry(&mut self, key: Vec<u8>, put: bool) {
        let size = key.len() + 32;
        if self.expiry.insert(key, put).is_none() {
            self.bytes += size;
        }
    }

    /// Adds a put (`true`) or delete of a tombstone index record.
    pub fn tombstone(&mut self, key: Vec<u8>, put: bool) {
        let size = key.len() + 32;
        if self.tombstones.insert(key, put).is_none() {
            self.bytes += size;
        }
    }

    /// Adds a meta record.
    pub fn meta(&mut self, key: &[u8], value: Vec<u8>) {
        self.bytes += key.len() + value.len() + 32;
        if let Some(old) = self.meta.insert(key.to_vec(), value) {
            self.bytes = self.bytes.saturating_sub(key.len() + old.len() + 32);
        }
    }

    /// Adds a local batch's outbox entry (other regions receive it), keyed by its log index.
    pub fn outbox(&mut self, index: u64, entry: bytes::Bytes) {
        self.bytes += entry.len() + 32;
        self.outbox.push((index, entry));
    }

    /// Trims the outbox up to `upto` (inclusive): pending entries there are dropped, and the
    /// RocksDB batch deletes the stored ones after writing the rest. Entries applied after the
    /// trim have higher indexes (an outbox entry is keyed by its log index).
    pub fn trim_outbox(&mut self, upto: u64) {
        let held: usize = self.outbox.iter().map(|(_, e)| e.len() + 32).sum();
        self.outbox.retain(|(index, _)| *index > upto);
        let kept: usize = self.outbox.iter().map(|(_, e)| e.len() + 32).sum();
        self.bytes = self.bytes.saturating_sub(held - kept);
        self.outbox_trim = self.outbox_trim.max(Some(upto));
    }

    /// One RocksDB batch with every change, data keys in order.
    fn to_batch(&self, db: &DB) -> WriteBatch {
        // Room for all of it at once (`bytes` counts more per record than the batch takes): a
        // batch grown as it fills copies what it holds at every doubling.
        let mut batch = WriteBatch::with_capacity_bytes(self.bytes + 64);
        let data = rocks::cf(db, rocks::CF_DATA);
        let mut keys: Vec<(&[u8], &PendingValue)> =
            self.data.iter().map(|(k, v)| (&k[..], v)).collect();
        keys.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (key, value) in keys {
            match value.encoded() {
                Some(v) => batch.put_cf(data, key, v),
                None => batch.delete_cf(data, key),
            }
        }
        let expiry = rocks::cf(db, rocks::CF_EXPIRY);
        let mut keys: Vec<(&Vec<u8>, &bool)> = self.expiry.iter().collect();
        keys.sort_unstable();
        for (key, put) in keys {
            if *put {
                batch.put_cf(expiry, key, b"");
            } else {
                batch.delete_cf(expiry, key);
            }
        }
        let meta = rocks::cf(db, rocks::CF_META);
        let mut keys: Vec<(&Vec<u8>, &bool)> = self.tombstones.iter().collect();
        keys.sort_unstable();
        for (key, put) in keys {
            if *put {
                batch.put_cf(meta, key, b"");
            } else {
                batch.delete_cf(meta, key);
            }
        }
        for (key, value) in &self.meta {
            batch.put_cf(meta, key, value);
        }
        let outbox = rocks::cf(db, rocks::CF_OUTBOX);
        for (index, entry) in &self.outbox {
            batch.put_cf(outbox, index.to_be_bytes(), entry);
        }
        if let Some(upto) = self.outbox_trim {
            // After the puts: a batch applies its records in order.
            batch.delete_range_cf(
                outbox,
                0u64.to_be_bytes(),
                upto.saturating_add(1).to_be_bytes(),
            );
        }
        batch
    }
}

struct Pending {
    /// Changes not yet being written.
    dirty: Changes,
    /// When the oldest of `dirty` was added.
    dirty_since: Option<Instant>,
    /// Changes being written right now (readers still see them here until they are in RocksDB).
    flushing: Option<Arc<Changes>>,
    /// The last set written, emptied, for the next one: a new set's table is fresh memory,
    /// which the Raft thread's inserts then faulted in (the kernel zeroing pages was 4 % of
    /// the Raft thread under SET -P16).
    spare: Option<Changes>,
}

/// The pending set and its writer thread.
pub(super) struct WriteBack {
    db: Arc<DB>,
    options: WriteBackOptions,
    pending: Mutex<Pending>,
    /// Wakes the writer (bytes past the bound, or stop).
    wake: Condvar,
    /// Held while a set is written, so sets reach RocksDB in the order they were taken.
    writing: Mutex<()>,
    /// Something is pending (readers skip the lock when not); changed under `pending`.
    any: AtomicBool,
    stop: AtomicBool,
    /// Writes of keys, and of those the rewrites, since the writer last decided.
    writes: AtomicU64,
    rewrites: AtomicU64,
    /// Keys are being rewritten: the configured bounds apply, not the short ones.
    coalescing: AtomicBool,
    /// The writer thread, until [`WriteBack::close`] joins it.
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl WriteBack {
    /// Starts the writer thread over `db`.
    pub fn start(db: Arc<DB>, options: WriteBackOptions) -> std::io::Result<Arc<WriteBack>> {
        let this = Arc::new(WriteBack {
            db,
            options,
            pending: Mutex::new(Pending {
                dirty: Changes::default(),
                dirty_since: None,
                flushing: None,
                spare: None,
            }),
            wake: Condvar::new(),
            writing: Mutex::new(()),
            any: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            writes: AtomicU64::new(0),
            rewrites: AtomicU64::new(0),
            coalescing: AtomicBool::new(false),
            thread: Mutex::new(None),
        });
        let writer = this.clone();
        let thread = std::thread::Builder::new()
            .name("meridian-sm-write".into())
            .spawn(move || writer.run())?;
        *this.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(thread);
        Ok(this)
    }

    /// Counts one applied batch's key writes, `rewrites` of them of keys written within the
    /// window.
    pub fn note_writes(&self, writes: usize, rewrites: usize) {
        self.writes.fetch_add(writes as u64, Ordering::Relaxed);
        self.rewrites.fetch_add(rewrites as u64, Ordering::Relaxed);
    }

    /// The window and byte bound now: the configured ones while keys are being rewritten.
    fn bounds(&self) -> (Duration, usize) {
        if self.coalescing.load(Ordering::Relaxed) {
            (self.options.window, self.options.bytes)
        } else {
            (
                self.options.window.min(SHORT_WINDOW),
                self.options.bytes.min(SHORT_BYTES),
            )
        }
    }

    /// Decides, from the writes counted since the last decision, whether keys are being
    /// rewritten (at least a quarter of them), once enough were counted.
    fn decide(&self) {
        let writes = self.writes.load(Ordering::Relaxed);
        if writes < MIN_WRITES_TO_DECIDE {
            return;
        }
        let rewrites = self.rewrites.swap(0, Ordering::Relaxed);
        self.writes.fetch_sub(writes, Ordering::Relaxed);
        self.coalescing
            .store(rewrites.saturating_mul(4) >= writes, Ordering::Relaxed);
    }

    /// Whether the configured (long) bounds apply now (INFO).
    pub fn coalescing(&self) -> bool {
        self.coalescing.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The pending state of `data_key`: `Some(None)` when it is pending deletion, `None` when
    /// nothing is pending for it (RocksDB has its latest state).
    pub fn lookup(&self, data_key: &[u8]) -> Option<Option<StoredValue>> {
        self.find(|changes| changes.data.get(data_key).map(PendingValue::to_value))
    }

    /// The pending value of meta record `key`, when one is pending (RocksDB has the latest
    /// value otherwise).
    pub fn lookup_meta(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.find(|changes| changes.meta.get(key).cloned())
    }

    /// Whether the expiry index record `key` is pending deletion.
    pub fn expiry_pending_deletion(&self, key: &[u8]) -> bool {
        self.find(|changes| changes.expiry.get(key).copied()) == Some(false)
    }

    /// What `get` finds in the set being filled, else in the set being written (`None`: nothing
    /// pending there, RocksDB has the latest).
    fn find<T>(&self, get: impl Fn(&Changes) -> Option<T>) -> Option<T> {
        // Cleared only after the last pending change reached RocksDB.
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let pending = self.lock();
        get(&pending.dirty).or_else(|| get(pending.flushing.as_ref()?))
    }

    /// Adds one applied batch's changes (`fill` adds them to the pending set, under its lock).
    /// Writes the pending set on this thread when the writer has fallen behind (twice the byte
    /// bound), so the set stays bounded.
    pub fn add(&self, fill: impl FnOnce(&mut Changes)) -> Result<(), StorageError> {
        let over = {
            let mut pending = self.lock();
            fill(&mut pending.dirty);
            if pending.dirty.is_empty() {
                return Ok(());
            }
            self.any.store(true, Ordering::Release);
            pending.dirty_since.get_or_insert_with(Instant::now);
            pending.dirty.bytes
        };
        let bytes = self.bounds().1;
        if over >= bytes.saturating_mul(2) {
            return self.write_pending();
        }
        if over >= bytes {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Writes every pending change to RocksDB; returns once they are there.
    pub fn write_pending(&self) -> Result<(), StorageError> {
        let _writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        self.decide();
        let taken = {
            let mut pending = self.lock();
            if pending.dirty.is_empty() {
                pending.dirty_since = None;
                return Ok(());
            }
            // The next set is about as large: no growing it again key by key. The spare does
            // unless the sets grew, or shrank a lot (its memory is then given back).
            let room = pending.dirty.data.len();
            let next = match pending.spare.take() {
                Some(spare)
                    if spare.data.capacity() >= room
                        && spare.data.capacity() <= room.saturating_mul(4).max(1024) =>
                {
                    spare
                }
                _ => Changes::with_capacity(room),
            };
            let taken = Arc::new(std::mem::replace(&mut pending.dirty, next));
            pending.dirty_since = None;
            pending.flushing = Some(taken.clone());
            taken
        };
        let mut wo = WriteOptions::default();
        // The Raft log is the write-ahead log (see the module's doc).
        wo.disable_wal(true);
        let written = self.db.write_opt(taken.to_batch(&self.db), &wo);
        let mut pending = self.lock();
        pending.flushing = None;
        if written.is_ok() && pending.dirty.is_empty() {
            self.any.store(false, Ordering::Release);
        }
        if let Err(e) = written {
            // Back under whatever came since (newer changes win), to be written again.
            let taken = Arc::try_unwrap(taken).unwrap_or_else(|shared| (*shared).clone());
            let newer = std::mem::replace(&mut pending.dirty, taken);
            pending.dirty.absorb(newer);
            pending.dirty_since.get_or_insert_with(Instant::now);
            return Err(e.into());
        }
        drop(pending);
        // Emptied outside the lock (it drops every key and long value the set held).
        if let Ok(mut emptied) = Arc::try_unwrap(taken) {
            emptied.clear();
            self.lock().spare = Some(emptied);
        }
        Ok(())
    }

    /// Stops the writer thread, which writes what is pending first, and waits for it.
    pub fn close(&self) {
        self.stop.store(true, Ordering::SeqCst);
        drop(self.lock());
        self.wake.notify_one();
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }

    fn run(&self) {
        loop {
            {
                let mut pending = self.lock();
                loop {
                    if self.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let (window, bytes) = self.bounds();
                    let due = pending.dirty_since.map(|since| since + window);
                    if pending.dirty.bytes >= bytes || due.is_some_and(|due| due <= Instant::now())
                    {
                        break;
                    }
                    let wait =
                        due.map_or(window, |due| due.saturating_duration_since(Instant::now()));
                    pending = self
                        .wake
                        .wait_timeout(pending, wait)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
            let written = self.write_pending();
            if self.stop.load(Ordering::SeqCst) {
                // What could not be written is applied again from the Raft log at the next start.
                if let Err(e) = written {
                    warn!(error = %e, "writing applied changes to RocksDB at stop failed");
                }
                return;
            }
            if let Err(e) = written {
                warn!(error = %e, "writing applied changes to RocksDB failed; retrying");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_changes_keep_each_keys_last_state_once() {
        let value = |s: &str| StoredValue::new(super::super::ValueType::String, None, s.as_bytes());
        let long = "x".repeat(INLINE_VALUE + 10);
        let get = |changes: &Changes, key: &[u8]| changes.data.get(key).map(PendingValue::to_value);
        let mut changes = Changes::with_capacity(4);
        changes.data(b"\0a", Some(&value("1")));
        changes.data(b"\0b", Some(&value("2")));
        changes.data(b"\0l", Some(&value(&long)));
        let bytes = changes.bytes;
        // Warming probes without changing anything, for keys pending or not.
        changes.warm([&b"\0a"[..], b"\0zz"].into_iter());
        changes.data(b"\0a", Some(&value("3")));
        changes.data(b"\0b", None);
        assert_eq!(changes.data.len(), 3);
        assert_eq!(get(&changes, b"\0a"), Some(Some(value("3"))));
        assert_eq!(get(&changes, b"\0b"), Some(None));
        assert_eq!(
            get(&changes, b"\0l"),
            Some(Some(value(&long))),
            "a long value is shared"
        );
        assert_eq!(get(&changes, b"\0c"), None);
        assert!(changes.bytes < bytes, "a replaced change no longer counts");
        let mut older = Changes::with_capacity(1);
        older.data(b"\0b", Some(&value("0")));
        older.data(b"\0c", Some(&value("4")));
        older.absorb(changes);
        assert_eq!(older.data.len(), 4);
        assert_eq!(get(&older, b"\0b"), Some(None), "the newer change wins");
        assert_eq!(get(&older, b"\0c"), Some(Some(value("4"))));
    }

    /// A pending set and its writer over a fresh database in `dir`.
    fn writer(dir: &std::path::Path, window: Duration, bytes: usize) -> Arc<WriteBack> {
        let db = Arc::new(DB::open_default(dir).unwrap());
        WriteBack::start(db, WriteBackOptions { window, bytes }).unwrap()
    }

    /// While a set is being written, a meta or expiry record pending in the newer set wins over
    /// the one being written.
    #[test]
    fn the_set_being_filled_wins_over_the_set_being_written() {
        let dir = tempfile::tempdir().unwrap();
        let wb = writer(dir.path(), Duration::from_secs(3600), 1 << 30);
        let mut older = Changes::default();
        older.meta(b"m", b"1".to_vec());
        older.meta(b"n", b"1".to_vec());
        older.expiry(b"e".to_vec(), false);
        older.expiry(b"f".to_vec(), false);
        wb.lock().flushing = Some(Arc::new(older));
        wb.add(|newer| {
            newer.meta(b"m", b"2".to_vec());
            newer.expiry(b"e".to_vec(), true);
        })
        .unwrap();
        assert_eq!(wb.lookup_meta(b"m"), Some(b"2".to_vec()));
        assert_eq!(wb.lookup_meta(b"n"), Some(b"1".to_vec()));
        assert_eq!(wb.lookup_meta(b"o"), None);
        assert!(!wb.expiry_pending_deletion(b"e"), "put again since");
        assert!(wb.expiry_pending_deletion(b"f"));
        assert!(!wb.expiry_pending_deletion(b"g"));
        wb.lock().flushing = None;
        wb.close();
    }

    #[test]
    fn the_long_window_applies_only_while_keys_are_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let wb = writer(dir.path(), Duration::from_secs(1), 16 << 20);
        let options = wb.options;
        let short = (SHORT_WINDOW, SHORT_BYTES);
        assert_eq!(wb.bounds(), short, "short until rewrites are seen");
        // Too few writes to decide: unchanged.
        wb.note_writes(10, 10);
        wb.decide();
        assert_eq!(wb.bounds(), short);
        // A quarter or more rewrites: the configured bounds.
        wb.note_writes(1000, 250);
        wb.decide();
        assert!(wb.coalescing());
        assert_eq!(wb.bounds(), (options.window, options.bytes));
        // New keys only (a bulk load): short again.
        wb.note_writes(5000, 100);
        wb.decide();
        assert_eq!(wb.bounds(), short);
        wb.close();
    }
}

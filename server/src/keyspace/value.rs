//! The stored form of a key: a convergent state (a CRDT) from which the visible value follows.
//!
//! Every region applies the same merge to the same states, so they converge:
//! - the **register** (value bytes, or "deleted" for a tombstone) is last-writer-wins by its
//!   stamp (HLC timestamp, region id);
//! - the **counter** is a PN-counter: per region, the sum of increments and of decrements,
//!   merged by taking the maximum of each (every region only ever grows its own entry). Each
//!   entry also has an **incarnation**, the HLC at which its region created it: a region
//!   starts a new entry when it counts on a tombstone or on an absent key, so counts a
//!   collected tombstone had observed are never grown again;
//! - a state created from nothing (its key absent here: never written, or its tombstone
//!   collected) records **floors**: per region, the HLC up to which this region had merged that
//!   region's entries. An entry below its region's floor that the register did not observe
//!   belonged to a collected incarnation (this region had it and dropped it with the
//!   tombstone), so it does not count — a copy of the old tombstone still held elsewhere cannot
//!   add its counts to the new value;
//! - a SET or DEL records the counter as it **observed** it: increments it had not seen still
//!   count on top of the new value (observed-remove), so concurrent INCRs are never lost;
//! - the **expiry** is its own last-writer-wins field (EXPIRE, PERSIST and SET stamp it).
//!   When it comes, a region's active expiry marks the state **fired** instead of writing a
//!   tombstone: the key is gone, but a later expiry decision made elsewhere (a SET, PERSIST or
//!   EXPIRE stamped after the one that fired) wins the field, and with it the key lives again
//!   with its register; a fired state is collected like a tombstone once every region has it;
//!
//! The visible value is the register, plus (when the counter moved past what the register
//! observed) the difference. The same bytes live in RocksDB and in the hot cache.
//!
//! Layout (format 3): `[3][type][expire u64][reg hlc u64][reg region][flags][expire hlc u64]
//! [expire region][n_pn u16][n_obs u16][n_floor u16]`, then `n_pn + n_obs` counter entries of
//! `[region][incarnation u64][p u64][n u64]`, then `n_floor` floors of `[region][hlc u64]`,
//! then the register bytes. All integers big-endian. Format 2 (33-byte header, entries without
//! incarnation, no floors) is still read: its entries have incarnation 0.

use bytes::Bytes;
use smallvec::SmallVec;

/// Version byte of the value encoding.
const VALUE_FORMAT: u8 = 3;
/// The previous encoding, still read.
const VALUE_FORMAT_2: u8 = 2;
/// Fixed header length.
const FIXED_LEN: usize = 35;
/// Fixed header length of format 2.
const FIXED_LEN_2: usize = 33;
/// One counter entry: region, incarnation, increments, decrements.
const PN_ENTRY_LEN: usize = 25;
/// One counter entry of format 2: region, increments, decrements.
const PN_ENTRY_LEN_2: usize = 17;
/// One floor: region, HLC.
const FLOOR_LEN: usize = 9;
/// Flag bit: the register is a tombstone.
const FLAG_DELETED: u8 = 1;
/// Flag bit: the expiry decision the state holds has fired (see [`KeyState::fired`]).
const FLAG_FIRED: u8 = 2;
/// Either flag: the key does not exist (fast paths read it in place).
const FLAG_GONE: u8 = FLAG_DELETED | FLAG_FIRED;

/// The Redis type of a stored value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueType {
    /// A string (counters are strings too, as in Redis).
    String,
}

impl ValueType {
    /// The name TYPE prints.
    pub fn name(self) -> &'static str {
        match self {
            ValueType::String => "string",
        }
    }
}

/// Orders concurrent writes: HLC timestamp, then region id.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Stamp {
    /// Hybrid logical clock of the write.
    pub hlc: u64,
    /// Region that made it (index in the topology's sorted region list).
    pub region: u8,
}

/// One region's counter entry: total increments and total decrements (both only grow).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PnEntry {
    /// Region id.
    pub region: u8,
    /// HLC at which the region created this entry (0: written in format 2).
    pub inc: u64,
    /// Sum of increments.
    pub p: u64,
    /// Sum of decrements.
    pub n: u64,
}

/// The later of two copies of a sum that only grows but wraps past 2^64 (see
/// `KeyState::counter_delta`): the one ahead in serial-number order, right while the copies
/// differ by less than 2^63 (no region adds that much between two of its merges).
fn later_sum(a: u64, b: u64) -> u64 {
    if (b.wrapping_sub(a) as i64) > 0 {
        b
    } else {
        a
    }
}

/// A decoded key state, for applying and merging.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyState {
    /// Register bytes (empty for a tombstone).
    pub value: Bytes,
    /// The register is a tombstone (DEL, expiry).
    pub deleted: bool,
    /// Stamp of the register.
    pub reg_stamp: Stamp,
    /// Absolute expiry, unix ms.
    pub expire_at: Option<u64>,
    /// Stamp of the expiry field.
    pub expire_stamp: Stamp,
    /// PN-counter, sorted by region.
    pub pn: Vec<PnEntry>,
    /// The counter as the register's write observed it.
    pub observed: Vec<PnEntry>,
    /// For a state created from nothing (and what was written over it): per region, entries
    /// with an incarnation below this that the register did not observe do not count.
    pub floors: Vec<(u8, u64)>,
    /// The expiry decision the state holds has come and a region's active expiry enacted it:
    /// the key does not exist. Tied to that decision: a merge keeps it only while the merged
    /// expiry field is still that decision (a later one revives the key), and any new expiry
    /// decision here clears it. (A tombstone stamped when the expiry fired, as before, beat
    /// every write made elsewhere between the EXPIRE and its firing: a later SET was lost.)
    pub fired: bool,
}

/// The entry `(region, inc)` of `list` (sorted by [`sort_pn`], as every state's lists are),
/// if there: a binary search, since a counter's lists can hold many incarnations.
fn pn_find(list: &[PnEntry], region: u8, inc: u64) -> Option<PnEntry> {
    list.binary_search_by_key(&(region, inc), |e| (e.region, e.inc))
        .ok()
        .map(|i| list[i])
}

/// Counter entries in canonical order (equal states encode equally).
fn sort_pn(list: &mut [PnEntry]) {
    list.sort_by_key(|e| (e.region, e.inc));
}

/// `list` in canonical order: as decoded, for the binary searches (every encoding writes its
/// lists sorted, so this only checks them, in linear time).
fn sorted_pn(mut list: Vec<PnEntry>) -> Vec<PnEntry> {
    sort_pn(&mut list);
    list
}

impl KeyState {
    /// A fresh string value.
    pub fn string(value: &[u8], stamp: Stamp, expire_at: Option<u64>) -> KeyState {
        KeyState {
            value: Bytes::copy_from_slice(value),
            deleted: false,
            reg_stamp: stamp,
            expire_at,
            expire_stamp: stamp,
            pn: Vec::new(),
            observed: Vec::new(),
            floors: Vec::new(),
            fired: false,
        }
    }

    /// What `e` adds to the value beyond what the register observed (`None`: nothing, as an
    /// entry of a collected incarnation).
    fn unobserved(&self, e: &PnEntry) -> Option<(u64, u64)> {
        match pn_find(&self.observed, e.region, e.inc) {
            Some(o) => Some((o.p, o.n)),
            None => {
                let floor = self
                    .floors
                    .iter()
                    .find(|(r, _)| *r == e.region)
                    .map_or(0, |(_, h)| *h);
                // Incarnation 0 (format 2) predates collection: never dead.
                (e.inc == 0 || floor == 0 || e.inc >= floor).then_some((0, 0))
            }
        }
    }

    /// The counter's movement since the register was written, modulo 2^64. The sums of
    /// increments and of decrements only grow, and large ones pass 2^64 (INCRBY and DECRBY of
    /// 2^63 - 1, twice): they wrap, and so does this difference of them, which is exact as long
    /// as the value it moves stays in the i64 range (every op checks that against the value it
    /// sees; only regions adding concurrently can take the sum past it, and it then wraps the
    /// same way on every replica).
    fn counter_delta(&self) -> u64 {
        self.pn
            .iter()
            .filter_map(|e| {
                let (op, on) = self.unobserved(e)?;
                Some(e.p.wrapping_sub(op).wrapping_sub(e.n.wrapping_sub(on)))
            })
            .fold(0u64, u64::wrapping_add)
    }

    /// True when increments happened that the register did not observe.
    fn counter_moved(&self) -> bool {
        self.pn.iter().any(|e| {
            self.unobserved(e)
                .is_some_and(|(op, on)| e.p != op || e.n != on)
        })
    }

    /// The visible value, or `None` when the key does not exist.
    pub fn visible(&self) -> Option<Bytes> {
        if self.fired {
            return None;
        }
        if !self.counter_moved() {
            return (!self.deleted).then(|| self.value.clone());
        }
        let base = if self.deleted {
            Some(0i64)
        } else {
            super::number::parse_i64_strict(&self.value)
        };
        match base {
            // A register that is not a number ignores concurrent increments.
            None => Some(self.value.clone()),
            Some(base) => {
                let total = (base as u64).wrapping_add(self.counter_delta()) as i64;
                let mut buf = itoa::Buffer::new();
                Some(Bytes::copy_from_slice(buf.format(total).as_bytes()))
            }
        }
    }

    /// Sets the register (SET, APPEND …): observes the current counter.
    pub fn set_register(&mut self, value: &[u8], stamp: Stamp) {
        self.value = Bytes::copy_from_slice(value);
        self.deleted = false;
        self.reg_stamp = stamp;
        self.observed = self.pn.clone();
    }

    /// Deletes the key (DEL, expiry): a tombstone that observes the current counter.
    pub fn delete(&mut self, stamp: Stamp) {
        self.value = Bytes::new();
        self.deleted = true;
        self.reg_stamp = stamp;
        self.observed = self.pn.clone();
        self.expire_at = None;
        self.expire_stamp = stamp;
        self.fired = false;
    }

    /// Sets the expiry field (a new expiry decision: one that had fired no longer holds).
    pub fn set_expire(&mut self, at: Option<u64>, stamp: Stamp) {
        self.expire_at = at;
        self.expire_stamp = stamp;
        self.fired = false;
    }

    /// Enacts the expiry decision the state holds (its time has come): the key is gone.
    pub fn fire(&mut self) {
        self.fired = true;
    }

    /// The stamp under which the state waits in the tombstone index for collection, if it is
    /// collectable: a tombstone's (see [`KeyState::is_collectable_tombstone`]), or for a fired
    /// state the later of its register's and its expiry decision's (once every region has
    /// merged both, none holds an older state of the key).
    pub fn collect_stamp(&self) -> Option<Stamp> {
        if self.is_collectable_tombstone() {
            Some(self.reg_stamp)
        } else if self.fired {
            Some(self.reg_stamp.max(self.expire_stamp))
        } else {
            None
        }
    }

    /// A tombstone with no expiry and no counts its register did not observe: once every
    /// region has merged it, it can be dropped (an absent key reads the same, and counts start
    /// a new incarnation).
    pub fn is_collectable_tombstone(&self) -> bool {
        self.deleted && self.expire_at.is_none() && !self.counter_moved()
    }

    /// Adds `delta` to `region`'s counter. Counting on a tombstone or an absent key starts a
    /// new entry with incarnation `hlc` (the writing batch's clock); otherwise the region's
    /// newest entry grows.
    pub fn add(&mut self, region: u8, delta: i64, hlc: u64) {
        let fresh = self.deleted && !self.counter_moved();
        let existing = if fresh {
            self.pn
                .iter()
                .position(|e| e.region == region && e.inc == hlc)
        } else {
            self.pn
                .iter()
                .enumerate()
                .filter(|(_, e)| e.region == region)
                .max_by_key(|(_, e)| e.inc)
                .map(|(i, _)| i)
        };
        let idx = match existing {
            Some(i) => i,
            None => {
                self.pn.push(PnEntry {
                    region,
                    inc: hlc,
                    p: 0,
                    n: 0,
                });
                sort_pn(&mut self.pn);
                self.pn
                    .iter()
                    .position(|e| e.region == region && e.inc == hlc)
                    .unwrap_or(0)
            }
        };
        let e = &mut self.pn[idx];
        if delta >= 0 {
            e.p = e.p.wrapping_add(delta as u64);
        } else {
            e.n = e.n.wrapping_add(delta.unsigned_abs());
        }
    }

    /// True when some region has several counter entries: older incarnations that
    /// [`KeyState::compact`] may drop.
    pub fn has_old_incarnations(&self) -> bool {
        self.pn.windows(2).any(|w| w[0].region == w[1].region)
    }

    /// Drops the counter entries that can no longer move the value, so a counter that is
    /// reset (DEL, SET) while regions keep counting does not grow by an entry per reset.
    ///
    /// Region `r`'s entries below one of its later incarnations `cut` are final (a region only
    /// grows its newest entry). They go once `cut <= bound(r)` — every region has merged `r`'s
    /// entries up to `cut`, so each holds them final and each register written from now on
    /// observes them, and no register written before is still on its way here (the bound of
    /// tombstone collection). Those the register observed exactly, or that are below `r`'s
    /// floor unobserved, add nothing to the value: they go, and `r`'s floor rises to `cut`, so
    /// a copy that a merge brings back counts nothing either (unless a register observed it,
    /// then as observed). The floor cannot pass an entry that counts unobserved; one observed
    /// in part stays, and keeps counting what the register did not see.
    /// Returns whether any entry was dropped.
    pub fn compact(&mut self, bound: impl Fn(u8) -> u64) -> bool {
        let mut cuts: SmallVec<[(u8, u64); 4]> = SmallVec::new();
        let mut i = 0;
        while i < self.pn.len() {
            let region = self.pn[i].region;
            let end = i + self.pn[i..]
                .iter()
                .take_while(|e| e.region == region)
                .count();
            let limit = bound(region);
            // Entries are sorted by incarnation: the cut is the latest one within the bound
            // such that the floor may rise past every entry before it: each was observed
            // (exactly: it goes; in part: it stays, and still counts what the register did not
            // see) or is below the floor already (it counts nothing). None of format 2's,
            // which predate incarnations and floors.
            let mut cut = None;
            for k in i + 1..end {
                let prev = &self.pn[k - 1];
                let floor_passes = prev.inc != 0
                    && (pn_find(&self.observed, prev.region, prev.inc).is_some()
                        || self.below_floor(prev));
                if !floor_passes || self.pn[k].inc > limit {
                    break;
                }
                cut = Some(self.pn[k].inc);
            }
            if let Some(cut) = cut {
                cuts.push((region, cut));
            }
            i = end;
        }
        if cuts.is_empty() {
            return false;
        }
        let dropped: SmallVec<[(u8, u64); 8]> = self
            .pn
            .iter()
            .filter(|e| {
                cuts.iter().any(|(r, c)| e.region == *r && e.inc < *c)
                    && match pn_find(&self.observed, e.region, e.inc) {
                        Some(o) => o.p == e.p && o.n == e.n,
                        None => self.below_floor(e),
                    }
            })
            .map(|e| (e.region, e.inc))
            .collect();
        let gone = |e: &PnEntry| dropped.contains(&(e.region, e.inc));
        self.pn.retain(|e| !gone(e));
        self.observed.retain(|e| !gone(e));
        for (region, cut) in cuts {
            match self.floors.iter_mut().find(|(r, _)| *r == region) {
                Some((_, floor)) => *floor = (*floor).max(cut),
                None => self.floors.push((region, cut)),
            }
        }
        self.floors.sort_unstable();
        !dropped.is_empty()
    }

    /// True when `e`'s region has a floor above it: unless the register observed it, it
    /// belonged to a collected incarnation and counts nothing (see [`KeyState::unobserved`]).
    fn below_floor(&self, e: &PnEntry) -> bool {
        e.inc != 0
            && self
                .floors
                .iter()
                .find(|(r, _)| *r == e.region)
                .is_some_and(|(_, floor)| *floor != 0 && e.inc < *floor)
    }

    /// Merges another region's state of the same key (commutative, associative, idempotent).
    pub fn merge(&mut self, other: &KeyState) {
        if other.reg_stamp > self.reg_stamp {
            self.value = other.value.clone();
            self.deleted = other.deleted;
            self.reg_stamp = other.reg_stamp;
            self.observed = other.observed.clone();
            self.floors = other.floors.clone();
        } else if other.reg_stamp == self.reg_stamp && other.floors != self.floors {
            // Unstamped states (counted from nothing in two regions) tie with different
            // floors, none of their entries below a floor; so do copies of one register of
            // which one was compacted (its floor raised past entries the register observed
            // exactly, and which add nothing either way). Any deterministic choice converges:
            // the larger floor per region.
            for (region, hlc) in &other.floors {
                match self.floors.iter_mut().find(|(r, _)| r == region) {
                    Some((_, mine)) => *mine = (*mine).max(*hlc),
                    None => self.floors.push((*region, *hlc)),
                }
            }
            self.floors.sort_unstable();
        }
        let mine = (self.expire_stamp, self.fired);
        if other.expire_stamp > self.expire_stamp {
            self.expire_at = other.expire_at;
            self.expire_stamp = other.expire_stamp;
        }
        // Fired only if a fired input held the decision that won (commutative: an OR over
        // the inputs holding the final decision).
        self.fired = (mine.1 && mine.0 == self.expire_stamp)
            || (other.fired && other.expire_stamp == self.expire_stamp);
        for e in &other.pn {
            match self
                .pn
                .binary_search_by_key(&(e.region, e.inc), |x| (x.region, x.inc))
            {
                Ok(i) => {
                    let x = &mut self.pn[i];
                    x.p = later_sum(x.p, e.p);
                    x.n = later_sum(x.n, e.n);
                }
                Err(i) => self.pn.insert(i, *e),
            }
        }
    }

    /// Encodes the state.
    pub fn encode(&self) -> StoredValue {
        self.encode_with_value(&self.value)
    }

    /// The encoding of this state with `value` as its value instead of its own: how a write
    /// encodes a value it holds only by reference (the op's), with no copy or clone of it.
    pub fn encode_with_value(&self, value: &[u8]) -> StoredValue {
        let mut buf = EncodeBuf::with_capacity(
            FIXED_LEN
                + PN_ENTRY_LEN * (self.pn.len() + self.observed.len())
                + FLOOR_LEN * self.floors.len()
                + value.len(),
        );
        buf.push(VALUE_FORMAT);
        buf.push(0);
        buf.extend_from_slice(&self.expire_at.unwrap_or(0).to_be_bytes());
        buf.extend_from_slice(&self.reg_stamp.hlc.to_be_bytes());
        buf.push(self.reg_stamp.region);
        buf.push(
            if self.deleted { FLAG_DELETED } else { 0 } | if self.fired { FLAG_FIRED } else { 0 },
        );
        buf.extend_from_slice(&self.expire_stamp.hlc.to_be_bytes());
        buf.push(self.expire_stamp.region);
        buf.extend_from_slice(&(self.pn.len() as u16).to_be_bytes());
        buf.extend_from_slice(&(self.observed.len() as u16).to_be_bytes());
        buf.extend_from_slice(&(self.floors.len() as u16).to_be_bytes());
        for e in self.pn.iter().chain(self.observed.iter()) {
            buf.push(e.region);
            buf.extend_from_slice(&e.inc.to_be_bytes());
            buf.extend_from_slice(&e.p.to_be_bytes());
            buf.extend_from_slice(&e.n.to_be_bytes());
        }
        for (region, hlc) in &self.floors {
            buf.push(*region);
            buf.extend_from_slice(&hlc.to_be_bytes());
        }
        buf.extend_from_slice(value);
        StoredValue(into_shared(&buf))
    }
}

/// A value's encoding being built (on the stack for usual sizes).
type EncodeBuf = SmallVec<[u8; 128]>;

/// An encoding held inline: up to `N` bytes and their length. `N` is chosen so that with
/// `Bytes`' count and drop function in front it fills an allocator size class (64, 128 or
/// 192 bytes).
struct Inline<const N: usize> {
    len: u16,
    bytes: [u8; N],
}

impl<const N: usize> Inline<N> {
    /// `src` (at most `N` bytes) as shared bytes in one allocation with their count.
    fn shared(src: &[u8]) -> Bytes {
        let mut inline = Inline {
            len: src.len() as u16,
            bytes: [0; N],
        };
        inline.bytes[..src.len()].copy_from_slice(src);
        Bytes::from_owner(inline)
    }
}

impl<const N: usize> AsRef<[u8]> for Inline<N> {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// `src` as shared bytes. Up to 174 bytes the encoding lives in the allocation that also holds
/// the count its clones share: a `Bytes` made from a `Vec` allocates its shared count apart on
/// its first clone. (Measured when cached values were shared buffers, before they moved into
/// their hot-cache slots: GET -P16 about 6 % less server CPU per request. Now it serves new
/// encodings and the copies read out of slots and storage, one allocation each.)
fn into_shared(src: &[u8]) -> Bytes {
    match src.len() {
        0..=46 => Inline::<46>::shared(src),
        47..=110 => Inline::<110>::shared(src),
        111..=174 => Inline::<174>::shared(src),
        _ => Bytes::copy_from_slice(src),
    }
}

/// (header length, counter entry length) of an encoding's format.
fn layout_of(encoded: &[u8]) -> (usize, usize) {
    if encoded[0] == VALUE_FORMAT_2 {
        (FIXED_LEN_2, PN_ENTRY_LEN_2)
    } else {
        (FIXED_LEN, PN_ENTRY_LEN)
    }
}

/// Floors an encoding carries (the compact format has none).
fn n_floors_of(encoded: &[u8]) -> usize {
    if encoded[0] == VALUE_FORMAT_2 {
        0
    } else {
        u16_at(encoded, 33)
    }
}

/// Bytes between an encoding's header and its register: counter entries and floors.
fn counters_len_of(encoded: &[u8]) -> usize {
    let (_, entry) = layout_of(encoded);
    (u16_at(encoded, 29) + u16_at(encoded, 31)) * entry + n_floors_of(encoded) * FLOOR_LEN
}

/// An encoding's absolute expiry in unix ms, if any.
fn expire_at_of(encoded: &[u8]) -> Option<u64> {
    match u64_at(encoded, 2) {
        0 => None,
        ms => Some(ms),
    }
}

/// What a GET of a plain string finds in an encoding already checked (a cached one), without
/// copying it: `Some(Some(value))` while it lives, `Some(None)` when it expired or was deleted,
/// `None` for a state with counters (read it through [`StoredValue::payload`]).
pub fn plain_string_at(encoded: &[u8], now_ms: u64) -> Option<Option<&[u8]>> {
    if counters_len_of(encoded) != 0 {
        return None;
    }
    let expired = expire_at_of(encoded).is_some_and(|at| at <= now_ms);
    if expired || encoded[19] & FLAG_GONE != 0 {
        return Some(None);
    }
    Some(Some(&encoded[layout_of(encoded).0..]))
}

/// A state's floors: per region, the HLC below which its counter entries count nothing unless
/// the register observed them.
pub type Floors = Vec<(u8, u64)>;

/// The expiry of a string's encoding with nothing else a write over it must keep but its
/// floors (no counter entries, not deleted or fired), read where the encoding lies, without
/// copying or decoding its value. `None` for any other state (a write over it must decode it).
pub fn string_expiry(encoded: &[u8]) -> Option<Option<u64>> {
    if u16_at(encoded, 29) != 0 || u16_at(encoded, 31) != 0 || encoded[19] & FLAG_GONE != 0 {
        return None;
    }
    Some(expire_at_of(encoded))
}

/// The floors of a string's encoding without counter entries ([`string_expiry`]), read where
/// it lies: what a plain SET over it keeps (a key created in a region of several carries them).
pub fn string_floors(encoded: &[u8]) -> Floors {
    floors_of(encoded, layout_of(encoded).0)
}

/// Whether merging the remote state encoded as `remote` into the state encoded as `local`
/// (`None`: the key is absent here) yields the remote state exactly, so that it can be stored
/// as it came, with neither state decoded nor its value copied: both in the current format
/// without counter entries (the local one may have observed entries), the remote register
/// stamped after the local one (the merge then takes its value, flags, observed entries and
/// floors), and the remote expiry decision the later one, or the same one with the same
/// expiry and fired if the local one fired (see [`KeyState::merge`]).
pub fn merge_yields_remote(local: Option<&[u8]>, remote: &[u8]) -> bool {
    // (Stamps of the register and of the expiry, fired, expiry.)
    let fields = |e: &[u8]| {
        (
            Stamp {
                hlc: u64_at(e, 10),
                region: e[18],
            },
            Stamp {
                hlc: u64_at(e, 20),
                region: e[28],
            },
            e[19] & FLAG_FIRED != 0,
            expire_at_of(e),
        )
    };
    if remote[0] != VALUE_FORMAT || u16_at(remote, 29) != 0 || u16_at(remote, 31) != 0 {
        return false;
    }
    let (r_reg, r_expire, r_fired, r_at) = fields(remote);
    let (l_reg, l_expire, l_fired, l_at) = match local {
        // What a merge reads for an absent key: a tombstone with default stamps.
        None => (Stamp::default(), Stamp::default(), false, None),
        Some(l) if l[0] == VALUE_FORMAT && u16_at(l, 29) == 0 => fields(l),
        Some(_) => return false,
    };
    r_reg > l_reg
        && (r_expire > l_expire || (r_expire == l_expire && r_at == l_at && (r_fired || !l_fired)))
}

/// The floors of an encoding, which start at `at` (after its counter entries).
fn floors_of(encoded: &[u8], at: usize) -> Floors {
    (0..n_floors_of(encoded))
        .map(|i| {
            let at = at + i * FLOOR_LEN;
            (encoded[at], u64_at(encoded, at + 1))
        })
        .collect()
}

/// An encoded key state; cheap to clone (shares the buffer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredValue(Bytes);

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

fn u16_at(b: &[u8], at: usize) -> usize {
    usize::from(u16::from_be_bytes([b[at], b[at + 1]]))
}

impl StoredValue {
    /// A plain string value (single-region writes and tests).
    pub fn new(_kind: ValueType, expire_at_ms: Option<u64>, payload: &[u8]) -> StoredValue {
        KeyState::string(payload, Stamp::default(), expire_at_ms).encode()
    }

    /// A copy of bytes read from storage, checked as [`StoredValue::from_stored`] does.
    pub fn copy_from_stored(raw: &[u8]) -> Option<StoredValue> {
        StoredValue::from_stored(into_shared(raw))
    }

    /// A copy of the bytes of a value already checked (a cached one).
    pub(super) fn copy_of(encoded: &[u8]) -> StoredValue {
        StoredValue(into_shared(encoded))
    }

    /// Wraps bytes read from storage or received from a peer, checking the layout.
    pub fn from_stored(bytes: Bytes) -> Option<StoredValue> {
        let fixed = match bytes.first() {
            Some(&VALUE_FORMAT) => FIXED_LEN,
            Some(&VALUE_FORMAT_2) => FIXED_LEN_2,
            _ => return None,
        };
        if bytes.len() < fixed || bytes[1] != 0 {
            return None;
        }
        let v = StoredValue(bytes);
        if v.0.len() < fixed + v.counters_len() {
            return None;
        }
        Some(v)
    }

    /// (header length, counter entry length) of this encoding's format.
    fn layout(&self) -> (usize, usize) {
        layout_of(&self.0)
    }

    /// Bytes between the header and the register: counter entries and floors.
    fn counters_len(&self) -> usize {
        counters_len_of(&self.0)
    }

    /// Decodes the full state.
    pub fn state(&self) -> KeyState {
        let b = &self.0;
        let (fixed, len) = self.layout();
        let n_pn = u16_at(b, 29);
        let n_obs = u16_at(b, 31);
        let entry = |i: usize| {
            let at = fixed + i * len;
            if len == PN_ENTRY_LEN_2 {
                PnEntry {
                    region: b[at],
                    inc: 0,
                    p: u64_at(b, at + 1),
                    n: u64_at(b, at + 9),
                }
            } else {
                PnEntry {
                    region: b[at],
                    inc: u64_at(b, at + 1),
                    p: u64_at(b, at + 9),
                    n: u64_at(b, at + 17),
                }
            }
        };
        let floors_at = fixed + (n_pn + n_obs) * len;
        KeyState {
            value: self.0.slice(fixed + self.counters_len()..),
            deleted: b[19] & FLAG_DELETED != 0,
            fired: b[19] & FLAG_FIRED != 0,
            reg_stamp: Stamp {
                hlc: u64_at(b, 10),
                region: b[18],
            },
            expire_at: self.expire_at(),
            expire_stamp: Stamp {
                hlc: u64_at(b, 20),
                region: b[28],
            },
            pn: sorted_pn((0..n_pn).map(entry).collect()),
            observed: sorted_pn((n_pn..n_pn + n_obs).map(entry).collect()),
            floors: floors_of(b, floors_at),
        }
    }

    /// The value's type.
    pub fn kind(&self) -> ValueType {
        ValueType::String
    }

    /// Absolute expiry in unix ms, if any.
    pub fn expire_at(&self) -> Option<u64> {
        expire_at_of(&self.0)
    }

    /// True when the value has expired at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expire_at().is_some_and(|at| at <= now_ms)
    }

    /// True when the state's expiry decision has fired (see [`KeyState::fired`]): the key
    /// is gone and has no record in the expiry index.
    pub fn is_fired(&self) -> bool {
        self.0[19] & FLAG_FIRED != 0
    }

    /// True when the key exists (not a tombstone, or counted past one).
    pub fn is_visible(&self) -> bool {
        if self.counters_len() == 0 {
            return self.0[19] & FLAG_GONE == 0;
        }
        self.state().visible().is_some()
    }

    /// The visible value (empty for a tombstone), sharing the buffer for plain strings.
    pub fn payload(&self) -> Bytes {
        if self.counters_len() == 0 {
            return self.0.slice(self.layout().0..);
        }
        self.state().visible().unwrap_or_default()
    }

    /// The visible value as owned bytes (see [`StoredValue::payload`]).
    pub fn payload_ref(&self) -> Bytes {
        self.payload()
    }

    /// The same state with another expiry (unstamped: single-node helpers only).
    pub fn with_expire(&self, expire_at_ms: Option<u64>) -> StoredValue {
        let mut s = self.state();
        s.expire_at = expire_at_ms;
        s.encode()
    }

    /// A fixed-size fingerprint of the encoding, the same on every machine (64-bit FNV-1a over
    /// the length and the bytes): WATCH carries it instead of the value. Every write restamps
    /// the encoding, so a changed key gets another fingerprint but by a 2^-64 chance.
    pub fn fingerprint(&self) -> u64 {
        let len = (self.0.len() as u64).to_le_bytes();
        fnv1a(len.iter().chain(self.0.iter()))
    }

    /// The whole encoding.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Bytes the value occupies (for the cache weigher).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for an empty encoding (never: the header is always there).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// 64-bit FNV-1a of `bytes`: the same on every machine, for values every replica must compute
/// alike (WATCH fingerprints, churn counter slots).
pub fn fnv1a<'a>(bytes: impl IntoIterator<Item = &'a u8>) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    bytes
        .into_iter()
        .fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME))
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_string_at_reads_what_a_get_would() {
        let stamp = Stamp { hlc: 7, region: 0 };
        let live = KeyState::string(b"hello", stamp, None).encode();
        assert_eq!(
            plain_string_at(live.as_bytes(), 100),
            Some(Some(&b"hello"[..]))
        );
        assert_eq!(live.payload(), Bytes::from_static(b"hello"));
        let expiring = KeyState::string(b"soon", stamp, Some(50)).encode();
        assert_eq!(
            plain_string_at(expiring.as_bytes(), 49),
            Some(Some(&b"soon"[..]))
        );
        assert_eq!(plain_string_at(expiring.as_bytes(), 50), Some(None));
        let mut gone = KeyState::string(b"x", stamp, None);
        gone.delete(Stamp { hlc: 8, region: 0 });
        assert_eq!(plain_string_at(gone.encode().as_bytes(), 100), Some(None));
        // A counter's value is computed from its entries: not read in place.
        let mut counter = KeyState::string(b"", stamp, None);
        counter.add(0, 5, 9);
        let counter = counter.encode();
        assert_eq!(plain_string_at(counter.as_bytes(), 100), None);
    }

    fn st(hlc: u64, region: u8) -> Stamp {
        Stamp { hlc, region }
    }

    #[test]
    fn round_trip() {
        let mut s = KeyState::string(b"hello", st(5, 1), Some(42));
        s.add(2, 3, 7);
        s.add(0, -1, 7);
        s.floors = vec![(1, 9)];
        let v = s.encode();
        let back = StoredValue::from_stored(v.as_bytes().clone()).unwrap();
        assert_eq!(back.state(), s);
        assert_eq!(back.expire_at(), Some(42));
        assert!(StoredValue::from_stored(Bytes::from_static(b"\x09\x00")).is_none());
    }

    #[test]
    fn plain_strings_and_tombstones() {
        let v = KeyState::string(b"abc", st(1, 0), None).encode();
        assert_eq!(v.payload(), Bytes::from_static(b"abc"));
        assert!(v.is_visible());
        let mut s = v.state();
        s.delete(st(2, 0));
        assert!(!s.encode().is_visible());
    }

    #[test]
    fn counters_add_up_across_regions() {
        let mut a = KeyState {
            deleted: true,
            ..KeyState::default()
        };
        let mut b = a.clone();
        a.add(0, 5, 1);
        b.add(1, 7, 2);
        b.add(1, -2, 3);
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ab, ba);
        assert_eq!(ab.visible(), Some(Bytes::from_static(b"10")));
    }

    #[test]
    fn merges_take_the_later_copy_of_sums_that_wrapped() {
        let max = i64::MAX;
        let mut a = KeyState {
            deleted: true,
            ..KeyState::default()
        };
        // A's sums of increments and of decrements reach 2^64 - 2; the value is 0.
        for delta in [max, -max, max, -max] {
            a.add(0, delta, 1);
        }
        let mut b = a.clone();
        b.merge(&a);
        assert_eq!(b.visible(), Some(Bytes::from_static(b"0")));
        // A adds once more: its sum of increments wraps. B must take it as the later one.
        a.add(0, max, 1);
        assert_eq!(a.visible(), Some(Bytes::from(max.to_string())));
        b.merge(&a);
        assert_eq!(b.visible(), a.visible());
        // And the stale copy does not win the other way round.
        let stale = {
            let mut s = a.clone();
            s.pn.iter_mut()
                .for_each(|e| e.p = e.p.wrapping_sub(max as u64));
            s
        };
        let mut a2 = a.clone();
        a2.merge(&stale);
        assert_eq!(a2.visible(), a.visible());
    }

    #[test]
    fn set_observes_and_concurrent_increments_survive() {
        let mut base = KeyState::string(b"10", st(1, 0), None);
        base.add(0, 1, 2); // 11
        let mut a = base.clone();
        let mut b = base.clone();
        a.set_register(b"100", st(5, 0)); // A: SET 100 (observes +1)
        b.add(1, 4, 6); // B: INCRBY 4, concurrent
        a.merge(&b);
        b.merge(&a);
        assert_eq!(a, b);
        assert_eq!(a.visible(), Some(Bytes::from_static(b"104")));
    }

    #[test]
    fn delete_wins_by_stamp_and_does_not_resurrect() {
        let s = KeyState::string(b"v", st(3, 0), None);
        let mut d = s.clone();
        d.delete(st(4, 1));
        let mut late = s.clone();
        late.merge(&d);
        assert_eq!(late.visible(), None);
        let mut other = d.clone();
        other.merge(&s); // older state arriving after the delete
        assert_eq!(other.visible(), None);
    }

    #[test]
    fn format_2_values_are_still_read() {
        // SET "7" then INCRBY 3 in region 1, as format 2 stored it.
        let mut old = vec![2u8, 0];
        old.extend_from_slice(&0u64.to_be_bytes()); // expire
        old.extend_from_slice(&5u64.to_be_bytes()); // reg hlc
        old.push(0); // reg region
        old.push(0); // flags
        old.extend_from_slice(&5u64.to_be_bytes()); // expire hlc
        old.push(0);
        old.extend_from_slice(&1u16.to_be_bytes()); // n_pn
        old.extend_from_slice(&0u16.to_be_bytes()); // n_obs
        old.push(1);
        old.extend_from_slice(&3u64.to_be_bytes());
        old.extend_from_slice(&0u64.to_be_bytes());
        old.extend_from_slice(b"7");
        let v = StoredValue::from_stored(Bytes::from(old)).expect("format 2 accepted");
        assert_eq!(v.payload(), Bytes::from_static(b"10"));
        let mut s = v.state();
        s.add(1, 1, 99); // grows the existing (incarnation 0) entry
        assert_eq!(s.pn.len(), 1);
        assert_eq!(s.encode().payload(), Bytes::from_static(b"11"));
        let plain = KeyState::string(b"x", st(1, 0), None).encode();
        assert_eq!(plain.payload(), Bytes::from_static(b"x"));
    }

    /// Region 0 counted 5 on a key, then region 1 deleted it and every region merged that.
    fn counted_then_deleted() -> KeyState {
        let mut s = KeyState {
            deleted: true,
            ..KeyState::default()
        };
        s.add(0, 5, 10);
        s.delete(st(20, 1));
        s
    }

    /// Region 0 collected the tombstone, then writes the key from nothing at HLC 30, having
    /// merged every region's entries up to `floor_hlc`.
    fn fresh(floor_hlc: u64) -> KeyState {
        KeyState {
            deleted: true,
            floors: vec![(0, 30), (1, floor_hlc + 1), (2, floor_hlc + 1)],
            ..KeyState::default()
        }
    }

    /// A xorshift generator from `seed`: each call gives a number below its argument.
    fn random_below(mut seed: u64) -> impl FnMut(u64) -> u64 {
        move |n| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        }
    }

    /// The state of a key no region has written.
    fn absent() -> KeyState {
        KeyState {
            deleted: true,
            ..KeyState::default()
        }
    }

    /// What lets a region far behind be shipped only each key's latest state
    /// (`crate::coalesce`): a region's later state of a key holds its earlier ones, so merging
    /// the latest alone leaves the receiver exactly where merging each in turn does. Region 0
    /// writes (counts, sets, deletes, expiries, expiries firing) and merges region 1's state;
    /// region 1 writes too and receives region 0's states either each in turn or only the
    /// latest of each stretch.
    #[test]
    fn merging_a_keys_latest_state_equals_merging_each_in_turn() {
        let mut next = random_below(0x2545_f491_4f6c_dd1du64);
        let (mut origin, mut each, mut latest) = (absent(), absent(), absent());
        let mut stretch: Vec<KeyState> = Vec::new();
        let mut shipped = 0;
        for t in 1..=5000u64 {
            match next(10) {
                0 => origin.delete(st(t, 0)),
                1 => origin.set_register(t.to_string().as_bytes(), st(t, 0)),
                2 => origin.set_expire(Some(t + next(50)), st(t, 0)),
                3 => origin.fire(),
                4 => origin.merge(&each),
                5 => {
                    // Region 1 writes: the same on both of its copies.
                    let delta = next(7) as i64 - 3;
                    for b in [&mut each, &mut latest] {
                        match t % 3 {
                            0 => b.add(1, delta, t),
                            1 => b.set_register(b"b", st(t, 1)),
                            _ => b.delete(st(t, 1)),
                        }
                    }
                }
                _ => origin.add(0, next(5) as i64 - 1, t),
            }
            stretch.push(origin.clone());
            if next(4) == 0 {
                // Ship: `each` merged every state of the stretch, `latest` the last one.
                let last = stretch.last().cloned().unwrap_or_else(absent);
                for s in stretch.drain(..) {
                    each.merge(&s);
                }
                latest.merge(&last);
                assert_eq!(latest, each, "at step {t}");
                assert_eq!(latest.visible(), each.visible(), "at step {t}");
                shipped += 1;
            }
        }
        assert!(shipped > 1000, "{shipped} stretches");
        assert!(
            each.pn.len() > 10,
            "the counter has {} entries",
            each.pn.len()
        );
    }

    /// `merge_yields_remote` says yes only where merging the remote state gives it exactly:
    /// two regions write keys at random (sets, deletes, expiries, fired expiries, counts on
    /// every other key, at times the same stamp on both sides) and merge each other's states;
    /// before every merge the check is asked, and where it says yes the merged encoding must be
    /// the remote's. Both answers must come up often.
    #[test]
    fn merge_yields_remote_only_where_the_merge_takes_the_remote_state() {
        let mut next = random_below(0x6a09_e667_f3bc_c908u64);
        let mut regions = [absent(), absent()];
        let (mut yes, mut no) = (0, 0);
        for t in 1..=20_000u64 {
            // A new key every 200 steps; every other key is never counted on (counter entries
            // stay, and a state with them is never taken as it came).
            if t % 200 == 0 {
                regions = [absent(), absent()];
            }
            let counts = (t / 200) % 2 == 0;
            let r = next(2) as usize;
            // Now and then both regions act at the same time (equal stamps but the region).
            let at = if next(8) == 0 { t - t % 4 } else { t };
            let s = &mut regions[r];
            match next(9) {
                0 => s.delete(st(at, r as u8)),
                1 | 2 => s.set_register(at.to_string().as_bytes(), st(at, r as u8)),
                3 => s.set_expire(Some(at + next(50)), st(at, r as u8)),
                4 => s.fire(),
                5 if counts => s.add(r as u8, next(5) as i64 - 2, at),
                5 => s.set_register(b"x", st(at, r as u8)),
                _ => {
                    // Merge the other region's state into this one.
                    let remote = regions[1 - r].encode();
                    let local = regions[r].encode();
                    // From nothing too: what a merge reads for an absent key.
                    for (here, encoded) in [(absent(), None), (regions[r].clone(), Some(&local))] {
                        let mut merged = here;
                        merged.merge(&remote.state());
                        let takes = merge_yields_remote(
                            encoded.map(|e| &e.as_bytes()[..]),
                            remote.as_bytes(),
                        );
                        if takes {
                            assert_eq!(merged.encode(), remote, "at step {t}");
                            yes += 1;
                        } else {
                            no += 1;
                        }
                    }
                    let remote = regions[1 - r].clone();
                    regions[r].merge(&remote);
                }
            }
        }
        assert!(yes > 1000 && no > 1000, "yes {yes}, no {no}");
    }

    /// Two regions count on one key, reset it (DEL or SET) and exchange their states at random,
    /// one pair with compaction at every exchange (when nothing is in flight: the bound is
    /// everything), one pair without: every read agrees, and the compacted states stay small.
    #[test]
    fn compaction_keeps_every_value_and_bounds_a_reset_counter() {
        let mut next = random_below(0x9e37_79b9_7f4a_7c15u64);
        let (mut plain, mut compacted) = ([absent(), absent()], [absent(), absent()]);
        let mut longest = 0;
        for t in 1..=4000u64 {
            let r = next(2) as usize;
            match next(20) {
                0 => {
                    for s in plain
                        .iter_mut()
                        .chain(compacted.iter_mut())
                        .skip(r)
                        .step_by(2)
                    {
                        s.delete(st(t, r as u8));
                    }
                }
                1 => {
                    let base = (t * 1000).to_string();
                    for s in plain
                        .iter_mut()
                        .chain(compacted.iter_mut())
                        .skip(r)
                        .step_by(2)
                    {
                        s.set_register(base.as_bytes(), st(t, r as u8));
                    }
                }
                2..=4 => {
                    for pair in [&mut plain, &mut compacted] {
                        let (a, b) = (pair[0].clone(), pair[1].clone());
                        pair[0].merge(&b);
                        pair[1].merge(&a);
                    }
                    for s in &mut compacted {
                        s.compact(|_| u64::MAX);
                    }
                }
                _ => {
                    let delta = next(5) as i64 - 1;
                    for s in plain
                        .iter_mut()
                        .chain(compacted.iter_mut())
                        .skip(r)
                        .step_by(2)
                    {
                        s.add(r as u8, delta, t);
                    }
                }
            }
            for i in 0..2 {
                assert_eq!(
                    compacted[i].visible(),
                    plain[i].visible(),
                    "region {i} at {t}"
                );
                longest = longest.max(compacted[i].pn.len());
            }
        }
        let grown = plain[0].pn.len();
        assert!(
            grown > 100,
            "the uncompacted counter has only {grown} entries"
        );
        assert!(
            longest <= 8,
            "a compacted counter reached {longest} entries"
        );
    }

    /// Entries go only below a later incarnation within the bound, and only when the register
    /// observed them exactly; a copy that comes back in a merge adds nothing.
    #[test]
    fn compaction_waits_for_the_bound_and_exact_observation() {
        let mut s = KeyState {
            deleted: true,
            ..KeyState::default()
        };
        s.add(0, 5, 10);
        s.delete(st(20, 0));
        s.add(0, 2, 30); // a new incarnation on the tombstone
        let old = s.clone();
        assert_eq!(s.pn.len(), 2);
        assert!(
            !s.compact(|_| 29),
            "the later incarnation is past the bound"
        );
        assert!(s.compact(|_| 30));
        assert_eq!(s.pn.len(), 1);
        assert_eq!(s.floors, vec![(0, 30)]);
        assert_eq!(s.visible(), Some(Bytes::from_static(b"2")));
        // An uncompacted copy merged either way reads the same.
        let mut back = s.clone();
        back.merge(&old);
        assert_eq!(back.visible(), Some(Bytes::from_static(b"2")));
        let mut other = old.clone();
        other.merge(&s);
        assert_eq!(other.visible(), Some(Bytes::from_static(b"2")));
        // Counts the register did not observe (region 1's, merged after the DEL) keep theirs.
        let mut t = KeyState {
            deleted: true,
            ..KeyState::default()
        };
        t.add(1, 5, 10);
        t.delete(st(20, 0));
        let mut late = KeyState {
            deleted: true,
            ..KeyState::default()
        };
        late.add(1, 7, 10);
        t.merge(&late);
        t.pn.push(PnEntry {
            region: 1,
            inc: 40,
            p: 1,
            n: 0,
        });
        sort_pn(&mut t.pn);
        assert_eq!(t.visible(), Some(Bytes::from_static(b"3")));
        assert!(
            !t.compact(|_| u64::MAX),
            "an entry observed in part was dropped"
        );
        assert_eq!(t.visible(), Some(Bytes::from_static(b"3")));
    }

    #[test]
    fn counter_recreated_after_collection_keeps_concurrent_revivals() {
        let tomb = counted_then_deleted();
        assert!(tomb.is_collectable_tombstone());
        // Region 0 counts again from nothing (a new incarnation) …
        let mut again = fresh(25);
        again.add(0, 1, 30);
        // … while region 2 still held the tombstone and revived it with INCR at HLC 31.
        let mut revived = tomb.clone();
        revived.add(2, 1, 31);
        assert!(!revived.is_collectable_tombstone());
        let mut x = again.clone();
        x.merge(&revived);
        let mut y = revived.clone();
        y.merge(&again);
        assert_eq!(x.visible(), Some(Bytes::from_static(b"2")));
        assert_eq!(x.encode(), y.encode());
        // A copy that still holds the old tombstone adds none of its old counts.
        let mut z = tomb.clone();
        z.merge(&again);
        assert_eq!(z.visible(), Some(Bytes::from_static(b"1")));
    }

    #[test]
    fn set_after_collection_ignores_old_counts_but_not_concurrent_ones() {
        let tomb = counted_then_deleted();
        // Region 0 collected it and SETs "10" from nothing at HLC 30.
        let mut set = fresh(25);
        set.set_register(b"10", st(30, 0));
        // A region still holding the old tombstone: its counts (observed by the DEL) are dead.
        let mut late = tomb.clone();
        late.merge(&set);
        assert_eq!(late.visible(), Some(Bytes::from_static(b"10")));
        // Region 2 revived the old tombstone with INCR at HLC 28, after region 0 last heard from
        // it (floor 26): concurrent with the SET, so it counts on top, everywhere.
        let mut revived = tomb.clone();
        revived.add(2, 1, 28);
        let mut a = set.clone();
        a.merge(&revived);
        let mut b = revived.clone();
        b.merge(&set);
        assert_eq!(a.visible(), Some(Bytes::from_static(b"11")));
        assert_eq!(a.encode(), b.encode());
    }

    /// Fired states merge like the rest: in any order, to the same state.
    #[test]
    fn fired_states_merge_commutatively_and_associatively() {
        let with_expiry = |value: &[u8], reg: Stamp, at: Option<u64>, exp: Stamp, fired| {
            let mut s = KeyState::string(value, reg, None);
            s.set_expire(at, exp);
            if fired {
                s.fire();
            }
            s
        };
        let mut tomb = KeyState::string(b"x", st(5, 0), None);
        tomb.delete(st(22, 2));
        let states = [
            with_expiry(b"old", st(10, 0), Some(30), st(20, 0), false),
            with_expiry(b"old", st(10, 0), Some(30), st(20, 0), true),
            with_expiry(b"old", st(10, 0), None, st(25, 1), false),
            with_expiry(b"old", st(10, 0), Some(99), st(26, 1), false),
            with_expiry(b"new", st(25, 1), None, st(25, 1), false),
            with_expiry(b"mid", st(15, 2), Some(30), st(20, 0), true),
            tomb,
        ];
        let merged = |a: &KeyState, b: &KeyState| {
            let mut m = a.clone();
            m.merge(b);
            m
        };
        for a in &states {
            assert_eq!(merged(a, a).encode(), a.encode(), "idempotent");
            for b in &states {
                assert_eq!(merged(a, b).encode(), merged(b, a).encode(), "commutative");
                for c in &states {
                    assert_eq!(
                        merged(&merged(a, b), c).encode(),
                        merged(a, &merged(b, c)).encode(),
                        "associative"
                    );
                }
            }
        }
        // The fired decision holds against copies of itself and older decisions, not newer.
        assert_eq!(merged(&states[1], &states[0]).visible(), None);
        assert_eq!(
            merged(&states[1], &states[2]).visible(),
            Some(Bytes::from_static(b"old"))
        );
        assert_eq!(
            merged(&states[1], &states[4]).visible(),
            Some(Bytes::from_static(b"new"))
        );
    }

    #[test]
    fn counting_from_nothing_in_two_regions_converges_and_adds_up() {
        let mut a = fresh(25);
        a.add(0, 2, 30);
        let mut b = KeyState {
            deleted: true,
            floors: vec![(0, 27), (1, 31), (2, 27)],
            ..KeyState::default()
        };
        b.add(1, 3, 31);
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ab.encode(), ba.encode());
        assert_eq!(ab.visible(), Some(Bytes::from_static(b"5")));
        // A concurrent SET of a number elsewhere keeps the increments on top, as before.
        let mut set = KeyState::string(b"10", st(29, 2), None);
        set.merge(&ab);
        assert_eq!(set.visible(), Some(Bytes::from_static(b"15")));
    }

    #[test]
    fn encodings_of_every_size_class_keep_their_bytes() {
        for len in [0, 1, 46, 47, 110, 111, 174, 175, 4096] {
            let src: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let shared = into_shared(&src);
            assert_eq!(&shared[..], &src[..], "length {len}");
            assert_eq!(&shared.clone()[..], &src[..], "clone of length {len}");
        }
        let v = KeyState::string(&[7u8; 300], Stamp::default(), Some(5)).encode();
        let back = StoredValue::copy_from_stored(v.as_bytes()).unwrap();
        assert_eq!(back, v);
    }
}

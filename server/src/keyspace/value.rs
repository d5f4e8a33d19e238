//! The stored form of a key: a convergent state (a CRDT) from which the visible value follows.
//!
//! Every region applies the same merge to the same states, so they converge:
//! - the **register** (value bytes, or "deleted" for a tombstone) is last-writer-wins by its
//!   stamp (HLC timestamp, region id);
//! - the **counter** is a PN-counter: per region, the sum of increments and of decrements,
//!   merged by taking the maximum of each (every region only ever grows its own entry);
//! - a SET or DEL records the counter as it **observed** it: increments it had not seen still
//!   count on top of the new value (observed-remove), so concurrent INCRs are never lost;
//! - the **expiry** is its own last-writer-wins field (EXPIRE, PERSIST and SET stamp it).
//!
//! The visible value is the register, plus (when the counter moved past what the register
//! observed) the difference. The same bytes live in RocksDB and in the hot cache.
//!
//! Layout (format 2): `[2][type][expire u64][reg hlc u64][reg region][flags][expire hlc u64]
//! [expire region][n_pn u16][n_obs u16]` then `n_pn + n_obs` entries of `[region][p u64][n u64]`,
//! then the register bytes. All integers big-endian.

use bytes::{BufMut, Bytes, BytesMut};

/// Version byte of the value encoding.
const VALUE_FORMAT: u8 = 2;
/// Fixed header length.
const FIXED_LEN: usize = 33;
/// One counter entry: region, increments, decrements.
const PN_ENTRY_LEN: usize = 17;
/// Flag bit: the register is a tombstone.
const FLAG_DELETED: u8 = 1;

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
    /// Sum of increments.
    pub p: u64,
    /// Sum of decrements.
    pub n: u64,
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
}

fn pn_get(list: &[PnEntry], region: u8) -> PnEntry {
    list.iter()
        .find(|e| e.region == region)
        .copied()
        .unwrap_or(PnEntry { region, p: 0, n: 0 })
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
        }
    }

    /// The counter's movement since the register was written.
    fn counter_delta(&self) -> i128 {
        self.pn
            .iter()
            .map(|e| {
                let o = pn_get(&self.observed, e.region);
                (i128::from(e.p) - i128::from(o.p)) - (i128::from(e.n) - i128::from(o.n))
            })
            .sum()
    }

    /// True when increments happened that the register did not observe.
    fn counter_moved(&self) -> bool {
        self.pn.iter().any(|e| {
            let o = pn_get(&self.observed, e.region);
            e.p != o.p || e.n != o.n
        })
    }

    /// The visible value, or `None` when the key does not exist.
    pub fn visible(&self) -> Option<Bytes> {
        if !self.counter_moved() {
            return (!self.deleted).then(|| self.value.clone());
        }
        let base = if self.deleted {
            Some(0i128)
        } else {
            super::number::parse_i64_strict(&self.value).map(i128::from)
        };
        match base {
            // A register that is not a number ignores concurrent increments.
            None => Some(self.value.clone()),
            Some(base) => {
                let total =
                    (base + self.counter_delta()).clamp(i128::from(i64::MIN), i128::from(i64::MAX));
                let mut buf = itoa::Buffer::new();
                Some(Bytes::copy_from_slice(buf.format(total as i64).as_bytes()))
            }
        }
    }

    /// A tombstone that nothing else depends on: no counter history (PN entries must never
    /// go backwards, so a counter's tombstone is kept) and no expiry. Once every region has
    /// merged it, it can be dropped: an absent key then reads and merges the same.
    pub fn is_collectable_tombstone(&self) -> bool {
        self.deleted && self.pn.is_empty() && self.expire_at.is_none()
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
    }

    /// Sets the expiry field.
    pub fn set_expire(&mut self, at: Option<u64>, stamp: Stamp) {
        self.expire_at = at;
        self.expire_stamp = stamp;
    }

    /// Adds `delta` to `region`'s counter entry.
    pub fn add(&mut self, region: u8, delta: i64) {
        let idx = match self.pn.iter().position(|e| e.region == region) {
            Some(i) => i,
            None => {
                self.pn.push(PnEntry { region, p: 0, n: 0 });
                self.pn.sort_by_key(|e| e.region);
                self.pn.iter().position(|e| e.region == region).unwrap_or(0)
            }
        };
        let e = &mut self.pn[idx];
        if delta >= 0 {
            e.p = e.p.wrapping_add(delta as u64);
        } else {
            e.n = e.n.wrapping_add(delta.unsigned_abs());
        }
    }

    /// Merges another region's state of the same key (commutative, associative, idempotent).
    pub fn merge(&mut self, other: &KeyState) {
        if other.reg_stamp > self.reg_stamp {
            self.value = other.value.clone();
            self.deleted = other.deleted;
            self.reg_stamp = other.reg_stamp;
            self.observed = other.observed.clone();
        }
        if other.expire_stamp > self.expire_stamp {
            self.expire_at = other.expire_at;
            self.expire_stamp = other.expire_stamp;
        }
        for e in &other.pn {
            let mine = pn_get(&self.pn, e.region);
            let merged = PnEntry {
                region: e.region,
                p: mine.p.max(e.p),
                n: mine.n.max(e.n),
            };
            match self.pn.iter_mut().find(|x| x.region == e.region) {
                Some(x) => *x = merged,
                None => {
                    self.pn.push(merged);
                    self.pn.sort_by_key(|x| x.region);
                }
            }
        }
    }

    /// Encodes the state.
    pub fn encode(&self) -> StoredValue {
        let mut buf = BytesMut::with_capacity(
            FIXED_LEN + PN_ENTRY_LEN * (self.pn.len() + self.observed.len()) + self.value.len(),
        );
        buf.put_u8(VALUE_FORMAT);
        buf.put_u8(0);
        buf.put_u64(self.expire_at.unwrap_or(0));
        buf.put_u64(self.reg_stamp.hlc);
        buf.put_u8(self.reg_stamp.region);
        buf.put_u8(if self.deleted { FLAG_DELETED } else { 0 });
        buf.put_u64(self.expire_stamp.hlc);
        buf.put_u8(self.expire_stamp.region);
        buf.put_u16(self.pn.len() as u16);
        buf.put_u16(self.observed.len() as u16);
        for e in self.pn.iter().chain(self.observed.iter()) {
            buf.put_u8(e.region);
            buf.put_u64(e.p);
            buf.put_u64(e.n);
        }
        buf.put_slice(&self.value);
        StoredValue(buf.freeze())
    }
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

    /// Wraps bytes read from storage or received from a peer, checking the layout.
    pub fn from_stored(bytes: Bytes) -> Option<StoredValue> {
        if bytes.len() < FIXED_LEN || bytes[0] != VALUE_FORMAT || bytes[1] != 0 {
            return None;
        }
        let entries = u16_at(&bytes, 29) + u16_at(&bytes, 31);
        if bytes.len() < FIXED_LEN + entries * PN_ENTRY_LEN {
            return None;
        }
        Some(StoredValue(bytes))
    }

    fn counters_len(&self) -> usize {
        (u16_at(&self.0, 29) + u16_at(&self.0, 31)) * PN_ENTRY_LEN
    }

    /// Decodes the full state.
    pub fn state(&self) -> KeyState {
        let b = &self.0;
        let n_pn = u16_at(b, 29);
        let n_obs = u16_at(b, 31);
        let entry = |i: usize| {
            let at = FIXED_LEN + i * PN_ENTRY_LEN;
            PnEntry {
                region: b[at],
                p: u64_at(b, at + 1),
                n: u64_at(b, at + 9),
            }
        };
        KeyState {
            value: self.0.slice(FIXED_LEN + self.counters_len()..),
            deleted: b[19] & FLAG_DELETED != 0,
            reg_stamp: Stamp {
                hlc: u64_at(b, 10),
                region: b[18],
            },
            expire_at: self.expire_at(),
            expire_stamp: Stamp {
                hlc: u64_at(b, 20),
                region: b[28],
            },
            pn: (0..n_pn).map(entry).collect(),
            observed: (n_pn..n_pn + n_obs).map(entry).collect(),
        }
    }

    /// The value's type.
    pub fn kind(&self) -> ValueType {
        ValueType::String
    }

    /// Absolute expiry in unix ms, if any.
    pub fn expire_at(&self) -> Option<u64> {
        match u64_at(&self.0, 2) {
            0 => None,
            ms => Some(ms),
        }
    }

    /// True when the value has expired at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expire_at().is_some_and(|at| at <= now_ms)
    }

    /// True when the key exists (not a tombstone, or counted past one).
    pub fn is_visible(&self) -> bool {
        if self.counters_len() == 0 {
            return self.0[19] & FLAG_DELETED == 0;
        }
        self.state().visible().is_some()
    }

    /// The visible value (empty for a tombstone), sharing the buffer for plain strings.
    pub fn payload(&self) -> Bytes {
        if self.counters_len() == 0 {
            return self.0.slice(FIXED_LEN..);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn st(hlc: u64, region: u8) -> Stamp {
        Stamp { hlc, region }
    }

    #[test]
    fn round_trip() {
        let mut s = KeyState::string(b"hello", st(5, 1), Some(42));
        s.add(2, 3);
        s.add(0, -1);
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
        a.add(0, 5);
        b.add(1, 7);
        b.add(1, -2);
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ab, ba);
        assert_eq!(ab.visible(), Some(Bytes::from_static(b"10")));
    }

    #[test]
    fn set_observes_and_concurrent_increments_survive() {
        let mut base = KeyState::string(b"10", st(1, 0), None);
        base.add(0, 1); // 11
        let mut a = base.clone();
        let mut b = base.clone();
        a.set_register(b"100", st(5, 0)); // A: SET 100 (observes +1)
        b.add(1, 4); // B: INCRBY 4, concurrent
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
}

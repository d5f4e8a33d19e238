//! Catching up a region that is far behind: a stretch of the outbox shipped as one entry that
//! holds each key's latest state, instead of every state each entry of the stretch recorded.
//!
//! Why it is enough: an outbox entry records the whole state of each key it touched, and a
//! key's later state holds everything its earlier ones do. Local writes and merges only add to
//! a state (a newer register, tombstone or expiry decision wins by its stamp, counter entries
//! only grow); the two things that drop parts of it, tombstone collection and counter
//! compaction, drop only what every region has merged already. So merging a key's latest state
//! leaves the receiver where merging each of its states in turn would (`KeyState::merge` is a
//! join), and a hot key written a thousand times during a partition crosses once.
//!
//! Why only when behind: decoding and re-encoding the entries costs the shipping leader CPU,
//! and an entry shipped as soon as it is written has nothing to coalesce with.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use bytes::Bytes;

use crate::keyspace::{OutboxEntry, ShippedState};
use crate::raft::network::{decode, encode};

/// Bytes a shipped state costs beyond its key and state (database, two lengths).
const STATE_OVERHEAD: usize = 17;

/// Outbox entries being folded into one: each key's latest state, in the order keys first
/// appeared.
#[derive(Default)]
pub struct Coalescer {
    /// Index of the last entry taken (the index the folded entry ships under).
    last_index: u64,
    /// HLC of the first entry taken.
    first_hlc: u64,
    /// HLC of the last entry taken (the folded entry's).
    last_hlc: u64,
    /// Each key's latest state.
    states: Vec<ShippedState>,
    /// Position in `states` of each key.
    position: HashMap<(u8, Bytes), usize>,
    /// Encoded size of `states`, about.
    bytes: usize,
    /// Entries taken.
    entries: usize,
    /// States the entries held, superseded ones included.
    states_taken: usize,
}

impl Coalescer {
    /// Folds in the next outbox entry (`raw`, as stored), which must follow those taken.
    pub fn take(&mut self, index: u64, raw: &[u8]) -> Result<(), String> {
        let entry: OutboxEntry =
            decode(raw).map_err(|e| format!("outbox entry {index} does not decode: {e}"))?;
        if self.entries == 0 {
            self.first_hlc = entry.hlc;
        }
        self.entries += 1;
        self.last_index = index;
        self.last_hlc = entry.hlc;
        for (db, key, state) in entry.states {
            self.states_taken += 1;
            match self.position.entry((db, key)) {
                Entry::Occupied(at) => {
                    let held = &mut self.states[*at.get()].2;
                    self.bytes = self.bytes - held.len() + state.len();
                    *held = state;
                }
                Entry::Vacant(slot) => {
                    let key = slot.key().1.clone();
                    self.bytes += STATE_OVERHEAD + key.len() + state.len();
                    slot.insert(self.states.len());
                    self.states.push((db, key, state));
                }
            }
        }
        Ok(())
    }

    /// Entries taken so far.
    pub fn entries(&self) -> usize {
        self.entries
    }

    /// Index of the last entry taken.
    pub fn last_index(&self) -> u64 {
        self.last_index
    }

    /// HLC of the first entry taken (the oldest the folded entry covers).
    pub fn first_hlc(&self) -> u64 {
        self.first_hlc
    }

    /// About the encoded size of the folded entry.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// States taken that a later state of the same key replaced (not shipped).
    pub fn superseded(&self) -> usize {
        self.states_taken - self.states.len()
    }

    /// The folded entry, encoded as the outbox stores entries: the last entry's HLC and each
    /// key's latest state. It ships under [`Coalescer::last_index`].
    pub fn finish(self) -> Result<Bytes, String> {
        encode(&OutboxEntry {
            hlc: self.last_hlc,
            states: self.states,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(hlc: u64, states: &[(u8, &str, &str)]) -> Bytes {
        encode(&OutboxEntry {
            hlc,
            states: states
                .iter()
                .map(|(db, k, s)| {
                    (
                        *db,
                        Bytes::copy_from_slice(k.as_bytes()),
                        Bytes::copy_from_slice(s.as_bytes()),
                    )
                })
                .collect(),
        })
        .unwrap()
    }

    #[test]
    fn keeps_each_keys_latest_state_in_first_seen_order() {
        let mut c = Coalescer::default();
        c.take(7, &entry(100, &[(0, "a", "a1"), (0, "b", "b1")]))
            .unwrap();
        c.take(9, &entry(110, &[(0, "a", "a2"), (1, "a", "other-db")]))
            .unwrap();
        c.take(12, &entry(120, &[(0, "b", "b3"), (0, "c", "c3")]))
            .unwrap();
        assert_eq!(
            (c.entries(), c.last_index(), c.first_hlc(), c.superseded()),
            (3, 12, 100, 2)
        );
        let folded: OutboxEntry = decode(&c.finish().unwrap()).unwrap();
        assert_eq!(folded.hlc, 120);
        let states: Vec<(u8, &[u8], &[u8])> = folded
            .states
            .iter()
            .map(|(db, k, s)| (*db, &k[..], &s[..]))
            .collect();
        assert_eq!(
            states,
            vec![
                (0, &b"a"[..], &b"a2"[..]),
                (0, b"b", b"b3"),
                (1, b"a", b"other-db"),
                (0, b"c", b"c3"),
            ]
        );
    }

    #[test]
    fn its_size_counts_each_key_once() {
        let mut c = Coalescer::default();
        for i in 0..100u64 {
            c.take(i + 1, &entry(i, &[(0, "hot", "0123456789")]))
                .unwrap();
        }
        let one = STATE_OVERHEAD + 3 + 10;
        assert_eq!(c.bytes(), one);
        assert_eq!(c.superseded(), 99);
        let encoded = c.finish().unwrap();
        assert!(encoded.len() <= one + 16, "{} bytes", encoded.len());
    }

    #[test]
    fn an_entry_that_does_not_decode_is_an_error() {
        let mut c = Coalescer::default();
        let err = c.take(5, b"\x01").unwrap_err();
        assert!(err.contains("outbox entry 5"), "{err}");
    }
}

//! The newest outbox entries, kept in memory so the replication shipper sends them without
//! reading them back from RocksDB (which was over a third of a loaded shipper's time).
//!
//! RocksDB stays the record: the tail is a bounded copy of its newest entries. Every outbox
//! entry in RocksDB with an index above `floor` is also here; a shipper asking for entries
//! after an older index reads RocksDB instead.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::Bytes;

/// A bounded, in-memory copy of the newest outbox entries (index → encoded entry).
pub struct OutboxTail {
    inner: Mutex<Inner>,
    max_bytes: usize,
}

struct Inner {
    /// Every stored outbox entry with a higher index is in `entries`.
    floor: u64,
    /// In index order.
    entries: VecDeque<(u64, Bytes)>,
    /// Sum of the entries' lengths.
    bytes: usize,
}

impl OutboxTail {
    /// An empty tail holding at most `max_bytes` of entries, covering everything after `floor`
    /// (the highest outbox index already stored when the keyspace opened).
    pub fn new(max_bytes: usize, floor: u64) -> OutboxTail {
        OutboxTail {
            inner: Mutex::new(Inner {
                floor,
                entries: VecDeque::new(),
                bytes: 0,
            }),
            max_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds the entry just written at `index` (above every entry held); the oldest entries
    /// are dropped (and the floor raised past them) while the tail is over its bound.
    pub fn push(&self, index: u64, entry: Bytes) {
        let mut inner = self.lock();
        if index <= inner.floor || inner.entries.back().is_some_and(|(i, _)| *i >= index) {
            // Out of order would break the invariant: forget everything held instead.
            let newest = inner.entries.back().map_or(0, |(i, _)| *i);
            inner.entries.clear();
            inner.bytes = 0;
            inner.floor = inner.floor.max(index).max(newest);
            return;
        }
        inner.bytes += entry.len();
        inner.entries.push_back((index, entry));
        while inner.bytes > self.max_bytes {
            let Some((i, e)) = inner.entries.pop_front() else {
                break;
            };
            inner.bytes -= e.len();
            inner.floor = i;
        }
    }

    /// Drops the entries up to `upto` (inclusive), as the outbox trim did in storage.
    pub fn trim(&self, upto: u64) {
        let mut inner = self.lock();
        while let Some((i, _)) = inner.entries.front() {
            if *i > upto {
                break;
            }
            if let Some((_, e)) = inner.entries.pop_front() {
                inner.bytes -= e.len();
            }
        }
        inner.floor = inner.floor.max(upto);
    }

    /// Forgets everything: storage's outbox was replaced and now ends at `floor`.
    pub fn reset(&self, floor: u64) {
        let mut inner = self.lock();
        inner.entries.clear();
        inner.bytes = 0;
        inner.floor = floor;
    }

    /// The entries after `after`, at most `max` and `max_bytes` (but at least one), in index
    /// order; `None` when the tail does not reach back that far (read storage instead).
    pub fn after(&self, after: u64, max: usize, max_bytes: usize) -> Option<Vec<(u64, Bytes)>> {
        let inner = self.lock();
        if after < inner.floor {
            return None;
        }
        let start = inner.entries.partition_point(|(i, _)| *i <= after);
        let mut out = Vec::new();
        let mut bytes = 0;
        for (index, entry) in inner.entries.range(start..).take(max) {
            bytes += entry.len();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push((*index, entry.clone()));
        }
        Some(out)
    }

    /// Bytes of entries held.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: usize) -> Bytes {
        Bytes::from(vec![7u8; n])
    }

    fn indexes(v: Option<Vec<(u64, Bytes)>>) -> Option<Vec<u64>> {
        v.map(|v| v.into_iter().map(|(i, _)| i).collect())
    }

    #[test]
    fn a_read_stops_at_its_byte_bound_but_returns_one_entry() {
        let tail = OutboxTail::new(1000, 0);
        for i in 1..=5 {
            tail.push(i, entry(30));
        }
        assert_eq!(indexes(tail.after(0, 10, 100)), Some(vec![1, 2, 3]));
        assert_eq!(indexes(tail.after(0, 10, 10)), Some(vec![1]));
        assert_eq!(indexes(tail.after(3, 10, 60)), Some(vec![4, 5]));
    }

    #[test]
    fn serves_what_it_holds_and_sends_older_reads_to_storage() {
        let tail = OutboxTail::new(1000, 10);
        assert_eq!(
            indexes(tail.after(9, 10, usize::MAX)),
            None,
            "below the floor"
        );
        assert_eq!(indexes(tail.after(10, 10, usize::MAX)), Some(vec![]));
        for i in [12, 15, 16, 20] {
            tail.push(i, entry(10));
        }
        assert_eq!(
            indexes(tail.after(10, 10, usize::MAX)),
            Some(vec![12, 15, 16, 20])
        );
        assert_eq!(indexes(tail.after(15, 2, usize::MAX)), Some(vec![16, 20]));
        assert_eq!(indexes(tail.after(13, 1, usize::MAX)), Some(vec![15]));
        assert_eq!(indexes(tail.after(20, 10, usize::MAX)), Some(vec![]));
        assert_eq!(tail.bytes(), 40);
    }

    #[test]
    fn over_its_bound_it_drops_the_oldest_and_raises_the_floor() {
        let tail = OutboxTail::new(25, 0);
        for i in 1..=5 {
            tail.push(i, entry(10));
        }
        assert_eq!(tail.bytes(), 20);
        assert_eq!(indexes(tail.after(3, 10, usize::MAX)), Some(vec![4, 5]));
        assert_eq!(
            indexes(tail.after(2, 10, usize::MAX)),
            None,
            "entry 3 was dropped"
        );
    }

    #[test]
    fn trim_and_reset_follow_storage() {
        let tail = OutboxTail::new(1000, 0);
        for i in 1..=5 {
            tail.push(i, entry(1));
        }
        tail.trim(3);
        assert_eq!(indexes(tail.after(3, 10, usize::MAX)), Some(vec![4, 5]));
        assert_eq!(indexes(tail.after(1, 10, usize::MAX)), None);
        tail.reset(100);
        assert_eq!(indexes(tail.after(99, 10, usize::MAX)), None);
        assert_eq!(indexes(tail.after(100, 10, usize::MAX)), Some(vec![]));
        tail.push(101, entry(1));
        assert_eq!(indexes(tail.after(100, 10, usize::MAX)), Some(vec![101]));
    }

    #[test]
    fn an_out_of_order_push_empties_it_rather_than_serve_a_gap() {
        let tail = OutboxTail::new(1000, 0);
        tail.push(5, entry(1));
        tail.push(4, entry(1));
        assert_eq!(indexes(tail.after(4, 10, usize::MAX)), None);
        assert_eq!(indexes(tail.after(5, 10, usize::MAX)), Some(vec![]));
    }
}

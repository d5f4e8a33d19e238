//! The Raft log and vote in RocksDB column families beside the keyspace (`raft_log`: index as
//! big-endian u64 → entry, so key order is log order; `raft_meta`: vote, last purged id, and the
//! commit index openraft saved, which the next append writes; see [`COMMITTED_SAVE_EVERY`]).
//!
//! Appends are written with the node's `appendfsync` policy: `always` syncs before openraft is
//! told the entries are durable; `everysec` relies on the once-a-second WAL sync (a power loss
//! may lose the last second on a minority, like Redis's everysec; a process crash loses nothing).
//! The vote is always synced.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions};

use super::types::{Entry, LogId, NodeId, StorageError, TypeConfig, Vote};
use crate::keyspace::{rocks, FsyncPolicy, Keyspace};

const CF_LOG: &str = "raft_log";
/// Ranges of at most this many entries are read by point lookups, not an iterator: the apply
/// reads back a few entries at a time, which sit in the memtable, and creating an iterator
/// (it references every memtable and table file of the column family) cost more than the
/// lookups (the iterator's creation was 7 % of the Raft thread at SET -P1).
const POINT_READ_MAX: u64 = 64;
const CF_RAFT_META: &str = "raft_meta";
const KEY_VOTE: &[u8] = b"vote";
const KEY_LAST_PURGED: &[u8] = b"last_purged";
const KEY_COMMITTED: &[u8] = b"committed";

/// Bytes (serialized size) of recent entries kept in memory for replication, in a region of
/// several nodes. (Decoded entries take more, and their values share the buffers requests were
/// read into: this stays small.)
pub const REPLICATION_CACHE_BYTES: usize = 4 << 20;

/// Bytes (serialized size) of recent entries kept in memory in a region of one node: the apply
/// reads each committed entry back, and without them it read and decoded every entry from
/// RocksDB (4 % of the Raft thread under SET -P1). Enough for the entries in flight (at most
/// 4 of at most 4096 ops); kept small because the entries share their request buffers.
pub const APPLY_CACHE_BYTES: usize = 1 << 20;

/// How long a commit index openraft saved may wait for an append to carry it to RocksDB
/// before it is written on its own. openraft re-applies the log up to the saved index when a
/// node starts, and allows it to be older than the real one: a node whose saved index lags
/// applies the rest once its region commits again (at once for a region of one node). A
/// write of its own per commit was 5 % of the Raft thread of each node of a region under
/// SET -P1. A graceful shutdown writes the last one.
const COMMITTED_SAVE_EVERY: Duration = Duration::from_millis(100);

/// Serialized bytes of log entries one AppendEntries carries at most (always at least one
/// entry). openraft 0.9 gives an AppendEntries the heartbeat interval (50 ms) to complete; a
/// follower hundreds of large entries behind was sent all of them (up to `max_payload_entries`,
/// each up to thousands of ops) in one call that could never finish in time, so it timed out,
/// backed off and retried the same call forever.
pub const MAX_APPEND_BYTES: usize = 1 << 20;

/// The log store; cheap to clone (shares the database and the cache of recent entries).
#[derive(Clone)]
pub struct LogStore {
    keyspace: Arc<Keyspace>,
    recent: Arc<Mutex<RecentEntries>>,
    committed: Arc<Mutex<Committed>>,
}

/// The commit index openraft last saved, and whether RocksDB has it yet.
#[derive(Default)]
struct Committed {
    latest: Option<LogId>,
    /// `latest` is not in RocksDB: the next append writes it in its batch.
    unsaved: bool,
    /// When a commit index last went to RocksDB.
    saved_at: Option<Instant>,
}

impl Committed {
    /// `latest` has just gone to RocksDB.
    fn mark_saved(&mut self) {
        self.unsaved = false;
        self.saved_at = Some(Instant::now());
    }
}

/// The newest log entries, contiguous, as appended: the leader replicates from here instead
/// of reading and decoding each entry back from RocksDB once per follower.
#[derive(Default)]
struct RecentEntries {
    /// (entry, serialized size), in index order without gaps.
    entries: VecDeque<(Entry, usize)>,
    /// Sum of the sizes.
    bytes: usize,
    /// Bound of `bytes` (0: keep nothing, as in a region of one node).
    cap: usize,
}

impl RecentEntries {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.log_id.index)
    }

    fn push(&mut self, entry: Entry, size: usize) {
        if self.cap == 0 {
            return;
        }
        let contiguous = self
            .entries
            .back()
            .is_none_or(|(last, _)| last.log_id.index + 1 == entry.log_id.index);
        if !contiguous {
            self.entries.clear();
            self.bytes = 0;
        }
        self.entries.push_back((entry, size));
        self.bytes += size;
        while self.bytes > self.cap && self.entries.len() > 1 {
            if let Some((_, s)) = self.entries.pop_front() {
                self.bytes -= s;
            }
        }
    }

    /// Drops entries with index >= `from` (a truncated log).
    fn truncate(&mut self, from: u64) {
        while self
            .entries
            .back()
            .is_some_and(|(e, _)| e.log_id.index >= from)
        {
            if let Some((_, s)) = self.entries.pop_back() {
                self.bytes -= s;
            }
        }
    }

    /// Drops entries with index <= `upto` (a purged log).
    fn purge(&mut self, upto: u64) {
        while self
            .entries
            .front()
            .is_some_and(|(e, _)| e.log_id.index <= upto)
        {
            if let Some((_, s)) = self.entries.pop_front() {
                self.bytes -= s;
            }
        }
    }

    /// Entries `start..end` if all of them are here, cut after `max_bytes` (never empty).
    fn get(&self, start: u64, end: u64, max_bytes: usize) -> Option<Vec<Entry>> {
        let first = self.first_index()?;
        let last = first + self.entries.len() as u64; // exclusive
        if start < first || end > last || start >= end {
            return None;
        }
        let mut bytes = 0;
        Some(
            self.entries
                .range((start - first) as usize..(end - first) as usize)
                .take_while(|(_, size)| {
                    let first_one = bytes == 0;
                    bytes += (*size).max(1);
                    first_one || bytes <= max_bytes
                })
                .map(|(e, _)| e.clone())
                .collect(),
        )
    }
}

fn io_err(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError {
    openraft::StorageIOError::new(subject, verb, openraft::AnyError::new(&e)).into()
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    io_err(ErrorSubject::Logs, ErrorVerb::Read, e)
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    io_err(ErrorSubject::Logs, ErrorVerb::Write, e)
}

/// Moves the node's clock past `entry`'s stamp.
fn observe_stamp(keyspace: &Keyspace, entry: &Entry) {
    if let openraft::EntryPayload::Normal(batch) = &entry.payload {
        keyspace.hlc().observe(geo::Timestamp(batch.hlc));
    }
}

impl LogStore {
    /// A log store over the keyspace's database, keeping up to `cache_bytes` of the newest
    /// entries in memory for replication (0 in a region of one node: nobody reads them).
    pub fn new(keyspace: Arc<Keyspace>, cache_bytes: usize) -> LogStore {
        let store = LogStore {
            keyspace,
            recent: Arc::new(Mutex::new(RecentEntries {
                cap: cache_bytes,
                ..RecentEntries::default()
            })),
            committed: Arc::default(),
        };
        // The clock starts after the newest entry already in the log (appends observe the
        // rest): a restarted node that becomes leader stamps after its region's writes.
        if let Ok(Some(entry)) = store.last_entry() {
            observe_stamp(&store.keyspace, &entry);
        }
        store
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, RecentEntries> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn committed(&self) -> std::sync::MutexGuard<'_, Committed> {
        self.committed.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn db(&self) -> &rocksdb::DB {
        self.keyspace.db()
    }

    fn get_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StorageError> {
        let raw = self
            .db()
            .get_cf(rocks::cf(self.db(), CF_RAFT_META), key)
            .map_err(read_err)?;
        raw.map(|r| bincode::deserialize(&r).map_err(read_err))
            .transpose()
    }

    fn put_meta<T: serde::Serialize>(
        &self,
        key: &[u8],
        value: &T,
        sync: bool,
    ) -> Result<(), StorageError> {
        let bytes = bincode::serialize(value).map_err(write_err)?;
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.db()
            .put_cf_opt(rocks::cf(self.db(), CF_RAFT_META), key, bytes, &wo)
            .map_err(write_err)
    }

    fn last_entry(&self) -> Result<Option<Entry>, StorageError> {
        let mut iter = self
            .db()
            .iterator_cf(rocks::cf(self.db(), CF_LOG), IteratorMode::End);
        match iter.next() {
            None => Ok(None),
            Some(item) => {
                let (_, v) = item.map_err(read_err)?;
                Ok(Some(bincode::deserialize(&v).map_err(read_err)?))
            }
        }
    }

    /// The id of the log's last entry (or of the last purged one when the log is empty).
    pub fn last_log_id(&self) -> Result<Option<LogId>, StorageError> {
        let last_purged: Option<LogId> = self.get_meta(KEY_LAST_PURGED)?;
        Ok(self.last_entry_id()?.or(last_purged))
    }

    fn last_entry_id(&self) -> Result<Option<LogId>, StorageError> {
        Ok(self.last_entry()?.map(|e| e.log_id))
    }

    /// Index of the last entry in the log (for INFO / MERIDIAN RAFT), from its key alone.
    pub fn last_index(&self) -> u64 {
        let mut iter = self
            .db()
            .iterator_cf(rocks::cf(self.db(), CF_LOG), IteratorMode::End);
        iter.next()
            .and_then(Result::ok)
            .and_then(|(k, _)| <[u8; 8]>::try_from(k.as_ref()).ok())
            .map_or(0, u64::from_be_bytes)
    }

    /// The commit index openraft last saved (for MERIDIAN RAFT).
    pub fn committed_index(&self) -> Option<u64> {
        self.last_committed().ok().flatten().map(|id| id.index)
    }

    /// The commit index openraft last saved: in memory since this process saved one, else as
    /// RocksDB holds it.
    fn last_committed(&self) -> Result<Option<LogId>, StorageError> {
        if let Some(latest) = self.committed().latest {
            return Ok(Some(latest));
        }
        Ok(self.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten())
    }

    /// Entries `start..end` (exclusive), from memory when all are there, cut after
    /// `max_bytes` of their serialized size (at least one entry when the range has one).
    fn read_entries(
        &self,
        start: u64,
        end: u64,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        if let Some(entries) = self.recent().get(start, end, max_bytes) {
            return Ok(entries);
        }
        if end.saturating_sub(start) <= POINT_READ_MAX {
            if let Some(entries) = self.read_entries_by_key(start, end, max_bytes)? {
                return Ok(entries);
            }
        }
        let start_key = start.to_be_bytes();
        let mut opts = rocksdb::ReadOptions::default();
        opts.set_iterate_upper_bound(end.to_be_bytes());
        let iter = self.db().iterator_cf_opt(
            rocks::cf(self.db(), CF_LOG),
            opts,
            IteratorMode::From(&start_key, Direction::Forward),
        );
        let mut out = Vec::new();
        let mut bytes = 0;
        for item in iter {
            let (k, v) = item.map_err(read_err)?;
            let index = u64::from_be_bytes(k.as_ref().try_into().map_err(|_| {
                read_err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "bad log key",
                ))
            })?);
            if index >= end {
                break;
            }
            bytes += v.len();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(bincode::deserialize(&v).map_err(read_err)?);
        }
        Ok(out)
    }

    /// Entries `start..end` by point lookups (see [`POINT_READ_MAX`]); `None` when the first
    /// is not stored (purged, or past the end), which the iterator path answers.
    fn read_entries_by_key(
        &self,
        start: u64,
        end: u64,
        max_bytes: usize,
    ) -> Result<Option<Vec<Entry>>, StorageError> {
        let keys: Vec<[u8; 8]> = (start..end).map(u64::to_be_bytes).collect();
        let found = self
            .db()
            .batched_multi_get_cf(rocks::cf(self.db(), CF_LOG), &keys, true);
        let mut out = Vec::with_capacity(keys.len());
        let mut bytes = 0;
        for value in found {
            let Some(value) = value.map_err(read_err)? else {
                if out.is_empty() {
                    return Ok(None);
                }
                break;
            };
            bytes += value.len();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            out.push(bincode::deserialize(&value).map_err(read_err)?);
        }
        Ok(Some(out))
    }
}

impl LogStore {
    /// Writes `entries` to the log in one RocksDB batch (with the `appendfsync` policy), with
    /// a commit index waiting for a write, and keeps them among the recent entries.
    fn write_entries(&self, entries: impl IntoIterator<Item = Entry>) -> Result<(), StorageError> {
        let cf = rocks::cf(self.db(), CF_LOG);
        let mut encoded = Vec::new();
        for entry in entries {
            // A follower that becomes leader must stamp after every entry in its log, applied
            // or not: entries of one region carry increasing HLCs.
            observe_stamp(&self.keyspace, &entry);
            let bytes = bincode::serialize(&entry).map_err(write_err)?;
            encoded.push((entry, bytes));
        }
        // Room for every entry at once: a batch grown as it fills copies what it holds at
        // every doubling (an entry of a few hundred SETs is tens of kilobytes).
        let room: usize = encoded.iter().map(|(_, b)| b.len() + 24).sum();
        let mut batch = WriteBatch::with_capacity_bytes(room + 64);
        let mut appended = Vec::with_capacity(encoded.len());
        for (entry, bytes) in encoded {
            batch.put_cf(cf, entry.log_id.index.to_be_bytes(), &bytes);
            appended.push((entry, bytes.len()));
        }
        // A commit index waiting for a write goes with these entries (never past them: an
        // index is committed only once its entry is in the log).
        let mut committed = self.committed();
        let carries_committed = committed.unsaved;
        if carries_committed {
            let bytes = bincode::serialize(&committed.latest).map_err(write_err)?;
            batch.put_cf(rocks::cf(self.db(), CF_RAFT_META), KEY_COMMITTED, bytes);
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(self.keyspace.fsync_policy() == FsyncPolicy::Always);
        self.db().write_opt(batch, &wo).map_err(write_err)?;
        if carries_committed {
            committed.mark_saved();
        }
        drop(committed);
        let mut recent = self.recent();
        for (entry, size) in appended {
            recent.push(entry, size);
        }
        Ok(())
    }

    /// Writes a commit index still waiting for an append (at shutdown, and every
    /// [`COMMITTED_SAVE_EVERY`] from [`LogStore::write_late_commits`]).
    pub fn write_unsaved_committed(&self) -> Result<(), StorageError> {
        self.write_if_unsaved(&mut self.committed())
    }

    /// Writes `state`'s commit index on its own if RocksDB does not have it yet.
    fn write_if_unsaved(&self, state: &mut Committed) -> Result<(), StorageError> {
        if state.unsaved {
            self.put_meta(KEY_COMMITTED, &state.latest, false)?;
            state.mark_saved();
        }
        Ok(())
    }

    /// Runs until its runtime stops: writes a commit index no append carried within
    /// [`COMMITTED_SAVE_EVERY`], so a node that stops hearing from its region, or is killed,
    /// restarts knowing all but the last moment of what it knew committed.
    pub async fn write_late_commits(self) {
        let mut tick = tokio::time::interval(COMMITTED_SAVE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.write_unsaved_committed() {
                tracing::warn!(error = %e, "saving the commit index failed");
            }
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            std::ops::Bound::Included(i) => *i,
            std::ops::Bound::Excluded(i) => i + 1,
            std::ops::Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            std::ops::Bound::Included(i) => i.saturating_add(1),
            std::ops::Bound::Excluded(i) => *i,
            std::ops::Bound::Unbounded => u64::MAX,
        };
        self.read_entries(start, end, usize::MAX)
    }

    /// What replication sends: at most [`MAX_APPEND_BYTES`] per AppendEntries.
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        self.read_entries(start, end, MAX_APPEND_BYTES)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.get_meta(KEY_LAST_PURGED)?;
        let last = self.last_log_id()?;
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.put_meta(KEY_VOTE, vote, true).map_err(|_| {
            io_err(
                ErrorSubject::Vote,
                ErrorVerb::Write,
                std::io::Error::other("saving vote"),
            )
        })
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.get_meta(KEY_VOTE)
    }

    /// Written with the next append, or at once when the last write of a commit index is
    /// [`COMMITTED_SAVE_EVERY`] old (see there).
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let mut state = self.committed();
        state.latest = committed;
        state.unsaved = true;
        if state
            .saved_at
            .is_some_and(|at| at.elapsed() < COMMITTED_SAVE_EVERY)
        {
            return Ok(());
        }
        self.write_if_unsaved(&mut state)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        self.last_committed()
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        match self.write_entries(entries) {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.recent().truncate(log_id.index);
        let cf = rocks::cf(self.db(), CF_LOG);
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, log_id.index.to_be_bytes(), u64::MAX.to_be_bytes());
        batch.delete_cf(cf, u64::MAX.to_be_bytes());
        self.db().write_opt(batch, &wo).map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // The state machine's writes skip the WAL: make them durable before the log entries
        // that could replay them are gone.
        let keyspace = self.keyspace.clone();
        tokio::task::spawn_blocking(move || keyspace.flush_applied())
            .await
            .map_err(write_err)?
            .map_err(write_err)?;
        self.put_meta(KEY_LAST_PURGED, &log_id, true)?;
        self.recent().purge(log_id.index);
        let cf = rocks::cf(self.db(), CF_LOG);
        let end = log_id.index.saturating_add(1).to_be_bytes();
        self.db()
            .delete_range_cf(cf, 0u64.to_be_bytes(), end)
            .map_err(write_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: openraft::EntryPayload::Blank,
        }
    }

    fn indexes(entries: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        entries.map(|v| v.iter().map(|e| e.log_id.index).collect())
    }

    fn cache(cap: usize) -> RecentEntries {
        RecentEntries {
            cap,
            ..RecentEntries::default()
        }
    }

    #[test]
    fn recent_entries_serve_only_ranges_they_hold() {
        let mut r = cache(REPLICATION_CACHE_BYTES);
        for i in 5..=10 {
            r.push(entry(i), 100);
        }
        let all = usize::MAX;
        assert_eq!(indexes(r.get(6, 9, all)), Some(vec![6, 7, 8]));
        assert_eq!(indexes(r.get(5, 11, all)), Some(vec![5, 6, 7, 8, 9, 10]));
        assert!(r.get(4, 8, all).is_none(), "starts before the cache");
        assert!(r.get(9, 12, all).is_none(), "ends after it");
        // A byte bound cuts the range, but never to nothing.
        assert_eq!(indexes(r.get(5, 11, 250)), Some(vec![5, 6]));
        assert_eq!(indexes(r.get(5, 11, 10)), Some(vec![5]));
        r.truncate(8);
        assert!(r.get(7, 9, all).is_none());
        r.push(entry(8), 100);
        r.purge(6);
        assert_eq!(indexes(r.get(7, 9, all)), Some(vec![7, 8]));
        // A gap (after a snapshot install) starts the cache again.
        r.push(entry(20), 100);
        assert!(r.get(7, 8, all).is_none());
        assert_eq!(indexes(r.get(20, 21, all)), Some(vec![20]));
    }

    /// An entry carrying one SET of a `len`-byte value.
    fn big_entry(index: u64, len: usize) -> Entry {
        Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: openraft::EntryPayload::Normal(crate::op::OpBatch {
                now_ms: 1,
                hlc: 1,
                origin: 0,
                ops: vec![crate::op::Op::Set {
                    db: 0,
                    key: bytes::Bytes::from(format!("k{index}")),
                    value: bytes::Bytes::from(vec![b'v'; len]),
                    expire: crate::op::ExpireSet::Clear,
                    cond: crate::op::SetCond::Always,
                    reply: crate::op::SetReply::OkOrNil,
                }]
                .into(),
            }),
        }
    }

    /// A keyspace with small caches and no in-memory outbox, in `dir`.
    fn small_keyspace(dir: &std::path::Path) -> Arc<Keyspace> {
        Arc::new(
            Keyspace::open(crate::keyspace::KeyspaceOptions {
                path: dir.join("db"),
                hot_cache_bytes: 1 << 20,
                block_cache_bytes: 1 << 20,
                write_buffer_bytes: 1 << 20,
                max_write_buffers: 2,
                fsync: crate::keyspace::FsyncPolicy::No,
                outbox_memory_bytes: 0,
                write_back: None,
            })
            .unwrap(),
        )
    }

    #[tokio::test]
    async fn a_commit_index_saved_within_the_interval_goes_with_the_next_append() {
        let dir = tempfile::tempdir().unwrap();
        let keyspace = small_keyspace(dir.path());
        let mut store = LogStore::new(keyspace.clone(), APPLY_CACHE_BYTES);
        let id = |index| LogId::new(openraft::CommittedLeaderId::new(1, 1), index);
        let on_disk = |store: &LogStore| {
            store
                .get_meta::<Option<LogId>>(KEY_COMMITTED)
                .unwrap()
                .flatten()
                .map(|id| id.index)
        };
        store.write_entries((1..=2).map(entry)).unwrap();
        store.save_committed(Some(id(1))).await.unwrap();
        assert_eq!(on_disk(&store), Some(1), "the first one is written at once");
        store.save_committed(Some(id(2))).await.unwrap();
        assert_eq!(on_disk(&store), Some(1), "the next one waits for an append");
        assert_eq!(store.committed_index(), Some(2), "but is reported");
        assert_eq!(store.read_committed().await.unwrap(), Some(id(2)));
        store.write_entries([entry(3)]).unwrap();
        assert_eq!(on_disk(&store), Some(2), "the append carried it");
        // A store opened again (a restart) reads it from RocksDB.
        let mut reopened = LogStore::new(keyspace.clone(), 0);
        assert_eq!(reopened.read_committed().await.unwrap(), Some(id(2)));
        // Once the interval has passed, a commit index is written on its own.
        std::thread::sleep(COMMITTED_SAVE_EVERY);
        store.save_committed(Some(id(3))).await.unwrap();
        assert_eq!(on_disk(&store), Some(3));
        // The apply reads entries back from memory.
        assert_eq!(
            indexes(store.recent().get(1, 4, usize::MAX)),
            Some(vec![1, 2, 3])
        );
    }

    #[tokio::test]
    async fn replication_reads_at_most_a_bounded_payload_from_storage() {
        let dir = tempfile::tempdir().unwrap();
        let keyspace = small_keyspace(dir.path());
        // No memory cache: everything is read back from RocksDB.
        let mut store = LogStore::new(keyspace.clone(), 0);
        let cf = rocks::cf(keyspace.db(), CF_LOG);
        let entry_len = MAX_APPEND_BYTES / 4;
        for index in 1..=10 {
            let bytes = bincode::serialize(&big_entry(index, entry_len)).unwrap();
            keyspace
                .db()
                .put_cf(cf, index.to_be_bytes(), bytes)
                .unwrap();
        }
        let all = store.try_get_log_entries(1..11).await.unwrap();
        assert_eq!(all.len(), 10, "a plain read is not cut");
        let first = store.limited_get_log_entries(1, 11).await.unwrap();
        let indexes: Vec<u64> = first.iter().map(|e| e.log_id.index).collect();
        assert_eq!(indexes, vec![1, 2, 3], "cut at the byte bound, in order");
        let next = store.limited_get_log_entries(4, 11).await.unwrap();
        assert_eq!(next.first().map(|e| e.log_id.index), Some(4));
        // An entry larger than the bound still goes, alone.
        let huge = bincode::serialize(&big_entry(11, MAX_APPEND_BYTES * 2)).unwrap();
        keyspace.db().put_cf(cf, 11u64.to_be_bytes(), huge).unwrap();
        let alone = store.limited_get_log_entries(11, 12).await.unwrap();
        assert_eq!(alone.len(), 1);
    }

    #[tokio::test]
    async fn point_reads_and_the_iterator_return_the_same_entries() {
        let dir = tempfile::tempdir().unwrap();
        let keyspace = small_keyspace(dir.path());
        let mut store = LogStore::new(keyspace.clone(), 0);
        let cf = rocks::cf(keyspace.db(), CF_LOG);
        // Entries 11..=200: as after a purge of everything up to 10.
        for index in 11..=200u64 {
            let bytes = bincode::serialize(&big_entry(index, 10)).unwrap();
            keyspace
                .db()
                .put_cf(cf, index.to_be_bytes(), bytes)
                .unwrap();
        }
        let read = |v: Vec<Entry>| v.iter().map(|e| e.log_id.index).collect::<Vec<_>>();
        // Short ranges (point lookups) and long ones (the iterator) agree.
        let short = read(store.try_get_log_entries(20..30).await.unwrap());
        assert_eq!(short, (20..30).collect::<Vec<_>>());
        let long = read(store.try_get_log_entries(20..200).await.unwrap());
        assert_eq!(long, (20..200).collect::<Vec<_>>());
        // A short range that starts before the first stored entry, or runs past the last,
        // returns what is stored, as the iterator does.
        let before = read(store.try_get_log_entries(5..15).await.unwrap());
        assert_eq!(before, vec![11, 12, 13, 14]);
        let past = read(store.try_get_log_entries(195..210).await.unwrap());
        assert_eq!(past, (195..=200).collect::<Vec<_>>());
        assert!(store
            .try_get_log_entries(300..310)
            .await
            .unwrap()
            .is_empty());
    }

    #[test]
    fn recent_entries_stay_under_their_byte_bound() {
        let mut r = cache(REPLICATION_CACHE_BYTES);
        for i in 1..=100 {
            r.push(entry(i), REPLICATION_CACHE_BYTES / 10);
        }
        assert!(r.bytes <= REPLICATION_CACHE_BYTES);
        assert_eq!(r.first_index(), Some(91));
        let mut none = cache(0);
        none.push(entry(1), 10);
        assert!(none.get(1, 2, usize::MAX).is_none());
    }
}

//! The keyspace: values in RocksDB behind a moka hot cache, with an expiry index.
//!
//! Reads go through [`Keyspace::get`] (cache, then storage, expired keys hidden). Every write
//! goes through [`Keyspace::apply_batch`], the one seam that the Raft state machine drives:
//! one RocksDB write batch per [`OpBatch`](crate::op::OpBatch) (values, expiry index, key
//! counts, applied position), or, in a keyspace that writes back (`write_back`), one addition
//! to the pending set that a later RocksDB batch takes; then the cache is updated.

mod apply;
pub mod bitfield;
mod hot;
pub mod notify;
pub mod number;
mod outbox_tail;
pub mod rocks;
mod value;
mod write_back;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use crossbeam_utils::CachePadded;
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteOptions, DB};
use smallvec::SmallVec;

pub use apply::{OutboxEntry, ShippedState};
pub use geo::glob::glob_match;
pub use hot::HotCache;
pub use value::{plain_string_at, KeyState, Stamp, StoredValue, ValueType};
pub use write_back::WriteBackOptions;

use crate::op::{Op, OpBatch, OpResult};
use outbox_tail::OutboxTail;
use write_back::{Changes, WriteBack};

/// Column families opened beside the keyspace's own, for the Raft log store.
pub const EXTRA_COLUMN_FAMILIES: &[&str] = &["raft_log", "raft_meta"];

/// One SCAN step: the live keys found with their values, and the last key examined (`None`
/// when the database was exhausted).
pub type ScanPage = (Vec<(Bytes, StoredValue)>, Option<Bytes>);

/// Number of databases (SELECT 0..15), as Redis's default.
pub const DATABASES: usize = 16;

/// Largest string value, as Redis's proto-max-bulk-len default (512 MB).
pub const MAX_STRING_LEN: usize = 512 * 1024 * 1024;

/// The longest string with several regions (see [`Keyspace::max_string_len`]).
pub const MAX_SHIPPED_STRING_LEN: usize = 32 * 1024 * 1024;

/// Expiry index records an active expiry pass reads at most per record it returns (records
/// pending deletion are passed over).
const MAX_SCAN_PER_DUE: usize = 16;

/// Batches of at least this many ops touch their keys' hot-cache entries before applying
/// them (see [`HotCache::warm`]).
const WARM_MIN_OPS: usize = 8;

/// Churn counters kept (see [`Keyspace::churn`]): keys share one by a hash of their name, so
/// a WATCH of a missing key is aborted by churn of one key in this many (a spurious abort,
/// which the client retries, never a missed change).
pub const CHURN_SLOTS: usize = 4096;

/// Set in the churn epoch of an `Op::ChurnEpochMixed` (the epoch is its log index with this
/// bit): slots in that epoch come from a mixed hash (see [`churn_slot`]).
pub const CHURN_MIXED: u64 = 1 << 63;

/// The churn counter slot of `key` in `db` during churn epoch `epoch`: 64-bit FNV-1a, the same
/// on every machine (every replica evaluates WATCH checks with it). Its low bits mix little
/// (names that differ in their last bytes, in neighbouring databases, shared a slot
/// systematically: `k17` in database 8 and `k5` in database 9), so epochs marked
/// [`CHURN_MIXED`] mix all 64 bits down first (murmur3's finaliser). The slot function changes
/// only at an epoch, an entry of the log, so every replica switches at the same position.
pub fn churn_slot(epoch: u64, db: u8, key: &[u8]) -> usize {
    let mut h = value::fnv1a(std::iter::once(&db).chain(key));
    if epoch & CHURN_MIXED != 0 {
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^= h >> 33;
    }
    (h % CHURN_SLOTS as u64) as usize
}

/// Reads the stored churn counters into `churn` (zero where none is stored) and their epoch.
fn load_churn(db: &DB, churn: &[AtomicU64], epoch: &AtomicU64) -> Result<(), StorageError> {
    for counter in churn {
        counter.store(0, Ordering::Relaxed);
    }
    let meta = rocks::cf(db, rocks::CF_META);
    let stored_epoch = db
        .get_cf(meta, rocks::CHURN_EPOCH_KEY)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map_or(0, u64::from_be_bytes);
    epoch.store(stored_epoch, Ordering::Release);
    let from = IteratorMode::From(rocks::CHURN_PREFIX, Direction::Forward);
    for item in db.iterator_cf(meta, from) {
        let (k, v) = item?;
        let Some(slot) = k.strip_prefix(rocks::CHURN_PREFIX) else {
            break;
        };
        // (The epoch's key shares the prefix and is longer: skipped here.)
        let (Ok(slot), Ok(value)) = (<[u8; 2]>::try_from(slot), <[u8; 8]>::try_from(&v[..])) else {
            continue;
        };
        if let Some(counter) = churn.get(usize::from(u16::from_be_bytes(slot))) {
            counter.store(u64::from_be_bytes(value), Ordering::Relaxed);
        }
    }
    Ok(())
}

/// When RocksDB's write-ahead log is synced to disk (Redis's `appendfsync`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// Every write batch is synced before it is acknowledged.
    Always,
    /// The log is synced once a second by a background task.
    #[default]
    Everysec,
    /// Never synced explicitly (the OS decides); survives a process crash, not a power loss.
    No,
}

impl FsyncPolicy {
    /// The config-file spelling.
    pub fn name(self) -> &'static str {
        match self {
            FsyncPolicy::Always => "always",
            FsyncPolicy::Everysec => "everysec",
            FsyncPolicy::No => "no",
        }
    }

    /// Parses the config spelling (case-insensitive).
    pub fn parse(text: &str) -> Option<FsyncPolicy> {
        match text.to_ascii_lowercase().as_str() {
            "always" => Some(FsyncPolicy::Always),
            "everysec" => Some(FsyncPolicy::Everysec),
            "no" => Some(FsyncPolicy::No),
            _ => None,
        }
    }
}

/// Storage sizing and durability.
#[derive(Clone, Debug)]
pub struct KeyspaceOptions {
    /// Directory of the RocksDB database.
    pub path: PathBuf,
    /// Byte bound of the moka hot cache.
    pub hot_cache_bytes: u64,
    /// RocksDB block cache bytes.
    pub block_cache_bytes: usize,
    /// RocksDB memtable size per column family.
    pub write_buffer_bytes: usize,
    /// RocksDB memtables kept per column family.
    pub max_write_buffers: i32,
    /// WAL sync policy.
    pub fsync: FsyncPolicy,
    /// Bytes of the newest outbox entries kept in memory for the replication shipper.
    pub outbox_memory_bytes: usize,
    /// Write applied changes back later, in a keyspace fed by a Raft log of one region (see
    /// `write_back`); `None`: every applied batch is its own RocksDB write.
    pub write_back: Option<WriteBackOptions>,
}

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database could not be opened.
    #[error("opening RocksDB at {path}: {source}")]
    Open {
        /// Directory.
        path: String,
        /// Cause.
        #[source]
        source: rocksdb::Error,
    },
    /// The data directory could not be created.
    #[error("creating {path}: {source}")]
    CreateDir {
        /// Directory.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A read or write failed.
    #[error("RocksDB: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// Stored bytes do not decode.
    #[error("corrupt stored value for a key of {key_len} bytes")]
    Corrupt {
        /// Length of the key (values and keys are never logged).
        key_len: usize,
    },
    /// A snapshot file could not be written or read.
    #[error("snapshot file: {0}")]
    SnapshotIo(#[from] std::io::Error),
    /// The thread that writes applied changes back could not start.
    #[error("starting the state-machine writer thread: {0}")]
    WriterThread(#[source] std::io::Error),
    /// A snapshot stream ends inside a record or holds an unknown record.
    #[error("snapshot stream is corrupt ({0})")]
    SnapshotCorrupt(&'static str),
}

/// The node's data: RocksDB, the hot cache, key counts.
pub struct Keyspace {
    db: Arc<DB>,
    /// Applied changes not yet in RocksDB, and the thread that writes them.
    write_back: Option<Arc<WriteBack>>,
    hot: HotCache,
    counts: [AtomicI64; DATABASES],
    fsync: Mutex<FsyncPolicy>,
    /// Serialises write batches: apply is read-modify-write.
    apply_lock: Mutex<()>,
    /// Storage keys read on a cache miss (INFO keyspace_misses).
    misses: StripedCounter,
    /// Reads answered from the hot cache.
    hits: StripedCounter,
    options: KeyspaceOptions,
    /// This region's id (stamps local writes).
    region_id: AtomicU8,
    /// How many regions the topology has (ids `0..n`); 0 until told, and counter compaction
    /// (which must know every region) waits for it.
    region_count: AtomicU8,
    /// More than one region: keep tombstones and fill the outbox.
    multi_region: AtomicBool,
    /// Tests: every merge takes the general path (decode, merge, encode), for comparing the
    /// in-place merge against it.
    #[cfg(test)]
    general_merges_only: AtomicBool,
    /// Woken when an outbox entry is written.
    outbox_notify: tokio::sync::Notify,
    /// The newest outbox entries, so shippers need not read them back from RocksDB.
    outbox_tail: OutboxTail,
    /// The highest outbox index written (0: none).
    outbox_last: AtomicU64,
    /// Outbox entries the shipper had to read back from RocksDB (older than the tail).
    outbox_storage_reads: AtomicU64,
    /// `merged_hlc` of every origin merged so far, by origin (a copy of the meta records,
    /// read for every shipped call and every batch that creates keys).
    merged_hlcs: Mutex<Vec<(u8, u64)>>,
    /// Applied batches skip RocksDB's WAL (the Raft log is the WAL).
    log_is_wal: AtomicBool,
    /// This node's hybrid logical clock. The Raft log store makes it observe every entry's
    /// stamp (the last one at start, then each appended one), so a node that becomes leader
    /// stamps after everything in its log: entries of one region carry increasing HLCs, which
    /// tombstone collection relies on.
    hlc: Arc<geo::Hlc>,
    /// Tombstones dropped by tombstone collection since start.
    collected: AtomicU64,
    /// The churn counters, [`CHURN_SLOTS`] of them (see [`Keyspace::churn`]).
    churn: Box<[AtomicU64]>,
    /// Since when they count (see [`Keyspace::churn_epoch`]).
    churn_epoch: AtomicU64,
    /// Keyspace notifications (`notify-keyspace-events`).
    pub notifier: notify::Notifier,
    /// Client-side caching: the keys tracking clients read, told when they change.
    pub tracking: crate::tracking::Tracking,
}

/// The HLC up to which `origin`'s entries can be taken as held by every region: each region
/// `r` other than `origin` (which made them) and `me` (which holds them) reported, in a report
/// merged here after everything `r` had shipped before, having merged `origin`'s entries up
/// to it (`seen(r)`). So none can ship an older state again and none is in flight. `u64::MAX`
/// when there is no such region. Bounds tombstone collection and counter compaction.
pub fn merged_everywhere(
    regions: impl IntoIterator<Item = u8>,
    me: u8,
    origin: u8,
    mut seen: impl FnMut(u8) -> u64,
) -> u64 {
    regions
        .into_iter()
        .filter(|r| *r != origin && *r != me)
        .map(&mut seen)
        .min()
        .unwrap_or(u64::MAX)
}

impl Keyspace {
    /// Tests: makes every merge take the general path (see `apply::BatchCtx::merge_in_place`).
    #[cfg(test)]
    pub(crate) fn set_general_merges_only(&self, on: bool) {
        self.general_merges_only.store(on, Ordering::Relaxed);
    }

    /// Whether a merge may store a remote state as it came (false only in tests comparing the
    /// two paths).
    fn merges_in_place(&self) -> bool {
        #[cfg(test)]
        if self.general_merges_only.load(Ordering::Relaxed) {
            return false;
        }
        true
    }

    /// Sets this node's region id and whether other regions exist (at start-up).
    pub fn set_geo(&self, region_id: u8, multi_region: bool) {
        self.region_id.store(region_id, Ordering::Relaxed);
        self.multi_region.store(multi_region, Ordering::Relaxed);
    }

    /// Sets how many regions the topology has (ids `0..n`).
    pub fn set_region_count(&self, n: u8) {
        self.region_count.store(n, Ordering::Relaxed);
    }

    /// How many regions the topology has; 0 when not told.
    pub fn region_count(&self) -> u8 {
        self.region_count.load(Ordering::Relaxed)
    }

    /// The node's hybrid logical clock (the Raft proposer stamps batches with it).
    pub fn hlc(&self) -> Arc<geo::Hlc> {
        self.hlc.clone()
    }

    /// This region's id.
    pub fn region_id(&self) -> u8 {
        self.region_id.load(Ordering::Relaxed)
    }

    /// The longest string a write may make: with several regions, a key's whole state is
    /// shipped in one node-to-node frame, so less than Redis's 512 MB.
    pub fn max_string_len(&self) -> usize {
        if self.keeps_tombstones() {
            MAX_SHIPPED_STRING_LEN
        } else {
            MAX_STRING_LEN
        }
    }

    /// The churn counter of `key`'s slot: how many applied writes created, removed, or wrote
    /// over a missing or expired key of that slot since the churn epoch (expiry's own deletes
    /// aside). WATCH of a missing key records it, so EXEC notices the key created and removed
    /// again meanwhile (Redis aborts then; "missing, then missing" alone looked unchanged).
    /// Stored with the data, so every replica, restarted or fed a snapshot, holds the same
    /// counters at the same log position.
    /// Returned with the churn epoch it counts in, read first (the epoch decides the slot).
    pub fn churn(&self, db: u8, key: &[u8]) -> (u64, u64) {
        let epoch = self.churn_epoch();
        (
            epoch,
            self.churn[churn_slot(epoch, db, key)].load(Ordering::Acquire),
        )
    }

    /// The log index of the `Op::ChurnEpoch` (with [`CHURN_MIXED`]: `Op::ChurnEpochMixed`) from
    /// which the churn counters count (0: none yet,
    /// and a WATCH check then compares no counter). Every replica zeroes its counters when it
    /// applies that entry, so they agree from it on, whatever each counted before (a replica
    /// that replayed entries after an upgrade counted some that the others applied uncounted).
    pub fn churn_epoch(&self) -> u64 {
        self.churn_epoch.load(Ordering::Acquire)
    }

    /// True when deletes must leave tombstones (other regions exist).
    pub fn keeps_tombstones(&self) -> bool {
        self.multi_region.load(Ordering::Relaxed)
    }

    /// The highest outbox index of `origin` applied here.
    pub fn watermark(&self, origin: u8) -> Result<u64, StorageError> {
        Ok(self
            .read_meta(&rocks::watermark_key(origin))?
            .and_then(|r| <[u8; 8]>::try_from(r.as_slice()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    /// HLC of the last entry of `origin` merged here (0: none yet).
    pub fn merged_hlc(&self, origin: u8) -> u64 {
        self.lock_merged_hlcs()
            .iter()
            .find(|(o, _)| *o == origin)
            .map_or(0, |(_, h)| *h)
    }

    /// `merged_hlc` of every origin merged so far: what this region reports to the others.
    pub fn merged_hlcs(&self) -> Vec<(u8, u64)> {
        self.lock_merged_hlcs().clone()
    }

    fn lock_merged_hlcs(&self) -> std::sync::MutexGuard<'_, Vec<(u8, u64)>> {
        self.merged_hlcs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records merged HLCs just written to storage.
    fn note_merged_hlcs(&self, merged: impl Iterator<Item = (u8, u64)>) {
        let mut held = self.lock_merged_hlcs();
        for (origin, hlc) in merged {
            match held.binary_search_by_key(&origin, |(o, _)| *o) {
                Ok(i) => held[i].1 = hlc,
                Err(i) => held.insert(i, (origin, hlc)),
            }
        }
    }

    /// What region `from` reported it had merged from `origin` (an HLC; 0: nothing known).
    pub fn seen(&self, from: u8, origin: u8) -> Result<u64, StorageError> {
        self.read_meta_u64(&rocks::seen_key(from, origin))
    }

    fn read_meta_u64(&self, key: &[u8]) -> Result<u64, StorageError> {
        Ok(self
            .read_meta(key)?
            .and_then(|r| <[u8; 8]>::try_from(r.as_slice()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    /// Tombstones whose register HLC is at most `bound(region)`, oldest first, at most `max`;
    /// the scan stops at the first HLC above `max_bound` (the largest bound). Each comes as
    /// (database, key, stamp). Read from RocksDB as it stands: index changes still pending
    /// write-back (see `write_back`) are not seen, so a tombstone made in the last window waits
    /// for a later call, and one whose key was written since may be offered; `Op::Forget`
    /// checks each key again, and its batch writes the pending set out first.
    pub fn collectable_tombstones(
        &self,
        bound: impl Fn(u8) -> u64,
        max_bound: u64,
        max: usize,
    ) -> Result<Vec<(u8, Bytes, Stamp)>, StorageError> {
        let cf = rocks::cf(&self.db, rocks::CF_META);
        let iter = self.db.iterator_cf(
            cf,
            IteratorMode::From(rocks::TOMBSTONE_PREFIX, Direction::Forward),
        );
        let mut out = Vec::new();
        for item in iter {
            let (k, _) = item?;
            let Some((hlc, region, data_key)) = rocks::parse_tombstone_key(&k) else {
                break;
            };
            if hlc > max_bound || out.len() >= max {
                break;
            }
            if hlc <= bound(region) && !data_key.is_empty() {
                out.push((
                    data_key[0],
                    Bytes::copy_from_slice(&data_key[1..]),
                    Stamp { hlc, region },
                ));
            }
        }
        Ok(out)
    }

    /// Records in the tombstone index (tombstones waiting for every region to merge them),
    /// counted up to `limit` (the pending changes written out first).
    pub fn tombstones_indexed(&self, limit: usize) -> Result<usize, StorageError> {
        self.write_pending()?;
        let cf = rocks::cf(&self.db, rocks::CF_META);
        let mut n = 0;
        for item in self.db.iterator_cf(
            cf,
            IteratorMode::From(rocks::TOMBSTONE_PREFIX, Direction::Forward),
        ) {
            let (k, _) = item?;
            if !k.starts_with(rocks::TOMBSTONE_PREFIX) || n >= limit {
                break;
            }
            n += 1;
        }
        Ok(n)
    }

    /// Counts tombstones dropped by collection (on the node that proposed it).
    pub fn count_collected(&self, n: u64) {
        self.collected.fetch_add(n, Ordering::Relaxed);
    }

    /// Tombstones this node's collection dropped since start.
    pub fn collected(&self) -> u64 {
        self.collected.load(Ordering::Relaxed)
    }

    /// Outbox entries after `after`, at most `max` and `max_bytes` (but at least one), in
    /// index order, as stored (an encoded [`OutboxEntry`] each): from the in-memory tail when
    /// it reaches back that far.
    pub fn outbox_raw_after(
        &self,
        after: u64,
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Bytes)>, StorageError> {
        if let Some(entries) = self.outbox_tail.after(after, max, max_bytes) {
            return Ok(entries);
        }
        let entries = self.outbox_stored_after(after, max, max_bytes)?;
        self.outbox_storage_reads
            .fetch_add(entries.len() as u64, Ordering::Relaxed);
        Ok(entries)
    }

    /// Outbox entries shipped from RocksDB rather than from memory since start (a region
    /// fell further behind than `replication-memory-mb` holds, or the node restarted).
    pub fn outbox_storage_reads(&self) -> u64 {
        self.outbox_storage_reads.load(Ordering::Relaxed)
    }

    /// Outbox entries after `after` read from RocksDB.
    fn outbox_stored_after(
        &self,
        after: u64,
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Bytes)>, StorageError> {
        // Entries the in-memory tail let go of may still be pending.
        self.write_pending()?;
        let start = after.saturating_add(1).to_be_bytes();
        let iter = self.db.iterator_cf(
            rocks::cf(&self.db, rocks::CF_OUTBOX),
            IteratorMode::From(&start, Direction::Forward),
        );
        let mut out = Vec::new();
        let mut bytes = 0;
        for item in iter.take(max) {
            let (k, v) = item?;
            bytes += v.len();
            if !out.is_empty() && bytes > max_bytes {
                break;
            }
            let index = <[u8; 8]>::try_from(k.as_ref())
                .map(u64::from_be_bytes)
                .map_err(|_| StorageError::Corrupt { key_len: k.len() })?;
            out.push((index, Bytes::from(v.into_vec())));
        }
        Ok(out)
    }

    /// The highest outbox index dropped so far (a region below it must resync).
    pub fn outbox_trimmed(&self) -> Result<u64, StorageError> {
        Ok(self
            .read_meta(rocks::OUTBOX_TRIMMED_KEY)?
            .and_then(|r| <[u8; 8]>::try_from(r.as_slice()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    /// Woken whenever an outbox entry is written.
    pub fn outbox_notify(&self) -> &tokio::sync::Notify {
        &self.outbox_notify
    }

    /// Raw key states (tombstones included) after `after` in (db, key) order, at most `max`;
    /// also returns where to continue (None when done). For a cross-region resync.
    #[allow(clippy::type_complexity)]
    pub fn raw_states_after(
        &self,
        after: Option<&(u8, Bytes)>,
        max: usize,
    ) -> Result<(Vec<ShippedState>, Option<(u8, Bytes)>), StorageError> {
        let start = match after {
            Some((db, key)) => {
                let mut s = rocks::data_key(*db, key);
                s.push(0);
                s
            }
            None => Vec::new(),
        };
        self.write_pending()?;
        let iter = self.db.iterator_cf(
            rocks::cf(&self.db, rocks::CF_DATA),
            IteratorMode::From(&start, Direction::Forward),
        );
        let mut out = Vec::new();
        for item in iter {
            let (k, v) = item?;
            if k.is_empty() {
                continue;
            }
            out.push((
                k[0],
                Bytes::copy_from_slice(&k[1..]),
                Bytes::from(v.into_vec()),
            ));
            if out.len() >= max {
                let next = out.last().map(|(db, key, _)| (*db, key.clone()));
                return Ok((out, next));
            }
        }
        Ok((out, None))
    }

    /// Bytes of outbox entries held in memory for the shipper.
    pub fn outbox_memory(&self) -> usize {
        self.outbox_tail.bytes()
    }

    /// The highest outbox index written (0 when none was): trimmed entries count, so
    /// this never goes back.
    pub fn outbox_last(&self) -> u64 {
        self.outbox_last.load(Ordering::Relaxed)
    }

    /// A hash of every visible key of every database (value and expiry), for checking that
    /// regions converged. Expired keys are left out, so compare once expiries settled.
    pub fn digest(&self, now_ms: u64) -> Result<(u64, u64), StorageError> {
        self.write_pending()?;
        const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const FNV_PRIME: u64 = 0x0100_0000_01b3;
        let mut hash = FNV_OFFSET;
        let mut keys = 0u64;
        let mut feed = |bytes: &[u8]| {
            for b in bytes {
                hash ^= u64::from(*b);
                hash = hash.wrapping_mul(FNV_PRIME);
            }
        };
        let snap = self.db.snapshot();
        for item in snap.iterator_cf(rocks::cf(&self.db, rocks::CF_DATA), IteratorMode::Start) {
            let (k, v) = item?;
            let Some(value) = StoredValue::from_stored(Bytes::from(v.into_vec())) else {
                return Err(StorageError::Corrupt { key_len: k.len() });
            };
            if !value.is_visible() || value.is_expired(now_ms) {
                continue;
            }
            keys += 1;
            feed(&(k.len() as u32).to_be_bytes());
            feed(&k);
            let payload = value.payload();
            feed(&(payload.len() as u32).to_be_bytes());
            feed(&payload);
            feed(&value.expire_at().unwrap_or(0).to_be_bytes());
        }
        Ok((hash, keys))
    }
    /// Opens the keyspace at `options.path` (no data is loaded into memory).
    pub fn open(options: KeyspaceOptions) -> Result<Keyspace, StorageError> {
        std::fs::create_dir_all(&options.path).map_err(|source| StorageError::CreateDir {
            path: options.path.display().to_string(),
            source,
        })?;
        let db = rocks::open(&options.path, &options, EXTRA_COLUMN_FAMILIES)?;
        let counts: [AtomicI64; DATABASES] = std::array::from_fn(|_| AtomicI64::new(0));
        for (i, count) in counts.iter().enumerate() {
            let raw = db.get_cf(rocks::cf(&db, rocks::CF_META), rocks::count_key(i as u8))?;
            if let Some(raw) = raw {
                let bytes: [u8; 8] = raw.as_slice().try_into().unwrap_or([0; 8]);
                count.store(i64::from_be_bytes(bytes), Ordering::Relaxed);
            }
        }
        let outbox_last = outbox_last_index(&db)?;
        let merged_hlcs = stored_merged_hlcs(&db)?;
        let churn: Box<[AtomicU64]> = (0..CHURN_SLOTS).map(|_| AtomicU64::new(0)).collect();
        let churn_epoch = AtomicU64::new(0);
        load_churn(&db, &churn, &churn_epoch)?;
        let data_empty = data_is_empty(&db);
        let db = Arc::new(db);
        let write_back = match options.write_back {
            Some(wb) => Some(WriteBack::start(db.clone(), wb).map_err(StorageError::WriterThread)?),
            None => None,
        };
        Ok(Keyspace {
            write_back,
            outbox_tail: OutboxTail::new(options.outbox_memory_bytes, outbox_last),
            outbox_last: AtomicU64::new(outbox_last),
            outbox_storage_reads: AtomicU64::new(0),
            merged_hlcs: Mutex::new(merged_hlcs),
            hot: {
                let hot = HotCache::new(options.hot_cache_bytes);
                // A write within the write-back window of the key's last one is a rewrite.
                if let Some(wb) = options.write_back {
                    hot.set_rewrite_window(
                        u32::try_from(wb.window.as_millis()).unwrap_or(u32::MAX),
                    );
                }
                if data_empty {
                    hot.storage_is_empty();
                }
                hot
            },
            db,
            counts,
            fsync: Mutex::new(options.fsync),
            apply_lock: Mutex::new(()),
            misses: StripedCounter::default(),
            hits: StripedCounter::default(),
            options,
            region_id: AtomicU8::new(0),
            region_count: AtomicU8::new(0),
            multi_region: AtomicBool::new(false),
            #[cfg(test)]
            general_merges_only: AtomicBool::new(false),
            outbox_notify: tokio::sync::Notify::new(),
            log_is_wal: AtomicBool::new(false),
            hlc: Arc::new(geo::Hlc::new()),
            collected: AtomicU64::new(0),
            churn,
            churn_epoch,
            notifier: notify::Notifier::default(),
            tracking: crate::tracking::Tracking::default(),
        })
    }

    /// The options the keyspace was opened with.
    pub fn options(&self) -> &KeyspaceOptions {
        &self.options
    }

    /// The current WAL sync policy.
    pub fn fsync_policy(&self) -> FsyncPolicy {
        *self.fsync.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the WAL sync policy (CONFIG SET appendfsync).
    pub fn set_fsync_policy(&self, policy: FsyncPolicy) {
        *self.fsync.lock().unwrap_or_else(|p| p.into_inner()) = policy;
    }

    /// Syncs the write-ahead log to disk (the `everysec` task calls this).
    pub fn sync_wal(&self) -> Result<(), StorageError> {
        self.db.flush_wal(true)?;
        Ok(())
    }

    /// The last step of a graceful shutdown: writes the pending applied changes, then stops
    /// RocksDB's background flushes and compactions and waits for the running ones. The process
    /// may exit after this: a background job still running at exit locked mutexes that the
    /// exit's destructors had destroyed, and the node aborted ("pthread lock: Invalid argument")
    /// instead of exiting 0. Writes after this still work; nothing is flushed in the background.
    pub fn close(&self) {
        if let Some(write_back) = &self.write_back {
            write_back.close();
        }
        self.db.cancel_all_background_work(true);
    }

    /// The stored value of `key`, if it exists and has not expired at `now_ms`.
    pub fn get(
        &self,
        db: u8,
        key: &[u8],
        now_ms: u64,
    ) -> Result<Option<StoredValue>, StorageError> {
        Ok(self
            .get_raw(db, key)?
            .filter(|v| !v.is_expired(now_ms) && v.is_visible()))
    }

    /// Runs `f` on the encoding of `key` when the hot cache holds it (`None` given to `f`:
    /// known not to exist), without copying it. `None` when it is not cached, or when `f`
    /// declined it (returned `None`): then use [`Keyspace::get`], which counts the hit.
    pub fn read_cached<R>(
        &self,
        db: u8,
        key: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> Option<R>,
    ) -> Option<R> {
        let found = self.hot.read_with(&inline_data_key(db, key), f).flatten();
        if found.is_some() {
            self.hits.add(1);
        }
        found
    }

    /// Brings the hot-cache entries of `keys` (of database `db`) into the CPU's caches, so that
    /// reads of them that follow find them there (see [`HotCache::warm`]): for the GETs a
    /// connection has pipelined.
    pub fn warm_reads<'k>(&self, db: u8, keys: impl Iterator<Item = &'k [u8]>) {
        self.hot.warm(keys.map(|key| (db, key)));
    }

    /// The stored value of `key` even if expired (not yet removed).
    fn get_raw(&self, db: u8, key: &[u8]) -> Result<Option<StoredValue>, StorageError> {
        let data_key = inline_data_key(db, key);
        if let Some(cached) = self.hot.get(&data_key) {
            self.hits.add(1);
            return Ok(cached);
        }
        self.misses.add(1);
        let generation = self.hot.generation();
        let found = self.read_storage(&data_key)?;
        self.hot.fill(generation, &data_key, found.clone());
        Ok(found)
    }

    /// Reads a value from storage (pending applied changes, then RocksDB), not the hot cache.
    fn read_storage(&self, data_key: &[u8]) -> Result<Option<StoredValue>, StorageError> {
        if let Some(write_back) = &self.write_back {
            if let Some(pending) = write_back.lookup(data_key) {
                return Ok(pending);
            }
        }
        // The caller's lookup missed. If the cache still holds every stored key, the key does
        // not exist, unless a write published it since: look once more (see
        // `HotCache::is_complete`). New keys are written without asking RocksDB.
        if self.hot.is_complete() {
            return Ok(self.hot.get(data_key).flatten());
        }
        match self
            .db
            .get_pinned_cf(rocks::cf(&self.db, rocks::CF_DATA), data_key)?
        {
            None => Ok(None),
            Some(raw) => {
                StoredValue::copy_from_stored(&raw)
                    .map(Some)
                    .ok_or(StorageError::Corrupt {
                        key_len: data_key.len().saturating_sub(1),
                    })
            }
        }
    }

    /// Number of keys in `db` (expired keys count until removed, as in Redis).
    pub fn dbsize(&self, db: u8) -> u64 {
        self.counts
            .get(db as usize)
            .map_or(0, |c| c.load(Ordering::Relaxed).max(0) as u64)
    }

    /// Keys of `db` after `after` (exclusive) in key order, up to `count` keys examined;
    /// returns the live keys found (with their values) and the last key examined, or
    /// `None` when the database was exhausted.
    pub fn scan(
        &self,
        db: u8,
        after: Option<&[u8]>,
        count: usize,
        now_ms: u64,
    ) -> Result<ScanPage, StorageError> {
        self.write_pending()?;
        let start = match after {
            Some(k) => {
                let mut s = rocks::data_key(db, k);
                s.push(0); // the smallest key strictly after `k`
                s
            }
            None => vec![db],
        };
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(vec![db + 1]);
        let iter = self.db.iterator_cf_opt(
            rocks::cf(&self.db, rocks::CF_DATA),
            opts,
            IteratorMode::From(&start, Direction::Forward),
        );
        let mut out = Vec::new();
        let mut examined = 0usize;
        for item in iter {
            let (k, v) = item?;
            let key = Bytes::copy_from_slice(&k[1..]);
            let value = StoredValue::from_stored(Bytes::from(v.into_vec()))
                .ok_or(StorageError::Corrupt { key_len: key.len() })?;
            examined += 1;
            let is_last = examined >= count;
            if !value.is_expired(now_ms) && value.is_visible() {
                out.push((key.clone(), value));
            }
            if is_last {
                return Ok((out, Some(key)));
            }
        }
        Ok((out, None))
    }

    /// A random live key of `db`, if any. In a database of at most [`RANDOMKEY_EXACT`] keys
    /// every live key is equally likely; in a larger one, one of the [`RANDOMKEY_SPREAD`] keys
    /// after a random point between the database's first and last key (keys after a wide gap in
    /// the key space are more likely than others: not uniform, but spread over the database).
    pub fn random_key(&self, db: u8, now_ms: u64) -> Result<Option<Bytes>, StorageError> {
        self.write_pending()?;
        let size = self.dbsize(db);
        if size == 0 {
            return Ok(None);
        }
        if size <= RANDOMKEY_EXACT {
            let (live, _) = self.scan(db, None, RANDOMKEY_EXACT as usize + 1, now_ms)?;
            if !live.is_empty() {
                let pick = rand::random_range(0..live.len());
                return Ok(live.into_iter().nth(pick).map(|(k, _)| k));
            }
            // Tombstones (kept for other regions) fill the first entries: look further.
            let (far, _) = self.scan(db, None, RANDOMKEY_FAR, now_ms)?;
            return Ok(far.into_iter().next().map(|(k, _)| k));
        }
        let (Some(first), Some(last)) = (self.edge_key(db, false)?, self.edge_key(db, true)?)
        else {
            return Ok(None);
        };
        let probe = random_between(&first, &last);
        let (mut near, _) = self.scan(db, Some(&probe), RANDOMKEY_SPREAD, now_ms)?;
        if near.is_empty() {
            (near, _) = self.scan(db, None, RANDOMKEY_SPREAD, now_ms)?;
        }
        if near.is_empty() {
            (near, _) = self.scan(db, None, RANDOMKEY_FAR, now_ms)?;
        }
        if near.is_empty() {
            return Ok(None);
        }
        let pick = rand::random_range(0..near.len());
        Ok(near.into_iter().nth(pick).map(|(k, _)| k))
    }

    /// The first (or last) key stored in `db`, live or not.
    fn edge_key(&self, db: u8, last: bool) -> Result<Option<Vec<u8>>, StorageError> {
        let mut opts = ReadOptions::default();
        opts.set_iterate_lower_bound(vec![db]);
        opts.set_iterate_upper_bound(vec![db + 1]);
        let mode = if last {
            IteratorMode::End
        } else {
            IteratorMode::Start
        };
        let mut iter = self
            .db
            .iterator_cf_opt(rocks::cf(&self.db, rocks::CF_DATA), opts, mode);
        match iter.next() {
            Some(item) => Ok(Some(item?.0[1..].to_vec())),
            None => Ok(None),
        }
    }

    /// Up to `limit` (db, key, expire_at) entries of the expiry index that are due at `now_ms`.
    pub fn due_expiries(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<(u8, Bytes, u64)>, StorageError> {
        // A record pending write-back is found by a later pass (reads hide the key meanwhile).
        // A record pending deletion (its key expired already, or no longer expires then) is
        // passed over: proposed again at every pass until written out, each would cost a Raft
        // entry that changes nothing. At most `MAX_SCAN_PER_DUE` records are read per one due.
        let pending = self.write_back.as_ref();
        let mut scan_left = limit.saturating_mul(MAX_SCAN_PER_DUE);
        let mut out = Vec::new();
        for db in 0..DATABASES as u8 {
            if self.dbsize(db) == 0 {
                continue;
            }
            let mut opts = ReadOptions::default();
            opts.set_iterate_upper_bound(rocks::expiry_key(db, now_ms.saturating_add(1), b""));
            let iter = self.db.iterator_cf_opt(
                rocks::cf(&self.db, rocks::CF_EXPIRY),
                opts,
                IteratorMode::From(&[db], Direction::Forward),
            );
            for item in iter {
                let (k, _) = item?;
                if scan_left == 0 {
                    return Ok(out);
                }
                scan_left -= 1;
                if pending.is_some_and(|wb| wb.expiry_pending_deletion(&k)) {
                    continue;
                }
                if let Some((d, at, key)) = rocks::parse_expiry_key(&k) {
                    out.push((d, Bytes::copy_from_slice(key), at));
                }
                if out.len() >= limit {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    /// Applies a batch of ops atomically (one RocksDB write batch, or one addition to the
    /// write-back set) and returns one result per op.
    pub fn apply_batch(&self, batch: &OpBatch) -> Result<Vec<OpResult>, StorageError> {
        self.apply_batch_with_meta(batch, &[], None)
    }

    /// Like [`Keyspace::apply_batch`], also writing `meta` records (e.g. the Raft applied
    /// position) in the same RocksDB write batch, so data and position never disagree.
    pub fn apply_batch_with_meta(
        &self,
        batch: &OpBatch,
        meta: &[(&[u8], Vec<u8>)],
        log_index: Option<u64>,
    ) -> Result<Vec<OpResult>, StorageError> {
        let _guard = self.apply_lock.lock().unwrap_or_else(|p| p.into_inner());
        if batch.ops.len() >= WARM_MIN_OPS {
            self.hot.warm(batch.ops.iter().filter_map(|op| match op {
                Op::Set { db, key, .. }
                | Op::IncrBy { db, key, .. }
                | Op::GetEx { db, key, .. }
                | Op::GetDel { db, key, .. }
                | Op::Append { db, key, .. }
                | Op::Expire { db, key, .. } => Some((*db, &key[..])),
                _ => None,
            }));
        }
        let mut ctx = apply::BatchCtx::new(self, batch, log_index);
        let results = batch
            .ops
            .iter()
            .map(|op| ctx.apply(op))
            .collect::<Result<Vec<_>, _>>()?;
        let events = ctx.take_events();
        let (touched, flushed) = ctx.take_touched();
        ctx.commit(meta, log_index)?;
        if !events.is_empty() {
            self.notifier.publish(&events);
        }
        if !touched.is_empty() || flushed {
            self.tracking.invalidate(&touched, flushed);
        }
        Ok(results)
    }

    /// Reads a meta record: its pending value (see `write_back`), else RocksDB's.
    pub fn read_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        if let Some(pending) = self.write_back.as_ref().and_then(|wb| wb.lookup_meta(key)) {
            return Ok(Some(pending));
        }
        Ok(self.db.get_cf(rocks::cf(&self.db, rocks::CF_META), key)?)
    }

    /// The underlying database (the Raft log store keeps its column families here too).
    pub fn db(&self) -> &DB {
        &self.db
    }

    /// Streams the whole keyspace (values, expiry index, meta records) from one consistent
    /// RocksDB snapshot into `out`, record by record (nothing is held in memory). `header`
    /// first gets the values of the meta records `keys` as of that snapshot (and may write a
    /// header); its result is returned.
    ///
    /// Record: `[cf tag u8][key len u32][key][value len u32][value]`, big-endian lengths.
    pub fn export_to<W: Write, T>(
        &self,
        out: &mut W,
        keys: &[&[u8]],
        header: impl FnOnce(Vec<Option<Vec<u8>>>, &mut W) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        self.write_pending()?;
        let snap = self.db.snapshot();
        let values = keys
            .iter()
            .map(|k| snap.get_cf(rocks::cf(&self.db, rocks::CF_META), k))
            .collect::<Result<Vec<_>, _>>()?;
        let result = header(values, out)?;
        for (tag, name) in [
            (0u8, rocks::CF_DATA),
            (1, rocks::CF_EXPIRY),
            (2, rocks::CF_META),
        ] {
            for item in snap.iterator_cf(rocks::cf(&self.db, name), IteratorMode::Start) {
                let (k, v) = item?;
                out.write_all(&[tag])?;
                out.write_all(&(k.len() as u32).to_be_bytes())?;
                out.write_all(&k)?;
                out.write_all(&(v.len() as u32).to_be_bytes())?;
                out.write_all(&v)?;
            }
        }
        Ok(result)
    }

    /// Replaces the whole keyspace with an [`Keyspace::export_to`] stream, in write batches
    /// of bounded size. The meta records `last` (the applied position) are written in the
    /// final batch, and an import marker covers the batches before it: a node that stops
    /// half-way finds the marker at start and must import again ([`Keyspace::import_interrupted`]).
    pub fn import_from(&self, input: &mut impl Read, last: &[&[u8]]) -> Result<(), StorageError> {
        let _guard = self.apply_lock.lock().unwrap_or_else(|p| p.into_inner());
        // The imported keys reach RocksDB around the cache.
        self.hot.mark_incomplete();
        // Older applied changes must not land over the imported state.
        self.write_pending()?;
        let mut batch = rocksdb::WriteBatch::default();
        for name in [
            rocks::CF_DATA,
            rocks::CF_EXPIRY,
            rocks::CF_META,
            rocks::CF_OUTBOX,
        ] {
            batch.delete_range_cf(rocks::cf(&self.db, name), vec![], vec![0xffu8; 64]);
        }
        batch.put_cf(
            rocks::cf(&self.db, rocks::CF_META),
            rocks::IMPORT_MARKER_KEY,
            b"",
        );
        let mut held_back = Vec::new();
        while let Some((tag, key, value)) = read_record(input)? {
            let cf = match tag {
                0 => rocks::CF_DATA,
                1 => rocks::CF_EXPIRY,
                2 => rocks::CF_META,
                3 => rocks::CF_OUTBOX,
                _ => return Err(StorageError::SnapshotCorrupt("unknown column family tag")),
            };
            if cf == rocks::CF_META && last.contains(&key.as_slice()) {
                held_back.push((key, value));
                continue;
            }
            batch.put_cf(rocks::cf(&self.db, cf), key, value);
            if batch.size_in_bytes() >= IMPORT_BATCH_BYTES {
                self.db
                    .write_opt(std::mem::take(&mut batch), &WriteOptions::default())?;
            }
        }
        let meta = rocks::cf(&self.db, rocks::CF_META);
        for (key, value) in held_back {
            batch.put_cf(meta, key, value);
        }
        batch.delete_cf(meta, rocks::IMPORT_MARKER_KEY);
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo)?;
        for (i, count) in self.counts.iter().enumerate() {
            let raw = self.read_meta(&rocks::count_key(i as u8))?;
            let n = raw
                .and_then(|r| <[u8; 8]>::try_from(r.as_slice()).ok())
                .map_or(0, i64::from_be_bytes);
            count.store(n, Ordering::Relaxed);
        }
        load_churn(&self.db, &self.churn, &self.churn_epoch)?;
        self.hot.publish(true, 0, std::iter::empty());
        let outbox_last = outbox_last_index(&self.db)?;
        self.outbox_tail.reset(outbox_last);
        self.outbox_last.store(outbox_last, Ordering::Relaxed);
        *self.lock_merged_hlcs() = stored_merged_hlcs(&self.db)?;
        // Every key may have changed: tracking clients drop everything they cached.
        self.tracking.invalidate(&[], true);
        Ok(())
    }

    /// Waits until the batch being applied, if any, is done: one started later sees a
    /// tracking client that turned tracking on before this returns.
    pub fn wait_for_apply(&self) {
        let wait = || drop(self.apply_lock.lock().unwrap_or_else(|p| p.into_inner()));
        // On a connection worker, other tasks move to another worker meanwhile (a snapshot
        // install holds the lock for long).
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
            _ => wait(),
        }
    }

    /// True when an import stopped half-way (the keyspace is partial until imported again).
    pub fn import_interrupted(&self) -> Result<bool, StorageError> {
        Ok(self.read_meta(rocks::IMPORT_MARKER_KEY)?.is_some())
    }

    /// Cache statistics: (hits, misses, bytes held, entries).
    pub fn cache_stats(&self) -> (u64, u64, u64, u64) {
        (
            self.hits.sum(),
            self.misses.sum(),
            self.hot.weighted_size(),
            self.hot.entry_count(),
        )
    }

    /// Whether the hot cache holds every stored key (INFO `hot_cache_complete`): a node that
    /// started empty, until its cache first lets a key go; then writes of new keys skip the
    /// RocksDB read.
    pub fn hot_cache_complete(&self) -> bool {
        self.hot.is_complete()
    }

    /// Keys with an expiry in `db` (INFO keyspace `expires=`), estimated from the index.
    pub fn expires_estimate(&self, db: u8) -> u64 {
        // An estimate: if the pending changes cannot be written now, it counts without them.
        let _ = self.write_pending();
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(vec![db + 1]);
        self.db
            .iterator_cf_opt(
                rocks::cf(&self.db, rocks::CF_EXPIRY),
                opts,
                IteratorMode::From(&[db], Direction::Forward),
            )
            .take(100_000)
            .count() as u64
    }

    /// A RocksDB integer property summed over every column family (memtables, SST sizes).
    pub fn rocks_property(&self, name: &str) -> u64 {
        rocks::COLUMN_FAMILIES
            .iter()
            .chain(EXTRA_COLUMN_FAMILIES)
            .filter_map(|cf| {
                self.db
                    .property_int_value_cf(rocks::cf(&self.db, cf), name)
                    .ok()
                    .flatten()
            })
            .sum()
    }

    /// Bytes held by the block cache (one cache shared by every column family).
    pub fn block_cache_usage(&self) -> u64 {
        self.db
            .property_int_value_cf(
                rocks::cf(&self.db, rocks::CF_DATA),
                "rocksdb.block-cache-usage",
            )
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    fn write_options(&self) -> WriteOptions {
        let mut wo = WriteOptions::default();
        if self.log_is_wal.load(Ordering::Relaxed) {
            // The Raft log is the write-ahead log: applied batches skip RocksDB's WAL. After a
            // crash the column families come back together (atomic flush) at some applied
            // position, and openraft re-applies the log from there (apply is deterministic).
            wo.disable_wal(true);
        } else {
            wo.set_sync(self.fsync_policy() == FsyncPolicy::Always);
        }
        wo
    }

    /// Whether applied batches go to the pending set (written back later) rather than to
    /// RocksDB: when write-back is configured and a Raft log feeds the keyspace.
    fn defers_writes(&self) -> bool {
        self.write_back.is_some() && self.log_is_wal.load(Ordering::Relaxed)
    }

    /// INFO's `write_back`: `off`, `short` (keys are not being rewritten: the short window) or
    /// `coalescing` (the configured window).
    pub fn write_back_mode(&self) -> &'static str {
        match &self.write_back {
            None => "off",
            Some(wb) if wb.coalescing() => "coalescing",
            Some(_) => "short",
        }
    }

    /// Counts an applied batch's key writes for the write-back's choice of window.
    fn note_writes(&self, writes: usize, rewrites: usize) {
        if let Some(write_back) = &self.write_back {
            write_back.note_writes(writes, rewrites);
        }
    }

    /// Adds an applied batch's changes to the pending set.
    fn defer_changes(&self, fill: impl FnOnce(&mut Changes)) -> Result<(), StorageError> {
        match &self.write_back {
            Some(write_back) => write_back.add(fill),
            None => Ok(()),
        }
    }

    /// Writes every pending applied change to RocksDB (a no-op without write-back): before
    /// anything that reads RocksDB by iterating it, and before a batch written directly.
    pub fn write_pending(&self) -> Result<(), StorageError> {
        match &self.write_back {
            Some(write_back) => write_back.write_pending(),
            None => Ok(()),
        }
    }

    /// Declares that a Raft log (with its own WAL) feeds every write batch, so applied
    /// batches need no RocksDB WAL of their own.
    pub fn set_log_is_wal(&self, on: bool) {
        self.log_is_wal.store(on, Ordering::Relaxed);
    }

    /// Makes everything applied so far durable (all column families, atomically): called
    /// before the Raft log is purged, so the log never loses entries the data lacks.
    pub fn flush_applied(&self) -> Result<(), StorageError> {
        self.write_pending()?;
        let cfs: Vec<&rocksdb::ColumnFamily> = rocks::COLUMN_FAMILIES
            .iter()
            .map(|name| rocks::cf(&self.db, name))
            .collect();
        let mut opts = rocksdb::FlushOptions::default();
        opts.set_wait(true);
        self.db.flush_cfs_opt(&cfs, &opts)?;
        Ok(())
    }
}

/// Entries RANDOMKEY looks through at most for a live key when its first look found only
/// tombstones (kept in a database of several regions until every region has them).
pub const RANDOMKEY_FAR: usize = 100_000;

/// RANDOMKEY in a larger database picks among this many keys after its random point.
pub const RANDOMKEY_SPREAD: usize = 64;

/// Databases of at most this many keys answer RANDOMKEY by a uniform pick among all of them.
pub const RANDOMKEY_EXACT: u64 = 1024;

/// A key between `low` and `high` (`low` <= `high`), at a uniformly random point of the 8 bytes
/// after their common prefix.
fn random_between(low: &[u8], high: &[u8]) -> Vec<u8> {
    let common = low.iter().zip(high).take_while(|(a, b)| a == b).count();
    let word = |k: &[u8]| {
        let mut w = [0u8; 8];
        for (i, b) in k.iter().skip(common).take(8).enumerate() {
            w[i] = *b;
        }
        u64::from_be_bytes(w)
    };
    let (lo, hi) = (word(low), word(high));
    let point = if hi > lo {
        rand::random_range(lo..=hi)
    } else {
        lo
    };
    let mut probe = low[..common].to_vec();
    probe.extend_from_slice(&point.to_be_bytes());
    probe
}

/// Import write batches are cut at about this size.
const IMPORT_BATCH_BYTES: usize = 8 << 20;

/// Largest key or value a snapshot record may hold (bounds what a corrupt length allocates).
const MAX_SNAPSHOT_FIELD: usize = 1 << 30;

/// One record of an export stream: column family tag, key, value.
type Record = (u8, Vec<u8>, Vec<u8>);

/// One record of an export stream, or `None` at a clean end.
fn read_record(input: &mut impl Read) -> Result<Option<Record>, StorageError> {
    let mut tag = [0u8; 1];
    match input.read_exact(&mut tag) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let mut field = || -> Result<Vec<u8>, StorageError> {
        let mut len = [0u8; 4];
        input.read_exact(&mut len).map_err(truncated)?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_SNAPSHOT_FIELD {
            return Err(StorageError::SnapshotCorrupt("record field too long"));
        }
        let mut buf = vec![0u8; len];
        input.read_exact(&mut buf).map_err(truncated)?;
        Ok(buf)
    };
    let key = field()?;
    let value = field()?;
    Ok(Some((tag[0], key, value)))
}

fn truncated(e: std::io::Error) -> StorageError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        StorageError::SnapshotCorrupt("ends inside a record")
    } else {
        e.into()
    }
}

/// Stripes of a [`StripedCounter`].
const COUNTER_STRIPES: usize = 8;

/// A counter bumped from every worker thread on every read: one cache line per stripe, so
/// threads do not contend on one line.
#[derive(Default)]
struct StripedCounter {
    stripes: [CachePadded<AtomicU64>; COUNTER_STRIPES],
}

thread_local! {
    /// This thread's stripe.
    static STRIPE: usize = {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed) as usize % COUNTER_STRIPES
    };
}

impl StripedCounter {
    fn add(&self, n: u64) {
        let i = STRIPE.with(|s| *s);
        self.stripes[i].fetch_add(n, Ordering::Relaxed);
    }

    fn sum(&self) -> u64 {
        self.stripes.iter().map(|s| s.load(Ordering::Relaxed)).sum()
    }
}

/// `[db][key]` on the stack for usual key sizes: built for every GET.
fn inline_data_key(db: u8, key: &[u8]) -> SmallVec<[u8; 96]> {
    let mut data_key = SmallVec::with_capacity(1 + key.len());
    data_key.push(db);
    data_key.extend_from_slice(key);
    data_key
}

/// The highest outbox index written: the last one stored, or the trim point when the trim
/// took them all (0 when none was ever written).
fn outbox_last_index(db: &DB) -> Result<u64, StorageError> {
    let last = db
        .iterator_cf(rocks::cf(db, rocks::CF_OUTBOX), IteratorMode::End)
        .next()
        .transpose()?;
    let trimmed = db.get_cf(rocks::cf(db, rocks::CF_META), rocks::OUTBOX_TRIMMED_KEY)?;
    let as_index = |raw: &[u8]| <[u8; 8]>::try_from(raw).map_or(0, u64::from_be_bytes);
    Ok(last
        .map_or(0, |(k, _)| as_index(&k))
        .max(trimmed.map_or(0, |t| as_index(&t))))
}

/// Whether the data column family holds no key (deleted keys aside). Gives up, answering
/// false, after stepping over 10,000 deleted keys (a node must not spend its start walking
/// them), and answers false on a read error too: the cache then just starts incomplete.
fn data_is_empty(db: &DB) -> bool {
    let mut opts = ReadOptions::default();
    opts.set_max_skippable_internal_keys(10_000);
    let mut iter = db.raw_iterator_cf_opt(rocks::cf(db, rocks::CF_DATA), opts);
    iter.seek_to_first();
    !iter.valid() && iter.status().is_ok()
}

/// The `merged_hlc` meta records, by origin.
fn stored_merged_hlcs(db: &DB) -> Result<Vec<(u8, u64)>, StorageError> {
    let cf = rocks::cf(db, rocks::CF_META);
    let mut out = Vec::new();
    let iter = db.iterator_cf(
        cf,
        IteratorMode::From(rocks::MERGED_HLC_PREFIX, Direction::Forward),
    );
    for item in iter {
        let (k, v) = item?;
        let Some(origin) = k.strip_prefix(rocks::MERGED_HLC_PREFIX) else {
            break;
        };
        if let (&[origin], Ok(v)) = (origin, <[u8; 8]>::try_from(&*v)) {
            out.push((origin, u64::from_be_bytes(v)));
        }
    }
    Ok(out)
}

impl Drop for Keyspace {
    /// Stops the write-back thread, which writes what is pending first.
    fn drop(&mut self) {
        if let Some(write_back) = &self.write_back {
            write_back.close();
        }
    }
}

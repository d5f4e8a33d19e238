//! RocksDB layout: column families and key encoding.
//!
//! - `data`:   `[db u8][user key]` → [`StoredValue`](super::StoredValue) bytes
//! - `expiry`: `[db u8][expire_at u64 BE][user key]` → empty (active-expiry index, ordered by time)
//! - `meta`:   small named records (key counts per database, applied position)

use std::path::Path;

use rocksdb::{BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, Options, DB};

use super::{KeyspaceOptions, StorageError};

/// Column family of values.
pub const CF_DATA: &str = "data";
/// Column family of the expiry index.
pub const CF_EXPIRY: &str = "expiry";
/// Column family of metadata records.
pub const CF_META: &str = "meta";
/// Column family of the replication outbox: local log index → key states to ship.
pub const CF_OUTBOX: &str = "outbox";
/// Flushed files in L0 that start a compaction into the level below (RocksDB's default: 4).
pub const L0_COMPACTION_TRIGGER: i32 = 8;
/// Share of a data memtable's size given to its whole-key bloom filter (RocksDB suggests at
/// most 0.1; 8 MB memtables: 800 KB each, within the memtable budget's accounting).
pub const MEMTABLE_BLOOM_RATIO: f64 = 0.1;
/// Every column family the node opens (Raft adds its own beside these).
pub const COLUMN_FAMILIES: &[&str] = &[CF_DATA, CF_EXPIRY, CF_META, CF_OUTBOX];

/// Opens (creating if needed) the database with our column families and the configured
/// memory budget (block cache, memtables).
pub fn open(path: &Path, opts: &KeyspaceOptions, extra_cfs: &[&str]) -> Result<DB, StorageError> {
    let cache = Cache::new_lru_cache(opts.block_cache_bytes);
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(&cache);
    table.set_bloom_filter(10.0, false);
    // Index and filters live in the (bounded) block cache, partitioned into small blocks: one
    // monolithic filter of a big file is larger than a cache shard, was never cached, and was
    // re-read and checksummed on every lookup (seen as a 10x write slowdown past 1M keys).
    table.set_cache_index_and_filter_blocks(true);
    table.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
    table.set_partition_filters(true);
    table.set_metadata_block_size(4096);
    table.set_pin_top_level_index_and_filter(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);

    let mut cf_opts = Options::default();
    cf_opts.set_block_based_table_factory(&table);
    cf_opts.set_write_buffer_size(opts.write_buffer_bytes);
    cf_opts.set_max_write_buffer_number(opts.max_write_buffers);
    cf_opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    // Small memtables flush often (every 50 ms at 350k SET/s), and while the data is small
    // every L0 compaction rewrites all of it: compacting after 8 flushed files instead of 4
    // halves that work (server CPU per SET -P16 3.8 -> 3.55 us, 3 A/B rounds; writes of new
    // keys, which probe every L0 file's filter, unchanged).
    cf_opts.set_level_zero_file_num_compaction_trigger(L0_COMPACTION_TRIGGER);

    let mut db_opts = Options::default();
    db_opts.create_if_missing(true);
    db_opts.create_missing_column_families(true);
    db_opts.increase_parallelism(2);
    // One memory budget for all memtables, so the node's footprint has a fixed bound.
    db_opts.set_db_write_buffer_size(opts.write_buffer_bytes * opts.max_write_buffers as usize);
    db_opts.set_max_open_files(512);
    db_opts.set_keep_log_file_num(4);
    // Applied batches are written without RocksDB's WAL (the Raft log is the WAL): flushing
    // every column family together keeps data, expiry index and applied position consistent.
    db_opts.set_atomic_flush(true);

    let cfs = COLUMN_FAMILIES.iter().chain(extra_cfs.iter()).map(|name| {
        let mut opts = cf_opts.clone();
        if *name == CF_DATA {
            // A write of a key the hot cache does not hold reads RocksDB first (its old
            // state decides DBSIZE, the expiry index and WATCH), and for a new key that read
            // walked every memtable's skip list: 10-12 % of the Raft thread when every SET
            // writes a new key. Point lookups only: a range scan ignores the filter.
            opts.set_memtable_whole_key_filtering(true);
            opts.set_memtable_prefix_bloom_ratio(MEMTABLE_BLOOM_RATIO);
        }
        ColumnFamilyDescriptor::new(*name, opts)
    });
    DB::open_cf_descriptors(&db_opts, path, cfs).map_err(|source| StorageError::Open {
        path: path.display().to_string(),
        source,
    })
}

/// The handle of a column family created at open.
pub fn cf<'a>(db: &'a DB, name: &str) -> &'a ColumnFamily {
    db.cf_handle(name)
        .expect("every column family is created when the database is opened")
}

/// `[db][key]`: the data key.
pub fn data_key(db: u8, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + key.len());
    out.push(db);
    out.extend_from_slice(key);
    out
}

/// `[db][at][key]`: the expiry index key.
pub fn expiry_key(db: u8, at_ms: u64, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + key.len());
    out.push(db);
    out.extend_from_slice(&at_ms.to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// Splits an expiry index key into (db, at, key).
pub fn parse_expiry_key(raw: &[u8]) -> Option<(u8, u64, &[u8])> {
    if raw.len() < 9 {
        return None;
    }
    let mut at = [0u8; 8];
    at.copy_from_slice(&raw[1..9]);
    Some((raw[0], u64::from_be_bytes(at), &raw[9..]))
}

/// Meta key of the watermark of origin region `origin` (highest outbox index applied).
pub fn watermark_key(origin: u8) -> [u8; 3] {
    [b'w', b'm', origin]
}

/// Meta key of the HLC of the last entry from `origin` merged here (entries of one origin
/// carry increasing HLCs, so "merged up to HLC t" means every entry of `origin` up to t).
pub fn merged_hlc_key(origin: u8) -> [u8; 3] {
    [b'm', b'h', origin]
}

/// Prefix of the `merged_hlc_key`s.
pub const MERGED_HLC_PREFIX: &[u8] = b"mh";

/// Meta key of what region `from` reported it had merged from `origin` (an HLC), as of the
/// last entry of `from` merged here.
pub fn seen_key(from: u8, origin: u8) -> [u8; 4] {
    [b's', b'n', from, origin]
}

/// Prefix of the tombstone index: `gc` + register HLC + region + data key, one record per
/// collectable tombstone, in HLC order.
pub const TOMBSTONE_PREFIX: &[u8] = b"gc";

/// Meta key of the tombstone index record of `data_key` whose register is stamped
/// `(hlc, region)`.
pub fn tombstone_key(hlc: u64, region: u8, data_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(TOMBSTONE_PREFIX.len() + 9 + data_key.len());
    k.extend_from_slice(TOMBSTONE_PREFIX);
    k.extend_from_slice(&hlc.to_be_bytes());
    k.push(region);
    k.extend_from_slice(data_key);
    k
}

/// Splits a tombstone index record's key into (hlc, region, data key).
pub fn parse_tombstone_key(raw: &[u8]) -> Option<(u64, u8, &[u8])> {
    let rest = raw.strip_prefix(TOMBSTONE_PREFIX)?;
    if rest.len() < 10 {
        return None;
    }
    let hlc = u64::from_be_bytes(rest[..8].try_into().ok()?);
    Some((hlc, rest[8], &rest[9..]))
}

/// Meta key present while a snapshot import is under way.
pub const IMPORT_MARKER_KEY: &[u8] = b"import_in_progress";

/// Meta key of the highest outbox index trimmed.
pub const OUTBOX_TRIMMED_KEY: &[u8] = b"outbox_trimmed";

/// Meta key of the key count of database `db`.
pub fn count_key(db: u8) -> [u8; 6] {
    [b'c', b'o', b'u', b'n', b't', db]
}

/// Prefix of the meta keys of the churn counters (see `Keyspace::churn`).
pub const CHURN_PREFIX: &[u8] = b"churn";

/// Meta key of the churn epoch: the log index of the `Op::ChurnEpoch` that zeroed the counters
/// (see `Keyspace::churn_epoch`). Sorts after every counter key (`churn` + two bytes).
pub const CHURN_EPOCH_KEY: &[u8] = b"churn_epoch";

/// Meta key of churn counter `slot`.
pub fn churn_key(slot: u16) -> [u8; 7] {
    let [hi, lo] = slot.to_be_bytes();
    [b'c', b'h', b'u', b'r', b'n', hi, lo]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tombstone_keys_sort_by_hlc_and_parse_back() {
        let a = tombstone_key(5, 1, b"\x00zzz");
        let b = tombstone_key(6, 0, b"\x00aaa");
        assert!(a < b);
        assert_eq!(parse_tombstone_key(&a), Some((5, 1, &b"\x00zzz"[..])));
        assert!(parse_tombstone_key(b"gcshort").is_none());
        assert!(parse_tombstone_key(b"count\x00").is_none());
    }

    #[test]
    fn expiry_keys_sort_by_time_within_a_db() {
        let a = expiry_key(0, 5, b"zzz");
        let b = expiry_key(0, 6, b"aaa");
        assert!(a < b);
        assert_eq!(parse_expiry_key(&a), Some((0, 5, &b"zzz"[..])));
        assert!(parse_expiry_key(b"short").is_none());
    }
}

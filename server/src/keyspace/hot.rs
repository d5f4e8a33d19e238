//! The hot cache: moka in front of RocksDB reads, bounded by bytes.
//!
//! A read that misses fills the cache only if no write batch landed while it read RocksDB
//! (a generation counter checked under `fill_lock`), so a slow reader can never put an old
//! value over a newer one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use moka::sync::Cache;

use super::StoredValue;

/// Bytes charged per entry on top of key and value: moka's node, its access-order deque
/// entry, the key's and the value's shared buffers and allocator rounding. Measured: about
/// 430 bytes per entry beyond key + value (200k entries of 100-byte values: 574 B each in RSS).
const ENTRY_OVERHEAD: usize = 430;

/// What the cache knows about a key: its value, or that it does not exist (so a GET of a
/// missing key does not go to RocksDB every time).
pub type Cached = Option<StoredValue>;

/// moka keyed by the encoded data key, holding stored values.
pub struct HotCache {
    cache: Cache<Bytes, Cached, ahash::RandomState>,
    generation: AtomicU64,
    fill_lock: Mutex<()>,
}

impl HotCache {
    /// A cache holding at most `max_bytes` of keys and values.
    pub fn new(max_bytes: u64) -> HotCache {
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &Bytes, v: &Cached| {
                let value_len = v.as_ref().map_or(0, StoredValue::len);
                u32::try_from(k.len() + value_len + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
            })
            .build_with_hasher(ahash::RandomState::new());
        HotCache {
            cache,
            generation: AtomicU64::new(0),
            fill_lock: Mutex::new(()),
        }
    }

    /// Looks a key up: `None` = not cached, `Some(None)` = known not to exist.
    pub fn get(&self, data_key: &[u8]) -> Option<Cached> {
        self.cache.get(data_key)
    }

    /// The generation to pass to [`HotCache::fill`] after a storage read.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Inserts what storage said (a value or its absence), unless a write batch was applied
    /// since `generation`.
    pub fn fill(&self, generation: u64, data_key: &[u8], value: Cached) {
        let _guard = self.fill_lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.generation.load(Ordering::Acquire) == generation {
            self.cache.insert(Bytes::copy_from_slice(data_key), value);
        }
    }

    /// Publishes the effects of an applied write batch: `None` records the key as absent.
    pub fn publish<'a>(
        &self,
        flushed: bool,
        changes: impl Iterator<Item = (&'a Bytes, &'a Option<StoredValue>)>,
    ) {
        let _guard = self.fill_lock.lock().unwrap_or_else(|p| p.into_inner());
        if flushed {
            self.cache.invalidate_all();
        }
        for (key, value) in changes {
            self.cache.insert(key.clone(), value.clone());
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Approximate bytes held (for INFO).
    pub fn weighted_size(&self) -> u64 {
        self.cache.weighted_size()
    }

    /// Entries held (for INFO).
    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }
}

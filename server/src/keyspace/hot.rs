//! The hot cache: moka in front of RocksDB reads, bounded by bytes.
//!
//! A read that misses fills the cache only if no write batch landed while it read RocksDB
//! (a generation counter checked under `fill_lock`), so a slow reader can never put an old
//! value over a newer one.
//!
//! Each cached key is a [`Slot`] that the apply may overwrite in place: a write batch that
//! read a key from the cache stores the key's new value into the slot it read instead of
//! inserting a new entry into moka (an insert is a second hash-table probe, a write-order
//! record and housekeeping work: about a quarter of the Raft thread's time under a SET load).
//! That is only safe while the slot is still the one moka holds for the key; a slot is
//! replaced in moka only by an insert (a read fill or a batch's publish) or an invalidation,
//! so a batch reuses slots only if none happened since it began reading (`replacements`,
//! checked under `fill_lock`). A slot moka evicted meanwhile takes the value harmlessly:
//! a reader that still finds it reads the newest value, and one that missed it reads storage
//! (the pending write-back set, then RocksDB), which already holds the batch.
//!
//! Lookups go through an index of the slots moka holds (a `papaya` map, kept in step by
//! inserting there before moka and by moka's eviction listener, which removes a slot only if
//! the index still holds that very slot) instead of `moka::Cache::get`: moka records every
//! read for its eviction policy and replays the records into its LRU and frequency structures,
//! about a fifth of a GET's CPU time under load. Lookups read only the index (an insert reaches
//! it before moka: reading both could go back from a newer slot to an older one); one lookup in
//! [`RECORD_EVERY`] per thread (one of the apply's in [`RECORD_WRITE_EVERY`]) also asks moka, so
//! moka keeps choosing what to keep and what to evict from a sample of the accesses. Entries,
//! their weights and the byte bound remain moka's.
//!
//! A cache over storage that started empty holds every stored key until a key first leaves
//! it (evicted, refused, invalidated): while it is [complete](HotCache::is_complete), a key
//! it does not hold does not exist, and a write of a new key need not ask RocksDB (every
//! level-0 file's filter, then every level's) whether it did. The flag goes down for good
//! before the first slot leaves the index, so a lookup that missed and then reads the flag
//! up cannot have missed a slot that was taken out.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use moka::notification::RemovalCause;
use moka::sync::Cache;
use smallvec::SmallVec;

use super::StoredValue;

/// Bytes charged per entry on top of key and value: moka's node, its access-order deque
/// entry, the key's allocations (in moka and in the index), the slot (which holds values up
/// to 191 bytes; longer ones have a shared buffer of their own), the index entry and allocator
/// rounding. Measured: about 430 bytes per entry beyond key + value (200k entries of 100-byte
/// values: 574 B each in RSS) before slots existed; a slot added one 64-byte allocation, the
/// index about 96 bytes (RSS +9.7 MiB with 105k entries held). Values moving into the slots
/// took RSS from 159 to 150 MiB with the same 91k entries of 100-byte values (one allocation
/// instead of two).
const ENTRY_OVERHEAD: usize = 590;

/// What the cache knows about a key: its value, or that it does not exist (so a GET of a
/// missing key does not go to RocksDB every time).
pub type Cached = Option<StoredValue>;

/// One cached key: its value, overwritten in place by the apply while its size allows.
///
/// A value whose encoding fits the slot's room lives inside the slot's own allocation (rooms
/// of 63, 127 and 191 bytes, so a slot fills a 128-, 192- or 256-byte allocator class); a
/// lookup then reads the key's value where it already locked the slot, instead of missing the
/// cache once more on a buffer of its own (server CPU per request under -P16: GET about 3 %
/// less, SET about 6 % less). Longer values are shared.
pub type Slot = SlotOf<[u8]>;

/// A [`Slot`] with room of type `R` (`[u8; N]`, unsized to `[u8]` behind the `Arc`).
pub struct SlotOf<R: ?Sized> {
    /// The value length moka charged for this slot (its weight was computed at insert).
    charged_len: u32,
    /// When an applied write last stored this slot, in ms on the cache's clock (0: only a read
    /// filled it). Tells the write-back whether keys are being rewritten (see `publish`).
    written_at: AtomicU32,
    held: Mutex<Held<R>>,
}

/// What a slot holds: nothing known to exist ([`ABSENT`]), an encoding of `len` bytes in
/// `room`, or a longer encoding in `shared`.
struct Held<R: ?Sized> {
    shared: Option<StoredValue>,
    len: u8,
    room: R,
}

/// `Held::len` of a key known not to exist.
const ABSENT: u8 = u8::MAX;

impl Slot {
    /// A slot holding `value`, stored by an applied write at `written_at` (0: filled by a read).
    fn new(value: Cached, written_at: u32) -> Arc<Slot> {
        match value.as_ref().map_or(0, StoredValue::len) {
            1..=63 => SlotOf::<[u8; 63]>::with(value, written_at),
            64..=127 => SlotOf::<[u8; 127]>::with(value, written_at),
            128..=191 => SlotOf::<[u8; 191]>::with(value, written_at),
            // Nothing to hold in a room: absent, or shared.
            _ => SlotOf::<[u8; 0]>::with(value, written_at),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held<[u8]>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value held.
    pub fn value(&self) -> Cached {
        let held = self.lock();
        if let Some(shared) = &held.shared {
            return Some(shared.clone());
        }
        match held.len {
            ABSENT => None,
            len => Some(StoredValue::copy_of(&held.room[..usize::from(len)])),
        }
    }

    /// Runs `f` on the held encoding (`None`: known not to exist) without copying it out:
    /// under the slot's lock for a value in the room (at most 191 bytes), on a shared value
    /// after the lock is released (so a large one does not hold the apply up).
    pub fn with_encoded<R>(&self, f: impl FnOnce(Option<&[u8]>) -> R) -> R {
        let held = self.lock();
        if let Some(shared) = held.shared.clone() {
            drop(held);
            return f(Some(shared.as_bytes()));
        }
        match held.len {
            ABSENT => f(None),
            len => f(Some(&held.room[..usize::from(len)])),
        }
    }

    /// Replaces the held value (the caller checked [`Slot::fits`]).
    fn store(&self, value: &Cached) {
        self.lock().put(value);
    }

    /// True when `value` may replace the held one without re-weighing: not larger than what
    /// moka charged (the byte bound holds) and not under half of it (the charge stays close).
    fn fits(&self, value: &Cached) -> bool {
        let len = value.as_ref().map_or(0, StoredValue::len);
        let charged = self.charged_len as usize;
        len <= charged && len * 2 >= charged
    }
}

impl<const N: usize> SlotOf<[u8; N]> {
    /// A slot with room for `N` bytes holding `value`.
    fn with(value: Cached, written_at: u32) -> Arc<Slot> {
        let mut held = Held {
            shared: None,
            len: ABSENT,
            room: [0u8; N],
        };
        (&mut held as &mut Held<[u8]>).put(&value);
        Arc::new(SlotOf {
            // Values past 4 GiB do not exist (strings are at most 512 MiB).
            charged_len: u32::try_from(value.as_ref().map_or(0, StoredValue::len))
                .unwrap_or(u32::MAX),
            written_at: AtomicU32::new(written_at),
            held: Mutex::new(held),
        })
    }
}

impl Held<[u8]> {
    /// Holds `value`: in the room when it fits, shared otherwise.
    fn put(&mut self, value: &Cached) {
        match value {
            None => {
                self.shared = None;
                self.len = ABSENT;
            }
            Some(v) if v.len() <= self.room.len() => {
                self.room[..v.len()].copy_from_slice(v.as_bytes());
                self.len = v.len() as u8;
                self.shared = None;
            }
            Some(v) => self.shared = Some(v.clone()),
        }
    }
}

/// Key bytes held inside a cached key itself rather than in a buffer of their own.
const KEY_INLINE: usize = 32;

/// A cached key: the encoded data key, inline up to [`KEY_INLINE`] bytes. moka (behind an `Arc`
/// of its own) and the index (in its entry) each hold one; with the bytes inline a lookup
/// compares them in that allocation instead of following one more pointer (with `Bytes` keys
/// that miss was about a tenth of a GET's CPU time under load).
pub(super) type HotKey = SmallVec<[u8; KEY_INLINE]>;

/// One lookup in this many (per thread) is recorded by moka for its eviction policy. A recorded
/// lookup costs about as much as the rest of a cached GET (moka's hash-table probe, its read
/// record and the replay of the records into its LRU and frequency structures): at one in 8
/// the recording was 9 % of the connection threads' time under GET -P16; at one in 32 a GET
/// takes about 7 % less server CPU. Keys read often are still sampled often.
const RECORD_EVERY: u32 = 32;

/// One in this many of the apply's lookups (per thread) is recorded by moka. A written key is
/// not being read, but one written often should stay cached (its next write then finds its
/// old state here), so writes are sampled too, more sparsely: at one in 32 the recording was
/// about 4.5 % of a three-node region leader's Raft thread under SET -P16.
const RECORD_WRITE_EVERY: u32 = 256;

thread_local! {
    /// Lookups this thread made since its last recorded one.
    static UNRECORDED: Cell<u32> = const { Cell::new(0) };
}

/// Asks the CPU to bring `len` bytes from `ptr` into its caches, without waiting for them.
#[inline]
pub(super) fn prefetch(ptr: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    for offset in (0..len).step_by(64) {
        // SAFETY: a prefetch is a hint: it never faults and reads nothing the program sees,
        // whatever the address (computed with wrapping arithmetic, never dereferenced).
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                ptr.wrapping_add(offset).cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (ptr, len);
}

/// True for the lookups moka should record (one in `every` of this thread's).
fn record_this_lookup(every: u32) -> bool {
    UNRECORDED.with(|n| {
        let next = n.get() + 1;
        let record = next >= every;
        n.set(if record { 0 } else { next });
        record
    })
}

/// moka keyed by the encoded data key, holding a slot per key, and the index lookups read.
pub struct HotCache {
    cache: Cache<HotKey, Arc<Slot>, ahash::RandomState>,
    /// The slots moka holds, by key (see the module doc).
    index: Arc<SlotIndex>,
    generation: AtomicU64,
    /// moka inserts and invalidations so far (changed only under `fill_lock`).
    replacements: AtomicU64,
    fill_lock: Mutex<()>,
    /// The clock of the slots' `written_at`.
    clock: Instant,
    /// See [`HotCache::set_rewrite_window`].
    rewrite_window_ms: AtomicU32,
    /// See [`HotCache::is_complete`]; shared with moka's eviction listener.
    complete: Arc<AtomicBool>,
}

/// The index of the slots moka holds.
type SlotIndex = papaya::HashMap<HotKey, Arc<Slot>, ahash::RandomState>;

/// One key's change in an applied write batch, for [`HotCache::publish`].
pub struct Change<'a> {
    /// The encoded data key.
    pub key: &'a [u8],
    /// The new value (`None`: the key no longer exists).
    pub value: &'a Cached,
    /// The slot the batch read the key's old value from, if it came from the cache.
    pub slot: Option<&'a Arc<Slot>>,
}

impl HotCache {
    /// A cache holding at most `max_bytes` of keys and values.
    pub fn new(max_bytes: u64) -> HotCache {
        let index = Arc::new(SlotIndex::with_hasher(ahash::RandomState::new()));
        let evicted_from = index.clone();
        let complete = Arc::new(AtomicBool::new(false));
        let lost_key = complete.clone();
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|k: &HotKey, slot: &Arc<Slot>| {
                u32::try_from(k.len() + slot.charged_len as usize + ENTRY_OVERHEAD)
                    .unwrap_or(u32::MAX)
            })
            // Every slot leaving moka (evicted, refused at admission, replaced, invalidated)
            // leaves the index, unless the index already holds a newer slot for the key.
            .eviction_listener(move |key: Arc<HotKey>, slot: Arc<Slot>, cause| {
                let index = evicted_from.pin();
                // A replaced slot's key keeps its newer slot; any other removal may take the
                // key out: the cache stops being complete before it does.
                if cause != RemovalCause::Replaced
                    || index
                        .get(&key[..])
                        .is_some_and(|held| Arc::ptr_eq(held, &slot))
                {
                    lost_key.store(false, Ordering::SeqCst);
                }
                let _ = index.remove_if(&key[..], |_, held| Arc::ptr_eq(held, &slot));
            })
            .build_with_hasher(ahash::RandomState::new());
        HotCache {
            cache,
            index,
            generation: AtomicU64::new(0),
            replacements: AtomicU64::new(0),
            fill_lock: Mutex::new(()),
            clock: Instant::now(),
            rewrite_window_ms: AtomicU32::new(0),
            complete,
        }
    }

    /// Tells a new cache that storage holds no key yet: from now on, until a key first leaves
    /// the cache, every stored key has an entry here (see [`HotCache::is_complete`]).
    pub fn storage_is_empty(&self) {
        self.complete.store(true, Ordering::SeqCst);
    }

    /// Whether every key in storage has an entry in the cache (a value, or the fact that it was
    /// deleted), so that a key the cache does not hold does not exist. True from
    /// [`HotCache::storage_is_empty`] until a key first leaves the cache or storage is written
    /// around it ([`HotCache::mark_incomplete`]); never true again. Writes publish their keys
    /// only after storage has them: a key written but not yet published reads as absent, its
    /// state before the write. Read this after the lookup that missed, and look again after it
    /// before concluding (see [`super::Keyspace`]'s storage read).
    pub fn is_complete(&self) -> bool {
        self.complete.load(Ordering::SeqCst)
    }

    /// Runs moka's pending evictions and their listener now (tests).
    #[cfg(test)]
    pub(super) fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks();
    }

    /// The cache no longer holds every stored key: storage is about to get keys around it (a
    /// snapshot installed), or the cache is dropping keys that other databases keep (a flush).
    pub fn mark_incomplete(&self) {
        self.complete.store(false, Ordering::SeqCst);
    }

    /// Counts, from now on, a write that stores a slot written less than `ms` ago as a
    /// rewrite (see [`HotCache::publish`]; 0: none is).
    pub fn set_rewrite_window(&self, ms: u32) {
        self.rewrite_window_ms.store(ms, Ordering::Relaxed);
    }

    /// Milliseconds on the cache's clock, never 0 (it wraps after 49 days; only differences
    /// under a window are compared).
    fn clock_ms(&self) -> u32 {
        (self.clock.elapsed().as_millis() as u32).max(1)
    }

    /// Looks a key up: `None` = not cached, `Some(None)` = known not to exist.
    pub fn get(&self, data_key: &[u8]) -> Option<Cached> {
        self.lookup(data_key, RECORD_EVERY, |slot| slot.value())
    }

    /// Looks a key up and runs `f` on its encoding where the cache holds it (`None` inside:
    /// known not to exist); `None` when the key is not cached.
    pub fn read_with<R>(&self, data_key: &[u8], f: impl FnOnce(Option<&[u8]>) -> R) -> Option<R> {
        self.lookup(data_key, RECORD_EVERY, |slot| slot.with_encoded(f))
    }

    /// Looks a key's slot up (for the apply, which may overwrite it; see the module doc),
    /// recorded more sparsely than a read (see [`RECORD_WRITE_EVERY`]).
    pub fn slot(&self, data_key: &[u8]) -> Option<Arc<Slot>> {
        self.lookup(data_key, RECORD_WRITE_EVERY, Arc::clone)
    }

    /// Touches the index entries and slots of `keys` (database, key) without recording or
    /// returning anything, so that the lookups made next (a write batch's, pipelined GETs',
    /// MGET's) find them in the CPU's caches: one key's lookup misses the cache several times
    /// in a row, and here the misses of different keys overlap instead of following each other.
    pub fn warm<'k>(&self, keys: impl Iterator<Item = (u8, &'k [u8])>) {
        let index = self.index.pin();
        let mut data_key = Vec::with_capacity(64);
        for (db, key) in keys {
            data_key.clear();
            data_key.push(db);
            data_key.extend_from_slice(key);
            if let Some(slot) = index.get(data_key.as_slice()) {
                // From the Arc's counts (16 bytes before the slot), which the lookup bumps.
                let start = Arc::as_ptr(slot).cast::<u8>().wrapping_sub(16);
                prefetch(start, 16 + std::mem::size_of_val::<Slot>(slot));
            }
        }
    }

    /// Finds `data_key`'s slot in the index, the one place lookups read: an insert changes
    /// the index before moka, so a read through moka could see an older slot after another
    /// read saw the newer one. One lookup in `every` also asks moka, only so that moka
    /// records the access.
    fn lookup<R>(
        &self,
        data_key: &[u8],
        every: u32,
        read: impl FnOnce(&Arc<Slot>) -> R,
    ) -> Option<R> {
        if record_this_lookup(every) {
            let _ = self.cache.get(data_key);
        }
        self.index.pin().get(data_key).map(read)
    }

    /// Inserts a new slot for `key`: into the index first, so moka's listener, which runs
    /// when moka refuses or later drops the slot, always finds it there to remove.
    fn insert(&self, key: &[u8], value: Cached, written_at: u32) {
        let slot = Slot::new(value, written_at);
        self.index
            .pin()
            .insert(HotKey::from_slice(key), slot.clone());
        self.cache.insert(HotKey::from_slice(key), slot);
    }

    /// The generation to pass to [`HotCache::fill`] after a storage read.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The count to pass to [`HotCache::publish`], taken before a batch reads the cache.
    pub fn replacements(&self) -> u64 {
        self.replacements.load(Ordering::Acquire)
    }

    /// Inserts what storage said (a value or its absence), unless a write batch was applied
    /// since `generation`.
    pub fn fill(&self, generation: u64, data_key: &[u8], value: Cached) {
        let _guard = self.fill_lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.generation.load(Ordering::Acquire) == generation {
            self.replacements.fetch_add(1, Ordering::AcqRel);
            self.insert(data_key, value, 0);
        }
    }

    /// Publishes the effects of an applied write batch that began reading the cache when
    /// [`HotCache::replacements`] said `replacements_before` (`flushed`: a database was
    /// emptied). Returns how many of the changes were rewrites: stored into a slot that an
    /// applied write had stored less than the rewrite window ago.
    pub fn publish<'a>(
        &self,
        flushed: bool,
        replacements_before: u64,
        changes: impl Iterator<Item = Change<'a>>,
    ) -> usize {
        let _guard = self.fill_lock.lock().unwrap_or_else(|p| p.into_inner());
        // Nothing replaced a slot the batch read: those slots are still moka's.
        let slots_current =
            !flushed && self.replacements.load(Ordering::Acquire) == replacements_before;
        if flushed {
            // Other databases keep their keys while the whole cache is dropped.
            self.mark_incomplete();
            self.cache.invalidate_all();
            self.index.pin().clear();
        }
        let mut inserted = false;
        let now = self.clock_ms();
        let window = self.rewrite_window_ms.load(Ordering::Relaxed);
        let mut rewrites = 0;
        for change in changes {
            match change.slot {
                Some(slot) if slots_current && slot.fits(change.value) => {
                    slot.store(change.value);
                    let before = slot.written_at.swap(now, Ordering::Relaxed);
                    if before != 0 && now.wrapping_sub(before) < window {
                        rewrites += 1;
                    }
                }
                _ => {
                    inserted = true;
                    self.insert(change.key, change.value.clone(), now);
                }
            }
        }
        if flushed || inserted {
            self.replacements.fetch_add(1, Ordering::AcqRel);
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        rewrites
    }

    /// The bytes charged against the bound for an entry of this key and value length (MEMORY
    /// USAGE).
    pub fn charge(data_key_len: usize, value_len: usize) -> u64 {
        (data_key_len + value_len + ENTRY_OVERHEAD) as u64
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyspace::value::ValueType;

    fn value(payload: &str) -> Cached {
        Some(StoredValue::new(
            ValueType::String,
            None,
            payload.as_bytes(),
        ))
    }

    fn payload(cached: Option<Cached>) -> Option<Vec<u8>> {
        cached
            .flatten()
            .and_then(|v| v.state().visible())
            .map(|b| b.to_vec())
    }

    /// A cache holding one key (filled from storage) with `payload`.
    fn cache_holding(payload: &str) -> (HotCache, &'static [u8]) {
        let hot = HotCache::new(1 << 20);
        let key: &'static [u8] = b"\0k";
        hot.fill(hot.generation(), key, value(payload));
        (hot, key)
    }

    /// Publishes one key's new value as a batch that read `slot` when the count was `before`.
    fn publish(
        hot: &HotCache,
        before: u64,
        key: &[u8],
        new: &Cached,
        slot: Option<&Arc<Slot>>,
    ) -> usize {
        let change = Change {
            key,
            value: new,
            slot,
        };
        hot.publish(false, before, std::iter::once(change))
    }

    #[test]
    fn a_write_within_the_window_of_the_last_is_a_rewrite() {
        let (hot, key) = cache_holding("aaaa");
        hot.set_rewrite_window(60_000);
        // Filled by a read, then written: not a rewrite; written again at once: one.
        let slot = hot.slot(key).unwrap();
        assert_eq!(
            publish(&hot, hot.replacements(), key, &value("bbbb"), Some(&slot)),
            0
        );
        assert_eq!(
            publish(&hot, hot.replacements(), key, &value("cccc"), Some(&slot)),
            1
        );
        // A key the cache did not hold is inserted: not a rewrite, but its next write is.
        let other: &[u8] = b"\0other";
        assert_eq!(
            publish(&hot, hot.replacements(), other, &value("x"), None),
            0
        );
        let slot = hot.slot(other).unwrap();
        assert_eq!(
            publish(&hot, hot.replacements(), other, &value("y"), Some(&slot)),
            1
        );
        // With no window, nothing is.
        hot.set_rewrite_window(0);
        assert_eq!(
            publish(&hot, hot.replacements(), other, &value("z"), Some(&slot)),
            0
        );
    }

    #[test]
    fn a_batch_overwrites_the_slot_it_read_in_place() {
        let (hot, key) = cache_holding("aaaa");
        let before = hot.replacements();
        let slot = hot.slot(key).unwrap();
        publish(&hot, before, key, &value("bbbb"), Some(&slot));
        assert_eq!(payload(hot.get(key)), Some(b"bbbb".to_vec()));
        // The same slot took the value: nothing was inserted.
        assert!(Arc::ptr_eq(&slot, &hot.slot(key).unwrap()));
        assert_eq!(hot.replacements(), before);
    }

    #[test]
    fn slots_fill_their_allocator_classes_and_keep_every_size() {
        // The Arc's two counts come on top of the slot.
        let arc = |size: usize| size + 16;
        assert!(arc(std::mem::size_of::<SlotOf<[u8; 63]>>()) <= 128);
        assert!(arc(std::mem::size_of::<SlotOf<[u8; 127]>>()) <= 192);
        assert!(arc(std::mem::size_of::<SlotOf<[u8; 191]>>()) <= 256);
        // Values in every room and beyond it, and their absence, read back as held; an
        // in-place store moves a value between the room and the shared form.
        for len in [0, 1, 20, 28, 29, 92, 93, 156, 157, 400] {
            let v = value(&"x".repeat(len));
            let slot = Slot::new(v.clone(), 0);
            assert_eq!(slot.value(), v, "{len}");
            let shorter = value(&"y".repeat(len * 3 / 4));
            slot.store(&shorter);
            assert_eq!(slot.value(), shorter, "{len}");
        }
        let slot = Slot::new(None, 0);
        assert_eq!(slot.value(), None);
        let big = Slot::new(value(&"z".repeat(300)), 0);
        big.store(&None);
        assert_eq!(big.value(), None);
    }

    #[test]
    fn warming_keys_changes_nothing() {
        let (hot, key) = cache_holding("aaaa");
        let before = (hot.replacements(), hot.generation());
        // Held and missing keys, in the database byte + key form the index uses.
        hot.warm([(0u8, &b"k"[..]), (0, b"missing"), (3, b"k")].into_iter());
        assert_eq!((hot.replacements(), hot.generation()), before);
        assert_eq!(payload(hot.get(key)), Some(b"aaaa".to_vec()));
        assert!(hot.slot(b"\0missing").is_none());
    }

    #[test]
    fn a_fill_after_the_batch_read_makes_it_insert_instead() {
        let (hot, key) = cache_holding("aaaa");
        let before = hot.replacements();
        let read_by_batch = hot.slot(key).unwrap();
        // The key is evicted and a reader fills it again (with what storage held then).
        hot.cache.invalidate(key);
        hot.fill(hot.generation(), key, value("aaaa"));
        publish(&hot, before, key, &value("bbbb"), Some(&read_by_batch));
        assert_eq!(payload(hot.get(key)), Some(b"bbbb".to_vec()));
        assert!(!Arc::ptr_eq(&read_by_batch, &hot.slot(key).unwrap()));
    }

    #[test]
    fn a_value_that_does_not_fit_the_charged_size_is_inserted_anew() {
        let (hot, key) = cache_holding("aaaa");
        let slot = hot.slot(key).unwrap();
        let longer = value(&"b".repeat(100));
        publish(&hot, hot.replacements(), key, &longer, Some(&slot));
        let now = hot.slot(key).unwrap();
        assert!(!Arc::ptr_eq(&slot, &now));
        assert_eq!(now.charged_len as usize, longer.as_ref().unwrap().len());
        // Deleting (no value) is far under half the charge: inserted anew as well.
        publish(&hot, hot.replacements(), key, &None, Some(&now));
        assert!(!Arc::ptr_eq(&now, &hot.slot(key).unwrap()));
        assert_eq!(hot.get(key), Some(None));
    }

    #[test]
    fn a_flush_never_writes_into_old_slots() {
        let (hot, key) = cache_holding("aaaa");
        let before = hot.replacements();
        let slot = hot.slot(key).unwrap();
        let change = Change {
            key,
            value: &value("bbbb"),
            slot: Some(&slot),
        };
        hot.publish(true, before, std::iter::once(change));
        assert_eq!(payload(hot.get(key)), Some(b"bbbb".to_vec()));
        assert!(!Arc::ptr_eq(&slot, &hot.slot(key).unwrap()));
        assert!(hot.replacements() > before);
    }

    /// Every key the index holds is one moka holds, with the same slot.
    fn assert_index_matches_moka(hot: &HotCache) {
        hot.cache.run_pending_tasks();
        let index = hot.index.pin();
        assert_eq!(index.len() as u64, hot.cache.entry_count());
        for (key, slot) in index.iter() {
            let held = hot.cache.get(&key[..]).expect("indexed key is in moka");
            assert!(Arc::ptr_eq(slot, &held));
        }
    }

    #[test]
    fn slots_moka_evicts_or_refuses_leave_the_index() {
        // Room for about 20 entries of this size: most of the 2,000 are evicted or refused.
        let hot = HotCache::new(20 * (ENTRY_OVERHEAD as u64 + 64));
        for i in 0..2000u32 {
            let key = format!("\0key:{i}");
            hot.fill(hot.generation(), key.as_bytes(), value("0123456789"));
            if i % 100 == 0 {
                hot.cache.run_pending_tasks();
            }
        }
        assert!(hot.cache.entry_count() < 100, "{}", hot.cache.entry_count());
        assert_index_matches_moka(&hot);
        // Lookups (through the index, and a sample of them through moka) agree with moka.
        for i in 0..2000u32 {
            let key = format!("\0key:{i}");
            let in_moka = hot.cache.contains_key(key.as_bytes());
            assert_eq!(hot.get(key.as_bytes()).is_some(), in_moka, "{key}");
        }
    }

    #[test]
    fn replaced_and_flushed_slots_leave_the_index() {
        let (hot, key) = cache_holding("aaaa");
        // An insert over the key (a value that does not fit the slot) replaces its slot.
        let slot = hot.slot(key).unwrap();
        publish(
            &hot,
            hot.replacements(),
            key,
            &value(&"b".repeat(50)),
            Some(&slot),
        );
        assert_index_matches_moka(&hot);
        assert!(!Arc::ptr_eq(&slot, &hot.slot(key).unwrap()));
        // A flush empties both.
        hot.publish(true, 0, std::iter::empty());
        hot.cache.run_pending_tasks();
        assert_eq!(hot.index.pin().len(), 0);
        assert_eq!(hot.get(key), None);
    }

    #[test]
    fn concurrent_fills_and_publishes_keep_the_index_and_the_values_right() {
        use std::collections::HashMap;
        // Room for about 40 of the 400 keys: fills, in-place writes, inserts and evictions
        // all race. The writer is the one applier, as the Raft thread is; "storage" stands for
        // RocksDB (written before the publish, read by a reader before its fill).
        let hot = Arc::new(HotCache::new(40 * (ENTRY_OVERHEAD as u64 + 48)));
        let storage: Arc<Mutex<HashMap<Vec<u8>, Cached>>> = Arc::default();
        let key_of = |i: u64| format!("\0k{}", i % 400).into_bytes();
        let writer = {
            let (hot, storage) = (hot.clone(), storage.clone());
            std::thread::spawn(move || {
                for i in 0..20_000u64 {
                    let key = key_of(i.wrapping_mul(7919));
                    let before = hot.replacements();
                    let slot = hot.slot(&key);
                    let new = value(&i.to_string());
                    storage.lock().unwrap().insert(key.clone(), new.clone());
                    let change = Change {
                        key: &key,
                        value: &new,
                        slot: slot.as_ref(),
                    };
                    hot.publish(false, before, std::iter::once(change));
                }
            })
        };
        let readers: Vec<_> = (0..2u64)
            .map(|r| {
                let (hot, storage) = (hot.clone(), storage.clone());
                std::thread::spawn(move || {
                    for i in 0..20_000u64 {
                        let key = key_of(i.wrapping_mul(104_729) + r);
                        if hot.get(&key).is_none() {
                            let generation = hot.generation();
                            let stored = storage.lock().unwrap().get(&key).cloned().flatten();
                            hot.fill(generation, &key, stored);
                        }
                    }
                })
            })
            .collect();
        writer.join().unwrap();
        for r in readers {
            r.join().unwrap();
        }
        assert_index_matches_moka(&hot);
        let storage = storage.lock().unwrap();
        for i in 0..400u64 {
            let key = key_of(i);
            if let Some(cached) = hot.get(&key) {
                assert_eq!(cached, storage.get(&key).cloned().flatten(), "key {i}");
            }
        }
    }
}

//! Hybrid logical clock (HLC).
//!
//! A [`Timestamp`] packs 48 bits of physical time (milliseconds since the Unix epoch) and a
//! 16-bit logical counter into one `u64`, so timestamps compare as plain integers. An [`Hlc`]
//! hands out strictly increasing timestamps even when the wall clock stalls or jumps back, and
//! merges timestamps seen from other nodes ([`Hlc::observe`]) so that causally later events get
//! larger stamps. When the logical counter overflows it carries into the physical part: the
//! clock then runs slightly ahead of the wall clock until the wall clock catches up.
//!
//! The physical clock is injectable ([`PhysicalClock`]) so tests can drive it.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Bits of the logical counter.
pub const LOGICAL_BITS: u32 = 16;
/// Largest physical time representable (48 bits of milliseconds: year 10889).
pub const MAX_PHYSICAL_MS: u64 = (1 << 48) - 1;
const LOGICAL_MASK: u64 = (1 << LOGICAL_BITS) - 1;

/// An HLC timestamp: `physical_ms << 16 | logical`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The smallest timestamp.
    pub const ZERO: Timestamp = Timestamp(0);
    /// The largest timestamp.
    pub const MAX: Timestamp = Timestamp(u64::MAX);

    /// Builds a timestamp; `physical_ms` is truncated to 48 bits.
    pub const fn new(physical_ms: u64, logical: u16) -> Timestamp {
        Timestamp(((physical_ms & MAX_PHYSICAL_MS) << LOGICAL_BITS) | logical as u64)
    }

    /// Physical part, milliseconds since the Unix epoch.
    pub const fn physical_ms(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    /// Logical part.
    pub const fn logical(self) -> u16 {
        (self.0 & LOGICAL_MASK) as u16
    }

    /// The raw `u64`.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// The next timestamp (saturating at [`Timestamp::MAX`]).
    pub const fn successor(self) -> Timestamp {
        Timestamp(self.0.saturating_add(1))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.physical_ms(), self.logical())
    }
}

impl From<u64> for Timestamp {
    fn from(v: u64) -> Self {
        Timestamp(v)
    }
}

impl From<Timestamp> for u64 {
    fn from(t: Timestamp) -> Self {
        t.0
    }
}

/// A source of physical time in milliseconds since the Unix epoch.
pub trait PhysicalClock: Send + Sync + 'static {
    /// Current physical time in milliseconds.
    fn now_ms(&self) -> u64;
}

/// The system wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl PhysicalClock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

impl<F> PhysicalClock for F
where
    F: Fn() -> u64 + Send + Sync + 'static,
{
    fn now_ms(&self) -> u64 {
        self()
    }
}

/// A hybrid logical clock. Thread-safe and lock-free; share it behind an `Arc`.
pub struct Hlc {
    clock: Box<dyn PhysicalClock>,
    last: AtomicU64,
}

impl fmt::Debug for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hlc")
            .field("last", &self.last())
            .finish_non_exhaustive()
    }
}

impl Default for Hlc {
    fn default() -> Self {
        Self::new()
    }
}

impl Hlc {
    /// A clock over the system wall clock.
    pub fn new() -> Hlc {
        Self::with_clock(SystemClock)
    }

    /// A clock over `clock` (tests inject a controllable one).
    pub fn with_clock(clock: impl PhysicalClock) -> Hlc {
        Hlc {
            clock: Box::new(clock),
            last: AtomicU64::new(0),
        }
    }

    fn physical(&self) -> u64 {
        Timestamp::new(self.clock.now_ms().min(MAX_PHYSICAL_MS), 0).0
    }

    /// Advances to a stamp greater than the last one, than `floor`, and at least the physical
    /// time; returns it.
    fn advance(&self, floor: u64) -> Timestamp {
        let phys = self.physical();
        let mut last = self.last.load(Ordering::Acquire);
        loop {
            let next = phys.max(last.max(floor).saturating_add(1));
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Timestamp(next),
                Err(actual) => last = actual,
            }
        }
    }

    /// A new timestamp, strictly greater than every timestamp this clock returned or observed
    /// before, and not below the physical time.
    pub fn now(&self) -> Timestamp {
        self.advance(0)
    }

    /// Merges a timestamp received from another node; returns a new local timestamp greater
    /// than both `remote` and everything this clock issued so far.
    pub fn observe(&self, remote: Timestamp) -> Timestamp {
        self.advance(remote.0)
    }

    /// The last timestamp issued or observed (without advancing).
    pub fn last(&self) -> Timestamp {
        Timestamp(self.last.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn manual(start: u64) -> (Arc<AtomicU64>, Hlc) {
        let t = Arc::new(AtomicU64::new(start));
        let c = t.clone();
        (t, Hlc::with_clock(move || c.load(Ordering::SeqCst)))
    }

    #[test]
    fn packs_and_unpacks() {
        let t = Timestamp::new(1_700_000_000_000, 42);
        assert_eq!(t.physical_ms(), 1_700_000_000_000);
        assert_eq!(t.logical(), 42);
        assert!(Timestamp::new(5, 0) > Timestamp::new(4, u16::MAX));
        assert_eq!(t.to_string(), "1700000000000.42");
        assert_eq!(Timestamp::MAX.successor(), Timestamp::MAX);
    }

    #[test]
    fn follows_the_physical_clock() {
        let (t, hlc) = manual(1000);
        assert_eq!(hlc.now(), Timestamp::new(1000, 0));
        assert_eq!(hlc.now(), Timestamp::new(1000, 1));
        t.store(2000, Ordering::SeqCst);
        assert_eq!(hlc.now(), Timestamp::new(2000, 0));
    }

    #[test]
    fn clock_going_backwards_does_not_reorder() {
        let (t, hlc) = manual(5000);
        let a = hlc.now();
        t.store(1000, Ordering::SeqCst);
        let b = hlc.now();
        assert!(b > a);
        assert_eq!(b, Timestamp::new(5000, 1));
    }

    #[test]
    fn observe_moves_past_remote() {
        let (_t, hlc) = manual(1000);
        let remote = Timestamp::new(9000, 7);
        let merged = hlc.observe(remote);
        assert_eq!(merged, Timestamp::new(9000, 8));
        assert!(hlc.now() > remote);
        // an old remote stamp changes nothing but still advances
        let before = hlc.last();
        assert!(hlc.observe(Timestamp::new(10, 0)) > before);
    }

    #[test]
    fn logical_overflow_carries() {
        let (_t, hlc) = manual(1000);
        hlc.observe(Timestamp::new(1000, u16::MAX - 1));
        assert_eq!(hlc.now(), Timestamp::new(1001, 0));
    }

    #[test]
    fn concurrent_now_is_unique() {
        let hlc = Arc::new(Hlc::new());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let h = hlc.clone();
                std::thread::spawn(move || (0..10_000).map(|_| h.now()).collect::<Vec<_>>())
            })
            .collect();
        let mut all: Vec<Timestamp> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
    }

    #[derive(Debug, Clone)]
    enum Step {
        SetClock(u64),
        Now,
        Observe(u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u64..=MAX_PHYSICAL_MS + 10).prop_map(Step::SetClock),
            Just(Step::Now),
            any::<u64>().prop_map(|v| Step::Observe(v >> 1)),
        ]
    }

    proptest! {
        #[test]
        fn never_goes_backwards(steps in proptest::collection::vec(step(), 1..200)) {
            let (t, hlc) = manual(0);
            let mut prev = Timestamp::ZERO;
            let mut max_seen = Timestamp::ZERO;
            for s in steps {
                match s {
                    Step::SetClock(ms) => t.store(ms, Ordering::SeqCst),
                    Step::Now => {
                        let ts = hlc.now();
                        prop_assert!(ts > prev, "now {ts} after {prev}");
                        prop_assert!(ts > max_seen);
                        let phys = t.load(Ordering::SeqCst).min(MAX_PHYSICAL_MS);
                        prop_assert!(ts.physical_ms() >= phys);
                        prev = ts;
                    }
                    Step::Observe(r) => {
                        let remote = Timestamp(r);
                        let ts = hlc.observe(remote);
                        prop_assert!(ts > prev);
                        prop_assert!(ts > remote);
                        max_seen = max_seen.max(remote);
                        prev = ts;
                    }
                }
                prop_assert!(hlc.last() == prev);
            }
        }
    }
}

//! A cheap monotonic tick counter for timing every command (INFO commandstats): the CPU's
//! time-stamp counter on x86-64 (two reads cost about 15 ns here, against 40 for a pair of
//! `Instant::now()`), elsewhere nanoseconds of the monotonic clock. Ticks become microseconds
//! at a rate measured against the monotonic clock since [`start`], so no calibration pause is
//! needed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The clock and the counter read together at start.
static ORIGIN: OnceLock<(Instant, u64)> = OnceLock::new();

/// Latency units (1/1024 µs, so that powers of two are whole microseconds) per tick, as f64
/// bits: measured at [`start`], refreshed by [`refresh`].
static UNITS_PER_TICK: AtomicU64 = AtomicU64::new(0);

/// Reads the counter and the clock once, as the origin of the tick rate, and measures the
/// rate over a millisecond (called at node start; later calls change nothing).
pub fn start() {
    ORIGIN.get_or_init(|| {
        let origin = (Instant::now(), raw());
        while origin.0.elapsed() < Duration::from_millis(1) {
            std::hint::spin_loop();
        }
        origin
    });
    refresh();
}

/// Measures the tick rate again since start (once a second, by the metrics task).
pub fn refresh() {
    UNITS_PER_TICK.store((1024.0 / per_micro()).to_bits(), Ordering::Relaxed);
}

/// `ticks` in latency units (1/1024 µs), at the last measured rate.
#[inline]
pub fn units(ticks: u64) -> u64 {
    let per_tick = f64::from_bits(UNITS_PER_TICK.load(Ordering::Relaxed));
    let per_tick = if per_tick > 0.0 { per_tick } else { 1.024 };
    (ticks as f64 * per_tick) as u64
}

#[cfg(target_arch = "x86_64")]
#[inline]
fn raw() -> u64 {
    // SAFETY: RDTSC exists on every x86-64 CPU and has no memory effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

#[cfg(not(target_arch = "x86_64"))]
fn raw() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// The counter now.
#[inline]
pub fn now() -> u64 {
    raw()
}

/// Ticks elapsed since `earlier` (0 if the counter appears to have gone back).
#[inline]
pub fn since(earlier: u64) -> u64 {
    raw().saturating_sub(earlier)
}

/// Ticks per microsecond, as measured since [`start`] (taken as 1,000, right only for
/// nanosecond ticks, before `start` and during its first millisecond).
fn per_micro() -> f64 {
    let Some((clock, counter)) = ORIGIN.get() else {
        return 1000.0;
    };
    let micros = clock.elapsed().as_secs_f64() * 1e6;
    let ticks = raw().saturating_sub(*counter) as f64;
    if micros < 1000.0 || ticks <= 0.0 {
        return 1000.0;
    }
    ticks / micros
}

/// `ticks` in microseconds.
pub fn to_micros(ticks: u64) -> u64 {
    (ticks as f64 / per_micro()) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_convert_to_elapsed_microseconds() {
        start();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let t0 = now();
        std::thread::sleep(std::time::Duration::from_millis(30));
        let micros = to_micros(since(t0));
        assert!((25_000..200_000).contains(&micros), "{micros} µs");
    }
}

//! Repeated warnings and errors, limited: while a peer is down or cut off, openraft and the
//! link layer log the same line at every retry (openraft an `ERROR RPCError` and a `WARN error
//! replication` per failed call, several a second per peer, about 700 lines a node in 15
//! minutes of a chaos soak), which buries whatever else happened. Each place in the code that
//! logs at WARN or ERROR may log [`RepeatLimit::BURST`] lines per [`RepeatLimit::WINDOW`];
//! the rest of the window's lines from there are dropped and counted in the
//! `meridian_log_lines_suppressed_total` metric. INFO and below pass untouched.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::callsite::Identifier;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// A layer that drops the WARN and ERROR events of a callsite beyond a few per window.
pub struct RepeatLimit {
    window: Duration,
    burst: u32,
    /// Per callsite: when its current window began, and the lines it logged in it.
    seen: Mutex<HashMap<Identifier, (Instant, u32)>>,
}

impl RepeatLimit {
    /// Lines one callsite may log per window.
    pub const BURST: u32 = 5;
    /// The window.
    pub const WINDOW: Duration = Duration::from_secs(10);

    /// The limit with the default window and burst.
    pub fn new() -> RepeatLimit {
        RepeatLimit::with(Self::WINDOW, Self::BURST)
    }

    /// A limit of `burst` lines per callsite per `window`.
    pub fn with(window: Duration, burst: u32) -> RepeatLimit {
        RepeatLimit {
            window,
            burst,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Whether an event of `callsite` at `level`, now, is logged (and counts it).
    fn admit(&self, callsite: Identifier, level: Level, now: Instant) -> bool {
        if level > Level::WARN {
            return true;
        }
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = seen.entry(callsite).or_insert((now, 0));
        if now.duration_since(slot.0) >= self.window {
            *slot = (now, 0);
        }
        slot.1 = slot.1.saturating_add(1);
        slot.1 <= self.burst
    }
}

impl Default for RepeatLimit {
    fn default() -> Self {
        RepeatLimit::new()
    }
}

impl<S: Subscriber> Layer<S> for RepeatLimit {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        let meta = event.metadata();
        let admitted = self.admit(meta.callsite(), *meta.level(), Instant::now());
        if !admitted {
            metrics::counter!("meridian_log_lines_suppressed_total").increment(1);
        }
        admitted
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Counts the events that reach it.
    struct Count(Arc<AtomicUsize>);
    impl<S: Subscriber> Layer<S> for Count {
        fn on_event(&self, _: &Event<'_>, _: Context<'_, S>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn repeats_of_one_warning_are_cut_to_the_burst_and_info_passes() {
        let logged = Arc::new(AtomicUsize::new(0));
        let subscriber = tracing_subscriber::registry()
            .with(RepeatLimit::with(Duration::from_secs(3600), 3))
            .with(Count(logged.clone()));
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..10 {
                tracing::error!("peer unreachable");
            }
            assert_eq!(logged.load(Ordering::SeqCst), 3);
            // Another callsite has its own allowance.
            for _ in 0..2 {
                tracing::warn!("another warning");
            }
            assert_eq!(logged.load(Ordering::SeqCst), 5);
            for _ in 0..10 {
                tracing::info!("progress");
            }
            assert_eq!(logged.load(Ordering::SeqCst), 15);
        });
    }

    #[test]
    fn a_new_window_admits_the_burst_again() {
        let limit = RepeatLimit::with(Duration::from_secs(10), 2);
        let site = tracing::callsite::Identifier(&SITE);
        let t0 = Instant::now();
        let admitted: Vec<bool> = [0, 1, 2, 9, 10, 11, 12]
            .iter()
            .map(|s| limit.admit(site.clone(), Level::ERROR, t0 + Duration::from_secs(*s)))
            .collect();
        assert_eq!(admitted, [true, true, false, false, true, true, false]);
    }

    struct Site;
    impl tracing::callsite::Callsite for Site {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &tracing::Metadata<'_> {
            unimplemented!("not registered")
        }
    }
    static SITE: Site = Site;
}

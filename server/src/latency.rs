//! The latency monitor (LATENCY, `latency-monitor-threshold`, as in Redis 7.0): events that
//! took at least the threshold (milliseconds; 0 turns the monitor off) are kept per event
//! kind as a history of at most [`HISTORY_LEN`] samples, one per second (the worst of that
//! second), with the worst ever.
//!
//! Events: `command` (a command not flagged fast, timed on its connection), `fast-command`
//! (one flagged fast), and Meridian's own `write-batch` (a connection's batch of writes from
//! submission to result: the Raft round, or the forwarding to the leader or home region).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Samples kept per event (Redis's `LATENCY_TS_LEN`).
pub const HISTORY_LEN: usize = 160;

/// One event kind's samples.
#[derive(Clone, Debug, Default)]
pub struct Series {
    /// (unix seconds, milliseconds), oldest first; one per second at most.
    pub samples: VecDeque<(u64, u64)>,
    /// The worst latency since the last reset (ms).
    pub max: u64,
}

/// The node's latency monitor.
#[derive(Default)]
pub struct LatencyMonitor {
    /// `latency-monitor-threshold` in ms (0: off).
    threshold_ms: AtomicU64,
    events: Mutex<BTreeMap<&'static str, Series>>,
}

impl LatencyMonitor {
    /// A monitor recording events of at least `threshold_ms` (0: off).
    pub fn new(threshold_ms: u64) -> LatencyMonitor {
        LatencyMonitor {
            threshold_ms: AtomicU64::new(threshold_ms),
            events: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, Series>> {
        self.events.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `latency-monitor-threshold` (ms).
    pub fn threshold_ms(&self) -> u64 {
        self.threshold_ms.load(Ordering::Relaxed)
    }

    /// Sets `latency-monitor-threshold` (ms; 0 turns the monitor off).
    pub fn set_threshold_ms(&self, ms: u64) {
        self.threshold_ms.store(ms, Ordering::Relaxed);
    }

    /// Records `ms` for `event` at unix second `now` if the monitor is on and it reaches the
    /// threshold.
    pub fn sample(&self, event: &'static str, ms: u64, now: u64) {
        let threshold = self.threshold_ms();
        if threshold == 0 || ms < threshold {
            return;
        }
        let mut events = self.lock();
        let series = events.entry(event).or_default();
        series.max = series.max.max(ms);
        match series.samples.back_mut() {
            Some((time, worst)) if *time == now => *worst = (*worst).max(ms),
            _ => {
                if series.samples.len() == HISTORY_LEN {
                    series.samples.pop_front();
                }
                series.samples.push_back((now, ms));
            }
        }
    }

    /// Every event with samples, by name.
    pub fn events(&self) -> BTreeMap<&'static str, Series> {
        self.lock().clone()
    }

    /// One event's samples.
    pub fn history(&self, event: &[u8]) -> Option<Series> {
        self.lock()
            .iter()
            .find(|(name, _)| name.as_bytes().eq_ignore_ascii_case(event))
            .map(|(_, s)| s.clone())
    }

    /// Forgets the named events (all with none); answers how many were dropped.
    pub fn reset(&self, names: &[&[u8]]) -> usize {
        let mut events = self.lock();
        if names.is_empty() {
            let n = events.len();
            events.clear();
            return n;
        }
        let before = events.len();
        events.retain(|name, _| {
            !names
                .iter()
                .any(|n| name.as_bytes().eq_ignore_ascii_case(n))
        });
        before - events.len()
    }

    /// LATENCY DOCTOR's report: per event, its spikes, their average and the worst.
    pub fn doctor(&self) -> String {
        let events = self.events();
        let threshold = self.threshold_ms();
        if threshold == 0 {
            return "Meridian's latency monitor is off: latency-monitor-threshold is 0. Turn it \
                    on with CONFIG SET latency-monitor-threshold <milliseconds>.\n"
                .into();
        }
        if events.is_empty() {
            return format!(
                "No latency spike of {threshold} ms or more was observed since the monitor \
                 started or was reset.\n"
            );
        }
        let mut out =
            format!("Latency spikes of {threshold} ms or more observed on this node:\n\n");
        for (i, (name, s)) in events.iter().enumerate() {
            let n = s.samples.len() as u64;
            let avg = s.samples.iter().map(|(_, ms)| ms).sum::<u64>() / n.max(1);
            let span = match (s.samples.front(), s.samples.back()) {
                (Some((first, _)), Some((last, _))) => last - first,
                _ => 0,
            };
            out.push_str(&format!(
                "{}. {name}: {n} latency spikes (average {avg}ms, over {span} seconds). Worst \
                 all time event {}ms.\n",
                i + 1,
                s.max
            ));
        }
        out.push_str(
            "\n`command` and `fast-command` are the time a command ran on its connection; \
             `write-batch` is a batch of writes from submission to result (the Raft round, or \
             forwarding to the leader or home region): large values there point at the \
             network between the region's nodes, a slow disk (appendfsync always) or a leader \
             election.\n",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_worst_per_second_and_a_bounded_history() {
        let m = LatencyMonitor::new(0);
        m.sample("command", 500, 1);
        assert!(m.events().is_empty(), "off at threshold 0");
        m.set_threshold_ms(10);
        m.sample("command", 5, 1);
        m.sample("command", 20, 1);
        m.sample("command", 30, 1);
        m.sample("command", 15, 2);
        let s = m.history(b"COMMAND").unwrap();
        assert_eq!(s.samples, VecDeque::from([(1, 30), (2, 15)]));
        assert_eq!(s.max, 30);
        for t in 0..500 {
            m.sample("fast-command", 11, 100 + t);
        }
        assert_eq!(
            m.history(b"fast-command").unwrap().samples.len(),
            HISTORY_LEN
        );
        assert_eq!(m.reset(&[b"command"]), 1);
        assert_eq!(m.reset(&[]), 1);
        assert!(m.events().is_empty());
    }
}

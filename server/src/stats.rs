//! Node statistics for INFO, mirrored to the `metrics` crate (Prometheus) once a second.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::cmd::COMMANDS;

/// Distinct error codes INFO errorstats tracks at most (as Redis); later new codes are counted
/// in `total_error_replies` only.
pub const MAX_ERROR_CODES: usize = 128;

/// Buckets of a latency histogram: quarter octaves of 1/1024 µs (see [`bucket_of`]).
pub const HIST_BUCKETS: usize = 256;

/// The histogram bucket of a latency in 1/1024 µs units: its octave (floor log2) times four,
/// plus the two bits after the leading one (a bucket is at most 25 % wide).
pub fn bucket_of(units: u64) -> usize {
    let v = units.max(1);
    let octave = 63 - v.leading_zeros() as usize;
    let quarter = if octave >= 2 {
        ((v >> (octave - 2)) & 3) as usize
    } else {
        0
    };
    octave * 4 + quarter
}

/// The largest latency (1/1024 µs units) in bucket `b`.
pub fn bucket_upper(b: usize) -> u64 {
    let (octave, quarter) = (b / 4, (b % 4) as u128);
    let upper: u128 = if octave < 2 {
        (1u128 << (octave + 1)) - 1
    } else {
        ((5 + quarter) << (octave - 2)) - 1
    };
    upper.min(u64::MAX as u128) as u64
}

/// One command's counters (INFO commandstats).
pub struct CommandStats {
    /// Times it ran (inside EXEC included).
    pub calls: AtomicU64,
    /// Time it took, in [`crate::ticks`]: its handler on the connection, and for a write its
    /// share of its batch's time through the write path.
    pub ticks: AtomicU64,
    /// Refused before it ran (arity, authentication, subscribed mode, no quorum for a read,
    /// refused while queued in MULTI).
    pub rejected: AtomicU64,
    /// Ran and answered an error.
    pub failed: AtomicU64,
    /// Latency of each call, by [`bucket_of`] (INFO latencystats, LATENCY HISTOGRAM): its
    /// running on the connection, for a write its batch's time from submission to result.
    pub hist: Vec<AtomicU64>,
}

impl Default for CommandStats {
    fn default() -> Self {
        CommandStats {
            calls: AtomicU64::new(0),
            ticks: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            hist: (0..HIST_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl CommandStats {
    /// The histogram's counts.
    pub fn histogram(&self) -> Vec<u64> {
        self.hist
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect()
    }
}

/// The latency (µs) at percentile `p` (0-100) of a histogram: the upper end of the bucket where
/// it falls; `None` when empty.
pub fn percentile_micros(hist: &[u64], p: f64) -> Option<f64> {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return None;
    }
    // HdrHistogram's rule, as Redis: the value at rank p% of the count, rounded.
    let rank = (((p / 100.0) * total as f64 + 0.5) as u64).max(1);
    let mut seen = 0;
    for (b, n) in hist.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(bucket_upper(b) as f64 / 1024.0);
        }
    }
    None
}

/// Counters updated by connections (per burst, not per command, to stay cheap).
pub struct Stats {
    /// Connections accepted.
    pub connections_received: AtomicU64,
    /// Connections refused (maxclients).
    pub rejected_connections: AtomicU64,
    /// Commands processed.
    pub commands_processed: AtomicU64,
    /// Bytes read from clients.
    pub net_input_bytes: AtomicU64,
    /// Bytes written to clients.
    pub net_output_bytes: AtomicU64,
    /// Keys removed by active expiry.
    pub expired_keys: AtomicU64,
    /// Error replies sent.
    pub error_replies: AtomicU64,
    /// Write batches submitted by connections (a pipelined burst's writes, or an EXEC).
    pub write_batches: AtomicU64,
    /// Their time from submission to result, summed (µs): through Raft, or forwarded.
    pub write_batch_micros: AtomicU64,
    /// Per command, indexed like [`COMMANDS`].
    pub commands: Vec<CommandStats>,
    /// Error replies per error code (the reply's first word), for INFO errorstats.
    pub error_codes: Mutex<BTreeMap<String, u64>>,
    /// INFO's `instantaneous_*` rates.
    pub rates: Rates,
    /// The largest `used_memory` INFO or the rate sampler saw (`used_memory_peak`).
    pub used_memory_peak: AtomicU64,
}

/// Samples the instantaneous rates average over (Redis's `STATS_METRIC_SAMPLES`).
const RATE_SAMPLES: usize = 16;

/// INFO's `instantaneous_ops_per_sec`, `instantaneous_input_kbps` and
/// `instantaneous_output_kbps`, computed as Redis does: [`Rates::sample`] every 100 ms records
/// how fast each counter grew since the last sample; a rate is the mean of the last 16.
#[derive(Default)]
pub struct Rates {
    inner: Mutex<RateSamples>,
}

#[derive(Default)]
struct RateSamples {
    /// When the last sample was taken, and the counters then (commands, bytes in, bytes out).
    last: Option<(Instant, [u64; 3])>,
    /// Per second, per counter, the newest [`RATE_SAMPLES`] (a ring).
    samples: [[f64; 3]; RATE_SAMPLES],
    /// Where the next sample goes in the ring.
    next: usize,
}

impl Rates {
    /// Records one sample of `stats`' counters.
    pub fn sample(&self, stats: &Stats) {
        let now = Instant::now();
        let counters = [
            Stats::get(&stats.commands_processed),
            Stats::get(&stats.net_input_bytes),
            Stats::get(&stats.net_output_bytes),
        ];
        let mut r = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((then, before)) = r.last {
            let secs = now.duration_since(then).as_secs_f64();
            if secs > 0.0 {
                let mut rates = [0.0; 3];
                for (i, rate) in rates.iter_mut().enumerate() {
                    *rate = counters[i].saturating_sub(before[i]) as f64 / secs;
                }
                let at = r.next;
                r.samples[at] = rates;
                r.next = (at + 1) % RATE_SAMPLES;
            }
        }
        r.last = Some((now, counters));
    }

    /// Commands per second, and kilobytes per second read and written.
    pub fn current(&self) -> (u64, f64, f64) {
        let r = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mean = |i: usize| r.samples.iter().map(|s| s[i]).sum::<f64>() / RATE_SAMPLES as f64;
        (mean(0).round() as u64, mean(1) / 1024.0, mean(2) / 1024.0)
    }

    /// Forgets every sample (CONFIG RESETSTAT).
    pub fn reset(&self) {
        *self.inner.lock().unwrap_or_else(|p| p.into_inner()) = RateSamples::default();
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            connections_received: AtomicU64::new(0),
            rejected_connections: AtomicU64::new(0),
            commands_processed: AtomicU64::new(0),
            net_input_bytes: AtomicU64::new(0),
            net_output_bytes: AtomicU64::new(0),
            expired_keys: AtomicU64::new(0),
            error_replies: AtomicU64::new(0),
            write_batches: AtomicU64::new(0),
            write_batch_micros: AtomicU64::new(0),
            commands: COMMANDS.iter().map(|_| CommandStats::default()).collect(),
            error_codes: Mutex::new(BTreeMap::new()),
            rates: Rates::default(),
            used_memory_peak: AtomicU64::new(0),
        }
    }
}

impl Stats {
    /// CONFIG RESETSTAT.
    pub fn reset(&self) {
        for c in [
            &self.connections_received,
            &self.rejected_connections,
            &self.commands_processed,
            &self.net_input_bytes,
            &self.net_output_bytes,
            &self.expired_keys,
            &self.error_replies,
            &self.write_batches,
            &self.write_batch_micros,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        for c in &self.commands {
            for n in [&c.calls, &c.ticks, &c.rejected, &c.failed] {
                n.store(0, Ordering::Relaxed);
            }
            for b in &c.hist {
                b.store(0, Ordering::Relaxed);
            }
        }
        self.error_codes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.rates.reset();
    }

    /// Error replies per code, as now (INFO errorstats, Prometheus).
    pub fn error_counts(&self) -> BTreeMap<String, u64> {
        self.error_codes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// One command's tally within a burst.
#[derive(Clone, Default)]
struct CommandTally {
    calls: u64,
    ticks: u64,
    rejected: u64,
    failed: u64,
    /// (histogram bucket, calls) of this burst.
    hist: smallvec::SmallVec<[(u8, u32); 4]>,
}

/// Per-connection tallies, added to [`Stats`] once per burst.
#[derive(Default)]
pub struct LocalTally {
    /// Commands in this burst.
    pub commands: u64,
    /// Errors in this burst.
    errors: u64,
    /// Error codes in this burst, with their counts.
    error_codes: Vec<(Box<str>, u64)>,
    /// Commands touched in this burst (index in [`COMMANDS`]) and their tallies.
    per_command: Vec<(usize, CommandTally)>,
    /// Position in `per_command` of the command last counted (pipelines repeat one command).
    last: usize,
    /// Write batches submitted in this burst, and their time (µs).
    pub write_batches: u64,
    /// See `write_batches`.
    pub write_micros: u64,
}

/// The code of an error reply's text: its first word (`ERR`, `WRONGTYPE` …).
fn error_code(text: &[u8]) -> &[u8] {
    let text = text.strip_prefix(b"-").unwrap_or(text);
    let end = text
        .iter()
        .position(|b| *b == b' ' || *b == b'\r')
        .unwrap_or(text.len());
    &text[..end.min(64)]
}

impl LocalTally {
    fn command(&mut self, idx: usize) -> &mut CommandTally {
        let at = match self.per_command.get(self.last) {
            Some((i, _)) if *i == idx => self.last,
            _ => match self.per_command.iter().position(|(i, _)| *i == idx) {
                Some(at) => at,
                None => {
                    self.per_command.push((idx, CommandTally::default()));
                    self.per_command.len() - 1
                }
            },
        };
        self.last = at;
        &mut self.per_command[at].1
    }

    /// Counts one call of command `idx`.
    pub fn call(&mut self, idx: usize) {
        self.commands += 1;
        self.command(idx).calls += 1;
    }

    /// Adds `ticks` of time to command `idx`.
    pub fn time(&mut self, idx: usize, ticks: u64) {
        self.command(idx).ticks += ticks;
    }

    /// Adds `ticks` of time to command `idx` and records them as one call's latency.
    pub fn time_call(&mut self, idx: usize, ticks: u64) {
        // (The second lookup hits `last`.)
        self.time(idx, ticks);
        self.latency(idx, ticks);
    }

    /// Records one call of command `idx` that took `ticks` in its latency histogram.
    pub fn latency(&mut self, idx: usize, ticks: u64) {
        let bucket = bucket_of(crate::ticks::units(ticks)).min(HIST_BUCKETS - 1) as u8;
        let hist = &mut self.command(idx).hist;
        match hist.iter_mut().find(|(b, _)| *b == bucket) {
            Some((_, n)) => *n += 1,
            None => hist.push((bucket, 1)),
        }
    }

    /// Counts command `idx` refused before it ran.
    pub fn rejected(&mut self, idx: usize) {
        self.command(idx).rejected += 1;
    }

    /// Counts command `idx` that ran and failed.
    pub fn failed(&mut self, idx: usize) {
        self.command(idx).failed += 1;
    }

    /// Counts one error reply with this text (`ERR …`).
    pub fn error(&mut self, text: &[u8]) {
        self.errors += 1;
        let code = error_code(text);
        match self
            .error_codes
            .iter_mut()
            .find(|(c, _)| c.as_bytes() == code)
        {
            Some((_, n)) => *n += 1,
            None => self
                .error_codes
                .push((String::from_utf8_lossy(code).into(), 1)),
        }
    }

    /// Counts one write batch that took `micros` from submission to result.
    pub fn write_batch(&mut self, micros: u64) {
        self.write_batches += 1;
        self.write_micros += micros;
    }

    /// Adds the tally to the node's counters and clears it.
    pub fn flush_into(&mut self, stats: &Stats) {
        if self.write_batches > 0 {
            stats
                .write_batches
                .fetch_add(self.write_batches, Ordering::Relaxed);
            stats
                .write_batch_micros
                .fetch_add(self.write_micros, Ordering::Relaxed);
            self.write_batches = 0;
            self.write_micros = 0;
        }
        if self.commands > 0 {
            stats
                .commands_processed
                .fetch_add(self.commands, Ordering::Relaxed);
        }
        if self.errors > 0 {
            stats
                .error_replies
                .fetch_add(self.errors, Ordering::Relaxed);
            let mut codes = stats.error_codes.lock().unwrap_or_else(|p| p.into_inner());
            for (code, n) in self.error_codes.drain(..) {
                if let Some(count) = codes.get_mut(&*code) {
                    *count += n;
                } else if codes.len() < MAX_ERROR_CODES {
                    codes.insert(code.into(), n);
                }
            }
        }
        for (idx, t) in self.per_command.drain(..) {
            if let Some(c) = stats.commands.get(idx) {
                for (counter, n) in [
                    (&c.calls, t.calls),
                    (&c.ticks, t.ticks),
                    (&c.rejected, t.rejected),
                    (&c.failed, t.failed),
                ] {
                    if n > 0 {
                        counter.fetch_add(n, Ordering::Relaxed);
                    }
                }
                for (bucket, n) in t.hist {
                    c.hist[bucket as usize].fetch_add(u64::from(n), Ordering::Relaxed);
                }
            }
        }
        self.last = 0;
        self.commands = 0;
        self.errors = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_are_quarter_octaves_and_percentiles_their_upper_ends() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1024), 40); // 1 µs: octave 10
        assert_eq!(bucket_upper(40), 1279);
        assert_eq!(bucket_of(1279), 40);
        assert_eq!(bucket_of(1280), 41);
        assert_eq!(bucket_upper(HIST_BUCKETS - 1), u64::MAX);
        for units in [3u64, 1000, 1_000_000, u64::MAX / 3] {
            assert!(bucket_upper(bucket_of(units)) >= units);
        }
        let mut hist = vec![0u64; HIST_BUCKETS];
        hist[40] = 99; // about 1 µs
        hist[60] = 1; // about 32 µs
        assert_eq!(percentile_micros(&hist, 50.0), Some(1279.0 / 1024.0));
        assert_eq!(percentile_micros(&hist, 99.0), Some(1279.0 / 1024.0));
        assert_eq!(
            percentile_micros(&hist, 99.9),
            Some(bucket_upper(60) as f64 / 1024.0)
        );
        assert_eq!(percentile_micros(&[0; 4], 50.0), None);
    }

    #[test]
    fn error_codes_are_the_first_word() {
        assert_eq!(error_code(b"ERR syntax error"), b"ERR");
        assert_eq!(error_code(b"-WRONGTYPE Operation"), b"WRONGTYPE");
        assert_eq!(error_code(b"CLUSTERDOWN"), b"CLUSTERDOWN");
        let stats = Stats::default();
        let mut tally = LocalTally::default();
        tally.error(b"ERR a");
        tally.error(b"ERR b");
        tally.error(b"NOAUTH c");
        tally.call(3);
        tally.failed(3);
        tally.flush_into(&stats);
        let codes = stats.error_codes.lock().unwrap();
        assert_eq!(codes.get("ERR"), Some(&2));
        assert_eq!(codes.get("NOAUTH"), Some(&1));
        assert_eq!(Stats::get(&stats.error_replies), 3);
        assert_eq!(Stats::get(&stats.commands[3].failed), 1);
    }
}

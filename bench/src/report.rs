//! Per-operation statistics (HDR histograms, error counts) and their reports: tables on stdout
//! and serde types for the JSON file.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde::Serialize;

/// Histogram resolution floor: 1 µs (values below still count, at 1 µs precision).
pub const HIST_LOW_NS: u64 = 1_000;
/// Histogram ceiling: 60 s; slower replies are recorded as 60 s.
pub const HIST_HIGH_NS: u64 = 60_000_000_000;
/// Significant digits kept by the histograms.
pub const HIST_SIGFIG: u8 = 3;
/// Distinct error messages kept per operation; the rest are counted under one line.
pub const MAX_ERROR_KINDS: usize = 16;
/// Longest error message kept (the rest is cut).
pub const MAX_ERROR_LEN: usize = 160;
/// Label of the bucket collecting error messages past [`MAX_ERROR_KINDS`].
const OTHER_ERRORS: &str = "(other error messages)";

/// A new latency histogram in nanoseconds.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(HIST_LOW_NS, HIST_HIGH_NS, HIST_SIGFIG)
        .expect("constant histogram bounds are valid")
}

/// Statistics of one operation, gathered by one connection and merged at the end.
#[derive(Debug, Clone)]
pub struct OpStats {
    /// Latency of every reply received (errors included), in nanoseconds.
    pub hist: Histogram<u64>,
    /// Error replies plus requests lost with their connection.
    pub errors: u64,
    /// Error counts by message (bounded by [`MAX_ERROR_KINDS`]).
    pub messages: BTreeMap<String, u64>,
}

impl Default for OpStats {
    fn default() -> Self {
        Self {
            hist: new_histogram(),
            errors: 0,
            messages: BTreeMap::new(),
        }
    }
}

impl OpStats {
    /// Records one reply's latency.
    pub fn record(&mut self, ns: u64) {
        self.hist.saturating_record(ns.max(1));
    }

    /// Counts `n` errors with this message.
    pub fn error(&mut self, message: &str, n: u64) {
        self.errors += n;
        let mut msg = message.trim();
        if msg.len() > MAX_ERROR_LEN {
            let mut cut = MAX_ERROR_LEN;
            while !msg.is_char_boundary(cut) {
                cut -= 1;
            }
            msg = &msg[..cut];
        }
        if let Some(c) = self.messages.get_mut(msg) {
            *c += n;
        } else if self.messages.len() < MAX_ERROR_KINDS {
            self.messages.insert(msg.to_string(), n);
        } else {
            *self.messages.entry(OTHER_ERRORS.to_string()).or_insert(0) += n;
        }
    }

    /// Adds another connection's statistics into this one.
    pub fn merge(&mut self, other: &OpStats) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.hist.add(&other.hist);
        for (m, n) in &other.messages {
            self.error(m, *n);
            self.errors -= n;
        }
        self.errors += other.errors;
    }
}

/// Latency figures in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Slowest reply.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

impl Latency {
    /// Reads the figures off a nanosecond histogram (all zero when empty).
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self {
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
                p999: 0.0,
                max: 0.0,
                mean: 0.0,
            };
        }
        Self {
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1e6,
        }
    }
}

/// The percentile curve of a histogram: `(percentile, ms)` points from 0 to 99.999 and the max,
/// spaced evenly in "nines" (what the latency plot draws).
pub fn latency_curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<(f64, f64)> = (0..=50)
        .map(|i| {
            let nines = f64::from(i) / 10.0;
            let q = 1.0 - 10f64.powf(-nines);
            (q * 100.0, ms(h.value_at_quantile(q)))
        })
        .collect();
    out.push((100.0, ms(h.max())));
    out
}

/// One error message and how often it came back.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorCount {
    /// The error text as received (cut to [`MAX_ERROR_LEN`]).
    pub message: String,
    /// Occurrences.
    pub count: u64,
}

/// The report of one operation (or of all of them together).
#[derive(Debug, Clone, Serialize)]
pub struct OpReport {
    /// `GET`, `SET`, … or `ALL`.
    pub name: String,
    /// Replies received.
    pub requests: u64,
    /// Error replies and requests lost with their connection.
    pub errors: u64,
    /// Replies per second over the run.
    pub rps: f64,
    /// Latency figures.
    pub latency_ms: Latency,
    /// Errors by message.
    pub error_messages: Vec<ErrorCount>,
    /// `(percentile, ms)` points for plots.
    pub curve: Vec<(f64, f64)>,
}

impl OpReport {
    /// Builds the report of `stats` over `elapsed_s` seconds.
    pub fn new(name: &str, stats: &OpStats, elapsed_s: f64) -> Self {
        let requests = stats.hist.len();
        let mut error_messages: Vec<ErrorCount> = stats
            .messages
            .iter()
            .map(|(m, c)| ErrorCount {
                message: m.clone(),
                count: *c,
            })
            .collect();
        // Most frequent first; the overflow bucket last.
        error_messages.sort_by_key(|e| (e.message == OTHER_ERRORS, std::cmp::Reverse(e.count)));
        Self {
            name: name.to_string(),
            requests,
            errors: stats.errors,
            rps: if elapsed_s > 0.0 {
                requests as f64 / elapsed_s
            } else {
                0.0
            },
            latency_ms: Latency::from_histogram(&stats.hist),
            error_messages,
            curve: latency_curve(&stats.hist),
        }
    }
}

/// The settings a run used (echoed in the table header and the JSON).
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Connections.
    pub clients: usize,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// Key space size.
    pub keyspace: u64,
    /// Key distribution.
    pub dist: crate::workload::Dist,
    /// Value size.
    pub value_size: crate::workload::ValueSize,
    /// The mix, `NAME:weight` items.
    pub mix: String,
    /// RESP protocol version (2 or 3).
    pub resp: u8,
    /// Bench runtime worker threads.
    pub threads: usize,
    /// Requested duration, if any.
    pub duration_s: Option<f64>,
    /// Requested request count, if any.
    pub requests: Option<u64>,
}

impl Settings {
    /// One-line summary.
    pub fn summary(&self) -> String {
        let dist = match self.dist {
            crate::workload::Dist::Uniform => "uniform".to_string(),
            crate::workload::Dist::Zipf { exponent } => format!("zipf {exponent}"),
        };
        format!(
            "{} conns x pipeline {}, {} keys {}, values {}, mix {}, RESP{}, {} thread(s)",
            self.clients,
            self.pipeline,
            self.keyspace,
            dist,
            self.value_size,
            self.mix,
            self.resp,
            self.threads
        )
    }
}

/// Everything one run measured against one target.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Target label (`host:port`, a name given on the command line, or `region/node`).
    pub label: String,
    /// Addresses the connections were spread over.
    pub addrs: Vec<String>,
    /// The workload.
    pub settings: Settings,
    /// Measured time from the first request to the last reply.
    pub elapsed_s: f64,
    /// Per operation, in mix order.
    pub ops: Vec<OpReport>,
    /// All operations together.
    pub total: OpReport,
    /// Connections that failed and could not be re-established.
    pub connections_lost: u64,
}

impl RunReport {
    /// Errors of every operation.
    pub fn errors(&self) -> u64 {
        self.total.errors
    }
}

/// Builds the report of one run from the merged per-op statistics.
pub fn build_run(
    label: &str,
    addrs: Vec<String>,
    settings: Settings,
    names: &[String],
    stats: &[OpStats],
    elapsed_s: f64,
    connections_lost: u64,
) -> RunReport {
    let mut all = OpStats::default();
    for s in stats {
        all.merge(s);
    }
    RunReport {
        label: label.to_string(),
        addrs,
        settings,
        elapsed_s,
        ops: names
            .iter()
            .zip(stats)
            .map(|(n, s)| OpReport::new(n, s, elapsed_s))
            .collect(),
        total: OpReport::new("ALL", &all, elapsed_s),
        connections_lost,
    }
}

/// Human-friendly rate: `1.23M`, `456.7k`, `89`.
pub fn fmt_rate(rps: f64) -> String {
    if rps >= 1e6 {
        format!("{:.2}M", rps / 1e6)
    } else if rps >= 1e4 {
        format!("{:.1}k", rps / 1e3)
    } else {
        format!("{rps:.0}")
    }
}

/// The table of one run.
pub fn run_table(r: &RunReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "== {} [{}] ==\n{}; {:.2} s",
        r.label,
        r.addrs.join(", "),
        r.settings.summary(),
        r.elapsed_s
    );
    let _ = writeln!(
        s,
        "{:<8} {:>11} {:>12} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "op", "requests", "rps", "errors", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
    );
    let rows = r.ops.iter().chain(if r.ops.len() > 1 {
        Some(&r.total)
    } else {
        None
    });
    for o in rows {
        let l = &o.latency_ms;
        let _ = writeln!(
            s,
            "{:<8} {:>11} {:>12.1} {:>8} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            o.name, o.requests, o.rps, o.errors, l.p50, l.p90, l.p99, l.p999, l.max
        );
    }
    s.push_str(&error_lines(r));
    if r.connections_lost > 0 {
        let _ = writeln!(s, "connections lost: {}", r.connections_lost);
    }
    s
}

/// `errors: OP N x "message"` lines, empty when there were none.
pub fn error_lines(r: &RunReport) -> String {
    let mut s = String::new();
    for o in &r.ops {
        for e in &o.error_messages {
            let _ = writeln!(s, "errors: {} {} x {:?}", o.name, e.count, e.message);
        }
    }
    s
}

/// Side-by-side comparison of the same workload against two targets.
#[derive(Debug, Clone, Serialize)]
pub struct CompareReport {
    /// First target (the reference).
    pub a: RunReport,
    /// Second target.
    pub b: RunReport,
    /// Per operation (and `ALL`): b / a.
    pub ratio: Vec<RatioRow>,
}

/// b / a figures of one operation.
#[derive(Debug, Clone, Serialize)]
pub struct RatioRow {
    /// Operation name.
    pub name: String,
    /// Throughput ratio b / a (higher is better for b).
    pub rps: f64,
    /// Median latency ratio b / a (lower is better for b).
    pub p50: f64,
    /// p99 latency ratio b / a.
    pub p99: f64,
}

fn ratio(b: f64, a: f64) -> f64 {
    if a > 0.0 {
        b / a
    } else {
        f64::NAN
    }
}

/// Builds the comparison (operations matched by name).
pub fn compare(a: RunReport, b: RunReport) -> CompareReport {
    let rows = a
        .ops
        .iter()
        .chain(std::iter::once(&a.total))
        .filter_map(|oa| {
            let ob = b
                .ops
                .iter()
                .chain(std::iter::once(&b.total))
                .find(|o| o.name == oa.name)?;
            Some(RatioRow {
                name: oa.name.clone(),
                rps: ratio(ob.rps, oa.rps),
                p50: ratio(ob.latency_ms.p50, oa.latency_ms.p50),
                p99: ratio(ob.latency_ms.p99, oa.latency_ms.p99),
            })
        })
        .collect();
    CompareReport { a, b, ratio: rows }
}

/// The comparison table (after both run tables).
pub fn compare_table(c: &CompareReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "== {} vs {} (ratio = b/a) ==", c.b.label, c.a.label);
    let _ = writeln!(
        s,
        "{:<8} {:>12} {:>12} {:>7} {:>10} {:>10} {:>7} {:>10} {:>10} {:>7}",
        "op", "a rps", "b rps", "rps", "a p50 ms", "b p50 ms", "p50", "a p99 ms", "b p99 ms", "p99"
    );
    for row in &c.ratio {
        let find = |r: &RunReport| -> Option<OpReport> {
            r.ops
                .iter()
                .chain(std::iter::once(&r.total))
                .find(|o| o.name == row.name)
                .cloned()
        };
        let (Some(oa), Some(ob)) = (find(&c.a), find(&c.b)) else {
            continue;
        };
        let _ = writeln!(
            s,
            "{:<8} {:>12.1} {:>12.1} {:>7.2} {:>10.3} {:>10.3} {:>7.2} {:>10.3} {:>10.3} {:>7.2}",
            row.name,
            oa.rps,
            ob.rps,
            row.rps,
            oa.latency_ms.p50,
            ob.latency_ms.p50,
            row.p50,
            oa.latency_ms.p99,
            ob.latency_ms.p99,
            row.p99
        );
    }
    s
}

/// Writes `value` as pretty JSON to `path`.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).context("encoding the JSON report")?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    #[test]
    fn percentiles_are_ordered() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut st = OpStats::default();
        for _ in 0..100_000 {
            // A long-tailed mix: mostly ~100 µs, a few ms-scale outliers.
            let v = if rng.random_range(0..1000) == 0 {
                rng.random_range(1_000_000..50_000_000)
            } else {
                rng.random_range(50_000..200_000)
            };
            st.record(v);
        }
        let l = Latency::from_histogram(&st.hist);
        assert!(l.p50 > 0.0);
        assert!(l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p999 && l.p999 <= l.max);
        assert!((0.05..0.2).contains(&l.p50), "{l:?}");
        let curve = latency_curve(&st.hist);
        assert!(curve
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        assert_eq!(curve.last().map(|p| p.1), Some(l.max));
    }

    #[test]
    fn empty_histogram_reports_zeros() {
        let l = Latency::from_histogram(&new_histogram());
        assert_eq!(l.max, 0.0);
        assert!(latency_curve(&new_histogram()).is_empty());
    }

    #[test]
    fn errors_are_counted_and_bounded() {
        let mut a = OpStats::default();
        a.error("ERR x", 2);
        for i in 0..(MAX_ERROR_KINDS + 5) {
            a.error(&format!("ERR kind {i}"), 1);
        }
        assert_eq!(a.errors, 2 + MAX_ERROR_KINDS as u64 + 5);
        assert!(a.messages.len() <= MAX_ERROR_KINDS + 1);
        let mut b = OpStats::default();
        b.error("ERR x", 3);
        b.record(1000);
        b.merge(&a);
        assert_eq!(b.errors, 3 + a.errors);
        assert_eq!(b.messages.get("ERR x"), Some(&5));
        assert_eq!(b.messages.values().sum::<u64>(), b.errors);
        let r = OpReport::new("GET", &b, 1.0);
        assert_eq!(r.error_messages[0].message, "ERR x");
        assert_eq!(r.requests, 1);
    }

    #[test]
    fn compare_matches_ops_by_name() {
        let mut st = OpStats::default();
        st.record(100_000);
        let settings = Settings {
            clients: 1,
            pipeline: 1,
            keyspace: 1,
            dist: crate::workload::Dist::Uniform,
            value_size: crate::workload::ValueSize { min: 1, max: 1 },
            mix: "GET:1".into(),
            resp: 2,
            threads: 1,
            duration_s: None,
            requests: Some(1),
        };
        let names = vec!["GET".to_string()];
        let a = build_run("a", vec![], settings.clone(), &names, &[st.clone()], 1.0, 0);
        let b = build_run("b", vec![], settings, &names, &[st], 0.5, 0);
        let c = compare(a, b);
        assert_eq!(c.ratio[0].name, "GET");
        assert!((c.ratio[0].rps - 2.0).abs() < 1e-9);
        assert!(compare_table(&c).contains("GET"));
    }
}

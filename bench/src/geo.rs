//! Geo mode: write unique keys at a fixed rate on one node, poll other nodes until each key
//! shows up, and report the visibility lag.
//!
//! The lag of a key runs from the moment its SET was written to the writer's socket to the
//! reply of the first GET on a reader that returns it. Its resolution is one polling round
//! (reported), and it includes the SET's own commit time on the writer (the write latency is
//! reported alongside so the two can be told apart).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::BytesMut;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::driver::Conn;
use crate::report::{latency_curve, new_histogram, Latency, OpStats};
use crate::resp::{encode_bulk, encode_header, Outcome};

/// Bound of the queues between the writer and its reply reader / the pollers: a reader that
/// cannot keep up slows the writer down (the achieved rate is reported) instead of memory growing.
const QUEUE: usize = 1 << 16;
/// Writer tick: writes due since the last tick are sent as one pipelined burst.
const TICK: Duration = Duration::from_millis(1);
/// At most this many writes per tick (catching up after a stall stays bounded).
const MAX_BURST: u64 = 10_000;
/// Bins of the lag histogram.
const LAG_BINS: usize = 40;

/// Geo mode settings.
#[derive(Debug, Clone)]
pub struct GeoConfig {
    /// Writer: (label, address).
    pub write: (String, String),
    /// Readers: (label, address).
    pub reads: Vec<(String, String)>,
    /// Writes per second.
    pub rate: u64,
    /// How long to write.
    pub duration: Duration,
    /// Value size in bytes.
    pub value_size: usize,
    /// Expiry of the written keys in seconds (0: none).
    pub ttl: u64,
    /// A key not seen this long after its write counts as missing.
    pub timeout: Duration,
    /// Most keys polled per round (oldest first).
    pub poll_batch: usize,
    /// Pause between polling rounds.
    pub poll_interval: Duration,
    /// 2 or 3.
    pub resp: u8,
    /// Progress line on stderr.
    pub progress: bool,
}

/// One bar of the lag histogram.
#[derive(Debug, Clone, Serialize)]
pub struct LagBin {
    /// Lower edge, ms.
    pub from_ms: f64,
    /// Upper edge, ms.
    pub to_ms: f64,
    /// Keys whose lag fell in `[from, to)`.
    pub count: u64,
}

/// What one reader saw.
#[derive(Debug, Clone, Serialize)]
pub struct ReaderReport {
    /// Reader label.
    pub label: String,
    /// Reader address.
    pub addr: String,
    /// Keys seen.
    pub seen: u64,
    /// Keys not seen within the timeout (or left when the reader failed).
    pub missing: u64,
    /// Error replies to GET, by message.
    pub errors: u64,
    /// Error messages.
    pub error_messages: Vec<crate::report::ErrorCount>,
    /// Lag figures.
    pub lag_ms: Latency,
    /// `(percentile, ms)` points.
    pub lag_curve: Vec<(f64, f64)>,
    /// Lag histogram.
    pub lag_histogram: Vec<LagBin>,
    /// Polling rounds.
    pub poll_rounds: u64,
    /// Mean polling round time in ms: the lag's resolution.
    pub mean_round_ms: f64,
    /// Most keys waiting to be seen at once.
    pub max_outstanding: usize,
    /// Rounds that could not poll every outstanding key (lag overestimated for the rest).
    pub capped_rounds: u64,
    /// Set when the reader failed (connection lost).
    pub failure: Option<String>,
}

/// The geo mode's result.
#[derive(Debug, Clone, Serialize)]
pub struct GeoReport {
    /// Writer label.
    pub write_label: String,
    /// Writer address.
    pub write_addr: String,
    /// Requested writes per second.
    pub target_rate: u64,
    /// Achieved writes per second.
    pub achieved_rate: f64,
    /// Writes sent.
    pub writes: u64,
    /// Error replies to SET.
    pub write_errors: u64,
    /// Write error messages.
    pub write_error_messages: Vec<crate::report::ErrorCount>,
    /// SET latency on the writer.
    pub write_latency_ms: Latency,
    /// Seconds spent writing.
    pub write_seconds: f64,
    /// Set when the writer's connection failed.
    pub write_failure: Option<String>,
    /// Value size.
    pub value_size: usize,
    /// Per reader.
    pub readers: Vec<ReaderReport>,
}

impl GeoReport {
    /// Write errors, read errors and missing keys: what makes the run fail.
    pub fn problems(&self) -> u64 {
        self.write_errors
            + u64::from(self.write_failure.is_some())
            + self
                .readers
                .iter()
                .map(|r| r.errors + r.missing + u64::from(r.failure.is_some()))
                .sum::<u64>()
    }
}

fn key(prefix: &[u8], seq: u64) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
    k
}

/// Runs geo mode.
pub async fn run(cfg: GeoConfig) -> Result<GeoReport> {
    anyhow::ensure!(cfg.rate > 0, "--rate must be at least 1");
    anyhow::ensure!(!cfg.reads.is_empty(), "at least one --read is needed");
    let run_id: u64 = rand::random::<u64>() & 0xFFFF_FFFF;
    let prefix = format!("geo:{run_id:08x}:").into_bytes();

    let writer = Conn::connect(&cfg.write.1, cfg.resp, cfg.timeout).await?;
    let mut pollers = Vec::new();
    let mut poller_txs = Vec::new();
    let writes_done = Arc::new(AtomicBool::new(false));
    let seen_total = Arc::new(AtomicU64::new(0));
    for (label, addr) in &cfg.reads {
        let conn = Conn::connect(addr, cfg.resp, cfg.timeout).await?;
        let (tx, rx) = mpsc::channel::<(u64, Instant)>(QUEUE);
        poller_txs.push(tx);
        pollers.push(tokio::spawn(poll(
            conn,
            label.clone(),
            addr.clone(),
            rx,
            prefix.clone(),
            cfg.clone(),
            seen_total.clone(),
        )));
    }

    let Conn { mut wr, mut rd } = writer;
    let (ack_tx, mut ack_rx) = mpsc::channel::<Instant>(QUEUE);
    let acks = tokio::spawn(async move {
        let mut st = OpStats::default();
        while let Some(sent) = ack_rx.recv().await {
            match rd.next_outcome().await {
                Ok(o) => {
                    st.record(u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX));
                    if let Outcome::Error(e) = o {
                        st.error(&e, 1);
                    }
                }
                Err(e) => {
                    st.error(&format!("io: {e:#}"), 1 + ack_rx.len() as u64);
                    break;
                }
            }
        }
        st
    });

    let value = vec![b'v'; cfg.value_size];
    let ttl = cfg.ttl.to_string();
    let start = Instant::now();
    let progress = cfg.progress.then(|| {
        let seen = seen_total.clone();
        let done = writes_done.clone();
        let readers = cfg.reads.len() as u64;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            while !done.load(Ordering::Relaxed) {
                tick.tick().await;
                eprintln!(
                    "[geo {:.0}s] keys seen by readers: {} (x{readers} readers)",
                    start.elapsed().as_secs_f64(),
                    seen.load(Ordering::Relaxed)
                );
            }
        })
    });
    let mut seq = 0u64;
    let mut buf = BytesMut::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut write_failure = None;
    loop {
        tick.tick().await;
        let elapsed = start.elapsed();
        if elapsed >= cfg.duration {
            break;
        }
        let due = (cfg.rate as f64 * elapsed.as_secs_f64()) as u64;
        let n = due.saturating_sub(seq).min(MAX_BURST);
        if n == 0 {
            continue;
        }
        buf.clear();
        for i in 0..n {
            let k = key(&prefix, seq + i);
            encode_header(&mut buf, b'*', if cfg.ttl > 0 { 5 } else { 3 });
            encode_bulk(&mut buf, b"SET");
            encode_bulk(&mut buf, &k);
            encode_bulk(&mut buf, &value);
            if cfg.ttl > 0 {
                encode_bulk(&mut buf, b"EX");
                encode_bulk(&mut buf, ttl.as_bytes());
            }
        }
        let sent = Instant::now();
        if let Err(e) = wr.write_all(&buf).await {
            write_failure = Some(format!("writer: {e}"));
            break;
        }
        for i in 0..n {
            if ack_tx.send(sent).await.is_err() {
                write_failure = Some("writer: reply reader stopped".to_string());
                break;
            }
            for tx in &poller_txs {
                // A poller that gave up is reported by itself.
                let _ = tx.send((seq + i, sent)).await;
            }
        }
        seq += n;
        if write_failure.is_some() {
            break;
        }
    }
    let write_seconds = start
        .elapsed()
        .as_secs_f64()
        .min(cfg.duration.as_secs_f64());
    drop(poller_txs);
    drop(ack_tx);
    let wstats = acks.await.context("ack task")?;
    let mut readers = Vec::new();
    for p in pollers {
        readers.push(p.await.context("poller task")?);
    }
    writes_done.store(true, Ordering::Relaxed);
    if let Some(p) = progress {
        p.abort();
    }
    let w = crate::report::OpReport::new("SET", &wstats, write_seconds);
    Ok(GeoReport {
        write_label: cfg.write.0.clone(),
        write_addr: cfg.write.1.clone(),
        target_rate: cfg.rate,
        achieved_rate: seq as f64 / write_seconds.max(1e-9),
        writes: seq,
        write_errors: w.errors,
        write_error_messages: w.error_messages,
        write_latency_ms: w.latency_ms,
        write_seconds,
        write_failure,
        value_size: cfg.value_size,
        readers,
    })
}

/// One reader: polls outstanding keys (oldest first) until each is seen or times out.
async fn poll(
    mut conn: Conn,
    label: String,
    addr: String,
    mut rx: mpsc::Receiver<(u64, Instant)>,
    prefix: Vec<u8>,
    cfg: GeoConfig,
    seen_total: Arc<AtomicU64>,
) -> ReaderReport {
    let mut lag = new_histogram();
    let mut errs = OpStats::default();
    let mut outstanding: VecDeque<(u64, Instant)> = VecDeque::new();
    let mut keep: VecDeque<(u64, Instant)> = VecDeque::new();
    let (mut rounds, mut capped, mut missing) = (0u64, 0u64, 0u64);
    let mut round_time = Duration::ZERO;
    let mut max_outstanding = 0usize;
    let mut closed = false;
    let mut failure = None;
    let mut buf = BytesMut::new();
    loop {
        // Take in what the writer sent; block only when there is nothing to poll.
        if outstanding.is_empty() && !closed {
            match rx.recv().await {
                Some(x) => outstanding.push_back(x),
                None => closed = true,
            }
        }
        while let Ok(x) = rx.try_recv() {
            outstanding.push_back(x);
        }
        if rx.is_closed() && rx.is_empty() {
            closed = true;
        }
        if outstanding.is_empty() && closed {
            break;
        }
        max_outstanding = max_outstanding.max(outstanding.len());
        // Expire keys that never showed up.
        while let Some(&(_, sent)) = outstanding.front() {
            if sent.elapsed() < cfg.timeout {
                break;
            }
            outstanding.pop_front();
            missing += 1;
        }
        if outstanding.is_empty() {
            continue;
        }
        let n = outstanding.len().min(cfg.poll_batch);
        if n < outstanding.len() {
            capped += 1;
        }
        buf.clear();
        for &(seq, _) in outstanding.iter().take(n) {
            encode_header(&mut buf, b'*', 2);
            encode_bulk(&mut buf, b"GET");
            encode_bulk(&mut buf, &key(&prefix, seq));
        }
        let t0 = Instant::now();
        let res = async {
            conn.wr.write_all(&buf).await.context("write")?;
            keep.clear();
            for _ in 0..n {
                let o = conn.rd.next_outcome().await?;
                let Some(item) = outstanding.pop_front() else {
                    break;
                };
                match o {
                    Outcome::Value => {
                        let ns = u64::try_from(item.1.elapsed().as_nanos()).unwrap_or(u64::MAX);
                        lag.saturating_record(ns.max(1));
                        seen_total.fetch_add(1, Ordering::Relaxed);
                    }
                    Outcome::Null | Outcome::Push => keep.push_back(item),
                    Outcome::Error(e) => {
                        errs.error(&e, 1);
                        keep.push_back(item);
                    }
                }
            }
            anyhow::Ok(())
        };
        let res = tokio::time::timeout(cfg.timeout, res).await;
        rounds += 1;
        round_time += t0.elapsed();
        // Unseen keys go back in front, oldest first.
        while let Some(x) = keep.pop_back() {
            outstanding.push_front(x);
        }
        let failed = match res {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("{e:#}")),
            Err(_) => Some(format!("no reply within {:?}", cfg.timeout)),
        };
        if let Some(f) = failed {
            failure = Some(f);
            // Everything still unseen (and still to come) is missing.
            rx.close();
            while rx.recv().await.is_some() {
                missing += 1;
            }
            missing += outstanding.len() as u64;
            break;
        }
        if !cfg.poll_interval.is_zero() {
            tokio::time::sleep(cfg.poll_interval).await;
        }
    }
    let r = crate::report::OpReport::new("GET", &errs, 1.0);
    ReaderReport {
        label,
        addr,
        seen: lag.len(),
        missing,
        errors: errs.errors,
        error_messages: r.error_messages,
        lag_ms: Latency::from_histogram(&lag),
        lag_curve: latency_curve(&lag),
        lag_histogram: lag_bins(&lag),
        poll_rounds: rounds,
        mean_round_ms: if rounds > 0 {
            round_time.as_secs_f64() * 1e3 / rounds as f64
        } else {
            0.0
        },
        max_outstanding,
        capped_rounds: capped,
        failure,
    }
}

/// Buckets a nanosecond histogram into [`LAG_BINS`] equal bins from 0 to its max (ms edges).
pub fn lag_bins(h: &Histogram<u64>) -> Vec<LagBin> {
    if h.is_empty() {
        return Vec::new();
    }
    let max_ms = h.max() as f64 / 1e6;
    // A round upper bound so bin edges read well.
    let top = nice_ceiling(max_ms * 1.0001);
    let width = top / LAG_BINS as f64;
    let mut bins: Vec<LagBin> = (0..LAG_BINS)
        .map(|i| LagBin {
            from_ms: i as f64 * width,
            to_ms: (i + 1) as f64 * width,
            count: 0,
        })
        .collect();
    for v in h.iter_recorded() {
        let ms = h.highest_equivalent(v.value_iterated_to()) as f64 / 1e6;
        let i = ((ms / width) as usize).min(LAG_BINS - 1);
        bins[i].count += v.count_at_value();
    }
    bins
}

fn nice_ceiling(x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(x.log10().floor());
    for m in [1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0] {
        if m * mag >= x {
            return m * mag;
        }
    }
    10.0 * mag
}

/// The geo table.
pub fn table(r: &GeoReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let w = &r.write_latency_ms;
    let _ = writeln!(
        s,
        "== geo: write {} [{}] ==\nwrites {} in {:.2}s: {:.1}/s (target {}/s), {} B values, errors {}; SET p50 {:.3} ms p99 {:.3} ms max {:.3} ms",
        r.write_label,
        r.write_addr,
        r.writes,
        r.write_seconds,
        r.achieved_rate,
        r.target_rate,
        r.value_size,
        r.write_errors,
        w.p50,
        w.p99,
        w.max
    );
    for e in &r.write_error_messages {
        let _ = writeln!(s, "errors: SET {} x {:?}", e.count, e.message);
    }
    if let Some(f) = &r.write_failure {
        let _ = writeln!(s, "writer failed: {f}");
    }
    let _ = writeln!(
        s,
        "{:<16} {:>9} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "reader",
        "seen",
        "missing",
        "errors",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "round ms"
    );
    for rd in &r.readers {
        let l = &rd.lag_ms;
        let _ = writeln!(
            s,
            "{:<16} {:>9} {:>8} {:>7} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            rd.label,
            rd.seen,
            rd.missing,
            rd.errors,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
            rd.mean_round_ms
        );
        for e in &rd.error_messages {
            let _ = writeln!(s, "errors: {} GET {} x {:?}", rd.label, e.count, e.message);
        }
        if let Some(f) = &rd.failure {
            let _ = writeln!(s, "reader {} failed: {f}", rd.label);
        }
        if rd.capped_rounds > 0 {
            let _ = writeln!(
                s,
                "note: {}: {} rounds could not poll all {} outstanding keys (raise --poll-batch)",
                rd.label, rd.capped_rounds, rd.max_outstanding
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_bins_cover_every_value() {
        let mut h = new_histogram();
        for ms in [1u64, 2, 2, 3, 10, 47] {
            h.record(ms * 1_000_000).unwrap();
        }
        let bins = lag_bins(&h);
        assert_eq!(bins.len(), LAG_BINS);
        assert_eq!(bins.iter().map(|b| b.count).sum::<u64>(), 6);
        assert!(bins.last().unwrap().to_ms >= 47.0);
        assert!(bins
            .windows(2)
            .all(|w| (w[0].to_ms - w[1].from_ms).abs() < 1e-9));
        assert_eq!(nice_ceiling(47.0), 50.0);
        assert_eq!(nice_ceiling(6.66), 8.0);
        assert!((0.3..0.31).contains(&nice_ceiling(0.3)));
    }
}

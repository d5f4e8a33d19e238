//! Connections and the closed-loop load: each connection sends a batch of `pipeline`
//! commands, waits for every reply, and starts again (redis-benchmark's model, so figures
//! compare). A reply's latency runs from the batch's write to the reply's last byte.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::{Buf, BytesMut};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::report::{build_run, OpStats, RunReport, Settings};
use crate::resp::{encode_command, parse, scan, Outcome, Reply};
use crate::workload::Workload;

/// Read buffer growth step.
const READ_CHUNK: usize = 64 * 1024;
/// Commands per batch when preloading the key space.
const PRELOAD_BATCH: usize = 256;
/// Connections used to preload the key space (at most).
const PRELOAD_CONNS: usize = 8;
/// Pause between reconnection attempts after a connection failed mid-run.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);

/// Where the load goes: connection `i` uses `addrs[i % addrs.len()]`.
#[derive(Debug, Clone)]
pub struct Target {
    /// Name in reports.
    pub label: String,
    /// RESP addresses.
    pub addrs: Vec<String>,
}

/// Reads replies from one stream.
pub struct Replies<R> {
    rd: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> Replies<R> {
    /// Wraps a read half.
    pub fn new(rd: R) -> Self {
        Self {
            rd,
            buf: BytesMut::with_capacity(READ_CHUNK),
        }
    }

    async fn fill(&mut self) -> Result<()> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        let n = self.rd.read_buf(&mut self.buf).await.context("read")?;
        if n == 0 {
            bail!("connection closed by the server");
        }
        Ok(())
    }

    /// The next reply's outcome; RESP3 pushes are skipped.
    pub async fn next_outcome(&mut self) -> Result<Outcome> {
        loop {
            match scan(&self.buf)? {
                Some((Outcome::Push, n)) => self.buf.advance(n),
                Some((o, n)) => {
                    self.buf.advance(n);
                    return Ok(o);
                }
                None => self.fill().await?,
            }
        }
    }

    /// The next reply, fully parsed; RESP3 pushes are skipped.
    pub async fn next_reply(&mut self) -> Result<Reply> {
        loop {
            match parse(&self.buf)? {
                Some((Reply::Push(_), n)) => self.buf.advance(n),
                Some((r, n)) => {
                    self.buf.advance(n);
                    return Ok(r);
                }
                None => self.fill().await?,
            }
        }
    }
}

/// One client connection, handshake done.
pub struct Conn {
    /// Write half.
    pub wr: OwnedWriteHalf,
    /// Reply reader.
    pub rd: Replies<OwnedReadHalf>,
}

impl Conn {
    /// Connects (within `timeout`), sets TCP_NODELAY and, for RESP3, sends `HELLO 3`.
    pub async fn connect(addr: &str, resp: u8, timeout: Duration) -> Result<Self> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| anyhow!("connecting to {addr}: timed out"))?
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (rd, wr) = stream.into_split();
        let mut conn = Self {
            wr,
            rd: Replies::new(rd),
        };
        if resp == 3 {
            let reply = tokio::time::timeout(timeout, conn.request(&["HELLO", "3"]))
                .await
                .map_err(|_| anyhow!("{addr}: HELLO 3 timed out"))??;
            if let Some(e) = reply.as_error() {
                bail!("{addr} refused HELLO 3: {e}");
            }
        }
        Ok(conn)
    }

    /// Sends one command and reads its reply.
    pub async fn request(&mut self, args: &[&str]) -> Result<Reply> {
        let mut buf = Vec::new();
        encode_command(&mut buf, args);
        self.wr.write_all(&buf).await.context("write")?;
        self.rd.next_reply().await
    }
}

/// How a run is driven.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Connections.
    pub clients: usize,
    /// Commands per batch on each connection.
    pub pipeline: usize,
    /// 2 or 3.
    pub resp: u8,
    /// Stop issuing after this long.
    pub duration: Option<Duration>,
    /// Stop after this many requests.
    pub requests: Option<u64>,
    /// Connect / handshake timeout, and the longest wait for a batch's replies.
    pub timeout: Duration,
    /// Print a progress line on stderr every second.
    pub progress: bool,
    /// RNG seed (random when absent).
    pub seed: Option<u64>,
    /// SET every key of the key space once before measuring.
    pub preload: bool,
    /// Worker threads of the runtime (reported only).
    pub threads: usize,
}

/// Counters shared by the connections and the progress line.
struct Shared {
    issued: AtomicU64,
    done: AtomicU64,
    errors: AtomicU64,
    live: AtomicU64,
    stop: AtomicBool,
    limit: Option<u64>,
    deadline: Option<Instant>,
}

impl Shared {
    /// Claims up to `want` requests; 0 means the run is over.
    fn claim(&self, want: usize) -> usize {
        if self.stop.load(Ordering::Relaxed) {
            return 0;
        }
        if let Some(d) = self.deadline {
            if Instant::now() >= d {
                return 0;
            }
        }
        match self.limit {
            None => want,
            Some(limit) => {
                let start = self.issued.fetch_add(want as u64, Ordering::Relaxed);
                if start >= limit {
                    0
                } else {
                    // Bounded by `want`, a usize.
                    (limit - start).min(want as u64) as usize
                }
            }
        }
    }
}

/// Runs the workload against `target` and returns the report.
pub async fn run(
    target: &Target,
    workload: Arc<Workload>,
    cfg: &RunConfig,
    settings: Settings,
) -> Result<RunReport> {
    if target.addrs.is_empty() {
        bail!("no address to load");
    }
    if cfg.clients == 0 || cfg.pipeline == 0 {
        bail!("--clients and --pipeline must be at least 1");
    }
    let base_seed = cfg.seed.unwrap_or_else(rand::random);
    if cfg.preload {
        preload(target, &workload, cfg).await?;
    }

    let mut conns = Vec::with_capacity(cfg.clients);
    let handshakes: Vec<_> = (0..cfg.clients)
        .map(|i| {
            let addr = target.addrs[i % target.addrs.len()].clone();
            let (resp, timeout) = (cfg.resp, cfg.timeout);
            tokio::spawn(async move { Conn::connect(&addr, resp, timeout).await })
        })
        .collect();
    for h in handshakes {
        conns.push(h.await.context("connect task")??);
    }

    let start = Instant::now();
    let shared = Arc::new(Shared {
        issued: AtomicU64::new(0),
        done: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        live: AtomicU64::new(cfg.clients as u64),
        stop: AtomicBool::new(false),
        limit: cfg.requests,
        deadline: cfg.duration.map(|d| start + d),
    });
    let progress = cfg.progress.then(|| {
        tokio::spawn(progress_line(
            target.label.clone(),
            shared.clone(),
            start,
            cfg.clone(),
        ))
    });

    let mut tasks = Vec::with_capacity(cfg.clients);
    for (i, conn) in conns.into_iter().enumerate() {
        let addr = target.addrs[i % target.addrs.len()].clone();
        let seed = base_seed.wrapping_add((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        tasks.push(tokio::spawn(client(
            conn,
            addr,
            workload.clone(),
            shared.clone(),
            cfg.clone(),
            seed,
        )));
    }
    let nops = workload.ops().len();
    let mut stats = vec![OpStats::default(); nops];
    let mut lost = 0;
    for t in tasks {
        let (s, was_lost) = t.await.context("client task")?;
        for (acc, s) in stats.iter_mut().zip(&s) {
            acc.merge(s);
        }
        lost += u64::from(was_lost);
    }
    let elapsed = start.elapsed().as_secs_f64();
    shared.stop.store(true, Ordering::Relaxed);
    if let Some(p) = progress {
        p.abort();
        let _ = p.await;
        if std::io::stderr().is_terminal() {
            eprintln!();
        }
    }
    let names: Vec<String> = workload.ops().iter().map(|o| o.name.clone()).collect();
    Ok(build_run(
        &target.label,
        target.addrs.clone(),
        settings,
        &names,
        &stats,
        elapsed,
        lost,
    ))
}

/// One connection's loop. Returns its statistics and whether it was lost for good.
async fn client(
    mut conn: Conn,
    addr: String,
    wl: Arc<Workload>,
    sh: Arc<Shared>,
    cfg: RunConfig,
    seed: u64,
) -> (Vec<OpStats>, bool) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut stats = vec![OpStats::default(); wl.ops().len()];
    let mut wbuf = BytesMut::with_capacity(cfg.pipeline * 128);
    let mut batch: Vec<usize> = Vec::with_capacity(cfg.pipeline);
    let mut lost = false;
    loop {
        let k = sh.claim(cfg.pipeline);
        if k == 0 {
            break;
        }
        wbuf.clear();
        batch.clear();
        for _ in 0..k {
            batch.push(wl.encode_next(&mut rng, &mut wbuf));
        }
        let mut got = 0usize;
        let mut errors = 0u64;
        let t0 = Instant::now();
        let io = async {
            conn.wr.write_all(&wbuf).await.context("write")?;
            for &op in &batch {
                let o = conn.rd.next_outcome().await?;
                let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
                stats[op].record(ns);
                if let Outcome::Error(m) = o {
                    stats[op].error(&m, 1);
                    errors += 1;
                }
                got += 1;
            }
            anyhow::Ok(())
        };
        let res = match tokio::time::timeout(cfg.timeout, io).await {
            Ok(r) => r,
            Err(_) => Err(anyhow!("no reply within {:?}", cfg.timeout)),
        };
        sh.done.fetch_add(got as u64, Ordering::Relaxed);
        if let Err(e) = res {
            // Requests without a reply are errors too; then reconnect.
            let msg = format!("io: {e:#}");
            for &op in &batch[got..] {
                stats[op].error(&msg, 1);
            }
            errors += (k - got) as u64;
            sh.errors.fetch_add(errors, Ordering::Relaxed);
            match reconnect(&addr, &sh, &cfg).await {
                Some(c) => conn = c,
                None => {
                    lost = true;
                    break;
                }
            }
            continue;
        }
        if errors > 0 {
            sh.errors.fetch_add(errors, Ordering::Relaxed);
        }
    }
    sh.live.fetch_sub(1, Ordering::Relaxed);
    (stats, lost)
}

/// Tries to reconnect for up to `cfg.timeout` (or until the run ends).
async fn reconnect(addr: &str, sh: &Shared, cfg: &RunConfig) -> Option<Conn> {
    let give_up = Instant::now() + cfg.timeout;
    loop {
        if sh.stop.load(Ordering::Relaxed)
            || Instant::now() >= give_up
            || sh.deadline.is_some_and(|d| Instant::now() >= d)
        {
            return None;
        }
        tokio::time::sleep(RECONNECT_PAUSE).await;
        if let Ok(c) = Conn::connect(addr, cfg.resp, cfg.timeout).await {
            return Some(c);
        }
    }
}

/// Prints `[label 3s] 1234567 req  412.3k rps  errors 0  conns 50` every second on stderr.
async fn progress_line(label: String, sh: Arc<Shared>, start: Instant, cfg: RunConfig) {
    let tty = std::io::stderr().is_terminal();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = 0u64;
    loop {
        tick.tick().await;
        let done = sh.done.load(Ordering::Relaxed);
        let errors = sh.errors.load(Ordering::Relaxed);
        let live = sh.live.load(Ordering::Relaxed);
        let secs = start.elapsed().as_secs_f64();
        let goal = match (cfg.requests, cfg.duration) {
            (Some(n), _) => format!(" ({:.0}%)", 100.0 * done as f64 / n.max(1) as f64),
            (None, Some(d)) => format!(" (of {:.0}s)", d.as_secs_f64()),
            _ => String::new(),
        };
        let line = format!(
            "[{label} {secs:.0}s{goal}] {done} req  {} rps  errors {errors}  conns {live}/{}",
            crate::report::fmt_rate((done - last) as f64),
            cfg.clients
        );
        last = done;
        if tty {
            eprint!("\r\x1b[2K{line}");
        } else {
            eprintln!("{line}");
        }
    }
}

/// SETs every key of the key space once (a few connections, deep pipelines).
async fn preload(target: &Target, wl: &Arc<Workload>, cfg: &RunConfig) -> Result<()> {
    let n = wl.keys().len();
    let conns = PRELOAD_CONNS.min(cfg.clients).max(1);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..conns {
        let addr = target.addrs[i % target.addrs.len()].clone();
        let (wl, resp, timeout) = (wl.clone(), cfg.resp, cfg.timeout);
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::connect(&addr, resp, timeout).await?;
            let mut buf = BytesMut::new();
            let mut idx = i as u64;
            while idx < n {
                buf.clear();
                let mut k = 0;
                while k < PRELOAD_BATCH && idx < n {
                    wl.encode_preload(idx, &mut buf);
                    idx += conns as u64;
                    k += 1;
                }
                c.wr.write_all(&buf).await?;
                for _ in 0..k {
                    if let Outcome::Error(e) = c.rd.next_outcome().await? {
                        bail!("preload SET on {addr} failed: {e}");
                    }
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await.context("preload task")??;
    }
    if cfg.progress {
        eprintln!(
            "[{}] preloaded {n} keys in {:.2}s",
            target.label,
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

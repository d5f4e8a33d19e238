//! `meridian-bench`: a load generator for Meridian and any RESP server.
//!
//! * `run` (the default): closed-loop load with pipelining, key distributions, a GET/SET/INCR
//!   mix or custom commands, per-operation HDR latency; against one server or the nodes of a
//!   Meridian topology region.
//! * `compare`: the same workload against two servers, one after the other, and the ratio.
//! * `geo`: writes at a fixed rate on one node, polls others, reports the visibility lag.
//! * `diff`: the same seeded random command stream against a reference redis-server and a
//!   Meridian node, every reply compared (a differential compatibility check).
//! * `chaos`: a soak of a region, or of several regions, started by `config/local-cluster.sh`
//!   under kills, pauses and partitions, every answer and the final state checked.
//!
//! Tables go to stdout, progress to stderr, `--json FILE` writes the report with SVG plots
//! next to it. Exit status: 0 clean, 1 when the server answered with errors (unless
//! `--allow-errors`) or keys went missing (for `chaos`: any anomaly), 2 when the bench itself
//! failed.

mod chaos;
mod diff;
mod driver;
mod geo;
mod plot;
mod report;
mod resp;
mod topology;
mod workload;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::json;

use crate::driver::{RunConfig, Target};
use crate::report::{RunReport, Settings};
use crate::topology::Topology;
use crate::workload::{Dist, KeySpace, ValueSize, Workload};

/// Requests per run when neither `-n` nor `--duration` is given (redis-benchmark's default).
const DEFAULT_REQUESTS: u64 = 100_000;

#[derive(Parser, Debug)]
#[command(
    name = "meridian-bench",
    version,
    about = "Load generator for Meridian and any RESP server",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Load one server or a topology region (the default).
    Run(RunArgs),
    /// The same workload against two servers, one after the other; prints both and b/a.
    Compare(CompareArgs),
    /// Cross-region visibility lag: write at a rate on one node, poll others.
    Geo(GeoArgs),
    /// A region (or every region of a topology) under kills, pauses and partitions, every
    /// answer checked (started by `config/local-cluster.sh up TOPOLOGY DIR`).
    Chaos(ChaosArgs),
    /// The same random command stream against a reference server (redis-server) and Meridian,
    /// every reply compared; exit 1 on a mismatch.
    Diff(DiffArgs),
}

#[derive(Args, Debug, Clone)]
struct RunArgs {
    /// Server host.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Server port.
    #[arg(short = 'p', long, default_value_t = 6379)]
    port: u16,
    /// A Meridian topology file: load the nodes of --region (or one --node) instead of --host.
    #[arg(long, value_name = "FILE")]
    topology: Option<PathBuf>,
    /// Region of the topology to load (needed when it has several).
    #[arg(long, requires = "topology")]
    region: Option<String>,
    /// Pin every connection to this node of the topology.
    #[arg(long, requires = "topology")]
    node: Option<String>,
    #[command(flatten)]
    workload: WorkloadArgs,
    #[command(flatten)]
    out: OutputArgs,
}

#[derive(Args, Debug, Clone)]
struct CompareArgs {
    /// First server (the reference), host:port.
    #[arg(long = "a", value_name = "HOST:PORT")]
    a: String,
    /// Second server, host:port.
    #[arg(long = "b", value_name = "HOST:PORT")]
    b: String,
    /// Name of the first server in reports.
    #[arg(long)]
    a_label: Option<String>,
    /// Name of the second server in reports.
    #[arg(long)]
    b_label: Option<String>,
    #[command(flatten)]
    workload: WorkloadArgs,
    #[command(flatten)]
    out: OutputArgs,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DistArg {
    Uniform,
    Zipf,
}

#[derive(Args, Debug, Clone)]
struct WorkloadArgs {
    /// Connections.
    #[arg(short = 'c', long = "clients", default_value_t = 50)]
    clients: usize,
    /// Pipeline depth: commands sent per batch on each connection.
    #[arg(short = 'P', long, default_value_t = 1)]
    pipeline: usize,
    /// Key space size (keys key:000000000000 … like redis-benchmark -r).
    #[arg(short = 'r', long, default_value_t = 100_000)]
    keyspace: u64,
    /// Key distribution.
    #[arg(long, value_enum, default_value = "uniform")]
    dist: DistArg,
    /// Zipf exponent (with --dist zipf): 0 is uniform, ~1 a typical hot-key shape.
    #[arg(long, default_value_t = 0.99)]
    zipf_exponent: f64,
    /// Value size in bytes for SET: N or MIN-MAX.
    #[arg(short = 'd', long = "data-size", default_value = "64")]
    data_size: String,
    /// Operation mix: GET:SET[:INCR] weights (9:1, 0:1, 1:1:1) or get=9,set=1,incr=1.
    #[arg(long, default_value = "9:1")]
    ratio: String,
    /// Custom command template instead of the mix (repeatable, equal weights), e.g.
    /// "HSET h:__key__ f __value__"; placeholders __key__, __rand_int__, __value__.
    #[arg(long = "command", value_name = "TEMPLATE")]
    commands: Vec<String>,
    /// Run for this many seconds.
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Total requests (default 100000 unless --duration is given).
    #[arg(short = 'n', long)]
    requests: Option<u64>,
    /// RESP protocol version: 3 sends HELLO 3 on every connection.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(2..=3))]
    resp: u8,
    /// Worker threads of the bench (1 = single-threaded like redis-benchmark).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// SET every key once before measuring (so GETs hit).
    #[arg(long)]
    preload: bool,
    /// RNG seed, for repeatable key sequences.
    #[arg(long)]
    seed: Option<u64>,
    /// Seconds to wait for a connection or for a batch's replies.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Prefix of the keys GET and SET use.
    #[arg(long, default_value = "key:")]
    key_prefix: String,
}

#[derive(Args, Debug, Clone)]
struct OutputArgs {
    /// Write the report as JSON here; SVG plots go next to it.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// No progress line on stderr.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Exit 0 even if the server answered with errors (they are still reported).
    #[arg(long)]
    allow_errors: bool,
    /// Name of the target in reports.
    #[arg(long)]
    label: Option<String>,
}

#[derive(Args, Debug, Clone)]
struct GeoArgs {
    /// Writer: host:port, or with --topology a region, region/node or node name.
    #[arg(long)]
    write: String,
    /// Reader(s), same forms as --write (repeatable).
    #[arg(long, required = true)]
    read: Vec<String>,
    /// Topology file to resolve region/node names.
    #[arg(long, value_name = "FILE")]
    topology: Option<PathBuf>,
    /// Writes per second.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds of writing.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Value size in bytes.
    #[arg(short = 'd', long = "data-size", default_value_t = 64)]
    data_size: usize,
    /// Expiry of the written keys in seconds (0: keep them).
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
    /// Seconds after which an unseen key counts as missing (also the connect timeout).
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Most outstanding keys polled per round.
    #[arg(long, default_value_t = 4096)]
    poll_batch: usize,
    /// Pause between polling rounds, ms (0: poll back to back).
    #[arg(long, default_value_t = 0)]
    poll_interval_ms: u64,
    /// RESP protocol version.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(2..=3))]
    resp: u8,
    /// Worker threads of the bench.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    #[command(flatten)]
    out: OutputArgs,
}

#[derive(Args, Debug, Clone)]
struct ChaosArgs {
    /// The DIR given to `config/local-cluster.sh up TOPOLOGY DIR`.
    #[arg(long)]
    dir: PathBuf,
    /// Region to test; without it, every region of the topology (with several: the checks and
    /// faults between regions too).
    #[arg(long)]
    region: Option<String>,
    /// The meridian binary that restarts killed nodes (default: the running nodes').
    #[arg(long, value_name = "FILE")]
    meridian: Option<PathBuf>,
    /// Seconds of load and faults.
    #[arg(long, default_value_t = 300.0)]
    duration: f64,
    /// Worker threads, each sending one request at a time.
    #[arg(long, default_value_t = 6)]
    workers: usize,
    /// Seed of every random choice (default: random; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Kinds of fault, comma-separated: kill, kill-leader, pause, partition, remove-add, and
    /// between regions partition-regions, lossy-wan (default: every kind the topology can
    /// take); `none` for load only.
    #[arg(long)]
    faults: Option<String>,
    /// Write the report as JSON here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
struct DiffArgs {
    /// The reference server (redis-server), host:port.
    #[arg(long = "a", value_name = "HOST:PORT")]
    a: String,
    /// The server under test (Meridian), host:port.
    #[arg(long = "b", value_name = "HOST:PORT")]
    b: String,
    /// Seed of the command stream (the same seed sends the same commands).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Commands to send (a SCAN iteration to cursor 0 counts as one).
    #[arg(long, default_value_t = 10_000)]
    commands: u64,
    /// Plain keys in the key space (small, so commands collide; three awkward names are added:
    /// empty, binary, glob characters).
    #[arg(long, default_value_t = 20)]
    keys: usize,
    /// Send HELLO 3 on every connection first.
    #[arg(long)]
    resp3: bool,
    /// Stop after this many mismatches.
    #[arg(long, default_value_t = 10)]
    max_mismatches: usize,
    /// Seconds to wait for a connection or a reply.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Write every command with both replies to this file.
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
}

fn secs(s: f64, what: &str) -> Result<Duration> {
    Duration::try_from_secs_f64(s).with_context(|| format!("{what}: bad number of seconds {s}"))
}

impl WorkloadArgs {
    fn build(&self) -> Result<(Arc<Workload>, String)> {
        let dist = match self.dist {
            DistArg::Uniform => Dist::Uniform,
            DistArg::Zipf => Dist::Zipf {
                exponent: self.zipf_exponent,
            },
        };
        let keys = KeySpace::new(self.keyspace, dist)?;
        let values = ValueSize::parse(&self.data_size).context("--data-size")?;
        let ops = if self.commands.is_empty() {
            workload::parse_ratio(&self.ratio).context("--ratio")?
        } else {
            let mut ops = Vec::new();
            for c in &self.commands {
                let mut op = workload::parse_command(c)?;
                let base = op.name.clone();
                let mut k = 2;
                while ops.iter().any(|o: &workload::Op| o.name == op.name) {
                    op.name = format!("{base}#{k}");
                    k += 1;
                }
                ops.push(op);
            }
            ops
        };
        let mix: Vec<String> = ops
            .iter()
            .map(|o| format!("{}:{}", o.name, o.weight))
            .collect();
        let w = Workload::new(keys, &self.key_prefix, values, ops)?;
        Ok((Arc::new(w), mix.join(" ")))
    }

    fn config(&self, out: &OutputArgs) -> Result<RunConfig> {
        let duration = self.duration.map(|d| secs(d, "--duration")).transpose()?;
        let requests = match (self.requests, duration) {
            (None, None) => Some(DEFAULT_REQUESTS),
            (n, _) => n,
        };
        if self.threads == 0 {
            bail!("--threads must be at least 1");
        }
        Ok(RunConfig {
            clients: self.clients,
            pipeline: self.pipeline,
            resp: self.resp,
            duration,
            requests,
            timeout: secs(self.timeout, "--timeout")?,
            progress: !out.quiet,
            seed: self.seed,
            preload: self.preload,
            threads: self.threads,
        })
    }

    fn settings(&self, cfg: &RunConfig, mix: String, wl: &Workload) -> Settings {
        Settings {
            clients: cfg.clients,
            pipeline: cfg.pipeline,
            keyspace: wl.keys().len(),
            dist: match self.dist {
                DistArg::Uniform => Dist::Uniform,
                DistArg::Zipf => Dist::Zipf {
                    exponent: self.zipf_exponent,
                },
            },
            value_size: ValueSize::parse(&self.data_size).unwrap_or(ValueSize { min: 0, max: 0 }),
            mix,
            resp: cfg.resp,
            threads: cfg.threads,
            duration_s: cfg.duration.map(|d| d.as_secs_f64()),
            requests: cfg.requests,
        }
    }
}

fn runtime(threads: usize) -> Result<tokio::runtime::Runtime> {
    let mut b = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    b.enable_all().build().context("starting the tokio runtime")
}

fn write_outputs(
    json: &Path,
    value: &serde_json::Value,
    plots: impl FnOnce() -> Result<Vec<PathBuf>>,
) -> Result<()> {
    if let Some(dir) = json.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    report::write_json(json, value)?;
    let mut written = vec![json.to_path_buf()];
    written.extend(plots()?);
    for p in written {
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

/// Exit status for a finished measurement.
fn status(problems: u64, allow: bool) -> ExitCode {
    if problems > 0 && !allow {
        eprintln!("meridian-bench: {problems} error(s) reported (use --allow-errors to exit 0)");
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn cmd_run(a: RunArgs) -> Result<ExitCode> {
    let (label, addrs) = match &a.topology {
        Some(path) => {
            let t = Topology::load(path)?;
            t.select(a.region.as_deref(), a.node.as_deref())?
        }
        None => {
            let addr = format!("{}:{}", a.host, a.port);
            (addr.clone(), vec![addr])
        }
    };
    let target = Target {
        label: a.out.label.clone().unwrap_or(label),
        addrs,
    };
    let (wl, mix) = a.workload.build()?;
    let cfg = a.workload.config(&a.out)?;
    let settings = a.workload.settings(&cfg, mix, &wl);
    let rt = runtime(cfg.threads)?;
    let r = rt.block_on(driver::run(&target, wl, &cfg, settings))?;
    print!("{}", report::run_table(&r));
    if let Some(json) = &a.out.json {
        write_outputs(json, &json!({ "mode": "run", "run": &r }), || {
            plot::runs(json, &[&r])
        })?;
    }
    Ok(status(r.errors() + r.connections_lost, a.out.allow_errors))
}

fn cmd_compare(a: CompareArgs) -> Result<ExitCode> {
    let (wl, mix) = a.workload.build()?;
    let mut cfg = a.workload.config(&a.out)?;
    // Both targets get the same key sequences.
    cfg.seed = Some(cfg.seed.unwrap_or_else(rand::random));
    let rt = runtime(cfg.threads)?;
    let mut runs: Vec<RunReport> = Vec::new();
    for (addr, label) in [(&a.a, &a.a_label), (&a.b, &a.b_label)] {
        let target = Target {
            label: label.clone().unwrap_or_else(|| addr.clone()),
            addrs: vec![addr.clone()],
        };
        let settings = a.workload.settings(&cfg, mix.clone(), &wl);
        let r = rt.block_on(driver::run(&target, wl.clone(), &cfg, settings))?;
        print!("{}", report::run_table(&r));
        println!();
        runs.push(r);
    }
    let b = runs.pop().context("run b")?;
    let a_run = runs.pop().context("run a")?;
    let c = report::compare(a_run, b);
    print!("{}", report::compare_table(&c));
    if let Some(json) = &a.out.json {
        write_outputs(
            json,
            &json!({ "mode": "compare", "a": &c.a, "b": &c.b, "ratio": &c.ratio }),
            || plot::runs(json, &[&c.a, &c.b]),
        )?;
    }
    let problems = c.a.errors() + c.b.errors() + c.a.connections_lost + c.b.connections_lost;
    Ok(status(problems, a.out.allow_errors))
}

fn cmd_geo(a: GeoArgs) -> Result<ExitCode> {
    let topo = a.topology.as_deref().map(Topology::load).transpose()?;
    let resolve = |spec: &str| -> Result<(String, String)> {
        if spec.parse::<std::net::SocketAddr>().is_ok() || topo.is_none() {
            return Ok((spec.to_string(), spec.to_string()));
        }
        match &topo {
            Some(t) => t.resolve_one(spec),
            None => Ok((spec.to_string(), spec.to_string())),
        }
    };
    let write = resolve(&a.write)?;
    let reads = a
        .read
        .iter()
        .map(|r| resolve(r))
        .collect::<Result<Vec<_>>>()?;
    let cfg = geo::GeoConfig {
        write,
        reads,
        rate: a.rate,
        duration: secs(a.duration, "--duration")?,
        value_size: a.data_size,
        ttl: a.ttl,
        timeout: secs(a.timeout, "--timeout")?,
        poll_batch: a.poll_batch.max(1),
        poll_interval: Duration::from_millis(a.poll_interval_ms),
        resp: a.resp,
        progress: !a.out.quiet,
    };
    let rt = runtime(a.threads)?;
    let r = rt.block_on(geo::run(cfg))?;
    print!("{}", geo::table(&r));
    if let Some(json) = &a.out.json {
        write_outputs(json, &json!({ "mode": "geo", "geo": &r }), || {
            plot::geo(json, &r)
        })?;
    }
    Ok(status(r.problems(), a.out.allow_errors))
}

fn cmd_chaos(a: ChaosArgs) -> Result<ExitCode> {
    let cfg = chaos::ChaosConfig {
        dir: a.dir,
        region: a.region,
        meridian: a.meridian,
        duration: secs(a.duration, "--duration")?,
        workers: a.workers.max(1),
        seed: a.seed.unwrap_or_else(|| rand::random::<u64>() % 1_000_000),
        faults: a
            .faults
            .map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty() && *k != "none")
                    .map(|k| {
                        chaos::KINDS
                            .iter()
                            .copied()
                            .find(|known| *known == k)
                            .with_context(|| format!("--faults: unknown kind {k:?}"))
                    })
                    .collect::<Result<_>>()
            })
            .transpose()?,
    };
    let r = chaos::run(cfg)?;
    print!("{}", chaos::table(&r));
    if let Some(json) = &a.json {
        write_outputs(json, &json!({ "mode": "chaos", "chaos": &r }), || {
            Ok(Vec::new())
        })?;
    }
    if r.anomaly_count > 0 {
        eprintln!("meridian-bench: {} anomalies", r.anomaly_count);
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_diff(a: DiffArgs) -> Result<ExitCode> {
    let cfg = diff::DiffConfig {
        a: a.a,
        b: a.b,
        seed: a.seed,
        commands: a.commands,
        keys: a.keys.max(1),
        resp3: a.resp3,
        max_mismatches: a.max_mismatches.max(1),
        timeout: secs(a.timeout, "--timeout")?,
        log: a.log,
    };
    let r = diff::run(&cfg)?;
    println!(
        "diff: seed {} RESP{} {} commands in {:.1} s, {} mismatch(es){}",
        cfg.seed,
        if cfg.resp3 { 3 } else { 2 },
        r.steps,
        r.elapsed.as_secs_f64(),
        r.mismatches.len(),
        if r.mismatches.len() >= cfg.max_mismatches {
            " (stopped at --max-mismatches)"
        } else {
            ""
        }
    );
    Ok(if r.mismatches.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        None => cmd_run(cli.run),
        Some(Cmd::Run(a)) => cmd_run(a),
        Some(Cmd::Compare(a)) => cmd_compare(a),
        Some(Cmd::Geo(a)) => cmd_geo(a),
        Some(Cmd::Chaos(a)) => cmd_chaos(a),
        Some(Cmd::Diff(a)) => cmd_diff(a),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            eprintln!("meridian-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

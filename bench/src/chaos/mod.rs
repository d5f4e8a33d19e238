//! `meridian-bench chaos`: a soak of one region, or of every region of a topology, under
//! faults, with every answer checked.
//!
//! Workers send single requests (INCRs of shared counters, linearizable GETs of them, SETs of
//! unique keys read back on another node of the region, APPENDs of unique tokens, GETSET/DEL/GET
//! of a key of their own, SETs with a 300 ms expiry) while a nemesis kills nodes (leaders too),
//! pauses them and cuts them off, one fault at a time. At the end every fault is healed and the
//! nodes must agree, hold every acknowledged write once, and nothing that expired.
//!
//! Across regions (a topology of several, no `--region`) the APPEND and register keys give way
//! to keys that workers in every region SET and DEL, the nemesis also cuts regions apart or
//! makes their links lossy, and at the end every node of every region must show the same
//! `MERIDIAN DIGEST`, each shared key the last writer's value, each counter every increment
//! acknowledged in any region.

mod check;
mod client;
mod cluster;
mod nemesis;
mod worker;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use self::check::{Anomalies, Anomaly, Counter, LwwKey, Model, ResetCounter};
use self::client::Client;
use self::cluster::Cluster;
pub use self::nemesis::{Fault, KINDS};
use self::worker::{text, Owned, Worker, COUNTERS, LWW_KEYS, RESET_COUNTERS};
use crate::resp::Reply;

/// What to run.
pub struct ChaosConfig {
    /// The directory `config/local-cluster.sh up` started the cluster in.
    pub dir: PathBuf,
    /// The region to test; `None`: every region of the topology.
    pub region: Option<String>,
    /// The `meridian` binary for restarts (default: the running nodes').
    pub meridian: Option<PathBuf>,
    /// How long the workers and the nemesis run.
    pub duration: Duration,
    /// Worker threads.
    pub workers: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// The kinds of fault to inject (empty: none, to see the checks pass); `None`: every kind
    /// the topology can take (between regions only with several).
    pub faults: Option<Vec<&'static str>>,
}

/// Request counts by outcome.
#[derive(Default)]
pub struct Tally(Mutex<BTreeMap<String, u64>>);

impl Tally {
    /// Adds `n` to `what`.
    pub fn add(&self, what: &str, n: u64) {
        *self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(what.to_string())
            .or_default() += n;
    }

    fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The outcome of a run.
#[derive(Debug, Serialize)]
pub struct ChaosReport {
    /// The seed (to run the same choices again).
    pub seed: u64,
    /// The regions under test.
    pub regions: Vec<String>,
    /// Seconds of load and faults.
    pub duration_s: f64,
    /// Requests by outcome.
    pub requests: BTreeMap<String, u64>,
    /// INCRs acknowledged, over every counter.
    pub incrs_acked: u64,
    /// SETs of unique keys acknowledged and checked on every node.
    pub sets_checked: usize,
    /// SETs and DELs of the keys every region writes, acknowledged (several regions only).
    pub shared_writes_acked: usize,
    /// INCRs and resets (SETs, DELs) of the counters every region resets, acknowledged
    /// (several regions only).
    pub reset_counter_ops_acked: (usize, usize),
    /// The faults and the recovery after each.
    pub faults: Vec<Fault>,
    /// Seconds until the nodes agreed after the last heal (one region: on its leader and
    /// applied index; several: on `MERIDIAN DIGEST`, once every expiring key was past its time).
    pub converged_after_s: Option<f64>,
    /// Of those seconds, how long the check first waited for the last expiring key written
    /// during the run to pass its time (several regions only; 0 for one region).
    pub expiry_wait_s: f64,
    /// Every violation found.
    pub anomalies: Vec<Anomaly>,
    /// How many (beyond those kept).
    pub anomaly_count: u64,
}

/// Runs the soak and the final checks.
pub fn run(cfg: ChaosConfig) -> Result<ChaosReport> {
    let cluster = Cluster::open(&cfg.dir, cfg.region.as_deref(), cfg.meridian.clone())?;
    let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.addr.clone()).collect();
    let regions = cluster.regions();
    let geo = regions.len() > 1;
    let groups: Vec<usize> = cluster
        .nodes
        .iter()
        .map(|n| regions.iter().position(|r| *r == n.region).unwrap_or(0))
        .collect();
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let anomalies = Arc::new(Anomalies::default());
    let tally = Arc::new(Tally::default());
    let model = Arc::new(Model::default());
    *model.counters.lock().unwrap() = (0..regions.len())
        .map(|_| (0..COUNTERS).map(|_| Counter::default()).collect())
        .collect();
    if geo {
        model
            .lww
            .lock()
            .unwrap()
            .resize_with(LWW_KEYS, LwwKey::default);
        model
            .reset_counters
            .lock()
            .unwrap()
            .resize_with(RESET_COUNTERS, ResetCounter::default);
    }
    let run_tag = format!("{:x}", cfg.seed);
    eprintln!(
        "chaos: {} nodes {:?} in {regions:?}, {} workers, {:?}, seed {}",
        addrs.len(),
        cluster.nodes.iter().map(|n| &n.name).collect::<Vec<_>>(),
        cfg.workers,
        cfg.duration,
        cfg.seed
    );
    let workers: Vec<_> = (0..cfg.workers)
        .map(|id| {
            let w = Worker {
                id,
                addrs: addrs.clone(),
                groups: groups.clone(),
                geo,
                run: run_tag.clone(),
                seed: cfg.seed.wrapping_mul(1000).wrapping_add(id as u64),
                model: model.clone(),
                anomalies: anomalies.clone(),
                tally: tally.clone(),
                started,
                stop: stop.clone(),
            };
            std::thread::spawn(move || w.run())
        })
        .collect();
    let kinds = cfg.faults.clone().unwrap_or_else(|| {
        let per_node = KINDS.len() - 2;
        KINDS[..if geo { KINDS.len() } else { per_node }].to_vec()
    });
    let faults = std::thread::scope(|s| {
        let nemesis = (!kinds.is_empty()).then(|| {
            s.spawn(|| nemesis::run(&cluster, &kinds, cfg.seed, started, &stop, &anomalies))
        });
        while started.elapsed() < cfg.duration {
            std::thread::sleep(Duration::from_millis(200));
        }
        stop.store(true, Ordering::SeqCst);
        nemesis.map_or_else(Vec::new, |n| n.join().expect("nemesis panicked"))
    });
    let owned: Vec<Owned> = workers
        .into_iter()
        .map(|w| w.join().expect("worker panicked"))
        .collect();
    let duration_s = started.elapsed().as_secs_f64();
    eprintln!("chaos: load stopped after {duration_s:.1}s; healing and checking");

    for node in cluster.heal() {
        anomalies.report(duration_s, "NEMESIS", format!("could not heal {node}"));
    }
    let healed = Instant::now();
    for i in 0..cluster.nodes.len() {
        cluster.signal(i, "CONT");
        cluster.restart(i)?;
    }
    let mut expiry_wait_s = 0.0;
    let converged_after_s = if geo {
        expiry_wait_s = wait_until_expired(&model, started);
        converge_digests(&cluster, healed)
    } else {
        converge(&cluster)
    };
    if converged_after_s.is_none() {
        let what = if geo {
            "the same MERIDIAN DIGEST"
        } else {
            "the same applied index"
        };
        anomalies.report(
            started.elapsed().as_secs_f64(),
            "DIVERGED",
            format!("the nodes did not reach {what} within 60 s of the heal"),
        );
    }
    let mut owned = owned;
    let sets_checked = final_checks(&cluster, &model, &mut owned, &run_tag, started, &anomalies)?;
    let shared_writes_acked = model.lww.lock().unwrap().iter().map(LwwKey::acked).sum();
    let reset_counter_ops_acked = model
        .reset_counters
        .lock()
        .unwrap()
        .iter()
        .map(ResetCounter::acked)
        .fold((0, 0), |(i, r), (ci, cr)| (i + ci, r + cr));
    let counters = model.counters.lock().unwrap();
    Ok(ChaosReport {
        seed: cfg.seed,
        regions,
        duration_s,
        requests: tally.snapshot(),
        incrs_acked: counters.iter().flatten().map(|c| c.acked).sum(),
        sets_checked,
        shared_writes_acked,
        reset_counter_ops_acked,
        faults,
        converged_after_s,
        expiry_wait_s,
        anomalies: anomalies.kept(),
        anomaly_count: anomalies.count(),
    })
}

/// Seconds until every node names the same leader and has applied as far as it (writes have
/// stopped), polled for up to 60 s; `None` if they never do.
fn converge(cluster: &Cluster) -> Option<f64> {
    let healed = Instant::now();
    while healed.elapsed() < Duration::from_secs(60) {
        let views: Vec<_> = (0..cluster.nodes.len())
            .map(|i| cluster.raft(i).ok())
            .collect();
        if let Some(views) = views.into_iter().collect::<Option<Vec<_>>>() {
            let same = |f: &dyn Fn(&cluster::RaftView) -> Option<u64>| {
                f(&views[0]).is_some() && views.iter().all(|v| f(v) == f(&views[0]))
            };
            if same(&|v| v.leader_id) && same(&|v| v.applied) {
                return Some(healed.elapsed().as_secs_f64());
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

/// Seconds from `healed` until every node shows the same `MERIDIAN DIGEST` (writes have
/// stopped, every region's replication catches up), polled for up to 60 s; `None` if they
/// never do.
fn converge_digests(cluster: &Cluster, healed: Instant) -> Option<f64> {
    while healed.elapsed() < Duration::from_secs(60) {
        let digests: Option<Vec<Reply>> = (0..cluster.nodes.len())
            .map(|i| cluster.admin(i, &["MERIDIAN", "DIGEST"]).ok())
            .collect();
        if digests.is_some_and(|d| d.iter().all(|x| *x == d[0])) {
            return Some(healed.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

/// Sleeps until every key written with a short expiry is past its time: digests hash the
/// visible keys, and one taken while a key written just before the end is still alive would
/// differ from a later one. Returns the seconds it slept.
fn wait_until_expired(model: &Model, started: Instant) -> f64 {
    let last_gone = model
        .expiring
        .lock()
        .unwrap()
        .iter()
        .map(|(_, gone_at)| *gone_at)
        .fold(0.0, f64::max);
    let left = last_gone - started.elapsed().as_secs_f64();
    let wait = left.max(0.0) + 0.1;
    std::thread::sleep(Duration::from_secs_f64(wait));
    wait
}

/// Reads the final state on every node and checks it against the model; returns how many
/// acknowledged SETs were checked.
fn final_checks(
    cluster: &Cluster,
    model: &Model,
    owned: &mut [Owned],
    run_tag: &str,
    started: Instant,
    anomalies: &Anomalies,
) -> Result<usize> {
    let at = || started.elapsed().as_secs_f64();
    wait_until_expired(model, started);
    let counters: Vec<Counter> = {
        let groups = model.counters.lock().unwrap();
        (0..COUNTERS)
            .map(|c| Counter::merged(groups.iter().map(|g| &g[c])))
            .collect()
    };
    let sets = model.sets.lock().unwrap();
    let expiring = model.expiring.lock().unwrap();
    let lww = model.lww.lock().unwrap();
    let reset_counters = model.reset_counters.lock().unwrap();
    let mut digests = Vec::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        let mut c = Client::connect(&node.addr, Duration::from_secs(10))
            .with_context(|| format!("connecting to {} for the final checks", node.name))?;
        let mut get = |key: &str| -> Result<Option<String>> {
            match c.call(&["GET", key])? {
                Reply::Error(e) => anyhow::bail!("GET {key} on {}: {e}", node.name),
                r => Ok(text(&r)),
            }
        };
        for (n, counter) in counters.iter().enumerate() {
            let key = format!("chaos:{run_tag}:ctr:{n}");
            let value = get(&key)?.map_or(0, |v| v.parse().unwrap_or(-1));
            if let Err(why) = counter.check_final(value) {
                anomalies.report(at(), "COUNTER", format!("{key} on {}: {why}", node.name));
            }
        }
        for (k, writes) in lww.iter().enumerate() {
            let key = format!("chaos:{run_tag}:l:{k}");
            if let Err(why) = writes.check_final(get(&key)?.as_deref()) {
                anomalies.report(at(), "LWW", format!("{key} on {}: {why}", node.name));
            }
        }
        for (k, counter) in reset_counters.iter().enumerate() {
            let key = format!("chaos:{run_tag}:rc:{k}");
            let value = get(&key)?.map_or(0, |v| v.parse().unwrap_or(-1));
            if let Err(why) = counter.check_final(value) {
                anomalies.report(
                    at(),
                    "RESET_COUNTER",
                    format!("{key} on {}: {why}", node.name),
                );
            }
        }
        // Across regions the workers write neither (see `worker`).
        let owned_keys = if lww.is_empty() { &mut *owned } else { &mut [] };
        for w in owned_keys.iter_mut() {
            let value = get(&w.append_key)?.unwrap_or_default();
            if let Err(why) = w.append.check_final(&value) {
                let detail = format!("{} on {}: {why}", w.append_key, node.name);
                anomalies.report(at(), "APPEND", detail);
            }
            let value = get(&w.register_key)?;
            // Each node reads the same final value; checked as one more read.
            if let Err(why) = w.register.check_final(value.as_deref()) {
                let detail = format!("{} on {}: {why}", w.register_key, node.name);
                anomalies.report(at(), "REGISTER", detail);
            }
        }
        let keys: Vec<&String> = sets.keys().collect();
        for chunk in keys.chunks(500) {
            let mut args: Vec<&str> = vec!["MGET"];
            args.extend(chunk.iter().map(|k| k.as_str()));
            let Reply::Array(values) = c.call(&args)? else {
                anyhow::bail!("MGET on {} answered no array", node.name);
            };
            for (key, value) in chunk.iter().zip(values) {
                if text(&value).as_deref() != Some(sets[*key].as_str()) {
                    anomalies.report(
                        at(),
                        "LOST_SET",
                        format!("{key} on {}: {value:?}, want {:?}", node.name, sets[*key]),
                    );
                }
            }
        }
        let now = at();
        let due: Vec<&str> = expiring
            .iter()
            .filter(|(_, gone_at)| *gone_at < now)
            .map(|(key, _)| key.as_str())
            .collect();
        // EXISTS of 500 keys at a time; a chunk that counts any is looked at key by key.
        for chunk in due.chunks(500) {
            let mut args = vec!["EXISTS"];
            args.extend_from_slice(chunk);
            if c.call(&args)? == Reply::Integer(0) {
                continue;
            }
            for key in chunk {
                if c.call(&["EXISTS", key])? != Reply::Integer(0) {
                    anomalies.report(
                        at(),
                        "EXPIRY",
                        format!("{key} on {} outlived its 300 ms", node.name),
                    );
                }
            }
        }
        digests.push((
            cluster.nodes[i].name.clone(),
            c.call(&["MERIDIAN", "DIGEST"])?,
        ));
    }
    if digests.iter().any(|(_, d)| *d != digests[0].1) {
        anomalies.report(at(), "DIGEST", format!("the nodes differ: {digests:?}"));
    }
    Ok(sets.len())
}

/// The report as a few lines of text.
pub fn table(r: &ChaosReport) -> String {
    let recoveries: Vec<f64> = r.faults.iter().filter_map(|f| f.recovery_s).collect();
    let max = recoveries.iter().cloned().fold(0.0, f64::max);
    let mean = recoveries.iter().sum::<f64>() / recoveries.len().max(1) as f64;
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for f in &r.faults {
        *kinds.entry(f.kind).or_default() += 1;
    }
    let mut out = format!(
        "chaos seed {} over {:?}: {:.0} s, {} requests, {} INCRs acknowledged, {} SETs checked on every node\n",
        r.seed,
        r.regions,
        r.duration_s,
        r.requests.get("requests").copied().unwrap_or(0),
        r.incrs_acked,
        r.sets_checked
    );
    if r.regions.len() > 1 {
        out += &format!(
            "{} SETs and DELs of keys every region writes acknowledged, the last writer's value on every node\n",
            r.shared_writes_acked
        );
        out += &format!(
            "{} INCRs and {} resets of counters every region resets acknowledged, each counter's value allowed on every node\n",
            r.reset_counter_ops_acked.0, r.reset_counter_ops_acked.1
        );
    }
    out += &format!(
        "faults {} {kinds:?}; every node served again after max {max:.2} s, mean {mean:.2} s\n",
        r.faults.len()
    );
    out += &format!("outcomes {:?}\n", r.requests);
    out += &format!(
        "converged after the heal in {}\n",
        r.converged_after_s.map_or("(never)".to_string(), |s| {
            if r.expiry_wait_s > 0.0 {
                format!(
                    "{s:.2} s ({:.2} s of it waiting for the last expiring key's time)",
                    r.expiry_wait_s.min(s)
                )
            } else {
                format!("{s:.2} s")
            }
        })
    );
    out += &format!("anomalies {}\n", r.anomaly_count);
    for a in r.anomalies.iter().take(20) {
        out += &format!("  {:.1}s {} {}\n", a.at_s, a.kind, a.detail);
    }
    out
}

//! The faults: every few seconds one node is killed (or a region's leader is), paused with
//! SIGSTOP, cut off from its region, or removed from its region's membership and added back, or
//! two regions are cut apart or their links made slow and lossy; then the fault is healed and
//! every node must answer a PING and take a write again within a bound.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::check::Anomalies;
use super::client::call_once;
use super::cluster::Cluster;
use crate::resp::Reply;

/// Time every node has to answer again after a fault is healed.
const RECOVERY_BOUND: Duration = Duration::from_secs(10);

/// One fault and how the region came back from it.
#[derive(Debug, Clone, Serialize)]
pub struct Fault {
    /// One of [`KINDS`]: `kill`, `kill-leader`, `pause`, `partition` (from the rest of its
    /// region), `remove-add` (out of its region's membership, then added back),
    /// `partition-regions` or `lossy-wan` (between two regions).
    pub kind: &'static str,
    /// The node's name, or the two regions' (`a|b`).
    pub node: String,
    /// Whether the node led its region when the fault began.
    pub was_leader: bool,
    /// Seconds since the start of the run.
    pub at_s: f64,
    /// How long the fault lasted, seconds.
    pub length_s: f64,
    /// Seconds from the heal until every node answered a PING and took a write (`None`: not
    /// within the bound).
    pub recovery_s: Option<f64>,
}

/// Injects faults until `stop`, one at a time; returns them.
pub fn run(
    cluster: &Cluster,
    kinds: &[&'static str],
    seed: u64,
    started: Instant,
    stop: &AtomicBool,
    anomalies: &Anomalies,
) -> Vec<Fault> {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x006e_656d_6573_6973);
    let mut faults = Vec::new();
    let sleep = |d: Duration| {
        let until = Instant::now() + d;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    sleep(Duration::from_secs(5));
    while !stop.load(Ordering::Relaxed) {
        sleep(Duration::from_secs_f64(rng.random_range(3.0..10.0)));
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let kind = kinds[rng.random_range(0..kinds.len())];
        let Some(target) = pick(cluster, kind, &mut rng) else {
            continue;
        };
        let at_s = started.elapsed().as_secs_f64();
        let length = Duration::from_secs_f64(match kind {
            "pause" => rng.random_range(1.0..4.0),
            _ => rng.random_range(2.0..8.0),
        });
        let (name, was_leader) = match &target {
            Target::Node(i) => {
                let n = &cluster.nodes[*i];
                (n.name.clone(), cluster.leader(&n.region) == Some(*i))
            }
            Target::Regions(a, b) => (format!("{a}|{b}"), false),
        };
        eprintln!(
            "FAULT {at_s:.1}s {kind} {name} for {:.1}s",
            length.as_secs_f64()
        );
        let began = Instant::now();
        let injected = match (&target, kind) {
            (Target::Regions(a, b), _) => {
                let shape: &[&str] = if kind == "lossy-wan" {
                    &["DELAY", "30", "JITTER", "20", "LOSS", "0.3"]
                } else {
                    &["PARTITION"]
                };
                cluster.shape_between(a, b, shape).is_empty()
            }
            (Target::Node(victim), "pause") => cluster.signal(*victim, "STOP"),
            (Target::Node(victim), "partition") => cluster.partition(*victim).is_ok(),
            (Target::Node(victim), "remove-add") => match cluster.remove_member(*victim) {
                Ok(()) => true,
                // The leader may have changed meanwhile: nothing was done, nothing to undo.
                Err(e) => {
                    eprintln!("NEMESIS could not remove {name}: {e:#}");
                    continue;
                }
            },
            (Target::Node(victim), _) => cluster.signal(*victim, "KILL"),
        };
        if !injected {
            anomalies.report(at_s, "NEMESIS", format!("could not {kind} {name}"));
        }
        std::thread::sleep(length);
        match (&target, kind) {
            (Target::Node(victim), "pause") => {
                cluster.signal(*victim, "CONT");
            }
            (Target::Node(victim), "remove-add") => {
                if let Err(e) = add_back(cluster, *victim) {
                    anomalies.report(at_s, "NEMESIS", format!("adding {name} back: {e:#}"));
                }
            }
            (Target::Regions(..), _) | (_, "partition") => {
                for node in cluster.heal() {
                    anomalies.report(at_s, "NEMESIS", format!("could not heal {node}"));
                }
            }
            (Target::Node(victim), _) => {
                if let Err(e) = cluster.restart(*victim) {
                    anomalies.report(at_s, "NEMESIS", format!("restarting {name}: {e:#}"));
                }
            }
        }
        let length_s = began.elapsed().as_secs_f64();
        let recovery_s = recovery(cluster);
        match recovery_s {
            Some(s) => eprintln!("HEALED {kind} {name}: every node serves again after {s:.2}s"),
            None => anomalies.report(
                started.elapsed().as_secs_f64(),
                "STALL",
                format!(
                    "after {kind} of {name}, a node did not answer or take a write within {RECOVERY_BOUND:?}"
                ),
            ),
        }
        faults.push(Fault {
            kind,
            node: name,
            was_leader,
            at_s,
            length_s,
            recovery_s,
        });
    }
    faults
}

/// The faults (those chosen are equally likely). The first five strike a node (in a random
/// region), the last two the links between two regions.
pub const KINDS: [&str; 7] = [
    "kill",
    "kill-leader",
    "pause",
    "partition",
    "remove-add",
    "partition-regions",
    "lossy-wan",
];

/// What a fault strikes.
enum Target {
    /// One node.
    Node(usize),
    /// The links between two regions.
    Regions(String, String),
}

/// The target of a fault of kind `kind`, if one can take it now: `kill-leader` a region's
/// leader, `remove-add` a follower and `partition` a node of a region of several nodes,
/// `partition-regions` and `lossy-wan` two regions, the others any node.
fn pick(cluster: &Cluster, kind: &str, rng: &mut SmallRng) -> Option<Target> {
    let regions = cluster.regions();
    let region = regions[rng.random_range(0..regions.len())].clone();
    match kind {
        "kill-leader" => cluster.leader(&region).map(Target::Node),
        "remove-add" => {
            let several: Vec<&String> = regions
                .iter()
                .filter(|r| cluster.region_nodes(r).len() > 1)
                .collect();
            let region = several.get(rng.random_range(0..several.len().max(1)))?;
            let leader = cluster.leader(region)?;
            // A follower: the leader would first hand over its lead.
            let others: Vec<usize> = cluster
                .region_nodes(region)
                .into_iter()
                .filter(|&i| i != leader)
                .collect();
            Some(Target::Node(others[rng.random_range(0..others.len())]))
        }
        "partition-regions" | "lossy-wan" => {
            if regions.len() < 2 {
                return None;
            }
            let other = loop {
                let r = &regions[rng.random_range(0..regions.len())];
                if *r != region {
                    break r.clone();
                }
            };
            Some(Target::Regions(region, other))
        }
        "partition" => {
            // From the rest of its region: one that has others.
            let some: Vec<usize> = (0..cluster.nodes.len())
                .filter(|&i| cluster.region_nodes(&cluster.nodes[i].region).len() > 1)
                .collect();
            some.get(rng.random_range(0..some.len().max(1)))
                .copied()
                .map(Target::Node)
        }
        _ => Some(Target::Node(rng.random_range(0..cluster.nodes.len()))),
    }
}

/// Adds a removed node back, retried for a minute (a leader change makes an attempt fail).
fn add_back(cluster: &Cluster, i: usize) -> anyhow::Result<()> {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        match cluster.add_member(i) {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= until => return Err(e),
            Err(e) => {
                eprintln!(
                    "NEMESIS adding {} back failed, retrying: {e:#}",
                    cluster.nodes[i].name
                );
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

/// Seconds until every node answers a PING and takes a write, or `None` past the bound.
pub fn recovery(cluster: &Cluster) -> Option<f64> {
    let healed = Instant::now();
    let mut pending: Vec<usize> = (0..cluster.nodes.len()).collect();
    while !pending.is_empty() {
        if healed.elapsed() > RECOVERY_BOUND {
            return None;
        }
        pending.retain(|&i| {
            let addr = &cluster.nodes[i].addr;
            let t = Duration::from_secs(2);
            let ping = call_once(addr, &["PING"], t);
            let write = call_once(addr, &["SET", "chaos:liveness", "1"], t);
            !(matches!(ping, Ok(Reply::Simple(_))) && matches!(write, Ok(Reply::Simple(_))))
        });
        if !pending.is_empty() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Some(healed.elapsed().as_secs_f64())
}

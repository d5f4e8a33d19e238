//! The nodes under test (one region's, or every region's), as `config/local-cluster.sh up
//! TOPOLOGY DIR` left them: each node's pid in `DIR/<name>/pid`, its data in `DIR/<name>/data`,
//! its log in `DIR/<name>/node.log`. Kills, pauses and restarts nodes the way that script
//! starts them, and cuts nodes or regions off with Meridian's emulated WAN (`MERIDIAN WAN`).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::client::{call_once, fields};
use crate::resp::Reply;
use crate::topology::Topology;

/// Bound on one admin request.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(2);

/// One node under test.
pub struct NodeCtl {
    /// Its name in the topology.
    pub name: String,
    /// Its region's name.
    pub region: String,
    /// Its RESP address.
    pub addr: String,
    /// Its node-to-node (QUIC) address.
    pub peer: String,
    /// Its Raft id.
    pub id: u64,
}

/// The nodes of one region, or of every region, started under one directory.
pub struct Cluster {
    dir: PathBuf,
    /// The `meridian` binary that restarts nodes.
    bin: PathBuf,
    /// The nodes, region by region.
    pub nodes: Vec<NodeCtl>,
    /// Nodes this process restarted, reaped once they exit.
    children: Mutex<Vec<Child>>,
}

/// What `MERIDIAN RAFT` says about a node.
#[derive(Debug, Clone, Default)]
pub struct RaftView {
    /// Its Raft role (`leader`, `follower`, …).
    pub role: String,
    /// Its term.
    pub term: u64,
    /// The leader it names, if any.
    pub leader_id: Option<u64>,
    /// Its own id.
    pub node_id: u64,
    /// Its applied log index.
    pub applied: Option<u64>,
}

impl Cluster {
    /// The region `region` of the cluster started under `dir`, or with `None` every region.
    /// `bin` restarts nodes; without it, the binary the first running node was started from.
    pub fn open(dir: &Path, region: Option<&str>, bin: Option<PathBuf>) -> Result<Cluster> {
        let topo = Topology::load(&dir.join("topology.toml"))
            .context("the directory of a cluster started by config/local-cluster.sh up")?;
        let regions: Vec<_> = match region {
            Some(name) => vec![topo
                .regions
                .iter()
                .find(|r| r.name == name)
                .context("no such region in the topology")?],
            None => topo.regions.iter().collect(),
        };
        let peers = peer_addresses(&dir.join("topology.toml"))?;
        let nodes: Vec<NodeCtl> = regions
            .iter()
            .flat_map(|r| r.nodes.iter().map(move |n| (r, n)))
            .map(|(r, n)| {
                let addr = n.resp.clone().context("a node without a resp address")?;
                let id = call_once(&addr, &["MERIDIAN", "RAFT"], ADMIN_TIMEOUT)
                    .ok()
                    .and_then(|reply| {
                        fields(&reply)
                            .into_iter()
                            .find(|(k, _)| k == "node_id")
                            .and_then(|(_, v)| v.parse().ok())
                    })
                    .with_context(|| format!("the Raft id of {} (is it running?)", n.name))?;
                Ok(NodeCtl {
                    name: n.name.clone(),
                    region: r.name.clone(),
                    peer: peers
                        .get(&n.name)
                        .cloned()
                        .with_context(|| format!("no peer address for {}", n.name))?,
                    addr,
                    id,
                })
            })
            .collect::<Result<_>>()?;
        let mut cluster = Cluster {
            dir: dir.to_path_buf(),
            bin: PathBuf::new(),
            nodes,
            children: Mutex::new(Vec::new()),
        };
        cluster.bin = match bin {
            Some(b) => b,
            None => (0..cluster.nodes.len())
                .find_map(|i| cluster.pid(i))
                .and_then(|pid| fs::read_link(format!("/proc/{pid}/exe")).ok())
                .filter(|p| p.exists())
                .context("no running node to take the meridian binary from: pass --meridian")?,
        };
        Ok(cluster)
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.join(&self.nodes[i].name).join("data")
    }

    /// The pid of node `i` if it runs: the pid file's process must name the node's data
    /// directory on its command line (a pid may be reused).
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.reap();
        let pid: u32 = fs::read_to_string(self.dir.join(&self.nodes[i].name).join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let data = self.data_dir(i);
        let data = data.to_string_lossy();
        cmdline
            .split(|&b| b == 0)
            .any(|arg| arg == data.as_bytes())
            .then_some(pid)
    }

    fn reap(&self) {
        let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        children.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
    }

    /// Sends `signal` (`KILL`, `STOP`, `CONT`) to node `i`; false if it does not run.
    pub fn signal(&self, i: usize, signal: &str) -> bool {
        let Some(pid) = self.pid(i) else {
            return false;
        };
        Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Starts node `i` again as `config/local-cluster.sh` does (its log appended to).
    pub fn restart(&self, i: usize) -> Result<()> {
        if self.pid(i).is_some() {
            return Ok(());
        }
        let node_dir = self.dir.join(&self.nodes[i].name);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(node_dir.join("node.log"))?;
        writeln!(
            log,
            "--- meridian-bench chaos: restarting {}",
            self.nodes[i].name
        )?;
        let child = Command::new(&self.bin)
            .arg("--config")
            .arg(self.dir.join("topology.toml"))
            .args(["--node", &self.nodes[i].name, "--data-dir"])
            .arg(self.data_dir(i))
            .env(
                "RUST_LOG",
                "meridian=info,meridian_server=info,geo=info,openraft=warn",
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        fs::write(node_dir.join("pid"), child.id().to_string())?;
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child);
        Ok(())
    }

    /// One admin command to node `i`.
    pub fn admin(&self, i: usize, args: &[&str]) -> Result<Reply> {
        let reply = call_once(&self.nodes[i].addr, args, ADMIN_TIMEOUT)?;
        if let Some(e) = reply.as_error() {
            bail!("{} on {}: {e}", args.join(" "), self.nodes[i].name);
        }
        Ok(reply)
    }

    /// `MERIDIAN RAFT` of node `i`.
    pub fn raft(&self, i: usize) -> Result<RaftView> {
        let reply = self.admin(i, &["MERIDIAN", "RAFT"])?;
        let mut view = RaftView::default();
        for (k, v) in fields(&reply) {
            match k.as_str() {
                "role" => view.role = v,
                "term" => view.term = v.parse().unwrap_or(0),
                "leader_id" => view.leader_id = v.parse().ok(),
                "node_id" => view.node_id = v.parse().unwrap_or(0),
                "applied_index" => view.applied = v.parse().ok(),
                _ => {}
            }
        }
        Ok(view)
    }

    /// The regions' names, in topology order.
    pub fn regions(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for n in &self.nodes {
            if !names.contains(&n.region) {
                names.push(n.region.clone());
            }
        }
        names
    }

    /// The nodes of region `region`.
    pub fn region_nodes(&self, region: &str) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].region == region)
            .collect()
    }

    /// The node of region `region` that leads in the highest term any of its nodes reports,
    /// if one does.
    pub fn leader(&self, region: &str) -> Option<usize> {
        self.region_nodes(region)
            .into_iter()
            .filter_map(|i| self.raft(i).ok().map(|v| (i, v)))
            .filter(|(_, v)| v.role == "leader")
            .max_by_key(|(_, v)| v.term)
            .map(|(i, _)| i)
    }

    /// Removes node `i` from the region's membership (through the leader), as an operator
    /// taking it out for maintenance; the process keeps running.
    pub fn remove_member(&self, i: usize) -> Result<()> {
        let leader = self.leader(&self.nodes[i].region).context("no leader")?;
        let id = self.nodes[i].id.to_string();
        self.admin_slow(leader, &["MERIDIAN", "NODE", "REMOVE", &id])
    }

    /// Adds node `i` back (learner, caught up, then voter).
    pub fn add_member(&self, i: usize) -> Result<()> {
        let leader = self.leader(&self.nodes[i].region).context("no leader")?;
        let n = &self.nodes[i];
        let id = n.id.to_string();
        self.admin_slow(
            leader,
            &["MERIDIAN", "NODE", "ADD", &id, &n.name, &n.peer, &n.addr],
        )
    }

    /// A membership command: it waits for a catch-up, so a longer bound.
    fn admin_slow(&self, i: usize, args: &[&str]) -> Result<()> {
        let reply = call_once(&self.nodes[i].addr, args, Duration::from_secs(60))?;
        match reply.as_error() {
            Some(e) => bail!("{} on {}: {e}", args.join(" "), self.nodes[i].name),
            None => Ok(()),
        }
    }

    /// Cuts node `i` off from the rest of its region, both ways.
    pub fn partition(&self, i: usize) -> Result<()> {
        let region = &self.nodes[i].region;
        self.admin(i, &["MERIDIAN", "WAN", "SET", region, "PARTITION"])?;
        for j in self.region_nodes(region).into_iter().filter(|&j| j != i) {
            self.admin(
                j,
                &["MERIDIAN", "WAN", "SET", &self.nodes[i].name, "PARTITION"],
            )?;
        }
        Ok(())
    }

    /// Shapes the links between regions `a` and `b`, both ways, with `MERIDIAN WAN SET`'s
    /// arguments `shape` (`PARTITION`, or `DELAY ms LOSS p`, …), on every node of both that
    /// answers; the nodes that did not.
    pub fn shape_between(&self, a: &str, b: &str, shape: &[&str]) -> Vec<String> {
        let mut failed = Vec::new();
        for (from, to) in [(a, b), (b, a)] {
            for i in self.region_nodes(from) {
                let mut args = vec!["MERIDIAN", "WAN", "SET", to];
                args.extend_from_slice(shape);
                if self.admin(i, &args).is_err() {
                    failed.push(self.nodes[i].name.clone());
                }
            }
        }
        failed
    }

    /// `MERIDIAN WAN CLEAR` on every node, retried for up to 10 s per node (a node may be
    /// restarting); the nodes it could not reach.
    pub fn heal(&self) -> Vec<String> {
        let mut failed = Vec::new();
        for i in 0..self.nodes.len() {
            let until = Instant::now() + Duration::from_secs(10);
            while self.admin(i, &["MERIDIAN", "WAN", "CLEAR"]).is_err() {
                if Instant::now() >= until {
                    failed.push(self.nodes[i].name.clone());
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        failed
    }
}

/// Node name → peer address, from the topology file (the bench's topology reader keeps only
/// RESP addresses).
fn peer_addresses(path: &Path) -> Result<std::collections::HashMap<String, String>> {
    let root: toml::Table = toml::from_str(&fs::read_to_string(path)?)?;
    let mut peers = std::collections::HashMap::new();
    let regions = root.get("region").and_then(|r| r.as_array());
    for region in regions.into_iter().flatten() {
        let nodes = region.get("node").and_then(|n| n.as_array());
        for node in nodes.into_iter().flatten() {
            let field = |k: &str| node.get(k).and_then(|v| v.as_str()).map(str::to_string);
            if let (Some(name), Some(peer)) = (field("name"), field("peer")) {
                peers.insert(name, peer);
            }
        }
    }
    Ok(peers)
}

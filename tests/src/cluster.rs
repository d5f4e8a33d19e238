//! A whole topology of `meridian` nodes on loopback.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use tempfile::TempDir;

use crate::limit::NodePermit;
use crate::node::{meridian_bin, Node};
use crate::ports::free_port;
use crate::raw::{RawConn, Reply};
use crate::wait::eventually;

/// Time allowed for every region to elect a leader after all nodes answer `PING`.
const LEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed for one node to answer `PING` after spawn.
const NODE_START_TIMEOUT: Duration = Duration::from_secs(30);

/// One region of a [`ClusterSpec`].
#[derive(Clone, Debug)]
pub struct RegionSpec {
    /// Region name (`r1`, `eu`, …).
    pub name: String,
    /// Number of nodes; they are named `n1`, `n2`, … across the whole cluster, in order.
    pub nodes: usize,
}

/// What [`Cluster::start`] builds.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// `[cluster] name`.
    pub name: String,
    /// Regions in order.
    pub regions: Vec<RegionSpec>,
    /// `[cluster] wan_emulation`.
    pub wan_emulation: bool,
    /// Extra arguments for every node.
    pub extra_args: Vec<String>,
    /// Extra environment for every node.
    pub env: Vec<(String, String)>,
}

impl ClusterSpec {
    /// One region `r1` of `nodes` nodes.
    pub fn region(nodes: usize) -> ClusterSpec {
        ClusterSpec::regions(&[("r1", nodes)])
    }

    /// Several regions: `&[("r1", 3), ("r2", 3)]`.
    pub fn regions(regions: &[(&str, usize)]) -> ClusterSpec {
        ClusterSpec {
            name: "t".to_string(),
            regions: regions
                .iter()
                .map(|&(name, nodes)| RegionSpec {
                    name: name.to_string(),
                    nodes,
                })
                .collect(),
            wan_emulation: true,
            extra_args: Vec::new(),
            env: Vec::new(),
        }
    }

    fn node_count(&self) -> usize {
        self.regions.iter().map(|r| r.nodes).sum()
    }
}

#[derive(Serialize)]
struct TopologyFile {
    cluster: TopologyCluster,
    region: Vec<TopologyRegion>,
}

#[derive(Serialize)]
struct TopologyCluster {
    name: String,
    certs: String,
    wan_emulation: bool,
}

#[derive(Serialize)]
struct TopologyRegion {
    name: String,
    node: Vec<TopologyNode>,
}

#[derive(Serialize)]
struct TopologyNode {
    name: String,
    resp: String,
    peer: String,
}

/// Where one node of a running cluster sits.
#[derive(Clone, Debug)]
struct Placement {
    region: String,
    peer_port: u16,
}

/// A running topology: every node started from one `topology.toml`, all in one temp dir
/// (`<root>/topology.toml`, `<root>/certs/`, `<root>/<node>/node.log`, `<root>/<node>/data/`).
///
/// Dropping it stops every node; if the thread is panicking the directory is kept and every
/// node's log tail is printed.
pub struct Cluster {
    nodes: Vec<Node>,
    placement: Vec<Placement>,
    topology: PathBuf,
    root: Option<TempDir>,
}

impl Cluster {
    /// Writes the topology, runs `meridian certs`, starts every node, and returns once every
    /// node answers `PING` and every region has a node reporting a leader in `MERIDIAN RAFT`.
    /// Panics with the log tails when that does not happen in time.
    pub fn start(spec: ClusterSpec) -> Cluster {
        let mut permit = NodePermit::acquire(spec.node_count());
        let root = tempfile::Builder::new()
            .prefix("meridian-cluster-")
            .tempdir()
            .expect("creating the cluster's temp dir");
        let certs = root.path().join("certs");
        let mut file = TopologyFile {
            cluster: TopologyCluster {
                name: spec.name.clone(),
                certs: certs.display().to_string(),
                wan_emulation: spec.wan_emulation,
            },
            region: Vec::new(),
        };
        let mut planned = Vec::new();
        let mut index = 0;
        for region in &spec.regions {
            let mut nodes = Vec::new();
            for _ in 0..region.nodes {
                index += 1;
                let name = format!("n{index}");
                let (resp, peer) = (free_port(), free_port());
                nodes.push(TopologyNode {
                    name: name.clone(),
                    resp: format!("127.0.0.1:{resp}"),
                    peer: format!("127.0.0.1:{peer}"),
                });
                planned.push((name, resp, peer, region.name.clone()));
            }
            file.region.push(TopologyRegion {
                name: region.name.clone(),
                node: nodes,
            });
        }
        let topology = root.path().join("topology.toml");
        let text = toml::to_string(&file).expect("serialising the topology");
        std::fs::write(&topology, text).expect("writing topology.toml");
        run_certs(&topology, &certs).unwrap_or_else(|e| panic!("{e:#}"));

        let mut nodes = Vec::new();
        let mut placement = Vec::new();
        for (name, resp, peer, region) in planned {
            let dir = root.path().join(&name);
            std::fs::create_dir_all(&dir).expect("creating a node dir");
            let slot = permit.split_one().unwrap_or_else(|| NodePermit::acquire(0));
            nodes.push(Node::for_topology(
                &name,
                resp,
                dir,
                &topology,
                None,
                &spec.extra_args,
                spec.env.clone(),
                slot,
            ));
            placement.push(Placement {
                region,
                peer_port: peer,
            });
        }
        let mut cluster = Cluster {
            nodes,
            placement,
            topology,
            root: Some(root),
        };
        cluster.boot();
        cluster
    }

    fn boot(&mut self) {
        let mut started = Vec::new();
        for node in &mut self.nodes {
            let at = node
                .spawn_process()
                .unwrap_or_else(|e| panic!("starting {}: {e:#}", node.name()));
            started.push(at);
        }
        for (node, at) in self.nodes.iter_mut().zip(started) {
            let deadline = at + NODE_START_TIMEOUT;
            eventually(
                deadline.saturating_duration_since(Instant::now()),
                &format!("{} to answer PING", node.name()),
                || {
                    if node.ping_answers() {
                        return Ok(());
                    }
                    if !node.is_running() {
                        bail!("{} exited during start-up", node.name());
                    }
                    bail!("no PING reply yet")
                },
            );
        }
        self.wait_for_leaders(LEADER_TIMEOUT);
    }

    /// Waits until, in every region, one node reports `role: leader` in `MERIDIAN RAFT` and every
    /// running node of the region names that same leader (so a request to any node finds it);
    /// returns the leader's node index per region, in region order.
    pub fn wait_for_leaders(&self, deadline: Duration) -> Vec<usize> {
        let regions = self.region_names();
        regions
            .iter()
            .map(|region| {
                eventually(
                    deadline,
                    &format!("a leader known to all of {region}"),
                    || self.leader_of(region),
                )
            })
            .collect()
    }

    /// The index of the node that leads `region`: it reports `role: leader`, and every other
    /// running node of the region reports the same `leader` as it does. Stopped nodes are
    /// skipped.
    pub fn leader_of(&self, region: &str) -> anyhow::Result<usize> {
        let mut statuses = Vec::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if self.placement[i].region != region || node.pid().is_none() {
                continue;
            }
            let st = raft_status(node.port()).with_context(|| format!("asking {}", node.name()))?;
            statuses.push((i, st));
        }
        let leaders: Vec<&(usize, RaftStatus)> = statuses
            .iter()
            .filter(|(_, st)| st.role.as_deref() == Some("leader"))
            .collect();
        let [(idx, lead)] = leaders.as_slice() else {
            bail!(
                "{} nodes of {region} say they lead: {statuses:?}",
                leaders.len()
            );
        };
        for (i, st) in statuses.iter().filter(|(i, _)| i != idx) {
            if st.leader.is_none() || (lead.leader.is_some() && st.leader != lead.leader) {
                bail!(
                    "{} names leader {:?}, {} says {:?}",
                    self.nodes[*i].name(),
                    st.leader,
                    self.nodes[*idx].name(),
                    lead.leader
                );
            }
        }
        Ok(*idx)
    }

    /// Region names in topology order.
    pub fn region_names(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for p in &self.placement {
            if !out.contains(&p.region) {
                out.push(p.region.clone());
            }
        }
        out
    }

    /// All nodes, in topology order (`n1` first).
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Mutable access to one node (to kill or restart it).
    pub fn node_mut(&mut self, i: usize) -> &mut Node {
        &mut self.nodes[i]
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name() == name)
            .unwrap_or_else(|| panic!("no node named {name}"))
    }

    /// Indexes of the nodes of `region`.
    pub fn region_nodes(&self, region: &str) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.placement[i].region == region)
            .collect()
    }

    /// The region of node `i`.
    pub fn region_of(&self, i: usize) -> &str {
        &self.placement[i].region
    }

    /// The QUIC peer port of node `i`.
    pub fn peer_port(&self, i: usize) -> u16 {
        self.placement[i].peer_port
    }

    /// Path of the topology file every node was started with.
    pub fn topology_path(&self) -> &Path {
        &self.topology
    }

    /// The cluster's root directory.
    pub fn dir(&self) -> &Path {
        self.root
            .as_ref()
            .map(TempDir::path)
            .expect("cluster dir present until drop")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        // Nodes print their own log tails when panicking.
        self.nodes.clear();
        if panicking {
            if let Some(root) = self.root.take() {
                let path = root.keep();
                eprintln!("--- cluster failed test: kept {}", path.display());
            }
        }
    }
}

fn run_certs(topology: &Path, out: &Path) -> anyhow::Result<()> {
    let bin = meridian_bin();
    let output = Command::new(&bin)
        .arg("certs")
        .arg("--config")
        .arg(topology)
        .arg("--out")
        .arg(out)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} certs", bin.display()))?;
    if !output.status.success() {
        bail!(
            "`meridian certs` failed with {}:\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// What `MERIDIAN RAFT` says, reduced to what the harness needs. Fields are read leniently
/// from a map, a flat key/value array, or `key:value` / `key=value` lines of text, so the
/// server's exact format can still change.
#[derive(Clone, Debug, Default)]
pub struct RaftStatus {
    /// `role` (`leader`, `follower`, `candidate`, `learner`), lowercased.
    pub role: Option<String>,
    /// `leader` / `current_leader` / `leader_id`, `None` when absent or empty.
    pub leader: Option<String>,
    /// `term` / `current_term`.
    pub term: Option<u64>,
    /// Every field as text.
    pub fields: BTreeMap<String, String>,
}

/// Asks the node on `port` for `MERIDIAN RAFT` over a fresh raw connection.
pub fn raft_status(port: u16) -> anyhow::Result<RaftStatus> {
    let mut c = RawConn::connect(port)?;
    c.try_send(&crate::raw::encode_command(&["MERIDIAN", "RAFT"]))?;
    let reply = c
        .try_read_reply(Duration::from_secs(2))?
        .context("connection closed before MERIDIAN RAFT answered")?;
    if let Some(e) = reply.as_err() {
        bail!("MERIDIAN RAFT: {e}");
    }
    let mut fields = BTreeMap::new();
    collect_fields(&reply, &mut fields);
    let get = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| fields.get(*n).cloned())
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty() && !matches!(v.as_str(), "none" | "nil" | "null" | "-"))
    };
    Ok(RaftStatus {
        role: get(&["role", "state", "server_state"]).map(|r| r.to_lowercase()),
        leader: get(&["leader", "current_leader", "leader_id", "leader_name"]),
        term: get(&["term", "current_term"]).and_then(|t| t.parse().ok()),
        fields,
    })
}

fn collect_fields(reply: &Reply, out: &mut BTreeMap<String, String>) {
    if let Some(pairs) = reply.pairs() {
        for (k, v) in pairs {
            match &v {
                Reply::Map(_) | Reply::Array(_) => collect_fields(&v, out),
                _ => {
                    out.insert(k.to_lowercase(), scalar_text(&v));
                }
            }
        }
        return;
    }
    if let Some(text) = reply.as_text() {
        for line in text.lines() {
            if let Some((k, v)) = line.split_once(':').or_else(|| line.split_once('=')) {
                out.insert(k.trim().to_lowercase(), v.trim().to_string());
            }
        }
    }
}

fn scalar_text(r: &Reply) -> String {
    match r {
        Reply::Int(n) => n.to_string(),
        Reply::Double(s) | Reply::BigNumber(s) => s.clone(),
        Reply::Bool(b) => b.to_string(),
        other if other.is_null() => String::new(),
        other => other.as_text().unwrap_or_default(),
    }
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("topology", &self.topology)
            .field(
                "nodes",
                &self
                    .nodes
                    .iter()
                    .map(|n| (n.name().to_string(), n.port()))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

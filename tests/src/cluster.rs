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
    /// Nodes started with a certificate from another CA: a second `meridian certs` run writes
    /// `<root>/foreign-certs/`, and these nodes get `<root>/topology-foreign.toml` (the same
    /// topology, certs pointing there). They are not expected to join: leader waits skip them.
    pub foreign_ca: Vec<String>,
    /// TOML appended to the generated topology file (a `[server]` table, for instance).
    pub extra_toml: String,
    /// Every node started with a Prometheus listener on a free port (`--metrics-addr`).
    pub metrics: bool,
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
            foreign_ca: Vec::new(),
            extra_toml: String::new(),
            metrics: false,
        }
    }

    /// Starts every node with a Prometheus listener (see [`ClusterSpec::metrics`]).
    pub fn with_metrics(mut self) -> ClusterSpec {
        self.metrics = true;
        self
    }

    /// Starts the named nodes with certificates from another CA (see [`ClusterSpec::foreign_ca`]).
    pub fn with_foreign_ca(mut self, nodes: &[&str]) -> ClusterSpec {
        self.foreign_ca = nodes.iter().map(|n| n.to_string()).collect();
        self
    }

    /// Appends `toml` to the generated topology file.
    pub fn with_toml(mut self, toml: &str) -> ClusterSpec {
        self.extra_toml.push_str(toml);
        self.extra_toml.push('\n');
        self
    }

    /// Adds one environment variable for every node (`RUST_LOG`, for instance).
    pub fn with_env(mut self, key: &str, value: &str) -> ClusterSpec {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    fn node_count(&self) -> usize {
        self.regions.iter().map(|r| r.nodes).sum()
    }
}

#[derive(Clone, Serialize)]
struct TopologyFile {
    cluster: TopologyCluster,
    region: Vec<TopologyRegion>,
}

#[derive(Clone, Serialize)]
struct TopologyCluster {
    name: String,
    certs: String,
    wan_emulation: bool,
}

#[derive(Clone, Serialize)]
struct TopologyRegion {
    name: String,
    node: Vec<TopologyNode>,
}

#[derive(Clone, Serialize)]
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
    /// False for nodes started with a foreign CA: leader waits skip them.
    member: bool,
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
    file: TopologyFile,
    spec: ClusterSpec,
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
        write_topology(&topology, &file, &spec.extra_toml);
        run_certs(&topology, &certs).unwrap_or_else(|e| panic!("{e:#}"));
        let foreign_topology = if spec.foreign_ca.is_empty() {
            PathBuf::new()
        } else {
            write_foreign(root.path(), &file, &spec.extra_toml)
        };

        let mut nodes = Vec::new();
        let mut placement = Vec::new();
        for (name, resp, peer, region) in planned {
            let dir = root.path().join(&name);
            std::fs::create_dir_all(&dir).expect("creating a node dir");
            let slot = permit.split_one().unwrap_or_else(|| NodePermit::acquire(0));
            let foreign = spec.foreign_ca.contains(&name);
            nodes.push(Node::for_topology(
                &name,
                resp,
                dir,
                if foreign {
                    &foreign_topology
                } else {
                    &topology
                },
                None,
                spec.metrics.then(free_port),
                &spec.extra_args,
                spec.env.clone(),
                slot,
            ));
            placement.push(Placement {
                region,
                peer_port: peer,
                member: !foreign,
            });
        }
        let mut cluster = Cluster {
            nodes,
            placement,
            topology,
            file,
            spec,
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
    /// running member of the region reports the same `leader` as it does. Stopped nodes and
    /// nodes started with a foreign CA are skipped.
    pub fn leader_of(&self, region: &str) -> anyhow::Result<usize> {
        let members: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.placement[i].region == region && self.placement[i].member)
            .collect();
        self.leader_among(&members)
    }

    /// Like [`Cluster::leader_of`] over the given node indexes only (the majority side of a
    /// partition, say): exactly one of the running ones reports `role: leader` and every other
    /// running one names it.
    pub fn leader_among(&self, indexes: &[usize]) -> anyhow::Result<usize> {
        let mut statuses = Vec::new();
        for &i in indexes {
            let node = &self.nodes[i];
            if node.pid().is_none() {
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
                "{} of the nodes {indexes:?} say they lead: {statuses:?}",
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

    /// The leader of the only (or first) region, waiting up to `deadline` for one that every
    /// running member names.
    pub fn leader(&self, deadline: Duration) -> usize {
        self.wait_for_leaders(deadline)[0]
    }

    /// `MERIDIAN RAFT` of node `i`.
    pub fn status(&self, i: usize) -> anyhow::Result<RaftStatus> {
        raft_status(self.nodes[i].port())
            .with_context(|| format!("MERIDIAN RAFT on {}", self.nodes[i].name()))
    }

    /// `MERIDIAN NODES` of node `i`.
    pub fn meridian_nodes(&self, i: usize) -> anyhow::Result<Vec<NodeInfo>> {
        meridian_nodes(self.nodes[i].port())
            .with_context(|| format!("MERIDIAN NODES on {}", self.nodes[i].name()))
    }

    /// Waits until node `i` has applied everything its region's leader has applied (the leader
    /// as every running member names it, node `i` included), and returns how long that took.
    /// Meant for quiet moments: under a write load the target moves.
    pub fn wait_caught_up(&self, i: usize, deadline: Duration) -> Duration {
        let start = Instant::now();
        let region = self.placement[i].region.clone();
        eventually(
            deadline,
            &format!(
                "{} to apply what the leader of {region} applied",
                self.nodes[i].name()
            ),
            || {
                let leader = self.leader_of(&region)?;
                let lead = self.status(leader)?.applied_index().unwrap_or(0);
                let mine = self.status(i)?.applied_index().unwrap_or(0);
                if mine < lead {
                    bail!("applied_index {mine} < leader's {lead}");
                }
                Ok(())
            },
        );
        start.elapsed()
    }

    /// Cuts node `i` off from the rest of its region with emulated WAN partitions, both ways:
    /// `MERIDIAN WAN SET <region> PARTITION` on it, `MERIDIAN WAN SET <name> PARTITION` on every
    /// other running node of the region. Panics if a node refuses.
    pub fn partition(&self, i: usize) {
        let region = self.placement[i].region.clone();
        let name = self.nodes[i].name().to_string();
        admin(
            self.nodes[i].port(),
            &["MERIDIAN", "WAN", "SET", &region, "PARTITION"],
        )
        .unwrap_or_else(|e| panic!("partitioning {name} from {region}: {e:#}"));
        for j in self.region_nodes(&region) {
            if j == i || self.nodes[j].pid().is_none() {
                continue;
            }
            admin(
                self.nodes[j].port(),
                &["MERIDIAN", "WAN", "SET", &name, "PARTITION"],
            )
            .unwrap_or_else(|e| panic!("partitioning {name} on {}: {e:#}", self.nodes[j].name()));
        }
    }

    /// `MERIDIAN WAN CLEAR` on every running node: every emulated shape and partition is gone.
    pub fn heal(&self) {
        for node in self.nodes.iter().filter(|n| n.pid().is_some()) {
            admin(node.port(), &["MERIDIAN", "WAN", "CLEAR"])
                .unwrap_or_else(|e| panic!("MERIDIAN WAN CLEAR on {}: {e:#}", node.name()));
        }
    }

    /// Stops node `i` (SIGTERM), then starts it again, data kept, with a certificate from
    /// another CA (`<root>/foreign-certs/`, generated on first use). With `trust_cluster_ca`
    /// the node still verifies its peers against the cluster's CA and only presents the
    /// foreign certificate (`<root>/mixed-certs/`), so it is the others that must refuse it;
    /// without, it trusts only the foreign CA. From then on leader waits skip it. Returns the
    /// time to its first `PING` answer.
    pub fn restart_with_foreign_ca(&mut self, i: usize, trust_cluster_ca: bool) -> Duration {
        let root = self.dir().to_path_buf();
        let mut topology = root.join("topology-foreign.toml");
        if !topology.is_file() {
            write_foreign(&root, &self.file, &self.spec.extra_toml);
        }
        if trust_cluster_ca {
            let name = self.nodes[i].name().to_string();
            let mixed = root.join("mixed-certs");
            std::fs::create_dir_all(&mixed).expect("creating mixed-certs");
            let copy = |from: PathBuf, file: &str| {
                std::fs::copy(from.join(file), mixed.join(file))
                    .unwrap_or_else(|e| panic!("copying {file}: {e}"));
            };
            copy(PathBuf::from(&self.file.cluster.certs), "ca.pem");
            copy(root.join("foreign-certs"), &format!("{name}.pem"));
            copy(root.join("foreign-certs"), &format!("{name}.key"));
            let mut file = self.file.clone();
            file.cluster.certs = mixed.display().to_string();
            topology = root.join("topology-mixed.toml");
            write_topology(&topology, &file, &self.spec.extra_toml);
        }
        self.placement[i].member = false;
        let node = &mut self.nodes[i];
        node.stop();
        node.set_config_path(&topology);
        node.restart()
    }

    /// Adds a node `n<N+1>` to `region` in the topology file (rewritten in place, so restarts
    /// see it), runs `meridian certs` again (the CA is reused, other certificates are kept),
    /// starts the node and waits until it answers `PING`. It is not a Raft member until
    /// someone sends `MERIDIAN NODE ADD` to the leader. Returns its index.
    pub fn add_node(&mut self, region: &str) -> usize {
        let permit = NodePermit::acquire(1);
        let name = format!("n{}", self.nodes.len() + 1);
        let (resp, peer) = (free_port(), free_port());
        let entry = self
            .file
            .region
            .iter_mut()
            .find(|r| r.name == region)
            .unwrap_or_else(|| panic!("no region {region} in the topology"));
        entry.node.push(TopologyNode {
            name: name.clone(),
            resp: format!("127.0.0.1:{resp}"),
            peer: format!("127.0.0.1:{peer}"),
        });
        write_topology(&self.topology, &self.file, &self.spec.extra_toml);
        let certs = PathBuf::from(&self.file.cluster.certs);
        run_certs(&self.topology, &certs).unwrap_or_else(|e| panic!("{e:#}"));
        let dir = self.dir().join(&name);
        std::fs::create_dir_all(&dir).expect("creating a node dir");
        let mut node = Node::for_topology(
            &name,
            resp,
            dir,
            &self.topology,
            None,
            self.spec.metrics.then(free_port),
            &self.spec.extra_args,
            self.spec.env.clone(),
            permit,
        );
        let at = node
            .spawn_process()
            .unwrap_or_else(|e| panic!("starting {name}: {e:#}"));
        node.wait_ready(at)
            .unwrap_or_else(|e| panic!("starting {name}: {e:#}"));
        self.nodes.push(node);
        self.placement.push(Placement {
            region: region.to_string(),
            peer_port: peer,
            member: true,
        });
        self.nodes.len() - 1
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
        if !panicking {
            // Graceful shutdown takes seconds per node: signal them all, then reap one by one.
            for node in &self.nodes {
                node.terminate();
            }
        }
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

fn write_topology(path: &Path, file: &TopologyFile, extra: &str) {
    let mut text = toml::to_string(file).expect("serialising the topology");
    if !extra.is_empty() {
        text.push('\n');
        text.push_str(extra);
    }
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Writes `<root>/topology-foreign.toml` (certs in `<root>/foreign-certs/`) and runs
/// `meridian certs` for it: a second CA with a certificate for every node. Returns its path.
fn write_foreign(root: &Path, file: &TopologyFile, extra: &str) -> PathBuf {
    let path = root.join("topology-foreign.toml");
    let certs = root.join("foreign-certs");
    let mut foreign = file.clone();
    foreign.cluster.certs = certs.display().to_string();
    write_topology(&path, &foreign, extra);
    run_certs(&path, &certs).unwrap_or_else(|e| panic!("{e:#}"));
    path
}

/// Sends one admin command over a fresh connection; an error reply becomes `Err`.
fn admin(port: u16, args: &[&str]) -> anyhow::Result<Reply> {
    let mut c = RawConn::connect(port)?;
    c.try_send(&crate::raw::encode_command(args))?;
    let reply = c
        .try_read_reply(Duration::from_secs(5))?
        .with_context(|| format!("connection closed before {args:?} answered"))?;
    if let Some(e) = reply.as_err() {
        bail!("{args:?}: {e}");
    }
    Ok(reply)
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
    /// `voters`: node ids.
    pub voters: Vec<u64>,
    /// `learners`: node ids.
    pub learners: Vec<u64>,
    /// Every field as text (lists of numbers as `1,2,3`).
    pub fields: BTreeMap<String, String>,
}

impl RaftStatus {
    /// A numeric field (`applied_index`, `purged_index` …); `None` when absent, empty or not a
    /// number.
    pub fn number(&self, field: &str) -> Option<u64> {
        self.fields.get(field).and_then(|v| v.trim().parse().ok())
    }

    /// `applied_index`.
    pub fn applied_index(&self) -> Option<u64> {
        self.number("applied_index")
    }

    /// `last_log_index`.
    pub fn last_log_index(&self) -> Option<u64> {
        self.number("last_log_index")
    }

    /// `snapshot_index`.
    pub fn snapshot_index(&self) -> Option<u64> {
        self.number("snapshot_index")
    }

    /// `purged_index`.
    pub fn purged_index(&self) -> Option<u64> {
        self.number("purged_index")
    }

    /// `node_id`.
    pub fn node_id(&self) -> Option<u64> {
        self.number("node_id")
    }
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
    let ids = |name: &str| -> Vec<u64> {
        fields
            .get(name)
            .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
            .unwrap_or_default()
    };
    Ok(RaftStatus {
        role: get(&["role", "state", "server_state"]).map(|r| r.to_lowercase()),
        leader: get(&["leader", "current_leader", "leader_id", "leader_name"]),
        term: get(&["term", "current_term"]).and_then(|t| t.parse().ok()),
        voters: ids("voters"),
        learners: ids("learners"),
        fields,
    })
}

/// One row of `MERIDIAN NODES`.
#[derive(Clone, Debug, Default)]
pub struct NodeInfo {
    /// Raft node id.
    pub id: u64,
    /// Node name.
    pub name: String,
    /// `voter` or `learner`.
    pub role: String,
    /// True for the node the answering node takes as leader.
    pub leader: bool,
    /// True for the answering node itself.
    pub is_self: bool,
    /// Link state as the answering node sees it (`self`, `up`, …).
    pub link: String,
    /// Every field as text.
    pub fields: BTreeMap<String, String>,
}

/// Asks the node on `port` for `MERIDIAN NODES` over a fresh raw connection.
pub fn meridian_nodes(port: u16) -> anyhow::Result<Vec<NodeInfo>> {
    let reply = admin(port, &["MERIDIAN", "NODES"])?;
    let Reply::Array(rows) = reply else {
        bail!("MERIDIAN NODES: expected an array, got {reply:?}");
    };
    let truthy = |v: Option<&String>| v.is_some_and(|v| matches!(v.as_str(), "1" | "true"));
    rows.iter()
        .map(|row| {
            let pairs = row
                .pairs()
                .with_context(|| format!("MERIDIAN NODES row is not a map: {row:?}"))?;
            let fields: BTreeMap<String, String> = pairs
                .into_iter()
                .map(|(k, v)| (k.to_lowercase(), scalar_text(&v)))
                .collect();
            Ok(NodeInfo {
                id: fields
                    .get("id")
                    .and_then(|v| v.parse().ok())
                    .with_context(|| format!("MERIDIAN NODES row without id: {fields:?}"))?,
                name: fields.get("name").cloned().unwrap_or_default(),
                role: fields.get("role").cloned().unwrap_or_default(),
                leader: truthy(fields.get("leader")),
                is_self: truthy(fields.get("self")),
                link: fields.get("link").cloned().unwrap_or_default(),
                fields,
            })
        })
        .collect()
}

fn collect_fields(reply: &Reply, out: &mut BTreeMap<String, String>) {
    if let Some(pairs) = reply.pairs() {
        for (k, v) in pairs {
            match &v {
                // A list of numbers (`voters`, `learners`) is one field, `1,2,3`.
                Reply::Array(items) | Reply::Set(items)
                    if items.iter().all(|i| matches!(i, Reply::Int(_))) =>
                {
                    let text: Vec<String> = items.iter().map(scalar_text).collect();
                    out.insert(k.to_lowercase(), text.join(","));
                }
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

//! The cluster topology: regions, their nodes, placement rules and emulated WAN links.
//!
//! One TOML file describes the whole cluster and is given to every node:
//!
//! ```toml
//! [cluster]
//! name = "region-3"            # also the Raft cluster name prefix
//! certs = "certs"              # optional: dir with ca.pem, <node>.pem, <node>.key
//! wan_emulation = false        # WAN emulation allowed (test/demo only)
//! link_idle_timeout_ms = 3000  # optional: a node-to-node link silent this long is redialed
//!
//! [[region]]
//! name = "local"
//!
//! [[region.node]]
//! name = "n1"
//! id = 1                       # optional Raft node id; default: 1-based position in its region
//! resp = "127.0.0.1:7001"
//! peer = "127.0.0.1:7101"      # QUIC address
//! metrics = "127.0.0.1:9101"   # optional Prometheus listener
//!
//! [[placement]]
//! pattern = "user:*"
//! home = "hash"                # "multi-master" | a region name | "hash"
//!
//! [[wan]]
//! a = "eu"
//! b = "us"
//! delay_ms = 40
//! jitter_ms = 0
//! loss = 0.0
//! ```
//!
//! Unknown fields are rejected, addresses are parsed and names checked at load time, so a
//! typo fails loudly before any node starts.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::certs::CertPaths;
use crate::link::{PeerAddr, DEFAULT_IDLE_TIMEOUT, MAX_IDLE_TIMEOUT, MIN_IDLE_TIMEOUT};

/// A Raft node id. Unique within a region, always greater than zero.
pub type NodeId = u64;

/// The longest node name accepted: one DNS label.
pub const MAX_NAME_LEN: usize = 63;

/// The largest one-way delay or jitter accepted for an emulated WAN link.
pub const MAX_WAN_DELAY_MS: u64 = 60_000;

/// Region name of the embedded single-node topology.
pub const LOCAL_REGION: &str = "local";

/// Node name of the embedded single-node topology.
pub const LOCAL_NODE: &str = "local-1";

/// Errors from loading or validating a topology.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TopologyError {
    /// The file could not be read.
    #[error("cannot read topology file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema (unknown field, wrong type …).
    #[error("invalid topology file {path}")]
    Parse {
        /// The file (empty when parsed from a string).
        path: PathBuf,
        /// The parser error, with line and column.
        #[source]
        source: toml::de::Error,
    },
    /// The topology could not be written as TOML.
    #[error("cannot serialise topology")]
    Serialize(#[source] toml::ser::Error),
    /// `cluster.name` is empty.
    #[error("cluster.name must not be empty")]
    EmptyClusterName,
    /// No `[[region]]` at all.
    #[error("the topology has no region")]
    NoRegions,
    /// A region without nodes.
    #[error("region {region:?} has no node")]
    EmptyRegion {
        /// The region.
        region: String,
    },
    /// A region or node name that is empty, too long, or not a DNS label.
    #[error("invalid {what} name {name:?}: use 1-63 characters a-z, A-Z, 0-9 and '-', not starting or ending with '-'")]
    BadName {
        /// "region" or "node".
        what: &'static str,
        /// The offending name.
        name: String,
    },
    /// A region name that collides with a placement keyword.
    #[error("region name {name:?} is reserved (placement keyword)")]
    ReservedRegionName {
        /// The offending name.
        name: String,
    },
    /// Two regions share a name.
    #[error("duplicate region name {name:?}")]
    DuplicateRegion {
        /// The duplicated name.
        name: String,
    },
    /// Two nodes share a name (names are global, they are TLS identities).
    #[error("duplicate node name {name:?}")]
    DuplicateNode {
        /// The duplicated name.
        name: String,
    },
    /// A node id of 0.
    #[error("node {node:?}: id must be greater than 0")]
    ZeroNodeId {
        /// The node.
        node: String,
    },
    /// Two nodes of one region share an id.
    #[error("region {region:?}: node id {id} is used twice")]
    DuplicateNodeId {
        /// The region.
        region: String,
        /// The duplicated id.
        id: NodeId,
    },
    /// An address that does not parse as `ip:port`.
    #[error("node {node:?}: {field} address {value:?} is not an ip:port socket address")]
    BadAddress {
        /// The node.
        node: String,
        /// "resp", "peer" or "metrics".
        field: &'static str,
        /// The text found.
        value: String,
    },
    /// Two nodes (or two listeners of one node) share an address.
    #[error("address {addr} is used twice ({first} and {second})")]
    DuplicateAddress {
        /// The address.
        addr: SocketAddr,
        /// The first user, as `node.field`.
        first: String,
        /// The second user, as `node.field`.
        second: String,
    },
    /// A link idle timeout out of range.
    #[error("cluster: link_idle_timeout_ms = {ms} is out of range (2000 to 600000: at least two keep-alive intervals)")]
    BadIdleTimeout {
        /// The value found.
        ms: u64,
    },
    /// A placement rule with an empty pattern.
    #[error("placement rule {index}: empty pattern")]
    EmptyPattern {
        /// Index of the rule (0-based).
        index: usize,
    },
    /// A placement rule naming a home that is not a keyword nor a region.
    #[error("placement rule {pattern:?}: home {home:?} is neither \"multi-master\", \"hash\" nor a region")]
    UnknownHome {
        /// The rule's pattern.
        pattern: String,
        /// The home found.
        home: String,
    },
    /// A WAN link naming an unknown region.
    #[error("wan link {a:?}-{b:?}: unknown region {region:?}")]
    WanUnknownRegion {
        /// Region a of the link.
        a: String,
        /// Region b of the link.
        b: String,
        /// The unknown one.
        region: String,
    },
    /// A WAN link with out-of-range values or from a region to itself.
    #[error("wan link {a:?}-{b:?}: {reason}")]
    BadWan {
        /// Region a of the link.
        a: String,
        /// Region b of the link.
        b: String,
        /// What is wrong.
        reason: &'static str,
    },
}

/// A whole cluster: every region and node, placement rules, emulated WAN links.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Topology {
    /// Cluster-wide settings.
    pub cluster: ClusterSection,
    /// The regions, in file order.
    #[serde(rename = "region")]
    pub regions: Vec<Region>,
    /// Placement rules, first match wins; keys matching none are multi-master.
    #[serde(rename = "placement", skip_serializing_if = "Vec::is_empty")]
    pub placements: Vec<PlacementRule>,
    /// Emulated WAN links between region pairs.
    #[serde(rename = "wan", skip_serializing_if = "Vec::is_empty")]
    pub wan: Vec<WanLink>,
}

/// The `[cluster]` section.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterSection {
    /// Cluster name, also the prefix of the Raft cluster names.
    pub name: String,
    /// Directory holding `ca.pem`, `<node>.pem`, `<node>.key`; absolute after [`Topology::load`]
    /// (a relative path in the file resolves against the file's folder).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certs: Option<PathBuf>,
    /// Whether WAN emulation may be used (test/demo only).
    pub wan_emulation: bool,
    /// A node-to-node link that received nothing for this many ms is closed and dialed again.
    pub link_idle_timeout_ms: u64,
}

/// One region: a Raft group of nodes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Region {
    /// Region name, unique in the cluster.
    pub name: String,
    /// Its nodes, in file order.
    #[serde(rename = "node")]
    pub nodes: Vec<Node>,
}

/// One node (one `meridian` process).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// Node name, unique in the cluster; also its TLS identity (certificate SAN).
    pub name: String,
    /// Raft node id within its region (resolved: the file's value or the 1-based position).
    pub id: NodeId,
    /// Client (RESP) listener.
    pub resp: SocketAddr,
    /// QUIC peer listener.
    pub peer: SocketAddr,
    /// Prometheus listener, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<SocketAddr>,
}

impl Node {
    /// The node as a link-layer peer (name + QUIC address).
    pub fn peer_addr(&self) -> PeerAddr {
        PeerAddr {
            name: self.name.clone(),
            addr: self.peer,
        }
    }
}

/// A placement rule: keys matching `pattern` (glob with `*` and `?`) live at `home`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlacementRule {
    /// Glob on the key: `*` any run of bytes, `?` one byte.
    pub pattern: String,
    /// `"multi-master"`, `"hash"` or a region name.
    pub home: String,
}

/// An emulated link between two regions; values are one-way, applied in both directions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WanLink {
    /// One region.
    pub a: String,
    /// The other region.
    pub b: String,
    /// One-way delay in milliseconds.
    pub delay_ms: u64,
    /// Uniform jitter (±) in milliseconds.
    pub jitter_ms: u64,
    /// Datagram loss probability in `[0, 1]`.
    pub loss: f64,
}

impl WanLink {
    /// The shape to apply to datagrams sent over this link.
    pub fn shape(&self) -> crate::wan::LinkShape {
        crate::wan::LinkShape {
            delay: Duration::from_millis(self.delay_ms),
            jitter: Duration::from_millis(self.jitter_ms),
            loss: self.loss,
            partitioned: false,
        }
    }

    /// Whether this link joins regions `x` and `y` (in either order).
    pub fn joins(&self, x: &str, y: &str) -> bool {
        (self.a == x && self.b == y) || (self.a == y && self.b == x)
    }
}

// ---- on-disk form --------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTopology {
    cluster: RawCluster,
    #[serde(default)]
    region: Vec<RawRegion>,
    #[serde(default)]
    placement: Vec<RawPlacement>,
    #[serde(default)]
    wan: Vec<RawWan>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    name: String,
    #[serde(default)]
    certs: Option<PathBuf>,
    #[serde(default)]
    wan_emulation: bool,
    #[serde(default)]
    link_idle_timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegion {
    name: String,
    #[serde(default)]
    node: Vec<RawNode>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: String,
    #[serde(default)]
    id: Option<NodeId>,
    resp: String,
    peer: String,
    #[serde(default)]
    metrics: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlacement {
    pattern: String,
    home: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWan {
    a: String,
    b: String,
    #[serde(default)]
    delay_ms: u64,
    #[serde(default)]
    jitter_ms: u64,
    #[serde(default)]
    loss: f64,
}

/// Placement keyword: write locally, replicate out (the default).
pub const HOME_MULTI_MASTER: &str = "multi-master";
/// Placement keyword: spread over regions with a consistent-hash ring.
pub const HOME_HASH: &str = "hash";

fn check_name(what: &'static str, name: &str) -> Result<(), TopologyError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        // an all-digit label could be mistaken for an IP address in a certificate
        && !name.bytes().all(|b| b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(TopologyError::BadName {
            what,
            name: name.to_owned(),
        })
    }
}

fn parse_addr(node: &str, field: &'static str, value: &str) -> Result<SocketAddr, TopologyError> {
    value
        .trim()
        .parse::<SocketAddr>()
        .map_err(|_| TopologyError::BadAddress {
            node: node.to_owned(),
            field,
            value: value.to_owned(),
        })
}

impl Topology {
    /// Reads, parses and validates a topology file. A relative `cluster.certs` resolves against
    /// the file's folder.
    pub fn load(path: impl AsRef<Path>) -> Result<Topology, TopologyError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| TopologyError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Self::parse(&text, Some(base)).map_err(|e| match e {
            TopologyError::Parse { source, .. } => TopologyError::Parse {
                path: path.to_owned(),
                source,
            },
            other => other,
        })
    }

    /// Parses and validates a topology from TOML text; a relative `cluster.certs` resolves
    /// against `base_dir` when given.
    pub fn parse(text: &str, base_dir: Option<&Path>) -> Result<Topology, TopologyError> {
        let raw: RawTopology = toml::from_str(text).map_err(|source| TopologyError::Parse {
            path: PathBuf::new(),
            source,
        })?;
        let certs = match (raw.cluster.certs, base_dir) {
            (Some(c), Some(base)) if c.is_relative() => Some(base.join(c)),
            (c, _) => c,
        };
        let mut regions = Vec::with_capacity(raw.region.len());
        for r in raw.region {
            let mut nodes = Vec::with_capacity(r.node.len());
            for (pos, n) in r.node.into_iter().enumerate() {
                let resp = parse_addr(&n.name, "resp", &n.resp)?;
                let peer = parse_addr(&n.name, "peer", &n.peer)?;
                let metrics = match n.metrics {
                    Some(m) => Some(parse_addr(&n.name, "metrics", &m)?),
                    None => None,
                };
                let id = match n.id {
                    Some(0) => return Err(TopologyError::ZeroNodeId { node: n.name }),
                    Some(id) => id,
                    None => pos as NodeId + 1,
                };
                nodes.push(Node {
                    name: n.name,
                    id,
                    resp,
                    peer,
                    metrics,
                });
            }
            regions.push(Region {
                name: r.name,
                nodes,
            });
        }
        let topo = Topology {
            cluster: ClusterSection {
                name: raw.cluster.name,
                certs,
                wan_emulation: raw.cluster.wan_emulation,
                link_idle_timeout_ms: raw
                    .cluster
                    .link_idle_timeout_ms
                    .unwrap_or(DEFAULT_IDLE_TIMEOUT.as_millis() as u64),
            },
            regions,
            placements: raw
                .placement
                .into_iter()
                .map(|p| PlacementRule {
                    pattern: p.pattern,
                    home: p.home,
                })
                .collect(),
            wan: raw
                .wan
                .into_iter()
                .map(|w| WanLink {
                    a: w.a,
                    b: w.b,
                    delay_ms: w.delay_ms,
                    jitter_ms: w.jitter_ms,
                    loss: w.loss,
                })
                .collect(),
        };
        topo.validate()?;
        Ok(topo)
    }

    /// The embedded default: one region `local` with one node `local-1`, no certificates
    /// directory, no WAN emulation.
    pub fn single_node(resp: SocketAddr, peer: SocketAddr) -> Topology {
        Topology {
            cluster: ClusterSection {
                name: LOCAL_REGION.to_owned(),
                certs: None,
                wan_emulation: false,
                link_idle_timeout_ms: DEFAULT_IDLE_TIMEOUT.as_millis() as u64,
            },
            regions: vec![Region {
                name: LOCAL_REGION.to_owned(),
                nodes: vec![Node {
                    name: LOCAL_NODE.to_owned(),
                    id: 1,
                    resp,
                    peer,
                    metrics: None,
                }],
            }],
            placements: Vec::new(),
            wan: Vec::new(),
        }
    }

    /// Checks every rule of the format (names, ids, addresses, placement homes, WAN links).
    /// [`Topology::load`] and [`Topology::parse`] call it; call it again after editing a
    /// topology in code.
    pub fn validate(&self) -> Result<(), TopologyError> {
        if self.cluster.name.trim().is_empty() {
            return Err(TopologyError::EmptyClusterName);
        }
        if self.regions.is_empty() {
            return Err(TopologyError::NoRegions);
        }
        let idle = Duration::from_millis(self.cluster.link_idle_timeout_ms);
        if !(MIN_IDLE_TIMEOUT..=MAX_IDLE_TIMEOUT).contains(&idle) {
            return Err(TopologyError::BadIdleTimeout {
                ms: self.cluster.link_idle_timeout_ms,
            });
        }
        let mut region_names = HashSet::new();
        let mut node_names = HashSet::new();
        let mut addrs: std::collections::HashMap<(SocketAddr, bool), String> = Default::default();
        for r in &self.regions {
            check_name("region", &r.name)?;
            if r.name == HOME_HASH || r.name == HOME_MULTI_MASTER {
                return Err(TopologyError::ReservedRegionName {
                    name: r.name.clone(),
                });
            }
            if !region_names.insert(r.name.as_str()) {
                return Err(TopologyError::DuplicateRegion {
                    name: r.name.clone(),
                });
            }
            if r.nodes.is_empty() {
                return Err(TopologyError::EmptyRegion {
                    region: r.name.clone(),
                });
            }
            let mut ids = HashSet::new();
            for n in &r.nodes {
                check_name("node", &n.name)?;
                if !node_names.insert(n.name.as_str()) {
                    return Err(TopologyError::DuplicateNode {
                        name: n.name.clone(),
                    });
                }
                if n.id == 0 {
                    return Err(TopologyError::ZeroNodeId {
                        node: n.name.clone(),
                    });
                }
                if !ids.insert(n.id) {
                    return Err(TopologyError::DuplicateNodeId {
                        region: r.name.clone(),
                        id: n.id,
                    });
                }
                let listeners = [
                    ("resp", Some(n.resp)),
                    ("peer", Some(n.peer)),
                    ("metrics", n.metrics),
                ];
                for (field, addr) in listeners {
                    let Some(addr) = addr else { continue };
                    // Port 0 ("pick one") may repeat: it is not a fixed address.
                    if addr.port() == 0 {
                        continue;
                    }
                    let who = format!("{}.{field}", n.name);
                    // resp and metrics are TCP, peer is UDP: a port number may serve both.
                    let udp = field == "peer";
                    if let Some(first) = addrs.insert((addr, udp), who.clone()) {
                        return Err(TopologyError::DuplicateAddress {
                            addr,
                            first,
                            second: who,
                        });
                    }
                }
            }
        }
        for (index, p) in self.placements.iter().enumerate() {
            if p.pattern.is_empty() {
                return Err(TopologyError::EmptyPattern { index });
            }
            if p.home != HOME_HASH
                && p.home != HOME_MULTI_MASTER
                && !region_names.contains(p.home.as_str())
            {
                return Err(TopologyError::UnknownHome {
                    pattern: p.pattern.clone(),
                    home: p.home.clone(),
                });
            }
        }
        let mut pairs = HashSet::new();
        for w in &self.wan {
            for region in [&w.a, &w.b] {
                if !region_names.contains(region.as_str()) {
                    return Err(TopologyError::WanUnknownRegion {
                        a: w.a.clone(),
                        b: w.b.clone(),
                        region: region.clone(),
                    });
                }
            }
            let bad = |reason| TopologyError::BadWan {
                a: w.a.clone(),
                b: w.b.clone(),
                reason,
            };
            if w.a == w.b {
                return Err(bad("a link joins two different regions"));
            }
            if w.delay_ms > MAX_WAN_DELAY_MS || w.jitter_ms > MAX_WAN_DELAY_MS {
                return Err(bad("delay_ms and jitter_ms must be at most 60000"));
            }
            if !(0.0..=1.0).contains(&w.loss) {
                return Err(bad("loss must be within [0, 1]"));
            }
            let key = if w.a < w.b {
                (w.a.as_str(), w.b.as_str())
            } else {
                (w.b.as_str(), w.a.as_str())
            };
            if !pairs.insert(key) {
                return Err(bad("the region pair is listed twice"));
            }
        }
        Ok(())
    }

    /// Writes the topology as TOML (ids resolved, `certs` as stored).
    pub fn to_toml_string(&self) -> Result<String, TopologyError> {
        toml::to_string(self).map_err(TopologyError::Serialize)
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.all_nodes().find(|n| n.name == name)
    }

    /// The region called `name`.
    pub fn region(&self, name: &str) -> Option<&Region> {
        self.regions.iter().find(|r| r.name == name)
    }

    /// Name of the region holding node `node`.
    pub fn region_of(&self, node: &str) -> Option<&str> {
        self.regions
            .iter()
            .find(|r| r.nodes.iter().any(|n| n.name == node))
            .map(|r| r.name.as_str())
    }

    /// The nodes of region `region` (empty if there is no such region).
    pub fn nodes_in_region(&self, region: &str) -> &[Node] {
        self.region(region)
            .map(|r| r.nodes.as_slice())
            .unwrap_or(&[])
    }

    /// The node whose QUIC peer address is `addr`.
    pub fn node_by_peer_addr(&self, addr: SocketAddr) -> Option<&Node> {
        self.all_nodes().find(|n| n.peer == addr)
    }

    /// The node with Raft id `id` in region `region`.
    pub fn node_by_id(&self, region: &str, id: NodeId) -> Option<&Node> {
        self.nodes_in_region(region).iter().find(|n| n.id == id)
    }

    /// Every node of every region, in file order.
    pub fn all_nodes(&self) -> impl Iterator<Item = &Node> + '_ {
        self.regions.iter().flat_map(|r| r.nodes.iter())
    }

    /// Region names, in file order.
    pub fn region_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.regions.iter().map(|r| r.name.as_str())
    }

    /// The emulated WAN link between regions `x` and `y`, if the file sets one.
    pub fn wan_link(&self, x: &str, y: &str) -> Option<&WanLink> {
        self.wan.iter().find(|w| w.joins(x, y))
    }

    /// Certificate file paths of node `node` in the `cluster.certs` directory (None when the
    /// topology has no certificates directory).
    pub fn cert_paths(&self, node: &str) -> Option<CertPaths> {
        self.cluster
            .certs
            .as_deref()
            .map(|dir| CertPaths::in_dir(dir, node))
    }

    /// The emulated shapes node `node` applies to what it sends: one entry per node of every
    /// other region that has a `[[wan]]` link with `node`'s region (feed them to
    /// [`crate::WanEmulator::set_link`]). Empty for an unknown node.
    pub fn wan_shapes_from(&self, node: &str) -> Vec<(SocketAddr, crate::wan::LinkShape)> {
        let Some(home) = self.region_of(node) else {
            return Vec::new();
        };
        self.regions
            .iter()
            .filter(|r| r.name != home)
            .filter_map(|r| self.wan_link(home, &r.name).map(|w| (r, w.shape())))
            .flat_map(|(r, shape)| r.nodes.iter().map(move |n| (n.peer, shape)))
            .collect()
    }

    /// Raft cluster name of region `region`: `<cluster.name>/<region>`.
    pub fn raft_cluster_name(&self, region: &str) -> String {
        format!("{}/{}", self.cluster.name, region)
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cluster {:?}:", self.cluster.name)?;
        for r in &self.regions {
            write!(f, " {}[", r.name)?;
            for (i, n) in r.nodes.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{}#{}", n.name, n.id)?;
            }
            f.write_str("]")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
[cluster]
name = "geo"
certs = "certs"
wan_emulation = true

[[region]]
name = "eu"
[[region.node]]
name = "eu-1"
resp = "127.0.0.1:7001"
peer = "127.0.0.1:7101"
metrics = "127.0.0.1:9101"
[[region.node]]
name = "eu-2"
id = 7
resp = "127.0.0.1:7002"
peer = "127.0.0.1:7102"

[[region]]
name = "us"
[[region.node]]
name = "us-1"
resp = "127.0.0.1:7003"
peer = "127.0.0.1:7103"

[[placement]]
pattern = "user:*"
home = "hash"
[[placement]]
pattern = "cfg:?"
home = "eu"

[[wan]]
a = "eu"
b = "us"
delay_ms = 40
jitter_ms = 2
loss = 0.01
"#;

    #[test]
    fn parses_full_file() {
        let t = Topology::parse(FULL, Some(Path::new("/etc/meridian"))).unwrap();
        assert_eq!(t.cluster.name, "geo");
        assert_eq!(
            t.cluster.certs.as_deref(),
            Some(Path::new("/etc/meridian/certs"))
        );
        assert!(t.cluster.wan_emulation);
        assert_eq!(t.regions.len(), 2);
        let eu1 = t.node("eu-1").unwrap();
        assert_eq!(eu1.id, 1);
        assert_eq!(eu1.metrics, Some("127.0.0.1:9101".parse().unwrap()));
        assert_eq!(t.node("eu-2").unwrap().id, 7);
        assert_eq!(t.node("us-1").unwrap().id, 1);
        assert_eq!(t.region_of("us-1"), Some("us"));
        assert_eq!(t.region_of("nope"), None);
        assert_eq!(t.nodes_in_region("eu").len(), 2);
        assert!(t.nodes_in_region("mars").is_empty());
        let by_addr = t
            .node_by_peer_addr("127.0.0.1:7102".parse().unwrap())
            .unwrap();
        assert_eq!(by_addr.name, "eu-2");
        assert_eq!(t.node_by_id("eu", 7).unwrap().name, "eu-2");
        assert_eq!(t.placements.len(), 2);
        let shapes = t.wan_shapes_from("eu-2");
        assert_eq!(shapes.len(), 1);
        assert_eq!(shapes[0].0, "127.0.0.1:7103".parse::<SocketAddr>().unwrap());
        assert_eq!(shapes[0].1.delay, Duration::from_millis(40));
        assert_eq!(t.wan_shapes_from("us-1").len(), 2);
        assert!(t.wan_shapes_from("nobody").is_empty());
        let w = t.wan_link("us", "eu").unwrap();
        assert_eq!(w.delay_ms, 40);
        assert_eq!(w.shape().delay, Duration::from_millis(40));
        let paths = t.cert_paths("eu-1").unwrap();
        assert_eq!(paths.cert, Path::new("/etc/meridian/certs/eu-1.pem"));
        assert_eq!(t.raft_cluster_name("eu"), "geo/eu");
        assert_eq!(
            t.node("us-1").unwrap().peer_addr(),
            PeerAddr {
                name: "us-1".into(),
                addr: "127.0.0.1:7103".parse().unwrap()
            }
        );
    }

    #[test]
    fn round_trips_through_toml() {
        let t = Topology::parse(FULL, None).unwrap();
        let text = t.to_toml_string().unwrap();
        let back = Topology::parse(&text, None).unwrap();
        assert_eq!(t, back);
    }

    #[test]
    fn single_node_is_valid() {
        let t = Topology::single_node(
            "127.0.0.1:6379".parse().unwrap(),
            "127.0.0.1:7379".parse().unwrap(),
        );
        t.validate().unwrap();
        assert_eq!(t.region_of(LOCAL_NODE), Some(LOCAL_REGION));
        assert_eq!(t.node(LOCAL_NODE).unwrap().id, 1);
        assert!(t.cert_paths(LOCAL_NODE).is_none());
        let back = Topology::parse(&t.to_toml_string().unwrap(), None).unwrap();
        assert_eq!(t, back);
    }

    #[test]
    fn load_resolves_certs_against_file_dir() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("topo.toml");
        std::fs::write(&path, FULL).unwrap();
        let t = Topology::load(&path).unwrap();
        assert_eq!(t.cluster.certs.unwrap(), dir.path().join("certs"));
        let missing = Topology::load(dir.path().join("missing.toml")).unwrap_err();
        assert!(matches!(missing, TopologyError::Read { .. }));
    }

    fn one_node(extra_node: &str, extra: &str) -> String {
        format!(
            "[cluster]\nname = \"c\"\n[[region]]\nname = \"r\"\n[[region.node]]\nname = \"n1\"\n\
             resp = \"127.0.0.1:1\"\npeer = \"127.0.0.1:2\"\n{extra_node}\n{extra}"
        )
    }

    fn err(text: &str) -> TopologyError {
        Topology::parse(text, None).unwrap_err()
    }

    #[test]
    fn rejects_unknown_fields() {
        assert!(matches!(
            err(&one_node("bogus = 1", "")),
            TopologyError::Parse { .. }
        ));
        assert!(matches!(
            err("[cluster]\nname = \"c\"\nwan_emulaton = true\n"),
            TopologyError::Parse { .. }
        ));
        assert!(matches!(
            err(&one_node("", "[extra]\n")),
            TopologyError::Parse { .. }
        ));
    }

    #[test]
    fn rejects_invalid_topologies() {
        assert!(matches!(
            err("[cluster]\nname = \"c\"\n"),
            TopologyError::NoRegions
        ));
        assert!(matches!(
            err("[cluster]\nname = \"\"\n[[region]]\nname = \"r\"\n"),
            TopologyError::EmptyClusterName
        ));
        assert!(matches!(
            err("[cluster]\nname = \"c\"\n[[region]]\nname = \"r\"\n"),
            TopologyError::EmptyRegion { .. }
        ));
        let dup_node = "[[region]]\nname = \"r2\"\n[[region.node]]\nname = \"n1\"\n\
                        resp = \"127.0.0.1:3\"\npeer = \"127.0.0.1:4\"\n";
        assert!(matches!(
            err(&one_node("", dup_node)),
            TopologyError::DuplicateNode { .. }
        ));
        let dup_region = "[[region]]\nname = \"r\"\n[[region.node]]\nname = \"n2\"\n\
                          resp = \"127.0.0.1:3\"\npeer = \"127.0.0.1:4\"\n";
        assert!(matches!(
            err(&one_node("", dup_region)),
            TopologyError::DuplicateRegion { .. }
        ));
        let same_addr = "[[region]]\nname = \"r2\"\n[[region.node]]\nname = \"n2\"\n\
                         resp = \"127.0.0.1:3\"\npeer = \"127.0.0.1:2\"\n";
        assert!(matches!(
            err(&one_node("", same_addr)),
            TopologyError::DuplicateAddress { .. }
        ));
        assert!(matches!(
            err(&one_node("id = 0", "")),
            TopologyError::ZeroNodeId { .. }
        ));
        let bad_addr = "[cluster]\nname = \"c\"\n[[region]]\nname = \"r\"\n[[region.node]]\n\
                        name = \"n1\"\nresp = \"localhost:1\"\npeer = \"127.0.0.1:2\"\n";
        assert!(matches!(
            err(bad_addr),
            TopologyError::BadAddress { field: "resp", .. }
        ));
        let bad_name = "[cluster]\nname = \"c\"\n[[region]]\nname = \"r\"\n[[region.node]]\n\
                        name = \"n_1\"\nresp = \"127.0.0.1:1\"\npeer = \"127.0.0.1:2\"\n";
        assert!(matches!(
            err(bad_name),
            TopologyError::BadName { what: "node", .. }
        ));
        assert!(matches!(
            err(&one_node(
                "",
                "[[placement]]\npattern = \"a*\"\nhome = \"mars\"\n"
            )),
            TopologyError::UnknownHome { .. }
        ));
        assert!(matches!(
            err(&one_node(
                "",
                "[[placement]]\npattern = \"\"\nhome = \"hash\"\n"
            )),
            TopologyError::EmptyPattern { .. }
        ));
        assert!(matches!(
            err(&one_node("", "[[wan]]\na = \"r\"\nb = \"x\"\n")),
            TopologyError::WanUnknownRegion { .. }
        ));
        assert!(matches!(
            err(&one_node("", "[[wan]]\na = \"r\"\nb = \"r\"\n")),
            TopologyError::BadWan { .. }
        ));
    }

    #[test]
    fn duplicate_ids_and_bad_wan_values() {
        let two = "[cluster]\nname = \"c\"\n[[region]]\nname = \"r\"\n\
                   [[region.node]]\nname = \"a\"\nid = 2\nresp = \"127.0.0.1:1\"\npeer = \"127.0.0.1:2\"\n\
                   [[region.node]]\nname = \"b\"\nresp = \"127.0.0.1:3\"\npeer = \"127.0.0.1:4\"\n";
        // b defaults to position 2, which a already took
        assert!(matches!(
            err(two),
            TopologyError::DuplicateNodeId { id: 2, .. }
        ));
        let geo = "[cluster]\nname = \"c\"\n\
                   [[region]]\nname = \"x\"\n[[region.node]]\nname = \"a\"\nresp = \"127.0.0.1:1\"\npeer = \"127.0.0.1:2\"\n\
                   [[region]]\nname = \"y\"\n[[region.node]]\nname = \"b\"\nresp = \"127.0.0.1:3\"\npeer = \"127.0.0.1:4\"\n";
        assert!(Topology::parse(geo, None).is_ok());
        let lossy = format!("{geo}[[wan]]\na = \"x\"\nb = \"y\"\nloss = 1.5\n");
        assert!(matches!(err(&lossy), TopologyError::BadWan { .. }));
        let twice = format!("{geo}[[wan]]\na = \"x\"\nb = \"y\"\n[[wan]]\na = \"y\"\nb = \"x\"\n");
        assert!(matches!(err(&twice), TopologyError::BadWan { .. }));
        let reserved = geo.replace("name = \"y\"", "name = \"hash\"");
        assert!(matches!(
            err(&reserved),
            TopologyError::ReservedRegionName { .. }
        ));
    }

    #[test]
    fn resp_and_peer_may_share_a_port_number() {
        let text = "[cluster]\nname = \"c\"\n[[region]]\nname = \"r\"\n[[region.node]]\n\
                    name = \"n1\"\nresp = \"127.0.0.1:7000\"\npeer = \"127.0.0.1:7000\"\n";
        Topology::parse(text, None).unwrap();
    }

    #[test]
    fn link_idle_timeout_defaults_and_is_bounded() {
        let with = |line: &str| {
            format!(
                "[cluster]\nname = \"c\"\n{line}\n[[region]]\nname = \"r\"\n[[region.node]]\n\
                 name = \"n1\"\nresp = \"127.0.0.1:7000\"\npeer = \"127.0.0.1:7100\"\n"
            )
        };
        let t = Topology::parse(&with(""), None).unwrap();
        assert_eq!(t.cluster.link_idle_timeout_ms, 3000);
        let t = Topology::parse(&with("link_idle_timeout_ms = 15000"), None).unwrap();
        assert_eq!(t.cluster.link_idle_timeout_ms, 15000);
        let t =
            Topology::parse(&with("link_idle_timeout_ms = 15000\ncerts = \"/c\""), None).unwrap();
        let config = crate::link::LinkConfig::for_node(&t, "n1").unwrap();
        assert_eq!(config.idle_timeout, Duration::from_secs(15));
        for bad in [
            "link_idle_timeout_ms = 1999",
            "link_idle_timeout_ms = 600001",
        ] {
            assert!(
                matches!(
                    Topology::parse(&with(bad), None),
                    Err(TopologyError::BadIdleTimeout { .. })
                ),
                "{bad}"
            );
        }
    }
}

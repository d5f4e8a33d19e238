//! The part of a Meridian topology file the bench needs: regions, nodes and their RESP
//! addresses. Parsed leniently (unknown fields ignored, `region`/`regions` and
//! `node`/`nodes` both accepted) so the bench keeps working while the format grows.

use std::path::Path;

use anyhow::{bail, Context, Result};

/// One node of a region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Node name.
    pub name: String,
    /// RESP address (`host:port`), if the file gives one.
    pub resp: Option<String>,
}

/// One region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    /// Region name.
    pub name: String,
    /// Its nodes, in file order.
    pub nodes: Vec<Node>,
}

/// The regions of a topology file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// `[cluster] name`, if present.
    pub name: Option<String>,
    /// Regions in file order.
    pub regions: Vec<Region>,
}

fn str_field(t: &toml::Table, key: &str) -> Option<String> {
    t.get(key).and_then(|v| v.as_str()).map(str::to_string)
}

fn tables<'a>(t: &'a toml::Table, keys: &[&str]) -> Vec<&'a toml::Table> {
    keys.iter()
        .filter_map(|k| t.get(*k))
        .filter_map(|v| v.as_array())
        .flatten()
        .filter_map(|v| v.as_table())
        .collect()
}

impl Topology {
    /// Reads and parses a topology file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading topology file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("parsing topology file {}", path.display()))
    }

    /// Parses topology TOML text.
    pub fn parse(text: &str) -> Result<Self> {
        let root: toml::Table = toml::from_str(text)?;
        let name = root
            .get("cluster")
            .and_then(|c| c.as_table())
            .and_then(|c| str_field(c, "name"));
        let mut regions = Vec::new();
        for (i, r) in tables(&root, &["region", "regions"])
            .into_iter()
            .enumerate()
        {
            let rname = str_field(r, "name").unwrap_or_else(|| format!("region{}", i + 1));
            let nodes = tables(r, &["node", "nodes"])
                .into_iter()
                .enumerate()
                .map(|(j, n)| Node {
                    name: str_field(n, "name").unwrap_or_else(|| format!("n{}", j + 1)),
                    resp: str_field(n, "resp"),
                })
                .collect();
            regions.push(Region { name: rname, nodes });
        }
        if regions.is_empty() {
            // A single-node config file: `[server] bind/port` is the one node of `local`.
            let server = root.get("server").and_then(|v| v.as_table());
            let Some(port) = server
                .and_then(|t| t.get("port"))
                .and_then(|v| v.as_integer())
            else {
                bail!("no [[region]] and no [server] port in the topology");
            };
            let bind = server
                .and_then(|t| str_field(t, "bind"))
                .unwrap_or_else(|| "127.0.0.1".to_string());
            regions.push(Region {
                name: "local".to_string(),
                nodes: vec![Node {
                    name: "n1".to_string(),
                    resp: Some(format!("{bind}:{port}")),
                }],
            });
        }
        Ok(Self { name, regions })
    }

    fn region(&self, name: Option<&str>) -> Result<&Region> {
        match name {
            Some(n) => self.regions.iter().find(|r| r.name == n).with_context(|| {
                format!(
                    "no region {n:?} in the topology (regions: {})",
                    self.region_names()
                )
            }),
            None if self.regions.len() == 1 => Ok(&self.regions[0]),
            None => bail!(
                "the topology has several regions ({}): choose one with --region",
                self.region_names()
            ),
        }
    }

    fn region_names(&self) -> String {
        let names: Vec<&str> = self.regions.iter().map(|r| r.name.as_str()).collect();
        names.join(", ")
    }

    /// The RESP addresses to load: every node of the region, or just `node`.
    ///
    /// With `node` and no region, the node is looked up in every region.
    /// Returns a label (`region` or `region/node`) and the addresses.
    pub fn select(
        &self,
        region: Option<&str>,
        node: Option<&str>,
    ) -> Result<(String, Vec<String>)> {
        if let (None, Some(n)) = (region, node) {
            let hits: Vec<&Region> = self
                .regions
                .iter()
                .filter(|r| r.nodes.iter().any(|x| x.name == n))
                .collect();
            return match hits.as_slice() {
                [r] => self.select(Some(&r.name), Some(n)),
                [] => bail!("no node {n:?} in the topology"),
                _ => bail!("node name {n:?} is in several regions: add --region"),
            };
        }
        let r = self.region(region)?;
        let nodes: Vec<&Node> = match node {
            Some(n) => {
                let Some(x) = r.nodes.iter().find(|x| x.name == n) else {
                    bail!("no node {n:?} in region {:?}", r.name);
                };
                vec![x]
            }
            None => r.nodes.iter().collect(),
        };
        let mut addrs = Vec::new();
        for x in &nodes {
            let Some(a) = &x.resp else {
                bail!("node {}/{} has no resp address", r.name, x.name);
            };
            addrs.push(a.clone());
        }
        if addrs.is_empty() {
            bail!("region {:?} has no nodes", r.name);
        }
        let label = match node {
            Some(n) => format!("{}/{n}", r.name),
            None => r.name.clone(),
        };
        Ok((label, addrs))
    }

    /// Resolves `region`, `region/node` or a node name to one address (the region's first node).
    pub fn resolve_one(&self, spec: &str) -> Result<(String, String)> {
        let (label, addrs) = match spec.split_once('/') {
            Some((r, n)) => self.select(Some(r), Some(n))?,
            None if self.regions.iter().any(|r| r.name == spec) => {
                let (label, addrs) = self.select(Some(spec), None)?;
                (label, addrs.into_iter().take(1).collect())
            }
            None => self.select(None, Some(spec))?,
        };
        let addr = addrs.into_iter().next().context("no address")?;
        Ok((label, addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = r#"
        [cluster]
        name = "geo-2"
        future_field = 1
        [[region]]
        name = "eu"
        wan = { latency_ms = 40 }
        [[region.node]]
        name = "n1"
        resp = "127.0.0.1:7001"
        peer = "127.0.0.1:7101"
        [[region.node]]
        name = "n2"
        resp = "127.0.0.1:7002"
        [[region]]
        name = "us"
        [[region.node]]
        name = "n3"
        resp = "127.0.0.1:7003"
    "#;

    #[test]
    fn selects_regions_and_nodes() {
        let t = Topology::parse(TWO).unwrap();
        assert_eq!(t.name.as_deref(), Some("geo-2"));
        let (label, addrs) = t.select(Some("eu"), None).unwrap();
        assert_eq!(label, "eu");
        assert_eq!(addrs, ["127.0.0.1:7001", "127.0.0.1:7002"]);
        let (label, addrs) = t.select(Some("eu"), Some("n2")).unwrap();
        assert_eq!((label.as_str(), addrs.len()), ("eu/n2", 1));
        let (label, _) = t.select(None, Some("n3")).unwrap();
        assert_eq!(label, "us/n3");
        assert!(t.select(None, None).is_err(), "two regions need --region");
        assert!(t.select(Some("asia"), None).is_err());
        assert_eq!(t.resolve_one("us").unwrap().1, "127.0.0.1:7003");
        assert_eq!(t.resolve_one("eu/n2").unwrap().1, "127.0.0.1:7002");
        assert_eq!(t.resolve_one("n1").unwrap().0, "eu/n1");
    }

    #[test]
    fn single_region_needs_no_flag() {
        let t = Topology::parse(
            "[[regions]]\nname='local'\n[[regions.nodes]]\nname='a'\nresp='127.0.0.1:6379'\n",
        )
        .unwrap();
        assert_eq!(t.select(None, None).unwrap().1, ["127.0.0.1:6379"]);
        assert!(Topology::parse("[cluster]\nname='x'\n").is_err());
        let single = Topology::parse("[server]\nport = 7000\n").unwrap();
        assert_eq!(single.select(None, None).unwrap().1, ["127.0.0.1:7000"]);
    }

    /// The example topologies of the repository keep parsing (skipped when absent).
    #[test]
    fn repository_configs_parse() {
        // Cargo sets the variable when it runs the tests: a binary reused from a shared
        // target directory reads the checkout it runs for.
        let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
        let dir = manifest_dir.join("../config");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "toml") {
                let t = Topology::load(&path).unwrap();
                for r in &t.regions {
                    let (_, addrs) = t.select(Some(&r.name), None).unwrap();
                    assert!(!addrs.is_empty(), "{}", path.display());
                }
            }
        }
    }
}

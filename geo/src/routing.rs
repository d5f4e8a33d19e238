//! Routing decisions: which region is a key's home, which healthy region is nearest.
//!
//! Everything here is a pure function of its inputs (no clock, no I/O), and every node must
//! reach the same answer from the same topology: the ring hashes with `hashring`'s fixed-key
//! SipHash over explicit bytes, so the result does not depend on the process or the platform.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use hashring::HashRing;

use crate::topology::{PlacementRule, Topology, HOME_HASH, HOME_MULTI_MASTER};

/// Virtual nodes per region on the home ring: enough to spread keys evenly over a handful of
/// regions while keeping ring construction trivial.
pub const VNODES_PER_REGION: u32 = 64;

/// A point of a region on the ring.
#[derive(Debug, Clone, PartialEq, Eq)]
struct VNode {
    region: String,
    replica: u32,
}

impl Hash for VNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Explicit bytes: independent of how std hashes `str`.
        state.write(self.region.as_bytes());
        state.write(&[0xff]);
        state.write(&self.replica.to_be_bytes());
    }
}

/// A key hashed by its raw bytes.
struct KeyBytes<'a>(&'a [u8]);

impl Hash for KeyBytes<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.0);
    }
}

/// A consistent-hash ring over region names: `home_of(key)` picks a key's home region for
/// placement rules with `home = "hash"`.
pub struct HomeRing {
    ring: HashRing<VNode>,
    regions: Vec<String>,
}

impl std::fmt::Debug for HomeRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HomeRing")
            .field("regions", &self.regions)
            .finish_non_exhaustive()
    }
}

impl HomeRing {
    /// A ring over `regions` (duplicates ignored; order does not matter).
    pub fn new<I, S>(regions: I) -> HomeRing
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut names: Vec<String> = regions.into_iter().map(Into::into).collect();
        names.sort();
        names.dedup();
        let mut ring = HashRing::new();
        for name in &names {
            for replica in 0..VNODES_PER_REGION {
                ring.add(VNode {
                    region: name.clone(),
                    replica,
                });
            }
        }
        HomeRing {
            ring,
            regions: names,
        }
    }

    /// A ring over every region of `topology`.
    pub fn from_topology(topology: &Topology) -> HomeRing {
        Self::new(topology.region_names())
    }

    /// The home region of `key`; `None` only for an empty ring.
    pub fn home_of(&self, key: &[u8]) -> Option<&str> {
        self.ring.get(&KeyBytes(key)).map(|v| v.region.as_str())
    }

    /// The regions on the ring, sorted.
    pub fn regions(&self) -> &[String] {
        &self.regions
    }
}

/// What the router knows about one region when picking a fallback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionHealth<'a> {
    /// Region name.
    pub name: &'a str,
    /// Measured round-trip time to it (None: not measured yet).
    pub rtt: Option<Duration>,
    /// Whether it has a quorum / a reachable leader.
    pub healthy: bool,
}

/// The healthy region with the lowest RTT; a region without a measurement ranks after every
/// measured one; ties go to the smaller name (deterministic).
pub fn nearest_healthy<'a>(regions: &[RegionHealth<'a>]) -> Option<&'a str> {
    regions
        .iter()
        .filter(|r| r.healthy)
        .min_by(|x, y| {
            let key = |r: &RegionHealth<'_>| (r.rtt.is_none(), r.rtt.unwrap_or(Duration::MAX));
            key(x).cmp(&key(y)).then_with(|| x.name.cmp(y.name))
        })
        .map(|r| r.name)
}

/// Where a key lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Written in any region, replicated out (the default).
    MultiMaster,
    /// Written only in this region (others forward).
    Home(String),
    /// Home chosen by the consistent-hash ring ([`HomeRing::home_of`]).
    Hash,
}

impl Placement {
    fn from_home(home: &str) -> Placement {
        match home {
            HOME_MULTI_MASTER => Placement::MultiMaster,
            HOME_HASH => Placement::Hash,
            region => Placement::Home(region.to_owned()),
        }
    }
}

pub use crate::glob::glob_match;

/// Placement rules in order; the first matching rule wins.
#[derive(Debug, Clone, Default)]
pub struct PlacementRules {
    rules: Vec<(Vec<u8>, Placement)>,
}

impl PlacementRules {
    /// Rules from a topology's `[[placement]]` list.
    pub fn new(rules: &[PlacementRule]) -> PlacementRules {
        PlacementRules {
            rules: rules
                .iter()
                .map(|r| (r.pattern.as_bytes().to_vec(), Placement::from_home(&r.home)))
                .collect(),
        }
    }

    /// Rules of `topology`.
    pub fn from_topology(topology: &Topology) -> PlacementRules {
        Self::new(&topology.placements)
    }

    /// The placement of `key`: the first matching rule's, else [`Placement::MultiMaster`].
    pub fn placement_of(&self, key: &[u8]) -> &Placement {
        const DEFAULT: &Placement = &Placement::MultiMaster;
        self.rules
            .iter()
            .find(|(pattern, _)| glob_match(pattern, key))
            .map(|(_, placement)| placement)
            .unwrap_or(DEFAULT)
    }

    /// Whether there is no rule (every key multi-master).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn glob() {
        assert!(glob_match(b"user:*", b"user:42"));
        assert!(glob_match(b"user:*", b"user:"));
        assert!(!glob_match(b"user:*", b"use"));
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"a?c", b"abc"));
        assert!(!glob_match(b"a?c", b"ac"));
        assert!(glob_match(b"*:*:x", b"a:b:c:x"));
        assert!(!glob_match(b"*:*:x", b"a:b:c:y"));
        assert!(glob_match(b"a*b*c", b"aXXbYYbZc"));
        assert!(!glob_match(b"abc", b"abcd"));
        assert!(glob_match(b"**?", b"z"));
        assert!(!glob_match(b"", b"z"));
        assert!(glob_match(b"", b""));
    }

    #[test]
    fn placement_first_match_wins() {
        let rules = PlacementRules::new(&[
            PlacementRule {
                pattern: "cfg:*".into(),
                home: "eu".into(),
            },
            PlacementRule {
                pattern: "c*".into(),
                home: "hash".into(),
            },
            PlacementRule {
                pattern: "mm:?".into(),
                home: "multi-master".into(),
            },
        ]);
        assert_eq!(rules.placement_of(b"cfg:1"), &Placement::Home("eu".into()));
        assert_eq!(rules.placement_of(b"cart"), &Placement::Hash);
        assert_eq!(rules.placement_of(b"mm:1"), &Placement::MultiMaster);
        assert_eq!(rules.placement_of(b"other"), &Placement::MultiMaster);
        assert!(PlacementRules::default().is_empty());
    }

    #[test]
    fn ring_is_deterministic_and_spread() {
        let a = HomeRing::new(["eu", "us", "ap"]);
        let b = HomeRing::new(["ap", "eu", "us", "eu"]);
        assert_eq!(a.regions(), ["ap", "eu", "us"]);
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for i in 0..3000 {
            let key = format!("user:{i}");
            let home = a.home_of(key.as_bytes()).unwrap();
            assert_eq!(Some(home), b.home_of(key.as_bytes()));
            *counts.entry(home).or_default() += 1;
        }
        for region in ["eu", "us", "ap"] {
            let n = counts[region];
            assert!((500..=1600).contains(&n), "{region}: {n} of 3000");
        }
        assert!(HomeRing::new(Vec::<String>::new()).home_of(b"k").is_none());
    }

    #[test]
    fn ring_results_are_pinned() {
        // These values must never change: every node of every version must agree on homes.
        let ring = HomeRing::new(["eu", "us", "ap"]);
        let homes: Vec<&str> = ["a", "b", "user:1", "user:2", "cart:9"]
            .iter()
            .map(|k| ring.home_of(k.as_bytes()).unwrap())
            .collect();
        assert_eq!(homes, PINNED_HOMES);
    }

    const PINNED_HOMES: [&str; 5] = ["us", "us", "us", "eu", "eu"];

    #[test]
    fn adding_a_region_moves_few_keys() {
        let three = HomeRing::new(["eu", "us", "ap"]);
        let four = HomeRing::new(["eu", "us", "ap", "sa"]);
        let moved = (0..4000)
            .filter(|i| {
                let k = format!("k{i}");
                let before = three.home_of(k.as_bytes()).unwrap();
                let after = four.home_of(k.as_bytes()).unwrap();
                if before != after {
                    assert_eq!(after, "sa", "keys move only to the new region");
                }
                before != after
            })
            .count();
        assert!(moved < 2000, "{moved} of 4000 moved");
    }

    #[test]
    fn nearest_healthy_picks_lowest_rtt() {
        let ms = Duration::from_millis;
        let regions = [
            RegionHealth {
                name: "far",
                rtt: Some(ms(80)),
                healthy: true,
            },
            RegionHealth {
                name: "near-down",
                rtt: Some(ms(5)),
                healthy: false,
            },
            RegionHealth {
                name: "unmeasured",
                rtt: None,
                healthy: true,
            },
            RegionHealth {
                name: "near",
                rtt: Some(ms(40)),
                healthy: true,
            },
        ];
        assert_eq!(nearest_healthy(&regions), Some("near"));
        assert_eq!(nearest_healthy(&regions[2..3]), Some("unmeasured"));
        assert_eq!(nearest_healthy(&regions[1..2]), None);
        assert_eq!(nearest_healthy(&[]), None);
        let tie = [
            RegionHealth {
                name: "b",
                rtt: Some(ms(1)),
                healthy: true,
            },
            RegionHealth {
                name: "a",
                rtt: Some(ms(1)),
                healthy: true,
            },
        ];
        assert_eq!(nearest_healthy(&tie), Some("a"));
    }
}

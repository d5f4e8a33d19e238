//! Cross-region replication and geo routing.
//!
//! Every applied entry that originated in this region leaves, in the same RocksDB write batch,
//! an **outbox** entry: the final state of each key it touched (see `keyspace::value`). On the
//! region's leader, one **shipper** per other region streams outbox entries, in index order and
//! batched, to any node of that region over QUIC; the receiving node proposes them into its own
//! Raft group as `Op::Merge`. The receiving region records, in the same write batch as the
//! merged data, the highest origin index it applied (its **watermark** for our region); merges
//! at or below it are skipped, so a resend after a leader change on either side neither loses
//! nor doubles anything. On (re)connect the shipper asks for that watermark and resumes after it.
//! A region whose watermark fell behind the outbox we keep gets a **resync**: every key state we
//! hold, merged (idempotent), then the watermark.
//!
//! Placement rules route writes: keys homed in another region are forwarded to it.
//!
//! (DESIGN.md puts the shipper/receiver in `geo`; they live here because they read the outbox
//! and propose through Raft, both server concerns; `geo` provides the links, HLC and ring.)

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, StreamExt};
use geo::{HomeRing, Placement, PlacementRules, Topology};
use serde::{Deserialize, Serialize};
use tracing::{info, info_span, warn, Instrument};

use crate::coalesce::Coalescer;
use crate::keyspace::{Keyspace, OutboxEntry};
use crate::op::{Op, OpResult};
use crate::raft::network::{
    decode, encode, RPC_FORWARD_WRITE, RPC_REPL_APPLY, RPC_REPL_WAIT, RPC_REPL_WATERMARK,
};
use crate::raft::{ForwardReply, ForwardRequest, RegionRaft};
use crate::shutdown::Shutdown;
use crate::write::{now_ms, WriteError};

/// Outbox entries sent per replication call at most.
const SHIP_BATCH: usize = 256;
/// Bytes of outbox entries per replication call at most (one larger entry still goes, alone).
const SHIP_CALL_BYTES: usize = 1024 * 1024;
/// Bytes of outbox entries in calls not yet answered, at most: a region slower to merge than
/// this one writes (on a busy machine, or catching up) gets a bounded queue of work instead
/// of a pipeline of calls so deep that the last ones time out while the first are merged, and
/// then get sent again from storage (seen as calls timing out after 5 s under a SET load, and
/// as that replication cost varying from run to run). 8 MiB per 80 ms round trip still
/// carries about 100 MB/s.
const SHIP_INFLIGHT_BYTES: usize = 8 * 1024 * 1024;
/// Bytes of outbox entries per replication call at least, however slow the link (a single
/// larger entry still goes, alone).
const SHIP_CALL_MIN_BYTES: usize = 16 * 1024;
/// Share of `SHIP_TIMEOUT` that the calls in flight may take to cross the link, at the rate its
/// congestion window allows (see [`LinkPace`]).
const SHIP_PACE_SHARE: f64 = 0.5;
/// Replication calls in flight per target region (covers a WAN round trip at one call per
/// `SHIP_COALESCE`, with room to spare).
const SHIP_PIPELINE: usize = 128;
/// While calls are in flight, a new call waits until this long after the previous one, so
/// entries arriving meanwhile travel together. (Sending each entry at once filled the window
/// within a few ms and then held everything for a round trip: bursts once per RTT.)
const SHIP_COALESCE: Duration = Duration::from_millis(2);
/// A region this many log entries behind the outbox's end gets stretches of the outbox folded
/// into one entry per call, each key's latest state (see `crate::coalesce`): catching up after
/// a partition or under a load it cannot merge as fast, it merges each hot key once per call
/// instead of once per entry that wrote it.
const CATCH_UP_BEHIND: u64 = 1024;
/// Outbox entries folded into one call at most.
const CATCH_UP_ENTRIES: usize = 16 * SHIP_BATCH;
/// Key states per resync call.
const RESYNC_BATCH: usize = 1000;
/// How long one replication call may take.
const SHIP_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before retrying a target after a failure.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// The `Op::Merge` index of a resync page: merged without checking or moving the watermark.
pub const RESYNC_INDEX: u64 = u64::MAX;
/// How often the leader looks for tombstones every region has merged.
const COLLECT_EVERY: Duration = Duration::from_secs(1);
/// How often the leader trims the outbox of what every region confirmed. Often, so that most
/// entries are covered by the trim's range deletion before their memtable is flushed: the flush
/// then drops them instead of writing them to a table file and compacting them later.
const TRIM_EVERY: Duration = Duration::from_millis(100);
/// How often every node checks (and re-dials) its links to the other regions' nodes.
const LINK_CHECK_EVERY: Duration = Duration::from_secs(1);
/// Bound on one dial of the link keeper: beyond the endpoint's own handshake bound.
const LINK_DIAL_TIMEOUT: Duration =
    Duration::from_secs(geo::link::DEFAULT_HANDSHAKE_TIMEOUT.as_secs() + 5);
/// Tombstones dropped per proposal at most.
const FORGET_BATCH: usize = 1000;
/// Proposals of dropped tombstones per round at most.
const FORGET_ROUNDS: usize = 16;
/// While idle, a shipper reports what its region merged (for tombstone collection) at most
/// this often.
const SEEN_EVERY: Duration = Duration::from_millis(500);

/// Region ids: the index of each region in the topology's regions sorted by name, so every
/// node derives the same ids from the same file.
pub fn region_ids(topology: &Topology) -> BTreeMap<String, u8> {
    let mut names: Vec<&str> = topology.region_names().collect();
    names.sort_unstable();
    names
        .into_iter()
        .enumerate()
        .map(|(i, n)| (n.to_string(), i as u8))
        .collect()
}

/// One shipped outbox entry.
#[derive(Serialize, Deserialize)]
pub struct ShippedEntry {
    /// Index in the origin's log (0 = part of a resync).
    pub index: u64,
    /// The [`OutboxEntry`] (HLC and key states) as the outbox stores it: the shipper sends
    /// the stored bytes without decoding them.
    pub entry: Bytes,
}

/// A replication call: entries from `origin`, in index order. (`ship_request_chunks` writes
/// its bincode encoding by hand, field by field: a change here must be made there too; its
/// test compares the two.)
#[derive(Serialize, Deserialize)]
pub struct ShipRequest {
    /// Origin region id.
    pub origin: u8,
    /// The origin index these entries follow: the receiver applies the call only once it has
    /// everything up to `prev` (0 for a resync page).
    pub prev: u64,
    /// Entries.
    pub entries: Vec<ShippedEntry>,
    /// After a resync: the watermark to record once the states are merged.
    pub resync_watermark: Option<u64>,
    /// The sender's `merged_hlc` per origin, read before the outbox: valid once this call's
    /// entries are merged, since they include every entry applied before it was read. Sent
    /// only when the call holds everything pending (not cut at `SHIP_BATCH` or the call's
    /// byte bound).
    pub seen: Option<Vec<(u8, u64)>>,
}

/// WAIT asked of the region's leader by a follower.
#[derive(Serialize, Deserialize)]
pub struct WaitRequest {
    /// Local log index of the client's last write.
    pub index: u64,
    /// Regions wanted.
    pub wanted: i64,
    /// How long to wait, ms.
    pub limit_ms: u64,
}

/// What the shipper knows about one other region (for MERIDIAN REGIONS, INFO, WAIT).
#[derive(Default)]
pub struct TargetStatus {
    /// Region name.
    pub region: String,
    /// Highest outbox index the region confirmed.
    pub acked: AtomicU64,
    /// Highest local log index known to be replicated there (covers entries with nothing
    /// to ship).
    pub acked_log: AtomicU64,
    /// HLC of the oldest entry sent but not confirmed, or not yet sent (0: none).
    pub oldest_unacked_hlc: AtomicU64,
    /// Last call succeeded.
    pub link_up: AtomicBool,
    /// Resyncs done.
    pub resyncs: AtomicU64,
    /// Outbox entries shipped folded into others while the region was far behind.
    pub coalesced_entries: AtomicU64,
    /// Key states not shipped because a later state of the key went in their place.
    pub superseded_states: AtomicU64,
}

/// One other region as this node sees it: what MERIDIAN REGIONS, INFO and the Prometheus
/// gauges show.
pub struct RegionStatus {
    /// Region name.
    pub region: String,
    /// Region id.
    pub id: u8,
    /// `up`, `down`, or `not-leader` (only the leader ships).
    pub link: &'static str,
    /// Lowest RTT to one of its nodes.
    pub rtt: Option<Duration>,
    /// Highest local outbox index it confirmed.
    pub acked_index: u64,
    /// Local outbox entries it has not confirmed.
    pub lag_entries: u64,
    /// Age of the oldest entry it has not confirmed, ms.
    pub lag_ms: u64,
    /// Resyncs sent to it.
    pub resyncs: u64,
    /// Outbox entries shipped to it folded into others (it was far behind).
    pub coalesced_entries: u64,
    /// Key states not shipped to it because a later state of the key went in their place.
    pub superseded_states: u64,
    /// Highest index of its log merged here (our watermark for it).
    pub applied_from_index: u64,
}

/// Routing of writes by placement rules, and the shippers' shared state.
pub struct Geo {
    /// Region id of every region.
    pub ids: BTreeMap<String, u8>,
    /// This node's region.
    pub region: String,
    /// Placement rules from the topology.
    rules: PlacementRules,
    /// The `hash` home ring.
    ring: HomeRing,
    /// The topology.
    topology: Topology,
    /// One status per other region.
    pub targets: Vec<Arc<TargetStatus>>,
    /// Highest outbox index trimmed.
    trimmed: Mutex<u64>,
    /// Outbox entries kept beyond the slowest region before it must resync instead.
    backlog: u64,
}

impl Geo {
    /// Routing and status for `region` in `topology`, keeping `backlog` outbox entries for a
    /// region that is behind.
    pub fn new(topology: &Topology, region: &str, backlog: u64) -> Geo {
        let targets = topology
            .region_names()
            .filter(|r| *r != region)
            .map(|r| {
                Arc::new(TargetStatus {
                    region: r.to_string(),
                    ..TargetStatus::default()
                })
            })
            .collect();
        Geo {
            ids: region_ids(topology),
            region: region.to_string(),
            rules: PlacementRules::from_topology(topology),
            ring: HomeRing::from_topology(topology),
            topology: topology.clone(),
            targets,
            trimmed: Mutex::new(0),
            backlog,
        }
    }

    /// The region a key's writes must go to, when not this one.
    pub fn remote_home(&self, key: &[u8]) -> Option<String> {
        let home = match self.rules.placement_of(key) {
            Placement::MultiMaster => return None,
            Placement::Home(r) => r.clone(),
            Placement::Hash => self.ring.home_of(key)?.to_string(),
        };
        (home != self.region).then_some(home)
    }

    /// Waits (up to `limit`) until `wanted` other regions applied everything up to local log
    /// index `index`; returns how many have. Meaningful on the region's leader, whose
    /// shippers track what the other regions confirmed.
    pub async fn wait_acked(&self, index: u64, wanted: i64, limit: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let acked = if index == 0 {
                0
            } else {
                self.regions_acked(index)
            };
            if acked as i64 >= wanted || index == 0 || tokio::time::Instant::now() >= deadline {
                return acked;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// WAIT on any node of the region: the leader's count, asked over the link when this
    /// node follows (its own shippers are idle).
    pub async fn wait_acked_anywhere(
        &self,
        raft: &RegionRaft,
        index: u64,
        wanted: i64,
        limit: Duration,
    ) -> usize {
        let remote = raft
            .leader()
            .filter(|l| *l != raft.node_id)
            .and_then(|l| Some((raft.endpoint.as_ref()?, raft.peer_of(l)?)));
        let Some((endpoint, leader)) = remote else {
            return self.wait_acked(index, wanted, limit).await;
        };
        let request = WaitRequest {
            index,
            wanted,
            limit_ms: limit.as_millis() as u64,
        };
        let Ok(body) = encode(&request) else {
            return 0;
        };
        match endpoint
            .call(&leader, RPC_REPL_WAIT, body, limit + SHIP_TIMEOUT)
            .await
            .map_err(|e| e.to_string())
            .and_then(|reply| decode::<u64>(&reply))
        {
            Ok(n) => n as usize,
            Err(e) => {
                warn!(leader = %leader.name, error = %e, "WAIT: asking the leader failed");
                0
            }
        }
    }

    /// The other regions as this node sees them (see [`RegionStatus`]).
    pub fn status(&self, raft: &RegionRaft, keyspace: &Keyspace) -> Vec<RegionStatus> {
        let leader = raft.is_leader();
        let newest = keyspace.outbox_last();
        self.targets
            .iter()
            .map(|t| {
                let id = self.ids.get(&t.region).copied().unwrap_or(0);
                let acked_index = t.acked.load(Ordering::Relaxed);
                let oldest = t.oldest_unacked_hlc.load(Ordering::Relaxed);
                RegionStatus {
                    region: t.region.clone(),
                    id,
                    link: if !leader {
                        "not-leader"
                    } else if t.link_up.load(Ordering::Relaxed) {
                        "up"
                    } else {
                        "down"
                    },
                    rtt: raft.endpoint.as_ref().and_then(|ep| {
                        self.topology
                            .nodes_in_region(&t.region)
                            .iter()
                            .filter_map(|n| ep.rtt(&n.name))
                            .min()
                    }),
                    acked_index,
                    lag_entries: if leader {
                        newest.saturating_sub(acked_index)
                    } else {
                        0
                    },
                    lag_ms: if leader && oldest != 0 {
                        now_ms().saturating_sub(geo::Timestamp(oldest).physical_ms())
                    } else {
                        0
                    },
                    resyncs: t.resyncs.load(Ordering::Relaxed),
                    coalesced_entries: t.coalesced_entries.load(Ordering::Relaxed),
                    superseded_states: t.superseded_states.load(Ordering::Relaxed),
                    applied_from_index: keyspace.watermark(id).unwrap_or(0),
                }
            })
            .collect()
    }

    /// Number of other regions that applied everything up to local log index `index`.
    pub fn regions_acked(&self, index: u64) -> usize {
        self.targets
            .iter()
            .filter(|t| t.acked_log.load(Ordering::Relaxed) >= index)
            .count()
    }

    /// The other region with the lowest measured RTT whose replication link is up.
    pub fn nearest_region(&self, raft: &RegionRaft) -> Option<String> {
        let endpoint = raft.endpoint.as_ref()?;
        let health: Vec<geo::RegionHealth<'_>> = self
            .targets
            .iter()
            .map(|t| geo::RegionHealth {
                name: t.region.as_str(),
                rtt: self
                    .topology
                    .nodes_in_region(&t.region)
                    .iter()
                    .filter_map(|n| endpoint.rtt(&n.name))
                    .min(),
                healthy: self
                    .topology
                    .nodes_in_region(&t.region)
                    .iter()
                    .any(|n| endpoint.is_connected(&n.name)),
            })
            .collect();
        geo::nearest_healthy(&health).map(str::to_string)
    }

    /// Forwards `ops` to a node of `region` (which hands them to its leader).
    pub async fn forward_to_region(
        &self,
        raft: &RegionRaft,
        region: &str,
        ops: &[Op],
    ) -> Result<(Vec<OpResult>, u64), WriteError> {
        let endpoint = raft
            .endpoint
            .as_ref()
            .ok_or(WriteError::Remote("no links to other regions".into()))?;
        let body =
            ForwardRequest::encode(ops, raft.settings.write_timeout).map_err(WriteError::Remote)?;
        let mut last_error = String::from("no nodes");
        for node in self.topology.nodes_in_region(region) {
            match endpoint
                .call(
                    &node.peer_addr(),
                    RPC_FORWARD_WRITE,
                    body.clone(),
                    raft.settings.write_timeout,
                )
                .await
            {
                Ok(reply) => {
                    return match decode::<ForwardReply>(&reply).map_err(WriteError::Remote)? {
                        // The index belongs to the other region's log: WAIT does not apply.
                        ForwardReply::Applied(results, _) => Ok((results, 0)),
                        ForwardReply::NotLeader(_) => Err(WriteError::NoLeader {
                            region: region.to_string(),
                            waited_ms: 0,
                        }),
                        ForwardReply::Failed(why) => Err(WriteError::Remote(why)),
                    };
                }
                // Never sent: try another node of the region.
                Err(e @ geo::RpcError::Unreachable { .. }) => last_error = e.to_string(),
                Err(e) => {
                    return Err(WriteError::Remote(format!(
                        "forwarding to region {region}: {e}"
                    )))
                }
            }
        }
        Err(WriteError::Remote(format!(
            "region {region} unreachable: {last_error}"
        )))
    }
}

/// Starts one shipper per other region and the outbox trimmer.
pub fn start(raft: Arc<RegionRaft>, keyspace: Arc<Keyspace>, geo: Arc<Geo>, shutdown: &Shutdown) {
    for target in &geo.targets {
        let span = info_span!("ship", to_region = %target.region);
        shutdown.tasks.spawn(
            ship_loop(
                raft.clone(),
                keyspace.clone(),
                geo.clone(),
                target.clone(),
                shutdown.clone(),
            )
            .instrument(span),
        );
    }
    if !geo.targets.is_empty() {
        shutdown.tasks.spawn(keep_region_links(
            raft.clone(),
            geo.clone(),
            shutdown.clone(),
        ));
        shutdown
            .tasks
            .spawn(trim_loop(raft, keyspace, geo, shutdown.clone()));
    }
}

/// Keeps this node linked to every node of the other regions (dialing those that are down
/// every `LINK_CHECK_EVERY`), whatever its role: a node whose region loses its quorum then
/// already knows which regions are healthy and their RTTs, and forwards writes to the
/// nearest one at once (a follower has no shipping traffic that would have linked it).
async fn keep_region_links(raft: Arc<RegionRaft>, geo: Arc<Geo>, shutdown: Shutdown) {
    let Some(endpoint) = raft.endpoint.clone() else {
        return;
    };
    let peers: Vec<geo::PeerAddr> = geo
        .targets
        .iter()
        .flat_map(|t| geo.topology.nodes_in_region(&t.region))
        .map(|n| n.peer_addr())
        .collect();
    loop {
        // Each dial gets longer than the handshake's own bound, so a slow handshake (a long
        // WAN delay, a lost packet) completes and a failure is recorded with its backoff.
        let dials = peers
            .iter()
            .filter(|p| !endpoint.is_connected(&p.name))
            .map(|p| endpoint.connect(p, LINK_DIAL_TIMEOUT));
        // Failures are expected (a region down); the endpoint records them for MERIDIAN NODES.
        let _ = futures::future::join_all(dials).await;
        tokio::select! {
            _ = tokio::time::sleep(LINK_CHECK_EVERY) => {}
            _ = shutdown.token.cancelled() => return,
        }
    }
}

/// Streams this region's outbox to one other region while this node leads.
async fn ship_loop(
    raft: Arc<RegionRaft>,
    keyspace: Arc<Keyspace>,
    geo: Arc<Geo>,
    target: Arc<TargetStatus>,
    shutdown: Shutdown,
) {
    let Some(endpoint) = raft.endpoint.clone() else {
        return;
    };
    let my_id = keyspace.region_id();
    let nodes: Vec<_> = geo
        .topology
        .nodes_in_region(&target.region)
        .iter()
        .map(|n| n.peer_addr())
        .collect();
    let mut node_idx = 0usize;
    loop {
        if shutdown.token.is_cancelled() {
            return;
        }
        if !raft.is_leader() || nodes.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = shutdown.token.cancelled() => return,
            }
            continue;
        }
        let peer = nodes[node_idx % nodes.len()].clone();
        // Where the target region stands.
        let wm = match endpoint
            .call(
                &peer,
                RPC_REPL_WATERMARK,
                Bytes::from(vec![my_id]),
                SHIP_TIMEOUT,
            )
            .await
        {
            Ok(reply) => match decode::<Result<u64, String>>(&reply) {
                Ok(Ok(wm)) => wm,
                other => {
                    warn!(peer = %peer.name, reply = ?other.err(), "watermark request failed");
                    node_idx += 1;
                    target.link_up.store(false, Ordering::Relaxed);
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            },
            Err(e) => {
                if target.link_up.swap(false, Ordering::Relaxed) {
                    warn!(peer = %peer.name, error = %e, "replication link down");
                }
                node_idx += 1;
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
        };
        if !target.link_up.swap(true, Ordering::Relaxed) {
            info!(peer = %peer.name, watermark = wm, "replication link up");
        }
        target.acked.fetch_max(wm, Ordering::Relaxed);
        let result = ship_from(
            &raft, &keyspace, &target, &endpoint, &peer, my_id, wm, &shutdown,
        )
        .await;
        if let Err(e) = result {
            let path = endpoint.path(&peer.name);
            warn!(
                peer = %peer.name,
                error = %e,
                rtt_ms = path.map(|p| p.rtt.as_millis() as u64),
                cwnd_bytes = path.map(|p| p.cwnd),
                lost_packets = path.map(|p| p.lost_packets),
                "replication stream interrupted"
            );
            target.link_up.store(false, Ordering::Relaxed);
            node_idx += 1;
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn ship_from(
    raft: &RegionRaft,
    keyspace: &Keyspace,
    target: &TargetStatus,
    endpoint: &geo::Endpoint,
    peer: &geo::PeerAddr,
    my_id: u8,
    mut wm: u64,
    shutdown: &Shutdown,
) -> Result<(), String> {
    // Behind what the outbox still holds: resync from the keyspace first.
    if wm < keyspace.outbox_trimmed().map_err(|e| e.to_string())? {
        wm = resync(keyspace, target, endpoint, peer, my_id).await?;
        target.acked.fetch_max(wm, Ordering::Relaxed);
        target.acked_log.fetch_max(wm, Ordering::Relaxed);
    }
    // Up to SHIP_PIPELINE calls in flight; each names the index it follows (`prev`) and the
    // receiver applies them in that order, so a WAN round trip does not idle the stream.
    let mut sent_upto = wm;
    let mut in_flight: FuturesOrdered<BoxFuture<'static, Result<u64, String>>> =
        FuturesOrdered::new();
    let mut last_sent = tokio::time::Instant::now();
    let mut seen_sent: Option<Vec<(u8, u64)>> = None;
    let mut seen_sent_at = tokio::time::Instant::now();
    // HLC of the first entry of each call in flight (0 for calls without entries) and the
    // call's bytes of entries, in order.
    let mut first_hlcs: std::collections::VecDeque<(u64, usize)> =
        std::collections::VecDeque::new();
    let mut in_flight_bytes = 0usize;
    loop {
        if !raft.is_leader() || shutdown.token.is_cancelled() {
            return Ok(());
        }
        // Read the applied index before the outbox: if nothing is pending after what was
        // sent, the region has everything up to that index once the calls are answered.
        let applied = raft.applied_index();
        let notified = keyspace.outbox_notify().notified();
        let next_send = last_sent + SHIP_COALESCE;
        let coalescing = !in_flight.is_empty() && tokio::time::Instant::now() < next_send;
        let pace = LinkPace::of(endpoint.path(&peer.name));
        let window_open = in_flight.len() < SHIP_PIPELINE && in_flight_bytes < pace.in_flight_bytes;
        if window_open && !coalescing {
            // What we merged, read before the outbox (see `ShipRequest::seen`).
            let seen = keyspace.merged_hlcs();
            let entries = keyspace
                .outbox_raw_after(sent_upto, SHIP_BATCH, pace.call_bytes)
                .map_err(|e| e.to_string())?;
            if let Some((first_index, _)) = entries.first() {
                // The outbox was trimmed past what this region has (it fell further behind
                // than `replication-backlog` while connected): shipping on would skip the
                // trimmed entries for good (a chaos test lost a region's DELs that way).
                // Reconnecting resyncs it first.
                // (Outbox indexes are log indexes: gaps are usual, only a trim makes one fatal.)
                if *first_index > sent_upto + 1
                    && sent_upto < keyspace.outbox_trimmed().map_err(|e| e.to_string())?
                {
                    return Err(format!(
                        "the outbox was trimmed past entry {sent_upto} this region needs next \
                         (it holds {first_index} on); resyncing"
                    ));
                }
            }
            if let Some((_, first)) = entries.first() {
                let first_hlc = OutboxEntry::hlc_of(first).map_err(|e| e.to_string())?;
                let far_behind = entries.last().is_some_and(|(last, _)| {
                    keyspace.outbox_last().saturating_sub(*last) >= CATCH_UP_BEHIND
                });
                let entries = if far_behind {
                    fold_behind(keyspace, target, entries, pace.call_bytes)?
                } else {
                    entries
                };
                let last_index = entries.last().map_or(sent_upto, |(index, _)| *index);
                if first_hlcs.iter().all(|(h, _)| *h == 0) {
                    target
                        .oldest_unacked_hlc
                        .store(first_hlc, Ordering::Relaxed);
                }
                let bytes: usize = entries.iter().map(|(_, e)| e.len()).sum();
                // The call reaches the outbox's end (not cut by a bound). An entry written
                // since the read makes this false: its `seen` then goes with a later call.
                let complete = last_index >= keyspace.outbox_last();
                let request = ShipRequest {
                    origin: my_id,
                    prev: sent_upto,
                    seen: complete.then(|| seen.clone()),
                    entries: entries
                        .into_iter()
                        .map(|(index, entry)| ShippedEntry { index, entry })
                        .collect(),
                    resync_watermark: None,
                };
                in_flight.push_back(ship_call(endpoint, peer, &request, last_index)?);
                first_hlcs.push_back((first_hlc, bytes));
                in_flight_bytes += bytes;
                sent_upto = last_index;
                last_sent = tokio::time::Instant::now();
                if complete {
                    seen_sent = Some(seen);
                    seen_sent_at = last_sent;
                }
                continue;
            }
            // Nothing to ship: still tell the region what we merged when that changed.
            if in_flight.is_empty()
                && seen_sent.as_ref() != Some(&seen)
                && seen_sent_at.elapsed() >= SEEN_EVERY
            {
                let request = ShipRequest {
                    origin: my_id,
                    prev: sent_upto,
                    entries: Vec::new(),
                    resync_watermark: None,
                    seen: Some(seen.clone()),
                };
                in_flight.push_back(ship_call(endpoint, peer, &request, sent_upto)?);
                first_hlcs.push_back((0, 0));
                seen_sent = Some(seen);
                seen_sent_at = tokio::time::Instant::now();
                last_sent = seen_sent_at;
                continue;
            }
            if in_flight.is_empty() {
                target.acked_log.fetch_max(applied, Ordering::Relaxed);
                target.oldest_unacked_hlc.store(0, Ordering::Relaxed);
            }
        }
        tokio::select! {
            Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                wm = done?;
                if let Some((_, bytes)) = first_hlcs.pop_front() {
                    in_flight_bytes -= bytes;
                }
                target.acked.fetch_max(wm, Ordering::Relaxed);
                target.acked_log.fetch_max(wm, Ordering::Relaxed);
                let next = first_hlcs
                    .iter()
                    .map(|(h, _)| *h)
                    .find(|h| *h != 0)
                    .unwrap_or(0);
                target.oldest_unacked_hlc.store(next, Ordering::Relaxed);
            }
            _ = notified, if window_open && !coalescing => {}
            _ = tokio::time::sleep_until(next_send), if coalescing => {}
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = shutdown.token.cancelled() => return Ok(()),
        }
    }
}

/// How much a shipper may send to a region at a time, from the congestion state of its link.
///
/// A link's congestion window bounds its rate to about `cwnd / rtt`. After a spell of heavy
/// loss the window shrinks (to the links' floor, see `geo::link`, or lower on older peers),
/// and on a long round trip calls sized for a healthy link (1 MiB each, 8 MiB in flight) can
/// take longer than `SHIP_TIMEOUT` to cross: each timeout restarts the stream from the
/// region's watermark and sends the same bytes again. Calls and the bytes in flight are held to
/// what the link carries in a share of the timeout, so calls complete and the link, kept busy,
/// grows its window back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LinkPace {
    /// Bytes of outbox entries per call at most.
    call_bytes: usize,
    /// Bytes of outbox entries in unanswered calls at most.
    in_flight_bytes: usize,
}

impl LinkPace {
    /// The pace for a link in `path`'s state; the fixed bounds without a live connection.
    fn of(path: Option<geo::PathState>) -> LinkPace {
        let Some(path) = path else {
            return LinkPace {
                call_bytes: SHIP_CALL_BYTES,
                in_flight_bytes: SHIP_INFLIGHT_BYTES,
            };
        };
        let rtt = path.rtt.max(Duration::from_millis(1)).as_secs_f64();
        let carried = path.cwnd as f64 / rtt * SHIP_TIMEOUT.as_secs_f64() * SHIP_PACE_SHARE;
        let carried = carried.min(SHIP_INFLIGHT_BYTES as f64) as usize;
        let call_bytes = (carried / 2).clamp(SHIP_CALL_MIN_BYTES, SHIP_CALL_BYTES);
        LinkPace {
            call_bytes,
            in_flight_bytes: carried.max(call_bytes),
        }
    }
}

/// Folds `entries` (read after what was shipped) and the outbox entries that follow them into
/// one entry with each key's latest state (see [`Coalescer`]), up to about `call_bytes` of
/// states, `CATCH_UP_ENTRIES` entries or the outbox's end; it ships under the index of the
/// last entry folded.
fn fold_behind(
    keyspace: &Keyspace,
    target: &TargetStatus,
    entries: Vec<(u64, Bytes)>,
    call_bytes: usize,
) -> Result<Vec<(u64, Bytes)>, String> {
    let mut folder = Coalescer::default();
    let full = |f: &Coalescer| f.bytes() >= call_bytes || f.entries() >= CATCH_UP_ENTRIES;
    let mut next = entries;
    loop {
        for (index, raw) in next {
            if full(&folder) {
                break;
            }
            folder.take(index, &raw)?;
        }
        if full(&folder) {
            break;
        }
        next = keyspace
            .outbox_raw_after(folder.last_index(), SHIP_BATCH, call_bytes)
            .map_err(|e| e.to_string())?;
        // A trim past what was folded (this region fell behind the retained outbox): stop at
        // the gap, where the next call finds it and resyncs.
        let gap = next
            .first()
            .is_some_and(|(first, _)| *first > folder.last_index() + 1)
            && folder.last_index() < keyspace.outbox_trimmed().map_err(|e| e.to_string())?;
        if next.is_empty() || gap {
            break;
        }
    }
    target
        .coalesced_entries
        .fetch_add(folder.entries() as u64, Ordering::Relaxed);
    target
        .superseded_states
        .fetch_add(folder.superseded() as u64, Ordering::Relaxed);
    let last_index = folder.last_index();
    Ok(vec![(last_index, folder.finish()?)])
}

/// `request` as `encode` writes it (bincode), in chunks: the stored outbox entries go out as
/// they are instead of being copied into one buffer of several MB per call, which cost a
/// loaded leader more in page faults than the rest of shipping.
fn ship_request_chunks(request: &ShipRequest) -> Result<Vec<Bytes>, String> {
    use bytes::BufMut;
    let mut heads = bytes::BytesMut::with_capacity(17 + 16 * request.entries.len());
    heads.put_u8(request.origin);
    heads.put_u64_le(request.prev);
    heads.put_u64_le(request.entries.len() as u64);
    let mut chunks = Vec::with_capacity(2 * request.entries.len() + 1);
    for e in &request.entries {
        heads.put_u64_le(e.index);
        heads.put_u64_le(e.entry.len() as u64);
        chunks.push(heads.split().freeze());
        chunks.push(e.entry.clone());
    }
    let tail = bincode::serialize(&(&request.resync_watermark, &request.seen))
        .map_err(|e| e.to_string())?;
    heads.extend_from_slice(&tail);
    chunks.push(heads.split().freeze());
    Ok(chunks)
}

/// One replication call in flight; resolves to `upto` (the outbox index it covers) once the
/// region merged it.
fn ship_call(
    endpoint: &geo::Endpoint,
    peer: &geo::PeerAddr,
    request: &ShipRequest,
    upto: u64,
) -> Result<BoxFuture<'static, Result<u64, String>>, String> {
    let body = ship_request_chunks(request)?;
    let (endpoint, peer) = (endpoint.clone(), peer.clone());
    Ok(Box::pin(async move {
        let reply = endpoint
            .call_chunks(&peer, RPC_REPL_APPLY, body, SHIP_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        decode::<Result<u64, String>>(&reply)??;
        Ok(upto)
    }))
}

/// Sends every key state this region holds, then the watermark to resume from.
async fn resync(
    keyspace: &Keyspace,
    target: &TargetStatus,
    endpoint: &geo::Endpoint,
    peer: &geo::PeerAddr,
    my_id: u8,
) -> Result<u64, String> {
    // Everything up to the newest outbox entry (or, with the outbox trimmed empty, up to what
    // was trimmed) is in the key states read below.
    let upto = keyspace
        .outbox_last()
        .max(keyspace.outbox_trimmed().map_err(|e| e.to_string())?);
    // The HLC of that newest entry, sent with the last page: the receiver has then merged
    // this region's entries up to it, and its reports let this region collect tombstones and
    // fired states even if it writes nothing more (they waited for the next write before; 0
    // when the entry was trimmed: the next shipped entry moves it then).
    let upto_hlc = keyspace
        .outbox_raw_after(upto.saturating_sub(1), 1, usize::MAX)
        .ok()
        .and_then(|entries| entries.into_iter().next())
        .filter(|(index, _)| *index == upto)
        .and_then(|(_, entry)| OutboxEntry::hlc_of(&entry).ok())
        .unwrap_or(0);
    warn!(
        watermark_to = upto,
        "region is behind the retained outbox: resyncing from the keyspace"
    );
    let mut after: Option<(u8, Bytes)> = None;
    loop {
        let (states, next) = keyspace
            .raw_states_after(after.as_ref(), RESYNC_BATCH)
            .map_err(|e| e.to_string())?;
        let done = next.is_none();
        let request = ShipRequest {
            origin: my_id,
            prev: 0,
            entries: vec![ShippedEntry {
                index: 0,
                entry: encode(&OutboxEntry {
                    hlc: if done { upto_hlc } else { 0 },
                    states,
                })?,
            }],
            resync_watermark: done.then_some(upto),
            seen: None,
        };
        let reply = endpoint
            .call(peer, RPC_REPL_APPLY, encode(&request)?, SHIP_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        decode::<Result<u64, String>>(&reply)??;
        if done {
            target.resyncs.fetch_add(1, Ordering::Relaxed);
            return Ok(upto);
        }
        after = next;
    }
}

/// Calls of one origin waiting on a node at most (the shipper keeps `SHIP_PIPELINE` in flight;
/// the rest is slack for resends).
const MAX_WAITING_CALLS: usize = 4 * SHIP_PIPELINE;
/// Key states merged in one Raft proposal at most when ready calls are combined.
const MAX_COMBINED_STATES: usize = 8192;
/// How often a call waiting for its predecessor re-checks the durable watermark (the
/// predecessor may have been merged through another node of the region).
const GAP_RECHECK: Duration = Duration::from_millis(20);

/// Per-node state of inbound replication: the calls of each origin are merged in `prev`
/// order, and whatever is ready when the previous proposal finishes goes into one proposal.
/// (Proposing one call at a time made calls queue behind each other's Raft round trip: the
/// visibility lag grew with the load.)
#[derive(Default)]
pub struct Inbound {
    /// Origin region id → its queue.
    origins: Mutex<BTreeMap<u8, OriginQueue>>,
    /// Source of call ids (to withdraw a call that gave up waiting).
    next_call: AtomicU64,
}

/// One origin's calls on this node.
#[derive(Default)]
struct OriginQueue {
    /// Highest origin index merged, or being merged, through this node (or durable).
    end: u64,
    /// Calls waiting for their turn, by the index they follow.
    waiting: BTreeMap<u64, Vec<InboundCall>>,
    /// A merge task is running for this origin.
    merging: bool,
}

/// A replication call waiting to be merged.
struct InboundCall {
    id: u64,
    ops: Vec<Op>,
    states: usize,
    /// The origin index this call brings the region to once merged.
    upto: u64,
    reply: tokio::sync::oneshot::Sender<Result<(), String>>,
}

impl OriginQueue {
    /// Takes the calls that can be merged now, in order, up to the size bound.
    fn take_ready(&mut self) -> Vec<InboundCall> {
        let mut batch: Vec<InboundCall> = Vec::new();
        let mut states = 0;
        while let Some(mut entry) = self.waiting.first_entry() {
            if *entry.key() > self.end
                || (!batch.is_empty() && states + entry.get()[0].states > MAX_COMBINED_STATES)
            {
                break;
            }
            let call = entry.get_mut().remove(0);
            if entry.get().is_empty() {
                entry.remove();
            }
            states += call.states;
            self.end = self.end.max(call.upto);
            batch.push(call);
        }
        batch
    }

    fn has_ready(&self) -> bool {
        self.waiting
            .first_key_value()
            .is_some_and(|(prev, _)| *prev <= self.end)
    }
}

impl Inbound {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u8, OriginQueue>> {
        self.origins.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a merge task if a call is ready, first catching up with the durable watermark
    /// when none is (the predecessor may have been merged through another node).
    fn kick(&self, raft: &Arc<RegionRaft>, origin: u8) {
        let ready = self.lock().get(&origin).is_some_and(OriginQueue::has_ready);
        let durable = if ready {
            0
        } else {
            raft.keyspace.watermark(origin).unwrap_or(0)
        };
        let mut origins = self.lock();
        let queue = origins.entry(origin).or_default();
        queue.end = queue.end.max(durable);
        if !queue.merging && queue.has_ready() {
            queue.merging = true;
            tokio::spawn(merge_ready(raft.clone(), origin));
        }
    }

    /// Withdraws a call that gave up waiting (if no merge task took it yet).
    fn withdraw(&self, origin: u8, prev: u64, id: u64) {
        let mut origins = self.lock();
        let Some(queue) = origins.get_mut(&origin) else {
            return;
        };
        if let Some(calls) = queue.waiting.get_mut(&prev) {
            calls.retain(|c| c.id != id);
            if calls.is_empty() {
                queue.waiting.remove(&prev);
            }
        }
    }
}

/// Withdraws a waiting call from its queue when the call's handler ends, however it ends
/// (answered, timed out, or dropped because the sender stopped waiting). A call already taken
/// by a merge task is not in the queue any more: nothing to do then.
struct WithdrawOnDrop<'a> {
    inbound: &'a Inbound,
    origin: u8,
    prev: u64,
    id: u64,
}

impl Drop for WithdrawOnDrop<'_> {
    fn drop(&mut self) {
        self.inbound.withdraw(self.origin, self.prev, self.id);
    }
}

/// Merges the ready calls of `origin`, batch after batch, until none is ready.
async fn merge_ready(raft: Arc<RegionRaft>, origin: u8) {
    loop {
        let mut batch = {
            let mut origins = raft.inbound.lock();
            let queue = origins.entry(origin).or_default();
            let batch = queue.take_ready();
            if batch.is_empty() {
                queue.merging = false;
                return;
            }
            batch
        };
        let ops: Vec<Op> = batch
            .iter_mut()
            .flat_map(|c| std::mem::take(&mut c.ops))
            .collect();
        let result = match raft.write(ops, None).await {
            // A merge the apply refused (a state that does not decode, a database out of
            // range) is an error for the sender, which then keeps the entry and says so in its
            // log, rather than an ack that would let it trim the entry unmerged.
            Ok((results, _)) => match results.iter().find_map(|r| match r {
                OpResult::Err(e) => Some(e),
                _ => None,
            }) {
                Some(e) => {
                    tracing::error!(origin, error = %e, "refused a shipped entry");
                    Err(format!("merge refused: {e}"))
                }
                None => Ok(()),
            },
            Err(e) => Err(e.to_string()),
        };
        if result.is_err() {
            // Calls after these must wait for a resend: back to what is durable.
            let durable = raft.keyspace.watermark(origin).unwrap_or(0);
            let mut origins = raft.inbound.lock();
            let queue = origins.entry(origin).or_default();
            queue.end = durable;
        }
        for call in batch {
            let _ = call.reply.send(result.clone());
        }
    }
}

/// The receiving side: proposes shipped entries as merges through this region's Raft group,
/// once everything they follow has been merged.
pub async fn receive(raft: &Arc<RegionRaft>, body: &[u8]) -> Result<u64, String> {
    let request: ShipRequest = decode(body)?;
    let last = request.entries.last().map_or(0, |e| e.index);
    let origin = request.origin;
    let mut states = 0;
    let mut ops: Vec<Op> = Vec::with_capacity(request.entries.len() + 2);
    // The HLC a resync's last page covers (0 from an origin that does not send it).
    let mut resync_hlc = 0;
    for e in request.entries {
        let entry: OutboxEntry = decode(&e.entry)?;
        states += entry.states.len();
        if e.index == 0 {
            resync_hlc = entry.hlc;
        }
        ops.push(Op::Merge {
            origin,
            // A resync page carries no index: merged unconditionally (idempotent).
            index: if e.index == 0 { RESYNC_INDEX } else { e.index },
            hlc: entry.hlc,
            states: entry.states,
        });
    }
    if let Some(wm) = request.resync_watermark {
        ops.push(Op::Merge {
            origin,
            index: wm,
            hlc: resync_hlc,
            states: Vec::new(),
        });
    }
    if let Some(hlcs) = request.seen {
        ops.push(Op::Seen { from: origin, hlcs });
    }
    let acked = request.resync_watermark.unwrap_or(last);
    let inbound = &raft.inbound;
    let id = inbound.next_call.fetch_add(1, Ordering::Relaxed);
    let (reply, mut replied) = tokio::sync::oneshot::channel();
    {
        let mut origins = inbound.lock();
        let queue = origins.entry(origin).or_default();
        if queue.waiting.values().map(Vec::len).sum::<usize>() >= MAX_WAITING_CALLS {
            return Err(format!(
                "too many replication calls from region {origin} waiting"
            ));
        }
        queue
            .waiting
            .entry(request.prev)
            .or_default()
            .push(InboundCall {
                id,
                ops,
                states,
                upto: acked,
                reply,
            });
    }
    // Dropped with the call when its sender gives up: the call leaves the queue then too.
    let _withdraw = WithdrawOnDrop {
        inbound,
        origin,
        prev: request.prev,
        id,
    };
    inbound.kick(raft, origin);
    let deadline = tokio::time::Instant::now() + SHIP_TIMEOUT;
    loop {
        match tokio::time::timeout(GAP_RECHECK, &mut replied).await {
            Ok(Ok(result)) => return result.map(|()| acked),
            Ok(Err(_)) => return Err("replication merge task ended".into()),
            Err(_) if tokio::time::Instant::now() >= deadline => {
                inbound.withdraw(origin, request.prev, id);
                // Taken by a merge task just before: its outcome is still coming.
                return match tokio::time::timeout(raft.settings.write_timeout, replied).await {
                    Ok(Ok(result)) => result.map(|()| acked),
                    _ => Err(format!(
                        "gap: entries after {} from region {origin} have not arrived",
                        request.prev
                    )),
                };
            }
            Err(_) => inbound.kick(raft, origin),
        }
    }
}

/// The leader's housekeeping: every `TRIM_EVERY` it drops outbox entries every other region
/// has confirmed (or that the slowest region is too far behind to need: it will resync), every
/// `COLLECT_EVERY` tombstones every region has merged. Both go through Raft, so every replica
/// drops the same.
async fn trim_loop(
    raft: Arc<RegionRaft>,
    keyspace: Arc<Keyspace>,
    geo: Arc<Geo>,
    shutdown: Shutdown,
) {
    let mut last_collect = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TRIM_EVERY) => {}
            _ = shutdown.token.cancelled() => return,
        }
        if !raft.is_leader() {
            continue;
        }
        let trimmed = trim_outbox(&raft, &keyspace, &geo);
        if shutdown.unless_stopped(trimmed).await.is_none() {
            return;
        }
        if last_collect.elapsed() < COLLECT_EVERY {
            continue;
        }
        last_collect = tokio::time::Instant::now();
        let collected = collect_tombstones(&raft, &keyspace, &geo);
        let Some(collected) = shutdown.unless_stopped(collected).await else {
            return;
        };
        if let Err(e) = collected {
            warn!(error = %e, "tombstone collection failed");
        }
    }
}

async fn trim_outbox(raft: &RegionRaft, keyspace: &Keyspace, geo: &Geo) {
    let last = keyspace.outbox_last();
    if last == 0 {
        return;
    }
    let slowest = geo
        .targets
        .iter()
        .map(|t| t.acked.load(Ordering::Relaxed))
        .min()
        .unwrap_or(0);
    let upto = slowest.max(last.saturating_sub(geo.backlog));
    let advanced = upto > *geo.trimmed.lock().unwrap_or_else(|p| p.into_inner());
    if advanced {
        // Recorded only once applied: a failed trim is retried on the next round.
        match raft.write(vec![Op::TrimOutbox { upto }], None).await {
            Ok(_) => {
                let mut trimmed = geo.trimmed.lock().unwrap_or_else(|p| p.into_inner());
                *trimmed = (*trimmed).max(upto);
            }
            Err(e) => warn!(error = %e, "outbox trim failed"),
        }
    }
}

/// The HLC up to which tombstones made by region `origin` can be dropped here: every other
/// region has merged them ([`crate::keyspace::merged_everywhere`], from the reports stored here).
pub fn collect_bound(keyspace: &Keyspace, regions: &[u8], me: u8, origin: u8) -> u64 {
    crate::keyspace::merged_everywhere(regions.iter().copied(), me, origin, |r| {
        keyspace.seen(r, origin).unwrap_or(0)
    })
}

/// Proposes the removal of every tombstone all regions have merged (a bounded amount per call).
async fn collect_tombstones(
    raft: &RegionRaft,
    keyspace: &Keyspace,
    geo: &Geo,
) -> Result<(), String> {
    let regions: Vec<u8> = geo.ids.values().copied().collect();
    let me = keyspace.region_id();
    let bounds: BTreeMap<u8, u64> = regions
        .iter()
        .map(|o| (*o, collect_bound(keyspace, &regions, me, *o)))
        .collect();
    let max_bound = bounds.values().copied().max().unwrap_or(0);
    for _ in 0..FORGET_ROUNDS {
        let tombstones = keyspace
            .collectable_tombstones(
                |origin| bounds.get(&origin).copied().unwrap_or(0),
                max_bound,
                FORGET_BATCH,
            )
            .map_err(|e| e.to_string())?;
        let n = tombstones.len();
        if n == 0 {
            return Ok(());
        }
        let (results, _) = raft
            .write(vec![Op::Forget { tombstones }], None)
            .await
            .map_err(|e| e.to_string())?;
        if let Some(OpResult::Int(dropped)) = results.first() {
            keyspace.count_collected(*dropped as u64);
        }
        if n < FORGET_BATCH {
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_paced_to_what_the_link_carries() {
        let path = |cwnd: u64, rtt_ms: u64| geo::PathState {
            rtt: Duration::from_millis(rtt_ms),
            cwnd,
            lost_packets: 0,
            sent_packets: 0,
            congestion_events: 0,
        };
        let fixed = LinkPace {
            call_bytes: SHIP_CALL_BYTES,
            in_flight_bytes: SHIP_INFLIGHT_BYTES,
        };
        assert_eq!(LinkPace::of(None), fixed);
        // A healthy link between regions: 1 MiB each 80 ms carries far more than the bounds.
        assert_eq!(LinkPace::of(Some(path(1 << 20, 80))), fixed);
        // A window of 8 KiB at 80 ms after heavy loss: 102.4 kB/s, 256 kB in half the call
        // timeout, in calls of half that.
        assert_eq!(
            LinkPace::of(Some(path(8 * 1024, 80))),
            LinkPace {
                call_bytes: 128_000,
                in_flight_bytes: 256_000,
            }
        );
        // Slower still: calls keep a useful least size.
        let slow = LinkPace::of(Some(path(2400, 200)));
        assert_eq!(slow.call_bytes, SHIP_CALL_MIN_BYTES);
        assert_eq!(slow.in_flight_bytes, 30_000);
    }

    #[test]
    fn ship_request_chunks_are_the_bincode_encoding() {
        let entry = |index: u64, len: usize| ShippedEntry {
            index,
            entry: Bytes::from(vec![index as u8; len]),
        };
        let requests = [
            ShipRequest {
                origin: 2,
                prev: 41,
                entries: vec![entry(42, 3), entry(43, 0), entry(44, 70_000)],
                resync_watermark: None,
                seen: Some(vec![(0, 7), (1, u64::MAX)]),
            },
            ShipRequest {
                origin: 0,
                prev: 0,
                entries: Vec::new(),
                resync_watermark: Some(9),
                seen: None,
            },
        ];
        for request in &requests {
            let chunks = ship_request_chunks(request).unwrap();
            assert_eq!(chunks.concat(), encode(request).unwrap().to_vec());
            let back: ShipRequest = decode(&chunks.concat()).unwrap();
            assert_eq!(back.entries.len(), request.entries.len());
        }
    }
}

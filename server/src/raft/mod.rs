//! The region's Raft group: openraft over the keyspace (log store and state machine in
//! RocksDB), its network over the geo links, the write path (propose on the leader, forward
//! from a follower) and the read gate (leader lease or read index).

// openraft's trait methods return its `StorageError` (224 bytes); our helpers return the same
// type so `?` works, hence the large Err variant.
#![allow(clippy::result_large_err)]

pub mod elector;
pub mod log_store;
pub mod members;
pub mod network;
pub mod proposer;
pub mod read;
pub mod service;
pub mod state_machine;
pub mod thread;
pub mod types;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use geo::link::PeerAddr;
use geo::Endpoint;
use openraft::ServerState;
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use self::log_store::LogStore;
use self::network::{decode, encode, Network, RPC_FORWARD_WRITE, RPC_READ_INDEX};
use self::state_machine::StateMachine;
use self::types::{MeridianNode, NodeId, Raft};
use crate::direct_reply::DirectReply;
use crate::keyspace::Keyspace;
use crate::op::{Op, OpResult};
use crate::write::WriteError;

/// Raft timing and limits of a region.
#[derive(Clone, Debug)]
pub struct RaftSettings {
    /// Leader heartbeat interval.
    pub heartbeat_ms: u64,
    /// Election timeout lower bound (the upper bound is twice this).
    pub election_timeout_ms: u64,
    /// How long a write waits for a leader before `-CLUSTERDOWN`.
    pub write_timeout: Duration,
    /// How long a linearizable read waits before `-CLUSTERDOWN`.
    pub read_timeout: Duration,
    /// Log entries kept after a snapshot (followers this far behind catch up from the log).
    pub keep_logs: u64,
    /// Applied entries between snapshots.
    pub snapshot_every: u64,
}

impl From<&crate::config::RaftConfig> for RaftSettings {
    fn from(c: &crate::config::RaftConfig) -> Self {
        RaftSettings {
            heartbeat_ms: c.heartbeat_ms,
            election_timeout_ms: c.election_timeout_ms,
            write_timeout: Duration::from_millis(c.write_timeout_ms),
            read_timeout: Duration::from_millis(c.read_timeout_ms),
            keep_logs: c.keep_logs,
            snapshot_every: c.snapshot_every,
        }
    }
}

/// A write forwarded to another node (a follower to its leader, or to a key's home region).
/// It carries a deadline: a request that arrives after it (QUIC delivers a stream's data
/// even after the caller gave up, e.g. once a partition heals) is dropped, not applied.
#[derive(Serialize, Deserialize)]
pub struct ForwardRequest {
    /// The ops.
    pub ops: Vec<Op>,
    /// Unix ms after which the sender no longer waits for the answer.
    pub deadline_ms: u64,
}

impl ForwardRequest {
    /// Encodes `ops` with a deadline `timeout` from now.
    pub fn encode(ops: &[Op], timeout: Duration) -> Result<bytes::Bytes, String> {
        encode(&ForwardRequest {
            ops: ops.to_vec(),
            deadline_ms: crate::write::now_ms() + timeout.as_millis() as u64,
        })
    }
}

/// What a forwarded write gets back from the node it was sent to.
#[derive(Serialize, Deserialize)]
pub enum ForwardReply {
    /// Applied: one result per op, and the log index of the entry that carried them.
    Applied(Vec<OpResult>, u64),
    /// The receiver is not the leader (nothing was proposed); the hint names the leader.
    NotLeader(Option<NodeId>),
    /// Proposed but failed, or the leader could not take it.
    Failed(String),
}

/// The running Raft group member of this node.
pub struct RegionRaft {
    /// The openraft handle.
    pub raft: Raft,
    /// This node's id.
    pub node_id: NodeId,
    /// This node's region.
    pub region: String,
    /// QUIC endpoint (None for a region of one node without a topology).
    pub endpoint: Option<Endpoint>,
    /// The log store (for MERIDIAN RAFT figures).
    pub log_store: LogStore,
    /// Timing.
    pub settings: RaftSettings,
    /// The keyspace this group applies to.
    pub keyspace: Arc<Keyspace>,
    /// Inbound cross-region replication (ordering of calls per origin).
    pub inbound: crate::replication::Inbound,
    /// Shares read-index rounds between concurrent reads.
    read_batcher: read::ReadIndexBatcher,
    /// Group-commit queue in front of `client_write`.
    proposer: proposer::Proposer,
    /// openraft's metrics channel, kept so the hot path only borrows it.
    metrics: tokio::sync::watch::Receiver<types::RaftMetrics>,
    /// The thread openraft's tasks and the proposer run on (stopped with this group).
    thread: thread::RaftThread,
    /// When this node last heard from a leader or granted a vote (pre-votes are refused for
    /// the lease after).
    pub contact: elector::LeaderContact,
    /// When followers last acknowledged this node as leader (the read lease).
    acks: Arc<network::AckTimes>,
}

impl RegionRaft {
    /// Starts this node's Raft member on `raft_thread` (openraft's tasks and the proposer run
    /// there). `members` is the region's initial membership, used to bootstrap when the group
    /// was never initialised and this node is the first member.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        node_id: NodeId,
        region: String,
        cluster_name: String,
        keyspace: Arc<Keyspace>,
        endpoint: Option<Endpoint>,
        members: BTreeMap<NodeId, MeridianNode>,
        settings: RaftSettings,
        region_id: u8,
        raft_thread: thread::RaftThread,
    ) -> anyhow::Result<Arc<RegionRaft>> {
        let config = openraft::Config {
            cluster_name,
            heartbeat_interval: settings.heartbeat_ms,
            election_timeout_min: settings.election_timeout_ms,
            election_timeout_max: settings.election_timeout_ms * 2,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(settings.snapshot_every),
            max_in_snapshot_log_to_keep: settings.keep_logs,
            purge_batch_size: 256,
            max_payload_entries: 512,
            // Elections are started by `elector`, after a pre-vote round.
            enable_elect: false,
            ..Default::default()
        };
        let config = Arc::new(config.validate()?);
        // Replication reads recent entries back once per follower, the apply once: a region
        // of one node keeps only the entries in flight.
        let cache = if members.len() > 1 {
            log_store::REPLICATION_CACHE_BYTES
        } else {
            log_store::APPLY_CACHE_BYTES
        };
        let log_store = LogStore::new(keyspace.clone(), cache);
        let snapshot_path = keyspace.options().path.with_file_name("raft-snapshot.bin");
        let state_machine = StateMachine::new(keyspace.clone(), snapshot_path)?;
        let span = tracing::info_span!("raft", region = %region, node = node_id);
        let acks = Arc::new(network::AckTimes::default());
        let network = Network::new(node_id, endpoint.clone(), acks.clone());
        let started_log_store = log_store.clone();
        let late_commits = log_store.clone();
        let hlc = keyspace.hlc();
        // Entries are bounded in bytes only where they travel between nodes.
        let has_peers = endpoint.is_some();
        // openraft spawns its tasks where it is created: on the Raft thread.
        let (raft, proposer) = raft_thread
            .handle()
            .spawn(tracing::Instrument::instrument(
                async move {
                    let raft =
                        Raft::new(node_id, config, network, started_log_store, state_machine)
                            .await?;
                    tokio::spawn(late_commits.write_late_commits());
                    let proposer =
                        proposer::Proposer::start(raft.clone(), hlc, region_id, has_peers);
                    anyhow::Ok((raft, proposer))
                },
                span,
            ))
            .await??;
        let me = Arc::new(RegionRaft {
            metrics: raft.metrics(),
            proposer,
            thread: raft_thread,
            keyspace,
            inbound: crate::replication::Inbound::default(),
            read_batcher: read::ReadIndexBatcher::default(),
            raft,
            node_id,
            region,
            endpoint,
            log_store,
            // As openraft: a node that has heard from no leader grants votes at once.
            contact: elector::LeaderContact::new(elector::lease(settings.election_timeout_ms)),
            acks,
            settings,
        });
        me.thread.handle().spawn(elector::run(Arc::downgrade(&me)));
        if !me.raft.is_initialized().await? {
            let first = members.keys().next().copied();
            if first == Some(node_id) {
                info!(
                    members = members.len(),
                    "bootstrapping the region's Raft group"
                );
                if let Err(e) = me.raft.initialize(members).await {
                    warn!(error = %e, "initialize failed (already initialised elsewhere?)");
                }
            } else {
                info!("waiting to be joined by the region's first node");
            }
        }
        Ok(me)
    }

    /// A copy of the current Raft metrics (for MERIDIAN RAFT and INFO).
    pub fn metrics(&self) -> types::RaftMetrics {
        self.metrics.borrow().clone()
    }

    /// On a leader, the milliseconds since which a quorum has acknowledged it: the age of the
    /// send time of the AppendEntries the read lease counts from (see `AckTimes`). `None` on a
    /// follower or without a quorum's acknowledgement in this term.
    pub fn millis_since_quorum_ack(&self) -> Option<u64> {
        let m = self.metrics.borrow();
        self.quorum_acked_since(&m)
            .map(|at| at.elapsed().as_millis() as u64)
    }

    /// On a leader (as `m` says), the instant since which a quorum has acknowledged it in its
    /// term (see `AckTimes`); `None` on a follower or without such a quorum.
    fn quorum_acked_since(&self, m: &types::RaftMetrics) -> Option<Instant> {
        if m.state != ServerState::Leader {
            return None;
        }
        self.acks.quorum_acked_since(
            self.node_id,
            m.current_term,
            m.membership_config.membership().voter_ids(),
        )
    }

    /// The last log index applied on this node.
    pub fn applied_index(&self) -> u64 {
        self.metrics.borrow().last_applied.map_or(0, |l| l.index)
    }

    /// The current leader, if known and alive as far as this node can tell. openraft names the
    /// leader of the node's stored vote; a follower that has heard nothing from it for the
    /// leader lease treats the region as leaderless (openraft 0.9 alone would have started an
    /// election by then; with pre-votes, a node cut off from its quorum keeps its vote, and its
    /// writes must not wait on a leader that may be gone: see `elector`).
    pub fn leader(&self) -> Option<NodeId> {
        let leader = self.metrics.borrow().current_leader?;
        if leader == self.node_id
            || self.contact.elapsed() <= elector::lease(self.settings.election_timeout_ms)
        {
            Some(leader)
        } else {
            None
        }
    }

    /// Waits up to `timeout` for a leader other than `not` ([`RegionRaft::leader`]).
    async fn wait_for_leader(&self, not: Option<NodeId>, timeout: Duration) -> Option<NodeId> {
        let deadline = Instant::now() + timeout;
        loop {
            let leader = self.leader();
            if leader.is_some() && leader != not {
                return leader;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            if self.metrics.borrow().current_leader.is_some() {
                // openraft names a leader this node has not heard from lately: poll for word
                // from it (a metrics wait would return at once, and spin).
                let poll = Duration::from_millis(self.settings.heartbeat_ms.clamp(10, 100));
                tokio::time::sleep(left.min(poll)).await;
            } else {
                let _ = self
                    .raft
                    .wait(Some(left.min(Duration::from_millis(100))))
                    .metrics(|m| m.current_leader.is_some(), "a leader")
                    .await;
            }
        }
    }

    /// True when this node is the leader.
    pub fn is_leader(&self) -> bool {
        self.leader() == Some(self.node_id)
    }

    /// The peer address of a member.
    pub fn peer_of(&self, id: NodeId) -> Option<PeerAddr> {
        let m = self.metrics.borrow();
        let node = m.membership_config.membership().get_node(&id)?.clone();
        drop(m);
        node.peer
            .parse()
            .ok()
            .map(|addr| PeerAddr::new(node.name, addr))
    }

    /// Applies `ops` through the region's log: proposes on the leader, forwards from a follower.
    /// Waits for a leader up to the write timeout; never retries a write that may have been
    /// proposed. With `direct`, a leader's proposer writes the replies to the client as soon
    /// as the writes are applied (see `direct_reply`).
    pub async fn write(
        &self,
        ops: Vec<Op>,
        direct: Option<DirectReply>,
    ) -> Result<(Vec<OpResult>, u64), WriteError> {
        let started = Instant::now();
        let deadline = started + self.settings.write_timeout;
        loop {
            let leader = self.leader();
            let attempt = match leader {
                Some(id) if id == self.node_id => {
                    match self
                        .proposer
                        .propose(ops.clone(), deadline, direct.clone())
                        .await
                    {
                        Some(reply) => reply,
                        // Not applied in time (no quorum?): the outcome is unknown.
                        None => {
                            return Err(WriteError::Timeout(started.elapsed().as_millis() as u64))
                        }
                    }
                }
                Some(id) => self.forward(id, &ops, deadline).await,
                None => ForwardReply::NotLeader(None),
            };
            match attempt {
                ForwardReply::Applied(results, index) => return Ok((results, index)),
                ForwardReply::Failed(why) => return Err(WriteError::Remote(why)),
                ForwardReply::NotLeader(_) => {
                    if Instant::now() >= deadline {
                        return Err(WriteError::NoLeader {
                            region: self.region.clone(),
                            waited_ms: started.elapsed().as_millis() as u64,
                        });
                    }
                    // Wait for a leader change (or a short pause), then try again.
                    let left = deadline.saturating_duration_since(Instant::now());
                    let _ = self
                        .wait_for_leader(leader, left.min(Duration::from_millis(100)))
                        .await;
                }
            }
        }
    }

    async fn forward(&self, leader: NodeId, ops: &[Op], deadline: Instant) -> ForwardReply {
        let (Some(endpoint), Some(peer)) = (&self.endpoint, self.peer_of(leader)) else {
            return ForwardReply::NotLeader(None);
        };
        // Bounded by a few election timeouts: a dead leader is noticed (and the write reported
        // as failed, since it may have been proposed) long before the write timeout.
        let timeout = deadline
            .saturating_duration_since(Instant::now())
            .min(
                Duration::from_millis(self.settings.election_timeout_ms * 4)
                    .max(Duration::from_secs(1)),
            )
            .max(Duration::from_millis(10));
        let body = match ForwardRequest::encode(ops, timeout) {
            Ok(b) => b,
            Err(e) => return ForwardReply::Failed(e),
        };
        match endpoint.call(&peer, RPC_FORWARD_WRITE, body, timeout).await {
            Ok(reply) => decode(&reply).unwrap_or_else(ForwardReply::Failed),
            // Not sent at all: safe to retry once a leader is known again.
            Err(e @ geo::RpcError::Unreachable { .. }) => {
                warn!(leader, error = %e, "leader unreachable for a forwarded write");
                ForwardReply::NotLeader(None)
            }
            Err(e) => ForwardReply::Failed(format!("forwarding to the leader: {e}")),
        }
    }

    /// Stops the Raft thread after [`openraft::Raft::shutdown`] and waits (up to 10 s) until
    /// it has dropped its tasks, and with them their handles on the keyspace; `false` if it
    /// did not stop in time.
    pub async fn stop_thread(&self) -> bool {
        self.thread.stop(Duration::from_secs(10)).await
    }

    /// Blocks until a read on this node would be linearizable: a leader inside its lease
    /// serves at once; otherwise the node joins a batched read-index round (a leader confirms
    /// with a quorum, a follower asks the leader) and waits until it has applied that far.
    pub async fn read_barrier(self: &Arc<Self>) -> Result<(), WriteError> {
        let timeout = self.settings.read_timeout;
        if self.leader().is_none() {
            // Just started, or an election is running: wait for a leader like writes do.
            let _ = self.wait_for_leader(None, timeout).await;
        }
        let (state, alone, acked_since, applied) = {
            let m = self.metrics.borrow();
            (
                m.state,
                m.membership_config.membership().voter_ids().count() <= 1,
                self.quorum_acked_since(&m),
                m.last_applied.map_or(0, |l| l.index),
            )
        };
        if state == ServerState::Leader {
            let lease = Duration::from_millis(lease_ms(
                self.settings.election_timeout_ms,
                self.settings.heartbeat_ms,
            ));
            // Counted from when the acknowledged AppendEntries were sent, on this node's
            // clock: a pause of the process ages the lease too.
            if alone || acked_since.is_some_and(|at| at.elapsed() < lease) {
                return Ok(());
            }
        }
        let deadline = Instant::now() + timeout;
        let leader_before = self.leader();
        // openraft's own view: a change of it is what makes a second round worth it.
        let named_before = self.metrics.borrow().current_leader;
        let mut retried = false;
        let index = loop {
            let me = self.clone();
            let round = self.read_batcher.read_index(move || {
                let me = me.clone();
                Box::pin(async move { me.read_index_round().await })
            });
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, round).await {
                Ok(Ok(index)) => break index,
                Ok(Err(why)) => {
                    debug!(reason = %why, "read index failed");
                    // A leader that learns it was deposed (resumed after a pause, a healed
                    // partition), or a follower whose leader changed meanwhile, asks the new
                    // leader once it hears from it, instead of refusing the read.
                    let named_now = self.metrics.borrow().current_leader;
                    if !retried && named_now != named_before {
                        retried = true;
                        let left = deadline.saturating_duration_since(Instant::now());
                        let now = self.wait_for_leader(leader_before, left).await;
                        if now.is_some() {
                            continue;
                        }
                    }
                    // The same leader, whose quorum did not answer within openraft's one
                    // heartbeat (a loaded machine, a lost packet): another round after a
                    // heartbeat while the read's time lasts. A leader cut off from its region
                    // refuses at the read timeout, as a write does at the write timeout.
                    let pause = Duration::from_millis(self.settings.heartbeat_ms);
                    if deadline.saturating_duration_since(Instant::now()) > pause {
                        tokio::time::sleep(pause).await;
                        continue;
                    }
                    return Err(WriteError::NoQuorum {
                        region: self.region.clone(),
                    });
                }
                Err(_) => return Err(WriteError::Timeout(timeout.as_millis() as u64)),
            }
        };
        if applied >= index {
            return Ok(());
        }
        self.raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "read index")
            .await
            .map_err(|_| WriteError::Timeout(timeout.as_millis() as u64))?;
        Ok(())
    }

    /// One read-index round: the leader confirms with a quorum; a follower asks the leader.
    async fn read_index_round(&self) -> Result<u64, String> {
        let leader = self.leader().ok_or_else(|| "no leader".to_string())?;
        if leader == self.node_id {
            return self.read_index().await;
        }
        let (Some(endpoint), Some(peer)) = (&self.endpoint, self.peer_of(leader)) else {
            return Err(format!("no link to leader {leader}"));
        };
        let reply = endpoint
            .call(
                &peer,
                RPC_READ_INDEX,
                bytes::Bytes::new(),
                self.settings.read_timeout,
            )
            .await
            .map_err(|e| format!("read index from the leader: {e}"))?;
        let index: Result<u64, String> = decode(&reply)?;
        index
    }

    /// The leader side of a read index: confirm leadership with a quorum, return the index
    /// a follower must have applied.
    pub async fn read_index(&self) -> Result<u64, String> {
        match tokio::time::timeout(self.settings.read_timeout, self.raft.ensure_linearizable())
            .await
        {
            Ok(Ok(log_id)) => Ok(log_id.map_or(0, |l| l.index)),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out confirming leadership".into()),
        }
    }
}

/// How long after a quorum last acknowledged it a leader serves reads on its own, in ms,
/// counted from when the acknowledged AppendEntries were sent ([`network::AckTimes`]): the
/// election timeout (no other node becomes leader before that runs out since it last heard
/// from this one), minus 2.5 heartbeats of margin. (The margin was sized for openraft's
/// `millis_since_quorum_ack`, which the lease used to read and which can be 1.5 heartbeats
/// old; it is kept, which only makes the lease shorter than it could be.) 0 with an election
/// timeout under 2.5 heartbeats: every read takes a read-index round.
fn lease_ms(election_timeout_ms: u64, heartbeat_ms: u64) -> u64 {
    election_timeout_ms.saturating_sub(heartbeat_ms + heartbeat_ms * 3 / 2)
}

#[cfg(test)]
mod tests {
    use super::lease_ms;

    #[test]
    fn the_lease_allows_for_the_age_of_openrafts_figure() {
        // 300 ms election timeout, 50 ms heartbeat: 300 - 50 - 75.
        assert_eq!(lease_ms(300, 50), 175);
        assert_eq!(lease_ms(1000, 100), 750);
        // Too short an election timeout for a lease: none.
        assert_eq!(lease_ms(100, 50), 0);
    }
}

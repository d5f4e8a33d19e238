//! openraft's network over the geo QUIC links: a factory that hands out one client per target
//! (the link layer dials lazily and redials after failures), and the serving side, a thin
//! adapter from inbound RPCs onto `raft.append_entries` / `vote` / `install_snapshot`.
//!
//! A call that got no answer in time becomes `RPCError::Timeout` (openraft retries at once),
//! unless the peer's last [`TIMEOUTS_BEFORE_UNREACHABLE`] calls all timed out; that, and other
//! transport failures, become `RPCError::Unreachable` (openraft backs off for 500 ms, then
//! retries); errors returned by the peer's Raft travel back serialised and become
//! `RemoteError`.
//!
//! openraft 0.9 gives every AppendEntries one heartbeat interval to complete and sends it again
//! when it did not; each new copy reset the one before, so entries that took longer than that
//! to cross the link never arrived (a 1 MB SET never committed with 15 ms of emulated delay
//! between the nodes, nothing at all with 40 ms). An AppendEntries that carries entries and may
//! well miss the deadline (large, or over a slow link) therefore runs in a task of its own,
//! under a deadline sized for its bytes, and openraft's retries of it wait for that task
//! instead of sending another copy (see [`AppendInFlight`]); other requests are plain calls
//! (see [`PeerClient::sends_in_flight`]).
//!
//! openraft's requests travel in bincode with variable-length integers ([`encode_raft`]);
//! the answers and the server's other calls in bincode's fixed-width format ([`encode`]).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bincode::Options;
use bytes::Bytes;
use geo::link::PeerAddr;
use geo::rpc::RpcError;
use geo::Endpoint;
use openraft::error::{NetworkError, RemoteError, Timeout, Unreachable};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::AppendEntriesResponse;
use serde::de::DeserializeOwned;
use serde::Serialize;
use smallvec::SmallVec;

use super::types::{typ, LogId, MeridianNode, NodeId, TypeConfig, Vote};

/// RPC kind: AppendEntries.
pub const RPC_APPEND: u16 = 1;
/// RPC kind: Vote.
pub const RPC_VOTE: u16 = 2;
/// RPC kind: InstallSnapshot (one chunk).
pub const RPC_SNAPSHOT: u16 = 3;
/// RPC kind: a pre-vote (see `elector`).
pub const RPC_PRE_VOTE: u16 = 4;
/// RPC kind: a write forwarded by a follower to the leader.
pub const RPC_FORWARD_WRITE: u16 = 10;
/// RPC kind: a follower asks the leader for a read index.
pub const RPC_READ_INDEX: u16 = 11;
/// RPC kind: another region ships outbox entries to this region.
pub const RPC_REPL_APPLY: u16 = 20;
/// RPC kind: another region asks which of its entries this region applied.
pub const RPC_REPL_WATERMARK: u16 = 21;
/// RPC kind: a follower's client runs WAIT; the leader (whose shippers know) answers.
pub const RPC_REPL_WAIT: u16 = 22;
/// RPC kind: messages PUBLISHed on another node, for this node's subscribers.
pub const RPC_PUBLISH: u16 = 30;

/// Lower bound of one Raft RPC's deadline.
const MIN_RPC_TIMEOUT: Duration = Duration::from_millis(50);
/// Upper bound of one Raft RPC when openraft gives no deadline.
const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// Calls to a peer that time out in a row before the next is reported as `Unreachable`: one
/// late answer is a busy peer (retried at once), several are a peer that is gone (a dead
/// peer's calls time out until its connection idles out, and retried at once they filled the
/// log with four lines every 75 ms).
const TIMEOUTS_BEFORE_UNREACHABLE: u32 = 3;
/// AppendEntries bodies from this size on are sent as an [`AppendInFlight`] over a fast link too.
const LARGE_APPEND_BYTES: usize = 256 * 1024;
/// Time an AppendEntries with entries may take: this much, plus one second per MiB of body.
const APPEND_BASE_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound of an AppendEntries' deadline.
const APPEND_MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// When each follower last acknowledged this node as its leader: the send time of the latest
/// AppendEntries it answered with anything but a higher vote (a conflict acknowledges the
/// leader too), with the term it was sent in. The read lease counts from these instants. (It
/// counted from openraft's `millis_since_quorum_ack`, a figure computed when openraft last
/// published its metrics: a leader resumed after a pause of its process, such
/// as a SIGSTOP or a long stall, read the figure of before the pause and served reads while
/// another leader, elected meanwhile, committed writes: 3 stale reads in 12 tries of a 2 s
/// pause under load, found by a chaos run.)
#[derive(Default)]
pub struct AckTimes {
    /// (follower, term, send time), one entry per follower (a handful: scanned, not hashed).
    by_peer: Mutex<SmallVec<[(NodeId, u64, Instant); 8]>>,
}

impl AckTimes {
    /// Records that `peer` acknowledged an AppendEntries of `term` sent at `sent`.
    fn record(&self, peer: NodeId, term: u64, sent: Instant) {
        let mut by_peer = self.by_peer.lock().unwrap_or_else(PoisonError::into_inner);
        match by_peer.iter_mut().find(|(p, _, _)| *p == peer) {
            Some(entry) if (term, sent) > (entry.1, entry.2) => *entry = (peer, term, sent),
            Some(_) => {}
            None => by_peer.push((peer, term, sent)),
        }
    }

    /// The instant since which a quorum of `voters` (this node, `me`, among them) has
    /// acknowledged this node as the leader of `term`: the latest instant that enough
    /// followers' acknowledgements are at least as recent as. `None` without enough of them.
    pub fn quorum_acked_since(
        &self,
        me: NodeId,
        term: u64,
        voters: impl Iterator<Item = NodeId>,
    ) -> Option<Instant> {
        let by_peer = self.by_peer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut count = 0usize;
        let mut acked: SmallVec<[Instant; 8]> = SmallVec::new();
        for voter in voters {
            count += 1;
            if voter == me {
                continue;
            }
            if let Some((_, _, at)) = by_peer.iter().find(|(p, t, _)| *p == voter && *t == term) {
                acked.push(*at);
            }
        }
        // Followers needed besides this node: a majority of the voters, minus itself.
        let needed = count / 2;
        if needed == 0 {
            return Some(Instant::now());
        }
        if acked.len() < needed {
            return None;
        }
        acked.sort_unstable_by(|a, b| b.cmp(a));
        Some(acked[needed - 1])
    }
}

/// Hands out network clients for openraft.
#[derive(Clone)]
pub struct Network {
    endpoint: Option<Endpoint>,
    /// This node's Raft id (timeouts name it).
    me: NodeId,
    /// Followers' acknowledgements, for the read lease.
    acks: Arc<AckTimes>,
}

impl Network {
    /// Node `me`'s network over `endpoint` (None for a region of one node: no peers to call);
    /// accepted AppendEntries are recorded in `acks`.
    pub fn new(me: NodeId, endpoint: Option<Endpoint>, acks: Arc<AckTimes>) -> Network {
        Network { endpoint, me, acks }
    }
}

/// A client for one target node.
pub struct PeerClient {
    endpoint: Option<Endpoint>,
    me: NodeId,
    acks: Arc<AckTimes>,
    target: NodeId,
    peer: Option<PeerAddr>,
    /// Calls that timed out since the last answer.
    timeouts_in_a_row: u32,
    /// The AppendEntries with entries in flight, if any.
    in_flight: Option<AppendInFlight>,
}

/// What identifies an AppendEntries' entries: the leader's vote, the entry they follow and
/// their last entry (entries are identified by their log ids; `leader_commit` does not matter,
/// the next heartbeat carries it anyway).
#[derive(Clone, PartialEq, Eq, Debug)]
struct AppendKey {
    vote: Vote,
    prev: Option<LogId>,
    last: Option<LogId>,
}

impl AppendKey {
    fn of(rpc: &typ::AppendEntriesRequest) -> AppendKey {
        AppendKey {
            vote: rpc.vote,
            prev: rpc.prev_log_id,
            last: rpc.entries.last().map(|e| e.log_id),
        }
    }
}

/// An AppendEntries with entries, sent by a task of its own (the entries may take longer than
/// openraft's deadline to cross the link): a retry of it (see [`AppendInFlight::covers`]) waits
/// for this task instead of sending the entries again. Aborted when dropped (replaced by another
/// request with entries, or by a request of another vote, or with the client).
struct AppendInFlight {
    key: AppendKey,
    /// When it was sent: the read lease counts the follower's acknowledgement from here.
    sent: Instant,
    task: tokio::task::JoinHandle<Result<Bytes, RpcError>>,
}

impl AppendInFlight {
    /// Whether a request of `key` is this one again, maybe with more entries after it (under
    /// a steady write load openraft's retry carries the entries appended meanwhile): then the
    /// last entry this one carries, which the retry's answer must not claim beyond.
    fn covers(&self, key: &AppendKey) -> Option<Option<LogId>> {
        (key.vote == self.key.vote && key.prev == self.key.prev && key.last >= self.key.last)
            .then_some(self.key.last)
    }
}

impl Drop for AppendInFlight {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The deadline of an AppendEntries of `bytes`.
fn append_timeout(bytes: usize) -> Duration {
    (APPEND_BASE_TIMEOUT + Duration::from_millis((bytes as u64).saturating_mul(1000) >> 20))
        .min(APPEND_MAX_TIMEOUT)
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &MeridianNode) -> PeerClient {
        let peer = node
            .peer
            .parse()
            .ok()
            .map(|addr| PeerAddr::new(node.name.clone(), addr));
        PeerClient {
            endpoint: self.endpoint.clone(),
            me: self.me,
            acks: self.acks.clone(),
            target,
            peer,
            timeouts_in_a_row: 0,
            in_flight: None,
        }
    }
}

/// Serialises a value for the wire (bincode).
pub fn encode<T: Serialize>(value: &T) -> Result<Bytes, String> {
    bincode::serialize(value)
        .map(Bytes::from)
        .map_err(|e| e.to_string())
}

/// Serialises one of openraft's requests (AppendEntries, Vote, InstallSnapshot) for the wire:
/// bincode with variable-length integers, where [`encode`] writes every length and integer in
/// eight bytes. An AppendEntries of 64-byte SETs is about a fifth smaller, so fewer QUIC
/// packets carry it: a fresh region's SET -P16 through the leader gained 3.4 % (4 alternating
/// rounds) and used 4 % less CPU per SET. (The answers, and every other call, stay in
/// [`encode`]'s format: cross-region replication writes that format by hand.)
pub fn encode_raft<T: Serialize>(value: &T) -> Result<Bytes, String> {
    raft_codec()
        .serialize(value)
        .map(Bytes::from)
        .map_err(|e| e.to_string())
}

/// Deserialises a request written by [`encode_raft`]; SET ops' keys and values are slices of
/// `frame` (see [`crate::shared_bytes`]).
pub fn decode_raft<T: DeserializeOwned>(frame: &Bytes) -> Result<T, String> {
    crate::shared_bytes::with_frame(frame, || raft_codec().deserialize(frame))
        .map_err(|e| e.to_string())
}

/// bincode's options for [`encode_raft`]: variable-length integers, little-endian, nothing after
/// the value.
fn raft_codec() -> impl bincode::Options {
    bincode::DefaultOptions::new()
}

/// Deserialises a value from the wire.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    bincode::deserialize(bytes).map_err(|e| e.to_string())
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Text(String);

/// A request or answer that could not be encoded or decoded, as openraft's network error.
fn codec_error<E: std::error::Error>(e: String) -> typ::RPCError<E> {
    openraft::error::RPCError::Network(NetworkError::new(&Text(e)))
}

impl PeerClient {
    /// The endpoint and the target's address, or `Unreachable` without a link.
    fn link<E: std::error::Error>(&self) -> Result<(Endpoint, PeerAddr), typ::RPCError<E>> {
        match (&self.endpoint, &self.peer) {
            (Some(endpoint), Some(peer)) => Ok((endpoint.clone(), peer.clone())),
            _ => Err(openraft::error::RPCError::Unreachable(Unreachable::new(
                &Text(format!("no link to node {}", self.target)),
            ))),
        }
    }

    async fn call<Req, Resp, E>(
        &mut self,
        kind: u16,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, typ::RPCError<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
        typ::RaftError<E>: DeserializeOwned,
    {
        let (endpoint, peer) = self.link()?;
        let body = encode_raft(req).map_err(codec_error)?;
        self.call_body(&endpoint, &peer, kind, body, option).await
    }

    async fn call_body<Resp, E>(
        &mut self,
        endpoint: &Endpoint,
        peer: &PeerAddr,
        kind: u16,
        body: Bytes,
        option: &RPCOption,
    ) -> Result<Resp, typ::RPCError<E>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
        typ::RaftError<E>: DeserializeOwned,
    {
        let timeout = option
            .hard_ttl()
            .min(DEFAULT_RPC_TIMEOUT * 6)
            .max(MIN_RPC_TIMEOUT);
        let called = endpoint.call(peer, kind, body, timeout).await;
        self.finish(kind, called)
    }

    /// Turns a call's outcome into openraft's result (counting timeouts in a row).
    fn finish<Resp, E>(
        &mut self,
        kind: u16,
        called: Result<Bytes, RpcError>,
    ) -> Result<Resp, typ::RPCError<E>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
        typ::RaftError<E>: DeserializeOwned,
    {
        self.timeouts_in_a_row = match &called {
            Err(RpcError::Timeout { .. }) => self.timeouts_in_a_row.saturating_add(1),
            _ => 0,
        };
        let timeouts_in_a_row = self.timeouts_in_a_row;
        let reply = called.map_err(|e: RpcError| -> typ::RPCError<E> {
            match e {
                // A peer that answers late is not unreachable: as Unreachable, a reply
                // that missed openraft's deadline (one heartbeat interval) stopped
                // replication to that follower for 500 ms, which on a busy machine happened
                // about once a second under write load.
                RpcError::Timeout { timeout, .. }
                    if timeouts_in_a_row < TIMEOUTS_BEFORE_UNREACHABLE =>
                {
                    openraft::error::RPCError::Timeout(Timeout {
                        action: rpc_type(kind),
                        id: self.me,
                        target: self.target,
                        timeout,
                    })
                }
                e if e.is_transport() => {
                    openraft::error::RPCError::Unreachable(Unreachable::new(&e))
                }
                e => openraft::error::RPCError::Network(NetworkError::new(&e)),
            }
        })?;
        let result: Result<Resp, typ::RaftError<E>> = decode(&reply).map_err(codec_error)?;
        result.map_err(|e| openraft::error::RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    /// Whether an AppendEntries of `bytes` goes as an [`AppendInFlight`] (openraft's deadline
    /// being `ttl`): one with entries, over a live link, that may well miss the deadline: large,
    /// or over a link whose round trip is at least half of it. Other requests are plain calls:
    /// heartbeats; requests while the link is down (a task that dials waits for the handshake
    /// up to its deadline, through a partition too, and QUIC's backed-off retransmissions then
    /// held a follower cut off for 5 s up to 2.3 s after the heal; a plain call that misses the
    /// deadline drops its dial and the next one dials afresh); and small ones over a fast link
    /// (sent as tasks, they too held a follower cut off for 5 s 120-160 ms after the heal,
    /// against 6-65 ms as plain calls).
    fn sends_in_flight(
        &self,
        rpc: &typ::AppendEntriesRequest,
        bytes: usize,
        endpoint: &Endpoint,
        peer: &PeerAddr,
        ttl: Duration,
    ) -> bool {
        if rpc.entries.is_empty() || !endpoint.is_connected(&peer.name) {
            return false;
        }
        bytes >= LARGE_APPEND_BYTES || endpoint.rtt(&peer.name).is_some_and(|rtt| rtt * 2 >= ttl)
    }

    /// Sends `rpc` (encoded as `body`) from a task of its own (see [`AppendInFlight`]),
    /// replacing (aborting) any other in flight. While it is unanswered the task also sends the
    /// follower a heartbeat (the same request without entries) every `ttl`: openraft sends none
    /// to a follower while entries for it are pending, and a follower that heard nothing from
    /// its leader for the lease during a long transfer started a pre-vote, which the others,
    /// waiting for the same transfer, granted (a 16 MB SET with 15 ms of delay between the nodes,
    /// after a restart: an election every 1.1 s, terms 16 to 21, no write committed). Answered
    /// heartbeats count for the read lease like any acknowledged AppendEntries; a higher vote
    /// or a conflict in answer to one is the request's answer at once (see [`Beat`]). The
    /// heartbeats carry the request's `leader_commit`, so followers apply nothing new meanwhile.
    fn start_append(
        &mut self,
        endpoint: Endpoint,
        peer: PeerAddr,
        rpc: &typ::AppendEntriesRequest,
        body: Bytes,
        ttl: Duration,
    ) {
        let key = AppendKey::of(rpc);
        let timeout = append_timeout(body.len());
        let heartbeat = encode_raft(&typ::AppendEntriesRequest {
            vote: rpc.vote,
            prev_log_id: rpc.prev_log_id,
            leader_commit: rpc.leader_commit,
            entries: Vec::new(),
        })
        .ok();
        let (acks, target, term) = (self.acks.clone(), self.target, rpc.vote.leader_id().term);
        let ttl = ttl.max(MIN_RPC_TIMEOUT);
        let sent = Instant::now();
        let task = tokio::spawn(async move {
            let call = endpoint.call(&peer, RPC_APPEND, body, timeout);
            tokio::pin!(call);
            let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + ttl, ttl);
            beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    answered = &mut call => return answered,
                    _ = beat.tick(), if heartbeat.is_some() => {
                        // One at a time at most: each is bounded by the interval.
                        let body = heartbeat.clone().unwrap_or_default();
                        let beat_sent = Instant::now();
                        let answer = send_heartbeat(&endpoint, &peer, body, ttl);
                        tokio::select! {
                            answered = &mut call => return answered,
                            beat = answer => match beat {
                                Beat::Acked => acks.record(target, term, beat_sent),
                                Beat::Decides(answer) => return Ok(answer),
                                Beat::Missed => {}
                            },
                        }
                    }
                }
            }
        });
        self.in_flight = Some(AppendInFlight { key, sent, task });
    }

    /// Waits for the AppendEntries in flight: when it was sent, and its outcome.
    async fn join_append(
        &mut self,
    ) -> (Instant, Result<typ::AppendEntriesResponse, typ::RPCError>) {
        let Some(in_flight) = self.in_flight.as_mut() else {
            let e = Unreachable::new(&Text("no AppendEntries in flight".into()));
            return (
                Instant::now(),
                Err(openraft::error::RPCError::Unreachable(e)),
            );
        };
        // openraft may drop this wait at its deadline: the task goes on, and the retry joins it.
        let joined = (&mut in_flight.task).await;
        let sent = in_flight.sent;
        self.in_flight = None;
        let called = joined.unwrap_or_else(|e| Err(RpcError::Remote(format!("send task: {e}"))));
        (sent, self.finish(RPC_APPEND, called))
    }
}

/// What a heartbeat sent beside an AppendEntries in flight got back.
enum Beat {
    /// The follower acknowledged this node as its leader, and its log has the entry the
    /// request follows.
    Acked,
    /// An answer that is the in-flight request's answer too (same vote, same previous entry):
    /// a higher vote (the leader must step down now, not when the transfer ends) or a conflict
    /// (the transfer cannot succeed). Its encoded answer.
    Decides(Bytes),
    /// No usable answer within the interval.
    Missed,
}

/// Sends the heartbeat `body` (an AppendEntries without entries), waiting up to `ttl`.
async fn send_heartbeat(endpoint: &Endpoint, peer: &PeerAddr, body: Bytes, ttl: Duration) -> Beat {
    let Ok(answer) = endpoint.call(peer, RPC_APPEND, body, ttl).await else {
        return Beat::Missed;
    };
    match decode::<Result<typ::AppendEntriesResponse, typ::RaftError>>(&answer) {
        Ok(Ok(AppendEntriesResponse::HigherVote(_) | AppendEntriesResponse::Conflict)) => {
            Beat::Decides(answer)
        }
        Ok(Ok(_)) => Beat::Acked,
        _ => Beat::Missed,
    }
}

/// openraft's name for an RPC kind (for its timeout errors).
fn rpc_type(kind: u16) -> RPCTypes {
    match kind {
        RPC_VOTE => RPCTypes::Vote,
        RPC_SNAPSHOT => RPCTypes::InstallSnapshot,
        _ => RPCTypes::AppendEntries,
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: typ::AppendEntriesRequest,
        option: RPCOption,
    ) -> Result<typ::AppendEntriesResponse, typ::RPCError> {
        let term = rpc.vote.leader_id().term;
        let key = AppendKey::of(&rpc);
        let (sent, resp) =
            if let Some(covered) = self.in_flight.as_ref().and_then(|l| l.covers(&key)) {
                // openraft's retry of the request in flight, maybe with entries appended
                // since: what the copy in flight carries is all the follower can have accepted.
                let (sent, resp) = self.join_append().await;
                let resp = match resp {
                    Ok(AppendEntriesResponse::Success) if covered != key.last => {
                        Ok(AppendEntriesResponse::PartialSuccess(covered))
                    }
                    other => other,
                };
                (sent, resp)
            } else {
                if self
                    .in_flight
                    .as_ref()
                    .is_some_and(|l| l.key.vote != key.vote)
                {
                    // Of an older leadership: obsolete. (Defensive: openraft makes a client per
                    // replication session, so one vote. Heartbeats of the same leader go beside
                    // it.)
                    self.in_flight = None;
                }
                let (endpoint, peer) = self.link()?;
                let body = encode_raft(&rpc).map_err(codec_error)?;
                if self.sends_in_flight(&rpc, body.len(), &endpoint, &peer, option.hard_ttl()) {
                    self.start_append(endpoint, peer, &rpc, body, option.hard_ttl());
                    self.join_append().await
                } else {
                    let sent = Instant::now();
                    let resp = self
                        .call_body(&endpoint, &peer, RPC_APPEND, body, &option)
                        .await;
                    (sent, resp)
                }
            };
        // Any answer but a higher vote acknowledges this node as the leader of `term`.
        if matches!(&resp, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
            self.acks.record(self.target, term, sent);
        }
        resp
    }

    async fn install_snapshot(
        &mut self,
        rpc: typ::InstallSnapshotRequest,
        option: RPCOption,
    ) -> Result<typ::InstallSnapshotResponse, typ::RPCError<typ::InstallSnapshotError>> {
        self.call(RPC_SNAPSHOT, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: typ::VoteRequest,
        option: RPCOption,
    ) -> Result<typ::VoteResponse, typ::RPCError> {
        self.call(RPC_VOTE, &rpc, &option).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raft_requests_travel_in_the_compact_codec() {
        use crate::op::{ExpireSet, Op, OpBatch, SetCond, SetReply};
        let ops: Vec<Op> = (0..20)
            .map(|i| Op::Set {
                db: 0,
                key: bytes::Bytes::from(format!("key:{i:012}")),
                value: bytes::Bytes::from(vec![b'x'; 64]),
                expire: ExpireSet::Clear,
                cond: SetCond::Always,
                reply: SetReply::OkOrNil,
            })
            .collect();
        let batch = OpBatch {
            now_ms: 1_700_000_000_000,
            hlc: 1 << 40,
            origin: 0,
            ops: ops.into(),
        };
        let log_id = |index| openraft::LogId::new(openraft::CommittedLeaderId::new(3, 1), index);
        let request = typ::AppendEntriesRequest {
            vote: openraft::Vote::new_committed(3, 1),
            prev_log_id: Some(log_id(41)),
            entries: vec![openraft::Entry {
                log_id: log_id(42),
                payload: openraft::EntryPayload::Normal(batch),
            }],
            leader_commit: Some(log_id(41)),
        };
        let compact = encode_raft(&request).unwrap();
        let back: typ::AppendEntriesRequest = decode_raft(&compact).unwrap();
        assert_eq!(back.entries, request.entries);
        // The SETs' keys and values are slices of the request, not copies.
        let openraft::EntryPayload::Normal(decoded) = &back.entries[0].payload else {
            panic!("not a normal entry");
        };
        let frame = compact.as_ptr_range();
        for op in decoded.ops.iter() {
            let Op::Set { key, value, .. } = op else {
                panic!("not a SET: {op:?}");
            };
            assert!(frame.contains(&key.as_ptr()) && frame.contains(&value.as_ptr()));
        }
        assert_eq!(
            (back.vote, back.prev_log_id),
            (request.vote, request.prev_log_id)
        );
        // About a fifth smaller than the fixed-width format; the two do not read each other.
        let fixed = encode(&request).unwrap();
        assert!(
            compact.len() * 5 < fixed.len() * 4,
            "{} against {}",
            compact.len(),
            fixed.len()
        );
        assert!(decode_raft::<typ::AppendEntriesRequest>(&fixed).is_err());
    }

    #[test]
    fn an_append_gets_time_for_its_bytes_within_a_bound() {
        assert_eq!(append_timeout(0), APPEND_BASE_TIMEOUT);
        assert_eq!(
            append_timeout(8 << 20),
            APPEND_BASE_TIMEOUT + Duration::from_secs(8)
        );
        assert_eq!(append_timeout(1 << 30), APPEND_MAX_TIMEOUT);
    }

    #[test]
    fn the_lease_counts_from_the_quorums_oldest_needed_acknowledgement_of_this_term() {
        let acks = AckTimes::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // Alone: always.
        assert!(acks.quorum_acked_since(1, 5, [1].into_iter()).is_some());
        // Three voters: one follower is enough, the latest one counts.
        assert_eq!(acks.quorum_acked_since(1, 5, [1, 2, 3].into_iter()), None);
        acks.record(2, 5, at(10));
        acks.record(3, 5, at(30));
        assert_eq!(
            acks.quorum_acked_since(1, 5, [1, 2, 3].into_iter()),
            Some(at(30))
        );
        // An older answer arriving late moves nothing back.
        acks.record(3, 5, at(20));
        assert_eq!(
            acks.quorum_acked_since(1, 5, [1, 2, 3].into_iter()),
            Some(at(30))
        );
        // Five voters: two followers needed, so the second latest counts.
        acks.record(4, 5, at(25));
        assert_eq!(
            acks.quorum_acked_since(1, 5, [1, 2, 3, 4, 5].into_iter()),
            Some(at(25))
        );
        // Acknowledgements of another term do not count.
        assert_eq!(acks.quorum_acked_since(1, 6, [1, 2, 3].into_iter()), None);
        acks.record(2, 6, at(40));
        assert_eq!(
            acks.quorum_acked_since(1, 6, [1, 2, 3].into_iter()),
            Some(at(40))
        );
        assert_eq!(
            acks.quorum_acked_since(1, 6, [1, 2, 3, 4, 5].into_iter()),
            None
        );
    }
}

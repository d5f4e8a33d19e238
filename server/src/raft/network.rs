//! openraft's network over the geo QUIC links: a factory that hands out one client per target
//! (the link layer dials lazily and redials after failures), and the serving side, a thin
//! adapter from inbound RPCs onto `raft.append_entries` / `vote` / `install_snapshot`.
//!
//! A call that got no answer in time becomes `RPCError::Timeout` (openraft retries at once),
//! unless the peer's last [`TIMEOUTS_BEFORE_UNREACHABLE`] calls all timed out; that, and other
//! transport failures, become `RPCError::Unreachable` (openraft backs off for 500 ms, then
//! retries); errors returned by the peer's Raft travel back serialised and become
//! `RemoteError`.

use std::time::Duration;

use bytes::Bytes;
use geo::link::PeerAddr;
use geo::rpc::RpcError;
use geo::Endpoint;
use openraft::error::{NetworkError, RemoteError, Timeout, Unreachable};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::types::{typ, MeridianNode, NodeId, TypeConfig};

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

/// Upper bound of one Raft RPC when openraft gives no deadline.
const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// Calls to a peer that time out in a row before the next is reported as `Unreachable`: one
/// late answer is a busy peer (retried at once), several are a peer that is gone (a dead
/// peer's calls time out until its connection idles out, and retried at once they filled the
/// log with four lines every 75 ms).
const TIMEOUTS_BEFORE_UNREACHABLE: u32 = 3;

/// Hands out network clients for openraft.
#[derive(Clone)]
pub struct Network {
    endpoint: Option<Endpoint>,
    /// This node's Raft id (timeouts name it).
    me: NodeId,
}

impl Network {
    /// Node `me`'s network over `endpoint` (None for a region of one node: no peers to call).
    pub fn new(me: NodeId, endpoint: Option<Endpoint>) -> Network {
        Network { endpoint, me }
    }
}

/// A client for one target node.
pub struct PeerClient {
    endpoint: Option<Endpoint>,
    me: NodeId,
    target: NodeId,
    peer: Option<PeerAddr>,
    /// Calls that timed out since the last answer.
    timeouts_in_a_row: u32,
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
            target,
            peer,
            timeouts_in_a_row: 0,
        }
    }
}

/// Serialises a value for the wire (bincode).
pub fn encode<T: Serialize>(value: &T) -> Result<Bytes, String> {
    bincode::serialize(value)
        .map(Bytes::from)
        .map_err(|e| e.to_string())
}

/// Deserialises a value from the wire.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    bincode::deserialize(bytes).map_err(|e| e.to_string())
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Text(String);

impl PeerClient {
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
        let (Some(endpoint), Some(peer)) = (&self.endpoint, &self.peer) else {
            return Err(openraft::error::RPCError::Unreachable(Unreachable::new(
                &Text(format!("no link to node {}", self.target)),
            )));
        };
        let body = encode(req)
            .map_err(|e| openraft::error::RPCError::Network(NetworkError::new(&Text(e))))?;
        let timeout = option
            .hard_ttl()
            .min(DEFAULT_RPC_TIMEOUT * 6)
            .max(Duration::from_millis(50));
        let called = endpoint.call(peer, kind, body, timeout).await;
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
        let result: Result<Resp, typ::RaftError<E>> = decode(&reply)
            .map_err(|e| openraft::error::RPCError::Network(NetworkError::new(&Text(e))))?;
        result.map_err(|e| openraft::error::RPCError::RemoteError(RemoteError::new(self.target, e)))
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
        self.call(RPC_APPEND, &rpc, &option).await
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

//! The Raft type configuration and aliases: no other file spells out openraft's generics.

use serde::{Deserialize, Serialize};

use crate::op::{OpBatch, OpResult};

/// A Raft node id (from the topology).
pub type NodeId = u64;

/// What the Raft membership records about a node: enough to dial it and to name it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeridianNode {
    /// Node name (also its TLS identity).
    pub name: String,
    /// QUIC peer address.
    pub peer: String,
    /// RESP address.
    pub resp: String,
}

impl std::fmt::Display for MeridianNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.peer)
    }
}

/// One result per op of the entry's batch (empty for blank and membership entries).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchResults(pub Vec<OpResult>);

openraft::declare_raft_types!(
    /// Meridian's Raft types: entries carry an [`OpBatch`].
    pub TypeConfig:
        D = OpBatch,
        R = BatchResults,
        NodeId = NodeId,
        Node = MeridianNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log id.
pub type LogId = openraft::LogId<NodeId>;
/// A log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// Vote.
pub type Vote = openraft::Vote<NodeId>;
/// Membership as stored.
pub type StoredMembership = openraft::StoredMembership<NodeId, MeridianNode>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, MeridianNode>;
/// A snapshot.
pub type Snapshot = openraft::Snapshot<TypeConfig>;
/// Storage error as openraft wants it.
pub type StorageError = openraft::StorageError<NodeId>;
/// Metrics.
pub type RaftMetrics = openraft::RaftMetrics<NodeId, MeridianNode>;

/// Aliases for RPC request/response and error types.
pub mod typ {
    use super::{MeridianNode, NodeId, TypeConfig};

    /// AppendEntries request.
    pub type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
    /// AppendEntries response.
    pub type AppendEntriesResponse = openraft::raft::AppendEntriesResponse<NodeId>;
    /// Vote request.
    pub type VoteRequest = openraft::raft::VoteRequest<NodeId>;
    /// Vote response.
    pub type VoteResponse = openraft::raft::VoteResponse<NodeId>;
    /// InstallSnapshot request.
    pub type InstallSnapshotRequest = openraft::raft::InstallSnapshotRequest<TypeConfig>;
    /// InstallSnapshot response.
    pub type InstallSnapshotResponse = openraft::raft::InstallSnapshotResponse<NodeId>;
    /// A Raft API error.
    pub type RaftError<E = openraft::error::Infallible> = openraft::error::RaftError<NodeId, E>;
    /// An RPC error.
    pub type RPCError<E = openraft::error::Infallible> =
        openraft::error::RPCError<NodeId, MeridianNode, RaftError<E>>;
    /// Client write error.
    pub type ClientWriteError = openraft::error::ClientWriteError<NodeId, MeridianNode>;
    /// Install snapshot error.
    pub type InstallSnapshotError = openraft::error::InstallSnapshotError;
    /// Linearizability check error.
    pub type CheckIsLeaderError = openraft::error::CheckIsLeaderError<NodeId, MeridianNode>;
}

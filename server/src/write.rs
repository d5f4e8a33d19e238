//! The write seam: every write command's ops go through [`Writer::submit`]. On a single node the
//! batch is applied to the keyspace directly; the Raft writer (region groups) proposes it
//! to the region's log instead and answers once it is committed and applied.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::keyspace::{Keyspace, StorageError};
use crate::op::{Op, OpBatch, OpResult};
use crate::raft::RegionRaft;

/// Largest number of ops put into one batch (one pipelined burst may produce more batches).
pub const MAX_OPS_PER_BATCH: usize = 1024;

/// Why a batch was not applied.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Storage failed; the batch was not applied.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// No leader could be reached within the timeout.
    #[error("no leader for region {region} (waited {waited_ms} ms)")]
    NoLeader {
        /// Region.
        region: String,
        /// How long the write waited.
        waited_ms: u64,
    },
    /// No answer in time (no quorum?); a write may still be applied later.
    #[error("no answer from the region's quorum within {0} ms")]
    Timeout(u64),
    /// The leader could not confirm it still leads (no quorum reachable).
    #[error("region {region} has no reachable quorum")]
    NoQuorum {
        /// Region.
        region: String,
    },
    /// The leader answered with an error.
    #[error("leader: {0}")]
    Remote(String),
    /// The node is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Where writes go.
pub enum Writer {
    /// Applied to this node's keyspace directly (no replication; used by unit tests).
    Local(Arc<Keyspace>),
    /// Proposed to the region's Raft group (forwarded to the leader from a follower).
    Raft(Arc<RegionRaft>),
}

impl Writer {
    /// Applies `ops` as one batch and returns one result per op, in order.
    pub async fn submit(&self, ops: Vec<Op>) -> Result<Vec<OpResult>, WriteError> {
        match self {
            Writer::Local(keyspace) => {
                let batch = OpBatch {
                    now_ms: now_ms(),
                    ops,
                };
                Ok(keyspace.apply_batch(&batch)?)
            }
            Writer::Raft(raft) => raft.write(ops).await,
        }
    }
}

//! The write seam: every write command's ops go through [`Writer::submit`]. On a single node the
//! batch is applied to the keyspace directly; the Raft writer (region groups) proposes it
//! to the region's log instead and answers once it is committed and applied.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::direct_reply::DirectReply;
use crate::keyspace::{Keyspace, StorageError};
use crate::op::{Op, OpBatch, OpResult};
use crate::raft::RegionRaft;
use crate::replication::Geo;

/// Largest number of ops put into one batch (one pipelined burst may produce more batches).
pub const MAX_OPS_PER_BATCH: usize = 1024;

/// Bytes one write (a batch of ops) may carry on a node with peers: it travels whole in one
/// Raft entry and one node-to-node frame (at most 64 MB). (The states a Raft entry ships to
/// other regions are bounded at the apply: see `MAX_SHIPPED_BATCH_BYTES`.)
pub const MAX_REPLICATED_WRITE: usize = 32 * 1024 * 1024;

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
    /// A write too large to replicate (nothing was proposed).
    #[error("write too large to replicate: {bytes} bytes, at most {max} in a cluster")]
    TooLarge {
        /// About the bytes of the write.
        bytes: usize,
        /// The bound.
        max: usize,
    },
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
    /// Proposed to the region's Raft group (forwarded to the leader from a follower), or to
    /// the key's home region when a placement rule says so.
    Raft(Arc<RegionRaft>, Arc<Geo>),
}

impl Writer {
    /// Applies `ops` as one batch and returns one result per op, in order, and the local log
    /// index that carried them (0 when not known here). With `direct`, the replies may already
    /// have been written to the client where the writes were applied (see `direct_reply`).
    pub async fn submit(
        &self,
        ops: Vec<Op>,
        direct: Option<DirectReply>,
    ) -> Result<(Vec<OpResult>, u64), WriteError> {
        match self {
            Writer::Local(keyspace) => {
                let batch = OpBatch {
                    now_ms: now_ms(),
                    hlc: now_ms() << 16,
                    origin: keyspace.region_id(),
                    ops: ops.into(),
                };
                Ok((keyspace.apply_batch(&batch)?, 0))
            }
            Writer::Raft(raft, geo) => {
                // With peers, a write goes whole into one frame: refused here, not by the link
                // after it was proposed (where it failed every AppendEntries until an election).
                if raft.endpoint.is_some() {
                    let bytes: usize = ops.iter().map(Op::approx_size).sum();
                    if bytes > MAX_REPLICATED_WRITE {
                        return Err(WriteError::TooLarge {
                            bytes,
                            max: MAX_REPLICATED_WRITE,
                        });
                    }
                }
                // Multi-key commands follow their first key's placement.
                // (A WATCH check at the head of a transaction does not decide where it goes, nor
                // does a DBSIZE inside one; a FLUSHDB first keeps the batch in this region.)
                if let Some(home) = ops
                    .iter()
                    .find(|op| {
                        !matches!(
                            op,
                            Op::Unchanged { .. } | Op::UnchangedSince { .. } | Op::CountKeys { .. }
                        )
                    })
                    .and_then(Op::first_key)
                    .and_then(|k| geo.remote_home(k))
                {
                    return geo.forward_to_region(raft, &home, &ops).await;
                }
                if geo.targets.is_empty() {
                    return raft.write(ops, direct).await;
                }
                match raft.write(ops.clone(), direct).await {
                    // No leader here (so nothing was proposed): a multi-master write may go
                    // to the nearest healthy region instead.
                    Err(WriteError::NoLeader { .. }) => match geo.nearest_region(raft) {
                        Some(region) => {
                            tracing::warn!(%region, "no quorum in this region; forwarding the write");
                            geo.forward_to_region(raft, &region, &ops).await
                        }
                        None => Err(WriteError::NoLeader {
                            region: raft.region.clone(),
                            waited_ms: raft.settings.write_timeout.as_millis() as u64,
                        }),
                    },
                    other => other,
                }
            }
        }
    }
}

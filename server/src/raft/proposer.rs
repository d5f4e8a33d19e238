//! Group commit on the leader: writes from every connection (and forwarded from followers)
//! queue here; one task drains the queue into one Raft entry per turn and keeps several
//! entries in flight, so fifty clients writing one key each cost one log append and one
//! state-machine write batch, not fifty.

use std::sync::Arc;

use geo::Hlc;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::warn;

use super::types::Raft;
use super::ForwardReply;
use crate::op::{Op, OpBatch};
use crate::write::now_ms;

/// Pending proposals queued at most (senders wait beyond this: backpressure).
const QUEUE_BOUND: usize = 4096;
/// Ops merged into one Raft entry at most.
const MAX_OPS_PER_ENTRY: usize = 4096;
/// Bytes of ops merged into one Raft entry at most (a larger proposal goes alone): an entry
/// travels whole in one node-to-node frame of at most 64 MB.
const MAX_BYTES_PER_ENTRY: usize = 16 * 1024 * 1024;
/// Entries proposed and not yet applied at most. Few: while they are in flight, new writes
/// queue and go together in the next entry. With 16, fifty clients writing one request at a
/// time (`redis-benchmark -P 1`) produced entries of a few ops, each paying a log append, an
/// apply batch and their hand-offs (about 32 µs of CPU per SET); with 4, SET -P1 was about 13 %
/// faster on one node and on a three-node region's leader, -P16 unchanged.
const MAX_IN_FLIGHT: usize = 4;

struct Proposal {
    ops: Vec<Op>,
    /// About the bytes of `ops`.
    bytes: usize,
    reply: oneshot::Sender<ForwardReply>,
}

/// Handle to the proposer task.
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::Sender<Proposal>,
    /// Entries travel to other nodes: their bytes are counted and bounded.
    has_peers: bool,
}

impl Proposer {
    /// Starts the proposer task for `raft`.
    pub fn start(raft: Raft, hlc: Arc<Hlc>, region: u8, has_peers: bool) -> Proposer {
        let (tx, rx) = mpsc::channel(QUEUE_BOUND);
        tokio::spawn(run(raft, rx, hlc, region));
        Proposer { tx, has_peers }
    }

    /// Proposes `ops` (merged with whatever else is queued) and waits for their results.
    pub async fn propose(&self, ops: Vec<Op>) -> ForwardReply {
        let (reply, rx) = oneshot::channel();
        let bytes = if self.has_peers {
            ops.iter().map(Op::approx_size).sum()
        } else {
            0
        };
        if self.tx.send(Proposal { ops, bytes, reply }).await.is_err() {
            return ForwardReply::Failed("raft is shutting down".into());
        }
        rx.await
            .unwrap_or_else(|_| ForwardReply::Failed("raft dropped the proposal".into()))
    }
}

async fn run(raft: Raft, mut rx: mpsc::Receiver<Proposal>, hlc: Arc<Hlc>, region: u8) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    // A proposal taken from the queue that did not fit the previous entry.
    let mut carried: Option<Proposal> = None;
    loop {
        let first = match carried.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        // A slot first, then everything queued meanwhile joins this entry.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut n_ops = first.ops.len();
        let mut n_bytes = first.bytes;
        let mut group = vec![first];
        while n_ops < MAX_OPS_PER_ENTRY && n_bytes < MAX_BYTES_PER_ENTRY {
            match rx.try_recv() {
                Ok(p) if n_bytes + p.bytes > MAX_BYTES_PER_ENTRY => {
                    carried = Some(p);
                    break;
                }
                Ok(p) => {
                    n_ops += p.ops.len();
                    n_bytes += p.bytes;
                    group.push(p);
                }
                Err(_) => break,
            }
        }
        let mut ops = Vec::with_capacity(n_ops);
        let mut shares = Vec::with_capacity(group.len());
        for mut p in group {
            clamp_watch_checks(&mut p.ops);
            shares.push((p.ops.len(), p.reply));
            ops.extend(p.ops);
        }
        for op in &ops {
            if let Op::Merge { hlc: remote, .. } = op {
                hlc.observe(geo::Timestamp(*remote));
            }
        }
        let batch = OpBatch {
            now_ms: now_ms(),
            hlc: hlc.now().as_u64(),
            origin: region,
            ops: ops.into(),
        };
        match raft.client_write_ff(batch).await {
            Ok(receiver) => {
                tokio::spawn(async move {
                    let outcome = receiver.await;
                    drop(permit);
                    match outcome {
                        Ok(Ok(resp)) => {
                            let index = resp.log_id.index;
                            let mut results = resp.data.0.into_iter();
                            for (n, reply) in shares {
                                let _ = reply.send(ForwardReply::Applied(
                                    results.by_ref().take(n).collect(),
                                    index,
                                ));
                            }
                        }
                        Ok(Err(openraft::error::ClientWriteError::ForwardToLeader(f))) => {
                            for (_, reply) in shares {
                                let _ = reply.send(ForwardReply::NotLeader(f.leader_id));
                            }
                        }
                        Ok(Err(e)) => {
                            for (_, reply) in shares {
                                let _ = reply.send(ForwardReply::Failed(e.to_string()));
                            }
                        }
                        Err(_) => {
                            for (_, reply) in shares {
                                let _ = reply
                                    .send(ForwardReply::Failed("raft dropped the write".into()));
                            }
                        }
                    }
                });
            }
            Err(fatal) => {
                warn!(error = %fatal, "raft is down; failing queued writes");
                for (_, reply) in shares {
                    let _ = reply.send(ForwardReply::Failed(fatal.to_string()));
                }
            }
        }
    }
}

/// Keeps a WATCH check from reaching past its own proposal: one that claims more following ops
/// than the proposal has (only a faulty peer could send it) would skip other clients' writes
/// merged into the same entry.
fn clamp_watch_checks(ops: &mut [Op]) {
    let len = ops.len();
    for (i, op) in ops.iter_mut().enumerate() {
        if let Op::Unchanged { then, .. } | Op::UnchangedSince { then, .. } = op {
            *then = (*then).min((len - i - 1) as u32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_check_skips_nothing_beyond_its_proposal() {
        let check = |then| Op::Unchanged {
            keys: Vec::new(),
            then,
        };
        let mut ops = vec![check(99), Op::FlushAll, check(1)];
        clamp_watch_checks(&mut ops);
        assert!(matches!(ops[0], Op::Unchanged { then: 2, .. }));
        assert!(matches!(ops[2], Op::Unchanged { then: 0, .. }));
    }
}

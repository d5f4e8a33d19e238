//! Group commit on the leader: writes from every connection (and forwarded from followers)
//! queue here; one task drains the queue into one Raft entry per turn and keeps several
//! entries in flight, so fifty clients writing one key each cost one log append and one
//! state-machine write batch, not fifty.
//!
//! The proposer also keeps each proposal's deadline, so that a writer waits for its reply
//! without a timer of its own: a proposal still queued at its deadline, or in an entry not
//! applied by then, is answered "timed out". One timer per entry instead of one per write
//! (registering and clearing a timer per SET was about 4 % of a connection worker's CPU at
//! `redis-benchmark -P 1`).

use std::sync::Arc;
use std::time::Instant;

use geo::Hlc;
use tokio::sync::mpsc::error::{SendTimeoutError, TrySendError};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::warn;

use super::types::Raft;
use super::ForwardReply;
use crate::direct_reply::DirectReply;
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
    /// Answered `None` (timed out) if not applied by then.
    deadline: Instant,
    reply: oneshot::Sender<Option<ForwardReply>>,
    /// Where to write the replies as soon as the ops are applied, if the client waits for them.
    direct: Option<DirectReply>,
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

    /// Proposes `ops` (merged with whatever else is queued) and waits for their results;
    /// `None` when they were not applied by `deadline` (then whether they will be is unknown).
    /// The wait is bounded by the proposer, which answers every proposal by its deadline.
    /// With `direct`, the replies to applied ops are written to the client before the answer.
    pub async fn propose(
        &self,
        ops: Vec<Op>,
        deadline: Instant,
        direct: Option<DirectReply>,
    ) -> Option<ForwardReply> {
        let (reply, rx) = oneshot::channel();
        let bytes = if self.has_peers {
            ops.iter().map(Op::approx_size).sum()
        } else {
            0
        };
        let proposal = Proposal {
            ops,
            bytes,
            deadline,
            reply,
            direct,
        };
        let shut_down = || Some(ForwardReply::Failed("raft is shutting down".into()));
        match self.tx.try_send(proposal) {
            Ok(()) => {}
            Err(TrySendError::Closed(_)) => return shut_down(),
            Err(TrySendError::Full(proposal)) => {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.tx.send_timeout(proposal, left).await {
                    Ok(()) => {}
                    Err(SendTimeoutError::Timeout(_)) => return None,
                    Err(SendTimeoutError::Closed(_)) => return shut_down(),
                }
            }
        }
        rx.await
            .unwrap_or_else(|_| Some(ForwardReply::Failed("raft dropped the proposal".into())))
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
        // A slot first (answering `first` if none frees before its deadline), then everything
        // queued meanwhile joins this entry.
        let permit = match in_flight.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(tokio::sync::TryAcquireError::Closed) => return,
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                let acquire = in_flight.clone().acquire_owned();
                match tokio::time::timeout_at(first.deadline.into(), acquire).await {
                    Ok(Ok(permit)) => permit,
                    Ok(Err(_)) => return,
                    Err(_) => {
                        let _ = first.reply.send(None);
                        continue;
                    }
                }
            }
        };
        let now = Instant::now();
        if first.deadline <= now {
            let _ = first.reply.send(None);
            continue;
        }
        let mut n_ops = first.ops.len();
        let mut n_bytes = first.bytes;
        let mut group = vec![first];
        while n_ops < MAX_OPS_PER_ENTRY && n_bytes < MAX_BYTES_PER_ENTRY {
            match rx.try_recv() {
                Ok(p) if p.deadline <= now => {
                    let _ = p.reply.send(None);
                }
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
            shares.push(Share {
                ops: p.ops.len(),
                deadline: p.deadline,
                reply: Some(p.reply),
                direct: p.direct,
            });
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
            Ok(mut receiver) => {
                let raft = raft.clone();
                tokio::spawn(async move {
                    // One timer at a time, set to the earliest deadline not yet answered. The
                    // slot frees once every proposal is answered: an entry stuck in a group
                    // without a quorum holds back the proposals queued behind it no longer.
                    let outcome = loop {
                        let Some(next) = shares.iter().filter_map(Share::waiting_until).min()
                        else {
                            break None;
                        };
                        match tokio::time::timeout_at(next.into(), &mut receiver).await {
                            Ok(outcome) => break Some(outcome),
                            Err(_) => {
                                let now = Instant::now();
                                for share in &mut shares {
                                    share.time_out_if_due(now);
                                }
                            }
                        }
                    };
                    drop(permit);
                    match outcome {
                        None => {}
                        Some(Ok(Ok(resp))) => {
                            let index = resp.log_id.index;
                            let mut results = resp.data.0.into_iter();
                            for share in shares {
                                let mine: Vec<_> = results.by_ref().take(share.ops).collect();
                                if let Some(reply) = share.reply {
                                    // Before the wake-up: the client has its replies sooner.
                                    if let Some(direct) =
                                        share.direct.filter(|_| !reply.is_closed())
                                    {
                                        direct.send(&mine);
                                    }
                                    let _ = reply.send(Some(ForwardReply::Applied(mine, index)));
                                }
                            }
                        }
                        Some(Ok(Err(openraft::error::ClientWriteError::ForwardToLeader(f)))) => {
                            if stepped_down_entry_is_lost(largest_voter_set(&raft)) {
                                answer_all(shares, || ForwardReply::NotLeader(f.leader_id));
                            } else {
                                answer_all(shares, || ForwardReply::Failed(MAYBE_APPLIED.into()));
                            }
                        }
                        Some(Ok(Err(e))) => {
                            answer_all(shares, || ForwardReply::Failed(e.to_string()))
                        }
                        Some(Err(_)) => answer_all(shares, || {
                            ForwardReply::Failed("raft dropped the write".into())
                        }),
                    }
                });
            }
            Err(fatal) => {
                warn!(error = %fatal, "raft is down; failing queued writes");
                answer_all(shares, || ForwardReply::Failed(fatal.to_string()));
            }
        }
    }
}

/// The answer to writes whose entry this node dropped from its log after it lost the lead, when
/// the entry may still be committed elsewhere.
const MAYBE_APPLIED: &str =
    "lost the lead with this write in its log; whether it is applied is unknown";

/// The voters of the largest configuration of the region's membership (both, while it changes).
fn largest_voter_set(raft: &Raft) -> usize {
    let metrics = raft.metrics();
    let m = metrics.borrow();
    let configs = m.membership_config.membership().get_joint_config();
    configs.iter().map(|c| c.len()).max().unwrap_or(1)
}

/// Whether an entry that a deposed leader removed from its log (openraft then answers its
/// writers `ForwardToLeader`) can be proposed again without being applied twice: true when no
/// copy of it can be committed any more.
///
/// openraft answers `ForwardToLeader` both to a write it refused because this node was no
/// longer the leader (never in the log: retrying is right) and to one whose entry a new leader
/// overwrote. With at most four voters the second is lost for good: a candidate that lacks the
/// entry cannot win the votes of two voters that have it (the majority of three or four needs
/// one of them), so the entry was on the old leader alone, which has just removed it. With five
/// voters or more, two voters may hold it while three others elect a leader without it, and a
/// later leader among the two may still commit it: the writer is told its outcome is unknown,
/// as after a timeout.
fn stepped_down_entry_is_lost(largest_voter_set: usize) -> bool {
    largest_voter_set <= 4
}

/// One proposal's part of an entry.
struct Share {
    /// Its ops (they come in this order among the entry's results).
    ops: usize,
    deadline: Instant,
    /// `None` once answered "timed out".
    reply: Option<oneshot::Sender<Option<ForwardReply>>>,
    /// Where the replies go as soon as the ops are applied, if anywhere.
    direct: Option<DirectReply>,
}

impl Share {
    /// The deadline of a proposal still waiting for its answer.
    fn waiting_until(&self) -> Option<Instant> {
        self.reply.as_ref().map(|_| self.deadline)
    }

    /// Answers "timed out" if the deadline has passed.
    fn time_out_if_due(&mut self, now: Instant) {
        if self.deadline <= now {
            if let Some(reply) = self.reply.take() {
                let _ = reply.send(None);
            }
        }
    }
}

/// Gives every proposal of an entry still waiting the same answer.
fn answer_all(shares: Vec<Share>, answer: impl Fn() -> ForwardReply) {
    for reply in shares.into_iter().filter_map(|s| s.reply) {
        let _ = reply.send(Some(answer()));
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

//! Elections with a pre-vote round (Raft thesis §9.6), in front of openraft 0.9, which has none.
//!
//! Without it, a voter cut off from its region (a partition, a certificate its peers refuse)
//! started an election every election timeout and raised its term each time (1 → 6 in a 3 s
//! partition); once it could talk again, its higher term deposed the region's healthy leader
//! and forced new elections (term 8 after the heal). Now openraft's own election timer is off
//! (`enable_elect = false`) and this task starts elections instead: when a voter has heard
//! from no leader for the leader lease plus a random election timeout, it first asks the
//! other voters whether they would vote for it, without changing any state. A voter agrees
//! only if it has not heard from a leader for the lease itself, is not the leader, and has no
//! newer log. Only with a quorum of agreements (its own included) does the node ask openraft
//! to elect (`Trigger::elect`), which raises its term. A node that cannot reach a quorum, or
//! whose peers still follow a live leader, keeps its term.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures::StreamExt;

use openraft::ServerState;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tracing::{debug, info};

use super::network::{decode, encode, RPC_PRE_VOTE};
use super::types::{LogId, NodeId};
use super::RegionRaft;

/// A pre-vote: would the receiver vote for `candidate`, whose log ends at `last_log_id`?
#[derive(Debug, Serialize, Deserialize)]
pub struct PreVoteRequest {
    /// The asking node.
    pub candidate: NodeId,
    /// The last entry of its log.
    pub last_log_id: Option<LogId>,
}

/// When this node last heard from a leader (an AppendEntries or snapshot chunk it accepted),
/// or granted a vote (after which it refuses pre-votes for the lease, as openraft refuses
/// votes).
pub struct LeaderContact {
    base: Instant,
    /// Milliseconds after `base`.
    at_ms: AtomicU64,
}

impl LeaderContact {
    /// Contact as if last heard `ago` before now (saturating at the process's start).
    pub fn new(ago: Duration) -> LeaderContact {
        let base = Instant::now().checked_sub(ago).unwrap_or_else(Instant::now);
        LeaderContact {
            base,
            at_ms: AtomicU64::new(0),
        }
    }

    /// Records a message from the leader now.
    pub fn touch(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.at_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Time since the leader was last heard.
    pub fn elapsed(&self) -> Duration {
        let at = self.base + Duration::from_millis(self.at_ms.load(Ordering::Relaxed));
        at.elapsed()
    }
}

/// How long a voter waits after its last contact with a leader before it asks for pre-votes,
/// and how long after a failed attempt before the next: openraft's own timing (the leader lease,
/// `election_timeout_max`, plus a random election timeout when a leader was known).
fn election_wait(election_timeout_ms: u64) -> Duration {
    lease(election_timeout_ms) + random_timeout(election_timeout_ms)
}

/// A random election timeout, between the configured one and twice it (openraft's range).
fn random_timeout(election_timeout_ms: u64) -> Duration {
    Duration::from_millis(rand::rng().random_range(election_timeout_ms..=election_timeout_ms * 2))
}

/// The leader lease: a voter that heard from a leader within it refuses pre-votes (openraft
/// refuses real votes by the same rule).
pub fn lease(election_timeout_ms: u64) -> Duration {
    Duration::from_millis(election_timeout_ms * 2)
}

/// Whether this node would vote for the candidate of `req` (answers [`RPC_PRE_VOTE`]).
pub fn grant(member: &RegionRaft, req: &PreVoteRequest) -> Result<bool, String> {
    // Membership is not checked: a node not yet joined (the region's first start) knows none,
    // and openraft's real vote does not check it either.
    if member.metrics.borrow().state == ServerState::Leader {
        return Ok(false);
    }
    if member.contact.elapsed() <= lease(member.settings.election_timeout_ms) {
        return Ok(false);
    }
    let mine = member
        .log_store
        .last_log_id()
        .map_err(|e| format!("reading the last log id: {e}"))?;
    Ok(req.last_log_id >= mine)
}

/// Runs until the member is dropped or its Raft stops: starts elections as described above.
pub async fn run(member: Weak<RegionRaft>) {
    let (tick, election_timeout_ms) = match member.upgrade() {
        Some(m) => (
            Duration::from_millis(m.settings.heartbeat_ms.clamp(10, 100)),
            m.settings.election_timeout_ms,
        ),
        None => return,
    };
    let mut wait = election_wait(election_timeout_ms);
    let mut next_attempt = Instant::now() + random_timeout(election_timeout_ms);
    let mut first = true;
    loop {
        // The first turn at once: a region of one elects itself without waiting a tick.
        if !std::mem::take(&mut first) {
            tokio::time::sleep(tick).await;
        }
        let Some(member) = member.upgrade() else {
            return;
        };
        let (state, voters, running) = {
            let m = member.metrics.borrow();
            let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
            (m.state, voters, m.running_state.is_ok())
        };
        if !running {
            return;
        }
        if state == ServerState::Leader || !voters.contains(&member.node_id) {
            continue;
        }
        if voters.len() == 1 {
            // The only voter: no one to ask, nothing to disturb (openraft elects at once too).
            if state != ServerState::Candidate || Instant::now() >= next_attempt {
                let _ = member.raft.trigger().elect().await;
                next_attempt = Instant::now() + Duration::from_millis(election_timeout_ms);
            }
            continue;
        }
        if member.contact.elapsed() < wait || Instant::now() < next_attempt {
            continue;
        }
        let quorum = voters.len() / 2 + 1;
        let vote_before = member.metrics.borrow().vote;
        let granted = pre_vote_round(&member, &voters, quorum).await;
        // Meanwhile this node may have voted for another candidate (or heard a leader): its
        // own election would then depose the one it just helped elect (seen in about one
        // failover in eight under load: two survivors' rounds 20-35 ms apart, three terms).
        let moved_on = member.metrics.borrow().vote != vote_before
            || member.contact.elapsed() < lease(election_timeout_ms);
        if granted >= quorum && moved_on {
            debug!("pre-vote won, but this node voted or heard a leader meanwhile; no election");
        } else if granted >= quorum {
            info!(
                granted,
                voters = voters.len(),
                "pre-vote won; starting an election"
            );
            let _ = member.raft.trigger().elect().await;
        } else {
            debug!(
                granted,
                voters = voters.len(),
                "pre-vote lost; keeping the term"
            );
        }
        wait = election_wait(election_timeout_ms);
        next_attempt = Instant::now() + random_timeout(election_timeout_ms);
    }
}

/// Asks every other voter for a pre-vote; returns the grants, this node's own included, as
/// soon as they reach `quorum` (or every voter answered).
async fn pre_vote_round(member: &Arc<RegionRaft>, voters: &[NodeId], quorum: usize) -> usize {
    let Some(endpoint) = member.endpoint.clone() else {
        return 1;
    };
    let last_log_id = match member.log_store.last_log_id() {
        Ok(id) => id,
        Err(e) => {
            debug!(error = %e, "pre-vote: cannot read the last log id");
            return 0;
        }
    };
    let body = match encode(&PreVoteRequest {
        candidate: member.node_id,
        last_log_id,
    }) {
        Ok(b) => b,
        Err(_) => return 0,
    };
    let timeout = Duration::from_millis(member.settings.election_timeout_ms);
    let calls = voters
        .iter()
        .filter(|&&id| id != member.node_id)
        .filter_map(|&id| member.peer_of(id))
        .map(|peer| {
            let endpoint = endpoint.clone();
            let body = body.clone();
            async move {
                match endpoint.call(&peer, RPC_PRE_VOTE, body, timeout).await {
                    Ok(reply) => matches!(decode::<Result<bool, String>>(&reply), Ok(Ok(true))),
                    // A peer too old to know pre-votes: let its real vote decide.
                    Err(geo::rpc::RpcError::Remote(e)) => e.contains("unknown rpc kind"),
                    Err(_) => false,
                }
            }
        });
    // Done once a quorum agreed: an unreachable voter's call would hold the election for its
    // whole timeout.
    let mut pending: futures::stream::FuturesUnordered<_> = calls.collect();
    let mut granted = 1;
    while granted < quorum {
        match pending.next().await {
            Some(true) => granted += 1,
            Some(false) => {}
            None => break,
        }
    }
    granted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contact_starts_as_long_ago_as_asked_and_moves_forward_only() {
        let contact = LeaderContact::new(Duration::from_secs(5));
        assert!(contact.elapsed() >= Duration::from_secs(5));
        contact.touch();
        assert!(contact.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn the_wait_covers_the_lease_and_an_election_timeout() {
        for _ in 0..100 {
            let w = election_wait(300);
            assert!(w >= Duration::from_millis(900) && w <= Duration::from_millis(1200));
        }
    }
}

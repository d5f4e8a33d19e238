//! The region's members as this node sees them: for `MERIDIAN NODES` and the Prometheus gauges.

use std::collections::BTreeSet;
use std::time::Duration;

use super::types::NodeId;
use super::RegionRaft;

/// One member of the region, as this node sees it.
#[derive(Clone, Debug)]
pub struct MemberStatus {
    /// Raft node id.
    pub id: NodeId,
    /// Node name (from the topology).
    pub name: String,
    /// RESP address.
    pub resp: String,
    /// QUIC peer address.
    pub peer: String,
    /// A voter (`false`: a learner).
    pub voter: bool,
    /// The node this one takes as leader.
    pub leader: bool,
    /// This node itself.
    pub me: bool,
    /// `self`, `up` or `down`: the link from this node.
    pub link: &'static str,
    /// The link's round-trip time, when it is up.
    pub rtt: Option<Duration>,
    /// On the leader only: the last log index the member holds as the leader's (its own last
    /// index for the leader itself).
    pub matched_index: Option<u64>,
    /// On the leader only: how many entries the member is behind the leader's log.
    pub lag_entries: Option<u64>,
}

impl RegionRaft {
    /// Every member of the region's current membership, in id order.
    pub fn members(&self) -> Vec<MemberStatus> {
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let leader = self.leader();
        let last_index = m.last_log_index.unwrap_or(0);
        // openraft's replication metrics exist on the leader only.
        let matched = |id: NodeId| -> Option<u64> {
            let replication = m.replication.as_ref()?;
            if id == self.node_id {
                return Some(last_index);
            }
            Some(replication.get(&id)?.map_or(0, |l| l.index))
        };
        membership
            .nodes()
            .map(|(id, node)| {
                let me = *id == self.node_id;
                let (link, rtt) = match &self.endpoint {
                    Some(ep) if !me => {
                        let up = ep.is_connected(&node.name);
                        (if up { "up" } else { "down" }, ep.rtt(&node.name))
                    }
                    _ => (if me { "self" } else { "down" }, None),
                };
                let matched_index = matched(*id);
                MemberStatus {
                    id: *id,
                    name: node.name.clone(),
                    resp: node.resp.clone(),
                    peer: node.peer.clone(),
                    voter: voters.contains(id),
                    leader: leader == Some(*id),
                    me,
                    link,
                    rtt,
                    matched_index,
                    lag_entries: matched_index.map(|i| last_index.saturating_sub(i)),
                }
            })
            .collect()
    }
}

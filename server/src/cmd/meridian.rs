//! `MERIDIAN <subcommand>`: the server-specific container command (Raft state, nodes,
//! membership changes).

use std::collections::BTreeSet;

use openraft::ChangeMembers;
use std::sync::Arc;

use bytes::Bytes;
use proto_resp::Reply;

use super::args::{parse_int, Keyword};
use super::{Args, Ctx, Outcome};
use crate::error::RespError;
use crate::raft::types::MeridianNode;
use crate::raft::RegionRaft;

fn bulk(text: impl Into<String>) -> Reply {
    Reply::Bulk(Bytes::from(text.into()))
}

fn pair(k: &str, v: Reply) -> (Reply, Reply) {
    (bulk(k), v)
}

/// MERIDIAN RAFT | NODES | NODE ADD id name peer resp | NODE REMOVE id | VERSION | HELP
pub fn meridian(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let sub = args.next_bytes()?;
    let raft = ctx.shared.raft.clone();
    let reply = match Keyword::new(&sub).as_str() {
        "VERSION" => bulk(env!("CARGO_PKG_VERSION")),
        "RAFT" => raft_state(&raft),
        "NODES" => nodes(&raft),
        "NODE" => return node_admin(raft, args),
        "HELP" => Reply::Array(
            [
                "MERIDIAN <subcommand>",
                "RAFT -- role, term, leader, log and applied indexes, membership",
                "NODES -- the region's nodes and their link state",
                "NODE ADD <id> <name> <peer-addr> <resp-addr> -- add a node (learner, then voter)",
                "NODE REMOVE <id> -- remove a node from the region",
                "VERSION",
            ]
            .iter()
            .map(|l| Reply::Status(Bytes::from_static(l.as_bytes())))
            .collect(),
        ),
        _ => {
            return Err(RespError::UnknownSubcommand {
                cmd: "MERIDIAN".into(),
                sub: String::from_utf8_lossy(&sub).into_owned(),
            })
        }
    };
    Ok(reply.into())
}

fn raft_state(raft: &RegionRaft) -> Reply {
    let m = raft.metrics();
    let membership = m.membership_config.membership();
    let voters: Vec<Reply> = membership
        .voter_ids()
        .map(|id| Reply::Integer(id as i64))
        .collect();
    let learners: Vec<Reply> = membership
        .learner_ids()
        .map(|id| Reply::Integer(id as i64))
        .collect();
    let opt = |v: Option<u64>| v.map_or(Reply::Null, |v| Reply::Integer(v as i64));
    Reply::Map(vec![
        pair("region", bulk(raft.region.clone())),
        pair("node_id", Reply::Integer(raft.node_id as i64)),
        pair("role", bulk(format!("{:?}", m.state).to_ascii_lowercase())),
        pair("term", Reply::Integer(m.current_term as i64)),
        pair("leader", opt(m.current_leader)),
        pair("last_log_index", opt(m.last_log_index)),
        pair("applied_index", opt(m.last_applied.map(|l| l.index))),
        pair("snapshot_index", opt(m.snapshot.map(|l| l.index))),
        pair("purged_index", opt(m.purged.map(|l| l.index))),
        pair("millis_since_quorum_ack", opt(m.millis_since_quorum_ack)),
        pair("voters", Reply::Array(voters)),
        pair("learners", Reply::Array(learners)),
    ])
}

fn nodes(raft: &RegionRaft) -> Reply {
    let m = raft.metrics();
    let membership = m.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let mut out = Vec::new();
    for (id, node) in membership.nodes() {
        let me = *id == raft.node_id;
        let (connected, rtt) = match &raft.endpoint {
            Some(ep) if !me => (ep.is_connected(&node.name), ep.rtt(&node.name)),
            _ => (me, None),
        };
        out.push(Reply::Map(vec![
            pair("id", Reply::Integer(*id as i64)),
            pair("name", bulk(node.name.clone())),
            pair("resp", bulk(node.resp.clone())),
            pair("peer", bulk(node.peer.clone())),
            pair(
                "role",
                bulk(if voters.contains(id) {
                    "voter"
                } else {
                    "learner"
                }),
            ),
            pair("leader", Reply::Bool(m.current_leader == Some(*id))),
            pair("self", Reply::Bool(me)),
            pair(
                "link",
                bulk(if me {
                    "self"
                } else if connected {
                    "up"
                } else {
                    "down"
                }),
            ),
            pair(
                "rtt_us",
                rtt.map_or(Reply::Null, |d| Reply::Integer(d.as_micros() as i64)),
            ),
        ]));
    }
    Reply::Array(out)
}

fn node_admin(raft: Arc<RegionRaft>, args: &mut Args) -> Result<Outcome, RespError> {
    let action = args.next_bytes()?;
    match Keyword::new(&action).as_str() {
        "ADD" => {
            let id = u64::try_from(parse_int(&args.next_bytes()?)?)
                .map_err(|_| RespError::NotInteger)?;
            let name = String::from_utf8_lossy(&args.next_bytes()?).into_owned();
            let peer = String::from_utf8_lossy(&args.next_bytes()?).into_owned();
            let resp = String::from_utf8_lossy(&args.next_bytes()?).into_owned();
            args.finish()?;
            if peer.parse::<std::net::SocketAddr>().is_err()
                || resp.parse::<std::net::SocketAddr>().is_err()
            {
                return Err(RespError::Other("peer and resp must be ip:port addresses"));
            }
            Ok(Outcome::Async(Box::pin(async move {
                let node = MeridianNode { name, peer, resp };
                if let Err(e) = raft.raft.add_learner(id, node, true).await {
                    return RespError::Message(format!("adding learner {id}: {e}")).to_reply();
                }
                let mut voters: BTreeSet<u64> = raft
                    .metrics()
                    .membership_config
                    .membership()
                    .voter_ids()
                    .collect();
                voters.insert(id);
                match raft.raft.change_membership(voters, false).await {
                    Ok(_) => Reply::ok(),
                    Err(e) => RespError::Message(format!("promoting {id}: {e}")).to_reply(),
                }
            })))
        }
        "REMOVE" => {
            let id = u64::try_from(parse_int(&args.next_bytes()?)?)
                .map_err(|_| RespError::NotInteger)?;
            args.finish()?;
            Ok(Outcome::Async(Box::pin(async move {
                let remove: BTreeSet<u64> = [id].into();
                let is_voter = raft
                    .metrics()
                    .membership_config
                    .membership()
                    .voter_ids()
                    .any(|v| v == id);
                if is_voter {
                    if let Err(e) = raft
                        .raft
                        .change_membership(ChangeMembers::RemoveVoters(remove.clone()), false)
                        .await
                    {
                        return RespError::Message(format!("removing voter {id}: {e}")).to_reply();
                    }
                }
                match raft
                    .raft
                    .change_membership(ChangeMembers::RemoveNodes(remove), false)
                    .await
                {
                    Ok(_) => Reply::ok(),
                    Err(e) => RespError::Message(format!("removing node {id}: {e}")).to_reply(),
                }
            })))
        }
        _ => Err(RespError::Syntax),
    }
}

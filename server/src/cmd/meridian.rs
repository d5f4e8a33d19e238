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
        "WAN" => wan(ctx, args)?,
        "REGIONS" => regions(ctx),
        "DIGEST" => {
            let (hash, keys) = ctx.shared.keyspace.digest(ctx.now_ms)?;
            Reply::Array(vec![bulk(format!("{hash:016x}")), Reply::Integer(keys as i64)])
        }
        "HELP" => super::help_reply(&[
            "MERIDIAN <subcommand>",
            "RAFT -- role, term, leader, log and applied indexes, membership",
            "NODES -- the region's nodes and their link state",
            "NODE ADD <id> <name> <peer-addr> <resp-addr> -- add a node (learner, then voter)",
            "NODE REMOVE <id> -- remove a node from the region",
            "REGIONS -- this region (tombstones waiting, collected) and the others: link, RTT, replication lag, watermarks",
            "DIGEST -- hash of every visible key and value (compare regions for convergence)",
            "WAN [LIST] -- emulated link shapes (test/demo only)",
            "WAN SET <node|region> [DELAY ms] [JITTER ms] [LOSS 0..1] [PARTITION] -- shape datagrams sent there",
            "WAN CLEAR [<node|region>] -- remove runtime shapes (back to the topology's [[wan]])",
            "VERSION",
        ]),
        _ => {
            return Err(RespError::unknown_subcommand("MERIDIAN", &sub))
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
        // The leader as this node knows it: none once it has not heard from it for the lease.
        pair("leader_id", opt(raft.leader())),
        pair("last_log_index", opt(m.last_log_index)),
        pair("commit_index", opt(raft.log_store.committed_index())),
        pair("applied_index", opt(m.last_applied.map(|l| l.index))),
        pair("snapshot_index", opt(m.snapshot.map(|l| l.index))),
        pair("purged_index", opt(m.purged.map(|l| l.index))),
        // From the acknowledged send times the read lease counts from (openraft's own figure
        // is computed when it publishes metrics, and counts joined retries from the retry).
        pair(
            "millis_since_quorum_ack",
            opt(raft.millis_since_quorum_ack()),
        ),
        pair("voters", Reply::Array(voters)),
        pair("learners", Reply::Array(learners)),
        // The log index from which WATCH checks compare churn counters (0: not yet).
        pair(
            "churn_epoch",
            Reply::Integer((raft.keyspace.churn_epoch() & !crate::keyspace::CHURN_MIXED) as i64),
        ),
    ])
}

/// MERIDIAN NODES: one map per member (see [`RegionRaft::members`]).
fn nodes(raft: &RegionRaft) -> Reply {
    let opt = |v: Option<u64>| v.map_or(Reply::Null, |v| Reply::Integer(v as i64));
    let rows = raft.members().into_iter().map(|m| {
        Reply::Map(vec![
            pair("id", Reply::Integer(m.id as i64)),
            pair("name", bulk(m.name)),
            pair("resp", bulk(m.resp)),
            pair("peer", bulk(m.peer)),
            pair("role", bulk(if m.voter { "voter" } else { "learner" })),
            pair("leader", Reply::Bool(m.leader)),
            pair("self", Reply::Bool(m.me)),
            pair("link", bulk(m.link)),
            pair("rtt_us", opt(m.rtt.map(|d| d.as_micros() as u64))),
            // Known on the leader only (null elsewhere).
            pair("matched_index", opt(m.matched_index)),
            pair("lag_entries", opt(m.lag_entries)),
        ])
    });
    Reply::Array(rows.collect())
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
                let learner = raft.raft.add_learner(id, node, true);
                if let Err(reply) = membership_step(format!("adding learner {id}"), learner).await {
                    return reply;
                }
                let mut voters: BTreeSet<u64> = raft
                    .metrics()
                    .membership_config
                    .membership()
                    .voter_ids()
                    .collect();
                voters.insert(id);
                let promote = raft.raft.change_membership(voters, false);
                membership_step(format!("promoting {id}"), promote)
                    .await
                    .unwrap_or_else(|reply| reply)
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
                    let demote = raft
                        .raft
                        .change_membership(ChangeMembers::RemoveVoters(remove.clone()), false);
                    if let Err(reply) =
                        membership_step(format!("removing voter {id}"), demote).await
                    {
                        return reply;
                    }
                }
                let drop = raft
                    .raft
                    .change_membership(ChangeMembers::RemoveNodes(remove), false);
                membership_step(format!("removing node {id}"), drop)
                    .await
                    .unwrap_or_else(|reply| reply)
            })))
        }
        _ => Err(RespError::Syntax),
    }
}

/// Peer addresses a WAN target names: a node, or every other node of a region.
fn wan_targets(ctx: &Ctx<'_>, target: &str) -> Result<Vec<std::net::SocketAddr>, RespError> {
    let topo = &ctx.shared.topology;
    if let Some(node) = topo.node(target) {
        return Ok(vec![node.peer]);
    }
    if topo.region(target).is_some() {
        return Ok(topo
            .nodes_in_region(target)
            .iter()
            .filter(|n| n.name != ctx.shared.node_name)
            .map(|n| n.peer)
            .collect());
    }
    Err(RespError::Message(format!(
        "no node or region named '{target}'"
    )))
}

/// MERIDIAN WAN [LIST] | SET target [DELAY ms] [JITTER ms] [LOSS p] [PARTITION] | CLEAR [target]
fn wan(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Reply, RespError> {
    let Some(endpoint) = ctx.shared.raft.endpoint.clone() else {
        return Err(RespError::Other(
            "WAN emulation needs a topology with peers",
        ));
    };
    let wan = endpoint.wan();
    let refused = |e: geo::WanError| RespError::Message(e.to_string());
    let action = args
        .next_keyword()
        .map(|k| k.as_str().to_string())
        .unwrap_or_else(|| "LIST".into());
    match action.as_str() {
        "LIST" => {
            let topo = &ctx.shared.topology;
            let rows = wan
                .shapes()
                .into_iter()
                .map(|(addr, shape)| {
                    let name = topo
                        .node_by_peer_addr(addr)
                        .map_or_else(|| addr.to_string(), |n| n.name.clone());
                    Reply::Map(vec![
                        pair("peer", bulk(name)),
                        pair("delay_ms", Reply::Integer(shape.delay.as_millis() as i64)),
                        pair("jitter_ms", Reply::Integer(shape.jitter.as_millis() as i64)),
                        pair("loss", Reply::Double(shape.loss)),
                        pair("partitioned", Reply::Bool(shape.partitioned)),
                    ])
                })
                .collect();
            Ok(Reply::Array(rows))
        }
        "SET" => {
            let target = String::from_utf8_lossy(&args.next_bytes()?).into_owned();
            let mut shape = geo::LinkShape::default();
            while let Some(word) = args.next_keyword() {
                match word.as_str() {
                    "DELAY" => shape.delay = ms_arg(args)?,
                    "JITTER" => shape.jitter = ms_arg(args)?,
                    "LOSS" => shape.loss = args.next_f64()?,
                    "PARTITION" => shape.partitioned = true,
                    _ => return Err(RespError::Syntax),
                }
            }
            for addr in wan_targets(ctx, &target)? {
                wan.set_link(addr, shape).map_err(refused)?;
            }
            Ok(Reply::ok())
        }
        "CLEAR" => {
            let addrs = match args.next_opt() {
                Some(t) => wan_targets(ctx, &String::from_utf8_lossy(&t))?,
                None => wan.shapes().into_iter().map(|(a, _)| a).collect(),
            };
            // Back to the topology's [[wan]] shapes, not to no shaping at all.
            let configured = ctx.shared.topology.wan_shapes_from(&ctx.shared.node_name);
            for addr in addrs {
                wan.clear(addr).map_err(refused)?;
                if let Some((_, shape)) = configured.iter().find(|(a, _)| *a == addr) {
                    wan.set_link(addr, *shape).map_err(refused)?;
                }
            }
            Ok(Reply::ok())
        }
        _ => Err(RespError::Syntax),
    }
}

fn ms_arg(args: &mut Args) -> Result<std::time::Duration, RespError> {
    let ms = u64::try_from(args.next_i64()?).map_err(|_| RespError::NotInteger)?;
    Ok(std::time::Duration::from_millis(ms))
}

/// An atomic figure as an integer reply.
/// Tombstones MERIDIAN REGIONS counts at most (the count walks the tombstone index).
const TOMBSTONES_COUNTED: usize = 1_000_000;

/// MERIDIAN REGIONS: this region and every other one with link state, RTT and lag.
fn regions(ctx: &Ctx<'_>) -> Reply {
    let geo = &ctx.shared.geo;
    let leader = ctx.shared.raft.is_leader();
    let mut rows = vec![Reply::Map(vec![
        pair("region", bulk(geo.region.clone())),
        pair("self", Reply::Bool(true)),
        pair(
            "id",
            Reply::Integer(i64::from(geo.ids.get(&geo.region).copied().unwrap_or(0))),
        ),
        pair("leader_here", Reply::Bool(leader)),
        // Tombstones waiting until every region merged them (counted up to a limit).
        pair(
            "tombstones",
            Reply::Integer(
                ctx.shared
                    .keyspace
                    .tombstones_indexed(TOMBSTONES_COUNTED)
                    .unwrap_or(0) as i64,
            ),
        ),
        pair(
            "tombstones_collected",
            Reply::Integer(ctx.shared.keyspace.collected() as i64),
        ),
        pair(
            "outbox_memory_bytes",
            Reply::Integer(ctx.shared.keyspace.outbox_memory() as i64),
        ),
        pair(
            "outbox_storage_reads",
            Reply::Integer(ctx.shared.keyspace.outbox_storage_reads() as i64),
        ),
    ])];
    for r in geo.status(&ctx.shared.raft, &ctx.shared.keyspace) {
        let int = |v: u64| Reply::Integer(v as i64);
        rows.push(Reply::Map(vec![
            pair("region", bulk(r.region)),
            pair("self", Reply::Bool(false)),
            pair("id", Reply::Integer(i64::from(r.id))),
            pair("link", bulk(r.link)),
            pair(
                "rtt_us",
                r.rtt
                    .map_or(Reply::Null, |d| Reply::Integer(d.as_micros() as i64)),
            ),
            pair("acked_index", int(r.acked_index)),
            pair("lag_entries", int(r.lag_entries)),
            pair("lag_ms", int(r.lag_ms)),
            pair("resyncs", int(r.resyncs)),
            pair("coalesced_entries", int(r.coalesced_entries)),
            pair("superseded_states", int(r.superseded_states)),
            pair("applied_from_index", int(r.applied_from_index)),
        ]));
    }
    Reply::Array(rows)
}

/// How long `MERIDIAN NODE ADD|REMOVE` waits for each membership step (a learner catching up,
/// a change committing) before answering that it has not finished. The step goes on.
pub const MEMBERSHIP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Runs one membership step (`what` names it in errors) for at most [`MEMBERSHIP_TIMEOUT`]:
/// `Ok(+OK)` when it succeeded, else the error reply to give (failed, or not finished in time:
/// then it goes on, and MERIDIAN RAFT shows when it has).
async fn membership_step<T, E: std::fmt::Display>(
    what: String,
    step: impl std::future::Future<Output = Result<T, E>>,
) -> Result<Reply, Reply> {
    match tokio::time::timeout(MEMBERSHIP_TIMEOUT, step).await {
        Ok(Ok(_)) => Ok(Reply::ok()),
        Ok(Err(e)) => Err(RespError::Message(format!("{what}: {e}")).to_reply()),
        Err(_) => Err(RespError::Message(format!(
            "{what}: not finished within {} s (no quorum, or the node cannot be reached?); it \
             may still complete: see MERIDIAN RAFT",
            MEMBERSHIP_TIMEOUT.as_secs()
        ))
        .to_reply()),
    }
}

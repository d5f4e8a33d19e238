//! The serving side of node-to-node RPCs: Raft messages onto the local openraft, forwarded
//! writes and read-index requests onto the [`RegionRaft`].

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use futures::future::BoxFuture;
use geo::RpcHandler;
use openraft::raft::AppendEntriesResponse;
use tracing::debug;

use super::network::{
    decode, decode_raft, encode, RPC_APPEND, RPC_FORWARD_WRITE, RPC_PRE_VOTE, RPC_PUBLISH,
    RPC_READ_INDEX, RPC_REPL_APPLY, RPC_REPL_WAIT, RPC_REPL_WATERMARK, RPC_SNAPSHOT, RPC_VOTE,
};
use super::types::typ;
use super::{ForwardReply, ForwardRequest, RegionRaft};
use crate::write::WriteError;

/// Dispatches inbound RPCs; the Raft member is attached once it has started (the endpoint
/// must exist before Raft, which needs it for its network).
#[derive(Default)]
pub struct RaftService {
    member: OnceLock<Arc<RegionRaft>>,
    geo: OnceLock<Arc<crate::replication::Geo>>,
    pubsub: OnceLock<Arc<crate::pubsub::PubSub>>,
}

impl RaftService {
    /// A service with no member attached yet (calls fail until [`RaftService::attach`]).
    pub fn new() -> RaftService {
        RaftService::default()
    }

    /// Attaches the started Raft member.
    pub fn attach(&self, member: Arc<RegionRaft>) {
        let _ = self.member.set(member);
    }

    /// Attaches cross-region replication state (answers WAIT for followers).
    pub fn attach_geo(&self, geo: Arc<crate::replication::Geo>) {
        let _ = self.geo.set(geo);
    }

    /// Attaches the node's Pub/Sub subscriptions (messages published on other nodes).
    pub fn attach_pubsub(&self, pubsub: Arc<crate::pubsub::PubSub>) {
        let _ = self.pubsub.set(pubsub);
    }
}

impl RpcHandler for RaftService {
    fn handle(
        &self,
        from: String,
        kind: u16,
        body: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, String>> {
        let member = self.member.get().cloned();
        let geo = self.geo.get().cloned();
        let pubsub = self.pubsub.get().cloned();
        Box::pin(async move {
            if kind == RPC_PUBLISH {
                let pubsub = pubsub.ok_or_else(|| "pub/sub not started yet".to_string())?;
                return encode(&(crate::pubsub::receive(&pubsub, &body)? as u64));
            }
            let member = member.ok_or_else(|| "raft not started yet".to_string())?;
            debug!(from = %from, kind, len = body.len(), "rpc");
            match kind {
                RPC_APPEND => {
                    let req: typ::AppendEntriesRequest = decode_raft(&body)?;
                    let resp = member.raft.append_entries(req).await;
                    if matches!(&resp, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_)))
                    {
                        member.contact.touch();
                    }
                    encode(&resp)
                }
                RPC_VOTE => {
                    let req: typ::VoteRequest = decode_raft(&body)?;
                    let resp = member.raft.vote(req).await;
                    // Having voted, refuse other candidates' pre-votes for the lease, as
                    // openraft refuses their votes.
                    if matches!(&resp, Ok(r) if r.vote_granted) {
                        member.contact.touch();
                    }
                    encode(&resp)
                }
                RPC_PRE_VOTE => {
                    let req: super::elector::PreVoteRequest = decode(&body)?;
                    encode(&super::elector::grant(&member, &req))
                }
                RPC_SNAPSHOT => {
                    let req: typ::InstallSnapshotRequest = decode_raft(&body)?;
                    let vote = req.vote;
                    let resp = member.raft.install_snapshot(req).await;
                    if matches!(&resp, Ok(r) if r.vote == vote) {
                        member.contact.touch();
                    }
                    encode(&resp)
                }
                RPC_FORWARD_WRITE => {
                    // The ops' SET keys and values stay slices of the request's buffer, as a
                    // local client's stay slices of its connection's.
                    let request: ForwardRequest =
                        crate::shared_bytes::with_frame(&body, || decode(&body))?;
                    if crate::write::now_ms() > request.deadline_ms {
                        return encode(&ForwardReply::Failed(
                            "forwarded write arrived after its deadline; not applied".into(),
                        ));
                    }
                    // From a follower of this region, or from another region (placement):
                    // either way this region's leader applies it.
                    let reply = match member.write(request.ops, None).await {
                        Ok((results, index)) => ForwardReply::Applied(results, index),
                        Err(WriteError::NoLeader { .. }) => {
                            ForwardReply::NotLeader(member.leader())
                        }
                        Err(e) => ForwardReply::Failed(e.to_string()),
                    };
                    encode(&reply)
                }
                RPC_REPL_APPLY => encode(&crate::replication::receive(&member, &body).await),
                RPC_REPL_WATERMARK => {
                    let origin = *body
                        .first()
                        .ok_or_else(|| "empty watermark request".to_string())?;
                    encode(&member.keyspace.watermark(origin).map_err(|e| e.to_string()))
                }
                RPC_READ_INDEX => encode(&member.read_index().await),
                RPC_REPL_WAIT => {
                    let request: crate::replication::WaitRequest = decode(&body)?;
                    let geo = geo.ok_or_else(|| "replication not started yet".to_string())?;
                    let limit = std::time::Duration::from_millis(request.limit_ms)
                        .min(crate::cmd::server::MAX_WAIT);
                    let acked = geo.wait_acked(request.index, request.wanted, limit).await;
                    encode(&(acked as u64))
                }
                other => Err(format!("unknown rpc kind {other}")),
            }
        })
    }
}

//! Transactions: MULTI, EXEC, DISCARD, WATCH, UNWATCH.
//!
//! Between MULTI and EXEC a connection's commands are queued, not run. EXEC runs them in
//! order; the writes among them go to the region as one batch, so they land in one Raft entry
//! next to each other and every replica applies them together, with no other write between.
//! Reads go in the batch too, so they read between the writes before them and after them: GET
//! and MGET as GETEXs that change nothing; TYPE, EXISTS, TTL, STRLEN, GETRANGE, DBSIZE … as
//! [`Op::ReadKey`](crate::op::Op::ReadKey) / [`Op::CountKeys`](crate::op::Op::CountKeys) for
//! their keys, after which the command itself runs on what those read (a [`TxView`]). KEYS,
//! SCAN and RANDOMKEY, which read the whole keyspace, are refused inside MULTI (the transaction
//! is then discarded at EXEC).
//!
//! WATCH remembers a fingerprint of each key's stored encoding (every write restamps it) and
//! its slot's churn counter (compared for a key missing when watched, so that one created and
//! removed again counts as a change, as in Redis); EXEC puts an
//! [`Op::UnchangedSince`](crate::op::Op::UnchangedSince) with them at the head of the batch,
//! which every replica checks where the batch lands in the log: if a watched key changed, the
//! rest of the transaction is skipped and EXEC answers nil. The running of EXEC lives in the
//! connection ([`crate::connection`]), which owns the writer's batches.

use std::collections::HashMap;

use bytes::Bytes;
use proto_resp::Reply;

use super::{Args, CommandSpec, Ctx, Outcome};
use crate::client::{MultiState, WatchedKey};
use crate::error::RespError;
use crate::keyspace::StoredValue;

/// Keys one connection may watch.
pub const MAX_WATCHED: usize = 10_000;

/// Commands one transaction may queue.
pub const MAX_QUEUED: usize = 10_000;
/// Bytes of arguments one transaction may queue: its writes become one Raft entry, which must
/// stay well under the 64 MB node-to-node frame (a follower forwards it, the leader replicates
/// it whole).
pub const MAX_QUEUED_BYTES: usize = 32 * 1024 * 1024;

/// What a transaction's batch read for one queued read command, at its place among the
/// transaction's writes: its keys' live values, or the database's key count (DBSIZE).
/// (All its keys are in the database the command runs in.)
#[derive(Debug, Default)]
pub struct TxView {
    /// Each key the command reads and its live value (`None`: no such key).
    pub values: HashMap<Bytes, Option<StoredValue>>,
    /// The key count of the command's database, for DBSIZE.
    pub count: Option<u64>,
}

impl TxView {
    /// The value the batch read for `key`.
    pub fn value(&self, key: &[u8]) -> Result<Option<StoredValue>, RespError> {
        self.values
            .get(key)
            .cloned()
            .ok_or(RespError::Other("a key the transaction did not read"))
    }

    /// The key count the batch read.
    pub fn count(&self) -> Result<u64, RespError> {
        self.count
            .ok_or(RespError::Other("the transaction did not count the keys"))
    }
}

/// True for the reads a transaction cannot carry: they read the whole keyspace.
pub fn reads_everything(spec: &CommandSpec) -> bool {
    matches!(spec.name, "keys" | "scan" | "randomkey")
}

/// MULTI
pub fn multi(ctx: &mut Ctx<'_>, _args: &mut Args) -> Result<Outcome, RespError> {
    if ctx.client.multi.is_some() {
        return Err(RespError::Other("MULTI calls can not be nested"));
    }
    ctx.client.multi = Some(MultiState::default());
    Ok(Reply::ok().into())
}

/// EXEC outside MULTI (inside, the connection runs the transaction).
pub fn exec(_ctx: &mut Ctx<'_>, _args: &mut Args) -> Result<Outcome, RespError> {
    Err(RespError::Other("EXEC without MULTI"))
}

/// DISCARD
pub fn discard(ctx: &mut Ctx<'_>, _args: &mut Args) -> Result<Outcome, RespError> {
    match ctx.client.multi.take() {
        Some(_) => {
            ctx.client.watched.clear();
            Ok(Reply::ok().into())
        }
        None => Err(RespError::Other("DISCARD without MULTI")),
    }
}

/// WATCH key…: remembers what each key holds now (read like GET: linearizable by default).
pub fn watch(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    if ctx.client.multi.is_some() {
        return Err(RespError::Other("WATCH inside MULTI is not allowed"));
    }
    let db = ctx.client.db;
    for key in args.rest() {
        if ctx.client.watched.len() >= MAX_WATCHED {
            return Err(RespError::Message(format!(
                "too many watched keys (at most {MAX_WATCHED})"
            )));
        }
        // The churn counter first: a key created and removed again after this reads as a change.
        let keyspace = &ctx.shared.keyspace;
        let churn = keyspace.churn(db, &key);
        let fingerprint = keyspace.get(db, &key, ctx.now_ms)?.map(|v| v.fingerprint());
        ctx.client.watched.push(WatchedKey {
            db,
            key,
            fingerprint,
            churn,
        });
    }
    Ok(Reply::ok().into())
}

/// UNWATCH
pub fn unwatch(ctx: &mut Ctx<'_>, _args: &mut Args) -> Result<Outcome, RespError> {
    ctx.client.watched.clear();
    Ok(Reply::ok().into())
}

/// What a command sent inside MULTI gets instead of running: `QUEUED`, or an error that
/// discards the transaction at EXEC. `argv` is the whole command (name first).
pub fn queue(
    multi: &mut MultiState,
    spec: &CommandSpec,
    argv: Vec<Bytes>,
) -> Result<Reply, RespError> {
    let refuse = |multi: &mut MultiState, e: RespError| {
        multi.failed = true;
        Err(e)
    };
    if matches!(
        spec.name,
        "subscribe" | "unsubscribe" | "psubscribe" | "punsubscribe"
    ) {
        let name = spec.name.to_ascii_uppercase();
        return refuse(
            multi,
            RespError::Message(format!("{name} inside MULTI is not supported by Meridian")),
        );
    }
    if spec.name == "shutdown" {
        return refuse(
            multi,
            RespError::Other("Command not allowed inside a transaction"),
        );
    }
    if reads_everything(spec) {
        let name = spec.name;
        return refuse(
            multi,
            RespError::Message(format!(
                "'{name}' inside MULTI is not supported by Meridian: a transaction carries \
                 writes, reads of named keys, DBSIZE and connection commands, not KEYS, SCAN \
                 or RANDOMKEY"
            )),
        );
    }
    let bytes: usize = argv.iter().map(|a| a.len() + 16).sum();
    if multi.bytes + bytes > MAX_QUEUED_BYTES {
        return refuse(
            multi,
            RespError::Message(format!(
                "transaction too large (its commands take more than {} MB)",
                MAX_QUEUED_BYTES >> 20
            )),
        );
    }
    if multi.queued.len() >= MAX_QUEUED {
        return refuse(
            multi,
            RespError::Message(format!(
                "too many commands in one transaction (at most {MAX_QUEUED})"
            )),
        );
    }
    multi.bytes += bytes;
    // Copied: the arguments would otherwise keep whole read buffers alive while queued.
    multi
        .queued
        .push(argv.iter().map(|a| Bytes::copy_from_slice(a)).collect());
    Ok(Reply::Status(Bytes::from_static(b"QUEUED")))
}

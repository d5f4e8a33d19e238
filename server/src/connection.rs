//! One client connection: read into a bounded buffer, decode every complete request, run
//! them in order, batch consecutive writes into one submission, write every reply, flush once.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::BytesMut;
use proto_resp::{decode_request, encode_reply, Limits, ProtocolVersion, Reply, Request};
use smallvec::SmallVec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::client::{ClientInfo, ClientState};
use crate::cmd::transaction::TxView;
use crate::cmd::{self, flags, Args, Ctx, Outcome};
use crate::config::ReadConsistency;
use crate::direct_reply::{op_reply, DirectReply, LeasedSocket, SocketLease};
use crate::error::RespError;
use crate::keyspace::StoredValue;
use crate::node::Shared;
use crate::op::{ExpireSet, Op, OpResult};
use crate::pubsub::{Message, Subscription};
use crate::stats::LocalTally;
use crate::ticks;
use crate::write::{now_ms, MAX_OPS_PER_BATCH, MAX_REPLICATED_WRITE};

/// Requests handled per turn before replies are written (bounds one turn's work and memory).
const MAX_REQUESTS_PER_TURN: usize = 4096;
/// Pipelined GETs at the front of a turn whose keys' cache entries are fetched before the first
/// runs, at most: a bound on the work done ahead (64 covers a 16-deep pipeline; not tuned).
/// GET -P16 (`redis-benchmark -t get -c 50 -P 16 -r 100000 -d 64`, one node, 3 alternating
/// rounds): server CPU per GET 1.37-1.57 -> 1.21-1.29 us, 804k-923k -> 966k-1.04M GET/s.
const WARM_GETS: usize = 64;
/// Reply bytes buffered before they are written out mid-turn.
const OUT_HIGH_WATER: usize = 1024 * 1024;
/// Read buffer growth step.
const READ_CHUNK: usize = 16 * 1024;

/// The state of one connection's session.
struct Session {
    shared: Arc<Shared>,
    /// The socket as the proposer may write this connection's write replies to it.
    lease: Arc<SocketLease>,
    client: ClientState,
    out: BytesMut,
    pending: Vec<Op>,
    /// The command (index in the table) of each op in `pending`, for INFO commandstats.
    pending_cmds: Vec<usize>,
    /// About the bytes of `pending` (a batch stays under [`MAX_REPLICATED_WRITE`]).
    pending_bytes: usize,
    /// Indexes in `pending` of writes whose replies are switched off (CLIENT REPLY).
    silent_pending: Vec<usize>,
    tally: LocalTally,
    /// A linearizable read barrier passed after the requests now buffered were received (and
    /// after this connection's last write): later reads of the same turn need no other. Every
    /// request of a turn was sent before the barrier, so it is linearizable for all of them.
    barrier_passed: bool,
    /// The clock for this turn's commands, read once per turn (unix ms).
    turn_now_ms: Option<u64>,
}

/// Serves one client until it quits, the protocol breaks, or the node shuts down.
pub async fn serve(
    stream: TcpStream,
    shared: Arc<Shared>,
    info: Arc<ClientInfo>,
    token: CancellationToken,
) {
    let authenticated = shared.requirepass().is_none();
    let write_timeout = std::time::Duration::from_millis(shared.config.client_write_timeout_ms);
    let mut limits = Limits {
        max_bulk_len: shared.config.proto_max_bulk_len,
        ..Limits::default()
    };
    // Dropped when the connection ends, before the socket closes: see `LeasedSocket`.
    let mut socket = LeasedSocket::new(stream);
    let mut session = Session {
        lease: socket.lease(),
        client: ClientState::new(info, authenticated),
        shared,
        out: BytesMut::with_capacity(READ_CHUNK),
        pending: Vec::new(),
        pending_cmds: Vec::new(),
        pending_bytes: 0,
        silent_pending: Vec::new(),
        tally: LocalTally::default(),
        barrier_passed: false,
        turn_now_ms: None,
    };
    let mut inbuf = BytesMut::with_capacity(READ_CHUNK);
    loop {
        // The requests buffered now, run in order. (A stopping node aborts this task if a
        // request still waits once the stop's grace has passed: see `Node::run_until_shutdown`.)
        let turn = run_turn(&mut session, &mut inbuf, &mut limits, &token).await;
        let Some(Turn { close, processed }) = turn else {
            return;
        };
        session.finish_turn();
        session.deliver();
        if !session.out.is_empty() {
            let n = session.out.len() as u64;
            // The timeout is on progress: a slow reader of a large reply is not cut off, one
            // that takes nothing for `client-write-timeout-ms` is.
            let mut sent = 0;
            while sent < session.out.len() {
                let write =
                    tokio::time::timeout(write_timeout, socket.stream.write(&session.out[sent..]));
                let written = tokio::select! {
                    biased;
                    w = write => w,
                    _ = token.cancelled() => return,
                };
                match written {
                    Ok(Ok(0)) | Ok(Err(_)) => return,
                    Ok(Ok(k)) => sent += k,
                    Err(_) => {
                        debug!(
                            client = session.client.info.id,
                            "client took none of its replies in time; closing"
                        );
                        return;
                    }
                }
            }
            session
                .shared
                .stats
                .net_output_bytes
                .fetch_add(n, Ordering::Relaxed);
            session.out.clear();
        }
        if close {
            let _ = tokio::time::timeout(write_timeout, socket.stream.shutdown()).await;
            return;
        }
        if processed >= MAX_REQUESTS_PER_TURN {
            continue; // more complete requests may be buffered: serve them before reading
        }
        if inbuf.capacity() - inbuf.len() < READ_CHUNK / 4 {
            inbuf.reserve(READ_CHUNK);
        }
        let read = tokio::select! {
            biased;
            r = socket.stream.read_buf(&mut inbuf) => r,
            Some(message) = next_message(&mut session.client.pubsub) => {
                // Written with any others waiting, at the top of the loop.
                if let Some(reply) = cmd::pubsub::message_reply(message, session.client.protocol) {
                    session.push_reply(&reply);
                }
                continue;
            }
            _ = token.cancelled() => return,
        };
        match read {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                session
                    .shared
                    .stats
                    .net_input_bytes
                    .fetch_add(n as u64, Ordering::Relaxed);
                // New requests: they may follow writes that completed after the last barrier.
                session.barrier_passed = false;
                session.turn_now_ms = None;
            }
        }
    }
}

/// How one turn of a connection ended.
struct Turn {
    /// The connection is to be closed once the replies are written (QUIT, protocol error).
    close: bool,
    /// Requests handled.
    processed: usize,
}

/// Runs the complete requests buffered in `inbuf` (up to a turn's bounds) and waits for their
/// writes; `None` when the connection was killed or the node is stopping.
async fn run_turn(
    session: &mut Session,
    inbuf: &mut BytesMut,
    limits: &mut Limits,
    token: &CancellationToken,
) -> Option<Turn> {
    let mut close = false;
    let mut processed = 0;
    // Pipelined GETs: their keys' cache entries are fetched together, before the first
    // runs, instead of one cache miss after another as each runs.
    {
        let gets: SmallVec<[&[u8]; WARM_GETS]> =
            proto_resp::pipelined_get_keys(inbuf, WARM_GETS).collect();
        if gets.len() > 1 {
            let db = session.client.db;
            session.shared.keyspace.warm_reads(db, gets.into_iter());
        }
    }
    while processed < MAX_REQUESTS_PER_TURN && session.out.len() < OUT_HIGH_WATER {
        // Killed (CLIENT KILL) or shutting down: no further request of this client runs.
        if token.is_cancelled() {
            return None;
        }
        limits.unauthenticated = !session.client.authenticated;
        match decode_request(inbuf, limits) {
            Ok(Some(request)) => {
                processed += 1;
                if session.handle(request).await {
                    close = true;
                    break;
                }
                session.deliver();
            }
            Ok(None) => break,
            Err(e) => {
                debug!(client = session.client.info.id, error = %e, "protocol error; closing");
                session.flush_writes().await;
                // Under CLIENT REPLY OFF or SKIP Redis sends no error text either.
                let reply = Reply::error(format!("ERR {e}"));
                session.count_errors(&reply);
                if !session.client.silent() {
                    session.push_reply(&reply);
                }
                close = true;
                break;
            }
        }
    }
    session.flush_writes().await;
    Some(Turn { close, processed })
}

/// The next message for a connection's subscriptions (never, while it has none).
async fn next_message(pubsub: &mut Option<Subscription>) -> Option<Message> {
    match pubsub {
        Some(sub) => sub.next().await,
        None => std::future::pending().await,
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(sub) = self.client.pubsub.as_mut() {
            self.shared.pubsub.forget(sub);
        }
        if self.client.tracking.is_some() {
            self.shared.keyspace.tracking.disable(self.client.info.id);
        }
    }
}

impl Session {
    /// What a command of this connection runs against (`view`: inside EXEC, what the batch
    /// read for it).
    fn ctx<'a>(
        &'a mut self,
        spec: &'static cmd::CommandSpec,
        now_ms: u64,
        view: Option<&'a TxView>,
    ) -> Ctx<'a> {
        Ctx {
            shared: &self.shared,
            client: &mut self.client,
            now_ms,
            spec,
            out: &mut self.out,
            view,
        }
    }

    /// Sends the MONITOR line of a command this connection ran to every monitor.
    fn feed_monitors(&self, argv: &[bytes::Bytes]) {
        let line = cmd::pubsub::monitor_line(
            std::time::SystemTime::now(),
            self.client.db,
            &self.client.info.addr,
            argv,
        );
        self.shared.pubsub.feed_monitors(self.client.info.id, line);
    }

    /// Moves the messages waiting for this connection's subscriptions into its replies (up to
    /// the reply buffer's high-water mark; the rest wait in the subscriber's bounded queue).
    fn deliver(&mut self) {
        if let Some(sub) = self.client.pubsub.as_mut() {
            cmd::pubsub::drain_into(sub, self.client.protocol, &mut self.out, OUT_HIGH_WATER);
        }
    }

    fn push_reply(&mut self, reply: &Reply) {
        encode_reply(reply, self.client.protocol, &mut self.out);
    }

    fn push_error(&mut self, err: &RespError) {
        let reply = err.to_reply();
        self.count_errors(&reply);
        self.push_reply(&reply);
    }

    /// Counts the error replies in `reply` (itself, or those of an EXEC's array) for INFO.
    fn count_errors(&mut self, reply: &Reply) {
        match reply {
            Reply::Error(text) => self.tally.error(text),
            Reply::Array(items) => items.iter().for_each(|r| {
                if let Reply::Error(text) = r {
                    self.tally.error(text);
                }
            }),
            _ => {}
        }
    }

    /// The running command's reply, unless replies are switched off (CLIENT REPLY).
    fn answer(&mut self, reply: &Reply) {
        if !self.client.silent() {
            self.push_reply(reply);
        }
    }

    /// A command refused before it ran (unknown, wrong arity, not authenticated): its error,
    /// and inside MULTI the transaction is discarded at EXEC.
    fn refuse(&mut self, err: &RespError) {
        if let Some(multi) = self.client.multi.as_mut() {
            multi.failed = true;
        }
        self.answer_error(err);
    }

    /// EXEC: runs the queued commands in order; their writes go as one batch (one Raft
    /// entry), answered in one array. Returns true when the connection must close after it.
    async fn exec(&mut self) -> bool {
        let Some(multi) = self.client.multi.take() else {
            return false;
        };
        // CLIENT CACHING given before MULTI covers the transaction's reads, once.
        let caching = std::mem::take(&mut self.client.caching);
        let exec_started = ticks::now();
        let watched = std::mem::take(&mut self.client.watched);
        if multi.failed {
            self.tally.failed(cmd::index_of(
                cmd::lookup(b"exec").expect("EXEC is a command"),
            ));
            self.answer_error(&RespError::ExecAbort);
            return false;
        }
        // CLIENT PAUSE: decided once, before anything of the transaction runs (a pause the
        // transaction sets itself does not hold it back).
        // (A transaction of reads runs during CLIENT PAUSE WRITE, as in Redis.)
        let writes = multi.queued.iter().any(|argv| {
            cmd::lookup(&argv[0])
                .is_some_and(|s| s.is_write() || matches!(s.name, "wait" | "publish"))
        });
        if !self.pause_gate(writes).await {
            return true;
        }
        let now_ms = *self.turn_now_ms.get_or_insert_with(now_ms);
        // CLIENT TRACKING: the keys the transaction reads, remembered before and after it runs.
        let tracked: Vec<bytes::Bytes> =
            if cmd::tracking::remembers_reads(self.client.tracking.as_ref(), caching) {
                multi
                    .queued
                    .iter()
                    .filter_map(|argv| Some((cmd::lookup(&argv[0]).filter(|s| s.is_read())?, argv)))
                    .flat_map(|(spec, argv)| spec.key_args(argv).cloned().collect::<Vec<_>>())
                    .collect()
            } else {
                Vec::new()
            };
        if !tracked.is_empty() {
            self.shared
                .keyspace
                .tracking
                .remember(self.client.info.id, tracked.iter());
        }
        // MONITOR shows the queued commands once they ran (not when WATCH aborts them).
        let monitored: Vec<Vec<bytes::Bytes>> = if self.shared.pubsub.monitoring() {
            multi
                .queued
                .iter()
                .filter(|argv| cmd::lookup(&argv[0]).is_some_and(|s| s.flags & flags::ADMIN == 0))
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        // Restored if WATCH aborts the transaction (SELECT inside it then did not happen).
        let db_before = self.client.db;
        let mut replies: Vec<Option<Reply>> = Vec::with_capacity(multi.queued.len());
        let mut ops = Vec::new();
        let mut op_slots = Vec::new();
        let mut deferred = Vec::new();
        let mut close = false;
        // The command of each reply slot, for INFO commandstats.
        let mut slot_cmds = Vec::with_capacity(multi.queued.len());
        for argv in multi.queued {
            let Some(spec) = argv.first().and_then(|name| cmd::lookup(name)) else {
                continue; // looked up when queued
            };
            let index = cmd::index_of(spec);
            self.tally.call(index);
            slot_cmds.push(index);
            if spec.is_read() && !matches!(spec.name, "get" | "mget") {
                // Reads its keys (or counts them) inside the batch; the command then runs on
                // what was read there.
                let db = self.client.db;
                let keys: Vec<_> = spec.key_args(&argv).cloned().collect();
                let counts = spec.name == "dbsize";
                ops.extend(keys.iter().map(|key| Op::ReadKey {
                    db,
                    key: key.clone(),
                }));
                if counts {
                    ops.push(Op::CountKeys { db });
                }
                let mut args = Args::new(argv);
                args.next_opt();
                op_slots.push((
                    replies.len(),
                    Take::Read(QueuedRead {
                        spec,
                        args,
                        keys,
                        counts,
                    }),
                ));
                replies.push(None);
                continue;
            }
            let mut args = Args::new(argv);
            args.next_opt();
            if spec.name == "mget" {
                // MGET reads inside the batch too: one read per key, answered as one array.
                let keys = args.rest();
                op_slots.push((replies.len(), Take::Array(keys.len())));
                for key in keys {
                    ops.push(Op::GetEx {
                        db: self.client.db,
                        key,
                        expire: ExpireSet::Keep,
                    });
                }
                replies.push(None);
                continue;
            }
            // Connection and server commands run only once the batch went through (not at all
            // when WATCH aborts it); SELECT runs now, as it decides the database of what follows.
            if !spec.is_write() && !matches!(spec.name, "get" | "select") {
                deferred.push((replies.len(), spec, args));
                replies.push(None);
                continue;
            }
            match self.exec_one(spec, &mut args, now_ms, &mut close) {
                Ok(op) => {
                    op_slots.push((replies.len(), Take::One));
                    ops.push(op);
                    replies.push(None);
                }
                Err(reply) => replies.push(Some(reply)),
            }
        }
        let watching = !watched.is_empty();
        if watching {
            // Checked where the batch lands in the log; the rest is skipped if a key changed.
            let churn = watched.iter().map(|w| w.churn).collect();
            let keys = watched
                .into_iter()
                .map(|w| (w.db, w.key, w.fingerprint))
                .collect();
            ops.insert(
                0,
                Op::UnchangedSince {
                    keys,
                    churn,
                    region: self.shared.keyspace.region_id(),
                    then: ops.len() as u32,
                },
            );
        }
        // (A transaction may have no op at all, e.g. OBJECT HELP alone: its reads still run.)
        let submitted = if ops.is_empty() {
            Ok(Vec::new())
        } else {
            self.barrier_passed = false;
            self.turn_now_ms = None;
            let started = ticks::now();
            let submitted = self.shared.writer.submit(ops, None).await;
            self.tally
                .write_batch(ticks::to_micros(ticks::since(started)));
            match submitted {
                Ok((mut results, index)) => {
                    if index > 0 {
                        self.client.last_write_index = index;
                    }
                    // The watch check's own result comes first (removed whether it passed).
                    if watching && !results.is_empty() && results.remove(0) == OpResult::Nil {
                        self.client.db = db_before;
                        self.client.info.db.store(db_before, Ordering::Relaxed);
                        self.answer(&Reply::NullArray);
                        return close;
                    }
                    Ok(results)
                }
                Err(e) => Err(RespError::from(e).to_reply()),
            }
        };
        match submitted {
            Ok(results) => {
                for argv in &monitored {
                    self.feed_monitors(argv);
                }
                let mut results = results.into_iter();
                let mut reads = Vec::new();
                for (slot, take) in op_slots {
                    replies[slot] = Some(match take {
                        Take::One => {
                            let result = results.next().unwrap_or(OpResult::Nil);
                            op_reply(result)
                        }
                        Take::Array(n) => {
                            Reply::Array(results.by_ref().take(n).map(op_reply).collect())
                        }
                        Take::Read(read) => {
                            let n = read.keys.len() + usize::from(read.counts);
                            reads.push((slot, read, results.by_ref().take(n).collect()));
                            continue;
                        }
                    });
                }
                for (slot, read, read_results) in reads {
                    replies[slot] = Some(self.exec_read(read, read_results, now_ms));
                }
            }
            Err(err) => {
                for (slot, _) in op_slots {
                    replies[slot] = Some(err.clone());
                }
            }
        }
        for (slot, spec, mut args) in deferred {
            replies[slot] = Some(match self.exec_one(spec, &mut args, now_ms, &mut close) {
                Ok(_) => RespError::Other("not supported inside MULTI").to_reply(),
                Err(reply) => reply,
            });
        }
        let replies = Reply::Array(
            replies
                .into_iter()
                .map(|r| r.unwrap_or(Reply::Null))
                .collect(),
        );
        self.count_errors(&replies);
        if !tracked.is_empty() {
            self.shared
                .keyspace
                .tracking
                .remember(self.client.info.id, tracked.iter());
        }
        if let Reply::Array(items) = &replies {
            for (item, &cmd) in items.iter().zip(&slot_cmds) {
                if matches!(item, Reply::Error(_)) {
                    self.tally.failed(cmd);
                }
            }
        }
        // Each queued command's latency is the transaction's (they are answered together).
        let took = ticks::since(exec_started);
        for &cmd in &slot_cmds {
            self.tally.latency(cmd, took);
        }
        // Messages its PUBLISHes delivered to this connection go first, as in Redis (for a
        // tracking client, after: see `run`).
        if self.client.tracking.is_none() {
            self.deliver();
        }
        self.answer(&replies);
        close
    }

    /// Runs a queued read inside EXEC on what the batch read for it (`results`: one per key,
    /// then the key count for DBSIZE).
    fn exec_read(&mut self, mut read: QueuedRead, results: Vec<OpResult>, now_ms: u64) -> Reply {
        let mut view = TxView::default();
        let mut results = results.into_iter();
        for key in read.keys {
            let value = match results.next() {
                Some(OpResult::Bulk(encoded)) => StoredValue::from_stored(encoded),
                Some(OpResult::Err(e)) => {
                    return op_reply(OpResult::Err(e));
                }
                _ => None,
            };
            view.values.insert(key, value);
        }
        if read.counts {
            view.count = match results.next() {
                Some(OpResult::Int(n)) => Some(n.max(0) as u64),
                Some(OpResult::Err(e)) => {
                    return op_reply(OpResult::Err(e));
                }
                _ => None,
            };
        }
        let mark = self.out.len();
        let mut ctx = self.ctx(read.spec, now_ms, Some(&view));
        match (read.spec.handler)(&mut ctx, &mut read.args) {
            Ok(Outcome::Reply(reply)) => reply,
            Ok(_) => {
                // Reads answer a reply; anything else would not be the batch's view.
                self.out.truncate(mark);
                RespError::Other("not supported inside MULTI").to_reply()
            }
            Err(e) => e.to_reply(),
        }
    }

    /// Runs one queued command inside EXEC: the op it adds to the batch (a write, or a GET
    /// read inside the batch), or its reply.
    fn exec_one(
        &mut self,
        spec: &'static cmd::CommandSpec,
        args: &mut Args,
        now_ms: u64,
        close: &mut bool,
    ) -> Result<Op, Reply> {
        if spec.name == "monitor" {
            return Err(
                RespError::Other("MONITOR isn't allowed for DENY BLOCKING client").to_reply(),
            );
        }
        let mark = self.out.len();
        let mut ctx = self.ctx(spec, now_ms, None);
        let outcome = if spec.name == "get" {
            // A GET reads inside the batch, between the transaction's writes.
            args.next_bytes().map(|key| {
                Outcome::Write(Op::GetEx {
                    db: ctx.client.db,
                    key,
                    expire: ExpireSet::Keep,
                })
            })
        } else {
            (spec.handler)(&mut ctx, args)
        };
        match outcome {
            Ok(Outcome::Write(op)) => Ok(op),
            Ok(Outcome::Reply(reply)) => Err(reply),
            Ok(Outcome::Close(reply)) => {
                *close = true;
                Err(reply)
            }
            // Refused while queuing (SHUTDOWN is not allowed inside MULTI).
            Ok(Outcome::Hangup) => {
                Err(RespError::Other("Command not allowed inside a transaction").to_reply())
            }
            // Commands that wait (WAIT, FLUSHALL across regions, MERIDIAN NODE …) would run
            // outside the batch: not run (the future does nothing undriven).
            Ok(Outcome::Async(_)) => Err(RespError::Message(format!(
                "'{}' cannot run inside MULTI on this node",
                spec.name
            ))
            .to_reply()),
            // Only reads answer in place, and reads are not queued.
            Ok(Outcome::Written) => {
                self.out.truncate(mark);
                Err(RespError::Other("not supported inside MULTI").to_reply())
            }
            Err(e) => Err(e.to_reply()),
        }
    }

    /// The running command's error, unless replies are switched off (counted either way).
    fn answer_error(&mut self, err: &RespError) {
        if self.client.silent() {
            self.count_errors(&err.to_reply());
        } else {
            self.push_error(err);
        }
    }

    /// Runs one request; returns true when the connection must close after the replies.
    async fn handle(&mut self, request: Request) -> bool {
        let close = self.run(request).await;
        self.client.command_done();
        close
    }

    async fn run(&mut self, request: Request) -> bool {
        let mut args = Args::new(request.args);
        let Some(name) = args.next_opt() else {
            return false;
        };
        let Some(spec) = cmd::lookup(&name) else {
            self.flush_writes().await;
            let mut all = vec![name];
            all.extend(args.rest());
            self.refuse(&cmd::unknown_command(&all));
            return false;
        };
        let index = cmd::index_of(spec);
        let checked = cmd::check_arity(spec, args.remaining() + 1).and_then(|()| {
            cmd::check_subcommand(spec, args.remaining_args().first(), args.remaining() + 1)
        });
        if let Err(e) = checked {
            self.flush_writes().await;
            // (As Redis: an unknown subcommand counts against no command.)
            if !matches!(e, RespError::UnknownSubcommand { .. }) {
                self.tally.rejected(index);
            }
            if spec.name == "exec" {
                // As Redis: a refused EXEC ends the transaction and its WATCHes, and says so
                // as EXECABORT even outside MULTI.
                self.client.multi = None;
                self.client.watched.clear();
                let why = e.to_string();
                let why = why.strip_prefix("ERR ").unwrap_or(&why).to_string();
                self.answer_error(&RespError::ExecAbortBecause(why));
                return false;
            }
            self.refuse(&e);
            return false;
        }
        if !self.client.authenticated && spec.flags & flags::NOAUTH == 0 {
            self.flush_writes().await;
            self.tally.rejected(index);
            self.refuse(&RespError::NoAuth);
            return false;
        }
        // RESP2 with subscriptions: the subscribed mode, as in Redis.
        if self.client.protocol == ProtocolVersion::Resp2
            && self.client.subscriptions() > 0
            && !cmd::pubsub::allowed_while_subscribed(spec.name)
        {
            self.flush_writes().await;
            self.tally.rejected(index);
            self.refuse(&RespError::Message(format!(
                "Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET \
                 are allowed in this context",
                spec.name
            )));
            return false;
        }
        // MONITOR: the command as received (shown once it ran, with the database it left).
        // (ADMIN commands are not shown, as in Redis: CONFIG SET requirepass would be.)
        let monitored =
            (spec.flags & flags::ADMIN == 0 && self.shared.pubsub.monitoring()).then(|| {
                let mut argv = vec![name.clone()];
                argv.extend_from_slice(args.remaining_args());
                argv
            });
        if let Some(multi) = self.client.multi.as_mut() {
            match spec.name {
                "exec" => {
                    self.tally.call(index);
                    self.client.info.last_cmd.store(index, Ordering::Relaxed);
                    let started = ticks::now();
                    let close = self.exec().await;
                    let took = ticks::since(started);
                    self.tally.time_call(index, took);
                    self.sample_latency(spec, took, now_ms());
                    if let Some(argv) = monitored {
                        self.feed_monitors(&argv);
                    }
                    return close;
                }
                "discard" | "multi" | "watch" | "quit" | "reset" => {}
                _ => {
                    let mut argv = vec![name];
                    argv.extend(args.rest());
                    match cmd::transaction::queue(multi, spec, argv) {
                        Ok(reply) => self.answer(&reply),
                        Err(e) => {
                            self.tally.rejected(index);
                            self.answer_error(&e);
                        }
                    }
                    return false;
                }
            }
        }
        // CLIENT PAUSE: the command waits (WAIT counts as a write: its acknowledgements would
        // be held back in Redis).
        let write_like = spec.is_write() || matches!(spec.name, "wait" | "publish");
        if self.shared.clients.pause.holds(write_like) {
            self.flush_writes().await; // waits for the pause itself: its ops are writes
            if !self.pause_gate(write_like).await {
                return true;
            }
        }
        if !spec.is_write() {
            // Reads and connection commands see every earlier write of this pipeline.
            self.flush_writes().await;
        }
        if (spec.is_read() || spec.name == "watch")
            && !self.barrier_passed
            && !self.client.readonly
            && self.shared.config.read_consistency == ReadConsistency::Linearizable
        {
            match self.shared.raft.read_barrier().await {
                Ok(()) => self.barrier_passed = true,
                Err(e) => {
                    if !self.shared.config.stale_reads_on_quorum_loss {
                        self.tally.rejected(index);
                        self.answer_error(&RespError::from(e));
                        return false;
                    }
                }
            }
        }
        self.tally.call(index);
        // CLIENT LIST's `cmd=`: the command running or last run (Redis sets it before running).
        self.client.info.last_cmd.store(index, Ordering::Relaxed);
        let now_ms = *self.turn_now_ms.get_or_insert_with(now_ms);
        let mark = self.out.len();
        // SLOWLOG times reads and server commands that are not flagged fast (see slowlog.rs).
        let timed =
            (!spec.is_write() && spec.flags & flags::FAST == 0 && self.shared.slowlog.enabled())
                .then(|| {
                    let mut argv = vec![name.clone()];
                    argv.extend_from_slice(args.remaining_args());
                    argv
                });
        // CLIENT TRACKING: the keys of a read are remembered, to be told when they change.
        let tracked: Option<Vec<bytes::Bytes>> = (spec.is_read()
            && cmd::tracking::remembers_reads(self.client.tracking.as_ref(), self.client.caching))
        .then(|| {
            let mut argv = vec![name.clone()];
            argv.extend_from_slice(args.remaining_args());
            spec.key_args(&argv).cloned().collect()
        });
        // CLIENT CACHING applies to the next command only (MULTI passes it to the EXEC, which
        // takes it; DISCARD drops it).
        if !matches!(spec.name, "client" | "multi") {
            self.client.caching = false;
        }
        // Remembered before the read too: a change applied while it reads is told (after the
        // reply), and the read may not see the change yet.
        if let Some(keys) = &tracked {
            self.shared
                .keyspace
                .tracking
                .remember(self.client.info.id, keys.iter());
        }
        let mut ctx = self.ctx(spec, now_ms, None);
        let started = ticks::now();
        let outcome = (spec.handler)(&mut ctx, &mut args);
        // And after it: a change told before the read finished must not end its tracking.
        if let Some(keys) = tracked {
            self.shared
                .keyspace
                .tracking
                .remember(self.client.info.id, keys.iter());
        }
        let took = ticks::since(started);
        // (A write's latency is its batch's, recorded when the batch is answered; a command
        // that waits, once it is done.)
        if matches!(outcome, Ok(Outcome::Write(_) | Outcome::Async(_))) {
            self.tally.time(index, took);
        } else {
            self.tally.time_call(index, took);
        }
        self.sample_latency(spec, took, now_ms);
        if outcome.is_err() {
            self.tally.failed(index);
        }
        if let Some(argv) = timed {
            let micros = ticks::to_micros(took);
            if micros >= self.shared.slowlog.slower_than().max(0) as u64 {
                let name = self.client.info.names().name.clone().unwrap_or_default();
                let addr = self.client.info.addr.to_string();
                let argv = cmd::redact(argv);
                self.shared.slowlog.record(micros, &argv, addr, name);
            }
        }
        let close = match outcome {
            Ok(Outcome::Write(op)) => {
                // Pipelined writes go in batches of at most MAX_REPLICATED_WRITE bytes: only a
                // single command (or a transaction) that large is refused.
                let bytes = if self.shared.raft.endpoint.is_some() {
                    op.approx_size()
                } else {
                    0
                };
                if !self.pending.is_empty() && self.pending_bytes + bytes > MAX_REPLICATED_WRITE {
                    self.flush_writes().await;
                }
                if self.client.silent() {
                    self.silent_pending.push(self.pending.len());
                }
                self.pending_bytes += bytes;
                self.pending.push(op);
                self.pending_cmds.push(index);
                if self.pending.len() >= MAX_OPS_PER_BATCH {
                    self.flush_writes().await;
                }
                false
            }
            Ok(Outcome::Reply(reply)) => {
                self.flush_writes().await;
                // Messages that arrived meanwhile (a connection's own PUBLISH to a channel it
                // subscribed) go before the reply, as in Redis; but not for a tracking client,
                // whose invalidations must follow the reply they may concern (before it, the
                // client would cache the older value the reply carries).
                if self.client.tracking.is_none() {
                    self.deliver();
                }
                self.answer(&reply);
                false
            }
            // Only reads answer this way, and reads ran after the pending writes' replies.
            Ok(Outcome::Written) => {
                if self.client.silent() {
                    self.out.truncate(mark);
                }
                false
            }
            Ok(Outcome::Async(future)) => {
                self.flush_writes().await;
                let reply = future.await;
                self.tally.latency(index, ticks::since(started));
                // It may have written or waited: later commands re-check.
                self.barrier_passed = false;
                self.turn_now_ms = None;
                self.answer(&reply);
                false
            }
            Ok(Outcome::Close(reply)) => {
                self.flush_writes().await;
                self.answer(&reply);
                true
            }
            Ok(Outcome::Hangup) => {
                self.flush_writes().await;
                true
            }
            Err(e) => {
                self.flush_writes().await;
                self.answer_error(&e);
                false
            }
        };
        if let Some(argv) = monitored {
            self.feed_monitors(&argv);
        }
        close
    }

    /// Waits while CLIENT PAUSE holds back a command of this kind (a write, or not); false
    /// when the connection was killed (or the node stops) meanwhile.
    async fn pause_gate(&self, write: bool) -> bool {
        let pause = &self.shared.clients.pause;
        !pause.holds(write) || pause.wait(write, &self.client.info.kill).await
    }

    /// Submits the pending writes as one batch and appends their replies.
    async fn flush_writes(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        // CLIENT PAUSE WRITE answered OK: no write of this connection may land until it ends,
        // including those it accepted before (none was answered yet).
        if !self.pause_gate(true).await {
            // Killed while waiting: the connection closes; its writes are dropped unapplied.
            self.pending.clear();
            self.pending_cmds.clear();
            self.pending_bytes = 0;
            self.silent_pending.clear();
            return;
        }
        let ops = std::mem::take(&mut self.pending);
        let cmds = std::mem::take(&mut self.pending_cmds);
        self.pending_bytes = 0;
        let silent = std::mem::take(&mut self.silent_pending);
        let count = ops.len();
        // Later reads must see these writes (on a follower, through a new read barrier), and
        // their expiry decisions use a clock read after them.
        self.barrier_passed = false;
        self.turn_now_ms = None;
        // With nothing of this connection's unsent and every reply to be sent, the replies
        // are the next bytes on the wire whoever writes them: the proposer may, as soon as
        // the writes are applied (this task is blocked here meanwhile).
        // (Not for a RESP3 subscriber: the messages its writes publish, keyspace events of
        // its own subscriptions included, go before the replies, as in Redis.)
        let subscriber = self.client.subscriptions() > 0;
        let direct =
            (self.out.is_empty() && silent.is_empty() && !self.client.silent() && !subscriber)
                .then(|| DirectReply::new(self.lease.clone(), self.client.protocol));
        let started = ticks::now();
        let submitted = self.shared.writer.submit(ops, direct).await;
        let sent_directly = self.lease.take_sent();
        let batch_ticks = ticks::since(started);
        let micros = ticks::to_micros(batch_ticks);
        self.tally.write_batch(micros);
        if self.shared.latency.threshold_ms() > 0 {
            self.shared
                .latency
                .sample("write-batch", micros / 1000, now_ms() / 1000);
        }
        // Each write's share of the batch's time, for INFO commandstats.
        let share = batch_ticks / count.max(1) as u64;
        for &cmd in &cmds {
            self.tally.time(cmd, share);
            self.tally.latency(cmd, batch_ticks);
        }
        match submitted {
            Ok((results, index)) => {
                if index > 0 {
                    self.client.last_write_index = index;
                }
                if subscriber {
                    // Published when the writes were applied, before their results came back.
                    self.deliver();
                }
                for (i, result) in results.into_iter().enumerate() {
                    let unsent = !sent_directly.all && !silent.contains(&i);
                    // A reply already sent (or switched off) is built only to count its error.
                    if !unsent && !matches!(result, OpResult::Err(_)) {
                        continue;
                    }
                    let reply = op_reply(result);
                    if matches!(reply, Reply::Error(_)) {
                        self.count_errors(&reply);
                        if let Some(&cmd) = cmds.get(i) {
                            self.tally.failed(cmd);
                        }
                    }
                    if unsent {
                        self.push_reply(&reply);
                    }
                }
                if !sent_directly.all && sent_directly.bytes > 0 {
                    // The same bytes as those just encoded (`out` was empty): drop what went.
                    let gone = sent_directly.bytes.min(self.out.len());
                    bytes::Buf::advance(&mut self.out, gone);
                }
                self.shared
                    .stats
                    .net_output_bytes
                    .fetch_add(sent_directly.bytes as u64, Ordering::Relaxed);
            }
            Err(e) => {
                let err = RespError::from(e);
                for &cmd in &cmds {
                    self.tally.failed(cmd);
                }
                for i in 0..count {
                    if !silent.contains(&i) {
                        self.push_error(&err);
                    }
                }
            }
        }
    }

    /// Offers a command's running time to the latency monitor (when it is on).
    fn sample_latency(&self, spec: &cmd::CommandSpec, took: u64, now_ms: u64) {
        if self.shared.latency.threshold_ms() == 0 {
            return;
        }
        let event = if spec.flags & flags::FAST != 0 {
            "fast-command"
        } else {
            "command"
        };
        self.shared
            .latency
            .sample(event, ticks::to_micros(took) / 1000, now_ms / 1000);
    }

    /// Publishes this turn's counters.
    fn finish_turn(&mut self) {
        self.tally.flush_into(&self.shared.stats);
        let info = &self.client.info;
        info.last_active_ms
            .store(info.created.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// Where an EXEC's reply comes from among the batch's results.
enum Take {
    /// One op's result.
    One,
    /// The next `n` results as one array (MGET).
    Array(usize),
    /// A read command, run on the results its reads produced.
    Read(QueuedRead),
}

/// A read queued inside MULTI: the command, its arguments after the name, the keys it reads
/// inside the batch, and whether it also counts the database's keys (DBSIZE).
struct QueuedRead {
    spec: &'static cmd::CommandSpec,
    args: Args,
    keys: Vec<bytes::Bytes>,
    counts: bool,
}

//! Server commands: COMMAND, CONFIG, INFO, DBSIZE, FLUSHDB/FLUSHALL, TIME, LASTSAVE, SAVE, WAIT.

use bytes::Bytes;
use proto_resp::Reply;

use super::args::Keyword;
use super::{Args, CommandSpec, Ctx, Outcome, COMMANDS};
use crate::error::RespError;
use crate::keyspace::DATABASES;
use crate::op::Op;

fn bulk(text: impl Into<String>) -> Reply {
    Reply::Bulk(Bytes::from(text.into()))
}

fn status(text: &'static str) -> Reply {
    Reply::Status(Bytes::from_static(text.as_bytes()))
}

/// The COMMAND INFO entry of one command.
fn command_info(spec: &CommandSpec) -> Reply {
    Reply::Array(vec![
        bulk(spec.name),
        Reply::Integer(i64::from(spec.arity)),
        Reply::Set(spec.flag_names().into_iter().map(status).collect()),
        Reply::Integer(i64::from(spec.keys.0)),
        Reply::Integer(i64::from(spec.keys.1)),
        Reply::Integer(i64::from(spec.keys.2)),
        Reply::Set(Vec::new()),
        Reply::Set(Vec::new()),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
    ])
}

/// The COMMAND DOCS entry of one command.
fn command_docs(spec: &CommandSpec) -> Reply {
    Reply::Map(vec![
        (bulk("summary"), bulk(spec.summary)),
        (bulk("since"), bulk("1.0.0")),
        (bulk("group"), bulk(spec.group)),
    ])
}

/// COMMAND [COUNT | INFO name… | DOCS [name…] | LIST | HELP]
pub fn command(_ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let Some(sub) = args.next_opt() else {
        return Ok(Reply::Array(COMMANDS.iter().map(command_info).collect()).into());
    };
    let reply = match Keyword::new(&sub).as_str() {
        "COUNT" => Reply::Integer(COMMANDS.len() as i64),
        "LIST" => {
            // COMMAND LIST [FILTERBY MODULE name | ACLCAT category | PATTERN pattern]
            let filter: Option<Option<bytes::Bytes>> = match args.remaining() {
                0 => None,
                3 => {
                    let by = Keyword::new(&args.next_bytes()?);
                    let kind = Keyword::new(&args.next_bytes()?);
                    let value = args.next_bytes()?;
                    if by.as_str() != "FILTERBY" {
                        return Err(RespError::Syntax);
                    }
                    match kind.as_str() {
                        "PATTERN" => Some(Some(value)),
                        // No modules, and no ACL categories kept per command here.
                        "MODULE" | "ACLCAT" => Some(None),
                        _ => return Err(RespError::Syntax),
                    }
                }
                _ => return Err(RespError::Syntax),
            };
            Reply::Array(
                COMMANDS
                    .iter()
                    .filter(|c| match &filter {
                        None => true,
                        Some(None) => false,
                        Some(Some(pattern)) => {
                            crate::keyspace::glob_match(pattern, c.name.as_bytes())
                        }
                    })
                    .map(|c| bulk(c.name))
                    .collect(),
            )
        }
        "INFO" => {
            let names = args.rest();
            if names.is_empty() {
                Reply::Array(COMMANDS.iter().map(command_info).collect())
            } else {
                Reply::Array(
                    names
                        .iter()
                        .map(|n| super::lookup(n).map_or(Reply::Null, command_info))
                        .collect(),
                )
            }
        }
        "DOCS" => {
            let names = args.rest();
            let specs: Vec<&CommandSpec> = if names.is_empty() {
                COMMANDS.iter().collect()
            } else {
                names.iter().filter_map(|n| super::lookup(n)).collect()
            };
            Reply::Map(
                specs
                    .into_iter()
                    .map(|c| (bulk(c.name), command_docs(c)))
                    .collect(),
            )
        }
        "GETKEYS" => {
            let argv = args.rest();
            let spec =
                super::lookup(&argv[0]).ok_or(RespError::Other("Invalid command specified"))?;
            let argc = argv.len() as i32;
            if (spec.arity > 0 && argc != spec.arity) || (spec.arity < 0 && argc < -spec.arity) {
                return Err(RespError::Other(
                    "Invalid number of arguments specified for command",
                ));
            }
            if spec.keys.0 == 0 {
                return Err(RespError::Other("The command has no key arguments"));
            }
            Reply::Array(spec.key_args(&argv).cloned().map(Reply::Bulk).collect())
        }
        "HELP" => super::help_reply(&[
            "COMMAND <subcommand>",
            "COUNT",
            "DOCS [<command-name> ...]",
            "INFO [<command-name> ...]",
            "LIST",
            "GETKEYS <full-command>",
        ]),
        _ => return Err(RespError::unknown_subcommand("COMMAND", &sub)),
    };
    Ok(reply.into())
}

/// CONFIG GET pattern… | SET param value… | RESETSTAT | REWRITE | HELP
pub fn config(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let sub = args.next_bytes()?;
    let reply = match Keyword::new(&sub).as_str() {
        "GET" => {
            if args.remaining() == 0 {
                return Err(RespError::Message(
                    "wrong number of arguments for 'config|get' command".into(),
                ));
            }
            let patterns = args.rest();
            let mut out = Vec::new();
            for (name, value) in ctx.shared.config_params() {
                let Some(asked) = patterns.iter().find(|p| {
                    crate::keyspace::glob_match(&p.to_ascii_lowercase(), name.as_bytes())
                }) else {
                    continue;
                };
                // As Redis: a parameter asked for by its name (no glob characters) is named
                // as the client wrote it.
                let shown = if asked.iter().any(|c| b"*?[".contains(c)) {
                    Bytes::from_static(name.as_bytes())
                } else {
                    asked.clone()
                };
                out.push((Reply::Bulk(shown), bulk(value)));
            }
            Reply::Map(out)
        }
        "SET" => {
            if args.remaining() < 2 {
                return Err(RespError::Message(
                    "wrong number of arguments for 'config|set' command".into(),
                ));
            }
            if args.remaining() % 2 != 0 {
                return Err(RespError::Syntax);
            }
            // All or nothing, as in Redis: every parameter is checked before any changes.
            let mut names: Vec<String> = Vec::new();
            let mut changes = Vec::new();
            while let Some(name) = args.next_opt() {
                let value = args.next_bytes()?;
                let name = String::from_utf8_lossy(&name).to_ascii_lowercase();
                if names.contains(&name) {
                    return Err(RespError::Message(format!(
                        "CONFIG SET failed (possibly related to argument '{name}') - duplicate parameter"
                    )));
                }
                changes.push(
                    ctx.shared
                        .config_check(&name, &String::from_utf8_lossy(&value))?,
                );
                names.push(name);
            }
            for change in changes {
                ctx.shared.config_apply(change);
            }
            Reply::ok()
        }
        "RESETSTAT" => {
            ctx.shared.stats.reset();
            Reply::ok()
        }
        "REWRITE" => {
            return Err(RespError::Other(
                "CONFIG REWRITE is not supported: edit the TOML config file",
            ))
        }
        "HELP" => super::help_reply(&[
            "CONFIG <subcommand>",
            "GET <pattern>",
            "SET <directive> <value>",
            "RESETSTAT",
        ]),
        _ => return Err(RespError::unknown_subcommand("CONFIG", &sub)),
    };
    Ok(reply.into())
}

/// INFO [section …]
pub fn info(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let sections: Vec<String> = args
        .rest()
        .iter()
        .map(|s| String::from_utf8_lossy(s).to_ascii_lowercase())
        .collect();
    Ok(Reply::Verbatim(Bytes::from(ctx.shared.info_text(&sections))).into())
}

/// DBSIZE
pub fn dbsize(ctx: &mut Ctx<'_>, _args: &mut Args) -> Result<Outcome, RespError> {
    Ok(Reply::Integer(ctx.dbsize()? as i64).into())
}

fn flush_mode(args: &mut Args) -> Result<(), RespError> {
    if let Some(word) = args.next_keyword() {
        if !matches!(word.as_str(), "ASYNC" | "SYNC") {
            return Err(RespError::Syntax);
        }
    }
    args.finish()
}

/// FLUSHDB [ASYNC|SYNC]
pub fn flushdb(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    flush_mode(args)?;
    if ctx.shared.keyspace.keeps_tombstones() {
        return Ok(flush_everywhere(ctx, vec![ctx.client.db]));
    }
    Ok(Outcome::Write(Op::FlushDb { db: ctx.client.db }))
}

/// FLUSHALL [ASYNC|SYNC]
pub fn flushall(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    flush_mode(args)?;
    if ctx.shared.keyspace.keeps_tombstones() {
        return Ok(flush_everywhere(ctx, (0..DATABASES as u8).collect()));
    }
    Ok(Outcome::Write(Op::FlushAll))
}

/// Keys deleted per proposal by a flush with other regions.
const FLUSH_PAGE: usize = 1000;

/// FLUSHDB / FLUSHALL when other regions exist: every key of `dbs` is deleted through the
/// ordinary DEL path, a page at a time, so the deletes replicate as tombstones. Every region
/// then drops the same keys, and what another region wrote concurrently (with a later stamp)
/// survives, exactly as for DEL. (A region-local wipe would let the other regions' copies, and
/// any resync, bring the keys back.)
fn flush_everywhere(ctx: &Ctx<'_>, dbs: Vec<u8>) -> Outcome {
    let raft = ctx.shared.raft.clone();
    let keyspace = ctx.shared.keyspace.clone();
    Outcome::Async(Box::pin(async move {
        for db in dbs {
            let mut after: Option<Bytes> = None;
            loop {
                let page = keyspace.scan(db, after.as_deref(), FLUSH_PAGE, crate::write::now_ms());
                let (found, last) = match page {
                    Ok(page) => page,
                    Err(e) => return RespError::from(crate::write::WriteError::from(e)).to_reply(),
                };
                if !found.is_empty() {
                    let keys = found.into_iter().map(|(k, _)| k).collect();
                    if let Err(e) = raft.write(vec![Op::Del { db, keys }], None).await {
                        return RespError::from(e).to_reply();
                    }
                }
                match last {
                    Some(k) => after = Some(k),
                    None => break,
                }
            }
        }
        Reply::ok()
    }))
}

/// TIME
pub fn time(_ctx: &mut Ctx<'_>, _args: &mut Args) -> Result<Outcome, RespError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Ok(Reply::Array(vec![
        bulk(now.as_secs().to_string()),
        bulk(now.subsec_micros().to_string()),
    ])
    .into())
}

/// LASTSAVE
pub fn lastsave(ctx: &mut Ctx<'_>, _args: &mut Args) -> Result<Outcome, RespError> {
    Ok(Reply::Integer(ctx.shared.last_sync_unix() as i64).into())
}

/// LATENCY LATEST | HISTORY event | RESET [event ...] | DOCTOR | HISTOGRAM [command ...] | HELP
pub fn latency(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let sub = args.next_bytes()?;
    let monitor = &ctx.shared.latency;
    let reply = match Keyword::new(&sub).as_str() {
        "LATEST" => Reply::Array(
            monitor
                .events()
                .into_iter()
                .filter_map(|(name, s)| {
                    let (time, last) = *s.samples.back()?;
                    Some(Reply::Array(vec![
                        Reply::Bulk(Bytes::from_static(name.as_bytes())),
                        Reply::Integer(time as i64),
                        Reply::Integer(last as i64),
                        Reply::Integer(s.max as i64),
                    ]))
                })
                .collect(),
        ),
        "HISTORY" => {
            let event = args.next_bytes()?;
            Reply::Array(monitor.history(&event).map_or_else(Vec::new, |s| {
                s.samples
                    .into_iter()
                    .map(|(time, ms)| {
                        Reply::Array(vec![Reply::Integer(time as i64), Reply::Integer(ms as i64)])
                    })
                    .collect()
            }))
        }
        "RESET" => {
            let names: Vec<Bytes> = args.rest();
            let names: Vec<&[u8]> = names.iter().map(|n| &n[..]).collect();
            Reply::Integer(monitor.reset(&names) as i64)
        }
        "DOCTOR" => Reply::Verbatim(Bytes::from(monitor.doctor())),
        "HISTOGRAM" => {
            let names: Vec<Bytes> = args.rest();
            let mut out = Vec::new();
            for (spec, c) in COMMANDS.iter().zip(&ctx.shared.stats.commands) {
                let named = names.is_empty()
                    || names
                        .iter()
                        .any(|n| n.eq_ignore_ascii_case(spec.name.as_bytes()));
                let hist = c.histogram();
                let calls: u64 = hist.iter().sum();
                if !named || calls == 0 {
                    continue;
                }
                out.push((
                    Reply::Bulk(Bytes::from_static(spec.name.as_bytes())),
                    Reply::Map(vec![
                        (
                            Reply::Bulk(Bytes::from_static(b"calls")),
                            Reply::Integer(calls as i64),
                        ),
                        (
                            Reply::Bulk(Bytes::from_static(b"histogram_usec")),
                            Reply::Map(power_of_two_histogram(&hist)),
                        ),
                    ]),
                ));
            }
            Reply::Map(out)
        }
        "GRAPH" => {
            return Err(RespError::Message(format!(
                "LATENCY {} is not implemented by Meridian (LATENCY HISTORY gives the samples)",
                String::from_utf8_lossy(&sub).to_ascii_uppercase()
            )))
        }
        "HELP" => super::help_reply(&[
            "LATENCY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "DOCTOR",
            "    Return a human readable latency analysis report.",
            "HISTORY <event>",
            "    Return time-latency samples for the <event> class.",
            "LATEST",
            "    Return the latest latency samples for all events.",
            "HISTOGRAM [<command> ...]",
            "    Return a cumulative distribution of latencies in the format of a histogram for the specified command names.",
            "    If no commands are specified then all histograms are replied.",
            "RESET [<event> ...]",
            "    Reset latency data of one or more <event> classes.",
            "    (default: reset all data for all event classes)",
            "HELP",
            "    Print this help.",
        ]),
        _ => return Err(RespError::unknown_subcommand("LATENCY", &sub)),
    };
    Ok(reply.into())
}

/// A latency histogram (quarter octaves of 1/1024 µs) as LATENCY HISTOGRAM shows it:
/// cumulative counts at power-of-two microseconds, for each power that adds some.
fn power_of_two_histogram(hist: &[u64]) -> Vec<(Reply, Reply)> {
    let octave = |o: usize| -> u64 { hist.iter().skip(o * 4).take(4).sum() };
    let mut cumulative = 0;
    let mut out = Vec::new();
    for j in 0..55usize {
        // Label 1 µs: everything below 1024 units; label 2^j: the octave just below it.
        let n: u64 = if j == 0 {
            (0..10).map(octave).sum()
        } else {
            octave(9 + j)
        };
        if n > 0 {
            cumulative += n;
            out.push((Reply::Integer(1i64 << j), Reply::Integer(cumulative as i64)));
        }
    }
    out
}

/// SLOWLOG GET [count] | LEN | RESET | HELP
pub fn slowlog(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let sub = args.next_bytes()?;
    let log = &ctx.shared.slowlog;
    let reply = match Keyword::new(&sub).as_str() {
        "GET" => {
            let count = match args.next_opt() {
                None => Some(10),
                Some(raw) => match super::args::parse_int(&raw) {
                    Ok(-1) => None,
                    Ok(n) if n >= 0 => Some(n as usize),
                    _ => {
                        return Err(RespError::Other(
                            "count should be greater than or equal to -1",
                        ))
                    }
                },
            };
            if args.remaining() > 0 {
                return Err(RespError::subcommand_syntax("SLOWLOG", &sub));
            }
            Reply::Array(
                log.newest(count)
                    .into_iter()
                    .map(|e| {
                        Reply::Array(vec![
                            Reply::Integer(e.id as i64),
                            Reply::Integer(e.time as i64),
                            Reply::Integer(e.micros as i64),
                            Reply::Array(e.argv.into_iter().map(Reply::Bulk).collect()),
                            bulk(e.addr),
                            Reply::Bulk(e.name),
                        ])
                    })
                    .collect(),
            )
        }
        "LEN" => Reply::Integer(log.len() as i64),
        "RESET" => {
            log.reset();
            Reply::ok()
        }
        "HELP" => super::help_reply(&[
            "SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "GET [<count>]",
            "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
            "    Entries are made of:",
            "    id, timestamp, time in microseconds, arguments array, client IP and port,",
            "    client name",
            "LEN",
            "    Return the length of the slowlog.",
            "RESET",
            "    Reset the slowlog.",
            "HELP",
            "    Prints this help.",
        ]),
        _ => return Err(RespError::unknown_subcommand("SLOWLOG", &sub)),
    };
    Ok(reply.into())
}

/// ROLE: every node accepts writes (a follower forwards them to its leader), so to a Redis
/// client each is a master: `master`, the applied Raft log index as its offset, no replicas
/// (the region's replicas and their state are in `MERIDIAN RAFT` and `MERIDIAN NODES`).
pub fn role(ctx: &mut Ctx<'_>, _args: &mut Args) -> Result<Outcome, RespError> {
    Ok(Reply::Array(vec![
        bulk("master"),
        Reply::Integer(ctx.shared.raft.applied_index() as i64),
        Reply::Array(Vec::new()),
    ])
    .into())
}

/// SHUTDOWN [NOSAVE|SAVE] [NOW] [FORCE] [ABORT]: stops the node as SIGTERM does (connections
/// close, the log is synced, RocksDB closes). Every acknowledged write is already in the Raft
/// log, so SAVE and NOSAVE change nothing; NOW and FORCE are accepted (there is no save to wait
/// for or to fail). The caller gets no reply: its connection closes, as with Redis.
pub fn shutdown(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let (mut save, mut nosave, mut abort, mut others) = (false, false, false, false);
    while let Some(word) = args.next_keyword() {
        match word.as_str() {
            "SAVE" => save = true,
            "NOSAVE" => nosave = true,
            "ABORT" => abort = true,
            "NOW" | "FORCE" => others = true,
            _ => return Err(RespError::Syntax),
        }
    }
    if (save && nosave) || (abort && (save || nosave || others)) {
        return Err(RespError::Syntax);
    }
    if abort {
        // A stop, once begun, does not wait for anything that ABORT could cancel.
        return Err(RespError::Other("No shutdown in progress."));
    }
    tracing::warn!(
        client = ctx.client.info.id,
        "SHUTDOWN received, shutting down"
    );
    ctx.shared.stop.cancel();
    Ok(Outcome::Hangup)
}

/// SAVE / BGSAVE: syncs RocksDB's log (data is always persisted; there is no snapshot file).
pub fn save(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    // BGSAVE [SCHEDULE]: nothing else.
    if let Some(word) = args.next_keyword() {
        if word.as_str() != "SCHEDULE" || ctx.spec.name != "bgsave" {
            return Err(RespError::Syntax);
        }
    }
    args.finish()?;
    ctx.shared.sync_now()?;
    Ok(if ctx.spec.name == "bgsave" {
        status("Background saving started")
    } else {
        Reply::ok()
    }
    .into())
}

/// Longest WAIT, whatever the client asks (0 = "forever" in Redis).
pub const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// WAIT numreplicas timeout: in-region replication is complete when a write returns, so this
/// counts the other regions that applied this connection's last write, waiting up to
/// `timeout` ms for `numreplicas` of them.
pub fn wait(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let wanted = args.next_i64()?;
    let timeout = super::args::parse_int(&args.next_bytes()?)
        .map_err(|_| RespError::Other("timeout is not an integer or out of range"))?;
    if timeout < 0 {
        return Err(RespError::Other("timeout is negative"));
    }
    let index = ctx.client.last_write_index;
    let geo = ctx.shared.geo.clone();
    let raft = ctx.shared.raft.clone();
    let limit = if timeout == 0 {
        MAX_WAIT
    } else {
        std::time::Duration::from_millis(timeout as u64).min(MAX_WAIT)
    };
    Ok(Outcome::Async(Box::pin(async move {
        let acked = geo.wait_acked_anywhere(&raft, index, wanted, limit).await;
        Reply::Integer(acked as i64)
    })))
}

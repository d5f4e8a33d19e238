//! Pub/Sub commands: SUBSCRIBE, UNSUBSCRIBE, PSUBSCRIBE, PUNSUBSCRIBE, PUBLISH, PUBSUB (the
//! subscriptions and delivery live in [`crate::pubsub`]; the connection writes the messages).

use bytes::Bytes;
use proto_resp::{encode_reply, Reply};

use super::args::Keyword;
use super::{help_reply, Args, Ctx, Outcome};
use crate::error::RespError;
use crate::pubsub::{Message, MessageKind, Subscription};

/// The commands a RESP2 connection with subscriptions may still run.
pub fn allowed_while_subscribed(name: &str) -> bool {
    matches!(
        name,
        "subscribe" | "unsubscribe" | "psubscribe" | "punsubscribe" | "ping" | "quit" | "reset"
    )
}

/// The push a subscribed connection receives for a message (a simple string for a MONITOR
/// line).
pub fn message_reply(m: Message, protocol: proto_resp::ProtocolVersion) -> Option<Reply> {
    let bulk = |b: &'static [u8]| Reply::Bulk(Bytes::from_static(b));
    Some(match m.kind {
        MessageKind::Monitor => Reply::Status(m.payload),
        MessageKind::Invalidate { keys, redirected } => {
            let keys = keys.map_or(Reply::Null, |k| {
                Reply::Array(k.into_iter().map(Reply::Bulk).collect())
            });
            if protocol == proto_resp::ProtocolVersion::Resp3 {
                Reply::Push(vec![bulk(b"invalidate"), keys])
            } else if redirected {
                Reply::Push(vec![bulk(b"message"), bulk(crate::tracking::CHANNEL), keys])
            } else {
                // RESP2 has no pushes on a connection that is not in the subscribed mode.
                return None;
            }
        }
        MessageKind::RedirectBroken { to } => {
            if protocol != proto_resp::ProtocolVersion::Resp3 {
                return None;
            }
            Reply::Push(vec![
                bulk(b"tracking-redir-broken"),
                Reply::Integer(to as i64),
            ])
        }
        MessageKind::Published => match m.pattern {
            None => Reply::Push(vec![
                bulk(b"message"),
                Reply::Bulk(m.channel),
                Reply::Bulk(m.payload),
            ]),
            Some(pattern) => Reply::Push(vec![
                bulk(b"pmessage"),
                Reply::Bulk(pattern),
                Reply::Bulk(m.channel),
                Reply::Bulk(m.payload),
            ]),
        },
    })
}

/// Moves the messages waiting in `sub`'s queue into `out`, while `out` holds less than
/// `limit` bytes.
pub fn drain_into(
    sub: &mut Subscription,
    protocol: proto_resp::ProtocolVersion,
    out: &mut bytes::BytesMut,
    limit: usize,
) {
    while out.len() < limit {
        let Some(message) = sub.try_next() else {
            break;
        };
        if let Some(reply) = message_reply(message, protocol) {
            encode_reply(&reply, protocol, out);
        }
    }
}

/// Writes one (un)subscribe confirmation: kind, name (nil when there was none), count.
fn confirm(ctx: &mut Ctx<'_>, kind: &'static str, name: Option<Bytes>, count: usize) {
    let reply = Reply::Push(vec![
        Reply::Bulk(Bytes::from_static(kind.as_bytes())),
        name.map_or(Reply::Null, Reply::Bulk),
        Reply::Integer(count as i64),
    ]);
    encode_reply(&reply, ctx.client.protocol, ctx.out);
}

/// SUBSCRIBE channel… (and PSUBSCRIBE pattern…)
pub fn subscribe(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let pattern = ctx.spec.name == "psubscribe";
    let kind = if pattern { "psubscribe" } else { "subscribe" };
    for name in args.rest() {
        let sub = ctx.client.queue();
        // A copy: the name stays as long as the subscription, the request's buffer need not.
        let name = Bytes::copy_from_slice(&name);
        ctx.shared.pubsub.subscribe(sub, name.clone(), pattern);
        let count = sub.count();
        confirm(ctx, kind, Some(name), count);
    }
    ctx.client.subscriptions_changed();
    Ok(Outcome::Written)
}

/// UNSUBSCRIBE [channel…] (and PUNSUBSCRIBE [pattern…]); none named: all of them.
pub fn unsubscribe(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let pattern = ctx.spec.name == "punsubscribe";
    let kind = if pattern {
        "punsubscribe"
    } else {
        "unsubscribe"
    };
    let mut names = args.rest();
    if names.is_empty() {
        if let Some(sub) = &ctx.client.pubsub {
            let mine = if pattern {
                &sub.patterns
            } else {
                &sub.channels
            };
            names = mine.iter().cloned().collect();
            names.sort();
        }
        if names.is_empty() {
            let count = ctx.client.subscriptions();
            confirm(ctx, kind, None, count);
            return Ok(Outcome::Written);
        }
    }
    for name in names {
        let count = match ctx.client.pubsub.as_mut() {
            Some(sub) => {
                ctx.shared.pubsub.unsubscribe(sub, &name, pattern);
                // What the channel sent before goes before its confirmation (after it, a RESP2
                // client that left the subscribed mode would take it for a reply).
                drain_into(sub, ctx.client.protocol, ctx.out, usize::MAX);
                sub.count()
            }
            None => 0,
        };
        confirm(ctx, kind, Some(name), count);
    }
    ctx.client.subscriptions_changed();
    Ok(Outcome::Written)
}

/// Drops every subscription of the connection (RESET), then writes out what they delivered
/// meanwhile (in the connection's protocol before RESET changes it).
pub fn forget_all(ctx: &mut Ctx<'_>) {
    if let Some(sub) = ctx.client.pubsub.as_mut() {
        ctx.shared.pubsub.forget(sub);
        drain_into(sub, ctx.client.protocol, ctx.out, usize::MAX);
    }
    ctx.client.subscriptions_changed();
}

/// PUBLISH channel message: delivered to this node's subscribers (the count answered) and sent
/// to every other node's.
pub fn publish(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    // Copies: queued messages must not hold the request's read buffer.
    let channel = Bytes::copy_from_slice(&args.next_bytes()?);
    let payload = Bytes::copy_from_slice(&args.next_bytes()?);
    let delivered = ctx.shared.pubsub.publish(&channel, &payload);
    ctx.shared.publish_to_peers(channel, payload);
    Ok(Reply::Integer(delivered as i64).into())
}

/// PUBSUB CHANNELS [pattern] | NUMSUB [channel…] | NUMPAT | HELP (this node's subscribers)
pub fn pubsub(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let sub = args.next_bytes()?;
    let reply = match Keyword::new(&sub).as_str() {
        "CHANNELS" => {
            if args.remaining() > 1 {
                return Err(RespError::subcommand_syntax("PUBSUB", &sub));
            }
            let pattern = args.next_opt();
            let mut channels = ctx.shared.pubsub.channels(pattern.as_deref());
            channels.sort();
            Reply::Array(channels.into_iter().map(Reply::Bulk).collect())
        }
        "NUMSUB" => Reply::Array(
            args.rest()
                .into_iter()
                .flat_map(|c| {
                    let n = ctx.shared.pubsub.numsub(&c);
                    [Reply::Bulk(c), Reply::Integer(n as i64)]
                })
                .collect(),
        ),
        "NUMPAT" => Reply::Integer(ctx.shared.pubsub.numpat() as i64),
        "HELP" => help_reply(&[
            "PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "CHANNELS [<pattern>]",
            "    Return the currently active channels matching a <pattern> (default: '*').",
            "NUMPAT",
            "    Return number of subscriptions to patterns.",
            "NUMSUB [<channel> ...]",
            "    Return the number of subscribers for the specified channels, excluding",
            "    pattern subscriptions(default: no channels).",
            "HELP",
            "    Prints this help.",
        ]),
        _ => return Err(RespError::unknown_subcommand("PUBSUB", &sub)),
    };
    Ok(reply.into())
}

/// MONITOR: from now on the connection gets a line for every command this node runs.
pub fn monitor(ctx: &mut Ctx<'_>, _args: &mut Args) -> Result<Outcome, RespError> {
    let sub = ctx.client.queue();
    if !sub.monitoring {
        ctx.shared.pubsub.monitor(sub);
    }
    Ok(Reply::ok().into())
}

/// The MONITOR line of a command, as Redis writes it: `<unix time.µs> [<db> <ip:port>]` then
/// every argument quoted (secrets redacted, see [`super::redact`]).
pub fn monitor_line(
    now: std::time::SystemTime,
    db: u8,
    addr: &std::net::SocketAddr,
    argv: &[Bytes],
) -> Bytes {
    use std::fmt::Write;
    let since = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut line = format!(
        "{}.{:06} [{db} {addr}]",
        since.as_secs(),
        since.subsec_micros()
    );
    for arg in super::redact(argv.to_vec()) {
        line.push_str(" \"");
        for &b in arg.iter() {
            match b {
                b'\\' => line.push_str("\\\\"),
                b'"' => line.push_str("\\\""),
                b'\n' => line.push_str("\\n"),
                b'\r' => line.push_str("\\r"),
                b'\t' => line.push_str("\\t"),
                0x07 => line.push_str("\\a"),
                0x08 => line.push_str("\\b"),
                b' '..=b'~' => line.push(b as char),
                _ => {
                    let _ = write!(line, "\\x{b:02x}");
                }
            }
        }
        line.push('"');
    }
    Bytes::from(line)
}

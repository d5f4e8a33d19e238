//! Connection commands: PING, ECHO, QUIT, HELLO, AUTH, SELECT, CLIENT, RESET, READONLY/READWRITE.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use proto_resp::{ProtocolVersion, Reply};

use super::{Args, Ctx, Outcome};
use crate::client::{ClientInfo, PauseMode};
use crate::error::RespError;
use crate::keyspace::DATABASES;

/// The Redis version Meridian reports to clients: the command set and replies follow it.
pub const REDIS_COMPAT_VERSION: &str = "7.0.0";

/// PING [message]
pub fn ping(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    if args.remaining() > 1 {
        return Err(RespError::arity(ctx.spec.name));
    }
    // A RESP2 connection with subscriptions answers as Redis does there: ["pong", message].
    if ctx.client.subscriptions() > 0 && ctx.client.protocol == ProtocolVersion::Resp2 {
        return Ok(Reply::Array(vec![
            Reply::Bulk(Bytes::from_static(b"pong")),
            Reply::Bulk(args.next_opt().unwrap_or_default()),
        ])
        .into());
    }
    Ok(match args.next_opt() {
        Some(msg) => Reply::Bulk(msg),
        None => Reply::Status(Bytes::from_static(b"PONG")),
    }
    .into())
}

/// ECHO message
pub fn echo(_ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    Ok(Reply::Bulk(args.next_bytes()?).into())
}

/// QUIT
pub fn quit(_ctx: &mut Ctx<'_>, _args: &mut Args) -> Result<Outcome, RespError> {
    Ok(Outcome::Close(Reply::ok()))
}

fn check_password(ctx: &Ctx<'_>, user: Option<&[u8]>, password: &[u8]) -> Result<(), RespError> {
    let required = ctx.shared.requirepass();
    match required {
        None if user.is_none() => Err(RespError::AuthNotConfigured),
        // With no password configured the default user has `nopass`: any password works.
        None => match user {
            Some(b"default") => Ok(()),
            _ => Err(RespError::WrongPass),
        },
        Some(pw) => {
            let user_ok = user.is_none_or(|u| u == b"default");
            if user_ok && pw.as_bytes() == password {
                Ok(())
            } else {
                Err(RespError::WrongPass)
            }
        }
    }
}

/// AUTH [username] password
pub fn auth(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let (user, password) = match args.remaining() {
        1 => (None, args.next_bytes()?),
        2 => (Some(args.next_bytes()?), args.next_bytes()?),
        _ => return Err(RespError::Syntax),
    };
    check_password(ctx, user.as_deref(), &password)?;
    ctx.client.authenticated = true;
    Ok(Reply::ok().into())
}

/// HELLO [protover [AUTH username password] [SETNAME clientname]]
pub fn hello(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let mut protocol = ctx.client.protocol;
    if let Some(ver) = args.next_opt() {
        protocol = match super::args::parse_int(&ver) {
            Ok(2) => ProtocolVersion::Resp2,
            Ok(3) => ProtocolVersion::Resp3,
            Ok(_) => {
                return Ok(Reply::Error(Bytes::from_static(
                    b"NOPROTO unsupported protocol version",
                ))
                .into())
            }
            Err(_) => {
                return Err(RespError::Other(
                    "Protocol version is not an integer or out of range",
                ))
            }
        };
    }
    let mut setname = None;
    while let Some(word) = args.next_keyword() {
        match word.as_str() {
            "AUTH" if args.remaining() >= 2 => {
                let user = args.next_bytes()?;
                let password = args.next_bytes()?;
                check_password(ctx, Some(&user), &password)?;
                ctx.client.authenticated = true;
            }
            "SETNAME" if args.remaining() >= 1 => {
                setname = Some(validate_name(args.next_bytes()?)?)
            }
            _ => {
                return Err(RespError::Message(format!(
                    "Syntax error in HELLO option '{}'",
                    word.as_str()
                )))
            }
        }
    }
    if !ctx.client.authenticated {
        return Ok(Reply::Error(Bytes::from_static(
            b"NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
        ))
        .into());
    }
    if let Some(name) = setname {
        // An empty name clears it, as CLIENT SETNAME "" does.
        ctx.client.info.names().name = (!name.is_empty()).then_some(name);
    }
    // Messages already queued for its subscriptions go out in the protocol they were sent in.
    if let Some(sub) = ctx.client.pubsub.as_mut() {
        super::pubsub::drain_into(sub, ctx.client.protocol, ctx.out, usize::MAX);
    }
    ctx.client.protocol = protocol;
    if protocol == ProtocolVersion::Resp3 {
        // A RESP3 client may be another's REDIRECT target: it needs a queue to be pushed to.
        ctx.client.queue();
    }
    let proto_num = if protocol == ProtocolVersion::Resp3 {
        3
    } else {
        2
    };
    ctx.client
        .info
        .resp
        .store(proto_num as u8, Ordering::Relaxed);
    let s = |t: &'static str| Reply::Bulk(Bytes::from_static(t.as_bytes()));
    Ok(Reply::Map(vec![
        (s("server"), s("redis")),
        (s("version"), s(REDIS_COMPAT_VERSION)),
        (s("proto"), Reply::Integer(proto_num)),
        (s("id"), Reply::Integer(ctx.client.info.id as i64)),
        (s("mode"), s("standalone")),
        (s("role"), s("master")),
        (s("modules"), Reply::Array(Vec::new())),
    ])
    .into())
}

/// SELECT index
pub fn select(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let n = args.next_i64()?;
    if i32::try_from(n).is_err() {
        return Err(RespError::Other(
            "value is out of range, value must between -2147483648 and 2147483647",
        ));
    }
    let db = u8::try_from(n)
        .ok()
        .filter(|d| (*d as usize) < DATABASES)
        .ok_or(RespError::DbIndexOutOfRange)?;
    ctx.client.db = db;
    ctx.client.info.db.store(db, Ordering::Relaxed);
    Ok(Reply::ok().into())
}

/// RESET
pub fn reset(ctx: &mut Ctx<'_>, _args: &mut Args) -> Result<Outcome, RespError> {
    super::pubsub::forget_all(ctx);
    super::tracking::stop(ctx);
    ctx.client.db = 0;
    ctx.client.info.db.store(0, Ordering::Relaxed);
    ctx.client.protocol = ProtocolVersion::Resp2;
    ctx.client.info.resp.store(2, Ordering::Relaxed);
    ctx.client.readonly = false;
    ctx.client.multi = None;
    ctx.client.watched.clear();
    ctx.client.reply_off = false;
    ctx.client.skip_next = false;
    ctx.client.skip_current = false;
    ctx.client.authenticated = ctx.shared.requirepass().is_none();
    ctx.client.info.names().name = None;
    Ok(Reply::Status(Bytes::from_static(b"RESET")).into())
}

/// READONLY
pub fn readonly(ctx: &mut Ctx<'_>, _args: &mut Args) -> Result<Outcome, RespError> {
    ctx.client.readonly = true;
    Ok(Reply::ok().into())
}

/// READWRITE
pub fn readwrite(ctx: &mut Ctx<'_>, _args: &mut Args) -> Result<Outcome, RespError> {
    ctx.client.readonly = false;
    Ok(Reply::ok().into())
}

fn validate_name(name: Bytes) -> Result<Bytes, RespError> {
    if name.iter().any(|&c| c <= b' ' || c > b'~') {
        return Err(RespError::Other(
            "Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    Ok(name)
}

/// CLIENT subcommand [args] (the subcommand's arity was checked against [`super::SUBCOMMANDS`]
/// before it ran).
pub fn client(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let sub = args.next_bytes()?;
    let word = super::args::Keyword::new(&sub);
    let reply = match word.as_str() {
        "ID" => {
            Reply::Integer(ctx.client.info.id as i64)
        }
        "SETNAME" => {
            let name = validate_name(args.next_bytes()?)?;
            let mut names = ctx.client.info.names();
            names.name = (!name.is_empty()).then_some(name);
            Reply::ok()
        }
        "GETNAME" => {
            let names = ctx.client.info.names();
            names.name.clone().map_or(Reply::Null, Reply::Bulk)
        }
        "SETINFO" => {
            let attr = args.next_bytes()?;
            let value = args.next_bytes()?;
            let mut names = ctx.client.info.names();
            match super::args::Keyword::new(&attr).as_str() {
                "LIB-NAME" => names.lib_name = Some(value),
                "LIB-VER" => names.lib_ver = Some(value),
                _ => {
                    return Err(RespError::Message(format!(
                        "Unrecognized option '{}'",
                        String::from_utf8_lossy(&attr)
                    )))
                }
            }
            Reply::ok()
        }
        "LIST" => {
            let mut ids: Option<Vec<u64>> = None;
            // Every connection is a normal client: other types list nobody.
            let mut normal = true;
            while let Some(opt) = args.next_keyword() {
                match opt.as_str() {
                    "TYPE" => {
                        let t = args.next_bytes()?;
                        match super::args::Keyword::new(&t).as_str() {
                            "NORMAL" => {}
                            "MASTER" | "REPLICA" | "PUBSUB" => normal = false,
                            _ => {
                                return Err(RespError::Message(format!(
                                    "Unknown client type '{}'",
                                    String::from_utf8_lossy(&t)
                                )))
                            }
                        }
                    }
                    "ID" if args.remaining() == 0 => return Err(RespError::Syntax),
                    "ID" => {
                        let mut list = Vec::new();
                        for raw in args.rest() {
                            let id = super::args::parse_int(&raw)
                                .map_err(|_| RespError::Other("Invalid client ID"))?;
                            list.push(id as u64);
                        }
                        ids = Some(list);
                    }
                    _ => return Err(RespError::Syntax),
                }
            }
            let mut text = String::new();
            for c in ctx.shared.clients.list() {
                if normal && ids.as_ref().is_none_or(|ids| ids.contains(&c.id)) {
                    text.push_str(&c.describe());
                    text.push('\n');
                }
            }
            Reply::Verbatim(Bytes::from(text))
        }
        "INFO" => {
            let mut line = ctx.client.info.describe();
            line.push('\n');
            Reply::Verbatim(Bytes::from(line))
        }
        "NO-EVICT" | "NO-TOUCH" => {
            match super::args::Keyword::new(&args.next_bytes()?).as_str() {
                "ON" | "OFF" => Reply::ok(),
                _ => return Err(RespError::Syntax),
            }
        }
        "REPLY" => {
            // As in Redis: ON answers OK; OFF and SKIP are themselves not answered.
            match super::args::Keyword::new(&args.next_bytes()?).as_str() {
                "ON" => {
                    ctx.client.reply_off = false;
                    ctx.client.skip_next = false;
                    ctx.client.skip_current = false;
                    Reply::ok()
                }
                "OFF" => {
                    ctx.client.reply_off = true;
                    return Ok(Outcome::Written);
                }
                "SKIP" => {
                    ctx.client.skip_next = !ctx.client.reply_off;
                    return Ok(Outcome::Written);
                }
                _ => return Err(RespError::Syntax),
            }
        }
        "KILL" => return kill(ctx, args),
        "TRACKING" => super::tracking::tracking(ctx, args)?,
        "CACHING" => {
            super::tracking::caching(ctx, args)?
        }
        "GETREDIR" => {
            super::tracking::getredir(ctx)
        }
        "TRACKINGINFO" => {
            super::tracking::trackinginfo(ctx)
        }
        "PAUSE" => {
            if args.remaining() > 2 {
                return Err(RespError::subcommand_syntax("CLIENT", &sub));
            }
            let ms = super::args::parse_int(&args.next_bytes()?)
                .map_err(|_| RespError::Other("timeout is not an integer or out of range"))?;
            if ms < 0 {
                return Err(RespError::Other("timeout is negative"));
            }
            let mode = match args.next_opt() {
                None => PauseMode::All,
                Some(m) => match super::args::Keyword::new(&m).as_str() {
                    "ALL" => PauseMode::All,
                    "WRITE" => PauseMode::Write,
                    _ => return Err(RespError::Other("CLIENT PAUSE mode must be WRITE or ALL")),
                },
            };
            // Capped at a year: a pause is for a failover, and Instant has bounds.
            let ms = (ms as u64).min(365 * 24 * 3600 * 1000);
            let until = std::time::Instant::now() + std::time::Duration::from_millis(ms);
            ctx.shared.clients.pause.pause(until, mode);
            Reply::ok()
        }
        "UNPAUSE" => {
            ctx.shared.clients.pause.unpause();
            Reply::ok()
        }
        "HELP" => super::help_reply(&[
            "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            "ID",
            "SETNAME <name>",
            "GETNAME",
            "SETINFO <LIB-NAME|LIB-VER> <value>",
            "LIST [TYPE <type>] [ID <id> ...]",
            "INFO",
            "NO-EVICT (ON|OFF)",
            "NO-TOUCH (ON|OFF)",
            "PAUSE <timeout> [WRITE|ALL]",
            "UNPAUSE",
            "TRACKING (ON|OFF) [REDIRECT <id>] [BCAST] [PREFIX <prefix> [...]] [OPTIN] [OPTOUT] [NOLOOP]",
            "CACHING (YES|NO)",
            "GETREDIR",
            "TRACKINGINFO",
            "KILL <ip:port>",
            "KILL <option> <value> [<option> <value> [...]]",
            "    Options: ID <id>, ADDR <ip:port>, LADDR <ip:port>, TYPE <type>, USER <user>,",
            "    SKIPME (YES|NO).",
        ]),
        _ => return Err(RespError::unknown_subcommand("CLIENT", &sub)),
    };
    Ok(reply.into())
}

/// Which connections a CLIENT KILL closes.
#[derive(Default)]
struct KillFilter {
    id: Option<u64>,
    addr: Option<String>,
    laddr: Option<String>,
    /// False when TYPE named a kind of client this node never has (master, replica, pubsub).
    normal: bool,
    skip_me: bool,
}

impl KillFilter {
    fn matches(&self, c: &ClientInfo, me: u64) -> bool {
        self.normal
            && !(self.skip_me && c.id == me)
            && self.id.is_none_or(|id| id == c.id)
            && self.addr.as_ref().is_none_or(|a| *a == c.addr.to_string())
            && self
                .laddr
                .as_ref()
                .is_none_or(|a| *a == c.laddr.to_string())
    }
}

/// CLIENT KILL ip:port | CLIENT KILL <filter> <value> ...: closes other connections (after
/// whatever they are doing); the caller itself is closed after this reply.
fn kill(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let me = ctx.client.info.id;
    let old_form = args.remaining() == 1;
    let filter = if old_form {
        KillFilter {
            addr: Some(String::from_utf8_lossy(&args.next_bytes()?).into_owned()),
            normal: true,
            ..KillFilter::default()
        }
    } else {
        if args.remaining() == 0 || args.remaining() % 2 != 0 {
            return Err(RespError::Syntax);
        }
        let mut f = KillFilter {
            normal: true,
            skip_me: true,
            ..KillFilter::default()
        };
        while let Some(opt) = args.next_keyword() {
            let value = args.next_bytes()?;
            let text = || String::from_utf8_lossy(&value).into_owned();
            match opt.as_str() {
                "ID" => match super::args::parse_int(&value) {
                    Ok(id) if id > 0 => f.id = Some(id as u64),
                    _ => return Err(RespError::Other("client-id should be greater than 0")),
                },
                "ADDR" => f.addr = Some(text()),
                "LADDR" => f.laddr = Some(text()),
                "TYPE" => match super::args::Keyword::new(&value).as_str() {
                    "NORMAL" => {}
                    "MASTER" | "REPLICA" | "SLAVE" | "PUBSUB" => f.normal = false,
                    _ => {
                        return Err(RespError::Message(format!(
                            "Unknown client type '{}'",
                            text()
                        )))
                    }
                },
                "USER" if value.as_ref() == b"default" => {}
                "USER" => return Err(RespError::Message(format!("No such user '{}'", text()))),
                "SKIPME" => match super::args::Keyword::new(&value).as_str() {
                    "YES" => f.skip_me = true,
                    "NO" => f.skip_me = false,
                    _ => return Err(RespError::Syntax),
                },
                _ => return Err(RespError::Syntax),
            }
        }
        f
    };
    let mut killed = 0i64;
    let mut kill_me = false;
    for c in ctx.shared.clients.list() {
        if filter.matches(&c, me) {
            killed += 1;
            if c.id == me {
                kill_me = true;
            } else {
                c.kill.cancel();
            }
        }
    }
    let reply = match (old_form, killed) {
        (true, 0) => return Err(RespError::Other("No such client")),
        (true, _) => Reply::ok(),
        (false, n) => Reply::Integer(n),
    };
    Ok(if kill_me {
        Outcome::Close(reply)
    } else {
        Outcome::Reply(reply)
    })
}

//! String commands: GET, SET and relatives, counters, ranges.

use bytes::Bytes;
use proto_resp::{encode_bulk, encode_reply, Reply};

use super::{Args, Ctx, Outcome};
use crate::error::RespError;
use crate::keyspace::number::parse_f64_strict;
use crate::keyspace::{plain_string_at, StoredValue, ValueType, MAX_STRING_LEN};
use crate::op::{ExpireSet, Op, OpError, SetCond, SetReply};

/// Reads a live string value, failing with WRONGTYPE for other types.
pub(super) fn read_string(ctx: &Ctx<'_>, key: &[u8]) -> Result<Option<StoredValue>, RespError> {
    let value = ctx.get(ctx.client.db, key)?;
    match value {
        Some(v) if v.kind() != ValueType::String => Err(RespError::WrongType),
        other => Ok(other),
    }
}

/// Converts a relative or absolute expiry argument to absolute ms, with Redis's checks.
pub(super) fn expire_at(
    ctx: &Ctx<'_>,
    amount: i64,
    unit_ms: i64,
    absolute: bool,
) -> Result<u64, RespError> {
    let invalid = || RespError::InvalidExpire {
        cmd: ctx.spec.name.to_string(),
    };
    if amount <= 0 {
        return Err(invalid());
    }
    let ms = amount.checked_mul(unit_ms).ok_or_else(invalid)?;
    let at = if absolute {
        ms
    } else {
        ms.checked_add(ctx.now_ms as i64).ok_or_else(invalid)?
    };
    u64::try_from(at).map_err(|_| invalid())
}

/// The absolute expiry an EX / PX / EXAT / PXAT option's amount gives.
fn timed_value(ctx: &Ctx<'_>, unit: &str, raw: &[u8]) -> Result<u64, RespError> {
    let amount = super::args::parse_int(raw)?;
    let (unit_ms, absolute) = match unit {
        "EX" => (1000, false),
        "PX" => (1, false),
        "EXAT" => (1000, true),
        _ => (1, true),
    };
    expire_at(ctx, amount, unit_ms, absolute)
}

/// SET's and GETEX's options, read as Redis reads them: every word first (an option may be
/// repeated, and of repeated expiries the last wins; conflicting options are a syntax error),
/// the expiry's amount only after (so a syntax error is reported before a bad number).
struct StringOptions {
    cond: SetCond,
    get: bool,
    keepttl: bool,
    persist: bool,
    /// The expiry option and its amount, not yet parsed.
    expire: Option<(&'static str, Bytes)>,
}

fn string_options(args: &mut Args, getex: bool) -> Result<StringOptions, RespError> {
    let mut o = StringOptions {
        cond: SetCond::Always,
        get: false,
        keepttl: false,
        persist: false,
        expire: None,
    };
    while let Some(word) = args.next_keyword() {
        let unit: Option<&'static str> = match word.as_str() {
            "EX" => Some("EX"),
            "PX" => Some("PX"),
            "EXAT" => Some("EXAT"),
            "PXAT" => Some("PXAT"),
            _ => None,
        };
        let other_unit = o.expire.as_ref().is_some_and(|(u, _)| Some(*u) != unit);
        match (word.as_str(), unit) {
            (_, Some(unit)) if !o.keepttl && !o.persist && !other_unit => {
                let amount = args.next_opt().ok_or(RespError::Syntax)?;
                o.expire = Some((unit, amount));
            }
            ("NX", None) if !getex && o.cond != SetCond::Xx => o.cond = SetCond::Nx,
            ("XX", None) if !getex && o.cond != SetCond::Nx => o.cond = SetCond::Xx,
            ("GET", None) if !getex => o.get = true,
            ("KEEPTTL", None) if !getex && o.expire.is_none() => o.keepttl = true,
            ("PERSIST", None) if getex && o.expire.is_none() => o.persist = true,
            _ => return Err(RespError::Syntax),
        }
    }
    Ok(o)
}

/// GET key
pub fn get(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let key = args.next_bytes()?;
    // A cached plain string is encoded where the cache holds it, not copied out first.
    let (now_ms, protocol) = (ctx.now_ms, ctx.client.protocol);
    let out = &mut *ctx.out;
    let written = ctx
        .shared
        .keyspace
        .read_cached(ctx.client.db, &key, |encoded| {
            match encoded.map(|e| plain_string_at(e, now_ms)) {
                Some(Some(Some(value))) => encode_bulk(value, out),
                None | Some(Some(None)) => encode_reply(&Reply::Null, protocol, out),
                // A state with counters: decoded by the general path.
                Some(None) => return None,
            }
            Some(())
        });
    if written.is_some() {
        return Ok(Outcome::Written);
    }
    Ok(match read_string(ctx, &key)? {
        Some(v) => Reply::Bulk(v.payload()),
        None => Reply::Null,
    }
    .into())
}

/// SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL]
pub fn set(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let key = args.next_bytes()?;
    let value = args.next_bytes()?;
    let o = string_options(args, false)?;
    let expire = match o.expire {
        Some((unit, amount)) => ExpireSet::At(timed_value(ctx, unit, &amount)?),
        None if o.keepttl => ExpireSet::Keep,
        None => ExpireSet::Clear,
    };
    let (cond, reply) = (
        o.cond,
        if o.get {
            SetReply::Old
        } else {
            SetReply::OkOrNil
        },
    );
    Ok(simple_set(ctx, key, value, expire, cond, reply))
}

/// The SET op every SET-like command builds.
fn simple_set(
    ctx: &Ctx<'_>,
    key: Bytes,
    value: Bytes,
    expire: ExpireSet,
    cond: SetCond,
    reply: SetReply,
) -> Outcome {
    Outcome::Write(Op::Set {
        db: ctx.client.db,
        key,
        value,
        expire,
        cond,
        reply,
    })
}

/// SETNX key value
pub fn setnx(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let (key, value) = (args.next_bytes()?, args.next_bytes()?);
    Ok(simple_set(
        ctx,
        key,
        value,
        ExpireSet::Clear,
        SetCond::Nx,
        SetReply::Flag,
    ))
}

/// SETEX key seconds value
pub fn setex(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    setex_unit(ctx, args, 1000)
}

/// PSETEX key milliseconds value
pub fn psetex(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    setex_unit(ctx, args, 1)
}

fn setex_unit(ctx: &mut Ctx<'_>, args: &mut Args, unit_ms: i64) -> Result<Outcome, RespError> {
    let key = args.next_bytes()?;
    let amount = args.next_i64()?;
    let value = args.next_bytes()?;
    let at = expire_at(ctx, amount, unit_ms, false)?;
    Ok(simple_set(
        ctx,
        key,
        value,
        ExpireSet::At(at),
        SetCond::Always,
        SetReply::OkOrNil,
    ))
}

/// GETSET key value
pub fn getset(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let (key, value) = (args.next_bytes()?, args.next_bytes()?);
    Ok(simple_set(
        ctx,
        key,
        value,
        ExpireSet::Clear,
        SetCond::Always,
        SetReply::Old,
    ))
}

/// GETDEL key
pub fn getdel(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    Ok(Outcome::Write(Op::GetDel {
        db: ctx.client.db,
        key: args.next_bytes()?,
    }))
}

/// GETEX key [EX s|PX ms|EXAT s|PXAT ms|PERSIST]
pub fn getex(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let key = args.next_bytes()?;
    let o = string_options(args, true)?;
    let expire = match o.expire {
        Some((unit, amount)) => match timed_value(ctx, unit, &amount) {
            Ok(at) => Some(ExpireSet::At(at)),
            // As Redis: a missing key answers nil before its expiry is checked; decided where
            // the batch lands, after this connection's earlier writes.
            Err(e) => {
                let error = match e {
                    RespError::NotInteger => OpError::NotInteger,
                    _ => OpError::InvalidGetexExpire,
                };
                return Ok(Outcome::Write(Op::FailIfLive {
                    db: ctx.client.db,
                    key,
                    error,
                }));
            }
        },
        None if o.persist => Some(ExpireSet::Clear),
        None => None,
    };
    // Without options GETEX changes nothing, but it still goes in order with this
    // connection's pending writes (a write command runs before they are flushed; the GET
    // path would answer ahead of them, from before them).
    Ok(Outcome::Write(Op::GetEx {
        db: ctx.client.db,
        key,
        expire: expire.unwrap_or(ExpireSet::Keep),
    }))
}

/// MGET key [key ...]
pub fn mget(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let keys = args.rest();
    if ctx.view.is_none() && keys.len() > 1 {
        // The keys' cache entries fetched together, not one miss after another.
        let db = ctx.client.db;
        ctx.shared
            .keyspace
            .warm_reads(db, keys.iter().map(|k| &k[..]));
    }
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        let v = ctx.get(ctx.client.db, &key)?;
        out.push(match v {
            Some(v) if v.kind() == ValueType::String => Reply::Bulk(v.payload()),
            _ => Reply::Null,
        });
    }
    Ok(Reply::Array(out).into())
}

fn pairs(ctx: &Ctx<'_>, args: &mut Args) -> Result<Vec<(Bytes, Bytes)>, RespError> {
    if args.remaining() % 2 != 0 {
        return Err(RespError::arity(ctx.spec.name));
    }
    let mut out = Vec::with_capacity(args.remaining() / 2);
    while let Some(k) = args.next_opt() {
        out.push((k, args.next_bytes()?));
    }
    Ok(out)
}

/// MSET key value [key value ...]
pub fn mset(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    Ok(Outcome::Write(Op::MSet {
        db: ctx.client.db,
        pairs: pairs(ctx, args)?,
        nx: false,
    }))
}

/// MSETNX key value [key value ...]
pub fn msetnx(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    Ok(Outcome::Write(Op::MSet {
        db: ctx.client.db,
        pairs: pairs(ctx, args)?,
        nx: true,
    }))
}

/// APPEND key value
pub fn append(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    Ok(Outcome::Write(Op::Append {
        db: ctx.client.db,
        key: args.next_bytes()?,
        value: args.next_bytes()?,
    }))
}

/// STRLEN key
pub fn strlen(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let key = args.next_bytes()?;
    let len = read_string(ctx, &key)?.map_or(0, |v| v.payload_ref().len());
    Ok(Reply::Integer(len as i64).into())
}

/// GETRANGE key start end
pub fn getrange(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let key = args.next_bytes()?;
    let (start, end) = (args.next_i64()?, args.next_i64()?);
    let Some(v) = read_string(ctx, &key)? else {
        return Ok(Reply::Bulk(Bytes::new()).into());
    };
    let payload = v.payload();
    let len = payload.len() as i64;
    if start < 0 && end < 0 && start > end {
        return Ok(Reply::Bulk(Bytes::new()).into());
    }
    let mut s = if start < 0 { len + start } else { start };
    let mut e = if end < 0 { len + end } else { end };
    s = s.max(0);
    e = e.max(0);
    if e >= len {
        e = len - 1;
    }
    if s > e || len == 0 {
        return Ok(Reply::Bulk(Bytes::new()).into());
    }
    Ok(Reply::Bulk(payload.slice(s as usize..=e as usize)).into())
}

/// SETRANGE key offset value
pub fn setrange(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let key = args.next_bytes()?;
    let offset = args.next_i64()?;
    let value = args.next_bytes()?;
    if offset < 0 {
        return Err(RespError::OffsetOutOfRange);
    }
    let offset = offset as u64;
    // As Redis: an empty value answers the length without growing anything, so no limit.
    if !value.is_empty() && offset.saturating_add(value.len() as u64) > MAX_STRING_LEN as u64 {
        return Err(RespError::StringTooLong);
    }
    Ok(Outcome::Write(Op::SetRange {
        db: ctx.client.db,
        key,
        offset,
        value,
    }))
}

fn incr_op(ctx: &Ctx<'_>, key: Bytes, delta: i64) -> Outcome {
    Outcome::Write(Op::IncrBy {
        db: ctx.client.db,
        key,
        delta,
    })
}

/// INCR key
pub fn incr(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    Ok(incr_op(ctx, args.next_bytes()?, 1))
}

/// DECR key
pub fn decr(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    Ok(incr_op(ctx, args.next_bytes()?, -1))
}

/// INCRBY key increment
pub fn incrby(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let key = args.next_bytes()?;
    let delta = args.next_i64()?;
    Ok(incr_op(ctx, key, delta))
}

/// DECRBY key decrement
pub fn decrby(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let key = args.next_bytes()?;
    let delta = args.next_i64()?;
    let delta = delta
        .checked_neg()
        .ok_or(RespError::Other("decrement would overflow"))?;
    Ok(incr_op(ctx, key, delta))
}

/// INCRBYFLOAT key increment
pub fn incrbyfloat(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let key = args.next_bytes()?;
    let delta = args.next_bytes()?;
    parse_f64_strict(&delta).ok_or(RespError::NotFloat)?;
    // An infinite increment is refused where it is added, after the stored value is checked,
    // as Redis does (a key holding "abc" answers "not a valid float" for "inf" too).
    // The text as written: added exactly, whatever a double would round it to.
    Ok(Outcome::Write(Op::IncrByDecimal {
        db: ctx.client.db,
        key,
        delta,
    }))
}

//! String commands: GET, SET and relatives, counters, ranges.

use bytes::Bytes;
use proto_resp::{encode_bulk, encode_reply, Reply};

use super::{Args, Ctx, Outcome};
use crate::error::RespError;
use crate::keyspace::{plain_string_at, StoredValue, ValueType, MAX_STRING_LEN};
use crate::op::{ExpireSet, Op, SetCond, SetReply};

/// Reads a live string value, failing with WRONGTYPE for other types.
pub(super) fn read_string(ctx: &Ctx<'_>, key: &[u8]) -> Result<Option<StoredValue>, RespError> {
    let value = ctx.shared.keyspace.get(ctx.client.db, key, ctx.now_ms)?;
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

/// Reads the amount after an EX / PX / EXAT / PXAT option and returns the absolute expiry.
fn timed_option(ctx: &Ctx<'_>, unit: &str, args: &mut Args) -> Result<u64, RespError> {
    let amount = args.next_i64()?;
    let (unit_ms, absolute) = match unit {
        "EX" => (1000, false),
        "PX" => (1, false),
        "EXAT" => (1000, true),
        _ => (1, true),
    };
    expire_at(ctx, amount, unit_ms, absolute)
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
    let mut cond = SetCond::Always;
    let mut reply = SetReply::OkOrNil;
    let mut expire = ExpireSet::Clear;
    let mut expire_given = false;
    while let Some(word) = args.next_keyword() {
        match word.as_str() {
            "NX" if cond == SetCond::Always => cond = SetCond::Nx,
            "XX" if cond == SetCond::Always => cond = SetCond::Xx,
            "GET" => reply = SetReply::Old,
            "KEEPTTL" if !expire_given => {
                expire = ExpireSet::Keep;
                expire_given = true;
            }
            unit @ ("EX" | "PX" | "EXAT" | "PXAT") if !expire_given => {
                expire = ExpireSet::At(timed_option(ctx, unit, args)?);
                expire_given = true;
            }
            _ => return Err(RespError::Syntax),
        }
    }
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
    let mut expire = None;
    while let Some(word) = args.next_keyword() {
        if expire.is_some() {
            return Err(RespError::Syntax);
        }
        match word.as_str() {
            "PERSIST" => expire = Some(ExpireSet::Clear),
            unit @ ("EX" | "PX" | "EXAT" | "PXAT") => {
                expire = Some(ExpireSet::At(timed_option(ctx, unit, args)?));
            }
            _ => return Err(RespError::Syntax),
        }
    }
    match expire {
        // Without options GETEX is a plain read.
        None => get(ctx, &mut Args::new(vec![key])),
        Some(expire) => Ok(Outcome::Write(Op::GetEx {
            db: ctx.client.db,
            key,
            expire,
        })),
    }
}

/// MGET key [key ...]
pub fn mget(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let mut out = Vec::with_capacity(args.remaining());
    for key in args.rest() {
        let v = ctx.shared.keyspace.get(ctx.client.db, &key, ctx.now_ms)?;
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
    if offset.saturating_add(value.len() as u64) > MAX_STRING_LEN as u64 {
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
    let delta = args.next_f64()?;
    if !delta.is_finite() {
        return Err(RespError::NanOrInfinity);
    }
    Ok(Outcome::Write(Op::IncrByFloat {
        db: ctx.client.db,
        key,
        delta,
    }))
}

//! Expiry commands: EXPIRE family, TTL family, PERSIST.

use proto_resp::Reply;

use super::args::Keyword;
use super::{Args, Ctx, Outcome};
use crate::error::RespError;
use crate::op::{ExpireCond, Op};

fn expire_generic(
    ctx: &mut Ctx<'_>,
    args: &mut Args,
    unit_ms: i64,
    absolute: bool,
) -> Result<Outcome, RespError> {
    let key = args.next_bytes()?;
    // As Redis: the options are checked before the time is read.
    let amount = args.next_bytes()?;
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    while let Some(raw) = args.next_opt() {
        match Keyword::new(&raw).as_str() {
            "NX" => nx = true,
            "XX" => xx = true,
            "GT" => gt = true,
            "LT" => lt = true,
            _ => {
                return Err(RespError::Message(format!(
                    "Unsupported option {}",
                    String::from_utf8_lossy(&raw)
                )))
            }
        }
    }
    if nx && (xx || gt || lt) {
        return Err(RespError::Other(
            "NX and XX, GT or LT options at the same time are not compatible",
        ));
    }
    if gt && lt {
        return Err(RespError::Other(
            "GT and LT options at the same time are not compatible",
        ));
    }
    let amount = super::args::parse_int(&amount)?;
    // GT already fails on a key without expiry, so XX adds nothing to it.
    let cond = match (nx, xx, gt, lt) {
        (true, ..) => ExpireCond::Nx,
        (_, _, true, _) => ExpireCond::Gt,
        (_, true, _, true) => ExpireCond::XxLt,
        (_, _, _, true) => ExpireCond::Lt,
        (_, true, ..) => ExpireCond::Xx,
        _ => ExpireCond::Always,
    };
    let invalid = || RespError::InvalidExpire {
        cmd: ctx.spec.name.to_string(),
    };
    let ms = amount.checked_mul(unit_ms).ok_or_else(invalid)?;
    let at = if absolute {
        Some(ms)
    } else {
        ms.checked_add(ctx.now_ms as i64)
    }
    .ok_or_else(invalid)?;
    // A time in the past deletes the key (applied as "expire now").
    let at = u64::try_from(at.max(0)).map_err(|_| invalid())?;
    Ok(Outcome::Write(Op::Expire {
        db: ctx.client.db,
        key,
        at_ms: Some(at),
        cond,
    }))
}

/// EXPIRE key seconds [NX|XX|GT|LT]
pub fn expire(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    expire_generic(ctx, args, 1000, false)
}

/// PEXPIRE key milliseconds [NX|XX|GT|LT]
pub fn pexpire(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    expire_generic(ctx, args, 1, false)
}

/// EXPIREAT key unix-seconds [NX|XX|GT|LT]
pub fn expireat(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    expire_generic(ctx, args, 1000, true)
}

/// PEXPIREAT key unix-ms [NX|XX|GT|LT]
pub fn pexpireat(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    expire_generic(ctx, args, 1, true)
}

/// PERSIST key
pub fn persist(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    Ok(Outcome::Write(Op::Expire {
        db: ctx.client.db,
        key: args.next_bytes()?,
        at_ms: None,
        cond: ExpireCond::Always,
    }))
}

/// What TTL-like commands report: -2 no key, -1 no expiry, else the value.
fn ttl_generic(
    ctx: &mut Ctx<'_>,
    args: &mut Args,
    f: fn(at: u64, now: u64) -> i64,
) -> Result<Outcome, RespError> {
    let key = args.next_bytes()?;
    let n = match ctx.get(ctx.client.db, &key)? {
        None => -2,
        Some(v) => match v.expire_at() {
            None => -1,
            Some(at) => f(at, ctx.now_ms),
        },
    };
    Ok(Reply::Integer(n).into())
}

/// TTL key
pub fn ttl(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    ttl_generic(ctx, args, |at, now| {
        ((at.saturating_sub(now) + 500) / 1000) as i64
    })
}

/// PTTL key
pub fn pttl(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    ttl_generic(ctx, args, |at, now| at.saturating_sub(now) as i64)
}

/// EXPIRETIME key
pub fn expiretime(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    ttl_generic(ctx, args, |at, _| ((at + 500) / 1000) as i64)
}

/// PEXPIRETIME key
pub fn pexpiretime(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    ttl_generic(ctx, args, |at, _| at as i64)
}

//! Generic key commands: TYPE, EXISTS, DEL, KEYS, SCAN, RANDOMKEY, RENAME, COPY.

use bytes::Bytes;
use proto_resp::Reply;

use super::args::parse_int;
use super::{Args, Ctx, Outcome};
use crate::error::RespError;
use crate::keyspace::{glob_match, DATABASES};
use crate::op::Op;

/// Keys examined per SCAN call at most, whatever COUNT says (bounds one call's work).
const MAX_SCAN_COUNT: usize = 100_000;

/// TYPE key
pub fn type_(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let key = args.next_bytes()?;
    let name = match ctx.get(ctx.client.db, &key)? {
        Some(v) => v.kind().name(),
        None => "none",
    };
    Ok(Reply::Status(Bytes::from_static(name.as_bytes())).into())
}

/// EXISTS key [key ...] (also TOUCH)
pub fn exists(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let mut n = 0;
    for key in args.rest() {
        n += ctx.get(ctx.client.db, &key)?.is_some() as i64;
    }
    Ok(Reply::Integer(n).into())
}

/// DEL key [key ...] (also UNLINK)
pub fn del(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    Ok(Outcome::Write(Op::Del {
        db: ctx.client.db,
        keys: args.rest(),
    }))
}

/// KEYS pattern
pub fn keys(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let pattern = args.next_bytes()?;
    let mut out = Vec::new();
    let mut after: Option<Bytes> = None;
    loop {
        let (found, last) =
            ctx.shared
                .keyspace
                .scan(ctx.client.db, after.as_deref(), 10_000, ctx.now_ms)?;
        out.extend(
            found
                .into_iter()
                .filter(|(k, _)| glob_match(&pattern, k))
                .map(|(k, _)| Reply::Bulk(k)),
        );
        match last {
            Some(k) => after = Some(k),
            None => break,
        }
    }
    Ok(Reply::Array(out).into())
}

/// A SCAN cursor read as Redis reads it (`strtoul`): digits after an optional sign, a negative
/// one wrapping around (`-1` is the largest cursor, which no iteration holds), nothing else.
fn parse_cursor(raw: &[u8]) -> Option<u64> {
    if raw.is_empty() {
        // As Redis (strtoul of nothing): the start.
        return Some(0);
    }
    let (negative, digits) = crate::keyspace::number::split_sign(raw);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(if negative {
        value.wrapping_neg()
    } else {
        value
    })
}

/// SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]
///
/// The cursor is a number handed out by the node that stands for the last key returned
/// (kept in a bounded, expiring table); an unknown cursor ends the iteration.
pub fn scan(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let cursor_arg = args.next_bytes()?;
    let cursor = parse_cursor(&cursor_arg).ok_or(RespError::Other("invalid cursor"))?;
    let mut pattern = None;
    let mut count = 10usize;
    let mut type_filter = None;
    while let Some(word) = args.next_keyword() {
        match word.as_str() {
            "MATCH" => pattern = Some(args.next_bytes()?),
            "COUNT" => {
                let n = parse_int(&args.next_bytes()?)?;
                if n < 1 {
                    return Err(RespError::Syntax);
                }
                count = usize::try_from(n)
                    .unwrap_or(MAX_SCAN_COUNT)
                    .min(MAX_SCAN_COUNT);
            }
            "TYPE" => type_filter = Some(args.next_bytes()?.to_ascii_lowercase()),
            _ => return Err(RespError::Syntax),
        }
    }
    let after = if cursor == 0 {
        None
    } else {
        match ctx.shared.scan_cursors.get(&cursor) {
            Some(k) => Some(k),
            None => return Ok(scan_reply(0, Vec::new())),
        }
    };
    let (found, last) =
        ctx.shared
            .keyspace
            .scan(ctx.client.db, after.as_deref(), count, ctx.now_ms)?;
    let keys = found
        .into_iter()
        .filter(|(k, _)| pattern.as_ref().is_none_or(|p| glob_match(p, k)))
        .filter(|(_, v)| {
            type_filter
                .as_ref()
                .is_none_or(|t| t == v.kind().name().as_bytes())
        })
        .map(|(k, _)| Reply::Bulk(k))
        .collect();
    let next = match last {
        Some(k) => {
            let id = loop {
                let id: u64 = rand::random::<u64>() >> 1;
                if id != 0 {
                    break id;
                }
            };
            ctx.shared.scan_cursors.insert(id, k);
            id
        }
        None => 0,
    };
    Ok(scan_reply(next, keys))
}

fn scan_reply(cursor: u64, keys: Vec<Reply>) -> Outcome {
    let mut buf = itoa::Buffer::new();
    Reply::Array(vec![
        Reply::Bulk(Bytes::copy_from_slice(buf.format(cursor).as_bytes())),
        Reply::Array(keys),
    ])
    .into()
}

/// RANDOMKEY
pub fn randomkey(ctx: &mut Ctx<'_>, _args: &mut Args) -> Result<Outcome, RespError> {
    Ok(
        match ctx.shared.keyspace.random_key(ctx.client.db, ctx.now_ms)? {
            Some(k) => Reply::Bulk(k),
            None => Reply::Null,
        }
        .into(),
    )
}

/// RENAME key newkey
pub fn rename(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    Ok(Outcome::Write(Op::Rename {
        db: ctx.client.db,
        src: args.next_bytes()?,
        dst: args.next_bytes()?,
        nx: false,
    }))
}

/// RENAMENX key newkey
pub fn renamenx(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    Ok(Outcome::Write(Op::Rename {
        db: ctx.client.db,
        src: args.next_bytes()?,
        dst: args.next_bytes()?,
        nx: true,
    }))
}

/// COPY source destination [DB destination-db] [REPLACE]
pub fn copy(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let src = args.next_bytes()?;
    let dst = args.next_bytes()?;
    let mut dst_db = ctx.client.db;
    let same_db_given = |d: u8| d == ctx.client.db;
    let mut replace = false;
    while let Some(word) = args.next_keyword() {
        match word.as_str() {
            "DB" => dst_db = db_index(args)?,
            "REPLACE" => replace = true,
            _ => return Err(RespError::Syntax),
        }
    }
    if same_db_given(dst_db) && src == dst {
        return Err(RespError::Other(
            "source and destination objects are the same",
        ));
    }
    Ok(Outcome::Write(Op::Copy {
        db: ctx.client.db,
        src,
        dst_db,
        dst,
        replace,
    }))
}

/// The destination database of MOVE and COPY's `DB`, read as Redis reads it: an int
/// (`getIntFromObjectOrReply`, with its range error), then one of this node's databases.
fn db_index(args: &mut Args) -> Result<u8, RespError> {
    let n = i32::try_from(args.next_i64()?).map_err(|_| {
        RespError::Other("value is out of range, value must between -2147483648 and 2147483647")
    })?;
    u8::try_from(n)
        .ok()
        .filter(|d| (*d as usize) < DATABASES)
        .ok_or(RespError::DbIndexOutOfRange)
}

/// MOVE key db: moves the key, with its expiry, to another database unless one holds it there.
pub fn move_(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let key = args.next_bytes()?;
    let dst_db = db_index(args)?;
    if dst_db == ctx.client.db {
        return Err(RespError::Other(
            "source and destination objects are the same",
        ));
    }
    Ok(Outcome::Write(Op::Move {
        db: ctx.client.db,
        key,
        dst_db,
    }))
}

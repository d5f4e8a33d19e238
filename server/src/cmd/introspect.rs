//! Key introspection: OBJECT and MEMORY, with Redis's subcommands, arguments and errors, and
//! answers that describe how Meridian holds a key.

use bytes::Bytes;
use proto_resp::Reply;

use super::args::Keyword;
use super::{help_reply, Args, Ctx, Outcome};
use crate::error::RespError;
use crate::keyspace::{number::parse_i64_strict, HotCache, StoredValue};

/// A container command's subcommand: its name upper-cased, as sent, and the key of those that
/// take one (their arity was checked against [`super::SUBCOMMANDS`] before the command ran).
struct Sub {
    name: String,
    sent: Bytes,
    key: Option<Bytes>,
}

fn sub_and_key(args: &mut Args, with_key: &[&str]) -> Result<Sub, RespError> {
    let sent = args.next_bytes()?;
    let name = Keyword::new(&sent).as_str().to_string();
    let key = if with_key.contains(&name.as_str()) {
        Some(args.next_bytes()?)
    } else {
        None
    };
    Ok(Sub { name, sent, key })
}

/// The encoding Redis would report for a string with these bytes: `int` for a 64-bit integer
/// of at most 20 characters, `embstr` up to 44 bytes, `raw` beyond. Meridian stores strings
/// one way; the name is chosen from the content (Redis also says `raw` for a short string that
/// APPEND or SETRANGE changed).
fn string_encoding(payload: &[u8]) -> &'static str {
    if payload.len() <= 20 && parse_i64_strict(payload).is_some() {
        "int"
    } else if payload.len() <= 44 {
        "embstr"
    } else {
        "raw"
    }
}

/// OBJECT ENCODING | FREQ | IDLETIME | REFCOUNT key, OBJECT HELP
pub fn object(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let sub = sub_and_key(args, &["ENCODING", "FREQ", "IDLETIME", "REFCOUNT"])?;
    let Some(key) = &sub.key else {
        return match sub.name.as_str() {
            "HELP" => Ok(help_reply(&[
                "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "ENCODING <key>",
                "    Return the kind of internal representation used in order to store the value",
                "    associated with a <key>.",
                "FREQ <key>",
                "    Not kept by Meridian (its hot cache's frequency sketch is not per key).",
                "IDLETIME <key>",
                "    Not kept (the hot cache keeps keys by frequency, as Redis's allkeys-lfu does).",
                "REFCOUNT <key>",
                "    Return the number of references of the value associated with the specified",
                "    <key>.",
                "HELP",
                "    Prints this help.",
            ])
            .into()),
            _ => Err(RespError::unknown_subcommand("OBJECT", &sub.sent)),
        };
    };
    let Some(value) = ctx.get(ctx.client.db, key)? else {
        return Ok(Reply::Null.into());
    };
    Ok(match sub.name.as_str() {
        "ENCODING" => Reply::Bulk(Bytes::from_static(
            string_encoding(&value.payload_ref()).as_bytes(),
        )),
        "REFCOUNT" => Reply::Integer(1),
        "IDLETIME" => {
            return Err(RespError::Other(
                "An LRU maxmemory policy is not selected, no idle time tracked. Please note that \
                 when switching between policies at runtime LRU and LFU data will take some time \
                 to adjust.",
            ))
        }
        _ => {
            return Err(RespError::Other(
                "Meridian keeps no per-key access frequency (its hot cache samples reads into a \
                 sketch that cannot be queried by key)",
            ))
        }
    }
    .into())
}

/// The bytes MEMORY USAGE reports for a key: what the hot cache charges against its bound
/// while it holds the key (key, encoded value with its expiry, and the per-entry overhead).
fn usage(key: &[u8], value: &StoredValue) -> u64 {
    HotCache::charge(1 + key.len(), value.len())
}

/// MEMORY USAGE key [SAMPLES count], MEMORY HELP
pub fn memory(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let sub = sub_and_key(args, &["USAGE"])?;
    let Some(key) = &sub.key else {
        return match sub.name.as_str() {
            "HELP" => Ok(help_reply(&[
                "MEMORY <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "USAGE <key> [SAMPLES <count>]",
                "    Return the bytes the hot cache charges for <key> and its value while it",
                "    holds them (SAMPLES is accepted: strings have nothing nested to sample).",
                "HELP",
                "    Prints this help.",
            ])
            .into()),
            _ => Err(RespError::unknown_subcommand("MEMORY", &sub.sent)),
        };
    };
    while let Some(word) = args.next_keyword() {
        if word.as_str() != "SAMPLES" || args.remaining() == 0 {
            return Err(RespError::Syntax);
        }
        if args.next_i64()? < 0 {
            return Err(RespError::Syntax);
        }
    }
    Ok(match ctx.get(ctx.client.db, key)? {
        None => Reply::Null,
        Some(value) => Reply::Integer(usage(key, &value) as i64),
    }
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_follow_the_content() {
        assert_eq!(string_encoding(b"12345"), "int");
        assert_eq!(string_encoding(b"-9223372036854775808"), "int");
        assert_eq!(string_encoding(b"007"), "embstr");
        assert_eq!(string_encoding(b"99999999999999999999"), "embstr");
        assert_eq!(string_encoding(&[b'x'; 44]), "embstr");
        assert_eq!(string_encoding(&[b'x'; 45]), "raw");
    }
}

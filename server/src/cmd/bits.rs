//! Bit commands on strings: GETBIT, SETBIT, BITCOUNT, BITPOS, BITOP, BITFIELD, BITFIELD_RO (Redis 7.0's arguments, replies and
//! error texts; bit 0 is the most significant bit of the first byte).

use proto_resp::Reply;

use super::args::parse_int;
use super::string::read_string;
use super::{Args, Ctx, Outcome};
use crate::error::RespError;
use crate::keyspace::bitfield;
use crate::keyspace::MAX_STRING_LEN;
use crate::op::{BitFieldAction, BitFieldOp, BitOpKind, Op, Overflow};

/// A bit offset: a non-negative integer below the largest string's bit count.
fn bit_offset(args: &mut Args) -> Result<u64, RespError> {
    let raw = args.next_bytes()?;
    parse_int(&raw)
        .ok()
        .and_then(|n| u64::try_from(n).ok())
        .filter(|n| n >> 3 < MAX_STRING_LEN as u64)
        .ok_or(RespError::Other(
            "bit offset is not an integer or out of range",
        ))
}

/// GETBIT key offset
pub fn getbit(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let key = args.next_bytes()?;
    let offset = bit_offset(args)?;
    let bit = read_string(ctx, &key)?.map_or(0, |v| {
        let payload = v.payload_ref();
        payload
            .get((offset >> 3) as usize)
            .map_or(0, |byte| (byte >> (7 - (offset & 7))) & 1)
    });
    Ok(Reply::Integer(i64::from(bit)).into())
}

/// SETBIT key offset 0|1
pub fn setbit(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let key = args.next_bytes()?;
    let offset = bit_offset(args)?;
    let on = match parse_int(&args.next_bytes()?) {
        Ok(0) => false,
        Ok(1) => true,
        _ => return Err(RespError::Other("bit is not an integer or out of range")),
    };
    Ok(Outcome::Write(Op::SetBit {
        db: ctx.client.db,
        key,
        offset,
        on,
    }))
}

/// Whether a range counts bytes (the default) or bits.
fn unit(word: Option<&[u8]>) -> Result<bool, RespError> {
    match word {
        None => Ok(false),
        Some(w) if w.eq_ignore_ascii_case(b"byte") => Ok(false),
        Some(w) if w.eq_ignore_ascii_case(b"bit") => Ok(true),
        Some(_) => Err(RespError::Syntax),
    }
}

/// Redis's range rule: negative positions count from the end (`len` units), then both ends are
/// clamped to `0..len`; `None` when the range is empty. Returned in bits, inclusive.
fn bit_range(start: i64, end: i64, len: i64, in_bits: bool) -> Option<(u64, u64)> {
    let (mut start, mut end) = (start, end);
    if start < 0 {
        start += len;
    }
    if end < 0 {
        end += len;
    }
    let start = start.max(0);
    let end = end.max(0).min(len - 1);
    if start > end {
        return None;
    }
    Some(if in_bits {
        (start as u64, end as u64)
    } else {
        (start as u64 * 8, end as u64 * 8 + 7)
    })
}

/// The bit at `pos` of `bytes` (0 past the end).
fn bit_at(bytes: &[u8], pos: u64) -> u8 {
    bytes
        .get((pos >> 3) as usize)
        .map_or(0, |b| (b >> (7 - (pos & 7))) & 1)
}

/// BITCOUNT key [start end [BYTE|BIT]]
pub fn bitcount(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let key = args.next_bytes()?;
    // As Redis 7.0: a missing key counts 0 before the range is parsed.
    let Some(value) = read_string(ctx, &key)? else {
        return Ok(Reply::Integer(0).into());
    };
    let range = match args.remaining() {
        0 => None,
        2 | 3 => {
            let start = args.next_i64()?;
            let end = args.next_i64()?;
            // As Redis 7.0's BITCOUNT (not BITPOS): two negative positions in the wrong order
            // count nothing, before the unit is read and before they are clamped.
            if start < 0 && end < 0 && start > end {
                return Ok(Reply::Integer(0).into());
            }
            let in_bits = unit(args.next_opt().as_deref())?;
            Some((start, end, in_bits))
        }
        _ => return Err(RespError::Syntax),
    };
    let bytes = value.payload_ref();
    let len = bytes.len() as i64;
    let bits = match range {
        None => bit_range(0, -1, len, false),
        Some((start, end, in_bits)) => {
            bit_range(start, end, if in_bits { len * 8 } else { len }, in_bits)
        }
    };
    let Some((first, last)) = bits else {
        return Ok(Reply::Integer(0).into());
    };
    Ok(Reply::Integer(count_ones(&bytes, first, last) as i64).into())
}

/// Set bits of `bytes` in the bit range `first..=last`.
fn count_ones(bytes: &[u8], first: u64, last: u64) -> u64 {
    let (first_byte, last_byte) = ((first >> 3) as usize, (last >> 3) as usize);
    let mut n: u64 = bytes[first_byte..=last_byte]
        .iter()
        .map(|b| u64::from(b.count_ones()))
        .sum();
    // Take off the bits of the edge bytes that lie outside the range.
    n -= (first & !7..first)
        .chain(last + 1..=(last | 7))
        .map(|pos| u64::from(bit_at(bytes, pos)))
        .sum::<u64>();
    n
}

/// BITPOS key bit [start [end [BYTE|BIT]]]
pub fn bitpos(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let key = args.next_bytes()?;
    let bit = match args.next_i64()? {
        0 => 0u8,
        1 => 1u8,
        _ => return Err(RespError::Other("The bit argument must be 1 or 0.")),
    };
    // A missing key is an endless run of zeros.
    let Some(value) = read_string(ctx, &key)? else {
        return Ok(Reply::Integer(if bit == 1 { -1 } else { 0 }).into());
    };
    let bytes = value.payload_ref();
    let len = bytes.len() as i64;
    let (bits, end_given) = match args.remaining() {
        0 => (bit_range(0, -1, len, false), false),
        1..=3 => {
            let start = args.next_i64()?;
            let end = args.next_opt();
            let in_bits = unit(args.next_opt().as_deref())?;
            let end_given = end.is_some();
            let end = match end {
                Some(e) => parse_int(&e)?,
                None => -1,
            };
            let units = if in_bits { len * 8 } else { len };
            (bit_range(start, end, units, in_bits), end_given)
        }
        _ => return Err(RespError::Syntax),
    };
    // An empty range holds neither a 0 nor a 1.
    let Some((first, last)) = bits else {
        return Ok(Reply::Integer(-1).into());
    };
    let found = find_bit(&bytes, first, last, bit);
    Ok(Reply::Integer(match found {
        Some(pos) => pos as i64,
        // Looking for a 0 with no end given: the string continues with zeros after its end.
        None if bit == 0 && !end_given => last as i64 + 1,
        None => -1,
    })
    .into())
}

/// The first position in `first..=last` whose bit is `bit`, skipping whole bytes that cannot
/// hold it.
fn find_bit(bytes: &[u8], first: u64, last: u64, bit: u8) -> Option<u64> {
    let skip = if bit == 1 { 0x00 } else { 0xFF };
    let mut pos = first;
    while pos <= last {
        if pos & 7 == 0 && pos + 7 <= last && bytes[(pos >> 3) as usize] == skip {
            pos += 8;
            continue;
        }
        if bit_at(bytes, pos) == bit {
            return Some(pos);
        }
        pos += 1;
    }
    None
}

/// BITOP AND|OR|XOR|NOT destkey key [key ...]
pub fn bitop(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let word = args.next_bytes()?;
    let kind = [
        (&b"and"[..], BitOpKind::And),
        (b"or", BitOpKind::Or),
        (b"xor", BitOpKind::Xor),
        (b"not", BitOpKind::Not),
    ]
    .into_iter()
    .find(|(name, _)| word.eq_ignore_ascii_case(name))
    .map(|(_, kind)| kind)
    .ok_or(RespError::Syntax)?;
    let dst = args.next_bytes()?;
    let srcs = args.remaining_args().to_vec();
    if kind == BitOpKind::Not && srcs.len() != 1 {
        return Err(RespError::Other(
            "BITOP NOT must be called with a single source key.",
        ));
    }
    Ok(Outcome::Write(Op::BitOp {
        db: ctx.client.db,
        kind,
        dst,
        srcs,
    }))
}

/// BITFIELD's subcommands, parsed as Redis 7.0 does (its order of checks and error texts).
fn bitfield_ops(ctx: &Ctx<'_>, args: &mut Args) -> Result<Vec<BitFieldOp>, RespError> {
    let mut ops = Vec::new();
    let mut overflow = Overflow::Wrap;
    while let Some(word) = args.next_opt() {
        let left = args.remaining();
        let action = if word.eq_ignore_ascii_case(b"get") && left >= 2 {
            BitFieldAction::Get
        } else if word.eq_ignore_ascii_case(b"set") && left >= 3 {
            BitFieldAction::Set(0)
        } else if word.eq_ignore_ascii_case(b"incrby") && left >= 3 {
            BitFieldAction::IncrBy(0)
        } else if word.eq_ignore_ascii_case(b"overflow") && left >= 1 {
            let rule = args.next_bytes()?;
            overflow = [
                (&b"wrap"[..], Overflow::Wrap),
                (b"sat", Overflow::Sat),
                (b"fail", Overflow::Fail),
            ]
            .into_iter()
            .find(|(name, _)| rule.eq_ignore_ascii_case(name))
            .map(|(_, rule)| rule)
            .ok_or(RespError::Other("Invalid OVERFLOW type specified"))?;
            continue;
        } else {
            return Err(RespError::Syntax);
        };
        let (signed, bits) = field_type(&args.next_bytes()?)?;
        let offset = field_offset(ctx, &args.next_bytes()?, bits)?;
        let action = match action {
            BitFieldAction::Get => BitFieldAction::Get,
            BitFieldAction::Set(_) => BitFieldAction::Set(args.next_i64()?),
            BitFieldAction::IncrBy(_) => BitFieldAction::IncrBy(args.next_i64()?),
        };
        ops.push(BitFieldOp {
            action,
            signed,
            bits,
            offset,
            overflow,
        });
    }
    Ok(ops)
}

/// A field type: `i1`..`i64` or `u1`..`u63`.
fn field_type(word: &[u8]) -> Result<(bool, u8), RespError> {
    let invalid = RespError::Other(
        "Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is.",
    );
    let signed = match word.first() {
        Some(b'i') => true,
        Some(b'u') => false,
        _ => return Err(invalid),
    };
    match parse_int(&word[1..]) {
        Ok(n) if n >= 1 && n <= if signed { 64 } else { 63 } => Ok((signed, n as u8)),
        _ => Err(invalid),
    }
}

/// A field offset: bits, or `#n` for the n-th field of this width; below
/// `proto-max-bulk-len` bytes.
fn field_offset(ctx: &Ctx<'_>, word: &[u8], bits: u8) -> Result<u64, RespError> {
    let invalid = || RespError::Other("bit offset is not an integer or out of range");
    let (hashed, digits) = match word.split_first() {
        Some((b'#', rest)) => (true, rest),
        _ => (false, word),
    };
    let mut offset = parse_int(digits).map_err(|_| invalid())?;
    if hashed {
        offset = offset.wrapping_mul(i64::from(bits));
    }
    if offset < 0 || (offset >> 3) as u64 >= ctx.shared.config.proto_max_bulk_len as u64 {
        return Err(invalid());
    }
    Ok(offset as u64)
}

/// BITFIELD key [GET type offset | SET type offset value | INCRBY type offset increment |
/// OVERFLOW WRAP|SAT|FAIL] ...
pub fn bitfield(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let key = args.next_bytes()?;
    let ops = bitfield_ops(ctx, args)?;
    // Even GET-only, it goes through the write path, as a Redis write command: read in order
    // with every write.
    Ok(Outcome::Write(Op::BitField {
        db: ctx.client.db,
        key,
        ops,
    }))
}

/// BITFIELD_RO key [GET type offset] ...
pub fn bitfield_ro(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let key = args.next_bytes()?;
    let ops = bitfield_ops(ctx, args)?;
    if bitfield::highest_written_bit(&ops).is_some() {
        return Err(RespError::Other(
            "BITFIELD_RO only supports the GET subcommand",
        ));
    }
    let value = read_string(ctx, &key)?
        .map(|v| v.payload_ref())
        .unwrap_or_default();
    let replies = bitfield::read(&value, &ops);
    Ok(Reply::Array(replies.into_iter().flatten().map(Reply::Integer).collect()).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_redis_rules() {
        assert_eq!(bit_range(0, -1, 3, false), Some((0, 23)));
        assert_eq!(bit_range(-2, -1, 3, false), Some((8, 23)));
        assert_eq!(bit_range(5, 100, 24, true), Some((5, 23)));
        assert_eq!(bit_range(-1, -5, 3, false), None);
        assert_eq!(bit_range(0, -1, 0, false), None);
        assert_eq!(bit_range(2, 1, 3, false), None);
    }

    #[test]
    fn counts_and_finds_bits_inside_a_range() {
        let bytes = [0b1111_0000u8, 0b0000_1111, 0xFF];
        assert_eq!(count_ones(&bytes, 0, 23), 16);
        assert_eq!(count_ones(&bytes, 2, 13), 2 + 2);
        assert_eq!(count_ones(&bytes, 4, 11), 0);
        assert_eq!(find_bit(&bytes, 0, 23, 0), Some(4));
        assert_eq!(find_bit(&bytes, 4, 23, 1), Some(12));
        assert_eq!(find_bit(&bytes, 16, 23, 0), None);
        assert_eq!(find_bit(&bytes, 9, 10, 1), None);
    }
}

//! BITFIELD's arithmetic on a string's bits, as Redis 7.0 does it: fields of 1 to 64 bits
//! (unsigned up to 63) at any bit offset, most significant bit first, and the WRAP / SAT / FAIL
//! rules for SET and INCRBY. Used by the apply (BITFIELD) and by BITFIELD_RO's read.

use crate::op::{BitFieldAction, BitFieldOp, Overflow};

/// The unsigned value of the `bits`-bit field at bit `offset` (bits past the end read as 0).
fn get_unsigned(bytes: &[u8], offset: u64, bits: u8) -> u64 {
    (offset..offset + u64::from(bits)).fold(0u64, |value, pos| {
        let bit = bytes
            .get((pos >> 3) as usize)
            .map_or(0, |b| (b >> (7 - (pos & 7))) & 1);
        (value << 1) | u64::from(bit)
    })
}

/// The field's value as the op's type reads it (sign-extended when signed).
fn get(bytes: &[u8], op: &BitFieldOp) -> i64 {
    let raw = get_unsigned(bytes, op.offset, op.bits);
    if op.signed && op.bits < 64 && raw & (1 << (op.bits - 1)) != 0 {
        (raw | (u64::MAX << op.bits)) as i64
    } else {
        raw as i64
    }
}

/// Writes the low `bits` bits of `value` at bit `offset`; `bytes` is long enough.
fn set_unsigned(bytes: &mut [u8], offset: u64, bits: u8, value: u64) {
    for j in 0..u64::from(bits) {
        let on = (value >> (u64::from(bits) - 1 - j)) & 1 == 1;
        let pos = offset + j;
        let mask = 1u8 << (7 - (pos & 7));
        let byte = &mut bytes[(pos >> 3) as usize];
        if on {
            *byte |= mask;
        } else {
            *byte &= !mask;
        }
    }
}

/// Redis's `checkUnsignedBitfieldOverflow`: whether `value + incr` leaves the `bits`-bit
/// unsigned range, and the value to store instead under WRAP or SAT.
fn unsigned_overflow(value: u64, incr: i64, bits: u8, rule: Overflow) -> Option<u64> {
    let max = (1u64 << bits) - 1; // bits <= 63
    let max_incr = max.wrapping_sub(value) as i64;
    let min_incr = (value as i64).wrapping_neg();
    let wrap = || value.wrapping_add(incr as u64) & max;
    if value > max || (incr > 0 && incr > max_incr) {
        Some(match rule {
            Overflow::Wrap => wrap(),
            _ => max,
        })
    } else if incr < 0 && incr < min_incr {
        Some(match rule {
            Overflow::Wrap => wrap(),
            _ => 0,
        })
    } else {
        None
    }
}

/// Redis's `checkSignedBitfieldOverflow`: whether `value + incr` leaves the `bits`-bit signed
/// range, and the value to store instead under WRAP or SAT.
fn signed_overflow(value: i64, incr: i64, bits: u8, rule: Overflow) -> Option<i64> {
    let max: i64 = if bits == 64 {
        i64::MAX
    } else {
        (1i64 << (bits - 1)) - 1
    };
    let min = -max - 1;
    let max_incr = (max as u64).wrapping_sub(value as u64) as i64;
    let min_incr = min.wrapping_sub(value);
    let wrap = || {
        let sum = (value as u64).wrapping_add(incr as u64);
        if bits == 64 {
            sum as i64
        } else if sum & (1 << (bits - 1)) != 0 {
            (sum | (u64::MAX << bits)) as i64
        } else {
            (sum & !(u64::MAX << bits)) as i64
        }
    };
    if value > max || (bits != 64 && incr > max_incr) || (value >= 0 && incr > 0 && incr > max_incr)
    {
        Some(match rule {
            Overflow::Wrap => wrap(),
            _ => max,
        })
    } else if value < min
        || (bits != 64 && incr < min_incr)
        || (value < 0 && incr < 0 && incr < min_incr)
    {
        Some(match rule {
            Overflow::Wrap => wrap(),
            _ => min,
        })
    } else {
        None
    }
}

/// Runs one SET or INCRBY on `bytes` (long enough for the field): its reply, or `None` when
/// the FAIL rule refused it (nothing written); and whether the field's bits changed.
fn write(bytes: &mut [u8], op: &BitFieldOp, amount: i64, is_set: bool) -> (Option<i64>, bool) {
    let old_bits = get_unsigned(bytes, op.offset, op.bits);
    let (new, reply, overflowed) = if op.signed {
        let old = get(bytes, op);
        if is_set {
            let over = signed_overflow(amount, 0, op.bits, op.overflow);
            (over.unwrap_or(amount) as u64, old, over.is_some())
        } else {
            let over = signed_overflow(old, amount, op.bits, op.overflow);
            let new = over.unwrap_or_else(|| old.wrapping_add(amount));
            (new as u64, new, over.is_some())
        }
    } else {
        let (value, incr) = if is_set {
            (amount as u64, 0)
        } else {
            (old_bits, amount)
        };
        let over = unsigned_overflow(value, incr, op.bits, op.overflow);
        let new = over.unwrap_or_else(|| value.wrapping_add(incr as u64));
        let reply = if is_set { old_bits } else { new };
        (new, reply as i64, over.is_some())
    };
    if overflowed && op.overflow == Overflow::Fail {
        return (None, false);
    }
    set_unsigned(bytes, op.offset, op.bits, new);
    (
        Some(reply),
        get_unsigned(bytes, op.offset, op.bits) != old_bits,
    )
}

/// The highest bit a write subcommand of `ops` reaches, or `None` when every one is a GET.
pub fn highest_written_bit(ops: &[BitFieldOp]) -> Option<u64> {
    ops.iter()
        .filter(|op| op.action != BitFieldAction::Get)
        .map(|op| op.offset + u64::from(op.bits) - 1)
        .max()
}

/// Runs `ops` in order on `bytes` (for writes, already grown to hold every written field):
/// one reply per op, `None` for a write the FAIL rule refused; and whether a write changed a
/// field's value (Redis raises its `setbit` event only then).
pub fn run(bytes: &mut [u8], ops: &[BitFieldOp]) -> (Vec<Option<i64>>, bool) {
    let mut changed = false;
    let replies = ops
        .iter()
        .map(|op| {
            let (reply, moved) = match op.action {
                BitFieldAction::Get => (Some(get(bytes, op)), false),
                BitFieldAction::Set(v) => write(bytes, op, v, true),
                BitFieldAction::IncrBy(v) => write(bytes, op, v, false),
            };
            changed |= moved;
            reply
        })
        .collect();
    (replies, changed)
}

/// Runs GET-only `ops` on a value without changing it.
pub fn read(bytes: &[u8], ops: &[BitFieldOp]) -> Vec<Option<i64>> {
    ops.iter().map(|op| Some(get(bytes, op))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(
        action: BitFieldAction,
        signed: bool,
        bits: u8,
        offset: u64,
        rule: Overflow,
    ) -> BitFieldOp {
        BitFieldOp {
            action,
            signed,
            bits,
            offset,
            overflow: rule,
        }
    }

    #[test]
    fn unsigned_and_signed_fields_wrap_saturate_and_fail_as_redis() {
        let mut buf = vec![0u8; 2];
        let u8_inc = |v, rule| op(BitFieldAction::IncrBy(v), false, 8, 0, rule);
        assert_eq!(
            run(&mut buf, &[u8_inc(250, Overflow::Wrap)]),
            (vec![Some(250)], true)
        );
        assert_eq!(
            run(&mut buf, &[u8_inc(10, Overflow::Wrap)]).0,
            vec![Some(4)]
        );
        assert_eq!(
            run(&mut buf, &[u8_inc(300, Overflow::Sat)]).0,
            vec![Some(255)]
        );
        assert_eq!(
            run(&mut buf, &[u8_inc(1, Overflow::Fail)]),
            (vec![None], false)
        );
        assert_eq!(
            run(&mut buf, &[u8_inc(0, Overflow::Wrap)]),
            (vec![Some(255)], false)
        );
        assert_eq!(buf[0], 255, "a refused write leaves the field");
        let i5 = |action, rule| op(action, true, 5, 3, rule);
        assert_eq!(
            run(&mut buf, &[i5(BitFieldAction::Set(100), Overflow::Wrap)]).0,
            vec![Some(-1)]
        );
        // 100 wraps to 4 in five bits; as signed read back.
        assert_eq!(
            read(&buf, &[i5(BitFieldAction::Get, Overflow::Wrap)]),
            vec![Some(4)]
        );
        assert_eq!(
            run(&mut buf, &[i5(BitFieldAction::IncrBy(-100), Overflow::Sat)]).0,
            vec![Some(-16)]
        );
        let i64_inc = |v| op(BitFieldAction::IncrBy(v), true, 64, 0, Overflow::Wrap);
        let mut wide = vec![0u8; 8];
        assert_eq!(run(&mut wide, &[i64_inc(i64::MAX)]).0, vec![Some(i64::MAX)]);
        assert_eq!(run(&mut wide, &[i64_inc(1)]).0, vec![Some(i64::MIN)]);
    }
}

//! Number parsing and formatting with Redis's rules (`string2ll`, `string2ld`, human floats).

/// Parses an integer the way Redis's `string2ll` does: optional '-', digits, no '+', no
/// leading zeros, no spaces.
pub fn parse_i64_strict(bytes: &[u8]) -> Option<i64> {
    if bytes.is_empty() || bytes.len() > 20 {
        return None;
    }
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if digits.len() > 1 && digits[0] == b'0' {
        return None;
    }
    if digits == b"0" && bytes.len() > 1 {
        return None; // "-0"
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// Parses a float like Redis's `string2ld`: no spaces, no NaN, and nothing `strtold` finds out
/// of range (past an x87 long double's largest value, or so small it reads as 0). A number
/// between a double's range and a long double's reads as an infinity (INCRBYFLOAT then answers
/// "would produce NaN or Infinity"; README), one past it is not a valid float, as in Redis.
pub fn parse_f64_strict(bytes: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(bytes).ok()?;
    if text.is_empty() || text.len() > 5000 || text.trim() != text {
        return None;
    }
    let v: f64 = text.parse().ok()?;
    if v.is_nan() || ((v.is_infinite() || v == 0.0) && beyond_long_double(text)) {
        return None;
    }
    Some(v)
}

/// The largest x87 long double (`LDBL_MAX`), as a leading digit part and a power of ten.
const LDBL_MAX_DECIMAL: (f64, i64) = (1.189_731_495_357_231_8, 4932);
/// The smallest positive x87 long double (its smallest subnormal), likewise.
const LDBL_TRUE_MIN_DECIMAL: (f64, i64) = (3.645_199_531_882_474, -4951);

/// Whether the decimal `text` (one Rust read as a float: digits, point, exponent; or an
/// infinity) lies past the range of an x87 long double, where `strtold` fails with `ERANGE`
/// and Redis's `string2ld` refuses it: above `LDBL_MAX`, or not zero and below the smallest
/// subnormal.
fn beyond_long_double(text: &str) -> bool {
    let unsigned = text.trim_start_matches(['+', '-']);
    if unsigned.starts_with(['i', 'I']) {
        return false; // "inf", "infinity": no range error
    }
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (&unsigned[..i], &unsigned[i + 1..]),
        None => (unsigned, "0"),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: Vec<u8> = int.bytes().chain(frac.bytes()).collect();
    let Some(first) = digits.iter().position(|&d| d != b'0') else {
        return false; // zero
    };
    let Ok(exponent) = exponent.parse::<i64>() else {
        // An exponent past i64: as far out as it gets, on its side.
        return true;
    };
    // text = d1.d2d3… × 10^power, d1 the first non-zero digit.
    let int_len = i64::try_from(int.len()).unwrap_or(i64::MAX);
    let first_at = i64::try_from(first).unwrap_or(i64::MAX);
    let power = int_len
        .saturating_sub(first_at)
        .saturating_sub(1)
        .saturating_add(exponent);
    let lead_digits: String = digits[first..]
        .iter()
        .take(17)
        .map(|&d| char::from(d))
        .collect();
    let lead = format!("{}.{}", &lead_digits[..1], &lead_digits[1..])
        .parse::<f64>()
        .unwrap_or(1.0);
    let above =
        power > LDBL_MAX_DECIMAL.1 || (power == LDBL_MAX_DECIMAL.1 && lead > LDBL_MAX_DECIMAL.0);
    let below = power < LDBL_TRUE_MIN_DECIMAL.1
        || (power == LDBL_TRUE_MIN_DECIMAL.1 && lead < LDBL_TRUE_MIN_DECIMAL.0);
    above || below
}

/// Formats a float the way the INCRBYFLOAT fallback stores it (see [`incr_by_float`]): no
/// exponent, no trailing zeros; the shortest decimal that reads back as the same double, and
/// every digit of an integral value (the shortest form of 2^63 would end in zeros).
pub fn format_float(v: f64) -> String {
    if v == 0.0 {
        return "0".to_string();
    }
    if v.fract() == 0.0 && v.abs() < 1e38 {
        return (v as i128).to_string();
    }
    format!("{v}")
}

/// Splits an optional leading sign off `text`: (negative, the rest).
pub fn split_sign(text: &[u8]) -> (bool, &[u8]) {
    match text.first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    }
}

/// Decimals INCRBYFLOAT keeps after the point, as Redis's `%.17Lf`.
const FLOAT_DECIMALS: i32 = 17;

/// An exact decimal `m × 10^e`, for INCRBYFLOAT sums.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Decimal {
    m: i128,
    e: i32,
}

/// Reads `[+-]digits[.digits][(e|E)[+-]digits]` exactly, when its significant digits fit an
/// i128 (else `None`, and the sum falls back to doubles).
fn parse_decimal(text: &[u8]) -> Option<Decimal> {
    let (negative, rest) = split_sign(text);
    let (mantissa, exponent) = match rest.iter().position(|b| *b == b'e' || *b == b'E') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let (int_part, frac_part) = match mantissa.iter().position(|b| *b == b'.') {
        Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
        None => (mantissa, &b""[..]),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if !int_part.iter().chain(frac_part).all(u8::is_ascii_digit) {
        return None;
    }
    let mut e: i32 = match exponent {
        None => 0,
        Some(x) => {
            let (neg, digits) = split_sign(x);
            if digits.is_empty() || digits.len() > 6 || !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let v: i32 = std::str::from_utf8(digits).ok()?.parse().ok()?;
            if neg {
                -v
            } else {
                v
            }
        }
    };
    e = e.checked_sub(i32::try_from(frac_part.len()).ok()?)?;
    let digits: Vec<u8> = int_part.iter().chain(frac_part).copied().collect();
    let start = digits
        .iter()
        .position(|d| *d != b'0')
        .unwrap_or(digits.len());
    let mut significant = &digits[start..];
    while let Some((b'0', head)) = significant.split_last() {
        significant = head;
        e = e.checked_add(1)?;
    }
    if significant.len() > 38 {
        return None;
    }
    let mut m: i128 = 0;
    for d in significant {
        m = m * 10 + i128::from(d - b'0');
    }
    Some(Decimal {
        m: if negative { -m } else { m },
        e: if m == 0 { 0 } else { e },
    })
}

impl Decimal {
    /// True when the value is below 10^-18: nothing of it survives rounding to 17 decimals.
    fn negligible(self) -> bool {
        let digits = self
            .m
            .unsigned_abs()
            .checked_ilog10()
            .map_or(0, |d| d as i32 + 1);
        self.e.saturating_add(digits) < -FLOAT_DECIMALS - 1
    }

    /// The exact sum, when it fits (or the larger one, when the other cannot count).
    fn add(self, other: Decimal) -> Option<Decimal> {
        if other.negligible() && !self.negligible() {
            return Some(self);
        }
        if self.negligible() && !other.negligible() {
            return Some(other);
        }
        let e = self.e.min(other.e);
        let scale = |d: Decimal| -> Option<i128> {
            let shift = u32::try_from(d.e - e).ok()?;
            d.m.checked_mul(10i128.checked_pow(shift)?)
        };
        Some(Decimal {
            m: scale(self)?.checked_add(scale(other)?)?,
            e,
        })
    }

    /// Fixed point, rounded (half to even) to at most [`FLOAT_DECIMALS`] decimals, without
    /// trailing zeros: what Redis's human long-double format prints.
    fn format(self) -> Option<String> {
        let Decimal { mut m, mut e } = self;
        if e < -FLOAT_DECIMALS {
            let drop = u32::try_from(-FLOAT_DECIMALS - e).ok()?;
            m = match 10i128.checked_pow(drop) {
                Some(div) => {
                    let (q, r) = (m / div, m % div);
                    let twice = r.abs() * 2;
                    if twice > div || (twice == div && q % 2 != 0) {
                        q + m.signum()
                    } else {
                        q
                    }
                }
                None => 0,
            };
            e = -FLOAT_DECIMALS;
        }
        if m == 0 {
            return Some("0".to_string());
        }
        let mut digits = m.unsigned_abs().to_string();
        if e >= 0 {
            if e > 400 {
                return None;
            }
            digits.push_str(&"0".repeat(e as usize));
        } else {
            let frac = (-e) as usize;
            if digits.len() <= frac {
                digits = "0".repeat(frac + 1 - digits.len()) + &digits;
            }
            digits.insert(digits.len() - frac, '.');
            let trimmed = digits.trim_end_matches('0').trim_end_matches('.').len();
            digits.truncate(trimmed);
        }
        if m < 0 {
            digits.insert(0, '-');
        }
        Some(digits)
    }
}

/// INCRBYFLOAT's new value as stored and answered: `current` (the stored text, `None` for a
/// missing key) plus `delta` (the increment's text, a finite float), or `None` when the
/// result is not a finite number.
///
/// Redis adds in long double and prints 17 decimals, so 0.1 + 0.2 reads "0.3" there; in
/// doubles it reads 0.30000000000000004. Meridian adds exactly in decimal: the stored text
/// and the increment as the user wrote it, rounded to 17 decimals. Sums too wide for that
/// (significant digits past 38) are added in doubles instead. Either way every replica
/// computes the same text on any CPU.
pub fn incr_by_float(current: Option<&[u8]>, delta: &[u8]) -> Option<String> {
    let base = current.unwrap_or(b"0");
    let exact = parse_decimal(base)
        .zip(parse_decimal(delta))
        .and_then(|(a, b)| a.add(b))
        .and_then(Decimal::format);
    let text = match exact {
        Some(text) => text,
        None => {
            let sum = parse_f64_strict(base)? + parse_f64_strict(delta)?;
            if !sum.is_finite() {
                return None;
            }
            format_float(sum)
        }
    };
    text.parse::<f64>().ok().filter(|v| v.is_finite())?;
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incrbyfloat_adds_the_increment_as_written() {
        // Redis's long double holds these; a double would round the increment.
        let add = |cur: &str, d: &str| incr_by_float(Some(cur.as_bytes()), d.as_bytes());
        assert_eq!(
            add("1", "10000000000000001").as_deref(),
            Some("10000000000000002")
        );
        assert_eq!(
            add("1", "12345678901234567890").as_deref(),
            Some("12345678901234567891")
        );
        assert_eq!(
            add("5", "9223372036854775808").as_deref(),
            Some("9223372036854775813")
        );
        assert_eq!(
            add("0", "1.23456789012345678").as_deref(),
            Some("1.23456789012345678")
        );
        assert_eq!(
            add("100", "-100.00000000000000001").as_deref(),
            Some("-0.00000000000000001")
        );
        assert_eq!(add("1", "1e3").as_deref(), Some("1001"));
        // Too wide for the exact sum: doubles, as before.
        assert!(add("1", "1e300").is_some());
    }

    #[test]
    fn incrbyfloat_adds_exactly_in_decimal() {
        let add = |cur: Option<&str>, d: f64| {
            incr_by_float(cur.map(str::as_bytes), format!("{d}").as_bytes())
        };
        // As Redis reads them (its long double hides the double's error).
        assert_eq!(add(Some("0.1"), 0.2).as_deref(), Some("0.3"));
        assert_eq!(add(Some("1.1"), 2.2).as_deref(), Some("3.3"));
        assert_eq!(add(Some("10.50"), 0.1).as_deref(), Some("10.6"));
        assert_eq!(add(None, -0.1).as_deref(), Some("-0.1"));
        assert_eq!(add(Some("5.0e3"), -5000.0).as_deref(), Some("0"));
        // Digits a double would lose are kept, as in Redis.
        assert_eq!(
            add(Some("0"), 1.0000000000000002).as_deref(),
            Some("1.0000000000000002")
        );
        assert_eq!(
            add(Some("12345678901234567"), 0.0).as_deref(),
            Some("12345678901234567")
        );
        assert_eq!(
            add(Some("9223372036854775807"), 1.0).as_deref(),
            Some("9223372036854775808")
        );
        // 17 decimals at most, rounded half to even.
        assert_eq!(add(Some("0"), 1e-20).as_deref(), Some("0"));
        assert_eq!(add(Some("109.5"), 1e-320).as_deref(), Some("109.5"));
        assert_eq!(
            add(Some("100000000000000000109.5000000001"), 1e-300).as_deref(),
            Some("100000000000000000109.5000000001")
        );
        assert_eq!(
            add(Some("0.000000000000000015"), 0.0).as_deref(),
            Some("0.00000000000000002")
        );
        assert_eq!(
            add(Some("0.000000000000000025"), 0.0).as_deref(),
            Some("0.00000000000000002")
        );
        // Wide sums fall back to doubles; past the double's range is no number.
        assert_eq!(add(Some("1e300"), 0.1).as_deref().map(str::len), Some(301));
        assert_eq!(
            add(Some("1.5e300"), 0.0).as_deref().map(str::len),
            Some(301)
        );
        assert_eq!(add(Some("1e308"), 1e308), None);
        assert_eq!(add(Some("inf"), 1.0), None);
    }

    #[test]
    fn strict_integers() {
        assert_eq!(parse_i64_strict(b"10"), Some(10));
        assert_eq!(parse_i64_strict(b"-10"), Some(-10));
        assert_eq!(parse_i64_strict(b"0"), Some(0));
        assert_eq!(parse_i64_strict(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64_strict(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b"+1"[..],
            b"01",
            b"-0",
            b" 1",
            b"1 ",
            b"",
            b"-",
            b"1a",
            b"9223372036854775808",
        ] {
            assert_eq!(
                parse_i64_strict(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn floats() {
        assert_eq!(format_float(10.5 + 0.1), "10.6");
        // Integers a double holds exactly, small fractions and huge values, without exponent.
        assert_eq!(format_float(9007199254740992.0), "9007199254740992");
        assert_eq!(format_float(9223372036854775808.0), "9223372036854775808");
        assert_eq!(format_float(1e-7), "0.0000001");
        assert_eq!(format_float(1.5e20), "150000000000000000000");
        let tiny = format_float(5e-324);
        assert!(tiny.starts_with("0.000") && !tiny.contains('e'), "{tiny}");
        assert_eq!(tiny.parse::<f64>().unwrap(), 5e-324);
        assert_eq!(format_float(3.0), "3");
        assert_eq!(format_float(-0.0), "0");
        assert_eq!(parse_f64_strict(b"1.5"), Some(1.5));
        assert_eq!(format_float(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(parse_f64_strict(b"nan"), None);
        assert_eq!(parse_f64_strict(b" 1"), None);
    }

    #[test]
    fn floats_past_a_long_double_are_refused_as_strtold_does() {
        // Past a double, within a long double: an infinity (INCRBYFLOAT's "NaN or Infinity").
        assert_eq!(parse_f64_strict(b"1e309"), Some(f64::INFINITY));
        assert_eq!(parse_f64_strict(b"-1.1e4932"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_f64_strict(b"1e-400"), Some(0.0));
        // Past a long double (redis-server 7.0.15: "value is not a valid float").
        for text in [
            &b"1.7976931348623157e30810"[..],
            b"1.2e4932",
            b"-1e4933",
            b"1e-5000",
            b"1e99999999999999999999",
            b"0.0000001e-4945",
        ] {
            assert_eq!(
                parse_f64_strict(text),
                None,
                "{}",
                String::from_utf8_lossy(text)
            );
        }
        for text in [
            &b"inf"[..],
            b"-Infinity",
            b"0e-9999",
            b"0.000",
            b"1.18e4932",
        ] {
            assert!(
                parse_f64_strict(text).is_some(),
                "{}",
                String::from_utf8_lossy(text)
            );
        }
    }
}

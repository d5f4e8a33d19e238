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

/// Parses a float like Redis's `string2ld`: no spaces, no NaN.
pub fn parse_f64_strict(bytes: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(bytes).ok()?;
    if text.is_empty() || text.len() > 5000 || text.trim() != text {
        return None;
    }
    let v: f64 = text.parse().ok()?;
    (!v.is_nan()).then_some(v)
}

/// Formats an INCRBYFLOAT result like Redis's human long-double format: no exponent, no
/// trailing zeros, and rounded to 16 significant digits. Redis adds in long double (64-bit
/// mantissa) and prints 17 decimals, so the double's rounding error in sums like 0.1 + 0.2
/// never shows there ("0.3"); the double's own shortest form would ("0.30000000000000004").
/// The sum stays a double (every replica must compute the same value on any CPU), rounded
/// once more here, and the text is what is stored.
pub fn format_float(v: f64) -> String {
    if v == 0.0 {
        return "0".to_string();
    }
    let rounded: f64 = format!("{v:.15e}").parse().unwrap_or(v);
    // An integral value prints all its digits, as Redis's fixed-point format does (the
    // shortest form of 2^63 would end in zeros: 9223372036854776000).
    if rounded.fract() == 0.0 && rounded.abs() < 1e38 {
        return (rounded as i128).to_string();
    }
    format!("{rounded}")
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // The double's rounding error does not show, as in Redis.
        assert_eq!(format_float(0.1 + 0.2), "0.3");
        assert_eq!(format_float(1.1 + 2.2), "3.3");
        assert_eq!(format_float(-0.1 - 0.2), "-0.3");
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
        assert_eq!(parse_f64_strict(b"nan"), None);
        assert_eq!(parse_f64_strict(b" 1"), None);
    }
}

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

/// Formats a float like Redis's human long-double format: shortest round-trip decimal,
/// no exponent, no trailing zeros.
pub fn format_float(v: f64) -> String {
    if v == 0.0 {
        return "0".to_string();
    }
    let text = format!("{v}");
    text
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
        assert_eq!(format_float(3.0), "3");
        assert_eq!(format_float(-0.0), "0");
        assert_eq!(parse_f64_strict(b"1.5"), Some(1.5));
        assert_eq!(parse_f64_strict(b"nan"), None);
        assert_eq!(parse_f64_strict(b" 1"), None);
    }
}

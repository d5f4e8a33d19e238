//! Reply encoding for RESP2 and RESP3.
//!
//! One [`Reply`] type for both protocol versions; [`encode_reply`] picks the wire form from the
//! connection's [`ProtocolVersion`], the way Redis's `addReply*` functions look at `c->resp`:
//!
//! | reply | RESP2 | RESP3 |
//! |---|---|---|
//! | `Null` | `$-1\r\n` | `_\r\n` |
//! | `NullArray` | `*-1\r\n` | `_\r\n` |
//! | `Map` of N pairs | `*2N` flat array | `%N` |
//! | `Set` | `*N` | `~N` |
//! | `Double` | bulk string | `,1.5\r\n` |
//! | `Bool` | `:1` / `:0` | `#t` / `#f` |
//! | `Verbatim` | bulk string | `=N\r\ntxt:…` |
//!
//! Doubles are printed as Redis 7.2+ prints them (`fpconv_dtoa`): the shortest text that reads
//! back to the same `f64` (from `ryu`), laid out like `%g`: `1`, `1.5`, `0.001`, `1e+20`, `1e-7`,
//! `inf`, `-inf`, `nan`. (Redis 7.0 used `%.17g`, which prints `0.1` as `0.10000000000000001`.)
//!
//! Status and error texts must be one line: a `\r` or `\n` in them is written as a space (Redis 7
//! does the same for formatted errors), so a client-supplied word inside an error message cannot
//! inject a reply.

use bytes::{BufMut, Bytes, BytesMut};

/// The RESP version a connection speaks: RESP2 until the client sends `HELLO 3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ProtocolVersion {
    /// RESP2, the default of every new connection.
    #[default]
    Resp2,
    /// RESP3, after `HELLO 3`.
    Resp3,
}

impl ProtocolVersion {
    /// The version for a `HELLO` protover argument: `2` or `3`, anything else `None`
    /// (Redis replies `-NOPROTO unsupported protocol version`).
    pub fn from_protover(n: i64) -> Option<Self> {
        match n {
            2 => Some(ProtocolVersion::Resp2),
            3 => Some(ProtocolVersion::Resp3),
            _ => None,
        }
    }

    /// The protover number, as `HELLO` reports it in its `proto` field.
    pub fn number(self) -> i64 {
        match self {
            ProtocolVersion::Resp2 => 2,
            ProtocolVersion::Resp3 => 3,
        }
    }
}

/// A reply to a client, independent of the protocol version it will be encoded for.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// Simple string, `+OK`. Use `Bytes::from_static` (or [`Reply::status`]) for constants.
    Status(Bytes),
    /// Error, with its code: `ERR syntax error` is sent as `-ERR syntax error\r\n`.
    Error(Bytes),
    /// Integer, `:1`.
    Integer(i64),
    /// Bulk string, `$3\r\nfoo\r\n`.
    Bulk(Bytes),
    /// A missing value: RESP2 `$-1\r\n`, RESP3 `_\r\n`.
    Null,
    /// A missing array (e.g. `BLPOP` timeout): RESP2 `*-1\r\n`, RESP3 `_\r\n`.
    NullArray,
    /// Array, `*N` then the elements.
    Array(Vec<Reply>),
    /// Map: RESP3 `%N` then key, value, key, value…; RESP2 a flat array of `2N` elements.
    Map(Vec<(Reply, Reply)>),
    /// Set: RESP3 `~N`; RESP2 an array.
    Set(Vec<Reply>),
    /// Double: RESP3 `,1.5\r\n`; RESP2 a bulk string of the same text.
    Double(f64),
    /// Boolean: RESP3 `#t` / `#f`; RESP2 the integer 1 / 0.
    Bool(bool),
    /// Verbatim text (e.g. `INFO`): RESP3 `=N\r\ntxt:…`; RESP2 a bulk string of the text.
    Verbatim(Bytes),
    /// Out-of-band data (Pub/Sub messages and confirmations): RESP3 `>N` then the elements;
    /// RESP2 an array.
    Push(Vec<Reply>),
}

impl Reply {
    /// `+OK`.
    pub fn ok() -> Reply {
        Reply::Status(Bytes::from_static(b"OK"))
    }

    /// `+PONG`.
    pub fn pong() -> Reply {
        Reply::Status(Bytes::from_static(b"PONG"))
    }

    /// A simple string; `&'static str` converts without copying.
    pub fn status(text: impl Into<Bytes>) -> Reply {
        Reply::Status(text.into())
    }

    /// An error; `text` starts with the code: `Reply::error("ERR syntax error")`.
    /// `&'static str` converts without copying.
    pub fn error(text: impl Into<Bytes>) -> Reply {
        Reply::Error(text.into())
    }

    /// A bulk string.
    pub fn bulk(data: impl Into<Bytes>) -> Reply {
        Reply::Bulk(data.into())
    }

    /// A bulk string, or [`Reply::Null`] for `None` (`GET` of a missing key).
    pub fn bulk_or_null(data: Option<Bytes>) -> Reply {
        data.map_or(Reply::Null, Reply::Bulk)
    }

    /// Whether this is an [`Reply::Error`].
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }
}

/// Appends the encoding of `reply` for `version` to `out`.
///
/// Allocates nothing but `out`'s growth: numbers go through `itoa` / `ryu` stack buffers.
/// Nesting is encoded recursively; replies are built by the server, so their depth is its own.
pub fn encode_reply(reply: &Reply, version: ProtocolVersion, out: &mut BytesMut) {
    let resp3 = version == ProtocolVersion::Resp3;
    match reply {
        Reply::Status(text) => put_line(out, b'+', text),
        Reply::Error(text) => put_line(out, b'-', text),
        Reply::Integer(n) => put_int_line(out, b':', *n),
        Reply::Bulk(data) => put_bulk(out, data),
        Reply::Null => out.extend_from_slice(if resp3 { b"_\r\n" } else { b"$-1\r\n" }),
        Reply::NullArray => out.extend_from_slice(if resp3 { b"_\r\n" } else { b"*-1\r\n" }),
        Reply::Array(items) => {
            put_len_line(out, b'*', items.len());
            for item in items {
                encode_reply(item, version, out);
            }
        }
        Reply::Map(pairs) => {
            if resp3 {
                put_len_line(out, b'%', pairs.len());
            } else {
                put_len_line(out, b'*', pairs.len().saturating_mul(2));
            }
            for (key, value) in pairs {
                encode_reply(key, version, out);
                encode_reply(value, version, out);
            }
        }
        Reply::Set(items) | Reply::Push(items) => {
            let prefix = match (resp3, reply) {
                (false, _) => b'*',
                (true, Reply::Set(_)) => b'~',
                (true, _) => b'>',
            };
            put_len_line(out, prefix, items.len());
            for item in items {
                encode_reply(item, version, out);
            }
        }
        Reply::Double(d) => {
            let mut text = DoubleText::new();
            let text = text.format(*d);
            if resp3 {
                out.reserve(text.len() + 3);
                out.put_u8(b',');
                out.extend_from_slice(text);
                out.extend_from_slice(b"\r\n");
            } else {
                put_bulk(out, text);
            }
        }
        Reply::Bool(b) => out.extend_from_slice(match (resp3, b) {
            (true, true) => b"#t\r\n",
            (true, false) => b"#f\r\n",
            (false, true) => b":1\r\n",
            (false, false) => b":0\r\n",
        }),
        Reply::Verbatim(text) => {
            if resp3 {
                put_len_line(out, b'=', text.len().saturating_add(4));
                out.reserve(text.len() + 6);
                out.extend_from_slice(b"txt:");
                out.extend_from_slice(text);
                out.extend_from_slice(b"\r\n");
            } else {
                put_bulk(out, text);
            }
        }
    }
}

/// Appends a bulk string reply holding `data` (the same bytes as `Reply::Bulk` in both
/// protocols), for callers that hold the bytes only under a lock.
pub fn encode_bulk(data: &[u8], out: &mut BytesMut) {
    put_bulk(out, data);
}

/// `{prefix}{text}\r\n`, with any CR or LF of `text` written as a space.
fn put_line(out: &mut BytesMut, prefix: u8, text: &[u8]) {
    out.reserve(text.len() + 3);
    out.put_u8(prefix);
    if text.iter().any(|&b| b == b'\r' || b == b'\n') {
        for &b in text {
            out.put_u8(if b == b'\r' || b == b'\n' { b' ' } else { b });
        }
    } else {
        out.extend_from_slice(text);
    }
    out.extend_from_slice(b"\r\n");
}

/// `{prefix}{n}\r\n` for a signed number.
fn put_int_line(out: &mut BytesMut, prefix: u8, n: i64) {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(n).as_bytes();
    out.reserve(digits.len() + 3);
    out.put_u8(prefix);
    out.extend_from_slice(digits);
    out.extend_from_slice(b"\r\n");
}

/// `{prefix}{len}\r\n` for an aggregate or bulk length.
fn put_len_line(out: &mut BytesMut, prefix: u8, len: usize) {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(len).as_bytes();
    out.reserve(digits.len() + 3);
    out.put_u8(prefix);
    out.extend_from_slice(digits);
    out.extend_from_slice(b"\r\n");
}

/// `${len}\r\n{data}\r\n`.
fn put_bulk(out: &mut BytesMut, data: &[u8]) {
    put_len_line(out, b'$', data.len());
    out.reserve(data.len() + 2);
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Stack buffer for a double's text; the longest output (`-1.2345678901234567e-308`, 24 bytes)
/// is well under its size.
pub(crate) struct DoubleText {
    buf: [u8; 40],
    len: usize,
}

impl DoubleText {
    pub(crate) fn new() -> Self {
        DoubleText {
            buf: [0; 40],
            len: 0,
        }
    }

    fn push(&mut self, b: u8) {
        // Cannot overflow (see the type's doc); a debug build would say so, a release build
        // truncates rather than panics.
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = b;
            self.len += 1;
        } else {
            debug_assert!(false, "double text longer than its buffer");
        }
    }

    fn push_all(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.push(b);
        }
    }

    /// Formats `d` like Redis's `fpconv_dtoa` and returns the text.
    pub(crate) fn format(&mut self, d: f64) -> &[u8] {
        self.len = 0;
        if d.is_nan() {
            self.push_all(b"nan");
        } else if d.is_infinite() {
            self.push_all(if d > 0.0 { b"inf" } else { b"-inf" });
        } else if d == 0.0 {
            self.push_all(if d.is_sign_negative() { b"-0" } else { b"0" });
        } else {
            let mut ryu = ryu::Buffer::new();
            let (negative, digits, ndigits, k) = shortest_digits(ryu.format_finite(d).as_bytes());
            if negative {
                self.push(b'-');
            }
            self.emit(&digits[..ndigits], k);
        }
        &self.buf[..self.len]
    }

    /// `fpconv`'s `emit_digits`: the value is `digits × 10^k`, `digits` without trailing zeros.
    fn emit(&mut self, digits: &[u8], k: i32) {
        let nd = i32::try_from(digits.len()).unwrap_or(i32::MAX);
        let exp = (k + nd - 1).abs();
        if k >= 0 && exp < nd + 7 {
            // Plain integer: digits then k zeros (k < 8 here).
            self.push_all(digits);
            for _ in 0..k {
                self.push(b'0');
            }
        } else if k < 0 && (k > -7 || exp < 4) {
            // Decimal without exponent.
            let offset = nd + k;
            if offset <= 0 {
                self.push_all(b"0.");
                for _ in 0..-offset {
                    self.push(b'0');
                }
                self.push_all(digits);
            } else {
                let split = usize::try_from(offset).unwrap_or(0).min(digits.len());
                self.push_all(&digits[..split]);
                self.push(b'.');
                self.push_all(&digits[split..]);
            }
        } else {
            // Scientific: d[.ddd]e±X (exponent without padding, as fpconv writes it).
            let (first, rest) = digits.split_first().unwrap_or((&b'0', &[]));
            self.push(*first);
            if !rest.is_empty() {
                self.push(b'.');
                self.push_all(rest);
            }
            self.push(b'e');
            self.push(if k + nd - 1 < 0 { b'-' } else { b'+' });
            let mut e = itoa::Buffer::new();
            self.push_all(e.format(exp).as_bytes());
        }
    }
}

/// Splits `ryu`'s output (`-1.5e-7`, `1234.5`, `0.001`, `1e20`, `100.0`) into sign, significant
/// digits without leading or trailing zeros, their count, and `k` such that the value is
/// `digits × 10^k`.
fn shortest_digits(text: &[u8]) -> (bool, [u8; 24], usize, i32) {
    let (negative, text) = match text {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, text),
    };
    let (mantissa, exponent) = match text.iter().position(|&b| b == b'e') {
        Some(e) => (&text[..e], parse_exponent(&text[e + 1..])),
        None => (text, 0),
    };
    let mut digits = [0u8; 24];
    let mut n = 0;
    let mut frac_len: i32 = 0;
    let mut after_point = false;
    for &b in mantissa {
        if b == b'.' {
            after_point = true;
            continue;
        }
        if after_point {
            frac_len += 1;
        }
        // Leading zeros carry no value.
        if n == 0 && b == b'0' {
            continue;
        }
        if let Some(slot) = digits.get_mut(n) {
            *slot = b;
            n += 1;
        }
    }
    let mut k = exponent - frac_len;
    while n > 1 && digits[n - 1] == b'0' {
        n -= 1;
        k += 1;
    }
    (negative, digits, n, k)
}

/// The exponent after `e` in `ryu`'s output: `20`, `-7`.
fn parse_exponent(s: &[u8]) -> i32 {
    let (negative, s) = match s {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, s),
    };
    let mut v: i32 = 0;
    for &b in s {
        v = v * 10 + i32::from(b - b'0');
    }
    if negative {
        -v
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn double(d: f64) -> String {
        String::from_utf8(DoubleText::new().format(d).to_vec()).unwrap()
    }

    #[test]
    fn doubles_like_fpconv() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0"),
            (-0.0, "-0"),
            (1.0, "1"),
            (-1.0, "-1"),
            (1.5, "1.5"),
            (0.1, "0.1"),
            (0.001, "0.001"),
            (1e-6, "0.000001"),
            (1e-7, "1e-7"),
            (1.5e-7, "1.5e-7"),
            (123.456, "123.456"),
            (100.0, "100"),
            (1e7, "10000000"),
            (1e8, "1e+8"),
            (12345678.0, "12345678"),
            (123456789.0, "123456789"),
            (1e15, "1e+15"),
            (1e20, "1e+20"),
            (1.5e300, "1.5e+300"),
            (-2.5e-300, "-2.5e-300"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (123456789.123, "123456789.123"),
            (0.000123, "0.000123"),
            (12.3456789e-5, "1.23456789e-4"),
            (0.00123456789, "0.00123456789"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (f64::NAN, "nan"),
        ];
        for &(d, want) in cases {
            assert_eq!(double(d), want, "{d:e}");
        }
    }
}

//! A minimal RESP2/RESP3 client codec: encode commands, parse replies.
//!
//! Kept independent of the server crates on purpose: the bench must measure any RESP server
//! with its own view of the protocol. Two parsers share the same framing rules:
//! [`parse`] builds an owned [`Reply`] (handshakes, tests), [`scan`] only classifies a reply
//! (value, null, error, push) without allocating except for error text (the hot path).

use bytes::BufMut;

/// Deepest nesting of aggregate replies accepted before the reply is declared malformed.
pub const MAX_DEPTH: usize = 32;
/// Largest bulk string accepted (Redis's own `proto-max-bulk-len` default).
pub const MAX_BULK: usize = 512 * 1024 * 1024;
/// Largest aggregate length accepted (elements, or pairs for maps).
pub const MAX_AGGREGATE: usize = 64 * 1024 * 1024;
/// Longest simple line (status, error, number) accepted.
pub const MAX_LINE: usize = 64 * 1024;

/// Appends one command as a RESP array of bulk strings.
pub fn encode_command<B: BufMut, A: AsRef<[u8]>>(buf: &mut B, args: &[A]) {
    encode_header(buf, b'*', args.len());
    for a in args {
        encode_bulk(buf, a.as_ref());
    }
}

/// Appends an aggregate or bulk header such as `*3\r\n` or `$5\r\n`.
pub fn encode_header<B: BufMut>(buf: &mut B, kind: u8, len: usize) {
    let mut fmt = itoa::Buffer::new();
    buf.put_u8(kind);
    buf.put_slice(fmt.format(len).as_bytes());
    buf.put_slice(b"\r\n");
}

/// Appends one bulk string (`$len\r\nbytes\r\n`).
pub fn encode_bulk<B: BufMut>(buf: &mut B, data: &[u8]) {
    encode_header(buf, b'$', data.len());
    buf.put_slice(data);
    buf.put_slice(b"\r\n");
}

/// An owned reply, RESP2 and RESP3 types.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `+OK`
    Simple(String),
    /// `-ERR …` or RESP3 bulk error `!len`.
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$len` bulk string, or RESP3 verbatim string `=len` (format prefix kept).
    Bulk(Vec<u8>),
    /// `$-1`, `*-1` or RESP3 `_`.
    Null,
    /// `*len` array or RESP3 set `~len`.
    Array(Vec<Reply>),
    /// RESP3 map `%len`.
    Map(Vec<(Reply, Reply)>),
    /// RESP3 push `>len` (out-of-band data, not the answer to a request).
    Push(Vec<Reply>),
    /// RESP3 double `,` (kept as text to stay exact).
    Double(String),
    /// RESP3 boolean `#t` / `#f`.
    Boolean(bool),
    /// RESP3 big number `(`.
    BigNumber(String),
}

impl Reply {
    /// The error text if this reply is an error.
    pub fn as_error(&self) -> Option<&str> {
        match self {
            Reply::Error(e) => Some(e),
            _ => None,
        }
    }
}

/// What the hot path needs to know about one reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Any non-null, non-error reply.
    Value,
    /// A null reply (missing key).
    Null,
    /// An error reply with its text.
    Error(String),
    /// An out-of-band RESP3 push: not the answer to a request.
    Push,
}

/// The reply stream is not valid RESP: the connection cannot be used any more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "protocol error: {}", self.0)
    }
}

impl std::error::Error for ProtocolError {}

type Parsed<T> = Result<Option<(T, usize)>, ProtocolError>;

fn perr<T>(msg: impl Into<String>) -> Result<T, ProtocolError> {
    Err(ProtocolError(msg.into()))
}

/// Finds the line starting at `pos` (without the type byte); returns (line, next position).
fn line(buf: &[u8], pos: usize) -> Parsed<&[u8]> {
    let rest = &buf[pos.min(buf.len())..];
    let limit = rest.len().min(MAX_LINE + 2);
    match rest[..limit].windows(2).position(|w| w == b"\r\n") {
        Some(i) => Ok(Some((&rest[..i], pos + i + 2))),
        None if rest.len() > MAX_LINE + 1 => perr("line too long"),
        None => Ok(None),
    }
}

fn parse_int(text: &[u8]) -> Result<i64, ProtocolError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| ProtocolError(format!("bad integer {:?}", String::from_utf8_lossy(text))))
}

/// Parses a length line: `Some(len)` or `None` for the RESP2 null `-1`.
fn parse_len(text: &[u8], max: usize) -> Result<Option<usize>, ProtocolError> {
    let n = parse_int(text)?;
    if n == -1 {
        return Ok(None);
    }
    let n = usize::try_from(n).map_err(|_| ProtocolError(format!("negative length {n}")))?;
    if n > max {
        return perr(format!("length {n} over limit {max}"));
    }
    Ok(Some(n))
}

/// Reads `len` bytes plus CRLF at `pos`.
fn blob(buf: &[u8], pos: usize, len: usize) -> Parsed<&[u8]> {
    let end = pos
        .checked_add(len)
        .and_then(|e| e.checked_add(2))
        .ok_or_else(|| ProtocolError("length overflow".into()))?;
    if buf.len() < end {
        return Ok(None);
    }
    if &buf[end - 2..end] != b"\r\n" {
        return perr("bulk not terminated by CRLF");
    }
    Ok(Some((&buf[pos..pos + len], end)))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Parses one complete reply at the start of `buf`.
///
/// `Ok(None)` means more bytes are needed; `Ok(Some((reply, consumed)))` otherwise.
/// RESP3 attributes (`|`) are parsed and dropped: the reply they decorate is returned.
pub fn parse(buf: &[u8]) -> Parsed<Reply> {
    parse_at(buf, 0, 0)
}

fn parse_at(buf: &[u8], pos: usize, depth: usize) -> Parsed<Reply> {
    if depth > MAX_DEPTH {
        return perr("reply nested too deep");
    }
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    let Some((head, mut next)) = line(buf, pos + 1)? else {
        return Ok(None);
    };
    let reply = match kind {
        b'+' => Reply::Simple(text(head)),
        b'-' => Reply::Error(text(head)),
        b':' => Reply::Integer(parse_int(head)?),
        b',' => Reply::Double(text(head)),
        b'(' => Reply::BigNumber(text(head)),
        b'_' => Reply::Null,
        b'#' => match head {
            b"t" => Reply::Boolean(true),
            b"f" => Reply::Boolean(false),
            _ => return perr("bad boolean"),
        },
        b'$' | b'!' | b'=' => match parse_len(head, MAX_BULK)? {
            None => Reply::Null,
            Some(len) => {
                let Some((data, end)) = blob(buf, next, len)? else {
                    return Ok(None);
                };
                next = end;
                if kind == b'!' {
                    Reply::Error(text(data))
                } else {
                    Reply::Bulk(data.to_vec())
                }
            }
        },
        b'*' | b'~' | b'>' => match parse_len(head, MAX_AGGREGATE)? {
            None => Reply::Null,
            Some(len) => {
                // Capacity bounded: the length comes from the wire.
                let mut items = Vec::with_capacity(len.min(1024));
                for _ in 0..len {
                    let Some((item, end)) = parse_at(buf, next, depth + 1)? else {
                        return Ok(None);
                    };
                    items.push(item);
                    next = end;
                }
                if kind == b'>' {
                    Reply::Push(items)
                } else {
                    Reply::Array(items)
                }
            }
        },
        b'%' | b'|' => {
            let Some(len) = parse_len(head, MAX_AGGREGATE)? else {
                return perr("null map");
            };
            let mut pairs = Vec::with_capacity(len.min(1024));
            for _ in 0..len {
                let Some((k, end)) = parse_at(buf, next, depth + 1)? else {
                    return Ok(None);
                };
                let Some((v, end)) = parse_at(buf, end, depth + 1)? else {
                    return Ok(None);
                };
                pairs.push((k, v));
                next = end;
            }
            if kind == b'|' {
                // An attribute decorates the reply that follows it.
                return parse_at(buf, next, depth + 1);
            }
            Reply::Map(pairs)
        }
        other => return perr(format!("unknown reply type byte 0x{other:02x}")),
    };
    Ok(Some((reply, next)))
}

/// Classifies one complete reply at the start of `buf` without building it.
///
/// Same framing and limits as [`parse`]; only an error's text is copied.
pub fn scan(buf: &[u8]) -> Parsed<Outcome> {
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    match kind {
        b'-' => {
            let Some((head, next)) = line(buf, 1)? else {
                return Ok(None);
            };
            Ok(Some((Outcome::Error(text(head)), next)))
        }
        b'_' => Ok(line(buf, 1)?.map(|(_, next)| (Outcome::Null, next))),
        b'$' | b'!' | b'*' => {
            let Some((head, next)) = line(buf, 1)? else {
                return Ok(None);
            };
            if head == b"-1" {
                return Ok(Some((Outcome::Null, next)));
            }
            if kind == b'!' {
                let Some(len) = parse_len(head, MAX_BULK)? else {
                    return perr("null bulk error");
                };
                return Ok(blob(buf, next, len)?.map(|(d, end)| (Outcome::Error(text(d)), end)));
            }
            if kind == b'$' {
                let Some(len) = parse_len(head, MAX_BULK)? else {
                    return perr("bad null");
                };
                return Ok(blob(buf, next, len)?.map(|(_, end)| (Outcome::Value, end)));
            }
            skip_value(buf)
        }
        b'>' => Ok(skip(buf, 0, 0)?.map(|end| (Outcome::Push, end))),
        b'|' => {
            // Skip the attribute, then classify what follows.
            let Some(end) = skip_one(buf, 0, 0)? else {
                return Ok(None);
            };
            Ok(scan(&buf[end..])?.map(|(o, n)| (o, end + n)))
        }
        _ => skip_value(buf),
    }
}

fn skip_value(buf: &[u8]) -> Parsed<Outcome> {
    Ok(skip(buf, 0, 0)?.map(|end| (Outcome::Value, end)))
}

/// Skips one reply (attributes included) and returns the position after it.
fn skip(buf: &[u8], pos: usize, depth: usize) -> Result<Option<usize>, ProtocolError> {
    let Some(end) = skip_one(buf, pos, depth)? else {
        return Ok(None);
    };
    if buf.get(pos) == Some(&b'|') {
        return skip(buf, end, depth + 1);
    }
    Ok(Some(end))
}

/// Skips one frame (an attribute counts as one frame on its own).
fn skip_one(buf: &[u8], pos: usize, depth: usize) -> Result<Option<usize>, ProtocolError> {
    if depth > MAX_DEPTH {
        return perr("reply nested too deep");
    }
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    let Some((head, next)) = line(buf, pos + 1)? else {
        return Ok(None);
    };
    match kind {
        b'#' if head != b"t" && head != b"f" => perr("bad boolean"),
        b'+' | b'-' | b':' | b',' | b'(' | b'_' | b'#' => Ok(Some(next)),
        b'$' | b'!' | b'=' => match parse_len(head, MAX_BULK)? {
            None => Ok(Some(next)),
            Some(len) => Ok(blob(buf, next, len)?.map(|(_, end)| end)),
        },
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let Some(len) = parse_len(head, MAX_AGGREGATE)? else {
                return Ok(Some(next));
            };
            let items = if matches!(kind, b'%' | b'|') {
                len.checked_mul(2)
                    .ok_or_else(|| ProtocolError("length overflow".into()))?
            } else {
                len
            };
            let mut at = next;
            for _ in 0..items {
                match skip(buf, at, depth + 1)? {
                    Some(end) => at = end,
                    None => return Ok(None),
                }
            }
            Ok(Some(at))
        }
        other => perr(format!("unknown reply type byte 0x{other:02x}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(input: &[u8]) -> Reply {
        let (r, n) = parse(input).unwrap().unwrap();
        assert_eq!(n, input.len(), "consumed all of {input:?}");
        r
    }

    fn outcome(input: &[u8]) -> Outcome {
        let (o, n) = scan(input).unwrap().unwrap();
        assert_eq!(n, input.len(), "scan consumed all of {input:?}");
        o
    }

    #[test]
    fn encodes_commands() {
        let mut buf = Vec::new();
        encode_command(&mut buf, &["SET", "k", ""]);
        assert_eq!(buf, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
    }

    #[test]
    fn parses_resp2_replies() {
        assert_eq!(full(b"+OK\r\n"), Reply::Simple("OK".into()));
        assert_eq!(
            full(b"-ERR value is not an integer or out of range\r\n"),
            Reply::Error("ERR value is not an integer or out of range".into())
        );
        assert_eq!(full(b":-42\r\n"), Reply::Integer(-42));
        assert_eq!(full(b"$3\r\nfoo\r\n"), Reply::Bulk(b"foo".to_vec()));
        assert_eq!(full(b"$0\r\n\r\n"), Reply::Bulk(vec![]));
        assert_eq!(full(b"$-1\r\n"), Reply::Null);
        assert_eq!(full(b"*-1\r\n"), Reply::Null);
        assert_eq!(
            full(b"*2\r\n:1\r\n*1\r\n$1\r\na\r\n"),
            Reply::Array(vec![
                Reply::Integer(1),
                Reply::Array(vec![Reply::Bulk(b"a".to_vec())])
            ])
        );
    }

    #[test]
    fn parses_resp3_replies() {
        assert_eq!(full(b"_\r\n"), Reply::Null);
        assert_eq!(full(b"#t\r\n"), Reply::Boolean(true));
        assert_eq!(full(b",1.5\r\n"), Reply::Double("1.5".into()));
        assert_eq!(full(b"(123\r\n"), Reply::BigNumber("123".into()));
        assert_eq!(
            full(b"!21\r\nSYNTAX invalid syntax\r\n"),
            Reply::Error("SYNTAX invalid syntax".into())
        );
        assert_eq!(full(b"=7\r\ntxt:abc\r\n"), Reply::Bulk(b"txt:abc".to_vec()));
        assert_eq!(
            full(b"%1\r\n+proto\r\n:3\r\n"),
            Reply::Map(vec![(Reply::Simple("proto".into()), Reply::Integer(3))])
        );
        assert_eq!(full(b"~1\r\n:1\r\n"), Reply::Array(vec![Reply::Integer(1)]));
        assert_eq!(
            full(b">2\r\n+a\r\n+b\r\n"),
            Reply::Push(vec![Reply::Simple("a".into()), Reply::Simple("b".into())])
        );
        // An attribute is dropped, the reply it decorates is returned.
        assert_eq!(full(b"|1\r\n+k\r\n+v\r\n:7\r\n"), Reply::Integer(7));
    }

    #[test]
    fn scan_classifies_like_parse() {
        assert_eq!(outcome(b"+OK\r\n"), Outcome::Value);
        assert_eq!(outcome(b"$3\r\nfoo\r\n"), Outcome::Value);
        assert_eq!(outcome(b"$-1\r\n"), Outcome::Null);
        assert_eq!(outcome(b"*-1\r\n"), Outcome::Null);
        assert_eq!(outcome(b"_\r\n"), Outcome::Null);
        assert_eq!(outcome(b":5\r\n"), Outcome::Value);
        assert_eq!(
            outcome(b"-WRONGTYPE Operation\r\n"),
            Outcome::Error("WRONGTYPE Operation".into())
        );
        assert_eq!(outcome(b"!3\r\nERR\r\n"), Outcome::Error("ERR".into()));
        assert_eq!(
            outcome(b"*2\r\n$1\r\na\r\n%1\r\n:1\r\n:2\r\n"),
            Outcome::Value
        );
        assert_eq!(outcome(b">1\r\n+x\r\n"), Outcome::Push);
        assert_eq!(outcome(b"|1\r\n+k\r\n+v\r\n$-1\r\n"), Outcome::Null);
    }

    #[test]
    fn incomplete_input_needs_more() {
        let whole: &[u8] = b"*3\r\n$3\r\nfoo\r\n%1\r\n+a\r\n:1\r\n!3\r\nERR\r\n";
        for cut in 0..whole.len() {
            assert_eq!(parse(&whole[..cut]), Ok(None), "parse cut at {cut}");
            assert_eq!(scan(&whole[..cut]), Ok(None), "scan cut at {cut}");
        }
        assert!(parse(whole).unwrap().is_some());
    }

    #[test]
    fn pipelined_replies_are_consumed_one_at_a_time() {
        let buf: &[u8] = b"+OK\r\n$-1\r\n-ERR x\r\n:1\r\n";
        let mut at = 0;
        let mut seen = Vec::new();
        while let Some((o, n)) = scan(&buf[at..]).unwrap() {
            seen.push(o);
            at += n;
        }
        assert_eq!(at, buf.len());
        assert_eq!(
            seen,
            vec![
                Outcome::Value,
                Outcome::Null,
                Outcome::Error("ERR x".into()),
                Outcome::Value
            ]
        );
    }

    #[test]
    fn malformed_input_is_an_error() {
        for bad in [
            &b"?x\r\n"[..],
            b"$-2\r\n",
            b"$abc\r\n",
            b"$3\r\nfooXY",
            b"#x\r\n",
            b"*99999999999\r\n",
        ] {
            assert!(parse(bad).is_err(), "parse {bad:?}");
            assert!(scan(bad).is_err(), "scan {bad:?}");
        }
        let mut deep = Vec::new();
        for _ in 0..(MAX_DEPTH + 2) {
            deep.extend_from_slice(b"*1\r\n");
        }
        deep.extend_from_slice(b":1\r\n");
        assert!(parse(&deep).is_err());
        assert!(scan(&deep).is_err());
    }
}

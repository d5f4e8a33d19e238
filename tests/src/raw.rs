//! A byte-level RESP client for exact wire checks: malformed frames, inline commands,
//! pipelining, RESP3 reply types, connection closes.

use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How long [`RawConn::read_reply`] waits for a complete reply.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Nesting bound when parsing replies (a sane server never gets near it).
const MAX_DEPTH: usize = 64;

/// One reply as it came over the wire, RESP2 or RESP3.
#[derive(Clone, PartialEq)]
pub enum Reply {
    /// `+text`
    Simple(String),
    /// `-text` (the whole line, code included: `"ERR syntax error"`).
    Error(String),
    /// `:n`
    Int(i64),
    /// `$n` with its bytes.
    Bulk(Vec<u8>),
    /// `$-1` (RESP2 null bulk).
    NilBulk,
    /// `*-1` (RESP2 null array).
    NilArray,
    /// `*n` with its elements.
    Array(Vec<Reply>),
    /// `_` (RESP3 null).
    Null,
    /// `,text` (RESP3 double, kept as its text).
    Double(String),
    /// `#t` / `#f`
    Bool(bool),
    /// `(text` (RESP3 big number, as text).
    BigNumber(String),
    /// `=n fmt:text` (RESP3 verbatim string): format and text.
    Verbatim(String, Vec<u8>),
    /// `%n` (RESP3 map), pairs in wire order.
    Map(Vec<(Reply, Reply)>),
    /// `~n` (RESP3 set), elements in wire order.
    Set(Vec<Reply>),
    /// `>n` (RESP3 push).
    Push(Vec<Reply>),
    /// `!n` (RESP3 blob error), text with code.
    BlobError(String),
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Simple(s) => write!(f, "+{s:?}"),
            Reply::Error(s) => write!(f, "-{s:?}"),
            Reply::Int(n) => write!(f, ":{n}"),
            Reply::Bulk(b) => write!(f, "${:?}", String::from_utf8_lossy(b)),
            Reply::NilBulk => write!(f, "$nil"),
            Reply::NilArray => write!(f, "*nil"),
            Reply::Array(v) => write!(f, "*{v:?}"),
            Reply::Null => write!(f, "_"),
            Reply::Double(s) => write!(f, ",{s}"),
            Reply::Bool(b) => write!(f, "#{b}"),
            Reply::BigNumber(s) => write!(f, "({s}"),
            Reply::Verbatim(fmt, b) => write!(f, "={fmt}:{:?}", String::from_utf8_lossy(b)),
            Reply::Map(m) => {
                write!(f, "%")?;
                f.debug_map()
                    .entries(m.iter().map(|(k, v)| (k, v)))
                    .finish()
            }
            Reply::Set(v) => write!(f, "~{v:?}"),
            Reply::Push(v) => write!(f, ">{v:?}"),
            Reply::BlobError(s) => write!(f, "!{s:?}"),
        }
    }
}

impl Reply {
    /// The error text if this is an error reply (simple or blob).
    pub fn as_err(&self) -> Option<&str> {
        match self {
            Reply::Error(s) | Reply::BlobError(s) => Some(s),
            _ => None,
        }
    }

    /// The reply as text if it is a simple, bulk or verbatim string.
    pub fn as_text(&self) -> Option<String> {
        match self {
            Reply::Simple(s) => Some(s.clone()),
            Reply::Bulk(b) | Reply::Verbatim(_, b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    /// True for any null: `$-1`, `*-1`, `_`.
    pub fn is_null(&self) -> bool {
        matches!(self, Reply::NilBulk | Reply::NilArray | Reply::Null)
    }

    /// A bulk reply from text, for comparisons.
    pub fn bulk(s: impl AsRef<[u8]>) -> Reply {
        Reply::Bulk(s.as_ref().to_vec())
    }

    /// An error reply from text, for comparisons.
    pub fn err(s: &str) -> Reply {
        Reply::Error(s.to_string())
    }

    /// `+OK`.
    pub fn ok() -> Reply {
        Reply::Simple("OK".to_string())
    }

    /// Key/value pairs of a map, or of a flat array with an even number of elements (the RESP2
    /// form of a map), keyed by their text.
    pub fn pairs(&self) -> Option<Vec<(String, Reply)>> {
        match self {
            Reply::Map(m) => m
                .iter()
                .map(|(k, v)| k.as_text().map(|k| (k, v.clone())))
                .collect(),
            Reply::Array(a) if a.len() % 2 == 0 => a
                .chunks(2)
                .map(|kv| kv[0].as_text().map(|k| (k, kv[1].clone())))
                .collect(),
            _ => None,
        }
    }
}

/// Encodes a command as a RESP multibulk request.
pub fn encode_command<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        let a = a.as_ref();
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// A TCP connection that sends raw bytes and parses replies itself.
pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawConn {
    /// Connects to `127.0.0.1:port`.
    pub fn connect(port: u16) -> anyhow::Result<RawConn> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
        stream.set_nodelay(true)?;
        Ok(RawConn {
            stream,
            buf: Vec::new(),
        })
    }

    /// Writes `bytes` as they are.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("writing to the server");
    }

    /// Writes `bytes` without panicking (the server may already have closed the socket).
    pub fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends one command as a multibulk request and reads its reply.
    pub fn cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Reply {
        self.send(&encode_command(args));
        self.read_reply()
    }

    /// Reads one complete reply; panics on timeout, EOF or a malformed reply.
    pub fn read_reply(&mut self) -> Reply {
        match self.try_read_reply(READ_TIMEOUT) {
            Ok(Some(r)) => r,
            Ok(None) => panic!("connection closed while waiting for a reply"),
            Err(e) => panic!("reading a reply: {e:#}"),
        }
    }

    /// Reads one complete reply. `Ok(None)` when the server closed the connection before a
    /// reply started.
    pub fn try_read_reply(&mut self, timeout: Duration) -> anyhow::Result<Option<Reply>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((reply, used)) = parse(&self.buf, 0)? {
                self.buf.drain(..used);
                return Ok(Some(reply));
            }
            match self.fill(deadline)? {
                0 if self.buf.is_empty() => return Ok(None),
                0 => bail!(
                    "connection closed in the middle of a reply: {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
                _ => {}
            }
        }
    }

    /// Asserts that the server closes the connection within `timeout` without sending
    /// anything more (a reset counts as closed).
    pub fn expect_closed(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            assert!(
                self.buf.is_empty(),
                "expected the connection to close, got more bytes: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
            match self.fill(deadline) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) => {
                    let reset = e.downcast_ref::<std::io::Error>().is_some_and(|io| {
                        matches!(
                            io.kind(),
                            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                        )
                    });
                    assert!(reset, "expected the connection to close: {e:#}");
                    return;
                }
            }
        }
    }

    /// Asserts that nothing arrives for `wait` (the server is waiting for more input).
    pub fn expect_silence(&mut self, wait: Duration) {
        let deadline = Instant::now() + wait;
        match self.fill(deadline) {
            Err(e) if is_timeout(&e) => {}
            Ok(0) => panic!("expected silence, the connection was closed"),
            Ok(_) => panic!(
                "expected silence, got {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
            Err(e) => panic!("expected silence: {e:#}"),
        }
    }

    /// Reads once into the buffer; returns the number of bytes read (0 = EOF).
    fn fill(&mut self, deadline: Instant) -> anyhow::Result<usize> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(ErrorKind::TimedOut, "read timed out").into());
        }
        self.stream.set_read_timeout(Some(left))?;
        let mut chunk = [0u8; 64 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(n)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Err(std::io::Error::new(ErrorKind::TimedOut, "read timed out").into())
            }
            Err(e) => Err(e.into()),
        }
    }
}

fn is_timeout(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == ErrorKind::TimedOut)
}

/// Parses one reply at `buf[0..]`: `Ok(None)` = incomplete, `Ok(Some((reply, bytes used)))`.
fn parse(buf: &[u8], depth: usize) -> anyhow::Result<Option<(Reply, usize)>> {
    if depth > MAX_DEPTH {
        bail!("reply nested deeper than {MAX_DEPTH}");
    }
    let Some(line_end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let Some(&tag) = buf.first() else {
        return Ok(None);
    };
    let line = std::str::from_utf8(&buf[1..line_end]).context("reply line is not UTF-8")?;
    let after = line_end + 2;
    let int = |s: &str| -> anyhow::Result<i64> {
        s.parse::<i64>()
            .with_context(|| format!("bad length/integer {s:?}"))
    };
    let reply = match tag {
        b'+' => (Reply::Simple(line.to_string()), after),
        b'-' => (Reply::Error(line.to_string()), after),
        b':' => (Reply::Int(int(line)?), after),
        b',' => (Reply::Double(line.to_string()), after),
        b'(' => (Reply::BigNumber(line.to_string()), after),
        b'_' => (Reply::Null, after),
        b'#' => match line {
            "t" => (Reply::Bool(true), after),
            "f" => (Reply::Bool(false), after),
            _ => bail!("bad boolean {line:?}"),
        },
        b'$' | b'=' | b'!' => {
            let n = int(line)?;
            if n < 0 {
                if tag == b'$' {
                    return Ok(Some((Reply::NilBulk, after)));
                }
                bail!("negative length {n}");
            }
            let n = usize::try_from(n)?;
            if buf.len() < after + n + 2 {
                return Ok(None);
            }
            if &buf[after + n..after + n + 2] != b"\r\n" {
                bail!("blob of length {n} not followed by CRLF");
            }
            let data = buf[after..after + n].to_vec();
            let used = after + n + 2;
            match tag {
                b'$' => (Reply::Bulk(data), used),
                b'!' => (
                    Reply::BlobError(String::from_utf8_lossy(&data).into_owned()),
                    used,
                ),
                _ => {
                    if data.len() < 4 || data[3] != b':' {
                        bail!("verbatim string without a format prefix");
                    }
                    let fmt = String::from_utf8_lossy(&data[..3]).into_owned();
                    (Reply::Verbatim(fmt, data[4..].to_vec()), used)
                }
            }
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n = int(line)?;
            if n < 0 {
                if tag == b'*' {
                    return Ok(Some((Reply::NilArray, after)));
                }
                bail!("negative aggregate length {n}");
            }
            let count = usize::try_from(n)? * if matches!(tag, b'%' | b'|') { 2 } else { 1 };
            let mut items = Vec::new();
            let mut pos = after;
            for _ in 0..count {
                match parse(&buf[pos..], depth + 1)? {
                    Some((r, used)) => {
                        items.push(r);
                        pos += used;
                    }
                    None => return Ok(None),
                }
            }
            let reply = match tag {
                b'*' => Reply::Array(items),
                b'~' => Reply::Set(items),
                b'>' => Reply::Push(items),
                b'%' => Reply::Map(pairs(items)),
                _ => {
                    // An attribute precedes the real reply: skip it and return that reply.
                    return Ok(parse(&buf[pos..], depth + 1)?.map(|(r, used)| (r, pos + used)));
                }
            };
            (reply, pos)
        }
        _ => bail!("unknown reply type byte {:?}", tag as char),
    };
    Ok(Some(reply))
}

fn pairs(items: Vec<Reply>) -> Vec<(Reply, Reply)> {
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(bytes: &[u8]) -> Reply {
        let (r, used) = parse(bytes, 0).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        r
    }

    #[test]
    fn parses_resp2_and_resp3() {
        assert_eq!(one(b"+OK\r\n"), Reply::ok());
        assert_eq!(one(b"-ERR x y\r\n"), Reply::err("ERR x y"));
        assert_eq!(one(b"$-1\r\n"), Reply::NilBulk);
        assert_eq!(one(b"$2\r\nhi\r\n"), Reply::bulk("hi"));
        assert_eq!(
            one(b"*2\r\n:1\r\n$0\r\n\r\n"),
            Reply::Array(vec![Reply::Int(1), Reply::bulk("")])
        );
        assert_eq!(
            one(b"%1\r\n+a\r\n,1.5\r\n"),
            Reply::Map(vec![(
                Reply::Simple("a".into()),
                Reply::Double("1.5".into())
            )])
        );
        assert_eq!(
            one(b"=9\r\ntxt:hello\r\n"),
            Reply::Verbatim("txt".into(), b"hello".to_vec())
        );
        assert_eq!(one(b"_\r\n"), Reply::Null);
    }

    #[test]
    fn incomplete_input_needs_more() {
        for cut in [&b"$5\r\nhel"[..], b"*2\r\n:1\r\n", b"+OK", b""] {
            assert!(parse(cut, 0).unwrap().is_none(), "{cut:?}");
        }
    }
}

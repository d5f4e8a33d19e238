//! Request decoding: multibulk (`*N\r\n$len\r\n…`) and inline requests, one at a time.
//!
//! # How a multibulk request is decoded
//!
//! 1. **Header pre-scan** ([`scan_multibulk`]). Walks the `*N` line and every `$len` line, checking
//!    each number against [`Limits`] as soon as its line is complete, and skips payloads by
//!    arithmetic, never by reading them. A client announcing `$999999999999` or `*99999999` is
//!    rejected at once, before a single payload byte is buffered, with Redis's exact error. The
//!    result is "incomplete", "empty request, skip N bytes", or "complete: N bytes, argc elements".
//!    Re-running it on every read costs a few header lines, not the payload size.
//! 2. **Slicing**. The complete frame is split off the buffer and frozen; each argument is a
//!    zero-copy [`Bytes`] slice of it ([`slice_args`] walks the already validated headers again).
//!
//! ## Why step 2 does not call `redis-protocol`
//!
//! Step 2 was first `redis_protocol::resp2::decode::decode_bytes_mut` on the pre-scanned frame,
//! then its `BytesFrame::Array` turned into `Vec<Bytes>`. That path is kept in the `speed` test
//! module (`cargo test --release -p proto-resp --lib -- --ignored --nocapture decode_speed`);
//! best of 7 on the 2-core build box, per request:
//!
//! | request | pre-scan + slices | pre-scan + redis-protocol |
//! |---|---|---|
//! | `GET key` | 100-150 ns | 225-275 ns |
//! | `SET key <100 B>` | ~140 ns | 290-350 ns |
//! | `MSET` with 10 pairs | ~800 ns | 1400-1700 ns |
//!
//! `redis-protocol` parses every header a second time through `nom` and `str::parse` and
//! allocates two intermediate vectors (range frames, then `BytesFrame`s); and the pre-scan has to
//! run anyway, because `redis-protocol` checks no limit before buffering and its line rules differ
//! from Redis's (strict `\r\n`, `+1` and `01` accepted). Most of what remains in our path is the
//! reference counting of the zero-copy `Bytes` slices. So the hot path slices from the pre-scan,
//! and `redis-protocol` is used where an independent implementation is what we want: decoding
//! replies for clients and tests ([`decode_reply`](crate::decode_reply)), and as the oracle the
//! test suite cross-checks [`decode_request`] and [`encode_reply`](crate::encode_reply) against.
//!
//! # Redis compatibility
//!
//! The rules are those of Redis 7's `processMultibulkBuffer` / `processInlineBuffer`:
//!
//! * A `*`/`$` line ends at its first `\r`; the byte after it is skipped unchecked, as are the two
//!   bytes after a bulk payload (Redis does not check them either). A NUL byte before that `\r`
//!   means "no line yet", like Redis's `strchr`.
//! * Numbers follow Redis's `string2ll`: no sign but `-`, no leading zeros, no spaces, < 21 bytes.
//! * `*N` with `N <= 0` (`*0`, `*-1`, also `*-5`) is an empty request: consumed and skipped.
//!   `N > INT_MAX` or `N > max_multibulk_len` is [`ProtoError::InvalidMultibulkLength`].
//! * `$N` with `N < 0` or `N > max_bulk_len` is [`ProtoError::InvalidBulkLength`].
//! * With [`Limits::unauthenticated`], `*N` with `N > 10` (even one over the other limits) and
//!   `$N` with `N > 16384` get Redis's "unauthenticated … length" errors.
//! * No `\r` in the rest of the buffer and more than `max_inline_len` bytes of it:
//!   [`ProtoError::TooBigMbulkCount`] for the `*` line, [`ProtoError::TooBigBulkCount`] for a `$`
//!   line (Redis's "too big bulk count string"). A line whose `\r` does come, but after more than
//!   `max_inline_len` bytes, gets the same error (Redis would say "invalid … length" if it all
//!   came in one read): that way the outcome never depends on where the reads ended.
//!
//! Inline requests are described in [`crate::inline`].

use bytes::{Buf, Bytes, BytesMut};

use crate::error::ProtoError;
use crate::inline;
use crate::limits::Limits;
use crate::scan::find_byte_or_nul;

/// One client request: the command name and its arguments, as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `args[0]` is the command name exactly as sent (not case-folded), the rest its arguments.
    /// Never empty when produced by [`decode_request`].
    ///
    /// Multibulk arguments and unquoted inline words are zero-copy slices of the read buffer:
    /// while one is alive, the whole buffer allocation it came from stays alive and the
    /// connection's `BytesMut` cannot reuse that space. Copy (`Bytes::copy_from_slice`) what
    /// outlives the request, such as a value kept in a cache, so a small value does not pin a
    /// read buffer and a size-based cache weigher sees the real cost.
    pub args: Vec<Bytes>,
}

impl Request {
    /// The command name as sent (`args[0]`), or an empty slice for a hand-built empty request.
    pub fn name(&self) -> &[u8] {
        self.args.first().map_or(&[], |a| &a[..])
    }
}

/// Decodes ONE request from the front of `buf`, consuming its bytes.
///
/// * `Ok(Some(req))`: a complete request; its bytes are gone from `buf`, later requests
///   (pipelining) stay for the next call.
/// * `Ok(None)`: need more bytes. `buf` is untouched, except that empty requests in front of
///   the incomplete one (blank inline lines, `*0`, `*-1`) have been consumed.
/// * `Err(e)`: the stream is broken; reply `-ERR {e}\r\n` and close the connection. What is left
///   in `buf` is unspecified.
///
/// Limits are checked before anything is buffered for a payload, so `buf` never needs to hold
/// more than `max_inline_len` bytes of headers plus what the announced lengths allow.
pub fn decode_request(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Request>, ProtoError> {
    loop {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        if first == b'*' {
            match scan_multibulk(buf, limits)? {
                Scan::Incomplete => return Ok(None),
                Scan::Skip { len } => buf.advance(len),
                Scan::Complete {
                    len,
                    header_len,
                    argc,
                } => {
                    let frame = buf.split_to(len).freeze();
                    return slice_args(frame, header_len, argc).map(|args| Some(Request { args }));
                }
            }
        } else {
            let Some(line) = inline::scan_line(buf, limits)? else {
                return Ok(None);
            };
            let mut frame = buf.split_to(line.consumed).freeze();
            frame.truncate(line.content_len);
            let args = inline::split_args(&frame)?;
            if !args.is_empty() {
                return Ok(Some(Request { args }));
            }
        }
    }
}

/// What the header pre-scan found at the front of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scan {
    /// The request is not complete yet.
    Incomplete,
    /// `*N` with `N <= 0`: a request without arguments, `len` bytes long, to be skipped.
    Skip {
        /// Bytes taken by the `*N` line.
        len: usize,
    },
    /// A complete multibulk request.
    Complete {
        /// Bytes taken by the whole request.
        len: usize,
        /// Bytes taken by the `*N` line.
        header_len: usize,
        /// Number of bulk strings, at least 1.
        argc: usize,
    },
}

/// Redis's `INT_MAX` bound on `*N`, whatever the configured limit.
const MAX_MULTIBULK_INT: i64 = 2_147_483_647;
/// [`Limits::UNAUTHENTICATED_MAX_MULTIBULK_LEN`] as the signed count is compared before the
/// sign is known.
const UNAUTH_MULTIBULK: i64 = 10;

/// Pre-scans the multibulk request at the front of `buf` (which starts with `*`): finds out
/// whether it is complete and checks every announced length against `limits` on the way.
pub(crate) fn scan_multibulk(buf: &[u8], limits: &Limits) -> Result<Scan, ProtoError> {
    let Some(cr) = find_cr(buf, 0) else {
        if buf.len() > limits.max_inline_len {
            return Err(ProtoError::TooBigMbulkCount);
        }
        return Ok(Scan::Incomplete);
    };
    // A line longer than the limit is refused even when its `\r` is there, as it would have
    // been had it arrived in smaller reads.
    if cr > limits.max_inline_len {
        return Err(ProtoError::TooBigMbulkCount);
    }
    let header_len = cr + 2;
    if header_len > buf.len() {
        return Ok(Scan::Incomplete);
    }
    let count = buf
        .get(1..cr)
        .and_then(parse_ll)
        .ok_or(ProtoError::InvalidMultibulkLength)?;
    if count > MAX_MULTIBULK_INT {
        return Err(ProtoError::InvalidMultibulkLength);
    }
    if limits.unauthenticated && count > UNAUTH_MULTIBULK {
        return Err(ProtoError::UnauthenticatedMultibulkLength);
    }
    if count <= 0 {
        return Ok(Scan::Skip { len: header_len });
    }
    let argc = usize::try_from(count).map_err(|_| ProtoError::InvalidMultibulkLength)?;
    if argc > limits.max_multibulk_len {
        return Err(ProtoError::InvalidMultibulkLength);
    }

    let mut pos = header_len;
    for _ in 0..argc {
        match bulk_header(buf, pos, limits)? {
            None => return Ok(Scan::Incomplete),
            Some((start, len)) => {
                // `len <= max_bulk_len`, but a limit near usize::MAX must not wrap.
                let end = start
                    .checked_add(len)
                    .and_then(|e| e.checked_add(2))
                    .ok_or(ProtoError::InvalidBulkLength)?;
                if end > buf.len() {
                    return Ok(Scan::Incomplete);
                }
                pos = end;
            }
        }
    }
    Ok(Scan::Complete {
        len: pos,
        header_len,
        argc,
    })
}

/// Reads the `$len` line at `pos`: `Ok(Some((payload_start, payload_len)))` once the line is
/// complete and valid, `Ok(None)` while it is incomplete.
fn bulk_header(
    buf: &[u8],
    pos: usize,
    limits: &Limits,
) -> Result<Option<(usize, usize)>, ProtoError> {
    let Some(cr) = find_cr(buf, pos) else {
        if buf.len().saturating_sub(pos) > limits.max_inline_len {
            return Err(ProtoError::TooBigBulkCount);
        }
        return Ok(None);
    };
    if cr.saturating_sub(pos) > limits.max_inline_len {
        return Err(ProtoError::TooBigBulkCount);
    }
    if cr + 2 > buf.len() {
        return Ok(None);
    }
    // `find_cr` returned an index >= pos, so `buf[pos]` exists.
    let first = buf.get(pos).copied().unwrap_or(b'\r');
    if first != b'$' {
        return Err(ProtoError::ExpectedDollar {
            got: shown_byte(first),
        });
    }
    let len = buf
        .get(pos + 1..cr)
        .and_then(parse_ll)
        .and_then(|n| usize::try_from(n).ok())
        .filter(|&n| n <= limits.max_bulk_len)
        .ok_or(ProtoError::InvalidBulkLength)?;
    if limits.unauthenticated && len > Limits::UNAUTHENTICATED_MAX_BULK_LEN {
        return Err(ProtoError::UnauthenticatedBulkLength);
    }
    Ok(Some((cr + 2, len)))
}

/// Builds the argument slices of a frame that [`scan_multibulk`] reported complete.
///
/// Every argument but the last is a `slice` of `frame` (one reference-count increment each); the
/// last one is `frame` itself, trimmed, which saves an increment and a decrement per request.
fn slice_args(mut frame: Bytes, header_len: usize, argc: usize) -> Result<Vec<Bytes>, ProtoError> {
    // `argc` is not a bare wire number here: the frame holds all `argc` elements, at least 6
    // bytes each (`$0\r\n\r\n`), so this allocation is bounded by the bytes received.
    let mut args = Vec::with_capacity(argc);
    let mut pos = header_len;
    for i in 0..argc {
        let Some((start, end)) = validated_bulk(&frame, pos) else {
            // Unreachable: the pre-scan saw this exact header complete and valid.
            debug_assert!(false, "pre-scanned frame failed to slice");
            return Err(ProtoError::InvalidBulkLength);
        };
        if i + 1 == argc {
            frame.truncate(end);
            frame.advance(start);
            args.push(frame);
            break;
        }
        args.push(frame.slice(start..end));
        pos = end + 2;
    }
    Ok(args)
}

/// The payload range of the `$len` header at `pos` in a pre-scanned frame, `None` if the frame
/// does not hold it (which the pre-scan rules out).
#[inline]
fn validated_bulk(frame: &[u8], pos: usize) -> Option<(usize, usize)> {
    let cr = find_cr(frame, pos)?;
    let len = usize::try_from(parse_ll(frame.get(pos + 1..cr)?)?).ok()?;
    let start = cr + 2;
    let end = start.checked_add(len)?;
    (end.checked_add(2)? <= frame.len()).then_some((start, end))
}

/// Index of the first `\r` at or after `from`, the way Redis's `strchr(p, '\r')` sees it:
/// `None` when the buffer ends, or a NUL byte comes, before any `\r`.
#[inline]
fn find_cr(buf: &[u8], from: usize) -> Option<usize> {
    let rest = buf.get(from..)?;
    let i = find_byte_or_nul(rest, b'\r')?;
    (rest.get(i) == Some(&b'\r')).then_some(from + i)
}

/// The byte as Redis's `%c` shows it in an error line: CR and LF become spaces (Redis 7 strips
/// them from error replies); other bytes map to the char with that code (Latin-1).
fn shown_byte(b: u8) -> char {
    match b {
        b'\r' | b'\n' => ' ',
        _ => char::from(b),
    }
}

/// Redis's `string2ll`: optional `-`, then `0` alone or a digit 1-9 followed by digits; fewer
/// than 21 bytes; must fit an `i64`. Anything else (`+1`, `01`, `-0`, ` 1`, empty) is `None`.
pub(crate) fn parse_ll(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() >= 21 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (negative, digits) = match s {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, s),
    };
    let (&first, rest) = digits.split_first()?;
    if !(b'1'..=b'9').contains(&first) {
        return None;
    }
    let mut v = u64::from(first - b'0');
    for &d in rest {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if negative {
        0i64.checked_sub_unsigned(v)
    } else {
        i64::try_from(v).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_ll_is_string2ll() {
        assert_eq!(parse_ll(b"0"), Some(0));
        assert_eq!(parse_ll(b"7"), Some(7));
        assert_eq!(parse_ll(b"-1"), Some(-1));
        assert_eq!(parse_ll(b"1234567890"), Some(1_234_567_890));
        assert_eq!(parse_ll(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_ll(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"-0",
            b"00",
            b"01",
            b"+1",
            b" 1",
            b"1 ",
            b"1a",
            b"9223372036854775808",
            b"-9223372036854775809",
            b"18446744073709551616",
            b"000000000000000000001",
        ] {
            assert_eq!(parse_ll(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn unauth_constant_matches() {
        assert_eq!(
            usize::try_from(UNAUTH_MULTIBULK).ok(),
            Some(Limits::UNAUTHENTICATED_MAX_MULTIBULK_LEN)
        );
    }

    #[test]
    fn find_cr_stops_at_nul() {
        assert_eq!(find_cr(b"*1\r\n", 0), Some(2));
        assert_eq!(find_cr(b"*1\0\r\n", 0), None);
        assert_eq!(find_cr(b"*1", 0), None);
        assert_eq!(find_cr(b"*1\r\n$1\r\n", 4), Some(6));
        assert_eq!(find_cr(b"ab", 5), None);
    }

    #[test]
    fn scan_reports_lengths() {
        let l = Limits::default();
        assert_eq!(
            scan_multibulk(b"*1\r\n$4\r\nPING\r\nrest", &l),
            Ok(Scan::Complete {
                len: 14,
                header_len: 4,
                argc: 1
            })
        );
        assert_eq!(scan_multibulk(b"*0\r\nx", &l), Ok(Scan::Skip { len: 4 }));
        assert_eq!(scan_multibulk(b"*1\r\n$4\r\nPIN", &l), Ok(Scan::Incomplete));
    }
}

/// Throughput comparison behind the design note in the module doc. Run with
/// `cargo test --release -p proto-resp -- --ignored --nocapture decode_speed`.
#[cfg(test)]
mod speed {
    use super::*;
    use redis_protocol::resp2::{decode::decode_bytes_mut, types::BytesFrame};
    use std::hint::black_box;
    use std::time::Instant;

    /// The pre-scan, then `redis-protocol` for the frame itself (the first design).
    fn decode_via_redis_protocol(
        buf: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<Request>, ProtoError> {
        loop {
            let Some(&first) = buf.first() else {
                return Ok(None);
            };
            if first != b'*' {
                return decode_request(buf, limits);
            }
            match scan_multibulk(buf, limits)? {
                Scan::Incomplete => return Ok(None),
                Scan::Skip { len } => buf.advance(len),
                Scan::Complete { .. } => {
                    let Ok(Some((BytesFrame::Array(frames), _, _))) = decode_bytes_mut(buf) else {
                        return Err(ProtoError::InvalidMultibulkLength);
                    };
                    let mut args = Vec::with_capacity(frames.len());
                    for f in frames {
                        match f {
                            BytesFrame::BulkString(b) => args.push(b),
                            _ => return Err(ProtoError::InvalidBulkLength),
                        }
                    }
                    return Ok(Some(Request { args }));
                }
            }
        }
    }

    fn workload(name: &str, one: &[u8]) -> (String, Bytes) {
        let mut all = BytesMut::new();
        for _ in 0..1000 {
            all.extend_from_slice(one);
        }
        (name.to_string(), all.freeze())
    }

    fn run(
        label: &str,
        input: &Bytes,
        f: fn(&mut BytesMut, &Limits) -> Result<Option<Request>, ProtoError>,
    ) -> f64 {
        let limits = Limits::default();
        let rounds = 500;
        let mut n = 0usize;
        let mut ns = f64::MAX;
        // Best of 7: the build machine is shared and noisy.
        for _ in 0..7 {
            let mut bufs: Vec<BytesMut> = (0..rounds).map(|_| BytesMut::from(&input[..])).collect();
            let start = Instant::now();
            for buf in &mut bufs {
                while let Ok(Some(r)) = f(buf, &limits) {
                    n += black_box(r).args.len();
                }
            }
            ns = ns.min(start.elapsed().as_nanos() as f64 / (rounds as f64 * 1000.0));
        }
        println!("{label:<40} {ns:8.1} ns/request ({n} args)");
        ns
    }

    #[test]
    #[ignore = "timing, run by hand"]
    fn decode_speed() {
        let value = vec![b'v'; 100];
        let mut set = b"*3\r\n$3\r\nSET\r\n$16\r\nkey:000000012345\r\n$100\r\n".to_vec();
        set.extend_from_slice(&value);
        set.extend_from_slice(b"\r\n");
        let mut mset = b"*21\r\n$4\r\nMSET\r\n".to_vec();
        for _ in 0..10 {
            mset.extend_from_slice(b"$16\r\nkey:000000012345\r\n$10\r\nvvvvvvvvvv\r\n");
        }
        for (name, input) in [
            workload("GET", b"*2\r\n$3\r\nGET\r\n$16\r\nkey:000000012345\r\n"),
            workload("SET 100B", &set),
            workload("MSET 10 pairs", &mset),
        ] {
            let ours = run(
                &format!("{name}: pre-scan + slices"),
                &input,
                decode_request,
            );
            let theirs = run(
                &format!("{name}: pre-scan + redis-protocol"),
                &input,
                decode_via_redis_protocol,
            );
            println!("  ratio {:.2}x", theirs / ours);
        }
        run("PING inline", &workload("", b"PING\r\n").1, decode_request);

        // Worst case of stateless re-scanning: junk without a line end, one byte per read,
        // up to the limit (the client is then disconnected).
        let limits = Limits::default();
        for first in [b'x', b'*'] {
            let start = Instant::now();
            let mut buf = BytesMut::new();
            buf.extend_from_slice(&[first]);
            while let Ok(None) = decode_request(&mut buf, &limits) {
                buf.extend_from_slice(b"1");
            }
            println!(
                "trickle {:?}... one byte per call until refused: {:?} total",
                char::from(first),
                start.elapsed()
            );
        }
    }
}

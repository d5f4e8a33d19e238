//! Inline requests: one line of space-separated words, as typed into telnet or sent by
//! `redis-benchmark`'s `PING_INLINE` (`PING\r\n`).
//!
//! Any request whose first byte is not `*` is inline. It ends at the first `\n` (a `\r` before it
//! is dropped) and is split like Redis's `sdssplitargs`:
//!
//! * words are separated by whitespace (C `isspace`: space, `\t`, `\n`, `\v`, `\f`, `\r`; inside an
//!   unquoted word only space, `\t`, `\n` and `\r` end it, as in Redis);
//! * `"double quotes"` understand `\n \r \t \b \a \\ \"` and `\xHH`; any other `\c` gives `c`;
//! * `'single quotes'` understand only `\'`;
//! * a quote may start in the middle of a word (`a"b c"` is `ab c`), and a closing quote must be
//!   followed by whitespace or the end of the line, else [`ProtoError::UnbalancedQuotes`], as is
//!   a missing closing quote;
//! * a line without any word (empty or blank) is no request: it is consumed and skipped.
//!
//! Limits: more than `max_inline_len` bytes before the `\n` (a `\r` counts) is
//! [`ProtoError::TooBigInlineRequest`]. Redis checks this only while the `\n` has not arrived, so
//! in Redis a longer line that arrives in one read passes; here it is refused whatever the reads.
//! Like Redis's `strchr`, a NUL byte hides the `\n` after it: such a line waits for more bytes
//! until it is too big.
//!
//! Words without quotes are zero-copy slices of the line; quoted words are copied (unescaped).

use bytes::Bytes;

use crate::error::ProtoError;
use crate::limits::Limits;
use crate::scan::find_byte_or_nul;

/// Where the inline line at the front of the buffer ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Line {
    /// Length of the line's content, without its `\n` or `\r\n`.
    pub(crate) content_len: usize,
    /// Bytes to consume: the content plus the line end.
    pub(crate) consumed: usize,
}

/// Finds the inline line at the front of `buf`: `Ok(None)` while its `\n` has not arrived.
pub(crate) fn scan_line(buf: &[u8], limits: &Limits) -> Result<Option<Line>, ProtoError> {
    let Some(nl) = find_newline(buf) else {
        if buf.len() > limits.max_inline_len {
            return Err(ProtoError::TooBigInlineRequest);
        }
        return Ok(None);
    };
    // Counted like the check above (everything before the `\n`, a `\r` included), so that
    // the outcome does not depend on where the reads ended.
    if nl > limits.max_inline_len {
        return Err(ProtoError::TooBigInlineRequest);
    }
    let content_len = if nl > 0 && buf.get(nl - 1) == Some(&b'\r') {
        nl - 1
    } else {
        nl
    };
    Ok(Some(Line {
        content_len,
        consumed: nl + 1,
    }))
}

/// Index of the first `\n`, or `None` if the buffer ends or a NUL comes first (Redis's `strchr`).
#[inline]
fn find_newline(buf: &[u8]) -> Option<usize> {
    let i = find_byte_or_nul(buf, b'\n')?;
    (buf.get(i) == Some(&b'\n')).then_some(i)
}

/// C `isspace` in the "C" locale.
#[inline]
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Bytes that end an unquoted word in `sdssplitargs` (NUL too: the line has none, see module doc).
#[inline]
fn ends_word(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\r' | b'\t' | 0)
}

/// Splits one inline line (without its line end) into words, like Redis's `sdssplitargs`.
/// An empty result means a blank line. The line is cut at its first NUL, as C would see it.
pub(crate) fn split_args(line: &Bytes) -> Result<Vec<Bytes>, ProtoError> {
    let end = line.iter().position(|&b| b == 0).unwrap_or(line.len());
    let s = &line[..end];
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while s.get(i).is_some_and(|&b| is_space(b)) {
            i += 1;
        }
        if i >= s.len() {
            return Ok(args);
        }
        let start = i;
        while s
            .get(i)
            .is_some_and(|&b| !ends_word(b) && b != b'"' && b != b'\'')
        {
            i += 1;
        }
        match s.get(i) {
            Some(&q @ (b'"' | b'\'')) => {
                let mut word = s[start..i].to_vec();
                i = if q == b'"' {
                    double_quoted(s, i + 1, &mut word)?
                } else {
                    single_quoted(s, i + 1, &mut word)?
                };
                args.push(Bytes::from(word));
            }
            // End of line, or a word end that `sdssplitargs` steps over.
            _ => {
                args.push(line.slice(start..i));
                i += 1;
            }
        }
    }
}

/// Reads a `"…"` word body starting at `i` (just after the opening quote) into `word`; returns
/// the index just after the closing quote.
fn double_quoted(s: &[u8], mut i: usize, word: &mut Vec<u8>) -> Result<usize, ProtoError> {
    loop {
        match s.get(i) {
            None => return Err(ProtoError::UnbalancedQuotes),
            Some(b'\\') => {
                let hex = |k: usize| s.get(i + k).and_then(|&b| hex_value(b));
                if let (Some(b'x'), Some(hi), Some(lo)) = (s.get(i + 1), hex(2), hex(3)) {
                    word.push(hi * 16 + lo);
                    i += 4;
                } else if let Some(&c) = s.get(i + 1) {
                    word.push(match c {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                    i += 2;
                } else {
                    // A lone backslash at the end: kept, then the quote is unterminated.
                    return Err(ProtoError::UnbalancedQuotes);
                }
            }
            Some(b'"') => return close_quote(s, i),
            Some(&c) => {
                word.push(c);
                i += 1;
            }
        }
    }
}

/// Reads a `'…'` word body starting at `i` into `word`; returns the index after the closing quote.
fn single_quoted(s: &[u8], mut i: usize, word: &mut Vec<u8>) -> Result<usize, ProtoError> {
    loop {
        match s.get(i) {
            None => return Err(ProtoError::UnbalancedQuotes),
            Some(b'\\') if s.get(i + 1) == Some(&b'\'') => {
                word.push(b'\'');
                i += 2;
            }
            Some(b'\'') => return close_quote(s, i),
            Some(&c) => {
                word.push(c);
                i += 1;
            }
        }
    }
}

/// A closing quote at `i` must be followed by whitespace or the end of the line.
fn close_quote(s: &[u8], i: usize) -> Result<usize, ProtoError> {
    match s.get(i + 1) {
        Some(&b) if !is_space(b) => Err(ProtoError::UnbalancedQuotes),
        _ => Ok(i + 1),
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &[u8]) -> Result<Vec<Vec<u8>>, ProtoError> {
        split_args(&Bytes::copy_from_slice(s)).map(|v| v.iter().map(|b| b.to_vec()).collect())
    }

    fn words(ws: &[&[u8]]) -> Result<Vec<Vec<u8>>, ProtoError> {
        Ok(ws.iter().map(|w| w.to_vec()).collect())
    }

    #[test]
    fn splits_like_sdssplitargs() {
        assert_eq!(split(b"PING"), words(&[b"PING"]));
        assert_eq!(split(b"  SET  k\tv  "), words(&[b"SET", b"k", b"v"]));
        assert_eq!(split(b""), words(&[]));
        assert_eq!(split(b" \t\x0b\x0c "), words(&[]));
        assert_eq!(split(b"PING\r"), words(&[b"PING"]));
        assert_eq!(split(b"ECHO a\rb"), words(&[b"ECHO", b"a", b"b"]));
        // \v and \f are skipped between words but belong to an unquoted word.
        assert_eq!(split(b"ECHO \x0bx"), words(&[b"ECHO", b"x"]));
        assert_eq!(split(b"ECHO x\x0by"), words(&[b"ECHO", b"x\x0by"]));
        assert_eq!(split(br#"ECHO "a\x41\n\q""#), words(&[b"ECHO", b"aA\nq"]));
        assert_eq!(split(br#""\xZZ""#), words(&[b"xZZ"]));
        assert_eq!(split(br#""\x4""#), words(&[b"x4"]));
        assert_eq!(split(br#""\r\t\b\a\\\"""#), words(&[b"\r\t\x08\x07\\\""]));
        assert_eq!(split(br"'a\'b\n'"), words(&[b"a'b\\n"]));
        assert_eq!(split(br#"ECHO """#), words(&[b"ECHO", b""]));
        assert_eq!(split(br#"a"b c" d"#), words(&[b"ab c", b"d"]));
        assert_eq!(split(b"\"x\"\x0b"), words(&[b"x"]));
        assert_eq!(split(b"GET a\0b c"), words(&[b"GET", b"a"]));
    }

    #[test]
    fn unbalanced_quotes() {
        for bad in [
            &br#"ECHO "abc"d"#[..],
            br#"ECHO "abc"#,
            br#"ECHO a"b c"d"#,
            br#"ECHO "a\""#,
            br#"ECHO "a\"#,
            br"ECHO 'x'y",
            br"ECHO 'x",
            b"ECHO \"a\0b\"",
        ] {
            assert_eq!(
                split(bad),
                Err(ProtoError::UnbalancedQuotes),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn scan_line_limits() {
        let l = Limits {
            max_inline_len: 8,
            ..Limits::default()
        };
        assert_eq!(
            scan_line(b"PING\r\nx", &l),
            Ok(Some(Line {
                content_len: 4,
                consumed: 6
            }))
        );
        assert_eq!(
            scan_line(b"PING\nx", &l),
            Ok(Some(Line {
                content_len: 4,
                consumed: 5
            }))
        );
        assert_eq!(scan_line(b"12345678", &l), Ok(None));
        assert_eq!(
            scan_line(b"123456789", &l),
            Err(ProtoError::TooBigInlineRequest)
        );
        assert_eq!(
            scan_line(b"123456789\n", &l),
            Err(ProtoError::TooBigInlineRequest)
        );
        assert_eq!(
            scan_line(b"12345678\r\n", &l),
            Err(ProtoError::TooBigInlineRequest)
        );
        assert_eq!(
            scan_line(b"1234567\r\n", &l),
            Ok(Some(Line {
                content_len: 7,
                consumed: 9
            }))
        );
        assert_eq!(
            scan_line(b"12345678\n", &l),
            Ok(Some(Line {
                content_len: 8,
                consumed: 9
            }))
        );
        assert_eq!(scan_line(b"a\0\nb", &l), Ok(None));
    }
}

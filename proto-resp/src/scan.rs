//! Byte search for line ends, eight bytes at a time.
//!
//! Without per-connection parser state, a line that arrives in many small reads is searched
//! again from its start on every call; for junk that never ends a line that is up to
//! `max_inline_len` bytes per read. Reading a `u64` word per step (SWAR) keeps that cheap without
//! a SIMD dependency.

const LO: u64 = u64::from_ne_bytes([0x01; 8]);
const HI: u64 = u64::from_ne_bytes([0x80; 8]);

/// Bit 7 of each byte of the result is set where `x` has a zero byte; the lowest set bit marks
/// the first zero byte exactly (higher ones can be false positives, which we never look at).
#[inline]
fn zero_bytes(x: u64) -> u64 {
    x.wrapping_sub(LO) & !x & HI
}

/// Index of the first byte of `hay` that is `needle` or NUL.
#[inline]
pub(crate) fn find_byte_or_nul(hay: &[u8], needle: u8) -> Option<usize> {
    let pattern = u64::from_ne_bytes([needle; 8]);
    let mut chunks = hay.chunks_exact(8);
    let mut base = 0;
    for chunk in &mut chunks {
        let Ok(bytes) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let word = u64::from_le_bytes(bytes);
        let hits = zero_bytes(word ^ pattern) | zero_bytes(word);
        if hits != 0 {
            // Little-endian load: the lowest set bit belongs to the first byte in memory.
            let offset = usize::try_from(hits.trailing_zeros() / 8).unwrap_or(0);
            return Some(base + offset);
        }
        base += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == needle || b == 0)
        .map(|i| base + i)
}

/// The keys of the GETs at the front of `buf`: consecutive complete requests of exactly the
/// shape `*2 $3 GET $n key` (the command in any case), up to `max` of them; stops at the first
/// request of any other shape or an incomplete one. Decodes nothing and consumes nothing: for
/// hints (prefetching the keys' cache entries before the requests run), never for meaning.
pub fn pipelined_get_keys(buf: &[u8], max: usize) -> impl Iterator<Item = &[u8]> {
    let mut rest = buf;
    let mut left = max;
    std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let after = rest.strip_prefix(b"*2\r\n$3\r\n")?;
        let (cmd, after) = after.split_at_checked(3)?;
        if !cmd.eq_ignore_ascii_case(b"GET") {
            return None;
        }
        let after = after.strip_prefix(b"\r\n$")?;
        let digits = after.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        let len: usize = std::str::from_utf8(&after[..digits]).ok()?.parse().ok()?;
        let after = after[digits..].strip_prefix(b"\r\n")?;
        let key = after.get(..len)?;
        rest = after[len..].strip_prefix(b"\r\n")?;
        left -= 1;
        Some(key)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(hay: &[u8], needle: u8) -> Option<usize> {
        hay.iter().position(|&b| b == needle || b == 0)
    }

    #[test]
    fn agrees_with_naive_search() {
        // Every position and neighbourhood of the 8-byte boundaries, with bytes that provoke
        // borrow false positives (0x01, 0x80, 0xff, needle ± 1).
        let fill = [b'a', 0x01, 0x80, 0xff, b'\r' + 1, b'\r' - 1];
        for len in 0..40 {
            for &f in &fill {
                let base = vec![f; len];
                assert_eq!(find_byte_or_nul(&base, b'\r'), naive(&base, b'\r'));
                for at in 0..len {
                    for hit in [b'\r', 0u8, b'\n'] {
                        let mut hay = base.clone();
                        hay[at] = hit;
                        if at + 1 < len {
                            hay[at + 1] = b'\r';
                        }
                        for needle in [b'\r', b'\n'] {
                            assert_eq!(
                                find_byte_or_nul(&hay, needle),
                                naive(&hay, needle),
                                "{hay:?}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn pipelined_get_keys_reads_only_complete_gets_at_the_front() {
        fn keys(buf: &[u8], max: usize) -> Vec<&[u8]> {
            pipelined_get_keys(buf, max).collect()
        }
        let two = b"*2\r\n$3\r\nGET\r\n$3\r\nfoo\r\n*2\r\n$3\r\nget\r\n$0\r\n\r\n";
        assert_eq!(keys(two, 10), vec![&b"foo"[..], &b""[..]]);
        assert_eq!(keys(two, 1), vec![&b"foo"[..]]);
        // Stops at another command, an incomplete request, a bad length or a missing CRLF.
        let then_set = b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n*3\r\n$3\r\nSET\r\n$1\r\nb\r\n$1\r\nc\r\n*2\r\n$3\r\nGET\r\n$1\r\nd\r\n";
        assert_eq!(keys(then_set, 10), vec![&b"a"[..]]);
        assert!(keys(b"*2\r\n$3\r\nGET\r\n$5\r\nab", 10).is_empty());
        assert!(keys(b"*2\r\n$3\r\nGET\r\n$x\r\nab\r\n", 10).is_empty());
        assert!(keys(b"*2\r\n$3\r\nGET\r\n$2\r\nabXY", 10).is_empty());
        assert!(keys(b"*2\r\n$3\r\nGET\r\n$99999999999\r\n", 10).is_empty());
        assert!(keys(b"GET foo\r\n", 10).is_empty());
        assert!(keys(b"", 10).is_empty());
    }
}

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
}

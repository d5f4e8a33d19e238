//! Arbitrary bytes through `decode_request`: no panic, every success consumes bytes, and the
//! outcome does not depend on how the input is cut into reads.
//!
//! The first input byte picks the limits (default or tiny, so that every limit is reachable
//! with short inputs; authenticated or not) and the read size for the second pass.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use proto_resp::{decode_request, Limits, ProtoError};

/// Requests decoded, then how the loop stopped: leftover bytes or the error.
type Outcome = (Vec<Vec<Vec<u8>>>, Result<Vec<u8>, ProtoError>);

fn decode_in_reads(input: &[u8], limits: &Limits, read: usize) -> Outcome {
    let mut buf = BytesMut::new();
    let mut requests = Vec::new();
    for piece in input.chunks(read.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match decode_request(&mut buf, limits) {
                Ok(Some(req)) => {
                    assert!(!req.args.is_empty(), "empty request");
                    assert!(buf.len() < before, "request without consuming bytes");
                    requests.push(req.args.iter().map(|a| a.to_vec()).collect());
                }
                Ok(None) => break,
                Err(e) => return (requests, Err(e)),
            }
        }
    }
    (requests, Ok(buf.to_vec()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, input)) = data.split_first() else {
        return;
    };
    let mut limits = if seed & 1 == 0 {
        Limits::default()
    } else {
        Limits {
            max_bulk_len: 64,
            max_multibulk_len: 8,
            max_inline_len: 32,
            ..Limits::default()
        }
    };
    limits.unauthenticated = seed & 2 != 0;
    let read = usize::from(seed >> 2) + 1;
    let whole = decode_in_reads(input, &limits, input.len());
    let pieces = decode_in_reads(input, &limits, read);
    assert_eq!(whole, pieces, "read size {read}");
});

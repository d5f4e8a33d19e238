//! Helpers shared by the test modules.

use bytes::{BufMut, BytesMut};
use proto_resp::{decode_request, Limits, ProtoError};

/// What one `decode_request` loop over a buffer produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The decoded requests, in order.
    pub requests: Vec<Vec<Vec<u8>>>,
    /// `Ok(leftover bytes)` when the loop stopped on `Ok(None)`, `Err(e)` when it failed.
    pub end: Result<Vec<u8>, ProtoError>,
}

/// Decodes every request in `buf` until `Ok(None)` or an error, checking each success consumed bytes.
pub fn decode_all(
    buf: &mut BytesMut,
    limits: &Limits,
    requests: &mut Vec<Vec<Vec<u8>>>,
) -> Result<(), ProtoError> {
    loop {
        let before = buf.len();
        match decode_request(buf, limits)? {
            Some(req) => {
                assert!(!req.args.is_empty(), "empty request returned");
                assert!(
                    buf.len() < before,
                    "request decoded without consuming bytes"
                );
                requests.push(req.args.iter().map(|a| a.to_vec()).collect());
            }
            None => {
                assert!(buf.len() <= before);
                return Ok(());
            }
        }
    }
}

/// Feeds `input` in pieces of `chunk` bytes (the whole input at once for `chunk >= len`),
/// decoding after each piece like a connection does after each read.
pub fn decode_chunked(input: &[u8], limits: &Limits, chunk: usize) -> Outcome {
    let mut buf = BytesMut::new();
    let mut requests = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        if let Err(e) = decode_all(&mut buf, limits, &mut requests) {
            return Outcome {
                requests,
                end: Err(e),
            };
        }
    }
    if input.is_empty() {
        decode_all(&mut buf, limits, &mut requests).expect("empty input cannot fail");
    }
    Outcome {
        requests,
        end: Ok(buf.to_vec()),
    }
}

/// Decodes `input` in one go.
pub fn decode_whole(input: &[u8], limits: &Limits) -> Outcome {
    decode_chunked(input, limits, input.len())
}

/// Encodes a request the way client libraries do: a RESP array of bulk strings.
pub fn encode_request(args: &[Vec<u8>], out: &mut BytesMut) {
    out.put_u8(b'*');
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for a in args {
        out.put_u8(b'$');
        out.extend_from_slice(a.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Small limits, so that every limit is reachable with short inputs.
pub fn small_limits() -> Limits {
    Limits {
        max_bulk_len: 64,
        max_multibulk_len: 8,
        max_inline_len: 32,
        ..Limits::default()
    }
}

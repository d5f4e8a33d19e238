//! Reply decoding, for clients of a RESP server (the bench driver, tests), on `redis-protocol`.
//!
//! This is the other direction of [`encode_reply`](crate::encode_reply), done by an independent
//! implementation: `redis-protocol`'s RESP2 decoder (`resp2::decode::decode_bytes_mut`) or its
//! RESP3 decoder (`resp3::decode::complete::decode_bytes_mut`), picked by the
//! [`ProtocolVersion`]. Its frames are mapped onto [`Reply`]:
//!
//! * RESP2 `$-1` and `*-1` both come back as [`Reply::Null`] (the decoder does not tell them
//!   apart), RESP3 `_` too.
//! * RESP3 maps and sets come back in the decoder's hash order, not the wire order, and a set
//!   loses duplicate elements; attributes are dropped.
//! * RESP3 blob errors become [`Reply::Error`], big numbers [`Reply::Bulk`], push frames
//!   [`Reply::Array`], verbatim strings of any format [`Reply::Verbatim`] (format dropped).
//!   Streamed (`$?`) frames are refused.
//!
//! Meant for replies from a server we trust (our own): nesting depth is not bounded, and a
//! frame is only decoded once complete, so a partial reply is parsed again on every call.

use bytes::BytesMut;
use redis_protocol::error::RedisProtocolError;
use redis_protocol::resp2::types::BytesFrame as Frame2;
use redis_protocol::resp3::types::BytesFrame as Frame3;
use thiserror::Error;

use crate::encode::{ProtocolVersion, Reply};

/// A reply stream that cannot be decoded.
#[derive(Debug, Error)]
pub enum ReplyDecodeError {
    /// The bytes are not valid RESP for the version.
    #[error("malformed reply: {0}")]
    Malformed(#[source] RedisProtocolError),
    /// A valid RESP3 frame that a server never sends as a reply (`HELLO`, a streamed chunk).
    #[error("unsupported reply frame: {kind}")]
    Unsupported {
        /// The frame kind.
        kind: &'static str,
    },
}

/// Decodes one reply from the front of `buf`, consuming its bytes; `Ok(None)` = need more bytes
/// (`buf` untouched).
pub fn decode_reply(
    buf: &mut BytesMut,
    version: ProtocolVersion,
) -> Result<Option<Reply>, ReplyDecodeError> {
    match version {
        ProtocolVersion::Resp2 => {
            match redis_protocol::resp2::decode::decode_bytes_mut(buf)
                .map_err(ReplyDecodeError::Malformed)?
            {
                Some((frame, _, _)) => Ok(Some(from_resp2(frame))),
                None => Ok(None),
            }
        }
        ProtocolVersion::Resp3 => {
            match redis_protocol::resp3::decode::complete::decode_bytes_mut(buf)
                .map_err(ReplyDecodeError::Malformed)?
            {
                Some((frame, _, _)) => from_resp3(frame).map(Some),
                None => Ok(None),
            }
        }
    }
}

fn from_resp2(frame: Frame2) -> Reply {
    match frame {
        Frame2::SimpleString(s) => Reply::Status(s),
        Frame2::Error(s) => Reply::Error(s.into_inner()),
        Frame2::Integer(n) => Reply::Integer(n),
        Frame2::BulkString(b) => Reply::Bulk(b),
        Frame2::Array(items) => Reply::Array(items.into_iter().map(from_resp2).collect()),
        Frame2::Null => Reply::Null,
    }
}

fn from_resp3(frame: Frame3) -> Result<Reply, ReplyDecodeError> {
    Ok(match frame {
        Frame3::BlobString { data, .. } => Reply::Bulk(data),
        Frame3::BlobError { data, .. } => Reply::Error(data),
        Frame3::SimpleString { data, .. } => Reply::Status(data),
        Frame3::SimpleError { data, .. } => Reply::Error(data.into_inner()),
        Frame3::Boolean { data, .. } => Reply::Bool(data),
        Frame3::Null => Reply::Null,
        Frame3::Number { data, .. } => Reply::Integer(data),
        Frame3::Double { data, .. } => Reply::Double(data),
        Frame3::BigNumber { data, .. } => Reply::Bulk(data),
        Frame3::VerbatimString { data, .. } => Reply::Verbatim(data),
        Frame3::Array { data, .. } | Frame3::Push { data, .. } => {
            Reply::Array(data.into_iter().map(from_resp3).collect::<Result<_, _>>()?)
        }
        Frame3::Map { data, .. } => Reply::Map(
            data.into_iter()
                .map(|(k, v)| Ok((from_resp3(k)?, from_resp3(v)?)))
                .collect::<Result<_, ReplyDecodeError>>()?,
        ),
        Frame3::Set { data, .. } => {
            Reply::Set(data.into_iter().map(from_resp3).collect::<Result<_, _>>()?)
        }
        Frame3::Hello { .. } => return Err(ReplyDecodeError::Unsupported { kind: "HELLO" }),
        Frame3::ChunkedString(_) => {
            return Err(ReplyDecodeError::Unsupported {
                kind: "streamed string chunk",
            })
        }
    })
}

//! RESP2/RESP3 framing for Meridian, a Redis-compatible server.
//!
//! Sans-I/O: bytes in, requests out; replies in, bytes out. No sockets, no runtime, no commands.
//!
//! * [`decode_request`] takes one client request ([`Request`]: command name + arguments as
//!   zero-copy [`bytes::Bytes`]) off the front of a read buffer, or says it needs more bytes.
//!   It speaks both request forms Redis accepts: multibulk (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`, what
//!   every client library sends) and inline (`GET k\r\n`, telnet and `redis-benchmark`'s
//!   `PING_INLINE`), with Redis 7's parsing rules and error texts.
//! * [`Limits`] bounds what a client can make the server buffer; they are checked on the
//!   headers, before any payload is waited for.
//! * [`encode_reply`] appends a [`Reply`] to an output buffer in the connection's
//!   [`ProtocolVersion`] (RESP2 by default, RESP3 after `HELLO 3`).
//! * [`ProtoError`] means the request stream is broken: reply `-ERR {err}` and close.
//!
//! A connection loop decodes every complete request already buffered, answers them all, then
//! flushes once:
//!
//! ```
//! use bytes::BytesMut;
//! use proto_resp::{decode_request, encode_reply, Limits, ProtocolVersion, Reply};
//!
//! let limits = Limits::default();
//! let mut input = BytesMut::from(&b"*1\r\n$4\r\nPING\r\nPING\r\n*2\r\n$3\r\nGET"[..]);
//! let mut output = BytesMut::new();
//! while let Some(req) = decode_request(&mut input, &limits).expect("valid input") {
//!     assert_eq!(req.args[0], "PING");
//!     encode_reply(&Reply::pong(), ProtocolVersion::Resp2, &mut output);
//! }
//! assert_eq!(&output[..], b"+PONG\r\n+PONG\r\n");
//! assert_eq!(&input[..], b"*2\r\n$3\r\nGET"); // incomplete: wait for more bytes
//! ```
//!
//! The `redis-protocol` crate provides the independent RESP decoder behind [`decode_reply`]
//! (replies, for clients and tests) and the oracle the test suite checks this crate against; why
//! the request hot path does not go through it is explained in the `decode` module source.
#![warn(missing_docs, unreachable_pub)]

mod decode;
mod encode;
mod error;
mod inline;
mod limits;
mod reply_decode;
mod scan;

pub use decode::{decode_request, Request};
pub use encode::{encode_bulk, encode_reply, ProtocolVersion, Reply};
pub use error::ProtoError;
pub use limits::Limits;
pub use reply_decode::{decode_reply, ReplyDecodeError};
pub use scan::pipelined_get_keys;

//! The one error type of this crate: the request stream is broken.

use thiserror::Error;

/// The client broke the framing rules; the connection cannot continue.
///
/// `Display` is exactly the text Redis 7 sends after `-ERR `, so the server replies
/// `-ERR {err}\r\n`, flushes, and closes the connection, as Redis does.
/// "Need more bytes" is not an error: [`decode_request`](crate::decode_request) returns `Ok(None)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ProtoError {
    /// `*N` where `N` is not a number, is out of range or exceeds
    /// [`Limits::max_multibulk_len`](crate::Limits::max_multibulk_len).
    #[error("Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    /// `$N` where `N` is not a number, is negative or exceeds
    /// [`Limits::max_bulk_len`](crate::Limits::max_bulk_len).
    #[error("Protocol error: invalid bulk length")]
    InvalidBulkLength,
    /// An element of a multibulk request does not start with `$`.
    #[error("Protocol error: expected '$', got '{got}'")]
    ExpectedDollar {
        /// The byte found instead of `$` (as Latin-1, like Redis's `%c`).
        got: char,
    },
    /// An inline request line longer than [`Limits::max_inline_len`](crate::Limits::max_inline_len).
    #[error("Protocol error: too big inline request")]
    TooBigInlineRequest,
    /// The `*N` line has no line end within [`Limits::max_inline_len`](crate::Limits::max_inline_len) bytes.
    #[error("Protocol error: too big mbulk count string")]
    TooBigMbulkCount,
    /// A `$N` line has no line end within [`Limits::max_inline_len`](crate::Limits::max_inline_len) bytes.
    #[error("Protocol error: too big bulk count string")]
    TooBigBulkCount,
    /// `*N` with `N > 10` from a client that has not authenticated yet
    /// (see [`Limits::unauthenticated`](crate::Limits::unauthenticated)).
    #[error("Protocol error: unauthenticated multibulk length")]
    UnauthenticatedMultibulkLength,
    /// `$N` with `N > 16384` from a client that has not authenticated yet.
    #[error("Protocol error: unauthenticated bulk length")]
    UnauthenticatedBulkLength,
    /// An inline request has an unterminated quote, or a closing quote followed by a non-space.
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
}

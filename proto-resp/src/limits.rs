//! Hard limits on what a client may announce or send.

/// Limits checked while decoding, before any payload is buffered or allocated for.
///
/// A request that breaks one of them is a [`ProtoError`](crate::ProtoError): the client is told and
/// the connection closed, so a client cannot make the server buffer more than these allow.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest accepted bulk string (`$N`) in a request, in bytes.
    pub max_bulk_len: usize,
    /// Largest accepted element count (`*N`) of a request.
    pub max_multibulk_len: usize,
    /// Longest accepted inline request line, and longest `*N` / `$N` line without its line end.
    pub max_inline_len: usize,
    /// The server requires a password and this client has not authenticated yet. Redis 7 then
    /// also refuses `*N` with `N > 10` and `$N` with `N > 16384`, with their own error texts
    /// ([`ProtoError::UnauthenticatedMultibulkLength`](crate::ProtoError::UnauthenticatedMultibulkLength),
    /// [`ProtoError::UnauthenticatedBulkLength`](crate::ProtoError::UnauthenticatedBulkLength)),
    /// so a client without the password cannot make the server buffer much. Default `false`;
    /// set it per connection from the authentication state before each decode.
    pub unauthenticated: bool,
}

impl Limits {
    /// Default [`Limits::max_bulk_len`]: Redis's `proto-max-bulk-len` (512 MiB).
    pub const DEFAULT_MAX_BULK_LEN: usize = 512 * 1024 * 1024;
    /// Default [`Limits::max_multibulk_len`]: 1 Mi elements, the bound Redis 6 used. Redis 7 accepts
    /// up to `INT_MAX`, which lets one short `*` line promise far more work than any command needs.
    pub const DEFAULT_MAX_MULTIBULK_LEN: usize = 1024 * 1024;
    /// Default [`Limits::max_inline_len`]: Redis's `PROTO_INLINE_MAX_SIZE` (64 KiB).
    pub const DEFAULT_MAX_INLINE_LEN: usize = 64 * 1024;
    /// Largest `*N` accepted while [`Limits::unauthenticated`] (Redis 7's value).
    pub const UNAUTHENTICATED_MAX_MULTIBULK_LEN: usize = 10;
    /// Largest `$N` accepted while [`Limits::unauthenticated`] (Redis 7's value).
    pub const UNAUTHENTICATED_MAX_BULK_LEN: usize = 16384;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk_len: Self::DEFAULT_MAX_BULK_LEN,
            max_multibulk_len: Self::DEFAULT_MAX_MULTIBULK_LEN,
            max_inline_len: Self::DEFAULT_MAX_INLINE_LEN,
            unauthenticated: false,
        }
    }
}

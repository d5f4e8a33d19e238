//! Replies written to a client's socket from the Raft thread, as soon as its write is applied.
//!
//! A connection that waits on its writes (every client that sends a command and waits for the
//! reply, as `redis-benchmark -P 1` does) lends its socket to the proposer with the writes:
//! once their entry is applied, the reply task writes their replies to the socket there and
//! then, and only then wakes the connection's task. Without it the replies waited for that
//! task's wake-up on a connection worker, a third of a SET's time in the server at -P1 (see
//! README, "Where the time goes").
//!
//! The connection still gets the results (its counters, error replies and write index) and
//! writes whatever the socket did not take at once. It lends the socket only while it waits
//! for the writes with nothing of its own left unsent, so the replies keep their order.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::BytesMut;
use proto_resp::{encode_reply, ProtocolVersion, Reply};
use tokio::net::TcpStream;

use crate::error::RespError;
use crate::op::OpResult;

/// A connection's socket as the reply task may write to it: its descriptor while the
/// connection holds the socket, and the bytes written for the connection's current write.
#[derive(Debug)]
pub struct SocketLease {
    /// `None` once the socket is about to close: a reply task then writes nothing.
    fd: Mutex<Option<RawFd>>,
    /// Bytes of replies written since the connection last took the count.
    sent: AtomicUsize,
}

impl SocketLease {
    /// Bytes written for the connection since its last call (and resets the count).
    pub fn take_sent(&self) -> usize {
        self.sent.swap(0, Ordering::AcqRel)
    }

    fn revoke(&self) {
        *self.fd.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// A connection's socket, with the lease that lets reply tasks write to it; dropping it
/// revokes the lease before the socket closes (a reply task holds the lease's lock while it
/// writes, so it never writes to a descriptor that was closed and perhaps reused).
pub struct LeasedSocket {
    /// The socket, for the connection's own reads and writes.
    pub stream: TcpStream,
    lease: Arc<SocketLease>,
}

impl LeasedSocket {
    /// Wraps a connection's socket.
    pub fn new(stream: TcpStream) -> LeasedSocket {
        let lease = Arc::new(SocketLease {
            fd: Mutex::new(Some(stream.as_raw_fd())),
            sent: AtomicUsize::new(0),
        });
        LeasedSocket { stream, lease }
    }

    /// The lease, to hand to writes.
    pub fn lease(&self) -> Arc<SocketLease> {
        self.lease.clone()
    }
}

impl Drop for LeasedSocket {
    fn drop(&mut self) {
        // Runs before `stream` is dropped and closes the descriptor.
        self.lease.revoke();
    }
}

/// What a write takes along so that its replies can be written where it is applied.
#[derive(Clone, Debug)]
pub struct DirectReply {
    lease: Arc<SocketLease>,
    protocol: ProtocolVersion,
}

impl DirectReply {
    /// Replies to be encoded for `protocol` and written through `lease`.
    pub fn new(lease: Arc<SocketLease>, protocol: ProtocolVersion) -> DirectReply {
        DirectReply { lease, protocol }
    }

    /// Encodes the replies to `results` as the connection would and writes what the socket
    /// takes without waiting; the connection learns how much from [`SocketLease::take_sent`].
    /// Replies over [`MAX_DIRECT_BYTES`] are left to the connection.
    pub fn send(&self, results: &[OpResult]) {
        let payload: usize = results.iter().map(payload_len).sum();
        if payload > MAX_DIRECT_BYTES {
            return;
        }
        let mut out = BytesMut::with_capacity(payload + 16 * results.len());
        for result in results {
            encode_reply(&op_reply(result.clone()), self.protocol, &mut out);
        }
        let fd = self.lease.fd.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(fd) = *fd else {
            return;
        };
        let mut sent = 0;
        while sent < out.len() {
            match send_now(fd, &out[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // Full (or closed): the connection writes the rest, or learns of the error.
                Err(_) => break,
            }
        }
        self.lease.sent.fetch_add(sent, Ordering::AcqRel);
    }
}

/// The most reply payload written from the Raft thread for one write: larger replies (a `SET
/// .. GET` of a large old value) are copied and written by the connection, as the socket drains,
/// instead of holding up the other clients' replies there.
pub const MAX_DIRECT_BYTES: usize = 64 * 1024;

/// About the bytes a result's reply carries beyond its framing.
fn payload_len(result: &OpResult) -> usize {
    match result {
        OpResult::Bulk(b) => b.len(),
        OpResult::Ints(values) => 24 * values.len(),
        OpResult::Ok | OpResult::Nil | OpResult::Int(_) | OpResult::Err(_) => 0,
    }
}

/// One non-blocking `send` (no SIGPIPE on a closed peer).
fn send_now(fd: RawFd, bytes: &[u8]) -> std::io::Result<usize> {
    // SAFETY: `fd` is the connection's open socket: the caller holds the lease's lock, and the
    // lease is revoked (under that lock) before the socket closes. `bytes` is a valid buffer.
    let n = unsafe {
        libc::send(
            fd,
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// The reply to a write's result.
pub fn op_reply(result: OpResult) -> Reply {
    match result {
        OpResult::Ok => Reply::ok(),
        OpResult::Nil => Reply::Null,
        OpResult::Int(n) => Reply::Integer(n),
        OpResult::Bulk(b) => Reply::Bulk(b),
        OpResult::Err(e) => RespError::from(e).to_reply(),
        OpResult::Ints(values) => Reply::Array(
            values
                .into_iter()
                .map(|v| v.map_or(Reply::Null, Reply::Integer))
                .collect(),
        ),
    }
}

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
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::BytesMut;
use proto_resp::{encode_reply, ProtocolVersion, Reply};
use tokio::net::TcpStream;

use crate::error::RespError;
use crate::op::OpResult;

/// A connection's socket as the reply task may write to it.
#[derive(Debug)]
pub struct SocketLease {
    state: Mutex<LeaseState>,
}

#[derive(Debug)]
struct LeaseState {
    /// `None` once the socket is about to close: a reply task then writes nothing.
    fd: Option<RawFd>,
    /// What was written for the connection's current write.
    sent: Sent,
}

/// What a reply task wrote of a write's replies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    /// Bytes written.
    pub bytes: usize,
    /// Every reply went: the connection has none of them to write.
    pub all: bool,
}

impl SocketLease {
    /// What was written for the connection since its last call (and resets it).
    pub fn take_sent(&self) -> Sent {
        std::mem::take(&mut self.lock().sent)
    }

    fn lock(&self) -> MutexGuard<'_, LeaseState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
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
            state: Mutex::new(LeaseState {
                fd: Some(stream.as_raw_fd()),
                sent: Sent::default(),
            }),
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
        self.lease.lock().fd = None;
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
        let mut state = self.lease.lock();
        let Some(fd) = state.fd else {
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
        state.sent = Sent {
            bytes: sent,
            all: sent == out.len(),
        };
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

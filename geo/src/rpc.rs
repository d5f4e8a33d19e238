//! Request/response RPC over the node links: one bidirectional QUIC stream per call.
//!
//! Frames (big-endian), each sent as the whole of its stream direction, which is then finished:
//!
//! ```text
//! request:  len u32 | kind u16 | body      len = 2 + body.len()  <= MAX_FRAME_SIZE
//! response: len u32 | status u8 | body     len = 1 + body.len()  <= MAX_FRAME_SIZE
//! ```
//!
//! `kind` names the service (Raft append, vote, snapshot, forwarded write …; the numbers are
//! the caller's business). `status` 0 carries the handler's reply; 1 an error text from the
//! handler (surfaces as [`RpcError::Remote`]); 2 a frame over the limit; 3 a malformed request.
//! Streams are independent, so calls never wait behind each other (no head-of-line blocking).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::FutureExt;
use tracing::{debug, warn};

use crate::link::{Endpoint, LinkError, PeerAddr};

/// Largest frame payload (kind/status + body): room for Raft snapshots sent in one call.
pub const MAX_FRAME_SIZE: usize = 64 << 20;

/// Largest request body: the frame limit minus the `kind` tag.
pub const MAX_REQUEST_BODY: usize = MAX_FRAME_SIZE - 2;

/// Largest response body: the frame limit minus the status byte.
pub const MAX_RESPONSE_BODY: usize = MAX_FRAME_SIZE - 1;

const STATUS_OK: u8 = 0;
const STATUS_REMOTE: u8 = 1;
const STATUS_TOO_LARGE: u8 = 2;
const STATUS_BAD_REQUEST: u8 = 3;

/// Serves inbound calls. Implemented by the server (Raft network, forwarding, replication).
pub trait RpcHandler: Send + Sync + 'static {
    /// Serves one inbound call; Err(text) travels back and surfaces as RpcError::Remote(text).
    fn handle(
        &self,
        from: String,
        kind: u16,
        body: Bytes,
    ) -> BoxFuture<'static, Result<Bytes, String>>;
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RpcError {
    /// No answer within the call's timeout (connection setup included).
    #[error("call to {peer} timed out after {timeout:?}")]
    Timeout {
        /// The peer called.
        peer: String,
        /// The timeout given.
        timeout: Duration,
    },
    /// No connection to the peer could be established (refused, unreachable, in backoff).
    #[error("peer {peer} unreachable")]
    Unreachable {
        /// The peer called.
        peer: String,
        /// Why.
        #[source]
        source: LinkError,
    },
    /// The connection failed during the call.
    #[error("connection to {peer} lost")]
    ConnectionLost {
        /// The peer called.
        peer: String,
        /// quinn's reason.
        #[source]
        source: quinn::ConnectionError,
    },
    /// The peer reset or stopped the call's stream.
    #[error("stream to {peer} reset by the peer (code {code})")]
    StreamReset {
        /// The peer called.
        peer: String,
        /// The application error code.
        code: u64,
    },
    /// The handler on the peer returned an error (its text).
    #[error("remote error: {0}")]
    Remote(String),
    /// A request or response over [`MAX_FRAME_SIZE`].
    #[error("frame too large ({size:?} bytes, limit {max})")]
    TooLarge {
        /// Size of the offending body, when known locally.
        size: Option<usize>,
        /// The limit.
        max: usize,
    },
    /// The peer sent something that is not a valid frame.
    #[error("protocol error with {peer}: {reason}")]
    Protocol {
        /// The peer called.
        peer: String,
        /// What was wrong.
        reason: &'static str,
    },
    /// The local endpoint is shut down.
    #[error("endpoint is shut down")]
    Shutdown,
}

impl RpcError {
    /// Whether the failure is in the transport (retry later, maybe elsewhere) rather than an
    /// answer from the peer's handler or a bad request.
    pub fn is_transport(&self) -> bool {
        matches!(
            self,
            RpcError::Timeout { .. }
                | RpcError::Unreachable { .. }
                | RpcError::ConnectionLost { .. }
                | RpcError::StreamReset { .. }
                | RpcError::Shutdown
        )
    }

    /// Short label for metrics.
    fn label(&self) -> &'static str {
        match self {
            RpcError::Timeout { .. } => "timeout",
            RpcError::Unreachable { .. } => "unreachable",
            RpcError::ConnectionLost { .. } => "connection_lost",
            RpcError::StreamReset { .. } => "stream_reset",
            RpcError::Remote(_) => "remote",
            RpcError::TooLarge { .. } => "too_large",
            RpcError::Protocol { .. } => "protocol",
            RpcError::Shutdown => "shutdown",
        }
    }
}

fn header(tag_len: usize, body_len: usize) -> [u8; 4] {
    // callers check body_len + tag_len <= MAX_FRAME_SIZE < u32::MAX
    let len = u32::try_from(tag_len + body_len).unwrap_or(u32::MAX);
    len.to_be_bytes()
}

/// Encodes a request frame as chunks (no copy of the body).
#[cfg(test)]
fn request_chunks(kind: u16, body: Bytes) -> [Bytes; 2] {
    [request_head(kind, body.len()), body]
}

/// The head of a request frame whose body is `body_len` bytes.
fn request_head(kind: u16, body_len: usize) -> Bytes {
    let mut head = BytesMut::with_capacity(6);
    head.extend_from_slice(&header(2, body_len));
    head.extend_from_slice(&kind.to_be_bytes());
    head.freeze()
}

fn response_chunks(status: u8, body: Bytes) -> [Bytes; 2] {
    let mut head = BytesMut::with_capacity(5);
    head.extend_from_slice(&header(1, body.len()));
    head.extend_from_slice(&[status]);
    [head.freeze(), body]
}

/// Checks the length prefix of a whole received frame; returns the payload after it.
fn frame_payload(buf: Bytes, min: usize) -> Option<Bytes> {
    if buf.len() < 4 {
        return None;
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let len = usize::try_from(len).ok()?;
    if len != buf.len() - 4 || len < min || len > MAX_FRAME_SIZE {
        return None;
    }
    Some(buf.slice(4..))
}

/// Decodes a whole request frame into (kind, body).
pub(crate) fn decode_request(buf: Bytes) -> Option<(u16, Bytes)> {
    let payload = frame_payload(buf, 2)?;
    let kind = u16::from_be_bytes([payload[0], payload[1]]);
    Some((kind, payload.slice(2..)))
}

/// Decodes a whole response frame into the call's result.
fn decode_response(buf: Bytes, peer: &str) -> Result<Bytes, RpcError> {
    let protocol = |reason| RpcError::Protocol {
        peer: peer.to_owned(),
        reason,
    };
    let payload = frame_payload(buf, 1).ok_or_else(|| protocol("malformed response frame"))?;
    let body = payload.slice(1..);
    match payload[0] {
        STATUS_OK => Ok(body),
        STATUS_REMOTE => Err(RpcError::Remote(
            String::from_utf8_lossy(&body).into_owned(),
        )),
        STATUS_TOO_LARGE => Err(RpcError::TooLarge {
            size: None,
            max: MAX_FRAME_SIZE,
        }),
        STATUS_BAD_REQUEST => Err(protocol("the peer could not decode our request")),
        _ => Err(protocol("unknown response status")),
    }
}

fn map_write(e: quinn::WriteError, peer: &str) -> RpcError {
    match e {
        quinn::WriteError::ConnectionLost(source) => RpcError::ConnectionLost {
            peer: peer.to_owned(),
            source,
        },
        quinn::WriteError::Stopped(code) => RpcError::StreamReset {
            peer: peer.to_owned(),
            code: code.into_inner(),
        },
        _ => RpcError::Protocol {
            peer: peer.to_owned(),
            reason: "stream closed while writing",
        },
    }
}

fn map_read(e: quinn::ReadToEndError, peer: &str) -> RpcError {
    match e {
        quinn::ReadToEndError::TooLong => RpcError::TooLarge {
            size: None,
            max: MAX_FRAME_SIZE,
        },
        quinn::ReadToEndError::Read(quinn::ReadError::ConnectionLost(source)) => {
            RpcError::ConnectionLost {
                peer: peer.to_owned(),
                source,
            }
        }
        quinn::ReadToEndError::Read(quinn::ReadError::Reset(code)) => RpcError::StreamReset {
            peer: peer.to_owned(),
            code: code.into_inner(),
        },
        quinn::ReadToEndError::Read(_) => RpcError::Protocol {
            peer: peer.to_owned(),
            reason: "stream failed while reading",
        },
    }
}

/// One call on an established connection.
async fn call_on(
    conn: &quinn::Connection,
    peer: &str,
    kind: u16,
    body: Vec<Bytes>,
    body_len: usize,
) -> Result<Bytes, RpcError> {
    let (send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|source| RpcError::ConnectionLost {
            peer: peer.to_owned(),
            source,
        })?;
    let mut send = ResetUnlessAnswered(Some(send));
    let mut chunks = Vec::with_capacity(body.len() + 1);
    chunks.push(request_head(kind, body_len));
    chunks.extend(body);
    send.stream()
        .write_all_chunks(&mut chunks)
        .await
        .map_err(|e| map_write(e, peer))?;
    send.stream().finish().map_err(|_| RpcError::Protocol {
        peer: peer.to_owned(),
        reason: "stream closed before finishing",
    })?;
    let buf = recv
        .read_to_end(MAX_FRAME_SIZE + 4)
        .await
        .map_err(|e| map_read(e, peer))?;
    send.answered();
    decode_response(Bytes::from(buf), peer)
}

/// A call's send stream that is reset if the call is dropped (its timeout) before the answer
/// came, whether or not the whole request was written.
///
/// - Not yet written whole: quinn finishes a dropped stream, so the peer read a truncated
///   request and logged "malformed rpc request frame" (dozens of times for 8 MB values, whose
///   AppendEntries outlived their first timeout). Reset, the peer drops it quietly.
/// - Written and finished: "written" means handed to quinn's send buffer, not sent. Left
///   alone, a timed-out request is still sent, and sent again where lost, to a caller that no
///   longer waits for it, sharing the link with the calls that replace it. After a lossy
///   spell between two regions (congestion window down to a few packets) the replication
///   calls that timed out, megabytes of them, clogged the link for the calls sent again, which
///   timed out in turn: replication stalled for 30–50 s. Reset, the unsent rest is dropped.
struct ResetUnlessAnswered(Option<quinn::SendStream>);

impl ResetUnlessAnswered {
    /// The stream (present until answered).
    fn stream(&mut self) -> &mut quinn::SendStream {
        self.0.as_mut().expect("stream taken only once answered")
    }

    /// The peer answered: it has the whole request, so there is nothing to drop.
    fn answered(&mut self) {
        self.0 = None;
    }
}

impl Drop for ResetUnlessAnswered {
    fn drop(&mut self) {
        if let Some(send) = self.0.as_mut() {
            // Fails harmlessly when every byte was already acknowledged.
            let _ = send.reset(quinn::VarInt::from_u32(0));
        }
    }
}

/// How long an inbound call may take to arrive, and its response to be taken, at most: a peer
/// that stalls a stream mid-frame must not hold one of the connection's stream permits for
/// ever (callers' own timeouts are far shorter; the longest, a snapshot chunk, is seconds).
pub const SERVE_IO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Serves one inbound stream: reads the request, runs the handler, writes the response.
pub(crate) async fn serve_stream(
    handler: Arc<dyn RpcHandler>,
    from: String,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let read = tokio::time::timeout(SERVE_IO_TIMEOUT, recv.read_to_end(MAX_FRAME_SIZE + 4));
    let Ok(read) = read.await else {
        warn!(peer = %from, "inbound call not received in time; dropping its stream");
        return;
    };
    let (status, body, kind) = match read {
        Ok(buf) => match decode_request(Bytes::from(buf)) {
            Some((kind, body)) => {
                metrics::counter!("geo_rpc_served_total", "peer" => from.clone(), "kind" => kind.to_string())
                    .increment(1);
                debug!(kind, len = body.len(), "serving call");
                let fut = handler.handle(from.clone(), kind, body);
                // A caller that gave up (its timeout) stops the stream: the work is dropped
                // rather than kept to the end for nobody. Kept, a replication call waiting for
                // a predecessor that would never come held its stream for 5 s more, and with a
                // pipeline of them the peer ran out of streams for the calls sent again.
                let handled = tokio::select! {
                    handled = AssertUnwindSafe(fut).catch_unwind() => handled,
                    _ = send.stopped() => {
                        debug!(kind, "the caller stopped waiting; call dropped");
                        return;
                    }
                };
                match handled {
                    Ok(Ok(reply)) if reply.len() > MAX_RESPONSE_BODY => {
                        warn!(
                            kind,
                            len = reply.len(),
                            "handler reply over the frame limit"
                        );
                        (STATUS_TOO_LARGE, Bytes::new(), Some(kind))
                    }
                    Ok(Ok(reply)) => (STATUS_OK, reply, Some(kind)),
                    Ok(Err(text)) => (STATUS_REMOTE, Bytes::from(text), Some(kind)),
                    Err(_) => {
                        warn!(kind, "rpc handler panicked");
                        (
                            STATUS_REMOTE,
                            Bytes::from_static(b"internal error: handler panicked"),
                            Some(kind),
                        )
                    }
                }
            }
            None => (STATUS_BAD_REQUEST, Bytes::new(), None),
        },
        Err(quinn::ReadToEndError::TooLong) => (STATUS_TOO_LARGE, Bytes::new(), None),
        Err(e) => {
            // The caller went away (timeout, connection lost): nobody to answer.
            debug!(error = %e, "inbound call stream failed");
            return;
        }
    };
    if status == STATUS_BAD_REQUEST {
        warn!("malformed rpc request frame");
    }
    let body = if body.len() > MAX_RESPONSE_BODY {
        Bytes::new()
    } else {
        body
    };
    let mut chunks = response_chunks(status, body);
    match tokio::time::timeout(SERVE_IO_TIMEOUT, send.write_all_chunks(&mut chunks)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            debug!(?kind, error = %e, "could not write rpc response (caller gone?)");
            return;
        }
        Err(_) => {
            warn!(?kind, peer = %from, "rpc response not taken in time; dropping its stream");
            return;
        }
    }
    // A finished stream keeps delivering its buffered data after the handle is dropped.
    let _ = send.finish();
}

impl Endpoint {
    /// Calls `kind` on the peer, waits at most `timeout`.
    ///
    /// Dials the peer first if there is no live connection (within the same timeout). A call
    /// to this node's own name runs the local handler directly.
    pub async fn call(
        &self,
        peer: &PeerAddr,
        kind: u16,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, RpcError> {
        self.call_chunks(peer, kind, vec![body], timeout).await
    }

    /// Like [`Endpoint::call`], with the request body given as consecutive chunks, written to
    /// the stream as they are (a large body need not be copied into one buffer first).
    pub async fn call_chunks(
        &self,
        peer: &PeerAddr,
        kind: u16,
        body: Vec<Bytes>,
        timeout: Duration,
    ) -> Result<Bytes, RpcError> {
        let labels = [("peer", peer.name.clone()), ("kind", kind.to_string())];
        metrics::counter!("geo_rpc_calls_total", &labels).increment(1);
        let result = self.call_inner(peer, kind, body, timeout).await;
        if let Err(e) = &result {
            metrics::counter!("geo_rpc_errors_total", &labels).increment(1);
            if matches!(e, RpcError::Timeout { .. }) {
                metrics::counter!("geo_rpc_timeouts_total", &labels).increment(1);
            }
            debug!(peer = %peer.name, kind, error = e.label(), "rpc failed");
        }
        result
    }

    async fn call_inner(
        &self,
        peer: &PeerAddr,
        kind: u16,
        body: Vec<Bytes>,
        timeout: Duration,
    ) -> Result<Bytes, RpcError> {
        let body_len: usize = body.iter().map(Bytes::len).sum();
        if body_len > MAX_REQUEST_BODY {
            return Err(RpcError::TooLarge {
                size: Some(body_len),
                max: MAX_FRAME_SIZE,
            });
        }
        let inner = &self.inner;
        if inner.stop.is_cancelled() {
            return Err(RpcError::Shutdown);
        }
        let work = async {
            if peer.name == inner.node_name {
                let body = match <[Bytes; 1]>::try_from(body) {
                    Ok([one]) => one,
                    Err(chunks) => chunks.concat().into(),
                };
                let fut = inner.handler.handle(peer.name.clone(), kind, body);
                return match AssertUnwindSafe(fut).catch_unwind().await {
                    Ok(Ok(reply)) => Ok(reply),
                    Ok(Err(text)) => Err(RpcError::Remote(text)),
                    Err(_) => Err(RpcError::Remote("internal error: handler panicked".into())),
                };
            }
            let conn = inner.connection(peer).await.map_err(|e| match e {
                LinkError::Shutdown => RpcError::Shutdown,
                source => RpcError::Unreachable {
                    peer: peer.name.clone(),
                    source,
                },
            })?;
            call_on(&conn, &peer.name, kind, body, body_len).await
        };
        tokio::select! {
            r = tokio::time::timeout(timeout, work) => r.unwrap_or_else(|_| Err(RpcError::Timeout {
                peer: peer.name.clone(),
                timeout,
            })),
            _ = inner.stop.cancelled() => Err(RpcError::Shutdown),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn concat(chunks: [Bytes; 2]) -> Bytes {
        let mut b = BytesMut::new();
        for c in chunks {
            b.extend_from_slice(&c);
        }
        b.freeze()
    }

    #[test]
    fn request_round_trip() {
        let frame = concat(request_chunks(7, Bytes::from_static(b"hello")));
        assert_eq!(&frame[..4], &7u32.to_be_bytes());
        assert_eq!(
            decode_request(frame),
            Some((7, Bytes::from_static(b"hello")))
        );
        let empty = concat(request_chunks(u16::MAX, Bytes::new()));
        assert_eq!(decode_request(empty), Some((u16::MAX, Bytes::new())));
    }

    #[test]
    fn response_round_trip_and_statuses() {
        let ok = concat(response_chunks(STATUS_OK, Bytes::from_static(b"x")));
        assert_eq!(decode_response(ok, "p").unwrap(), Bytes::from_static(b"x"));
        let remote = concat(response_chunks(STATUS_REMOTE, Bytes::from_static(b"boom")));
        assert!(matches!(decode_response(remote, "p"), Err(RpcError::Remote(t)) if t == "boom"));
        let big = concat(response_chunks(STATUS_TOO_LARGE, Bytes::new()));
        assert!(matches!(
            decode_response(big, "p"),
            Err(RpcError::TooLarge { .. })
        ));
        let bad = concat(response_chunks(9, Bytes::new()));
        assert!(matches!(
            decode_response(bad, "p"),
            Err(RpcError::Protocol { .. })
        ));
    }

    #[test]
    fn truncated_or_inconsistent_frames_are_rejected() {
        let frame = concat(request_chunks(1, Bytes::from_static(b"abcdef")));
        // a caller that gave up mid-write leaves a finished but short stream
        assert_eq!(decode_request(frame.slice(..frame.len() - 1)), None);
        assert_eq!(decode_request(Bytes::from_static(b"\0\0")), None);
        assert_eq!(decode_request(Bytes::from_static(b"\0\0\0\x01k")), None);
        let mut long = BytesMut::from(&frame[..]);
        long.extend_from_slice(b"junk");
        assert_eq!(decode_request(long.freeze()), None);
        assert!(decode_response(Bytes::from_static(b"\0\0\0\0"), "p").is_err());
    }

    #[test]
    fn transport_classification() {
        assert!(RpcError::Timeout {
            peer: "p".into(),
            timeout: Duration::from_secs(1)
        }
        .is_transport());
        assert!(RpcError::Shutdown.is_transport());
        assert!(!RpcError::Remote("x".into()).is_transport());
        assert!(!RpcError::TooLarge { size: None, max: 1 }.is_transport());
    }
}

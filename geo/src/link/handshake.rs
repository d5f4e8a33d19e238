//! The link hello, exchanged on the first bidirectional stream of every connection.
//!
//! Wire format (big-endian): `MAGIC (4) | version u16 | incarnation u64 | name_len u16 | name`.
//! Magic and version come first and are read before anything else, so a future version may
//! change the rest and still be told apart. The dialer sends first; the acceptor answers with
//! its own hello even on a version mismatch (so the dialer can name both versions), then the
//! dialer closes the connection.

use quinn::{Connection, VarInt};

use super::{LinkError, PROTOCOL_VERSION};

/// Opening bytes of a hello.
const MAGIC: [u8; 4] = *b"MRDN";

/// Longest node name in a hello (DNS label limit is 63; leave room).
const MAX_NAME: usize = 255;

/// Longest hello read.
const MAX_HELLO: usize = 4 + 2 + 8 + 2 + MAX_NAME;

/// Application close codes of link connections.
pub(crate) mod close {
    /// Normal close (shutdown).
    pub(crate) const SHUTDOWN: u32 = 0;
    /// Hello version mismatch.
    pub(crate) const VERSION: u32 = 1;
    /// The peer's identity was refused (certificate / name).
    pub(crate) const IDENTITY: u32 = 2;
    /// The peer broke the hello protocol.
    pub(crate) const PROTOCOL: u32 = 3;
    /// Replaced by a newer connection (peer restarted, or duplicate).
    pub(crate) const REPLACED: u32 = 4;
}

/// A decoded hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hello {
    pub(crate) version: u16,
    pub(crate) incarnation: u64,
    pub(crate) name: String,
}

impl Hello {
    pub(crate) fn ours(name: &str, incarnation: u64) -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            incarnation,
            name: name.to_owned(),
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let name = &self.name.as_bytes()[..self.name.len().min(MAX_NAME)];
        let mut out = Vec::with_capacity(16 + name.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.incarnation.to_be_bytes());
        // name.len() <= MAX_NAME < u16::MAX
        out.extend_from_slice(&(name.len() as u16).to_be_bytes());
        out.extend_from_slice(name);
        out
    }

    /// Decodes a hello; a version other than ours is reported before the rest is parsed.
    pub(crate) fn decode(buf: &[u8]) -> Result<Hello, LinkError> {
        let bad = |reason| LinkError::Handshake { reason };
        if buf.len() < 6 || buf[..4] != MAGIC {
            return Err(bad("not a meridian link hello (bad magic)"));
        }
        let version = u16::from_be_bytes([buf[4], buf[5]]);
        if version != PROTOCOL_VERSION {
            return Err(LinkError::VersionMismatch {
                local: PROTOCOL_VERSION,
                remote: version,
            });
        }
        let rest = &buf[6..];
        if rest.len() < 10 {
            return Err(bad("truncated hello"));
        }
        let mut inc = [0u8; 8];
        inc.copy_from_slice(&rest[..8]);
        let incarnation = u64::from_be_bytes(inc);
        let name_len = usize::from(u16::from_be_bytes([rest[8], rest[9]]));
        let name = &rest[10..];
        if name.len() != name_len || name_len == 0 {
            return Err(bad("hello name length does not match"));
        }
        let name = std::str::from_utf8(name).map_err(|_| bad("hello name is not UTF-8"))?;
        Ok(Hello {
            version,
            incarnation,
            name: name.to_owned(),
        })
    }
}

fn stream_err(e: impl Into<StreamFailure>) -> LinkError {
    match e.into() {
        StreamFailure::Connection(c) => LinkError::Connection(c),
        StreamFailure::Other(reason) => LinkError::Handshake { reason },
    }
}

enum StreamFailure {
    Connection(quinn::ConnectionError),
    Other(&'static str),
}

impl From<quinn::WriteError> for StreamFailure {
    fn from(e: quinn::WriteError) -> Self {
        match e {
            quinn::WriteError::ConnectionLost(c) => StreamFailure::Connection(c),
            _ => StreamFailure::Other("hello stream closed while writing"),
        }
    }
}

impl From<quinn::ReadToEndError> for StreamFailure {
    fn from(e: quinn::ReadToEndError) -> Self {
        match e {
            quinn::ReadToEndError::Read(quinn::ReadError::ConnectionLost(c)) => {
                StreamFailure::Connection(c)
            }
            quinn::ReadToEndError::TooLong => StreamFailure::Other("hello too long"),
            quinn::ReadToEndError::Read(_) => StreamFailure::Other("hello stream reset"),
        }
    }
}

impl From<quinn::ClosedStream> for StreamFailure {
    fn from(_: quinn::ClosedStream) -> Self {
        StreamFailure::Other("hello stream closed")
    }
}

/// Dialer side: sends our hello, reads the acceptor's. Closes the connection on failure.
pub(crate) async fn dial(conn: &Connection, ours: &Hello) -> Result<Hello, LinkError> {
    let result = async {
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(&ours.encode()).await.map_err(stream_err)?;
        send.finish().map_err(stream_err)?;
        let buf = recv.read_to_end(MAX_HELLO).await.map_err(stream_err)?;
        Hello::decode(&buf)
    }
    .await;
    if let Err(e) = &result {
        let (code, reason) = close_reason(e);
        conn.close(VarInt::from_u32(code), reason.as_bytes());
    }
    result
}

/// Acceptor side: reads the dialer's hello, answers with ours. On a version mismatch the
/// answer is still sent (the dialer closes); other failures close the connection here.
/// `check` validates the decoded hello (certificate name …) before we answer.
pub(crate) async fn accept(
    conn: &Connection,
    ours: &Hello,
    check: impl FnOnce(&Hello) -> Result<(), LinkError>,
) -> Result<Hello, LinkError> {
    let result = async {
        let (mut send, mut recv) = conn.accept_bi().await?;
        let buf = recv.read_to_end(MAX_HELLO).await.map_err(stream_err)?;
        match Hello::decode(&buf) {
            Ok(hello) => {
                check(&hello)?;
                send.write_all(&ours.encode()).await.map_err(stream_err)?;
                send.finish().map_err(stream_err)?;
                Ok(hello)
            }
            Err(e @ LinkError::VersionMismatch { .. }) => {
                // Answer so the dialer learns our version, then let it close.
                send.write_all(&ours.encode()).await.map_err(stream_err)?;
                send.finish().map_err(stream_err)?;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }
    .await;
    if let Err(e) = &result {
        if matches!(e, LinkError::VersionMismatch { .. }) {
            // The dialer closes once it has read our hello; bound the wait.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), conn.closed()).await;
        }
        let (code, reason) = close_reason(e);
        conn.close(VarInt::from_u32(code), reason.as_bytes());
    }
    result
}

fn close_reason(e: &LinkError) -> (u32, String) {
    let code = match e {
        LinkError::VersionMismatch { .. } => close::VERSION,
        LinkError::CertificateName { .. } | LinkError::WrongPeer { .. } => close::IDENTITY,
        _ => close::PROTOCOL,
    };
    (code, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trip() {
        let h = Hello::ours("eu-1", 0xdead_beef);
        assert_eq!(Hello::decode(&h.encode()).unwrap(), h);
    }

    #[test]
    fn hello_rejects_garbage_and_other_versions() {
        assert!(matches!(
            Hello::decode(b"HTTP/1.1"),
            Err(LinkError::Handshake { .. })
        ));
        assert!(matches!(
            Hello::decode(b""),
            Err(LinkError::Handshake { .. })
        ));
        let mut other = Hello::ours("n", 1);
        other.version = PROTOCOL_VERSION + 1;
        match Hello::decode(&other.encode()) {
            Err(LinkError::VersionMismatch { local, remote }) => {
                assert_eq!((local, remote), (PROTOCOL_VERSION, PROTOCOL_VERSION + 1));
            }
            other => panic!("{other:?}"),
        }
        let mut truncated = Hello::ours("node", 1).encode();
        truncated.pop();
        assert!(matches!(
            Hello::decode(&truncated),
            Err(LinkError::Handshake { .. })
        ));
        let mut bad_utf8 = Hello::ours("ab", 1).encode();
        let n = bad_utf8.len();
        bad_utf8[n - 1] = 0xff;
        assert!(matches!(
            Hello::decode(&bad_utf8),
            Err(LinkError::Handshake { .. })
        ));
    }

    #[test]
    fn mismatch_message_names_both_versions() {
        let e = LinkError::VersionMismatch {
            local: 1,
            remote: 2,
        };
        assert_eq!(
            e.to_string(),
            "link protocol version mismatch: local 1, remote 2"
        );
    }
}

//! The QUIC link layer: one [`Endpoint`] per node for all node-to-node traffic.
//!
//! - **Mutual TLS** (rustls, ring provider, TLS 1.3 only, ALPN [`ALPN`]): the server side
//!   requires a client certificate chained to the cluster CA; the dialing side verifies the
//!   server against the same CA with server name = the peer's node name. A peer with any other
//!   certificate is refused and a `warn!` is logged.
//! - **Handshake**: on the first bidirectional stream both sides exchange a hello (magic,
//!   [`PROTOCOL_VERSION`], a per-process incarnation number, node name). A version mismatch
//!   refuses the connection with an error naming both versions. The identity of a peer is its
//!   node name from the hello, checked against its certificate's subject alternative names.
//! - **Connections** are cached per peer name, dialed lazily on the first call, redialed after
//!   a failure with bounded, jittered exponential backoff; an inbound connection from a peer is
//!   reused for calls to it. Keep-alives and an idle timeout detect dead links; a stateless
//!   reset key derived from the node's private key lets a restarted peer reset connections of
//!   its previous incarnation at once.
//! - **RPC** (see [`crate::rpc`]): one bidirectional stream per call.

mod congestion;
mod endpoint;
mod handshake;
mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use endpoint::Endpoint;

use crate::certs::CertPaths;

/// ALPN protocol id of node-to-node links.
pub const ALPN: &[u8] = b"meridian/1";

/// Version of the link wire format: the handshake, the RPC framing and what the nodes send
/// over it. Bump on any incompatible change, so that nodes that cannot understand each other
/// refuse to link instead of misreading calls. 2: the server's Raft requests in bincode's
/// variable-length integers.
pub const PROTOCOL_VERSION: u16 = 2;

/// Default keep-alive interval: well below the idle timeout so a healthy idle link stays up.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(1);

/// Default idle timeout: a link that received nothing this long (partition, dead peer) is
/// closed and redialed on the next call. Three keep-alive intervals: with 10 s, a link cut for
/// 3 to 10 s stayed open through the cut while QUIC's retransmission timer backed off, and came
/// back up to 5.5 s after the heal (the next probe); closed and redialed, it comes back within
/// 60 ms of a heal after 5 s (config/region-3.toml, a follower cut off both ways while the
/// leader wrote, 6 rounds each).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3);

/// Smallest idle timeout a topology may set: two keep-alive intervals.
pub const MIN_IDLE_TIMEOUT: Duration = Duration::from_secs(2);

/// Largest idle timeout a topology may set.
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// Default bound on the TLS + hello handshake of one connection.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Default bound on inbound RPC streams served at once per connection (further streams wait).
pub const DEFAULT_MAX_INBOUND_STREAMS: u32 = 256;

/// First redial delay after a failed dial.
pub const DEFAULT_BACKOFF_MIN: Duration = Duration::from_millis(50);

/// Largest redial delay: a restarted peer is found again within about this long.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Inbound connections still in their handshake at once; more are refused.
pub const MAX_PENDING_HANDSHAKES: usize = 64;

/// Configuration of a node's [`Endpoint`].
#[derive(Debug, Clone)]
pub struct LinkConfig {
    /// This node's name (its TLS identity; must match a SAN of `cert`).
    pub node_name: String,
    /// UDP address to bind (port 0 picks one).
    pub bind: SocketAddr,
    /// Cluster CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// This node's certificate chain (PEM).
    pub cert: PathBuf,
    /// This node's private key (PEM, PKCS#8/SEC1/PKCS#1).
    pub key: PathBuf,
    /// Wrap the socket for WAN emulation (test/demo only).
    pub wan_emulation: bool,
    /// Keep-alive interval.
    pub keep_alive: Duration,
    /// Idle timeout of a connection.
    pub idle_timeout: Duration,
    /// Bound on establishing a connection (TLS + hello).
    pub handshake_timeout: Duration,
    /// Inbound RPC streams served at once per connection.
    pub max_inbound_streams: u32,
    /// First redial delay after a failure.
    pub backoff_min: Duration,
    /// Largest redial delay.
    pub backoff_max: Duration,
}

impl LinkConfig {
    /// A configuration with default timeouts and limits and WAN emulation off.
    pub fn new(node_name: impl Into<String>, bind: SocketAddr, certs: &CertPaths) -> LinkConfig {
        LinkConfig {
            node_name: node_name.into(),
            bind,
            ca_cert: certs.ca.clone(),
            cert: certs.cert.clone(),
            key: certs.key.clone(),
            wan_emulation: false,
            keep_alive: DEFAULT_KEEP_ALIVE,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_inbound_streams: DEFAULT_MAX_INBOUND_STREAMS,
            backoff_min: DEFAULT_BACKOFF_MIN,
            backoff_max: DEFAULT_BACKOFF_MAX,
        }
    }

    /// The configuration of node `node_name` of `topology`: binds its `peer` address, uses the
    /// certificates directory of the topology, WAN emulation as the topology allows. None when
    /// the node is unknown or the topology has no `cluster.certs`.
    pub fn for_node(topology: &crate::Topology, node_name: &str) -> Option<LinkConfig> {
        let node = topology.node(node_name)?;
        let certs = topology.cert_paths(node_name)?;
        Some(
            LinkConfig::new(node_name, node.peer, &certs)
                .with_wan_emulation(topology.cluster.wan_emulation)
                .with_idle_timeout(Duration::from_millis(topology.cluster.link_idle_timeout_ms)),
        )
    }

    /// The same configuration with idle timeout `idle`.
    pub fn with_idle_timeout(mut self, idle: Duration) -> LinkConfig {
        self.idle_timeout = idle;
        self
    }

    /// The same configuration with WAN emulation set to `enabled`.
    pub fn with_wan_emulation(mut self, enabled: bool) -> LinkConfig {
        self.wan_emulation = enabled;
        self
    }
}

/// A peer to call: its node name (TLS identity) and QUIC address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerAddr {
    /// Node name.
    pub name: String,
    /// QUIC (UDP) address.
    pub addr: SocketAddr,
}

impl PeerAddr {
    /// A peer address.
    pub fn new(name: impl Into<String>, addr: SocketAddr) -> PeerAddr {
        PeerAddr {
            name: name.into(),
            addr,
        }
    }
}

/// A snapshot of one peer's link, for `MERIDIAN NODES` / `REGIONS` and metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerState {
    /// Node name.
    pub name: String,
    /// Address last dialed or seen (None if only known by an inbound connection not yet seen).
    pub addr: Option<SocketAddr>,
    /// Whether a live connection exists.
    pub connected: bool,
    /// Smoothed round-trip time of the live connection.
    pub rtt: Option<Duration>,
    /// UDP datagrams sent on the live connection so far (0 without one).
    pub datagrams_sent: u64,
    /// UDP datagrams received on the live connection so far (0 without one).
    pub datagrams_received: u64,
    /// The last error on this link (dial failure or connection loss), if any since it was up.
    pub last_error: Option<String>,
    /// Dial failures in a row.
    pub consecutive_failures: u32,
}

/// The congestion state of one live connection (QUIC's path statistics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathState {
    /// Smoothed round-trip time.
    pub rtt: Duration,
    /// Congestion window, bytes: at most this much is unacknowledged at a time, so a stream
    /// moves at most about `cwnd / rtt` bytes a second.
    pub cwnd: u64,
    /// Packets declared lost since the connection opened.
    pub lost_packets: u64,
    /// Packets sent since the connection opened.
    pub sent_packets: u64,
    /// Times the congestion controller cut its window.
    pub congestion_events: u64,
}

/// Errors of the link layer: configuration, dialing, handshakes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// A TLS file could not be read.
    #[error("cannot read {path}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A TLS file holds no usable PEM item of the expected kind.
    #[error("no {what} found in {path}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// "certificate" or "private key".
        what: &'static str,
    },
    /// rustls rejected the configuration (key does not match, bad certificate …).
    #[error("TLS configuration")]
    Tls(#[from] rustls::Error),
    /// The client certificate verifier could not be built (e.g. empty CA file).
    #[error("client certificate verifier")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// The rustls configuration is unusable for QUIC.
    #[error("QUIC crypto configuration")]
    QuicCrypto(#[from] quinn::crypto::rustls::NoInitialCipherSuite),
    /// The UDP socket could not be bound.
    #[error("cannot bind UDP {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A node name that is not usable as a TLS server name.
    #[error("invalid node name {name:?}: must be a DNS name")]
    BadName {
        /// The name.
        name: String,
    },
    /// quinn refused to start a connection.
    #[error("cannot connect to {addr}")]
    Connect {
        /// The address.
        addr: SocketAddr,
        /// quinn's error.
        #[source]
        source: quinn::ConnectError,
    },
    /// The connection failed or was closed (TLS refusal, timeout, peer closed …).
    #[error("connection failed")]
    Connection(#[from] quinn::ConnectionError),
    /// The peer broke the hello protocol.
    #[error("handshake failed: {reason}")]
    Handshake {
        /// What went wrong.
        reason: &'static str,
    },
    /// The peer speaks another link protocol version.
    #[error("link protocol version mismatch: local {local}, remote {remote}")]
    VersionMismatch {
        /// Our [`PROTOCOL_VERSION`].
        local: u16,
        /// The peer's.
        remote: u16,
    },
    /// The node answering at the dialed address is not the expected one.
    #[error("expected node {expected:?}, the peer says it is {actual:?}")]
    WrongPeer {
        /// The name dialed.
        expected: String,
        /// The name in the peer's hello.
        actual: String,
    },
    /// The peer's hello names a node its certificate is not valid for.
    #[error("peer claims to be {claimed:?} but its certificate is not issued for that name")]
    CertificateName {
        /// The claimed name.
        claimed: String,
    },
    /// The TLS + hello handshake took too long.
    #[error("handshake timed out after {0:?}")]
    HandshakeTimeout(Duration),
    /// A recent dial failed; the next attempt waits for the backoff.
    #[error("link down ({last_error}); next dial in {retry_in:?}")]
    Backoff {
        /// Time left before the next dial.
        retry_in: Duration,
        /// The failure that started the backoff.
        last_error: String,
    },
    /// The endpoint is shut down.
    #[error("endpoint is shut down")]
    Shutdown,
}

/// Renders an error with its chain of sources, for logs and [`PeerState::last_error`].
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_for_topology_node() {
        let text = "[cluster]\nname = \"c\"\ncerts = \"/certs\"\nwan_emulation = true\n\
                    [[region]]\nname = \"r\"\n[[region.node]]\nname = \"n1\"\n\
                    resp = \"127.0.0.1:1\"\npeer = \"127.0.0.1:2\"\n";
        let t = crate::Topology::parse(text, None).unwrap();
        let c = LinkConfig::for_node(&t, "n1").unwrap();
        assert_eq!(c.bind, "127.0.0.1:2".parse().unwrap());
        assert_eq!(c.cert, std::path::Path::new("/certs/n1.pem"));
        assert_eq!(c.ca_cert, std::path::Path::new("/certs/ca.pem"));
        assert!(c.wan_emulation);
        assert!(LinkConfig::for_node(&t, "n2").is_none());
        let single = crate::Topology::single_node(
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        );
        assert!(LinkConfig::for_node(&single, crate::topology::LOCAL_NODE).is_none());
    }
}

//! Meridian's geo layer: everything between nodes and between regions.
//!
//! - [`topology`]: the cluster description (regions, nodes, placement rules, emulated WAN
//!   links), loaded from one TOML file shared by every node.
//! - [`certs`]: a development CA and per-node certificates (rcgen) for mutual TLS.
//! - [`link`]: one QUIC [`Endpoint`] per node for all node-to-node traffic, with mutual TLS
//!   against the cluster CA, a versioned handshake, cached connections, redial with backoff and
//!   RTT per peer.
//! - [`rpc`]: request/response calls on that endpoint (one bidirectional stream per call,
//!   length-prefixed frames, a `kind` tag per service) served by an [`RpcHandler`].
//! - [`hlc`]: the hybrid logical clock that stamps writes.
//! - [`routing`]: home region by consistent hashing, nearest healthy region by RTT, placement
//!   rules.
//! - [`wan`]: WAN emulation (delay, jitter, loss, partitions) on the real QUIC datagrams, for
//!   tests and demos.
//!
//! Entry point: build a [`LinkConfig`] (from a [`Topology`] and its certificates), then
//! [`Endpoint::start`] with the server's [`RpcHandler`]; call peers with [`Endpoint::call`].
//! The crate knows nothing about commands or storage.
//!
//! The process must use rustls' ring provider; [`install_crypto_provider`] installs it once
//! (it is called by [`Endpoint::start`] too).

#![warn(missing_docs, unreachable_pub)]

pub mod certs;
pub mod glob;
pub mod hlc;
pub mod link;
pub mod routing;
pub mod rpc;
pub mod topology;
pub mod wan;

pub use certs::{
    generate_ca_only, generate_certs, generate_node_cert, CertError, CertPaths, CertsWritten,
};
pub use hlc::{Hlc, PhysicalClock, Timestamp};
pub use link::{Endpoint, LinkConfig, LinkError, PathState, PeerAddr, PeerState};
pub use routing::{nearest_healthy, HomeRing, Placement, PlacementRules, RegionHealth};
pub use rpc::{RpcError, RpcHandler, MAX_FRAME_SIZE};
pub use topology::{Node, NodeId, Region, Topology, TopologyError};
pub use wan::{LinkShape, WanEmulator, WanError};

/// Installs rustls' ring crypto provider as the process default, once. Idempotent and
/// thread-safe; a provider installed earlier by someone else is left in place.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            // Err means another thread installed one in between: fine either way.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
    });
}

//! The node's QUIC endpoint: accept loop, per-peer connection cache, dialing with backoff.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use quinn::{Connection, VarInt};
use rand::Rng;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, warn, Instrument};

use super::handshake::{self, close, Hello};
use super::tls::{self, TlsMaterial};
use super::{
    error_chain, LinkConfig, LinkError, PathState, PeerAddr, PeerState, MAX_PENDING_HANDSHAKES,
};
use crate::rpc::{self, RpcHandler};
use crate::wan::{WanEmulator, WanSocket};

/// How long a connection that lost the duplicate tie-break stays open for calls in flight.
const RETIRE_GRACE: Duration = Duration::from_secs(5);

/// Initial congestion window of every link, bytes (Cubic's default is ~14 KB).
const INITIAL_CONGESTION_WINDOW: u64 = 1 << 20;

/// Bytes a link's congestion window never falls below, however many packets are lost (see
/// `FlooredCubic`): at an 80 ms round trip, about 3 MB/s.
const CONGESTION_WINDOW_FLOOR: u64 = 256 * 1024;

/// Ack-eliciting packets a peer may take in before it must acknowledge them at once (QUIC's
/// ACK frequency extension; RFC 9000's default is 1, an ACK for every second packet).
///
/// Links carry request/response calls whose response comes back within a round trip and
/// carries the acknowledgement: with the default, a follower sent an ACK-only datagram for
/// every request of two or more packets, before its response. With 8, acknowledgements ride on
/// the responses (or wait at most the smaller of the round trip and the peer's
/// `max_ack_delay`), and bulk transfers (snapshots, replication between regions) get an ACK
/// every nine packets.
const ACK_ELICITING_THRESHOLD: u32 = 8;

/// Kernel buffer asked for the QUIC socket, each way, bytes (Linux caps it at `net.core.rmem_max`
/// and `wmem_max`). The default receive buffer (about 208 KiB) overflowed on a follower whose
/// Raft thread was applying while the leader's AppendEntries arrived: about 100 datagrams
/// dropped per million SETs of `redis-benchmark -P 16` through a three-node region's leader,
/// each one a retransmission and a congestion-window cut; none with 4 MiB.
const UDP_BUFFER_BYTES: usize = 4 << 20;

/// Bound on waiting for in-flight work at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Bound on waiting at shutdown for the closed connections to drain (so peers hear of the
/// close rather than time out). The close is sent at once; draining waits out three probe
/// timeouts, and a link that was still dialling a peer that is down waited the whole
/// [`SHUTDOWN_GRACE`] (the last node of a region to stop took 2 s).
const CLOSE_DRAIN_GRACE: Duration = Duration::from_millis(300);

/// quinn's tokio runtime, pinned to the runtime that started the endpoint. quinn spawns a
/// connection's driver (packet building, encryption, UDP sends, ACK processing) on the runtime
/// of whoever dials: a link first dialed by openraft's replication would otherwise be driven on
/// the node's Raft thread, the busiest one.
#[derive(Debug)]
struct PinnedRuntime {
    handle: tokio::runtime::Handle,
}

impl quinn::Runtime for PinnedRuntime {
    fn new_timer(&self, at: std::time::Instant) -> std::pin::Pin<Box<dyn quinn::AsyncTimer>> {
        let _runtime = self.handle.enter();
        quinn::TokioRuntime.new_timer(at)
    }

    fn spawn(&self, future: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) {
        self.handle.spawn(future);
    }

    fn wrap_udp_socket(
        &self,
        socket: std::net::UdpSocket,
    ) -> std::io::Result<Arc<dyn quinn::AsyncUdpSocket>> {
        let _runtime = self.handle.enter();
        quinn::TokioRuntime.wrap_udp_socket(socket)
    }
}

/// Asks the kernel for `bytes` of receive and send buffer on `socket` and returns what it
/// granted (receive, send). A refusal is logged and the socket keeps its defaults: a smaller
/// buffer costs drops under bursts, not correctness.
fn enlarge_buffers(socket: &std::net::UdpSocket, bytes: usize) -> (usize, usize) {
    let sock = socket2::SockRef::from(socket);
    if let Err(e) = sock.set_recv_buffer_size(bytes) {
        warn!(error = %e, bytes, "could not enlarge the QUIC socket's receive buffer");
    }
    if let Err(e) = sock.set_send_buffer_size(bytes) {
        warn!(error = %e, bytes, "could not enlarge the QUIC socket's send buffer");
    }
    let granted = (
        sock.recv_buffer_size().unwrap_or(0),
        sock.send_buffer_size().unwrap_or(0),
    );
    debug!(recv = granted.0, send = granted.1, "QUIC socket buffers");
    granted
}

/// One node's QUIC endpoint: serves inbound RPCs and dials peers. Cheap to clone.
///
/// Dropping the last clone stops the background tasks and closes every connection, like
/// [`Endpoint::shutdown`] without the wait.
#[derive(Clone)]
pub struct Endpoint {
    pub(crate) inner: Arc<Inner>,
    _owner: Arc<StopOnDrop>,
}

/// Held only by user-facing handles (background tasks hold `Inner`, not this): when the last
/// handle goes, the tasks are told to stop, so `Inner` is freed.
struct StopOnDrop {
    stop: CancellationToken,
    quinn: quinn::Endpoint,
}

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if !self.stop.is_cancelled() {
            self.stop.cancel();
            self.quinn
                .close(VarInt::from_u32(close::SHUTDOWN), b"shutdown");
        }
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("node", &self.inner.node_name)
            .field("addr", &self.inner.local_addr)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) node_name: String,
    incarnation: u64,
    config: LinkConfig,
    quinn: quinn::Endpoint,
    client_config: quinn::ClientConfig,
    pub(crate) handler: Arc<dyn RpcHandler>,
    peers: Mutex<HashMap<String, Arc<Peer>>>,
    wan: WanEmulator,
    local_addr: SocketAddr,
    pub(crate) stop: CancellationToken,
    pub(crate) tasks: TaskTracker,
}

/// Which side opened a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Dialed,
    Accepted,
}

#[derive(Clone)]
struct Live {
    conn: Connection,
    incarnation: u64,
    side: Side,
}

impl Live {
    fn is_live(&self) -> bool {
        self.conn.close_reason().is_none()
    }
}

#[derive(Default)]
struct Slot {
    addr: Option<SocketAddr>,
    live: Option<Live>,
    last_error: Option<String>,
    failures: u32,
    retry_at: Option<Instant>,
    /// Dial attempts in flight (see [`Inner::connection`]).
    attempts: usize,
    /// When the newest of them started.
    newest_attempt: Option<Instant>,
    /// One attempt the peer answered is finishing its handshake: the others stand down.
    finishing: bool,
    /// The round trip of the last connection when it closed (none if never connected).
    last_rtt: Option<Duration>,
}

struct Peer {
    name: String,
    slot: Mutex<Slot>,
    /// Woken when a dial attempt ends (its connection installed or not).
    attempt_ended: tokio::sync::Notify,
}

/// How a dial attempt that brought no connection ended.
enum AttemptEnd {
    /// The peer did not answer its handshake in time: the caller may start a fresh one.
    Unanswered,
    /// Another attempt was answered first and finishes the link.
    StoodDown,
    /// It failed (the peer refused it, the handshake broke or timed out).
    Failed(LinkError),
}

/// Dial attempts to one peer in flight at most.
const MAX_DIAL_ATTEMPTS: usize = 8;

/// A call that finds no link starts a fresh dial attempt if the newest one in flight is at
/// least this old and the peer has answered none yet; otherwise it waits for them.
const FRESH_ATTEMPT_GAP: Duration = Duration::from_millis(50);

/// How long an attempt waits for the peer's first answer: 4 round trips of the last
/// connection to it, within these bounds (the upper one for a peer never connected to).
const ANSWER_WAIT_MIN: Duration = Duration::from_millis(200);
const ANSWER_WAIT_MAX: Duration = Duration::from_secs(1);

impl Peer {
    fn lock(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn live_conn(&self) -> Option<Connection> {
        let slot = self.lock();
        slot.live
            .as_ref()
            .filter(|l| l.is_live())
            .map(|l| l.conn.clone())
    }
}

/// Endpoint identity secrets derived from the node's private key: the stateless reset key and
/// the key of the connection-id generator. Being stable across restarts, they let a restarted
/// process recognise connection ids of its previous incarnation and reset those connections
/// (peers then redial at once instead of waiting for the idle timeout).
fn endpoint_config(key_der: &[u8]) -> quinn::EndpointConfig {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"meridian quic endpoint v1\0");
    ctx.update(key_der);
    let seed = ctx.finish();
    let seed = seed.as_ref();
    let reset_key = Arc::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, seed));
    let mut cid_key = [0u8; 8];
    cid_key.copy_from_slice(&seed[..8]);
    let cid_key = u64::from_be_bytes(cid_key);
    let mut config = quinn::EndpointConfig::new(reset_key);
    config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    config
}

fn transport_config(config: &LinkConfig) -> Result<quinn::TransportConfig, LinkError> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(config.keep_alive));
    let idle =
        quinn::IdleTimeout::try_from(config.idle_timeout).map_err(|_| LinkError::Handshake {
            reason: "idle timeout out of range",
        })?;
    t.max_idle_timeout(Some(idle));
    t.max_concurrent_bidi_streams(VarInt::from_u32(config.max_inbound_streams));
    // Windows sized for large frames (snapshots) over WAN round trips; they bound the memory a
    // peer can make us buffer per stream and per connection.
    t.stream_receive_window(VarInt::from_u32(8 << 20));
    t.receive_window(VarInt::from_u32(32 << 20));
    t.send_window(32 << 20);
    // Inter-region links are long fat pipes carrying a steady stream: start with a window
    // that covers a WAN round trip at replication rates, so the stream is not held to one
    // burst per round trip while slow start catches up (that doubled the visibility lag).
    let mut cubic = quinn::congestion::CubicConfig::default();
    cubic.initial_window(INITIAL_CONGESTION_WINDOW);
    t.congestion_controller_factory(std::sync::Arc::new(super::congestion::FlooredCubicConfig {
        cubic,
        floor: CONGESTION_WINDOW_FLOOR,
    }));
    let mut acks = quinn::AckFrequencyConfig::default();
    acks.ack_eliciting_threshold(VarInt::from_u32(ACK_ELICITING_THRESHOLD));
    t.ack_frequency_config(Some(acks));
    Ok(t)
}

fn backoff(config: &LinkConfig, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    let base = config
        .backoff_min
        .saturating_mul(1u32 << exp)
        .min(config.backoff_max);
    // ±25 % jitter so peers do not redial in lockstep.
    let factor = rand::rng().random_range(0.75..=1.25);
    base.mul_f64(factor).min(config.backoff_max)
}

impl Endpoint {
    /// Binds `config.bind` (UDP), starts accepting; every inbound RPC goes to `handler`.
    pub async fn start(
        config: LinkConfig,
        handler: Arc<dyn RpcHandler>,
    ) -> Result<Endpoint, LinkError> {
        crate::install_crypto_provider();
        if rustls_pki_types::ServerName::try_from(config.node_name.clone()).is_err()
            || config.node_name.is_empty()
        {
            return Err(LinkError::BadName {
                name: config.node_name.clone(),
            });
        }
        let material = TlsMaterial::load(&config)?;
        let transport = Arc::new(transport_config(&config)?);
        let mut server_config =
            quinn::ServerConfig::with_crypto(Arc::new(material.server_config()?));
        server_config.transport_config(transport.clone());
        let mut client_config = quinn::ClientConfig::new(Arc::new(material.client_config()?));
        client_config.transport_config(transport);
        let endpoint_config = endpoint_config(material.key_der());

        let socket = std::net::UdpSocket::bind(config.bind).map_err(|source| LinkError::Bind {
            addr: config.bind,
            source,
        })?;
        enlarge_buffers(&socket, UDP_BUFFER_BYTES);
        let runtime: Arc<dyn quinn::Runtime> = Arc::new(PinnedRuntime {
            handle: tokio::runtime::Handle::current(),
        });
        let plain = runtime
            .wrap_udp_socket(socket)
            .map_err(|source| LinkError::Bind {
                addr: config.bind,
                source,
            })?;
        let wan = WanEmulator::new(config.wan_emulation);
        let socket: Arc<dyn quinn::AsyncUdpSocket> = if config.wan_emulation {
            Arc::new(WanSocket::new(plain, wan.clone()))
        } else {
            plain
        };
        let quinn = quinn::Endpoint::new_with_abstract_socket(
            endpoint_config,
            Some(server_config),
            socket,
            runtime,
        )
        .map_err(|source| LinkError::Bind {
            addr: config.bind,
            source,
        })?;
        let local_addr = quinn.local_addr().map_err(|source| LinkError::Bind {
            addr: config.bind,
            source,
        })?;
        let inner = Arc::new(Inner {
            node_name: config.node_name.clone(),
            incarnation: rand::rng().random(),
            config,
            quinn,
            client_config,
            handler,
            peers: Mutex::new(HashMap::new()),
            wan,
            local_addr,
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        inner.tasks.spawn(
            accept_loop(inner.clone())
                .instrument(info_span!("link_accept", node = %inner.node_name)),
        );
        info!(node = %inner.node_name, addr = %local_addr, wan_emulation = inner.config.wan_emulation,
              "link endpoint started");
        let owner = Arc::new(StopOnDrop {
            stop: inner.stop.clone(),
            quinn: inner.quinn.clone(),
        });
        Ok(Endpoint {
            inner,
            _owner: owner,
        })
    }

    /// This node's name.
    pub fn node_name(&self) -> &str {
        &self.inner.node_name
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Runtime control of WAN emulation (refuses changes unless enabled in the config).
    pub fn wan(&self) -> &WanEmulator {
        &self.inner.wan
    }

    /// Smoothed RTT of the live connection to `peer_name`, if connected.
    pub fn rtt(&self, peer_name: &str) -> Option<Duration> {
        let peer = self.inner.peers_lock().get(peer_name).cloned()?;
        peer.live_conn().map(|c| c.rtt())
    }

    /// Congestion state of the live connection to `peer_name`, if connected: what bounds how
    /// fast a stream to that peer can go.
    pub fn path(&self, peer_name: &str) -> Option<PathState> {
        let peer = self.inner.peers_lock().get(peer_name).cloned()?;
        let path = peer.live_conn()?.stats().path;
        Some(PathState {
            rtt: path.rtt,
            cwnd: path.cwnd,
            lost_packets: path.lost_packets,
            sent_packets: path.sent_packets,
            congestion_events: path.congestion_events,
        })
    }

    /// Whether a live connection to `peer_name` exists.
    pub fn is_connected(&self, peer_name: &str) -> bool {
        let peer = self.inner.peers_lock().get(peer_name).cloned();
        peer.is_some_and(|p| p.live_conn().is_some())
    }

    /// Every peer known (dialed, registered or connected), sorted by name.
    pub fn peer_states(&self) -> Vec<PeerState> {
        let peers: Vec<Arc<Peer>> = self.inner.peers_lock().values().cloned().collect();
        let mut out: Vec<PeerState> = peers
            .iter()
            .map(|p| {
                let slot = p.lock();
                let live = slot.live.as_ref().filter(|l| l.is_live());
                let stats = live.map(|l| l.conn.stats());
                PeerState {
                    name: p.name.clone(),
                    addr: slot.addr,
                    connected: live.is_some(),
                    rtt: live.map(|l| l.conn.rtt()),
                    datagrams_sent: stats.as_ref().map_or(0, |s| s.udp_tx.datagrams),
                    datagrams_received: stats.as_ref().map_or(0, |s| s.udp_rx.datagrams),
                    last_error: slot.last_error.clone(),
                    consecutive_failures: slot.failures,
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Makes peers known (listed by [`Endpoint::peer_states`]) without dialing them.
    pub fn register_peers(&self, peers: impl IntoIterator<Item = PeerAddr>) {
        for p in peers {
            if p.name != self.inner.node_name {
                self.inner.peer_entry(&p.name, Some(p.addr));
            }
        }
    }

    /// Ensures a live connection to `peer` (dialing if needed), waiting at most `timeout`.
    /// Useful to measure RTT before any call.
    pub async fn connect(&self, peer: &PeerAddr, timeout: Duration) -> Result<(), LinkError> {
        match tokio::time::timeout(timeout, self.inner.connection(peer)).await {
            Ok(r) => r.map(|_| ()),
            Err(_) => Err(LinkError::HandshakeTimeout(timeout)),
        }
    }

    /// Closes every connection, stops accepting, and waits (bounded) for in-flight work.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        if inner.stop.is_cancelled() {
            return;
        }
        inner.stop.cancel();
        inner
            .quinn
            .close(VarInt::from_u32(close::SHUTDOWN), b"shutdown");
        inner.tasks.close();
        let started = std::time::Instant::now();
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, inner.tasks.wait()).await;
        let tasks_ms = started.elapsed().as_millis() as u64;
        let _ = tokio::time::timeout(CLOSE_DRAIN_GRACE, inner.quinn.wait_idle()).await;
        let idle_ms = started.elapsed().as_millis() as u64 - tasks_ms;
        info!(node = %inner.node_name, tasks_ms, idle_ms, "link endpoint stopped");
    }
}

impl Inner {
    fn peers_lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Peer>>> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The peer entry for `name`, created if new; `addr` updates the known address.
    fn peer_entry(&self, name: &str, addr: Option<SocketAddr>) -> Arc<Peer> {
        let peer = self
            .peers_lock()
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(Peer {
                    name: name.to_owned(),
                    slot: Mutex::new(Slot::default()),
                    attempt_ended: tokio::sync::Notify::new(),
                })
            })
            .clone();
        if let Some(addr) = addr {
            let mut slot = peer.lock();
            if slot.addr != Some(addr) {
                slot.addr = Some(addr);
            }
        }
        peer
    }

    /// A live connection to `peer`: cached, or brought by a dial attempt.
    ///
    /// Attempts run in tasks of their own, not in the calls that start them: a call that gives
    /// up (an AppendEntries allows 50 ms) leaves its attempt to finish for the next call.
    /// Before 2026-12-05 the dial was the caller's and ended with it, so on a loaded machine a
    /// handshake slower than the calls' deadlines was started and abandoned again call after
    /// call, and the link came up late. A call that finds no link starts a fresh attempt
    /// (unless the newest is younger than [`FRESH_ATTEMPT_GAP`], or one the peer answered is
    /// finishing, or [`MAX_DIAL_ATTEMPTS`] are in flight), so after a partition heals the
    /// next call's attempt connects at once, as each call's own dial did, instead of waiting
    /// for QUIC to resend an old attempt's lost packets.
    pub(crate) async fn connection(
        self: &Arc<Self>,
        peer: &PeerAddr,
    ) -> Result<Connection, LinkError> {
        let entry = self.peer_entry(&peer.name, Some(peer.addr));
        loop {
            if self.stop.is_cancelled() {
                return Err(LinkError::Shutdown);
            }
            let ended = entry.attempt_ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if let Some(conn) = entry.live_conn() {
                return Ok(conn);
            }
            let Some(attempt) = self.start_attempt(&entry, peer)? else {
                // Others are under way: wait for one to end, or until a fresh one may start.
                tokio::select! {
                    _ = ended => {}
                    _ = tokio::time::sleep(FRESH_ATTEMPT_GAP) => {}
                }
                continue;
            };
            match attempt.await {
                Ok(Ok(conn)) => return Ok(conn),
                Ok(Err(AttemptEnd::Unanswered | AttemptEnd::StoodDown)) => continue,
                Ok(Err(AttemptEnd::Failed(e))) => return Err(e),
                Err(e) if e.is_panic() => {
                    return Err(LinkError::Handshake {
                        reason: "the dial panicked",
                    })
                }
                Err(_) => return Err(LinkError::Shutdown),
            }
        }
    }

    /// Starts a dial attempt to `peer` in a task of its own, if one may start now (`None`:
    /// wait for those in flight); a backoff error if the last attempt failed a short while
    /// ago and none is in flight.
    fn start_attempt(
        self: &Arc<Self>,
        entry: &Arc<Peer>,
        peer: &PeerAddr,
    ) -> Result<Option<JoinHandle<Result<Connection, AttemptEnd>>>, LinkError> {
        let mut slot = entry.lock();
        if slot.attempts > 0 {
            let fresh_due = slot
                .newest_attempt
                .is_none_or(|at| at.elapsed() >= FRESH_ATTEMPT_GAP);
            if slot.finishing || slot.attempts >= MAX_DIAL_ATTEMPTS || !fresh_due {
                return Ok(None);
            }
        } else if let Some(at) = slot.retry_at {
            let now = Instant::now();
            if at > now {
                return Err(LinkError::Backoff {
                    retry_in: at - now,
                    last_error: slot.last_error.clone().unwrap_or_default(),
                });
            }
        }
        let rtt = slot.live.as_ref().map(|l| l.conn.rtt()).or(slot.last_rtt);
        let answer_wait = rtt.map_or(ANSWER_WAIT_MAX, |rtt| {
            (rtt * 4).clamp(ANSWER_WAIT_MIN, ANSWER_WAIT_MAX)
        });
        slot.attempts += 1;
        slot.newest_attempt = Some(Instant::now());
        drop(slot);
        metrics::counter!("geo_link_dials_total", "peer" => peer.name.clone()).increment(1);
        let (me, entry, peer) = (self.clone(), entry.clone(), peer.clone());
        Ok(Some(self.tasks.spawn(async move {
            let ended = tokio::select! {
                r = me.attempt(&entry, &peer, answer_wait) => r,
                _ = me.stop.cancelled() => Err(AttemptEnd::Failed(LinkError::Shutdown)),
            };
            me.attempt_ended(&entry, &peer, ended)
        })))
    }

    /// One dial attempt: connects to `peer`, and once the peer answered (within
    /// `answer_wait`), finishes the handshake and exchanges hellos (within the handshake
    /// timeout), unless another answered attempt is already finishing.
    async fn attempt(
        self: &Arc<Self>,
        entry: &Arc<Peer>,
        peer: &PeerAddr,
        answer_wait: Duration,
    ) -> Result<Connection, AttemptEnd> {
        let mut connecting = self
            .quinn
            .connect_with(self.client_config.clone(), peer.addr, &peer.name)
            .map_err(|source| {
                AttemptEnd::Failed(LinkError::Connect {
                    addr: peer.addr,
                    source,
                })
            })?;
        match tokio::time::timeout(answer_wait, connecting.handshake_data()).await {
            Err(_) => return Err(AttemptEnd::Unanswered),
            Ok(Err(e)) => return Err(AttemptEnd::Failed(e.into())),
            Ok(Ok(_)) => {}
        }
        {
            let mut slot = entry.lock();
            // (A link the peer dialed meanwhile does not stop it: both ends then keep the one
            // the smaller name dialed, see `install`.)
            let dialed = |l: &Live| l.is_live() && l.side == Side::Dialed;
            if slot.finishing || slot.live.as_ref().is_some_and(dialed) {
                return Err(AttemptEnd::StoodDown);
            }
            slot.finishing = true;
        }
        let finished = tokio::time::timeout(self.config.handshake_timeout, async {
            let conn = connecting.await?;
            let hello =
                handshake::dial(&conn, &Hello::ours(&self.node_name, self.incarnation)).await?;
            if hello.name != peer.name {
                let e = LinkError::WrongPeer {
                    expected: peer.name.clone(),
                    actual: hello.name,
                };
                conn.close(VarInt::from_u32(close::IDENTITY), e.to_string().as_bytes());
                return Err(e);
            }
            self.install(entry, conn.clone(), hello.incarnation, Side::Dialed);
            Ok(conn)
        })
        .await
        .unwrap_or(Err(LinkError::HandshakeTimeout(
            self.config.handshake_timeout,
        )));
        entry.lock().finishing = false;
        finished.map_err(AttemptEnd::Failed)
    }

    /// Books the end of an attempt (a failure, or no answer while there is no link, counts
    /// against the peer; only a failure starts a backoff) and wakes the calls waiting for
    /// attempts to end.
    fn attempt_ended(
        &self,
        entry: &Peer,
        peer: &PeerAddr,
        ended: Result<Connection, AttemptEnd>,
    ) -> Result<Connection, AttemptEnd> {
        let mut slot = entry.lock();
        slot.attempts -= 1;
        let linked = slot.live.as_ref().is_some_and(Live::is_live);
        let failure = match &ended {
            Ok(_) | Err(AttemptEnd::StoodDown) => None,
            // (An older attempt outlived by the link another one brought is no failure.)
            Err(AttemptEnd::Unanswered) if linked => None,
            Err(AttemptEnd::Unanswered) => Some((None, "no answer to the handshake".to_string())),
            Err(AttemptEnd::Failed(e)) => Some((Some(e), error_chain(e))),
        };
        if let Some((error, text)) = failure {
            slot.failures = slot.failures.saturating_add(1);
            slot.last_error = Some(text.clone());
            let failures = slot.failures;
            let wait = error.map(|_| backoff(&self.config, failures));
            if let Some(wait) = wait {
                slot.retry_at = Some(Instant::now() + wait);
            }
            drop(slot);
            metrics::counter!("geo_link_dial_failures_total", "peer" => peer.name.clone())
                .increment(1);
            let loud = failures == 1
                || matches!(
                    error,
                    Some(LinkError::Connection(
                        quinn::ConnectionError::TransportError(_)
                    ))
                );
            if loud {
                match wait {
                    Some(wait) => {
                        warn!(peer = %peer.name, addr = %peer.addr, error = %text, retry_in = ?wait, "dial failed")
                    }
                    None => {
                        warn!(peer = %peer.name, addr = %peer.addr, error = %text, "dial failed")
                    }
                }
            } else {
                debug!(peer = %peer.name, addr = %peer.addr, error = %text, failures, "dial failed again");
            }
        } else {
            drop(slot);
        }
        entry.attempt_ended.notify_waiters();
        ended
    }

    /// Caches `conn` for its peer (or keeps an equivalent one) and starts serving it.
    fn install(self: &Arc<Self>, peer: &Arc<Peer>, conn: Connection, incarnation: u64, side: Side) {
        let new = Live {
            conn: conn.clone(),
            incarnation,
            side,
        };
        let mut retire = None;
        let mut slot = peer.lock();
        match slot.live.take() {
            Some(old) if old.is_live() && old.incarnation != incarnation => {
                // The peer restarted: the old connection belongs to its previous process.
                old.conn
                    .close(VarInt::from_u32(close::REPLACED), b"peer restarted");
                slot.live = Some(new);
            }
            Some(old) if old.is_live() => {
                // Two live connections to the same process (both sides dialed at once).
                // Both ends keep the one dialed by the smaller node name; the other retires.
                let keep_new = old.side == side || {
                    let smaller_is_us = self.node_name < peer.name;
                    (side == Side::Dialed) == smaller_is_us
                };
                if keep_new {
                    retire = Some(old.conn.clone());
                    slot.live = Some(new);
                } else {
                    retire = Some(conn.clone());
                    slot.live = Some(old);
                }
            }
            _ => slot.live = Some(new),
        }
        slot.failures = 0;
        slot.retry_at = None;
        slot.last_error = None;
        if side == Side::Accepted && slot.addr.is_none() {
            slot.addr = Some(conn.remote_address());
        }
        drop(slot);
        info!(peer = %peer.name, addr = %conn.remote_address(), side = ?side, "link up");
        self.tasks.spawn(
            serve_connection(self.clone(), peer.clone(), conn)
                .instrument(info_span!("link", peer = %peer.name)),
        );
        if let Some(loser) = retire {
            let peer = peer.clone();
            let stop = self.stop.clone();
            self.tasks.spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(RETIRE_GRACE) => {}
                    _ = stop.cancelled() => return,
                }
                let cached = peer
                    .lock()
                    .live
                    .as_ref()
                    .is_some_and(|l| l.conn.stable_id() == loser.stable_id());
                if !cached {
                    loser.close(VarInt::from_u32(close::REPLACED), b"duplicate connection");
                }
            });
        }
    }

    /// Forgets `conn` if it is the cached connection of `peer`.
    fn connection_closed(&self, peer: &Peer, conn: &Connection, reason: &quinn::ConnectionError) {
        let mut slot = peer.lock();
        let cached = slot
            .live
            .as_ref()
            .is_some_and(|l| l.conn.stable_id() == conn.stable_id());
        if cached {
            slot.live = None;
            slot.last_rtt = Some(conn.rtt());
            let benign = matches!(
                reason,
                quinn::ConnectionError::LocallyClosed
                    | quinn::ConnectionError::ApplicationClosed(_)
            );
            if !benign {
                slot.last_error = Some(error_chain(reason));
            }
            drop(slot);
            info!(peer = %peer.name, reason = %reason, "link down");
        }
    }
}

async fn accept_loop(inner: Arc<Inner>) {
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let incoming = tokio::select! {
            i = inner.quinn.accept() => i,
            _ = inner.stop.cancelled() => break,
        };
        let Some(incoming) = incoming else { break };
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            warn!(remote = %incoming.remote_address(), "too many pending link handshakes; refused");
            incoming.refuse();
            continue;
        };
        let task_inner = inner.clone();
        inner.tasks.spawn(async move {
            let _permit = permit;
            accept_one(task_inner, incoming).await;
        });
    }
}

async fn accept_one(inner: Arc<Inner>, incoming: quinn::Incoming) {
    let remote = incoming.remote_address();
    let timeout = inner.config.handshake_timeout;
    let result = tokio::time::timeout(timeout, async {
        let conn = incoming.await.map_err(LinkError::Connection)?;
        let ours = Hello::ours(&inner.node_name, inner.incarnation);
        let hello = handshake::accept(&conn, &ours, |h| {
            if tls::peer_cert_valid_for(&conn, &h.name) && h.name != inner.node_name {
                Ok(())
            } else {
                Err(LinkError::CertificateName {
                    claimed: h.name.clone(),
                })
            }
        })
        .await?;
        Ok::<_, LinkError>((conn, hello))
    })
    .await
    .unwrap_or(Err(LinkError::HandshakeTimeout(timeout)));
    match result {
        Ok((conn, hello)) => {
            let peer = inner.peer_entry(&hello.name, None);
            inner.install(&peer, conn, hello.incarnation, Side::Accepted);
        }
        Err(e) => match InboundFailure::of(&e) {
            InboundFailure::StrayInitial => {
                metrics::counter!("geo_link_refused_total", "reason" => "stray-initial")
                    .increment(1);
                debug!(%remote, "dropped an undecryptable QUIC Initial packet");
            }
            InboundFailure::Abandoned => {
                metrics::counter!("geo_link_refused_total", "reason" => "abandoned").increment(1);
                info!(%remote, error = %error_chain(&e), "inbound peer connection abandoned by its dialer");
            }
            InboundFailure::Refused => {
                metrics::counter!("geo_link_refused_total", "reason" => "refused").increment(1);
                warn!(%remote, error = %error_chain(&e), "refused inbound peer connection");
            }
        },
    }
}

/// Why an inbound link handshake failed, which decides how loudly it is logged.
#[derive(Debug, PartialEq, Eq)]
enum InboundFailure {
    /// Not a peer's attempt: a retransmitted handshake packet of a connection this node
    /// already dropped (typically its own dial to a restarting peer, abandoned on timeout
    /// while the peer's answers were still on their way over a delayed link), whose connection
    /// ID no longer derives its keys. quinn reports it as an Initial packet that failed to
    /// decrypt; a real peer's first packet always decrypts.
    StrayInitial,
    /// The dialer gave up: its attempt timed out, or it closed or dropped it during the
    /// handshake (as both nodes do with one of the two links they dial at once after a
    /// restart).
    Abandoned,
    /// This node refused the peer (certificate, name, protocol version), or the peer refused
    /// this node's certificate: what an operator must see.
    Refused,
}

impl InboundFailure {
    fn of(e: &LinkError) -> InboundFailure {
        use quinn::{ConnectionError, TransportErrorCode};
        match e {
            LinkError::Connection(ConnectionError::TransportError(t))
                if t.code == TransportErrorCode::PROTOCOL_VIOLATION
                    && t.reason == "authentication failed" =>
            {
                InboundFailure::StrayInitial
            }
            LinkError::Connection(ConnectionError::TimedOut) => InboundFailure::Abandoned,
            LinkError::Connection(ConnectionError::ConnectionClosed(c))
                if c.error_code == TransportErrorCode::APPLICATION_ERROR =>
            {
                InboundFailure::Abandoned
            }
            // The dialer dropped its connection (quinn closes a dropped one with code 0,
            // the code of a shutdown too) or kept the other link of a simultaneous pair.
            LinkError::Connection(ConnectionError::ApplicationClosed(c))
                if c.error_code == VarInt::from_u32(close::SHUTDOWN)
                    || c.error_code == VarInt::from_u32(close::REPLACED) =>
            {
                InboundFailure::Abandoned
            }
            _ => InboundFailure::Refused,
        }
    }
}

async fn serve_connection(inner: Arc<Inner>, peer: Arc<Peer>, conn: Connection) {
    let permits = Arc::new(Semaphore::new(inner.config.max_inbound_streams as usize));
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = inner.stop.cancelled() => break,
        };
        let accepted = tokio::select! {
            s = conn.accept_bi() => s,
            _ = inner.stop.cancelled() => break,
        };
        match accepted {
            Ok((send, recv)) => {
                let handler = inner.handler.clone();
                let from = peer.name.clone();
                inner.tasks.spawn(
                    async move {
                        rpc::serve_stream(handler, from, send, recv).await;
                        drop(permit);
                    }
                    .in_current_span(),
                );
            }
            Err(reason) => {
                inner.connection_closed(&peer, &conn, &reason);
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::PROTOCOL_VERSION;
    use bytes::Bytes;
    use futures::future::BoxFuture;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn inbound_failures_are_told_apart() {
        use quinn::TransportErrorCode as Code;
        let transport = |code, reason: &str| {
            LinkError::Connection(quinn::ConnectionError::TransportError(
                quinn_proto::TransportError {
                    code,
                    frame: None,
                    reason: reason.into(),
                },
            ))
        };
        let closed = |code, reason: &str| {
            LinkError::Connection(quinn::ConnectionError::ConnectionClosed(
                quinn::ConnectionClose {
                    error_code: code,
                    frame_type: None,
                    reason: Bytes::copy_from_slice(reason.as_bytes()),
                },
            ))
        };
        let of = InboundFailure::of;
        assert_eq!(
            of(&transport(
                Code::PROTOCOL_VIOLATION,
                "authentication failed"
            )),
            InboundFailure::StrayInitial
        );
        assert_eq!(
            of(&transport(Code::PROTOCOL_VIOLATION, "bad frame")),
            InboundFailure::Refused
        );
        // rustls refusing the peer's certificate here.
        assert_eq!(
            of(&transport(Code::crypto(42), "invalid peer certificate")),
            InboundFailure::Refused
        );
        // The peer refusing ours.
        assert_eq!(
            of(&closed(Code::crypto(42), "invalid peer certificate")),
            InboundFailure::Refused
        );
        assert_eq!(
            of(&closed(Code::APPLICATION_ERROR, "")),
            InboundFailure::Abandoned
        );
        let app_closed = |code| {
            LinkError::Connection(quinn::ConnectionError::ApplicationClosed(
                quinn::ApplicationClose {
                    error_code: VarInt::from_u32(code),
                    reason: Bytes::new(),
                },
            ))
        };
        assert_eq!(of(&app_closed(close::SHUTDOWN)), InboundFailure::Abandoned);
        assert_eq!(of(&app_closed(close::REPLACED)), InboundFailure::Abandoned);
        assert_eq!(of(&app_closed(close::IDENTITY)), InboundFailure::Refused);
        assert_eq!(of(&app_closed(close::VERSION)), InboundFailure::Refused);
        assert_eq!(
            of(&LinkError::Connection(quinn::ConnectionError::TimedOut)),
            InboundFailure::Abandoned
        );
        assert_eq!(
            of(&LinkError::CertificateName {
                claimed: "x".into()
            }),
            InboundFailure::Refused
        );
    }

    #[derive(Default)]
    struct Counting(AtomicUsize);

    impl RpcHandler for Counting {
        fn handle(
            &self,
            _from: String,
            _kind: u16,
            body: Bytes,
        ) -> BoxFuture<'static, Result<Bytes, String>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move { Ok(body) })
        }
    }

    fn certs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        crate::certs::generate_ca_only(dir.path()).unwrap();
        for n in ["alpha", "beta"] {
            crate::certs::generate_node_cert(dir.path(), n, dir.path()).unwrap();
        }
        dir
    }

    fn config(dir: &std::path::Path, name: &str) -> LinkConfig {
        let paths = crate::certs::CertPaths::in_dir(dir, name);
        LinkConfig::new(name, "127.0.0.1:0".parse().unwrap(), &paths)
    }

    #[test]
    fn the_quic_socket_gets_larger_buffers_than_the_default() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let sock = socket2::SockRef::from(&socket);
        let default = (
            sock.recv_buffer_size().unwrap(),
            sock.send_buffer_size().unwrap(),
        );
        let granted = enlarge_buffers(&socket, UDP_BUFFER_BYTES);
        // Linux grants twice the size asked for, capped by the rmem_max/wmem_max sysctls (at
        // least their defaults, which are as large as the sockets' defaults).
        assert!(granted.0 > default.0, "receive {default:?} -> {granted:?}");
        assert!(granted.1 > default.1, "send {default:?} -> {granted:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn version_mismatch_is_refused_naming_both_versions() {
        let dir = certs();
        let handler = Arc::new(Counting::default());
        let alpha = Endpoint::start(config(dir.path(), "alpha"), handler.clone())
            .await
            .unwrap();

        // A "beta" from the future: valid certificate, newer link protocol.
        let material = TlsMaterial::load(&config(dir.path(), "beta")).unwrap();
        let client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let cc = quinn::ClientConfig::new(Arc::new(material.client_config().unwrap()));
        let conn = client
            .connect_with(cc, alpha.local_addr(), "alpha")
            .unwrap()
            .await
            .unwrap();
        let mut hello = Hello::ours("beta", 7);
        hello.version = PROTOCOL_VERSION + 1;
        // alpha still answers with its own hello, so the dialer can name both versions
        let reply = handshake::dial(&conn, &hello).await.unwrap();
        assert_eq!(reply.version, PROTOCOL_VERSION);
        assert_eq!(reply.name, "alpha");
        match conn.closed().await {
            quinn::ConnectionError::ApplicationClosed(c) => {
                assert_eq!(c.error_code, VarInt::from_u32(close::VERSION));
                let reason = String::from_utf8_lossy(&c.reason).into_owned();
                let want = format!(
                    "local {}, remote {}",
                    PROTOCOL_VERSION,
                    PROTOCOL_VERSION + 1
                );
                assert!(reason.contains(&want), "{reason}");
            }
            other => panic!("expected an application close, got {other:?}"),
        }
        assert!(!alpha.is_connected("beta"));
        assert_eq!(handler.0.load(Ordering::SeqCst), 0);
        alpha.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn simultaneous_dials_settle_on_one_connection() {
        let dir = certs();
        let a = Endpoint::start(config(dir.path(), "alpha"), Arc::new(Counting::default()))
            .await
            .unwrap();
        let b = Endpoint::start(config(dir.path(), "beta"), Arc::new(Counting::default()))
            .await
            .unwrap();
        let pa = PeerAddr::new("alpha", a.local_addr());
        let pb = PeerAddr::new("beta", b.local_addr());
        let t = Duration::from_secs(5);
        let (x, y) = tokio::join!(
            a.call(&pb, 1, Bytes::from_static(b"x"), t),
            b.call(&pa, 1, Bytes::from_static(b"y"), t)
        );
        x.unwrap();
        y.unwrap();
        let cached = |ep: &Endpoint, peer: &str| {
            let p = ep.inner.peers_lock().get(peer).cloned().unwrap();
            let slot = p.lock();
            slot.live.as_ref().map(|l| l.conn.stable_id())
        };
        // both ends agree on one connection: the one alpha (the smaller name) dialed
        let a_side = a.inner.peers_lock().get("beta").cloned().unwrap();
        let a_live = a_side.lock().live.clone().unwrap();
        assert_eq!(a_live.side, Side::Dialed);
        assert!(cached(&a, "beta").is_some() && cached(&b, "alpha").is_some());
        tokio::time::sleep(RETIRE_GRACE + Duration::from_millis(500)).await;
        for _ in 0..3 {
            a.call(&pb, 1, Bytes::new(), t).await.unwrap();
            b.call(&pa, 1, Bytes::new(), t).await.unwrap();
        }
        assert_eq!(a.inner.quinn.open_connections(), 1);
        assert_eq!(b.inner.quinn.open_connections(), 1);
        a.shutdown().await;
        b.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_the_last_handle_stops_the_endpoint() {
        let dir = certs();
        let a = Endpoint::start(config(dir.path(), "alpha"), Arc::new(Counting::default()))
            .await
            .unwrap();
        let weak = Arc::downgrade(&a.inner);
        let addr = a.local_addr();
        drop(a);
        let start = std::time::Instant::now();
        while weak.upgrade().is_some() {
            assert!(
                start.elapsed() < Duration::from_secs(3),
                "endpoint still alive"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // the port is free again
        let start = std::time::Instant::now();
        while std::net::UdpSocket::bind(addr).is_err() {
            assert!(start.elapsed() < Duration::from_secs(3), "port still bound");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        let certs = crate::certs::CertPaths::in_dir(std::path::Path::new("/nonexistent"), "n");
        let config = LinkConfig::new("n", "127.0.0.1:0".parse().unwrap(), &certs);
        for failures in 1..40 {
            let b = backoff(&config, failures);
            assert!(b <= config.backoff_max);
            assert!(b >= config.backoff_min.mul_f64(0.75));
        }
        assert!(backoff(&config, 1) <= config.backoff_min.mul_f64(1.25));
        assert!(backoff(&config, 30) >= config.backoff_max.mul_f64(0.75));
    }
}

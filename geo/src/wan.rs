//! WAN emulation on the real QUIC datagrams (test and demo only).
//!
//! [`WanSocket`] wraps the endpoint's UDP socket. For each outgoing datagram it looks up the
//! destination address in the [`WanEmulator`]'s table of [`LinkShape`]s: no entry → sent at
//! once; partitioned → dropped; otherwise dropped with probability `loss`, else held in a
//! bounded delay queue and sent `delay ± jitter` later by a background task. Shapes are
//! one-way (they affect what this node sends); to shape both directions of a link, both ends
//! set it. Incoming datagrams are never touched.
//!
//! Emulation must be enabled when the endpoint starts ([`crate::LinkConfig::wan_emulation`]);
//! without it the plain socket is used and [`WanEmulator::set_link`] is refused.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use quinn::udp::{EcnCodepoint, RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use rand::Rng;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, info};

/// Datagrams held in the delay queue at most; beyond that new ones are dropped (a full router
/// queue). 16 Ki datagrams of ≤ 1.5 KB bound the queue to about 24 MB.
pub const MAX_QUEUED_DATAGRAMS: usize = 16 * 1024;

/// The largest delay or jitter accepted by [`WanEmulator::set_link`].
pub const MAX_DELAY: Duration = Duration::from_secs(60);

/// Due queue entries sent per wake-up of the delivery task before it re-checks the queue.
const SEND_BATCH: usize = 64;

/// How datagrams to one destination are treated.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LinkShape {
    /// One-way delay added to every datagram.
    pub delay: Duration,
    /// Uniform jitter: each datagram's delay is `delay ± jitter` (never below zero).
    pub jitter: Duration,
    /// Probability in `[0, 1]` that a datagram is dropped.
    pub loss: f64,
    /// Drop everything.
    pub partitioned: bool,
}

impl LinkShape {
    /// A link that drops everything.
    pub fn partitioned() -> LinkShape {
        LinkShape {
            partitioned: true,
            ..LinkShape::default()
        }
    }

    /// A link with a fixed one-way delay.
    pub fn delay(delay: Duration) -> LinkShape {
        LinkShape {
            delay,
            ..LinkShape::default()
        }
    }
}

/// Errors from [`WanEmulator`] control calls.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum WanError {
    /// The endpoint was started without WAN emulation (`wan_emulation = false`).
    #[error(
        "WAN emulation is disabled (enable cluster.wan_emulation in the topology, test/demo only)"
    )]
    Disabled,
    /// Loss outside `[0, 1]`, or a delay/jitter above [`MAX_DELAY`].
    #[error("invalid link shape: {reason}")]
    BadShape {
        /// What is wrong.
        reason: &'static str,
    },
}

/// Counters of the emulator (since start).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WanStats {
    /// Datagrams held in the delay queue and sent later.
    pub delayed: u64,
    /// Datagrams dropped by random loss.
    pub lost: u64,
    /// Datagrams dropped by a partition.
    pub partitioned: u64,
    /// Datagrams dropped because the delay queue was full.
    pub overflowed: u64,
}

#[derive(Default)]
struct Counters {
    delayed: AtomicU64,
    lost: AtomicU64,
    partitioned: AtomicU64,
    overflowed: AtomicU64,
}

struct Shared {
    enabled: bool,
    /// Fast path: false while the table is empty.
    active: AtomicBool,
    shapes: Mutex<HashMap<SocketAddr, LinkShape>>,
    counters: Counters,
}

/// Runtime control of WAN emulation for one endpoint. Cheap to clone (shared state).
#[derive(Clone)]
pub struct WanEmulator {
    shared: Arc<Shared>,
}

impl fmt::Debug for WanEmulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WanEmulator")
            .field("enabled", &self.shared.enabled)
            .field("shapes", &self.shapes())
            .finish()
    }
}

/// IPv4-mapped IPv6 and plain IPv4 name the same peer.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

impl WanEmulator {
    /// An emulator; when `enabled` is false every control call is refused.
    pub fn new(enabled: bool) -> WanEmulator {
        WanEmulator {
            shared: Arc::new(Shared {
                enabled,
                active: AtomicBool::new(false),
                shapes: Mutex::new(HashMap::new()),
                counters: Counters::default(),
            }),
        }
    }

    /// A disabled emulator.
    pub fn disabled() -> WanEmulator {
        Self::new(false)
    }

    /// Whether emulation is enabled.
    pub fn is_enabled(&self) -> bool {
        self.shared.enabled
    }

    fn table(&self) -> MutexGuard<'_, HashMap<SocketAddr, LinkShape>> {
        // A panic while holding this lock cannot leave the map inconsistent: keep going.
        self.shared
            .shapes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Shapes every datagram this node sends to `dest` from now on.
    pub fn set_link(&self, dest: SocketAddr, shape: LinkShape) -> Result<(), WanError> {
        if !self.shared.enabled {
            return Err(WanError::Disabled);
        }
        if !(0.0..=1.0).contains(&shape.loss) {
            return Err(WanError::BadShape {
                reason: "loss must be within [0, 1]",
            });
        }
        if shape.delay > MAX_DELAY || shape.jitter > MAX_DELAY {
            return Err(WanError::BadShape {
                reason: "delay and jitter must be at most 60 s",
            });
        }
        let mut table = self.table();
        table.insert(canonical(dest), shape);
        self.shared.active.store(true, Ordering::Release);
        drop(table);
        info!(%dest, delay_ms = shape.delay.as_millis() as u64, jitter_ms = shape.jitter.as_millis() as u64,
              loss = shape.loss, partitioned = shape.partitioned, "wan link shaped");
        Ok(())
    }

    /// Removes the shape of `dest` (datagrams already queued are still delivered).
    pub fn clear(&self, dest: SocketAddr) -> Result<(), WanError> {
        if !self.shared.enabled {
            return Err(WanError::Disabled);
        }
        let mut table = self.table();
        table.remove(&canonical(dest));
        self.shared
            .active
            .store(!table.is_empty(), Ordering::Release);
        drop(table);
        info!(%dest, "wan link cleared");
        Ok(())
    }

    /// Removes every shape.
    pub fn clear_all(&self) -> Result<(), WanError> {
        if !self.shared.enabled {
            return Err(WanError::Disabled);
        }
        let mut table = self.table();
        table.clear();
        self.shared.active.store(false, Ordering::Release);
        Ok(())
    }

    /// Current shapes, sorted by destination.
    pub fn shapes(&self) -> Vec<(SocketAddr, LinkShape)> {
        let mut v: Vec<_> = self.table().iter().map(|(a, s)| (*a, *s)).collect();
        v.sort_by_key(|(a, _)| *a);
        v
    }

    /// The shape of `dest`, if any.
    pub fn shape_of(&self, dest: SocketAddr) -> Option<LinkShape> {
        if !self.shared.active.load(Ordering::Acquire) {
            return None;
        }
        self.table().get(&canonical(dest)).copied()
    }

    /// Counters since start.
    pub fn stats(&self) -> WanStats {
        let c = &self.shared.counters;
        WanStats {
            delayed: c.delayed.load(Ordering::Relaxed),
            lost: c.lost.load(Ordering::Relaxed),
            partitioned: c.partitioned.load(Ordering::Relaxed),
            overflowed: c.overflowed.load(Ordering::Relaxed),
        }
    }
}

/// One datagram, or a GSO batch of datagrams with the same fate, waiting in the delay queue.
struct Queued {
    at: Instant,
    seq: u64,
    destination: SocketAddr,
    ecn: Option<EcnCodepoint>,
    src_ip: Option<IpAddr>,
    /// Size of each datagram in `contents` but the last (a GSO batch), or `None`: one datagram.
    segment_size: Option<usize>,
    /// Datagrams in `contents`.
    datagrams: u64,
    contents: Vec<u8>,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

#[derive(Default)]
struct Queue {
    heap: BinaryHeap<Reverse<Queued>>,
    seq: u64,
    /// Datagrams held (a GSO batch counts each of its datagrams).
    datagrams: u64,
}

struct DelayQueue {
    queue: Mutex<Queue>,
    wake: tokio::sync::Notify,
}

impl DelayQueue {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A UDP socket that applies the [`WanEmulator`]'s shapes to outgoing datagrams.
pub struct WanSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    emulator: WanEmulator,
    queue: Arc<DelayQueue>,
    _stop: DropGuard,
}

impl fmt::Debug for WanSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WanSocket")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl WanSocket {
    /// Wraps `inner`; spawns the delivery task (needs a tokio runtime). The task stops when
    /// the socket is dropped.
    pub fn new(inner: Arc<dyn AsyncUdpSocket>, emulator: WanEmulator) -> WanSocket {
        let queue = Arc::new(DelayQueue {
            queue: Mutex::new(Queue::default()),
            wake: tokio::sync::Notify::new(),
        });
        let stop = CancellationToken::new();
        tokio::spawn(deliver(inner.clone(), queue.clone(), stop.clone()));
        WanSocket {
            inner,
            emulator,
            queue,
            _stop: stop.drop_guard(),
        }
    }

    fn shape_and_enqueue(&self, transmit: &Transmit<'_>, shape: LinkShape) {
        let counters = &self.emulator.shared.counters;
        let segment = transmit
            .segment_size
            .filter(|s| *s > 0)
            .unwrap_or(transmit.contents.len())
            .max(1);
        let datagrams = transmit.contents.len().div_ceil(segment) as u64;
        if shape.partitioned {
            counters.partitioned.fetch_add(datagrams, Ordering::Relaxed);
            return;
        }
        let now = Instant::now();
        let mut queue = self.queue.lock();
        let mut earliest_changed = false;
        let mut push = |queue: &mut Queue, at: Instant, contents: &[u8], segment_size| {
            let n = contents.len().div_ceil(segment) as u64;
            if queue.datagrams + n > MAX_QUEUED_DATAGRAMS as u64 {
                counters.overflowed.fetch_add(n, Ordering::Relaxed);
                return;
            }
            if queue.heap.peek().is_none_or(|Reverse(first)| at < first.at) {
                earliest_changed = true;
            }
            queue.seq += 1;
            queue.datagrams += n;
            let seq = queue.seq;
            queue.heap.push(Reverse(Queued {
                at,
                seq,
                destination: transmit.destination,
                ecn: transmit.ecn,
                src_ip: transmit.src_ip,
                segment_size,
                datagrams: n,
                contents: contents.to_vec(),
            }));
            counters.delayed.fetch_add(n, Ordering::Relaxed);
        };
        if shape.loss == 0.0 && shape.jitter.is_zero() {
            // Every datagram of a GSO batch has the same fate: keep the batch whole, as the
            // kernel would send it (one queue entry, one send), instead of one per datagram.
            push(
                &mut queue,
                now + shape.delay,
                transmit.contents,
                transmit.segment_size,
            );
        } else {
            let mut rng = rand::rng();
            for datagram in transmit.contents.chunks(segment) {
                if shape.loss > 0.0 && rng.random::<f64>() < shape.loss {
                    counters.lost.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let mut delay = shape.delay;
                if !shape.jitter.is_zero() {
                    let j = shape.jitter.as_secs_f64();
                    let offset = rng.random_range(-j..=j);
                    delay = Duration::from_secs_f64((delay.as_secs_f64() + offset).max(0.0));
                }
                push(&mut queue, now + delay, datagram, None);
            }
        }
        drop(queue);
        if earliest_changed {
            self.queue.wake.notify_one();
        }
    }
}

impl AsyncUdpSocket for WanSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        match self.emulator.shape_of(transmit.destination) {
            None => self.inner.try_send(transmit),
            Some(shape) => {
                // Shaped datagrams always succeed from quinn's point of view, like a router
                // that accepted them; the queue decides their fate.
                self.shape_and_enqueue(transmit, shape);
                Ok(())
            }
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// Sends queued datagrams when they are due.
async fn deliver(inner: Arc<dyn AsyncUdpSocket>, queue: Arc<DelayQueue>, stop: CancellationToken) {
    let mut poller = inner.clone().create_io_poller();
    let mut due = Vec::with_capacity(SEND_BATCH);
    loop {
        let next_at = {
            let mut q = queue.lock();
            let now = Instant::now();
            while due.len() < SEND_BATCH {
                match q.heap.peek() {
                    Some(Reverse(first)) if first.at <= now => {
                        if let Some(Reverse(item)) = q.heap.pop() {
                            q.datagrams -= item.datagrams;
                            due.push(item);
                        }
                    }
                    _ => break,
                }
            }
            q.heap.peek().map(|Reverse(first)| first.at)
        };
        for item in due.drain(..) {
            let transmit = Transmit {
                destination: item.destination,
                ecn: item.ecn,
                contents: &item.contents,
                segment_size: item.segment_size,
                src_ip: item.src_ip,
            };
            loop {
                match inner.try_send(&transmit) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        let writable = std::future::poll_fn(|cx| poller.as_mut().poll_writable(cx));
                        tokio::select! {
                            r = writable => if let Err(e) = r {
                                debug!(error = %e, "wan socket not writable; datagram dropped");
                                break;
                            },
                            _ = stop.cancelled() => return,
                        }
                    }
                    Err(e) => {
                        debug!(error = %e, dest = %item.destination, "wan send failed; datagram dropped");
                        break;
                    }
                }
            }
        }
        match next_at {
            Some(at) if at <= Instant::now() => continue,
            Some(at) => tokio::select! {
                _ = tokio::time::sleep_until(at) => {}
                _ = queue.wake.notified() => {}
                _ = stop.cancelled() => return,
            },
            None => tokio::select! {
                _ = queue.wake.notified() => {}
                _ = stop.cancelled() => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn disabled_refuses_control() {
        let w = WanEmulator::disabled();
        assert!(!w.is_enabled());
        assert_eq!(
            w.set_link(addr(1), LinkShape::partitioned()),
            Err(WanError::Disabled)
        );
        assert_eq!(w.clear(addr(1)), Err(WanError::Disabled));
        assert!(w.shapes().is_empty());
        assert!(w.shape_of(addr(1)).is_none());
    }

    #[test]
    fn table_set_clear_and_canonical_addresses() {
        let w = WanEmulator::new(true);
        w.set_link(addr(1), LinkShape::delay(Duration::from_millis(40)))
            .unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:1".parse().unwrap();
        assert_eq!(w.shape_of(mapped).unwrap().delay, Duration::from_millis(40));
        w.set_link(addr(2), LinkShape::partitioned()).unwrap();
        assert_eq!(w.shapes().len(), 2);
        w.clear(addr(1)).unwrap();
        assert!(w.shape_of(addr(1)).is_none());
        assert!(w.shape_of(addr(2)).unwrap().partitioned);
        w.clear_all().unwrap();
        assert!(w.shapes().is_empty());
        let bad = LinkShape {
            loss: 2.0,
            ..LinkShape::default()
        };
        assert!(matches!(
            w.set_link(addr(1), bad),
            Err(WanError::BadShape { .. })
        ));
        let clone = w.clone();
        clone.set_link(addr(3), LinkShape::partitioned()).unwrap();
        assert!(w.shape_of(addr(3)).is_some());
    }

    async fn pair(emu: &WanEmulator) -> (Arc<WanSocket>, tokio::net::UdpSocket) {
        let std_sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let runtime = quinn::TokioRuntime;
        let inner = quinn::Runtime::wrap_udp_socket(&runtime, std_sock).unwrap();
        let sock = Arc::new(WanSocket::new(inner, emu.clone()));
        let rx = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        (sock, rx)
    }

    async fn send_transmit(sock: &Arc<WanSocket>, t: &Transmit<'_>) {
        let mut poller = sock.clone().create_io_poller();
        loop {
            match sock.try_send(t) {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::future::poll_fn(|cx| poller.as_mut().poll_writable(cx))
                        .await
                        .unwrap();
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    async fn send(sock: &Arc<WanSocket>, to: SocketAddr, payload: &[u8]) {
        let t = Transmit {
            destination: to,
            ecn: None,
            contents: payload,
            segment_size: None,
            src_ip: None,
        };
        send_transmit(sock, &t).await;
    }

    #[tokio::test]
    async fn delays_drops_and_passes_datagrams() {
        let emu = WanEmulator::new(true);
        let (sock, rx) = pair(&emu).await;
        let to = rx.local_addr().unwrap();
        let mut buf = [0u8; 64];

        // unshaped: immediate
        send(&sock, to, b"plain").await;
        let n = tokio::time::timeout(Duration::from_secs(2), rx.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"plain");

        // delayed
        emu.set_link(to, LinkShape::delay(Duration::from_millis(60)))
            .unwrap();
        let start = std::time::Instant::now();
        send(&sock, to, b"late").await;
        let n = tokio::time::timeout(Duration::from_secs(2), rx.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"late");
        assert!(
            start.elapsed() >= Duration::from_millis(55),
            "{:?}",
            start.elapsed()
        );

        // partitioned
        emu.set_link(to, LinkShape::partitioned()).unwrap();
        send(&sock, to, b"gone").await;
        assert!(
            tokio::time::timeout(Duration::from_millis(150), rx.recv(&mut buf))
                .await
                .is_err()
        );
        assert_eq!(emu.stats().partitioned, 1);

        // total loss
        emu.set_link(
            to,
            LinkShape {
                loss: 1.0,
                ..LinkShape::default()
            },
        )
        .unwrap();
        send(&sock, to, b"lost").await;
        assert_eq!(emu.stats().lost, 1);

        // A GSO batch is held whole (same delay for all) and arrives as its datagrams, in order.
        emu.set_link(to, LinkShape::delay(Duration::from_millis(5)))
            .unwrap();
        let delayed_before = emu.stats().delayed;
        let t = Transmit {
            destination: to,
            ecn: None,
            contents: b"aaabbbcc",
            segment_size: Some(3),
            src_ip: None,
        };
        send_transmit(&sock, &t).await;
        for want in [&b"aaa"[..], b"bbb", b"cc"] {
            let n = tokio::time::timeout(Duration::from_secs(2), rx.recv(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&buf[..n], want);
        }
        assert_eq!(emu.stats().delayed, delayed_before + 3);

        // With jitter each datagram of a batch gets its own delay (any order).
        emu.set_link(
            to,
            LinkShape {
                delay: Duration::from_millis(5),
                jitter: Duration::from_millis(3),
                ..LinkShape::default()
            },
        )
        .unwrap();
        send_transmit(&sock, &t).await;
        let mut got = Vec::new();
        for _ in 0..3 {
            let n = tokio::time::timeout(Duration::from_secs(2), rx.recv(&mut buf))
                .await
                .unwrap()
                .unwrap();
            got.push(buf[..n].to_vec());
        }
        got.sort();
        assert_eq!(got, vec![b"aaa".to_vec(), b"bbb".to_vec(), b"cc".to_vec()]);

        // healed
        emu.clear(to).unwrap();
        send(&sock, to, b"back").await;
        let n = tokio::time::timeout(Duration::from_secs(2), rx.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"back");
    }
}

//! Pub/Sub: the channel and pattern subscriptions of this node's connections, and the delivery
//! of published messages to them.
//!
//! Delivery is at most once, as in Redis: each subscriber has a bounded queue
//! ([`SUBSCRIBER_QUEUE`] messages, [`SUBSCRIBER_BYTES`] bytes), and one that lets it fill is
//! disconnected (Redis's `client-output-buffer-limit pubsub`) rather than buffered without
//! bound. Names and payloads are copied out of the clients' read buffers, so a queued message
//! holds only its own bytes. A message published on one node reaches the subscribers of every
//! node of the cluster: the node that takes the PUBLISH delivers it here and sends it to each
//! other node over the links ([`Fanout`]); PUBLISH answers how many subscribers of the
//! receiving node got it, as Redis Cluster does. MONITOR connections get their lines through
//! the same bounded queues.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::keyspace::glob_match;

/// Messages queued for one subscriber at most; a subscriber whose queue is full when a message
/// arrives is disconnected.
pub const SUBSCRIBER_QUEUE: usize = 16_384;
/// Bytes of messages queued for one subscriber at most (Redis's pubsub hard limit, 32 MB).
pub const SUBSCRIBER_BYTES: usize = 32 * 1024 * 1024;

/// One delivered message.
#[derive(Clone, Debug)]
pub struct Message {
    /// The pattern it matched (`pmessage`), or `None` for a channel subscription (`message`).
    pub pattern: Option<Bytes>,
    /// The channel it was published to.
    pub channel: Bytes,
    /// The payload (for MONITOR, the line describing a command).
    pub payload: Bytes,
    /// A Pub/Sub message, a MONITOR line or a tracking invalidation.
    pub kind: MessageKind,
}

/// What a queued [`Message`] is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageKind {
    /// A published message (`message` / `pmessage`).
    Published,
    /// A MONITOR line (in `payload`).
    Monitor,
    /// Client-side caching: these keys changed (`None`: every key, after a flush).
    Invalidate {
        /// The keys.
        keys: Option<Vec<Bytes>>,
        /// Sent to a REDIRECT client (a RESP2 one gets it as a message on
        /// `__redis__:invalidate`); otherwise to the tracking client itself, which gets it only
        /// as a RESP3 push.
        redirected: bool,
    },
    /// Client-side caching: the REDIRECT target `to` has closed (a RESP3 push only).
    RedirectBroken {
        /// The target's id.
        to: u64,
    },
}

/// Where a subscriber's messages go, and how to disconnect it when it falls behind.
#[derive(Clone)]
pub struct Subscriber {
    tx: mpsc::Sender<Message>,
    kill: CancellationToken,
    /// Bytes of the messages in the queue.
    queued: Arc<AtomicUsize>,
}

/// One connection's subscriptions and the receiving end of its queue.
pub struct Subscription {
    /// The connection's id (CLIENT ID).
    pub client: u64,
    /// Subscribed channels.
    pub channels: HashSet<Bytes>,
    /// Subscribed patterns.
    pub patterns: HashSet<Bytes>,
    /// MONITOR: receives a line for every command this node runs.
    pub monitoring: bool,
    /// The sending end, registered with each channel and pattern.
    pub subscriber: Subscriber,
    /// Messages for this connection.
    rx: mpsc::Receiver<Message>,
}

impl Message {
    /// The bytes a queued message counts for.
    fn size(&self) -> usize {
        let keys = match &self.kind {
            MessageKind::Invalidate {
                keys: Some(keys), ..
            } => keys.iter().map(Bytes::len).sum(),
            _ => 0,
        };
        keys + self.channel.len() + self.payload.len() + self.pattern.as_ref().map_or(0, Bytes::len)
    }
}

impl Subscription {
    /// A connection's empty subscription state; `kill` closes the connection.
    pub fn new(client: u64, kill: CancellationToken) -> Subscription {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
        Subscription {
            client,
            channels: HashSet::new(),
            patterns: HashSet::new(),
            monitoring: false,
            subscriber: Subscriber {
                tx,
                kill,
                queued: Arc::new(AtomicUsize::new(0)),
            },
            rx,
        }
    }

    /// The next queued message, if one is waiting.
    pub fn try_next(&mut self) -> Option<Message> {
        let message = self.rx.try_recv().ok()?;
        self.taken(&message);
        Some(message)
    }

    /// Waits for the next message.
    pub async fn next(&mut self) -> Option<Message> {
        let message = self.rx.recv().await?;
        self.taken(&message);
        Some(message)
    }

    fn taken(&self, message: &Message) {
        self.subscriber
            .queued
            .fetch_sub(message.size(), Ordering::Relaxed);
    }

    /// Channels plus patterns: the count Redis reports in (un)subscribe confirmations.
    pub fn count(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }
}

/// The node's subscriptions.
#[derive(Default)]
pub struct PubSub {
    subs: RwLock<Subs>,
    /// Subscribers disconnected because their queue was full.
    overflowed: AtomicU64,
    /// MONITOR connections, by client id.
    monitors: RwLock<HashMap<u64, Subscriber>>,
    /// How many there are (read on every command: 0 costs one load).
    monitor_count: AtomicUsize,
}

#[derive(Default)]
struct Subs {
    channels: HashMap<Bytes, HashMap<u64, Subscriber>>,
    patterns: HashMap<Bytes, HashMap<u64, Subscriber>>,
}

impl Subs {
    fn table(&mut self, pattern: bool) -> &mut HashMap<Bytes, HashMap<u64, Subscriber>> {
        if pattern {
            &mut self.patterns
        } else {
            &mut self.channels
        }
    }

    /// Takes `client` off a channel's (or pattern's) members; the name goes once none is left.
    fn remove(&mut self, pattern: bool, name: &[u8], client: u64) {
        let table = self.table(pattern);
        if let Some(members) = table.get_mut(name) {
            members.remove(&client);
            if members.is_empty() {
                table.remove(name);
            }
        }
    }
}

impl PubSub {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Subs> {
        self.subs.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Subs> {
        self.subs.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Subscribes `sub` to a channel (or a pattern); false when it already was.
    pub fn subscribe(&self, sub: &mut Subscription, name: Bytes, pattern: bool) -> bool {
        let mine = if pattern {
            &mut sub.patterns
        } else {
            &mut sub.channels
        };
        if !mine.insert(name.clone()) {
            return false;
        }
        self.write()
            .table(pattern)
            .entry(name)
            .or_default()
            .insert(sub.client, sub.subscriber.clone());
        true
    }

    /// Unsubscribes `sub` from a channel (or a pattern); false when it was not subscribed.
    pub fn unsubscribe(&self, sub: &mut Subscription, name: &[u8], pattern: bool) -> bool {
        let mine = if pattern {
            &mut sub.patterns
        } else {
            &mut sub.channels
        };
        if !mine.remove(name) {
            return false;
        }
        self.write().remove(pattern, name, sub.client);
        true
    }

    /// Drops every subscription of a connection (RESET, or it closes).
    pub fn forget(&self, sub: &mut Subscription) {
        {
            let mut subs = self.write();
            for channel in std::mem::take(&mut sub.channels) {
                subs.remove(false, &channel, sub.client);
            }
            for pattern in std::mem::take(&mut sub.patterns) {
                subs.remove(true, &pattern, sub.client);
            }
        }
        if std::mem::take(&mut sub.monitoring) {
            let mut monitors = self.monitors.write().unwrap_or_else(|p| p.into_inner());
            monitors.remove(&sub.client);
            self.monitor_count.store(monitors.len(), Ordering::Relaxed);
        }
    }

    /// Makes `sub` a MONITOR connection.
    pub fn monitor(&self, sub: &mut Subscription) {
        sub.monitoring = true;
        let mut monitors = self.monitors.write().unwrap_or_else(|p| p.into_inner());
        monitors.insert(sub.client, sub.subscriber.clone());
        self.monitor_count.store(monitors.len(), Ordering::Relaxed);
    }

    /// Whether any connection runs MONITOR.
    pub fn monitoring(&self) -> bool {
        self.monitor_count.load(Ordering::Relaxed) > 0
    }

    /// Sends a MONITOR line to every monitor but `from` (a monitor does not see itself).
    pub fn feed_monitors(&self, from: u64, line: Bytes) {
        let monitors = self.monitors.read().unwrap_or_else(|p| p.into_inner());
        for (id, monitor) in monitors.iter() {
            if *id != from {
                self.deliver(
                    monitor,
                    Message {
                        pattern: None,
                        channel: Bytes::new(),
                        payload: line.clone(),
                        kind: MessageKind::Monitor,
                    },
                );
            }
        }
    }

    /// Delivers a message to this node's subscribers of `channel` and of the patterns it
    /// matches; returns how many got it.
    pub fn publish(&self, channel: &Bytes, payload: &Bytes) -> usize {
        let subs = self.read();
        let mut delivered = 0;
        if let Some(members) = subs.channels.get(channel) {
            for member in members.values() {
                delivered += self.send(member, None, channel, payload);
            }
        }
        for (pattern, members) in &subs.patterns {
            if glob_match(pattern, channel) {
                for member in members.values() {
                    delivered += self.send(member, Some(pattern), channel, payload);
                }
            }
        }
        delivered
    }

    fn send(
        &self,
        to: &Subscriber,
        pattern: Option<&Bytes>,
        channel: &Bytes,
        payload: &Bytes,
    ) -> usize {
        let message = Message {
            pattern: pattern.cloned(),
            channel: channel.clone(),
            payload: payload.clone(),
            kind: MessageKind::Published,
        };
        self.deliver(to, message)
    }

    /// Queues `message` for `to` (1), or disconnects `to` when its queue is full (0).
    pub fn deliver(&self, to: &Subscriber, message: Message) -> usize {
        let size = message.size();
        let over_bytes = to.queued.fetch_add(size, Ordering::Relaxed) + size > SUBSCRIBER_BYTES;
        let sent = if over_bytes {
            Err(mpsc::error::TrySendError::Full(message))
        } else {
            to.tx.try_send(message)
        };
        if sent.is_err() {
            to.queued.fetch_sub(size, Ordering::Relaxed);
        }
        match sent {
            Ok(()) => 1,
            Err(mpsc::error::TrySendError::Full(_)) => {
                // Too far behind: disconnected, as Redis does past its pubsub output limit.
                if !to.kill.is_cancelled() {
                    self.overflowed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        "a subscriber fell {SUBSCRIBER_QUEUE} messages or {SUBSCRIBER_BYTES} bytes \
                         behind; disconnecting it"
                    );
                    to.kill.cancel();
                }
                0
            }
            // The connection is closing.
            Err(mpsc::error::TrySendError::Closed(_)) => 0,
        }
    }

    /// Channels with at least one subscriber, those matching `pattern` if given (PUBSUB
    /// CHANNELS).
    pub fn channels(&self, pattern: Option<&[u8]>) -> Vec<Bytes> {
        self.read()
            .channels
            .keys()
            .filter(|c| pattern.is_none_or(|p| glob_match(p, c)))
            .cloned()
            .collect()
    }

    /// Subscribers of a channel (PUBSUB NUMSUB; patterns not counted, as in Redis).
    pub fn numsub(&self, channel: &[u8]) -> usize {
        self.read().channels.get(channel).map_or(0, HashMap::len)
    }

    /// Channels with at least one subscriber (INFO).
    pub fn channel_count(&self) -> usize {
        self.read().channels.len()
    }

    /// Distinct subscribed patterns (PUBSUB NUMPAT).
    pub fn numpat(&self) -> usize {
        self.read().patterns.len()
    }

    /// Subscribers disconnected because they fell behind (INFO).
    pub fn overflowed(&self) -> u64 {
        self.overflowed.load(Ordering::Relaxed)
    }
}

/// Messages waiting to go to one other node at most; beyond, a PUBLISH is not sent there.
pub const PEER_QUEUE: usize = 16_384;
/// Bytes of messages waiting to go to one other node at most.
pub const PEER_BYTES: usize = 64 * 1024 * 1024;
/// The largest message sent to the other nodes; a larger one reaches only the subscribers of
/// the node that took the PUBLISH.
pub const PEER_MAX_MESSAGE: usize = 8 * 1024 * 1024;
/// Bytes sent to another node in one call at most (a larger message goes alone).
const PEER_BATCH_BYTES: usize = 1024 * 1024;
/// How long one call to another node may take (plus [`PEER_TIMEOUT_PER_MIB`] per MiB it
/// carries); its messages are dropped after that.
const PEER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// More time for a call per MiB of messages (about 8 Mbit/s at least).
const PEER_TIMEOUT_PER_MIB: std::time::Duration = std::time::Duration::from_secs(1);

/// One published message on its way to another node: (channel, payload).
pub type Published = (Bytes, Bytes);

fn published_size(m: &Published) -> usize {
    m.0.len() + m.1.len()
}

/// Sends this node's published messages to every other node of the cluster, in publish order
/// per node, in batches: one queue and one sending task per other node. At most once: a batch
/// a node cannot take in time, or a message its full queue cannot hold, is dropped and counted.
///
/// The nodes are those of the topology file, and the members of this node's region as Raft
/// knows them ([`Fanout::sync_members`]): a node added with `MERIDIAN NODE ADD` gets messages
/// once the membership names it, and stops getting them once it leaves.
#[derive(Default)]
pub struct Fanout {
    /// The queue to each other node, by node name.
    peers: RwLock<Vec<PeerQueue>>,
    /// How to start a sender for a node that joins (none on a node without links).
    starter: Option<(geo::Endpoint, CancellationToken)>,
    /// Messages not delivered to another node (queue full, too large, or the call failed).
    dropped: Arc<AtomicU64>,
}

/// The queue to one other node.
struct PeerQueue {
    /// The node's name.
    name: String,
    /// Named in the topology file (kept whatever the membership says).
    from_topology: bool,
    tx: mpsc::Sender<Published>,
    /// Bytes of the messages in it.
    queued: Arc<AtomicUsize>,
}

impl Fanout {
    /// Starts one sender per peer over `endpoint`; they stop with `stop`.
    pub fn start(
        endpoint: geo::Endpoint,
        peers: Vec<geo::PeerAddr>,
        stop: CancellationToken,
    ) -> Fanout {
        let fanout = Fanout {
            peers: RwLock::new(Vec::new()),
            starter: Some((endpoint, stop)),
            dropped: Arc::new(AtomicU64::new(0)),
        };
        for peer in peers {
            fanout.add_peer(peer, true);
        }
        fanout
    }

    /// Starts the queue and sender to `peer`, unless there is one.
    fn add_peer(&self, peer: geo::PeerAddr, from_topology: bool) {
        let Some((endpoint, stop)) = &self.starter else {
            return;
        };
        let mut peers = self.peers.write().unwrap_or_else(|p| p.into_inner());
        if peers.iter().any(|q| q.name == peer.name) {
            return;
        }
        let (tx, rx) = mpsc::channel(PEER_QUEUE);
        let queued = Arc::new(AtomicUsize::new(0));
        peers.push(PeerQueue {
            name: peer.name.clone(),
            from_topology,
            tx,
            queued: queued.clone(),
        });
        tokio::spawn(send_to_peer(
            endpoint.clone(),
            peer,
            (rx, queued),
            stop.clone(),
            self.dropped.clone(),
        ));
    }

    /// Follows the region's membership (`members`: every other member's link address): starts
    /// sending to members the topology file does not name, and stops sending to such nodes once
    /// they left (their sender ends with its queue).
    pub fn sync_members(&self, members: Vec<geo::PeerAddr>) {
        let joined: Vec<_> = {
            let peers = self.peers.read().unwrap_or_else(|p| p.into_inner());
            members
                .iter()
                .filter(|m| !peers.iter().any(|q| q.name == m.name))
                .cloned()
                .collect()
        };
        for peer in joined {
            tracing::info!(peer = %peer.name, "publishing to a node that joined the region");
            self.add_peer(peer, false);
        }
        let mut peers = self.peers.write().unwrap_or_else(|p| p.into_inner());
        peers.retain(|q| q.from_topology || members.iter().any(|m| m.name == q.name));
    }

    /// The nodes messages go to (names), for tests and logs.
    pub fn peer_names(&self) -> Vec<String> {
        let peers = self.peers.read().unwrap_or_else(|p| p.into_inner());
        peers.iter().map(|q| q.name.clone()).collect()
    }

    /// Queues a published message for every other node.
    pub fn send(&self, channel: &Bytes, payload: &Bytes) {
        let message = (channel.clone(), payload.clone());
        let size = published_size(&message);
        let peers = self.peers.read().unwrap_or_else(|p| p.into_inner());
        for peer in peers.iter() {
            let fits = size <= PEER_MAX_MESSAGE
                && peer.queued.fetch_add(size, Ordering::Relaxed) + size <= PEER_BYTES;
            let sent = fits && peer.tx.try_send(message.clone()).is_ok();
            if !sent {
                if size <= PEER_MAX_MESSAGE {
                    peer.queued.fetch_sub(size, Ordering::Relaxed);
                }
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Messages that did not reach another node (INFO).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

async fn send_to_peer(
    endpoint: geo::Endpoint,
    peer: geo::PeerAddr,
    (mut rx, queued): (mpsc::Receiver<Published>, Arc<AtomicUsize>),
    stop: CancellationToken,
    dropped: Arc<AtomicU64>,
) {
    // A message taken from the queue that did not fit the previous batch.
    let mut carried: Option<Published> = None;
    loop {
        // (Each message leaves `queued` as it is taken from the queue.)
        let first = match carried.take() {
            Some(m) => m,
            None => {
                let next = tokio::select! {
                    m = rx.recv() => m,
                    _ = stop.cancelled() => None,
                };
                let Some(m) = next else { return };
                queued.fetch_sub(published_size(&m), Ordering::Relaxed);
                m
            }
        };
        let mut bytes = published_size(&first);
        let mut batch = vec![first];
        while bytes < PEER_BATCH_BYTES {
            let Ok(m) = rx.try_recv() else { break };
            let size = published_size(&m);
            queued.fetch_sub(size, Ordering::Relaxed);
            if bytes + size > PEER_BATCH_BYTES {
                carried = Some(m);
                break;
            }
            bytes += size;
            batch.push(m);
        }
        let n = batch.len() as u64;
        let body = match crate::raft::network::encode(&batch) {
            Ok(body) => body,
            Err(_) => {
                dropped.fetch_add(n, Ordering::Relaxed);
                continue;
            }
        };
        let timeout = PEER_TIMEOUT + PEER_TIMEOUT_PER_MIB * (bytes >> 20) as u32;
        if let Err(e) = endpoint
            .call(&peer, crate::raft::network::RPC_PUBLISH, body, timeout)
            .await
        {
            dropped.fetch_add(n, Ordering::Relaxed);
            tracing::debug!(peer = %peer.name, error = %e, messages = n, "published messages not delivered");
        }
    }
}

/// Delivers messages another node published (the RPC handler's side); returns the count of
/// local deliveries.
pub fn receive(pubsub: &PubSub, body: &[u8]) -> Result<usize, String> {
    let batch: Vec<Published> = crate::raft::network::decode(body)?;
    Ok(batch
        .iter()
        .map(|(channel, payload)| pubsub.publish(channel, payload))
        .sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(id: u64) -> Subscription {
        Subscription::new(id, CancellationToken::new())
    }

    #[test]
    fn channels_and_patterns_deliver_once_each() {
        let ps = PubSub::default();
        let (mut a, mut b) = (sub(1), sub(2));
        assert!(ps.subscribe(&mut a, Bytes::from("news"), false));
        assert!(!ps.subscribe(&mut a, Bytes::from("news"), false));
        assert!(ps.subscribe(&mut b, Bytes::from("n*"), true));
        assert_eq!(ps.publish(&Bytes::from("news"), &Bytes::from("hi")), 2);
        assert_eq!(ps.publish(&Bytes::from("other"), &Bytes::from("x")), 0);
        let m = a.try_next().unwrap();
        assert_eq!((m.pattern, &m.channel[..]), (None, &b"news"[..]));
        let m = b.try_next().unwrap();
        assert_eq!(m.pattern.as_deref(), Some(&b"n*"[..]));
        assert_eq!(ps.numsub(b"news"), 1);
        assert_eq!(ps.numpat(), 1);
        assert_eq!(ps.channels(Some(b"ne*")), vec![Bytes::from("news")]);
        ps.forget(&mut a);
        ps.forget(&mut b);
        assert_eq!((ps.channels(None).len(), ps.numpat()), (0, 0));
    }

    #[test]
    fn a_subscriber_that_falls_behind_is_disconnected() {
        let ps = PubSub::default();
        let mut a = sub(1);
        let kill = a.subscriber.kill.clone();
        ps.subscribe(&mut a, Bytes::from("c"), false);
        for _ in 0..SUBSCRIBER_QUEUE {
            assert_eq!(ps.publish(&Bytes::from("c"), &Bytes::from("m")), 1);
        }
        assert!(!kill.is_cancelled());
        assert_eq!(ps.publish(&Bytes::from("c"), &Bytes::from("m")), 0);
        assert!(kill.is_cancelled());
        assert_eq!(ps.overflowed(), 1);
    }
}

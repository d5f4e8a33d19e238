//! Client-side caching: CLIENT TRACKING, as in Redis 7.0. A tracking client is told when a
//! key it may have cached changes, so it can drop its copy.
//!
//! - Default mode: the keys a tracking client reads (OPTIN: only after CLIENT CACHING YES;
//!   OPTOUT: unless CLIENT CACHING NO) are remembered in the node's table, key name → client
//!   ids. When one changes, each of those clients gets one invalidation for it and the key
//!   leaves the table (it is remembered again when read again).
//! - BCAST: the client gets an invalidation for every changed key that starts with one of its
//!   prefixes (every key, with none), whether it read it or not: one message per prefix and
//!   applied batch, each key once.
//! - A flush (FLUSHDB, FLUSHALL) invalidates everything: a nil invalidation to every tracking
//!   client, and the table empties. As in Redis the table holds key names, not databases.
//!
//! Each node keeps the table of its own clients and sends the invalidations when it applies a
//! batch, so a change made through any node of the region, or merged from another region,
//! reaches the clients of every node. Invalidations go through the client's bounded Pub/Sub
//! queue (RESP3 pushes), or with REDIRECT to another client's queue (see below). The table holds
//! at most `tracking-table-max-keys` keys: past that, keys are invalidated (and dropped) to
//! make room, as in Redis. NOLOOP is accepted but not honoured: a client is also told of its
//! own writes (one extra invalidation, never a stale read).
//!
//! REDIRECT, as in Redis: a RESP3 target gets `invalidate` pushes whether it subscribed or not; a
//! RESP2 target gets them as `message`s on `__redis__:invalidate` while it is in the subscribed
//! mode (subscribed to anything), and nothing otherwise. When the target has closed, the tracking
//! client (RESP3) gets a `tracking-redir-broken` push instead, each time, and CLIENT
//! TRACKINGINFO shows `broken_redirect`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::Bytes;

use crate::client::{ClientInfo, ClientRegistry};
use crate::pubsub::{Message, MessageKind, PubSub, Subscriber};

/// The channel a RESP2 REDIRECT target gets invalidations on (while in the subscribed mode).
pub const CHANNEL: &[u8] = b"__redis__:invalidate";

/// Keys the table remembers by default (Redis's `tracking-table-max-keys`).
pub const DEFAULT_MAX_KEYS: usize = 1_000_000;

/// A connection's CLIENT TRACKING settings (kept on the connection; the node's table holds
/// what delivery needs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrackingOptions {
    /// BCAST: told of every key under its prefixes.
    pub bcast: bool,
    /// OPTIN: reads are remembered only after CLIENT CACHING YES.
    pub optin: bool,
    /// OPTOUT: reads are remembered unless after CLIENT CACHING NO.
    pub optout: bool,
    /// NOLOOP (accepted, not honoured: see the module doc).
    pub noloop: bool,
    /// REDIRECT client id (0: none).
    pub redirect: u64,
    /// BCAST prefixes, sorted (with BCAST and no PREFIX, the empty prefix: every key).
    pub prefixes: std::collections::BTreeSet<Bytes>,
}

/// Where a tracking client's invalidations go.
#[derive(Clone)]
pub enum Target {
    /// Its own queue.
    Own(Subscriber),
    /// Another client (REDIRECT).
    Redirect {
        /// The target's id.
        to: u64,
        /// The tracking client itself: told when the target is gone.
        from: Arc<ClientInfo>,
    },
}

/// One tracking client.
struct Tracker {
    to: Target,
    /// BCAST with these prefixes, sorted (the empty prefix: every key); `None` in the
    /// default mode.
    bcast: Option<Vec<Bytes>>,
}

#[derive(Default)]
struct Table {
    /// Default mode: key name → the clients that read it since its last invalidation.
    keys: HashMap<Bytes, HashSet<u64>>,
    /// Clients with tracking on.
    clients: HashMap<u64, Tracker>,
}

/// The node's tracking table and its clients.
pub struct Tracking {
    table: Mutex<Table>,
    /// Clients with tracking on: while 0, applying a batch collects no keys.
    active: AtomicUsize,
    /// Keys remembered at most.
    max_keys: AtomicUsize,
    /// Delivery (set once at start).
    pubsub: OnceLock<Arc<PubSub>>,
    /// The node's clients, to find REDIRECT targets (set once at start).
    clients: OnceLock<Arc<ClientRegistry>>,
}

impl Default for Tracking {
    fn default() -> Self {
        Tracking {
            table: Mutex::new(Table::default()),
            active: AtomicUsize::new(0),
            max_keys: AtomicUsize::new(DEFAULT_MAX_KEYS),
            pubsub: OnceLock::new(),
            clients: OnceLock::new(),
        }
    }
}

impl Tracking {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Delivers through `pubsub` to `clients` from now on (set once at start).
    pub fn attach(&self, pubsub: Arc<PubSub>, clients: Arc<ClientRegistry>) {
        let _ = self.pubsub.set(pubsub);
        let _ = self.clients.set(clients);
    }

    /// Whether any client tracks (checked once per applied batch).
    pub fn active(&self) -> bool {
        self.active.load(Ordering::Relaxed) > 0
    }

    /// `tracking-table-max-keys`.
    pub fn max_keys(&self) -> usize {
        self.max_keys.load(Ordering::Relaxed)
    }

    /// Sets `tracking-table-max-keys`.
    pub fn set_max_keys(&self, n: usize) {
        self.max_keys.store(n, Ordering::Relaxed);
    }

    /// Turns tracking on for `client` (replacing its previous settings).
    pub fn enable(&self, client: u64, to: Target, bcast: Option<Vec<Bytes>>) {
        let mut table = self.table();
        table.clients.insert(client, Tracker { to, bcast });
        self.active.store(table.clients.len(), Ordering::Relaxed);
    }

    /// Turns tracking off for `client` (CLIENT TRACKING OFF, RESET, or it closed). Keys it
    /// read stay in the table until they change, or until no client tracks any more.
    pub fn disable(&self, client: u64) {
        let mut table = self.table();
        table.clients.remove(&client);
        if table.clients.is_empty() {
            table.keys.clear();
        }
        self.active.store(table.clients.len(), Ordering::Relaxed);
    }

    /// Remembers that `client` (default mode) read `keys`.
    pub fn remember<'k>(&self, client: u64, keys: impl Iterator<Item = &'k Bytes>) {
        let max = self.max_keys.load(Ordering::Relaxed);
        let mut table = self.table();
        for key in keys {
            match table.keys.get_mut(&key[..]) {
                Some(clients) => {
                    clients.insert(client);
                }
                None => {
                    table
                        .keys
                        .insert(Bytes::copy_from_slice(key), HashSet::from([client]));
                }
            }
        }
        // Past the bound: invalidate some keys to make room (their clients drop them).
        if max > 0 && table.keys.len() > max {
            let excess = table.keys.len() - max;
            let evicted: Vec<Bytes> = table.keys.keys().take(excess).cloned().collect();
            self.invalidate_locked(&mut table, &evicted, false);
        }
    }

    /// Keys remembered now (INFO `tracking_total_keys`).
    pub fn key_count(&self) -> usize {
        self.table().keys.len()
    }

    /// Clients with tracking on (INFO `tracking_clients`).
    pub fn client_count(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Tells the tracking clients that `keys` changed (a batch applied on this node), or with
    /// `flushed` that every key may have.
    pub fn invalidate(&self, keys: &[Bytes], flushed: bool) {
        if !self.active() {
            return; // nobody to tell (the table emptied when the last client stopped)
        }
        let mut table = self.table();
        if flushed {
            table.keys.clear();
            let targets: Vec<Target> = table.clients.values().map(|t| t.to.clone()).collect();
            for to in targets {
                self.send(&to, None);
            }
        }
        self.invalidate_locked(&mut table, keys, true);
    }

    fn invalidate_locked(&self, table: &mut Table, keys: &[Bytes], bcast_too: bool) {
        for key in keys {
            let Some(clients) = table.keys.remove(key) else {
                continue;
            };
            for id in clients {
                if let Some(Tracker { to, bcast: None }) = table.clients.get(&id) {
                    self.send(to, Some(vec![key.clone()]));
                }
            }
        }
        if !bcast_too || keys.is_empty() {
            return;
        }
        // BCAST: one message per prefix, with the keys under it.
        for tracker in table.clients.values() {
            let Some(prefixes) = &tracker.bcast else {
                continue;
            };
            for prefix in prefixes {
                // Each key once, in key order (as Redis's per-prefix key set).
                let mut matched: Vec<Bytes> = keys
                    .iter()
                    .filter(|k| k.starts_with(prefix))
                    .cloned()
                    .collect();
                matched.sort_unstable();
                matched.dedup();
                if !matched.is_empty() {
                    self.send(&tracker.to, Some(matched));
                }
            }
        }
    }

    fn send(&self, to: &Target, keys: Option<Vec<Bytes>>) {
        let Some(pubsub) = self.pubsub.get() else {
            return;
        };
        let message = |kind| Message {
            pattern: None,
            channel: Bytes::new(),
            payload: Bytes::new(),
            kind,
        };
        let (subscriber, redirected) = match to {
            Target::Own(s) => (s.clone(), false),
            Target::Redirect { to, from } => {
                let target = self.clients.get().and_then(|c| c.get(*to));
                let Some(target) = target else {
                    // Gone: the tracking client is told (RESP3), and the message is lost.
                    from.tracking_redirect_broken.store(true, Ordering::Relaxed);
                    if let Some(own) = from.queue.get() {
                        pubsub.deliver(own, message(MessageKind::RedirectBroken { to: *to }));
                    }
                    return;
                };
                let resp3 = target.resp.load(Ordering::Relaxed) == 3;
                let subscribed = target.sub.load(Ordering::Relaxed) > 0
                    || target.psub.load(Ordering::Relaxed) > 0;
                match target.queue.get() {
                    Some(queue) if resp3 || subscribed => (queue.clone(), true),
                    // A RESP2 client outside the subscribed mode cannot be told.
                    _ => return,
                }
            }
        };
        pubsub.deliver(
            &subscriber,
            message(MessageKind::Invalidate { keys, redirected }),
        );
    }
}

/// Whether two BCAST prefixes overlap (one starts with the other), which Redis refuses for a
/// single client.
pub fn overlapping(a: &[u8], b: &[u8]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pubsub::Subscription;
    use tokio_util::sync::CancellationToken;

    fn keys(list: &[&str]) -> Vec<Bytes> {
        list.iter()
            .map(|k| Bytes::copy_from_slice(k.as_bytes()))
            .collect()
    }

    fn invalidated(sub: &mut Subscription) -> Vec<Option<Vec<Bytes>>> {
        std::iter::from_fn(|| sub.try_next())
            .map(|m| match m.kind {
                MessageKind::Invalidate { keys, .. } => keys,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn default_mode_invalidates_read_keys_once_and_bcast_by_prefix() {
        let tracking = Tracking::default();
        tracking.attach(Arc::new(PubSub::default()), Arc::default());
        let mut a = Subscription::new(1, CancellationToken::new());
        let mut b = Subscription::new(2, CancellationToken::new());
        tracking.enable(1, Target::Own(a.subscriber.clone()), None);
        tracking.enable(2, Target::Own(b.subscriber.clone()), Some(keys(&["user:"])));
        tracking.remember(1, keys(&["x", "user:1"]).iter());
        tracking.invalidate(&keys(&["x", "y", "user:1"]), false);
        assert_eq!(
            invalidated(&mut a),
            vec![Some(keys(&["x"])), Some(keys(&["user:1"]))]
        );
        assert_eq!(invalidated(&mut b), vec![Some(keys(&["user:1"]))]);
        // Told once: the key left the table.
        tracking.invalidate(&keys(&["x"]), false);
        assert!(invalidated(&mut a).is_empty());
        tracking.invalidate(&[], true);
        assert_eq!(invalidated(&mut a), vec![None]);
        assert_eq!(invalidated(&mut b), vec![None]);
        // Bounded: past the limit, remembered keys are invalidated to make room.
        tracking.set_max_keys(2);
        tracking.remember(1, keys(&["k1", "k2", "k3"]).iter());
        assert_eq!(tracking.key_count(), 2);
        assert_eq!(invalidated(&mut a).len(), 1);
        tracking.disable(1);
        tracking.disable(2);
        assert!(!tracking.active());
    }
}

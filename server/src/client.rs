//! Per-connection client state and the node-wide registry behind CLIENT LIST / INFO.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use proto_resp::ProtocolVersion;
use tokio_util::sync::CancellationToken;

use crate::cmd::COMMANDS;
use crate::pubsub::Subscription;

/// What a connection knows about itself; owned by its task.
pub struct ClientState {
    /// Selected database.
    pub db: u8,
    /// Protocol version replies are encoded with.
    pub protocol: ProtocolVersion,
    /// True once AUTH succeeded (or no password is configured).
    pub authenticated: bool,
    /// READONLY: serve reads from the local replica.
    pub readonly: bool,
    /// The shared, listable part.
    pub info: Arc<ClientInfo>,
    /// The last write's position, for WAIT (0 = none yet).
    pub last_write_index: u64,
    /// CLIENT REPLY OFF: no replies at all.
    pub reply_off: bool,
    /// CLIENT REPLY SKIP was the last command: the next one gets no reply.
    pub skip_next: bool,
    /// The command running gets no reply (it follows CLIENT REPLY SKIP).
    pub skip_current: bool,
    /// Inside MULTI: the commands queued so far.
    pub multi: Option<MultiState>,
    /// WATCHed keys and what they held then.
    pub watched: Vec<WatchedKey>,
    /// Pub/Sub channels and patterns, once the connection subscribed to one (also the queue
    /// of its tracking invalidations).
    pub pubsub: Option<Subscription>,
    /// CLIENT TRACKING settings, while it is on.
    pub tracking: Option<crate::tracking::TrackingOptions>,
    /// CLIENT CACHING YES (OPTIN) or NO (OPTOUT) was given for the next command.
    pub caching: bool,
}

/// A WATCHed key and what it held when watched.
#[derive(Clone, Debug)]
pub struct WatchedKey {
    /// Database.
    pub db: u8,
    /// Key.
    pub key: Bytes,
    /// The fingerprint of its stored encoding; `None`: it was missing (or expired).
    pub fingerprint: Option<u64>,
    /// Its churn epoch and counter, read before the key (see `Keyspace::churn`).
    pub churn: (u64, u64),
}

/// A transaction being queued (between MULTI and EXEC).
#[derive(Default)]
pub struct MultiState {
    /// Each queued command, name first.
    pub queued: Vec<Vec<Bytes>>,
    /// A command was refused while queuing: EXEC discards the transaction.
    pub failed: bool,
    /// Bytes of the queued arguments.
    pub bytes: usize,
}

impl ClientState {
    /// True while replies are switched off (CLIENT REPLY OFF, or SKIP for this command).
    pub fn silent(&self) -> bool {
        self.reply_off || self.skip_current
    }

    /// After each command: a SKIP takes effect for the next one only.
    pub fn command_done(&mut self) {
        self.skip_current = std::mem::take(&mut self.skip_next);
    }

    /// A fresh connection's state.
    pub fn new(info: Arc<ClientInfo>, authenticated: bool) -> ClientState {
        ClientState {
            db: 0,
            protocol: ProtocolVersion::Resp2,
            authenticated,
            readonly: false,
            info,
            last_write_index: 0,
            reply_off: false,
            skip_next: false,
            skip_current: false,
            multi: None,
            watched: Vec::new(),
            pubsub: None,
            tracking: None,
            caching: false,
        }
    }

    /// The connection's message queue, made on first use (and published in [`ClientInfo::queue`]).
    pub fn queue(&mut self) -> &mut Subscription {
        let info = &self.info;
        self.pubsub.get_or_insert_with(|| {
            let sub = Subscription::new(info.id, info.kill.clone());
            let _ = info.queue.set(sub.subscriber.clone());
            sub
        })
    }

    /// Channels plus patterns subscribed to (RESP2 connections with any are in the subscribed
    /// mode, where only the Pub/Sub commands, PING, QUIT and RESET run).
    pub fn subscriptions(&self) -> usize {
        self.pubsub.as_ref().map_or(0, Subscription::count)
    }

    /// Publishes the subscription counts to CLIENT LIST.
    pub fn subscriptions_changed(&self) {
        let (sub, psub) = self
            .pubsub
            .as_ref()
            .map_or((0, 0), |s| (s.channels.len(), s.patterns.len()));
        self.info.sub.store(sub, Ordering::Relaxed);
        self.info.psub.store(psub, Ordering::Relaxed);
    }
}

/// Client details other connections can list.
pub struct ClientInfo {
    /// CLIENT ID.
    pub id: u64,
    /// Peer address.
    pub addr: SocketAddr,
    /// Local address.
    pub laddr: SocketAddr,
    /// Connection time.
    pub created: Instant,
    /// ms since `created` of the last command.
    pub last_active_ms: AtomicU64,
    /// Index in [`COMMANDS`] of the last command.
    pub last_cmd: AtomicUsize,
    /// Selected database (mirrors [`ClientState::db`]).
    pub db: AtomicU8,
    /// 2 or 3.
    pub resp: AtomicU8,
    /// Name and library info set by CLIENT SETNAME / SETINFO / HELLO.
    names: Mutex<ClientNames>,
    /// Cancelled to close the connection (CLIENT KILL, or the node shutting down).
    pub kill: CancellationToken,
    /// Subscribed channels (CLIENT LIST `sub=`).
    pub sub: AtomicUsize,
    /// Subscribed patterns (CLIENT LIST `psub=`).
    pub psub: AtomicUsize,
    /// CLIENT TRACKING (CLIENT LIST `redir=` and flag `t`): -1 off, 0 on, else the REDIRECT id.
    pub tracking: AtomicI64,
    /// CLIENT TRACKING in BCAST mode (CLIENT LIST flag `B`).
    pub tracking_bcast: AtomicBool,
    /// Its REDIRECT target closed (CLIENT TRACKINGINFO flag `broken_redirect`).
    pub tracking_redirect_broken: AtomicBool,
    /// The sending end of its message queue, once it has one (a RESP3 connection, or one that
    /// subscribed, monitors or tracks): where another client's REDIRECT sends invalidations.
    pub queue: std::sync::OnceLock<crate::pubsub::Subscriber>,
    /// Its task, which a stopping node aborts once the stop's grace has passed.
    pub task: std::sync::OnceLock<tokio::task::AbortHandle>,
}

/// Names a client gave itself.
#[derive(Default, Clone)]
pub struct ClientNames {
    /// CLIENT SETNAME.
    pub name: Option<Bytes>,
    /// CLIENT SETINFO LIB-NAME.
    pub lib_name: Option<Bytes>,
    /// CLIENT SETINFO LIB-VER.
    pub lib_ver: Option<Bytes>,
}

impl ClientInfo {
    /// The names the client gave itself, locked for reading or changing.
    pub fn names(&self) -> std::sync::MutexGuard<'_, ClientNames> {
        self.names.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The CLIENT LIST / CLIENT INFO line (without the trailing newline).
    pub fn describe(&self) -> String {
        let names = self.names().clone();
        let text = |b: &Option<Bytes>| {
            b.as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default()
        };
        let age = self.created.elapsed().as_secs();
        let idle = self
            .created
            .elapsed()
            .as_millis()
            .saturating_sub(u128::from(self.last_active_ms.load(Ordering::Relaxed)))
            / 1000;
        let cmd = COMMANDS
            .get(self.last_cmd.load(Ordering::Relaxed))
            .map_or("NULL", |c| c.name);
        let (sub, psub) = (
            self.sub.load(Ordering::Relaxed),
            self.psub.load(Ordering::Relaxed),
        );
        let redir = self.tracking.load(Ordering::Relaxed);
        // Redis's letters, in its order: P(ub/sub), t(racking), B(CAST); N for none.
        let mut flags = String::new();
        if sub + psub > 0 {
            flags.push('P');
        }
        if redir >= 0 {
            flags.push('t');
        }
        if self.tracking_bcast.load(Ordering::Relaxed) {
            flags.push('B');
        }
        if flags.is_empty() {
            flags.push('N');
        }
        format!(
            "id={} addr={} laddr={} fd=0 name={} age={} idle={} flags={} db={} sub={} psub={} ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={} user=default redir={} resp={} lib-name={} lib-ver={}",
            self.id,
            self.addr,
            self.laddr,
            text(&names.name),
            age,
            idle,
            flags,
            self.db.load(Ordering::Relaxed),
            sub,
            psub,
            cmd,
            redir,
            self.resp.load(Ordering::Relaxed),
            text(&names.lib_name),
            text(&names.lib_ver),
        )
    }
}

/// Every connected client, by id.
#[derive(Default)]
pub struct ClientRegistry {
    clients: Mutex<HashMap<u64, Arc<ClientInfo>>>,
    next_id: AtomicU64,
    /// CLIENT PAUSE.
    pub pause: ClientPause,
}

/// What CLIENT PAUSE holds back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PauseMode {
    /// Commands that write.
    Write,
    /// Every command.
    All,
}

/// CLIENT PAUSE / UNPAUSE: commands wait (they are not refused) until the pause ends.
#[derive(Default)]
pub struct ClientPause {
    /// The pause's end and mode, while one was set.
    state: Mutex<Option<(Instant, PauseMode)>>,
    /// True while `state` is set (commands check this before taking the lock).
    set: AtomicBool,
    /// Woken by UNPAUSE and by a new pause.
    changed: tokio::sync::Notify,
}

impl ClientPause {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Instant, PauseMode)>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Pauses until `until`. Over a pause still running, the later end and the stricter mode
    /// win, as in Redis.
    pub fn pause(&self, until: Instant, mode: PauseMode) {
        let mut state = self.lock();
        let now = Instant::now();
        *state = Some(match *state {
            Some((end, old)) if end > now => (end.max(until), old.max(mode)),
            _ => (until, mode),
        });
        self.set.store(true, Ordering::Release);
        self.changed.notify_waiters();
    }

    /// Ends the pause.
    pub fn unpause(&self) {
        let mut state = self.lock();
        *state = None;
        self.set.store(false, Ordering::Release);
        drop(state);
        self.changed.notify_waiters();
    }

    /// True while a pause holds back a command of this kind (a write, or not).
    pub fn holds(&self, write: bool) -> bool {
        self.until(write).is_some()
    }

    /// The end of the pause that holds back a command (a write, or not), if one does.
    fn until(&self, write: bool) -> Option<Instant> {
        if !self.set.load(Ordering::Acquire) {
            return None;
        }
        let mut state = self.lock();
        match *state {
            Some((end, _)) if end <= Instant::now() => {
                *state = None;
                self.set.store(false, Ordering::Release);
                None
            }
            Some((end, mode)) if mode == PauseMode::All || write => Some(end),
            _ => None,
        }
    }

    /// Waits while a pause holds back a command of this kind; false when `stop` (the
    /// connection being killed, the node shutting down) came first.
    pub async fn wait(&self, write: bool, stop: &CancellationToken) -> bool {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before looking, so an UNPAUSE in between is not missed.
            changed.as_mut().enable();
            let Some(end) = self.until(write) else {
                return true;
            };
            tokio::select! {
                _ = tokio::time::sleep_until(end.into()) => {}
                _ = changed => {}
                _ = stop.cancelled() => return false,
            }
        }
    }
}

impl ClientRegistry {
    /// Registers a new connection and returns its shared info; `kill` closes it.
    pub fn register(
        &self,
        addr: SocketAddr,
        laddr: SocketAddr,
        kill: CancellationToken,
    ) -> Arc<ClientInfo> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let info = Arc::new(ClientInfo {
            id,
            addr,
            laddr,
            created: Instant::now(),
            last_active_ms: AtomicU64::new(0),
            last_cmd: AtomicUsize::new(usize::MAX),
            db: AtomicU8::new(0),
            resp: AtomicU8::new(2),
            names: Mutex::new(ClientNames::default()),
            kill,
            sub: AtomicUsize::new(0),
            psub: AtomicUsize::new(0),
            tracking: AtomicI64::new(-1),
            tracking_bcast: AtomicBool::new(false),
            tracking_redirect_broken: AtomicBool::new(false),
            queue: std::sync::OnceLock::new(),
            task: std::sync::OnceLock::new(),
        });
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, info.clone());
        info
    }

    /// Removes a closed connection.
    pub fn unregister(&self, id: u64) {
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    /// Aborts the task of every registered connection, closed or killed ones included (a
    /// stopping node's last step for connections still running a request).
    pub fn abort_all(&self) -> usize {
        let clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        for task in clients.values().filter_map(|c| c.task.get()) {
            task.abort();
        }
        clients.len()
    }

    /// Connected clients, ordered by id. A client being closed (CLIENT KILL, shutdown) is gone
    /// already, as in Redis, which frees a killed client at once: a second CLIENT KILL of it
    /// counts 0 even while its connection task is still ending.
    pub fn list(&self) -> Vec<Arc<ClientInfo>> {
        let mut all: Vec<_> = self
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|c| !c.kill.is_cancelled())
            .cloned()
            .collect();
        all.sort_by_key(|c| c.id);
        all
    }

    /// The connected client with this id.
    pub fn get(&self, id: u64) -> Option<Arc<ClientInfo>> {
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .filter(|c| !c.kill.is_cancelled())
            .cloned()
    }

    /// Number of connected clients.
    pub fn count(&self) -> usize {
        self.clients.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_pause_keeps_the_later_end_and_the_stricter_mode() {
        let pause = ClientPause::default();
        assert!(!pause.holds(true) && !pause.holds(false));
        let now = Instant::now();
        pause.pause(now + Duration::from_secs(60), PauseMode::All);
        pause.pause(now + Duration::from_millis(1), PauseMode::Write);
        assert!(pause.holds(false), "ALL still holds reads back");
        std::thread::sleep(Duration::from_millis(5));
        assert!(pause.holds(false), "the later end is kept");
        pause.unpause();
        assert!(!pause.holds(true));
        pause.pause(Instant::now() + Duration::from_millis(1), PauseMode::Write);
        assert!(pause.holds(true) && !pause.holds(false));
        std::thread::sleep(Duration::from_millis(5));
        assert!(!pause.holds(true), "a pause ends by itself");
    }

    #[tokio::test]
    async fn waiting_ends_with_unpause_or_stop() {
        let pause = Arc::new(ClientPause::default());
        pause.pause(Instant::now() + Duration::from_secs(60), PauseMode::All);
        let stop = CancellationToken::new();
        let waiter = {
            let (pause, stop) = (pause.clone(), stop.clone());
            tokio::spawn(async move { pause.wait(false, &stop).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        pause.unpause();
        assert!(tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("unpause wakes the waiter")
            .unwrap());
        pause.pause(Instant::now() + Duration::from_secs(60), PauseMode::All);
        let waiter = {
            let (pause, stop) = (pause.clone(), stop.clone());
            tokio::spawn(async move { pause.wait(false, &stop).await })
        };
        stop.cancel();
        assert!(!tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("stop wakes the waiter")
            .unwrap());
    }
}

//! One chaos worker: a closed loop of single requests against a home node (sometimes another),
//! each reply checked against the model as it comes. Across regions (`geo`) the checks are
//! those that hold between asynchronously replicated regions: no GETSET/DEL register or
//! APPEND log (a write in another region may not have arrived yet), shared last-writer-wins
//! keys instead, and reads checked against the writes answered in the reader's own region.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::check::{Anomalies, AppendLog, LwwWrite, Model, Register, Sent, RESET_UNIT};
use super::client::Client;
use super::Tally;
use crate::resp::Reply;

/// Bound on one request: past it the outcome is unknown and the connection is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Shared counters.
pub const COUNTERS: usize = 4;
/// Keys every region SETs and DELs (with several regions).
pub const LWW_KEYS: usize = 8;
/// Counters every region INCRs and resets (with several regions).
pub const RESET_COUNTERS: usize = 4;

/// What a worker needs.
pub struct Worker {
    /// Its number (its own keys carry it).
    pub id: usize,
    /// The nodes' RESP addresses.
    pub addrs: Vec<String>,
    /// Each node's region, as an index.
    pub groups: Vec<usize>,
    /// The nodes are in several regions.
    pub geo: bool,
    /// A tag unique to this run, in every key.
    pub run: String,
    /// Its random sequence.
    pub seed: u64,
    /// Shared knowledge of acknowledged writes.
    pub model: Arc<Model>,
    /// Where violations go.
    pub anomalies: Arc<Anomalies>,
    /// Request counts.
    pub tally: Arc<Tally>,
    /// Start of the run.
    pub started: Instant,
    /// Set when the run ends.
    pub stop: Arc<AtomicBool>,
}

/// A worker's own keys, checked at the end.
pub struct Owned {
    /// Its APPEND key and tokens.
    pub append_key: String,
    /// The tokens.
    pub append: AppendLog,
    /// Its register key.
    pub register_key: String,
    /// The register.
    pub register: Register,
}

/// One reply: `Err` when the outcome is unknown (no answer, or an error reply to a write).
type Answer = Result<Reply, String>;

impl Worker {
    fn at(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Runs until `stop`; returns its own keys for the final checks.
    pub fn run(self) -> Owned {
        let mut rng = SmallRng::seed_from_u64(self.seed);
        let mut conns: HashMap<usize, Client> = HashMap::new();
        let mut home = rng.random_range(0..self.addrs.len());
        let mut owned = Owned {
            append_key: format!("chaos:{}:a:{}", self.run, self.id),
            append: AppendLog::default(),
            register_key: format!("chaos:{}:g:{}", self.run, self.id),
            register: Register::default(),
        };
        let mut seq: u64 = 0;
        while !self.stop.load(Ordering::Relaxed) {
            seq += 1;
            if rng.random_bool(0.02) {
                home = rng.random_range(0..self.addrs.len());
            }
            let any = rng.random_range(0..self.addrs.len());
            let op: f64 = rng.random();
            if self.geo {
                if op < 0.25 {
                    self.incr(&mut conns, home, rng.random_range(0..COUNTERS));
                } else if op < 0.35 {
                    self.read_counter(&mut conns, any, rng.random_range(0..COUNTERS));
                } else if op < 0.55 {
                    let readback = rng
                        .random_bool(0.5)
                        .then(|| self.same_region(home, &mut rng));
                    self.set_unique(&mut conns, home, seq, readback, rng.random());
                } else if op < 0.77 {
                    let delete = rng.random_bool(0.2);
                    self.lww(&mut conns, any, rng.random_range(0..LWW_KEYS), seq, delete);
                } else if op < 0.92 {
                    let k = rng.random_range(0..RESET_COUNTERS);
                    self.reset_counter(&mut conns, any, k, seq, rng.random());
                } else {
                    self.set_expiring(&mut conns, home, seq);
                }
                continue;
            }
            if op < 0.35 {
                self.incr(&mut conns, home, rng.random_range(0..COUNTERS));
            } else if op < 0.50 {
                self.read_counter(&mut conns, any, rng.random_range(0..COUNTERS));
            } else if op < 0.70 {
                let readback = rng
                    .random_bool(0.5)
                    .then(|| self.same_region(home, &mut rng));
                self.set_unique(&mut conns, home, seq, readback, rng.random());
            } else if op < 0.80 {
                self.append(&mut conns, home, seq, &mut owned);
            } else if op < 0.93 {
                let node = if rng.random_bool(0.7) { home } else { any };
                self.register(&mut conns, node, seq, rng.random(), &mut owned);
            } else {
                self.set_expiring(&mut conns, home, seq);
            }
        }
        owned
    }

    /// A random node of `node`'s region (itself included).
    fn same_region(&self, node: usize, rng: &mut SmallRng) -> usize {
        let peers: Vec<usize> = (0..self.addrs.len())
            .filter(|&i| self.groups[i] == self.groups[node])
            .collect();
        peers[rng.random_range(0..peers.len())]
    }

    /// Sends one request to node `node`; a transport error drops the connection and pauses
    /// briefly (the node may be down).
    fn call(&self, conns: &mut HashMap<usize, Client>, node: usize, args: &[&str]) -> Answer {
        self.tally.add("requests", 1);
        let result = match conns.entry(node) {
            std::collections::hash_map::Entry::Occupied(mut c) => c.get_mut().call(args),
            std::collections::hash_map::Entry::Vacant(slot) => {
                Client::connect(&self.addrs[node], REQUEST_TIMEOUT)
                    .and_then(|c| slot.insert(c).call(args))
            }
        };
        match result {
            Ok(Reply::Error(e)) => {
                self.tally
                    .add(&format!("error {}", e.split(' ').next().unwrap_or("")), 1);
                Err(e)
            }
            Ok(reply) => Ok(reply),
            Err(e) => {
                conns.remove(&node);
                self.tally.add("no answer", 1);
                std::thread::sleep(Duration::from_millis(50));
                Err(e.to_string())
            }
        }
    }

    fn incr(&self, conns: &mut HashMap<usize, Client>, node: usize, c: usize) {
        let key = format!("chaos:{}:ctr:{c}", self.run);
        let group = self.groups[node];
        self.model.counters.lock().unwrap()[group][c].attempted += 1;
        if let Ok(Reply::Integer(n)) = self.call(conns, node, &["INCR", &key]) {
            let mut counters = self.model.counters.lock().unwrap();
            let counter = &mut counters[group][c];
            counter.acked += 1;
            counter.max_acked = counter.max_acked.max(n);
            if !counter.seen.insert(n) {
                drop(counters);
                self.anomalies
                    .report(self.at(), "INCR_DUP", format!("{key} answered {n} twice"));
            }
        }
    }

    /// A linearizable GET of a counter never reads less than an INCR answered in its region
    /// before it was sent (counters only grow: merges add other regions' increments).
    fn read_counter(&self, conns: &mut HashMap<usize, Client>, node: usize, c: usize) {
        let key = format!("chaos:{}:ctr:{c}", self.run);
        let floor = self.model.counters.lock().unwrap()[self.groups[node]][c].max_acked;
        let value = match self.call(conns, node, &["GET", &key]) {
            Ok(Reply::Null) => 0,
            Ok(Reply::Bulk(b)) => String::from_utf8_lossy(&b).parse().unwrap_or(-1),
            _ => return,
        };
        if value < floor {
            self.anomalies.report(
                self.at(),
                "STALE_READ",
                format!("GET {key} on node {node} read {value}, {floor} was answered before"),
            );
        }
    }

    fn set_unique(
        &self,
        conns: &mut HashMap<usize, Client>,
        node: usize,
        seq: u64,
        readback: Option<usize>,
        salt: u32,
    ) {
        let key = format!("chaos:{}:w:{}:{seq}", self.run, self.id);
        let value = format!("v{}-{seq}-{salt}", self.id);
        if !matches!(
            self.call(conns, node, &["SET", &key, &value]),
            Ok(Reply::Simple(_))
        ) {
            return;
        }
        self.model
            .sets
            .lock()
            .unwrap()
            .insert(key.clone(), value.clone());
        let Some(other) = readback else { return };
        match self.call(conns, other, &["GET", &key]) {
            Ok(Reply::Bulk(b)) if b == value.as_bytes() => {}
            Ok(reply) => self.anomalies.report(
                self.at(),
                "READBACK",
                format!("GET {key} on node {other} after its SET was answered: {reply:?}"),
            ),
            Err(_) => {}
        }
    }

    fn append(&self, conns: &mut HashMap<usize, Client>, node: usize, seq: u64, owned: &mut Owned) {
        let token = format!("{seq},");
        match self.call(conns, node, &["APPEND", &owned.append_key, &token]) {
            Ok(Reply::Integer(_)) => owned.append.acked.insert(seq),
            _ => owned.append.unknown.insert(seq),
        };
    }

    fn register(
        &self,
        conns: &mut HashMap<usize, Client>,
        node: usize,
        seq: u64,
        pick: f64,
        owned: &mut Owned,
    ) {
        let key = owned.register_key.clone();
        let reg = &mut owned.register;
        let (what, verdict) = if pick < 0.6 {
            let value = format!("s{seq}");
            match self.call(conns, node, &["GETSET", &key, &value]) {
                Ok(old @ (Reply::Null | Reply::Bulk(_))) => {
                    let verdict = reg.observe(text(&old).as_deref(), true);
                    reg.written(Some(value));
                    ("GETSET", verdict)
                }
                _ => {
                    reg.unanswered_set(value);
                    return;
                }
            }
        } else if pick < 0.75 {
            match self.call(conns, node, &["DEL", &key]) {
                Ok(Reply::Integer(n)) => {
                    let verdict = if n == 0 {
                        reg.observe(None, true)
                    } else {
                        reg.observe_some()
                    };
                    reg.written(None);
                    ("DEL", verdict)
                }
                _ => {
                    reg.unanswered_del();
                    return;
                }
            }
        } else {
            match self.call(conns, node, &["GET", &key]) {
                Ok(got @ (Reply::Null | Reply::Bulk(_))) => {
                    ("GET", reg.observe(text(&got).as_deref(), false))
                }
                _ => return,
            }
        };
        if let Err(why) = verdict {
            self.anomalies.report(
                self.at(),
                "REGISTER",
                format!("{what} {key} on node {node}: {why}"),
            );
        }
    }

    /// A SET (of a value of its own) or a DEL of a key every region writes.
    fn lww(
        &self,
        conns: &mut HashMap<usize, Client>,
        node: usize,
        k: usize,
        seq: u64,
        delete: bool,
    ) {
        let key = format!("chaos:{}:l:{k}", self.run);
        let value = (!delete).then(|| format!("w{}-{seq}", self.id));
        let sent_s = self.at();
        let answer = match &value {
            Some(v) => self.call(conns, node, &["SET", &key, v]),
            None => self.call(conns, node, &["DEL", &key]),
        };
        let acked_s = match answer {
            Ok(Reply::Simple(_) | Reply::Integer(1)) => Some(self.at()),
            // Nothing to delete in its region: no tombstone, no write.
            Ok(Reply::Integer(0)) => return,
            Ok(other) => {
                let detail = format!("{key} on node {node}: unexpected reply {other:?}");
                self.anomalies.report(self.at(), "REPLY", detail);
                None
            }
            Err(_) => None,
        };
        self.model.lww.lock().unwrap()[k].record(LwwWrite {
            value,
            sent_s,
            acked_s,
        });
    }

    /// An INCR (mostly), a SET to a base of its own or a DEL of a counter every region writes.
    fn reset_counter(
        &self,
        conns: &mut HashMap<usize, Client>,
        node: usize,
        k: usize,
        seq: u64,
        pick: f64,
    ) {
        let key = format!("chaos:{}:rc:{k}", self.run);
        let sent_s = self.at();
        let base = (self.id as i64 * 1_000_000 + seq as i64) * RESET_UNIT;
        let (answer, reset) = if pick < 0.85 {
            (self.call(conns, node, &["INCR", &key]), None)
        } else if pick < 0.95 {
            let answer = self.call(conns, node, &["SET", &key, &base.to_string()]);
            (answer, Some(base))
        } else {
            (self.call(conns, node, &["DEL", &key]), Some(0))
        };
        let acked_s = match (&answer, reset) {
            (Ok(Reply::Integer(_)), None) | (Ok(Reply::Simple(_) | Reply::Integer(1)), Some(_)) => {
                Some(self.at())
            }
            // Nothing to delete in its region: no tombstone, no reset.
            (Ok(Reply::Integer(0)), Some(0)) => return,
            (Ok(other), _) => {
                let detail = format!("{key} on node {node}: unexpected reply {other:?}");
                self.anomalies.report(self.at(), "REPLY", detail);
                None
            }
            (Err(_), _) => None,
        };
        let sent = Sent {
            group: self.groups[node],
            sent_s,
            acked_s,
        };
        let mut counters = self.model.reset_counters.lock().unwrap();
        match reset {
            Some(base) => counters[k].reset(base, sent),
            None => counters[k].incr(sent),
        }
    }

    fn set_expiring(&self, conns: &mut HashMap<usize, Client>, node: usize, seq: u64) {
        let key = format!("chaos:{}:x:{}:{seq}", self.run, self.id);
        if let Ok(Reply::Simple(_)) = self.call(conns, node, &["SET", &key, "tmp", "PX", "300"]) {
            // Gone once 300 ms have passed since the answer, whatever the clocks do; a second
            // of slack for the leader's expiry deletes.
            let gone_at = self.at() + 1.5;
            self.model.expiring.lock().unwrap().push((key, gone_at));
        }
    }
}

/// The text of a bulk reply, `None` for a null.
pub fn text(reply: &Reply) -> Option<String> {
    match reply {
        Reply::Bulk(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

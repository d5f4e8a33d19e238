//! Failures inside a region (issue 3): the leader killed under load, a follower restarted
//! (catch-up from the log and from a snapshot), and minority partitions that must refuse
//! linearizable reads instead of serving stale data.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::bail;
use meridian_tests::{
    err_text, eventually, q, raft_status, report, Cluster, ClusterSpec, Node, RawConn, Reply,
};
use redis::Value;

/// Time allowed for a leader that every member names.
const LEADER_WAIT: Duration = Duration::from_secs(10);
/// Time allowed for a restarted or healed node to apply what the leader applied.
const CATCH_UP: Duration = Duration::from_secs(20);
/// The issue's bound on electing a new leader after the old one died.
const ELECTION_BOUND: Duration = Duration::from_secs(2);
/// Bound on a partitioned node's answer to a linearizable read ("within a few seconds").
const REFUSAL_BOUND: Duration = Duration::from_secs(5);

/// `READONLY` then `GET key` on a fresh connection.
fn readonly_get(port: u16, key: &str) -> Reply {
    let mut c = RawConn::connect(port).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(c.cmd(&["READONLY"]), Reply::ok(), "READONLY");
    c.cmd(&["GET", key])
}

/// `MGET` of `keys` on `con` in chunks.
fn mget(con: &mut redis::Connection, keys: &[String]) -> Vec<Option<String>> {
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(500) {
        let vals: Vec<Option<String>> = redis::cmd("MGET")
            .arg(chunk)
            .query(con)
            .unwrap_or_else(|e| panic!("MGET failed: {}", err_text(&e)));
        out.extend(vals);
    }
    out
}

/// Asserts that `keys[i]` holds `values[i]` on `con`.
fn assert_values(con: &mut redis::Connection, keys: &[String], values: &[String], what: &str) {
    let got = mget(con, keys);
    for ((k, want), got) in keys.iter().zip(values).zip(got) {
        assert_eq!(got.as_deref(), Some(want.as_str()), "{k} ({what})");
    }
}

/// A linearizable `GET` expected to be refused: returns the error text and how long it took;
/// panics with the value if the node served one.
fn refused_get(node: &Node, key: &str) -> (String, Duration) {
    let t = Instant::now();
    match redis::cmd("GET")
        .arg(key)
        .query::<Value>(&mut node.client())
    {
        Ok(v) => panic!(
            "{} served a linearizable GET {key} while cut off from the majority: {v:?}",
            node.name()
        ),
        Err(e) => (err_text(&e), t.elapsed()),
    }
}

// ---------------------------------------------------------------------------------------------
// Leader killed under load
// ---------------------------------------------------------------------------------------------

/// Shared counters of the writer threads.
#[derive(Default)]
struct Tally {
    /// INCRs answered with a number.
    acked_incr: AtomicU64,
    /// INCRs answered with an error or not answered: applied or not.
    failed_incr: AtomicU64,
    /// Every acknowledged write.
    acked: AtomicU64,
    /// The first few distinct error texts.
    errors: Mutex<Vec<String>>,
}

impl Tally {
    fn note(&self, e: &redis::RedisError) {
        let text = err_text(e);
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        if errors.len() < 5 && !errors.contains(&text) {
            errors.push(text);
        }
    }
}

/// Writer threads that stop when dropped (also when the test panics).
struct Writers {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<Vec<(String, String)>>>,
}

impl Writers {
    /// Stops the threads and returns every acknowledged SET as (key, value).
    fn finish(mut self) -> Vec<(String, String)> {
        self.stop.store(true, Ordering::SeqCst);
        self.handles
            .drain(..)
            .flat_map(|h| h.join().expect("writer thread panicked"))
            .collect()
    }
}

impl Drop for Writers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn connect(port: u16) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let con = client.get_connection_with_timeout(Duration::from_secs(2))?;
    con.set_read_timeout(Some(Duration::from_secs(15)))?;
    con.set_write_timeout(Some(Duration::from_secs(15)))?;
    Ok(con)
}

/// One writer: INCR `ctr` and SET a unique key, in turn, on one connection to `port`, until
/// stopped. Returns its acknowledged SETs.
fn writer(id: usize, port: u16, stop: Arc<AtomicBool>, tally: Arc<Tally>) -> Vec<(String, String)> {
    let mut acked = Vec::new();
    let mut con = None;
    let mut i = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let c = match con.as_mut() {
            Some(c) => c,
            None => match connect(port) {
                Ok(c) => con.insert(c),
                Err(e) => {
                    tally.note(&e);
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            },
        };
        match redis::cmd("INCR").arg("ctr").query::<i64>(c) {
            Ok(_) => {
                tally.acked_incr.fetch_add(1, Ordering::SeqCst);
                tally.acked.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => {
                tally.failed_incr.fetch_add(1, Ordering::SeqCst);
                tally.note(&e);
                if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
                    con = None;
                }
                continue;
            }
        }
        let (key, value) = (format!("w{id}:{i}"), format!("v{id}:{i}"));
        i += 1;
        match redis::cmd("SET").arg(&key).arg(&value).query::<()>(c) {
            Ok(()) => {
                acked.push((key, value));
                tally.acked.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => {
                tally.note(&e);
                if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
                    con = None;
                }
            }
        }
    }
    acked
}

#[test]
fn leader_killed_under_write_load() {
    let mut cluster = Cluster::start(ClusterSpec::region(3));
    let leader = cluster.leader(LEADER_WAIT);
    let old_term = cluster.status(leader).unwrap().term.expect("term");
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let writers = Writers {
        stop: stop.clone(),
        handles: (0..4)
            .map(|t| {
                let port = cluster.nodes()[survivors[t % 2]].port();
                let (stop, tally) = (stop.clone(), tally.clone());
                std::thread::spawn(move || writer(t, port, stop, tally))
            })
            .collect(),
    };
    eventually(
        Duration::from_secs(10),
        "the writers to get 200 acks",
        || match tally.acked.load(Ordering::SeqCst) {
            n if n >= 200 => Ok(()),
            n => bail!("{n} acks"),
        },
    );

    let killed_at = Instant::now();
    cluster
        .node_mut(leader)
        .kill()
        .expect("the leader was running");
    let acked_at_kill = tally.acked.load(Ordering::SeqCst);
    let (new_leader, elected) = eventually(
        Duration::from_secs(10),
        "a survivor to lead with a newer term",
        || {
            for &s in &survivors {
                let st = raft_status(cluster.nodes()[s].port())?;
                if st.role.as_deref() == Some("leader") && st.term.is_some_and(|t| t > old_term) {
                    return Ok((s, killed_at.elapsed()));
                }
            }
            bail!("no survivor leads with a term above {old_term}")
        },
    );
    let acked_at_election = tally.acked.load(Ordering::SeqCst);
    // A write sent now, on a fresh connection, through each survivor.
    let probes: Vec<Duration> = survivors
        .iter()
        .map(|&s| {
            let t = Instant::now();
            let _: () = q(
                &mut cluster.nodes()[s].client(),
                &["SET", &format!("probe:{s}"), "1"],
            );
            t.elapsed()
        })
        .collect();
    let resumed = eventually(
        Duration::from_secs(10),
        "acknowledged writes after the election",
        || {
            if tally.acked.load(Ordering::SeqCst) > acked_at_election {
                Ok(killed_at.elapsed())
            } else {
                bail!("no ack since the election")
            }
        },
    );
    let acked_at_resume = tally.acked.load(Ordering::SeqCst);
    eventually(
        Duration::from_secs(10),
        "200 more acks under the new leader",
        || match tally.acked.load(Ordering::SeqCst) {
            n if n >= acked_at_resume + 200 => Ok(()),
            n => bail!("{} acks since writes resumed", n - acked_at_resume),
        },
    );
    let sets = writers.finish();
    let acked_incr = tally.acked_incr.load(Ordering::SeqCst);
    let failed_incr = tally.failed_incr.load(Ordering::SeqCst);
    let errors = tally.errors.lock().unwrap().clone();
    report(&format!(
        "leader kill: new leader n{} elected {elected:?} after SIGKILL; fresh writes through the \
         survivors then took {probes:?}; the writers' first ack came {resumed:?} after the kill; acks {acked_at_kill} before the kill, {} in all; INCR acked {acked_incr}, \
         in doubt {failed_incr}; errors seen: {errors:?}",
        new_leader + 1,
        tally.acked.load(Ordering::SeqCst),
    ));

    // No acknowledged write is missing, read linearizably through every survivor.
    for &s in &survivors {
        let mut c = cluster.nodes()[s].client();
        let ctr: u64 = q(&mut c, &["GET", "ctr"]);
        assert!(
            (acked_incr..=acked_incr + failed_incr).contains(&ctr),
            "ctr = {ctr} on n{}: acked INCRs {acked_incr}, in doubt {failed_incr}",
            s + 1
        );
        let (keys, values): (Vec<String>, Vec<String>) = sets.iter().cloned().unzip();
        assert_values(&mut c, &keys, &values, "acked SET");
    }
    assert!(
        elected < ELECTION_BOUND,
        "new leader after {elected:?}, the bound is {ELECTION_BOUND:?}"
    );

    // The old leader comes back as a follower with every write.
    let ctr: String = q(&mut cluster.nodes()[new_leader].client(), &["GET", "ctr"]);
    cluster.node_mut(leader).start_again();
    let caught_up = cluster.wait_caught_up(leader, CATCH_UP);
    report(&format!(
        "leader kill: old leader caught up {caught_up:?} after its restart"
    ));
    assert_eq!(
        readonly_get(cluster.nodes()[leader].port(), "ctr"),
        Reply::bulk(&ctr)
    );
    let st = cluster.status(leader).unwrap();
    assert_ne!(st.role.as_deref(), Some("leader"), "{st:?}");
}

// ---------------------------------------------------------------------------------------------
// Follower restart
// ---------------------------------------------------------------------------------------------

#[test]
fn follower_restart_catches_up_from_log() {
    let mut cluster = Cluster::start(ClusterSpec::region(3));
    let leader = cluster.leader(LEADER_WAIT);
    let (f, other) = match leader {
        0 => (1, 2),
        1 => (0, 2),
        _ => (0, 1),
    };
    let mut lc = cluster.nodes()[leader].client();
    for i in 0..100 {
        let _: () = q(&mut lc, &["SET", &format!("before:{i}"), "old"]);
    }
    cluster
        .node_mut(f)
        .kill()
        .expect("the follower was running");
    // Writes while it is down, through the leader and the other follower, one entry each.
    let mut keys = Vec::new();
    let mut values = Vec::new();
    let mut oc = cluster.nodes()[other].client();
    for i in 0..300 {
        let c = if i % 2 == 0 { &mut lc } else { &mut oc };
        let (k, v) = (format!("down:{i}"), format!("value-{i}"));
        let _: () = q(c, &["SET", &k, &v]);
        keys.push(k);
        values.push(v);
    }
    for i in 0..100 {
        let _: () = q(&mut oc, &["SET", &format!("before:{i}"), "new"]);
    }
    let _: i64 = q(&mut oc, &["INCRBY", "ctr", "42"]);
    let leader_applied = cluster.status(leader).unwrap().applied_index().unwrap_or(0);

    let t = Instant::now();
    cluster.node_mut(f).start_again();
    let caught_up = cluster.wait_caught_up(f, CATCH_UP);
    report(&format!(
        "follower restart (log): caught up to index {leader_applied} {:?} after the restart \
         ({caught_up:?} after PING)",
        t.elapsed()
    ));
    let node = &cluster.nodes()[f];
    // Linearizable reads on it.
    let mut c = node.client();
    assert_values(&mut c, &keys, &values, "linearizable, restarted follower");
    assert_eq!(q::<String>(&mut c, &["GET", "before:99"]), "new");
    assert_eq!(q::<i64>(&mut c, &["GET", "ctr"]), 42);
    // Local reads on it: the data is on this replica.
    let mut ro = node.client();
    let _: () = q(&mut ro, &["READONLY"]);
    assert_values(&mut ro, &keys, &values, "READONLY, restarted follower");
    assert_eq!(q::<String>(&mut ro, &["GET", "before:0"]), "new");
    // From the log: no snapshot was needed.
    let st = cluster.status(f).unwrap();
    assert!(
        node.log_lines_with("installing snapshot").is_empty(),
        "a snapshot was installed although the log was kept: {st:?}"
    );
}

/// Runs `redis-benchmark` SETs on the node: `n` requests, one connection per `clients`, no
/// pipelining, so the leader proposes about one entry per request.
fn drive_entries(node: &Node, n: usize, clients: usize) {
    let out = node.redis_benchmark(&[
        "-t",
        "set",
        "-n",
        &n.to_string(),
        "-c",
        &clients.to_string(),
        "-P",
        "1",
        "-r",
        "1000",
        "-d",
        "16",
        "-q",
    ]);
    assert!(
        out.status.success(),
        "redis-benchmark failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn follower_restart_catches_up_from_snapshot() {
    let mut cluster = Cluster::start(ClusterSpec::region(3));
    let leader = cluster.leader(LEADER_WAIT);
    let f = (0..3).find(|&i| i != leader).unwrap();
    let _: () = q(
        &mut cluster.nodes()[leader].client(),
        &["SET", "early", "1"],
    );
    cluster.wait_caught_up(f, CATCH_UP);
    let f_last = cluster.status(f).unwrap().last_log_index().unwrap_or(0);
    cluster
        .node_mut(f)
        .kill()
        .expect("the follower was running");

    // Enough single-entry writes that the leader snapshots and purges past the follower's log.
    let t = Instant::now();
    let mut rounds = 0;
    let purged = eventually(
        Duration::from_secs(120),
        "the leader to purge its log past the killed follower's last index",
        || {
            let st = cluster.status(leader)?;
            if let Some(p) = st.purged_index().filter(|&p| p > f_last) {
                return Ok(p);
            }
            rounds += 1;
            drive_entries(&cluster.nodes()[leader], 5000, 4);
            bail!(
                "purged_index {:?}, last_log_index {:?}, follower's last index {f_last}",
                st.purged_index(),
                st.last_log_index()
            )
        },
    );
    let st = cluster.status(leader).unwrap();
    report(&format!(
        "follower restart (snapshot): {rounds} x 5000 SETs in {:?} to reach last_log_index {:?}, \
         snapshot_index {:?}, purged_index {purged} (follower at {f_last})",
        t.elapsed(),
        st.last_log_index(),
        st.snapshot_index(),
    ));
    let mut lc = cluster.nodes()[leader].client();
    let keys: Vec<String> = (0..100).map(|i| format!("after:{i}")).collect();
    let values: Vec<String> = (0..100).map(|i| format!("value-{i}")).collect();
    for (k, v) in keys.iter().zip(&values) {
        let _: () = q(&mut lc, &["SET", k, v]);
    }

    let t = Instant::now();
    cluster.node_mut(f).start_again();
    let caught_up = cluster.wait_caught_up(f, CATCH_UP);
    let node = &cluster.nodes()[f];
    let fst = cluster.status(f).unwrap();
    report(&format!(
        "follower restart (snapshot): caught up {:?} after the restart ({caught_up:?} after \
         PING); its snapshot_index {:?}; log: {:?}",
        t.elapsed(),
        fst.snapshot_index(),
        node.log_lines_with("installing snapshot")
    ));
    assert!(
        !node.log_lines_with("installing snapshot").is_empty(),
        "the follower caught up without installing a snapshot: {fst:?}"
    );
    assert!(fst.snapshot_index().unwrap_or(0) > 0, "{fst:?}");
    let mut c = node.client();
    assert_values(&mut c, &keys, &values, "linearizable, restarted follower");
    assert_eq!(q::<String>(&mut c, &["GET", "early"]), "1");
    let mut ro = node.client();
    let _: () = q(&mut ro, &["READONLY"]);
    assert_values(&mut ro, &keys, &values, "READONLY, restarted follower");
    // Same data set as the leader, key for key count.
    let mut lro = cluster.nodes()[leader].client();
    let _: () = q(&mut lro, &["READONLY"]);
    assert_eq!(
        q::<i64>(&mut ro, &["DBSIZE"]),
        q::<i64>(&mut lro, &["DBSIZE"]),
        "DBSIZE on the follower vs the leader"
    );
    drop((c, ro, lro, lc));

    // A node added now also starts from the snapshot: the log it would need is gone.
    let t = Instant::now();
    let n4 = cluster.add_node("r1");
    let (port, peer) = (cluster.nodes()[n4].port(), cluster.peer_port(n4));
    let added = cluster.nodes()[leader].raw().cmd(&[
        "MERIDIAN",
        "NODE",
        "ADD",
        "4",
        "n4",
        &format!("127.0.0.1:{peer}"),
        &format!("127.0.0.1:{port}"),
    ]);
    assert_eq!(added, Reply::ok(), "MERIDIAN NODE ADD");
    cluster.wait_caught_up(n4, CATCH_UP);
    let node = &cluster.nodes()[n4];
    let installed = node.log_lines_with("installing snapshot");
    report(&format!(
        "new node after purge: n4 a voter and caught up {:?} after its start; log: {installed:?}",
        t.elapsed()
    ));
    assert!(
        !installed.is_empty(),
        "n4 caught up without a snapshot: {:?}",
        cluster.status(n4).unwrap()
    );
    let mut c4 = node.client();
    assert_values(&mut c4, &keys, &values, "linearizable, new node");
    assert_eq!(q::<String>(&mut c4, &["GET", "early"]), "1");
}

// ---------------------------------------------------------------------------------------------
// Minority partitions
// ---------------------------------------------------------------------------------------------

#[test]
fn partitioned_follower_refuses_linearizable_reads() {
    let cluster = Cluster::start(ClusterSpec::region(3));
    let leader = cluster.leader(LEADER_WAIT);
    let p = (0..3).find(|&i| i != leader).unwrap();
    let other = (0..3).find(|&i| i != leader && i != p).unwrap();
    let nodes = cluster.nodes();
    let _: () = q(&mut nodes[leader].client(), &["SET", "part:k", "v1"]);
    cluster.wait_caught_up(p, CATCH_UP);
    assert_eq!(readonly_get(nodes[p].port(), "part:k"), Reply::bulk("v1"));

    cluster.partition(p);
    // The majority keeps writing, through the leader and the other follower.
    let _: () = q(&mut nodes[leader].client(), &["SET", "part:k", "v2"]);
    let mut oc = nodes[other].client();
    for i in 0..50 {
        let _: () = q(&mut oc, &["SET", &format!("part:{i}"), "x"]);
    }
    // The cut-off node refuses a linearizable read rather than answer v1.
    let (err, took) = refused_get(&nodes[p], "part:k");
    report(&format!(
        "partitioned follower: linearizable GET refused after {took:?}: {err}"
    ));
    assert!(err.starts_with("CLUSTERDOWN"), "{err}");
    assert!(took < REFUSAL_BOUND, "refusal took {took:?}");
    // READONLY answers from the local, stale replica; READWRITE turns that off again.
    let mut c = nodes[p].raw();
    assert_eq!(c.cmd(&["READONLY"]), Reply::ok());
    assert_eq!(c.cmd(&["GET", "part:k"]), Reply::bulk("v1"));
    assert_eq!(c.cmd(&["READWRITE"]), Reply::ok());
    let r = c.cmd(&["GET", "part:k"]);
    assert!(
        r.as_err().is_some_and(|e| e.starts_with("CLUSTERDOWN")),
        "GET after READWRITE on the partitioned node: {r:?}"
    );
    // The majority still has a leader and still reads.
    let majority: Vec<usize> = (0..3).filter(|&i| i != p).collect();
    eventually(LEADER_WAIT, "a leader in the majority", || {
        cluster.leader_among(&majority)
    });
    assert_eq!(q::<String>(&mut oc, &["GET", "part:k"]), "v2");

    let term_cut = cluster.status(leader).unwrap().term;
    let term_p = cluster.status(p).unwrap().term;
    cluster.heal();
    let caught_up = cluster.wait_caught_up(p, CATCH_UP);
    let lead_now = cluster.leader(LEADER_WAIT);
    report(&format!(
        "partitioned follower: caught up {caught_up:?} after the heal; terms: region {term_cut:?} \
         and cut-off node {term_p:?} at the heal, {:?} after it (leader n{} then n{})",
        cluster.status(lead_now).unwrap().term,
        leader + 1,
        lead_now + 1
    ));
    // Pre-votes: the cut-off node could not win one, so it kept its term, and the heal left
    // the region's leader alone (before, its term climbed 1 -> 6 and deposed the leader).
    assert_eq!(term_p, term_cut, "the cut-off node raised its term");
    assert_eq!(lead_now, leader, "the heal deposed the leader");
    assert_eq!(cluster.status(lead_now).unwrap().term, term_cut);
    let mut c = nodes[p].client();
    assert_eq!(q::<String>(&mut c, &["GET", "part:k"]), "v2");
    assert_eq!(q::<String>(&mut c, &["GET", "part:49"]), "x");
    assert_eq!(readonly_get(nodes[p].port(), "part:k"), Reply::bulk("v2"));
}

/// A follower cut off for longer than the links' idle timeout (3 s) catches up soon after the
/// heal: its link was closed and is dialed afresh. (With a 10 s idle timeout the link stayed
/// open through such a cut while QUIC's retransmission timer backed off, and a follower cut off
/// for 5 s caught up only at the next retransmission: up to 5.5 s after the heal.)
#[test]
fn follower_cut_off_for_seconds_catches_up_soon_after_the_heal() {
    const CUT: Duration = Duration::from_millis(4500);
    const PROMPT: Duration = Duration::from_secs(2);
    let cluster = Cluster::start(ClusterSpec::region(3));
    let leader = cluster.leader(LEADER_WAIT);
    let p = (leader + 1) % 3;
    let mut c = cluster.nodes()[leader].client();
    let _: i64 = q(&mut c, &["INCR", "cut:n"]);
    cluster.wait_caught_up(p, CATCH_UP);
    cluster.partition(p);
    let until = Instant::now() + CUT;
    let mut writes = 1;
    while Instant::now() < until {
        let _: i64 = q(&mut c, &["INCR", "cut:n"]);
        writes += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    cluster.heal();
    let caught_up = cluster.wait_caught_up(p, CATCH_UP);
    report(&format!(
        "follower cut off for {CUT:?} ({writes} writes meanwhile): caught up {caught_up:?} after \
         the heal"
    ));
    assert!(
        caught_up < PROMPT,
        "caught up {caught_up:?} after the heal (bound {PROMPT:?})"
    );
    assert_eq!(
        readonly_get(cluster.nodes()[p].port(), "cut:n"),
        Reply::bulk(writes.to_string())
    );
}

/// Waits (up to 10 s) until one of `majority` leads in a term after `old_term`; returns it.
fn newer_leader_among(cluster: &Cluster, majority: &[usize], old_term: u64) -> usize {
    eventually(
        Duration::from_secs(10),
        "the majority to elect a leader of a newer term",
        || {
            let l = cluster.leader_among(majority)?;
            match cluster.status(l)?.term {
                Some(t) if t > old_term => Ok(l),
                t => bail!("n{} leads in term {t:?}", l + 1),
            }
        },
    )
}

#[test]
fn partitioned_leader_refuses_linearizable_reads() {
    let cluster = Cluster::start(ClusterSpec::region(3));
    let old = cluster.leader(LEADER_WAIT);
    let old_term = cluster.status(old).unwrap().term.expect("term");
    let nodes = cluster.nodes();
    let _: () = q(&mut nodes[old].client(), &["SET", "part:k", "v1"]);
    let majority: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    for &i in &majority {
        cluster.wait_caught_up(i, CATCH_UP);
    }

    let cut_at = Instant::now();
    cluster.partition(old);
    let new = newer_leader_among(&cluster, &majority, old_term);
    let elected = cut_at.elapsed();
    let _: () = q(&mut nodes[new].client(), &["SET", "part:k", "v2"]);
    // The old leader must not serve v1 once the majority moved on.
    let (err, took) = refused_get(&nodes[old], "part:k");
    report(&format!(
        "partitioned leader: majority elected n{} {elected:?} after the cut; old leader's \
         linearizable GET refused after {took:?}: {err}",
        new + 1
    ));
    assert!(err.starts_with("CLUSTERDOWN"), "{err}");
    assert!(took < REFUSAL_BOUND, "refusal took {took:?}");
    assert_eq!(readonly_get(nodes[old].port(), "part:k"), Reply::bulk("v1"));

    cluster.heal();
    let caught_up = cluster.wait_caught_up(old, CATCH_UP);
    report(&format!(
        "partitioned leader: caught up {caught_up:?} after the heal"
    ));
    assert_eq!(
        q::<String>(&mut nodes[old].client(), &["GET", "part:k"]),
        "v2"
    );
    assert_eq!(readonly_get(nodes[old].port(), "part:k"), Reply::bulk("v2"));
}

/// A leader whose followers are gone stops promptly on SIGTERM: a write still waiting for the
/// quorum holds the shutdown about a second, not its whole write timeout (30 s here; before,
/// the node waited the timeout, or the 10 s bound on its tasks), and its client sees the
/// connection close instead of an OK.
#[test]
fn leader_without_quorum_stops_promptly_on_sigterm() {
    let mut cluster =
        Cluster::start(ClusterSpec::region(3).with_toml("[raft]\nwrite-timeout-ms = 30000\n"));
    let leader = cluster.leader(LEADER_WAIT);
    for i in 0..cluster.nodes().len() {
        if i != leader {
            cluster.node_mut(i).kill();
        }
    }
    let mut c = cluster.nodes()[leader].client();
    let write = std::thread::spawn(move || {
        redis::cmd("SET")
            .arg("stuck")
            .arg("v")
            .query::<()>(&mut c)
            .map_err(|e| err_text(&e))
    });
    // The write is proposed and waits for acknowledgements that cannot come.
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let status = cluster
        .node_mut(leader)
        .stop()
        .expect("the leader was running");
    let took = started.elapsed();
    report(&format!(
        "leader without quorum: exit {took:?} after SIGTERM"
    ));
    assert!(status.success(), "exit status {status:?}");
    assert!(
        took < Duration::from_secs(4),
        "SIGTERM to exit took {took:?} with a write waiting"
    );
    // The write was still waiting: the stop waited out the grace (1 s) for it.
    assert!(
        took >= Duration::from_millis(900),
        "SIGTERM to exit took only {took:?}: was the write in flight?"
    );
    let outcome = write.join().unwrap();
    assert!(
        outcome.is_err(),
        "the write that had no quorum was acknowledged"
    );
}

/// A leader that lost its quorum answers every write with an error once the write timeout
/// has passed: the writes in flight, and those queued behind them while every entry slot is
/// taken (writers arrive one by one, so the first four are an entry each and the rest share
/// one), each at about its own deadline; never an OK, never a hang.
#[test]
fn writes_without_quorum_fail_at_the_write_timeout() {
    const WRITE_TIMEOUT: Duration = Duration::from_millis(1500);
    let mut cluster = Cluster::start(ClusterSpec::region(3).with_toml(&format!(
        "[raft]\nwrite-timeout-ms = {}\n",
        WRITE_TIMEOUT.as_millis()
    )));
    let leader = cluster.leader(LEADER_WAIT);
    for i in 0..cluster.nodes().len() {
        if i != leader {
            cluster.node_mut(i).kill();
        }
    }
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let mut c = cluster.nodes()[leader].client();
            std::thread::sleep(Duration::from_millis(100));
            std::thread::spawn(move || {
                let started = Instant::now();
                let outcome = redis::cmd("SET")
                    .arg(format!("stuck:{w}"))
                    .arg("v")
                    .query::<()>(&mut c)
                    .map_err(|e| err_text(&e));
                (outcome, started.elapsed())
            })
        })
        .collect();
    for (w, writer) in writers.into_iter().enumerate() {
        let (outcome, took) = writer.join().unwrap();
        report(&format!(
            "write {w} without quorum: {outcome:?} after {took:?}"
        ));
        let err = outcome.expect_err("a write without a quorum was acknowledged");
        assert!(err.starts_with("CLUSTERDOWN"), "{err}");
        assert!(
            took >= WRITE_TIMEOUT - Duration::from_millis(100)
                && took < WRITE_TIMEOUT + Duration::from_millis(500),
            "write {w} answered after {took:?}"
        );
    }
}

/// A write proposed by a leader cut off from its region, whose entry the new leader overwrote
/// after the heal: with at most four voters no other copy of the entry exists, so the old
/// leader proposes the write again through the new one and the client gets the one result
/// (applied once); with five voters or more another copy might yet be committed, so the client
/// is told the outcome is unknown instead of risking a second application.
fn write_on_a_deposed_leader(voters: usize) -> (Result<i64, String>, Vec<Option<String>>) {
    let cluster =
        Cluster::start(ClusterSpec::region(voters).with_toml("[raft]\nwrite-timeout-ms = 15000\n"));
    let old = cluster.leader(LEADER_WAIT);
    let old_term = cluster.status(old).unwrap().term.expect("term");
    let nodes = cluster.nodes();
    let majority: Vec<usize> = (0..voters).filter(|&i| i != old).collect();
    cluster.partition(old);
    // The old leader still leads in its own eyes: it appends the INCR and waits for a quorum.
    let mut c = nodes[old].client();
    let write = std::thread::spawn(move || {
        redis::cmd("INCR")
            .arg("deposed:n")
            .query::<i64>(&mut c)
            .map_err(|e| err_text(&e))
    });
    let new = newer_leader_among(&cluster, &majority, old_term);
    let _: () = q(&mut nodes[new].client(), &["SET", "deposed:other", "x"]);
    assert!(!write.is_finished(), "the cut-off leader answered the INCR");
    cluster.heal();
    let outcome = write.join().unwrap();
    for i in 0..voters {
        cluster.wait_caught_up(i, CATCH_UP);
    }
    let values = (0..voters)
        .map(|i| q(&mut nodes[i].client(), &["GET", "deposed:n"]))
        .collect();
    (outcome, values)
}

#[test]
fn deposed_leaders_overwritten_write_is_applied_once_in_a_region_of_three() {
    let (outcome, values) = write_on_a_deposed_leader(3);
    report(&format!("3 voters: {outcome:?}, then {values:?}"));
    assert_eq!(outcome, Ok(1));
    assert_eq!(values, vec![Some("1".to_string()); 3]);
}

#[test]
fn deposed_leaders_overwritten_write_is_of_unknown_outcome_in_a_region_of_five() {
    let (outcome, values) = write_on_a_deposed_leader(5);
    report(&format!("5 voters: {outcome:?}, then {values:?}"));
    let err = outcome.expect_err("the write was proposed again");
    assert!(
        err.starts_with("CLUSTERDOWN") && err.contains("unknown"),
        "{err}"
    );
    // Here the entry was on the old leader alone: it is gone everywhere.
    assert_eq!(values, vec![None; 5]);
}

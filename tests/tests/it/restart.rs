//! Durability: acknowledged writes survive SIGKILL (per `appendfsync`), TTLs survive a
//! restart, and SIGTERM/SIGINT shut down cleanly.

use std::time::{Duration, Instant};

use meridian_tests::{describe_exit, q, Node, NodeOpts, Reply};
use redis::Value;

const KEYS: usize = 10_000;
const BATCH: usize = 500;

/// Writes `KEYS` keys with pipelined SETs (each acknowledged), a counter, and keys with TTLs.
fn write_dataset(c: &mut redis::Connection) {
    for start in (0..KEYS).step_by(BATCH) {
        let mut pipe = redis::pipe();
        for i in start..start + BATCH {
            pipe.cmd("SET")
                .arg(format!("key:{i}"))
                .arg(format!("value-{i}"));
        }
        let replies: Vec<Value> = pipe.query(c).unwrap();
        assert!(replies.iter().all(|r| *r == Value::Okay), "a SET failed");
    }
    for _ in 0..100 {
        let _: i64 = q(c, &["INCR", "counter"]);
    }
    let _: () = q(c, &["SET", "ttl:long", "v", "EX", "3600"]);
    let _: () = q(c, &["SET", "ttl:short", "v", "PX", "300"]);
    let _: () = q(c, &["SELECT", "9"]);
    let _: () = q(c, &["SET", "in-db9", "nine"]);
    let _: () = q(c, &["SELECT", "0"]);
    let _: i64 = q(c, &["DEL", "key:0"]);
}

/// Reads everything written by [`write_dataset`] back.
fn check_dataset(c: &mut redis::Connection) {
    for start in (0..KEYS).step_by(BATCH) {
        let keys: Vec<String> = (start..start + BATCH).map(|i| format!("key:{i}")).collect();
        let vals: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(c).unwrap();
        for (i, v) in (start..).zip(vals) {
            let expected = (i != 0).then(|| format!("value-{i}"));
            assert_eq!(v, expected, "key:{i} after restart");
        }
    }
    assert_eq!(q::<i64>(c, &["GET", "counter"]), 100);
    let ttl: i64 = q(c, &["TTL", "ttl:long"]);
    assert!((3000..=3600).contains(&ttl), "TTL after restart: {ttl}");
    wait_short_expired(c);
    // key:1..key:9999, counter, ttl:long. DBSIZE may count ttl:short until active expiry
    // removes it (Redis counts expired keys not yet reclaimed too).
    meridian_tests::eventually(Duration::from_secs(10), "DBSIZE to settle", || {
        match q::<i64>(c, &["DBSIZE"]) {
            n if n == (KEYS + 1) as i64 => Ok(()),
            n => anyhow::bail!("DBSIZE = {n}"),
        }
    });
    let _: () = q(c, &["SELECT", "9"]);
    assert_eq!(q::<String>(c, &["GET", "in-db9"]), "nine");
    let _: () = q(c, &["SELECT", "0"]);
}

/// `ttl:short` (300 ms) may outlive a fast restart, but must be gone within seconds.
fn wait_short_expired(c: &mut redis::Connection) {
    meridian_tests::eventually(Duration::from_secs(5), "ttl:short to expire", || {
        match q::<Value>(c, &["GET", "ttl:short"]) {
            Value::Nil => Ok(()),
            v => anyhow::bail!("ttl:short = {v:?}"),
        }
    });
}

fn kill_restart_check(mode: &str, wait_before_kill: Duration) {
    kill_restart_check_with(
        NodeOpts::default().appendfsync(mode),
        mode,
        wait_before_kill,
    );
}

fn kill_restart_check_with(opts: NodeOpts, mode: &str, wait_before_kill: Duration) {
    let mut node = Node::start(opts);
    let mut c = node.client();
    let t = Instant::now();
    write_dataset(&mut c);
    let wrote = t.elapsed();
    drop(c);
    std::thread::sleep(wait_before_kill);
    let status = node.kill().expect("node was running");
    let took = node.restart();
    meridian_tests::report(&format!(
        "restart (appendfsync {mode}): {KEYS} keys written in {wrote:?}, killed ({}), \
         serving again after {took:?}",
        describe_exit(&status)
    ));
    let mut c = node.client();
    check_dataset(&mut c);
}

#[test]
fn sigkill_restart_appendfsync_always() {
    kill_restart_check("always", Duration::ZERO);
}

/// With a write-back window longer than the test, none of the applied writes reach RocksDB's
/// keyspace before the crash: the restarted node has them only by applying its Raft log again.
#[test]
fn sigkill_restart_replays_writes_not_yet_written_back() {
    let opts = NodeOpts::default()
        .config_toml("[server]\nwrite-back-ms = 10000\nwrite-back-mb = 1024\n")
        .appendfsync("everysec");
    kill_restart_check_with(opts, "everysec, write-back 10 s", Duration::ZERO);
}

#[test]
fn sigkill_restart_appendfsync_everysec() {
    // everysec may lose the last second: wait past one sync point before the crash. This is
    // the durability contract being tested, not synchronisation.
    kill_restart_check("everysec", Duration::from_millis(1500));
}

#[test]
fn graceful_sigterm_keeps_everything() {
    let mut node = Node::start(NodeOpts::default().appendfsync("no"));
    let mut c = node.client();
    write_dataset(&mut c);
    drop(c);
    let status = node.stop().expect("node was running");
    assert!(
        status.success(),
        "SIGTERM must shut down cleanly with exit 0, got {}; log:\n{}",
        describe_exit(&status),
        node.log_tail()
    );
    let took = node.restart();
    meridian_tests::report(&format!(
        "restart after SIGTERM: serving again after {took:?}"
    ));
    let mut c = node.client();
    check_dataset(&mut c);
}

/// SIGTERM in the middle of a write load, while RocksDB flushes and compacts: exit 0 (the
/// node once aborted here now and then, "pthread lock: Invalid argument", when the Raft
/// thread closed RocksDB while the process exited), and every acknowledged write is there
/// after the restart. Three times, since the race it guards against was timing-dependent.
#[test]
fn sigterm_under_write_load_exits_cleanly_and_keeps_acked_writes() {
    const WRITERS: usize = 3;
    for round in 0..3 {
        // Small memtables: flushes and compactions run while the load does.
        let mut node =
            Node::start(NodeOpts::default().config_toml("[server]\nwrite-buffer-mb = 1\n"));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let mut c = node.client();
                std::thread::spawn(move || {
                    // The last batch every SET of which got an OK.
                    let mut acked: Option<u64> = None;
                    for batch in 0u64.. {
                        let mut pipe = redis::pipe();
                        for i in 0..200 {
                            pipe.cmd("SET")
                                .arg(format!("w{w}:{batch}:{i}"))
                                .arg([b'v'; 64].as_slice())
                                .ignore();
                        }
                        if pipe.query::<()>(&mut c).is_err() {
                            break;
                        }
                        acked = Some(batch);
                    }
                    acked
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(800 + 300 * round));
        let status = node.stop().expect("node was running");
        let acked: Vec<Option<u64>> = writers.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(
            status.success(),
            "round {round}: SIGTERM under load must exit 0, got {}; log:\n{}",
            describe_exit(&status),
            node.log_tail()
        );
        node.restart();
        let mut c = node.client();
        for (w, last) in acked.iter().enumerate() {
            let last = last.expect("each writer had a batch acknowledged");
            for batch in [0, last / 2, last] {
                for i in [0, 199] {
                    let key = format!("w{w}:{batch}:{i}");
                    let got: Option<Vec<u8>> = q(&mut c, &["GET", &key]);
                    assert_eq!(
                        got.as_deref(),
                        Some(&[b'v'; 64][..]),
                        "round {round}: {key}"
                    );
                }
            }
        }
    }
}

/// SIGHUP (logrotate, a service manager's reload), SIGUSR1 and SIGUSR2 are logged and
/// ignored; they used to end the process at once (exit 129 / 138), without the clean stop.
#[test]
fn sighup_and_sigusr_are_ignored() {
    let mut node = Node::start(NodeOpts::default());
    let pid = libc::pid_t::try_from(node.pid().expect("running")).unwrap();
    for sig in [libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2] {
        // SAFETY: signalling our own live child process.
        unsafe {
            libc::kill(pid, sig);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(node.is_running(), "a signal ended the node");
    let mut c = node.client();
    assert_eq!(q::<String>(&mut c, &["PING"]), "PONG");
    assert_eq!(node.log_lines_with("SIGHUP received; ignored").len(), 1);
    let status = node.stop().expect("exit status");
    assert!(status.success(), "{}", describe_exit(&status));
}

#[test]
fn sigint_shuts_down_cleanly() {
    let mut node = Node::start(NodeOpts::default());
    let mut c = node.client();
    let _: () = q(&mut c, &["SET", "k", "v"]);
    drop(c);
    let pid = libc::pid_t::try_from(node.pid().expect("running")).unwrap();
    // SAFETY: signalling our own live child process.
    unsafe {
        libc::kill(pid, libc::SIGINT);
    }
    meridian_tests::eventually(Duration::from_secs(10), "exit after SIGINT", || {
        anyhow::ensure!(!node.is_running(), "still running");
        Ok(())
    });
    let status = node.stop().expect("exit status");
    assert!(
        status.success(),
        "SIGINT must shut down cleanly, got {}",
        describe_exit(&status)
    );
    node.restart();
    let mut c = node.client();
    assert_eq!(q::<String>(&mut c, &["GET", "k"]), "v");
}

#[test]
fn restart_repeatedly_keeps_counting() {
    let mut node = Node::start(NodeOpts::default().appendfsync("always"));
    for round in 1..=3 {
        let mut c = node.client();
        for _ in 0..50 {
            let _: i64 = q(&mut c, &["INCR", "rounds"]);
        }
        assert_eq!(q::<i64>(&mut c, &["GET", "rounds"]), round * 50);
        drop(c);
        if round % 2 == 0 {
            node.kill();
        }
        node.restart();
    }
    let mut c = node.client();
    assert_eq!(q::<i64>(&mut c, &["GET", "rounds"]), 150);
}

/// SHUTDOWN (as `redis-cli shutdown` sends it) stops the node like SIGTERM: no reply, exit 0,
/// every acknowledged write there after a restart. Its argument errors are Redis's, and it is
/// refused inside MULTI.
#[test]
fn shutdown_command_stops_the_node_cleanly() {
    let mut node = Node::start(NodeOpts::default().requirepass("pw"));
    let mut c = node.client();
    let _: () = q(&mut c, &["SET", "k", "v"]);
    let mut raw = node.raw();
    assert_eq!(
        raw.cmd(&["SHUTDOWN"]),
        Reply::err("NOAUTH Authentication required.")
    );
    assert_eq!(raw.cmd(&["AUTH", "pw"]), Reply::ok());
    for (args, err) in [
        (&["SHUTDOWN", "ABORT"][..], "ERR No shutdown in progress."),
        (&["SHUTDOWN", "SAVE", "NOSAVE"], "ERR syntax error"),
        (&["SHUTDOWN", "ABORT", "NOW"], "ERR syntax error"),
        (&["SHUTDOWN", "LATER"], "ERR syntax error"),
    ] {
        assert_eq!(raw.cmd(args), Reply::err(err), "{args:?}");
    }
    assert_eq!(raw.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(
        raw.cmd(&["SHUTDOWN"]),
        Reply::err("ERR Command not allowed inside a transaction")
    );
    assert_eq!(
        raw.cmd(&["EXEC"]),
        Reply::err("EXECABORT Transaction discarded because of previous errors.")
    );
    assert!(node.ping_answers(), "still serving");
    let out = node.redis_cli(&["SHUTDOWN", "NOSAVE"]);
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "redis-cli shutdown: {out:?}"
    );
    meridian_tests::eventually(Duration::from_secs(10), "exit after SHUTDOWN", || {
        anyhow::ensure!(!node.is_running(), "still running");
        Ok(())
    });
    let status = node.stop().expect("exit status");
    assert!(
        status.success(),
        "SHUTDOWN must exit 0, got {}; log:\n{}",
        describe_exit(&status),
        node.log_tail()
    );
    node.start_again();
    let v: String = q(&mut node.client(), &["GET", "k"]);
    assert_eq!(v, "v");
}

#[test]
fn a_port_in_use_stops_the_start_before_the_storage_is_opened() {
    let node = Node::start(NodeOpts::default());
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut second = std::process::Command::new(meridian_tests::meridian_bin())
        .args(["--bind", "127.0.0.1", "--port", &node.port().to_string()])
        .arg("--data-dir")
        .arg(&data_dir)
        .env("RUST_BACKTRACE", "0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            panic!("a second node on a port in use kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{}", describe_exit(&status));
    assert!(
        stderr.contains("binding RESP listener") && stderr.contains("in use"),
        "{stderr}"
    );
    assert!(
        !data_dir.exists(),
        "the storage was opened before the port was taken"
    );
    // The first node is untouched.
    assert_eq!(q::<String>(&mut node.client(), &["PING"]), "PONG");
}

/// INFO memory's `hot_cache_complete`.
fn hot_cache_complete(c: &mut redis::Connection) -> String {
    let info: String = q(c, &["INFO", "memory"]);
    info.lines()
        .find_map(|line| line.strip_prefix("hot_cache_complete:"))
        .expect("INFO memory has hot_cache_complete")
        .to_string()
}

/// SETs `prefix0` … of `count` keys, each holding its number.
fn set_numbered(c: &mut redis::Connection, prefix: &str, count: usize) {
    let mut pipe = redis::pipe();
    for i in 0..count {
        pipe.cmd("SET").arg(format!("{prefix}{i}")).arg(i);
    }
    let replies: Vec<Value> = pipe.query(c).unwrap();
    assert!(replies.iter().all(|r| *r == Value::Okay), "a SET failed");
}

/// INCRs every key `set_numbered` wrote: each must answer its number plus one.
fn incr_numbered(c: &mut redis::Connection, prefix: &str, count: usize) {
    let mut pipe = redis::pipe();
    for i in 0..count {
        pipe.cmd("INCR").arg(format!("{prefix}{i}"));
    }
    let replies: Vec<i64> = pipe.query(c).unwrap();
    for (i, n) in replies.into_iter().enumerate() {
        assert_eq!(n, i as i64 + 1, "{prefix}{i}");
    }
}

/// A node that started empty holds every key in its hot cache, so writes of new keys skip the
/// RocksDB read, until the cache lets a key go; restarted over its data it reads RocksDB again.
/// Either way every key keeps its value and DBSIZE adds up.
#[test]
fn hot_cache_completeness_ends_with_evictions_and_restarts() {
    let node = Node::start(NodeOpts::default().arg("--hot-cache-mb").arg("1"));
    let mut c = node.client();
    assert_eq!(hot_cache_complete(&mut c), "1", "started empty");
    set_numbered(&mut c, "small:", 100);
    assert_eq!(hot_cache_complete(&mut c), "1", "100 keys fit in 1 MiB");
    // About 700 bytes charged per key: 10,000 keys overflow 1 MiB several times.
    for _ in 0..100 {
        set_numbered(&mut c, "big:", 10_000);
        if hot_cache_complete(&mut c) == "0" {
            break;
        }
    }
    assert_eq!(hot_cache_complete(&mut c), "0", "keys were evicted");
    incr_numbered(&mut c, "big:", 10_000);
    incr_numbered(&mut c, "small:", 100);
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 10_100);

    let mut fresh = Node::start(NodeOpts::default());
    let mut f = fresh.client();
    set_numbered(&mut f, "k", 1_000);
    drop(f);
    fresh.restart();
    let mut f = fresh.client();
    assert_eq!(hot_cache_complete(&mut f), "0", "restarted over its keys");
    incr_numbered(&mut f, "k", 1_000);
    assert_eq!(q::<i64>(&mut f, &["DBSIZE"]), 1_000);
}

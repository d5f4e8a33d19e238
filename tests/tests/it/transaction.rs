//! MULTI / EXEC / DISCARD through real clients: the `redis` crate's atomic pipelines (RESP2
//! and RESP3), queue-time errors that discard a transaction, and writes of concurrent
//! transactions that never interleave.

use meridian_tests::{q, q_err, Node, NodeOpts, Reply};
use redis::Value;

#[test]
fn atomic_pipelines_of_the_redis_crate_run_as_transactions() {
    let node = Node::start(NodeOpts::default());
    for mut c in [node.client(), node.client_resp3()] {
        let _: () = q(&mut c, &["DEL", "tx:n", "tx:s"]);
        let (set, n, got, expire, appended): (String, i64, String, i64, i64) = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg("tx:n")
            .arg(1)
            .cmd("INCRBY")
            .arg("tx:n")
            .arg(41)
            .cmd("GET")
            .arg("tx:n")
            .cmd("EXPIRE")
            .arg("tx:n")
            .arg(100)
            .cmd("APPEND")
            .arg("tx:s")
            .arg("abc")
            .query(&mut c)
            .expect("EXEC");
        assert_eq!(
            (set.as_str(), n, got.as_str(), expire, appended),
            ("OK", 42, "42", 1, 3)
        );
        let ttl: i64 = q(&mut c, &["TTL", "tx:n"]);
        assert!((90..=100).contains(&ttl), "TTL {ttl}");
    }
    // GET and MGET read between the transaction's writes.
    let mut raw = node.raw();
    assert_eq!(raw.cmd(&["MULTI"]), Reply::ok());
    for args in [
        &["SET", "tx:m1", "a"][..],
        &["MGET", "tx:m1", "tx:m2"],
        &["SET", "tx:m2", "b"],
        &["MGET", "tx:m1", "tx:m2"],
        &["GET", "tx:m2"],
    ] {
        assert_eq!(raw.cmd(args), Reply::Simple("QUEUED".into()));
    }
    assert_eq!(
        raw.cmd(&["EXEC"]),
        Reply::Array(vec![
            Reply::ok(),
            Reply::Array(vec![Reply::bulk("a"), Reply::NilBulk]),
            Reply::ok(),
            Reply::Array(vec![Reply::bulk("a"), Reply::bulk("b")]),
            Reply::bulk("b"),
        ])
    );
    // A command failing when it runs fails alone; the others are applied (as in Redis).
    assert_eq!(raw.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(raw.cmd(&["INCR", "tx:s"]), Reply::Simple("QUEUED".into()));
    assert_eq!(
        raw.cmd(&["SET", "tx:after", "yes"]),
        Reply::Simple("QUEUED".into())
    );
    assert_eq!(
        raw.cmd(&["EXEC"]),
        Reply::Array(vec![
            Reply::err("ERR value is not an integer or out of range"),
            Reply::ok()
        ])
    );
    assert_eq!(raw.cmd(&["GET", "tx:after"]), Reply::bulk("yes"));
}

/// Reads of named keys and DBSIZE inside MULTI answer from their place among the
/// transaction's writes (replies as redis-server 7.0.15 gives them for the same commands).
#[test]
fn reads_inside_a_transaction_see_the_writes_before_them() {
    let node = Node::start(NodeOpts::default());
    for resp3 in [false, true] {
        let mut c = node.raw();
        if resp3 {
            assert!(c.cmd(&["HELLO", "3"]).as_err().is_none());
        }
        assert_eq!(c.cmd(&["FLUSHDB"]), Reply::ok());
        assert_eq!(c.cmd(&["SET", "a", "1"]), Reply::ok());
        assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
        let queued: &[&[&str]] = &[
            &["TYPE", "a"],
            &["EXISTS", "a", "b", "a"],
            &["SET", "b", "2"],
            &["EXISTS", "a", "b"],
            &["APPEND", "a", "xyz"],
            &["STRLEN", "a"],
            &["GETRANGE", "a", "1", "-1"],
            &["TTL", "a"],
            &["PEXPIREAT", "a", "4102444800000"],
            &["PEXPIRETIME", "a"],
            &["DBSIZE"],
            &["DEL", "a"],
            &["DBSIZE"],
            &["TYPE", "a"],
            &["TTL", "a"],
            &["GETRANGE", "b", "x", "1"],
        ];
        for args in queued {
            assert_eq!(c.cmd(args), Reply::Simple("QUEUED".into()), "{args:?}");
        }
        assert_eq!(
            c.cmd(&["EXEC"]),
            Reply::Array(vec![
                Reply::Simple("string".into()),
                Reply::Int(2),
                Reply::ok(),
                Reply::Int(2),
                Reply::Int(4),
                Reply::Int(4),
                Reply::bulk("xyz"),
                Reply::Int(-1),
                Reply::Int(1),
                Reply::Int(4102444800000),
                Reply::Int(2),
                Reply::Int(1),
                Reply::Int(1),
                Reply::Simple("none".into()),
                Reply::Int(-2),
                Reply::err("ERR value is not an integer or out of range"),
            ])
        );
        // Outside the transaction the same reads agree with it.
        assert_eq!(c.cmd(&["EXISTS", "a", "b"]), Reply::Int(1));
        assert_eq!(c.cmd(&["DBSIZE"]), Reply::Int(1));
        // GETEX with an invalid expiry: nil for a key missing at its place, the error for one
        // there; a transaction of reads with no key runs too.
        assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
        for args in [
            &["SET", "g", "v"][..],
            &["GETEX", "g", "EX", "0"],
            &["DEL", "g"],
            &["GETEX", "g", "EX", "abc"],
            &["OBJECT", "HELP"],
        ] {
            assert_eq!(c.cmd(args), Reply::Simple("QUEUED".into()));
        }
        let Reply::Array(replies) = c.cmd(&["EXEC"]) else {
            panic!("EXEC")
        };
        assert_eq!(
            replies[..4],
            [
                Reply::ok(),
                Reply::err("ERR invalid expire time in 'getex' command"),
                Reply::Int(1),
                if resp3 { Reply::Null } else { Reply::NilBulk },
            ]
        );
        assert!(matches!(&replies[4], Reply::Array(lines) if lines.len() > 5));
    }
}

#[test]
fn refused_commands_discard_the_transaction() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.raw();
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(c.cmd(&["SET", "k", "v"]), Reply::Simple("QUEUED".into()));
    // KEYS, SCAN and RANDOMKEY read the whole keyspace, which a batch does not carry.
    assert!(c
        .cmd(&["KEYS", "*"])
        .as_err()
        .is_some_and(|e| e.starts_with("ERR 'keys' inside MULTI is not supported")));
    assert_eq!(
        c.cmd(&["EXEC"]),
        Reply::err("EXECABORT Transaction discarded because of previous errors.")
    );
    assert!(c.cmd(&["GET", "k"]).is_null(), "nothing of it was applied");
    // As in Redis: unknown commands and wrong arity discard it too; DISCARD drops it.
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert!(c.cmd(&["NOSUCH"]).as_err().is_some());
    assert_eq!(
        c.cmd(&["EXEC"]),
        Reply::err("EXECABORT Transaction discarded because of previous errors.")
    );
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(c.cmd(&["SET", "k", "v"]), Reply::Simple("QUEUED".into()));
    assert_eq!(c.cmd(&["DISCARD"]), Reply::ok());
    assert!(c.cmd(&["GET", "k"]).is_null());
    assert_eq!(c.cmd(&["EXEC"]), Reply::err("ERR EXEC without MULTI"));
    assert_eq!(c.cmd(&["DISCARD"]), Reply::err("ERR DISCARD without MULTI"));
    // EXEC with arguments ends the transaction, as in Redis: nothing queued runs.
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(c.cmd(&["SET", "k", "v"]), Reply::Simple("QUEUED".into()));
    assert_eq!(
        c.cmd(&["EXEC", "x"]),
        Reply::err(
            "EXECABORT Transaction discarded because of: wrong number of arguments for 'exec' command"
        )
    );
    assert!(c.cmd(&["GET", "k"]).is_null(), "not queued, not applied");
    assert_eq!(c.cmd(&["DISCARD"]), Reply::err("ERR DISCARD without MULTI"));
    // Outside MULTI too, as Redis 7.0 (every refused EXEC is an EXECABORT).
    assert_eq!(
        c.cmd(&["EXEC", "x"]),
        Reply::err(
            "EXECABORT Transaction discarded because of: wrong number of arguments for 'exec' command"
        )
    );
    // MONITOR inside a transaction fails when it runs, as in Redis 7.0.
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(c.cmd(&["MONITOR"]), Reply::Simple("QUEUED".into()));
    assert_eq!(
        c.cmd(&["EXEC"]),
        Reply::Array(vec![Reply::err(
            "ERR MONITOR isn't allowed for DENY BLOCKING client"
        )])
    );
    assert_eq!(c.cmd(&["PING"]), Reply::Simple("PONG".into()));
    let mut r = node.client();
    assert_eq!(
        q_err(&mut r, &["WATCH"]),
        "ERR wrong number of arguments for 'watch' command"
    );
}

/// WATCH: EXEC answers nil, and applies nothing, when another client changed a watched key,
/// created it, or it expired; otherwise the transaction runs.
#[test]
fn watch_aborts_exec_when_a_watched_key_changed() {
    let node = Node::start(NodeOpts::default());
    let mut me = node.raw();
    let mut other = node.client();
    let exec_incr = |me: &mut meridian_tests::RawConn| {
        assert_eq!(me.cmd(&["MULTI"]), Reply::ok());
        assert_eq!(me.cmd(&["INCR", "w"]), Reply::Simple("QUEUED".into()));
        me.cmd(&["EXEC"])
    };
    let _: () = q(&mut other, &["SET", "w", "1"]);
    // Unchanged: runs.
    assert_eq!(me.cmd(&["WATCH", "w", "other"]), Reply::ok());
    assert_eq!(exec_incr(&mut me), Reply::Array(vec![Reply::Int(2)]));
    // Changed by another client (to the same value: every write counts): aborted.
    assert_eq!(me.cmd(&["WATCH", "w"]), Reply::ok());
    let _: () = q(&mut other, &["SET", "w", "2"]);
    assert_eq!(exec_incr(&mut me), Reply::NilArray);
    assert_eq!(me.cmd(&["GET", "w"]), Reply::bulk("2"));
    // Created after WATCH saw it missing: aborted.
    assert_eq!(me.cmd(&["WATCH", "fresh"]), Reply::ok());
    let _: () = q(&mut other, &["SET", "fresh", "x"]);
    assert_eq!(me.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(me.cmd(&["DEL", "fresh"]), Reply::Simple("QUEUED".into()));
    assert_eq!(me.cmd(&["EXEC"]), Reply::NilArray);
    assert_eq!(me.cmd(&["GET", "fresh"]), Reply::bulk("x"));
    // Expired since WATCH: aborted, as in Redis.
    let _: () = q(&mut other, &["SET", "w", "7", "PX", "100"]);
    assert_eq!(me.cmd(&["WATCH", "w"]), Reply::ok());
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(exec_incr(&mut me), Reply::NilArray);
    // An aborted transaction runs none of its commands, connection commands included.
    assert_eq!(me.cmd(&["WATCH", "w"]), Reply::ok());
    let _: () = q(&mut other, &["SET", "w", "8"]);
    assert_eq!(me.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(
        me.cmd(&["CLIENT", "SETNAME", "aborted"]),
        Reply::Simple("QUEUED".into())
    );
    assert_eq!(me.cmd(&["SELECT", "3"]), Reply::Simple("QUEUED".into()));
    assert_eq!(me.cmd(&["SET", "w", "9"]), Reply::Simple("QUEUED".into()));
    assert_eq!(me.cmd(&["EXEC"]), Reply::NilArray);
    assert!(me.cmd(&["CLIENT", "GETNAME"]).is_null());
    assert_eq!(me.cmd(&["GET", "w"]), Reply::bulk("8"), "still in db 0");
    let _: () = q(&mut other, &["DEL", "w"]);
    // EXEC forgets the watches: the next transaction runs.
    assert_eq!(exec_incr(&mut me), Reply::Array(vec![Reply::Int(1)]));
}

/// WATCH of a missing key: a key created and removed again before EXEC aborts the transaction,
/// as in Redis (the key reads "missing" both times), whoever wrote it and however it went
/// away; a key that was already expired when watched and is then removed by expiry does not
/// (Redis 7.0), nor does churn of other keys.
#[test]
fn watch_of_a_missing_key_sees_it_created_and_removed_again() {
    let node = Node::start(NodeOpts::default());
    // The leader starts the churn epoch the counters compare in, a moment after it leads.
    meridian_tests::eventually(std::time::Duration::from_secs(10), "a churn epoch", || {
        let epoch = meridian_tests::raft_status(node.port())?.number("churn_epoch");
        anyhow::ensure!(epoch.is_some_and(|e| e > 0), "churn_epoch {epoch:?}");
        Ok(())
    });
    let mut me = node.raw();
    let mut other = node.client();
    let exec_ping = |me: &mut meridian_tests::RawConn| {
        assert_eq!(me.cmd(&["MULTI"]), Reply::ok());
        assert_eq!(me.cmd(&["PING"]), Reply::Simple("QUEUED".into()));
        me.cmd(&["EXEC"])
    };
    let ran = Reply::Array(vec![Reply::Simple("PONG".into())]);
    let churns: [&[&[&str]]; 4] = [
        &[&["SET", "k", "v"], &["DEL", "k"]],
        &[&["SET", "k", "v"], &["GETDEL", "k"]],
        &[&["SET", "k", "v"], &["RENAME", "k", "elsewhere"]],
        &[&["SET", "k", "v", "PXAT", "1"]],
    ];
    for writes in churns {
        assert_eq!(me.cmd(&["WATCH", "k"]), Reply::ok());
        for w in writes {
            let _: redis::Value = q(&mut other, w);
        }
        assert_eq!(exec_ping(&mut me), Reply::NilArray, "after {writes:?}");
    }
    // The watching client's own create-and-delete counts too (as in Redis).
    assert_eq!(me.cmd(&["WATCH", "k"]), Reply::ok());
    assert_eq!(me.cmd(&["SET", "k", "mine"]), Reply::ok());
    assert_eq!(me.cmd(&["DEL", "k"]), Reply::Int(1));
    assert_eq!(exec_ping(&mut me), Reply::NilArray);
    // Untouched, or only other keys created and removed: runs.
    assert_eq!(me.cmd(&["WATCH", "k"]), Reply::ok());
    assert_eq!(exec_ping(&mut me), ran);
    assert_eq!(me.cmd(&["WATCH", "k"]), Reply::ok());
    let _: () = q(&mut other, &["SET", "unrelated", "v"]);
    let _: i64 = q(&mut other, &["DEL", "unrelated"]);
    assert_eq!(exec_ping(&mut me), ran);
    // Keys the churn slot's plain FNV-1a put together (`k5` in database 9, `k17` in
    // database 8): apart in the mixed-hash epoch a node starts (Redis runs it too).
    assert_eq!(me.cmd(&["SELECT", "9"]), Reply::ok());
    assert_eq!(me.cmd(&["WATCH", "k5"]), Reply::ok());
    let _: () = q(&mut other, &["SELECT", "8"]);
    let _: () = q(&mut other, &["SET", "k17", "x"]);
    assert_eq!(
        exec_ping(&mut me),
        ran,
        "k17 in db 8 shares no slot with k5 in db 9"
    );
    let _: () = q(&mut other, &["SELECT", "0"]);
    assert_eq!(me.cmd(&["SELECT", "0"]), Reply::ok());
    // Expired when watched, then removed by active expiry: no change, as in Redis 7.0.
    let _: i64 = q(&mut other, &["DEL", "elsewhere"]);
    let _: () = q(&mut other, &["SET", "gone", "v", "PX", "30"]);
    std::thread::sleep(std::time::Duration::from_millis(60));
    assert_eq!(me.cmd(&["WATCH", "gone"]), Reply::ok());
    meridian_tests::eventually(
        std::time::Duration::from_secs(5),
        "expiry removes it",
        || {
            let n: i64 = q(&mut other, &["DBSIZE"]);
            anyhow::ensure!(n == 0, "{n} keys left");
            Ok(())
        },
    );
    assert_eq!(exec_ping(&mut me), ran);
}

/// Two clients append a pair of tokens per transaction, many times at once: every pair stays
/// together in the final string (the writes of one EXEC are one batch).
#[test]
fn writes_of_concurrent_transactions_never_interleave() {
    let node = Node::start(NodeOpts::default());
    const ROUNDS: usize = 200;
    let workers: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|who| {
            let mut c = node.client();
            std::thread::spawn(move || {
                for _ in 0..ROUNDS {
                    let _: Vec<Value> = redis::pipe()
                        .atomic()
                        .cmd("APPEND")
                        .arg("tx:log")
                        .arg(format!("{who}1"))
                        .cmd("APPEND")
                        .arg("tx:log")
                        .arg(format!("{who}2"))
                        .query(&mut c)
                        .expect("EXEC");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    let mut c = node.client();
    let log: String = q(&mut c, &["GET", "tx:log"]);
    assert_eq!(log.len(), 3 * ROUNDS * 4);
    let tokens: Vec<&str> = (0..log.len() / 2).map(|i| &log[2 * i..2 * i + 2]).collect();
    for pair in tokens.chunks(2) {
        let who = &pair[0][..1];
        assert_eq!(
            pair,
            [format!("{who}1").as_str(), format!("{who}2").as_str()],
            "interleaved: {log}"
        );
    }
}

#[test]
fn a_transaction_is_bounded_and_waits_for_client_pause() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.raw();
    // Its writes become one Raft entry: at most 32 MB of queued arguments.
    let big = "x".repeat(20 << 20);
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(
        c.cmd(&["SET", "big1", &big]),
        Reply::Simple("QUEUED".into())
    );
    assert!(c
        .cmd(&["SET", "big2", &big])
        .as_err()
        .is_some_and(|e| e.contains("transaction too large")));
    assert_eq!(
        c.cmd(&["EXEC"]),
        Reply::err("EXECABORT Transaction discarded because of previous errors.")
    );
    assert!(c.cmd(&["GET", "big1"]).is_null());
    // Under CLIENT PAUSE ALL even a transaction of reads waits for the end.
    let mut admin = node.raw();
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(c.cmd(&["GET", "k"]), Reply::Simple("QUEUED".into()));
    assert_eq!(admin.cmd(&["CLIENT", "PAUSE", "600"]), Reply::ok());
    let t = std::time::Instant::now();
    assert_eq!(c.cmd(&["EXEC"]), Reply::Array(vec![Reply::NilBulk]));
    assert!(
        t.elapsed() >= std::time::Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    // RESET switches replies back on, and ends a transaction.
    c.send(&meridian_tests::encode_command(&["CLIENT", "REPLY", "OFF"]));
    assert_eq!(c.cmd(&["RESET"]), Reply::Simple("RESET".into()));
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(c.cmd(&["RESET"]), Reply::Simple("RESET".into()));
    assert_eq!(c.cmd(&["EXEC"]), Reply::err("ERR EXEC without MULTI"));
}

/// A container command with an unknown subcommand or the wrong number of arguments is refused
/// when queued, and EXEC then discards the transaction (as Redis 7.0, compared side by side);
/// outside MULTI the same errors come before the command runs.
#[test]
fn bad_subcommands_are_refused_when_queued() {
    let node = Node::start(NodeOpts::default());
    let mut raw = node.raw();
    assert_eq!(raw.cmd(&["MULTI"]), Reply::ok());
    for (args, err) in [
        (
            &["CLIENT", "FOO"][..],
            "ERR unknown subcommand 'FOO'. Try CLIENT HELP.",
        ),
        (
            &["CLIENT", "SETNAME"],
            "ERR wrong number of arguments for 'client|setname' command",
        ),
        (
            &["CONFIG", "GET"],
            "ERR wrong number of arguments for 'config|get' command",
        ),
        (
            &["SLOWLOG", "LEN", "x"],
            "ERR wrong number of arguments for 'slowlog|len' command",
        ),
    ] {
        assert_eq!(raw.cmd(args), Reply::Error(err.into()), "{args:?}");
    }
    assert_eq!(raw.cmd(&["CLIENT", "ID"]), Reply::Simple("QUEUED".into()));
    assert_eq!(
        raw.cmd(&["EXEC"]),
        Reply::Error("EXECABORT Transaction discarded because of previous errors.".into())
    );
    assert_eq!(
        raw.cmd(&["OBJECT", "HELP", "x"]),
        Reply::Error("ERR wrong number of arguments for 'object|help' command".into())
    );
    assert!(matches!(raw.cmd(&["COMMAND", "COUNT"]), Reply::Int(_)));
}

//! Pub/Sub on one node: the `redis` crate's subscriber API (RESP2), RESP3 pushes, the RESP2
//! subscribed mode, PUBSUB introspection, and the bound on a subscriber that stops reading.
//! (Delivery between the nodes of a region is in `cluster.rs`.)

use std::time::Duration;

use meridian_tests::{encode_command, q, Node, NodeOpts, Reply};

fn push(items: &[&str]) -> Reply {
    Reply::Push(items.iter().map(Reply::bulk).collect())
}

#[test]
fn subscribers_get_channel_and_pattern_messages() {
    let node = Node::start(NodeOpts::default());
    let mut sub_conn = node.client();
    let mut publisher = node.client();
    let mut sub = sub_conn.as_pubsub();
    sub.subscribe("news").unwrap();
    sub.psubscribe("sport.*").unwrap();
    sub.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(q::<i64>(&mut publisher, &["PUBLISH", "news", "hello"]), 1);
    assert_eq!(
        q::<i64>(&mut publisher, &["PUBLISH", "sport.ski", "snow"]),
        1
    );
    assert_eq!(q::<i64>(&mut publisher, &["PUBLISH", "weather", "rain"]), 0);
    let m = sub.get_message().unwrap();
    assert_eq!(
        (
            m.get_channel_name(),
            m.get_payload::<String>().unwrap().as_str()
        ),
        ("news", "hello")
    );
    let m = sub.get_message().unwrap();
    assert_eq!(m.get_pattern::<String>().unwrap(), "sport.*");
    assert_eq!(
        (
            m.get_channel_name(),
            m.get_payload::<String>().unwrap().as_str()
        ),
        ("sport.ski", "snow")
    );
    let channels: Vec<String> = q(&mut publisher, &["PUBSUB", "CHANNELS"]);
    assert_eq!(channels, ["news"]);
    let numsub: Vec<redis::Value> = q(&mut publisher, &["PUBSUB", "NUMSUB", "news", "none"]);
    assert_eq!(numsub.len(), 4);
    assert_eq!(q::<i64>(&mut publisher, &["PUBSUB", "NUMPAT"]), 1);
    sub.unsubscribe("news").unwrap();
    sub.punsubscribe("sport.*").unwrap();
    assert_eq!(q::<i64>(&mut publisher, &["PUBLISH", "news", "late"]), 0);
}

/// Replies as redis-server 7.0.15 gives them: RESP3 pushes (a connection's own PUBLISH included,
/// its message before its count), and in RESP2 the subscribed mode.
#[test]
fn resp3_pushes_and_the_resp2_subscribed_mode() {
    let node = Node::start(NodeOpts::default());
    let mut c3 = node.raw();
    assert!(c3.cmd(&["HELLO", "3"]).as_err().is_none());
    assert_eq!(
        c3.cmd(&["SUBSCRIBE", "me"]),
        Reply::Push(vec![
            Reply::bulk("subscribe"),
            Reply::bulk("me"),
            Reply::Int(1),
        ])
    );
    assert_eq!(
        c3.cmd(&["SET", "k", "v"]),
        Reply::ok(),
        "RESP3 runs any command"
    );
    assert_eq!(
        c3.cmd(&["PUBLISH", "me", "self"]),
        push(&["message", "me", "self"])
    );
    assert_eq!(c3.read_reply(), Reply::Int(1));
    // A keyspace event of the connection's own write comes before the write's reply, as the
    // message of its own PUBLISH does.
    assert_eq!(
        c3.cmd(&["CONFIG", "SET", "notify-keyspace-events", "E$"]),
        Reply::ok()
    );
    assert!(c3
        .cmd(&["SUBSCRIBE", "__keyevent@0__:set"])
        .as_err()
        .is_none());
    for round in 0..20 {
        assert_eq!(
            c3.cmd(&["SET", "z", &round.to_string()]),
            push(&["message", "__keyevent@0__:set", "z"]),
            "round {round}"
        );
        assert_eq!(c3.read_reply(), Reply::ok());
    }
    assert_eq!(
        c3.cmd(&["CONFIG", "SET", "notify-keyspace-events", ""]),
        Reply::ok()
    );
    assert!(c3
        .cmd(&["UNSUBSCRIBE", "__keyevent@0__:set"])
        .as_err()
        .is_none());
    let mut c2 = node.raw();
    assert_eq!(
        c2.cmd(&["PSUBSCRIBE", "m*"]),
        Reply::Array(vec![
            Reply::bulk("psubscribe"),
            Reply::bulk("m*"),
            Reply::Int(1),
        ])
    );
    assert_eq!(
        c2.cmd(&["GET", "k"]),
        Reply::err("ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context")
    );
    assert_eq!(
        c2.cmd(&["PING"]),
        Reply::Array(vec![Reply::bulk("pong"), Reply::bulk("")])
    );
    assert_eq!(
        c3.cmd(&["PUBLISH", "me", "both"]),
        push(&["message", "me", "both"])
    );
    assert_eq!(c3.read_reply(), Reply::Int(2));
    assert_eq!(
        c2.read_reply(),
        Reply::Array(vec![
            Reply::bulk("pmessage"),
            Reply::bulk("m*"),
            Reply::bulk("me"),
            Reply::bulk("both")
        ])
    );
    assert_eq!(
        c2.cmd(&["PUNSUBSCRIBE"]),
        Reply::Array(vec![
            Reply::bulk("punsubscribe"),
            Reply::bulk("m*"),
            Reply::Int(0),
        ])
    );
    assert_eq!(
        c2.cmd(&["GET", "k"]),
        Reply::bulk("v"),
        "out of the subscribed mode"
    );
    assert_eq!(c3.cmd(&["RESET"]), Reply::Simple("RESET".into()));
    assert_eq!(c2.cmd(&["PUBLISH", "me", "gone"]), Reply::Int(0));
    assert_eq!(c2.cmd(&["MULTI"]), Reply::ok());
    assert!(c2
        .cmd(&["SUBSCRIBE", "x"])
        .as_err()
        .is_some_and(|e| e.contains("inside MULTI")));
}

/// A subscriber that stops reading is disconnected once its bounded queue is full, instead of
/// the node buffering its messages without limit; everyone else carries on.
#[test]
fn a_subscriber_that_stops_reading_is_disconnected() {
    let node = Node::start(NodeOpts::default());
    let mut idle = node.raw();
    assert!(matches!(idle.cmd(&["SUBSCRIBE", "flood"]), Reply::Array(_)));
    let mut publisher = node.raw();
    let payload = "x".repeat(1024);
    let batch: Vec<u8> = (0..1000)
        .flat_map(|_| encode_command(&["PUBLISH", "flood", payload.as_str()]))
        .collect();
    let mut dropped = false;
    for _ in 0..100 {
        publisher.send(&batch);
        for _ in 0..1000 {
            publisher.read_reply();
        }
        let info: String = q(&mut node.client(), &["INFO", "stats"]);
        if info.contains("pubsub_clients_dropped:1") {
            dropped = true;
            break;
        }
    }
    assert!(dropped, "the idle subscriber was never disconnected");
    meridian_tests::eventually(Duration::from_secs(10), "the subscriber is gone", || {
        let list: String = q(&mut node.client(), &["CLIENT", "LIST"]);
        anyhow::ensure!(!list.contains("flags=P"), "still listed: {list}");
        Ok(())
    });
    assert_eq!(publisher.cmd(&["PUBLISH", "flood", "x"]), Reply::Int(0));
    assert_eq!(publisher.cmd(&["PING"]), Reply::Simple("PONG".into()));
}

/// Keyspace notifications (`notify-keyspace-events`): the events of Redis 7.0 on the
/// `__keyspace@<db>__` and `__keyevent@<db>__` channels, expiry included.
#[test]
fn keyspace_notifications() {
    let node =
        Node::start(NodeOpts::default().config_toml("[server]\nnotify-keyspace-events = \"Eg\"\n"));
    let mut c = node.client();
    assert_eq!(
        q::<Vec<String>>(&mut c, &["CONFIG", "GET", "notify-keyspace-events"]),
        ["notify-keyspace-events", "gE"]
    );
    let _: () = q(&mut c, &["CONFIG", "SET", "notify-keyspace-events", "KEA"]);
    let mut sub_conn = node.client();
    let mut sub = sub_conn.as_pubsub();
    sub.psubscribe("__key*@0__:*").unwrap();
    sub.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _: () = q(&mut c, &["SET", "k", "v", "EX", "100"]);
    let _: i64 = q(&mut c, &["DEL", "k", "missing"]);
    let _: () = q(&mut c, &["SET", "short", "v", "PX", "100"]);
    let mut got = Vec::new();
    while got.len() < 12 {
        let m = sub.get_message().expect("a notification");
        got.push(format!(
            "{} {}",
            m.get_channel_name(),
            m.get_payload::<String>().unwrap()
        ));
    }
    assert_eq!(
        got,
        [
            "__keyspace@0__:k set",
            "__keyevent@0__:set k",
            "__keyspace@0__:k expire",
            "__keyevent@0__:expire k",
            "__keyspace@0__:k del",
            "__keyevent@0__:del k",
            "__keyspace@0__:short set",
            "__keyevent@0__:set short",
            "__keyspace@0__:short expire",
            "__keyevent@0__:expire short",
            "__keyspace@0__:short expired",
            "__keyevent@0__:expired short",
        ]
    );
    let mut raw = node.raw();
    assert_eq!(
        raw.cmd(&["CONFIG", "SET", "notify-keyspace-events", "Q"]),
        Reply::err("ERR CONFIG SET failed (possibly related to argument 'notify-keyspace-events') - Invalid event class character. Use 'Ag$lshzxeKEtmdn'.")
    );
}

/// MONITOR: a line per command another connection runs, as redis-server 7.0.15 writes it
/// (time, database after the command, address, quoted arguments, credentials redacted);
/// a transaction WATCH aborts shows only MULTI and EXEC; RESET ends it.
#[test]
fn monitor_shows_the_commands_of_other_connections() {
    let node = Node::start(NodeOpts::default());
    let mut monitor = node.raw();
    assert_eq!(monitor.cmd(&["MONITOR"]), Reply::ok());
    let mut c = node.raw();
    assert_eq!(c.cmd(&["SET", "a b", "x\"y\n"]), Reply::ok());
    assert!(c.cmd(&["AUTH", "secret"]).as_err().is_some());
    // Admin commands are not shown (CONFIG SET requirepass would give the password away).
    assert_eq!(
        c.cmd(&["CONFIG", "SET", "notify-keyspace-events", ""]),
        Reply::ok()
    );
    assert_eq!(c.cmd(&["SELECT", "3"]), Reply::ok());
    let port = node.port();
    let mut lines = Vec::new();
    for _ in 0..3 {
        let Reply::Simple(line) = monitor.read_reply() else {
            panic!("a MONITOR line")
        };
        let (time, rest) = line.split_once(' ').expect("time first");
        let (secs, micros) = time.split_once('.').expect("seconds.micros");
        assert!(secs.parse::<u64>().is_ok() && micros.len() == 6, "{line}");
        let rest = rest.replace(&format!(":{port}"), ":PORT");
        lines.push(
            rest.split_once(']')
                .map(|(who, cmd)| (who.to_string(), cmd.to_string()))
                .unwrap(),
        );
    }
    assert_eq!(lines[0].1, r#" "SET" "a b" "x\"y\n""#);
    assert_eq!(lines[1].1, r#" "AUTH" "(redacted)""#);
    assert_eq!(lines[2].1, r#" "SELECT" "3""#);
    assert!(
        lines[0].0.starts_with("[0 127.0.0.1:") && lines[2].0.starts_with("[3 "),
        "{lines:?}"
    );
    // A transaction WATCH aborts shows MULTI and EXEC only: its commands did not run.
    let mut other = node.raw();
    assert_eq!(other.cmd(&["SELECT", "3"]), Reply::ok());
    assert_eq!(c.cmd(&["WATCH", "w"]), Reply::ok());
    assert_eq!(other.cmd(&["SET", "w", "1"]), Reply::ok());
    assert_eq!(c.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(c.cmd(&["SET", "q", "1"]), Reply::Simple("QUEUED".into()));
    assert_eq!(c.cmd(&["EXEC"]), Reply::NilArray);
    let mut commands = Vec::new();
    for _ in 0..5 {
        let Reply::Simple(line) = monitor.read_reply() else {
            panic!("a MONITOR line")
        };
        commands.push(line.split_once(']').unwrap().1.to_string());
    }
    assert_eq!(
        commands,
        [
            r#" "SELECT" "3""#,
            r#" "WATCH" "w""#,
            r#" "SET" "w" "1""#,
            r#" "MULTI""#,
            r#" "EXEC""#
        ]
    );
    assert_eq!(monitor.cmd(&["RESET"]), Reply::Simple("RESET".into()));
    assert_eq!(c.cmd(&["PING"]), Reply::Simple("PONG".into()));
    assert!(
        monitor.try_read_reply(Duration::from_millis(300)).is_err(),
        "no line after RESET"
    );
}

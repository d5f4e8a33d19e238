//! Client-side caching (CLIENT TRACKING): invalidations for the keys a client read, BCAST by
//! prefix, OPTIN, REDIRECT (to a RESP2 subscriber, a RESP3 client, a closed one), flushes, the table's bound, and a region whose
//! nodes each tell their own clients. Replies were compared with redis-server 7.0.15.

use std::time::Duration;

use meridian_tests::{Node, NodeOpts, Reply};

fn invalidate(keys: &[&str]) -> Reply {
    Reply::Push(vec![
        Reply::bulk("invalidate"),
        Reply::Array(keys.iter().map(Reply::bulk).collect()),
    ])
}

/// The next push within a second, or `None`.
fn next_push(c: &mut meridian_tests::RawConn) -> Option<Reply> {
    c.try_read_reply(Duration::from_secs(1)).ok().flatten()
}

#[test]
fn default_mode_optin_bcast_and_flush() {
    let node = Node::start(NodeOpts::default());
    let mut t = node.raw();
    let mut w = node.raw();
    assert!(matches!(t.cmd(&["HELLO", "3"]), Reply::Map(_)));
    assert_eq!(t.cmd(&["CLIENT", "GETREDIR"]), Reply::Int(-1));
    assert_eq!(t.cmd(&["CLIENT", "TRACKING", "on"]), Reply::ok());
    assert_eq!(t.cmd(&["CLIENT", "GETREDIR"]), Reply::Int(0));
    let Reply::Verbatim(_, line) = t.cmd(&["CLIENT", "INFO"]) else {
        panic!("CLIENT INFO text")
    };
    let line = String::from_utf8(line).unwrap();
    assert!(
        line.contains(" flags=t ") && line.contains(" redir=0 "),
        "{line}"
    );
    // Keys it read are told once when they change; keys it did not read are not.
    assert_eq!(w.cmd(&["SET", "a", "1"]), Reply::ok());
    assert_eq!(t.cmd(&["GET", "a"]), Reply::bulk("1"));
    assert!(matches!(t.cmd(&["MGET", "b", "c"]), Reply::Array(_)));
    assert_eq!(
        w.cmd(&["MSET", "a", "2", "c", "3", "other", "4"]),
        Reply::ok()
    );
    assert_eq!(next_push(&mut t), Some(invalidate(&["a"])));
    assert_eq!(next_push(&mut t), Some(invalidate(&["c"])));
    assert_eq!(w.cmd(&["SET", "a", "3"]), Reply::ok());
    assert_eq!(
        t.cmd(&["PING"]),
        Reply::Simple("PONG".into()),
        "no second invalidation"
    );
    // Expiry and DEL tell too; a flush tells everything with a nil.
    assert_eq!(t.cmd(&["GET", "a"]), Reply::bulk("3"));
    assert_eq!(w.cmd(&["PEXPIRE", "a", "50"]), Reply::Int(1));
    assert_eq!(next_push(&mut t), Some(invalidate(&["a"])));
    assert_eq!(t.cmd(&["GET", "b"]), Reply::Null);
    assert_eq!(w.cmd(&["FLUSHALL"]), Reply::ok());
    assert_eq!(
        next_push(&mut t),
        Some(Reply::Push(vec![Reply::bulk("invalidate"), Reply::Null]))
    );
    // OPTIN: only the read after CLIENT CACHING YES is tracked.
    assert_eq!(t.cmd(&["CLIENT", "TRACKING", "off"]), Reply::ok());
    assert_eq!(t.cmd(&["CLIENT", "TRACKING", "on", "OPTIN"]), Reply::ok());
    assert_eq!(t.cmd(&["GET", "o1"]), Reply::Null);
    assert_eq!(t.cmd(&["CLIENT", "CACHING", "yes"]), Reply::ok());
    assert_eq!(t.cmd(&["GET", "o2"]), Reply::Null);
    assert_eq!(t.cmd(&["GET", "o3"]), Reply::Null);
    assert_eq!(
        w.cmd(&["MSET", "o1", "1", "o2", "2", "o3", "3"]),
        Reply::ok()
    );
    assert_eq!(next_push(&mut t), Some(invalidate(&["o2"])));
    assert_eq!(t.cmd(&["PING"]), Reply::Simple("PONG".into()));
    // BCAST: every change under a prefix, one message per prefix.
    assert_eq!(t.cmd(&["CLIENT", "TRACKING", "off"]), Reply::ok());
    assert_eq!(
        t.cmd(&["CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "u:", "PREFIX", "v:"]),
        Reply::ok()
    );
    assert_eq!(
        t.cmd(&["CLIENT", "TRACKING", "on", "BCAST", "PREFIX", "u:x"]),
        Reply::Error(
            "ERR Prefix 'u:x' overlaps with an existing prefix 'u:'. Prefixes for a single client must not overlap."
                .into()
        )
    );
    assert_eq!(
        w.cmd(&["MSET", "u:1", "1", "x", "2", "v:9", "3", "u:2", "4"]),
        Reply::ok()
    );
    assert_eq!(next_push(&mut t), Some(invalidate(&["u:1", "u:2"])));
    assert_eq!(next_push(&mut t), Some(invalidate(&["v:9"])));
    let Reply::Map(info) = t.cmd(&["CLIENT", "TRACKINGINFO"]) else {
        panic!("a map")
    };
    assert_eq!(
        info[0].1,
        Reply::Set(vec![Reply::bulk("on"), Reply::bulk("bcast")])
    );
    assert_eq!(
        info[2].1,
        Reply::Array(vec![Reply::bulk("u:"), Reply::bulk("v:")])
    );
    for (args, err) in [
        (
            &["CLIENT", "TRACKING", "on", "BCAST", "OPTIN"][..],
            "ERR OPTIN and OPTOUT are not compatible with BCAST",
        ),
        (&["CLIENT", "TRACKING", "maybe"], "ERR syntax error"),
        (
            &["CLIENT", "TRACKING", "on", "REDIRECT", "999999"],
            "ERR The client ID you want redirect to does not exist",
        ),
        (
            &["CLIENT", "CACHING", "yes"],
            "ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode.",
        ),
    ] {
        assert_eq!(t.cmd(args), Reply::Error(err.into()), "{args:?}");
    }
    assert_eq!(t.cmd(&["RESET"]), Reply::Simple("RESET".into()));
    assert_eq!(
        t.cmd(&["CLIENT", "GETREDIR"]),
        Reply::Int(-1),
        "RESET ends tracking"
    );
}

#[test]
fn redirect_to_a_resp2_subscriber_and_the_table_bound() {
    let node = Node::start(NodeOpts::default());
    let mut r = node.raw();
    let Reply::Int(rid) = r.cmd(&["CLIENT", "ID"]) else {
        panic!("an id")
    };
    assert!(matches!(
        r.cmd(&["SUBSCRIBE", "__redis__:invalidate"]),
        Reply::Array(_)
    ));
    let mut t = node.raw();
    let rid = rid.to_string();
    assert_eq!(
        t.cmd(&["CLIENT", "TRACKING", "on", "REDIRECT", &rid]),
        Reply::ok()
    );
    assert_eq!(
        t.cmd(&["CLIENT", "GETREDIR"]),
        Reply::Int(rid.parse().unwrap())
    );
    assert_eq!(t.cmd(&["GET", "k"]), Reply::NilBulk);
    let mut w = node.raw();
    assert_eq!(w.cmd(&["SET", "k", "1"]), Reply::ok());
    assert_eq!(
        next_push(&mut r),
        Some(Reply::Array(vec![
            Reply::bulk("message"),
            Reply::bulk("__redis__:invalidate"),
            Reply::Array(vec![Reply::bulk("k")]),
        ]))
    );
    // At most tracking-table-max-keys keys: reading past it invalidates some to make room.
    assert_eq!(
        w.cmd(&["CONFIG", "SET", "tracking-table-max-keys", "2"]),
        Reply::ok()
    );
    assert!(matches!(t.cmd(&["MGET", "a", "b", "c"]), Reply::Array(_)));
    assert!(
        matches!(next_push(&mut r), Some(Reply::Array(_))),
        "one evicted"
    );
    let Reply::Bulk(info) = w.cmd(&["INFO", "stats"]) else {
        panic!("INFO text")
    };
    let info = String::from_utf8(info).unwrap();
    assert!(info.contains("tracking_total_keys:2"), "{info}");
}

/// REDIRECT as Redis does it: a RESP3 target is pushed to without subscribing, a RESP2 one in
/// the subscribed mode (to any channel) gets messages on `__redis__:invalidate`, and once the
/// target closed a RESP3 tracking client is told `tracking-redir-broken` and TRACKINGINFO says
/// `broken_redirect` until tracking is turned on again.
#[test]
fn redirect_to_a_resp3_client_a_resp2_subscriber_and_a_closed_one() {
    let node = Node::start(NodeOpts::default());
    let id = |c: &mut meridian_tests::RawConn| match c.cmd(&["CLIENT", "ID"]) {
        Reply::Int(id) => id.to_string(),
        other => panic!("an id, got {other:?}"),
    };
    let mut w = node.raw();
    // A RESP3 target that never subscribed.
    let mut target3 = node.raw();
    assert!(matches!(target3.cmd(&["HELLO", "3"]), Reply::Map(_)));
    let mut t = node.raw();
    let to = id(&mut target3);
    assert_eq!(
        t.cmd(&["CLIENT", "TRACKING", "on", "REDIRECT", &to]),
        Reply::ok()
    );
    assert_eq!(t.cmd(&["GET", "k1"]), Reply::NilBulk);
    assert_eq!(w.cmd(&["SET", "k1", "v"]), Reply::ok());
    assert_eq!(next_push(&mut target3), Some(invalidate(&["k1"])));
    // A RESP2 target subscribed to another channel.
    let mut target2 = node.raw();
    let to2 = id(&mut target2);
    assert!(matches!(
        target2.cmd(&["SUBSCRIBE", "other"]),
        Reply::Array(_)
    ));
    let mut t2 = node.raw();
    assert_eq!(
        t2.cmd(&["CLIENT", "TRACKING", "on", "REDIRECT", &to2]),
        Reply::ok()
    );
    assert_eq!(t2.cmd(&["GET", "k2"]), Reply::NilBulk);
    assert_eq!(w.cmd(&["SET", "k2", "v"]), Reply::ok());
    assert_eq!(
        next_push(&mut target2),
        Some(Reply::Array(vec![
            Reply::bulk("message"),
            Reply::bulk("__redis__:invalidate"),
            Reply::Array(vec![Reply::bulk("k2")]),
        ]))
    );
    // A target that closed: the RESP3 tracking client is told, each time.
    let mut gone = node.raw();
    let gone_id = id(&mut gone);
    let mut t3 = node.raw();
    assert!(matches!(t3.cmd(&["HELLO", "3"]), Reply::Map(_)));
    assert_eq!(
        t3.cmd(&["CLIENT", "TRACKING", "on", "REDIRECT", &gone_id]),
        Reply::ok()
    );
    assert_eq!(t3.cmd(&["GET", "k3"]), Reply::Null);
    drop(gone);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while matches!(w.cmd(&["CLIENT", "LIST", "ID", &gone_id]), Reply::Bulk(ref b) if !b.is_empty())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the closed client leaves CLIENT LIST"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(w.cmd(&["SET", "k3", "v"]), Reply::ok());
    assert_eq!(
        next_push(&mut t3),
        Some(Reply::Push(vec![
            Reply::bulk("tracking-redir-broken"),
            Reply::Int(gone_id.parse().unwrap()),
        ]))
    );
    let broken = |c: &mut meridian_tests::RawConn| {
        format!("{:?}", c.cmd(&["CLIENT", "TRACKINGINFO"])).contains("broken_redirect")
    };
    assert!(broken(&mut t3));
    assert_eq!(
        t3.cmd(&["CLIENT", "TRACKING", "on", "REDIRECT", &to]),
        Reply::ok()
    );
    assert!(!broken(&mut t3), "turning tracking on again clears it");
}

/// Each node tells its own tracking clients about the batches it applies: a client on a
/// follower learns of a write made through the leader.
#[test]
fn a_follower_tells_its_clients_of_writes_through_the_leader() {
    let cluster = meridian_tests::Cluster::start(meridian_tests::ClusterSpec::region(3));
    let leader = cluster.leader(Duration::from_secs(20));
    let follower = (leader + 1) % 3;
    let mut t = cluster.nodes()[follower].raw();
    assert!(matches!(t.cmd(&["HELLO", "3"]), Reply::Map(_)));
    assert_eq!(t.cmd(&["CLIENT", "TRACKING", "on"]), Reply::ok());
    assert_eq!(t.cmd(&["GET", "shared"]), Reply::Null);
    let mut w = cluster.nodes()[leader].raw();
    assert_eq!(w.cmd(&["SET", "shared", "1"]), Reply::ok());
    assert_eq!(next_push(&mut t), Some(invalidate(&["shared"])));
    assert_eq!(t.cmd(&["GET", "shared"]), Reply::bulk("1"));
}

/// A tracking client that keeps what it reads until told otherwise holds no stale value once
/// writes stop: reads race a writer on another connection for two seconds (an invalidation
/// must never arrive before the reply carrying the value it makes stale).
#[test]
fn a_client_cache_is_never_left_stale() {
    let node = Node::start(NodeOpts::default());
    let keys: Vec<String> = (0..10).map(|i| format!("race:{i}")).collect();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut w = node.raw();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                assert!(matches!(
                    w.cmd(&["INCR", &keys[n % keys.len()]]),
                    Reply::Int(_)
                ));
                n += 1;
            }
        });
        let mut t = node.raw();
        assert!(matches!(t.cmd(&["HELLO", "3"]), Reply::Map(_)));
        assert_eq!(t.cmd(&["CLIENT", "TRACKING", "on"]), Reply::ok());
        let mut cache: std::collections::HashMap<String, Reply> = Default::default();
        // Applies an invalidation; false for any other reply.
        let apply = |cache: &mut std::collections::HashMap<String, Reply>, r: &Reply| match r {
            Reply::Push(items) if items.first() == Some(&Reply::bulk("invalidate")) => {
                match &items[1] {
                    Reply::Array(ks) => ks.iter().for_each(|k| {
                        if let Reply::Bulk(k) = k {
                            cache.remove(&String::from_utf8_lossy(k).into_owned());
                        }
                    }),
                    _ => cache.clear(),
                }
                true
            }
            _ => false,
        };
        let started = std::time::Instant::now();
        let mut i = 0;
        while started.elapsed() < Duration::from_secs(2) {
            let key = &keys[i % keys.len()];
            i += 1;
            let request: &[&str] = if cache.contains_key(key) {
                &["PING"]
            } else {
                &["GET", key]
            };
            t.send(&meridian_tests::encode_command(request));
            let reply = loop {
                let r = t.read_reply();
                if !apply(&mut cache, &r) {
                    break r;
                }
            };
            if request[0] == "GET" {
                cache.insert(key.clone(), reply);
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().expect("the writer");
        // The last invalidations arrive before the reply to a PING sent after the writes.
        std::thread::sleep(Duration::from_millis(100));
        t.send(&meridian_tests::encode_command(&["PING"]));
        while apply(&mut cache, &t.read_reply()) {}
        let mut c = node.raw();
        for (key, cached) in &cache {
            let now = c.cmd(&["GET", key]);
            let now = match now {
                Reply::NilBulk => Reply::Null,
                other => other,
            };
            assert_eq!(&now, cached, "{key} stale in the client's cache");
        }
    });
}

//! Expiry: the EXPIRE family and its NX/XX/GT/LT conditions, TTL/PTTL/EXPIRETIME/PEXPIRETIME,
//! PERSIST, lazy expiry on read and active expiry without reads.

use std::time::Duration;

use meridian_tests::{eventually, q, q_err, Node, NodeOpts};
use redis::Value;

/// Server time in milliseconds (from `TIME`, so the test does not depend on clock agreement).
fn server_ms(c: &mut redis::Connection) -> i64 {
    let (s, us): (i64, i64) = q(c, &["TIME"]);
    s * 1000 + us / 1000
}

#[test]
fn ttl_pttl_and_persist() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client();
    assert_eq!(q::<i64>(&mut c, &["TTL", "missing"]), -2);
    assert_eq!(q::<i64>(&mut c, &["PTTL", "missing"]), -2);
    assert_eq!(q::<Value>(&mut c, &["SET", "k", "v"]), Value::Okay);
    assert_eq!(q::<i64>(&mut c, &["TTL", "k"]), -1);
    assert_eq!(q::<i64>(&mut c, &["PTTL", "k"]), -1);
    assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "100"]), 1);
    let ttl: i64 = q(&mut c, &["TTL", "k"]);
    assert!((99..=100).contains(&ttl), "TTL {ttl}");
    let pttl: i64 = q(&mut c, &["PTTL", "k"]);
    assert!((95_000..=100_000).contains(&pttl), "PTTL {pttl}");
    assert_eq!(q::<i64>(&mut c, &["PEXPIRE", "k", "5000"]), 1);
    let pttl: i64 = q(&mut c, &["PTTL", "k"]);
    assert!((4_000..=5_000).contains(&pttl), "PTTL after PEXPIRE {pttl}");
    assert_eq!(q::<i64>(&mut c, &["PERSIST", "k"]), 1);
    assert_eq!(q::<i64>(&mut c, &["TTL", "k"]), -1);
    assert_eq!(q::<i64>(&mut c, &["PERSIST", "k"]), 0);
    assert_eq!(q::<i64>(&mut c, &["PERSIST", "missing"]), 0);
    assert_eq!(q::<i64>(&mut c, &["EXPIRE", "missing", "10"]), 0);
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "missing"]), 0);
    assert_eq!(q::<String>(&mut c, &["GET", "k"]), "v");
    for (name, args) in [
        ("ttl", &["TTL"][..]),
        ("pttl", &["PTTL", "a", "b"]),
        ("persist", &["PERSIST"]),
        ("expire", &["EXPIRE", "k"]),
        ("pexpire", &["PEXPIRE"]),
    ] {
        assert_eq!(
            q_err(&mut c, args),
            format!("ERR wrong number of arguments for '{name}' command")
        );
    }
}

#[test]
fn expire_conditions_nx_xx_gt_lt() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client();
    assert_eq!(q::<Value>(&mut c, &["SET", "k", "v"]), Value::Okay);
    // No TTL yet: XX and GT fail (no TTL counts as infinite), LT succeeds.
    assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "100", "XX"]), 0);
    assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "100", "GT"]), 0);
    assert_eq!(q::<i64>(&mut c, &["TTL", "k"]), -1);
    assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "100", "LT"]), 1);
    assert_eq!(q::<i64>(&mut c, &["TTL", "k"]), 100);
    // Has a TTL: NX fails.
    assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "500", "NX"]), 0);
    assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "50", "GT"]), 0);
    assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "200", "GT"]), 1);
    assert_eq!(q::<i64>(&mut c, &["TTL", "k"]), 200);
    assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "300", "LT"]), 0);
    assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "150", "lt"]), 1);
    assert_eq!(q::<i64>(&mut c, &["TTL", "k"]), 150);
    assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "400", "XX"]), 1);
    assert_eq!(q::<i64>(&mut c, &["TTL", "k"]), 400);
    // GT with XX combine.
    assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "500", "XX", "GT"]), 1);
    assert_eq!(q::<i64>(&mut c, &["TTL", "k"]), 500);
    assert_eq!(q::<i64>(&mut c, &["PERSIST", "k"]), 1);
    assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "60", "NX"]), 1);
    assert_eq!(q::<i64>(&mut c, &["TTL", "k"]), 60);
    // The same conditions on the other three commands.
    assert_eq!(q::<i64>(&mut c, &["PEXPIRE", "k", "70000", "GT"]), 1);
    assert_eq!(q::<i64>(&mut c, &["PEXPIRE", "k", "80000", "NX"]), 0);
    let now = server_ms(&mut c);
    let at = (now / 1000 + 1000).to_string();
    assert_eq!(q::<i64>(&mut c, &["EXPIREAT", "k", &at, "LT"]), 0);
    assert_eq!(q::<i64>(&mut c, &["EXPIREAT", "k", &at, "GT"]), 1);
    assert_eq!(q::<String>(&mut c, &["EXPIRETIME", "k"]), at);
    let pat = (now + 2_000_000).to_string();
    assert_eq!(q::<i64>(&mut c, &["PEXPIREAT", "k", &pat, "XX"]), 1);
    assert_eq!(q::<String>(&mut c, &["PEXPIRETIME", "k"]), pat);

    assert_eq!(
        q_err(&mut c, &["EXPIRE", "k", "10", "NX", "XX"]),
        "ERR NX and XX, GT or LT options at the same time are not compatible"
    );
    assert_eq!(
        q_err(&mut c, &["EXPIRE", "k", "10", "NX", "GT"]),
        "ERR NX and XX, GT or LT options at the same time are not compatible"
    );
    assert_eq!(
        q_err(&mut c, &["PEXPIRE", "k", "10", "GT", "LT"]),
        "ERR GT and LT options at the same time are not compatible"
    );
    assert_eq!(
        q_err(&mut c, &["EXPIRE", "k", "10", "bogus"]),
        "ERR Unsupported option bogus"
    );
    // The options are checked before the time, as in Redis.
    assert_eq!(
        q_err(&mut c, &["EXPIRE", "k", "abc", "bogus"]),
        "ERR Unsupported option bogus"
    );
    assert_eq!(
        q_err(&mut c, &["EXPIRE", "k", "abc", "NX"]),
        "ERR value is not an integer or out of range"
    );
    // Nothing above changed the TTL.
    assert_eq!(q::<String>(&mut c, &["PEXPIRETIME", "k"]), pat);
}

#[test]
fn expireat_expiretime_and_past_times() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client();
    assert_eq!(q::<i64>(&mut c, &["EXPIRETIME", "missing"]), -2);
    assert_eq!(q::<i64>(&mut c, &["PEXPIRETIME", "missing"]), -2);
    assert_eq!(q::<Value>(&mut c, &["SET", "k", "v"]), Value::Okay);
    assert_eq!(q::<i64>(&mut c, &["EXPIRETIME", "k"]), -1);
    assert_eq!(q::<i64>(&mut c, &["PEXPIRETIME", "k"]), -1);
    let now = server_ms(&mut c);
    let at_s = now / 1000 + 3600;
    assert_eq!(q::<i64>(&mut c, &["EXPIREAT", "k", &at_s.to_string()]), 1);
    assert_eq!(q::<i64>(&mut c, &["EXPIRETIME", "k"]), at_s);
    assert_eq!(q::<i64>(&mut c, &["PEXPIRETIME", "k"]), at_s * 1000);
    // 700 ms past a whole second, so EXPIRETIME's rounding is visible.
    let at_ms = (now / 1000 + 7200) * 1000 + 700;
    assert_eq!(q::<i64>(&mut c, &["PEXPIREAT", "k", &at_ms.to_string()]), 1);
    assert_eq!(q::<i64>(&mut c, &["PEXPIRETIME", "k"]), at_ms);
    // EXPIRETIME rounds to the nearest second (Redis: `(ms + 500) / 1000`).
    assert_eq!(q::<i64>(&mut c, &["EXPIRETIME", "k"]), at_ms / 1000 + 1);
    let ttl: i64 = q(&mut c, &["TTL", "k"]);
    assert!((7199..=7201).contains(&ttl), "TTL {ttl}");

    // A time in the past, a zero or negative relative time: the key is deleted, reply 1.
    for args in [
        &["EXPIRE", "k", "-1"][..],
        &["PEXPIRE", "k", "0"],
        &["EXPIREAT", "k", "1"],
        &["PEXPIREAT", "k", "-5"],
    ] {
        assert_eq!(q::<Value>(&mut c, &["SET", "k", "v"]), Value::Okay);
        assert_eq!(q::<i64>(&mut c, args), 1, "{args:?}");
        assert_eq!(q::<i64>(&mut c, &["EXISTS", "k"]), 0, "{args:?}");
        assert_eq!(q::<i64>(&mut c, &["TTL", "k"]), -2, "{args:?}");
    }

    assert_eq!(q::<Value>(&mut c, &["SET", "k", "v"]), Value::Okay);
    assert_eq!(
        q_err(&mut c, &["EXPIRE", "k", "abc"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        q_err(&mut c, &["EXPIRE", "k", "9223372036854775807"]),
        "ERR invalid expire time in 'expire' command"
    );
    assert_eq!(
        q_err(&mut c, &["PEXPIRE", "k", "9223372036854775807"]),
        "ERR invalid expire time in 'pexpire' command"
    );
    assert_eq!(
        q_err(&mut c, &["EXPIREAT", "k", "9223372036854775807"]),
        "ERR invalid expire time in 'expireat' command"
    );
    assert_eq!(q::<i64>(&mut c, &["TTL", "k"]), -1);
    assert_eq!(
        q_err(&mut c, &["EXPIRETIME"]),
        "ERR wrong number of arguments for 'expiretime' command"
    );
}

#[test]
fn lazy_expiry_on_read() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client();
    assert_eq!(
        q::<Value>(&mut c, &["SET", "k", "v", "PX", "150"]),
        Value::Okay
    );
    assert_eq!(
        q::<Value>(&mut c, &["SET", "n", "5", "PX", "150"]),
        Value::Okay
    );
    assert_eq!(q::<String>(&mut c, &["GET", "k"]), "v");
    eventually(Duration::from_secs(5), "k to expire", || {
        match q::<Value>(&mut c, &["GET", "k"]) {
            Value::Nil => Ok(()),
            v => anyhow::bail!("GET k = {v:?}"),
        }
    });
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "k"]), 0);
    assert_eq!(q::<i64>(&mut c, &["TTL", "k"]), -2);
    // An expired counter restarts from zero, without the old TTL.
    eventually(Duration::from_secs(5), "n to expire", || {
        match q::<i64>(&mut c, &["EXISTS", "n"]) {
            0 => Ok(()),
            v => anyhow::bail!("EXISTS n = {v}"),
        }
    });
    assert_eq!(q::<i64>(&mut c, &["INCR", "n"]), 1);
    assert_eq!(q::<i64>(&mut c, &["TTL", "n"]), -1);
    // An expired key is writable with NX.
    assert_eq!(q::<Value>(&mut c, &["SET", "k", "new", "NX"]), Value::Okay);
    assert_eq!(q::<String>(&mut c, &["GET", "k"]), "new");
}

#[test]
fn active_expiry_without_reads() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client();
    let mut pipe = redis::pipe();
    for i in 0..500 {
        pipe.cmd("SET")
            .arg(format!("short:{i}"))
            .arg("v")
            .arg("PX")
            .arg(100 + i % 200)
            .ignore();
    }
    for i in 0..20 {
        pipe.cmd("SET").arg(format!("keep:{i}")).arg("v").ignore();
        pipe.cmd("SET")
            .arg(format!("long:{i}"))
            .arg("v")
            .arg("EX")
            .arg(3600)
            .ignore();
    }
    let _: () = pipe.query(&mut c).unwrap();
    assert!(q::<i64>(&mut c, &["DBSIZE"]) > 40);
    // Only DBSIZE is asked: nothing reads the short keys, so only active expiry removes them.
    eventually(
        Duration::from_secs(15),
        "active expiry to remove 500 short-lived keys",
        || match q::<i64>(&mut c, &["DBSIZE"]) {
            40 => Ok(()),
            n => anyhow::bail!("DBSIZE = {n}"),
        },
    );
    let info: String = q(&mut c, &["INFO", "keyspace"]);
    assert!(
        info.contains("db0:keys=40,expires=20,"),
        "INFO keyspace after expiry: {info}"
    );
}

//! String commands: PING/ECHO, SET and its options, the GET/SET variants, multi-key forms,
//! ranges and counters, through the `redis` crate over RESP2 and RESP3.

use meridian_tests::{cmd, q, q_err, qa, Node, NodeOpts};
use redis::{Commands, Value};

#[test]
fn ping_and_echo_resp2_and_resp3() {
    let node = Node::start(NodeOpts::default());
    for mut c in [node.client(), node.client_resp3()] {
        assert_eq!(q::<String>(&mut c, &["PING"]), "PONG");
        assert_eq!(
            q::<Value>(&mut c, &["PING"]),
            Value::SimpleString("PONG".into())
        );
        assert_eq!(
            q::<Value>(&mut c, &["PING", "hello"]),
            Value::BulkString(b"hello".to_vec())
        );
        assert_eq!(q::<String>(&mut c, &["ECHO", "hi there"]), "hi there");
        assert_eq!(q::<String>(&mut c, &["ECHO", ""]), "");
        assert_eq!(
            q_err(&mut c, &["ECHO"]),
            "ERR wrong number of arguments for 'echo' command"
        );
        assert_eq!(
            q_err(&mut c, &["PING", "a", "b"]),
            "ERR wrong number of arguments for 'ping' command"
        );
    }
}

#[test]
fn set_get_basic_binary_and_large() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client();
    assert_eq!(q::<Value>(&mut c, &["SET", "k", "v"]), Value::Okay);
    assert_eq!(q::<String>(&mut c, &["GET", "k"]), "v");
    assert_eq!(q::<Value>(&mut c, &["GET", "missing"]), Value::Nil);
    // Overwrite, empty value.
    assert_eq!(q::<Value>(&mut c, &["SET", "k", ""]), Value::Okay);
    assert_eq!(q::<Vec<u8>>(&mut c, &["GET", "k"]), b"");
    // Binary-safe keys and values: NUL, CR LF, high bytes.
    let key: &[u8] = b"bin\x00key\r\n\xff";
    let val: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let _: () = c.set(key, &val).unwrap();
    let got: Vec<u8> = c.get(key).unwrap();
    assert_eq!(got, val);
    // A 4 MiB value round-trips.
    let big: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let _: () = c.set("big", &big).unwrap();
    let got: Vec<u8> = c.get("big").unwrap();
    assert_eq!(got.len(), big.len());
    assert!(got == big, "4 MiB value came back different");
    assert_eq!(q::<i64>(&mut c, &["STRLEN", "big"]), 4 * 1024 * 1024);
}

#[test]
fn set_nx_xx_get_keepttl() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client();
    // NX: only when missing.
    assert_eq!(q::<Value>(&mut c, &["SET", "k", "1", "NX"]), Value::Okay);
    assert_eq!(q::<Value>(&mut c, &["SET", "k", "2", "NX"]), Value::Nil);
    assert_eq!(q::<String>(&mut c, &["GET", "k"]), "1");
    // XX: only when present.
    assert_eq!(q::<Value>(&mut c, &["SET", "nokey", "x", "XX"]), Value::Nil);
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "nokey"]), 0);
    assert_eq!(q::<Value>(&mut c, &["SET", "k", "3", "XX"]), Value::Okay);
    assert_eq!(q::<String>(&mut c, &["GET", "k"]), "3");
    // GET returns the old value (nil when there was none).
    assert_eq!(q::<String>(&mut c, &["SET", "k", "4", "GET"]), "3");
    assert_eq!(q::<Value>(&mut c, &["SET", "g", "1", "GET"]), Value::Nil);
    assert_eq!(q::<String>(&mut c, &["GET", "g"]), "1");
    // NX GET (allowed since 7.0): nil and sets when missing; old value and no write when present.
    assert_eq!(
        q::<Value>(&mut c, &["SET", "ng", "a", "NX", "GET"]),
        Value::Nil
    );
    assert_eq!(q::<String>(&mut c, &["SET", "ng", "b", "NX", "GET"]), "a");
    assert_eq!(q::<String>(&mut c, &["GET", "ng"]), "a");
    assert_eq!(q::<String>(&mut c, &["SET", "ng", "c", "XX", "GET"]), "a");
    assert_eq!(q::<String>(&mut c, &["GET", "ng"]), "c");
    // KEEPTTL keeps the TTL; a plain SET clears it.
    assert_eq!(
        q::<Value>(&mut c, &["SET", "t", "1", "EX", "100"]),
        Value::Okay
    );
    assert_eq!(
        q::<Value>(&mut c, &["SET", "t", "2", "KEEPTTL"]),
        Value::Okay
    );
    let ttl: i64 = q(&mut c, &["TTL", "t"]);
    assert!((90..=100).contains(&ttl), "ttl after KEEPTTL = {ttl}");
    assert_eq!(q::<Value>(&mut c, &["SET", "t", "3"]), Value::Okay);
    assert_eq!(q::<i64>(&mut c, &["TTL", "t"]), -1);
    // Options are case-insensitive.
    assert_eq!(
        q::<Value>(&mut c, &["set", "k", "5", "xx", "get"]),
        Value::BulkString(b"4".to_vec())
    );
}

#[test]
fn set_expiry_options() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client();
    let now_ms: i64 = {
        let (s, us): (i64, i64) = q(&mut c, &["TIME"]);
        s * 1000 + us / 1000
    };
    assert_eq!(
        q::<Value>(&mut c, &["SET", "ex", "v", "EX", "100"]),
        Value::Okay
    );
    let ttl: i64 = q(&mut c, &["TTL", "ex"]);
    assert!((99..=100).contains(&ttl), "EX 100 gave TTL {ttl}");
    assert_eq!(
        q::<Value>(&mut c, &["SET", "px", "v", "PX", "100000"]),
        Value::Okay
    );
    let pttl: i64 = q(&mut c, &["PTTL", "px"]);
    assert!(
        (95_000..=100_000).contains(&pttl),
        "PX 100000 gave PTTL {pttl}"
    );
    let at = (now_ms / 1000 + 200).to_string();
    assert_eq!(
        q::<Value>(&mut c, &["SET", "exat", "v", "EXAT", &at]),
        Value::Okay
    );
    assert_eq!(q::<String>(&mut c, &["EXPIRETIME", "exat"]), at);
    let pat = (now_ms + 300_000).to_string();
    assert_eq!(
        q::<Value>(&mut c, &["SET", "pxat", "v", "PXAT", &pat]),
        Value::Okay
    );
    assert_eq!(q::<String>(&mut c, &["PEXPIRETIME", "pxat"]), pat);
    // An absolute time in the past: OK, and the key is gone at once.
    assert_eq!(
        q::<Value>(&mut c, &["SET", "past", "v", "EXAT", "1"]),
        Value::Okay
    );
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "past"]), 0);
    assert_eq!(
        q::<Value>(&mut c, &["SET", "past", "v", "PXAT", "1"]),
        Value::Okay
    );
    assert_eq!(q::<Value>(&mut c, &["GET", "past"]), Value::Nil);
    // Invalid times and bad combinations.
    for bad in [
        &["SET", "k", "v", "EX", "0"][..],
        &["SET", "k", "v", "EX", "-1"],
        &["SET", "k", "v", "PX", "0"],
        &["SET", "k", "v", "EXAT", "0"],
    ] {
        assert_eq!(
            q_err(&mut c, bad),
            "ERR invalid expire time in 'set' command",
            "{bad:?}"
        );
    }
    assert_eq!(
        q_err(&mut c, &["SET", "k", "v", "EX", "abc"]),
        "ERR value is not an integer or out of range"
    );
    for bad in [
        &["SET", "k", "v", "NX", "XX"][..],
        &["SET", "k", "v", "EX", "10", "PX", "100"],
        &["SET", "k", "v", "KEEPTTL", "EX", "10"],
        &["SET", "k", "v", "EX"],
        &["SET", "k", "v", "BOGUS"],
    ] {
        assert_eq!(q_err(&mut c, bad), "ERR syntax error", "{bad:?}");
    }
    assert_eq!(
        q_err(&mut c, &["SET", "k"]),
        "ERR wrong number of arguments for 'set' command"
    );
    // Nothing above created k.
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "k"]), 0);
}

#[test]
fn setnx_setex_psetex_getset_getdel() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client();
    assert_eq!(q::<i64>(&mut c, &["SETNX", "k", "1"]), 1);
    assert_eq!(q::<i64>(&mut c, &["SETNX", "k", "2"]), 0);
    assert_eq!(q::<String>(&mut c, &["GET", "k"]), "1");

    assert_eq!(
        q::<Value>(&mut c, &["SETEX", "se", "100", "v"]),
        Value::Okay
    );
    let ttl: i64 = q(&mut c, &["TTL", "se"]);
    assert!((99..=100).contains(&ttl), "SETEX ttl {ttl}");
    assert_eq!(
        q::<Value>(&mut c, &["PSETEX", "pse", "100000", "v"]),
        Value::Okay
    );
    let pttl: i64 = q(&mut c, &["PTTL", "pse"]);
    assert!((95_000..=100_000).contains(&pttl), "PSETEX pttl {pttl}");
    assert_eq!(
        q_err(&mut c, &["SETEX", "se", "0", "v"]),
        "ERR invalid expire time in 'setex' command"
    );
    assert_eq!(
        q_err(&mut c, &["PSETEX", "se", "-5", "v"]),
        "ERR invalid expire time in 'psetex' command"
    );
    assert_eq!(
        q_err(&mut c, &["SETEX", "se", "abc", "v"]),
        "ERR value is not an integer or out of range"
    );

    assert_eq!(q::<Value>(&mut c, &["GETSET", "gs", "a"]), Value::Nil);
    assert_eq!(q::<String>(&mut c, &["GETSET", "gs", "b"]), "a");
    assert_eq!(q::<String>(&mut c, &["GET", "gs"]), "b");
    // GETSET clears a TTL like SET does.
    assert_eq!(q::<String>(&mut c, &["GETSET", "se", "w"]), "v");
    assert_eq!(q::<i64>(&mut c, &["TTL", "se"]), -1);

    assert_eq!(q::<String>(&mut c, &["GETDEL", "gs"]), "b");
    assert_eq!(q::<Value>(&mut c, &["GETDEL", "gs"]), Value::Nil);
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "gs"]), 0);
}

#[test]
fn getex_options() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client();
    assert_eq!(
        q::<Value>(&mut c, &["GETEX", "missing", "EX", "10"]),
        Value::Nil
    );
    assert_eq!(q::<Value>(&mut c, &["SET", "k", "v"]), Value::Okay);
    assert_eq!(q::<String>(&mut c, &["GETEX", "k"]), "v");
    assert_eq!(q::<i64>(&mut c, &["TTL", "k"]), -1);
    assert_eq!(q::<String>(&mut c, &["GETEX", "k", "EX", "100"]), "v");
    assert_eq!(q::<i64>(&mut c, &["TTL", "k"]), 100);
    assert_eq!(q::<String>(&mut c, &["GETEX", "k", "PX", "50000"]), "v");
    let pttl: i64 = q(&mut c, &["PTTL", "k"]);
    assert!((45_000..=50_000).contains(&pttl), "pttl {pttl}");
    assert_eq!(q::<String>(&mut c, &["GETEX", "k", "PERSIST"]), "v");
    assert_eq!(q::<i64>(&mut c, &["TTL", "k"]), -1);
    let (s, _us): (i64, i64) = q(&mut c, &["TIME"]);
    let at = (s + 500).to_string();
    assert_eq!(q::<String>(&mut c, &["GETEX", "k", "EXAT", &at]), "v");
    assert_eq!(q::<String>(&mut c, &["EXPIRETIME", "k"]), at);
    let pat = ((s + 600) * 1000).to_string();
    assert_eq!(q::<String>(&mut c, &["GETEX", "k", "PXAT", &pat]), "v");
    assert_eq!(q::<String>(&mut c, &["PEXPIRETIME", "k"]), pat);
    // A time in the past deletes the key after returning it.
    assert_eq!(q::<String>(&mut c, &["GETEX", "k", "EXAT", "1"]), "v");
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "k"]), 0);
    assert_eq!(q::<Value>(&mut c, &["SET", "k", "v"]), Value::Okay);
    assert_eq!(
        q_err(&mut c, &["GETEX", "k", "EX", "0"]),
        "ERR invalid expire time in 'getex' command"
    );
    assert_eq!(
        q_err(&mut c, &["GETEX", "k", "PERSIST", "EX", "10"]),
        "ERR syntax error"
    );
    assert_eq!(q_err(&mut c, &["GETEX", "k", "EX"]), "ERR syntax error");
    // As in Redis: options may repeat (the last expiry wins), and a missing key is nil before
    // its expiry amount is read.
    assert_eq!(
        q::<String>(&mut c, &["GETEX", "k", "EX", "10", "EX", "200"]),
        "v"
    );
    assert!((190..=200).contains(&q::<i64>(&mut c, &["TTL", "k"])));
    assert_eq!(
        q::<String>(&mut c, &["GETEX", "k", "PERSIST", "PERSIST"]),
        "v"
    );
    assert_eq!(q::<i64>(&mut c, &["TTL", "k"]), -1);
    for bad in ["abc", "0"] {
        assert_eq!(
            q::<Value>(&mut c, &["GETEX", "missing", "EX", bad]),
            Value::Nil,
            "a missing key is nil before its expiry is checked"
        );
    }
    // In a pipeline, GETEX answers in order and sees the writes before it.
    let (ok, got): (String, String) = redis::pipe()
        .cmd("SET")
        .arg("p")
        .arg("new")
        .cmd("GETEX")
        .arg("p")
        .query(&mut c)
        .unwrap();
    assert_eq!((ok.as_str(), got.as_str()), ("OK", "new"));
}

#[test]
fn set_options_repeat_and_report_syntax_first_as_in_redis() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client();
    assert_eq!(
        q::<Value>(&mut c, &["SET", "k", "v", "EX", "10", "EX", "200"]),
        Value::Okay
    );
    assert!((190..=200).contains(&q::<i64>(&mut c, &["TTL", "k"])));
    assert_eq!(
        q::<Value>(&mut c, &["SET", "k", "w", "KEEPTTL", "KEEPTTL"]),
        Value::Okay
    );
    assert!(q::<i64>(&mut c, &["TTL", "k"]) > 100);
    assert_eq!(
        q::<Value>(&mut c, &["SET", "k", "x", "NX", "NX"]),
        Value::Nil
    );
    assert_eq!(
        q::<String>(&mut c, &["SET", "k", "y", "GET", "GET", "XX", "XX"]),
        "w"
    );
    // A syntax error is reported before a bad amount, as Redis parses all words first.
    assert_eq!(
        q_err(&mut c, &["SET", "k", "v", "EX", "abc", "NX", "XX"]),
        "ERR syntax error"
    );
    for conflict in [
        &["EX", "10", "PX", "100"][..],
        &["KEEPTTL", "EX", "10"],
        &["EX", "10", "KEEPTTL"],
        &["NX", "XX"],
        &["PERSIST"],
    ] {
        let mut args = vec!["SET", "k", "v"];
        args.extend_from_slice(conflict);
        assert_eq!(q_err(&mut c, &args), "ERR syntax error", "{args:?}");
    }
}

#[test]
fn mget_mset_msetnx() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client();
    assert_eq!(
        q::<Value>(&mut c, &["MSET", "a", "1", "b", "2", "c", "3"]),
        Value::Okay
    );
    assert_eq!(
        q::<Vec<Option<String>>>(&mut c, &["MGET", "a", "missing", "c", "b"]),
        vec![Some("1".into()), None, Some("3".into()), Some("2".into())]
    );
    // MSET overwrites and clears TTLs.
    assert_eq!(
        q::<Value>(&mut c, &["SET", "a", "x", "EX", "100"]),
        Value::Okay
    );
    assert_eq!(q::<Value>(&mut c, &["MSET", "a", "9"]), Value::Okay);
    assert_eq!(q::<i64>(&mut c, &["TTL", "a"]), -1);
    // The last of duplicate keys wins.
    assert_eq!(
        q::<Value>(&mut c, &["MSET", "d", "1", "d", "2"]),
        Value::Okay
    );
    assert_eq!(q::<String>(&mut c, &["GET", "d"]), "2");
    // MSETNX: all or nothing.
    assert_eq!(q::<i64>(&mut c, &["MSETNX", "x", "1", "a", "2"]), 0);
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "x"]), 0);
    assert_eq!(q::<i64>(&mut c, &["MSETNX", "x", "1", "y", "2"]), 1);
    assert_eq!(
        q::<Vec<String>>(&mut c, &["MGET", "x", "y"]),
        vec!["1", "2"]
    );
    for (name, args) in [
        ("mset", &["MSET", "a"][..]),
        ("mset", &["MSET", "a", "1", "b"]),
        ("msetnx", &["MSETNX", "a"]),
        ("mget", &["MGET"]),
    ] {
        assert_eq!(
            q_err(&mut c, args),
            format!("ERR wrong number of arguments for '{name}' command")
        );
    }
    // A big MGET in one request.
    let mut mset = cmd(&["MSET"]);
    for i in 0..1000 {
        mset.arg(format!("m{i}")).arg(i);
    }
    let _: () = mset.query(&mut c).unwrap();
    let keys: Vec<String> = (0..1000).map(|i| format!("m{i}")).collect();
    let vals: Vec<i64> = cmd(&["MGET"]).arg(&keys).query(&mut c).unwrap();
    assert_eq!(vals, (0..1000).collect::<Vec<i64>>());
}

#[test]
fn append_strlen_getrange_setrange() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client();
    assert_eq!(q::<i64>(&mut c, &["APPEND", "a", "Hello"]), 5);
    assert_eq!(q::<i64>(&mut c, &["APPEND", "a", " World"]), 11);
    assert_eq!(q::<String>(&mut c, &["GET", "a"]), "Hello World");
    assert_eq!(q::<i64>(&mut c, &["STRLEN", "a"]), 11);
    assert_eq!(q::<i64>(&mut c, &["STRLEN", "missing"]), 0);

    assert_eq!(q::<String>(&mut c, &["GETRANGE", "a", "0", "4"]), "Hello");
    assert_eq!(q::<String>(&mut c, &["GETRANGE", "a", "-5", "-1"]), "World");
    assert_eq!(
        q::<String>(&mut c, &["GETRANGE", "a", "0", "-1"]),
        "Hello World"
    );
    assert_eq!(
        q::<String>(&mut c, &["GETRANGE", "a", "0", "1000"]),
        "Hello World"
    );
    assert_eq!(q::<String>(&mut c, &["GETRANGE", "a", "5", "2"]), "");
    assert_eq!(q::<String>(&mut c, &["GETRANGE", "a", "-100", "1"]), "He");
    assert_eq!(q::<String>(&mut c, &["GETRANGE", "missing", "0", "-1"]), "");
    assert_eq!(
        q_err(&mut c, &["GETRANGE", "a", "x", "1"]),
        "ERR value is not an integer or out of range"
    );

    assert_eq!(q::<i64>(&mut c, &["SETRANGE", "a", "6", "Redis"]), 11);
    assert_eq!(q::<String>(&mut c, &["GET", "a"]), "Hello Redis");
    assert_eq!(q::<i64>(&mut c, &["SETRANGE", "a", "11", "!!"]), 13);
    assert_eq!(q::<String>(&mut c, &["GET", "a"]), "Hello Redis!!");
    // Padding with zero bytes on a missing key.
    assert_eq!(q::<i64>(&mut c, &["SETRANGE", "pad", "5", "x"]), 6);
    assert_eq!(q::<Vec<u8>>(&mut c, &["GET", "pad"]), b"\0\0\0\0\0x");
    // An empty value on a missing key creates nothing.
    assert_eq!(q::<i64>(&mut c, &["SETRANGE", "none", "3", ""]), 0);
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "none"]), 0);
    assert_eq!(
        q_err(&mut c, &["SETRANGE", "a", "-1", "x"]),
        "ERR offset is out of range"
    );
    assert_eq!(
        q_err(&mut c, &["SETRANGE", "a", "536870912", "x"]),
        "ERR string exceeds maximum allowed size (proto-max-bulk-len)"
    );
    // APPEND keeps the TTL.
    assert_eq!(
        q::<Value>(&mut c, &["SET", "t", "x", "EX", "100"]),
        Value::Okay
    );
    assert_eq!(q::<i64>(&mut c, &["APPEND", "t", "y"]), 2);
    assert!(q::<i64>(&mut c, &["TTL", "t"]) > 0);
}

#[test]
fn incr_decr_family() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client();
    assert_eq!(q::<i64>(&mut c, &["INCR", "n"]), 1);
    assert_eq!(q::<i64>(&mut c, &["INCR", "n"]), 2);
    assert_eq!(q::<i64>(&mut c, &["DECR", "n"]), 1);
    assert_eq!(q::<i64>(&mut c, &["INCRBY", "n", "10"]), 11);
    assert_eq!(q::<i64>(&mut c, &["INCRBY", "n", "-20"]), -9);
    assert_eq!(q::<i64>(&mut c, &["DECRBY", "n", "-9"]), 0);
    assert_eq!(q::<i64>(&mut c, &["DECR", "fresh"]), -1);
    assert_eq!(q::<String>(&mut c, &["GET", "n"]), "0");
    // Counters keep their TTL.
    assert_eq!(
        q::<Value>(&mut c, &["SET", "t", "5", "EX", "100"]),
        Value::Okay
    );
    assert_eq!(q::<i64>(&mut c, &["INCR", "t"]), 6);
    assert!(q::<i64>(&mut c, &["TTL", "t"]) > 0);

    // Bounds.
    assert_eq!(
        q::<Value>(&mut c, &["SET", "max", "9223372036854775807"]),
        Value::Okay
    );
    assert_eq!(
        q_err(&mut c, &["INCR", "max"]),
        "ERR increment or decrement would overflow"
    );
    assert_eq!(
        q_err(&mut c, &["INCRBY", "max", "1"]),
        "ERR increment or decrement would overflow"
    );
    assert_eq!(
        q::<Value>(&mut c, &["SET", "min", "-9223372036854775808"]),
        Value::Okay
    );
    assert_eq!(
        q_err(&mut c, &["DECR", "min"]),
        "ERR increment or decrement would overflow"
    );
    assert_eq!(
        q_err(&mut c, &["DECRBY", "n", "-9223372036854775808"]),
        "ERR decrement would overflow"
    );
    assert_eq!(q::<String>(&mut c, &["GET", "max"]), "9223372036854775807");

    // Not integers: the stored value or the argument.
    for v in [
        "abc",
        "1.5",
        " 1",
        "1 ",
        "",
        "99999999999999999999",
        "0x10",
        "+1",
    ] {
        assert_eq!(q::<Value>(&mut c, &["SET", "s", v]), Value::Okay);
        assert_eq!(
            q_err(&mut c, &["INCR", "s"]),
            "ERR value is not an integer or out of range",
            "INCR on {v:?}"
        );
    }
    for arg in ["abc", "1.0", "", "9223372036854775808"] {
        assert_eq!(
            q_err(&mut c, &["INCRBY", "n", arg]),
            "ERR value is not an integer or out of range",
            "INCRBY {arg:?}"
        );
        assert_eq!(
            q_err(&mut c, &["DECRBY", "n", arg]),
            "ERR value is not an integer or out of range",
            "DECRBY {arg:?}"
        );
    }
    assert_eq!(q::<String>(&mut c, &["GET", "n"]), "0");
    assert_eq!(
        q_err(&mut c, &["INCR"]),
        "ERR wrong number of arguments for 'incr' command"
    );
    assert_eq!(
        q_err(&mut c, &["INCRBY", "n"]),
        "ERR wrong number of arguments for 'incrby' command"
    );
}

#[test]
fn incrbyfloat() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client();
    // The examples of Redis's documentation.
    assert_eq!(q::<Value>(&mut c, &["SET", "f", "10.50"]), Value::Okay);
    assert_eq!(q::<String>(&mut c, &["INCRBYFLOAT", "f", "0.1"]), "10.6");
    // Sums whose double carries a rounding error read as Redis's long double ones do.
    assert_eq!(q::<String>(&mut c, &["INCRBYFLOAT", "d", "0.1"]), "0.1");
    assert_eq!(q::<String>(&mut c, &["INCRBYFLOAT", "d", "0.2"]), "0.3");
    assert_eq!(q::<String>(&mut c, &["GET", "d"]), "0.3");
    assert_eq!(q::<String>(&mut c, &["INCRBYFLOAT", "f", "-5"]), "5.6");
    assert_eq!(q::<Value>(&mut c, &["SET", "f", "5.0e3"]), Value::Okay);
    assert_eq!(q::<String>(&mut c, &["INCRBYFLOAT", "f", "2.0e2"]), "5200");
    assert_eq!(q::<String>(&mut c, &["GET", "f"]), "5200");
    assert_eq!(
        q::<String>(&mut c, &["INCRBYFLOAT", "new", "10.50"]),
        "10.5"
    );
    assert_eq!(q::<String>(&mut c, &["INCRBYFLOAT", "new2", "-5"]), "-5");
    assert_eq!(q::<Value>(&mut c, &["SET", "i", "10"]), Value::Okay);
    assert_eq!(q::<String>(&mut c, &["INCRBYFLOAT", "i", "1.5"]), "11.5");
    assert_eq!(q::<String>(&mut c, &["INCRBYFLOAT", "i", "-1.5"]), "10");
    // After INCRBYFLOAT an integer result is an integer again.
    assert_eq!(q::<i64>(&mut c, &["INCR", "i"]), 11);
    // The increment as written, even with more digits than a double keeps (as Redis).
    assert_eq!(q::<Value>(&mut c, &["SET", "w", "1"]), Value::Okay);
    assert_eq!(
        q::<String>(&mut c, &["INCRBYFLOAT", "w", "12345678901234567890"]),
        "12345678901234567891"
    );
    assert_eq!(q::<Value>(&mut c, &["SET", "w", "100"]), Value::Okay);
    assert_eq!(
        q::<String>(&mut c, &["INCRBYFLOAT", "w", "-100.00000000000000001"]),
        "-0.00000000000000001"
    );

    assert_eq!(q::<Value>(&mut c, &["SET", "s", "abc"]), Value::Okay);
    assert_eq!(
        q_err(&mut c, &["INCRBYFLOAT", "s", "1"]),
        "ERR value is not a valid float"
    );
    for arg in ["abc", "", "1.5x", "--1"] {
        assert_eq!(
            q_err(&mut c, &["INCRBYFLOAT", "f", arg]),
            "ERR value is not a valid float",
            "INCRBYFLOAT {arg:?}"
        );
    }
    for arg in ["inf", "-inf", "+inf"] {
        assert_eq!(
            q_err(&mut c, &["INCRBYFLOAT", "f", arg]),
            "ERR increment would produce NaN or Infinity",
            "INCRBYFLOAT {arg:?}"
        );
    }
    assert_eq!(q::<String>(&mut c, &["GET", "f"]), "5200");
    // On an integer counter a non-integer stored value is still a float error.
    assert_eq!(q::<Value>(&mut c, &["SET", "g", "1.5"]), Value::Okay);
    assert_eq!(
        q_err(&mut c, &["INCR", "g"]),
        "ERR value is not an integer or out of range"
    );
}

#[test]
fn resp3_string_replies() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client_resp3();
    // Twice: the second GET finds the key's absence in the hot cache and answers from there.
    assert_eq!(q::<Value>(&mut c, &["GET", "missing"]), Value::Nil);
    assert_eq!(q::<Value>(&mut c, &["GET", "missing"]), Value::Nil);
    assert_eq!(q::<Value>(&mut c, &["SET", "k", "v"]), Value::Okay);
    assert_eq!(
        q::<Value>(&mut c, &["GET", "k"]),
        Value::BulkString(b"v".to_vec())
    );
    assert_eq!(q::<Value>(&mut c, &["INCR", "n"]), Value::Int(1));
    assert_eq!(
        q::<Value>(&mut c, &["GET", "n"]),
        Value::BulkString(b"1".to_vec())
    );
    // An expired key read from the cache is nil.
    assert_eq!(
        q::<Value>(&mut c, &["SET", "e", "v", "PX", "30"]),
        Value::Okay
    );
    std::thread::sleep(std::time::Duration::from_millis(60));
    assert_eq!(q::<Value>(&mut c, &["GET", "e"]), Value::Nil);
    // INCRBYFLOAT answers a bulk string, not a RESP3 double, as Redis does.
    assert_eq!(
        q::<Value>(&mut c, &["INCRBYFLOAT", "f", "1.5"]),
        Value::BulkString(b"1.5".to_vec())
    );
    assert_eq!(
        q::<Value>(&mut c, &["MGET", "k", "missing"]),
        Value::Array(vec![Value::BulkString(b"v".to_vec()), Value::Nil])
    );
    assert_eq!(q::<Value>(&mut c, &["SET", "k", "w", "NX"]), Value::Nil);
    assert_eq!(
        q_err(&mut c, &["INCR", "k"]),
        "ERR value is not an integer or out of range"
    );
}

#[test]
fn values_of_every_size_read_back_from_the_cache() {
    // Sizes inside a cache slot's room and past it (held in a shared buffer).
    let node = Node::start(NodeOpts::default());
    for mut c in [node.client(), node.client_resp3()] {
        for len in [0usize, 1, 60, 150, 191, 192, 1000, 100_000] {
            let value: String = (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect();
            let key = format!("size:{len}");
            let _: () = q(&mut c, &["SET", &key, &value]);
            for _ in 0..2 {
                assert_eq!(q::<String>(&mut c, &["GET", &key]), value, "{len} bytes");
            }
        }
    }
}

/// A write's small replies are written to the socket where the write is applied; replies of
/// megabytes (`SET .. GET` of a large old value) are left to the connection, also in a batch
/// with small ones. Either way they must arrive whole and in order.
#[test]
fn write_replies_larger_than_the_socket_takes_at_once() {
    let node = Node::start(NodeOpts::default());
    for mut c in [node.client(), node.client_resp3()] {
        let value = |i: usize| -> Vec<u8> {
            (0..3 * 1024 * 1024 + i)
                .map(|j| ((i + j) % 251) as u8)
                .collect()
        };
        let _: () = c.set("big", value(0)).unwrap();
        let old: Vec<u8> = cmd(&["SET", "big", "small", "GET"]).query(&mut c).unwrap();
        assert!(old == value(0), "the old 3 MiB value came back different");
        // Pipelined: several large replies in one batch, with small ones between them.
        let mut load = redis::pipe();
        for i in 0..4 {
            load.set(format!("k{i}"), value(i)).ignore();
        }
        let () = load.query(&mut c).unwrap();
        let mut swap = redis::pipe();
        for i in 0..4 {
            swap.cmd("SET").arg(format!("k{i}")).arg(i).arg("GET");
            swap.cmd("INCR").arg("n");
        }
        let replies: Vec<Value> = swap.query(&mut c).unwrap();
        assert_eq!(replies.len(), 8);
        for i in 0..4 {
            assert!(
                replies[2 * i] == Value::BulkString(value(i)),
                "reply {i} came back different"
            );
            assert!(matches!(replies[2 * i + 1], Value::Int(_)));
        }
        assert_eq!(q::<String>(&mut c, &["GET", "k3"]), "3");
    }
}

/// A client that sends writes one at a time but reads none of their replies until the end:
/// the socket's buffers fill, so the replies written where the writes are applied go out in
/// part or not at all, and the connection must write the rest, in order.
#[test]
fn write_replies_to_a_client_that_does_not_read_arrive_whole_and_in_order() {
    let node = Node::start(NodeOpts::default());
    let value =
        |i: usize| -> Vec<u8> { (0..40_000 + i).map(|j| ((i * 7 + j) % 251) as u8).collect() };
    let n = 300;
    let mut c = node.client();
    let mut load = redis::pipe();
    for i in 0..n {
        load.set(format!("k{i}"), value(i)).ignore();
    }
    let () = load.query(&mut c).unwrap();
    let mut raw = node.raw();
    for i in 0..n {
        let key = format!("k{i}");
        raw.send(&meridian_tests::encode_command(&[
            "SET", &key, "new", "GET",
        ]));
        // One write per turn of the connection (each waits for its own entry).
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    for i in 0..n {
        match raw.read_reply() {
            meridian_tests::Reply::Bulk(old) => {
                assert!(old == value(i), "reply {i} came back different")
            }
            other => panic!("reply {i}: {other:?}"),
        }
    }
    assert_eq!(q::<String>(&mut c, &["GET", &format!("k{}", n - 1)]), "new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_multiplexed_concurrent_incr() {
    let node = Node::start(NodeOpts::default());
    for resp3 in [false, true] {
        let con = if resp3 {
            node.async_client_resp3().await
        } else {
            node.async_client().await
        };
        let key = if resp3 { "c3" } else { "c2" };
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let mut con = con.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..100 {
                    let _: i64 = qa(&mut con, &["INCR", key]).await;
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        let mut con = con;
        assert_eq!(qa::<i64>(&mut con, &["GET", key]).await, 2000);
    }
}

/// GETBIT, SETBIT, BITCOUNT and BITPOS (replies checked side by side with redis-server 7.0.15,
/// including their error texts and range rules), over RESP2 and RESP3.
#[test]
fn bit_commands() {
    let node = Node::start(NodeOpts::default());
    for mut c in [node.client(), node.client_resp3()] {
        let _: () = q(&mut c, &["DEL", "bits", "fb"]);
        assert_eq!(q::<i64>(&mut c, &["SETBIT", "bits", "7", "1"]), 0);
        assert_eq!(q::<i64>(&mut c, &["SETBIT", "bits", "7", "1"]), 1);
        assert_eq!(q::<i64>(&mut c, &["SETBIT", "bits", "100", "1"]), 0);
        assert_eq!(q::<i64>(&mut c, &["STRLEN", "bits"]), 13);
        assert_eq!(q::<i64>(&mut c, &["GETBIT", "bits", "7"]), 1);
        assert_eq!(q::<i64>(&mut c, &["GETBIT", "bits", "6"]), 0);
        assert_eq!(q::<i64>(&mut c, &["GETBIT", "bits", "1000"]), 0);
        assert_eq!(q::<i64>(&mut c, &["BITCOUNT", "bits"]), 2);
        assert_eq!(q::<i64>(&mut c, &["BITPOS", "bits", "1"]), 7);
        assert_eq!(
            q::<i64>(&mut c, &["BITPOS", "bits", "1", "8", "-1", "BIT"]),
            100
        );
        let _: () = q(&mut c, &["SET", "fb", "foobar"]);
        assert_eq!(q::<i64>(&mut c, &["BITCOUNT", "fb"]), 26);
        assert_eq!(q::<i64>(&mut c, &["BITCOUNT", "fb", "1", "1"]), 6);
        assert_eq!(q::<i64>(&mut c, &["BITCOUNT", "fb", "5", "30", "BIT"]), 17);
        assert_eq!(q::<i64>(&mut c, &["BITCOUNT", "nosuch", "x", "1"]), 0);
        assert_eq!(q::<i64>(&mut c, &["BITPOS", "fb", "0"]), 0);
        assert_eq!(q::<i64>(&mut c, &["BITPOS", "nosuch", "0"]), 0);
        assert_eq!(q::<i64>(&mut c, &["BITPOS", "nosuch", "1"]), -1);
        for (args, err) in [
            (
                &["SETBIT", "bits", "-1", "1"][..],
                "ERR bit offset is not an integer or out of range",
            ),
            (
                &["SETBIT", "bits", "4294967296", "1"],
                "ERR bit offset is not an integer or out of range",
            ),
            (
                &["SETBIT", "bits", "1", "2"],
                "ERR bit is not an integer or out of range",
            ),
            (
                &["BITPOS", "bits", "2"],
                "ERR The bit argument must be 1 or 0.",
            ),
            (&["BITCOUNT", "fb", "0"], "ERR syntax error"),
            (&["BITCOUNT", "fb", "0", "1", "WORD"], "ERR syntax error"),
        ] {
            assert_eq!(q_err(&mut c, args), err, "{args:?}");
        }
    }
}

/// BITOP AND/OR/XOR/NOT (replies and stored results checked side by side with redis-server
/// 7.0.15): shorter sources read as zeros, an all-empty result deletes the destination, the
/// destination loses its TTL.
#[test]
fn bitop() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client();
    let _: () = q(&mut c, &["MSET", "a", "foobar", "b", "abcdef", "s1", "ab"]);
    assert_eq!(q::<i64>(&mut c, &["BITOP", "AND", "dest", "a", "b"]), 6);
    assert_eq!(q::<String>(&mut c, &["GET", "dest"]), "`bc`ab");
    assert_eq!(q::<i64>(&mut c, &["BITOP", "or", "dest", "a", "b"]), 6);
    assert_eq!(q::<String>(&mut c, &["GET", "dest"]), "goofev");
    assert_eq!(q::<i64>(&mut c, &["BITOP", "XOR", "dest", "a", "s1"]), 6);
    assert_eq!(
        q::<Vec<u8>>(&mut c, &["GET", "dest"]),
        b"\x07\x0dobar".to_vec()
    );
    assert_eq!(q::<i64>(&mut c, &["BITOP", "AND", "dest", "a", "s1"]), 6);
    assert_eq!(
        q::<Vec<u8>>(&mut c, &["GET", "dest"]),
        b"`b\0\0\0\0".to_vec()
    );
    assert_eq!(q::<i64>(&mut c, &["BITOP", "NOT", "dest", "s1"]), 2);
    assert_eq!(q::<Vec<u8>>(&mut c, &["GET", "dest"]), vec![!b'a', !b'b']);
    // The destination is overwritten with no TTL; nothing to combine deletes it.
    let _: () = q(&mut c, &["EXPIRE", "dest", "100"]);
    assert_eq!(q::<i64>(&mut c, &["BITOP", "OR", "dest", "s1"]), 2);
    assert_eq!(q::<i64>(&mut c, &["TTL", "dest"]), -1);
    assert_eq!(q::<i64>(&mut c, &["BITOP", "AND", "dest", "no1", "no2"]), 0);
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "dest"]), 0);
    for (args, err) in [
        (
            &["BITOP", "NOT", "dest", "a", "b"][..],
            "ERR BITOP NOT must be called with a single source key.",
        ),
        (&["BITOP", "NAND", "dest", "a"], "ERR syntax error"),
        (
            &["BITOP", "AND", "dest"],
            "ERR wrong number of arguments for 'bitop' command",
        ),
    ] {
        assert_eq!(q_err(&mut c, args), err, "{args:?}");
    }
}

/// LCS with LEN, IDX, MINMATCHLEN and WITHMATCHLEN (Redis's documented example, replies
/// checked side by side with redis-server 7.0.15), in RESP2 and RESP3, and its limits.
#[test]
fn lcs() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client();
    let _: () = q(&mut c, &["MSET", "key1", "ohmytext", "key2", "mynewtext"]);
    assert_eq!(q::<String>(&mut c, &["LCS", "key1", "key2"]), "mytext");
    assert_eq!(q::<i64>(&mut c, &["LCS", "key1", "key2", "LEN"]), 6);
    assert_eq!(q::<String>(&mut c, &["LCS", "key1", "nosuch"]), "");
    let int = Value::Int;
    let pair = |a, b| Value::Array(vec![int(a), int(b)]);
    let matches = Value::Array(vec![
        Value::Array(vec![pair(4, 7), pair(5, 8), int(4)]),
        Value::Array(vec![pair(2, 3), pair(0, 1), int(2)]),
    ]);
    assert_eq!(
        q::<Value>(&mut c, &["LCS", "key1", "key2", "IDX", "WITHMATCHLEN"]),
        Value::Array(vec![
            Value::BulkString(b"matches".to_vec()),
            matches.clone(),
            Value::BulkString(b"len".to_vec()),
            int(6),
        ])
    );
    let mut c3 = node.client_resp3();
    assert_eq!(
        q::<Value>(&mut c3, &["LCS", "key1", "key2", "IDX", "WITHMATCHLEN"]),
        Value::Map(vec![
            (Value::BulkString(b"matches".to_vec()), matches),
            (Value::BulkString(b"len".to_vec()), int(6)),
        ])
    );
    assert_eq!(
        q::<Value>(&mut c, &["LCS", "key1", "key2", "IDX", "MINMATCHLEN", "4"]),
        Value::Array(vec![
            Value::BulkString(b"matches".to_vec()),
            Value::Array(vec![Value::Array(vec![pair(4, 7), pair(5, 8)])]),
            Value::BulkString(b"len".to_vec()),
            int(6),
        ])
    );
    assert_eq!(
        q_err(&mut c, &["LCS", "key1", "key2", "LEN", "IDX"]),
        "ERR If you want both the length and indexes, please just use IDX."
    );
    assert_eq!(
        q_err(&mut c, &["LCS", "key1", "key2", "MINMATCHLEN"]),
        "ERR syntax error"
    );
    // The table of two 20,000-byte strings (1.6 GB) is over proto-max-bulk-len.
    let long = "a".repeat(20_000);
    let _: () = q(&mut c, &["MSET", "l1", &long, "l2", &long]);
    assert_eq!(
        q_err(&mut c, &["LCS", "l1", "l2"]),
        "ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len"
    );
}

/// BITFIELD and BITFIELD_RO: field types, `#n` offsets, the three OVERFLOW rules, the string
/// grown for writes, and the error texts (replies checked side by side with redis-server
/// 7.0.15).
#[test]
fn bitfield() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client();
    let ints = |v: &[Option<i64>]| {
        Value::Array(v.iter().map(|x| x.map_or(Value::Nil, Value::Int)).collect())
    };
    let bf = |c: &mut redis::Connection, args: &[&str]| q::<Value>(c, args);
    assert_eq!(
        bf(
            &mut c,
            &["BITFIELD", "k", "SET", "i8", "0", "100", "GET", "i8", "0"]
        ),
        ints(&[Some(0), Some(100)])
    );
    assert_eq!(
        bf(
            &mut c,
            &["BITFIELD", "k", "INCRBY", "i8", "0", "100", "GET", "u4", "0"]
        ),
        ints(&[Some(-56), Some(12)])
    );
    assert_eq!(
        bf(
            &mut c,
            &["BITFIELD", "k", "SET", "u8", "#1", "255", "GET", "u8", "8"]
        ),
        ints(&[Some(0), Some(255)])
    );
    assert_eq!(q::<Vec<u8>>(&mut c, &["GET", "k"]), vec![0xc8, 0xff]);
    let sat = [
        "BITFIELD", "k", "OVERFLOW", "SAT", "INCRBY", "u2", "100", "5", "OVERFLOW", "FAIL",
        "INCRBY", "u2", "102", "5", "OVERFLOW", "WRAP", "INCRBY", "u2", "104", "5",
    ];
    assert_eq!(bf(&mut c, &sat), ints(&[Some(3), None, Some(1)]));
    assert_eq!(
        q::<i64>(&mut c, &["STRLEN", "k"]),
        14,
        "grown for the writes"
    );
    assert_eq!(
        bf(
            &mut c,
            &["BITFIELD", "k", "OVERFLOW", "SAT", "INCRBY", "i64", "200", "-1"]
        ),
        ints(&[Some(-1)])
    );
    assert_eq!(
        bf(
            &mut c,
            &["BITFIELD_RO", "k", "GET", "u8", "0", "GET", "i8", "#1"]
        ),
        ints(&[Some(200), Some(-1)])
    );
    assert_eq!(
        bf(&mut c, &["BITFIELD_RO", "nosuch", "GET", "u8", "0"]),
        ints(&[Some(0)])
    );
    assert_eq!(
        bf(&mut c, &["BITFIELD", "nosuch", "GET", "u8", "0"]),
        ints(&[Some(0)])
    );
    assert_eq!(
        q::<i64>(&mut c, &["EXISTS", "nosuch"]),
        0,
        "a GET creates nothing"
    );
    for (args, err) in [
        (
            &["BITFIELD_RO", "k", "SET", "u8", "0", "1"][..],
            "ERR BITFIELD_RO only supports the GET subcommand",
        ),
        (
            &["BITFIELD", "k", "GET", "u64", "0"],
            "ERR Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is.",
        ),
        (
            &["BITFIELD", "k", "GET", "u8", "-1"],
            "ERR bit offset is not an integer or out of range",
        ),
        (
            &["BITFIELD", "k", "OVERFLOW", "FOO", "GET", "u8", "0"],
            "ERR Invalid OVERFLOW type specified",
        ),
        (&["BITFIELD", "k", "SET", "u8", "0"], "ERR syntax error"),
        (
            &["BITFIELD", "k", "INCRBY", "u8", "0", "x"],
            "ERR value is not an integer or out of range",
        ),
    ] {
        assert_eq!(q_err(&mut c, args), err, "{args:?}");
    }
}

/// INCRBYFLOAT reads the stored value before it refuses an infinite increment, as Redis
/// 7.0.15 does (replies checked side by side with it; found by `meridian-bench diff`): a key
/// holding "abc" answers "not a valid float" for `inf` too, a number or a missing key "would
/// produce NaN or Infinity", and nothing is stored.
#[test]
fn incrbyfloat_reads_the_value_before_an_infinite_increment() {
    let node = Node::start(NodeOpts::default());
    for mut c in [node.client(), node.client_resp3()] {
        let _: () = q(&mut c, &["SET", "f", "abc"]);
        for inc in ["inf", "+inf", "-inf", "infinity"] {
            assert_eq!(
                q_err(&mut c, &["INCRBYFLOAT", "f", inc]),
                "ERR value is not a valid float",
                "{inc}"
            );
        }
        let _: () = q(&mut c, &["SET", "f", "1.5"]);
        for (key, inc) in [("f", "inf"), ("missing", "-inf")] {
            assert_eq!(
                q_err(&mut c, &["INCRBYFLOAT", key, inc]),
                "ERR increment would produce NaN or Infinity"
            );
        }
        assert_eq!(
            q_err(&mut c, &["INCRBYFLOAT", "f", "nan"]),
            "ERR value is not a valid float"
        );
        assert_eq!(q::<String>(&mut c, &["GET", "f"]), "1.5");
        assert_eq!(q::<i64>(&mut c, &["EXISTS", "missing"]), 0);
    }
}

/// SETRANGE of an empty value answers the string's length (0 for a missing key) without the
/// 512 MB limit check, whatever the offset, as Redis 7.0.15 does (replies checked side by side
/// with it; found by `meridian-bench diff`); a negative offset is still refused first.
#[test]
fn setrange_of_nothing_is_not_held_to_the_size_limit() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client();
    let _: () = q(&mut c, &["SET", "s", "hello"]);
    assert_eq!(
        q::<i64>(&mut c, &["SETRANGE", "s", "9223372036854775807", ""]),
        5
    );
    assert_eq!(
        q::<i64>(&mut c, &["SETRANGE", "missing", "536870912", ""]),
        0
    );
    assert_eq!(
        q_err(&mut c, &["SETRANGE", "s", "536870912", "x"]),
        "ERR string exceeds maximum allowed size (proto-max-bulk-len)"
    );
    assert_eq!(
        q_err(&mut c, &["SETRANGE", "s", "-1", ""]),
        "ERR offset is out of range"
    );
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "missing"]), 0);
    assert_eq!(q::<String>(&mut c, &["GET", "s"]), "hello");
}

/// BITCOUNT with two negative positions in the wrong order counts 0 before it reads the unit
/// or clamps them, as Redis 7.0.15 does (replies checked side by side with it; found by
/// `meridian-bench diff`); BITPOS has no such rule.
#[test]
fn bitcount_of_a_reversed_negative_range() {
    let node = Node::start(NodeOpts::default());
    for mut c in [node.client(), node.client_resp3()] {
        let _: () = q(&mut c, &["SET", "b", "abcdefghij"]);
        for (args, n) in [
            (&["BITCOUNT", "b", "-11", "-16"][..], 0),
            (&["BITCOUNT", "b", "-1", "-16", "BIT"], 0),
            (&["BITCOUNT", "b", "-5", "-15", "WORD"], 0),
            (&["BITCOUNT", "b", "-16", "-11"], 3),
            (&["BITCOUNT", "b", "-1", "-1"], 4),
            (&["BITPOS", "b", "1", "-1", "-16"], -1),
        ] {
            assert_eq!(q::<i64>(&mut c, args), n, "{args:?}");
        }
        assert_eq!(
            q_err(&mut c, &["BITCOUNT", "b", "-5", "15", "WORD"]),
            "ERR syntax error"
        );
    }
}

/// INCRBYFLOAT refuses a stored value or an increment past the range of a long double as "not
/// a valid float", as Redis 7.0.15 does (its `strtold` fails with ERANGE; replies checked side
/// by side with it; found by `meridian-bench diff`: a SET of 1.7976931348623157e308 and an
/// APPEND of 10). Between a double's range and a long double's Meridian answers "increment
/// would produce NaN or Infinity" (README), not tested here.
#[test]
fn incrbyfloat_refuses_numbers_past_a_long_double() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client();
    for text in ["1.7976931348623157e30810", "-1e4933", "1e-5000"] {
        let _: () = q(&mut c, &["SET", "x", text]);
        assert_eq!(
            q_err(&mut c, &["INCRBYFLOAT", "x", "-51"]),
            "ERR value is not a valid float",
            "{text}"
        );
        assert_eq!(
            q_err(&mut c, &["INCRBYFLOAT", "missing", text]),
            "ERR value is not a valid float",
            "{text}"
        );
    }
    let _: () = q(&mut c, &["SET", "x", "1e-400"]);
    assert_eq!(q::<String>(&mut c, &["INCRBYFLOAT", "x", "1"]), "1");
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "missing"]), 0);
}

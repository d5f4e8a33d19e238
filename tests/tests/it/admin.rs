//! Connection and server commands: AUTH with requirepass, HELLO 2/3, CLIENT, COMMAND, CONFIG,
//! INFO, TIME, and the Prometheus endpoint.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meridian_tests::{err_text, q, q_err, qa, Node, NodeOpts, Reply};
use redis::Value;

const PW: &str = "s3cret-pw";
const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

#[test]
fn auth_with_requirepass() {
    let node = Node::start(NodeOpts::default().requirepass(PW));
    let mut c = node.raw();
    // Before AUTH everything but AUTH/HELLO/QUIT is refused.
    for args in [
        &["PING"][..],
        &["GET", "k"],
        &["SET", "k", "v"],
        &["CLIENT", "ID"],
    ] {
        assert_eq!(
            c.cmd(args),
            Reply::err("NOAUTH Authentication required."),
            "{args:?}"
        );
    }
    assert_eq!(
        c.cmd(&["HELLO", "3"]),
        Reply::err(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the \
             HELLO AUTH <user> <pass> option can be used to authenticate the client and select \
             the RESP protocol version at the same time"
        )
    );
    assert_eq!(c.cmd(&["AUTH", "wrong"]), Reply::err(WRONGPASS));
    assert_eq!(c.cmd(&["AUTH", "default", "wrong"]), Reply::err(WRONGPASS));
    assert_eq!(
        c.cmd(&["HELLO", "3", "AUTH", "default", "wrong"]),
        Reply::err(WRONGPASS)
    );
    assert_eq!(
        c.cmd(&["GET", "k"]),
        Reply::err("NOAUTH Authentication required.")
    );
    assert_eq!(c.cmd(&["AUTH", PW]), Reply::ok());
    assert_eq!(c.cmd(&["SET", "k", "v"]), Reply::ok());
    assert_eq!(c.cmd(&["GET", "k"]), Reply::bulk("v"));
    // `AUTH default PW` works too.
    let mut c2 = node.raw();
    assert_eq!(c2.cmd(&["AUTH", "default", PW]), Reply::ok());
    assert_eq!(c2.cmd(&["GET", "k"]), Reply::bulk("v"));
    // HELLO with AUTH and SETNAME in one step.
    let mut c3 = node.raw();
    let hello = c3.cmd(&["HELLO", "3", "AUTH", "default", PW, "SETNAME", "me"]);
    assert!(matches!(hello, Reply::Map(_)), "{hello:?}");
    assert_eq!(c3.cmd(&["CLIENT", "GETNAME"]), Reply::bulk("me"));
    assert_eq!(c3.cmd(&["GET", "missing"]), Reply::Null);

    // The redis crate: password in the URL (AUTH for RESP2, HELLO 3 AUTH for RESP3).
    let mut rc = node.client();
    assert_eq!(q::<String>(&mut rc, &["GET", "k"]), "v");
    let mut rc3 = node.client_resp3();
    assert_eq!(q::<String>(&mut rc3, &["GET", "k"]), "v");
    let bad = redis::Client::open(node.url_with(false, Some("nope")))
        .unwrap()
        .get_connection();
    let e = bad
        .err()
        .expect("a wrong password must fail the connection");
    assert_eq!(
        e.kind(),
        redis::ErrorKind::AuthenticationFailed,
        "{}",
        err_text(&e)
    );
    let mut unauth = redis::Client::open(node.url_with(false, None))
        .unwrap()
        .get_connection()
        .unwrap();
    assert_eq!(
        q_err(&mut unauth, &["GET", "k"]),
        "NOAUTH Authentication required."
    );
}

#[test]
fn auth_without_requirepass() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client();
    assert_eq!(
        q_err(&mut c, &["AUTH", "x"]),
        "ERR AUTH <password> called without any password configured for the default user. \
         Are you sure your configuration is correct?"
    );
    assert_eq!(
        q_err(&mut c, &["AUTH"]),
        "ERR wrong number of arguments for 'auth' command"
    );
    assert_eq!(q::<String>(&mut c, &["PING"]), "PONG");
}

/// `HELLO` reply fields by name, from a RESP2 flat array or a RESP3 map.
fn hello_fields(v: &Value) -> HashMap<String, Value> {
    let pairs: Vec<(Value, Value)> = match v {
        Value::Map(m) => m.clone(),
        Value::Array(a) => a.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect(),
        other => panic!("HELLO reply is neither map nor array: {other:?}"),
    };
    pairs
        .into_iter()
        .map(|(k, v)| (redis::from_redis_value::<String>(&k).unwrap(), v))
        .collect()
}

#[test]
fn hello_2_and_3() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client();
    let v2: Value = q(&mut c, &["HELLO", "2"]);
    assert!(
        matches!(v2, Value::Array(_)),
        "HELLO 2 in RESP2 is a flat array"
    );
    let f2 = hello_fields(&v2);
    assert_eq!(f2["proto"], Value::Int(2));
    for k in [
        "server", "version", "proto", "id", "mode", "role", "modules",
    ] {
        assert!(f2.contains_key(k), "HELLO 2 lacks {k}: {f2:?}");
    }
    assert_eq!(
        redis::from_redis_value::<String>(&f2["mode"]).unwrap(),
        "standalone"
    );
    assert_eq!(
        redis::from_redis_value::<String>(&f2["role"]).unwrap(),
        "master"
    );
    let id: i64 = q(&mut c, &["CLIENT", "ID"]);
    assert_eq!(f2["id"], Value::Int(id));
    // No argument: current protocol.
    let v: Value = q(&mut c, &["HELLO"]);
    assert_eq!(hello_fields(&v)["proto"], Value::Int(2));

    let v3: Value = q(&mut c, &["HELLO", "3", "SETNAME", "conn-a"]);
    assert!(matches!(v3, Value::Map(_)), "HELLO 3 answers a map: {v3:?}");
    assert_eq!(hello_fields(&v3)["proto"], Value::Int(3));
    assert_eq!(q::<String>(&mut c, &["CLIENT", "GETNAME"]), "conn-a");

    assert_eq!(
        q_err(&mut c, &["HELLO", "4"]),
        "NOPROTO unsupported protocol version"
    );
    assert_eq!(
        q_err(&mut c, &["HELLO", "1"]),
        "NOPROTO unsupported protocol version"
    );
    assert_eq!(
        q_err(&mut c, &["HELLO", "abc"]),
        "ERR Protocol version is not an integer or out of range"
    );
    assert_eq!(
        q_err(&mut c, &["HELLO", "3", "AUTH"]),
        "ERR Syntax error in HELLO option 'AUTH'"
    );
    assert_eq!(
        q_err(&mut c, &["HELLO", "3", "SETNAME"]),
        "ERR Syntax error in HELLO option 'SETNAME'"
    );
    assert_eq!(
        q_err(&mut c, &["HELLO", "3", "SETNAME", "a b"]),
        "ERR Client names cannot contain spaces, newlines or special characters."
    );

    // The redis crate's RESP3 connection (it sends HELLO 3 itself).
    let mut c3 = node.client_resp3();
    let v: Value = q(&mut c3, &["HELLO"]);
    assert!(matches!(v, Value::Map(_)));
    assert_eq!(hello_fields(&v)["proto"], Value::Int(3));
}

/// Parses one `CLIENT LIST`/`CLIENT INFO` line into its fields.
fn client_fields(line: &str) -> HashMap<String, String> {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn client_id_setname_getname_list_info() {
    let node = Node::start(NodeOpts::default());
    let mut a = node.client();
    let mut b = node.client();
    let ida: i64 = q(&mut a, &["CLIENT", "ID"]);
    let idb: i64 = q(&mut b, &["CLIENT", "ID"]);
    assert_ne!(ida, idb);
    assert!(ida > 0 && idb > 0);
    assert_eq!(q::<Value>(&mut a, &["CLIENT", "GETNAME"]), Value::Nil);
    assert_eq!(
        q::<Value>(&mut a, &["CLIENT", "SETNAME", "alpha"]),
        Value::Okay
    );
    assert_eq!(q::<String>(&mut a, &["CLIENT", "GETNAME"]), "alpha");
    assert_eq!(
        q_err(&mut a, &["CLIENT", "SETNAME", "has space"]),
        "ERR Client names cannot contain spaces, newlines or special characters."
    );
    assert_eq!(q::<String>(&mut a, &["CLIENT", "GETNAME"]), "alpha");

    let info: String = q(&mut a, &["CLIENT", "INFO"]);
    let f = client_fields(info.trim_end());
    assert_eq!(f["id"], ida.to_string());
    assert_eq!(f["name"], "alpha");
    assert_eq!(f["db"], "0");
    assert!(f["addr"].starts_with("127.0.0.1:"), "{info}");
    assert!(info.ends_with('\n'), "CLIENT INFO ends with a newline");

    let _: () = q(&mut b, &["SELECT", "5"]);
    let list: String = q(&mut a, &["CLIENT", "LIST"]);
    let lines: Vec<HashMap<String, String>> = list.lines().map(client_fields).collect();
    let la = lines
        .iter()
        .find(|l| l["id"] == ida.to_string())
        .expect("a in CLIENT LIST");
    assert_eq!(la["name"], "alpha");
    let lb = lines
        .iter()
        .find(|l| l["id"] == idb.to_string())
        .expect("b in CLIENT LIST");
    assert_eq!(lb["name"], "");
    assert_eq!(lb["db"], "5");
    // The command each one ran last (CLIENT LIST itself for a).
    assert_eq!(lb["cmd"], "select");
    assert_eq!(la["cmd"], "client");
    // An empty name clears it.
    assert_eq!(q::<Value>(&mut a, &["CLIENT", "SETNAME", ""]), Value::Okay);
    assert_eq!(q::<Value>(&mut a, &["CLIENT", "GETNAME"]), Value::Nil);
    // A closed client leaves the list.
    drop(b);
    eventually_client_gone(&mut a, idb);

    assert_eq!(
        q::<Value>(&mut a, &["CLIENT", "NO-EVICT", "on"]),
        Value::Okay
    );
    assert_eq!(
        q::<Value>(&mut a, &["CLIENT", "NO-EVICT", "off"]),
        Value::Okay
    );
    assert_eq!(
        q_err(&mut a, &["CLIENT", "NO-EVICT", "maybe"]),
        "ERR syntax error"
    );
    assert_eq!(
        q_err(&mut a, &["CLIENT", "BOGUS"]),
        "ERR unknown subcommand 'BOGUS'. Try CLIENT HELP."
    );
    assert_eq!(
        q_err(&mut a, &["CLIENT", "GETNAME", "x"]),
        "ERR wrong number of arguments for 'client|getname' command"
    );
    assert_eq!(
        q_err(&mut a, &["CLIENT"]),
        "ERR wrong number of arguments for 'client' command"
    );
}

fn eventually_client_gone(c: &mut redis::Connection, id: i64) {
    meridian_tests::eventually(
        Duration::from_secs(5),
        "closed client to leave CLIENT LIST",
        || {
            let list: String = q(c, &["CLIENT", "LIST"]);
            if list
                .lines()
                .any(|l| client_fields(l)["id"] == id.to_string())
            {
                anyhow::bail!("id {id} still listed");
            }
            Ok(())
        },
    );
}

#[test]
fn client_reply_off_and_skip_silence_replies() {
    let node = Node::start(NodeOpts::default());
    let mut raw = meridian_tests::RawConn::connect(node.port()).unwrap();
    let send = |raw: &mut meridian_tests::RawConn, args: &[&str]| {
        raw.send(&meridian_tests::encode_command(args));
    };
    // OFF: nothing comes back (OFF itself, a write, a read, an error) until ON answers OK.
    send(&mut raw, &["CLIENT", "REPLY", "OFF"]);
    send(&mut raw, &["SET", "a", "1"]);
    send(&mut raw, &["GET", "a"]);
    send(&mut raw, &["INCR", "nosuchcommand-arity", "x"]);
    send(&mut raw, &["CLIENT", "REPLY", "ON"]);
    assert_eq!(raw.read_reply(), Reply::ok());
    // SKIP: only the next command goes unanswered.
    send(&mut raw, &["CLIENT", "REPLY", "SKIP"]);
    send(&mut raw, &["SET", "a", "2"]);
    send(&mut raw, &["GET", "a"]);
    assert_eq!(raw.read_reply(), Reply::bulk("2"));
    assert_eq!(
        raw.cmd(&["CLIENT", "REPLY", "maybe"]),
        Reply::err("ERR syntax error")
    );
    // The silenced write was applied.
    let mut c = node.client();
    assert_eq!(q::<String>(&mut c, &["GET", "a"]), "2");
    // A broken frame still closes the connection, without its error text (as Redis).
    send(&mut raw, &["CLIENT", "REPLY", "OFF"]);
    raw.send(b"*1\r\n$x\r\n");
    raw.expect_closed(Duration::from_secs(5));
}

/// Whether the caller is the only connection CLIENT LIST shows (None if it failed).
fn admin_alone(admin: &mut meridian_tests::RawConn) -> Option<bool> {
    let list = admin.cmd(&["CLIENT", "LIST"]).as_text()?;
    Some(list.lines().filter(|l| !l.trim().is_empty()).count() == 1)
}

#[test]
fn client_kill_closes_the_connections_it_names() {
    let node = Node::start(NodeOpts::default());
    let mut admin = node.raw();
    let mut victim = node.raw();
    let mut other = node.raw();
    let id = |c: &mut meridian_tests::RawConn| match c.cmd(&["CLIENT", "ID"]) {
        Reply::Int(n) => n,
        r => panic!("CLIENT ID: {r:?}"),
    };
    let addr = |c: &mut meridian_tests::RawConn| {
        let info = c.cmd(&["CLIENT", "INFO"]).as_text().expect("CLIENT INFO");
        client_fields(info.trim_end())["addr"].clone()
    };
    let victim_id = id(&mut victim);
    let other_addr = addr(&mut other);
    let admin_addr = addr(&mut admin);
    // By id: counted, and the connection is closed.
    assert_eq!(
        admin.cmd(&["CLIENT", "KILL", "ID", &victim_id.to_string()]),
        Reply::Int(1)
    );
    victim.expect_closed(Duration::from_secs(5));
    assert_eq!(
        admin.cmd(&["CLIENT", "KILL", "ID", &victim_id.to_string()]),
        Reply::Int(0)
    );
    // The old form, by address: OK, or an error when nobody has it.
    assert_eq!(admin.cmd(&["CLIENT", "KILL", &other_addr]), Reply::ok());
    other.expect_closed(Duration::from_secs(5));
    assert_eq!(
        admin.cmd(&["CLIENT", "KILL", &other_addr]),
        Reply::err("ERR No such client")
    );
    // Filters that name nobody, and bad ones (Redis 7.0's replies).
    assert_eq!(
        admin.cmd(&["CLIENT", "KILL", "TYPE", "pubsub"]),
        Reply::Int(0)
    );
    // USER default names every connection but the caller: the harness's readiness probe
    // may still be closing on a loaded machine, so wait until the admin is alone.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while admin_alone(&mut admin) == Some(false) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        admin.cmd(&["CLIENT", "KILL", "USER", "default"]),
        Reply::Int(0)
    );
    for (args, err) in [
        (
            &["CLIENT", "KILL", "ID", "0"][..],
            "ERR client-id should be greater than 0",
        ),
        (
            &["CLIENT", "KILL", "TYPE", "foo"],
            "ERR Unknown client type 'foo'",
        ),
        (&["CLIENT", "KILL", "USER", "bob"], "ERR No such user 'bob'"),
        (&["CLIENT", "KILL", "SKIPME", "maybe"], "ERR syntax error"),
        (&["CLIENT", "KILL", "ID", "1", "ADDR"], "ERR syntax error"),
        (&["CLIENT", "KILL", "NOSUCH", "1"], "ERR syntax error"),
    ] {
        assert_eq!(admin.cmd(args), Reply::err(err), "{args:?}");
    }
    // The caller is skipped unless SKIPME no; then it gets its reply and is closed.
    assert_eq!(
        admin.cmd(&["CLIENT", "KILL", "ADDR", &admin_addr]),
        Reply::Int(0)
    );
    assert_eq!(
        admin.cmd(&["CLIENT", "KILL", "ADDR", &admin_addr, "SKIPME", "no"]),
        Reply::Int(1)
    );
    admin.expect_closed(Duration::from_secs(5));
    // The node goes on serving everyone else.
    let mut c = node.client();
    assert_eq!(q::<String>(&mut c, &["PING"]), "PONG");
}

#[test]
fn client_pause_holds_commands_back_until_it_ends() {
    let node = Node::start(NodeOpts::default());
    let mut admin = node.raw();
    let mut other = node.raw();
    let send = |c: &mut meridian_tests::RawConn, args: &[&str]| {
        c.send(&meridian_tests::encode_command(args));
    };
    // ALL: every command waits, even UNPAUSE from another client (as in Redis), until the end.
    assert_eq!(admin.cmd(&["CLIENT", "PAUSE", "700"]), Reply::ok());
    let t = std::time::Instant::now();
    send(&mut other, &["GET", "k"]);
    other.expect_silence(Duration::from_millis(300));
    assert!(other.read_reply().is_null());
    assert!(
        t.elapsed() >= Duration::from_millis(600),
        "{:?}",
        t.elapsed()
    );
    // WRITE: reads go on, writes wait until UNPAUSE.
    assert_eq!(
        admin.cmd(&["CLIENT", "PAUSE", "60000", "WRITE"]),
        Reply::ok()
    );
    assert!(other.cmd(&["GET", "k"]).is_null());
    send(&mut other, &["SET", "k", "v"]);
    other.expect_silence(Duration::from_millis(300));
    assert!(admin.cmd(&["GET", "k"]).is_null(), "the write waited");
    // PUBLISH waits too, as in Redis 7.0 (it may replicate).
    let mut publisher = node.raw();
    send(&mut publisher, &["PUBLISH", "ch", "m"]);
    publisher.expect_silence(Duration::from_millis(200));
    assert_eq!(admin.cmd(&["CLIENT", "UNPAUSE"]), Reply::ok());
    assert_eq!(other.read_reply(), Reply::ok());
    assert_eq!(publisher.read_reply(), Reply::Int(0));
    assert_eq!(admin.cmd(&["GET", "k"]), Reply::bulk("v"));
    // A client killed while it waits is closed, not left waiting.
    assert_eq!(
        admin.cmd(&["CLIENT", "PAUSE", "60000", "WRITE"]),
        Reply::ok()
    );
    let id = match other.cmd(&["CLIENT", "ID"]) {
        Reply::Int(n) => n,
        r => panic!("CLIENT ID: {r:?}"),
    };
    send(&mut other, &["SET", "k", "w"]);
    other.expect_silence(Duration::from_millis(200));
    assert_eq!(
        admin.cmd(&["CLIENT", "KILL", "ID", &id.to_string()]),
        Reply::Int(1)
    );
    other.expect_closed(Duration::from_secs(5));
    assert_eq!(admin.cmd(&["CLIENT", "UNPAUSE"]), Reply::ok());
    assert_eq!(admin.cmd(&["GET", "k"]), Reply::bulk("v"));
    for (args, err) in [
        (
            &["CLIENT", "PAUSE", "abc"][..],
            "ERR timeout is not an integer or out of range",
        ),
        (&["CLIENT", "PAUSE", "-1"], "ERR timeout is negative"),
        (
            &["CLIENT", "PAUSE", "10", "FOO"],
            "ERR CLIENT PAUSE mode must be WRITE or ALL",
        ),
        (
            &["CLIENT", "PAUSE"],
            "ERR wrong number of arguments for 'client|pause' command",
        ),
        (
            &["CLIENT", "UNPAUSE", "x"],
            "ERR wrong number of arguments for 'client|unpause' command",
        ),
    ] {
        assert_eq!(admin.cmd(args), Reply::err(err), "{args:?}");
    }
}

/// Redis 7.2 additions the issue asks for; redis-server 7.0.15 rejects them.
#[test]
fn client_setinfo_and_no_touch_accepted() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client();
    assert_eq!(
        q::<Value>(&mut c, &["CLIENT", "SETINFO", "LIB-NAME", "meridian-tests"]),
        Value::Okay
    );
    assert_eq!(
        q::<Value>(&mut c, &["CLIENT", "SETINFO", "LIB-VER", "1.0"]),
        Value::Okay
    );
    assert_eq!(
        q::<Value>(&mut c, &["CLIENT", "NO-TOUCH", "on"]),
        Value::Okay
    );
    assert_eq!(
        q::<Value>(&mut c, &["CLIENT", "NO-TOUCH", "off"]),
        Value::Okay
    );
}

/// Arity of every command of issue 2, as redis-server 7.0.15's COMMAND INFO reports it.
const ARITIES: &[(&str, i64)] = &[
    ("ping", -1),
    ("echo", 2),
    ("quit", -1),
    ("hello", -1),
    ("select", 2),
    ("auth", -2),
    ("client", -2),
    ("command", -1),
    ("config", -2),
    ("info", -1),
    ("dbsize", 1),
    ("flushdb", -1),
    ("flushall", -1),
    ("time", 1),
    ("type", 2),
    ("exists", -2),
    ("del", -2),
    ("unlink", -2),
    ("keys", 2),
    ("scan", -2),
    ("randomkey", 1),
    ("rename", 3),
    ("renamenx", 3),
    ("copy", -3),
    ("get", 2),
    ("set", -3),
    ("setnx", 3),
    ("setex", 4),
    ("psetex", 4),
    ("getset", 3),
    ("getdel", 2),
    ("getex", -2),
    ("mget", -2),
    ("mset", -3),
    ("msetnx", -3),
    ("append", 3),
    ("strlen", 2),
    ("getrange", 4),
    ("setrange", 4),
    ("incr", 2),
    ("decr", 2),
    ("incrby", 3),
    ("decrby", 3),
    ("incrbyfloat", 3),
    ("expire", -3),
    ("pexpire", -3),
    ("expireat", -3),
    ("pexpireat", -3),
    ("ttl", 2),
    ("pttl", 2),
    ("expiretime", 2),
    ("pexpiretime", 2),
    ("persist", 2),
];

#[test]
fn command_getkeys_names_the_keys_as_redis_does() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.raw();
    let keys = |r: Reply| -> Vec<String> {
        match r {
            Reply::Array(items) => items.iter().filter_map(Reply::as_text).collect(),
            other => panic!("not an array: {other:?}"),
        }
    };
    assert_eq!(
        keys(c.cmd(&["COMMAND", "GETKEYS", "SET", "k", "v", "EX", "10"])),
        ["k"]
    );
    assert_eq!(
        keys(c.cmd(&["COMMAND", "GETKEYS", "MSET", "a", "1", "b", "2"])),
        ["a", "b"]
    );
    assert_eq!(
        keys(c.cmd(&["COMMAND", "GETKEYS", "COPY", "a", "b", "DB", "1"])),
        ["a", "b"]
    );
    assert_eq!(
        keys(c.cmd(&["COMMAND", "GETKEYS", "del", "a", "b", "c"])),
        ["a", "b", "c"]
    );
    for (args, err) in [
        (
            &["COMMAND", "GETKEYS"][..],
            "ERR wrong number of arguments for 'command|getkeys' command",
        ),
        (
            &["COMMAND", "GETKEYS", "GET"],
            "ERR wrong number of arguments for 'command|getkeys' command",
        ),
        (
            &["COMMAND", "GETKEYS", "NOSUCH", "a"],
            "ERR Invalid command specified",
        ),
        (
            &["COMMAND", "GETKEYS", "GET", "a", "b"],
            "ERR Invalid number of arguments specified for command",
        ),
        (
            &["COMMAND", "GETKEYS", "ECHO", "a"],
            "ERR The command has no key arguments",
        ),
    ] {
        assert_eq!(c.cmd(args), Reply::err(err), "{args:?}");
    }
}

#[test]
fn command_count_info_docs_list() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client();
    let count: i64 = q(&mut c, &["COMMAND", "COUNT"]);
    assert!(count >= ARITIES.len() as i64, "COMMAND COUNT = {count}");
    // LIST names subcommands too (`config|get`), so it is at least as long as COUNT.
    let list: Vec<String> = q(&mut c, &["COMMAND", "LIST"]);
    assert!(
        list.len() as i64 >= count,
        "COMMAND LIST shorter than COUNT"
    );
    for (name, arity) in ARITIES {
        assert!(
            list.iter().any(|n| n == name),
            "{name} missing from COMMAND LIST"
        );
        let info: Value = q(&mut c, &["COMMAND", "INFO", name]);
        let Value::Array(entries) = info else {
            panic!("COMMAND INFO {name}: {info:?}");
        };
        let Some(Value::Array(fields)) = entries.first() else {
            panic!("COMMAND INFO {name}: {entries:?}");
        };
        assert_eq!(
            redis::from_redis_value::<String>(&fields[0]).unwrap(),
            *name
        );
        assert_eq!(fields[1], Value::Int(*arity), "arity of {name}");
    }
    // get: name, arity, flags, first key, last key, step.
    let info: Value = q(&mut c, &["COMMAND", "INFO", "get", "nosuchcmd"]);
    let Value::Array(entries) = info else {
        panic!("{info:?}")
    };
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1], Value::Nil);
    let Value::Array(get) = &entries[0] else {
        panic!("{entries:?}")
    };
    let flags: Vec<String> = redis::from_redis_value(&get[2]).unwrap();
    assert!(flags.contains(&"readonly".to_string()), "{flags:?}");
    assert_eq!(&get[3..6], &[Value::Int(1), Value::Int(1), Value::Int(1)]);
    let set: Value = q(&mut c, &["COMMAND", "INFO", "set"]);
    let Value::Array(set) = set else { panic!() };
    let Value::Array(set) = &set[0] else { panic!() };
    let flags: Vec<String> = redis::from_redis_value(&set[2]).unwrap();
    assert!(flags.contains(&"write".to_string()), "{flags:?}");
    let mset: Value = q(&mut c, &["COMMAND", "INFO", "mset"]);
    let Value::Array(mset) = mset else { panic!() };
    let Value::Array(mset) = &mset[0] else {
        panic!()
    };
    assert_eq!(&mset[3..6], &[Value::Int(1), Value::Int(-1), Value::Int(2)]);

    // DOCS: a map per command with at least a summary (redis-cli uses it for hints).
    let docs: Value = q(&mut c, &["COMMAND", "DOCS", "get"]);
    let Value::Array(docs) = docs else {
        panic!("COMMAND DOCS in RESP2: {docs:?}")
    };
    assert_eq!(redis::from_redis_value::<String>(&docs[0]).unwrap(), "get");
    let Value::Array(doc) = &docs[1] else {
        panic!("{docs:?}")
    };
    let fields: Vec<String> = doc
        .iter()
        .step_by(2)
        .filter_map(|v| redis::from_redis_value(v).ok())
        .collect();
    assert!(fields.contains(&"summary".to_string()), "{fields:?}");
    let mut c3 = node.client_resp3();
    let docs3: Value = q(&mut c3, &["COMMAND", "DOCS", "set"]);
    assert!(
        matches!(docs3, Value::Map(ref m) if m.len() == 1),
        "{docs3:?}"
    );
    let none: Value = q(&mut c, &["COMMAND", "DOCS", "nosuchcmd"]);
    assert_eq!(none, Value::Array(vec![]));
    assert_eq!(
        q_err(&mut c, &["COMMAND", "BOGUS"]),
        "ERR unknown subcommand 'BOGUS'. Try COMMAND HELP."
    );
    // Arity comes from the subcommand table; arguments a known subcommand refuses get Redis's
    // other text (both compared with redis-server 7.0.15).
    assert_eq!(
        q_err(&mut c, &["COMMAND", "GETKEYS", "get"]),
        "ERR wrong number of arguments for 'command|getkeys' command"
    );
    assert_eq!(
        q_err(&mut c, &["PUBSUB", "channels", "a", "b"]),
        "ERR unknown subcommand or wrong number of arguments for 'channels'. Try PUBSUB HELP."
    );
    assert_eq!(
        q_err(&mut c, &["CLIENT", "PauSe", "1", "ALL", "x"]),
        "ERR unknown subcommand or wrong number of arguments for 'PauSe'. Try CLIENT HELP."
    );
    assert_eq!(
        q_err(&mut c, &["SLOWLOG", "get", "1", "2"]),
        "ERR unknown subcommand or wrong number of arguments for 'get'. Try SLOWLOG HELP."
    );
}

/// The scheduling policy of every thread of a process, from field 41 of
/// `/proc/PID/task/TID/stat` (0 = SCHED_OTHER, 3 = SCHED_BATCH).
fn thread_policies(pid: u32) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let stat = std::fs::read_to_string(task.unwrap().path().join("stat")).unwrap();
        // The name is in parentheses and may hold spaces; the fields follow the last ')'.
        let (head, tail) = stat.rsplit_once(')').unwrap();
        let name = head.split_once('(').unwrap().1.to_string();
        let policy = tail.split_whitespace().nth(38).unwrap().parse().unwrap();
        out.push((name, policy));
    }
    out
}

#[test]
fn cpu_policy_reaches_every_thread() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client();
    assert_eq!(
        q::<Vec<String>>(&mut c, &["CONFIG", "GET", "cpu-policy"]),
        vec!["cpu-policy", "batch"]
    );
    let threads = thread_policies(node.pid().unwrap());
    assert!(
        threads.iter().any(|(n, _)| n == "meridian-raft"),
        "{threads:?}"
    );
    assert!(
        threads.iter().any(|(n, _)| n.starts_with("rocksdb")),
        "{threads:?}"
    );
    assert!(threads.iter().all(|(_, p)| *p == 3), "{threads:?}");

    let node = Node::start(NodeOpts::default().arg("--cpu-policy").arg("normal"));
    let threads = thread_policies(node.pid().unwrap());
    assert!(threads.iter().all(|(_, p)| *p == 0), "{threads:?}");
}

#[test]
fn config_get_set() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client();
    assert_eq!(
        q::<Vec<String>>(&mut c, &["CONFIG", "GET", "databases"]),
        vec!["databases", "16"]
    );
    assert_eq!(
        q::<Vec<String>>(&mut c, &["CONFIG", "GET", "appendfsync"]),
        vec!["appendfsync", "everysec"]
    );
    // A node alone (one region) gets the small memtables by default.
    assert_eq!(
        q::<Vec<String>>(&mut c, &["CONFIG", "GET", "write-buffer-mb"]),
        vec!["write-buffer-mb", "8"]
    );
    // What redis-benchmark and redis-cli ask for at start-up answers.
    for p in ["save", "appendonly", "maxmemory"] {
        let v: Vec<String> = q(&mut c, &["CONFIG", "GET", p]);
        assert_eq!(v.len(), 2, "CONFIG GET {p} = {v:?}");
        assert_eq!(v[0], p);
    }
    // Keys are never evicted (job queues such as Sidekiq and BullMQ check for this).
    assert_eq!(
        q::<Vec<String>>(&mut c, &["CONFIG", "GET", "maxmemory-policy"]),
        vec!["maxmemory-policy", "noeviction"]
    );
    // A parameter asked for by name comes back named as asked, as in Redis.
    assert_eq!(
        q::<Vec<String>>(&mut c, &["CONFIG", "GET", "MAXMEMORY-Policy"]),
        vec!["MAXMEMORY-Policy", "noeviction"]
    );
    // Setup scripts may set the policy Meridian has; nothing else evicts here.
    assert_eq!(
        q::<String>(&mut c, &["CONFIG", "SET", "maxmemory-policy", "noeviction"]),
        "OK"
    );
    assert_eq!(
        q_err(
            &mut c,
            &["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]
        ),
        "ERR CONFIG SET failed (possibly related to argument 'maxmemory-policy') - Meridian \
         never evicts keys (RocksDB keeps every one); only noeviction"
    );
    assert!(
        q_err(&mut c, &["CONFIG", "SET", "maxmemory-policy", "foo"]).ends_with(
            "argument(s) must be one of the following: volatile-lru, volatile-lfu, \
                    volatile-random, volatile-ttl, allkeys-lru, allkeys-lfu, allkeys-random, \
                    noeviction"
        )
    );
    // maxmemory: the hot cache's bound, fixed at start (its own value is accepted).
    let maxmemory: Vec<String> = q(&mut c, &["CONFIG", "GET", "maxmemory"]);
    assert_eq!(
        q::<String>(&mut c, &["CONFIG", "SET", "maxmemory", &maxmemory[1]]),
        "OK"
    );
    assert!(q_err(&mut c, &["CONFIG", "SET", "maxmemory", "1gb"])
        .ends_with("the hot cache's bound (hot-cache-mb) is set at start; keys are never evicted"));
    assert!(q_err(&mut c, &["CONFIG", "SET", "maxmemory", "abc"])
        .ends_with("argument must be a memory value"));
    // Patterns and several parameters.
    let v: Vec<String> = q(&mut c, &["CONFIG", "GET", "append*"]);
    assert!(v.chunks(2).any(|p| p[0] == "appendfsync"), "{v:?}");
    let v: Vec<String> = q(&mut c, &["CONFIG", "GET", "databases", "appendfsync"]);
    assert_eq!(v.len(), 4, "{v:?}");
    // Unknown parameters: empty reply, as Redis.
    assert_eq!(
        q::<Vec<String>>(&mut c, &["CONFIG", "GET", "nosuchparam"]),
        Vec::<String>::new()
    );
    assert_eq!(
        q_err(&mut c, &["CONFIG", "SET", "nosuchparam", "1"]),
        "ERR Unknown option or number of arguments for CONFIG SET - 'nosuchparam'"
    );
    assert_eq!(
        q::<Value>(&mut c, &["CONFIG", "SET", "appendfsync", "always"]),
        Value::Okay
    );
    assert_eq!(
        q::<Vec<String>>(&mut c, &["CONFIG", "GET", "appendfsync"]),
        vec!["appendfsync", "always"]
    );
    assert_eq!(
        q_err(&mut c, &["CONFIG", "SET", "appendfsync", "bogus"]),
        "ERR CONFIG SET failed (possibly related to argument 'appendfsync') - argument(s) \
         must be one of the following: everysec, always, no"
    );
    // Integers as Redis reads them: no `+`, no leading zeros.
    for odd in ["+10", "010", "-0", " 1"] {
        assert_eq!(
            q_err(&mut c, &["CONFIG", "SET", "slowlog-max-len", odd]),
            "ERR CONFIG SET failed (possibly related to argument 'slowlog-max-len') - argument \
             couldn't be parsed into an integer",
            "{odd:?}"
        );
    }
    // All or nothing, as in Redis: a bad parameter anywhere changes none of them.
    for bad in [
        &["maxclients", "100", "nosuchparam", "1"][..],
        &["maxclients", "200", "appendfsync", "bogus"],
        &["appendfsync", "no", "maxclients", "abc"],
    ] {
        let mut args = vec!["CONFIG", "SET"];
        args.extend_from_slice(bad);
        assert!(q_err(&mut c, &args).starts_with("ERR "), "{args:?}");
    }
    assert_eq!(
        q::<Vec<String>>(&mut c, &["CONFIG", "GET", "maxclients"]),
        vec!["maxclients", "10000"]
    );
    assert_eq!(
        q::<Vec<String>>(&mut c, &["CONFIG", "GET", "appendfsync"]),
        vec!["appendfsync", "always"]
    );
    assert_eq!(
        q_err(
            &mut c,
            &["CONFIG", "SET", "maxclients", "100", "maxclients", "200"]
        ),
        "ERR CONFIG SET failed (possibly related to argument 'maxclients') - duplicate parameter"
    );
    assert_eq!(
        q_err(
            &mut c,
            &["CONFIG", "SET", "maxclients", "100", "appendfsync"]
        ),
        "ERR syntax error"
    );
    assert_eq!(
        q_err(&mut c, &["CONFIG", "SET", "maxclients", "-1"]),
        "ERR CONFIG SET failed (possibly related to argument 'maxclients') - argument must be \
         between 1 and 4294967295 inclusive"
    );
    // What client libraries set on connect is accepted.
    assert_eq!(
        q::<Value>(&mut c, &["CONFIG", "SET", "save", "", "timeout", "0"]),
        Value::Okay
    );
    assert_eq!(
        q::<Value>(
            &mut c,
            &[
                "CONFIG",
                "SET",
                "appendfsync",
                "everysec",
                "maxclients",
                "500"
            ]
        ),
        Value::Okay
    );
    assert_eq!(
        q::<Vec<String>>(&mut c, &["CONFIG", "GET", "maxclients"]),
        vec!["maxclients", "500"]
    );
    assert_eq!(
        q_err(&mut c, &["CONFIG", "GET"]),
        "ERR wrong number of arguments for 'config|get' command"
    );
    // RESP3: a map.
    let mut c3 = node.client_resp3();
    let v: Value = q(&mut c3, &["CONFIG", "GET", "databases"]);
    assert_eq!(
        v,
        Value::Map(vec![(
            Value::BulkString(b"databases".to_vec()),
            Value::BulkString(b"16".to_vec())
        )])
    );
}

/// `INFO` text as `field -> value`, and the section headers seen.
fn parse_info(text: &str) -> (HashMap<String, String>, Vec<String>) {
    let mut fields = HashMap::new();
    let mut sections = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(h) = line.strip_prefix("# ") {
            sections.push(h.to_string());
        } else if let Some((k, v)) = line.split_once(':') {
            fields.insert(k.to_string(), v.to_string());
        }
    }
    (fields, sections)
}

#[test]
fn info_sections() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client();
    let _: () = q(&mut c, &["MSET", "a", "1", "b", "2", "c", "3"]);
    let _: () = q(&mut c, &["SET", "t", "1", "EX", "100"]);
    let _: () = q(&mut c, &["SELECT", "3"]);
    let _: () = q(&mut c, &["SET", "x", "1"]);
    let _other = node.client();

    let text: String = q(&mut c, &["INFO"]);
    assert!(text.contains("\r\n"), "INFO lines end with CRLF");
    let (f, sections) = parse_info(&text);
    for s in [
        "Server",
        "Clients",
        "Memory",
        "Persistence",
        "Stats",
        "Keyspace",
    ] {
        assert!(
            sections.iter().any(|h| h == s),
            "INFO lacks # {s}: {sections:?}"
        );
    }
    assert!(f.contains_key("redis_version"), "redis_version");
    let connected: i64 = f["connected_clients"].parse().unwrap();
    assert!(connected >= 2, "connected_clients = {connected}");
    let used: u64 = f["used_memory"].parse().unwrap();
    assert!(used > 0);
    assert_eq!(f["tcp_port"], node.port().to_string());
    assert!(f.contains_key("uptime_in_seconds"));
    assert!(f.contains_key("total_commands_processed"));
    assert!(
        f["db0"].starts_with("keys=4,expires=1,avg_ttl="),
        "db0:{}",
        f["db0"]
    );
    assert!(
        f["db3"].starts_with("keys=1,expires=0,"),
        "db3:{}",
        f["db3"]
    );
    assert!(!f.contains_key("db1"), "empty databases are not listed");

    // One section, case-insensitive; several sections; an unknown one is empty.
    let (f, sections) = parse_info(&q::<String>(&mut c, &["INFO", "keyspace"]));
    assert_eq!(sections, ["Keyspace"]);
    assert!(f.contains_key("db0"));
    let (_, sections) = parse_info(&q::<String>(&mut c, &["INFO", "SERVER"]));
    assert_eq!(sections, ["Server"]);
    let (_, sections) = parse_info(&q::<String>(&mut c, &["INFO", "server", "clients"]));
    assert_eq!(sections, ["Server", "Clients"]);
    assert_eq!(q::<String>(&mut c, &["INFO", "nosuchsection"]), "");
    let (f, _) = parse_info(&q::<String>(&mut c, &["INFO", "memory"]));
    assert!(f.contains_key("used_memory"));
    let (f, _) = parse_info(&q::<String>(&mut c, &["INFO", "stats"]));
    assert!(f.contains_key("total_connections_received"));
    // Fields dashboards and exporters read, as Redis names them.
    let (f, _) = parse_info(&q::<String>(&mut c, &["INFO", "everything"]));
    for field in [
        "used_memory_peak",
        "evicted_keys",
        "instantaneous_input_kbps",
        "rdb_changes_since_last_save",
        "master_repl_offset",
    ] {
        assert!(f.contains_key(field), "INFO lacks {field}");
    }
    assert!(f["used_memory_peak"].parse::<u64>().unwrap() >= used);
    // The rate of commands, sampled every 100 ms over the last 1.6 s, as Redis.
    let busy = std::time::Instant::now();
    while busy.elapsed() < std::time::Duration::from_millis(800) {
        let _: () = q(&mut c, &["PING"]);
    }
    let (f, _) = parse_info(&q::<String>(&mut c, &["INFO", "stats"]));
    let rate: u64 = f["instantaneous_ops_per_sec"].parse().unwrap();
    assert!(rate > 0, "instantaneous_ops_per_sec {rate} while pinging");
}

/// INFO commandstats, errorstats and cpu in Redis 7.0's shapes (what monitoring exporters
/// parse): calls, usec, usec_per_call, rejected_calls (refused before running: arity,
/// queued in a transaction) and failed_calls (ran and answered an error, inside EXEC too);
/// error replies by their first word; CPU seconds of the process. CONFIG RESETSTAT clears them.
#[test]
fn info_commandstats_errorstats_cpu() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client();
    let _: () = q(&mut c, &["CONFIG", "RESETSTAT"]);
    let _: () = q(&mut c, &["SET", "a", "x"]);
    let _: String = q(&mut c, &["GET", "a"]);
    assert!(q_err(&mut c, &["INCR", "a"]).starts_with("ERR value is not an integer"));
    assert!(q_err(&mut c, &["SET", "a"]).starts_with("ERR wrong number"));
    assert!(q_err(&mut c, &["NOSUCH"]).starts_with("ERR unknown command"));
    // A transaction with a command refused while queued, then one whose INCR fails inside.
    let mut raw = node.raw();
    assert_eq!(raw.cmd(&["MULTI"]), Reply::ok());
    assert!(raw.cmd(&["INCR"]).as_err().is_some());
    assert!(raw
        .cmd(&["EXEC"])
        .as_err()
        .is_some_and(|e| e.starts_with("EXECABORT")));
    assert_eq!(raw.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(raw.cmd(&["INCR", "a"]), Reply::Simple("QUEUED".into()));
    let Reply::Array(replies) = raw.cmd(&["EXEC"]) else {
        panic!("EXEC answers an array")
    };
    assert!(replies[0].as_err().is_some());

    let (f, sections) = parse_info(&q::<String>(&mut c, &["INFO", "commandstats"]));
    assert_eq!(sections, ["Commandstats"]);
    let stat = |name: &str| -> HashMap<String, f64> {
        f[&format!("cmdstat_{name}")]
            .split(',')
            .map(|kv| {
                let (k, v) = kv.split_once('=').expect("key=value");
                (k.to_string(), v.parse().expect("a number"))
            })
            .collect()
    };
    let set = stat("set");
    assert_eq!(
        (set["calls"], set["rejected_calls"], set["failed_calls"]),
        (1.0, 1.0, 0.0)
    );
    assert!(
        set["usec"] >= 1.0,
        "a write's time includes its Raft round: {set:?}"
    );
    let incr = stat("incr");
    assert_eq!(
        (incr["calls"], incr["rejected_calls"], incr["failed_calls"]),
        (2.0, 1.0, 2.0)
    );
    let exec = stat("exec");
    assert_eq!((exec["calls"], exec["failed_calls"]), (2.0, 1.0));
    assert_eq!(stat("get")["calls"], 1.0);
    assert!(stat("get")["usec_per_call"] >= 0.0);

    let (f, sections) = parse_info(&q::<String>(&mut c, &["INFO", "errorstats"]));
    assert_eq!(sections, ["Errorstats"]);
    assert_eq!(f["errorstat_ERR"], "count=5");
    assert_eq!(f["errorstat_EXECABORT"], "count=1");
    let (f, _) = parse_info(&q::<String>(&mut c, &["INFO", "stats"]));
    assert_eq!(f["total_error_replies"], "6");

    let (f, sections) = parse_info(&q::<String>(&mut c, &["INFO", "cpu"]));
    assert_eq!(sections, ["CPU"]);
    let user: f64 = f["used_cpu_user"].parse().unwrap();
    let sys: f64 = f["used_cpu_sys"].parse().unwrap();
    assert!(user + sys > 0.0, "the node used some CPU: {f:?}");
    let (_, sections) = parse_info(&q::<String>(&mut c, &["INFO"]));
    assert!(sections.iter().any(|s| s == "CPU") && sections.iter().any(|s| s == "Errorstats"));
    assert!(
        !sections.iter().any(|s| s == "Commandstats"),
        "not in the default set"
    );

    let _: () = q(&mut c, &["CONFIG", "RESETSTAT"]);
    let (f, _) = parse_info(&q::<String>(&mut c, &["INFO", "errorstats"]));
    assert!(!f.contains_key("errorstat_ERR"), "{f:?}");
}

/// The latency monitor: off by default; with `latency-monitor-threshold` a slow command (an
/// LCS of two 3,000-byte strings) becomes a `command` sample in LATEST and HISTORY; RESET
/// forgets it.
#[test]
fn latency_monitor() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client();
    let long = "a".repeat(3000);
    let _: () = q(&mut c, &["MSET", "l1", &long, "l2", &long]);
    assert_eq!(q::<i64>(&mut c, &["LCS", "l1", "l2", "LEN"]), 3000);
    assert_eq!(
        q::<Value>(&mut c, &["LATENCY", "LATEST"]),
        Value::Array(vec![])
    );
    let _: () = q(&mut c, &["CONFIG", "SET", "latency-monitor-threshold", "1"]);
    assert_eq!(
        q::<Vec<String>>(&mut c, &["CONFIG", "GET", "latency-monitor-threshold"]),
        ["latency-monitor-threshold", "1"]
    );
    assert_eq!(q::<i64>(&mut c, &["LCS", "l1", "l2", "LEN"]), 3000);
    let latest: Vec<(String, i64, i64, i64)> = q(&mut c, &["LATENCY", "LATEST"]);
    assert_eq!(latest.len(), 1, "{latest:?}");
    let (event, time, last, max) = latest[0].clone();
    assert_eq!(event, "command");
    assert!(last >= 1 && max >= last, "{latest:?}");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - time).abs() <= 5, "sample time {time} vs {now}");
    let history: Vec<(i64, i64)> = q(&mut c, &["LATENCY", "HISTORY", "command"]);
    assert_eq!(history, vec![(time, last)]);
    let doctor: String = q(&mut c, &["LATENCY", "DOCTOR"]);
    assert!(doctor.contains("command: 1 latency spikes"), "{doctor}");
    assert_eq!(q::<i64>(&mut c, &["LATENCY", "RESET"]), 1);
    assert_eq!(
        q::<Value>(&mut c, &["LATENCY", "LATEST"]),
        Value::Array(vec![])
    );
    assert_eq!(
        q_err(&mut c, &["LATENCY", "HISTORY"]),
        "ERR wrong number of arguments for 'latency|history' command"
    );

    // Per-command latency: INFO latencystats percentiles and LATENCY HISTOGRAM (cumulative
    // counts at powers of two µs), writes included (their batch's time through Raft).
    let _: () = q(&mut c, &["CONFIG", "RESETSTAT"]);
    for i in 0..100 {
        let _: Option<String> = q(&mut c, &["GET", &format!("k{i}")]);
    }
    let _: () = q(&mut c, &["SET", "k0", "v"]);
    let (f, sections) = parse_info(&q::<String>(&mut c, &["INFO", "latencystats"]));
    assert_eq!(sections, ["Latencystats"]);
    for cmd in ["get", "set"] {
        let line = &f[&format!("latency_percentiles_usec_{cmd}")];
        let p: Vec<f64> = line
            .split(',')
            .map(|kv| kv.split_once('=').unwrap().1.parse().unwrap())
            .collect();
        assert!(
            p.len() == 3 && p[0] > 0.0 && p[0] <= p[1] && p[1] <= p[2],
            "{line}"
        );
    }
    let Value::Array(hist) = q::<Value>(&mut c, &["LATENCY", "HISTOGRAM", "get", "nosuch"]) else {
        panic!("a map")
    };
    assert_eq!(hist[0], Value::BulkString(b"get".to_vec()), "{hist:?}");
    let Value::Array(fields) = &hist[1] else {
        panic!("{hist:?}")
    };
    assert_eq!(fields[1], Value::Int(100));
    let Value::Array(buckets) = &fields[3] else {
        panic!("{fields:?}")
    };
    assert_eq!(
        buckets.last(),
        Some(&Value::Int(100)),
        "cumulative: {buckets:?}"
    );
}

#[test]
fn time_reply() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client();
    let v: Value = q(&mut c, &["TIME"]);
    let Value::Array(parts) = &v else {
        panic!("{v:?}")
    };
    assert!(
        matches!(parts[..], [Value::BulkString(_), Value::BulkString(_)]),
        "{v:?}"
    );
    let (s, us): (u64, u64) = redis::from_redis_value(&v).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(s.abs_diff(now) <= 2, "TIME {s} vs local {now}");
    assert!(us < 1_000_000);
    let (s2, us2): (u64, u64) = q(&mut c, &["TIME"]);
    assert!((s2, us2) >= (s, us), "TIME went backwards");
    assert_eq!(
        q_err(&mut c, &["TIME", "x"]),
        "ERR wrong number of arguments for 'time' command"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_resp3_admin_replies() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.async_client_resp3().await;
    let hello: Value = qa(&mut c, &["HELLO", "3"]).await;
    assert!(matches!(hello, Value::Map(_)), "{hello:?}");
    let info: Value = qa(&mut c, &["INFO", "server"]).await;
    assert!(
        matches!(info, Value::VerbatimString { .. }),
        "INFO in RESP3 is a verbatim string: {info:?}"
    );
    let text: String = redis::from_redis_value(&info).unwrap();
    assert!(text.contains("redis_version:"));
    let id: i64 = qa(&mut c, &["CLIENT", "ID"]).await;
    assert!(id > 0);
}

#[test]
fn prometheus_metrics_endpoint() {
    let node = Node::start(NodeOpts::default().metrics());
    let mut c = node.client();
    for i in 0..10 {
        let _: () = q(&mut c, &["SET", &format!("k{i}"), "v"]);
        let _: String = q(&mut c, &["GET", &format!("k{i}")]);
    }
    let port = node.metrics_port().expect("metrics port");
    let body = meridian_tests::eventually(Duration::from_secs(10), "GET /metrics", || {
        let resp = node.scrape_metrics()?;
        anyhow::ensure!(resp.starts_with("HTTP/1.1 200"), "response: {resp}");
        // The figures are published once a second, the first time as the node starts: a
        // scrape on a busy machine may come before that.
        anyhow::ensure!(
            resp.contains("meridian_commands_processed_total"),
            "not published yet: {resp}"
        );
        Ok(resp)
    });
    let (head, payload) = body.split_once("\r\n\r\n").expect("HTTP body");
    assert!(
        !payload.trim().is_empty(),
        "empty /metrics after 20 commands"
    );
    assert!(
        payload.contains("meridian_commands_processed_total"),
        "{payload}"
    );
    // The text format's content type with its version: Prometheus 3 refuses a scrape without.
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    // Other paths and methods are refused; HEAD has the length and no body.
    let ask = |request: &str| -> String {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        resp
    };
    assert!(ask("GET /nope HTTP/1.1\r\nHost: x\r\n\r\n").starts_with("HTTP/1.1 404"));
    let post = ask("POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    assert!(
        post.starts_with("HTTP/1.1 405") && post.contains("Allow: GET, HEAD"),
        "{post}"
    );
    let head_only = ask("HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let (h, b) = head_only.split_once("\r\n\r\n").unwrap();
    assert!(h.starts_with("HTTP/1.1 200") && b.is_empty(), "{head_only}");
    assert!(ask("garbage\r\n\r\n").starts_with("HTTP/1.1 400"));
    assert!(ask("GET /health HTTP/1.0\r\n\r\n").ends_with("OK\n"));
}

/// Replies found to differ from redis-server 7.0's in a reply-by-reply comparison, now alike.
#[test]
fn admin_edge_replies_match_redis() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client();
    assert_eq!(
        q_err(&mut c, &["SELECT", "2147483648"]),
        "ERR value is out of range, value must between -2147483648 and 2147483647"
    );
    assert_eq!(
        q_err(&mut c, &["SELECT", "16"]),
        "ERR DB index is out of range"
    );
    assert_eq!(q_err(&mut c, &["BGSAVE", "x"]), "ERR syntax error");
    assert_eq!(
        q_err(&mut c, &["WAIT", "0", "abc"]),
        "ERR timeout is not an integer or out of range"
    );
    assert_eq!(
        q_err(&mut c, &["COMMAND", "COUNT", "x"]),
        "ERR wrong number of arguments for 'command|count' command"
    );
    let mut gets: Vec<String> = q(&mut c, &["COMMAND", "LIST", "FILTERBY", "PATTERN", "get*"]);
    gets.sort();
    assert_eq!(
        gets,
        ["get", "getbit", "getdel", "getex", "getrange", "getset"]
    );
    assert_eq!(q_err(&mut c, &["COMMAND", "LIST", "x"]), "ERR syntax error");
    assert_eq!(
        q::<Value>(&mut c, &["COMMAND", "INFO", "nosuchcmd"]),
        Value::Array(vec![Value::Nil])
    );
    let cluster: String = q(&mut c, &["INFO", "cluster"]);
    assert_eq!(cluster, "# Cluster\r\ncluster_enabled:0\r\n");
    let _: Value = q(&mut c, &["HELLO", "2", "SETNAME", ""]);
    assert_eq!(q::<Value>(&mut c, &["CLIENT", "GETNAME"]), Value::Nil);
    // Every connection is a normal client.
    let normal: String = q(&mut c, &["CLIENT", "LIST", "TYPE", "normal"]);
    assert!(normal.contains("id="), "{normal:?}");
    let pubsub: String = q(&mut c, &["CLIENT", "LIST", "TYPE", "pubsub"]);
    assert_eq!(pubsub, "");
    assert_eq!(
        q_err(&mut c, &["CLIENT", "LIST", "TYPE", "slave"]),
        "ERR Unknown client type 'slave'"
    );
    assert_eq!(q_err(&mut c, &["CLIENT", "LIST", "ID"]), "ERR syntax error");
    assert_eq!(
        q_err(&mut c, &["CLIENT", "HELP", "x"]),
        "ERR wrong number of arguments for 'client|help' command"
    );
    assert_eq!(
        q_err(&mut c, &["CONFIG", "RESETSTAT", "x"]),
        "ERR wrong number of arguments for 'config|resetstat' command"
    );
}

/// SLOWLOG: reads and server commands that ran at least `slowlog-log-slower-than` µs, newest
/// first, in Redis's entry shape; GET/LEN/RESET and the config parameters.
#[test]
fn slowlog_keeps_slow_commands() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client();
    assert_eq!(
        q::<Vec<String>>(&mut c, &["CONFIG", "GET", "slowlog-log-slower-than"]),
        ["slowlog-log-slower-than", "10000"]
    );
    let _: () = q(&mut c, &["CONFIG", "SET", "slowlog-log-slower-than", "0"]);
    let _: () = q(&mut c, &["SLOWLOG", "RESET"]);
    let _: () = q(&mut c, &["CLIENT", "SETNAME", "slow-one"]);
    let _: Vec<String> = q(&mut c, &["KEYS", "nothing*"]);
    let entries: Vec<Value> = q(&mut c, &["SLOWLOG", "GET", "1"]);
    let Value::Array(entry) = &entries[0] else {
        panic!("an entry: {entries:?}")
    };
    assert_eq!(entry.len(), 6);
    assert_eq!(
        entry[3],
        Value::Array(vec![
            Value::BulkString(b"KEYS".to_vec()),
            Value::BulkString(b"nothing*".to_vec())
        ])
    );
    assert_eq!(entry[5], Value::BulkString(b"slow-one".to_vec()));
    assert!(q::<i64>(&mut c, &["SLOWLOG", "LEN"]) >= 2);
    assert_eq!(
        q_err(&mut c, &["SLOWLOG", "GET", "-2"]),
        "ERR count should be greater than or equal to -1"
    );
    // Writes are counted with their time in INFO (and the metrics), not in SLOWLOG.
    let _: () = q(&mut c, &["SET", "w", "1"]);
    let stats: String = q(&mut c, &["INFO", "stats"]);
    let batches: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("write_batches:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("write_batches in INFO stats");
    assert!(batches >= 1, "{stats}");
    let _: () = q(&mut c, &["CONFIG", "SET", "slowlog-log-slower-than", "-1"]);
    let _: () = q(&mut c, &["SLOWLOG", "RESET"]);
    let _: Vec<String> = q(&mut c, &["KEYS", "*"]);
    assert_eq!(q::<i64>(&mut c, &["SLOWLOG", "LEN"]), 0, "off");
}

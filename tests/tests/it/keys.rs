//! Keyspace commands: DEL/UNLINK/EXISTS/TYPE, KEYS and SCAN, RANDOMKEY, RENAME/RENAMENX/COPY,
//! DBSIZE/FLUSHDB/FLUSHALL, SELECT, and the generic error replies.

use std::collections::{HashMap, HashSet};

use meridian_tests::{cmd, q, q_err, Node, NodeOpts};
use redis::Value;

#[test]
fn del_unlink_exists_type() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client();
    assert_eq!(
        q::<Value>(&mut c, &["MSET", "a", "1", "b", "2", "c", "3", "d", "4"]),
        Value::Okay
    );
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "a"]), 1);
    // EXISTS counts repeats.
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "a", "a", "b", "missing"]), 3);
    assert_eq!(q::<String>(&mut c, &["TYPE", "a"]), "string");
    assert_eq!(q::<String>(&mut c, &["TYPE", "missing"]), "none");
    assert_eq!(
        q::<Value>(&mut c, &["TYPE", "a"]),
        Value::SimpleString("string".into())
    );
    // DEL counts keys removed, not arguments.
    assert_eq!(q::<i64>(&mut c, &["DEL", "a", "a", "missing"]), 1);
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "a"]), 0);
    assert_eq!(q::<i64>(&mut c, &["UNLINK", "b", "c", "missing"]), 2);
    assert_eq!(q::<i64>(&mut c, &["DEL", "b"]), 0);
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "b", "c", "d"]), 1);
    assert_eq!(q::<Value>(&mut c, &["GET", "c"]), Value::Nil);
    // A deleted key can be written again, without its old TTL.
    assert_eq!(
        q::<Value>(&mut c, &["SET", "e", "1", "EX", "100"]),
        Value::Okay
    );
    assert_eq!(q::<i64>(&mut c, &["DEL", "e"]), 1);
    assert_eq!(q::<Value>(&mut c, &["SET", "e", "2"]), Value::Okay);
    assert_eq!(q::<i64>(&mut c, &["TTL", "e"]), -1);
    for (name, args) in [
        ("del", &["DEL"][..]),
        ("unlink", &["UNLINK"]),
        ("exists", &["EXISTS"]),
        ("type", &["TYPE"]),
        ("type", &["TYPE", "a", "b"]),
    ] {
        assert_eq!(
            q_err(&mut c, args),
            format!("ERR wrong number of arguments for '{name}' command")
        );
    }
}

#[test]
fn keys_glob_patterns() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client();
    let names = [
        "hello", "hallo", "hxllo", "hllo", "heeeello", "h*llo", "foo", "foo:1", "foo:2", "bar",
    ];
    for k in names {
        assert_eq!(q::<Value>(&mut c, &["SET", k, "1"]), Value::Okay);
    }
    let keys = |c: &mut redis::Connection, pat: &str| -> Vec<String> {
        let mut v: Vec<String> = q(c, &["KEYS", pat]);
        v.sort();
        v
    };
    let sorted = |v: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
        v.sort();
        v
    };
    assert_eq!(keys(&mut c, "*"), sorted(&names));
    assert_eq!(
        keys(&mut c, "h?llo"),
        sorted(&["hello", "hallo", "hxllo", "h*llo"])
    );
    assert_eq!(
        keys(&mut c, "h*llo"),
        sorted(&["hello", "hallo", "hxllo", "hllo", "heeeello", "h*llo"])
    );
    assert_eq!(keys(&mut c, "h[ae]llo"), sorted(&["hello", "hallo"]));
    assert_eq!(
        keys(&mut c, "h[^e]llo"),
        sorted(&["hallo", "hxllo", "h*llo"])
    );
    assert_eq!(keys(&mut c, "h[a-b]llo"), sorted(&["hallo"]));
    assert_eq!(keys(&mut c, "h\\*llo"), sorted(&["h*llo"]));
    assert_eq!(keys(&mut c, "foo:*"), sorted(&["foo:1", "foo:2"]));
    assert_eq!(keys(&mut c, "nomatch*"), Vec::<String>::new());
    assert_eq!(
        q_err(&mut c, &["KEYS"]),
        "ERR wrong number of arguments for 'keys' command"
    );
}

/// Full SCAN iteration with `extra` options; returns every key seen (with repeats counted).
fn scan_all(c: &mut redis::Connection, extra: &[&str]) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    let mut cursor = "0".to_string();
    let mut rounds = 0;
    loop {
        let mut scan = cmd(&["SCAN", cursor.as_str()]);
        for e in extra {
            scan.arg(*e);
        }
        let (next, batch): (String, Vec<String>) = scan.query(c).unwrap();
        for k in batch {
            *seen.entry(k).or_insert(0) += 1;
        }
        rounds += 1;
        assert!(rounds < 100_000, "SCAN did not return cursor 0");
        if next == "0" {
            return seen;
        }
        cursor = next;
    }
}

#[test]
fn scan_full_iteration_match_count_type() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client();
    let mut mset = cmd(&["MSET"]);
    for i in 0..2000 {
        mset.arg(format!("user:{i}")).arg(i);
    }
    for i in 0..500 {
        mset.arg(format!("other:{i}")).arg(i);
    }
    let _: () = mset.query(&mut c).unwrap();

    let all = scan_all(&mut c, &[]);
    assert_eq!(all.len(), 2500, "every key at least once");
    let small = scan_all(&mut c, &["COUNT", "7"]);
    assert_eq!(small.len(), 2500);
    let users = scan_all(&mut c, &["MATCH", "user:*", "COUNT", "100"]);
    let expected: HashSet<String> = (0..2000).map(|i| format!("user:{i}")).collect();
    assert_eq!(users.keys().cloned().collect::<HashSet<_>>(), expected);
    let strings = scan_all(&mut c, &["TYPE", "string", "COUNT", "1000"]);
    assert_eq!(strings.len(), 2500);
    let hashes = scan_all(&mut c, &["TYPE", "hash"]);
    assert!(hashes.is_empty(), "TYPE hash matched {hashes:?}");
    let none = scan_all(&mut c, &["MATCH", "nothing*"]);
    assert!(none.is_empty());

    // Keys that exist for the whole iteration are returned even when others are added and
    // removed meanwhile.
    let mut cursor = "0".to_string();
    let mut seen = HashSet::new();
    let mut i = 0;
    loop {
        let (next, batch): (String, Vec<String>) =
            cmd(&["SCAN", cursor.as_str(), "MATCH", "user:*", "COUNT", "50"])
                .query(&mut c)
                .unwrap();
        seen.extend(batch);
        let _: () = cmd(&["SET"])
            .arg(format!("churn:{i}"))
            .arg(1)
            .query(&mut c)
            .unwrap();
        let _: i64 = cmd(&["DEL"])
            .arg(format!("other:{i}"))
            .query(&mut c)
            .unwrap();
        i += 1;
        if next == "0" {
            break;
        }
        cursor = next;
    }
    assert!(
        expected.is_subset(&seen),
        "{} stable keys missing",
        expected.difference(&seen).count()
    );

    // Errors.
    assert_eq!(q_err(&mut c, &["SCAN", "abc"]), "ERR invalid cursor");
    assert_eq!(q_err(&mut c, &["SCAN", " 1"]), "ERR invalid cursor");
    assert_eq!(
        q_err(&mut c, &["SCAN", "99999999999999999999"]),
        "ERR invalid cursor"
    );
    // As in Redis, an empty cursor is the start.
    let (next, _): (String, Vec<String>) = q(&mut c, &["SCAN", ""]);
    assert_ne!(next, "", "an iteration began");
    // As in Redis, a negative cursor is a (huge) cursor no iteration holds: the end.
    let (next, keys): (String, Vec<String>) = q(&mut c, &["SCAN", "-1"]);
    assert_eq!((next.as_str(), keys.len()), ("0", 0));
    assert_eq!(
        q_err(&mut c, &["SCAN", "0", "COUNT", "0"]),
        "ERR syntax error"
    );
    assert_eq!(q_err(&mut c, &["SCAN", "0", "TYPE"]), "ERR syntax error");
    assert_eq!(q_err(&mut c, &["SCAN", "0", "MATCH"]), "ERR syntax error");
    assert_eq!(
        q_err(&mut c, &["SCAN", "0", "BOGUS", "1"]),
        "ERR syntax error"
    );
    assert_eq!(
        q_err(&mut c, &["SCAN", "0", "COUNT", "x"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        q_err(&mut c, &["SCAN"]),
        "ERR wrong number of arguments for 'scan' command"
    );
}

#[test]
fn randomkey() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client();
    assert_eq!(q::<Value>(&mut c, &["RANDOMKEY"]), Value::Nil);
    let names: HashSet<String> = (0..20).map(|i| format!("k{i}")).collect();
    for k in &names {
        assert_eq!(q::<Value>(&mut c, &["SET", k, "v"]), Value::Okay);
    }
    let mut seen = HashSet::new();
    for _ in 0..400 {
        let k: String = q(&mut c, &["RANDOMKEY"]);
        assert!(names.contains(&k), "RANDOMKEY gave {k:?}");
        seen.insert(k);
    }
    // Every one of 20 keys turns up in 400 picks (a miss has odds of about 20 * 0.95^400).
    assert_eq!(seen.len(), names.len(), "RANDOMKEY is not random: {seen:?}");
    // A larger database (past the exact pick): many different keys, not the first one each time.
    let mut pipe = redis::pipe();
    for i in 0..3000 {
        pipe.cmd("SET").arg(format!("key:{i}")).arg("v").ignore();
    }
    let _: () = pipe.query(&mut c).unwrap();
    let picks: HashSet<String> = (0..50)
        .map(|_| q::<String>(&mut c, &["RANDOMKEY"]))
        .collect();
    assert!(
        picks.len() >= 25,
        "50 picks among 3,020 keys gave {}",
        picks.len()
    );
    assert_eq!(
        q_err(&mut c, &["RANDOMKEY", "x"]),
        "ERR wrong number of arguments for 'randomkey' command"
    );
}

#[test]
fn rename_renamenx_copy() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client();
    assert_eq!(
        q::<Value>(&mut c, &["SET", "a", "1", "EX", "100"]),
        Value::Okay
    );
    assert_eq!(q::<Value>(&mut c, &["RENAME", "a", "b"]), Value::Okay);
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "a"]), 0);
    assert_eq!(q::<String>(&mut c, &["GET", "b"]), "1");
    let ttl: i64 = q(&mut c, &["TTL", "b"]);
    assert!((99..=100).contains(&ttl), "RENAME keeps the TTL, got {ttl}");
    // Overwrites the destination, including its TTL.
    assert_eq!(q::<Value>(&mut c, &["SET", "c", "2"]), Value::Okay);
    assert_eq!(q::<Value>(&mut c, &["RENAME", "c", "b"]), Value::Okay);
    assert_eq!(q::<String>(&mut c, &["GET", "b"]), "2");
    assert_eq!(q::<i64>(&mut c, &["TTL", "b"]), -1);
    assert_eq!(q::<Value>(&mut c, &["RENAME", "b", "b"]), Value::Okay);
    assert_eq!(q::<String>(&mut c, &["GET", "b"]), "2");
    assert_eq!(
        q_err(&mut c, &["RENAME", "missing", "x"]),
        "ERR no such key"
    );
    assert_eq!(
        q_err(&mut c, &["RENAME", "b"]),
        "ERR wrong number of arguments for 'rename' command"
    );

    assert_eq!(q::<Value>(&mut c, &["SET", "x", "X"]), Value::Okay);
    assert_eq!(q::<i64>(&mut c, &["RENAMENX", "x", "b"]), 0);
    assert_eq!(q::<String>(&mut c, &["GET", "x"]), "X");
    assert_eq!(q::<i64>(&mut c, &["RENAMENX", "x", "y"]), 1);
    assert_eq!(q::<String>(&mut c, &["GET", "y"]), "X");
    assert_eq!(q::<i64>(&mut c, &["RENAMENX", "y", "y"]), 0);
    assert_eq!(
        q_err(&mut c, &["RENAMENX", "missing", "z"]),
        "ERR no such key"
    );

    assert_eq!(
        q::<Value>(&mut c, &["SET", "src", "S", "EX", "100"]),
        Value::Okay
    );
    assert_eq!(q::<i64>(&mut c, &["COPY", "src", "dst"]), 1);
    assert_eq!(q::<String>(&mut c, &["GET", "dst"]), "S");
    assert!(q::<i64>(&mut c, &["TTL", "dst"]) > 0, "COPY copies the TTL");
    assert_eq!(q::<String>(&mut c, &["GET", "src"]), "S");
    assert_eq!(q::<i64>(&mut c, &["COPY", "src", "y"]), 0);
    assert_eq!(q::<String>(&mut c, &["GET", "y"]), "X");
    assert_eq!(q::<i64>(&mut c, &["COPY", "src", "y", "REPLACE"]), 1);
    assert_eq!(q::<String>(&mut c, &["GET", "y"]), "S");
    assert_eq!(q::<i64>(&mut c, &["COPY", "missing", "y"]), 0);
    assert_eq!(q::<i64>(&mut c, &["COPY", "src", "other", "DB", "3"]), 1);
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "other"]), 0);
    assert_eq!(q::<Value>(&mut c, &["SELECT", "3"]), Value::Okay);
    assert_eq!(q::<String>(&mut c, &["GET", "other"]), "S");
    assert_eq!(q::<Value>(&mut c, &["SELECT", "0"]), Value::Okay);
    assert_eq!(
        q_err(&mut c, &["COPY", "src", "src"]),
        "ERR source and destination objects are the same"
    );
    assert_eq!(
        q_err(&mut c, &["COPY", "src", "z", "DB", "16"]),
        "ERR DB index is out of range"
    );
    assert_eq!(
        q_err(&mut c, &["COPY", "src", "z", "BOGUS"]),
        "ERR syntax error"
    );
    assert_eq!(
        q_err(&mut c, &["COPY", "src"]),
        "ERR wrong number of arguments for 'copy' command"
    );
}

#[test]
fn dbsize_flushdb_flushall() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client();
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 0);
    for i in 0..100 {
        assert_eq!(
            q::<Value>(&mut c, &["SET", &format!("k{i}"), "v"]),
            Value::Okay
        );
    }
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 100);
    assert_eq!(q::<Value>(&mut c, &["SELECT", "1"]), Value::Okay);
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 0);
    assert_eq!(
        q::<Value>(&mut c, &["MSET", "a", "1", "b", "2"]),
        Value::Okay
    );
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 2);
    // FLUSHDB empties only the selected database.
    assert_eq!(q::<Value>(&mut c, &["FLUSHDB"]), Value::Okay);
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 0);
    assert_eq!(q::<Value>(&mut c, &["SELECT", "0"]), Value::Okay);
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 100);
    assert_eq!(q::<Value>(&mut c, &["SELECT", "2"]), Value::Okay);
    assert_eq!(q::<Value>(&mut c, &["SET", "z", "1"]), Value::Okay);
    assert_eq!(q::<Value>(&mut c, &["FLUSHDB", "SYNC"]), Value::Okay);
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 0);
    assert_eq!(q::<Value>(&mut c, &["SET", "z", "1"]), Value::Okay);
    // FLUSHALL empties all of them.
    assert_eq!(q::<Value>(&mut c, &["FLUSHALL"]), Value::Okay);
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 0);
    assert_eq!(q::<Value>(&mut c, &["SELECT", "0"]), Value::Okay);
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 0);
    assert_eq!(q::<Value>(&mut c, &["GET", "k1"]), Value::Nil);
    // Writable again after a flush.
    assert_eq!(q::<Value>(&mut c, &["SET", "k1", "new"]), Value::Okay);
    assert_eq!(q::<String>(&mut c, &["GET", "k1"]), "new");
    assert_eq!(q::<Value>(&mut c, &["FLUSHALL", "ASYNC"]), Value::Okay);
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 0);
    assert_eq!(q_err(&mut c, &["FLUSHDB", "BOGUS"]), "ERR syntax error");
    assert_eq!(
        q_err(&mut c, &["DBSIZE", "x"]),
        "ERR wrong number of arguments for 'dbsize' command"
    );
}

#[test]
fn select_isolates_sixteen_databases() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client();
    for db in 0..16 {
        assert_eq!(
            q::<Value>(&mut c, &["SELECT", &db.to_string()]),
            Value::Okay
        );
        assert_eq!(
            q::<Value>(&mut c, &["SET", "shared", &format!("db{db}")]),
            Value::Okay
        );
        assert_eq!(
            q::<i64>(&mut c, &["INCRBY", "counter", &db.to_string()]),
            db
        );
    }
    for db in 0..16 {
        assert_eq!(
            q::<Value>(&mut c, &["SELECT", &db.to_string()]),
            Value::Okay
        );
        assert_eq!(q::<String>(&mut c, &["GET", "shared"]), format!("db{db}"));
        assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 2);
    }
    // The selected database is per connection.
    let mut other = node.client();
    assert_eq!(q::<String>(&mut other, &["GET", "shared"]), "db0");
    assert_eq!(q::<String>(&mut c, &["GET", "shared"]), "db15");
    for bad in ["16", "-1", "100"] {
        assert_eq!(
            q_err(&mut c, &["SELECT", bad]),
            "ERR DB index is out of range",
            "SELECT {bad}"
        );
    }
    assert_eq!(
        q_err(&mut c, &["SELECT", "abc"]),
        "ERR value is not an integer or out of range"
    );
    assert_eq!(
        q_err(&mut c, &["SELECT"]),
        "ERR wrong number of arguments for 'select' command"
    );
    // A failed SELECT leaves the selection unchanged.
    assert_eq!(q::<String>(&mut c, &["GET", "shared"]), "db15");
    // The redis crate's `redis://host:port/N` selects on connect.
    let url = format!("redis://127.0.0.1:{}/7", node.port());
    let mut seven = redis::Client::open(url).unwrap().get_connection().unwrap();
    assert_eq!(q::<String>(&mut seven, &["GET", "shared"]), "db7");
}

#[test]
fn generic_errors_keep_the_connection() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client();
    assert_eq!(
        q_err(&mut c, &["GET"]),
        "ERR wrong number of arguments for 'get' command"
    );
    assert_eq!(
        q_err(&mut c, &["GET", "a", "b"]),
        "ERR wrong number of arguments for 'get' command"
    );
    // The name in the message is lowercased like Redis's table entry.
    assert_eq!(
        q_err(&mut c, &["GeT"]),
        "ERR wrong number of arguments for 'get' command"
    );
    assert_eq!(
        q_err(&mut c, &["FOO", "bar", "baz"]),
        "ERR unknown command 'FOO', with args beginning with: 'bar' 'baz' "
    );
    assert_eq!(
        q_err(&mut c, &["nosuchcommand"]),
        "ERR unknown command 'nosuchcommand', with args beginning with: "
    );
    // As Redis: arguments are quoted while the text is under 128 bytes, the last one cut to
    // what is left of them.
    let many: Vec<String> = (0..30).map(|i| format!("x{i}")).collect();
    let mut argv = vec!["FOO"];
    argv.extend(many.iter().map(String::as_str));
    let quoted: String = (0..=22).map(|i| format!("'x{i}' ")).collect();
    assert_eq!(
        q_err(&mut c, &argv),
        format!("ERR unknown command 'FOO', with args beginning with: {quoted}")
    );
    let long = "y".repeat(200);
    assert_eq!(
        q_err(&mut c, &["FOO", "a", &long]),
        format!(
            "ERR unknown command 'FOO', with args beginning with: 'a' '{}' ",
            "y".repeat(124)
        )
    );
    assert_eq!(
        q_err(&mut c, &["SET", "k", "v", "XX", "NX"]),
        "ERR syntax error"
    );
    // Still serving on the same connection.
    assert_eq!(q::<Value>(&mut c, &["SET", "k", "v"]), Value::Okay);
    assert_eq!(q::<String>(&mut c, &["GET", "k"]), "v");
}

#[test]
#[ignore = "only strings exist so far: WRONGTYPE needs a second data type"]
fn wrongtype_on_non_string() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client();
    assert_eq!(q::<i64>(&mut c, &["LPUSH", "list", "a"]), 1);
    assert_eq!(
        q_err(&mut c, &["GET", "list"]),
        "WRONGTYPE Operation against a key holding the wrong kind of value"
    );
    assert_eq!(
        q_err(&mut c, &["INCR", "list"]),
        "WRONGTYPE Operation against a key holding the wrong kind of value"
    );
}

/// MOVE takes a key and its expiry to another database unless one holds it there (replies and
/// errors as redis-server 7.0.15 gives them); ROLE answers as a master.
#[test]
fn move_and_role() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client();
    let _: () = q(&mut c, &["SET", "mv", "v", "EX", "100"]);
    assert_eq!(q::<i64>(&mut c, &["MOVE", "mv", "3"]), 1);
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "mv"]), 0);
    assert_eq!(q::<i64>(&mut c, &["MOVE", "mv", "3"]), 0, "gone from here");
    let _: () = q(&mut c, &["SELECT", "3"]);
    assert_eq!(q::<String>(&mut c, &["GET", "mv"]), "v");
    let ttl: i64 = q(&mut c, &["TTL", "mv"]);
    assert!((90..=100).contains(&ttl), "TTL {ttl}");
    let _: () = q(&mut c, &["SELECT", "0"]);
    let _: () = q(&mut c, &["SET", "mv", "here"]);
    let _: () = q(&mut c, &["SELECT", "3"]);
    assert_eq!(
        q::<i64>(&mut c, &["MOVE", "mv", "0"]),
        0,
        "the target holds it"
    );
    assert_eq!(q::<String>(&mut c, &["GET", "mv"]), "v");
    for (args, err) in [
        (
            &["MOVE", "mv", "3"][..],
            "ERR source and destination objects are the same",
        ),
        (&["MOVE", "mv", "16"], "ERR DB index is out of range"),
        (
            &["MOVE", "mv", "x"],
            "ERR value is not an integer or out of range",
        ),
    ] {
        assert_eq!(q_err(&mut c, args), err, "{args:?}");
    }
    let role: Value = q(&mut c, &["ROLE"]);
    let Value::Array(parts) = role else {
        panic!("ROLE: {role:?}")
    };
    assert_eq!(parts[0], Value::BulkString(b"master".to_vec()));
    assert!(
        matches!(parts[1], Value::Int(n) if n > 0),
        "offset: {:?}",
        parts[1]
    );
    assert_eq!(parts[2], Value::Array(vec![]));
}

/// OBJECT and MEMORY USAGE: Redis's replies for encodings, missing keys and argument errors;
/// MEMORY USAGE gives what the hot cache charges for the key.
#[test]
fn object_and_memory_usage() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client();
    let long = "x".repeat(45);
    for (key, value, encoding) in [
        ("oi", "12345", "int"),
        ("oe", "hello", "embstr"),
        ("or", long.as_str(), "raw"),
    ] {
        let _: () = q(&mut c, &["SET", key, value]);
        assert_eq!(q::<String>(&mut c, &["OBJECT", "ENCODING", key]), encoding);
    }
    assert_eq!(
        q::<Value>(&mut c, &["OBJECT", "ENCODING", "nosuch"]),
        Value::Nil
    );
    assert_eq!(q::<i64>(&mut c, &["OBJECT", "REFCOUNT", "oe"]), 1);
    let short: i64 = q(&mut c, &["MEMORY", "USAGE", "oe"]);
    let longer: i64 = q(&mut c, &["MEMORY", "USAGE", "or", "SAMPLES", "0"]);
    assert_eq!(longer - short, 40, "one byte per value byte");
    assert_eq!(
        q::<Value>(&mut c, &["MEMORY", "USAGE", "nosuch"]),
        Value::Nil
    );
    for (args, err) in [
        (
            &["OBJECT", "ENCODING"][..],
            "ERR wrong number of arguments for 'object|encoding' command",
        ),
        (
            &["OBJECT", "foo", "oe"],
            "ERR unknown subcommand 'foo'. Try OBJECT HELP.",
        ),
        (
            &["MEMORY", "USAGE", "oe", "SAMPLES", "x"],
            "ERR value is not an integer or out of range",
        ),
        (&["MEMORY", "USAGE", "oe", "foo"], "ERR syntax error"),
    ] {
        assert_eq!(q_err(&mut c, args), err, "{args:?}");
    }
}

/// COPY's `DB` is read as an int first, as Redis 7.0.15 reads it (`getIntFromObjectOrReply`):
/// past the int range it answers Redis's range error, not "DB index is out of range" (replies
/// checked side by side with it; found by `meridian-bench diff`). MOVE already did.
#[test]
fn copy_db_outside_the_int_range() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.client();
    let _: () = q(&mut c, &["SET", "b", "v"]);
    let range = "ERR value is out of range, value must between -2147483648 and 2147483647";
    for (args, err) in [
        (&["COPY", "b", "c", "DB", "100000000000"][..], range),
        (&["COPY", "b", "c", "DB", "2147483648", "REPLACE"], range),
        (&["MOVE", "b", "100000000000"], range),
        (
            &["COPY", "b", "c", "DB", "16"],
            "ERR DB index is out of range",
        ),
        (
            &["COPY", "b", "c", "DB", "-1"],
            "ERR DB index is out of range",
        ),
        (
            &["COPY", "b", "c", "DB", "x"],
            "ERR value is not an integer or out of range",
        ),
    ] {
        assert_eq!(q_err(&mut c, args), err, "{args:?}");
    }
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "c"]), 0);
}

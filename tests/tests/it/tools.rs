//! The stock Redis tools against a node: `redis-cli` (one-shot, scripted stdin, RESP3, auth,
//! `--scan`) and `redis-benchmark`.

use std::process::Output;

use meridian_tests::{q, Node, NodeOpts};

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `redis-cli ARGS` and returns its stdout (trailing newline trimmed), asserting success.
fn cli(node: &Node, args: &[&str]) -> String {
    let o = node.redis_cli(args);
    assert!(
        o.status.success(),
        "redis-cli {args:?}: {}{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o).trim_end_matches('\n').to_string()
}

#[test]
fn redis_cli_one_shot_commands() {
    let node = Node::start(NodeOpts::default());
    assert_eq!(cli(&node, &["PING"]), "PONG");
    assert_eq!(cli(&node, &["SET", "greeting", "hello world"]), "OK");
    assert_eq!(cli(&node, &["GET", "greeting"]), "hello world");
    assert_eq!(cli(&node, &["INCR", "n"]), "1");
    assert_eq!(cli(&node, &["INCRBY", "n", "41"]), "42");
    assert_eq!(cli(&node, &["GET", "missing"]), "");
    assert_eq!(cli(&node, &["MSET", "a", "1", "b", "2"]), "OK");
    // (the nil prints as an empty last line, trimmed by `cli`)
    assert_eq!(cli(&node, &["MGET", "a", "b", "missing"]), "1\n2");
    assert_eq!(cli(&node, &["EXPIRE", "a", "100"]), "1");
    assert_eq!(cli(&node, &["TTL", "a"]), "100");
    assert_eq!(cli(&node, &["DBSIZE"]), "4");
    // --no-raw shows the interactive formatting.
    assert_eq!(cli(&node, &["--no-raw", "INCR", "n"]), "(integer) 43");
    assert_eq!(cli(&node, &["--no-raw", "GET", "missing"]), "(nil)");
    assert_eq!(
        cli(&node, &["--no-raw", "GET", "greeting"]),
        "\"hello world\""
    );
    // Errors are printed, exit status stays 0 for one-shot commands.
    let out = cli(&node, &["INCR", "greeting"]);
    assert!(
        out.contains("ERR value is not an integer or out of range"),
        "{out}"
    );
    // -n selects a database.
    assert_eq!(cli(&node, &["-n", "4", "SET", "only4", "x"]), "OK");
    assert_eq!(cli(&node, &["-n", "4", "GET", "only4"]), "x");
    assert_eq!(cli(&node, &["GET", "only4"]), "");
    // The session's writes are visible to the redis crate.
    let mut c = node.client();
    assert_eq!(q::<i64>(&mut c, &["GET", "n"]), 43);
    // INFO through the cli.
    let info = cli(&node, &["INFO", "keyspace"]);
    assert!(info.contains("db0:keys="), "{info}");
}

#[test]
fn redis_cli_scripted_session_and_resp3() {
    let node = Node::start(NodeOpts::default());
    let script = "SET k v\nGET k\nINCR counter\nINCR counter\nAPPEND k 2\nGET k\nDEL k\nEXISTS k\n";
    let o = node.redis_cli_stdin(&[], script);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "OK\nv\n1\n2\n2\nv2\n1\n0\n");
    // RESP3 (redis-cli sends HELLO 3).
    let o = node.redis_cli_stdin(&["-3"], "SET x 1\nGET x\nGET nothing\nHELLO 3\n");
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("OK\n1\n"), "{out}");
    assert!(out.contains("proto"), "{out}");
    // --scan walks the keyspace with SCAN.
    for i in 0..50 {
        let _ = cli(&node, &["SET", &format!("scan:{i}"), "x"]);
    }
    let mut keys: Vec<String> = cli(&node, &["--scan", "--pattern", "scan:*"])
        .lines()
        .map(str::to_string)
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 50, "{keys:?}");
}

#[test]
fn redis_cli_with_password() {
    let node = Node::start(NodeOpts::default().requirepass("cli-pw"));
    // The helper passes `-a cli-pw --no-auth-warning`.
    let o = node.redis_cli(&["SET", "k", "v"]);
    assert_eq!(stdout(&o).trim(), "OK");
    assert!(
        !stderr(&o).contains("Warning"),
        "--no-auth-warning silences the warning: {}",
        stderr(&o)
    );
    assert_eq!(cli(&node, &["GET", "k"]), "v");
    // Without the password the command is refused.
    let o = meridian_tests::redis_cli_at(node.port(), None, &["GET", "k"]);
    let text = format!("{}{}", stdout(&o), stderr(&o));
    assert!(text.contains("NOAUTH Authentication required."), "{text}");
    // A wrong password.
    let o = meridian_tests::redis_cli_at(node.port(), Some("bad"), &["GET", "k"]);
    let text = format!("{}{}", stdout(&o), stderr(&o));
    assert!(text.contains("WRONGPASS"), "{text}");
}

fn check_benchmark(o: &Output, tests: &[&str]) {
    let out = stdout(o);
    let err = stderr(o);
    assert!(o.status.success(), "redis-benchmark failed: {out}\n{err}");
    let all = format!("{out}\n{err}").to_lowercase();
    assert!(
        !all.contains("error"),
        "redis-benchmark reported errors:\n{out}\n{err}"
    );
    for t in tests {
        // Progress lines are overwritten with CR; split on both.
        let found = out
            .split(['\r', '\n'])
            .map(str::trim)
            .any(|l| l.starts_with(t) && l.contains("requests per second"));
        assert!(found, "no result line for {t}:\n{out}");
    }
    let summary: Vec<&str> = out
        .split(['\r', '\n'])
        .map(str::trim)
        .filter(|l| l.contains("requests per second"))
        .collect();
    meridian_tests::report(&format!("redis-benchmark:\n  {}", summary.join("\n  ")));
}

#[test]
fn redis_benchmark_completes_without_errors() {
    let node = Node::start(NodeOpts::default());
    let o = node.redis_benchmark(&["-t", "ping,set,get,incr,mset", "-n", "10000", "-q"]);
    check_benchmark(
        &o,
        &[
            "PING_INLINE",
            "PING_MBULK",
            "SET",
            "GET",
            "INCR",
            "MSET (10 keys)",
        ],
    );
    // The benchmark's keys exist afterwards: the writes went through.
    let mut c = node.client();
    assert!(q::<i64>(&mut c, &["DBSIZE"]) > 0);
}

#[test]
fn redis_benchmark_pipelined_with_random_keys() {
    let node = Node::start(NodeOpts::default().requirepass("bench-pw"));
    let o = node.redis_benchmark(&[
        "-t", "set,get", "-n", "20000", "-c", "20", "-P", "16", "-r", "1000", "-d", "64", "-q",
    ]);
    check_benchmark(&o, &["SET", "GET"]);
    let mut c = node.client();
    let n: i64 = q(&mut c, &["DBSIZE"]);
    assert!((1..=1000).contains(&n), "DBSIZE {n} after -r 1000");
}

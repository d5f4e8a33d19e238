//! Integration harness for Meridian: real `meridian` processes on loopback, driven by real
//! clients.
//!
//! Every scenario in `tests/tests/it/` uses this crate and nothing else to start servers and
//! talk to them:
//!
//! - [`Node`] is one `meridian` process with its own temp dir, ports and `node.log`;
//!   [`Node::start`] returns once `PING` answers. [`Node::stop`] (SIGTERM, then SIGKILL after a
//!   grace period), [`Node::kill`] (SIGKILL) and [`Node::restart`] drive its life cycle, and
//!   `Drop` stops and reaps it. When the test thread is panicking the directory is kept and its
//!   path and the log tail are printed.
//! - [`Cluster`] writes a topology file, runs `meridian certs`, starts every node and waits until
//!   every region reports a Raft leader.
//! - Clients: [`Node::client`] / [`Node::client_resp3`] (sync `redis` connections),
//!   [`Node::async_client`] / [`Node::async_client_resp3`] (multiplexed tokio connections),
//!   [`Node::raw`] (a [`RawConn`] speaking bytes, for exact wire checks), [`Node::redis_cli`]
//!   and [`Node::redis_benchmark`].
//! - [`RedisServer`] is a reference `redis-server` on a free port, for comparisons.
//! - [`free_port`] hands out loopback ports that are free for TCP and UDP and never repeats one
//!   within the process; [`eventually`] / [`eventually_async`] poll a condition until a
//!   deadline (no bare sleeps for synchronisation).
//! - A process-wide cap limits how many nodes run at once across parallel tests
//!   (`MERIDIAN_TEST_MAX_NODES`, default [`DEFAULT_MAX_NODES`]).
//!
//! The binary is `$MERIDIAN_BIN` if set, else `meridian` next to the test executable's parent
//! directory (`target/release/meridian` for `target/release/deps/it-…`).

#![warn(missing_docs)]

mod cluster;
mod limit;
mod node;
mod ports;
mod raw;
mod redis_server;
mod tools;
mod wait;

pub use cluster::{
    meridian_nodes, raft_status, Cluster, ClusterSpec, NodeInfo, RaftStatus, RegionSpec,
};
pub use limit::{NodePermit, DEFAULT_MAX_NODES};
pub use node::{describe_exit, meridian_bench_bin, meridian_bin, repo_root, Node, NodeOpts};
pub use ports::free_port;
pub use raw::{encode_command, RawConn, Reply};
pub use redis_server::RedisServer;
pub use tools::{output_within, redis_benchmark_at, redis_cli_at, require_tool};
pub use wait::{eventually, eventually_async};

/// Redis's full error text (`"ERR wrong number of arguments for 'get' command"`,
/// `"WRONGPASS invalid username-password pair …"`) rebuilt from a `redis` crate error, so tests
/// can compare it with what redis-server sends. Errors that did not come from the server are
/// rendered with `Display`.
pub fn err_text(err: &redis::RedisError) -> String {
    match (err.code(), err.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (Some(code), None) => code.to_string(),
        _ => err.to_string(),
    }
}

/// Builds a command from its words: `cmd(&["SET", "k", "v", "EX", "10"])`.
pub fn cmd<A: redis::ToRedisArgs>(args: &[A]) -> redis::Cmd {
    let mut c = redis::Cmd::new();
    for a in args {
        c.arg(a);
    }
    c
}

/// Runs a command given as words and converts the reply; panics with the command and the
/// error text if the server answered with an error.
pub fn q<T: redis::FromRedisValue>(con: &mut redis::Connection, args: &[&str]) -> T {
    cmd(args)
        .query(con)
        .unwrap_or_else(|e| panic!("{args:?} failed: {}", err_text(&e)))
}

/// Runs a command given as words and returns the server's error text; panics if it succeeded.
pub fn q_err(con: &mut redis::Connection, args: &[&str]) -> String {
    match cmd(args).query::<redis::Value>(con) {
        Ok(v) => panic!("{args:?}: expected an error reply, got {v:?}"),
        Err(e) => err_text(&e),
    }
}

/// Async form of [`q`].
pub async fn qa<T: redis::FromRedisValue>(
    con: &mut redis::aio::MultiplexedConnection,
    args: &[&str],
) -> T {
    cmd(args)
        .query_async(con)
        .await
        .unwrap_or_else(|e| panic!("{args:?} failed: {}", err_text(&e)))
}

/// Async form of [`q_err`].
pub async fn qa_err(con: &mut redis::aio::MultiplexedConnection, args: &[&str]) -> String {
    match cmd(args).query_async::<redis::Value>(con).await {
        Ok(v) => panic!("{args:?}: expected an error reply, got {v:?}"),
        Err(e) => err_text(&e),
    }
}

/// Prints a figure (a restart time, a benchmark summary) to the process's real stderr, past
/// libtest's output capture, so it shows up in CI logs of passing runs too.
pub fn report(text: &str) {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{text}");
}

/// A key prefix unique within this process, for tests that share a node.
pub fn unique_prefix(test: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{test}:{}:", NEXT.fetch_add(1, Ordering::Relaxed))
}

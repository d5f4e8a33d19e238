//! Differential compatibility: `meridian-bench diff` sends the same seeded random command
//! streams (strings, bitmaps, keys, expiry, transactions, malformed commands) to a node and to
//! a reference redis-server, and every reply must match (README: "Commands", the paragraph on
//! the differential check).

use std::process::Command;
use std::time::Duration;

use meridian_tests::{meridian_bench_bin, output_within, Node, NodeOpts, RedisServer};

/// Seeds run in RESP2 and in RESP3; each seed is a different stream.
const SEEDS: [u64; 4] = [1, 2, 3, 4];
/// Commands per stream: a few seconds each against a local node.
const COMMANDS: u32 = 5000;
/// Longest one stream may take before the test fails (a hang, not a mismatch).
const STREAM_LIMIT: Duration = Duration::from_secs(60);

/// Zero mismatches between redis-server 7.0.15 and a node over fixed seeds, RESP2 and RESP3;
/// the mismatches, with the commands and both replies, are printed otherwise.
#[test]
fn random_command_streams_match_redis() {
    let node = Node::start(NodeOpts::default());
    let redis = RedisServer::start();
    let bench = meridian_bench_bin();
    assert!(
        bench.is_file(),
        "{} not found: build it (cargo build --release -p meridian-bench) or set \
         MERIDIAN_BENCH_BIN",
        bench.display()
    );
    let mut failures = Vec::new();
    for seed in SEEDS {
        for resp3 in [false, true] {
            let mut cmd = Command::new(&bench);
            cmd.args(["diff", "--a", &redis.addr(), "--b", &node.addr()])
                .args(["--seed", &seed.to_string()])
                .args(["--commands", &COMMANDS.to_string()]);
            if resp3 {
                cmd.arg("--resp3");
            }
            let what = format!("meridian-bench diff --seed {seed} (RESP3: {resp3})");
            let out = output_within(cmd, None, STREAM_LIMIT, &what);
            if !out.status.success() {
                failures.push(format!(
                    "{what}: {}\n{}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

//! The bench against a live redis-server on a loopback port: sane figures, errors reported,
//! compare and geo modes. Skipped (with a message) when redis-server is not installed.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BENCH: &str = env!("CARGO_BIN_EXE_meridian-bench");

/// A redis-server on a free loopback port, stopped on drop.
struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis_server() -> Option<PathBuf> {
    let ok = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if ok {
        Some(PathBuf::from("redis-server"))
    } else {
        eprintln!("SKIPPED: redis-server is not installed (apt-get install redis-server)");
        None
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0")
}

fn pings(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

impl Redis {
    /// Starts one; `None` when redis-server is missing.
    fn start(extra: &[&str]) -> Option<Self> {
        let bin = redis_server()?;
        let dir = tempfile::tempdir().expect("temp dir");
        // A port can be taken between the probe and the bind: retry a few times.
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(&bin)
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                ])
                .args(["--appendonly", "no", "--dir"])
                .arg(dir.path())
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawning redis-server");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if pings(port) {
                    return Some(Redis {
                        child,
                        port,
                        _dir: dir,
                    });
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break; // exited: port taken, try another
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("redis-server did not answer PING");
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn bench(args: &[&str]) -> Output {
    let out = Command::new(BENCH)
        .args(args)
        .output()
        .expect("running meridian-bench");
    eprintln!(
        "meridian-bench {}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("JSON report written");
    serde_json::from_str(&text).expect("valid JSON")
}

fn f(v: &Value, ptr: &str) -> f64 {
    v.pointer(ptr)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no number at {ptr} in {v}"))
}

/// Non-zero throughput, ordered percentiles, no errors, for one op report.
fn assert_sane(op: &Value) {
    assert!(f(op, "/rps") > 0.0, "throughput: {op}");
    assert!(f(op, "/requests") > 0.0);
    assert_eq!(f(op, "/errors"), 0.0, "errors: {op}");
    let l = |k: &str| f(op, &format!("/latency_ms/{k}"));
    assert!(l("p50") > 0.0);
    assert!(l("p50") <= l("p90") && l("p90") <= l("p99"), "{op}");
    assert!(l("p99") <= l("p999") && l("p999") <= l("max"), "{op}");
}

#[test]
fn run_against_redis_is_sane() {
    let Some(redis) = Redis::start(&[]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("run.json");
    let port = redis.port.to_string();
    let out = bench(&[
        "-p",
        &port,
        "--duration",
        "1",
        "-c",
        "8",
        "-P",
        "4",
        "-r",
        "1000",
        "--ratio",
        "2:1:1",
        "--dist",
        "zipf",
        "--preload",
        "-q",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "exit status {:?}", out.status);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("p99 ms") && stdout.contains("GET") && stdout.contains("INCR"));
    let v = read_json(&json);
    assert_eq!(v["mode"], "run");
    let ops = v.pointer("/run/ops").and_then(Value::as_array).unwrap();
    assert_eq!(ops.len(), 3);
    for op in ops {
        assert_sane(op);
    }
    assert_sane(&v["run"]["total"]);
    let elapsed = f(&v, "/run/elapsed_s");
    assert!((0.9..5.0).contains(&elapsed), "elapsed {elapsed}");
    assert!(dir.path().join("run-latency.svg").exists());
    assert!(dir.path().join("run-throughput.svg").exists());
}

#[test]
fn resp3_and_request_count() {
    let Some(redis) = Redis::start(&[]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r3.json");
    let port = redis.port.to_string();
    let out = bench(&[
        "run",
        "-p",
        &port,
        "--resp",
        "3",
        "-n",
        "5000",
        "-c",
        "5",
        "-P",
        "7",
        "--ratio",
        "get=1,set=1",
        "-q",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let v = read_json(&json);
    // Exactly the requested count, even though 5000 is not a multiple of 5 x 7.
    assert_eq!(f(&v, "/run/total/requests"), 5000.0);
    assert_sane(&v["run"]["total"]);
    assert_eq!(f(&v, "/run/settings/resp"), 3.0);
}

#[test]
fn server_errors_are_reported_not_hidden() {
    let Some(redis) = Redis::start(&[]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("err.json");
    let port = redis.port.to_string();
    // Preload makes every key:… a 64-byte string of 'x': INCR on it must fail.
    let args = [
        "-p",
        &port,
        "-r",
        "50",
        "--preload",
        "--command",
        "INCR __key__",
        "--command",
        "GET __key__",
        "-n",
        "2000",
        "-c",
        "4",
        "-P",
        "8",
        "-q",
        "--json",
        json.to_str().unwrap(),
    ];
    let out = bench(&args);
    assert_eq!(out.status.code(), Some(1), "errors must fail the run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("not an integer"), "{stdout}");
    let v = read_json(&json);
    let ops = v.pointer("/run/ops").and_then(Value::as_array).unwrap();
    let incr = ops.iter().find(|o| o["name"] == "INCR").unwrap();
    let get = ops.iter().find(|o| o["name"] == "GET").unwrap();
    assert!(f(incr, "/errors") > 0.0);
    assert_eq!(f(incr, "/errors"), f(incr, "/requests"), "every INCR fails");
    assert_eq!(f(get, "/errors"), 0.0);
    let msg = incr
        .pointer("/error_messages/0/message")
        .and_then(Value::as_str)
        .unwrap();
    assert_eq!(msg, "ERR value is not an integer or out of range");
    assert_eq!(f(&v, "/run/total/errors"), f(incr, "/errors"));

    // --allow-errors: same report, exit 0.
    let mut allowed = args.to_vec();
    allowed.push("--allow-errors");
    let out = bench(&allowed);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("errors: INCR"));

    // An unknown command is an error reply too, and WRONGTYPE as well.
    let out = bench(&[
        "-p",
        &port,
        "--command",
        "NOSUCHCMD __key__",
        "-n",
        "100",
        "-q",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("unknown command"));
    let out = bench(&[
        "-p",
        &port,
        "-r",
        "5",
        "--command",
        "LPUSH __key__ x",
        "-n",
        "10",
        "-c",
        "1",
        "-q",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("WRONGTYPE"));
}

#[test]
fn unreachable_server_fails_cleanly() {
    let port = free_port().to_string();
    let out = bench(&["-p", &port, "-n", "10", "-q", "--timeout", "2"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("connecting to"));
}

#[test]
fn compare_two_servers() {
    let Some(a) = Redis::start(&[]) else { return };
    let Some(b) = Redis::start(&[]) else { return };
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("cmp.json");
    let out = bench(&[
        "compare",
        "--a",
        &a.addr(),
        "--b",
        &b.addr(),
        "--a-label",
        "redis-a",
        "--b-label",
        "redis-b",
        "-n",
        "20000",
        "-c",
        "10",
        "-P",
        "4",
        "--ratio",
        "1:1",
        "-q",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("redis-b vs redis-a"), "{stdout}");
    let v = read_json(&json);
    assert_sane(&v["a"]["total"]);
    assert_sane(&v["b"]["total"]);
    let ratio = v["ratio"].as_array().unwrap();
    assert_eq!(ratio.len(), 3, "GET, SET, ALL");
    // Two identical servers: same order of magnitude.
    let all = f(&ratio[2], "/rps");
    assert!((0.1..10.0).contains(&all), "ratio {all}");
}

#[test]
fn geo_lag_through_replication() {
    let Some(primary) = Redis::start(&[]) else {
        return;
    };
    let port = primary.port.to_string();
    let Some(replica) = Redis::start(&["--replicaof", "127.0.0.1", &port]) else {
        return;
    };
    // Wait until the replica is in sync (a loading replica answers -LOADING).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = Command::new("redis-cli")
            .args(["-p", &replica.port.to_string(), "INFO", "replication"])
            .output();
        match out {
            Ok(o) if String::from_utf8_lossy(&o.stdout).contains("master_link_status:up") => break,
            Err(_) => {
                eprintln!("SKIPPED: redis-cli missing");
                return;
            }
            _ if Instant::now() > deadline => panic!("replica never synced"),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("geo.json");
    let out = bench(&[
        "geo",
        "--write",
        &primary.addr(),
        "--read",
        &replica.addr(),
        "--read",
        &primary.addr(),
        "--rate",
        "2000",
        "--duration",
        "1",
        "-q",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let v = read_json(&json);
    let writes = f(&v, "/geo/writes");
    assert!((1500.0..=2100.0).contains(&writes), "writes {writes}");
    for r in v.pointer("/geo/readers").and_then(Value::as_array).unwrap() {
        assert_eq!(f(r, "/seen"), writes, "{r}");
        assert_eq!(f(r, "/missing"), 0.0);
        let l = |k: &str| f(r, &format!("/lag_ms/{k}"));
        assert!(l("p50") > 0.0 && l("p50") <= l("p99") && l("p99") <= l("max"));
    }
    assert!(dir.path().join("geo-lag.svg").exists());
}

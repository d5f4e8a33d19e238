//! `redis-cli` and `redis-benchmark` as subprocesses.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc::{sync_channel, Receiver};
use std::time::{Duration, Instant};

/// Absolute path of `tool` found in `PATH`. Panics with a clear message when it is missing:
/// the project's test script installs `redis-tools`, so a missing tool is a setup error, not a
/// reason to skip.
pub fn require_tool(tool: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(tool);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "`{tool}` not found in PATH; install it (Debian/Ubuntu: `apt-get install redis-tools`) \
         or run the tests through the project's test command, which installs it"
    );
}

/// Longest a tool may run before it is killed: a `redis-benchmark` whose server died spins at
/// 100 % of a core forever, which would hold the whole test run until CI's limit.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(300);

fn run(cmd: Command, what: &str) -> Output {
    output_within(cmd, None, TOOL_TIMEOUT, what)
}

/// Runs `cmd` to completion with its stdout and stderr captured and `stdin` (if any) written to
/// it; a run that takes longer than `limit` is killed and the test fails with what it printed.
pub fn output_within(
    mut cmd: Command,
    stdin: Option<&[u8]>,
    limit: Duration,
    what: &str,
) -> Output {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("running {what}: {e}"));
    // Fed and drained on threads of their own, so a full pipe never stalls the child.
    let feeder = child.stdin.take().map(|mut pipe| {
        let input = stdin.unwrap_or_default().to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        })
    });
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("waiting for {what}: {e}"),
        }
    };
    if let Some(feeder) = feeder.filter(|_| status.is_some()) {
        let _ = feeder.join();
    }
    // A finished tool's output is read to the end, as `Command::output` does. A killed tool's
    // children may still hold its pipes open: its output is waited for a moment at most (and
    // missing from the message if they do).
    let collect = |rx: Receiver<Vec<u8>>| match status {
        Some(_) => rx.recv().unwrap_or_default(),
        None => rx.recv_timeout(Duration::from_secs(1)).unwrap_or_default(),
    };
    let stdout = collect(stdout);
    let stderr = collect(stderr);
    match status {
        Some(status) => Output {
            status,
            stdout,
            stderr,
        },
        None => panic!(
            "{what} did not finish within {limit:?}; killed. It printed:\n{}{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
    }
}

/// Reads `pipe` to its end on a thread of its own; the bytes arrive on the returned channel.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> Receiver<Vec<u8>> {
    let (tx, rx) = sync_channel(1);
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        let _ = tx.send(bytes);
    });
    rx
}

/// Runs `redis-cli -h 127.0.0.1 -p PORT [-a PW --no-auth-warning] ARGS…` to completion.
pub fn redis_cli_at(port: u16, password: Option<&str>, args: &[&str]) -> Output {
    run(tool_command("redis-cli", port, password, args), "redis-cli")
}

/// Runs `redis-benchmark -h 127.0.0.1 -p PORT [-a PW] ARGS…` to completion.
pub fn redis_benchmark_at(port: u16, password: Option<&str>, args: &[&str]) -> Output {
    run(
        tool_command("redis-benchmark", port, password, args),
        "redis-benchmark",
    )
}

/// A `Command` for `tool` pointed at `127.0.0.1:port`, authenticated when `password` is set.
pub(crate) fn tool_command(
    tool: &str,
    port: u16,
    password: Option<&str>,
    args: &[&str],
) -> Command {
    let mut cmd = Command::new(require_tool(tool));
    cmd.arg("-h")
        .arg("127.0.0.1")
        .arg("-p")
        .arg(port.to_string());
    if let Some(pw) = password {
        cmd.arg("-a").arg(pw);
        if tool == "redis-cli" {
            cmd.arg("--no-auth-warning");
        }
    }
    cmd.args(args);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_is_fed_its_stdin_and_its_output_kept() {
        let out = output_within(
            Command::new("cat"),
            Some(b"hello"),
            Duration::from_secs(30),
            "cat",
        );
        assert!(out.status.success());
        assert_eq!(out.stdout, b"hello");
    }

    #[test]
    #[should_panic(expected = "did not finish within")]
    fn a_tool_that_hangs_is_killed() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        output_within(cmd, None, Duration::from_millis(300), "sleep");
    }
}

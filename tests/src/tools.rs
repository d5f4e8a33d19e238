//! `redis-cli` and `redis-benchmark` as subprocesses.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

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

fn run(mut cmd: Command, what: &str) -> Output {
    cmd.stdin(Stdio::null());
    cmd.output()
        .unwrap_or_else(|e| panic!("running {what}: {e}"))
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

//! One `meridian` process under test.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tempfile::TempDir;

use crate::limit::NodePermit;
use crate::ports::free_port;
use crate::raw::{encode_command, RawConn};
use crate::tools::tool_command;

/// How long [`Node::stop`] waits after SIGTERM before sending SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long a node may take from spawn to answering `PING`.
const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(30);
/// Read/response timeout for the `redis` clients handed out, so a hung server fails a test
/// instead of hanging it.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);
/// Log lines printed when a test fails.
const LOG_TAIL_LINES: usize = 60;
/// Bytes read from the end of the log to find those lines.
const LOG_TAIL_BYTES: u64 = 16 * 1024;

/// The `meridian` binary: `$MERIDIAN_BIN` if set, else `meridian` in the parent of the
/// directory holding the current test executable (`target/release/deps/it-…` →
/// `target/release/meridian`).
pub fn meridian_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("MERIDIAN_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("locating the test executable");
    let deps = exe
        .parent()
        .expect("test executable has a parent directory");
    let dir = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().unwrap_or(deps)
    } else {
        deps
    };
    dir.join("meridian")
}

/// The `meridian-bench` binary: `$MERIDIAN_BENCH_BIN` if set, else `meridian-bench` next to
/// [`meridian_bin`] (`tests/run.sh` builds every binary of the workspace there).
pub fn meridian_bench_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("MERIDIAN_BENCH_BIN") {
        return PathBuf::from(p);
    }
    meridian_bin().with_file_name("meridian-bench")
}

/// The repository's root: from `CARGO_MANIFEST_DIR` as cargo sets it when it runs the tests,
/// falling back to the directory the tests were compiled in. A test binary reused from a
/// shared target directory (CI clones into a new directory each time) must read the config
/// files of the checkout it runs for, not of the one it was first built from.
pub fn repo_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir
        .parent()
        .map(PathBuf::from)
        .unwrap_or(manifest_dir)
}

/// Options for a single [`Node`]. `Default` gives a plain node: no password, default
/// `appendfsync`, no metrics listener.
#[derive(Clone, Debug, Default)]
pub struct NodeOpts {
    /// `--appendfsync` (`always`, `everysec`, `no`); the server default when `None`.
    pub appendfsync: Option<String>,
    /// `--requirepass`; clients from [`Node::client`] and the tool helpers authenticate with it.
    pub requirepass: Option<String>,
    /// Start a Prometheus listener on a free port (`--metrics-addr`).
    pub metrics: bool,
    /// TOML written to `meridian.toml` in the node's dir and passed as `--config`.
    pub config_toml: Option<String>,
    /// More arguments appended after the generated ones.
    pub extra_args: Vec<String>,
    /// Extra environment for the process (`RUST_LOG` defaults to the test's own or
    /// `meridian=info`).
    pub env: Vec<(String, String)>,
    /// Time allowed from spawn to `PING`; [`DEFAULT_START_TIMEOUT`] when `None`.
    pub start_timeout: Option<Duration>,
}

impl NodeOpts {
    /// Sets `appendfsync`.
    pub fn appendfsync(mut self, mode: &str) -> Self {
        self.appendfsync = Some(mode.to_string());
        self
    }

    /// Sets `requirepass`.
    pub fn requirepass(mut self, pw: &str) -> Self {
        self.requirepass = Some(pw.to_string());
        self
    }

    /// Turns the metrics listener on.
    pub fn metrics(mut self) -> Self {
        self.metrics = true;
        self
    }

    /// Sets the config file contents.
    pub fn config_toml(mut self, toml: &str) -> Self {
        self.config_toml = Some(toml.to_string());
        self
    }

    /// Appends one raw argument.
    pub fn arg(mut self, a: &str) -> Self {
        self.extra_args.push(a.to_string());
        self
    }
}

/// Where a node's files live: its own temp dir, or a subdirectory of a cluster's.
#[derive(Debug)]
enum NodeDir {
    Owned(TempDir),
    Shared(PathBuf),
}

impl NodeDir {
    fn path(&self) -> &Path {
        match self {
            NodeDir::Owned(t) => t.path(),
            NodeDir::Shared(p) => p,
        }
    }
}

/// A running (or stopped) `meridian` process: its ports, directory and log.
///
/// Dropping a `Node` stops it (SIGTERM, then SIGKILL after [`STOP_GRACE`]) and reaps it. If the
/// thread is panicking (a failed assertion), the directory is kept and its path and the tail of
/// `node.log` are printed to stderr.
#[derive(Debug)]
pub struct Node {
    name: String,
    port: u16,
    metrics_port: Option<u16>,
    dir: Option<NodeDir>,
    data_dir: PathBuf,
    args: Vec<OsString>,
    env: Vec<(String, String)>,
    password: Option<String>,
    start_timeout: Duration,
    child: Option<Child>,
    _permit: NodePermit,
}

impl Node {
    /// Starts a single node on free ports with a fresh temp dir and waits until `PING` answers.
    /// Panics (with the log tail) if it does not come up.
    pub fn start(opts: NodeOpts) -> Node {
        Node::try_start(opts).unwrap_or_else(|e| panic!("starting meridian: {e:#}"))
    }

    /// Fallible form of [`Node::start`].
    pub fn try_start(opts: NodeOpts) -> anyhow::Result<Node> {
        let permit = NodePermit::acquire(1);
        let dir = tempfile::Builder::new()
            .prefix("meridian-node-")
            .tempdir()
            .context("creating the node's temp dir")?;
        let port = free_port();
        let metrics_port = opts.metrics.then(free_port);
        let data_dir = dir.path().join("data");
        let mut args: Vec<OsString> = vec![
            "--port".into(),
            port.to_string().into(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--data-dir".into(),
            data_dir.clone().into(),
        ];
        if let Some(m) = metrics_port {
            args.push("--metrics-addr".into());
            args.push(format!("127.0.0.1:{m}").into());
        }
        if let Some(mode) = &opts.appendfsync {
            args.push("--appendfsync".into());
            args.push(mode.into());
        }
        if let Some(pw) = &opts.requirepass {
            args.push("--requirepass".into());
            args.push(pw.into());
        }
        if let Some(toml) = &opts.config_toml {
            let path = dir.path().join("meridian.toml");
            std::fs::write(&path, toml).context("writing meridian.toml")?;
            args.push("--config".into());
            args.push(path.into());
        }
        args.extend(opts.extra_args.iter().map(OsString::from));
        let mut node = Node {
            name: format!("node-{port}"),
            port,
            metrics_port,
            dir: Some(NodeDir::Owned(dir)),
            data_dir,
            args,
            env: opts.env.clone(),
            password: opts.requirepass.clone(),
            start_timeout: opts.start_timeout.unwrap_or(DEFAULT_START_TIMEOUT),
            child: None,
            _permit: permit,
        };
        node.launch()?;
        Ok(node)
    }

    /// A node of a topology (used by [`crate::Cluster`]): not yet started.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn for_topology(
        name: &str,
        port: u16,
        dir: PathBuf,
        topology: &Path,
        password: Option<String>,
        metrics_port: Option<u16>,
        extra_args: &[String],
        env: Vec<(String, String)>,
        permit: NodePermit,
    ) -> Node {
        let data_dir = dir.join("data");
        let mut args: Vec<OsString> = vec![
            "--config".into(),
            topology.into(),
            "--node".into(),
            name.into(),
            "--data-dir".into(),
            data_dir.clone().into(),
        ];
        if let Some(m) = metrics_port {
            args.push("--metrics-addr".into());
            args.push(format!("127.0.0.1:{m}").into());
        }
        args.extend(extra_args.iter().map(OsString::from));
        Node {
            name: name.to_string(),
            port,
            metrics_port,
            dir: Some(NodeDir::Shared(dir)),
            data_dir,
            args,
            env,
            password,
            start_timeout: DEFAULT_START_TIMEOUT,
            child: None,
            _permit: permit,
        }
    }

    /// Replaces the path after `--config` for the next start (a node of a topology switched to
    /// another topology file).
    pub(crate) fn set_config_path(&mut self, path: &Path) {
        let at = self
            .args
            .iter()
            .position(|a| a == "--config")
            .expect("node started with --config");
        self.args[at + 1] = path.into();
    }

    /// The node's name (`node-PORT` for single nodes, the topology name in a cluster).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The RESP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The Prometheus port, if started with [`NodeOpts::metrics`] (or a cluster's
    /// `with_metrics`).
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_port
    }

    /// `GET /metrics` from the node's Prometheus listener: the whole HTTP response, status line
    /// and headers included.
    pub fn scrape_metrics(&self) -> anyhow::Result<String> {
        use std::io::Write;
        let port = self
            .metrics_port
            .context("started without a metrics listener")?;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
        let mut resp = String::new();
        s.read_to_string(&mut resp)?;
        Ok(resp)
    }

    /// The node's directory (holds `node.log` and `data/`).
    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .map(NodeDir::path)
            .expect("node dir present until drop")
    }

    /// The `--data-dir` given to the node.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Path of the combined stdout/stderr log.
    pub fn log_path(&self) -> PathBuf {
        self.dir().join("node.log")
    }

    /// The password the node requires, if any.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the process runs (it may have exited on its own: this checks).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            None => false,
            Some(c) => matches!(c.try_wait(), Ok(None)),
        }
    }

    /// Spawns the process and waits for `PING`; returns the time from spawn to first answer.
    fn launch(&mut self) -> anyhow::Result<Duration> {
        let started = self.spawn_process()?;
        self.wait_ready(started)?;
        Ok(started.elapsed())
    }

    /// Spawns the process without waiting for it; returns the spawn instant.
    pub(crate) fn spawn_process(&mut self) -> anyhow::Result<Instant> {
        if self.child.is_some() {
            bail!("node {} is already running", self.name);
        }
        let bin = meridian_bin();
        if !bin.is_file() {
            bail!(
                "meridian binary not found at {} (build it with `cargo build --release -p meridian-server` or set MERIDIAN_BIN)",
                bin.display()
            );
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .context("opening node.log")?;
        let mut cmd = Command::new(&bin);
        cmd.args(&self.args)
            .current_dir(self.dir())
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("cloning the log handle")?)
            .stderr(log);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "meridian=info,geo=info,openraft=warn");
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let started = Instant::now();
        let child =
            spawn_tied_to_process(cmd).with_context(|| format!("spawning {}", bin.display()))?;
        self.child = Some(child);
        Ok(started)
    }

    /// Waits until `PING` answers, failing early if the process exits.
    pub(crate) fn wait_ready(&mut self, started: Instant) -> anyhow::Result<()> {
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    bail!(
                        "{} exited during start-up with {status}; log tail:\n{}",
                        self.name,
                        self.log_tail()
                    );
                }
            }
            if self.ping_answers() {
                return Ok(());
            }
            if started.elapsed() > self.start_timeout {
                bail!(
                    "{} did not answer PING within {:?}; log tail:\n{}",
                    self.name,
                    self.start_timeout,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// True if a `PING` on a fresh connection gets a reply other than `-LOADING` (`-NOAUTH`
    /// counts: the node is up and serving, it just wants a password).
    pub fn ping_answers(&self) -> bool {
        let Ok(mut c) = RawConn::connect(self.port) else {
            return false;
        };
        if c.try_send(&encode_command(&["PING"])).is_err() {
            return false;
        }
        match c.try_read_reply(Duration::from_millis(500)) {
            Ok(Some(reply)) => !reply.as_err().is_some_and(|e| e.starts_with("LOADING")),
            _ => false,
        }
    }

    /// Graceful stop: SIGTERM, wait up to [`STOP_GRACE`], then SIGKILL. Returns the exit status,
    /// or `None` if the node was not running.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        signal(&child, libc::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(_) => break,
            }
        }
        eprintln!(
            "{}: still running {STOP_GRACE:?} after SIGTERM, sending SIGKILL",
            self.name
        );
        let _ = child.kill();
        child.wait().ok()
    }

    /// Sends SIGTERM without waiting; [`Node::stop`] (or drop) then reaps the process. Lets a
    /// cluster shut all its nodes down at once instead of one after the other.
    pub fn terminate(&self) {
        if let Some(child) = self.child.as_ref() {
            signal(child, libc::SIGTERM);
        }
    }

    /// SIGKILL and reap (a crash). Returns the exit status, or `None` if not running.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        let _ = child.kill();
        child.wait().ok()
    }

    /// Stops the node if it runs (gracefully), starts it again with the same ports, directory
    /// and arguments, waits for `PING`, and returns the time from spawn to the first answer.
    pub fn restart(&mut self) -> Duration {
        self.stop();
        self.launch()
            .unwrap_or_else(|e| panic!("restarting {}: {e:#}", self.name))
    }

    /// Starts a node that is not running (after [`Node::kill`] or [`Node::stop`]); returns the
    /// time to the first `PING` answer. Same as [`Node::restart`] on a stopped node.
    pub fn start_again(&mut self) -> Duration {
        self.restart()
    }

    /// `redis://[:PW@]127.0.0.1:PORT/` (with `?protocol=resp3` when `resp3`), authenticated
    /// when the node has a password.
    pub fn url(&self, resp3: bool) -> String {
        self.url_with(resp3, self.password.as_deref())
    }

    /// Like [`Node::url`] with an explicit password (`None`: unauthenticated).
    pub fn url_with(&self, resp3: bool, password: Option<&str>) -> String {
        let auth = password.map(|p| format!(":{p}@")).unwrap_or_default();
        let proto = if resp3 { "?protocol=resp3" } else { "" };
        format!("redis://{auth}127.0.0.1:{}/{proto}", self.port)
    }

    fn sync_client(&self, url: &str) -> redis::Connection {
        let client = redis::Client::open(url).expect("valid redis URL");
        let con = client
            .get_connection_with_timeout(CLIENT_TIMEOUT)
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.addr()));
        con.set_read_timeout(Some(CLIENT_TIMEOUT))
            .expect("setting read timeout");
        con.set_write_timeout(Some(CLIENT_TIMEOUT))
            .expect("setting write timeout");
        con
    }

    async fn multiplexed(&self, url: &str) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(url).expect("valid redis URL");
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(CLIENT_TIMEOUT)
            .set_response_timeout(CLIENT_TIMEOUT);
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.addr()))
    }

    /// A sync RESP2 connection (authenticated if the node has a password).
    pub fn client(&self) -> redis::Connection {
        self.sync_client(&self.url(false))
    }

    /// A sync RESP3 connection (`HELLO 3` on connect).
    pub fn client_resp3(&self) -> redis::Connection {
        self.sync_client(&self.url(true))
    }

    /// An async multiplexed RESP2 connection.
    pub async fn async_client(&self) -> redis::aio::MultiplexedConnection {
        self.multiplexed(&self.url(false)).await
    }

    /// An async multiplexed RESP3 connection.
    pub async fn async_client_resp3(&self) -> redis::aio::MultiplexedConnection {
        self.multiplexed(&self.url(true)).await
    }

    /// A raw byte-level connection (never authenticated).
    pub fn raw(&self) -> RawConn {
        RawConn::connect(self.port).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Runs `redis-cli` against this node (`-a PW --no-auth-warning` added when it has a
    /// password).
    pub fn redis_cli(&self, args: &[&str]) -> Output {
        crate::tools::redis_cli_at(self.port, self.password.as_deref(), args)
    }

    /// Runs `redis-cli` with `stdin` fed to it (a scripted interactive session).
    pub fn redis_cli_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let cmd = tool_command("redis-cli", self.port, self.password.as_deref(), args);
        crate::tools::output_within(
            cmd,
            Some(stdin.as_bytes()),
            crate::tools::TOOL_TIMEOUT,
            "redis-cli",
        )
    }

    /// Runs `redis-benchmark` against this node.
    pub fn redis_benchmark(&self, args: &[&str]) -> Output {
        crate::tools::redis_benchmark_at(self.port, self.password.as_deref(), args)
    }

    /// The last lines of `node.log`.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log_path())
    }

    /// Every line of `node.log` (all runs of this node) that contains `needle`.
    pub fn log_lines_with(&self, needle: &str) -> Vec<String> {
        let bytes = std::fs::read(self.log_path()).unwrap_or_default();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        if panicking {
            // Kill first so the log is complete and a hung node does not delay the report.
            self.kill();
        } else {
            self.stop();
        }
        if panicking {
            match self.dir.take() {
                Some(NodeDir::Owned(t)) => {
                    let path = t.keep();
                    eprintln!(
                        "--- {} failed test: kept {} ; log tail:\n{}",
                        self.name,
                        path.display(),
                        log_tail(&path.join("node.log"))
                    );
                }
                Some(NodeDir::Shared(p)) => {
                    eprintln!(
                        "--- {} ({}) log tail:\n{}",
                        self.name,
                        p.display(),
                        log_tail(&p.join("node.log"))
                    );
                }
                None => {}
            }
        }
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) on a child we spawned and have not reaped yet, so the pid is ours.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Text of the last [`LOG_TAIL_LINES`] lines of a log file.
pub(crate) fn log_tail(path: &Path) -> String {
    let Ok(mut f) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)));
    let mut bytes = Vec::new();
    let _ = f.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `cmd` from one long-lived thread with `PR_SET_PDEATHSIG = SIGKILL`, so the child dies
/// with the test process even when it is killed without unwinding (a timeout, ^C). The death
/// signal follows the thread that forked, hence the dedicated thread that never exits.
fn spawn_tied_to_process(mut cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("meridian-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("starting the spawner thread");
        Mutex::new(tx)
    });
    // SAFETY: the closure runs between fork and exec and only calls prctl(2), which is
    // async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    tx.lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, reply_tx))
        .map_err(|_| std::io::Error::other("spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("spawner thread is gone"))?
}

/// Describes how a process ended, for assertion messages (`exit 0`, `signal 9`).
pub fn describe_exit(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => status.to_string(),
    }
}

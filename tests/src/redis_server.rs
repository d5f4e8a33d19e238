//! A reference `redis-server` on a free loopback port, for tests that compare Meridian's
//! replies with Redis's.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::bail;
use tempfile::TempDir;

use crate::ports::free_port;
use crate::raw::{encode_command, RawConn};
use crate::tools::require_tool;
use crate::wait::eventually;

/// How long redis-server may take to answer `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// One `redis-server` (no persistence: `--save ''`, `--appendonly no`), killed and reaped on
/// drop. Installed by `tests/deps.sh --with-redis-server`, which the test command runs.
pub struct RedisServer {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl RedisServer {
    /// Starts one on a free loopback port and returns once it answers `PING`; panics when
    /// `redis-server` is missing or does not start.
    pub fn start() -> RedisServer {
        let bin: PathBuf = require_tool("redis-server");
        let dir = tempfile::tempdir().expect("temp dir for redis-server");
        let port = free_port();
        let child = Command::new(&bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let mut server = RedisServer {
            child,
            port,
            _dir: dir,
        };
        eventually(START_TIMEOUT, "redis-server to answer PING", || {
            if let Ok(Some(status)) = server.child.try_wait() {
                bail!("redis-server exited: {status}");
            }
            let mut c = RawConn::connect(port)?;
            c.try_send(&encode_command(&["PING"]))?;
            match c.try_read_reply(Duration::from_millis(500))? {
                Some(_) => Ok(()),
                None => bail!("no reply"),
            }
        });
        server
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

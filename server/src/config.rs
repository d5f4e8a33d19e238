//! Node configuration: the `[server]` table of the TOML file, overridden by command-line flags.
//! The rest of the file (regions, nodes, placement) is the topology, read by `geo`.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cpu::CpuPolicy;
use crate::keyspace::FsyncPolicy;

/// How reads are served when the connection did not say READONLY.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReadConsistency {
    /// Leader lease or read-index: never stale.
    #[default]
    Linearizable,
    /// From the local replica, possibly stale.
    Local,
}

/// Raft timing and log retention (`[raft]` in the config file).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct RaftConfig {
    /// Leader heartbeat interval, ms.
    pub heartbeat_ms: u64,
    /// Election timeout lower bound, ms (upper bound: twice this). Leader leases last this
    /// minus 2.5 heartbeats (see `raft::lease_ms`).
    pub election_timeout_ms: u64,
    /// Applied entries between snapshots.
    pub snapshot_every: u64,
    /// Log entries kept after a snapshot (followers this close catch up from the log).
    pub keep_logs: u64,
    /// How long a write waits for a leader / a commit before `-CLUSTERDOWN`, ms.
    pub write_timeout_ms: u64,
    /// How long a linearizable read waits before `-CLUSTERDOWN`, ms.
    pub read_timeout_ms: u64,
}

impl RaftConfig {
    /// Refuses timings Raft cannot work with.
    pub fn validate(&self) -> Result<(), String> {
        const MAX_MS: u64 = 3_600_000;
        for (name, v) in [
            ("heartbeat-ms", self.heartbeat_ms),
            ("election-timeout-ms", self.election_timeout_ms),
            ("write-timeout-ms", self.write_timeout_ms),
            ("read-timeout-ms", self.read_timeout_ms),
        ] {
            if v > MAX_MS {
                return Err(format!("{name} ({v}) must be at most {MAX_MS} (one hour)"));
            }
        }
        if self.snapshot_every > 1 << 40 || self.keep_logs > 1 << 40 {
            return Err("snapshot-every and keep-logs must be at most 2^40".into());
        }
        if self.heartbeat_ms == 0 {
            return Err("heartbeat-ms must be at least 1".into());
        }
        if self.election_timeout_ms < 2 * self.heartbeat_ms {
            return Err(format!(
                "election-timeout-ms ({}) must be at least twice heartbeat-ms ({})",
                self.election_timeout_ms, self.heartbeat_ms
            ));
        }
        if self.snapshot_every == 0 {
            return Err("snapshot-every must be at least 1".into());
        }
        if self.write_timeout_ms == 0 || self.read_timeout_ms == 0 {
            return Err("write-timeout-ms and read-timeout-ms must be at least 1".into());
        }
        Ok(())
    }
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            heartbeat_ms: 50,
            election_timeout_ms: 300,
            snapshot_every: 50_000,
            keep_logs: 10_000,
            write_timeout_ms: 5_000,
            read_timeout_ms: 2_000,
        }
    }
}

/// Settings of one node (`[server]` in the config file).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "kebab-case")]
pub struct ServerConfig {
    /// Address the RESP listener binds.
    pub bind: IpAddr,
    /// RESP port.
    pub port: u16,
    /// Data directory (RocksDB lives in `<data-dir>/db`).
    pub data_dir: PathBuf,
    /// WAL sync policy, named like Redis's.
    pub appendfsync: FsyncPolicy,
    /// Password for AUTH (none = no authentication).
    pub requirepass: Option<String>,
    /// Connection cap; further connections get `-ERR max number of clients reached`.
    pub maxclients: usize,
    /// Byte bound of the moka hot cache, in MiB.
    pub hot_cache_mb: u64,
    /// RocksDB block cache, in MiB.
    pub block_cache_mb: u64,
    /// RocksDB memtable size, in MiB (per column family; two are kept). Unset: 4 MiB in a
    /// topology of one region, 16 MiB with several. A write's memtable insert walks a skip
    /// list, and a small one stays in the CPU's caches (SET -P16 on one node: 4 MiB about 10 %
    /// faster than 16, 64 slower still); but a region that replicates keeps each outbox entry
    /// in the memtables until other regions confirmed it and it is trimmed, and with 4 MiB
    /// they were flushed first: replication cost 30 % of the writing node's CPU per SET
    /// instead of 19 % (geo-report, pinned).
    pub write_buffer_mb: Option<u64>,
    /// Applied writes wait in memory at most this long (ms) and
    /// go to RocksDB together, on a thread of their own (0: each applied Raft entry is its own
    /// RocksDB write on the Raft thread). The Raft log holds them meanwhile. A key written again
    /// meanwhile goes to RocksDB once, with its last state. This window (and `write_back_mb`)
    /// applies only while keys are being rewritten; otherwise 5 ms and 1 MiB do (see
    /// `keyspace::write_back`).
    pub write_back_ms: u64,
    /// ... or until they take this many MiB, counting each key's last state once (at twice
    /// this, the Raft thread writes them itself; with the set being written and its RocksDB
    /// batch, they take about six times this at most).
    pub write_back_mb: u64,
    /// Keyspace notifications, as Redis's `notify-keyspace-events` (e.g. `"Ex"`; empty: off).
    pub notify_keyspace_events: String,
    /// SLOWLOG keeps commands that ran at least this many µs (negative: off), as Redis.
    pub slowlog_log_slower_than: i64,
    /// SLOWLOG keeps at most this many commands.
    pub slowlog_max_len: usize,
    /// The latency monitor records events of at least this many ms (0: off), as Redis.
    pub latency_monitor_threshold: u64,
    /// Prometheus exporter address (none = off).
    pub metrics_addr: Option<SocketAddr>,
    /// Read consistency for connections that did not send READONLY.
    pub read_consistency: ReadConsistency,
    /// When a linearizable read cannot be confirmed (no quorum), serve it from the local
    /// replica anyway instead of answering `-CLUSTERDOWN`.
    pub stale_reads_on_quorum_loss: bool,
    /// Largest bulk string accepted (Redis's proto-max-bulk-len).
    pub proto_max_bulk_len: usize,
    /// Active expiry passes per second.
    pub active_expiry_hz: u32,
    /// Keys removed per active expiry pass at most.
    pub active_expiry_batch: usize,
    /// Outbox entries kept for a region that is behind; a region further behind is resynced
    /// from a full stream of key states instead (after a long partition, say).
    pub replication_backlog: u64,
    /// MiB of the newest outbox entries kept in memory, so the shipper sends them without
    /// reading them back from RocksDB (older ones are read from RocksDB).
    pub replication_memory_mb: u64,
    /// Worker threads for connections, links and replication (tokio workers; 0 = one per core;
    /// Raft runs on its own thread besides).
    pub io_threads: usize,
    /// Linux scheduling policy of every thread of the node (see [`crate::cpu`]).
    pub cpu_policy: CpuPolicy,
    /// How long a client's replies may wait to be taken (a client that stops reading while
    /// the socket's buffers are full) before the connection is closed, ms.
    pub client_write_timeout_ms: u64,
    /// Raft settings (the `[raft]` table, read by [`parse_config`]).
    #[serde(skip)]
    pub raft: RaftConfig,
}

/// Longest `write-back-ms`: what waits is applied again from the Raft log after a crash, which
/// the next start pays for.
pub const MAX_WRITE_BACK_MS: u64 = 10_000;
/// Largest `write-back-mb`.
pub const MAX_WRITE_BACK_MB: u64 = 1024;

/// Upper bound of every memory size in MB (16 TiB): a typo of a few digits is refused at
/// start instead of overflowing the byte counts derived from it.
pub const MAX_MEMORY_MB: u64 = 1 << 24;

/// Most worker threads `io-threads` may ask for.
pub const MAX_IO_THREADS: usize = 256;

/// The longest `requirepass`: a client that is not authenticated yet may send bulk strings of
/// at most this many bytes (Redis's bound, `proto_resp::Limits::UNAUTHENTICATED_MAX_BULK_LEN`),
/// so a longer password could never be given to AUTH.
pub const MAX_PASSWORD_LEN: usize = proto_resp::Limits::UNAUTHENTICATED_MAX_BULK_LEN;

/// The smallest `proto-max-bulk-len` (Redis's lower bound, 1 MB).
pub const MIN_PROTO_MAX_BULK_LEN: usize = 1024 * 1024;

impl ServerConfig {
    /// Checks the settings that have limits (after the file and the flags were read).
    pub fn validate(&self) -> Result<(), String> {
        if self.client_write_timeout_ms == 0 {
            return Err("client-write-timeout-ms must be at least 1".into());
        }
        if self.maxclients == 0 {
            return Err("maxclients must be at least 1".into());
        }
        if self.proto_max_bulk_len < MIN_PROTO_MAX_BULK_LEN {
            return Err(format!(
                "proto-max-bulk-len is {}, at least {MIN_PROTO_MAX_BULK_LEN} (1 MB)",
                self.proto_max_bulk_len
            ));
        }
        if self
            .requirepass
            .as_ref()
            .is_some_and(|p| p.len() > MAX_PASSWORD_LEN)
        {
            return Err(format!(
                "requirepass is longer than {MAX_PASSWORD_LEN} bytes: AUTH could never send it"
            ));
        }
        if self.write_back_ms > MAX_WRITE_BACK_MS {
            return Err(format!(
                "write-back-ms is {}, at most {MAX_WRITE_BACK_MS}",
                self.write_back_ms
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err("data-dir is empty: name a directory (\".\" for the current one)".into());
        }
        for (name, mb) in [
            ("hot-cache-mb", self.hot_cache_mb),
            ("block-cache-mb", self.block_cache_mb),
            ("write-buffer-mb", self.write_buffer_mb.unwrap_or(0)),
            ("replication-memory-mb", self.replication_memory_mb),
        ] {
            if mb > MAX_MEMORY_MB {
                return Err(format!("{name} is {mb}, at most {MAX_MEMORY_MB} (16 TiB)"));
            }
        }
        if self.write_back_ms > 0 && !(1..=MAX_WRITE_BACK_MB).contains(&self.write_back_mb) {
            return Err(format!(
                "write-back-mb is {}, from 1 to {MAX_WRITE_BACK_MB}",
                self.write_back_mb
            ));
        }
        if crate::keyspace::notify::parse_flags(&self.notify_keyspace_events).is_none() {
            return Err(format!(
                "notify-keyspace-events is {:?}: use the classes of 'Ag$lshzxeKEtmdn'",
                self.notify_keyspace_events
            ));
        }
        if self.slowlog_max_len > crate::slowlog::MAX_LEN_LIMIT {
            return Err(format!(
                "slowlog-max-len is {}, at most {}",
                self.slowlog_max_len,
                crate::slowlog::MAX_LEN_LIMIT
            ));
        }
        if self.io_threads > MAX_IO_THREADS {
            return Err(format!(
                "io-threads is {}, at most {MAX_IO_THREADS} (0 = one per core)",
                self.io_threads
            ));
        }
        Ok(())
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: IpAddr::from([127, 0, 0, 1]),
            port: 6379,
            data_dir: PathBuf::from("./data"),
            appendfsync: FsyncPolicy::Everysec,
            requirepass: None,
            maxclients: 10_000,
            hot_cache_mb: 256,
            block_cache_mb: 32,
            write_buffer_mb: None,
            write_back_ms: 1000,
            write_back_mb: 16,
            notify_keyspace_events: String::new(),
            slowlog_log_slower_than: 10_000,
            slowlog_max_len: 128,
            latency_monitor_threshold: 0,
            metrics_addr: None,
            read_consistency: ReadConsistency::Linearizable,
            stale_reads_on_quorum_loss: false,
            proto_max_bulk_len: 512 * 1024 * 1024,
            active_expiry_hz: 10,
            active_expiry_batch: 1000,
            replication_backlog: 1_000_000,
            replication_memory_mb: 32,
            io_threads: 0,
            cpu_policy: CpuPolicy::Batch,
            client_write_timeout_ms: 60_000,
            raft: RaftConfig::default(),
        }
    }
}

/// A config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Unreadable file.
    #[error("reading {path}: {source}")]
    Read {
        /// File.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML or unknown fields.
    #[error("parsing {path}: {message}")]
    Parse {
        /// File.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// A parsed config file: the `[server]` table and the rest (the topology), as TOML.
pub struct ConfigFile {
    /// `[server]`.
    pub server: ServerConfig,
    /// Every other table (regions, nodes, placement, WAN), for `geo::Topology`.
    pub topology: Option<toml::Table>,
}

/// Reads a config file.
pub fn read_config(path: &Path) -> Result<ConfigFile, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_config(&text).map_err(|message| ConfigError::Parse {
        path: path.display().to_string(),
        message,
    })
}

/// Parses config text.
pub fn parse_config(text: &str) -> Result<ConfigFile, String> {
    let mut table: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut server = match table.remove("server") {
        Some(v) => v
            .try_into::<ServerConfig>()
            .map_err(|e| format!("[server]: {e}"))?,
        None => ServerConfig::default(),
    };
    server.validate().map_err(|e| format!("[server]: {e}"))?;
    if let Some(v) = table.remove("raft") {
        let raft = v
            .try_into::<RaftConfig>()
            .map_err(|e| format!("[raft]: {e}"))?;
        raft.validate().map_err(|e| format!("[raft]: {e}"))?;
        server.raft = raft;
    }
    Ok(ConfigFile {
        server,
        topology: (!table.is_empty()).then_some(table),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let cfg = parse_config("[server]\nport = 7000\nappendfsync = \"always\"\n").unwrap();
        assert_eq!(cfg.server.port, 7000);
        assert_eq!(cfg.server.appendfsync, FsyncPolicy::Always);
        assert!(cfg.topology.is_none());
        assert_eq!(parse_config("").unwrap().server.port, 6379);
    }

    #[test]
    fn raft_table_is_read_and_checked() {
        let cfg = parse_config("[raft]\nwrite-timeout-ms = 1500\nheartbeat-ms = 20\n").unwrap();
        assert_eq!(cfg.server.raft.write_timeout_ms, 1500);
        assert_eq!(cfg.server.raft.heartbeat_ms, 20);
        assert_eq!(cfg.server.raft.election_timeout_ms, 300);
        assert!(cfg.topology.is_none());
        let err = parse_config("[raft]\nheartbeat-ms = 200\n").err().unwrap();
        assert!(err.contains("election-timeout-ms"), "{err}");
        let err = parse_config("[raft]\nwrite-timeout-ms = 99999999999\n")
            .err()
            .unwrap();
        assert!(err.contains("at most"), "{err}");
        let err = parse_config("[raft]\nwrite-timeout = 1\n").err().unwrap();
        assert!(err.contains("write-timeout"), "{err}");
    }

    #[test]
    fn settings_that_would_lock_clients_out_are_refused() {
        for (toml, why) in [
            ("maxclients = 0", "maxclients must be at least 1"),
            ("proto-max-bulk-len = 0", "at least 1048576"),
        ] {
            let err = parse_config(&format!("[server]\n{toml}\n")).err().unwrap();
            assert!(err.contains(why), "{toml}: {err}");
        }
        let long = "a".repeat(MAX_PASSWORD_LEN + 1);
        let err = parse_config(&format!("[server]\nrequirepass = \"{long}\"\n"))
            .err()
            .unwrap();
        assert!(err.contains("AUTH could never send it"), "{err}");
        let fits = "a".repeat(MAX_PASSWORD_LEN);
        assert!(parse_config(&format!("[server]\nrequirepass = \"{fits}\"\n")).is_ok());
    }

    #[test]
    fn an_empty_data_dir_and_absurd_memory_sizes_are_refused() {
        for (toml, why) in [
            ("data-dir = \"\"", "data-dir is empty"),
            (
                "hot-cache-mb = 99999999999",
                "hot-cache-mb is 99999999999, at most",
            ),
            (
                "block-cache-mb = 16777217",
                "block-cache-mb is 16777217, at most",
            ),
            ("write-buffer-mb = 16777217", "write-buffer-mb is"),
            (
                "replication-memory-mb = 16777217",
                "replication-memory-mb is",
            ),
        ] {
            let err = parse_config(&format!("[server]\n{toml}\n")).err().unwrap();
            assert!(err.contains(why), "{toml}: {err}");
        }
        assert!(parse_config("[server]\nhot-cache-mb = 16777216\ndata-dir = \".\"\n").is_ok());
    }

    #[test]
    fn io_threads_is_read_and_bounded() {
        assert_eq!(parse_config("").unwrap().server.io_threads, 0);
        let cfg = parse_config("[server]\nio-threads = 1\n").unwrap();
        assert_eq!(cfg.server.io_threads, 1);
        let err = parse_config("[server]\nio-threads = 100000\n")
            .err()
            .unwrap();
        assert!(err.contains("at most 256"), "{err}");
    }

    #[test]
    fn write_back_is_read_and_bounded() {
        let cfg = parse_config("").unwrap();
        assert_eq!(
            (cfg.server.write_back_ms, cfg.server.write_back_mb),
            (1000, 16)
        );
        let cfg = parse_config("[server]\nwrite-back-ms = 0\nwrite-back-mb = 0\n").unwrap();
        assert_eq!(cfg.server.write_back_ms, 0);
        let err = parse_config("[server]\nwrite-back-ms = 60000\n")
            .err()
            .unwrap();
        assert!(
            err.contains("write-back-ms is 60000, at most 10000"),
            "{err}"
        );
        let err = parse_config("[server]\nwrite-back-mb = 0\n").err().unwrap();
        assert!(err.contains("write-back-mb is 0, from 1 to 1024"), "{err}");
    }

    #[test]
    fn cpu_policy_is_read() {
        assert_eq!(
            parse_config("").unwrap().server.cpu_policy,
            CpuPolicy::Batch
        );
        let cfg = parse_config("[server]\ncpu-policy = \"normal\"\n").unwrap();
        assert_eq!(cfg.server.cpu_policy, CpuPolicy::Normal);
        let err = parse_config("[server]\ncpu-policy = \"fifo\"\n")
            .err()
            .unwrap();
        assert!(err.contains("fifo"), "{err}");
    }

    #[test]
    fn typos_fail_loudly() {
        let err = parse_config("[server]\nprot = 7000\n").err().unwrap();
        assert!(err.contains("prot"), "{err}");
    }
}

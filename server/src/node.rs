//! A node: its shared state and its startup and teardown, step by step.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::client::ClientRegistry;
use crate::cmd::COMMANDS;
use crate::config::ServerConfig;
use crate::error::RespError;
use crate::keyspace::{FsyncPolicy, Keyspace, KeyspaceOptions, WriteBackOptions, DATABASES};
use crate::op::Op;
use crate::raft::service::RaftService;
use crate::raft::types::MeridianNode;
use crate::raft::{RaftSettings, RegionRaft};
use crate::replication::{self, Geo};
use crate::shutdown::Shutdown;
use crate::stats::Stats;
use crate::write::{now_ms, Writer};
use geo::{Endpoint, LinkConfig, Topology};

/// `write-buffer-mb` when unset, in a topology of one region (see `ServerConfig`). Since L0
/// compactions wait for 8 files, 8 MB beat 4 MB: SET -P16 +3 to +9 % (0.15-0.24 us less CPU
/// per SET) and -P1 +2 to +4 % in 6 and 3 A/B rounds, GET unchanged, for 8 MB more memtable
/// budget.
pub const WRITE_BUFFER_MB: u64 = 8;
/// `write-buffer-mb` when unset, in a topology of several regions.
pub const MULTI_REGION_WRITE_BUFFER_MB: u64 = 16;

/// SCAN cursors kept at most (each maps a number to the last key returned).
const MAX_SCAN_CURSORS: u64 = 100_000;
/// How long an unused SCAN cursor stays valid.
const SCAN_CURSOR_TTL: Duration = Duration::from_secs(600);

/// Settings changeable at run time with CONFIG SET.
#[derive(Clone, Debug)]
pub struct RuntimeSettings {
    /// AUTH password.
    pub requirepass: Option<String>,
    /// Connection cap.
    pub maxclients: usize,
}

/// One checked CONFIG SET parameter (see [`Shared::config_check`]).
pub enum ConfigChange {
    /// `requirepass` (`None`: no password).
    RequirePass(Option<String>),
    /// `maxclients`.
    MaxClients(usize),
    /// `appendfsync`.
    AppendFsync(FsyncPolicy),
    /// `notify-keyspace-events` (class flags).
    NotifyKeyspaceEvents(u32),
    /// `slowlog-log-slower-than` (µs).
    SlowlogSlowerThan(i64),
    /// `slowlog-max-len`.
    SlowlogMaxLen(usize),
    /// `latency-monitor-threshold` (ms).
    LatencyMonitorThreshold(u64),
    /// `tracking-table-max-keys` (0: no bound).
    TrackingTableMaxKeys(usize),
    /// Accepted and meaningless here (`save ""`, `timeout 0`).
    Nothing,
}

/// Node-wide state shared by every connection and background task.
pub struct Shared {
    /// The configuration the node started with.
    pub config: ServerConfig,
    /// CONFIG SET-able settings.
    pub settings: Mutex<RuntimeSettings>,
    /// Data.
    pub keyspace: Arc<Keyspace>,
    /// Where writes go.
    pub writer: Writer,
    /// Connected clients.
    pub clients: Arc<ClientRegistry>,
    /// Counters.
    pub stats: Stats,
    /// SCAN cursor → last key returned.
    pub scan_cursors: moka::sync::Cache<u64, Bytes>,
    /// Start time.
    pub started: Instant,
    /// Random id of this run (INFO run_id).
    pub run_id: String,
    /// The RESP address actually bound.
    pub resp_addr: Mutex<Option<SocketAddr>>,
    /// Unix seconds of the last WAL sync.
    last_sync: AtomicU64,
    /// This node's Raft member.
    pub raft: Arc<RegionRaft>,
    /// The topology (a one-node region when started without one).
    pub topology: Topology,
    /// This node's name in the topology.
    pub node_name: String,
    /// Cross-region routing and replication status.
    pub geo: Arc<Geo>,
    /// Cancelled to stop the node (SHUTDOWN): the token SIGINT and SIGTERM cancel.
    pub stop: tokio_util::sync::CancellationToken,
    /// Why the Raft group stopped for good, when it did (the node then stops, exit status 1).
    pub fatal: std::sync::OnceLock<String>,
    /// Pub/Sub subscriptions of this node's connections.
    pub pubsub: Arc<crate::pubsub::PubSub>,
    /// Sends this node's published messages to the other nodes.
    pub fanout: crate::pubsub::Fanout,
    /// SLOWLOG.
    pub slowlog: crate::slowlog::SlowLog,
    /// The latency monitor (LATENCY).
    pub latency: crate::latency::LatencyMonitor,
}

impl Shared {
    /// The password AUTH checks against.
    pub fn requirepass(&self) -> Option<String> {
        self.settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .requirepass
            .clone()
    }

    /// The connection cap.
    pub fn maxclients(&self) -> usize {
        self.settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .maxclients
    }

    /// The memory the node accounts for (INFO `used_memory`), by part: the hot cache,
    /// RocksDB's memtables and block cache. Raises the recorded peak.
    pub fn used_memory(&self) -> MemoryUse {
        let (_, _, hot_cache, _) = self.keyspace.cache_stats();
        let parts = MemoryUse {
            hot_cache,
            memtables: self
                .keyspace
                .rocks_property("rocksdb.cur-size-all-mem-tables"),
            block_cache: self.keyspace.block_cache_usage(),
        };
        self.stats
            .used_memory_peak
            .fetch_max(parts.total(), Ordering::Relaxed);
        parts
    }

    /// The largest [`Shared::used_memory`] seen (INFO `used_memory_peak`).
    pub fn used_memory_peak(&self) -> u64 {
        self.stats.used_memory_peak.load(Ordering::Relaxed)
    }

    /// Unix seconds of the last WAL sync.
    pub fn last_sync_unix(&self) -> u64 {
        self.last_sync.load(Ordering::Relaxed)
    }

    /// Sends a published message to every other node's subscribers (best effort, in order).
    pub fn publish_to_peers(&self, channel: Bytes, payload: Bytes) {
        self.fanout.send(&channel, &payload);
    }

    /// Syncs the WAL now (SAVE, the everysec task, shutdown).
    pub fn sync_now(&self) -> Result<(), RespError> {
        self.keyspace.sync_wal()?;
        self.last_sync.store(now_ms() / 1000, Ordering::Relaxed);
        Ok(())
    }

    /// Other regions that applied everything up to local log index `index` (WAIT).
    pub fn regions_acked(&self, index: u64) -> usize {
        if index == 0 {
            return 0;
        }
        self.geo.regions_acked(index)
    }

    /// CONFIG GET's view: (name, value) of every parameter.
    pub fn config_params(&self) -> Vec<(&'static str, String)> {
        let s = self
            .settings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let c = &self.config;
        vec![
            ("bind", c.bind.to_string()),
            ("port", c.port.to_string()),
            ("dir", c.data_dir.display().to_string()),
            ("databases", DATABASES.to_string()),
            ("appendonly", "yes".into()),
            ("appendfsync", self.keyspace.fsync_policy().name().into()),
            ("save", String::new()),
            ("requirepass", s.requirepass.unwrap_or_default()),
            ("maxclients", s.maxclients.to_string()),
            // The bound is the hot cache's; keys are never evicted (RocksDB keeps every one),
            // which is what job queues (Sidekiq, BullMQ) check for at start.
            ("maxmemory", (c.hot_cache_mb * 1024 * 1024).to_string()),
            ("maxmemory-policy", "noeviction".into()),
            (
                "slowlog-log-slower-than",
                self.slowlog.slower_than().to_string(),
            ),
            ("slowlog-max-len", self.slowlog.max_len().to_string()),
            (
                "latency-monitor-threshold",
                self.latency.threshold_ms().to_string(),
            ),
            (
                "tracking-table-max-keys",
                self.keyspace.tracking.max_keys().to_string(),
            ),
            (
                "notify-keyspace-events",
                crate::keyspace::notify::flags_to_string(self.keyspace.notifier.flags()),
            ),
            ("proto-max-bulk-len", c.proto_max_bulk_len.to_string()),
            (
                "client-write-timeout-ms",
                c.client_write_timeout_ms.to_string(),
            ),
            ("timeout", "0".into()),
            ("hz", c.active_expiry_hz.to_string()),
            (
                "read-consistency",
                format!("{:?}", c.read_consistency).to_ascii_lowercase(),
            ),
            ("hot-cache-mb", c.hot_cache_mb.to_string()),
            ("block-cache-mb", c.block_cache_mb.to_string()),
            (
                "write-buffer-mb",
                c.write_buffer_mb.unwrap_or_default().to_string(),
            ),
            ("write-back-ms", c.write_back_ms.to_string()),
            ("write-back-mb", c.write_back_mb.to_string()),
            ("io-threads", c.io_threads.to_string()),
            ("cpu-policy", c.cpu_policy.name().into()),
            ("replication-backlog", c.replication_backlog.to_string()),
            ("replication-memory-mb", c.replication_memory_mb.to_string()),
        ]
    }

    /// Checks one CONFIG SET parameter (a lower-case name) without changing anything.
    pub fn config_check(&self, name: &str, value: &str) -> Result<ConfigChange, RespError> {
        let failed = |why: &str| {
            RespError::Message(format!(
                "CONFIG SET failed (possibly related to argument '{name}') - {why}"
            ))
        };
        // An integer in `lo..=hi`, with Redis's two error texts.
        // (Read as Redis reads integers: no sign `+`, no leading zeros.)
        let int = || {
            crate::keyspace::number::parse_i64_strict(value.as_bytes())
                .ok_or_else(|| failed("argument couldn't be parsed into an integer"))
        };
        let int_in = |lo: i64, hi: i64| -> Result<i64, RespError> {
            let n = int()?;
            if !(lo..=hi).contains(&n) {
                return Err(failed(&format!(
                    "argument must be between {lo} and {hi} inclusive"
                )));
            }
            Ok(n)
        };
        Ok(match name {
            "requirepass" if value.len() > crate::config::MAX_PASSWORD_LEN => {
                return Err(failed(&format!(
                    "longer than {} bytes: AUTH could never send it",
                    crate::config::MAX_PASSWORD_LEN
                )));
            }
            "requirepass" => {
                ConfigChange::RequirePass((!value.is_empty()).then(|| value.to_string()))
            }
            "maxclients" => ConfigChange::MaxClients(int_in(1, 4_294_967_295)? as usize),
            "appendfsync" => {
                ConfigChange::AppendFsync(FsyncPolicy::parse(value).ok_or_else(|| {
                    failed("argument(s) must be one of the following: everysec, always, no")
                })?)
            }
            "slowlog-log-slower-than" => ConfigChange::SlowlogSlowerThan(int()?),
            "latency-monitor-threshold" => {
                ConfigChange::LatencyMonitorThreshold(int_in(0, i64::MAX)? as u64)
            }
            "tracking-table-max-keys" => {
                ConfigChange::TrackingTableMaxKeys(int_in(0, i64::MAX)? as usize)
            }
            "slowlog-max-len" => ConfigChange::SlowlogMaxLen(int_in(
                0,
                crate::slowlog::MAX_LEN_LIMIT as i64,
            )? as usize),
            "notify-keyspace-events" => ConfigChange::NotifyKeyspaceEvents(
                crate::keyspace::notify::parse_flags(value).ok_or_else(|| {
                    failed("Invalid event class character. Use 'Ag$lshzxeKEtmdn'.")
                })?,
            ),
            // Setup scripts set these; Meridian never evicts keys (RocksDB keeps every one), and
            // the bound CONFIG GET shows, the hot cache's, is set at start (`hot-cache-mb`).
            "maxmemory" => {
                let bytes =
                    parse_memory(value).ok_or_else(|| failed("argument must be a memory value"))?;
                if bytes != self.config.hot_cache_mb * 1024 * 1024 {
                    return Err(failed(
                        "the hot cache's bound (hot-cache-mb) is set at start; keys are never evicted",
                    ));
                }
                ConfigChange::Nothing
            }
            "maxmemory-policy" => {
                match value.to_ascii_lowercase().as_str() {
                    "noeviction" => ConfigChange::Nothing,
                    "volatile-lru" | "volatile-lfu" | "volatile-random" | "volatile-ttl"
                    | "allkeys-lru" | "allkeys-lfu" | "allkeys-random" => {
                        return Err(failed(
                            "Meridian never evicts keys (RocksDB keeps every one); only noeviction",
                        ));
                    }
                    _ => return Err(failed(
                        "argument(s) must be one of the following: volatile-lru, volatile-lfu, \
                         volatile-random, volatile-ttl, allkeys-lru, allkeys-lfu, \
                         allkeys-random, noeviction",
                    )),
                }
            }
            // What Redis clients set on connect, meaningless here: no RDB, no idle timeout.
            "save" if value.trim().is_empty() => ConfigChange::Nothing,
            "timeout" if value == "0" => ConfigChange::Nothing,
            _ if self.config_params().iter().any(|(n, _)| *n == name) => {
                return Err(failed("can't set immutable config"));
            }
            _ => {
                return Err(RespError::Message(format!(
                    "Unknown option or number of arguments for CONFIG SET - '{name}'"
                )))
            }
        })
    }

    /// Makes a checked CONFIG SET change.
    pub fn config_apply(&self, change: ConfigChange) {
        match change {
            ConfigChange::RequirePass(pass) => {
                self.settings
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .requirepass = pass;
            }
            ConfigChange::MaxClients(n) => {
                self.settings
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .maxclients = n;
            }
            ConfigChange::AppendFsync(policy) => self.keyspace.set_fsync_policy(policy),
            ConfigChange::NotifyKeyspaceEvents(flags) => self.keyspace.notifier.set_flags(flags),
            ConfigChange::SlowlogSlowerThan(micros) => self.slowlog.set_slower_than(micros),
            ConfigChange::SlowlogMaxLen(len) => self.slowlog.set_max_len(len),
            ConfigChange::LatencyMonitorThreshold(ms) => self.latency.set_threshold_ms(ms),
            ConfigChange::TrackingTableMaxKeys(n) => self.keyspace.tracking.set_max_keys(n),
            ConfigChange::Nothing => {}
        }
    }

    /// The INFO text for the requested sections (empty = default).
    pub fn info_text(&self, sections: &[String]) -> String {
        let all = sections.iter().any(|s| s == "all" || s == "everything");
        let want = |name: &str| {
            sections.is_empty() || all || sections.iter().any(|s| s == name || s == "default")
        };
        let mut out = String::new();
        let uptime = self.started.elapsed().as_secs();
        if want("server") {
            let _ = write!(
                out,
                "# Server\r\nredis_version:{}\r\nmeridian_version:{}\r\nredis_mode:standalone\r\nos:{} {}\r\narch_bits:64\r\nprocess_id:{}\r\nrun_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\nuptime_in_days:{}\r\nhz:{}\r\nexecutable:{}\r\n\r\n",
                crate::cmd::REDIS_COMPAT_VERSION,
                env!("CARGO_PKG_VERSION"),
                std::env::consts::OS,
                std::env::consts::ARCH,
                std::process::id(),
                self.run_id,
                self.resp_addr.lock().unwrap_or_else(|p| p.into_inner()).map_or(self.config.port, |a| a.port()),
                uptime,
                uptime / 86400,
                self.config.active_expiry_hz,
                std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default(),
            );
        }
        if want("clients") {
            let _ = write!(
                out,
                "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:0\r\ntracking_clients:{}\r\n\r\n",
                self.clients.count(),
                self.maxclients(),
                self.keyspace.tracking.client_count()
            );
        }
        if want("memory") {
            let (_, _, _, hot_entries) = self.keyspace.cache_stats();
            let memory = self.used_memory();
            let used = memory.total();
            let MemoryUse {
                hot_cache: hot_bytes,
                memtables,
                block_cache,
            } = memory;
            let rss = rss_bytes();
            let peak = self.used_memory_peak();
            let _ = write!(
                out,
                "# Memory\r\nused_memory:{used}\r\nused_memory_human:{}\r\nused_memory_rss:{rss}\r\nused_memory_rss_human:{}\r\nused_memory_peak:{peak}\r\nused_memory_peak_human:{}\r\nmaxmemory:{}\r\nmaxmemory_policy:noeviction\r\nhot_cache_bytes:{hot_bytes}\r\nhot_cache_entries:{hot_entries}\r\nhot_cache_max_bytes:{}\r\nhot_cache_complete:{}\r\nrocksdb_memtable_bytes:{memtables}\r\nrocksdb_block_cache_bytes:{block_cache}\r\nmem_allocator:mimalloc\r\n\r\n",
                human(used),
                human(rss),
                human(peak),
                self.config.hot_cache_mb * 1024 * 1024,
                self.config.hot_cache_mb * 1024 * 1024,
                u8::from(self.keyspace.hot_cache_complete()),
            );
        }
        if want("persistence") {
            let _ = write!(
                out,
                "# Persistence\r\nloading:0\r\nrdb_changes_since_last_save:0\r\nrdb_bgsave_in_progress:0\r\nrdb_last_save_time:{}\r\nrdb_last_bgsave_status:ok\r\naof_enabled:1\r\naof_rewrite_in_progress:0\r\naof_last_write_status:ok\r\nappendfsync:{}\r\nstorage_engine:rocksdb\r\nwrite_back:{}\r\n\r\n",
                self.last_sync_unix(),
                self.keyspace.fsync_policy().name(),
                self.keyspace.write_back_mode()
            );
        }
        if want("stats") {
            let (hits, misses, _, _) = self.keyspace.cache_stats();
            let s = &self.stats;
            let (ops_per_sec, input_kbps, output_kbps) = s.rates.current();
            let _ = write!(
                out,
                "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\ninstantaneous_ops_per_sec:{ops_per_sec}\r\ntotal_net_input_bytes:{}\r\ntotal_net_output_bytes:{}\r\ninstantaneous_input_kbps:{input_kbps:.2}\r\ninstantaneous_output_kbps:{output_kbps:.2}\r\nrejected_connections:{}\r\nexpired_keys:{}\r\nevicted_keys:0\r\ntotal_error_replies:{}\r\nkeyspace_hits:{hits}\r\nkeyspace_misses:{misses}\r\npubsub_channels:{}\r\npubsub_patterns:{}\r\npubsub_clients_dropped:{}\r\npubsub_peer_messages_dropped:{}\r\nwrite_batches:{}\r\nwrite_batch_usec:{}\r\ntracking_total_keys:{}\r\n\r\n",
                Stats::get(&s.connections_received),
                Stats::get(&s.commands_processed),
                Stats::get(&s.net_input_bytes),
                Stats::get(&s.net_output_bytes),
                Stats::get(&s.rejected_connections),
                Stats::get(&s.expired_keys),
                Stats::get(&s.error_replies),
                self.pubsub.channel_count(),
                self.pubsub.numpat(),
                self.pubsub.overflowed(),
                self.fanout.dropped(),
                Stats::get(&s.write_batches),
                Stats::get(&s.write_batch_micros),
                self.keyspace.tracking.key_count(),
            );
        }
        if want("replication") {
            // Every node accepts writes (followers forward them): to a Redis client each is a
            // master. The Raft role and the other regions follow, in Meridian's own fields.
            let _ = write!(
                out,
                "# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_repl_offset:{}\r\nregion:{}\r\nraft_role:{}\r\ntombstones:{}\r\ntombstones_collected:{}\r\noutbox_memory_bytes:{}\r\noutbox_storage_reads:{}\r\n",
                self.raft.applied_index(),
                self.geo.region,
                if self.raft.is_leader() { "leader" } else { "follower" },
                self.keyspace.tombstones_indexed(100_000).unwrap_or(0),
                self.keyspace.collected(),
                self.keyspace.outbox_memory(),
                self.keyspace.outbox_storage_reads(),
            );
            for r in self.geo.status(&self.raft, &self.keyspace) {
                let _ = write!(
                    out,
                    "region_{}:id={},link={},rtt_us={},acked_index={},lag_entries={},lag_ms={},resyncs={},coalesced_entries={},superseded_states={},applied_from_index={}\r\n",
                    r.region,
                    r.id,
                    r.link,
                    r.rtt.map_or(-1, |d| d.as_micros() as i64),
                    r.acked_index,
                    r.lag_entries,
                    r.lag_ms,
                    r.resyncs,
                    r.coalesced_entries,
                    r.superseded_states,
                    r.applied_from_index,
                );
            }
            out.push_str("\r\n");
        }
        if want("cpu") {
            let (sys, user) = cpu_seconds(libc::RUSAGE_SELF);
            let (sys_children, user_children) = cpu_seconds(libc::RUSAGE_CHILDREN);
            let _ = write!(
                out,
                "# CPU\r\nused_cpu_sys:{sys:.6}\r\nused_cpu_user:{user:.6}\r\nused_cpu_sys_children:{sys_children:.6}\r\nused_cpu_user_children:{user_children:.6}\r\n\r\n"
            );
        }
        if all || sections.iter().any(|s| s == "commandstats") {
            out.push_str("# Commandstats\r\n");
            for (spec, c) in COMMANDS.iter().zip(&self.stats.commands) {
                let calls = c.calls.load(Ordering::Relaxed);
                let rejected = c.rejected.load(Ordering::Relaxed);
                let failed = c.failed.load(Ordering::Relaxed);
                if calls + rejected + failed == 0 {
                    continue;
                }
                let usec = crate::ticks::to_micros(c.ticks.load(Ordering::Relaxed));
                let per_call = if calls > 0 {
                    usec as f64 / calls as f64
                } else {
                    0.0
                };
                let _ = write!(
                    out,
                    "cmdstat_{}:calls={calls},usec={usec},usec_per_call={per_call:.2},rejected_calls={rejected},failed_calls={failed}\r\n",
                    spec.name
                );
            }
            out.push_str("\r\n");
        }
        if want("errorstats") {
            out.push_str("# Errorstats\r\n");
            for (code, n) in self.stats.error_counts() {
                let _ = write!(out, "errorstat_{code}:count={n}\r\n");
            }
            out.push_str("\r\n");
        }
        if all || sections.iter().any(|s| s == "latencystats") {
            out.push_str("# Latencystats\r\n");
            for (spec, c) in COMMANDS.iter().zip(&self.stats.commands) {
                let hist = c.histogram();
                let pct = |p| crate::stats::percentile_micros(&hist, p);
                if let (Some(p50), Some(p99), Some(p999)) = (pct(50.0), pct(99.0), pct(99.9)) {
                    let _ = write!(
                        out,
                        "latency_percentiles_usec_{}:p50={p50:.3},p99={p99:.3},p99.9={p999:.3}\r\n",
                        spec.name
                    );
                }
            }
            out.push_str("\r\n");
        }
        if want("cluster") {
            // Not Redis Cluster: clients must not expect MOVED/ASK (regions route themselves).
            out.push_str("# Cluster\r\ncluster_enabled:0\r\n\r\n");
        }
        if want("keyspace") {
            out.push_str("# Keyspace\r\n");
            for db in 0..DATABASES as u8 {
                let keys = self.keyspace.dbsize(db);
                if keys > 0 {
                    let expires = self.keyspace.expires_estimate(db);
                    let _ = write!(out, "db{db}:keys={keys},expires={expires},avg_ttl=0\r\n");
                }
            }
            out.push_str("\r\n");
        }
        // Sections are separated by a blank line; the last one ends with its last field.
        if out.ends_with("\r\n\r\n") {
            out.truncate(out.len() - 2);
        }
        out
    }
}

/// System and user CPU seconds of `who` (`RUSAGE_SELF`: every thread of the node).
fn cpu_seconds(who: libc::c_int) -> (f64, f64) {
    // SAFETY: getrusage fills the zeroed struct it is given and reads nothing else.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &mut usage) } != 0 {
        return (0.0, 0.0);
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(usage.ru_stime), secs(usage.ru_utime))
}

/// Resident set size of this process, from /proc (0 where unavailable).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

/// A memory size as Redis's configuration reads one: digits, then optionally a unit (`b`;
/// `k`, `m`, `g` in powers of 1000; `kb`, `mb`, `gb` in powers of 1024; any case).
fn parse_memory(text: &str) -> Option<u64> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return None;
    }
    let unit_bytes: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" => 1000,
        "kb" => 1024,
        "m" => 1000 * 1000,
        "mb" => 1024 * 1024,
        "g" => 1000 * 1000 * 1000,
        "gb" => 1024 * 1024 * 1024,
        _ => return None,
    };
    digits.parse::<u64>().ok()?.checked_mul(unit_bytes)
}

fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2}G", b / (1024.0 * 1024.0 * 1024.0))
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.2}M", b / (1024.0 * 1024.0))
    } else {
        format!("{:.2}K", b / 1024.0)
    }
}

/// A started node: its shared state and the bound RESP address.
pub struct Node {
    /// Shared state.
    pub shared: Arc<Shared>,
    /// RESP address bound.
    pub resp_addr: SocketAddr,
    shutdown: Shutdown,
}

impl Node {
    /// Starts a node: opens storage, joins (or forms) its region's Raft group over the geo
    /// links, binds the RESP listener, starts background tasks. Without a topology the node
    /// is a region of one voter named `local`.
    pub async fn start(
        mut config: ServerConfig,
        cluster: Option<(Topology, String)>,
        shutdown: Shutdown,
    ) -> anyhow::Result<Node> {
        let started = Instant::now();
        // First, as Redis: a port in use stops the start before the storage is opened or the
        // Raft group joined. Clients that connect meanwhile wait in the backlog until the
        // listener is served.
        let bind = SocketAddr::new(config.bind, config.port);
        let listener = TcpListener::bind(bind)
            .await
            .map_err(|e| anyhow::anyhow!("binding RESP listener on {bind}: {e}"))?;
        let (topology, node_name) = match cluster {
            Some(pair) => pair,
            None => {
                let resp = SocketAddr::new(config.bind, config.port);
                let peer = SocketAddr::new(config.bind, 0);
                (Topology::single_node(resp, peer), "local-1".to_string())
            }
        };
        let me = topology
            .node(&node_name)
            .ok_or_else(|| anyhow::anyhow!("node '{node_name}' is not in the topology"))?
            .clone();
        let region = topology
            .region_of(&node_name)
            .ok_or_else(|| anyhow::anyhow!("node '{node_name}' has no region"))?
            .to_string();
        let region_nodes = topology.nodes_in_region(&region).to_vec();
        info!(node = %node_name, region = %region, id = me.id, "starting node");

        let multi_region = topology.region_names().count() > 1;
        let write_buffer_mb = *config.write_buffer_mb.get_or_insert(if multi_region {
            MULTI_REGION_WRITE_BUFFER_MB
        } else {
            WRITE_BUFFER_MB
        });
        let db_path = config.data_dir.join("db");
        info!(path = %db_path.display(), write_buffer_mb, "opening storage");
        let keyspace = Arc::new(Keyspace::open(KeyspaceOptions {
            path: db_path,
            hot_cache_bytes: config.hot_cache_mb * 1024 * 1024,
            block_cache_bytes: usize::try_from(config.block_cache_mb * 1024 * 1024)?,
            write_buffer_bytes: usize::try_from(write_buffer_mb * 1024 * 1024)?,
            max_write_buffers: 2,
            fsync: config.appendfsync,
            outbox_memory_bytes: usize::try_from(config.replication_memory_mb * 1024 * 1024)?,
            write_back: (config.write_back_ms > 0).then(|| WriteBackOptions {
                window: Duration::from_millis(config.write_back_ms),
                bytes: (config.write_back_mb as usize).saturating_mul(1024 * 1024),
            }),
        })?);
        info!(
            keys = keyspace.dbsize(0),
            ms = started.elapsed().as_millis() as u64,
            "storage open"
        );
        let region_ids = replication::region_ids(&topology);
        let region_id = region_ids.get(&region).copied().unwrap_or(0);
        keyspace.set_geo(region_id, multi_region);
        keyspace.set_region_count(u8::try_from(region_ids.len()).unwrap_or(0));
        keyspace.set_log_is_wal(true);

        // Links: needed as soon as the region has more than one node.
        let service = Arc::new(RaftService::new());
        let raft_thread = crate::raft::thread::RaftThread::start("meridian-raft")?;
        // In a topology of one region, the links carry the region's Raft traffic (and forwarded
        // writes, read-index rounds): the endpoint then runs on the Raft thread, so an
        // AppendEntries goes from openraft to the socket, and from the socket to openraft, with
        // no hand-off between threads (on the connection workers each RPC crossed two threads
        // on either side). `config/region-3.toml` through its leader, alternating A/B runs:
        // SET -P1 29-30k -> 37-39k/s (39 instead of 45-47 us of CPU per SET over the three
        // nodes), SET -P16 unchanged within the noise; through a follower SET -P1 +20 %, GET -P1
        // +35 %, GET -P16 +40 %. With several regions the links also ship every write to the
        // other regions, which on the Raft thread would compete with the apply: not measured,
        // so they stay on the connection workers.
        let links_on_raft_thread = !multi_region;
        let endpoint = if region_nodes.len() > 1 || topology.all_nodes().count() > 1 {
            // (The node is in the topology: only the certificates directory can be missing.)
            let link = LinkConfig::for_node(&topology, &node_name).ok_or_else(|| {
                anyhow::anyhow!(
                    "the topology has no [cluster] certs directory; run `meridian certs`"
                )
            })?;
            let endpoint = if links_on_raft_thread {
                let service = service.clone();
                raft_thread
                    .handle()
                    .spawn(async move { Endpoint::start(link, service).await })
                    .await?
            } else {
                Endpoint::start(link, service.clone()).await
            }
            .map_err(|e| {
                // With its causes (a key that does not match the certificate, a file's OS error).
                anyhow::Error::new(e).context(format!("starting the QUIC endpoint on {}", me.peer))
            })?;
            // Emulated WAN links of the topology, from this node's side.
            for (addr, shape) in topology.wan_shapes_from(&node_name) {
                if let Err(e) = endpoint.wan().set_link(addr, shape) {
                    warn!(error = %e, "cannot apply the topology's WAN emulation");
                }
            }
            endpoint.register_peers(
                topology
                    .all_nodes()
                    .filter(|n| n.name != node_name)
                    .map(|n| n.peer_addr()),
            );
            info!(addr = %endpoint.local_addr(), "QUIC endpoint up");
            Some(endpoint)
        } else {
            None
        };

        let members = region_nodes
            .iter()
            .map(|n| {
                (
                    n.id,
                    MeridianNode {
                        name: n.name.clone(),
                        peer: n.peer.to_string(),
                        resp: n.resp.to_string(),
                    },
                )
            })
            .collect();
        let raft = RegionRaft::start(
            me.id,
            region.clone(),
            topology.raft_cluster_name(&region),
            keyspace.clone(),
            endpoint,
            members,
            RaftSettings::from(&config.raft),
            region_id,
            raft_thread,
        )
        .await?;
        service.attach(raft.clone());
        if region_nodes.len() == 1 {
            // A region of one elects itself at once: serve only once it leads, so the first
            // reads do not race the election.
            let _ = raft
                .raft
                .wait(Some(Duration::from_secs(5)))
                .metrics(|m| m.current_leader == Some(me.id), "self-election")
                .await;
        }
        let geo = Arc::new(Geo::new(&topology, &region, config.replication_backlog));
        service.attach_geo(geo.clone());
        replication::start(raft.clone(), keyspace.clone(), geo.clone(), &shutdown);
        let slowlog =
            crate::slowlog::SlowLog::new(config.slowlog_log_slower_than, config.slowlog_max_len);
        let latency = crate::latency::LatencyMonitor::new(config.latency_monitor_threshold);
        let pubsub = Arc::new(crate::pubsub::PubSub::default());
        service.attach_pubsub(pubsub.clone());
        keyspace.notifier.attach(pubsub.clone());
        let clients = Arc::new(ClientRegistry::default());
        keyspace.tracking.attach(pubsub.clone(), clients.clone());
        keyspace.notifier.set_flags(
            crate::keyspace::notify::parse_flags(&config.notify_keyspace_events).unwrap_or(0),
        );
        let fanout = match &raft.endpoint {
            Some(endpoint) => crate::pubsub::Fanout::start(
                endpoint.clone(),
                topology
                    .all_nodes()
                    .filter(|n| n.name != node_name)
                    .map(|n| n.peer_addr())
                    .collect(),
                shutdown.token.clone(),
            ),
            None => crate::pubsub::Fanout::default(),
        };

        let shared = Arc::new(Shared {
            settings: Mutex::new(RuntimeSettings {
                requirepass: config.requirepass.clone(),
                maxclients: config.maxclients,
            }),
            writer: Writer::Raft(raft.clone(), geo.clone()),
            geo,
            keyspace,
            clients,
            stats: {
                crate::ticks::start();
                Stats::default()
            },
            scan_cursors: moka::sync::Cache::builder()
                .max_capacity(MAX_SCAN_CURSORS)
                .time_to_idle(SCAN_CURSOR_TTL)
                .build(),
            started,
            run_id: format!("{:040x}", rand::random::<u128>()),
            resp_addr: Mutex::new(None),
            last_sync: AtomicU64::new(now_ms() / 1000),
            raft,
            topology,
            node_name,
            config,
            stop: shutdown.token.clone(),
            fatal: std::sync::OnceLock::new(),
            pubsub,
            fanout,
            slowlog,
            latency,
        });

        if let Some(addr) = shared.config.metrics_addr {
            crate::metrics::install(addr, &shutdown).await?;
            info!(%addr, "prometheus exporter listening");
        }

        let resp_addr = listener.local_addr()?;
        *shared.resp_addr.lock().unwrap_or_else(|p| p.into_inner()) = Some(resp_addr);

        shutdown.tasks.spawn(crate::listener::accept_loop(
            listener,
            shared.clone(),
            shutdown.clone(),
        ));
        shutdown
            .tasks
            .spawn(fsync_task(shared.clone(), shutdown.clone()));
        shutdown
            .tasks
            .spawn(rates_task(shared.clone(), shutdown.clone()));
        shutdown
            .tasks
            .spawn(raft_health_task(shared.clone(), shutdown.clone()));
        shutdown
            .tasks
            .spawn(active_expiry_task(shared.clone(), shutdown.clone()));
        shutdown.tasks.spawn(crate::metrics::publish_task(
            shared.clone(),
            shutdown.clone(),
        ));
        if shared.raft.endpoint.is_some() {
            shutdown
                .tasks
                .spawn(fanout_members_task(shared.clone(), shutdown.clone()));
        }
        info!(%resp_addr, ms = started.elapsed().as_millis() as u64, "ready to accept connections");
        Ok(Node {
            shared,
            resp_addr,
            shutdown,
        })
    }

    /// Waits for the shutdown (a signal: see [`Shutdown::listen_for_signals`]), then for every
    /// task, then syncs storage. An error when the node stopped because its Raft group had
    /// stopped for good.
    pub async fn run_until_shutdown(self) -> anyhow::Result<()> {
        self.shutdown.token.cancelled().await;
        self.shutdown.tasks.close();
        // Connections end at once unless a request is running; one still running after the
        // grace (a write waiting for a quorum that has gone would wait its whole write
        // timeout) is cut: its connection closes without the reply, as Redis closes its
        // clients. (CLIENT KILL alone lets a running request finish.)
        if tokio::time::timeout(STOP_GRACE, self.shutdown.tasks.wait())
            .await
            .is_err()
        {
            let cut = self.shared.clients.abort_all();
            info!(
                connections = cut,
                "cut the connections still running a request"
            );
        }
        if tokio::time::timeout(Duration::from_secs(10), self.shutdown.tasks.wait())
            .await
            .is_err()
        {
            warn!("tasks did not stop within 10 s; exiting anyway");
        }
        if let Err(e) = self.shared.raft.raft.shutdown().await {
            warn!(error = %e, "raft shutdown failed");
        }
        if let Err(e) = self.shared.raft.log_store.write_unsaved_committed() {
            warn!(error = %e, "saving the commit index failed");
        }
        // The links first: in a topology of one region their tasks run on the Raft thread.
        if let Some(endpoint) = &self.shared.raft.endpoint {
            endpoint.shutdown().await;
        }
        if !self.shared.raft.stop_thread().await {
            warn!("the raft thread did not stop within 10 s");
        }
        if let Err(e) = self.shared.sync_now() {
            warn!(error = %e, "final WAL sync failed");
        }
        self.shared.keyspace.close();
        info!("bye");
        match self.shared.fatal.get() {
            Some(why) => Err(anyhow::anyhow!("the Raft group stopped: {why}")),
            None => Ok(()),
        }
    }
}

/// Keeps Pub/Sub's fan-out in step with the region's membership (nodes added or removed with
/// `MERIDIAN NODE`), checked every second.
async fn fanout_members_task(shared: Arc<Shared>, shutdown: Shutdown) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.token.cancelled() => return,
        }
        let members: Vec<geo::PeerAddr> = {
            let m = shared.raft.metrics();
            m.membership_config
                .membership()
                .nodes()
                .filter(|(id, _)| **id != shared.raft.node_id)
                .filter_map(|(_, node)| {
                    let addr = node.peer.parse().ok()?;
                    Some(geo::PeerAddr::new(node.name.clone(), addr))
                })
                .collect()
        };
        shared.fanout.sync_members(members);
    }
}

/// The memory a node accounts for, by part (see [`Shared::used_memory`]).
pub struct MemoryUse {
    /// The hot cache's charged bytes.
    pub hot_cache: u64,
    /// RocksDB's memtables.
    pub memtables: u64,
    /// RocksDB's block cache.
    pub block_cache: u64,
}

impl MemoryUse {
    /// INFO's `used_memory`.
    pub fn total(&self) -> u64 {
        self.hot_cache + self.memtables + self.block_cache
    }
}

/// How long requests already running may still take once the node stops.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// Stops the node when its Raft group stopped for good (openraft's `Fatal`: a storage error
/// such as a full disk). The node could still answer PING but no write and no linearizable
/// read, and it would not recover when the cause went away; stopping (exit status 1) makes
/// the failure visible to health checks and lets a supervisor restart it, which replays the
/// log once the disk has room again.
async fn raft_health_task(shared: Arc<Shared>, shutdown: Shutdown) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.token.cancelled() => return,
        }
        if let Err(fatal) = shared.raft.metrics().running_state {
            tracing::error!(error = %fatal, "the Raft group stopped; stopping the node");
            let _ = shared.fatal.set(fatal.to_string());
            shutdown.token.cancel();
            return;
        }
    }
}

/// Samples INFO's instantaneous rates every 100 ms, and the memory peak every second.
async fn rates_task(shared: Arc<Shared>, shutdown: Shutdown) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for n in 0u64.. {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.token.cancelled() => return,
        }
        shared.stats.rates.sample(&shared.stats);
        if n % 10 == 0 {
            let _ = shared.used_memory();
        }
    }
}

/// `appendfsync everysec`: sync the WAL once a second.
async fn fsync_task(shared: Arc<Shared>, shutdown: Shutdown) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.token.cancelled() => return,
        }
        if shared.keyspace.fsync_policy() == FsyncPolicy::Everysec {
            let shared = shared.clone();
            let result = tokio::task::spawn_blocking(move || shared.sync_now()).await;
            if let Ok(Err(e)) = result {
                warn!(error = %e, "WAL sync failed");
            }
        }
    }
}

/// Active expiry: find due keys in the expiry index and delete them through the writer.
async fn active_expiry_task(shared: Arc<Shared>, shutdown: Shutdown) {
    let hz = shared.config.active_expiry_hz.clamp(1, 100);
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / u64::from(hz)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.token.cancelled() => return,
        }
        // Only the leader removes expired keys, by proposing deletes every replica applies;
        // not while CLIENT PAUSE holds writes back (the data stays still, as in Redis).
        if !shared.raft.is_leader() || shared.clients.pause.holds(true) {
            continue;
        }
        // A region without a churn epoch yet (new, or upgraded): start one, so that WATCH
        // checks compare churn counters every replica counts alike (see Keyspace::churn_epoch).
        // Into this region's log only, never forwarded.
        // One of the mixed slot hash, in a region whose epoch predates it.
        if shared.keyspace.churn_epoch() & crate::keyspace::CHURN_MIXED == 0 {
            let started = shared.raft.write(vec![Op::ChurnEpochMixed], None);
            let Some(started) = shutdown.unless_stopped(started).await else {
                return;
            };
            if let Err(e) = started {
                debug!(error = %e, "starting the churn epoch failed; retried at the next tick");
            }
        }
        let due = match shared
            .keyspace
            .due_expiries(now_ms(), shared.config.active_expiry_batch)
        {
            Ok(d) => d,
            Err(e) => {
                warn!(error = %e, "active expiry scan failed");
                continue;
            }
        };
        if due.is_empty() {
            continue;
        }
        let ops = due
            .into_iter()
            .map(|(db, key, at_ms)| Op::ExpireIfDue { db, key, at_ms })
            .collect();
        let Some(submitted) = shutdown
            .unless_stopped(shared.writer.submit(ops, None))
            .await
        else {
            return;
        };
        match submitted {
            Ok((results, _)) => {
                let removed = results
                    .iter()
                    .filter(|r| matches!(r, crate::op::OpResult::Int(1)))
                    .count() as u64;
                shared
                    .stats
                    .expired_keys
                    .fetch_add(removed, Ordering::Relaxed);
            }
            Err(e) => warn!(error = %e, "active expiry write failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_memory;

    #[test]
    fn memory_values_read_as_redis_reads_them() {
        assert_eq!(parse_memory("0"), Some(0));
        assert_eq!(parse_memory("268435456"), Some(268_435_456));
        assert_eq!(parse_memory("256mb"), Some(268_435_456));
        assert_eq!(parse_memory("1GB"), Some(1 << 30));
        assert_eq!(parse_memory("2k"), Some(2000));
        assert_eq!(parse_memory("5b"), Some(5));
        for bad in [
            "",
            "abc",
            "-1",
            "1.5mb",
            "mb",
            "1tb",
            "99999999999999999999gb",
        ] {
            assert_eq!(parse_memory(bad), None, "{bad}");
        }
    }
}

//! Prometheus export through the `metrics` crate: the exporter and a task that publishes the
//! node's counters and gauges once a second (the hot path only bumps plain atomics).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::cmd::COMMANDS;
use crate::node::{rss_bytes, Shared};
use crate::shutdown::Shutdown;
use crate::stats::Stats;

/// The content type of Prometheus's text format, version included: Prometheus 3 refuses a
/// scrape whose type it cannot tell (the exporter's own listener sent `text/plain` alone).
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Scrapes served at once; more wait for a slot.
const MAX_SCRAPES: usize = 16;
/// Bound of a request's head (request line and headers).
const MAX_REQUEST_HEAD: usize = 8192;
/// How long a scrape may take to send its request and take its response.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the recorder's upkeep runs (it drains histogram samples).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Installs the global recorder and serves it over HTTP at `addr` until the node stops:
/// `GET /metrics` (or HEAD) answers the Prometheus text format, `/health` answers `OK`, any
/// other path 404 and any other method 405.
pub async fn install(addr: SocketAddr, shutdown: &Shutdown) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding the Prometheus endpoint on {addr}: {e}"))?;
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| anyhow::anyhow!("installing the metrics recorder: {e}"))?;
    shutdown
        .tasks
        .spawn(serve(listener, handle, shutdown.clone()));
    Ok(())
}

/// Accepts scrapes until the node stops.
async fn serve(listener: tokio::net::TcpListener, handle: PrometheusHandle, shutdown: Shutdown) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPES));
    let mut upkeep = tokio::time::interval(UPKEEP_EVERY);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = upkeep.tick() => {
                handle.run_upkeep();
                continue;
            }
            _ = shutdown.token.cancelled() => return,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let handle = handle.clone();
        let stop = shutdown.token.clone();
        shutdown.tasks.spawn(async move {
            let _slot = slot;
            tokio::select! {
                _ = tokio::time::timeout(SCRAPE_TIMEOUT, answer(stream, &handle)) => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}

/// Reads one request and writes its response, then closes the connection.
async fn answer(mut stream: tokio::net::TcpStream, handle: &PrometheusHandle) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > MAX_REQUEST_HEAD {
            let _ = stream
                .write_all(&response(
                    431,
                    "text/plain",
                    b"request head too large\n",
                    false,
                ))
                .await;
            return;
        }
    }
    let (status, content_type, body, head_only): (u16, &str, Vec<u8>, bool) =
        match request_line(&head) {
            None => (400, "text/plain", b"bad request\n".to_vec(), false),
            Some((method, path)) => {
                let head_only = method == "HEAD";
                match (method, path) {
                    ("GET" | "HEAD", "/metrics") => {
                        (200, CONTENT_TYPE, handle.render().into_bytes(), head_only)
                    }
                    ("GET" | "HEAD", "/health") => (200, "text/plain", b"OK\n".to_vec(), head_only),
                    ("GET" | "HEAD", _) => (404, "text/plain", b"not found\n".to_vec(), head_only),
                    _ => (405, "text/plain", b"method not allowed\n".to_vec(), false),
                }
            }
        };
    let _ = stream
        .write_all(&response(status, content_type, &body, head_only))
        .await;
    let _ = stream.shutdown().await;
}

/// The method and path (without its query) of an HTTP/1.x request head.
fn request_line(head: &[u8]) -> Option<(&str, &str)> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !version.starts_with("HTTP/1.") {
        return None;
    }
    Some((method, target.split('?').next().unwrap_or(target)))
}

/// An HTTP/1.1 response that closes the connection (a 405 names the methods allowed).
fn response(status: u16, content_type: &str, body: &[u8], head_only: bool) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Request Header Fields Too Large",
    };
    let allow = if status == 405 {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\n{allow}Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

/// Publishes [`Stats`] and keyspace figures as metrics every second.
pub async fn publish_task(shared: Arc<Shared>, shutdown: Shutdown) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.token.cancelled() => return,
        }
        crate::ticks::refresh();
        let s = &shared.stats;
        counter!("meridian_connections_received_total")
            .absolute(Stats::get(&s.connections_received));
        counter!("meridian_connections_rejected_total")
            .absolute(Stats::get(&s.rejected_connections));
        counter!("meridian_commands_processed_total").absolute(Stats::get(&s.commands_processed));
        counter!("meridian_net_input_bytes_total").absolute(Stats::get(&s.net_input_bytes));
        counter!("meridian_net_output_bytes_total").absolute(Stats::get(&s.net_output_bytes));
        counter!("meridian_expired_keys_total").absolute(Stats::get(&s.expired_keys));
        counter!("meridian_error_replies_total").absolute(Stats::get(&s.error_replies));
        counter!("meridian_write_batches_total").absolute(Stats::get(&s.write_batches));
        counter!("meridian_write_batch_microseconds_total")
            .absolute(Stats::get(&s.write_batch_micros));
        for (spec, c) in COMMANDS.iter().zip(&s.commands) {
            let n = c.calls.load(Ordering::Relaxed);
            let failed = c.failed.load(Ordering::Relaxed);
            let rejected = c.rejected.load(Ordering::Relaxed);
            if n + failed + rejected > 0 {
                let micros = crate::ticks::to_micros(c.ticks.load(Ordering::Relaxed));
                counter!("meridian_command_calls_total", "command" => spec.name).absolute(n);
                counter!("meridian_command_microseconds_total", "command" => spec.name)
                    .absolute(micros);
                counter!("meridian_command_failed_calls_total", "command" => spec.name)
                    .absolute(failed);
                counter!("meridian_command_rejected_calls_total", "command" => spec.name)
                    .absolute(rejected);
            }
        }
        for (code, n) in s.error_counts() {
            counter!("meridian_errors_total", "code" => code).absolute(n);
        }
        let (hits, misses, bytes, entries) = shared.keyspace.cache_stats();
        counter!("meridian_hot_cache_hits_total").absolute(hits);
        counter!("meridian_hot_cache_misses_total").absolute(misses);
        gauge!("meridian_hot_cache_bytes").set(bytes as f64);
        gauge!("meridian_hot_cache_entries").set(entries as f64);
        gauge!("meridian_connected_clients").set(shared.clients.count() as f64);
        gauge!("meridian_keys").set(shared.keyspace.dbsize(0) as f64);
        gauge!("meridian_rss_bytes").set(rss_bytes() as f64);
        counter!("meridian_tombstones_collected_total").absolute(shared.keyspace.collected());
        gauge!("meridian_outbox_memory_bytes").set(shared.keyspace.outbox_memory() as f64);
        counter!("meridian_outbox_storage_reads_total")
            .absolute(shared.keyspace.outbox_storage_reads());
        raft_gauges(&shared.raft);
        for r in shared.geo.status(&shared.raft, &shared.keyspace) {
            let region = r.region;
            gauge!("meridian_region_link_up", "region" => region.clone())
                .set(f64::from(u8::from(r.link == "up")));
            gauge!("meridian_region_rtt_seconds", "region" => region.clone())
                .set(r.rtt.map_or(f64::NAN, |d| d.as_secs_f64()));
            gauge!("meridian_region_lag_ms", "region" => region.clone()).set(r.lag_ms as f64);
            gauge!("meridian_region_lag_entries", "region" => region.clone())
                .set(r.lag_entries as f64);
            gauge!("meridian_region_acked_index", "region" => region.clone())
                .set(r.acked_index as f64);
            gauge!("meridian_region_applied_from_index", "region" => region.clone())
                .set(r.applied_from_index as f64);
            counter!("meridian_region_resyncs_total", "region" => region.clone())
                .absolute(r.resyncs);
            counter!("meridian_region_coalesced_entries_total", "region" => region.clone())
                .absolute(r.coalesced_entries);
            counter!("meridian_region_superseded_states_total", "region" => region)
                .absolute(r.superseded_states);
        }
    }
}

/// The region's Raft state as gauges: this node's term, role and log indexes, and per member
/// its link and, on the leader, how far it is behind.
fn raft_gauges(raft: &crate::raft::RegionRaft) {
    let m = raft.metrics();
    let index = |v: Option<u64>| v.map_or(f64::NAN, |v| v as f64);
    gauge!("meridian_raft_term").set(m.current_term as f64);
    gauge!("meridian_raft_is_leader").set(f64::from(u8::from(
        m.state == openraft::ServerState::Leader,
    )));
    gauge!("meridian_raft_last_log_index").set(index(m.last_log_index));
    gauge!("meridian_raft_commit_index").set(index(raft.log_store.committed_index()));
    gauge!("meridian_raft_applied_index").set(index(m.last_applied.map(|l| l.index)));
    let mut published = BTreeSet::new();
    for member in raft.members().into_iter().filter(|member| !member.me) {
        let up = f64::from(u8::from(member.link == "up"));
        let rtt = member.rtt.map_or(f64::NAN, |d| d.as_secs_f64());
        member_gauges(&member.name, up, rtt, index(member.lag_entries));
        published.insert(member.name);
    }
    // A member removed since the last round: its gauges read NaN (unknown) rather than keep
    // their last values, which would show a removed node as up forever.
    let mut last = PUBLISHED_MEMBERS.lock().unwrap_or_else(|p| p.into_inner());
    for gone in last.difference(&published) {
        member_gauges(gone, f64::NAN, f64::NAN, f64::NAN);
    }
    *last = published;
}

/// One other member's gauges: its link (1 up, 0 down), RTT in seconds and lag in entries.
fn member_gauges(node: &str, link_up: f64, rtt_seconds: f64, lag_entries: f64) {
    let node = node.to_string();
    gauge!("meridian_raft_member_link_up", "node" => node.clone()).set(link_up);
    gauge!("meridian_raft_member_rtt_seconds", "node" => node.clone()).set(rtt_seconds);
    gauge!("meridian_raft_member_lag_entries", "node" => node).set(lag_entries);
}

/// The members [`raft_gauges`] published gauges for in its last round.
static PUBLISHED_MEMBERS: std::sync::Mutex<BTreeSet<String>> =
    std::sync::Mutex::new(BTreeSet::new());

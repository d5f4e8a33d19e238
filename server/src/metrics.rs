//! Prometheus export through the `metrics` crate: the exporter and a task that publishes the
//! node's counters and gauges once a second (the hot path only bumps plain atomics).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, gauge};
use metrics_exporter_prometheus::PrometheusBuilder;

use crate::cmd::COMMANDS;
use crate::node::{rss_bytes, Shared};
use crate::shutdown::Shutdown;
use crate::stats::Stats;

/// Installs the global recorder with an HTTP listener at `addr` (`/metrics`).
pub fn install(addr: SocketAddr) -> anyhow::Result<()> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| anyhow::anyhow!("starting the Prometheus exporter on {addr}: {e}"))
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
            counter!("meridian_region_resyncs_total", "region" => region).absolute(r.resyncs);
        }
    }
}

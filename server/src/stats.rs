//! Node statistics for INFO, mirrored to the `metrics` crate (Prometheus) once a second.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::cmd::COMMANDS;

/// Counters updated by connections (per burst, not per command, to stay cheap).
pub struct Stats {
    /// Connections accepted.
    pub connections_received: AtomicU64,
    /// Connections refused (maxclients).
    pub rejected_connections: AtomicU64,
    /// Commands processed.
    pub commands_processed: AtomicU64,
    /// Bytes read from clients.
    pub net_input_bytes: AtomicU64,
    /// Bytes written to clients.
    pub net_output_bytes: AtomicU64,
    /// Keys removed by active expiry.
    pub expired_keys: AtomicU64,
    /// Error replies sent.
    pub error_replies: AtomicU64,
    /// Write batches submitted by connections (a pipelined burst's writes, or an EXEC).
    pub write_batches: AtomicU64,
    /// Their time from submission to result, summed (µs): through Raft, or forwarded.
    pub write_batch_micros: AtomicU64,
    /// Calls per command, indexed like [`COMMANDS`].
    pub calls: Vec<AtomicU64>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            connections_received: AtomicU64::new(0),
            rejected_connections: AtomicU64::new(0),
            commands_processed: AtomicU64::new(0),
            net_input_bytes: AtomicU64::new(0),
            net_output_bytes: AtomicU64::new(0),
            expired_keys: AtomicU64::new(0),
            error_replies: AtomicU64::new(0),
            write_batches: AtomicU64::new(0),
            write_batch_micros: AtomicU64::new(0),
            calls: COMMANDS.iter().map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Stats {
    /// CONFIG RESETSTAT.
    pub fn reset(&self) {
        for c in [
            &self.connections_received,
            &self.rejected_connections,
            &self.commands_processed,
            &self.net_input_bytes,
            &self.net_output_bytes,
            &self.expired_keys,
            &self.error_replies,
            &self.write_batches,
            &self.write_batch_micros,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        for c in &self.calls {
            c.store(0, Ordering::Relaxed);
        }
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Per-connection tallies, added to [`Stats`] once per burst.
#[derive(Default)]
pub struct LocalTally {
    /// Commands in this burst.
    pub commands: u64,
    /// Errors in this burst.
    pub errors: u64,
    /// (command index, calls) pairs touched in this burst.
    pub calls: Vec<(usize, u64)>,
    /// Write batches submitted in this burst, and their time (µs).
    pub write_batches: u64,
    /// See `write_batches`.
    pub write_micros: u64,
}

impl LocalTally {
    /// Counts one call of command `idx`.
    pub fn call(&mut self, idx: usize) {
        self.commands += 1;
        match self.calls.iter_mut().find(|(i, _)| *i == idx) {
            Some((_, n)) => *n += 1,
            None => self.calls.push((idx, 1)),
        }
    }

    /// Counts one write batch that took `took` from submission to result.
    pub fn write_batch(&mut self, took: std::time::Duration) {
        self.write_batches += 1;
        self.write_micros += took.as_micros() as u64;
    }

    /// Adds the tally to the node's counters and clears it.
    pub fn flush_into(&mut self, stats: &Stats) {
        if self.write_batches > 0 {
            stats
                .write_batches
                .fetch_add(self.write_batches, Ordering::Relaxed);
            stats
                .write_batch_micros
                .fetch_add(self.write_micros, Ordering::Relaxed);
            self.write_batches = 0;
            self.write_micros = 0;
        }
        if self.commands > 0 {
            stats
                .commands_processed
                .fetch_add(self.commands, Ordering::Relaxed);
        }
        if self.errors > 0 {
            stats
                .error_replies
                .fetch_add(self.errors, Ordering::Relaxed);
        }
        for (idx, n) in self.calls.drain(..) {
            if let Some(c) = stats.calls.get(idx) {
                c.fetch_add(n, Ordering::Relaxed);
            }
        }
        self.commands = 0;
        self.errors = 0;
    }
}

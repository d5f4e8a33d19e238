//! Node statistics for INFO, mirrored to the `metrics` crate (Prometheus) once a second.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::cmd::COMMANDS;

/// Distinct error codes INFO errorstats tracks at most (as Redis); later new codes are counted
/// in `total_error_replies` only.
pub const MAX_ERROR_CODES: usize = 128;

/// One command's counters (INFO commandstats).
#[derive(Default)]
pub struct CommandStats {
    /// Times it ran (inside EXEC included).
    pub calls: AtomicU64,
    /// Time it took, in [`crate::ticks`]: its handler on the connection, and for a write its
    /// share of its batch's time through the write path.
    pub ticks: AtomicU64,
    /// Refused before it ran (arity, authentication, subscribed mode, no quorum for a read,
    /// refused while queued in MULTI).
    pub rejected: AtomicU64,
    /// Ran and answered an error.
    pub failed: AtomicU64,
}

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
    /// Per command, indexed like [`COMMANDS`].
    pub commands: Vec<CommandStats>,
    /// Error replies per error code (the reply's first word), for INFO errorstats.
    pub error_codes: Mutex<BTreeMap<String, u64>>,
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
            commands: COMMANDS.iter().map(|_| CommandStats::default()).collect(),
            error_codes: Mutex::new(BTreeMap::new()),
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
        for c in &self.commands {
            for n in [&c.calls, &c.ticks, &c.rejected, &c.failed] {
                n.store(0, Ordering::Relaxed);
            }
        }
        self.error_codes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// One command's tally within a burst.
#[derive(Clone, Copy, Default)]
struct CommandTally {
    calls: u64,
    ticks: u64,
    rejected: u64,
    failed: u64,
}

/// Per-connection tallies, added to [`Stats`] once per burst.
#[derive(Default)]
pub struct LocalTally {
    /// Commands in this burst.
    pub commands: u64,
    /// Errors in this burst.
    errors: u64,
    /// Error codes in this burst, with their counts.
    error_codes: Vec<(Box<str>, u64)>,
    /// Commands touched in this burst (index in [`COMMANDS`]) and their tallies.
    per_command: Vec<(usize, CommandTally)>,
    /// Write batches submitted in this burst, and their time (µs).
    pub write_batches: u64,
    /// See `write_batches`.
    pub write_micros: u64,
}

/// The code of an error reply's text: its first word (`ERR`, `WRONGTYPE` …).
fn error_code(text: &[u8]) -> &[u8] {
    let text = text.strip_prefix(b"-").unwrap_or(text);
    let end = text
        .iter()
        .position(|b| *b == b' ' || *b == b'\r')
        .unwrap_or(text.len());
    &text[..end.min(64)]
}

impl LocalTally {
    fn command(&mut self, idx: usize) -> &mut CommandTally {
        let at = match self.per_command.iter().position(|(i, _)| *i == idx) {
            Some(at) => at,
            None => {
                self.per_command.push((idx, CommandTally::default()));
                self.per_command.len() - 1
            }
        };
        &mut self.per_command[at].1
    }

    /// Counts one call of command `idx`.
    pub fn call(&mut self, idx: usize) {
        self.commands += 1;
        self.command(idx).calls += 1;
    }

    /// Adds `ticks` of time to command `idx`.
    pub fn time(&mut self, idx: usize, ticks: u64) {
        self.command(idx).ticks += ticks;
    }

    /// Counts command `idx` refused before it ran.
    pub fn rejected(&mut self, idx: usize) {
        self.command(idx).rejected += 1;
    }

    /// Counts command `idx` that ran and failed.
    pub fn failed(&mut self, idx: usize) {
        self.command(idx).failed += 1;
    }

    /// Counts one error reply with this text (`ERR …`).
    pub fn error(&mut self, text: &[u8]) {
        self.errors += 1;
        let code = error_code(text);
        match self
            .error_codes
            .iter_mut()
            .find(|(c, _)| c.as_bytes() == code)
        {
            Some((_, n)) => *n += 1,
            None => self
                .error_codes
                .push((String::from_utf8_lossy(code).into(), 1)),
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
            let mut codes = stats.error_codes.lock().unwrap_or_else(|p| p.into_inner());
            for (code, n) in self.error_codes.drain(..) {
                if let Some(count) = codes.get_mut(&*code) {
                    *count += n;
                } else if codes.len() < MAX_ERROR_CODES {
                    codes.insert(code.into(), n);
                }
            }
        }
        for (idx, t) in self.per_command.drain(..) {
            if let Some(c) = stats.commands.get(idx) {
                for (counter, n) in [
                    (&c.calls, t.calls),
                    (&c.ticks, t.ticks),
                    (&c.rejected, t.rejected),
                    (&c.failed, t.failed),
                ] {
                    if n > 0 {
                        counter.fetch_add(n, Ordering::Relaxed);
                    }
                }
            }
        }
        self.commands = 0;
        self.errors = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_the_first_word() {
        assert_eq!(error_code(b"ERR syntax error"), b"ERR");
        assert_eq!(error_code(b"-WRONGTYPE Operation"), b"WRONGTYPE");
        assert_eq!(error_code(b"CLUSTERDOWN"), b"CLUSTERDOWN");
        let stats = Stats::default();
        let mut tally = LocalTally::default();
        tally.error(b"ERR a");
        tally.error(b"ERR b");
        tally.error(b"NOAUTH c");
        tally.call(3);
        tally.failed(3);
        tally.flush_into(&stats);
        let codes = stats.error_codes.lock().unwrap();
        assert_eq!(codes.get("ERR"), Some(&2));
        assert_eq!(codes.get("NOAUTH"), Some(&1));
        assert_eq!(Stats::get(&stats.error_replies), 3);
        assert_eq!(Stats::get(&stats.commands[3].failed), 1);
    }
}

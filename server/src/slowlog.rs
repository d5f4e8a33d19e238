//! SLOWLOG: the commands whose execution took longer than `slowlog-log-slower-than`
//! microseconds, newest first, at most `slowlog-max-len` of them (as in Redis 7.0).
//!
//! What is timed: the running of a read or server command on its connection (KEYS, SCAN, INFO,
//! CLIENT LIST …). Not timed: writes, whose running only builds an op (their time is the Raft
//! round, which INFO's `write_batches` / `write_batch_usec` count), and commands flagged fast
//! (GET and the like), so the hot paths pay nothing.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use bytes::Bytes;

/// Arguments kept per entry at most (the last one then says how many more there were).
const MAX_ARGS: usize = 32;
/// Bytes kept per argument at most (the rest is summarised).
const MAX_ARG_BYTES: usize = 128;
/// The largest `slowlog-max-len` accepted (each entry holds up to about 4 KiB of arguments).
pub const MAX_LEN_LIMIT: usize = 100_000;

/// One slow command.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Increasing id.
    pub id: u64,
    /// Unix time (seconds) the command ran.
    pub time: u64,
    /// How long it ran (µs).
    pub micros: u64,
    /// The command and its arguments, shortened as Redis does.
    pub argv: Vec<Bytes>,
    /// The client's `ip:port`.
    pub addr: String,
    /// The client's name (CLIENT SETNAME), or empty.
    pub name: Bytes,
}

/// The node's slow log.
pub struct SlowLog {
    entries: Mutex<VecDeque<Entry>>,
    next_id: AtomicU64,
    slower_than: AtomicI64,
    max_len: AtomicUsize,
}

impl SlowLog {
    /// A log keeping commands slower than `slower_than` µs (negative: none), at most `max_len`.
    pub fn new(slower_than: i64, max_len: usize) -> SlowLog {
        SlowLog {
            entries: Mutex::new(VecDeque::new()),
            next_id: AtomicU64::new(0),
            slower_than: AtomicI64::new(slower_than),
            max_len: AtomicUsize::new(max_len.min(MAX_LEN_LIMIT)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether commands are timed at all.
    pub fn enabled(&self) -> bool {
        self.slower_than.load(Ordering::Relaxed) >= 0
    }

    /// `slowlog-log-slower-than` (µs; negative: off).
    pub fn slower_than(&self) -> i64 {
        self.slower_than.load(Ordering::Relaxed)
    }

    /// `slowlog-max-len`.
    pub fn max_len(&self) -> usize {
        self.max_len.load(Ordering::Relaxed)
    }

    /// Sets `slowlog-log-slower-than`.
    pub fn set_slower_than(&self, micros: i64) {
        self.slower_than.store(micros, Ordering::Relaxed);
    }

    /// Sets `slowlog-max-len` (dropping the oldest entries beyond it).
    pub fn set_max_len(&self, len: usize) {
        let len = len.min(MAX_LEN_LIMIT);
        self.max_len.store(len, Ordering::Relaxed);
        self.lock().truncate(len);
    }

    /// Records a command that ran `micros` µs, if that is slow enough.
    pub fn record(&self, micros: u64, argv: &[Bytes], addr: String, name: Bytes) {
        let slower_than = self.slower_than();
        if slower_than < 0 || micros < slower_than as u64 {
            return;
        }
        let kept = argv.len().min(MAX_ARGS);
        let argv = argv[..kept]
            .iter()
            .enumerate()
            .map(|(i, arg)| {
                if kept < argv.len() && i == kept - 1 {
                    Bytes::from(format!("... ({} more arguments)", argv.len() - kept + 1))
                } else if arg.len() > MAX_ARG_BYTES {
                    let mut short = arg[..MAX_ARG_BYTES].to_vec();
                    short.extend_from_slice(
                        format!("... ({} more bytes)", arg.len() - MAX_ARG_BYTES).as_bytes(),
                    );
                    Bytes::from(short)
                } else {
                    // A copy: the entry must not hold the request's read buffer.
                    Bytes::copy_from_slice(arg)
                }
            })
            .collect();
        let max_len = self.max_len();
        let mut entries = self.lock();
        let entry = Entry {
            // Under the lock: entries stay in id order.
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            time: crate::write::now_ms() / 1000,
            micros,
            argv,
            addr,
            // A copy: a client's name may be a slice of its read buffer.
            name: Bytes::copy_from_slice(&name),
        };
        entries.push_front(entry);
        entries.truncate(max_len);
    }

    /// The newest `count` entries (all with `None`).
    pub fn newest(&self, count: Option<usize>) -> Vec<Entry> {
        let entries = self.lock();
        entries
            .iter()
            .take(count.unwrap_or(usize::MAX))
            .cloned()
            .collect()
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every entry.
    pub fn reset(&self) {
        self.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_slow_commands_shortened_as_redis_does() {
        let log = SlowLog::new(10, 2);
        let argv = |n: usize| {
            (0..n)
                .map(|i| Bytes::from(i.to_string()))
                .collect::<Vec<_>>()
        };
        log.record(5, &argv(2), "a".into(), Bytes::new());
        assert!(log.is_empty(), "faster than the threshold");
        log.record(10, &argv(40), "a".into(), Bytes::new());
        log.record(
            20,
            &[Bytes::from(vec![b'x'; 130])],
            "b".into(),
            Bytes::new(),
        );
        log.record(30, &argv(1), "c".into(), Bytes::new());
        let entries = log.newest(None);
        assert_eq!(entries.len(), 2);
        assert_eq!((entries[0].id, entries[0].micros), (2, 30));
        assert_eq!(entries[1].argv[0].len(), 128 + "... (2 more bytes)".len());
        log.reset();
        log.record(10, &argv(40), "a".into(), Bytes::new());
        let argv = &log.newest(Some(1))[0].argv;
        assert_eq!(argv.len(), 32);
        assert_eq!(&argv[31][..], b"... (9 more arguments)");
        log.set_slower_than(-1);
        log.record(u64::MAX, &[], "a".into(), Bytes::new());
        assert_eq!(log.len(), 1);
    }
}

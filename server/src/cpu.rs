//! The CPU scheduling policy of the node's threads (`cpu-policy` in the config).
//!
//! By default the node runs under Linux's `SCHED_BATCH`: the same fair share of the CPU as
//! any normal thread, but a thread woken by I/O does not preempt the thread running on its
//! CPU. Without it, on a machine with fewer free cores than busy threads, a connection worker
//! woken by a client's request preempts that very client on the client's core, serves the
//! one request burst there, wakes the client, and sleeps: the two ping-pong in slices of
//! tens of microseconds with a context switch each way. Under `SCHED_BATCH` the client
//! finishes its turn first and a worker wakes to several ready connections (measured on
//! 2 cores beside redis-benchmark, medians of 3 A/B rounds: SET -P1 +30 %, SET -P16 +11 %,
//! GET -P16 +8 %; redis-server, one thread, gained nothing from it). `normal` keeps the
//! kernel's default (`SCHED_OTHER`).

use serde::{Deserialize, Serialize};

/// Which Linux scheduling policy the node's threads run under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CpuPolicy {
    /// `SCHED_BATCH`: no wake-up preemption (throughput over wake-up latency).
    #[default]
    Batch,
    /// `SCHED_OTHER`, the kernel's default.
    Normal,
}

impl CpuPolicy {
    /// The config-file spelling.
    pub fn name(self) -> &'static str {
        match self {
            CpuPolicy::Batch => "batch",
            CpuPolicy::Normal => "normal",
        }
    }

    /// Parses the config spelling (case-insensitive).
    pub fn parse(text: &str) -> Option<CpuPolicy> {
        match text.to_ascii_lowercase().as_str() {
            "batch" => Some(CpuPolicy::Batch),
            "normal" => Some(CpuPolicy::Normal),
            _ => None,
        }
    }
}

/// Puts the calling thread under `policy`. Threads it starts afterwards inherit the policy,
/// so `main` calls this before it starts any (the runtime, RocksDB, Raft).
pub fn apply(policy: CpuPolicy) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let which = match policy {
            CpuPolicy::Batch => libc::SCHED_BATCH,
            CpuPolicy::Normal => libc::SCHED_OTHER,
        };
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param for the call.
        if unsafe { libc::sched_setscheduler(0, which, &param) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = policy;
    Ok(())
}

/// The calling thread's policy as the kernel reports it (for tests and INFO), if known.
pub fn current() -> Option<CpuPolicy> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: pid 0 is the calling thread.
        match unsafe { libc::sched_getscheduler(0) } {
            libc::SCHED_BATCH => Some(CpuPolicy::Batch),
            libc::SCHED_OTHER => Some(CpuPolicy::Normal),
            _ => None,
        }
    }
    #[cfg(not(target_os = "linux"))]
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in [CpuPolicy::Batch, CpuPolicy::Normal] {
            assert_eq!(CpuPolicy::parse(p.name()), Some(p));
        }
        assert_eq!(CpuPolicy::parse("BATCH"), Some(CpuPolicy::Batch));
        assert_eq!(CpuPolicy::parse("fifo"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_thread_takes_the_policy_and_its_children_inherit_it() {
        std::thread::spawn(|| {
            apply(CpuPolicy::Batch).unwrap();
            assert_eq!(current(), Some(CpuPolicy::Batch));
            let child = std::thread::spawn(current).join().unwrap();
            assert_eq!(child, Some(CpuPolicy::Batch));
            apply(CpuPolicy::Normal).unwrap();
            assert_eq!(current(), Some(CpuPolicy::Normal));
        })
        .join()
        .unwrap();
    }
}

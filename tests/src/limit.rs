//! A process-wide cap on how many `meridian` processes run at once.
//!
//! Tests run in parallel on a 2-core machine; clusters of nine nodes next to a benchmark would
//! starve each other into timeouts. Every [`crate::Node`] holds a [`NodePermit`] for its life;
//! a [`crate::Cluster`] takes all of its permits in one step so two clusters cannot deadlock
//! each holding half of what they need.

use std::sync::{Condvar, Mutex, OnceLock};

/// Nodes allowed at once unless `MERIDIAN_TEST_MAX_NODES` says otherwise.
pub const DEFAULT_MAX_NODES: usize = 8;

struct Slots {
    cap: usize,
    in_use: Mutex<usize>,
    freed: Condvar,
}

fn slots() -> &'static Slots {
    static SLOTS: OnceLock<Slots> = OnceLock::new();
    SLOTS.get_or_init(|| {
        let cap = std::env::var("MERIDIAN_TEST_MAX_NODES")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&n| n > 0)
            .unwrap_or(DEFAULT_MAX_NODES);
        Slots {
            cap,
            in_use: Mutex::new(0),
            freed: Condvar::new(),
        }
    })
}

/// Permission to run some nodes; released on drop.
#[derive(Debug)]
pub struct NodePermit {
    n: usize,
}

impl NodePermit {
    /// Blocks until `n` node slots are free and takes them together. A request larger than the
    /// cap takes the whole cap (a nine-node cluster still runs when the cap is eight; it just
    /// runs alone).
    pub fn acquire(n: usize) -> NodePermit {
        let s = slots();
        let n = n.min(s.cap);
        let mut in_use = s.in_use.lock().unwrap_or_else(|e| e.into_inner());
        while *in_use + n > s.cap {
            in_use = s.freed.wait(in_use).unwrap_or_else(|e| e.into_inner());
        }
        *in_use += n;
        NodePermit { n }
    }

    /// Splits one slot off this permit (for handing to one node of a cluster). Returns `None`
    /// when the permit holds no slot left (a cluster larger than the cap).
    pub fn split_one(&mut self) -> Option<NodePermit> {
        if self.n == 0 {
            return None;
        }
        self.n -= 1;
        Some(NodePermit { n: 1 })
    }
}

impl Drop for NodePermit {
    fn drop(&mut self) {
        if self.n == 0 {
            return;
        }
        let s = slots();
        let mut in_use = s.in_use.lock().unwrap_or_else(|e| e.into_inner());
        *in_use = in_use.saturating_sub(self.n);
        s.freed.notify_all();
    }
}

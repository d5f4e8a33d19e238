//! Read-index batching: concurrent linearizable reads on a node share one read-index round
//! (a leader's quorum confirmation, or a follower's RPC to the leader). A read joins the
//! round that starts after it arrived, never one already in flight, so the index it gets is
//! at least the commit index at its arrival: linearizable, at one round per burst of reads.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// One read-index round: resolves to the index a reader must have applied.
pub type Round = Pin<Box<dyn Future<Output = Result<u64, String>> + Send>>;

type Waiter = oneshot::Sender<Result<u64, String>>;

#[derive(Default)]
struct Inner {
    running: bool,
    waiting: Vec<Waiter>,
}

/// Coalesces read-index requests.
#[derive(Clone, Default)]
pub struct ReadIndexBatcher {
    inner: Arc<Mutex<Inner>>,
}

/// Readers waiting for one round at most; further readers wait for the next.
const MAX_WAITERS_PER_ROUND: usize = 65_536;

impl ReadIndexBatcher {
    /// Waits for a round that starts after this call; `start_round` makes one.
    pub async fn read_index<F>(&self, start_round: F) -> Result<u64, String>
    where
        F: Fn() -> Round + Send + Sync + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let spawn_driver = {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            inner.waiting.push(tx);
            !std::mem::replace(&mut inner.running, true)
        };
        if spawn_driver {
            let inner = self.inner.clone();
            tokio::spawn(async move {
                loop {
                    let waiters = {
                        let mut guard = inner.lock().unwrap_or_else(|p| p.into_inner());
                        if guard.waiting.is_empty() {
                            guard.running = false;
                            return;
                        }
                        let n = guard.waiting.len().min(MAX_WAITERS_PER_ROUND);
                        guard.waiting.drain(..n).collect::<Vec<_>>()
                    };
                    let result = start_round().await;
                    for w in waiters {
                        let _ = w.send(result.clone());
                    }
                }
            });
        }
        rx.await
            .unwrap_or_else(|_| Err("read-index round dropped".into()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    #[tokio::test]
    async fn concurrent_readers_share_rounds() {
        let rounds = Arc::new(AtomicU64::new(0));
        let batcher = ReadIndexBatcher::default();
        let mut handles = Vec::new();
        for _ in 0..100 {
            let b = batcher.clone();
            let r = rounds.clone();
            handles.push(tokio::spawn(async move {
                b.read_index(move || {
                    let r = r.clone();
                    Box::pin(async move {
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                        Ok(r.fetch_add(1, Ordering::SeqCst) + 1)
                    })
                })
                .await
            }));
        }
        for h in handles {
            assert!(h.await.unwrap().is_ok());
        }
        let n = rounds.load(Ordering::SeqCst);
        assert!(
            (1..=3).contains(&n),
            "100 concurrent readers took {n} rounds"
        );
    }
}

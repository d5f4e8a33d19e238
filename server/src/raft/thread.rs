//! The Raft thread: openraft's tasks (the core, the state-machine worker, replication
//! streams) and the proposer run on one dedicated thread with its own single-threaded tokio
//! runtime, instead of among the connection tasks.
//!
//! Why: on the shared runtime every hop of a write through Raft (proposer → core → log append
//! → state-machine worker → reply) waited in the run queue behind the connections' tasks and
//! often woke a parked worker thread. On its own thread the hops are plain task switches and
//! the apply runs without waiting its turn: `redis-benchmark -t set -P 16 -c 50` on one node
//! went from 139k–150k to 167k–170k requests/s (2 cores, A/B runs); -P1 and GET unchanged.

use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// A dedicated thread driving a current-thread tokio runtime; stopped by [`RaftThread::stop`]
/// or when dropped (its tasks are dropped with the runtime).
pub struct RaftThread {
    handle: Handle,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl RaftThread {
    /// Starts the thread (named `name`) and its runtime.
    pub fn start(name: &str) -> std::io::Result<RaftThread> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name(name)
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        // Tasks spawned through the handle before the thread runs wait in the runtime's queue.
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                // Runs the spawned tasks until the owner is dropped (or drops the sender).
                let _ = runtime.block_on(stopped);
                // Tasks still pending are dropped here, off any async context.
                drop(runtime);
            })?;
        Ok(RaftThread {
            handle,
            stop: Mutex::new(Some(stop)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Stops the runtime and waits up to `timeout` for the thread to have dropped its tasks.
    ///
    /// Part of a graceful shutdown: the tasks hold the keyspace, and with it RocksDB; dropped
    /// while the process exited, the last of them closed the database on this thread while
    /// the exit destroyed RocksDB's static mutexes, and the node aborted ("pthread lock:
    /// Invalid argument").
    pub async fn stop(&self, timeout: Duration) -> bool {
        self.send_stop();
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(thread) = thread else {
            return true;
        };
        let joined = tokio::task::spawn_blocking(move || thread.join());
        matches!(tokio::time::timeout(timeout, joined).await, Ok(Ok(Ok(()))))
    }

    fn send_stop(&self) {
        let stop = self
            .stop
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
    }

    /// The runtime's handle, to spawn tasks on the thread.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for RaftThread {
    fn drop(&mut self) {
        self.send_stop();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn runs_tasks_on_its_own_thread_until_dropped() {
        let thread = RaftThread::start("raft-test").unwrap();
        let caller = std::thread::current().id();
        let ran_on = thread
            .handle()
            .spawn(async { std::thread::current().id() })
            .await
            .unwrap();
        assert_ne!(ran_on, caller);
        let (tx, rx) = oneshot::channel::<()>();
        let pending = thread.handle().spawn(async move {
            let _ = rx.await;
        });
        drop(thread);
        // The runtime stopped: its pending task was dropped (cancelled), not left running.
        let outcome = tokio::time::timeout(std::time::Duration::from_secs(5), pending)
            .await
            .expect("the task ends when the thread stops");
        assert!(outcome.unwrap_err().is_cancelled());
        drop(tx);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stop_returns_after_the_tasks_were_dropped() {
        struct SetOnDrop(Arc<AtomicBool>);
        impl Drop for SetOnDrop {
            fn drop(&mut self) {
                // Slow, like a task whose drop closes a database.
                std::thread::sleep(Duration::from_millis(50));
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let thread = RaftThread::start("raft-test").unwrap();
        let dropped = Arc::new(AtomicBool::new(false));
        let guard = SetOnDrop(dropped.clone());
        thread.handle().spawn(async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        });
        assert!(thread.stop(Duration::from_secs(5)).await);
        assert!(
            dropped.load(Ordering::SeqCst),
            "stop returned before the task was dropped"
        );
        // A second stop has nothing to wait for.
        assert!(thread.stop(Duration::from_secs(5)).await);
    }
}

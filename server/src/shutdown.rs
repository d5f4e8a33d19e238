//! The shutdown signal handed to every task: a cancellation token and a tracker of the tasks
//! that must finish before the node exits.

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Cancellation plus the set of tasks to wait for.
#[derive(Clone, Default)]
pub struct Shutdown {
    /// Cancelled when the node should stop.
    pub token: CancellationToken,
    /// Tasks (connections, background jobs) awaited at teardown.
    pub tasks: TaskTracker,
}

impl Shutdown {
    /// A fresh signal.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Waits for SIGINT or SIGTERM, then cancels.
    pub async fn wait_for_signal(&self) {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term = match tokio::signal::unix::signal(
                tokio::signal::unix::SignalKind::terminate(),
            ) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the node");
                    let _ = ctrl_c.await;
                    self.token.cancel();
                    return;
                }
            };
            tokio::select! {
                _ = ctrl_c => tracing::info!("SIGINT received, shutting down"),
                _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
                _ = self.token.cancelled() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
        self.token.cancel();
    }
}

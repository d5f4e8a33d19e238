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

    /// Runs `work` unless the node stops first (`None` then): for background tasks whose
    /// writes wait for a quorum up to the write timeout, which must not hold a stop.
    pub async fn unless_stopped<T>(&self, work: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::select! {
            out = work => Some(out),
            _ = self.token.cancelled() => None,
        }
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
            // SIGHUP (logrotate's postrotate, a service manager's reload) and SIGUSR1/2 would
            // end the process at once, without the clean stop: they are logged and ignored, as
            // Redis ignores SIGHUP. (Logs go to stderr; nothing needs reopening.)
            let ignored = [
                (tokio::signal::unix::SignalKind::hangup(), "SIGHUP"),
                (tokio::signal::unix::SignalKind::user_defined1(), "SIGUSR1"),
                (tokio::signal::unix::SignalKind::user_defined2(), "SIGUSR2"),
            ];
            for (kind, name) in ignored {
                match tokio::signal::unix::signal(kind) {
                    Ok(mut stream) => {
                        tokio::spawn(async move {
                            while stream.recv().await.is_some() {
                                tracing::info!("{name} received; ignored (SIGTERM stops the node)");
                            }
                        });
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot listen for {name}"),
                }
            }
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

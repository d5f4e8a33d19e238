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

    /// Listens for the signals from now on: SIGINT and SIGTERM cancel (the clean stop);
    /// SIGHUP (logrotate's postrotate, a service manager's reload), SIGUSR1 and SIGUSR2 are
    /// logged and ignored, as Redis ignores SIGHUP (logs go to stderr; nothing needs
    /// reopening). Called first thing at start: until a signal is listened for, its default
    /// action ends the process at once, and the RESP port is open before the storage and Raft
    /// have started (a SIGHUP sent as soon as the port answered killed the node).
    pub fn listen_for_signals(&self) {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let ignored = [
                (SignalKind::hangup(), "SIGHUP"),
                (SignalKind::user_defined1(), "SIGUSR1"),
                (SignalKind::user_defined2(), "SIGUSR2"),
            ];
            for (kind, name) in ignored {
                match signal(kind) {
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
            let stops = [
                (SignalKind::interrupt(), "SIGINT"),
                (SignalKind::terminate(), "SIGTERM"),
            ];
            for (kind, name) in stops {
                match signal(kind) {
                    Ok(mut stream) => {
                        let token = self.token.clone();
                        tokio::spawn(async move {
                            tokio::select! {
                                Some(()) = stream.recv() => {
                                    tracing::info!("{name} received, shutting down");
                                    token.cancel();
                                }
                                _ = token.cancelled() => {}
                            }
                        });
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot listen for {name}"),
                }
            }
        }
        #[cfg(not(unix))]
        {
            let token = self.token.clone();
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    token.cancel();
                }
            });
        }
    }
}

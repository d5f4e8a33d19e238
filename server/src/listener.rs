//! The accept loop: one task per connection, capped by `maxclients`, accept errors retried
//! with backoff.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tracing::warn;

use crate::node::Shared;
use crate::shutdown::Shutdown;

/// Accepts connections until shutdown.
pub async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, shutdown: Shutdown) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.token.cancelled() => return,
        };
        let (mut stream, peer) = match accepted {
            Ok(pair) => {
                backoff = Duration::from_millis(5);
                pair
            }
            Err(e) => {
                warn!(error = %e, "accept failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        shared
            .stats
            .connections_received
            .fetch_add(1, Ordering::Relaxed);
        if shared.clients.count() >= shared.maxclients() {
            shared
                .stats
                .rejected_connections
                .fetch_add(1, Ordering::Relaxed);
            let _ = tokio::time::timeout(
                Duration::from_millis(100),
                stream.write_all(b"-ERR max number of clients reached\r\n"),
            )
            .await;
            continue;
        }
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(peer);
        let info = shared
            .clients
            .register(peer, local, shutdown.token.child_token());
        let shared = shared.clone();
        let token = info.kill.clone();
        let registered = info.clone();
        let task = shutdown.tasks.spawn(async move {
            let id = info.id;
            crate::connection::serve(stream, shared.clone(), info, token).await;
            shared.clients.unregister(id);
        });
        let _ = registered.task.set(task.abort_handle());
    }
}

//! Serving an HTTP router the way every Journeys process does: `TCP_NODELAY` on each
//! connection, and a graceful drain bounded by the same timeout as gRPC's
//! ([`DEFAULT_DRAIN_TIMEOUT`]), so one slow client cannot hold a shutdown forever.

use std::future::Future;

use axum::serve::ListenerExt as _;
use tokio::net::TcpListener;

use crate::grpc::{DEFAULT_DRAIN_TIMEOUT, ServeError};

/// Serves `router` on `listener` until `shutdown` completes, then lets open connections finish
/// for at most [`DEFAULT_DRAIN_TIMEOUT`].
///
/// # Errors
/// The listener's address cannot be read, or the server fails.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let addr = listener.local_addr()?;
    let (drain_started, drain_started_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        tracing::info!(%addr, "HTTP server draining");
        let _ = drain_started.send(());
    };
    // Small requests would otherwise wait for delayed ACKs.
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
    });
    let server = axum::serve(listener, router)
        .with_graceful_shutdown(signal)
        .into_future();
    let mut server = std::pin::pin!(server);
    tracing::info!(%addr, "HTTP server listening");
    let http_error = |source| ServeError::Http { addr, source };
    tokio::select! {
        // Biased so a finished server is never polled again by the drain below.
        biased;
        result = &mut server => return result.map_err(http_error),
        _ = drain_started_rx => {}
    }
    match tokio::time::timeout(DEFAULT_DRAIN_TIMEOUT, &mut server).await {
        Ok(result) => {
            tracing::info!(%addr, "HTTP server stopped");
            result.map_err(http_error)
        }
        Err(_) => {
            tracing::warn!(%addr, "HTTP connections still open after the drain timeout; stopping");
            Ok(())
        }
    }
}

//! Serving an HTTP router the way every Journeys process does, hardened for the open internet:
//! - `TCP_NODELAY` on each connection (small requests would otherwise wait for delayed ACKs);
//! - at most [`HttpLimits::max_connections`] open connections: past that the listener stops
//!   accepting (the kernel's backlog holds the rest) instead of running out of file
//!   descriptors, which would also starve gRPC and the store;
//! - request headers must arrive within [`HttpLimits::header_read_timeout`], which also closes
//!   keep-alive connections idle that long (a client sending a byte at a time, or parking
//!   sockets, cannot hold a slot), and fit in [`HttpLimits::max_header_bytes`] (else `431`);
//! - a graceful drain bounded by the same timeout as gRPC's ([`DEFAULT_DRAIN_TIMEOUT`]), so one
//!   slow client cannot hold a shutdown forever.
//!
//! Request bodies are bounded by the handlers (size) and by [`HttpLimits::body_read_timeout`],
//! which the data plane applies while reading a body.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::grpc::{DEFAULT_DRAIN_TIMEOUT, ServeError};

/// Limits of the HTTP port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Connections open at once; below the usual 1,024 file-descriptor limit, with room for
    /// gRPC, the store pool and outgoing webhooks.
    pub max_connections: usize,
    /// Time to receive a request's headers; also how long a keep-alive connection may idle.
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers) accepted.
    pub max_header_bytes: usize,
    /// Time to receive a whole request body once its headers arrived.
    pub body_read_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 512,
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            body_read_timeout: Duration::from_secs(30),
        }
    }
}

/// The router, with the connection's peer address added to each request it serves.
#[derive(Clone)]
struct AddConnectInfo {
    router: axum::Router,
    peer: SocketAddr,
}

impl<B> tower::Service<http::Request<B>> for AddConnectInfo
where
    axum::Router: tower::Service<http::Request<B>>,
{
    type Response = <axum::Router as tower::Service<http::Request<B>>>::Response;
    type Error = <axum::Router as tower::Service<http::Request<B>>>::Error;
    type Future = <axum::Router as tower::Service<http::Request<B>>>::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        tower::Service::<http::Request<B>>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(self.peer));
        self.router.call(request)
    }
}

/// Serves `router` on `listener` with [`HttpLimits::default`] until `shutdown` completes, then
/// lets open connections finish for at most [`DEFAULT_DRAIN_TIMEOUT`].
///
/// # Errors
/// The listener's address cannot be read.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_with(listener, router, HttpLimits::default(), shutdown).await
}

/// [`serve`] with explicit limits.
///
/// # Errors
/// The listener's address cannot be read.
pub async fn serve_with(
    listener: TcpListener,
    router: axum::Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let addr = listener.local_addr()?;
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    let mut shutdown = std::pin::pin!(shutdown);
    tracing::info!(%addr, "HTTP server listening");
    loop {
        // A slot first: at the cap, connections wait in the kernel's backlog.
        let slot = tokio::select! {
            biased;
            () = &mut shutdown => break,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(%addr, %error, "could not accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        // Each request carries its connection's peer (`axum::extract::ConnectInfo`): the web
        // console answers only loopback clients when no admin token is configured.
        let service = TowerToHyperService::new(AddConnectInfo {
            router: router.clone(),
            peer,
        });
        let connection = graceful.watch(
            // No upgrades (WebSocket and the like): no route uses them.
            builder.serve_connection(TokioIo::new(tcp), service),
        );
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "HTTP connection ended with an error");
            }
            drop(slot);
        });
    }
    tracing::info!(%addr, "HTTP server draining");
    drop(listener);
    if tokio::time::timeout(DEFAULT_DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(%addr, "HTTP connections still open after the drain timeout; stopping");
    } else {
        tracing::info!(%addr, "HTTP server stopped");
    }
    Ok(())
}

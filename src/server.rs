//! The listener: accept loop, connection and request gauges, graceful shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::ServeConfig;
use crate::metrics::LiveGauge;
use crate::proxy::Proxy;
use crate::revalidate::Revalidator;
use crate::store::Store;
use crate::upstream::Upstream;

/// A proxy running in this process: what tests, benchmarks and `main` need to talk to it and to
/// stop it.
#[derive(Debug)]
pub struct Running {
    /// The address it accepts on (the real port when `:0` was asked for).
    pub addr: SocketAddr,
    /// The request path, and through it the store.
    pub proxy: Proxy,
    /// Open client connections.
    pub connections: LiveGauge,
    /// Requests being handled.
    pub in_flight: LiveGauge,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    /// The store behind the proxy.
    pub fn store(&self) -> &Arc<dyn Store> {
        self.proxy.store()
    }

    /// A token that, when cancelled, starts a graceful shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting, lets in-flight requests finish within the configured deadline, drains the
    /// background workers, and returns when all is done.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.wait().await;
    }

    /// Waits until the server stops (after its shutdown token is cancelled).
    pub async fn wait(self) {
        let Running { proxy, task, .. } = self;
        // Our clone of the proxy holds a sender of the refresh queue; the workers stop only once
        // every sender is gone.
        drop(proxy);
        let _ = task.await;
    }
}

/// Binds the listener and starts serving `config` in the background.
pub async fn start(config: ServeConfig) -> std::io::Result<Running> {
    let listener = TcpListener::bind(config.listen).await?;
    let store = config.backend.build(config.capacity, config.moka_policy);
    Ok(start_with(listener, config, store))
}

/// Starts serving on an already bound listener with a given store (the extension point for a
/// store of the library user's own).
pub fn start_with(listener: TcpListener, config: ServeConfig, store: Arc<dyn Store>) -> Running {
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
    let (revalidator, workers) =
        Revalidator::start(config.revalidate_workers, config.revalidate_queue);
    let upstream = Upstream::new(config.upstream.clone());
    let proxy = Proxy::new(store, upstream, config.proxy.clone(), revalidator);
    let connections = LiveGauge::new("cachet_connections");
    let in_flight = LiveGauge::new("cachet_requests_in_flight");
    let shutdown = CancellationToken::new();

    let task = tokio::spawn(accept_loop(
        listener,
        proxy.clone(),
        connections.clone(),
        in_flight.clone(),
        shutdown.clone(),
        config.header_read_timeout,
        config.shutdown_timeout,
        workers,
    ));
    Running {
        addr,
        proxy,
        connections,
        in_flight,
        shutdown,
        task,
    }
}

#[allow(clippy::too_many_arguments)]
async fn accept_loop(
    listener: TcpListener,
    proxy: Proxy,
    connections: LiveGauge,
    in_flight: LiveGauge,
    shutdown: CancellationToken,
    header_read_timeout: Duration,
    shutdown_timeout: Duration,
    workers: crate::revalidate::Workers,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);

    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let connection_guard = connections.enter();
        let proxy = proxy.clone();
        let in_flight = in_flight.clone();
        let service = service_fn(move |req| {
            let proxy = proxy.clone();
            let guard = in_flight.enter();
            async move {
                let resp = proxy.handle(req, Some(peer)).await;
                drop(guard);
                Ok::<_, Infallible>(resp)
            }
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
            drop(connection_guard);
        });
    }
    drop(listener);
    // Graceful: in-flight requests finish, idle keep-alive connections close.
    if tokio::time::timeout(shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?shutdown_timeout,
            "in-flight requests did not finish in time"
        );
    }
    // The proxy (and its Revalidator sender) lives on in clones held by connection tasks that
    // have ended; dropping ours lets the workers see the channel close once their queue is done.
    drop(proxy);
    if tokio::time::timeout(shutdown_timeout, workers.drain())
        .await
        .is_err()
    {
        tracing::warn!("background refreshes did not finish in time");
    }
}

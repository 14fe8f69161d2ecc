//! The listener: accept loop, limits and timeouts, gauges, PURGE, the access log, and graceful
//! shutdown.
//!
//! Each connection runs in its own task, which also watches the connection's phase
//! ([`ConnWatch`]): waiting for a request head (bounded by the header read timeout, against
//! slowloris), busy with requests (unbounded here: the upstream timeouts bound the proxy's side),
//! or idle between keep-alive requests (bounded by the keep-alive timeout). hyper's own header
//! read timer is not used because it also runs while a keep-alive connection is idle, which would
//! make the two timeouts one.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::access_log::{AccessRecord, LoggedBody};
use crate::admin::AdminState;
use crate::body::{self, Body};
use crate::config::{LogFormat, ServeConfig};
use crate::metrics::{GaugeGuard, Levels, LiveGauge, RequestCounts};
use crate::policy::purge::PurgeTarget;
use crate::proxy::{CacheResult, OverTls, Proxy, UpstreamTime};
use crate::revalidate::{Revalidator, Workers};
use crate::shared::{RedisTier, Shared as SharedTier, SharedConfig};
use crate::site::{named_certs, SiteConfig, SiteError, Sites};
use crate::store::Store;
use crate::tls::{ListenerCert, TlsError};

/// Why a server could not start; each names what is at fault.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound (the message names the flag and address).
    #[error(transparent)]
    Bind(#[from] io::Error),
    /// The sites could not be built (a bad upstream CA file, no root certificates...).
    #[error(transparent)]
    Sites(#[from] SiteError),
    /// The TLS listener's certificate could not be loaded.
    #[error("--tls-cert: {0}")]
    Tls(#[from] TlsError),
}

/// What a reload changed, or why each part was refused (the part in service is then kept).
#[derive(Debug)]
pub struct ReloadReport {
    /// The sites now in service (`Ok(None)`: the file declares none; the one site of
    /// `--upstream` goes on), or why the file's sites were refused.
    pub sites: Result<Option<usize>, String>,
    /// The TLS listener's certificate: reloaded, or why not; `None` without a TLS listener.
    pub certificate: Option<Result<(), String>>,
}

impl ReloadReport {
    /// True when every part reloaded.
    pub fn is_ok(&self) -> bool {
        self.sites.is_ok() && !matches!(self.certificate, Some(Err(_)))
    }
}

/// Re-reads the config file's sites and the TLS certificate into a running server (SIGHUP).
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct Reloader {
    config: Arc<ServeConfig>,
    proxy: Proxy,
    cert: Option<Arc<ListenerCert>>,
}

impl Reloader {
    /// Reloads what can change without a restart: the `[[site]]` tables (their hosts,
    /// upstreams and rules) and the TLS listener's certificate. A part that fails to load is
    /// refused with its reason and the one in service is kept; requests in flight finish with
    /// the site they started with, and the store is kept whole.
    pub fn reload(&self) -> ReloadReport {
        let mut certificate = None;
        let sites = match self.config.reload_sites() {
            Ok(None) => Ok(None),
            Ok(Some(configs)) => self.replace_sites(&configs, &mut certificate),
            Err(e) => Err(e.to_string()),
        };
        if certificate.is_none() {
            // The sites in service keep their certificates, read again.
            if let Some(cert) = &self.cert {
                let configs: Vec<SiteConfig> = self
                    .proxy
                    .sites()
                    .all()
                    .iter()
                    .map(|s| s.config().clone())
                    .collect();
                certificate = Some(
                    cert.reload(&named_certs(&configs))
                        .map_err(|e| e.to_string()),
                );
            }
        }
        ReloadReport { sites, certificate }
    }

    /// Builds `configs` and their certificates, and puts both in service, or neither.
    fn replace_sites(
        &self,
        configs: &[SiteConfig],
        certificate: &mut Option<Result<(), String>>,
    ) -> Result<Option<usize>, String> {
        let certs = match &self.cert {
            Some(cert) => Some(
                cert.prepare(&named_certs(configs))
                    .map_err(|e| format!("a certificate of the new sites: {e}"))?,
            ),
            None => None,
        };
        let sites =
            Sites::build_reusing(configs, &self.proxy.sites()).map_err(|e| e.to_string())?;
        let n = sites.all().len();
        self.proxy.replace_sites(sites);
        if let (Some(cert), Some(set)) = (&self.cert, certs) {
            cert.install(set);
            *certificate = Some(Ok(()));
        }
        Ok(Some(n))
    }
}

/// A proxy running in this process: what tests, benchmarks and `main` need to talk to it and to
/// stop it.
#[derive(Debug)]
pub struct Running {
    /// The address it accepts on (the real port when `:0` was asked for).
    pub addr: SocketAddr,
    /// The admin listener's address, when there is one.
    pub admin_addr: Option<SocketAddr>,
    /// The TLS listener's address, when there is one.
    pub tls_addr: Option<SocketAddr>,
    /// The request path, and through it the store.
    pub proxy: Proxy,
    /// Open client connections.
    pub connections: LiveGauge,
    /// Requests being handled, from request head to the last byte of the response body.
    pub in_flight: LiveGauge,
    /// This server's requests by cache result.
    pub counts: Arc<RequestCounts>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
    reloader: Reloader,
}

impl Running {
    /// What reloads this server's sites and certificate (on SIGHUP).
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// The store behind the proxy.
    pub fn store(&self) -> &Arc<dyn Store> {
        self.proxy.store()
    }

    /// A token that, when cancelled, starts a graceful shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting, lets in-flight requests finish within the configured deadline, stops
    /// the background workers after their current job, and returns when all is done.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.wait().await;
    }

    /// Waits until the server stops (after its shutdown token is cancelled).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Binds the public listener (and the admin listener when `config.admin` is set) and starts
/// serving `config` in the background. The error names the address that could not be bound.
pub async fn start(config: ServeConfig) -> Result<Running, StartError> {
    let listener = bind(config.listen, "--listen").await?;
    let admin = match config.admin {
        Some(addr) => Some(bind(addr, "--admin").await?),
        None => None,
    };
    let tls = match &config.tls {
        Some(tls) => Some(bind(tls.listen, "--tls-listen").await?),
        None => None,
    };
    let store = config
        .backend
        .build(config.capacity, config.eviction, config.moka_policy);
    launch(listener, admin, tls, config, store)
}

async fn bind(addr: SocketAddr, flag: &str) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("binding {flag} {addr}: {e}")))
}

/// Starts serving on an already bound listener with a given store (the extension point for a
/// store of the library user's own). No admin listener is started: `config.admin` is an address
/// to bind, which only [`start`] does; use [`start_with_admin`] to pass a bound one.
pub fn start_with(
    listener: TcpListener,
    config: ServeConfig,
    store: Arc<dyn Store>,
) -> Result<Running, StartError> {
    start_with_admin(listener, None, config, store)
}

/// [`start_with`], with an already bound admin listener.
pub fn start_with_admin(
    listener: TcpListener,
    admin: Option<TcpListener>,
    config: ServeConfig,
    store: Arc<dyn Store>,
) -> Result<Running, StartError> {
    launch(listener, admin, None, config, store)
}

/// Starts serving on bound listeners: the public one, the admin one and the TLS one (whose
/// certificate `config.tls` names).
fn launch(
    listener: TcpListener,
    admin: Option<TcpListener>,
    tls_listener: Option<TcpListener>,
    config: ServeConfig,
    store: Arc<dyn Store>,
) -> Result<Running, StartError> {
    let addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
    // The recorder first: each site registers its series when it is built.
    let prometheus = match admin {
        Some(_) => match crate::metrics::install_prometheus() {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!(error = %e, "/metrics shows this server's gauges only");
                None
            }
        },
        None => None,
    };
    let site_configs = config.site_configs();
    let sites = Sites::build(&site_configs)?;
    let cert = match &config.tls {
        Some(tls) => Some(ListenerCert::load(
            tls.files.clone(),
            &named_certs(&site_configs),
        )?),
        None => None,
    };
    let tls = match (&cert, tls_listener) {
        (Some(cert), Some(l)) => Some((l, tokio_rustls::TlsAcceptor::from(cert.server_config()?))),
        _ => None,
    };
    let tls_addr = tls.as_ref().and_then(|(l, _)| l.local_addr().ok());
    let (revalidator, workers) =
        Revalidator::start(config.revalidate_workers, config.revalidate_queue);
    // One head limit: the one hyper's read buffer is sized from.
    let mut proxy_config = config.proxy.clone();
    proxy_config.max_head_size = config.max_header_size;
    // The shared tier's tasks stop after the accept loop: the fills that drained with it have
    // queued their writes by then.
    let tier_stop = CancellationToken::new();
    let tier = config
        .shared
        .as_ref()
        .and_then(|c| start_shared_tier(c, tier_stop.clone()));
    let (tier, purges) = match tier {
        Some((tier, purges)) => (Some(tier), Some(purges)),
        None => (None, None),
    };
    let proxy = Proxy::with_sites(Arc::clone(&store), sites, proxy_config, revalidator, tier);
    if let Some(purges) = purges {
        tokio::spawn(apply_purges(proxy.clone(), purges));
    }
    let connections = LiveGauge::new();
    let in_flight = LiveGauge::new();
    let counts = Arc::new(RequestCounts::default());
    let shutdown = CancellationToken::new();

    let admin_stop = CancellationToken::new();
    let mut admin_addr = None;
    let mut admin_task = None;
    if let Some(admin) = admin {
        admin_addr = admin.local_addr().ok();
        let state = Arc::new(AdminState {
            proxy: proxy.clone(),
            counts: Arc::clone(&counts),
            levels: Levels {
                connections: connections.clone(),
                in_flight: in_flight.clone(),
                store,
            },
            capacity: config.capacity,
            draining: shutdown.clone(),
            token: config.admin_token.clone(),
            prometheus,
        });
        admin_task = Some(crate::admin::spawn(admin, state, admin_stop.clone()));
    }

    let shared = Arc::new(Shared {
        proxy: proxy.clone(),
        counts: Arc::clone(&counts),
        in_flight: in_flight.clone(),
        access_log: config.access_log,
        allow_purge_from: config.allow_purge_from.clone(),
    });
    let reloader = Reloader {
        config: Arc::new(config.clone()),
        proxy: proxy.clone(),
        cert,
    };
    let loop_connections = connections.clone();
    let loop_shutdown = shutdown.clone();
    let task = tokio::spawn(async move {
        accept_loop(
            listener,
            tls,
            shared,
            loop_connections,
            &config,
            workers,
            loop_shutdown,
        )
        .await;
        tier_stop.cancel();
        // The admin listener outlives the drain so that /health can say 503 throughout.
        admin_stop.cancel();
        if let Some(t) = admin_task {
            let _ = t.await;
        }
    });
    Ok(Running {
        addr,
        admin_addr,
        tls_addr,
        proxy,
        connections,
        in_flight,
        counts,
        shutdown,
        task,
        reloader,
    })
}

/// Connects (lazily) to the shared tier of `config` and starts its tasks.
fn start_shared_tier(
    config: &SharedConfig,
    stop: CancellationToken,
) -> Option<(Arc<SharedTier>, mpsc::Receiver<PurgeTarget>)> {
    let connect_timeout = config.write_timeout().max(Duration::from_millis(500));
    match RedisTier::new(config.target.clone(), &config.prefix, connect_timeout) {
        Ok(tier) => Some(SharedTier::start(Arc::new(tier), config.clone(), stop)),
        Err(e) => {
            tracing::error!(error = %e, "shared tier not used");
            None
        }
    }
}

/// Applies to the local store the purges other instances announce, one at a time, each on a
/// blocking thread (a prefix purge walks the store).
async fn apply_purges(proxy: Proxy, mut purges: mpsc::Receiver<PurgeTarget>) {
    while let Some(target) = purges.recv().await {
        let p = proxy.clone();
        let what = target.clone();
        let removed = tokio::task::spawn_blocking(move || p.purge_local(&what))
            .await
            .unwrap_or(0);
        tracing::info!(?target, removed, "purge from another instance");
    }
}

/// What every request on the public listener needs, shared by all connections.
struct Shared {
    proxy: Proxy,
    counts: Arc<RequestCounts>,
    in_flight: LiveGauge,
    access_log: Option<LogFormat>,
    allow_purge_from: Vec<IpNet>,
}

/// Accepts a connection on `tls`, or waits forever without one.
async fn accept_tls(
    tls: &Option<(TcpListener, tokio_rustls::TlsAcceptor)>,
) -> io::Result<(TcpStream, SocketAddr)> {
    match tls {
        Some((listener, _)) => listener.accept().await,
        None => std::future::pending().await,
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<(TcpListener, tokio_rustls::TlsAcceptor)>,
    shared: Arc<Shared>,
    connections: LiveGauge,
    config: &ServeConfig,
    workers: Workers,
    shutdown: CancellationToken,
) {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // The header read and keep-alive timeouts are enforced by `ConnWatch`; see the module
        // docs for why hyper's timer is switched off.
        .header_read_timeout(None)
        .keep_alive(!config.keepalive_timeout.is_zero())
        // hyper answers 431 when a request head does not fit in its read buffer, and 414 for a
        // target over 64 KiB that does. The buffer leaves room for such a target beyond the head
        // limit, so that an over-long target gets 414; the proxy answers 414 itself for one
        // over --max-header-size.
        .max_buf_size(config.max_header_size + (128 << 10));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.max_header_size).unwrap_or(u32::MAX));
    let timeouts = Timeouts {
        header_read: config.header_read_timeout,
        keepalive: config.keepalive_timeout,
        send: config.send_timeout,
    };
    let limit = Arc::new(Semaphore::new(config.max_connections));
    // Every connection task is tracked, so that the drain can wait for all of them to end.
    let tracker = tokio_util::task::TaskTracker::new();

    loop {
        // The permit is taken before accepting, so that at the limit new clients wait in the
        // kernel's backlog instead of being accepted and left unserved.
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = Arc::clone(&limit).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // the semaphore is never closed
            },
        };
        let (stream, peer, acceptor) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => (stream, peer, None),
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            accepted = accept_tls(&tls) => match accepted {
                Ok((stream, peer)) => {
                    let acceptor = tls.as_ref().map(|(_, a)| a.clone());
                    (stream, peer, acceptor)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed on the TLS listener");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let connection_guard = connections.enter();
        let watch = Arc::new(ConnWatch::new());
        let io = WatchedIo {
            inner: stream,
            watch: Arc::clone(&watch),
        };
        let builder = builder.clone();
        let shared = Arc::clone(&shared);
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            match acceptor {
                None => {
                    let conn = Connection {
                        shared,
                        watch,
                        peer,
                        over_tls: false,
                    };
                    conn.serve(&builder, io, timeouts, &shutdown).await;
                }
                Some(acceptor) => {
                    // The handshake is bounded like a request head: a client that opens a
                    // connection and sends nothing is dropped after the header read timeout.
                    let handshake = acceptor.accept(io);
                    match tokio::time::timeout(timeouts.header_read, handshake).await {
                        Ok(Ok(tls_stream)) => {
                            let conn = Connection {
                                shared,
                                watch,
                                peer,
                                over_tls: true,
                            };
                            conn.serve(&builder, tls_stream, timeouts, &shutdown).await;
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake not done in time"),
                    }
                }
            }
            drop(connection_guard);
            drop(permit);
        });
    }
    drop(listener);
    drop(tls);
    tracker.close();
    let deadline = config.shutdown_timeout;
    // Each connection task saw the same token: idle connections close at once, busy ones after
    // their current request.
    if tokio::time::timeout(deadline, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            ?deadline,
            open = connections.get(),
            "in-flight requests did not finish in time; exiting without them"
        );
    }
    if tokio::time::timeout(deadline, workers.stop())
        .await
        .is_err()
    {
        tracing::warn!("a background refresh did not finish in time");
    }
}

/// One accepted connection, plain or TLS, and what its requests need.
struct Connection {
    shared: Arc<Shared>,
    watch: Arc<ConnWatch>,
    peer: SocketAddr,
    /// Requests arrive over TLS: they are marked [`OverTls`], and keyed `https://`.
    over_tls: bool,
}

impl Connection {
    /// Serves HTTP/1.1 or HTTP/2 on `io` until the connection ends.
    async fn serve<I>(
        self,
        builder: &hyper_util::server::conn::auto::Builder<TokioExecutor>,
        io: I,
        timeouts: Timeouts,
        shutdown: &CancellationToken,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            shared,
            watch,
            peer,
            over_tls,
        } = self;
        let service = {
            let watch = Arc::clone(&watch);
            service_fn(move |mut req: Request<Incoming>| {
                let shared = Arc::clone(&shared);
                let busy = watch.begin();
                if over_tls {
                    req.extensions_mut().insert(OverTls);
                }
                async move { Ok::<_, Infallible>(serve_request(&shared, busy, peer, req).await) }
            })
        };
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned();
        drive_connection(conn, &watch, timeouts, shutdown, peer).await;
    }
}

/// The two per-connection deadlines.
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    header_read: Duration,
    keepalive: Duration,
    send: Duration,
}

/// Drives one connection to its end, closing it when a deadline of [`ConnWatch`] passes, and
/// gracefully (finish the current request, then close) when the server shuts down.
async fn drive_connection<C>(
    conn: C,
    watch: &ConnWatch,
    timeouts: Timeouts,
    shutdown: &CancellationToken,
    peer: SocketAddr,
) where
    C: std::future::Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>>
        + GracefulConn,
{
    tokio::pin!(conn);
    // One timer and one cancellation future for the connection's life, not one per request,
    // and the timer is rarely moved. It is kept at or before the real deadline: armed at most
    // `floor` (the shortest timeout) ahead, and moved when a phase change brings the deadline
    // before it. A phase that starts after the timer was armed has a deadline at least `floor`
    // after its start, so on a busy keep-alive connection the timer is not touched per
    // request; it fires every `floor` at most, and is re-armed for the deadline then current.
    let floor = [timeouts.header_read, timeouts.keepalive, timeouts.send]
        .into_iter()
        .filter(|d| !d.is_zero())
        .min()
        .unwrap_or(Duration::from_secs(1));
    let sleep = tokio::time::sleep_until(Instant::now());
    tokio::pin!(sleep);
    let cancelled = shutdown.cancelled();
    tokio::pin!(cancelled);
    let mut armed: Option<Instant> = None;
    let mut closing = false;
    loop {
        if let Some((at, _)) = watch.deadline(timeouts, closing) {
            if armed.is_none_or(|a| at < a) {
                sleep.as_mut().reset(at);
                armed = Some(at);
            }
        }
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                }
                return;
            }
            _ = &mut cancelled, if !closing => {
                conn.as_mut().graceful(); closing = true;
            }
            // `notify_one` keeps a permit when no one waits, so a future made here after the
            // change still sees it.
            _ = watch.changed.notified() => {}
            // The phase may have moved since the timer was armed (a request began, bytes
            // moved): act only on a deadline that is still the current one and has passed.
            _ = &mut sleep, if armed.is_some() => {
                armed = None;
                let now = Instant::now();
                match watch.deadline(timeouts, closing) {
                    Some((at, _)) if at > now => {
                        let next = at.min(now + floor);
                        sleep.as_mut().reset(next);
                        armed = Some(next);
                    }
                    Some((_, Expiry::HeadRead)) => {
                        tracing::debug!(%peer, "request head not received in time; closing");
                        return;
                    }
                    Some((_, Expiry::Idle)) => {
                        conn.as_mut().graceful();
                        closing = true;
                    }
                    Some((_, Expiry::Stalled)) => {
                        tracing::debug!(%peer, "no byte moved on a busy connection in time; closing");
                        return;
                    }
                    None => {}
                }
            }
        }
    }
}

/// The one method of hyper-util's connection types the driver needs, so that it can be written
/// once over the connection future.
trait GracefulConn {
    fn graceful(self: Pin<&mut Self>);
}

impl<I, S, E> GracefulConn
    for hyper_util::server::conn::auto::UpgradeableConnection<'static, I, S, E>
where
    S: hyper::service::HttpService<Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: http_body::Body + Send + 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Which deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    HeadRead,
    Idle,
    /// A request is running but no byte was read or written for the send timeout.
    Stalled,
}

/// Where a connection is in its life, for its deadlines.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for (the rest of) a request head since then.
    Head(Instant),
    /// This many requests are being handled (more than one with HTTP/2 or pipelining).
    Busy(usize),
    /// Idle between requests since then.
    Idle(Instant),
}

/// A connection's phase, and whether bytes are moving on it.
#[derive(Debug, Clone, Copy)]
struct State {
    phase: Phase,
    /// When a byte was last read or written, or a request began.
    progress: Instant,
    /// The last write found the socket full: the client is not reading what it was sent. A
    /// response body can be wholly handed to hyper (the request is over) while hyper still
    /// writes it, so this, not the phase, says whether a write is stuck.
    write_blocked: bool,
}

/// A connection's state, changed by its reads and writes ([`WatchedIo`]) and requests
/// ([`BusyGuard`]), and watched by the task driving it.
struct ConnWatch {
    state: Mutex<State>,
    /// Signalled when a deadline may have moved earlier, so the driver re-arms its timer.
    changed: Notify,
}

impl ConnWatch {
    fn new() -> Self {
        // A new connection must send its first request head within the header read timeout.
        let now = Instant::now();
        ConnWatch {
            state: Mutex::new(State {
                phase: Phase::Head(now),
                progress: now,
                write_blocked: false,
            }),
            changed: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The lock guards plain values with no invariant a panic could break.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn deadline(&self, t: Timeouts, closing: bool) -> Option<(Instant, Expiry)> {
        let s = *self.state();
        let stalled = Some((s.progress + t.send, Expiry::Stalled));
        match s.phase {
            Phase::Head(since) => Some((since + t.header_read, Expiry::HeadRead)),
            // A running request must move a byte now and then: waiting on the upstream is
            // bounded by the upstream timeout, which the send timeout exceeds.
            Phase::Busy(_) => stalled,
            Phase::Idle(_) if s.write_blocked => stalled,
            // Once closing, an idle connection is already being shut; no need to wake again.
            Phase::Idle(_) if closing => None,
            Phase::Idle(since) => Some((since + t.keepalive, Expiry::Idle)),
        }
    }

    /// Bytes arrived: an idle connection starts receiving a request head.
    fn on_read(&self) {
        let mut s = self.state();
        s.progress = Instant::now();
        if let Phase::Idle(_) = s.phase {
            s.phase = Phase::Head(s.progress);
            drop(s);
            self.changed.notify_one();
        }
    }

    /// A write went through (`true`), or found the socket full (`false`).
    fn on_write(&self, written: bool) {
        let mut s = self.state();
        if written {
            s.progress = Instant::now();
        }
        // A later deadline, or one the driver finds when its timer fires: no need to wake it.
        s.write_blocked = !written;
    }

    /// A request head was parsed and handed to the service.
    fn begin(self: &Arc<Self>) -> BusyGuard {
        let mut s = self.state();
        s.progress = Instant::now();
        s.phase = match s.phase {
            Phase::Busy(n) => Phase::Busy(n + 1),
            Phase::Head(_) | Phase::Idle(_) => Phase::Busy(1),
        };
        drop(s);
        // The head-read deadline the driver may be sleeping on no longer applies.
        self.changed.notify_one();
        BusyGuard {
            watch: Arc::clone(self),
        }
    }
}

/// Marks its connection busy until the request it belongs to is over (its response body is
/// done or dropped); then the connection is idle again if no other request is running.
struct BusyGuard {
    watch: Arc<ConnWatch>,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        let mut s = self.watch.state();
        let now_idle = match s.phase {
            Phase::Busy(n) if n > 1 => {
                s.phase = Phase::Busy(n - 1);
                false
            }
            _ => {
                s.phase = Phase::Idle(Instant::now());
                true
            }
        };
        drop(s);
        if now_idle {
            self.watch.changed.notify_one();
        }
    }
}

/// The client's socket, telling its [`ConnWatch`] when bytes arrive. Under TLS it wraps the
/// TCP stream, so handshake and record bytes count as progress too.
struct WatchedIo {
    inner: TcpStream,
    watch: Arc<ConnWatch>,
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.watch.on_read();
        }
        polled
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        match polled {
            Poll::Ready(Ok(n)) if n > 0 => self.watch.on_write(true),
            Poll::Pending => self.watch.on_write(false),
            _ => {}
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        match polled {
            Poll::Ready(Ok(n)) if n > 0 => self.watch.on_write(true),
            Poll::Pending => self.watch.on_write(false),
            _ => {}
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What lives exactly as long as one request: its place in the in-flight gauge and its
/// connection's busy mark.
type RequestGuards = (GaugeGuard, BusyGuard);

/// Handles one request: PURGE here, everything else through the proxy; counts it, and hands
/// hyper a body that carries the request's access record and guards to the end of the response.
async fn serve_request(
    shared: &Shared,
    busy: BusyGuard,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<LoggedBody<RequestGuards>> {
    // The guards are held by the record: if this future is dropped (the client left while the
    // proxy waited on the upstream), the record drops with it, and so do they. The target is
    // formatted only when a line will be written: this is on every request's path.
    let target = if shared.access_log.is_some() {
        req.uri().to_string()
    } else {
        String::new()
    };
    let mut record = AccessRecord::start(
        shared.access_log,
        peer,
        &req,
        target,
        (shared.in_flight.enter(), busy),
    );
    let (resp, label) = if req.method().as_str() == "PURGE" {
        (purge(shared, req, peer).await, "purge")
    } else {
        let (resp, site) = shared.proxy.handle_for_site(req, Some(peer)).await;
        let result = resp
            .extensions()
            .get::<CacheResult>()
            .copied()
            .unwrap_or(CacheResult::Error);
        shared.counts.count(result);
        if shared.access_log.is_some() {
            record.site(site.map(|s| Arc::clone(s.name())));
        }
        (resp, result.as_str())
    };
    let upstream = resp.extensions().get::<UpstreamTime>().map(|t| t.0);
    record.respond(resp.status().as_u16(), label, upstream);
    resp.map(|b| LoggedBody::new(b, record))
}

/// `PURGE /path` on the public listener: removes the URL's entries (all its Vary variants) when
/// the client's address is in `--allow-purge-from`, and answers 405 otherwise, as if the method
/// did not exist, so that a scanner learns nothing.
async fn purge(shared: &Shared, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let ip = peer.ip().to_canonical();
    if !shared.allow_purge_from.iter().any(|net| net.contains(&ip)) {
        let mut resp = Response::new(body::full("method not allowed\n"));
        *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        resp.headers_mut().insert(
            ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
        return resp;
    }
    let (parts, _body) = req.into_parts();
    let key = match shared.proxy.key_of(&parts) {
        Ok(key) => key,
        Err(refusal) => return refusal.into_response(),
    };
    let mut report = shared
        .proxy
        .purge(&PurgeTarget::Url(key.as_str().to_string()))
        .await;
    // The URL changed for both listeners: the copy stored under the other scheme goes too.
    let twin = match key.as_str().split_once("://") {
        Some(("http", rest)) => Some(format!("https://{rest}")),
        Some(("https", rest)) => Some(format!("http://{rest}")),
        _ => None,
    };
    if let Some(twin) = twin {
        report.local += shared.proxy.purge(&PurgeTarget::Url(twin)).await.local;
    }
    tracing::info!(%ip, key = key.as_str(), purged = report.local, "PURGE");
    let mut body = serde_json::json!({ "purged": report.local, "key": key.as_str() });
    if let Some(tier) = crate::admin::shared_report(&report) {
        body["shared"] = tier;
    }
    let text = body.to_string() + "\n";
    let mut resp = Response::new(body::full(text));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

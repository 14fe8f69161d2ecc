//! TLS test support: certificates made in the test, a real HTTPS origin, and a TLS client that
//! speaks HTTP/1.1 or HTTP/2 as ALPN decides.
//!
//! Everything here uses rustls with the ring provider passed explicitly, so no test depends on
//! which crypto provider (if any) happens to be installed as the process default. Certificates
//! are generated with rcgen on every run; nothing is read from fixtures, and no certificate
//! outlives the test that made it.

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// How long a client step (TCP connect, TLS handshake, one request and its body) may take
/// before it is reported as an error rather than hanging the test.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The ring provider, passed to every rustls builder here so that no config depends on a
/// process-default provider being installed.
fn ring_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate authority generated for one test, so that tests can exercise real chain
/// verification (trusted, untrusted, wrong name) without shipping key material.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate and its private key, as PEM, ready to hand to a server or write to disk.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The leaf certificate alone.
    pub cert_pem: String,
    /// The leaf's private key (PKCS#8).
    pub key_pem: String,
    /// The issuing CA's certificate; `None` for a self-signed certificate.
    pub ca_pem: Option<String>,
}

impl Issued {
    /// The leaf followed by its issuer, the chain a server presents; just the leaf when
    /// self-signed.
    pub fn chain_pem(&self) -> String {
        match &self.ca_pem {
            Some(ca) => format!("{}{}", self.cert_pem, ca),
            None => self.cert_pem.clone(),
        }
    }
}

impl TestCa {
    /// A fresh CA whose subject common name is `name`, so that two CAs in one test are
    /// distinct issuers.
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().expect("generate CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("self-sign CA");
        TestCa { cert, key }
    }

    /// The CA certificate as PEM, what a client puts in its root store to trust this CA.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate for `names`, signed by this CA. Each name may be a DNS name or an
    /// IP literal (`127.0.0.1` becomes an IP SAN, which is what an IP server name is checked
    /// against).
    pub fn issue(&self, names: &[&str]) -> Issued {
        let key = KeyPair::generate().expect("generate leaf key");
        let params = leaf_params(names);
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign leaf");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            ca_pem: Some(self.cert.pem()),
        }
    }
}

/// Parameters for a server (end-entity) certificate valid for `names`.
fn leaf_params(names: &[&str]) -> CertificateParams {
    let sans: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(sans).expect("leaf params (bad name?)");
    if let Some(first) = names.first() {
        params.distinguished_name.push(DnType::CommonName, *first);
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params
}

/// A server certificate for `names` that no CA vouches for, to test that a verifier refuses
/// it.
pub fn self_signed(names: &[&str]) -> Issued {
    let key = KeyPair::generate().expect("generate key");
    let mut params = leaf_params(names);
    params.use_authority_key_identifier_extension = false;
    let cert = params.self_signed(&key).expect("self-sign leaf");
    Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        ca_pem: None,
    }
}

/// A unique directory under the system temp dir, removed with its contents on drop, for
/// certificate and key files a test hands to the proxy by path.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates the directory; panics if it cannot.
    pub fn new() -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let base = std::env::temp_dir();
        loop {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = base.join(format!(
                "cachet-tls-test-{}-{}-{}",
                std::process::id(),
                n,
                nanos
            ));
            match std::fs::create_dir(&path) {
                Ok(()) => return TempDir { path },
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("create temp dir {}: {e}", path.display()),
            }
        }
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Default for TempDir {
    fn default() -> Self {
        TempDir::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Writes `<stem>.crt` (the chain: leaf then CA) and `<stem>.key` into `dir`, returning their
/// paths in that order, so a test can point the proxy's TLS settings at real files.
pub fn write_files(dir: &Path, stem: &str, issued: &Issued) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{stem}.crt"));
    let key = dir.join(format!("{stem}.key"));
    std::fs::write(&cert, issued.chain_pem())
        .unwrap_or_else(|e| panic!("write {}: {e}", cert.display()));
    std::fs::write(&key, &issued.key_pem)
        .unwrap_or_else(|e| panic!("write {}: {e}", key.display()));
    (cert, key)
}

/// A rustls server config presenting `issued`'s chain, with ALPN `http/1.1` only.
fn server_config(issued: &Issued) -> ServerConfig {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(issued.chain_pem().as_bytes())
            .collect::<Result<_, _>>()
            .expect("parse certificate chain");
    let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).expect("parse key");
    let mut config = ServerConfig::builder_with_provider(ring_provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("certificate and key match");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// What the origin has seen, shared between its tasks and the test.
#[derive(Default)]
struct OriginState {
    hits: AtomicUsize,
    handshakes: AtomicUsize,
    handshake_failures: AtomicUsize,
    last_host: Mutex<Option<String>>,
    last_sni: Mutex<Option<String>>,
}

/// A real HTTPS origin on a loopback port, so tests can check that the proxy verifies,
/// names (SNI, Host) and reuses its upstream TLS connections as it should. Every response is
/// a cacheable 200 with the given body and `x-origin-path` echoing the request path. Stops
/// when dropped.
pub struct HttpsOrigin {
    /// Where it listens (127.0.0.1, an ephemeral port).
    pub addr: SocketAddr,
    state: Arc<OriginState>,
    task: JoinHandle<()>,
}

impl HttpsOrigin {
    /// Binds 127.0.0.1:0 and starts serving with `issued`'s chain. Must be called inside a
    /// tokio runtime.
    pub fn start(issued: &Issued, body: &'static str) -> HttpsOrigin {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind origin");
        std_listener
            .set_nonblocking(true)
            .expect("set origin listener non-blocking");
        let addr = std_listener.local_addr().expect("origin addr");
        let listener =
            tokio::net::TcpListener::from_std(std_listener).expect("register origin listener");
        let acceptor = TlsAcceptor::from(Arc::new(server_config(issued)));
        let state = Arc::new(OriginState::default());
        let task_state = state.clone();
        let task = tokio::spawn(async move {
            // Connections live in this set, so aborting the accept task ends them too.
            let mut connections = JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                while connections.try_join_next().is_some() {}
                let acceptor = acceptor.clone();
                let state = task_state.clone();
                connections.spawn(serve_connection(acceptor, tcp, state, body));
            }
        });
        HttpsOrigin { addr, state, task }
    }

    /// Requests served so far.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// TLS handshakes completed so far (one per upstream connection the proxy opened).
    pub fn handshakes(&self) -> usize {
        self.state.handshakes.load(Ordering::SeqCst)
    }

    /// TLS handshakes that failed, e.g. because the client refused the certificate.
    pub fn handshake_failures(&self) -> usize {
        self.state.handshake_failures.load(Ordering::SeqCst)
    }

    /// The `Host` header of the last request served, if it had one.
    pub fn last_host(&self) -> Option<String> {
        self.state.last_host.lock().unwrap().clone()
    }

    /// The SNI name sent on the connection that carried the last request served; `None` if
    /// no request was served yet or that client sent no SNI (as for an IP server name).
    pub fn last_sni(&self) -> Option<String> {
        self.state.last_sni.lock().unwrap().clone()
    }
}

impl Drop for HttpsOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs the TLS handshake on one accepted connection, then serves HTTP on it.
async fn serve_connection(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    state: Arc<OriginState>,
    body: &'static str,
) {
    let tls = match acceptor.accept(tcp).await {
        Ok(tls) => tls,
        Err(_) => {
            state.handshake_failures.fetch_add(1, Ordering::SeqCst);
            return;
        }
    };
    state.handshakes.fetch_add(1, Ordering::SeqCst);
    let sni = tls.get_ref().1.server_name().map(str::to_owned);
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let state = state.clone();
        let sni = sni.clone();
        async move {
            let host = req
                .headers()
                .get(hyper::header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            *state.last_host.lock().unwrap() = host;
            *state.last_sni.lock().unwrap() = sni;
            state.hits.fetch_add(1, Ordering::SeqCst);
            let response = Response::builder()
                .status(200)
                .header(hyper::header::CACHE_CONTROL, "public, max-age=60")
                .header(hyper::header::CONTENT_TYPE, "text/plain")
                .header("x-origin-path", req.uri().path())
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .expect("valid response");
            Ok::<_, Infallible>(response)
        }
    });
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(tls), service)
        .await;
}

/// One response as a test sees it, with the protocol that carried it.
#[derive(Debug)]
pub struct TlsResponse {
    /// The ALPN protocol the server chose, if any.
    pub alpn: Option<Vec<u8>>,
    /// The HTTP version of the response (`HTTP_2` or `HTTP_11`).
    pub version: http::Version,
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl TlsResponse {
    /// A header's value as text, for short assertions.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as text (lossy), for short assertions.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The HTTP sender over an established TLS connection.
enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

/// A TLS client holding one connection open, so a test can send several requests on it (an
/// h2 miss then a hit on the same connection) and see what the proxy's listener negotiates.
/// Trusts only the CA it was given. The connection closes when this is dropped.
pub struct TlsClient {
    addr: SocketAddr,
    alpn: Option<Vec<u8>>,
    sender: Sender,
    conn: JoinHandle<()>,
}

impl TlsClient {
    /// Connects to `addr`, verifies the server against `ca_pem` alone under `server_name` (a
    /// DNS name, sent as SNI, or an IP literal), offers `alpn`, and starts HTTP/2 if the
    /// server chose `h2`, else HTTP/1.1. A refused certificate comes back as an `Err` naming
    /// rustls's reason (e.g. `UnknownIssuer`, `NotValidForName`).
    pub async fn connect(
        addr: SocketAddr,
        ca_pem: &str,
        server_name: &str,
        alpn: &[&[u8]],
    ) -> Result<TlsClient, String> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            let cert = cert.map_err(|e| format!("parse CA PEM: {e:?}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("add CA to root store: {e}"))?;
        }
        if roots.is_empty() {
            return Err("no CA certificate in the given PEM".to_string());
        }
        let mut config = ClientConfig::builder_with_provider(ring_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("client protocol versions: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|e| format!("invalid server name {server_name:?}: {e}"))?;

        let tcp = tokio::time::timeout(CLIENT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("TCP connect to {addr}: timed out"))?
            .map_err(|e| format!("TCP connect to {addr}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let connector = TlsConnector::from(Arc::new(config));
        let tls = tokio::time::timeout(CLIENT_TIMEOUT, connector.connect(name, tcp))
            .await
            .map_err(|_| format!("TLS handshake with {addr} as {server_name:?}: timed out"))?
            .map_err(|e| format!("TLS handshake with {addr} as {server_name:?}: {e}"))?;
        let negotiated = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let io = TokioIo::new(tls);

        let (sender, conn) = if negotiated.as_deref() == Some(b"h2".as_slice()) {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| format!("HTTP/2 handshake with {addr}: {e}"))?;
            let task = tokio::spawn(async move {
                let _ = conn.await;
            });
            (Sender::H2(sender), task)
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| format!("HTTP/1.1 handshake with {addr}: {e}"))?;
            let task = tokio::spawn(async move {
                let _ = conn.await;
            });
            (Sender::H1(sender), task)
        };
        Ok(TlsClient {
            addr,
            alpn: negotiated,
            sender,
            conn,
        })
    }

    /// The ALPN protocol the server chose, if any.
    pub fn alpn(&self) -> Option<&[u8]> {
        self.alpn.as_deref()
    }

    /// GET `path` on this connection. Over h2 the URI is `https://{host}{path}`, so
    /// `:authority` is `host`; over HTTP/1.1 it is the origin-form `path` with `Host: host`.
    pub async fn get(&mut self, path: &str, host: &str) -> Result<TlsResponse, String> {
        let addr = self.addr;
        let alpn = self.alpn.clone();
        let exchange = async {
            let response = match &mut self.sender {
                Sender::H2(sender) => {
                    let request = Request::get(format!("https://{host}{path}"))
                        .body(Empty::<Bytes>::new())
                        .map_err(|e| format!("build request: {e}"))?;
                    sender
                        .ready()
                        .await
                        .map_err(|e| format!("h2 connection to {addr} not ready: {e}"))?;
                    sender
                        .send_request(request)
                        .await
                        .map_err(|e| format!("h2 request to {addr}: {e}"))?
                }
                Sender::H1(sender) => {
                    let request = Request::get(path)
                        .header(hyper::header::HOST, host)
                        .body(Empty::<Bytes>::new())
                        .map_err(|e| format!("build request: {e}"))?;
                    sender
                        .ready()
                        .await
                        .map_err(|e| format!("HTTP/1.1 connection to {addr} not ready: {e}"))?;
                    sender
                        .send_request(request)
                        .await
                        .map_err(|e| format!("HTTP/1.1 request to {addr}: {e}"))?
                }
            };
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| format!("read response body from {addr}: {e}"))?
                .to_bytes();
            Ok(TlsResponse {
                alpn,
                version: parts.version,
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(CLIENT_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("GET {path} from {addr}: timed out"))?
    }
}

impl Drop for TlsClient {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

/// One GET on a fresh connection (see [`TlsClient::connect`] and [`TlsClient::get`]), for
/// tests that need a single exchange.
pub async fn tls_get(
    addr: SocketAddr,
    ca_pem: &str,
    server_name: &str,
    path: &str,
    host: &str,
    alpn: &[&[u8]],
) -> Result<TlsResponse, String> {
    let mut client = TlsClient::connect(addr, ca_pem, server_name, alpn).await?;
    client.get(path, host).await
}

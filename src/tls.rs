//! TLS on both sides, with rustls and its ring provider: the client configuration for `https://`
//! upstreams (system roots or a given CA file; verification off only by an explicitly named
//! setting), and the server side of `--tls-listen`, whose certificate can be replaced while
//! connections are served.
//!
//! ring and not aws-lc-rs: ring builds with a C compiler alone, so the Docker build stage and CI
//! need no cmake or nasm, and both providers offer the same protocol versions and suites here.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

/// Why TLS material could not be loaded; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read or holds no PEM item of the kind wanted.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The certificate and the key do not belong together, or rustls refused them.
    #[error("{cert} with {key}: {reason}")]
    Pair {
        /// The certificate chain file.
        cert: PathBuf,
        /// The private key file.
        key: PathBuf,
        /// rustls's reason.
        reason: String,
    },
    /// No root certificate to verify `https://` upstreams with.
    #[error("no system root certificates found for https upstreams: install the ca-certificates package, or give upstream_ca")]
    NoRoots,
    /// rustls refused the configuration itself.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The crypto provider every configuration of ours is built with: explicit, so that nothing
/// depends on a process-wide default being installed.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM file; an error when there is none.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |reason: String| TlsError::File {
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(format!("cannot read certificates: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE block in the file".into()));
    }
    Ok(certs)
}

/// The first private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        path: path.to_path_buf(),
        reason: format!("no usable private key: {e}"),
    })
}

/// How `https://` upstream servers are verified.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamTls {
    /// Trust only the certificates in this PEM file, instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate (`--upstream-insecure-skip-tls-verify`): the connection is
    /// encrypted but not authenticated. Off unless named.
    pub insecure_skip_verify: bool,
}

/// The client configuration for upstream connections: HTTP/1.1 only (no ALPN), verified
/// against `tls.ca_file` or the system roots. `needs_roots` is false when no server of the site
/// is `https://`, so a plain-HTTP site does not require root certificates on the host.
pub fn client_config(tls: &UpstreamTls, needs_roots: bool) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?;
    if tls.insecure_skip_verify {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth());
    }
    let mut roots = RootCertStore::empty();
    match &tls.ca_file {
        Some(path) => {
            for cert in read_certs(path)? {
                roots.add(cert).map_err(|e| TlsError::File {
                    path: path.clone(),
                    reason: format!("not a usable CA certificate: {e}"),
                })?;
            }
        }
        None if needs_roots => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(TlsError::NoRoots);
            }
        }
        None => {}
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// Accepts any server certificate but still checks the handshake's signatures, for
/// `--upstream-insecure-skip-tls-verify` only.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Where the TLS listener's certificate chain and key are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

impl CertFiles {
    /// Reads and checks the pair: both parse, and the key is the certificate's.
    pub fn load(&self) -> Result<Arc<CertifiedKey>, TlsError> {
        let chain = read_certs(&self.cert)?;
        let key = read_key(&self.key)?;
        CertifiedKey::from_der(chain, key, &provider())
            .map(Arc::new)
            .map_err(|e| TlsError::Pair {
                cert: self.cert.clone(),
                key: self.key.clone(),
                reason: e.to_string(),
            })
    }
}

/// The certificates a TLS listener offers: one per site that names its own (`tls_cert` in a
/// `[[site]]`), chosen by the client's SNI like the site itself (exact name, then the longest
/// `*.` wildcard), and the listener's own for every other name and for clients that send none.
#[derive(Debug)]
pub struct CertSet {
    default: Arc<CertifiedKey>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` as (`.example.com`, certificate), longest suffix first.
    wildcards: Vec<(String, Arc<CertifiedKey>)>,
}

impl CertSet {
    /// Loads the listener's pair and each site's; the error names the file at fault.
    pub fn load(
        default: &CertFiles,
        named: &[(Vec<String>, CertFiles)],
    ) -> Result<CertSet, TlsError> {
        let mut exact = HashMap::new();
        let mut wildcards = Vec::new();
        for (hosts, files) in named {
            let cert = files.load()?;
            for host in hosts {
                let host = host.to_ascii_lowercase();
                match host.strip_prefix('*') {
                    Some(suffix) => wildcards.push((suffix.to_string(), Arc::clone(&cert))),
                    None => {
                        exact.insert(host, Arc::clone(&cert));
                    }
                }
            }
        }
        wildcards.sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        Ok(CertSet {
            default: default.load()?,
            exact,
            wildcards,
        })
    }

    /// The certificate for a handshake naming `sni`.
    pub fn pick(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = sni.map(|n| n.trim_end_matches('.').to_ascii_lowercase()) else {
            return Arc::clone(&self.default);
        };
        if let Some(cert) = self.exact.get(&name) {
            return Arc::clone(cert);
        }
        self.wildcards
            .iter()
            .find(|(suffix, _)| name.len() > suffix.len() && name.ends_with(suffix.as_str()))
            .map_or_else(|| Arc::clone(&self.default), |(_, c)| Arc::clone(c))
    }
}

/// The listener's certificates, replaceable while connections are served: a handshake takes the
/// current set (a read lock and an `Arc` clone), and a reload swaps in a new one only when every
/// file of it loads and checks, so a bad file never takes the listener down.
#[derive(Debug)]
pub struct ListenerCert {
    files: CertFiles,
    // A std lock: held for a pointer copy, never across I/O.
    current: RwLock<Arc<CertSet>>,
}

impl ListenerCert {
    /// Loads the listener's pair and the sites' (`named`: each site's host names and files).
    pub fn load(
        files: CertFiles,
        named: &[(Vec<String>, CertFiles)],
    ) -> Result<Arc<Self>, TlsError> {
        let current = CertSet::load(&files, named)?;
        Ok(Arc::new(ListenerCert {
            files,
            current: RwLock::new(Arc::new(current)),
        }))
    }

    /// Reads every file again (the listener's and those `named`), without using them yet.
    pub fn prepare(&self, named: &[(Vec<String>, CertFiles)]) -> Result<CertSet, TlsError> {
        CertSet::load(&self.files, named)
    }

    /// Uses `set` for new handshakes; connections already open keep theirs.
    pub fn install(&self, set: CertSet) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
    }

    /// [`ListenerCert::prepare`] then [`ListenerCert::install`]; on an error the certificates
    /// in use are kept.
    pub fn reload(&self, named: &[(Vec<String>, CertFiles)]) -> Result<(), TlsError> {
        let set = self.prepare(named)?;
        self.install(set);
        Ok(())
    }

    /// The certificate a handshake naming `sni` gets now.
    pub fn current(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        let set = Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()));
        set.pick(sni)
    }

    /// The server configuration of the TLS listener: these certificates, ALPN `h2` then
    /// `http/1.1`.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for ListenerCert {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current(client_hello.server_name()))
    }
}

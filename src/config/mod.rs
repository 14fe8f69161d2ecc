//! Typed, validated configuration for `cachet serve`.
//!
//! Every flag also reads an environment variable (`CACHET_*`). Values are parsed into typed
//! values once, at start-up, by clap value parsers, so a bad value is reported before anything is
//! bound, under the name the operator gave it: the flag, the variable (`CACHET_CAPACITY=abc`) or
//! the config file's key and line. A `CACHET_*` variable that no flag reads is refused too, with
//! the closest known name ([`unknown_env_vars`]).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, Command};
use http::Uri;
use ipnet::IpNet;

use crate::policy::{Heuristics, StoreRules};
use crate::proxy::ProxyConfig;
use crate::shared::{RedisTarget, SharedConfig};
use crate::site::SiteConfig;
use crate::store::{Backend, Eviction, MokaPolicy};
use crate::tls::{CertFiles, UpstreamTls};
use crate::units::{parse_duration, parse_size_within};
use crate::upstream::UpstreamConfig;

pub mod sites;

/// Flags of `cachet serve`.
///
/// Every flag but `--config` also reads an environment variable and a key of the configuration
/// file (the flag's name with `_` for `-`). Precedence: flag, then environment, then file, then the
/// default shown in `--help`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// A TOML file with the same settings as the flags (see cachet.example.toml).
    #[arg(long, env = "CACHET_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to accept client connections on: IP:PORT, or HOST:PORT (localhost:8080), whose
    /// host name is resolved once at start-up and the first address it resolves to is used.
    #[arg(long, env = "CACHET_LISTEN", default_value = "127.0.0.1:8080", value_parser = parse_addr, value_name = "ADDR")]
    pub listen: SocketAddr,

    /// The origin to forward to, as an http:// or https:// URL (e.g. http://127.0.0.1:9000).
    /// Required, here, in CACHET_UPSTREAM or in the config file, unless the file declares
    /// `[[site]]` tables (each with its own upstream).
    #[arg(long, env = "CACHET_UPSTREAM", value_parser = parse_upstream, value_name = "URL")]
    pub upstream: Option<Uri>,

    /// The Host header sent to the upstream instead of the request's own (for an origin that
    /// answers to one name only). Entries are still keyed by the request's host.
    #[arg(long, env = "CACHET_UPSTREAM_HOST", value_parser = parse_host_header, value_name = "HOST")]
    pub upstream_host: Option<String>,

    /// Verify https:// upstreams against the certificates in this PEM file instead of the
    /// system's roots.
    #[arg(
        long,
        env = "CACHET_UPSTREAM_CA",
        value_name = "FILE",
        help_heading = "TLS"
    )]
    pub upstream_ca: Option<PathBuf>,

    /// Do not verify the certificates of https:// upstreams (encrypted, not authenticated).
    /// Only for testing against an origin with a self-made certificate.
    #[arg(
        long,
        env = "CACHET_UPSTREAM_INSECURE_SKIP_TLS_VERIFY",
        help_heading = "TLS"
    )]
    pub upstream_insecure_skip_tls_verify: bool,

    /// Address of a TLS listener (HTTPS, with ALPN h2 and http/1.1) beside --listen; needs
    /// --tls-cert and --tls-key. Off when not given.
    #[arg(long, env = "CACHET_TLS_LISTEN", value_parser = parse_addr, value_name = "ADDR", help_heading = "TLS")]
    pub tls_listen: Option<SocketAddr>,

    /// PEM certificate chain (leaf first) of the TLS listener; re-read on SIGHUP.
    #[arg(
        long,
        env = "CACHET_TLS_CERT",
        value_name = "FILE",
        help_heading = "TLS"
    )]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of the TLS listener; re-read on SIGHUP.
    #[arg(
        long,
        env = "CACHET_TLS_KEY",
        value_name = "FILE",
        help_heading = "TLS"
    )]
    pub tls_key: Option<PathBuf>,

    /// Store backend: rwlock (RwLock<HashMap>, CLOCK), sharded (dashmap, CLOCK per shard) or
    /// moka (W-TinyLFU).
    #[arg(
        long,
        env = "CACHET_BACKEND",
        default_value = "moka",
        help_heading = "Cache"
    )]
    pub backend: Backend,

    /// Eviction policy of the rwlock and sharded backends: adaptive (S3-FIFO with an adaptive
    /// small queue) or clock.
    #[arg(
        long,
        env = "CACHET_EVICTION",
        default_value = "adaptive",
        help_heading = "Cache"
    )]
    pub eviction: Eviction,

    /// Eviction policy of the moka backend: tinylfu or lru.
    #[arg(
        long,
        env = "CACHET_MOKA_POLICY",
        default_value = "tinylfu",
        help_heading = "Cache"
    )]
    pub moka_policy: MokaPolicy,

    /// Most bytes the store holds (keys, headers and bodies), e.g. 64MiB, 1GiB. At least 1MiB; a
    /// number without a unit is bytes.
    #[arg(long, env = "CACHET_CAPACITY", default_value = "64MiB", value_parser = parse_capacity, value_name = "SIZE", help_heading = "Cache")]
    pub capacity: u64,

    /// Responses larger than this are streamed through and not stored. At least 1KiB; a number
    /// without a unit is bytes.
    #[arg(long, env = "CACHET_MAX_OBJECT_SIZE", default_value = "8MiB", value_parser = parse_max_object_size, value_name = "SIZE", help_heading = "Cache")]
    pub max_object_size: u64,

    /// How long a request waits for another's in-flight fetch of the same key before fetching
    /// for itself.
    #[arg(long, env = "CACHET_COALESCE_TIMEOUT", default_value = "10s", value_parser = parse_duration_arg, help_heading = "Cache")]
    pub coalesce_timeout: Duration,

    /// Upper bound on a heuristic freshness lifetime (10% of the time since Last-Modified).
    #[arg(long, env = "CACHET_HEURISTIC_CAP", default_value = "1d", value_parser = parse_duration_arg, help_heading = "Cache")]
    pub heuristic_cap: Duration,

    /// Store responses that carry Set-Cookie (off: sharing one user's cookie is a leak).
    #[arg(long, env = "CACHET_ALLOW_SET_COOKIE", help_heading = "Cache")]
    pub allow_set_cookie: bool,

    /// When the upstream fails (no connection, timeout, 5xx), serve a response up to this long
    /// past its freshness, for responses that give no stale-if-error of their own; never past
    /// must-revalidate, proxy-revalidate, s-maxage or no-cache. 0s turns it off.
    #[arg(long, env = "CACHET_STALE_IF_ERROR", default_value = "0s", value_parser = parse_duration_arg, help_heading = "Cache")]
    pub stale_if_error: Duration,

    /// Workers refreshing stale-while-revalidate entries in the background.
    #[arg(
        long,
        env = "CACHET_REVALIDATE_WORKERS",
        default_value_t = 4,
        help_heading = "Cache"
    )]
    pub revalidate_workers: usize,

    /// Background refreshes queued at most; more are dropped.
    #[arg(
        long,
        env = "CACHET_REVALIDATE_QUEUE",
        default_value_t = 256,
        help_heading = "Cache"
    )]
    pub revalidate_queue: usize,

    /// Time allowed to connect to the upstream (502 when it cannot, 504 when it times out).
    #[arg(long, env = "CACHET_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_duration_arg, help_heading = "Limits and timeouts")]
    pub connect_timeout: Duration,

    /// Time allowed for the upstream's response headers (504 after).
    #[arg(long, env = "CACHET_UPSTREAM_TIMEOUT", default_value = "30s", value_parser = parse_duration_arg, help_heading = "Limits and timeouts")]
    pub upstream_timeout: Duration,

    /// Upstream exchanges in flight at once (fills and pass-throughs; a fill whose client left
    /// still counts until it ends). Requests past it wait up to --upstream-queue-timeout, then
    /// get 503.
    #[arg(long, env = "CACHET_UPSTREAM_MAX_CONCURRENCY", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..), help_heading = "Limits and timeouts")]
    pub upstream_max_concurrency: u32,

    /// How long a request waits for an upstream exchange slot before it is answered 503.
    #[arg(long, env = "CACHET_UPSTREAM_QUEUE_TIMEOUT", default_value = "5s", value_parser = parse_duration_arg, help_heading = "Limits and timeouts")]
    pub upstream_queue_timeout: Duration,

    /// How long an upstream server that failed a connection is skipped (when its site has
    /// another) before it is tried again.
    #[arg(long, env = "CACHET_UPSTREAM_FAIL_TIMEOUT", default_value = "10s", value_parser = parse_duration_arg, help_heading = "Limits and timeouts")]
    pub upstream_fail_timeout: Duration,

    /// Time a client has to send its request headers, from the connection's start or the first
    /// byte of a request (against slowloris); the connection is closed after it.
    #[arg(long, env = "CACHET_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration_arg, help_heading = "Limits and timeouts")]
    pub header_read_timeout: Duration,

    /// How long an idle keep-alive connection is kept open between requests (0 turns keep-alive
    /// off).
    #[arg(long, env = "CACHET_KEEPALIVE_TIMEOUT", default_value = "60s", value_parser = parse_duration_arg, help_heading = "Limits and timeouts")]
    pub keepalive_timeout: Duration,

    /// How long a request may go without a byte moving on its connection (read or written)
    /// before the connection is closed: a client that stops reading its response. Must be longer
    /// than --upstream-timeout, which a response may spend waiting on the upstream.
    #[arg(long, env = "CACHET_SEND_TIMEOUT", default_value = "60s", value_parser = parse_duration_arg, help_heading = "Limits and timeouts")]
    pub send_timeout: Duration,

    /// Largest request head (request line and headers) accepted; larger ones get 431. At least
    /// 8KiB and less than 4GiB; a number without a unit is bytes.
    #[arg(long, env = "CACHET_MAX_HEADER_SIZE", default_value = "64KiB", value_parser = parse_max_header_size, value_name = "SIZE", help_heading = "Limits and timeouts")]
    pub max_header_size: u64,

    /// Client connections open at once; further clients wait in the listen backlog until one
    /// closes.
    #[arg(
        long,
        env = "CACHET_MAX_CONNECTIONS",
        default_value_t = 10_000,
        help_heading = "Limits and timeouts"
    )]
    pub max_connections: usize,

    /// On SIGTERM or Ctrl-C, how long in-flight requests may take to finish.
    #[arg(long, env = "CACHET_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration_arg, help_heading = "Limits and timeouts")]
    pub shutdown_timeout: Duration,

    /// A cache shared by several instances: redis://HOST:PORT[/DB] (Redis or Valkey) or
    /// redis+cluster://HOST:PORT,HOST:PORT,... (Redis Cluster seed nodes). Misses are looked up
    /// there before the upstream, fetches written there, purges announced through it. Off when
    /// not given.
    #[arg(long, env = "CACHET_SHARED", value_name = "URL", value_parser = parse_shared, help_heading = "Shared tier")]
    pub shared: Option<RedisTarget>,

    /// Prefix of every key and of the event channel in the shared tier, so several fleets can
    /// use one Redis.
    #[arg(
        long,
        env = "CACHET_SHARED_PREFIX",
        default_value = "cachet:",
        value_name = "PREFIX",
        help_heading = "Shared tier"
    )]
    pub shared_prefix: String,

    /// The longest a shared-tier lookup may take; past it the request goes on to the upstream
    /// as if the tier had missed. The fill lock, also on the client's path, gets twice this;
    /// writes and events, off it, 20 times (at least 100ms).
    #[arg(long, env = "CACHET_SHARED_TIMEOUT", default_value = "5ms", value_parser = parse_duration_arg, help_heading = "Shared tier")]
    pub shared_timeout: Duration,

    /// Responses with larger bodies are kept in the local store only.
    #[arg(long, env = "CACHET_SHARED_MAX_OBJECT_SIZE", default_value = "1MiB", value_parser = parse_max_object_size, value_name = "SIZE", help_heading = "Shared tier")]
    pub shared_max_object_size: u64,

    /// After 3 failed calls in a row the shared tier is skipped, and probed this often until
    /// it answers; faults are logged at most this often.
    #[arg(long, env = "CACHET_SHARED_PROBE_INTERVAL", default_value = "1s", value_parser = parse_duration_arg, help_heading = "Shared tier")]
    pub shared_probe_interval: Duration,

    /// Address of the admin listener (/metrics, /health, /stats, /purge), e.g. 127.0.0.1:9091;
    /// a host name is resolved as for --listen. Off when not given.
    #[arg(
        long,
        env = "CACHET_ADMIN",
        value_name = "ADDR",
        value_parser = parse_addr,
        help_heading = "Admin"
    )]
    pub admin: Option<SocketAddr>,

    /// Require `Authorization: Bearer TOKEN` on the admin API (all but /health).
    #[arg(
        long,
        env = "CACHET_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true,
        help_heading = "Admin"
    )]
    pub admin_token: Option<String>,

    /// Client addresses allowed to send PURGE to the public listener, as a comma-separated list
    /// of CIDR blocks or addresses (e.g. 127.0.0.1,10.0.0.0/8). Others get 405.
    #[arg(long, env = "CACHET_ALLOW_PURGE_FROM", value_name = "CIDRS", value_delimiter = ',', value_parser = parse_net, help_heading = "Admin")]
    pub allow_purge_from: Vec<IpNet>,

    /// Format of the access log and of the diagnostic log: plain or json.
    #[arg(
        long,
        env = "CACHET_LOG_FORMAT",
        default_value = "plain",
        help_heading = "Logging"
    )]
    pub log_format: LogFormat,

    /// Access log (one line per request) to stdout, or off. Diagnostics go to stderr, filtered
    /// by RUST_LOG.
    #[arg(
        long,
        env = "CACHET_ACCESS_LOG",
        default_value = "stdout",
        help_heading = "Logging"
    )]
    pub access_log: AccessLogTarget,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Plain,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Where the access log goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AccessLogTarget {
    /// Standard output, one line per request.
    Stdout,
    /// Not written.
    Off,
}

/// Parses one entry of `--allow-purge-from`: a CIDR block, or a single address (a /32 or /128).
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let t = s.trim();
    if let Ok(net) = t.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    t.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
        format!("invalid address or CIDR block {s:?}: expected e.g. 10.0.0.0/8 or 127.0.0.1")
    })
}

/// The least `--capacity`: every entry is charged its key, its headers and
/// [`ENTRY_OVERHEAD`](crate::store::ENTRY_OVERHEAD) bytes, so less than this holds a few hundred
/// small responses at most. Varnish refuses a `malloc` store under 1MiB for the same reason.
pub const MIN_CAPACITY: u64 = 1 << 20;

/// The least `--max-object-size`: below it almost no response could be stored.
pub const MIN_OBJECT_SIZE: u64 = 1 << 10;

fn parse_capacity(s: &str) -> Result<u64, String> {
    parse_size_within(s, MIN_CAPACITY, None).map_err(|e| e.to_string())
}

fn parse_max_object_size(s: &str) -> Result<u64, String> {
    parse_size_within(s, MIN_OBJECT_SIZE, None).map_err(|e| e.to_string())
}

fn parse_max_header_size(s: &str) -> Result<u64, String> {
    parse_size_within(s, MIN_HEADER_SIZE, Some(1 << 32)).map_err(|e| e.to_string())
}

/// Parses a listen address: an IP address and port (`127.0.0.1:8080`, `[::1]:8080`), or a host
/// name and port (`localhost:8080`), resolved now; the first address it resolves to is used.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    let t = s.trim();
    if let Ok(addr) = t.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let expected = "expected IP:PORT or HOST:PORT, e.g. 127.0.0.1:8080, [::1]:8080, localhost:8080";
    let Some((host, port)) = t.rsplit_once(':') else {
        return Err(format!("invalid address {s:?}: no port; {expected}"));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!("invalid address {s:?}: {expected}"));
    }
    match t.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("cannot resolve {s:?}: the name has no address")),
        Err(e) => Err(format!("cannot resolve {s:?}: {e}")),
    }
}

fn parse_shared(s: &str) -> Result<RedisTarget, String> {
    RedisTarget::parse(s)
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

/// Checks a `Host` to send upstream: `host[:port]`.
pub fn parse_host_header(s: &str) -> Result<String, String> {
    crate::policy::authority::Authority::parse(s.trim(), "http")
        .map(|a| a.as_str().to_string())
        .map_err(|e| format!("invalid upstream host {s:?}: {e}"))
}

/// Checks an upstream URL: absolute, `http` or `https`, with a host.
pub fn parse_upstream(s: &str) -> Result<Uri, String> {
    let uri: Uri = s
        .trim()
        .parse()
        .map_err(|e| format!("invalid upstream URL {s:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => {
            return Err(format!(
                "invalid upstream URL {s:?}: expected http://host[:port] or https://host[:port]"
            ))
        }
    }
    if uri.query().is_some() {
        return Err(format!(
            "invalid upstream URL {s:?}: a query is not allowed"
        ));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("invalid upstream URL {s:?}: no host"));
    }
    Ok(uri)
}

/// Everything `serve` needs, validated.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Client listener address.
    pub listen: SocketAddr,
    /// Upstream client settings.
    pub upstream: UpstreamConfig,
    /// Store backend.
    pub backend: Backend,
    /// The eviction policy of rwlock and sharded.
    pub eviction: Eviction,
    /// moka's eviction policy.
    pub moka_policy: MokaPolicy,
    /// Store capacity in bytes.
    pub capacity: u64,
    /// Request-path settings.
    pub proxy: ProxyConfig,
    /// Client header read timeout.
    pub header_read_timeout: Duration,
    /// Idle time allowed between requests on a keep-alive connection; zero turns keep-alive off.
    pub keepalive_timeout: Duration,
    /// Time a request may go without a byte read or written on its connection.
    pub send_timeout: Duration,
    /// Largest request head accepted, in bytes (at least [`MIN_HEADER_SIZE`]).
    pub max_header_size: usize,
    /// Client connections served at once.
    pub max_connections: usize,
    /// Background refresh workers.
    pub revalidate_workers: usize,
    /// Background refresh queue length.
    pub revalidate_queue: usize,
    /// Grace period for in-flight requests at shutdown.
    pub shutdown_timeout: Duration,
    /// Admin listener address; no admin listener when `None`.
    pub admin: Option<SocketAddr>,
    /// Bearer token the admin API requires, when set.
    pub admin_token: Option<String>,
    /// Clients allowed to send PURGE to the public listener.
    pub allow_purge_from: Vec<IpNet>,
    /// Access log format, or `None` for no access log.
    pub access_log: Option<LogFormat>,
    /// The shared tier, or `None` for none.
    pub shared: Option<SharedConfig>,
    /// The sites the config file declares; none means one site, the default, for
    /// [`ServeConfig::upstream`].
    pub sites: Vec<SiteConfig>,
    /// The TLS listener, or `None` for none.
    pub tls: Option<TlsListen>,
    /// The config file, re-read on reload.
    pub config_file: Option<PathBuf>,
}

/// The TLS listener's address and certificate files.
#[derive(Debug, Clone)]
pub struct TlsListen {
    /// Where it accepts.
    pub listen: SocketAddr,
    /// Its certificate chain and key.
    pub files: CertFiles,
}

impl ServeConfig {
    /// The sites to serve: those declared, or the one `--upstream` stands for.
    pub fn site_configs(&self) -> Vec<SiteConfig> {
        if !self.sites.is_empty() {
            return self.sites.clone();
        }
        vec![SiteConfig {
            name: "default".into(),
            hosts: Vec::new(),
            default: true,
            upstream: self.upstream.clone(),
            rules: Default::default(),
            store: self.proxy.rules.clone(),
            tls: None,
        }]
    }

    /// Reads the config file's sites again (a reload), with the same defaults as at start-up.
    /// Without a file, or when the file declares none, the sites in service are kept as they
    /// are (`Ok(None)`).
    pub fn reload_sites(&self) -> Result<Option<Vec<SiteConfig>>, ConfigFileError> {
        let Some(path) = &self.config_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
            path: path.clone(),
            source,
        })?;
        // The file's other settings are checked too: a reload must not accept a file that the
        // next start would refuse.
        let settings = parse_config_text(path, &text)?;
        let sites = sites::parse_sites(path, &text, &self.site_defaults())?;
        let refuse = |reason: String| ConfigFileError::Site {
            path: path.clone(),
            site: String::new(),
            reason,
        };
        if !sites.is_empty() {
            if let Some(s) = settings
                .iter()
                .find(|s| s.key == "upstream" || s.key == "upstream_host")
            {
                return Err(refuse(format!(
                    "line {}: `{}` is given beside [[site]] tables: set it in the sites",
                    s.line, s.key
                )));
            }
            if self.tls.is_none() {
                if let Some(site) = sites.iter().find(|s| s.tls.is_some()) {
                    return Err(refuse(format!(
                        "site {:?} has a tls_cert, but there is no TLS listener (tls_listen takes effect on restart)",
                        site.name
                    )));
                }
            }
        }
        if self.sites.is_empty() && !sites.is_empty() {
            // Started with --upstream: a start with this file would be refused (both given).
            return Err(ConfigFileError::Site {
                path: path.clone(),
                site: String::new(),
                reason: "the file now declares [[site]] tables, but cachet was started with --upstream; restart without --upstream to serve them".into(),
            });
        }
        if sites.is_empty() {
            if self.sites.is_empty() {
                return Ok(None);
            }
            return Err(ConfigFileError::Site {
                path: path.clone(),
                site: String::new(),
                reason: "the file no longer declares any [[site]]; the sites in service are kept (a restart would need --upstream)".into(),
            });
        }
        Ok(Some(sites))
    }

    fn site_defaults(&self) -> sites::SiteDefaults {
        let mut upstream = self.upstream.clone();
        upstream.servers.clear();
        upstream.host = None;
        sites::SiteDefaults {
            upstream,
            store: self.proxy.rules.clone(),
        }
    }
}

/// The smallest `--max-header-size` hyper accepts (its minimum read buffer).
pub const MIN_HEADER_SIZE: u64 = 8 << 10;

/// A configuration value that parsed but makes no sense.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value out of its range.
    #[error("invalid value for {name}: {reason}")]
    Invalid {
        /// The setting's flag name.
        name: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The config file's sites cannot be served.
    #[error(transparent)]
    File(#[from] ConfigFileError),
}

fn invalid(name: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name,
        reason: reason.into(),
    }
}

impl ServeArgs {
    /// Checks relations between values and builds the typed configuration.
    pub fn validate(&self) -> Result<ServeConfig, ConfigError> {
        let upstream_template = UpstreamConfig {
            servers: Vec::new(),
            host: None,
            tls: UpstreamTls {
                ca_file: self.upstream_ca.clone(),
                insecure_skip_verify: self.upstream_insecure_skip_tls_verify,
            },
            fail_timeout: self.upstream_fail_timeout,
            connect_timeout: self.connect_timeout,
            response_timeout: self.upstream_timeout,
            pool_idle_timeout: Duration::from_secs(90),
            max_concurrency: self.upstream_max_concurrency as usize,
            queue_timeout: self.upstream_queue_timeout,
        };
        let store_rules = StoreRules {
            allow_set_cookie: self.allow_set_cookie,
            heuristics: Heuristics {
                fraction: 0.1,
                cap: self.heuristic_cap,
                by_status: Default::default(),
            },
        };
        let sites = match &self.config {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
                        path: path.clone(),
                        source,
                    })?;
                let defaults = sites::SiteDefaults {
                    upstream: upstream_template.clone(),
                    store: store_rules.clone(),
                };
                sites::parse_sites(path, &text, &defaults)?
            }
            None => Vec::new(),
        };
        let upstream = match (&self.upstream, sites.is_empty()) {
            (Some(url), true) => url.clone(),
            (None, true) => {
                return Err(invalid(
                    "--upstream",
                    "missing: give --upstream URL, CACHET_UPSTREAM, `upstream` in the config file, or [[site]] tables",
                ));
            }
            (Some(_), false) => {
                return Err(invalid(
                    "--upstream",
                    "given beside [[site]] tables in the config file: give each site its upstream (and mark one `default = true` for other hosts)",
                ));
            }
            // The sites carry their upstreams; this one is not used.
            (None, false) => Uri::from_static("http://127.0.0.1"),
        };
        if self.tls_listen.is_none() {
            if let Some(site) = sites.iter().find(|s| s.tls.is_some()) {
                return Err(invalid(
                    "--tls-listen",
                    format!(
                        "missing: site {:?} has a tls_cert, but there is no TLS listener",
                        site.name
                    ),
                ));
            }
        }
        if !sites.is_empty() && self.upstream_host.is_some() {
            return Err(invalid(
                "--upstream-host",
                "given beside [[site]] tables: set `upstream_host` in the site",
            ));
        }
        let tls =
            match (self.tls_listen, &self.tls_cert, &self.tls_key) {
                (None, None, None) => None,
                (Some(listen), Some(cert), Some(key)) => {
                    if listen == self.listen && listen.port() != 0 {
                        return Err(invalid(
                            "--tls-listen",
                            format!("{listen} is also the --listen address"),
                        ));
                    }
                    let files = CertFiles {
                        cert: cert.clone(),
                        key: key.clone(),
                    };
                    // Read now, so that a bad file stops the start with its name.
                    files
                        .load()
                        .map_err(|e| invalid("--tls-cert", e.to_string()))?;
                    Some(TlsListen { listen, files })
                }
                (None, _, _) => return Err(invalid(
                    "--tls-listen",
                    "missing: --tls-cert and --tls-key are given without a --tls-listen address",
                )),
                (Some(_), None, _) => {
                    return Err(invalid(
                        "--tls-cert",
                        "missing: --tls-listen needs a certificate chain",
                    ))
                }
                (Some(_), Some(_), None) => {
                    return Err(invalid(
                        "--tls-key",
                        "missing: --tls-listen needs a private key",
                    ))
                }
            };
        // The flags' parsers refuse these already; `ServeArgs` built by hand is checked here.
        if self.capacity < MIN_CAPACITY {
            return Err(invalid("--capacity", "must be at least 1MiB"));
        }
        if self.max_object_size < MIN_OBJECT_SIZE {
            return Err(invalid("--max-object-size", "must be at least 1KiB"));
        }
        if self.revalidate_workers == 0 {
            return Err(invalid("--revalidate-workers", "must be at least 1"));
        }
        if self.max_connections == 0 {
            return Err(invalid("--max-connections", "must be at least 1"));
        }
        if self.send_timeout <= self.upstream_timeout {
            return Err(invalid(
                "--send-timeout",
                format!(
                    "{:?} must be longer than --upstream-timeout ({:?}): a response may wait that long on the upstream",
                    self.send_timeout, self.upstream_timeout
                ),
            ));
        }
        if self.connect_timeout >= self.upstream_timeout {
            return Err(invalid(
                "--connect-timeout",
                format!(
                    "{:?} must be shorter than --upstream-timeout ({:?}): a connection that takes longer would be taken for a slow response, and its server never skipped",
                    self.connect_timeout, self.upstream_timeout
                ),
            ));
        }
        if self.header_read_timeout.is_zero() {
            return Err(invalid("--header-read-timeout", "must be more than 0s"));
        }
        if self.max_header_size < MIN_HEADER_SIZE || self.max_header_size > u32::MAX as u64 {
            return Err(invalid(
                "--max-header-size",
                format!(
                    "{} is out of range: must be between 8KiB and 4GiB",
                    crate::units::format_size(self.max_header_size)
                ),
            ));
        }
        if let Some(admin) = self.admin {
            // Port 0 asks the OS for a free port each time, so two :0 addresses do not clash.
            if admin == self.listen && admin.port() != 0 {
                return Err(invalid(
                    "--admin",
                    format!(
                        "{admin} is also the --listen address; the admin listener needs its own"
                    ),
                ));
            }
        }
        let shared = match &self.shared {
            None => None,
            Some(target) => {
                if self.shared_timeout.is_zero() {
                    return Err(invalid("--shared-timeout", "must be more than 0s"));
                }
                if self.shared_probe_interval.is_zero() {
                    return Err(invalid("--shared-probe-interval", "must be more than 0s"));
                }
                if self.shared_prefix.is_empty() {
                    return Err(invalid(
                        "--shared-prefix",
                        "must not be empty: keys of other programs would look like ours",
                    ));
                }
                let mut shared = SharedConfig::new(target.clone());
                shared.prefix = self.shared_prefix.clone();
                shared.timeout = self.shared_timeout;
                shared.max_object_size = self.shared_max_object_size;
                shared.probe_interval = self.shared_probe_interval;
                // Other instances wait as long for this one's fill as local requests would.
                shared.lock_ttl = self.coalesce_timeout.max(Duration::from_millis(100));
                Some(shared)
            }
        };
        let admin_token = match &self.admin_token {
            Some(t) if t.trim().is_empty() => {
                return Err(invalid("--admin-token", "must not be empty"));
            }
            Some(t) => Some(t.clone()),
            None => None,
        };
        Ok(ServeConfig {
            listen: self.listen,
            upstream: UpstreamConfig {
                servers: vec![upstream],
                host: self.upstream_host.clone(),
                ..upstream_template
            },
            backend: self.backend,
            eviction: self.eviction,
            moka_policy: self.moka_policy,
            capacity: self.capacity,
            proxy: ProxyConfig {
                max_object_size: self.max_object_size,
                coalesce_timeout: self.coalesce_timeout,
                stale_if_error: self.stale_if_error,
                rules: store_rules,
                max_head_size: self.max_header_size as usize,
            },
            header_read_timeout: self.header_read_timeout,
            keepalive_timeout: self.keepalive_timeout,
            send_timeout: self.send_timeout,
            max_header_size: self.max_header_size as usize,
            max_connections: self.max_connections,
            revalidate_workers: self.revalidate_workers,
            revalidate_queue: self.revalidate_queue,
            shutdown_timeout: self.shutdown_timeout,
            admin: self.admin,
            admin_token,
            allow_purge_from: self.allow_purge_from.clone(),
            access_log: match self.access_log {
                AccessLogTarget::Stdout => Some(self.log_format),
                AccessLogTarget::Off => None,
            },
            shared,
            sites,
            tls,
            config_file: self.config.clone(),
        })
    }
}

impl ServeConfig {
    /// A configuration with the defaults of `cachet serve`, for tests, benchmarks and library
    /// users that start a proxy in-process. Unlike the command, it writes no access log and
    /// starts no admin listener: an in-process proxy should not write to the host's stdout.
    pub fn new(listen: SocketAddr, upstream: Uri) -> Self {
        ServeConfig {
            listen,
            upstream: UpstreamConfig::new(upstream),
            backend: Backend::Moka,
            eviction: Eviction::Adaptive,
            moka_policy: MokaPolicy::Tinylfu,
            capacity: 64 << 20,
            proxy: ProxyConfig::default(),
            header_read_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            max_header_size: 64 << 10,
            max_connections: 10_000,
            revalidate_workers: 4,
            revalidate_queue: 256,
            shutdown_timeout: Duration::from_secs(30),
            admin: None,
            admin_token: None,
            allow_purge_from: Vec::new(),
            access_log: None,
            shared: None,
            sites: Vec::new(),
            tls: None,
            config_file: None,
        }
    }
}

/// One setting read from a configuration file, checked against the flag it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSetting {
    /// The key, which is the flag's name with `_` for `-`.
    pub key: String,
    /// The environment variable of the same flag; the binary passes file values to clap through
    /// it, so that flags and the real environment take precedence over the file.
    pub env: String,
    /// The value as the flag would be given it (lists joined with `,`).
    pub value: String,
    /// The line of the file it was read from.
    pub line: usize,
}

/// Why a configuration file could not be used. Every variant names the file, and the key and
/// line where there is one.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not valid TOML; toml's message carries the line and column.
    #[error("config file {path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A key that is no setting of `cachet serve`.
    #[error("config file {path}, line {line}: unknown key `{key}` (known keys: {known})")]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// Where the key is.
        line: usize,
        /// The key.
        key: String,
        /// Every key the file may hold.
        known: String,
    },
    /// A `[[site]]` table that cannot be served.
    #[error("config file {path}: {}{reason}", if site.is_empty() { String::new() } else { format!("site {site:?}: ") })]
    Site {
        /// The file.
        path: PathBuf,
        /// The site's name, when it has one.
        site: String,
        /// What is wrong.
        reason: String,
    },
    /// A value that the flag of the same name would refuse.
    #[error("config file {path}, line {line}: invalid value for `{key}`: {reason}")]
    BadValue {
        /// The file.
        path: PathBuf,
        /// Where the value is.
        line: usize,
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// Reads a TOML configuration file and checks each key and value against the flags of
/// `cachet serve`, with the same value parsers the flags use, so that the file accepts exactly
/// what the command line accepts. Nothing is applied here: the caller decides precedence.
pub fn read_config_file(path: &Path) -> Result<Vec<FileSetting>, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_config_text(path, &text)
}

/// [`read_config_file`] on text already in memory; `path` is used in messages only.
pub fn parse_config_text(path: &Path, text: &str) -> Result<Vec<FileSetting>, ConfigFileError> {
    use clap::Command;
    use std::collections::BTreeMap;
    use toml::Spanned;

    let table: BTreeMap<Spanned<String>, Spanned<toml::Value>> =
        toml::from_str(text).map_err(|e| ConfigFileError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
    let cmd = ServeArgs::augment_args(Command::new("serve"));
    let settable = |a: &&clap::Arg| a.get_id() != "config" && a.get_env().is_some();
    let known: Vec<&str> = cmd
        .get_arguments()
        .filter(settable)
        .map(|a| a.get_id().as_str())
        .collect();
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;

    let mut settings = Vec::with_capacity(table.len());
    for (key, value) in &table {
        let line = line_of(key.span().start);
        let name = key.get_ref().as_str();
        if name == "site" {
            // `[[site]]` tables are read by `sites::parse_sites`.
            continue;
        }
        let Some(arg) = cmd
            .get_arguments()
            .filter(settable)
            .find(|a| a.get_id() == name)
        else {
            return Err(ConfigFileError::UnknownKey {
                path: path.to_path_buf(),
                line,
                key: name.to_string(),
                known: known.join(", ") + ", site",
            });
        };
        let bad = |reason: String| ConfigFileError::BadValue {
            path: path.to_path_buf(),
            line: line_of(value.span().start),
            key: name.to_string(),
            reason,
        };
        let is_list = arg.get_value_delimiter().is_some();
        if matches!(value.get_ref(), toml::Value::Array(a) if a.is_empty() && is_list) {
            // An empty list is the default (nobody); there is no value to pass on.
            continue;
        }
        let items: Vec<String> = match value.get_ref() {
            toml::Value::Array(items) if is_list => items
                .iter()
                .map(scalar_text)
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| bad("expected a list of strings".into()))?,
            toml::Value::Array(_) => return Err(bad("expected a single value, not a list".into())),
            other => vec![scalar_text(other)
                .ok_or_else(|| bad("expected a string, a number or a boolean".into()))?],
        };
        if !arg.get_action().takes_values() {
            // A switch (`--allow-set-cookie`): true or false, which its env variable accepts.
            if !matches!(items[0].as_str(), "true" | "false") {
                return Err(bad(format!("expected true or false, got {:?}", items[0])));
            }
        } else {
            // The value goes through a one-flag command holding a clone of the real flag, so
            // the file is checked by exactly the parser (and list delimiter) the flag uses.
            let long = arg.get_long().unwrap_or(name);
            let check = Command::new("config")
                .no_binary_name(true)
                .arg(arg.clone().required(false));
            if let Err(e) = check.try_get_matches_from([format!("--{long}"), items.join(",")]) {
                // The parser's own message (e.g. "invalid size ...") is the source of clap's
                // error; clap's rendering would name the flag rather than the key.
                let reason = std::error::Error::source(&e)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| clap_message(&e, &items.join(",")));
                return Err(bad(reason));
            }
        }
        settings.push(FileSetting {
            key: name.to_string(),
            env: arg
                .get_env()
                .map(|e| e.to_string_lossy().into_owned())
                .unwrap_or_default(),
            value: items.join(","),
            line,
        });
    }
    Ok(settings)
}

/// The useful part of a clap error that has no source error of its own (enum values): the first
/// line without clap's `error: ` prefix, and the list of possible values when clap gives one.
fn clap_message(e: &clap::Error, item: &str) -> String {
    let text = e.to_string();
    let mut lines = text.lines();
    let mut message = lines
        .next()
        .map(|l| l.trim_start_matches("error: ").to_string())
        .unwrap_or_else(|| format!("invalid value {item:?}"));
    if let Some(possible) = lines.find(|l| l.contains("possible values")) {
        message.push(' ');
        message.push_str(possible.trim());
    }
    message
}

/// Every environment variable the command reads: the `env` of each flag of the command and of
/// its subcommands, taken from clap's own metadata so that it cannot drift from the flags.
/// (Nothing in the crate reads a `CACHET_*` variable directly; one that did would belong here.)
pub fn known_env_names(cmd: &Command) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = cmd
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect();
    for sub in cmd.get_subcommands() {
        names.extend(known_env_names(sub));
    }
    names
}

/// A `CACHET_*` environment variable that no flag reads: most likely a misspelt one, whose
/// setting would otherwise be silently left at its default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownEnvVar {
    /// The variable's name.
    pub name: String,
    /// The known name closest to it, when one is close.
    pub suggestion: Option<String>,
}

impl fmt::Display for UnknownEnvVar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown environment variable {}: no setting reads it",
            self.name
        )?;
        match &self.suggestion {
            Some(known) => write!(f, "; did you mean {known}?"),
            None => write!(f, " (`cachet serve --help` lists each flag's variable)"),
        }
    }
}

impl std::error::Error for UnknownEnvVar {}

/// The variables of `vars` whose name starts with `CACHET_` (in any case) and that no flag of
/// `cmd` reads ([`known_env_names`]), each with the closest known name. Variables that Kubernetes
/// and Docker links define for a service or container named `cachet...` (`CACHET_SERVICE_HOST`,
/// `CACHET_PORT=tcp://...`, `CACHET_PORT_8080_TCP_ADDR`, ...) are not settings and are let be.
pub fn unknown_env_vars(
    cmd: &Command,
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Vec<UnknownEnvVar> {
    const PREFIX: &str = "CACHET_";
    let known = known_env_names(cmd);
    let mut unknown = Vec::new();
    for (name, value) in vars {
        let name = name.to_string_lossy();
        let upper = name.to_ascii_uppercase();
        if !upper.starts_with(PREFIX) || known.contains(name.as_ref()) {
            continue;
        }
        // Windows looks variables up without regard to case, and so does clap there.
        if cfg!(windows) && known.contains(&upper) {
            continue;
        }
        if is_service_link(&name, &value.to_string_lossy()) {
            continue;
        }
        let wanted = upper.replace('-', "_");
        let wanted = &wanted[PREFIX.len()..];
        let suggestion = known
            .iter()
            .filter_map(|k| k.strip_prefix(PREFIX).map(|rest| (k, rest)))
            .map(|(k, rest)| (edit_distance(wanted, rest), k))
            .min()
            .filter(|(d, _)| *d <= (wanted.len() / 3).max(2))
            .map(|(_, k)| k.clone());
        unknown.push(UnknownEnvVar {
            name: name.into_owned(),
            suggestion,
        });
    }
    unknown
}

/// Whether `name=value` is one of the variables Kubernetes defines for a service (and Docker for
/// a linked container), whose names start with the service's: `<SVC>_SERVICE_HOST`,
/// `<SVC>_SERVICE_PORT[_<NAME>]`, `<SVC>_PORT=tcp://...` and
/// `<SVC>_PORT_<N>_<PROTO>[_PROTO|_PORT|_ADDR]`; and Docker's `<ALIAS>_NAME=/...` and
/// `<ALIAS>_ENV_<VAR>`.
fn is_service_link(name: &str, value: &str) -> bool {
    let is_proto = |p: &str| matches!(p, "TCP" | "UDP" | "SCTP");
    if name.ends_with("_SERVICE_HOST")
        || name.ends_with("_SERVICE_PORT")
        || name.contains("_SERVICE_PORT_")
        || name.contains("_ENV_")
        || (name.ends_with("_NAME") && value.starts_with('/'))
    {
        return true;
    }
    if name.ends_with("_PORT")
        && ["tcp://", "udp://", "sctp://"]
            .iter()
            .any(|p| value.starts_with(p))
    {
        return true;
    }
    // <SVC>_PORT_<N>_<PROTO>, then nothing or one of _PROTO, _PORT, _ADDR.
    name.match_indices("_PORT_").any(|(i, m)| {
        let rest: Vec<&str> = name[i + m.len()..].split('_').collect();
        let port_and_proto = rest.len() >= 2
            && !rest[0].is_empty()
            && rest[0].bytes().all(|b| b.is_ascii_digit())
            && is_proto(rest[1]);
        port_and_proto
            && (rest.len() == 2
                || (rest.len() == 3 && matches!(rest[2], "PROTO" | "PORT" | "ADDR")))
    })
}

/// Levenshtein distance in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diagonal + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// Where a setting's value came from, when it was not typed as a flag: how an error names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// An environment variable, with its value unless the flag hides it (a token).
    Env {
        /// The variable.
        name: String,
        /// Its value, or `None` when it is secret.
        value: Option<String>,
    },
    /// A key of the configuration file (which reaches clap through the environment).
    File {
        /// The file.
        path: PathBuf,
        /// The key's line.
        line: usize,
        /// The key.
        key: String,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Env {
                name,
                value: Some(v),
            } => write!(f, "{name}={v}"),
            Origin::Env { name, value: None } => write!(f, "{name}"),
            Origin::File { path, line, key } => {
                write!(f, "config file {}, line {line}: `{key}`", path.display())
            }
        }
    }
}

/// The origin of each setting of a parsed command line that came from the environment or the
/// config file, so that [`ConfigError`]s can name it the way the operator wrote it.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    by_flag: Vec<(String, Origin)>,
}

impl Origins {
    /// Reads the origins from `matches`, parsed by `cmd` (the binary's whole command: the
    /// subcommand that ran is found in it). `file` is the config file and the settings of it that
    /// were applied through the environment, when there is one.
    pub fn new(cmd: &Command, matches: &ArgMatches, file: Option<(&Path, &[FileSetting])>) -> Self {
        let (cmd, matches) = leaf(cmd, matches);
        let by_flag = cmd
            .get_arguments()
            .filter(|a| matches.value_source(a.get_id().as_str()) == Some(ValueSource::EnvVariable))
            .filter_map(|a| Some((format!("--{}", a.get_long()?), origin_of(a, file)?)))
            .collect();
        Origins { by_flag }
    }

    /// Where the value of `flag` (`--capacity`) came from, when not from the command line or
    /// the defaults.
    pub fn of(&self, flag: &str) -> Option<&Origin> {
        self.by_flag.iter().find(|(f, _)| f == flag).map(|(_, o)| o)
    }

    /// The error's message, naming the variable or the file's key the value came from beside the
    /// flag: `invalid value for --revalidate-workers (CACHET_REVALIDATE_WORKERS=0): ...`.
    pub fn explain(&self, error: &ConfigError) -> String {
        match error {
            ConfigError::Invalid { name, reason } => match self.of(name) {
                Some(origin) => format!("invalid value for {name} ({origin}): {reason}"),
                None => error.to_string(),
            },
            ConfigError::File(_) => error.to_string(),
        }
    }
}

/// The environment variable or file key that gave `arg` its value, when it was read from the
/// environment.
fn origin_of(arg: &clap::Arg, file: Option<(&Path, &[FileSetting])>) -> Option<Origin> {
    let env = arg.get_env()?.to_string_lossy().into_owned();
    if let Some((path, settings)) = file {
        if let Some(s) = settings.iter().find(|s| s.env == env) {
            return Some(Origin::File {
                path: path.to_path_buf(),
                line: s.line,
                key: s.key.clone(),
            });
        }
    }
    let value = (!arg.is_hide_env_values_set())
        .then(|| std::env::var_os(&env).map(|v| v.to_string_lossy().into_owned()))
        .flatten();
    Some(Origin::Env { name: env, value })
}

/// The subcommand that ran, and its matches.
fn leaf<'a>(cmd: &'a Command, matches: &'a ArgMatches) -> (&'a Command, &'a ArgMatches) {
    match matches.subcommand() {
        Some((name, sub)) => match cmd.find_subcommand(name) {
            Some(sub_cmd) => leaf(sub_cmd, sub),
            None => (cmd, matches),
        },
        None => (cmd, matches),
    }
}

/// A value that clap refused, which came from the environment or the config file rather than
/// the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvValueError {
    /// The flag the value is for (`--capacity`).
    pub flag: String,
    /// The variable or file key it came from.
    pub origin: Origin,
    /// What is wrong with it, from the flag's parser.
    pub reason: String,
}

impl fmt::Display for EnvValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            // The same words as a bad value found while the file is checked.
            Origin::File { path, line, key } => write!(
                f,
                "config file {}, line {line}: invalid value for `{key}`: {}",
                path.display(),
                self.reason
            ),
            Origin::Env { .. } => write!(f, "{} ({}): {}", self.origin, self.flag, self.reason),
        }
    }
}

impl std::error::Error for EnvValueError {}

/// When clap refused a value that came from the environment (`CACHET_CAPACITY=abc`), names the
/// variable (or the config file's key, for a setting applied from `file`); `None` when the value
/// was typed on the command line, or the error is of another kind, and clap's own message says it
/// best.
///
/// `cmd` is the command that failed, built after the environment was last changed (clap reads
/// each variable when the command is built), and `argv` its command line. The command line is
/// parsed again with every `env` removed, so that [`ArgMatches::value_source`] tells which flags
/// it gave; the blamed flag's variable is then checked by the flag's own parser.
pub fn env_value_error(
    cmd: &Command,
    argv: impl IntoIterator<Item = OsString>,
    error: &clap::Error,
    file: Option<(&Path, &[FileSetting])>,
) -> Option<EnvValueError> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        error.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return None;
    }
    let Some(ContextValue::String(blamed)) = error.get(ContextKind::InvalidArg) else {
        return None;
    };
    fn without_env(cmd: Command) -> Command {
        cmd.mut_args(|a| a.env(None::<&'static str>))
            .mut_subcommands(without_env)
    }
    // Fails when the command line alone is wrong: then clap's error is about it.
    let matches = without_env(cmd.clone()).try_get_matches_from(argv).ok()?;
    // Built, so that each flag renders as clap's error does (`--capacity <SIZE>`).
    let mut built = cmd.clone();
    built.build();
    // Every level of the subcommand path reads its own flags' variables: the top level of
    // `cachet` flattens the flags of `serve`, so `cachet serve --capacity 1GiB` still has the top
    // level read CACHET_CAPACITY. The blamed flag is one not given on the command line at its level.
    let mut levels = vec![(&built, &matches)];
    while let Some((name, sub)) = levels.last().and_then(|(_, m)| m.subcommand()) {
        let Some(sub_cmd) = levels.last().and_then(|(c, _)| c.find_subcommand(name)) else {
            break;
        };
        levels.push((sub_cmd, sub));
    }
    let arg = levels.iter().rev().find_map(|(level, level_matches)| {
        level.get_arguments().find(|a| {
            a.to_string() == *blamed
                && a.get_env().is_some()
                && level_matches.value_source(a.get_id().as_str()) != Some(ValueSource::CommandLine)
        })
    })?;
    // The flag alone, reading its variable as the real parse did.
    let check = Command::new("env")
        .no_binary_name(true)
        .arg(arg.clone().required(false));
    let e = check.try_get_matches_from(Vec::<OsString>::new()).err()?;
    let raw = std::env::var_os(arg.get_env()?).unwrap_or_default();
    let reason = std::error::Error::source(&e)
        .map(|s| s.to_string())
        .unwrap_or_else(|| clap_message(&e, &raw.to_string_lossy()));
    let origin = origin_of(arg, file)?;
    let reason = match &origin {
        // A secret's value is not echoed, and the parser's message may carry it.
        Origin::Env { value: None, .. } => "invalid value".to_string(),
        _ => reason,
    };
    Some(EnvValueError {
        flag: format!("--{}", arg.get_long().unwrap_or(arg.get_id().as_str())),
        origin,
        reason,
    })
}

fn scalar_text(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Datetime(_) | toml::Value::Array(_) | toml::Value::Table(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<FileSetting>, ConfigFileError> {
        parse_config_text(Path::new("test.toml"), text)
    }

    #[test]
    fn file_values_become_flag_values() {
        let settings = parse(
            "listen = \"127.0.0.1:1\"\ncapacity = 2097152\nallow_set_cookie = true\n\
             allow_purge_from = [\"127.0.0.1\", \"10.0.0.0/8\"]\nshutdown_timeout = 1.5\n",
        )
        .unwrap();
        let find = |k: &str| settings.iter().find(|s| s.key == k).unwrap();
        assert_eq!(find("listen").env, "CACHET_LISTEN");
        assert_eq!(find("capacity").value, "2097152", "a bare number is bytes");
        assert_eq!(find("allow_set_cookie").value, "true");
        assert_eq!(find("allow_purge_from").value, "127.0.0.1,10.0.0.0/8");
        assert_eq!(find("allow_purge_from").line, 4);
        assert_eq!(find("shutdown_timeout").value, "1.5");
    }

    #[test]
    fn bad_keys_and_values_are_named_with_their_line() {
        let e = parse("listen = \"127.0.0.1:1\"\n\nmax_header_siz = 1\n").unwrap_err();
        assert!(
            matches!(&e, ConfigFileError::UnknownKey { key, line: 3, .. } if key == "max_header_siz"),
            "{e}"
        );
        let e = parse("backend = \"redis\"\n").unwrap_err();
        assert!(
            matches!(&e, ConfigFileError::BadValue { key, line: 1, .. } if key == "backend"),
            "{e}"
        );
        assert!(e.to_string().contains("redis"), "{e}");
        let e = parse("log_format = \"xml\"\n").unwrap_err();
        assert!(
            e.to_string().contains("plain"),
            "lists the possible values: {e}"
        );
        let e = parse("revalidate_workers = -1\n").unwrap_err();
        assert!(matches!(&e, ConfigFileError::BadValue { key, .. } if key == "revalidate_workers"));
        let e = parse("listen = [\"127.0.0.1:1\"]\n").unwrap_err();
        assert!(e.to_string().contains("not a list"), "{e}");
        let e = parse("[server]\nlisten = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(
            matches!(&e, ConfigFileError::UnknownKey { key, .. } if key == "server"),
            "{e}"
        );
        let e = parse("config = \"other.toml\"\n").unwrap_err();
        assert!(matches!(&e, ConfigFileError::UnknownKey { .. }), "{e}");
        let e = parse("listen = \n").unwrap_err();
        assert!(matches!(&e, ConfigFileError::Syntax { .. }), "{e}");
        assert!(e.to_string().contains("line 1"), "{e}");
    }

    #[test]
    fn example_file_parses_and_documents_every_key() {
        let text = include_str!("../../cachet.example.toml");
        parse(text).unwrap();
        let cmd = ServeArgs::augment_args(clap::Command::new("serve"));
        for arg in cmd.get_arguments() {
            let key = arg.get_id().as_str();
            if key == "config" || arg.get_env().is_none() {
                continue;
            }
            let documented = text.lines().any(|l| {
                let l = l.trim_start_matches('#').trim_start();
                l.starts_with(&format!("{key} ="))
            });
            assert!(documented, "cachet.example.toml does not mention `{key}`");
        }
        // The example sites, uncommented, are a valid set, and show every key a site takes.
        let section = text
            .split("# --- Sites")
            .nth(1)
            .expect("the example has a Sites section");
        let example: String = section
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| {
                l.starts_with("[[site]]")
                    || l.split_once(" = ").is_some_and(|(k, _)| !k.contains(' '))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let defaults = sites::SiteDefaults {
            upstream: UpstreamConfig::new("http://127.0.0.1:1".parse().unwrap()),
            store: StoreRules::default(),
        };
        let parsed =
            sites::parse_sites(Path::new("/etc/cachet/cachet.toml"), &example, &defaults).unwrap();
        assert_eq!(parsed.len(), 2);
        for key in sites::SITE_KEYS {
            assert!(
                example.lines().any(|l| l.starts_with(&format!("{key} ="))),
                "the example sites do not show `{key}`"
            );
            assert!(
                section.contains(&format!("#   {key} ")),
                "the Sites section does not describe `{key}`"
            );
        }
    }

    #[test]
    fn validate_names_the_bad_setting() {
        let args = |extra: &[&str]| {
            let mut argv = vec!["serve", "--upstream", "http://127.0.0.1:9"];
            argv.extend_from_slice(extra);
            let cmd = ServeArgs::augment_args(clap::Command::new("serve").no_binary_name(true));
            let m = cmd.try_get_matches_from(&argv[1..]).unwrap();
            <ServeArgs as clap::FromArgMatches>::from_arg_matches(&m).unwrap()
        };
        assert!(args(&[]).validate().is_ok());
        for (flags, name) in [
            (&["--max-connections", "0"][..], "--max-connections"),
            (&["--header-read-timeout", "0s"], "--header-read-timeout"),
            (&["--admin-token", " "], "--admin-token"),
            (
                &["--listen", "127.0.0.1:7000", "--admin", "127.0.0.1:7000"],
                "--admin",
            ),
        ] {
            let err = args(flags).validate().unwrap_err();
            assert!(err.to_string().contains(name), "{flags:?}: {err}");
        }
    }

    fn cli() -> Command {
        ServeArgs::augment_args(Command::new("cachet"))
    }

    #[test]
    fn sizes_too_small_to_be_meant_as_bytes_are_refused_with_the_key() {
        // The file, the flags and the variables share these parsers; the file names the key.
        let e = parse("capacity = 64\n").unwrap_err().to_string();
        assert!(
            e.contains("`capacity`") && e.contains("64 bytes") && e.contains("64MiB"),
            "{e}"
        );
        assert!(e.contains("a number without a unit is bytes"), "{e}");
        let e = parse("max_object_size = 8\n").unwrap_err().to_string();
        assert!(e.contains("`max_object_size`") && e.contains("8MiB"), "{e}");
        let e = parse("max_header_size = \"4KiB\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("below the minimum of 8KiB"), "{e}");
        let e = parse("max_header_size = \"4GiB\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("less than 4GiB"), "{e}");
        let e = parse("capacity = 0\n").unwrap_err().to_string();
        assert!(e.contains("0 bytes is below the minimum of 1MiB"), "{e}");
        parse("capacity = \"1MiB\"\nmax_object_size = 1024\nmax_header_size = \"8KiB\"\n").unwrap();
        let m = cli().try_get_matches_from(["cachet", "--capacity", "64"]);
        let e = m.unwrap_err().to_string();
        assert!(e.contains("--capacity") && e.contains("64 bytes"), "{e}");
    }

    #[test]
    fn listen_and_admin_take_host_names() {
        let addr = parse_addr("localhost:8080").unwrap();
        assert!(addr.ip().is_loopback() && addr.port() == 8080, "{addr}");
        assert_eq!(
            parse_addr("[::1]:80").unwrap(),
            "[::1]:80".parse::<SocketAddr>().unwrap()
        );
        let e = parse_addr("localhost").unwrap_err();
        assert!(e.contains("no port"), "{e}");
        let e = parse_addr("localhost:99999").unwrap_err();
        assert!(e.contains("HOST:PORT"), "{e}");
        let m = cli()
            .try_get_matches_from([
                "cachet",
                "--listen",
                "localhost:0",
                "--admin",
                "localhost:1",
            ])
            .unwrap();
        let args = <ServeArgs as clap::FromArgMatches>::from_arg_matches(&m).unwrap();
        assert!(args.listen.ip().is_loopback());
        assert_eq!(args.admin.map(|a| a.port()), Some(1));
        let settings = parse("listen = \"localhost:8080\"\n").unwrap();
        assert_eq!(settings[0].value, "localhost:8080");
        let e = parse("admin = \"localhost\"\n").unwrap_err().to_string();
        assert!(e.contains("`admin`") && e.contains("no port"), "{e}");
    }

    fn vars(list: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        list.iter().map(|(k, v)| (k.into(), v.into())).collect()
    }

    #[test]
    fn unknown_cachet_variables_are_named_with_the_closest_known_one() {
        let cmd = Command::new("cachet")
            .subcommand(ServeArgs::augment_args(Command::new("serve")))
            .subcommand(
                Command::new("origin").arg(clap::Arg::new("l").env("CACHET_ORIGIN_LISTEN")),
            );
        let known = known_env_names(&cmd);
        assert!(known.contains("CACHET_CONFIG") && known.contains("CACHET_CAPACITY"));
        assert!(known.contains("CACHET_ORIGIN_LISTEN"), "subcommands count");
        let found = unknown_env_vars(
            &cmd,
            vars(&[
                ("CACHET_CAPACITY", "1GiB"),
                ("CACHET_ORIGIN_LISTEN", "127.0.0.1:1"),
                ("PATH", "/bin"),
                ("CACHET_CAPACTY", "1GiB"),
                ("cachet_upstream", "http://x"),
                ("CACHET_MAX_OBJ_SIZE", "1MiB"),
                ("CACHET_ZZZZZZZZ", "1"),
                ("CACHET_PORT", "8080"),
            ]),
        );
        let said: Vec<(&str, Option<&str>)> = found
            .iter()
            .map(|u| (u.name.as_str(), u.suggestion.as_deref()))
            .collect();
        assert_eq!(
            said,
            [
                ("CACHET_CAPACTY", Some("CACHET_CAPACITY")),
                ("cachet_upstream", Some("CACHET_UPSTREAM")),
                ("CACHET_MAX_OBJ_SIZE", Some("CACHET_MAX_OBJECT_SIZE")),
                ("CACHET_ZZZZZZZZ", None),
                ("CACHET_PORT", None),
            ]
        );
        assert_eq!(
            found[0].to_string(),
            "unknown environment variable CACHET_CAPACTY: no setting reads it; \
             did you mean CACHET_CAPACITY?"
        );
        // What Kubernetes (and Docker links) define for a service called cachet or cachet-admin.
        let links = unknown_env_vars(
            &cmd,
            vars(&[
                ("CACHET_SERVICE_HOST", "10.0.0.11"),
                ("CACHET_SERVICE_PORT", "8080"),
                ("CACHET_SERVICE_PORT_HTTP", "8080"),
                ("CACHET_PORT", "tcp://10.0.0.11:8080"),
                ("CACHET_PORT_8080_TCP", "tcp://10.0.0.11:8080"),
                ("CACHET_PORT_8080_TCP_PROTO", "tcp"),
                ("CACHET_PORT_8080_TCP_PORT", "8080"),
                ("CACHET_PORT_8080_TCP_ADDR", "10.0.0.11"),
                ("CACHET_ADMIN_SERVICE_HOST", "10.0.0.12"),
                ("CACHET_ADMIN_PORT", "tcp://10.0.0.12:9091"),
                ("CACHET_NAME", "/web/cachet"),
                ("CACHET_ENV_CACHET_CAPACITY", "1GiB"),
            ]),
        );
        assert_eq!(links, [], "service links are not settings");
        assert!(!is_service_link("CACHET_ADMIN_PORT", "9091"));
        assert!(!is_service_link("CACHET_PORT_8080", "1"));
        assert!(!is_service_link("CACHET_PORT_8080_TCP_HOST", "1"));
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("CAPACTY", "CAPACITY"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }

    #[test]
    fn a_bad_value_typed_on_the_command_line_is_left_to_clap() {
        let cmd = cli();
        let argv = ["cachet", "--capacity", "lots"];
        let e = cmd.clone().try_get_matches_from(argv).unwrap_err();
        let found = env_value_error(&cmd, argv.map(OsString::from), &e, None);
        assert_eq!(found, None, "the command line is wrong, and clap says so");
    }

    #[test]
    fn validation_errors_name_the_file_key_or_the_variable() {
        let origins = Origins {
            by_flag: vec![
                (
                    "--revalidate-workers".into(),
                    Origin::File {
                        path: "/etc/cachet.toml".into(),
                        line: 3,
                        key: "revalidate_workers".into(),
                    },
                ),
                (
                    "--max-connections".into(),
                    Origin::Env {
                        name: "CACHET_MAX_CONNECTIONS".into(),
                        value: Some("0".into()),
                    },
                ),
            ],
        };
        let e = invalid("--revalidate-workers", "must be at least 1");
        assert_eq!(
            origins.explain(&e),
            "invalid value for --revalidate-workers (config file /etc/cachet.toml, line 3: \
             `revalidate_workers`): must be at least 1"
        );
        let e = invalid("--max-connections", "must be at least 1");
        assert_eq!(
            origins.explain(&e),
            "invalid value for --max-connections (CACHET_MAX_CONNECTIONS=0): must be at least 1"
        );
        let e = invalid("--send-timeout", "too short");
        assert_eq!(origins.explain(&e), e.to_string(), "typed as a flag");
        // From a real parse: the command line is no environment.
        let m = cli()
            .try_get_matches_from(["cachet", "--max-connections", "0"])
            .unwrap();
        let origins = Origins::new(&cli(), &m, None);
        assert_eq!(origins.of("--max-connections"), None);
    }
}

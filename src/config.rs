//! Typed, validated configuration for `cachet serve`.
//!
//! Every flag also reads an environment variable (`CACHET_*`). Values are parsed into typed
//! values once, at start-up, by clap value parsers, so a bad value is reported with the flag's
//! name and the process exits non-zero before anything is bound.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use http::Uri;

use crate::policy::{Heuristics, StoreRules};
use crate::proxy::ProxyConfig;
use crate::store::{Backend, MokaPolicy};
use crate::units::{parse_duration, parse_size};
use crate::upstream::UpstreamConfig;

/// Flags of `cachet serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to accept client connections on.
    #[arg(long, env = "CACHET_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// The origin to forward to, as an http:// URL (e.g. http://127.0.0.1:9000).
    #[arg(long, env = "CACHET_UPSTREAM", value_parser = parse_upstream)]
    pub upstream: Uri,

    /// Store backend: rwlock (RwLock<HashMap>, CLOCK), sharded (dashmap, CLOCK per shard) or
    /// moka (W-TinyLFU).
    #[arg(long, env = "CACHET_BACKEND", default_value = "moka")]
    pub backend: Backend,

    /// Eviction policy of the moka backend: tinylfu or lru.
    #[arg(long, env = "CACHET_MOKA_POLICY", default_value = "tinylfu")]
    pub moka_policy: MokaPolicy,

    /// Most bytes the store holds (keys, headers and bodies), e.g. 64MiB, 1GiB.
    #[arg(long, env = "CACHET_CAPACITY", default_value = "64MiB", value_parser = parse_size_arg)]
    pub capacity: u64,

    /// Responses larger than this are streamed through and not stored.
    #[arg(long, env = "CACHET_MAX_OBJECT_SIZE", default_value = "8MiB", value_parser = parse_size_arg)]
    pub max_object_size: u64,

    /// How long a request waits for another's in-flight fetch of the same key before fetching
    /// for itself.
    #[arg(long, env = "CACHET_COALESCE_TIMEOUT", default_value = "10s", value_parser = parse_duration_arg)]
    pub coalesce_timeout: Duration,

    /// Time allowed to connect to the upstream (502 when it cannot, 504 when it times out).
    #[arg(long, env = "CACHET_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_duration_arg)]
    pub connect_timeout: Duration,

    /// Time allowed for the upstream's response headers (504 after).
    #[arg(long, env = "CACHET_UPSTREAM_TIMEOUT", default_value = "30s", value_parser = parse_duration_arg)]
    pub upstream_timeout: Duration,

    /// Time a client has to send its request headers (against slowloris).
    #[arg(long, env = "CACHET_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration_arg)]
    pub header_read_timeout: Duration,

    /// Upper bound on a heuristic freshness lifetime (10% of the time since Last-Modified).
    #[arg(long, env = "CACHET_HEURISTIC_CAP", default_value = "1d", value_parser = parse_duration_arg)]
    pub heuristic_cap: Duration,

    /// Store responses that carry Set-Cookie (off: sharing one user's cookie is a leak).
    #[arg(long, env = "CACHET_ALLOW_SET_COOKIE")]
    pub allow_set_cookie: bool,

    /// Workers refreshing stale-while-revalidate entries in the background.
    #[arg(long, env = "CACHET_REVALIDATE_WORKERS", default_value_t = 4)]
    pub revalidate_workers: usize,

    /// Background refreshes queued at most; more are dropped.
    #[arg(long, env = "CACHET_REVALIDATE_QUEUE", default_value_t = 256)]
    pub revalidate_queue: usize,

    /// On SIGTERM or Ctrl-C, how long in-flight requests may take to finish.
    #[arg(long, env = "CACHET_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration_arg)]
    pub shutdown_timeout: Duration,
}

fn parse_size_arg(s: &str) -> Result<u64, String> {
    parse_size(s).map_err(|e| e.to_string())
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

/// Checks an upstream URL: absolute, `http`, with a host.
pub fn parse_upstream(s: &str) -> Result<Uri, String> {
    let uri: Uri = s
        .trim()
        .parse()
        .map_err(|e| format!("invalid upstream URL {s:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "invalid upstream URL {s:?}: https upstreams are not supported yet; use http://"
            ))
        }
        _ => {
            return Err(format!(
                "invalid upstream URL {s:?}: expected http://host[:port]"
            ))
        }
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
    /// moka's eviction policy.
    pub moka_policy: MokaPolicy,
    /// Store capacity in bytes.
    pub capacity: u64,
    /// Request-path settings.
    pub proxy: ProxyConfig,
    /// Client header read timeout.
    pub header_read_timeout: Duration,
    /// Background refresh workers.
    pub revalidate_workers: usize,
    /// Background refresh queue length.
    pub revalidate_queue: usize,
    /// Grace period for in-flight requests at shutdown.
    pub shutdown_timeout: Duration,
}

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
}

impl ServeArgs {
    /// Checks relations between values and builds the typed configuration.
    pub fn validate(&self) -> Result<ServeConfig, ConfigError> {
        if self.capacity == 0 {
            return Err(ConfigError::Invalid {
                name: "--capacity",
                reason: "must be more than 0 bytes".into(),
            });
        }
        if self.revalidate_workers == 0 {
            return Err(ConfigError::Invalid {
                name: "--revalidate-workers",
                reason: "must be at least 1".into(),
            });
        }
        Ok(ServeConfig {
            listen: self.listen,
            upstream: UpstreamConfig {
                url: self.upstream.clone(),
                connect_timeout: self.connect_timeout,
                response_timeout: self.upstream_timeout,
                pool_idle_timeout: Duration::from_secs(90),
            },
            backend: self.backend,
            moka_policy: self.moka_policy,
            capacity: self.capacity,
            proxy: ProxyConfig {
                max_object_size: self.max_object_size,
                coalesce_timeout: self.coalesce_timeout,
                rules: StoreRules {
                    allow_set_cookie: self.allow_set_cookie,
                    heuristics: Heuristics {
                        fraction: 0.1,
                        cap: self.heuristic_cap,
                    },
                },
            },
            header_read_timeout: self.header_read_timeout,
            revalidate_workers: self.revalidate_workers,
            revalidate_queue: self.revalidate_queue,
            shutdown_timeout: self.shutdown_timeout,
        })
    }
}

impl ServeConfig {
    /// A configuration with the defaults of `cachet serve`, for tests, benchmarks and library
    /// users that start a proxy in-process.
    pub fn new(listen: SocketAddr, upstream: Uri) -> Self {
        ServeConfig {
            listen,
            upstream: UpstreamConfig {
                url: upstream,
                connect_timeout: Duration::from_secs(5),
                response_timeout: Duration::from_secs(30),
                pool_idle_timeout: Duration::from_secs(90),
            },
            backend: Backend::Moka,
            moka_policy: MokaPolicy::Tinylfu,
            capacity: 64 << 20,
            proxy: ProxyConfig::default(),
            header_read_timeout: Duration::from_secs(10),
            revalidate_workers: 4,
            revalidate_queue: 256,
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

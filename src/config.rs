//! Typed, validated configuration for `cachet serve`.
//!
//! Every flag also reads an environment variable (`CACHET_*`). Values are parsed into typed
//! values once, at start-up, by clap value parsers, so a bad value is reported with the flag's
//! name and the process exits non-zero before anything is bound.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use http::Uri;
use ipnet::IpNet;

use crate::policy::{Heuristics, StoreRules};
use crate::proxy::ProxyConfig;
use crate::store::{Backend, MokaPolicy};
use crate::units::{parse_duration, parse_size};
use crate::upstream::UpstreamConfig;

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

    /// Address to accept client connections on.
    #[arg(long, env = "CACHET_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// The origin to forward to, as an http:// URL (e.g. http://127.0.0.1:9000). Required, here,
    /// in CACHET_UPSTREAM or in the config file.
    #[arg(long, env = "CACHET_UPSTREAM", value_parser = parse_upstream, value_name = "URL")]
    pub upstream: Option<Uri>,

    /// Store backend: rwlock (RwLock<HashMap>, CLOCK), sharded (dashmap, CLOCK per shard) or
    /// moka (W-TinyLFU).
    #[arg(
        long,
        env = "CACHET_BACKEND",
        default_value = "moka",
        help_heading = "Cache"
    )]
    pub backend: Backend,

    /// Eviction policy of the moka backend: tinylfu or lru.
    #[arg(
        long,
        env = "CACHET_MOKA_POLICY",
        default_value = "tinylfu",
        help_heading = "Cache"
    )]
    pub moka_policy: MokaPolicy,

    /// Most bytes the store holds (keys, headers and bodies), e.g. 64MiB, 1GiB.
    #[arg(long, env = "CACHET_CAPACITY", default_value = "64MiB", value_parser = parse_size_arg, help_heading = "Cache")]
    pub capacity: u64,

    /// Responses larger than this are streamed through and not stored.
    #[arg(long, env = "CACHET_MAX_OBJECT_SIZE", default_value = "8MiB", value_parser = parse_size_arg, help_heading = "Cache")]
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
    /// 8KiB.
    #[arg(long, env = "CACHET_MAX_HEADER_SIZE", default_value = "64KiB", value_parser = parse_size_arg, help_heading = "Limits and timeouts")]
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

    /// Address of the admin listener (/metrics, /health, /stats, /purge), e.g. 127.0.0.1:9091.
    /// Off when not given.
    #[arg(
        long,
        env = "CACHET_ADMIN",
        value_name = "ADDR",
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
        let Some(upstream) = self.upstream.clone() else {
            return Err(invalid(
                "--upstream",
                "missing: give --upstream URL, CACHET_UPSTREAM or `upstream` in the config file",
            ));
        };
        if self.capacity == 0 {
            return Err(invalid("--capacity", "must be more than 0 bytes"));
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
                url: upstream,
                connect_timeout: self.connect_timeout,
                response_timeout: self.upstream_timeout,
                pool_idle_timeout: Duration::from_secs(90),
                max_concurrency: self.upstream_max_concurrency as usize,
                queue_timeout: self.upstream_queue_timeout,
            },
            backend: self.backend,
            moka_policy: self.moka_policy,
            capacity: self.capacity,
            proxy: ProxyConfig {
                max_object_size: self.max_object_size,
                coalesce_timeout: self.coalesce_timeout,
                stale_if_error: self.stale_if_error,
                rules: StoreRules {
                    allow_set_cookie: self.allow_set_cookie,
                    heuristics: Heuristics {
                        fraction: 0.1,
                        cap: self.heuristic_cap,
                    },
                },
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
            upstream: UpstreamConfig {
                url: upstream,
                connect_timeout: Duration::from_secs(5),
                response_timeout: Duration::from_secs(30),
                pool_idle_timeout: Duration::from_secs(90),
                max_concurrency: 256,
                queue_timeout: Duration::from_secs(5),
            },
            backend: Backend::Moka,
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
        let Some(arg) = cmd
            .get_arguments()
            .filter(settable)
            .find(|a| a.get_id() == name)
        else {
            return Err(ConfigFileError::UnknownKey {
                path: path.to_path_buf(),
                line,
                key: name.to_string(),
                known: known.join(", "),
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
            "listen = \"127.0.0.1:1\"\ncapacity = 1024\nallow_set_cookie = true\n\
             allow_purge_from = [\"127.0.0.1\", \"10.0.0.0/8\"]\nshutdown_timeout = 1.5\n",
        )
        .unwrap();
        let find = |k: &str| settings.iter().find(|s| s.key == k).unwrap();
        assert_eq!(find("listen").env, "CACHET_LISTEN");
        assert_eq!(find("capacity").value, "1024");
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
        let text = include_str!("../cachet.example.toml");
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
            (&["--capacity", "0"][..], "--capacity"),
            (&["--max-connections", "0"], "--max-connections"),
            (&["--max-header-size", "4KiB"], "--max-header-size"),
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
}

//! `[[site]]` tables of the config file: several sites on one listener, each with its host
//! names, its upstream servers and its cache rules.
//!
//! ```toml
//! [[site]]
//! name = "shop"
//! hosts = ["shop.example", "*.shop.example"]
//! upstream = ["http://10.0.0.1:8080", "http://10.0.0.2:8080"]
//! cache_valid = { "200" = "10m", "404" = "1m" }
//! bypass_paths = ["/cart", "/account/"]
//! bypass_cookies = ["session"]
//! ignore_query = ["utm_*", "fbclid"]
//! ```
//!
//! Each key is checked here, and the sites together (unique names and hosts, one default at
//! most), so a file that could not be served is refused at start-up or on reload with the site
//! and key at fault.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{parse_host_header, parse_upstream, ConfigFileError};
use crate::policy::site_rules::{
    normalize_path, DefaultLifetimes, NamePattern, SiteRules, StatusMatch,
};
use crate::policy::StoreRules;
use crate::site::SiteConfig;
use crate::tls::{CertFiles, UpstreamTls};
use crate::upstream::UpstreamConfig;

/// What a site takes from the global settings unless it says otherwise: the upstream timeouts,
/// limits and TLS settings, and the storability rules.
#[derive(Debug, Clone)]
pub struct SiteDefaults {
    /// Upstream settings, with no server.
    pub upstream: UpstreamConfig,
    /// Storability rules, with no default lifetimes.
    pub store: StoreRules,
}

/// Every key a `[[site]]` table takes (the fields of `SiteTable`), for the example file's test.
pub const SITE_KEYS: [&str; 14] = [
    "name",
    "hosts",
    "default",
    "upstream",
    "upstream_host",
    "upstream_ca",
    "upstream_insecure_skip_tls_verify",
    "fail_timeout",
    "cache_valid",
    "bypass_paths",
    "bypass_cookies",
    "ignore_query",
    "tls_cert",
    "tls_key",
];

/// The keys of one `[[site]]` table, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SiteTable {
    name: String,
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    default: bool,
    upstream: OneOrMany,
    upstream_host: Option<String>,
    upstream_ca: Option<PathBuf>,
    upstream_insecure_skip_tls_verify: Option<bool>,
    fail_timeout: Option<String>,
    #[serde(default)]
    cache_valid: BTreeMap<String, String>,
    #[serde(default)]
    bypass_paths: Vec<String>,
    #[serde(default)]
    bypass_cookies: Vec<String>,
    #[serde(default)]
    ignore_query: Vec<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

/// A key that takes one string or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// The part of the file this module reads; the other keys are the flags' (`parse_config_text`).
#[derive(Debug, Deserialize)]
struct FileSites {
    #[serde(default)]
    site: Vec<SiteTable>,
}

/// The sites `text` (the config file at `path`) declares, validated against each other; an
/// empty list when it declares none.
pub fn parse_sites(
    path: &Path,
    text: &str,
    defaults: &SiteDefaults,
) -> Result<Vec<SiteConfig>, ConfigFileError> {
    let file: FileSites = toml::from_str(text).map_err(|e| ConfigFileError::Syntax {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })?;
    let sites = file
        .site
        .into_iter()
        .map(|table| {
            let name = table.name.clone();
            site_config(table, defaults, path).map_err(|reason| ConfigFileError::Site {
                path: path.to_path_buf(),
                site: name,
                reason,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if sites.is_empty() {
        return Ok(sites);
    }
    crate::site::check(&sites).map_err(|e| ConfigFileError::Site {
        path: path.to_path_buf(),
        site: String::new(),
        reason: e.to_string(),
    })?;
    Ok(sites)
}

fn site_config(
    table: SiteTable,
    defaults: &SiteDefaults,
    file: &Path,
) -> Result<SiteConfig, String> {
    let name = table.name.trim().to_string();
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(format!(
            "`name` {name:?}: use 1 to 64 letters, digits, '-', '_' or '.' (it labels metrics)"
        ));
    }
    let hosts = table
        .hosts
        .iter()
        .map(|h| host_pattern(h))
        .collect::<Result<Vec<_>, _>>()?;
    if hosts.is_empty() && !table.default {
        return Err(
            "`hosts` is empty and the site is not `default = true`: no request could reach it"
                .into(),
        );
    }
    let servers = table
        .upstream
        .into_vec()
        .iter()
        .map(|u| parse_upstream(u).map_err(|e| format!("`upstream`: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    if servers.is_empty() {
        return Err("`upstream` lists no server".into());
    }
    let host = table
        .upstream_host
        .as_deref()
        .map(parse_host_header)
        .transpose()
        .map_err(|e| format!("`upstream_host`: {e}"))?;
    let fail_timeout = match &table.fail_timeout {
        Some(text) => duration(text).map_err(|e| format!("`fail_timeout`: {e}"))?,
        None => defaults.upstream.fail_timeout,
    };
    // A relative path is the file's neighbour, wherever cachet was started from.
    let beside = |path: PathBuf| match file.parent() {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path,
    };
    let ca_file = match table.upstream_ca {
        Some(ca) => Some(beside(ca)),
        None => defaults.upstream.tls.ca_file.clone(),
    };
    let listener_tls = match (table.tls_cert, table.tls_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            if hosts.is_empty() {
                return Err("`tls_cert` needs `hosts`: the certificate is chosen by the host name a client asks for".into());
            }
            let files = CertFiles {
                cert: beside(cert),
                key: beside(key),
            };
            // Read when the listener loads its certificates (at start, and on reload, where a
            // bad file refuses the new sites).
            Some(files)
        }
        (Some(_), None) => return Err("`tls_cert` is given without `tls_key`".into()),
        (None, Some(_)) => return Err("`tls_key` is given without `tls_cert`".into()),
    };
    let tls = UpstreamTls {
        ca_file,
        // The site's own setting wins either way: a site can verify under a global opt-out.
        insecure_skip_verify: table
            .upstream_insecure_skip_tls_verify
            .unwrap_or(defaults.upstream.tls.insecure_skip_verify),
    };
    let mut lifetimes = Vec::with_capacity(table.cache_valid.len());
    for (status, lifetime) in &table.cache_valid {
        let matched = StatusMatch::parse(status).ok_or_else(|| {
            format!("`cache_valid`: {status:?} is not a status (200), a class (4xx) or `any`")
        })?;
        // Clamped as a max-age is (RFC 9111 1.2.2), so a huge value cannot wrap a ttl.
        let seconds = duration(lifetime)
            .map_err(|e| format!("`cache_valid` {status:?}: {e}"))?
            .as_secs()
            .min(crate::policy::cache_control::DELTA_SECONDS_MAX);
        lifetimes.push((matched, seconds));
    }
    let bypass_paths = table
        .bypass_paths
        .iter()
        .map(|p| {
            if p.starts_with('/') {
                Ok(normalize_path(p))
            } else {
                Err(format!("`bypass_paths`: {p:?} does not start with '/'"))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let names = |key: &str, list: &[String]| {
        list.iter()
            .map(|n| {
                NamePattern::parse(n).ok_or_else(|| {
                    format!("`{key}`: {n:?} is not a name or a prefix ending in '*'")
                })
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let rules = SiteRules {
        bypass_paths,
        bypass_cookies: names("bypass_cookies", &table.bypass_cookies)?,
        ignore_query: names("ignore_query", &table.ignore_query)?,
    };
    let mut store = defaults.store.clone();
    store.heuristics.by_status = DefaultLifetimes::new(lifetimes);
    Ok(SiteConfig {
        name,
        hosts,
        default: table.default,
        upstream: UpstreamConfig {
            servers,
            host,
            tls,
            fail_timeout,
            ..defaults.upstream.clone()
        },
        rules,
        store,
        tls: listener_tls,
    })
}

/// A host name (`shop.example`) or a wildcard for the names below one (`*.shop.example`),
/// lowercase, without a port.
fn host_pattern(text: &str) -> Result<String, String> {
    // `shop.example.` is `shop.example`, as requests are matched.
    let host = text.trim().trim_end_matches('.').to_ascii_lowercase();
    let name = host.strip_prefix("*.").unwrap_or(&host);
    let valid = !name.is_empty()
        && !name.contains(':')
        && crate::policy::authority::Authority::parse(name, "http").is_ok()
        && !name.contains('*');
    if !valid {
        return Err(format!(
            "`hosts`: {text:?} is not a host name (shop.example) or a wildcard (*.shop.example), without a port"
        ));
    }
    Ok(host)
}

fn duration(text: &str) -> Result<Duration, String> {
    crate::units::parse_duration(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> SiteDefaults {
        let mut upstream = UpstreamConfig::new("http://127.0.0.1:1".parse().unwrap());
        upstream.servers.clear();
        SiteDefaults {
            upstream,
            store: StoreRules::default(),
        }
    }

    fn parse(text: &str) -> Result<Vec<SiteConfig>, String> {
        parse_sites(Path::new("/etc/cachet/cachet.toml"), text, &defaults())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_full_site_table_is_read() {
        let sites = parse(
            r#"
            listen = "127.0.0.1:8080"
            [[site]]
            name = "shop"
            hosts = ["Shop.Example.", "*.shop.example"]
            upstream = ["http://10.0.0.1:8080", "https://10.0.0.2"]
            upstream_host = "shop.internal"
            upstream_ca = "ca.pem"
            fail_timeout = "3s"
            cache_valid = { "200" = "10m", "4xx" = "1m", "any" = "5s", "301" = "1e12" }
            bypass_paths = ["/cart", "//account/"]
            bypass_cookies = ["session", "wp_*"]
            ignore_query = ["utm_*"]

            [[site]]
            name = "rest"
            default = true
            upstream = "http://10.0.0.9"
            "#,
        )
        .unwrap();
        assert_eq!(sites.len(), 2);
        let shop = &sites[0];
        assert_eq!(shop.hosts, ["shop.example", "*.shop.example"]);
        assert_eq!(shop.upstream.servers.len(), 2);
        assert_eq!(shop.upstream.host.as_deref(), Some("shop.internal"));
        assert_eq!(shop.upstream.fail_timeout, Duration::from_secs(3));
        assert_eq!(
            shop.upstream.tls.ca_file.as_deref(),
            Some(Path::new("/etc/cachet/ca.pem"))
        );
        let by_status = &shop.store.heuristics.by_status;
        assert_eq!(by_status.lookup(http::StatusCode::OK), Some(600));
        assert_eq!(by_status.lookup(http::StatusCode::NOT_FOUND), Some(60));
        assert_eq!(by_status.lookup(http::StatusCode::FOUND), Some(5));
        assert_eq!(
            by_status.lookup(http::StatusCode::MOVED_PERMANENTLY),
            Some(crate::policy::cache_control::DELTA_SECONDS_MAX)
        );
        assert_eq!(shop.rules.bypass_paths, ["/cart", "/account/"]);
        assert!(sites[1].default);
        assert_eq!(sites[1].upstream.fail_timeout, Duration::from_secs(10));
        assert!(parse("listen = \"127.0.0.1:1\"").unwrap().is_empty());
    }

    #[test]
    fn bad_sites_are_refused_naming_the_site_and_key() {
        let rows = [
            (
                r#"[[site]]
                name = "a"
                hosts = ["a.example"]
                upstream = "ftp://x""#,
                "site \"a\": `upstream`",
            ),
            (
                r#"[[site]]
                name = "a"
                upstream = "http://x""#,
                "`hosts` is empty",
            ),
            (
                r#"[[site]]
                name = "a b"
                hosts = ["a"]
                upstream = "http://x""#,
                "`name`",
            ),
            (
                r#"[[site]]
                name = "a"
                hosts = ["a.example:8080"]
                upstream = "http://x""#,
                "without a port",
            ),
            (
                r#"[[site]]
                name = "a"
                hosts = ["a"]
                upstream = "http://x"
                cache_valid = { "2xy" = "1m" }"#,
                "`cache_valid`",
            ),
            (
                r#"[[site]]
                name = "a"
                hosts = ["a"]
                upstream = "http://x"
                cache_valid = { "200" = "soon" }"#,
                "`cache_valid` \"200\"",
            ),
            (
                r#"[[site]]
                name = "a"
                hosts = ["a"]
                upstream = "http://x"
                bypass_paths = ["admin"]"#,
                "`bypass_paths`",
            ),
            (
                r#"[[site]]
                name = "a"
                hosts = ["a"]
                upstream = "http://x"
                ignore_query = ["*"]"#,
                "`ignore_query`",
            ),
            (
                r#"[[site]]
                name = "a"
                hosts = ["a"]
                upstream = "http://x"
                colour = "blue""#,
                "unknown field `colour`",
            ),
            (
                r#"[[site]]
                name = "a"
                hosts = ["a"]
                upstream = "http://x"
                [[site]]
                name = "b"
                hosts = ["A"]
                upstream = "http://y""#,
                "host \"a\" is in both site \"a\" and site \"b\"",
            ),
            (
                r#"[[site]]
                name = "a"
                default = true
                upstream = "http://x"
                [[site]]
                name = "b"
                default = true
                upstream = "http://y""#,
                "both marked default",
            ),
        ];
        for (text, want) in rows {
            let err = parse(text).unwrap_err();
            assert!(err.contains(want), "{err:?} should mention {want:?}");
        }
    }
}

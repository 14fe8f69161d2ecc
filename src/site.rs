//! Sites: the host names one instance serves, each with its upstream and its cache rules.
//!
//! A request's effective authority picks its site; the site gives the upstream it is sent to,
//! the rules it is cached by, and the name it is counted and logged under. The table of sites is
//! replaced whole on reload ([`SiteTable::replace`]): a request holds the `Arc<Site>` it started
//! with, so a reload never changes a request in flight, and entries, keyed by authority, stay
//! in the store.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::metrics::SiteSeries;
use crate::policy::authority::Authority;
use crate::policy::site_rules::SiteRules;
use crate::policy::StoreRules;
use crate::upstream::{Upstream, UpstreamConfig, UpstreamSetupError};

/// One site as configured and validated: everything needed to build it.
#[derive(Debug, Clone)]
pub struct SiteConfig {
    /// Its name, in metrics and the access log.
    pub name: String,
    /// Host names it answers for, lowercase: `shop.example`, or `*.shop.example` for every
    /// name below it. Ports do not matter.
    pub hosts: Vec<String>,
    /// The site for requests whose host no site names.
    pub default: bool,
    /// Its upstream servers and how they are reached.
    pub upstream: UpstreamConfig,
    /// What bypasses the cache and what the key leaves out.
    pub rules: SiteRules,
    /// What is storable and the lifetimes given to responses without one.
    pub store: StoreRules,
    /// The certificate the TLS listener offers for this site's host names (by SNI), when it
    /// has one of its own.
    pub tls: Option<crate::tls::CertFiles>,
}

/// Each site's host names and certificate files, for the sites that have their own.
pub fn named_certs(configs: &[SiteConfig]) -> Vec<(Vec<String>, crate::tls::CertFiles)> {
    configs
        .iter()
        .filter_map(|c| c.tls.clone().map(|files| (c.hosts.clone(), files)))
        .collect()
}

/// A site in service.
#[derive(Debug)]
pub struct Site {
    name: Arc<str>,
    upstream: Upstream,
    rules: SiteRules,
    store: StoreRules,
    series: SiteSeries,
    config: SiteConfig,
}

impl Site {
    /// Builds the site's upstream client (reading its TLS files) and metric series.
    pub fn new(config: SiteConfig) -> Result<Site, SiteError> {
        let upstream =
            Upstream::new(config.upstream.clone()).map_err(|source| SiteError::Upstream {
                site: config.name.clone(),
                source,
            })?;
        Ok(Site::with_upstream(config, upstream))
    }

    /// A site around an upstream already built.
    pub fn with_upstream(config: SiteConfig, upstream: Upstream) -> Site {
        Site {
            name: config.name.as_str().into(),
            upstream,
            rules: config.rules.clone(),
            store: config.store.clone(),
            series: SiteSeries::register(&config.name),
            config,
        }
    }

    /// Its name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Where its requests go.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// Its bypass and key rules.
    pub fn rules(&self) -> &SiteRules {
        &self.rules
    }

    /// Its storability and lifetime rules.
    pub fn store_rules(&self) -> &StoreRules {
        &self.store
    }

    /// Its request counters.
    pub fn series(&self) -> &SiteSeries {
        &self.series
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &SiteConfig {
        &self.config
    }
}

/// Why a set of sites was refused.
#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    /// No site at all.
    #[error("no site is configured")]
    Empty,
    /// Two sites with one name.
    #[error("two sites are named {0:?}")]
    DuplicateName(String),
    /// One host name in two sites.
    #[error("host {host:?} is in both site {first:?} and site {second:?}")]
    DuplicateHost {
        /// The host name.
        host: String,
        /// The site that named it first.
        first: String,
        /// The other one.
        second: String,
    },
    /// More than one site marked default.
    #[error("sites {0:?} and {1:?} are both marked default")]
    TwoDefaults(String, String),
    /// The upstream of a site could not be set up.
    #[error("site {site:?}: {source}")]
    Upstream {
        /// The site.
        site: String,
        /// Why.
        #[source]
        source: UpstreamSetupError,
    },
}

/// The sites of one configuration, indexed by host name.
#[derive(Debug)]
pub struct Sites {
    /// Host names from the configuration, hashed with a random key (the names looked up come
    /// from clients).
    exact: HashMap<String, Arc<Site>, ahash::RandomState>,
    /// `*.example.com` patterns as (`.example.com`, site), longest suffix first.
    wildcards: Vec<(String, Arc<Site>)>,
    default: Option<Arc<Site>>,
    all: Vec<Arc<Site>>,
    /// The authority of a request that names none (HTTP/1.0 without `Host`).
    fallback_authority: Authority,
}

impl Sites {
    /// Builds every site of `configs` and checks them together: unique names and hosts, at
    /// most one default.
    pub fn build(configs: &[SiteConfig]) -> Result<Sites, SiteError> {
        let sites = configs
            .iter()
            .map(|c| Site::new(c.clone()).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        Sites::from_sites(sites)
    }

    /// [`Sites::build`] for a reload: a site whose upstream settings (and CA file) are
    /// unchanged keeps the upstream in service, so its pooled connections, exchange slots and
    /// skipped servers carry over, and the concurrency bound is not doubled by fills still
    /// running on the old slots.
    pub fn build_reusing(configs: &[SiteConfig], previous: &Sites) -> Result<Sites, SiteError> {
        let sites = configs
            .iter()
            .map(|c| {
                let kept = previous
                    .all
                    .iter()
                    .find(|p| p.config.name == c.name && p.upstream.is_built_from(&c.upstream));
                match kept {
                    Some(p) => Ok(Arc::new(Site::with_upstream(c.clone(), p.upstream.clone()))),
                    None => Site::new(c.clone()).map(Arc::new),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Sites::from_sites(sites)
    }

    /// One site, the default, around `upstream`: what `--upstream` alone configures.
    pub fn single(upstream: Upstream, store: StoreRules) -> Sites {
        let config = SiteConfig {
            name: "default".into(),
            hosts: Vec::new(),
            default: true,
            upstream: upstream.config().clone(),
            rules: SiteRules::default(),
            store,
            tls: None,
        };
        Sites::from_sites(vec![Arc::new(Site::with_upstream(config, upstream))])
            .expect("one default site is a valid set")
    }

    fn from_sites(all: Vec<Arc<Site>>) -> Result<Sites, SiteError> {
        let configs: Vec<SiteConfig> = all.iter().map(|s| s.config.clone()).collect();
        check(&configs)?;
        let mut exact = HashMap::with_hasher(ahash::RandomState::new());
        let mut wildcards = Vec::new();
        let mut default: Option<Arc<Site>> = None;
        for site in &all {
            if site.config.default {
                default = Some(Arc::clone(site));
            }
            for host in &site.config.hosts {
                let host = host.to_ascii_lowercase();
                match host.strip_prefix('*') {
                    Some(suffix) => wildcards.push((suffix.to_string(), Arc::clone(site))),
                    None => {
                        exact.insert(host, Arc::clone(site));
                    }
                }
            }
        }
        wildcards.sort_by_key(|(suffix, _)| std::cmp::Reverse(suffix.len()));
        let fallback_authority = default
            .as_ref()
            .map(|d| d.upstream.default_authority().clone())
            .unwrap_or_else(|| Authority::parse("localhost", "http").expect("a valid literal"));
        Ok(Sites {
            exact,
            wildcards,
            default,
            all,
            fallback_authority,
        })
    }

    /// The site of a request with this effective authority: the one naming its host, else the
    /// most specific wildcard covering it, else the default; `None` when none applies (the
    /// request is answered 421).
    pub fn pick(&self, authority: &Authority) -> Option<&Arc<Site>> {
        if self.exact.is_empty() && self.wildcards.is_empty() {
            // One default site (`--upstream`): nothing to look up on the hit path.
            return self.default.as_ref();
        }
        // `shop.example.` is `shop.example` (a fully qualified name), as nginx reads it.
        let host = host_of(authority.as_str()).trim_end_matches('.');
        if let Some(site) = self.exact.get(host) {
            return Some(site);
        }
        self.wildcards
            .iter()
            .find(|(suffix, _)| host.len() > suffix.len() && host.ends_with(suffix.as_str()))
            .map(|(_, site)| site)
            .or(self.default.as_ref())
    }

    /// Every site, in the order configured.
    pub fn all(&self) -> &[Arc<Site>] {
        &self.all
    }

    /// The authority given to a request that names none.
    pub fn fallback_authority(&self) -> &Authority {
        &self.fallback_authority
    }
}

/// Checks a set of sites together: at least one, unique names, no host name in two sites, at
/// most one default. Pure, so the config file is checked before anything is built.
pub fn check(configs: &[SiteConfig]) -> Result<(), SiteError> {
    if configs.is_empty() {
        return Err(SiteError::Empty);
    }
    let mut names: HashMap<&str, ()> = HashMap::new();
    let mut owner: HashMap<String, &str> = HashMap::new();
    let mut default: Option<&str> = None;
    for site in configs {
        if names.insert(site.name.as_str(), ()).is_some() {
            return Err(SiteError::DuplicateName(site.name.clone()));
        }
        if site.default {
            if let Some(d) = default {
                return Err(SiteError::TwoDefaults(d.to_string(), site.name.clone()));
            }
            default = Some(&site.name);
        }
        for host in &site.hosts {
            let host = host.to_ascii_lowercase();
            if let Some(first) = owner.insert(host.clone(), &site.name) {
                return Err(SiteError::DuplicateHost {
                    host,
                    first: first.to_string(),
                    second: site.name.clone(),
                });
            }
        }
    }
    Ok(())
}

/// The host of an authority (`host`, `host:port`, `[v6]:port`), without its port.
fn host_of(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    match authority.rsplit_once(':') {
        Some((host, _)) => host,
        None => authority,
    }
}

/// The sites in service, replaceable at once by a reload. A request loads the current table
/// (an atomic pointer load) and keeps the `Arc<Site>` it picks for its whole life.
#[derive(Debug)]
pub struct SiteTable(ArcSwap<Sites>);

impl SiteTable {
    /// A table serving `sites`.
    pub fn new(sites: Sites) -> Self {
        SiteTable(ArcSwap::from_pointee(sites))
    }

    /// The sites now in service.
    pub fn current(&self) -> arc_swap::Guard<Arc<Sites>> {
        self.0.load()
    }

    /// The sites now in service, as an owned handle.
    pub fn snapshot(&self) -> Arc<Sites> {
        self.0.load_full()
    }

    /// Serves `sites` from now on; requests already running keep the site they picked.
    pub fn replace(&self, sites: Sites) {
        self.0.store(Arc::new(sites));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(name: &str, hosts: &[&str], default: bool) -> SiteConfig {
        SiteConfig {
            name: name.into(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            default,
            upstream: UpstreamConfig::new("http://127.0.0.1:9".parse().unwrap()),
            rules: SiteRules::default(),
            store: StoreRules::default(),
            tls: None,
        }
    }

    fn authority(text: &str) -> Authority {
        Authority::parse(text, "http").unwrap()
    }

    #[tokio::test]
    async fn a_request_picks_the_site_of_its_host() {
        let sites = Sites::build(&[
            config("shop", &["shop.example", "*.shop.example"], false),
            config("deep", &["*.eu.shop.example"], false),
            config("blog", &["blog.example"], true),
        ])
        .unwrap();
        let pick = |a: &str| sites.pick(&authority(a)).map(|s| s.name().to_string());
        assert_eq!(pick("shop.example").as_deref(), Some("shop"));
        assert_eq!(pick("shop.example:8080").as_deref(), Some("shop"));
        assert_eq!(pick("SHOP.example").as_deref(), Some("shop"));
        assert_eq!(pick("shop.example.").as_deref(), Some("shop"));
        assert_eq!(pick("www.shop.example.:8080").as_deref(), Some("shop"));
        assert_eq!(pick("www.shop.example").as_deref(), Some("shop"));
        assert_eq!(pick("x.eu.shop.example").as_deref(), Some("deep"));
        assert_eq!(pick("blog.example").as_deref(), Some("blog"));
        assert_eq!(
            pick("other.example").as_deref(),
            Some("blog"),
            "the default"
        );
        assert_eq!(pick("[::1]:80").as_deref(), Some("blog"));
        assert_eq!(
            pick("evilshop.example").as_deref(),
            Some("blog"),
            "a suffix is not a subdomain"
        );
    }

    #[tokio::test]
    async fn a_rebuild_keeps_the_upstreams_whose_settings_did_not_change() {
        let before =
            Sites::build(&[config("a", &["a"], false), config("b", &["b"], false)]).unwrap();
        let mut changed = config("b", &["b"], false);
        changed.upstream.fail_timeout = std::time::Duration::from_secs(1);
        let after =
            Sites::build_reusing(&[config("a", &["a", "a2"], false), changed], &before).unwrap();
        let same = |i: usize| {
            before.all()[i]
                .upstream()
                .is_same(after.all()[i].upstream())
        };
        assert!(same(0), "a kept its upstream");
        assert!(!same(1), "b's settings changed: a new one");
        assert!(
            after.pick(&authority("a2")).is_some(),
            "the site itself is the new one"
        );
    }

    #[tokio::test]
    async fn without_a_default_an_unknown_host_has_no_site() {
        let sites = Sites::build(&[config("shop", &["shop.example"], false)]).unwrap();
        assert!(sites.pick(&authority("other.example")).is_none());
        assert!(sites.pick(&authority("shop.example")).is_some());
    }

    #[tokio::test]
    async fn conflicting_sites_are_refused() {
        let dup_host = Sites::build(&[
            config("a", &["x.example"], false),
            config("b", &["X.example"], false),
        ]);
        assert!(
            matches!(dup_host, Err(SiteError::DuplicateHost { .. })),
            "{dup_host:?}"
        );
        let dup_name = Sites::build(&[config("a", &["x"], false), config("a", &["y"], false)]);
        assert!(matches!(dup_name, Err(SiteError::DuplicateName(_))));
        let two_defaults = Sites::build(&[config("a", &[], true), config("b", &[], true)]);
        assert!(matches!(two_defaults, Err(SiteError::TwoDefaults(..))));
        assert!(matches!(Sites::build(&[]), Err(SiteError::Empty)));
    }
}

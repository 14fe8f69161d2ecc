//! The request path: key, lookup, decide, then serve from the store, revalidate, or fetch.
//!
//! ```text
//! key      = policy::key::cache_key(request)          pure
//! lookup   = store.get(key)                           sync: a lock held for an Arc clone
//! decide   = policy::freshness::decide(entry, now)    pure
//! fresh    → respond from the entry (Age, Cache-Status: hit)
//! stale    → stale-while-revalidate, or revalidate (conditional request, 304 merges)
//! miss     → coalesced fetch, streamed to the client while it is buffered for the store
//! ```
//!
//! Upstream exchanges that may fill the store run in their own task ([`exchange`]), so a client
//! that disconnects cancels neither the fill nor the followers waiting on it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LOCATION, LOCATION};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::oneshot;

use crate::body::{self, Body, BoxError};
use crate::coalesce::{Coalescer, Flight, Leader, Outcome};
use crate::metrics;
use crate::policy::authority::{effective_authority, Authority};
use crate::policy::cache_control::request_no_cache;
use crate::policy::conditional::{self, Precondition};
use crate::policy::freshness::{current_age, decide, freshness_lifetime, Stored};
use crate::policy::headers::{drop_framing_copied_beside_chunked, strip_hop_by_hop};
use crate::policy::key::{cache_key_with_query, same_origin_key};
use crate::policy::purge::PurgeTarget;
use crate::policy::targeted;
use crate::policy::vary::{self, VarySpec};
use crate::policy::{self, CacheControl, CacheStatus, Decision, Fwd, StoreRules};
use crate::revalidate::Revalidator;
use crate::shared::{self, codec, FillLock, Lock, Shared};
use crate::site::{Site, SiteTable, Sites};
use crate::store::{CachedResponse, Entry, Key, Store, VariantMembers};
use crate::upstream::{add_via, HeldBody, Upstream};

pub use crate::outcome::CacheResult;

mod fill;
mod hit_for_miss;
mod purge;
mod respond;

use fill::{exchange, FillRequest, Head, Stale};
use hit_for_miss::HitForMiss;
use purge::{FillRegistry, FillTicket};
use respond::{
    apply_range, error_response, only_if_cached_miss, precondition_response, serve_stored,
};
pub use respond::{Refusal, CACHE_STATUS};

/// How the proxy treats requests, beyond what the RFCs fix.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Responses larger than this are streamed through and not stored.
    pub max_object_size: u64,
    /// How long a coalesced request waits for its leader before fetching for itself.
    pub coalesce_timeout: Duration,
    /// The `stale-if-error` window given to responses that set none (zero: none).
    pub stale_if_error: Duration,
    /// What may be stored.
    pub rules: StoreRules,
    /// The longest request head (target and header fields) accepted: a longer target gets 414,
    /// longer fields 431. The server sets it from its `max_header_size`, so one limit governs
    /// both hyper's read buffer and the proxy's own check.
    pub max_head_size: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            max_object_size: 8 << 20,
            coalesce_timeout: Duration::from_secs(10),
            stale_if_error: Duration::ZERO,
            rules: StoreRules::default(),
            max_head_size: 64 << 10,
        }
    }
}

/// Time spent waiting on the upstream for a request, attached as a response extension for the
/// access log.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamTime(pub Duration);

/// Marks a request that arrived over TLS (a request extension the TLS listener sets): its key's
/// scheme is `https`, so an entry fetched for `http://` is never served as `https://`.
#[derive(Debug, Clone, Copy)]
pub struct OverTls;

/// The caching proxy: cheap to clone, one per server.
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    /// The sites in service; a request keeps the one it picked, whatever a reload does.
    sites: SiteTable,
    coalescer: Coalescer,
    config: ProxyConfig,
    revalidator: Revalidator,
    next_index_id: AtomicU64,
    /// The fills in flight, so that a purge voids those of the URLs it removes (and only
    /// those): what a purge removed must not come back from a response (or a 304 refreshing a
    /// stale copy) that was already on its way.
    fills: FillRegistry,
    /// URLs whose last response could not be stored; their requests are not coalesced.
    hit_for_miss: HitForMiss,
    /// The cache other instances share, looked up after the local store; `None` without
    /// `--shared`.
    shared: Option<Arc<Shared>>,
}

/// What a purge removed, here and in the shared tier.
#[derive(Debug)]
pub struct PurgeReport {
    /// Entries removed from this instance's store (a URL with Vary variants counts its index
    /// and each variant).
    pub local: u64,
    /// URLs removed from the shared tier (every instance then removes them locally), the error
    /// that kept the purge from reaching the tier, or `None` without a shared tier.
    pub shared: Option<Result<u64, shared::tier::TierError>>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("store", &self.inner.store.name())
            .field("sites", &self.inner.sites.current().all().len())
            .finish()
    }
}

/// A copy of `headers` whose names and values own their bytes.
///
/// hyper parses a response head without copying: each value is a slice of the connection's read
/// buffer, and keeps that whole buffer (kilobytes, often with the start of the body) alive for as
/// long as the value lives. A stored entry lives for hours, so it gets values of its own, and the
/// store's byte count stays close to the memory really held.
fn detached(headers: &HeaderMap) -> HeaderMap {
    let mut owned = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let name =
            HeaderName::from_bytes(name.as_str().as_bytes()).unwrap_or_else(|_| name.clone());
        let mut copy = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        copy.set_sensitive(value.is_sensitive());
        owned.append(name, copy);
    }
    owned
}

/// A store entry known to be a response, not a variant index: checked once where it is made,
/// so the code that serves, refreshes or falls back on it cannot be handed an index.
#[derive(Clone)]
struct StoredResponse(Arc<Entry>);

impl StoredResponse {
    fn new(entry: Arc<Entry>) -> Option<Self> {
        entry.response().is_some().then_some(StoredResponse(entry))
    }
}

impl std::ops::Deref for StoredResponse {
    type Target = CachedResponse;

    fn deref(&self) -> &CachedResponse {
        match &*self.0 {
            Entry::Response(r) => r,
            Entry::Variants { .. } => unreachable!("StoredResponse::new admits responses only"),
        }
    }
}

/// A stored response found for a request, and the key it is stored under.
struct Found {
    entry: StoredResponse,
    key: Key,
}

impl Found {
    fn response(&self) -> &CachedResponse {
        &self.entry
    }
}

/// What a fetch stands for besides its own client: the local followers it leads, and the fill
/// lock it holds for the other instances of the fleet.
#[derive(Default)]
struct Role {
    leader: Option<Leader>,
    lock: Option<FillLock>,
}

enum Lookup {
    Found(Found),
    Miss(Fwd),
}

impl Proxy {
    /// A proxy in front of `upstream`, caching in `store`, refreshing stale entries on
    /// `revalidator`'s workers.
    pub fn new(
        store: Arc<dyn Store>,
        upstream: Upstream,
        config: ProxyConfig,
        revalidator: Revalidator,
    ) -> Self {
        Self::with_shared(store, upstream, config, revalidator, None)
    }

    /// A proxy like [`Proxy::new`] that looks up misses in `shared` (when given) before the
    /// upstream, and writes what it fetches there.
    pub fn with_shared(
        store: Arc<dyn Store>,
        upstream: Upstream,
        config: ProxyConfig,
        revalidator: Revalidator,
        shared: Option<Arc<Shared>>,
    ) -> Self {
        let sites = Sites::single(upstream, config.rules.clone());
        Self::with_sites(store, sites, config, revalidator, shared)
    }

    /// A proxy serving `sites`, each request sent to the upstream of the site its host picks.
    pub fn with_sites(
        store: Arc<dyn Store>,
        sites: Sites,
        config: ProxyConfig,
        revalidator: Revalidator,
        shared: Option<Arc<Shared>>,
    ) -> Self {
        Proxy {
            inner: Arc::new(Inner {
                store,
                sites: SiteTable::new(sites),
                coalescer: Coalescer::default(),
                config,
                revalidator,
                next_index_id: AtomicU64::new(1),
                fills: FillRegistry::default(),
                hit_for_miss: HitForMiss::new(hit_for_miss::REMEMBER_FOR),
                shared,
            }),
        }
    }

    /// Serves `sites` from now on (a reload). Requests in flight finish with the site they
    /// started with; the store, the coalescer and the fills in flight are kept.
    pub fn replace_sites(&self, sites: Sites) {
        self.inner.sites.replace(sites);
    }

    /// The sites in service.
    pub fn sites(&self) -> Arc<Sites> {
        self.inner.sites.snapshot()
    }

    /// The shared tier, when there is one.
    pub fn shared(&self) -> Option<&Arc<Shared>> {
        self.inner.shared.as_ref()
    }

    /// Removes what `target` names from this instance's store only (and voids its fills in
    /// flight); used for purges other instances announce. Returns the entries removed.
    pub fn purge_local(&self, target: &PurgeTarget) -> u64 {
        match target.single_key() {
            Some(url) => self.purge_url(url),
            None => self.purge_where(&|k: &Key| target.picks(k.as_str())),
        }
    }

    /// Removes what `target` names everywhere: from this instance's store, from the shared tier,
    /// and (through the tier's events) from every other instance's store. The local part runs on
    /// a blocking thread (a prefix purge walks the store), so the runtime goes on serving.
    pub async fn purge(&self, target: &PurgeTarget) -> PurgeReport {
        let proxy = self.clone();
        let what = target.clone();
        // The tier first: a lookup that reads it before the removal and promotes what it found
        // is voided by the local purge that follows; in the other order it would bring the
        // purged response back here.
        let shared = match &self.inner.shared {
            Some(shared) => Some(shared.remove(target).await),
            None => None,
        };
        let local = tokio::task::spawn_blocking(move || proxy.purge_local(&what))
            .await
            .unwrap_or_else(|_| self.purge_local(target));
        if let Some(tier) = &self.inner.shared {
            // Announced whatever became of the tier's part: the others' stores do not need it.
            let _ = tier.announce(target).await;
        }
        PurgeReport { local, shared }
    }

    /// The store behind this proxy.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Removes every stored response for one URL (all its Vary variants) and voids that URL's
    /// fills in flight. `url` is a cache key (`http://host/path?query`). Costs O(its variants),
    /// whatever the size of the store. Returns the number of entries removed.
    pub fn purge_url(&self, url: &str) -> u64 {
        purge::purge_url(&*self.inner.store, &self.inner.fills, &Key::new(url))
    }

    /// Removes every stored response whose key starts with `prefix` (a cache key prefix such as
    /// `http://host/path/`). Returns the number of entries removed.
    pub fn purge_prefix(&self, prefix: &str) -> u64 {
        self.purge_where(&|k: &Key| k.as_str().starts_with(prefix))
    }

    /// Empties the store. Returns the number of entries removed.
    pub fn purge_all(&self) -> u64 {
        self.purge_where(&|_: &Key| true)
    }

    /// Removes every stored entry whose key `doomed` picks, and keeps the fills of those keys
    /// already in flight from storing their responses. The store is scanned once and emptied a
    /// batch at a time, so hits never wait for the whole pass. Returns the number of entries
    /// removed.
    pub fn purge_where(&self, doomed: &dyn Fn(&Key) -> bool) -> u64 {
        purge::purge_where(&*self.inner.store, &self.inner.fills, doomed)
    }

    /// Upstream exchange slots free now: `--upstream-max-concurrency` less the exchanges in
    /// flight (fills whose client left included).
    pub fn upstream_slots_free(&self) -> usize {
        let sites = self.inner.sites.current();
        sites.all().iter().map(|s| s.upstream().free_slots()).sum()
    }

    /// `key` (a full `scheme://authority/path?query` key) as the store holds it: filtered by
    /// the query rules of the site its authority picks (unchanged when none does).
    pub fn site_key(&self, key: &str) -> String {
        let Some((scheme, rest)) = key.split_once("://") else {
            return key.to_string();
        };
        let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
        let sites = self.inner.sites.current();
        match Authority::parse(authority, scheme)
            .ok()
            .and_then(|a| sites.pick(&a).cloned())
        {
            Some(site) => site.rules().filter_key(key),
            None => key.to_string(),
        }
    }

    /// The cache key a request is stored under (its validated effective authority and target),
    /// or the refusal the proxy would answer it with; used by PURGE.
    pub fn key_of(&self, parts: &Parts) -> Result<Key, Refusal> {
        self.inner.target(parts).map(|t| t.key)
    }

    /// Handles one client request.
    pub async fn handle(
        &self,
        req: Request<Incoming>,
        client: Option<SocketAddr>,
    ) -> Response<Body> {
        self.handle_for_site(req, client).await.0
    }

    /// [`Proxy::handle`], also returning the site that served the request (none when it was
    /// refused before one was picked), for the access log. Returned beside the response rather
    /// than in its extensions: an extension insert is a map insert on every hit.
    pub async fn handle_for_site(
        &self,
        req: Request<Incoming>,
        client: Option<SocketAddr>,
    ) -> (Response<Body>, Option<Arc<Site>>) {
        let started = Instant::now();
        let (parts, body) = req.into_parts();
        let mut site = None;
        let mut resp = match self.inner.target(&parts) {
            Err(refusal) => refusal.into_response(),
            Ok(target) => {
                site = Some(Arc::clone(&target.site));
                let bypass = target.site.rules().bypass(parts.uri.path(), &parts.headers);
                // A GET or HEAD that carries content is refused (400), not looked up and not
                // passed on. RFC 9110 9.3.1 gives such content no meaning, and origins differ on
                // it: one that answers without reading it would take the content for the next
                // request on a pooled connection (smuggling), and a fill would send the request
                // without it. The refusal closes the connection, so the unread content is never
                // taken for a request here either.
                let has_body = !http_body::Body::is_end_stream(&body);
                let cacheable = policy::is_cacheable_method(&parts.method);
                if cacheable && has_body {
                    Refusal::new(
                        StatusCode::BAD_REQUEST,
                        "a GET or HEAD request may not carry content".into(),
                    )
                    .into_response()
                } else if cacheable && bypass.is_none() {
                    self.inner
                        .clone()
                        .lookup_and_serve(parts, target, client)
                        .await
                } else {
                    let detail = match bypass {
                        Some(policy::site_rules::Bypass::Path) => "bypass-path",
                        Some(policy::site_rules::Bypass::Cookie) => "bypass-cookie",
                        None => "method",
                    };
                    let (body, failed) = body::Watched::new(body);
                    let body = body.map_err(BoxError::from).boxed();
                    let resp = self
                        .inner
                        .clone()
                        .pass(parts, target, body, client, detail)
                        .await;
                    if failed.load(Ordering::Acquire) && resp.status().is_server_error() {
                        // The exchange failed on the client's own body, not the upstream's fault.
                        Refusal::new(StatusCode::BAD_REQUEST, "malformed request body".into())
                            .into_response()
                    } else {
                        resp
                    }
                }
            }
        };
        let result = *resp
            .extensions_mut()
            .get_or_insert_with(|| CacheResult::Error);
        metrics::record_request(result, started.elapsed());
        if let Some(site) = &site {
            site.series().record(result);
        }
        (resp, site)
    }
}

/// What a request is about once its target is validated: the effective authority (for the
/// upstream `Host`) and the cache key built from it. Both come from one computation, so the key
/// a response is stored under always names the authority the upstream was asked for.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) authority: Authority,
    pub(crate) key: Key,
    /// The target sent upstream when it is not the request's own: the request's less the query
    /// parameters the site leaves out of the key, so that the upstream answers exactly what the
    /// key names (an ignored parameter the origin read anyway would let one request's answer be
    /// stored for others). `None` (the common case, and every hit) costs no copy.
    pub(crate) filtered_uri: Option<Box<http::Uri>>,
    /// The site the authority picked: its upstream, its rules.
    pub(crate) site: Arc<Site>,
}

impl Target {
    fn upstream(&self) -> &Upstream {
        self.site.upstream()
    }

    /// The target to send upstream for a request whose own is `requested`.
    pub(crate) fn upstream_uri<'a>(&'a self, requested: &'a http::Uri) -> &'a http::Uri {
        self.filtered_uri.as_deref().unwrap_or(requested)
    }
}

impl Inner {
    /// Validates the request target and computes its one effective authority, or answers the
    /// refusal: 400 for a bad or ambiguous authority, 501 for CONNECT, 414 for a target longer
    /// than the head limit.
    fn target(&self, parts: &Parts) -> Result<Target, Refusal> {
        if parts.method == Method::CONNECT {
            return Err(Refusal::new(
                StatusCode::NOT_IMPLEMENTED,
                "CONNECT is not supported: this is a reverse proxy".into(),
            ));
        }
        let target_len = parts.uri.path_and_query().map_or(0, |p| p.as_str().len());
        if target_len > self.config.max_head_size {
            return Err(Refusal::new(
                StatusCode::URI_TOO_LONG,
                "request target too long".into(),
            ));
        }
        let head: usize = target_len
            + parts
                .headers
                .iter()
                .map(|(n, v)| n.as_str().len() + v.len() + 4)
                .sum::<usize>();
        if head > self.config.max_head_size {
            return Err(Refusal::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request header fields too large".into(),
            ));
        }
        // The listener's scheme, never the client's: the key's scheme, and the default port
        // the authority is normalised against.
        let scheme = if parts.extensions.get::<OverTls>().is_some() {
            "https"
        } else {
            "http"
        };
        let sites = self.sites.current();
        let authority =
            effective_authority(parts, scheme, sites.fallback_authority()).map_err(|e| {
                Refusal::new(StatusCode::BAD_REQUEST, format!("bad request: {e}").into())
            })?;
        let Some(site) = sites.pick(&authority) else {
            return Err(Refusal::new(
                StatusCode::MISDIRECTED_REQUEST,
                format!("no site is configured for host {authority}").into(),
            ));
        };
        let query = site.rules().key_query(parts.uri.query());
        let key = cache_key_with_query(scheme, &authority, parts.uri.path(), query.as_deref());
        let filtered = match &query {
            Some(std::borrow::Cow::Owned(_)) => true,
            None => parts.uri.query().is_some(),
            Some(std::borrow::Cow::Borrowed(_)) => false,
        };
        let filtered_uri = if filtered {
            let path = match parts.uri.path() {
                "" => "/",
                p => p,
            };
            let target = match &query {
                Some(q) => format!("{path}?{q}"),
                None => path.to_string(),
            };
            let uri = http::Uri::builder()
                .path_and_query(target)
                .build()
                .map_err(|_| Refusal::new(StatusCode::BAD_REQUEST, "bad request target".into()))?;
            Some(Box::new(uri))
        } else {
            None
        };
        Ok(Target {
            authority,
            key,
            filtered_uri,
            site: Arc::clone(site),
        })
    }

    fn lookup(&self, key: &Key, headers: &HeaderMap) -> Lookup {
        let Some(entry) = self.store.get(key) else {
            return Lookup::Miss(Fwd::UriMiss);
        };
        match &*entry {
            Entry::Response(r) => {
                if vary::matches(&r.vary_values, headers) {
                    Lookup::Found(Found {
                        entry: StoredResponse(Arc::clone(&entry)),
                        key: key.clone(),
                    })
                } else {
                    Lookup::Miss(Fwd::VaryMiss)
                }
            }
            Entry::Variants { names, id, .. } => {
                let values = vary::request_values(headers, names);
                let variant = vary::variant_key(key, *id, &values);
                match self.store.get(&variant).and_then(StoredResponse::new) {
                    Some(entry) => Lookup::Found(Found {
                        entry,
                        key: variant,
                    }),
                    None => Lookup::Miss(Fwd::VaryMiss),
                }
            }
        }
    }

    async fn lookup_and_serve(
        self: Arc<Self>,
        parts: Parts,
        target: Target,
        client: Option<SocketAddr>,
    ) -> Response<Body> {
        let key = target.key.clone();
        let req_cc = CacheControl::from_headers(&parts.headers);
        let no_cache = request_no_cache(&parts.headers, &req_cc);

        let fwd = match self.lookup(&key, &parts.headers) {
            Lookup::Found(found) => {
                let now = SystemTime::now();
                let stored = found.response();
                let age = stored.age_at(now);
                let decision = decide(
                    Stored {
                        cc: &stored.cc,
                        lifetime: stored.lifetime,
                        age,
                    },
                    &req_cc,
                    no_cache,
                );
                match decision {
                    Decision::Fresh { ttl } => {
                        let result = if ttl > 0 {
                            CacheResult::Hit
                        } else {
                            CacheResult::Stale
                        };
                        return serve_stored(&parts, stored, age, CacheStatus::hit(ttl), result);
                    }
                    Decision::StaleWhileRevalidate { ttl } => {
                        self.refresh_in_background(&parts, &target, &found);
                        let mut status = CacheStatus::hit(ttl);
                        status.detail = Some("stale-while-revalidate".into());
                        return serve_stored(&parts, stored, age, status, CacheResult::Stale);
                    }
                    Decision::Revalidate {
                        ttl,
                        stale_if_error,
                    } => {
                        if req_cc.only_if_cached {
                            return only_if_cached_miss();
                        }
                        let fwd = if no_cache
                            || req_cc.max_age.is_some_and(|m| age > m)
                            || (ttl > 0 && !stored.cc.no_cache_all())
                        {
                            Fwd::Request
                        } else {
                            Fwd::Stale
                        };
                        let mut status = CacheStatus::forward(fwd);
                        status.ttl = Some(ttl);
                        let flight = found.key.clone();
                        let stale = Stale {
                            entry: found.entry,
                            serve_on_error: stale_if_error,
                        };
                        return self
                            .coalesced_fetch(parts, target, &flight, Some(stale), status, client)
                            .await;
                    }
                }
            }
            Lookup::Miss(fwd) => fwd,
        };

        if req_cc.only_if_cached {
            return only_if_cached_miss();
        }
        // A HEAD on a miss goes through as it is: it yields no body to store. (A range on a
        // miss is a fill of the whole object, cut to the range on the way to the client.)
        if parts.method == Method::HEAD {
            let mut status = CacheStatus::forward(fwd);
            status.detail = Some("head".into());
            return self.forward_uncached(parts, &target, client, status).await;
        }
        if self.hit_for_miss.contains(&key) {
            // The last response for this URL could not be stored: waiting for another request's
            // response would only serialise the two.
            return self
                .fetch(
                    parts,
                    target,
                    Role::default(),
                    None,
                    CacheStatus::forward(fwd),
                    client,
                )
                .await;
        }
        self.coalesced_fetch(parts, target, &key, None, CacheStatus::forward(fwd), client)
            .await
    }

    /// Fetches (or revalidates `stale`) once per `flight` key: the first caller goes upstream,
    /// the others wait for its result and serve it when it fits their request, or fetch for
    /// themselves when it does not (not shareable, another variant, or too slow).
    async fn coalesced_fetch(
        self: Arc<Self>,
        parts: Parts,
        target: Target,
        flight: &Key,
        stale: Option<Stale>,
        mut status: CacheStatus,
        client: Option<SocketAddr>,
    ) -> Response<Body> {
        match self.coalescer.join(flight) {
            Flight::Leader(leader) => {
                let mut lock = None;
                match (&stale, self.shared.clone()) {
                    (None, Some(shared)) => {
                        match self.via_shared(&shared, &parts, &target, &mut status).await {
                            Ok((resp, entry)) => {
                                leader.finish(entry.map_or(Outcome::NotShared, Outcome::Shared));
                                return resp;
                            }
                            Err(held) => lock = held,
                        }
                    }
                    (Some(_), Some(shared)) => {
                        // Another instance may have refreshed the URL already: a fresh copy in
                        // the tier saves the revalidation (one that the request's own directives
                        // rule out is not taken, as `shared_hit` decides freshness for it).
                        let mut fresher = status.clone();
                        if let Some((resp, entry)) = self
                            .shared_hit(&shared, &parts, &target, &mut fresher)
                            .await
                        {
                            leader.finish(entry.map_or(Outcome::NotShared, Outcome::Shared));
                            return resp;
                        }
                    }
                    (_, None) => {}
                }
                let role = Role {
                    leader: Some(leader),
                    lock,
                };
                self.fetch(parts, target, role, stale, status, client).await
            }
            Flight::Follower(follower) => {
                let shared = follower.wait(self.config.coalesce_timeout).await;
                if let Some(stored) = shared.and_then(StoredResponse::new) {
                    if vary::matches(&stored.vary_values, &parts.headers) {
                        status.fwd_status = Some(stored.status.as_u16());
                        status.collapsed = true;
                        let age = current_age(stored.received(), SystemTime::now());
                        status.ttl = Some(stored.lifetime as i64 - age as i64);
                        return serve_stored(&parts, &stored, age, status, CacheResult::Coalesced);
                    }
                }
                self.fetch(parts, target, Role::default(), stale, status, client)
                    .await
            }
        }
    }

    /// Looks a local miss up in the shared tier. A hit is promoted into the local store and
    /// served; on a miss this instance takes the URL's fill lock (the caller fetches with it)
    /// or, when another instance holds it, waits for that fill and serves it from the tier.
    /// `Err` carries the lock to fetch with, if one was taken.
    async fn via_shared(
        &self,
        shared: &Arc<Shared>,
        parts: &Parts,
        target: &Target,
        status: &mut CacheStatus,
    ) -> Result<(Response<Body>, Option<Arc<Entry>>), Option<FillLock>> {
        if request_no_cache(&parts.headers, &CacheControl::from_headers(&parts.headers)) {
            // Nothing stored may answer it, here or in the tier: straight to the upstream,
            // without making the other instances wait on this fetch.
            return Err(None);
        }
        if let Some(hit) = self.shared_hit(shared, parts, target, status).await {
            return Ok(hit);
        }
        let deadline = Instant::now() + self.config.coalesce_timeout.min(shared.config().lock_ttl);
        loop {
            match shared.lock(&target.key).await {
                Lock::Acquired(lock) => return Err(Some(lock)),
                Lock::Unavailable => return Err(None),
                Lock::Busy => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(None);
            }
            let wake = shared.wait_for_fill(&target.key, deadline - now).await;
            if wake == shared::Wake::NotStored {
                return Err(None);
            }
            // Served from another instance's fill it waited for, if it is there: `collapsed` is
            // claimed only then (a request that goes on to fetch for itself was not collapsed).
            let mut waited = status.clone();
            waited.collapsed = true;
            if let Some(hit) = self.shared_hit(shared, parts, target, &mut waited).await {
                *status = waited;
                return Ok(hit);
            }
            if wake == shared::Wake::Stored {
                // Written, yet not there or not for this request (another variant, a write
                // Redis refused): fetch now rather than queue behind the next lock holder.
                return Err(None);
            }
            // No event within the poll interval: the holder may have died; ask for the lock again.
        }
    }

    /// The response the shared tier holds for this request, served and promoted into the local
    /// store, if it is there, decodes as ours for this key, matches the request's Vary
    /// selection and may be served without the upstream. A record that fails to decode is
    /// deleted from the tier. The second value is what local followers may be given.
    async fn shared_hit(
        &self,
        shared: &Shared,
        parts: &Parts,
        target: &Target,
        status: &mut CacheStatus,
    ) -> Option<(Response<Body>, Option<Arc<Entry>>)> {
        let key = &target.key;
        // Registered before the lookup: a purge that arrives while it is on its way voids it,
        // and what it found is then neither stored nor served.
        let ticket = self.fills.begin(key);
        let (record, field) = match shared.lookup(key).await {
            shared::Found::Nothing => {
                metrics::record_shared_lookup("miss");
                return None;
            }
            shared::Found::Response(record) => (record, None),
            shared::Found::Names(names) => {
                let Ok(names) = codec::decode_names(&names) else {
                    metrics::record_shared_lookup("refused");
                    shared.forget(key, None);
                    return None;
                };
                let values = vary::request_values(&parts.headers, &names);
                let field = codec::variant_field(&values);
                let Some(record) = shared.lookup_variant(key, &field).await else {
                    metrics::record_shared_lookup("miss");
                    return None;
                };
                (record, Some(field))
            }
        };
        let now = SystemTime::now();
        let decoded = match codec::decode(key.as_str(), &record, now) {
            Ok(decoded) => decoded,
            Err(e) => {
                metrics::record_shared_lookup("refused");
                tracing::debug!(key = key.as_str(), error = %e, "shared record refused");
                shared.forget(key, field);
                return None;
            }
        };
        if !vary::matches(&decoded.vary_values, &parts.headers) {
            metrics::record_shared_lookup("miss");
            return None;
        }
        let (cc, lifetime) = self.freshness(
            target.site.store_rules(),
            decoded.status,
            &decoded.headers,
            decoded.response_time,
        );
        let response = decoded.into_response(cc, lifetime);
        let req_cc = CacheControl::from_headers(&parts.headers);
        let no_cache = request_no_cache(&parts.headers, &req_cc);
        let age = response.age_at(now);
        let stored = Stored {
            cc: &response.cc,
            lifetime: response.lifetime,
            age,
        };
        let ttl = match decide(stored, &req_cc, no_cache) {
            Decision::Fresh { ttl } if ttl > 0 => ttl,
            _ => {
                metrics::record_shared_lookup("stale");
                return None;
            }
        };
        let (entry, held) = self.keep(key, &parts.headers, response, &ticket);
        if ticket.voided() {
            return None;
        }
        metrics::record_shared_lookup("hit");
        let mut line = CacheStatus::hit(ttl);
        line.detail = Some("shared".into());
        line.collapsed = status.collapsed;
        *status = line.clone();
        let resp = serve_stored(parts, &entry, age, line, CacheResult::SharedHit);
        Some((resp, held.then(|| Arc::clone(&entry.0))))
    }

    /// Queues a background refresh of a stale entry (RFC 5861 stale-while-revalidate). One key is
    /// refreshed once at a time (the coalescer's leader role); a full queue drops the refresh.
    fn refresh_in_background(self: &Arc<Self>, parts: &Parts, target: &Target, found: &Found) {
        let Flight::Leader(leader) = self.coalescer.join(&found.key) else {
            return; // already being refreshed
        };
        let inner = Arc::clone(self);
        let primary = target.key.clone();
        let fill = FillRequest::new(parts, target, None);
        let stale = Stale {
            entry: found.entry.clone(),
            serve_on_error: false,
        };
        let job = async move {
            // A refresh counts against the upstream bound like any exchange; one that finds no
            // slot is dropped (the stale entry stays, a later request refreshes it).
            let Ok(permit) = fill.upstream().acquire().await else {
                metrics::record_refresh_dropped();
                return;
            };
            // Nobody reads the report: the client was already served the stale entry. The
            // receiver is dropped at once so the exchange sees that, and fills the store without
            // streaming into a channel no one drains.
            let (tx, rx) = oneshot::channel();
            drop(rx);
            exchange(inner, permit, fill, primary, Some(leader), Some(stale), tx).await;
        };
        if !self.revalidator.try_submit(Box::pin(job)) {
            metrics::record_refresh_dropped();
        }
    }

    /// Fetches a GET for the store: the exchange runs in its own task; this waits for the response
    /// head and streams the body as it arrives.
    async fn fetch(
        self: Arc<Self>,
        parts: Parts,
        target: Target,
        role: Role,
        stale: Option<Stale>,
        mut status: CacheStatus,
        client: Option<SocketAddr>,
    ) -> Response<Body> {
        let Role { leader, lock } = role;
        let key = target.key.clone();
        // The slot is taken here, in the client's task, before the fill is spawned: a client
        // that leaves while waiting for it costs the upstream nothing. The spawned fill then
        // holds it to its end, even if its client is gone.
        let permit = match target.upstream().acquire().await {
            Ok(permit) => permit,
            Err(e) => {
                status.detail = Some(e.kind().into());
                return error_response(e.status(), &e.to_string(), status, None);
            }
        };
        let fill = FillRequest::new(&parts, &target, client).with_lock(lock);
        let (tx, rx) = oneshot::channel();
        tokio::spawn(exchange(
            Arc::clone(&self),
            permit,
            fill,
            key,
            leader,
            stale,
            tx,
        ));
        let head = match rx.await {
            Ok(head) => head,
            Err(_) => {
                return error_response(
                    StatusCode::BAD_GATEWAY,
                    "upstream exchange failed",
                    status,
                    None,
                )
            }
        };
        match head {
            Head::Failed(e, elapsed) => {
                status.detail = Some(e.kind().into());
                error_response(e.status(), &e.to_string(), status, Some(elapsed))
            }
            Head::StaleOnError {
                entry,
                fwd_status,
                elapsed,
            } => {
                let stored = &*entry;
                let age = current_age(stored.received(), SystemTime::now());
                status.fwd_status = fwd_status;
                status.ttl = Some(stored.lifetime as i64 - age as i64);
                status.detail = Some("stale-if-error".into());
                let mut resp = serve_stored(&parts, stored, age, status, CacheResult::Stale);
                resp.extensions_mut().insert(UpstreamTime(elapsed));
                resp
            }
            Head::Refreshed {
                requester,
                stored: was_stored,
                elapsed,
            } => {
                let stored = &requester;
                let age = current_age(stored.received(), SystemTime::now());
                status.fwd_status = Some(304);
                status.ttl = Some(stored.lifetime as i64 - age as i64);
                status.stored = was_stored;
                let mut resp = serve_stored(&parts, stored, age, status, CacheResult::Revalidated);
                resp.extensions_mut().insert(UpstreamTime(elapsed));
                resp
            }
            Head::Streaming {
                mut head,
                verdict,
                stored,
                body,
                elapsed,
            } => {
                status.fwd_status = Some(head.status.as_u16());
                match verdict {
                    Ok(ttl) => status.ttl = Some(ttl),
                    Err(reason) => status.detail = Some(reason.to_string()),
                }
                // Claimed only when the entry is in the store already (RFC 9211: `stored`
                // says what the cache did). A body still streaming may yet be cut off, grow
                // past the object limit or be voided by a purge.
                status.stored = stored;
                if parts.method == Method::GET {
                    let pre = conditional::evaluate(&parts.headers, &head.headers, head.status);
                    if pre != Precondition::Pass {
                        // The fill continues in its task; this client only needs the verdict.
                        drop(body);
                        let mut resp = precondition_response(pre, &head.headers, status);
                        resp.extensions_mut().insert(CacheResult::Miss);
                        resp.extensions_mut().insert(UpstreamTime(elapsed));
                        return resp;
                    }
                }
                let body = apply_range(&parts, &mut head, body);
                head.headers.append(CACHE_STATUS, status.header_value());
                let mut resp = Response::from_parts(head, body);
                resp.extensions_mut().insert(CacheResult::Miss);
                resp.extensions_mut().insert(UpstreamTime(elapsed));
                resp
            }
        }
    }

    /// Forwards a request that will not be stored (a HEAD on a miss), streaming the answer.
    async fn forward_uncached(
        self: Arc<Self>,
        parts: Parts,
        target: &Target,
        client: Option<SocketAddr>,
        status: CacheStatus,
    ) -> Response<Body> {
        let request = self.upstream_request(&parts, target, client, body::empty());
        self.relay(
            target.upstream(),
            request,
            status,
            CacheResult::Miss,
            |_| {},
        )
        .await
    }

    /// Passes a request with a method we do not cache, and invalidates what a successful unsafe
    /// request changed (RFC 9111 4.4).
    async fn pass(
        self: Arc<Self>,
        parts: Parts,
        target: Target,
        body: Body,
        client: Option<SocketAddr>,
        detail: &'static str,
    ) -> Response<Body> {
        let mut status = CacheStatus::forward(Fwd::Bypass);
        status.detail = Some(detail.into());
        let key = target.key.clone();
        let request = self.upstream_request(&parts, &target, client, body);
        let rules = target.site.rules();
        self.relay(
            target.upstream(),
            request,
            status,
            CacheResult::Bypass,
            |head| {
                if !policy::invalidates(&parts.method, head.status) {
                    return;
                }
                self.invalidate(&key);
                for name in [LOCATION, CONTENT_LOCATION] {
                    if let Some(target) = head
                        .headers
                        .get(&name)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| same_origin_key(&key, v))
                    {
                        // Keyed as a request for that URL would be, ignored parameters left out.
                        self.invalidate(&Key::new(rules.filter_key(target.as_str())));
                    }
                }
            },
        )
        .await
    }

    /// The client's request as it goes upstream: hop-by-hop hygiene, `Host` set to the
    /// effective authority, framing left to hyper (see [`Upstream::prepare`]).
    fn upstream_request(
        &self,
        parts: &Parts,
        target: &Target,
        client: Option<SocketAddr>,
        body: Body,
    ) -> Request<Body> {
        target.upstream().prepare(
            parts.method.clone(),
            target.upstream_uri(&parts.uri),
            &parts.headers,
            &target.authority,
            parts.version,
            client,
            body,
        )
    }

    /// Sends a request upstream and streams the answer back untouched but for hop-by-hop fields,
    /// `Via` and `Cache-Status`; `on_head` sees the response head first.
    async fn relay(
        &self,
        upstream: &Upstream,
        request: Request<Body>,
        mut status: CacheStatus,
        result: CacheResult,
        on_head: impl FnOnce(&http::response::Parts),
    ) -> Response<Body> {
        let started = Instant::now();
        let permit = match upstream.acquire().await {
            Ok(permit) => permit,
            Err(e) => {
                status.detail = Some(e.kind().into());
                return error_response(e.status(), &e.to_string(), status, None);
            }
        };
        // A client that leaves drops this future (before the head) or the body (after it), and
        // with either the upstream exchange and its slot: a pass-through never outlives its
        // client.
        match upstream.send(&permit, request).await {
            Err(e) => {
                status.detail = Some(e.kind().into());
                error_response(e.status(), &e.to_string(), status, Some(started.elapsed()))
            }
            Ok(resp) => {
                let elapsed = started.elapsed();
                metrics::record_upstream(elapsed);
                let (mut head, body) = resp.into_parts();
                drop_framing_copied_beside_chunked(&mut head.headers);
                strip_hop_by_hop(&mut head.headers);
                add_via(&mut head.headers, head.version);
                on_head(&head);
                status.fwd_status = Some(head.status.as_u16());
                head.headers.append(CACHE_STATUS, status.header_value());
                let body = HeldBody::new(body, permit).map_err(BoxError::from).boxed();
                let mut resp = Response::from_parts(head, body);
                resp.extensions_mut().insert(result);
                resp.extensions_mut().insert(UpstreamTime(elapsed));
                resp
            }
        }
    }

    /// The directives and freshness lifetime a response is stored with, read from
    /// `CDN-Cache-Control` when it carries a valid one (RFC 9213), from `Cache-Control` and
    /// `Expires` otherwise.
    fn freshness(
        &self,
        rules: &StoreRules,
        status: StatusCode,
        headers: &HeaderMap,
        response_time: SystemTime,
    ) -> (CacheControl, u64) {
        let effective = targeted::effective_headers(headers);
        let mut cc = CacheControl::from_headers(&effective);
        if cc.stale_if_error.is_none() && !self.config.stale_if_error.is_zero() {
            cc.stale_if_error = Some(self.config.stale_if_error.as_secs());
        }
        let lifetime =
            freshness_lifetime(status, &effective, &cc, response_time, &rules.heuristics)
                .map_or(0, |l| l.seconds);
        (cc, lifetime)
    }

    /// Removes what is stored for a URL (RFC 9111 4.4): its response, or its variant index and
    /// variants; fills of it in flight are voided, as by a purge. With a shared tier the URL is
    /// also purged there and on every other instance, in the background: the unsafe request
    /// changed the resource for the whole fleet, not for this instance only.
    fn invalidate(self: &Arc<Self>, key: &Key) {
        purge::purge_url(&*self.store, &self.fills, key);
        if let Some(shared) = &self.shared {
            let inner = Arc::clone(self);
            let shared = Arc::clone(shared);
            let key = key.clone();
            let target = PurgeTarget::Url(key.as_str().to_string());
            tokio::spawn(async move {
                let _ = shared.remove(&target).await;
                // Again, after the tier: a lookup that read the tier before its removal may have
                // promoted the old response meanwhile.
                purge::purge_url(&*inner.store, &inner.fills, &key);
                let _ = shared.announce(&target).await;
            });
        }
    }

    /// Stores a complete response under `primary` (see [`Inner::insert_response`]) unless the
    /// fill's `ticket` was voided by a purge; either way returns it, for the requests waiting on
    /// it, and whether the store holds it now.
    ///
    /// The ticket is checked after the insert too: a purge that voided it between the two
    /// checks may have run its removal before the insert, so what was inserted is removed here.
    ///
    /// What the store holds is also queued for the shared tier, for the other instances.
    fn store_response(
        &self,
        primary: &Key,
        request: &HeaderMap,
        response: CachedResponse,
        ticket: &FillTicket<'_>,
    ) -> (StoredResponse, bool) {
        let (entry, held) = self.keep(primary, request, response, ticket);
        if let (true, Some(shared)) = (held, &self.shared) {
            shared.store(primary, &entry.0);
        }
        (entry, held)
    }

    /// [`Inner::store_response`] for the local store only: a response read from the shared
    /// tier is kept here without being written back.
    fn keep(
        &self,
        primary: &Key,
        request: &HeaderMap,
        response: CachedResponse,
        ticket: &FillTicket<'_>,
    ) -> (StoredResponse, bool) {
        if ticket.voided() {
            return (StoredResponse(Arc::new(Entry::Response(response))), false);
        }
        let (entry, inserted) = self.insert_response(primary, request, response);
        if ticket.voided() {
            for key in &inserted {
                self.store.remove(key);
            }
            return (entry, false);
        }
        // A store may refuse an entry (larger than its capacity): `stored` is what it holds.
        let held = inserted.first().is_some_and(|k| self.store.contains(k));
        if held {
            self.hit_for_miss.forget(primary);
        }
        (entry, held)
    }

    /// Inserts a response under `primary`, or under a variant key of `primary`'s index when it
    /// has `Vary`. Returns it and the keys it inserted: the response's first, then the index if
    /// this insert made one.
    fn insert_response(
        &self,
        primary: &Key,
        request: &HeaderMap,
        mut response: CachedResponse,
    ) -> (StoredResponse, Vec<Key>) {
        response.headers = detached(&response.headers);
        // Every response enters the store here: its age base is fixed once, so that a hit
        // computes its age without parsing `Date` (see `CachedResponse::age_at`).
        response.derive_age();
        match vary::vary_spec(&response.headers) {
            VarySpec::Names(names) => {
                response.vary_values = vary::request_values(request, &names);
                // Reuse the index when it names the same headers, so sibling variants survive.
                // (This lookup counts as a use of the index, which is fair: a variant of it is
                // being stored. A plain response is inserted without one, so a miss costs the
                // eviction policy no second, false use.)
                let (index, made) = match self.store.get(primary) {
                    Some(e) if matches!(&*e, Entry::Variants { names: n, .. } if *n == names) => {
                        (e, false)
                    }
                    other => {
                        if let Some(old) = other {
                            self.drop_variants(&old);
                        }
                        let index = Arc::new(Entry::Variants {
                            names: names.clone(),
                            id: self.next_index_id.fetch_add(1, Ordering::Relaxed),
                            members: VariantMembers::default(),
                        });
                        self.store.insert(primary.clone(), Arc::clone(&index));
                        (index, true)
                    }
                };
                let Entry::Variants { id, members, .. } = &*index else {
                    unreachable!("matched or built as an index above");
                };
                let variant = vary::variant_key(primary, *id, &response.vary_values);
                members.add(&variant);
                let entry = Arc::new(Entry::Response(response));
                self.store.insert(variant.clone(), Arc::clone(&entry));
                let mut inserted = vec![variant];
                if made {
                    inserted.push(primary.clone());
                }
                (StoredResponse(entry), inserted)
            }
            VarySpec::None | VarySpec::Star => {
                response.vary_values.clear();
                // Replacing an index this way leaves its variants unreachable (their keys carry
                // its id) until they are evicted; rare enough (a URL that drops `Vary`) not to be
                // worth a lookup on every miss.
                let entry = Arc::new(Entry::Response(response));
                self.store.insert(primary.clone(), Arc::clone(&entry));
                (StoredResponse(entry), vec![primary.clone()])
            }
        }
    }

    /// Removes the variants of an index about to be replaced: nothing could reach them again
    /// (the next index has another id), so they would only take room until evicted.
    fn drop_variants(&self, old: &Entry) {
        if let Entry::Variants { members, .. } = old {
            let (keys, _) = members.take();
            self.store.remove_many(&keys);
        }
    }
}

//! What the store holds: keys and entries, and how many bytes each one is charged.

use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, StatusCode};

use crate::policy::CacheControl;

/// Bytes charged to every entry on top of its key, headers and body: the `Arc<Entry>` itself,
/// the header map's table, the map slot and the eviction bookkeeping around it. The same
/// constant is used by every backend so that their capacities mean the same thing.
///
/// It is measured, not guessed: a store filled with 1 KiB responses of seven header fields held
/// about 2.8 KiB of process memory per entry, 1.5 KiB of it beyond key, field bytes and body;
/// this constant and [`FIELD_OVERHEAD`] account for that, so that `--capacity` is close to the
/// memory the store really takes.
pub const ENTRY_OVERHEAD: u64 = 640;

/// Bytes charged per stored header field on top of its name and value: its slot in the header
/// map and the allocation of its value.
pub const FIELD_OVERHEAD: u64 = 128;

/// The cache key type lives with the code that builds it (`policy::key`); the store only holds
/// keys, so it depends on policy and not the other way round.
pub use crate::policy::key::Key;

/// A stored response: status, headers and the whole body, with the two clock readings RFC 9111
/// section 4.2.3 needs to compute its age.
#[derive(Debug, Clone)]
pub struct CachedResponse {
    /// The response status.
    pub status: StatusCode,
    /// Response headers as received, less hop-by-hop headers.
    pub headers: HeaderMap,
    /// The complete body. A truncated body is never turned into a `CachedResponse`.
    pub body: Bytes,
    /// When the request that produced this response was sent upstream.
    pub request_time: SystemTime,
    /// When the response headers arrived.
    pub response_time: SystemTime,
    /// The request header values this response was selected by (names from its `Vary`),
    /// normalised; empty when the response has no `Vary`.
    pub vary_values: Vec<(HeaderName, Option<String>)>,
    /// The response's `Cache-Control`, parsed once when it was stored.
    pub cc: CacheControl,
    /// Freshness lifetime in seconds, computed once when it was stored (RFC 9111 4.2.1).
    pub lifetime: u64,
    /// Its age when received (RFC 9111 4.2.3 `corrected_initial_age`), computed once from the
    /// headers and the two times with [`crate::policy::freshness::initial_age`]: whoever changes
    /// those recomputes it ([`CachedResponse::derive_age`]).
    pub initial_age: u64,
}

impl CachedResponse {
    /// Recomputes [`CachedResponse::initial_age`] from the headers and times, after building or
    /// changing them.
    pub fn derive_age(&mut self) {
        self.initial_age = crate::policy::freshness::initial_age(self.received());
    }

    /// Its age at `now`, in seconds (RFC 9111 4.2.3), without parsing a header.
    pub fn age_at(&self, now: SystemTime) -> u64 {
        crate::policy::freshness::age_at(self.initial_age, self.response_time, now)
    }

    /// What its age is computed from ([`crate::policy::freshness::current_age`]).
    pub fn received(&self) -> crate::policy::freshness::Received<'_> {
        crate::policy::freshness::Received {
            headers: &self.headers,
            request_time: self.request_time,
            response_time: self.response_time,
        }
    }
}

/// One stored value.
///
/// A URL whose response carries `Vary` is stored as an index under the URL's key that names the
/// request headers to select by, and one response per variant under a secondary key; see
/// `policy::vary`. Making the two an enum keeps a lookup from ever mistaking one for the other.
// Always behind an `Arc`, so the size of the small variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Entry {
    /// A response, served when fresh.
    Response(CachedResponse),
    /// The request header names the responses for this URL vary on, and the id that the variant
    /// keys of this index carry: removing the index orphans its variants for good, so a later
    /// index for the same URL can never resurrect an invalidated variant.
    Variants {
        /// Lowercase, sorted, distinct names.
        names: Vec<HeaderName>,
        /// Unique per index.
        id: u64,
        /// The variant keys stored under this index, so that purging the URL removes them
        /// without scanning the store.
        members: VariantMembers,
    },
}

/// The variant keys an index has had stored under it, up to [`VariantMembers::CAP`]; past that
/// the set is marked overflowed and a purge of the URL falls back to a scan. A std `Mutex`:
/// held for one push or one take, never across an `.await`.
#[derive(Debug, Default)]
pub struct VariantMembers {
    keys: Mutex<(Vec<Key>, bool)>,
}

impl VariantMembers {
    /// Variants tracked per URL; a URL with more is rare (a `Vary` on a high-cardinality field)
    /// and is purged by a scan.
    pub const CAP: usize = 256;

    fn lock(&self) -> std::sync::MutexGuard<'_, (Vec<Key>, bool)> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that `key` was stored under this index.
    pub fn add(&self, key: &Key) {
        let mut set = self.lock();
        if set.0.contains(key) {
            return;
        }
        if set.0.len() < Self::CAP {
            set.0.push(key.clone());
        } else {
            set.1 = true;
        }
    }

    /// The recorded keys, and whether some went unrecorded; the set is left empty.
    pub fn take(&self) -> (Vec<Key>, bool) {
        std::mem::take(&mut *self.lock())
    }
}

impl Clone for VariantMembers {
    fn clone(&self) -> Self {
        VariantMembers {
            keys: Mutex::new(self.lock().clone()),
        }
    }
}

impl Entry {
    /// Bytes this entry is charged under `key`: key, header names and values, body, and a fixed
    /// overhead. Every backend uses this one function.
    pub fn charge(&self, key: &Key) -> u64 {
        let body_and_headers = match self {
            Entry::Response(r) => {
                let headers: usize = r
                    .headers
                    .iter()
                    .map(|(n, v)| n.as_str().len() + v.len() + FIELD_OVERHEAD as usize)
                    .sum();
                let vary: usize = r
                    .vary_values
                    .iter()
                    .map(|(n, v)| n.as_str().len() + v.as_ref().map_or(0, |v| v.len()))
                    .sum();
                r.body.len() + headers + vary
            }
            Entry::Variants { names, .. } => names.iter().map(|n| n.as_str().len() + 8).sum(),
        };
        ENTRY_OVERHEAD + key.len() as u64 + body_and_headers as u64
    }

    /// The response, if this entry is one.
    pub fn response(&self) -> Option<&CachedResponse> {
        match self {
            Entry::Response(r) => Some(r),
            Entry::Variants { .. } => None,
        }
    }

    /// A synthetic response entry with a body of `body_len` bytes; used by tests, benchmarks and
    /// trace replay where only the size matters.
    pub fn synthetic(body_len: usize) -> Entry {
        // Shared zeroes: a trace replay of millions of requests must not allocate each body.
        // `vec![0; n]` is a calloc, whose pages the kernel maps in only when touched, and these
        // are never read; 256 MiB covers the objects of published CDN traces.
        const SHARED: usize = 1 << 28;
        static ZEROS: OnceLock<Bytes> = OnceLock::new();
        let body = if body_len <= SHARED {
            ZEROS
                .get_or_init(|| Bytes::from(vec![0u8; SHARED]))
                .slice(..body_len)
        } else {
            Bytes::from(vec![0u8; body_len])
        };
        let now = SystemTime::now();
        Entry::Response(CachedResponse {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body,
            request_time: now,
            response_time: now,
            vary_values: Vec::new(),
            cc: CacheControl::default(),
            lifetime: u64::from(u32::MAX),
            initial_age: 0,
        })
    }
}

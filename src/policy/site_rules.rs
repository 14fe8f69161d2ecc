//! The cache rules a site declares: requests that bypass the cache (by path or by cookie), query
//! parameters left out of the cache key, and default lifetimes by status for responses that state
//! none. Pure functions over request parts, so each rule is tested by table.

use std::borrow::Cow;
use std::sync::Arc;

use http::header::COOKIE;
use http::{HeaderMap, StatusCode};

/// A name, or a prefix of names when written with a trailing `*` (`utm_*`,
/// `wordpress_logged_in_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamePattern {
    /// Exactly this name.
    Exact(String),
    /// Every name that starts with this.
    Prefix(String),
}

impl NamePattern {
    /// Reads `utm_*` as a prefix and anything else as an exact name; `None` for an empty
    /// pattern or one with a `*` anywhere but at its end.
    pub fn parse(text: &str) -> Option<NamePattern> {
        let text = text.trim();
        match text.strip_suffix('*') {
            Some(prefix) if !prefix.is_empty() && !prefix.contains('*') => {
                Some(NamePattern::Prefix(prefix.to_string()))
            }
            Some(_) => None,
            None if text.is_empty() || text.contains('*') => None,
            None => Some(NamePattern::Exact(text.to_string())),
        }
    }

    /// True when `name` is this name, or starts with this prefix.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            NamePattern::Exact(n) => n == name,
            NamePattern::Prefix(p) => name.starts_with(p.as_str()),
        }
    }
}

/// Which responses a default lifetime applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusMatch {
    /// One status code (`200`).
    Code(u16),
    /// A class (`4xx`), given by its first digit.
    Class(u16),
    /// Every status (`any`).
    Any,
}

impl StatusMatch {
    /// Reads `200`, `4xx` or `any`.
    pub fn parse(text: &str) -> Option<StatusMatch> {
        let text = text.trim().to_ascii_lowercase();
        if text == "any" {
            return Some(StatusMatch::Any);
        }
        if let Some(class) = text.strip_suffix("xx") {
            return match class.parse::<u16>() {
                Ok(c @ 1..=5) if class.len() == 1 => Some(StatusMatch::Class(c)),
                _ => None,
            };
        }
        match text.parse::<u16>() {
            Ok(code @ 100..=599) if text.len() == 3 => Some(StatusMatch::Code(code)),
            _ => None,
        }
    }

    /// How specific the match is: a code beats a class, which beats `any`.
    fn rank(self) -> u8 {
        match self {
            StatusMatch::Code(_) => 2,
            StatusMatch::Class(_) => 1,
            StatusMatch::Any => 0,
        }
    }

    fn matches(self, status: StatusCode) -> bool {
        match self {
            StatusMatch::Code(c) => status.as_u16() == c,
            StatusMatch::Class(c) => status.as_u16() / 100 == c,
            StatusMatch::Any => true,
        }
    }
}

/// Lifetimes given to storable responses that state no freshness of their own, by status, as
/// nginx's `proxy_cache_valid` does: the operator knows how long the origin's pages stay good
/// when the origin does not say. Cheap to clone (shared).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DefaultLifetimes(Arc<[(StatusMatch, u64)]>);

impl DefaultLifetimes {
    /// The table, from (status match, seconds) pairs.
    pub fn new(rows: Vec<(StatusMatch, u64)>) -> Self {
        DefaultLifetimes(rows.into())
    }

    /// The lifetime for `status`: that of the most specific row matching it (a code, then its
    /// class, then `any`), or `None`.
    pub fn lookup(&self, status: StatusCode) -> Option<u64> {
        self.0
            .iter()
            .filter(|(m, _)| m.matches(status))
            .max_by_key(|(m, _)| m.rank())
            .map(|&(_, seconds)| seconds)
    }

    /// True when no row is given.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Why a request bypasses the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bypass {
    /// Its path starts with one of the site's bypass paths.
    Path,
    /// It carries one of the site's bypass cookies.
    Cookie,
}

/// A site's request rules: what bypasses the cache and what the key leaves out.
#[derive(Debug, Clone, Default)]
pub struct SiteRules {
    /// Path prefixes whose requests bypass the cache (`/admin/`), matched against the
    /// normalized path ([`normalize_path`]).
    pub bypass_paths: Vec<String>,
    /// Request cookies whose presence makes a request bypass the cache (a session cookie).
    pub bypass_cookies: Vec<NamePattern>,
    /// Query parameters left out of the cache key (`utm_*`): requests that differ only in them
    /// share one entry. They are left out of the request sent upstream too, so the upstream
    /// answers exactly what the key names.
    pub ignore_query: Vec<NamePattern>,
}

impl SiteRules {
    /// Whether a request for `path` with `headers` bypasses the cache, and why. A bypassed
    /// request is passed to the upstream as is: neither looked up nor stored.
    pub fn bypass(&self, path: &str, headers: &HeaderMap) -> Option<Bypass> {
        if !self.bypass_paths.is_empty() {
            let path = normalize_path(path);
            // `/admin/` also covers `/admin` itself, which origins answer as the same page or
            // redirect to it.
            let covers = |rule: &str| {
                path.starts_with(rule)
                    || rule
                        .strip_suffix('/')
                        .is_some_and(|dir| !dir.is_empty() && path == dir)
            };
            if self.bypass_paths.iter().any(|p| covers(p)) {
                return Some(Bypass::Path);
            }
        }
        if !self.bypass_cookies.is_empty() {
            // Read as bytes: a cookie field with a byte outside visible ASCII (a raw UTF-8
            // value) still names its cookies, and must not hide a session cookie beside it.
            let named = headers.get_all(COOKIE).iter().any(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .split(';')
                    .map(|pair| pair.split('=').next().unwrap_or_default().trim())
                    .any(|name| self.bypass_cookies.iter().any(|p| p.matches(name)))
            });
            if named {
                return Some(Bypass::Cookie);
            }
        }
        None
    }

    /// The query as the cache key holds it: the parameters [`SiteRules::ignore_query`] names
    /// removed, the others kept in their order. `None` when nothing is left.
    pub fn key_query<'a>(&self, query: Option<&'a str>) -> Option<Cow<'a, str>> {
        let query = query?;
        if self.ignore_query.is_empty() {
            return Some(Cow::Borrowed(query));
        }
        let ignored = |pair: &str| {
            let name = pair.split('=').next().unwrap_or_default();
            self.ignore_query.iter().any(|p| p.matches(name))
        };
        if !query.split('&').any(ignored) {
            return Some(Cow::Borrowed(query));
        }
        let kept: Vec<&str> = query.split('&').filter(|p| !ignored(p)).collect();
        if kept.is_empty() {
            None
        } else {
            Some(Cow::Owned(kept.join("&")))
        }
    }

    /// `key` (`scheme://authority/path?query`) with its query filtered by
    /// [`SiteRules::key_query`]: for keys built from a URL rather than a request (the
    /// `Location` a response invalidates).
    pub fn filter_key(&self, key: &str) -> String {
        match key.split_once('?') {
            Some((base, query)) => match self.key_query(Some(query)) {
                Some(q) => format!("{base}?{q}"),
                None => base.to_string(),
            },
            None => key.to_string(),
        }
    }
}

/// A path as bypass rules compare it, so that `/%61dmin`, `//admin`, `/x/../admin`,
/// `/admin/.` and `/admin;x/` cannot slip a request for `/admin/` past a rule (and into the
/// cache): percent-encoded unreserved characters decoded (RFC 3986 6.2.2.2), path parameters
/// (`;...`, which servlet containers drop) cut from each segment, runs of `/` merged, and dot
/// segments removed (RFC 3986 5.2.4: a last segment `.` or `..` leaves a trailing `/`).
pub fn normalize_path(path: &str) -> String {
    let decoded = decode_unreserved(path);
    let mut out: Vec<&str> = Vec::new();
    let mut trailing_slash = decoded.ends_with('/');
    for segment in decoded.split('/') {
        let segment = segment.split(';').next().unwrap_or_default();
        trailing_slash = match segment {
            "" => trailing_slash,
            "." => true,
            ".." => {
                out.pop();
                true
            }
            s => {
                out.push(s);
                false
            }
        };
    }
    if decoded.ends_with('/') {
        trailing_slash = true;
    }
    let mut text = String::with_capacity(decoded.len() + 1);
    for s in &out {
        text.push('/');
        text.push_str(s);
    }
    if trailing_slash || out.is_empty() {
        text.push('/');
    }
    text
}

fn decode_unreserved(path: &str) -> Cow<'_, str> {
    if !path.contains('%') {
        return Cow::Borrowed(path);
    }
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit()
        {
            if let Ok(b) = u8::from_str_radix(&path[i + 1..i + 3], 16) {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                    out.push(b as char);
                    i += 3;
                    continue;
                }
            }
        }
        // Multi-byte characters cannot appear in a valid URI path; copy byte by byte as text.
        let ch = path[i..].chars().next().unwrap_or('\u{fffd}');
        out.push(ch);
        i += ch.len_utf8();
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn name_patterns() {
        let rows = [
            ("utm_*", "utm_source", true),
            ("utm_*", "utm", false),
            ("fbclid", "fbclid", true),
            ("fbclid", "fbclid2", false),
        ];
        for (pattern, name, want) in rows {
            let p = NamePattern::parse(pattern).unwrap();
            assert_eq!(p.matches(name), want, "{pattern} {name}");
        }
        for bad in ["", "*", "a*b", "*a"] {
            assert_eq!(NamePattern::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn default_lifetimes_take_the_most_specific_row() {
        let table = DefaultLifetimes::new(vec![
            (StatusMatch::Any, 1),
            (StatusMatch::Class(4), 60),
            (StatusMatch::Code(404), 600),
            (StatusMatch::Code(200), 3600),
        ]);
        let rows = [
            (200, Some(3600)),
            (404, Some(600)),
            (410, Some(60)),
            (302, Some(1)),
        ];
        for (status, want) in rows {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(table.lookup(status), want, "{status}");
        }
        let only_200 = DefaultLifetimes::new(vec![(StatusMatch::Code(200), 10)]);
        assert_eq!(only_200.lookup(StatusCode::NOT_FOUND), None);
        assert!(DefaultLifetimes::default().is_empty());
    }

    #[test]
    fn status_matches_parse() {
        assert_eq!(StatusMatch::parse("200"), Some(StatusMatch::Code(200)));
        assert_eq!(StatusMatch::parse("4xx"), Some(StatusMatch::Class(4)));
        assert_eq!(StatusMatch::parse("ANY"), Some(StatusMatch::Any));
        for bad in ["20", "2000", "700", "6xx", "xx", "ok", "0200"] {
            assert_eq!(StatusMatch::parse(bad), None, "{bad}");
        }
    }

    fn rules() -> SiteRules {
        SiteRules {
            bypass_paths: vec!["/admin/".into(), "/cart".into()],
            bypass_cookies: vec![
                NamePattern::parse("sessionid").unwrap(),
                NamePattern::parse("wp_logged_in_*").unwrap(),
            ],
            ignore_query: vec![
                NamePattern::parse("utm_*").unwrap(),
                NamePattern::parse("fbclid").unwrap(),
            ],
        }
    }

    #[test]
    fn bypass_by_path_sees_through_encodings_and_dot_segments() {
        let none = HeaderMap::new();
        let rows = [
            ("/admin/users", Some(Bypass::Path)),
            ("/%61dmin/users", Some(Bypass::Path)),
            ("//admin//users", Some(Bypass::Path)),
            ("/static/../admin/x", Some(Bypass::Path)),
            ("/./admin/", Some(Bypass::Path)),
            ("/cart", Some(Bypass::Path)),
            ("/cartography", Some(Bypass::Path)),
            ("/admin", Some(Bypass::Path)),
            ("/admin/.", Some(Bypass::Path)),
            ("/admin/%2e", Some(Bypass::Path)),
            ("/admin/x/..", Some(Bypass::Path)),
            ("/admin;jsessionid=1/users", Some(Bypass::Path)),
            ("/administrator", None),
            ("/static/admin/", None),
            ("/%2Fadmin/", None),
            ("/", None),
        ];
        for (path, want) in rows {
            assert_eq!(rules().bypass(path, &none), want, "{path}");
        }
    }

    #[test]
    fn bypass_by_cookie_reads_every_cookie_field() {
        let rows = [
            (vec!["a=1; sessionid=abc"], Some(Bypass::Cookie)),
            (vec!["a=1", "sessionid=x"], Some(Bypass::Cookie)),
            (vec!["wp_logged_in_123=y"], Some(Bypass::Cookie)),
            (vec!["xsessionid=1; session=2"], None),
            (vec!["name=Jos\u{e9}; sessionid=abc"], Some(Bypass::Cookie)),
            (vec!["a=sessionid"], None),
            (vec![], None),
        ];
        for (cookies, want) in rows {
            let mut headers = HeaderMap::new();
            for c in &cookies {
                // from_bytes: a raw UTF-8 byte in a cookie is what browsers send and hyper accepts.
                headers.append(COOKIE, HeaderValue::from_bytes(c.as_bytes()).unwrap());
            }
            assert_eq!(rules().bypass("/page", &headers), want, "{cookies:?}");
        }
    }

    #[test]
    fn ignored_parameters_leave_the_key() {
        let rows = [
            (None, None),
            (Some("a=1&b=2"), Some("a=1&b=2")),
            (Some("a=1&utm_source=x&b=2"), Some("a=1&b=2")),
            (Some("utm_source=x&fbclid=y"), None),
            (Some("fbclid"), None),
            (Some("fbclid2=1"), Some("fbclid2=1")),
            (Some(""), Some("")),
        ];
        for (query, want) in rows {
            let got = rules().key_query(query);
            assert_eq!(got.as_deref(), want, "{query:?}");
        }
        assert_eq!(
            rules().filter_key("http://a/p?utm_x=1&k=2"),
            "http://a/p?k=2"
        );
        assert_eq!(rules().filter_key("http://a/p?utm_x=1"), "http://a/p");
        assert_eq!(rules().filter_key("http://a/p"), "http://a/p");
    }

    #[test]
    fn paths_normalize() {
        let rows = [
            ("/", "/"),
            ("", "/"),
            ("/a/b/", "/a/b/"),
            ("/a/./b/../c", "/a/c"),
            ("/../../a", "/a"),
            ("/%7euser", "/~user"),
            ("/%2f", "/%2f"),
            ("/%zz", "/%zz"),
            ("/%4", "/%4"),
            ("/a/.", "/a/"),
            ("/a/b/..", "/a/"),
            ("/a/..", "/"),
            ("/a;p=1/b;q", "/a/b"),
            ("/a/b/", "/a/b/"),
            ("/a//", "/a/"),
        ];
        for (path, want) in rows {
            assert_eq!(normalize_path(path), want, "{path}");
        }
    }
}

//! The cache key of a request (scheme, authority and path with query), and the keys of the URLs
//! a response points at, for invalidation (RFC 9111 2 and 4.4).

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use http::Uri;

/// A cache key. Cheap to clone (a shared string), compared by value.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(Arc<str>);

impl Key {
    /// Builds a key from any string.
    pub fn new(s: impl Into<Arc<str>>) -> Self {
        Key(s.into())
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Length in bytes, as charged to the entry stored under it.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for the empty key.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Borrow<str> for Key {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Key {
    fn from(s: &str) -> Self {
        Key::new(s)
    }
}

impl From<String> for Key {
    fn from(s: String) -> Self {
        Key::new(s)
    }
}

use crate::policy::authority::Authority;

/// Builds the key for a request from its parsed parts: `scheme://authority/path?query`.
///
/// This is the one place a key is made from a request. `authority` was validated by
/// [`effective_authority`](crate::policy::authority::effective_authority), so it holds no `/`,
/// `?`, `@` or NUL: the authority ends at the first `/`, the path at the first `?`, and no two
/// different (authority, path, query) give one key. An empty path is written as `/`; `scheme`
/// is the listener's, never the client's.
pub fn cache_key(scheme: &str, authority: &Authority, uri: &Uri) -> Key {
    cache_key_with_query(scheme, authority, uri.path(), uri.query())
}

/// [`cache_key`] from the path and the query as the key is to hold it (a site may leave some
/// parameters out: `SiteRules::key_query`).
pub fn cache_key_with_query(
    scheme: &str,
    authority: &Authority,
    path: &str,
    query: Option<&str>,
) -> Key {
    let path = match path {
        "" => "/",
        p => p,
    };
    let mut key = String::with_capacity(
        scheme.len() + 3 + authority.as_str().len() + path.len() + query.map_or(0, |q| q.len() + 1),
    );
    key.push_str(scheme);
    key.push_str("://");
    key.push_str(authority.as_str());
    key.push_str(path);
    if let Some(q) = query {
        key.push('?');
        key.push_str(q);
    }
    Key::new(key)
}

/// The key of a URL that a response pointed at (`Location`, `Content-Location`), resolved against
/// the request's key as RFC 3986 5.2 resolves a reference against its base (dot segments
/// removed, fragment dropped); `None` when it is on another origin (RFC 9111 4.4 invalidates
/// same-origin targets only) or cannot be read.
pub fn same_origin_key(request_key: &Key, reference: &str) -> Option<Key> {
    let (base_scheme, rest) = request_key.as_str().split_once("://")?;
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let base_authority = &rest[..authority_end];
    let base_path = rest[authority_end..]
        .split('?')
        .next()
        .filter(|p| !p.is_empty())
        .unwrap_or("/");

    let reference = reference.trim();
    let reference = reference.split('#').next().unwrap_or_default();
    let (reference, query) = match reference.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (reference, None),
    };

    let (scheme, authority, path) = if let Some((scheme, rest)) = split_scheme(reference) {
        // An absolute URI: only the hierarchical form can be on our origin.
        let rest = rest.strip_prefix("//")?;
        let (authority, path) = split_authority(rest);
        (scheme.to_ascii_lowercase(), authority, path.to_string())
    } else if let Some(rest) = reference.strip_prefix("//") {
        // A network-path reference: our scheme, its authority.
        let (authority, path) = split_authority(rest);
        (base_scheme.to_string(), authority, path.to_string())
    } else if reference.starts_with('/') {
        (
            base_scheme.to_string(),
            base_authority,
            reference.to_string(),
        )
    } else if reference.is_empty() {
        // An empty path keeps the base path (RFC 3986 5.2.2).
        (
            base_scheme.to_string(),
            base_authority,
            base_path.to_string(),
        )
    } else {
        // A relative path: merged with the base path's directory (RFC 3986 5.2.3).
        let dir = &base_path[..base_path.rfind('/').map_or(0, |i| i + 1)];
        (
            base_scheme.to_string(),
            base_authority,
            format!("{dir}{reference}"),
        )
    };
    let authority = normalize_authority(authority, &scheme);
    if scheme != base_scheme || authority != base_authority {
        return None;
    }
    let path = remove_dot_segments(if path.is_empty() { "/" } else { &path });
    let query = query.map_or(String::new(), |q| format!("?{q}"));
    Some(Key::new(format!("{scheme}://{authority}{path}{query}")))
}

/// Splits `scheme:rest` when `reference` starts with a scheme (RFC 3986 3.1).
fn split_scheme(reference: &str) -> Option<(&str, &str)> {
    let colon = reference.find(':')?;
    let scheme = &reference[..colon];
    let valid = scheme
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    valid.then(|| (scheme, &reference[colon + 1..]))
}

/// Splits `authority/path` after a `//`.
fn split_authority(rest: &str) -> (&str, &str) {
    match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    }
}

/// Lowercases an authority and drops its userinfo and the scheme's default port.
fn normalize_authority(authority: &str, scheme: &str) -> String {
    let host = authority.trim();
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let host = host.to_ascii_lowercase();
    strip_default_port(&host, scheme).to_string()
}

/// RFC 3986 5.2.4 for an absolute path: `.` segments vanish, `..` removes the one before.
fn remove_dot_segments(path: &str) -> String {
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut out: Vec<&str> = Vec::new();
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." => {}
            ".." => {
                out.pop();
            }
            s => {
                out.push(s);
                continue;
            }
        }
        if i == last {
            out.push("");
        }
    }
    format!("/{}", out.join("/"))
}

fn strip_default_port<'a>(host: &'a str, scheme: &str) -> &'a str {
    let default = match scheme {
        "http" => ":80",
        "https" => ":443",
        _ => return host,
    };
    host.strip_suffix(default).unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each row: the rule, the authority, the request target, the cache key.
    #[test]
    fn cache_key_table() {
        let rows: Vec<(&str, &str, &str, &str)> = vec![
            (
                "9111 2 origin-form",
                "example.com",
                "/a/b?x=1",
                "http://example.com/a/b?x=1",
            ),
            (
                "9110 4.2.1 other port kept",
                "example.com:8080",
                "/",
                "http://example.com:8080/",
            ),
            (
                "9110 4.2.1 empty path is /",
                "example.com",
                "http://example.com",
                "http://example.com/",
            ),
            (
                "9110 4.2.1 empty path with query",
                "example.com",
                "http://example.com?q",
                "http://example.com/?q",
            ),
            (
                "9111 2 query is part of the key",
                "h",
                "/p?b=2&a=1",
                "http://h/p?b=2&a=1",
            ),
            (
                "9111 2 empty query kept apart from none",
                "h",
                "/p?",
                "http://h/p?",
            ),
            ("9111 2 path case kept", "h", "/Path", "http://h/Path"),
        ];
        for (rule, authority, uri, want) in rows {
            let authority = Authority::parse(authority, "http").unwrap();
            let uri: Uri = uri.parse().unwrap();
            assert_eq!(cache_key("http", &authority, &uri).as_str(), want, "{rule}");
        }
    }

    /// The attack of a Host with a path: it is refused before a key exists, so
    /// `Host: victim/static` + `/app.js` can never build the key of `/static/app.js`.
    #[test]
    fn a_host_with_a_path_never_becomes_a_key() {
        assert!(Authority::parse("victim.example/static", "http").is_err());
        let a = Authority::parse("victim.example", "http").unwrap();
        let key = cache_key("http", &a, &"/static/app.js".parse().unwrap());
        assert_eq!(key.as_str(), "http://victim.example/static/app.js");
    }

    /// Each row: the rule, the reference, the key it invalidates (the base is
    /// `http://example.com/a/b?q`), or `None` for another origin.
    #[test]
    fn same_origin_key_table() {
        let base = Key::new("http://example.com/a/b?q");
        let rows: Vec<(&str, &str, Option<&str>)> = vec![
            ("9111 4.4 absolute path", "/x", Some("http://example.com/x")),
            (
                "9111 4.4 absolute path with query",
                "/x?y=1",
                Some("http://example.com/x?y=1"),
            ),
            (
                "3986 5.2.3 relative path merges with the base directory",
                "c",
                Some("http://example.com/a/c"),
            ),
            (
                "3986 5.2.4 dot segments",
                "../c/./d",
                Some("http://example.com/c/d"),
            ),
            (
                "3986 5.2.4 dot segments in an absolute path",
                "/a/../x",
                Some("http://example.com/x"),
            ),
            (
                "3986 5.2.4 trailing ..",
                "/a/b/..",
                Some("http://example.com/a/"),
            ),
            (
                "3986 5.2.4 .. above the root",
                "/../x",
                Some("http://example.com/x"),
            ),
            (
                "3986 5.2.2 query-only reference",
                "?z",
                Some("http://example.com/a/b?z"),
            ),
            (
                "3986 5.2.2 fragment dropped",
                "/x#top",
                Some("http://example.com/x"),
            ),
            (
                "9111 4.4 same origin absolute URI",
                "http://example.com/x",
                Some("http://example.com/x"),
            ),
            (
                "9111 4.4 host case-insensitive",
                "http://EXAMPLE.com/x",
                Some("http://example.com/x"),
            ),
            (
                "9111 4.4 scheme case-insensitive",
                "HTTP://example.com/x",
                Some("http://example.com/x"),
            ),
            (
                "9111 4.4 default port is the same origin",
                "http://example.com:80/x",
                Some("http://example.com/x"),
            ),
            (
                "9111 4.4 absolute URI without path",
                "http://example.com",
                Some("http://example.com/"),
            ),
            (
                "3986 4.2 network-path reference, same host",
                "//example.com/x",
                Some("http://example.com/x"),
            ),
            ("9111 4.4 other host", "http://evil.example/x", None),
            ("9111 4.4 other scheme", "https://example.com/x", None),
            ("9111 4.4 other port", "http://example.com:8080/x", None),
            (
                "3986 4.2 network-path reference, other host",
                "//evil.example/x",
                None,
            ),
            (
                "9111 4.4 non-hierarchical URI",
                "mailto:a@example.com",
                None,
            ),
            (
                "9111 4.4 suffix host is another origin",
                "http://example.com.evil/x",
                None,
            ),
        ];
        for (rule, reference, want) in rows {
            let got = same_origin_key(&base, reference);
            assert_eq!(got.as_ref().map(Key::as_str), want, "{rule}");
        }
    }
}

//! The cache key of a request (scheme, host and path with query), and the keys of the URLs a
//! response points at, for invalidation (RFC 9111 2 and 4.4).

use http::header::HOST;
use http::request::Parts;

use crate::store::Key;

/// Builds the key for a request: `scheme://host[:port]/path?query`, the scheme and host
/// lowercased, any userinfo and the scheme's default port dropped, an empty path written as `/`.
/// The host comes from the request target when it is absolute, from `Host` otherwise;
/// `default_scheme` is the scheme the client spoke to us.
pub fn cache_key(parts: &Parts, default_scheme: &str) -> Key {
    let scheme = parts
        .uri
        .scheme_str()
        .unwrap_or(default_scheme)
        .to_ascii_lowercase();
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            parts
                .headers
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let host = normalize_authority(&authority, &scheme);
    let path = match parts.uri.path() {
        "" => "/",
        p => p,
    };
    let query = parts.uri.query().map_or(String::new(), |q| format!("?{q}"));
    Key::new(format!("{scheme}://{host}{path}{query}"))
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
    use http::Request;

    fn parts(uri: &str, host: Option<&str>) -> Parts {
        let mut b = Request::get(uri);
        if let Some(h) = host {
            b = b.header(HOST, h);
        }
        b.body(()).unwrap().into_parts().0
    }

    /// Each row: the rule, the request target, its Host, the cache key.
    #[test]
    fn cache_key_table() {
        let rows: Vec<(&str, &str, Option<&str>, &str)> = vec![
            (
                "9111 2 origin-form with Host",
                "/a/b?x=1",
                Some("example.com"),
                "http://example.com/a/b?x=1",
            ),
            (
                "9111 2 host lowercased",
                "/",
                Some("Example.COM"),
                "http://example.com/",
            ),
            (
                "9110 4.2.1 default port dropped",
                "/",
                Some("example.com:80"),
                "http://example.com/",
            ),
            (
                "9110 4.2.1 other port kept",
                "/",
                Some("example.com:8080"),
                "http://example.com:8080/",
            ),
            (
                "9112 3.2.2 absolute-form wins over Host",
                "http://Origin.example/p",
                Some("other.example"),
                "http://origin.example/p",
            ),
            (
                "9110 4.2.2 https default port dropped",
                "https://example.com:443/p",
                None,
                "https://example.com/p",
            ),
            (
                "9110 4.2.1 https keeps port 80",
                "https://example.com:80/p",
                None,
                "https://example.com:80/p",
            ),
            (
                "9110 4.2.1 empty path is /",
                "http://example.com",
                None,
                "http://example.com/",
            ),
            (
                "9110 4.2.1 empty path with query",
                "http://example.com?q",
                None,
                "http://example.com/?q",
            ),
            (
                "9110 4.2.4 userinfo dropped",
                "http://user:pw@example.com/p",
                None,
                "http://example.com/p",
            ),
            (
                "9111 2 query is part of the key",
                "/p?b=2&a=1",
                Some("h"),
                "http://h/p?b=2&a=1",
            ),
            ("9111 2 path case kept", "/Path", Some("h"), "http://h/Path"),
            ("cachet: no Host at all", "/p", None, "http:///p"),
        ];
        for (rule, uri, host, want) in rows {
            assert_eq!(
                cache_key(&parts(uri, host), "http").as_str(),
                want,
                "{rule}"
            );
        }
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

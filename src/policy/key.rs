//! The cache key of a request: scheme, host and path with query.

use http::header::HOST;
use http::request::Parts;

use crate::store::Key;

/// Builds the key for a request: `scheme://host[:port]/path?query`, the host lowercased, the
/// scheme's default port dropped, an empty path written as `/`. The host comes from the request
/// target when it is absolute, from `Host` otherwise; `default_scheme` is the scheme the client
/// spoke to us.
pub fn cache_key(parts: &Parts, default_scheme: &str) -> Key {
    let scheme = parts.uri.scheme_str().unwrap_or(default_scheme);
    let host = parts
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
        .unwrap_or_default()
        .to_ascii_lowercase();
    let host = strip_default_port(&host, scheme);
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let path = if path.is_empty() { "/" } else { path };
    Key::new(format!("{scheme}://{host}{path}"))
}

/// The key of a URL that a response pointed at (`Location`, `Content-Location`), resolved against
/// the request's key; `None` when it is on another origin (RFC 9111 4.4 invalidates same-origin
/// targets only) or cannot be parsed.
pub fn same_origin_key(request_key: &Key, reference: &str) -> Option<Key> {
    let base = request_key.as_str();
    let scheme_end = base.find("://")? + 3;
    let origin_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let origin = &base[..origin_end];
    if reference.starts_with('/') && !reference.starts_with("//") {
        return Some(Key::new(format!("{origin}{reference}")));
    }
    let uri: http::Uri = reference.parse().ok()?;
    let scheme = uri.scheme_str()?;
    let authority = uri.authority()?.as_str().to_ascii_lowercase();
    let candidate = format!(
        "{scheme}://{}{}",
        strip_default_port(&authority, scheme),
        uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let candidate_origin_end = candidate[scheme.len() + 3..]
        .find('/')
        .map_or(candidate.len(), |i| scheme.len() + 3 + i);
    (candidate[..candidate_origin_end] == *origin).then(|| Key::new(candidate))
}

fn strip_default_port<'a>(host: &'a str, scheme: &str) -> &'a str {
    let default = match scheme {
        "http" => ":80",
        "https" => ":443",
        _ => return host,
    };
    host.strip_suffix(default).unwrap_or(host)
}

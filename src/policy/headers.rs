//! Header hygiene for a proxy: hop-by-hop fields never cross us (RFC 9110 7.6.1).

use http::header::{
    HeaderMap, HeaderName, CONNECTION, CONTENT_LENGTH, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE,
    TRAILER, TRANSFER_ENCODING, UPGRADE,
};

/// Removes hop-by-hop fields: the fixed list, and every field `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        CONNECTION,
        TE,
        TRAILER,
        TRANSFER_ENCODING,
        UPGRADE,
        PROXY_AUTHORIZATION,
        PROXY_AUTHENTICATE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// Removes a received `Content-Length` that came beside `Transfer-Encoding` (RFC 9112 6.3 rule
/// 3: the transfer coding decides the length, and an intermediary MUST remove the
/// `Content-Length` before forwarding). hyper reads such a body by its transfer coding; a copied
/// `Content-Length` would then frame the bytes sent on with a length they do not have.
pub fn drop_framing_copied_beside_chunked(headers: &mut HeaderMap) {
    if headers.contains_key(TRANSFER_ENCODING) {
        headers.remove(CONTENT_LENGTH);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// Each row: the RFC rule, the fields received, the names left after stripping.
    #[test]
    fn strip_table() {
        type Row<'a> = (&'a str, Vec<(&'a str, &'a str)>, Vec<&'a str>);
        let rows: Vec<Row> = vec![
            (
                "9110 7.6.1 fixed hop-by-hop list",
                vec![
                    ("connection", "close"),
                    ("keep-alive", "timeout=5"),
                    ("te", "trailers"),
                    ("trailer", "x"),
                    ("transfer-encoding", "chunked"),
                    ("upgrade", "h2c"),
                    ("proxy-connection", "keep-alive"),
                    ("content-type", "text/plain"),
                ],
                vec!["content-type"],
            ),
            (
                "9112 6.3 Content-Length beside Transfer-Encoding is removed",
                vec![
                    ("transfer-encoding", "chunked"),
                    ("content-length", "3"),
                    ("etag", "\"e\""),
                ],
                vec!["etag"],
            ),
            (
                "9112 6.3 Content-Length alone is kept",
                vec![("content-length", "3")],
                vec!["content-length"],
            ),
            (
                "9110 7.6.1 fields named by Connection",
                vec![
                    ("connection", "X-Secret, x-other"),
                    ("x-secret", "1"),
                    ("x-other", "2"),
                    ("x-kept", "3"),
                ],
                vec!["x-kept"],
            ),
            (
                "9110 7.6.1 Connection over several lines",
                vec![
                    ("connection", "x-a"),
                    ("connection", "x-b"),
                    ("x-a", "1"),
                    ("x-b", "2"),
                    ("age", "3"),
                ],
                vec!["age"],
            ),
            (
                "9110 7.6.1 malformed Connection token ignored",
                vec![
                    ("connection", "bad name, x-a"),
                    ("x-a", "1"),
                    ("etag", "\"e\""),
                ],
                vec!["etag"],
            ),
            (
                "9110 7.6.1 end-to-end fields untouched",
                vec![("cache-control", "max-age=1"), ("etag", "\"e\"")],
                vec!["cache-control", "etag"],
            ),
        ];
        for (rule, fields, want) in rows {
            let mut h = HeaderMap::new();
            for (n, v) in fields {
                h.append(
                    HeaderName::from_bytes(n.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            drop_framing_copied_beside_chunked(&mut h);
            strip_hop_by_hop(&mut h);
            let mut got: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
            got.sort_unstable();
            assert_eq!(got, want, "{rule}");
        }
    }
}

//! Header hygiene for a proxy: hop-by-hop fields never cross us (RFC 9110 7.6.1).

use http::header::{
    HeaderMap, HeaderName, CONNECTION, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
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
            strip_hop_by_hop(&mut h);
            let mut got: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
            got.sort_unstable();
            assert_eq!(got, want, "{rule}");
        }
    }
}

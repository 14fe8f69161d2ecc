//! The one effective authority of a request (RFC 9112 3.2 and 3.3, RFC 9113 8.3.1).
//!
//! A request names its host in up to three places: an absolute-form target, HTTP/2's
//! `:authority`, and `Host`. A cache that keys on one of them and sends another upstream can be
//! made to store one site's response under another's key. So the authority is computed once,
//! here, validated as `uri-host [":" port]`, normalised, and then used for both the cache key and
//! the `Host` sent upstream.

use http::header::HOST;
use http::request::Parts;
use http::Version;

/// Why a request's authority was refused; each is answered with 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    /// An HTTP/1.1 request without `Host` (RFC 9112 3.2), or an HTTP/2 request with neither
    /// `:authority` nor `Host`.
    #[error("missing Host header")]
    Missing,
    /// More than one `Host` field line (RFC 9112 3.2).
    #[error("more than one Host header")]
    Repeated,
    /// A value that is not `uri-host [":" port]` (userinfo, a path, spaces, a bad port...).
    #[error("invalid authority {0:?}")]
    Invalid(String),
    /// An HTTP/2 `Host` that names another authority than `:authority` (RFC 9113 8.3.1).
    #[error("Host {host:?} disagrees with :authority {authority:?}")]
    Disagrees {
        /// The `:authority` pseudo-header.
        authority: String,
        /// The `Host` field.
        host: String,
    },
    /// An absolute-form target with a scheme other than http or https.
    #[error("unsupported scheme {0:?} in the request target")]
    Scheme(String),
}

/// The effective authority of a request: lowercase host, the default port of `scheme` removed.
/// Only [`effective_authority`] and [`Authority::parse`] make one, and both validate, so holding
/// one means it was validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority(String);

impl Authority {
    /// The authority as text (`host` or `host:port`), as it goes into the key and `Host`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Validates and normalises an authority given as text (a configured default, a purge URL).
    pub fn parse(text: &str, scheme: &str) -> Result<Authority, AuthorityError> {
        normalize(text, scheme)
    }
}

impl std::fmt::Display for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Computes the request's effective authority: the absolute-form target's, else `:authority`,
/// else `Host`; `default` for an HTTP/1.0 request without `Host`. `scheme` is the scheme of the
/// listener the request came in on: it decides the default port, and the client cannot change it.
pub fn effective_authority(
    parts: &Parts,
    scheme: &str,
    default: &Authority,
) -> Result<Authority, AuthorityError> {
    let mut hosts = parts.headers.get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(AuthorityError::Repeated);
    }
    let host = match host {
        Some(v) => Some(normalize(
            v.to_str().map_err(|_| {
                AuthorityError::Invalid(String::from_utf8_lossy(v.as_bytes()).into())
            })?,
            scheme,
        )?),
        None => None,
    };
    if let Some(s) = parts.uri.scheme_str() {
        if !s.eq_ignore_ascii_case("http") && !s.eq_ignore_ascii_case("https") {
            return Err(AuthorityError::Scheme(s.to_string()));
        }
    }
    let target = match parts.uri.authority() {
        Some(a) => Some(normalize(a.as_str(), scheme)?),
        None => None,
    };
    match (parts.version, target, host) {
        // HTTP/2 and later: `:authority`, and a Host beside it must say the same.
        (Version::HTTP_2 | Version::HTTP_3, Some(a), Some(h)) if a != h => {
            Err(AuthorityError::Disagrees {
                authority: a.0,
                host: h.0,
            })
        }
        (Version::HTTP_2 | Version::HTTP_3, Some(a), _) => Ok(a),
        (Version::HTTP_2 | Version::HTTP_3, None, Some(h)) => Ok(h),
        (Version::HTTP_2 | Version::HTTP_3, None, None) => Err(AuthorityError::Missing),
        // HTTP/1.1 must send Host even with an absolute-form target, whose authority then
        // replaces it (RFC 9112 3.2.2).
        (Version::HTTP_11, _, None) => Err(AuthorityError::Missing),
        (_, Some(a), _) => Ok(a),
        (_, None, Some(h)) => Ok(h),
        (_, None, None) => Ok(default.clone()),
    }
}

/// Validates `uri-host [":" port]` (RFC 3986 3.2.2, 3.2.3) and normalises it: lowercase, an
/// empty or default port removed. Userinfo, paths, whitespace, commas and NUL are refused, so a
/// valid authority can never run into the path of a key built from it.
fn normalize(text: &str, scheme: &str) -> Result<Authority, AuthorityError> {
    let invalid = || AuthorityError::Invalid(text.to_string());
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (literal, after) = rest.split_once(']').ok_or_else(invalid)?;
        literal
            .parse::<std::net::Ipv6Addr>()
            .map_err(|_| invalid())?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(invalid)?),
        };
        (&text[..literal.len() + 2], port)
    } else {
        let (host, port) = match text.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        };
        let reg_name = |b: u8| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+;=".contains(&b);
        if host.is_empty() || !host.bytes().all(reg_name) {
            return Err(invalid());
        }
        (host, port)
    };
    let port = match port {
        None | Some("") => None,
        Some(p) if p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            let n: u32 = p.parse().map_err(|_| invalid())?;
            if n > 65535 {
                return Err(invalid());
            }
            Some(n)
        }
        Some(_) => return Err(invalid()),
    };
    let default_port = match scheme {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    };
    // One allocation, the final one: this runs on every request.
    let mut out = String::with_capacity(host.len() + 6);
    out.extend(host.chars().map(|c| c.to_ascii_lowercase()));
    if let Some(p) = port.filter(|&p| Some(p) != default_port) {
        out.push(':');
        out.push_str(itoa::Buffer::new().format(p));
    }
    Ok(Authority(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(version: Version, uri: &str, hosts: &[&str]) -> Parts {
        let mut b = Request::get(uri).version(version);
        for h in hosts {
            b = b.header(HOST, *h);
        }
        b.body(()).unwrap().into_parts().0
    }

    /// Each row: the rule, version, target, Host lines, and the authority or the error.
    #[test]
    fn effective_authority_table() {
        use AuthorityError::*;
        let default = Authority::parse("upstream:9000", "http").unwrap();
        let v11 = Version::HTTP_11;
        let v10 = Version::HTTP_10;
        let v2 = Version::HTTP_2;
        let inv = |s: &str| Err(Invalid(s.to_string()));
        type Row<'a> = (
            &'a str,
            Version,
            &'a str,
            Vec<&'a str>,
            Result<&'a str, AuthorityError>,
        );
        let rows: Vec<Row> = vec![
            (
                "9112 3.3 Host",
                v11,
                "/p",
                vec!["a.example"],
                Ok("a.example"),
            ),
            (
                "9110 4.2.3 lowercased",
                v11,
                "/",
                vec!["A.Example"],
                Ok("a.example"),
            ),
            (
                "9110 4.2.3 default port dropped",
                v11,
                "/",
                vec!["a.example:80"],
                Ok("a.example"),
            ),
            (
                "9110 4.2.3 empty port dropped",
                v11,
                "/",
                vec!["a.example:"],
                Ok("a.example"),
            ),
            (
                "9110 4.2.3 other port kept",
                v11,
                "/",
                vec!["a.example:8080"],
                Ok("a.example:8080"),
            ),
            (
                "3986 3.2.2 IPv6 literal",
                v11,
                "/",
                vec!["[::1]:81"],
                Ok("[::1]:81"),
            ),
            (
                "3986 3.2.2 IPv4",
                v11,
                "/",
                vec!["127.0.0.1"],
                Ok("127.0.0.1"),
            ),
            (
                "9112 3.2.2 absolute-form replaces Host",
                v11,
                "http://victim.example/page",
                vec!["attacker.example"],
                Ok("victim.example"),
            ),
            (
                "9112 3.2 HTTP/1.1 without Host",
                v11,
                "/",
                vec![],
                Err(Missing),
            ),
            (
                "9112 3.2 HTTP/1.1 absolute-form still needs Host",
                v11,
                "http://a.example/",
                vec![],
                Err(Missing),
            ),
            (
                "9112 3.2 two Host lines",
                v11,
                "/",
                vec!["a.example", "b.example"],
                Err(Repeated),
            ),
            (
                "9112 3.2 Host with a path",
                v11,
                "/",
                vec!["a.example/x"],
                inv("a.example/x"),
            ),
            (
                "9110 4.2.4 Host with userinfo",
                v11,
                "/",
                vec!["u@a.example"],
                inv("u@a.example"),
            ),
            ("9112 3.2 empty Host", v11, "/", vec![""], inv("")),
            (
                "9112 3.2 Host with a space",
                v11,
                "/",
                vec!["a b"],
                inv("a b"),
            ),
            (
                "9110 7.2 Host is not a list",
                v11,
                "/",
                vec!["a,b"],
                inv("a,b"),
            ),
            (
                "3986 3.2.3 port not digits",
                v11,
                "/",
                vec!["a:8x"],
                inv("a:8x"),
            ),
            (
                "3986 3.2.3 port too large",
                v11,
                "/",
                vec!["a:70000"],
                inv("a:70000"),
            ),
            (
                "3986 3.2.3 two ports",
                v11,
                "/",
                vec!["a:1:2"],
                inv("a:1:2"),
            ),
            ("3986 3.2.2 bad IPv6", v11, "/", vec!["[zz]"], inv("[zz]")),
            (
                "9112 3.3 HTTP/1.0 without Host: default",
                v10,
                "/",
                vec![],
                Ok("upstream:9000"),
            ),
            (
                "9112 3.3 HTTP/1.0 Host",
                v10,
                "/",
                vec!["a.example"],
                Ok("a.example"),
            ),
            (
                "9113 8.3.1 :authority",
                v2,
                "http://a.example/",
                vec![],
                Ok("a.example"),
            ),
            (
                "9113 8.3.1 Host agreeing with :authority",
                v2,
                "http://a.example/",
                vec!["A.example:80"],
                Ok("a.example"),
            ),
            (
                "9113 8.3.1 Host disagreeing with :authority",
                v2,
                "http://a.example/",
                vec!["b.example"],
                Err(Disagrees {
                    authority: "a.example".into(),
                    host: "b.example".into(),
                }),
            ),
            (
                "9113 8.3.1 Host without :authority",
                v2,
                "/",
                vec!["a.example"],
                Ok("a.example"),
            ),
            ("9113 8.3.1 neither", v2, "/", vec![], Err(Missing)),
            (
                "cachet: scheme of the target other than http(s)",
                v11,
                "ftp://a.example/",
                vec!["a.example"],
                Err(Scheme("ftp".into())),
            ),
        ];
        for (rule, version, uri, hosts, want) in rows {
            let got = effective_authority(&parts(version, uri, &hosts), "http", &default);
            let got = got.as_ref().map(Authority::as_str).map_err(Clone::clone);
            assert_eq!(got, want, "{rule}");
        }
    }

    #[test]
    fn userinfo_in_an_absolute_target_is_refused() {
        let default = Authority::parse("upstream", "http").unwrap();
        let p = parts(Version::HTTP_11, "http://u:pw@a.example/p", &["a.example"]);
        assert!(matches!(
            effective_authority(&p, "http", &default),
            Err(AuthorityError::Invalid(_))
        ));
    }
}

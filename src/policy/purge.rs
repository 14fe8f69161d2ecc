//! What a purge names, and which cache keys it picks: one definition for the admin API, the
//! `PURGE` method, the local store and the shared tier, so that a purge removes the same URLs
//! wherever it runs.

use serde::{Deserialize, Serialize};

use super::vary::is_key_or_variant;

/// What a purge removes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PurgeTarget {
    /// One URL and all its Vary variants: a cache key (`http://host/path?query`), or a path with
    /// query (`/path?query`) meaning that URL on every host.
    Url(String),
    /// Every URL under a prefix: a cache key prefix (`http://host/path/`), or a path prefix
    /// (`/path/`) on every host.
    Prefix(String),
    /// Everything.
    All,
}

impl PurgeTarget {
    /// True when the target removes `key`, a URL's key or one of its variant keys.
    pub fn picks(&self, key: &str) -> bool {
        match self {
            PurgeTarget::All => true,
            PurgeTarget::Url(url) if url.starts_with('/') => is_key_or_variant(key_path(key), url),
            PurgeTarget::Url(url) => is_key_or_variant(key, url),
            PurgeTarget::Prefix(prefix) if prefix.starts_with('/') => {
                key_path(key).starts_with(prefix.as_str())
            }
            PurgeTarget::Prefix(prefix) => key.starts_with(prefix.as_str()),
        }
    }

    /// The one URL key this target names, when it names exactly one (a full-key URL purge):
    /// such a purge needs no scan.
    pub fn single_key(&self) -> Option<&str> {
        match self {
            PurgeTarget::Url(url) if !url.starts_with('/') => Some(url),
            _ => None,
        }
    }

    /// A glob (Redis `MATCH` syntax) that every URL key this target picks matches; it may match
    /// more, so a scan filters what it finds with [`PurgeTarget::picks`].
    pub fn glob(&self) -> String {
        match self {
            PurgeTarget::All => "*".to_string(),
            PurgeTarget::Url(s) | PurgeTarget::Prefix(s) if s.starts_with('/') => {
                format!("*{}*", glob_escape(s))
            }
            PurgeTarget::Url(s) => glob_escape(s),
            PurgeTarget::Prefix(s) => format!("{}*", glob_escape(s)),
        }
    }
}

/// `s` with the glob metacharacters `* ? [ ] \` escaped, so it matches itself only.
pub fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The path-and-query part of a cache key (`/a?b` of `http://host/a?b`), variant suffix included.
pub fn key_path(key: &str) -> &str {
    let after_scheme = key.find("://").map_or(0, |i| i + 3);
    key[after_scheme..]
        .find('/')
        .map_or("", |i| &key[after_scheme + i..])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each row: a target, a key, whether the target picks it.
    #[test]
    fn picks_table() {
        let url = || PurgeTarget::Url("http://h/a".into());
        let rows = [
            (url(), "http://h/a", true),
            (url(), "http://h/a\x001\x00accept=x", true),
            (url(), "http://h/ab", false),
            (url(), "http://g/a", false),
            (PurgeTarget::Url("/a".into()), "http://g/a", true),
            (PurgeTarget::Url("/a".into()), "http://g/b/a", false),
            (PurgeTarget::Prefix("/img/".into()), "http://h/img/1", true),
            (
                PurgeTarget::Prefix("/img/".into()),
                "http://h/x/img/1",
                false,
            ),
            (
                PurgeTarget::Prefix("http://h/i".into()),
                "http://h/img",
                true,
            ),
            (
                PurgeTarget::Prefix("http://h/i".into()),
                "http://g/img",
                false,
            ),
            (PurgeTarget::All, "http://anything/", true),
        ];
        for (target, key, want) in rows {
            assert_eq!(target.picks(key), want, "{target:?} on {key:?}");
        }
    }

    /// The glob of a target matches at least what it picks; the metacharacters of a URL are
    /// escaped so that `/a?b` does not match `/aXb` by the glob alone.
    #[test]
    fn globs_escape_and_cover_what_is_picked() {
        assert_eq!(
            PurgeTarget::Url("http://h/a?b=[1]".into()).glob(),
            "http://h/a\\?b=\\[1\\]"
        );
        assert_eq!(
            PurgeTarget::Prefix("http://h/*".into()).glob(),
            "http://h/\\**"
        );
        assert_eq!(PurgeTarget::Prefix("/img/".into()).glob(), "*/img/*");
        assert_eq!(PurgeTarget::All.glob(), "*");
        assert_eq!(
            PurgeTarget::Url("http://h/a".into()).single_key(),
            Some("http://h/a")
        );
        assert_eq!(PurgeTarget::Url("/a".into()).single_key(), None);
    }

    #[test]
    fn key_path_takes_what_follows_the_authority() {
        assert_eq!(key_path("http://h:8/a?b"), "/a?b");
        assert_eq!(
            key_path("http://h/a\x001\x00accept=x"),
            "/a\x001\x00accept=x"
        );
        assert_eq!(key_path("http://h"), "");
    }
}

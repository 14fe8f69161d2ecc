//! The shared tier's encoding of a stored response: versioned, checksummed, and checked against
//! the key it was read under, so that nothing read back from Redis is served unless this code
//! wrote it for that URL.
//!
//! A record is `magic | version | crc32 | meta length | meta | body`: the metadata (key, status,
//! headers, the two clock readings age is computed from, the Vary selection) is `postcard`, the
//! body follows it raw, so decoding slices the body out of the buffer Redis returned instead of
//! copying it. Freshness (`Cache-Control`, lifetime) is not encoded: the reader computes it from
//! the headers with its own rules, exactly as it would for a response from the upstream.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

use crate::store::CachedResponse;

/// The first bytes of every response record.
const MAGIC: &[u8; 4] = b"CCHR";
/// The first bytes of a Vary index record.
const NAMES_MAGIC: &[u8; 4] = b"CCHV";
/// The version this code writes and the only one it reads; a record of another version is a
/// miss (and is deleted), never a guess.
pub const VERSION: u8 = 1;
/// Magic, version, crc32 and meta length.
const PREFIX_LEN: usize = 4 + 1 + 4 + 4;
/// A response stamped further ahead of this instance's clock than this is refused: its age
/// would come out negative, and clocks of a fleet agree better than that.
const MAX_CLOCK_AHEAD: Duration = Duration::from_secs(60);

/// Why a record read from the shared tier is not served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not a record of ours at all (another program's value, or truncated before the prefix).
    #[error("not a cachet record")]
    Foreign,
    /// A record of a version this build does not read.
    #[error("record version {0}, this build reads {VERSION}")]
    Version(u8),
    /// The checksum does not match: the bytes changed since they were written.
    #[error("checksum mismatch")]
    Checksum,
    /// The metadata does not decode, or a field in it is not valid HTTP.
    #[error("malformed record: {0}")]
    Malformed(&'static str),
    /// A valid record written for another key.
    #[error("record written for another key")]
    WrongKey,
}

#[derive(Serialize, Deserialize)]
struct Meta<'a> {
    key: &'a str,
    status: u16,
    #[serde(borrow)]
    headers: Vec<(&'a str, &'a [u8])>,
    request_time: (u64, u32),
    response_time: (u64, u32),
    vary: Vec<(&'a str, Option<&'a str>)>,
}

fn since_epoch(t: SystemTime) -> (u64, u32) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    (d.as_secs(), d.subsec_nanos())
}

fn from_epoch((secs, nanos): (u64, u32)) -> Option<SystemTime> {
    if nanos >= 1_000_000_000 {
        return None;
    }
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

/// Encodes `response`, stored under the URL key `key`.
pub fn encode(key: &str, response: &CachedResponse) -> Bytes {
    let meta = Meta {
        key,
        status: response.status.as_u16(),
        headers: response
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes()))
            .collect(),
        request_time: since_epoch(response.request_time),
        response_time: since_epoch(response.response_time),
        vary: response
            .vary_values
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_deref()))
            .collect(),
    };
    // Serialising plain strings, byte slices and integers into a Vec cannot fail.
    let meta = postcard::to_allocvec(&meta).unwrap_or_default();
    let mut out = BytesMut::with_capacity(PREFIX_LEN + meta.len() + response.body.len());
    out.put_slice(MAGIC);
    out.put_u8(VERSION);
    out.put_u32_le(0); // the checksum, written below
    out.put_u32_le(meta.len() as u32);
    out.put_slice(&meta);
    out.put_slice(&response.body);
    let crc = crc32fast::hash(&out[9..]);
    out[5..9].copy_from_slice(&crc.to_le_bytes());
    out.freeze()
}

/// A decoded record: the response less what the reader computes itself (`cc`, `lifetime`).
#[derive(Debug)]
pub struct Decoded {
    /// Status.
    pub status: StatusCode,
    /// Headers as stored.
    pub headers: HeaderMap,
    /// The whole body, a slice of the buffer read.
    pub body: Bytes,
    /// When the original request was sent.
    pub request_time: SystemTime,
    /// When the original response arrived.
    pub response_time: SystemTime,
    /// The Vary selection the response was stored with.
    pub vary_values: Vec<(HeaderName, Option<String>)>,
}

impl Decoded {
    /// The stored response, with the `Cache-Control` and lifetime the reader computed from its
    /// headers, and its age base derived.
    pub fn into_response(self, cc: crate::policy::CacheControl, lifetime: u64) -> CachedResponse {
        let mut response = CachedResponse {
            status: self.status,
            headers: self.headers,
            body: self.body,
            request_time: self.request_time,
            response_time: self.response_time,
            vary_values: self.vary_values,
            cc,
            lifetime,
            initial_age: 0,
        };
        response.derive_age();
        response
    }
}

/// Decodes a record read under `key`, checking everything that could make it serve the wrong
/// bytes: magic, version, checksum, the key it was written for, valid HTTP fields, a body the
/// length its `Content-Length` says, and times not ahead of `now`.
pub fn decode(key: &str, record: &Bytes, now: SystemTime) -> Result<Decoded, DecodeError> {
    if record.len() < PREFIX_LEN || &record[..4] != MAGIC {
        return Err(DecodeError::Foreign);
    }
    if record[4] != VERSION {
        return Err(DecodeError::Version(record[4]));
    }
    let crc = u32::from_le_bytes([record[5], record[6], record[7], record[8]]);
    if crc32fast::hash(&record[9..]) != crc {
        return Err(DecodeError::Checksum);
    }
    let meta_len = u32::from_le_bytes([record[9], record[10], record[11], record[12]]) as usize;
    let body_at = PREFIX_LEN
        .checked_add(meta_len)
        .filter(|&end| end <= record.len())
        .ok_or(DecodeError::Malformed("metadata length"))?;
    let meta: Meta<'_> = postcard::from_bytes(&record[PREFIX_LEN..body_at])
        .map_err(|_| DecodeError::Malformed("metadata"))?;
    if meta.key != key {
        return Err(DecodeError::WrongKey);
    }
    let status = StatusCode::from_u16(meta.status)
        .ok()
        .filter(|s| !s.is_informational())
        .ok_or(DecodeError::Malformed("status"))?;
    let mut headers = HeaderMap::with_capacity(meta.headers.len());
    for (name, value) in &meta.headers {
        let name =
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| DecodeError::Malformed("name"))?;
        let value = HeaderValue::from_bytes(value).map_err(|_| DecodeError::Malformed("value"))?;
        headers.append(name, value);
    }
    let body = record.slice(body_at..);
    if let Some(declared) = headers.get(http::header::CONTENT_LENGTH) {
        let declared: Option<usize> = declared.to_str().ok().and_then(|v| v.trim().parse().ok());
        if declared != Some(body.len()) {
            return Err(DecodeError::Malformed("content-length"));
        }
    }
    let request_time = from_epoch(meta.request_time).ok_or(DecodeError::Malformed("time"))?;
    let response_time = from_epoch(meta.response_time).ok_or(DecodeError::Malformed("time"))?;
    if response_time < request_time || response_time > now + MAX_CLOCK_AHEAD {
        return Err(DecodeError::Malformed("time"));
    }
    let mut vary_values = Vec::with_capacity(meta.vary.len());
    for (name, value) in meta.vary {
        let name =
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| DecodeError::Malformed("vary"))?;
        vary_values.push((name, value.map(str::to_string)));
    }
    Ok(Decoded {
        status,
        headers,
        body,
        request_time,
        response_time,
        vary_values,
    })
}

/// Encodes the names a URL's responses vary on (its Vary index).
pub fn encode_names(names: &[HeaderName]) -> Bytes {
    let mut out = BytesMut::with_capacity(8 + names.len() * 16);
    out.put_slice(NAMES_MAGIC);
    out.put_u8(VERSION);
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(name.as_str().as_bytes());
    }
    out.freeze()
}

/// Decodes a Vary index: lowercase, distinct, sorted names, as `policy::vary` makes them.
pub fn decode_names(record: &[u8]) -> Result<Vec<HeaderName>, DecodeError> {
    if record.len() < 5 || &record[..4] != NAMES_MAGIC {
        return Err(DecodeError::Foreign);
    }
    if record[4] != VERSION {
        return Err(DecodeError::Version(record[4]));
    }
    let list = std::str::from_utf8(&record[5..]).map_err(|_| DecodeError::Malformed("names"))?;
    let mut names = Vec::new();
    for name in list.split(',') {
        let parsed =
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| DecodeError::Malformed("names"))?;
        if parsed.as_str() != name {
            return Err(DecodeError::Malformed("names"));
        }
        names.push(parsed);
    }
    if names.is_empty() || !names.windows(2).all(|w| w[0].as_str() < w[1].as_str()) {
        return Err(DecodeError::Malformed("names"));
    }
    Ok(names)
}

/// The hash field a Vary variant is kept under: each name and its normalised request value, as
/// in the local variant keys, so two selections never share a field.
pub fn variant_field(values: &[(HeaderName, Option<String>)]) -> String {
    let mut field = String::from("v");
    crate::policy::vary::push_selection(&mut field, values);
    field
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::CacheControl;

    fn response(body: &'static [u8]) -> CachedResponse {
        let mut headers = HeaderMap::new();
        headers.insert("cache-control", HeaderValue::from_static("max-age=60"));
        headers.append("x-two", HeaderValue::from_static("a"));
        headers.append("x-two", HeaderValue::from_static("b"));
        headers.insert(
            http::header::CONTENT_LENGTH,
            HeaderValue::from(body.len() as u64),
        );
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        CachedResponse {
            status: StatusCode::OK,
            headers,
            body: Bytes::from_static(body),
            request_time: t,
            response_time: t + Duration::from_millis(5),
            vary_values: vec![(
                HeaderName::from_static("accept-encoding"),
                Some("gzip".into()),
            )],
            cc: CacheControl::default(),
            lifetime: 60,
            initial_age: 0,
        }
    }

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_100)
    }

    #[test]
    fn a_record_decodes_to_what_was_encoded() {
        let r = response(b"hello");
        let bytes = encode("http://h/a", &r);
        let d = decode("http://h/a", &bytes, now()).unwrap();
        assert_eq!(d.status, r.status);
        assert_eq!(d.headers, r.headers);
        assert_eq!(d.body, r.body);
        assert_eq!(d.request_time, r.request_time);
        assert_eq!(d.response_time, r.response_time);
        assert_eq!(d.vary_values, r.vary_values);
    }

    /// Every way a record can be wrong is refused, each with its own reason.
    #[test]
    fn bad_records_are_refused() {
        let good = encode("http://h/a", &response(b"hello"));
        let with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = good.to_vec();
            f(&mut b);
            Bytes::from(b)
        };
        let rows: Vec<(&str, Bytes, DecodeError)> = vec![
            ("empty", Bytes::new(), DecodeError::Foreign),
            (
                "foreign",
                Bytes::from_static(b"<html>hi</html>"),
                DecodeError::Foreign,
            ),
            ("version", with(&|b| b[4] = 9), DecodeError::Version(9)),
            (
                "flipped body byte",
                with(&|b| *b.last_mut().unwrap() ^= 1),
                DecodeError::Checksum,
            ),
            (
                "truncated",
                with(&|b| b.truncate(b.len() - 2)),
                DecodeError::Checksum,
            ),
        ];
        for (what, bytes, want) in rows {
            assert_eq!(
                decode("http://h/a", &bytes, now()).unwrap_err(),
                want,
                "{what}"
            );
        }
        assert_eq!(
            decode("http://h/b", &good, now()).unwrap_err(),
            DecodeError::WrongKey
        );
        // A body that disagrees with its Content-Length, re-checksummed so that only the length
        // is wrong: refused as malformed.
        let mut bad_len = response(b"hello");
        bad_len.body = Bytes::from_static(b"hell");
        assert_eq!(
            decode("http://h/a", &encode("http://h/a", &bad_len), now()).unwrap_err(),
            DecodeError::Malformed("content-length")
        );
        // A response stamped far ahead of the reader's clock.
        let early = UNIX_EPOCH + Duration::from_secs(1_600_000_000);
        assert_eq!(
            decode("http://h/a", &good, early).unwrap_err(),
            DecodeError::Malformed("time")
        );
    }

    #[test]
    fn names_round_trip_and_must_be_canonical() {
        let names = vec![
            HeaderName::from_static("accept"),
            HeaderName::from_static("accept-encoding"),
        ];
        assert_eq!(decode_names(&encode_names(&names)).unwrap(), names);
        for bad in [
            &b"CCHV\x01Accept"[..],
            b"CCHV\x01b,a",
            b"CCHV\x01",
            b"CCHV\x02a",
            b"xx",
        ] {
            assert!(decode_names(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn variant_fields_differ_by_name_and_value() {
        let a = HeaderName::from_static("accept");
        let f = |v: Option<&str>| variant_field(&[(a.clone(), v.map(str::to_string))]);
        assert_ne!(f(Some("x")), f(None));
        assert_ne!(f(Some("x")), f(Some("y")));
        assert_eq!(variant_field(&[]), "v");
    }
}

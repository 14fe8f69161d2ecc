//! The forwarding path against request smuggling and cache poisoning (issue 8), over real
//! sockets.
//!
//! Every test talks to the proxy over a raw `TcpStream` (or hyper's HTTP/2 client, for h2c) and
//! puts a hand-written origin behind it (`forwarding_support`). The origin parses strictly,
//! records every request it parsed with all its field lines, and flags framing that is
//! ambiguous or does not match the bytes that arrived. That makes the two things this file is
//! about observable:
//!
//! - smuggling: what the origin parsed must be exactly the requests the clients sent, one per
//!   client request, each framed consistently with the bytes the proxy wrote;
//! - poisoning: whatever the proxy stores under an authority's key must have been fetched with
//!   `Host` equal to that authority. The origin echoes the `Host` and target it saw into every
//!   body, so a hit shows where its bytes really came from.
//!
//! Each test is named after the defect of the issue it reproduces, and was checked against the
//! proxy before the fix (commit f4bb4e5): all failed there but
//! `get_with_body_is_not_smuggled_to_an_origin_that_ignores_it`, which tests what the fix does
//! with a GET's body (see there). Tests that involve the cache run on every store backend.
//!
//! The raw origin answers in one of two ways ([`BodyMode`]): `Ignore` never reads a body, so
//! any byte forwarded beyond a head shows up as a request of its own; `Read` reads bodies by
//! their framing, as RFC 9112 requires, and flags announced bytes that never come. Tests that
//! forward bodies on purpose use `Read`.

mod common;
mod forwarding_support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use cachet::server::Running;
use cachet::store::Backend;
use forwarding_support::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

/// Starts a proxy in front of `origin`. The upstream response timeout is cut to 3 s so that a
/// proxy that leaves the origin waiting (the defect this file looks for) fails a test quickly
/// instead of hanging it for the default 30 s.
async fn proxy_for(origin: &RawOrigin, backend: Backend) -> Running {
    let mut config = common::proxy_config(origin.addr, backend);
    config.upstream.response_timeout = Duration::from_secs(3);
    cachet::server::start(config).await.expect("proxy starts")
}

/// Asserts that the origin saw no framing problem at all, showing what it saw if it did.
fn assert_clean_framing(origin: &RawOrigin) {
    let bad: Vec<Seen> = origin
        .seen()
        .into_iter()
        .filter(|s| s.framing_error.is_some() || s.truncated)
        .collect();
    assert!(
        bad.is_empty(),
        "the origin received requests whose framing did not match their bytes: {bad:#?}"
    );
}

/// Defect 1: a GET whose body is itself a request. Whatever the proxy does, the origin must
/// never parse the smuggled request, and a victim must get its own response. The proxy refuses
/// a GET or HEAD with content (400, connection closed): forwarding it framed is not enough for
/// an origin that ignores a GET's body (see the next test), and dropping its framing but not its
/// body, or the reverse, desynchronises a pooled connection.
///
/// The origin reads bodies here, as a conforming server does.
async fn get_with_body_is_not_smuggled(backend: Backend) {
    let origin = RawOrigin::start(BodyMode::Read).await;
    let proxy = proxy_for(&origin, backend).await;
    let smuggled = "GET /poison HTTP/1.1\r\nHost: victim.example\r\n\r\n";

    // Framed by Content-Length, then framed by chunked coding.
    let by_length = format!(
        "GET /page HTTP/1.1\r\nHost: victim.example\r\nContent-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    let chunked = format!(
        "GET /page-chunked HTTP/1.1\r\nHost: victim.example\r\nTransfer-Encoding: chunked\r\n\r\n\
         {:x}\r\n{smuggled}\r\n0\r\n\r\n",
        smuggled.len()
    );
    for attack in [by_length, chunked] {
        let mut attacker = RawClient::connect(proxy.addr).await;
        attacker.send(attack.as_bytes()).await;
        let refused = attacker
            .read_response(false, RESPONSE_WAIT)
            .await
            .unwrap_or_else(|e| panic!("GET with a body: {e}"));
        assert_eq!(refused.status, 400, "{}", refused.body_text());
        assert_eq!(refused.header("connection"), Some("close"));
        assert!(
            attacker.is_closed(RESPONSE_WAIT).await,
            "the connection is closed after the refusal: the unread body is never parsed"
        );
    }

    // The victim, on a connection of its own.
    let victim = get(proxy.addr, "/home", "victim.example").await;
    assert_eq!(victim.status, 200);
    assert_eq!(
        victim.body_text(),
        echo_body("GET", "/home", "victim.example"),
        "the victim got /home's own body"
    );
    assert!(
        origin.seen_for("/poison").is_empty(),
        "the origin parsed the smuggled request: {:#?}",
        origin.seen()
    );
    assert!(
        origin.seen_for("/page").is_empty(),
        "refused, never forwarded"
    );
    assert!(origin.seen_for("/page-chunked").is_empty());
    assert_eq!(origin.seen_for("/home").len(), 1);
    assert_clean_framing(&origin);

    // Nothing was stored for /page: the next plain GET is a miss, the one after it a hit.
    let plain = get(proxy.addr, "/page", "victim.example").await;
    assert!(
        plain.cache_status().contains("fwd=uri-miss"),
        "the GET with a body left nothing stored: {}",
        plain.cache_status()
    );
    assert!(get(proxy.addr, "/page", "victim.example").await.is_hit());
    assert_clean_framing(&origin);
}

/// Defect 1 against an origin that never reads a GET's body: it answers as soon as it has the
/// head and parses whatever follows as the next request (a "CL.0" origin, as static-file
/// handlers often are). Forwarding a GET's content even with a correct `Content-Length` is not
/// safe with such an origin: the only safe forms are no body at all upstream, or a refusal, and
/// the proxy refuses. This is the origin the issue describes ("behaves like nginx"), and the
/// assertion is the issue's: the origin never parses `/poison`. (Before the fix the proxy sent
/// such a GET upstream without its body but with its `Content-Length`: the `Read` variant above
/// caught that; an intermediate version forwarded the body, which this one caught.)
async fn get_with_body_is_not_smuggled_to_an_origin_that_ignores_it(backend: Backend) {
    let origin = RawOrigin::start(BodyMode::Ignore).await;
    let proxy = proxy_for(&origin, backend).await;
    for (method, path) in [("GET", "/page"), ("HEAD", "/head")] {
        let smuggled = format!("GET /poison{path} HTTP/1.1\r\nHost: victim.example\r\n\r\n");
        let attack = format!(
            "{method} {path} HTTP/1.1\r\nHost: victim.example\r\nContent-Length: {}\r\n\r\n\
             {smuggled}",
            smuggled.len()
        );
        let answer = exchange(proxy.addr, attack.as_bytes(), method == "HEAD")
            .await
            .unwrap_or_else(|e| panic!("{method} with a body: {e}"));
        assert_eq!(answer.status, 400, "{method} with a body is refused");
    }
    let victim = get(proxy.addr, "/home", "victim.example").await;
    assert_eq!(
        victim.body_text(),
        echo_body("GET", "/home", "victim.example")
    );
    let poisoned: Vec<Seen> = origin
        .seen()
        .into_iter()
        .filter(|s| s.path().starts_with("/poison"))
        .collect();
    assert!(
        poisoned.is_empty(),
        "the origin parsed the smuggled request(s) from a GET/HEAD body the proxy forwarded: \
         {poisoned:#?}"
    );
    assert_clean_framing(&origin);
}

/// Defect 2: an absolute-form target names one authority, `Host` another. RFC 9112 3.2.2 says
/// the target's wins, and src/policy/authority.rs replaces `Host` with it (an HTTP/1.1 request
/// must still carry a `Host`). The response must then be fetched with `Host: victim.example`,
/// since that is the key it is stored under.
async fn absolute_form_authority_wins(backend: Backend) {
    let origin = RawOrigin::start(BodyMode::Ignore).await;
    let proxy = proxy_for(&origin, backend).await;

    let first = exchange(
        proxy.addr,
        b"GET http://victim.example/page HTTP/1.1\r\nHost: attacker.example\r\n\r\n",
        false,
    )
    .await
    .unwrap();
    assert_eq!(first.status, 200, "{}", first.body_text());
    assert!(
        first.cache_status().contains("stored"),
        "{}",
        first.cache_status()
    );
    let seen = origin.seen_for("/page");
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert_eq!(
        seen[0].header_values("host"),
        ["victim.example"],
        "the origin was asked for the target's authority, in one Host field"
    );
    assert_eq!(seen[0].target, "/page", "the origin gets the origin form");
    assert_eq!(
        first.body_text(),
        echo_body("GET", "/page", "victim.example")
    );

    // Stored under victim.example, fetched with Host victim.example.
    let hit = get(proxy.addr, "/page", "victim.example").await;
    assert!(hit.is_hit(), "{}", hit.cache_status());
    assert_eq!(hit.body, first.body);
    // Nothing under attacker.example: that key is still cold and is filled with its own Host.
    let other = get(proxy.addr, "/page", "attacker.example").await;
    assert!(!other.is_hit(), "{}", other.cache_status());
    assert_eq!(
        other.body_text(),
        echo_body("GET", "/page", "attacker.example")
    );

    // An HTTP/1.1 absolute-form request without Host is refused (RFC 9112 3.2).
    let no_host = exchange(
        proxy.addr,
        b"GET http://victim.example/nohost HTTP/1.1\r\n\r\n",
        false,
    )
    .await
    .unwrap();
    assert_eq!(no_host.status, 400);
    assert!(origin.seen_for("/nohost").is_empty());
    assert_eq!(origin.count(), 2);
    assert_clean_framing(&origin);
}

/// Defect 3: HTTP/2 names the authority in `:authority`; a `Host` beside it must agree
/// (RFC 9113 8.3.1). Over h2c with prior knowledge.
async fn h2_authority(backend: Backend) {
    let origin = RawOrigin::start(BodyMode::Ignore).await;
    let proxy = proxy_for(&origin, backend).await;
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("h2c handshake with the proxy");
    tokio::spawn(conn);

    async fn send(
        h2: &mut hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
        req: http::Request<Empty<Bytes>>,
    ) -> (u16, http::HeaderMap, String) {
        let resp = h2.send_request(req).await.expect("h2 response");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    // `:authority site.example`, no Host: the origin is asked for site.example.
    let req = http::Request::get("http://site.example/h2")
        .body(Empty::new())
        .unwrap();
    assert!(!req.headers().contains_key(http::header::HOST));
    let (status, _, body) = send(&mut h2, req).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, echo_body("GET", "/h2", "site.example"));
    let seen = origin.seen_for("/h2");
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert_eq!(seen[0].header_values("host"), ["site.example"]);

    // Stored under site.example: an HTTP/1.1 request for that authority hits it.
    let hit = get(proxy.addr, "/h2", "site.example").await;
    assert!(hit.is_hit(), "{}", hit.cache_status());

    // `:authority a.example` with `host: b.example`: refused, and nothing goes upstream.
    let req = http::Request::get("http://a.example/h2-mismatch")
        .header("host", "b.example")
        .body(Empty::new())
        .unwrap();
    let (status, _, body) = send(&mut h2, req).await;
    assert_eq!(status, 400, "{body}");
    assert!(origin.seen_for("/h2-mismatch").is_empty());
    assert_eq!(origin.count(), 1, "{:#?}", origin.seen());

    // Two `host` fields beside `:authority`, even equal ones: refused (RFC 9112 3.2 applies to
    // the field, whatever the protocol).
    let req = http::Request::get("http://a.example/h2-two-hosts")
        .header("host", "a.example")
        .header("host", "a.example")
        .body(Empty::new())
        .unwrap();
    let (status, _, body) = send(&mut h2, req).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(origin.count(), 1, "{:#?}", origin.seen());

    // No `:authority` (a relative target), `host` only: the Host names the authority.
    let req = http::Request::get("/h2-host-only")
        .header("host", "site.example")
        .body(Empty::new())
        .unwrap();
    let (status, _, body) = send(&mut h2, req).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, echo_body("GET", "/h2-host-only", "site.example"));
    assert_eq!(origin.count(), 2, "{:#?}", origin.seen());
    assert_clean_framing(&origin);
}

/// Defect 4: `Host` must be exactly one `uri-host [":" port]` (RFC 9112 3.2, RFC 9110 4.2.4).
/// Anything else is refused before it reaches the cache or the origin. The last case is the
/// poisoning one: `Host: victim.example/static` with target `/app.js` would spell the key
/// `http://victim.example/static/app.js` if host and path were concatenated.
async fn malformed_host_is_refused(backend: Backend) {
    let origin = RawOrigin::start(BodyMode::Ignore).await;
    let proxy = proxy_for(&origin, backend).await;
    let cases: [(&str, &[u8]); 6] = [
        ("no Host", b"GET /h HTTP/1.1\r\n\r\n"),
        (
            "two Host fields",
            b"GET /h HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
        ),
        (
            "two equal Host fields",
            b"GET /h HTTP/1.1\r\nHost: a.example\r\nHost: a.example\r\n\r\n",
        ),
        (
            "Host with a path",
            b"GET /h HTTP/1.1\r\nHost: a.example/x\r\n\r\n",
        ),
        (
            "Host with userinfo",
            b"GET /h HTTP/1.1\r\nHost: u@a.example\r\n\r\n",
        ),
        (
            "Host with a path that extends the target",
            b"GET /app.js HTTP/1.1\r\nHost: victim.example/static\r\n\r\n",
        ),
    ];
    for (what, request) in cases {
        let resp = exchange(proxy.addr, request, false)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(resp.status, 400, "{what}: {}", resp.body_text());
        assert_eq!(origin.count(), 0, "{what} reached the origin");
    }
    // A refusal closes the connection: a refused request's body is never read, so nothing after
    // its head can be trusted to start a request. Here the body is one.
    let smuggled = "GET /poison HTTP/1.1\r\nHost: victim.example\r\n\r\n";
    let attack = format!(
        "POST /form HTTP/1.1\r\nHost: victim.example/x\r\nContent-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    let mut client = RawClient::connect(proxy.addr).await;
    client.send(attack.as_bytes()).await;
    let refused = client
        .read_response(false, RESPONSE_WAIT)
        .await
        .unwrap_or_else(|e| panic!("POST with a bad Host: {e}"));
    assert_eq!(refused.status, 400);
    assert!(
        client.is_closed(Duration::from_secs(2)).await,
        "the connection stays open after a refusal whose body was not read"
    );
    assert_eq!(origin.count(), 0, "{:#?}", origin.seen());

    // The refused request filled nothing: /static/app.js for victim.example is a miss that the
    // origin answers with its own body.
    let real = get(proxy.addr, "/static/app.js", "victim.example").await;
    assert_eq!(real.status, 200);
    assert!(
        real.cache_status().contains("fwd=uri-miss"),
        "{}",
        real.cache_status()
    );
    assert_eq!(
        real.body_text(),
        echo_body("GET", "/static/app.js", "victim.example")
    );
    let seen = origin.seen();
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert_eq!(seen[0].target, "/static/app.js");
    assert_clean_framing(&origin);
}

/// Defect 5: an origin frames its response twice, `Content-Length: 3` and chunked "hello".
/// RFC 9112 6.3 says the chunked coding wins and the length must be removed before the response
/// is forwarded. The first client must get exactly the bytes that are stored (a hit afterwards
/// is byte-identical), and no response may carry a length beside chunked, on the fill path
/// (GET) or the pass-through path (POST).
async fn double_framed_response_is_reframed(backend: Backend) {
    let origin = RawOrigin::start(BodyMode::Ignore).await;
    origin.reply(
        "/both",
        Reply::raw(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\
             Cache-Control: max-age=60\r\nContent-Type: text/plain",
            b"5\r\nhello\r\n0\r\n\r\n",
        ),
    );
    let proxy = proxy_for(&origin, backend).await;

    // Both exchanges on one keep-alive connection: a length that disagreed with the bytes sent
    // would also desynchronise the second response.
    let mut client = RawClient::connect(proxy.addr).await;
    let request = b"GET /both HTTP/1.1\r\nHost: site.example\r\n\r\n";
    client.send(request).await;
    // `read_response` refuses a response with both Content-Length and chunked.
    let first = client
        .read_response(false, RESPONSE_WAIT)
        .await
        .unwrap_or_else(|e| panic!("first GET /both: {e}"));
    assert_eq!(first.status, 200);
    assert_eq!(first.body_text(), "hello", "{:?}", first.headers);
    // A chunked body is streamed to the client while it is buffered for the store, and stored
    // when it ends, which may be just after the client has it: wait for the entry rather than
    // race it (and do not expect `stored` in the first Cache-Status, which is reported only for
    // an entry already in the store).
    let key = cachet::store::Key::new("http://site.example/both");
    let deadline = Instant::now() + Duration::from_secs(2);
    while proxy.store().get(&key).is_none() {
        assert!(
            Instant::now() < deadline,
            "GET /both was not stored: {}",
            first.cache_status()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    client.send(request).await;
    let second = client
        .read_response(false, RESPONSE_WAIT)
        .await
        .unwrap_or_else(|e| panic!("second GET /both: {e}"));
    assert!(second.is_hit(), "{}", second.cache_status());
    assert_eq!(
        second.body, first.body,
        "the hit serves what the miss served"
    );
    for resp in [&first, &second] {
        if let Some(len) = resp.header("content-length") {
            assert_eq!(len, resp.body.len().to_string(), "{:?}", resp.headers);
        }
    }

    // The pass-through path relays the same response.
    let post = exchange(
        proxy.addr,
        b"POST /both HTTP/1.1\r\nHost: site.example\r\nContent-Length: 0\r\n\r\n",
        false,
    )
    .await
    .unwrap_or_else(|e| panic!("POST /both: {e}"));
    assert_eq!(post.body_text(), "hello", "{:?}", post.headers);
    assert!(post.cache_status().contains("fwd=bypass"));
    assert_eq!(origin.count(), 2, "{:#?}", origin.seen());
    assert_clean_framing(&origin);
}

/// Defect 10, CONNECT: this is a reverse proxy; CONNECT is 501 with a body saying so, and never
/// reaches the origin (an origin that tunnelled would hand the client a raw connection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_is_not_implemented() {
    let origin = RawOrigin::start(BodyMode::Ignore).await;
    let proxy = proxy_for(&origin, Backend::Moka).await;
    let resp = exchange(
        proxy.addr,
        b"CONNECT victim.example:443 HTTP/1.1\r\nHost: victim.example:443\r\n\r\n",
        false,
    )
    .await
    .unwrap_or_else(|e| panic!("CONNECT: {e}"));
    assert_eq!(resp.status, 501);
    assert!(!resp.body.is_empty(), "the 501 says why");
    assert_eq!(origin.count(), 0, "{:#?}", origin.seen());
}

/// Defect 10, an over-long target: 414, not forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_target_is_414() {
    let origin = RawOrigin::start(BodyMode::Ignore).await;
    let proxy = proxy_for(&origin, Backend::Moka).await;
    let request = format!(
        "GET /{} HTTP/1.1\r\nHost: a.example\r\n\r\n",
        "a".repeat(100 << 10)
    );
    let resp = exchange(proxy.addr, request.as_bytes(), false)
        .await
        .unwrap_or_else(|e| panic!("100 KB target: {e}"));
    assert_eq!(resp.status, 414, "{}", resp.body_text());
    assert_eq!(origin.count(), 0);
}

/// Defect 10, a malformed chunked request body: `zz` is no chunk size. The request is
/// malformed (RFC 9112 7.1), and the answer is 400; whatever part of it went upstream must not
/// have reached the origin as a complete request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_chunked_body_is_400() {
    let origin = RawOrigin::start(BodyMode::Read).await;
    let proxy = proxy_for(&origin, Backend::Moka).await;
    let resp = exchange(
        proxy.addr,
        b"POST /upload HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        false,
    )
    .await;
    let complete: Vec<Seen> = origin
        .seen_for("/upload")
        .into_iter()
        .filter(|s| !s.truncated)
        .collect();
    assert!(
        complete.is_empty(),
        "the origin received a whole request: {complete:#?}"
    );
    let resp = resp.unwrap_or_else(|e| panic!("no response to a malformed chunked body: {e}"));
    assert_eq!(resp.status, 400, "{:?} {}", resp.headers, resp.body_text());
}

/// Where a property-test request puts its authority.
#[derive(Debug, Clone, Copy)]
enum AuthorityForm {
    Host,
    HostUppercaseDefaultPort,
    Missing,
    Duplicate,
    HostWithPath,
    HostWithUserinfo,
    AbsoluteOtherHost,
    AbsoluteSameHost,
    AbsoluteNoHost,
}

/// How a property-test request frames its body.
#[derive(Debug, Clone, Copy)]
enum BodyForm {
    None,
    Length,
    /// `Content-Length` short of the body: the rest follows as the next "request".
    LengthShort,
    /// `Content-Length` beyond the body, then the client closes its side.
    LengthLong,
    Chunked,
    LengthAndChunked,
    LengthTwice,
    LengthTwiceDiffering,
    ObsFold,
}

/// One generated request and what the test knows about it.
struct Case {
    method: &'static str,
    /// The path (and query) the origin should see.
    path: String,
    raw: Vec<u8>,
    /// The effective authority by RFC 9112 3.2 and src/policy/authority.rs, or `None` when the
    /// proxy must refuse the request.
    authority: Option<String>,
    /// The authorities the request mentions: whatever ends up stored under one of them must
    /// have been fetched with that very `Host`.
    names: [String; 2],
    close_after_send: bool,
    description: String,
}

fn generate(rng: &mut StdRng, i: usize) -> Case {
    use AuthorityForm as A;
    use BodyForm as B;
    // GET weighs more than the others, and no body more than the other framings, so that a fair
    // share of the cases store something and the poisoning check has hits to look at.
    let method = *[
        "GET", "GET", "GET", "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS",
    ]
    .choose(rng)
    .unwrap();
    let authority_form = *[
        A::Host,
        A::Host,
        A::HostUppercaseDefaultPort,
        A::Missing,
        A::Duplicate,
        A::HostWithPath,
        A::HostWithUserinfo,
        A::AbsoluteOtherHost,
        A::AbsoluteSameHost,
        A::AbsoluteNoHost,
    ]
    .choose(rng)
    .unwrap();
    let body_form = *[
        B::None,
        B::None,
        B::None,
        B::None,
        B::Length,
        B::LengthShort,
        B::LengthLong,
        B::Chunked,
        B::LengthAndChunked,
        B::LengthTwice,
        B::LengthTwiceDiffering,
        B::ObsFold,
    ]
    .choose(rng)
    .unwrap();

    let k = rng.random_range(0..3);
    let host = format!("site{k}.example");
    let other = format!("other{k}.example");
    let path = if rng.random_bool(0.3) {
        format!("/prop/{i}?q={}", rng.random_range(0..100))
    } else {
        format!("/prop/{i}")
    };
    let absolute = format!("http://{host}{path}");
    let (target, hosts, authority): (&str, Vec<String>, Option<String>) = match authority_form {
        A::Host => (&path, vec![host.clone()], Some(host.clone())),
        A::HostUppercaseDefaultPort => (
            &path,
            vec![format!("SITE{k}.Example:80")],
            Some(host.clone()),
        ),
        A::Missing => (&path, vec![], None),
        A::Duplicate => {
            let second = if rng.random_bool(0.5) { &host } else { &other };
            (&path, vec![host.clone(), second.clone()], None)
        }
        A::HostWithPath => (&path, vec![format!("{host}/x")], None),
        A::HostWithUserinfo => (&path, vec![format!("u@{host}")], None),
        A::AbsoluteOtherHost => (&absolute, vec![other.clone()], Some(host.clone())),
        A::AbsoluteSameHost => (&absolute, vec![host.clone()], Some(host.clone())),
        A::AbsoluteNoHost => (&absolute, vec![], None),
    };

    // Every body carries a complete request: if the origin ever parses body bytes as a request,
    // a `/smuggled/` target shows up in its records.
    let body = format!("x=1&GET /smuggled/{i} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes();
    let chunked = {
        let mut wire = Vec::new();
        let mut rest = body.as_slice();
        while !rest.is_empty() {
            let n = rng.random_range(1..=rest.len());
            wire.extend_from_slice(format!("{n:x}\r\n").as_bytes());
            wire.extend_from_slice(&rest[..n]);
            wire.extend_from_slice(b"\r\n");
            rest = &rest[n..];
        }
        wire.extend_from_slice(b"0\r\n\r\n");
        wire
    };
    let mut fields: Vec<String> = hosts.iter().map(|h| format!("Host: {h}")).collect();
    fields.push("User-Agent: forwarding-proptest".into());
    let mut payload = Vec::new();
    let mut close_after_send = false;
    match body_form {
        B::None => {}
        B::Length => {
            fields.push(format!("Content-Length: {}", body.len()));
            payload = body.clone();
        }
        B::LengthShort => {
            // The length covers "x=1&"; a NUL starts what follows, so that the rest can never
            // parse as a (legitimately pipelined) request on the client connection.
            fields.push("Content-Length: 4".into());
            payload = b"x=1&\0".to_vec();
            payload.extend_from_slice(&body[4..]);
        }
        B::LengthLong => {
            fields.push(format!("Content-Length: {}", body.len() + 10));
            payload = body.clone();
            close_after_send = true;
        }
        B::Chunked => {
            fields.push("Transfer-Encoding: chunked".into());
            payload = chunked.clone();
        }
        B::LengthAndChunked => {
            // The classic CL.TE and TE.CL disagreements: the length is the decoded size, a
            // short prefix, or the size on the wire.
            let len = *[body.len(), 4, chunked.len()].choose(rng).unwrap();
            let mut pair = vec![
                format!("Content-Length: {len}"),
                "Transfer-Encoding: chunked".to_string(),
            ];
            if rng.random_bool(0.5) {
                pair.reverse();
            }
            fields.extend(pair);
            payload = chunked.clone();
        }
        B::LengthTwice => {
            fields.push(format!("Content-Length: {}", body.len()));
            fields.push(format!("Content-Length: {}", body.len()));
            payload = body.clone();
        }
        B::LengthTwiceDiffering => {
            fields.push(format!("Content-Length: {}", body.len()));
            fields.push("Content-Length: 4".into());
            payload = body.clone();
        }
        B::ObsFold => {
            // A continuation line under a harmless field, under Host, or under the length.
            match rng.random_range(0..3) {
                0 => fields.push("X-Note: a\r\n folded".into()),
                1 => fields.insert(0, format!("Host: {host}\r\n evil.example")),
                _ => {
                    fields.push(format!("Content-Length: {}\r\n 0", body.len()));
                    payload = body.clone();
                }
            }
        }
    }
    let mut raw = format!("{method} {target} HTTP/1.1\r\n").into_bytes();
    for f in &fields {
        raw.extend_from_slice(f.as_bytes());
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"\r\n");
    raw.extend_from_slice(&payload);
    let description = format!(
        "case {i}: {method} {authority_form:?} {body_form:?}\n    {}",
        show(&raw)
    );
    Case {
        method,
        path,
        raw,
        authority,
        names: [host, other],
        close_after_send,
        description,
    }
}

/// Property test of the whole forwarding path: random methods, framings and authority forms,
/// each request sent as raw bytes on a fresh connection, with a fixed seed (set
/// `FORWARDING_SEED` to explore others). For each request:
///
/// - the origin received at most one request, never a body's bytes as a request, and read for
///   each exactly what its framing announced;
/// - a request the authority rules refuse reaches no origin;
/// - for each authority the request mentions, if a later plain GET of the same URL for that
///   authority is a hit, the stored response was fetched by this request with `Host` equal to
///   that authority, and that authority was the request's effective one.
async fn forwarding_property(backend: Backend) {
    const CASES: usize = 200;
    let seed = std::env::var("FORWARDING_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x15_5e_08_u64);
    let mut rng = StdRng::seed_from_u64(seed);
    let origin = RawOrigin::start(BodyMode::Read).await;
    let proxy = proxy_for(&origin, backend).await;
    let started = Instant::now();
    let (mut forwarded, mut hits_checked, mut refused) = (0, 0, 0);

    for i in 0..CASES {
        let case = generate(&mut rng, i);
        let what = format!("seed {seed:#x}, {}", case.description);
        let before = origin.count();

        let mut client = RawClient::connect(proxy.addr).await;
        client.send(&case.raw).await;
        if case.close_after_send {
            client.shutdown_write().await;
        }
        // A request the proxy cannot complete (a body cut short by the client) may get no
        // answer at all; that is not what this test is about, so the wait for one is short.
        let wait = if case.close_after_send {
            Duration::from_millis(500)
        } else {
            RESPONSE_WAIT
        };
        let response = client.read_response(case.method == "HEAD", wait).await;
        drop(client);
        if case.close_after_send {
            // Let an aborted upstream exchange reach the origin before it is counted.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let new: Vec<Seen> = origin.seen()[before..].to_vec();
        assert!(new.len() <= 1, "{what}\norigin received {new:#?}");
        for s in &new {
            assert!(
                s.framing_error.is_none(),
                "{what}\nframing the origin could not trust: {s:#?}"
            );
            assert_eq!(s.target, case.path, "{what}\n{s:#?}");
        }
        if new.iter().any(|s| !s.truncated) {
            forwarded += 1;
        }
        match &case.authority {
            None => {
                refused += 1;
                assert!(new.is_empty(), "{what}\nrefused request reached {new:#?}");
                if let Ok(r) = &response {
                    assert_eq!(r.status, 400, "{what}\n{r:?}");
                }
            }
            Some(authority) => {
                for s in &new {
                    assert_eq!(s.host(), Some(authority.as_str()), "{what}\n{s:#?}");
                }
            }
        }

        for name in &case.names {
            let probe = get(proxy.addr, &case.path, name).await;
            if !probe.is_hit() {
                continue;
            }
            hits_checked += 1;
            assert_eq!(
                case.authority.as_deref(),
                Some(name.as_str()),
                "{what}\nstored under {name}, which was not the request's authority"
            );
            assert!(
                new.len() == 1 && new[0].host() == Some(name.as_str()),
                "{what}\nstored under {name}, but the origin was asked: {new:#?}"
            );
            assert_eq!(
                probe.body_text(),
                echo_body("GET", &case.path, name),
                "{what}"
            );
        }
    }

    // Records that arrived late, after their case was counted, are still checked here. A body
    // cut short by a client that gave up (the `LengthLong` cases) is allowed: the proxy streams
    // bodies and cannot send what never came, and an origin that reads an end of stream knows
    // the request is incomplete.
    let bad = origin.framing_errors();
    assert!(
        bad.is_empty(),
        "framing the origin could not trust: {bad:#?}"
    );
    let strays: Vec<Seen> = origin
        .seen()
        .into_iter()
        .filter(|s| !s.path().starts_with("/prop/"))
        .collect();
    assert!(strays.is_empty(), "requests no client sent: {strays:#?}");
    // The checks above are only worth something if the cases exercised both sides.
    assert!(forwarded >= 40, "only {forwarded} cases reached the origin");
    assert!(
        hits_checked >= 5,
        "only {hits_checked} stored responses checked"
    );
    assert!(refused >= 40, "only {refused} cases were refusals");
    eprintln!(
        "forwarding_property({backend:?}): seed {seed:#x}, {CASES} cases in {:?}: {forwarded} \
         forwarded, {refused} refused, {hits_checked} stored responses checked",
        started.elapsed()
    );
}

macro_rules! per_backend {
    ($($name:ident),* $(,)?) => {
        mod rwlock { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(cachet::store::Backend::Rwlock).await } )* }
        mod sharded { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(cachet::store::Backend::Sharded).await } )* }
        mod moka { $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(cachet::store::Backend::Moka).await } )* }
    };
}

per_backend!(
    get_with_body_is_not_smuggled,
    get_with_body_is_not_smuggled_to_an_origin_that_ignores_it,
    absolute_form_authority_wins,
    h2_authority,
    malformed_host_is_refused,
    double_framed_response_is_reframed,
    forwarding_property,
);

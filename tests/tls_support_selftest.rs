//! Checks that the TLS test support itself works: a CA-issued origin answers over TLS, and a
//! client trusting a different CA is refused.

mod tls_support;

use tls_support::{tls_get, HttpsOrigin, TestCa};

#[tokio::test]
async fn origin_with_ca_issued_cert_answers_over_http1() {
    let ca = TestCa::new("selftest CA");
    let issued = ca.issue(&["localhost", "127.0.0.1"]);
    let origin = HttpsOrigin::start(&issued, "hello over tls");

    let response = tls_get(
        origin.addr,
        &ca.cert_pem(),
        "localhost",
        "/some/path",
        "example.test",
        &[b"h2", b"http/1.1"],
    )
    .await
    .expect("TLS GET succeeds");

    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "hello over tls");
    assert_eq!(response.alpn.as_deref(), Some(b"http/1.1".as_slice()));
    assert_eq!(response.version, http::Version::HTTP_11);
    assert_eq!(response.header("x-origin-path"), Some("/some/path"));
    assert_eq!(response.header("cache-control"), Some("public, max-age=60"));
    assert_eq!(origin.hits(), 1);
    assert_eq!(origin.last_sni().as_deref(), Some("localhost"));
    assert_eq!(origin.last_host().as_deref(), Some("example.test"));

    // An IP server name is checked against the IP SAN and sends no SNI.
    let response = tls_get(
        origin.addr,
        &ca.cert_pem(),
        "127.0.0.1",
        "/ip",
        "127.0.0.1",
        &[b"http/1.1"],
    )
    .await
    .expect("TLS GET by IP succeeds");
    assert_eq!(response.status, 200);
    assert_eq!(origin.hits(), 2);
    assert_eq!(origin.last_sni(), None);
}

#[tokio::test]
async fn client_trusting_another_ca_is_refused() {
    let ca = TestCa::new("issuing CA");
    let other = TestCa::new("unrelated CA");
    let origin = HttpsOrigin::start(&ca.issue(&["localhost"]), "unreachable");

    let err = tls_get(
        origin.addr,
        &other.cert_pem(),
        "localhost",
        "/",
        "localhost",
        &[b"http/1.1"],
    )
    .await
    .expect_err("handshake must fail against an untrusted issuer");

    assert!(
        err.contains("certificate") && err.contains("UnknownIssuer"),
        "unexpected error: {err}"
    );
    assert_eq!(origin.hits(), 0);
}

//! Helpers shared by the integration tests: a real origin, a real proxy, real HTTP clients, all
//! on loopback.

#![allow(dead_code)] // each test binary uses a different subset

use std::net::SocketAddr;
use std::time::Duration;

use cachet::config::ServeConfig;
use cachet::origin::{Origin, OriginConfig};
use cachet::server::Running;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// An origin on an ephemeral port; it stops when the token is cancelled or dropped with the test.
pub async fn origin(latency: Duration) -> (Origin, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let token = CancellationToken::new();
    let config = OriginConfig {
        latency,
        body_size: 1024,
        max_age: 3600,
    };
    let origin = cachet::origin::serve(listener, config, token.clone())
        .await
        .unwrap();
    (origin, token)
}

/// A proxy in front of `origin` with an admin listener, both on ephemeral ports; `tweak` adjusts
/// the configuration first.
pub async fn proxy(origin: SocketAddr, tweak: impl FnOnce(&mut ServeConfig)) -> Running {
    let mut config = ServeConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        format!("http://{origin}").parse().unwrap(),
    );
    config.admin = Some("127.0.0.1:0".parse().unwrap());
    tweak(&mut config);
    cachet::server::start(config).await.unwrap()
}

/// An HTTP client that ignores any proxy settings of the environment.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Polls `check` every 10 ms for up to `within`; true as soon as it holds.
pub async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// [`eventually`] with an async check.
pub async fn eventually_async<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends raw bytes and reads until the peer closes or `within` passes; returns what was read
/// and whether the peer closed.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], within: Duration) -> (Vec<u8>, bool) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_until_close(&mut stream, within).await
}

/// Reads until EOF (true) or until `within` passes (false).
pub async fn read_until_close(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (out, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// A response body as JSON (reqwest is built without its `json` feature).
pub async fn json(resp: reqwest::Response) -> serde_json::Value {
    let bytes = resp.bytes().await.unwrap();
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&bytes)))
}

//! Shared set-up for integration tests: a real origin and a real proxy on loopback ports.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use cachet::config::ServeConfig;
use cachet::origin::{self, Origin, OriginConfig};
use cachet::server::{self, Running};
use cachet::store::Backend;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// An origin and a proxy in front of it.
pub struct Stack {
    pub origin: Origin,
    pub proxy: Running,
    pub origin_shutdown: CancellationToken,
    pub client: reqwest::Client,
}

impl Stack {
    /// The proxy URL for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.proxy.addr, path)
    }

    /// Requests that reached the origin.
    pub fn origin_requests(&self) -> u64 {
        self.origin.stats.requests()
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(self.client.get(self.url(path))).await
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let resp = req.send().await.expect("proxy answers");
        Reply::read(resp).await
    }
}

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub async fn read(resp: reqwest::Response) -> Reply {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
        Reply {
            status,
            headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn cache_status(&self) -> &str {
        self.header("cache-status").unwrap_or("")
    }

    pub fn is_hit(&self) -> bool {
        self.cache_status().contains("; hit")
    }
}

pub async fn start_origin(config: OriginConfig) -> (Origin, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let token = CancellationToken::new();
    let origin = origin::serve(listener, config, token.clone())
        .await
        .unwrap();
    (origin, token)
}

pub fn proxy_config(upstream: SocketAddr, backend: Backend) -> ServeConfig {
    let mut config = ServeConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        format!("http://{upstream}").parse().unwrap(),
    );
    config.backend = backend;
    config
}

/// Starts an origin with `latency` and a proxy with `backend`, adjusted by `tweak`.
pub async fn stack_with(
    backend: Backend,
    latency: Duration,
    tweak: impl FnOnce(&mut ServeConfig),
) -> Stack {
    let (origin, origin_shutdown) = start_origin(OriginConfig {
        latency,
        body_size: 4096,
        max_age: 3600,
    })
    .await;
    let mut config = proxy_config(origin.addr, backend);
    tweak(&mut config);
    let proxy = server::start(config).await.unwrap();
    Stack {
        origin,
        proxy,
        origin_shutdown,
        client: client(),
    }
}

pub async fn stack(backend: Backend) -> Stack {
    stack_with(backend, Duration::from_millis(5), |_| {}).await
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

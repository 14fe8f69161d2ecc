//! The request path of a hit, end to end: request bytes in, response bytes out, through hyper's
//! HTTP/1.1 server and `Proxy::handle`, over an in-memory pipe (`tokio::io::duplex`) instead of
//! a socket, so the figure is the proxy's own cost and not the kernel's.
//!
//! The store is filled directly with a fresh 4 KiB response under the request's key; the
//! upstream points at a closed port and is never contacted (the bench checks first that the
//! answer says `Cache-Status: cachet; hit`).

use std::convert::Infallible;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use cachet::policy::CacheControl;
use cachet::proxy::{Proxy, ProxyConfig};
use cachet::revalidate::Revalidator;
use cachet::store::{Backend, CachedResponse, Entry, Eviction, Key, MokaPolicy};
use cachet::upstream::{Upstream, UpstreamConfig};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use http::{HeaderMap, HeaderValue, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

const BODY: usize = 4096;
const REQUEST: &[u8] = b"GET /obj/1 HTTP/1.1\r\nHost: bench.local\r\nUser-Agent: bench\r\n\r\n";

fn stored_response() -> Entry {
    let mut headers = HeaderMap::new();
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(
        "cache-control",
        HeaderValue::from_static("public, max-age=86400"),
    );
    headers.insert("etag", HeaderValue::from_static("\"0123456789abcdef\""));
    headers.insert(
        "date",
        HeaderValue::from_str(&httpdate::fmt_http_date(SystemTime::now())).unwrap(),
    );
    let cc = CacheControl::from_headers(&headers);
    let now = SystemTime::now();
    Entry::Response(CachedResponse {
        status: StatusCode::OK,
        headers,
        body: Bytes::from(vec![b'x'; BODY]),
        request_time: now,
        response_time: now,
        vary_values: Vec::new(),
        cc,
        lifetime: 86_400,
        initial_age: 0,
    })
}

/// Reads one HTTP/1.1 response with a Content-Length from `io` into `buf`; returns its length.
async fn read_response(io: &mut DuplexStream, buf: &mut Vec<u8>) -> usize {
    buf.clear();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = io.read(&mut chunk).await.expect("pipe read");
        assert!(n > 0, "the server closed the pipe");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).expect("ascii head");
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .expect("a content-length");
            let total = end + 4 + len;
            while buf.len() < total {
                let n = io.read(&mut chunk).await.expect("pipe read");
                assert!(n > 0, "the server closed the pipe mid-body");
                buf.extend_from_slice(&chunk[..n]);
            }
            return total;
        }
    }
}

fn hit_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("request_path_hit");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(1));
    for backend in Backend::ALL {
        let store = backend.build(64 << 20, Eviction::Adaptive, MokaPolicy::Tinylfu);
        store.insert(
            Key::new("http://bench.local/obj/1"),
            std::sync::Arc::new(stored_response()),
        );
        let mut client = rt.block_on(async {
            let upstream = Upstream::new(UpstreamConfig {
                connect_timeout: Duration::from_millis(100),
                response_timeout: Duration::from_millis(100),
                pool_idle_timeout: Duration::from_secs(1),
                max_concurrency: 64,
                queue_timeout: Duration::from_millis(100),
                ..UpstreamConfig::new("http://127.0.0.1:9".parse().unwrap())
            })
            .expect("a plain-HTTP upstream needs no TLS files");
            let (revalidator, _workers) = Revalidator::start(1, 1);
            let proxy = Proxy::new(store, upstream, ProxyConfig::default(), revalidator);
            let (client, server) = tokio::io::duplex(64 * 1024);
            let service = service_fn(move |req| {
                let proxy = proxy.clone();
                async move { Ok::<_, Infallible>(proxy.handle(req, None).await) }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(server), service)
                    .await;
            });
            client
        });
        let mut buf = Vec::with_capacity(BODY * 2);
        // The bench must measure hits: check the first answer says so.
        rt.block_on(async {
            client.write_all(REQUEST).await.unwrap();
            let n = read_response(&mut client, &mut buf).await;
            let text = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
            assert!(text.starts_with("http/1.1 200"), "{text}");
            assert!(text.contains("cache-status: cachet; hit"), "{text}");
        });
        group.bench_function(BenchmarkId::new("get_4KiB", backend.as_str()), |b| {
            b.iter(|| {
                rt.block_on(async {
                    client.write_all(REQUEST).await.unwrap();
                    read_response(&mut client, &mut buf).await
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, hit_path);
criterion_main!(benches);

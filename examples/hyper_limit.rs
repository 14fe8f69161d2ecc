//! The fastest a cache hit can be served by anything built on hyper: a minimal hyper 1.x HTTP/1.1
//! server that answers every request from an `RwLock<HashMap>` of prepared responses.
//!
//! `scripts/compare.sh` runs it beside cachet, nginx, Varnish and Traffic Server, pinned to the
//! same core and loaded by the same wrk, as the limit row: what is left once the cache itself
//! costs nothing. Whatever cachet does per hit beyond this (the key, the lookup in a real store,
//! freshness, `Age`, `Cache-Status`, the access log, timeouts) is the gap between the two rows;
//! what this server spends is hyper, tokio and the kernel.
//!
//! Per request it does what any hyper server answering from a map has to do and nothing more:
//! takes a read lock, looks the request path up without allocating (`HashMap<String, _>` queried
//! by `&str`), clones the prepared `HeaderMap` (one allocation; the values are static, so
//! cloning them copies no bytes) and the body (`Bytes`, a reference-count increment), and hands
//! hyper a `Full<Bytes>`. The headers are those of a stored hit (`Content-Type`,
//! `Cache-Control`, `Date`, `ETag`, `Age`, `Cache-Status`, `Content-Length`), prepared once at
//! start: the stored `Date` keeps hyper from formatting one, and `Age` is a constant `0`, where
//! a real cache has to write the entry's age.
//!
//! Prepared paths (the query string is ignored, so `/hot1k?size=1024` is `/hot1k`):
//!
//! | path | body |
//! | --- | --- |
//! | `/hot1k` | 1 KiB |
//! | `/hot64k` | 64 KiB |
//! | `/mix/1` ... `/mix/N` | 1 KiB each (N = `--keys`, 1,000 by default) |
//!
//! Anything else is a `404` with an empty body.
//!
//! Runtime: a current-thread tokio runtime and `hyper::server::conn::http1` (no HTTP/2 preface
//! sniffing), by default. On the one core the comparison pins every server to, that is the
//! cheapest way to run hyper: no work-stealing scheduler, no cross-thread wake-ups, so it is an
//! upper bound for cachet, whose multi-thread runtime gets one worker when pinned to one core.
//! `--multi-thread` runs the same server on a multi-thread runtime (one worker per core it may
//! run on, as cachet does) to measure what the scheduler alone costs.
//!
//! ```sh
//! cargo build --release --example hyper_limit
//! taskset -c 0 target/release/examples/hyper_limit --listen 127.0.0.1:18099
//! curl -i http://127.0.0.1:18099/hot1k
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    HeaderMap, HeaderName, HeaderValue, AGE, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, DATE,
    ETAG,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// A response prepared at start, cloned for every request.
struct Prepared {
    headers: HeaderMap,
    body: Bytes,
}

/// The prepared responses, by request path.
type Table = RwLock<HashMap<String, Prepared>>;

const USAGE: &str = "usage: hyper_limit [--listen ADDR] [--keys N] [--multi-thread]
  --listen ADDR     where to listen (default 127.0.0.1:18099)
  --keys N          prepare /mix/1 ... /mix/N with 1 KiB bodies (default 1000)
  --multi-thread    a multi-thread tokio runtime instead of a current-thread one";

fn main() -> ExitCode {
    let mut listen: SocketAddr = "127.0.0.1:18099".parse().expect("literal address");
    let mut keys: usize = 1000;
    let mut multi_thread = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let parsed = match arg.as_str() {
            "--listen" => args.next().and_then(|v| v.parse().ok()).map(|v| listen = v),
            "--keys" => args.next().and_then(|v| v.parse().ok()).map(|v| keys = v),
            "--multi-thread" => {
                multi_thread = true;
                Some(())
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ => None,
        };
        if parsed.is_none() {
            eprintln!("hyper_limit: bad argument {arg:?}\n{USAGE}");
            return ExitCode::from(2);
        }
    }

    let table = Arc::new(RwLock::new(prepare(keys)));
    let runtime = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    }
    .enable_all()
    .build();
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hyper_limit: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(listen, table)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hyper_limit: {listen}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The responses a cache would hold after its fills: the same headers for every entry but the
/// `ETag` and the length.
fn prepare(keys: usize) -> HashMap<String, Prepared> {
    let date = HeaderValue::from_str(&httpdate::fmt_http_date(SystemTime::now()))
        .expect("an HTTP date is a valid header value");
    let entry = |path: &str, size: usize| {
        let mut headers = HeaderMap::new();
        headers.insert(DATE, date.clone());
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        headers.insert(
            CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=3600"),
        );
        headers.insert(
            ETAG,
            HeaderValue::from_str(&format!("\"{:016x}\"", fnv(path))).expect("hex"),
        );
        headers.insert(AGE, HeaderValue::from_static("0"));
        headers.insert(
            HeaderName::from_static("cache-status"),
            HeaderValue::from_static("hyper_limit; hit"),
        );
        headers.insert(CONTENT_LENGTH, HeaderValue::from(size));
        let body = Bytes::from(
            (0..size)
                .map(|i| b'a' + (i % 26) as u8)
                .collect::<Vec<u8>>(),
        );
        (path.to_string(), Prepared { headers, body })
    };
    let mut table: HashMap<String, Prepared> = (1..=keys)
        .map(|i| entry(&format!("/mix/{i}"), 1024))
        .collect();
    for (path, size) in [("/hot1k", 1024), ("/hot64k", 64 * 1024)] {
        let (k, v) = entry(path, size);
        table.insert(k, v);
    }
    table
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Answers one request from the table.
fn respond(table: &Table, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    // A poisoned lock still holds the prepared responses, which no one writes.
    let table = table.read().unwrap_or_else(|e| e.into_inner());
    let mut resp = match table.get(req.uri().path()) {
        Some(p) => {
            let mut resp = Response::new(Full::new(p.body.clone()));
            *resp.headers_mut() = p.headers.clone();
            resp
        }
        None => {
            let mut resp = Response::new(Full::new(Bytes::new()));
            *resp.status_mut() = StatusCode::NOT_FOUND;
            resp
        }
    };
    drop(table);
    if req.method() == hyper::Method::HEAD {
        *resp.body_mut() = Full::new(Bytes::new());
    }
    resp
}

async fn serve(listen: SocketAddr, table: Arc<Table>) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    eprintln!("hyper_limit: listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                eprintln!("hyper_limit: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let table = Arc::clone(&table);
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let resp = respond(&table, &req);
                async move { Ok::<_, Infallible>(resp) }
            });
            // Errors are clients going away mid-request: nothing to do about them here.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

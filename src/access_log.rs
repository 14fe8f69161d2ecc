//! The access log: one line per client request on stdout, plain or JSON.
//!
//! A line is written when the request is over, not when its response headers are ready: the
//! [`AccessRecord`] travels inside the response body ([`LoggedBody`]) and writes itself when the
//! body is dropped, so the line carries the bytes really sent and the total time including the
//! body, and a client that disconnects mid-response still gets its line (with the bytes it got).
//! A request whose handling is abandoned before a response exists (the client went away while
//! the proxy waited on the upstream) is logged with status 499, as nginx does.
//!
//! Lines are handed to one writer thread over a bounded channel and written to stdout in batches:
//! a request never waits on a `write` system call or on stdout's lock, and lines from concurrent
//! requests never interleave. When stdout stalls and the queue fills, further lines are dropped
//! and counted (`cachet_access_log_dropped_total`) rather than slowing the proxy. [`flush`] waits
//! for the queue to drain, for a clean exit. Diagnostics (`tracing`) go to stderr, so the two
//! streams can be routed apart.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{HeaderMap, HOST, REFERER, USER_AGENT};
use http::{Method, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::body::{Body, BoxError};
use crate::config::LogFormat;

/// Status logged for a request abandoned before its response existed (nginx's convention).
pub const CLIENT_CLOSED: u16 = 499;

/// One request's line, written when the record drops. `G` is whatever must last exactly as long
/// as the request (the server's in-flight gauge guard and the connection's busy mark); it is a
/// type parameter rather than a boxed list so that a request costs no allocation for it.
#[derive(Debug)]
pub struct AccessRecord<G> {
    format: Option<LogFormat>,
    at: SystemTime,
    started: Instant,
    peer: SocketAddr,
    method: Method,
    target: String,
    version: Version,
    /// `Host` (or h2 `:authority`), `User-Agent` and `Referer` as the client sent them; taken
    /// only when a line will be written.
    client_fields: Option<Box<ClientFields>>,
    status: u16,
    result: &'static str,
    upstream: Option<Duration>,
    /// The site the request was served for (none when it was refused before one was picked).
    site: Option<Arc<str>>,
    bytes: u64,
    /// Dropped with the record, after the line is written; held for its `Drop`, never read.
    #[allow(dead_code)]
    guard: G,
}

/// The request fields a line names beside the target: who asked for what, from where.
#[derive(Debug, Clone, Default)]
struct ClientFields {
    host: String,
    user_agent: String,
    referer: String,
}

impl ClientFields {
    fn of(uri: &http::Uri, headers: &HeaderMap) -> Box<ClientFields> {
        let field = |name: http::header::HeaderName| {
            headers
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default()
        };
        let mut host = field(HOST);
        if host.is_empty() {
            host = uri.authority().map(|a| a.to_string()).unwrap_or_default();
        }
        Box::new(ClientFields {
            host,
            user_agent: field(USER_AGENT),
            referer: field(REFERER),
        })
    }
}

impl<G> AccessRecord<G> {
    /// Starts a record for a request that just arrived. With `format` `None` nothing is written,
    /// but `guard` still lives as long as the request (and `target` may be left empty: the
    /// caller need not format it; nor are the request's fields copied).
    pub fn start<B>(
        format: Option<LogFormat>,
        peer: SocketAddr,
        req: &http::Request<B>,
        target: String,
        guard: G,
    ) -> Self {
        AccessRecord {
            format,
            at: SystemTime::now(),
            started: Instant::now(),
            peer,
            method: req.method().clone(),
            target,
            version: req.version(),
            client_fields: format.map(|_| ClientFields::of(req.uri(), req.headers())),
            status: CLIENT_CLOSED,
            result: "-",
            upstream: None,
            site: None,
            bytes: 0,
            guard,
        }
    }

    /// Notes the response: its status, cache result and upstream time.
    pub fn respond(&mut self, status: u16, result: &'static str, upstream: Option<Duration>) {
        self.status = status;
        self.result = result;
        self.upstream = upstream;
    }

    /// Notes the site the request was served for.
    pub fn site(&mut self, site: Option<Arc<str>>) {
        self.site = site;
    }

    /// The line for this record, without its newline.
    pub fn line(&self, format: LogFormat, total: Duration) -> String {
        let mut out = String::new();
        let fields = self.client_fields.clone().unwrap_or_default();
        self.entry(format, total, self.target.clone(), fields)
            .write_to(&mut out);
        out.pop();
        out
    }

    /// What the writer thread needs to format the line. The record's owned fields move into it,
    /// so handing it over costs no formatting and no allocation on the request path.
    fn entry(
        &self,
        format: LogFormat,
        total: Duration,
        target: String,
        fields: Box<ClientFields>,
    ) -> Entry {
        Entry {
            format,
            at: self.at,
            peer: self.peer.ip(),
            method: self.method.clone(),
            target,
            version: self.version,
            fields,
            status: self.status,
            result: self.result,
            upstream: self.upstream,
            site: self.site.clone(),
            total,
            bytes: self.bytes,
        }
    }
}

impl<G> Drop for AccessRecord<G> {
    fn drop(&mut self) {
        // Counted here, when the response is over, whether or not lines are written.
        crate::metrics::record_response(self.status, self.bytes);
        let Some(format) = self.format else { return };
        // The target and fields were only kept for this line: move them rather than copy them.
        let target = std::mem::take(&mut self.target);
        let fields = self.client_fields.take().unwrap_or_default();
        write_entry(self.entry(format, self.started.elapsed(), target, fields));
    }
}

/// One finished request, formatted by the writer thread.
#[derive(Debug)]
struct Entry {
    format: LogFormat,
    at: SystemTime,
    peer: IpAddr,
    method: Method,
    target: String,
    version: Version,
    fields: Box<ClientFields>,
    status: u16,
    result: &'static str,
    upstream: Option<Duration>,
    site: Option<Arc<str>>,
    total: Duration,
    bytes: u64,
}

impl Entry {
    /// Appends the line and its newline to `out`.
    fn write_to(&self, out: &mut String) {
        use std::fmt::Write as _;
        let time = humantime::format_rfc3339_millis(self.at);
        let version = version_str(self.version);
        match self.format {
            LogFormat::Plain => {
                let _ = write!(
                    out,
                    "{time} {peer} \"{method} {target} {version}\" {status} {result} upstream=",
                    peer = self.peer,
                    method = self.method,
                    target = escape_plain(&self.target),
                    status = self.status,
                    result = self.result,
                );
                match self.upstream {
                    Some(d) => {
                        let _ = write!(out, "{:.3}", secs(d));
                    }
                    None => out.push('-'),
                }
                let _ = writeln!(
                    out,
                    " total={total:.3} bytes={bytes} site={site} host=\"{host}\" referer=\"{referer}\" ua=\"{ua}\"",
                    total = secs(self.total),
                    bytes = self.bytes,
                    site = self.site.as_deref().unwrap_or("-"),
                    host = escape_plain(&self.fields.host),
                    referer = escape_plain(&self.fields.referer),
                    ua = escape_plain(&self.fields.user_agent),
                );
            }
            LogFormat::Json => {
                let line = serde_json::json!({
                    "time": time.to_string(),
                    "client": self.peer.to_string(),
                    "method": self.method.as_str(),
                    "path": self.target,
                    "version": version,
                    "status": self.status,
                    "cache": self.result,
                    "upstream_ms": self.upstream.map(ms),
                    "total_ms": ms(self.total),
                    "bytes": self.bytes,
                    "site": self.site.as_deref(),
                    "host": self.fields.host,
                    "referer": self.fields.referer,
                    "user_agent": self.fields.user_agent,
                });
                let _ = writeln!(out, "{line}");
            }
        }
    }
}

/// Lines the writer may have queued; beyond this a stalled stdout costs dropped lines, never
/// memory or request latency.
const QUEUE_LINES: usize = 65_536;

/// Bytes gathered into one `write` when lines arrive faster than they are written.
const BATCH_BYTES: usize = 64 << 10;

enum Message {
    Line(Entry),
    /// Write everything queued before this, then answer.
    Flush(mpsc::Sender<()>),
}

fn sink() -> &'static SyncSender<Message> {
    static SINK: OnceLock<SyncSender<Message>> = OnceLock::new();
    SINK.get_or_init(|| {
        let (tx, rx) = mpsc::sync_channel(QUEUE_LINES);
        // A plain thread, not a tokio task: it blocks on the channel and on stdout by design.
        let spawned = std::thread::Builder::new()
            .name("cachet-access-log".into())
            .spawn(move || writer(rx));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the access log writer; lines are dropped");
        }
        tx
    })
}

fn write_entry(entry: Entry) {
    if sink().try_send(Message::Line(entry)).is_err() {
        metrics::counter!("cachet_access_log_dropped_total").increment(1);
    }
}

fn writer(rx: Receiver<Message>) {
    let mut batch = String::with_capacity(BATCH_BYTES);
    let mut acks = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Line(entry) => entry.write_to(&mut batch),
                Message::Flush(ack) => acks.push(ack),
            }
            if batch.len() < BATCH_BYTES {
                next = rx.try_recv().ok();
            }
        }
        // A closed stdout must not take the proxy down; the lines are lost, nothing else.
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(batch.as_bytes());
        let _ = out.flush();
        drop(out);
        batch.clear();
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
    }
}

/// Waits (up to `timeout`) until every line logged before this call is written: called before
/// the process exits so that the last requests' lines are not lost.
pub fn flush(timeout: Duration) {
    let (ack, done) = mpsc::channel();
    if sink().try_send(Message::Flush(ack)).is_ok() {
        let _ = done.recv_timeout(timeout);
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn ms(d: Duration) -> f64 {
    // Microsecond resolution is plenty for a log line and keeps the numbers short.
    (d.as_micros() as f64) / 1000.0
}

fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// A request target cannot hold a space, a quote or a control character once hyper has parsed
/// it, but escaping costs nothing and keeps a plain line splittable whatever arrives.
fn escape_plain(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("%22"),
            ' ' => out.push_str("%20"),
            c if c.is_control() => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// A response body that counts the bytes it yields into its [`AccessRecord`], and drops the
/// record (writing the line and releasing its guards) when hyper drops the body: after the last
/// byte, or when the client goes away.
#[derive(Debug)]
pub struct LoggedBody<G> {
    inner: Body,
    record: AccessRecord<G>,
}

impl<G> LoggedBody<G> {
    /// Wraps `inner`, charging its bytes to `record`.
    pub fn new(inner: Body, record: AccessRecord<G>) -> Self {
        LoggedBody { inner, record }
    }
}

// The record is never pinned: it is plain data, and the inner body is boxed.
impl<G> Unpin for LoggedBody<G> {}

impl<G> HttpBody for LoggedBody<G> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        // Both fields are Unpin (the inner body is boxed), so no projection is needed.
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                this.record.bytes += data.len() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> http::Request<()> {
        http::Request::builder()
            .uri("/a?b=1")
            .header("host", "www.example.com")
            .header("user-agent", "curl/8 \"x\"")
            .header("referer", "http://www.example.com/")
            .body(())
            .unwrap()
    }

    fn record() -> AccessRecord<()> {
        let mut r = AccessRecord::start(
            Some(LogFormat::Plain),
            "127.0.0.1:5000".parse().unwrap(),
            &request(),
            "/a?b=1".into(),
            (),
        );
        // The test formats its own line; the record must not also queue one when it drops.
        r.format = None;
        r.respond(200, "hit", Some(Duration::from_millis(12)));
        r.site(Some("shop".into()));
        r.bytes = 4096;
        r
    }

    #[test]
    fn plain_line_has_every_field() {
        let line = record().line(LogFormat::Plain, Duration::from_millis(15));
        assert!(
            line.ends_with(
                " 127.0.0.1 \"GET /a?b=1 HTTP/1.1\" 200 hit upstream=0.012 total=0.015 bytes=4096 \
                 site=shop host=\"www.example.com\" referer=\"http://www.example.com/\" ua=\"curl/8%20%22x%22\""
            ),
            "{line}"
        );
    }

    #[test]
    fn json_line_parses_with_every_field() {
        let line = record().line(LogFormat::Json, Duration::from_millis(15));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["method"], "GET");
        assert_eq!(v["path"], "/a?b=1");
        assert_eq!(v["status"], 200);
        assert_eq!(v["cache"], "hit");
        assert_eq!(v["upstream_ms"], 12.0);
        assert_eq!(v["total_ms"], 15.0);
        assert_eq!(v["bytes"], 4096);
        assert_eq!(v["site"], "shop");
        assert_eq!(v["host"], "www.example.com");
        assert_eq!(v["referer"], "http://www.example.com/");
        assert_eq!(v["user_agent"], "curl/8 \"x\"");
    }

    #[test]
    fn abandoned_request_is_a_499() {
        let r = AccessRecord::start(
            None,
            "127.0.0.1:5000".parse().unwrap(),
            &request(),
            "/slow".into(),
            (),
        );
        let line = r.line(LogFormat::Plain, Duration::from_millis(1));
        assert!(line.contains("\" 499 - upstream=- "), "{line}");
    }
}

//! Raw-socket test support for `tests/forwarding.rs`: an origin and a client that speak
//! HTTP/1.1 by hand, byte for byte, so that what crosses each socket is what the test sees.
//!
//! Neither side uses hyper. The proxy is built on hyper, and a hyper origin or client would
//! share its parser's view of where a message ends: a framing disagreement between the proxy and
//! its upstream (the root of request smuggling) would then be invisible. The origin here parses
//! strictly and on its own, records every request it parsed, and reports framing that is
//! ambiguous or does not match the bytes that arrived.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

/// How long the origin waits for body bytes a request announced. A proxy that announces more
/// than it sends leaves the origin waiting for bytes that will be taken from the *next* request
/// on the connection; the origin calls that a framing error after this long instead of hanging.
const BODY_WAIT: Duration = Duration::from_millis(1000);

/// How long the client waits for a whole response.
pub const RESPONSE_WAIT: Duration = Duration::from_secs(5);

/// The largest request head the origin reads before giving up on a connection.
const MAX_HEAD: usize = 1 << 20;

/// What the origin does with a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyMode {
    /// Answer as soon as the head is parsed and never read the body: whatever bytes follow the
    /// head on the connection are parsed as the next request. This is the most trusting origin
    /// there is; any byte a proxy forwards beyond a request head shows up as a request (or a
    /// parse error) of its own.
    Ignore,
    /// Read the body as the head frames it (`Content-Length`, or `chunked`) before answering,
    /// as RFC 9112 6.3 requires of a server; the body is recorded.
    Read,
}

/// The framing a request head declared, when it declared one unambiguously.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// `Content-Length: n`.
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// One request as the origin parsed it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The upstream connection it came on (numbered from 1 in accept order).
    pub conn: u64,
    /// Its position on that connection (from 0).
    pub seq: u64,
    pub method: String,
    pub target: String,
    pub version: String,
    /// Every field line, in order, as (name, value) with the value's surrounding whitespace
    /// trimmed; names keep the case they were sent in.
    pub headers: Vec<(String, String)>,
    /// The framing the head declared (`None` when it was ambiguous: see `framing_error`).
    pub framing: Option<Framing>,
    /// The body bytes read (always empty in [`BodyMode::Ignore`]).
    pub body: Vec<u8>,
    /// Why the request's framing was refused, or did not match the bytes that arrived: both
    /// `Content-Length` and `Transfer-Encoding`, two `Content-Length`s, a coding other than
    /// `chunked`, a malformed chunk, announced bytes that never came, an unparsable head.
    pub framing_error: Option<String>,
    /// The connection ended in the middle of the body (the sender gave up): not a framing
    /// disagreement, but the request was not received whole.
    pub truncated: bool,
}

impl Seen {
    /// The values of every field line named `name` (case-insensitively), in order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The one `Host` the request carried; `None` when it had none or several.
    pub fn host(&self) -> Option<&str> {
        match self.header_values("host").as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }

    /// The target's path (the query cut off).
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }
}

/// A response the origin sends for one path.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The whole response head: status line and field lines, without the final empty line.
    pub head: String,
    /// The bytes written after the head, as they are (already framed by the head).
    pub body: Vec<u8>,
}

impl Reply {
    /// A response written exactly as given: the test is responsible for its framing. This is how
    /// an origin with broken framing (say `Content-Length` beside `chunked`) is made.
    pub fn raw(head: &str, body: &[u8]) -> Reply {
        Reply {
            head: head.trim_end_matches("\r\n").to_string(),
            body: body.to_vec(),
        }
    }
}

type Replies = Arc<Mutex<HashMap<String, Reply>>>;

struct Shared {
    mode: BodyMode,
    seen: Mutex<Vec<Seen>>,
    replies: Replies,
    connections: AtomicU64,
}

/// A hand-written HTTP/1.1 origin on a loopback port; see the module docs.
///
/// Unless a path has a [`Reply`] of its own, every request is answered `200` with
/// `Cache-Control: max-age=60` (so a GET is stored) and a body that echoes what the origin saw:
/// `"{method} {target} host={host}\n"`. A poisoned cache is then visible in the body of a hit.
pub struct RawOrigin {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for RawOrigin {
    fn drop(&mut self) {
        // Connection tasks end with the test's runtime; the listener goes now.
        self.task.abort();
    }
}

impl RawOrigin {
    pub async fn start(mode: BodyMode) -> RawOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            mode,
            seen: Mutex::new(Vec::new()),
            replies: Arc::default(),
            connections: AtomicU64::new(0),
        });
        let accepting = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let id = accepting.connections.fetch_add(1, Ordering::SeqCst) + 1;
                let shared = Arc::clone(&accepting);
                tokio::spawn(async move { serve_connection(stream, id, &shared).await });
            }
        });
        RawOrigin { addr, shared, task }
    }

    /// Answers requests for `path` (the target without its query) with `reply`.
    pub fn reply(&self, path: &str, reply: Reply) {
        self.shared
            .replies
            .lock()
            .unwrap()
            .insert(path.to_string(), reply);
    }

    /// Every request parsed so far, in the order they were parsed.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// The requests parsed so far whose path is `path`.
    pub fn seen_for(&self, path: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.path() == path)
            .collect()
    }

    /// How many requests were parsed.
    pub fn count(&self) -> usize {
        self.shared.seen.lock().unwrap().len()
    }

    /// Every request recorded with a framing error.
    pub fn framing_errors(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.framing_error.is_some())
            .collect()
    }
}

/// The echo body of the default reply.
pub fn echo_body(method: &str, target: &str, host: &str) -> String {
    format!("{method} {target} host={host}\n")
}

/// Reads requests off one connection until it ends, answering each.
async fn serve_connection(mut stream: TcpStream, conn: u64, shared: &Shared) {
    // Bytes read and not yet consumed: the start of the next request, or of a body.
    let mut buf: Vec<u8> = Vec::new();
    for seq in 0.. {
        // RFC 9112 2.2: a server SHOULD ignore at least one empty line before a request line.
        while buf.starts_with(b"\r\n") {
            buf.drain(..2);
        }
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i;
            }
            if buf.len() > MAX_HEAD || !read_more(&mut stream, &mut buf, None).await {
                if !buf.is_empty() {
                    // A partial head and then the end: whatever this was, it was not a request
                    // the sender framed.
                    let mut seen = unparsed(conn, seq, "connection ended inside a request head");
                    seen.target = String::from_utf8_lossy(&buf[..buf.len().min(200)]).into();
                    record(shared, seen);
                }
                return;
            }
        };
        let head: Vec<u8> = buf.drain(..head_end + 4).collect();
        let mut seen = match parse_head(&head[..head_end]) {
            Ok(seen) => seen,
            Err(why) => {
                let mut seen = unparsed(conn, seq, &why);
                seen.target = String::from_utf8_lossy(&head[..head.len().min(200)]).into();
                record(shared, seen);
                let _ = stream.write_all(&bad_request()).await;
                return;
            }
        };
        seen.conn = conn;
        seen.seq = seq;
        let framing = match declared_framing(&seen) {
            Ok(f) => f,
            Err(why) => {
                // Strict, as RFC 9112 6.3 allows a server to be: ambiguous framing is refused and
                // the connection closed, since where the next request starts is unknown.
                seen.framing_error = Some(why);
                record(shared, seen);
                let _ = stream.write_all(&bad_request()).await;
                return;
            }
        };
        seen.framing = Some(framing);
        if shared.mode == BodyMode::Read {
            match read_body(&mut stream, &mut buf, framing).await {
                BodyRead::Complete(body) => seen.body = body,
                BodyRead::Ended(partial) => {
                    seen.body = partial;
                    seen.truncated = true;
                    record(shared, seen);
                    return;
                }
                BodyRead::Invalid(partial, why) => {
                    seen.body = partial;
                    seen.framing_error = Some(why);
                    record(shared, seen);
                    let _ = stream.write_all(&bad_request()).await;
                    return;
                }
            }
        }
        let response = respond(&seen, &shared.replies);
        let close = seen
            .header_values("connection")
            .iter()
            .any(|v| v.eq_ignore_ascii_case("close"));
        // Recorded before the answer is written, so a test that has its response can read the
        // record without waiting.
        record(shared, seen);
        if stream.write_all(&response).await.is_err() || close {
            return;
        }
    }
}

fn record(shared: &Shared, seen: Seen) {
    shared.seen.lock().unwrap().push(seen);
}

fn unparsed(conn: u64, seq: u64, why: &str) -> Seen {
    Seen {
        conn,
        seq,
        method: String::new(),
        target: String::new(),
        version: String::new(),
        headers: Vec::new(),
        framing: None,
        body: Vec::new(),
        framing_error: Some(why.to_string()),
        truncated: false,
    }
}

fn bad_request() -> Vec<u8> {
    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
}

/// Reads once into `buf`; false at the end of the stream (or on an error, or after `until`).
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>, until: Option<Instant>) -> bool {
    let mut chunk = [0u8; 16 << 10];
    let read = stream.read(&mut chunk);
    let n = match until {
        Some(at) => match tokio::time::timeout_at(at, read).await {
            Ok(r) => r,
            Err(_) => return false,
        },
        None => read.await,
    };
    match n {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parses a request head (without its final CRLF CRLF) strictly: CRLF line ends only, one
/// space between the parts of the request line, token method and field names, no obs-fold, no
/// control characters in values.
fn parse_head(head: &[u8]) -> Result<Seen, String> {
    let text = std::str::from_utf8(head).map_err(|_| "head is not UTF-8".to_string())?;
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    if request_line.contains('\n') || request_line.contains('\r') {
        return Err(format!("bare CR or LF in request line {request_line:?}"));
    }
    let parts: Vec<&str> = request_line.split(' ').collect();
    let [method, target, version] = parts.as_slice() else {
        return Err(format!("malformed request line {request_line:?}"));
    };
    if method.is_empty() || !method.bytes().all(is_tchar) {
        return Err(format!("bad method {method:?}"));
    }
    if target.is_empty() || target.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(format!("bad target {target:?}"));
    }
    if *version != "HTTP/1.1" && *version != "HTTP/1.0" {
        return Err(format!("bad version {version:?}"));
    }
    let mut headers = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            return Err(format!("obs-fold continuation line {line:?}"));
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("field line without a colon {line:?}"))?;
        if name.is_empty() || !name.bytes().all(is_tchar) {
            return Err(format!("bad field name {name:?}"));
        }
        if value.bytes().any(|b| (b < b' ' && b != b'\t') || b == 0x7f) {
            return Err(format!("control character in field {line:?}"));
        }
        headers.push((
            name.to_string(),
            value.trim_matches([' ', '\t']).to_string(),
        ));
    }
    Ok(Seen {
        conn: 0,
        seq: 0,
        method: method.to_string(),
        target: target.to_string(),
        version: version.to_string(),
        headers,
        framing: None,
        body: Vec::new(),
        framing_error: None,
        truncated: false,
    })
}

/// The body framing a request head declares (RFC 9112 6.1-6.3), refusing every ambiguity a
/// lenient server would resolve one way and a proxy another.
fn declared_framing(seen: &Seen) -> Result<Framing, String> {
    let lengths = seen.header_values("content-length");
    let codings = seen.header_values("transfer-encoding");
    match (lengths.as_slice(), codings.as_slice()) {
        ([], []) => Ok(Framing::None),
        (_, [_, ..]) if !lengths.is_empty() => Err(format!(
            "both Content-Length {lengths:?} and Transfer-Encoding {codings:?}"
        )),
        ([one], []) => {
            if one.is_empty() || !one.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("malformed Content-Length {one:?}"));
            }
            one.parse()
                .map(Framing::Length)
                .map_err(|_| format!("Content-Length out of range {one:?}"))
        }
        ([_, _, ..], []) => Err(format!("Content-Length repeated {lengths:?}")),
        ([], [one]) if one.eq_ignore_ascii_case("chunked") => {
            if seen.version == "HTTP/1.0" {
                Err("Transfer-Encoding in an HTTP/1.0 request".into())
            } else {
                Ok(Framing::Chunked)
            }
        }
        ([], codings) => Err(format!("Transfer-Encoding other than chunked {codings:?}")),
        _ => unreachable!("every shape is matched above"),
    }
}

enum BodyRead {
    Complete(Vec<u8>),
    /// The connection ended first.
    Ended(Vec<u8>),
    /// The bytes do not match the framing (a malformed chunk, or announced bytes not sent).
    Invalid(Vec<u8>, String),
}

async fn read_body(stream: &mut TcpStream, buf: &mut Vec<u8>, framing: Framing) -> BodyRead {
    let deadline = Instant::now() + BODY_WAIT;
    loop {
        let parsed = match framing {
            Framing::None => Chunk::Done(Vec::new(), 0),
            Framing::Length(n) if buf.len() >= n => Chunk::Done(buf[..n].to_vec(), n),
            Framing::Length(_) => Chunk::More,
            Framing::Chunked => parse_chunked(buf),
        };
        match parsed {
            Chunk::Done(body, used) => {
                buf.drain(..used);
                return BodyRead::Complete(body);
            }
            Chunk::Bad(why) => return BodyRead::Invalid(std::mem::take(buf), why),
            Chunk::More => {}
        }
        let before = buf.len();
        if !read_more(stream, buf, Some(deadline)).await {
            if Instant::now() >= deadline {
                let why = format!(
                    "{framing:?} announced, {before} byte(s) arrived in {BODY_WAIT:?}: the rest \
                     would be taken from the next request"
                );
                return BodyRead::Invalid(std::mem::take(buf), why);
            }
            return BodyRead::Ended(std::mem::take(buf));
        }
    }
}

enum Chunk {
    /// The body and the number of bytes of `buf` it took.
    Done(Vec<u8>, usize),
    More,
    Bad(String),
}

/// Decodes a chunked body at the start of `buf` strictly (RFC 9112 7.1): hex sizes, CRLF after
/// every size line and chunk, optional extensions, trailer fields, final CRLF.
pub fn parse_chunked_body(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    match parse_chunked(buf) {
        Chunk::Done(body, used) => Ok(Some((body, used))),
        Chunk::More => Ok(None),
        Chunk::Bad(why) => Err(why),
    }
}

fn parse_chunked(buf: &[u8]) -> Chunk {
    let mut at = 0;
    let mut body = Vec::new();
    loop {
        let Some(eol) = find(&buf[at..], b"\r\n") else {
            return if buf.len() - at > 1024 {
                Chunk::Bad("chunk size line too long".into())
            } else {
                Chunk::More
            };
        };
        let line = &buf[at..at + eol];
        let size_text = line.split(|&b| b == b';').next().unwrap_or_default();
        if size_text.is_empty()
            || size_text.len() > 15
            || !size_text.iter().all(u8::is_ascii_hexdigit)
        {
            return Chunk::Bad(format!(
                "bad chunk size line {:?}",
                String::from_utf8_lossy(line)
            ));
        }
        let size = usize::from_str_radix(std::str::from_utf8(size_text).unwrap(), 16).unwrap();
        at += eol + 2;
        if size == 0 {
            // Trailer section: field lines up to an empty line.
            loop {
                let Some(eol) = find(&buf[at..], b"\r\n") else {
                    return Chunk::More;
                };
                at += eol + 2;
                if eol == 0 {
                    return Chunk::Done(body, at);
                }
            }
        }
        if buf.len() < at + size + 2 {
            return Chunk::More;
        }
        body.extend_from_slice(&buf[at..at + size]);
        at += size;
        if &buf[at..at + 2] != b"\r\n" {
            return Chunk::Bad("chunk data not followed by CRLF".into());
        }
        at += 2;
    }
}

fn respond(seen: &Seen, replies: &Replies) -> Vec<u8> {
    let head_only = seen.method == "HEAD";
    if let Some(reply) = replies.lock().unwrap().get(seen.path()) {
        let mut out = format!("{}\r\n\r\n", reply.head).into_bytes();
        if !head_only {
            out.extend_from_slice(&reply.body);
        }
        return out;
    }
    let host = seen.header_values("host").join(",");
    let body = echo_body(&seen.method, &seen.target, &host);
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nCache-Control: max-age=60\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// A response as the client read it off the socket.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked when it was chunked.
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_values(name).first().copied()
    }

    pub fn cache_status(&self) -> &str {
        self.header("cache-status").unwrap_or_default()
    }

    pub fn is_hit(&self) -> bool {
        self.cache_status().contains("; hit")
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client connection written to and read from by hand.
pub struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr)
            .await
            .expect("connect to the proxy");
        stream.set_nodelay(true).unwrap();
        RawClient {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write request");
    }

    /// Ends the client's side of the connection (the proxy reads an end of stream).
    pub async fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown().await;
    }

    /// Reads one response; `head_request` says the request was a HEAD (no body follows).
    /// Framing the client cannot trust (`Content-Length` beside `Transfer-Encoding`, two
    /// lengths) is an error here: such a response is exactly what this file tests against.
    pub async fn read_response(
        &mut self,
        head_request: bool,
        wait: Duration,
    ) -> Result<RawResponse, String> {
        match timeout(wait, self.read_response_inner(head_request)).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "no whole response within {wait:?}; read so far: {:?}",
                String::from_utf8_lossy(&self.buf)
            )),
        }
    }

    async fn read_response_inner(&mut self, head_request: bool) -> Result<RawResponse, String> {
        loop {
            let head_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                    break i;
                }
                if !read_more(&mut self.stream, &mut self.buf, None).await {
                    return Err(format!(
                        "connection closed before a response head; read: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    ));
                }
            };
            let head: Vec<u8> = self.buf.drain(..head_end + 4).collect();
            let text = String::from_utf8_lossy(&head[..head_end]).into_owned();
            let mut lines = text.split("\r\n");
            let status_line = lines.next().unwrap_or_default();
            let status: u16 = status_line
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("bad status line {status_line:?}"))?;
            let mut headers = Vec::new();
            for line in lines {
                let (n, v) = line
                    .split_once(':')
                    .ok_or_else(|| format!("bad response field line {line:?}"))?;
                headers.push((n.to_string(), v.trim().to_string()));
            }
            let mut resp = RawResponse {
                status,
                headers,
                body: Vec::new(),
            };
            if (100..200).contains(&status) {
                continue; // an interim response; the final one follows
            }
            let lengths = resp.header_values("content-length");
            let chunked = resp
                .header_values("transfer-encoding")
                .iter()
                .any(|v| v.to_ascii_lowercase().contains("chunked"));
            if chunked && !lengths.is_empty() {
                return Err(format!(
                    "response frames its body twice: Content-Length {lengths:?} beside \
                     Transfer-Encoding chunked: {:?}",
                    resp.headers
                ));
            }
            if lengths.len() > 1 {
                return Err(format!("response repeats Content-Length: {lengths:?}"));
            }
            if head_request || status == 204 || status == 304 {
                return Ok(resp);
            }
            if chunked {
                loop {
                    match parse_chunked_body(&self.buf)? {
                        Some((body, used)) => {
                            self.buf.drain(..used);
                            resp.body = body;
                            return Ok(resp);
                        }
                        None => {
                            if !read_more(&mut self.stream, &mut self.buf, None).await {
                                return Err("connection closed inside a chunked body".into());
                            }
                        }
                    }
                }
            }
            if let Some(len) = lengths.first() {
                let len: usize = len
                    .parse()
                    .map_err(|_| format!("bad Content-Length {len:?}"))?;
                while self.buf.len() < len {
                    if !read_more(&mut self.stream, &mut self.buf, None).await {
                        return Err(format!(
                            "connection closed after {} of {len} body bytes",
                            self.buf.len()
                        ));
                    }
                }
                resp.body = self.buf.drain(..len).collect();
                return Ok(resp);
            }
            // Neither: the body runs to the end of the connection.
            while read_more(&mut self.stream, &mut self.buf, None).await {}
            resp.body = std::mem::take(&mut self.buf);
            return Ok(resp);
        }
    }

    /// True when the proxy has closed the connection (reads an end of stream within `wait`).
    /// Bytes that arrive instead are kept for the next read.
    pub async fn is_closed(&mut self, wait: Duration) -> bool {
        let mut chunk = [0u8; 4096];
        match timeout(wait, self.stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                false
            }
            Err(_) => false,
        }
    }
}

/// Sends `request` on a fresh connection and reads one response.
pub async fn exchange(
    addr: SocketAddr,
    request: &[u8],
    head_request: bool,
) -> Result<RawResponse, String> {
    let mut client = RawClient::connect(addr).await;
    client.send(request).await;
    client.read_response(head_request, RESPONSE_WAIT).await
}

/// `GET path` with `Host: host` on a fresh connection; panics when no response comes.
pub async fn get(addr: SocketAddr, path: &str, host: &str) -> RawResponse {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    exchange(addr, request.as_bytes(), false)
        .await
        .unwrap_or_else(|e| panic!("GET {path} (Host {host}): {e}"))
}

/// Bytes shown with CR and LF visible, for failure messages.
pub fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .replace('\r', "\\r")
        .replace('\n', "\\n\n    ")
}

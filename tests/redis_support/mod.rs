//! Real Redis servers for integration tests.
//!
//! The shared tier is tested against the real thing, not a mock: each test starts its own
//! `redis-server` process (Debian's package, `/usr/bin/redis-server`) on a free loopback port,
//! with persistence off and its own temporary directory, and the process is killed and the
//! directory removed when the handle is dropped, even when the test panics. The harness talks to
//! the servers with a minimal hand-written RESP client over `tokio::net::TcpStream`, or with
//! `redis-cli` where cluster redirects must be followed. Tests call [`require_redis`] first, so a
//! machine without Redis skips them (CI sets `REQUIRE_REDIS_TESTS=1` to make that an error).

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a server has to answer `PING` after it is spawned.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a cluster has to report `cluster_state:ok` after `redis-cli --cluster create`.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(20);
/// How long [`RedisServer::cmd`] and [`RedisCluster::cmd_any`] wait for a reply.
const CMD_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether `redis-server` and `redis-cli` are both on `PATH`.
pub fn redis_available() -> bool {
    on_path("redis-server") && on_path("redis-cli")
}

/// True when Redis is available. Otherwise panics if `REQUIRE_REDIS_TESTS=1` (CI), or prints a
/// skip notice naming `test` and returns false.
pub fn require_redis(test: &str) -> bool {
    if redis_available() {
        return true;
    }
    if std::env::var("REQUIRE_REDIS_TESTS").as_deref() == Ok("1") {
        panic!(
            "{test}: REQUIRE_REDIS_TESTS=1 but redis-server not found; \
             CI installs it with apt-get install redis-server"
        );
    }
    eprintln!(
        "skipping {test}: redis-server is not installed \
         (apt-get install redis-server redis-tools, or run .ci/run)"
    );
    false
}

fn on_path(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(program))
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}

/// One `redis-server` child process on `127.0.0.1`.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    extra: Vec<String>,
}

impl RedisServer {
    /// A standalone server; waits until it answers `PING`.
    pub async fn start() -> RedisServer {
        RedisServer::start_with(&[]).await
    }

    /// A server with `extra` arguments appended (e.g. `["--maxmemory", "1mb"]`); waits until it
    /// answers `PING`. With `--cluster-enabled` the port is chosen so that the cluster bus port
    /// (port + 10000) is free too.
    pub async fn start_with(extra: &[&str]) -> RedisServer {
        let cluster = extra.contains(&"--cluster-enabled");
        let dir = make_dir();
        let mut server = RedisServer {
            child: None,
            port: 0,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        // Another process may take the port between our check and redis-server's bind; pick a
        // new one then. The half-built server is dropped (process killed) if anything panics.
        const ATTEMPTS: usize = 5;
        for attempt in 1..=ATTEMPTS {
            server.port = reserve_port(cluster);
            server.spawn();
            match server.wait_ready(START_TIMEOUT).await {
                Ok(()) => return server,
                Err(e) if attempt < ATTEMPTS && server.log().contains("Address already in use") => {
                    eprintln!(
                        "redis-server port {} was taken ({e}); retrying",
                        server.port
                    );
                    server.stop();
                    release_port(server.port);
                    let _ = std::fs::remove_file(server.dir.join("redis.log"));
                    let _ = std::fs::remove_file(server.dir.join("stderr.log"));
                }
                Err(e) => server.fail(&e),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:P`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:P`
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The server's working directory (holds `redis.log`, and `nodes.conf` in cluster mode).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process has been started and not killed (a paused server counts as running).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL the process and reap it. Does nothing if it is not running.
    pub fn kill(&mut self) {
        self.stop();
    }

    /// Start the server again on the same port with the same arguments and directory (so a
    /// cluster node keeps its `nodes.conf`); kills it first if it is still running. Waits for
    /// `PING`.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn();
        if let Err(e) = self.wait_ready(START_TIMEOUT).await {
            self.fail(&format!("restart: {e}"));
        }
    }

    /// SIGSTOP the process: connections are still accepted by the kernel but nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
        self.wait_stopped(true);
    }

    /// SIGCONT a paused process.
    pub fn resume(&self) {
        self.signal("-CONT");
        self.wait_stopped(false);
    }

    /// Runs a command and returns the reply as text: simple strings, errors (`"ERR ..."`,
    /// `"MOVED ..."`, not a panic), integers and bulk strings as themselves, nil as `""`, arrays
    /// as their elements joined by newlines. Panics if the server cannot be reached or does not
    /// answer within 5 s; see [`RedisServer::try_cmd`] for that as a `Result`.
    pub async fn cmd(&self, args: &[&str]) -> String {
        match self.try_cmd(args, CMD_TIMEOUT).await {
            Ok(text) => text,
            Err(e) => panic!("redis {args:?} on {}: {e}", self.addr()),
        }
    }

    /// Like [`RedisServer::cmd`], but a connection failure or a missing reply within `timeout`
    /// is an `Err` describing it.
    pub async fn try_cmd(&self, args: &[&str], timeout: Duration) -> Result<String, String> {
        exchange(self.port, args, timeout).await.map(|r| r.text())
    }

    /// Whether the server answers `PING` with `PONG` within `timeout`.
    pub async fn ping(&self, timeout: Duration) -> bool {
        matches!(
            self.try_cmd(&["PING"], timeout).await.as_deref(),
            Ok("PONG")
        )
    }

    /// `DBSIZE`
    pub async fn dbsize(&self) -> u64 {
        let reply = self.cmd(&["DBSIZE"]).await;
        reply
            .parse()
            .unwrap_or_else(|_| panic!("DBSIZE on {}: unexpected reply {reply:?}", self.addr()))
    }

    /// The end of the server's log and stderr, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = tail(&self.log(), 30);
        let stderr = std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default();
        let mut out = format!("--- {}/redis.log (tail) ---\n{log}", self.dir.display());
        if !stderr.trim().is_empty() {
            out.push_str(&format!("\n--- stderr (tail) ---\n{}", tail(&stderr, 30)));
        }
        out
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    fn args(&self) -> Vec<String> {
        let port = self.port.to_string();
        let dir = self.dir.display().to_string();
        let logfile = self.dir.join("redis.log").display().to_string();
        let mut args: Vec<String> = [
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            &dir,
            "--logfile",
            &logfile,
            // Keep the command line as given, so `pgrep -f "port P "` finds the process.
            "--set-proc-title",
            "no",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(self.extra.iter().cloned());
        args
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        let stderr = std::fs::File::create(self.dir.join("stderr.log"))
            .unwrap_or_else(|e| panic!("create {}/stderr.log: {e}", self.dir.display()));
        let args = self.args();
        let child = Command::new("redis-server")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn redis-server {args:?}: {e}"));
        self.child = Some(child);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL; works on a SIGSTOPped process too
            let _ = child.wait();
        }
    }

    async fn wait_ready(&mut self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            let child = self.child.as_mut().expect("spawned");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Err(format!(
                    "redis-server exited before answering PING ({status})"
                ));
            }
            let last = match exchange(self.port, &["PING"], Duration::from_millis(500)).await {
                Ok(reply) if reply.text() == "PONG" => return Ok(()),
                Ok(reply) => format!("PING answered {:?}", reply.text()),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(format!("no PONG within {within:?} (last: {last})"));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn fail(&mut self, what: &str) -> ! {
        let message = format!(
            "redis-server on {} did not come up: {what}\nargs: {:?}\n{}",
            self.addr(),
            self.args(),
            self.log_tail()
        );
        self.stop();
        panic!("{message}");
    }

    fn signal(&self, signal: &str) {
        let pid = self.pid().unwrap_or_else(|| {
            panic!(
                "kill {signal}: redis-server on {} is not running",
                self.addr()
            )
        });
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap_or_else(|e| panic!("run kill {signal} {pid}: {e}"));
        assert!(status.success(), "kill {signal} {pid} failed: {status}");
    }

    /// Waits (at most 2 s) until /proc says the process is (or is no longer) stopped, so a test
    /// does not race the signal. Without /proc it returns at once.
    fn wait_stopped(&self, stopped: bool) {
        let Some(pid) = self.pid() else { return };
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return;
            };
            // "pid (comm) S ...": the state follows the last ')'.
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.trim_start().chars().next());
            if (state == Some('T')) == stopped {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!(
            "redis-server pid {pid} did not {} within 2 s",
            if stopped { "stop" } else { "continue" }
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        release_port(self.port);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Three masters, no replicas, slots spread by `redis-cli --cluster create`.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts the nodes, creates the cluster, and waits until every node reports
    /// `cluster_state:ok` with all 16384 slots assigned.
    pub async fn start() -> RedisCluster {
        RedisCluster::start_with(&[]).await
    }

    /// As [`RedisCluster::start`], with `extra` arguments for every node.
    pub async fn start_with(extra: &[&str]) -> RedisCluster {
        let mut args = vec![
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "2000",
        ];
        args.extend_from_slice(extra);
        let (a, b, c) = tokio::join!(
            RedisServer::start_with(&args),
            RedisServer::start_with(&args),
            RedisServer::start_with(&args),
        );
        let cluster = RedisCluster {
            nodes: vec![a, b, c],
        };
        let mut create = vec!["--cluster".to_string(), "create".to_string()];
        create.extend(cluster.nodes.iter().map(RedisServer::addr));
        create.extend(["--cluster-replicas", "0", "--cluster-yes"].map(String::from));
        let out = redis_cli(&create, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("redis-cli {create:?}: {e}"));
        if !out.status.success() {
            panic!(
                "redis-cli {create:?} failed ({}):\n{}{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                cluster.logs()
            );
        }
        if let Err(e) = cluster.wait_healthy(CLUSTER_TIMEOUT).await {
            panic!("cluster did not become healthy: {e}\n{}", cluster.logs());
        }
        cluster
    }

    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// For killing, pausing or restarting single nodes.
    pub fn nodes_mut(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`
    pub fn url(&self) -> String {
        let addrs: Vec<String> = self.nodes.iter().map(RedisServer::addr).collect();
        format!("redis+cluster://{}", addrs.join(","))
    }

    /// Sum of `DBSIZE` over the nodes.
    pub async fn total_keys(&self) -> u64 {
        let mut total = 0;
        for node in &self.nodes {
            total += node.dbsize().await;
        }
        total
    }

    /// Runs a command with `redis-cli -c` (following MOVED/ASK redirects) against the first
    /// running node and returns its output without the trailing newline (nil is `""`, errors are
    /// `"ERR ..."` text). Panics if redis-cli cannot run or does not finish within 5 s.
    pub async fn cmd_any(&self, args: &[&str]) -> String {
        let node = self
            .nodes
            .iter()
            .find(|n| n.is_running())
            .expect("cmd_any: no cluster node is running");
        let port = node.port.to_string();
        let mut cli: Vec<String> = ["-h", "127.0.0.1", "-p", &port, "-c"]
            .map(String::from)
            .to_vec();
        cli.extend(args.iter().map(|s| s.to_string()));
        let out = redis_cli(&cli, CMD_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("redis-cli {cli:?}: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() && stdout.trim().is_empty() {
            panic!(
                "redis-cli {cli:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        stdout.strip_suffix('\n').unwrap_or(&stdout).to_string()
    }

    /// Waits until every running node reports `cluster_state:ok` and
    /// `cluster_slots_assigned:16384` (e.g. after restarting a node).
    pub async fn wait_healthy(&self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            let mut pending = Vec::new();
            for node in self.nodes.iter().filter(|n| n.is_running()) {
                match node
                    .try_cmd(&["CLUSTER", "INFO"], Duration::from_secs(1))
                    .await
                {
                    Ok(info)
                        if info.contains("cluster_state:ok")
                            && info.contains("cluster_slots_assigned:16384") => {}
                    Ok(info) => {
                        let state: Vec<&str> = info
                            .lines()
                            .filter(|l| {
                                l.starts_with("cluster_state") || l.starts_with("cluster_slots")
                            })
                            .collect();
                        pending.push(format!("{}: {}", node.addr(), state.join(" ")));
                    }
                    Err(e) => pending.push(format!("{}: {e}", node.addr())),
                }
            }
            if pending.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("not ok after {within:?}: {}", pending.join("; ")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn logs(&self) -> String {
        let tails: Vec<String> = self.nodes.iter().map(RedisServer::log_tail).collect();
        tails.join("\n")
    }
}

async fn redis_cli(args: &[String], timeout: Duration) -> Result<std::process::Output, String> {
    let child = tokio::process::Command::new("redis-cli")
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(timeout, child).await {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => Err(format!("could not run redis-cli: {e}")),
        Err(_) => Err(format!("redis-cli did not finish within {timeout:?}")),
    }
}

// --- a minimal RESP2 client ---

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq)]
enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

impl Resp {
    fn text(&self) -> String {
        match self {
            Resp::Simple(s) | Resp::Error(s) => s.clone(),
            Resp::Int(n) => n.to_string(),
            Resp::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            Resp::Bulk(None) | Resp::Array(None) => String::new(),
            Resp::Array(Some(items)) => items.iter().map(Resp::text).collect::<Vec<_>>().join("\n"),
        }
    }
}

/// One command on a fresh connection: connect, send, read one reply, all within `timeout`.
async fn exchange(port: u16, args: &[&str], timeout: Duration) -> Result<Resp, String> {
    let io = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("connect to 127.0.0.1:{port}: {e}"))?;
        stream
            .write_all(&encode(args))
            .await
            .map_err(|e| format!("send: {e}"))?;
        let mut buf = Vec::new();
        loop {
            if let Some((reply, _)) = parse(&buf)? {
                return Ok(reply);
            }
            let n = stream
                .read_buf(&mut buf)
                .await
                .map_err(|e| format!("read reply: {e}"))?;
            if n == 0 {
                return Err(format!(
                    "connection closed mid-reply after {} bytes",
                    buf.len()
                ));
            }
        }
    };
    tokio::time::timeout(timeout, io)
        .await
        .map_err(|_| format!("no reply within {timeout:?}"))?
}

fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Parses one reply from the front of `buf`: `Ok(None)` if more bytes are needed, otherwise the
/// reply and the number of bytes it used.
fn parse(buf: &[u8]) -> Result<Option<(Resp, usize)>, String> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    if end == 0 {
        return Err("empty RESP line".into());
    }
    let line = String::from_utf8_lossy(&buf[1..end]).into_owned();
    let mut used = end + 2;
    let number = |line: &str| -> Result<i64, String> {
        line.parse()
            .map_err(|_| format!("bad RESP number {line:?}"))
    };
    let reply = match buf[0] {
        b'+' => Resp::Simple(line),
        b'-' => Resp::Error(line),
        b':' => Resp::Int(number(&line)?),
        b'$' => {
            let Ok(len) = usize::try_from(number(&line)?) else {
                return Ok(Some((Resp::Bulk(None), used)));
            };
            if buf.len() < used + len + 2 {
                return Ok(None);
            }
            let body = buf[used..used + len].to_vec();
            used += len + 2;
            Resp::Bulk(Some(body))
        }
        b'*' => {
            let Ok(n) = usize::try_from(number(&line)?) else {
                return Ok(Some((Resp::Array(None), used)));
            };
            let mut items = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                match parse(&buf[used..])? {
                    Some((item, len)) => {
                        items.push(item);
                        used += len;
                    }
                    None => return Ok(None),
                }
            }
            Resp::Array(Some(items))
        }
        other => return Err(format!("unexpected RESP type byte {:?}", other as char)),
    };
    Ok(Some((reply, used)))
}

// --- ports and directories ---

/// Ports handed out in this process and not yet released, so parallel tests do not pick the same
/// one between the bind check and redis-server's own bind.
static RESERVED: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

fn reserve(port: u16) -> bool {
    let mut reserved = RESERVED.lock().unwrap_or_else(|e| e.into_inner());
    reserved.get_or_insert_with(HashSet::new).insert(port)
}

fn release_port(port: u16) {
    if port != 0 {
        let mut reserved = RESERVED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(set) = reserved.as_mut() {
            set.remove(&port);
        }
    }
}

fn bindable(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A free loopback port: an ephemeral one, or for cluster nodes one in 20000..45000 whose
/// cluster bus port (+10000) is free too.
fn reserve_port(cluster: bool) -> u16 {
    for _ in 0..1000 {
        let port = if cluster {
            let p = 20000 + (next_random() % 25000) as u16;
            if !(bindable(p) && bindable(p + 10000)) {
                continue;
            }
            p
        } else {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
            listener.local_addr().expect("local_addr").port()
        };
        if reserve(port) {
            return port;
        }
    }
    panic!("no free loopback port found for redis-server after 1000 tries");
}

fn next_random() -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        ^ (u64::from(std::process::id()) << 32);
    // splitmix64 over a counter perturbed by the clock
    let mut z = STATE
        .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
        .wrapping_add(seed);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn make_dir() -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "cachet-redis-{}-{}-{}",
        std::process::id(),
        next_random() % 1_000_000,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

//! The real `cachet` binary as a child process: signals, exit codes, the config file, and the
//! access log on stdout.

#![cfg(unix)]

mod ops_support;
use ops_support as common;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{client, origin};
use reqwest::StatusCode;

const BIN: &str = env!("CARGO_BIN_EXE_cachet");

/// A running `cachet serve` child, its stderr lines arriving on a channel.
struct Serve {
    child: Child,
    stderr: mpsc::Receiver<String>,
    addr: SocketAddr,
    admin: Option<SocketAddr>,
}

impl Serve {
    /// Starts `cachet serve` with `args` (plus JSON diagnostics on port 0) and waits for it to
    /// say where it listens.
    fn start(args: &[&str], envs: &[(&str, &str)]) -> Serve {
        let mut child = Command::new(BIN)
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(args)
            .envs(envs.iter().copied())
            .env("RUST_LOG", "info")
            .env_remove("CACHET_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cachet");
        let (tx, stderr) = mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            let line = match stderr.recv_timeout(wait) {
                Ok(l) => l,
                Err(_) => {
                    let _ = child.kill();
                    let said: Vec<String> = stderr.try_iter().collect();
                    panic!(
                        "cachet did not report its address: {:?}, stderr: {said:?}",
                        child.wait()
                    );
                }
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v["fields"]["message"] == "cachet serving" {
                let addr = v["fields"]["listen"].as_str().unwrap().parse().unwrap();
                let admin = v["fields"]["admin"].as_str().and_then(|s| s.parse().ok());
                return Serve {
                    child,
                    stderr,
                    addr,
                    admin,
                };
            }
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the child to exit, for at most `within`.
    fn wait(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("cachet did not exit within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stdout(&mut self) -> String {
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        out
    }

    fn stderr_so_far(&self) -> Vec<String> {
        self.stderr.try_iter().collect()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        // A failed assertion must not leave the child running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_slow_request_finish_then_exits_0() {
    let (origin, _stop) = origin(Duration::ZERO).await;
    let upstream = format!("http://{}", origin.addr);
    let mut serve = Serve::start(&["--upstream", &upstream, "--admin", "127.0.0.1:0"], &[]);
    let http = client();
    let slow = {
        let http = http.clone();
        let url = format!("http://{}/slow?latency=1500ms", serve.addr);
        tokio::spawn(async move {
            let resp = http.get(url).send().await.unwrap();
            (resp.status(), resp.bytes().await.unwrap().len())
        })
    };
    // Wait until the request is in the proxy (the origin has seen it).
    let stats = origin.stats.clone();
    assert!(common::eventually(Duration::from_secs(10), || stats.requests() == 1).await);
    let admin = serve.admin.expect("admin address logged");
    let healthcheck = |admin: std::net::SocketAddr| {
        Command::new(BIN)
            .args(["healthcheck", "--admin", &admin.to_string()])
            .status()
            .unwrap()
    };
    assert!(healthcheck(admin).success(), "healthy while serving");
    serve.signal("TERM");
    // While draining, the admin listener stays up and reports it.
    let health = common::eventually_async(Duration::from_secs(5), || {
        let http = http.clone();
        async move {
            http.get(format!("http://{admin}/health"))
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::SERVICE_UNAVAILABLE)
        }
    })
    .await;
    assert!(health, "/health said 503 during the drain");
    assert!(!healthcheck(admin).success(), "unhealthy while draining");
    let (status, len) = slow.await.unwrap();
    assert_eq!(status, StatusCode::OK, "the in-flight request completed");
    assert_eq!(len, 1024);
    let exit = tokio::task::block_in_place(|| serve.wait(Duration::from_secs(15)));
    assert_eq!(exit.code(), Some(0), "exit status {exit:?}");
    let log = serve.stdout();
    let line = log
        .lines()
        .find(|l| l.contains("/slow"))
        .unwrap_or_else(|| panic!("no access log line for /slow in {log:?}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/slow?latency=1500ms");
    assert_eq!(v["status"], 200);
    assert_eq!(v["cache"], "miss");
    assert_eq!(v["bytes"], 1024);
    assert!(v["upstream_ms"].as_f64().unwrap() >= 1400.0, "{line}");
    assert!(v["total_ms"].as_f64().unwrap() >= v["upstream_ms"].as_f64().unwrap());
    let stderr = serve.stderr_so_far();
    assert!(
        stderr.iter().any(|l| l.contains("stopped")),
        "stderr: {stderr:?}"
    );
}

impl Serve {
    /// Waits up to `within` for a stderr line containing `needle`, and returns it.
    fn wait_for_line(&self, needle: &str, within: Duration) -> Option<String> {
        tokio::task::block_in_place(|| {
            let deadline = Instant::now() + within;
            while Instant::now() < deadline {
                if let Ok(line) = self.stderr.recv_timeout(Duration::from_millis(100)) {
                    if line.contains(needle) {
                        return Some(line);
                    }
                }
            }
            None
        })
    }
}

async fn get_host(addr: SocketAddr, host: &str, path: &str) -> (StatusCode, String) {
    let resp = client()
        .get(format!("http://{addr}{path}"))
        .header("host", host)
        .send()
        .await
        .unwrap();
    (resp.status(), resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_without_a_config_file_reloads_nothing_and_cuts_nothing() {
    let (origin, _stop) = origin(Duration::ZERO).await;
    let upstream = format!("http://{}", origin.addr);
    let mut serve = Serve::start(&["--upstream", &upstream, "--access-log", "off"], &[]);
    let http = client();
    let url = format!("http://{}/slow?latency=800ms", serve.addr);
    let slow = {
        let http = http.clone();
        tokio::spawn(async move {
            let resp = http.get(url).send().await.unwrap();
            (resp.status(), resp.bytes().await.unwrap().len())
        })
    };
    let stats = origin.stats.clone();
    assert!(common::eventually(Duration::from_secs(10), || stats.requests() == 1).await);
    // SIGHUP's default action ends the process; here it is a reload, which cuts nothing.
    serve.signal("HUP");
    let (status, len) = slow.await.unwrap();
    assert_eq!(status, StatusCode::OK, "the in-flight request completed");
    assert_eq!(len, 1024);
    assert!(serve.child.try_wait().unwrap().is_none(), "still running");
    assert!(
        serve
            .wait_for_line("sites unchanged", Duration::from_secs(5))
            .is_some(),
        "the reload was logged"
    );
    let after = http
        .get(format!("http://{}/after", serve.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::OK, "still serving");
    serve.signal("TERM");
    let exit = tokio::task::block_in_place(|| serve.wait(Duration::from_secs(15)));
    assert_eq!(exit.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_a_site_while_a_slow_request_is_in_flight() {
    let (slow_origin, _stop_a) = origin(Duration::ZERO).await;
    let (new_origin, _stop_b) = origin(Duration::ZERO).await;
    let site_a = format!(
        "[[site]]\nname = \"a\"\nhosts = [\"a.test\"]\nupstream = \"http://{}\"\n",
        slow_origin.addr
    );
    let path = write_config("reload-add.toml", &site_a);
    let mut serve = Serve::start(
        &["--config", path.to_str().unwrap(), "--access-log", "stdout"],
        &[],
    );
    assert_eq!(
        get_host(serve.addr, "b.test", "/x").await.0,
        StatusCode::MISDIRECTED_REQUEST
    );

    let addr = serve.addr;
    let slow = tokio::spawn(async move { get_host(addr, "a.test", "/slow?latency=1500ms").await });
    let stats = slow_origin.stats.clone();
    assert!(common::eventually(Duration::from_secs(10), || stats.requests() == 1).await);

    let site_b = format!(
        "[[site]]\nname = \"b\"\nhosts = [\"b.test\"]\nupstream = \"http://{}\"\n",
        new_origin.addr
    );
    std::fs::write(&path, format!("{site_a}\n{site_b}")).unwrap();
    serve.signal("HUP");
    assert!(
        serve
            .wait_for_line("sites replaced", Duration::from_secs(10))
            .is_some(),
        "the reload was applied"
    );
    let (status, body) = get_host(serve.addr, "b.test", "/x").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        new_origin.stats.requests(),
        1,
        "the new site's origin answered"
    );
    let (slow_status, slow_body) = slow.await.unwrap();
    assert_eq!(
        slow_status,
        StatusCode::OK,
        "the request in flight during the reload completed"
    );
    assert_eq!(slow_body.len(), 1024);
    // Site a kept its entries: the store survived the reload.
    assert_eq!(
        get_host(serve.addr, "a.test", "/slow?latency=1500ms")
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        slow_origin.stats.requests(),
        1,
        "served from the store kept across the reload"
    );

    serve.signal("TERM");
    let exit = tokio::task::block_in_place(|| serve.wait(Duration::from_secs(15)));
    assert_eq!(exit.code(), Some(0));
    let log = serve.stdout();
    assert!(
        log.lines()
            .any(|l| l.contains("site=b") || l.contains("\"site\":\"b\"")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("site=a") || l.contains("\"site\":\"a\"")),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_on_reload_is_refused_and_the_running_sites_are_kept() {
    let (origin_a, _stop) = origin(Duration::ZERO).await;
    let site_a = format!(
        "[[site]]\nname = \"a\"\nhosts = [\"a.test\"]\nupstream = \"http://{}\"\n",
        origin_a.addr
    );
    let path = write_config("reload-broken.toml", &site_a);
    let mut serve = Serve::start(
        &["--config", path.to_str().unwrap(), "--access-log", "off"],
        &[],
    );
    assert_eq!(get_host(serve.addr, "a.test", "/x").await.0, StatusCode::OK);

    let broken = [
        // Not TOML at all.
        "[[site]\nname = ".to_string(),
        // Valid TOML, a site that cannot be served.
        format!("{site_a}upstream_host = \"bad host\"\n"),
        // Two sites claiming one host.
        format!("{site_a}\n[[site]]\nname = \"b\"\nhosts = [\"a.test\"]\nupstream = \"http://127.0.0.1:1\"\n"),
    ];
    for text in &broken {
        std::fs::write(&path, text).unwrap();
        serve.signal("HUP");
        let line = serve
            .wait_for_line("sites refused", Duration::from_secs(10))
            .unwrap_or_else(|| panic!("no refusal logged for {text:?}"));
        assert!(
            line.contains("reload-broken.toml"),
            "the reason names the file: {line}"
        );
        let (status, _) = get_host(serve.addr, "a.test", "/x").await;
        assert_eq!(status, StatusCode::OK, "site a still served after {text:?}");
    }
    assert_eq!(origin_a.stats.requests(), 1, "and its entry kept");
    serve.signal("TERM");
    let exit = tokio::task::block_in_place(|| serve.wait(Duration::from_secs(15)));
    assert_eq!(exit.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let (origin, _stop) = origin(Duration::ZERO).await;
    let upstream = format!("http://{}", origin.addr);
    let mut serve = Serve::start(&["--upstream", &upstream, "--access-log", "off"], &[]);
    let http = client();
    let url = format!("http://{}/slow?latency=20s", serve.addr);
    let slow = tokio::spawn(async move { http.get(url).send().await });
    let stats = origin.stats.clone();
    assert!(common::eventually(Duration::from_secs(10), || stats.requests() == 1).await);
    serve.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(serve.child.try_wait().unwrap().is_none(), "still draining");
    serve.signal("INT");
    let exit = tokio::task::block_in_place(|| serve.wait(Duration::from_secs(5)));
    assert_eq!(exit.code(), Some(130));
    assert!(slow.await.unwrap().is_err(), "the request was cut off");
}

fn write_config(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cachet-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn run_to_exit(args: &[&str], envs: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(args)
        .envs(envs.iter().copied())
        .env_remove("CACHET_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_config_values_exit_non_zero_naming_the_key() {
    let bad_value = write_config(
        "bad_value.toml",
        "upstream = \"http://127.0.0.1:9\"\n\ncapacity = \"lots\"\n",
    );
    let (code, err) = run_to_exit(&["serve", "--config", bad_value.to_str().unwrap()], &[]);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("`capacity`") && err.contains("line 3"),
        "{err}"
    );
    assert!(err.contains("\"lots\""), "{err}");

    let unknown = write_config(
        "unknown.toml",
        "upstream = \"http://127.0.0.1:9\"\ncapacty = 1\n",
    );
    let (code, err) = run_to_exit(&["--config", unknown.to_str().unwrap()], &[]);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("unknown key `capacty`") && err.contains("line 2"),
        "{err}"
    );

    let wrong_type = write_config(
        "type.toml",
        "upstream = \"http://127.0.0.1:9\"\nadmin = true\n",
    );
    let (code, err) = run_to_exit(&["serve", "--config", wrong_type.to_str().unwrap()], &[]);
    assert_ne!(code, Some(0));
    assert!(err.contains("`admin`") && err.contains("line 2"), "{err}");

    let (code, err) = run_to_exit(&["serve", "--config", "/nonexistent/cachet.toml"], &[]);
    assert_ne!(code, Some(0));
    assert!(err.contains("/nonexistent/cachet.toml"), "{err}");

    // The same checks on flags and environment variables.
    let (code, err) = run_to_exit(
        &[
            "serve",
            "--upstream",
            "http://127.0.0.1:9",
            "--max-header-size",
            "1KiB",
        ],
        &[],
    );
    assert_ne!(code, Some(0));
    assert!(err.contains("--max-header-size"), "{err}");
    let (code, err) = run_to_exit(
        &["serve", "--upstream", "http://127.0.0.1:9"],
        &[("CACHET_SHUTDOWN_TIMEOUT", "soon")],
    );
    assert_ne!(code, Some(0));
    assert!(
        err.contains("--shutdown-timeout") && err.contains("soon"),
        "{err}"
    );
}

#[test]
fn flags_then_environment_then_file() {
    // The file's value parses but fails validation, so whether it was used is visible.
    let file = write_config(
        "precedence.toml",
        "upstream = \"http://127.0.0.1:9\"\nrevalidate_workers = 0\naccess_log = \"off\"\n",
    );
    let config = file.to_str().unwrap();
    let (code, err) = run_to_exit(
        &["serve", "--config", config, "--listen", "127.0.0.1:0"],
        &[],
    );
    assert_ne!(code, Some(0), "the file's value was used");
    assert!(err.contains("--revalidate-workers"), "{err}");

    // The environment wins over the file.
    let serve = Serve::start(&["--config", config], &[("CACHET_REVALIDATE_WORKERS", "2")]);
    drop(serve);
    // A flag wins over both.
    let serve = Serve::start(
        &["--config", config, "--revalidate-workers", "3"],
        &[("CACHET_REVALIDATE_WORKERS", "0")],
    );
    assert!(serve.admin.is_none());
}

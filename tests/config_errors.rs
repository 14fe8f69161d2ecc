//! Configuration that used to fail quietly, through the real binary: sizes too small to be meant
//! as bytes, misspelt `CACHET_*` variables, bad values named by the variable they came from, and
//! host names in listen addresses. Every configuration error exits with status 2.

#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_cachet");

/// The binary with none of the test process's own `CACHET_*` variables.
fn cachet(args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    for (name, _) in std::env::vars_os() {
        if name
            .to_string_lossy()
            .to_ascii_uppercase()
            .starts_with("CACHET_")
        {
            cmd.env_remove(name);
        }
    }
    cmd.args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// Runs `cachet` to its exit, killed after 10 s (a configuration that is not refused starts
/// serving and would not exit): the exit code (`None` when killed) and stderr.
fn run_to_exit(args: &[&str], envs: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut child = cachet(args, envs).spawn().expect("spawn cachet");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `serve` with an upstream and a free port, plus `args`.
fn serve_to_exit(args: &[&str], envs: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut argv = vec![
        "serve",
        "--upstream",
        "http://127.0.0.1:9",
        "--listen",
        "127.0.0.1:0",
        "--access-log",
        "off",
    ];
    argv.extend_from_slice(args);
    run_to_exit(&argv, envs)
}

fn write_config(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cachet-config-errors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_size_too_small_to_mean_bytes_is_refused_naming_the_key_flag_or_variable() {
    let file = write_config(
        "small.toml",
        "upstream = \"http://127.0.0.1:9\"\nlisten = \"127.0.0.1:0\"\ncapacity = 64\n",
    );
    let (code, err) = run_to_exit(&["serve", "--config", file.to_str().unwrap()], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("line 3") && err.contains("`capacity`") && err.contains("64 bytes"),
        "{err}"
    );
    assert!(
        err.contains("a number without a unit is bytes") && err.contains("64MiB"),
        "{err}"
    );

    let (code, err) = serve_to_exit(&["--capacity", "64"], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--capacity") && err.contains("64 bytes"),
        "{err}"
    );

    let (code, err) = serve_to_exit(&[], &[("CACHET_MAX_OBJECT_SIZE", "8")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("CACHET_MAX_OBJECT_SIZE=8") && err.contains("8MiB"),
        "{err}"
    );
}

#[test]
fn a_misspelt_cachet_variable_is_refused_with_the_closest_name() {
    let (code, err) = serve_to_exit(&[], &[("CACHET_CAPACTY", "1GiB")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("unknown environment variable CACHET_CAPACTY")
            && err.contains("did you mean CACHET_CAPACITY?"),
        "{err}"
    );
    // Other subcommands check it too; `--help` still answers, to look the right name up.
    let (code, err) = run_to_exit(&["origin"], &[("CACHET_ORIGN_LISTEN", "127.0.0.1:0")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("CACHET_ORIGIN_LISTEN"), "{err}");
    let (code, _) = run_to_exit(&["serve", "--help"], &[("CACHET_CAPACTY", "1GiB")]);
    assert_eq!(code, Some(0));
    // What Kubernetes defines for a Service named `cachet` is no setting, and no mistake: start
    // goes on to the (deliberately failing) validation.
    let (code, err) = serve_to_exit(
        &["--max-connections", "0"],
        &[
            ("CACHET_SERVICE_HOST", "10.0.0.11"),
            ("CACHET_PORT", "tcp://10.0.0.11:8080"),
            ("CACHET_PORT_8080_TCP_ADDR", "10.0.0.11"),
        ],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--max-connections") && !err.contains("unknown"),
        "{err}"
    );
}

#[test]
fn a_bad_environment_value_is_named_by_its_variable() {
    let (code, err) = serve_to_exit(&[], &[("CACHET_CAPACITY", "abc")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.starts_with("error: CACHET_CAPACITY=abc (--capacity): invalid size \"abc\""),
        "{err}"
    );
    // clap checks the variable even beside the flag (the top level of `cachet` reads the flags of
    // `serve` too), and under other subcommands: it is still named as the variable.
    let (code, err) = serve_to_exit(&["--capacity", "2MiB"], &[("CACHET_CAPACITY", "abc")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("CACHET_CAPACITY=abc (--capacity)"), "{err}");
    let (code, err) = run_to_exit(
        &["origin", "--listen", "127.0.0.1:0"],
        &[("CACHET_SHUTDOWN_TIMEOUT", "soon")],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("CACHET_SHUTDOWN_TIMEOUT=soon (--shutdown-timeout)"),
        "{err}"
    );
    // A bad value typed as a flag is clap's to report, by the flag.
    let (code, err) = serve_to_exit(&["--capacity", "lots"], &[("CACHET_CAPACITY", "1GiB")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("'--capacity <SIZE>'") && !err.contains("CACHET_CAPACITY"),
        "{err}"
    );
    // A value that parses but fails validation is named by its variable too, and by its key
    // and line when it came from the file.
    let (code, err) = serve_to_exit(&[], &[("CACHET_REVALIDATE_WORKERS", "0")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--revalidate-workers (CACHET_REVALIDATE_WORKERS=0): must be at least 1"),
        "{err}"
    );
    let file = write_config(
        "workers.toml",
        "upstream = \"http://127.0.0.1:9\"\nlisten = \"127.0.0.1:0\"\nrevalidate_workers = 0\n",
    );
    let (code, err) = run_to_exit(&["serve", "--config", file.to_str().unwrap()], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("line 3") && err.contains("`revalidate_workers`"),
        "{err}"
    );
}

#[test]
fn listen_and_admin_take_host_names() {
    let mut child = cachet(
        &[
            "serve",
            "--upstream",
            "http://127.0.0.1:9",
            "--listen",
            "localhost:0",
            "--admin",
            "localhost:0",
            "--log-format",
            "json",
            "--access-log",
            "off",
        ],
        &[("RUST_LOG", "info")],
    )
    .spawn()
    .expect("spawn cachet");
    let (tx, lines) = mpsc::channel();
    let pipe = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut serving = None;
    while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if v["fields"]["message"] == "cachet serving" {
            let addr = |k: &str| {
                v["fields"][k]
                    .as_str()
                    .unwrap()
                    .parse::<SocketAddr>()
                    .unwrap()
            };
            serving = Some((addr("listen"), addr("admin")));
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let (listen, admin) = serving.expect("cachet serving on localhost");
    assert!(listen.ip().is_loopback() && admin.ip().is_loopback());

    let (code, err) = serve_to_exit(&[], &[("CACHET_ADMIN", "localhost")]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("CACHET_ADMIN=localhost") && err.contains("no port"),
        "{err}"
    );
    let (code, err) = run_to_exit(
        &[
            "serve",
            "--upstream",
            "http://127.0.0.1:9",
            "--listen",
            "localhost:99999",
        ],
        &[],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--listen"), "{err}");
}

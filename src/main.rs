//! The `cachet` binary: parse the command line, start tracing, dispatch.

use std::net::SocketAddr;

use anyhow::Context;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use cachet::bench::BenchArgs;
use cachet::config::{ConfigError, FileSetting, LogFormat, Origins, ServeArgs};
use cachet::origin::OriginConfig;
use cachet::units::{parse_duration, parse_size};

/// An HTTP caching reverse proxy: correct by RFC 9111, fast on hits, honest about hit rates.
///
/// With no subcommand, `cachet` runs `serve`.
#[derive(Debug, Parser)]
#[command(name = "cachet", version, about, long_about = None)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    serve: Option<ServeArgs>,
}

// Built once per process from the command line; the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the caching proxy in front of an upstream.
    Serve(ServeArgs),
    /// Run a deliberately slow origin for demos, tests and benchmarks.
    Origin(OriginArgs),
    /// Measure hit rates: through each store (sim) or through a real proxy (http).
    Bench(BenchArgs),
    /// Ask a running `cachet serve` for GET /health on its admin listener; exit 0 when it
    /// answers 200 (for container health checks, where no curl is installed).
    Healthcheck(HealthcheckArgs),
}

/// Flags of `cachet healthcheck`.
#[derive(Debug, Args)]
struct HealthcheckArgs {
    /// The admin listener to ask, IP:PORT or HOST:PORT (0.0.0.0 or [::] mean this host).
    #[arg(long, env = "CACHET_ADMIN", default_value = "127.0.0.1:9091", value_parser = cachet::config::parse_addr)]
    admin: SocketAddr,
    /// How long to wait for the answer.
    #[arg(long, default_value = "3s", value_parser = |s: &str| parse_duration(s).map_err(|e| e.to_string()))]
    timeout: std::time::Duration,
}

/// Flags of `cachet origin`.
#[derive(Debug, Args)]
struct OriginArgs {
    /// Address to listen on, IP:PORT or HOST:PORT.
    #[arg(long, env = "CACHET_ORIGIN_LISTEN", default_value = "127.0.0.1:9000", value_parser = cachet::config::parse_addr)]
    listen: SocketAddr,
    /// Delay before each response's headers (per request: ?latency=50ms).
    #[arg(long, default_value = "200ms", value_parser = |s: &str| parse_duration(s).map_err(|e| e.to_string()))]
    latency: std::time::Duration,
    /// Body size of each response (per request: ?size=1024).
    #[arg(long, default_value = "4KiB", value_parser = |s: &str| parse_size(s).map_err(|e| e.to_string()))]
    body_size: u64,
    /// max-age in the default `Cache-Control: public, max-age=N` (per request: ?cc=...).
    #[arg(long, default_value_t = 3600)]
    max_age: u64,
}

// mimalloc: the hit path allocates a few small buffers per request (headers, the status line),
// and glibc's malloc showed up at several percent of a hit-only profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let (cli, origins) = parse_cli_with_config_file();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<ConfigError>().is_some() => {
            // A setting that parses but makes no sense: exit status 2 like every configuration
            // error, named as the operator gave it (flag, variable or file key).
            let config = e.downcast_ref::<ConfigError>().expect("checked above");
            eprintln!("error: {}", origins.explain(config));
            std::process::ExitCode::from(2)
        }
        Err(e) => {
            // `{:#}` prints the context chain on one line; no backtrace for an operator's mistake.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let log_format = match &cli {
        Cli {
            command: Some(Command::Serve(args)),
            ..
        }
        | Cli {
            command: None,
            serve: Some(args),
        } => args.log_format,
        _ => LogFormat::Plain,
    };
    init_tracing(log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let command = match (cli.command, cli.serve) {
        (Some(c), _) => c,
        (None, Some(serve)) => Command::Serve(serve),
        // `cachet` alone: serve, which then reports the missing --upstream by name.
        (None, None) => Command::Serve(ServeArgs::from_arg_matches(
            &Cli::command().get_matches_from(["cachet"]),
        )?),
    };
    runtime.block_on(async move {
        match command {
            Command::Serve(args) => serve(args).await,
            Command::Origin(args) => origin(args).await,
            Command::Bench(args) => cachet::bench::run(args).await,
            Command::Healthcheck(args) => healthcheck(args).await,
        }
    })
}

/// Parses the command line, reading `--config FILE` (or `CACHET_CONFIG`) when given.
///
/// clap cannot read TOML, so the file is applied through the environment: each of its settings
/// becomes the flag's `CACHET_*` variable unless that variable is already set, and the command
/// line is parsed again. clap then gives a flag precedence over the variable, which yields the
/// documented order: flags, then environment, then file, then defaults. The file is checked key
/// by key first, so that a bad key or value is reported with the file and line, and the process
/// exits non-zero before anything starts.
///
/// Every configuration error exits with status 2: a bad value named by flag, `CACHET_*` variable
/// or file key and line, and a `CACHET_*` variable that no flag reads. The origins returned name
/// the variables and keys in the errors `ServeArgs::validate` finds later.
fn parse_cli_with_config_file() -> (Cli, Origins) {
    let first = parse_or_exit(None);
    // After the first parse, so that `--help` still answers to find the right name.
    let unknown = cachet::config::unknown_env_vars(&Cli::command(), std::env::vars_os());
    if !unknown.is_empty() {
        for u in &unknown {
            eprintln!("error: {u}");
        }
        std::process::exit(2);
    }
    let config = match &first.0 {
        Cli {
            command: Some(Command::Serve(args)),
            ..
        }
        | Cli {
            command: None,
            serve: Some(args),
        } => args.config.clone(),
        _ => None,
    };
    let Some(path) = config else {
        let origins = Origins::new(&Cli::command(), &first.1, None);
        return (first.0, origins);
    };
    let settings = match cachet::config::read_config_file(&path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let applied: Vec<FileSetting> = settings
        .into_iter()
        .filter(|s| std::env::var_os(&s.env).is_none())
        .collect();
    for setting in &applied {
        // Single-threaded here: no runtime, no tracing, no other thread reads the environment.
        std::env::set_var(&setting.env, &setting.value);
    }
    let (cli, matches) = parse_or_exit(Some((&path, &applied)));
    let origins = Origins::new(&Cli::command(), &matches, Some((&path, &applied)));
    (cli, origins)
}

/// `Cli::parse()`, but a bad value from the environment (or from the config file, applied through
/// it) is named by its variable (or key and line) rather than by the flag clap blames.
fn parse_or_exit(file: Option<(&std::path::Path, &[FileSetting])>) -> (Cli, clap::ArgMatches) {
    let mut cmd = Cli::command();
    let parsed = cmd
        .clone()
        .try_get_matches()
        .and_then(|m| Ok((Cli::from_arg_matches(&m)?, m)));
    match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            if let Some(bad) = cachet::config::env_value_error(&cmd, std::env::args_os(), &e, file)
            {
                eprintln!("error: {bad}");
                std::process::exit(2);
            }
            e.format(&mut cmd).exit()
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: in `docker logs` or a file they are noise.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.validate()?;
    // Listen for signals before the listener is bound, so that none arrives unheard.
    let mut signals = Signals::new()?;
    let running = cachet::server::start(config.clone()).await?;
    let sites: Vec<String> = running
        .proxy
        .sites()
        .all()
        .iter()
        .map(|s| s.name().to_string())
        .collect();
    tracing::info!(
        listen = %running.addr,
        tls = %running.tls_addr.map_or_else(|| "off".to_string(), |a| a.to_string()),
        admin = %running.admin_addr.map_or_else(|| "off".to_string(), |a| a.to_string()),
        sites = %sites.join(","),
        backend = %config.backend,
        capacity = %cachet::units::format_size(config.capacity),
        "cachet serving"
    );
    let token = running.shutdown_token();
    let reloader = running.reloader();
    tokio::spawn(async move {
        let mut stopping = false;
        loop {
            match signals.recv().await {
                Signal::Reload => {
                    // Off the runtime's workers: the reload reads files and builds clients.
                    let r = reloader.clone();
                    match tokio::task::spawn_blocking(move || r.reload()).await {
                        Ok(report) => log_reload(&report),
                        Err(e) => tracing::error!(error = %e, "reload failed"),
                    }
                }
                Signal::Stop if !stopping => {
                    tracing::info!(
                        "shutting down: finishing in-flight requests (a second signal exits now)"
                    );
                    token.cancel();
                    stopping = true;
                }
                Signal::Stop => {
                    tracing::warn!("second signal: exiting now");
                    std::process::exit(130);
                }
            }
        }
    });
    running.wait().await;
    cachet::access_log::flush(std::time::Duration::from_secs(2));
    tracing::info!("stopped");
    Ok(())
}

/// Logs what a reload changed, and what it refused and why.
fn log_reload(report: &cachet::server::ReloadReport) {
    match &report.sites {
        Ok(Some(n)) => tracing::info!(sites = n, "reload: sites replaced"),
        Ok(None) => tracing::info!("reload: no [[site]] in the config file; sites unchanged"),
        Err(e) => tracing::error!(error = %e, "reload: sites refused; the running ones are kept"),
    }
    match &report.certificate {
        Some(Ok(())) => tracing::info!("reload: TLS certificate re-read"),
        Some(Err(e)) => {
            tracing::error!(error = %e, "reload: TLS certificate refused; the running one is kept")
        }
        None => {}
    }
    tracing::info!("reload: other settings (listeners, store, timeouts) take effect on restart");
}

async fn healthcheck(args: HealthcheckArgs) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut addr = args.admin;
    if addr.ip().is_unspecified() {
        // A listener on 0.0.0.0 is reached through loopback from inside the same host.
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        Ok::<_, std::io::Error>(head)
    };
    let head = tokio::time::timeout(args.timeout, exchange)
        .await
        .with_context(|| format!("no answer from {addr} within {:?}", args.timeout))?
        .with_context(|| format!("asking {addr} for /health"))?;
    let status_line = String::from_utf8_lossy(&head);
    anyhow::ensure!(
        status_line.ends_with(" 200"),
        "{addr} answered /health with {status_line:?}"
    );
    Ok(())
}

async fn origin(args: OriginArgs) -> anyhow::Result<()> {
    let config = OriginConfig {
        latency: args.latency,
        body_size: args.body_size,
        max_age: args.max_age,
    };
    let shutdown = CancellationToken::new();
    let mut signals = Signals::new()?;
    let origin = cachet::origin::bind(args.listen, config, shutdown.clone())
        .await
        .with_context(|| format!("binding --listen {}", args.listen))?;
    tracing::info!(listen = %origin.addr, "cachet origin serving");
    while signals.recv().await == Signal::Reload {}
    shutdown.cancel();
    Ok(())
}

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    /// SIGTERM or Ctrl-C: drain and stop (a second one: stop now).
    Stop,
    /// SIGHUP: re-read the config file's sites and the certificates.
    Reload,
}

/// SIGTERM and Ctrl-C (SIGINT), listened for from creation on; SIGHUP too, so that its default
/// action (ending the process, in-flight requests and all) never runs.
///
/// One listener pair serves the whole life of the process: the first signal starts the drain and
/// the second exits. Listeners made afresh for each wait could miss a signal sent between two
/// waits, or see the first signal twice.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                term: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
                int: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
                hup: signal(SignalKind::hangup()).context("listening for SIGHUP")?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Signals {})
        }
    }

    /// Resolves on the next signal.
    async fn recv(&mut self) -> Signal {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => Signal::Stop,
                _ = self.int.recv() => Signal::Stop,
                _ = self.hup.recv() => Signal::Reload,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Signal::Stop
        }
    }
}

//! The `cachet` binary: parse the command line, start tracing, dispatch.

use std::net::SocketAddr;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use cachet::bench::BenchArgs;
use cachet::config::ServeArgs;
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

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the caching proxy in front of an upstream.
    Serve(ServeArgs),
    /// Run a deliberately slow origin for demos, tests and benchmarks.
    Origin(OriginArgs),
    /// Measure hit rates: through each store (sim) or through a real proxy (http).
    Bench(BenchArgs),
}

/// Flags of `cachet origin`.
#[derive(Debug, Args)]
struct OriginArgs {
    /// Address to listen on.
    #[arg(long, env = "CACHET_ORIGIN_LISTEN", default_value = "127.0.0.1:9000")]
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

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let command = match (cli.command, cli.serve) {
        (Some(c), _) => c,
        (None, Some(serve)) => Command::Serve(serve),
        (None, None) => unreachable!("clap requires --upstream when no subcommand is given"),
    };
    runtime.block_on(async move {
        match command {
            Command::Serve(args) => serve(args).await,
            Command::Origin(args) => origin(args).await,
            Command::Bench(args) => cachet::bench::run(args).await,
        }
    })
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.validate()?;
    let running = cachet::server::start(config.clone())
        .await
        .with_context(|| format!("binding --listen {}", config.listen))?;
    tracing::info!(
        listen = %running.addr,
        upstream = %config.upstream.url,
        backend = %config.backend,
        capacity = %cachet::units::format_size(config.capacity),
        "cachet serving"
    );
    let token = running.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
        token.cancel();
        wait_for_signal().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(1);
    });
    running.wait().await;
    tracing::info!("stopped");
    Ok(())
}

async fn origin(args: OriginArgs) -> anyhow::Result<()> {
    let config = OriginConfig {
        latency: args.latency,
        body_size: args.body_size,
        max_age: args.max_age,
    };
    let shutdown = CancellationToken::new();
    let origin = cachet::origin::bind(args.listen, config, shutdown.clone())
        .await
        .with_context(|| format!("binding --listen {}", args.listen))?;
    tracing::info!(listen = %origin.addr, "cachet origin serving");
    wait_for_signal().await;
    shutdown.cancel();
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

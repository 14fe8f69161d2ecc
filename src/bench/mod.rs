//! `cachet bench`: hit rates measured through the stores and through a real proxy.
//!
//! Two levels, one command:
//! - `bench sim` replays a trace straight through each [`crate::store::Store`] backend
//!   ([`sim`]) at several capacities, beside an exact LRU and Belady's OPT on the same trace
//!   ([`reference`]): which backend keeps the most of the working set.
//! - `bench http` (the default) starts the slow origin and a proxy per backend on loopback and
//!   drives the same trace over real HTTP ([`http`]): hit ratio as a client sees it, upstream
//!   requests, coalescing, throughput and latency, with the replay's figure beside each row.
//!   With `--instances N --shared URL` each backend runs three ways ([`fleet`]): N instances
//!   sharing the tier, one instance with N times the memory, and N isolated instances.
//!
//! The trace comes from a generator ([`workload`]) or a file ([`trace`]); flags are parsed by
//! [`spec`]; [`runner`] runs the matrix; [`report`] and [`plot`] print it.

pub mod fleet;
pub mod http;
pub mod plot;
pub mod reference;
pub mod report;
pub mod runner;
pub mod sim;
pub mod spec;
pub mod trace;
pub mod workload;

use std::path::PathBuf;
use std::time::Duration;

use ::http::Uri;
use anyhow::Context;
use clap::{Args, Subcommand};

use crate::shared::RedisTarget;
use crate::store::MokaPolicy;
use crate::units::parse_duration;

use self::report::Report;
use self::runner::{HttpOptions, Input, SimOptions};
use self::spec::{Backends, Capacities, Capacity, Evictions, SizeSpec, TraceFormat, Workload};

/// Flags of `cachet bench`. With no subcommand, the flags are those of `bench http`.
#[derive(Debug, Clone, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    /// Which level to measure at.
    #[command(subcommand)]
    pub mode: Option<BenchMode>,
    /// `bench http`'s flags, for `cachet bench` with no subcommand.
    #[command(flatten)]
    pub http: HttpArgs,
}

/// The two levels.
#[derive(Debug, Clone, Subcommand)]
pub enum BenchMode {
    /// Replay the trace through each store directly (no sockets), beside exact LRU and Belady's
    /// OPT: which backend keeps the most of the working set.
    Sim(SimArgs),
    /// Drive the trace over real HTTP through a proxy per backend in front of a slow origin, all
    /// on loopback (the default).
    Http(HttpArgs),
}

/// Flags both levels share.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// The request stream: zipf:ALPHA (0.6 flat to 1.2 skewed), uniform, scan[:ALPHA] (Zipf with
    /// periodic one-pass scans of cold keys), shift[:ALPHA] (popular keys change halfway) or
    /// drift[:ALPHA] (the hot set slides steadily onto new keys).
    #[arg(long, default_value = "zipf:1.0")]
    pub workload: Workload,
    /// Distinct keys the workload draws from.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=u64::from(u32::MAX)))]
    pub keys: u64,
    /// Requests to make [default: sim 1000000, http 30000; a --trace is read whole for sim].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=u64::from(u32::MAX)))]
    pub requests: Option<u64>,
    /// Seed of every random draw: the same seed gives the same trace, and the same hits in a
    /// replay (its stores hash with keys derived from the seed).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Object body sizes: a fixed size (4KiB) or lognormal:MEAN,SIGMA (lognormal:16KiB,1.0).
    #[arg(long, default_value = "4KiB")]
    pub size: SizeSpec,
    /// Replay this trace file instead of a generated workload: text/CSV (key[,size] per line) or
    /// libCacheSim oracleGeneral (24-byte records), optionally zstd-compressed.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Layout of --trace: auto (by name: .oracleGeneral, .bin), csv or oracle.
    #[arg(long, default_value = "auto")]
    pub trace_format: TraceFormat,
    /// Cache sizes, a comma list: bytes with units (64MiB) or percentages of the trace's working
    /// set (10%) [default: sim 1%,5%,10%,25%; http 10%].
    #[arg(long)]
    pub capacity: Option<Capacities>,
    /// Backends to run, a comma list of rwlock, sharded and moka.
    #[arg(long, default_value = "rwlock,sharded,moka")]
    pub backend: Backends,
    /// Eviction policies of the rwlock and sharded backends, a comma list of adaptive and clock:
    /// each of those backends runs once per policy.
    #[arg(long, default_value = "adaptive")]
    pub eviction: Evictions,
    /// Eviction policy of the moka backend: tinylfu or lru.
    #[arg(long, default_value = "tinylfu")]
    pub moka_policy: MokaPolicy,
    /// Print JSON on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Print CSV on stdout instead of the table.
    #[arg(long, conflicts_with = "json")]
    pub csv: bool,
    /// Also draw hit ratio against cache size to this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

/// Flags of `bench sim`.
#[derive(Debug, Clone, Args)]
pub struct SimArgs {
    /// Shared flags.
    #[command(flatten)]
    pub common: CommonArgs,
}

fn parse_duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

/// Flags of `bench http`.
#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    /// Shared flags.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Requests in flight at once (and so the most client connections).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=4096u64))]
    pub concurrency: u64,
    /// The origin's delay before each response.
    #[arg(long, default_value = "20ms", value_parser = parse_duration_arg)]
    pub origin_latency: Duration,
    /// Longest a run (one backend at one capacity) may send requests for.
    #[arg(long, alias = "duration", default_value = "60s", value_parser = parse_duration_arg)]
    pub time_limit: Duration,
    /// Drive a running proxy at this URL instead (http://host:port); it must forward
    /// /obj/<n>?size=<bytes> to an origin that honours size=, such as `cachet origin`.
    #[arg(long, value_parser = crate::config::parse_upstream)]
    pub target: Option<Uri>,
    /// Run each backend as N instances sharing the --shared tier, beside one instance with N
    /// times the capacity and N isolated instances (2 to 64; needs --shared).
    #[arg(
        long,
        value_name = "N",
        requires = "shared",
        conflicts_with = "target",
        value_parser = clap::value_parser!(u64).range(2..=64)
    )]
    pub instances: Option<u64>,
    /// The tier the --instances fleet shares: redis://HOST:PORT[/DB] or
    /// redis+cluster://HOST:PORT,HOST:PORT,... (needs --instances).
    #[arg(long, value_name = "URL", requires = "instances", value_parser = parse_shared_arg)]
    pub shared: Option<RedisTarget>,
    /// The fleet's lookup timeout on the tier, as `serve --shared-timeout` [default: serve's].
    #[arg(long, requires = "shared", value_parser = parse_duration_arg)]
    pub shared_timeout: Option<Duration>,
}

fn parse_shared_arg(s: &str) -> Result<RedisTarget, String> {
    RedisTarget::parse(s)
}

/// Default `--requests` of `bench sim` on a generated workload.
pub const SIM_REQUESTS: u64 = 1_000_000;
/// Default `--requests` of `bench http`.
pub const HTTP_REQUESTS: u64 = 30_000;

fn input(common: &CommonArgs, default_requests: Option<u64>) -> anyhow::Result<Input> {
    let requests = common.requests.or(default_requests);
    match &common.trace {
        Some(path) => Ok(Input::read(
            path,
            common.trace_format,
            requests.map(|r| r as usize),
            common.size,
            common.seed,
        )?),
        None => Ok(Input::generate(
            common.workload,
            common.keys,
            requests.unwrap_or(SIM_REQUESTS) as usize,
            common.size,
            common.seed,
        )),
    }
}

fn sim_options(common: &CommonArgs, default: &[Capacity]) -> SimOptions {
    SimOptions {
        capacities: common
            .capacity
            .clone()
            .map_or_else(|| default.to_vec(), |c| c.0),
        backends: common.backend.0.clone(),
        evictions: common.eviction.0.clone(),
        moka_policy: common.moka_policy,
    }
}

fn emit(report: &Report, common: &CommonArgs) -> anyhow::Result<()> {
    if let Some(path) = &common.plot {
        plot::write_svg(report, path)?;
        eprintln!("plot written to {}", path.display());
    }
    if common.json {
        println!("{}", report.json());
    } else if common.csv {
        print!("{}", report.csv());
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

/// Runs the benchmark described by `args`.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.mode {
        Some(BenchMode::Sim(sim)) => run_sim(sim.common).await,
        Some(BenchMode::Http(http)) => run_http(http).await,
        None => run_http(args.http).await,
    }
}

async fn run_sim(common: CommonArgs) -> anyhow::Result<()> {
    // Replays are CPU-bound: run them off the async workers.
    let report = tokio::task::spawn_blocking(move || -> anyhow::Result<(Report, CommonArgs)> {
        // A trace file is read whole unless --requests says otherwise.
        let default_requests = common.trace.is_none().then_some(SIM_REQUESTS);
        let input = input(&common, default_requests)?;
        let default_caps = [1.0, 5.0, 10.0, 25.0].map(Capacity::Percent);
        let options = sim_options(&common, &default_caps);
        // Backends, then LRU and OPT, at each capacity.
        let total = input.trace.requests.len() as u64
            * options.capacities.len() as u64
            * options.runs().len() as u64;
        let progress = runner::progress_bar(total, "sim");
        let report = runner::run_sim(&input, &options, &progress.bar);
        progress.finish();
        Ok((report, common))
    })
    .await
    .context("the replay thread failed")??;
    emit(&report.0, &report.1)
}

async fn run_http(args: HttpArgs) -> anyhow::Result<()> {
    let common = &args.common;
    // clap has checked that --instances and --shared come together.
    let fleet = match (args.instances, &args.shared) {
        (Some(n), Some(target)) => Some(fleet::FleetOptions {
            instances: n as usize,
            target: target.clone(),
            timeout: args.shared_timeout,
        }),
        _ => None,
    };
    // Before the trace is built: a tier that is not there fails the run at once.
    if let Some(f) = &fleet {
        fleet::ping(&f.target).await?;
    }
    let input = {
        let common = common.clone();
        tokio::task::spawn_blocking(move || input(&common, Some(HTTP_REQUESTS)))
            .await
            .context("the trace thread failed")??
    };
    let options = HttpOptions {
        sim: sim_options(common, &[Capacity::Percent(10.0)]),
        drive: http::DriveOptions {
            concurrency: args.concurrency as usize,
            time_limit: args.time_limit,
            request_timeout: Duration::from_secs(30),
        },
        origin_latency: args.origin_latency,
        target: args.target.clone(),
        fleet,
    };
    let runs = if options.target.is_some() {
        1
    } else {
        // With --instances, three set-ups per backend and capacity.
        let setups = if options.fleet.is_some() { 3 } else { 1 };
        options.sim.capacities.len() * options.sim.runs().len() * setups
    };
    let progress = runner::progress_bar(input.trace.requests.len() as u64 * runs as u64, "http");
    let report = runner::run_http(&input, &options, &progress.bar).await;
    // Joining the plain-progress thread waits at most one of its 100 ms checks.
    tokio::task::spawn_blocking(move || progress.finish())
        .await
        .context("the progress thread failed")?;
    let report = report?;
    emit(&report, common)
}

//! `bench http --instances N --shared URL`: what sharing a tier buys a fleet.
//!
//! For each backend and capacity C, three set-ups run one after the other on the same requests,
//! each with a fresh origin and fresh proxies on loopback:
//! - **fleet**: N instances of C each, sharing the tier at URL;
//! - **one big**: one instance of N×C, no tier (the memory of the fleet in one cache);
//! - **isolated**: N instances of C each, no tier (the fleet without the tier).
//!
//! Requests are spread round-robin, request `i` of the trace to instance `i mod N`, as a load
//! balancer without affinity would, and every request carries the same `Host`
//! ([`FLEET_HOST`]), so that every instance computes the same cache keys. Each fleet writes
//! under a key prefix of its own (`cachet-bench-<run>-<k>:`), so runs never see each other's
//! entries, and the keys are deleted when the run ends.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::http::{HeaderValue, Uri};
use indicatif::ProgressBar;

use crate::outcome::CacheResult;
use crate::policy::purge::PurgeTarget;
use crate::server::Running;
use crate::shared::tier::SharedTier;
use crate::shared::{RedisTarget, RedisTier, SharedConfig};
use crate::store::{Store, ENTRY_OVERHEAD};

use super::http::{self, digits, id_width, object_path, HttpBenchError};
use super::reference::OPT_DESCRIPTION;
use super::report::{Report, Row};
use super::runner::{self, BackendRun, HttpOptions, Input};
use super::sim::{self, Objects};
use super::trace::Trace;

/// The `Host` of every request of an `--instances` run, on all three set-ups: the cache key is
/// `http://cachet-bench.test/obj/<n>?size=<bytes>` on every instance.
pub const FLEET_HOST: &str = "cachet-bench.test";

/// How long the tier has to answer the PING that starts a run, and each call that deletes the
/// run's keys at its end.
const PING_TIMEOUT: Duration = Duration::from_secs(3);
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopped instance's tier writer may go on writing what was queued (the tier
/// drains for at most 2 s at shutdown): the keys are deleted after that.
const WRITER_DRAIN: Duration = Duration::from_secs(3);

/// What `--instances N --shared URL` asks for.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// N: instances of the fleet and of the isolated set-up, and the multiple of the capacity
    /// the one big instance gets. At least 2.
    pub instances: usize,
    /// The tier the fleet shares.
    pub target: RedisTarget,
    /// The fleet's lookup timeout (`--shared-timeout`); `None` for the default of `serve`.
    pub timeout: Option<Duration>,
}

/// One of the three set-ups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// N instances sharing the tier.
    Fleet,
    /// One instance with N times the capacity.
    OneBig,
    /// N instances on their own.
    Isolated,
}

impl Layout {
    /// In the order they run and are reported.
    pub const ALL: [Layout; 3] = [Layout::Fleet, Layout::OneBig, Layout::Isolated];

    /// The JSON and CSV name.
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::Fleet => "fleet",
            Layout::OneBig => "one-big",
            Layout::Isolated => "isolated",
        }
    }
}

/// `--shared` as the user would write it.
pub fn describe(target: &RedisTarget) -> String {
    match target {
        RedisTarget::Single(url) => url.clone(),
        RedisTarget::Cluster(nodes) => format!(
            "redis+cluster://{}",
            nodes
                .iter()
                .map(|n| n.trim_start_matches("redis://"))
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

/// Checks that the tier answers `PING`, so that a run against a Redis that is not there fails
/// at once and says so, instead of measuring a fleet whose tier is down.
pub async fn ping(target: &RedisTarget) -> Result<(), HttpBenchError> {
    let unreachable = |reason: String| HttpBenchError::SharedUnreachable {
        target: describe(target),
        reason,
    };
    let tier = RedisTier::new(target.clone(), "cachet-bench-ping:", PING_TIMEOUT)
        .map_err(|e| unreachable(e.to_string()))?;
    match tokio::time::timeout(PING_TIMEOUT, tier.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(unreachable(e.to_string())),
        Err(_) => Err(unreachable(format!("no answer within {PING_TIMEOUT:?}"))),
    }
}

/// What one set-up measured.
struct Measured {
    drive: http::Drive,
    /// Requests the origin counted.
    upstream: u64,
    /// Bytes the instances held at the end, together.
    stored: u64,
    /// Shared hits the instances counted themselves.
    server_shared_hits: u64,
    /// The `cachet_shared_*` counters' increase over the set-up, when they can be read.
    tier_calls: Option<BTreeMap<String, u64>>,
}

/// One set-up of one backend at one capacity.
struct SetupSpec<'a> {
    run: BackendRun,
    /// Instances to start.
    instances: usize,
    /// Capacity of each.
    capacity: u64,
    shared: Option<SharedConfig>,
    options: &'a HttpOptions,
    trace: &'a Arc<Trace>,
}

/// Starts the set-up's origin and instances, drives the trace over them, and stops them.
async fn measure(spec: SetupSpec<'_>, progress: &ProgressBar) -> Result<Measured, HttpBenchError> {
    let origin = http::start_origin(spec.options.origin_latency).await?;
    let before = tier_counters();
    let mut proxies: Vec<Running> = Vec::with_capacity(spec.instances);
    let started = async {
        for _ in 0..spec.instances {
            proxies.push(
                http::start_instance(
                    origin.origin.addr,
                    spec.run.backend,
                    spec.run.eviction,
                    spec.options.sim.moka_policy,
                    spec.capacity,
                    spec.shared.clone(),
                )
                .await?,
            );
        }
        proxies
            .iter()
            .map(|p| http::object_uris(&format!("http://{}", p.addr), spec.trace))
            .collect::<Result<Vec<Vec<Uri>>, _>>()
    }
    .await;
    let uris = match started {
        Ok(uris) => uris,
        Err(e) => {
            for p in proxies {
                p.shutdown().await;
            }
            return Err(e);
        }
    };
    let drive = http::drive_spread(
        Arc::clone(spec.trace),
        Arc::new(uris),
        Some(HeaderValue::from_static(FLEET_HOST)),
        spec.options.drive,
        progress,
    )
    .await;
    let stored = proxies.iter().map(|p| p.store().weighted_size()).sum();
    let server_shared_hits = proxies
        .iter()
        .map(|p| p.counts.get(CacheResult::SharedHit))
        .sum();
    let upstream = origin.origin.stats.requests();
    for p in proxies {
        p.shutdown().await;
    }
    drop(origin);
    let tier_calls = match (before, tier_counters()) {
        (Some(before), Some(after)) => Some(
            after
                .into_iter()
                .map(|(k, v)| {
                    let was = before.get(&k).copied().unwrap_or(0);
                    (k, v.saturating_sub(was))
                })
                .filter(|(_, v)| *v > 0)
                .collect(),
        ),
        _ => None,
    };
    Ok(Measured {
        drive,
        upstream,
        stored,
        server_shared_hits,
        tier_calls,
    })
}

/// The process-wide `cachet_shared_*_total` counters, by series (`lookups{hit}`), read from the
/// Prometheus recorder (installed on first use); `None` when another recorder was installed.
fn tier_counters() -> Option<BTreeMap<String, u64>> {
    let handle = crate::metrics::install_prometheus().ok()?;
    Some(parse_tier_counters(&handle.render()))
}

/// `cachet_shared_lookups_total{result="hit"} 12` → `lookups{hit}` = 12.
fn parse_tier_counters(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("cachet_shared_") else {
            continue;
        };
        let Some((series, value)) = rest.rsplit_once(' ') else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        let Some(name) = name.strip_suffix("_total") else {
            continue; // the up gauge
        };
        let values: Vec<&str> = labels
            .split(',')
            .filter_map(|kv| kv.split_once('=').map(|(_, v)| v.trim_matches('"')))
            .collect();
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        out.insert(format!("{name}{{{}}}", values.join(",")), value as u64);
    }
    out
}

/// `lookups hit=5 miss=2; errors timeout=1`, from [`parse_tier_counters`]' series.
fn format_tier_calls(calls: &BTreeMap<String, u64>) -> String {
    let mut groups: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (series, n) in calls {
        let (name, label) = series.split_once('{').unwrap_or((series, "}"));
        let label = label.trim_end_matches('}');
        groups.entry(name).or_default().push(if label.is_empty() {
            n.to_string()
        } else {
            format!("{label}={n}")
        });
    }
    if groups.is_empty() {
        return "none".into();
    }
    groups
        .iter()
        .map(|(name, items)| format!("{name} {}", items.join(" ")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Deletes every URL the run's fleets wrote (each under its own prefix). Returns the URLs
/// deleted.
async fn delete_keys(target: &RedisTarget, prefixes: &[String]) -> Result<u64, String> {
    let mut deleted = 0;
    for prefix in prefixes {
        let tier = RedisTier::new(target.clone(), prefix, PING_TIMEOUT)
            .map_err(|e| format!("under {prefix}: {e}"))?;
        deleted += tokio::time::timeout(CLEANUP_TIMEOUT, tier.remove(&PurgeTarget::All))
            .await
            .map_err(|_| format!("under {prefix}: timed out"))?
            .map_err(|e| format!("under {prefix}: {e}"))?;
    }
    Ok(deleted)
}

/// `bench http --instances N --shared URL`: the three set-ups for every backend at every
/// capacity, the same requests replayed beside each, and after each capacity the reference
/// policies at the capacity of the one big instance. The keys the fleets wrote are deleted at
/// the end, whether the run succeeded or not.
pub async fn run(
    input: &Input,
    options: &HttpOptions,
    fleet: &FleetOptions,
    progress: &ProgressBar,
) -> Result<Report, HttpBenchError> {
    if fleet.instances < 2 {
        return Err(HttpBenchError::Instances(fleet.instances));
    }
    ping(&fleet.target).await?;
    let run_id = format!("{:08x}", rand::random::<u32>());
    let mut prefixes = Vec::new();
    let mut last_fleet = None;
    let result = run_setups(
        input,
        options,
        fleet,
        progress,
        &run_id,
        &mut prefixes,
        &mut last_fleet,
    )
    .await;
    // The stopped fleet's writers may still be emptying their queues: let them finish first,
    // or what they write would outlive the deletion.
    if let Some(stopped) = last_fleet {
        let since = Instant::now().duration_since(stopped);
        if since < WRITER_DRAIN {
            tokio::time::sleep(WRITER_DRAIN - since).await;
        }
    }
    let deleted = delete_keys(&fleet.target, &prefixes).await;
    let mut report = result?;
    let pattern = format!("cachet-bench-{run_id}-*");
    match deleted {
        Ok(n) => report.setup.push(format!(
            "afterwards the run's keys ({pattern}) were deleted from the tier: {n} URLs"
        )),
        Err(e) => report.notes.push(format!(
            "the run's keys could not be deleted from the tier ({e}); delete them with \
             redis-cli --scan --pattern '{pattern}' | xargs redis-cli unlink"
        )),
    }
    Ok(report)
}

async fn run_setups(
    input: &Input,
    options: &HttpOptions,
    fleet: &FleetOptions,
    progress: &ProgressBar,
    run_id: &str,
    prefixes: &mut Vec<String>,
    last_fleet: &mut Option<Instant>,
) -> Result<Report, HttpBenchError> {
    let n = fleet.instances;
    let trace = Arc::new(input.trace.clone());
    let planned = trace.requests.len();
    let width = id_width(trace.objects());
    let probe_size = trace.sizes.first().copied().unwrap_or(1);
    let header_base = http::probe_header_bytes(options.origin_latency, probe_size).await?;
    let objects = Objects::new(
        &trace,
        |o, s| format!("http://{FLEET_HOST}{}", object_path(o, s, width)),
        move |size| header_base + digits(size),
    );
    let working_set = objects.working_set();
    let tier_config = |prefix: &str| {
        let mut config = SharedConfig::new(fleet.target.clone());
        config.prefix = prefix.to_string();
        if let Some(t) = fleet.timeout {
            config.timeout = t;
        }
        config
    };
    let lookup_timeout = tier_config("").timeout;
    let mut results = Vec::new();
    let mut notes = Vec::new();
    let mut tier_lines = Vec::new();

    for &cap in &options.sim.capacities {
        let bytes = cap.resolve(working_set, trace.objects());
        let big = bytes.saturating_mul(n as u64);
        let big_label = format!("{n}x{cap}");
        let mut shortest = planned;
        for run in options.sim.runs() {
            let backend = run.backend;
            for layout in Layout::ALL {
                let (instances, capacity, shared) = match layout {
                    Layout::Fleet => {
                        let prefix = format!("cachet-bench-{run_id}-{}:", prefixes.len());
                        prefixes.push(prefix.clone());
                        (n, bytes, Some(tier_config(&prefix)))
                    }
                    Layout::OneBig => (1, big, None),
                    Layout::Isolated => (n, bytes, None),
                };
                let label = match layout {
                    Layout::OneBig => big_label.clone(),
                    _ => cap.to_string(),
                };
                let row_name = format!(
                    "{} {}",
                    backend,
                    match layout {
                        Layout::OneBig => "one big".to_string(),
                        other => format!("{} x{n}", other.as_str()),
                    }
                );
                progress.set_message(format!("http {row_name} @ {label}"));
                let measured = measure(
                    SetupSpec {
                        run,
                        instances,
                        capacity,
                        shared,
                        options,
                        trace: &trace,
                    },
                    progress,
                )
                .await;
                if layout == Layout::Fleet {
                    *last_fleet = Some(Instant::now());
                }
                let m = measured?;

                // The same requests over the same stores, without sockets.
                let done = trace.prefix(m.drive.sent);
                let stores: Vec<Arc<dyn Store>> = (0..instances)
                    .map(|_| {
                        sim::build_store(
                            backend,
                            capacity,
                            run.eviction,
                            options.sim.moka_policy,
                            input.seed,
                        )
                    })
                    .collect();
                let simulated =
                    sim::replay_spread(&stores, layout == Layout::Fleet, &done, &objects);
                shortest = shortest.min(m.drive.sent);

                notes.extend(runner::http_notes(
                    &row_name,
                    &label,
                    &m.drive,
                    planned,
                    Some(m.upstream),
                ));
                let c = &m.drive.counts;
                if layout == Layout::Fleet
                    && m.upstream > c.misses
                    && m.upstream - c.misses <= c.coalesced
                {
                    notes.push(format!(
                        "{row_name} at {label}: the {} origin requests beyond the misses are probably requests that waited for another instance's fill, found nothing in the tier and fetched for themselves: their Cache-Status still says collapsed, so they count as coalesced",
                        m.upstream - c.misses
                    ));
                }
                if m.server_shared_hits != m.drive.counts.shared_hits {
                    notes.push(format!(
                        "{row_name} at {label}: the instances counted {} shared hits, the client {}",
                        m.server_shared_hits, m.drive.counts.shared_hits
                    ));
                }
                if layout == Layout::Fleet {
                    if let Some(calls) = &m.tier_calls {
                        tier_lines.push(format!(
                            "{row_name} at {label}, calls to the tier (cachet_shared_*_total): {}",
                            format_tier_calls(calls)
                        ));
                        let errors: u64 = calls
                            .iter()
                            .filter(|(k, _)| k.starts_with("errors{"))
                            .map(|(_, v)| v)
                            .sum();
                        if errors > 0 {
                            let skipped = calls.get("writes{skipped}").copied().unwrap_or(0);
                            notes.push(format!(
                                "{row_name} at {label}: {errors} calls to the tier failed or timed out (lookup timeout {lookup_timeout:?}, --shared-timeout): their requests went on without the tier, and failures in a row opened the circuit breaker, which skips the tier until a probe finds it answering ({skipped} writes skipped), so the fleet's hit ratio is below what a tier answering in time gives (sim hit)"
                            ));
                        }
                    }
                }
                let mut fields = runner::http_fields(
                    &m.drive,
                    Some(m.upstream),
                    Some(simulated.counts.hit_ratio()),
                );
                fields.shared_hits = Some(m.drive.counts.shared_hits);
                let mut row = runner::http_row(
                    backend.as_str(),
                    Some(options.sim.policy_of(run)),
                    cap,
                    capacity,
                    &m.drive,
                    Some(m.stored),
                    fields,
                );
                row.capacity = label;
                row.layout = Some(layout.as_str().to_string());
                row.instances = Some(instances as u64);
                results.push(row);
            }
        }
        // One cache of the fleet's memory, by the reference policies.
        let done = trace.prefix(shortest);
        results.extend(
            runner::reference_rows(&done, &objects, cap, big)
                .into_iter()
                .map(|r| Row {
                    capacity: big_label.clone(),
                    ..r
                }),
        );
    }

    let target = describe(&fleet.target);
    let base = runner::http_setup(options, planned);
    let mut setup = vec![
        base[0].clone(),
        format!(
            "for each backend and capacity C, three set-ups, one after the other, each with a fresh `cachet origin` (latency {:?} per response) and fresh proxies, all in this process on 127.0.0.1:",
            options.origin_latency
        ),
        format!(
            "fleet x{n}: {n} instances of C each sharing the tier at {target} (lookup timeout {lookup_timeout:?}, a key prefix of its own); the tier's memory is Redis's own, not limited by the bench, on top of the instances'"
        ),
        format!("one big: 1 instance of {n}xC, no shared tier"),
        format!("isolated x{n}: {n} instances of C each, no shared tier"),
        format!(
            "requests spread round-robin as by a load balancer without affinity (request i of the trace to instance i mod {n}), every one with Host: {FLEET_HOST}, so all instances compute the same cache keys"
        ),
        "hit counts local and shared hits (shared: Cache-Status detail=shared); hit+coal and misses as without --instances; sim hit replays the same requests over the same stores without sockets, the fleet's with a tier that keeps every object fetched; lru, opt, s3fifo and sieve are one cache of the one big instance's capacity".into(),
        runner::policies(&options.sim),
    ];
    setup.extend(runner::capacity_lines(
        &options.sim.capacities,
        working_set,
        trace.objects(),
    ));
    setup.extend(tier_lines);
    Ok(Report {
        mode: "http",
        workload: input.workload.clone(),
        size: input.size.clone(),
        seed: input.seed,
        requests: planned as u64,
        objects: trace.objects() as u64,
        working_set_bytes: working_set,
        charge_model: format!(
            "each object charged as the proxy stores it: {ENTRY_OVERHEAD} + key (http://{FLEET_HOST}/obj/<n>?size=<bytes>) + {header_base} bytes of response headers + Content-Length digits + body"
        ),
        opt: OPT_DESCRIPTION,
        setup,
        results,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tier_counters_are_read_from_the_prometheus_text() {
        let text = "# TYPE cachet_shared_lookups_total counter\n\
                    cachet_shared_lookups_total{result=\"hit\"} 12\n\
                    cachet_shared_lookups_total{result=\"miss\"} 3\n\
                    cachet_shared_errors_total{kind=\"timeout\"} 1\n\
                    cachet_shared_up 1\n\
                    cachet_requests_total{result=\"hit\"} 99\n";
        let calls = parse_tier_counters(text);
        assert_eq!(calls.len(), 3, "{calls:?}");
        assert_eq!(calls["lookups{hit}"], 12);
        assert_eq!(
            format_tier_calls(&calls),
            "errors timeout=1; lookups hit=12 miss=3"
        );
        assert_eq!(format_tier_calls(&BTreeMap::new()), "none");
    }

    #[test]
    fn targets_are_described_as_given() {
        let single = RedisTarget::parse("redis://127.0.0.1:6379").unwrap();
        assert_eq!(describe(&single), "redis://127.0.0.1:6379");
        let cluster = RedisTarget::parse("redis+cluster://a:1,b:2").unwrap();
        assert_eq!(describe(&cluster), "redis+cluster://a:1,b:2");
    }

    #[tokio::test]
    async fn an_unreachable_tier_fails_the_ping_with_its_url() {
        // A port nothing listens on: bound, then released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("redis://127.0.0.1:{port}");
        let err = ping(&RedisTarget::parse(&url).unwrap()).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&url) && text.contains("PING"), "{text}");
    }
}

//! Runs a benchmark from typed options: builds the trace, runs each backend at each capacity
//! (through the store directly, or through a proxy over HTTP), runs the references beside them,
//! and assembles the [`Report`].

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ::http::Uri;
use indicatif::{ProgressBar, ProgressStyle};

use crate::store::{Backend, Eviction, MokaPolicy, ENTRY_OVERHEAD};

use super::fleet::{self, FleetOptions};
use super::http::{self, digits, id_width, object_path, DriveOptions, HttpBenchError};
use super::reference::{self, OPT_DESCRIPTION};
use super::report::{HttpFields, Report, Row};
use super::sim::{self, ratio, Counts, Objects};
use super::spec::{Capacity, SizeSpec, TraceFormat, Workload};
use super::trace::{self, Trace, TraceError};
use super::workload;

/// A trace ready to run, with what to call it in reports.
#[derive(Debug, Clone)]
pub struct Input {
    /// The requests.
    pub trace: Trace,
    /// The workload name or the trace file.
    pub workload: String,
    /// The size model.
    pub size: String,
    /// The generator's seed.
    pub seed: u64,
}

impl Input {
    /// A synthetic workload.
    pub fn generate(
        workload: Workload,
        keys: u64,
        requests: usize,
        size: SizeSpec,
        seed: u64,
    ) -> Input {
        Input {
            trace: workload::generate(workload, keys, requests, size, seed),
            workload: workload.to_string(),
            size: size.to_string(),
            seed,
        }
    }

    /// A trace file; objects whose lines carry no size get one from `size`.
    pub fn read(
        path: &Path,
        format: TraceFormat,
        limit: Option<usize>,
        size: SizeSpec,
        seed: u64,
    ) -> Result<Input, TraceError> {
        let trace = trace::read_trace(path, format, limit, &|o| {
            workload::object_size(size, seed, u64::from(o))
        })?;
        Ok(Input {
            trace,
            workload: format!("trace:{}", path.display()),
            size: format!("from trace, else {size}"),
            seed,
        })
    }
}

/// What `bench sim` runs.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Cache sizes, each run in turn.
    pub capacities: Vec<Capacity>,
    /// Backends, each run at each capacity.
    pub backends: Vec<Backend>,
    /// Policies of rwlock and sharded: each of those backends runs once per policy.
    pub evictions: Vec<Eviction>,
    /// moka's policy.
    pub moka_policy: MokaPolicy,
}

/// One backend with one eviction policy: a line of the report.
#[derive(Debug, Clone, Copy)]
pub struct BackendRun {
    /// The backend.
    pub backend: Backend,
    /// Its policy, when it is rwlock or sharded (moka's is [`SimOptions::moka_policy`]).
    pub eviction: Eviction,
}

impl SimOptions {
    /// Every backend with every policy it runs under, in report order.
    pub fn runs(&self) -> Vec<BackendRun> {
        let mut runs = Vec::new();
        for &backend in &self.backends {
            if backend == Backend::Moka {
                runs.push(BackendRun {
                    backend,
                    eviction: Eviction::default(),
                });
            } else {
                for &eviction in &self.evictions {
                    runs.push(BackendRun { backend, eviction });
                }
            }
        }
        runs
    }

    /// The policy name a run's rows carry.
    pub(super) fn policy_of(&self, run: BackendRun) -> String {
        match run.backend {
            Backend::Moka => self.moka_policy.to_string(),
            Backend::Rwlock | Backend::Sharded => run.eviction.to_string(),
        }
    }
}

/// How often progress is written as a plain line when stderr is not a terminal.
pub const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// A progress bar on stderr, and the thread that writes it as plain lines when stderr is not a
/// terminal.
#[derive(Debug)]
pub struct Progress {
    /// The bar the runs tick.
    pub bar: ProgressBar,
    ticker: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    /// Clears the bar, and waits for the plain-line thread to write its last line (the process
    /// may exit right after).
    pub fn finish(self) {
        self.bar.finish_and_clear();
        if let Some(ticker) = self.ticker {
            let _ = ticker.join();
        }
    }
}

/// A progress bar on stderr. indicatif draws nothing when stderr is not a terminal (CI logs,
/// `2> file`, Docker without a tty), so then a thread writes a plain line instead, when the
/// run starts, every [`PLAIN_PROGRESS_EVERY`], and when it ends.
pub fn progress_bar(len: u64, message: &str) -> Progress {
    use std::io::IsTerminal;
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} (eta {eta})",
        )
        .expect("static template"),
    );
    bar.set_message(message.to_string());
    let ticker = (!std::io::stderr().is_terminal())
        .then(|| plain_progress(&bar, PLAIN_PROGRESS_EVERY, std::io::stderr()));
    Progress { bar, ticker }
}

/// Writes `bar`'s progress to `out` as plain lines: one at once, one every `every`, and a last
/// one when the bar is finished or dropped. The thread holds only a weak reference, so it never keeps a
/// bar alive. Returns the thread, for tests to join.
pub fn plain_progress(
    bar: &ProgressBar,
    every: Duration,
    mut out: impl std::io::Write + Send + 'static,
) -> std::thread::JoinHandle<()> {
    let weak = bar.downgrade();
    let line = |bar: &ProgressBar| {
        let len = bar.length().unwrap_or(0);
        let pos = bar.position();
        let pct = if len == 0 {
            100.0
        } else {
            pos as f64 * 100.0 / len as f64
        };
        format!(
            "{}: {pos}/{len} requests ({pct:.0}%), {:.0} s",
            bar.message(),
            bar.elapsed().as_secs_f64()
        )
    };
    std::thread::spawn(move || {
        let mut last = String::new();
        let mut next = std::time::Instant::now();
        // Checked often, written seldom: the thread notices the end within 100 ms.
        let tick = every.min(Duration::from_millis(100));
        loop {
            let Some(bar) = weak.upgrade() else {
                let _ = writeln!(out, "{last} (done)");
                return;
            };
            if bar.is_finished() {
                // Not the position: finishing a bar sets it to the length, which a run cut
                // short by its time limit did not reach (the report's notes say how far it got).
                let secs = bar.elapsed().as_secs_f64();
                let _ = writeln!(out, "{}: finished after {secs:.0} s", bar.message());
                return;
            }
            if std::time::Instant::now() >= next {
                last = line(&bar);
                let _ = writeln!(out, "{last}");
                next += every;
            }
            drop(bar);
            std::thread::sleep(tick);
        }
    })
}

pub(super) fn row(
    backend: &str,
    policy: Option<String>,
    cap: Capacity,
    bytes: u64,
    c: &Counts,
) -> Row {
    Row {
        backend: backend.to_string(),
        policy,
        layout: None,
        instances: None,
        capacity: cap.to_string(),
        capacity_bytes: bytes,
        requests: c.requests,
        hits: c.hits,
        hit_ratio: c.hit_ratio(),
        byte_hit_ratio: c.byte_hit_ratio(),
        stored_bytes: Some(c.stored_bytes),
        http: None,
    }
}

/// The reference policies computed beside the backends, by report name.
pub const REFERENCES: [&str; 4] = ["lru", "opt", "s3fifo", "sieve"];

pub(super) fn reference_rows(
    trace: &Trace,
    objects: &Objects,
    cap: Capacity,
    bytes: u64,
) -> [Row; 4] {
    let (r, c, s) = (&trace.requests, &objects.charges, &trace.sizes);
    [
        row("lru", None, cap, bytes, &reference::lru(r, c, s, bytes)),
        row("opt", None, cap, bytes, &reference::belady(r, c, s, bytes)),
        row(
            "s3fifo",
            None,
            cap,
            bytes,
            &reference::s3fifo(r, c, s, bytes),
        ),
        row("sieve", None, cap, bytes, &reference::sieve(r, c, s, bytes)),
    ]
}

/// `bench sim`: every backend at every capacity, then the references (LRU, OPT, S3-FIFO,
/// SIEVE), on `input`'s trace.
///
/// Objects are keyed `/obj/<n>` (zero-padded) and charged as the store charges a synthetic
/// entry: `ENTRY_OVERHEAD + key + body`, no headers.
pub fn run_sim(input: &Input, options: &SimOptions, progress: &ProgressBar) -> Report {
    let trace = &input.trace;
    let width = id_width(trace.objects());
    let objects = Objects::new(trace, |o, _| format!("/obj/{o:0width$}"), |_| 0);
    let working_set = objects.working_set();
    let mut results = Vec::new();
    for &cap in &options.capacities {
        let bytes = cap.resolve(working_set, trace.objects());
        for run in options.runs() {
            let store = sim::build_store(
                run.backend,
                bytes,
                run.eviction,
                options.moka_policy,
                input.seed,
            );
            let counts = sim::replay(&*store, trace, &objects, progress);
            results.push(row(
                run.backend.as_str(),
                Some(options.policy_of(run)),
                cap,
                bytes,
                &counts,
            ));
        }
        results.extend(reference_rows(trace, &objects, cap, bytes));
    }
    Report {
        mode: "sim",
        workload: input.workload.clone(),
        size: input.size.clone(),
        seed: input.seed,
        requests: trace.requests.len() as u64,
        objects: trace.objects() as u64,
        working_set_bytes: working_set,
        charge_model: format!(
            "each object charged {ENTRY_OVERHEAD} + key (/obj/<n>, {} bytes) + body bytes, as the stores charge an entry without headers",
            5 + width
        ),
        opt: OPT_DESCRIPTION,
        setup: sim_setup(input, options, working_set),
        results,
        notes: Vec::new(),
    }
}

/// What each capacity means: its bytes and about how many objects of the mean charge it holds.
pub(super) fn capacity_lines(
    capacities: &[Capacity],
    working_set: u64,
    objects: usize,
) -> Vec<String> {
    let mean = working_set / objects.max(1) as u64;
    capacities
        .iter()
        .map(|&cap| {
            let bytes = cap.resolve(working_set, objects);
            let of = match cap {
                Capacity::Percent(_) => {
                    " of the working set (the charged bytes of every distinct object)"
                }
                Capacity::Bytes(_) => "",
            };
            format!(
                "capacity {cap}{of} = {} bytes, about {} objects of the mean charge ({mean} bytes)",
                bytes,
                bytes / mean.max(1)
            )
        })
        .collect()
}

fn sim_setup(input: &Input, options: &SimOptions, working_set: u64) -> Vec<String> {
    let mut lines = vec![format!(
        "every request of the trace replayed straight through each store (no sockets, one thread): a get, and on a miss an insert; {} requests per backend and capacity",
        input.trace.requests.len()
    )];
    lines.extend(capacity_lines(
        &options.capacities,
        working_set,
        input.trace.objects(),
    ));
    lines.push(format!(
        "lru, opt, s3fifo and sieve are reference policies computed on the same trace and charges; {}",
        policies(options)
    ));
    lines
}

/// Which eviction policies the backend rows ran.
pub(super) fn policies(options: &SimOptions) -> String {
    let evictions: Vec<String> = options.evictions.iter().map(|e| e.to_string()).collect();
    format!(
        "rwlock and sharded ran {} (--eviction), moka ran {}",
        evictions.join(" and "),
        options.moka_policy
    )
}

pub(super) fn http_setup(options: &HttpOptions, planned: usize) -> Vec<String> {
    let d = &options.drive;
    vec![
        format!(
            "{planned} requests over HTTP/1.1 from up to {} connections at once, each run cut at {:?}; a request taking over {:?} counts as an error",
            d.concurrency, d.time_limit, d.request_timeout
        ),
        format!(
            "for each backend and capacity a fresh `cachet origin` (latency {:?} per response) and a fresh proxy, both on 127.0.0.1",
            options.origin_latency
        ),
        "hit and hit+coal are what the client read in Cache-Status; sim hit, and the lru, opt, s3fifo and sieve rows, are replays of the same requests without sockets".into(),
        policies(&options.sim),
    ]
}

/// What `bench http` runs, beyond the backends and capacities.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Backends, capacities and moka's policy.
    pub sim: SimOptions,
    /// Concurrency and limits.
    pub drive: DriveOptions,
    /// The origin's delay before each response.
    pub origin_latency: Duration,
    /// Drive this running proxy instead of starting origin and proxies.
    pub target: Option<Uri>,
    /// Run each backend as a fleet sharing a tier, beside one big instance and isolated ones
    /// (`--instances N --shared URL`) instead of as one proxy.
    pub fleet: Option<FleetOptions>,
}

fn percentile_ms(drive: &http::Drive, q: f64) -> f64 {
    drive.latency_us.value_at_quantile(q) as f64 / 1000.0
}

pub(super) fn http_fields(
    drive: &http::Drive,
    upstream: Option<u64>,
    sim: Option<f64>,
) -> HttpFields {
    let c = &drive.counts;
    HttpFields {
        coalesced: c.coalesced,
        shared_hits: None,
        hit_ratio_with_coalesced: ratio(c.hits + c.coalesced, c.requests),
        misses: c.misses,
        errors: c.errors,
        upstream_requests: upstream,
        upstream_saved_by_coalescing: c.coalesced,
        throughput_rps: c.requests as f64 / drive.elapsed.as_secs_f64().max(1e-9),
        p50_ms: percentile_ms(drive, 0.5),
        p90_ms: percentile_ms(drive, 0.9),
        p99_ms: percentile_ms(drive, 0.99),
        p999_ms: percentile_ms(drive, 0.999),
        elapsed_s: drive.elapsed.as_secs_f64(),
        sim_hit_ratio: sim,
    }
}

pub(super) fn http_row(
    backend: &str,
    policy: Option<String>,
    cap: Capacity,
    bytes: u64,
    drive: &http::Drive,
    stored: Option<u64>,
    fields: HttpFields,
) -> Row {
    let c = &drive.counts;
    Row {
        backend: backend.to_string(),
        policy,
        layout: None,
        instances: None,
        capacity: cap.to_string(),
        capacity_bytes: bytes,
        requests: c.requests,
        hits: c.hits,
        hit_ratio: ratio(c.hits, c.requests),
        byte_hit_ratio: ratio(c.hit_bytes, c.bytes),
        stored_bytes: stored,
        http: Some(fields),
    }
}

/// Notes for whatever a reader of an http row must know: errors, unclassified answers, a run cut
/// by the time limit, and an origin count that does not match the misses.
pub(super) fn http_notes(
    name: &str,
    cap: &str,
    drive: &http::Drive,
    planned: usize,
    upstream: Option<u64>,
) -> Vec<String> {
    let c = &drive.counts;
    let mut notes = Vec::new();
    if drive.sent < planned {
        notes.push(format!(
            "{name} at {cap}: the time limit stopped the run after {} of {planned} requests; its sim and reference figures use the same {} requests",
            drive.sent, drive.sent
        ));
    }
    if c.errors > 0 {
        notes.push(format!(
            "{name} at {cap}: {} requests failed or got a non-2xx answer",
            c.errors
        ));
    }
    if c.unknown > 0 {
        notes.push(format!(
            "{name} at {cap}: {} answers carried no Cache-Status of cachet",
            c.unknown
        ));
    }
    if let Some(u) = upstream {
        if u != c.misses {
            notes.push(format!(
                "{name} at {cap}: the origin counted {u} requests but the client saw {} misses",
                c.misses
            ));
        }
    }
    notes
}

/// `bench http`: for each capacity and backend, a fresh origin and proxy on loopback, driven by
/// the trace; beside each, the replay of the same requests through the same backend and
/// capacity; after each capacity, LRU and OPT.
///
/// Objects are charged as the proxy charges them: `ENTRY_OVERHEAD` + the key it stores
/// (`http://127.0.0.1:<port>/obj/<n>?size=<bytes>`) + the response headers it keeps (measured
/// once by [`http::probe_header_bytes`]) + the body. The replay pads synthetic entries by the
/// same header bytes, so at one capacity both hold the same objects.
pub async fn run_http(
    input: &Input,
    options: &HttpOptions,
    progress: &ProgressBar,
) -> Result<Report, HttpBenchError> {
    if let Some(fleet) = &options.fleet {
        return fleet::run(input, options, fleet, progress).await;
    }
    let trace = Arc::new(input.trace.clone());
    let planned = trace.requests.len();
    let width = id_width(trace.objects());
    let mut results = Vec::new();
    let mut notes = Vec::new();

    if let Some(target) = &options.target {
        let base = target.to_string().trim_end_matches('/').to_string();
        let uris = Arc::new(http::object_uris(&base, &trace)?);
        let drive = http::drive(Arc::clone(&trace), uris, options.drive, progress).await;
        let cap = Capacity::Bytes(0);
        notes.extend(http_notes(
            "target",
            "unknown capacity",
            &drive,
            planned,
            None,
        ));
        notes.push(format!(
            "driving {base}: its backend and capacity are unknown here, and its origin's count cannot be read; no sim or reference rows"
        ));
        let fields = http_fields(&drive, None, None);
        let mut row = http_row("target", None, cap, 0, &drive, None, fields);
        row.capacity = "unknown".into();
        results.push(row);
        let objects = Objects::new(&trace, |o, s| object_path(o, s, width), |_| 0);
        return Ok(Report {
            mode: "http",
            workload: input.workload.clone(),
            size: input.size.clone(),
            seed: input.seed,
            requests: planned as u64,
            objects: trace.objects() as u64,
            working_set_bytes: objects.working_set(),
            charge_model: "unknown: a --target proxy's store is not visible".into(),
            opt: OPT_DESCRIPTION,
            setup: {
                let mut lines = http_setup(options, planned);
                // The first line only: no origin or proxy of ours in this mode.
                lines.truncate(1);
                lines.push(format!(
                    "drove {base}: its backend, capacity and origin are not visible from here"
                ));
                lines
            },
            results,
            notes,
        });
    }

    let probe_size = trace.sizes.first().copied().unwrap_or(1);
    let header_base = http::probe_header_bytes(options.origin_latency, probe_size).await?;
    let headers = move |size: u64| header_base + digits(size);
    let keyed = |authority: &str| {
        let authority = authority.to_string();
        Objects::new(
            &trace,
            move |o, s| format!("http://{authority}{}", object_path(o, s, width)),
            headers,
        )
    };
    // The working set with a loopback authority of typical length; each backend's replay below
    // uses the key its own proxy stored, to the byte.
    let typical = keyed("127.0.0.1:40000");
    let working_set = typical.working_set();

    for &cap in &options.sim.capacities {
        let bytes = cap.resolve(working_set, trace.objects());
        let mut shortest = planned;
        for run in options.sim.runs() {
            let backend = run.backend;
            let origin = http::start_origin(options.origin_latency).await?;
            let proxy = http::start_proxy(
                origin.origin.addr,
                backend,
                run.eviction,
                options.sim.moka_policy,
                bytes,
            )
            .await?;
            let base = format!("http://{}", proxy.addr);
            let uris = Arc::new(http::object_uris(&base, &trace)?);
            progress.set_message(format!("http {backend} @ {cap}"));
            let drive = http::drive(Arc::clone(&trace), uris, options.drive, progress).await;
            let stored = proxy.store().weighted_size();
            let upstream = origin.origin.stats.requests();
            proxy.shutdown().await;
            drop(origin);

            // The same requests through the same backend and capacity, without sockets.
            let done = trace.prefix(drive.sent);
            let objects = keyed(&proxy_authority(&base));
            let store = sim::build_store(
                backend,
                bytes,
                run.eviction,
                options.sim.moka_policy,
                input.seed,
            );
            let simulated = sim::replay(&*store, &done, &objects, &ProgressBar::hidden());

            shortest = shortest.min(drive.sent);
            let name = backend.as_str();
            notes.extend(http_notes(
                name,
                &cap.to_string(),
                &drive,
                planned,
                Some(upstream),
            ));
            let fields = http_fields(&drive, Some(upstream), Some(simulated.hit_ratio()));
            results.push(http_row(
                name,
                Some(options.sim.policy_of(run)),
                cap,
                bytes,
                &drive,
                Some(stored),
                fields,
            ));
        }
        let done = trace.prefix(shortest);
        results.extend(reference_rows(&done, &typical, cap, bytes));
    }
    Ok(Report {
        mode: "http",
        workload: input.workload.clone(),
        size: input.size.clone(),
        seed: input.seed,
        requests: planned as u64,
        objects: trace.objects() as u64,
        working_set_bytes: working_set,
        charge_model: format!(
            "each object charged as the proxy stores it: {ENTRY_OVERHEAD} + key (http://127.0.0.1:<port>/obj/<n>?size=<bytes>) + {header_base} bytes of response headers + Content-Length digits + body"
        ),
        opt: OPT_DESCRIPTION,
        setup: {
            let mut lines = http_setup(options, planned);
            lines.extend(capacity_lines(&options.sim.capacities, working_set, trace.objects()));
            lines
        },
        results,
        notes,
    })
}

fn proxy_authority(base: &str) -> String {
    base.trim_start_matches("http://").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_report_has_a_row_per_backend_and_reference_per_capacity() {
        let input = Input::generate(
            Workload::Zipf { alpha: 1.0 },
            500,
            5000,
            SizeSpec::Fixed(100),
            1,
        );
        let options = SimOptions {
            capacities: vec![Capacity::Percent(10.0), Capacity::Percent(50.0)],
            backends: Backend::ALL.to_vec(),
            evictions: vec![Eviction::Adaptive],
            moka_policy: MokaPolicy::Tinylfu,
        };
        let report = run_sim(&input, &options, &ProgressBar::hidden());
        assert_eq!(report.results.len(), 2 * 7);
        let names: Vec<&str> = report.results[..7]
            .iter()
            .map(|r| r.backend.as_str())
            .collect();
        assert_eq!(
            names,
            ["rwlock", "sharded", "moka", "lru", "opt", "s3fifo", "sieve"]
        );
        let policies: Vec<Option<&str>> = report.results[..7]
            .iter()
            .map(|r| r.policy.as_deref())
            .collect();
        assert_eq!(
            policies,
            [
                Some("adaptive"),
                Some("adaptive"),
                Some("tinylfu"),
                None,
                None,
                None,
                None
            ]
        );
        for r in &report.results {
            assert_eq!(r.requests, 5000);
            assert!(r.stored_bytes.unwrap() <= r.capacity_bytes, "{r:?}");
        }
        // The report says what it ran: the replay, what each capacity is, which rows are
        // references.
        let setup = report.setup.join("\n");
        assert!(
            setup.contains("5000 requests per backend and capacity"),
            "{setup}"
        );
        assert!(
            setup.contains("capacity 10% of the working set") && setup.contains("capacity 50%"),
            "{setup}"
        );
        assert!(
            setup.contains("ran adaptive (--eviction), moka ran tinylfu"),
            "{setup}"
        );
        assert!(report.table().contains("ran: capacity 10%"));
        // More room never hurts LRU and OPT (S3-FIFO and SIEVE are not stack algorithms).
        assert!(report.results[10].hits >= report.results[3].hits);
        assert!(report.results[11].hits >= report.results[4].hits);
    }

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Shared(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn without_a_terminal_progress_is_written_as_plain_lines() {
        use indicatif::ProgressDrawTarget;
        let bar = ProgressBar::with_draw_target(Some(100), ProgressDrawTarget::hidden());
        bar.set_message("sim");
        let out = Shared::default();
        // An interval no test outlives: what is written is the opening line and the final one.
        let ticker = plain_progress(&bar, Duration::from_secs(3600), out.clone());
        while out.text().is_empty() {
            std::thread::yield_now();
        }
        bar.inc(40);
        bar.finish_and_clear();
        ticker.join().unwrap();
        let text = out.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with("sim: 0/100 requests (0%), "), "{text}");
        assert!(lines[1].starts_with("sim: finished after "), "{text}");

        // A bar dropped unfinished ends the thread too, with the last line it wrote.
        let bar = ProgressBar::with_draw_target(Some(10), ProgressDrawTarget::hidden());
        bar.set_message("http moka @ 10%");
        let out = Shared::default();
        let ticker = plain_progress(&bar, Duration::from_secs(3600), out.clone());
        while out.text().is_empty() {
            std::thread::yield_now();
        }
        drop(bar);
        ticker.join().unwrap();
        let text = out.text();
        assert!(
            text.starts_with("http moka @ 10%: 0/10 requests (0%)"),
            "{text}"
        );
        assert!(text.trim_end().ends_with("(done)"), "{text}");
    }
}

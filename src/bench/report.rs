//! What a run prints: a table for people, JSON and CSV for scripts.
//!
//! The JSON shape is part of the interface (scripts depend on it):
//! `{"workload": ..., "results": [{"backend", "capacity_bytes", "hit_ratio", "byte_hit_ratio",
//! ...}]}`; rows of `bench http` add `throughput_rps`, `p50_ms`, `p99_ms`, `p999_ms` and
//! `upstream_requests`; rows of `bench http --instances N` add `layout` (`fleet`, `one-big`,
//! `isolated`), `instances` and `shared_hits`. Fields that do not apply to a row are left out,
//! not set to null.

use std::fmt::Write as _;

use serde::Serialize;

use crate::units::format_size;

/// One line of results: one policy (a backend, or the LRU / OPT reference) at one capacity.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Row {
    /// `rwlock`, `sharded`, `moka`; a reference policy computed on the same trace: `lru`
    /// (exact), `opt` (Belady), `s3fifo`, `sieve`; or `target` for a proxy driven with
    /// `--target`.
    pub backend: String,
    /// The backend's eviction policy (`tinylfu` or `clock` for rwlock and sharded, `tinylfu`
    /// or `lru` for moka); absent on reference rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// With `--instances`: which set-up the row measured: `fleet` (instances sharing the tier),
    /// `one-big` (one instance with their memory together) or `isolated` (instances on their
    /// own); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layout: Option<String>,
    /// With `--instances`: how many instances the set-up ran (1 for `one-big`, and on the
    /// reference rows beside them, which are one cache of the same total capacity).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instances: Option<u64>,
    /// The capacity as the user gave it (`10%`, `64MiB`; `3x10%` for one instance with the
    /// capacity of three).
    pub capacity: String,
    /// The capacity in bytes, as every backend charges entries; of each instance when the row
    /// ran several.
    pub capacity_bytes: u64,
    /// Requests counted.
    pub requests: u64,
    /// Requests served from the cache (on http rows: `Cache-Status` says `hit`).
    pub hits: u64,
    /// `hits / requests`.
    pub hit_ratio: f64,
    /// Body bytes served from the cache over body bytes requested.
    pub byte_hit_ratio: f64,
    /// Bytes held at the end of the run (by all of the set-up's instances together).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stored_bytes: Option<u64>,
    /// The http measurements, on `bench http` rows of a backend.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpFields>,
}

impl Row {
    /// What the table and the plot call the row: the backend, with its policy when that is not
    /// the backend's default (`rwlock(clock)`, `moka(lru)`).
    pub fn name(&self) -> String {
        match &self.policy {
            Some(p) if p != "tinylfu" && p != "adaptive" => format!("{}({p})", self.backend),
            _ => self.backend.clone(),
        }
    }

    /// The capacity of all of the row's instances together.
    pub fn total_capacity_bytes(&self) -> u64 {
        self.capacity_bytes
            .saturating_mul(self.instances.unwrap_or(1))
    }

    /// What the table calls the row's set-up: `fleet x3`, `one big`, `isolated x3`.
    pub fn layout_label(&self) -> Option<String> {
        let layout = self.layout.as_deref()?;
        let n = self.instances.unwrap_or(1);
        Some(match layout {
            "one-big" => "one big".to_string(),
            other => format!("{other} x{n}"),
        })
    }
}

/// The columns only a run over real HTTP has.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct HttpFields {
    /// Responses served from another request's in-flight fetch (`Cache-Status: ...; collapsed`).
    pub coalesced: u64,
    /// `(hits + coalesced) / requests`: the share of requests that caused no upstream request.
    /// This is the figure comparable with `bench sim`, where a second request for an object
    /// being fetched is simply a hit.
    pub hit_ratio_with_coalesced: f64,
    /// With `--instances`: of the hits, those the shared tier answered
    /// (`Cache-Status: cachet; hit; ...; detail=shared`); 0 on set-ups without a tier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared_hits: Option<u64>,
    /// Responses that went upstream themselves (`fwd=` without `collapsed`).
    pub misses: u64,
    /// Requests that failed or got a non-2xx answer.
    pub errors: u64,
    /// Requests the origin counted (absent when driving a `--target`, whose origin we cannot
    /// see).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_requests: Option<u64>,
    /// Upstream requests coalescing saved: the coalesced responses.
    pub upstream_saved_by_coalescing: u64,
    /// Completed requests per second.
    pub throughput_rps: f64,
    /// Latency percentiles, milliseconds, from request sent to last body byte.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Wall time of the run, seconds.
    pub elapsed_s: f64,
    /// The hit ratio `bench sim` measures for the same backend, capacity and requests (absent
    /// for `--target`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sim_hit_ratio: Option<f64>,
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `sim` or `http`.
    pub mode: &'static str,
    /// The workload (`zipf:1`) or the trace file replayed.
    pub workload: String,
    /// The object sizes (`4KiB`, `lognormal:16KiB,1`, or `trace`).
    pub size: String,
    /// The seed of the generator.
    pub seed: u64,
    /// Requests in the trace.
    pub requests: u64,
    /// Distinct objects in the trace.
    pub objects: u64,
    /// Charged bytes of all distinct objects; what percentage capacities are relative to.
    pub working_set_bytes: u64,
    /// How objects are charged, so a reader can tell which bytes the capacity counts.
    pub charge_model: String,
    /// Which OPT the `opt` rows are.
    pub opt: &'static str,
    /// What was run, in words: how requests were made, what each capacity means, which rows
    /// are measured and which are simulated.
    pub setup: Vec<String>,
    /// The rows.
    pub results: Vec<Row>,
    /// Warnings a reader should see beside the numbers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

fn pct(r: f64) -> String {
    format!("{:.2}%", r * 100.0)
}

impl Report {
    /// The table a person reads: one line per policy and capacity.
    pub fn table(&self) -> String {
        let http = self.results.iter().any(|r| r.http.is_some());
        let layouts = self.results.iter().any(|r| r.layout.is_some());
        let shared = self
            .results
            .iter()
            .any(|r| r.http.as_ref().is_some_and(|h| h.shared_hits.is_some()));
        let mut header: Vec<&str> = vec!["backend"];
        if layouts {
            header.push("set-up");
        }
        header.extend(["capacity", "hit", "byte hit"]);
        if shared {
            header.push("shared");
        }
        if http {
            header.extend([
                "hit+coal",
                "sim hit",
                "coalesced",
                "misses",
                "upstream",
                "errors",
                "req/s",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "p99.9 ms",
            ]);
        } else {
            header.push("stored");
        }
        let mut lines: Vec<Vec<String>> = Vec::new();
        for r in &self.results {
            let name = r.name();
            let mut line = vec![name];
            if layouts {
                line.push(r.layout_label().unwrap_or_else(|| "-".into()));
            }
            line.extend([
                // A --target proxy's capacity is not known: its row has 0 bytes.
                if r.capacity_bytes == 0 {
                    r.capacity.clone()
                } else {
                    format!("{} ({})", r.capacity, format_size(r.capacity_bytes))
                },
                pct(r.hit_ratio),
                pct(r.byte_hit_ratio),
            ]);
            if shared {
                line.push(
                    r.http
                        .as_ref()
                        .and_then(|h| h.shared_hits)
                        .map_or("-".into(), |n| n.to_string()),
                );
            }
            if http {
                match &r.http {
                    Some(h) => line.extend([
                        pct(h.hit_ratio_with_coalesced),
                        h.sim_hit_ratio.map_or("-".into(), pct),
                        h.coalesced.to_string(),
                        h.misses.to_string(),
                        h.upstream_requests.map_or("-".into(), |u| u.to_string()),
                        h.errors.to_string(),
                        format!("{:.0}", h.throughput_rps),
                        format!("{:.2}", h.p50_ms),
                        format!("{:.2}", h.p90_ms),
                        format!("{:.2}", h.p99_ms),
                        format!("{:.2}", h.p999_ms),
                    ]),
                    None => line.extend(std::iter::repeat_n("-".to_string(), 11)),
                }
            } else {
                line.push(r.stored_bytes.map_or("-".into(), format_size));
            }
            lines.push(line);
        }
        let widths: Vec<usize> = (0..header.len())
            .map(|c| {
                lines
                    .iter()
                    .map(|l| l[c].len())
                    .chain([header[c].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} {} | {} | {} requests, {} objects, working set {} | seed {}",
            self.mode,
            self.workload,
            self.size,
            self.requests,
            self.objects,
            format_size(self.working_set_bytes),
            self.seed
        );
        for line in &self.setup {
            let _ = writeln!(out, "ran: {line}");
        }
        let render = |cells: &[String], out: &mut String| {
            let mut s = String::new();
            for (c, cell) in cells.iter().enumerate() {
                if c == 0 {
                    let _ = write!(s, "{cell:<w$}", w = widths[c]);
                } else {
                    let _ = write!(s, "  {cell:>w$}", w = widths[c]);
                }
            }
            let _ = writeln!(out, "{}", s.trim_end());
        };
        let header: Vec<String> = header.iter().map(|s| s.to_string()).collect();
        render(&header, &mut out);
        // A blank line between capacities; with --instances, between the set-ups of one backend
        // and the next (its three rows have one total capacity).
        let group = |r: &Row| {
            let backend = r.layout.is_some().then(|| r.name());
            (r.total_capacity_bytes(), backend)
        };
        let mut last_group = None;
        for (r, line) in self.results.iter().zip(&lines) {
            let g = group(r);
            if last_group.as_ref().is_some_and(|l| *l != g) {
                out.push('\n');
            }
            last_group = Some(g);
            render(line, &mut out);
        }
        let _ = writeln!(out, "\nopt = {}", self.opt);
        let _ = writeln!(out, "charge = {}", self.charge_model);
        if http {
            let _ = writeln!(
                out,
                "hit = Cache-Status hit; hit+coal also counts responses collapsed into another \
                 request's fetch (comparable with sim hit); misses = fwd without collapsed; \
                 upstream = requests the origin counted"
            );
        }
        if shared {
            let _ = writeln!(
                out,
                "shared = hits the shared tier answered (Cache-Status detail=shared), counted in \
                 hit too; capacity is each instance's"
            );
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        out
    }

    /// The JSON document.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("plain data serialises")
    }

    /// CSV with a header line; empty cells where a column does not apply.
    pub fn csv(&self) -> String {
        let mut out = String::from(
            "backend,policy,capacity,capacity_bytes,requests,hits,hit_ratio,byte_hit_ratio,\
             stored_bytes,coalesced,hit_ratio_with_coalesced,misses,errors,upstream_requests,\
             throughput_rps,p50_ms,p90_ms,p99_ms,p999_ms,sim_hit_ratio,layout,instances,\
             shared_hits\n",
        );
        let opt = |v: Option<String>| v.unwrap_or_default();
        for r in &self.results {
            let h = r.http.as_ref();
            let fields = [
                r.backend.clone(),
                opt(r.policy.clone()),
                r.capacity.clone(),
                r.capacity_bytes.to_string(),
                r.requests.to_string(),
                r.hits.to_string(),
                format!("{:.6}", r.hit_ratio),
                format!("{:.6}", r.byte_hit_ratio),
                opt(r.stored_bytes.map(|b| b.to_string())),
                opt(h.map(|h| h.coalesced.to_string())),
                opt(h.map(|h| format!("{:.6}", h.hit_ratio_with_coalesced))),
                opt(h.map(|h| h.misses.to_string())),
                opt(h.map(|h| h.errors.to_string())),
                opt(h.and_then(|h| h.upstream_requests).map(|u| u.to_string())),
                opt(h.map(|h| format!("{:.1}", h.throughput_rps))),
                opt(h.map(|h| format!("{:.3}", h.p50_ms))),
                opt(h.map(|h| format!("{:.3}", h.p90_ms))),
                opt(h.map(|h| format!("{:.3}", h.p99_ms))),
                opt(h.map(|h| format!("{:.3}", h.p999_ms))),
                opt(h.and_then(|h| h.sim_hit_ratio).map(|s| format!("{s:.6}"))),
                opt(r.layout.clone()),
                opt(r.instances.map(|n| n.to_string())),
                opt(h.and_then(|h| h.shared_hits).map(|n| n.to_string())),
            ];
            // Capacities like "10%", backend and layout names never hold commas or quotes.
            out.push_str(&fields.join(","));
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        Report {
            mode: "http",
            workload: "zipf:1".into(),
            size: "4KiB".into(),
            seed: 1,
            requests: 10,
            objects: 5,
            working_set_bytes: 5000,
            charge_model: "test".into(),
            opt: "belady",
            setup: vec!["origin latency 20ms".into()],
            results: vec![
                Row {
                    backend: "moka".into(),
                    policy: Some("tinylfu".into()),
                    layout: None,
                    instances: None,
                    capacity: "10%".into(),
                    capacity_bytes: 500,
                    requests: 10,
                    hits: 4,
                    hit_ratio: 0.4,
                    byte_hit_ratio: 0.4,
                    stored_bytes: Some(480),
                    http: Some(HttpFields {
                        coalesced: 1,
                        hit_ratio_with_coalesced: 0.5,
                        misses: 5,
                        upstream_requests: Some(5),
                        throughput_rps: 100.0,
                        p99_ms: 3.0,
                        sim_hit_ratio: Some(0.5),
                        ..Default::default()
                    }),
                },
                Row {
                    backend: "opt".into(),
                    capacity: "10%".into(),
                    capacity_bytes: 500,
                    requests: 10,
                    hits: 6,
                    hit_ratio: 0.6,
                    byte_hit_ratio: 0.6,
                    ..Default::default()
                },
            ],
            notes: vec![],
        }
    }

    #[test]
    fn the_table_says_what_was_run() {
        let table = report().table();
        let lines: Vec<&str> = table.lines().collect();
        // Right under the title line, before the rows.
        assert_eq!(lines[1], "ran: origin latency 20ms", "{table}");
        assert!(report().json().contains("\"setup\""));
    }

    #[test]
    fn json_has_the_documented_shape() {
        let v: serde_json::Value = serde_json::from_str(&report().json()).unwrap();
        assert_eq!(v["workload"], "zipf:1");
        let rows = v["results"].as_array().unwrap();
        assert_eq!(rows[0]["backend"], "moka");
        assert_eq!(rows[0]["capacity_bytes"], 500);
        assert_eq!(rows[0]["hit_ratio"], 0.4);
        assert_eq!(rows[0]["byte_hit_ratio"], 0.4);
        // http fields are flattened into the row.
        assert_eq!(rows[0]["upstream_requests"], 5);
        assert_eq!(rows[0]["throughput_rps"], 100.0);
        assert_eq!(rows[0]["p99_ms"], 3.0);
        for f in ["p50_ms", "p999_ms"] {
            assert!(rows[0][f].is_number(), "{f}");
        }
        // Reference rows carry no http fields at all.
        assert_eq!(rows[1]["backend"], "opt");
        assert!(rows[1].get("throughput_rps").is_none());
        assert!(rows[1].get("policy").is_none());
    }

    #[test]
    fn csv_and_table_have_a_line_per_row() {
        let r = report();
        let csv = r.csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 3);
        let columns = lines[0].split(',').count();
        assert!(lines.iter().all(|l| l.split(',').count() == columns));
        assert!(lines[1].starts_with("moka,tinylfu,10%,500,10,4,0.400000"));
        let table = r.table();
        assert!(table.contains("moka") && table.contains("40.00%") && table.contains("60.00%"));
    }

    #[test]
    fn fleet_rows_name_their_set_up_and_shared_hits() {
        let mut r = report();
        let fleet_row =
            |layout: &str, instances: u64, capacity: &str, bytes: u64, shared: u64| Row {
                backend: "moka".into(),
                policy: Some("tinylfu".into()),
                layout: Some(layout.into()),
                instances: Some(instances),
                capacity: capacity.into(),
                capacity_bytes: bytes,
                requests: 10,
                hits: 5,
                hit_ratio: 0.5,
                byte_hit_ratio: 0.5,
                stored_bytes: Some(bytes),
                http: Some(HttpFields {
                    shared_hits: Some(shared),
                    ..Default::default()
                }),
            };
        r.results = vec![
            fleet_row("fleet", 3, "10%", 500, 4),
            fleet_row("one-big", 1, "3x10%", 1500, 0),
            fleet_row("isolated", 3, "10%", 500, 0),
        ];
        let table = r.table();
        let lines: Vec<&str> = table.lines().collect();
        let header = lines.iter().position(|l| l.starts_with("backend")).unwrap();
        assert!(lines[header].contains("set-up") && lines[header].contains("shared"));
        // One group: the three set-ups have one total capacity.
        assert!(lines[header + 1].contains("fleet x3"), "{table}");
        assert!(lines[header + 2].contains("one big"), "{table}");
        assert!(lines[header + 2].contains("3x10%"), "{table}");
        assert!(lines[header + 3].contains("isolated x3"), "{table}");
        let v: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(v["results"][0]["layout"], "fleet");
        assert_eq!(v["results"][0]["instances"], 3);
        assert_eq!(v["results"][0]["shared_hits"], 4);
        assert_eq!(v["results"][1]["layout"], "one-big");
        // Rows without --instances carry none of it.
        let plain: serde_json::Value = serde_json::from_str(&report().json()).unwrap();
        assert!(plain["results"][0].get("layout").is_none());
        assert!(plain["results"][0].get("shared_hits").is_none());
        assert!(!report().table().contains("set-up"));
        let csv = r.csv();
        assert!(csv.lines().nth(1).unwrap().ends_with(",fleet,3,4"), "{csv}");
    }
}

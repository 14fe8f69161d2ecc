//! `--plot FILE.svg`: hit ratio against cache size, one line per backend plus LRU and OPT.
//!
//! plotters' SVG backend writes text as SVG `<text>` elements, so no font files or system
//! libraries are needed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::report::Report;

/// The plot could not be drawn or written.
#[derive(Debug, thiserror::Error)]
#[error("writing plot {path}: {reason}")]
pub struct PlotError {
    /// The file asked for.
    pub path: PathBuf,
    /// What went wrong.
    pub reason: String,
}

/// One colour per series, fixed so that a backend keeps its colour across plots.
fn colour(name: &str) -> RGBColor {
    // The set-ups of `--instances`, named `<backend> <set-up>`.
    if name.contains(" fleet") {
        return RGBColor(214, 39, 40);
    } else if name.contains(" one big") {
        return RGBColor(148, 103, 189);
    } else if name.contains(" isolated") {
        return RGBColor(140, 86, 75);
    }
    match name {
        "rwlock" => RGBColor(31, 119, 180),
        "sharded" => RGBColor(255, 127, 14),
        "moka" => RGBColor(44, 160, 44),
        "moka(lru)" => RGBColor(148, 103, 189),
        "rwlock(clock)" | "sharded(clock)" => RGBColor(140, 86, 75),
        "lru" => RGBColor(127, 127, 127),
        "opt" => RGBColor(0, 0, 0),
        "s3fifo" => RGBColor(188, 189, 34),
        "sieve" => RGBColor(23, 190, 207),
        _ => RGBColor(214, 39, 40),
    }
}

/// Draws the report's rows to an SVG file: x is the capacity as a percentage of the working set,
/// y the hit ratio in percent. With one capacity each series is a single marked point.
pub fn write_svg(report: &Report, path: &Path) -> Result<(), PlotError> {
    let fail = |reason: String| PlotError {
        path: path.to_path_buf(),
        reason,
    };
    let ws = report.working_set_bytes.max(1) as f64;
    // Series name → points (capacity % of working set, hit ratio %), ordered by capacity.
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for r in &report.results {
        // With --instances, one series per set-up, placed at the memory of all its instances.
        let name = match r.layout_label() {
            Some(layout) => format!("{} {layout}", r.name()),
            None => r.name(),
        };
        // On http rows, the hit ratio that counts coalesced responses is the one comparable with
        // the references (a request that made no upstream request of its own).
        let y = r
            .http
            .as_ref()
            .map_or(r.hit_ratio, |h| h.hit_ratio_with_coalesced);
        series
            .entry(name)
            .or_default()
            .push((r.total_capacity_bytes() as f64 / ws * 100.0, y * 100.0));
    }
    for points in series.values_mut() {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let x_max = series
        .values()
        .flatten()
        .map(|p| p.0)
        .fold(1.0f64, f64::max)
        * 1.05;
    let y_max = (series
        .values()
        .flatten()
        .map(|p| p.1)
        .fold(0.0f64, f64::max)
        * 1.1)
        .clamp(10.0, 100.0);

    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let title = format!(
        "{} | {} | {} requests, {} objects",
        report.workload, report.size, report.requests, report.objects
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(|e| fail(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc(if report.results.iter().any(|r| r.layout.is_some()) {
            "cache size of all instances together, % of working set"
        } else {
            "cache size, % of working set"
        })
        .y_desc(if report.mode == "http" {
            "hit ratio % (incl. coalesced)"
        } else {
            "hit ratio %"
        })
        .draw()
        .map_err(|e| fail(e.to_string()))?;

    // References first, so the backends are drawn on top of them.
    let mut names: Vec<&String> = series.keys().collect();
    names.sort_by_key(|n| (!is_reference(n), n.as_str()));
    for name in names {
        let points = &series[name];
        let c = colour(name);
        let style = if is_reference(name) {
            c.stroke_width(2)
        } else {
            c.stroke_width(3)
        };
        chart
            .draw_series(LineSeries::new(points.iter().copied(), style))
            .map_err(|e| fail(e.to_string()))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3)));
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 4, c.filled())))
            .map_err(|e| fail(e.to_string()))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| fail(e.to_string()))?;
    root.present().map_err(|e| fail(e.to_string()))?;
    Ok(())
}

/// Reference policies are drawn thinner and first, under the backends.
fn is_reference(name: &str) -> bool {
    matches!(name, "opt" | "lru" | "s3fifo" | "sieve")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::Row;

    #[test]
    fn writes_an_svg_with_a_line_per_series() {
        let mut results = Vec::new();
        for (backend, base) in [("moka", 0.5), ("lru", 0.4), ("opt", 0.7)] {
            for (i, cap) in [100u64, 200, 400].iter().enumerate() {
                results.push(Row {
                    backend: backend.into(),
                    capacity: format!("{cap}B"),
                    capacity_bytes: *cap,
                    hit_ratio: base + i as f64 * 0.05,
                    ..Default::default()
                });
            }
        }
        let report = Report {
            mode: "sim",
            workload: "zipf:1".into(),
            size: "4KiB".into(),
            seed: 1,
            requests: 100,
            objects: 10,
            working_set_bytes: 1000,
            charge_model: String::new(),
            opt: "",
            setup: vec![],
            results,
            notes: vec![],
        };
        let path = std::env::temp_dir().join(format!("cachet-plot-{}.svg", std::process::id()));
        write_svg(&report, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"));
        for name in ["moka", "lru", "opt", "% of working set"] {
            assert!(svg.contains(name), "{name} missing");
        }
        assert!(svg.matches("<polyline").count() >= 3);
        let _ = std::fs::remove_file(&path);
    }
}

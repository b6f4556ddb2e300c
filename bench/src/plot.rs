//! The report's SVG plots (plotters, SVG backend): throughput against p99
//! latency for the stream and Flight scenarios, and the cost per billion
//! events of roo beside the peers.

use std::path::Path;

use anyhow::Result;
use plotters::prelude::*;

use crate::report::{Measurement, Report};

/// The series a measurement belongs to: its name up to the last comma
/// (`roo, tcp -> score -> file, 50% of peak` → `roo, tcp -> score -> file`).
fn series_of(m: &Measurement) -> String {
    match m.name.rsplit_once(", ") {
        Some((head, _)) if m.roo || m.name.contains("batch ") => head.to_string(),
        _ => m.name.clone(),
    }
}

/// A point's label: what varies along its series (`50% of peak`, `batch 64`).
fn point_label(m: &Measurement) -> String {
    match m.name.rsplit_once(", ") {
        Some((_, tail)) if m.roo || m.name.contains("batch ") => {
            tail.replace("batch ", "b=").replace(" of peak", "")
        }
        _ => String::new(),
    }
}

/// events/s against p99 latency, log-log: one line per series, from the
/// pipeline (offered loads, in order of rate) and Flight (batch sizes, in
/// order of size) scenarios; each point labelled.
pub fn throughput_latency(report: &Report, path: &Path) -> Result<()> {
    type Point = (f64, f64, String);
    let mut series: Vec<(String, Vec<Point>)> = Vec::new();
    for scenario in ["pipeline", "flight"] {
        let Some(sec) = report.section(scenario) else {
            continue;
        };
        for m in &sec.measurements {
            let Some(l) = m.latency else { continue };
            if !(m.events_per_s > 0.0 && l.p99_ms > 0.0) {
                continue;
            }
            let key = format!("{scenario}: {}", series_of(m));
            let point = (m.events_per_s, l.p99_ms, point_label(m));
            match series.iter_mut().find(|(k, _)| *k == key) {
                Some((_, points)) => points.push(point),
                None => series.push((key, vec![point])),
            }
        }
    }
    for (key, points) in &mut series {
        if key.starts_with("pipeline") {
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
    }
    let all = series.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y, _) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if series.is_empty() {
        (x0, x1, y0, y1) = (1.0, 10.0, 1.0, 10.0);
    }
    let root = SVGBackend::new(path, (1000, 640)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Throughput against p99 latency (stream: offered loads; Flight: batch sizes)",
            ("sans-serif", 20),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(
            (x0 / 1.5..x1 * 1.5).log_scale(),
            (y0 / 1.5..y1 * 1.5).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("events/s (log)")
        .y_desc("p99 latency, ms (log)")
        .x_label_formatter(&|v| crate::report::rate(*v))
        .draw()?;
    for (i, (name, points)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.0, p.1)),
                color.stroke_width(2),
            ))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(
            points
                .iter()
                .map(|p| Circle::new((p.0, p.1), 4, color.filled())),
        )?;
        chart.draw_series(points.iter().filter(|p| !p.2.is_empty()).map(|p| {
            Text::new(
                p.2.clone(),
                (p.0 * 1.06, p.1 * 1.08),
                ("sans-serif", 11).into_font().color(&color),
            )
        }))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Cost per billion events, roo beside the peers: the pipeline scenario
/// (flat out and the batch jobs) and Flight at one batch size.
pub fn cost(report: &Report, path: &Path) -> Result<()> {
    let mut bars: Vec<(String, f64, bool)> = Vec::new();
    if let Some(sec) = report.section("pipeline") {
        // Flat out and the batch jobs; not the offered loads or the core-scaling runs.
        let shown = |m: &&Measurement| m.offered_per_s.is_none() && !m.name.contains(" core");
        for m in sec.measurements.iter().filter(shown) {
            if let Some(d) = m.dollars_per_billion {
                bars.push((format!("pipeline: {}", m.name), d, m.roo));
            }
        }
    }
    if let Some(sec) = report.section("flight") {
        for m in sec
            .measurements
            .iter()
            .filter(|m| m.name.ends_with("batch 1024"))
        {
            if let Some(d) = m.dollars_per_billion {
                bars.push((format!("Flight: {}", m.name), d, m.roo));
            }
        }
    }
    let max = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1e-9);
    let n = bars.len().max(1);
    let root = SVGBackend::new(path, (1000, 120 + 34 * n as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Cost per billion events at ${} per core-hour (CPU time only)",
                report.dollars_per_core_hour
            ),
            ("sans-serif", 20),
        )
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(8)
        .build_cartesian_2d(0.0..max * 1.9, 0.0..n as f64)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .disable_y_axis()
        .x_desc("$ per billion events")
        .draw()?;
    let roo_color = RGBColor(31, 119, 180);
    let peer_color = RGBColor(214, 96, 77);
    for (i, (label, dollars, roo)) in bars.iter().enumerate() {
        let y = (n - 1 - i) as f64;
        let color = if *roo { roo_color } else { peer_color };
        chart.draw_series(std::iter::once(Rectangle::new(
            [(0.0, y + 0.15), (*dollars, y + 0.85)],
            color.filled(),
        )))?;
        chart.draw_series(std::iter::once(Text::new(
            format!("{label}  ${dollars:.4}"),
            (*dollars + max * 0.02, y + 0.62),
            ("sans-serif", 13),
        )))?;
    }
    root.present()?;
    Ok(())
}

//! `roo-bench gpu`: the GPU scorer against the CPU scorer on one core and
//! on every core, per model family and batch size, and where the GPU
//! overtakes each.
//!
//! A GPU figure is one `GpuScorer::score` call, end to end: upload, compute,
//! readback and the copy into the caller's columns. Batches are timed in
//! rounds that alternate GPU, one core and all cores, so the shared
//! machine's load falls on each alike; the best of each is kept.

use std::path::Path;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use roo_bench::load_rows;
use roo_kernels::cpu::CpuScorer;
use roo_kernels::gpu::{GpuContext, GpuScorer};
use roo_kernels::{load_model, Model};

use crate::kernels::{cases, model_dir, prepare};
use crate::report::{process_peak_rss_mib, Latency, Measurement, Run, Section};

/// One device's timings of one batch size: the best call (wall, and the
/// process's CPU over it) and every call's duration (µs).
struct Timed {
    best: Run,
    calls: Histogram<u64>,
}

impl Timed {
    fn new() -> Self {
        Self {
            best: Run::NONE,
            calls: Histogram::new_with_bounds(1, 600_000_000, 3).expect("bounds"),
        }
    }

    fn time(&mut self, f: impl FnOnce() -> Result<()>) -> Result<()> {
        let (run, result) = Run::time(f);
        result?;
        self.calls.record(((run.wall_s * 1e6) as u64).max(1))?;
        self.best.keep_best(run);
        Ok(())
    }
}

struct Row {
    rows: usize,
    gpu: Timed,
    one: Timed,
    all: Timed,
}

pub fn run(
    sizes: &[usize],
    repeats: usize,
    only: Option<&str>,
    python: &str,
    cache: &Path,
    quick: bool,
) -> Result<Section> {
    let mut section = Section::new(
        "gpu",
        "CPU/GPU crossover: the GPU scorer (wgpu) beside the CPU scorer, per model and batch size",
    );
    crate::report::step("gpu: opening the adapter");
    let ctx = match GpuContext::shared() {
        Ok(ctx) => ctx,
        Err(e) => {
            section.skipped = Some(format!("no GPU adapter: {e}"));
            return Ok(section);
        }
    };
    crate::report::reset_peak_rss();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let largest = *sizes.iter().max().context("no batch sizes")?;
    let dir = model_dir(cache, quick);
    prepare(python, &dir, largest, quick)?;
    let columns = load_rows(&dir, 30)?;
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let all = rayon::ThreadPoolBuilder::new().num_threads(cores).build()?;
    section.note(format!(
        "Adapter: {}. A GPU batch is one call, end to end: upload, compute, readback into the caller's columns.",
        ctx.adapter()
    ));
    section.note(format!(
        "Rows per batch: {}; the table holds the largest, the detail every size. Latency: one batch's call (over {repeats} calls: p999 is the slowest). \
         CPU: this process's over the best call (a software adapter's threads included). Best of {repeats} calls, GPU, one core and all cores alternating.",
        sizes.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")
    ));
    say!(
        "roo-bench gpu: adapter {}; CPU {} ({cores} cores); best of {repeats} rounds; \
         a GPU batch is one call: upload, compute, readback",
        ctx.adapter(),
        roo_kernels::cpu::Isa::detect().name()
    );
    say!(
        "{:<12} {:>9} | {:>12} {:>12} | {:>12} {:>12} | {:>7} {:>7}",
        "model",
        "batch",
        "GPU rows/s",
        "GPU trip",
        "1 core rows/s",
        "all rows/s",
        "GPU/1c",
        "GPU/all"
    );
    for case in cases(quick)
        .iter()
        .filter(|c| only.is_none_or(|o| c.name.contains(o)))
    {
        crate::report::step(&format!("gpu: {}", case.name));
        let model = load_model(dir.join(case.file))?;
        let gpu = GpuScorer::new(&model, ctx.clone())
            .map_err(|e| anyhow::anyhow!("{}: {e}", case.name))?;
        let cpu = CpuScorer::new(&model);
        let mut rows = Vec::new();
        for &n in sizes {
            let features: Vec<&[f32]> = columns.iter().map(|c| &c[..n]).collect();
            let r = time_batch(&model, &gpu, &cpu, &features, repeats, &one, &all)?;
            say!(
                "{:<12} {:>9} | {:>12} {:>12} | {:>12} {:>12} | {:>7.2} {:>7.2}",
                case.name,
                n,
                rate(n, r.gpu.best.wall_s),
                duration(r.gpu.best.wall_s),
                rate(n, r.one.best.wall_s),
                rate(n, r.all.best.wall_s),
                r.one.best.wall_s / r.gpu.best.wall_s,
                r.all.best.wall_s / r.gpu.best.wall_s
            );
            rows.push(r);
        }
        let (one_x, all_x) = (
            crossover(&rows, |r| r.one.best.wall_s),
            crossover(&rows, |r| r.all.best.wall_s),
        );
        say!(
            "{:<12} GPU overtakes 1 core: {one_x}; all {cores} cores: {all_x}",
            case.name,
        );
        section.note(format!(
            "{}: the GPU overtakes 1 core {one_x}; all {cores} cores {all_x}.",
            case.name
        ));
        let last = rows.last().context("no sizes")?;
        let rss = Some(process_peak_rss_mib());
        let cpu_name = format!("roo {} on 1 core, {} rows", case.name, last.rows);
        for (device, t) in [
            ("the GPU", &last.gpu),
            ("1 core", &last.one),
            (&format!("{cores} cores") as &str, &last.all),
        ] {
            let m = Measurement::roo(
                format!("roo {} on {device}, {} rows", case.name, last.rows),
                last.rows as f64,
                t.best.wall_s,
                Some(t.best.cpu_s),
            )
            .latency(Latency::from_us(&t.calls))
            .rss(rss);
            // The GPU row's ratio reads against one CPU core.
            section.push(if device == "the GPU" {
                m.against(&cpu_name)
            } else {
                m
            });
        }
    }
    section.detail = crate::report::take_lines();
    Ok(section)
}

fn time_batch(
    model: &Model,
    gpu: &GpuScorer,
    cpu: &CpuScorer,
    features: &[&[f32]],
    repeats: usize,
    one: &rayon::ThreadPool,
    all: &rayon::ThreadPool,
) -> Result<Row> {
    let n = features[0].len();
    let mut out = vec![vec![0f32; n]; model.n_outputs()];
    let mut slices: Vec<&mut [f32]> = out.iter_mut().map(Vec::as_mut_slice).collect();
    // Warm: the slot pool, the pipeline, the pages.
    gpu.score(features, &mut slices)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    cpu.score(features, &mut slices);
    let mut row = Row {
        rows: n,
        gpu: Timed::new(),
        one: Timed::new(),
        all: Timed::new(),
    };
    for _ in 0..repeats {
        row.gpu.time(|| {
            gpu.score(features, &mut slices)
                .map(|_| ())
                .map_err(|e| anyhow::anyhow!("{e}"))
        })?;
        row.one.time(|| {
            one.install(|| cpu.score(features, &mut slices));
            Ok(())
        })?;
        row.all.time(|| {
            all.install(|| cpu.score_parallel(features, &mut slices, 4096));
            Ok(())
        })?;
    }
    Ok(row)
}

/// Where the GPU's line crosses the CPU's: the smallest measured batch the
/// GPU wins, and the crossing of the fitted lines (GPU: a round trip plus a
/// cost per row, from the smallest and largest batches; CPU: per row, from
/// the largest).
fn crossover(rows: &[Row], cpu: impl Fn(&Row) -> f64) -> String {
    let first_win = rows
        .iter()
        .find(|r| r.gpu.best.wall_s < cpu(r))
        .map(|r| r.rows);
    let (small, large) = (&rows[0], &rows[rows.len() - 1]);
    let gpu_per_row =
        (large.gpu.best.wall_s - small.gpu.best.wall_s) / (large.rows - small.rows).max(1) as f64;
    let gpu_fixed = (small.gpu.best.wall_s - gpu_per_row * small.rows as f64).max(0.0);
    let cpu_per_row = cpu(large) / large.rows as f64;
    let fitted = if cpu_per_row > gpu_per_row {
        format!(
            "fitted at {:.0} rows (GPU round trip {}, {:.1} ns/row vs CPU {:.1} ns/row)",
            gpu_fixed / (cpu_per_row - gpu_per_row),
            duration(gpu_fixed),
            gpu_per_row * 1e9,
            cpu_per_row * 1e9
        )
    } else {
        format!(
            "never by the fitted lines (GPU {:.1} ns/row vs CPU {:.1} ns/row)",
            gpu_per_row * 1e9,
            cpu_per_row * 1e9
        )
    };
    match first_win {
        Some(n) => format!("from {n} rows measured; {fitted}"),
        None => format!("at no measured size; {fitted}"),
    }
}

fn rate(rows: usize, s: f64) -> String {
    let r = rows as f64 / s;
    if r >= 1e6 {
        format!("{:.2} M", r / 1e6)
    } else {
        format!("{:.0} k", r / 1e3)
    }
}

fn duration(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.0} µs", s * 1e6)
    }
}

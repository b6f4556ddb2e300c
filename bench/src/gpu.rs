//! `roo-bench gpu`: the GPU scorer against the CPU scorer on one core and
//! on every core, per model family and batch size, and where the GPU
//! overtakes each.
//!
//! A GPU figure is one `GpuScorer::score` call, end to end: upload, compute,
//! readback and the copy into the caller's columns. Batches are timed in
//! rounds that alternate GPU, one core and all cores, so the shared
//! machine's load falls on each alike; the best of each is kept.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use roo_bench::load_rows;
use roo_kernels::cpu::CpuScorer;
use roo_kernels::gpu::{GpuContext, GpuScorer};
use roo_kernels::{load_model, Model};

use crate::{run_python, CASES};

struct Row {
    rows: usize,
    gpu_s: f64,
    one_s: f64,
    all_s: f64,
}

pub fn run(
    sizes: &[usize],
    repeats: usize,
    only: Option<&str>,
    python: &str,
    cache: &Path,
) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let largest = *sizes.iter().max().context("no batch sizes")?;
    let cache_str = cache.to_str().context("cache path is not UTF-8")?;
    run_python(
        python,
        &[
            "prepare",
            "--dir",
            cache_str,
            "--rows",
            &largest.to_string(),
        ],
    )?;
    let columns = load_rows(cache, 30)?;
    let ctx = GpuContext::shared().map_err(|e| anyhow::anyhow!("{e}"))?;
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let all = rayon::ThreadPoolBuilder::new().num_threads(cores).build()?;
    println!(
        "roo-bench gpu: adapter {}; CPU {} ({cores} cores); best of {repeats} rounds; \
         a GPU batch is one call: upload, compute, readback",
        ctx.adapter(),
        roo_kernels::cpu::Isa::detect().name()
    );
    println!(
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
    for case in CASES
        .iter()
        .filter(|c| only.is_none_or(|o| c.name.contains(o)))
    {
        let model = load_model(cache.join(case.file))?;
        let gpu = GpuScorer::new(&model, ctx.clone())
            .map_err(|e| anyhow::anyhow!("{}: {e}", case.name))?;
        let cpu = CpuScorer::new(&model);
        let mut rows = Vec::new();
        for &n in sizes {
            let features: Vec<&[f32]> = columns.iter().map(|c| &c[..n]).collect();
            let r = time_batch(&model, &gpu, &cpu, &features, repeats, &one, &all)?;
            println!(
                "{:<12} {:>9} | {:>12} {:>12} | {:>12} {:>12} | {:>7.2} {:>7.2}",
                case.name,
                n,
                rate(n, r.gpu_s),
                duration(r.gpu_s),
                rate(n, r.one_s),
                rate(n, r.all_s),
                r.one_s / r.gpu_s,
                r.all_s / r.gpu_s
            );
            rows.push(r);
        }
        println!(
            "{:<12} GPU overtakes 1 core: {}; all {cores} cores: {}",
            case.name,
            crossover(&rows, |r| r.one_s),
            crossover(&rows, |r| r.all_s)
        );
    }
    Ok(())
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
        gpu_s: f64::INFINITY,
        one_s: f64::INFINITY,
        all_s: f64::INFINITY,
    };
    for _ in 0..repeats {
        let t = Instant::now();
        gpu.score(features, &mut slices)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        row.gpu_s = row.gpu_s.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        one.install(|| cpu.score(features, &mut slices));
        row.one_s = row.one_s.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        all.install(|| cpu.score_parallel(features, &mut slices, 4096));
        row.all_s = row.all_s.min(t.elapsed().as_secs_f64());
    }
    Ok(row)
}

/// Where the GPU's line crosses the CPU's: the smallest measured batch the
/// GPU wins, and the crossing of the fitted lines (GPU: a round trip plus a
/// cost per row, from the smallest and largest batches; CPU: per row, from
/// the largest).
fn crossover(rows: &[Row], cpu: impl Fn(&Row) -> f64) -> String {
    let first_win = rows.iter().find(|r| r.gpu_s < cpu(r)).map(|r| r.rows);
    let (small, large) = (&rows[0], &rows[rows.len() - 1]);
    let gpu_per_row = (large.gpu_s - small.gpu_s) / (large.rows - small.rows).max(1) as f64;
    let gpu_fixed = (small.gpu_s - gpu_per_row * small.rows as f64).max(0.0);
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

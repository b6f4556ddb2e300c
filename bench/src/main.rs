//! `roo-bench`: measures roo beside the libraries a team would otherwise use.
//!
//! `roo-bench kernels` trains (once, cached) the benchmark models with the
//! real libraries, times the libraries' own predict on one thread through
//! `bench/python/peers.py`, then times roo's CPU scorers on the same model
//! files and rows, on one core and on every core, and prints the ratios.
//! Every figure in one table comes from the same run.

mod flight;
mod gpu;
mod ingest;
mod pipeline;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use roo_bench::load_rows;
use roo_kernels::cpu::CpuScorer;
use roo_kernels::{load_model, Model, ModelBody};

#[derive(Parser)]
#[command(name = "roo-bench", about = "roo's throughput benchmark suite")]
struct Cli {
    #[command(subcommand)]
    command: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// CPU scoring kernels vs XGBoost, LightGBM and numpy on one core.
    Kernels {
        /// Evaluation rows.
        #[arg(long, default_value_t = 100_000)]
        rows: usize,
        /// Timed runs per measurement; the best is reported.
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Python with xgboost, lightgbm, scikit-learn (bench/python/requirements.txt).
        #[arg(long, default_value = "python3")]
        python: String,
        /// Where trained models and rows are cached.
        #[arg(long, default_value = "bench/.cache")]
        cache: PathBuf,
        /// Rounds of {peers, roo}; each figure is the best over all rounds, so
        /// both sides get the same chances at a quiet moment on a shared machine.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// The daemon end to end: file -> score -> file, TCP -> score -> file at
    /// peak and at 50% and 80% of it (build roo first: cargo build --release -p roo-appliance).
    Pipeline {
        #[arg(long, default_value_t = 500_000)]
        rows: usize,
        /// Seconds per TCP phase.
        #[arg(long, default_value_t = 6.0)]
        seconds: f64,
        /// The file sink's format: parquet, arrow or csv.
        #[arg(long, default_value = "parquet")]
        sink: String,
        #[arg(long, default_value = "bench/.cache")]
        cache: PathBuf,
        /// Python with pyarrow and xgboost (bench/python/requirements.txt):
        /// runs the Python batch and stream pipelines on the same events.
        #[arg(long)]
        python: Option<String>,
        /// The price of one core for an hour, for the cost per billion
        /// events. The default is AWS c7i.large on demand in us-east-1,
        /// $0.08925 an hour for 2 vCPUs (list price as of 2024).
        #[arg(long, default_value_t = 0.0446)]
        dollars_per_core_hour: f64,
    },
    /// Flight DoExchange at batch sizes 1 … 65536 from Rust and pyarrow,
    /// beside a Python HTTP server calling XGBoost per request (build roo
    /// first: cargo build --release -p roo-appliance).
    Flight {
        /// Seconds per client and batch size.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Python with pyarrow and xgboost (bench/python/requirements.txt).
        #[arg(long, default_value = "python3")]
        python: String,
        #[arg(long, default_value = "bench/.cache")]
        cache: PathBuf,
    },
    /// The GPU scorer (wgpu) vs the CPU scorer on one core and all cores,
    /// per model and batch size, and where the GPU overtakes each.
    Gpu {
        /// Batch sizes, comma-separated.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "1000,4096,10000,100000,1000000"
        )]
        sizes: Vec<usize>,
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Only the models whose name contains this.
        #[arg(long)]
        only: Option<String>,
        /// Python with xgboost, lightgbm, scikit-learn (bench/python/requirements.txt).
        #[arg(long, default_value = "python3")]
        python: String,
        #[arg(long, default_value = "bench/.cache")]
        cache: PathBuf,
    },
    /// Sources and parsers on one core vs a plain read, arrow-csv and pyarrow.
    Ingest {
        /// Rows of the generated data (id + 30 float columns).
        #[arg(long, default_value_t = 400_000)]
        rows: u64,
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Python with pyarrow (bench/python/requirements.txt).
        #[arg(long, default_value = "python3")]
        python: String,
        #[arg(long, default_value = "bench/.cache")]
        cache: PathBuf,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Bench::Kernels {
            rows,
            repeats,
            python,
            cache,
            rounds,
        } => kernels(rows, repeats, rounds, &python, &cache),
        Bench::Ingest {
            rows,
            repeats,
            python,
            cache,
        } => ingest::run(rows, repeats, &python, &cache),
        Bench::Pipeline {
            rows,
            seconds,
            sink,
            cache,
            python,
            dollars_per_core_hour,
        } => pipeline::run(
            rows,
            seconds,
            &sink,
            &cache,
            python.as_deref(),
            dollars_per_core_hour,
        ),
        Bench::Flight {
            seconds,
            python,
            cache,
        } => flight::run(seconds, &python, &cache),
        Bench::Gpu {
            sizes,
            repeats,
            only,
            python,
            cache,
        } => gpu::run(&sizes, repeats, only.as_deref(), &python, &cache),
    }
}

/// A script in bench/python/.
fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(name)
}

/// Runs `python peers.py ARGS`.
fn run_python(python: &str, args: &[&str]) -> Result<String> {
    run_script(python, "peers.py", args)
}

/// Runs `python bench/python/NAME ARGS` with every library on one thread;
/// returns its stdout.
pub(crate) fn run_script(python: &str, name: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(python)
        .arg(script(name))
        .args(args)
        // One thread for every library; and unset this machine's OpenBLAS
        // core-type override, which slows a current numpy (env notes).
        .env("OMP_NUM_THREADS", "1")
        .env("OPENBLAS_NUM_THREADS", "1")
        .env("MKL_NUM_THREADS", "1")
        .env_remove("OPENBLAS_CORETYPE")
        .env_remove("OPENBLAS_L2_SIZE")
        .output()
        .with_context(|| format!("running {python} {}", script(name).display()))?;
    if !out.status.success() {
        bail!(
            "{} {:?} failed: {}",
            script(name).display(),
            args,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?)
}

/// Best wall time of `repeats` runs, in seconds.
fn best_of(repeats: usize, mut f: impl FnMut()) -> f64 {
    (0..repeats)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

struct Timing {
    one_core_s: f64,
    all_cores_s: f64,
}

/// One core and all cores, alternating run by run so that the shared
/// machine's load falls on both alike; the best of each is kept.
fn time_scorer(
    scorer: &CpuScorer,
    columns: &[&[f32]],
    outputs: usize,
    repeats: usize,
    cores: usize,
) -> Timing {
    let rows = columns[0].len();
    let mut out = vec![vec![0f32; rows]; outputs];
    let mut slices: Vec<&mut [f32]> = out.iter_mut().map(Vec::as_mut_slice).collect();
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let all = rayon::ThreadPoolBuilder::new()
        .num_threads(cores)
        .build()
        .unwrap();
    scorer.score(columns, &mut slices); // warm caches and pages
    let chunk = 4096;
    let mut timing = Timing {
        one_core_s: f64::INFINITY,
        all_cores_s: f64::INFINITY,
    };
    for _ in 0..repeats {
        timing.one_core_s = timing.one_core_s.min(best_of(1, || {
            one.install(|| scorer.score(columns, &mut slices))
        }));
        timing.all_cores_s = timing.all_cores_s.min(best_of(1, || {
            all.install(|| scorer.score_parallel(columns, &mut slices, chunk))
        }));
    }
    timing
}

/// Trees in an ensemble; 1 for other models, so ns/row·tree reads as ns/row.
fn trees_of(model: &Model) -> usize {
    match &model.body {
        ModelBody::Trees(t) => t.trees.len(),
        ModelBody::Linear(_) | ModelBody::Mlp(_) => 1,
    }
}

struct Case {
    name: &'static str,
    file: &'static str,
    peer: &'static str,
}

const CASES: [Case; 5] = [
    Case {
        name: "xgb_500x8",
        file: "xgb_500x8.json",
        peer: "xgboost.inplace_predict",
    },
    Case {
        name: "xgb_100x6",
        file: "xgb_100x6.json",
        peer: "xgboost.inplace_predict",
    },
    Case {
        name: "lgb_500x255",
        file: "lgb_500x255.txt",
        peer: "lightgbm.predict",
    },
    Case {
        name: "logistic",
        file: "logistic.json",
        peer: "numpy float32 (X @ w, sigmoid)",
    },
    Case {
        name: "mlp_64x32",
        file: "mlp.onnx",
        peer: "numpy float32 matmuls",
    },
];

fn kernels(rows: usize, repeats: usize, rounds: usize, python: &str, cache: &Path) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cache_str = cache.to_str().context("cache path is not UTF-8")?;
    run_python(
        python,
        &["prepare", "--dir", cache_str, "--rows", &rows.to_string()],
    )?;
    let columns = load_rows(cache, 30)?;
    let features: Vec<&[f32]> = columns.iter().map(Vec::as_slice).collect();
    let models: Vec<(Model, CpuScorer)> = CASES
        .iter()
        .map(|c| {
            let model = load_model(cache.join(c.file))?;
            let scorer = CpuScorer::new(&model);
            Ok((model, scorer))
        })
        .collect::<Result<_>>()?;
    // Best over rounds: peer ns/row keyed by (peer, model), and roo's timings.
    let mut peer_best: std::collections::HashMap<(String, String), f64> = Default::default();
    let mut roo_best: Vec<Timing> = CASES
        .iter()
        .map(|_| Timing {
            one_core_s: f64::INFINITY,
            all_cores_s: f64::INFINITY,
        })
        .collect();
    let mut versions = serde_json::Value::Null;
    for round in 0..rounds {
        eprintln!("round {}/{rounds}: peers", round + 1);
        let peers: serde_json::Value = serde_json::from_str(&run_python(
            python,
            &[
                "time",
                "--dir",
                cache_str,
                "--repeats",
                &repeats.to_string(),
            ],
        )?)?;
        for (peer, models) in peers["peers"].as_object().into_iter().flatten() {
            for (model, v) in models.as_object().into_iter().flatten() {
                let ns = v["ns_per_row"].as_f64().unwrap_or(f64::NAN);
                let best = peer_best
                    .entry((peer.clone(), model.clone()))
                    .or_insert(f64::INFINITY);
                *best = best.min(ns);
            }
        }
        versions = peers["peers"].clone();
        eprintln!("round {}/{rounds}: roo", round + 1);
        for ((model, scorer), best) in models.iter().zip(roo_best.iter_mut()) {
            let t = time_scorer(scorer, &features, model.n_outputs(), repeats, cores);
            best.one_core_s = best.one_core_s.min(t.one_core_s);
            best.all_cores_s = best.all_cores_s.min(t.all_cores_s);
        }
    }
    let isa = roo_kernels::cpu::Isa::detect();
    let version = |peer: &str, model: &str| {
        versions[peer][model]["version"]
            .as_str()
            .unwrap_or("?")
            .to_string()
    };
    println!(
        "roo-bench kernels: {rows} rows of 30 features, best of {rounds} rounds x {repeats} runs, isa {}, {cores} cores; \
         peers on 1 thread: xgboost {}, lightgbm {}, numpy {}, onnxruntime {}",
        isa.name(),
        version("xgboost.inplace_predict", "xgb_500x8"),
        version("lightgbm.predict", "lgb_500x255"),
        version("numpy float32 matmuls", "mlp_64x32"),
        version("onnxruntime", "xgb_500x8"),
    );
    println!(
        "{:<12} {:>11} {:>12} {:>8} | {:<30} {:>11} {:>7} | {:>11} {:>7} | {:>11} {:>6}",
        "model",
        "roo ns/row",
        "ns/row·tree",
        "Mrows/s",
        "library peer (1 thread)",
        "peer ns/row",
        "roo x",
        "ORT ns/row",
        "roo x",
        "roo 2c ns",
        "2c/1c"
    );
    for ((case, (model, scorer)), t) in CASES.iter().zip(&models).zip(&roo_best) {
        let ns_row = t.one_core_s / rows as f64 * 1e9;
        let peer_ns = peer_best
            .get(&(case.peer.to_string(), case.name.to_string()))
            .copied()
            .unwrap_or(f64::NAN);
        let ort_ns = peer_best
            .get(&("onnxruntime".to_string(), case.name.to_string()))
            .copied()
            .unwrap_or(f64::NAN);
        let layouts = scorer
            .tree_layouts()
            .map(|(p, c)| format!(" [{p} perfect, {c} compact trees]"))
            .unwrap_or_default();
        println!(
            "{:<12} {:>11.2} {:>12.3} {:>8.2} | {:<30} {:>11.2} {:>7.2} | {:>11.2} {:>7.2} | {:>11.2} {:>6.2}{}",
            case.name,
            ns_row,
            ns_row / trees_of(model) as f64,
            rows as f64 / t.one_core_s / 1e6,
            case.peer,
            peer_ns,
            peer_ns / ns_row,
            ort_ns,
            ort_ns / ns_row,
            t.all_cores_s / rows as f64 * 1e9,
            t.one_core_s / t.all_cores_s,
            layouts
        );
    }
    logistic_limits(cache, repeats)?;
    Ok(())
}

/// Logistic regression with its data in cache, and streamed from DRAM.
fn logistic_limits(cache: &Path, repeats: usize) -> Result<()> {
    let model = load_model(cache.join("logistic.json"))?;
    let scorer = CpuScorer::new(&model);
    // In cache: 4096 rows (480 KiB of features, in L2) scored over and over.
    let block: Vec<Vec<f32>> = (0..30)
        .map(|j| {
            (0..4096)
                .map(|r| ((r * 31 + j * 7) % 97) as f32 * 0.01)
                .collect()
        })
        .collect();
    let cols: Vec<&[f32]> = block.iter().map(Vec::as_slice).collect();
    let mut out = vec![0f32; 4096];
    let passes = 20_000;
    let s = best_of(repeats, || {
        for _ in 0..passes {
            scorer.score(&cols, &mut [&mut out[..]]);
        }
    });
    let in_cache = (4096 * passes) as f64 / s;
    // From DRAM: 8M rows, ~1 GB of features, scored once per run.
    let rows = 8 << 20;
    let big: Vec<Vec<f32>> = block
        .iter()
        .map(|c| c.iter().cycle().take(rows).copied().collect())
        .collect();
    let cols: Vec<&[f32]> = big.iter().map(Vec::as_slice).collect();
    let mut out = vec![0f32; rows];
    let s = best_of(repeats, || scorer.score(&cols, &mut [&mut out[..]]));
    let dram = rows as f64 / s;
    println!(
        "logistic 30 features, 1 core: {:.0} M rows/s in cache (4096-row batch in L2); {:.1} M rows/s from DRAM ({:.2} GB/s of features)",
        in_cache / 1e6,
        dram / 1e6,
        dram * 120.0 / 1e9
    );
    Ok(())
}

//! `roo-bench kernels`: trains (once, cached) the benchmark models with the
//! real libraries, times the libraries' own predict on one thread through
//! `bench/python/peers.py`, then times roo's CPU scorers on the same model
//! files and rows, on one core and on every core, and prints the ratios.
//! Every figure in one table comes from the same run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use roo_bench::load_rows;
use roo_kernels::cpu::CpuScorer;
use roo_kernels::{load_model, Model, ModelBody};

use crate::report::{process_peak_rss_mib, Latency, Measurement, Run, Section};
use crate::report::{KERNEL_ALL, KERNEL_ONE};
use crate::run_python;

/// Rows per timed micro-batch, for per-batch latency (peers.py uses the same).
pub const LATENCY_BATCH: usize = 4096;

#[derive(Clone, Copy)]
pub struct Case {
    pub name: &'static str,
    pub file: &'static str,
    pub peer: &'static str,
}

const FULL: [Case; 5] = [
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

/// The smaller models `peers.py prepare --quick` trains.
const QUICK: [Case; 5] = [
    Case {
        name: "xgb_50x8",
        file: "xgb_50x8.json",
        peer: "xgboost.inplace_predict",
    },
    Case {
        name: "xgb_20x6",
        file: "xgb_20x6.json",
        peer: "xgboost.inplace_predict",
    },
    Case {
        name: "lgb_50x63",
        file: "lgb_50x63.txt",
        peer: "lightgbm.predict",
    },
    FULL[3],
    FULL[4],
];

pub fn cases(quick: bool) -> &'static [Case] {
    if quick {
        &QUICK
    } else {
        &FULL
    }
}

/// Where the models and rows of a run live: the quick set has its own.
pub fn model_dir(cache: &Path, quick: bool) -> PathBuf {
    if quick {
        cache.join("quick")
    } else {
        cache.to_path_buf()
    }
}

/// Trains the models (once) and writes `rows` evaluation rows.
pub fn prepare(python: &str, dir: &Path, rows: usize, quick: bool) -> Result<()> {
    let dir = dir.to_str().context("cache path is not UTF-8")?;
    let rows = rows.to_string();
    let mut args = vec!["prepare", "--dir", dir, "--rows", &rows];
    if quick {
        args.push("--quick");
    }
    run_python(python, &args)?;
    Ok(())
}

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
    one: Run,
    all: Run,
    /// One core, each `LATENCY_BATCH`-row micro-batch, µs.
    batches: Histogram<u64>,
}

/// One core and all cores, alternating run by run so that the shared
/// machine's load falls on both alike; the best of each is kept. The
/// one-core run scores `LATENCY_BATCH`-row micro-batches, each timed.
fn time_scorer(
    scorer: &CpuScorer,
    columns: &[&[f32]],
    outputs: usize,
    repeats: usize,
    one: &rayon::ThreadPool,
    all: &rayon::ThreadPool,
) -> Timing {
    let rows = columns[0].len();
    let mut out = vec![vec![0f32; rows]; outputs];
    let mut slices: Vec<&mut [f32]> = out.iter_mut().map(Vec::as_mut_slice).collect();
    scorer.score(columns, &mut slices); // warm caches and pages
    let mut timing = Timing {
        one: Run::NONE,
        all: Run::NONE,
        batches: Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds"),
    };
    for _ in 0..repeats {
        let (run, ()) = Run::time(|| {
            one.install(|| {
                for start in (0..rows).step_by(LATENCY_BATCH) {
                    let end = (start + LATENCY_BATCH).min(rows);
                    let cols: Vec<&[f32]> = columns.iter().map(|c| &c[start..end]).collect();
                    let mut outs: Vec<&mut [f32]> =
                        slices.iter_mut().map(|o| &mut o[start..end]).collect();
                    let t = Instant::now();
                    scorer.score(&cols, &mut outs);
                    let _ = timing
                        .batches
                        .record((t.elapsed().as_micros() as u64).max(1));
                }
            })
        });
        timing.one.keep_best(run);
        let (run, ()) =
            Run::time(|| all.install(|| scorer.score_parallel(columns, &mut slices, 4096)));
        timing.all.keep_best(run);
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

/// A peer's figures from peers.py.
struct Peer {
    ns_per_row: f64,
    cpu_ns_per_row: f64,
    batch_s: [f64; 3],
    peak_rss_mib: f64,
    version: String,
}

pub fn run(
    rows: usize,
    repeats: usize,
    rounds: usize,
    python: &str,
    cache: &Path,
    quick: bool,
) -> Result<Section> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    crate::report::reset_peak_rss();
    let dir = model_dir(cache, quick);
    crate::report::step("kernels: training the models (once) and writing rows");
    prepare(python, &dir, rows, quick)?;
    let dir_str = dir.to_str().context("cache path is not UTF-8")?;
    let columns = load_rows(&dir, 30)?;
    let features: Vec<&[f32]> = columns.iter().map(Vec::as_slice).collect();
    let cases = cases(quick);
    let models: Vec<(Model, CpuScorer)> = cases
        .iter()
        .map(|c| {
            let model = load_model(dir.join(c.file))?;
            let scorer = CpuScorer::new(&model);
            Ok((model, scorer))
        })
        .collect::<Result<_>>()?;
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    let all = rayon::ThreadPoolBuilder::new().num_threads(cores).build()?;
    // Best over rounds: peers keyed by (peer, model), and roo's timings.
    let mut peers: HashMap<(String, String), Peer> = HashMap::new();
    let mut roo: Vec<Option<Timing>> = cases.iter().map(|_| None).collect();
    for round in 0..rounds {
        crate::report::step(&format!("kernels: peers, round {}/{rounds}", round + 1));
        let out: serde_json::Value = serde_json::from_str(&run_python(
            python,
            &["time", "--dir", dir_str, "--repeats", &repeats.to_string()]
                .into_iter()
                .chain(quick.then_some("--quick"))
                .collect::<Vec<_>>(),
        )?)?;
        for (peer, models) in out["peers"].as_object().into_iter().flatten() {
            for (model, v) in models.as_object().into_iter().flatten() {
                let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
                let q = |i: usize| v["batch_s"][i].as_f64().unwrap_or(f64::NAN);
                let got = Peer {
                    ns_per_row: f("ns_per_row"),
                    cpu_ns_per_row: f("cpu_ns_per_row"),
                    batch_s: [q(0), q(1), q(2)],
                    peak_rss_mib: f("peak_rss_mib"),
                    version: v["version"].as_str().unwrap_or("?").to_string(),
                };
                let key = (peer.clone(), model.clone());
                if peers
                    .get(&key)
                    .is_none_or(|p| got.ns_per_row < p.ns_per_row)
                {
                    peers.insert(key, got);
                }
            }
        }
        crate::report::step(&format!("kernels: roo, round {}/{rounds}", round + 1));
        for ((model, scorer), best) in models.iter().zip(roo.iter_mut()) {
            let t = time_scorer(scorer, &features, model.n_outputs(), repeats, &one, &all);
            match best {
                Some(b) => {
                    b.one.keep_best(t.one);
                    b.all.keep_best(t.all);
                    b.batches.add(&t.batches)?;
                }
                None => *best = Some(t),
            }
        }
    }
    let roo: Vec<Timing> = roo.into_iter().map(|t| t.expect("one round")).collect();
    let isa = roo_kernels::cpu::Isa::detect();
    let version = |peer: &str, model: &str| {
        peers
            .get(&(peer.to_string(), model.to_string()))
            .map_or("?".to_string(), |p| p.version.clone())
    };
    say!(
        "roo-bench kernels: {rows} rows of 30 features, best of {rounds} rounds x {repeats} runs, isa {}, {cores} cores; \
         peers on 1 thread: xgboost {}, lightgbm {}, numpy {}, onnxruntime {}",
        isa.name(),
        version("xgboost.inplace_predict", cases[0].name),
        version("lightgbm.predict", cases[2].name),
        version("numpy float32 matmuls", "mlp_64x32"),
        version("onnxruntime", cases[0].name),
    );
    say!(
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
    let mut section = Section::new(
        "kernels",
        "Kernels: roo's CPU scorers beside the libraries' own predict",
    );
    section.note(format!(
        "{rows} rows of 30 features (synthetic card transactions, NaNs included); models trained by the libraries; \
         best of {rounds} rounds x {repeats} runs; peers on one thread."
    ));
    section.note(format!(
        "Latency: one {LATENCY_BATCH}-row micro-batch scored, on one core. CPU: this process's (roo) or the \
         Python process's (peers) user + system time over the run. Peak RSS: the whole process (rows and models included)."
    ));
    let rss = process_peak_rss_mib();
    for ((case, (model, scorer)), t) in cases.iter().zip(&models).zip(&roo) {
        let ns_row = t.one.wall_s / rows as f64 * 1e9;
        let peer = |name: &str| peers.get(&(name.to_string(), case.name.to_string()));
        let ns = |p: Option<&Peer>| p.map_or(f64::NAN, |p| p.ns_per_row);
        let (lib, ort) = (peer(case.peer), peer("onnxruntime"));
        let layouts = scorer
            .tree_layouts()
            .map(|(p, c)| format!(" [{p} perfect, {c} compact trees]"))
            .unwrap_or_default();
        say!(
            "{:<12} {:>11.2} {:>12.3} {:>8.2} | {:<30} {:>11.2} {:>7.2} | {:>11.2} {:>7.2} | {:>11.2} {:>6.2}{}",
            case.name,
            ns_row,
            ns_row / trees_of(model) as f64,
            rows as f64 / t.one.wall_s / 1e6,
            case.peer,
            ns(lib),
            ns(lib) / ns_row,
            ns(ort),
            ns(ort) / ns_row,
            t.all.wall_s / rows as f64 * 1e9,
            t.one.wall_s / t.all.wall_s,
            layouts
        );
        let one_name = format!("roo {}{KERNEL_ONE}", case.name);
        let n = rows as f64;
        section.push(
            Measurement::roo(&one_name, n, t.one.wall_s, Some(t.one.cpu_s))
                .latency(Latency::from_us(&t.batches))
                .rss(Some(rss)),
        );
        section.push(
            Measurement::roo(
                format!("roo {}{KERNEL_ALL}", case.name),
                n,
                t.all.wall_s,
                Some(t.all.cpu_s),
            )
            .rss(Some(rss)),
        );
        for (label, p) in [(case.peer, lib), ("onnxruntime", ort)] {
            let Some(p) = p else { continue };
            let [b50, b99, b999] = p.batch_s;
            section.push(
                Measurement::peer(
                    format!("{label} {}", case.name),
                    format!("{label} {}", p.version),
                    n,
                    p.ns_per_row * n / 1e9,
                    Some(p.cpu_ns_per_row * n / 1e9),
                )
                .latency(Latency::from_s(b50, b99, b999))
                .rss(Some(p.peak_rss_mib))
                .against(&one_name),
            );
        }
    }
    if !quick {
        crate::report::step("kernels: logistic regression in cache and from DRAM");
        logistic_limits(&dir, repeats)?;
    }
    section.detail = crate::report::take_lines();
    Ok(section)
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
    say!(
        "logistic 30 features, 1 core: {:.0} M rows/s in cache (4096-row batch in L2); {:.1} M rows/s from DRAM ({:.2} GB/s of features)",
        in_cache / 1e6,
        dram / 1e6,
        dram * 120.0 / 1e9
    );
    Ok(())
}

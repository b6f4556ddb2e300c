//! Scratch timing of roo's kernels alone on the cached benchmark models (no
//! peers), for tuning: `cargo run --release -p roo-bench --example tune`,
//! with `PAR=1`, `MLP=1` or `FMA=1` (this core's peak FMA rate)
//! for the other measurements (`roo-bench kernels` times the logistic model).
use roo_kernels::cpu::CpuScorer;
use roo_kernels::load_model;
use std::time::Instant;
fn main() {
    if std::env::var("PAR").is_ok() {
        parallel();
        return;
    }
    if std::env::var("FMA").is_ok() {
        fma_peak();
        return;
    }
    if std::env::var("MLP").is_ok() {
        mlp_isas();
        return;
    }
    let data = roo_bench::load_rows(std::path::Path::new("bench/.cache"), 30).unwrap();
    let rows = data[0].len();
    let cols: Vec<&[f32]> = data.iter().map(Vec::as_slice).collect();
    for (f, trees) in [
        ("xgb_500x8.json", 500.0),
        ("xgb_100x6.json", 100.0),
        ("lgb_500x255.txt", 500.0),
    ] {
        let m = load_model(format!("bench/.cache/{f}")).unwrap();
        let s = CpuScorer::new(&m);
        let mut out = vec![0f32; rows];
        let mut best = f64::INFINITY;
        for _ in 0..4 {
            let t = Instant::now();
            s.score(&cols, &mut [&mut out[..]]);
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "{f:<18} {:.3} ns/row·tree",
            best / rows as f64 * 1e9 / trees
        );
    }
}

#[allow(dead_code)]
fn parallel() {
    let data = roo_bench::load_rows(std::path::Path::new("bench/.cache"), 30).unwrap();
    let rows = data[0].len();
    let cols: Vec<&[f32]> = data.iter().map(Vec::as_slice).collect();
    let m = load_model("bench/.cache/xgb_100x6.json").unwrap();
    let s = CpuScorer::new(&m);
    let mut out = vec![0f32; rows];
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        for chunk in [1024, 4096, 12500, 50000] {
            let mut best = f64::INFINITY;
            for _ in 0..5 {
                let t = Instant::now();
                pool.install(|| s.score_parallel(&cols, &mut [&mut out[..]], chunk));
                best = best.min(t.elapsed().as_secs_f64());
            }
            println!("threads {threads} chunk {chunk:>6}: {:.2} ms", best * 1e3);
        }
    }
}

#[allow(dead_code)]
fn mlp_isas() {
    use roo_kernels::cpu::Isa;
    let data = roo_bench::load_rows(std::path::Path::new("bench/.cache"), 30).unwrap();
    let rows = data[0].len();
    let cols: Vec<&[f32]> = data.iter().map(Vec::as_slice).collect();
    let m = load_model("bench/.cache/mlp.onnx").unwrap();
    let clean: Vec<Vec<f32>> = data
        .iter()
        .map(|c| {
            c.iter()
                .map(|x| if x.is_nan() { 0.0 } else { *x })
                .collect()
        })
        .collect();
    let clean_cols: Vec<&[f32]> = clean.iter().map(Vec::as_slice).collect();
    let cols = if std::env::var("CLEAN").is_ok() {
        clean_cols
    } else {
        cols
    };
    let mut out = vec![0f32; rows];
    for isa in Isa::all().into_iter().filter(|i| i.available()) {
        let s = CpuScorer::with_isa(&m, isa);
        let mut best = f64::INFINITY;
        for _ in 0..3 {
            let t = Instant::now();
            s.score(&cols, &mut [&mut out[..]]);
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "mlp {:<10} {:.1} ns/row",
            isa.name(),
            best / rows as f64 * 1e9
        );
    }
}

/// Peak 16-wide FMA throughput of one core: 8 and 16 independent chains.
#[allow(dead_code)]
fn fma_peak() {
    #[target_feature(enable = "avx512f")]
    unsafe fn run<const N: usize>(iters: usize) -> f32 {
        use std::arch::x86_64::*;
        let mut acc = [_mm512_set1_ps(1.0); N];
        let m = _mm512_set1_ps(0.999_999);
        let a = _mm512_set1_ps(1e-7);
        for _ in 0..iters {
            for v in acc.iter_mut() {
                *v = _mm512_fmadd_ps(*v, m, a);
            }
        }
        acc.iter().map(|v| _mm512_reduce_add_ps(*v)).sum()
    }
    let iters = 50_000_000;
    for (n, f) in [
        (8usize, run::<8> as unsafe fn(usize) -> f32),
        (16, run::<16>),
    ] {
        let t = Instant::now();
        let x = unsafe { f(iters) };
        let s = t.elapsed().as_secs_f64();
        println!(
            "{n} chains: {:.2} G FMA-instructions/s (16-wide) [{x}]",
            (iters * n) as f64 / s / 1e9
        );
    }
}

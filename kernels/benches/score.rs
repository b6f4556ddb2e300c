//! Criterion benches: the fast CPU scorer beside the reference, per model
//! family, on fixture models and 4,096 rows. (`roo-bench kernels` measures
//! the large benchmark models against the libraries' own predict.)

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use roo_kernels::cpu::CpuScorer;
use roo_kernels::{load_model, reference};

const ROWS: usize = 4096;

fn columns(features: usize) -> Vec<Vec<f32>> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..features)
        .map(|_| {
            (0..ROWS)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state % 8000) as f32 / 1000.0 - 4.0
                })
                .collect()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    for file in [
        "xgb3_binary.json",
        "lgb_categorical.txt",
        "lgb_multiclass.txt",
        "skl_logistic.json",
        "onnx_skl_mlp_multiclass.onnx",
    ] {
        let model = load_model(golden.join(file)).unwrap();
        let data = columns(model.n_features());
        let features: Vec<&[f32]> = data.iter().map(Vec::as_slice).collect();
        let mut out = vec![vec![0f32; ROWS]; model.n_outputs()];
        let scorer = CpuScorer::new(&model);
        let mut group = c.benchmark_group(file);
        group.throughput(Throughput::Elements(ROWS as u64));
        group.bench_function("cpu", |b| {
            b.iter(|| {
                scorer.score(
                    &features,
                    &mut out.iter_mut().map(Vec::as_mut_slice).collect::<Vec<_>>(),
                )
            })
        });
        group.bench_function("reference", |b| {
            b.iter(|| {
                reference::score(
                    &model,
                    &features,
                    &mut out.iter_mut().map(Vec::as_mut_slice).collect::<Vec<_>>(),
                )
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

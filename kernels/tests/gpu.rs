//! The GPU scorer equals the reference scorer, on a real Vulkan driver
//! (Mesa lavapipe in CI, where `ROO_REQUIRE_GPU=1` makes a missing adapter
//! a failure; elsewhere these tests say loudly that they skipped).
//!
//! Tolerances, per family:
//! - trees: 1e-6 + 2^-23 × trees × Σ_t max|leaf_t|. The shader sums leaves
//!   in f32 (WGSL has no portable f64); each of the `trees` additions
//!   rounds by at most 2^-24 of a partial sum, and no partial sum exceeds
//!   Σ_t max|leaf_t|. Routing is exact: thresholds, NaN, ±inf and zeros are
//!   compared on the bits.
//! - linear: 1e-5 × (1 + Σ|w·x|), MLP: 1e-4 × (1 + |reference|), as for the
//!   CPU scorer; rows with a NaN or infinite input are scored on the CPU.
//!
//! NaN must come out where the reference puts NaN, and nowhere else.
#![cfg(feature = "gpu")]

use std::sync::Arc;

use roo_kernels::gpu::{GpuContext, GpuError, GpuOptions, GpuScorer};
use roo_kernels::model::{Activation, DenseLayer, LinearModel, MlpModel};
use roo_kernels::{reference, Link, Model, ModelBody, ModelFormat, ModelVersion};

mod support;
use support::*;

/// The shared device, or `None` after saying loudly why the test skips.
fn context() -> Option<Arc<GpuContext>> {
    match GpuContext::shared() {
        Ok(ctx) => {
            eprintln!("GPU tests run on {}", ctx.adapter());
            Some(ctx)
        }
        Err(e) if std::env::var_os("ROO_REQUIRE_GPU").is_some() => {
            panic!("ROO_REQUIRE_GPU is set, but {e}")
        }
        Err(e) => {
            eprintln!(
                "SKIPPED: the GPU tests did not run: {e} (ROO_REQUIRE_GPU=1 makes this a failure)"
            );
            None
        }
    }
}

fn gpu_tolerance(model: &Model, columns: &[Vec<f32>], r: usize, reference: f32) -> f64 {
    match &model.body {
        ModelBody::Trees(t) => {
            let leaves: f64 = t
                .trees
                .iter()
                .map(|tree| {
                    tree.nodes
                        .iter()
                        .filter_map(|n| match n {
                            roo_kernels::model::Node::Leaf { value } => Some(value.abs()),
                            _ => None,
                        })
                        .fold(0.0, f64::max)
                })
                .sum::<f64>()
                + t.base_margin.iter().map(|b| b.abs()).fold(0.0, f64::max);
            1e-6 + t.trees.len() as f64 * leaves / (1u64 << 23) as f64
        }
        _ => tolerance(model, columns, r, reference),
    }
}

/// Scores `columns` on the GPU and checks every output against the reference.
fn check(name: &str, scorer: &GpuScorer, model: &Model, columns: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let rows = columns.first().map_or(0, Vec::len);
    let want = score_with(model, columns, rows, |f, o| reference::score(model, f, o));
    let got = score_with(model, columns, rows, |f, o| {
        scorer.score(f, o).unwrap_or_else(|e| panic!("{name}: {e}"));
    });
    let mut worst = 0f64;
    for (k, (g, w)) in got.iter().zip(&want).enumerate() {
        for r in 0..rows {
            let (g, w) = (g[r], w[r]);
            let ok = if w.is_nan() {
                g.is_nan()
            } else if w.is_infinite() {
                g == w
            } else {
                let diff = (g as f64 - w as f64).abs();
                worst = worst.max(diff);
                diff <= gpu_tolerance(model, columns, r, w)
            };
            assert!(
                ok,
                "{name} rows={rows} output {k} row {r}: GPU {g} reference {w}; inputs {:?}",
                columns.iter().map(|c| c[r]).collect::<Vec<_>>()
            );
        }
    }
    eprintln!("{name:<32} {rows:>7} rows: max |GPU - reference| = {worst:.2e}");
    got
}

/// Options that cut a batch into chunks of `rows` rows (the input header
/// and `rows` rows of every feature).
fn chunks_of(rows: usize, model: &Model) -> GpuOptions {
    GpuOptions {
        chunk_bytes: 16 + rows * 4 * model.n_features(),
        ..GpuOptions::default()
    }
}

/// Random inputs with NaN and ±inf for every family (the CPU tests keep
/// linear and MLP inputs finite; here those rows take the CPU path).
fn columns_with_gaps(model: &Model, rows: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut columns = random_columns(model, rows, seed);
    let mut rng = Rng(seed.wrapping_mul(31) | 1);
    for column in &mut columns {
        for v in column.iter_mut() {
            match rng.next() % 97 {
                0 => *v = f32::NAN,
                1 => *v = f32::INFINITY,
                2 => *v = f32::NEG_INFINITY,
                _ => {}
            }
        }
    }
    columns
}

#[test]
fn every_golden_model_on_every_batch_size() {
    let Some(ctx) = context() else { return };
    for (name, model) in golden_models() {
        let scorer = GpuScorer::new(&model, ctx.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        for (i, rows) in BATCH_SIZES.into_iter().enumerate() {
            check(
                &name,
                &scorer,
                &model,
                &random_columns(&model, rows, 0x5eed + i as u64),
            );
            check(
                &name,
                &scorer,
                &model,
                &columns_with_gaps(&model, rows, 0xfade + i as u64),
            );
        }
    }
}

#[test]
fn deep_trees_agree() {
    let Some(ctx) = context() else { return };
    let model = deep_forest(42);
    let scorer = GpuScorer::new(&model, ctx).unwrap();
    for rows in BATCH_SIZES {
        check(
            "deep forest",
            &scorer,
            &model,
            &random_columns(&model, rows, rows as u64 + 3),
        );
    }
}

#[test]
fn chunks_in_flight_give_the_same_scores_as_one_chunk() {
    let Some(ctx) = context() else { return };
    for (name, model) in golden_models() {
        let whole = GpuScorer::new(&model, ctx.clone()).unwrap();
        // 997 rows' worth of input per chunk: 100,003 rows make ~100 chunks,
        // two in flight, through a pool of at most four slots.
        let options = chunks_of(997, &model);
        let chunked = GpuScorer::with_options(&model, ctx.clone(), options).unwrap();
        assert_eq!(chunked.chunk_rows(), 997);
        let columns = columns_with_gaps(&model, 100_003, 77);
        let rows = 100_003;
        let a = score_with(&model, &columns, rows, |f, o| {
            assert_eq!(whole.score(f, o).unwrap().chunks, 1);
        });
        let b = score_with(&model, &columns, rows, |f, o| {
            assert_eq!(chunked.score(f, o).unwrap().chunks, rows.div_ceil(997));
        });
        for (x, y) in a.iter().zip(&b) {
            assert!(
                x.iter().zip(y).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{name}: chunked scores differ"
            );
        }
    }
}

fn wide_linear(n_features: usize) -> Model {
    let mut rng = Rng(9);
    Model {
        version: ModelVersion::of_bytes(b"wide"),
        format: ModelFormat::LinearJson,
        feature_names: (0..n_features).map(|i| format!("f{i}")).collect(),
        named_features: false,
        body: ModelBody::Linear(LinearModel {
            weights: (0..n_features).map(|_| rng.unit() - 0.5).collect(),
            bias: vec![0.25],
            link: Link::Sigmoid { scale: 1.0 },
        }),
    }
}

#[test]
fn an_input_past_the_largest_storage_binding_is_split() {
    let Some(ctx) = context() else { return };
    let max_binding = ctx.adapter().max_binding_bytes;
    // 64 features × 4 bytes: enough rows to pass the binding by a quarter.
    let features = 64;
    let rows = (max_binding as usize / (features * 4)) * 5 / 4;
    let model = wide_linear(features);
    let options = GpuOptions {
        chunk_bytes: usize::MAX,
        ..GpuOptions::default()
    };
    let scorer = GpuScorer::with_options(&model, ctx, options).unwrap();
    assert!(scorer.chunk_rows() * features * 4 <= max_binding as usize);
    let mut rng = Rng(5);
    let columns: Vec<Vec<f32>> = (0..features)
        .map(|_| (0..rows).map(|_| (rng.unit() * 2.0 - 1.0) as f32).collect())
        .collect();
    let want = score_with(&model, &columns, rows, |f, o| {
        reference::score(&model, f, o)
    });
    let got = score_with(&model, &columns, rows, |f, o| {
        let run = scorer.score(f, o).unwrap();
        assert_eq!(run.chunks, rows.div_ceil(scorer.chunk_rows()));
        assert!(run.chunks >= 2, "{run:?}");
    });
    eprintln!(
        "{} MiB of input, binding {} MiB: {} rows a chunk",
        (rows * features * 4) >> 20,
        max_binding >> 20,
        scorer.chunk_rows()
    );
    for r in 0..rows {
        let tol = tolerance(&model, &columns, r, want[0][r]);
        assert!(
            (got[0][r] as f64 - want[0][r] as f64).abs() <= tol,
            "row {r}"
        );
    }
}

#[test]
fn rows_with_non_finite_inputs_go_to_the_cpu_and_come_back_in_place() {
    let Some(ctx) = context() else { return };
    let model = Model {
        version: ModelVersion::of_bytes(b"mlp"),
        format: ModelFormat::Onnx,
        feature_names: vec!["a".into(), "b".into()],
        named_features: true,
        body: ModelBody::Mlp(MlpModel {
            layers: vec![
                DenseLayer {
                    inputs: 2,
                    outputs: 3,
                    weights: vec![0.5, -1.0, 0.0, 2.0, 1.5, 0.25],
                    bias: vec![0.1, 0.0, -0.3],
                    activation: Activation::Tanh,
                },
                DenseLayer {
                    inputs: 3,
                    outputs: 2,
                    weights: vec![1.0, -2.0, 0.5, 0.3, 0.3, -0.7],
                    bias: vec![0.0, 0.2],
                    activation: Activation::Identity,
                },
            ],
            link: Link::Softmax,
        }),
    };
    let scorer = GpuScorer::new(&model, ctx).unwrap();
    // 3,000 NaN rows: more than a chunk lists, so the host finds them itself.
    let rows = 10_000;
    let a: Vec<f32> = (0..rows)
        .map(|r| match r % 10 {
            0 | 3 | 7 => f32::NAN,
            5 => f32::INFINITY,
            _ => r as f32 / 1000.0,
        })
        .collect();
    let b: Vec<f32> = (0..rows).map(|r| (r as f32 * 0.37).sin()).collect();
    let columns = vec![a, b];
    let got = check("mlp with gaps", &scorer, &model, &columns);
    let run = scorer
        .score(
            &[&columns[0], &columns[1]],
            &mut [&mut vec![0.0; rows][..], &mut vec![0.0; rows][..]],
        )
        .unwrap();
    assert_eq!(run.cpu_rows, 4_000);
    assert!(got[0][0].is_nan() && got[0][1].is_finite());
    // Few gaps: listed by the shader.
    let few: Vec<f32> = (0..rows)
        .map(|r| if r == 4321 { f32::NAN } else { 0.5 })
        .collect();
    let run = scorer
        .score(
            &[&few, &columns[1]],
            &mut [&mut vec![0.0; rows][..], &mut vec![0.0; rows][..]],
        )
        .unwrap();
    assert_eq!(run.cpu_rows, 1);
}

#[test]
fn concurrent_callers_share_the_slot_pool() {
    let Some(ctx) = context() else { return };
    let (name, model) = golden_models().into_iter().next().unwrap();
    let options = chunks_of(500, &model);
    let scorer = GpuScorer::with_options(&model, ctx, options).unwrap();
    let columns = columns_with_gaps(&model, 20_000, 1);
    let expected = check(&name, &scorer, &model, &columns);
    std::thread::scope(|s| {
        for _ in 0..6 {
            s.spawn(|| {
                for _ in 0..3 {
                    let got = score_with(&model, &columns, 20_000, |f, o| {
                        scorer.score(f, o).unwrap();
                    });
                    assert_eq!(got, expected);
                }
            });
        }
    });
}

#[test]
fn a_lost_device_fails_the_batch_with_the_reason() {
    if context().is_none() {
        return;
    }
    // A device of this test's own: losing it leaves the shared one alone.
    let ctx = Arc::new(GpuContext::open().unwrap());
    let (_, model) = golden_models().into_iter().next().unwrap();
    let scorer = GpuScorer::new(&model, ctx.clone()).unwrap();
    let columns = random_columns(&model, 5000, 3);
    check("before the loss", &scorer, &model, &columns);
    ctx.destroy();
    let err = score_with(&model, &columns, 5000, |f, o| {
        let err = scorer.score(f, o).unwrap_err();
        assert!(matches!(err, GpuError::DeviceLost(_)), "{err:?}");
    });
    assert_eq!(err.len(), model.n_outputs());
    // A new model cannot be compiled on it either.
    assert!(GpuScorer::new(&model, ctx).is_err());
}

#[test]
fn two_batches_in_flight_from_one_caller() {
    let Some(ctx) = context() else { return };
    let (name, model) = golden_models().into_iter().next().unwrap();
    let options = chunks_of(700, &model);
    let scorer = GpuScorer::with_options(&model, ctx, options).unwrap();
    let a = columns_with_gaps(&model, 3000, 21);
    let b = columns_with_gaps(&model, 1000, 22);
    let want_a = check(&name, &scorer, &model, &a);
    let want_b = check(&name, &scorer, &model, &b);
    let fa: Vec<&[f32]> = a.iter().map(Vec::as_slice).collect();
    let fb: Vec<&[f32]> = b.iter().map(Vec::as_slice).collect();
    // Both submitted before either is finished, then finished in order.
    let pending_a = scorer.submit(&fa, 3000).unwrap();
    let pending_b = scorer.submit(&fb, 1000).unwrap();
    let got_a = score_with(&model, &a, 3000, |_, o| {
        assert_eq!(scorer.finish(pending_a, &fa, o).unwrap().chunks, 5);
    });
    let got_b = score_with(&model, &b, 1000, |_, o| {
        assert_eq!(scorer.finish(pending_b, &fb, o).unwrap().chunks, 2);
    });
    assert_eq!(got_a, want_a);
    assert_eq!(got_b, want_b);
    // Batches dropped unfinished give their slots up: the pool (four
    // slots) still serves, where a leak would leave the next call waiting.
    for _ in 0..4 {
        drop(scorer.submit(&fa, 3000).unwrap());
    }
    let again = score_with(&model, &a, 3000, |f, o| {
        scorer.score(f, o).unwrap();
    });
    assert_eq!(again, want_a);
}

#[test]
fn submit_never_waits_for_a_taken_pool() {
    let Some(ctx) = context() else { return };
    let (name, model) = golden_models().into_iter().next().unwrap();
    let options = chunks_of(500, &model);
    let scorer = GpuScorer::with_options(&model, ctx, options).unwrap();
    let columns = columns_with_gaps(&model, 2000, 31);
    let want = check(&name, &scorer, &model, &columns);
    let f: Vec<&[f32]> = columns.iter().map(Vec::as_slice).collect();
    // Two batches take all four slots; a third submit returns at once with
    // nothing in flight, and finish then does its work.
    let first = scorer.submit(&f, 2000).unwrap();
    let second = scorer.submit(&f, 2000).unwrap();
    assert!(first.is_in_flight() && second.is_in_flight());
    let third = scorer.submit(&f, 2000).unwrap();
    assert!(!third.is_in_flight());
    for batch in [first, second, third] {
        let got = score_with(&model, &columns, 2000, |_, o| {
            scorer.finish(batch, &f, o).unwrap();
        });
        assert_eq!(got, want);
    }
}

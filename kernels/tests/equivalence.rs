//! Every fast CPU scorer equals the reference scorer on any valid input.
//!
//! Tolerances, per family:
//! - trees: 1e-6 absolute. The fast kernel sums the same leaves in the same
//!   order in f64, but stores leaves as f32 (to keep a 500-tree forest in
//!   L2); each leaf moves by at most 2^-24 of itself, and the fixtures' leaves
//!   are below 1, so a margin moves by < trees × 6e-8 before the link.
//! - linear: 1e-5 × (1 + Σ|w·x|). The fast kernel accumulates in f32 with
//!   FMAs and uses a polynomial exp (≤ 3 ulp); the reference uses f64.
//! - MLP: 1e-4 × (1 + |reference|): f32 accumulation through every layer,
//!   and tanh computed from the polynomial exp.
//!
//! NaN must come out where the reference puts NaN, and nowhere else.

use proptest::prelude::*;
use roo_kernels::cpu::{CpuScorer, Isa};
use roo_kernels::{reference, Model};

mod support;
use support::*;

fn assert_equivalent(name: &str, model: &Model, rows: usize, seed: u64) {
    let columns = random_columns(model, rows, seed);
    let want = score_with(model, &columns, rows, |f, o| reference::score(model, f, o));
    for isa in Isa::all().into_iter().filter(|i| i.available()) {
        let scorer = CpuScorer::with_isa(model, isa);
        let got = score_with(model, &columns, rows, |f, o| scorer.score(f, o));
        let par = score_with(model, &columns, rows, |f, o| {
            scorer.score_parallel(f, o, 1000)
        });
        assert_eq!(
            got, par,
            "{name} {isa:?}: parallel scoring differs from sequential"
        );
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            for r in 0..rows {
                let (g, w) = (g[r], w[r]);
                let ok = if w.is_nan() {
                    g.is_nan()
                } else {
                    (g as f64 - w as f64).abs() <= tolerance(model, &columns, r, w)
                };
                assert!(ok, "{name} {isa:?} rows={rows} output {k} row {r}: fast {g} reference {w}; inputs {:?}",
                    columns.iter().map(|c| c[r]).collect::<Vec<_>>());
            }
        }
    }
}

#[test]
fn every_golden_model_on_every_batch_size() {
    for (name, model) in golden_models() {
        for (i, rows) in BATCH_SIZES.into_iter().enumerate() {
            assert_equivalent(&name, &model, rows, 0x9e37_79b9 + i as u64);
        }
    }
}

#[test]
fn deep_trees_use_the_compact_layout_and_agree() {
    let model = deep_forest(42);
    let scorer = CpuScorer::new(&model);
    let (perfect, compact) = scorer.tree_layouts().unwrap();
    assert!(compact > 0, "{perfect} perfect, {compact} compact");
    for rows in BATCH_SIZES {
        assert_equivalent("deep forest", &model, rows, rows as u64 + 7);
    }
}

#[test]
fn golden_models_exercise_both_tree_layouts() {
    let (mut perfect, mut compact) = (0, 0);
    for (_, model) in golden_models() {
        if let Some((p, c)) = CpuScorer::new(&model).tree_layouts() {
            perfect += p;
            compact += c;
        }
    }
    assert!(
        perfect > 0 && compact > 0,
        "{perfect} perfect, {compact} compact"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn random_inputs_agree_with_the_reference(model_index in 0usize..64, rows in 0usize..600, seed in any::<u64>()) {
        let models = golden_models();
        let (name, model) = &models[model_index % models.len()];
        assert_equivalent(name, model, rows, seed);
    }
}

/// Infinite and NaN inputs to every family, not just trees: the fast
/// scorers must give the reference's NaN/inf results (an MLP's padding
/// units once turned 0 × inf into NaN that leaked into real outputs).
#[test]
fn non_finite_inputs_agree_for_every_family() {
    for (name, model) in golden_models() {
        if matches!(model.body, roo_kernels::ModelBody::Trees(_)) {
            continue;
        }
        let rows = 4097;
        let mut columns = random_columns(&model, rows, 11);
        let mut rng = Rng(12);
        for column in &mut columns {
            for v in column.iter_mut() {
                match rng.next() % 61 {
                    0 => *v = f32::NAN,
                    1 => *v = f32::INFINITY,
                    2 => *v = f32::NEG_INFINITY,
                    _ => {}
                }
            }
        }
        let want = score_with(&model, &columns, rows, |f, o| {
            reference::score(&model, f, o)
        });
        for isa in Isa::all().into_iter().filter(|i| i.available()) {
            let scorer = CpuScorer::with_isa(&model, isa);
            let got = score_with(&model, &columns, rows, |f, o| scorer.score(f, o));
            for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                for r in 0..rows {
                    let (g, w) = (g[r], w[r]);
                    let ok = if w.is_nan() {
                        g.is_nan()
                    } else if w.is_infinite() || g.is_infinite() {
                        g == w
                    } else {
                        (g as f64 - w as f64).abs() <= tolerance(&model, &columns, r, w)
                    };
                    assert!(
                        ok,
                        "{name} {isa:?} output {k} row {r}: fast {g} reference {w}; inputs {:?}",
                        columns.iter().map(|c| c[r]).collect::<Vec<_>>()
                    );
                }
            }
        }
    }
}

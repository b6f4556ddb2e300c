//! Scalar reference scorers: simple, obviously correct, the oracle.
//!
//! Every fast scorer is tested against these. They walk one row at a time,
//! accumulate margins in f64 and apply the model's link, so their only
//! rounding is the final conversion to f32.

use crate::model::{
    Activation, LinearModel, Link, MlpModel, Model, ModelBody, Node, Tree, TreeEnsemble,
    ZERO_THRESHOLD,
};

/// Scores `rows` rows: `features[j][r]` is feature `j` (in the model's order)
/// of row `r`; `out[k][r]` receives output `k` of row `r`.
///
/// # Panics
/// When the slices do not match the model's shape: that is a caller's bug,
/// not bad input (binding checks the input against the model first).
pub fn score(model: &Model, features: &[&[f32]], out: &mut [&mut [f32]]) {
    let rows = check_shapes(model, features, out);
    match &model.body {
        ModelBody::Linear(m) => linear(m, features, rows, out),
        ModelBody::Trees(t) => trees(t, features, rows, out),
        ModelBody::Mlp(m) => mlp(m, features, rows, out),
    }
}

/// [`score`] split into chunks of `chunk_rows` rows across the current rayon pool.
pub fn score_parallel(
    model: &Model,
    features: &[&[f32]],
    out: &mut [&mut [f32]],
    chunk_rows: usize,
) {
    check_shapes(model, features, out);
    crate::cpu::for_each_chunk(features, out, chunk_rows, |f, o| score(model, f, o));
}

fn check_shapes(model: &Model, features: &[&[f32]], out: &[&mut [f32]]) -> usize {
    crate::cpu::check_shapes(model.n_features(), model.n_outputs(), features, out)
}

fn linear(m: &LinearModel, features: &[&[f32]], rows: usize, out: &mut [&mut [f32]]) {
    let n = features.len();
    let mut margins = vec![0.0f64; m.bias.len()];
    for r in 0..rows {
        for (k, margin) in margins.iter_mut().enumerate() {
            let weights = &m.weights[k * n..(k + 1) * n];
            *margin = m.bias[k]
                + weights
                    .iter()
                    .zip(features)
                    .map(|(w, f)| w * f[r] as f64)
                    .sum::<f64>();
        }
        write_outputs(m.link, &mut margins, r, out);
    }
}

fn mlp(m: &MlpModel, features: &[&[f32]], rows: usize, out: &mut [&mut [f32]]) {
    let width = m
        .layers
        .iter()
        .map(|l| l.outputs)
        .max()
        .unwrap_or(0)
        .max(features.len());
    let (mut x, mut y) = (vec![0f64; width], vec![0f64; width]);
    for r in 0..rows {
        for (j, f) in features.iter().enumerate() {
            x[j] = f[r] as f64;
        }
        for layer in &m.layers {
            let rows = layer.weights.chunks_exact(layer.inputs);
            for ((y, w), b) in y.iter_mut().zip(rows).zip(&layer.bias) {
                let sum = *b as f64 + w.iter().zip(&x).map(|(w, x)| *w as f64 * x).sum::<f64>();
                *y = activate(layer.activation, sum);
            }
            std::mem::swap(&mut x, &mut y);
        }
        let outputs = m.layers.last().map_or(0, |l| l.outputs);
        write_outputs(m.link, &mut x[..outputs], r, out);
    }
}

/// One unit's activation, in f64.
pub fn activate(activation: Activation, v: f64) -> f64 {
    match activation {
        Activation::Identity => v,
        // NaN stays NaN: an MLP has no missing-value rule (`f64::max` would hide it).
        Activation::Relu => {
            if v.is_nan() {
                v
            } else {
                v.max(0.0)
            }
        }
        Activation::Tanh => v.tanh(),
        Activation::Sigmoid => 1.0 / (1.0 + (-v).exp()),
    }
}

// `r` indexes a row across every feature column: not one slice to iterate.
#[allow(clippy::needless_range_loop)]
fn trees(t: &TreeEnsemble, features: &[&[f32]], rows: usize, out: &mut [&mut [f32]]) {
    let mut margins = vec![0.0f64; t.n_groups];
    for r in 0..rows {
        margins.copy_from_slice(&t.base_margin);
        for tree in &t.trees {
            margins[tree.group as usize] += leaf_value(tree, |f| features[f as usize][r]);
        }
        write_outputs(t.link, &mut margins, r, out);
    }
}

/// Walks one tree for one row; `x(f)` reads feature `f` of the row.
pub fn leaf_value(tree: &Tree, x: impl Fn(u32) -> f32) -> f64 {
    let mut i = 0usize;
    loop {
        match &tree.nodes[i] {
            Node::Leaf { value } => return *value,
            Node::Numeric {
                feature,
                threshold,
                missing_left,
                zero_is_missing,
                left,
                right,
            } => {
                let v = x(*feature);
                let go_left = if v.is_nan() || (*zero_is_missing && v.abs() <= ZERO_THRESHOLD) {
                    *missing_left
                } else {
                    v < *threshold
                };
                i = if go_left { *left } else { *right } as usize;
            }
            Node::Categorical {
                feature,
                bits_start,
                bits_end,
                left,
                right,
            } => {
                let v = x(*feature);
                let bits = &tree.category_bits[*bits_start as usize..*bits_end as usize];
                // `as` truncates toward zero and saturates, as LightGBM's cast does
                // on x86 for the values that matter (NaN is handled first).
                let go_left = !v.is_nan() && {
                    let c = v as i32;
                    c >= 0 && in_bitset(bits, c as u32)
                };
                i = if go_left { *left } else { *right } as usize;
            }
        }
    }
}

fn in_bitset(bits: &[u32], c: u32) -> bool {
    bits.get((c / 32) as usize)
        .is_some_and(|w| (w >> (c % 32)) & 1 == 1)
}

/// Applies the link to one row's margins and stores the outputs.
pub(crate) fn write_outputs(link: Link, margins: &mut [f64], r: usize, out: &mut [&mut [f32]]) {
    match link {
        Link::Identity => {
            for (k, m) in margins.iter().enumerate() {
                out[k][r] = *m as f32;
            }
        }
        Link::Sigmoid { scale } => {
            for (k, m) in margins.iter().enumerate() {
                out[k][r] = (1.0 / (1.0 + (-scale * m).exp())) as f32;
            }
        }
        Link::Softmax => {
            let max = margins.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let mut sum = 0.0;
            for m in margins.iter_mut() {
                *m = (*m - max).exp();
                sum += *m;
            }
            for (k, m) in margins.iter().enumerate() {
                out[k][r] = (m / sum) as f32;
            }
        }
        Link::ArgMax => {
            // The first of equal maxima, as XGBoost's std::max_element picks.
            let mut best = 0;
            for (k, m) in margins.iter().enumerate() {
                if *m > margins[best] {
                    best = k;
                }
            }
            out[0][r] = best as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ModelFormat, ModelVersion};

    fn stump(threshold: f32, missing_left: bool, zero_is_missing: bool) -> Tree {
        Tree {
            group: 0,
            nodes: vec![
                Node::Numeric {
                    feature: 0,
                    threshold,
                    missing_left,
                    zero_is_missing,
                    left: 1,
                    right: 2,
                },
                Node::Leaf { value: -1.0 },
                Node::Leaf { value: 1.0 },
            ],
            category_bits: vec![],
        }
    }

    #[test]
    fn numeric_split_is_strict_less_than_and_routes_missing() {
        let t = stump(0.5, true, false);
        assert_eq!(leaf_value(&t, |_| 0.4), -1.0);
        assert_eq!(
            leaf_value(&t, |_| 0.5),
            1.0,
            "a value on the threshold goes right"
        );
        assert_eq!(leaf_value(&t, |_| f32::NAN), -1.0);
        assert_eq!(leaf_value(&t, |_| f32::INFINITY), 1.0);
        assert_eq!(leaf_value(&t, |_| f32::NEG_INFINITY), -1.0);
        let z = stump(-0.5, true, true);
        assert_eq!(
            leaf_value(&z, |_| 0.0),
            -1.0,
            "zero is missing: default side"
        );
        assert_eq!(leaf_value(&z, |_| 1e-36), -1.0);
        assert_eq!(leaf_value(&z, |_| 1e-30), 1.0);
    }

    #[test]
    fn categorical_split_tests_bit_membership() {
        let t = Tree {
            group: 0,
            nodes: vec![
                Node::Categorical {
                    feature: 0,
                    bits_start: 0,
                    bits_end: 2,
                    left: 1,
                    right: 2,
                },
                Node::Leaf { value: -1.0 },
                Node::Leaf { value: 1.0 },
            ],
            // categories 1, 4 and 33
            category_bits: vec![0b10010, 0b10],
        };
        for (x, expected) in [
            (1.0, -1.0),
            (4.7, -1.0),
            (33.0, -1.0),
            (2.0, 1.0),
            (64.0, 1.0),
            (-1.0, 1.0),
            (f32::NAN, 1.0),
            (f32::INFINITY, 1.0),
            (1e10, 1.0),
        ] {
            assert_eq!(leaf_value(&t, |_| x), expected, "x = {x}");
        }
    }

    #[test]
    fn parallel_scoring_equals_sequential() {
        let model = Model {
            version: ModelVersion::of_bytes(b"test"),
            format: ModelFormat::LinearJson,
            feature_names: vec!["a".into(), "b".into()],
            named_features: true,
            body: ModelBody::Linear(LinearModel {
                weights: vec![0.5, -1.0, 2.0, 0.25, 0.0, 1.0],
                bias: vec![0.1, -0.2, 0.3],
                link: Link::Softmax,
            }),
        };
        let a: Vec<f32> = (0..1001).map(|i| i as f32 * 0.01).collect();
        let b: Vec<f32> = (0..1001).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut seq = vec![vec![0f32; 1001]; 3];
        let mut par = vec![vec![0f32; 1001]; 3];
        score(
            &model,
            &[&a, &b],
            &mut seq.iter_mut().map(|c| &mut c[..]).collect::<Vec<_>>(),
        );
        score_parallel(
            &model,
            &[&a, &b],
            &mut par.iter_mut().map(|c| &mut c[..]).collect::<Vec<_>>(),
            64,
        );
        assert_eq!(seq, par);
        for r in 0..1001 {
            let total: f32 = seq.iter().map(|column| column[r]).sum();
            assert!((total - 1.0).abs() < 1e-6);
        }
    }
}

//! Linear, logistic and softmax models: FMAs down the feature columns.
//!
//! Bytes per row are `4 * n_features` in and `4 * n_outputs` out, one FMA
//! per byte pair: memory-bound from DRAM (DESIGN.md: ~55M rows/s for 30
//! features), compute-bound only when the batch sits in cache.

use super::isa::multiversion;
use super::math::{exp_f32, madd, sigmoid_f32};
use crate::model::{LinearModel, Link};

/// Rows per block: the output block (4 KiB per output) stays in L1 while
/// the feature columns stream past it.
pub(crate) const BLOCK_ROWS: usize = 1024;

pub(crate) struct LinearKernel {
    n_features: usize,
    /// Row-major `[output][feature]`.
    weights: Vec<f32>,
    bias: Vec<f32>,
    link: Link,
}

impl LinearKernel {
    pub fn new(m: &LinearModel, n_features: usize) -> Self {
        Self {
            n_features,
            weights: m.weights.iter().map(|&w| w as f32).collect(),
            bias: m.bias.iter().map(|&b| b as f32).collect(),
            link: m.link,
        }
    }

    pub fn score(&self, isa: super::Isa, features: &[&[f32]], out: &mut [&mut [f32]]) {
        score_linear(isa, self, features, out);
    }
}

multiversion!(fn score_linear(k: &LinearKernel, features: &[&[f32]], out: &mut [&mut [f32]]) => linear_body);

#[inline(always)]
fn linear_body<const FMA: bool>(k: &LinearKernel, features: &[&[f32]], out: &mut [&mut [f32]]) {
    let rows = out[0].len();
    let n = k.n_features;
    let margins = k.bias.len();
    // Link scratch: on the stack, nothing allocated per call.
    let mut max = [0f32; BLOCK_ROWS];
    let mut sum = [0f32; BLOCK_ROWS];
    let mut start = 0;
    while start < rows {
        let end = (start + BLOCK_ROWS).min(rows);
        for (o, column) in out.iter_mut().enumerate().take(margins) {
            let acc = &mut column[start..end];
            acc.fill(k.bias[o]);
            let weights = &k.weights[o * n..(o + 1) * n];
            for (w, f) in weights.iter().zip(features) {
                for (a, x) in acc.iter_mut().zip(&f[start..end]) {
                    *a = madd::<FMA>(*w, *x, *a);
                }
            }
        }
        apply_link::<FMA>(k.link, out, start, end, &mut max, &mut sum);
        start = end;
    }
}

/// Applies `link` in place to rows `start..end` of the margin columns `out`
/// (at most `BLOCK_ROWS` rows; `max` and `sum` are scratch of that size).
#[inline(always)]
pub(crate) fn apply_link<const FMA: bool>(
    link: Link,
    out: &mut [&mut [f32]],
    start: usize,
    end: usize,
    max: &mut [f32; BLOCK_ROWS],
    sum: &mut [f32; BLOCK_ROWS],
) {
    let len = end - start;
    match link {
        Link::Identity => {}
        Link::Sigmoid { scale } => {
            let scale = scale as f32;
            for a in &mut out[0][start..end] {
                *a = sigmoid_f32::<FMA>(*a, scale);
            }
        }
        Link::Softmax => {
            let (max, sum) = (&mut max[..len], &mut sum[..len]);
            max.fill(f32::NEG_INFINITY);
            sum.fill(0.0);
            for column in out.iter() {
                for (m, a) in max.iter_mut().zip(&column[start..end]) {
                    *m = m.max(*a);
                }
            }
            for column in out.iter_mut() {
                for ((a, m), s) in column[start..end]
                    .iter_mut()
                    .zip(max.iter())
                    .zip(sum.iter_mut())
                {
                    *a = exp_f32::<FMA>(*a - *m);
                    *s += *a;
                }
            }
            for column in out.iter_mut() {
                for (a, s) in column[start..end].iter_mut().zip(sum.iter()) {
                    *a /= *s;
                }
            }
        }
        Link::ArgMax => unreachable!("argmax models are trees; the tree kernel applies their link"),
    }
}

//! Multilayer perceptrons: dense layers fused over a block of rows.
//!
//! Back of the envelope for 30→64→32→1: 4,000 multiply-adds per row. A
//! 16-wide FMA does 16 of them: 264 FMA instructions per row with the last
//! layer padded to 8 units. This core peaks at 4.9 G FMA instructions a
//! second (measured, bench/examples/tune.rs), so ~54 ns per row is the limit;
//! 8 units × 32 rows of accumulators in AVX-512 registers keep the loads
//! below the FMAs. (Written with intrinsics: from portable code LLVM
//! unrolled the tile into scalar FMAs with spilled accumulators.) Other
//! instruction sets run one unit's column at a time over the block, a loop
//! the compiler does vectorise. Activations stay in L1 between layers; numpy instead writes
//! each layer's matrix to memory and reads it back for the bias, the
//! activation and the next layer.

use super::isa::multiversion;
use super::linear::{apply_link, BLOCK_ROWS as LINK_ROWS};
use super::math::{exp_f32, madd, sigmoid_f32};
use crate::model::{Activation, DenseLayer, Link, MlpModel};

/// Rows per block; 256 rows × 64 units × 4 bytes = 64 KiB per activation buffer.
const BLOCK_ROWS: usize = 256;
const _: () = assert!(BLOCK_ROWS <= LINK_ROWS);
/// Rows per register accumulator (one AVX-512 vector of f32).
const ROW_TILE: usize = 16;
/// Output units accumulated together: each input load feeds this many FMAs.
const UNIT_TILE: usize = 8;

pub(crate) struct MlpKernel {
    layers: Vec<TiledLayer>,
    /// Real outputs of the last layer (the tiled layer may have padding units).
    outputs: usize,
    link: Link,
    width: usize,
}

/// A dense layer padded to whole tiles of UNIT_TILE units. Padding units have
/// zero weights and bias, and the next layer gives them zero weights, so they
/// change nothing. Weights are tile-major, `[tile][input][unit]`: the
/// UNIT_TILE weights one input feeds are adjacent.
struct TiledLayer {
    inputs: usize,
    /// Real units (the rest of the last tile is padding).
    units: usize,
    tiles: usize,
    weights: Vec<f32>,
    bias: Vec<f32>,
    activation: Activation,
}

impl TiledLayer {
    fn new(layer: &DenseLayer, inputs: usize) -> Self {
        let tiles = layer.outputs.div_ceil(UNIT_TILE);
        let mut weights = vec![0f32; tiles * inputs * UNIT_TILE];
        let mut bias = vec![0f32; tiles * UNIT_TILE];
        for o in 0..layer.outputs {
            bias[o] = layer.bias[o];
            for i in 0..layer.inputs {
                weights[((o / UNIT_TILE) * inputs + i) * UNIT_TILE + o % UNIT_TILE] =
                    layer.weights[o * layer.inputs + i];
            }
        }
        Self {
            inputs,
            units: layer.outputs,
            tiles,
            weights,
            bias,
            activation: layer.activation,
        }
    }
}

impl MlpKernel {
    pub fn new(m: &MlpModel, n_features: usize) -> Self {
        let mut layers = Vec::with_capacity(m.layers.len());
        let mut inputs = n_features;
        for layer in &m.layers {
            let tiled = TiledLayer::new(layer, inputs);
            inputs = tiled.tiles * UNIT_TILE;
            layers.push(tiled);
        }
        let width = layers
            .iter()
            .map(|l| l.tiles * UNIT_TILE)
            .chain([n_features])
            .max()
            .unwrap_or(1);
        Self {
            layers,
            outputs: m.layers.last().map_or(0, |l| l.outputs),
            link: m.link,
            width,
        }
    }

    pub fn score(&self, isa: super::Isa, features: &[&[f32]], out: &mut [&mut [f32]]) {
        #[cfg(target_arch = "x86_64")]
        if isa == super::Isa::Avx512 {
            // SAFETY: a scorer's ISA is checked available when it is built.
            unsafe { score_avx512(self, features, out) };
            return;
        }
        score_portable(isa, self, features, out);
    }
}

multiversion!(fn score_portable(k: &MlpKernel, features: &[&[f32]], out: &mut [&mut [f32]]) => portable_body);

#[inline(always)]
fn portable_body<const FMA: bool>(k: &MlpKernel, features: &[&[f32]], out: &mut [&mut [f32]]) {
    mlp_body::<FMA, false>(k, features, out);
}

/// # Safety
/// The CPU must support AVX-512 F/BW/DQ/VL, AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
unsafe fn score_avx512(k: &MlpKernel, features: &[&[f32]], out: &mut [&mut [f32]]) {
    mlp_body::<true, true>(k, features, out);
}

/// Applies `activation` to a column. The match is outside the loops so that
/// each loop vectorises (a match per element compiled to a jump table).
#[inline(always)]
fn activate_all<const FMA: bool>(activation: Activation, column: &mut [f32]) {
    match activation {
        Activation::Identity => {}
        // NaN stays NaN (NaN < 0 is false), as in the reference.
        Activation::Relu => {
            for v in column {
                *v = if *v < 0.0 { 0.0 } else { *v };
            }
        }
        Activation::Tanh => {
            for v in column {
                *v = 1.0 - 2.0 / (exp_f32::<FMA>(2.0 * *v) + 1.0);
            }
        }
        Activation::Sigmoid => {
            for v in column {
                *v = sigmoid_f32::<FMA>(*v, 1.0);
            }
        }
    }
}

#[inline(always)]
fn mlp_body<const FMA: bool, const AVX512: bool>(
    k: &MlpKernel,
    features: &[&[f32]],
    out: &mut [&mut [f32]],
) {
    let rows = out[0].len();
    // Two activation buffers, column-major: unit u of the block at [u * BLOCK_ROWS..].
    let mut a = vec![0f32; k.width * BLOCK_ROWS];
    let mut b = vec![0f32; k.width * BLOCK_ROWS];
    let mut max = [0f32; LINK_ROWS];
    let mut sum = [0f32; LINK_ROWS];
    let mut start = 0;
    while start < rows {
        let end = (start + BLOCK_ROWS).min(rows);
        let n = end - start;
        // Whole row tiles (32 rows for the AVX-512 kernel); rows past `n` hold
        // stale values and are never written out.
        let tiled = n.div_ceil(2 * ROW_TILE) * 2 * ROW_TILE;
        for (j, f) in features.iter().enumerate() {
            a[j * BLOCK_ROWS..j * BLOCK_ROWS + n].copy_from_slice(&f[start..end]);
        }
        for layer in &k.layers {
            // A narrow layer (a model's head) would waste most of an 8-unit tile.
            #[cfg(target_arch = "x86_64")]
            if AVX512 && layer.units >= UNIT_TILE {
                // SAFETY: `AVX512` is only set by `score_avx512`, whose caller
                // checked the CPU; `tiled` is a multiple of 32, at most BLOCK_ROWS.
                unsafe { dense_avx512(layer, &a, &mut b, tiled) };
            } else {
                dense::<FMA>(layer, &a, &mut b, tiled);
            }
            #[cfg(not(target_arch = "x86_64"))]
            dense::<FMA>(layer, &a, &mut b, tiled);
            // Padding units are 0 whatever the inputs: the AVX-512 kernel
            // computes them as 0 × x, which is NaN for an infinite x, a stale
            // value could be NaN, and the next layer's zero weights would carry
            // a NaN on (0 × NaN is NaN).
            for column in b
                .chunks_exact_mut(BLOCK_ROWS)
                .take(layer.tiles * UNIT_TILE)
                .skip(layer.units)
            {
                column[..tiled].fill(0.0);
            }
            for column in b.chunks_exact_mut(BLOCK_ROWS).take(layer.tiles * UNIT_TILE) {
                activate_all::<FMA>(layer.activation, &mut column[..tiled]);
            }
            std::mem::swap(&mut a, &mut b);
        }
        for (o, column) in out.iter_mut().enumerate().take(k.outputs) {
            column[start..end].copy_from_slice(&a[o * BLOCK_ROWS..o * BLOCK_ROWS + n]);
        }
        apply_link::<FMA>(k.link, out, start, end, &mut max, &mut sum);
        start = end;
    }
}

/// One layer's pre-activations over `rows` rows of the block, one unit's
/// column at a time (a long loop the compiler vectorises on any ISA).
/// Padding units are left to the caller, which sets them to 0.
#[inline(always)]
fn dense<const FMA: bool>(layer: &TiledLayer, input: &[f32], output: &mut [f32], rows: usize) {
    let inputs = layer.inputs;
    for (o, column) in output
        .chunks_exact_mut(BLOCK_ROWS)
        .take(layer.units)
        .enumerate()
    {
        let (t, u) = (o / UNIT_TILE, o % UNIT_TILE);
        let dst = &mut column[..rows];
        dst.fill(layer.bias[o]);
        for i in 0..inputs {
            let w = layer.weights[(t * inputs + i) * UNIT_TILE + u];
            for (d, x) in dst
                .iter_mut()
                .zip(&input[i * BLOCK_ROWS..i * BLOCK_ROWS + rows])
            {
                *d = madd::<FMA>(w, *x, *d);
            }
        }
    }
}

/// One layer's pre-activations: 8 units × 32 rows of accumulators in
/// registers (16 zmm), so each input's 8 broadcast weights feed 16 FMAs.
/// Measured on the 30-64-32-1 benchmark MLP: 82 ns per row, against 103 for
/// an 8 × 16 tile, whose loads (one per FMA for the broadcast weights) held it
/// to half the FMA peak.
///
/// # Safety
/// AVX-512F must be available; `rows` is a multiple of 32, at most BLOCK_ROWS;
/// `input` holds `layer.inputs` columns and `output` `layer.tiles * 8` columns
/// of BLOCK_ROWS each.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dense_avx512(layer: &TiledLayer, input: &[f32], output: &mut [f32], rows: usize) {
    use std::arch::x86_64::*;
    const ROWS: usize = 2 * ROW_TILE;
    let inputs = layer.inputs;
    debug_assert!(rows.is_multiple_of(ROWS) && rows <= BLOCK_ROWS);
    debug_assert!(
        input.len() >= inputs * BLOCK_ROWS && output.len() >= layer.tiles * UNIT_TILE * BLOCK_ROWS
    );
    for t in 0..layer.tiles {
        let weights = &layer.weights[t * inputs * UNIT_TILE..(t + 1) * inputs * UNIT_TILE];
        let bias = &layer.bias[t * UNIT_TILE..(t + 1) * UNIT_TILE];
        for r in (0..rows).step_by(ROWS) {
            let mut low = [_mm512_setzero_ps(); UNIT_TILE];
            let mut high = [_mm512_setzero_ps(); UNIT_TILE];
            for ((l, h), b) in low.iter_mut().zip(high.iter_mut()).zip(bias) {
                *l = _mm512_set1_ps(*b);
                *h = *l;
            }
            for (i, w) in weights.chunks_exact(UNIT_TILE).enumerate() {
                // SAFETY: `i < inputs` and `r + 32 <= BLOCK_ROWS`, within `input`.
                let x0 = _mm512_loadu_ps(input.as_ptr().add(i * BLOCK_ROWS + r));
                let x1 = _mm512_loadu_ps(input.as_ptr().add(i * BLOCK_ROWS + r + ROW_TILE));
                for ((l, h), w) in low.iter_mut().zip(high.iter_mut()).zip(w) {
                    let w = _mm512_set1_ps(*w);
                    *l = _mm512_fmadd_ps(w, x0, *l);
                    *h = _mm512_fmadd_ps(w, x1, *h);
                }
            }
            for (u, (l, h)) in low.iter().zip(&high).enumerate() {
                // SAFETY: unit `t * 8 + u` is below `tiles * 8`; `r + 32 <= BLOCK_ROWS`.
                let at = output
                    .as_mut_ptr()
                    .add((t * UNIT_TILE + u) * BLOCK_ROWS + r);
                _mm512_storeu_ps(at, *l);
                _mm512_storeu_ps(at.add(ROW_TILE), *h);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::cpu::{CpuScorer, Isa};
    use crate::model::{
        Activation, DenseLayer, Link, MlpModel, Model, ModelBody, ModelFormat, ModelVersion,
    };
    use crate::reference;

    fn layer(inputs: usize, outputs: usize, activation: Activation, seed: f32) -> DenseLayer {
        DenseLayer {
            inputs,
            outputs,
            weights: (0..inputs * outputs)
                .map(|i| ((i as f32 + seed) * 0.37).sin())
                .collect(),
            bias: (0..outputs).map(|o| (o as f32 - seed) * 0.1).collect(),
            activation,
        }
    }

    /// A narrow hidden layer (4 units, padded to a tile of 8) between two
    /// others, with NaN rows in the first block: the next block's clean rows
    /// must not see stale NaN through the padding units.
    #[test]
    fn narrow_layers_and_nan_rows_do_not_leak_across_blocks() {
        let model = Model {
            version: ModelVersion::of_bytes(b"narrow"),
            format: ModelFormat::Onnx,
            feature_names: vec!["a".into(), "b".into(), "c".into()],
            named_features: false,
            body: ModelBody::Mlp(MlpModel {
                layers: vec![
                    layer(3, 4, Activation::Relu, 1.0),
                    layer(4, 5, Activation::Tanh, 2.0),
                    layer(5, 2, Activation::Identity, 3.0),
                ],
                link: Link::Softmax,
            }),
        };
        let rows = 700;
        let columns: Vec<Vec<f32>> = (0..3)
            .map(|j| {
                (0..rows)
                    .map(|r| {
                        if r < 100 && j == 1 {
                            f32::NAN
                        } else {
                            (r * (j + 1)) as f32 * 0.01 - 2.0
                        }
                    })
                    .collect()
            })
            .collect();
        let features: Vec<&[f32]> = columns.iter().map(Vec::as_slice).collect();
        let mut want = vec![vec![0f32; rows]; 2];
        reference::score(
            &model,
            &features,
            &mut want.iter_mut().map(Vec::as_mut_slice).collect::<Vec<_>>(),
        );
        for isa in Isa::all().into_iter().filter(|i| i.available()) {
            let mut got = vec![vec![0f32; rows]; 2];
            CpuScorer::with_isa(&model, isa).score(
                &features,
                &mut got.iter_mut().map(Vec::as_mut_slice).collect::<Vec<_>>(),
            );
            for r in 0..rows {
                for k in 0..2 {
                    let (g, w) = (got[k][r], want[k][r]);
                    assert_eq!(g.is_nan(), w.is_nan(), "{isa:?} row {r}");
                    assert!(
                        w.is_nan() || (g - w).abs() < 1e-5,
                        "{isa:?} row {r}: {g} vs {w}"
                    );
                }
            }
            assert!(
                got[0][100..].iter().all(|v| v.is_finite()),
                "{isa:?}: clean rows stayed clean"
            );
        }
    }
}

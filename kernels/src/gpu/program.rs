//! A model turned into what the GPU runs: one WGSL module (the family's
//! shader with the model's shape as constants) and its parameter buffers,
//! built once per model version.

use crate::model::{Activation, LinearModel, Link, MlpModel, Model, ModelBody, Node, TreeEnsemble};

use super::GpuError;

const COMMON: &str = include_str!("../../../shaders/common.wgsl");
const TREES: &str = include_str!("../../../shaders/trees.wgsl");
const LINEAR: &str = include_str!("../../../shaders/linear.wgsl");
const MLP: &str = include_str!("../../../shaders/mlp.wgsl");
const FIXUPS: &str = include_str!("../../../shaders/fixups.wgsl");

/// Invocations per workgroup.
pub(crate) const WORKGROUP: u32 = 64;
/// Workgroups along x in one dispatch row; rows beyond go along y.
pub(crate) const DISPATCH_X: u32 = 32768;
/// Rows with a non-finite input a chunk lists for the CPU; past this the
/// host finds them itself.
pub(crate) const FIXUP_CAP: u32 = 1024;
/// The widest MLP layer the shader holds per row (two arrays of floats
/// per invocation); wider models stay on the CPU.
const MLP_WIDTH_MAX: usize = 1024;
/// Feature indices live in 28 bits of a node.
const FEATURE_MAX: usize = 1 << 28;

const LEAF: u32 = 0x8000_0000;
const MISSING_LEFT: u32 = 0x4000_0000;
const ZERO_MISSING: u32 = 0x2000_0000;
const CATEGORICAL: u32 = 0x1000_0000;

pub(crate) struct Program {
    pub source: String,
    /// Parameter buffers and their bindings, after the input (binding 0).
    pub params: Vec<(u32, Vec<u8>)>,
    /// The output's binding; the fixup list's is the next one when present.
    pub output_binding: u32,
    pub fixups: bool,
}

/// The order key of an f32's bits: unsigned order of keys is float order,
/// with -0 folded onto +0. As in trees.wgsl.
pub(crate) fn order_key(bits: u32) -> u32 {
    let b = if bits == 0x8000_0000 { 0 } else { bits };
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

fn link_code(link: Link) -> (u32, f32) {
    match link {
        Link::Identity => (0, 1.0),
        Link::Sigmoid { scale } => (1, scale as f32),
        Link::Softmax => (2, 1.0),
        Link::ArgMax => (3, 1.0),
    }
}

fn words(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|w| w.to_le_bytes()).collect()
}

fn floats(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|w| w.to_le_bytes()).collect()
}

fn module(constants: &[(&str, u64)], family: &str) -> String {
    let mut source = String::new();
    for (name, value) in constants {
        source.push_str(&format!("const {name}: u32 = {value}u;\n"));
    }
    source.push_str(&format!(
        "const WG: u32 = {WORKGROUP}u;\nconst DISPATCH_X: u32 = {DISPATCH_X}u;\nconst FIXUP_CAP: u32 = {FIXUP_CAP}u;\n"
    ));
    source.push_str(COMMON);
    source.push_str(family);
    source
}

pub(crate) fn compile(model: &Model) -> Result<Program, GpuError> {
    let n_features = model.n_features();
    if n_features >= FEATURE_MAX {
        return Err(GpuError::Unsupported(format!(
            "{n_features} features; the GPU scorer indexes at most {FEATURE_MAX}"
        )));
    }
    match &model.body {
        ModelBody::Trees(t) => trees(t, n_features),
        ModelBody::Linear(m) => linear(m, n_features),
        ModelBody::Mlp(m) => mlp(m, n_features),
    }
}

fn trees(t: &TreeEnsemble, n_features: usize) -> Result<Program, GpuError> {
    let margins = t.n_groups;
    if margins == 0 {
        return Err(GpuError::Unsupported(
            "a tree ensemble with no output group".into(),
        ));
    }
    let (link, scale) = link_code(t.link);
    let mut meta: Vec<u32> = t
        .base_margin
        .iter()
        .map(|b| (*b as f32).to_bits())
        .collect();
    meta.push(scale.to_bits());
    let mut nodes: Vec<[u32; 4]> = Vec::new();
    let mut cats: Vec<u32> = Vec::new();
    let mut max_depth = 0;
    for tree in &t.trees {
        max_depth = max_depth.max(tree.depth());
        // Re-laid out breadth-first so that siblings are adjacent: a node
        // stores its left child, the right is the next node.
        let root = nodes.len();
        nodes.push([0; 4]);
        let mut queue = std::collections::VecDeque::from([(0usize, root)]);
        while let Some((old, new)) = queue.pop_front() {
            nodes[new] = match &tree.nodes[old] {
                Node::Leaf { value } => [LEAF, (*value as f32).to_bits(), 0, 0],
                Node::Numeric {
                    feature,
                    threshold,
                    missing_left,
                    zero_is_missing,
                    left,
                    right,
                } => {
                    let children = nodes.len();
                    nodes.extend([[0; 4]; 2]);
                    queue.extend([(*left as usize, children), (*right as usize, children + 1)]);
                    let flags = if *missing_left { MISSING_LEFT } else { 0 }
                        | if *zero_is_missing { ZERO_MISSING } else { 0 };
                    // A NaN threshold sends every value right, as `x < NaN`
                    // does: key 0 is below every value's key.
                    let key = if threshold.is_nan() {
                        0
                    } else {
                        order_key(threshold.to_bits())
                    };
                    [feature | flags, key, children as u32, 0]
                }
                Node::Categorical {
                    feature,
                    bits_start,
                    bits_end,
                    left,
                    right,
                } => {
                    let children = nodes.len();
                    nodes.extend([[0; 4]; 2]);
                    queue.extend([(*left as usize, children), (*right as usize, children + 1)]);
                    let start = cats.len() as u32;
                    let set = &tree.category_bits[*bits_start as usize..*bits_end as usize];
                    cats.extend_from_slice(set);
                    let limit = (set.len() as f32 * 32.0).to_bits();
                    [
                        feature | CATEGORICAL,
                        order_key(limit),
                        children as u32,
                        start,
                    ]
                }
            };
        }
        meta.extend([root as u32, tree.group]);
    }
    if nodes.is_empty() {
        // A model of no trees still needs a non-empty binding.
        nodes.push([LEAF, 0, 0, 0]);
    }
    if cats.is_empty() {
        cats.push(0);
    }
    let nodes: Vec<u32> = nodes.into_iter().flatten().collect();
    Ok(Program {
        source: module(
            &[
                ("N_MARGINS", margins as u64),
                ("LINK", link as u64),
                ("N_FEATURES", n_features as u64),
                ("N_TREES", t.trees.len() as u64),
                ("MAX_DEPTH", max_depth as u64),
            ],
            TREES,
        ),
        params: vec![(1, words(&nodes)), (2, words(&meta)), (3, words(&cats))],
        output_binding: 4,
        fixups: false,
    })
}

fn linear(m: &LinearModel, n_features: usize) -> Result<Program, GpuError> {
    let margins = m.bias.len();
    if margins == 0 {
        return Err(GpuError::Unsupported(
            "a linear model with no output".into(),
        ));
    }
    let (link, scale) = link_code(m.link);
    let mut params: Vec<f32> = m.weights.iter().map(|w| *w as f32).collect();
    params.extend(m.bias.iter().map(|b| *b as f32));
    params.push(scale);
    Ok(Program {
        source: module(
            &[
                ("N_MARGINS", margins as u64),
                ("LINK", link as u64),
                ("N_FEATURES", n_features as u64),
            ],
            &[LINEAR, FIXUPS].concat(),
        ),
        params: vec![(1, floats(&params))],
        output_binding: 2,
        fixups: true,
    })
}

fn mlp(m: &MlpModel, n_features: usize) -> Result<Program, GpuError> {
    let margins = m.layers.last().map_or(0, |l| l.outputs);
    if margins == 0 {
        return Err(GpuError::Unsupported("an MLP with no output".into()));
    }
    let width = m
        .layers
        .iter()
        .map(|l| l.outputs)
        .chain([n_features])
        .max()
        .unwrap_or(1);
    if width > MLP_WIDTH_MAX {
        return Err(GpuError::Unsupported(format!(
            "an MLP layer of {width} units; the GPU shader holds at most {MLP_WIDTH_MAX} per row"
        )));
    }
    // The shader trusts the layer table for its indices: the layers must chain.
    let mut inputs = n_features;
    for (l, layer) in m.layers.iter().enumerate() {
        if layer.inputs != inputs
            || layer.weights.len() != layer.inputs * layer.outputs
            || layer.bias.len() != layer.outputs
        {
            return Err(GpuError::Unsupported(format!(
                "MLP layer {l} takes {} inputs with {} weights and {} biases for {} outputs; the layer before gives {inputs}",
                layer.inputs,
                layer.weights.len(),
                layer.bias.len(),
                layer.outputs
            )));
        }
        inputs = layer.outputs;
    }
    let (link, scale) = link_code(m.link);
    let mut params: Vec<f32> = Vec::new();
    let mut layers: Vec<u32> = Vec::new();
    for layer in &m.layers {
        let activation = match layer.activation {
            Activation::Identity => 0,
            Activation::Relu => 1,
            Activation::Tanh => 2,
            Activation::Sigmoid => 3,
        };
        layers.extend([
            layer.inputs as u32,
            layer.outputs as u32,
            params.len() as u32,
            activation,
        ]);
        params.extend_from_slice(&layer.weights);
        params.extend_from_slice(&layer.bias);
    }
    let scale_at = params.len();
    params.push(scale);
    if layers.is_empty() {
        layers.extend([0; 4]);
    }
    Ok(Program {
        source: module(
            &[
                ("N_MARGINS", margins as u64),
                ("LINK", link as u64),
                ("N_FEATURES", n_features as u64),
                ("N_LAYERS", m.layers.len() as u64),
                ("WIDTH", width as u64),
                ("SCALE_AT", scale_at as u64),
            ],
            &[MLP, FIXUPS].concat(),
        ),
        params: vec![(1, floats(&params)), (2, words(&layers))],
        output_binding: 3,
        fixups: true,
    })
}

#[cfg(test)]
mod tests {
    use super::order_key;

    #[test]
    fn order_keys_sort_like_floats() {
        let values = [
            f32::NEG_INFINITY,
            -f32::MAX,
            -1.0,
            -1e-40,
            0.0,
            1e-40,
            1e-35,
            1.0,
            f32::MAX,
            f32::INFINITY,
        ];
        for a in values {
            for b in values {
                assert_eq!(
                    order_key(a.to_bits()) < order_key(b.to_bits()),
                    a < b,
                    "{a} < {b}"
                );
            }
        }
        assert_eq!(order_key((-0.0f32).to_bits()), order_key(0.0f32.to_bits()));
        assert_eq!(
            order_key((-1.0f32).to_bits()),
            0x407f_ffff,
            "trees.wgsl's MINUS_ONE_KEY"
        );
        assert_eq!(1e-35f32.to_bits(), 0x0554_ad2e, "trees.wgsl's ZERO_BITS");
    }
}

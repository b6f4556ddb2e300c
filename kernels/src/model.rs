//! The model IR: one representation every importer produces and every scorer reads.
//!
//! Importers normalise each library's comparison and missing-value rules into
//! the single meaning documented on [`Node`], so a scorer implements one rule
//! and never asks which library a model came from.

use std::fmt;

/// A model's version: the SHA-256 of the bytes it was loaded from.
///
/// The same file always has the same version, on every machine, so an audit
/// record naming a version names exactly one model file.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ModelVersion([u8; 32]);

impl ModelVersion {
    /// The version of a model file's bytes.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        use sha2::{Digest, Sha256};
        Self(Sha256::digest(bytes).into())
    }

    /// All 64 hex digits.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The first 12 hex digits, for logs and status lines.
    pub fn short(&self) -> String {
        self.hex()[..12].to_string()
    }
}

impl fmt::Display for ModelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for ModelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.short())
    }
}

/// The file format a model was imported from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelFormat {
    XgboostJson,
    XgboostUbjson,
    LightgbmText,
    LinearJson,
    Onnx,
}

impl fmt::Display for ModelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::XgboostJson => "XGBoost JSON",
            Self::XgboostUbjson => "XGBoost UBJSON",
            Self::LightgbmText => "LightGBM text",
            Self::LinearJson => "roo linear JSON",
            Self::Onnx => "ONNX",
        })
    }
}

/// How raw margins become the scores a user sees.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Link {
    /// The margin itself (regression).
    Identity,
    /// `1 / (1 + exp(-scale * margin))` per output (binary classification).
    Sigmoid { scale: f64 },
    /// Softmax across the outputs: one probability per class.
    Softmax,
    /// The index of the largest margin, as a float (XGBoost `multi:softmax`).
    ArgMax,
}

/// A loaded model: its identity, its inputs and its body.
#[derive(Clone, Debug)]
pub struct Model {
    pub version: ModelVersion,
    pub format: ModelFormat,
    /// One name per feature, in the order the body indexes them. When
    /// `named_features` is false the names are placeholders (`f0`, `f1`, …)
    /// and inputs are bound by position.
    pub feature_names: Vec<String>,
    pub named_features: bool,
    pub body: ModelBody,
}

#[derive(Clone, Debug)]
pub enum ModelBody {
    Linear(LinearModel),
    Trees(TreeEnsemble),
    Mlp(MlpModel),
}

/// A multilayer perceptron: dense layers, then the link on the last layer's outputs.
#[derive(Clone, Debug)]
pub struct MlpModel {
    pub layers: Vec<DenseLayer>,
    pub link: Link,
}

/// `y[o] = activation(bias[o] + Σ_i weights[o * inputs + i] * x[i])`.
#[derive(Clone, Debug)]
pub struct DenseLayer {
    pub inputs: usize,
    pub outputs: usize,
    /// Row-major: one row of `inputs` weights per output.
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
    pub activation: Activation,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Identity,
    Relu,
    Tanh,
    Sigmoid,
}

/// `margin[k] = bias[k] + Σ_j weights[k * n_features + j] * x[j]`, then `link`.
#[derive(Clone, Debug)]
pub struct LinearModel {
    /// Row-major: one row of `n_features` weights per margin.
    pub weights: Vec<f64>,
    pub bias: Vec<f64>,
    pub link: Link,
}

/// A sum of regression trees per output group (GBDT or random forest).
#[derive(Clone, Debug)]
pub struct TreeEnsemble {
    pub trees: Vec<Tree>,
    /// Margins per row: 1, or the number of classes.
    pub n_groups: usize,
    /// Added to each group's sum of leaves before the link.
    pub base_margin: Vec<f64>,
    pub link: Link,
    /// The objective as the library named it (`binary:logistic`, `multiclass num_class:3`).
    pub objective: String,
}

/// One tree. Node 0 is the root; nodes are stored in breadth-first order and
/// every node is reachable from the root exactly once.
#[derive(Clone, Debug, PartialEq)]
pub struct Tree {
    /// The output group this tree adds to.
    pub group: u32,
    pub nodes: Vec<Node>,
    /// Category bitsets of this tree's categorical nodes, 32 categories a word.
    pub category_bits: Vec<u32>,
}

/// One node of a tree, with one meaning whatever library wrote it.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    Leaf {
        value: f64,
    },
    /// Go to `left` when `x < threshold`, else `right`; except that NaN goes to
    /// `left` iff `missing_left`, and when `zero_is_missing` is set, values with
    /// `|x| <= 1e-35` (LightGBM's zero) go where NaN goes.
    Numeric {
        feature: u32,
        threshold: f32,
        missing_left: bool,
        zero_is_missing: bool,
        left: u32,
        right: u32,
    },
    /// Go to `left` when `x` is not NaN, `trunc(x)` as an `i32` is `c >= 0`, and
    /// bit `c` of `category_bits[bits_start..bits_end]` is set; else `right`.
    Categorical {
        feature: u32,
        bits_start: u32,
        bits_end: u32,
        left: u32,
        right: u32,
    },
}

/// LightGBM's `kZeroThreshold`: values this close to zero count as zero.
pub const ZERO_THRESHOLD: f32 = 1e-35;

impl Model {
    pub fn n_features(&self) -> usize {
        self.feature_names.len()
    }

    /// Score columns per row: one per class for softmax models, else one.
    pub fn n_outputs(&self) -> usize {
        match &self.body {
            ModelBody::Linear(m) => match m.link {
                Link::ArgMax => 1,
                _ => m.bias.len(),
            },
            ModelBody::Trees(t) => match t.link {
                Link::ArgMax => 1,
                _ => t.n_groups,
            },
            ModelBody::Mlp(m) => match m.link {
                Link::ArgMax => 1,
                _ => m.layers.last().map_or(0, |l| l.outputs),
            },
        }
    }

    /// Names of the score columns this model appends to a batch.
    pub fn output_names(&self) -> Vec<String> {
        match self.n_outputs() {
            1 => vec!["score".to_string()],
            k => (0..k).map(|c| format!("score_{c}")).collect(),
        }
    }

    /// The family and, for trees, shape statistics; what `roo inspect` prints.
    pub fn summary(&self) -> ModelSummary {
        let (family, objective, trees) = match &self.body {
            ModelBody::Linear(m) => {
                let objective = match m.link {
                    Link::Identity => "linear",
                    Link::Sigmoid { .. } => "logistic",
                    Link::Softmax | Link::ArgMax => "softmax",
                };
                ("linear", objective.to_string(), None)
            }
            ModelBody::Mlp(m) => {
                let shape: Vec<String> = std::iter::once(self.n_features())
                    .chain(m.layers.iter().map(|l| l.outputs))
                    .map(|n| n.to_string())
                    .collect();
                let activations: Vec<String> = m
                    .layers
                    .iter()
                    .map(|l| format!("{:?}", l.activation).to_lowercase())
                    .collect();
                let head = match m.link {
                    Link::Identity => "identity",
                    Link::Sigmoid { .. } => "sigmoid",
                    Link::Softmax | Link::ArgMax => "softmax",
                };
                (
                    "mlp",
                    format!(
                        "{} ({}), {head} head",
                        shape.join("-"),
                        activations.join(", ")
                    ),
                    None,
                )
            }
            ModelBody::Trees(t) => {
                let mut stats = TreeStats {
                    trees: t.trees.len(),
                    groups: t.n_groups,
                    max_depth: 0,
                    leaves: 0,
                    nodes: 0,
                    categorical_nodes: 0,
                };
                for tree in &t.trees {
                    stats.max_depth = stats.max_depth.max(tree.depth());
                    stats.nodes += tree.nodes.len();
                    for node in &tree.nodes {
                        match node {
                            Node::Leaf { .. } => stats.leaves += 1,
                            Node::Categorical { .. } => stats.categorical_nodes += 1,
                            Node::Numeric { .. } => {}
                        }
                    }
                }
                ("tree ensemble", t.objective.clone(), Some(stats))
            }
        };
        ModelSummary {
            format: self.format,
            family,
            objective,
            features: self.n_features(),
            named_features: self.named_features,
            outputs: self.output_names(),
            version: self.version.clone(),
            trees,
        }
    }
}

impl Tree {
    /// Edges on the longest root-to-leaf path (a lone leaf has depth 0).
    pub fn depth(&self) -> usize {
        // Nodes are breadth-first, so a child always comes after its parent.
        let mut depth = vec![0usize; self.nodes.len()];
        let mut max = 0;
        for (i, node) in self.nodes.iter().enumerate() {
            if let Node::Numeric { left, right, .. } | Node::Categorical { left, right, .. } = node
            {
                for child in [*left, *right] {
                    depth[child as usize] = depth[i] + 1;
                    max = max.max(depth[i] + 1);
                }
            }
        }
        max
    }
}

/// What `roo inspect` reports.
#[derive(Clone, Debug)]
pub struct ModelSummary {
    pub format: ModelFormat,
    pub family: &'static str,
    pub objective: String,
    pub features: usize,
    pub named_features: bool,
    pub outputs: Vec<String>,
    pub version: ModelVersion,
    pub trees: Option<TreeStats>,
}

#[derive(Clone, Debug)]
pub struct TreeStats {
    pub trees: usize,
    pub groups: usize,
    pub max_depth: usize,
    pub leaves: usize,
    pub nodes: usize,
    pub categorical_nodes: usize,
}

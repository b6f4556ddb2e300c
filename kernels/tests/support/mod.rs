//! Helpers shared by the equivalence tests of the CPU and GPU scorers:
//! the golden models, a deep random forest, and random inputs that hit
//! every threshold exactly and one ulp either side, NaN, ±inf and zeros.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::Path;

use roo_kernels::model::{Node, Tree, TreeEnsemble};
use roo_kernels::{load_model, Link, Model, ModelBody, ModelFormat, ModelVersion};

pub const BATCH_SIZES: [usize; 5] = [0, 1, 7, 4097, 100_003];

pub fn golden_models() -> Vec<(String, Model)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let mut seen = std::collections::HashSet::new();
    manifest["fixtures"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| {
            let file = f["model"].as_str().unwrap();
            seen.insert(file.to_string())
                .then(|| (file.to_string(), load_model(dir.join(file)).unwrap()))
        })
        .collect()
}

/// A forest of random numeric trees of depth 14: too deep for the perfect
/// layout, so it exercises the compact one without categorical splits.
pub fn deep_forest(seed: u64) -> Model {
    let mut rng = Rng(seed);
    let mut trees = Vec::new();
    for t in 0..12 {
        let mut nodes = Vec::new();
        // Breadth-first: node i's children are appended as they are created.
        let mut frontier = vec![(0usize, 0usize)];
        nodes.push(Node::Leaf { value: 0.0 });
        while let Some((i, depth)) = frontier.pop() {
            if depth == 14 || (depth > 3 && rng.next().is_multiple_of(4)) {
                nodes[i] = Node::Leaf {
                    value: rng.unit() - 0.5,
                };
                continue;
            }
            let left = nodes.len() as u32;
            nodes.push(Node::Leaf { value: 0.0 });
            nodes.push(Node::Leaf { value: 0.0 });
            nodes[i] = Node::Numeric {
                feature: (rng.next() % 5) as u32,
                threshold: (rng.unit() * 4.0 - 2.0) as f32,
                missing_left: rng.next().is_multiple_of(2),
                zero_is_missing: false,
                left,
                right: left + 1,
            };
            frontier.push((left as usize, depth + 1));
            frontier.push((left as usize + 1, depth + 1));
        }
        // Renumber breadth-first as the importers do.
        trees.push(bfs(Tree {
            group: t % 2,
            nodes,
            category_bits: vec![],
        }));
    }
    Model {
        version: ModelVersion::of_bytes(b"deep"),
        format: ModelFormat::XgboostJson,
        feature_names: (0..5).map(|i| format!("f{i}")).collect(),
        named_features: false,
        body: ModelBody::Trees(TreeEnsemble {
            trees,
            n_groups: 2,
            base_margin: vec![0.1, -0.2],
            link: Link::Softmax,
            objective: "multi:softprob".into(),
        }),
    }
}

pub fn bfs(tree: Tree) -> Tree {
    let mut order = vec![0usize];
    let mut new_index = vec![0u32; tree.nodes.len()];
    let mut i = 0;
    while i < order.len() {
        if let Node::Numeric { left, right, .. } = tree.nodes[order[i]] {
            for c in [left, right] {
                new_index[c as usize] = order.len() as u32;
                order.push(c as usize);
            }
        }
        i += 1;
    }
    let nodes = order
        .iter()
        .map(|&o| match tree.nodes[o].clone() {
            Node::Numeric {
                feature,
                threshold,
                missing_left,
                zero_is_missing,
                left,
                right,
            } => Node::Numeric {
                feature,
                threshold,
                missing_left,
                zero_is_missing,
                left: new_index[left as usize],
                right: new_index[right as usize],
            },
            other => other,
        })
        .collect();
    Tree { nodes, ..tree }
}

pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Values a model's splits care about: its thresholds exactly and one ulp
/// either side, plus the special values and ordinary numbers.
pub fn interesting_values(model: &Model) -> Vec<f32> {
    let mut v = vec![
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        -0.0,
        1e-36,
        -1e-36,
        1e-40, // denormal
        f32::MIN_POSITIVE,
        f32::MAX,
        -f32::MAX,
        1.0,
        -1.0,
        0.5,
        3.0,
        7.0,
        11.0,
        12.0,
        33.0,
        -0.5,
        1e10,
    ];
    if let ModelBody::Trees(t) = &model.body {
        for tree in &t.trees {
            for node in &tree.nodes {
                if let Node::Numeric { threshold, .. } = node {
                    v.extend([*threshold, threshold.next_up(), threshold.next_down()]);
                }
            }
        }
    }
    v
}

pub fn random_columns(model: &Model, rows: usize, seed: u64) -> Vec<Vec<f32>> {
    let values = interesting_values(model);
    let mut rng = Rng(seed | 1);
    let finite_only = matches!(model.body, ModelBody::Linear(_) | ModelBody::Mlp(_));
    (0..model.n_features())
        .map(|_| {
            (0..rows)
                .map(|_| match rng.next() % 8 {
                    // Linear models get moderate values: f32 and f64 overflow
                    // at different magnitudes, which is not a disagreement.
                    _ if finite_only => (rng.unit() * 20.0 - 10.0) as f32,
                    0..=3 => values[(rng.next() % values.len() as u64) as usize],
                    _ => (rng.unit() * 8.0 - 4.0) as f32,
                })
                .collect()
        })
        .collect()
}

pub fn score_with(
    model: &Model,
    columns: &[Vec<f32>],
    rows: usize,
    f: impl FnOnce(&[&[f32]], &mut [&mut [f32]]),
) -> Vec<Vec<f32>> {
    let features: Vec<&[f32]> = columns.iter().map(Vec::as_slice).collect();
    let mut out = vec![vec![0f32; rows]; model.n_outputs()];
    f(
        &features,
        &mut out.iter_mut().map(Vec::as_mut_slice).collect::<Vec<_>>(),
    );
    out
}

pub fn tolerance(model: &Model, columns: &[Vec<f32>], r: usize, reference: f32) -> f64 {
    match &model.body {
        ModelBody::Mlp(_) => 1e-4 * (1.0 + reference.abs() as f64),
        ModelBody::Trees(_) => 1e-6,
        ModelBody::Linear(m) => {
            let n = model.n_features();
            let max_abs: f64 = (0..m.bias.len())
                .map(|k| {
                    (0..n)
                        .map(|j| (m.weights[k * n + j] * columns[j][r] as f64).abs())
                        .sum::<f64>()
                })
                .fold(0.0, f64::max);
            1e-5 * (1.0 + max_abs)
        }
    }
}

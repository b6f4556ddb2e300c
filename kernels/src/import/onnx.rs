//! ONNX models as skl2onnx and onnxmltools write them.
//!
//! Supported: `ai.onnx.ml` LinearClassifier / LinearRegressor and
//! TreeEnsembleClassifier / TreeEnsembleRegressor, and MLP graphs of
//! MatMul/Gemm + Add + Relu/Tanh/Sigmoid with a Softmax or Sigmoid head.
//! Around them the converters add label and output plumbing (Cast, ZipMap,
//! Normalizer, ArgMax, ArrayFeatureExtractor, Reshape, Concat, Sub, Identity,
//! Mul by 1): it is recognised and skipped, since roo returns the scores.
//! Any other operator is refused with the list of operators found.
//!
//! Semantics follow ONNX Runtime: tree comparisons on f32 (`BRANCH_LEQ` is
//! `x <= t`, `BRANCH_LT` `x < t`, and so on), NaN takes the true branch only
//! where `nodes_missing_value_tracks_true` is set.

use std::collections::HashMap;

use super::lightgbm::f32_less_than_bound;
use super::protobuf::{self, Message};
use super::{build_tree, RawNode};
use crate::error::{Fault, Result};
use crate::model::{
    Activation, DenseLayer, LinearModel, Link, MlpModel, Model, ModelBody, ModelFormat,
    ModelVersion, TreeEnsemble,
};

const MODEL_OPS: [&str; 4] = [
    "LinearClassifier",
    "LinearRegressor",
    "TreeEnsembleClassifier",
    "TreeEnsembleRegressor",
];
const MLP_OPS: [&str; 7] = [
    "MatMul", "Gemm", "Add", "Relu", "Tanh", "Sigmoid", "Softmax",
];
/// Output plumbing the converters add around the scores.
const PLUMBING_OPS: [&str; 11] = [
    "Cast",
    "ZipMap",
    "Normalizer",
    "Identity",
    "ArgMax",
    "ArrayFeatureExtractor",
    "Reshape",
    "Concat",
    "Sub",
    "Mul",
    "Flatten",
];

struct Node<'a> {
    op: String,
    inputs: Vec<String>,
    outputs: Vec<String>,
    attributes: Vec<(String, Message<'a>)>,
}

impl<'a> Node<'a> {
    fn attribute(&self, name: &str) -> Option<&Message<'a>> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, m)| m)
    }
    fn floats(&self, name: &str) -> Result<Vec<f32>> {
        // AttributeProto: 7 floats, or 5 t (a tensor) for `*_as_tensor` forms.
        match self.attribute(name) {
            Some(a) => a.floats(7),
            None => match self.attribute(&format!("{name}_as_tensor")) {
                Some(a) => tensor_values(
                    &protobuf::parse(a.bytes(5).unwrap_or_default(), name)?,
                    name,
                ),
                None => Ok(Vec::new()),
            },
        }
    }
    fn ints(&self, name: &str) -> Result<Vec<i64>> {
        self.attribute(name).map_or(Ok(Vec::new()), |a| a.ints(8))
    }
    fn int(&self, name: &str) -> Option<i64> {
        self.attribute(name)
            .and_then(|a| a.varint(3))
            .map(|v| v as i64)
    }
    fn string(&self, name: &str) -> Option<String> {
        self.attribute(name).map(|a| a.string(4))
    }
    fn strings(&self, name: &str) -> Vec<String> {
        self.attribute(name)
            .map(|a| a.strings(9))
            .unwrap_or_default()
    }
    fn fault(&self, message: impl Into<String>) -> Fault {
        Fault::new(
            format!(
                "node {} ({})",
                self.outputs.first().map_or("?", String::as_str),
                self.op
            ),
            message,
        )
    }
}

/// A tensor's values as f32 (FLOAT, DOUBLE, INT32 and INT64 tensors).
fn tensor_values(t: &Message, name: &str) -> Result<Vec<f32>> {
    let data_type = t.varint(2).unwrap_or(0);
    let raw = t.bytes(9);
    let bad = || Fault::new(format!("tensor {name}"), "raw data of the wrong length");
    Ok(match (data_type, raw) {
        (1, Some(b)) if b.len() % 4 == 0 => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        (1, None) => t.floats(4)?,
        (11, Some(b)) if b.len() % 8 == 0 => b
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        (11, None) => t.doubles(10)?.into_iter().map(|v| v as f32).collect(),
        (7, Some(b)) if b.len() % 8 == 0 => b
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        (7, None) => t.ints(7)?.into_iter().map(|v| v as f32).collect(),
        (6, None) => t.ints(5)?.into_iter().map(|v| v as f32).collect(),
        (1 | 11 | 7, Some(_)) => return Err(bad()),
        (other, _) => {
            return Err(Fault::new(
                format!("tensor {name}"),
                format!("data type {other}; expected float, double or integer"),
            ))
        }
    })
}

struct Tensor {
    dims: Vec<i64>,
    values: Vec<f32>,
}

pub(crate) fn import(bytes: &[u8], version: ModelVersion) -> Result<Model> {
    let model = protobuf::parse(bytes, "ONNX ModelProto")?;
    let graph = protobuf::parse(
        model
            .bytes(7)
            .ok_or_else(|| Fault::new("ModelProto", "no graph (field 7); not an ONNX model?"))?,
        "GraphProto",
    )?;
    let mut initializers = HashMap::new();
    for t in graph.messages(5, "initializer")? {
        let name = t.string(8);
        let values = tensor_values(&t, &name)?;
        initializers.insert(
            name,
            Tensor {
                dims: t.ints(1)?,
                values,
            },
        );
    }
    let mut nodes = Vec::new();
    for n in graph.messages(1, "NodeProto")? {
        let mut attributes = Vec::new();
        for a in n.messages(5, "AttributeProto")? {
            attributes.push((a.string(1), a));
        }
        nodes.push(Node {
            op: n.string(4),
            inputs: n.strings(1),
            outputs: n.strings(2),
            attributes,
        });
    }
    let inputs: Vec<Message> = graph
        .messages(11, "ValueInfoProto")?
        .into_iter()
        .filter(|i| !initializers.contains_key(&i.string(1)))
        .collect();
    if inputs.len() != 1 {
        return Err(Fault::new(
            "graph inputs",
            format!(
                "{} inputs; expected one float tensor of shape [rows, features]",
                inputs.len()
            ),
        ));
    }
    let input_name = inputs[0].string(1);
    let declared_features = input_width(&inputs[0])?;

    let ops: Vec<&str> = nodes.iter().map(|n| n.op.as_str()).collect();
    let unknown: Vec<&str> = ops
        .iter()
        .copied()
        .filter(|op| !MODEL_OPS.contains(op) && !MLP_OPS.contains(op) && !PLUMBING_OPS.contains(op))
        .collect();
    if !unknown.is_empty() {
        let mut found = ops.clone();
        found.sort_unstable();
        found.dedup();
        return Err(Fault::new(
            "graph",
            format!(
                "operators roo cannot score: {}; the graph uses {}. Supported: {}, and MLPs of {}",
                unknown.join(", "),
                found.join(", "),
                MODEL_OPS.join(", "),
                MLP_OPS.join("/")
            ),
        ));
    }
    check_plumbing(&nodes, &initializers)?;

    let main: Vec<&Node> = nodes
        .iter()
        .filter(|n| MODEL_OPS.contains(&n.op.as_str()))
        .collect();
    let (body, n_features) = match main.as_slice() {
        [node] => match node.op.as_str() {
            "LinearClassifier" | "LinearRegressor" => linear(node, declared_features)?,
            _ => trees(node, declared_features)?,
        },
        [] => mlp(&nodes, &initializers, &input_name)?,
        many => {
            return Err(Fault::new(
                "graph",
                format!(
                    "{} model operators; expected one (roo scores one model per file)",
                    many.len()
                ),
            ))
        }
    };
    if let Some(declared) = declared_features {
        if declared != n_features {
            return Err(Fault::new(
                format!("input {input_name}"),
                format!("{declared} features declared but the model reads {n_features}"),
            ));
        }
    }
    let (feature_names, named_features) = match declared_names(&model, n_features)? {
        Some(names) => (names, true),
        None => (super::xgboost::placeholder_names(n_features), false),
    };
    Ok(Model {
        version,
        format: ModelFormat::Onnx,
        feature_names,
        named_features,
        body,
    })
}

/// The metadata key under which a model's feature names travel with an
/// ONNX file (a JSON array of strings, one per input column, in order):
/// roo's Python package writes it when it converts a scikit-learn model.
pub const FEATURE_NAMES_KEY: &str = "roo.features";

/// The feature names in the model's `metadata_props` (field 14), if any.
/// Present but wrong (not a list of `n_features` distinct non-empty
/// strings) is an error, not a silent fall back to positions.
fn declared_names(model: &Message, n_features: usize) -> Result<Option<Vec<String>>> {
    for entry in model.messages(14, "metadata_props")? {
        if entry.string(1) != FEATURE_NAMES_KEY {
            continue;
        }
        let at = format!("metadata_props[{FEATURE_NAMES_KEY}]");
        let names: Vec<String> = serde_json::from_str(&entry.string(2)).map_err(|e| {
            Fault::new(
                at.clone(),
                format!("{e}; expected a JSON array of feature names"),
            )
        })?;
        if names.len() != n_features {
            return Err(Fault::new(
                at,
                format!(
                    "{} names for a model that reads {n_features} features; expected one per feature",
                    names.len()
                ),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(bad) = names
            .iter()
            .find(|n| n.is_empty() || !seen.insert(n.as_str()))
        {
            return Err(Fault::new(
                at,
                format!("feature name {bad:?} is empty or repeated; expected distinct names"),
            ));
        }
        return Ok(Some(names));
    }
    Ok(None)
}

/// The feature count from an input of shape [rows, features], if static.
fn input_width(input: &Message) -> Result<Option<usize>> {
    let Some(type_proto) = input.bytes(2) else {
        return Ok(None);
    };
    let type_proto = protobuf::parse(type_proto, "TypeProto")?;
    let Some(tensor) = type_proto.bytes(1) else {
        return Ok(None);
    };
    let tensor = protobuf::parse(tensor, "TypeProto.Tensor")?;
    let Some(shape) = tensor.bytes(2) else {
        return Ok(None);
    };
    let dims = protobuf::parse(shape, "TensorShapeProto")?.messages(1, "Dimension")?;
    match dims.as_slice() {
        [_, width] => Ok(width.varint(1).map(|v| v as usize)),
        _ => Err(Fault::new(
            "graph input",
            format!("a tensor of rank {}; expected [rows, features]", dims.len()),
        )),
    }
}

/// Output plumbing must not change the scores: a Mul multiplies by 1, a Sub
/// computes 1 - p for the complementary class.
fn check_plumbing(nodes: &[Node], initializers: &HashMap<String, Tensor>) -> Result<()> {
    for node in nodes {
        let constant_one =
            |name: &String| initializers.get(name).is_some_and(|t| t.values == [1.0]);
        match node.op.as_str() {
            "Mul" if !node.inputs.iter().any(constant_one) => {
                return Err(node.fault(
                    "a Mul that is not by the constant 1 would change the scores; not supported",
                ))
            }
            "Sub" if !node.inputs.first().is_some_and(constant_one) => {
                return Err(
                    node.fault("a Sub other than 1 - p would change the scores; not supported")
                )
            }
            "Normalizer" if node.string("norm").as_deref() != Some("L1") => {
                return Err(
                    node.fault("only an L1 Normalizer (a no-op on probabilities) is supported")
                )
            }
            _ => {}
        }
    }
    Ok(())
}

fn link_of(node: &Node, classes: usize) -> Result<Link> {
    let post = node
        .string("post_transform")
        .unwrap_or_else(|| "NONE".into());
    match post.as_str() {
        "NONE" => Ok(Link::Identity),
        "LOGISTIC" if classes <= 2 => Ok(Link::Sigmoid { scale: 1.0 }),
        "SOFTMAX" => Ok(Link::Softmax),
        other => Err(node.fault(format!(
            "post_transform {other} is not supported{}; expected NONE, LOGISTIC (binary) or SOFTMAX",
            if other == "LOGISTIC" { " for more than 2 classes" } else { "" }
        ))),
    }
}

fn class_count(node: &Node) -> usize {
    node.ints("classlabels_ints")
        .ok()
        .filter(|v| !v.is_empty())
        .map(|v| v.len())
        .or_else(|| {
            node.ints("classlabels_int64s")
                .ok()
                .filter(|v| !v.is_empty())
                .map(|v| v.len())
        })
        .unwrap_or_else(|| node.strings("classlabels_strings").len())
}

fn linear(node: &Node, declared: Option<usize>) -> Result<(ModelBody, usize)> {
    let coefficients = node.floats("coefficients")?;
    let intercepts = node.floats("intercepts")?;
    let rows = if node.op == "LinearRegressor" {
        node.int("targets").unwrap_or(1).max(1) as usize
    } else {
        intercepts.len().max(1)
    };
    if coefficients.is_empty() || coefficients.len() % rows != 0 {
        return Err(node.fault(format!(
            "{} coefficients for {rows} outputs",
            coefficients.len()
        )));
    }
    let n = coefficients.len() / rows;
    if declared.is_some_and(|d| d != n) {
        return Err(node.fault(format!(
            "{n} coefficients per output but the input has {} features",
            declared.unwrap()
        )));
    }
    let intercepts = if intercepts.is_empty() {
        vec![0.0; rows]
    } else {
        intercepts
    };
    if intercepts.len() != rows {
        return Err(node.fault(format!(
            "{} intercepts for {rows} outputs",
            intercepts.len()
        )));
    }
    let classes = if node.op == "LinearClassifier" {
        class_count(node)
    } else {
        0
    };
    let link = link_of(node, classes)?;
    let (weights, bias): (Vec<f64>, Vec<f64>) = match (classes, rows, link) {
        // Binary: two mirrored rows (or one); the positive class is the last row.
        (2, 1 | 2, Link::Sigmoid { .. }) => (
            coefficients[(rows - 1) * n..]
                .iter()
                .map(|&w| w as f64)
                .collect(),
            vec![intercepts[rows - 1] as f64],
        ),
        _ => (
            coefficients.iter().map(|&w| w as f64).collect(),
            intercepts.iter().map(|&b| b as f64).collect(),
        ),
    };
    Ok((
        ModelBody::Linear(LinearModel {
            weights,
            bias,
            link,
        }),
        n,
    ))
}

fn trees(node: &Node, declared: Option<usize>) -> Result<(ModelBody, usize)> {
    let classifier = node.op == "TreeEnsembleClassifier";
    if let Some(agg) = node.string("aggregate_function") {
        if agg != "SUM" {
            return Err(node.fault(format!(
                "aggregate_function {agg} is not supported yet; expected SUM"
            )));
        }
    }
    let tree_ids = node.ints("nodes_treeids")?;
    let node_ids = node.ints("nodes_nodeids")?;
    let features = node.ints("nodes_featureids")?;
    let values = node.floats("nodes_values")?;
    let modes = node.strings("nodes_modes");
    let trues = node.ints("nodes_truenodeids")?;
    let falses = node.ints("nodes_falsenodeids")?;
    let mut tracks = node.ints("nodes_missing_value_tracks_true")?;
    let n = tree_ids.len();
    if tracks.is_empty() {
        tracks = vec![0; n];
    }
    for (name, len) in [
        ("nodes_nodeids", node_ids.len()),
        ("nodes_featureids", features.len()),
        ("nodes_values", values.len()),
        ("nodes_modes", modes.len()),
        ("nodes_truenodeids", trues.len()),
        ("nodes_falsenodeids", falses.len()),
        ("nodes_missing_value_tracks_true", tracks.len()),
    ] {
        if len != n {
            return Err(node.fault(format!("{name} has {len} entries; nodes_treeids has {n}")));
        }
    }
    let prefix = if classifier { "class" } else { "target" };
    let leaf_trees = node.ints(&format!("{prefix}_treeids"))?;
    let leaf_nodes = node.ints(&format!("{prefix}_nodeids"))?;
    let leaf_ids = node.ints(&format!("{prefix}_ids"))?;
    let leaf_weights = node.floats(&format!("{prefix}_weights"))?;
    if [leaf_nodes.len(), leaf_ids.len(), leaf_weights.len()]
        .iter()
        .any(|&l| l != leaf_trees.len())
    {
        return Err(node.fault(format!("{prefix}_* arrays differ in length")));
    }
    let max_id = leaf_ids.iter().copied().max().unwrap_or(0).max(0) as usize;
    let (groups, link) = if classifier {
        let classes = class_count(node);
        let link = link_of(node, classes)?;
        match (classes, max_id) {
            // Binary with one score column: the positive class's probability.
            (2, 0) => (1, link),
            (c, m) if m < c => (c, link),
            (c, m) => return Err(node.fault(format!("class id {m} but {c} class labels"))),
        }
    } else {
        let targets = node.int("n_targets").unwrap_or(1).max(1) as usize;
        if max_id >= targets {
            return Err(node.fault(format!("target id {max_id} but n_targets is {targets}")));
        }
        (targets, link_of(node, 0)?)
    };
    let mut base_margin: Vec<f64> = node
        .floats("base_values")?
        .iter()
        .map(|&v| v as f64)
        .collect();
    if base_margin.is_empty() {
        base_margin = vec![0.0; groups];
    }
    if base_margin.len() != groups {
        return Err(node.fault(format!(
            "{} base_values for {groups} outputs",
            base_margin.len()
        )));
    }
    let n_features = declared.unwrap_or_else(|| {
        features
            .iter()
            .copied()
            .max()
            .map_or(0, |m| m.max(0) as usize + 1)
    });

    // (tree, node) -> position; leaves' weights per output group.
    let mut order: Vec<i64> = tree_ids.clone();
    order.sort_unstable();
    order.dedup();
    let mut index: HashMap<(i64, i64), usize> = HashMap::with_capacity(n);
    for i in 0..n {
        if index.insert((tree_ids[i], node_ids[i]), i).is_some() {
            return Err(node.fault(format!(
                "tree {} node {} appears twice",
                tree_ids[i], node_ids[i]
            )));
        }
    }
    let mut weights: HashMap<(i64, i64), Vec<(usize, f64)>> = HashMap::new();
    for j in 0..leaf_trees.len() {
        weights
            .entry((leaf_trees[j], leaf_nodes[j]))
            .or_default()
            .push((leaf_ids[j].max(0) as usize, leaf_weights[j] as f64));
    }

    let mut out = Vec::new();
    for &tree in &order {
        let members: Vec<usize> = (0..n).filter(|&i| tree_ids[i] == tree).collect();
        let local: HashMap<i64, usize> = members
            .iter()
            .enumerate()
            .map(|(k, &i)| (node_ids[i], k))
            .collect();
        let root = local
            .get(&0)
            .copied()
            .ok_or_else(|| node.fault(format!("tree {tree} has no node 0 (its root)")))?;
        // The groups this tree's leaves add to: one IR tree per group.
        let mut tree_groups: Vec<usize> = members
            .iter()
            .filter_map(|&i| weights.get(&(tree, node_ids[i])))
            .flatten()
            .map(|(g, _)| *g)
            .collect();
        tree_groups.sort_unstable();
        tree_groups.dedup();
        for &group in &tree_groups {
            let mut raw = Vec::with_capacity(members.len());
            for &i in &members {
                let at = || node.fault(format!("tree {tree} node {}", node_ids[i]));
                let child = |id: i64| local.get(&id).copied().ok_or_else(&at);
                let mode = modes[i].as_str();
                if mode == "LEAF" {
                    let value = weights.get(&(tree, node_ids[i])).map_or(0.0, |w| {
                        w.iter().filter(|(g, _)| *g == group).map(|(_, v)| v).sum()
                    });
                    raw.push(RawNode::Leaf(value));
                    continue;
                }
                let (t, f) = (values[i], features[i]);
                if f < 0 {
                    return Err(at());
                }
                let (yes, no) = (child(trues[i])?, child(falses[i])?);
                let nan_true = tracks[i] != 0;
                // The IR goes left when x < threshold.
                let (threshold, left, right, missing_left) = match mode {
                    "BRANCH_LT" => (t, yes, no, nan_true),
                    "BRANCH_LEQ" => (f32_less_than_bound(t as f64), yes, no, nan_true),
                    "BRANCH_GTE" => (t, no, yes, !nan_true),
                    "BRANCH_GT" => (f32_less_than_bound(t as f64), no, yes, !nan_true),
                    other => {
                        return Err(node.fault(format!(
                            "tree {tree} node {}: mode {other} is not supported; expected BRANCH_LT, BRANCH_LEQ, \
                             BRANCH_GT, BRANCH_GTE or LEAF",
                            node_ids[i]
                        )))
                    }
                };
                raw.push(RawNode::Numeric {
                    feature: f as usize,
                    threshold,
                    missing_left,
                    zero_is_missing: false,
                    left,
                    right,
                });
            }
            out.push(build_tree(
                &raw,
                root,
                group as u32,
                n_features,
                &format!("tree {tree}"),
            )?);
        }
    }
    Ok((
        ModelBody::Trees(TreeEnsemble {
            trees: out,
            n_groups: groups,
            base_margin,
            link,
            objective: format!(
                "{} post_transform {}",
                node.op,
                node.string("post_transform").unwrap_or("NONE".into())
            ),
        }),
        n_features,
    ))
}

fn mlp(
    nodes: &[Node],
    initializers: &HashMap<String, Tensor>,
    input: &str,
) -> Result<(ModelBody, usize)> {
    let consumer = |tensor: &str, ops: &[&str]| -> Option<&Node> {
        nodes
            .iter()
            .find(|n| ops.contains(&n.op.as_str()) && n.inputs.iter().any(|i| i == tensor))
    };
    let constant = |name: &str, node: &Node| -> Result<&Tensor> {
        initializers
            .get(name)
            .ok_or_else(|| node.fault(format!("input {name} is not a constant; expected weights")))
    };
    let mut current = input.to_string();
    if let Some(cast) = consumer(&current, &["Cast"]) {
        current = cast.outputs[0].clone();
    }
    let mut layers: Vec<DenseLayer> = Vec::new();
    let mut link = Link::Identity;
    while let Some(node) = consumer(&current, &["MatMul", "Gemm"]) {
        let (weights, inputs, outputs, mut after, bias) = match node.op.as_str() {
            "MatMul" => {
                let w = constant(&node.inputs[1], node)?;
                let [inputs, outputs] = dims2(w, node)?;
                let add = consumer(&node.outputs[0], &["Add"])
                    .ok_or_else(|| node.fault("a MatMul without a bias Add"))?;
                let b = add
                    .inputs
                    .iter()
                    .find(|i| **i != node.outputs[0])
                    .map_or(Err(add.fault("no bias")), |b| constant(b, add))?;
                (
                    transpose(&w.values, inputs, outputs),
                    inputs,
                    outputs,
                    add.outputs[0].clone(),
                    b.values.clone(),
                )
            }
            _ => {
                if node
                    .attribute("alpha")
                    .and_then(|a| a.float(2))
                    .is_some_and(|a| a != 1.0)
                    || node
                        .attribute("beta")
                        .and_then(|a| a.float(2))
                        .is_some_and(|b| b != 1.0)
                    || node.int("transA").is_some_and(|t| t != 0)
                {
                    return Err(
                        node.fault("Gemm with alpha, beta or transA other than the defaults")
                    );
                }
                let w = constant(&node.inputs[1], node)?;
                let [a, b] = dims2(w, node)?;
                let bias = node
                    .inputs
                    .get(2)
                    .map_or(Ok(None), |c| constant(c, node).map(Some))?;
                let (weights, inputs, outputs) = if node.int("transB") == Some(1) {
                    (w.values.clone(), b, a)
                } else {
                    (transpose(&w.values, a, b), a, b)
                };
                let bias = bias.map_or(vec![0.0; outputs], |t| t.values.clone());
                (weights, inputs, outputs, node.outputs[0].clone(), bias)
            }
        };
        if bias.len() != outputs {
            return Err(node.fault(format!("{} biases for {outputs} units", bias.len())));
        }
        if let Some(previous) = layers.last() {
            if previous.outputs != inputs {
                return Err(node.fault(format!(
                    "{inputs} inputs after a layer of {} units",
                    previous.outputs
                )));
            }
        }
        let mut activation = Activation::Identity;
        if let Some(act) = consumer(&after, &["Relu", "Tanh", "Sigmoid", "Softmax"]) {
            let feeds_next = consumer(&act.outputs[0], &["MatMul", "Gemm"]).is_some();
            match (act.op.as_str(), feeds_next) {
                ("Softmax", false) => link = Link::Softmax,
                ("Sigmoid", false) => link = Link::Sigmoid { scale: 1.0 },
                ("Relu", _) => activation = Activation::Relu,
                ("Tanh", _) => activation = Activation::Tanh,
                ("Sigmoid", true) => activation = Activation::Sigmoid,
                _ => {
                    return Err(
                        act.fault("a Softmax inside the network; expected it only as the head")
                    )
                }
            }
            after = act.outputs[0].clone();
        }
        layers.push(DenseLayer {
            inputs,
            outputs,
            weights,
            bias,
            activation,
        });
        current = after;
    }
    let Some(first) = layers.first() else {
        return Err(Fault::new(
            "graph",
            "no model operator and no MatMul/Gemm layer reading the input; nothing to score",
        ));
    };
    let n_features = first.inputs;
    Ok((ModelBody::Mlp(MlpModel { layers, link }), n_features))
}

fn dims2(t: &Tensor, node: &Node) -> Result<[usize; 2]> {
    match t.dims.as_slice() {
        [a, b] if *a > 0 && *b > 0 && (*a * *b) as usize == t.values.len() => {
            Ok([*a as usize, *b as usize])
        }
        other => Err(node.fault(format!("weights of shape {other:?}; expected a 2-D matrix"))),
    }
}

/// `[rows][cols]` to `[cols][rows]`.
fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

//! Importers: each library's model file into the one IR in [`crate::model`].

mod json_path;
mod lightgbm;
mod linear;
mod onnx;
mod protobuf;
mod ubjson;
mod xgboost;

use std::path::Path;

use crate::error::{Fault, ModelError, Result};
use crate::model::{Model, ModelVersion, Node, Tree};

/// The largest model file roo reads (its bytes are held in memory while the
/// model is imported). Real ensembles of thousands of deep trees stay well
/// below it.
pub const MODEL_FILE_BYTES_MAX: u64 = 1 << 30;

/// Loads a model file, recognising its format from its content.
pub fn load_model(path: impl AsRef<Path>) -> Result<Model, ModelError> {
    let path = path.as_ref();
    let bytes = read_model_file(path)?;
    model_from_bytes(&bytes, &path.display().to_string())
}

/// A model file's bytes, refused past [`MODEL_FILE_BYTES_MAX`] before any
/// is read.
pub fn read_model_file(path: impl AsRef<Path>) -> Result<Vec<u8>, ModelError> {
    let path = path.as_ref();
    let origin = path.display().to_string();
    let io = |error| ModelError::Io {
        origin: origin.clone(),
        error,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MODEL_FILE_BYTES_MAX {
        return Err(Fault::new(
            "",
            format!("the file is {len} bytes; roo reads model files of at most {MODEL_FILE_BYTES_MAX} bytes"),
        )
        .into_error(&origin));
    }
    std::fs::read(path).map_err(io)
}

/// Imports a model from its file's bytes; `origin` names it in errors.
///
/// Recognises XGBoost JSON and UBJSON, LightGBM text, ONNX and roo's linear
/// JSON by their first bytes, whatever the file is called.
pub fn model_from_bytes(bytes: &[u8], origin: &str) -> Result<Model, ModelError> {
    let version = ModelVersion::of_bytes(bytes);
    let model = match sniff(bytes) {
        Sniffed::Json => {
            let text = std::str::from_utf8(bytes)
                .map_err(|e| Fault::new(format!("byte {}", e.valid_up_to()), "not UTF-8 text"))
                .map_err(|f| f.into_error(origin))?;
            let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
                Fault::new(
                    format!("line {} column {}", e.line(), e.column()),
                    format!("invalid JSON: {e}"),
                )
                .into_error(origin)
            })?;
            if value.get("learner").is_some() {
                xgboost::import(&value, version, crate::model::ModelFormat::XgboostJson)
            } else if value.get("kind").is_some() {
                linear::import(&value, version)
            } else {
                Err(Fault::new(
                    "",
                    "a JSON document that is neither an XGBoost model (no 'learner' key) \
                     nor a roo linear model (no 'kind' key)",
                ))
            }
        }
        Sniffed::Ubjson => ubjson::parse(bytes).and_then(|value| {
            xgboost::import(&value, version, crate::model::ModelFormat::XgboostUbjson)
        }),
        Sniffed::LightgbmText => std::str::from_utf8(bytes)
            .map_err(|e| Fault::new(format!("byte {}", e.valid_up_to()), "not UTF-8 text"))
            .and_then(|text| lightgbm::import(text, version)),
        Sniffed::Onnx => onnx::import(bytes, version),
        Sniffed::Unknown => Err(Fault::new(
            "",
            if bytes.is_empty() {
                "the file is empty; expected an XGBoost JSON/UBJSON model, a LightGBM text \
                 model or a roo linear-model JSON"
            } else {
                "unrecognised format; expected an XGBoost JSON/UBJSON model (starting with '{'), \
                 a LightGBM text model (starting with 'tree'), an ONNX model or a roo linear-model JSON"
            },
        )),
    };
    model.map_err(|f| f.into_error(origin))
}

enum Sniffed {
    Json,
    Ubjson,
    LightgbmText,
    Onnx,
    Unknown,
}

fn sniff(bytes: &[u8]) -> Sniffed {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let rest = &bytes[start..];
    match rest {
        // UBJSON objects open with '{' then a length marker for the first key;
        // JSON objects open with '{' then whitespace, '"' or '}'.
        [b'{', b'i' | b'U' | b'I' | b'l' | b'L' | b'$' | b'#', ..] => Sniffed::Ubjson,
        [b'{', ..] => Sniffed::Json,
        _ if rest.starts_with(b"tree") => Sniffed::LightgbmText,
        // ONNX's ModelProto opens with ir_version: field 1, varint (0x08).
        [0x08, ..] if start == 0 => Sniffed::Onnx,
        _ => Sniffed::Unknown,
    }
}

/// A node as an importer reads it, indexed the way its library indexes nodes.
pub(crate) enum RawNode {
    Leaf(f64),
    Numeric {
        feature: usize,
        threshold: f32,
        missing_left: bool,
        zero_is_missing: bool,
        left: usize,
        right: usize,
    },
    Categorical {
        feature: usize,
        /// The category bitset, 32 categories a word.
        bits: Vec<u32>,
        left: usize,
        right: usize,
    },
}

/// Checks a library's node array and renumbers the reachable nodes breadth-first.
///
/// Nodes the root cannot reach (XGBoost keeps pruned nodes in its arrays) are
/// dropped. `at` names the tree in errors.
pub(crate) fn build_tree(
    raw: &[RawNode],
    root: usize,
    group: u32,
    n_features: usize,
    at: &str,
) -> Result<Tree> {
    if root >= raw.len() {
        return Err(Fault::new(at, "the tree has no nodes"));
    }
    let mut new_index = vec![u32::MAX; raw.len()];
    let mut order = Vec::with_capacity(raw.len());
    new_index[root] = 0;
    order.push(root);
    let mut next = 0;
    while next < order.len() {
        let old = order[next];
        next += 1;
        let (feature, children) = match &raw[old] {
            RawNode::Leaf(value) => {
                if !value.is_finite() {
                    return Err(Fault::new(
                        format!("{at}: node {old}"),
                        format!("leaf value {value}; expected a finite number"),
                    ));
                }
                continue;
            }
            RawNode::Numeric {
                feature,
                threshold,
                left,
                right,
                ..
            } => {
                if threshold.is_nan() {
                    return Err(Fault::new(
                        format!("{at}: node {old}"),
                        "split threshold is NaN; expected a number",
                    ));
                }
                (*feature, [*left, *right])
            }
            RawNode::Categorical {
                feature,
                left,
                right,
                ..
            } => (*feature, [*left, *right]),
        };
        if feature >= n_features {
            return Err(Fault::new(
                format!("{at}: node {old}"),
                format!("feature index {feature} but the model has {n_features} features"),
            ));
        }
        for child in children {
            if child >= raw.len() {
                return Err(Fault::new(
                    format!("{at}: node {old}"),
                    format!("child {child} but the tree has {} nodes", raw.len()),
                ));
            }
            if new_index[child] != u32::MAX {
                return Err(Fault::new(
                    format!("{at}: node {old}"),
                    format!("child {child} is reached twice; a tree's nodes must form a tree"),
                ));
            }
            new_index[child] = order.len() as u32;
            order.push(child);
        }
    }

    let mut tree = Tree {
        group,
        nodes: Vec::with_capacity(order.len()),
        category_bits: Vec::new(),
    };
    for &old in &order {
        let node = match &raw[old] {
            RawNode::Leaf(value) => Node::Leaf { value: *value },
            RawNode::Numeric {
                feature,
                threshold,
                missing_left,
                zero_is_missing,
                left,
                right,
            } => Node::Numeric {
                feature: *feature as u32,
                threshold: *threshold,
                missing_left: *missing_left,
                zero_is_missing: *zero_is_missing,
                left: new_index[*left],
                right: new_index[*right],
            },
            RawNode::Categorical {
                feature,
                bits,
                left,
                right,
            } => {
                let bits_start = tree.category_bits.len() as u32;
                tree.category_bits.extend_from_slice(bits);
                Node::Categorical {
                    feature: *feature as u32,
                    bits_start,
                    bits_end: tree.category_bits.len() as u32,
                    left: new_index[*left],
                    right: new_index[*right],
                }
            }
        };
        tree.nodes.push(node);
    }
    Ok(tree)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_tree_renumbers_breadth_first_and_drops_unreachable_nodes() {
        let raw = vec![
            RawNode::Numeric {
                feature: 0,
                threshold: 0.5,
                missing_left: true,
                zero_is_missing: false,
                left: 3,
                right: 1,
            },
            RawNode::Leaf(2.0),
            RawNode::Leaf(99.0), // pruned: nothing points here
            RawNode::Leaf(1.0),
        ];
        let tree = build_tree(&raw, 0, 0, 1, "tree 0").unwrap();
        assert_eq!(tree.nodes.len(), 3);
        assert_eq!(
            tree.nodes[0],
            Node::Numeric {
                feature: 0,
                threshold: 0.5,
                missing_left: true,
                zero_is_missing: false,
                left: 1,
                right: 2
            }
        );
        assert_eq!(tree.nodes[1], Node::Leaf { value: 1.0 });
        assert_eq!(tree.nodes[2], Node::Leaf { value: 2.0 });
    }

    #[test]
    fn build_tree_rejects_cycles_bad_children_and_bad_features() {
        let numeric = |feature, left, right| RawNode::Numeric {
            feature,
            threshold: 0.0,
            missing_left: false,
            zero_is_missing: false,
            left,
            right,
        };
        let cycle = vec![numeric(0, 1, 2), numeric(0, 0, 2), RawNode::Leaf(0.0)];
        let err = build_tree(&cycle, 0, 0, 1, "tree 3").unwrap_err();
        assert_eq!(err.at, "tree 3: node 1");
        assert!(err.message.contains("reached twice"), "{}", err.message);

        let dangling = vec![numeric(0, 1, 7), RawNode::Leaf(0.0)];
        let err = build_tree(&dangling, 0, 0, 1, "tree 0").unwrap_err();
        assert!(err.message.contains("child 7 but the tree has 2 nodes"));

        let feature = vec![numeric(41, 1, 2), RawNode::Leaf(0.0), RawNode::Leaf(1.0)];
        let err = build_tree(&feature, 0, 0, 30, "tree 17").unwrap_err();
        assert_eq!(
            format!("{}: {}", err.at, err.message),
            "tree 17: node 0: feature index 41 but the model has 30 features"
        );
    }
}

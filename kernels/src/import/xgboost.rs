//! XGBoost models as `Booster.save_model` writes them (JSON or UBJSON), 2.x and 3.x.
//!
//! XGBoost goes left when `x < split_condition` on f32 values and sends NaN
//! along `default_left`: the IR's meaning exactly, so thresholds carry over
//! bit for bit. `base_score` is stored in the objective's output space (a
//! probability for logistic objectives) and turned into a margin here; 2.x
//! writes it as `"5E-1"`, 3.x as a vector `"[5E-1]"` (one entry per class for
//! multiclass models, already in margin space).

use serde_json::Value;

use super::json_path::At;
use super::{build_tree, RawNode};
use crate::error::Result;
use crate::model::{Link, Model, ModelBody, ModelFormat, ModelVersion, TreeEnsemble};

const OBJECTIVES: &str =
    "binary:logistic, reg:logistic, reg:squarederror, multi:softprob, multi:softmax";

pub(crate) fn import(doc: &Value, version: ModelVersion, format: ModelFormat) -> Result<Model> {
    let root = At::root(doc);
    let learner = root.key("learner")?;
    let params = learner.key("learner_model_param")?;
    let n_features = params.key("num_feature")?.usize()?;
    let num_class = params.key("num_class")?.usize()?;
    if let Some(targets) = params.get("num_target") {
        let n = targets.usize()?;
        if n > 1 {
            return Err(targets.fault(format!(
                "a multi-target model ({n} targets) is not supported; expected num_target 1"
            )));
        }
    }

    let objective_at = learner.key("objective")?;
    let objective_name = objective_at.key("name")?;
    let objective = objective_name.str()?;
    let n_groups = num_class.max(1);

    let booster = learner.key("gradient_booster")?;
    let booster_name = booster.key("name")?;
    match booster_name.str()? {
        "gbtree" => {}
        other => {
            return Err(booster_name.fault(format!(
                "booster '{other}' is not supported yet; expected 'gbtree' \
                 (dart and gblinear models are refused rather than scored wrongly)"
            )))
        }
    }

    let base_at = params.key("base_score")?;
    let base = parse_base_score(&base_at, n_groups)?;
    let (link, base_margin) = match objective {
        "binary:logistic" | "reg:logistic" => {
            let margins = base
                .iter()
                .map(|&p| {
                    if p > 0.0 && p < 1.0 {
                        Ok((p / (1.0 - p)).ln())
                    } else {
                        Err(base_at.fault(format!(
                            "base_score {p} for a logistic objective; expected a probability in (0, 1)"
                        )))
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            (Link::Sigmoid { scale: 1.0 }, margins)
        }
        "reg:squarederror" => (Link::Identity, base),
        "multi:softprob" => (Link::Softmax, base),
        "multi:softmax" => (Link::ArgMax, base),
        other => {
            return Err(objective_name.fault(format!(
                "objective '{other}' is not supported yet; expected one of {OBJECTIVES}"
            )))
        }
    };
    if matches!(link, Link::Softmax | Link::ArgMax) && num_class < 2 {
        return Err(params.fault(format!(
            "objective '{objective}' with num_class {num_class}; expected at least 2 classes"
        )));
    }

    let (feature_names, named_features) = feature_names(&learner, n_features)?;

    let model_at = booster.key("model")?;
    let trees_at = model_at.key("trees")?;
    let trees_json = trees_at.items()?;
    let tree_info_at = model_at.key("tree_info")?;
    let tree_info = tree_info_at.i64_array()?;
    if tree_info.len() != trees_json.len() {
        return Err(tree_info_at.fault(format!(
            "{} entries but the model has {} trees; expected one group per tree",
            tree_info.len(),
            trees_json.len()
        )));
    }
    let mut trees = Vec::with_capacity(trees_json.len());
    for (t, (tree_at, &group)) in trees_json.iter().zip(&tree_info).enumerate() {
        if group < 0 || group as usize >= n_groups {
            return Err(tree_info_at.fault(format!(
                "tree {t} adds to group {group}; expected 0..{n_groups}"
            )));
        }
        trees.push(tree(tree_at, group as u32, n_features)?);
    }

    Ok(Model {
        version,
        format,
        feature_names,
        named_features,
        body: ModelBody::Trees(TreeEnsemble {
            trees,
            n_groups,
            base_margin,
            link,
            objective: objective.to_string(),
        }),
    })
}

/// `"5E-1"` (2.x) or `"[5E-1]"` / `"[a,b,c]"` (3.x), one value or one per group.
fn parse_base_score(at: &At, n_groups: usize) -> Result<Vec<f64>> {
    let values: Vec<f64> = match at.value {
        Value::String(s) => {
            let inner = s.trim().trim_start_matches('[').trim_end_matches(']');
            inner
                .split(',')
                .map(|v| v.trim().parse::<f64>())
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| at.fault(format!("{s:?}; expected a number or a list of numbers")))?
        }
        _ => vec![at.f64()?],
    };
    if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
        return Err(at.fault(format!("{bad}; expected a finite number")));
    }
    match values.len() {
        1 => Ok(vec![values[0]; n_groups]),
        n if n == n_groups => Ok(values),
        n => Err(at.fault(format!(
            "{n} values; expected 1 or one per class ({n_groups})"
        ))),
    }
}

fn feature_names(learner: &At, n_features: usize) -> Result<(Vec<String>, bool)> {
    let names = match learner.get("feature_names") {
        Some(at) => at
            .items()?
            .iter()
            .map(|a| a.str().map(str::to_string))
            .collect::<Result<Vec<_>>>()
            .map(|names| (names, at))?,
        None => return Ok((placeholder_names(n_features), false)),
    };
    let (names, at) = names;
    if names.is_empty() {
        return Ok((placeholder_names(n_features), false));
    }
    if names.len() != n_features {
        return Err(at.fault(format!(
            "{} names but num_feature is {n_features}",
            names.len()
        )));
    }
    Ok((names, true))
}

pub(crate) fn placeholder_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("f{i}")).collect()
}

fn tree(at: &At, group: u32, n_features: usize) -> Result<crate::model::Tree> {
    let param = at.key("tree_param")?;
    let num_nodes_at = param.key("num_nodes")?;
    let num_nodes = num_nodes_at.usize()?;
    if let Some(leaf_vector) = param.get("size_leaf_vector") {
        if leaf_vector.usize()? > 1 {
            return Err(leaf_vector.fault(
                "vector leaves (multi_strategy=\"multi_output_tree\") are not supported yet; \
                 expected size_leaf_vector 0 or 1",
            ));
        }
    }
    let field = |name: &'static str| -> Result<At> { at.key(name) };
    let lefts_at = field("left_children")?;
    let rights_at = field("right_children")?;
    let features_at = field("split_indices")?;
    let conditions_at = field("split_conditions")?;
    let defaults_at = field("default_left")?;
    let lefts = lefts_at.i64_array()?;
    let rights = rights_at.i64_array()?;
    let features = features_at.i64_array()?;
    let conditions = conditions_at.f64_array()?;
    let defaults = defaults_at.bool_array()?;
    for (a, len) in [
        (&lefts_at, lefts.len()),
        (&rights_at, rights.len()),
        (&features_at, features.len()),
        (&conditions_at, conditions.len()),
        (&defaults_at, defaults.len()),
    ] {
        if len != num_nodes {
            return Err(a.fault(format!(
                "{len} entries but tree_param.num_nodes is {num_nodes}"
            )));
        }
    }
    let split_types = match at.get("split_type") {
        Some(s) => s.i64_array()?,
        None => Vec::new(),
    };
    if let Some(cats) = at.get("categories_nodes") {
        if !cats.items()?.is_empty() {
            return Err(cats.fault(
                "categorical splits in XGBoost models are not supported yet \
                 (LightGBM categorical models are); retrain with numeric encoding",
            ));
        }
    }

    let mut raw = Vec::with_capacity(num_nodes);
    for i in 0..num_nodes {
        let node_at = || format!("{} node {i}", at.path());
        if lefts[i] == -1 {
            raw.push(RawNode::Leaf(conditions[i]));
            continue;
        }
        if split_types.get(i).copied().unwrap_or(0) != 0 {
            return Err(crate::error::Fault::new(
                node_at(),
                "a categorical split; XGBoost categorical splits are not supported yet",
            ));
        }
        if lefts[i] < 0 || rights[i] < 0 || features[i] < 0 {
            return Err(crate::error::Fault::new(
                node_at(),
                format!(
                    "children {} and {}, feature {}; expected non-negative indices",
                    lefts[i], rights[i], features[i]
                ),
            ));
        }
        raw.push(RawNode::Numeric {
            feature: features[i] as usize,
            // XGBoost's thresholds are f32 values; the JSON holds them exactly.
            threshold: conditions[i] as f32,
            missing_left: defaults[i],
            zero_is_missing: false,
            left: lefts[i] as usize,
            right: rights[i] as usize,
        });
    }
    build_tree(&raw, 0, group, n_features, &at.path())
}

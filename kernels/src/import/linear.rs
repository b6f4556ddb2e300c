//! roo's linear-model JSON: what a scikit-learn linear model exports to.
//!
//! ```json
//! {"kind": "logistic", "features": ["amount", "hour"], "weights": [0.4, -1.2], "bias": 0.1}
//! ```
//! `features` may be a count instead of names (`"features": 4`): the
//! model then reads its features by position. `kind` is `linear` (identity), `logistic` (sigmoid) or `softmax` (then
//! `weights` is one row per class and `bias` one value per class). A NaN
//! feature makes the score NaN: linear models have no missing-value rule.

use serde_json::Value;

use super::json_path::At;
use crate::error::Result;
use crate::model::{LinearModel, Link, Model, ModelBody, ModelFormat, ModelVersion};

const KEYS: [&str; 4] = ["kind", "features", "weights", "bias"];

pub(crate) fn import(doc: &Value, version: ModelVersion) -> Result<Model> {
    let root = At::root(doc);
    let Some(object) = doc.as_object() else {
        return Err(root.fault("expected a JSON object"));
    };
    if let Some(unknown) = object.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(root.fault(format!(
            "unknown key '{unknown}'; expected only {}",
            KEYS.join(", ")
        )));
    }
    let kind_at = root.key("kind")?;
    let kind = kind_at.str()?;
    let features_at = root.key("features")?;
    // Names bind by name; a count (a model fitted on an unnamed array)
    // binds by position, as an XGBoost model saved without names does.
    let (features, named_features) = if features_at.value.is_number() {
        let n = features_at.usize()?;
        (super::xgboost::placeholder_names(n), false)
    } else {
        let names = features_at
            .items()?
            .iter()
            .map(|a| a.str().map(str::to_string))
            .collect::<Result<Vec<_>>>()?;
        (names, true)
    };
    if features.is_empty() {
        return Err(features_at.fault("no features; expected at least one"));
    }
    let n = features.len();
    let weights_at = root.key("weights")?;
    let bias_at = root.key("bias")?;

    let (link, weights, bias) = match kind {
        "linear" | "logistic" => {
            let weights = weights_at.f64_array()?;
            if weights.len() != n {
                return Err(weights_at.fault(format!(
                    "{} weights for {n} features; expected one per feature",
                    weights.len()
                )));
            }
            let link = if kind == "linear" {
                Link::Identity
            } else {
                Link::Sigmoid { scale: 1.0 }
            };
            (link, weights, vec![bias_at.f64()?])
        }
        "softmax" => {
            let rows = weights_at.items()?;
            if rows.len() < 2 {
                return Err(weights_at.fault(format!(
                    "{} rows; expected one row of weights per class, at least 2",
                    rows.len()
                )));
            }
            let mut weights = Vec::with_capacity(rows.len() * n);
            for row in &rows {
                let w = row.f64_array()?;
                if w.len() != n {
                    return Err(row.fault(format!(
                        "{} weights for {n} features; expected one per feature",
                        w.len()
                    )));
                }
                weights.extend(w);
            }
            let bias = bias_at.f64_array()?;
            if bias.len() != rows.len() {
                return Err(bias_at.fault(format!(
                    "{} values for {} classes; expected one per class",
                    bias.len(),
                    rows.len()
                )));
            }
            (Link::Softmax, weights, bias)
        }
        other => {
            return Err(kind_at.fault(format!(
                "unknown kind '{other}'; expected linear, logistic or softmax"
            )))
        }
    };
    if weights.iter().chain(&bias).any(|v| !v.is_finite()) {
        return Err(root.fault("a weight or bias is not finite; expected finite numbers"));
    }
    Ok(Model {
        version,
        format: ModelFormat::LinearJson,
        feature_names: features,
        named_features,
        body: ModelBody::Linear(LinearModel {
            weights,
            bias,
            link,
        }),
    })
}

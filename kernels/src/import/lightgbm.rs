//! LightGBM text models as `Booster.save_model("m.txt")` writes them (v3, v4).
//!
//! LightGBM compares `x <= threshold` in f64 and encodes missing-value rules in
//! each node's `decision_type` bits: bit 0 categorical, bit 1 default left,
//! bits 2–3 the missing type (None: NaN is read as 0.0; Zero: NaN and values
//! within 1e-35 of zero take the default side; NaN: NaN takes the default
//! side). Each rule is resolved here into the IR's `x < t` on f32, with the
//! threshold chosen so the two agree on every f32 input.

use super::{build_tree, RawNode};
use crate::error::{Fault, Result};
use crate::model::{Link, Model, ModelBody, ModelFormat, ModelVersion, TreeEnsemble};

const OBJECTIVES: &str = "binary, regression (and regression_l1, huber, fair, quantile, mape), \
                          multiclass";

pub(crate) fn import(text: &str, version: ModelVersion) -> Result<Model> {
    let sections = Sections::parse(text)?;
    let header = &sections.header;
    let max_feature_idx: usize = header.parse("max_feature_idx")?;
    let n_features = max_feature_idx + 1;
    let per_iteration: usize = header.parse("num_tree_per_iteration")?;
    let num_class: usize = header.parse("num_class")?;
    if per_iteration == 0 {
        return Err(header.fault("num_tree_per_iteration", "0; expected at least 1"));
    }
    if header.get("average_output").is_some() {
        return Err(Fault::new(
            "header",
            "average_output (boosting=rf) is not supported yet; expected a boosted model",
        ));
    }

    let objective = header.value("objective")?.to_string();
    let mut tokens = objective.split_whitespace();
    let name = tokens.next().unwrap_or("");
    let options: Vec<&str> = tokens.collect();
    let link = match name {
        "binary" => {
            let scale = option(&options, "sigmoid")
                .map(|s| {
                    s.parse::<f64>()
                        .ok()
                        .filter(|v| v.is_finite() && *v > 0.0)
                        .ok_or_else(|| {
                            header.fault(
                                "objective",
                                format!("sigmoid:{s}; expected a positive number"),
                            )
                        })
                })
                .transpose()?
                .unwrap_or(1.0);
            Link::Sigmoid { scale }
        }
        "regression" | "regression_l2" | "l2" | "mean_squared_error" | "mse" | "regression_l1"
        | "l1" | "huber" | "fair" | "quantile" | "mape" => {
            if options.contains(&"sqrt") {
                return Err(header.fault(
                    "objective",
                    format!("'{objective}': reg_sqrt models are not supported yet"),
                ));
            }
            Link::Identity
        }
        "multiclass" | "softmax" => Link::Softmax,
        _ => {
            return Err(header.fault(
                "objective",
                format!("'{objective}' is not supported yet; expected one of {OBJECTIVES}"),
            ))
        }
    };
    let n_groups = per_iteration;
    match link {
        Link::Softmax if num_class != per_iteration || num_class < 2 => {
            return Err(header.fault(
                "num_class",
                format!(
                    "{num_class} classes with {per_iteration} trees per iteration; \
                     expected one tree per class, at least 2"
                ),
            ))
        }
        Link::Sigmoid { .. } | Link::Identity if per_iteration != 1 => {
            return Err(header.fault(
                "num_tree_per_iteration",
                format!("{per_iteration} for objective '{name}'; expected 1"),
            ))
        }
        _ => {}
    }

    let names: Vec<String> = header
        .value("feature_names")?
        .split_whitespace()
        .map(str::to_string)
        .collect();
    if names.len() != n_features {
        return Err(header.fault(
            "feature_names",
            format!(
                "{} names but max_feature_idx is {max_feature_idx}",
                names.len()
            ),
        ));
    }
    // LightGBM names unnamed inputs Column_0, Column_1, …: bind those by position.
    let named_features = !names
        .iter()
        .enumerate()
        .all(|(i, n)| *n == format!("Column_{i}"));

    let mut trees = Vec::with_capacity(sections.trees.len());
    for (t, block) in sections.trees.iter().enumerate() {
        trees.push(tree(block, (t % per_iteration) as u32, n_features)?);
    }
    if trees.len() % per_iteration != 0 {
        return Err(Fault::new(
            "trees",
            format!(
                "{} trees is not a whole number of iterations of {per_iteration}",
                trees.len()
            ),
        ));
    }

    Ok(Model {
        version,
        format: ModelFormat::LightgbmText,
        feature_names: names,
        named_features,
        body: ModelBody::Trees(TreeEnsemble {
            trees,
            n_groups,
            base_margin: vec![0.0; n_groups],
            link,
            objective,
        }),
    })
}

fn option<'a>(options: &[&'a str], key: &str) -> Option<&'a str> {
    options
        .iter()
        .find_map(|o| o.strip_prefix(key).and_then(|rest| rest.strip_prefix(':')))
}

/// `key=value` lines with their line numbers: the header, or one `Tree=N` block.
struct Block<'a> {
    name: String,
    entries: Vec<(&'a str, &'a str, usize)>,
}

impl<'a> Block<'a> {
    fn get(&self, key: &str) -> Option<(&'a str, usize)> {
        self.entries
            .iter()
            .find(|(k, _, _)| *k == key)
            .map(|(_, v, line)| (*v, *line))
    }

    fn fault(&self, key: &str, message: impl Into<String>) -> Fault {
        let at = match self.get(key) {
            Some((_, line)) => format!("line {line} ({}, {key})", self.name),
            None => format!("{} ({key})", self.name),
        };
        Fault::new(at, message)
    }

    fn value(&self, key: &str) -> Result<&'a str> {
        self.get(key)
            .map(|(v, _)| v)
            .ok_or_else(|| Fault::new(&self.name, format!("missing line '{key}='")))
    }

    fn parse<T: std::str::FromStr>(&self, key: &str) -> Result<T> {
        let v = self.value(key)?;
        v.trim().parse().map_err(|_| {
            self.fault(
                key,
                format!("{v:?}; expected {}", std::any::type_name::<T>()),
            )
        })
    }

    /// A space-separated list of exactly `len` values.
    fn list<T: std::str::FromStr>(&self, key: &str, len: usize) -> Result<Vec<T>> {
        let v = self.value(key)?;
        let items: Vec<&str> = v.split_whitespace().collect();
        if items.len() != len {
            return Err(self.fault(key, format!("{} values; expected {len}", items.len())));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.parse().map_err(|_| {
                    self.fault(
                        key,
                        format!(
                            "value {i} is {s:?}; expected {}",
                            std::any::type_name::<T>()
                        ),
                    )
                })
            })
            .collect()
    }
}

struct Sections<'a> {
    header: Block<'a>,
    trees: Vec<Block<'a>>,
}

impl<'a> Sections<'a> {
    fn parse(text: &'a str) -> Result<Self> {
        let mut header = Block {
            name: "header".into(),
            entries: Vec::new(),
        };
        let mut trees: Vec<Block<'a>> = Vec::new();
        let mut ended = false;
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = line.trim_end_matches('\r');
            if line == "end of trees" {
                ended = true;
                break;
            }
            if let Some(n) = line.strip_prefix("Tree=") {
                if n.trim().parse::<usize>().ok() != Some(trees.len()) {
                    return Err(Fault::new(
                        format!("line {line_no}"),
                        format!("'{line}'; expected Tree={}", trees.len()),
                    ));
                }
                trees.push(Block {
                    name: format!("Tree={}", trees.len()),
                    entries: Vec::new(),
                });
                continue;
            }
            if let Some((key, value)) = line.split_once('=') {
                let block = trees.last_mut().unwrap_or(&mut header);
                block.entries.push((key, value, line_no));
            } else if line == "average_output" {
                header.entries.push((line, "", line_no));
            }
        }
        if !ended {
            return Err(Fault::new(
                "end of file",
                "no 'end of trees' line: the file is truncated or not a LightGBM model",
            ));
        }
        if trees.is_empty() {
            return Err(Fault::new("trees", "the model has no trees"));
        }
        Ok(Self { header, trees })
    }
}

const KIND_CATEGORICAL: u8 = 1;
const KIND_DEFAULT_LEFT: u8 = 2;

fn tree(block: &Block, group: u32, n_features: usize) -> Result<crate::model::Tree> {
    let leaves: usize = block.parse("num_leaves")?;
    if leaves == 0 {
        return Err(block.fault("num_leaves", "0; expected at least 1"));
    }
    if let Some(("1", _)) = block.get("is_linear") {
        return Err(block.fault("is_linear", "linear trees are not supported yet"));
    }
    let leaf_values: Vec<f64> = block.list("leaf_value", leaves)?;
    if leaves == 1 {
        return build_tree(
            &[RawNode::Leaf(leaf_values[0])],
            0,
            group,
            n_features,
            &block.name,
        );
    }
    let splits = leaves - 1;
    let features: Vec<usize> = block.list("split_feature", splits)?;
    let thresholds: Vec<f64> = block.list("threshold", splits)?;
    let kinds: Vec<u8> = block.list("decision_type", splits)?;
    let lefts: Vec<i64> = block.list("left_child", splits)?;
    let rights: Vec<i64> = block.list("right_child", splits)?;
    let num_cat: usize = block
        .get("num_cat")
        .map_or(Ok(0), |_| block.parse("num_cat"))?;
    let (boundaries, cat_words): (Vec<usize>, Vec<u32>) = if num_cat > 0 {
        let boundaries: Vec<usize> = block.list("cat_boundaries", num_cat + 1)?;
        let words = *boundaries.last().expect("num_cat + 1 > 0 entries");
        if boundaries.windows(2).any(|w| w[0] > w[1]) || boundaries[0] != 0 {
            return Err(block.fault("cat_boundaries", "expected ascending offsets from 0"));
        }
        (boundaries, block.list("cat_threshold", words)?)
    } else {
        (Vec::new(), Vec::new())
    };

    // Internal node i keeps index i; leaf j becomes node splits + j.
    let child = |c: i64| -> usize {
        if c >= 0 {
            c as usize
        } else {
            splits + (!c) as usize
        }
    };
    let mut raw = Vec::with_capacity(splits + leaves);
    for i in 0..splits {
        let kind = kinds[i];
        let (left, right) = (child(lefts[i]), child(rights[i]));
        if kind & KIND_CATEGORICAL != 0 {
            let t = thresholds[i];
            let index = t as usize;
            if t < 0.0 || t.fract() != 0.0 || index >= num_cat {
                return Err(block.fault(
                    "threshold",
                    format!("node {i}: category set {t}; expected 0..{num_cat}"),
                ));
            }
            raw.push(RawNode::Categorical {
                feature: features[i],
                bits: cat_words[boundaries[index]..boundaries[index + 1]].to_vec(),
                left,
                right,
            });
            continue;
        }
        let threshold = thresholds[i];
        if threshold.is_nan() {
            return Err(block.fault("threshold", format!("node {i}: NaN; expected a number")));
        }
        let default_left = kind & KIND_DEFAULT_LEFT != 0;
        let (missing_left, zero_is_missing) = match (kind >> 2) & 3 {
            // None: NaN is read as 0.0 and compared like any value.
            0 => (0.0 <= threshold, false),
            // Zero: NaN becomes 0.0, which is "zero", so both take the default side.
            1 => (default_left, true),
            2 => (default_left, false),
            _ => {
                return Err(block.fault(
                    "decision_type",
                    format!("node {i}: {kind} has missing type 3; expected 0, 1 or 2"),
                ))
            }
        };
        raw.push(RawNode::Numeric {
            feature: features[i],
            threshold: f32_less_than_bound(threshold),
            missing_left,
            zero_is_missing,
            left,
            right,
        });
    }
    raw.extend(leaf_values.into_iter().map(RawNode::Leaf));
    build_tree(&raw, 0, group, n_features, &block.name)
}

/// The f32 `t` with `x < t` exactly when `x as f64 <= threshold`, for every
/// non-NaN f32 `x`: one above the largest f32 not above the threshold.
/// (The one input this cannot express is `x = +inf` against a threshold of
/// exactly `+inf`, which LightGBM does not write: it bins finite values.)
pub(crate) fn f32_less_than_bound(threshold: f64) -> f32 {
    let mut below = threshold as f32;
    if below as f64 > threshold {
        below = below.next_down();
    }
    below.next_up()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_bound_agrees_with_f64_less_or_equal() {
        let thresholds = [
            0.0,
            -0.0,
            1.0,
            0.1,
            -0.1,
            1e-40,
            -1e-40,
            1e300,
            -1e300,
            f64::NEG_INFINITY,
            3.4028235677973366e38,
            0.612_306_386_232_376,
        ];
        let probes: Vec<f32> = thresholds
            .iter()
            .flat_map(|&t| {
                let f = t as f32;
                [
                    f,
                    f.next_up(),
                    f.next_down(),
                    0.0,
                    -0.0,
                    f32::INFINITY,
                    f32::NEG_INFINITY,
                    f32::MAX,
                ]
            })
            .collect();
        for &t in &thresholds {
            let bound = f32_less_than_bound(t);
            for &x in &probes {
                assert_eq!(
                    x < bound,
                    (x as f64) <= t,
                    "x={x:e} t={t:e} bound={bound:e}"
                );
            }
        }
    }
}

//! Broken, truncated and unsupported model files: each is refused with an
//! error naming the file, where in it, and what was expected. None panics.

use std::path::{Path, PathBuf};

use roo_kernels::model_from_bytes;

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(golden(name)).unwrap()
}

fn error_of(bytes: &[u8]) -> String {
    match model_from_bytes(bytes, "m") {
        Ok(_) => panic!("the model loaded; expected an error"),
        Err(e) => e.to_string(),
    }
}

/// Replaces the first occurrence of `from` (which must exist) with `to`.
fn edit(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    let text = std::str::from_utf8(bytes).unwrap();
    assert!(text.contains(from), "fixture lacks {from:?}");
    text.replacen(from, to, 1).into_bytes()
}

#[test]
fn empty_and_unrecognised_files() {
    assert!(error_of(b"").starts_with("reading model m: the file is empty; expected an XGBoost"));
    assert!(error_of(b"\x89PNG\r\n").starts_with("reading model m: unrecognised format"));
    assert!(error_of(br#"{"hello": 1}"#).contains("neither an XGBoost model"));
    assert_eq!(
        error_of(b"{\"learner\": [1, 2"),
        "reading model m: line 1 column 17: invalid JSON: EOF while parsing a list at line 1 column 17"
    );
}

#[test]
fn every_truncation_of_every_format_is_an_error_not_a_panic() {
    for name in [
        "xgb3_binary.json",
        "xgb3_binary.ubj",
        "xgb2_multiclass.ubj",
        "lgb_categorical.txt",
        "skl_softmax.json",
    ] {
        let bytes = read(name);
        // A LightGBM file is complete at "end of trees"; what follows is optional.
        let end = match name.ends_with(".txt") {
            true => std::str::from_utf8(&bytes)
                .unwrap()
                .find("end of trees")
                .unwrap(),
            false => bytes.len() - 1,
        };
        let step = (end / 97).max(1);
        for len in (0..end).step_by(step) {
            let result = model_from_bytes(&bytes[..len], name);
            assert!(result.is_err(), "{name} cut to {len} bytes loaded");
        }
    }
}

#[test]
fn truncated_files_say_where() {
    let ubj = read("xgb3_binary.ubj");
    let err = error_of(&ubj[..ubj.len() / 2]);
    assert!(err.starts_with("reading model m: UBJSON byte "), "{err}");
    assert!(err.contains("truncated"), "{err}");
    let lgb = read("lgb_binary.txt");
    assert_eq!(
        error_of(&lgb[..lgb.len() / 2]),
        "reading model m: end of file: no 'end of trees' line: the file is truncated or not a LightGBM model"
    );
}

#[test]
fn unknown_objectives_and_boosters_are_refused_by_name() {
    let xgb = read("xgb3_binary.json");
    assert_eq!(
        error_of(&edit(&xgb, "\"binary:logistic\"", "\"rank:pairwise\"")),
        "reading model m: learner.objective.name: objective 'rank:pairwise' is not supported yet; \
         expected one of binary:logistic, reg:logistic, reg:squarederror, multi:softprob, multi:softmax"
    );
    let err = error_of(&edit(&xgb, "\"name\":\"gbtree\"", "\"name\":\"dart\""));
    assert!(
        err.starts_with(
            "reading model m: learner.gradient_booster.name: booster 'dart' is not supported yet"
        ),
        "{err}"
    );
    let lgb = read("lgb_regression.txt");
    let err = error_of(&edit(&lgb, "objective=regression", "objective=lambdarank"));
    assert!(
        err.starts_with("reading model m: line 7 (header, objective): 'lambdarank' is not supported yet; expected one of binary"),
        "{err}"
    );
}

#[test]
fn structural_faults_name_tree_node_and_expectation() {
    let xgb = read("xgb3_binary.json");
    // The root of tree 0 splits on feature 0; point it past the 8 features.
    let err = error_of(&edit(
        &xgb,
        "\"split_indices\":[0,",
        "\"split_indices\":[41,",
    ));
    assert_eq!(
        err,
        "reading model m: learner.gradient_booster.model.trees[0]: node 0: feature index 41 but the model has 8 features"
    );
    let err = error_of(&edit(
        &xgb,
        "\"left_children\":[1,",
        "\"left_children\":[0,",
    ));
    assert!(
        err.contains("trees[0]: node 0: child 0 is reached twice"),
        "{err}"
    );
    let err = error_of(&edit(
        &xgb,
        "\"num_feature\":\"8\",\"num_target\"",
        "\"num_feature\":\"eight\",\"num_target\"",
    ));
    assert_eq!(
        err,
        "reading model m: learner.learner_model_param.num_feature: expected a non-negative integer, found the string \"eight\""
    );
    let lgb = read("lgb_binary.txt");
    let err = error_of(&edit(&lgb, "split_feature=", "split_feature=1 "));
    assert!(
        err.contains("(Tree=0, split_feature): 15 values; expected 14"),
        "{err}"
    );
    let err = error_of(&edit(&lgb, "num_leaves=15", "num_leaves=x"));
    assert!(
        err.contains("(Tree=0, num_leaves): \"x\"; expected usize"),
        "{err}"
    );
}

#[test]
fn linear_json_is_checked_field_by_field() {
    let ok = br#"{"kind": "logistic", "features": ["a", "b"], "weights": [1, 2], "bias": 0.5}"#;
    assert!(model_from_bytes(ok, "m").is_ok());
    assert_eq!(
        error_of(br#"{"kind": "logistic", "features": ["a", "b"], "weights": [1], "bias": 0.5}"#),
        "reading model m: weights: 1 weights for 2 features; expected one per feature"
    );
    assert_eq!(
        error_of(br#"{"kind": "probit", "features": ["a"], "weights": [1], "bias": 0}"#),
        "reading model m: kind: unknown kind 'probit'; expected linear, logistic or softmax"
    );
    assert_eq!(
        error_of(br#"{"kind": "linear", "features": ["a"], "weights": [1], "bias": 0, "wieghts": 1}"#),
        "reading model m: (document root): unknown key 'wieghts'; expected only kind, features, weights, bias"
    );
    assert_eq!(
        error_of(br#"{"kind": "softmax", "features": ["a"], "weights": [[1], [2]], "bias": [0]}"#),
        "reading model m: bias: 1 values for 2 classes; expected one per class"
    );
}

#[test]
fn a_linear_model_given_a_feature_count_binds_by_position() {
    let m = model_from_bytes(
        br#"{"kind": "linear", "features": 3, "weights": [1, 2, 3], "bias": 0}"#,
        "m",
    )
    .unwrap();
    assert!(!m.named_features);
    assert_eq!(m.n_features(), 3);
    assert_eq!(
        error_of(br#"{"kind": "linear", "features": 0, "weights": [], "bias": 0}"#),
        "reading model m: features: no features; expected at least one"
    );
}

/// `bytes` with one more `metadata_props` entry (ModelProto field 14)
/// appended: protobuf fields may come in any order.
fn with_metadata(bytes: &[u8], key: &str, value: &str) -> Vec<u8> {
    fn field(out: &mut Vec<u8>, number: u8, payload: &[u8]) {
        out.push(number << 3 | 2);
        let mut len = payload.len();
        while len >= 0x80 {
            out.push((len as u8 & 0x7f) | 0x80);
            len >>= 7;
        }
        out.push(len as u8);
        out.extend_from_slice(payload);
    }
    let mut entry = Vec::new();
    field(&mut entry, 1, key.as_bytes());
    field(&mut entry, 2, value.as_bytes());
    let mut out = bytes.to_vec();
    field(&mut out, 14, &entry);
    out
}

#[test]
fn onnx_feature_names_travel_in_the_metadata() {
    let onnx = read("onnx_skl_mlp_multiclass.onnx");
    let names: Vec<String> = (0..8).map(|i| format!("x{i}")).collect();
    let json = serde_json::to_string(&names).unwrap();
    let m = model_from_bytes(&with_metadata(&onnx, "roo.features", &json), "m").unwrap();
    assert!(m.named_features);
    assert_eq!(m.feature_names, names);
    // Other metadata is ignored.
    let m = model_from_bytes(&with_metadata(&onnx, "author", "someone"), "m").unwrap();
    assert!(!m.named_features);
    assert_eq!(
        error_of(&with_metadata(&onnx, "roo.features", r#"["a", "b"]"#)),
        "reading model m: metadata_props[roo.features]: 2 names for a model that reads 8 features; \
         expected one per feature"
    );
    let repeated = r#"["a", "a", "b", "c", "d", "e", "f", "g"]"#;
    assert_eq!(
        error_of(&with_metadata(&onnx, "roo.features", repeated)),
        "reading model m: metadata_props[roo.features]: feature name \"a\" is empty or repeated; \
         expected distinct names"
    );
    assert!(error_of(&with_metadata(&onnx, "roo.features", "not json"))
        .contains("expected a JSON array of feature names"));
}

#[test]
fn versions_are_content_hashes() {
    let a = model_from_bytes(&read("xgb3_binary.json"), "a").unwrap();
    let b = model_from_bytes(&read("xgb3_binary.json"), "b").unwrap();
    let c = model_from_bytes(&read("xgb3_binary.ubj"), "c").unwrap();
    assert_eq!(
        a.version, b.version,
        "same bytes, same version, whatever the name"
    );
    assert_ne!(a.version, c.version, "different bytes, different version");
    assert_eq!(a.version.to_string().len(), "sha256:".len() + 64);
}

#[test]
fn onnx_operators_outside_the_supported_set_are_listed() {
    let onnx = read("onnx_skl_mlp_binary.onnx");
    // Rename every "Relu" (node names and the op_type) to an operator roo lacks.
    let mut patched = onnx.clone();
    let hits: Vec<usize> = onnx
        .windows(4)
        .enumerate()
        .filter(|(_, w)| *w == b"Relu")
        .map(|(i, _)| i)
        .collect();
    assert!(!hits.is_empty(), "the MLP has a Relu");
    for at in hits {
        patched[at..at + 4].copy_from_slice(b"Gelu");
    }
    let err = error_of(&patched);
    assert!(
        err.starts_with("reading model m: graph: operators roo cannot score: Gelu; the graph uses Add, ArgMax, \
                         ArrayFeatureExtractor, Cast, Concat, Gelu, MatMul, Reshape, Sigmoid, Sub. Supported:"),
        "{err}"
    );
}

#[test]
fn onnx_models_bind_by_position_and_describe_themselves() {
    let m = model_from_bytes(&read("onnx_skl_mlp_multiclass.onnx"), "m").unwrap();
    assert!(!m.named_features);
    assert_eq!(m.n_features(), 8);
    assert_eq!(m.n_outputs(), 3);
    assert_eq!(
        m.summary().objective,
        "8-16-8-3 (tanh, tanh, identity), softmax head"
    );
}

#[test]
fn oversized_model_files_are_refused_before_they_are_read() {
    let dir = std::env::temp_dir().join(format!("roo-oversized-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("huge.json");
    // A sparse file: its length is past the bound, its blocks are never written.
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(roo_kernels::MODEL_FILE_BYTES_MAX + 1).unwrap();
    let err = roo_kernels::load_model(&path).unwrap_err().to_string();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        err.contains(
            "the file is 1073741825 bytes; roo reads model files of at most 1073741824 bytes"
        ),
        "{err}"
    );
}

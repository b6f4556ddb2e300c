//! Golden predictions: roo's reference scorer against the libraries' own
//! `predict` on every fixture in tests/golden/manifest.json.
//!
//! Tolerance: 1e-5 absolute. The fixture inputs are exact f32 values, so the
//! only differences are summation order and precision: XGBoost sums leaves in
//! f32 (about 6e-8 relative error per addition, a few hundred additions at
//! most here), LightGBM and scikit-learn in f64, roo in f64. Scores are
//! probabilities or unit-scale regression values, so 1e-5 is well above the
//! rounding noise (we see at most ~1e-6) and far below any real disagreement,
//! such as one row taking the wrong branch of one tree (~1e-2).

use std::path::{Path, PathBuf};

use roo_kernels::{load_model, reference};

pub const TOLERANCE: f64 = 1e-5;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// A CSV file's header and its cells as strings (the fixtures hold no quotes).
fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let header = lines
        .next()
        .unwrap()
        .split(',')
        .map(str::to_string)
        .collect();
    let rows = lines
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    (header, rows)
}

#[test]
fn reference_scorer_matches_every_library_fixture() {
    let dir = golden_dir();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let fixtures = manifest["fixtures"].as_array().unwrap();
    assert!(
        fixtures.len() >= 25,
        "the manifest lists {} fixtures",
        fixtures.len()
    );
    let mut failures = Vec::new();
    for fixture in fixtures {
        let name = fixture["name"].as_str().unwrap();
        let model = load_model(dir.join(fixture["model"].as_str().unwrap()))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let (header, rows) = read_csv(&dir.join(fixture["data"].as_str().unwrap()));
        let columns: Vec<usize> = if model.named_features {
            model
                .feature_names
                .iter()
                .map(|f| {
                    header
                        .iter()
                        .position(|h| h == f)
                        .unwrap_or_else(|| panic!("{name}: no column {f}"))
                })
                .collect()
        } else {
            (0..model.n_features()).collect()
        };
        let features: Vec<Vec<f32>> = columns
            .iter()
            .map(|&c| {
                rows.iter()
                    .map(|r| {
                        if r[c].is_empty() {
                            f32::NAN
                        } else {
                            r[c].parse().unwrap()
                        }
                    })
                    .collect()
            })
            .collect();
        let (_, expected) = read_csv(&dir.join(fixture["expected"].as_str().unwrap()));
        let k = model.n_outputs();
        assert_eq!(
            k as u64,
            fixture["outputs"].as_u64().unwrap(),
            "{name}: outputs"
        );
        let mut out = vec![vec![0f32; rows.len()]; k];
        let feature_refs: Vec<&[f32]> = features.iter().map(Vec::as_slice).collect();
        reference::score(
            &model,
            &feature_refs,
            &mut out.iter_mut().map(|c| &mut c[..]).collect::<Vec<_>>(),
        );
        let mut max_diff = 0f64;
        for (r, want) in expected.iter().enumerate() {
            for (c, cell) in want.iter().enumerate() {
                let want: f64 = cell.parse().unwrap();
                max_diff = max_diff.max((out[c][r] as f64 - want).abs());
            }
        }
        println!(
            "golden {name:<24} {:<13} {:>4} rows x {k}  max |roo - library| = {max_diff:.3e}",
            fixture["library"].as_str().unwrap(),
            rows.len()
        );
        if max_diff > TOLERANCE {
            failures.push(format!("{name}: max difference {max_diff:e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "fixtures beyond {TOLERANCE:e}: {failures:#?}"
    );
}

//! The Python package (`python/`): its pytest suite and the notebook
//! walkthrough (`examples/python/notebook.py`), against the real `roo
//! serve` this build made (`ROO_BINARY`), importing the checkout's
//! package source (`PYTHONPATH`). CI also installs the wheel itself and
//! checks that `roo` is on the PATH (`.ci/run`).
//!
//! Needs a Python with appliance/tests/python/requirements.txt (pyarrow,
//! pandas, polars, pytest, mypy) and bench/python/requirements.txt (XGBoost,
//! LightGBM, scikit-learn, skl2onnx); without one it prints SKIPPED, and
//! with `ROO_REQUIRE_PYARROW=1` (CI) fails.

mod common;

use std::path::Path;
use std::process::Command;

const MODULES: &str = "pyarrow, pandas, polars, pytest, mypy, xgboost, lightgbm, sklearn, skl2onnx";

fn checkout() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the appliance crate sits in the checkout")
}

/// `python ARGS` in the checkout with the package source and this build's
/// engine; it must exit 0. Returns what it printed.
fn run(python: &str, args: &[&str]) -> String {
    let out = Command::new(python)
        .args(args)
        .current_dir(checkout())
        .env("ROO_BINARY", env!("CARGO_BIN_EXE_roo"))
        .env("PYTHONPATH", checkout().join("python"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("running python");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "python {}: {said}", args.join(" "));
    said
}

#[test]
fn the_python_package_suite_passes() {
    let Some(python) = common::python(MODULES) else {
        return;
    };
    let said = run(
        &python,
        &[
            "-m",
            "pytest",
            "-q",
            "-s",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            "python",
            "python/tests",
        ],
    );
    eprintln!("{said}");
    // Nothing skipped: every test the suite holds ran.
    assert!(!said.contains("skipped"), "{said}");
    assert!(said.contains(" passed"), "{said}");
}

#[test]
fn the_notebook_walkthrough_runs() {
    let Some(python) = common::python(MODULES) else {
        return;
    };
    let said = run(
        &python,
        &[
            "examples/python/notebook.py",
            "--events",
            "50000",
            "--live",
            "5000",
        ],
    );
    assert!(said.contains("4.   deployed sha256:"), "{said}");
    assert!(said.contains("0 dead letters"), "{said}");
    assert!(said.contains("audit of txn"), "{said}");
}

#[test]
fn the_package_is_typed() {
    let Some(python) = common::python(MODULES) else {
        return;
    };
    // pyproject.toml's [tool.mypy]: every function annotated, for 3.10.
    let said = run(
        &python,
        &[
            "-m",
            "mypy",
            "--config-file",
            "python/pyproject.toml",
            "--cache-dir",
            "/dev/null",
            "python/roo",
        ],
    );
    assert!(said.contains("Success: no issues found"), "{said}");
}

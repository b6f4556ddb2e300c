//! The Flight half of `roo-bench chaos`: `python/flight_chaos.py`, the roo
//! package's `put` on a named stream against a daemon SIGKILLed mid-put.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context, Result};

/// The Flight half: `flight_chaos.py` (see its doc) with `kills` SIGKILLs
/// over a put of up to 1M rows; skipped, and said, when `python` has no
/// pyarrow.
pub(super) fn run(python: &str, roo: &Path, events: usize, kills: usize, dir: &Path) -> Result<()> {
    crate::report::step("chaos: SIGKILL mid-put over Flight");
    let has_pyarrow = Command::new(python)
        .args(["-c", "import pyarrow.flight"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_pyarrow {
        say!("chaos: over Flight: skipped ({python} has no pyarrow)");
        return Ok(());
    }
    let rows = events.min(1_000_000);
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the checkout")?;
    let script = checkout
        .join("bench")
        .join("python")
        .join("flight_chaos.py");
    let out = Command::new(python)
        .arg(&script)
        .args([rows.to_string(), kills.to_string()])
        .arg(dir.join("flight"))
        .env("ROO_BINARY", roo)
        .env("PYTHONPATH", checkout.join("python"))
        .output()
        .with_context(|| format!("running {python} {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let line = String::from_utf8(out.stdout)?;
    let v: serde_json::Value = serde_json::from_str(line.trim())
        .with_context(|| format!("{}: {line}", script.display()))?;
    let n = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    say!(
        "chaos: over Flight, {rows} rows by DoPut (the roo package's put on a named stream) through the same \
         features and model into Parquet, checkpointing every 0.05 s, {} SIGKILLs mid-put, the put resuming \
         each time from the rows durable ({} rows sent again): duplicates {}, lost {}, columns differing from an \
         uninterrupted run {} ({:.1} s with restarts; {:.1} s uninterrupted)",
        n("kills"),
        n("resent"),
        n("duplicates"),
        n("lost"),
        n("differing_columns"),
        n("seconds"),
        n("seconds_uninterrupted")
    );
    ensure!(
        n("duplicates") == 0.0 && n("lost") == 0.0 && n("differing_columns") == 0.0,
        "crash safety over Flight broke: {line}"
    );
    Ok(())
}

//! The publish order of a file sink, watched from outside with strace.

use std::path::{Path, PathBuf};
use std::process::Command;

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../kernels/tests/golden")
        .join(name)
}

/// A published file is durable before it is named, and its name before it
/// counts: the file is fsynced, renamed into place, then its directory is
/// fsynced (a crash after the rename cannot lose it). Watched with strace;
/// CI installs it and sets ROO_REQUIRE_STRACE=1.
#[test]
fn a_published_file_is_fsynced_renamed_and_its_directory_fsynced() {
    let strace = Command::new("strace").arg("-V").output();
    if !strace.is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var_os("ROO_REQUIRE_STRACE").is_none(),
            "ROO_REQUIRE_STRACE is set but strace cannot run"
        );
        eprintln!("SKIPPED: strace is not installed; the publish order was not checked");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let output = out_dir.join("scored.arrow");
    let trace = dir.path().join("trace");
    let run = Command::new("strace")
        .args([
            "-f",
            "-qq",
            "-e",
            "trace=openat,rename,renameat,renameat2,fsync,fdatasync",
            "-o",
        ])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_roo"))
        .args(["score", "--device", "cpu", "--model"])
        .arg(golden("xgb2_binary.json"))
        .arg("--input")
        .arg(golden("data_binary.csv"))
        .arg("--output")
        .arg(&output)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let text = std::fs::read_to_string(&trace).unwrap();
    let calls: Vec<&str> = text
        .lines()
        .map(|l| l.split_once(' ').map_or(l, |(_, call)| call.trim_start()))
        .collect();
    let shown = |p: &Path| format!("\"{}\"", p.display());
    let partial = shown(&out_dir.join(".scored.arrow.partial"));
    // The partial file's descriptor, fsynced before the rename.
    let fd_of = |call: &str| {
        call.rsplit("= ")
            .next()
            .and_then(|fd| fd.trim().parse::<i32>().ok())
    };
    let opened = calls
        .iter()
        .position(|c| c.starts_with("openat(") && c.contains(&partial))
        .unwrap_or_else(|| panic!("the partial file was never opened:\n{text}"));
    let file_fd = fd_of(calls[opened]).unwrap();
    let renamed = calls
        .iter()
        .position(|c| {
            c.starts_with("rename") && c.contains(&partial) && c.contains(&shown(&output))
        })
        .unwrap_or_else(|| panic!("no rename into place:\n{text}"));
    assert!(
        calls[opened..renamed]
            .iter()
            .any(|c| c.starts_with(&format!("fsync({file_fd})"))
                || c.starts_with(&format!("fdatasync({file_fd})"))),
        "the file was not fsynced before its rename:\n{text}"
    );
    let dir_opened = renamed
        + calls[renamed..]
            .iter()
            .position(|c| c.starts_with("openat(") && c.contains(&shown(&out_dir)))
            .unwrap_or_else(|| panic!("the directory was not opened after the rename:\n{text}"));
    let dir_fd = fd_of(calls[dir_opened]).unwrap();
    assert!(
        calls[dir_opened..]
            .iter()
            .any(|c| c.starts_with(&format!("fsync({dir_fd})"))),
        "the directory was not fsynced after the rename:\n{text}"
    );
}

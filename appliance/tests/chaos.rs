//! Crash safety: `roo serve` killed with SIGKILL at random moments and
//! restarted, over and over, publishes every event exactly once, with the
//! features, scores, dead letters and aggregate windows of an
//! uninterrupted run.
//!
//! Two pipelines read one CSV file of card transactions (some late: dead
//! letters): one computes per-card features and scores them with a linear
//! model into Parquet files, recording each decision in an audit log; the
//! other counts each card's spend in hourly windows into Arrow files. The reference run has no checkpoints
//! and is never killed. The chaos run checkpoints every 0.25 s into
//! `state_dir`; each round waits until a new checkpoint exists (so the run
//! makes progress), sleeps a random moment, kills the daemon and starts it
//! again. Sizes: `ROO_CHAOS_EVENTS` (default 400,000) and
//! `ROO_CHAOS_KILLS` (default 8).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use common::Daemon;

/// Transactions in time order but for some up to 50 s late (within the
/// 60 s lateness) and some an hour late (dead letters).
fn transactions_csv(n: usize, seed: u64) -> String {
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut clock: i64 = 1_790_000_000_000_000;
    let mut text = String::from("txn_id,card_id,merchant_id,ts,amount\n");
    for i in 0..n {
        clock += (next() % 2_000_000) as i64;
        let t = match next() % 200 {
            0..=19 => clock - (next() % 50_000_000) as i64,
            20 => clock - 3_600_000_000,
            _ => clock,
        };
        let card = (next() % 3000) * (next() % 1000) / 1000;
        let merchant = next() % 400;
        let amount = format!("{}.{:02}", next() % 500, next() % 100);
        text.push_str(&format!("{i},{card},{merchant},{t},{amount}\n"));
    }
    text
}

fn config(dir: &Path, data: &Path, out: &Path, state: Option<&Path>) -> PathBuf {
    let model = dir.join("model.json");
    std::fs::write(
        &model,
        r#"{"kind": "logistic", "features": ["n_1h", "spend_1h", "mean_24h", "amount"], "weights": [0.01, 0.001, -0.002, 0.003], "bias": -1.5}"#,
    )
    .unwrap();
    let server = match state {
        Some(s) => format!("state_dir = {s:?}\ncheckpoint_secs = 0.25\n"),
        None => String::new(),
    };
    let text = format!(
        r#"[server]
threads = 2
{server}
[[pipeline]]
name = "scored"
model = {model:?}
event_time = "ts"
lateness = "60s"
max_rows = 2048

[pipeline.source]
kind = "file"
path = {data:?}

[[pipeline.feature]]
name = "n_1h"
key = "card_id"
agg = "count"
window = "1h"

[[pipeline.feature]]
name = "spend_1h"
key = "card_id"
agg = "sum"
column = "amount"
window = "1h"

[[pipeline.feature]]
name = "mean_24h"
key = "card_id"
agg = "mean"
column = "amount"
window = "24h"

[[pipeline.feature]]
name = "merchants_24h"
key = "card_id"
agg = "count_distinct"
column = "merchant_id"
window = "24h"

[pipeline.audit]
dir = {audit:?}
id = "txn_id"

[[pipeline.sink]]
kind = "files"
dir = {scored:?}
format = "parquet"
rotate_mb = 1

[pipeline.dead_letters]
dir = {dead:?}

[[pipeline]]
name = "windows"
event_time = "ts"
lateness = "60s"
max_rows = 1500

[pipeline.source]
kind = "file"
path = {data:?}

[[pipeline.aggregate]]
name = "spend"
key = "card_id"
agg = "sum"
column = "amount"
window = "1h"
every = "10m"
top = 50

[[pipeline.sink]]
kind = "files"
dir = {windows:?}
format = "arrow"
rotate_mb = 1
"#,
        scored = out.join("scored"),
        audit = out.join("audit"),
        dead = out.join("dead"),
        windows = out.join("windows"),
    );
    let path = out.with_extension("toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn read_dir(dir: &Path) -> Vec<RecordBatch> {
    common::read_published(dir)
}

fn rows(batches: &[RecordBatch], first: &str) -> BTreeMap<String, usize> {
    common::row_multiset(batches, first)
}

/// Dead letters as (offset, line, reason) lines. A row an operator
/// refused (a late event) is located by its batch's offset and its row in
/// that batch; batches after a restart are cut from the resume point, so
/// that locator may differ while the event is the same: such letters are
/// compared by the rest of the reason (event time, key, its newest time).
fn dead_letters(dir: &Path) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!name.starts_with('.'), "a partial dead-letter file: {name}");
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let reason = v["reason"].as_str().unwrap();
            let key = if v["line"].is_null() {
                let (_, event) = reason.split_once(": ").unwrap();
                format!("row: {event}")
            } else {
                format!("{} {} {reason}", v["offset"], v["line"])
            };
            *out.entry(key).or_insert(0) += 1;
        }
    }
    out
}

/// The audit log's records, as rows from `txn_id` on, without the two
/// columns that differ between runs (ingest time, device); no partial
/// file may be left.
fn audit_records(dir: &Path) -> BTreeMap<String, usize> {
    let mut batches = Vec::new();
    let mut hours: Vec<PathBuf> = std::fs::read_dir(dir.join("records"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    hours.sort();
    for hour in hours {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&hour)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            assert!(!name.starts_with('.'), "a partial audit file: {name}");
            if !name.starts_with("seg-") {
                continue;
            }
            let schema = std::sync::Arc::new(arrow_schema::Schema::empty());
            roo_scheduler::sinks::layout::read_output_file(&f, &schema, &mut |b| {
                let keep: Vec<usize> = (0..b.num_columns())
                    .filter(|&i| {
                        let n = b.schema().field(i).name().clone();
                        n != "audit_ingest_time" && n != "audit_device"
                    })
                    .collect();
                batches.push(b.project(&keep).unwrap());
                true
            })
            .unwrap();
        }
    }
    rows(&batches, "txn_id")
}

fn newest_checkpoint(state: &Path) -> u64 {
    std::fs::read_dir(state.join("scored"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_prefix("checkpoint-")?
                .strip_suffix(".roo")?
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn sigkill_at_random_moments_loses_nothing_and_writes_nothing_twice() {
    let events: usize = std::env::var("ROO_CHAOS_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400_000);
    let kills: usize = std::env::var("ROO_CHAOS_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("txns.csv");
    std::fs::write(&data, transactions_csv(events, 0x2545_f491_4f6c_dd1d)).unwrap();

    // The reference: no checkpoints, never killed.
    let reference = dir.path().join("reference");
    let cfg = config(dir.path(), &data, &reference, None);
    let started = Instant::now();
    let (code, lines) = Daemon::start(&cfg, Stdio::null()).finish();
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
    let uninterrupted = started.elapsed();

    // The chaos run.
    let chaos = dir.path().join("chaos");
    let state = dir.path().join("state");
    let cfg = config(dir.path(), &data, &chaos, Some(&state));
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut random = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut killed = 0;
    let mut finished_early = false;
    while killed < kills {
        let seen = newest_checkpoint(&state);
        let daemon = Daemon::start(&cfg, Stdio::null());
        // Progress: a checkpoint newer than the last run's (or the run's end).
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut daemon = daemon;
        loop {
            if newest_checkpoint(&state) > seen {
                break;
            }
            if daemon.child.try_wait().unwrap().is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "no checkpoint in 120 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        // Then a random moment: mid-batch, mid-checkpoint, mid-publish.
        std::thread::sleep(Duration::from_millis(random() % 600));
        if daemon.child.try_wait().unwrap().is_some() {
            finished_early = true;
            let (code, lines) = daemon.finish();
            assert_eq!(code, Some(0), "{}", lines.join("\n"));
            break;
        }
        daemon.signal(libc::SIGKILL);
        let (code, _) = daemon.finish();
        assert_eq!(code, None, "killed by a signal");
        killed += 1;
    }
    if !finished_early {
        let (code, lines) = Daemon::start(&cfg, Stdio::null()).finish();
        assert_eq!(code, Some(0), "{}", lines.join("\n"));
    }

    let c = compare(&reference, &chaos);
    eprintln!(
        "chaos: {events} events, {killed} kills survived{}, {} rows scored, {} audit records, {} dead letters, {} window rows checked; duplicates {}, lost {}; uninterrupted run {:.1} s",
        if finished_early { " (the run finished before the last)" } else { "" },
        c.rows,
        c.audited,
        c.dead_letters,
        c.windows,
        c.duplicates,
        c.lost,
        uninterrupted.as_secs_f64()
    );
    assert!(c.rows > events * 9 / 10, "{} of {events} scored", c.rows);
    assert!(
        killed >= kills.min(2),
        "only {killed} kills before the run ended: too small a file"
    );
}

/// What a run holds beside the uninterrupted one's, checked equal.
struct Compared {
    rows: usize,
    audited: usize,
    dead_letters: usize,
    windows: usize,
    duplicates: usize,
    lost: usize,
}

/// Every event once: the scored rows (txn_id first), the dead letters and
/// the windows of `run` equal `reference`'s, as multisets (asserted).
fn compare(reference: &Path, run: &Path) -> Compared {
    let want = rows(&read_dir(&reference.join("scored")), "txn_id");
    let got = rows(&read_dir(&run.join("scored")), "txn_id");
    let total: usize = want.values().sum();
    let duplicates: usize = got.values().filter(|n| **n > 1).map(|n| n - 1).sum();
    let lost = want.keys().filter(|k| !got.contains_key(*k)).count();
    let dead_want = dead_letters(&reference.join("dead"));
    let dead_got = dead_letters(&run.join("dead"));
    let windows_want = rows(&read_dir(&reference.join("windows")), "window_start");
    let windows_got = rows(&read_dir(&run.join("windows")), "window_start");
    assert!(!dead_want.is_empty());
    assert_eq!(duplicates, 0);
    assert_eq!(lost, 0);
    assert!(
        got == want,
        "the scored rows differ from the uninterrupted run's"
    );
    if dead_got != dead_want {
        let missing: Vec<_> = dead_want
            .keys()
            .filter(|k| !dead_got.contains_key(*k))
            .take(3)
            .collect();
        let extra: Vec<_> = dead_got
            .keys()
            .filter(|k| !dead_want.contains_key(*k))
            .take(3)
            .collect();
        panic!("the dead letters differ: missing {missing:?}, extra {extra:?}");
    }
    assert!(!windows_want.is_empty());
    assert!(windows_got == windows_want, "the windows differ");
    // The audit log: each decision once, with what the uninterrupted run
    // recorded.
    let audit_want = audit_records(&reference.join("audit"));
    let audit_got = audit_records(&run.join("audit"));
    let audited: usize = audit_want.values().sum();
    assert_eq!(audited, total, "one record per scored row");
    let audit_duplicates: usize = audit_got.values().filter(|n| **n > 1).map(|n| n - 1).sum();
    assert_eq!(audit_duplicates, 0, "audit records written twice");
    assert!(
        audit_got == audit_want,
        "the audit records differ from the uninterrupted run's"
    );
    Compared {
        rows: total,
        audited,
        dead_letters: dead_want.values().sum(),
        windows: windows_want.values().sum(),
        duplicates,
        lost,
    }
}

/// A tmpfs mounted for a test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "256k") at `at`; `None` where the
    /// machine does not allow it (not root, no CAP_SYS_ADMIN).
    fn mount(at: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(at.to_path_buf()))
    }

    fn resize(&self, size: &str) {
        let status = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_filesystem_stops_the_pipeline_and_a_restart_with_space_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("full");
    let Some(tmpfs) = Tmpfs::mount(&full, "192k") else {
        assert!(
            std::env::var_os("ROO_REQUIRE_TMPFS").is_none(),
            "ROO_REQUIRE_TMPFS is set but a tmpfs cannot be mounted here"
        );
        eprintln!("SKIPPED: cannot mount a tmpfs here (not root?); set ROO_REQUIRE_TMPFS=1 to fail instead");
        return;
    };
    let data = dir.path().join("txns.csv");
    std::fs::write(&data, transactions_csv(120_000, 0x1234_5678_9abc_def1)).unwrap();
    let reference = dir.path().join("reference");
    let cfg = config(dir.path(), &data, &reference, None);
    let (code, lines) = Daemon::start(&cfg, Stdio::null()).finish();
    assert_eq!(code, Some(0), "{}", lines.join("\n"));

    // The sinks write to a 192 KiB filesystem: it fills, and the daemon
    // stops with the reason (the state directory is elsewhere).
    let state = dir.path().join("state");
    let cfg = config(dir.path(), &data, &full, Some(&state));
    let (code, lines) = Daemon::start(&cfg, Stdio::null()).finish();
    let all = lines.join("\n");
    assert_eq!(code, Some(1), "{all}");
    assert!(
        all.contains("No space left on device") && all.contains(full.to_str().unwrap()),
        "{all}"
    );
    // Only what checkpoints published is visible (partial files stay
    // hidden until a restart removes them), and every published file is
    // whole: it reads back without error.
    for sink in ["scored", "windows"] {
        for e in std::fs::read_dir(full.join(sink)).unwrap() {
            let path = e.unwrap().path();
            if path.file_name().unwrap().to_string_lossy().starts_with('.') {
                continue;
            }
            let schema = std::sync::Arc::new(arrow_schema::Schema::empty());
            roo_scheduler::sinks::layout::read_output_file(&path, &schema, &mut |_| true)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }

    // With space again, a restart resumes from the last checkpoint and
    // the output is the uninterrupted run's, every event once.
    tmpfs.resize("256m");
    let (code, lines) = Daemon::start(&cfg, Stdio::null()).finish();
    assert_eq!(code, Some(0), "{}", lines.join("\n"));
    let c = compare(&reference, &full);
    eprintln!(
        "full filesystem: stopped with the reason, resumed with space: {} rows, {} dead letters, {} windows; duplicates {}, lost {}",
        c.rows, c.dead_letters, c.windows, c.duplicates, c.lost
    );
}

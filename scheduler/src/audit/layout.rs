//! The audit directory's layout — the one owner of it: the writer, the
//! reader, retention and the appliance's commands all go through here.

use std::path::{Path, PathBuf};

use chrono::DateTime;

use super::record::{DEFINITIONS, DEVICE, EVENT_TIME, ID, INGEST_TIME};

pub(crate) const RECORDS: &str = "records";
pub(crate) const MODELS: &str = "models";
pub(crate) const DEFINITIONS_DIR: &str = "definitions";
const SEGMENT_EXTENSION: &str = "arrow";
const INDEX_EXTENSION: &str = "idx";

/// The record's own columns, after the batch's.
pub const AUDIT_COLUMNS: [&str; 5] = [ID, EVENT_TIME, INGEST_TIME, DEVICE, DEFINITIONS];

const US_PER_HOUR: i64 = 3_600_000_000;

/// The hour (since the epoch) an event time falls in.
pub(crate) fn hour_of(us: i64) -> i64 {
    us.div_euclid(US_PER_HOUR)
}

/// The first µs of an hour.
pub(crate) fn hour_start_us(hour: i64) -> i64 {
    hour.saturating_mul(US_PER_HOUR)
}

/// `hour=2026-11-03T14` (Hive-style: pyarrow and pandas read the records
/// directory as one dataset with `hour` as a column).
pub fn partition_name(hour: i64) -> String {
    match DateTime::from_timestamp(hour.saturating_mul(3600), 0) {
        Some(t) => format!("hour={}", t.format("%Y-%m-%dT%H")),
        None => format!("hour=h{hour}"),
    }
}

/// The hour a partition directory's name stands for.
fn parse_partition(name: &str) -> Option<i64> {
    let text = name.strip_prefix("hour=")?;
    if let Some(h) = text.strip_prefix('h') {
        return h.parse().ok();
    }
    let t = chrono::NaiveDateTime::parse_from_str(&format!("{text}:00:00"), "%Y-%m-%dT%H:%M:%S")
        .ok()?;
    Some(hour_of(t.and_utc().timestamp_micros()))
}

pub(crate) fn records_dir(dir: &Path) -> PathBuf {
    dir.join(RECORDS)
}

pub(crate) fn partition_dir(dir: &Path, hour: i64) -> PathBuf {
    records_dir(dir).join(partition_name(hour))
}

/// `seg-<opened µs, 16 digits>-<n, 4 digits>.arrow`: names sort in the
/// order segments were opened, and never repeat across restarts.
pub(crate) fn segment_name(opened_us: i64, n: u64) -> String {
    format!("seg-{opened_us:016}-{n:04}.{SEGMENT_EXTENSION}")
}

/// A segment's index: `_NAME.idx` beside it (the leading `_` keeps
/// dataset readers from taking it for data).
pub(crate) fn index_path(segment: &Path) -> PathBuf {
    let stem = segment
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    segment.with_file_name(format!("_{stem}.{INDEX_EXTENSION}"))
}

/// Where the model store keeps a version (`sha256:HEX` → `models/HEX`).
pub(crate) fn model_path(dir: &Path, version: &str) -> PathBuf {
    let hex = version.strip_prefix("sha256:").unwrap_or(version);
    dir.join(MODELS).join(hex)
}

pub(crate) fn definitions_path(dir: &Path, hash: &str) -> PathBuf {
    dir.join(DEFINITIONS_DIR).join(format!("{hash}.txt"))
}

/// Every partition, oldest hour first.
pub(crate) fn partitions(dir: &Path) -> Vec<(i64, PathBuf)> {
    let mut found: Vec<(i64, PathBuf)> = std::fs::read_dir(records_dir(dir))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            Some((parse_partition(&name)?, e.path()))
        })
        .collect();
    found.sort();
    found
}

/// A partition's published segments, in the order they were opened
/// (partial files are hidden and never listed).
pub(crate) fn segments(partition: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(partition)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == SEGMENT_EXTENSION)
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("seg-"))
        })
        .collect();
    found.sort();
    found
}

/// Partial files left in the partitions by a process that stopped
/// without closing its segments.
pub(crate) fn partial_files(dir: &Path) -> Vec<PathBuf> {
    partitions(dir)
        .into_iter()
        .flat_map(|(_, p)| std::fs::read_dir(p).into_iter().flatten().flatten())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "partial"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_name_their_hour_and_parse_back() {
        for hour in [0, 1, 499_365, 499_365 + 24 * 400, -3] {
            let name = partition_name(hour);
            assert_eq!(parse_partition(&name), Some(hour), "{name}");
        }
        assert_eq!(partition_name(0), "hour=1970-01-01T00");
        assert_eq!(hour_of(-1), -1);
        assert_eq!(
            index_path(Path::new("/a/hour=x/seg-1-2.arrow")),
            Path::new("/a/hour=x/_seg-1-2.idx")
        );
    }
}

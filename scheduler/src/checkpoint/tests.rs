//! Recovery on disk: the newest whole manifest wins, a corrupt or torn one
//! falls back to the one before; its files are published, later files and
//! partial files removed; a changed source file is refused.

use std::path::Path;

use super::manifest::{self, Counts, Manifest, SinkEpoch};
use super::{recover, CheckpointError, CheckpointSpec, SourcePosition};
use crate::operators::OperatorKind;
use crate::sinks::layout;

fn manifest(epoch: u64, sink_dir: &Path, files: &[&str], next_index: u64) -> Manifest {
    Manifest {
        pipeline: "p".into(),
        epoch,
        written_unix_ms: 0,
        source: None,
        sinks: vec![SinkEpoch {
            dir: sink_dir.to_path_buf(),
            prefix: "part".into(),
            extension: "arrow".into(),
            files: files.iter().map(|f| f.to_string()).collect(),
            next_index,
        }],
        dead_letters: None,
        counts: Counts {
            events_in: epoch * 10,
            ..Counts::default()
        },
        streams: [("sender-1".to_string(), epoch * 7)].into(),
        operator_files: Vec::new(),
    }
}

fn touch(path: &Path) {
    std::fs::write(path, b"x").unwrap();
}

#[test]
fn the_newest_whole_manifest_is_completed_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let out = dir.path().join("out");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    let spec = CheckpointSpec {
        dir: state.clone(),
        every: std::time::Duration::from_secs(1),
    };
    let snapshots = vec![(OperatorKind::Feature, "f".to_string(), vec![1, 2, 3])];
    // Epoch 1 published part-0; epoch 2 recorded part-1 and part-2 and
    // crashed before publishing part-2; part-3 was sealed after it.
    manifest::write(
        &state,
        &manifest(1, &out, &["part-000000.arrow"], 1),
        &snapshots,
    )
    .unwrap();
    let two = manifest(2, &out, &["part-000001.arrow", "part-000002.arrow"], 3);
    manifest::write(&state, &two, &snapshots).unwrap();
    touch(&out.join("part-000000.arrow"));
    touch(&out.join("part-000001.arrow"));
    touch(&layout::partial_path(&out.join("part-000002.arrow")).unwrap());
    touch(&layout::partial_path(&out.join("part-000003.arrow")).unwrap());
    touch(&state.join(".checkpoint-0000000003.roo.partial"));
    let sinks = [(out.clone(), "part".to_string(), "arrow".to_string())];
    let got = recover("p", &spec, &sinks).unwrap().unwrap();
    assert_eq!(got.manifest, two);
    assert_eq!(got.snapshots, snapshots);
    let published: Vec<String> = layout::published(&out, "part", "arrow")
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        published,
        [
            "part-000000.arrow",
            "part-000001.arrow",
            "part-000002.arrow"
        ]
    );
    assert!(layout::partials(&out, "part", "arrow").is_empty());
    assert!(!state.join(".checkpoint-0000000003.roo.partial").exists());

    // Epoch 3 published part-3 and part-4, then its manifest rotted on
    // disk: recovery falls back to epoch 2 and removes what came after.
    manifest::write(
        &state,
        &manifest(3, &out, &["part-000003.arrow", "part-000004.arrow"], 5),
        &snapshots,
    )
    .unwrap();
    touch(&out.join("part-000003.arrow"));
    touch(&out.join("part-000004.arrow"));
    let newest = manifest::path_of(&state, 3);
    let mut bytes = std::fs::read(&newest).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&newest, &bytes).unwrap();
    let got = recover("p", &spec, &sinks).unwrap().unwrap();
    assert_eq!(got.manifest.epoch, 2);
    assert_eq!(layout::next_free_index(&out, "part", "arrow"), 3);

    // Torn (cut short): the same fallback.
    std::fs::write(&newest, &bytes[..bytes.len() / 3]).unwrap();
    assert_eq!(
        recover("p", &spec, &sinks).unwrap().unwrap().manifest.epoch,
        2
    );

    // Every manifest unreadable: refused, never a silent fresh start.
    for (_, path) in manifest::list(&state) {
        std::fs::write(&path, b"garbage").unwrap();
    }
    let err = recover("p", &spec, &sinks).err().unwrap();
    assert!(matches!(err, CheckpointError::NoneReadable { .. }), "{err}");
    // Another pipeline's checkpoint is refused too.
    manifest::write(&state, &manifest(9, &out, &[], 5), &snapshots).unwrap();
    assert!(recover("q", &spec, &sinks).is_err());
}

#[test]
fn a_file_position_is_checked_against_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.csv");
    let text: String = (0..2000).map(|i| format!("{i},{}\n", i * 7)).collect();
    std::fs::write(&path, &text).unwrap();
    let at = text.len() as u64 / 2;
    let position = SourcePosition::file(&path, at, true).unwrap();
    assert_eq!(position.check_file(&path).unwrap(), at);
    // Appended to: the size differs.
    std::fs::write(&path, format!("{text}1,2\n")).unwrap();
    let err = position.check_file(&path).unwrap_err().to_string();
    assert!(err.contains("bytes; it held"), "{err}");
    // Same size, a byte changed before the cut.
    let mut bytes = text.clone().into_bytes();
    bytes[at as usize - 10] = b'9';
    std::fs::write(&path, &bytes).unwrap();
    let err = position.check_file(&path).unwrap_err().to_string();
    assert!(err.contains("differ"), "{err}");
    // A change after the cut is not the consumed prefix: accepted.
    let mut bytes = text.into_bytes();
    let last = bytes.len() - 2;
    bytes[last] = b'8';
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(position.check_file(&path).unwrap(), at);
    // Another path.
    let err = position
        .check_file(&dir.path().join("other.csv"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("was taken reading"), "{err}");
}

/// The operators' files (the audit log's) a manifest records: published
/// at recovery when a crash came before; one removed since (retention) is
/// no error; a partial one no manifest recorded is left to its operator.
#[test]
fn recovery_publishes_the_operators_files_the_manifest_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let out = dir.path().join("out");
    let partition = dir.path().join("audit/records/hour=1");
    for d in [&state, &out, &partition] {
        std::fs::create_dir_all(d).unwrap();
    }
    let spec = CheckpointSpec {
        dir: state.clone(),
        every: std::time::Duration::from_secs(1),
    };
    let sealed = partition.join("seg-1.arrow");
    let index = partition.join("_seg-1.idx");
    let published = partition.join("seg-0.arrow");
    let later = partition.join("seg-2.arrow");
    touch(&layout::partial_path(&sealed).unwrap());
    touch(&layout::partial_path(&index).unwrap());
    touch(&layout::partial_path(&later).unwrap());
    let m = Manifest {
        // seg-0 was published and retention removed it since.
        operator_files: vec![index.clone(), sealed.clone(), published.clone()],
        ..manifest(1, &out, &[], 0)
    };
    manifest::write(&state, &m, &Vec::new()).unwrap();
    let got = recover("p", &spec, &[]).unwrap().unwrap();
    assert_eq!(got.manifest.operator_files, m.operator_files);
    assert!(sealed.exists() && index.exists());
    assert!(!layout::partial_path(&sealed).unwrap().exists());
    assert!(!published.exists());
    assert!(layout::partial_path(&later).unwrap().exists());
}

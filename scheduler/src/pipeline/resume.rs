//! A restart from a checkpoint ([`crate::checkpoint`]): the operators'
//! snapshots restored, the metrics carried on, the source put at its
//! recorded position.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use super::spec::{Resolved, SinkSpec};
use crate::checkpoint::{CheckpointError, Manifest, Snapshots, SourcePosition};
use crate::metrics::PipelineMetrics;
use crate::operators::Chain;

/// The file sinks' (dir, prefix, extension): what recovery tidies.
pub(super) fn sink_dirs(sinks: &[SinkSpec]) -> Vec<(PathBuf, String, String)> {
    sinks
        .iter()
        .filter_map(|s| match s {
            SinkSpec::Files {
                dir,
                prefix,
                format,
                ..
            } => Some((dir.clone(), prefix.clone(), format.extension().to_string())),
            SinkSpec::Kafka(_) | SinkSpec::Stdout => None,
        })
        .collect()
}

/// Restores the chain and the counts from `manifest`, and puts a file
/// source at its position (checked to be the same file). Returns a
/// generator's events to skip.
pub(super) fn resume(
    manifest: &Manifest,
    snapshots: &Snapshots,
    chain: &mut Chain,
    resolved: &mut Resolved,
    metrics: &PipelineMetrics,
) -> Result<Option<u64>, CheckpointError> {
    chain
        .restore(snapshots)
        .map_err(|(operator, source)| CheckpointError::Restore {
            epoch: manifest.epoch,
            operator,
            source,
        })?;
    let c = manifest.counts;
    for (counter, n) in [
        (&metrics.events_in, c.events_in),
        (&metrics.events_out, c.events_out),
        (&metrics.events_dead, c.events_dead),
        (&metrics.events_aggregated, c.events_aggregated),
        (&metrics.results_out, c.results_out),
    ] {
        counter.fetch_add(n, Ordering::Relaxed);
    }
    match (&manifest.source, resolved.file.as_mut()) {
        (Some(position), Some(file)) => {
            let offset = position.check_file(file.path())?;
            file.start_at(offset)
                .map_err(|e| CheckpointError::Source(e.to_string()))?;
            Ok(None)
        }
        (Some(SourcePosition::Generator { events, .. }), None) => Ok(Some(*events)),
        (Some(position), None) => Err(CheckpointError::Source(format!(
            "the checkpoint recorded the source {position:?}; this pipeline's source is not a file or generator"
        ))),
        (None, _) => Ok(None),
    }
}

/// Now, µs since the Unix epoch.
pub(super) fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as i64
}

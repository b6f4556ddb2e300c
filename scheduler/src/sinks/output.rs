//! A pipeline's output sinks as the sink stage drives them. Batches are
//! numbered 1, 2, … in the order the sink stage takes them; a sink reports
//! the highest number it holds durably.

use std::io::Write;

use arrow_array::RecordBatch;

use super::kafka::KafkaSink;
use super::rotating::{FlowAt, RotatingFiles};
use super::SinkError;
use crate::pipeline::SinkSpec;

pub(crate) enum OutputSink {
    Files(Box<RotatingFiles>),
    Kafka(Box<KafkaSink>),
    /// CSV on standard output (a header, then rows), flushed per batch.
    Stdout {
        writer: Option<Box<arrow_csv::Writer<std::io::Stdout>>>,
        written: u64,
    },
}

impl OutputSink {
    /// Opens a sink; with `epochs` its files are published by checkpoints,
    /// with `by_source` named by each source stream's offsets
    /// ([`RotatingFiles::open`]).
    pub fn open(spec: &SinkSpec, epochs: bool, by_source: bool) -> Result<Self, SinkError> {
        Ok(match spec {
            SinkSpec::Files {
                dir,
                prefix,
                format,
                parquet,
                rotate_bytes,
                rotate,
            } => OutputSink::Files(Box::new(RotatingFiles::open(
                dir.clone(),
                prefix.clone(),
                *format,
                *parquet,
                *rotate_bytes,
                *rotate,
                epochs,
                by_source,
            )?)),
            SinkSpec::Kafka(k) => OutputSink::Kafka(Box::new(KafkaSink::open(k)?)),
            SinkSpec::Stdout => OutputSink::Stdout {
                writer: None,
                written: 0,
            },
        })
    }

    pub fn write(&mut self, batch: &RecordBatch, at: &FlowAt) -> Result<(), SinkError> {
        let number = at.number;
        match self {
            OutputSink::Files(f) => f.write(batch, at),
            OutputSink::Kafka(k) => k.write(batch, number),
            OutputSink::Stdout { writer, written } => {
                let w = writer.get_or_insert_with(|| {
                    Box::new(
                        arrow_csv::WriterBuilder::new()
                            .with_header(true)
                            .build(std::io::stdout()),
                    )
                });
                w.write(batch)
                    .map_err(|e| SinkError::StdoutEncode(e.to_string()))?;
                std::io::stdout().flush().map_err(SinkError::Stdout)?;
                *written = number;
                Ok(())
            }
        }
    }

    /// A flow without rows (dead letters only, or nothing).
    pub fn pass(&mut self, at: &FlowAt) -> Result<(), SinkError> {
        match self {
            OutputSink::Files(f) => f.pass(at),
            OutputSink::Kafka(_) | OutputSink::Stdout { .. } => Ok(()),
        }
    }

    /// Whether flow `number`'s source offset may be committed once every
    /// sink holds it (asked in flow order): only files by source say no,
    /// between their files' ends.
    pub fn commit_point(&mut self, number: u64) -> bool {
        match self {
            OutputSink::Files(f) => f.commit_point(number),
            OutputSink::Kafka(_) | OutputSink::Stdout { .. } => true,
        }
    }

    /// Makes `source`'s rows durable now, where the sink would wait (a
    /// file by source closes).
    pub fn flush_source(&mut self, source: &std::sync::Arc<str>) -> Result<(), SinkError> {
        match self {
            OutputSink::Files(f) => f.flush_source(source),
            OutputSink::Kafka(_) | OutputSink::Stdout { .. } => Ok(()),
        }
    }

    pub fn tick(&mut self) -> Result<(), SinkError> {
        match self {
            OutputSink::Files(f) => f.tick(),
            OutputSink::Kafka(k) => k.tick(),
            OutputSink::Stdout { .. } => Ok(()),
        }
    }

    /// The highest batch number this sink holds durably.
    pub fn durable_through(&mut self) -> Result<u64, SinkError> {
        match self {
            OutputSink::Files(f) => f.durable_through(),
            OutputSink::Kafka(k) => k.durable_through(),
            OutputSink::Stdout { written, .. } => Ok(*written),
        }
    }

    pub fn close(&mut self) -> Result<(), SinkError> {
        match self {
            OutputSink::Files(f) => f.close_all(),
            OutputSink::Kafka(k) => k.close(),
            OutputSink::Stdout { .. } => Ok(()),
        }
    }
}

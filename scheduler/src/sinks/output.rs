//! A pipeline's output sinks as the sink stage drives them. Batches are
//! numbered 1, 2, … in the order the sink stage takes them; a sink reports
//! the highest number it holds durably.

use std::io::Write;

use arrow_array::RecordBatch;

use super::kafka::KafkaSink;
use super::rotating::RotatingFiles;
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
    /// Opens a sink; with `epochs` its files are published by checkpoints
    /// ([`RotatingFiles::open`]).
    pub fn open(spec: &SinkSpec, epochs: bool) -> Result<Self, SinkError> {
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
            )?)),
            SinkSpec::Kafka(k) => OutputSink::Kafka(Box::new(KafkaSink::open(k)?)),
            SinkSpec::Stdout => OutputSink::Stdout {
                writer: None,
                written: 0,
            },
        })
    }

    pub fn write(&mut self, batch: &RecordBatch, number: u64) -> Result<(), SinkError> {
        match self {
            OutputSink::Files(f) => f.write(batch, number),
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
            OutputSink::Files(f) => f.close(),
            OutputSink::Kafka(k) => k.close(),
            OutputSink::Stdout { .. } => Ok(()),
        }
    }
}

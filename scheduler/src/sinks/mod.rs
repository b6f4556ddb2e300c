//! Where a pipeline's rows go: rotating output files, a Kafka topic,
//! standard output, dead letters; and the output layout they share with readers ([`layout`]).
//!
//! Every sink reports the highest batch number it holds durably; the
//! pipeline acknowledges source offsets up to the lowest over its sinks.

mod dead_letters;
pub(crate) mod drop_behind;
mod files;
pub mod kafka;
pub mod layout;
mod output;
pub(crate) mod rotating;

pub use dead_letters::{DeadLetterFiles, DeadLetterSink};
pub use files::{FileSink, ParquetCompression, ParquetSettings, ParquetStatistics, Sealed};
pub use kafka::{KafkaFormat, KafkaSinkSpec};
pub(crate) use output::OutputSink;

use thiserror::Error;

/// Why a sink could not write, close or publish.
#[derive(Debug, Error)]
pub enum SinkError {
    #[error("writing {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path}: {message}")]
    Encode { path: String, message: String },
    #[error("a file sink writes parquet, arrow or csv, not {format}")]
    Format { format: String },
    #[error("writing standard output")]
    Stdout(#[source] std::io::Error),
    #[error("writing standard output: {0}")]
    StdoutEncode(String),
    #[error("kafka {brokers}, topic {topic}: {message}")]
    Kafka {
        brokers: String,
        topic: String,
        message: String,
    },
    #[error("the file closer thread of {dir} stopped")]
    CloserGone { dir: String },
}

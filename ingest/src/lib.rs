//! roo-ingest: turns event sources into Arrow micro-batches.
//!
//! Sources: files (CSV, NDJSON and raw f32 rows read through io_uring with
//! registered buffers, or plain reads where io_uring is refused; Arrow IPC
//! mapped zero-copy; Parquet) and TCP (io_uring multishot accept and recv
//! on a provided buffer ring; CSV, NDJSON, raw f32 and Arrow IPC stream
//! framings) and Kafka (a consumer group; a message holds whole records or
//! one Arrow IPC stream). Parsers write straight from the receive buffer into Arrow
//! builders; the micro-batcher ([`Framer`]) closes batches at `max_rows` or
//! `linger`; bad records become [`DeadLetter`]s and the rows around them
//! are kept.
//!
//! This crate knows nothing of models: a caller that needs some columns
//! parsed as numbers names them ([`FileSource::parse_as_f32`]).

mod acks;
mod error;
mod file;
mod framer;
pub mod guard;
mod handover;
mod ipc;
#[cfg(feature = "kafka")]
mod kafka;
mod parallel;
pub mod parse;
mod read;
mod record;
mod tcp;

pub use acks::{
    check_name, AckTarget, ResumingSender, SendError, StreamAcks, StreamError, STREAMS_MAX,
};
pub use error::IngestError;
pub use file::{FileBatches, FileFormat, FileSource, StartAt};
pub use framer::{
    BatchLimits, BatchSink, Framer, StreamFormat, BATCH_ROWS_DEFAULT, IPC_MESSAGE_BYTES_MAX,
    RECORD_BYTES_MAX_DEFAULT,
};
pub use handover::{Cut as PartitionCut, Handover};
#[cfg(feature = "kafka")]
pub use kafka::{
    log_client as kafka_log_client, parse_source_name as parse_kafka_source,
    source_name as kafka_source_name, KafkaError, KafkaFigures, KafkaSource, KafkaSourceConfig,
    PartitionFigures, StartFrom, METADATA_WAIT, PREFETCH_KIB_DEFAULT, RETRY_BACKOFF_MAX,
    REVOKE_DRAIN_MAX, STOP_DRAIN_MAX,
};
pub use parallel::{
    ParallelFramer, ParsePool, StreamFramer, FIRST_PIECE_BYTES, PIECES_IN_FLIGHT_PER_THREAD,
    PIECE_BYTES_MAX, PIECE_BYTES_MIN,
};
pub use parse::csv::CsvHeader;
pub use read::{io_uring_probe, read_file, IoUringMode, ReadOptions, ReadPath};
pub use record::{DeadLetter, IngestBatch, DEAD_LETTER_RAW_BYTES_MAX};
pub use tcp::{TcpReport, TcpSource, TcpSourceConfig};

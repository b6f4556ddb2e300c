//! roo-ingest: turns event sources into Arrow record batches.
//!
//! Today: files (CSV with a header, Parquet, Arrow IPC file and stream) read
//! into batches of a bounded number of rows. The io_uring file and socket
//! sources, the one-pass parsers and the micro-batcher arrive here next.
//!
//! This crate knows nothing of models: a caller that needs some columns
//! parsed as numbers names them ([`FileSource::parse_as_f32`]).

mod error;
mod file;

pub use error::IngestError;
pub use file::{FileFormat, FileSource, BATCH_ROWS_DEFAULT};

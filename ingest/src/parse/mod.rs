//! One-pass parsers from received bytes into Arrow column builders.
//!
//! Each parser reads whole records from the front of a byte slice straight
//! into [`columns::Columns`] (no per-row allocation), reports how many bytes
//! it consumed, and stops at the first incomplete record so the caller
//! ([`crate::framer::Framer`]) can carry the fragment to the next buffer.
//! Bad records become dead letters; the rows around them are kept.

pub(crate) mod columns;
pub(crate) mod csv;
pub(crate) mod ndjson;
pub mod number;
pub(crate) mod raw;

use std::sync::Arc;

use arrow_array::RecordBatch;

use arrow_schema::SchemaRef;

use crate::framer::{BatchLimits, StreamFormat, BATCH_ROWS_DEFAULT};
use crate::record::{DeadLetter, DEAD_LETTER_RAW_BYTES_MAX};
use columns::check_schema;
use csv::CsvParser;
use ndjson::NdjsonParser;
use raw::RawF32Parser;

/// How far a parse call got.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Parsed {
    /// Bytes consumed from the front of the slice: whole records only.
    pub consumed: usize,
    /// Records taken (rows and dead letters).
    pub records: usize,
    /// The stream cannot be read further (a header that names other
    /// columns, a corrupt IPC message); the reason is in the dead letters.
    pub fatal: bool,
}

/// Dead letters found while parsing, with the source they belong to.
pub(crate) struct DeadLetters {
    pub source: Arc<str>,
    pub letters: Vec<DeadLetter>,
}

impl DeadLetters {
    pub fn new(source: Arc<str>) -> Self {
        Self {
            source,
            letters: Vec::new(),
        }
    }

    pub fn push(&mut self, offset: u64, line: Option<u64>, raw: &[u8], reason: String) {
        let kept = raw.len().min(DEAD_LETTER_RAW_BYTES_MAX);
        self.letters.push(DeadLetter {
            source: self.source.clone(),
            offset,
            line,
            raw: raw[..kept].to_vec(),
            raw_len: raw.len() as u64,
            reason,
            records: 1,
        });
    }
}

/// A parser of one record format.
pub(crate) trait RecordParser: Send {
    /// Parses whole records from the front of `data` (whose first byte is at
    /// stream offset `offset`), taking at most `records_max` records. Stops
    /// early at an incomplete record unless `at_end`, when the end of `data`
    /// ends the last record.
    fn parse(
        &mut self,
        data: &[u8],
        offset: u64,
        records_max: usize,
        at_end: bool,
        dead: &mut DeadLetters,
    ) -> Parsed;

    /// The rows built so far as a batch; the parser starts a fresh one.
    fn take_batch(&mut self) -> RecordBatch;

    /// Line number (1-based) of the next record, for line-based formats.
    fn line(&self) -> Option<u64> {
        None
    }

    /// Sets the line number of the next record (a parser starting mid-stream,
    /// or one told of lines skipped around it).
    fn set_line(&mut self, _line: u64) {}

    /// The next bytes are records (no header is still to be read).
    fn at_rows(&self) -> bool {
        true
    }
}

/// The parser of a record format (not Arrow IPC) and, for fixed-size rows,
/// their length in bytes. Workers parsing one stream in pieces
/// ([`crate::parallel`]) build theirs here too, so every piece is parsed by
/// the same code as the whole stream.
pub(crate) fn record_parser(
    format: &StreamFormat,
    schema: SchemaRef,
    limits: &BatchLimits,
) -> Result<(Box<dyn RecordParser>, Option<usize>), String> {
    let capacity = limits.max_rows.min(BATCH_ROWS_DEFAULT);
    match format {
        StreamFormat::ArrowIpc => Err("Arrow IPC streams are not parsed record by record".into()),
        StreamFormat::Csv { header, delimiter } => {
            check_schema(&schema)?;
            if schema.fields().is_empty() {
                return Err("the schema has no columns".into());
            }
            if matches!(delimiter, b'"' | b'\n' | b'\r') {
                return Err(format!(
                    "delimiter {:?}: expected a character other than a quote or line end",
                    *delimiter as char
                ));
            }
            Ok((
                Box::new(CsvParser::new(
                    schema,
                    header.clone(),
                    *delimiter,
                    capacity,
                    limits.record_bytes_max,
                )),
                None,
            ))
        }
        StreamFormat::Ndjson => {
            check_schema(&schema)?;
            Ok((
                Box::new(NdjsonParser::new(schema, capacity, limits.record_bytes_max)),
                None,
            ))
        }
        StreamFormat::RawF32 => {
            if schema.fields().is_empty()
                || schema
                    .fields()
                    .iter()
                    .any(|f| f.data_type() != &arrow_schema::DataType::Float32)
            {
                return Err("raw f32 rows need a schema of one or more Float32 columns".into());
            }
            let parser = RawF32Parser::new(schema, capacity);
            let row_bytes = parser.row_bytes();
            Ok((Box::new(parser), Some(row_bytes)))
        }
    }
}

/// Shows a field in a reason: quoted, cut to a readable length.
pub(crate) fn show(field: &[u8]) -> String {
    const SHOWN_MAX: usize = 64;
    let text = String::from_utf8_lossy(&field[..field.len().min(SHOWN_MAX)]);
    if field.len() > SHOWN_MAX {
        format!("{text:?}…")
    } else {
        format!("{text:?}")
    }
}

/// Test helpers shared by the parsers' tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use arrow_array::RecordBatch;
    use arrow_schema::{DataType, Field, Schema, SchemaRef};

    use super::{DeadLetters, RecordParser};

    /// Numbers in every shape the fast paths see and refuse: shortest f32
    /// texts, fixed precisions, long mantissas, exponents, signs, points at
    /// either end, midpoints, empty fields and garbage.
    pub fn awkward_number(state: &mut u64) -> String {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        let r = *state;
        let v = f32::from_bits((r >> 32) as u32);
        let small = (r >> 20) as f32 / 4096.0 - 500.0;
        match r % 16 {
            0 => format!("{v}"),
            1 => format!("{v:e}"),
            2 => format!("{:.*}", (r >> 8) as usize % 12, small),
            3 => format!("-{}", (r >> 10) % 1_000_000_000_000_000_000),
            4 => format!(".{}", (r >> 10) % 10_000),
            5 => format!("{}.", (r >> 10) % 10_000),
            6 => "16777217".to_string(),
            7 => String::new(),
            8 => "1-2".to_string(),
            9 => format!("+{small}"),
            10 => format!("{}", (r >> 3) as f64 / 1e9),
            _ => format!("{small}"),
        }
    }

    /// `columns` nullable Float32 columns named x0, x1, ….
    pub fn floats(columns: usize) -> SchemaRef {
        Arc::new(Schema::new(
            (0..columns)
                .map(|i| Field::new(format!("x{i}"), DataType::Float32, true))
                .collect::<Vec<_>>(),
        ))
    }

    /// Every record of `text` through `parser`, 100 at a time: the batches
    /// and the dead letters (offset, reason).
    pub fn parse_all(
        parser: &mut dyn RecordParser,
        text: &[u8],
    ) -> (Vec<RecordBatch>, Vec<(u64, String)>) {
        let mut dead = DeadLetters::new(Arc::from("t"));
        let mut batches = Vec::new();
        let mut at = 0;
        while at < text.len() {
            let parsed = parser.parse(&text[at..], at as u64, 100, true, &mut dead);
            at += parsed.consumed;
            batches.push(parser.take_batch());
        }
        let letters = dead
            .letters
            .into_iter()
            .map(|d| (d.offset, d.reason))
            .collect();
        (batches, letters)
    }

    /// Two parses of one text (a fast path on and off) gave the same rows,
    /// bit for bit, and the same dead letters; the text had both.
    pub fn assert_same(
        fast: (Vec<RecordBatch>, Vec<(u64, String)>),
        portable: (Vec<RecordBatch>, Vec<(u64, String)>),
    ) {
        assert!(fast.0.iter().map(|b| b.num_rows()).sum::<usize>() > 2_000);
        assert!(!fast.1.is_empty());
        assert_eq!(fast.0, portable.0);
        assert_eq!(fast.1, portable.1);
    }
}

//! The micro-batcher: cuts a byte stream into records, parses them into
//! batches, and closes a batch at `max_rows` records or when its oldest
//! event has waited `linger`, whichever comes first.
//!
//! Bytes arrive in whatever pieces the reader got (a file buffer, one TCP
//! receive). Whole records are parsed straight from the piece; the fragment
//! of a record cut by the piece's end is carried — only that fragment is
//! copied — and completed from the next piece. A record longer than
//! `record_bytes_max` becomes a dead letter and the stream resumes at the
//! next line.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arrow_array::RecordBatch;
use arrow_ipc::reader::StreamDecoder;
use arrow_schema::SchemaRef;

use crate::parallel::ParsedPiece;
use crate::parse::csv::CsvHeader;
use crate::parse::{record_parser, DeadLetters, RecordParser};
use crate::record::IngestBatch;
use crate::IngestError;

/// How a byte stream is cut into records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamFormat {
    /// Newline-delimited CSV.
    Csv { header: CsvHeader, delimiter: u8 },
    /// One JSON object per line.
    Ndjson,
    /// Rows of little-endian f32, one value per schema column.
    RawF32,
    /// The Arrow IPC stream format (schema message, then batches).
    ArrowIpc,
}

impl StreamFormat {
    /// CSV with a header line that must name the schema's columns.
    pub fn csv() -> Self {
        Self::Csv {
            header: CsvHeader::Check,
            delimiter: b',',
        }
    }
}

/// Batch bounds shared by every source.
#[derive(Clone, Copy, Debug)]
pub struct BatchLimits {
    /// Records (rows and dead letters) that close a batch.
    pub max_rows: usize,
    /// The longest the oldest event of an open batch waits.
    pub linger: Duration,
    /// The longest record accepted, in bytes.
    pub record_bytes_max: usize,
}

/// Rows per batch when the caller does not say.
pub const BATCH_ROWS_DEFAULT: usize = 65_536;
/// Record length bound when the caller does not say.
pub const RECORD_BYTES_MAX_DEFAULT: usize = 1 << 20;
/// The longest Arrow IPC message a stream may send (counted as the bytes fed
/// to the decoder between two record batches): a client cannot make a
/// connection hold more while a message is assembled.
pub const IPC_MESSAGE_BYTES_MAX: usize = 64 << 20;

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            max_rows: BATCH_ROWS_DEFAULT,
            linger: Duration::from_millis(5),
            record_bytes_max: RECORD_BYTES_MAX_DEFAULT,
        }
    }
}

/// Where batches go. Returning `false` asks the source to stop reading.
pub trait BatchSink {
    fn batch(&mut self, batch: IngestBatch) -> bool;
}

impl<F: FnMut(IngestBatch) -> bool> BatchSink for F {
    fn batch(&mut self, batch: IngestBatch) -> bool {
        self(batch)
    }
}

enum Body {
    Records {
        parser: Box<dyn RecordParser>,
        /// Bytes to append to a carried fragment before parsing it again.
        row_bytes: Option<usize>,
    },
    Ipc {
        decoder: StreamDecoder,
        expected: Option<SchemaRef>,
        pending: Vec<RecordBatch>,
        /// Bytes fed to the decoder since it last returned a batch: the
        /// size of the message being assembled, bounded.
        message_bytes: usize,
    },
}

/// One stream's micro-batcher (a file, a TCP connection).
pub struct Framer {
    source: Arc<str>,
    body: Body,
    limits: BatchLimits,
    dead: DeadLetters,
    carry: Vec<u8>,
    /// Stream offset of the first byte not yet parsed (`carry[0]` if any).
    parsed_to: u64,
    batch_start: u64,
    records: usize,
    opened: Option<(Instant, SystemTime)>,
    seq: u64,
    skipping_to_line_end: bool,
    /// Bytes of an oversized record were skipped after its dead letter was
    /// handed on: the next batch must be emitted, rows or not, to
    /// acknowledge them.
    skipped_since_emit: bool,
    failed: bool,
    stopped: bool,
}

impl Framer {
    /// A framer for `format`. Text and raw formats need `schema` (all
    /// Float32 for raw); Arrow IPC checks incoming batches against it when
    /// given.
    pub fn new(
        source: Arc<str>,
        format: &StreamFormat,
        schema: Option<SchemaRef>,
        limits: BatchLimits,
    ) -> Result<Self, IngestError> {
        assert!(limits.max_rows > 0, "max_rows must be positive");
        let format_error = |message: String| IngestError::Format {
            path: source.to_string(),
            message,
        };
        let need_schema = || {
            schema.clone().ok_or_else(|| {
                format_error(format!("{format:?} needs a schema naming the columns"))
            })
        };
        let body = match format {
            StreamFormat::ArrowIpc => Body::Ipc {
                decoder: StreamDecoder::new(),
                expected: schema.clone(),
                pending: Vec::new(),
                message_bytes: 0,
            },
            _ => {
                let schema = need_schema()?;
                let (parser, row_bytes) =
                    record_parser(format, schema, &limits).map_err(format_error)?;
                Body::Records { parser, row_bytes }
            }
        };
        let mut limits = limits;
        if let Body::Records {
            row_bytes: Some(r), ..
        } = &body
        {
            limits.record_bytes_max = limits.record_bytes_max.max(*r);
        }
        Ok(Self {
            dead: DeadLetters::new(source.clone()),
            source,
            body,
            limits,
            carry: Vec::new(),
            parsed_to: 0,
            batch_start: 0,
            records: 0,
            opened: None,
            seq: 0,
            skipping_to_line_end: false,
            skipped_since_emit: false,
            failed: false,
            stopped: false,
        })
    }

    /// Starts the stream at `offset` on `line` (lines counted by line
    /// ends from the stream's start, the first being 1): a stream resumed
    /// where a checkpoint left it, so offsets and dead letters' lines are
    /// those of the whole stream. Call before the first piece.
    pub fn start_at(&mut self, offset: u64, line: u64) {
        assert!(
            self.parsed_to == 0 && self.carry.is_empty() && self.records == 0,
            "start_at before the first piece"
        );
        self.parsed_to = offset;
        self.batch_start = offset;
        if let Body::Records { parser, .. } = &mut self.body {
            parser.set_line(line);
        }
    }

    /// The stream cannot be read further (the reason is a dead letter).
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// The sink asked to stop.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    pub fn source(&self) -> &Arc<str> {
        &self.source
    }

    /// Feeds the next piece of the stream.
    pub fn push(&mut self, data: &[u8], sink: &mut dyn BatchSink) {
        if self.failed || self.stopped {
            self.parsed_to += data.len() as u64;
            return;
        }
        if self.opened.is_none() && !data.is_empty() {
            self.opened = Some((Instant::now(), SystemTime::now()));
        }
        if matches!(self.body, Body::Ipc { .. }) {
            self.push_ipc(data, sink);
            return;
        }
        let mut rest = data;
        if self.skipping_to_line_end {
            rest = self.skip_line(rest);
        }
        while !self.carry.is_empty() && !rest.is_empty() {
            let take = match &self.body {
                Body::Records {
                    row_bytes: Some(r), ..
                } => (r - self.carry.len() % r).min(rest.len()),
                _ => memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1),
            };
            self.carry.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            self.parse_carry(false, sink);
            if self.failed || self.stopped {
                self.parsed_to += rest.len() as u64;
                return;
            }
            if self.carry.len() > self.limits.record_bytes_max {
                self.refuse_oversized_carry();
                rest = self.skip_line(rest);
                self.close_if_full(sink);
            }
        }
        while !rest.is_empty() {
            let Body::Records { parser, .. } = &mut self.body else {
                unreachable!()
            };
            let room = self.limits.max_rows - self.records;
            let parsed = parser.parse(rest, self.parsed_to, room, false, &mut self.dead);
            self.records += parsed.records;
            self.parsed_to += parsed.consumed as u64;
            rest = &rest[parsed.consumed..];
            if parsed.fatal {
                self.fail(sink);
                self.parsed_to += rest.len() as u64;
                return;
            }
            if self.records >= self.limits.max_rows {
                self.emit(sink);
                if self.stopped {
                    self.parsed_to += rest.len() as u64;
                    return;
                }
                continue;
            }
            break;
        }
        self.carry.extend_from_slice(rest);
        if self.carry.len() > self.limits.record_bytes_max {
            self.refuse_oversized_carry();
            self.close_if_full(sink);
        }
        self.mark_open();
    }

    /// A batch emitted partway through a piece leaves the piece's later
    /// records in a fresh batch: they arrived now, and `linger` counts from
    /// now (without this they would wait for the next piece, or forever on
    /// a connection that went quiet).
    fn mark_open(&mut self) {
        if self.records > 0 && self.opened.is_none() {
            self.opened = Some((Instant::now(), SystemTime::now()));
        }
    }

    /// The carried fragment outgrew `record_bytes_max`: it becomes a dead
    /// letter and the stream resumes after the next line end.
    fn refuse_oversized_carry(&mut self) {
        let reason = crate::parse::csv::oversized(self.limits.record_bytes_max);
        let line = self.line();
        self.dead.push(self.parsed_to, line, &self.carry, reason);
        self.records += 1;
        self.parsed_to += self.carry.len() as u64;
        // Lines inside the refused fragment still count.
        let lines = memchr::memchr_iter(b'\n', &self.carry).count() as u64;
        self.advance_lines(lines);
        self.carry.clear();
        self.skipping_to_line_end = true;
    }

    fn advance_lines(&mut self, lines: u64) {
        if let Body::Records { parser, .. } = &mut self.body {
            if let Some(line) = parser.line() {
                parser.set_line(line + lines);
            }
        }
    }

    fn line(&self) -> Option<u64> {
        match &self.body {
            Body::Records { parser, .. } => parser.line(),
            Body::Ipc { .. } => None,
        }
    }

    fn skip_line<'d>(&mut self, data: &'d [u8]) -> &'d [u8] {
        self.skipped_since_emit |= !data.is_empty();
        match memchr::memchr(b'\n', data) {
            Some(i) => {
                self.skipping_to_line_end = false;
                self.parsed_to += i as u64 + 1;
                self.advance_lines(1);
                &data[i + 1..]
            }
            None => {
                self.parsed_to += data.len() as u64;
                &[]
            }
        }
    }

    fn parse_carry(&mut self, at_end: bool, sink: &mut dyn BatchSink) {
        loop {
            let Body::Records { parser, .. } = &mut self.body else {
                unreachable!()
            };
            let room = self.limits.max_rows - self.records;
            let parsed = parser.parse(&self.carry, self.parsed_to, room, at_end, &mut self.dead);
            self.records += parsed.records;
            self.parsed_to += parsed.consumed as u64;
            self.carry.drain(..parsed.consumed);
            if parsed.fatal {
                self.fail(sink);
                return;
            }
            if self.records >= self.limits.max_rows {
                self.emit(sink);
                if !self.carry.is_empty() && !self.stopped {
                    continue;
                }
            }
            return;
        }
    }

    fn close_if_full(&mut self, sink: &mut dyn BatchSink) {
        if self.records >= self.limits.max_rows {
            self.emit(sink);
        }
    }

    fn fail(&mut self, sink: &mut dyn BatchSink) {
        self.failed = true;
        self.carry.clear();
        self.emit(sink);
    }

    /// Closes the open batch if its oldest event has waited `linger`;
    /// returns when the open batch will be due, if one is open.
    pub fn poll(&mut self, now: Instant, sink: &mut dyn BatchSink) -> Option<Instant> {
        let (opened, _) = self.opened?;
        let due = opened + self.limits.linger;
        if self.records == 0 {
            return None;
        }
        if now >= due {
            self.emit(sink);
            return None;
        }
        Some(due)
    }

    /// The stream ended. With `end_ends_record` (files) the last record
    /// needs no line end; otherwise (a connection that closed) a fragment
    /// left over is a dead letter. Emits the open batch.
    pub fn finish(&mut self, end_ends_record: bool, sink: &mut dyn BatchSink) {
        if self.failed || self.stopped {
            return;
        }
        match &mut self.body {
            Body::Records { .. } => {
                if !self.carry.is_empty() {
                    if end_ends_record {
                        self.parse_carry(true, sink);
                    }
                    if !self.carry.is_empty() {
                        let line = self.line();
                        let reason = format!(
                            "the stream ended inside a record ({} bytes, no line end)",
                            self.carry.len()
                        );
                        self.dead.push(self.parsed_to, line, &self.carry, reason);
                        self.records += 1;
                        self.parsed_to += self.carry.len() as u64;
                        self.carry.clear();
                    }
                }
            }
            Body::Ipc { decoder, .. } => {
                if let Err(e) = decoder.finish() {
                    let reason = format!("the stream ended inside an Arrow IPC message: {e}");
                    self.dead.push(self.parsed_to, None, &[], reason);
                    self.records += 1;
                }
            }
        }
        // The last batch covers the stream to its end: bytes read after
        // the last batch closed (blank lines) are acknowledged too, by an
        // empty batch if nothing else is left.
        if self.parsed_to > self.batch_start {
            self.skipped_since_emit = true;
        }
        self.emit(sink);
    }

    /// Takes in a piece of the stream that a worker parsed on its own
    /// ([`crate::parallel`]), as if this framer had parsed it. The worker's
    /// rows stand when this framer is at a record boundary exactly where the
    /// piece starts (nothing carried, no header still to read): the worker
    /// then read the same bytes from the same state, so it made the same
    /// decisions. Otherwise the piece's bytes are parsed here, serially.
    /// Dead letters' line numbers are moved by the difference between the
    /// line the worker assumed and the line this framer has reached.
    /// Returns whether the worker's rows stood, and the piece's buffer (for
    /// the next piece: no fresh memory per piece).
    pub(crate) fn splice(
        &mut self,
        piece: ParsedPiece,
        sink: &mut dyn BatchSink,
    ) -> (bool, Vec<u8>) {
        let ParsedPiece {
            offset,
            line,
            line_end,
            bytes,
            consumed,
            parts,
            ingest_time,
        } = piece;
        if self.failed || self.stopped {
            self.parsed_to += bytes.len() as u64;
            return (false, bytes);
        }
        let aligned = self.carry.is_empty()
            && !self.skipping_to_line_end
            && self.parsed_to == offset
            && matches!(&self.body, Body::Records { parser, row_bytes: None } if parser.at_rows());
        if !aligned {
            self.push(&bytes, sink);
            return (false, bytes);
        }
        if self.records > 0 {
            self.emit(sink);
            if self.stopped {
                self.parsed_to += bytes.len() as u64;
                return (false, bytes);
            }
        }
        let here = self.line().unwrap_or(line);
        let delta = here as i64 - line as i64;
        let shift = |line: u64| line.saturating_add_signed(delta);
        for part in parts {
            let mut dead_letters = part.dead_letters;
            for d in &mut dead_letters {
                d.line = d.line.map(shift);
            }
            let out = IngestBatch {
                source: self.source.clone(),
                seq: self.seq,
                offsets: self.batch_start..part.end,
                ingest_time,
                batch: part.batch,
                dead_letters,
            };
            self.seq += 1;
            self.batch_start = part.end;
            self.parsed_to = part.end;
            self.skipped_since_emit = false;
            if !sink.batch(out) {
                self.stopped = true;
                return (true, bytes);
            }
        }
        self.parsed_to = offset + consumed as u64;
        if let Body::Records { parser, .. } = &mut self.body {
            parser.set_line(shift(line_end));
        }
        self.opened = None;
        if consumed < bytes.len() {
            self.opened = Some((Instant::now(), ingest_time));
            self.push(&bytes[consumed..], sink);
        }
        (true, bytes)
    }

    /// Hands on the open batch now (a source stopping); a fragment carried
    /// is kept, not acknowledged: the batch's offsets end before it.
    pub fn flush(&mut self, sink: &mut dyn BatchSink) {
        if !self.failed && !self.stopped {
            self.emit(sink);
        }
    }

    fn emit(&mut self, sink: &mut dyn BatchSink) {
        let batch = match &mut self.body {
            Body::Records { parser, .. } => parser.take_batch(),
            Body::Ipc {
                pending,
                decoder,
                expected,
                ..
            } => {
                let schema = expected
                    .clone()
                    .or_else(|| decoder.schema())
                    .or_else(|| pending.first().map(|b| b.schema()));
                let parts = std::mem::take(pending);
                match schema {
                    Some(_) if parts.len() == 1 => parts.into_iter().next().expect("one part"),
                    Some(schema) => arrow_select::concat::concat_batches(&schema, &parts)
                        .expect("pending batches were checked against one schema"),
                    None => RecordBatch::new_empty(Arc::new(arrow_schema::Schema::empty())),
                }
            }
        };
        if batch.num_rows() == 0 && self.dead.letters.is_empty() && !self.skipped_since_emit {
            self.records = 0;
            self.opened = None;
            return;
        }
        let (_, ingest_time) = self.opened.unwrap_or((Instant::now(), SystemTime::now()));
        let out = IngestBatch {
            source: self.source.clone(),
            seq: self.seq,
            offsets: self.batch_start..self.parsed_to,
            ingest_time,
            batch,
            dead_letters: std::mem::take(&mut self.dead.letters),
        };
        self.seq += 1;
        self.batch_start = self.parsed_to;
        self.skipped_since_emit = false;
        self.records = 0;
        self.opened = if self.carry.is_empty() {
            None
        } else {
            Some((Instant::now(), SystemTime::now()))
        };
        if !sink.batch(out) {
            self.stopped = true;
        }
    }

    fn push_ipc(&mut self, data: &[u8], sink: &mut dyn BatchSink) {
        let mut buffer = arrow_buffer::Buffer::from(data.to_vec());
        while !buffer.is_empty() {
            let Body::Ipc {
                decoder,
                expected,
                message_bytes,
                ..
            } = &mut self.body
            else {
                unreachable!()
            };
            let before = buffer.len();
            let decoded = crate::guard::guarded(|| decoder.decode(&mut buffer));
            let consumed = before - buffer.len();
            self.parsed_to += consumed as u64;
            *message_bytes += consumed;
            let decoded = match decoded {
                Ok(None) if *message_bytes > IPC_MESSAGE_BYTES_MAX => Err(format!(
                    "a message longer than {IPC_MESSAGE_BYTES_MAX} bytes (the bound on one Arrow IPC message)"
                )),
                Ok(Some(batch)) => {
                    *message_bytes = 0;
                    Ok(Some(batch))
                }
                other => other,
            };
            let batch = match decoded {
                Ok(Some(batch)) => batch,
                Ok(None) if before == buffer.len() => break,
                Ok(None) => continue,
                Err(e) => {
                    let reason = format!("a malformed Arrow IPC stream: {}", ipc_reason(&e));
                    self.dead
                        .push(self.parsed_to, None, buffer.as_slice(), reason);
                    self.records += 1;
                    self.parsed_to += buffer.len() as u64;
                    self.fail(sink);
                    return;
                }
            };
            // The stream's first message fixes its schema; when the caller
            // expects one, each batch must supply it (extra columns dropped).
            let batch = match expected {
                None => batch,
                Some(expected) => match check_ipc_schema(expected, &batch) {
                    Ok(()) => batch
                        .project(&project_indices(expected, &batch))
                        .expect("checked"),
                    Err(reason) => {
                        self.dead.push(self.parsed_to, None, &[], reason);
                        self.records += 1;
                        self.close_if_full(sink);
                        continue;
                    }
                },
            };
            let mut offset = 0;
            while offset < batch.num_rows() && !self.stopped {
                let Body::Ipc { pending, .. } = &mut self.body else {
                    unreachable!()
                };
                let take = (self.limits.max_rows - self.records).min(batch.num_rows() - offset);
                pending.push(batch.slice(offset, take));
                self.records += take;
                offset += take;
                self.close_if_full(sink);
            }
            if self.stopped {
                return;
            }
        }
        self.mark_open();
    }
}

pub(crate) fn ipc_reason(e: &str) -> String {
    e.trim_start_matches("Ipc error: ")
        .trim_start_matches("Parser error: ")
        .to_string()
}

pub(crate) fn project_indices(expected: &arrow_schema::Schema, batch: &RecordBatch) -> Vec<usize> {
    expected
        .fields()
        .iter()
        .map(|f| batch.schema().index_of(f.name()).expect("checked"))
        .collect()
}

/// A batch fits when it has every expected column with the expected type
/// (extra columns are dropped).
pub(crate) fn check_ipc_schema(
    expected: &arrow_schema::Schema,
    batch: &RecordBatch,
) -> Result<(), String> {
    let schema = batch.schema();
    for f in expected.fields() {
        match schema.field_with_name(f.name()) {
            Err(_) => {
                return Err(format!(
                    "a batch of {} rows without column '{}'; it has {:?}",
                    batch.num_rows(),
                    f.name(),
                    schema.fields().iter().map(|f| f.name()).collect::<Vec<_>>()
                ))
            }
            Ok(got) if got.data_type() != f.data_type() => {
                return Err(format!(
                    "a batch of {} rows whose column '{}' is {}; expected {}",
                    batch.num_rows(),
                    f.name(),
                    got.data_type(),
                    f.data_type()
                ))
            }
            Ok(_) => {}
        }
    }
    Ok(())
}

//! One stream parsed on several threads: a file or a TCP connection whose
//! CSV or NDJSON arrives faster than one core parses it.
//!
//! The reader's thread cuts the stream into pieces at record boundaries
//! (a `\n` outside quotes: found by a scan of quotes and line ends, or by
//! one search for the last line end when a piece has no quote), and hands
//! each piece to a worker of the parse pool. Workers parse their piece
//! with the stream's own parser ([`crate::parse::record_parser`]) into
//! batches of at most `max_rows` records. The reader's thread takes the
//! results back in stream order and splices them into the stream's
//! [`Framer`] ([`Framer::splice`]), which numbers the batches, gives them
//! their byte ranges and moves dead letters' line numbers to the lines
//! counted from the stream's start.
//!
//! Exactness does not rest on the cut: a worker's rows are kept only when
//! the framer, having taken everything before, stands at a record boundary
//! exactly where the piece starts. Where the quote scan and the parser
//! disagree (stray quotes inside unquoted fields, a lone `\r`), the worker
//! stops short or the framer is mid-record, and the framer parses those
//! bytes itself, serially. So the rows, the dead letters (offsets, lines,
//! reasons) and the byte ranges equal a serial parse of the same bytes;
//! only where batches close differs (a batch also closes at a piece's end).
//!
//! The first piece (and its header) is parsed on the reader's thread, and
//! so is everything when no piece is out with the workers at `linger`: a
//! slow stream pays no hand-off.
//!
//! Bounds: at most [`PIECES_IN_FLIGHT_PER_THREAD`] pieces per pool thread
//! are out with the workers per stream, each at most [`PIECE_BYTES_MAX`];
//! when all are out the reader waits for the oldest (backpressure to the
//! socket or the file read). Across a source's streams (a TCP source's
//! connections) the bytes out are bounded by the same figure
//! ([`ParsePool`]); a stream that finds the bound taken parses on its
//! reading thread, and a stream idle past `linger` keeps no piece-sized
//! buffer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use crossbeam_channel::{Receiver, Sender};

use crate::framer::{BatchLimits, BatchSink, Framer, StreamFormat};
use crate::parse::csv::CsvHeader;
use crate::parse::{record_parser, DeadLetters};
use crate::record::DeadLetter;
use crate::IngestError;

/// The threads that parse pieces of streams (shared with scoring in the
/// daemon: one pool, one thread per core), and the bound on the bytes of
/// pieces out with them, shared by every stream given a clone (a source's
/// connections): past it a stream parses on its reading thread instead, so
/// a thousand connections hold no more than one busy one.
#[derive(Clone, Debug)]
pub struct ParsePool {
    threads: Arc<rayon::ThreadPool>,
    out_bytes: Arc<AtomicUsize>,
    max_bytes: usize,
}

impl ParsePool {
    /// Pieces on `threads`, at most [`PIECES_IN_FLIGHT_PER_THREAD`] ×
    /// [`PIECE_BYTES_MAX`] bytes out per thread across every stream that
    /// shares this value.
    pub fn new(threads: Arc<rayon::ThreadPool>) -> Self {
        let max_bytes =
            threads.current_num_threads() * PIECES_IN_FLIGHT_PER_THREAD * PIECE_BYTES_MAX;
        Self {
            threads,
            out_bytes: Arc::new(AtomicUsize::new(0)),
            max_bytes,
        }
    }

    /// Bytes of pieces out with the threads now.
    pub fn bytes_out(&self) -> usize {
        self.out_bytes.load(Ordering::Acquire)
    }

    fn try_take(&self, bytes: usize) -> bool {
        let before = self.out_bytes.fetch_add(bytes, Ordering::AcqRel);
        if before + bytes > self.max_bytes && before > 0 {
            self.out_bytes.fetch_sub(bytes, Ordering::AcqRel);
            return false;
        }
        true
    }

    fn give_back(&self, bytes: usize) {
        self.out_bytes.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// Bytes of the first piece, parsed on the reader's thread (the header,
/// and a measure of the record length that sizes the later pieces).
pub const FIRST_PIECE_BYTES: usize = 64 << 10;
/// The smallest piece handed to a worker, in bytes (unless `linger` ends
/// the wait sooner).
pub const PIECE_BYTES_MIN: usize = 256 << 10;
/// The largest piece handed to a worker, in bytes.
pub const PIECE_BYTES_MAX: usize = 4 << 20;
/// Pieces out with the workers per pool thread.
pub const PIECES_IN_FLIGHT_PER_THREAD: usize = 2;
/// How soon `poll` asks to be called again while pieces are out.
const RESULT_POLL: Duration = Duration::from_micros(200);

/// Piece sizes in bytes (the constants above; tests make them small).
#[derive(Clone, Copy, Debug)]
struct PieceBytes {
    first: usize,
    min: usize,
    max: usize,
}

const PIECE_BYTES: PieceBytes = PieceBytes {
    first: FIRST_PIECE_BYTES,
    min: PIECE_BYTES_MIN,
    max: PIECE_BYTES_MAX,
};

/// What a worker made of one piece of a stream.
pub(crate) struct ParsedPiece {
    /// Stream offset of the piece's first byte.
    pub offset: u64,
    /// The line the worker assumed the piece starts on (lines counted by
    /// line ends from the stream's start).
    pub line: u64,
    /// The worker's line after what it consumed.
    pub line_end: u64,
    /// The piece's bytes: what the worker did not consume is parsed by the
    /// framer, and all of it when the worker's rows cannot stand.
    pub bytes: Vec<u8>,
    /// Bytes of whole records the worker parsed.
    pub consumed: usize,
    pub parts: Vec<Part>,
    pub ingest_time: SystemTime,
}

/// One batch of a piece: at most `max_rows` records.
pub(crate) struct Part {
    pub batch: RecordBatch,
    pub dead_letters: Vec<DeadLetter>,
    /// Stream offset after the part's last record.
    pub end: u64,
}

/// What every worker needs to parse a piece of one stream.
struct Spec {
    source: Arc<str>,
    /// The stream's format with no header (the first piece holds it).
    format: StreamFormat,
    schema: SchemaRef,
    limits: BatchLimits,
}

/// A stream parsed on the pool's threads; see the module's docs.
pub struct ParallelFramer {
    framer: Framer,
    spec: Arc<Spec>,
    pool: ParsePool,
    quoted: bool,
    results_tx: Sender<(u64, ParsedPiece)>,
    results_rx: Receiver<(u64, ParsedPiece)>,
    ready: BTreeMap<u64, ParsedPiece>,
    next_id: u64,
    next_splice: u64,
    in_flight_max: usize,
    /// Bytes received and not yet handed on; `pending[0]` is at a record
    /// boundary as far as the cut can tell.
    pending: Vec<u8>,
    pending_offset: u64,
    pending_line: u64,
    pending_since: Option<(Instant, SystemTime)>,
    piece_bytes: usize,
    sizes: PieceBytes,
    first_done: bool,
    counts: PieceCounts,
    /// Buffers of spliced pieces, reused for the next ones (at most one
    /// per piece in flight).
    spare: Vec<Vec<u8>>,
}

/// How a stream's pieces went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PieceCounts {
    /// Pieces whose worker-parsed rows were kept.
    pub spliced: u64,
    /// Pieces parsed again on the reader's thread (the cut and the parser
    /// disagreed on where a record ends).
    pub reparsed: u64,
    /// Pieces parsed on the reader's thread because the source's bound on
    /// bytes out with the pool was reached.
    pub inline: u64,
}

/// A stream's micro-batcher, on the reader's thread alone or with a pool.
#[allow(clippy::large_enum_variant)] // one per stream; the serial framer is the common case
pub enum StreamFramer {
    Serial(Framer),
    Parallel(Box<ParallelFramer>),
}

impl StreamFramer {
    /// A framer for `format`; CSV and NDJSON are parsed on `pool` when it
    /// has two threads or more, everything else on the caller's thread.
    pub fn new(
        source: Arc<str>,
        format: &StreamFormat,
        schema: Option<SchemaRef>,
        limits: BatchLimits,
        pool: Option<&ParsePool>,
    ) -> Result<Self, IngestError> {
        Self::with_sizes(source, format, schema, limits, pool, PIECE_BYTES)
    }

    fn with_sizes(
        source: Arc<str>,
        format: &StreamFormat,
        schema: Option<SchemaRef>,
        limits: BatchLimits,
        pool: Option<&ParsePool>,
        sizes: PieceBytes,
    ) -> Result<Self, IngestError> {
        let framer = Framer::new(source.clone(), format, schema.clone(), limits)?;
        let pool = match pool {
            Some(p) if p.threads.current_num_threads() >= 2 => p.clone(),
            _ => return Ok(Self::Serial(framer)),
        };
        let (format, quoted) = match format {
            StreamFormat::Csv { delimiter, .. } => (
                StreamFormat::Csv {
                    header: CsvHeader::Absent,
                    delimiter: *delimiter,
                },
                true,
            ),
            StreamFormat::Ndjson => (StreamFormat::Ndjson, false),
            _ => return Ok(Self::Serial(framer)),
        };
        let schema = schema.expect("the framer checked that the format has a schema");
        let (results_tx, results_rx) = crossbeam_channel::unbounded();
        let in_flight_max = pool.threads.current_num_threads() * PIECES_IN_FLIGHT_PER_THREAD;
        Ok(Self::Parallel(Box::new(ParallelFramer {
            framer,
            spec: Arc::new(Spec {
                source,
                format,
                schema,
                limits,
            }),
            pool,
            quoted,
            results_tx,
            results_rx,
            ready: BTreeMap::new(),
            next_id: 0,
            next_splice: 0,
            in_flight_max,
            pending: Vec::new(),
            pending_offset: 0,
            pending_line: 1,
            pending_since: None,
            piece_bytes: sizes.min,
            sizes,
            first_done: false,
            counts: PieceCounts::default(),
            spare: Vec::new(),
        })))
    }

    /// Starts the stream at `offset` on `line` ([`Framer::start_at`]).
    pub fn start_at(&mut self, offset: u64, line: u64) {
        match self {
            Self::Serial(f) => f.start_at(offset, line),
            Self::Parallel(p) => {
                p.framer.start_at(offset, line);
                p.pending_offset = offset;
                p.pending_line = line;
            }
        }
    }

    pub fn push(&mut self, data: &[u8], sink: &mut dyn BatchSink) {
        match self {
            Self::Serial(f) => f.push(data, sink),
            Self::Parallel(p) => p.push(data, sink),
        }
    }

    pub fn poll(&mut self, now: Instant, sink: &mut dyn BatchSink) -> Option<Instant> {
        match self {
            Self::Serial(f) => f.poll(now, sink),
            Self::Parallel(p) => p.poll(now, sink),
        }
    }

    pub fn finish(&mut self, end_ends_record: bool, sink: &mut dyn BatchSink) {
        match self {
            Self::Serial(f) => f.finish(end_ends_record, sink),
            Self::Parallel(p) => p.finish(end_ends_record, sink),
        }
    }

    pub fn flush(&mut self, sink: &mut dyn BatchSink) {
        match self {
            Self::Serial(f) => f.flush(sink),
            Self::Parallel(p) => p.flush(sink),
        }
    }

    fn framer(&self) -> &Framer {
        match self {
            Self::Serial(f) => f,
            Self::Parallel(p) => &p.framer,
        }
    }

    pub fn failed(&self) -> bool {
        self.framer().failed()
    }

    pub fn stopped(&self) -> bool {
        self.framer().stopped()
    }

    pub fn source(&self) -> &Arc<str> {
        self.framer().source()
    }

    /// Whether pieces of this stream go to a pool.
    pub fn is_parallel(&self) -> bool {
        matches!(self, Self::Parallel(_))
    }

    /// How the pieces handed to the pool went (zero when serial).
    pub fn pieces(&self) -> PieceCounts {
        match self {
            Self::Serial(_) => PieceCounts::default(),
            Self::Parallel(p) => p.counts,
        }
    }
}

/// The offset after the last record end in `data` (a `\n` outside quotes,
/// counting every `"`: `""` inside a quoted field toggles twice).
fn last_boundary(data: &[u8], quoted: bool) -> Option<usize> {
    if !quoted || memchr::memchr(b'"', data).is_none() {
        return memchr::memrchr(b'\n', data).map(|i| i + 1);
    }
    let mut inside = false;
    let mut last = None;
    for i in memchr::memchr2_iter(b'"', b'\n', data) {
        if data[i] == b'"' {
            inside = !inside;
        } else if !inside {
            last = Some(i + 1);
        }
    }
    last
}

impl ParallelFramer {
    fn halted(&self) -> bool {
        self.framer.failed() || self.framer.stopped()
    }

    fn in_flight(&self) -> usize {
        (self.next_id - self.next_splice) as usize - self.ready.len()
    }

    fn push(&mut self, data: &[u8], sink: &mut dyn BatchSink) {
        if self.halted() {
            self.framer.push(data, sink);
            return;
        }
        if self.pending.is_empty() && !data.is_empty() {
            self.pending_since = Some((Instant::now(), SystemTime::now()));
        }
        self.pending.extend_from_slice(data);
        self.collect(sink);
        if !self.first_done {
            if self.pending.len() < self.sizes.first {
                return;
            }
            let Some(cut) = last_boundary(&self.pending, self.quoted) else {
                // No record end yet: the framer carries it (and refuses it
                // past `record_bytes_max`).
                self.inline(self.pending.len(), sink);
                return;
            };
            let lines = memchr::memchr_iter(b'\n', &self.pending[..cut])
                .count()
                .max(1);
            let per_line = cut / lines;
            self.piece_bytes =
                (per_line * self.spec.limits.max_rows).clamp(self.sizes.min, self.sizes.max);
            self.inline(cut, sink);
            self.first_done = true;
        }
        while self.pending.len() >= self.piece_bytes && !self.halted() {
            let window = &self.pending[..self.piece_bytes];
            // No record end in a whole piece: hand it on as it is; the
            // worker stops where the record does and the framer carries it.
            let cut = last_boundary(window, self.quoted).unwrap_or(window.len());
            self.dispatch(cut, false, sink);
        }
    }

    /// Parses `pending[..cut]` on this thread, after every piece before it.
    fn inline(&mut self, cut: usize, sink: &mut dyn BatchSink) {
        self.wait_all(sink);
        let lines = memchr::memchr_iter(b'\n', &self.pending[..cut]).count() as u64;
        self.framer.push(&self.pending[..cut], sink);
        self.advance(cut, lines);
    }

    fn advance(&mut self, cut: usize, lines: u64) {
        self.pending.drain(..cut);
        self.pending_offset += cut as u64;
        self.pending_line += lines;
        if self.pending.is_empty() {
            self.pending_since = None;
        } else if cut > 0 {
            self.pending_since = Some((Instant::now(), SystemTime::now()));
        }
    }

    /// Hands `pending[..cut]` to a worker.
    fn dispatch(&mut self, cut: usize, at_end: bool, sink: &mut dyn BatchSink) {
        while self.in_flight() >= self.in_flight_max && !self.halted() {
            self.wait_one(sink);
        }
        if self.halted() {
            return;
        }
        if !self.pool.try_take(cut) {
            // The source's pieces are at their bound (other streams hold
            // it): parse this one here.
            self.counts.inline += 1;
            self.inline(cut, sink);
            return;
        }
        let mut bytes = self.spare.pop().unwrap_or_default();
        bytes.clear();
        bytes.extend_from_slice(&self.pending[..cut]);
        let lines = memchr::memchr_iter(b'\n', &bytes).count() as u64;
        let (offset, line) = (self.pending_offset, self.pending_line);
        let ingest_time = self.pending_since.map_or_else(SystemTime::now, |(_, t)| t);
        self.advance(cut, lines);
        let id = self.next_id;
        self.next_id += 1;
        let spec = self.spec.clone();
        let results = self.results_tx.clone();
        self.pool.threads.spawn(move || {
            // A panic in a worker must not leave the reader waiting: the
            // piece then comes back unparsed and the framer parses it.
            let parsed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                parse_piece(&spec, &bytes, offset, line, lines, at_end)
            }));
            let (parts, consumed, line_end) = parsed.unwrap_or((Vec::new(), 0, line));
            let piece = ParsedPiece {
                offset,
                line,
                line_end,
                bytes,
                consumed,
                parts,
                ingest_time,
            };
            let _ = results.send((id, piece));
        });
    }

    /// Splices every finished piece that is next in order.
    fn collect(&mut self, sink: &mut dyn BatchSink) {
        while let Ok((id, piece)) = self.results_rx.try_recv() {
            self.ready.insert(id, piece);
        }
        self.splice_ready(sink);
    }

    fn splice_ready(&mut self, sink: &mut dyn BatchSink) {
        while let Some(piece) = self.ready.remove(&self.next_splice) {
            self.next_splice += 1;
            self.pool.give_back(piece.bytes.len());
            let (stood, buffer) = self.framer.splice(piece, sink);
            if stood {
                self.counts.spliced += 1;
            } else {
                self.counts.reparsed += 1;
            }
            // One buffer kept for the next piece while this stream is busy.
            if self.spare.is_empty() && self.in_flight() > 0 {
                self.spare.push(buffer);
            }
        }
    }

    fn wait_one(&mut self, sink: &mut dyn BatchSink) {
        let (id, piece) = self
            .results_rx
            .recv()
            .expect("this framer holds a sender, so the channel stays open");
        self.ready.insert(id, piece);
        self.splice_ready(sink);
    }

    fn wait_all(&mut self, sink: &mut dyn BatchSink) {
        while self.next_splice < self.next_id {
            self.wait_one(sink);
        }
    }

    fn poll(&mut self, now: Instant, sink: &mut dyn BatchSink) -> Option<Instant> {
        self.collect(sink);
        let mut due = self.framer.poll(now, sink);
        if self.halted() {
            return due;
        }
        if let Some((since, _)) = self.pending_since {
            let linger_due = since + self.spec.limits.linger;
            if now >= linger_due {
                // Hand on the whole records waiting; a fragment stays.
                if let Some(cut) = last_boundary(&self.pending, self.quoted) {
                    if self.in_flight() == 0 {
                        self.inline(cut, sink);
                        self.framer.flush(sink);
                    } else {
                        self.dispatch(cut, false, sink);
                    }
                }
            } else {
                due = Some(due.map_or(linger_due, |d| d.min(linger_due)));
            }
        }
        if self.in_flight() == 0
            && self
                .pending_since
                .is_none_or(|(t, _)| now >= t + self.spec.limits.linger)
        {
            // Idle: hold no piece-sized memory (a source may have a
            // thousand quiet connections).
            self.spare = Vec::new();
            if self.pending.capacity() > 2 * self.pending.len() + FIRST_PIECE_BYTES {
                self.pending
                    .shrink_to(self.pending.len() + FIRST_PIECE_BYTES);
            }
        }
        if self.in_flight() > 0 {
            let soon = now + RESULT_POLL;
            due = Some(due.map_or(soon, |d| d.min(soon)));
        }
        due
    }

    fn finish(&mut self, end_ends_record: bool, sink: &mut dyn BatchSink) {
        if !self.halted() && !self.pending.is_empty() {
            if self.first_done {
                self.dispatch(self.pending.len(), end_ends_record, sink);
            } else {
                self.inline(self.pending.len(), sink);
            }
        }
        self.wait_all(sink);
        self.framer.finish(end_ends_record, sink);
    }

    fn flush(&mut self, sink: &mut dyn BatchSink) {
        if !self.halted() {
            self.inline(self.pending.len(), sink);
        }
        self.wait_all(sink);
        self.framer.flush(sink);
    }
}

impl Drop for ParallelFramer {
    /// A stream dropped with pieces out (a connection closed on a failure)
    /// gives their bytes back to the source's bound once they are parsed.
    fn drop(&mut self) {
        for piece in self.ready.values() {
            self.pool.give_back(piece.bytes.len());
        }
        let unfinished = self.in_flight();
        for _ in 0..unfinished {
            match self.results_rx.recv() {
                Ok((_, piece)) => self.pool.give_back(piece.bytes.len()),
                Err(_) => break,
            }
        }
    }
}

/// A worker's parse of one piece: batches of at most `max_rows` records,
/// stopping at the first record the piece does not hold whole (unless
/// `at_end`, when the piece's end ends the last record).
/// Returns the parts, the bytes consumed and the line after them.
fn parse_piece(
    spec: &Spec,
    bytes: &[u8],
    offset: u64,
    line: u64,
    lines: u64,
    at_end: bool,
) -> (Vec<Part>, usize, u64) {
    // Builders sized to the piece (at most one record per line end, and
    // the line ends were counted when the piece was cut), not to
    // `max_rows`: no memory reserved that the piece cannot fill.
    let sized = BatchLimits {
        max_rows: spec.limits.max_rows.min(lines as usize + 1),
        ..spec.limits
    };
    let (mut parser, _) = record_parser(&spec.format, spec.schema.clone(), &sized)
        .expect("the stream's framer was made from the same format and schema");
    parser.set_line(line);
    let mut dead = DeadLetters::new(spec.source.clone());
    let max_rows = spec.limits.max_rows;
    let mut parts = Vec::new();
    let mut p = 0;
    while p < bytes.len() {
        let parsed = parser.parse(&bytes[p..], offset + p as u64, max_rows, at_end, &mut dead);
        p += parsed.consumed;
        if parsed.records > 0 {
            parts.push(Part {
                batch: parser.take_batch(),
                dead_letters: std::mem::take(&mut dead.letters),
                end: offset + p as u64,
            });
        }
        if parsed.consumed == 0 || parsed.records < max_rows || parsed.fatal {
            break;
        }
    }
    (parts, p, parser.line().unwrap_or(line))
}

#[cfg(test)]
mod tests;

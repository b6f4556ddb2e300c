//! One partition's messages into micro-batches. A message holds whole
//! records (CSV or NDJSON lines, raw f32 rows) or one Arrow IPC stream;
//! its end ends its last record, so no record spans two messages. A batch
//! closes at `max_rows` records (rows and dead letters) or when its
//! oldest message has waited `linger`; its offsets are the Kafka offsets
//! it covers, `[first, last + 1)`, and consecutive batches tile the
//! partition from the first offset read. A message that yields no row
//! becomes a dead letter at its offset (the line inside the message when
//! the format has lines), so every message is accounted for.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arrow_array::RecordBatch;
use arrow_ipc::reader::StreamDecoder;
use arrow_schema::SchemaRef;

use crate::framer::{check_ipc_schema, ipc_reason, project_indices, BatchLimits, StreamFormat};
use crate::parse::{record_parser, DeadLetters, RecordParser};
use crate::record::IngestBatch;

enum Body {
    Records(Box<dyn RecordParser>),
    Ipc {
        expected: Option<SchemaRef>,
        pending: Vec<RecordBatch>,
    },
}

/// A partition's micro-batcher.
pub(crate) struct MessageFramer {
    source: Arc<str>,
    body: Body,
    limits: BatchLimits,
    dead: DeadLetters,
    seq: u64,
    /// The offset the open batch starts at (the end of the last batch, or
    /// the first message's offset).
    start: Option<i64>,
    /// The offset after the last message taken.
    next: i64,
    records: usize,
    opened: Option<(Instant, SystemTime)>,
}

impl MessageFramer {
    /// A framer whose first batch is number `seq` of its source.
    pub fn new(
        source: Arc<str>,
        format: &StreamFormat,
        schema: Option<SchemaRef>,
        limits: BatchLimits,
        seq: u64,
    ) -> Result<Self, String> {
        let body = match format {
            StreamFormat::ArrowIpc => Body::Ipc {
                expected: schema,
                pending: Vec::new(),
            },
            _ => {
                let schema = schema.ok_or("a text or raw format needs columns")?;
                Body::Records(record_parser(format, schema, &limits)?.0)
            }
        };
        Ok(Self {
            dead: DeadLetters::new(source.clone()),
            source,
            body,
            limits,
            seq,
            start: None,
            next: 0,
            records: 0,
            opened: None,
        })
    }

    /// Takes the message at `offset`; returns a batch when it closed one.
    pub fn push(&mut self, offset: i64, payload: &[u8]) -> Option<IngestBatch> {
        if self.opened.is_none() {
            self.opened = Some((Instant::now(), SystemTime::now()));
        }
        if self.start.is_none() {
            self.start = Some(offset);
        }
        self.next = offset + 1;
        let at = offset.max(0) as u64;
        if payload.is_empty() {
            self.dead.push(
                at,
                None,
                payload,
                "an empty message: expected at least one record".into(),
            );
            self.records += 1;
        } else if payload.len() > self.limits.record_bytes_max {
            self.dead.push(
                at,
                None,
                payload,
                format!(
                    "a message of {} bytes, over record_bytes_max ({} bytes)",
                    payload.len(),
                    self.limits.record_bytes_max
                ),
            );
            self.records += 1;
        } else {
            let before = self.dead.letters.len();
            let taken = match &mut self.body {
                Body::Records(parser) => {
                    parser.set_line(1);
                    parser
                        .parse(payload, 0, usize::MAX, true, &mut self.dead)
                        .records
                }
                Body::Ipc { expected, pending } => {
                    decode_ipc(payload, expected.as_ref(), pending, at, &mut self.dead)
                }
            };
            // Dead letters name the message's offset; the line (for text)
            // is the line inside the message.
            for letter in &mut self.dead.letters[before..] {
                letter.offset = at;
            }
            if taken == 0 && self.dead.letters.len() == before {
                self.dead.push(
                    at,
                    None,
                    payload,
                    "a message without a record: expected at least one".into(),
                );
                self.records += 1;
            }
            self.records += taken;
        }
        (self.records >= self.limits.max_rows).then(|| self.emit())
    }

    /// The batch whose oldest message has waited `linger` by `now`, if
    /// any, and else when the open batch will have (none: nothing open).
    pub fn poll(&mut self, now: Instant) -> (Option<IngestBatch>, Option<Instant>) {
        match self.opened {
            Some((opened, _)) if now >= opened + self.limits.linger => (Some(self.emit()), None),
            Some((opened, _)) => (None, Some(opened + self.limits.linger)),
            None => (None, None),
        }
    }

    fn emit(&mut self) -> IngestBatch {
        let batch = match &mut self.body {
            Body::Records(parser) => parser.take_batch(),
            Body::Ipc { expected, pending } => {
                let parts = std::mem::take(pending);
                let schema = expected
                    .clone()
                    .or_else(|| parts.first().map(|b| b.schema()));
                match schema {
                    Some(schema) => arrow_select::concat::concat_batches(&schema, &parts)
                        .expect("pending batches were checked against one schema"),
                    None => RecordBatch::new_empty(Arc::new(arrow_schema::Schema::empty())),
                }
            }
        };
        let start = self.start.take().unwrap_or(self.next);
        let ingest_time = self.opened.take().map_or_else(SystemTime::now, |(_, t)| t);
        let out = IngestBatch {
            source: self.source.clone(),
            seq: self.seq,
            offsets: start.max(0) as u64..self.next.max(0) as u64,
            ingest_time,
            batch,
            dead_letters: std::mem::take(&mut self.dead.letters),
        };
        self.seq += 1;
        self.records = 0;
        self.start = Some(self.next);
        out
    }
}

/// One message's Arrow IPC stream into `pending`, each batch checked
/// against `expected` (extra columns dropped; a batch that lacks one
/// becomes a dead letter, as does a malformed stream or a second schema).
/// Returns the rows taken.
fn decode_ipc(
    payload: &[u8],
    expected: Option<&SchemaRef>,
    pending: &mut Vec<RecordBatch>,
    at: u64,
    dead: &mut DeadLetters,
) -> usize {
    let mut decoder = StreamDecoder::new();
    let mut buffer = arrow_buffer::Buffer::from(payload.to_vec());
    let mut batches = Vec::new();
    loop {
        let before = buffer.len();
        match crate::guard::guarded(|| decoder.decode(&mut buffer)) {
            Ok(Some(batch)) => batches.push(batch),
            Ok(None) if buffer.is_empty() || buffer.len() == before => break,
            Ok(None) => {}
            Err(e) => {
                let reason = format!("a malformed Arrow IPC stream: {}", ipc_reason(&e));
                dead.push(at, None, payload, reason);
                return 0;
            }
        }
    }
    if !buffer.is_empty() || crate::guard::guarded(|| decoder.finish()).is_err() {
        dead.push(
            at,
            None,
            payload,
            "not a whole Arrow IPC stream (the message ends inside an IPC message)".into(),
        );
        return 0;
    }
    let mut rows = 0;
    for batch in batches {
        let batch =
            match expected {
                Some(expected) => match check_ipc_schema(expected, &batch) {
                    Ok(()) => batch
                        .project(&project_indices(expected, &batch))
                        .expect("checked"),
                    Err(reason) => {
                        dead.push(at, None, &[], reason);
                        continue;
                    }
                },
                None => match pending.first() {
                    Some(first) if first.schema() != batch.schema() => {
                        let reason =
                            format!(
                        "a batch with columns {:?}, where the partition's batches have {:?}",
                        batch.schema().fields().iter().map(|f| f.name()).collect::<Vec<_>>(),
                        first.schema().fields().iter().map(|f| f.name()).collect::<Vec<_>>()
                    );
                        dead.push(at, None, &[], reason);
                        continue;
                    }
                    _ => batch,
                },
            };
        rows += batch.num_rows();
        pending.push(batch);
    }
    rows
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use arrow_array::cast::AsArray;
    use arrow_array::types::Float32Type;
    use arrow_array::Float32Array;
    use arrow_schema::{DataType, Field, Schema};

    use super::*;
    use crate::parse::csv::CsvHeader;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("a", DataType::Float32, true),
            Field::new("b", DataType::Float32, true),
        ]))
    }

    fn limits(max_rows: usize) -> BatchLimits {
        BatchLimits {
            max_rows,
            linger: Duration::from_secs(3600),
            record_bytes_max: 64,
        }
    }

    fn csv() -> StreamFormat {
        StreamFormat::Csv {
            header: CsvHeader::Absent,
            delimiter: b',',
        }
    }

    /// Every message is a row or a dead letter at its own offset; batches
    /// close at max_rows and tile the offsets from the first message.
    #[test]
    fn messages_become_rows_or_dead_letters_at_their_offsets() {
        let source: Arc<str> = Arc::from("kafka://t/0");
        let mut f = MessageFramer::new(source, &csv(), Some(schema()), limits(4), 7).unwrap();
        assert!(f.push(100, b"1,2").is_none());
        assert!(f.push(101, b"3,x\n").is_none());
        assert!(f.push(103, b"").is_none());
        let first = f.push(104, b"5,6\r\n").expect("4 records close the batch");
        assert_eq!(first.seq, 7);
        assert_eq!(first.offsets, 100..105);
        assert_eq!(first.batch.num_rows(), 2);
        let a = first.batch.column(0).as_primitive::<Float32Type>();
        assert_eq!(a.values().to_vec(), vec![1.0, 5.0]);
        let at: Vec<u64> = first.dead_letters.iter().map(|d| d.offset).collect();
        assert_eq!(at, vec![101, 103]);
        assert!(
            first.dead_letters[0].reason.contains('b'),
            "{:?}",
            first.dead_letters[0]
        );
        // Two records in one message; an oversized message.
        assert!(f.push(105, b"7,8\n9,10\n").is_none());
        assert!(f.push(106, &[b'1'; 65]).is_none());
        let second = f.push(107, b"11,12").expect("closed");
        assert_eq!(second.seq, 8);
        assert_eq!(second.offsets, 105..108);
        assert_eq!(second.batch.num_rows(), 3);
        assert_eq!(second.dead_letters.len(), 1);
        assert!(second.dead_letters[0].reason.contains("record_bytes_max"));
        assert_eq!(second.records(), 4);
        // Nothing open: poll has nothing and no deadline.
        let (batch, deadline) = f.poll(Instant::now());
        assert!(batch.is_none() && deadline.is_none());
    }

    fn ipc(batch: &RecordBatch) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut out, &batch.schema()).unwrap();
        w.write(batch).unwrap();
        w.finish().unwrap();
        drop(w);
        out
    }

    #[test]
    fn arrow_messages_are_decoded_checked_and_coalesced() {
        let source: Arc<str> = Arc::from("kafka://t/1");
        let mut f = MessageFramer::new(
            source,
            &StreamFormat::ArrowIpc,
            Some(schema()),
            BatchLimits {
                record_bytes_max: 1 << 20,
                ..limits(1000)
            },
            0,
        )
        .unwrap();
        let good = RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Float32Array::from(vec![1.0, 2.0, 3.0])),
                Arc::new(Float32Array::from(vec![4.0, 5.0, 6.0])),
            ],
        )
        .unwrap();
        let other = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("c", DataType::Float32, true)])),
            vec![Arc::new(Float32Array::from(vec![1.0]))],
        )
        .unwrap();
        assert!(f.push(0, &ipc(&good)).is_none());
        assert!(f.push(1, &ipc(&other)).is_none());
        let mut corrupt = ipc(&good);
        corrupt.truncate(corrupt.len() / 2);
        assert!(f.push(2, &corrupt).is_none());
        assert!(f.push(3, b"not arrow at all").is_none());
        assert!(f.push(4, &ipc(&good)).is_none());
        let (batch, _) = f.poll(Instant::now() + Duration::from_secs(7200));
        let batch = batch.expect("lingered");
        assert_eq!(batch.offsets, 0..5);
        assert_eq!(batch.batch.num_rows(), 6, "{:?}", batch.dead_letters);
        let at: Vec<u64> = batch.dead_letters.iter().map(|d| d.offset).collect();
        assert_eq!(at, vec![1, 2, 3], "{:?}", batch.dead_letters);
        assert!(batch.dead_letters[0].reason.contains("without column 'a'"));
    }
}

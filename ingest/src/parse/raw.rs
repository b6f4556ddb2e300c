//! Raw rows of little-endian f32: `4 × columns` bytes per row, no framing.
//! The only malformed input is a fragment shorter than a row at the end of
//! a stream, which becomes a dead letter.

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use super::columns::Columns;
use super::{DeadLetters, Parsed, RecordParser};

pub(crate) struct RawF32Parser {
    columns: Columns,
    row_bytes: usize,
}

impl RawF32Parser {
    /// `schema` is all Float32 (checked by the caller).
    pub fn new(schema: SchemaRef, capacity: usize) -> Self {
        let row_bytes = 4 * schema.fields().len();
        Self {
            columns: Columns::new(schema, capacity),
            row_bytes,
        }
    }

    pub fn row_bytes(&self) -> usize {
        self.row_bytes
    }
}

impl RecordParser for RawF32Parser {
    fn parse(
        &mut self,
        data: &[u8],
        offset: u64,
        records_max: usize,
        at_end: bool,
        dead: &mut DeadLetters,
    ) -> Parsed {
        let rows = (data.len() / self.row_bytes).min(records_max);
        let n = self.columns.columns.len();
        for row in data[..rows * self.row_bytes].chunks_exact(self.row_bytes) {
            for (j, column) in self.columns.columns.iter_mut().enumerate() {
                let bytes: [u8; 4] = row[4 * j..4 * j + 4].try_into().expect("4 bytes");
                column.push_f32_value(f32::from_le_bytes(bytes));
            }
            self.columns.commit_row();
        }
        let mut parsed = Parsed {
            consumed: rows * self.row_bytes,
            records: rows,
            fatal: false,
        };
        let rest = &data[parsed.consumed..];
        if at_end && !rest.is_empty() && rows < records_max && rest.len() < self.row_bytes {
            dead.push(
                offset + parsed.consumed as u64,
                None,
                rest,
                format!(
                    "a fragment of {} bytes at the end; a row is {} bytes ({n} float32 columns)",
                    rest.len(),
                    self.row_bytes
                ),
            );
            parsed.consumed = data.len();
            parsed.records += 1;
        }
        parsed
    }

    fn take_batch(&mut self) -> RecordBatch {
        self.columns.take_batch()
    }
}

//! Column builders the parsers write into: plain vectors reserved once per
//! batch, turned into Arrow arrays without a copy when the batch closes.
//!
//! A row is all or nothing: a parser appends a row's fields one by one and,
//! when a later field fails, truncates every column back to the last good
//! row, so a bad record never leaves half a row behind.

use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, Float32Array, Float64Array, Int64Array, StringArray};
use arrow_buffer::{
    BooleanBuffer, BooleanBufferBuilder, Buffer, NullBuffer, OffsetBuffer, ScalarBuffer,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use super::number::{parse_bool, parse_f32, parse_f64, parse_i64};

/// Bytes of string data one column may hold in one batch (Arrow's i32
/// offsets allow 2 GiB; the bound leaves room and keeps batches sane).
pub const STRING_BYTES_PER_BATCH_MAX: usize = 1 << 30;

enum Values {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    Bool(BooleanBufferBuilder),
    Utf8 { offsets: Vec<i32>, data: Vec<u8> },
}

/// One column being built.
pub(crate) struct Column {
    values: Values,
    /// The rows of this batch whose value is null, ascending (events are
    /// mostly whole, so a valid value costs nothing here); a validity
    /// bitmap is built from them only when a batch has some. Bounded by
    /// the batch's rows.
    nulls: Vec<u32>,
    len: usize,
}

/// The column types the text parsers produce.
pub(crate) fn supported(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Float32
            | DataType::Float64
            | DataType::Int64
            | DataType::Boolean
            | DataType::Utf8
    )
}

/// Names a value the column expected, for dead-letter reasons.
pub(crate) fn expected(data_type: &DataType) -> &'static str {
    match data_type {
        DataType::Float32 | DataType::Float64 => "a number",
        DataType::Int64 => "an integer",
        DataType::Boolean => "true or false",
        _ => "text",
    }
}

impl Column {
    fn new(data_type: &DataType, capacity: usize) -> Self {
        let values = match data_type {
            DataType::Float32 => Values::F32(Vec::with_capacity(capacity)),
            DataType::Float64 => Values::F64(Vec::with_capacity(capacity)),
            DataType::Int64 => Values::I64(Vec::with_capacity(capacity)),
            DataType::Boolean => Values::Bool(BooleanBufferBuilder::new(capacity)),
            DataType::Utf8 => {
                let mut offsets = Vec::with_capacity(capacity + 1);
                offsets.push(0);
                Values::Utf8 {
                    offsets,
                    data: Vec::new(),
                }
            }
            other => unreachable!("checked by supported(): {other}"),
        };
        Self {
            values,
            nulls: Vec::new(),
            len: 0,
        }
    }

    #[inline(always)]
    fn mark_valid(&mut self) {
        self.len += 1;
    }

    /// Appends a null (a missing value: NaN to a scorer).
    pub fn push_null(&mut self) {
        match &mut self.values {
            Values::F32(v) => v.push(0.0),
            Values::F64(v) => v.push(0.0),
            Values::I64(v) => v.push(0),
            Values::Bool(v) => v.append(false),
            Values::Utf8 { offsets, data } => offsets.push(data.len() as i32),
        }
        self.nulls.push(self.len as u32);
        self.len += 1;
    }

    #[inline(always)]
    pub fn is_f32(&self) -> bool {
        matches!(self.values, Values::F32(_))
    }

    /// For a Float32 column, appends what `parse` gives and says whether it
    /// gave a value; false (nothing appended) for other columns or `None`.
    #[inline(always)]
    pub fn try_push_f32(&mut self, parse: impl FnOnce() -> Option<f32>) -> bool {
        let Values::F32(values) = &mut self.values else {
            return false;
        };
        let Some(value) = parse() else {
            return false;
        };
        values.push(value);
        self.mark_valid();
        true
    }

    /// Appends a float32 value directly (raw binary rows, JSON numbers).
    #[inline(always)]
    pub fn push_f32_value(&mut self, value: f32) -> bool {
        match &mut self.values {
            Values::F32(v) => v.push(value),
            Values::F64(v) => v.push(value as f64),
            _ => return false,
        }
        self.mark_valid();
        true
    }

    /// Appends a field's text, parsed to the column's type. An empty field
    /// is a null. On failure nothing is appended and the reason names what
    /// was expected.
    #[inline]
    pub fn push_text(&mut self, text: &[u8]) -> Result<(), &'static str> {
        if text.is_empty() {
            self.push_null();
            return Ok(());
        }
        match &mut self.values {
            Values::F32(v) => v.push(parse_f32(text).ok_or("is not a number")?),
            Values::F64(v) => v.push(parse_f64(text).ok_or("is not a number")?),
            Values::I64(v) => v.push(parse_i64(text).ok_or("is not an integer")?),
            Values::Bool(v) => v.append(parse_bool(text).ok_or("is not true or false")?),
            Values::Utf8 { offsets, data } => {
                if std::str::from_utf8(text).is_err() {
                    return Err("is not valid UTF-8");
                }
                if data.len() + text.len() > STRING_BYTES_PER_BATCH_MAX {
                    return Err("would overflow the batch's string space; lower max_rows");
                }
                data.extend_from_slice(text);
                offsets.push(data.len() as i32);
            }
        }
        self.mark_valid();
        Ok(())
    }

    /// Appends a JSON boolean.
    pub fn push_bool_value(&mut self, value: bool) -> Result<(), &'static str> {
        match &mut self.values {
            Values::Bool(v) => v.append(value),
            Values::Utf8 { .. } => {
                return self.push_text(if value { b"true" } else { b"false" });
            }
            _ => return Err("is a boolean"),
        }
        self.mark_valid();
        Ok(())
    }

    fn truncate(&mut self, rows: usize) {
        if rows >= self.len {
            return;
        }
        match &mut self.values {
            Values::F32(v) => v.truncate(rows),
            Values::F64(v) => v.truncate(rows),
            Values::I64(v) => v.truncate(rows),
            Values::Bool(v) => v.truncate(rows),
            Values::Utf8 { offsets, data } => {
                offsets.truncate(rows + 1);
                data.truncate(offsets[rows] as usize);
            }
        }
        while self.nulls.last().is_some_and(|&row| row as usize >= rows) {
            self.nulls.pop();
        }
        self.len = rows;
    }

    fn finish(&mut self, capacity: usize) -> ArrayRef {
        let nulls = (!self.nulls.is_empty()).then(|| {
            let mut valid = vec![u64::MAX; self.len.div_ceil(64)];
            for &row in &self.nulls {
                valid[row as usize / 64] &= !(1 << (row % 64));
            }
            NullBuffer::new(BooleanBuffer::new(Buffer::from_vec(valid), 0, self.len))
        });
        self.nulls.clear();
        self.len = 0;
        match &mut self.values {
            Values::F32(v) => Arc::new(Float32Array::new(
                ScalarBuffer::from(std::mem::replace(v, Vec::with_capacity(capacity))),
                nulls,
            )),
            Values::F64(v) => Arc::new(Float64Array::new(
                ScalarBuffer::from(std::mem::replace(v, Vec::with_capacity(capacity))),
                nulls,
            )),
            Values::I64(v) => Arc::new(Int64Array::new(
                ScalarBuffer::from(std::mem::replace(v, Vec::with_capacity(capacity))),
                nulls,
            )),
            Values::Bool(v) => Arc::new(BooleanArray::new(v.finish(), nulls)),
            Values::Utf8 { offsets, data } => {
                let mut fresh = Vec::with_capacity(capacity + 1);
                fresh.push(0);
                let offsets = std::mem::replace(offsets, fresh);
                let data = std::mem::take(data);
                // Every pushed field was checked as UTF-8 and offsets only
                // grow, so `new`'s validation holds.
                Arc::new(StringArray::new(
                    OffsetBuffer::new(ScalarBuffer::from(offsets)),
                    data.into(),
                    nulls,
                ))
            }
        }
    }
}

/// The fewest rows a fresh batch's columns reserve.
const RESERVE_ROWS_MIN: usize = 256;

/// The columns of one batch being built, all the same length.
pub(crate) struct Columns {
    pub schema: SchemaRef,
    pub columns: Vec<Column>,
    pub rows: usize,
    capacity: usize,
}

impl Columns {
    /// `schema` must hold only [`supported`] types (checked by the caller,
    /// which names the offending column).
    pub fn new(schema: SchemaRef, capacity: usize) -> Self {
        let columns = schema
            .fields()
            .iter()
            .map(|f| Column::new(f.data_type(), capacity))
            .collect();
        Self {
            schema,
            columns,
            rows: 0,
            capacity,
        }
    }

    /// Rolls every column back to the last committed row.
    pub fn abandon_row(&mut self) {
        let rows = self.rows;
        for c in &mut self.columns {
            c.truncate(rows);
        }
    }

    /// Commits the row just appended (every column has one more value).
    #[inline]
    pub fn commit_row(&mut self) {
        self.rows += 1;
        debug_assert!(self.columns.iter().all(|c| c.len == self.rows));
    }

    /// Hands out the built batch and starts a fresh one, its columns
    /// reserved for as many rows as this one had (a power of two, at least
    /// [`RESERVE_ROWS_MIN`], at most the capacity): a batch that lingers
    /// out small (a quiet connection, one of many Kafka partitions) does
    /// not reserve `max_rows` rows per column for the next, which cost a
    /// fresh, zeroed huge page per column per batch; the columns still grow
    /// to any size up to the capacity.
    pub fn take_batch(&mut self) -> arrow_array::RecordBatch {
        let reserve = self
            .rows
            .max(1)
            .next_power_of_two()
            .max(RESERVE_ROWS_MIN)
            .min(self.capacity);
        let arrays: Vec<ArrayRef> = self.columns.iter_mut().map(|c| c.finish(reserve)).collect();
        let rows = self.rows;
        self.rows = 0;
        arrow_array::RecordBatch::try_new_with_options(
            self.schema.clone(),
            arrays,
            &arrow_array::RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .expect("columns are built to the schema, all of one length")
    }
}

/// Checks a caller's schema against what the text parsers can build.
pub(crate) fn check_schema(schema: &Schema) -> Result<(), String> {
    for f in schema.fields() {
        if !supported(f.data_type()) {
            return Err(format!(
                "column '{}' has type {}; the parsers build Float32, Float64, Int64, Boolean or Utf8",
                f.name(),
                f.data_type()
            ));
        }
    }
    Ok(())
}

/// A schema of `names`, Float32 for those in `float32`, else `inferred`.
pub(crate) fn schema_of(names: &[String], types: &[DataType]) -> SchemaRef {
    Arc::new(Schema::new(
        names
            .iter()
            .zip(types)
            .map(|(n, t)| Field::new(n, t.clone(), true))
            .collect::<Vec<_>>(),
    ))
}

/// Type inference over sample values of one column: the narrowest of
/// Int64, Float64, Boolean, else Utf8. Empty fields say nothing.
#[derive(Clone, Copy, Default)]
pub(crate) struct Inferred {
    seen: bool,
    not_int: bool,
    not_float: bool,
    not_bool: bool,
}

impl Inferred {
    pub fn observe(&mut self, text: &[u8]) {
        if text.is_empty() {
            return;
        }
        self.seen = true;
        self.not_int |= parse_i64(text).is_none();
        self.not_float |= parse_f64(text).is_none();
        self.not_bool |= parse_bool(text).is_none();
    }

    pub fn data_type(&self) -> DataType {
        if !self.seen {
            DataType::Utf8
        } else if !self.not_int {
            DataType::Int64
        } else if !self.not_float {
            DataType::Float64
        } else if !self.not_bool {
            DataType::Boolean
        } else {
            DataType::Utf8
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Array, Float32Array};
    use arrow_schema::{DataType, Field, Schema};

    use super::Columns;

    /// Values, nulls and abandoned rows in any order build the batch a list
    /// of `Option`s says they should: nulls where pushed, none left behind
    /// by an abandoned row, no validity buffer when nothing is null.
    #[test]
    fn nulls_and_abandoned_rows_match_a_plain_list() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Float32, true),
            Field::new("b", DataType::Float32, true),
        ]));
        let mut columns = Columns::new(schema, 64);
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for round in 0..200 {
            let mut expected: [Vec<Option<f32>>; 2] = [Vec::new(), Vec::new()];
            for row in 0..(round % 150) {
                let mut values = [None, None];
                for (j, value) in values.iter_mut().enumerate() {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    if !state.is_multiple_of(1 + round as u64 % 5) {
                        *value = Some(row as f32 + j as f32 / 4.0);
                        assert!(columns.columns[j].push_f32_value(row as f32 + j as f32 / 4.0));
                    } else {
                        columns.columns[j].push_null();
                    }
                }
                if state.is_multiple_of(7) {
                    columns.abandon_row();
                } else {
                    columns.commit_row();
                    for (list, value) in expected.iter_mut().zip(values) {
                        list.push(value);
                    }
                }
            }
            let batch = columns.take_batch();
            for (j, expected) in expected.iter().enumerate() {
                let got = batch
                    .column(j)
                    .as_any()
                    .downcast_ref::<Float32Array>()
                    .unwrap();
                let got: Vec<Option<f32>> = got.iter().collect();
                assert_eq!(&got, expected, "round {round}, column {j}");
                let has_nulls = expected.iter().any(Option::is_none);
                assert_eq!(
                    batch.column(j).nulls().is_some(),
                    has_nulls,
                    "round {round}"
                );
            }
        }
    }
}

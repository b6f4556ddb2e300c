//! The columns a feature operator reads and writes, normalised once per
//! batch: event times in microseconds, key columns as Int64, UTF-8 or
//! booleans (and each row's key encoded into bytes), value columns as
//! Float64 or as digests for distinct counts, and the feature columns
//! built row by row.

use arrow_array::builder::{Float64Builder, Int64Builder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{Array, ArrayRef, BooleanArray, Float64Array, Int64Array};
use arrow_schema::{DataType, TimeUnit};

use super::hash;
use super::state::{Answer, SlotKind, NULL_BITS};

/// Is `t` a type the event time may have.
pub fn is_event_time_type(t: &DataType) -> bool {
    matches!(t, DataType::Int64 | DataType::Timestamp(_, _))
}

/// The event times of `array` (Int64 µs or a timestamp of any unit) in
/// microseconds; nulls as `None`.
pub fn event_times_us(array: &ArrayRef) -> Vec<Option<i64>> {
    event_times_us_array(array).iter().collect()
}

/// The event times of `array` in microseconds as an Int64 array (nulls
/// kept; no copy when it already is Int64 µs).
pub fn event_times_us_array(array: &ArrayRef) -> Int64Array {
    let raw =
        arrow_cast::cast(array, &DataType::Int64).expect("int64 and timestamps cast to int64");
    let raw = raw.as_primitive::<Int64Type>();
    match array.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => raw.unary(|x| x.saturating_mul(1_000_000)),
        DataType::Timestamp(TimeUnit::Millisecond, _) => raw.unary(|x| x.saturating_mul(1_000)),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => raw.unary(|x| x.div_euclid(1_000)),
        _ => raw.clone(),
    }
}

/// How a key column is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Int,
    Text,
    Bool,
}

pub(crate) fn key_kind(t: &DataType) -> Option<KeyKind> {
    match t {
        t if t.is_integer() => Some(KeyKind::Int),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Some(KeyKind::Text),
        DataType::Dictionary(_, v) if key_kind(v) == Some(KeyKind::Text) => Some(KeyKind::Text),
        DataType::Boolean => Some(KeyKind::Bool),
        _ => None,
    }
}

/// A key column of one batch, normalised.
pub(crate) enum KeyColumn {
    Int(Int64Array),
    Text(arrow_array::StringArray),
    Bool(BooleanArray),
}

/// A value column of one batch, normalised.
pub(super) enum ValueColumn {
    Number(Float64Array),
    Digest(Vec<u64>),
}

impl ValueColumn {
    /// Row `row` as a state word: f64 bits (NaN for null) or a digest.
    #[inline]
    pub(super) fn word(&self, row: usize) -> u64 {
        match self {
            ValueColumn::Number(a) if a.is_valid(row) => a.value(row).to_bits(),
            ValueColumn::Number(_) => f64::NAN.to_bits(),
            ValueColumn::Digest(d) => d[row],
        }
    }
}

/// One feature's output column, built a row at a time.
pub(super) enum FeatureColumn {
    Int(Int64Builder),
    Float(Float64Builder),
}

impl FeatureColumn {
    pub(super) fn new(integer: bool, rows: usize) -> Self {
        if integer {
            Self::Int(Int64Builder::with_capacity(rows))
        } else {
            Self::Float(Float64Builder::with_capacity(rows))
        }
    }

    #[inline]
    pub(super) fn push(&mut self, answer: Answer) {
        match (self, answer) {
            (Self::Int(b), Answer::Int(v)) => b.append_value(v),
            (Self::Float(b), Answer::Float(v)) => b.append_value(v),
            (Self::Int(b), Answer::Null) => b.append_null(),
            (Self::Float(b), Answer::Null) => b.append_null(),
            (_, a) => unreachable!("an answer of the wrong type for its column: {a:?}"),
        }
    }

    pub(super) fn finish(self) -> ArrayRef {
        match self {
            Self::Int(mut b) => std::sync::Arc::new(b.finish()),
            Self::Float(mut b) => std::sync::Arc::new(b.finish()),
        }
    }
}

pub(crate) fn key_column(array: &ArrayRef, kind: KeyKind) -> KeyColumn {
    match kind {
        KeyKind::Int => KeyColumn::Int(
            arrow_cast::cast(array, &DataType::Int64)
                .expect("integers cast to int64")
                .as_primitive::<Int64Type>()
                .clone(),
        ),
        KeyKind::Text => KeyColumn::Text(
            arrow_cast::cast(array, &DataType::Utf8)
                .expect("text casts to utf8")
                .as_string::<i32>()
                .clone(),
        ),
        KeyKind::Bool => KeyColumn::Bool(array.as_boolean().clone()),
    }
}

/// Writes row `row`'s key into `out`; false when any part is null.
pub(crate) fn encode_key(columns: &[KeyColumn], row: usize, out: &mut Vec<u8>) -> bool {
    out.clear();
    columns.iter().all(|c| encode_part(c, row, out))
}

/// Writes row `row`'s key into `out`, a null part as the tag 0 (a null
/// key is a key of its own, as an aggregate groups it).
pub(crate) fn encode_key_or_null(columns: &[KeyColumn], row: usize, out: &mut Vec<u8>) {
    out.clear();
    for c in columns {
        if !encode_part(c, row, out) {
            out.push(0);
        }
    }
}

/// One key column's part of row `row`: a tag (1 integer, 2 text, 3
/// boolean) then the value; false (nothing written) when null.
#[inline]
fn encode_part(c: &KeyColumn, row: usize, out: &mut Vec<u8>) -> bool {
    match c {
        KeyColumn::Int(a) => {
            if a.is_null(row) {
                return false;
            }
            out.push(1);
            out.extend_from_slice(&a.value(row).to_le_bytes());
        }
        KeyColumn::Text(a) => {
            if a.is_null(row) {
                return false;
            }
            let s = a.value(row).as_bytes();
            out.push(2);
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s);
        }
        KeyColumn::Bool(a) => {
            if a.is_null(row) {
                return false;
            }
            out.push(3);
            out.push(a.value(row) as u8);
        }
    }
    true
}

pub(super) fn value_column(array: &ArrayRef, kind: SlotKind) -> ValueColumn {
    match kind {
        SlotKind::Number => ValueColumn::Number(
            arrow_cast::cast(array, &DataType::Float64)
                .expect("numbers cast to float64")
                .as_primitive::<Float64Type>()
                .clone(),
        ),
        SlotKind::Distinct => {
            let t = array.data_type();
            let digests = if let Some(kind) = key_kind(t) {
                let column = key_column(array, kind);
                let mut buf = Vec::new();
                (0..array.len())
                    .map(|r| {
                        if encode_key(std::slice::from_ref(&column), r, &mut buf) {
                            hash::digest(&buf)
                        } else {
                            NULL_BITS
                        }
                    })
                    .collect()
            } else {
                let a =
                    arrow_cast::cast(array, &DataType::Float64).expect("numbers cast to float64");
                let a = a.as_primitive::<Float64Type>();
                (0..a.len())
                    .map(|r| {
                        let x = a.value(r);
                        if a.is_null(r) || x.is_nan() {
                            NULL_BITS
                        } else {
                            // -0.0 and 0.0 are one value.
                            hash::digest(&(x + 0.0).to_bits().to_le_bytes())
                        }
                    })
                    .collect()
            };
            ValueColumn::Digest(digests)
        }
    }
}

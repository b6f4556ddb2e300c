//! An aggregate's keys: read from a batch's key columns, interned into
//! slots (one Int64 column takes a fast path: no byte encoding per row),
//! compared in the output order, and written back as Arrow columns of the
//! input's types.
//!
//! A key is stored encoded (`features::columns::encode_key_or_null`): per
//! column a tag — 0 null, 1 integer (8 bytes LE), 2 text (u32 length,
//! bytes), 3 boolean (1 byte) — then the value.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Int64Builder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch};
use arrow_schema::{DataType, FieldRef};

use crate::operators::features::columns::{encode_key_or_null, key_column, KeyColumn, KeyKind};
use crate::operators::features::hash::FastHash;

/// One batch's key columns, normalised once.
pub(super) enum BatchKeys {
    /// One integer column: looked up by value.
    Int(Int64Array),
    /// Anything else: each row's key encoded into bytes.
    Encoded(Vec<KeyColumn>),
}

impl BatchKeys {
    pub fn read(batch: &RecordBatch, columns: &[(usize, KeyKind)]) -> Self {
        if let [(c, KeyKind::Int)] = columns {
            let a = arrow_cast::cast(batch.column(*c), &DataType::Int64)
                .expect("integers cast to int64");
            return Self::Int(a.as_primitive::<Int64Type>().clone());
        }
        Self::Encoded(
            columns
                .iter()
                .map(|(c, kind)| key_column(batch.column(*c), *kind))
                .collect(),
        )
    }
}

/// Keys → slots. Slots are numbered densely and reused once free.
#[derive(Default)]
pub(super) struct KeyIndex {
    ints: HashMap<i64, u32, FastHash>,
    null_int: Option<u32>,
    bytes: HashMap<Box<[u8]>, u32, FastHash>,
    /// Reused per row.
    buf: Vec<u8>,
}

/// Where a row's key was found, or that it is new (its encoding in
/// `KeyIndex::pending`).
pub(super) enum Found {
    Slot(u32),
    New,
}

impl KeyIndex {
    /// Row `row`'s slot, or `Found::New` (then [`Self::insert`] it).
    #[inline]
    pub fn find(&mut self, keys: &BatchKeys, row: usize) -> Found {
        let hit = match keys {
            BatchKeys::Int(a) if a.is_null(row) => self.null_int,
            BatchKeys::Int(a) => self.ints.get(&a.value(row)).copied(),
            BatchKeys::Encoded(columns) => {
                encode_key_or_null(columns, row, &mut self.buf);
                self.bytes.get(self.buf.as_slice()).copied()
            }
        };
        hit.map_or(Found::New, Found::Slot)
    }

    /// Inserts row `row`'s key as `slot`; returns its encoding to keep.
    pub fn insert(&mut self, keys: &BatchKeys, row: usize, slot: u32) -> Box<[u8]> {
        match keys {
            BatchKeys::Int(a) if a.is_null(row) => {
                self.null_int = Some(slot);
                Box::new([0])
            }
            BatchKeys::Int(a) => {
                let v = a.value(row);
                self.ints.insert(v, slot);
                let mut k = Vec::with_capacity(9);
                k.push(1);
                k.extend_from_slice(&v.to_le_bytes());
                k.into_boxed_slice()
            }
            BatchKeys::Encoded(columns) => {
                encode_key_or_null(columns, row, &mut self.buf);
                let k: Box<[u8]> = self.buf.as_slice().into();
                self.bytes.insert(k.clone(), slot);
                k
            }
        }
    }

    /// Re-registers a stored key (a restore).
    pub fn insert_encoded(&mut self, single_int: bool, key: &[u8], slot: u32) {
        if single_int {
            match key {
                [0] => self.null_int = Some(slot),
                [1, rest @ ..] => {
                    let v = i64::from_le_bytes(rest.try_into().expect("8 bytes"));
                    self.ints.insert(v, slot);
                }
                _ => unreachable!("a single integer key is encoded as null or 1 + 8 bytes"),
            }
        } else {
            self.bytes.insert(key.into(), slot);
        }
    }

    /// Forgets a key whose slot is free.
    pub fn remove(&mut self, single_int: bool, key: &[u8]) {
        if single_int {
            match key {
                [0] => self.null_int = None,
                [1, rest @ ..] => {
                    self.ints
                        .remove(&i64::from_le_bytes(rest.try_into().expect("8 bytes")));
                }
                _ => unreachable!("a single integer key is encoded as null or 1 + 8 bytes"),
            }
        } else {
            self.bytes.remove(key);
        }
    }

    pub fn len(&self) -> usize {
        self.ints.len() + usize::from(self.null_int.is_some()) + self.bytes.len()
    }
}

/// One decoded part of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Part<'a> {
    Null,
    Int(i64),
    Text(&'a [u8]),
    Bool(bool),
}

/// The parts of an encoded key, in column order.
fn parts(mut key: &[u8]) -> impl Iterator<Item = Part<'_>> {
    std::iter::from_fn(move || {
        let (&tag, rest) = key.split_first()?;
        let (part, rest) = match tag {
            0 => (Part::Null, rest),
            1 => {
                let (v, rest) = rest.split_at(8);
                (
                    Part::Int(i64::from_le_bytes(v.try_into().expect("8 bytes"))),
                    rest,
                )
            }
            2 => {
                let (len, rest) = rest.split_at(4);
                let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
                let (v, rest) = rest.split_at(len);
                (Part::Text(v), rest)
            }
            3 => (Part::Bool(rest[0] != 0), &rest[1..]),
            t => unreachable!("key tag {t}: keys are encoded by encode_key_or_null"),
        };
        key = rest;
        Some(part)
    })
}

/// The output order of two keys: column by column, null first, integers
/// by value, text by bytes, false before true.
pub(super) fn compare(a: &[u8], b: &[u8]) -> Ordering {
    parts(a).cmp(parts(b))
}

/// Decodes keys into Arrow columns of the input's key types.
pub(super) fn key_arrays<'a>(
    fields: &[FieldRef],
    keys: impl Iterator<Item = &'a [u8]> + Clone,
) -> Vec<ArrayRef> {
    fields
        .iter()
        .enumerate()
        .map(|(i, field)| {
            let nth = |k: &'a [u8]| parts(k).nth(i).expect("a part per key column");
            let array: ArrayRef = match field.data_type() {
                DataType::Boolean => {
                    let mut b = BooleanBuilder::new();
                    for k in keys.clone() {
                        match nth(k) {
                            Part::Bool(v) => b.append_value(v),
                            _ => b.append_null(),
                        }
                    }
                    Arc::new(b.finish())
                }
                t if t.is_integer() => {
                    let mut b = Int64Builder::new();
                    for k in keys.clone() {
                        match nth(k) {
                            Part::Int(v) => b.append_value(v),
                            _ => b.append_null(),
                        }
                    }
                    Arc::new(b.finish())
                }
                _ => {
                    let mut b = StringBuilder::new();
                    for k in keys.clone() {
                        match nth(k) {
                            Part::Text(v) => b.append_value(
                                std::str::from_utf8(v).expect("keys come from UTF-8"),
                            ),
                            _ => b.append_null(),
                        }
                    }
                    Arc::new(b.finish())
                }
            };
            if array.data_type() == field.data_type() {
                array
            } else {
                arrow_cast::cast(&array, field.data_type()).expect("a key casts back to its type")
            }
        })
        .collect()
}

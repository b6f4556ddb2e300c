//! An aggregate's keys: read from a batch's key columns, interned into
//! slots (one Int64 column takes a fast path: no byte encoding per row),
//! compared in the output order, and written back as Arrow columns of the
//! input's types.
//!
//! A key is stored encoded (`features::columns::encode_key_or_null`): per
//! column a tag — 0 null, 1 integer (8 bytes LE), 2 text (u32 length,
//! bytes), 3 boolean (1 byte) — then the value.

use std::cmp::Ordering;
use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Int64Builder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, FieldRef};

use crate::operators::features::columns::{encode_key_or_null, key_column, KeyColumn, KeyKind};
use crate::operators::features::hash::FastHash;
use hashbrown::HashTable;
use std::hash::BuildHasher;

/// One batch's key columns, normalised once.
pub(super) enum BatchKeys {
    /// One integer column: looked up by value.
    Int(Int64Array),
    /// One text column: looked up by its bytes (no encoding per row).
    Text(StringArray),
    /// Anything else: each row's key encoded into bytes.
    Encoded(Vec<KeyColumn>),
}

impl BatchKeys {
    pub fn read(batch: &RecordBatch, columns: &[(usize, KeyKind)]) -> Self {
        match columns {
            [(c, KeyKind::Int)] => {
                let a = arrow_cast::cast(batch.column(*c), &DataType::Int64)
                    .expect("integers cast to int64");
                return Self::Int(a.as_primitive::<Int64Type>().clone());
            }
            [(c, KeyKind::Text)] => {
                let a = arrow_cast::cast(batch.column(*c), &DataType::Utf8)
                    .expect("text casts to utf8");
                return Self::Text(a.as_string::<i32>().clone());
            }
            _ => {}
        }
        Self::Encoded(
            columns
                .iter()
                .map(|(c, kind)| key_column(batch.column(*c), *kind))
                .collect(),
        )
    }
}

/// How a key set is indexed: one integer column, one text column, or
/// encoded keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Shape {
    Int,
    Text,
    Encoded,
}

impl Shape {
    pub fn of(columns: &[(usize, KeyKind)]) -> Self {
        match columns {
            [(_, KeyKind::Int)] => Self::Int,
            [(_, KeyKind::Text)] => Self::Text,
            _ => Self::Encoded,
        }
    }
}

/// A stored key: up to 22 bytes inline (most keys: no allocation, and in
/// the same cache lines as its slot), longer ones on the heap.
#[derive(Clone)]
pub(super) enum KeyBytes {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<[u8]>),
}

const INLINE: usize = 22;

impl Default for KeyBytes {
    fn default() -> Self {
        Self::Inline {
            len: 0,
            bytes: [0; INLINE],
        }
    }
}

impl From<&[u8]> for KeyBytes {
    fn from(k: &[u8]) -> Self {
        if k.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..k.len()].copy_from_slice(k);
            Self::Inline {
                len: k.len() as u8,
                bytes,
            }
        } else {
            Self::Heap(k.into())
        }
    }
}

impl std::ops::Deref for KeyBytes {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        match self {
            Self::Inline { len, bytes } => &bytes[..*len as usize],
            Self::Heap(b) => b,
        }
    }
}

/// Where a row's key was found, or that it is new.
pub(super) enum Found {
    Slot(u32),
    New,
}

/// Keys → slots: a table of slot ids, each found by its slot's own key
/// (one copy of every key, in the slot). One integer column is hashed by
/// value, one text column by its bytes, other keys by their encoding; a
/// null single key has a slot of its own. Slots are numbered densely and
/// reused once free.
pub(super) struct KeyIndex {
    shape: Shape,
    hasher: FastHash,
    table: HashTable<u32>,
    /// Each slot's hash (what the table rehashes by when it grows).
    hashes: Vec<u64>,
    null: Option<u32>,
    /// Bytes of the keys held (their encodings).
    pub key_bytes: usize,
    /// Reused per row.
    buf: Vec<u8>,
}

/// The part of a stored key the index hashes and compares.
#[inline]
fn lookup_bytes(shape: Shape, key: &[u8]) -> &[u8] {
    match shape {
        // [1, 8 bytes LE]: the value's bytes.
        Shape::Int => &key[1..],
        // [2, u32 length, bytes]: the text.
        Shape::Text => &key[5..],
        Shape::Encoded => key,
    }
}

impl KeyIndex {
    pub fn new(shape: Shape) -> Self {
        Self {
            shape,
            hasher: FastHash::default(),
            table: HashTable::new(),
            hashes: Vec::new(),
            null: None,
            key_bytes: 0,
            buf: Vec::new(),
        }
    }

    #[inline]
    fn hash(&self, bytes: &[u8]) -> u64 {
        self.hasher.hash_one(bytes)
    }

    /// Row `row`'s slot, or `Found::New` (then [`Self::insert`] it);
    /// `keys` holds each slot's stored key.
    #[inline]
    pub fn find<'k>(
        &mut self,
        rows: &BatchKeys,
        row: usize,
        keys: impl Fn(u32) -> &'k [u8],
    ) -> Found {
        let shape = self.shape;
        let int_bytes;
        let bytes: &[u8] = match rows {
            BatchKeys::Int(a) if a.is_null(row) => {
                return self.null.map_or(Found::New, Found::Slot)
            }
            BatchKeys::Text(a) if a.is_null(row) => {
                return self.null.map_or(Found::New, Found::Slot)
            }
            BatchKeys::Int(a) => {
                int_bytes = a.value(row).to_le_bytes();
                &int_bytes
            }
            BatchKeys::Text(a) => a.value(row).as_bytes(),
            BatchKeys::Encoded(columns) => {
                encode_key_or_null(columns, row, &mut self.buf);
                &self.buf
            }
        };
        let hash = self.hash(bytes);
        self.table
            .find(hash, |&s| lookup_bytes(shape, keys(s)) == bytes)
            .map_or(Found::New, |&s| Found::Slot(s))
    }

    /// Row `row`'s key, encoded, to store in `slot`; indexes it there.
    pub fn insert(&mut self, rows: &BatchKeys, row: usize, slot: u32) -> KeyBytes {
        self.buf.clear();
        match rows {
            BatchKeys::Int(a) if a.is_null(row) => self.buf.push(0),
            BatchKeys::Text(a) if a.is_null(row) => self.buf.push(0),
            BatchKeys::Int(a) => {
                self.buf.push(1);
                self.buf.extend_from_slice(&a.value(row).to_le_bytes());
            }
            BatchKeys::Text(a) => {
                let v = a.value(row).as_bytes();
                self.buf.push(2);
                self.buf.extend_from_slice(&(v.len() as u32).to_le_bytes());
                self.buf.extend_from_slice(v);
            }
            BatchKeys::Encoded(columns) => encode_key_or_null(columns, row, &mut self.buf),
        }
        let key = KeyBytes::from(self.buf.as_slice());
        self.insert_encoded(&key, slot);
        key
    }

    fn is_null_single(&self, key: &[u8]) -> bool {
        self.shape != Shape::Encoded && key == [0]
    }

    /// Indexes a stored key (a new one, or a restored one) as `slot`.
    pub fn insert_encoded(&mut self, key: &[u8], slot: u32) {
        self.key_bytes += key.len();
        if self.is_null_single(key) {
            self.null = Some(slot);
            return;
        }
        let hash = self.hash(lookup_bytes(self.shape, key));
        let at = slot as usize;
        if self.hashes.len() <= at {
            self.hashes.resize(at + 1, 0);
        }
        self.hashes[at] = hash;
        // Growth rehashes by the kept hashes, without the keys.
        let hashes = &self.hashes;
        self.table
            .insert_unique(hash, slot, |&s| hashes[s as usize]);
    }

    /// Forgets `slot`'s key (the slot is being freed).
    pub fn remove(&mut self, key: &[u8], slot: u32) {
        self.key_bytes -= key.len();
        if self.is_null_single(key) {
            self.null = None;
            return;
        }
        let hash = self.hashes[slot as usize];
        if let Ok(entry) = self.table.find_entry(hash, |&s| s == slot) {
            entry.remove();
        }
    }

    pub fn len(&self) -> usize {
        self.table.len() + usize::from(self.null.is_some())
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

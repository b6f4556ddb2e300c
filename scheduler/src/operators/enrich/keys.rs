//! Key columns as a table and a lookup read them: integers as Int64,
//! strings as Utf8 (dictionaries of strings too), refused otherwise.

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, ArrayRef, Int64Array, StringArray, UInt32Array};
use arrow_schema::DataType;

use crate::operators::features::columns::{key_kind, KeyKind};

/// A key column normalised: integers as Int64, strings as Utf8.
#[derive(Clone, Debug)]
pub(super) enum KeyArray {
    Int(Int64Array),
    Text(StringArray),
}

impl KeyArray {
    /// Integers and strings (dictionaries of strings too); `None` for any
    /// other type.
    pub fn of(array: &ArrayRef) -> Option<Self> {
        match key_kind(array.data_type())? {
            KeyKind::Int => Some(Self::Int(
                arrow_cast::cast(array, &DataType::Int64)
                    .expect("integers cast to int64")
                    .as_primitive::<Int64Type>()
                    .clone(),
            )),
            KeyKind::Text => Some(Self::Text(
                arrow_cast::cast(array, &DataType::Utf8)
                    .expect("text casts to utf8")
                    .as_string::<i32>()
                    .clone(),
            )),
            KeyKind::Bool => None,
        }
    }

    pub fn is_int(&self) -> bool {
        matches!(self, Self::Int(_))
    }

    fn array(&self) -> &dyn Array {
        match self {
            Self::Int(a) => a,
            Self::Text(a) => a,
        }
    }

    pub fn len(&self) -> usize {
        self.array().len()
    }

    pub fn is_null(&self, row: usize) -> bool {
        self.array().is_null(row)
    }

    /// Row `row`'s key as an error shows it: 42, or "abc".
    pub fn show(&self, row: usize) -> String {
        match self {
            _ if self.is_null(row) => "null".into(),
            Self::Int(a) => a.value(row).to_string(),
            Self::Text(a) => format!("{:?}", a.value(row)),
        }
    }

    pub(super) fn take(&self, rows: &UInt32Array) -> Self {
        let taken = arrow_select::take::take(self.array(), rows, None).expect("rows in range");
        match self {
            Self::Int(_) => Self::Int(taken.as_primitive::<Int64Type>().clone()),
            Self::Text(_) => Self::Text(taken.as_string::<i32>().clone()),
        }
    }

    pub(super) fn concat(&self, other: &Self) -> Self {
        let joined =
            arrow_select::concat::concat(&[self.array(), other.array()]).expect("same type");
        match self {
            Self::Int(_) => Self::Int(joined.as_primitive::<Int64Type>().clone()),
            Self::Text(_) => Self::Text(joined.as_string::<i32>().clone()),
        }
    }

    pub(super) fn bytes(&self) -> usize {
        self.array().get_array_memory_size()
    }
}

/// An event batch's key column, read for a lookup.
pub(super) enum EventKeys<'a> {
    Keys(&'a KeyArray),
    /// A dictionary of strings: each value is looked up once per batch.
    Dictionary {
        codes: Vec<usize>,
        nulls: Option<&'a arrow_buffer::NullBuffer>,
        values: KeyArray,
    },
}

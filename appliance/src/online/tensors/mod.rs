//! The Open Inference Protocol's data model, whatever carries it (REST's
//! JSON and binary extension, gRPC's messages): input tensors into a batch
//! of the pipeline's input columns, a reply's columns into output tensors.
//!
//! Inputs are either one tensor per input column, named like the column,
//! of shape `[N]` (or `[N, 1]`), or one `[N, F]` tensor of any name whose
//! F columns are the model's features in the model's order (what MLServer
//! and Triton users send). A column the request does not carry is the
//! event-time column (filled with the arrival time) or an error.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int32Type, Int64Type};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Float32Array, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray,
};
use arrow_schema::{DataType, SchemaRef};

use roo_scheduler::online::Reply;
use roo_scheduler::operators::column_names;

use super::V2Error;

/// A tensor's elements, flat, row-major.
#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    Bool(Vec<bool>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bytes(Vec<Vec<u8>>),
}

impl Values {
    pub fn len(&self) -> usize {
        match self {
            Values::Bool(v) => v.len(),
            Values::I32(v) => v.len(),
            Values::I64(v) => v.len(),
            Values::F32(v) => v.len(),
            Values::F64(v) => v.len(),
            Values::Bytes(v) => v.len(),
        }
    }

    /// The V2 datatype name.
    pub fn datatype(&self) -> &'static str {
        match self {
            Values::Bool(_) => "BOOL",
            Values::I32(_) => "INT32",
            Values::I64(_) => "INT64",
            Values::F32(_) => "FP32",
            Values::F64(_) => "FP64",
            Values::Bytes(_) => "BYTES",
        }
    }

    /// Little-endian bytes, as `raw_output_contents` and REST's binary
    /// extension carry them (BYTES: a 4-byte length before each element).
    pub fn to_raw(&self) -> Vec<u8> {
        fn le<T: Copy, const N: usize>(v: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
            let mut out = Vec::with_capacity(v.len() * N);
            for x in v {
                out.extend_from_slice(&f(*x));
            }
            out
        }
        match self {
            Values::Bool(v) => v.iter().map(|b| *b as u8).collect(),
            Values::I32(v) => le(v, i32::to_le_bytes),
            Values::I64(v) => le(v, i64::to_le_bytes),
            Values::F32(v) => le(v, f32::to_le_bytes),
            Values::F64(v) => le(v, f64::to_le_bytes),
            Values::Bytes(v) => {
                let mut out = Vec::new();
                for b in v {
                    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                    out.extend_from_slice(b);
                }
                out
            }
        }
    }

    /// Elements of `datatype` from little-endian `raw` bytes.
    pub fn from_raw(name: &str, datatype: &str, raw: &[u8]) -> Result<Self, V2Error> {
        fn chunks<T, const N: usize>(
            name: &str,
            raw: &[u8],
            f: impl Fn([u8; N]) -> T,
        ) -> Result<Vec<T>, V2Error> {
            if !raw.len().is_multiple_of(N) {
                return Err(V2Error::bad(format!(
                    "input {name}: {} bytes of raw data is not a whole number of {N}-byte elements",
                    raw.len()
                )));
            }
            Ok(raw
                .chunks_exact(N)
                .map(|c| f(c.try_into().expect("N bytes")))
                .collect())
        }
        Ok(match datatype {
            "BOOL" => Values::Bool(raw.iter().map(|b| *b != 0).collect()),
            "INT32" => Values::I32(chunks(name, raw, i32::from_le_bytes)?),
            "INT64" => Values::I64(chunks(name, raw, i64::from_le_bytes)?),
            "FP32" => Values::F32(chunks(name, raw, f32::from_le_bytes)?),
            "FP64" => Values::F64(chunks(name, raw, f64::from_le_bytes)?),
            "BYTES" => {
                let mut out = Vec::new();
                let mut at = 0;
                while at < raw.len() {
                    let Some(len) = raw.get(at..at + 4) else {
                        return Err(V2Error::bad(format!(
                            "input {name}: BYTES element {} at byte {at}: a 4-byte length was expected, {} bytes are left",
                            out.len(),
                            raw.len() - at
                        )));
                    };
                    let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
                    let Some(b) = raw.get(at + 4..at + 4 + len) else {
                        return Err(V2Error::bad(format!(
                            "input {name}: BYTES element {} at byte {at} says {len} bytes; {} are left",
                            out.len(),
                            raw.len() - at - 4
                        )));
                    };
                    out.push(b.to_vec());
                    at += 4 + len;
                }
                Values::Bytes(out)
            }
            other => return Err(unsupported(name, other)),
        })
    }
}

fn unsupported(name: &str, datatype: &str) -> V2Error {
    V2Error::bad(format!(
        "input {name}: datatype {datatype:?} is not taken; expected FP32, FP64, INT32, INT64, BOOL or BYTES"
    ))
}

/// One input tensor of a request.
#[derive(Clone, Debug)]
pub struct Input {
    pub name: String,
    pub shape: Vec<i64>,
    pub values: Values,
}

/// One output tensor of a reply.
#[derive(Clone, Debug)]
pub struct Output {
    pub name: String,
    pub shape: Vec<i64>,
    pub values: Values,
}

/// What a pipeline takes from a request.
pub struct Target<'a> {
    pub pipeline: &'a str,
    /// The request's columns: the pipeline's input.
    pub schema: &'a SchemaRef,
    /// The model's features, in its order (what an `[N, F]` tensor holds).
    pub features: Option<&'a [String]>,
    /// The event-time column, filled with the arrival time when absent.
    pub event_time: Option<&'a str>,
}

/// The V2 datatype a column travels as.
pub fn datatype_of(t: &DataType) -> &'static str {
    match t {
        DataType::Float32 => "FP32",
        DataType::Float64 => "FP64",
        DataType::Int32 | DataType::Int16 | DataType::Int8 => "INT32",
        DataType::Int64 | DataType::Timestamp(..) | DataType::UInt32 => "INT64",
        DataType::Boolean => "BOOL",
        _ => "BYTES",
    }
}

/// The rows of a tensor, checking that its shape holds its data.
fn rows_of(input: &Input) -> Result<(usize, usize), V2Error> {
    let name = &input.name;
    if input.shape.iter().any(|d| *d < 0) {
        return Err(V2Error::bad(format!(
            "input {name}: shape {:?} has a negative dimension",
            input.shape
        )));
    }
    let elements: u128 = input.shape.iter().map(|d| *d as u128).product();
    if elements != input.values.len() as u128 {
        return Err(V2Error::bad(format!(
            "input {name}: shape {:?} holds {elements} elements; the data has {}",
            input.shape,
            input.values.len()
        )));
    }
    match input.shape.as_slice() {
        [n] => Ok((*n as usize, 1)),
        [n, f] => Ok((*n as usize, *f as usize)),
        other => Err(V2Error::bad(format!(
            "input {name}: shape {other:?}: expected [N] (one column) or [N, F] (the model's features in order)"
        ))),
    }
}

/// The request's batch: the pipeline's input columns, in order. Each
/// column is built once from the tensor's values (moved, not copied, when
/// one tensor is one column of the column's type).
pub fn to_batch(target: &Target, mut inputs: Vec<Input>) -> Result<RecordBatch, V2Error> {
    if inputs.is_empty() {
        return Err(V2Error::bad(format!(
            "the request has no inputs; model {} takes [{}]",
            target.pipeline,
            expected_inputs(target)
        )));
    }
    let mut rows: Option<(usize, &str)> = None;
    let mut matrix: Option<(&Input, usize)> = None;
    for input in &inputs {
        let (n, f) = rows_of(input)?;
        match rows {
            Some((m, other)) if m != n => {
                return Err(V2Error::bad(format!(
                    "input {} has {n} rows; input {other} has {m}: every input has one element per row",
                    input.name
                )));
            }
            _ => rows = Some((n, &input.name)),
        }
        let is_column = target
            .schema
            .fields()
            .iter()
            .any(|f| f.name() == &input.name);
        if f > 1 || (!is_column && input.shape.len() == 2) {
            let features = target.features.ok_or_else(|| {
                V2Error::bad(format!(
                    "input {}: an [N, F] tensor holds the model's features, but pipeline {} has no model; send one tensor per column: [{}]",
                    input.name,
                    target.pipeline,
                    expected_inputs(target)
                ))
            })?;
            if f != features.len() {
                return Err(V2Error::bad(format!(
                    "input {}: shape {:?}: the model takes {} features [{}], so F must be {}",
                    input.name,
                    input.shape,
                    features.len(),
                    features.join(", "),
                    features.len()
                )));
            }
            if matrix.is_some() {
                return Err(V2Error::bad(
                    "two [N, F] inputs: send the model's features in one".to_string(),
                ));
            }
            matrix = Some((input, f));
        } else if !is_column {
            return Err(V2Error::bad(format!(
                "input {}: model {} has no such input; it takes [{}]",
                input.name,
                target.pipeline,
                expected_inputs(target)
            )));
        }
    }
    let (n, _) = rows.expect("at least one input");
    if n == 0 {
        return Err(V2Error::bad("the request has no rows".to_string()));
    }
    let matrix = matrix.map(|(input, f)| (input.name.clone(), f));
    let matrix_at = matrix
        .as_ref()
        .and_then(|(m, _)| inputs.iter().position(|i| i.name == *m));
    // One event's FP32 features (the common request): every column a
    // one-value slice of one shared buffer, no copy per column.
    let one_row_f32 = match (matrix_at, n) {
        (Some(at), 1) => match &mut inputs[at].values {
            Values::F32(v) => Some(arrow_buffer::Buffer::from_vec(std::mem::take(v))),
            _ => None,
        },
        _ => None,
    };
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(target.schema.fields().len());
    for field in target.schema.fields() {
        let name = field.name();
        let column = if let Some(at) = inputs.iter().position(|i| {
            i.name == *name && Some(i.name.as_str()) != matrix.as_ref().map(|(m, _)| m.as_str())
        }) {
            let values = std::mem::replace(&mut inputs[at].values, Values::Bool(Vec::new()));
            column_of(name, values, field.data_type())?
        } else if let Some(j) = matrix.as_ref().and_then(|_| {
            target
                .features
                .and_then(|fs| fs.iter().position(|f| f == name))
        }) {
            let (m, f) = matrix.as_ref().expect("checked");
            match &one_row_f32 {
                Some(buffer) if *field.data_type() == DataType::Float32 => {
                    let values = arrow_buffer::ScalarBuffer::<f32>::new(buffer.clone(), j, 1);
                    Arc::new(Float32Array::new(values, None)) as ArrayRef
                }
                Some(buffer) => {
                    let v = arrow_buffer::ScalarBuffer::<f32>::new(buffer.clone(), j, 1);
                    column_of(m, Values::F32(v.to_vec()), field.data_type())?
                }
                None => {
                    let input = &inputs[matrix_at.expect("the matrix is an input")];
                    column_of(m, strided(&input.values, j, *f), field.data_type())?
                }
            }
        } else if target.event_time == Some(name.as_str()) {
            arrival_times(n, field.data_type())?
        } else {
            return Err(V2Error::bad(format!(
                "missing input {name}: model {} takes [{}]",
                target.pipeline,
                expected_inputs(target)
            )));
        };
        columns.push(column);
    }
    RecordBatch::try_new(target.schema.clone(), columns)
        .map_err(|e| V2Error::bad(format!("the inputs do not make a batch: {e}")))
}

/// Column `j` of a row-major `[N, F]` tensor.
fn strided(values: &Values, j: usize, f: usize) -> Values {
    fn pick<T: Clone>(v: &[T], j: usize, f: usize) -> Vec<T> {
        v.iter().skip(j).step_by(f).cloned().collect()
    }
    match values {
        Values::Bool(v) => Values::Bool(pick(v, j, f)),
        Values::I32(v) => Values::I32(pick(v, j, f)),
        Values::I64(v) => Values::I64(pick(v, j, f)),
        Values::F32(v) => Values::F32(pick(v, j, f)),
        Values::F64(v) => Values::F64(pick(v, j, f)),
        Values::Bytes(v) => Values::Bytes(pick(v, j, f)),
    }
}

/// "name: DATATYPE" of each input column, for errors.
fn expected_inputs(target: &Target) -> String {
    target
        .schema
        .fields()
        .iter()
        .map(|f| format!("{} {}", f.name(), datatype_of(f.data_type())))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A column of type `to` from a tensor's values: numbers for numeric
/// columns, BOOL for booleans, BYTES for text; INT64 microseconds or BYTES
/// (RFC 3339) for timestamps.
fn column_of(name: &str, values: Values, to: &DataType) -> Result<ArrayRef, V2Error> {
    let numeric_to = to.is_numeric();
    let datatype = values.datatype();
    let array: ArrayRef = match values {
        Values::F32(v) if numeric_to => Arc::new(Float32Array::from(v)),
        Values::F64(v) if numeric_to => Arc::new(Float64Array::from(v)),
        Values::I32(v) if numeric_to => Arc::new(Int32Array::from(v)),
        Values::I64(v) if numeric_to || matches!(to, DataType::Timestamp(..)) => {
            Arc::new(Int64Array::from(v))
        }
        Values::Bool(v) if *to == DataType::Boolean => Arc::new(BooleanArray::from(v)),
        Values::Bytes(v)
            if matches!(
                to,
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Timestamp(..)
            ) =>
        {
            let text = v
                .iter()
                .enumerate()
                .map(|(row, b)| {
                    std::str::from_utf8(b).map_err(|_| {
                        V2Error::bad(format!("input {name}: element {row} is not UTF-8 text"))
                    })
                })
                .collect::<Result<Vec<&str>, V2Error>>()?;
            Arc::new(StringArray::from(text))
        }
        _ => {
            let expected = match to {
                t if t.is_numeric() => "FP32, FP64, INT32 or INT64",
                DataType::Boolean => "BOOL",
                DataType::Timestamp(..) => {
                    "INT64 (microseconds since the epoch) or BYTES (RFC 3339)"
                }
                _ => "BYTES",
            };
            return Err(V2Error::bad(format!(
                "input {name} is {datatype}; its column is {to}: expected {expected}"
            )));
        }
    };
    if array.data_type() == to {
        return Ok(array);
    }
    let options = arrow_cast::CastOptions {
        safe: false,
        ..Default::default()
    };
    arrow_cast::cast_with_options(&array, to, &options).map_err(|e| {
        V2Error::bad(format!(
            "input {name}: its {datatype} values do not fit the column's type {to}: {e}"
        ))
    })
}

/// `n` copies of now, in the event-time column's type.
fn arrival_times(n: usize, to: &DataType) -> Result<ArrayRef, V2Error> {
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as i64;
    let array: ArrayRef = Arc::new(Int64Array::from(vec![now_us; n]));
    if to == &DataType::Int64 {
        return Ok(array);
    }
    arrow_cast::cast(&array, to)
        .map_err(|e| V2Error::internal(format!("the arrival time as {to}: {e}")))
}

/// The tensor of one reply column: floats as themselves (nulls NaN),
/// integers as INT64/INT32 (nulls 0), booleans, text and dictionaries of
/// text as BYTES, timestamps as INT64 microseconds.
pub fn tensor_of(name: &str, column: &ArrayRef) -> Output {
    let n = column.len();
    let values = match column.data_type() {
        DataType::Float32 => {
            let a = column.as_primitive::<Float32Type>();
            Values::F32(
                (0..n)
                    .map(|i| if a.is_null(i) { f32::NAN } else { a.value(i) })
                    .collect(),
            )
        }
        DataType::Float64 => {
            let a = column.as_primitive::<Float64Type>();
            Values::F64(
                (0..n)
                    .map(|i| if a.is_null(i) { f64::NAN } else { a.value(i) })
                    .collect(),
            )
        }
        DataType::Int32 => {
            let a = column.as_primitive::<Int32Type>();
            Values::I32((0..n).map(|i| a.value(i)).collect())
        }
        DataType::Boolean => {
            let a = column.as_boolean();
            Values::Bool((0..n).map(|i| a.is_valid(i) && a.value(i)).collect())
        }
        t if t.is_integer() || matches!(t, DataType::Timestamp(..)) => {
            let a = arrow_cast::cast(column, &DataType::Int64).expect("integers fit int64");
            let a = a.as_primitive::<Int64Type>();
            Values::I64((0..n).map(|i| a.value(i)).collect())
        }
        _ => {
            let text = arrow_cast::cast(column, &DataType::Utf8)
                .unwrap_or_else(|_| Arc::new(StringArray::from(vec![""; n])));
            let text = text.as_string::<i32>();
            Values::Bytes(
                (0..n)
                    .map(|i| {
                        if text.is_null(i) {
                            Vec::new()
                        } else {
                            text.value(i).as_bytes().to_vec()
                        }
                    })
                    .collect(),
            )
        }
    };
    Output {
        name: name.to_string(),
        shape: vec![n as i64],
        values,
    }
}

/// The reply's tensors: those `requested` (any of the reply's columns),
/// or by default `score` and each shadow's `score_NAME`.
pub fn outputs(reply: &Reply, requested: &[String]) -> Result<Vec<Output>, V2Error> {
    let schema = reply.batch.schema();
    let defaults;
    let names: &[String] = if requested.is_empty() {
        defaults = default_outputs(&schema);
        &defaults
    } else {
        requested
    };
    if names.is_empty() {
        return Err(V2Error::bad(format!(
            "the pipeline has no model, so no score: name the outputs wanted, of [{}]",
            column_names(&schema)
        )));
    }
    names
        .iter()
        .map(|name| match reply.column(name) {
            Some(column) => Ok(tensor_of(name, &column)),
            None => Err(V2Error::bad(format!(
                "output {name}: no such output; the reply has [{}]",
                column_names(&schema)
            ))),
        })
        .collect()
}

/// `score` and each shadow's `score_NAME`, in the reply's order.
pub fn default_outputs(schema: &arrow_schema::Schema) -> Vec<String> {
    schema
        .fields()
        .iter()
        .map(|f| f.name())
        .filter(|n| *n == "score" || n.starts_with("score_"))
        .cloned()
        .collect()
}

/// The version of the model that scored the reply (its `model_version`
/// column), empty without a model.
pub fn model_version(reply: &Reply) -> String {
    let Some(column) = reply.column("model_version").filter(|c| !c.is_empty()) else {
        return String::new();
    };
    // A dictionary of the versions (as the scorers write it), else text.
    if let Some(d) = column.as_any_dictionary_opt() {
        let key = d.normalized_keys()[0];
        if let Some(values) = d.values().as_string_opt::<i32>() {
            return values.value(key).to_string();
        }
    }
    arrow_cast::display::array_value_to_string(&column, 0).unwrap_or_default()
}

#[cfg(test)]
mod tests;

//! One immutable snapshot of a table: its output columns with rows
//! grouped by key (each key's versions in increasing `valid_from`), the
//! key index, and the content hash that names it.
//!
//! A snapshot never changes once built: a reload or an upsert builds a
//! new one and the operator swaps it in between two batches, so no batch
//! joins half a table.

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, RecordBatch, UInt32Array};
use arrow_schema::{DataType, Field, FieldRef};
use sha2::{Digest, Sha256};

use super::index::{Index, Slot, Tags, PREFETCH_AHEAD};
use super::keys::{EventKeys, KeyArray};
use super::spec::{EnrichError, EnrichSpec};
use crate::operators::features::columns::{event_times_us, is_event_time_type};

/// A lookup that found no row.
pub(super) const MISSING: u32 = u32::MAX;

/// Rows a table may hold (row numbers are u32, one kept for [`MISSING`]).
pub const TABLE_ROWS_MAX: usize = u32::MAX as usize - 1;

/// What a table is made of before it is indexed.
pub(super) struct Parts {
    pub keys: KeyArray,
    pub valid_from: Option<Vec<i64>>,
    pub fields: Vec<FieldRef>,
    pub columns: Vec<ArrayRef>,
}

/// One immutable snapshot of a table.
pub struct Table {
    version: Arc<str>,
    origin: Arc<str>,
    fields: Vec<FieldRef>,
    columns: Vec<ArrayRef>,
    keys: KeyArray,
    valid_from: Option<Vec<i64>>,
    index: Index,
    bytes: usize,
}

/// How rows of one key are treated while building.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Build {
    /// A file: one row per key (per key and valid_from), versions in
    /// increasing valid_from order; anything else is refused.
    Strict,
    /// An upsert over a snapshot: later rows replace earlier ones of the
    /// same key (and valid_from).
    LaterWins,
}

impl Table {
    /// Indexes `parts`: rows grouped by key (each key's rows in
    /// valid_from order), checked or merged per `build`.
    pub(super) fn build(
        table: &str,
        version: Arc<str>,
        parts: Parts,
        build: Build,
        bytes_max: usize,
    ) -> Result<Self, EnrichError> {
        let n = parts.keys.len();
        if n > TABLE_ROWS_MAX {
            return Err(EnrichError::TooManyRows {
                table: table.to_string(),
                max: TABLE_ROWS_MAX as u64,
            });
        }
        let mut index = Index::new(
            if parts.keys.is_int() {
                Tags::Int
            } else {
                Tags::Hash
            },
            1024.min(n),
        );
        // Group rows by key, in order of first appearance.
        let mut group_of_row: Vec<u32> = Vec::with_capacity(n);
        let mut first_row: Vec<u32> = Vec::new();
        let mut counts: Vec<u32> = Vec::new();
        for row in 0..n {
            let (at, new) = match &parts.keys {
                KeyArray::Int(a) => index.entry(Index::int_tag(a.value(row)), |_| true),
                KeyArray::Text(a) => {
                    let key = a.value(row).as_bytes();
                    let tag = index.text_tag(key);
                    index.entry(tag, |s| {
                        a.value(first_row[s.start as usize] as usize).as_bytes() == key
                    })
                }
            };
            let slot = index.slot_mut(at);
            if new {
                slot.start = counts.len() as u32;
                first_row.push(row as u32);
                counts.push(0);
            }
            let g = slot.start as usize;
            counts[g] += 1;
            group_of_row.push(g as u32);
        }
        let groups = counts.len();
        let mut offsets = Vec::with_capacity(groups + 1);
        let mut total = 0usize;
        for &c in &counts {
            offsets.push(total);
            total += c as usize;
        }
        offsets.push(total);
        let mut fill = offsets.clone();
        let mut order = vec![0u32; n];
        for (row, &g) in group_of_row.iter().enumerate() {
            order[fill[g as usize]] = row as u32;
            fill[g as usize] += 1;
        }
        drop(group_of_row);
        let mut kept: Vec<u32> = Vec::with_capacity(n);
        let mut new_start = vec![0u32; groups];
        let mut new_len = vec![0u32; groups];
        let show = |row: u32| parts.keys.show(row as usize);
        for g in 0..groups {
            let rows = &mut order[offsets[g]..offsets[g + 1]];
            new_start[g] = kept.len() as u32;
            match (&parts.valid_from, build) {
                (None, Build::Strict) => {
                    if rows.len() > 1 {
                        return Err(EnrichError::Duplicate {
                            table: table.to_string(),
                            first: rows[0] as u64 + 1,
                            row: rows[1] as u64 + 1,
                            key: show(rows[0]),
                            at: String::new(),
                            per: "",
                        });
                    }
                    kept.push(rows[0]);
                }
                (None, Build::LaterWins) => kept.push(*rows.last().expect("a group has rows")),
                (Some(vf), Build::Strict) => {
                    for w in rows.windows(2) {
                        let (a, b) = (vf[w[0] as usize], vf[w[1] as usize]);
                        if b == a {
                            return Err(EnrichError::Duplicate {
                                table: table.to_string(),
                                first: w[0] as u64 + 1,
                                row: w[1] as u64 + 1,
                                key: show(w[0]),
                                at: format!(" at valid_from {a}"),
                                per: " and valid_from",
                            });
                        }
                        if b < a {
                            return Err(EnrichError::NotMonotone {
                                table: table.to_string(),
                                row: w[1] as u64 + 1,
                                key: show(w[1]),
                                found: b,
                                previous: a,
                                previous_row: w[0] as u64 + 1,
                            });
                        }
                    }
                    kept.extend_from_slice(rows);
                }
                (Some(vf), Build::LaterWins) => {
                    rows.sort_unstable_by_key(|&r| (vf[r as usize], r));
                    for (i, &r) in rows.iter().enumerate() {
                        let replaced = rows
                            .get(i + 1)
                            .is_some_and(|&next| vf[next as usize] == vf[r as usize]);
                        if !replaced {
                            kept.push(r);
                        }
                    }
                }
            }
            new_len[g] = kept.len() as u32 - new_start[g];
        }
        for s in index.used_slots_mut() {
            let g = s.start as usize;
            s.start = new_start[g];
            s.len = new_len[g];
        }
        let take = UInt32Array::from(kept);
        let columns: Vec<ArrayRef> = parts
            .columns
            .iter()
            .map(|c| arrow_select::take::take(c, &take, None).expect("rows in range"))
            .collect();
        let keys = parts.keys.take(&take);
        let valid_from = parts.valid_from.map(|vf| {
            take.values()
                .iter()
                .map(|&r| vf[r as usize])
                .collect::<Vec<i64>>()
        });
        let bytes = columns
            .iter()
            .map(|c| c.get_array_memory_size())
            .sum::<usize>()
            + keys.bytes()
            + valid_from.as_ref().map_or(0, |v| v.len() * 8)
            + index.bytes();
        if bytes > bytes_max {
            return Err(too_big(table, bytes, keys.len() as u64, bytes_max));
        }
        Ok(Self {
            version,
            origin: Arc::from(table),
            fields: parts.fields,
            columns,
            keys,
            valid_from,
            index,
            bytes,
        })
    }

    /// A new snapshot: this one with `batch`'s rows upserted (a key's row
    /// replaced, or with valid_from a version added or replaced).
    pub fn upsert(&self, spec: &EnrichSpec, batch: &RecordBatch) -> Result<Self, EnrichError> {
        let table = self.origin.to_string();
        let error = |column: &str, reason: String| EnrichError::Upsert {
            table: table.clone(),
            column: column.to_string(),
            reason,
        };
        let schema = batch.schema();
        let expected: Vec<&str> = std::iter::once(spec.key.as_str())
            .chain(spec.valid_from.as_deref())
            .chain(self.fields.iter().map(|f| f.name().as_str()))
            .collect();
        if let Some(extra) = schema
            .fields()
            .iter()
            .find(|f| !expected.contains(&f.name().as_str()))
        {
            return Err(error(
                extra.name(),
                format!("not one of the table's columns ({})", expected.join(", ")),
            ));
        }
        let get = |name: &str| {
            batch.column_by_name(name).cloned().ok_or_else(|| {
                error(
                    name,
                    format!(
                        "missing; an upsert carries every column: {}",
                        expected.join(", ")
                    ),
                )
            })
        };
        let keys = get(&spec.key)?;
        let keys = KeyArray::of(&keys)
            .filter(|k| k.is_int() == self.keys.is_int())
            .ok_or_else(|| {
                error(
                    &spec.key,
                    format!(
                        "is {}; expected {}",
                        keys.data_type(),
                        if self.keys.is_int() {
                            "an integer"
                        } else {
                            "a string"
                        }
                    ),
                )
            })?;
        if let Some(row) = (0..keys.len()).find(|&r| keys.is_null(r)) {
            return Err(error(&spec.key, format!("row {} is null", row + 1)));
        }
        let valid_from = match (&spec.valid_from, &self.valid_from) {
            (Some(name), Some(old)) => {
                let array = get(name)?;
                if !is_event_time_type(array.data_type()) {
                    return Err(error(
                        name,
                        format!(
                            "is {}; expected int64 microseconds or a timestamp",
                            array.data_type()
                        ),
                    ));
                }
                let times = event_times_us(&array);
                if let Some(row) = times.iter().position(Option::is_none) {
                    return Err(error(name, format!("row {} is null", row + 1)));
                }
                let mut all = old.clone();
                all.extend(times.into_iter().map(|t| t.expect("checked")));
                Some(all)
            }
            _ => None,
        };
        let cast = arrow_cast::CastOptions {
            safe: false,
            ..Default::default()
        };
        let mut columns = Vec::with_capacity(self.fields.len());
        for (field, old) in self.fields.iter().zip(&self.columns) {
            let new = get(field.name())?;
            let new =
                arrow_cast::cast_with_options(&new, field.data_type(), &cast).map_err(|e| {
                    error(
                        field.name(),
                        format!("does not cast to {}: {e}", field.data_type()),
                    )
                })?;
            columns.push(
                arrow_select::concat::concat(&[old.as_ref(), new.as_ref()]).expect("same type"),
            );
        }
        let mut hash = Sha256::new();
        hash.update(self.version.as_bytes());
        hash.update(ipc_bytes(batch));
        let version = Arc::from(format!("sha256:{}", hex(&hash.finalize())));
        let parts = Parts {
            keys: self.keys.concat(&keys),
            valid_from,
            fields: self.fields.clone(),
            columns,
        };
        Self::build(
            &table,
            version,
            parts,
            Build::LaterWins,
            spec.table_bytes_max,
        )
    }

    /// The row each event joins ([`MISSING`] for none) into `out`: the
    /// key's row, or with valid_from the version with the greatest
    /// `valid_from <= t` (`times[i]`; `i64::MIN` joins nothing).
    pub(super) fn lookup(&self, keys: &EventKeys, times: Option<&[i64]>, out: &mut Vec<u32>) {
        out.clear();
        match keys {
            EventKeys::Keys(k) => self.lookup_keys(k, times, out),
            EventKeys::Dictionary {
                codes,
                nulls,
                values,
            } => {
                // Each distinct value once, then every row from its value.
                let mut slots = Vec::new();
                self.find_slots(values, &mut slots);
                out.extend(codes.iter().enumerate().map(|(row, &code)| {
                    if nulls.is_some_and(|n| n.is_null(row)) {
                        return MISSING;
                    }
                    self.version_at(slots[code], times.map(|t| t[row]))
                }));
            }
        }
    }

    fn lookup_keys(&self, keys: &KeyArray, times: Option<&[i64]>, out: &mut Vec<u32>) {
        let mut slots = Vec::new();
        self.find_slots(keys, &mut slots);
        out.extend(
            slots
                .iter()
                .enumerate()
                .map(|(row, &s)| self.version_at(s, times.map(|t| t[row]))),
        );
    }

    /// Each key's slot, `(start, len)` (`len` 0: no such key, or null).
    fn find_slots(&self, keys: &KeyArray, out: &mut Vec<(u32, u32)>) {
        let n = keys.len();
        out.clear();
        out.reserve(n);
        let hit = |s: Option<&Slot>| s.map_or((0, 0), |s| (s.start, s.len));
        match keys {
            KeyArray::Int(a) => {
                let values = a.values();
                let home = |i: usize| self.index.home(Index::int_tag(values[i]));
                for i in 0..n.min(PREFETCH_AHEAD) {
                    self.index.prefetch(home(i));
                }
                for i in 0..n {
                    if i + PREFETCH_AHEAD < n {
                        self.index.prefetch(home(i + PREFETCH_AHEAD));
                    }
                    if a.is_null(i) {
                        out.push((0, 0));
                        continue;
                    }
                    let tag = Index::int_tag(values[i]);
                    out.push(hit(self.index.find(tag, home(i), |_| true)));
                }
            }
            KeyArray::Text(a) => {
                let KeyArray::Text(table_keys) = &self.keys else {
                    out.resize(n, (0, 0));
                    return;
                };
                // Hash each key once; probe once its slot has been prefetched.
                let tags: Vec<u64> = (0..n)
                    .map(|i| self.index.text_tag(a.value(i).as_bytes()))
                    .collect();
                for &t in tags.iter().take(PREFETCH_AHEAD) {
                    self.index.prefetch(self.index.home(t));
                }
                for i in 0..n {
                    if let Some(&t) = tags.get(i + PREFETCH_AHEAD) {
                        self.index.prefetch(self.index.home(t));
                    }
                    if a.is_null(i) {
                        out.push((0, 0));
                        continue;
                    }
                    let key = a.value(i).as_bytes();
                    let found = self.index.find(tags[i], self.index.home(tags[i]), |s| {
                        table_keys.value(s.start as usize).as_bytes() == key
                    });
                    out.push(hit(found));
                }
            }
        }
    }

    /// The row of a key's slot valid at `t`.
    #[inline]
    fn version_at(&self, (start, len): (u32, u32), t: Option<i64>) -> u32 {
        if len == 0 {
            return MISSING;
        }
        match (&self.valid_from, t) {
            (Some(vf), Some(t)) => {
                let versions = &vf[start as usize..(start + len) as usize];
                match versions.partition_point(|&v| v <= t) {
                    0 => MISSING,
                    k => start + k as u32 - 1,
                }
            }
            _ => start,
        }
    }

    /// "sha256:…" of the file's bytes (and, after upserts, of each upsert).
    pub fn version(&self) -> &Arc<str> {
        &self.version
    }

    /// The columns appended to each event, in order.
    pub fn fields(&self) -> &[FieldRef] {
        &self.fields
    }

    pub fn columns(&self) -> &[ArrayRef] {
        &self.columns
    }

    pub(super) fn key_is_int(&self) -> bool {
        self.keys.is_int()
    }

    pub fn rows(&self) -> usize {
        self.keys.len()
    }

    pub fn keys(&self) -> usize {
        self.index.keys()
    }

    /// Bytes held: columns, keys, valid_from and the index.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

pub(super) fn too_big(table: &str, bytes: usize, rows: u64, bytes_max: usize) -> EnrichError {
    EnrichError::TooBig {
        table: table.to_string(),
        bytes: bytes as u64,
        rows,
        limit_mb: (bytes_max >> 20) as u64,
    }
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A batch as Arrow IPC stream bytes (what an upsert's version hashes).
fn ipc_bytes(batch: &RecordBatch) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = arrow_ipc::writer::StreamWriter::try_new(&mut out, &batch.schema())
        .expect("writing to memory");
    w.write(batch).expect("writing to memory");
    w.finish().expect("writing to memory");
    drop(w);
    out
}

/// The field of the `<name>_version` column.
pub(super) fn version_field(name: &str) -> Field {
    Field::new(
        format!("{name}_version"),
        DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
        false,
    )
}

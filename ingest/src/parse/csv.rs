//! CSV: RFC 4180 quoting, `\n` or `\r\n` line ends, a header or none.
//!
//! The hot path reads unquoted fields straight from the receive buffer into
//! the column builders; quoted fields are unescaped into one reused scratch
//! buffer. A row whose field count or values do not fit the schema becomes
//! a dead letter naming the line, the column and what was expected.

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use super::columns::{Columns, Inferred};
use super::number::{field_simd_available, parse_f32_prefix};
use super::{show, DeadLetters, Parsed, RecordParser};

/// What the first line of a stream is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CsvHeader {
    /// No header: fields bind to the schema's columns by position.
    Absent,
    /// A header already read and checked by the caller: skipped.
    Skip,
    /// A header that must name the schema's columns, in order; any other
    /// header ends the stream (its rows would bind to the wrong columns).
    Check,
}

pub(crate) struct CsvParser {
    columns: Columns,
    delimiter: u8,
    header_pending: bool,
    check_header: bool,
    line: u64,
    scratch: Vec<u8>,
    record_bytes_max: usize,
    /// Positions of delimiters, line ends, quotes and CRs in the slice being
    /// parsed, found ahead of the rows in windows (stage one); rows whose
    /// fields all end where they should are parsed from it (stage two).
    separators: Vec<u32>,
    indexed_to: usize,
    /// Whether plain decimal fields take the SSE4.1 field parser.
    field_simd: bool,
}

/// Bytes of a slice indexed at a time, ahead of the rows parsed from it.
const INDEX_WINDOW: usize = 64 << 10;

/// Appends to `out` the position of every delimiter, `\n`, `"` and `\r` in
/// `data[from..to]`.
fn index_separators(data: &[u8], from: usize, to: usize, delimiter: u8, out: &mut Vec<u32>) {
    out.reserve(to - from);
    let mut i = from;
    #[cfg(target_arch = "x86_64")]
    if avx512bw_available() {
        // SAFETY: the CPU has AVX-512BW (checked just above).
        i = unsafe { index_separators_avx512(data, from, to, delimiter, out) };
    }
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of x86_64; loads read data[i..i + 16] with
        // i + 16 <= to <= data.len().
        unsafe {
            let d = _mm_set1_epi8(delimiter as i8);
            let nl = _mm_set1_epi8(b'\n' as i8);
            let q = _mm_set1_epi8(b'"' as i8);
            let cr = _mm_set1_epi8(b'\r' as i8);
            while i + 16 <= to {
                let v = _mm_loadu_si128(data.as_ptr().add(i) as *const __m128i);
                let hits = _mm_or_si128(
                    _mm_or_si128(_mm_cmpeq_epi8(v, d), _mm_cmpeq_epi8(v, nl)),
                    _mm_or_si128(_mm_cmpeq_epi8(v, q), _mm_cmpeq_epi8(v, cr)),
                );
                let mut mask = _mm_movemask_epi8(hits) as u32;
                while mask != 0 {
                    out.push(i as u32 + mask.trailing_zeros());
                    mask &= mask - 1;
                }
                i += 16;
            }
        }
    }
    while i < to {
        let c = data[i];
        if c == delimiter || c == b'\n' || c == b'"' || c == b'\r' {
            out.push(i as u32);
        }
        i += 1;
    }
}

/// The field `data[start..end]` as f32 when a fast path parses it whole;
/// `None` sends it to the column's own parser (which takes anything else).
#[inline(always)]
fn field_f32<const SIMD: bool>(data: &[u8], start: usize, end: usize) -> Option<f32> {
    #[cfg(target_arch = "x86_64")]
    if SIMD {
        // SAFETY: SIMD is true only inside `indexed_rows_sse41`, compiled
        // with SSSE3 and SSE4.1 and called where the CPU has them.
        if let Some(v) = unsafe { super::number::parse_f32_field_sse41(data, start, end) } {
            return Some(v);
        }
    }
    match parse_f32_prefix(data, start) {
        Some((v, e)) if e == end => Some(v),
        _ => None,
    }
}

/// Whether this CPU has AVX-512BW (std caches the answer).
#[cfg(target_arch = "x86_64")]
fn avx512bw_available() -> bool {
    std::arch::is_x86_feature_detected!("avx512bw")
}

/// [`index_separators`] 64 bytes at a time: one mask per 64 bytes, its
/// positions written 8 at a time whatever the count (the slots past the
/// count are overwritten next), so a row's separators cost no branch each.
/// Returns where it stopped (the caller indexes the last < 64 bytes).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512bw,popcnt,bmi1")]
unsafe fn index_separators_avx512(
    data: &[u8],
    from: usize,
    to: usize,
    delimiter: u8,
    out: &mut Vec<u32>,
) -> usize {
    use std::arch::x86_64::*;
    let d = _mm512_set1_epi8(delimiter as i8);
    let nl = _mm512_set1_epi8(b'\n' as i8);
    let q = _mm512_set1_epi8(b'"' as i8);
    let cr = _mm512_set1_epi8(b'\r' as i8);
    let mut i = from;
    let mut n = out.len();
    // Writes run up to 8 slots past the last position: keep that room.
    out.reserve(to - from + 8);
    let base = out.as_mut_ptr();
    while i + 64 <= to {
        // SAFETY: data[i..i + 64] is in bounds (i + 64 <= to <= data.len()).
        let v = _mm512_loadu_si512(data.as_ptr().add(i) as *const _);
        let mut mask = _mm512_cmpeq_epi8_mask(v, d)
            | _mm512_cmpeq_epi8_mask(v, nl)
            | _mm512_cmpeq_epi8_mask(v, q)
            | _mm512_cmpeq_epi8_mask(v, cr);
        let count = mask.count_ones() as usize;
        let at = i as u32;
        // SAFETY: n + count <= out.len() at entry + (to - from), and the
        // writes reach at most 8 slots past n + count rounded up to 8,
        // within the capacity reserved above (to - from + 8).
        let mut w = base.add(n);
        loop {
            for k in 0..8 {
                *w.add(k) = at + mask.trailing_zeros();
                mask &= mask.wrapping_sub(1);
            }
            w = w.add(8);
            if mask == 0 {
                break;
            }
        }
        n += count;
        i += 64;
    }
    // SAFETY: slots below n were written above (positions, in order).
    out.set_len(n);
    i
}

enum Row {
    /// Parsed; the next record starts at `.0`, `.1` lines on.
    Done(usize, u64),
    /// The record runs past the end of the data.
    Incomplete,
    Bad(String),
}

/// A record split into unescaped fields (slow path: headers, samples, the
/// extent of a bad row). `None` when the record runs past the data.
pub(crate) struct Record {
    pub fields: Vec<Vec<u8>>,
    /// Offset of the next record.
    pub next: usize,
    /// End of this record's bytes, before its line end.
    pub end: usize,
    pub lines: u64,
    pub unterminated_quote: bool,
}

pub(crate) fn split_record(
    data: &[u8],
    start: usize,
    delimiter: u8,
    at_end: bool,
) -> Option<Record> {
    let mut fields = Vec::new();
    let mut field = Vec::new();
    let mut lines = 1;
    let mut p = start;
    let mut in_quotes = false;
    let mut field_start = true;
    while p < data.len() {
        let c = data[p];
        if in_quotes {
            if c == b'"' {
                if data.get(p + 1) == Some(&b'"') {
                    field.push(b'"');
                    p += 2;
                    continue;
                }
                if p + 1 == data.len() && !at_end {
                    return None;
                }
                in_quotes = false;
            } else {
                lines += (c == b'\n') as u64;
                field.push(c);
            }
            p += 1;
            continue;
        }
        match c {
            b'"' if field_start => in_quotes = true,
            b'\n' => {
                fields.push(field);
                return Some(Record {
                    fields,
                    next: p + 1,
                    end: p,
                    lines,
                    unterminated_quote: false,
                });
            }
            b'\r' if data.get(p + 1) == Some(&b'\n') => {
                fields.push(field);
                return Some(Record {
                    fields,
                    next: p + 2,
                    end: p,
                    lines,
                    unterminated_quote: false,
                });
            }
            b'\r' if p + 1 == data.len() && !at_end => return None,
            c if c == delimiter => {
                fields.push(std::mem::take(&mut field));
                field_start = true;
                p += 1;
                continue;
            }
            c => field.push(c),
        }
        field_start = false;
        p += 1;
    }
    if !at_end {
        return None;
    }
    fields.push(field);
    Some(Record {
        fields,
        next: data.len(),
        end: data.len(),
        lines,
        unterminated_quote: in_quotes,
    })
}

impl CsvParser {
    /// `schema` holds only supported types (checked by the caller).
    pub fn new(
        schema: SchemaRef,
        header: CsvHeader,
        delimiter: u8,
        capacity: usize,
        record_bytes_max: usize,
    ) -> Self {
        Self {
            columns: Columns::new(schema, capacity),
            delimiter,
            header_pending: header != CsvHeader::Absent,
            check_header: header == CsvHeader::Check,
            line: 1,
            scratch: Vec::new(),
            record_bytes_max,
            separators: Vec::new(),
            indexed_to: 0,
            field_simd: field_simd_available(),
        }
    }

    /// Stage two: parses rows from `p` while every field ends at the
    /// separator the index says it should (a delimiter, then `\n` after the
    /// last). Stops at the first row that needs the careful path (quotes,
    /// CRs, wrong field counts, bad values, a blank line) or runs past the
    /// data; returns where it stopped and the rows parsed.
    fn indexed_rows(&mut self, data: &[u8], p: usize, rows_max: usize) -> (usize, usize) {
        #[cfg(target_arch = "x86_64")]
        if self.field_simd {
            // SAFETY: `field_simd` is set only where the CPU has SSSE3 and
            // SSE4.1.
            return unsafe { self.indexed_rows_sse41(data, p, rows_max) };
        }
        self.indexed_rows_with::<false>(data, p, rows_max)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "ssse3,sse4.1")]
    unsafe fn indexed_rows_sse41(
        &mut self,
        data: &[u8],
        p: usize,
        rows_max: usize,
    ) -> (usize, usize) {
        self.indexed_rows_with::<true>(data, p, rows_max)
    }

    /// [`Self::indexed_rows`], with plain decimals through
    /// [`parse_f32_field_sse41`](super::number::parse_f32_field_sse41) when
    /// `SIMD` (compiled only into a function with SSSE3 and SSE4.1 enabled).
    #[inline(always)]
    fn indexed_rows_with<const SIMD: bool>(
        &mut self,
        data: &[u8],
        mut p: usize,
        rows_max: usize,
    ) -> (usize, usize) {
        let n = self.columns.columns.len();
        let mut k = self.separators.partition_point(|&s| (s as usize) < p);
        let mut rows = 0;
        while rows < rows_max {
            if k + n > self.separators.len() {
                if self.indexed_to == data.len() {
                    break;
                }
                let to = (self.indexed_to + INDEX_WINDOW).min(data.len());
                index_separators(
                    data,
                    self.indexed_to,
                    to,
                    self.delimiter,
                    &mut self.separators,
                );
                self.indexed_to = to;
                k = self.separators.partition_point(|&s| (s as usize) < p);
                continue;
            }
            let mut start = p;
            let mut ok = true;
            let ends = &self.separators[k..k + n];
            let delimiter = self.delimiter;
            for (j, (column, &end)) in self.columns.columns.iter_mut().zip(ends).enumerate() {
                let end = end as usize;
                let expected = if j + 1 == n { b'\n' } else { delimiter };
                if data[end] != expected {
                    ok = false;
                    break;
                }
                let parsed = column.try_push_f32(|| field_f32::<SIMD>(data, start, end));
                if !parsed && column.push_text(&data[start..end]).is_err() {
                    ok = false;
                    break;
                }
                start = end + 1;
            }
            if !ok || start - p > self.record_bytes_max {
                self.columns.abandon_row();
                break;
            }
            self.columns.commit_row();
            rows += 1;
            self.line += 1;
            k += n;
            p = start;
        }
        (p, rows)
    }

    #[inline]
    fn parse_row(&mut self, data: &[u8], start: usize, at_end: bool) -> Row {
        let delimiter = self.delimiter;
        let n = self.columns.columns.len();
        let mut p = start;
        let mut lines = 1;
        for j in 0..n {
            let end = 'field: {
                if data.get(p) == Some(&b'"') {
                    match self.quoted_field(data, p, j, at_end, &mut lines) {
                        Ok(end) => break 'field end,
                        Err(row) => return row,
                    }
                }
                let column = &mut self.columns.columns[j];
                // Hot path: a number straight from the buffer, no second scan.
                if column.is_f32() {
                    if let Some((v, e)) = parse_f32_prefix(data, p) {
                        let terminated = match data.get(e) {
                            Some(&c) => c == delimiter || c == b'\n' || c == b'\r',
                            None => at_end,
                        };
                        if terminated {
                            column.push_f32_value(v);
                            break 'field e;
                        }
                    }
                }
                let mut e = p;
                while e < data.len() {
                    let c = data[e];
                    if c == delimiter || c == b'\n' || c == b'\r' {
                        break;
                    }
                    e += 1;
                }
                if e == data.len() && !at_end {
                    return Row::Incomplete;
                }
                let field = &data[p..e];
                if let Err(why) = column.push_text(field) {
                    return Row::Bad(format!(
                        "column '{}': {} {why}",
                        self.columns.schema.field(j).name(),
                        show(field)
                    ));
                }
                e
            };
            // `end` is the field's terminator.
            match data.get(end) {
                Some(&c) if c == delimiter => {
                    if j + 1 == n {
                        return Row::Bad(format!(
                            "more than {n} fields; expected {n}, one per column"
                        ));
                    }
                    p = end + 1;
                }
                Some(b'\n') | Some(b'\r') | None if j + 1 < n => {
                    return Row::Bad(format!("{} fields; expected {n}, one per column", j + 1));
                }
                Some(b'\n') => return Row::Done(end + 1, lines),
                Some(b'\r') => {
                    return match data.get(end + 1) {
                        Some(b'\n') => Row::Done(end + 2, lines),
                        None if !at_end => Row::Incomplete,
                        _ => Row::Done(end + 1, lines),
                    }
                }
                None => return Row::Done(end, lines),
                Some(_) => {
                    return Row::Bad(format!(
                        "column '{}': text after the closing quote",
                        self.columns.schema.field(j).name()
                    ))
                }
            }
        }
        unreachable!("a schema has at least one column")
    }

    /// A quoted field at `p`: unescaped into the scratch buffer and pushed.
    /// Returns the offset after the closing quote.
    #[cold]
    fn quoted_field(
        &mut self,
        data: &[u8],
        p: usize,
        j: usize,
        at_end: bool,
        lines: &mut u64,
    ) -> Result<usize, Row> {
        self.scratch.clear();
        let mut q = p + 1;
        loop {
            let Some(k) = memchr::memchr(b'"', &data[q..]).map(|k| q + k) else {
                return Err(if at_end {
                    Row::Bad(format!(
                        "column '{}': a quoted field is never closed",
                        self.columns.schema.field(j).name()
                    ))
                } else {
                    Row::Incomplete
                });
            };
            *lines += memchr::memchr_iter(b'\n', &data[q..k]).count() as u64;
            self.scratch.extend_from_slice(&data[q..k]);
            match data.get(k + 1) {
                Some(b'"') => {
                    self.scratch.push(b'"');
                    q = k + 2;
                }
                None if !at_end => return Err(Row::Incomplete),
                _ => {
                    if let Err(why) = self.columns.columns[j].push_text(&self.scratch) {
                        return Err(Row::Bad(format!(
                            "column '{}': {} {why}",
                            self.columns.schema.field(j).name(),
                            show(&self.scratch)
                        )));
                    }
                    return Ok(k + 1);
                }
            }
        }
    }

    fn parse_header(&mut self, record: &Record) -> Result<(), String> {
        if !self.check_header {
            return Ok(());
        }
        let names: Vec<String> = record
            .fields
            .iter()
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect();
        let expected: Vec<&String> = self
            .columns
            .schema
            .fields()
            .iter()
            .map(|f| f.name())
            .collect();
        if names.iter().collect::<Vec<_>>() != expected {
            return Err(format!(
                "the header names columns {names:?}; expected {expected:?}"
            ));
        }
        Ok(())
    }
}

impl RecordParser for CsvParser {
    fn parse(
        &mut self,
        data: &[u8],
        offset: u64,
        records_max: usize,
        at_end: bool,
        dead: &mut DeadLetters,
    ) -> Parsed {
        let mut p = 0;
        let mut records = 0;
        self.separators.clear();
        self.indexed_to = 0;
        while records < records_max && p < data.len() {
            if !self.header_pending {
                let (next, rows) = self.indexed_rows(data, p, records_max - records);
                records += rows;
                p = next;
                if records == records_max || p == data.len() {
                    break;
                }
            }
            if self.header_pending {
                let Some(record) = split_record(data, p, self.delimiter, at_end) else {
                    break;
                };
                if let Err(reason) = self.parse_header(&record) {
                    dead.push(offset + p as u64, Some(self.line), &data[p..], reason);
                    return Parsed {
                        consumed: data.len(),
                        records: records + 1,
                        fatal: true,
                    };
                }
                self.header_pending = false;
                self.line += record.lines;
                p = record.next;
                continue;
            }
            match data[p] {
                b'\n' => {
                    p += 1;
                    self.line += 1;
                    continue;
                }
                b'\r' if data.get(p + 1) == Some(&b'\n') => {
                    p += 2;
                    self.line += 1;
                    continue;
                }
                _ => {}
            }
            let row = match self.parse_row(data, p, at_end) {
                Row::Done(next, _) if next - p > self.record_bytes_max => {
                    Row::Bad(oversized(self.record_bytes_max))
                }
                row => row,
            };
            match row {
                Row::Done(next, lines) => {
                    self.columns.commit_row();
                    records += 1;
                    p = next;
                    self.line += lines;
                }
                Row::Incomplete => {
                    self.columns.abandon_row();
                    break;
                }
                Row::Bad(reason) => {
                    self.columns.abandon_row();
                    let Some(record) = split_record(data, p, self.delimiter, at_end) else {
                        break;
                    };
                    let reason = if record.unterminated_quote {
                        "a quoted field is never closed".to_string()
                    } else {
                        reason
                    };
                    dead.push(
                        offset + p as u64,
                        Some(self.line),
                        &data[p..record.end],
                        reason,
                    );
                    records += 1;
                    p = record.next;
                    self.line += record.lines;
                }
            }
        }
        Parsed {
            consumed: p,
            records,
            fatal: false,
        }
    }

    fn take_batch(&mut self) -> RecordBatch {
        self.columns.take_batch()
    }

    fn line(&self) -> Option<u64> {
        Some(self.line)
    }

    fn set_line(&mut self, line: u64) {
        self.line = line;
    }

    fn at_rows(&self) -> bool {
        !self.header_pending
    }
}

/// The reason given for a record over the length bound.
pub(crate) fn oversized(record_bytes_max: usize) -> String {
    format!("a record longer than {record_bytes_max} bytes (the record_bytes_max bound)")
}

/// Reads a header and up to `rows_max` sample rows from the front of a
/// stream: the column names, and each column's type by inference.
pub(crate) fn sample(
    data: &[u8],
    delimiter: u8,
    rows_max: usize,
    at_end: bool,
) -> Option<(Vec<String>, Vec<Inferred>)> {
    let header = split_record(data, 0, delimiter, at_end)?;
    let names: Vec<String> = header
        .fields
        .iter()
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect();
    let mut inferred = vec![Inferred::default(); names.len()];
    let mut p = header.next;
    for _ in 0..rows_max {
        if p == data.len() {
            break;
        }
        let Some(record) = split_record(data, p, delimiter, at_end) else {
            break;
        };
        if record.fields.len() == names.len() {
            for (i, f) in inferred.iter_mut().zip(&record.fields) {
                i.observe(f);
            }
        }
        p = record.next;
    }
    Some((names, inferred))
}

#[cfg(test)]
mod tests {
    use arrow_array::RecordBatch;

    use super::{CsvHeader, CsvParser};
    use crate::parse::testing::{self, awkward_number};

    fn parse(text: &[u8], field_simd: bool) -> (Vec<RecordBatch>, Vec<(u64, String)>) {
        let mut parser = CsvParser::new(testing::floats(7), CsvHeader::Absent, b',', 64, 1 << 20);
        parser.field_simd = field_simd;
        testing::parse_all(&mut parser, text)
    }

    /// The AVX-512 and SSE2 indexes find exactly the positions a byte loop
    /// finds, from any start to any end, separators dense or sparse.
    #[test]
    fn index_finds_every_separator() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..400 {
            let len = (next() % 700) as usize;
            let density = 1 + round % 9;
            let data: Vec<u8> = (0..len)
                .map(|_| match next() % (density as u64 * 4) {
                    0 => b',',
                    1 => b'\n',
                    2 => b'"',
                    3 => b'\r',
                    r => b'0' + (r % 10) as u8,
                })
                .collect();
            let from = if len == 0 { 0 } else { (next() as usize) % len };
            let to = from + (next() as usize) % (len - from + 1);
            let mut out = vec![7u32; (next() % 3) as usize];
            let mut expected = out.clone();
            super::index_separators(&data, from, to, b',', &mut out);
            expected.extend(
                (from..to)
                    .filter(|&i| matches!(data[i], b',' | b'\n' | b'"' | b'\r'))
                    .map(|i| i as u32),
            );
            assert_eq!(out, expected, "round {round}: {from}..{to} of {len}");
        }
    }

    /// The SSE4.1 field parser changes nothing: the same rows, values bit
    /// for bit, and the same dead letters as the portable path.
    #[test]
    fn field_simd_parses_what_the_portable_path_does() {
        if !super::field_simd_available() {
            return;
        }
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut text = String::new();
        for _ in 0..20_000 {
            let row: Vec<String> = (0..7).map(|_| awkward_number(&mut state)).collect();
            text.push_str(&row.join(","));
            text.push('\n');
        }
        testing::assert_same(parse(text.as_bytes(), true), parse(text.as_bytes(), false));
    }
}

//! NDJSON: one JSON object per line, keys bound to the schema's columns by
//! name. Keys the schema does not name are skipped (whatever their value);
//! columns a line does not mention are null. A line that is not an object,
//! or whose value does not fit its column, is a dead letter.

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use super::columns::{expected, Columns, Inferred};
use super::{show, DeadLetters, Parsed, RecordParser};

/// Nesting allowed in values that are skipped; deeper is refused.
const SKIP_DEPTH_MAX: usize = 64;

pub(crate) struct NdjsonParser {
    columns: Columns,
    names: Vec<Vec<u8>>,
    /// The row in which each column last got a value.
    stamp: Vec<u64>,
    row_stamp: u64,
    line: u64,
    scratch: Vec<u8>,
    record_bytes_max: usize,
    /// Whether numbers take the SSE4.1 decimal parser.
    field_simd: bool,
}

struct Cursor<'a> {
    data: &'a [u8],
    /// `data` and whatever follows it in the receive buffer: numbers are
    /// parsed with 8-byte loads that may look past the line's end.
    tail: &'a [u8],
    p: usize,
}

impl<'a> Cursor<'a> {
    #[inline]
    fn ws(&mut self) {
        while self.p < self.data.len() && matches!(self.data[self.p], b' ' | b'\t' | b'\r') {
            self.p += 1;
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.data.get(self.p).copied()
    }

    fn expect(&mut self, c: u8, what: &str) -> Result<(), String> {
        self.ws();
        if self.peek() == Some(c) {
            self.p += 1;
            Ok(())
        } else {
            Err(format!(
                "expected {what} at byte {} of the line",
                self.p + 1
            ))
        }
    }

    /// A string's content after its opening quote: borrowed when it has no
    /// escapes, else unescaped into `scratch`.
    fn string<'s>(&mut self, scratch: &'s mut Vec<u8>) -> Result<Text<'a, 's>, String>
    where
        'a: 's,
    {
        let start = self.p;
        while self.p < self.data.len() {
            match self.data[self.p] {
                b'"' => {
                    self.p += 1;
                    return Ok(Text::Borrowed(&self.data[start..self.p - 1]));
                }
                b'\\' => break,
                _ => self.p += 1,
            }
        }
        scratch.clear();
        scratch.extend_from_slice(&self.data[start..self.p]);
        while self.p < self.data.len() {
            let c = self.data[self.p];
            self.p += 1;
            match c {
                b'"' => return Ok(Text::Scratch(scratch)),
                b'\\' => {
                    let e = self.peek().ok_or("a string ends inside an escape")?;
                    self.p += 1;
                    match e {
                        b'"' | b'\\' | b'/' => scratch.push(e),
                        b'b' => scratch.push(8),
                        b'f' => scratch.push(12),
                        b'n' => scratch.push(b'\n'),
                        b'r' => scratch.push(b'\r'),
                        b't' => scratch.push(b'\t'),
                        b'u' => {
                            let mut code = self.hex4()?;
                            if (0xD800..0xDC00).contains(&code) {
                                if self.data.get(self.p..self.p + 2) != Some(b"\\u") {
                                    return Err("a lone UTF-16 surrogate in a string".into());
                                }
                                self.p += 2;
                                let low = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&low) {
                                    return Err("a lone UTF-16 surrogate in a string".into());
                                }
                                code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                            }
                            let ch = char::from_u32(code).ok_or("an invalid \\u escape")?;
                            let mut buf = [0u8; 4];
                            scratch.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        }
                        _ => return Err(format!("an unknown escape \\{}", e as char)),
                    }
                }
                c => scratch.push(c),
            }
        }
        Err("a string is never closed".into())
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let digits = self
            .data
            .get(self.p..self.p + 4)
            .ok_or("a \\u escape is cut short")?;
        let text = std::str::from_utf8(digits).map_err(|_| "an invalid \\u escape")?;
        let code = u32::from_str_radix(text, 16).map_err(|_| "an invalid \\u escape")?;
        self.p += 4;
        Ok(code)
    }

    /// Skips any JSON value (for keys no column wants).
    fn skip_value(&mut self, scratch: &mut Vec<u8>) -> Result<(), String> {
        let mut depth = 0usize;
        loop {
            self.ws();
            match self.peek().ok_or("the line ends inside a value")? {
                b'"' => {
                    self.p += 1;
                    self.string(scratch)?;
                }
                b'{' | b'[' => {
                    depth += 1;
                    if depth > SKIP_DEPTH_MAX {
                        return Err(format!("values nest deeper than {SKIP_DEPTH_MAX}"));
                    }
                    self.p += 1;
                    continue;
                }
                b'}' | b']' if depth > 0 => {
                    depth -= 1;
                    self.p += 1;
                }
                b',' | b':' if depth > 0 => {
                    self.p += 1;
                    continue;
                }
                _ => {
                    let start = self.p;
                    while self.p < self.data.len()
                        && !matches!(
                            self.data[self.p],
                            b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b':'
                        )
                    {
                        self.p += 1;
                    }
                    if start == self.p {
                        return Err(format!("unexpected {:?}", self.data[start] as char));
                    }
                }
            }
            if depth == 0 {
                return Ok(());
            }
        }
    }
}

enum Text<'a, 's> {
    Borrowed(&'a [u8]),
    Scratch(&'s [u8]),
}

impl Text<'_, '_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Text::Borrowed(b) => b,
            Text::Scratch(b) => b,
        }
    }
}

/// A plain decimal at the front of `tail[start..]`: its value and end.
#[inline(always)]
fn number_f32(tail: &[u8], start: usize, field_simd: bool) -> Option<(f32, usize)> {
    #[cfg(target_arch = "x86_64")]
    if field_simd {
        // SAFETY: `field_simd` is set only where the CPU has SSSE3 and SSE4.1.
        if let Some(found) = unsafe { number_f32_sse41(tail, start) } {
            return Some(found);
        }
    }
    super::number::parse_f32_prefix(tail, start)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3,sse4.1")]
unsafe fn number_f32_sse41(tail: &[u8], start: usize) -> Option<(f32, usize)> {
    super::number::parse_f32_prefix_sse41(tail, start)
}

impl NdjsonParser {
    pub fn new(schema: SchemaRef, capacity: usize, record_bytes_max: usize) -> Self {
        let names = schema
            .fields()
            .iter()
            .map(|f| f.name().as_bytes().to_vec())
            .collect();
        let n = schema.fields().len();
        Self {
            columns: Columns::new(schema, capacity),
            names,
            stamp: vec![0; n],
            row_stamp: 0,
            line: 1,
            scratch: Vec::new(),
            record_bytes_max,
            field_simd: super::number::field_simd_available(),
        }
    }

    fn column_of(&self, key: &[u8], guess: usize) -> Option<usize> {
        if self.names.get(guess).is_some_and(|n| n == key) {
            return Some(guess);
        }
        self.names.iter().position(|n| n == key)
    }

    fn parse_line(&mut self, line: &[u8], tail: &[u8]) -> Result<(), String> {
        self.row_stamp += 1;
        let mut cur = Cursor {
            data: line,
            tail,
            p: 0,
        };
        cur.expect(b'{', "'{' (each line must be one JSON object)")?;
        let mut scratch = std::mem::take(&mut self.scratch);
        let result = self.parse_members(&mut cur, &mut scratch);
        self.scratch = scratch;
        result?;
        cur.ws();
        if cur.p != line.len() {
            return Err(format!(
                "text after the object at byte {} of the line",
                cur.p + 1
            ));
        }
        for (j, column) in self.columns.columns.iter_mut().enumerate() {
            if self.stamp[j] != self.row_stamp {
                column.push_null();
            }
        }
        Ok(())
    }

    fn parse_members(&mut self, cur: &mut Cursor, scratch: &mut Vec<u8>) -> Result<(), String> {
        cur.ws();
        if cur.peek() == Some(b'}') {
            cur.p += 1;
            return Ok(());
        }
        let mut guess = 0;
        loop {
            cur.expect(b'"', "a key in quotes")?;
            let key = cur.string(scratch)?;
            let column = self.column_of(key.bytes(), guess);
            if let Some(j) = column {
                if self.stamp[j] == self.row_stamp {
                    return Err(format!("key {} appears twice", show(key.bytes())));
                }
            }
            cur.expect(b':', "':' after a key")?;
            cur.ws();
            match column {
                None => cur.skip_value(scratch)?,
                Some(j) => {
                    guess = j + 1;
                    self.stamp[j] = self.row_stamp;
                    self.value(cur, j, scratch)?;
                }
            }
            cur.ws();
            match cur.peek() {
                Some(b',') => cur.p += 1,
                Some(b'}') => {
                    cur.p += 1;
                    return Ok(());
                }
                _ => {
                    return Err(format!(
                        "expected ',' or '}}' at byte {} of the line",
                        cur.p + 1
                    ))
                }
            }
        }
    }

    fn value(&mut self, cur: &mut Cursor, j: usize, scratch: &mut Vec<u8>) -> Result<(), String> {
        let field_simd = &self.field_simd;
        let Columns {
            schema, columns, ..
        } = &mut self.columns;
        let field = schema.field(j);
        let name = field.name();
        let column = &mut columns[j];
        let misfit = |what: &str| {
            format!(
                "column '{name}': {what}; expected {}",
                expected(field.data_type())
            )
        };
        match cur
            .peek()
            .ok_or_else(|| misfit("the line ends before the value"))?
        {
            b'"' => {
                cur.p += 1;
                let text = cur.string(scratch)?;
                column
                    .push_text(text.bytes())
                    .map_err(|why| format!("column '{name}': {} {why}", show(text.bytes())))?;
            }
            b'{' | b'[' => return Err(misfit("an object or array")),
            b't' | b'f' | b'n' => {
                let rest = &cur.data[cur.p..];
                if rest.starts_with(b"true") || rest.starts_with(b"false") {
                    let v = rest[0] == b't';
                    cur.p += if v { 4 } else { 5 };
                    column.push_bool_value(v).map_err(misfit)?;
                } else if rest.starts_with(b"null") {
                    cur.p += 4;
                    column.push_null();
                } else {
                    return Err(misfit("a bare word"));
                }
            }
            _ => {
                let start = cur.p;
                if column.is_f32() {
                    if let Some((v, end)) = number_f32(cur.tail, start, *field_simd) {
                        if end <= cur.data.len()
                            && matches!(
                                cur.data.get(end),
                                None | Some(b',' | b'}' | b' ' | b'\t' | b'\r')
                            )
                        {
                            column.push_f32_value(v);
                            cur.p = end;
                            return Ok(());
                        }
                    }
                }
                while cur.p < cur.data.len()
                    && matches!(
                        cur.data[cur.p],
                        b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'
                    )
                {
                    cur.p += 1;
                }
                let number = &cur.data[start..cur.p];
                if number.is_empty() {
                    return Err(format!(
                        "column '{name}': unexpected {:?}",
                        cur.data[start] as char
                    ));
                }
                column
                    .push_text(number)
                    .map_err(|why| format!("column '{name}': {} {why}", show(number)))?;
            }
        }
        Ok(())
    }
}

impl RecordParser for NdjsonParser {
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
        while records < records_max && p < data.len() {
            let (end, next) = match memchr::memchr(b'\n', &data[p..]) {
                Some(i) => (p + i, p + i + 1),
                None if at_end => (data.len(), data.len()),
                None => break,
            };
            let line = &data[p..end];
            let line_trimmed = line.strip_suffix(b"\r").unwrap_or(line);
            if line_trimmed.iter().all(|c| matches!(c, b' ' | b'\t')) {
                p = next;
                self.line += 1;
                continue;
            }
            let parsed = if next - p > self.record_bytes_max {
                Err(super::csv::oversized(self.record_bytes_max))
            } else {
                self.parse_line(line_trimmed, &data[p..])
            };
            match parsed {
                Ok(()) => self.columns.commit_row(),
                Err(reason) => {
                    self.columns.abandon_row();
                    dead.push(offset + p as u64, Some(self.line), line, reason);
                }
            }
            records += 1;
            p = next;
            self.line += 1;
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
}

/// Keys and inferred types from up to `rows_max` sample lines: keys in
/// first-seen order; a key whose values are all numbers is a number.
pub(crate) fn sample(data: &[u8], rows_max: usize) -> (Vec<String>, Vec<Inferred>) {
    let mut names: Vec<String> = Vec::new();
    let mut inferred: Vec<Inferred> = Vec::new();
    let mut scratch = Vec::new();
    for line in data.split(|&c| c == b'\n').take(rows_max) {
        let mut cur = Cursor {
            data: line,
            tail: line,
            p: 0,
        };
        if cur.expect(b'{', "").is_err() {
            continue;
        }
        loop {
            cur.ws();
            if cur.expect(b'"', "").is_err() {
                break;
            }
            let Ok(key) = cur.string(&mut scratch) else {
                break;
            };
            let key = String::from_utf8_lossy(key.bytes()).into_owned();
            if cur.expect(b':', "").is_err() {
                break;
            }
            cur.ws();
            let start = cur.p;
            let value: Option<Vec<u8>> = match cur.peek() {
                Some(b'"') => {
                    cur.p += 1;
                    match cur.string(&mut scratch) {
                        Ok(t) => Some(t.bytes().to_vec()),
                        Err(_) => break,
                    }
                }
                _ => {
                    if cur.skip_value(&mut scratch).is_err() {
                        break;
                    }
                    let raw = &line[start..cur.p];
                    (raw != b"null").then(|| raw.to_vec())
                }
            };
            let j = match names.iter().position(|n| *n == key) {
                Some(j) => j,
                None => {
                    names.push(key);
                    inferred.push(Inferred::default());
                    names.len() - 1
                }
            };
            if let Some(v) = value {
                if matches!(v.first(), Some(b'{' | b'[')) {
                    inferred[j].observe(b"not a scalar");
                } else {
                    inferred[j].observe(&v);
                }
            }
            cur.ws();
            if cur.expect(b',', "").is_err() {
                break;
            }
        }
    }
    (names, inferred)
}

#[cfg(test)]
mod tests {
    use arrow_array::RecordBatch;

    use super::NdjsonParser;
    use crate::parse::testing::{self, awkward_number};

    fn parse(text: &[u8], field_simd: bool) -> (Vec<RecordBatch>, Vec<(u64, String)>) {
        let mut parser = NdjsonParser::new(testing::floats(5), 64, 1 << 20);
        parser.field_simd = field_simd;
        testing::parse_all(&mut parser, text)
    }

    /// The SSE4.1 decimal parser changes nothing: the same rows, values bit
    /// for bit, and the same dead letters as the portable path, whatever
    /// follows a number (a comma, a brace, spaces, a bad byte).
    #[test]
    fn field_simd_parses_what_the_portable_path_does() {
        if !crate::parse::number::field_simd_available() {
            return;
        }
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut text = String::new();
        for row in 0..20_000 {
            text.push('{');
            for j in 0..5 {
                let after = [",", " ,", "x,", ",  "][(row + j) % 4 * ((row % 7 == 0) as usize)];
                let after = if j == 4 {
                    after.trim_end_matches(',')
                } else {
                    after
                };
                let number = awkward_number(&mut state);
                text.push_str(&format!("\"x{j}\":{number}{after}"));
            }
            text.push_str("}\n");
        }
        testing::assert_same(parse(text.as_bytes(), true), parse(text.as_bytes(), false));
    }
}

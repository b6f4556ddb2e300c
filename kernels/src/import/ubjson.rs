//! A reader for the UBJSON subset XGBoost writes (`Booster.save_model("m.ubj")`).
//!
//! UBJSON is binary JSON: type markers, big-endian numbers, and optimised
//! containers that state their element type and count up front. Values are
//! read into a `serde_json::Value` so the XGBoost importer has one input shape.
//! Every length is checked against the bytes left, so a hostile file cannot
//! make the reader allocate more than the file's size or recurse without end.

use serde_json::{Map, Number, Value};

use crate::error::{Fault, Result};

/// Containers nested deeper than this are refused (XGBoost's nest about 6 deep).
const DEPTH_MAX: usize = 64;

pub(crate) fn parse(bytes: &[u8]) -> Result<Value> {
    let mut reader = Reader { bytes, pos: 0 };
    let value = reader.value(0)?;
    Ok(value)
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn fault(&self, message: impl Into<String>) -> Fault {
        Fault::new(format!("UBJSON byte {}", self.pos), message)
    }

    fn take(&mut self, n: usize) -> Result<&[u8]> {
        if self.bytes.len() - self.pos < n {
            return Err(self.fault(format!(
                "the file ends {} bytes early (truncated?)",
                n - (self.bytes.len() - self.pos)
            )));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn byte(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn peek(&self) -> Result<u8> {
        self.bytes
            .get(self.pos)
            .copied()
            .ok_or_else(|| self.fault("the file ends early (truncated?)"))
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("take returns N bytes"))
    }

    /// A length or count: any integer type, non-negative.
    fn length(&mut self) -> Result<usize> {
        let marker = self.byte()?;
        let n = self.integer(marker)?;
        usize::try_from(n).map_err(|_| self.fault(format!("negative length {n}")))
    }

    fn integer(&mut self, marker: u8) -> Result<i64> {
        Ok(match marker {
            b'i' => i8::from_be_bytes(self.array()?) as i64,
            b'U' => u8::from_be_bytes(self.array()?) as i64,
            b'I' => i16::from_be_bytes(self.array()?) as i64,
            b'l' => i32::from_be_bytes(self.array()?) as i64,
            b'L' => i64::from_be_bytes(self.array()?),
            other => {
                return Err(self.fault(format!(
                    "type marker {:?}; expected an integer marker (i, U, I, l, L)",
                    other as char
                )))
            }
        })
    }

    fn string(&mut self) -> Result<String> {
        let len = self.length()?;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.fault("a string that is not UTF-8"))
    }

    fn value(&mut self, depth: usize) -> Result<Value> {
        let marker = self.byte()?;
        self.typed_value(marker, depth)
    }

    fn typed_value(&mut self, marker: u8, depth: usize) -> Result<Value> {
        Ok(match marker {
            b'Z' => Value::Null,
            b'T' => Value::Bool(true),
            b'F' => Value::Bool(false),
            b'i' | b'U' | b'I' | b'l' | b'L' => Value::from(self.integer(marker)?),
            b'd' => float(f32::from_be_bytes(self.array()?) as f64),
            b'D' => float(f64::from_be_bytes(self.array()?)),
            b'S' | b'H' => Value::String(self.string()?),
            b'C' => Value::String((self.byte()? as char).to_string()),
            b'[' => self.container(depth, false)?,
            b'{' => self.container(depth, true)?,
            other => {
                return Err(self.fault(format!(
                    "unknown UBJSON type marker {:?} (0x{other:02x})",
                    other as char
                )))
            }
        })
    }

    fn container(&mut self, depth: usize, object: bool) -> Result<Value> {
        if depth >= DEPTH_MAX {
            return Err(self.fault(format!("containers nested deeper than {DEPTH_MAX}")));
        }
        // Optimised form: `$` element type, then `#` count; or `#` count alone.
        let mut element_type = None;
        let mut count = None;
        if self.peek()? == b'$' {
            self.pos += 1;
            element_type = Some(self.byte()?);
            if self.byte()? != b'#' {
                return Err(self.fault("a typed container without a count ('#')"));
            }
            count = Some(self.length()?);
        } else if self.peek()? == b'#' {
            self.pos += 1;
            count = Some(self.length()?);
        }
        if let Some(n) = count {
            // Each element takes at least one byte (or one key byte), unless typed
            // as a zero-size marker; refuse counts the file cannot hold.
            let zero_size = matches!(element_type, Some(b'Z' | b'T' | b'F'));
            if !zero_size && n > self.bytes.len() - self.pos {
                return Err(self.fault(format!(
                    "a container of {n} items but only {} bytes remain",
                    self.bytes.len() - self.pos
                )));
            }
        }
        let next = |r: &mut Self| -> Result<Value> {
            match element_type {
                Some(t) => r.typed_value(t, depth + 1),
                None => r.value(depth + 1),
            }
        };
        if object {
            let mut map = Map::new();
            loop {
                match count {
                    Some(n) if map.len() == n => break,
                    None if self.peek()? == b'}' => {
                        self.pos += 1;
                        break;
                    }
                    _ => {}
                }
                let key = self.string()?;
                let value = next(self)?;
                map.insert(key, value);
            }
            Ok(Value::Object(map))
        } else {
            let mut items = Vec::with_capacity(count.unwrap_or(0).min(1 << 20));
            loop {
                match count {
                    Some(n) if items.len() == n => break,
                    None if self.peek()? == b']' => {
                        self.pos += 1;
                        break;
                    }
                    _ => {}
                }
                items.push(next(self)?);
            }
            Ok(Value::Array(items))
        }
    }
}

fn float(v: f64) -> Value {
    // JSON has no NaN or infinity; XGBoost writes neither in a valid model.
    Number::from_f64(v).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_typed_arrays_and_nested_objects() {
        // {"a": [$d#U 2 1.5f 2.0f], "b": {"c": "xy"}}
        let mut bytes = vec![b'{', b'U', 1, b'a', b'[', b'$', b'd', b'#', b'U', 2];
        bytes.extend(1.5f32.to_be_bytes());
        bytes.extend(2.0f32.to_be_bytes());
        bytes.extend([
            b'U', 1, b'b', b'{', b'U', 1, b'c', b'S', b'U', 2, b'x', b'y', b'}',
        ]);
        bytes.push(b'}');
        let v = parse(&bytes).unwrap();
        assert_eq!(v, serde_json::json!({"a": [1.5, 2.0], "b": {"c": "xy"}}));
    }

    #[test]
    fn refuses_truncation_huge_counts_and_deep_nesting() {
        let err = parse(&[b'{', b'U', 1, b'a', b'[', b'$', b'd', b'#', b'U', 2, 0, 0]).unwrap_err();
        assert_eq!(err.at, "UBJSON byte 10");
        assert!(err.message.contains("truncated"), "{}", err.message);
        let err = parse(&[b'[', b'$', b'd', b'#', b'L', 0x7f, 0, 0, 0, 0, 0, 0, 0]).unwrap_err();
        assert!(
            err.message.contains("items but only 0 bytes remain"),
            "{}",
            err.message
        );
        let err = parse(&[b'S', b'U', 9, b'a']).unwrap_err();
        assert!(err.message.contains("truncated"), "{}", err.message);
        let deep = vec![b'['; 100];
        let err = parse(&deep).unwrap_err();
        assert!(err.message.contains("nested deeper"), "{}", err.message);
    }
}

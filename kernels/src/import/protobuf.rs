//! A minimal protobuf wire-format reader, enough for ONNX model files.
//!
//! No code generation and no schema: a message is read into its fields, and
//! the ONNX importer asks for the fields it knows by number. Every length is
//! checked against the bytes left, so a hostile file cannot make the reader
//! over-read or allocate beyond the file's size.

use crate::error::{Fault, Result};

/// A field's raw value as it appears on the wire.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// The fields of one message, in file order.
#[derive(Debug)]
pub(crate) struct Message<'a> {
    pub fields: Vec<(u32, Wire<'a>)>,
}

pub(crate) fn parse<'a>(bytes: &'a [u8], what: &str) -> Result<Message<'a>> {
    let mut fields = Vec::new();
    let mut pos = 0;
    let fault = |pos: usize, m: &str| Fault::new(format!("{what}, byte {pos}"), m.to_string());
    while pos < bytes.len() {
        let (key, next) = varint(bytes, pos).ok_or_else(|| fault(pos, "truncated field key"))?;
        pos = next;
        let number = (key >> 3) as u32;
        let value = match key & 7 {
            0 => {
                let (v, next) = varint(bytes, pos).ok_or_else(|| fault(pos, "truncated varint"))?;
                pos = next;
                Wire::Varint(v)
            }
            1 => {
                let b = bytes
                    .get(pos..pos + 8)
                    .ok_or_else(|| fault(pos, "truncated 64-bit field"))?;
                pos += 8;
                Wire::Fixed64(u64::from_le_bytes(b.try_into().expect("8 bytes")))
            }
            2 => {
                let (len, next) =
                    varint(bytes, pos).ok_or_else(|| fault(pos, "truncated length"))?;
                let len = usize::try_from(len).map_err(|_| fault(pos, "length too large"))?;
                if len > bytes.len() - next {
                    return Err(fault(
                        pos,
                        &format!(
                            "a field of {len} bytes but only {} remain (truncated?)",
                            bytes.len() - next
                        ),
                    ));
                }
                pos = next + len;
                Wire::Bytes(&bytes[next..next + len])
            }
            5 => {
                let b = bytes
                    .get(pos..pos + 4)
                    .ok_or_else(|| fault(pos, "truncated 32-bit field"))?;
                pos += 4;
                Wire::Fixed32(u32::from_le_bytes(b.try_into().expect("4 bytes")))
            }
            t => {
                return Err(fault(
                    pos,
                    &format!("wire type {t}; expected 0, 1, 2 or 5 (not a protobuf file?)"),
                ))
            }
        };
        if number == 0 {
            return Err(fault(pos, "field number 0 (not a protobuf file?)"));
        }
        fields.push((number, value));
    }
    Ok(Message { fields })
}

fn varint(bytes: &[u8], mut pos: usize) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(pos)?;
        pos += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some((value, pos));
        }
    }
    None
}

impl<'a> Message<'a> {
    pub fn all(&self, number: u32) -> impl Iterator<Item = Wire<'a>> + '_ {
        self.fields
            .iter()
            .filter(move |(n, _)| *n == number)
            .map(|(_, w)| *w)
    }

    pub fn bytes(&self, number: u32) -> Option<&'a [u8]> {
        self.all(number).last().and_then(|w| match w {
            Wire::Bytes(b) => Some(b),
            _ => None,
        })
    }

    pub fn string(&self, number: u32) -> String {
        self.bytes(number)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    }

    pub fn strings(&self, number: u32) -> Vec<String> {
        self.all(number)
            .filter_map(|w| match w {
                Wire::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })
            .collect()
    }

    pub fn varint(&self, number: u32) -> Option<u64> {
        self.all(number).last().and_then(|w| match w {
            Wire::Varint(v) => Some(v),
            _ => None,
        })
    }

    pub fn messages(&self, number: u32, what: &str) -> Result<Vec<Message<'a>>> {
        self.all(number)
            .filter_map(|w| match w {
                Wire::Bytes(b) => Some(parse(b, what)),
                _ => None,
            })
            .collect()
    }

    /// A repeated int64 (or int32) field, packed or not.
    pub fn ints(&self, number: u32) -> Result<Vec<i64>> {
        let mut out = Vec::new();
        for w in self.all(number) {
            match w {
                Wire::Varint(v) => out.push(v as i64),
                Wire::Bytes(b) => {
                    let mut pos = 0;
                    while pos < b.len() {
                        let (v, next) = varint(b, pos)
                            .ok_or_else(|| Fault::new("packed ints", "truncated varint"))?;
                        out.push(v as i64);
                        pos = next;
                    }
                }
                _ => {
                    return Err(Fault::new(
                        "packed ints",
                        "an integer list of the wrong wire type",
                    ))
                }
            }
        }
        Ok(out)
    }

    /// A repeated float field, packed or not.
    pub fn floats(&self, number: u32) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        for w in self.all(number) {
            match w {
                Wire::Fixed32(v) => out.push(f32::from_bits(v)),
                Wire::Bytes(b) if b.len() % 4 == 0 => out.extend(
                    b.chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))),
                ),
                _ => {
                    return Err(Fault::new(
                        "packed floats",
                        "a float list of the wrong wire type or length",
                    ))
                }
            }
        }
        Ok(out)
    }

    /// A repeated double field, packed or not.
    pub fn doubles(&self, number: u32) -> Result<Vec<f64>> {
        let mut out = Vec::new();
        for w in self.all(number) {
            match w {
                Wire::Fixed64(v) => out.push(f64::from_bits(v)),
                Wire::Bytes(b) if b.len() % 8 == 0 => out.extend(
                    b.chunks_exact(8)
                        .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes"))),
                ),
                _ => {
                    return Err(Fault::new(
                        "packed doubles",
                        "a double list of the wrong wire type or length",
                    ))
                }
            }
        }
        Ok(out)
    }

    pub fn float(&self, number: u32) -> Option<f32> {
        self.all(number).last().and_then(|w| match w {
            Wire::Fixed32(v) => Some(f32::from_bits(v)),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_varints_strings_packed_and_unpacked_lists() {
        // field 1 varint 150; field 2 "hi"; field 3 packed [1, 300]; field 4 float 1.5 twice (unpacked)
        let mut b = vec![
            0x08, 0x96, 0x01, 0x12, 2, b'h', b'i', 0x1a, 3, 0x01, 0xac, 0x02,
        ];
        for _ in 0..2 {
            b.push(0x25);
            b.extend(1.5f32.to_le_bytes());
        }
        let m = parse(&b, "test").unwrap();
        assert_eq!(m.varint(1), Some(150));
        assert_eq!(m.string(2), "hi");
        assert_eq!(m.ints(3).unwrap(), vec![1, 300]);
        assert_eq!(m.floats(4).unwrap(), vec![1.5, 1.5]);
    }

    #[test]
    fn refuses_truncated_and_oversized_fields() {
        assert!(parse(&[0x12, 10, b'a'], "t")
            .unwrap_err()
            .message
            .contains("only 1 remain"));
        assert!(parse(&[0x08, 0x96], "t")
            .unwrap_err()
            .message
            .contains("truncated"));
        assert!(parse(&[0x0b], "t")
            .unwrap_err()
            .message
            .contains("wire type 3"));
        assert!(parse(&[0x12, 0xff, 0xff, 0xff, 0xff, 0x0f], "t").is_err());
    }
}

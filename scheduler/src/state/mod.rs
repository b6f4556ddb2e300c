//! Operator state as bytes: the one snapshot format every stateful
//! operator writes and reads, so that checkpoints, Kafka partition
//! hand-over and tests share one interface.
//!
//! A snapshot is a header and a payload:
//!
//! ```text
//! "ROOSNAP1"  8 bytes  magic and format version of the envelope
//! kind_len    u16 LE   then the operator kind's name, UTF-8 (e.g. "score")
//! version     u32 LE   the payload's version, the operator's to evolve
//! payload_len u64 LE   then the payload
//! crc32       u32 LE   CRC-32 of everything before it
//! ```
//!
//! Reading checks the magic, the kind, the length and the checksum before
//! the operator sees the payload: a torn or foreign snapshot is an error
//! that says which, never a misread state.

use thiserror::Error;

const MAGIC: &[u8; 8] = b"ROOSNAP1";

/// Why a snapshot could not be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SnapshotError {
    #[error("not a roo snapshot (no ROOSNAP1 header)")]
    NotASnapshot,
    #[error("the snapshot is truncated: {needed} bytes needed, {found} present")]
    Truncated { needed: usize, found: usize },
    #[error("the snapshot's checksum does not match (stored {stored:08x}, computed {computed:08x}): torn or corrupt")]
    Checksum { stored: u32, computed: u32 },
    #[error("the snapshot is of a {found:?} operator; expected {expected:?}")]
    Kind { expected: String, found: String },
    #[error("the snapshot's payload is version {found}; this roo reads {expected}")]
    Version { expected: String, found: u32 },
    #[error("the snapshot's payload is malformed: {0}")]
    Payload(String),
}

/// Wraps `payload` in the snapshot envelope.
pub fn encode(kind: &str, version: u32, payload: &[u8]) -> Vec<u8> {
    assert!(
        kind.len() <= u16::MAX as usize,
        "operator kind names are short"
    );
    let mut out = Vec::with_capacity(MAGIC.len() + 2 + kind.len() + 4 + 8 + payload.len() + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(kind.len() as u16).to_le_bytes());
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// A snapshot's payload, checked to be whole, of `kind` and of `version`
/// (the one payload version this roo reads).
pub fn decode_version<'a>(
    kind: &str,
    version: u32,
    bytes: &'a [u8],
) -> Result<&'a [u8], SnapshotError> {
    let (found, payload) = decode(kind, bytes)?;
    if found != version {
        return Err(SnapshotError::Version {
            expected: version.to_string(),
            found,
        });
    }
    Ok(payload)
}

/// A snapshot's payload and its version, checked to be whole and of `kind`.
pub fn decode<'a>(kind: &str, bytes: &'a [u8]) -> Result<(u32, &'a [u8]), SnapshotError> {
    let need = |needed: usize| {
        if bytes.len() < needed {
            Err(SnapshotError::Truncated {
                needed,
                found: bytes.len(),
            })
        } else {
            Ok(())
        }
    };
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(SnapshotError::NotASnapshot);
    }
    let mut at = MAGIC.len();
    need(at + 2)?;
    let kind_len = u16::from_le_bytes([bytes[at], bytes[at + 1]]) as usize;
    at += 2;
    need(at + kind_len + 12)?;
    let found_kind = &bytes[at..at + kind_len];
    at += kind_len;
    let version = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    at += 4;
    let payload_len = u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    at += 8;
    let payload_len = usize::try_from(payload_len).map_err(|_| SnapshotError::Truncated {
        needed: usize::MAX,
        found: bytes.len(),
    })?;
    let end = at
        .checked_add(payload_len)
        .and_then(|e| e.checked_add(4))
        .ok_or(SnapshotError::Truncated {
            needed: usize::MAX,
            found: bytes.len(),
        })?;
    need(end)?;
    let stored = u32::from_le_bytes(bytes[end - 4..end].try_into().expect("4 bytes"));
    let computed = crc32fast::hash(&bytes[..end - 4]);
    if stored != computed {
        return Err(SnapshotError::Checksum { stored, computed });
    }
    if found_kind != kind.as_bytes() {
        return Err(SnapshotError::Kind {
            expected: kind.to_string(),
            found: String::from_utf8_lossy(found_kind).into_owned(),
        });
    }
    Ok((version, &bytes[at..at + payload_len]))
}

/// Builds a snapshot payload: little-endian words and length-prefixed bytes.
#[derive(Default)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.u64(v as u64);
    }
    /// Bit for bit: a restored float is the same float.
    pub fn f64(&mut self, v: f64) {
        self.u64(v.to_bits());
    }
    pub fn bytes(&mut self, v: &[u8]) {
        self.u64(v.len() as u64);
        self.buf.extend_from_slice(v);
    }
}

/// Reads what a [`Writer`] wrote; every read is bounds-checked, so a
/// payload that lies about a length is an error, not a panic or a huge
/// allocation.
pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                SnapshotError::Payload(format!(
                    "{n} bytes wanted at byte {} of {}",
                    self.at,
                    self.bytes.len()
                ))
            })?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    pub fn u64(&mut self) -> Result<u64, SnapshotError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    pub fn i64(&mut self) -> Result<i64, SnapshotError> {
        Ok(self.u64()? as i64)
    }
    pub fn f64(&mut self) -> Result<f64, SnapshotError> {
        Ok(f64::from_bits(self.u64()?))
    }
    pub fn bytes(&mut self) -> Result<&'a [u8], SnapshotError> {
        let n = self.u64()?;
        self.take(usize::try_from(n).unwrap_or(usize::MAX))
    }
    /// A count of items each at least `item_bytes` long, checked against
    /// what is left (so a lying count cannot ask for a huge allocation).
    pub fn count(&mut self, item_bytes: usize) -> Result<usize, SnapshotError> {
        let n = self.u64()?;
        let left = (self.bytes.len() - self.at) as u64;
        if n.saturating_mul(item_bytes.max(1) as u64) > left {
            return Err(SnapshotError::Payload(format!(
                "{n} items of at least {item_bytes} bytes claimed, {left} bytes left"
            )));
        }
        Ok(n as usize)
    }
    /// The payload was read to its end.
    pub fn finish(self) -> Result<(), SnapshotError> {
        if self.at == self.bytes.len() {
            Ok(())
        } else {
            Err(SnapshotError::Payload(format!(
                "{} bytes left over",
                self.bytes.len() - self.at
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_round_trips_and_every_corruption_is_caught() {
        let bytes = encode("features", 3, b"state bytes");
        assert_eq!(decode("features", &bytes), Ok((3, &b"state bytes"[..])));
        assert!(matches!(
            decode("aggregate", &bytes),
            Err(SnapshotError::Kind { .. })
        ));
        // Every truncation and every single bit flip is refused.
        for cut in 0..bytes.len() {
            assert!(decode("features", &bytes[..cut]).is_err(), "cut at {cut}");
        }
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut torn = bytes.clone();
                torn[i] ^= 1 << bit;
                assert!(decode("features", &torn).is_err(), "byte {i} bit {bit}");
            }
        }
        assert_eq!(decode("x", b"junk"), Err(SnapshotError::NotASnapshot));
        let empty = encode("score", 1, &[]);
        assert_eq!(decode("score", &empty), Ok((1, &[][..])));
    }
}

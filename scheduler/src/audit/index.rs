//! A segment's id index: every record's id hashed, sorted, beside where
//! the record is (its record batch in the segment, its row in that
//! batch), so one id is found with a binary search per segment and one
//! batch decoded, instead of a scan.
//!
//! ```text
//! "ROOAIDX2"  u64 n  n × u64 hash (ascending)  n × (u32 batch, u32 row)      (little-endian)
//! ```
//!
//! The file is read through a memory map: a lookup touches the pages of
//! its binary search, not the whole index. Hashes collide; the reader
//! checks the id of every row a hash names.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::AuditError;
use crate::sinks::layout::{partial_path, publish};

const MAGIC: &[u8; 8] = b"ROOAIDX2";
const HEADER: usize = 16;

/// The hash an id is indexed under: FNV-1a over its UTF-8 bytes, then a
/// 64-bit finaliser. Fixed forever: indexes written today must be read by
/// a later roo.
pub fn id_hash(id: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in id {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Where a record is in its segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Location {
    pub batch: u32,
    pub row: u32,
}

/// Sorts entries by hash (then location) in linear time: the hashes are
/// uniform, so a counting pass over their top bits splits them into
/// buckets of a few entries each, sorted in place (a comparison sort of a
/// million entries was 30 ns an entry of the audit's cost).
fn sort_entries(entries: &mut Vec<(u64, Location)>) {
    let n = entries.len();
    if n < 4096 {
        entries.sort_unstable();
        return;
    }
    // About four entries a bucket, at most 2^22 buckets.
    let bits = (usize::BITS - (n / 4).leading_zeros()).min(22);
    let shift = 64 - bits;
    let mut starts = vec![0usize; (1 << bits) + 1];
    for e in entries.iter() {
        starts[(e.0 >> shift) as usize + 1] += 1;
    }
    for b in 1..starts.len() {
        starts[b] += starts[b - 1];
    }
    let mut next = starts.clone();
    let mut out = vec![(0u64, Location { batch: 0, row: 0 }); n];
    for &e in entries.iter() {
        let b = (e.0 >> shift) as usize;
        out[next[b]] = e;
        next[b] += 1;
    }
    for b in 0..(1usize << bits) {
        let bucket = &mut out[starts[b]..starts[b + 1]];
        if bucket.len() > 1 {
            bucket.sort_unstable();
        }
    }
    *entries = out;
}

/// Writes `entries` (hash, location) sorted as `path`, published whole.
pub(crate) fn write_index(
    path: &Path,
    entries: &mut Vec<(u64, Location)>,
) -> Result<(), AuditError> {
    let (file, partial) = write_index_partial(path, entries)?;
    publish(&file, &partial, path).map_err(AuditError::io(path))
}

/// Writes `path`'s index under its hidden partial name; returns the file
/// and that name, for the caller to publish.
pub(crate) fn write_index_partial(
    path: &Path,
    entries: &mut Vec<(u64, Location)>,
) -> Result<(File, PathBuf), AuditError> {
    sort_entries(entries);
    debug_assert!(entries.windows(2).all(|w| w[0] <= w[1]));
    let mut bytes = Vec::with_capacity(HEADER + entries.len() * 16);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for (h, _) in entries.iter() {
        bytes.extend_from_slice(&h.to_le_bytes());
    }
    for (_, l) in entries.iter() {
        bytes.extend_from_slice(&l.batch.to_le_bytes());
        bytes.extend_from_slice(&l.row.to_le_bytes());
    }
    let partial = partial_path(path).expect("an index path names a file");
    let mut file = File::create(&partial).map_err(AuditError::io(path))?;
    file.write_all(&bytes).map_err(AuditError::io(path))?;
    Ok((file, partial))
}

/// One segment's index, mapped.
pub(crate) struct SegmentIndex {
    map: Mmap,
    n: usize,
}

impl SegmentIndex {
    /// Opens and checks an index: its magic, and that its length is what
    /// its count says.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let file = File::open(path).map_err(AuditError::io(path))?;
        // SAFETY: index files are published whole and never written again;
        // a file truncated under the map is a bug elsewhere, and its pages
        // would fault rather than lie.
        let map = unsafe { Mmap::map(&file) }.map_err(AuditError::io(path))?;
        let corrupt = |message: String| AuditError::Corrupt {
            path: path.display().to_string(),
            message,
        };
        if map.len() < HEADER || &map[..8] != MAGIC {
            return Err(corrupt("not a roo audit index (bad magic)".into()));
        }
        let n = u64::from_le_bytes(map[8..16].try_into().expect("8 bytes"));
        let expected = (n as u128) * 16 + HEADER as u128;
        if expected != map.len() as u128 {
            return Err(corrupt(format!(
                "it says {n} entries ({expected} bytes) but is {} bytes",
                map.len()
            )));
        }
        Ok(Self { map, n: n as usize })
    }

    fn hash(&self, i: usize) -> u64 {
        let at = HEADER + i * 8;
        u64::from_le_bytes(self.map[at..at + 8].try_into().expect("8 bytes"))
    }

    fn location(&self, i: usize) -> Location {
        let at = HEADER + self.n * 8 + i * 8;
        let word =
            |at: usize| u32::from_le_bytes(self.map[at..at + 4].try_into().expect("4 bytes"));
        Location {
            batch: word(at),
            row: word(at + 4),
        }
    }

    /// Where the records whose id hashes to `hash` are, in segment order.
    pub fn rows(&self, hash: u64) -> Vec<Location> {
        let (mut lo, mut hi) = (0, self.n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.hash(mid) < hash {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let mut rows = Vec::new();
        while lo < self.n && self.hash(lo) == hash {
            rows.push(self.location(lo));
            lo += 1;
        }
        rows.sort_unstable();
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_finds_every_row_of_every_id_and_refuses_a_torn_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("_seg.idx");
        let ids: Vec<String> = (0..5000).map(|i| format!("t{}", i % 4000)).collect();
        // 100 rows a batch.
        let at = |r: usize| Location {
            batch: (r / 100) as u32,
            row: (r % 100) as u32,
        };
        let mut entries: Vec<(u64, Location)> = ids
            .iter()
            .enumerate()
            .map(|(r, id)| (id_hash(id.as_bytes()), at(r)))
            .collect();
        write_index(&path, &mut entries).unwrap();
        let index = SegmentIndex::open(&path).unwrap();
        for probe in ["t0", "t17", "t3999", "t999"] {
            let expected: Vec<Location> = (0..ids.len())
                .filter(|&r| ids[r] == probe)
                .map(at)
                .collect();
            let found: Vec<Location> = index
                .rows(id_hash(probe.as_bytes()))
                .into_iter()
                .filter(|l| ids[l.batch as usize * 100 + l.row as usize] == probe)
                .collect();
            assert_eq!(found, expected, "{probe}");
        }
        assert!(index.rows(id_hash(b"absent")).is_empty());
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let err = SegmentIndex::open(&path).err().unwrap().to_string();
        assert!(err.contains("entries"), "{err}");
    }

    #[test]
    fn the_bucket_sort_sorts_as_a_comparison_sort_does() {
        let mut state = 0x1234_5678_9abc_def0u64;
        for n in [0, 1, 5000, 100_000] {
            let mut entries: Vec<(u64, Location)> = (0..n)
                .map(|i| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    // Some hashes repeat (ids repeat): ties by location.
                    let h = if i % 7 == 0 { 42 } else { state };
                    (
                        h,
                        Location {
                            batch: (i / 100) as u32,
                            row: (i % 100) as u32,
                        },
                    )
                })
                .collect();
            let mut expected = entries.clone();
            expected.sort_unstable();
            sort_entries(&mut entries);
            assert_eq!(entries, expected, "{n}");
        }
    }

    #[test]
    fn the_id_hash_is_fixed() {
        // Indexes on disk depend on these values never changing.
        assert_eq!(id_hash(b"txn-1"), 14_709_854_646_528_401_274);
        assert_ne!(id_hash(b"a"), id_hash(b"b"));
    }
}

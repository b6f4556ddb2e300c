//! roo-bench: the throughput benchmark suite: data and model generators, kernel and pipeline benchmarks, peer comparisons.
//!
//! The `roo-bench` binary runs the suites (today: `kernels`); this library
//! holds what the binary and the scratch tools in `examples/` share.
//! `bench/python/` holds the peer side: the synthetic card-transaction
//! generator and the script that trains the benchmark models and times the
//! libraries' own predict.

use std::path::Path;

/// The evaluation rows `peers.py prepare` writes: little-endian f32,
/// column-major, `features` columns of equal length.
pub fn load_rows(cache: &Path, features: usize) -> std::io::Result<Vec<Vec<f32>>> {
    let bytes = std::fs::read(cache.join("rows.f32"))?;
    let values: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
        .collect();
    let rows = values.len() / features;
    Ok(values.chunks(rows).map(<[f32]>::to_vec).collect())
}

//! roo-bench: the throughput benchmark suite: data and model generators, kernel and pipeline benchmarks, peer comparisons.
//!
//! Today it holds only the shared synthetic-data generator's Python half
//! (`bench/python/cardgen.py`, used by the golden fixtures and the bundled
//! example); the benchmark programs arrive with the CPU-kernel issue.

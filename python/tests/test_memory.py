"""A large input streams through score() in bounded client memory: RSS
stays flat however many rows go by (measured, not timed).

ROO_STREAM_ROWS sets the input's size (default 1,000,000 transactions,
~250 MB in memory as Arrow; the figure in the README comes from a larger
run of the same test)."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

import roo
from conftest import transactions_like

ROWS = int(os.environ.get("ROO_STREAM_ROWS", "1000000"))
FILE_ROWS = 250_000


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_a_large_dataset_scores_with_flat_client_memory(client: roo.Client, tmp_path: Path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    chunk = transactions_like(FILE_ROWS)
    input_bytes = 0
    for i in range(-(-ROWS // FILE_ROWS)):
        part = chunk.slice(0, min(FILE_ROWS, ROWS - i * FILE_ROWS))
        input_bytes += part.nbytes
        pq.write_table(part, data_dir / f"part-{i:05d}.parquet", row_group_size=65_536)
    del chunk, part
    pa.default_memory_pool().release_unused()

    scored = client.score(ds.dataset(data_dir, format="parquet"), pipeline="cards")
    out = pq.ParquetWriter(tmp_path / "scored.parquet", scored.schema)
    rows, samples, settled = 0, [], None
    for batch in scored:
        out.write_batch(batch)
        rows += batch.num_rows
        if settled is None and rows >= 5 * 65_536:
            settled = rss_bytes()  # pools and buffers at their working size
        samples.append(rss_bytes())
    out.close()
    assert rows == ROWS
    peak = max(samples)
    growth = peak - (settled or samples[0])
    print(f"\nstreamed {rows} rows ({input_bytes / 2**20:.0f} MiB as Arrow): client RSS "
          f"settled {settled / 2**20:.0f} MiB, peak {peak / 2**20:.0f} MiB, growth {growth / 2**20:.0f} MiB")
    # Flat: what grows after the first batches is a small, fixed amount,
    # not a share of the input.
    assert growth < 96 * 2**20, f"client RSS grew {growth / 2**20:.0f} MiB while streaming"

"""A large input streams through score() in bounded client memory: RSS
stays flat however many rows go by (measured, not timed).

ROO_STREAM_ROWS sets the input's size (default 4,000,000 transactions,
~970 MiB in memory as Arrow; the README's figure comes from a 40,000,000
run of the same test, ~9.5 GiB)."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

import roo
from conftest import transactions_like

ROWS = int(os.environ.get("ROO_STREAM_ROWS", "4000000"))
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
    # Arrow IPC out: a Parquet writer keeps every row group's metadata
    # until it closes (~100 MiB over 40M rows in 32k-row groups), which is
    # the output file's cost, not the stream's.
    out = ipc.new_file(tmp_path / "scored.arrow", scored.schema)
    rows, samples = 0, []
    for batch in scored:
        out.write_batch(batch)
        rows += batch.num_rows
        samples.append((rows, rss_bytes()))
    out.close()
    assert rows == ROWS
    # Once the first quarter has gone by (pools and buffers at their
    # working size), RSS must not climb with the rows that follow.
    settled = next(r for n, r in samples if n >= ROWS // 4)
    later = [r for n, r in samples if n > ROWS // 4]
    growth = max(later) - settled
    quarters = [next(r for n, r in samples if n >= ROWS * q // 4) for q in (1, 2, 3, 4)]
    print(f"\nstreamed {rows} rows ({input_bytes / 2**20:.0f} MiB as Arrow): client RSS at each quarter "
          f"{', '.join(f'{r / 2**20:.0f}' for r in quarters)} MiB; growth after the first quarter "
          f"{growth / 2**20:.0f} MiB; peak {max(r for _, r in samples) / 2**20:.0f} MiB")
    assert growth < 96 * 2**20, f"client RSS grew {growth / 2**20:.0f} MiB after the first quarter"

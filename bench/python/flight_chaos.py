"""The Flight half of `roo-bench chaos`: a resuming client (the roo
package's ``put`` with a named stream) against a ``roo serve`` that is
SIGKILLed mid-put and started again.

    flight_chaos.py ROWS KILLS DIR

``ROO_BINARY`` names the engine; the ``roo`` package comes from
``PYTHONPATH`` (the checkout's python/). ROWS card transactions go by
DoPut into a pipeline with three per-card features and a logistic model
into Parquet files: once uninterrupted (the reference, no checkpoints),
then checkpointing every 0.05 s and killed KILLS times, each time the put
passes the next of KILLS evenly spaced marks, and started again while the
put reconnects and resumes from the stream's rows durable. Prints one
JSON line: rows, kills, rows sent again, and against the reference the
duplicates, lost and differing rows (features and score included).
"""

import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds

import roo

MODEL = ('{"kind": "logistic", "features": ["n_1h", "spend_1h", "mean_24h", "amount"], '
         '"weights": [0.01, 0.001, -0.002, 0.003], "bias": -1.5}')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(dir: Path, checkpoints: bool) -> Path:
    dir.mkdir(parents=True, exist_ok=True)
    (dir / "model.json").write_text(MODEL)
    state = 'state_dir = "state"\ncheckpoint_secs = 0.05' if checkpoints else ""
    features = "".join(
        f'\n[[pipeline.feature]]\nname = "{name}"\nkey = "card_id"\nagg = "{agg}"\n{column}window = "{window}"\n'
        for name, agg, column, window in [
            ("n_1h", "count", "", "1h"),
            ("spend_1h", "sum", 'column = "amount"\n', "1h"),
            ("mean_24h", "mean", 'column = "amount"\n', "24h"),
        ])
    config = dir / "roo.toml"
    config.write_text(f"""
[server]
threads = 2
{state}

[flight]
listen = "127.0.0.1:{free_port()}"

[[pipeline]]
name = "feed"
model = "model.json"
device = "cpu"
event_time = "ts"
lateness = "60s"
max_rows = 4096

[pipeline.source]
kind = "flight"
columns = ["txn_id:int64", "card_id:int64", "ts:int64", "amount"]
{features}
[[pipeline.sink]]
kind = "files"
dir = "rows"
format = "parquet"
rotate_mb = 16
""")
    return config


def transactions(n: int) -> pa.Table:
    rng = np.random.default_rng(7)
    ts = 1_790_000_000_000_000 + np.cumsum(rng.integers(0, 200_000, n))
    return pa.table({
        "txn_id": pa.array(np.arange(n), pa.int64()),
        "card_id": pa.array(rng.integers(0, 100_000, n), pa.int64()),
        "ts": pa.array(ts, pa.int64()),
        "amount": pa.array(np.round(rng.uniform(0, 900, n), 2), pa.float32()),
    })


def published(dir: Path) -> pa.Table:
    files = sorted(p for p in (dir / "rows").iterdir())
    assert not any(p.name.startswith(".") for p in files), "a partial file is left"
    table = ds.dataset([str(p) for p in files], format="parquet").to_table()
    # The model version (a dictionary column) is the same on every row.
    keep = [f.name for f in table.schema if not pa.types.is_dictionary(f.type)]
    return table.select(keep)


def same_bits(a: pa.ChunkedArray, b: pa.ChunkedArray) -> bool:
    """Equal bit for bit (a NaN equals the same NaN: a feature over an
    empty window is NaN, and so is its score)."""
    x, y = a.to_numpy(zero_copy_only=False), b.to_numpy(zero_copy_only=False)
    if x.dtype.kind == "f":
        x, y = x.view(f"u{x.itemsize}"), y.view(f"u{y.itemsize}")
    return x.dtype == y.dtype and np.array_equal(x, y)


def main() -> None:
    rows, kills, dir = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    data = transactions(rows)

    # The reference: no checkpoints, an unnamed put, a clean stop (which
    # publishes every row accepted).
    reference = dir / "uninterrupted"
    started = time.monotonic()
    with roo.serve(write_config(reference, False)) as server, server.connect() as c:
        c.put(data, pipeline="feed")
    uninterrupted = time.monotonic() - started

    chaos = dir / "killed"
    config = write_config(chaos, True)
    servers = [roo.serve(config)]
    wanted = threading.Semaphore(0)
    statuses: list[int] = []
    done = threading.Event()

    def killer() -> None:
        while len(statuses) < kills and wanted.acquire():
            if done.is_set():
                return
            servers[-1].stop(kill=True)
            statuses.append(servers[-1].process.returncode)
            servers.append(roo.serve(config))

    thread = threading.Thread(target=killer)
    thread.start()
    marks = [rows * (k + 1) // (kills + 1) for k in range(kills)]
    last, resent = [0], [0]

    def on_progress(accepted: int) -> None:
        resent[0] += max(0, last[0] - accepted)
        last[0] = accepted
        if marks and accepted >= marks[0]:
            marks.pop(0)
            wanted.release()

    started = time.monotonic()
    try:
        with roo.connect(servers[0].flight) as c:
            c.put(data, pipeline="feed", stream="bench", resume_timeout=120, on_progress=on_progress)
    finally:
        done.set()
        wanted.release()
        thread.join()
        for s in servers:
            s.stop()
    took = time.monotonic() - started
    assert statuses == [-9] * len(statuses), statuses

    want = published(reference)
    got = published(chaos)
    assert want.num_rows == rows, f"the uninterrupted run published {want.num_rows} of {rows}"
    ids = got.column("txn_id").to_numpy()
    counts = np.bincount(ids, minlength=rows)
    duplicates = int(np.maximum(counts - 1, 0).sum())
    lost = int((counts == 0).sum())
    differing = 0 if duplicates or lost else sum(
        int(not same_bits(a, b))
        for a, b in zip(want.sort_by("txn_id").columns, got.sort_by("txn_id").columns))
    print(json.dumps({
        "rows": rows, "kills": len(statuses), "resent": resent[0], "duplicates": duplicates,
        "lost": lost, "differing_columns": differing, "seconds": took,
        "seconds_uninterrupted": uninterrupted,
    }))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The pipelines a team would build in Python instead of roo, for `roo-bench pipeline`.

    pipeline_peers.py batch --model M --input CSV --output PARQUET
        pyarrow.csv reads the file, XGBoost inplace_predict scores it,
        pyarrow writes Parquet: one thread for each. Prints JSON.
    pipeline_peers.py stream --model M --out DIR [--max-rows N] [--linger-ms MS] [--parse pyarrow|lines]
        A socket reader: prints "listening PORT", takes one TCP connection of
        CSV (a header, then rows), cuts micro-batches of up to N rows or MS
        milliseconds, parses each (with pyarrow.csv, or line by line with
        str.split and float as a hand-written reader does), scores it with
        XGBoost, appends it to an Arrow IPC file; when the sender closes,
        prints JSON.

Both report their own CPU time (getrusage) over the work, after imports,
so interpreter start-up is not charged to them. XGBoost and Arrow run one
thread each: one core, as roo's figures are per core.
"""
import argparse
import io
import json
import os
import resource
import socket
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import xgboost as xgb

pa.set_cpu_count(1)
pa.set_io_thread_count(1)


def cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load(model):
    booster = xgb.Booster()
    booster.load_model(model)
    booster.set_param({"nthread": 1})
    return booster


def features_of(table, names):
    return np.column_stack(
        [table.column(f).to_numpy(zero_copy_only=False).astype(np.float32) for f in names]
    )


def batch(args):
    booster = load(args.model)
    names = booster.feature_names
    wall0, cpu0 = time.perf_counter(), cpu_s()
    table = pacsv.read_csv(args.input, read_options=pacsv.ReadOptions(use_threads=False))
    scores = booster.inplace_predict(features_of(table, names))
    table = table.append_column("score", pa.array(scores.astype(np.float32)))
    pq.write_table(table, args.output)
    wall, cpu = time.perf_counter() - wall0, cpu_s() - cpu0
    print(json.dumps({"rows": table.num_rows, "wall_s": wall, "cpu_s": cpu, "peak_rss_mib": peak_rss_mib(),
                      "xgboost": xgb.__version__, "pyarrow": pa.__version__}))


def stream(args):
    booster = load(args.model)
    names = booster.feature_names
    os.makedirs(args.out, exist_ok=True)
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    print(f"listening {server.getsockname()[1]}", flush=True)
    conn, _ = server.accept()
    conn.settimeout(args.linger_ms / 1000.0)
    header = None
    column_names = None
    pending = []       # whole lines of the batch being filled
    first_at = None    # when the batch's first line arrived
    carry = b""
    writer = None
    latencies = []     # (seconds from the batch's first line to written, rows)
    rows = 0
    wall0, cpu0 = None, None

    def flush():
        nonlocal pending, first_at, writer, rows, column_names
        if not pending:
            return
        if args.parse == "pyarrow":
            body = header + b"".join(pending)
            table = pacsv.read_csv(io.BytesIO(body), read_options=pacsv.ReadOptions(use_threads=False))
            x = features_of(table, names)
        else:
            parsed = [
                [float(v) if v else float("nan") for v in line.rstrip(b"\r\n").split(b",")]
                for line in pending
            ]
            columns = list(zip(*parsed))
            table = pa.table({c: pa.array(v, type=pa.float32()) for c, v in zip(column_names, columns)})
            x = features_of(table, names)
        scores = booster.inplace_predict(x)
        table = table.append_column("score", pa.array(scores.astype(np.float32)))
        if writer is None:
            writer = ipc.new_file(os.path.join(args.out, "scored.arrow"), table.schema)
        writer.write_table(table)
        latencies.append((time.perf_counter() - first_at, table.num_rows))
        rows += table.num_rows
        pending, first_at = [], None

    while True:
        try:
            data = conn.recv(1 << 20)
        except socket.timeout:
            flush()
            continue
        now = time.perf_counter()
        if wall0 is None:
            wall0, cpu0 = now, cpu_s()
        if not data:
            break
        data = carry + data
        end = data.rfind(b"\n") + 1
        carry = data[end:]
        lines = data[:end].splitlines(keepends=True)
        if header is None and lines:
            header, lines = lines[0], lines[1:]
            column_names = header.decode().strip().split(",")
        for line in lines:
            if first_at is None:
                first_at = now
            pending.append(line)
            if len(pending) >= args.max_rows:
                flush()
        if first_at is not None and (time.perf_counter() - first_at) * 1000 >= args.linger_ms:
            flush()
    flush()
    if writer is not None:
        writer.close()
    wall, cpu = time.perf_counter() - (wall0 or 0), cpu_s() - (cpu0 or 0)
    # Row-weighted latency quantiles, as roo's histogram weighs each batch by its rows.
    latencies.sort()
    total = sum(n for _, n in latencies)

    def quantile(q):
        seen = 0
        for s, n in latencies:
            seen += n
            if seen >= q * total:
                return s
        return latencies[-1][0] if latencies else 0.0

    print(json.dumps({"rows": rows, "wall_s": wall, "cpu_s": cpu, "peak_rss_mib": peak_rss_mib(),
                      "p50_s": quantile(0.5), "p99_s": quantile(0.99), "p999_s": quantile(0.999)}))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("batch")
    b.add_argument("--model", required=True)
    b.add_argument("--input", required=True)
    b.add_argument("--output", required=True)
    s = sub.add_parser("stream")
    s.add_argument("--model", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--max-rows", type=int, default=4096)
    s.add_argument("--linger-ms", type=float, default=2.0)
    s.add_argument("--parse", choices=["pyarrow", "lines"], default="pyarrow")
    args = p.parse_args()
    {"batch": batch, "stream": stream}[args.cmd](args)


if __name__ == "__main__":
    main()

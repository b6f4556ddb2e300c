#!/usr/bin/env python3
"""Ingest peers: pyarrow's CSV and JSON readers on one thread, same files as roo.

    ingest_peers.py --csv FILE --ndjson FILE --repeats N   prints JSON {"csv_s": best, "ndjson_s": best, "rows": n}
"""
import argparse
import json
import time

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.json as pjson


def best(repeats, f):
    times = []
    out = None
    for _ in range(repeats):
        t = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t)
    return min(times), out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--csv", required=True)
    p.add_argument("--ndjson", required=True)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    # Same types roo builds: id int64, features float32.
    header = open(a.csv).readline().strip().split(",")
    types = {name: (pa.int64() if name == "id" else pa.float32()) for name in header}
    csv_s, table = best(a.repeats, lambda: pcsv.read_csv(
        a.csv,
        read_options=pcsv.ReadOptions(use_threads=False, block_size=1 << 20),
        convert_options=pcsv.ConvertOptions(column_types=types)))
    schema = pa.schema([(n, t) for n, t in types.items()])
    nd_s, nd = best(a.repeats, lambda: pjson.read_json(
        a.ndjson,
        read_options=pjson.ReadOptions(use_threads=False, block_size=1 << 20),
        parse_options=pjson.ParseOptions(explicit_schema=schema)))
    print(json.dumps({"csv_s": csv_s, "ndjson_s": nd_s, "rows": table.num_rows, "ndjson_rows": nd.num_rows}))


if __name__ == "__main__":
    main()

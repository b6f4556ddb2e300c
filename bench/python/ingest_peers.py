#!/usr/bin/env python3
"""Ingest peers: pyarrow's CSV and JSON readers on one thread, same files as roo.

    ingest_peers.py --csv FILE --ndjson FILE --repeats N
        prints JSON {"csv_s": best, "csv_cpu_s": its CPU, "ndjson_s": ..., "ndjson_cpu_s": ...,
                     "rows": n, "peak_rss_mib": ...}
"""
import argparse
import json
import resource
import time

import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.json as pjson


def cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def best(repeats, f):
    """(wall, CPU) of the fastest of `repeats` runs, and its result."""
    runs = []
    out = None
    for _ in range(repeats):
        t, c = time.perf_counter(), cpu_s()
        out = f()
        runs.append((time.perf_counter() - t, cpu_s() - c))
    return min(runs), out


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
    print(json.dumps({"csv_s": csv_s[0], "csv_cpu_s": csv_s[1], "ndjson_s": nd_s[0], "ndjson_cpu_s": nd_s[1],
                      "rows": table.num_rows, "ndjson_rows": nd.num_rows,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


if __name__ == "__main__":
    main()

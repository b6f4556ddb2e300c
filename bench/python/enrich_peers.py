"""The peer of roo's enrich operator: pandas joining the same events with
the same table, one thread, timed from the data in memory.

    enrich_peers.py EVENTS.arrow TABLE.arrow asof|plain

asof: `merge_asof(events, table, left_on="ts", right_on="valid_from",
by="card_id", direction="backward")` (the table sorted by valid_from
first, untimed: merge_asof needs it); plain: `merge(how="left")` on
card_id. Prints one JSON object: cpu_s, wall_s, peak_rss_mib, matched.
"""
import json
import resource
import sys
import time

import pandas as pd
import pyarrow as pa

events_path, table_path, how = sys.argv[1], sys.argv[2], sys.argv[3]
with pa.memory_map(events_path) as f:
    events = pa.ipc.open_file(f).read_all().to_pandas()
with pa.memory_map(table_path) as f:
    table = pa.ipc.open_file(f).read_all().to_pandas()
if how == "asof":
    table = table.sort_values("valid_from", kind="stable")

w, c = time.perf_counter(), time.process_time()
if how == "asof":
    out = pd.merge_asof(events, table, left_on="ts", right_on="valid_from", by="card_id",
                        direction="backward", allow_exact_matches=True)
else:
    out = events.merge(table, on="card_id", how="left")
cpu, wall = time.process_time() - c, time.perf_counter() - w
assert len(out) == len(events)
print(json.dumps({"cpu_s": cpu, "wall_s": wall,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "matched": int(out["credit_limit"].notna().sum())}))

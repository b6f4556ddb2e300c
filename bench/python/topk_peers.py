"""The peers of roo's aggregate operator: the same tweets, the same windows
(length WINDOW µs ending at every multiple of EVERY µs; a window covers
end - WINDOW < ts <= end; from the first event's window to the first
multiple of EVERY at or after the last event), the top TOP hashtags of
each by tweets (count descending, hashtag ascending), one thread, timed
from the data in memory:

- stream: a collections.Counter per pane of EVERY, each window the sum
  of its panes' counters, heapq.nsmallest for the top;
- pandas: each window's rows filtered, groupby(hashtag).size(), sorted.

    topk_peers.py EVENTS.arrow WINDOW EVERY TOP

Prints one JSON object: for each peer cpu_s, wall_s, peak_rss_mib, rows,
and firsts (each window's first row: [end, hashtag, count]).
"""
import heapq
import json
import resource
import sys
import time
from collections import Counter, defaultdict

import pandas as pd
import pyarrow as pa

path, window, every, top = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
with pa.memory_map(path) as f:
    table = pa.ipc.open_file(f).read_all()
ts = table.column("ts").to_pylist()
tags = table.column("hashtag").to_pylist()
frame = table.select(["ts", "hashtag"]).to_pandas()
del table


def pane_end(t):
    return ((t - 1) // every + 1) * every


first_end, last_end = pane_end(min(ts)), pane_end(max(ts))
panes_per_window = window // every


def timed(run):
    w, c = time.perf_counter(), time.process_time()
    rows, firsts = run()
    return {"cpu_s": time.process_time() - c, "wall_s": time.perf_counter() - w,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rows": rows, "firsts": firsts}


def stream():
    panes = defaultdict(Counter)
    for t, tag in zip(ts, tags):
        panes[pane_end(t)][tag] += 1
    rows, firsts = 0, []
    end = first_end
    while end <= last_end:
        total = Counter()
        for k in range(panes_per_window):
            pane = panes.get(end - k * every)
            if pane:
                total.update(pane)
        if total:
            best = heapq.nsmallest(top, total.items(), key=lambda kv: (-kv[1], kv[0]))
            rows += len(best)
            firsts.append([end, best[0][0], best[0][1]])
        end += every
    return rows, firsts


def pandas_windows():
    rows, firsts = 0, []
    end = first_end
    t = frame["ts"]
    while end <= last_end:
        w = frame[(t > end - window) & (t <= end)]
        if len(w):
            counts = w.groupby("hashtag").size().reset_index(name="value")
            best = counts.sort_values(["value", "hashtag"], ascending=[False, True],
                                      kind="stable").head(top)
            rows += len(best)
            firsts.append([end, best["hashtag"].iloc[0], int(best["value"].iloc[0])])
        end += every
    return rows, firsts


print(json.dumps({"stream": timed(stream), "pandas": timed(pandas_windows)}))

"""Peers of roo's feature operator: the same six per-card features over the
same events (an Arrow IPC file: card_id, merchant_id, ts µs, amount), one
thread each, timed from the data in memory.

- pandas: `groupby("card_id").rolling(window, on=time, closed="left")`,
  the backfill a data scientist writes (`closed="left"`: the events before
  this one, as roo's rule);
- stream: one event at a time, a dict of per-card deques with running sums.

Prints one JSON object: {"pandas": {...}, "stream": {...}} with cpu_s,
wall_s and peak_rss_mib.
"""
import collections
import json
import math
import resource
import sys
import time

import pandas as pd
import pyarrow as pa

H = 3_600_000_000
D = 24 * H


def timed(f):
    w, c = time.perf_counter(), time.process_time()
    f()
    return {"cpu_s": time.process_time() - c, "wall_s": time.perf_counter() - w,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def with_pandas(df):
    df = df.copy()
    df["time"] = pd.to_datetime(df["ts"], unit="us")
    g = df.groupby("card_id")
    hour = g.rolling("1h", on="time", closed="left")
    day = g.rolling("24h", on="time", closed="left")
    out = pd.DataFrame({
        "count_1h": hour["amount"].count(),
        "sum_1h": hour["amount"].sum(),
        "mean_24h": day["amount"].mean(),
        "std_24h": day["amount"].std(ddof=0),
        "merchants_24h": day["merchant_id"].apply(lambda x: len(set(x)), raw=True),
    })
    since_last = g["ts"].diff() / 1e6
    return out, since_last


def with_a_stream(df):
    cards = {}
    out = []
    for card, merchant, ts, amount in zip(df["card_id"].tolist(), df["merchant_id"].tolist(),
                                          df["ts"].tolist(), df["amount"].tolist()):
        s = cards.get(card)
        if s is None:
            s = cards[card] = {"hour": collections.deque(), "day": collections.deque(),
                               "sum_h": 0.0, "sum_d": 0.0, "sq_d": 0.0,
                               "merchants": collections.Counter(), "last": None}
        hour, day = s["hour"], s["day"]
        while hour and hour[0][0] <= ts - H:
            s["sum_h"] -= hour.popleft()[1]
        while day and day[0][0] <= ts - D:
            _, a, m = day.popleft()
            s["sum_d"] -= a
            s["sq_d"] -= a * a
            s["merchants"][m] -= 1
            if not s["merchants"][m]:
                del s["merchants"][m]
        n = len(day)
        mean = s["sum_d"] / n if n else None
        std = math.sqrt(max(s["sq_d"] / n - mean * mean, 0.0)) if n else None
        since = (ts - s["last"]) / 1e6 if s["last"] is not None else None
        out.append((len(hour), s["sum_h"], mean, std, since, len(s["merchants"])))
        hour.append((ts, amount))
        day.append((ts, amount, merchant))
        s["sum_h"] += amount
        s["sum_d"] += amount
        s["sq_d"] += amount * amount
        s["merchants"][merchant] += 1
        s["last"] = ts
    return out


def main():
    with pa.memory_map(sys.argv[1]) as source:
        df = pa.ipc.open_file(source).read_all().to_pandas()
    result = {"events": len(df)}
    result["pandas"] = timed(lambda: with_pandas(df))
    result["stream"] = timed(lambda: with_a_stream(df))
    print(json.dumps(result))


if __name__ == "__main__":
    main()

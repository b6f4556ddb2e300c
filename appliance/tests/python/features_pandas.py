"""roo's per-key features beside pandas on the same generated transactions.

pandas' `groupby(key).rolling(window, on=time, closed="neither")` covers the
events strictly between t - window and t: roo's rule (t - window < t' <= t,
earlier-arrived, never the event itself) on a stream without ties. The
stream here has none (random microsecond times), so the two must agree:
counts exactly, floats to 1e-9 relative.

    python features_pandas.py ROO_BINARY WORK_DIR
"""
import pathlib
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

roo, work = sys.argv[1], pathlib.Path(sys.argv[2])
rng = np.random.default_rng(11)
n, cards = 30_000, 300
US = 1_000_000
start = 1_790_000_000 * US
ts = np.unique(rng.integers(start, start + 5 * 86_400 * US, 2 * n))  # sorted, no ties
ts = np.sort(rng.choice(ts, n, replace=False))
table = pa.table({
    "card_id": pa.array(np.minimum((rng.random(n) ** 2 * cards).astype(np.int64), cards - 1)),
    "merchant_id": pa.array(rng.integers(0, 40, n).astype(np.int64)),
    "ts": pa.array(ts.astype(np.int64)),
    "amount": pa.array(np.where(rng.random(n) < 0.05, np.nan, np.round(rng.lognormal(3.5, 1.1, n), 2))),
})
pq.write_table(table, work / "history.parquet")

features = [
    ("n_1h", "count", None, "1h"), ("sum_1h", "sum", "amount", "1h"),
    ("mean_24h", "mean", "amount", "24h"), ("std_24h", "std", "amount", "24h"),
    ("min_10m", "min", "amount", "10m"), ("max_10m", "max", "amount", "10m"),
    ("merchants_24h", "count_distinct", "merchant_id", "24h"), ("since", "time_since_last", None, None),
]
toml = '[[pipeline]]\nname = "p"\nevent_time = "ts"\n\n[pipeline.source]\nkind = "generator"\nevents = 1\n'
for name, agg, column, window in features:
    toml += f'\n[[pipeline.feature]]\nname = "{name}"\nkey = "card_id"\nagg = "{agg}"\n'
    toml += f'column = "{column}"\n' if column else ""
    toml += f'window = "{window}"\n' if window else ""
(work / "roo.toml").write_text(toml)
subprocess.run([roo, "score", "--config", str(work / "roo.toml"), "--pipeline", "p",
                "--input", str(work / "history.parquet"), "--output", str(work / "features.parquet"),
                "--no-model"], check=True)
got = pq.read_table(work / "features.parquet").to_pandas()

df = table.to_pandas()
df["time"] = pd.to_datetime(df["ts"], unit="us")
df["one"] = 1.0
expected = {}
for name, agg, column, window in features:
    if agg == "time_since_last":
        expected[name] = df.groupby("card_id")["ts"].diff() / US
        continue
    col = "one" if agg == "count" else column
    offset = window.replace("m", "min")  # pandas spells minutes "min"
    rolling = df.groupby("card_id").rolling(offset, on="time", closed="neither")[col]
    if agg == "count":
        r = rolling.sum().fillna(0)
    elif agg == "std":
        r = rolling.std(ddof=0)
    elif agg == "count_distinct":
        r = rolling.apply(lambda x: len(set(x)), raw=True).fillna(0)
    else:
        r = getattr(rolling, agg)()
    # Back to the events' order (groupby-rolling returns rows by group).
    expected[name] = r.reset_index(level=0, drop=True).sort_index()

bad = 0
for name, agg, _, _ in features:
    e = expected[name].to_numpy(dtype=float)
    g = got[name].to_numpy(dtype=float)
    both_null = np.isnan(e) & np.isnan(g)
    if agg in ("count", "count_distinct"):
        ok = both_null | (e == g)
    else:
        ok = both_null | np.isclose(g, e, rtol=1e-9, atol=1e-9)
    if not ok.all():
        i = int(np.argmin(ok))
        print(f"{name}: {int((~ok).sum())} of {n} differ; first at row {i}: roo {g[i]!r}, pandas {e[i]!r}")
        bad += 1
if bad:
    sys.exit(1)
print(f"pandas agrees: {len(features)} features on {n} events over {cards} cards")

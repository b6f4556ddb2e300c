"""Generates tweets (examples/trends/tweets.py; some moved back past the
lateness), runs `roo score --config` with two aggregates — the top 10
hashtags by tweets over 60 s every 10 s, and every hashtag's mean likes
over 30 s every 10 s — and compares every window row with pandas
(`groupby` per window, the lateness rule applied in arrival order).

    trends_pandas.py ROO DIR TWEETS_PY
"""
import os
import subprocess
import sys

import pandas as pd

from trends_common import accepted, load_tweets, pane_end, windows

roo, out, tweets_py = sys.argv[1], sys.argv[2], sys.argv[3]
US = 1_000_000
EVERY, LATENESS = 10 * US, 2 * US
tweets = load_tweets(tweets_py)
data = os.path.join(out, "tweets.csv")
tweets.write_csv(data, tweets.tweets(60_000, seed=11, per_s=300, disorder_us=3 * US))
events = pd.read_csv(data)

config = os.path.join(out, "roo.toml")
cases = {
    "c": ("count", None, 60 * US, 10),
    "m": ("mean", "likes", 30 * US, 0),
}
with open(config, "w") as f:
    for name, (agg, column, length, top) in cases.items():
        f.write(f"""
[[pipeline]]
name = "{name}"
event_time = "ts"
lateness = "2s"

[pipeline.source]
kind = "file"
path = "tweets.csv"

[[pipeline.aggregate]]
name = "{name}"
key = "hashtag"
agg = "{agg}"
{f'column = "{column}"' if column else ""}
window = "{length // US}s"
every = "10s"
top = {top}
""")

on_time, watermark = accepted(events, EVERY, LATENESS)
late = len(events) - len(on_time)
assert late > 0, "the stream has late events"
last_end = int(pane_end(events["ts"].max(), EVERY))
for name, (agg, column, length, top) in cases.items():
    result = os.path.join(out, f"{name}.csv")
    run = subprocess.run([roo, "score", "--config", config, "--pipeline", name,
                          "--input", data, "--output", result],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert f"roo: {late} events were refused" in run.stderr, run.stderr
    got = pd.read_csv(result)
    want = windows(on_time, EVERY, length, agg, column, top, last_end)
    assert len(got) == len(want), f"{name}: {len(got)} rows, pandas {len(want)}"
    for c in ["window_start", "window_end", "rank", "hashtag"]:
        bad = (got[c] != want[c]).to_numpy().nonzero()[0]
        assert len(bad) == 0, f"{name}: {c} differs first at row {bad[0]}: {got.iloc[bad[0]].to_dict()} vs {want.iloc[bad[0]].to_dict()}"
    assert (got["value"].to_numpy() == want["value"].to_numpy()).all(), f"{name}: values differ"
    assert (got["error_bound"] == 0).all()
    print(f"{name}: {len(got)} rows over {got['window_end'].nunique()} windows agree")
print(f"pandas agrees ({late} late events refused by both)")

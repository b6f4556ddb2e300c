"""What the trends cross-checks share: the example's tweet generator, and
the aggregate's rules written the obvious way in pandas — an event is late
when the window ending at the first multiple of `every` at or after its
time already ended at or before the watermark (the largest time seen minus
the lateness), and each window groups, aggregates, sorts (value
descending, hashtag ascending) and cuts."""
import importlib.util

import numpy as np
import pandas as pd


def load_tweets(path):
    spec = importlib.util.spec_from_file_location("tweets", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pane_end(ts, every):
    return ((ts - 1) // every + 1) * every


def accepted(df, every, lateness):
    """The events on time, in arrival order, and the final watermark."""
    watermark = np.iinfo(np.int64).min
    keep = np.zeros(len(df), dtype=bool)
    for i, t in enumerate(df["ts"].to_numpy()):
        if pane_end(t, every) <= watermark:
            continue
        keep[i] = True
        watermark = max(watermark, t - lateness)
    return df[keep], watermark


def window(df, end, length, agg, column, top):
    """One window's rows as a DataFrame (rank, hashtag, value)."""
    rows = df[(df["ts"] > end - length) & (df["ts"] <= end)]
    if agg == "count":
        value = rows.groupby("hashtag").size()
    else:
        value = getattr(rows.groupby("hashtag")[column], agg)()
    out = value.rename("value").reset_index().sort_values(
        ["value", "hashtag"], ascending=[False, True], kind="stable")
    if top:
        out = out.head(top)
    out = out.reset_index(drop=True)
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    return out


def windows(df, every, length, agg, column, top, last_end):
    """Every window from the first pane's end to `last_end` that holds an event."""
    frames = []
    end = int(pane_end(df["ts"].min(), every))
    while end <= last_end:
        w = window(df, end, length, agg, column, top)
        if len(w):
            w.insert(0, "window_end", end)
            w.insert(0, "window_start", end - length)
            frames.append(w)
        end += every
    return pd.concat(frames, ignore_index=True)

"""Writes synthetic tweets as CSV (tweet_id, ts, hashtag, user_id, likes):
hashtags Zipf-distributed over TAGS ranks, trends that rise and fall, and
a little disorder in time (as a real feed has), for `roo score --config`
and the tests' pandas cross-check. roo's built-in generator
(`stream = "tweets"`) makes the same kind of stream live.

    python tweets.py OUT.csv [ROWS] [SEED]
"""
import sys

import numpy as np

HEAD = ["#news", "#music", "#football", "#ai", "#love", "#travel", "#food", "#art",
        "#gaming", "#photography", "#fitness", "#rust", "#movies", "#weather", "#crypto",
        "#science", "#books", "#nature", "#fashion", "#tech", "#health", "#cats",
        "#python", "#space"]
US = 1_000_000
START = 1_790_000_000 * US


def hashtag(rank):
    return HEAD[rank] if rank < len(HEAD) else f"#tag{rank}"


def tweets(rows, seed=7, tags=20_000, exponent=1.1, per_s=500, disorder_us=1_500_000):
    """Columns as numpy arrays; times `per_s` a second on average, each
    moved back by up to `disorder_us` (within a lateness of 2 s)."""
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(US / per_s, rows).round().astype(np.int64)
    clock = START + np.cumsum(gaps)
    weights = np.arange(1, tags + 1, dtype=np.float64) ** -exponent
    ranks = rng.choice(tags, size=rows, p=weights / weights.sum())
    # Trends: every ~45 s a tail hashtag takes a share rising to a peak over
    # 60 s and falling over 120 s.
    t = clock - START
    start = 10 * US
    while start < t[-1]:
        rank = tags - 1 - int(rng.integers(0, min(1000, tags)))
        peak = 0.08 + 0.12 * rng.random()
        dt = t - start
        share = np.where(dt < 0, 0.0,
                 np.where(dt < 60 * US, peak * dt / (60 * US),
                 np.where(dt < 180 * US, peak * (1 - (dt - 60 * US) / (120 * US)), 0.0)))
        ranks = np.where(rng.random(rows) < share, rank, ranks)
        start += int(rng.exponential(45 * US))
    ts = clock - rng.integers(0, disorder_us + 1, rows) * (rng.random(rows) < 0.2)
    names = np.array([hashtag(r) for r in range(tags)], dtype=object)
    return {
        "tweet_id": np.arange(rows, dtype=np.int64),
        "ts": ts.astype(np.int64),
        "hashtag": names[ranks],
        "user_id": rng.integers(0, 1_000_000, rows),
        "likes": np.floor(np.exp(rng.normal(1.0, 1.5, rows))).astype(np.int64),
    }


def write_csv(path, columns):
    names = list(columns)
    with open(path, "w") as f:
        f.write(",".join(names) + "\n")
        for row in zip(*(columns[n] for n in names)):
            f.write(",".join(str(v) for v in row) + "\n")


if __name__ == "__main__":
    out = sys.argv[1]
    rows = int(sys.argv[2]) if len(sys.argv) > 2 else 200_000
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 7
    write_csv(out, tweets(rows, seed))
    print(f"wrote {rows} tweets to {out}")

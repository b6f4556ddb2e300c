"""roo's enrichment beside pandas on the same generated events and tables.

With valid_from, an event at t joins its key's version with the greatest
valid_from <= t: pandas' `merge_asof(by=key, direction="backward",
allow_exact_matches=True)`. Without it, an event joins its key's row:
`merge(how="left")`. Three cases (integer keys as-of, string keys as-of,
integer keys plain), each with events before a key's first version, at a
version's exact valid_from, and keys the table does not hold.

    python enrich_pandas.py ROO_BINARY WORK_DIR
"""
import pathlib
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

roo, work = sys.argv[1], pathlib.Path(sys.argv[2])
US = 1_000_000
START = 1_790_000_000 * US


def table(rng, keys, versions, key_of):
    """Up to `versions` versions per key, some keys absent."""
    rows = []
    for k in range(keys):
        if rng.random() < 0.1:
            continue
        t = START + int(rng.integers(0, 3 * 86_400)) * US
        for _ in range(int(rng.integers(1, versions + 1))):
            rows.append((key_of(k), t, float(rng.integers(0, 10_000)) * 10.0 if rng.random() > 0.05 else np.nan,
                         ["PT", "DE", "US", "BR"][int(rng.integers(0, 4))]))
            t += int(rng.integers(1, 86_400)) * US
    rng.shuffle(rows)  # keys interleaved; each key's versions stay in order below
    rows.sort(key=lambda r: (r[1]))  # valid_from order keeps every key's versions increasing
    return pd.DataFrame(rows, columns=["card_id", "valid_from", "credit_limit", "home_country"])


def events(rng, n, keys, key_of, profile):
    ts = START + rng.integers(-86_400, 6 * 86_400, n) * US
    # Some events exactly at a version's valid_from.
    exact = rng.random(n) < 0.05
    picks = profile.sample(n=n, replace=True, random_state=1)
    key = np.array([key_of(k) for k in rng.integers(0, keys + keys // 10, n)], dtype=object)
    key[exact] = picks["card_id"].to_numpy()[exact]
    ts[exact] = picks["valid_from"].to_numpy()[exact]
    return pd.DataFrame({"txn_id": np.arange(n, dtype=np.int64), "card_id": key, "ts": ts.astype(np.int64),
                         "amount": np.round(rng.random(n) * 500, 2)})


def run_roo(name, ev, tb, as_of):
    d = work / name
    d.mkdir()
    pq.write_table(pa.Table.from_pandas(ev, preserve_index=False), d / "events.parquet")
    pq.write_table(pa.Table.from_pandas(tb, preserve_index=False), d / "profiles.parquet")
    toml = ('[[pipeline]]\nname = "p"\nevent_time = "ts"\n\n[pipeline.source]\nkind = "file"\n'
            'path = "events.parquet"\n\n[[pipeline.enrich]]\nname = "profile"\ntable = "profiles.parquet"\n'
            'key = "card_id"\n' + ('valid_from = "valid_from"\n' if as_of else ""))
    (d / "roo.toml").write_text(toml)
    subprocess.run([roo, "score", "--config", str(d / "roo.toml"), "--pipeline", "p",
                    "--input", str(d / "events.parquet"), "--output", str(d / "out.parquet")], check=True)
    return pq.read_table(d / "out.parquet").to_pandas().sort_values("txn_id").reset_index(drop=True)


def compare(name, got, want):
    assert len(got) == len(want), (name, len(got), len(want))
    for col in ["credit_limit", "home_country"]:
        g, w = got[col], want[col]
        same = (g == w) | (g.isna() & w.isna())
        bad = np.flatnonzero(~same.to_numpy())
        assert len(bad) == 0, f"{name}: {col} differs at {len(bad)} rows, e.g. txn {got.txn_id[bad[0]]}: roo {g[bad[0]]!r}, pandas {w[bad[0]]!r}"
    missing = int(got["credit_limit"].isna().sum())
    versions = got["profile_version"].astype(str).unique()
    assert len(versions) == 1 and versions[0].startswith("sha256:"), versions
    print(f"{name}: pandas agrees on {len(got)} events ({missing} without a row or a null limit)")


rng = np.random.default_rng(5)
n, keys = 40_000, 3_000
for name, key_of, as_of in [("int_asof", int, True), ("text_asof", lambda k: f"card-{k:05d}", True),
                            ("int_plain", int, False)]:
    tb = table(rng, keys, 4 if as_of else 1, key_of)
    ev = events(rng, n, keys, key_of, tb)
    if key_of is int:
        ev["card_id"] = ev["card_id"].astype(np.int64)
    got = run_roo(name, ev, tb, as_of)
    if as_of:
        want = pd.merge_asof(ev.sort_values("ts"), tb.sort_values("valid_from"), left_on="ts",
                             right_on="valid_from", by="card_id", direction="backward",
                             allow_exact_matches=True)
    else:
        want = ev.merge(tb.drop(columns=["valid_from"]), on="card_id", how="left")
    want = want.sort_values("txn_id").reset_index(drop=True)
    compare(name, got, want)

"""The notebook flow, as plain Python: train on a history file, deploy the
model object to a live pipeline, stream transactions through it, look at
the metrics and the decisions. Needs only `pip install ./python` (and
xgboost, for the model).

    python examples/python/notebook.py [--events 200000] [--live 20000]

1. A month of raw card transactions (examples/fraud/history.py).
2. roo computes the live pipeline's features over it (`roo score --config
   --no-model`: the same operators the stream runs), and each card's
   profile as it was then: the training set.
3. XGBoost on it, in memory, as in any notebook.
4. `roo.serve` starts a daemon for the notebook; `deploy` makes the model
   object the live pipeline's model; `put` streams the next day's
   transactions in; `stats`, `output` and `audit` show what happened.
"""

import argparse
import pathlib
import sys
import tempfile
import time

import pyarrow.parquet as pq

import roo

HERE = pathlib.Path(__file__).resolve().parent
FRAUD = HERE.parent / "fraud"
sys.path.insert(0, str(FRAUD))
from history import transactions  # noqa: E402
from train import auc  # noqa: E402

RAW = ["amount", "merchant_category", "hour_of_day", "is_online", "is_international"]
PROFILE = ["credit_limit", "account_age_days", "prior_chargebacks"]
# (name, key, aggregate, column, window): the live pipeline's features,
# those examples/fraud/live_model.json (running before the deploy) reads.
FEATURES = [
    ("card_txn_count_1h", "card_id", "count", None, "1h"),
    ("card_spend_1h", "card_id", "sum", "amount", "1h"),
    ("card_amount_mean_24h", "card_id", "mean", "amount", "24h"),
    ("card_amount_std_24h", "card_id", "std", "amount", "24h"),
    ("card_secs_since_last", "card_id", "time_since_last", None, None),
    ("card_merchants_24h", "card_id", "count_distinct", "merchant_id", "24h"),
    ("merchant_txn_count_10m", "merchant_id", "count", None, "10m"),
]

CONFIG = """
[flight]
listen = "127.0.0.1:0"
model_dir = "models"

[[pipeline]]
name = "live"
model = "{fraud}/live_model.json"   # the model running today; the notebook's replaces it
device = "cpu"
event_time = "ts"
lateness = "30s"
max_rows = 4096
linger_ms = 5

[pipeline.source]
kind = "flight"
columns = ["txn_id:int64", "card_id:int64", "merchant_id:int64", "ts:int64", "amount:float32",
  "merchant_category:float32", "hour_of_day:float32", "is_online:float32", "is_international:float32"]
{features}
[[pipeline.enrich]]
name = "profile"
table = "{fraud}/profiles.csv"
key = "card_id"
valid_from = "valid_from"
columns = ["credit_limit", "account_age_days", "home_country", "prior_chargebacks"]
missing = "null"

[pipeline.audit]
dir = "audit"
id = "txn_id"
segment_secs = 1

[[pipeline.sink]]
kind = "files"
dir = "out"
format = "parquet"
rotate_secs = 1
"""


def config_text() -> str:
    features = ""
    for name, key, agg, column, window in FEATURES:
        features += f'\n[[pipeline.feature]]\nname = "{name}"\nkey = "{key}"\nagg = "{agg}"\n'
        features += (f'column = "{column}"\n' if column else "") + (f'window = "{window}"\n' if window else "")
    return CONFIG.format(fraud=FRAUD.as_posix(), features=features)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000, help="history: transactions over 30 days")
    ap.add_argument("--live", type=int, default=20_000, help="live: the next day's transactions")
    args = ap.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="roo-notebook-"))
    config = work / "roo.toml"
    config.write_text(config_text())

    # 1-2. History, and roo's features over it (the training set).
    history = transactions(args.events)
    pq.write_table(history, work / "history.parquet")
    roo.run("score", "--config", config, "--pipeline", "live", "--no-model",
            "--input", work / "history.parquet", "--output", work / "train.parquet")
    train = pq.read_table(work / "train.parquet").to_pandas()
    columns = RAW + [f[0] for f in FEATURES] + PROFILE
    print(f"1-2. {len(train)} historical transactions, {len(columns)} model columns computed by roo")

    # 3. Train, as in any notebook.
    import xgboost as xgb

    cut = int(len(train) * 0.8)
    model = xgb.XGBClassifier(n_estimators=60, max_depth=4, learning_rate=0.2, n_jobs=1)
    model.fit(train[columns].iloc[:cut], train["is_fraud"].iloc[:cut])
    held_out = model.predict_proba(train[columns].iloc[cut:])[:, 1]
    print(f"3.   XGBoost trained; held-out AUC {auc(train['is_fraud'].iloc[cut:].to_numpy(), held_out):.3f}")

    # 4. Live: the daemon, the model object deployed, a day streamed in.
    with roo.serve(config) as server, server.connect() as c:
        version = c.deploy(model, pipeline="live")
        print(f"4.   deployed {version[:19]}… to pipeline 'live'")
        start = int(history.column("ts")[-1].as_py()) + 1
        live = transactions(args.live, days=1, seed=11, start_us=start).drop_columns(["is_fraud"])
        sent = c.put(live, pipeline="live", batch_rows=2_000)
        stats = wait_until_scored(c, sent)
        latency = {stage["stage"]: stage for stage in stats["latency"]}
        print(f"     streamed {sent} transactions: {stats['events_out']} scored, "
              f"{stats['events_dead']} dead letters, p99 {latency['end_to_end']['p99_us'] / 1e3:.1f} ms "
              f"from arrival to the sink, {stats['cost_cpu_ns_per_row']} CPU-ns per event")
        scored = wait_for_output(c, stats["events_out"])
        riskiest = scored.sort_values("score", ascending=False).head(3)
        print("     the riskiest:")
        print(riskiest[["txn_id", "card_id", "amount", "card_txn_count_1h", "card_spend_1h", "score"]]
              .to_string(index=False))
        top = int(riskiest["txn_id"].iloc[0])
        record = wait_for_audit(c, str(top))
        print(f"     audit of txn {top}: model {record['model_version'][:19]}…, "
              f"card_spend_1h {record['card_spend_1h']:.2f}, profile {record['profile_version'][:19]}…")
        assert record["model_version"] == version, "the decision is on record with the deployed version"


def wait_until_scored(c, sent, timeout=60.0):
    """The pipeline's figures once every event sent is scored or dead."""
    deadline = time.monotonic() + timeout
    while True:
        stats = c.stats("live")[0]
        if stats["events_out"] + stats["events_dead"] >= sent or time.monotonic() > deadline:
            return stats
        time.sleep(0.05)


def wait_for_output(c, rows, timeout=60.0):
    """The published output once it holds `rows` rows (files rotate each second)."""
    deadline = time.monotonic() + timeout
    while True:
        out = c.output("live")
        if out.num_rows >= rows or time.monotonic() > deadline:
            return out.to_pandas()
        time.sleep(0.1)


def wait_for_audit(c, txn_id, timeout=60.0):
    """The decision's audit record once its segment is published (a
    segment closes every segment_secs; the output's files rotate on their
    own clock, so the output can be there before the record)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return c.audit("live", id=txn_id).to_pylist()[0]
        except roo.NotFoundError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


if __name__ == "__main__":
    main()

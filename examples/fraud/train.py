"""The data scientist's laptop workflow, with roo computing the features:

1. a month of raw transactions (history.py) -> examples/fraud/out/history.parquet
2. roo score --config roo.toml --pipeline live --no-model: the "live"
   pipeline's features over the history, in time order, and each card's
   profile (profiles.csv) as it was at each event: the training set,
   computed by the same operators the stream runs
3. XGBoost on those features -> examples/fraud/live_model.json
4. `roo serve --config examples/fraud/roo.toml` scores live transactions
   with the same features and this model.

    python3 examples/fraud/train.py [--roo target/release/roo] [--events 400000]
    python3 examples/fraud/train.py --candidate   # the shadow's candidate_model.json
    python3 examples/fraud/train.py --config examples/kafka/member.toml \
        --model examples/kafka/model.json           # the Kafka example's (card features only)
"""
import argparse
import json
import pathlib
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from history import transactions  # noqa: E402

# What the card network sends and the model reads, beside roo's features.
RAW = ["amount", "merchant_category", "hour_of_day", "is_online", "is_international"]
# The profile columns the model reads (home_country is text: not a model input).
PROFILE = ["credit_limit", "account_age_days", "prior_chargebacks"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--roo", default=str(HERE.parent.parent / "target/release/roo"))
    ap.add_argument("--events", type=int, default=400_000)
    ap.add_argument("--model", default=None)
    ap.add_argument("--config", default=str(HERE / "roo.toml"),
                    help="the config whose \"live\" pipeline computes the features")
    ap.add_argument("--candidate", action="store_true",
                    help="train the candidate the live pipeline shadows (deeper, slower to learn) "
                         "into candidate_model.json")
    args = ap.parse_args()
    if args.model is None:
        args.model = str(HERE / ("candidate_model.json" if args.candidate else "live_model.json"))
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    history = out / "history.parquet"
    pq.write_table(transactions(args.events), history)
    print(f"1. {args.events} raw transactions over 30 days -> {history}")

    train = out / "train.parquet"
    subprocess.run([args.roo, "score", "--config", args.config, "--pipeline", "live",
                    "--input", str(history), "--output", str(train), "--no-model"], check=True)
    print(f"2. roo's features and the profile as of each event over the history -> {train}")

    import xgboost as xgb
    table = pq.read_table(train)
    features = RAW + [f["name"] for f in pipeline_features(args.config)] + PROFILE
    X = table.select(features).to_pandas()
    y = table.column("is_fraud").to_numpy()
    cut = int(len(X) * 0.8)  # train on the first 24 days, test on the rest
    if args.candidate:
        model = xgb.XGBClassifier(n_estimators=100, max_depth=5, learning_rate=0.1, n_jobs=1)
    else:
        model = xgb.XGBClassifier(n_estimators=60, max_depth=4, learning_rate=0.2, n_jobs=1)
    model.fit(X.iloc[:cut], y[:cut])
    p = model.predict_proba(X.iloc[cut:])[:, 1]
    print(f"3. XGBoost on {len(features)} columns ({cut} training rows, {int(y[:cut].sum())} frauds): "
          f"held-out AUC {auc(y[cut:], p):.3f}")
    model.get_booster().save_model(args.model)
    print(f"   saved {args.model}; now: roo serve --config {args.config}")


def pipeline_features(path):
    """The [[pipeline.feature]]s of the "live" pipeline, read from the config."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        import tomli as tomllib
    config = tomllib.loads(pathlib.Path(path).read_text())
    return next(p for p in config["pipeline"] if p["name"] == "live")["feature"]


def auc(y, p):
    order = np.argsort(p)
    ranks = np.empty(len(p))
    ranks[order] = np.arange(1, len(p) + 1)
    pos = y == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return (ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / max(1, n_pos * n_neg)


if __name__ == "__main__":
    main()

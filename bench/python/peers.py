#!/usr/bin/env python3
"""Benchmark peers: trains the benchmark models and times the libraries' own predict.

    peers.py prepare --dir DIR --rows N [--quick]   train models (once) and write N evaluation rows
    peers.py time --dir DIR [--quick]               time each library on those rows, one thread, JSON out

--quick trains smaller models (xgb_50x8, xgb_20x6, lgb_50x63; the MLP for
a few epochs) on fewer rows, for roo-bench's quick run; use its own DIR.

Models (trained on the synthetic 30-feature card-transaction set, cardgen.py):
    xgb_500x8.json     XGBoost, 500 trees, max_depth 8
    xgb_100x6.json     XGBoost, 100 trees, max_depth 6
    lgb_500x255.txt    LightGBM, 500 trees, num_leaves 255
    logistic.json      scikit-learn LogisticRegression, as roo linear JSON
    mlp.onnx           scikit-learn MLPClassifier 30-64-32-1 (relu), via skl2onnx
    *.onnx             ONNX conversions of each model (onnxmltools, skl2onnx) for ONNX Runtime

Evaluation rows go to DIR/rows.f32: float32, column-major (30 columns of N),
NaNs included, the bytes roo reads too.
"""
import argparse
import json
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cardgen import FEATURES, card_transactions  # noqa: E402

TRAIN_ROWS = 60_000
QUICK_TRAIN_ROWS = 10_000
# (name, trees, max_depth or num_leaves)
XGB = (("xgb_500x8", 500, 8), ("xgb_100x6", 100, 6))
LGB = ("lgb_500x255", 500, 255)
QUICK_XGB = (("xgb_50x8", 50, 8), ("xgb_20x6", 20, 6))
QUICK_LGB = ("lgb_50x63", 50, 63)
# Each timed predict also runs in micro-batches of this many rows, for
# per-batch latency (what a stream scoring micro-batches waits).
LATENCY_BATCH = 4096


def model_set(quick):
    return (QUICK_XGB, QUICK_LGB) if quick else (XGB, LGB)


def prepare(d, rows, quick):
    os.makedirs(d, exist_ok=True)
    X, y = None, None
    xgb_models, (lgb_name, lgb_trees, lgb_leaves) = model_set(quick)

    def train_set():
        nonlocal X, y
        if X is None:
            X, y = card_transactions(QUICK_TRAIN_ROWS if quick else TRAIN_ROWS, seed=1)
        return X, y

    import xgboost as xgb

    for name, trees, depth in xgb_models:
        path = os.path.join(d, f"{name}.json")
        if not os.path.exists(path):
            X, y = train_set()
            t = time.time()
            dm = xgb.DMatrix(X, label=y, feature_names=FEATURES, missing=np.nan)
            params = {"objective": "binary:logistic", "max_depth": depth, "eta": 0.05, "seed": 0,
                      "tree_method": "hist", "min_child_weight": 0, "gamma": 0, "lambda": 0.1}
            xgb.train(params, dm, trees).save_model(path)
            print(f"trained {name} in {time.time() - t:.0f}s", file=sys.stderr)
    path = os.path.join(d, f"{lgb_name}.txt")
    if not os.path.exists(path):
        import lightgbm as lgb

        X, y = train_set()
        t = time.time()
        ds = lgb.Dataset(X, label=y, feature_name=FEATURES)
        params = {"objective": "binary", "num_leaves": lgb_leaves, "learning_rate": 0.05, "verbose": -1,
                  "min_data_in_leaf": 5, "min_sum_hessian_in_leaf": 0, "seed": 0}
        lgb.train(params, ds, lgb_trees).save_model(path)
        print(f"trained {lgb_name} in {time.time() - t:.0f}s", file=sys.stderr)
    path = os.path.join(d, "logistic.json")
    if not os.path.exists(path):
        from sklearn.linear_model import LogisticRegression

        X, y = train_set()
        Xc = np.nan_to_num(X, nan=0.0)
        mu, sd = Xc.mean(axis=0), Xc.std(axis=0) + 1e-6
        lr = LogisticRegression(max_iter=500).fit((Xc - mu) / sd, y)
        # Fold the standardisation into the weights: the model reads raw features.
        w = lr.coef_[0] / sd
        b = float(lr.intercept_[0] - (lr.coef_[0] * mu / sd).sum())
        json.dump({"kind": "logistic", "features": FEATURES, "weights": w.tolist(), "bias": b},
                  open(path, "w"))
    path = os.path.join(d, "mlp.onnx")
    if not os.path.exists(path):
        import warnings

        from skl2onnx import to_onnx
        from sklearn.neural_network import MLPClassifier

        warnings.filterwarnings("ignore")
        X, y = train_set()
        Xc = np.nan_to_num(X, nan=0.0)
        mu, sd = Xc.mean(axis=0), Xc.std(axis=0) + 1e-6
        mlp = MLPClassifier(hidden_layer_sizes=(64, 32), max_iter=5 if quick else 30,
                            random_state=0).fit((Xc - mu) / sd, y)
        # Fold the standardisation into the first layer: the model reads raw features.
        W1 = mlp.coefs_[0]
        mlp.intercepts_[0] = mlp.intercepts_[0] - (mu / sd) @ W1
        mlp.coefs_[0] = W1 / sd[:, None]
        with open(path, "wb") as f:
            f.write(to_onnx(mlp, Xc[:1].astype(np.float32), options={"zipmap": False}).SerializeToString())
        json.dump({"coefs": [c.tolist() for c in mlp.coefs_], "intercepts": [b.tolist() for b in mlp.intercepts_]},
                  open(os.path.join(d, "mlp.json"), "w"))
    convert_for_onnxruntime(d, quick)
    data = os.path.join(d, "rows.f32")
    meta = os.path.join(d, "rows.json")
    if not os.path.exists(meta) or json.load(open(meta))["rows"] != rows:
        Xe, _ = card_transactions(rows, seed=99)
        np.asfortranarray(Xe).T.astype(np.float32).tofile(data)  # column-major
        json.dump({"rows": rows, "features": FEATURES}, open(meta, "w"))


def convert_for_onnxruntime(d, quick):
    """The same models as ONNX files, for ONNX Runtime (roo reads the originals)."""
    import warnings

    warnings.filterwarnings("ignore")
    from onnxmltools import convert_lightgbm, convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    types = [("input", FloatTensorType([None, len(FEATURES)]))]
    xgb_models, (lgb_name, _, _) = model_set(quick)
    for name, _, _ in xgb_models:
        out = os.path.join(d, f"{name}.onnx")
        if not os.path.exists(out):
            import xgboost as xgb

            bst = xgb.Booster(model_file=os.path.join(d, f"{name}.json"))
            bst.feature_names = None  # ONNX takes one unnamed tensor
            with open(out, "wb") as f:
                f.write(convert_xgboost(bst, initial_types=types).SerializeToString())
    out = os.path.join(d, f"{lgb_name}.onnx")
    if not os.path.exists(out):
        import lightgbm as lgb

        bst = lgb.Booster(model_file=os.path.join(d, f"{lgb_name}.txt"))
        with open(out, "wb") as f:
            f.write(convert_lightgbm(bst, initial_types=types, zipmap=False).SerializeToString())
    out = os.path.join(d, "logistic.onnx")
    if not os.path.exists(out):
        from skl2onnx import to_onnx
        from sklearn.linear_model import LogisticRegression

        m = json.load(open(os.path.join(d, "logistic.json")))
        lr = LogisticRegression()
        lr.classes_ = np.array([0, 1])
        lr.coef_ = np.array([m["weights"]])
        lr.intercept_ = np.array([m["bias"]])
        lr.n_features_in_ = len(FEATURES)
        with open(out, "wb") as f:
            f.write(to_onnx(lr, np.zeros((1, len(FEATURES)), dtype=np.float32), options={"zipmap": False}).SerializeToString())


def load_rows(d):
    meta = json.load(open(os.path.join(d, "rows.json")))
    cols = np.fromfile(os.path.join(d, "rows.f32"), dtype=np.float32)
    return np.ascontiguousarray(cols.reshape(len(meta["features"]), meta["rows"]).T)


def cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measure(fn, X, repeats):
    """fn(rows) over all of X, best of `repeats` by wall time (with that
    run's CPU time); then once more in LATENCY_BATCH-row micro-batches,
    each timed, for the per-batch latency quantiles."""
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        t, c = time.perf_counter(), cpu_s()
        fn(X)
        best = min(best, (time.perf_counter() - t, cpu_s() - c))
    lat = []
    for i in range(0, X.shape[0], LATENCY_BATCH):
        part = X[i:i + LATENCY_BATCH]
        t = time.perf_counter()
        fn(part)
        lat.append(time.perf_counter() - t)
    return best[0], best[1], np.percentile(np.asarray(lat), [50, 99, 99.9]).tolist()


def timings(d, repeats, quick):
    X = load_rows(d)
    n = X.shape[0]
    out = {"rows": n, "peers": {}}
    xgb_models, (lgb_name, _, _) = model_set(quick)

    def record(peer, model, fn, rows_in, version):
        wall, cpu, q = measure(fn, rows_in, repeats)
        out["peers"].setdefault(peer, {})[model] = {
            "ns_per_row": wall / n * 1e9, "cpu_ns_per_row": cpu / n * 1e9,
            "batch_rows": LATENCY_BATCH, "batch_s": q, "version": version,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}

    import xgboost as xgb

    for name, _, _ in xgb_models:
        bst = xgb.Booster(model_file=os.path.join(d, f"{name}.json"))
        bst.set_param({"nthread": 1})
        bst.inplace_predict(X[:100])
        record("xgboost.inplace_predict", name, bst.inplace_predict, X, xgb.__version__)
    import lightgbm as lgb

    bst = lgb.Booster(model_file=os.path.join(d, f"{lgb_name}.txt"))
    bst.predict(X[:100], num_threads=1)
    record("lightgbm.predict", lgb_name, lambda rows: bst.predict(rows, num_threads=1), X, lgb.__version__)

    m = json.load(open(os.path.join(d, "logistic.json")))
    w = np.asarray(m["weights"], dtype=np.float32)
    b = np.float32(m["bias"])
    Xz = np.nan_to_num(X)
    record("numpy float32 (X @ w, sigmoid)", "logistic",
           lambda rows: 1 / (1 + np.exp(-(rows @ w + b))), Xz, np.__version__)
    mlp = json.load(open(os.path.join(d, "mlp.json")))
    W = [np.asarray(c, dtype=np.float32) for c in mlp["coefs"]]
    B = [np.asarray(b, dtype=np.float32) for b in mlp["intercepts"]]

    def numpy_mlp(rows):
        h = np.maximum(rows @ W[0] + B[0], 0)
        h = np.maximum(h @ W[1] + B[1], 0)
        return 1 / (1 + np.exp(-(h @ W[2] + B[2])))

    record("numpy float32 matmuls", "mlp_64x32", numpy_mlp, Xz, np.__version__)

    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # no per-run shape warnings on stderr

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    names = [m[0] for m in xgb_models] + [lgb_name]
    for name, rows_in in [(m, X) for m in names] + [("logistic", Xz), ("mlp", Xz)]:
        sess = ort.InferenceSession(os.path.join(d, f"{name}.onnx"), opts, providers=["CPUExecutionProvider"])
        input_name = sess.get_inputs()[0].name
        sess.run(None, {input_name: rows_in[:100]})
        record("onnxruntime", "mlp_64x32" if name == "mlp" else name,
               lambda rows: sess.run(None, {input_name: rows}), rows_in, ort.__version__)
    try:
        from threadpoolctl import threadpool_info
        out["blas"] = [i.get("internal_api") for i in threadpool_info()]
    except ImportError:
        pass
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["prepare", "time"])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="the small model set")
    args = ap.parse_args()
    if args.command == "prepare":
        prepare(args.dir, args.rows, args.quick)
    else:
        # One thread for every library: the comparison is per core.
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = "1"
        print(json.dumps(timings(args.dir, args.repeats, args.quick)))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Trains small real models and saves them with the libraries' own predictions.

roo's golden tests load every model listed in manifest.json, score the
fixture's data file and compare with the library's predictions.

Run it once per library environment; each run adds or replaces its own
entries in manifest.json:

    python make_fixtures.py --xgboost          # in a venv with xgboost 2.x
    python make_fixtures.py --xgboost --lightgbm --sklearn --onnx --example
                                               # in a venv with xgboost 3.x,
                                               # lightgbm, scikit-learn, onnx,
                                               # onnxruntime, skl2onnx, onnxmltools

Every feature matrix is cast to float32 *before* the libraries predict, and
written to CSV with 9 significant digits (which round-trips float32), so the
libraries see exactly the values roo reads. NaN is written as an empty field.
"""
import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "bench", "python"))
from cardgen import FEATURES as CARD_FEATURES, card_transactions  # noqa: E402

N_FEATURES = 8
NAMES = [f"x{i}" for i in range(N_FEATURES)]


def make_data(task, n, seed, nan_fraction=0.08):
    """Small tabular set: 8 features, NaNs in three columns, a target per task."""
    rng = np.random.default_rng(seed)
    X = rng.normal(0.0, 1.0, (n, N_FEATURES))
    X[:, 3] = np.round(X[:, 3] * 2) / 2  # a coarse column: many exact ties
    X[:, 5] = rng.integers(0, 4, n)  # small integers, zeros included
    lin = 1.2 * X[:, 0] - 0.8 * X[:, 1] + 0.5 * X[:, 2] * X[:, 3] + 0.3 * X[:, 5]
    if task == "binary":
        y = (rng.random(n) < 1 / (1 + np.exp(-lin))).astype(int)
    elif task == "regression":
        y = np.sin(X[:, 0]) + 0.5 * lin + rng.normal(0, 0.1, n)
    elif task == "proportion":
        y = 1 / (1 + np.exp(-lin + rng.normal(0, 0.3, n)))
    elif task == "multiclass":
        scores = np.stack([lin, -lin + X[:, 4], X[:, 6] - X[:, 7]], axis=1)
        y = np.argmax(scores + rng.normal(0, 0.3, scores.shape), axis=1)
    else:
        raise ValueError(task)
    for j in (1, 4, 6):
        X[rng.random(n) < nan_fraction, j] = np.nan
    return X.astype(np.float32), y


def fmt(v):
    return "" if np.isnan(v) else f"{float(v):.9g}"


def write_csv(path, header, X, id_prefix=None):
    with open(path, "w") as f:
        cols = (["id"] if id_prefix else []) + list(header)
        f.write(",".join(cols) + "\n")
        for i, row in enumerate(X):
            cells = [fmt(v) for v in row]
            if id_prefix:
                cells.insert(0, f"{id_prefix}{i}")
            f.write(",".join(cells) + "\n")


def write_expected(path, preds):
    preds = np.asarray(preds, dtype=np.float64)
    if preds.ndim == 1:
        preds = preds[:, None]
    k = preds.shape[1]
    with open(path, "w") as f:
        f.write(",".join(["score"] if k == 1 else [f"score_{c}" for c in range(k)]) + "\n")
        for row in preds:
            f.write(",".join(f"{v:.17g}" for v in row) + "\n")
    return k


class Manifest:
    def __init__(self):
        self.path = os.path.join(HERE, "manifest.json")
        self.entries = {}
        if os.path.exists(self.path):
            for e in json.load(open(self.path))["fixtures"]:
                self.entries[e["name"]] = e

    def add(self, name, library, version, model, data, preds, note):
        outputs = write_expected(os.path.join(HERE, f"{name}.expected.csv"), preds)
        self.entries[name] = {
            "name": name,
            "library": library,
            "library_version": version,
            "model": model,
            "data": data,
            "expected": f"{name}.expected.csv",
            "outputs": outputs,
            "note": note,
        }

    def save(self):
        fixtures = [self.entries[k] for k in sorted(self.entries)]
        with open(self.path, "w") as f:
            json.dump({"fixtures": fixtures}, f, indent=1)
            f.write("\n")


DATA = {}


def data(task, named=True):
    """Train and test sets per task; the test set is written once as CSV."""
    key = (task, named)
    if key not in DATA:
        seed = {"binary": 1, "regression": 2, "proportion": 3, "multiclass": 4}[task]
        Xtr, ytr = make_data(task, 600, seed)
        Xte, _ = make_data(task, 200, seed + 100)
        fname = f"data_{task}{'' if named else '_positional'}.csv"
        # Positional files have no id column: the model's features come first.
        write_csv(os.path.join(HERE, fname), NAMES, Xte, id_prefix="r" if named else None)
        DATA[key] = (Xtr, ytr, Xte, fname)
    return DATA[key]


def xgboost_fixtures(m):
    import xgboost as xgb

    tag = f"xgb{xgb.__version__.split('.')[0]}"
    ver = xgb.__version__

    def train(name, task, params, rounds, named=True, formats=("json", "ubj")):
        Xtr, ytr, Xte, fname = data(task, named)
        names = NAMES if named else None
        dtr = xgb.DMatrix(Xtr, label=ytr, feature_names=names, missing=np.nan)
        bst = xgb.train({"max_depth": 4, "eta": 0.3, "seed": 0, **params}, dtr, rounds)
        preds = bst.predict(xgb.DMatrix(Xte, feature_names=names, missing=np.nan))
        for ext in formats:
            model = f"{tag}_{name}.{ext}"
            bst.save_model(os.path.join(HERE, model))
            note = f"{params['objective']}, {rounds} rounds, {ext}, " + (
                "named features" if named else "no feature names (bound by position)"
            )
            m.add(f"{tag}_{name}_{ext}", "xgboost", ver, model, fname, preds, note)

    train("binary", "binary", {"objective": "binary:logistic"}, 20)
    train("regression", "regression", {"objective": "reg:squarederror", "max_depth": 5}, 25, named=False)
    train("reglogistic", "proportion", {"objective": "reg:logistic"}, 15, formats=("json",))
    train("multiclass", "multiclass", {"objective": "multi:softprob", "num_class": 3, "max_depth": 3}, 10)
    train("softmax", "multiclass", {"objective": "multi:softmax", "num_class": 3, "max_depth": 3}, 8, formats=("json",))
    train(
        "forest", "binary",
        {"objective": "binary:logistic", "num_parallel_tree": 4, "subsample": 0.8, "colsample_bynode": 0.8},
        3, formats=("ubj",),
    )


def lightgbm_fixtures(m):
    import lightgbm as lgb

    ver = lgb.__version__

    def train(name, task, params, rounds, X_override=None, note=""):
        Xtr, ytr, Xte, fname = data(task)
        if X_override is not None:
            Xtr, Xte, fname = X_override
        ds = lgb.Dataset(Xtr, label=ytr, feature_name=NAMES, params={"verbose": -1, **params.pop("ds", {})})
        bst = lgb.train({"verbose": -1, "num_leaves": 15, "min_data_in_leaf": 5, "seed": 0, **params}, ds, rounds)
        model = f"lgb_{name}.txt"
        bst.save_model(os.path.join(HERE, model))
        preds = bst.predict(Xte)
        m.add(f"lgb_{name}", "lightgbm", ver, model, fname, preds, note or f"{params['objective']}, {rounds} rounds")

    train("binary", "binary", {"objective": "binary", "sigmoid": 0.8}, 20, note="binary, sigmoid:0.8, NaN as missing")
    train("regression", "regression", {"objective": "regression"}, 25)
    train("multiclass", "multiclass", {"objective": "multiclass", "num_class": 3}, 10)
    train("no_missing", "regression", {"objective": "regression", "use_missing": False}, 15,
          note="use_missing=false: NaN is read as 0.0 (missing type None)")

    # zero_as_missing: zeros (and NaN) take the default direction.
    Xtr, ytr, Xte, _ = data("regression")
    Xtr0, Xte0 = Xtr.copy(), Xte.copy()
    rng = np.random.default_rng(11)
    for X in (Xtr0, Xte0):
        X[rng.random(X.shape) < 0.15] = 0.0
    fname = "data_zero_missing.csv"
    write_csv(os.path.join(HERE, fname), NAMES, Xte0, id_prefix="r")
    train("zero_missing", "regression", {"objective": "regression", "zero_as_missing": True}, 15,
          X_override=(Xtr0, Xte0, fname), note="zero_as_missing=true (missing type Zero)")

    # A categorical feature (column 5, 12 categories) with bitset splits.
    rng = np.random.default_rng(12)

    def with_category(X):
        X = X.copy()
        X[:, 5] = rng.integers(0, 12, len(X))
        X[rng.random(len(X)) < 0.05, 5] = np.nan
        return X

    Xtr, ytr, Xte, _ = data("binary")
    Xtr_c, Xte_c = with_category(Xtr), with_category(Xte)
    effect = np.isin(np.nan_to_num(Xtr_c[:, 5], nan=-1), [1, 4, 7, 8, 11])
    ytr_c = ((ytr + effect) > 0).astype(int)
    fname = "data_categorical.csv"
    write_csv(os.path.join(HERE, fname), NAMES, Xte_c, id_prefix="r")
    ds = lgb.Dataset(Xtr_c, label=ytr_c, feature_name=NAMES, categorical_feature=[5], params={"verbose": -1})
    bst = lgb.train({"objective": "binary", "verbose": -1, "num_leaves": 15, "min_data_in_leaf": 5,
                     "min_data_per_group": 5, "cat_smooth": 1, "max_cat_to_onehot": 4, "seed": 0}, ds, 20)
    bst.save_model(os.path.join(HERE, "lgb_categorical.txt"))
    m.add("lgb_categorical", "lightgbm", ver, "lgb_categorical.txt", fname, bst.predict(Xte_c),
          "binary with categorical feature x5 (bitset splits), NaN categories")


def export_linear(kind, features, weights, bias, path):
    """roo's linear-model JSON, as a user would write it from scikit-learn."""
    doc = {"kind": kind, "features": list(features), "weights": weights, "bias": bias}
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


def sklearn_fixtures(m):
    import sklearn
    from sklearn.linear_model import LinearRegression, LogisticRegression

    ver = sklearn.__version__

    def complete(task):
        # scikit-learn's linear models take no NaN: a NaN-free copy of the set.
        Xtr, ytr, Xte, _ = data(task)
        Xtr, Xte = np.nan_to_num(Xtr, nan=0.0), np.nan_to_num(Xte, nan=0.0)
        fname = f"data_{task}_complete.csv"
        write_csv(os.path.join(HERE, fname), NAMES, Xte, id_prefix="r")
        return Xtr, ytr, Xte, fname

    Xtr, ytr, Xte, fname = complete("binary")
    lr = LogisticRegression(max_iter=1000).fit(Xtr, ytr)
    export_linear("logistic", NAMES, lr.coef_[0].tolist(), float(lr.intercept_[0]),
                  os.path.join(HERE, "skl_logistic.json"))
    m.add("skl_logistic", "scikit-learn", ver, "skl_logistic.json", fname,
          lr.predict_proba(Xte.astype(np.float64))[:, 1], "LogisticRegression, binary")

    Xtr, ytr, Xte, fname = complete("regression")
    reg = LinearRegression().fit(Xtr, ytr)
    export_linear("linear", NAMES, reg.coef_.tolist(), float(reg.intercept_),
                  os.path.join(HERE, "skl_linear.json"))
    m.add("skl_linear", "scikit-learn", ver, "skl_linear.json", fname,
          reg.predict(Xte.astype(np.float64)), "LinearRegression")

    Xtr, ytr, Xte, fname = complete("multiclass")
    mlr = LogisticRegression(max_iter=2000).fit(Xtr, ytr)
    export_linear("softmax", NAMES, mlr.coef_.tolist(), mlr.intercept_.tolist(),
                  os.path.join(HERE, "skl_softmax.json"))
    m.add("skl_softmax", "scikit-learn", ver, "skl_softmax.json", fname,
          mlr.predict_proba(Xte.astype(np.float64)), "LogisticRegression, 3 classes (multinomial)")


def onnx_fixtures(m):
    """ONNX files from the real converters, checked against onnxruntime's outputs."""
    import warnings

    import onnxruntime as ort
    import xgboost as xgb
    import lightgbm as lgb
    from onnxmltools import convert_lightgbm, convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType
    from skl2onnx import to_onnx
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    warnings.filterwarnings("ignore")
    ver = f"onnxruntime {ort.__version__}"

    def positional(task, complete):
        # ONNX models take one unnamed tensor: features bind by position, so
        # these data files have no id column.
        Xtr, ytr, Xte, _ = data(task)
        if complete:
            Xtr, Xte = np.nan_to_num(Xtr, nan=0.0), np.nan_to_num(Xte, nan=0.0)
        fname = f"data_{task}_{'complete_' if complete else ''}positional.csv"
        write_csv(os.path.join(HERE, fname), NAMES, Xte)
        return Xtr, ytr, Xte, fname

    def save(name, onx, Xte, fname, note, column=None):
        path = os.path.join(HERE, f"{name}.onnx")
        with open(path, "wb") as f:
            f.write(onx.SerializeToString())
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        outputs = {o.name: v for o, v in zip(sess.get_outputs(), sess.run(None, {sess.get_inputs()[0].name: Xte}))}
        pred = outputs.get("probabilities", outputs.get("variable"))
        pred = np.asarray(pred, dtype=np.float64)
        if column is not None:
            pred = pred[:, column]
        m.add(name, "onnx", ver, f"{name}.onnx", fname, pred.reshape(len(Xte), -1), note)

    opts = {"zipmap": False}
    Xtr, ytr, Xte, fname = positional("binary", True)
    clf = LogisticRegression(max_iter=1000).fit(Xtr, ytr)
    save("onnx_skl_logistic", to_onnx(clf, Xtr[:1], options=opts), Xte, fname,
         "skl2onnx LogisticRegression (LinearClassifier, LOGISTIC)", column=1)
    mlp = MLPClassifier(hidden_layer_sizes=(16,), max_iter=300, random_state=0).fit(Xtr, ytr)
    save("onnx_skl_mlp_binary", to_onnx(mlp, Xtr[:1], options=opts), Xte, fname,
         "skl2onnx MLPClassifier relu 8-16-1, sigmoid head", column=1)

    Xtr, ytr, Xte, fname = positional("multiclass", True)
    clf = LogisticRegression(max_iter=2000).fit(Xtr, ytr)
    save("onnx_skl_softmax", to_onnx(clf, Xtr[:1], options=opts), Xte, fname,
         "skl2onnx LogisticRegression 3 classes (LinearClassifier SOFTMAX + Normalizer)")
    mlp = MLPClassifier(hidden_layer_sizes=(16, 8), activation="tanh", max_iter=300, random_state=0).fit(Xtr, ytr)
    save("onnx_skl_mlp_multiclass", to_onnx(mlp, Xtr[:1], options=opts), Xte, fname,
         "skl2onnx MLPClassifier tanh 8-16-8-3, softmax head")

    Xtr, ytr, Xte, fname = positional("regression", True)
    reg = LinearRegression().fit(Xtr, ytr)
    save("onnx_skl_linear", to_onnx(reg, Xtr[:1]), Xte, fname, "skl2onnx LinearRegression (LinearRegressor)")
    mlp = MLPRegressor(hidden_layer_sizes=(12,), activation="logistic", max_iter=500, random_state=0).fit(Xtr, ytr)
    save("onnx_skl_mlp_regression", to_onnx(mlp, Xtr[:1]), Xte, fname,
         "skl2onnx MLPRegressor logistic 8-12-1")

    types = [("input", FloatTensorType([None, N_FEATURES]))]
    Xtr, ytr, Xte, fname = positional("binary", False)
    xc = xgb.XGBClassifier(n_estimators=20, max_depth=4, random_state=0).fit(Xtr, ytr)
    save("onnx_xgb_binary", convert_xgboost(xc, initial_types=types), Xte, fname,
         "onnxmltools XGBClassifier (TreeEnsembleClassifier, BRANCH_LT), NaNs", column=1)
    Xtr, ytr, Xte, fname = positional("regression", False)
    xr = xgb.XGBRegressor(n_estimators=20, max_depth=4, random_state=0).fit(Xtr, ytr)
    save("onnx_xgb_regression", convert_xgboost(xr, initial_types=types), Xte, fname,
         "onnxmltools XGBRegressor (TreeEnsembleRegressor), NaNs")
    lr = lgb.LGBMRegressor(n_estimators=20, num_leaves=15, verbose=-1, random_state=0).fit(Xtr, ytr)
    save("onnx_lgb_regression", convert_lightgbm(lr, initial_types=types), Xte, fname,
         "onnxmltools LGBMRegressor (TreeEnsembleRegressor, BRANCH_LEQ), NaNs")
    Xtr, ytr, Xte, fname = positional("multiclass", False)
    lc = lgb.LGBMClassifier(n_estimators=10, num_leaves=15, verbose=-1, random_state=0).fit(Xtr, ytr)
    save("onnx_lgb_multiclass", convert_lightgbm(lc, initial_types=types, zipmap=False), Xte, fname,
         "onnxmltools LGBMClassifier 3 classes (TreeEnsembleClassifier SOFTMAX), NaNs")


def onnx_branch_modes(m):
    """A hand-built TreeEnsembleRegressor using every supported branch mode,
    on a column with exact ties at the thresholds (x3: multiples of 0.5) and
    on NaN columns (x1, x4) with both missing_value_tracks_true settings."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    # Each tree: root (node 0) splits, nodes 1 and 2 are leaves.
    splits = [  # (mode, feature, threshold, missing_tracks_true)
        ("BRANCH_GT", 3, 0.5, 0),
        ("BRANCH_GTE", 3, 0.5, 1),
        ("BRANCH_LT", 3, -1.0, 0),
        ("BRANCH_LEQ", 3, -1.0, 1),
        ("BRANCH_GT", 1, 0.0, 1),
        ("BRANCH_GTE", 4, 0.25, 0),
        ("BRANCH_LEQ", 1, 0.5, 0),
        ("BRANCH_LT", 4, -0.5, 1),
    ]
    a = {k: [] for k in ("treeids", "nodeids", "featureids", "values", "modes", "true", "false", "tracks")}
    t_ids, t_nodes, t_weights = [], [], []
    for t, (mode, f, thr, tracks) in enumerate(splits):
        for node, (md, ff, vv, tr, yes, no) in enumerate([(mode, f, thr, tracks, 1, 2), ("LEAF", 0, 0.0, 0, 0, 0), ("LEAF", 0, 0.0, 0, 0, 0)]):
            a["treeids"].append(t); a["nodeids"].append(node); a["featureids"].append(ff)
            a["values"].append(vv); a["modes"].append(md); a["true"].append(yes); a["false"].append(no)
            a["tracks"].append(tr)
        for leaf, w in ((1, 1.0 + t), (2, -0.5 * (t + 1))):
            t_ids.append(t); t_nodes.append(leaf); t_weights.append(w)
    node = helper.make_node(
        "TreeEnsembleRegressor", ["input"], ["variable"], domain="ai.onnx.ml", n_targets=1,
        nodes_treeids=a["treeids"], nodes_nodeids=a["nodeids"], nodes_featureids=a["featureids"],
        nodes_values=a["values"], nodes_modes=a["modes"], nodes_truenodeids=a["true"],
        nodes_falsenodeids=a["false"], nodes_missing_value_tracks_true=a["tracks"],
        target_treeids=t_ids, target_nodeids=t_nodes, target_ids=[0] * len(t_ids), target_weights=t_weights,
        base_values=[0.25], post_transform="NONE")
    graph = helper.make_graph(
        [node], "branch_modes",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, N_FEATURES])],
        [helper.make_tensor_value_info("variable", TensorProto.FLOAT, [None, 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    name = "onnx_branch_modes"
    path = os.path.join(HERE, f"{name}.onnx")
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    Xte = np.loadtxt(os.path.join(HERE, "data_regression_positional.csv"), delimiter=",", skiprows=1,
                     dtype=np.float32, converters=lambda v: float(v) if v else np.nan)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    pred = sess.run(None, {"input": Xte})[0]
    m.add(name, "onnx", f"onnxruntime {ort.__version__}", f"{name}.onnx", "data_regression_positional.csv",
          np.asarray(pred, dtype=np.float64).reshape(len(Xte), -1),
          "hand-built TreeEnsembleRegressor: BRANCH_GT/GTE/LT/LEQ on exact ties and on NaN, both missing rules")


def example():
    """examples/fraud: a fraud model and a day's worth of sample transactions."""
    import xgboost as xgb

    out = os.path.join(ROOT, "examples", "fraud")
    os.makedirs(out, exist_ok=True)
    X, y = card_transactions(20000, seed=7)
    d = xgb.DMatrix(X, label=y, feature_names=CARD_FEATURES, missing=np.nan)
    bst = xgb.train({"objective": "binary:logistic", "max_depth": 5, "eta": 0.2, "seed": 0}, d, 40)
    bst.save_model(os.path.join(out, "model.json"))
    Xs, _ = card_transactions(2000, seed=8)
    header = ["txn_id"] + CARD_FEATURES
    with open(os.path.join(out, "transactions.csv"), "w") as f:
        f.write(",".join(header) + "\n")
        for i, row in enumerate(Xs):
            f.write(",".join([f"t{100000 + i}"] + [fmt(v) for v in row]) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--xgboost", action="store_true")
    ap.add_argument("--lightgbm", action="store_true")
    ap.add_argument("--sklearn", action="store_true")
    ap.add_argument("--onnx", action="store_true")
    ap.add_argument("--example", action="store_true")
    args = ap.parse_args()
    m = Manifest()
    if args.xgboost:
        xgboost_fixtures(m)
    if args.lightgbm:
        lightgbm_fixtures(m)
    if args.sklearn:
        sklearn_fixtures(m)
    if args.onnx:
        onnx_fixtures(m)
        onnx_branch_modes(m)
    m.save()
    if args.example:
        example()


if __name__ == "__main__":
    main()

"""Every model kind a data scientist holds, deployed from memory, scores as
the library's own predict does (within 1e-5, relative past 1)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import roo

ROWS, FEATURES = 3_000, 6
NAMES = [f"feat_{c}" for c in "abcdef"]


def dataset(seed: int = 7):
    """Float32-exact features with a few NaNs (trees route them by their
    missing rule), a binary label, a 3-class label and a target."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(ROWS, FEATURES)).astype(np.float32)
    margin = 1.5 * x[:, 0] - x[:, 1] + 0.5 * x[:, 2] * x[:, 3] + 0.3 * rng.normal(size=ROWS)
    y = (margin > 0).astype(int)
    y3 = np.digitize(margin, [-0.7, 0.7])
    target = (2.0 * x[:, 0] - x[:, 4] + np.sin(x[:, 5])).astype(np.float64)
    return pd.DataFrame(x, columns=NAMES), y, y3, target


def with_nans(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df.iloc[::17, 1] = np.nan
    df.iloc[::29, 4] = np.nan
    return df


def assert_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    bound = 1e-5 * np.maximum(1.0, np.abs(want))
    worst = np.max(np.abs(got - want) - bound)
    assert worst <= 0, f"{what}: off by up to {np.max(np.abs(got - want)):.3g} (bound 1e-5, relative past 1)"


def scores(client: roo.Client, model, df: pd.DataFrame, **deploy) -> np.ndarray:
    version = client.deploy(model, **deploy)
    assert version.startswith("sha256:")
    out = client.score(df, model=version)
    assert list(out.index) == list(df.index)
    names = [c for c in out.columns if c == "score" or c.startswith("score_")]
    return out[names[0]].to_numpy() if names == ["score"] else out[names].to_numpy()


def test_xgboost_booster_and_sklearn_wrappers(client: roo.Client):
    import xgboost as xgb

    df, y, y3, target = dataset()
    df = with_nans(df)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 4, "eta": 0.3},
                        xgb.DMatrix(df, label=y), num_boost_round=20)
    assert_close(scores(client, booster, df), booster.predict(xgb.DMatrix(df)), "xgboost.Booster")
    clf = xgb.XGBClassifier(n_estimators=25, max_depth=3).fit(df, y)
    assert_close(scores(client, clf, df), clf.predict_proba(df)[:, 1], "XGBClassifier")
    multi = xgb.XGBClassifier(n_estimators=15, max_depth=3).fit(df, y3)
    assert_close(scores(client, multi, df), multi.predict_proba(df), "XGBClassifier, 3 classes")
    reg = xgb.XGBRegressor(n_estimators=30, max_depth=4).fit(df, target)
    assert_close(scores(client, reg, df), reg.predict(df), "XGBRegressor")


def test_lightgbm_booster_and_sklearn_wrappers(client: roo.Client):
    import lightgbm as lgb

    df, y, y3, target = dataset()
    df = with_nans(df)
    booster = lgb.train({"objective": "binary", "num_leaves": 15, "verbose": -1},
                        lgb.Dataset(df, label=y), num_boost_round=20)
    assert_close(scores(client, booster, df), booster.predict(df), "lightgbm.Booster")
    clf = lgb.LGBMClassifier(n_estimators=25, num_leaves=7, verbose=-1).fit(df, y)
    assert_close(scores(client, clf, df), clf.predict_proba(df)[:, 1], "LGBMClassifier")
    reg = lgb.LGBMRegressor(n_estimators=30, num_leaves=15, verbose=-1).fit(df, target)
    assert_close(scores(client, reg, df), reg.predict(df), "LGBMRegressor")


def test_sklearn_linear_models(client: roo.Client):
    from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge

    df, y, y3, target = dataset()
    logistic = LogisticRegression().fit(df, y)
    assert_close(scores(client, logistic, df), logistic.predict_proba(df)[:, 1], "LogisticRegression")
    softmax = LogisticRegression(max_iter=500).fit(df, y3)
    assert_close(scores(client, softmax, df), softmax.predict_proba(df), "LogisticRegression, 3 classes")
    linear = LinearRegression().fit(df, target)
    assert_close(scores(client, linear, df), linear.predict(df), "LinearRegression")
    ridge = Ridge(alpha=0.5).fit(df, target)
    assert_close(scores(client, ridge, df), ridge.predict(df), "Ridge")


def test_sklearn_mlps_and_tree_ensembles_through_onnx(client: roo.Client):
    from sklearn.ensemble import (
        ExtraTreesRegressor,
        GradientBoostingClassifier,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.tree import DecisionTreeClassifier

    df, y, y3, target = dataset()
    mlp = MLPClassifier(hidden_layer_sizes=(16, 8), max_iter=300, random_state=0).fit(df, y)
    assert_close(scores(client, mlp, df), mlp.predict_proba(df)[:, 1], "MLPClassifier")
    mlp3 = MLPClassifier(hidden_layer_sizes=(12,), max_iter=300, random_state=0).fit(df, y3)
    assert_close(scores(client, mlp3, df), mlp3.predict_proba(df), "MLPClassifier, 3 classes")
    mlpr = MLPRegressor(hidden_layer_sizes=(16,), max_iter=300, random_state=0).fit(df, target)
    assert_close(scores(client, mlpr, df), mlpr.predict(df), "MLPRegressor")
    for model in (
        RandomForestClassifier(n_estimators=20, max_depth=6, random_state=0).fit(df, y),
        GradientBoostingClassifier(n_estimators=20, max_depth=3, random_state=0).fit(df, y),
        DecisionTreeClassifier(max_depth=6, random_state=0).fit(df, y),
    ):
        assert_close(scores(client, model, df), model.predict_proba(df)[:, 1], type(model).__name__)
    for model in (
        RandomForestRegressor(n_estimators=20, max_depth=6, random_state=0).fit(df, target),
        ExtraTreesRegressor(n_estimators=20, max_depth=6, random_state=0).fit(df, target),
    ):
        assert_close(scores(client, model, df), model.predict(df), type(model).__name__)


def test_feature_names_travel_with_the_model(client: roo.Client):
    """A model fitted on a DataFrame reads its columns by name, whatever
    their order in the data; one fitted on an array reads by position."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    df, y, _, _ = dataset()
    shuffled = df[list(reversed(NAMES))].assign(extra=1.0)
    for model in (LogisticRegression().fit(df, y),
                  MLPClassifier(hidden_layer_sizes=(8,), max_iter=200, random_state=0).fit(df, y)):
        assert_close(scores(client, model, shuffled), model.predict_proba(df)[:, 1],
                     f"{type(model).__name__} by name")
    bare = LogisticRegression().fit(df.to_numpy(), y)
    version = client.deploy(bare)
    got = client.score(df.to_numpy(), model=version)
    assert isinstance(got, np.ndarray)
    assert_close(got, bare.predict_proba(df.to_numpy())[:, 1], "LogisticRegression on an array, by position")
    # Names given at deploy time bind an array-fitted model by name.
    named = client.deploy(bare, features=NAMES)
    out = client.score(shuffled, model=named)
    assert_close(out["score"].to_numpy(), bare.predict_proba(df.to_numpy())[:, 1], "names given at deploy")


def test_deploy_to_a_pipeline_and_model_files(client: roo.Client, transactions, tmp_path):
    import xgboost as xgb

    from conftest import FRAUD

    booster = xgb.Booster(model_file=str(FRAUD / "model.json"))
    version = client.deploy(booster, pipeline="cards")
    running = {m["pipeline"]: m["version"] for m in client.models()["pipelines"]}
    assert running["cards"] == version
    stored = [m["version"] for m in client.models()["stored"]]
    assert version in stored
    # A model that does not fit the pipeline's input is refused, naming
    # the feature; the pipeline keeps scoring with the one before.
    from sklearn.linear_model import LogisticRegression

    df, y, _, _ = dataset()
    with pytest.raises(roo.ModelError, match="needs feature 'feat_a' but the input has no such column"):
        client.deploy(LogisticRegression().fit(df, y), pipeline="cards")
    running = {m["pipeline"]: m["version"] for m in client.models()["pipelines"]}
    assert running["cards"] == version
    by_path = client.deploy(FRAUD / "model.json")
    by_pipeline = client.score(transactions, pipeline="cards")
    by_version = client.score(transactions, model=by_path)
    assert by_pipeline.column("score").equals(by_version.column("score"))


def test_unsupported_objects_and_broken_files_raise_model_errors(client: roo.Client, tmp_path):
    from sklearn.svm import SVR

    with pytest.raises(roo.ModelError, match="cannot deploy a builtins.dict; expected an xgboost Booster"):
        client.deploy({"not": "a model"})
    with pytest.raises(roo.ModelError, match="unrecognised format; expected an XGBoost JSON/UBJSON model"):
        client.deploy(b"these are not model bytes")
    with pytest.raises(roo.ModelError, match="reading the model file"):
        client.deploy(tmp_path / "missing.json")
    df, y, _, target = dataset()
    # Converted to ONNX, then refused by the server, naming the operator.
    with pytest.raises(roo.ModelError, match="operators roo cannot score: SVMRegressor"):
        client.deploy(SVR().fit(df, target))

"""The model objects data scientists hold, as the files roo reads.

``export(model)`` gives the bytes of a model file and its usual suffix:

- XGBoost ``Booster``, ``XGBClassifier``, ``XGBRegressor``, ``XGBRanker``:
  the booster's JSON (``save_raw("json")``), feature names included;
- LightGBM ``Booster``, ``LGBMClassifier``, ``LGBMRegressor``: the text
  model (``model_to_string``);
- scikit-learn ``LogisticRegression`` and linear regressors
  (``LinearRegression``, ``Ridge``, ``Lasso``, ``ElasticNet``, ...): roo's
  linear JSON, exact to the last bit of each weight;
- any other scikit-learn estimator skl2onnx converts (``MLPClassifier``,
  ``MLPRegressor``, random forests, extra trees, gradient boosting,
  decision trees): ONNX, with the feature names in the file's metadata
  (``roo.features``) so that they travel with it;
- an ``onnx.ModelProto``, a path to a model file, or its bytes.

Nothing here imports xgboost, lightgbm or scikit-learn unless the object is
one of theirs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from ._errors import ModelError

#: The metadata key roo reads feature names from in an ONNX file.
ONNX_FEATURES_KEY = "roo.features"

ACCEPTED = (
    "an xgboost Booster/XGBClassifier/XGBRegressor, a lightgbm Booster/LGBMClassifier/LGBMRegressor, "
    "a scikit-learn LogisticRegression, linear regressor, MLP or tree ensemble, an onnx ModelProto, "
    "a path to a model file, or its bytes"
)


def _module(obj: Any) -> str:
    return type(obj).__module__.split(".")[0]


def _names(features: Sequence[str] | None, fitted: Any) -> list[str] | None:
    if features is not None:
        return [str(f) for f in features]
    names = getattr(fitted, "feature_names_in_", None)
    return None if names is None else [str(n) for n in names]


def export(model: Any, features: Sequence[str] | None = None) -> tuple[bytes, str]:
    """(the model file's bytes, its suffix). ``features`` names the
    features of a model fitted on an unnamed array (in column order)."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model), ""
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        try:
            return path.read_bytes(), path.suffix
        except OSError as e:
            raise ModelError(f"reading the model file {path}: {e.strerror or e}") from e
    module = _module(model)
    if module == "xgboost":
        return _xgboost(model, features), ".json"
    if module == "lightgbm":
        return _lightgbm(model, features), ".txt"
    if module == "sklearn":
        linear = _sklearn_linear(model, features)
        if linear is not None:
            return linear, ".json"
        return _sklearn_onnx(model, features), ".onnx"
    if module == "onnx" and hasattr(model, "SerializeToString"):
        return model.SerializeToString(), ".onnx"
    raise ModelError(f"cannot deploy a {type(model).__module__}.{type(model).__name__}; expected {ACCEPTED}")


def _xgboost(model: Any, features: Sequence[str] | None) -> bytes:
    booster = model.get_booster() if hasattr(model, "get_booster") else model
    if not hasattr(booster, "save_raw"):
        raise ModelError(f"cannot deploy a {type(model).__name__}; expected {ACCEPTED}")
    if features is not None:
        booster = booster.copy()  # the caller's booster keeps its names
        booster.feature_names = [str(f) for f in features]
    return bytes(booster.save_raw(raw_format="json"))


def _lightgbm(model: Any, features: Sequence[str] | None) -> bytes:
    booster = model.booster_ if hasattr(model, "booster_") else model
    if not hasattr(booster, "model_to_string"):
        raise ModelError(f"cannot deploy a {type(model).__name__}; expected {ACCEPTED}")
    text = booster.model_to_string()
    if features is not None:
        names = [str(f) for f in features]
        if len(names) != booster.num_feature():
            raise ModelError(f"{len(names)} feature names for a model of {booster.num_feature()} features")
        lines = text.split("\n")
        lines = [("feature_names=" + " ".join(names)) if ln.startswith("feature_names=") else ln for ln in lines]
        text = "\n".join(lines)
    return text.encode()


def _sklearn_linear(model: Any, features: Sequence[str] | None) -> bytes | None:
    """roo's linear JSON for a fitted linear model, or None when ``model``
    is not one it can say exactly."""
    if type(model).__module__.split(".")[:2] != ["sklearn", "linear_model"]:
        return None
    coef = getattr(model, "coef_", None)
    intercept = getattr(model, "intercept_", None)
    if coef is None or intercept is None:
        raise ModelError(f"{type(model).__name__} is not fitted: call fit() before deploying it")
    import numpy as np

    coef = np.asarray(coef, dtype=np.float64)
    intercept = np.atleast_1d(np.asarray(intercept, dtype=np.float64))
    classes = getattr(model, "classes_", None)
    if classes is not None:
        if type(model).__name__ != "LogisticRegression":
            # Margins only (no probabilities): not a score a threshold means.
            return None
        if len(classes) == 2:
            body = {"kind": "logistic", "weights": coef[0].tolist(), "bias": float(intercept[0])}
        else:
            body = {"kind": "softmax", "weights": coef.tolist(), "bias": intercept.tolist()}
    else:
        if coef.ndim != 1:
            raise ModelError(f"{type(model).__name__} predicts {coef.shape[0]} targets; roo scores one")
        body = {"kind": "linear", "weights": coef.tolist(), "bias": float(intercept[0])}
    n = coef.shape[-1]
    names = _names(features, model)
    if names is not None and len(names) != n:
        raise ModelError(f"{len(names)} feature names for a model of {n} features")
    doc = {"kind": body["kind"], "features": names if names is not None else n}
    doc.update(weights=body["weights"], bias=body["bias"])
    return json.dumps(doc).encode()


def _sklearn_onnx(model: Any, features: Sequence[str] | None) -> bytes:
    name = type(model).__name__
    try:
        from skl2onnx import to_onnx
        from skl2onnx.common.data_types import FloatTensorType
    except ImportError as e:
        raise ModelError(
            f"deploying a scikit-learn {name} converts it to ONNX, which needs skl2onnx: "
            "pip install skl2onnx (or pip install 'roo[sklearn]')"
        ) from e
    n = getattr(model, "n_features_in_", None)
    if n is None:
        raise ModelError(f"{name} is not fitted: call fit() before deploying it")
    options = {id(model): {"zipmap": False}} if hasattr(model, "classes_") else None
    try:
        onnx_model = to_onnx(
            model,
            initial_types=[("input", FloatTensorType([None, int(n)]))],
            options=options,
        )
    except Exception as e:  # skl2onnx raises many kinds
        raise ModelError(f"skl2onnx could not convert the {name}: {e}") from e
    names = _names(features, model)
    if names is not None:
        if len(names) != n:
            raise ModelError(f"{len(names)} feature names for a model of {n} features")
        entry = onnx_model.metadata_props.add()
        entry.key = ONNX_FEATURES_KEY
        entry.value = json.dumps(names)
    return onnx_model.SerializeToString()

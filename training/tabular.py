"""Training entry point for tabular classifiers (scikit-learn), run by `LocalTrainer` in a subprocess
and usable as a Vertex AI custom job's container command.

    python -m training.tabular --dataset data/churn.parquet --target churned \
        --params '{"model": "logistic_regression", "C": 0.5}' --out /tmp/model

Writes `model.joblib` and `metrics.json` (held-out metrics) into `--out` (default `$AIP_MODEL_DIR`,
which Vertex AI sets). Progress lines go to stdout. Exit 2 on bad input, with the reason.

Also the shared helpers every model user needs: `make_dataset` (the demo's generated churn data, no
download), `split` (the deterministic hold-out the trainer and the evaluation gate share), `score`,
`save_model` / `load_model`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["MODELS", "ModelFileError", "fit", "load_model", "make_dataset", "save_model", "score", "split"]

MODEL_FILE = "model.joblib"
METRICS_FILE = "metrics.json"
FORMAT = "modelops-sklearn/1"

#: hyperparameter "model" -> scikit-learn estimator (import path, default parameters)
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "logistic_regression": ("sklearn.linear_model.LogisticRegression", {"max_iter": 1000}),
    "random_forest": ("sklearn.ensemble.RandomForestClassifier", {"n_estimators": 100, "n_jobs": 1}),
    "gradient_boosting": ("sklearn.ensemble.HistGradientBoostingClassifier", {}),
}
#: hyperparameters that are not the estimator's: the model's name, the split, the data contract's options
CONTROL_KEYS = ("model", "holdout_fraction", "seed", "coerce_numeric", "drop_high_cardinality", "max_categories",
                "min_rows_per_class")


class ModelFileError(ValueError):
    """A model file that is missing, unreadable or not one of ours."""


def make_dataset(n_rows: int = 5000, *, seed: int = 0, shift: float = 0.0, target: str = "churned") -> pd.DataFrame:
    """A churn-like table: 6 numerical features, one categorical, a binary target.

    `shift` moves the numerical features' means (in standard deviations) and changes the
    relationship slightly, like a population change that makes a retrain worthwhile.
    """
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    tenure = rng.gamma(2.0, 12.0, n_rows) * (1 + 0.3 * shift)
    monthly = rng.normal(65 + 10 * shift, 20, n_rows).clip(10, None)
    calls = rng.poisson(1.5 + shift, n_rows)
    usage = rng.lognormal(3 + 0.2 * shift, 0.6, n_rows)
    age = rng.normal(42 - 3 * shift, 12, n_rows).clip(18, 90)
    late = rng.binomial(3, 0.15 + 0.05 * min(max(shift, 0), 1), n_rows)
    plan = rng.choice(["basic", "standard", "premium"], n_rows, p=[0.5, 0.35, 0.15])
    plan_effect = pd.Series(plan).map({"basic": 0.6, "standard": 0.0, "premium": -0.7}).to_numpy()
    logit = 4.5 * (0.6 - 0.06 * tenure + 0.025 * (monthly - 65) + 0.55 * (calls - 1.5) - 0.004 * usage
                   + 0.6 * late + plan_effect + 0.35 * shift * (calls - 1.5))
    churned = rng.random(n_rows) < 1 / (1 + np.exp(-logit))
    return pd.DataFrame({
        "tenure_months": tenure.round(1), "monthly_charges": monthly.round(2), "support_calls": calls,
        "usage_gb": usage.round(2), "age": age.round(0), "late_payments": late, "plan": plan,
        target: churned.astype(int),
    })


def split(df: pd.DataFrame, target: str, holdout_fraction: float = 0.2, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, holdout): stratified and deterministic, so the gate scores every model on the same rows."""
    from sklearn.model_selection import train_test_split

    if target not in df.columns:
        raise ValueError(f"target column {target!r} is not in the dataset (columns: {', '.join(map(str, df.columns))})")
    if not 0 < holdout_fraction < 1:
        raise ValueError(f"holdout_fraction must be between 0 and 1, got {holdout_fraction}")
    df = df[df[target].notna()]
    counts = df[target].value_counts()
    if len(counts) < 2:
        raise ValueError(f"target column {target!r} needs at least two classes, found {list(counts.index)}")
    stratify = df[target] if counts.min() >= 2 else None
    n_test = math.ceil(holdout_fraction * len(df))
    if stratify is not None and (n_test < len(counts) or len(df) - n_test < len(counts)):
        raise ValueError(f"{len(df)} labelled rows are too few to hold out {holdout_fraction:.0%} with each of the "
                         f"{len(counts)} classes on both sides: add rows (or change holdout_fraction)")
    train, holdout = train_test_split(df, test_size=holdout_fraction, random_state=seed, stratify=stratify)
    return train, holdout


def _estimator(params: dict[str, Any]) -> Any:
    import importlib

    name = params.get("model", "logistic_regression")
    if name not in MODELS:
        raise ValueError(f"hyperparameter model={name!r} is not one of {', '.join(MODELS)}")
    path, defaults = MODELS[name]
    module, _, cls = path.rpartition(".")
    kwargs = {**defaults, **{k: v for k, v in params.items() if k not in CONTROL_KEYS}}
    try:
        return getattr(importlib.import_module(module), cls)(**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad hyperparameters for {name}: {exc}") from None


def _preprocessor(features: pd.DataFrame) -> Any:
    from pandas.api.types import is_bool_dtype, is_numeric_dtype
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [c for c in features.columns if is_numeric_dtype(features[c]) and not is_bool_dtype(features[c])]
    categorical = [c for c in features.columns if c not in numeric]
    return ColumnTransformer([
        ("num", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), numeric),
        ("cat", Pipeline([("impute", SimpleImputer(strategy="most_frequent")),
                          # dense: the data contract bounds the categories, and every estimator takes it
                          ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False))]), categorical),
    ])


def fit(train: pd.DataFrame, target: str, params: dict[str, Any]) -> dict[str, Any]:
    """Fit the pipeline; returns the model bundle that `save_model` writes."""
    import sklearn
    from sklearn.pipeline import Pipeline

    features = train.drop(columns=[target])
    prep = _preprocessor(features)
    pipeline = Pipeline([("prep", prep), ("model", _estimator(params))])
    pipeline.fit(features, train[target])
    numeric = set(prep.transformers[0][2])
    schema = {str(c): "numeric" if c in numeric else "categorical" for c in features.columns}
    return {"format": FORMAT, "pipeline": pipeline, "features": list(map(str, features.columns)), "target": target,
            "params": dict(params), "sklearn_version": sklearn.__version__, "schema": schema}


def score(bundle: dict[str, Any], df: pd.DataFrame) -> dict[str, float]:
    """Held-out metrics of a model bundle on `df` (which must carry the target column)."""
    import numpy as np
    from sklearn import metrics as m

    target = bundle["target"]
    missing = [c for c in bundle["features"] if c not in df.columns]
    if missing:
        raise ValueError(f"the evaluation data lacks the model's feature(s) {', '.join(missing)}")
    if target not in df.columns:
        raise ValueError(f"the evaluation data lacks the target column {target!r}")
    df = df[df[target].notna()]
    x, y = df[bundle["features"]], df[target]
    pipeline = bundle["pipeline"]
    pred = pipeline.predict(x)
    out = {
        "accuracy": float(m.accuracy_score(y, pred)),
        "n": float(len(y)),
    }
    classes = list(pipeline.classes_)
    if len(classes) == 2:
        proba = pipeline.predict_proba(x)[:, 1]
        positive = classes[1]
        out.update(
            f1=float(m.f1_score(y, pred, pos_label=positive, zero_division=0)),
            precision=float(m.precision_score(y, pred, pos_label=positive, zero_division=0)),
            recall=float(m.recall_score(y, pred, pos_label=positive, zero_division=0)),
            log_loss=float(m.log_loss(y, np.column_stack([1 - proba, proba]), labels=classes)),
        )
        if y.nunique() == 2:
            out["roc_auc"] = float(m.roc_auc_score(y == positive, proba))
    else:
        out["f1"] = float(m.f1_score(y, pred, average="macro", zero_division=0))
    return out


def save_model(bundle: dict[str, Any], directory: Path) -> Path:
    import joblib

    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (MODEL_FILE + ".tmp")
    joblib.dump(bundle, tmp)
    os.replace(tmp, directory / MODEL_FILE)
    return directory / MODEL_FILE


def load_model(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a model bundle written by `save_model` (a file, or a directory holding model.joblib).

    joblib files are pickles: load only models from a registry you control.
    """
    import joblib

    p = Path(path)
    if p.is_dir():
        p = p / MODEL_FILE
    if not p.is_file():
        raise ModelFileError(f"model file {p} does not exist")
    try:
        bundle = joblib.load(p)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a model we can use"
        raise ModelFileError(f"model file {p} cannot be read: {type(exc).__name__}: {exc}") from None
    if not isinstance(bundle, dict) or bundle.get("format") != FORMAT:
        raise ModelFileError(f"model file {p} is not a {FORMAT} bundle")
    return bundle


def _say(message: str) -> None:
    print(f"[train] {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.tabular", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, help="local path, gs:// URL or W&B artifact (entity/project/name:alias)")
    p.add_argument("--target", required=True, help="the label column")
    p.add_argument("--params", default="{}", help='hyperparameters as JSON, e.g. {"model": "random_forest"}')
    p.add_argument("--out", default=os.environ.get("AIP_MODEL_DIR", ""), help="output directory (default $AIP_MODEL_DIR)")
    args = p.parse_args(argv)
    if not args.out:
        p.error("--out is required when AIP_MODEL_DIR is not set")
    try:
        params = json.loads(args.params)
        if not isinstance(params, dict):
            raise ValueError("must be a JSON object")
    except ValueError as exc:
        print(f"error: --params is not a JSON object of hyperparameters: {exc}", file=sys.stderr)
        return 2
    from flows.data_contract import ContractOptions, check_table
    from flows.drift_data import load_table

    started = time.perf_counter()
    try:
        options = ContractOptions.from_mapping(params)
    except ValueError as exc:
        print(f"error: --params: {exc}", file=sys.stderr)
        return 2
    try:
        _say(f"loading {args.dataset}")
        df, report = check_table(load_table(args.dataset), target=args.target, options=options,
                                 what=f"dataset {args.dataset}")
        for warning in report.warnings:
            _say(f"data contract: {warning}")
        if not report.ok:
            print(f"error: data contract: {report.summary()}", file=sys.stderr)
            return 2
        holdout_fraction = float(params.get("holdout_fraction", 0.2))
        seed = int(params.get("seed", 0))
        train, holdout = split(df, args.target, holdout_fraction, seed)
        _say(f"{len(train)} training rows, {len(holdout)} held out; model {params.get('model', 'logistic_regression')}")
        bundle = fit(train, args.target, params)
        metrics = score(bundle, holdout)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    path = save_model(bundle, out)
    metrics.update(n_train=float(len(train)), n_holdout=float(len(holdout)))
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=1, sort_keys=True))
    _say("held-out " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k not in ("n", "n_train", "n_holdout")))
    _say(f"wrote {path} in {time.perf_counter() - started:.1f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The data contract: every case a new user hit, and fuzzed tables through the contract and training."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from flows.data_contract import ContractOptions, DataContractError, check_table, schema_of
from training.tabular import fit, make_dataset, score, split


@pytest.fixture(scope="module")
def churn() -> pd.DataFrame:
    return make_dataset(5000, seed=1)


def with_text_cells(df: pd.DataFrame, column: str, n: int = 75) -> pd.DataFrame:
    out = df.copy()
    out[column] = out[column].astype(object)
    rows = np.random.default_rng(0).choice(len(out), n, replace=False)
    for i, r in enumerate(sorted(rows)):
        out.loc[r, column] = ["oops", "#REF!", "??"][i % 3]
    return out


def test_a_clean_table_passes_and_keeps_its_types(churn) -> None:
    table, report = check_table(churn, target="churned")
    assert report.ok, report.errors
    assert report.schema["plan"] == "categorical" and report.schema["age"] == "numeric"
    assert set(table.columns) == set(churn.columns)


def test_text_in_a_numeric_column_is_refused_naming_column_cells_and_rows(churn) -> None:
    bad = with_text_cells(churn, "monthly_charges")
    _, report = check_table(bad, target="churned")
    assert not report.ok
    (message,) = report.errors
    assert message.startswith("numeric column 'monthly_charges': 75 cell(s) are not numbers (row ")
    first = int(bad.index[bad["monthly_charges"].map(lambda v: isinstance(v, str))][0]) + 1
    assert f"row {first}: " in message and "coerce_numeric" in message
    with pytest.raises(DataContractError, match="monthly_charges"):
        report.raise_for_errors()


def test_a_numeric_column_half_text_is_refused_and_numeric_codes_stay_categorical(churn) -> None:
    half = churn.copy()
    half["age"] = half["age"].round().astype(object)
    half.loc[half.index[::2], "age"] = "x"  # half the ages replaced: not a category with ~60 levels
    _, report = check_table(half, target="churned")
    (message,) = report.errors
    assert message.startswith(f"numeric column 'age': {len(half.index[::2]):,} cell(s) are not numbers (row 1: 'x'")
    codes = churn.copy()
    codes["plan"] = np.random.default_rng(0).choice(["1", "2", "3", "other"], len(codes))
    table, report = check_table(codes, target="churned")
    assert report.ok and report.schema["plan"] == "categorical"


def test_a_csv_with_another_delimiter_is_named(tmp_path) -> None:
    df = pd.DataFrame({"a;b;churned": ["1;2;0", "3;4;1"]})
    _, report = check_table(df, target="churned", what="dataset x.csv")
    (message,) = report.errors
    assert "reads as one column 'a;b;churned': it looks separated by ';'" in message


def test_coerce_numeric_reads_them_as_missing_and_counts_them(churn) -> None:
    table, report = check_table(with_text_cells(churn, "monthly_charges"), target="churned",
                                options=ContractOptions(coerce_numeric=True))
    assert report.ok
    assert table["monthly_charges"].dtype == float and int(table["monthly_charges"].isna().sum()) == 75
    assert any("75 cell(s) are not numbers" in w and "read as missing" in w for w in report.warnings)
    row = next(r for r in report.rows_table() if r["column"] == "monthly_charges")
    assert row["action"] == "coerced" and row["missing %"] == pytest.approx(1.5)


def test_ids_and_free_text_are_refused_or_dropped_never_one_hot_encoded(churn) -> None:
    df = churn.assign(customer_id=[f"c-{i:05d}" for i in range(len(churn))])
    _, report = check_table(df, target="churned")
    assert not report.ok and "column 'customer_id' is an id or free text" in report.errors[0]
    table, dropped = check_table(df, target="churned", options=ContractOptions(drop_high_cardinality=True))
    assert dropped.ok and "customer_id" not in table.columns


@pytest.mark.parametrize(("frame", "needle"), [
    (pd.DataFrame({"a": [], "churned": []}), "has no rows (only a header with 2 column(s))"),
    (pd.DataFrame({"a": [1, 2, 3], "churned": [1, 1, 1]}), "target column 'churned' needs at least two classes"),
    (pd.DataFrame({"a": [1, 2, 3], "churned": [1, 1, 0]}), "have fewer than 2 rows"),
    (pd.DataFrame({"a": [1.0, 2.0, math.inf, 4.0], "churned": [0, 1, 0, 1]}), "1 cell(s) are infinite (row 3: 'inf')"),
    (pd.DataFrame({"b": [1, 2, 3, 4]}), "target column 'churned' is not in the table"),
    (pd.DataFrame({"a": [None] * 4, "churned": [0, 1, 0, 1]}), "no usable feature column"),
])
def test_bad_tables_say_what_is_wrong(frame, needle) -> None:
    _, report = check_table(frame, target="churned")
    assert not report.ok and needle in report.summary(), report.summary()


def test_duplicated_names_empty_and_constant_columns_are_reported() -> None:
    dup = pd.DataFrame([[1, 2, 0]], columns=["a", "a", "churned"])
    assert "duplicated column name(s) 'a'" in check_table(dup, target="churned")[1].errors[0]
    df = pd.DataFrame({"x": range(10), "empty": [None] * 10, "same": ["k"] * 10, "churned": [0, 1] * 5})
    table, report = check_table(df, target="churned")
    assert report.ok and "empty" not in table.columns
    assert any("'empty' is empty" in w for w in report.warnings) and any("'same' is constant" in w for w in report.warnings)


def test_the_table_is_checked_against_the_production_models_schema(churn) -> None:
    train, _ = split(churn, "churned")
    schema = schema_of(fit(train, "churned", {}))
    assert schema["plan"] == "categorical" and schema["age"] == "numeric"
    new = churn.drop(columns=["age"]).assign(plan=np.arange(len(churn)) % 3, region="north")
    _, report = check_table(new, target="churned", schema=schema, against="production model churn-model:v1")
    text = report.summary()
    assert "lacks column(s) 'age' (numeric) that production model churn-model:v1 has" in text
    assert "'plan' is categorical in production model churn-model:v1 but numeric in the table" in " ".join(report.errors)
    assert any("'region' are new" in w for w in report.warnings)


def test_gradient_boosting_trains_on_categorical_data(churn) -> None:
    train, holdout = split(churn, "churned")
    bundle = fit(train, "churned", {"model": "gradient_boosting"})
    assert score(bundle, holdout)["accuracy"] > 0.7


# --------------------------------------------------------------------------------------------------
# Fuzzing: every table ends in a sound model or a named refusal, never a traceback

CELLS = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6),
                  st.text(max_size=6), st.sampled_from(["", "NA", "#REF!", "oops", "é", "🙂", "1.5", " 2 "]),
                  st.booleans())


@st.composite
def tables(draw):
    n_rows = draw(st.integers(0, 40))
    n_cols = draw(st.integers(1, 5))
    names = draw(st.lists(st.sampled_from(["a", "b", "c", "d", "ü", "x y", "1"]), min_size=n_cols, max_size=n_cols))
    columns = {}
    for i, name in enumerate(names):
        kind = draw(st.sampled_from(["float", "int", "cat", "mixed", "id"]))
        if kind == "float":
            col = draw(st.lists(st.one_of(st.floats(-1e6, 1e6), st.just(math.nan)), min_size=n_rows, max_size=n_rows))
        elif kind == "int":
            col = draw(st.lists(st.integers(-5, 5), min_size=n_rows, max_size=n_rows))
        elif kind == "cat":
            col = draw(st.lists(st.sampled_from(["p", "q", "r", None]), min_size=n_rows, max_size=n_rows))
        elif kind == "id":
            col = [f"id-{j}" for j in range(n_rows)]
        else:
            col = draw(st.lists(CELLS, min_size=n_rows, max_size=n_rows))
        columns[(name, i)] = col
    labels = draw(st.lists(st.sampled_from([0, 1, "yes", None]), min_size=n_rows, max_size=n_rows))
    frame = pd.DataFrame({k: pd.Series(v, dtype=object) for k, v in columns.items()})
    frame.columns = [name for name, _ in columns]
    frame["label"] = pd.Series(labels, dtype=object)
    return frame


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables(), st.booleans(), st.booleans())
def test_fuzzed_tables_end_in_a_sound_model_or_a_named_refusal(frame, coerce, drop) -> None:
    options = ContractOptions(coerce_numeric=coerce, drop_high_cardinality=drop)
    table, report = check_table(frame, target="label", options=options)
    if not report.ok:
        assert all(isinstance(e, str) and e for e in report.errors)
        return
    try:
        train, holdout = split(table, "label", 0.3 if len(table) >= 10 else 0.5)
    except ValueError as exc:
        assert "too few to hold out" in str(exc)
        return
    bundle = fit(train, "label", {})
    assert set(bundle["features"]) == set(report.schema)
    proba = bundle["pipeline"].predict_proba(holdout[bundle["features"]])
    assert np.isfinite(proba).all() and np.allclose(proba.sum(axis=1), 1)


def test_a_million_rows_through_the_contract_and_the_training_entry_point(tmp_path, capsys) -> None:
    import json

    from training.tabular import load_model, main

    df = make_dataset(1_000_000, seed=3)
    table, report = check_table(df, target="churned")
    assert report.ok and len(table) == 1_000_000
    df.to_parquet(tmp_path / "big.parquet")
    assert main(["--dataset", str(tmp_path / "big.parquet"), "--target", "churned", "--out", str(tmp_path / "m")]) == 0
    assert "800000 training rows, 200000 held out" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert metrics["n_holdout"] == 200_000 and metrics["accuracy"] > 0.85, metrics
    assert set(load_model(tmp_path / "m")["features"]) == set(report.schema)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables(), st.sampled_from(["csv", "parquet"]), st.sampled_from(["logistic_regression", "gradient_boosting"]))
def test_fuzzed_tables_through_the_training_entry_point(frame, fmt, model) -> None:
    """`python -m training.tabular` (what LocalTrainer runs and a Vertex AI job's container runs): exit 0
    with a model that loads and predicts and finite metrics, or exit 2 with one line naming the reason."""
    import contextlib
    import io
    import json
    import tempfile
    from pathlib import Path

    from training.tabular import load_model, main

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"table.{fmt}"
        if fmt == "csv":
            frame.to_csv(path, index=False)
        else:
            try:  # parquet holds neither duplicated names nor columns of mixed Python types
                frame.astype(str).where(frame.notna(), None).to_parquet(path)
            except ValueError:
                return
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(["--dataset", str(path), "--target", "label", "--params", json.dumps({"model": model}),
                       "--out", str(Path(tmp) / "model")])
        message = err.getvalue().strip()
        event(f"exit {rc}")
        assert "Traceback" not in message + out.getvalue()
        if rc == 2:
            assert message.startswith("error: ") and len(message.splitlines()) == 1, message
            return
        assert rc == 0 and not message, (rc, message)
        bundle = load_model(Path(tmp) / "model")
        metrics = json.loads((Path(tmp) / "model" / "metrics.json").read_text())
        assert all(math.isfinite(v) for v in metrics.values()), metrics
        checked, _ = check_table(pd.read_csv(path) if fmt == "csv" else pd.read_parquet(path), target="label")
        proba = bundle["pipeline"].predict_proba(checked[bundle["features"]])
        assert np.isfinite(proba).all() and np.allclose(proba.sum(axis=1), 1)

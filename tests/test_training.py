"""LocalTrainer really trains in a subprocess; the metrics it reports are those of the saved model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from blocks.local import LocalTrainer
from blocks.training import TrainingError, parse_metrics
from training.tabular import ModelFileError, load_model, main, make_dataset, score, split


@pytest.fixture(scope="module")
def churn_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "churn.parquet"
    make_dataset(3000, seed=7).to_parquet(path)
    return path


def test_local_trainer_trains_and_its_metrics_are_the_saved_models(churn_file: Path, tmp_path: Path) -> None:
    lines: list[str] = []
    result = LocalTrainer(output_dir=str(tmp_path)).train(
        str(churn_file), {"model": "logistic_regression", "C": 0.5, "seed": 3}, target="churned", log=lines.append)

    assert result.trainer == "local" and result.job.startswith("local-")
    assert Path(result.model_uri).is_file() and Path(result.model_uri).parent.parent == tmp_path
    # the child's own lines arrived, in order
    assert any("[train] loading" in line for line in lines)
    assert any("held-out accuracy=" in line for line in lines)
    assert lines.index(next(x for x in lines if "loading" in x)) < lines.index(next(x for x in lines if "wrote" in x))

    # reload the model and re-score it on the same held-out rows: the same numbers
    bundle = load_model(result.model_uri)
    assert bundle["params"]["C"] == 0.5 and bundle["target"] == "churned"
    _, holdout = split(make_dataset(3000, seed=7), "churned", 0.2, 3)
    rescored = score(bundle, holdout)
    for name in ("accuracy", "f1", "precision", "recall", "roc_auc", "log_loss"):
        assert result.metrics[name] == pytest.approx(rescored[name], abs=1e-12), name
    assert result.metrics["n_holdout"] == len(holdout) == 600
    assert result.metrics["accuracy"] > 0.8, "the generated data is learnable"


def test_hyperparameters_choose_the_model(churn_file: Path, tmp_path: Path) -> None:
    result = LocalTrainer(output_dir=str(tmp_path)).train(
        str(churn_file), {"model": "random_forest", "n_estimators": 20, "max_depth": 4}, target="churned",
        log=lambda _: None)
    model = load_model(result.model_uri)["pipeline"].named_steps["model"]
    assert type(model).__name__ == "RandomForestClassifier" and model.n_estimators == 20


@pytest.mark.parametrize(
    ("dataset", "target", "params", "needle"),
    [
        ("missing.parquet", "churned", {}, "table file not found"),
        (None, "no_such_column", {}, "target column 'no_such_column' is not in dataset"),
        (None, "churned", {"model": "svm"}, "model='svm' is not one of"),
        (None, "churned", {"model": "random_forest", "n_trees": 3}, "bad hyperparameters for random_forest"),
    ],
)
def test_a_failed_job_raises_with_the_childs_own_words(churn_file: Path, tmp_path: Path, dataset, target, params,
                                                        needle) -> None:
    with pytest.raises(TrainingError, match="exit code 2") as err:
        LocalTrainer(output_dir=str(tmp_path)).train(str(tmp_path / dataset) if dataset else str(churn_file),
                                                     params, target=target, log=lambda _: None)
    assert needle in str(err.value)
    assert err.value.state == "failed" and err.value.job


def test_a_job_over_its_timeout_is_killed(churn_file: Path, tmp_path: Path) -> None:
    trainer = LocalTrainer(output_dir=str(tmp_path), module="tests.fakes.slow_trainer", timeout_seconds=1.5)
    with pytest.raises(TrainingError, match="timed out after 1.5s") as err:
        trainer.train(str(churn_file), {}, target="churned", log=lambda _: None)
    assert err.value.state == "timeout"


def test_a_job_that_writes_no_metrics_is_a_failure(churn_file: Path, tmp_path: Path) -> None:
    trainer = LocalTrainer(output_dir=str(tmp_path), module="tests.fakes.slow_trainer", env={"SLOW_TRAINER_SECONDS": "0"})
    with pytest.raises(TrainingError, match="exited 0 but wrote no metrics.json"):
        trainer.train(str(churn_file), {}, target="churned", log=lambda _: None)


def test_training_cli_writes_model_and_metrics(churn_file: Path, tmp_path: Path, capsys) -> None:
    assert main(["--dataset", str(churn_file), "--target", "churned", "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics) >= {"accuracy", "f1", "roc_auc", "n_train", "n_holdout"}
    assert "held-out accuracy" in capsys.readouterr().out
    assert main(["--dataset", str(churn_file), "--target", "churned", "--out", str(tmp_path),
                 "--params", "[1]"]) == 2


def test_load_model_refuses_what_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="does not exist"):
        load_model(tmp_path / "nope.joblib")
    (tmp_path / "junk.joblib").write_bytes(b"not a pickle")
    with pytest.raises(ModelFileError, match="cannot be read"):
        load_model(tmp_path / "junk.joblib")


def test_parse_metrics_keeps_numbers_and_refuses_empty() -> None:
    assert parse_metrics({"accuracy": 0.9, "n": 10, "label": "x", "ok": True}, "m.json") == {"accuracy": 0.9, "n": 10.0}
    with pytest.raises(TrainingError, match="no numeric metric"):
        parse_metrics({"label": "x"}, "m.json")
    with pytest.raises(TrainingError, match="non-empty JSON object"):
        parse_metrics([], "m.json")


def test_generated_data_drifts_when_shifted() -> None:
    from flows.drift import ks_drift

    base, shifted = make_dataset(2000, seed=1), make_dataset(2000, seed=2, shift=1.0)
    assert not ks_drift(base, make_dataset(2000, seed=3)).drift_detected
    assert ks_drift(base, shifted).drift_detected

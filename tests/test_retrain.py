"""retrain under the session's Prefect server: train -> gate against production -> register -> event.

The flow runs in-process for the decision paths, and through its deployment trigger for the chain:
a `modelops.drift.detected` event -> the served `retrain` deployment -> a `candidate` in the local
registry -> `modelops.model.registered`, and the registry's W&B-shaped announcement back in Prefect.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from blocks.registry import LocalRegistry
from deployments.stack import Stack
from flows.outcomes import run_flow
from flows.retrain import main as retrain_cli
from flows.retrain import retrain
from tests.helpers import flow_runs, read_events, wait_until
from training.tabular import make_dataset

SECRET = "retrain-test-secret"


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("retrain-data")
    out = {}
    for name, seed, shift in (("old", 1, 0.0), ("new", 2, 1.0)):
        out[name] = str(d / f"churn-{name}.parquet")
        make_dataset(2500, seed=seed, shift=shift).to_parquet(out[name])
    return out


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_api: str) -> Path:
    monkeypatch.setenv("MODELOPS_HOME", str(tmp_path))
    monkeypatch.delenv("MODELOPS_RECEIVER_URL", raising=False)
    return tmp_path


def model_events(api: str, event: str, model: str) -> list[dict[str, Any]]:
    return read_events(api, event=event, resource_prefix=f"wandb.artifact.local/wandb-registry-model/{model}")


def test_first_model_registers_as_candidate(home: Path, datasets: dict[str, str], prefect_api: str) -> None:
    model = f"churn-{uuid.uuid4().hex[:6]}"
    result = retrain(dataset=datasets["old"], model=model, reason="drift")

    assert result["passed"] and result["registered"] == "v0" and result["aliases"] == ["candidate"]
    assert result["production_version"] is None and "no production model" in result["gate"]
    mv = LocalRegistry().get(model, "candidate")
    assert mv.metadata["training_job"] == result["training_job"] and mv.metadata["dataset"] == datasets["old"]
    assert mv.metadata["metrics"]["accuracy"] == result["metrics"]["accuracy"] >= 0.85
    (event,) = wait_until(lambda: model_events(prefect_api, "modelops.model.registered", model), 30,
                          message="modelops.model.registered")
    assert event["resource"]["prefect.resource.id"] == f"wandb.artifact.local/wandb-registry-model/{model}:v0"
    assert event["payload"]["metrics"]["f1"] == result["metrics"]["f1"]
    roles = {r["prefect.resource.role"] for r in event["related"]}
    assert {"dataset", "flow-run"} <= roles, roles
    artifact = httpx.post(f"{prefect_api}/artifacts/filter",
                          json={"artifacts": {"key": {"any_": [f"gate-{model}"]}}}).json()
    assert artifact and artifact[0]["type"] == "table"


def test_candidate_is_judged_against_production_on_the_same_rows(home: Path, datasets: dict[str, str],
                                                                  prefect_api: str) -> None:
    model = f"churn-{uuid.uuid4().hex[:6]}"
    first = retrain(dataset=datasets["old"], model=model)
    LocalRegistry().set_alias(model, first["registered"], "production")

    second = retrain(dataset=datasets["new"], model=model, reason="drift")
    assert second["production_version"] == "v0"
    # production was re-scored on the new data's held-out rows, not taken from its old metadata
    assert second["production_metrics"]["accuracy"] != first["metrics"]["accuracy"]
    assert second["passed"] and second["registered"] == "v1"
    assert second["metrics"]["accuracy"] > second["production_metrics"]["accuracy"], "retraining on new data helps"
    registry = LocalRegistry()
    assert registry.get(model, "production").version == "v0" and registry.get(model, "candidate").version == "v1"


def test_a_candidate_below_the_floor_is_refused_and_kept_as_refused_never_candidate(
        home: Path, datasets: dict[str, str], prefect_api: str) -> None:
    model = f"churn-{uuid.uuid4().hex[:6]}"
    result = run_flow(retrain, dataset=datasets["old"], model=model, floors={"accuracy": 0.99})
    assert not result["passed"] and result["registered"] is None
    assert "accuracy" in result["gate"] and "breaks the floor 0.99" in result["gate"]
    # the registry alone answers "what happened to this version": kept, aliased `refused`, with the reasons
    registry = LocalRegistry()
    (kept,) = registry.versions(model)
    assert result["refused_version"] == kept.version == "v0"
    assert kept.aliases == ("refused",) and registry.find(model, "candidate") is None
    refused = kept.metadata["refused"]
    assert refused["stage"] == "gate" and refused["reasons"] == [result["gate"]]
    assert refused["run"] == f"retrain-{model}-manual" and "/runs/flow-run/" in refused["run_url"] and refused["at"]
    assert kept.metadata["metrics"] == result["metrics"] and kept.metadata["dataset"] == datasets["old"]
    (event,) = wait_until(lambda: model_events(prefect_api, "modelops.model.rejected", model), 30,
                          message="modelops.model.rejected")
    assert event["payload"]["gate"] == result["gate"] and event["payload"]["refused_version"] == "v0"
    # a rerun that passes registers the next version as candidate; the refused one keeps its alias
    passed = run_flow(retrain, dataset=datasets["old"], model=model, floors={"accuracy": 0.5})
    assert passed["registered"] == "v1"
    assert registry.get(model, "candidate").version == "v1" and registry.get(model, "refused").version == "v0"


def test_bad_input_fails_before_training(home: Path, datasets: dict[str, str], capsys) -> None:
    from prefect.exceptions import ParameterTypeError

    with pytest.raises(ParameterTypeError, match="floors.accuracy"):
        retrain(dataset=datasets["old"], model="m", floors={"accuracy": "high"})
    with pytest.raises(ValueError, match="max_regression must be >= 0"):
        retrain(dataset=datasets["old"], model="m", max_regression=-0.1)
    with pytest.raises(ValueError, match="no dataset to train on"):
        retrain(dataset="", model="m")
    assert not (home / "training").exists(), "nothing was trained"
    with pytest.raises(SystemExit) as exit_:
        retrain_cli(["--dataset", datasets["old"], "--floor", "accuracy"])
    assert exit_.value.code == 2
    assert "must look like metric=value" in capsys.readouterr().err


def test_cli_runs_the_flow(home: Path, datasets: dict[str, str], capsys) -> None:
    model = f"churn-{uuid.uuid4().hex[:6]}"
    assert retrain_cli(["--dataset", datasets["old"], "--model", model, "--floor", "accuracy=0.8"]) == 0
    assert '"registered": "v0"' in capsys.readouterr().out
    assert retrain_cli(["--dataset", str(home / "missing.parquet"), "--model", model]) == 2
    assert "table file not found" in capsys.readouterr().err


# ------------------------------------------------------------------------------ the data contract, exit codes


def _run_state(api: str, model: str) -> dict[str, Any]:
    (run,) = [r for r in flow_runs(api, flow_name="retrain") if r["name"] == f"retrain-{model}-manual"][-1:]
    return run["state"]


def test_a_gate_refusal_exits_3_and_ends_refused(home: Path, tmp_path: Path, prefect_api: str, capsys) -> None:
    import numpy as np

    noise = make_dataset(1500, seed=5)
    noise["churned"] = np.random.default_rng(0).integers(0, 2, len(noise))  # labels that are noise
    path = tmp_path / "noise.parquet"
    noise.to_parquet(path)
    model = f"churn-{uuid.uuid4().hex[:6]}"
    assert retrain_cli(["--dataset", str(path), "--model", model, "--floor", "accuracy=0.999"]) == 3
    err = capsys.readouterr().err
    assert "retrain refused by the gate" in err and "accuracy" in err and len(err.strip().splitlines()) == 1
    state = _run_state(prefect_api, model)
    assert state["type"] == "FAILED" and state["name"] == "Refused", state
    (event,) = wait_until(lambda: model_events(prefect_api, "modelops.model.rejected", model), 30,
                          message="modelops.model.rejected")
    assert event["payload"]["stage"] == "gate" and event["payload"]["reasons"]


def test_text_in_a_numeric_column_is_refused_before_training(home: Path, tmp_path: Path, prefect_api: str,
                                                             capsys) -> None:
    df = make_dataset(5000, seed=4)
    df["monthly_charges"] = df["monthly_charges"].astype(object)
    for i, r in enumerate(range(10, 760, 10)):  # 75 cells
        df.loc[r, "monthly_charges"] = ["oops", "#REF!", "??"][i % 3]
    path = tmp_path / "dirty.csv"
    df.to_csv(path, index=False)
    model = f"churn-{uuid.uuid4().hex[:6]}"
    for extra in ([], ["--params", '{"model": "gradient_boosting"}']):
        assert retrain_cli(["--dataset", str(path), "--model", model, *extra]) == 2
        err = capsys.readouterr().err
        assert "numeric column 'monthly_charges': 75 cell(s) are not numbers (row 11: 'oops'" in err, err
        assert "Sparse data" not in err and "Traceback" not in err
    assert not (home / "training").exists(), "nothing was trained"
    assert LocalRegistry().versions(model) == []
    state = _run_state(prefect_api, model)
    assert state["name"] == "Refused" and "data contract" in state["message"]
    artifact = httpx.post(f"{prefect_api}/artifacts/filter",
                          json={"artifacts": {"key": {"any_": [f"data-contract-{model}"]}}}).json()
    assert artifact and "REFUSED" in artifact[0]["description"]
    rows = artifact[0]["data"] if isinstance(artifact[0]["data"], list) else __import__("json").loads(artifact[0]["data"])
    bad = next(r for r in rows if r["column"] == "monthly_charges")
    assert bad["action"] == "refused" and "75 cell(s)" in bad["problems"]
    events = wait_until(lambda: model_events(prefect_api, "modelops.model.rejected", model), 30,
                        message="modelops.model.rejected")
    assert {e["payload"]["stage"] for e in events} == {"data-contract"}
    # the explicit option trains on it, the cells read as missing
    assert retrain_cli(["--dataset", str(path), "--model", model, "--coerce-numeric"]) == 0


def test_a_dataset_production_cannot_be_scored_on_says_so(home: Path, datasets: dict[str, str], tmp_path: Path,
                                                          capsys) -> None:
    model = f"churn-{uuid.uuid4().hex[:6]}"
    first = retrain(dataset=datasets["old"], model=model)
    LocalRegistry().set_alias(model, first["registered"], "production")
    path = tmp_path / "no-age.parquet"
    make_dataset(2500, seed=2).drop(columns=["age"]).to_parquet(path)
    assert retrain_cli(["--dataset", str(path), "--model", model]) == 2
    err = capsys.readouterr().err
    assert f"lacks column(s) 'age' (numeric) that production model {model}:v0 has" in err
    assert "--no-compare-production" in err
    assert retrain_cli(["--dataset", str(path), "--model", model, "--no-compare-production",
                        "--floor", "accuracy=0.8"]) == 0


@pytest.mark.parametrize(("args", "needle"), [
    (["--params", "{model: 1}"], "--params is not valid JSON"),
    (["--params", "[1]"], "--params must be a JSON object"),
    (["--params", '{"model": "svm"}'], "model='svm' is not one of"),
])
def test_bad_options_exit_2_naming_the_option(home: Path, datasets: dict[str, str], capsys, args, needle) -> None:
    assert retrain_cli(["--dataset", datasets["old"], *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1


def test_a_header_only_csv_is_a_table_without_rows(home: Path, tmp_path: Path, capsys) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("tenure_months,plan,churned\n")
    assert retrain_cli(["--dataset", str(path), "--model", "m"]) == 2
    assert "has no rows (only a header with 3 column(s))" in capsys.readouterr().err


# ------------------------------------------------------------------------------ through the trigger


@pytest.fixture(scope="module")
def served(prefect_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    st = Stack(tmp_path_factory.mktemp("retrain-e2e"), prefect_port=prefect_stack.prefect_port, webhook_secret=SECRET)
    st.start_receiver()
    st.start_serve("--only", "retrain", deployments=("retrain",))
    try:
        yield st
    finally:
        st.stop()
        deployment = httpx.get(f"{st.api_url}/deployments/name/retrain/retrain").json()
        httpx.delete(f"{st.api_url}/automations/owned-by/prefect.deployment.{deployment['id']}")


def test_drift_detected_event_retrains_through_the_deployment(served: Stack, datasets: dict[str, str]) -> None:
    event_id = str(uuid.uuid4())
    event = {
        "id": event_id, "occurred": datetime.now(timezone.utc).isoformat(), "event": "modelops.drift.detected",
        "resource": {"prefect.resource.id": f"modelops.dataset.{datasets['new']}", "prefect.resource.name": "churn-new"},
        "payload": {"dataset": datasets["new"], "reference": datasets["old"], "drift_detected": True,
                    "drifted_features": ["support_calls"]},
    }
    assert httpx.post(f"{served.api_url}/events", json=[event]).status_code == 204

    def finished() -> list[dict[str, Any]]:
        return [r for r in flow_runs(served.api_url, flow_name="retrain")
                if r["parameters"].get("event_id") == event_id and r["state_type"] in ("COMPLETED", "FAILED", "CRASHED")]

    (run,) = wait_until(finished, 120, message="the retrain run started by the drift event")
    assert run["state_type"] == "COMPLETED", run["state"]
    assert run["deployment_id"] and run["parameters"]["dataset"] == datasets["new"]
    assert run["parameters"]["reason"] == "drift in support_calls"

    registry = LocalRegistry(path=str(served.home / "registry" / "model"))
    candidate = registry.get("churn-model", "candidate")
    assert candidate.metadata["trigger_event_id"] == event_id and candidate.metadata["reason"] == "drift in support_calls"
    registered = wait_until(lambda: [e for e in model_events(served.api_url, "modelops.model.registered", "churn-model")
                                     if e["payload"]["training_job"] == candidate.metadata["training_job"]],
                            30, message="modelops.model.registered")
    assert registered[0]["payload"]["version"] == candidate.version
    # the local registry announced the new candidate like W&B would: back through the receiver
    wait_until(lambda: [e for e in model_events(served.api_url, "wandb.artifact.alias-added", "churn-model")
                        if e["resource"]["wandb.version"] == candidate.version
                        and e["resource"]["wandb.alias"] == "candidate"], 30, message="the candidate alias event")

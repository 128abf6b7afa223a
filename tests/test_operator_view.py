"""What an operator sees in the Prefect UI (issue: outcomes at a glance): outcome states, rollback /
undeploy / promote as tasks in the run's graph, figures inside markdown artifacts, the evidence an
approver gets, and the model status board. Read back through the Prefect API, as the UI reads them."""

from __future__ import annotations

import base64
import re
import threading
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from deployments.traffic import Traffic
from flows.outcomes import run_flow
from tests.helpers import flow_runs, wait_until

FAST = dict(steps=[50, 100], bake=2.0, final_bake=1.0, min_requests=20)


def artifact(api: str, key: str) -> dict[str, Any]:
    found = httpx.post(f"{api}/artifacts/filter", json={"artifacts": {"key": {"any_": [key]}}, "sort": "CREATED_DESC",
                                                        "limit": 1}, timeout=10).json()
    assert found, f"no artifact {key!r}"
    return found[0]


def svg_images(markdown: str) -> list[str]:
    return [base64.b64decode(m).decode() for m in re.findall(r"\(data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)\)",
                                                             markdown)]


def run_of(api: str, flow_name: str, name: str) -> dict[str, Any]:
    (run,) = [r for r in flow_runs(api, flow_name=flow_name) if r["name"] == name][-1:]
    return run


def task_names(api: str, run_id: str) -> list[str]:
    runs = httpx.post(f"{api}/task_runs/filter", json={"flow_runs": {"id": {"any_": [run_id]}}, "limit": 200},
                      timeout=10).json()
    return [re.sub(r"-[0-9a-f]{3}$", "", r["name"]) for r in sorted(runs, key=lambda r: r["created"])]


# ---------------------------------------------------------------------------------------------- outcomes


def test_run_flow_returns_decisions_and_raises_errors(prefect_api: str) -> None:
    from prefect import flow

    from flows.outcomes import decision

    @flow(name="outcome-probe")
    def probe(kind: str) -> Any:
        if kind == "error":
            raise LookupError("a real error")
        return decision("RolledBack", success=False, message="m", data={"kind": kind})

    assert run_flow(probe, kind="decision") == {"kind": "decision"}
    with pytest.raises(LookupError, match="a real error"):
        run_flow(probe, kind="error")
    with pytest.raises(ValueError, match="unknown outcome state"):
        decision("Maybe", success=True, message="", data=None)


# ---------------------------------------------------------------------------------------------- drift


def test_drift_shows_distributions_and_reports_the_label_apart(prefect_api: str, tmp_path: Path) -> None:
    from flows.drift_check import drift_check

    rng = np.random.default_rng(3)
    n = 2000
    ref = pd.DataFrame({"age": rng.normal(40, 10, n), "plan": rng.choice(["a", "b"], n),
                        "income": rng.normal(5, 1, n), "label": rng.choice([0, 1], n, p=[0.8, 0.2])})
    cur = pd.DataFrame({"age": rng.normal(46, 10, n), "plan": rng.choice(["a", "b"], n, p=[0.2, 0.8]),
                        "income": rng.normal(5, 1, n), "label": rng.choice([0, 1], n, p=[0.5, 0.5])})
    ref.to_parquet(tmp_path / "ref.parquet")
    cur.to_parquet(tmp_path / "cur.parquet")
    coll = f"churn-{uuid.uuid4().hex[:6]}"
    state = drift_check(reference=str(tmp_path / "ref.parquet"), current=str(tmp_path / "cur.parquet"),
                        log_wandb=False, target="label", model=coll, return_state=True)
    assert state.type.value == "COMPLETED" and state.name == "Drift"
    result = state.result()
    assert {f["name"] for f in result["features"]} == {"age", "plan", "income"}, "the label is not a feature"
    assert result["label_shift"]["name"] == "label" and result["label_shift"]["drifted"] is True
    summary = artifact(prefect_api, "drift-summary")["data"]
    images = svg_images(summary)
    assert len(images) == 3, "age, plan (drifted) and the label; income did not drift: no picture"
    assert all(img.startswith("<svg") and len(img) < 60_000 for img in images)
    assert "feature age: D = " in images[0] and "reference" in images[0] and "current" in images[0]
    assert "Label shift: `label`" in summary and "label label: V = " in images[-1]
    board = artifact(prefect_api, f"model-status-{coll}")["data"]
    assert "drift check of " in board and "**Drift** in age, plan" in board and "label label shifted" in board

    same = drift_check(reference=str(tmp_path / "ref.parquet"), current=str(tmp_path / "ref.parquet"),
                       log_wandb=False, target="label", return_state=True)
    assert same.name == "NoDrift" and svg_images(artifact(prefect_api, "drift-summary")["data"]) == []


# ---------------------------------------------------------------------------------------------- canary


def test_a_rollback_is_a_red_state_with_its_tasks_plot_and_board(local_endpoint, churn_models, prefect_api) -> None:
    from blocks.registry import LocalRegistry
    from flows.canary import canary_rollout

    st, ep = local_endpoint
    models = churn_models
    coll = f"churn-{uuid.uuid4().hex[:6]}"
    registry = LocalRegistry()
    registry.register(coll, models["v1"], aliases=["production"])
    registry.register(coll, models["v2"], metadata={"demo_fault": {"error_rate": 0.5}}, aliases=["candidate"])
    stable = ep.deploy(models["v1"], f"{coll}:v0")
    ep.set_traffic({stable: 100})
    with Traffic(st.endpoint_url, rps=50):
        result = run_flow(canary_rollout, collection=coll, version="v1", endpoint_block=st.endpoint_url,
                          policy_block=LENIENT, **FAST)
    assert result["outcome"] == "rolled-back", result
    run = run_of(prefect_api, "canary-rollout", f"canary-{coll}-v1")
    assert (run["state_type"], run["state_name"]) == ("FAILED", "RolledBack")
    assert run["state"]["message"].startswith("rolled back: ") and f"{coll}:v0" in run["state"]["message"]
    tasks = task_names(prefect_api, run["id"])
    assert tasks[:2] == ["deploy-canary", "shift-traffic"], tasks
    assert tasks[-3:] == ["roll-back-traffic", "undeploy", "update-registry"], tasks

    report = artifact(prefect_api, f"canary-{coll}-v1-report")["data"]
    (svg,) = svg_images(report)
    assert "error rate (%)" in svg and "median latency (ms)" in svg and "ceiling 5%" in svg
    assert ": **rolled back**\n\ncanary error rate" in report and "| 50% | ROLLBACK | canary error rate" in report
    board = artifact(prefect_api, f"model-status-{coll}")["data"]
    assert f"| serving (endpoint) | **{coll}:v0** (100% of the traffic)" in board, board
    assert f"canary of {coll}:v1 | **RolledBack**" in board and "[canary-" in board

    # and a promotion: green, named, with its promote task
    with Traffic(st.endpoint_url, rps=50):
        ok = run_flow(canary_rollout, collection=coll, version="v0", model_uri=models["v2"],
                      endpoint_block=st.endpoint_url, policy_block=LENIENT, **FAST)
    assert ok["outcome"] == "already-serving"
    again = run_of(prefect_api, "canary-rollout", f"canary-{coll}-v0")
    assert (again["state_type"], again["state_name"]) == ("COMPLETED", "AlreadyServing")


def test_a_promotion_ends_promoted_with_a_promote_task(local_endpoint, churn_models, prefect_api) -> None:
    from flows.canary import canary_rollout

    st, ep = local_endpoint
    models = churn_models
    coll = f"churn-{uuid.uuid4().hex[:6]}"
    stable = ep.deploy(models["v1"], f"{coll}:v1")
    ep.set_traffic({stable: 100})
    with Traffic(st.endpoint_url, rps=50):
        result = run_flow(canary_rollout, collection=coll, version="v2", model_uri=models["v2"],
                          endpoint_block=st.endpoint_url, policy_block=LENIENT, **FAST)
    assert result["outcome"] == "promoted", result
    run = run_of(prefect_api, "canary-rollout", f"canary-{coll}-v2")
    assert (run["state_type"], run["state_name"]) == ("COMPLETED", "Promoted")
    assert task_names(prefect_api, run["id"])[-2:] == ["promote", "update-registry"]
    board = artifact(prefect_api, f"model-status-{coll}")["data"]
    assert f"| serving (endpoint) | **{coll}:v2** (100% of the traffic)" in board and "**Promoted**" in board


LENIENT = "rollout-policy/operator-view-latency-lenient"


@pytest.fixture(scope="module", autouse=True)
def lenient_policy(prefect_api: str) -> None:
    """Latency on a loaded test machine is noisy; these tests are not about it (see test_canary.py)."""
    from blocks.policy import RolloutPolicy

    RolloutPolicy(min_latency_increase=1.0).save(LENIENT.split("/", 1)[1], overwrite=True)


def test_the_approval_form_carries_the_evidence(local_endpoint, churn_models, prefect_api) -> None:
    from prefect.flow_runs import resume_flow_run

    from blocks.registry import LocalRegistry
    from flows.canary import canary_rollout
    from flows.gate import GatePolicy, evaluate_gate

    st, ep = local_endpoint
    models = churn_models
    coll = f"churn-{uuid.uuid4().hex[:6]}"
    verdict = evaluate_gate({"accuracy": 0.91, "f1": 0.88}, {"accuracy": 0.90, "f1": 0.86}, GatePolicy())
    registry = LocalRegistry()
    registry.register(coll, models["v1"], aliases=["production"])
    registry.register(coll, models["v2"], metadata={"gate": verdict.to_dict(), "reason": "drift in age, plan",
                                                    "dataset": "acme/churn/churn-data:v7"}, aliases=["candidate"])
    stable = ep.deploy(models["v1"], f"{coll}:v0")
    ep.set_traffic({stable: 100})

    def answer() -> None:
        (fr,) = wait_until(lambda: [r for r in flow_runs(prefect_api, flow_name="canary-rollout")
                                    if r["name"] == f"canary-{coll}-v1" and r["state_type"] == "PAUSED"], 90,
                           message="the paused rollout")
        resume_flow_run(fr["id"], run_input={"approve": False, "comment": "metrics too close"})

    waiter = threading.Thread(target=answer, daemon=True)
    waiter.start()
    result = run_flow(canary_rollout, collection=coll, version="v1", endpoint_block=st.endpoint_url,
                      require_approval=True, approval_timeout=120, promoted_by="ada", policy_block=LENIENT,
                      **FAST)
    waiter.join(10)
    assert result["outcome"] == "rejected" and result["comment"] == "metrics too close"
    evidence = artifact(prefect_api, f"approval-{coll}-v1")["data"]
    assert "promoted by: **ada**" in evidence
    assert "trigger: drift in age, plan (dataset `acme/churn/churn-data:v7`)" in evidence
    assert "| accuracy | 0.9100 | 0.9000 |" in evidence and "| f1 | 0.8800 | 0.8600 |" in evidence
    assert "review issue:" in evidence
    run = run_of(prefect_api, "canary-rollout", f"canary-{coll}-v1")
    assert (run["state_type"], run["state_name"]) == ("FAILED", "Rejected")
    assert "metrics too close" in run["state"]["message"]
    assert ep.traffic() == {stable: 100}

"""The demo's story is a test: the whole chain on the session's Prefect server, through signed
W&B-shaped webhooks only, every step's outcome read back from Prefect's API (flow run states,
events) and from the endpoint. Same code as `make demo` (`deployments.scenario`), shorter settings."""

from __future__ import annotations

import os
import uuid
from typing import Iterator

import httpx
import pytest

from deployments.scenario import Scenario, Settings, summary
from deployments.stack import Stack
from tests.helpers import read_events, wait_until

DEPLOYMENTS = ("review-issue", "drift-check", "retrain", "canary-rollout")
FAST = Settings(rps=50, steps=(25, 100), bake=2.5, final_bake=1.5, min_requests=20, rows=2500, timeout=180)


@pytest.fixture(scope="module")
def stack(prefect_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from blocks.policy import RolloutPolicy

    policy = f"scenario-{uuid.uuid4().hex[:6]}"
    RolloutPolicy(steps=list(FAST.steps), bake_seconds=FAST.bake, final_bake_seconds=FAST.final_bake,
                  min_requests=FAST.min_requests, deadline_seconds=300, min_latency_increase=1.0).save(policy)
    st = Stack(tmp_path_factory.mktemp("scenario"), prefect_port=prefect_stack.prefect_port,
               webhook_secret="scenario-secret")
    saved = dict(os.environ)
    try:
        st.start_receiver()
        st.start_endpoint("--seed", "3")
        st.start_serve(*[a for d in DEPLOYMENTS for a in ("--only", d)], deployments=DEPLOYMENTS,
                       env={"MODELOPS_ROLLOUT_POLICY_BLOCK": f"rollout-policy/{policy}"})
        yield st
    finally:
        os.environ.clear()
        os.environ.update(saved)  # the scenario points MODELOPS_* at its stack
        st.stop()
        for name in DEPLOYMENTS:
            d = httpx.get(f"{st.api_url}/deployments/name/{name}/{name}")
            if d.status_code == 200:
                httpx.delete(f"{st.api_url}/automations/owned-by/prefect.deployment.{d.json()['id']}")


def test_the_whole_chain(stack: Stack) -> None:
    lines: list[str] = []
    results = Scenario(stack, FAST, lines.append).run()
    report = summary(results) + "\n" + "\n".join(lines)
    assert [r.step for r in results] == [
        "(0) drift-check of the reference",
        "(a) review issue for churn-model:v0", "(a) canary of churn-model:v0",
        "(b) drift-check of the new version", "(b) retrain on the drifted data",
        "(b) review issue for churn-model:v1", "(b) canary of churn-model:v1 against v0",
        "(c) canary of the faulty churn-model:v2", "(c) registry after the rollback",
        "(c) production back on v1: no new rollout",
    ], report
    assert all(r.ok for r in results), report
    assert all(r.links for r in results), "every step links its flow run in the UI"

    # no loop: moving production back started one rollout of v1 (AlreadyServing) and one review run,
    # which found v1's issue; once every delivery is in Prefect and every run has ended, that is all
    def quiet() -> bool:
        health = httpx.get(f"http://127.0.0.1:{stack.receiver_port}/healthz", timeout=10).json()
        runs = httpx.post(f"{stack.api_url}/flow_runs/filter", json={"limit": 200}, timeout=10).json()
        return health["outbox"]["pending"] == 0 and health["outbox"].get("sent", 0) == 0 and all(
            r["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") for r in runs
            if r["parameters"].get("collection") == "churn-model")
    wait_until(quiet, 120, message="every delivery stored and every run ended")
    canaries = [r for r in Scenario(stack, FAST).runs("canary-rollout") if r["parameters"].get("collection") == "churn-model"]
    per_version = sorted((r["parameters"]["version"], r["state_name"]) for r in canaries)
    assert per_version == [("v0", "Promoted"), ("v1", "AlreadyServing"), ("v1", "Promoted"), ("v2", "RolledBack")], \
        per_version
    issues = sorted(p.name for p in (stack.home / "issues").glob("*.md"))
    assert len(issues) == 3, f"one review issue per promoted version, none for the restore: {issues}"
    from blocks.local import LocalIssueStore

    store = LocalIssueStore(path=str(stack.home / "issues"))
    marker = "<!-- modelops:review-issue wandb.artifact.local/wandb-registry-model/churn-model:{} -->"
    assert "rolled-back" in store.issue(store.find_issue(marker.format("v2")).number)["labels"]
    assert "promoted" in store.issue(store.find_issue(marker.format("v1")).number)["labels"]

    # the datasets say what happened to them: v1 drifted, and the retrain on it registered churn-model:v1
    from blocks.registry import LocalRegistry

    datasets = LocalRegistry(path=str(stack.home / "registry" / "dataset"), registry="dataset")
    v0, v1 = datasets.get("churn-data", "v0"), datasets.get("churn-data", "v1")
    assert v0.metadata["drift"]["drift_detected"] is False and "drifted" not in v0.aliases
    assert v1.metadata["drift"]["drift_detected"] is True and "drifted" in v1.aliases
    assert "churned" not in v1.metadata["drift"]["drifted_features"], "the label is reported apart"
    assert v1.metadata["retrain"]["outcome"] == "registered" and v1.metadata["retrain"]["version"] == "v1"
    assert "/runs/flow-run/" in v1.metadata["drift"]["run"]

    # the same, read back from Prefect's events: the chain ran through automations
    model = "wandb.artifact.local/wandb-registry-model/churn-model"
    promoted = {e["resource"]["wandb.version"] for e in read_events(stack.api_url, event="modelops.canary.promoted",
                                                                     resource_prefix=model)}
    rolled_back = {e["resource"]["wandb.version"] for e in read_events(
        stack.api_url, event="modelops.canary.rolled-back", resource_prefix=model)}
    registered = {e["resource"]["wandb.version"] for e in read_events(
        stack.api_url, event="modelops.model.registered", resource_prefix=model)}
    assert {"v0", "v1"} <= promoted and "v2" in rolled_back and "v2" not in promoted
    assert "v1" in registered, "v1 came from the retrain flow"
    detected = read_events(stack.api_url, event="modelops.drift.detected",
                           resource_prefix="wandb.artifact.local/wandb-registry-dataset/churn-data:v1")
    assert detected and "support_calls" in detected[0]["payload"]["drifted_features"]

"""canary-rollout on the local endpoint with real HTTP traffic: promote, roll back, hold, resume, faults,
approval. After every scenario the split sums to 100 and names only deployed versions."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from blocks.local_endpoint import LocalEndpoint
from deployments.stack import ROOT, Stack
from deployments.traffic import Traffic
from flows.canary import canary_rollout
from flows.outcomes import run_flow
from tests.helpers import flow_runs, read_events, wait_until
from training.tabular import fit, make_dataset, save_model, split

#: None of these tests is about latency (its judgement is unit-tested in test_canary_verdict.py), and the
#: local endpoint's latency is noisy on a loaded machine: a canary fails on latency only when its median
#: is at least twice stable's. Errors, request counts and every other check are judged as by default.
POLICY_BLOCK = "rollout-policy/canary-tests-latency-lenient"
FAST = dict(steps=[25, 50, 100], bake=1.5, final_bake=1.5, min_requests=20, policy_block=POLICY_BLOCK)


@pytest.fixture(scope="module", autouse=True)
def lenient_latency_policy(prefect_api: str) -> str:
    """The RolloutPolicy block every rollout in this module uses (in process and on the CLI)."""
    from blocks.policy import RolloutPolicy

    RolloutPolicy(min_latency_increase=1.0).save(POLICY_BLOCK.split("/", 1)[1], overwrite=True)
    return POLICY_BLOCK


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = {}
    for name, seed in (("v1", 1), ("v2", 2), ("v3", 3)):
        train, _ = split(make_dataset(1200, seed=seed), "churned")
        out[name] = str(save_model(fit(train, "churned", {}), tmp_path_factory.mktemp(name)))
    return out


@pytest.fixture()
def endpoint(tmp_path: Path, prefect_api: str) -> Iterator[tuple[Stack, LocalEndpoint]]:
    st = Stack(tmp_path, prefect_port=int(prefect_api.rsplit(":", 1)[1].split("/")[0]))
    st.start_endpoint("--seed", "7")
    ep = LocalEndpoint(url=st.endpoint_url)
    try:
        yield st, ep
        assert_safe(ep)
    finally:
        st.stop()


def assert_safe(ep: LocalEndpoint) -> dict[str, int]:
    live = ep.traffic()
    deployed = {m.id for m in ep.deployed()}
    assert sum(live.values()) == 100 and set(live) <= deployed, (live, deployed)
    return live


def stable_on(ep: LocalEndpoint, uri: str, name: str = "churn:v1") -> str:
    deployed_id = ep.deploy(uri, name)
    ep.set_traffic({deployed_id: 100})
    return deployed_id


def names(ep: LocalEndpoint) -> dict[str, int]:
    by_id = {m.id: m.display_name for m in ep.deployed()}
    return {by_id[k]: v for k, v in ep.traffic().items()}


def collection() -> str:
    return f"churn-{uuid.uuid4().hex[:6]}"


def test_a_good_version_is_promoted_and_the_old_one_undeployed(endpoint, models, prefect_api) -> None:
    st, ep = endpoint
    coll = collection()
    stable_on(ep, models["v1"], f"{coll}:v1")
    with Traffic(st.endpoint_url, rps=60):
        result = run_flow(canary_rollout, collection=coll, version="v2", model_uri=models["v2"], endpoint_block=st.endpoint_url,
                                **FAST)
    assert result["outcome"] == "promoted", result
    assert [s["percent"] for s in result["steps"] if s["decision"] == "ADVANCE"] == [25, 50, 100]
    assert names(ep) == {f"{coll}:v2": 100}
    assert [m.display_name for m in ep.deployed()] == [f"{coll}:v2"]
    prefix = f"wandb.artifact.local/wandb-registry-model/{coll}:v2"
    wait_until(lambda: {e["event"] for e in read_events(prefect_api, resource_prefix=prefix)} >= {
        "modelops.canary.started", "modelops.canary.step", "modelops.canary.promoted"}, 30, message="canary events")
    (started,) = read_events(prefect_api, event="modelops.canary.started", resource_prefix=prefix)
    assert started["payload"]["policy"]["min_latency_increase"] == 1.0, "the module's policy block is in force"
    steps = [e for e in read_events(prefect_api, event="modelops.canary.step", resource_prefix=prefix)]
    assert sorted(e["payload"]["percent"] for e in steps) == [25, 50, 100]
    table = httpx.post(f"{prefect_api}/artifacts/filter",
                       json={"artifacts": {"key": {"any_": [f"canary-{coll}-v2"]}}}).json()
    assert table and table[0]["type"] == "table"


def test_a_faulty_version_is_rolled_back_with_everything_on_stable(endpoint, models, prefect_api) -> None:
    st, ep = endpoint
    coll = collection()
    stable_id = stable_on(ep, models["v1"], f"{coll}:v1")
    bad_id = ep.deploy(models["v3"], f"{coll}:v3", fault={"error_rate": 0.3})  # the demo's faulty model
    from blocks.local import LocalIssueStore

    marker = f"<!-- modelops:review-issue wandb.artifact.local/wandb-registry-model/{coll}:v3 -->"
    issue = LocalIssueStore().open_issue(f"Review {coll}:v3", f"review\n{marker}", [], [], marker)
    with Traffic(st.endpoint_url, rps=60):
        result = run_flow(canary_rollout, collection=coll, version="v3", model_uri=models["v3"],
                                endpoint_block=st.endpoint_url, **FAST)
    assert result["outcome"] == "rolled-back", result
    assert "error rate" in result["reason"]
    assert ep.traffic() == {stable_id: 100}
    assert bad_id not in {m.id for m in ep.deployed()}, "the canary is undeployed after the traffic moved"
    (event,) = wait_until(lambda: read_events(prefect_api, event="modelops.canary.rolled-back",
                                              resource_prefix=f"wandb.artifact.local/wandb-registry-model/{coll}:v3"),
                          30, message="modelops.canary.rolled-back")
    assert event["payload"]["reason"] == result["reason"]
    assert result["review_issue"] == issue.url
    text = Path(issue.url.removeprefix("file://")).read_text()
    assert f"Canary of `{coll}:v3` **rolled back**" in text and f"100% of the traffic is on `{coll}:v1`" in text


def test_without_traffic_a_version_is_never_promoted(endpoint, models) -> None:
    st, ep = endpoint
    coll = collection()
    stable_id = stable_on(ep, models["v1"], f"{coll}:v1")
    result = run_flow(canary_rollout, collection=coll, version="v2", model_uri=models["v2"], endpoint_block=st.endpoint_url,
                            steps=[25, 100], bake=0.5, final_bake=0.5, min_requests=20, policy_block=POLICY_BLOCK)
    assert result["outcome"] == "rolled-back"
    assert [s["decision"] for s in result["steps"]] == ["HOLD", "HOLD", "HOLD"]
    assert "too few requests" in result["steps"][0]["reasons"][0]
    assert ep.traffic() == {stable_id: 100}


def test_the_first_model_on_an_empty_endpoint_takes_all_traffic(endpoint, models) -> None:
    st, ep = endpoint
    coll = collection()
    result = run_flow(canary_rollout, collection=coll, version="v1", model_uri=models["v1"], endpoint_block=st.endpoint_url,
                            **FAST)
    assert result["outcome"] == "promoted" and result["initial"]
    assert names(ep) == {f"{coll}:v1": 100}
    again = run_flow(canary_rollout, collection=coll, version="v1", model_uri=models["v1"], endpoint_block=st.endpoint_url,
                           **FAST)
    assert again["outcome"] == "already-serving"


def test_endpoint_errors_on_a_shift_are_retried(endpoint, models) -> None:
    st, ep = endpoint
    coll = collection()
    stable_on(ep, models["v1"], f"{coll}:v1")
    httpx.post(f"{st.endpoint_url}/v1/faults", json={"method": "PUT", "path": "/v1/traffic", "count": 2, "status": 503})
    with Traffic(st.endpoint_url, rps=60):
        result = run_flow(canary_rollout, collection=coll, version="v2", model_uri=models["v2"], endpoint_block=st.endpoint_url,
                                **FAST)
    assert result["outcome"] == "promoted"


def test_an_endpoint_that_keeps_failing_a_shift_gets_a_safe_rollback(endpoint, models) -> None:
    st, ep = endpoint
    coll = collection()
    stable_id = stable_on(ep, models["v1"], f"{coll}:v1")
    # the shift's 5 attempts fail, and the rollback's first attempt too; then it goes through
    httpx.post(f"{st.endpoint_url}/v1/faults", json={"method": "PUT", "path": "/v1/traffic", "count": 6, "status": 503})
    result = run_flow(canary_rollout, collection=coll, version="v2", model_uri=models["v2"], endpoint_block=st.endpoint_url,
                            **FAST)
    assert result["outcome"] == "rolled-back" and "traffic shift to 25% failed" in result["reason"]
    assert ep.traffic() == {stable_id: 100} and len(ep.deployed()) == 1


def test_a_killed_rollout_converges_when_run_again(endpoint, models, prefect_api) -> None:
    st, ep = endpoint
    coll = collection()
    stable_on(ep, models["v1"], f"{coll}:v1")
    cli = [sys.executable, "-m", "flows.canary", "--model", f"{coll}:v2", "--model-uri", models["v2"],
           "--endpoint", st.endpoint_url, "--steps", "25,50,100", "--bake", "3s", "--final-bake", "1s",
           "--min-requests", "20", "--policy-block", POLICY_BLOCK]
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PYTHONPATH": str(ROOT)}
    with Traffic(st.endpoint_url, rps=60):
        first = subprocess.Popen(cli, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        # kill it while the canary bakes at 25%
        wait_until(lambda: names(ep).get(f"{coll}:v2") == 25, 90, interval=0.1, message="the 25% step")
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        assert names(ep) == {f"{coll}:v1": 75, f"{coll}:v2": 25}, "the crash left the split mid-rollout"
        assert_safe(ep)
        again = subprocess.run(cli, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert names(ep) == {f"{coll}:v2": 100}
    assert [m.display_name for m in ep.deployed()] == [f"{coll}:v2"], "deployed once, never twice"


def _resume_when_paused(api: str, coll: str, answer: dict[str, Any] | None) -> threading.Thread:
    from prefect.flow_runs import resume_flow_run

    def run() -> None:
        def paused() -> list[dict[str, Any]]:
            return [r for r in flow_runs(api, flow_name="canary-rollout")
                    if r["name"] == f"canary-{coll}-v2" and r["state_type"] == "PAUSED"]

        (fr,) = wait_until(paused, 60, message="the paused rollout")
        if answer is not None:
            resume_flow_run(fr["id"], run_input=answer)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize(("answer", "outcome"), [({"approve": True, "comment": "go"}, "promoted"),
                                                 ({"approve": False, "comment": "not today"}, "rejected"),
                                                 (None, "rejected")])
def test_approval_in_the_ui(endpoint, models, prefect_api, answer, outcome) -> None:
    st, ep = endpoint
    coll = collection()
    stable_id = stable_on(ep, models["v1"], f"{coll}:v1")
    waiter = _resume_when_paused(prefect_api, coll, answer)
    with Traffic(st.endpoint_url, rps=60):
        result = run_flow(canary_rollout, collection=coll, version="v2", model_uri=models["v2"], endpoint_block=st.endpoint_url,
                                require_approval=True, approval_timeout=8, **FAST)
    waiter.join(5)
    assert result["outcome"] == outcome, result
    if outcome == "rejected":
        assert ep.traffic() == {stable_id: 100} and len(ep.deployed()) == 1, "nothing was shifted or deployed"
        assert result["comment"] == (answer["comment"] if answer else "no answer within 8s")


def test_cancelling_the_run_in_the_ui_rolls_back(endpoint, models, prefect_api) -> None:
    """What the runner calls when an operator cancels a rollout: the endpoint's state is rolled back."""
    from types import SimpleNamespace

    from flows.canary import abort_rollout

    st, ep = endpoint
    coll = collection()
    stable_id = stable_on(ep, models["v1"], f"{coll}:v1")
    canary_id = ep.deploy(models["v2"], f"{coll}:v2")
    ep.set_traffic({stable_id: 70, canary_id: 30})  # where the cancelled run left it
    run = SimpleNamespace(id=uuid.uuid4(), name="canary-x", parameters={
        "collection": coll, "version": "v2", "endpoint_block": st.endpoint_url})
    abort_rollout(None, run, None)
    assert ep.traffic() == {stable_id: 100} and [m.id for m in ep.deployed()] == [stable_id]
    abort_rollout(None, run, None)  # safe to repeat
    (event,) = wait_until(lambda: read_events(prefect_api, event="modelops.canary.rolled-back",
                                              resource_prefix=f"wandb.artifact.local/wandb-registry-model/{coll}:v2"),
                          30, message="the abort's rolled-back event")
    assert event["payload"]["aborted"] is True and "cancelled by an operator" in event["payload"]["reason"]


def test_a_rollout_that_crashed_too_often_is_rolled_back_not_resumed(endpoint, models, prefect_api) -> None:
    """prefect.yaml's crash trigger reruns a crashed rollout with resume_attempt + 1; past MAX_RESUMES the
    rerun puts everything back on stable instead of resuming (a rollout that keeps killing its worker)."""
    from flows.canary import MAX_RESUMES

    st, ep = endpoint
    coll = collection()
    stable_id = stable_on(ep, models["v1"], f"{coll}:v1")
    canary_id = ep.deploy(models["v2"], f"{coll}:v2")
    ep.set_traffic({stable_id: 75, canary_id: 25})  # where the crashed run left it
    result = run_flow(canary_rollout, collection=coll, version="v2", model_uri=models["v2"], endpoint_block=st.endpoint_url,
                            resumed_from="crashed-run-id", resume_attempt=MAX_RESUMES + 1, **FAST)
    assert result["outcome"] == "rolled-back", result
    assert f"crashed {MAX_RESUMES + 1} times" in result["reason"]
    assert result["steps"] == [], "no step was judged: it rolled back at once"
    assert ep.traffic() == {stable_id: 100}
    assert [m.display_name for m in ep.deployed()] == [f"{coll}:v1"], "the canary is undeployed"
    (event,) = wait_until(lambda: read_events(prefect_api, event="modelops.canary.rolled-back",
                                              resource_prefix=f"wandb.artifact.local/wandb-registry-model/{coll}:v2"),
                          30, message="modelops.canary.rolled-back")
    assert f"crashed {MAX_RESUMES + 1} times" in event["payload"]["reason"]


# --------------------------------------------------------------------------------------------------
# Predictions and shadow, on the real endpoint under live traffic

PREDICTIONS = dict(steps=[25, 50, 100], bake=3, final_bake=1.5, min_requests=20, policy_block=POLICY_BLOCK)


class SplitWatcher:
    """Reads the live split every 50 ms: the largest share a model ever had."""

    def __init__(self, ep: LocalEndpoint) -> None:
        self.ep, self.max_share, self.stop = ep, {}, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.05):
            try:
                for name, pct in names(self.ep).items():
                    self.max_share[name] = max(self.max_share.get(name, 0), pct)
            except Exception:  # noqa: BLE001 - a read racing an undeploy
                continue

    def __enter__(self) -> "SplitWatcher":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join(5)


def test_a_canary_that_answers_200_with_one_class_is_rolled_back(endpoint, models, prefect_api) -> None:
    st, ep = endpoint
    coll = collection()
    stable_id = stable_on(ep, models["v1"], f"{coll}:v1")
    ep.deploy(models["v2"], f"{coll}:v2", fault={"predict_class": "0"})  # no error, no slowness
    with Traffic(st.endpoint_url, rps=60) as traffic:
        result = run_flow(canary_rollout, collection=coll, version="v2", model_uri=models["v2"], endpoint_block=st.endpoint_url,
                                **PREDICTIONS)
    assert result["outcome"] == "rolled-back", result
    assert "predictions shifted" in result["reason"] and "scores" not in result["reason"].split(":")[0]
    assert set(traffic.counts) == {200}, "the canary never answered with an error"
    assert ep.traffic() == {stable_id: 100} and len(ep.deployed()) == 1
    table = httpx.post(f"{prefect_api}/artifacts/filter", json={"artifacts": {"key": {"any_": [f"canary-{coll}-v2"]}},
                                                               "sort": "CREATED_DESC"}).json()
    rows = table[0]["data"]
    rows = rows if isinstance(rows, list) else __import__("json").loads(rows)
    last = rows[-1]
    assert last["decision"] == "ROLLBACK" and last["p scores"] is not None and last["p scores"] < last["alpha errors"]
    assert {"look", "step", "canary requests", "stable requests", "p errors", "p latency", "alpha spent"} <= set(last)


def test_shadow_judges_the_candidate_on_mirrored_traffic_then_walks_the_canary(endpoint, models, prefect_api) -> None:
    st, ep = endpoint
    coll = collection()
    stable_on(ep, models["v1"], f"{coll}:v1")
    with Traffic(st.endpoint_url, rps=60), SplitWatcher(ep) as watch:
        result = run_flow(canary_rollout, collection=coll, version="v2", model_uri=models["v2"], endpoint_block=st.endpoint_url,
                                strategy="shadow", **PREDICTIONS)
    assert result["outcome"] == "promoted", result
    assert [s["percent"] for s in result["steps"]][:2] == [0, 25], "the shadow look comes first"
    shadow_look = result["steps"][0]
    assert shadow_look["decision"] == "ADVANCE"
    assert names(ep) == {f"{coll}:v2": 100}
    assert ep.shadow() is None
    steps = read_events(prefect_api, event="modelops.canary.step",
                        resource_prefix=f"wandb.artifact.local/wandb-registry-model/{coll}:v2")
    assert any(e["payload"]["shadow"] for e in steps)


def test_a_bad_candidate_is_rejected_in_shadow_and_no_user_saw_its_answers(endpoint, models, prefect_api) -> None:
    st, ep = endpoint
    coll = collection()
    stable_id = stable_on(ep, models["v1"], f"{coll}:v1")
    bad_id = ep.deploy(models["v2"], f"{coll}:v2", fault={"predict_class": "0"})
    mirrored: list[int] = []

    def count_mirrored() -> None:
        from datetime import datetime, timezone

        wait_until(lambda: ep.shadow() == bad_id, 60, interval=0.05, message="the shadow")
        wait_until(lambda: ep.stats(bad_id, datetime.fromtimestamp(0, timezone.utc)).requests > 20, 60,
                   message="mirrored requests")
        mirrored.append(ep.stats(bad_id, datetime.fromtimestamp(0, timezone.utc)).requests)

    counter = threading.Thread(target=count_mirrored, daemon=True)
    with Traffic(st.endpoint_url, rps=60), SplitWatcher(ep) as watch:
        counter.start()
        result = run_flow(canary_rollout, collection=coll, version="v2", model_uri=models["v2"], endpoint_block=st.endpoint_url,
                                strategy="shadow", **PREDICTIONS)
    counter.join(5)
    assert result["outcome"] == "rolled-back" and result["shadow"] is True, result
    assert result["reason"].startswith("shadow: predictions shifted"), result["reason"]
    assert watch.max_share.get(f"{coll}:v2", 0) == 0, "the candidate never had a share of the traffic"
    assert mirrored and mirrored[0] > 20, "it answered mirrored copies"
    assert ep.traffic() == {stable_id: 100} and [m.id for m in ep.deployed()] == [stable_id]
    (event,) = wait_until(lambda: read_events(prefect_api, event="modelops.canary.rolled-back",
                                              resource_prefix=f"wandb.artifact.local/wandb-registry-model/{coll}:v2"),
                          30, message="modelops.canary.rolled-back")
    assert event["payload"]["shadow"] is True


def test_shadow_answers_are_recorded_never_returned(endpoint, models) -> None:
    from datetime import datetime, timezone

    st, ep = endpoint
    stable_id = stable_on(ep, models["v1"], "churn:v1")
    shadow_id = ep.deploy(models["v2"], "churn:v2", fault={"predict_class": "1"})
    ep.set_shadow(shadow_id)
    from deployments.traffic import sample_rows

    rows = sample_rows(20)
    answers = [httpx.post(f"{st.endpoint_url}/v1/predict", json={"instances": [r]}).json() for r in rows]
    assert {a["deployed_model_id"] for a in answers} == {stable_id}
    epoch = datetime.fromtimestamp(0, timezone.utc)
    mirrored = wait_until(lambda: (s := ep.stats(shadow_id, epoch)).requests == 20 and s, 30, message="20 mirrored")
    assert set(mirrored.classes) == {"1"} and len(mirrored.scores) == 20
    served = ep.stats(stable_id, epoch)
    assert served.requests == 20 and len(served.scores) == 20
    with pytest.raises(Exception, match="is the shadow"):
        ep.set_traffic({stable_id: 50, shadow_id: 50})
    ep.set_shadow(None)
    ep.undeploy(shadow_id)


def test_shadow_on_an_endpoint_that_cannot_mirror_is_refused(monkeypatch, prefect_api) -> None:
    import flows.canary as canary
    from blocks.vertex_endpoint import VertexAIEndpoint

    from prefect_gcp import GcpCredentials

    vertex = VertexAIEndpoint.model_construct(gcp_credentials=GcpCredentials.model_construct(), project="p",
                                              endpoint="123")
    assert not canary.supports_shadow(vertex)
    monkeypatch.setattr(canary, "resolve_endpoint", lambda name: vertex)
    with pytest.raises(canary.RolloutConfigError, match="strategy 'shadow' needs an endpoint that mirrors"):
        canary.canary_rollout(collection="churn", version="v9", model_uri="gs://x", strategy="shadow",
                              endpoint_block="vertex-ai-endpoint/prod")

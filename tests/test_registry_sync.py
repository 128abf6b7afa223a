"""The registry tells the truth after every rollout (flows/registry_sync.py, canary's update-registry),
and the review issue carries the outcome (labels, one comment per outcome, optional close)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from flows.registry_sync import Step, plan_registry_update

NOTE = {"outcome": "x", "reason": "r", "at": "t", "run": "u"}


# ---------------------------------------------------------------------------------------------- the plan


def test_a_rollback_moves_production_back_and_marks_the_version() -> None:
    steps = plan_registry_update(outcome="rolled-back", version="v2", serving="v1", previous=None,
                                 aliases={"production": "v2", "candidate": "v2", "previous-production": "v0"},
                                 note=NOTE)
    assert steps == [Step("set-alias", "v1", "production"), Step("set-alias", "v2", "rolled-back"),
                     Step("remove-alias", "v2", "candidate"), Step("metadata", "v2", patch={"rollout": NOTE})]


def test_a_rejection_is_marked_rejected() -> None:
    steps = plan_registry_update(outcome="rejected", version="v2", serving="v1", previous=None,
                                 aliases={"production": "v2"}, note=NOTE)
    assert [s.describe() for s in steps] == ["production -> v1", "rejected -> v2", "v2 metadata: rollout"]


def test_a_promotion_keeps_a_trace_of_the_version_it_replaced() -> None:
    steps = plan_registry_update(outcome="promoted", version="v3", serving="v3", previous="v1",
                                 aliases={"production": "v3", "candidate": "v3"}, note=NOTE)
    assert steps == [Step("remove-alias", "v3", "candidate"), Step("metadata", "v3", patch={"rollout": NOTE}),
                     Step("set-alias", "v1", "previous-production"),
                     Step("metadata", "v1", patch={"replaced": {"by": "v3", **NOTE}})]
    # an ad hoc rollout that promoted a version nobody had promoted in the registry: production follows
    adhoc = plan_registry_update(outcome="promoted", version="v3", serving="v3", previous="v1",
                                 aliases={"production": "v1"}, note=NOTE)
    assert adhoc[0] == Step("set-alias", "v3", "production")


def test_what_is_already_so_is_not_written_again_so_nothing_loops() -> None:
    """The restore's own webhook starts a rollout of the serving version: AlreadyServing plans nothing."""
    assert plan_registry_update(outcome="already-serving", version="v1", serving="v1", previous=None,
                                aliases={"production": "v1", "rolled-back": "v2"}, note=NOTE) == []
    again = plan_registry_update(outcome="rolled-back", version="v2", serving="v1", previous=None,
                                 aliases={"production": "v1", "rolled-back": "v2"}, note=NOTE)
    assert [s.op for s in again] == ["metadata"], "a rerun only rewrites the same note"


def test_a_serving_model_outside_the_collection_at_least_clears_production() -> None:
    steps = plan_registry_update(outcome="rolled-back", version="v2", serving=None, previous=None,
                                 aliases={"production": "v2"}, note=NOTE)
    assert steps[0] == Step("remove-alias", "v2", "production")
    with pytest.raises(ValueError, match="unknown rollout outcome"):
        plan_registry_update(outcome="maybe", version="v2", serving=None, previous=None, aliases={}, note=NOTE)


# ---------------------------------------------------------------------------------------------- through a run


def _run_update(registry: Any, collection: str, version: str, result: dict[str, Any]) -> dict[str, str]:
    from prefect import flow

    from flows.canary import update_registry

    @flow(name="registry-sync-probe")
    def probe() -> dict[str, str]:
        return update_registry(registry, collection, version, result)

    return probe()


def test_the_local_registry_after_a_rollback_and_a_promotion(prefect_api: str, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from blocks.registry import LocalRegistry

    monkeypatch.setenv("MODELOPS_HOME", str(tmp_path))
    monkeypatch.delenv("MODELOPS_RECEIVER_URL", raising=False)
    model = tmp_path / "m.joblib"
    model.write_bytes(b"m")
    coll = f"churn-{uuid.uuid4().hex[:6]}"
    reg = LocalRegistry()
    reg.register(coll, model, aliases=["production"])  # v0
    reg.register(coll, model, aliases=["candidate"])  # v1
    reg.set_alias(coll, "v1", "production")  # the promotion that started the rollout
    after = _run_update(reg, coll, "v1", {"model": f"{coll}:v1", "outcome": "rolled-back", "reason": "errors 4%",
                                          "stable": f"{coll}:v0"})
    assert after == {"production": "v0", "rolled-back": "v1"}, after
    rollout = reg.get(coll, "v1").metadata["rollout"]
    assert rollout["outcome"] == "rolled-back" and rollout["reason"] == "errors 4%"
    assert rollout["run"] and "/runs/flow-run/" in rollout["run"]

    reg.register(coll, model, aliases=["candidate"])  # v2, promoted and rolled out
    reg.set_alias(coll, "v2", "production")
    after = _run_update(reg, coll, "v2", {"model": f"{coll}:v2", "outcome": "promoted", "replaced": f"{coll}:v0"})
    assert after == {"production": "v2", "rolled-back": "v1", "previous-production": "v0"}, after
    assert reg.get(coll, "v0").metadata["replaced"]["by"] == "v2"


# ---------------------------------------------------------------------------------------------- the review issue


def test_the_review_issue_gets_one_comment_and_one_label_per_outcome(prefect_api: str, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect import flow

    from blocks.local import LocalIssueStore
    from flows.canary import report_on_review_issue

    monkeypatch.setenv("MODELOPS_HOME", str(tmp_path))
    monkeypatch.delenv("MODELOPS_GITHUB_BLOCK", raising=False)
    resource = "wandb.artifact.local/wandb-registry-model/churn:v7"
    store = LocalIssueStore()
    ref = store.open_issue("Review churn:v7", f"body <!-- modelops:review-issue {resource} -->", ["model-review"], [],
                           f"<!-- modelops:review-issue {resource} -->")

    @flow(name="review-report-probe")
    def probe(outcome: str, close: bool = False) -> str | None:
        return report_on_review_issue(resource, outcome, f"Canary **{outcome}**", close=close)

    assert probe("rolled-back") == ref.url
    probe("rolled-back")  # the rerun after a crash: the same outcome is not commented twice
    text = (tmp_path / "issues" / f"{ref.number:05d}.md").read_text()
    assert text.count("Canary **rolled-back**") == 1 and "/runs/flow-run/" in text
    assert store.issue(ref.number)["labels"] == ["model-review", "rolled-back"]
    probe("promoted", close=True)
    assert store.issue(ref.number)["labels"] == ["model-review", "promoted"]
    assert store.issue(ref.number)["state"] == "closed"


# ---------------------------------------------------------------------------------------------- every outcome


LENIENT = "rollout-policy/registry-sync-latency-lenient"
FAST = dict(steps=[50, 100], bake=2.0, final_bake=1.0, min_requests=20, policy_block=LENIENT)


@pytest.mark.parametrize("outcome", ["promoted", "rolled-back", "rejected", "crashed-and-rerun"])
def test_after_every_outcome_production_names_what_serves_and_the_issue_says_so(
        outcome: str, local_endpoint: Any, churn_models: dict[str, str], prefect_api: str) -> None:
    """The real canary flow on a real endpoint, with the local registry and issue store: after each
    outcome the registry's `production` is the version serving 100%, and the review issue is labelled."""
    import threading

    from prefect.flow_runs import resume_flow_run

    from blocks.local import LocalIssueStore
    from blocks.policy import RolloutPolicy
    from blocks.registry import LocalRegistry
    from deployments.traffic import Traffic
    from flows.canary import canary_rollout
    from flows.outcomes import run_flow
    from tests.helpers import flow_runs, wait_until

    RolloutPolicy(min_latency_increase=1.0).save(LENIENT.split("/", 1)[1], overwrite=True)
    st, ep = local_endpoint
    coll = f"churn-{uuid.uuid4().hex[:6]}"
    reg = LocalRegistry()
    reg.register(coll, churn_models["v1"], aliases=["production"])  # v0 serves
    fault = {"demo_fault": {"error_rate": 0.5}} if outcome == "rolled-back" else {}
    reg.register(coll, churn_models["v2"], metadata=fault, aliases=["candidate"])  # v1 is promoted
    reg.set_alias(coll, "v1", "production")
    stable = ep.deploy(churn_models["v1"], f"{coll}:v0")
    ep.set_traffic({stable: 100})
    resource = f"wandb.artifact.local/wandb-registry-model/{coll}:v1"
    store = LocalIssueStore()
    issue = store.open_issue(f"Review {coll}:v1", f"<!-- modelops:review-issue {resource} -->", ["model-review"],
                             [], f"<!-- modelops:review-issue {resource} -->")
    kwargs: dict[str, Any] = dict(collection=coll, version="v1", endpoint_block=st.endpoint_url, **FAST)
    if outcome == "rejected":
        def answer() -> None:
            (fr,) = wait_until(lambda: [r for r in flow_runs(prefect_api, flow_name="canary-rollout")
                                        if r["name"] == f"canary-{coll}-v1" and r["state_type"] == "PAUSED"], 90,
                               message="the paused rollout")
            resume_flow_run(fr["id"], run_input={"approve": False, "comment": "not now"})

        threading.Thread(target=answer, daemon=True).start()
        kwargs.update(require_approval=True, approval_timeout=120)
    if outcome == "crashed-and-rerun":  # what a crashed run leaves: the canary deployed, at 50%
        canary = ep.deploy(reg.get(coll, "v1").uri, f"{coll}:v1")
        ep.set_traffic({stable: 50, canary: 50})
        kwargs.update(resumed_from="crashed-run", resume_attempt=1)
    with Traffic(st.endpoint_url, rps=50):
        result = run_flow(canary_rollout, **kwargs)
    expected = {"promoted": "promoted", "rolled-back": "rolled-back", "rejected": "rejected",
                "crashed-and-rerun": "promoted"}[outcome]
    assert result["outcome"] == expected, result
    by_id = {m.id: m.display_name for m in ep.deployed()}
    ((serving_id, share),) = ep.traffic().items()
    assert share == 100
    assert f"{coll}:{reg.get(coll, 'production').version}" == by_id[serving_id], "production is what serves"
    aliases = {a: mv.version for mv in reg.versions(coll) for a in mv.aliases}
    if expected == "promoted":
        assert aliases == {"production": "v1", "previous-production": "v0"}, aliases
    else:
        assert aliases == {"production": "v0", expected: "v1"}, aliases
        assert reg.get(coll, "v1").metadata["rollout"]["outcome"] == expected
    assert expected in store.issue(issue.number)["labels"]
    text = (Path(store.directory()) / f"{issue.number:05d}.md").read_text()
    assert text.count(f"<!-- modelops:outcome {resource} {expected} -->") == 1

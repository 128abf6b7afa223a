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

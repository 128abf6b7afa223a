"""End to end: signed W&B delivery -> receiver -> Prefect event -> automation -> served flow -> GitHub issue.

Everything is a real process talking HTTP: the session's Prefect server, the receiver
(`python -m deployments.webhook`), the served deployments (`python -m deployments.serve`) and a
local server that speaks the GitHub REST API.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from functools import partial
import uuid
from typing import Any, Iterator

import pytest

from deployments.stack import ROOT, Stack
from deployments.wandb_events import artifact_body
from tests.fakes.github_api import FakeGitHub
from tests.helpers import deliver as signed_delivery
from tests.helpers import flow_runs, forget_automations, read_events, wait_until

TOKEN = "ghp_e2eTokenNeverLogged_0a1b2c3d4e"
SECRET = "e2e-webhook-secret"


@pytest.fixture(scope="module")
def served(prefect_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, FakeGitHub]]:
    fake = FakeGitHub(token=TOKEN, repositories=["acme/models"])
    st = Stack(
        tmp_path_factory.mktemp("e2e"),
        prefect_port=prefect_stack.prefect_port,
        webhook_secret=SECRET,
        extra_env={"GITHUB_TOKEN": TOKEN, "GITHUB_REPOSITORY": "acme/models", "GITHUB_API_URL": fake.base_url},
    )
    st.start_receiver()
    st.start_serve("--only", "review-issue")
    try:
        yield st, fake
    finally:
        st.stop()
        fake.close()
        forget_automations(st.api_url, "review-issue")


deliver = partial(signed_delivery, secret=SECRET)


def runs_for(api: str, collection: str) -> list[dict[str, Any]]:
    return [r for r in flow_runs(api, flow_name="review-issue") if r["parameters"].get("collection") == collection]


def test_production_alias_opens_review_issue_through_the_automation(served: tuple[Stack, FakeGitHub]) -> None:
    st, github = served
    collection = f"churn-{uuid.uuid4().hex[:6]}"
    accepted = deliver(st, artifact_body("ADD_ARTIFACT_ALIAS", "acme", "wandb-registry-model", collection, "v3",
                                         alias="production", author="ana"))

    def completed() -> list[dict[str, Any]]:
        return [r for r in runs_for(st.api_url, collection) if r["state_type"] == "COMPLETED"]

    (run,) = wait_until(completed, 90, message="the review-issue run started by the automation")
    assert run["deployment_id"], "the run comes from the deployment's trigger, not a direct call"
    assert run["parameters"]["version"] == "v3" and run["parameters"]["entity"] == "acme"
    assert run["parameters"]["event_id"] == accepted["event_id"], "the run names the event that started it"
    assert TOKEN not in json.dumps(run["parameters"])

    issues = [i for i in github.issues if collection in i["title"]]
    assert len(issues) == 1
    assert issues[0]["title"] == f"Review model promotion: {collection}:v3 → production"

    opened = wait_until(lambda: read_events(st.api_url, event="modelops.review.opened",
                                            resource_prefix=f"wandb.artifact.acme/wandb-registry-model/{collection}:v3"),
                        30, message="modelops.review.opened")
    assert opened[0]["payload"]["issue_url"] == issues[0]["html_url"]


def test_duplicate_deliveries_run_the_automation_once(served: tuple[Stack, FakeGitHub]) -> None:
    st, github = served
    collection = f"dup-{uuid.uuid4().hex[:6]}"
    body = artifact_body("ADD_ARTIFACT_ALIAS", "acme", "wandb-registry-model", collection, "v1", alias="production")
    answers = [deliver(st, body) for _ in range(4)]
    assert len({a["event_id"] for a in answers}) == 1 and [a["duplicate"] for a in answers] == [False, True, True, True]
    wait_until(lambda: [r for r in runs_for(st.api_url, collection) if r["state_type"] == "COMPLETED"], 90,
               message="the run for the first delivery")
    time.sleep(3)  # give a wrongly duplicated trigger the time to show up
    assert len(runs_for(st.api_url, collection)) == 1, "one delivery, one flow run"
    assert len([i for i in github.issues if collection in i["title"]]) == 1


def test_other_aliases_do_not_trigger_a_review(served: tuple[Stack, FakeGitHub]) -> None:
    st, _ = served
    collection = f"stg-{uuid.uuid4().hex[:6]}"
    accepted = deliver(st, artifact_body("ADD_ARTIFACT_ALIAS", "acme", "wandb-registry-model", collection, "v1",
                                         alias="staging"))
    wait_until(lambda: read_events(st.api_url, ids=[accepted["event_id"]]), 30, message="the staging event")
    time.sleep(3)
    assert runs_for(st.api_url, collection) == [], "the trigger matches the production alias only"


def test_prefect_deployment_run_starts_the_served_flow_ad_hoc(served: tuple[Stack, FakeGitHub]) -> None:
    """The README's ad hoc path through Prefect's own CLI: `prefect deployment run review-issue/review-issue`."""
    st, github = served
    collection = f"adhoc-{uuid.uuid4().hex[:6]}"
    proc = subprocess.run(
        [sys.executable, "-m", "prefect", "deployment", "run", "review-issue/review-issue",
         "-p", "entity=acme", "-p", f"collection={collection}", "-p", "version=v7"],
        cwd=ROOT, env=st.env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

    (run,) = wait_until(lambda: [r for r in runs_for(st.api_url, collection) if r["state_type"] == "COMPLETED"], 90,
                        message="the review-issue run started by `prefect deployment run`")
    assert run["deployment_id"] and run["parameters"]["version"] == "v7"
    issues = [i for i in github.issues if collection in i["title"]]
    assert len(issues) == 1 and issues[0]["title"] == f"Review model promotion: {collection}:v7 → production"

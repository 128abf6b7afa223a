"""A burst of promotions while GitHub fails: one review issue per promotion, every run completed.

Real processes as in test_e2e: signed deliveries -> receiver -> Prefect automation -> the served
`review-issue` deployment -> a local GitHub API that fails a seeded share of its requests with 5xx
(some after the issue landed, some before), 403 secondary rate limits and 429s (Retry-After: 1).
Every promotion is delivered twice (the receiver's dedupe makes that one event), and a few are
announced again by another author (a second event, so a second run that overlaps the first).
"""

from __future__ import annotations

from functools import partial
import time
import uuid
from collections import Counter
from typing import Any, Iterator

import pytest

from deployments.stack import Stack
from deployments.wandb_events import artifact_body
from tests.fakes.github_api import FakeGitHub
from tests.helpers import deliver as signed_delivery
from tests.helpers import flow_runs, forget_automations, read_events, wait_until

TOKEN = "ghp_burstTokenNeverLogged_5e6f7a8b9c"
SECRET = "burst-webhook-secret"
PROMOTIONS = 15
ANNOUNCED_AGAIN = 5  # promotions that get a second event (another author): overlapping runs
SHARE = 0.15  # of GitHub requests failed
SEED = 20251
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@pytest.fixture(scope="module")
def served(prefect_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, FakeGitHub]]:
    fake = FakeGitHub(token=TOKEN, repositories=["acme/models"])
    st = Stack(
        tmp_path_factory.mktemp("burst"),
        prefect_port=prefect_stack.prefect_port,
        webhook_secret=SECRET,
        extra_env={
            "GITHUB_TOKEN": TOKEN, "GITHUB_REPOSITORY": "acme/models", "GITHUB_API_URL": fake.base_url,
            # short fixed delays for 5xx, and more of them: a run may draw several faults in a row
            "MODELOPS_GITHUB_RETRY_DELAYS": "0.5,0.5,1,1,1,1,2,2,2,2,2,2",
        },
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


def marker(collection: str) -> str:
    return f"<!-- modelops:review-issue wandb.artifact.acme/wandb-registry-model/{collection}:v1 -->"


def test_a_burst_of_promotions_under_github_faults_opens_one_issue_each(served: tuple[Stack, FakeGitHub]) -> None:
    st, github = served
    tag = uuid.uuid4().hex[:6]
    collections = [f"burst-{tag}-{i:02d}" for i in range(PROMOTIONS)]
    # the chaos is seeded, but the runs' requests interleave differently on every run: the one fault
    # this test must see (a create that landed on GitHub while its reply was a 5xx) is not left to it
    github.fail_next("POST", "/repos/acme/models/issues", 500, land=True)
    github.chaos(SEED, SHARE)
    started = time.monotonic()

    answers = []
    for i, collection in enumerate(collections):
        body = artifact_body("ADD_ARTIFACT_ALIAS", "acme", "wandb-registry-model", collection, "v1",
                             alias="production", author="ana")
        answers += [deliver(st, body), deliver(st, body)]
        if i < ANNOUNCED_AGAIN:  # right behind the first: the two runs overlap
            answers.append(deliver(st, artifact_body("ADD_ARTIFACT_ALIAS", "acme", "wandb-registry-model",
                                                     collection, "v1", alias="production", author="ben")))
    assert sum(not a["duplicate"] for a in answers) == PROMOTIONS + ANNOUNCED_AGAIN
    expected_runs = PROMOTIONS + ANNOUNCED_AGAIN

    def finished() -> list[dict[str, Any]] | None:
        runs = flow_runs(st.api_url, flow_name="review-issue", name_like=f"burst-{tag}-")
        done = [r for r in runs if r["state_type"] in TERMINAL]
        return runs if len(done) >= expected_runs else None

    runs = wait_until(finished, 240, interval=1, message=f"{expected_runs} review-issue runs to finish")
    elapsed = time.monotonic() - started
    github.calm()

    states = Counter(r["state_type"] for r in runs)
    assert len(runs) == expected_runs, f"one run per distinct event, got {len(runs)}"
    assert states == {"COMPLETED": expected_runs}, f"every run completes despite the faults: {dict(states)}"

    injected = Counter((method, status, landed) for method, _, status, landed in github.injected)
    kinds = {status for _, status, _ in injected}
    assert {403, 429} <= kinds and kinds & {500, 502, 503}, f"the faults this test is about were injected: {injected}"
    assert any(method == "POST" and landed for method, _, landed in injected), "a create landed behind a 5xx"

    for collection in collections:
        carrying = [i for i in github.issues if marker(collection) in (i["body"] or "")]
        assert len(carrying) == 1, f"{collection}: {len(carrying)} issues carry its marker, want exactly one"
        assert carrying[0]["state"] == "open"
    duplicates = [i for i in github.issues if i["state"] == "closed"]
    for duplicate in duplicates:  # only if a lock was missed: closed, and saying of which issue
        assert any(c["issue_url"] == duplicate["url"] and c["body"].startswith("Duplicate of #")
                   for c in github.comments), f"#{duplicate['number']} closed without a duplicate note"
    assert len(github.issues) == PROMOTIONS + len(duplicates)

    # every run reported the one open issue of its promotion
    opened = wait_until(
        lambda: (lambda evs: evs if len(evs) >= expected_runs else None)(
            [e for e in read_events(st.api_url, event="modelops.review.opened",
                                    resource_prefix="wandb.artifact.acme/wandb-registry-model/burst-")
             if f"burst-{tag}-" in e["resource"]["prefect.resource.id"]]),
        60, message="a modelops.review.opened event per run")
    open_url = {i["html_url"] for i in github.issues if i["state"] == "open"}
    assert all(e["payload"]["issue_url"] in open_url for e in opened), "a run reported a closed duplicate"

    print(f"\nburst: {expected_runs} runs for {PROMOTIONS} promotions finished {elapsed:.1f}s after the first "
          f"delivery; {overlapping(runs)} pairs of runs for one promotion overlapped; {len(github.requests)} GitHub "
          f"requests, {len(github.injected)} faults injected {dict(injected)}; {len(duplicates)} duplicates "
          "closed by the post-create check")


def overlapping(runs: list[dict[str, Any]]) -> int:
    """How many pairs of runs for the same promotion ran at the same time (for the printed figures)."""
    by_collection: dict[str, list[tuple[str, str]]] = {}
    for run in runs:
        by_collection.setdefault(run["parameters"]["collection"], []).append((run["start_time"], run["end_time"]))
    pairs = 0
    for spans in by_collection.values():
        spans.sort()
        pairs += sum(1 for a, b in zip(spans, spans[1:]) if b[0] < a[1])
    return pairs

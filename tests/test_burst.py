"""A burst of concurrent signed deliveries with re-sends, through the receiver into Prefect.

Scaled down from `bench/burst.py` (whose sending and counting functions these tests use): no
figures are asserted here, only outcomes — every distinct delivery becomes exactly one Prefect
event, re-sends get the original's id, a triggered deployment runs at most once per event, and a
Prefect server stopped in the middle of a burst loses nothing.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from bench.burst import (
    Outage,
    burst,
    burst_events,
    flow_runs_for,
    plan_deliveries,
    runs_per_event,
    tally,
    wait_runs,
    wait_stored,
)
from deployments.stack import Stack
from tests.fakes.github_api import FakeGitHub
from tests.helpers import forget_automations, wait_until

SECRET = "burst-test-secret"
#: seconds the Prefect server stays down in the outage test. The issue's 60 s outage is what
#: `bench/burst.py --outage 60` does; here 30 s (longer than the receiver's 30 s backoff cap and
#: its --confirm-after) keeps the test near 2 minutes on a loaded 2-core machine.
#: MODELOPS_TEST_OUTAGE_SECONDS=60 runs the issue's figure.
OUTAGE_SECONDS = float(os.environ.get("MODELOPS_TEST_OUTAGE_SECONDS", "30"))


def entity() -> str:
    return f"b{uuid.uuid4().hex[:10]}"


@pytest.fixture
def receiver(tmp_path: Path, prefect_stack: Stack) -> Iterator[Stack]:
    st = Stack(tmp_path / "receiver", prefect_port=prefect_stack.prefect_port, webhook_secret=SECRET)
    st.start_receiver()
    yield st
    st.stop()


def test_burst_every_distinct_delivery_becomes_exactly_one_event(receiver: Stack, prefect_api: str) -> None:
    """200 distinct deliveries + 20 re-sends over 20 connections: 220 answers 202, the re-sends
    carry their original's event id with duplicate=true, Prefect holds exactly 200 events."""
    ent = entity()
    # an alias no deployment's trigger matches: only events, no flow runs
    plan = plan_deliveries(200, 0.10, ent, secret=SECRET, alias="burst-test", seed=7)
    result = burst(receiver.hook_url, plan, 20)

    assert dict(result.statuses) == {202: 220}, [a.error for a in result.answers if a.status != 202][:5]
    assert result.answer_problems() == []
    ids_by_key = result.ids_by_key()
    assert len(ids_by_key) == 200 and all(len(ids) == 1 for ids in ids_by_key.values())
    assert sum(1 for a in result.accepted if a.duplicate) == 20, "every re-send is answered as a duplicate"

    _, missing = wait_stored(prefect_api, result.accepted_ids, result.started, timeout=120)
    assert not missing, f"{len(missing)} accepted event(s) never reached Prefect"
    t = tally(result, burst_events(prefect_api, ent, result.started))
    assert t.stored == 200 and t.lost == [] and t.unaccepted_stored == []
    assert t.duplicated == 0, (t.ids_stored_twice, t.deliveries_with_several_events)


GITHUB_TOKEN = "ghp_burstTestToken_5e6f7a8b9c"


@pytest.fixture
def served(tmp_path: Path, prefect_stack: Stack) -> Iterator[tuple[Stack, FakeGitHub]]:
    """The receiver and the real review-issue deployment served with its trigger, opening issues
    on a loopback GitHub (as tests/test_e2e.py does)."""
    github = FakeGitHub(token=GITHUB_TOKEN, repositories=["acme/models"])
    st = Stack(tmp_path / "served", prefect_port=prefect_stack.prefect_port, webhook_secret=SECRET,
               extra_env={"GITHUB_TOKEN": GITHUB_TOKEN, "GITHUB_REPOSITORY": "acme/models",
                          "GITHUB_API_URL": github.base_url})
    try:
        st.start_receiver()
        st.start_serve("--only", "review-issue")
        yield st, github
    finally:
        st.stop()
        github.close()
        forget_automations(st.api_url, "review-issue")


def test_burst_starts_at_most_one_flow_run_per_event(served: tuple[Stack, FakeGitHub]) -> None:
    """20 distinct `production` deliveries + 2 re-sends over 10 connections: the trigger creates
    exactly one review-issue run per distinct event, none for a re-send; the runs complete and
    open one GitHub issue per artifact version."""
    st, github = served
    ent = entity()
    plan = plan_deliveries(20, 0.10, ent, secret=SECRET, alias="production", seed=3)
    result = burst(st.hook_url, plan, 10)
    assert dict(result.statuses) == {202: 22} and result.answer_problems() == []
    ids = result.accepted_ids
    assert len(ids) == 20
    deployment_id = httpx.get(f"{st.api_url}/deployments/name/review-issue/review-issue").json()["id"]

    created, per_event = wait_runs(st.api_url, deployment_id, ids, timeout=120)
    assert created is not None, f"events without a flow run: {sorted(i for i, n in per_event.items() if not n)}"

    def all_final() -> bool:
        runs = [r for r in flow_runs_for(st.api_url, deployment_id) if r["parameters"].get("event_id") in ids]
        return all(r["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") for r in runs)

    wait_until(all_final, 180, interval=1, message="the burst's review-issue runs to finish")
    runs = [r for r in flow_runs_for(st.api_url, deployment_id) if r["parameters"].get("event_id") in ids]
    per_event = runs_per_event(runs, ids)
    assert all(n == 1 for n in per_event.values()), {i: n for i, n in per_event.items() if n != 1}
    assert {r["state_type"] for r in runs} == {"COMPLETED"}, [(r["name"], r["state_name"]) for r in runs]
    assert {r["parameters"]["version"] for r in runs} == {f"v{i}" for i in range(20)}
    mine = [i for i in github.issues if ent in (i.get("body") or "")]
    titles = sorted(i["title"] for i in mine)
    assert len(titles) == 20 and len(set(titles)) == 20, titles


@pytest.mark.timeout(max(300, OUTAGE_SECONDS + 240))
def test_prefect_stopped_during_a_burst_every_accepted_event_arrives_once(tmp_path: Path) -> None:
    """A burst against a Prefect server of its own (never the session's): half-way through, the
    server is stopped for OUTAGE_SECONDS (30 by default) and started again on its database. The
    receiver keeps answering 202 meanwhile, and afterwards Prefect holds every accepted event,
    each exactly once."""
    st = Stack(tmp_path / "own", webhook_secret=SECRET)
    try:
        st.start_prefect()
        st.start_receiver()
        ent = entity()
        plan = plan_deliveries(300, 0.10, ent, secret=SECRET, alias="burst-test", seed=11)
        outage = Outage(st, OUTAGE_SECONDS)
        result = burst(st.hook_url, plan, 20, midway=outage.begin)
        assert outage.stopped_at is not None
        assert dict(result.statuses) == {202: 330}, "the receiver accepts the whole burst, Prefect down or not"
        assert result.answer_problems() == []
        healthz = httpx.get(st.hook_url.replace("/hooks/wandb", "/healthz"), timeout=10).json()
        outage.join(OUTAGE_SECONDS + 120)

        _, missing = wait_stored(st.api_url, result.accepted_ids, result.started, timeout=150)
        assert not missing, f"{len(missing)} accepted event(s) lost across the Prefect outage"
        t = tally(result, burst_events(st.api_url, ent, result.started))
        assert t.stored == 300 and t.lost == [] and t.unaccepted_stored == []
        assert t.duplicated == 0, (t.ids_stored_twice, t.deliveries_with_several_events)
        assert healthz["outbox"]["confirmed"] < 300, "the outage must overlap the burst (nothing to prove otherwise)"
    finally:
        st.stop()

"""The review-issue flow, run against the session's Prefect server and a local GitHub API server.

Real PyGithub, real HTTP: the fake speaks the GitHub REST endpoints the block uses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from blocks.github import GitHubConfigError, GitHubRepository
from deployments.stack import ROOT
from tests.fakes.github_api import FakeGitHub
from tests.helpers import read_events, wait_until

TOKEN = "ghp_reviewFlowTestToken_9f8e7d6c5b4a"
REPO = "acme/models"


@pytest.fixture
def github(monkeypatch: pytest.MonkeyPatch, prefect_api: str) -> Iterator[FakeGitHub]:
    with FakeGitHub(token=TOKEN, repositories=[REPO], users=["alice", "bob"]) as fake:
        monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
        monkeypatch.setenv("GITHUB_REPOSITORY", REPO)
        monkeypatch.setenv("GITHUB_API_URL", fake.base_url)
        yield fake


def run_flow(**kwargs: Any) -> Any:
    from flows.review_issue import review_issue

    params = dict(entity="acme", project="wandb-registry-model", collection="churn", alias="production",
                  author="ana")
    params.update(kwargs)
    return review_issue(**params)


def artifact(api: str, key: str) -> dict[str, Any] | None:
    found = httpx.post(f"{api}/artifacts/latest/filter",
                       json={"artifacts": {"key": {"any_": [key]}}}).json()
    return found[0] if found else None


def test_opens_issue_with_template_fields(github: FakeGitHub, prefect_api: str) -> None:
    version = f"v{uuid.uuid4().int % 10_000}"
    result = run_flow(version=version, metadata={"accuracy": 0.91})

    assert result["created"] is True and result["backend"] == "github"
    assert len(github.issues) == 1
    issue = github.issues[0]
    assert issue["title"] == f"Review model promotion: churn:{version} → production"
    assert {label["name"] for label in issue["labels"]} == {"model-review", "production"}
    assert "acme/wandb-registry-model/churn:" + version in issue["body"]
    assert "| `accuracy` | `0.91` |" in issue["body"], "artifact metadata is rendered into the issue"
    assert f"<!-- modelops:review-issue wandb.artifact.acme/wandb-registry-model/churn:{version} -->" in issue["body"]
    assert result["issue_url"] == issue["html_url"]

    art = artifact(prefect_api, f"review-churn-{version}")
    assert art is not None and issue["html_url"] in art["data"], "the issue link is a markdown artifact"

    resource = f"wandb.artifact.acme/wandb-registry-model/churn:{version}"
    opened = wait_until(lambda: read_events(prefect_api, event="modelops.review.opened", resource_prefix=resource),
                        30, message="modelops.review.opened")
    assert opened[0]["payload"]["issue_url"] == issue["html_url"]
    roles = {r.get("prefect.resource.role") for r in opened[0]["related"]}
    assert "flow-run" in roles, "the event links the flow run that opened the issue"


def test_same_event_twice_opens_one_issue(github: FakeGitHub) -> None:
    first = run_flow(version="v7")
    second = run_flow(version="v7", author="someone-else")
    assert len(github.issues) == 1, "a rerun or duplicate event must find the existing issue"
    assert first["created"] is True and second["created"] is False
    assert second["issue_number"] == first["issue_number"]
    # another version is another review
    run_flow(version="v8")
    assert len(github.issues) == 2


def test_502_then_success_opens_one_issue(github: FakeGitHub) -> None:
    # the create lands on GitHub, but the answer is a 502: the retry must find it, not open a second
    github.fail_next("POST", "/issues", 502, land=True)
    result = run_flow(version="v11")
    assert len(github.issues) == 1
    assert result["issue_number"] == github.issues[0]["number"]
    posts = [r for r in github.requests if r[0] == "POST"]
    assert len(posts) == 1, "PyGithub must not re-send the POST itself; our retry checks first"


def test_502_not_landed_is_retried(github: FakeGitHub) -> None:
    github.fail_next("POST", "/issues", 502)
    result = run_flow(version="v12")
    assert result["created"] is True and len(github.issues) == 1


def test_401_fails_with_the_setting_to_fix(github: FakeGitHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_revoked_token_1234")
    with pytest.raises(GitHubConfigError) as info:
        run_flow(version="v13")
    assert "GITHUB_TOKEN" in str(info.value)
    assert "ghp_revoked_token_1234" not in str(info.value), "the token never appears in an error"
    assert github.issues == []
    gets = [r for r in github.requests if r[0] == "GET"]
    assert len(gets) == 1, "a permanent error is not retried"


def test_404_names_the_repository(github: FakeGitHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_REPOSITORY", "acme/nope")
    with pytest.raises(GitHubConfigError, match="acme/nope"):
        run_flow(version="v14")


def test_saved_block_is_used(github: FakeGitHub, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GITHUB_TOKEN", "GITHUB_REPOSITORY", "GITHUB_API_URL"):
        monkeypatch.delenv(name)
    GitHubRepository(token=TOKEN, repository=REPO, base_url=github.base_url).save("review-test", overwrite=True)
    result = run_flow(version="v15", github_block="review-test")
    assert result["backend"] == "github" and len(github.issues) == 1


def test_without_github_writes_local_store_and_artifact(
    prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELOPS_HOME", str(tmp_path))
    result = run_flow(version="v21")
    assert result["backend"] == "local" and result["created"] is True
    stored = list((tmp_path / "issues").glob("*.md"))
    assert len(stored) == 1 and "churn:v21" in stored[0].read_text()
    again = run_flow(version="v21")
    assert again["created"] is False and len(list((tmp_path / "issues").glob("*.md"))) == 1
    art = artifact(prefect_api, "review-churn-v21")
    assert art is not None and "Review checklist" in art["data"], "the rendered issue is shown in the UI"


def test_cli_runs_the_flow_ad_hoc(github: FakeGitHub) -> None:
    env = dict(os.environ)
    proc = subprocess.run(
        [sys.executable, "-m", "flows.review_issue", "--entity", "acme", "--collection", "churn",
         "--version", "v31", "--author", "cli-user"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert out["created"] is True and len(github.issues) == 1
    assert TOKEN not in proc.stdout + proc.stderr


def test_cli_reports_bad_token_and_exits_2(github: FakeGitHub) -> None:
    """A token GitHub refuses is bad configuration: exit 2, one line naming what to fix."""
    env = dict(os.environ, GITHUB_TOKEN="ghp_wrong_cli_token")
    proc = subprocess.run(
        [sys.executable, "-m", "flows.review_issue", "--entity", "acme", "--collection", "churn", "--version", "v32"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "rejected the token" in last and "GITHUB_TOKEN" in last
    assert "ghp_wrong_cli_token" not in proc.stderr + proc.stdout


# -- overlapping runs and rate limits ---------------------------------------------------------------


def marker_of(version: str, collection: str = "churn") -> str:
    return f"<!-- modelops:review-issue wandb.artifact.acme/wandb-registry-model/{collection}:{version} -->"


def lock_limits(api: str) -> list[str]:
    limits = httpx.post(f"{api}/v2/concurrency_limits/filter", json={"limit": 200}, timeout=10).json()
    return [limit["name"] for limit in limits if limit["name"].startswith("modelops-review-issue-")]


def test_two_overlapping_runs_for_one_promotion_open_one_issue(github: FakeGitHub, prefect_api: str) -> None:
    """Two processes run the flow for the same promotion at once. Every issue listing is held after
    it is read (3 s), so without the promotion lock both would find nothing and both would create."""
    from flows.review_issue import promotion_lock_name

    github.stall("GET", f"/repos/{REPO}/issues", 3.0)
    version = f"v{uuid.uuid4().int % 10_000}"
    cmd = [sys.executable, "-m", "flows.review_issue", "--entity", "acme", "--collection", "churn",
           "--version", version]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    try:
        outputs = [proc.communicate(timeout=240) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    results = [json.loads(out[out.index("{"):]) for out, _ in outputs]

    posts = [r for r in github.requests if r == ("POST", f"/repos/{REPO}/issues")]
    assert len(posts) == 1, "the second run waited for the first one's lock, then found its issue"
    assert len(github.issues) == 1 and github.issues[0]["state"] == "open"
    assert {r["issue_number"] for r in results} == {1} and sorted(r["created"] for r in results) == [False, True]
    name = promotion_lock_name(marker_of(version))
    wait_until(lambda: [e for e in read_events(prefect_api, event="prefect.concurrency-limit.acquired")
                        if e["resource"]["prefect.resource.name"] == name], 30, message="the lock's acquired event")
    assert name not in lock_limits(prefect_api), "the lock is deleted once the issue exists"


def test_a_run_killed_while_holding_the_lock_does_not_block_its_promotion(
    github: FakeGitHub, prefect_api: str
) -> None:
    """A run SIGKILLed inside the promotion lock leaves its slot taken; Prefect's lease on it (60 s,
    the server's minimum) lapses without renewal and the repossessor frees it, so the next run for the
    promotion takes the lock (instead of waiting out its 180 s timeout) and opens the one issue."""
    from flows.review_issue import LOCK_LEASE_SECONDS, LOCK_TIMEOUT_SECONDS, promotion_lock_name

    github.stall("GET", f"/repos/{REPO}/issues", 3600.0, times=1)  # the first run hangs inside the lock
    version = f"v{uuid.uuid4().int % 10_000}"
    name = promotion_lock_name(marker_of(version))
    cmd = [sys.executable, "-m", "flows.review_issue", "--entity", "acme", "--collection", "churn",
           "--version", version]
    first = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        def slot_taken() -> bool:
            r = httpx.get(f"{prefect_api}/v2/concurrency_limits/{name}")
            return r.status_code == 200 and r.json()["active_slots"] == 1

        wait_until(slot_taken, 120, message="the first run holding the promotion lock")
        wait_until(lambda: ("GET", f"/repos/{REPO}/issues") in github.requests, 60,
                   message="the first run inside the lock, listing issues")
    finally:
        os.killpg(first.pid, 9)
        first.wait()
    assert slot_taken(), "the killed run's slot stays taken until its lease lapses"

    result = run_flow(version=version)
    assert result["created"] is True and len(github.issues) == 1
    def acquired() -> list[dict[str, Any]]:
        return [e for e in read_events(prefect_api, event="prefect.concurrency-limit.acquired")
                if e["resource"]["prefect.resource.name"] == name]

    # two acquisitions: the second run took the lock after the lease lapsed, not after its timeout
    wait_until(lambda: len(acquired()) == 2, 30, message="both runs' acquired events")
    first_at, second_at = sorted(datetime.fromisoformat(e["occurred"].replace("Z", "+00:00")) for e in acquired())
    waited = (second_at - first_at).total_seconds()
    assert LOCK_LEASE_SECONDS <= waited < LOCK_TIMEOUT_SECONDS
    assert name not in lock_limits(prefect_api), "the lock is deleted once the issue exists"


def test_a_rate_limit_waits_as_long_as_retry_after_asks(github: FakeGitHub) -> None:
    # the first retry delay is 1 s; GitHub's secondary rate limit asks for 2 s
    github.fail_next("POST", "/issues", 403, headers={"retry-after": "2"})
    result = run_flow(version=f"v{uuid.uuid4().int % 10_000}")

    assert result["created"] is True and len(github.issues) == 1
    limited = next(i for i, entry in enumerate(github.timeline) if entry[3] == 403)
    answered_at, next_request_at = github.timeline[limited][0], github.timeline[limited + 1][0]
    assert next_request_at - answered_at >= 2.0, "the retry came before GitHub's Retry-After"


def test_the_local_store_goes_through_the_promotion_lock_too(
    prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Served runs are separate processes: the local store relies on the same lock as GitHub."""
    from flows.review_issue import promotion_lock_name

    monkeypatch.setenv("MODELOPS_HOME", str(tmp_path))
    version = f"v{uuid.uuid4().int % 10_000}"
    assert run_flow(version=version)["backend"] == "local"
    name = promotion_lock_name(marker_of(version))
    wait_until(lambda: [e for e in read_events(prefect_api, event="prefect.concurrency-limit.acquired")
                        if e["resource"]["prefect.resource.name"] == name], 30, message="the lock's acquired event")


def test_the_github_block_may_be_named_with_its_type_slug(github: FakeGitHub) -> None:
    from blocks.github import GitHubRepository
    from flows.review_issue import resolve_issue_backend

    name = f"slug-{uuid.uuid4().hex[:6]}"
    GitHubRepository(token=TOKEN, repository="acme/models", base_url=github.base_url).save(name)
    for ref in (name, f"github-repository/{name}"):
        backend = resolve_issue_backend(ref)
        assert isinstance(backend, GitHubRepository) and backend.repository == "acme/models"
    with pytest.raises(ValueError, match="no saved github-repository block named 'nope'.*MODELOPS_GITHUB_BLOCK"):
        resolve_issue_backend("github-repository/nope")
    with pytest.raises(ValueError, match="block type must be one of"):
        resolve_issue_backend(f"secret/{name}")

"""No secret leaks: tokens and keys never appear in logs, artifacts, events, exceptions or flow parameters.

An end-to-end run on its own stack (receiver with a webhook secret AND a bearer token, the served
review-issue deployment with a GitHub block, a W&B API key in the flows' environment, a local
GitHub server) does what operators do: a signed promotion opens an issue through the automation; a
forged delivery is refused; the flow runs ad hoc with a block whose token GitHub rejects and fails.
Then everything that was emitted is collected — Prefect logs, flow and task runs (parameters, state
messages and results), artifacts, events, block documents as the API shows them, the services' log
files, the receiver's outbox database, the CLI's output, what the GitHub server received as issue
content — and searched for every secret in the encodings a leak would take (raw, base64, hex,
URL-encoded, JSON-escaped, the first half on its own).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.parse
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from deployments.stack import ROOT, Stack
from deployments.wandb_events import Credentials, artifact_body, delivery_headers
from tests.fakes.github_api import FakeGitHub
from tests.helpers import flow_runs, forget_automations, wait_until

RUN = uuid.uuid4().hex[:8]
SECRETS = {
    "webhook secret": f"whsec_Zq8{RUN}Lk2Vt7Rm",
    "webhook token": f"wbtok_Pf4{RUN}Hs9Xc1Qe",
    "GitHub token": f"ghp_Gd7{RUN}Nw3Yb5Ju8Ka",
    "rejected GitHub token": f"ghp_Rj2{RUN}Mv6Tq0Wz4Ls",
    "W&B API key": f"wandbkey{RUN}Cc3Ff8Hh1Bb6Dd9",
}


def encodings(secret: str) -> dict[str, str]:
    raw = secret.encode()
    return {
        "raw": secret,
        "base64": base64.b64encode(raw).decode().rstrip("="),
        "urlsafe base64": base64.urlsafe_b64encode(raw).decode().rstrip("="),
        "hex": raw.hex(),
        "url-encoded": urllib.parse.quote(secret, safe=""),
        "JSON-escaped": json.dumps(secret)[1:-1],
        "first half": secret[: len(secret) // 2 + 1],
        "second half": secret[len(secret) // 2 - 1:],
    }


def leaks(where: str, text: str | bytes) -> list[str]:
    """Every (secret, encoding) found in `text`, named with where it was found."""
    hay = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    found = []
    for name, secret in SECRETS.items():
        for how, needle in encodings(secret).items():
            if needle in hay or needle.lower() in hay.lower():
                found.append(f"{name} ({how}) in {where}")
    return found


@pytest.fixture(scope="module")
def run(prefect_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The end-to-end run; yields what it produced for the sweep."""
    from blocks.github import GitHubRepository

    since = datetime.now(timezone.utc) - timedelta(seconds=5)
    fake = FakeGitHub(token=SECRETS["GitHub token"], repositories=["acme/models"])
    good, bad = f"secrets-good-{RUN}", f"secrets-bad-{RUN}"
    GitHubRepository(token=SECRETS["GitHub token"], repository="acme/models", base_url=fake.base_url).save(good)
    GitHubRepository(token=SECRETS["rejected GitHub token"], repository="acme/models",
                     base_url=fake.base_url).save(bad)
    home = tmp_path_factory.mktemp("secrets")
    st = Stack(home, prefect_port=prefect_stack.prefect_port,
               webhook_secret=SECRETS["webhook secret"], webhook_token=SECRETS["webhook token"],
               extra_env={"MODELOPS_GITHUB_BLOCK": good,
                          "WANDB_API_KEY": SECRETS["W&B API key"], "MODELOPS_LOG_LEVEL": "debug"})
    collection = f"sec-{RUN}"
    out: dict[str, Any] = {"stack": st, "fake": fake, "collection": collection, "since": since, "texts": {}}
    try:
        st.start_receiver("--log-level", "debug")
        st.start_serve("--only", "review-issue")
        body = json.dumps(artifact_body("ADD_ARTIFACT_ALIAS", "acme", "wandb-registry-model", collection, "v2",
                                        alias="production", author="ana")).encode()
        headers = delivery_headers(body, secret=SECRETS["webhook secret"], token=SECRETS["webhook token"])
        accepted = httpx.post(st.hook_url, content=body, headers=headers, timeout=30)
        assert accepted.status_code == 202, accepted.text
        # a forged delivery (wrong signature) and one with a wrong token: refused, and the answers
        # must not tell the caller what the right values are
        forged = httpx.post(st.hook_url, content=body, timeout=30,
                            headers={**headers, "X-Wandb-Signature": base64.b64encode(b"x" * 32).decode()})
        wrong_token = httpx.post(st.hook_url, content=body, timeout=30,
                                 headers={**headers, "Authorization": "Bearer not-the-token"})
        assert forged.status_code == wrong_token.status_code == 401
        out["texts"]["receiver answers"] = accepted.text + forged.text + wrong_token.text

        def completed() -> list[dict[str, Any]]:
            return [r for r in flow_runs(st.api_url, flow_name="review-issue")
                    if r["parameters"].get("collection") == collection and r["state_type"] == "COMPLETED"]

        wait_until(completed, 120, message="the triggered review-issue run")
        # ad hoc, with a block whose token GitHub rejects: the run fails and says which setting is wrong
        env = {**os.environ, "PREFECT_API_URL": st.api_url, "PYTHONPATH": str(ROOT),
               "WANDB_API_KEY": SECRETS["W&B API key"]}
        cli = subprocess.run(
            [sys.executable, "-m", "flows.review_issue", "--entity", "acme", "--collection", f"{collection}-bad",
             "--version", "v1", "--github-block", bad],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
        assert cli.returncode != 0, "a rejected token must fail the run"
        out["cli"] = cli
        out["texts"]["CLI output"] = cli.stdout + cli.stderr
        time.sleep(2)  # the API log handler flushes every 0.5 s in tests
        yield out
    finally:
        st.stop()
        fake.close()
        forget_automations(st.api_url, "review-issue")


def _post_all(api: str, path: str, body: dict[str, Any], key: str | None = None) -> list[Any]:
    """Every page of a Prefect `.../filter` endpoint (offset paging)."""
    items: list[Any] = []
    offset = 0
    while True:
        page = httpx.post(f"{api}/{path}", json={**body, "limit": 200, "offset": offset}, timeout=30)
        page.raise_for_status()
        data = page.json()
        batch = data[key] if key else data
        items.extend(batch)
        if len(batch) < 200:
            return items
        offset += 200


def _events(api: str, since: datetime) -> list[dict[str, Any]]:
    page = httpx.post(f"{api}/events/filter", json={"filter": {"occurred": {"since": since.isoformat()}},
                                                    "limit": 50}, timeout=30).json()
    events = list(page["events"])
    while page.get("next_page"):
        page = httpx.get(page["next_page"], timeout=30).json()
        events.extend(page["events"])
    return events


def collect(run: dict[str, Any]) -> dict[str, str]:
    """Everything the run emitted, as text per place."""
    st: Stack = run["stack"]
    api, since = st.api_url, run["since"]
    texts = dict(run["texts"])
    runs = [r for r in flow_runs(api, flow_name="review-issue") if run["collection"] in json.dumps(r["parameters"])]
    assert len(runs) >= 2, "the sweep must see the triggered run and the failed ad hoc run"
    assert any(r["state_type"] == "FAILED" for r in runs) and any(r["state_type"] == "COMPLETED" for r in runs)
    texts["flow runs (parameters, states)"] = json.dumps(runs)
    ids = [r["id"] for r in runs]
    states = [httpx.get(f"{api}/flow_run_states/", params={"flow_run_id": i}, timeout=30).json() for i in ids]
    texts["flow run state history (messages, results)"] = json.dumps(states)
    results = []
    for history in states:
        for state in history:
            data = state.get("data") or {}
            if isinstance(data, dict) and data.get("storage_key") and Path(data["storage_key"]).exists():
                results.append(Path(data["storage_key"]).read_bytes().decode("utf-8", "replace"))
    texts["persisted results"] = "\n".join(results)
    task_runs = _post_all(api, "task_runs/filter", {"flow_runs": {"id": {"any_": ids}}})
    texts["task runs"] = json.dumps(task_runs)
    logs = _post_all(api, "logs/filter", {"logs": {"timestamp": {"after_": since.isoformat()}}})
    assert any(run["collection"] in (log.get("message") or "") for log in logs), "the sweep must see the flows' logs"
    texts["Prefect logs"] = json.dumps(logs)
    artifacts = _post_all(api, "artifacts/filter", {"flow_runs": {"id": {"any_": ids}}})
    assert artifacts, "the sweep must see the runs' artifacts"
    texts["artifacts"] = json.dumps(artifacts)
    events = _events(api, since)
    assert any(e["event"] == "modelops.review.opened" for e in events), "the sweep must see the flow's events"
    texts["events"] = json.dumps(events)
    blocks = _post_all(api, "block_documents/filter", {"include_secrets": False})
    texts["block documents (API)"] = json.dumps(blocks)
    texts["variables"] = json.dumps(_post_all(api, "variables/filter", {}))
    texts["deployments"] = json.dumps(_post_all(api, "deployments/filter", {}))
    texts["automations"] = json.dumps(_post_all(api, "automations/filter", {}))
    for log in sorted((st.home / "logs").glob("*.log")):
        texts[f"service log {log.name}"] = log.read_text(errors="replace")
    for db in sorted(st.home.rglob("*.sqlite3*")):
        texts[f"outbox file {db.name}"] = db.read_bytes().decode("utf-8", "replace")
    fake: FakeGitHub = run["fake"]
    texts["issues and comments sent to GitHub"] = json.dumps([fake.issues, fake.comments])
    return texts


def test_the_run_emitted_what_the_sweep_searches(run: dict[str, Any]) -> None:
    texts = collect(run)
    fake: FakeGitHub = run["fake"]
    assert [i for i in fake.issues if run["collection"] in i["title"]], "the promotion opened its issue"
    assert "token" in run["cli"].stdout + run["cli"].stderr, "the failure names the setting to fix"
    assert texts["service log receiver.log"] and any(k.startswith("service log serve") for k in texts)


def test_no_secret_appears_anywhere(run: dict[str, Any]) -> None:
    found = [hit for where, text in collect(run).items() for hit in leaks(where, text)]
    assert not found, "secrets leaked:\n" + "\n".join(found)


def test_the_sweep_finds_a_planted_secret() -> None:
    """The search itself works: each secret is found in each encoding it looks for."""
    for name, secret in SECRETS.items():
        for how, needle in encodings(secret).items():
            assert leaks("x", f"... {needle} ...") != [], f"{name} in {how} would go unnoticed"
    assert leaks("x", "nothing to see") == []


def test_receiver_configuration_reprs_hide_the_credentials() -> None:
    from deployments.webhook import ReceiverConfig

    creds = Credentials(token=SECRETS["webhook token"], secret=SECRETS["webhook secret"])
    config = ReceiverConfig(api_url="http://127.0.0.1:1/api", credentials=creds,
                            api_headers={"Authorization": f"Bearer {SECRETS['webhook token']}"})
    for text in (repr(creds), str(creds), repr(config), f"{config}"):
        assert not leaks("repr", text), text
    assert "token=set" in repr(creds) and "secret=set" in repr(creds)
    assert "unset" in repr(Credentials())


def test_blocks_never_show_their_secrets() -> None:
    from blocks.github import GitHubRepository
    from blocks.wandb import WandbCredentials

    blocks = [GitHubRepository(token=SECRETS["GitHub token"], repository="acme/models"),
              WandbCredentials(api_key=SECRETS["W&B API key"])]
    for block in blocks:
        for text in (repr(block), str(block), block.model_dump_json(), json.dumps(block.model_dump(mode="json"))):
            assert not leaks(type(block).__name__, text), text

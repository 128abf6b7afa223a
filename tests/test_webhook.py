"""The webhook receiver over real HTTP, forwarding to the session's Prefect server.

Every test uses its own W&B entity name, so the events it finds in Prefect are its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest

from deployments.stack import ROOT, Stack, free_port
from deployments.wandb_events import artifact_body, delivery_headers
from tests.fakes.tcp_proxy import TcpProxy
from tests.helpers import read_events, wait_until

SECRET = "whsec-test-5f1e"
TOKEN = "wandb-access-token-test-77"


@pytest.fixture
def receivers(tmp_path: Path, prefect_stack: Stack) -> Iterator[Callable[..., Stack]]:
    started: list[Stack] = []

    def start(*args: str, api_port: int | None = None, secret: str | None = SECRET,
              token: str | None = None, home: Path | None = None) -> Stack:
        st = Stack(home or tmp_path / f"receiver-{len(started)}",
                   prefect_port=api_port or prefect_stack.prefect_port,
                   webhook_secret=secret, webhook_token=token)
        st.start_receiver(*args)
        started.append(st)
        return st

    yield start
    for st in started:
        st.stop()


def entity() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


def alias_body(ent: str, version: str = "v1", alias: str = "production") -> bytes:
    return json.dumps(artifact_body("ADD_ARTIFACT_ALIAS", ent, "wandb-registry-model", "churn", version,
                                    alias=alias, author="ana")).encode()


def post(st: Stack, body: bytes, *, secret: str | None = SECRET, token: str | None = None,
         headers: dict[str, str] | None = None) -> httpx.Response:
    h = delivery_headers(body, secret=secret, token=token)
    h.update(headers or {})
    return httpx.post(st.hook_url, content=body, headers=h, timeout=30)


def events_of(api: str, ent: str) -> list[dict[str, Any]]:
    return read_events(api, resource_prefix=f"wandb.artifact.{ent}/")


# ------------------------------------------------------------------------------ start-up


def test_refuses_to_start_without_any_credential(tmp_path: Path, prefect_api: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_WEBHOOK_TOKEN", "WANDB_WEBHOOK_SECRET")}
    proc = subprocess.run(
        [sys.executable, "-m", "deployments.webhook", "--port", str(free_port()),
         "--outbox", str(tmp_path / "o.sqlite3")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0, "the receiver must not start open to the world by accident"
    assert "WANDB_WEBHOOK_TOKEN" in proc.stderr and "--allow-unauthenticated" in proc.stderr


def test_allow_unauthenticated_accepts_unsigned_deliveries(receivers, prefect_api: str) -> None:
    st = receivers("--allow-unauthenticated", secret=None)
    ent = entity()
    r = post(st, alias_body(ent), secret=None)
    assert r.status_code == 202, r.text


# ------------------------------------------------------------------------------ statuses


def test_every_status_code_and_rejections_emit_nothing(receivers, prefect_api: str) -> None:
    st = receivers("--max-body", "2048")
    ent = entity()
    good = alias_body(ent)

    r = post(st, good)
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert accepted["event"] == "wandb.artifact.alias-added" and accepted["duplicate"] is False
    uuid.UUID(accepted["event_id"])

    # 401: no signature, a wrong one, a signature of another body
    assert post(st, good, secret=None).status_code == 401
    assert post(st, good, secret="not-the-secret").status_code == 401
    other = alias_body(ent, "v9")
    r = httpx.post(st.hook_url, content=other, headers=delivery_headers(good, secret=SECRET))
    assert r.status_code == 401 and "X-Wandb-Signature" in r.json()["error"]

    # 400: signed, but not JSON
    r = post(st, b"{not json")
    assert r.status_code == 400 and "JSON" in r.json()["error"]

    # 415: signed JSON sent as text/plain
    r = post(st, good, headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and "application/json" in r.json()["error"]

    # 422: JSON that is not a known W&B event names the field
    for body, field in (
        ({"event_type": "webhook", "client_payload": {}}, "event_type"),
        ({"event_type": "ADD_ARTIFACT_ALIAS", "entity_name": ent, "project_name": "p"}, "artifact_version_string"),
        ([1, 2, 3], None),
    ):
        raw = json.dumps(body).encode()
        r = post(st, raw)
        assert r.status_code == 422, (body, r.text)
        if field:
            assert r.json()["field"] == field and field in r.json()["error"]

    # 413: declared length over the limit (refused before the body is read) ...
    big = json.dumps({"event_type": "CREATE_ARTIFACT", "pad": "x" * 4096}).encode()
    r = post(st, big)
    assert r.status_code == 413 and "2048" in r.json()["error"]

    # ... and a chunked body with no declared length, cut off as soon as it passes the limit
    def chunks() -> Iterator[bytes]:
        for _ in range(64):
            yield b"x" * 1024

    r = httpx.post(st.hook_url, content=chunks(), headers={"Content-Type": "application/json",
                                                           "X-Wandb-Signature": "AAAA"})
    assert r.status_code == 413

    # rejected requests emit nothing: only the accepted delivery reaches Prefect
    wait_until(lambda: events_of(prefect_api, ent), 30, message="the accepted event in Prefect")
    stored = events_of(prefect_api, ent)
    assert [e["id"] for e in stored] == [accepted["event_id"]], "rejected deliveries must not emit events"
    ev = stored[0]
    assert ev["resource"]["prefect.resource.id"] == f"wandb.artifact.{ent}/wandb-registry-model/churn:v1"
    assert ev["resource"]["wandb.alias"] == "production"
    assert ev["payload"]["event_author"] == "ana"


def test_bearer_token_only(receivers, prefect_api: str) -> None:
    st = receivers(secret=None, token=TOKEN)
    body = alias_body(entity())
    assert post(st, body, secret=None, token=TOKEN).status_code == 202
    assert post(st, body, secret=None, token="wrong").status_code == 401
    assert post(st, body, secret=None).status_code == 401


def test_token_and_secret_both_required_when_both_set(receivers) -> None:
    st = receivers(secret=SECRET, token=TOKEN)
    body = alias_body(entity())
    assert post(st, body, secret=SECRET, token=None).status_code == 401
    assert post(st, body, secret=None, token=TOKEN).status_code == 401
    assert post(st, body, secret=SECRET, token=TOKEN).status_code == 202


def test_healthz(receivers) -> None:
    st = receivers()
    r = httpx.get(st.hook_url.replace("/hooks/wandb", "/healthz"))
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and set(r.json()["outbox"]) == {"pending", "sent", "confirmed", "rejected"}


# ------------------------------------------------------------------------------ duplicates


def test_duplicate_delivery_same_event_id_and_one_prefect_event(receivers, prefect_api: str) -> None:
    st = receivers()
    ent = entity()
    body = alias_body(ent)
    first = post(st, body).json()
    again = [post(st, body).json() for _ in range(3)]
    assert first["duplicate"] is False
    assert all(a["event_id"] == first["event_id"] and a["duplicate"] is True for a in again)
    # a different body is a different delivery
    other = post(st, alias_body(ent, "v2")).json()
    assert other["event_id"] != first["event_id"] and other["duplicate"] is False

    def both_stored() -> bool:
        return len(events_of(prefect_api, ent)) >= 2

    wait_until(both_stored, 30, message="both distinct events in Prefect")
    ids = sorted(e["id"] for e in events_of(prefect_api, ent))
    assert ids == sorted([first["event_id"], other["event_id"]]), "duplicates must produce one Prefect event"


def test_dedupe_window_is_configurable(receivers, prefect_api: str) -> None:
    st = receivers("--dedupe-window", "0")
    body = alias_body(entity())
    a, b = post(st, body).json(), post(st, body).json()
    assert a["event_id"] != b["event_id"] and b["duplicate"] is False


# ------------------------------------------------------------------------------ nothing lost


def _confirmed(st: Stack) -> dict[str, int]:
    return httpx.get(st.hook_url.replace("/hooks/wandb", "/healthz")).json()["outbox"]


def test_prefect_down_while_events_arrive_then_up(receivers, proxy: TcpProxy, prefect_api: str) -> None:
    st = receivers(api_port=proxy.port)
    ent = entity()
    proxy.down()
    accepted = [post(st, alias_body(ent, f"v{i}")) for i in range(10)]
    assert all(r.status_code == 202 for r in accepted), "the outbox accepts while Prefect is down"
    assert _confirmed(st)["confirmed"] == 0
    proxy.up()
    ids = {r.json()["event_id"] for r in accepted}

    wait_until(lambda: {e["id"] for e in events_of(prefect_api, ent)} >= ids, 90,
               message="every accepted event in Prefect after it came back")
    stored = events_of(prefect_api, ent)
    assert sorted(e["id"] for e in stored) == sorted(ids), "each accepted event arrives exactly once"
    wait_until(lambda: _confirmed(st)["confirmed"] == 10, 30, message="outbox confirmation by read-back")


def test_receiver_killed_with_undelivered_events_delivers_after_restart(
    receivers, proxy: TcpProxy, prefect_api: str
) -> None:
    st = receivers(api_port=proxy.port)
    ent = entity()
    proxy.down()
    ids = {post(st, alias_body(ent, f"v{i}")).json()["event_id"] for i in range(5)}
    st.services["receiver"].kill()  # SIGKILL: no shutdown hook runs
    proxy.up()
    st.start_receiver()  # same outbox file
    wait_until(lambda: {e["id"] for e in events_of(prefect_api, ent)} >= ids, 90,
               message="the events accepted before the crash")
    assert sorted(e["id"] for e in events_of(prefect_api, ent)) == sorted(ids)
    # and the restarted receiver still knows those bodies as duplicates
    again = post(st, alias_body(ent, "v0")).json()
    assert again["duplicate"] is True and again["event_id"] in ids


def test_outbox_unwritable_forwards_directly_or_answers_503(
    receivers, proxy: TcpProxy, prefect_api: str, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    st = receivers("--outbox", str(blocker / "outbox.sqlite3"), api_port=proxy.port)
    health = httpx.get(st.hook_url.replace("/hooks/wandb", "/healthz")).json()
    assert health["status"] == "degraded" and health["outbox"] == "unavailable"

    ent = entity()
    ok = post(st, alias_body(ent, "v1"))
    assert ok.status_code == 202, "with no outbox, an event Prefect has stored may still be accepted"
    assert any(e["id"] == ok.json()["event_id"] for e in events_of(prefect_api, ent)), \
        "202 without an outbox only after Prefect has the event"

    proxy.down()
    refused = post(st, alias_body(ent, "v2"))
    assert refused.status_code == 503, "neither spooled nor forwarded: never a 202"
    proxy.up()
    assert all(e["resource"]["wandb.version"] != "v2" for e in events_of(prefect_api, ent))


def test_prefect_server_crash_and_restart_loses_nothing(receivers, prefect_stack: Stack, prefect_api: str) -> None:
    """A real Prefect server killed with SIGKILL right after taking events into memory, then restarted.

    Events Prefect answered 204 for but had not yet stored are lost by Prefect; the outbox still
    holds them (never confirmed by read-back) and sends them again after --confirm-after.
    """
    st = receivers("--confirm-after", "5")
    ent = entity()
    ids = {post(st, alias_body(ent, f"v{i}")).json()["event_id"] for i in range(3)}
    prefect_stack.services["prefect-server"].kill()  # whatever was only in memory is gone
    during = [post(st, alias_body(ent, f"w{i}")) for i in range(3)]
    assert all(r.status_code == 202 for r in during), "the receiver keeps accepting while Prefect is down"
    ids |= {r.json()["event_id"] for r in during}
    prefect_stack.start_prefect()

    wait_until(lambda: {e["id"] for e in events_of(prefect_api, ent)} >= ids, 120,
               message="all six events after the Prefect restart")
    stored = events_of(prefect_api, ent)
    assert sorted(e["id"] for e in stored) == sorted(ids), "each accepted event stored exactly once"

"""Receiver faults over real processes: SIGKILL right after a 202, and a full disk under the outbox.

(tests/test_webhook.py covers Prefect down then up, a receiver killed while Prefect is unreachable,
an outbox path that cannot be opened at start, and a Prefect server crash.)
"""

from __future__ import annotations

import json
import resource
import sqlite3
import uuid
import warnings
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from deployments.stack import Stack
from deployments.wandb_events import artifact_body, delivery_headers
from tests.fakes.tcp_proxy import TcpProxy
from tests.helpers import read_events, wait_until

SECRET = "faults-test-secret"


def entity() -> str:
    return f"f{uuid.uuid4().hex[:10]}"


def body_for(ent: str, version: str) -> bytes:
    return json.dumps(artifact_body("ADD_ARTIFACT_ALIAS", ent, "wandb-registry-model", "churn", version,
                                    alias="faults-test", author="ana")).encode()


def post(st: Stack, body: bytes) -> httpx.Response:
    return httpx.post(st.hook_url, content=body, headers=delivery_headers(body, secret=SECRET), timeout=30)


def healthz(st: Stack) -> dict[str, Any]:
    r = httpx.get(st.hook_url.replace("/hooks/wandb", "/healthz"), timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def events_of(api: str, ent: str) -> list[dict[str, Any]]:
    return read_events(api, resource_prefix=f"wandb.artifact.{ent}/")


def outbox_states(path: Path, ids: set[str]) -> dict[str, str]:
    """The outbox state of each id, read from the file itself (the receiver is dead)."""
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT id, state FROM events").fetchall()
    finally:
        db.close()
    return {i: s for i, s in rows if i in ids}


# ------------------------------------------------------------------------------ SIGKILL after 202


def test_receiver_sigkilled_right_after_202_delivers_every_accepted_event_once(
    tmp_path: Path, prefect_stack: Stack, prefect_api: str
) -> None:
    """Prefect is up. Three times: three deliveries, SIGKILL the moment the last 202 arrives, start
    the receiver again on the same outbox. Events not yet sent or not yet confirmed at the kill
    must still reach Prefect, each exactly once."""
    st = Stack(tmp_path / "receiver", prefect_port=prefect_stack.prefect_port, webhook_secret=SECRET)
    outbox = st.home / "webhook-outbox.sqlite3"
    ent = entity()
    accepted: set[str] = set()
    unconfirmed_at_kill: set[str] = set()
    never_sent_at_kill: set[str] = set()
    try:
        for round_ in range(3):
            st.start_receiver("--confirm-after", "5")
            ids = set()
            for i in range(3):
                r = post(st, body_for(ent, f"v{round_}-{i}"))
                assert r.status_code == 202, r.text
                ids.add(r.json()["event_id"])
            st.services["receiver"].kill()  # SIGKILL: no shutdown hook, sender cut wherever it was
            accepted |= ids
            states = outbox_states(outbox, ids)
            assert set(states) == ids, "a 202'd event must be in the outbox file"
            unconfirmed_at_kill |= {i for i, s in states.items() if s != "confirmed"}
            never_sent_at_kill |= {i for i, s in states.items() if s == "pending"}
        assert unconfirmed_at_kill, "no kill landed before confirmation: the test proved nothing"

        st.start_receiver("--confirm-after", "5")
        wait_until(lambda: {e["id"] for e in events_of(prefect_api, ent)} >= accepted, 120,
                   message="every 202'd event in Prefect after the last restart")
        stored = [e["id"] for e in events_of(prefect_api, ent)]
        assert sorted(stored) == sorted(accepted), "each accepted event exactly once, nothing else"
        wait_until(lambda: healthz(st)["outbox"]["confirmed"] == len(accepted), 60,
                   message="the outbox to confirm every event by read-back")
        print(f"{len(accepted)} accepted, {len(unconfirmed_at_kill)} unconfirmed and "
              f"{len(never_sent_at_kill)} never sent when the receiver was killed")
    finally:
        st.stop()


# ------------------------------------------------------------------------------ disk full


def _largest_file(directory: Path) -> int:
    return max((p.stat().st_size for p in directory.rglob("*") if p.is_file()), default=0)


def test_disk_full_answers_503_never_202_for_an_event_not_stored(
    tmp_path: Path, prefect_stack: Stack, proxy: TcpProxy, prefect_api: str
) -> None:
    """The receiver's files may not grow past a limit (RLIMIT_FSIZE: writes fail with EFBIG, as on
    a full disk) and Prefect is unreachable. Deliveries are answered 202 while the outbox can
    store them, then 503 — never 202 for one it did not store, never a 500 — and the receiver
    stays up and says so on /healthz. Once Prefect is back every 202'd event arrives and no 503'd
    one does; once the limit is lifted the receiver accepts into its outbox again."""
    st = Stack(tmp_path / "receiver", prefect_port=proxy.port, webhook_secret=SECRET)
    st.start_receiver("--confirm-after", "5")
    pid = st.services["receiver"].proc.pid
    ent = entity()
    proxy.down()
    accepted: dict[str, str] = {}  # version -> event id
    refused: list[str] = []
    try:
        limit = _largest_file(st.home) + 256 * 1024
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
        for n in range(3000):
            version = f"v{n}"
            r = post(st, body_for(ent, version))
            assert r.status_code in (202, 503), f"{version}: {r.status_code} {r.text}"
            if r.status_code == 202:
                assert r.json()["duplicate"] is False
                accepted[version] = r.json()["event_id"]
            else:
                refused.append(version)
                if len(refused) >= 5:
                    break
        assert accepted, "the outbox stored nothing before the limit: pick a larger one"
        assert len(refused) == 5, f"{len(accepted)} deliveries accepted and never a 503 at a {limit}-byte limit"
        assert st.services["receiver"].alive()
        health = healthz(st)
        assert health["status"] != "ok", f"/healthz must show that the outbox cannot store events: {health}"
        # an already-stored body is still recognised as a duplicate, disk full or not
        again = post(st, body_for(ent, "v0"))
        assert again.status_code == 202, again.text
        assert again.json()["event_id"] == accepted["v0"] and again.json()["duplicate"] is True

        # Prefect is back, the disk still full: the stored events go out all the same
        proxy.up()
        wait_until(lambda: {e["id"] for e in events_of(prefect_api, ent)} >= set(accepted.values()), 120,
                   message="every 202'd event in Prefect while the disk is still full")

        # the limit is lifted: the outbox takes deliveries again
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        after = post(st, body_for(ent, "after"))
        assert after.status_code == 202, after.text
        accepted["after"] = after.json()["event_id"]
        wait_until(lambda: healthz(st)["status"] == "ok", 30, message="/healthz ok again once the outbox stores")
        wait_until(lambda: {e["id"] for e in events_of(prefect_api, ent)} >= set(accepted.values()), 120,
                   message="the delivery accepted after the disk was freed")
        wait_until(lambda: healthz(st)["outbox"]["confirmed"] >= len(accepted), 90,
                   message="the outbox to confirm every event by read-back")

        stored = events_of(prefect_api, ent)
        assert sorted(e["id"] for e in stored) == sorted(accepted.values()), "each 202'd event exactly once"
        stored_versions = {e["resource"]["wandb.version"] for e in stored}
        assert not stored_versions & set(refused), "a 503'd delivery must never become an event"
        assert st.services["receiver"].alive()
    finally:
        if st.services["receiver"].alive():
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        st.stop()


# ------------------------------------------------------------------------------ regression (in process)


def test_healthz_reports_an_outbox_that_cannot_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: /healthz said "ok" while every delivery was refused because the outbox could
    not write (disk full). It is "degraded", naming the error, until a delivery is stored again."""
    with warnings.catch_warnings():  # "install httpx2 instead": the project pins httpx, which TestClient still uses
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    from deployments import outbox as outbox_module
    from deployments.stack import free_port
    from deployments.wandb_events import Credentials
    from deployments.webhook import ReceiverConfig, create_app

    config = ReceiverConfig(api_url=f"http://127.0.0.1:{free_port()}/api",  # nothing listens: Prefect down
                            credentials=Credentials(secret=SECRET), outbox_path=str(tmp_path / "o.sqlite3"))
    real_put = outbox_module.Outbox.put

    def full_disk(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise outbox_module.OutboxUnavailable("outbox o.sqlite3 could not store the event: database or disk is full")

    ent = entity()
    with TestClient(create_app(config)) as client:
        def deliver(version: str) -> httpx.Response:
            raw = body_for(ent, version)
            return client.post("/hooks/wandb", content=raw, headers=delivery_headers(raw, secret=SECRET))

        assert deliver("v1").status_code == 202
        assert client.get("/healthz").json()["status"] == "ok"

        monkeypatch.setattr(outbox_module.Outbox, "put", full_disk)
        assert deliver("v2").status_code == 503
        health = client.get("/healthz").json()
        assert health["status"] == "degraded" and "disk is full" in health["outbox_error"], health
        assert set(health["outbox"]) == {"pending", "sent", "confirmed", "rejected"}

        monkeypatch.setattr(outbox_module.Outbox, "put", real_put)
        assert deliver("v3").status_code == 202
        health = client.get("/healthz").json()
        assert health["status"] == "ok" and "outbox_error" not in health, health

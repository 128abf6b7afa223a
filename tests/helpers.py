"""Helpers shared by the integration tests: polling and reading back from the Prefect API."""

from __future__ import annotations

import time
from typing import Any

import httpx


def wait_until(predicate, timeout: float, interval: float = 0.2, message: str = "condition"):
    """Poll `predicate` until it returns a truthy value; fail with `message` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {message}")
        time.sleep(interval)


def read_events(api: str, *, event: str | None = None, resource_prefix: str | None = None,
                ids: list[str] | None = None) -> list[dict[str, Any]]:
    """Events stored by the Prefect server (paged through /events/filter)."""
    filt: dict[str, Any] = {"occurred": {"since": "2000-01-01T00:00:00Z"}}
    if event:
        filt["event"] = {"name": [event]}
    if resource_prefix:
        filt["resource"] = {"id_prefix": [resource_prefix]}
    if ids:
        filt["id"] = {"id": ids}
    page = httpx.post(f"{api}/events/filter", json={"filter": filt, "limit": 50}, timeout=10).json()
    events = list(page["events"])
    while page.get("next_page"):
        page = httpx.get(page["next_page"], timeout=10).json()
        events.extend(page["events"])
    return events


def flow_runs(api: str, *, flow_name: str | None = None, name_like: str | None = None) -> list[dict[str, Any]]:
    body: dict[str, Any] = {"limit": 200}
    if flow_name:
        body["flows"] = {"name": {"any_": [flow_name]}}
    if name_like:
        body["flow_runs"] = {"name": {"like_": name_like}}
    return httpx.post(f"{api}/flow_runs/filter", json=body, timeout=10).json()


def deliver(st: Any, body: dict[str, Any], *, secret: str) -> dict[str, Any]:
    """POST one W&B body to a stack's receiver, signed with `secret`; it must be accepted (202)."""
    import json

    from deployments.wandb_events import delivery_headers

    raw = json.dumps(body).encode()
    r = httpx.post(st.hook_url, content=raw, headers=delivery_headers(raw, secret=secret), timeout=30)
    assert r.status_code == 202, r.text
    return r.json()


def forget_automations(api: str, deployment: str) -> None:
    """Delete the automations a served deployment owns, so later tests' events start none of its runs."""
    d = httpx.get(f"{api}/deployments/name/{deployment}/{deployment}", timeout=10)
    if d.status_code == 200:
        httpx.delete(f"{api}/automations/owned-by/prefect.deployment.{d.json()['id']}", timeout=10)

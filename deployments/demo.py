"""The demo on the local embedded stack: `make demo` (or `python -m deployments.demo`).

Starts a Prefect server on SQLite (UI on 127.0.0.1:4200), the webhook receiver and the served
flows; plays a W&B "production alias added" delivery, signed as W&B signs it, through the receiver;
then shows what happened: the Prefect event, the automation's flow run and the review issue.
With KEEP=1 the stack stays up for clicking through the UI; stop it with `make demo-stop`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from typing import Any

import httpx

from deployments.stack import ROOT, Stack, free_port, port_is_free
from deployments.wandb_events import artifact_body, delivery_headers

HOME = ROOT / ".demo"
PIDS = HOME / "pids.json"
SECRET = "local-demo-secret"


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def stop_previous() -> None:
    """Stop a stack an earlier `make demo KEEP=1` left running."""
    if not PIDS.exists():
        return
    for pid in json.loads(PIDS.read_text()).values():
        try:
            os.killpg(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    PIDS.unlink()
    time.sleep(2)


def wait(predicate, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def main() -> int:
    keep = os.environ.get("KEEP", "") not in ("", "0", "false", "no")
    stop_previous()
    shutil.rmtree(HOME, ignore_errors=True)
    prefect_port = 4200 if port_is_free(4200) else free_port()
    receiver_port = 8787 if port_is_free(8787) else free_port()
    stack = Stack(HOME, prefect_port=prefect_port, receiver_port=receiver_port, webhook_secret=SECRET, ui=True)
    results: list[tuple[str, str, bool]] = []
    ok = False
    try:
        say(f"starting Prefect server (SQLite, {HOME / 'prefect' / 'prefect.db'}) ...")
        stack.start_prefect()
        say(f"Prefect UI: {stack.ui_url}")
        stack.start_receiver()
        say(f"webhook receiver: POST {stack.hook_url} (HMAC secret '{SECRET}' for the demo)")
        stack.start_serve()
        say("served deployment review-issue/review-issue with its trigger from prefect.yaml")

        body = artifact_body("ADD_ARTIFACT_ALIAS", "acme", "wandb-registry-model", "churn-classifier", "v1",
                             alias="production", author="ana",
                             metadata={"accuracy": 0.912, "f1": 0.874, "dataset": "churn:v4"})
        raw = json.dumps(body).encode()
        say("W&B: alias 'production' added to acme/wandb-registry-model/churn-classifier:v1 -> signed webhook")
        t0 = time.monotonic()
        reply = httpx.post(stack.hook_url, content=raw, headers=delivery_headers(raw, secret=SECRET), timeout=30)
        accepted = reply.status_code == 202
        say(f"receiver answered {reply.status_code} {reply.text}")
        results.append(("delivery accepted (202, durable outbox)", reply.text, accepted))
        if not accepted:
            return 1
        event_id = reply.json()["event_id"]

        dup = httpx.post(stack.hook_url, content=raw, headers=delivery_headers(raw, secret=SECRET), timeout=30).json()
        results.append(("same delivery again is a duplicate", f"duplicate={dup['duplicate']}",
                        dup["duplicate"] and dup["event_id"] == event_id))

        def event_stored() -> bool:
            r = httpx.post(f"{stack.api_url}/events/filter",
                           json={"filter": {"id": {"id": [event_id]}, "occurred": {"since": "2000-01-01T00:00:00Z"}}})
            return bool(r.json()["events"])

        wait(event_stored, 30, "the event in Prefect")
        say(f"Prefect stored event wandb.artifact.alias-added ({event_id})")
        results.append(("Prefect event wandb.artifact.alias-added", event_id, True))

        def finished_run() -> dict[str, Any] | None:
            runs = httpx.post(f"{stack.api_url}/flow_runs/filter", json={"limit": 10}).json()
            for run in runs:
                if run["parameters"].get("event_id") == event_id and run["state_type"] in (
                        "COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                    return run
            return None

        run = wait(finished_run, 120, "the review-issue flow run")
        elapsed = time.monotonic() - t0
        link = f"{stack.ui_url}/runs/flow-run/{run['id']}"
        say(f"automation started flow run '{run['name']}' -> {run['state_name']} ({elapsed:.1f}s after the POST)")
        say(f"  {link}")
        results.append(("review-issue flow run (via automation)", f"{run['name']} {run['state_name']}",
                        run["state_type"] == "COMPLETED"))

        issues = sorted((HOME / "issues").glob("*.md"))
        if issues:
            text = issues[0].read_text()
            title = next((line for line in text.splitlines() if line.startswith("title:")), "")
            say(f"review issue written to {issues[0]} ({title})")
            print("\n".join("    " + line for line in text.splitlines()[:16]), flush=True)
        results.append(("review issue in the local store", str(issues[0]) if issues else "none", len(issues) == 1))
        ok = all(passed for _, _, passed in results)
    except Exception as exc:  # noqa: BLE001 - the demo reports and exits non-zero
        say(f"demo failed: {exc}")
        for svc in stack.services.values():
            say(f"  log of {svc.name}: {svc.log}")
    finally:
        print("\nSummary", flush=True)
        print(f"  {'step':<44} {'result':<6} detail")
        for step, detail, passed in results:
            print(f"  {step:<44} {'ok' if passed else 'FAIL':<6} {detail[:90]}")
        print(f"\nPrefect UI: {stack.ui_url}  (flow runs, the markdown artifact, events)")
        if keep and ok:
            PIDS.write_text(json.dumps({s.name: s.proc.pid for s in stack.services.values()}))
            print("KEEP=1: the stack is still running; stop it with `make demo-stop`.")
        else:
            stack.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "stop":
        stop_previous()
        raise SystemExit(0)
    raise SystemExit(main())

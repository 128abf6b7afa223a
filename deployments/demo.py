"""The demo on the local embedded stack: `make demo` (or `python -m deployments.demo`).

Starts a Prefect server on SQLite (UI on 127.0.0.1:4200), the webhook receiver (:8787), the local
model endpoint (:8788) and the served flows, then plays the whole chain through signed W&B-shaped
webhooks only (`deployments.scenario`): reference dataset -> first model to production (review issue
+ canary) -> drifted dataset -> drift-check -> retrain -> candidate promoted from the registry CLI ->
review + canary -> promoted -> a faulty version promoted -> canary -> rolled back. Prints each step
with links to the UI and a summary; exits 0 only if every step ended as expected.
With KEEP=1 the stack stays up for clicking through the UI; stop it with `make demo-stop`.
With TOPOLOGY=production the same story runs on the production topology (`deployments.production`:
PostgreSQL, Redis, the services process, two API replicas behind HAProxy, `prefect deploy --all`,
two workers).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

from deployments.scenario import Settings
from deployments.stack import ROOT, Stack, free_port, port_is_free

HOME = ROOT / ".demo"
DEMO = Settings(rps=40, steps=(20, 50, 100), bake=4, final_bake=3, min_requests=30)
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


def main() -> int:
    from deployments.scenario import Scenario, summary

    keep = os.environ.get("KEEP", "") not in ("", "0", "false", "no")
    topology = os.environ.get("TOPOLOGY", "") or "embedded"
    if topology not in ("embedded", "production"):
        print(f"demo: TOPOLOGY must be embedded or production, got {topology!r}", file=sys.stderr)
        return 2
    stop_previous()
    shutil.rmtree(HOME, ignore_errors=True)
    prefect_port = 4200 if port_is_free(4200) else free_port()
    receiver_port = 8787 if port_is_free(8787) else free_port()
    endpoint_port = 8788 if port_is_free(8788) else free_port()
    ports = dict(prefect_port=prefect_port, receiver_port=receiver_port, endpoint_port=endpoint_port)
    if topology == "production":
        from deployments.production import DEFAULT_PG, ProductionStack

        stack: Stack = ProductionStack(HOME, **ports, webhook_secret=SECRET, ui=True,
                                       pg_admin_url=os.environ.get("MODELOPS_PG_URL") or DEFAULT_PG)
    else:
        stack = Stack(HOME, **ports, webhook_secret=SECRET, ui=True)
    results = []
    ok = False
    started = time.monotonic()
    try:
        if topology == "production":
            say("starting PostgreSQL database, Redis, `prefect server services start`, two API replicas "
                "(`prefect server start --no-services`) and HAProxy in front of them ...")
        else:
            say(f"starting Prefect server (SQLite, {HOME / 'prefect' / 'prefect.db'}) ...")
        stack.start_prefect()
        say(f"Prefect UI: {stack.ui_url}")
        stack.start_receiver()
        say(f"webhook receiver: POST {stack.hook_url} (HMAC secret '{SECRET}' for the demo)")
        stack.start_endpoint("--seed", "7")
        say(f"model endpoint: POST {stack.endpoint_url}/v1/predict")
        policy = save_demo_policy(stack)
        if topology == "production":
            stack.deploy()  # type: ignore[attr-defined]
            stack.start_workers({"MODELOPS_ROLLOUT_POLICY_BLOCK": policy})  # type: ignore[attr-defined]
            say(f"`prefect deploy --all` created the deployments and their triggers; two `prefect worker start "
                f"--pool modelops-process` workers run them (canary policy block {policy}: short bakes)")
        else:
            stack.start_serve(deployments=("review-issue", "drift-check", "retrain", "canary-rollout"),
                              env={"MODELOPS_ROLLOUT_POLICY_BLOCK": policy})
            say("served review-issue, drift-check, retrain and canary-rollout with their triggers from "
                f"prefect.yaml (canary policy block {policy}: short bakes for the demo)")
        scenario = Scenario(stack, DEMO, say)
        results = scenario.run()
        ok = bool(results) and all(r.ok for r in results)
    except Exception as exc:  # noqa: BLE001 - the demo reports and exits non-zero
        say(f"demo failed: {type(exc).__name__}: {exc}")
        for svc in stack.services.values():
            say(f"  log of {svc.name}: {svc.log}")
    finally:
        print(f"\nSummary ({time.monotonic() - started:.0f}s)", flush=True)
        print(summary(results) if results else "  no step finished", flush=True)
        if results:
            print("\n" + scenario.where_it_stands(), flush=True)
        print(f"\nPrefect UI: {stack.ui_url}  (flow runs, artifacts, events, automations, blocks)")
        print(f"Review issues: {HOME / 'issues'}   Registry: {HOME / 'registry'}")
        shots = os.environ.get("SCREENSHOTS", "")
        if shots and results:
            try:
                from deployments.screenshots import capture, demo_pages

                for path in capture(stack.ui_url, Path(shots), demo_pages(stack.api_url)):
                    print(f"screenshot: {path}")
            except Exception as exc:  # noqa: BLE001 - the story's outcome does not depend on the pictures
                print(f"screenshots not taken: {type(exc).__name__}: {exc}", file=sys.stderr)
        if keep and ok:
            PIDS.write_text(json.dumps({s.name: s.proc.pid for s in stack.services.values()}))
            print("KEEP=1: the stack is still running; stop it with `make demo-stop`.")
        else:
            stack.stop()
    return 0 if ok else 1


def save_demo_policy(stack: Stack) -> str:
    """A RolloutPolicy block with the demo's short bakes, saved on the stack's Prefect server."""
    os.environ["PREFECT_API_URL"] = stack.api_url
    from blocks.policy import RolloutPolicy

    RolloutPolicy(steps=list(DEMO.steps), bake_seconds=DEMO.bake, final_bake_seconds=DEMO.final_bake,
                  min_requests=DEMO.min_requests, deadline_seconds=600,
                  # short bakes on a shared laptop: judge latency only when the canary is 50% slower
                  min_latency_increase=0.5).save("demo", overwrite=True)
    return "rollout-policy/demo"


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "stop":
        stop_previous()
        raise SystemExit(0)
    raise SystemExit(main())

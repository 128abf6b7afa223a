"""The whole chain on the local stack, played through signed W&B-shaped webhooks only.

    (0) the reference dataset lands        -> drift-check: no drift
    (a) model v0 gets `production`          -> review issue + canary (first model: takes 100%)
    (b) a drifted dataset version lands     -> drift-check -> retrain -> v1 registered as `candidate`
        v1 promoted from the registry CLI   -> review issue + canary against v0 -> promoted
    (c) a faulty v2 promoted                -> canary -> rolled back, v1 keeps 100%

Nothing calls a flow directly: the local registries announce every change as W&B would (a signed
webhook to the receiver), and Prefect automations run the served deployments. Used by `make demo`
(`deployments.demo`) and by the test suite (tests/test_scenario.py), with shorter settings.
W&B numbers versions from v0, and so does the local registry.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from deployments.stack import ROOT, Stack

MODEL = "churn-model"
DATASET = "churn-data"
TERMINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


@dataclass
class Settings:
    rps: float = 40.0  # prediction traffic while canaries bake
    steps: tuple[int, ...] = (20, 50, 100)
    bake: float = 4.0
    final_bake: float = 3.0
    min_requests: int = 30
    rows: int = 4000  # rows per dataset version
    timeout: float = 240.0  # per wait
    fault: dict[str, float] = field(default_factory=lambda: {"error_rate": 0.3})


@dataclass
class Step:
    step: str
    expected: str
    got: str
    ok: bool
    links: list[str] = field(default_factory=list)


class Scenario:
    def __init__(self, stack: Stack, settings: Settings | None = None, say: Callable[[str], None] = print) -> None:
        self.stack = stack
        self.settings = settings or Settings()
        self.say = say
        self.results: list[Step] = []
        self.data = stack.home / "data"
        self.data.mkdir(parents=True, exist_ok=True)

    # -- plumbing --------------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        env = {"MODELOPS_HOME": str(self.stack.home), "MODELOPS_RECEIVER_URL": self.stack.hook_url}
        if self.stack.webhook_secret:
            env["WANDB_WEBHOOK_SECRET"] = self.stack.webhook_secret
        return env

    def registry(self, kind: str = "model") -> Any:
        from blocks.registry import LocalRegistry

        return LocalRegistry(registry=kind, receiver_url=self.stack.hook_url,
                             webhook_secret=self.stack.webhook_secret)

    def runs(self, flow: str, **params: str) -> list[dict[str, Any]]:
        body = {"flows": {"name": {"any_": [flow]}}, "limit": 50, "sort": "EXPECTED_START_TIME_DESC"}
        runs = httpx.post(f"{self.stack.api_url}/flow_runs/filter", json=body, timeout=10).json()
        return [r for r in runs if all(str(r["parameters"].get(k)) == v for k, v in params.items())]

    def wait_run(self, flow: str, newer_than: dict[str, Any] | None = None, **params: str) -> dict[str, Any]:
        """The first finished run of `flow` with `params` (created after `newer_than`, when given)."""
        deadline = time.monotonic() + self.settings.timeout
        announced = False
        while time.monotonic() < deadline:
            found = [r for r in self.runs(flow, **params)
                     if newer_than is None or (r["created"] > newer_than["created"] and r["id"] != newer_than["id"])]
            if found and not announced:
                self.say(f"  automation started {flow} run '{found[0]['name']}': {self.link(found[0])}")
                announced = True
            done = [r for r in found if r["state_type"] in TERMINAL]
            if done:
                run = done[0]
                self.say(f"  {run['name']} -> {run['state_name']}")
                return run
            time.sleep(0.5)
        raise TimeoutError(f"no finished {flow} run with {params} within {self.settings.timeout:.0f}s")

    def events(self, name: str, resource_id: str) -> list[dict[str, Any]]:
        body = {"filter": {"event": {"name": [name]}, "resource": {"id": [resource_id]},
                           "occurred": {"since": "2000-01-01T00:00:00Z"}}, "limit": 50}
        return httpx.post(f"{self.stack.api_url}/events/filter", json=body, timeout=10).json()["events"]

    def wait_event(self, names: list[str], resource_id: str, timeout: float = 30) -> dict[str, Any] | None:
        """The first of `names` stored for `resource_id` (events are persisted a moment after the run ends)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name in names:
                found = self.events(name, resource_id)
                if found:
                    return found[0]
            time.sleep(0.5)
        return None

    def canary_outcome(self, version: str) -> str:
        event = self.wait_event(["modelops.canary.promoted", "modelops.canary.rolled-back"], _model_id(version))
        return event["event"].rsplit(".", 1)[-1] if event else "no event"

    def link(self, run: dict[str, Any]) -> str:
        return f"{self.stack.ui_url}/runs/flow-run/{run['id']}"

    def check(self, step: str, expected: str, got: str, ok: bool, runs: list[dict[str, Any]] = ()) -> bool:
        self.results.append(Step(step, expected, got, ok, [self.link(r) for r in runs]))
        self.say(f"  {'ok  ' if ok else 'FAIL'} {step}: {got}")
        return ok

    def split_names(self) -> dict[str, int]:
        from blocks.local_endpoint import LocalEndpoint

        ep = LocalEndpoint(url=self.stack.endpoint_url)
        names = {m.id: m.display_name for m in ep.deployed()}
        return {names.get(k, k): v for k, v in ep.traffic().items()}

    def promote_with_cli(self, version: str) -> None:
        cmd = [sys.executable, "-m", "flows.registry", "promote", f"{MODEL}:{version}", "--alias", "production"]
        self.say(f"$ python -m flows.registry promote {MODEL}:{version} --alias production")
        proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **self.env(), "PYTHONPATH": str(ROOT)},
                              capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"registry CLI failed ({proc.returncode}): {proc.stderr[-500:]}")

    def issue_for(self, version: str) -> Path | None:
        marker = f"wandb.artifact.local/wandb-registry-model/{MODEL}:{version}"
        for path in sorted((self.stack.home / "issues").glob("*.md")):
            if marker in path.read_text():
                return path
        return None

    # -- the story --------------------------------------------------------------------------------
    def run(self) -> list[Step]:
        from deployments.traffic import Traffic

        os.environ.update(self.env())
        s = self.settings
        traffic = None
        try:
            for part in (self.reference_lands, self.first_model_to_production, self.drift_retrain_promote,
                         self.faulty_model_rolled_back):
                if part == self.drift_retrain_promote:
                    traffic = Traffic(self.stack.endpoint_url, rps=s.rps).start()
                    self.say(f"prediction traffic: {s.rps:g} requests/s on {self.stack.endpoint_url}/v1/predict")
                part()
                if not all(r.ok for r in self.results):
                    self.say("a step did not end as expected: stopping the story here")
                    break
        finally:
            if traffic is not None:
                traffic.stop()
        return self.results

    def reference_lands(self) -> None:
        from training.tabular import make_dataset

        s = self.settings
        self.say("(0) W&B: reference dataset churn-data:v0 created (alias `reference`)")
        path = self.data / "churn-v0.parquet"
        make_dataset(s.rows, seed=1).to_parquet(path)
        mv = self.registry("dataset").register(DATASET, path, metadata={"rows": s.rows}, aliases=["reference"],
                                               event="CREATE_ARTIFACT")
        run = self.wait_run("drift-check", current=f"local/wandb-registry-dataset/{DATASET}:{mv.version}")
        event = self.wait_event(["modelops.drift.checked", "modelops.drift.detected"], _dataset_id(mv.version))
        got = event["event"] if event else "no drift event"
        self.check("(0) drift-check of the reference", "modelops.drift.checked", f"{run['state_name']}, {got}",
                   run["state_name"] == "NoDrift" and got == "modelops.drift.checked", [run])

    def first_model_to_production(self) -> None:
        from training.tabular import fit, save_model, score, split

        import pandas as pd

        self.say("(a) first model: trained on the reference, registered, given `production`")
        df = pd.read_parquet(self.data / "churn-v0.parquet")
        train, holdout = split(df, "churned")
        bundle = fit(train, "churned", {})
        path = save_model(bundle, self.data / "model-v0")
        reg = self.registry()
        mv = reg.register(MODEL, path, metadata={"metrics": score(bundle, holdout), "dataset": "churn-data:v0"},
                          aliases=["candidate"])
        reg.set_alias(MODEL, mv.version, "production")
        self.say(f"W&B: alias `production` added to {MODEL}:{mv.version} -> signed webhook")
        review = self.wait_run("review-issue", collection=MODEL, version=mv.version)
        canary = self.wait_run("canary-rollout", collection=MODEL, version=mv.version)
        issue = self.issue_for(mv.version)
        self.check(f"(a) review issue for {MODEL}:{mv.version}", "opened",
                   f"{review['state_name']}, {issue.name if issue else 'no issue'}",
                   review["state_type"] == "COMPLETED" and issue is not None, [review])
        split = self.split_names()
        self.check(f"(a) canary of {MODEL}:{mv.version}", "promoted (first model takes 100%)",
                   f"{canary['state_name']}, split {split}",
                   canary["state_name"] == "Promoted" and split == {f"{MODEL}:{mv.version}": 100}, [canary])

    def drift_retrain_promote(self) -> None:
        from training.tabular import make_dataset

        s = self.settings
        self.say("(b) W&B: dataset churn-data:v1 created (its population has shifted)")
        path = self.data / "churn-v1.parquet"
        make_dataset(s.rows, seed=2, shift=1.0).to_parquet(path)
        dv = self.registry("dataset").register(DATASET, path, metadata={"rows": s.rows}, aliases=[],
                                               event="CREATE_ARTIFACT")
        current = f"local/wandb-registry-dataset/{DATASET}:{dv.version}"
        drift = self.wait_run("drift-check", current=current)
        event = self.wait_event(["modelops.drift.detected", "modelops.drift.checked"], _dataset_id(dv.version))
        drifted = event["payload"].get("drifted_features", []) if event else []
        self.check("(b) drift-check of the new version", "modelops.drift.detected",
                   f"{drift['state_name']}, {event['event'] if event else 'no event'}: {', '.join(drifted) or 'none'}",
                   drift["state_name"] == "Drift" and bool(event) and event["event"] == "modelops.drift.detected",
                   [drift])
        retrain = self.wait_run("retrain", dataset=current)
        candidate = self.registry().find(MODEL, "candidate")
        got = f"{retrain['state_name']}, candidate {candidate.version if candidate else 'none'}"
        if candidate:
            m = candidate.metadata.get("metrics", {})
            got += f" (accuracy {m.get('accuracy', float('nan')):.3f}, f1 {m.get('f1', float('nan')):.3f})"
        ok = retrain["state_name"] == "Registered" and candidate is not None and candidate.version != "v0"
        self.check("(b) retrain on the drifted data", "new version registered as candidate", got, ok, [retrain])
        if not ok:
            return
        self.promote_with_cli(candidate.version)
        review = self.wait_run("review-issue", collection=MODEL, version=candidate.version)
        canary = self.wait_run("canary-rollout", collection=MODEL, version=candidate.version)
        issue = self.issue_for(candidate.version)
        self.check(f"(b) review issue for {MODEL}:{candidate.version}", "opened",
                   f"{review['state_name']}, {issue.name if issue else 'no issue'}",
                   review["state_type"] == "COMPLETED" and issue is not None, [review])
        split = self.split_names()
        outcome = self.canary_outcome(candidate.version)
        self.check(f"(b) canary of {MODEL}:{candidate.version} against v0", "promoted, v0 undeployed",
                   f"{canary['state_name']}, {outcome}, split {split}",
                   canary["state_name"] == "Promoted" and outcome == "promoted"
                   and split == {f"{MODEL}:{candidate.version}": 100}, [canary])
        self.good = candidate.version

    def faulty_model_rolled_back(self) -> None:
        good = getattr(self, "good", None)
        if good is None:
            return
        reg = self.registry()
        self.say(f"(c) a faulty model: a copy of {good} that fails {self.settings.fault['error_rate']:.0%} of requests")
        src = reg.get(MODEL, good)
        bad = reg.register(MODEL, src.uri, metadata={**src.metadata, "demo_fault": dict(self.settings.fault)},
                           aliases=["candidate"])
        self.promote_with_cli(bad.version)
        canary = self.wait_run("canary-rollout", collection=MODEL, version=bad.version)
        event = self.wait_event(["modelops.canary.rolled-back", "modelops.canary.promoted"], _model_id(bad.version))
        outcome = event["event"].rsplit(".", 1)[-1] if event else "no event"
        reason = str(event["payload"].get("reason", ""))[:80] if event else ""
        split = self.split_names()
        self.check(f"(c) canary of the faulty {MODEL}:{bad.version}", f"rolled back, {good} keeps 100%",
                   f"{canary['state_name']}, {outcome}: {reason}; split {split}",
                   canary["state_type"] == "FAILED" and canary["state_name"] == "RolledBack"
                   and split == {f"{MODEL}:{good}": 100} and outcome == "rolled-back", [canary])
        # the registry tells the truth: production back on what serves, the faulty version marked
        aliases = self.aliases()
        self.check("(c) registry after the rollback", f"production {good} (serving), rolled-back {bad.version}",
                   ", ".join(f"{a} {v}" for a, v in sorted(aliases.items())),
                   aliases.get("production") == good and aliases.get("rolled-back") == bad.version
                   and aliases.get("candidate") != bad.version, [canary])
        # moving production back announced it like a promotion: that rollout finds it serving, and stops
        again = self.wait_run("canary-rollout", collection=MODEL, version=good, newer_than=canary)
        self.check(f"(c) production back on {good}: no new rollout", "AlreadyServing, split unchanged",
                   f"{again['state_name']}, split {self.split_names()}",
                   again["state_name"] == "AlreadyServing" and self.split_names() == {f"{MODEL}:{good}": 100},
                   [again])

    def where_it_stands(self) -> str:
        """The registry's aliases beside the endpoint's split (they must agree)."""
        aliases = ", ".join(f"{a}={v}" for a, v in sorted(self.aliases().items())) or "none"
        try:
            split = ", ".join(f"{k} {v}%" for k, v in self.split_names().items())
        except Exception as exc:  # noqa: BLE001 - the endpoint may be gone already
            split = f"unreadable ({exc})"
        return f"registry {MODEL}: {aliases}\nendpoint: {split}"

    def aliases(self, kind: str = "model") -> dict[str, str]:
        return {a: mv.version for mv in self.registry(kind).versions(MODEL if kind == "model" else DATASET)
                for a in mv.aliases}


def _model_id(version: str) -> str:
    return f"wandb.artifact.local/wandb-registry-model/{MODEL}:{version}"


def _dataset_id(version: str) -> str:
    return f"wandb.artifact.local/wandb-registry-dataset/{DATASET}:{version}"


def summary(results: list[Step]) -> str:
    lines = [f"  {'step':<46} {'result':<6} {'expected':<36} got"]
    for r in results:
        lines.append(f"  {r.step:<46} {'ok' if r.ok else 'FAIL':<6} {r.expected:<36} {r.got[:110]}")
    return "\n".join(lines)

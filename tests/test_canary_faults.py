"""canary-rollout against an unreliable endpoint (issue 7): the flow process killed mid-canary while the
endpoint's admin API fails (5xx, hung calls, answers lost to the client's timeout) -> a rerun converges,
and at every observation the split sums to 100 and names only deployed versions. Also: timeouts on a
traffic shift are retried, then rolled back safely when they persist; an operator's abort retries its
reads of the endpoint."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from blocks.endpoint import DeployedModel, TransientEndpointError
from blocks.local_endpoint import LocalEndpoint
from deployments.stack import ROOT, Stack
from deployments.traffic import Traffic
from tests.helpers import wait_until
from training.tabular import fit, make_dataset, save_model, split

#: like tests/test_canary.py: these tests are not about latency, which is noisy on a loaded machine
POLICY_BLOCK = "rollout-policy/canary-faults-latency-lenient"
#: the seed of the kill points and of the admin API's faults (MODELOPS_FAULT_SEED replays another)
SEED = int(os.environ.get("MODELOPS_FAULT_SEED", "7"))
CLIENT_TIMEOUT = 1.0  # seconds per admin call of the flow's endpoint block; injected delays exceed it
DELAY_MS = 1600


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = {}
    for name, seed in (("v1", 1), ("v2", 2)):
        train, _ = split(make_dataset(1200, seed=seed), "churned")
        out[name] = str(save_model(fit(train, "churned", {}), tmp_path_factory.mktemp(name)))
    return out


@pytest.fixture(scope="module")
def policy_block(prefect_api: str) -> str:
    from blocks.policy import RolloutPolicy

    RolloutPolicy(min_latency_increase=1.0).save(POLICY_BLOCK.split("/", 1)[1], overwrite=True)
    return POLICY_BLOCK


@pytest.fixture()
def endpoint(tmp_path: Path, prefect_api: str) -> Iterator[tuple[Stack, str]]:
    """The local endpoint, and a saved LocalEndpoint block for it with a short client timeout."""
    st = Stack(tmp_path, prefect_port=int(prefect_api.rsplit(":", 1)[1].split("/")[0]))
    st.start_endpoint("--seed", "7")
    name = f"canary-faults-{uuid.uuid4().hex[:8]}"
    LocalEndpoint(url=st.endpoint_url, timeout=CLIENT_TIMEOUT).save(name, overwrite=True)
    try:
        yield st, f"local-endpoint/{name}"
        httpx.delete(f"{st.endpoint_url}/v1/faults", timeout=10)
        health = snapshot(st.endpoint_url)
        assert sum(health["traffic_split"].values()) == 100 and set(health["traffic_split"]) <= set(health["models"])
    finally:
        st.stop()


def snapshot(url: str) -> dict[str, Any]:
    """Split and deployed models in one consistent read, through /healthz (never faulted)."""
    return httpx.get(f"{url}/healthz", timeout=5).json()


def by_name(health: dict[str, Any]) -> dict[str, int]:
    return {health["models"].get(k, f"<not deployed: {k}>"): v for k, v in health["traffic_split"].items()}


class Observer:
    """Polls the endpoint every ~50 ms in the background and checks every observation: the split sums to
    100, names only deployed models, and no display name is deployed twice."""

    def __init__(self, url: str, interval: float = 0.05) -> None:
        self.url, self.interval = url, interval
        self.observations = 0
        self.unanswered = 0
        self.violations: list[str] = []
        self.states: list[tuple[tuple[str, int], ...]] = []  # distinct successive splits by display name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="split-observer")

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.wait(self.interval):
                try:
                    health = client.get(f"{self.url}/healthz").json()
                except (httpx.HTTPError, ValueError):
                    self.unanswered += 1
                    continue
                self.observations += 1
                split_, models = health["traffic_split"], health["models"]
                problems = []
                if sum(split_.values()) != 100:
                    problems.append(f"sums to {sum(split_.values())}")
                if not set(split_) <= set(models):
                    problems.append(f"names undeployed {sorted(set(split_) - set(models))}")
                if len(set(models.values())) != len(models):
                    problems.append(f"a version deployed twice: {sorted(models.values())}")
                if problems:
                    self.violations.append(f"observation {self.observations}: {'; '.join(problems)} "
                                           f"(split {split_}, deployed {models})")
                state = tuple(sorted(by_name(health).items()))
                if not self.states or self.states[-1] != state:
                    self.states.append(state)

    def __enter__(self) -> "Observer":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(10)


def stable_on(url: str, uri: str, name: str) -> str:
    ep = LocalEndpoint(url=url)
    deployed_id = ep.deploy(uri, name)
    ep.set_traffic({deployed_id: 100})
    return deployed_id


def cli_result(stdout: str) -> dict[str, Any] | None:
    """The result the CLI prints as JSON at the end, if it got that far."""
    start = stdout.rfind('{\n  "model"')
    return json.JSONDecoder().raw_decode(stdout[start:])[0] if start >= 0 else None


def test_killed_rollouts_under_a_flaky_admin_api_converge_and_the_split_stays_safe(
        endpoint, models, policy_block, prefect_api, tmp_path) -> None:
    """The admin API fails ~1 call in 5 (503, hung past the client timeout, or applied with its answer
    lost); the flow process is SIGKILLed at seeded random points and run again: a rerun ends the rollout
    (promoted or rolled back, as the verdict says) with one version serving 100%, and a background
    observer never sees an unsafe split."""
    st, endpoint_block = endpoint
    rng = random.Random(SEED)
    coll = f"churn-{uuid.uuid4().hex[:6]}"
    v1, v2 = f"{coll}:v1", f"{coll}:v2"
    stable_id = stable_on(st.endpoint_url, models["v1"], v1)
    cli = [sys.executable, "-m", "flows.canary", "--model", v2, "--model-uri", models["v2"],
           "--endpoint", endpoint_block, "--policy-block", policy_block, "--steps", "25,50,100",
           "--bake", "2s", "--final-bake", "1s", "--min-requests", "20"]
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PYTHONPATH": str(ROOT)}
    faults = {"error_rate": 0.12, "timeout_rate": 0.03, "late_rate": 0.03, "delay_ms": DELAY_MS, "seed": SEED}
    r = httpx.post(f"{st.endpoint_url}/v1/faults", json={"admin": faults}, timeout=10)
    assert r.status_code == 200, r.text

    history: list[str] = []
    kills = 0
    outcome: dict[str, Any] | None = None

    def at(stage: str | int | float, started: float) -> bool:
        if isinstance(stage, float):  # seconds after the start
            return time.monotonic() - started >= stage
        health = snapshot(st.endpoint_url)
        return v2 in health["models"].values() and (stage == "deployed" or by_name(health).get(v2, 0) >= stage)

    def next_kill_point() -> str | int | float:
        """Seeded: a point this run has yet to reach (the canary deployed, or a step above the current
        share), or some seconds after the start (in the process's start-up, reconcile or first calls)."""
        health = snapshot(st.endpoint_url)
        share = by_name(health).get(v2, 0) if v2 in health["models"].values() else None
        options: list[str | int | float] = ["deployed"] if share is None else []
        options += [s for s in (25, 50, 100) if share is None or s > share]
        return rng.choice(options) if options and rng.random() < 0.8 else round(rng.uniform(2, 8), 1)

    running: subprocess.Popen | None = None
    try:
        with Observer(st.endpoint_url) as observer, Traffic(st.endpoint_url, rps=60):
            for k in range(5):  # kill a run, twice (a run that ends before its kill point is simply run again)
                if kills == 2:
                    break
                stage, extra = next_kill_point(), rng.uniform(0, 0.6)
                started = time.monotonic()
                output = tmp_path / f"run-{k}.out"
                with open(output, "w") as fh:  # a file, not a pipe nobody reads while the run goes on
                    running = subprocess.Popen(cli, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                               start_new_session=True)
                wait_until(lambda: running.poll() is not None or at(stage, started), 120, interval=0.05,
                           message=f"the rollout to reach {stage} (seed {SEED})")
                time.sleep(extra)
                if running.poll() is None:
                    os.killpg(running.pid, signal.SIGKILL)
                    running.wait(30)
                    kills += 1
                    history.append(f"killed at {stage}+{extra:.2f}s after {time.monotonic() - started:.1f}s: "
                                   f"{by_name(snapshot(st.endpoint_url))}")
                    continue
                ended = cli_result(output.read_text())
                history.append(f"ended by itself with {running.returncode} "
                               f"({ended and ended['outcome']}: {ended and ended.get('reason')}) before the kill "
                               f"at {stage} after {time.monotonic() - started:.1f}s")
            running = None
            for _ in range(5):  # rerun (the API still flaky) until a run ends the rollout
                if outcome is not None:
                    break
                started = time.monotonic()
                run = subprocess.run(cli, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
                history.append(f"rerun exited {run.returncode} after {time.monotonic() - started:.1f}s")
                if run.returncode in (0, 3):
                    outcome = cli_result(run.stdout)
                else:
                    assert run.returncode == 1, f"{history}\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}"
            time.sleep(0.3)  # a few observations of the final state
    finally:
        if running is not None and running.poll() is None:
            os.killpg(running.pid, signal.SIGKILL)
            running.wait(30)

    injected = httpx.get(f"{st.endpoint_url}/v1/faults", timeout=10).json()["injected"]
    print(f"\ncanary-faults seed {SEED}: {observer.observations} observations ({observer.unanswered} unanswered), "
          f"{kills} kill(s), injected {injected}, runs {history}, outcome "
          f"{outcome and outcome['outcome']} ({outcome and outcome.get('reason')}), splits seen {observer.states}")
    assert not observer.violations, observer.violations[:5]
    assert observer.observations > 200, f"only {observer.observations} observations"
    assert kills == 2, f"runs were not killed twice: {history}"
    assert sum(injected.values()) >= 3, f"the admin API hardly failed: {injected}"
    assert outcome is not None, f"no rerun ended the rollout: {history}"

    httpx.delete(f"{st.endpoint_url}/v1/faults", timeout=10)
    final = snapshot(st.endpoint_url)
    if outcome["outcome"] in ("promoted", "already-serving"):
        assert by_name(final) == {v2: 100} and sorted(final["models"].values()) == [v2], (final, history)
        assert any(len(state) == 2 for state in observer.states), f"never saw the split mid-rollout: {observer.states}"
    else:
        assert outcome["outcome"] == "rolled-back", outcome
        assert final["traffic_split"] == {stable_id: 100} and sorted(final["models"].values()) == [v1], (final, history)


def test_timeouts_on_a_shift_are_retried(endpoint, models, policy_block) -> None:
    """Two shifts whose answers are lost to the client's timeout (the change landed): retried, promoted."""
    st, endpoint_block = endpoint
    from flows.canary import canary_rollout
    from flows.outcomes import run_flow

    coll = f"churn-{uuid.uuid4().hex[:6]}"
    stable_on(st.endpoint_url, models["v1"], f"{coll}:v1")
    httpx.post(f"{st.endpoint_url}/v1/faults", json={"method": "PUT", "path": "/v1/traffic", "count": 2,
                                                     "delay_ms": DELAY_MS, "applied": True})
    with Traffic(st.endpoint_url, rps=60):
        result = run_flow(canary_rollout, collection=coll, version="v2", model_uri=models["v2"], endpoint_block=endpoint_block,
                                policy_block=policy_block, steps=[25, 50, 100], bake=1.5, final_bake=1.5,
                                min_requests=20)
    assert result["outcome"] == "promoted", result
    assert httpx.get(f"{st.endpoint_url}/v1/faults").json()["injected"]["late"] == 2
    final = snapshot(st.endpoint_url)
    assert by_name(final) == {f"{coll}:v2": 100} and list(final["models"].values()) == [f"{coll}:v2"]


def test_a_shift_that_keeps_hanging_ends_in_a_safe_rollback(endpoint, models, policy_block) -> None:
    """Every attempt of the 25% shift hangs past the client timeout (not applied), and the rollback's
    first one too: the canary is rolled back, stable keeps 100%, the canary is undeployed."""
    st, endpoint_block = endpoint
    from flows.canary import canary_rollout
    from flows.outcomes import run_flow

    coll = f"churn-{uuid.uuid4().hex[:6]}"
    stable_id = stable_on(st.endpoint_url, models["v1"], f"{coll}:v1")
    httpx.post(f"{st.endpoint_url}/v1/faults", json={"method": "PUT", "path": "/v1/traffic", "count": 6,
                                                     "status": 504, "delay_ms": DELAY_MS})
    with Observer(st.endpoint_url) as observer:
        result = run_flow(canary_rollout, collection=coll, version="v2", model_uri=models["v2"], endpoint_block=endpoint_block,
                                policy_block=policy_block, steps=[25, 50, 100], bake=1.5, final_bake=1.5,
                                min_requests=20)
    assert result["outcome"] == "rolled-back" and "traffic shift to 25% failed" in result["reason"], result
    assert "unreachable (ReadTimeout)" in result["reason"]
    assert httpx.get(f"{st.endpoint_url}/v1/faults").json()["injected"]["timeout"] == 6
    final = snapshot(st.endpoint_url)
    assert final["traffic_split"] == {stable_id: 100} and list(final["models"]) == [stable_id]
    assert not observer.violations and observer.observations > 0
    assert all(dict(state).get(f"{coll}:v2", 0) == 0 for state in observer.states), "no request reached the canary"


# ------------------------------------------------------------------------------------ abort (unit)


class FlakyEndpoint:
    """An in-memory endpoint whose calls numbered in `fail_calls` (1-based, any method) answer 503."""

    def __init__(self, models: dict[str, str], split: dict[str, int], fail_calls: set[int]) -> None:
        self.models, self.split, self.fail_calls = dict(models), dict(split), fail_calls
        self.calls: list[str] = []

    def _call(self, what: str) -> None:
        self.calls.append(what)
        if len(self.calls) in self.fail_calls:
            raise TransientEndpointError(f"local endpoint answered 503 on {what} (call {len(self.calls)})")

    def deployed(self) -> list[DeployedModel]:
        self._call("deployed")
        return [DeployedModel(id=k, display_name=v) for k, v in self.models.items()]

    def traffic(self) -> dict[str, int]:
        self._call("traffic")
        return dict(self.split)

    def set_traffic(self, split: dict[str, int]) -> None:
        self._call("set_traffic")
        assert sum(split.values()) == 100 and set(split) <= set(self.models), split
        self.split = {k: v for k, v in split.items() if v}

    def undeploy(self, deployed_id: str) -> None:
        self._call("undeploy")
        assert self.split.get(deployed_id, 0) == 0, "undeploying a model that has traffic"
        self.models.pop(deployed_id, None)


def test_an_abort_retries_its_reads_of_a_flaky_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """The on_cancellation hook's first read of the endpoint answers 503 (and later calls too): it is
    retried, and the canary still ends rolled back and undeployed."""
    from types import SimpleNamespace

    import flows.canary as canary

    ep = FlakyEndpoint({"dm-stable": "churn:v1", "dm-canary": "churn:v2"}, {"dm-stable": 70, "dm-canary": 30},
                       fail_calls={1, 3, 6})
    events: list[dict[str, Any]] = []
    monkeypatch.setattr(canary, "resolve_endpoint", lambda name: ep)
    monkeypatch.setattr(canary, "emit_event", lambda **kw: events.append(kw))
    run = SimpleNamespace(id=uuid.uuid4(), name="canary-x", parameters={"collection": "churn", "version": "v2"})
    canary.abort_rollout(None, run, None)
    assert ep.split == {"dm-stable": 100} and list(ep.models) == ["dm-stable"], (ep.split, ep.models, ep.calls)
    assert ep.calls[:3] == ["deployed", "deployed", "traffic"], "the first read failed and was retried"
    (event,) = events
    assert event["event"] == "modelops.canary.rolled-back" and event["payload"]["aborted"] is True
    assert event["payload"]["split"] == {"dm-stable": 100}

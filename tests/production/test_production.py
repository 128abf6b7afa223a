"""The production topology, run for real and faulted (`make test-production`, also run by .ci/run).

One `deployments.production.ProductionStack` for the module: a fresh PostgreSQL database, its own
Redis, `prefect server services start`, two `prefect server start --no-services` replicas on
prefect-redis behind HAProxy, the receiver pointed at HAProxy, `prefect deploy --all`, and two
`prefect worker start --pool modelops-process` workers. Then:

- the demo's whole story through signed webhooks only, every run executed by a worker;
- the background-services process restarted: automations still fire;
- Redis restarted (its streams and caches gone): a promotion delivered while it is down still
  becomes exactly one review run once it is back (the receiver's outbox re-sends what Prefect
  never stored);
- one API replica SIGKILLed in the middle of a burst of 500 deliveries: nothing lost, nothing
  duplicated, one review run per `production` delivery.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from collections import Counter
from typing import Any, Iterator

import httpx
import pytest

from bench.burst import burst, burst_events, plan_deliveries, runs_per_event, flow_runs_for, tally, wait_stored
from deployments.production import POOL, ProductionStack, redis_ping
from deployments.scenario import Scenario, Settings, summary
from deployments.wandb_events import artifact_body
from tests.helpers import deliver, wait_until

SECRET = "production-test-secret"
FAST = Settings(rps=50, steps=(25, 100), bake=2.5, final_bake=1.5, min_requests=20, rows=2500, timeout=240)
TERMINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
#: how long prefect-redis counts an event id as published (its dedupe mark, 5 min in 0.3.0; checked
#: against prefect_redis.messaging in the burst test: importing Prefect here, before the fixture sets
#: PREFECT_API_URL, would fix the client's settings on the session server's address)
DEDUPE_WINDOW = 300


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProductionStack]:
    st = ProductionStack(tmp_path_factory.mktemp("production"), webhook_secret=SECRET,
                         pg_admin_url=os.environ.get("MODELOPS_PG_URL") or "postgresql://postgres@127.0.0.1:5432/postgres")
    saved = dict(os.environ)
    try:
        st.start_prefect()
        os.environ["PREFECT_API_URL"] = st.api_url
        from blocks.policy import RolloutPolicy

        RolloutPolicy(steps=list(FAST.steps), bake_seconds=FAST.bake, final_bake_seconds=FAST.final_bake,
                      min_requests=FAST.min_requests, deadline_seconds=300, min_latency_increase=1.0).save("fast")
        st.start_receiver()
        st.start_endpoint("--seed", "3")
        st.deploy()
        st.start_workers({"MODELOPS_ROLLOUT_POLICY_BLOCK": "rollout-policy/fast"})
        yield st
    finally:
        os.environ.clear()
        os.environ.update(saved)
        st.stop()


def runs_of(api: str, deployment: str) -> list[dict[str, Any]]:
    d = httpx.get(f"{api}/deployments/name/{deployment}/{deployment}", timeout=10).json()
    return flow_runs_for(api, d["id"])


def promotion(entity: str, version: str = "v0", collection: str = "fault-model") -> dict[str, Any]:
    return artifact_body("ADD_ARTIFACT_ALIAS", entity, "wandb-registry-model", collection, version,
                         alias="production", author="production-test")


def review_runs_for(st: ProductionStack, entity: str) -> list[dict[str, Any]]:
    return [r for r in runs_of(st.api_url, "review-issue") if r["parameters"].get("entity") == entity]


def finished_review(st: ProductionStack, entity: str, timeout: float = 180) -> dict[str, Any]:
    def done() -> list[dict[str, Any]]:
        return [r for r in review_runs_for(st, entity) if r["state_type"] in TERMINAL]

    (run,) = wait_until(done, timeout, interval=1, message=f"a finished review run for {entity}")
    return run


def set_automations(st: ProductionStack, deployment: str, enabled: bool) -> None:
    d = httpx.get(f"{st.api_url}/deployments/name/{deployment}/{deployment}", timeout=10).json()
    for a in httpx.get(f"{st.api_url}/automations/related-to/prefect.deployment.{d['id']}", timeout=10).json():
        httpx.patch(f"{st.api_url}/automations/{a['id']}", json={"enabled": enabled}, timeout=10).raise_for_status()


def worker_of(st: ProductionStack, run_id: str) -> str | None:
    for name, svc in st.services.items():
        if name.startswith("worker-") and f"submitting flow run '{run_id}'" in svc.log.read_text():
            return name
    return None


# --------------------------------------------------------------------------- the chain


def test_the_whole_chain_through_two_workers(stack: ProductionStack) -> None:
    lines: list[str] = []
    results = Scenario(stack, FAST, lines.append).run()
    report = summary(results) + "\n" + "\n".join(lines)
    assert len(results) == 10 and all(r.ok for r in results), report

    runs = [r for d in ("review-issue", "drift-check", "retrain", "canary-rollout") for r in runs_of(stack.api_url, d)]
    assert runs and all(r["work_pool_name"] == POOL for r in runs), "deployments created by prefect deploy --all"
    by_worker = Counter(worker_of(stack, r["id"]) for r in runs)
    assert None not in by_worker, f"every run was submitted by one of the workers: {by_worker}"
    assert set(by_worker) == {"worker-1", "worker-2"}, f"both workers ran flows: {by_worker}"
    served = {name: int(row["stot"]) for name, row in stack.balancer_stats().items()}
    assert len(served) == 2 and all(n > 100 for n in served.values()), \
        f"HAProxy spread the API calls over both replicas: {served}"


# --------------------------------------------------------------------------- faults


def test_automations_fire_after_the_services_process_restarts(stack: ProductionStack) -> None:
    stack.services["prefect-services"].stop()
    stack.start_services()
    entity = f"svc-{uuid.uuid4().hex[:6]}"
    # the triggers service subscribes to the event stream once it is up: deliver until a run appears
    deliver(stack, promotion(entity), secret=SECRET)
    run = finished_review(stack, entity)
    assert run["state_type"] == "COMPLETED", run["state_name"]
    assert len(review_runs_for(stack, entity)) == 1


@pytest.mark.timeout(1200)
def test_an_api_replica_killed_during_a_burst_loses_and_duplicates_nothing(stack: ProductionStack) -> None:
    """500 deliveries over 25 connections, 20 of them `production` promotions; replica 1 is SIGKILLed
    when half are answered and started again after the burst. HAProxy takes it out of rotation."""
    from prefect_redis.messaging import MESSAGE_DEDUPLICATION_LOOKBACK

    assert MESSAGE_DEDUPLICATION_LOOKBACK.total_seconds() == DEDUPE_WINDOW
    set_automations(stack, "canary-rollout", False)  # the promotions here are for the review flow only
    try:
        quiet, promoted = f"burst-{uuid.uuid4().hex[:6]}", f"burstp-{uuid.uuid4().hex[:6]}"
        mixed = plan_deliveries(480, 0.0, quiet, secret=SECRET, alias="not-watched", seed=5) \
            + plan_deliveries(20, 0.0, promoted, secret=SECRET, alias="production", seed=6)
        random.Random(1).shuffle(mixed)
        killed: dict[str, float] = {}

        def kill_replica() -> None:
            stack.services["prefect-api-1"].kill()
            killed["at"] = time.time()

        result = burst(stack.hook_url, mixed, 25, midway=kill_replica)
        assert "at" in killed
        assert dict(result.statuses) == {202: 500}, [a.error for a in result.answers if a.status != 202][:5]
        stack.start_replica(0)

        # A replica killed between prefect-redis marking a batch's ids as seen (SET NX, 5 min) and
        # adding them to the stream drops them; the receiver's outbox re-sends every event Prefect has
        # not stored after 30 s, and the re-send gets through once the 5-minute mark expires: late,
        # never lost. The bound asserted is that window plus the outbox's confirm/retry time.
        stored_at, missing = wait_stored(stack.api_url, result.accepted_ids, result.started, timeout=DEDUPE_WINDOW + 120)
        assert not missing, f"{len(missing)} accepted event(s) never reached Prefect"
        late = stored_at - (result.started + result.wall + result.paused)
        print(f"replica killed mid-burst: all 500 events stored {late:.0f}s after the burst ended")
        events = burst_events(stack.api_url, quiet, result.started) + burst_events(stack.api_url, promoted,
                                                                                   result.started)
        t = tally(result, events)
        assert t.stored == 500 and t.lost == [] and t.unaccepted_stored == [], t.lost[:3]
        assert t.duplicated == 0, (t.ids_stored_twice[:3], t.deliveries_with_several_events[:3])

        promo_ids = {a.event_id for a in result.accepted if a.event_id} & {
            e["id"] for e in burst_events(stack.api_url, promoted, result.started)}
        assert len(promo_ids) == 20

        def all_started() -> Counter | None:
            per_event = runs_per_event(runs_of(stack.api_url, "review-issue"), promo_ids)
            return per_event if all(per_event.values()) else None

        per_event = wait_until(all_started, 240, interval=1, message="a review run for every promotion")
        assert set(per_event.values()) == {1}, f"runs per promotion: {Counter(per_event.values())}"
        wait_until(lambda: all(r["state_type"] in TERMINAL for r in review_runs_for(stack, promoted))
                   and len(review_runs_for(stack, promoted)) == 20, 300, interval=2,
                   message="the 20 review runs to finish on the workers")
        states = Counter(r["state_type"] for r in review_runs_for(stack, promoted))
        assert states == {"COMPLETED": 20}, states
    finally:
        set_automations(stack, "canary-rollout", True)


@pytest.mark.timeout(900)
def test_a_worker_killed_mid_canary_is_detected_and_the_rollout_converges(stack: ProductionStack) -> None:
    """The worker running a canary-rollout and the run's process are SIGKILLed (the host is lost) at
    the canary's first step. Heartbeats stop; the missed-heartbeat automation marks the run Crashed
    (deployments/automations/crashed-flow-runs.yaml); prefect.yaml's crash trigger runs the rollout
    again, the surviving worker picks it up, and it resumes from the endpoint's live split. The
    split is observed every 50 ms throughout: it always sums to 100 over deployed models only."""
    import signal

    from blocks.local import LocalIssueStore
    from blocks.policy import RolloutPolicy
    from blocks.registry import LocalRegistry
    from deployments.traffic import Traffic
    from tests.test_canary_faults import Observer

    os.environ.update({"MODELOPS_HOME": str(stack.home)})
    # bakes long enough to kill the worker inside the first step (read by the runs when they start)
    RolloutPolicy(steps=[25, 100], bake_seconds=12, final_bake_seconds=3, min_requests=FAST.min_requests,
                  deadline_seconds=600, min_latency_increase=1.0).save("fast", overwrite=True)
    registry = LocalRegistry(registry="model", receiver_url=stack.hook_url, webhook_secret=SECRET)
    # a healthy copy of what the endpoint serves after the chain test (v1: the faulty v2 was rolled back)
    (serving_name,) = Scenario(stack, FAST).split_names()
    serving = registry.get("churn-model", serving_name.rsplit(":", 1)[1])
    healthy = {k: v for k, v in serving.metadata.items() if k != "demo_fault"}
    mv = registry.register("churn-model", serving.uri, metadata=healthy, aliases=["candidate"])
    traffic = Traffic(stack.endpoint_url, rps=FAST.rps).start()
    with Observer(stack.endpoint_url) as observer:
        registry.set_alias("churn-model", mv.version, "production")

        def running() -> list[dict[str, Any]]:
            return [r for r in runs_of(stack.api_url, "canary-rollout")
                    if r["parameters"].get("version") == mv.version and r["state_type"] == "RUNNING"
                    and r.get("infrastructure_pid")]

        (run,) = wait_until(running, 180, interval=0.5, message=f"the canary of {mv.version} running on a worker")
        name = f"churn-model:{mv.version}"
        wait_until(lambda: name in Scenario(stack, FAST).split_names(), 120, interval=0.2,
                   message="the canary deployed beside the stable version")
        worker = worker_of(stack, run["id"])
        assert worker is not None
        pid = int(str(run["infrastructure_pid"]).rsplit(":", 1)[-1])
        stack.services[worker].kill()
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # already gone with the worker's process group
        killed_at = time.monotonic()

        def state_of(run_id: str) -> str:
            return httpx.get(f"{stack.api_url}/flow_runs/{run_id}", timeout=10).json()["state_type"]

        wait_until(lambda: state_of(run["id"]) == "CRASHED", 300, interval=1,
                   message="the killed run marked Crashed by the missed-heartbeat automation")
        detected = time.monotonic() - killed_at

        def resumed() -> list[dict[str, Any]]:
            return [r for r in runs_of(stack.api_url, "canary-rollout")
                    if r["parameters"].get("resumed_from") == run["id"] and r["state_type"] in TERMINAL]

        (again,) = wait_until(resumed, 300, interval=1, message="the rerun of the crashed rollout to finish")
        converged = time.monotonic() - killed_at
    traffic.stop()
    assert again["state_type"] == "COMPLETED" and int(again["parameters"]["resume_attempt"]) == 1, again
    assert worker_of(stack, again["id"]) not in (None, worker), "the surviving worker ran the rerun"
    assert Scenario(stack, FAST).split_names() == {name: 100}, "the resumed rollout promoted the canary"
    assert observer.observations > 100 and observer.violations == [], observer.violations[:3]
    # crashed and rerun, the registry and the review issue tell what the endpoint serves
    assert registry.get("churn-model", "production").version == mv.version
    promoted = registry.get("churn-model", mv.version)
    assert "candidate" not in promoted.aliases and promoted.metadata["rollout"]["outcome"] == "promoted", promoted
    assert registry.get("churn-model", "previous-production").version == serving.version
    store = LocalIssueStore(path=str(stack.home / "issues"))
    marker = f"<!-- modelops:review-issue wandb.artifact.local/wandb-registry-model/churn-model:{mv.version} -->"
    issue = wait_until(lambda: store.find_issue(marker), 60, message=f"the review issue of {name}")
    labels = store.issue(issue.number)["labels"]
    assert "promoted" in labels and "rolled-back" not in labels, labels
    print(f"worker killed: Crashed after {detected:.0f}s, rollout converged after {converged:.0f}s, "
          f"{observer.observations} split observations, 0 unsafe")
    stack.start_worker(int(worker.rsplit("-", 1)[1]) - 1, {"MODELOPS_ROLLOUT_POLICY_BLOCK": "rollout-policy/fast"})


@pytest.mark.timeout(600)
def test_a_promotion_delivered_while_redis_is_down_becomes_one_review_run(stack: ProductionStack) -> None:
    entity = f"redis-{uuid.uuid4().hex[:6]}"
    stack.services["redis"].kill()
    assert not redis_ping(stack.redis_port)
    answered = deliver(stack, promotion(entity), secret=SECRET)  # the receiver's outbox holds it
    stack.start_redis()
    run = finished_review(stack, entity, timeout=240)
    assert run["state_type"] == "COMPLETED", run["state_name"]
    assert run["parameters"]["event_id"] == answered["event_id"]
    wait_until(lambda: not _outbox_pending(stack), 120, message="the receiver's outbox to drain")
    assert len(review_runs_for(stack, entity)) == 1, "exactly one run for the one delivery"

    # and the topology works as before: a burst after the restart is stored whole, promotions start runs
    quiet = f"{entity}-q"
    result = burst(stack.hook_url, plan_deliveries(50, 0.0, quiet, secret=SECRET, alias="not-watched", seed=9), 10)
    assert dict(result.statuses) == {202: 50}
    _, missing = wait_stored(stack.api_url, result.accepted_ids, result.started, timeout=120)
    assert not missing, f"after the Redis restart, {len(missing)} of 50 accepted events never reached Prefect"
    later = f"{entity}-after"
    deliver(stack, promotion(later), secret=SECRET)
    assert finished_review(stack, later)["state_type"] == "COMPLETED"


def _outbox_pending(stack: ProductionStack) -> int:
    """Events the receiver accepted that Prefect has not yet been seen to store."""
    counts = httpx.get(f"http://127.0.0.1:{stack.receiver_port}/healthz", timeout=5).json()["outbox"]
    return counts["pending"] + counts["sent"]

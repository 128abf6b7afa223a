"""The two topologies side by side: webhook -> flow start latency, and triggered runs per second.

    .venv/bin/python bench/production.py [--n 20] [--burst 40]

Same machine, same run, the same `review-issue` deployment triggered by signed `production`
deliveries through the receiver:

  embedded    one Prefect server on SQLite (deployments.prefect_server) + `python -m deployments.serve`
  production  deployments.production: PostgreSQL, Redis, services once, two API replicas behind
              HAProxy, `prefect deploy --all`, two `prefect worker start --pool modelops-process`
              workers polling every 1 s (PREFECT_WORKER_QUERY_SECONDS=1; Prefect's default is 10 s)

For each: latency of `--spaced` deliveries `--gap` seconds apart (the unloaded latency: each run is
done before the next delivery), then of `--n` deliveries one second apart (POST -> the flow's first
log line, as bench/latency.py measures it, with its code; where the time goes is printed per phase),
then `--burst` promotions sent at once and the time until every triggered run has completed (runs per
second), with the machine's CPU-seconds per run over that burst (from /proc/stat: all processes, so
the servers' share is included). The production topology's other deployments' automations are
paused while it is measured, so only review-issue runs.

A process worker starts every flow run as a fresh interpreter (Prefect's engine, the pull step, the
flow's imports); `deployments.serve` forks runs from a warm process. When deliveries arrive faster
than the machine can start runs, runs wait for CPU: compare the unloaded and the 1 s series.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.latency import percentile, run_series  # noqa: E402
from deployments.production import ProductionStack  # noqa: E402
from deployments.stack import Stack  # noqa: E402
from deployments.wandb_events import artifact_body, delivery_headers  # noqa: E402

SECRET = "bench-secret"


def burst_throughput(stack: Stack, label: str, k: int, timeout: float = 600) -> tuple[float, int]:
    """Send `k` promotions at once; seconds until all their review-issue runs completed, and how many did."""
    collection = f"burst-{label}"
    t0 = time.time()
    with httpx.Client(timeout=30) as client:
        for i in range(k):
            body = json.dumps(artifact_body("ADD_ARTIFACT_ALIAS", "bench", "wandb-registry-model", collection,
                                            f"v{i}", alias="production", author="bench")).encode()
            r = client.post(stack.hook_url, content=body, headers=delivery_headers(body, secret=SECRET))
            r.raise_for_status()
        deadline = time.time() + timeout
        done = 0
        while time.time() < deadline:
            body = {"flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}, "limit": 200}
            runs = client.post(f"{stack.api_url}/flow_runs/filter", json=body).json()
            done = sum(1 for r in runs if r["parameters"].get("collection") == collection)
            if done >= k:
                break
            time.sleep(0.5)
    return time.time() - t0, done


def pause_automations_except(stack: Stack, keep: str) -> None:
    for a in httpx.post(f"{stack.api_url}/automations/filter", json={}, timeout=10).json():
        owner = (a.get("actions") or [{}])[0].get("deployment_id")
        if owner is None:
            continue
        d = httpx.get(f"{stack.api_url}/deployments/{owner}", timeout=10).json()
        if d.get("name") != keep:
            httpx.patch(f"{stack.api_url}/automations/{a['id']}", json={"enabled": False}, timeout=10)


def cpu_busy_seconds() -> float:
    """The machine's busy CPU time so far (all cores, every process), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def measure(label: str, stack: Stack, n: int, k: int, spaced: int, gap: float) -> dict[str, float]:
    print(f"{label}: {spaced} deliveries {gap:g} s apart (unloaded) ...", flush=True)
    unloaded = run_series(stack, f"{label}-unloaded", spaced, gap, timeout=120)
    print(f"{label}: {n} deliveries 1 s apart ...", flush=True)
    latencies = run_series(stack, label, n, 1.0, timeout=300)
    print(f"{label}: {k} promotions at once ...", flush=True)
    cpu0 = cpu_busy_seconds()
    seconds, done = burst_throughput(stack, label, k)
    cpu = cpu_busy_seconds() - cpu0
    nan = float("nan")
    return {"spaced": len(unloaded), "u50": statistics.median(unloaded) if unloaded else nan,
            "u95": percentile(unloaded, 0.95) if unloaded else nan,
            "n": len(latencies), "p50": statistics.median(latencies) if latencies else nan,
            "p95": percentile(latencies, 0.95) if latencies else nan,
            "burst": k, "completed": done, "seconds": seconds, "per_second": done / seconds,
            "cpu_per_run": cpu / done if done else nan}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--burst", type=int, default=40)
    p.add_argument("--spaced", type=int, default=5, help="unloaded series: this many deliveries ...")
    p.add_argument("--gap", type=float, default=8.0, help="... this many seconds apart")
    args = p.parse_args()
    results: dict[str, dict[str, float]] = {}

    home = Path(tempfile.mkdtemp(prefix="modelops-bench-embedded-"))
    embedded = Stack(home, webhook_secret=SECRET)
    try:
        print(f"embedded: Prefect on SQLite, receiver, deployments.serve (in {home}) ...", flush=True)
        embedded.start_prefect()
        embedded.start_receiver()
        embedded.start_serve("--only", "review-issue")
        results["embedded (SQLite, serve)"] = measure("embedded", embedded, args.n, args.burst, args.spaced, args.gap)
    finally:
        embedded.stop()

    home = Path(tempfile.mkdtemp(prefix="modelops-bench-production-"))
    production = ProductionStack(home, webhook_secret=SECRET)
    try:
        print(f"production: PostgreSQL, Redis, services, 2 replicas + HAProxy, deploy, 2 workers (in {home}) ...",
              flush=True)
        production.start_prefect()
        production.start_receiver()
        production.deploy()
        pause_automations_except(production, "review-issue")
        production.start_workers()
        results["production (2 replicas, 2 workers)"] = measure("production", production, args.n, args.burst, args.spaced, args.gap)
    finally:
        production.stop()

    print()
    print(f"{'':<38} {'unloaded (' + format(args.gap, 'g') + ' s apart)':>19}  {'1 s apart':>15}  "
          f"{'burst at once':>30}")
    print(f"{'topology':<38} {'n':>3} {'p50 s':>7} {'p95 s':>7}  {'n':>3} {'p50 s':>5} {'p95 s':>5}  "
          f"{'runs':>5} {'s':>6} {'runs/s':>7} {'CPU s/run':>9}")
    for label, r in results.items():
        print(f"{label:<38} {r['spaced']:>3.0f} {r['u50']:>7.2f} {r['u95']:>7.2f}  {r['n']:>3.0f} {r['p50']:>5.2f} "
              f"{r['p95']:>5.2f}  {r['completed']:>5.0f} {r['seconds']:>6.1f} {r['per_second']:>7.2f} "
              f"{r['cpu_per_run']:>9.2f}")
    ok = all(r["completed"] == args.burst and r["n"] == args.n and r["spaced"] == args.spaced
             for r in results.values())
    print(f"\nevery delivery started its run and every burst run completed: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

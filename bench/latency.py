"""Latency from a W&B delivery to the flow's first line of code.

    .venv/bin/python bench/latency.py [--n 20] [--interval 1.0]

Starts one Prefect server (SQLite) and the receiver, then measures two ways of running the
`review-issue` deployment against it, in the same run:

  ours      python -m deployments.serve (woken by scheduled-run events, runs forked from a warm forkserver)
  baseline  the same deployments served the way Prefect does by default (poll 10 s, spawn)

For each: N signed deliveries one second apart (distinct artifact versions); the latency of one is
the time from the POST to the timestamp of the flow's first log line ("review-issue for ...").
Goal: ours p50 <= 1.5 s and p95 <= 2.5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deployments.stack import Stack  # noqa: E402
from deployments.wandb_events import artifact_body, delivery_headers  # noqa: E402

FIRST_LINE = "review-issue for "
VERBOSE = bool(os.environ.get("MODELOPS_BENCH_VERBOSE"))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def first_line_times(api: str, flow_run_ids: dict[str, str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for version, run_id in flow_run_ids.items():
        logs = httpx.post(f"{api}/logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}},
                                                      "sort": "TIMESTAMP_ASC", "limit": 200}).json()
        for entry in logs:
            if entry["message"].startswith(FIRST_LINE):
                out[version] = datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()
                break
    return out


def run_series(stack: Stack, label: str, n: int, interval: float, timeout: float) -> list[float]:
    posted: dict[str, float] = {}
    for i in range(n):
        version = f"v{i + 1}"
        body = json.dumps(artifact_body("ADD_ARTIFACT_ALIAS", "bench", "wandb-registry-model", f"lat-{label}",
                                        version, alias="production", author="bench")).encode()
        t0 = time.time()
        r = httpx.post(stack.hook_url, content=body, headers=delivery_headers(body, secret=stack.webhook_secret))
        if r.status_code != 202:
            raise SystemExit(f"delivery refused: {r.status_code} {r.text}")
        posted[version] = t0
        time.sleep(max(0.0, interval - (time.time() - t0)))
    deadline = time.time() + timeout
    runs: dict[str, str] = {}
    firsts: dict[str, float] = {}
    while time.time() < deadline:
        flow_runs = httpx.post(f"{stack.api_url}/flow_runs/filter", json={"limit": 200}).json()
        for fr in flow_runs:
            if fr["parameters"].get("collection") == f"lat-{label}":
                runs[fr["parameters"]["version"]] = fr["id"]
        firsts = first_line_times(stack.api_url, runs)
        if len(firsts) == n:
            break
        time.sleep(1)
    missing = sorted(set(posted) - set(firsts))
    if missing:
        print(f"  {label}: no first line within {timeout:.0f}s for {missing}")
    print_phases(stack.api_url, label, posted, runs, firsts)
    return [firsts[v] - posted[v] for v in posted if v in firsts]


def _ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def print_phases(api: str, label: str, posted: dict[str, float], runs: dict[str, str],
                 firsts: dict[str, float]) -> None:
    """Where the time goes, as medians: POST -> event received by Prefect -> flow run created by the
    automation -> run started (process up) -> first line of the flow's code."""
    phases: dict[str, list[float]] = {"event in Prefect": [], "run created": [], "run started": [],
                                      "first line": []}
    events = httpx.post(f"{api}/events/filter", json={"filter": {
        "occurred": {"since": "2000-01-01T00:00:00Z"}, "event": {"name": ["wandb.artifact.alias-added"]},
        "resource": {"id_prefix": [f"wandb.artifact.bench/wandb-registry-model/lat-{label}:"]}}, "limit": 50}).json()
    received = {e["resource"]["wandb.version"]: _ts(e["received"]) for e in events["events"]}
    for version, t0 in posted.items():
        if version not in runs or version not in firsts or version not in received:
            continue
        fr = httpx.get(f"{api}/flow_runs/{runs[version]}").json()
        marks = [received[version], _ts(fr["created"]), _ts(fr.get("start_time")), firsts[version]]
        if None in marks:
            continue
        previous = t0
        steps = []
        for name, mark in zip(phases, marks):
            phases[name].append(mark - previous)
            steps.append(mark - previous)
            previous = mark
        if VERBOSE:
            print(f"    {version:>4} posted {t0 % 1000:8.2f}: " + " ".join(f"{s:+6.2f}" for s in steps))
    if phases["first line"]:
        print(f"  {label}: median seconds per phase: " + ", ".join(
            f"{name} +{statistics.median(values):.2f}" for name, values in phases.items()))


def scratch_postgres(name: str) -> str:
    """A fresh database on the local PostgreSQL (trust auth), for the Prefect server."""
    import subprocess

    name = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name)
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-c", f"CREATE DATABASE {name}"],
                   check=True, capture_output=True)
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--poll", type=float, default=2.0, help="timer poll of our serve (default 2 s; events wake it at once)")
    p.add_argument("--skip-baseline", action="store_true", help="measure our serve only")
    p.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite",
                   help="the Prefect server's database (postgres: a scratch database on 127.0.0.1:5432)")
    args = p.parse_args()
    home = Path(tempfile.mkdtemp(prefix="modelops-bench-"))
    database_url = None
    if args.database == "postgres":
        database_url = scratch_postgres(f"modelops_bench_{home.name[-8:].lower()}")
    extra_env = json.loads(os.environ.get("MODELOPS_BENCH_ENV", "{}"))  # e.g. Prefect server settings to try
    stack = Stack(home, database_url=database_url, extra_env=extra_env)
    results: dict[str, list[float]] = {}
    try:
        print(f"starting Prefect server ({args.database}) and receiver in {home} ...", flush=True)
        stack.start_prefect()
        stack.start_receiver()
        series = [("ours", (), args.poll)] + ([] if args.skip_baseline else [("baseline", ("--plain",), 10.0)])
        for label, serve_args, poll in series:
            stack.poll = poll
            svc = stack.start_serve("--only", "review-issue", *serve_args)  # the deployment measured, alone
            print(f"{label}: {args.n} deliveries, {args.interval:.1f}s apart ...", flush=True)
            results[label] = run_series(stack, label, args.n, args.interval, timeout=60 + 2 * poll)
            svc.stop()
    finally:
        stack.stop()

    print()
    print(f"{'stack':<10} {'n':>3} {'p50 s':>7} {'p95 s':>7} {'max s':>7}")
    for label, values in results.items():
        if values:
            print(f"{label:<10} {len(values):>3} {statistics.median(values):>7.2f} "
                  f"{percentile(values, 0.95):>7.2f} {max(values):>7.2f}")
    ours = results.get("ours", [])
    ok = len(ours) == args.n and statistics.median(ours) <= 1.5 and percentile(ours, 0.95) <= 2.5
    if results.get("baseline") and ours:
        print(f"\nspeed-up at p50: {statistics.median(results['baseline']) / statistics.median(ours):.1f}x "
              f"over Prefect's default serve")
    print(f"goal p50 <= 1.5 s, p95 <= 2.5 s: {'MET' if ok else 'NOT MET'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

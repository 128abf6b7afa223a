"""Serve every deployment of prefect.yaml, with the same triggers and schedules, from this process.

    python -m deployments.serve [--only review-issue] [--poll 2] [--plain]

prefect.yaml is the single source of truth: deployments, descriptions, tags, parameters,
concurrency limits, schedules and triggers are read from it, so the local stack runs exactly the
automations that `prefect deploy --all` creates.

Start-up latency, keeping Prefect's runner:
- the runner is woken by `prefect.flow-run.Scheduled` events of its deployments, so a run created
  by an automation is picked up at once; the timer poll is only the fallback;
- each run's process is forked from a `forkserver` whose server process has Prefect and the flow
  modules preloaded, instead of a cold `python -m prefect.engine` (about 2 s of imports here).
`--plain` serves exactly as `prefect.serve()` does.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import multiprocessing
import os
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("modelops.serve")


def read_project(path: Path = ROOT / "prefect.yaml") -> dict[str, Any]:
    with open(path) as fh:
        return yaml.safe_load(fh)


def entrypoint_module(entrypoint: str) -> tuple[str, str]:
    """`flows/review_issue.py:review_issue` -> ("flows.review_issue", "review_issue")."""
    file_part, _, func = entrypoint.partition(":")
    if not func or not file_part.endswith(".py"):
        raise ValueError(f"entrypoint {entrypoint!r} must look like 'path/module.py:function'")
    return file_part[:-3].replace("/", "."), func


def deployment_specs(spec: dict[str, Any], only: list[str] | None = None) -> list[dict[str, Any]]:
    """The deployments of prefect.yaml as `to_deployment`/`add_flow` keyword arguments."""
    from pydantic import TypeAdapter

    from prefect.events import DeploymentTriggerTypes

    adapter: TypeAdapter[Any] = TypeAdapter(DeploymentTriggerTypes)
    known = [d["name"] for d in spec.get("deployments", [])]
    unknown = sorted(set(only or []) - set(known))
    if unknown:
        raise SystemExit(f"unknown deployment(s) {', '.join(unknown)}; prefect.yaml has {', '.join(known)}")
    out = []
    for d in spec.get("deployments", []):
        if only and d["name"] not in only:
            continue
        module_name, func = entrypoint_module(d["entrypoint"])
        out.append(
            dict(
                flow=getattr(importlib.import_module(module_name), func),
                name=d["name"],
                description=d.get("description"),
                tags=d.get("tags"),
                parameters=d.get("parameters") or {},
                triggers=[adapter.validate_python(t) for t in d.get("triggers") or []],
                concurrency_limit=_concurrency(d.get("concurrency_limit")),
                schedules=[_schedule(s) for s in d.get("schedules") or []] or None,
            )
        )
    return out


def _concurrency(spec: Any) -> Any:
    """prefect.yaml's `concurrency_limit` (an int, or {limit, collision_strategy}) for `add_flow`."""
    if not isinstance(spec, dict):
        return spec
    from prefect.client.schemas.objects import ConcurrencyLimitConfig

    return ConcurrencyLimitConfig(**spec)


def _schedule(spec: dict[str, Any]) -> Any:
    """A prefect.yaml schedule entry (cron, interval or rrule) as a Prefect schedule."""
    from datetime import timedelta

    from prefect.schedules import Cron, Interval, RRule

    common = dict(timezone=spec.get("timezone"), active=spec.get("active", True), parameters=spec.get("parameters") or {})
    if "cron" in spec:
        return Cron(spec["cron"], day_or=spec.get("day_or", True), **common)
    if "interval" in spec:
        return Interval(timedelta(seconds=float(spec["interval"])), **common)
    if "rrule" in spec:
        return RRule(spec["rrule"], **common)
    raise ValueError(f"schedule {spec!r} needs one of cron, interval, rrule")


def use_forkserver(preload: list[str]) -> None:
    """Start flow-run processes by forking a warm interpreter instead of spawning a cold one."""
    import prefect.flow_engine as engine

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(preload)

    class _Multiprocessing:
        def __getattr__(self, name: str) -> Any:
            return getattr(multiprocessing, name)

        @staticmethod
        def get_context(method: str | None = None) -> Any:
            return ctx if method == "spawn" else multiprocessing.get_context(method)

    engine.multiprocessing = _Multiprocessing()  # type: ignore[assignment]
    # start the server now, so the first run does not pay for the preload
    from multiprocessing import forkserver

    forkserver.ensure_running()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m deployments.serve", description=__doc__.splitlines()[0])
    p.add_argument("--only", action="append", help="serve only this deployment (repeatable)")
    p.add_argument("--poll", type=float, default=float(os.environ.get("MODELOPS_POLL_SECONDS", "2")),
                   help="seconds between timed checks for new runs (default 2; Prefect's default is 10); "
                        "runs created by automations are also picked up at once through the event stream")
    p.add_argument("--limit", type=int, default=None, help="most flow runs at once")
    p.add_argument("--plain", action="store_true",
                   help="serve exactly as prefect.serve() does (cold `python -m prefect.engine` per run)")
    p.add_argument("--project-file", default=str(ROOT / "prefect.yaml"))
    args = p.parse_args(argv)
    if args.poll <= 0:
        raise SystemExit("--poll must be > 0 seconds")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    os.chdir(ROOT)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))

    spec = read_project(Path(args.project_file))
    specs = deployment_specs(spec, args.only)
    if args.plain:
        from prefect import serve

        flows = [kw.pop("flow") for kw in specs]
        serve(*(f.to_deployment(**kw) for f, kw in zip(flows, specs)), limit=args.limit, query_seconds=args.poll)
        return

    # Runs of flows registered in memory (add_flow) start through multiprocessing, not a cold
    # `python -m prefect.engine`; with the forkserver they fork from a warm, preloaded interpreter.
    use_forkserver(["prefect.flow_engine", *sorted({kw["flow"].fn.__module__ for kw in specs})])

    import asyncio

    from prefect.runner import Runner

    async def run() -> None:
        runner = Runner(name="modelops-serve", limit=args.limit, query_seconds=args.poll, pause_on_shutdown=True)
        deployment_ids = [await runner.aadd_flow(**kw) for kw in specs]
        names = ", ".join(f"{kw['flow'].name}/{kw['name']}" for kw in specs)
        log.info("serving %s (poll %.2fs, woken by scheduled-run events); runs start from a warm forkserver",
                 names, args.poll)
        waker = asyncio.create_task(wake_on_scheduled_runs(runner, deployment_ids))
        try:
            await runner.start()
        finally:
            waker.cancel()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


async def wake_on_scheduled_runs(runner: Any, deployment_ids: list[Any]) -> None:
    """Poll the moment one of our deployments gets a scheduled run, instead of on the next tick.

    Prefect's runner polls on a timer, and on SQLite every poll takes the database's write lock; an
    event subscription lets the timer be slow (`--poll`) while automation-created runs start at once.
    The timer stays as the fallback if the event stream is down.
    """
    import asyncio

    from prefect.events.clients import get_events_subscriber
    from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter

    event_filter = EventFilter(
        event=EventNameFilter(name=["prefect.flow-run.Scheduled"]),
        related=EventRelatedFilter(id=[f"prefect.deployment.{i}" for i in deployment_ids]),
    )
    while True:
        try:
            async with get_events_subscriber(filter=event_filter, reconnection_attempts=10) as subscriber:
                async for _event in subscriber:
                    if runner.started:
                        await runner._get_and_submit_flow_runs()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the timer keeps serving; retry the subscription
            log.warning("scheduled-run event stream interrupted (%s); polling every %ss meanwhile",
                        exc, runner.query_seconds)
            await asyncio.sleep(5)


if __name__ == "__main__":
    main()

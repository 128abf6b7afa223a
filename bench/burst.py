"""Burst: many distinct signed deliveries at once, plus re-sends, through the receiver into Prefect.

    .venv/bin/python bench/burst.py [--deliveries 2000] [--concurrency 50] [--duplicates 0.10]
                                    [--database sqlite|postgresql[://user@host:port]] [--outage SECONDS]
                                    [--flows] [--timeout 300]

For each database (default: SQLite, then PostgreSQL, one after the other) it starts its own stack in
a temporary directory — a Prefect server (PostgreSQL: a fresh database on
postgresql://postgres@127.0.0.1:5432, dropped afterwards) and the webhook receiver — then:

1. sends `--deliveries` distinct signed W&B bodies (one artifact version each) over `--concurrency`
   connections, with `--duplicates` x that many exact re-sends of bodies already in the plan
   interleaved (a re-send may race its original: whichever the receiver takes first is the
   original, the other must be answered as its duplicate);
2. with `--outage S`, stops the Prefect server once half the deliveries are answered, and starts it
   again S seconds later (the burst goes on meanwhile);
3. waits until Prefect has every accepted event id (read back by id from /api/events/filter), then
   reads back every event of the burst and counts what was lost and what was stored twice;
4. with `--flows`, also serves the real `review-issue` deployment (its trigger matches the burst's
   `production` alias events) and counts the flow runs created for each distinct event.

Goal: >= 300 accepted deliveries per second, nothing lost, nothing duplicated (and with --flows,
no event with more than one flow run). Prints a table and a final PASS/FAIL line; exits 0 on PASS.

The sending and counting functions are used by tests/test_burst.py as well.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deployments.stack import Stack  # noqa: E402
from deployments.wandb_events import artifact_body, delivery_headers  # noqa: E402

GOAL_PER_SECOND = 300.0
PROJECT = "wandb-registry-model"
COLLECTION = "burst"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432"
FLOWS_DEFAULT_DELIVERIES = 100


# ----------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Delivery:
    """One POST of the burst. `key` names the distinct delivery (the same for its re-sends)."""

    key: int
    body: bytes
    headers: dict[str, str]
    resend: bool


def plan_deliveries(n: int, duplicates: float, entity: str, *, secret: str | None, token: str | None = None,
                    alias: str = "production", seed: int = 0) -> list[Delivery]:
    """`n` distinct bodies (version v0..v<n-1> of `entity`'s collection) and round(n * duplicates)
    exact re-sends, each placed somewhere after the body it repeats."""
    rng = random.Random(seed)
    plan: list[Delivery] = []
    for i in range(n):
        body = json.dumps(artifact_body("ADD_ARTIFACT_ALIAS", entity, PROJECT, COLLECTION, f"v{i}",
                                        alias=alias, author="burst")).encode()
        plan.append(Delivery(i, body, delivery_headers(body, secret=secret, token=token), False))
    for _ in range(round(n * duplicates)):
        original = plan[rng.randrange(n)]
        # after its original in the sending order (by position in the plan, built below)
        plan.append(Delivery(original.key, original.body, original.headers, True))
    distinct, resends = plan[:n], plan[n:]
    ordered = list(distinct)
    for r in resends:
        first = next(i for i, d in enumerate(ordered) if d.key == r.key and not d.resend)
        ordered.insert(rng.randint(first + 1, len(ordered)), r)
    return ordered


# ----------------------------------------------------------------------------- sending


@dataclass
class Answer:
    key: int
    resend: bool
    status: int | None  # None: no HTTP answer (connection error, timeout)
    event_id: str | None = None
    duplicate: bool | None = None
    error: str | None = None


@dataclass
class BurstResult:
    answers: list[Answer]
    started: float  # time.time() of the first POST
    wall: float  # seconds from the first POST to the last answer, less `paused`
    paused: float = 0.0  # seconds the burst waited for its midway action (stopping Prefect)

    @property
    def accepted(self) -> list[Answer]:
        return [a for a in self.answers if a.status == 202]

    @property
    def accepted_per_second(self) -> float:
        return len(self.accepted) / self.wall if self.wall > 0 else float("inf")

    @property
    def statuses(self) -> Counter:
        return Counter(a.status for a in self.answers)

    def ids_by_key(self) -> dict[int, set[str]]:
        """Every event id the receiver answered for each distinct delivery."""
        out: dict[int, set[str]] = {}
        for a in self.accepted:
            out.setdefault(a.key, set()).add(a.event_id)
        return out

    @property
    def accepted_ids(self) -> set[str]:
        return {a.event_id for a in self.accepted if a.event_id}

    def answer_problems(self) -> list[str]:
        """Where the receiver's answers break the duplicate contract: one id per body, exactly one
        answer with duplicate=false, every other one duplicate=true with the original's id."""
        problems = []
        per_key: dict[int, list[Answer]] = {}
        for a in self.accepted:
            per_key.setdefault(a.key, []).append(a)
        for key, answers in sorted(per_key.items()):
            ids = {a.event_id for a in answers}
            originals = [a for a in answers if a.duplicate is False]
            if len(ids) != 1:
                problems.append(f"delivery {key}: {len(ids)} different event ids {sorted(ids)}")
            if len(originals) != 1:
                problems.append(f"delivery {key}: {len(originals)} answers with duplicate=false "
                                f"out of {len(answers)}")
        return problems


async def send_burst(hook_url: str, plan: list[Delivery], concurrency: int, *,
                     midway: Callable[[], None] | None = None, timeout: float = 60.0) -> BurstResult:
    """POST every delivery of `plan` in order over `concurrency` connections.

    `midway` (blocking, run in a thread) is called once half the plan is answered; no new POST
    starts until it returns, and that pause is left out of the burst's wall time.
    """
    answers: list[Answer | None] = [None] * len(plan)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(plan)):
        queue.put_nowait(i)
    done = 0
    half = len(plan) // 2
    gate = asyncio.Event()
    gate.set()
    paused = 0.0
    midway_state = {"fired": midway is None}

    async def run_midway() -> None:
        nonlocal paused
        gate.clear()
        t = time.perf_counter()
        try:
            await asyncio.to_thread(midway)
        finally:
            paused += time.perf_counter() - t
            gate.set()

    async def worker() -> None:
        nonlocal done
        # one client (one keep-alive connection) per worker: httpcore's pool scans every
        # connection for every request, so one pool of 50 costs the sender more CPU than the
        # receiver spends on the request (about 6 ms per request on this machine)
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=1), timeout=timeout) as client:
            while True:
                await gate.wait()
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                d = plan[i]
                try:
                    r = await client.post(hook_url, content=d.body, headers=d.headers)
                    a = Answer(d.key, d.resend, r.status_code)
                    if r.status_code == 202:
                        data = r.json()
                        a.event_id, a.duplicate = data["event_id"], data["duplicate"]
                    else:
                        a.error = r.text[:200]
                except httpx.HTTPError as exc:
                    a = Answer(d.key, d.resend, None, error=f"{type(exc).__name__}: {exc}")
                answers[i] = a
                done += 1
                if not midway_state["fired"] and done >= half:
                    midway_state["fired"] = True
                    await run_midway()

    started = time.time()
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0 - paused
    return BurstResult([a for a in answers if a is not None], started, wall, paused)


def burst(hook_url: str, plan: list[Delivery], concurrency: int, *,
          midway: Callable[[], None] | None = None) -> BurstResult:
    """`send_burst` from synchronous code."""
    return asyncio.run(send_burst(hook_url, plan, concurrency, midway=midway))


class Outage:
    """`begin()` stops the stack's Prefect server (returns once it is down); a thread starts it
    again `seconds` after it was stopped. `join()` waits for the restart."""

    def __init__(self, stack: Stack, seconds: float) -> None:
        self.stack, self.seconds = stack, seconds
        self.stopped_at: float | None = None
        self.restarted_at: float | None = None
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def begin(self) -> None:
        self.stack.services["prefect-server"].stop()
        self.stopped_at = time.time()
        self._thread = threading.Thread(target=self._restart, name="prefect-restart", daemon=True)
        self._thread.start()

    def _restart(self) -> None:
        try:
            time.sleep(max(0.0, self.seconds - (time.time() - (self.stopped_at or 0.0))))
            self.stack.start_prefect()
            self.restarted_at = time.time()
        except BaseException as exc:  # noqa: BLE001 - reported by join()
            self.error = exc

    def join(self, timeout: float | None = None) -> None:
        if self._thread is None:
            raise RuntimeError("the outage never began")
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError("the Prefect server was not started again in time")
        if self.error:
            raise RuntimeError(f"starting the Prefect server again failed: {self.error}") from self.error


# ----------------------------------------------------------------------------- reading back


def _since(started: float) -> str:
    return (datetime.fromtimestamp(started, timezone.utc) - timedelta(minutes=5)).isoformat()


def stored_among(api: str, ids: list[str], since: float) -> set[str]:
    """Which of `ids` Prefect has stored (read back by id, 50 at a time)."""
    found: set[str] = set()
    until = (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()
    with httpx.Client(timeout=30) as client:
        for start in range(0, len(ids), 50):
            chunk = ids[start:start + 50]
            body = {"filter": {"id": {"id": chunk}, "occurred": {"since": _since(since), "until": until}},
                    "limit": 50}
            r = client.post(f"{api}/events/filter", json=body)
            r.raise_for_status()
            found.update(e["id"] for e in r.json()["events"])
    return found


def wait_stored(api: str, ids: set[str], since: float, timeout: float, interval: float = 0.5) -> tuple[float | None, set[str]]:
    """Poll until Prefect has every id. Returns (time.time() when it had them all or None, missing)."""
    missing = set(ids)
    deadline = time.monotonic() + timeout
    while missing:
        try:
            missing -= stored_among(api, sorted(missing), since)
        except httpx.HTTPError:
            pass  # the server may be down (outage) or busy: try again
        if not missing:
            break
        if time.monotonic() > deadline:
            return None, missing
        time.sleep(interval)
    return time.time(), missing


BURST_EVENT = "wandb.artifact.alias-added"  # what ADD_ARTIFACT_ALIAS deliveries become


def burst_events(api: str, entity: str, since: float) -> list[dict[str, Any]]:
    """Every stored W&B event of the burst's entity (paged through /events/filter). Only the event the
    deliveries map to: the flows they trigger emit events about the same artifact resource
    (`modelops.review.opened`), which are not deliveries."""
    filt = {"occurred": {"since": _since(since),
                         "until": (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()},
            "event": {"name": [BURST_EVENT]},
            "resource": {"id_prefix": [f"wandb.artifact.{entity}/"]}}
    with httpx.Client(timeout=30) as client:
        page = client.post(f"{api}/events/filter", json={"filter": filt, "limit": 50}).raise_for_status().json()
        events = list(page["events"])
        while page.get("next_page"):
            page = client.get(page["next_page"]).raise_for_status().json()
            events.extend(page["events"])
    return events


@dataclass
class Tally:
    """What Prefect holds for a burst, against what the receiver accepted."""

    accepted_distinct: int  # distinct deliveries answered 202 at least once
    stored: int  # events of the burst Prefect holds
    lost: list[str]  # accepted ids Prefect does not have
    ids_stored_twice: list[str]
    deliveries_with_several_events: list[str]  # resource ids with more than one event
    unaccepted_stored: list[str]  # stored ids the receiver never answered 202 with

    @property
    def duplicated(self) -> int:
        return len(self.ids_stored_twice) + len(self.deliveries_with_several_events)


def tally(result: BurstResult, events: list[dict[str, Any]]) -> Tally:
    accepted = result.accepted_ids
    counts = Counter(e["id"] for e in events)
    per_resource = Counter(e["resource"]["prefect.resource.id"] for e in {e["id"]: e for e in events}.values())
    return Tally(
        accepted_distinct=len(result.ids_by_key()),
        stored=len(counts),
        lost=sorted(accepted - set(counts)),
        ids_stored_twice=sorted(i for i, n in counts.items() if n > 1),
        deliveries_with_several_events=sorted(r for r, n in per_resource.items() if n > 1),
        unaccepted_stored=sorted(set(counts) - accepted),
    )


def flow_runs_for(api: str, deployment_id: str) -> list[dict[str, Any]]:
    """Every flow run of a deployment (paged by offset)."""
    out: list[dict[str, Any]] = []
    with httpx.Client(timeout=30) as client:
        while True:
            body = {"deployments": {"id": {"any_": [deployment_id]}}, "limit": 200, "offset": len(out),
                    "sort": "EXPECTED_START_TIME_ASC"}
            page = client.post(f"{api}/flow_runs/filter", json=body).raise_for_status().json()
            out.extend(page)
            if len(page) < 200:
                return out


def runs_per_event(runs: list[dict[str, Any]], ids: set[str]) -> Counter:
    """How many flow runs name each of `ids` as the event that started them."""
    c: Counter = Counter({i: 0 for i in ids})
    for r in runs:
        event_id = (r.get("parameters") or {}).get("event_id")
        if event_id in c:
            c[event_id] += 1
    return c


def wait_runs(api: str, deployment_id: str, ids: set[str], timeout: float,
              interval: float = 1.0) -> tuple[float | None, Counter]:
    """Poll until every id has a flow run. Returns (time.time() then or None, runs per event)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            per_event = runs_per_event(flow_runs_for(api, deployment_id), ids)
            if all(per_event.values()):
                return time.time(), per_event
        except httpx.HTTPError:
            per_event = Counter()
        if time.monotonic() > deadline:
            return None, per_event
        time.sleep(interval)


# ----------------------------------------------------------------------------- one run of the bench


@dataclass
class Figures:
    database: str
    deliveries: int
    resends: int
    concurrency: int
    outage: float
    flows: bool
    result: BurstResult | None = None
    all_in_prefect_after: float | None = None  # seconds from the first POST
    after_restart: float | None = None  # seconds from Prefect's restart (outage runs)
    tally: Tally | None = None
    answer_problems: list[str] = field(default_factory=list)
    runs_created_after: float | None = None
    runs_per_event: Counter | None = None
    runs_completed: int | None = None
    run_states: Counter | None = None  # final state names of the burst's flow runs
    completed_after: float | None = None
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds per process during the burst
    load: float | None = None  # 1-minute load average when the burst started
    error: str | None = None

    def failures(self) -> list[str]:
        out = []
        if self.error:
            return [self.error]
        r, t = self.result, self.tally
        assert r is not None and t is not None
        if r.accepted_per_second < GOAL_PER_SECOND and not self.flows:  # --flows: fewer deliveries, see report
            out.append(f"{r.accepted_per_second:.0f} accepted/s < {GOAL_PER_SECOND:.0f}")
        if len(r.accepted) != len(r.answers):
            out.append(f"not every delivery was accepted: {dict(r.statuses)}")
        if t.lost:
            out.append(f"{len(t.lost)} accepted event(s) lost")
        if t.duplicated:
            out.append(f"{t.duplicated} duplicated")
        if t.unaccepted_stored:
            out.append(f"{len(t.unaccepted_stored)} event(s) in Prefect for deliveries never answered 202")
        if self.answer_problems:
            out.append(f"{len(self.answer_problems)} duplicate-answer problem(s), e.g. {self.answer_problems[0]}")
        if self.all_in_prefect_after is None:
            out.append("not every accepted event reached Prefect before the timeout")
        if self.flows:
            per = self.runs_per_event or Counter()
            if any(n > 1 for n in per.values()):
                out.append(f"{sum(1 for n in per.values() if n > 1)} event(s) with more than one flow run")
            if self.runs_created_after is None:
                out.append(f"{sum(1 for n in per.values() if n == 0)} event(s) without a flow run")
        return out


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _cpu_now(stack: Stack) -> dict[str, float | None]:
    out = {name: cpu_seconds(stack.services[name].proc.pid) for name in ("receiver", "prefect-server")}
    t = os.times()
    out["sender"] = t.user + t.system
    return out


def _pg_server(database: str) -> str:
    return DEFAULT_PG if database == "postgresql" else database


def create_pg_database(server: str, name: str) -> str:
    """A fresh database on `server` (postgresql://user@host:port); returns its asyncpg URL."""
    parts = urlsplit(server)
    subprocess.run(["psql", f"{parts.scheme}://{parts.netloc}/postgres", "-q", "-c", f"CREATE DATABASE {name}"],
                   check=True, capture_output=True, text=True)
    return f"postgresql+asyncpg://{parts.netloc}/{name}"


def drop_pg_database(server: str, name: str) -> None:
    parts = urlsplit(server)
    subprocess.run(["psql", f"{parts.scheme}://{parts.netloc}/postgres", "-q", "-c",
                    f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], capture_output=True, text=True)


def run_one(database: str, *, deliveries: int, concurrency: int, duplicates: float, outage_s: float,
            flows: bool, timeout: float, keep: bool = False) -> Figures:
    label = "sqlite" if database == "sqlite" else "postgresql"
    home = Path(tempfile.mkdtemp(prefix=f"modelops-burst-{label}-"))
    db_name = f"modelops_burst_{uuid.uuid4().hex[:10]}"
    database_url = None
    if label == "postgresql":
        database_url = create_pg_database(_pg_server(database), db_name)
    fig = Figures(label, deliveries, round(deliveries * duplicates), concurrency, outage_s, flows)
    stack = Stack(home, database_url=database_url)
    entity = f"burst{uuid.uuid4().hex[:8]}"
    try:
        say(f"[{label}] starting Prefect server and receiver in {home} ...")
        stack.start_prefect()
        stack.start_receiver()
        deployment_id = None
        if flows:
            say(f"[{label}] serving review-issue (its trigger: alias-added with alias production) ...")
            stack.start_serve("--only", "review-issue")
            deployment_id = httpx.get(f"{stack.api_url}/deployments/name/review-issue/review-issue").json()["id"]
        plan = plan_deliveries(deliveries, duplicates, entity, secret=stack.webhook_secret)
        outage = Outage(stack, outage_s) if outage_s > 0 else None
        say(f"[{label}] burst: {deliveries} distinct + {fig.resends} re-sends over {concurrency} connections"
            + (f", Prefect stopped for {outage_s:.0f}s midway" if outage else "") + " ...")
        fig.load = os.getloadavg()[0]
        before = _cpu_now(stack)
        result = burst(stack.hook_url, plan, concurrency, midway=outage.begin if outage else None)
        after = _cpu_now(stack)
        fig.cpu = {k: after[k] - before[k] for k in before
                   if before[k] is not None and after[k] is not None and not (outage and k == "prefect-server")}
        fig.result = result
        fig.answer_problems = result.answer_problems()
        say(f"[{label}] sent in {result.wall:.2f}s: {dict(result.statuses)}; waiting for Prefect ...")
        if outage:
            outage.join(outage_s + 300)
        done_at, missing = wait_stored(stack.api_url, result.accepted_ids, result.started, timeout)
        if done_at is not None:
            fig.all_in_prefect_after = done_at - result.started
            if outage and outage.restarted_at:
                fig.after_restart = done_at - outage.restarted_at
        time.sleep(2)  # let anything stored twice show up before counting
        fig.tally = tally(result, burst_events(stack.api_url, entity, result.started))
        if flows and deployment_id:
            ids = result.accepted_ids
            created_at, _ = wait_runs(stack.api_url, deployment_id, ids, timeout)
            if created_at is not None:
                fig.runs_created_after = created_at - result.started
            # wait for the runs to finish (bounded), then count once more for late duplicates
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                runs = [r for r in flow_runs_for(stack.api_url, deployment_id)
                        if (r.get("parameters") or {}).get("event_id") in ids]
                if runs and all(r["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") for r in runs) \
                        and len(runs) >= len(ids):
                    fig.completed_after = time.time() - result.started
                    break
                time.sleep(2)
            time.sleep(3)
            runs = flow_runs_for(stack.api_url, deployment_id)
            fig.runs_per_event = runs_per_event(runs, ids)
            mine = [r for r in runs if (r.get("parameters") or {}).get("event_id") in ids]
            fig.runs_completed = sum(1 for r in mine if r["state_type"] == "COMPLETED")
            fig.run_states = Counter(r["state_name"] for r in mine)
    except Exception as exc:  # noqa: BLE001 - reported as a failed run with the logs' place
        fig.error = f"{type(exc).__name__}: {exc} (logs in {home / 'logs'})"
        keep = True
    finally:
        stack.stop()
        if database_url:
            drop_pg_database(_pg_server(database), db_name)
        if not keep:
            shutil.rmtree(home, ignore_errors=True)
    return fig


# ----------------------------------------------------------------------------- report


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def report(figures: list[Figures]) -> str:
    rows = [("database", "outage s", "deliveries", "re-sends", "conns", "accepted/s", "distinct/s",
             "all in Prefect s", "after restart s", "lost", "duplicated", "answers ok",
             "runs/event", "all runs s", "runs done s")]
    for f in figures:
        if f.error or not f.result or not f.tally:
            rows.append((f.database, f"{f.outage:.0f}", str(f.deliveries), "", "", "ERROR", "", "", "", "", "", "",
                         "", "", ""))
            continue
        r, t = f.result, f.tally
        distinct_per_s = len([a for a in r.accepted if not a.duplicate]) / r.wall
        per = f.runs_per_event
        runs = "-" if per is None else f"{min(per.values(), default=0)}..{max(per.values(), default=0)}"
        rows.append((f.database, f"{f.outage:.0f}", str(f.deliveries), str(f.resends), str(f.concurrency),
                     f"{r.accepted_per_second:.0f}", f"{distinct_per_s:.0f}", _s(f.all_in_prefect_after),
                     _s(f.after_restart), str(len(t.lost)), str(t.duplicated),
                     "yes" if not f.answer_problems else f"{len(f.answer_problems)} bad", runs,
                     _s(f.runs_created_after), _s(f.completed_after)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for f in figures:
        if f.result:
            lines.append(f"{f.database} (outage {f.outage:.0f}s{', flows' if f.flows else ''}): "
                         f"statuses {dict(f.result.statuses)}, burst wall {f.result.wall:.2f}s"
                         + (f" (plus {f.result.paused:.1f}s paused while Prefect stopped)" if f.result.paused else "")
                         + (f", stored {f.tally.stored}, stored but never 202'd {len(f.tally.unaccepted_stored)}"
                            if f.tally else "")
                         + (f", flow runs by state {dict(f.run_states)}" if f.run_states is not None else ""))
            if f.flows:
                lines.append(f"  --flows: {f.deliveries} deliveries only, so accepted/s is not judged here "
                             f"(measure throughput without --flows)")
            lines.append("  during the burst: load average %s, CPU s %s" % (
                "-" if f.load is None else f"{f.load:.1f}",
                ", ".join(f"{k} {v:.1f}" for k, v in f.cpu.items()) or "-"))
        for problem in f.failures():
            lines.append(f"  FAIL {f.database}: {problem}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--deliveries", type=int, default=None,
                   help=f"distinct deliveries (default 2000; {FLOWS_DEFAULT_DELIVERIES} with --flows)")
    p.add_argument("--concurrency", type=int, default=50, help="concurrent connections (default 50)")
    p.add_argument("--duplicates", type=float, default=0.10, help="re-sends as a fraction of --deliveries")
    p.add_argument("--database", default=None,
                   help="sqlite, postgresql or postgresql://user@host:port (default: sqlite then postgresql)")
    p.add_argument("--outage", type=float, default=0.0,
                   help="stop the Prefect server this many seconds in the middle of the burst (0: none)")
    p.add_argument("--flows", action="store_true",
                   help="also serve review-issue and count the flow runs its trigger creates per event")
    p.add_argument("--timeout", type=float, default=300.0, help="longest wait for Prefect, per phase (s)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directories (logs)")
    args = p.parse_args(argv)
    if args.database and not (args.database in ("sqlite", "postgresql") or args.database.startswith("postgresql://")):
        p.error("--database must be sqlite, postgresql or postgresql://user@host:port")
    deliveries = args.deliveries or (FLOWS_DEFAULT_DELIVERIES if args.flows else 2000)
    if args.flows and args.deliveries is None:
        say(f"--flows: {deliveries} distinct deliveries (each starts a real review-issue flow run; "
            f"pass --deliveries for more)")
    for name in ("GITHUB_TOKEN", "GITHUB_REPOSITORY", "GITHUB_API_URL", "MODELOPS_GITHUB_BLOCK"):
        os.environ.pop(name, None)  # review-issue writes to the local issue store
    databases = [args.database] if args.database else ["sqlite", "postgresql"]
    figures = [run_one(db, deliveries=deliveries, concurrency=args.concurrency, duplicates=args.duplicates,
                       outage_s=args.outage, flows=args.flows, timeout=args.timeout, keep=args.keep)
               for db in databases]
    print(report(figures))
    failed = [f for f in figures if f.failures()]
    goal = f">= {GOAL_PER_SECOND:.0f} accepted/s, 0 lost, 0 duplicated" + (", <= 1 flow run per event" if args.flows else "")
    print(f"{'FAIL' if failed else 'PASS'}: {goal}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

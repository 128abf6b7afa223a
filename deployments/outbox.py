"""The receiver's durable outbox (SQLite) and the sender that empties it into Prefect.

An accepted delivery is committed here before the receiver answers 202. The sender posts pending
events to `POST /api/events`; a 204 there only means "queued in the server's memory", so an event
stays in the outbox (state `sent`) until it is read back by id from `POST /api/events/filter`
(state `confirmed`). An event sent but not seen within `confirm_after` seconds is sent again with
the same id — Prefect stores an id once and its triggers ignore an id they have already seen.

Deduplication: the SHA-256 of each accepted body is kept for `dedupe_window` seconds; the same body
inside that window gets the first delivery's event id back and is not stored again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import httpx

log = logging.getLogger("modelops.outbox")

PENDING, SENT, CONFIRMED, REJECTED = "pending", "sent", "confirmed", "rejected"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    occurred TEXT NOT NULL,
    document TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    sent_at REAL,
    accepted_at REAL NOT NULL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS events_state ON events (state, next_attempt);
CREATE TABLE IF NOT EXISTS deliveries (
    body_sha256 TEXT PRIMARY KEY,
    event_id TEXT NOT NULL,
    received_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_received ON deliveries (received_at);
"""


class OutboxUnavailable(Exception):
    """The outbox could not store an event (disk full, unwritable, corrupt)."""


@dataclass(frozen=True)
class Stored:
    event_id: str
    duplicate: bool


@dataclass(frozen=True)
class OutboxEvent:
    id: str
    document: dict[str, Any]
    attempts: int
    occurred: str


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


class Outbox:
    """A thread-safe SQLite outbox. All writes are committed with `synchronous=FULL`."""

    def __init__(
        self,
        path: str | Path,
        *,
        dedupe_window: float = 600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.dedupe_window = float(dedupe_window)
        self.clock = clock
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise OutboxUnavailable(f"cannot open outbox {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ intake

    def lookup(self, body_sha256: str) -> str | None:
        """The event id of an earlier delivery of the same body inside the dedupe window."""
        cutoff = self.clock() - self.dedupe_window
        with self._lock:
            row = self._db.execute(
                "SELECT event_id FROM deliveries WHERE body_sha256 = ? AND received_at >= ?",
                (body_sha256, cutoff),
            ).fetchone()
        return row[0] if row else None

    def put(self, body_sha256: str, build: Callable[[str, str], dict[str, Any]]) -> Stored:
        """Store the event for a body unless the same body was accepted inside the dedupe window.

        `build(event_id, occurred)` makes the Prefect event document. Raises `OutboxUnavailable`
        when nothing could be committed (the caller must not answer 202 then).
        """
        now = self.clock()
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                row = self._db.execute(
                    "SELECT event_id FROM deliveries WHERE body_sha256 = ? AND received_at >= ?",
                    (body_sha256, now - self.dedupe_window),
                ).fetchone()
                if row:
                    self._db.execute("COMMIT")
                    return Stored(row[0], True)
                event_id = str(uuid.uuid4())
                occurred = utc_now_iso()
                document = build(event_id, occurred)
                self._db.execute(
                    "INSERT INTO events (id, occurred, document, state, next_attempt, accepted_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (event_id, occurred, json.dumps(document), PENDING, now, now),
                )
                self._db.execute(
                    "INSERT OR REPLACE INTO deliveries (body_sha256, event_id, received_at) VALUES (?, ?, ?)",
                    (body_sha256, event_id, now),
                )
                self._db.execute("COMMIT")
                return Stored(event_id, False)
            except (sqlite3.Error, OSError) as exc:
                self._rollback()
                raise OutboxUnavailable(f"outbox {self.path} could not store the event: {exc}") from exc
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def remember(self, body_sha256: str, event_id: str) -> None:
        """Record a delivery that bypassed the outbox (forwarded directly), best effort."""
        with self._lock:
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO deliveries (body_sha256, event_id, received_at) VALUES (?, ?, ?)",
                    (body_sha256, event_id, self.clock()),
                )
            except sqlite3.Error:
                pass

    # ------------------------------------------------------------------ sender side

    def due(self, limit: int = 200) -> list[OutboxEvent]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, document, attempts, occurred FROM events WHERE state = ? AND next_attempt <= ?"
                " ORDER BY accepted_at LIMIT ?",
                (PENDING, self.clock(), limit),
            ).fetchall()
        return [OutboxEvent(r[0], json.loads(r[1]), r[2], r[3]) for r in rows]

    def mark_sent(self, ids: Iterable[str]) -> None:
        now = self.clock()
        with self._lock, self._db:
            self._db.executemany(
                "UPDATE events SET state = ?, sent_at = ?, attempts = attempts + 1, last_error = NULL"
                " WHERE id = ? AND state = ?",
                [(SENT, now, i, PENDING) for i in ids],
            )

    def mark_failed(self, ids: Iterable[str], error: str, *, base: float = 0.5, cap: float = 30.0) -> None:
        now = self.clock()
        with self._lock, self._db:
            for i in ids:
                row = self._db.execute("SELECT attempts FROM events WHERE id = ?", (i,)).fetchone()
                if not row:
                    continue
                attempts = row[0] + 1
                delay = min(cap, base * 2 ** min(attempts, 10)) * (0.5 + random.random() / 2)
                self._db.execute(
                    "UPDATE events SET state = ?, attempts = ?, next_attempt = ?, last_error = ? WHERE id = ?",
                    (PENDING, attempts, now + delay, error[:500], i),
                )

    def retry_now(self) -> int:
        """Make every pending event due at once (Prefect is reachable again); returns how many waited."""
        now = self.clock()
        with self._lock, self._db:
            cur = self._db.execute(
                "UPDATE events SET next_attempt = ? WHERE state = ? AND next_attempt > ?", (now, PENDING, now))
            return cur.rowcount

    def mark_rejected(self, event_id: str, error: str) -> None:
        """Prefect refused this one event for good (4xx on its own): keep it, visibly, out of the queue."""
        with self._lock, self._db:
            self._db.execute(
                "UPDATE events SET state = ?, attempts = attempts + 1, last_error = ? WHERE id = ?",
                (REJECTED, error[:500], event_id),
            )

    def rejected(self) -> list[tuple[str, str]]:
        with self._lock:
            return self._db.execute(
                "SELECT id, last_error FROM events WHERE state = ? ORDER BY accepted_at", (REJECTED,)
            ).fetchall()

    def unconfirmed(self, limit: int = 50) -> list[OutboxEvent]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, document, attempts, occurred FROM events WHERE state = ? ORDER BY sent_at LIMIT ?",
                (SENT, limit),
            ).fetchall()
        return [OutboxEvent(r[0], json.loads(r[1]), r[2], r[3]) for r in rows]

    def mark_confirmed(self, ids: Iterable[str]) -> None:
        with self._lock, self._db:
            self._db.executemany(
                "UPDATE events SET state = ? WHERE id = ?", [(CONFIRMED, i) for i in ids]
            )

    def requeue_stale(self, confirm_after: float) -> int:
        """Sent events Prefect has not stored within `confirm_after` seconds go back to pending."""
        now = self.clock()
        with self._lock, self._db:
            cur = self._db.execute(
                "UPDATE events SET state = ?, next_attempt = ? WHERE state = ? AND sent_at < ?",
                (PENDING, now, SENT, now - confirm_after),
            )
            return cur.rowcount

    def purge(self) -> None:
        """Forget confirmed events and delivery hashes older than the dedupe window."""
        cutoff = self.clock() - self.dedupe_window
        with self._lock, self._db:
            self._db.execute("DELETE FROM deliveries WHERE received_at < ?", (cutoff,))
            self._db.execute(
                "DELETE FROM events WHERE state = ? AND accepted_at < ?", (CONFIRMED, cutoff)
            )

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM events GROUP BY state").fetchall()
        out = {PENDING: 0, SENT: 0, CONFIRMED: 0, REJECTED: 0}
        out.update({state: n for state, n in rows})
        return out

    def state_of(self, event_id: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT state FROM events WHERE id = ?", (event_id,)).fetchone()
        return row[0] if row else None


# ---------------------------------------------------------------------- Prefect API


def prefect_api_auth() -> dict[str, str]:
    """Headers for the Prefect API from Prefect's own settings (profile or environment)."""
    import base64

    from prefect.settings import get_current_settings

    api = get_current_settings().api
    if api.key is not None:
        return {"Authorization": f"Bearer {api.key.get_secret_value()}"}
    if api.auth_string is not None:
        token = base64.b64encode(api.auth_string.get_secret_value().encode()).decode()
        return {"Authorization": f"Basic {token}"}
    return {}


class PrefectEvents:
    """The two Prefect event endpoints the receiver needs."""

    def __init__(self, api_url: str, headers: dict[str, str] | None = None, timeout: float = 10.0) -> None:
        self.api_url = api_url.rstrip("/")
        self._client = httpx.AsyncClient(headers=headers or {}, timeout=timeout)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def post(self, documents: list[dict[str, Any]]) -> None:
        response = await self._client.post(f"{self.api_url}/events", json=documents)
        response.raise_for_status()

    async def reachable(self) -> bool:
        """Prefect's API answers its health check (a cheap probe while events wait in backoff)."""
        try:
            response = await self._client.get(f"{self.api_url}/health", timeout=2.0)
        except (httpx.HTTPError, OSError):
            return False
        return response.status_code == 200

    async def stored_ids(self, events: list[OutboxEvent]) -> set[str]:
        """Ids among `events` that Prefect has persisted (read back from /events/filter)."""
        if not events:
            return set()
        since = min(datetime.fromisoformat(e.occurred) for e in events) - timedelta(seconds=1)
        found: set[str] = set()
        for start in range(0, len(events), 50):
            chunk = events[start : start + 50]
            body = {
                "filter": {
                    "id": {"id": [e.id for e in chunk]},
                    "occurred": {
                        "since": since.isoformat(),
                        "until": (datetime.now(timezone.utc) + timedelta(days=1)).isoformat(),
                    },
                },
                "limit": 50,
            }
            response = await self._client.post(f"{self.api_url}/events/filter", json=body)
            response.raise_for_status()
            found.update(e["id"] for e in response.json().get("events", []))
        return found


def _refused_for_good(exc: httpx.HTTPStatusError) -> bool:
    """A 4xx other than auth, timeouts and rate limits: sending the same event again cannot help."""
    code = exc.response.status_code
    return 400 <= code < 500 and code not in (401, 403, 408, 409, 429)


class Sender:
    """Background task: pending -> POST /api/events -> sent -> read back -> confirmed."""

    def __init__(
        self,
        outbox: Outbox,
        prefect: PrefectEvents,
        *,
        confirm_after: float = 30.0,
        idle: float = 0.5,
        confirm_every: float = 1.0,
        probe_every: float = 2.0,
    ) -> None:
        self.outbox = outbox
        self.prefect = prefect
        self.confirm_after = confirm_after
        self.idle = idle
        self.confirm_every = confirm_every
        self.probe_every = probe_every
        # Prefect could not be reached (not: it answered with an error). While so, its health is
        # probed every `probe_every` s and the backed-off events are sent the moment it answers,
        # instead of each waiting out its own backoff (up to 30 s) after an outage.
        self.unreachable = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.last_error: str | None = None
        self.healthy = True

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-sender")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

    async def probe(self) -> bool:
        """After an outage: True (and every pending event due now) once Prefect answers again."""
        if not self.unreachable or not await self.prefect.reachable():
            return False
        self.unreachable = False
        waiting = await asyncio.to_thread(self.outbox.retry_now)
        log.info("Prefect is reachable again: sending the %d event(s) that were waiting", waiting)
        return True

    async def _run(self) -> None:
        last_confirm = 0.0
        last_purge = 0.0
        last_probe = 0.0
        while True:
            try:
                if self.unreachable and time.monotonic() - last_probe >= self.probe_every:
                    last_probe = time.monotonic()
                    await self.probe()
                sent = await self.send_due()
                now = time.monotonic()
                if now - last_confirm >= self.confirm_every:
                    last_confirm = now
                    await self.confirm()
                    await asyncio.to_thread(self.outbox.requeue_stale, self.confirm_after)
                if now - last_purge >= 60:
                    last_purge = now
                    await asyncio.to_thread(self.outbox.purge)
                if sent:
                    continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep the sender alive whatever happens
                log.exception("outbox sender error: %s", exc)
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.idle)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    async def send_due(self) -> int:
        due = await asyncio.to_thread(self.outbox.due)
        if not due:
            return 0
        try:
            await self.prefect.post([e.document for e in due])
        except httpx.HTTPStatusError as exc:
            if not _refused_for_good(exc):
                return await self._failed([e.id for e in due], exc)
            # Prefect refused the batch (4xx): find the event it refuses, so one bad event
            # cannot hold up every other one behind it
            return await self._send_one_by_one(due)
        except (httpx.HTTPError, OSError) as exc:
            return await self._failed([e.id for e in due], exc)
        self.healthy = True
        await asyncio.to_thread(self.outbox.mark_sent, [e.id for e in due])
        return len(due)

    async def _send_one_by_one(self, due: list[OutboxEvent]) -> int:
        sent = 0
        for e in due:
            try:
                await self.prefect.post([e.document])
            except httpx.HTTPStatusError as exc:
                if not _refused_for_good(exc):
                    await self._failed([e.id], exc)
                    continue
                error = f"Prefect refused the event: {exc.response.status_code} {exc.response.text[:300]}"
                log.error("event %s (%s) %s; kept in the outbox as rejected", e.id, e.document.get("event"), error)
                await asyncio.to_thread(self.outbox.mark_rejected, e.id, error)
                continue
            except (httpx.HTTPError, OSError) as exc:
                await self._failed([e.id], exc)
                continue
            await asyncio.to_thread(self.outbox.mark_sent, [e.id])
            sent += 1
        return sent

    async def _failed(self, ids: list[str], exc: BaseException) -> int:
        self.healthy = False
        if not isinstance(exc, httpx.HTTPStatusError):  # no answer at all: probe until there is one
            self.unreachable = True
        self.last_error = f"{type(exc).__name__}: {exc}"
        log.warning("Prefect did not take %d event(s), will retry: %s", len(ids), self.last_error)
        await asyncio.to_thread(self.outbox.mark_failed, ids, self.last_error)
        return 0

    async def confirm(self) -> int:
        waiting = await asyncio.to_thread(self.outbox.unconfirmed, 500)
        if not waiting:
            return 0
        try:
            stored = await self.prefect.stored_ids(waiting)
        except (httpx.HTTPError, OSError, ValueError) as exc:
            log.info("could not read events back from Prefect yet: %s", exc)
            return 0
        if stored:
            await asyncio.to_thread(self.outbox.mark_confirmed, stored)
        return len(stored)

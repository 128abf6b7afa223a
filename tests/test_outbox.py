"""The receiver's durable outbox and its sender, stepped one tick at a time with a fake clock.

An event accepted with 202 must survive a Prefect crash and a receiver crash: it is `pending` until
posted, `sent` until Prefect is seen to have stored it, `confirmed` after. No Prefect server here:
the sender talks to `FakePrefectEvents`, the same two-method seam as `PrefectEvents`.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

import deployments.outbox as outbox_module
from deployments.outbox import (
    CONFIRMED,
    PENDING,
    REJECTED,
    SENT,
    Outbox,
    OutboxEvent,
    OutboxUnavailable,
    Sender,
    Stored,
)

WINDOW = 600.0
T0 = 1_700_000_000.0


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def build(event_id: str, occurred: str) -> dict[str, Any]:
    """What the receiver stores: a Prefect event document carrying the outbox's id."""
    return {
        "id": event_id,
        "occurred": occurred,
        "event": "wandb.artifact.alias-added",
        "resource": {"prefect.resource.id": "wandb.artifact.acme/churn/churn-model:v3"},
        "related": [],
        "payload": {"alias": "production"},
    }


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "spool" / "outbox.sqlite3"


@pytest.fixture
def box(db_path: Path, clock: Clock):
    outbox = Outbox(db_path, dedupe_window=WINDOW, clock=clock)
    yield outbox
    try:
        outbox.close()
    except sqlite3.Error:
        pass


def delivery_rows(path: Path) -> list[tuple[str, str]]:
    """The remembered body hashes, read through a second connection (what a restart would see)."""
    with sqlite3.connect(str(path)) as db:
        return db.execute("SELECT body_sha256, event_id FROM deliveries ORDER BY body_sha256").fetchall()


def event_row(path: Path, event_id: str) -> dict[str, Any] | None:
    with sqlite3.connect(str(path)) as db:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM events WHERE id = ?", (event_id,)).fetchone()
    return dict(row) if row else None


# =========================================================================== intake and dedupe


def test_put_stores_a_pending_event_with_a_uuid(box: Outbox, db_path: Path) -> None:
    stored = box.put("sha-a", build)
    assert isinstance(stored, Stored) and stored.duplicate is False, "a first delivery is not a duplicate"
    assert uuid.UUID(stored.event_id).version == 4, "event ids are random UUIDs Prefect accepts as event ids"
    assert box.state_of(stored.event_id) == PENDING, "a stored event waits to be posted"
    assert box.counts() == {PENDING: 1, SENT: 0, CONFIRMED: 0, REJECTED: 0}
    [due] = box.due()
    assert due.id == stored.event_id and due.attempts == 0
    assert due.document == build(stored.event_id, due.occurred), "the document is what build() made, with that id"
    assert box.lookup("sha-a") == stored.event_id, "the body hash is remembered for deduplication"
    assert event_row(db_path, stored.event_id) is not None, "committed: another connection sees it"


def test_same_body_inside_the_window_is_a_duplicate(box: Outbox, clock: Clock) -> None:
    first = box.put("sha-a", build)
    built: list[str] = []

    def must_not_build(event_id: str, occurred: str) -> dict[str, Any]:
        built.append(event_id)
        return build(event_id, occurred)

    clock.advance(WINDOW - 1)
    again = box.put("sha-a", must_not_build)
    assert again == Stored(first.event_id, True), "a redelivery inside the window returns the first event id"
    assert built == [], "a duplicate does not even build a new document"
    assert box.counts()[PENDING] == 1, "nothing new is stored for a duplicate"

    clock.advance(1)
    at_edge = box.put("sha-a", build)
    assert at_edge.duplicate, "exactly at the end of the window it is still the same delivery"


def test_same_body_after_the_window_is_a_new_event(box: Outbox, clock: Clock) -> None:
    first = box.put("sha-a", build)
    clock.advance(WINDOW + 1)
    assert box.lookup("sha-a") is None, "the body hash has expired"
    later = box.put("sha-a", build)
    assert not later.duplicate and later.event_id != first.event_id, (
        "a delivery after the window is a new event (W&B sent it again on purpose)"
    )
    assert box.counts()[PENDING] == 2
    assert box.lookup("sha-a") == later.event_id, "the hash now points at the newer event"


def test_different_bodies_are_different_events(box: Outbox) -> None:
    a = box.put("sha-a", build)
    b = box.put("sha-b", build)
    assert a.event_id != b.event_id and not b.duplicate


def test_remember_records_a_direct_forward_for_dedupe(box: Outbox) -> None:
    box.remember("sha-direct", "11111111-1111-4111-8111-111111111111")
    assert box.put("sha-direct", build) == Stored("11111111-1111-4111-8111-111111111111", True), (
        "an event forwarded directly while the outbox was degraded still dedupes later deliveries"
    )
    assert box.counts()[PENDING] == 0


# =========================================================================== the state machine


def test_pending_sent_confirmed(box: Outbox, clock: Clock) -> None:
    a = box.put("sha-a", build).event_id
    b = box.put("sha-b", build).event_id

    # tick 1: both are due, in acceptance order
    assert [e.id for e in box.due()] == [a, b], "pending events are due oldest first"
    box.mark_sent([a, b])
    assert box.due() == [], "a sent event is not posted again on the next tick"
    assert {e.id for e in box.unconfirmed()} == {a, b}, "sent events wait to be read back from Prefect"
    assert all(e.attempts == 1 for e in box.unconfirmed()), "posting counts as an attempt"

    # tick 2: Prefect has stored only `a`
    box.mark_confirmed([a])
    assert box.state_of(a) == CONFIRMED and box.state_of(b) == SENT
    assert [e.id for e in box.unconfirmed()] == [b], "only the unconfirmed event is still watched"

    # tick 3: `b` not seen within confirm_after -> back to pending, same id
    clock.advance(29)
    assert box.requeue_stale(30) == 0, "not stale yet: Prefect may still be writing it"
    assert box.state_of(b) == SENT
    clock.advance(2)
    assert box.requeue_stale(30) == 1, "sent but unseen after confirm_after: send again"
    assert box.state_of(b) == PENDING
    assert [e.id for e in box.due()] == [b], "a requeued event is due at once, under the SAME id"
    assert box.state_of(a) == CONFIRMED, "a confirmed event is never requeued"
    assert box.counts() == {PENDING: 1, SENT: 0, CONFIRMED: 1, REJECTED: 0}


def test_mark_sent_only_moves_pending_events(box: Outbox) -> None:
    a = box.put("sha-a", build).event_id
    box.mark_sent([a])
    box.mark_confirmed([a])
    box.mark_sent([a])
    assert box.state_of(a) == CONFIRMED, "a late mark_sent must not undo a confirmation"


def test_unknown_ids_are_ignored(box: Outbox) -> None:
    box.mark_sent(["nope"])
    box.mark_failed(["nope"], "boom")
    box.mark_confirmed(["nope"])
    assert box.state_of("nope") is None
    assert box.counts() == {PENDING: 0, SENT: 0, CONFIRMED: 0, REJECTED: 0}


def test_due_respects_the_limit(box: Outbox) -> None:
    ids = [box.put(f"sha-{i}", build).event_id for i in range(5)]
    assert [e.id for e in box.due(limit=2)] == ids[:2], "a batch is capped, oldest first"


def test_mark_failed_backs_off_growing_and_capped(
    box: Outbox, clock: Clock, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outbox_module.random, "random", lambda: 1.0)  # no jitter: the largest delay
    event_id = box.put("sha-a", build).event_id
    delays = []
    for attempt in range(1, 12):
        box.mark_failed([event_id], f"ConnectError: refused (attempt {attempt})", base=0.5, cap=30.0)
        row = event_row(db_path, event_id)
        assert row["state"] == PENDING, "a failed post keeps the event pending"
        assert row["attempts"] == attempt, "every failure counts as an attempt"
        assert row["last_error"].startswith("ConnectError"), "the last error is kept for /healthz"
        delay = row["next_attempt"] - clock.now
        assert delay > 0, "after a failure the event waits before the next attempt"
        assert box.due() == [], "a backed-off event is not due yet"
        delays.append(delay)
    below_cap = [d for d in delays if d < 30.0]
    assert len(below_cap) >= 3, f"the delay starts well below the cap: {delays}"
    assert all(b > a for a, b in zip(below_cap, below_cap[1:])), f"the delay grows with attempts: {delays}"
    assert all(later >= earlier for earlier, later in zip(delays, delays[1:])), "the delay never shrinks"
    assert max(delays) == 30.0 and delays[-1] == 30.0, "the delay reaches the cap and stays there"

    clock.advance(30.0)
    assert [e.id for e in box.due()] == [event_id], "once the delay has passed the event is due again"


def test_mark_failed_jitter_stays_between_half_and_full_delay(
    box: Outbox, clock: Clock, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    delays = {}
    for name, draw in (("least", 0.0), ("most", 1.0)):
        monkeypatch.setattr(outbox_module.random, "random", lambda draw=draw: draw)
        event_id = box.put(f"sha-{name}", build).event_id
        box.mark_failed([event_id], "boom", base=0.5, cap=30.0)
        delays[name] = event_row(db_path, event_id)["next_attempt"] - clock.now
    assert 0 < delays["least"] < delays["most"], "jitter spreads retries of events that failed together"
    assert delays["least"] >= delays["most"] / 2, "jitter never cuts the backoff by more than half"


def test_mark_failed_truncates_the_error(box: Outbox, db_path: Path) -> None:
    event_id = box.put("sha-a", build).event_id
    box.mark_failed([event_id], "x" * 5000)
    assert len(event_row(db_path, event_id)["last_error"]) == 500, "a huge error message is not stored whole"


def test_a_failed_sent_event_goes_back_to_pending(box: Outbox, clock: Clock) -> None:
    event_id = box.put("sha-a", build).event_id
    box.mark_sent([event_id])
    box.mark_failed([event_id], "boom")
    assert box.state_of(event_id) == PENDING


# =========================================================================== restart and purge


def test_a_restart_keeps_pending_events_and_dedupe(db_path: Path, clock: Clock) -> None:
    before = Outbox(db_path, dedupe_window=WINDOW, clock=clock)
    pending = before.put("sha-a", build).event_id
    sent = before.put("sha-b", build).event_id
    before.mark_sent([sent])
    before.close()  # the receiver crashes or restarts after answering 202

    clock.advance(5)
    after = Outbox(db_path, dedupe_window=WINDOW, clock=clock)
    try:
        assert [e.id for e in after.due()] == [pending], "a pending event survives the restart"
        assert [e.id for e in after.unconfirmed()] == [sent], "a sent-but-unconfirmed event is still watched"
        assert after.put("sha-a", build) == Stored(pending, True), (
            "a W&B retry after the restart is still recognised as the same delivery"
        )
        assert after.counts() == {PENDING: 1, SENT: 1, CONFIRMED: 0, REJECTED: 0}
    finally:
        after.close()


def test_purge_forgets_only_old_confirmed_events_and_old_hashes(
    box: Outbox, clock: Clock, db_path: Path
) -> None:
    old_confirmed = box.put("sha-old-confirmed", build).event_id
    old_sent = box.put("sha-old-sent", build).event_id
    old_pending = box.put("sha-old-pending", build).event_id
    box.mark_sent([old_confirmed, old_sent])
    box.mark_confirmed([old_confirmed])

    clock.advance(WINDOW + 1)
    new_confirmed = box.put("sha-new-confirmed", build).event_id
    box.mark_sent([new_confirmed])
    box.mark_confirmed([new_confirmed])

    box.purge()
    assert box.state_of(old_confirmed) is None, "a confirmed event older than the window is forgotten"
    assert box.state_of(new_confirmed) == CONFIRMED, "a recent confirmed event is kept for now"
    assert box.state_of(old_sent) == SENT, "an unconfirmed event is never purged, however old"
    assert box.state_of(old_pending) == PENDING, "a pending event is never purged, however old"
    assert delivery_rows(db_path) == [("sha-new-confirmed", new_confirmed)], (
        "only delivery hashes inside the dedupe window are kept"
    )


# =========================================================================== failures


def test_an_impossible_path_is_outbox_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a regular file")
    with pytest.raises(OutboxUnavailable, match="cannot open outbox"):
        Outbox(blocker / "outbox.sqlite3")


def test_put_failing_inside_the_transaction_stores_nothing(box: Outbox, db_path: Path) -> None:
    def broken(event_id: str, occurred: str) -> dict[str, Any]:
        raise sqlite3.OperationalError("database or disk is full")

    with pytest.raises(OutboxUnavailable, match="disk is full"):
        box.put("sha-a", broken)
    assert box.counts() == {PENDING: 0, SENT: 0, CONFIRMED: 0, REJECTED: 0}, "a failed put leaves no event behind"
    assert box.lookup("sha-a") is None, "nor a body hash that would make the retry look like a duplicate"
    assert delivery_rows(db_path) == []

    retry = box.put("sha-a", build)
    assert not retry.duplicate and box.state_of(retry.event_id) == PENDING, (
        "the outbox is usable again after a failed put: W&B's retry is stored"
    )


def test_put_recovers_after_build_raises_something_else(box: Outbox) -> None:
    def unserialisable(event_id: str, occurred: str) -> dict[str, Any]:
        return {"id": event_id, "payload": object()}  # json.dumps raises TypeError

    with pytest.raises(Exception):
        box.put("sha-a", unserialisable)
    stored = box.put("sha-b", build)
    assert box.state_of(stored.event_id) == PENDING, (
        "one bad document must not wedge the outbox for every later delivery"
    )


def test_put_on_a_closed_connection_is_outbox_unavailable(box: Outbox, db_path: Path, clock: Clock) -> None:
    box._db.close()  # the database went away underneath the receiver
    with pytest.raises(OutboxUnavailable, match="could not store the event"):
        box.put("sha-a", build)
    reopened = Outbox(db_path, dedupe_window=WINDOW, clock=clock)
    try:
        assert reopened.counts() == {PENDING: 0, SENT: 0, CONFIRMED: 0, REJECTED: 0}, "nothing was stored"
        assert reopened.lookup("sha-a") is None
    finally:
        reopened.close()


def test_put_on_a_read_only_database_is_outbox_unavailable(db_path: Path, clock: Clock) -> None:
    Outbox(db_path, dedupe_window=WINDOW, clock=clock).close()
    read_only = Outbox(db_path, dedupe_window=WINDOW, clock=clock)
    read_only._db.execute("PRAGMA query_only = ON")  # writes now fail as on a read-only disk
    try:
        with pytest.raises(OutboxUnavailable):
            read_only.put("sha-a", build)
        read_only._db.execute("PRAGMA query_only = OFF")
        assert read_only.counts()[PENDING] == 0, "a refused write stores nothing"
    finally:
        read_only.close()


# =========================================================================== the sender


class FakePrefectEvents:
    """The seam of `PrefectEvents`: post documents, read back which ids Prefect stored.

    `lose_posts` simulates a server that answered 204 and then lost its in-memory queue;
    `refuse_posts` simulates Prefect being down (httpx raises, as the real client would).
    """

    def __init__(self) -> None:
        self.posted: list[list[dict[str, Any]]] = []
        self.stored: set[str] = set()
        self.refuse_posts = 0
        self.lose_posts = 0
        self.read_back_calls = 0
        self.up = True  # what the health probe answers

    async def post(self, documents: list[dict[str, Any]]) -> None:
        if self.refuse_posts:
            self.refuse_posts -= 1
            raise httpx.ConnectError("All connection attempts failed")
        self.posted.append(documents)
        if self.lose_posts:
            self.lose_posts -= 1
            return
        self.stored.update(d["id"] for d in documents)

    async def reachable(self) -> bool:
        return self.up

    async def stored_ids(self, events: list[OutboxEvent]) -> set[str]:
        self.read_back_calls += 1
        return {e.id for e in events} & self.stored

    def posted_ids(self) -> list[str]:
        return [d["id"] for batch in self.posted for d in batch]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_sender_posts_pending_events_then_confirms_them(box: Outbox) -> None:
    prefect = FakePrefectEvents()
    sender = Sender(box, prefect, confirm_after=30)  # type: ignore[arg-type]
    a = box.put("sha-a", build).event_id
    b = box.put("sha-b", build).event_id

    assert run(sender.send_due()) == 2, "both pending events go in one batch"
    assert prefect.posted_ids() == [a, b], "the documents are posted with the outbox's ids"
    assert box.state_of(a) == SENT and box.state_of(b) == SENT, "posted but not yet seen stored"
    assert sender.healthy

    assert run(sender.confirm()) == 2, "both ids are read back from Prefect"
    assert box.state_of(a) == CONFIRMED and box.state_of(b) == CONFIRMED
    assert run(sender.send_due()) == 0 and run(sender.confirm()) == 0, "nothing left to do"
    assert len(prefect.posted) == 1, "a confirmed event is never posted again"


def test_sender_backs_off_while_prefect_is_down(box: Outbox, clock: Clock) -> None:
    prefect = FakePrefectEvents()
    prefect.refuse_posts = 1
    sender = Sender(box, prefect, confirm_after=30)  # type: ignore[arg-type]
    event_id = box.put("sha-a", build).event_id

    # tick 1: Prefect refuses the connection
    assert run(sender.send_due()) == 0
    assert box.state_of(event_id) == PENDING, "an event Prefect did not take stays in the outbox"
    assert sender.healthy is False, "/healthz must report that Prefect is not taking events"
    assert "ConnectError" in (sender.last_error or ""), "the reason is kept for the operator"
    assert box.due() == [], "the failed event backs off instead of hammering Prefect"

    # tick 2: after the backoff, Prefect is back
    clock.advance(31)
    assert run(sender.send_due()) == 1
    assert sender.healthy is True, "a successful post clears the unhealthy flag"
    run(sender.confirm())
    assert box.state_of(event_id) == CONFIRMED
    assert prefect.posted_ids() == [event_id], "the refused attempt never reached Prefect"


def test_sender_resends_an_event_prefect_lost_under_the_same_id(box: Outbox, clock: Clock) -> None:
    prefect = FakePrefectEvents()
    prefect.lose_posts = 1  # 204, then the server crashes before persisting
    sender = Sender(box, prefect, confirm_after=30)  # type: ignore[arg-type]
    event_id = box.put("sha-a", build).event_id

    # tick 1: posted, Prefect answers 204
    assert run(sender.send_due()) == 1
    # tick 2: read back -> not there; the event must stay in the outbox
    assert run(sender.confirm()) == 0
    assert box.state_of(event_id) == SENT, "a 204 alone is not proof Prefect stored the event"
    assert box.requeue_stale(sender.confirm_after) == 0, "not stale before confirm_after"

    # tick 3: confirm_after has passed -> requeued and sent again
    clock.advance(31)
    assert box.requeue_stale(sender.confirm_after) == 1, "an event unseen after confirm_after is requeued"
    assert run(sender.send_due()) == 1
    assert prefect.posted_ids() == [event_id, event_id], (
        "the resend carries the SAME event id, so Prefect's triggers run the automation once"
    )

    # tick 4: now it is stored
    assert run(sender.confirm()) == 1
    assert box.state_of(event_id) == CONFIRMED


def test_sender_read_back_errors_leave_events_sent(box: Outbox) -> None:
    class ReadBackFails(FakePrefectEvents):
        async def stored_ids(self, events: list[OutboxEvent]) -> set[str]:
            raise httpx.ReadTimeout("timed out")

    prefect = ReadBackFails()
    sender = Sender(box, prefect)  # type: ignore[arg-type]
    event_id = box.put("sha-a", build).event_id
    run(sender.send_due())
    assert run(sender.confirm()) == 0, "an unreadable filter answer confirms nothing"
    assert box.state_of(event_id) == SENT, "the event stays watched until Prefect is seen to have it"


def test_sender_background_loop_drains_the_outbox(box: Outbox) -> None:
    prefect = FakePrefectEvents()

    async def scenario() -> None:
        sender = Sender(box, prefect, idle=0.01, confirm_every=0.0)  # type: ignore[arg-type]
        sender.start()
        try:
            event_id = box.put("sha-a", build).event_id
            sender.wake()
            for _ in range(200):
                if box.state_of(event_id) == CONFIRMED:
                    break
                await asyncio.sleep(0.01)
            assert box.state_of(event_id) == CONFIRMED, "the running sender posts and confirms on its own"
        finally:
            await sender.stop()

    run(scenario())


class RefusingPrefectEvents(FakePrefectEvents):
    """Prefect answering 422 for any batch holding a document it cannot accept."""

    def __init__(self, bad_ids: set[str], status: int = 422) -> None:
        super().__init__()
        self.bad_ids = bad_ids
        self.status = status

    async def post(self, documents: list[dict[str, Any]]) -> None:
        if any(d["id"] in self.bad_ids for d in documents):
            request = httpx.Request("POST", "http://prefect.test/api/events")
            response = httpx.Response(self.status, request=request, text='{"detail": "invalid event"}')
            raise httpx.HTTPStatusError("refused", request=request, response=response)
        await super().post(documents)


def test_one_event_prefect_refuses_does_not_block_the_others(box: Outbox) -> None:
    ids = [box.put(f"sha-{i}", build).event_id for i in range(5)]
    prefect = RefusingPrefectEvents({ids[2]})
    sender = Sender(box, prefect, confirm_after=30)  # type: ignore[arg-type]

    assert run(sender.send_due()) == 4, "the batch is retried event by event around the bad one"
    assert sorted(prefect.posted_ids()) == sorted(ids[:2] + ids[3:])
    assert box.state_of(ids[2]) == REJECTED, "the refused event is kept, not dropped"
    (rejected_id, error), = box.rejected()
    assert rejected_id == ids[2] and "422" in error
    assert box.counts()["rejected"] == 1
    assert run(sender.send_due()) == 0, "a rejected event is not retried forever"


def test_server_errors_are_retried_not_rejected(box: Outbox) -> None:
    event_id = box.put("sha-x", build).event_id
    prefect = RefusingPrefectEvents({event_id}, status=503)
    sender = Sender(box, prefect, confirm_after=30)  # type: ignore[arg-type]
    assert run(sender.send_due()) == 0
    assert box.state_of(event_id) == PENDING and not sender.healthy, "5xx means later, not never"


def test_after_an_outage_waiting_events_go_out_as_soon_as_prefect_answers(box: Outbox, clock: Clock) -> None:
    """Not each after its own backoff (up to 30 s): the sender probes Prefect's health while it is down."""
    prefect = FakePrefectEvents()
    prefect.refuse_posts = 1
    sender = Sender(box, prefect, confirm_after=30)  # type: ignore[arg-type]
    ids = [box.put(f"sha-{i}", build).event_id for i in range(3)]
    assert run(sender.send_due()) == 0 and sender.unreachable
    for _ in range(5):  # backoff grows with each failed attempt
        box.mark_failed(ids, "ConnectError")
    assert box.due() == []

    prefect.up = False
    assert run(sender.probe()) is False and box.due() == [], "still down: the events keep their backoff"
    prefect.up = True
    assert run(sender.probe()) is True and not sender.unreachable
    assert sorted(e.id for e in box.due()) == sorted(ids), "due at once, without waiting out the backoff"
    assert run(sender.send_due()) == 3 and sender.healthy


def test_an_erroring_prefect_is_not_probed_around_the_backoff(box: Outbox, clock: Clock) -> None:
    """A 5xx means Prefect answers but fails: the events keep backing off (no hammering)."""
    prefect = FakePrefectEvents()
    sender = Sender(box, prefect, confirm_after=30)  # type: ignore[arg-type]
    event_id = box.put("sha-a", build).event_id
    error = httpx.HTTPStatusError("503", request=httpx.Request("POST", "http://p/api/events"),
                                  response=httpx.Response(503))
    run(sender._failed([event_id], error))
    assert not sender.unreachable
    assert run(sender.probe()) is False and box.due() == []


def test_retry_now_moves_only_pending_events(box: Outbox, clock: Clock) -> None:
    a = box.put("sha-a", build).event_id
    b = box.put("sha-b", build).event_id
    box.mark_failed([a], "down")
    box.mark_sent([b])
    assert box.retry_now() == 1
    assert [e.id for e in box.due()] == [a] and box.state_of(b) == SENT

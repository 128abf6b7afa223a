"""deployments.prefect_server: Prefect's server with SQLite write transactions that queue instead of failing.

Plain `prefect server start` on SQLite answers 503 ("database is locked") to roughly two thirds of
the writes when a dozen clients create, take, release and delete concurrency slots at once (measured
here: ~490 of 720); Prefect's clients then back off 2, 4, 8 s. That was the multi-second stall between
a W&B delivery and its flow run.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from deployments.prefect_server import immediate_sqlite_transactions


async def _read_then_write_while_another_writes(db_path: Path) -> list[int]:
    """Transaction A reads, B writes and commits, then A writes: the WAL upgrade that SQLite refuses
    with SQLITE_BUSY_SNAPSHOT when A began DEFERRED."""
    from prefect.server.database.configurations import AioSqliteConfiguration

    config = AioSqliteConfiguration(connection_url=f"sqlite+aiosqlite:///{db_path}")
    engine = await config.engine()
    a, b = await config.session(engine), await config.session(engine)
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))

        async def b_writes() -> None:
            async with config.begin_transaction(b):
                await b.execute(sa.text("INSERT INTO t VALUES (2)"))

        async with config.begin_transaction(a):
            await a.execute(sa.text("SELECT count(*) FROM t"))
            other = asyncio.create_task(b_writes())
            await asyncio.wait({other}, timeout=0.5)  # DEFERRED: B commits; IMMEDIATE: B waits for A
            await a.execute(sa.text("INSERT INTO t VALUES (1)"))
        await other
        async with engine.connect() as conn:
            return [row[0] for row in await conn.execute(sa.text("SELECT x FROM t ORDER BY rowid"))]
    finally:
        await a.close()
        await b.close()
        await engine.dispose()


def test_plain_prefect_sqlite_transaction_fails_on_a_stale_snapshot(tmp_path: Path, monkeypatch) -> None:
    """The failure mode, so the next test is known to be able to fail."""
    from prefect.server.database.configurations import AioSqliteConfiguration

    monkeypatch.setattr(AioSqliteConfiguration, "begin_transaction", AioSqliteConfiguration.begin_transaction)
    with pytest.raises(sa.exc.OperationalError) as info:
        asyncio.run(_read_then_write_while_another_writes(tmp_path / "plain.db"))
    assert isinstance(info.value.orig, sqlite3.OperationalError)
    assert "database is locked" in str(info.value.orig)


def test_immediate_transactions_queue_the_second_writer(tmp_path: Path, monkeypatch) -> None:
    from prefect.server.database.configurations import AioSqliteConfiguration

    monkeypatch.setattr(AioSqliteConfiguration, "begin_transaction", AioSqliteConfiguration.begin_transaction)
    immediate_sqlite_transactions()
    immediate_sqlite_transactions()  # idempotent: not wrapped twice
    assert getattr(AioSqliteConfiguration.begin_transaction, "_modelops_immediate", False)
    # A holds the write lock from BEGIN, so B's row lands after A's and nothing fails
    assert asyncio.run(_read_then_write_while_another_writes(tmp_path / "ours.db")) == [1, 2]


def test_stack_server_answers_concurrent_writes_without_503(prefect_api: str) -> None:
    """Twelve clients create, take, release and delete their own concurrency limits at once against
    the session's server (started by Stack through deployments.prefect_server): every write succeeds
    first time. No retries here: Prefect's client would hide a 503 behind a 2 s back-off."""
    codes: Counter[int] = Counter()

    async def worker(client: httpx.AsyncClient, i: int) -> None:
        for j in range(5):
            name = f"contend-{i}-{j}-{uuid.uuid4().hex[:8]}"
            calls = [("POST", "/v2/concurrency_limits/", {"name": name, "limit": 1}),
                     ("POST", "/v2/concurrency_limits/increment", {"names": [name], "slots": 1, "mode": "concurrency"}),
                     ("POST", "/v2/concurrency_limits/decrement", {"names": [name], "slots": 1, "mode": "concurrency"}),
                     ("DELETE", f"/v2/concurrency_limits/{name}", None)]
            for method, path, body in calls:
                r = await client.request(method, prefect_api + path, json=body)
                codes[r.status_code] += 1

    async def main() -> None:
        # no keep-alive: a pooled connection the server closed would be a client-side error, not ours
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_keepalive_connections=0)) as client:
            await asyncio.gather(*(worker(client, i) for i in range(12)))

    asyncio.run(main())
    assert sum(codes.values()) == 12 * 5 * 4
    assert set(codes) <= {200, 201, 204}, dict(codes)

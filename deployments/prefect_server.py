"""Prefect's own server (`prefect server start ...`), with SQLite write transactions that wait their turn.

    python -m deployments.prefect_server start --host 127.0.0.1 --port 4200

Takes exactly the arguments of `prefect server start` and runs it in this process. The one change
applies only when the database is SQLite: every transaction Prefect opens with `begin_transaction`
starts with `BEGIN IMMEDIATE` instead of `BEGIN DEFERRED`.

Why: in WAL mode a DEFERRED transaction that has read and then tries to write fails at once with
"database is locked" (SQLITE_BUSY_SNAPSHOT) if another connection committed in between; SQLite's
busy timeout does not help there. Prefect answers such a request with 503 and its clients retry after
2, 4, 8 ... seconds. With a handful of served flows writing states, logs and concurrency slots, that
turned into 2-14 s gaps between a W&B delivery and the automation's flow run (issue 2's latency
figures). An IMMEDIATE transaction takes the write lock when it begins and otherwise waits for it
under Prefect's 60 s busy timeout, polling every few milliseconds, so writers queue instead of
failing. Prefect already does this for its hottest paths (`with_for_update=True`); this extends it to
all of them. PostgreSQL is untouched.
"""

from __future__ import annotations

import sys
from contextlib import AbstractAsyncContextManager
from typing import Any


def immediate_sqlite_transactions() -> None:
    """Make `AioSqliteConfiguration.begin_transaction` always begin IMMEDIATE (idempotent)."""
    from prefect.server.database.configurations import AioSqliteConfiguration

    original = AioSqliteConfiguration.begin_transaction
    if getattr(original, "_modelops_immediate", False):
        return

    def begin_transaction(self: Any, session: Any, with_for_update: bool = False) -> AbstractAsyncContextManager[Any]:
        return original(self, session, with_for_update=True)

    begin_transaction._modelops_immediate = True  # type: ignore[attr-defined]
    begin_transaction.__doc__ = original.__doc__
    AioSqliteConfiguration.begin_transaction = begin_transaction  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> None:
    immediate_sqlite_transactions()
    from prefect.cli import app

    sys.argv = [sys.argv[0], "server", *(sys.argv[1:] if argv is None else argv)]
    app()


if __name__ == "__main__":
    main()

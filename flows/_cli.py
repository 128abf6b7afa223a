"""What the flows' command lines share."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any


def prepare_prefect_env() -> None:
    """Ad hoc runs without PREFECT_API_URL start Prefect's temporary local server: give it the time
    it needs on a small machine (Prefect's default is 20 s) and keep it from calling home. Then keep
    tracebacks off the terminal (see `quiet_console_tracebacks`)."""
    if not os.environ.get("PREFECT_API_URL"):
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    quiet_console_tracebacks()


def _format_without_traceback(format_: Callable[[Any, logging.LogRecord], str]) -> Callable[..., str]:
    def format(self: Any, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return format_(self, record)
        finally:  # the record stays whole for any handler after this one
            record.exc_info, record.exc_text, record.stack_info = saved

    format.modelops_quiet = True  # type: ignore[attr-defined]
    return format


def quiet_console_tracebacks() -> None:
    """A CLI's error is one line a person can act on (it names the input and the fix); the traceback
    behind it stays in the flow run's log in Prefect (the API handler sees the whole record). Prefect's
    console handler would print it on the terminal too, above that line: in a CLI process it prints
    each record's message only (Prefect may configure its logging again once a run starts, so the
    handler class is changed, not one instance). `MODELOPS_CLI_TRACEBACKS=1` keeps them."""
    if os.environ.get("MODELOPS_CLI_TRACEBACKS", "").lower() in ("1", "true", "yes"):
        return
    from prefect.logging.handlers import PrefectConsoleHandler

    if not getattr(PrefectConsoleHandler.format, "modelops_quiet", False):
        PrefectConsoleHandler.format = _format_without_traceback(PrefectConsoleHandler.format)  # type: ignore[method-assign]

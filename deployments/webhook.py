"""The W&B webhook receiver: `python -m deployments.webhook --host H --port P`.

POST /hooks/wandb  -> 202 {"event_id", "event", "duplicate"} once the event is durable
GET  /healthz      -> 200 {"status", "outbox", "prefect"}

Parsing and validation live in `deployments.wandb_events` (no I/O); the durable outbox and the
sender that delivers it to `PREFECT_API_URL` live in `deployments.outbox`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from deployments.outbox import Outbox, OutboxEvent, OutboxUnavailable, PrefectEvents, Sender, utc_now_iso
from deployments.wandb_events import (
    MAX_BODY_BYTES,
    Credentials,
    DeliveryError,
    check_length,
    parse_delivery,
)

log = logging.getLogger("modelops.webhook")

DEFAULT_OUTBOX = ".modelops/webhook-outbox.sqlite3"


@dataclass
class ReceiverConfig:
    api_url: str
    credentials: Credentials
    outbox_path: str = DEFAULT_OUTBOX
    dedupe_window: float = 600.0
    max_body: int = MAX_BODY_BYTES
    confirm_after: float = 30.0
    direct_confirm_timeout: float = 12.0
    api_headers: dict[str, str] = field(default_factory=dict, repr=False)


class _RecentBodies:
    """In-memory dedupe for deliveries forwarded without the outbox (outbox unwritable)."""

    def __init__(self, window: float, size: int = 10_000) -> None:
        self.window = window
        self.size = size
        self._items: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def get(self, key: str) -> str | None:
        item = self._items.get(key)
        if item and time.time() - item[1] <= self.window:
            return item[0]
        return None

    def put(self, key: str, event_id: str) -> None:
        self._items[key] = (event_id, time.time())
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)


async def _read_limited(request: Request, limit: int) -> bytes:
    """Read the body, giving up with 413 as soon as it passes the limit."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise DeliveryError(413, f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(config: ReceiverConfig) -> Starlette:
    state: dict[str, Any] = {}
    recent = _RecentBodies(config.dedupe_window)
    direct_lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        prefect = PrefectEvents(config.api_url, config.api_headers)
        try:
            outbox: Outbox | None = Outbox(config.outbox_path, dedupe_window=config.dedupe_window)
        except OutboxUnavailable as exc:
            log.error("%s; deliveries will be forwarded directly and refused when Prefect is down", exc)
            outbox = None
        sender = Sender(outbox, prefect, confirm_after=config.confirm_after) if outbox else None
        state.update(outbox=outbox, prefect=prefect, sender=sender)
        if sender:
            sender.start()
        try:
            yield
        finally:
            if sender:
                await sender.stop()
            await prefect.aclose()
            if outbox:
                outbox.close()

    async def forward_directly(event_sha: str, build) -> tuple[str, bool]:
        """No outbox: the event counts as accepted only once Prefect has stored it."""
        async with direct_lock:
            earlier = recent.get(event_sha)
            if earlier:
                return earlier, True
            import uuid

            event_id = str(uuid.uuid4())
            occurred = utc_now_iso()
            document = build(event_id, occurred)
            prefect: PrefectEvents = state["prefect"]
            await prefect.post([document])
            deadline = time.monotonic() + config.direct_confirm_timeout
            probe = [OutboxEvent(event_id, document, 1, occurred)]
            while time.monotonic() < deadline:
                if await prefect.stored_ids(probe):
                    recent.put(event_sha, event_id)
                    return event_id, False
                await asyncio.sleep(0.25)
            raise TimeoutError("Prefect did not store the event in time")

    async def receive(request: Request) -> JSONResponse:
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            check_length(headers, config.max_body)
            body = await _read_limited(request, config.max_body)
            event = parse_delivery(headers, body, config.credentials, limit=config.max_body)
        except DeliveryError as exc:
            return JSONResponse(exc.to_dict(), status_code=exc.status)
        except ClientDisconnect:
            return JSONResponse({"error": "client disconnected"}, status_code=400)

        outbox: Outbox | None = state.get("outbox")
        try:
            if outbox is None:
                raise OutboxUnavailable("no outbox")
            try:
                stored = await asyncio.to_thread(outbox.put, event.body_sha256, event.to_prefect)
            except OutboxUnavailable as exc:
                state["outbox_error"] = str(exc)  # shown on /healthz until a delivery is stored again
                raise
            state.pop("outbox_error", None)
            event_id, duplicate = stored.event_id, stored.duplicate
            if not duplicate:
                state["sender"].wake()
        except OutboxUnavailable as exc:
            log.error("outbox unavailable (%s); forwarding directly to Prefect", exc)
            try:
                event_id, duplicate = await forward_directly(event.body_sha256, event.to_prefect)
            except Exception as fwd_exc:  # noqa: BLE001 - any failure here means "not accepted"
                log.error("could not forward to Prefect either: %s", fwd_exc)
                return JSONResponse(
                    {"error": "the event could not be stored (outbox unavailable) nor forwarded to Prefect"},
                    status_code=503,
                    headers={"Retry-After": "30"},
                )
        log.info("accepted %s as %s (%s)%s", event.event_type, event.event, event_id,
                 " duplicate" if duplicate else "")
        return JSONResponse(
            {"event_id": event_id, "event": event.event, "duplicate": duplicate}, status_code=202
        )

    async def healthz(request: Request) -> JSONResponse:
        outbox: Outbox | None = state.get("outbox")
        sender: Sender | None = state.get("sender")
        counts = await asyncio.to_thread(outbox.counts) if outbox else None
        outbox_error = state.get("outbox_error")
        body: dict[str, Any] = {
            "status": "ok" if outbox and not outbox_error else "degraded",
            "outbox": counts if counts is not None else "unavailable",
            "prefect": "ok" if (sender is None or sender.healthy) else f"retrying: {sender.last_error}",
        }
        if outbox_error:  # e.g. disk full: deliveries are accepted only once Prefect has stored them
            body["outbox_error"] = outbox_error
        return JSONResponse(body)

    return Starlette(
        routes=[
            Route("/hooks/wandb", receive, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m deployments.webhook",
        description="Receive W&B automation webhooks and forward them to Prefect as events.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8787)
    p.add_argument("--outbox", default=os.environ.get("MODELOPS_WEBHOOK_OUTBOX", DEFAULT_OUTBOX),
                   help="SQLite file of the durable outbox (env MODELOPS_WEBHOOK_OUTBOX)")
    p.add_argument("--dedupe-window", type=float,
                   default=float(os.environ.get("MODELOPS_WEBHOOK_DEDUPE_SECONDS", "600")),
                   help="seconds in which a repeated body is a duplicate (default 600)")
    p.add_argument("--confirm-after", type=float, default=30.0,
                   help="seconds to wait for Prefect to store a sent event before sending it again (default 30)")
    p.add_argument("--max-body", type=int, default=MAX_BODY_BYTES, help="largest body in bytes (default 1 MiB)")
    p.add_argument("--allow-unauthenticated", action="store_true",
                   help="accept deliveries with neither WANDB_WEBHOOK_TOKEN nor WANDB_WEBHOOK_SECRET set")
    p.add_argument("--log-level", default=os.environ.get("MODELOPS_LOG_LEVEL", "info"))
    return p


def config_from_args(args: argparse.Namespace, environ: dict[str, str] | os._Environ = os.environ) -> ReceiverConfig:
    creds = Credentials(
        token=environ.get("WANDB_WEBHOOK_TOKEN") or None,
        secret=environ.get("WANDB_WEBHOOK_SECRET") or None,
    )
    if not creds.configured and not args.allow_unauthenticated:
        raise SystemExit(
            "refusing to start: set WANDB_WEBHOOK_TOKEN and/or WANDB_WEBHOOK_SECRET "
            "(or pass --allow-unauthenticated for a trusted network)"
        )
    if args.dedupe_window < 0:
        raise SystemExit("--dedupe-window must be >= 0 seconds")
    if args.max_body <= 0:
        raise SystemExit("--max-body must be a positive number of bytes")
    if args.confirm_after <= 0:
        raise SystemExit("--confirm-after must be > 0 seconds")

    from prefect.settings import get_current_settings

    from deployments.outbox import prefect_api_auth

    api_url = get_current_settings().api.url
    if not api_url:
        raise SystemExit("refusing to start: PREFECT_API_URL is not set (where should events go?)")
    return ReceiverConfig(
        api_url=api_url,
        credentials=creds,
        outbox_path=args.outbox,
        dedupe_window=args.dedupe_window,
        max_body=args.max_body,
        confirm_after=args.confirm_after,
        api_headers=prefect_api_auth(),
    )


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    config = config_from_args(args)
    if not config.credentials.configured:
        log.warning("running WITHOUT authentication (--allow-unauthenticated)")
    import uvicorn

    log.info("receiver on http://%s:%d/hooks/wandb -> %s (outbox %s)", args.host, args.port,
             config.api_url, Path(config.outbox_path).resolve())
    uvicorn.run(
        create_app(config), host=args.host, port=args.port, log_level=args.log_level.lower(),
        access_log=False, timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()

"""The HTTP scaffolding the fake servers share: a threaded server on 127.0.0.1 that hands each request
to its fake's `handle`, and the fake's lifecycle (context manager, `close`).

A fake subclasses `LoopbackServer`, implements `handle` and calls `_serve` at the end of `__init__`:

    class FakeThing(LoopbackServer):
        def __init__(self) -> None:
            self.requests = []                    # state first: requests may arrive once serving
            self.url = f"http://127.0.0.1:{self._serve('fake-thing')}"

        def handle(self, method, target, headers, raw) -> Reply | None:
            ...
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Self

# (status, headers, body) of one reply
Reply = tuple[int, dict[str, str], bytes]


class LoopbackServer:
    """Serves `handle` over real HTTP/1.1 on a free loopback port, in a daemon thread."""

    # headers every reply starts from; a reply's own headers override them
    default_headers: ClassVar[dict[str, str]] = {}

    _server: _Server
    _thread: threading.Thread
    _closed: bool

    def _serve(self, name: str, *, poll_interval: float = 0.5) -> int:
        """Start serving in a thread called `name`; returns the port. `poll_interval` bounds `close`'s wait."""
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": poll_interval}, name=name, daemon=True
        )
        self._thread.start()
        self._closed = False
        return port

    def handle(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> Reply | None:
        """The reply to one request (`target` is the path with its query string), or None to drop the
        connection without any reply (a connection reset)."""
        raise NotImplementedError

    # -- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving; later connections are refused."""
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: LoopbackServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        fake = self.server.fake
        reply = fake.handle(self.command, self.path, dict(self.headers.items()), raw)
        if reply is None:  # a connection reset: no status line at all
            self.close_connection = True
            return
        status, headers, body = reply
        try:
            self.send_response(status)
            for key, value in {**fake.default_headers, **headers}.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
            self.close_connection = True

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _dispatch

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass

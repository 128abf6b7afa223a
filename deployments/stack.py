"""The local embedded stack: Prefect server (SQLite by default), webhook receiver, served flows.

Used by `make demo`, the end-to-end tests and the benchmarks. Every process is a real subprocess
talking real HTTP on 127.0.0.1; logs go to `<home>/logs/<name>.log`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_for(url: str, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with code {proc.returncode} while starting:\n{tail}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"{what} did not answer at {url} within {timeout:.0f}s ({last})")


@dataclass
class Service:
    name: str
    proc: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def kill(self) -> None:
        self.stop(signal.SIGKILL, timeout=5)


@dataclass
class Stack:
    home: Path
    prefect_port: int | None = None
    receiver_port: int | None = None
    endpoint_port: int | None = None
    webhook_secret: str | None = "local-demo-secret"
    webhook_token: str | None = None
    database_url: str | None = None
    ui: bool = False
    poll: float = 2.0
    extra_env: dict[str, str] = field(default_factory=dict)
    services: dict[str, Service] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.home = Path(self.home).resolve()
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        self.prefect_port = self.prefect_port or free_port()
        self.receiver_port = self.receiver_port or free_port()
        self.endpoint_port = self.endpoint_port or free_port()

    # ----------------------------------------------------------------- addresses and env

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.prefect_port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.prefect_port}"

    @property
    def hook_url(self) -> str:
        return f"http://127.0.0.1:{self.receiver_port}/hooks/wandb"

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.endpoint_port}"

    def env(self, **more: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(
            PREFECT_HOME=str(self.home / "prefect"),
            PREFECT_API_URL=self.api_url,
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_SERVER_UI_ENABLED="true" if self.ui else "false",
            PREFECT_UI_ENABLED="true" if self.ui else "false",
            PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL="1",  # faster outbox read-back
            PREFECT_LOGGING_LEVEL=os.environ.get("PREFECT_LOGGING_LEVEL", "INFO"),
            MODELOPS_HOME=str(self.home),
            PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            PYTHONUNBUFFERED="1",
        )
        if self.database_url:
            env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = self.database_url
        else:
            env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = (
                f"sqlite+aiosqlite:///{self.home / 'prefect' / 'prefect.db'}"
            )
        env.pop("WANDB_WEBHOOK_SECRET", None)
        env.pop("WANDB_WEBHOOK_TOKEN", None)
        env.update(self.extra_env)
        env.update(more)
        return env

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> Service:
        log = self.home / "logs" / f"{name}.log"
        fh = open(log, "ab")
        proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        fh.close()
        service = Service(name, proc, log)
        self.services[name] = service
        return service

    # ----------------------------------------------------------------- services

    def start_prefect(self, timeout: float = 90) -> Service:
        (self.home / "prefect").mkdir(parents=True, exist_ok=True)
        svc = self._spawn(
            "prefect-server",
            [sys.executable, "-m", "deployments.prefect_server", "start", "--host", "127.0.0.1",
             "--port", str(self.prefect_port)],
            self.env(),
        )
        wait_for(f"{self.api_url}/health", timeout, "Prefect server", svc.proc, svc.log)
        return svc

    def receiver_env(self) -> dict[str, str]:
        more = {"MODELOPS_WEBHOOK_OUTBOX": str(self.home / "webhook-outbox.sqlite3")}
        if self.webhook_secret:
            more["WANDB_WEBHOOK_SECRET"] = self.webhook_secret
        if self.webhook_token:
            more["WANDB_WEBHOOK_TOKEN"] = self.webhook_token
        return self.env(**more)

    def start_receiver(self, *extra_args: str, timeout: float = 60) -> Service:
        args = [sys.executable, "-m", "deployments.webhook", "--host", "127.0.0.1",
                "--port", str(self.receiver_port), *extra_args]
        if not (self.webhook_secret or self.webhook_token) and "--allow-unauthenticated" not in args:
            args.append("--allow-unauthenticated")
        svc = self._spawn("receiver", args, self.receiver_env())
        wait_for(f"http://127.0.0.1:{self.receiver_port}/healthz", timeout, "webhook receiver", svc.proc, svc.log)
        return svc

    def start_endpoint(self, *extra_args: str, timeout: float = 60) -> Service:
        """The local model endpoint (`python -m deployments.endpoint`), its state kept in home."""
        args = [sys.executable, "-m", "deployments.endpoint", "--host", "127.0.0.1", "--port", str(self.endpoint_port),
                "--state", str(self.home / "endpoint-state.json"), *extra_args]
        svc = self._spawn("endpoint", args, self.env())
        wait_for(f"{self.endpoint_url}/healthz", timeout, "model endpoint", svc.proc, svc.log)
        return svc

    def start_serve(self, *extra_args: str, deployments: tuple[str, ...] = ("review-issue",),
                    timeout: float = 90, env: dict[str, str] | None = None) -> Service:
        args = [sys.executable, "-m", "deployments.serve", "--poll", str(self.poll), *extra_args]
        # the served flows' local registry announces alias changes to this stack's receiver
        announce = {"MODELOPS_RECEIVER_URL": self.hook_url, "MODELOPS_ENDPOINT_URL": self.endpoint_url}
        if self.webhook_secret:
            announce["WANDB_WEBHOOK_SECRET"] = self.webhook_secret
        if self.webhook_token:
            announce["WANDB_WEBHOOK_TOKEN"] = self.webhook_token
        svc = self._spawn("serve", args, self.env(**announce, **(env or {})))
        deadline = time.monotonic() + timeout
        for name in deployments:
            while True:
                if not svc.alive():
                    raise RuntimeError(f"serve exited while starting:\n{svc.log.read_text()[-3000:]}")
                try:
                    if self._automations_ready(name):
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"deployment {name} was not served within {timeout:.0f}s")
                time.sleep(0.3)
        # let the runner start and its scheduled-run event subscription connect
        time.sleep(1.5)
        return svc

    def _automations_ready(self, deployment: str) -> bool:
        """The deployment exists and owns its automations (serve applies triggers after creating it)."""
        d = httpx.get(f"{self.api_url}/deployments/name/{deployment}/{deployment}", timeout=5)
        if d.status_code != 200:
            return False
        related = httpx.get(f"{self.api_url}/automations/related-to/prefect.deployment.{d.json()['id']}", timeout=5)
        return related.status_code == 200 and bool(related.json())

    def start_all(self) -> "Stack":
        self.start_prefect()
        self.start_receiver()
        self.start_serve()
        return self

    def stop(self) -> None:
        for name in ("serve", "receiver", "endpoint", "prefect-server"):
            svc = self.services.get(name)
            if svc:
                svc.stop()
        for svc in self.services.values():
            svc.stop()

    def __enter__(self) -> "Stack":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

"""The production topology, on one machine, from real components only: `python -m deployments.production`.

    PostgreSQL (a fresh database)   Redis (its own redis-server)
            \\                          /
    prefect server services start   (once: triggers, actions, event persister, scheduler, ...)
    prefect server start --no-services  x2  (API replicas, no state of their own)
            |            |
          HAProxy (round robin, health-checked)  <- PREFECT_API_URL of everything else
            |
    receiver -> LB       prefect deploy --all     prefect worker start --pool modelops-process  x2

Every replica and the services process get the same settings: the database URL and every pluggable
server module that would otherwise keep state in one process's memory, pointed at prefect-redis
(messaging broker and cache, causal ordering, concurrency lease storage, the worker-channel cleanup
queue, Docket). `PRODUCTION_SETTINGS` lists them; the README's Production section is this list.

Used by `make demo TOPOLOGY=production` (the demo's whole story through the workers) and by
tests/test_production.py. Logs go to `<home>/logs/<name>.log`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from deployments.stack import ROOT, Service, Stack, free_port, wait_for

POOL = "modelops-process"
#: The missed-heartbeat automation that marks runs of a dead worker Crashed (see the file).
CRASHED_RUNS = ROOT / "deployments" / "automations" / "crashed-flow-runs.yaml"
#: Flow-run heartbeats on the workers: the automation above waits for three missed ones (90 s).
HEARTBEAT_SECONDS = 30
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"


def production_settings(database_url: str, redis_host: str, redis_port: int) -> dict[str, str]:
    """What every API replica and the services process share (Prefect 3.9, prefect-redis 0.3)."""
    return {
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": database_url,
        "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
        "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
        "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
        "PREFECT_SERVER_WORKER_CHANNEL_CLEANUP_QUEUE_STORAGE": "prefect_redis.cleanup_queue",
        "PREFECT_SERVER_DOCKET_URL": f"redis://{redis_host}:{redis_port}/1",
        "PREFECT_REDIS_MESSAGING_HOST": redis_host,
        "PREFECT_REDIS_MESSAGING_PORT": str(redis_port),
        "PREFECT_REDIS_MESSAGING_DB": "0",
    }


def haproxy_config(port: int, backends: list[int], stats_port: int) -> str:
    """Round robin over the API replicas; a replica that fails /api/health is taken out within ~2 s.
    Websockets (events in/out, logs) are long-lived: generous tunnel timeout."""
    servers = "\n".join(f"    server api{i} 127.0.0.1:{p} check inter 1s fall 2 rise 1"
                        for i, p in enumerate(backends, 1))
    return f"""global
    maxconn 4096

defaults
    mode http
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    timeout tunnel 1h
    retries 2
    option redispatch
    option http-server-close

listen stats
    bind 127.0.0.1:{stats_port}
    stats enable
    stats uri /haproxy

frontend prefect_api
    bind 127.0.0.1:{port}
    default_backend prefect_replicas

backend prefect_replicas
    balance roundrobin
    option httpchk GET /api/health
    http-check expect status 200
{servers}
"""


@dataclass
class ProductionStack(Stack):
    """`Stack`'s addresses and receiver, with Prefect as replicas behind HAProxy and flows run by workers.

    `prefect_port` is the load balancer's, so `api_url` / `ui_url` (what the receiver, the workers,
    `prefect deploy` and the scenario use) go through it.
    """

    pg_admin_url: str = DEFAULT_PG
    replicas: int = 2
    workers: int = 2
    worker_poll: float = 1.0
    db_name: str = field(default_factory=lambda: f"modelops_prod_{uuid.uuid4().hex[:8]}")
    redis_port: int = 0
    stats_port: int = 0
    replica_ports: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.redis_port = self.redis_port or free_port()
        self.stats_port = self.stats_port or free_port()
        self.replica_ports = self.replica_ports or [free_port() for _ in range(self.replicas)]
        host = self.pg_admin_url.split("://", 1)[1].rsplit("/", 1)[0]
        self.database_url = f"postgresql+asyncpg://{host}/{self.db_name}"

    # ----------------------------------------------------------------- environment

    def env(self, **more: str) -> dict[str, str]:
        env = super().env(**more)
        env.update(production_settings(self.database_url or "", "127.0.0.1", self.redis_port))
        env.update(more)
        return env

    # ----------------------------------------------------------------- components

    def start_database(self) -> None:
        _psql(self.pg_admin_url, f"CREATE DATABASE {self.db_name}")

    def drop_database(self) -> None:
        _psql(self.pg_admin_url, f"DROP DATABASE IF EXISTS {self.db_name} WITH (FORCE)", check=False)

    def start_redis(self, timeout: float = 30) -> Service:
        redis = shutil.which("redis-server")
        if redis is None:
            raise RuntimeError("redis-server is not installed: `make install-production` (apt-get install redis-server)")
        data = self.home / "redis"
        data.mkdir(parents=True, exist_ok=True)
        svc = self._spawn("redis", [redis, "--bind", "127.0.0.1", "--port", str(self.redis_port), "--save", "",
                                    "--appendonly", "no", "--dir", str(data)], self.env())
        deadline = time.monotonic() + timeout
        while not redis_ping(self.redis_port):
            if not svc.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start:\n{svc.log.read_text()[-2000:]}")
            time.sleep(0.1)
        return svc

    def start_services(self) -> Service:
        """`prefect server services start`: the background services, once for the whole topology."""
        return self._spawn("prefect-services", [sys.executable, "-m", "prefect", "server", "services", "start"],
                           self.env())

    def start_replica(self, index: int, timeout: float = 120) -> Service:
        port = self.replica_ports[index]
        svc = self._spawn(f"prefect-api-{index + 1}",
                          [sys.executable, "-m", "prefect", "server", "start", "--no-services", "--host", "127.0.0.1",
                           "--port", str(port)], self.env())
        wait_for(f"http://127.0.0.1:{port}/api/health", timeout, f"Prefect API replica {index + 1}", svc.proc, svc.log)
        return svc

    def start_load_balancer(self, timeout: float = 30) -> Service:
        haproxy = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
        if haproxy is None:
            raise RuntimeError("haproxy is not installed: `make install-production` (apt-get install haproxy)")
        cfg = self.home / "haproxy.cfg"
        cfg.write_text(haproxy_config(self.prefect_port, self.replica_ports, self.stats_port))
        svc = self._spawn("haproxy", [haproxy, "-db", "-f", str(cfg)], self.env())
        wait_for(f"{self.api_url}/health", timeout, "HAProxy in front of the API replicas", svc.proc, svc.log)
        return svc

    def start_prefect(self, timeout: float = 120) -> Service:
        """Database, Redis, the services process, the replicas and the load balancer; returns the LB."""
        (self.home / "prefect").mkdir(parents=True, exist_ok=True)
        self.start_database()
        self.start_redis()
        # the first replica creates the schema (migrations) before the others and the services start
        self.start_replica(0, timeout)
        for i in range(1, self.replicas):
            self.start_replica(i, timeout)
        self.start_services()
        return self.start_load_balancer()

    def flow_env(self, **more: str) -> dict[str, str]:
        """What the flow runs need (the same as `Stack.start_serve` gives the served flows)."""
        announce = {"MODELOPS_RECEIVER_URL": self.hook_url, "MODELOPS_ENDPOINT_URL": self.endpoint_url}
        if self.webhook_secret:
            announce["WANDB_WEBHOOK_SECRET"] = self.webhook_secret
        if self.webhook_token:
            announce["WANDB_WEBHOOK_TOKEN"] = self.webhook_token
        return self.client_env(**announce, **more)

    def client_env(self, **more: str) -> dict[str, str]:
        """A client's environment: the API through the load balancer, none of the server settings."""
        env = Stack.env(self, **more)
        env.pop("PREFECT_SERVER_DATABASE_CONNECTION_URL", None)
        return env

    def deploy(self, timeout: float = 300) -> None:
        """`prefect work-pool create` + `prefect deploy --all`, exactly as the README says, from the root."""
        env = self.client_env()
        _run([sys.executable, "-m", "prefect", "work-pool", "create", POOL, "--type", "process", "--overwrite"],
             env, timeout, self.home / "logs" / "deploy.log")
        _run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"], env, timeout,
             self.home / "logs" / "deploy.log")
        _run([sys.executable, "-m", "prefect", "automation", "create", "--from-file", str(CRASHED_RUNS)], env,
             timeout, self.home / "logs" / "deploy.log")
        for name in ("review-issue", "drift-check", "retrain", "canary-rollout"):
            wait_until_ready = time.monotonic() + 60
            while not self._automations_ready(name):
                if time.monotonic() > wait_until_ready:
                    raise TimeoutError(f"deployment {name} has no automations after prefect deploy")
                time.sleep(0.3)

    def start_worker(self, index: int, env: dict[str, str] | None = None, timeout: float = 90) -> Service:
        name = f"worker-{index + 1}"
        svc = self._spawn(name, [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--name",
                                 f"{name}-{self.db_name[-8:]}", "--type", "process"],
                          self.flow_env(PREFECT_WORKER_QUERY_SECONDS=str(self.worker_poll),
                                        PREFECT_WORKER_PREFETCH_SECONDS="0",
                                        PREFECT_FLOWS_HEARTBEAT_FREQUENCY=str(HEARTBEAT_SECONDS), **(env or {})))
        deadline = time.monotonic() + timeout
        while not self._worker_online(f"{name}-{self.db_name[-8:]}"):
            if not svc.alive():
                raise RuntimeError(f"{name} exited while starting:\n{svc.log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name} did not report to the pool within {timeout:.0f}s")
            time.sleep(0.3)
        return svc

    def start_workers(self, env: dict[str, str] | None = None) -> list[Service]:
        return [self.start_worker(i, env) for i in range(self.workers)]

    def balancer_stats(self) -> dict[str, dict[str, str]]:
        """HAProxy's view of each API replica (`status` UP/DOWN, `stot` requests served, ...), from its
        stats page (`http://127.0.0.1:<stats_port>/haproxy`, what an operator monitors)."""
        import csv
        import io

        text = httpx.get(f"http://127.0.0.1:{self.stats_port}/haproxy;csv", timeout=5).text.lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {r["svname"]: r for r in rows if r["pxname"] == "prefect_replicas" and r["svname"].startswith("api")}

    def _worker_online(self, name: str) -> bool:
        try:
            r = httpx.post(f"{self.api_url}/work_pools/{POOL}/workers/filter", json={}, timeout=5)
        except httpx.HTTPError:
            return False
        return r.status_code == 200 and any(w["name"] == name and w.get("status") == "ONLINE" for w in r.json())

    def start_all(self) -> ProductionStack:
        self.start_prefect()
        self.start_receiver()
        self.deploy()
        self.start_workers()
        return self

    def stop(self) -> None:
        order = [n for n in self.services if n.startswith("worker-")] + ["receiver", "endpoint", "prefect-services"] \
            + [n for n in self.services if n.startswith("prefect-api-")] + ["haproxy", "redis"]
        for name in order:
            svc = self.services.get(name)
            if svc:
                svc.stop()
        for svc in self.services.values():
            svc.stop()
        self.drop_database()


def _psql(url: str, sql: str, check: bool = True) -> None:
    proc = subprocess.run(["psql", url, "-q", "-v", "ON_ERROR_STOP=1", "-c", sql], capture_output=True, text=True,
                          timeout=60)
    if check and proc.returncode != 0:
        raise RuntimeError(f"psql {sql!r} failed: {proc.stderr.strip()} (is PostgreSQL up at {url}?)")


def redis_ping(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _run(args: list[str], env: dict[str, str], timeout: float, log: Path) -> None:
    with open(log, "ab") as fh:
        proc = subprocess.run(args, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[2:])} failed ({proc.returncode}):\n{log.read_text()[-3000:]}")


def main(argv: list[str] | None = None) -> int:
    """Start the topology and keep it up until Ctrl-C (for looking around)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m deployments.production", description=__doc__.split("\n\n")[0])
    p.add_argument("--home", default=str(ROOT / ".production"))
    p.add_argument("--pg", default=os.environ.get("MODELOPS_PG_URL", DEFAULT_PG), help="PostgreSQL admin URL")
    args = p.parse_args(argv)
    stack = ProductionStack(Path(args.home), pg_admin_url=args.pg, ui=True)
    try:
        stack.start_all()
        print(f"Prefect API (HAProxy): {stack.api_url}  replicas {stack.replica_ports}  redis :{stack.redis_port}")
        print(f"receiver: {stack.hook_url}  workers: {stack.workers}; Ctrl-C stops everything", flush=True)
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

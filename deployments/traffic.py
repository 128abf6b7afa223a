"""Steady prediction traffic for the local endpoint, so a canary has something to be judged on.

    python -m deployments.traffic --url http://127.0.0.1:8788 --rps 100

Sends rows of the demo's churn data (features only) to POST /v1/predict at about `rps` requests per
second from a few threads, and counts the answers. Also usable in-process: `Traffic(url, rps).start()`.
"""

from __future__ import annotations

import argparse
import signal
import threading
import time
from collections import Counter
from typing import Any


def sample_rows(n: int = 500, seed: int = 0) -> list[dict[str, Any]]:
    from training.tabular import make_dataset

    frame = make_dataset(n, seed=seed).drop(columns=["churned"])
    return frame.to_dict(orient="records")


class Traffic:
    """Background request generator: `start()`, `stop()`, `counts` (status code -> answers)."""

    def __init__(self, url: str, rps: float, *, threads: int = 4, rows: list[dict[str, Any]] | None = None) -> None:
        if rps <= 0:
            raise ValueError(f"rps must be > 0, got {rps}")
        self.url = url.rstrip("/") + "/v1/predict"
        self.rps = rps
        self.threads = threads
        self.rows = rows or sample_rows()
        self.counts: Counter[int] = Counter()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._lock = threading.Lock()

    def _run(self, index: int) -> None:
        import httpx

        interval = self.threads / self.rps
        next_at = time.monotonic() + interval * index / self.threads
        i = index
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                delay = next_at - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
                next_at = max(next_at + interval, time.monotonic() - 1)  # never bursts to catch up > 1 s
                try:
                    status = client.post(self.url, json={"instances": [self.rows[i % len(self.rows)]]}).status_code
                except httpx.HTTPError:
                    status = 0
                i += self.threads
                with self._lock:
                    self.counts[status] += 1

    def start(self) -> Traffic:
        self._stop.clear()
        self._workers = [threading.Thread(target=self._run, args=(k,), daemon=True, name=f"traffic-{k}")
                         for k in range(self.threads)]
        for w in self._workers:
            w.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for w in self._workers:
            w.join(timeout=15)

    def __enter__(self) -> Traffic:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deployments.traffic", description=__doc__.split("\n\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8788")
    p.add_argument("--rps", type=float, default=50.0)
    p.add_argument("--threads", type=int, default=4)
    args = p.parse_args(argv)
    traffic = Traffic(args.url, args.rps, threads=args.threads).start()
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        while not stopping.wait(10):
            print(f"answers so far: {dict(traffic.counts)}", flush=True)
    except KeyboardInterrupt:
        pass
    traffic.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

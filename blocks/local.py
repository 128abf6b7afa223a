"""Local backends of the embedded stack: no account needed."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prefect.blocks.core import Block
from pydantic import Field

__all__ = ["LocalIssueStore", "LocalTrainer", "modelops_home"]

from blocks.github import IssueRef
from blocks.training import LogFn, TrainingError, TrainingResult, parse_metrics
from blocks.wandb import modelops_home

_lock = threading.Lock()


@contextlib.contextmanager
def _store_lock(directory: Path):
    """One writer at a time, across threads AND processes (served runs are separate processes)."""
    directory.mkdir(parents=True, exist_ok=True)
    with _lock, open(directory / ".lock", "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


class LocalIssueStore(Block):
    """Review issues kept as Markdown files, for a stack without GitHub.

    Same contract as `GitHubRepository.open_issue`: an issue carrying the same marker is found,
    not written twice.
    """

    _block_type_name = "Local Issue Store"
    _block_type_slug = "local-issue-store"

    path: str = Field(default="", description="Directory of the issues (default $MODELOPS_HOME/issues).")

    def directory(self) -> Path:
        return Path(self.path).resolve() if self.path else modelops_home() / "issues"

    def _index(self) -> dict[str, dict]:
        index = self.directory() / "index.json"
        return json.loads(index.read_text()) if index.exists() else {}

    def find_issue(self, marker: str) -> IssueRef | None:
        entry = self._index().get(hashlib.sha256(marker.encode()).hexdigest())
        if not entry:
            return None
        return IssueRef(number=entry["number"], url=entry["url"], title=entry["title"], created=False)

    def open_issue(
        self, title: str, body: str, labels: list[str], assignees: list[str], marker: str
    ) -> IssueRef:
        directory = self.directory()
        directory.mkdir(parents=True, exist_ok=True)
        key = hashlib.sha256(marker.encode()).hexdigest()
        with _store_lock(directory):
            index = self._index()
            if key in index:
                e = index[key]
                return IssueRef(number=e["number"], url=e["url"], title=e["title"], created=False)
            number = max((e["number"] for e in index.values()), default=0) + 1
            path = directory / f"{number:05d}.md"
            front = (
                f"---\ntitle: {json.dumps(title, ensure_ascii=False)}\nlabels: {json.dumps(list(labels))}\n"
                f"assignees: {json.dumps(list(assignees))}\n"
                f"created: {datetime.now(timezone.utc).isoformat()}\n---\n"
            )
            _atomic_write(path, front + body)
            index[key] = {"number": number, "url": path.as_uri(), "title": title, "marker": marker,
                          "labels": list(labels), "state": "open"}
            _atomic_write(directory / "index.json", json.dumps(index, indent=1))
        return IssueRef(number=number, url=path.as_uri(), title=title, created=True)

    def comment(self, issue_number: int, body: str, *, marker: str | None = None) -> None:
        """Append a comment; with `marker` (contained in `body`), an earlier comment carrying it is kept
        and nothing is written (as `GitHubRepository.comment`)."""
        if marker is not None and (not marker or marker not in body):
            raise ValueError("body must contain the (non-empty) marker")
        path = self.directory() / f"{issue_number:05d}.md"
        with _store_lock(self.directory()):
            if marker is not None and path.exists() and marker in path.read_text():
                return
            with path.open("a") as fh:
                fh.write(f"\n\n---\n**Comment ({datetime.now(timezone.utc).isoformat()})**\n\n{body}\n")

    def issue(self, issue_number: int) -> dict[str, Any]:
        """The index entry of an issue: number, url, title, labels, state."""
        for entry in self._index().values():
            if entry["number"] == issue_number:
                return {"labels": [], "state": "open", **entry}
        raise KeyError(f"no issue #{issue_number} in {self.directory()}")

    def mark_outcome(self, issue_number: int, labels: list[str], *, close: bool = False,
                     remove: list[str] | tuple[str, ...] = ()) -> list[str]:
        """Labels (and the closed state) kept in the index, as GitHub keeps them. Idempotent."""
        directory = self.directory()
        with _store_lock(directory):
            index = self._index()
            key = next(k for k, e in index.items() if e["number"] == issue_number)
            entry = index[key]
            have = list(entry.get("labels") or [])
            entry["labels"] = [n for n in dict.fromkeys([*have, *labels]) if n not in set(remove) - set(labels)]
            if close:
                entry["state"] = "closed"
            _atomic_write(directory / "index.json", json.dumps(index, indent=1))
            return entry["labels"]


REPO_ROOT = Path(__file__).resolve().parents[1]


class LocalTrainer(Block):
    """Trains in a subprocess on this machine: `python -m training.tabular` (or your own entry point).

    The child gets `--dataset --target --params --out`, writes `model.joblib` and `metrics.json` into
    `--out`, and its output lines are streamed into the flow's log as they come.
    """

    _block_type_name = "Local Trainer"
    _block_type_slug = "local-trainer"

    module: str = Field(default="training.tabular", description="Python module run with `python -m`.")
    python: str = Field(default="", description="Interpreter (default: the one running the flow).")
    output_dir: str = Field(default="", description="Where jobs write their models (default $MODELOPS_HOME/training).")
    timeout_seconds: float = Field(default=3600, gt=0, description="A job still running after this is killed.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment variables for the job.")

    def train(self, dataset: str, hyperparameters: dict, *, target: str, log: LogFn = print) -> TrainingResult:
        import subprocess
        import sys
        import time
        import uuid
        from collections import deque

        job = f"local-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
        out = (Path(self.output_dir).resolve() if self.output_dir else modelops_home() / "training") / job
        out.mkdir(parents=True, exist_ok=True)
        cmd = [self.python or sys.executable, "-u", "-m", self.module, "--dataset", dataset, "--target", target,
               "--params", json.dumps(hyperparameters, sort_keys=True), "--out", str(out)]
        env = {**os.environ, **self.env,
               "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)}
        log(f"{job}: python -m {self.module} --dataset {dataset} --target {target}")
        tail: deque[str] = deque(maxlen=20)
        started = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=str(REPO_ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1, start_new_session=True)
        timer = threading.Timer(self.timeout_seconds, _kill_group, args=(proc,))
        timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                line = line.rstrip()
                tail.append(line)
                log(line)
            code = proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                _kill_group(proc)
                proc.wait()
        elapsed = time.monotonic() - started
        if code != 0:
            if elapsed >= self.timeout_seconds:
                raise TrainingError(f"{job} timed out after {self.timeout_seconds:g}s and was killed", job=job, state="timeout")
            last = "\n".join(tail) or "(no output)"
            raise TrainingError(f"{job} failed with exit code {code}:\n{last}", job=job, state="failed")
        metrics_file = out / "metrics.json"
        model_file = out / "model.joblib"
        if not metrics_file.is_file() or not model_file.is_file():
            raise TrainingError(f"{job} exited 0 but wrote no {'metrics.json' if not metrics_file.is_file() else 'model.joblib'} "
                                f"in {out}", job=job, state="failed")
        metrics = parse_metrics(json.loads(metrics_file.read_text()), str(metrics_file))
        return TrainingResult(model_uri=str(model_file), metrics=metrics, job=job, trainer="local",
                              details={"output_dir": str(out), "seconds": round(elapsed, 2)})


def _kill_group(proc: Any) -> None:
    """Kill the job and whatever it started (it runs in its own session)."""
    import signal

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)

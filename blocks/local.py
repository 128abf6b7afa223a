"""Local backends of the embedded stack: no account needed."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from datetime import datetime, timezone
from pathlib import Path

from prefect.blocks.core import Block
from pydantic import Field

from blocks.github import IssueRef

_lock = threading.Lock()


def modelops_home() -> Path:
    """Where local state lives: `MODELOPS_HOME`, default `.modelops` in the working directory."""
    return Path(os.environ.get("MODELOPS_HOME", ".modelops")).resolve()


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
        with _lock:
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
            index[key] = {"number": number, "url": path.as_uri(), "title": title, "marker": marker}
            _atomic_write(directory / "index.json", json.dumps(index, indent=1))
        return IssueRef(number=number, url=path.as_uri(), title=title, created=True)

    def comment(self, issue_number: int, body: str) -> None:
        path = self.directory() / f"{issue_number:05d}.md"
        with _lock, path.open("a") as fh:
            fh.write(f"\n\n---\n**Comment ({datetime.now(timezone.utc).isoformat()})**\n\n{body}\n")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)

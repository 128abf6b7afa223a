"""The local issue store (review issues without GitHub) under concurrent writers in separate processes."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path


def _open_many(directory: str, worker: int, count: int, go) -> None:
    from blocks.local import LocalIssueStore

    store = LocalIssueStore(path=directory)
    go.wait(60)  # all workers write at the same time
    for i in range(count):
        marker = f"<!-- modelops:promotion w{worker}-{i} -->"
        store.open_issue(f"Review w{worker}-{i}", f"body\n{marker}", ["review"], [], marker)
        store.open_issue(f"Review w{worker}-{i}", f"body\n{marker}", ["review"], [], marker)  # a rerun


def test_concurrent_processes_lose_no_issue_and_never_share_a_number(tmp_path: Path) -> None:
    workers, count = 4, 25
    ctx = multiprocessing.get_context("fork")
    go = ctx.Event()
    procs = [ctx.Process(target=_open_many, args=(str(tmp_path), w, count, go)) for w in range(workers)]
    for p in procs:
        p.start()
    go.set()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    index = json.loads((tmp_path / "index.json").read_text())
    assert len(index) == workers * count, "every promotion has its issue in the index"
    numbers = sorted(e["number"] for e in index.values())
    assert numbers == list(range(1, workers * count + 1)), "one number per issue, none reused"
    files = sorted(tmp_path.glob("*.md"))
    assert len(files) == workers * count
    titles = {e["title"] for e in index.values()}
    for f in files:  # each file holds the issue its index entry names
        assert next(line for line in f.read_text().splitlines() if line.startswith("title:"))[7:].strip('"') in titles

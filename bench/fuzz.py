"""Fuzzing the W&B webhook receiver: 10,000 property-based cases in one process.

    .venv/bin/python bench/fuzz.py [--cases 10000] [--seed N]

Runs the properties of `tests/test_receiver_fuzz.py` (their one definition: strategies, oracle and
the in-process receivers with a real SQLite outbox and an unreachable Prefect) against the real
Starlette app, splitting `--cases` between them by their share. Unlike the tests, a violated
property does not stop the run: every answer is counted. Without --seed the cases are derandomized
(the same on every run); with --seed they are drawn from that seed.

Prints the cases tried per property and in total, the answers by status code, the 5xx count, the
outbox events added by rejected requests, the other property violations, and the wall time.
Goal: zero 5xx and zero events from rejected requests.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.test_receiver_fuzz import PROPERTIES, Receivers, run_property  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/fuzz.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10_000, help="cases in all, split between the properties")
    parser.add_argument("--seed", type=int, default=None, help="draw the cases from this seed (default: derandomized)")
    parser.add_argument("--only", choices=list(PROPERTIES), action="append", help="run only these properties")
    args = parser.parse_args(argv)
    if args.cases <= 0:
        parser.error("--cases must be positive")
    warnings.filterwarnings("ignore", message="Do not use the `random` module")  # the sender's retry jitter

    names = args.only or list(PROPERTIES)
    total_share = sum(PROPERTIES[n].share for n in names)
    budget = {n: max(1, round(args.cases * PROPERTIES[n].share / total_share)) for n in names}
    budget[names[0]] += args.cases - sum(budget.values())

    home = Path(tempfile.mkdtemp(prefix="receiver-fuzz-"))
    pool = Receivers(home, strict=False)
    started = time.monotonic()
    aborted: list[str] = []
    try:
        for name in names:
            t0 = time.monotonic()
            try:
                run_property(pool, name, budget[name], seed=args.seed)
            except Exception as exc:  # noqa: BLE001 - hypothesis itself gave up: report, go on
                aborted.append(f"{name}: {type(exc).__name__}: {str(exc)[:300]}")
            print(f"  {name:<16} {pool.stats.cases[name]:>6} cases {pool.stats.requests[name]:>6} requests "
                  f"{time.monotonic() - t0:7.1f} s   {PROPERTIES[name].doc}", flush=True)
    finally:
        wall = time.monotonic() - started
        pool.close()
        shutil.rmtree(home, ignore_errors=True)

    s = pool.stats
    print()
    print(f"cases:    {sum(s.cases.values())} in all ({', '.join(f'{n} {s.cases[n]}' for n in names)})")
    print(f"requests: {sum(s.requests.values())}")
    print("answers by status: " + ", ".join(f"{code}: {n}" for code, n in sorted(s.statuses.items())))
    for name in names:
        counts = s.by_property.get(name, {})
        print(f"  {name:<16} " + ", ".join(f"{code}: {n}" for code, n in sorted(counts.items())))
    print(f"5xx answers: {s.five_xx}")
    print(f"events from rejected requests: {s.rejected_events}")
    other = {k: v for k, v in s.violations.items() if k not in ("5xx answer", "event from a rejected request")}
    print("other property violations: " + (", ".join(f"{k}: {v}" for k, v in sorted(other.items())) or "none"))
    for example in s.examples[:10]:
        print("  e.g. " + example[:600])
    for line in aborted:
        print("  property aborted: " + line)
    print(f"wall time: {wall:.1f} s ({sum(s.requests.values()) / wall:.0f} requests/s)")
    met = s.five_xx == 0 and s.rejected_events == 0 and not aborted
    print(f"goal zero 5xx and zero events from rejected requests: {'MET' if met else 'NOT MET'}")
    return 0 if met and not s.violations else 1


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark flows.drift.ks_drift against a per-column scipy.stats.ks_2samp(method="auto") loop.

20 float64 features, 1,000,000 reference rows and 800,000 current rows (seeded). 17 features come from
the same distribution; 3 are shifted (0.1, 0.02 and 0.005 sigma), so some p-values land in the range
where scipy's asymptotic kstwo.sf is slow (the same cost for both sides: it is the same function).

Run: .venv/bin/python bench/drift.py       Goals: >= 3x (fresh), >= 5x (reused reference profile).
Peak RSS is the process high-water mark after each phase (it never goes down), so ks_drift runs first.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp

from flows.drift import ks_drift, profile_reference

N_FEATURES, N_REF, N_CUR, SEED = 20, 1_000_000, 800_000, 20261125
SHIFTS = {17: 0.1, 18: 0.02, 19: 0.005}
GOAL_FRESH, GOAL_REUSED = 3.0, 5.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def make_data(shifts: dict[int, float]) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(SEED)
    names = [f"f{i:02d}" for i in range(N_FEATURES)]
    ref = rng.standard_normal((N_REF, N_FEATURES))
    cur = rng.standard_normal((N_CUR, N_FEATURES))
    for i, shift in shifts.items():
        cur[:, i] += shift
    return pd.DataFrame(ref, columns=names), pd.DataFrame(cur, columns=names)


def evidently_status() -> str:
    """Evidently's drift check is the comparison users ask for; say plainly why it is not timed here.

    Checked on 2026-11-26: evidently 0.7.23 installs without TensorFlow, but cannot be imported beside
    the pandas this project pins (its legacy tests module imports
    ``pandas.core.dtypes.common.infer_dtype_from_object``, which pandas 3 removed), so it cannot run
    in this process; its numerical drift test is the same scipy ``ks_2samp`` per column as the loop above.
    """
    try:
        import evidently  # noqa: F401
    except ImportError as exc:
        return f"not timed ({type(exc).__name__}: {exc}); see evidently_status() in bench/drift.py"
    return (f"evidently {evidently.__version__} imports here; its KS drift test calls scipy ks_2samp per "
            "column, i.e. the scipy loop above plus its own overhead")


def main() -> int:
    import argparse

    p = argparse.ArgumentParser(description="ks_drift vs a scipy ks_2samp loop")
    p.add_argument("--no-shift", action="store_true",
                   help="no shifted feature: every p-value is cheap, so D and sorting dominate")
    shifts = {} if p.parse_args().no_shift else SHIFTS
    ref, cur = make_data(shifts)
    input_mb = (ref.memory_usage(index=False).sum() + cur.memory_usage(index=False).sum()) / 2**20
    rss_inputs = peak_rss_mb()
    rows = []

    t = time.perf_counter()
    fresh = ks_drift(ref, cur)
    t_fresh = time.perf_counter() - t
    rows.append(("ks_drift (fresh)", t_fresh, peak_rss_mb()))

    t = time.perf_counter()
    profile = profile_reference(ref)
    t_profile = time.perf_counter() - t
    rows.append(("profile_reference (once)", t_profile, peak_rss_mb()))

    t = time.perf_counter()
    reused = ks_drift(profile, cur)
    t_reused = time.perf_counter() - t
    rows.append(("ks_drift (reused profile)", t_reused, peak_rss_mb()))

    t = time.perf_counter()
    expected = {c: ks_2samp(ref[c].dropna().to_numpy(), cur[c].dropna().to_numpy(), method="auto") for c in ref.columns}
    t_scipy = time.perf_counter() - t
    rows.append(("scipy ks_2samp loop", t_scipy, peak_rss_mb()))

    def max_diff(report):
        dd = max(abs(report.feature(c).statistic - float(r.statistic)) for c, r in expected.items())
        dp = max(abs(report.feature(c).p_value - float(r.pvalue)) for c, r in expected.items())
        return dd, dp

    (dd_f, dp_f), (dd_r, dp_r) = max_diff(fresh), max_diff(reused)

    print(f"{N_FEATURES} features, {N_REF:,} reference rows, {N_CUR:,} current rows, cpus={os.cpu_count()}")
    print(f"input frames {input_mb:.0f} MiB; peak RSS after building them {rss_inputs:.0f} MiB")
    print(f"{'phase':<28}{'seconds':>9}{'speed-up':>10}{'peak RSS MiB':>14}")
    for name, secs, rss in rows:
        print(f"{name:<28}{secs:>9.2f}{t_scipy / secs:>9.1f}x{rss:>14.0f}")
    print(f"max |dD| fresh {dd_f:.3g}, reused {dd_r:.3g}; max |dp| fresh {dp_f:.3g}, reused {dp_r:.3g}")
    print("drifted (bonferroni, alpha 0.05):", [f.name for f in fresh.drifted])

    # memory of ks_drift itself: numpy reports its buffers to tracemalloc, so the traced peak is what
    # one fresh check allocates on top of the inputs (timed runs above are untraced)
    import tracemalloc

    tracemalloc.start()
    ks_drift(ref, cur)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    traced_mb = traced_peak / 2**20
    print(f"ks_drift (fresh) allocates at most {traced_mb:.0f} MiB beyond its inputs "
          f"({traced_mb / input_mb:.2f}x the {input_mb:.0f} MiB of input; goal: within about 2x)")

    print(f"Evidently: {evidently_status()}")

    identical = max(dd_f, dp_f, dd_r, dp_r) <= 1e-12
    ok_fresh = t_scipy / t_fresh >= GOAL_FRESH
    ok_reused = t_scipy / t_reused >= GOAL_REUSED
    verdict = lambda ok: "MET" if ok else "NOT MET"  # noqa: E731
    print(f"statistics identical to scipy (<= 1e-12): {verdict(identical)}")
    print(f"goal >= {GOAL_FRESH:.0f}x fresh: {t_scipy / t_fresh:.1f}x {verdict(ok_fresh)}")
    print(f"goal >= {GOAL_REUSED:.0f}x reused profile: {t_scipy / t_reused:.1f}x {verdict(ok_reused)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

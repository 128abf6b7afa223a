"""Pure statistics of the drift check: per-feature two-sample tests and a multiple-testing correction.

No Prefect import; numpy at import time, pandas and scipy on first use, so the module imports fast.

Numerical features (``is_numeric_dtype``, not bool, not complex) get the two-sample Kolmogorov-Smirnov
test. The statistic and p-value equal ``scipy.stats.ks_2samp(a, b, method="auto")`` on the NaN-dropped
columns: exact distribution when ``max(n1, n2) <= 10000`` (falling back to the asymptotic one when the
exact computation fails, as scipy does, and then reporting scipy's rounded ``h / lcm`` statistic), the
asymptotic ``kstwo.sf(d, round(n1*n2/(n1+n2)))`` otherwise. D is computed here from the sorted samples
(the reference can be sorted once, in a :class:`ReferenceProfile`, and reused); the p-value comes from
scipy's own functions, called the way ``ks_2samp`` calls them.

Categorical features (bool, object, string, category) get Pearson's chi-square test of the 2 x k table of
category counts (``scipy.stats.chi2_contingency`` with its defaults, so Yates' continuity correction
applies when k = 2); categories seen on one side only are included. NaN/NA values are dropped and counted.

A tested feature drifts when its adjusted p-value < ``alpha`` AND its effect size >= ``min_statistic``.
The effect size is D for KS (the statistic itself) and Cramér's V = sqrt(chi2 / N) for chi-square
(N = total count of non-missing values on both sides; V = 0 when only one category exists), since a
raw chi2 statistic grows with the sample size and cannot carry a fixed threshold.

Corrections across the m tested (non-skipped) features: ``"none"``, ``"bonferroni"`` (min(1, p*m)) and
``"fdr_bh"`` (Benjamini-Hochberg step-up adjusted p-values, monotone, capped at 1).

Dataset drift: any feature drifted, or, when ``drift_share`` is given, the share of drifted features
among the tested features >= ``drift_share`` (False when nothing could be tested).

A feature that cannot be tested is reported with ``test="skipped"`` and a ``reason``; it never raises.
"""

from __future__ import annotations

import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Iterable, Literal, Mapping, get_args

import numpy as np

from flows import smirnov

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

Correction = Literal["none", "bonferroni", "fdr_bh"]
TestName = Literal["ks", "chi2", "skipped"]
Kind = Literal["numeric", "categorical", "unsupported"]

MAX_EXACT_N = 10000  # scipy's MAX_AUTO_N: 'auto' is exact when max(n1, n2) <= this
_EXACT_INT_LIMIT = 2**50  # n1*n2 below this: D located in int64 arithmetic (see ks_statistic)


# --------------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's test, with its evidence. ``reason`` is None unless the feature was skipped."""

    name: str
    test: TestName
    statistic: float | None
    p_value: float | None
    p_value_adjusted: float | None
    drifted: bool
    n_reference: int
    n_current: int
    nan_reference: int
    nan_current: int
    reason: str | None = None
    effect: float | None = None  # D for KS, Cramér's V for chi2: compared with min_statistic

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "test": self.test,
            "statistic": self.statistic,
            "p_value": self.p_value,
            "p_value_adjusted": self.p_value_adjusted,
            "drifted": self.drifted,
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "nan_reference": self.nan_reference,
            "nan_current": self.nan_current,
            "reason": self.reason,
            "effect": self.effect,
        }


@dataclass(frozen=True)
class DriftReport:
    drift_detected: bool
    alpha: float
    correction: Correction
    min_statistic: float
    drift_share: float | None
    features: tuple[FeatureDrift, ...]

    @property
    def drifted(self) -> tuple[FeatureDrift, ...]:
        return tuple(f for f in self.features if f.drifted)

    @property
    def skipped(self) -> tuple[FeatureDrift, ...]:
        return tuple(f for f in self.features if f.test == "skipped")

    def feature(self, name: str) -> FeatureDrift:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "drift_detected": self.drift_detected,
            "alpha": self.alpha,
            "correction": self.correction,
            "min_statistic": self.min_statistic,
            "drift_share": self.drift_share,
            "features": [f.to_dict() for f in self.features],
        }


# --------------------------------------------------------------------------------------------------
# Reference profile


@dataclass(frozen=True)
class NumericProfile:
    """Sorted NaN-free values of one numerical column, as distinct values plus cumulative counts.

    ``cum`` is None when there are no ties: then ``values`` is the whole sorted sample and the count of
    values <= values[i] is i + 1 (no extra memory for continuous data).
    """

    values: np.ndarray
    cum: np.ndarray | None
    n: int
    nan: int

    def count_le(self, keys: np.ndarray) -> np.ndarray:
        """How many sample values are <= each key (``searchsorted(sample, keys, 'right')``)."""
        idx = np.searchsorted(self.values, keys, side="right")
        if self.cum is None:
            return idx
        out = np.zeros(idx.shape, dtype=np.int64)
        nz = idx > 0
        out[nz] = self.cum[idx[nz] - 1]
        return out

    def own_counts(self) -> np.ndarray:
        if self.cum is None:
            return np.arange(1, self.n + 1, dtype=np.int64)
        return self.cum


@dataclass(frozen=True)
class CategoricalProfile:
    counts: Mapping[Any, int]
    n: int
    nan: int


@dataclass(frozen=True)
class _Column:
    kind: Kind
    dtype: str
    total: int  # rows, including missing values
    numeric: NumericProfile | None = None
    categorical: CategoricalProfile | None = None
    reason: str | None = None  # why it cannot be tested on this side


@dataclass(frozen=True)
class ReferenceProfile:
    """A reference dataset reduced to what the tests need; build it once with :func:`profile_reference`
    and pass it to :func:`ks_drift` in place of the reference DataFrame."""

    n_rows: int
    columns: Mapping[str, _Column] = field(repr=False)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(self.columns)


def _kind(dtype: Any) -> Kind:
    import pandas as pd
    from pandas.api import types as pt

    if pt.is_bool_dtype(dtype):
        return "categorical"
    if pt.is_complex_dtype(dtype):
        return "unsupported"
    if pt.is_numeric_dtype(dtype):
        return "numeric"
    if isinstance(dtype, pd.CategoricalDtype) or pt.is_object_dtype(dtype) or pt.is_string_dtype(dtype):
        return "categorical"
    return "unsupported"


def _sorted_numeric(series: pd.Series) -> NumericProfile:
    """Sort one column (one copy), drop NaN/NA, collapse ties into cumulative counts."""
    dtype = series.dtype
    total = len(series)
    if isinstance(dtype, np.dtype):
        arr = series.to_numpy()
    else:  # pandas nullable / arrow numeric: NA -> dropped first
        s = series.dropna()
        np_dtype = getattr(dtype, "numpy_dtype", np.dtype("float64"))
        arr = s.to_numpy(dtype=np_dtype)
    if arr.dtype.kind not in "iuf":
        arr = arr.astype(np.float64)
    x = np.sort(arr)  # the one copy; NaN sort last
    if x.dtype.kind == "f" and x.size and np.isnan(x[-1]):
        x = x[: int(np.searchsorted(x, np.nan, side="left"))]
    n = int(x.size)
    nan = total - n
    if n > 1:
        breaks = x[1:] != x[:-1]
        if not breaks.all():
            ends = np.flatnonzero(breaks)
            ends = np.append(ends, n - 1)
            values = x[ends]
            cum = ends + 1
            x.setflags(write=False)
            values.setflags(write=False)
            cum.setflags(write=False)
            return NumericProfile(values=values, cum=cum, n=n, nan=nan)
    x.setflags(write=False)
    return NumericProfile(values=x, cum=None, n=n, nan=nan)


def _categorical_counts(series: pd.Series) -> CategoricalProfile:
    vc = series.value_counts(dropna=True, sort=False)
    vc = vc[vc > 0]
    counts = {k: int(v) for k, v in vc.items()}
    n = int(sum(counts.values()))
    return CategoricalProfile(counts=MappingProxyType(counts), n=n, nan=len(series) - n)


def _profile_column(df: pd.DataFrame, name: Any, side: str) -> _Column:
    total = len(df)
    if not df.columns.is_unique and int((df.columns == name).sum()) > 1:
        return _Column("unsupported", "duplicate", total, reason=f"column name {name!r} is duplicated in {side}")
    series = df[name]
    kind = _kind(series.dtype)
    dtype = str(series.dtype)
    if kind == "unsupported":
        return _Column(kind, dtype, total, reason=f"unsupported dtype {dtype} in {side}")
    if kind == "numeric":
        return _Column(kind, dtype, total, numeric=_sorted_numeric(series))
    return _Column(kind, dtype, total, categorical=_categorical_counts(series))


def _workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def _profile_columns(df: pd.DataFrame, names: Iterable[Any], side: str) -> dict[Any, _Column]:
    names = list(names)
    with ThreadPoolExecutor(max_workers=_workers()) as pool:
        cols = list(pool.map(lambda c: _profile_column(df, c, side), names))
    return dict(zip(names, cols))


def profile_reference(df: pd.DataFrame, columns: Iterable[Any] | None = None) -> ReferenceProfile:
    """Sorted NaN-free numerical arrays and categorical counts of ``df`` (not mutated)."""
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a pandas DataFrame, got {type(df).__name__}")
    if columns is None:
        names = list(dict.fromkeys(df.columns))
    else:
        names = _check_columns(columns)
        missing = [c for c in names if c not in df.columns]
        if missing:
            raise ValueError(f"columns: not in the reference: {missing!r}")
    return ReferenceProfile(n_rows=len(df), columns=MappingProxyType(_profile_columns(df, names, "reference")))


# --------------------------------------------------------------------------------------------------
# Tests


def ks_statistic(ref: NumericProfile, cur: NumericProfile) -> float:
    """max |F_ref - F_cur| over all sample points, with the same float operations as ``ks_2samp``.

    One ``searchsorted`` of the current sample's distinct values into the reference suffices: at each
    current value c_k the two CDFs are compared directly, and between c_(k-1) and c_k the current CDF
    is flat while the reference CDF climbs to (reference values < c_k), so the largest gap there is
    reached just before c_k. Every candidate is a ``count1/n1 - count2/n2`` that ``ks_2samp`` also
    forms, and the maximising one is always among them, so D is the same float.
    """
    n1, n2 = ref.n, cur.n
    rv, cv = ref.values, cur.values
    cc = cur.own_counts()
    idx = np.searchsorted(rv, cv, side="right")  # distinct reference values <= c_k
    # c_k equals the largest reference value <= it: then "< c_k" counts one distinct value fewer
    # (few, reused buffers: fresh multi-MB temporaries cost page faults on every call)
    work = np.subtract(idx, 1)
    np.maximum(work, 0, out=work)
    equal = rv.take(work) == cv
    equal &= idx > 0
    idx_left = np.subtract(idx, equal, out=work)  # distinct reference values < c_k
    if ref.cum is None:
        le, lt = idx, idx_left
    else:
        counts = np.concatenate(([0], ref.cum))
        le, lt = counts[idx], counts[idx_left]

    def before(k: np.ndarray) -> np.ndarray:  # current count just below c_k: cc[k-1], 0 for k = 0
        return np.where(k > 0, cc[np.maximum(k - 1, 0)], 0)

    if n1 * n2 >= _EXACT_INT_LIMIT:
        at_points = np.abs(le / n1 - cc / n2).max()
        in_gaps = (lt / n1 - before(np.arange(n2)) / n2).max()
        return float(max(at_points, in_gaps))
    # Find the largest gap exactly in integers (count1*n2 - count2*n1, no float division over the
    # whole column), then form the float D only at the positions reaching it, with ks_2samp's own
    # operations. Distinct gaps differ by at least 1/(n1*n2), far more than a float rounding, so the
    # float maximum is among those positions; taking the float max over all of them keeps ties exact.
    cn1 = cc * n1
    at = le * n2
    at -= cn1
    gaps = lt * n2
    gaps[1:] -= cn1[:-1]
    best = max(int(at.max()), -int(at.min()), int(gaps.max()))
    k_at = np.flatnonzero(np.abs(at, out=at) == best)
    k_gap = np.flatnonzero(gaps == best)
    values = [np.abs(le[k_at] / n1 - cc[k_at] / n2), lt[k_gap] / n1 - before(k_gap) / n2]
    return float(max(v.max() for v in values if v.size))


def ks_pvalue(d: float, n1: int, n2: int) -> tuple[float, float, str]:
    """(statistic, p-value, method) exactly as ``ks_2samp(method="auto")`` derives them from D."""
    from scipy.stats import distributions
    from scipy.stats._stats_py import _attempt_exact_2kssamp

    mode = "exact" if max(n1, n2) <= MAX_EXACT_N else "asymp"
    prob = -np.inf
    if mode == "exact":
        g = math.gcd(n1, n2)
        success, d, prob = _attempt_exact_2kssamp(n1, n2, g, d, "two-sided")
        if not success:
            mode = "asymp"
    if mode == "asymp":
        m, n = sorted([float(n1), float(n2)], reverse=True)
        en = m * n / (m + n)
        n_eff = np.round(en)
        if smirnov.in_fast_range(int(n_eff), float(d)) and 1.0 < n_eff * d < n_eff - 1:
            # kstwo.sf's own branch for this range is 2 * scipy.special.smirnov(n, d): the same
            # series, vectorised (flows/smirnov.py), instead of scipy's scalar loop
            prob = np.float64(min(1.0, max(0.0, 2 * smirnov.smirnov(int(n_eff), float(d)))))
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                prob = distributions.kstwo.sf(d, n_eff)
    prob = np.clip(prob, 0, 1)
    return float(np.float64(d)), float(prob), mode


def chi2_test(ref: CategoricalProfile, cur: CategoricalProfile) -> tuple[float, float, float]:
    """(chi2, p-value, Cramér's V) of the 2 x k table of category counts."""
    from scipy.stats import chi2_contingency

    cats = list(dict.fromkeys([*ref.counts, *cur.counts]))
    table = np.array([[ref.counts.get(c, 0) for c in cats], [cur.counts.get(c, 0) for c in cats]], dtype=np.int64)
    if len(cats) < 2:  # one category on both sides: identical distributions
        return 0.0, 1.0, 0.0
    res = chi2_contingency(table)
    stat, p = float(res.statistic), float(res.pvalue)
    v = math.sqrt(stat / table.sum()) if table.sum() else 0.0
    return stat, p, v


def adjust_pvalues(p: Iterable[float], correction: Correction) -> np.ndarray:
    """Adjusted p-values: none, Bonferroni min(1, p*m), or Benjamini-Hochberg (monotone, capped at 1)."""
    p = np.asarray(list(p), dtype=np.float64)
    m = p.size
    if correction not in get_args(Correction):
        raise ValueError(f"correction must be one of {get_args(Correction)}, got {correction!r}")
    if m == 0 or correction == "none":
        return p.copy()
    if correction == "bonferroni":
        return np.minimum(1.0, p * m)
    order = np.argsort(p, kind="stable")
    ranked = p[order] * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(1.0, ranked)
    return out


# --------------------------------------------------------------------------------------------------
# Entry point


def _check_columns(columns: Any) -> list[Any]:
    if isinstance(columns, (str, bytes)) or not isinstance(columns, Iterable):
        raise ValueError(f"columns must be a list of column names, got {columns!r}")
    names = list(dict.fromkeys(columns))
    if not names:
        raise ValueError("columns must not be empty")
    return names


def _check_args(alpha: Any, correction: Any, min_statistic: Any, drift_share: Any) -> None:
    def real(x: Any) -> bool:
        return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))

    if not real(alpha) or not (0.0 < float(alpha) < 1.0):
        raise ValueError(f"alpha must be a number in (0, 1), got {alpha!r}")
    if correction not in get_args(Correction):
        raise ValueError(f"correction must be one of {get_args(Correction)}, got {correction!r}")
    if not real(min_statistic) or not (float(min_statistic) >= 0.0) or math.isinf(float(min_statistic)):
        raise ValueError(f"min_statistic must be a finite number >= 0, got {min_statistic!r}")
    if drift_share is not None and (not real(drift_share) or not (0.0 < float(drift_share) <= 1.0)):
        raise ValueError(f"drift_share must be None or a number in (0, 1], got {drift_share!r}")


def check_options(*, alpha: Any = 0.05, correction: Any = "bonferroni", min_statistic: Any = 0.0,
                  drift_share: Any = None) -> None:
    """Validate the options of :func:`ks_drift`; a ValueError names the bad argument."""
    _check_args(alpha, correction, min_statistic, drift_share)


def _skip(name: Any, reason: str, ref: _Column | None, cur: _Column | None) -> FeatureDrift:
    def counts(c: _Column | None) -> tuple[int, int]:
        if c is None:
            return 0, 0
        prof = c.numeric or c.categorical
        return (prof.n, prof.nan) if prof is not None else (0, c.total)

    (nr, mr), (nc, mc) = counts(ref), counts(cur)
    return FeatureDrift(str(name), "skipped", None, None, None, False, nr, nc, mr, mc, reason=reason)


def _why_untestable(name: Any, ref: _Column | None, cur: _Column | None) -> str | None:
    if ref is None and cur is None:
        return f"column {name!r} missing in reference and current"
    if ref is None:
        return f"column {name!r} missing in reference"
    if cur is None:
        return f"column {name!r} missing in current"
    for side, c in (("reference", ref), ("current", cur)):
        if c.reason:
            return c.reason
    if ref.kind != cur.kind:
        return f"dtype mismatch: reference {ref.dtype} ({ref.kind}) vs current {cur.dtype} ({cur.kind})"
    for side, c in (("reference", ref), ("current", cur)):
        prof = c.numeric or c.categorical
        if c.total == 0:
            return f"{side} is empty (0 rows)"
        if prof is not None and prof.n == 0:
            return f"all {c.total} values are NaN/missing in {side}"
    return None


def _test_one(name: Any, ref: _Column | None, cur: _Column | None) -> tuple[FeatureDrift, float | None]:
    """An unadjusted result (p_value_adjusted filled later) and its effect size."""
    reason = _why_untestable(name, ref, cur)
    if reason is not None:
        return _skip(name, reason, ref, cur), None
    assert ref is not None and cur is not None
    if ref.kind == "numeric":
        r, c = ref.numeric, cur.numeric
        assert r is not None and c is not None
        d = ks_statistic(r, c)
        stat, p, _mode = ks_pvalue(d, r.n, c.n)
        effect = stat
        test: TestName = "ks"
    else:
        r, c = ref.categorical, cur.categorical  # type: ignore[assignment]
        assert r is not None and c is not None
        stat, p, effect = chi2_test(r, c)  # type: ignore[arg-type]
        test = "chi2"
    return FeatureDrift(str(name), test, stat, p, None, False, r.n, c.n, r.nan, c.nan, None, effect), effect


def ks_drift(
    reference: pd.DataFrame | ReferenceProfile,
    current: pd.DataFrame,
    *,
    alpha: float = 0.05,
    correction: Correction = "bonferroni",
    min_statistic: float = 0.0,
    columns: Iterable[Any] | None = None,
    drift_share: float | None = None,
) -> DriftReport:
    """Test every feature for drift between ``reference`` (a DataFrame or a :class:`ReferenceProfile`)
    and ``current``. Neither input is mutated. See the module docstring for the rules."""
    import pandas as pd

    _check_args(alpha, correction, min_statistic, drift_share)
    if not isinstance(current, pd.DataFrame):
        raise TypeError(f"current must be a pandas DataFrame, got {type(current).__name__}")
    if isinstance(reference, ReferenceProfile):
        ref_names = list(reference.columns)
    elif isinstance(reference, pd.DataFrame):
        ref_names = list(dict.fromkeys(reference.columns))
    else:
        raise TypeError(f"reference must be a pandas DataFrame or a ReferenceProfile, got {type(reference).__name__}")
    cur_names = list(dict.fromkeys(current.columns))

    if columns is None:
        names = list(dict.fromkeys([*ref_names, *cur_names]))
    else:
        names = _check_columns(columns)
        known = set(ref_names) | set(cur_names)
        unknown = [c for c in names if c not in known]
        if unknown:
            raise ValueError(f"columns: not in reference nor current: {unknown!r}")

    ref_set, cur_set = set(ref_names), set(cur_names)

    def task(name: Any) -> tuple[FeatureDrift, float | None]:
        if isinstance(reference, ReferenceProfile):
            ref_col = reference.columns.get(name)
        else:
            ref_col = _profile_column(reference, name, "reference") if name in ref_set else None
        cur_col = _profile_column(current, name, "current") if name in cur_set else None
        return _test_one(name, ref_col, cur_col)

    if len(names) > 1 and _workers() > 1:
        with ThreadPoolExecutor(max_workers=_workers()) as pool:
            raw = list(pool.map(task, names))
    else:
        raw = [task(n) for n in names]

    tested = [i for i, (f, _) in enumerate(raw) if f.test != "skipped"]
    adjusted = adjust_pvalues([raw[i][0].p_value for i in tested], correction)  # type: ignore[misc]
    features = [f for f, _ in raw]
    alpha_f, min_f = float(alpha), float(min_statistic)
    for i, adj in zip(tested, adjusted):
        f, effect = raw[i]
        drifted = bool(adj < alpha_f and effect is not None and effect >= min_f)
        features[i] = FeatureDrift(
            f.name, f.test, f.statistic, f.p_value, float(adj), drifted,
            f.n_reference, f.n_current, f.nan_reference, f.nan_current, None, f.effect,
        )
    n_drifted = sum(f.drifted for f in features)
    if drift_share is None:
        detected = n_drifted > 0
    else:
        detected = bool(tested) and n_drifted / len(tested) >= float(drift_share)
    return DriftReport(
        drift_detected=bool(detected),
        alpha=alpha_f,
        correction=correction,
        min_statistic=min_f,
        drift_share=None if drift_share is None else float(drift_share),
        features=tuple(features),
    )


__all__ = [
    "Correction",
    "DriftReport",
    "FeatureDrift",
    "ReferenceProfile",
    "adjust_pvalues",
    "chi2_test",
    "ks_drift",
    "ks_pvalue",
    "ks_statistic",
    "profile_reference",
]


# --------------------------------------------------------------------------------------------------
# CLI: python -m flows.drift --reference REF --current CUR [...] --json


def main(argv: list[str] | None = None) -> int:
    """Run the drift-check flow ad hoc and print its report; exit 0 drift or not (3 on drift with
    --fail-on-drift, for a pipeline step that must stop), 2 on bad input, 1 on anything else."""
    import argparse
    import json
    import sys

    p = argparse.ArgumentParser(prog="python -m flows.drift", description="Two-sample drift check of a dataset.")
    p.add_argument("--reference", required=True, help="reference data: path (.csv, .parquet), gs://..., or W&B entity/project/name:alias")
    p.add_argument("--current", required=True, help="current data, same forms as --reference")
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--correction", choices=list(get_args(Correction)), default="bonferroni")
    p.add_argument("--min-statistic", type=float, default=0.0, help="effect-size floor (KS D; Cramér's V for chi2)")
    p.add_argument("--drift-share", type=float, default=None, help="dataset drift when this share of features drifts")
    p.add_argument("--columns", default=None, help="comma-separated columns to test (default: all)")
    p.add_argument("--wandb-block", default=None, help="a saved WandbCredentials block")
    p.add_argument("--no-wandb", action="store_true", help="do not log the report to W&B")
    p.add_argument("--json", action="store_true", help="print the report as one JSON document")
    p.add_argument("--target", default=None,
                   help="the label column: reported as label shift, apart from the features")
    p.add_argument("--plot-all", action="store_true",
                   help="draw every tested feature's distributions in the summary artifact, not only the drifted")
    p.add_argument("--fail-on-drift", action="store_true",
                   help="exit 3 when drift is detected (a decision that stops a pipeline), instead of 0")
    p.add_argument("--coerce-numeric", action="store_true",
                   help="read non-numeric cells of numeric columns as missing instead of refusing the table")
    args = p.parse_args(argv)
    columns = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
    try:
        check_options(alpha=args.alpha, correction=args.correction, min_statistic=args.min_statistic,
                      drift_share=args.drift_share)
    except ValueError as exc:
        print(f"drift-check: {exc}", file=sys.stderr)
        return 2

    import contextlib
    import io

    from flows._cli import prepare_prefect_env

    prepare_prefect_env()
    from blocks.wandb import WandbConfigError
    from flows.drift_check import drift_check

    captured = io.StringIO()
    try:
        # Prefect and W&B may print to stdout: keep it for the one JSON document
        with contextlib.redirect_stdout(captured):
            result = drift_check(reference=args.reference, current=args.current, alpha=args.alpha,
                                 correction=args.correction, min_statistic=args.min_statistic,
                                 drift_share=args.drift_share, columns=columns, wandb_block=args.wandb_block,
                                 log_wandb=not args.no_wandb, coerce_numeric=args.coerce_numeric,
                                 target=args.target, plot_all=args.plot_all)
    except (FileNotFoundError, ValueError, ImportError, PermissionError, IsADirectoryError,
            WandbConfigError) as exc:
        sys.stderr.write(captured.getvalue())
        print(f"drift-check: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - report, don't dump a traceback on the operator
        sys.stderr.write(captured.getvalue())
        print(f"drift-check failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    sys.stderr.write(captured.getvalue())
    if args.json:
        print(json.dumps(result))
    else:
        drifted = [f["name"] for f in result["features"] if f["drifted"]]
        print(f"drift {'DETECTED' if result['drift_detected'] else 'not detected'}"
              + (f": {', '.join(map(str, drifted))}" if drifted else ""))
    if args.fail_on_drift and result["drift_detected"]:
        drifted = [str(f["name"]) for f in result["features"] if f["drifted"]]
        print(f"drift-check: drift detected in {', '.join(drifted) or 'the dataset'} (--fail-on-drift: exit 3)",
              file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

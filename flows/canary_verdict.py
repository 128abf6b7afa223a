"""The canary's verdict on its looks, as pure functions (no Prefect, no I/O).

    verdict = assess_looks(looks, CanaryPolicy(), alphas)   # what flows.canary_judge.Judge calls
    verdict.decision            # Decision.ADVANCE | Decision.HOLD | Decision.ROLLBACK
    verdict.reasons, verdict.rows()

A look compares what the canary served with what the stable version served over the same windows
(both arms receive live traffic at the same time, Kayenta's "baseline deployed at the same time"),
every window since the canary started, stratified by window (why: flows.canary_judge):

* **requests** - both arms need ``min_requests`` (over all windows) before any verdict other than
  HOLD. Missing data is never a pass. When the canary carries all traffic (``stable=None`` in the
  latest look) it is judged alone on the absolute guards (the reasons say so). A stable arm with 0
  requests is *not* read as "100%": it holds, since a comparison that lost its baseline must not pass.
* **error rate vs stable** - exact one-sided test that the canary errs more: Fisher's exact test for
  one window (Barnard's, more powerful, under ``BARNARD_MAX_TOTAL`` requests), the exact stratified
  (Cochran-Mantel-Haenszel) test over several (`stratified_error_p`). Fails when p < the look's alpha
  and the increase is at least ``min_error_increase`` (absolute).
* **error rate ceiling** - the latest window's canary error rate over ``max_error_rate`` while stable is
  within it fails even before the test is significant (a guard). When *both* versions are over the
  ceiling and the canary is not significantly worse, it is an upstream problem: HOLD, not ROLLBACK.
* **latency vs stable** - once both arms have ``min(min_requests, 20)`` samples: one-sided Mann-Whitney U
  (one window) or van Elteren's stratified Wilcoxon (`van_elteren_p`); fails when p < alpha AND the
  canary's median is at least ``1 + min_latency_increase`` times stable's (on huge samples everything
  is significant). Without enough samples latency is "not judged" (said in the reasons), not a hold.
* **p95 latency ceiling** (only when ``max_p95_latency_ms`` is set) - as the error ceiling.
* **predictions vs stable** - a model can fail answering 200: once both arms report ``MIN_PREDICTION_SAMPLES``
  predictions, the scores by two-sample KS per window (Fisher-combined, `score_shift_p`) and the
  predicted classes by chi-square (summed over windows, `class_shift_p`), each at half of the
  predictions alpha; fails when significant AND the shift's lower confidence bound (KS distance less
  its sampling margin; the largest class-share difference less its interval) is at least
  ``min_prediction_shift``. An endpoint that reports no predictions (Vertex AI's metrics) gets "not
  judged" in the reasons.

Any failing check -> ROLLBACK; else any hold -> HOLD; else ADVANCE. Reasons name values and limits,
failures first. `assess_step` judges one window on its own (``alpha_scale`` multiplies the alphas);
the rollout's sequential control is `flows.canary_judge`. ``seed_rule`` is the seed's rule (canary
error rate > 5% -> ROLLBACK), kept for the benchmark.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from enum import Enum
from typing import Any, Literal, get_args

from blocks.endpoint import ArmStats

__all__ = ["BARNARD_MAX_TOTAL", "Alphas", "CanaryPolicy", "Check", "Decision", "Look", "StepVerdict",
           "assess_looks", "assess_step", "class_shift_p", "score_shift_p", "stratified_error_p", "van_elteren_p",
           "parse_duration", "seed_rule", "summarise"]

Strategy = Literal["canary", "shadow", "blue-green", "immediate"]
OnHoldLimit = Literal["rollback", "pause"]
OnResume = Literal["continue", "rollback"]
Outcome = Literal["pass", "fail", "hold", "not judged"]

#: below this many requests on both arms together, Barnard's exact test replaces Fisher's (it is slow)
BARNARD_MAX_TOTAL = 200
#: latency is compared once both arms have min(min_requests, this) samples
MIN_LATENCY_SAMPLES = 20
#: predictions are compared once both arms have this many (scores or classes)
MIN_PREDICTION_SAMPLES = 50

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([smhd])")


# --------------------------------------------------------------------------------------------------
# Parsing helpers


def parse_duration(text: Any, *, what: str = "duration") -> float:
    """Seconds from a number (seconds) or a string: "300", "90s", "5m", "1h", "1.5h", "1h30m", "2d".

    Raises ValueError naming `what` and the value when it is not a non-negative finite duration."""
    hint = "use seconds (300) or numbers with units s, m, h, d ('90s', '5m', '1h', '1h30m')"
    if isinstance(text, bool):
        raise ValueError(f"{what} must be a duration, got {text!r}; {hint}")
    if isinstance(text, (int, float)):
        seconds = float(text)
    elif isinstance(text, str):
        s = text.strip().lower()
        try:
            seconds = float(s)
        except ValueError:
            compact = s.replace(" ", "")
            parts = _DURATION.findall(compact)
            if not parts or "".join(n + u for n, u in parts) != compact or len({u for _, u in parts}) != len(parts):
                raise ValueError(f"{what}: cannot read {text!r} as a duration; {hint}") from None
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    else:
        raise ValueError(f"{what} must be a duration, got {text!r}; {hint}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{what} must be a finite duration >= 0, got {text!r}")
    return seconds


def _parse_steps(value: Any) -> tuple[int, ...]:
    if isinstance(value, str):
        items: list[Any] = [v.strip() for v in value.replace(";", ",").split(",") if v.strip()]
        try:
            items = [int(v.rstrip("%")) for v in items]
        except ValueError:
            raise ValueError(f"steps must be integer percents like '10,30,50,100', got {value!r}") from None
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise ValueError(f"steps must be a list of integer percents, got {value!r}")
    if not items:
        raise ValueError("steps must not be empty; the last step must be 100")
    for v in items:
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 100:
            raise ValueError(f"steps must be integer percents in 1..100, got {v!r} in {value!r}")
    steps = tuple(items)
    if any(b <= a for a, b in zip(steps, steps[1:])):
        raise ValueError(f"steps must be strictly increasing, got {list(steps)}")
    if steps[-1] != 100:
        raise ValueError(f"steps must end at 100 (the canary takes all traffic last), got {list(steps)}")
    return steps


def _number(value: Any, what: str) -> float:
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ValueError(f"{what} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def _integer(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {value}")
    return value


def _boolean(value: Any, what: str) -> bool:
    if isinstance(value, str) and value.strip().lower() in {"true", "yes", "1", "false", "no", "0"}:
        return value.strip().lower() in {"true", "yes", "1"}
    if not isinstance(value, bool):
        raise ValueError(f"{what} must be true or false, got {value!r}")
    return value


# --------------------------------------------------------------------------------------------------
# Policy


@dataclass(frozen=True)
class CanaryPolicy:
    """How a new model version takes traffic, and when it is rolled back (validated on creation).

    Defaults: the seed's steps 10 -> 30 -> 50 -> 100 with 5-minute bakes. Each alpha is a budget for the
    whole rollout (spent over the looks, flows.canary_judge): error_alpha 0.01, latency_alpha 0.005,
    prediction_alpha 0.005, so a canary equal to stable is rolled back in at most 2% of rollouts
    whatever the traffic. With 18 requests/s of total traffic (5,400 requests per bake) the default
    policy catches 1% -> 2% errors, +30% latency, a constant-class model and scores shifted by +1 in
    log-odds before the canary takes 100% in >= 95% of rollouts (``bench/canary.py``, README table).
    min_requests 100 only keeps the guards off tiny samples; it never binds at that traffic.
    """

    strategy: Strategy = "canary"
    #: traffic percents for the canary, strictly increasing, ending at 100 (only for strategy "canary")
    steps: tuple[int, ...] = (10, 30, 50, 100)
    #: how long each step below 100% serves before it is judged (a HOLD bakes it once more)
    bake_seconds: float = 300.0
    #: how long the canary serves 100% before the old version is undeployed (it stays deployed till then)
    final_bake_seconds: float = 300.0
    #: requests each arm must have served before any verdict other than HOLD
    min_requests: int = 100
    #: one-sided exact test "canary error proportion > stable's"
    error_alpha: float = 0.01
    #: one-sided Mann-Whitney U / van Elteren "canary latencies > stable's"
    latency_alpha: float = 0.005
    #: canary vs stable predictions on the same traffic: KS on scores, chi-square on classes (half each)
    prediction_alpha: float = 0.005
    #: effect floor for predictions: a shift fails only when its lower confidence bound is at least this
    #: (KS distance D for scores, the largest class-share difference for classes)
    min_prediction_shift: float = 0.05
    #: relative effect floor on the median latency: a significant slowdown smaller than this is no failure
    min_latency_increase: float = 0.10
    #: absolute effect floor on the error-rate difference (0: any significant increase fails)
    min_error_increase: float = 0.0
    #: absolute guards
    max_error_rate: float = 0.05
    max_p95_latency_ms: float | None = None
    #: roll back at the failure_limit-th ROLLBACK verdict (the earlier ones bake the step again)
    failure_limit: int = 1
    #: HOLDs in a row at one step before `on_hold_limit` applies
    hold_limit: int = 3
    on_hold_limit: OnHoldLimit = "rollback"
    #: a rerun that finds the canary already taking traffic (the last run crashed): go on from the
    #: current step, or roll back
    on_resume: OnResume = "continue"
    #: the whole rollout, first traffic to old version undeployed
    deadline_seconds: float = 3600.0
    #: a human approves before the first traffic / before the canary takes 100%
    require_approval: bool = False
    approve_before_full: bool = False
    approval_timeout_seconds: float = 3600.0
    #: close the review issue (as completed) once its version is promoted
    close_issue_on_promote: bool = False

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        if self.strategy not in get_args(Strategy):
            raise ValueError(f"strategy must be one of {', '.join(map(repr, get_args(Strategy)))}, "
                             f"got {self.strategy!r}")
        set_("steps", _parse_steps(self.steps))
        for name in ("bake_seconds", "final_bake_seconds", "deadline_seconds", "approval_timeout_seconds"):
            set_(name, parse_duration(getattr(self, name), what=name))
        for name in ("deadline_seconds", "approval_timeout_seconds"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        set_("min_requests", _integer(self.min_requests, "min_requests", 1))
        for name in ("error_alpha", "latency_alpha", "prediction_alpha"):
            value = _number(getattr(self, name), name)
            if not 0 < value < 1:
                raise ValueError(f"{name} must be between 0 and 1 (exclusive), got {value}")
            set_(name, value)
        for name, upper in (("min_latency_increase", math.inf), ("min_error_increase", 1.0),
                            ("min_prediction_shift", 1.0)):
            value = _number(getattr(self, name), name)
            if not 0 <= value < upper:
                raise ValueError(f"{name} must be >= 0{'' if upper == math.inf else ' and < 1'}, got {value}")
            set_(name, value)
        rate = _number(self.max_error_rate, "max_error_rate")
        if not 0 < rate <= 1:
            raise ValueError(f"max_error_rate must be a fraction in (0, 1] (0.05 = 5%), got {rate}")
        set_("max_error_rate", rate)
        if self.max_p95_latency_ms is not None:
            p95 = _number(self.max_p95_latency_ms, "max_p95_latency_ms")
            if p95 <= 0:
                raise ValueError(f"max_p95_latency_ms must be > 0 ms (or None for no ceiling), got {p95}")
            set_("max_p95_latency_ms", p95)
        set_("failure_limit", _integer(self.failure_limit, "failure_limit", 1))
        set_("hold_limit", _integer(self.hold_limit, "hold_limit", 1))
        if self.on_hold_limit not in get_args(OnHoldLimit):
            raise ValueError(f"on_hold_limit must be 'rollback' or 'pause', got {self.on_hold_limit!r}")
        if self.on_resume not in get_args(OnResume):
            raise ValueError(f"on_resume must be 'continue' or 'rollback', got {self.on_resume!r}")
        for name in ("require_approval", "approve_before_full", "close_issue_on_promote"):
            set_(name, _boolean(getattr(self, name), name))
        shortest = self.min_duration_seconds
        if self.deadline_seconds < shortest:
            n = len(self.effective_steps) - 1 + (self.strategy == "shadow")
            raise ValueError(
                f"deadline_seconds {self.deadline_seconds:g} is shorter than the shortest possible rollout "
                f"{shortest:g} s (bake_seconds {self.bake_seconds:g} x {n} bake(s) below 100% + "
                f"final_bake_seconds {self.final_bake_seconds:g})")

    @property
    def effective_steps(self) -> tuple[int, ...]:
        """The canary's traffic percents: `steps` for "canary" and "shadow" (after the shadow bake), (100,)
        for "blue-green" and "immediate"."""
        return self.steps if self.strategy in ("canary", "shadow") else (100,)

    @property
    def planned_looks(self) -> int:
        """Comparative looks when every look advances: the shadow bake and each step below 100%."""
        return (self.strategy == "shadow") + sum(1 for s in self.effective_steps if s < 100)

    @property
    def min_duration_seconds(self) -> float:
        """The rollout's length when every look advances (no holds, no approvals)."""
        shadow = self.bake_seconds if self.strategy == "shadow" else 0.0
        return shadow + self.bake_seconds * (len(self.effective_steps) - 1) + self.final_bake_seconds

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["steps"] = list(self.steps)
        return out

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> CanaryPolicy:
        """A policy from flow parameters or YAML: durations as seconds or "90s"/"5m"/"1h", steps as a
        list or "10,30,50,100", numbers and booleans also as strings. Unknown keys are refused."""
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ValueError(f"a canary policy must be a mapping of fields, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise ValueError(f"unknown canary policy field(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values = dict(data)
        p95 = values.get("max_p95_latency_ms")
        if isinstance(p95, str) and p95.strip().lower() in {"", "none", "null"}:
            values["max_p95_latency_ms"] = None
        return cls(**values)


# --------------------------------------------------------------------------------------------------
# Verdict


class Decision(str, Enum):
    ADVANCE = "ADVANCE"
    HOLD = "HOLD"
    ROLLBACK = "ROLLBACK"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Check:
    """One row of the verdict. `limit` is what the value is held to: min_requests for "requests",
    the (scaled) alpha the p-value must reach for the comparisons, the ceiling for the guards."""

    check: str
    canary: float | int | None
    stable: float | int | None
    limit: float | int | None
    p_value: float | None
    outcome: Outcome
    reason: str

    def row(self) -> dict[str, Any]:
        return {"check": self.check, "canary": self.canary, "stable": self.stable, "limit": self.limit,
                "p_value": self.p_value, "outcome": self.outcome, "reason": self.reason}


@dataclass(frozen=True)
class StepVerdict:
    decision: Decision
    reasons: tuple[str, ...]  # failures first, then holds, then the evidence that passed
    checks: tuple[Check, ...]
    canary: dict[str, Any]
    stable: dict[str, Any] | None  # None when the canary carries all traffic
    alpha_scale: float = 1.0
    alphas: Alphas | None = None  # the nominal level of each family of tests at this look

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.check == name), None)

    @property
    def failures(self) -> list[str]:
        return [c.reason for c in self.checks if c.outcome == "fail"]

    @property
    def summary(self) -> str:
        """One line for a log: the decision and its first reason."""
        return f"{self.decision.value}: {self.reasons[0]}" if self.reasons else self.decision.value

    def rows(self) -> list[dict[str, Any]]:
        """One row per check (check, canary, stable, limit, p_value, outcome, reason) for a table artifact."""
        return [c.row() for c in self.checks]

    def to_dict(self) -> dict[str, Any]:
        return {"decision": self.decision.value, "reasons": list(self.reasons), "checks": self.rows(),
                "canary": dict(self.canary), "stable": None if self.stable is None else dict(self.stable),
                "alpha_scale": self.alpha_scale,
                "alphas": None if self.alphas is None else self.alphas.to_dict()}


def _latencies(arm: ArmStats) -> Any:
    import numpy as np

    x = np.asarray(arm.latencies_ms, dtype=float)
    return x[np.isfinite(x) & (x >= 0)]


def summarise(arm: ArmStats) -> dict[str, Any]:
    """requests, errors, error_rate, latency_samples, median_ms, p95_ms (None without samples), predictions."""
    import numpy as np

    lat = _latencies(arm)
    return {"requests": arm.requests, "errors": arm.errors, "error_rate": arm.error_rate,
            "latency_samples": int(lat.size),
            "median_ms": float(np.median(lat)) if lat.size else None,
            "p95_ms": float(np.percentile(lat, 95)) if lat.size else None,
            "prediction_samples": max(len(arm.scores), len(arm.classes))}


def _pct(x: float) -> str:
    return f"{x * 100:.2f}%"


def _g(x: float) -> str:
    return f"{x:.2g}"


def _ms(x: float) -> str:
    return f"{x:.1f} ms"


def _finite_p(p: Any) -> float:
    p = float(p)
    return p if math.isfinite(p) else 1.0  # a test with no information (all ties, no errors) rejects nothing


# --------------------------------------------------------------------------------------------------
# Looks and the tests over them


@dataclass(frozen=True)
class Look:
    """One judged window: what each arm served while the canary had `percent` of the traffic.

    Windows do not overlap: look k holds only what was served since look k-1. `stable` is None when
    the canary carries all traffic; `percent` 0 is a shadow window (the candidate answered mirrored
    copies of the live requests and nobody saw its answers). `extra` marks a re-bake after a HOLD or a
    first ROLLBACK below failure_limit (it spends alpha from the reserve, see flows.canary_judge)."""

    percent: int
    canary: ArmStats
    stable: ArmStats | None
    extra: bool = False


@dataclass(frozen=True)
class Alphas:
    """The nominal level of each family of tests at one look (see flows.canary_judge for the spending)."""

    errors: float
    latency: float
    predictions: float

    def to_dict(self) -> dict[str, float]:
        return {"errors": self.errors, "latency": self.latency, "predictions": self.predictions}


def _error_test(c: ArmStats, s: ArmStats) -> tuple[str, float]:
    """One window: Fisher's exact test (Barnard's, more powerful, on small samples)."""
    from scipy import stats

    c_ok, s_ok = c.requests - c.errors, s.requests - s.errors
    small = c.requests + s.requests < BARNARD_MAX_TOTAL
    if c.errors == 0 or s_ok + c_ok == 0:  # no canary error, or nothing but errors: no evidence either way
        return ("Barnard exact" if small else "Fisher exact"), 1.0
    if small:
        # barnard_exact compares the columns' proportions: column 1 the canary, column 2 stable
        res = stats.barnard_exact([[c.errors, s.errors], [c_ok, s_ok]], alternative="greater")
        return "Barnard exact", _finite_p(res.pvalue)
    res = stats.fisher_exact([[c.errors, c_ok], [s.errors, s_ok]], alternative="greater")
    return "Fisher exact", _finite_p(res.pvalue)


def stratified_error_p(windows: Sequence[tuple[ArmStats, ArmStats]]) -> float:
    """Exact one-sided test that the canary errs more than stable, stratified by window.

    Within each window the canary's error count, given both arms' requests and the window's total
    errors, is hypergeometric under "same error rate in that window" (Fisher's conditioning); the
    statistic is the sum over windows, whose exact null distribution is the convolution of those
    hypergeometrics (the exact form of the Cochran-Mantel-Haenszel test, Mehta, Patel & Gray 1985).
    Stratifying keeps a canary's share changing from step to step from confounding the comparison
    with the error rate changing over time (Simpson's paradox in a pooled 2x2 table)."""
    import numpy as np
    from scipy.stats import hypergeom

    dist = np.ones(1)
    low = observed = 0
    for c, s in windows:
        total, errors = c.requests + s.requests, c.errors + s.errors
        observed += c.errors
        if errors == 0 or errors == total or c.requests == 0 or s.requests == 0:
            low += c.errors  # no information in this window: its count is fixed given the margins
            continue
        k_lo, k_hi = max(0, errors - s.requests), min(c.requests, errors)
        pmf = hypergeom.pmf(np.arange(k_lo, k_hi + 1), total, errors, c.requests)
        dist = np.convolve(dist, pmf)
        low += k_lo
    if observed == 0:
        return 1.0
    return _finite_p(min(1.0, float(dist[observed - low:].sum())))


def van_elteren_p(windows: Sequence[tuple[Any, Any]]) -> float:
    """One-sided stratified Wilcoxon (van Elteren 1960) "canary values are larger": per window the
    Mann-Whitney U (tie-corrected variance), weighted 1 / (n + 1), normal approximation."""
    import numpy as np
    from scipy import stats

    num = var = 0.0
    for c, s in windows:
        n1, n2 = len(c), len(s)
        if not n1 or not n2:
            continue
        both = np.concatenate([c, s])
        n = n1 + n2
        ranks = stats.rankdata(both)
        u = float(ranks[:n1].sum()) - n1 * (n1 + 1) / 2
        _, counts = np.unique(both, return_counts=True)
        ties = float((counts.astype(float) ** 3 - counts).sum())
        v = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1))) if n > 1 else 0.0
        w = 1.0 / (n + 1)
        num += w * (u - n1 * n2 / 2)
        var += w * w * v
    if var <= 0:
        return 1.0
    return _finite_p(stats.norm.sf(num / math.sqrt(var)))


def score_shift_p(windows: Sequence[tuple[Any, Any]]) -> float:
    """Two-sample Kolmogorov-Smirnov per window on the scores, combined over windows by Fisher's method
    (the windows hold disjoint requests, so their p-values are independent under the null)."""
    from scipy import stats

    ps = [_finite_p(stats.ks_2samp(c, s).pvalue) for c, s in windows if len(c) and len(s)]
    if not ps:
        return 1.0
    if len(ps) == 1:
        return ps[0]
    return _finite_p(stats.combine_pvalues(ps, method="fisher").pvalue)


def class_shift_p(windows: Sequence[tuple[Sequence[str], Sequence[str]]]) -> float:
    """Chi-square test of homogeneity (arm x predicted class) per window; the statistics and their
    degrees of freedom add over independent windows."""
    from collections import Counter

    from scipy import stats

    stat = dof = 0.0
    for c, s in windows:
        cc, sc = Counter(c), Counter(s)
        labels = sorted(set(cc) | set(sc))
        if len(labels) < 2 or not c or not s:
            continue
        res = stats.chi2_contingency([[cc[k] for k in labels], [sc[k] for k in labels]], correction=False)
        stat += float(res.statistic)
        dof += float(res.dof)
    if dof == 0:
        return 1.0
    return _finite_p(stats.chi2.sf(stat, dof))


def _ks_d(c: Any, s: Any) -> float:
    from scipy import stats

    return float(stats.ks_2samp(c, s).statistic)


def ks_margin(alpha: float, n: int, m: int) -> float:
    """How far the two-sample KS distance may exceed the true one at confidence 1 - alpha (the asymptotic
    KS critical value, sqrt(-ln(alpha / 2) / 2) * sqrt((n + m) / (n m)))."""
    return math.sqrt(-math.log(alpha / 2) / 2) * math.sqrt((n + m) / (n * m))


def class_shift_bound(c: Sequence[str], s: Sequence[str], alpha: float) -> tuple[float, float, str]:
    """The largest difference in a predicted class's share, and its lower confidence bound (normal
    intervals, Bonferroni over the classes): (difference, lower bound, class)."""
    from collections import Counter

    from scipy import stats

    cc, sc = Counter(c), Counter(s)
    labels = sorted(set(cc) | set(sc))
    z = float(stats.norm.isf(alpha / (2 * max(1, len(labels)))))
    best = (0.0, -1.0, labels[0] if labels else "")
    for k in labels:
        pc, ps = cc[k] / len(c), sc[k] / len(s)
        se = math.sqrt(pc * (1 - pc) / len(c) + ps * (1 - ps) / len(s))
        diff = abs(pc - ps)
        if diff - z * se > best[1]:
            best = (diff, diff - z * se, k)
    return best


def _sum(arms: Sequence[ArmStats]) -> ArmStats:
    out = ArmStats()
    for a in arms:
        out = out + a
    return out


# --------------------------------------------------------------------------------------------------
# The verdict


def assess_step(stable: ArmStats | None, canary: ArmStats, policy: CanaryPolicy | None = None, *,
                alpha_scale: float = 1.0) -> StepVerdict:
    """Judge a single window on its own: `canary` and `stable` served over the same window.

    Pass ``stable=None`` when the canary carries all traffic (100%): it is judged alone on the absolute
    guards. `alpha_scale` (0 < scale <= 1) multiplies every alpha. A rollout does not call this: it
    judges the sequence of its looks with `flows.canary_judge.Judge`, which calls `assess_looks`."""
    policy = policy or CanaryPolicy()
    scale = _number(alpha_scale, "alpha_scale")
    if not 0 < scale <= 1:
        raise ValueError(f"alpha_scale must be in (0, 1] (1 / number of looks), got {alpha_scale!r}")
    if not isinstance(canary, ArmStats) or not (stable is None or isinstance(stable, ArmStats)):
        raise ValueError(f"assess_step needs ArmStats, got canary={type(canary).__name__}, "
                         f"stable={type(stable).__name__}")
    alphas = Alphas(policy.error_alpha * scale, policy.latency_alpha * scale, policy.prediction_alpha * scale)
    verdict = assess_looks([Look(100 if stable is None else 50, canary, stable)], policy, alphas,
                           base=Alphas(policy.error_alpha, policy.latency_alpha, policy.prediction_alpha))
    return StepVerdict(verdict.decision, verdict.reasons, verdict.checks, verdict.canary, verdict.stable, scale,
                       verdict.alphas)


def assess_looks(looks: Sequence[Look], policy: CanaryPolicy, alphas: Alphas, *,
                 base: Alphas | None = None) -> StepVerdict:
    """Judge the latest of `looks` on the evidence of all of them, each family of tests at `alphas`.

    Comparisons (errors, latency, predictions) use every window in which both arms served, stratified
    by window; the absolute guards use the latest window (or everything the canary served, when the
    latest window alone is under min_requests). The latest look with ``stable=None`` (canary at
    100%) is judged on the guards alone. `base` (the policy's own alphas) only changes the wording."""
    if not looks:
        raise ValueError("assess_looks needs at least one look")
    for look in looks:
        if not isinstance(look, Look) or not isinstance(look.canary, ArmStats) or not (
                look.stable is None or isinstance(look.stable, ArmStats)):
            raise ValueError(f"assess_looks needs Look(percent, canary ArmStats, stable ArmStats|None), got {look!r}")
    current = looks[-1]
    alone = current.stable is None
    strata = [(lk.canary, lk.stable) for lk in looks if lk.stable is not None]
    cum_c = _sum([c for c, _ in strata]) if not alone else current.canary
    cum_s = _sum([s for _, s in strata]) if not alone else None
    err_alpha, lat_alpha, pred_alpha = alphas.errors, alphas.latency, alphas.predictions
    windows = f" over {len(strata)} windows" if len(strata) > 1 and not alone else ""

    def alpha_text(family: str, eff: float) -> str:
        ref = getattr(base, family) if base is not None else None
        return f"alpha {_g(eff)}" if ref is None or abs(ref - eff) < 1e-15 else f"alpha {_g(eff)} (of {_g(ref)})"

    c_sum = summarise(cum_c)
    s_sum = None if cum_s is None else summarise(cum_s)
    checks: list[Check] = []
    need = policy.min_requests

    # -- requests ------------------------------------------------------------------------------------
    if cum_s is None:
        if cum_c.requests < need:
            checks.append(Check("requests", cum_c.requests, None, need, None, "hold",
                                f"too few requests: canary {cum_c.requests:,} < {need:,}"))
        else:
            checks.append(Check("requests", cum_c.requests, None, need, None, "pass",
                                f"canary carries all traffic: {cum_c.requests:,} requests >= {need:,}, judged "
                                f"alone on the absolute guards (no stable arm to compare with)"))
    else:
        short = [f"{name} {arm.requests:,} < {need:,}" for name, arm in (("canary", cum_c), ("stable", cum_s))
                 if arm.requests < need]
        if short:
            hint = " (pass stable=None when the canary carries all traffic)" if cum_s.requests == 0 else ""
            checks.append(Check("requests", cum_c.requests, cum_s.requests, need, None, "hold",
                                f"too few requests: {', '.join(short)}{hint}"))
        else:
            checks.append(Check("requests", cum_c.requests, cum_s.requests, need, None, "pass",
                                f"enough requests: canary {cum_c.requests:,} and stable {cum_s.requests:,} "
                                f">= {need:,} each{windows}"))
    if checks[0].outcome == "hold":
        return _verdict(checks, c_sum, s_sum, 1.0, alphas)

    # the guards' arm: the latest window, or everything the canary served when that window is small
    g_c, g_s = current.canary, current.stable
    if g_c.requests < need and not alone:
        g_c, g_s = cum_c, cum_s

    # -- error rate vs stable --------------------------------------------------------------------------
    c_rate = cum_c.error_rate
    err_worse = False
    if cum_s is None:
        checks.append(Check("error rate vs stable", c_rate, None, err_alpha, None, "not judged",
                            "error rate vs stable not judged: the canary carries all traffic"))
    else:
        s_rate = cum_s.error_rate
        if len(strata) == 1:
            test, p = _error_test(cum_c, cum_s)
        else:
            test, p = f"stratified exact ({len(strata)} windows)", stratified_error_p(strata)
        head = f"canary error rate {_pct(c_rate)} vs stable {_pct(s_rate)}: {test} one-sided p={_g(p)}"
        diff = c_rate - s_rate
        if p < err_alpha and diff >= policy.min_error_increase:
            err_worse = True
            floor = (f" and the increase {diff * 100:+.2f} pp >= min_error_increase "
                     f"{policy.min_error_increase * 100:.2f} pp" if policy.min_error_increase > 0 else "")
            checks.append(Check("error rate vs stable", c_rate, s_rate, err_alpha, p, "fail",
                                f"{head} < {alpha_text('errors', err_alpha)}{floor}"))
        elif p < err_alpha:
            checks.append(Check("error rate vs stable", c_rate, s_rate, err_alpha, p, "pass",
                                f"{head} < {alpha_text('errors', err_alpha)} but the increase "
                                f"{diff * 100:+.2f} pp is below min_error_increase "
                                f"{policy.min_error_increase * 100:.2f} pp: not a failure"))
        else:
            checks.append(Check("error rate vs stable", c_rate, s_rate, err_alpha, p, "pass",
                                f"{head} >= {alpha_text('errors', err_alpha)}: not significantly worse"))

    # -- error rate ceiling ----------------------------------------------------------------------------
    ceiling = policy.max_error_rate
    g_rate = g_c.error_rate
    g_s_rate = None if g_s is None else g_s.error_rate
    if g_rate <= ceiling:
        checks.append(Check("error rate ceiling", g_rate, g_s_rate, ceiling, None, "pass",
                            f"canary error rate {_pct(g_rate)} within the ceiling max_error_rate {_pct(ceiling)}"))
    elif g_s is None:
        checks.append(Check("error rate ceiling", g_rate, None, ceiling, None, "fail",
                            f"canary error rate {_pct(g_rate)} over the ceiling max_error_rate {_pct(ceiling)} "
                            f"({g_c.errors:,} errors in {g_c.requests:,} requests)"))
    elif g_s.error_rate <= ceiling:
        checks.append(Check("error rate ceiling", g_rate, g_s.error_rate, ceiling, None, "fail",
                            f"canary error rate {_pct(g_rate)} over the ceiling max_error_rate {_pct(ceiling)} "
                            f"while stable's {_pct(g_s.error_rate)} is within it"))
    elif err_worse:
        checks.append(Check("error rate ceiling", g_rate, g_s.error_rate, ceiling, None, "fail",
                            f"both versions over the ceiling max_error_rate {_pct(ceiling)} (canary "
                            f"{_pct(g_rate)}, stable {_pct(g_s.error_rate)}) and the canary is "
                            f"significantly worse"))
    else:
        pooled = (g_c.errors + g_s.errors) / (g_c.requests + g_s.requests)
        checks.append(Check("error rate ceiling", g_rate, g_s.error_rate, ceiling, None, "hold",
                            f"both versions fail at ~{pooled * 100:.0f}% (canary {_pct(g_rate)}, stable "
                            f"{_pct(g_s.error_rate)} > max_error_rate {_pct(ceiling)}): an upstream problem, "
                            f"not the canary"))

    # -- latency vs stable -----------------------------------------------------------------------------
    need_lat = min(need, MIN_LATENCY_SAMPLES)
    c_lat = _latencies(cum_c)
    s_lat = None if cum_s is None else _latencies(cum_s)
    lat_worse = False
    c_med = c_sum["median_ms"]
    if cum_s is None:
        checks.append(Check("latency vs stable", c_med, None, lat_alpha, None, "not judged",
                            "latency vs stable not judged: the canary carries all traffic"))
    elif c_lat.size < need_lat or s_lat.size < need_lat:
        checks.append(Check("latency vs stable", c_med, s_sum["median_ms"], lat_alpha, None, "not judged",
                            f"latency not judged: canary has {c_lat.size:,} latency samples, stable "
                            f"{s_lat.size:,} (need {need_lat} each)"))
    else:
        from scipy import stats

        s_med = s_sum["median_ms"]
        if len(strata) == 1:
            test, p = "Mann-Whitney U", _finite_p(stats.mannwhitneyu(c_lat, s_lat, alternative="greater").pvalue)
        else:
            test = f"van Elteren ({len(strata)} windows)"
            p = van_elteren_p([(_latencies(c), _latencies(s)) for c, s in strata])
        change = f" ({(c_med / s_med - 1) * 100:+.1f}%)" if s_med > 0 else ""
        head = f"canary median latency {_ms(c_med)} vs stable {_ms(s_med)}{change}: {test} one-sided p={_g(p)}"
        floor = f"min_latency_increase {policy.min_latency_increase * 100:+.0f}%"
        big = c_med >= s_med * (1 + policy.min_latency_increase)
        if p < lat_alpha and big:
            lat_worse = True
            checks.append(Check("latency vs stable", c_med, s_med, lat_alpha, p, "fail",
                                f"{head} < {alpha_text('latency', lat_alpha)} and at least the floor {floor}"))
        elif p < lat_alpha:
            checks.append(Check("latency vs stable", c_med, s_med, lat_alpha, p, "pass",
                                f"{head} < {alpha_text('latency', lat_alpha)} but below the floor {floor}: "
                                f"not a failure"))
        else:
            checks.append(Check("latency vs stable", c_med, s_med, lat_alpha, p, "pass",
                                f"{head} >= {alpha_text('latency', lat_alpha)}: not significantly slower"))

    # -- p95 latency ceiling ---------------------------------------------------------------------------
    cap = policy.max_p95_latency_ms
    if cap is not None:
        import numpy as np

        gc_lat = _latencies(g_c)
        gs_lat = None if g_s is None else _latencies(g_s)
        c_p95 = float(np.percentile(gc_lat, 95)) if gc_lat.size else None
        s_p95 = float(np.percentile(gs_lat, 95)) if gs_lat is not None and gs_lat.size else None
        s_enough = gs_lat is not None and gs_lat.size >= need_lat
        if gc_lat.size < need_lat:
            checks.append(Check("p95 latency ceiling", c_p95, s_p95, cap, None, "hold",
                                f"p95 latency not judged: canary has {gc_lat.size:,} latency samples < {need_lat}, "
                                f"and the ceiling max_p95_latency_ms {cap:g} ms needs them"))
        elif c_p95 <= cap:
            checks.append(Check("p95 latency ceiling", c_p95, s_p95, cap, None, "pass",
                                f"canary p95 latency {_ms(c_p95)} within the ceiling max_p95_latency_ms {cap:g} ms"))
        elif g_s is None:
            checks.append(Check("p95 latency ceiling", c_p95, None, cap, None, "fail",
                                f"canary p95 latency {_ms(c_p95)} over the ceiling max_p95_latency_ms {cap:g} ms"))
        elif not s_enough:
            checks.append(Check("p95 latency ceiling", c_p95, s_p95, cap, None, "fail",
                                f"canary p95 latency {_ms(c_p95)} over the ceiling max_p95_latency_ms {cap:g} ms "
                                f"(stable has {gs_lat.size} latency samples, too few to call it upstream)"))
        elif s_p95 <= cap:
            checks.append(Check("p95 latency ceiling", c_p95, s_p95, cap, None, "fail",
                                f"canary p95 latency {_ms(c_p95)} over the ceiling max_p95_latency_ms {cap:g} ms "
                                f"while stable's {_ms(s_p95)} is within it"))
        elif lat_worse:
            checks.append(Check("p95 latency ceiling", c_p95, s_p95, cap, None, "fail",
                                f"both versions over the p95 ceiling max_p95_latency_ms {cap:g} ms (canary "
                                f"{_ms(c_p95)}, stable {_ms(s_p95)}) and the canary is significantly slower"))
        else:
            checks.append(Check("p95 latency ceiling", c_p95, s_p95, cap, None, "hold",
                                f"both versions over the p95 ceiling max_p95_latency_ms {cap:g} ms (canary "
                                f"{_ms(c_p95)}, stable {_ms(s_p95)}): an upstream problem, not the canary"))

    # -- predictions vs stable -------------------------------------------------------------------------
    if cum_s is not None:
        checks.extend(_prediction_checks(strata, cum_c, cum_s, policy, pred_alpha, alpha_text))
    return _verdict(checks, c_sum, s_sum, 1.0, alphas)


def _prediction_checks(strata: Sequence[tuple[ArmStats, ArmStats]], cum_c: ArmStats, cum_s: ArmStats,
                       policy: CanaryPolicy, alpha: float, alpha_text: Any) -> list[Check]:
    """Scores (KS) and predicted classes (chi-square), each at half the predictions alpha. A significant
    difference fails only when it is also large: its lower confidence bound (at the same alpha) is at
    least min_prediction_shift - the KS distance D less its sampling margin for scores, the largest
    class-share difference less its interval for classes. A retrained model differs from the old one a
    little, and with thousands of requests every little difference is significant; a bound, unlike the
    raw distance, does not grow with noise on a small window."""
    import numpy as np

    out: list[Check] = []
    floor = policy.min_prediction_shift
    half = alpha / 2
    need = MIN_PREDICTION_SAMPLES
    for name, attr in (("scores vs stable", "scores"), ("classes vs stable", "classes")):
        c_all, s_all = getattr(cum_c, attr), getattr(cum_s, attr)
        noun = "score" if attr == "scores" else "class"
        if not c_all and not s_all:
            out.append(Check(name, None, None, half, None, "not judged",
                             f"{noun} distribution not judged: the endpoint reported no predictions "
                             f"(its stats carry no {attr})"))
            continue
        if len(c_all) < need or len(s_all) < need:
            out.append(Check(name, len(c_all), len(s_all), half, None, "not judged",
                             f"{noun} distribution not judged: canary has {len(c_all):,} {attr}, stable "
                             f"{len(s_all):,} (need {need} each)"))
            continue
        pairs = [(getattr(c, attr), getattr(s, attr)) for c, s in strata]
        if attr == "scores":
            pairs = [(np.asarray(c, dtype=float), np.asarray(s, dtype=float)) for c, s in pairs]
            p = score_shift_p(pairs)
            d = _ks_d(np.asarray(c_all, dtype=float), np.asarray(s_all, dtype=float))
            bound = d - ks_margin(half, len(c_all), len(s_all))
            test = "Kolmogorov-Smirnov" + (f", Fisher-combined over {len(pairs)} windows" if len(pairs) > 1 else "")
            what = f"KS distance D={d:.3f} (lower bound {max(bound, 0):.3f})"
            stat = f"canary mean score {float(np.mean(c_all)):.3f} vs stable {float(np.mean(s_all)):.3f}"
        else:
            p = class_shift_p(pairs)
            d, bound, label = class_shift_bound(c_all, s_all, half)
            test = "chi-square" + (f", summed over {len(pairs)} windows" if len(pairs) > 1 else "")
            what = f"class {label} share differs by {d:.3f} (lower bound {max(bound, 0):.3f})"
            stat = f"canary classes {_shares(c_all)} vs stable {_shares(s_all)}"
        head = f"{stat}: {test} p={_g(p)}, {what}"
        if p < half and bound >= floor:
            out.append(Check(name, d, None, half, p, "fail",
                             f"predictions shifted: {head}; p < alpha {_g(half)} and the bound >= "
                             f"min_prediction_shift {floor:g}"))
        elif p < half:
            out.append(Check(name, d, None, half, p, "pass",
                             f"{head}; p < alpha {_g(half)} but the bound is below min_prediction_shift {floor:g}: "
                             f"a small difference, not a failure"))
        else:
            out.append(Check(name, d, None, half, p, "pass",
                             f"{head}; p >= alpha {_g(half)}: predictions not significantly different"))
    return out


def _shares(classes: Sequence[str]) -> str:
    from collections import Counter

    counts = Counter(classes)
    return "{" + ", ".join(f"{k}: {v / len(classes):.0%}" for k, v in sorted(counts.items())[:6]) + "}"


def _verdict(checks: list[Check], c_sum: dict[str, Any], s_sum: dict[str, Any] | None, scale: float,
             alphas: Alphas | None = None) -> StepVerdict:
    outcomes = {c.outcome for c in checks}
    decision = (Decision.ROLLBACK if "fail" in outcomes else Decision.HOLD if "hold" in outcomes
                else Decision.ADVANCE)
    order = {"fail": 0, "hold": 1, "pass": 2, "not judged": 3}
    reasons = tuple(c.reason for c in sorted(checks, key=lambda c: order[c.outcome]))
    return StepVerdict(decision, reasons, tuple(checks), c_sum, s_sum, scale, alphas)


def seed_rule(canary: ArmStats, threshold: float = 0.05) -> Decision:
    """The seed's CanaryDeployment rule: the canary's error rate > 5% -> ROLLBACK, else ADVANCE.

    No baseline, no sample size (0 requests advances), no latency: kept only for comparison."""
    return Decision.ROLLBACK if canary.error_rate > threshold else Decision.ADVANCE

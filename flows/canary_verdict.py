"""The canary's step verdict, as a pure function (no Prefect, no I/O).

    verdict = assess_step(stable_stats, canary_stats, CanaryPolicy(), alpha_scale=1 / 4)
    verdict.decision            # Decision.ADVANCE | Decision.HOLD | Decision.ROLLBACK
    verdict.reasons, verdict.rows()

One look compares what the canary served with what the stable version served over the same window
(both arms receive live traffic at the same time, Kayenta's "baseline deployed at the same time"):

* **requests** - both arms need ``min_requests`` before any verdict other than HOLD. Missing data is
  never a pass. When the canary carries all traffic the caller passes ``stable=None`` and the canary is
  judged alone on the absolute guards (the reasons say so). A stable ``ArmStats`` with 0 requests is
  *not* read as "100%": it holds, since a comparison that silently lost its baseline must not pass.
* **error rate vs stable** - exact one-sided test that the canary's error proportion is greater than
  stable's: ``scipy.stats.fisher_exact([[c_err, c_ok], [s_err, s_ok]], alternative="greater")``, or
  Barnard's exact test (more powerful, much slower) when both arms together have fewer than
  ``BARNARD_MAX_TOTAL`` requests. Failing when p < ``error_alpha * alpha_scale`` and the increase is at
  least ``min_error_increase`` (absolute).
* **error rate ceiling** - canary over ``max_error_rate`` while stable is within it fails even before the
  test is significant (a guard). When *both* versions are over the ceiling and the canary is not
  significantly worse, it is an upstream problem, not the canary: HOLD, not ROLLBACK.
* **latency vs stable** - when both arms have at least ``min(min_requests, 20)`` latency samples:
  ``scipy.stats.mannwhitneyu(canary, stable, alternative="greater")``; failing when p <
  ``latency_alpha * alpha_scale`` AND the canary's median is at least ``1 + min_latency_increase`` times
  stable's (a significant but smaller slowdown is not a failure: on huge samples everything is
  significant). Without enough samples latency is "not judged" (said in the reasons), not a hold.
* **p95 latency ceiling** (only when ``max_p95_latency_ms`` is set) - canary p95 over it while stable's
  is within fails; both over is the same upstream logic as errors (HOLD). Too few canary samples to
  judge a configured ceiling holds.

Any failing check -> ROLLBACK; else any hold -> HOLD; else ADVANCE. Reasons name values and limits,
failures first.

**Repeated looks.** A rollout looks once per step (more when it holds), and each look is a chance of a
false rollback. ``alpha_scale`` divides both alphas (Bonferroni): when the flow passes
``1 / number_of_looks`` the union bound keeps the whole rollout's false-rollback rate <= alpha, even
though the looks are on cumulative, correlated data (which makes the bound conservative). The canary
flow passes ``1 / len(policy.effective_steps)``; a HOLD for too few requests runs no test and spends no
alpha. ``seed_rule`` is the seed's rule (canary error rate > 5% -> ROLLBACK), kept for the benchmark.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import Enum
from typing import Any, Literal, get_args

from blocks.endpoint import ArmStats

__all__ = ["BARNARD_MAX_TOTAL", "CanaryPolicy", "Check", "Decision", "StepVerdict", "assess_step",
           "parse_duration", "seed_rule", "summarise"]

Strategy = Literal["canary", "blue-green", "immediate"]
OnHoldLimit = Literal["rollback", "pause"]
OnResume = Literal["continue", "rollback"]
Outcome = Literal["pass", "fail", "hold", "not judged"]

#: below this many requests on both arms together, Barnard's exact test replaces Fisher's (it is slow)
BARNARD_MAX_TOTAL = 200
#: latency is compared once both arms have min(min_requests, this) samples
MIN_LATENCY_SAMPLES = 20

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

    Defaults: the seed's steps 10 -> 30 -> 50 -> 100 with 5-minute bakes. error_alpha and latency_alpha
    0.01 each, divided over the 4 looks by the flow (alpha_scale 1/4), bound a good canary's chance of a
    false rollback at 1.5% whatever the traffic. With about 18 requests/s of total traffic or more
    (about 5,000 canary requests by the end of the 50% bake) they catch a canary that doubles a 1%
    error rate (1% -> 2%) before it takes 100% in >= 95% of rollouts; see ``bench/canary.py``.
    min_requests 100 only keeps the absolute guards off tiny samples; it never binds at that traffic.
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
    #: one-sided Mann-Whitney U "canary latencies > stable's"
    latency_alpha: float = 0.01
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
        for name in ("error_alpha", "latency_alpha"):
            value = _number(getattr(self, name), name)
            if not 0 < value < 1:
                raise ValueError(f"{name} must be between 0 and 1 (exclusive), got {value}")
            set_(name, value)
        for name, upper in (("min_latency_increase", math.inf), ("min_error_increase", 1.0)):
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
        for name in ("require_approval", "approve_before_full"):
            set_(name, _boolean(getattr(self, name), name))
        shortest = self.min_duration_seconds
        if self.deadline_seconds < shortest:
            n = len(self.effective_steps) - 1
            raise ValueError(
                f"deadline_seconds {self.deadline_seconds:g} is shorter than the shortest possible rollout "
                f"{shortest:g} s (bake_seconds {self.bake_seconds:g} x {n} step(s) below 100% + "
                f"final_bake_seconds {self.final_bake_seconds:g})")

    @property
    def effective_steps(self) -> tuple[int, ...]:
        """The canary's traffic percents: `steps` for "canary", (100,) for "blue-green" and "immediate"."""
        return self.steps if self.strategy == "canary" else (100,)

    @property
    def min_duration_seconds(self) -> float:
        """The rollout's length when every look advances (no holds, no approvals)."""
        return self.bake_seconds * (len(self.effective_steps) - 1) + self.final_bake_seconds

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
                "alpha_scale": self.alpha_scale}


def _latencies(arm: ArmStats) -> Any:
    import numpy as np

    x = np.asarray(arm.latencies_ms, dtype=float)
    return x[np.isfinite(x) & (x >= 0)]


def summarise(arm: ArmStats) -> dict[str, Any]:
    """requests, errors, error_rate, latency_samples, median_ms, p95_ms (None without samples)."""
    import numpy as np

    lat = _latencies(arm)
    return {"requests": arm.requests, "errors": arm.errors, "error_rate": arm.error_rate,
            "latency_samples": int(lat.size),
            "median_ms": float(np.median(lat)) if lat.size else None,
            "p95_ms": float(np.percentile(lat, 95)) if lat.size else None}


def _pct(x: float) -> str:
    return f"{x * 100:.2f}%"


def _g(x: float) -> str:
    return f"{x:.2g}"


def _ms(x: float) -> str:
    return f"{x:.1f} ms"


def _finite_p(p: Any) -> float:
    p = float(p)
    return p if math.isfinite(p) else 1.0  # a test with no information (all ties, no errors) rejects nothing


def _error_test(c: ArmStats, s: ArmStats) -> tuple[str, float]:
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


def assess_step(stable: ArmStats | None, canary: ArmStats, policy: CanaryPolicy | None = None, *,
                alpha_scale: float = 1.0) -> StepVerdict:
    """Judge one look at a canary step: `canary` and `stable` served over the same window.

    Pass ``stable=None`` when the canary carries all traffic (100%): it is judged alone on the absolute
    guards. `alpha_scale` (0 < scale <= 1) multiplies both alphas; pass ``1 / number_of_looks`` so the
    whole rollout's false-rollback rate stays <= alpha (Bonferroni, see the module docstring)."""
    policy = policy or CanaryPolicy()
    if not isinstance(canary, ArmStats) or not (stable is None or isinstance(stable, ArmStats)):
        raise ValueError(f"assess_step needs ArmStats, got canary={type(canary).__name__}, "
                         f"stable={type(stable).__name__}")
    scale = _number(alpha_scale, "alpha_scale")
    if not 0 < scale <= 1:
        raise ValueError(f"alpha_scale must be in (0, 1] (1 / number of looks), got {alpha_scale!r}")
    err_alpha, lat_alpha = policy.error_alpha * scale, policy.latency_alpha * scale

    def alpha_text(base: float, eff: float) -> str:
        return f"alpha {_g(eff)}" if scale == 1 else f"alpha {_g(eff)} ({_g(base)} x {_g(scale)})"

    c_sum = summarise(canary)
    s_sum = None if stable is None else summarise(stable)
    checks: list[Check] = []
    need = policy.min_requests

    # -- requests ------------------------------------------------------------------------------------
    if stable is None:
        if canary.requests < need:
            checks.append(Check("requests", canary.requests, None, need, None, "hold",
                                f"too few requests: canary {canary.requests:,} < {need:,}"))
        else:
            checks.append(Check("requests", canary.requests, None, need, None, "pass",
                                f"canary carries all traffic: {canary.requests:,} requests >= {need:,}, judged "
                                f"alone on the absolute guards (no stable arm to compare with)"))
    else:
        short = [f"{name} {arm.requests:,} < {need:,}" for name, arm in (("canary", canary), ("stable", stable))
                 if arm.requests < need]
        if short:
            hint = " (pass stable=None when the canary carries all traffic)" if stable.requests == 0 else ""
            checks.append(Check("requests", canary.requests, stable.requests, need, None, "hold",
                                f"too few requests: {', '.join(short)}{hint}"))
        else:
            checks.append(Check("requests", canary.requests, stable.requests, need, None, "pass",
                                f"enough requests: canary {canary.requests:,} and stable {stable.requests:,} "
                                f">= {need:,} each"))
    if checks[0].outcome == "hold":
        return _verdict(checks, c_sum, s_sum, scale)

    # -- error rate vs stable --------------------------------------------------------------------------
    c_rate = canary.error_rate
    err_worse = False
    if stable is None:
        checks.append(Check("error rate vs stable", c_rate, None, err_alpha, None, "not judged",
                            "error rate vs stable not judged: the canary carries all traffic"))
    else:
        s_rate = stable.error_rate
        test, p = _error_test(canary, stable)
        head = (f"canary error rate {_pct(c_rate)} vs stable {_pct(s_rate)}: {test} one-sided p={_g(p)}")
        diff = c_rate - s_rate
        if p < err_alpha and diff >= policy.min_error_increase:
            err_worse = True
            floor = (f" and the increase {diff * 100:+.2f} pp >= min_error_increase "
                     f"{policy.min_error_increase * 100:.2f} pp" if policy.min_error_increase > 0 else "")
            checks.append(Check("error rate vs stable", c_rate, s_rate, err_alpha, p, "fail",
                                f"{head} < {alpha_text(policy.error_alpha, err_alpha)}{floor}"))
        elif p < err_alpha:
            checks.append(Check("error rate vs stable", c_rate, s_rate, err_alpha, p, "pass",
                                f"{head} < {alpha_text(policy.error_alpha, err_alpha)} but the increase "
                                f"{diff * 100:+.2f} pp is below min_error_increase "
                                f"{policy.min_error_increase * 100:.2f} pp: not a failure"))
        else:
            checks.append(Check("error rate vs stable", c_rate, s_rate, err_alpha, p, "pass",
                                f"{head} >= {alpha_text(policy.error_alpha, err_alpha)}: not significantly worse"))

    # -- error rate ceiling ----------------------------------------------------------------------------
    ceiling = policy.max_error_rate
    s_rate_or_none = None if stable is None else stable.error_rate
    if c_rate <= ceiling:
        checks.append(Check("error rate ceiling", c_rate, s_rate_or_none, ceiling, None, "pass",
                            f"canary error rate {_pct(c_rate)} within the ceiling max_error_rate {_pct(ceiling)}"))
    elif stable is None:
        checks.append(Check("error rate ceiling", c_rate, None, ceiling, None, "fail",
                            f"canary error rate {_pct(c_rate)} over the ceiling max_error_rate {_pct(ceiling)} "
                            f"({canary.errors:,} errors in {canary.requests:,} requests)"))
    elif stable.error_rate <= ceiling:
        checks.append(Check("error rate ceiling", c_rate, stable.error_rate, ceiling, None, "fail",
                            f"canary error rate {_pct(c_rate)} over the ceiling max_error_rate {_pct(ceiling)} "
                            f"while stable's {_pct(stable.error_rate)} is within it"))
    elif err_worse:
        checks.append(Check("error rate ceiling", c_rate, stable.error_rate, ceiling, None, "fail",
                            f"both versions over the ceiling max_error_rate {_pct(ceiling)} (canary "
                            f"{_pct(c_rate)}, stable {_pct(stable.error_rate)}) and the canary is "
                            f"significantly worse"))
    else:
        pooled = (canary.errors + stable.errors) / (canary.requests + stable.requests)
        checks.append(Check("error rate ceiling", c_rate, stable.error_rate, ceiling, None, "hold",
                            f"both versions fail at ~{pooled * 100:.0f}% (canary {_pct(c_rate)}, stable "
                            f"{_pct(stable.error_rate)} > max_error_rate {_pct(ceiling)}): an upstream problem, "
                            f"not the canary"))

    # -- latency vs stable -----------------------------------------------------------------------------
    need_lat = min(need, MIN_LATENCY_SAMPLES)
    c_lat = _latencies(canary)
    s_lat = None if stable is None else _latencies(stable)
    lat_worse = False
    c_med = c_sum["median_ms"]
    if stable is None:
        checks.append(Check("latency vs stable", c_med, None, lat_alpha, None, "not judged",
                            "latency vs stable not judged: the canary carries all traffic"))
    elif c_lat.size < need_lat or s_lat.size < need_lat:
        checks.append(Check("latency vs stable", c_med, s_sum["median_ms"], lat_alpha, None, "not judged",
                            f"latency not judged: canary has {c_lat.size:,} latency samples, stable "
                            f"{s_lat.size:,} (need {need_lat} each)"))
    else:
        from scipy import stats

        s_med = s_sum["median_ms"]
        p = _finite_p(stats.mannwhitneyu(c_lat, s_lat, alternative="greater").pvalue)
        change = f" ({(c_med / s_med - 1) * 100:+.1f}%)" if s_med > 0 else ""
        head = (f"canary median latency {_ms(c_med)} vs stable {_ms(s_med)}{change}: Mann-Whitney U one-sided "
                f"p={_g(p)}")
        floor = f"min_latency_increase {policy.min_latency_increase * 100:+.0f}%"
        big = c_med >= s_med * (1 + policy.min_latency_increase)
        if p < lat_alpha and big:
            lat_worse = True
            checks.append(Check("latency vs stable", c_med, s_med, lat_alpha, p, "fail",
                                f"{head} < {alpha_text(policy.latency_alpha, lat_alpha)} and at least the floor "
                                f"{floor}"))
        elif p < lat_alpha:
            checks.append(Check("latency vs stable", c_med, s_med, lat_alpha, p, "pass",
                                f"{head} < {alpha_text(policy.latency_alpha, lat_alpha)} but below the floor "
                                f"{floor}: not a failure"))
        else:
            checks.append(Check("latency vs stable", c_med, s_med, lat_alpha, p, "pass",
                                f"{head} >= {alpha_text(policy.latency_alpha, lat_alpha)}: not significantly slower"))

    # -- p95 latency ceiling ---------------------------------------------------------------------------
    cap = policy.max_p95_latency_ms
    if cap is not None:
        c_p95 = c_sum["p95_ms"]
        s_p95 = None if s_sum is None else s_sum["p95_ms"]
        s_enough = s_lat is not None and s_lat.size >= need_lat
        if c_lat.size < need_lat:
            checks.append(Check("p95 latency ceiling", c_p95, s_p95, cap, None, "hold",
                                f"p95 latency not judged: canary has {c_lat.size:,} latency samples < {need_lat}, "
                                f"and the ceiling max_p95_latency_ms {cap:g} ms needs them"))
        elif c_p95 <= cap:
            checks.append(Check("p95 latency ceiling", c_p95, s_p95, cap, None, "pass",
                                f"canary p95 latency {_ms(c_p95)} within the ceiling max_p95_latency_ms {cap:g} ms"))
        elif stable is None:
            checks.append(Check("p95 latency ceiling", c_p95, None, cap, None, "fail",
                                f"canary p95 latency {_ms(c_p95)} over the ceiling max_p95_latency_ms {cap:g} ms"))
        elif not s_enough:
            checks.append(Check("p95 latency ceiling", c_p95, s_p95, cap, None, "fail",
                                f"canary p95 latency {_ms(c_p95)} over the ceiling max_p95_latency_ms {cap:g} ms "
                                f"(stable has {s_lat.size} latency samples, too few to call it upstream)"))
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
    return _verdict(checks, c_sum, s_sum, scale)


def _verdict(checks: list[Check], c_sum: dict[str, Any], s_sum: dict[str, Any] | None, scale: float) -> StepVerdict:
    outcomes = {c.outcome for c in checks}
    decision = (Decision.ROLLBACK if "fail" in outcomes else Decision.HOLD if "hold" in outcomes
                else Decision.ADVANCE)
    order = {"fail": 0, "hold": 1, "pass": 2, "not judged": 3}
    reasons = tuple(c.reason for c in sorted(checks, key=lambda c: order[c.outcome]))
    return StepVerdict(decision, reasons, tuple(checks), c_sum, s_sum, scale)


def seed_rule(canary: ArmStats, threshold: float = 0.05) -> Decision:
    """The seed's CanaryDeployment rule: the canary's error rate > 5% -> ROLLBACK, else ADVANCE.

    No baseline, no sample size (0 requests advances), no latency: kept only for comparison."""
    return Decision.ROLLBACK if canary.error_rate > threshold else Decision.ADVANCE

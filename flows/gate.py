"""The evaluation gate of `retrain`, as a pure function (no Prefect, no I/O).

    verdict = evaluate_gate(candidate_metrics, production_metrics, GatePolicy(floors={"accuracy": 0.85}))
    verdict.passed, verdict.reasons, verdict.rows()

A candidate passes when every floor holds (a ceiling for metrics where lower is better, such as
`log_loss`) and, when a production model exists, it is not worse than production by more than
`max_regression` on any compared metric. Both models must have been scored on the same held-out
rows. A metric that is missing or NaN on either side rejects, with the reason: a gate that cannot
judge must not pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LOWER_IS_BETTER", "GatePolicy", "GateVerdict", "evaluate_gate"]

#: Metrics where a smaller value is better; every other metric is "higher is better".
LOWER_IS_BETTER = frozenset({"log_loss", "loss", "rmse", "mse", "mae", "error_rate", "brier", "latency_ms"})


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(float(value)):
        raise ValueError(f"{what} must be a number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class GatePolicy:
    """Floors (e.g. accuracy >= 0.85, f1 >= 0.80 as in the seed) and the allowed regression."""

    floors: Mapping[str, float] = field(default_factory=lambda: {"accuracy": 0.85, "f1": 0.80})
    #: how much worse than production a compared metric may be (absolute, in the metric's units)
    max_regression: float = 0.01
    #: metrics compared with production; default: the floors' metrics
    compare: tuple[str, ...] | None = None
    lower_is_better: frozenset[str] = LOWER_IS_BETTER

    def __post_init__(self) -> None:
        if not isinstance(self.floors, Mapping):
            raise ValueError(f"floors must map metric names to numbers, got {type(self.floors).__name__}")
        floors = {str(k): _number(v, f"floor for {k!r}") for k, v in self.floors.items()}
        object.__setattr__(self, "floors", floors)
        regression = _number(self.max_regression, "max_regression")
        if regression < 0:
            raise ValueError(f"max_regression must be >= 0, got {regression}")
        object.__setattr__(self, "max_regression", regression)
        if self.compare is not None:
            if isinstance(self.compare, str) or not all(isinstance(c, str) and c for c in self.compare):
                raise ValueError(f"compare must be a list of metric names, got {self.compare!r}")
            object.__setattr__(self, "compare", tuple(self.compare))
        if not floors and not self.compare:
            raise ValueError("the gate needs at least one floor or one compared metric")

    @property
    def compared(self) -> tuple[str, ...]:
        return self.compare if self.compare is not None else tuple(self.floors)

    def better(self, metric: str) -> str:
        return "lower" if metric in self.lower_is_better else "higher"

    def to_dict(self) -> dict[str, Any]:
        return {"floors": dict(self.floors), "max_regression": self.max_regression, "compare": list(self.compared)}


@dataclass(frozen=True)
class Check:
    metric: str
    kind: str  # "floor" | "vs-production"
    candidate: float | None
    reference: float | None  # the floor, or production's value
    limit: float | None  # the value the candidate must reach
    passed: bool
    reason: str


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    reason: str  # one sentence: why it passed, or every reason it failed
    checks: tuple[Check, ...]
    candidate: dict[str, float]
    production: dict[str, float] | None
    policy: dict[str, Any]

    @property
    def failures(self) -> list[str]:
        return [c.reason for c in self.checks if not c.passed]

    def rows(self) -> list[dict[str, Any]]:
        """One row per check, for a Prefect table artifact."""
        return [{"metric": c.metric, "check": c.kind, "candidate": c.candidate, "reference": c.reference,
                 "limit": c.limit, "passed": c.passed, "reason": c.reason} for c in self.checks]

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reason": self.reason, "checks": self.rows(),
                "candidate": dict(self.candidate), "production": None if self.production is None else dict(self.production),
                "policy": dict(self.policy)}


def _value(metrics: Mapping[str, Any] | None, name: str) -> float | None:
    if metrics is None or name not in metrics:
        return None
    v = metrics[name]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(float(v)):
        return None
    return float(v)


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def evaluate_gate(candidate: Mapping[str, Any], production: Mapping[str, Any] | None,
                  policy: GatePolicy | None = None) -> GateVerdict:
    """Judge a candidate's held-out metrics against the floors and against production's."""
    policy = policy or GatePolicy()
    checks: list[Check] = []
    for metric, floor in policy.floors.items():
        c = _value(candidate, metric)
        lower = policy.better(metric) == "lower"
        if c is None:
            checks.append(Check(metric, "floor", None, floor, floor, False,
                                f"candidate has no usable {metric!r} metric (got {candidate.get(metric, 'nothing')!r})"))
            continue
        ok = c <= floor if lower else c >= floor
        word = "ceiling" if lower else "floor"
        checks.append(Check(metric, "floor", c, floor, floor, ok,
                            f"{metric} {_fmt(c)} {'within' if ok else 'breaks'} the {word} {_fmt(floor)}"))
    if production is not None:
        for metric in policy.compared:
            c, p = _value(candidate, metric), _value(production, metric)
            if c is None or p is None:
                side = "candidate" if c is None else "production"
                checks.append(Check(metric, "vs-production", c, p, None, False,
                                    f"{side} has no usable {metric!r} metric: cannot compare with production"))
                continue
            lower = policy.better(metric) == "lower"
            limit = p + policy.max_regression if lower else p - policy.max_regression
            ok = c <= limit if lower else c >= limit
            delta = c - p
            checks.append(Check(metric, "vs-production", c, p, limit, ok,
                                f"{metric} {_fmt(c)} vs production {_fmt(p)} ({delta:+.4g}; "
                                f"{'allowed' if ok else 'worse than the allowed'} regression {_fmt(policy.max_regression)})"))
    failures = [c.reason for c in checks if not c.passed]
    if failures:
        reason = "rejected: " + "; ".join(failures)
    elif production is None:
        reason = "passed: every floor holds; no production model to compare with"
    else:
        reason = "passed: every floor holds and the candidate is not worse than production beyond the margin"
    return GateVerdict(passed=not failures, reason=reason, checks=tuple(checks),
                       candidate={k: float(v) for k, v in candidate.items() if _value(candidate, k) is not None},
                       production=None if production is None else
                       {k: float(v) for k, v in production.items() if _value(production, k) is not None},
                       policy=policy.to_dict())

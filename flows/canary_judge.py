"""The canary's judge across looks, and the walk through the steps: one pure piece (no Prefect, no I/O
of its own) that `flows.canary` runs against a real endpoint and `bench/canary.py` runs against
simulated traffic, so the benchmark measures the path the flow takes.

    judge = Judge(policy)                      # planned looks from the policy
    judged = judge.judge(Look(10, canary_window, stable_window))
    judged.verdict.decision, judged.alphas, judged.spent

    result = walk(policy, shift=..., observe=..., record=..., ask=..., clock=...)

**What a look judges.** Everything since the canary started, stratified by look window. A single
window's evidence is what each step alone gives (a 10% step at 18 requests/s: 540 canary requests),
too little to see 1% -> 2% errors at a level that stays sound over several looks; pooling all the
windows into one 2x2 table would add the evidence up but compare arms whose shares changed from
step to step while the error rate may change with time (Simpson's paradox). Stratifying by window
keeps both arms compared only within the same minutes and adds the evidence: exact stratified test
for errors (exact Cochran-Mantel-Haenszel), van Elteren's stratified Wilcoxon for latency, per-window
KS combined by Fisher's method for scores and summed chi-squares for classes
(`flows.canary_verdict`). The absolute guards (ceilings) use the latest window, so a canary that
breaks late is not diluted by its good past.

**Repeated looks (sequential control).** Each family of tests (errors, latency, predictions) has its
own alpha from the policy, spent over the looks with a Lan-DeMets alpha-spending function of the
Kim-DeMets power family, alpha(t) = alpha * t^rho (Lan & DeMets 1983, Biometrika 70:659; Kim & DeMets
1987, Biometrics 43:857), t = planned looks done / planned looks. The planned looks are the shadow
bake (strategy shadow) and the steps below 100%; 90% of alpha is spent over them. Looks that are not
planned - a re-bake after a HOLD or after a ROLLBACK below failure_limit - are looks too: they spend
the 10% reserve, half of what is left each time (1/2, 1/4, ...), so any number of holds stays inside
it. A look whose test cannot run (too few requests or samples) spends nothing and its share carries
to the next look. Each look's test runs at its increment (the nominal level below), which by the
union bound keeps P(any false rollback) <= the sum of the increments <= alpha for each family
(conservative: it ignores the positive correlation of cumulative looks that exact group-sequential
boundaries would use), and <= error_alpha + latency_alpha + prediction_alpha over all of them.
rho = 2 spends little early (10%: 1/9 of the planned alpha when there are 3 steps) and most at the
last step, where the evidence is largest; bench/canary.py measures what that buys.

A rollout resumed after its worker crashed starts a new Judge: the looks the crashed process made are
gone with it, so a rollout resumed once may spend up to twice its alpha. Crashes are rare, and the
alternative (no judgement after a resume) is worse.

The 100% step (and blue-green's switch, immediate) has no stable arm: it is judged on the absolute
guards alone, so a canary's comparative failure must be caught before it takes all traffic.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from flows.canary_verdict import Alphas, CanaryPolicy, Decision, Look, StepVerdict, assess_looks

__all__ = ["RESERVE", "RHO", "Judge", "JudgedLook", "WalkResult", "walk"]

#: Kim-DeMets power of the spending function alpha * t^RHO
RHO = 2.0
#: share of each alpha kept for looks that were not planned (holds, re-bakes)
RESERVE = 0.10

_FAMILIES = ("errors", "latency", "predictions")
_CHECKS = {"errors": ("error rate vs stable",), "latency": ("latency vs stable",),
           "predictions": ("scores vs stable", "classes vs stable")}


def spent_allowed(alpha: float, planned_done: int, planned: int, extra_done: int) -> float:
    """How much of `alpha` may have been spent after `planned_done` of `planned` planned looks and
    `extra_done` extra looks."""
    t = min(1.0, planned_done / planned) if planned > 0 else 1.0
    return (1 - RESERVE) * alpha * t ** RHO + RESERVE * alpha * (1 - 0.5 ** extra_done)


@dataclass(frozen=True)
class JudgedLook:
    index: int  # 1-based, over every look of the rollout
    look: Look
    verdict: StepVerdict
    alphas: Alphas  # the nominal level of each family at this look
    spent: Alphas  # the alpha spent by each family so far, this look included


class Judge:
    """Feed it the rollout's looks in order; it keeps the evidence and the alpha each family spent."""

    def __init__(self, policy: CanaryPolicy, planned: int | None = None) -> None:
        self.policy = policy
        self.planned = policy.planned_looks if planned is None else planned
        self.looks: list[Look] = []
        self.judged: list[JudgedLook] = []
        self._planned_done = 0
        self._extra_done = 0
        self._spent = dict.fromkeys(_FAMILIES, 0.0)
        self._base = {"errors": policy.error_alpha, "latency": policy.latency_alpha,
                      "predictions": policy.prediction_alpha}

    def judge(self, look: Look) -> JudgedLook:
        self.looks.append(look)
        comparative = look.stable is not None
        if comparative:
            if look.extra:
                self._extra_done += 1
            else:
                self._planned_done += 1
        nominal = {f: max(0.0, spent_allowed(self._base[f], self._planned_done, self.planned, self._extra_done)
                          - self._spent[f]) if comparative else 0.0 for f in _FAMILIES}
        # a level of exactly 0 cannot reject; assess_looks needs a positive number
        alphas = Alphas(**{f: max(nominal[f], 1e-300) for f in _FAMILIES})
        verdict = assess_looks(self.looks, self.policy, alphas, base=Alphas(**self._base))
        for family, names in _CHECKS.items():
            ran = any(c.p_value is not None for c in verdict.checks if c.check in names)
            if ran:
                self._spent[family] += nominal[family]
        judged = JudgedLook(len(self.looks), look, verdict, Alphas(**nominal), Alphas(**self._spent))
        self.judged.append(judged)
        return judged


@dataclass
class WalkResult:
    outcome: Literal["promoted", "rolled-back"]
    reason: str
    percent: int  # the canary's share when the walk ended (0: in shadow)
    kind: str  # "promoted" | "verdict" | "hold limit" | "deadline" | "not approved" | "paused"
    judged: list[JudgedLook] = field(default_factory=list)


Ask = Callable[[str], tuple[bool, str]]


def walk(policy: CanaryPolicy, *, shift: Callable[[int], Any], observe: Callable[[int, float, bool], Look],
         record: Callable[[JudgedLook], Any] = lambda j: None, ask: Ask | None = None,
         clock: Callable[[], float] = time.monotonic, start: float | None = None,
         steps: list[int] | None = None, shadow: bool | None = None, judge: Any = None,
         name: str = "the canary") -> WalkResult:
    """Walk the policy's steps: `shift(percent)` (0 = shadow), `observe(percent, bake_seconds, extra)`
    bakes and returns the window's Look, `record(judged)` after each look, `ask(question)` -> (approve,
    comment) for approvals and `on_hold_limit: pause` (None: treated as not approved).

    `steps` (default the policy's) is what is left to walk, e.g. after a resume; `shadow` (default:
    strategy is shadow) walks a shadow bake first. The caller does the side effects of the outcome
    (undeploy the old version, or roll back); `shift` may raise, which ends the walk with the error.
    `judge` (default a new `Judge`) is anything with `.judge(look) -> JudgedLook` and `.judged`: the
    benchmark passes the seed's rule through it to compare on the same walk."""
    steps = list(policy.effective_steps if steps is None else steps)
    shadow = policy.strategy == "shadow" if shadow is None else shadow
    phases = ([0] if shadow else []) + steps
    planned = (1 if shadow else 0) + sum(1 for s in steps if s < 100)
    judge = judge if judge is not None else Judge(policy, planned=max(1, planned))
    started = clock() if start is None else start
    failures = 0

    def end(outcome: str, reason: str, pct: int, kind: str) -> WalkResult:
        return WalkResult(outcome, reason, pct, kind, list(judge.judged))  # type: ignore[arg-type]

    def approved(question: str) -> tuple[bool, str]:
        return ask(question) if ask is not None else (False, "no one to ask")

    for pct in phases:
        if pct == 100 and policy.approve_before_full:
            ok, comment = approved(f"Shift 100% of the traffic to {name}?")
            if not ok:
                return end("rolled-back", f"100% not approved: {comment}", pct, "not approved")
        shift(pct)
        holds = 0
        bake = policy.final_bake_seconds if pct == 100 else policy.bake_seconds
        extra = False
        while True:
            judged = judge.judge(observe(pct, bake, extra))
            record(judged)
            verdict = judged.verdict
            overdue = clock() - started > policy.deadline_seconds
            where = "in shadow" if pct == 0 else f"at {pct}%"
            if verdict.decision is Decision.ADVANCE:
                break
            if verdict.decision is Decision.ROLLBACK:
                failures += 1
                if failures >= policy.failure_limit:
                    return end("rolled-back", "; ".join(verdict.failures) or verdict.summary, pct, "verdict")
            else:
                holds += 1
                if holds >= policy.hold_limit or overdue:
                    why = (f"deadline of {policy.deadline_seconds:g}s passed" if overdue
                           else f"{holds} inconclusive bakes {where}")
                    if policy.on_hold_limit == "pause" and not overdue:
                        ok, comment = approved(f"{why} ({'; '.join(verdict.reasons[:2])}). Continue with {name}?")
                        if ok:
                            break
                        return end("rolled-back", f"{why}; operator: {comment or 'rejected'}", pct, "paused")
                    return end("rolled-back", why, pct, "deadline" if overdue else "hold limit")
            if overdue:
                return end("rolled-back", f"deadline of {policy.deadline_seconds:g}s passed", pct, "deadline")
            extra = True
    return end("promoted", "every look advanced", 100, "promoted")

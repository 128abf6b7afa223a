"""The judge across looks (alpha spending, stratified tests, predictions) and the walk the flow and the
benchmark share."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from blocks.endpoint import ArmStats
from deployments.endpoint import apply_prediction_fault
from deployments.stack import ROOT
from flows.canary_judge import RESERVE, Judge, walk
from flows.canary_verdict import (
    CanaryPolicy,
    Decision,
    Look,
    class_shift_p,
    stratified_error_p,
    van_elteren_p,
)

POLICY = CanaryPolicy()


def arm(n: int, errors: int, median: float = 80.0, scores: tuple[float, ...] = (), seed: int = 0) -> ArmStats:
    rng = np.random.default_rng(seed)
    lat = tuple(rng.lognormal(np.log(median), 0.35, min(n, 2000)).tolist())
    classes = tuple("1" if s >= 0.5 else "0" for s in scores)
    return ArmStats(n, errors, lat, scores, classes)


# --------------------------------------------------------------------------------------------------
# Alpha spending


def test_planned_looks_spend_alpha_by_the_power_function() -> None:
    judge = Judge(POLICY)  # 3 planned looks: 10, 30, 50
    spent = [judge.judge(Look(pct, arm(2000, 20, seed=i), arm(2000, 20, seed=10 + i))) for i, pct in
             enumerate((10, 30, 50))]
    a = POLICY.error_alpha * (1 - RESERVE)
    assert [j.alphas.errors for j in spent] == pytest.approx([a / 9, a * 3 / 9, a * 5 / 9])
    assert spent[-1].spent.errors == pytest.approx(a)
    assert spent[-1].spent.latency == pytest.approx(POLICY.latency_alpha * (1 - RESERVE))


def test_holds_spend_the_reserve_and_a_look_without_a_test_carries_its_share() -> None:
    judge = Judge(POLICY)
    small = judge.judge(Look(10, arm(30, 0), arm(300, 3)))  # too few canary requests: no test, nothing spent
    assert small.verdict.decision is Decision.HOLD and small.spent.errors == 0
    extra = judge.judge(Look(10, arm(2000, 20), arm(2000, 20), extra=True))
    a = POLICY.error_alpha
    # the planned 10% share (1/9 of 90%) carried over, plus half the reserve for the first extra look
    assert extra.alphas.errors == pytest.approx(a * (1 - RESERVE) / 9 + a * RESERVE / 2)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([10, 30, 50, 100]), st.booleans(), st.integers(0, 3000)), min_size=1,
                max_size=12))
def test_whatever_the_looks_no_family_spends_more_than_its_alpha(looks) -> None:
    judge = Judge(POLICY)
    for pct, extra, n in looks:
        stable = None if pct == 100 else arm(n, n // 100, seed=n + 1)
        judged = judge.judge(Look(pct, arm(n, n // 100, seed=n), stable, extra=extra))
        assert judged.spent.errors <= POLICY.error_alpha + 1e-15
        assert judged.spent.latency <= POLICY.latency_alpha + 1e-15
        assert judged.spent.predictions <= POLICY.prediction_alpha + 1e-15


# --------------------------------------------------------------------------------------------------
# The stratified tests


def test_one_window_is_fishers_exact_test() -> None:
    c, s = ArmStats(3000, 45), ArmStats(7000, 70)
    fisher = stats.fisher_exact([[45, 2955], [70, 6930]], alternative="greater").pvalue
    assert stratified_error_p([(c, s)]) == pytest.approx(fisher, rel=1e-9)


def test_stratifying_by_window_avoids_simpsons_paradox() -> None:
    """Errors rose from 1% to 5% for everyone while the canary's share grew: pooled, the canary looks
    worse; within each window it is exactly as good as stable."""
    windows = [(ArmStats(1000, 10), ArmStats(9000, 90)), (ArmStats(5000, 250), ArmStats(5000, 250))]
    pooled_c, pooled_s = ArmStats(6000, 260), ArmStats(14000, 340)
    pooled = stats.fisher_exact([[260, 5740], [340, 13660]], alternative="greater").pvalue
    assert pooled < 1e-10, "the pooled table blames the canary"
    assert stratified_error_p(windows) > 0.3
    verdict = Judge(POLICY)
    verdict.judge(Look(10, *windows[0]))
    judged = verdict.judge(Look(50, *windows[1]))
    assert judged.verdict.decision is Decision.ADVANCE, judged.verdict.reasons
    assert pooled_c.error_rate > pooled_s.error_rate


def test_the_stratified_error_test_holds_its_level() -> None:
    rng = np.random.default_rng(3)
    ps = []
    for _ in range(1500):
        ps.append(stratified_error_p([(ArmStats(n, int(rng.binomial(n, 0.01))), ArmStats(5400 - n, int(rng.binomial(5400 - n, 0.01))))
                                      for n in (540, 1620, 2700)]))
    assert np.mean(np.array(ps) < 0.05) <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 1500)


def test_van_elteren_on_one_window_is_the_mann_whitney_normal_approximation() -> None:
    rng = np.random.default_rng(4)
    c, s = rng.lognormal(4.5, 0.3, 400), rng.lognormal(4.4, 0.3, 600)
    mw = stats.mannwhitneyu(c, s, alternative="greater", method="asymptotic", use_continuity=False).pvalue
    assert van_elteren_p([(c, s)]) == pytest.approx(mw, rel=1e-6)


def test_class_shift_adds_chi_squares_over_windows() -> None:
    one = (["0"] * 60 + ["1"] * 40, ["0"] * 60 + ["1"] * 40)
    assert class_shift_p([one, one]) == pytest.approx(1.0)
    shifted = (["0"] * 100, ["0"] * 60 + ["1"] * 40)
    assert class_shift_p([shifted, shifted]) < 1e-10


# --------------------------------------------------------------------------------------------------
# Predictions


SCORES = tuple(float(x) for x in np.random.default_rng(5).beta(0.6, 1.2, 3000).round(4))


def test_a_canary_that_answers_one_class_is_rolled_back_without_a_single_error() -> None:
    classes, scores = apply_prediction_fault(["0"] * len(SCORES), list(SCORES), ["0", "1"], {"predict_class": "0"})
    canary = ArmStats(3000, 0, arm(3000, 0).latencies_ms, tuple(scores), tuple(classes))
    judged = Judge(POLICY).judge(Look(30, canary, arm(3000, 0, scores=SCORES)))
    assert judged.verdict.decision is Decision.ROLLBACK
    assert "predictions shifted" in judged.verdict.reasons[0]
    assert {c.check for c in judged.verdict.checks if c.outcome == "fail"} >= {"scores vs stable"}


def test_shifted_scores_are_caught_and_a_similar_model_is_not() -> None:
    _, shifted = apply_prediction_fault(["0"] * len(SCORES), list(SCORES), ["0", "1"], {"logit_shift": 1.0})
    rng = np.random.default_rng(6)
    similar = tuple(float(np.clip(x + rng.normal(0, 0.01), 0, 1)) for x in SCORES)
    stable = arm(3000, 0, scores=SCORES)
    bad = Judge(POLICY).judge(Look(50, arm(3000, 0, scores=tuple(shifted), seed=1), stable))
    good = Judge(POLICY).judge(Look(50, arm(3000, 0, scores=similar, seed=1), stable))
    assert bad.verdict.decision is Decision.ROLLBACK, bad.verdict.reasons
    assert good.verdict.decision is Decision.ADVANCE, good.verdict.reasons


def test_an_endpoint_without_predictions_says_they_were_not_judged() -> None:
    judged = Judge(POLICY).judge(Look(10, arm(2000, 20), arm(2000, 20, seed=1)))
    assert judged.verdict.decision is Decision.ADVANCE
    assert any("score distribution not judged: the endpoint reported no predictions" in r
               for r in judged.verdict.reasons)


# --------------------------------------------------------------------------------------------------
# The walk


class Script:
    """Looks handed to walk in order, recording the shifts it asked for."""

    def __init__(self, *looks: tuple[ArmStats, ArmStats | None]) -> None:
        self.looks = list(looks)
        self.shifts: list[int] = []
        self.extras: list[bool] = []
        self.now = 0.0

    def shift(self, pct: int) -> None:
        self.shifts.append(pct)

    def observe(self, pct: int, bake: float, extra: bool) -> Look:
        self.now += bake
        self.extras.append(extra)
        c, s = self.looks.pop(0)
        return Look(pct, c, None if pct == 100 else s, extra=extra)

    def run(self, policy: CanaryPolicy, **kw):
        return walk(policy, shift=self.shift, observe=self.observe, clock=lambda: self.now, start=0.0, **kw)


GOOD = (arm(2000, 20), arm(2000, 20, seed=1))


def test_a_good_canary_walks_every_step() -> None:
    script = Script(GOOD, GOOD, GOOD, GOOD)
    result = script.run(POLICY)
    assert result.outcome == "promoted" and script.shifts == [10, 30, 50, 100]
    assert [j.look.percent for j in result.judged] == [10, 30, 50, 100]


def test_a_hold_re_bakes_the_step_as_an_extra_look_until_the_hold_limit() -> None:
    few = (arm(10, 0), arm(10, 0))
    script = Script(few, few, few)
    result = script.run(POLICY)
    assert result.outcome == "rolled-back" and result.kind == "hold limit" and result.percent == 10
    assert script.extras == [False, True, True]


def test_failure_limit_two_bakes_again_after_the_first_rollback_verdict() -> None:
    bad = (arm(2000, 200), arm(2000, 20))
    script = Script(bad, bad)
    result = script.run(CanaryPolicy(failure_limit=2))
    assert result.outcome == "rolled-back" and result.kind == "verdict" and len(result.judged) == 2


def test_shadow_comes_first_and_a_bad_candidate_never_takes_traffic() -> None:
    bad = (arm(2000, 300), arm(2000, 20))
    script = Script(bad)
    result = script.run(CanaryPolicy(strategy="shadow"))
    assert script.shifts == [0] and result.outcome == "rolled-back" and result.percent == 0
    good = Script(GOOD, GOOD, GOOD, GOOD, GOOD)
    assert good.run(CanaryPolicy(strategy="shadow")).outcome == "promoted"
    assert good.shifts == [0, 10, 30, 50, 100]


def test_approvals_and_pauses_go_through_ask() -> None:
    asked: list[str] = []
    script = Script(GOOD, GOOD, GOOD)
    result = script.run(CanaryPolicy(approve_before_full=True), ask=lambda q: (asked.append(q), (False, "no"))[1],
                        name="churn:v2")
    assert result.outcome == "rolled-back" and result.kind == "not approved" and "no" in result.reason
    assert asked == ["Shift 100% of the traffic to churn:v2?"] and script.shifts == [10, 30, 50]
    few = (arm(10, 0), arm(10, 0))
    paused = Script(few, few, few, GOOD, GOOD, GOOD)
    out = paused.run(CanaryPolicy(on_hold_limit="pause"), ask=lambda q: (True, "go on"))
    assert out.outcome == "promoted"


def test_the_bench_walks_the_flows_path_and_prints_its_goals() -> None:
    out = subprocess.run([sys.executable, "bench/canary.py", "--rollouts", "12", "--table-rollouts", "4",
                          "--table-rps", "18", "--rollback-runs", "0"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    for needle in ("equal", "similar", "errors 2%", "latency +30%", "constant", "logit +1", "goals at 18 requests/s"):
        assert needle in out.stdout
    source = (ROOT / "bench" / "canary.py").read_text()
    assert "from flows.canary_judge import" in source and "walk(" in source

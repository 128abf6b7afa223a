"""The canary's step verdict, as decision tables: errors, upstream outages, latency, guards, looks, policy."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from blocks.endpoint import ArmStats
from flows.canary_verdict import (
    CanaryPolicy,
    Decision,
    StepVerdict,
    assess_step,
    parse_duration,
    seed_rule,
)

POLICY = CanaryPolicy()  # the defaults the flow uses
MEDIAN_MS = 80.0


def latencies(n: int, median: float = MEDIAN_MS, sigma: float = 0.35) -> tuple[float, ...]:
    """n lognormal latencies at evenly spaced quantiles: deterministic, and exactly `median` x the same
    shape for every `median`, so two arms differ only by the factor we give them."""
    q = (np.arange(n) + 0.5) / n
    return tuple((median * np.exp(sigma * stats.norm.ppf(q))).tolist())


def arm(requests: int, errors: int, median: float | None = MEDIAN_MS, samples: int | None = None) -> ArmStats:
    lat = () if median is None else latencies(requests if samples is None else samples, median)
    return ArmStats(requests, errors, lat)


def reasons(verdict: StepVerdict) -> str:
    return " | ".join(verdict.reasons)


# --------------------------------------------------------------------------------------------------
# The decision table


@pytest.mark.parametrize(
    ("stable", "canary", "decision", "needle"),
    [
        # the same model twice: nothing to see, advance
        (arm(2000, 20), arm(2000, 20), Decision.ADVANCE, "canary error rate 1.00% vs stable 1.00%: Fisher exact"),
        # 1% vs 4% on 2,000 requests each: clearly worse, roll back, naming both rates and the p-value
        (arm(2000, 20), arm(2000, 80), Decision.ROLLBACK,
         "canary error rate 4.00% vs stable 1.00%: Fisher exact one-sided p=3.5e-10 < alpha 0.01"),
        # the same rates on 20 requests: too little to judge either way, never a pass
        (arm(20, 0), arm(20, 1), Decision.HOLD, "too few requests: canary 20 < 100, stable 20 < 100"),
        (arm(5000, 50), arm(20, 1), Decision.HOLD, "too few requests: canary 20 < 100"),
        # both versions failing at 10%: an upstream outage, not the canary's fault
        (arm(2000, 200), arm(2000, 210), Decision.HOLD,
         "both versions fail at ~10% (canary 10.50%, stable 10.00% > max_error_rate 5.00%): an upstream problem"),
        # ... but a canary much worse than an already failing stable is still rolled back
        (arm(2000, 200), arm(2000, 400), Decision.ROLLBACK, "both versions over the ceiling max_error_rate 5.00%"),
        # 40% slower median: significant and beyond the 10% floor
        (arm(2000, 20), arm(2000, 20, median=MEDIAN_MS * 1.4), Decision.ROLLBACK,
         "canary median latency 112.0 ms vs stable 80.0 ms (+40.0%): Mann-Whitney U one-sided p="),
        # canary alone over the 5% ceiling, stable within: a guard, even though the test is not significant
        (arm(150, 6), arm(150, 8), Decision.ROLLBACK,
         "canary error rate 5.33% over the ceiling max_error_rate 5.00% while stable's 4.00% is within it"),
        # no errors anywhere and no latency samples at all: advance, saying latency was not judged
        (arm(500, 0, median=None), arm(500, 0, median=None), Decision.ADVANCE,
         "latency not judged: canary has 0 latency samples, stable 0 (need 20 each)"),
    ],
    ids=["equal", "1%-vs-4%", "1%-vs-4%-on-20", "canary-short", "upstream-outage", "worse-than-outage",
         "40%-slower", "over-ceiling-alone", "no-errors-no-latency"],
)
def test_decision_table(stable, canary, decision, needle) -> None:
    verdict = assess_step(stable, canary, POLICY)
    assert verdict.decision is decision, reasons(verdict)
    assert needle in reasons(verdict)
    if decision is Decision.ROLLBACK:
        assert verdict.reasons[0] == verdict.failures[0], "the first reason of a rollback is a failure"
    if decision is Decision.HOLD:
        assert not verdict.failures, "a hold has no failing check"


def test_upstream_outage_holds_and_does_not_roll_back() -> None:
    # both versions fail at 10%: rolling back would only move the traffic to an equally broken stable
    verdict = assess_step(arm(2000, 200), arm(2000, 200), POLICY)
    assert verdict.decision is Decision.HOLD, "an upstream outage must not roll back a healthy canary"
    assert verdict.reasons[0].startswith("both versions fail at ~10%")
    assert verdict.reasons[0].endswith("an upstream problem, not the canary")


def test_a_small_but_significant_slowdown_is_not_a_failure() -> None:
    # 50,000 samples per arm make a 3% slower median overwhelmingly significant; the 10% effect floor
    # is what keeps it from rolling back
    verdict = assess_step(arm(50_000, 500), arm(50_000, 500, median=MEDIAN_MS * 1.03), POLICY)
    row = next(r for r in verdict.rows() if r["check"] == "latency vs stable")
    assert row["p_value"] < 1e-12, "the slowdown is significant"
    assert row["outcome"] == "pass"
    assert verdict.decision is Decision.ADVANCE, reasons(verdict)
    assert "(+3.0%)" in row["reason"] and "below the floor min_latency_increase +10%: not a failure" in row["reason"]
    # with no floor the same evidence rolls back
    strict = CanaryPolicy(min_latency_increase=0.0)
    assert assess_step(arm(50_000, 500), arm(50_000, 500, median=MEDIAN_MS * 1.03), strict).decision \
        is Decision.ROLLBACK


def test_error_effect_floor() -> None:
    # 1% -> 2% on 20,000 each is significant; with a 2-point floor it is not a failure
    stable, canary = arm(20_000, 200, median=None), arm(20_000, 400, median=None)
    assert assess_step(stable, canary, POLICY).decision is Decision.ROLLBACK
    verdict = assess_step(stable, canary, CanaryPolicy(min_error_increase=0.02))
    assert verdict.decision is Decision.ADVANCE
    assert "but the increase +1.00 pp is below min_error_increase 2.00 pp: not a failure" in reasons(verdict)


@pytest.mark.parametrize(
    ("stable_median", "canary_median", "decision", "needle"),
    [
        # p95 of these samples is median x 1.777 (exp(0.35 x 1.645) for the distribution); ceiling 200 ms
        (80.0, 80.0, Decision.ADVANCE, "canary p95 latency 142.2 ms within the ceiling max_p95_latency_ms 200 ms"),
        # canary over, stable within: roll back (the canary is also 50% slower, so both checks fail)
        (80.0, 120.0, Decision.ROLLBACK, "canary p95 latency 213.2 ms over the ceiling max_p95_latency_ms 200 ms "
                                         "while stable's 142.2 ms is within it"),
        # both over by the same amount: the dependency is slow, not the canary
        (120.0, 120.0, Decision.HOLD, "both versions over the p95 ceiling max_p95_latency_ms 200 ms (canary "
                                      "213.2 ms, stable 213.2 ms): an upstream problem, not the canary"),
    ],
    ids=["within", "canary-over", "both-over"],
)
def test_p95_ceiling(stable_median, canary_median, decision, needle) -> None:
    policy = CanaryPolicy(max_p95_latency_ms=200)
    verdict = assess_step(arm(2000, 20, stable_median), arm(2000, 20, canary_median), policy)
    assert verdict.decision is decision, reasons(verdict)
    assert needle in reasons(verdict)


def test_a_configured_p95_ceiling_without_samples_holds() -> None:
    # missing data is never a pass: a ceiling that cannot be checked holds the step
    verdict = assess_step(arm(2000, 20, samples=5), arm(2000, 20, samples=5), CanaryPolicy(max_p95_latency_ms=200))
    assert verdict.decision is Decision.HOLD
    assert "p95 latency not judged: canary has 5 latency samples < 20" in reasons(verdict)


def test_alpha_scale_spreads_alpha_over_the_looks() -> None:
    # 2.0% vs 1.0% on 2,000 each: Fisher p = 0.0064, under 0.01 but over 0.01 / 4
    stable, canary = arm(2000, 20), arm(2000, 40)
    once = assess_step(stable, canary, POLICY)
    assert once.decision is Decision.ROLLBACK
    assert "p=0.0064 < alpha 0.01" in once.reasons[0]
    quarter = assess_step(stable, canary, POLICY, alpha_scale=1 / 4)
    assert quarter.decision is Decision.ADVANCE, "one of four looks must not reject at p=0.0064"
    assert "p=0.0064 >= alpha 0.0025 (of 0.01): not significantly worse" in reasons(quarter)
    assert next(r for r in quarter.rows() if r["check"] == "error rate vs stable")["limit"] == pytest.approx(0.0025)


@pytest.mark.parametrize("scale", [0, -0.5, 1.5, math.nan, "all"])
def test_alpha_scale_is_validated(scale) -> None:
    with pytest.raises(ValueError, match="alpha_scale"):
        assess_step(arm(200, 2), arm(200, 2), POLICY, alpha_scale=scale)


@pytest.mark.parametrize(
    ("canary", "decision", "needle"),
    [
        (arm(15_000, 150), Decision.ADVANCE, "canary carries all traffic: 15,000 requests >= 100, judged alone on "
                                             "the absolute guards (no stable arm to compare with)"),
        (arm(15_000, 900), Decision.ROLLBACK, "canary error rate 6.00% over the ceiling max_error_rate 5.00% "
                                              "(900 errors in 15,000 requests)"),
        (arm(50, 0), Decision.HOLD, "too few requests: canary 50 < 100"),
    ],
    ids=["healthy", "over-ceiling", "too-few"],
)
def test_at_100_percent_the_canary_is_judged_alone_on_the_guards(canary, decision, needle) -> None:
    verdict = assess_step(None, canary, POLICY)
    assert verdict.decision is decision
    assert needle in reasons(verdict)
    assert verdict.stable is None
    if decision is not Decision.HOLD:
        assert "latency vs stable not judged: the canary carries all traffic" in reasons(verdict)


def test_a_stable_arm_with_no_traffic_is_not_read_as_100_percent() -> None:
    verdict = assess_step(ArmStats(), arm(2000, 20), POLICY)
    assert verdict.decision is Decision.HOLD, "a comparison that lost its baseline must not pass"
    assert verdict.reasons[0] == ("too few requests: stable 0 < 100 "
                                  "(pass stable=None when the canary carries all traffic)")


def test_small_arms_use_barnards_exact_test() -> None:
    policy = CanaryPolicy(min_requests=50)
    verdict = assess_step(arm(90, 1), arm(90, 10), policy)
    assert verdict.decision is Decision.ROLLBACK
    assert "canary error rate 11.11% vs stable 1.11%: Barnard exact one-sided p=0.0028 < alpha 0.01" in reasons(verdict)


def test_degenerate_inputs_give_finite_numbers() -> None:
    # zero errors, identical samples, no latency, all errors: every p-value is a number, never NaN
    cases = [(arm(300, 0), arm(300, 0)), (ArmStats(300, 0, (50.0,) * 300), ArmStats(300, 0, (50.0,) * 300)),
             (arm(300, 0, median=None), arm(300, 0, median=None)), (arm(300, 300), arm(300, 300)),
             (ArmStats(300, 3, (math.nan,) * 300), ArmStats(300, 3, (math.inf, -1.0) * 150))]
    for stable, canary in cases:
        verdict = assess_step(stable, canary, POLICY)
        text = json.dumps(verdict.to_dict(), allow_nan=False)  # raises on NaN or inf
        assert "nan" not in text.lower()
        assert verdict.decision in (Decision.ADVANCE, Decision.HOLD), reasons(verdict)
    identical = assess_step(ArmStats(300, 0, (50.0,) * 300), ArmStats(300, 0, (50.0,) * 300), POLICY)
    assert "Mann-Whitney U one-sided p=1 >= alpha 0.005: not significantly slower" in reasons(identical)


def test_rows_and_to_dict_carry_the_evidence() -> None:
    verdict = assess_step(arm(2000, 20), arm(2000, 80), POLICY, alpha_scale=0.5)
    rows = verdict.rows()
    assert [r["check"] for r in rows] == ["requests", "error rate vs stable", "error rate ceiling", "latency vs stable",
                                     "scores vs stable", "classes vs stable"]
    assert set(rows[0]) == {"check", "canary", "stable", "limit", "p_value", "outcome", "reason"}
    assert rows[1] == {**rows[1], "canary": 0.04, "stable": 0.01, "limit": 0.005, "outcome": "fail"}
    doc = json.loads(json.dumps(verdict.to_dict()))
    assert doc["decision"] == "ROLLBACK" and doc["alpha_scale"] == 0.5
    assert doc["canary"] == {"requests": 2000, "errors": 80, "error_rate": 0.04, "latency_samples": 2000,
                             "median_ms": pytest.approx(80.0), "p95_ms": pytest.approx(142.2, abs=0.1),
                             "prediction_samples": 0}
    assert verdict.summary.startswith("ROLLBACK: canary error rate 4.00% vs stable 1.00%")


def test_a_rollout_step_by_step() -> None:
    """One canary through the seed's steps at 50 requests/s with 5-minute bakes, as the flow judges it:
    each look on every window since the canary started (stratified), alpha spent over the looks."""
    from flows.canary_judge import Judge
    from flows.canary_verdict import Look

    bake = 50 * 300
    judge = Judge(POLICY)
    # look 1 - 10%: 1,500 canary requests, 15 errors; 13,500 stable, 135 errors -> advance
    first = judge.judge(Look(10, arm(1500, 15, samples=150), arm(bake - 1500, 135, samples=1350)))
    assert first.verdict.decision is Decision.ADVANCE
    # look 2 - 30%: the canary starts failing at 2% (90 errors in 4,500); over both windows it is worse
    # even at the second look's share of alpha: roll back before it takes 50%
    second = judge.judge(Look(30, arm(4500, 90, samples=450), arm(bake - 4500, 105, samples=1050)))
    verdict = second.verdict
    assert verdict.decision is Decision.ROLLBACK, "a canary that doubles the error rate must not reach 50%"
    assert "canary error rate 1.75% vs stable 1.00%: stratified exact (2 windows)" in verdict.reasons[0]
    assert f"< alpha {second.alphas.errors:.2g} (of 0.01)" in verdict.reasons[0]
    assert second.spent.errors == pytest.approx(0.01 * 0.9 * 4 / 9)


# --------------------------------------------------------------------------------------------------
# The seed's rule, for comparison


def test_seed_rule_only_sees_the_canarys_own_error_rate() -> None:
    assert seed_rule(ArmStats(1000, 60)) is Decision.ROLLBACK  # 6% > 5%
    assert seed_rule(ArmStats(1000, 50)) is Decision.ADVANCE  # exactly 5% is not over
    assert seed_rule(ArmStats(2000, 40)) is Decision.ADVANCE, "the seed misses a canary that doubles 1% to 2%"
    assert seed_rule(ArmStats()) is Decision.ADVANCE, "the seed advances on no traffic at all"
    assert seed_rule(ArmStats(1000, 30), threshold=0.02) is Decision.ROLLBACK


# --------------------------------------------------------------------------------------------------
# The policy


def test_default_policy_is_the_seeds_steps() -> None:
    assert POLICY.effective_steps == (10, 30, 50, 100)
    assert POLICY.min_duration_seconds == 1200
    assert CanaryPolicy(strategy="blue-green").effective_steps == (100,)
    assert CanaryPolicy(strategy="immediate").effective_steps == (100,)
    assert CanaryPolicy.from_mapping(POLICY.to_dict()) == POLICY, "to_dict round-trips"


def test_from_mapping_reads_durations_and_steps_as_text() -> None:
    policy = CanaryPolicy.from_mapping({"steps": "5, 25, 100", "bake_seconds": "90s", "final_bake_seconds": "5m",
                                        "deadline_seconds": "1h", "error_alpha": "0.02", "min_requests": "200",
                                        "require_approval": "true", "max_p95_latency_ms": "none"})
    assert policy.steps == (5, 25, 100)
    assert (policy.bake_seconds, policy.final_bake_seconds, policy.deadline_seconds) == (90, 300, 3600)
    assert policy.error_alpha == 0.02 and policy.min_requests == 200 and policy.require_approval is True
    assert policy.max_p95_latency_ms is None
    assert CanaryPolicy.from_mapping({"steps": [20, 100]}).steps == (20, 100)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5m", 300), (300, 300), ("300", 300), ("90s", 90), ("1h", 3600), ("1.5h", 5400), ("1h30m", 5400),
     ("2d", 172800), (" 5 m ", 300), (0, 0)],
)
def test_parse_duration(text, seconds) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5 minutes", "m5", "", "-5m", "5m5m", True, None, "1h-30m", math.inf])
def test_parse_duration_refuses_what_it_cannot_read(text) -> None:
    with pytest.raises(ValueError, match="bake_seconds"):
        parse_duration(text, what="bake_seconds")


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"steps": (10, 50, 30, 100)}, r"steps must be strictly increasing, got \[10, 50, 30, 100\]"),
        ({"steps": (10, 10, 100)}, "steps must be strictly increasing"),
        ({"steps": (10, 30, 50)}, r"steps must end at 100 .*got \[10, 30, 50\]"),
        ({"steps": (0, 100)}, "steps must be integer percents in 1..100, got 0"),
        ({"steps": "10,thirty,100"}, "steps must be integer percents like '10,30,50,100', got '10,thirty,100'"),
        ({"steps": ()}, "steps must not be empty"),
        ({"bake_seconds": -5}, "bake_seconds must be a finite duration >= 0, got -5"),
        ({"bake_seconds": "five minutes"}, "bake_seconds: cannot read 'five minutes' as a duration"),
        ({"final_bake_seconds": "10x"}, "final_bake_seconds: cannot read '10x'"),
        ({"strategy": "linear"}, "strategy must be one of 'canary', 'shadow', 'blue-green', 'immediate', got 'linear'"),
        ({"on_hold_limit": "ignore"}, "on_hold_limit must be 'rollback' or 'pause', got 'ignore'"),
        ({"min_requests": 0}, "min_requests must be >= 1, got 0"),
        ({"min_requests": 10.5}, "min_requests must be an integer, got 10.5"),
        ({"error_alpha": 0}, "error_alpha must be between 0 and 1"),
        ({"latency_alpha": 1.0}, "latency_alpha must be between 0 and 1"),
        ({"max_error_rate": 5}, r"max_error_rate must be a fraction in \(0, 1\] \(0.05 = 5%\), got 5.0"),
        ({"max_p95_latency_ms": -1}, "max_p95_latency_ms must be > 0 ms"),
        ({"min_latency_increase": -0.1}, "min_latency_increase must be >= 0, got -0.1"),
        ({"failure_limit": 0}, "failure_limit must be >= 1, got 0"),
        ({"hold_limit": True}, "hold_limit must be an integer, got True"),
        ({"require_approval": "maybe"}, "require_approval must be true or false, got 'maybe'"),
        ({"deadline_seconds": 0}, "deadline_seconds must be > 0"),
        # fields that disagree: the deadline cannot fit the bakes
        ({"bake_seconds": "30m"}, r"deadline_seconds 3600 is shorter than the shortest possible rollout 5700 s "
                                  r"\(bake_seconds 1800 x 3 bake\(s\) below 100% \+ final_bake_seconds 300\)"),
    ],
)
def test_bad_policies_are_refused_with_the_field_named(kwargs, needle) -> None:
    with pytest.raises(ValueError, match=needle):
        CanaryPolicy(**kwargs)


def test_from_mapping_refuses_unknown_fields() -> None:
    with pytest.raises(ValueError, match="unknown canary policy field\\(s\\): bake; known:"):
        CanaryPolicy.from_mapping({"bake": "5m"})

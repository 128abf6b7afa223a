"""The evaluation gate, as decision tables: floors, margin against production, missing metrics."""

from __future__ import annotations

import math

import pytest

from flows.gate import GatePolicy, evaluate_gate

SEED_POLICY = GatePolicy(floors={"accuracy": 0.85, "f1": 0.80}, max_regression=0.01)


@pytest.mark.parametrize(
    ("candidate", "production", "passed", "needle"),
    [
        # first model ever: floors alone decide
        ({"accuracy": 0.90, "f1": 0.85}, None, True, "no production model"),
        ({"accuracy": 0.84, "f1": 0.85}, None, False, "accuracy 0.84 breaks the floor 0.85"),
        ({"accuracy": 0.90, "f1": 0.79}, None, False, "f1 0.79 breaks the floor 0.8"),
        # exactly on the floor passes
        ({"accuracy": 0.85, "f1": 0.80}, None, True, "every floor holds"),
        # against production: equal, better, within the margin, beyond it
        ({"accuracy": 0.90, "f1": 0.85}, {"accuracy": 0.90, "f1": 0.85}, True, "not worse than production"),
        ({"accuracy": 0.95, "f1": 0.90}, {"accuracy": 0.90, "f1": 0.85}, True, "not worse than production"),
        ({"accuracy": 0.895, "f1": 0.85}, {"accuracy": 0.90, "f1": 0.85}, True, "not worse than production"),
        ({"accuracy": 0.88, "f1": 0.85}, {"accuracy": 0.90, "f1": 0.85}, False,
         "accuracy 0.88 vs production 0.9 (-0.02; worse than the allowed regression 0.01)"),
        # missing or NaN metrics never pass
        ({"accuracy": 0.90}, None, False, "candidate has no usable 'f1' metric"),
        ({"accuracy": 0.90, "f1": math.nan}, None, False, "candidate has no usable 'f1' metric"),
        ({"accuracy": 0.90, "f1": 0.85}, {"accuracy": 0.90}, False,
         "production has no usable 'f1' metric: cannot compare with production"),
    ],
)
def test_decision_table(candidate, production, passed, needle) -> None:
    verdict = evaluate_gate(candidate, production, SEED_POLICY)
    assert verdict.passed is passed
    assert needle in verdict.reason
    assert verdict.reason.startswith("passed" if passed else "rejected")


def test_every_failure_is_named_not_only_the_first() -> None:
    verdict = evaluate_gate({"accuracy": 0.80, "f1": 0.70}, {"accuracy": 0.95, "f1": 0.90}, SEED_POLICY)
    assert not verdict.passed
    assert len(verdict.failures) == 4
    assert [r["check"] for r in verdict.rows() if not r["passed"]] == ["floor", "floor", "vs-production", "vs-production"]


def test_lower_is_better_metrics_are_ceilings_and_regress_upwards() -> None:
    policy = GatePolicy(floors={"log_loss": 0.30}, max_regression=0.02)
    assert evaluate_gate({"log_loss": 0.25}, None, policy).passed
    ceiling = evaluate_gate({"log_loss": 0.31}, None, policy)
    assert not ceiling.passed and "log_loss 0.31 breaks the ceiling 0.3" in ceiling.reason
    assert evaluate_gate({"log_loss": 0.26}, {"log_loss": 0.25}, policy).passed  # +0.01 within 0.02
    worse = evaluate_gate({"log_loss": 0.28}, {"log_loss": 0.25}, policy)
    assert not worse.passed and worse.checks[-1].limit == pytest.approx(0.27)


def test_compare_can_name_metrics_beyond_the_floors() -> None:
    policy = GatePolicy(floors={"accuracy": 0.5}, compare=("accuracy", "roc_auc"), max_regression=0.0)
    verdict = evaluate_gate({"accuracy": 0.9, "roc_auc": 0.90}, {"accuracy": 0.9, "roc_auc": 0.91}, policy)
    assert not verdict.passed and "roc_auc 0.9 vs production 0.91" in verdict.reason


def test_verdict_carries_both_models_metrics_and_the_policy() -> None:
    verdict = evaluate_gate({"accuracy": 0.9, "f1": 0.85, "n": 100}, {"accuracy": 0.89, "f1": 0.84}, SEED_POLICY)
    doc = verdict.to_dict()
    assert doc["candidate"]["accuracy"] == 0.9 and doc["production"]["f1"] == 0.84
    assert doc["policy"] == {"floors": {"accuracy": 0.85, "f1": 0.80}, "max_regression": 0.01,
                             "compare": ["accuracy", "f1"]}


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"floors": {"accuracy": "high"}}, "floor for 'accuracy' must be a number"),
        ({"floors": {"accuracy": 0.8}, "max_regression": -0.1}, "max_regression must be >= 0"),
        ({"floors": {}}, "at least one floor"),
        ({"floors": ["accuracy"]}, "floors must map metric names"),
        ({"compare": "accuracy"}, "compare must be a list"),
    ],
)
def test_bad_policies_are_refused_with_the_field_named(kwargs, needle) -> None:
    with pytest.raises(ValueError, match=needle):
        GatePolicy(**kwargs)

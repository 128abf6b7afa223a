"""flows.drift: KS and chi-square equal scipy's, corrections match hand-computed values, skips explain
themselves, and the decision rule behaves in seeded simulations."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chi2_contingency, ks_2samp

from flows.drift import DriftReport, adjust_pvalues, ks_drift, profile_reference

FEATURE_KEYS = {"name", "test", "statistic", "p_value", "p_value_adjusted", "drifted", "n_reference",
                "n_current", "nan_reference", "nan_current", "reason", "effect"}


def _sample(kind: str, n: int, rng: np.random.Generator, shift: float = 0.0) -> np.ndarray:
    if kind == "normal":
        return rng.normal(shift, 1.0, n)
    if kind == "ties":
        return np.round(rng.normal(shift, 1.0, n), 1)
    if kind == "discrete":
        return rng.integers(0, 5, n).astype(float) + (shift > 0)
    if kind == "int":
        return rng.integers(0, 3, n)
    if kind == "cauchy":
        return rng.standard_cauchy(n) + shift
    if kind == "constant":
        return np.full(n, 3.0)
    raise AssertionError(kind)


SHAPES = [
    (1, 1), (1, 5), (3, 4), (7, 7), (10, 13), (50, 50), (100, 37), (500, 700), (2000, 2000),
    (3001, 4999), (10000, 10000), (10000, 9), (10001, 10001), (12000, 300), (25000, 18000),
]


@pytest.mark.parametrize("n1,n2", SHAPES)
@pytest.mark.parametrize("kind", ["normal", "ties", "discrete", "int", "cauchy"])
@pytest.mark.parametrize("shift", [0.0, 0.15])
def test_ks_equals_scipy(n1: int, n2: int, kind: str, shift: float) -> None:
    rng = np.random.default_rng(zlib.crc32(f"{n1}-{n2}-{kind}-{shift}".encode()))
    a, b = _sample(kind, n1, rng), _sample(kind, n2, rng, shift)
    f = ks_drift(pd.DataFrame({"x": a}), pd.DataFrame({"x": b})).feature("x")
    expected = ks_2samp(a, b, method="auto")
    assert f.test == "ks"
    assert abs(f.statistic - float(expected.statistic)) <= 1e-12, "D must equal scipy's"
    assert abs(f.p_value - float(expected.pvalue)) <= 1e-12, "p-value must equal scipy's"


def test_ks_with_nans_equals_scipy_on_dropped_columns() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=3000), rng.normal(0.1, size=12000)
    a[rng.random(3000) < 0.1] = np.nan
    b[::7] = np.nan
    f = ks_drift(pd.DataFrame({"x": a}), pd.DataFrame({"x": b})).feature("x")
    exp = ks_2samp(a[~np.isnan(a)], b[~np.isnan(b)], method="auto")
    assert (f.statistic, f.p_value) == pytest.approx((exp.statistic, exp.pvalue), abs=1e-12)
    assert f.nan_reference == int(np.isnan(a).sum()) and f.nan_current == int(np.isnan(b).sum())
    assert f.n_reference + f.nan_reference == 3000 and f.n_current + f.nan_current == 12000


def test_nullable_and_inf_values() -> None:
    ref = pd.DataFrame({"i": pd.array([1, 2, None, 4, 5, 5], dtype="Int64"), "f": [1.0, np.inf, -np.inf, 0, 2, 3]})
    cur = pd.DataFrame({"i": pd.array([2, 3, 3, None, None, 9], dtype="Int64"), "f": [np.inf, 1, 1, 1, 2, np.nan]})
    r = ks_drift(ref, cur)
    e = ks_2samp([1, 2, 4, 5, 5], [2, 3, 3, 9])
    assert r.feature("i").p_value == pytest.approx(e.pvalue, abs=1e-12)
    assert r.feature("i").nan_current == 2
    e = ks_2samp([1.0, np.inf, -np.inf, 0, 2, 3], [np.inf, 1, 1, 1, 2])
    assert (r.feature("f").statistic, r.feature("f").p_value) == pytest.approx((e.statistic, e.pvalue), abs=1e-12)


def test_constant_columns_match_scipy() -> None:
    f = ks_drift(pd.DataFrame({"c": [3.0] * 20}), pd.DataFrame({"c": [3.0] * 15})).feature("c")
    assert (f.test, f.statistic, f.p_value, f.drifted) == ("ks", 0.0, 1.0, False)
    f = ks_drift(pd.DataFrame({"c": [3.0] * 20}), pd.DataFrame({"c": [4.0] * 15})).feature("c")
    e = ks_2samp([3.0] * 20, [4.0] * 15)
    assert (f.statistic, f.p_value) == pytest.approx((e.statistic, e.pvalue), abs=1e-12)


def test_chi2_equals_chi2_contingency_including_one_sided_categories() -> None:
    ref = pd.DataFrame({"s": pd.Series(["a"] * 50 + ["b"] * 30 + ["c"] * 20 + [None] * 5, dtype="str"),
                        "k": pd.Categorical(["x"] * 60 + ["y"] * 45, categories=["x", "y", "unused"]),
                        "b": [True] * 70 + [False] * 35})
    cur = pd.DataFrame({"s": pd.Series(["a"] * 20 + ["b"] * 40 + ["d"] * 10, dtype="str"),
                        "k": pd.Categorical(["x"] * 20 + ["y"] * 50, categories=["x", "y", "unused"]),
                        "b": [True] * 20 + [False] * 50})
    r = ks_drift(ref, cur, correction="none")
    s = r.feature("s")
    exp = chi2_contingency(np.array([[50, 30, 20, 0], [20, 40, 0, 10]]))
    assert s.test == "chi2" and s.nan_reference == 5 and s.n_reference == 100
    assert (s.statistic, s.p_value) == pytest.approx((exp.statistic, exp.pvalue), rel=1e-12)
    assert s.effect == pytest.approx(np.sqrt(exp.statistic / 170)), "effect is Cramér's V"
    for name, table in (("k", [[60, 45], [20, 50]]), ("b", [[70, 35], [20, 50]])):
        exp = chi2_contingency(np.array(table))
        f = r.feature(name)
        assert f.test == "chi2" and f.statistic == pytest.approx(exp.statistic, rel=1e-12)
        assert f.p_value == pytest.approx(exp.pvalue, rel=1e-12)


def test_bonferroni_and_bh_hand_computed() -> None:
    p = [0.01, 0.04, 0.03, 0.005, 0.5]
    assert adjust_pvalues(p, "none").tolist() == p
    assert adjust_pvalues(p, "bonferroni") == pytest.approx([0.05, 0.2, 0.15, 0.025, 1.0])
    # BH: sorted 0.005,0.01,0.03,0.04,0.5 -> *5/rank 0.025,0.025,0.05,0.05,0.5, then running min from the top
    assert adjust_pvalues(p, "fdr_bh") == pytest.approx([0.025, 0.05, 0.05, 0.025, 0.5])
    # monotone step-up: a larger raw p never gets a smaller adjusted p; capped at 1
    assert adjust_pvalues([0.02, 0.021, 0.9, 0.95], "fdr_bh") == pytest.approx([0.042, 0.042, 0.95, 0.95])
    assert adjust_pvalues([0.6, 0.7], "bonferroni").tolist() == [1.0, 1.0]


def test_correction_applies_to_tested_features_only_and_decides() -> None:
    rng = np.random.default_rng(3)
    ref = pd.DataFrame({"a": rng.normal(size=400), "b": rng.normal(size=400), "when": pd.Timestamp("2026-01-01")})
    cur = pd.DataFrame({"a": rng.normal(0.4, size=400), "b": rng.normal(size=400), "when": pd.Timestamp("2026-01-02")})
    r = ks_drift(ref, cur)
    a, b = r.feature("a"), r.feature("b")
    assert a.p_value_adjusted == pytest.approx(min(1.0, 2 * a.p_value)), "m = 2 tested features, not 3"
    assert a.drifted and not b.drifted and r.drift_detected
    assert not ks_drift(ref, cur, drift_share=0.75).drift_detected, "1 of 2 drifted < 75%"
    assert ks_drift(ref, cur, drift_share=0.5).drift_detected
    assert not ks_drift(ref, cur, min_statistic=0.9).feature("a").drifted, "D below min_statistic"
    doc = r.to_dict()
    assert json.loads(json.dumps(doc)) == doc
    assert set(doc) == {"drift_detected", "alpha", "correction", "min_statistic", "drift_share", "features"}
    assert all(set(f) == FEATURE_KEYS for f in doc["features"])
    assert all((f["reason"] is None) == (f["test"] != "skipped") for f in doc["features"])


def test_skipped_columns_say_why() -> None:
    ref = pd.DataFrame({"only_ref": [1.0, 2.0], "nan": [np.nan, np.nan], "when": pd.to_datetime(["2026-01-01"] * 2),
                        "z": np.array([1 + 1j, 2j]), "mixed": [1.0, 2.0], "ok": [1.0, 2.0]})
    cur = pd.DataFrame({"only_cur": [1.0, 2.0], "nan": [1.0, 2.0], "when": pd.to_datetime(["2026-01-01"] * 2),
                        "z": np.array([1 + 1j, 2j]), "mixed": ["a", "b"], "ok": [1.0, 3.0]})
    r = ks_drift(ref, cur)
    reasons = {f.name: f.reason for f in r.skipped}
    assert "missing in current" in reasons["only_ref"]
    assert "missing in reference" in reasons["only_cur"]
    assert "NaN" in reasons["nan"] and "reference" in reasons["nan"]
    assert "unsupported dtype datetime64" in reasons["when"]
    assert "unsupported dtype complex" in reasons["z"]
    assert "dtype mismatch" in reasons["mixed"]
    assert r.feature("ok").test == "ks" and r.feature("nan").nan_reference == 2
    empty = ks_drift(pd.DataFrame({"x": np.array([], dtype=float)}), pd.DataFrame({"x": [1.0]}))
    assert empty.feature("x").reason == "reference is empty (0 rows)" and not empty.drift_detected
    assert not ks_drift(ref, cur, drift_share=0.5, columns=["nan", "when"]).drift_detected, "nothing tested"


@pytest.mark.parametrize("kwargs,arg", [
    ({"alpha": 0}, "alpha"), ({"alpha": 1.0}, "alpha"), ({"alpha": "0.05"}, "alpha"), ({"alpha": True}, "alpha"),
    ({"correction": "holm"}, "correction"), ({"min_statistic": -0.1}, "min_statistic"),
    ({"min_statistic": float("nan")}, "min_statistic"), ({"drift_share": 0.0}, "drift_share"),
    ({"drift_share": 1.5}, "drift_share"), ({"columns": ["nope"]}, "columns"), ({"columns": "x"}, "columns"),
    ({"columns": []}, "columns"),
])
def test_argument_validation_names_the_argument(kwargs: dict, arg: str) -> None:
    df = pd.DataFrame({"x": [1.0, 2.0]})
    with pytest.raises(ValueError, match=arg):
        ks_drift(df, df, **kwargs)


def test_profile_reuse_identical_and_inputs_unchanged() -> None:
    rng = np.random.default_rng(5)
    ref = pd.DataFrame({"a": rng.normal(size=3000), "b": np.round(rng.normal(size=3000), 1),
                        "c": rng.choice(["u", "v", "w"], 3000), "d": rng.normal(size=3000)})
    ref.loc[::10, "a"] = np.nan
    ref_copy = ref.copy(deep=True)
    reports = []
    for shift in (0.0, 0.2):
        cur = pd.DataFrame({"a": rng.normal(shift, size=20000), "b": np.round(rng.normal(shift, size=20000), 1),
                            "c": rng.choice(["u", "v", "x"], 20000)})
        cur_copy = cur.copy(deep=True)
        fresh = ks_drift(ref, cur, correction="fdr_bh")
        profile = profile_reference(ref)
        reused = ks_drift(profile, cur, correction="fdr_bh")
        assert fresh == reused, "a reused profile must give the identical report"
        assert fresh.to_dict() == reused.to_dict()
        pd.testing.assert_frame_equal(cur, cur_copy)
        reports.append(fresh)
    pd.testing.assert_frame_equal(ref, ref_copy)
    assert isinstance(reports[0], DriftReport) and reports[0].feature("d").reason == "column 'd' missing in current"
    with pytest.raises(AttributeError):
        reports[0].alpha = 0.1  # type: ignore[misc]


def test_false_alarm_rate_without_drift() -> None:
    """50 features, no drift, 200 runs at 200 rows: Bonferroni keeps the family-wise rate near alpha."""
    rng = np.random.default_rng(11)
    cols = [f"f{i}" for i in range(50)]
    alarms = {"bonferroni": 0, "none": 0}
    for _ in range(200):
        ref = pd.DataFrame(rng.normal(size=(200, 50)), columns=cols)
        cur = pd.DataFrame(rng.normal(size=(200, 50)), columns=cols)
        profile = profile_reference(ref)
        for corr in alarms:
            alarms[corr] += ks_drift(profile, cur, correction=corr).drift_detected
    assert alarms["bonferroni"] / 200 <= 0.05 + 0.03, alarms
    assert alarms["none"] / 200 > 0.5, alarms


def test_detects_a_small_shift_in_one_of_fifty_features() -> None:
    """A 0.3 sigma shift in one feature of 50 at 5,000 rows is found in >= 95% of runs."""
    rng = np.random.default_rng(12)
    cols = [f"f{i}" for i in range(50)]
    hits = 0
    for _ in range(40):
        ref = pd.DataFrame(rng.normal(size=(5000, 50)), columns=cols)
        cur_arr = rng.normal(size=(5000, 50))
        cur_arr[:, 7] += 0.3
        r = ks_drift(ref, pd.DataFrame(cur_arr, columns=cols))
        hits += r.drift_detected and r.feature("f7").drifted
    assert hits >= 38, hits


# -- the vectorised smirnov tail (flows/smirnov.py) ------------------------------------------------


def test_fast_smirnov_equals_scipy_across_its_range() -> None:
    """Random (n, n x^2) over the whole fast range, both ends included: relative difference <= 1e-12."""
    from scipy.special import smirnov as scipy_smirnov

    from flows import smirnov

    rng = np.random.default_rng(20261126)
    cases = [(smirnov.FAST_MIN_N, 2.2000001), (smirnov.FAST_MAX_N, 3.0), (444_444, 2.78), (444_444, 27.7)]
    cases += [(int(np.exp(rng.uniform(np.log(2e4), np.log(2.5e5)))),
               float(np.exp(rng.uniform(np.log(2.2), np.log(smirnov.FAST_MAX_NX2 - 1e-6))))) for _ in range(14)]
    for n, t in cases:
        x = (t / n) ** 0.5
        assert smirnov.in_fast_range(n, x)
        ours, theirs = smirnov.smirnov(n, x), float(scipy_smirnov(n, x))
        assert theirs > 0 and abs(ours - theirs) <= 1e-12 * theirs, (n, t, ours, theirs)


@pytest.mark.parametrize(("n", "x"), [(19_999, 0.02), (1_000_001, 0.002), (50_000, 0.001), (50_000, 0.08)])
def test_fast_smirnov_refuses_outside_its_checked_range(n: int, x: float) -> None:
    from flows import smirnov

    assert not smirnov.in_fast_range(n, x)
    with pytest.raises(ValueError, match="fast path"):
        smirnov.smirnov(n, x)


@pytest.mark.parametrize("shift", [0.035, 0.07, 0.15])
def test_large_samples_in_the_fast_tail_equal_scipy(shift: float) -> None:
    """ks_drift on samples whose p-value comes from the vectorised tail: D and p equal ks_2samp's."""
    from flows import smirnov

    rng = np.random.default_rng(int(shift * 1000))
    a, b = rng.normal(0, 1, 60_000), rng.normal(shift, 1, 50_000)
    expected = ks_2samp(a, b, method="auto")
    n_eff = round(60_000 * 50_000 / 110_000)
    assert smirnov.in_fast_range(n_eff, float(expected.statistic)), "the case must exercise the fast path"
    f = ks_drift(pd.DataFrame({"x": a}), pd.DataFrame({"x": b})).feature("x")
    assert f.statistic == pytest.approx(float(expected.statistic), rel=0, abs=1e-15)
    assert abs(f.p_value - float(expected.pvalue)) <= 1e-12 * float(expected.pvalue)

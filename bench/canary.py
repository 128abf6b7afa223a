"""Simulated rollouts: flows.canary_verdict.assess_step against the seed's rule, in the same run.

    .venv/bin/python bench/canary.py [--rollouts 200] [--seed N] [--rps 50] [--bad-rate 0.02]

Traffic (stated, and the defaults of the flags): 50 requests/s in total on the endpoint, the default
CanaryPolicy's steps 10 -> 30 -> 50 -> 100 with a 5-minute bake per step and a 5-minute final bake at
100%. One bake is 50 x 300 = 15,000 requests, split by the step's weights:

    10%: canary  1,500 / stable 13,500      50%: canary 7,500 / stable 7,500
    30%: canary  4,500 / stable 10,500     100%: canary 15,000 (stable undeployed after the final bake)

Stable errs at 1%. A good canary errs at 1% too; a bad one at 2% (it doubles the error rate). Errors
are binomial per bake. Latency is lognormal (median 80 ms, sigma 0.35) for both versions in these runs,
one request in ten sampled (as an endpoint's request logging samples), so the latency test runs on
real-looking data and must not cause rollbacks on its own.

Each rollout walks the steps. After each bake our verdict judges the data accumulated since the canary
started (stable=None at 100%), with alpha_scale = 1/len(steps) for the repeated looks; HOLD bakes the
step again (at most hold_limit times, then on_hold_limit), ROLLBACK ends it (failure_limit), and the
deadline applies. The seed's rule (canary error rate > 5% on the step's own canary traffic) walks the
*same* simulated traffic (common random numbers), step by step, with the same bakes.

Reported for both rules: false-rollback rate (good canaries rolled back), detection rate (bad canaries
rolled back before the canary takes 100% of traffic), the errors a bad canary served until it was
rolled back or, if it never was, until the old version was undeployed (and every request after that),
the excess errors among them (beyond the 1% stable would have served), and the mean rollout duration.
Goals (ours): false rollback <= 2%, detection >= 95%.

What traffic the default policy needs (measured with this script, 400+400 rollouts per point): the error
test runs at error_alpha 0.01 x 1/4 = 0.0025 per look, on cumulative data, at the ends of the 10%, 30%
and 50% bakes (100% is judged on the guards alone, so a 2% canary is caught before 100% or not at all).
Detection of a 1% -> 2% canary is about 38% at 5 requests/s, 79% at 10, 85% at 12, 95-96% at 15, 97-98%
at 18, 99% at 20 and 100% from 25 requests/s; so the detection goal needs about 18 requests/s or more
(about 5,000 canary and 11,000 stable requests by the end of the 50% bake). With less traffic, lengthen
bake_seconds in proportion: it is the request counts that matter. False rollbacks do not depend on
traffic: the union bound over 3 comparative looks x 2 tests (errors, latency) x 0.0025 keeps them <= 1.5%
(plus a negligible chance that a 1% model crosses the 5% ceiling guard); measured 0-1.8% per 400 runs.
At the stated 50 requests/s about half the bad canaries are rolled back after the first bake at 10%,
the rest after 30%.
Runs in a few seconds.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from blocks.endpoint import ArmStats  # noqa: E402
from flows.canary_verdict import CanaryPolicy, Decision, assess_step, seed_rule  # noqa: E402

STABLE_RATE, GOOD_RATE, BAD_RATE = 0.01, 0.01, 0.02
LATENCY_MEDIAN_MS, LATENCY_SIGMA, LATENCY_SAMPLED = 80.0, 0.35, 0.10
GOAL_FALSE_ROLLBACK, GOAL_DETECTION = 0.02, 0.95
SEED_THRESHOLD = 0.05


@dataclass(frozen=True)
class Rollout:
    rolled_back: bool
    at_step: int  # the canary's traffic percent when it ended (rolled back or promoted at 100)
    why: str  # "promoted" | "verdict" | "hold limit" | "paused" | "deadline"
    seconds: float
    canary_requests: int  # every request the canary served in the rollout
    canary_errors: int


class Tape:
    """The simulated traffic of one rollout: period `j` of step `k` is the same draw for every rule."""

    def __init__(self, seed: int, kind: int, index: int, canary_rate: float, rps: float, policy: CanaryPolicy):
        self.key = (seed, kind, index)
        self.canary_rate, self.rps, self.policy = canary_rate, rps, policy
        self._cache: dict[tuple[int, int], tuple[ArmStats, ArmStats]] = {}

    def __call__(self, k: int, j: int) -> tuple[ArmStats, ArmStats]:
        if (k, j) not in self._cache:
            rng = np.random.default_rng([*self.key, k, j])
            weight = self.policy.effective_steps[k]
            seconds = self.policy.final_bake_seconds if weight == 100 else self.policy.bake_seconds
            total = int(round(self.rps * seconds))
            n_c = int(round(total * weight / 100))
            n_s = total - n_c
            arms = []
            for n, rate in ((n_c, self.canary_rate), (n_s, STABLE_RATE)):
                errors = int(rng.binomial(n, rate)) if n else 0
                k_lat = int(rng.binomial(n, LATENCY_SAMPLED)) if n else 0
                lat = rng.lognormal(np.log(LATENCY_MEDIAN_MS), LATENCY_SIGMA, k_lat)
                arms.append(ArmStats(n, errors, tuple(lat.tolist())))
            self._cache[(k, j)] = (arms[0], arms[1])
        return self._cache[(k, j)]


# judge(weight, this bake's canary, this bake's stable, canary since start, stable since start) -> Decision
Judge = Callable[[int, ArmStats, ArmStats, ArmStats, ArmStats], Decision]


def walk(tape: Tape, policy: CanaryPolicy, judge: Judge) -> Rollout:
    steps = policy.effective_steps
    cum_c, cum_s = ArmStats(), ArmStats()
    elapsed = 0.0
    for k, weight in enumerate(steps):
        holds = failures = 0
        j = 0
        while True:
            seconds = policy.final_bake_seconds if weight == 100 else policy.bake_seconds
            if elapsed + seconds > policy.deadline_seconds:
                return Rollout(True, weight, "deadline", elapsed, cum_c.requests, cum_c.errors)
            step_c, step_s = tape(k, j)
            elapsed += seconds
            cum_c, cum_s = cum_c + step_c, cum_s + step_s
            decision = judge(weight, step_c, step_s, cum_c, cum_s)
            j += 1
            if decision is Decision.ADVANCE:
                break
            if decision is Decision.ROLLBACK:
                failures += 1
                if failures >= policy.failure_limit:
                    return Rollout(True, weight, "verdict", elapsed, cum_c.requests, cum_c.errors)
            else:
                holds += 1
                if holds >= policy.hold_limit:
                    return Rollout(policy.on_hold_limit == "rollback", weight,
                                   "hold limit" if policy.on_hold_limit == "rollback" else "paused",
                                   elapsed, cum_c.requests, cum_c.errors)
    return Rollout(False, 100, "promoted", elapsed, cum_c.requests, cum_c.errors)


def our_judge(policy: CanaryPolicy) -> Judge:
    scale = 1 / len(policy.effective_steps)

    def judge(weight: int, step_c: ArmStats, step_s: ArmStats, cum_c: ArmStats, cum_s: ArmStats) -> Decision:
        return assess_step(None if weight == 100 else cum_s, cum_c, policy, alpha_scale=scale).decision

    return judge


def seed_judge(weight: int, step_c: ArmStats, step_s: ArmStats, cum_c: ArmStats, cum_s: ArmStats) -> Decision:
    return seed_rule(step_c, SEED_THRESHOLD)


def main() -> int:
    p = argparse.ArgumentParser(description="canary verdict vs the seed's 5% rule, simulated rollouts")
    p.add_argument("--rollouts", type=int, default=200, help="rollouts of each kind (good, bad)")
    p.add_argument("--seed", type=int, default=20261125)
    p.add_argument("--rps", type=float, default=50.0, help="total requests/s on the endpoint")
    p.add_argument("--bad-rate", type=float, default=BAD_RATE, help="the bad canary's error rate")
    p.add_argument("--rollback-runs", type=int, default=20, help="timed rollbacks on a real LocalEndpoint")
    p.add_argument("--skip-endpoint", action="store_true", help="only the simulation")
    args = p.parse_args()
    policy = CanaryPolicy()
    started = time.perf_counter()

    bake = int(round(args.rps * policy.bake_seconds))
    print(f"traffic: {args.rps:g} requests/s in total; steps {list(policy.effective_steps)}, bake "
          f"{policy.bake_seconds:g} s per step, final bake {policy.final_bake_seconds:g} s at 100%")
    print("per-bake requests: " + ", ".join(
        f"{w}%: canary {int(round(bake * w / 100)):,} / stable {bake - int(round(bake * w / 100)):,}"
        if w < 100 else f"100%: canary {int(round(args.rps * policy.final_bake_seconds)):,}"
        for w in policy.effective_steps))
    print(f"stable errs at {STABLE_RATE:.0%}; good canary {GOOD_RATE:.0%}, bad canary {args.bad_rate:.0%}; "
          f"latency lognormal median {LATENCY_MEDIAN_MS:g} ms for both, {LATENCY_SAMPLED:.0%} sampled; "
          f"{args.rollouts} rollouts of each, seed {args.seed}")
    print(f"policy: error_alpha {policy.error_alpha:g}, latency_alpha {policy.latency_alpha:g}, alpha_scale "
          f"1/{len(policy.effective_steps)}, min_requests {policy.min_requests}, min_latency_increase "
          f"{policy.min_latency_increase:.0%}, max_error_rate {policy.max_error_rate:.0%}, hold_limit "
          f"{policy.hold_limit}, failure_limit {policy.failure_limit}, deadline {policy.deadline_seconds:g} s")

    rules: dict[str, Judge] = {"ours (assess_step)": our_judge(policy), "seed (error rate > 5%)": seed_judge}
    results: dict[str, dict[str, list[Rollout]]] = {name: {"good": [], "bad": []} for name in rules}
    timings = {name: 0.0 for name in rules}
    for kind, rate in (("good", GOOD_RATE), ("bad", args.bad_rate)):
        for i in range(args.rollouts):
            tape = Tape(args.seed, 0 if kind == "good" else 1, i, rate, args.rps, policy)
            for name, judge in rules.items():
                t = time.perf_counter()
                results[name][kind].append(walk(tape, policy, judge))
                timings[name] += time.perf_counter() - t

    verdict = lambda ok: "MET" if ok else "NOT MET"  # noqa: E731
    print()
    print(f"{'rule':<24}{'false rollback':>15}{'detection':>11}{'bad: errors served':>20}{'excess':>8}"
          f"{'good: minutes':>15}{'bad: minutes':>14}{'judge s':>9}")
    goals = []
    for name in rules:
        good, bad = results[name]["good"], results[name]["bad"]
        false_rb = sum(r.rolled_back for r in good) / len(good)
        detected = sum(r.rolled_back and r.at_step < 100 for r in bad) / len(bad)
        errors = float(np.mean([r.canary_errors for r in bad]))
        excess = float(np.mean([r.canary_errors - r.canary_requests * STABLE_RATE for r in bad]))
        dur_good = float(np.mean([r.seconds for r in good])) / 60
        dur_bad = float(np.mean([r.seconds for r in bad])) / 60
        print(f"{name:<24}{false_rb:>15.1%}{detected:>11.1%}{errors:>20.1f}{excess:>8.1f}"
              f"{dur_good:>15.1f}{dur_bad:>14.1f}{timings[name]:>9.2f}")
        goals.append((name, false_rb, detected))
    print()
    for name in rules:
        where: dict[str, int] = {}
        for r in results[name]["bad"]:
            label = f"rolled back at {r.at_step}% ({r.why})" if r.rolled_back else f"{r.why} at {r.at_step}%"
            where[label] = where.get(label, 0) + 1
        good_why: dict[str, int] = {}
        for r in results[name]["good"]:
            if r.rolled_back:
                label = f"{r.at_step}% ({r.why})"
                good_why[label] = good_why.get(label, 0) + 1
        print(f"{name}: bad canaries: " + ", ".join(f"{v} {k}" for k, v in sorted(where.items()))
              + "; good canaries rolled back: " + (", ".join(f"{v} at {k}" for k, v in sorted(good_why.items()))
                                                   or "none"))
    print("(errors served: a bad canary never rolled back keeps serving them after promotion; counted here "
          "until the old version is undeployed)")
    print()
    for name, false_rb, detected in goals:
        print(f"{name}: goal false rollback <= {GOAL_FALSE_ROLLBACK:.0%}: {false_rb:.1%} "
              f"{verdict(false_rb <= GOAL_FALSE_ROLLBACK)}; goal detection >= {GOAL_DETECTION:.0%}: "
              f"{detected:.1%} {verdict(detected >= GOAL_DETECTION)}")
    if not args.skip_endpoint:
        rollback_timing(args.rollback_runs)
    print(f"wall time {time.perf_counter() - started:.1f} s")
    return 0


def rollback_timing(runs: int) -> None:
    """Time from a ROLLBACK verdict to 100% on stable, on a real LocalEndpoint under traffic.

    Measures `flows.canary.rollback` (what the flow calls on a ROLLBACK verdict): the split is moved
    to {stable: 100} first, then the canary undeployed, then the split checked. The time to 100% on
    stable is taken when the endpoint's own routing first answers from stable only (a probe thread
    reads the live split), and the whole call is timed too.
    """
    import statistics
    import tempfile

    from blocks.local_endpoint import LocalEndpoint
    from deployments.stack import Stack
    from deployments.traffic import Traffic
    from flows.canary import rollback
    from training.tabular import fit, make_dataset, save_model, split

    with tempfile.TemporaryDirectory(prefix="modelops-bench-canary-") as home, Stack(Path(home)) as stack:
        stack.start_endpoint()
        ep = LocalEndpoint(url=stack.endpoint_url)
        train, _ = split(make_dataset(1000, seed=1), "churned")
        model = str(save_model(fit(train, "churned", {}), Path(home) / "model"))
        stable_id = ep.deploy(model, "churn:v1")
        stable = next(m for m in ep.deployed() if m.id == stable_id)
        to_stable, whole = [], []
        with Traffic(stack.endpoint_url, rps=50):
            for i in range(runs):
                canary_id = ep.deploy(model, f"churn:bad-{i}", fault={"error_rate": 0.3})
                ep.set_traffic({stable_id: 50, canary_id: 50})
                seen: list[float] = []
                probe = threading.Thread(target=_watch, args=(ep, stable_id, seen), daemon=True)
                probe.start()
                t0 = time.perf_counter()
                rollback(ep, stable, canary_id, "bench")
                whole.append(time.perf_counter() - t0)
                probe.join(5)
                to_stable.append((seen[0] if seen else time.perf_counter()) - t0)
    print()
    print(f"rollback on the LocalEndpoint under 50 requests/s, {runs} runs: verdict -> 100% on stable "
          f"p50 {statistics.median(to_stable) * 1000:.0f} ms, max {max(to_stable) * 1000:.0f} ms; including the "
          f"canary's undeploy p50 {statistics.median(whole) * 1000:.0f} ms, max {max(whole) * 1000:.0f} ms")
    print(f"goal verdict -> 100% on stable <= 1 s: {'MET' if max(to_stable) <= 1.0 else 'NOT MET'} (max)")


def _watch(ep, stable_id: str, seen: list[float], timeout: float = 5.0) -> None:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if ep.traffic() == {stable_id: 100}:
            seen.append(time.perf_counter())
            return
        time.sleep(0.01)


if __name__ == "__main__":
    raise SystemExit(main())

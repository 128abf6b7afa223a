"""The canary judge measured on the path the flow walks: `flows.canary_judge.walk` with the default
CanaryPolicy, fed simulated traffic (and, with --endpoint-rollouts, the real local endpoint).

    .venv/bin/python bench/canary.py [--rollouts 400] [--rps 18] [--table-rollouts 200] [--endpoint-rollouts 3]

The flow (`flows.canary`) calls `walk(policy, shift=..., observe=..., record=..., ask=...)`, where
observe bakes a step and returns the window's per-arm statistics; this script calls the same `walk`
with an `observe` that draws those statistics, and `--endpoint-rollouts` runs the flow's own
`EndpointSteps` hooks against a real local endpoint under real HTTP traffic. Nothing of the walk,
the looks, the alpha spending or the tests is reimplemented here.

Simulated traffic (the defaults): `--rps` requests/s in total, split by the step's weights, the
default policy (steps 10/30/50/100, 5-minute bakes, final bake 5 minutes at 100%). Stable errs at 1%;
latency lognormal (median 80 ms, sigma 0.35); as on the local endpoint every request's latency and
prediction is reported, at most 5,000 requests per window. Predictions are the demo model's real
scores: the churn model (training.tabular, seed 1) scored on the rows deployments.traffic sends;
each request is one of those rows, drawn at random. Scenarios for the canary:

    equal        the same model, 1% errors                          -> must not be rolled back
    similar      a retrain on another sample (seed 2, KS D 0.03)    -> must not be rolled back
    errors 2%    doubles the error rate                             -> rolled back before 100%
    latency +30% the median (and every quantile) 30% slower         -> rolled back before 100%
    constant     answers class 0 for everything (200 OK)            -> rolled back before 100%
    logit +1     scores' log-odds +1 (odds x e; KS D 0.10), 200 OK   -> rolled back before 100%

(the last two through `deployments.endpoint.apply_prediction_fault`, what the endpoint's faults do).
The seed's rule (canary error rate > 5% in the step's window) walks the same traffic (common random
numbers) through the same `walk`. Goals: false rollback <= 2%, detection >= 95%.
"""

from __future__ import annotations

import argparse
import math
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from blocks.endpoint import ArmStats  # noqa: E402
from deployments.endpoint import MAX_SAMPLES, apply_prediction_fault  # noqa: E402
from flows.canary_judge import JudgedLook, WalkResult, walk  # noqa: E402
from flows.canary_verdict import Alphas, CanaryPolicy, Decision, Look, StepVerdict, seed_rule  # noqa: E402

STABLE_RATE = 0.01
LATENCY_MEDIAN_MS, LATENCY_SIGMA = 80.0, 0.35
GOAL_FALSE_ROLLBACK, GOAL_DETECTION = 0.02, 0.95
SEED_THRESHOLD = 0.05


@dataclass(frozen=True)
class Scenario:
    name: str
    bad: bool
    error_rate: float = STABLE_RATE
    latency_factor: float = 1.0
    model: str = "same"  # "same" | "similar"
    fault: tuple[tuple[str, object], ...] = ()


SCENARIOS = [
    Scenario("equal", False),
    Scenario("similar", False, model="similar"),
    Scenario("errors 2%", True, error_rate=0.02),
    Scenario("latency +30%", True, latency_factor=1.3),
    Scenario("constant", True, fault=(("predict_class", "0"),)),
    Scenario("logit +1", True, fault=(("logit_shift", 1.0),)),
]


def model_scores() -> dict[str, np.ndarray]:
    """The demo model's positive-class scores on the traffic's rows: seed 1 (stable) and seed 2."""
    import pandas as pd

    from deployments.traffic import sample_rows
    from training.tabular import fit, make_dataset, split

    rows = pd.DataFrame(sample_rows())
    out = {}
    for name, seed in (("same", 1), ("similar", 2)):
        train, _ = split(make_dataset(1200, seed=seed), "churned")
        bundle = fit(train, "churned", {})
        out[name] = bundle["pipeline"].predict_proba(rows[bundle["features"]])[:, -1].round(6)
    return out


class Tape:
    """One rollout's simulated traffic: the n-th window at a step is the same draw for every rule."""

    def __init__(self, key: tuple[int, ...], scenario: Scenario, rps: float, scores: dict[str, np.ndarray]):
        self.key, self.sc, self.rps, self.scores = key, scenario, rps, scores
        self.cache: dict[tuple[int, int], Look] = {}
        self.seen: dict[int, int] = {}

    def observer(self):
        self.seen = {}

        def observe(pct: int, bake: float, extra: bool) -> Look:
            j = self.seen.get(pct, 0)
            self.seen[pct] = j + 1
            if (pct, j) not in self.cache:
                self.cache[(pct, j)] = self._draw(pct, bake, j)
            return Look(pct, *self.cache[(pct, j)], extra=extra)

        return observe

    def _arm(self, rng: np.random.Generator, n: int, canary: bool, rows: np.ndarray | None) -> ArmStats:
        sc = self.sc
        rate = sc.error_rate if canary else STABLE_RATE
        errors = int(rng.binomial(n, rate)) if n else 0
        k = min(n, MAX_SAMPLES)
        factor = sc.latency_factor if canary else 1.0
        lat = rng.lognormal(math.log(LATENCY_MEDIAN_MS * factor), LATENCY_SIGMA, k)
        idx = rows if rows is not None else rng.integers(0, len(self.scores["same"]), k)
        base = self.scores[sc.model if canary else "same"][idx]
        classes = ["1" if p >= 0.5 else "0" for p in base]
        scores = base.tolist()
        if canary and sc.fault:
            classes, scores = apply_prediction_fault(classes, scores, ["0", "1"], dict(sc.fault))
        return ArmStats(n, errors, tuple(lat.tolist()), tuple(scores), tuple(classes))

    def _draw(self, pct: int, bake: float, j: int) -> tuple[ArmStats, ArmStats | None]:
        rng = np.random.default_rng([*self.key, pct, j])
        total = int(round(self.rps * bake))
        if pct == 0:  # shadow: the candidate answers a copy of every request stable serves
            rows = rng.integers(0, len(self.scores["same"]), min(total, MAX_SAMPLES))
            return self._arm(rng, total, True, rows), self._arm(rng, total, False, rows)
        n_c = int(round(total * pct / 100))
        canary = self._arm(rng, n_c, True, None)
        return canary, None if pct == 100 else self._arm(rng, total - n_c, False, None)


class SeedJudge:
    """The seed's rule behind the judge's interface: canary error rate > 5% in the look's window."""

    def __init__(self) -> None:
        self.judged: list[JudgedLook] = []

    def judge(self, look: Look) -> JudgedLook:
        decision = seed_rule(look.canary, SEED_THRESHOLD)
        zero = Alphas(0.0, 0.0, 0.0)
        verdict = StepVerdict(decision, (f"seed rule: {decision.value}",), (), {}, None)
        self.judged.append(JudgedLook(len(self.judged) + 1, look, verdict, zero, zero))
        return self.judged[-1]


def rollout(policy: CanaryPolicy, tape: Tape, seed_rule_: bool = False) -> tuple[WalkResult, float]:
    clock = [0.0]

    def observe(pct: int, bake: float, extra: bool, _o=tape.observer()) -> Look:
        clock[0] += bake
        return _o(pct, bake, extra)

    result = walk(policy, shift=lambda pct: None, observe=observe, clock=lambda: clock[0], start=0.0,
                  judge=SeedJudge() if seed_rule_ else None)
    return result, clock[0]


def caught(result: WalkResult) -> bool:
    """Rolled back before the canary took all of the traffic."""
    return result.outcome == "rolled-back" and result.percent < 100


def run_scenarios(policy: CanaryPolicy, rps: float, rollouts: int, seed: int, scores: dict[str, np.ndarray],
                  scenarios: list[Scenario], with_seed: bool = True) -> dict[str, dict[str, list]]:
    out: dict[str, dict[str, list]] = {}
    for si, sc in enumerate(scenarios):
        out[sc.name] = {"ours": [], "seed": []}
        for i in range(rollouts):
            tape = Tape((seed, si, i), sc, rps, scores)
            out[sc.name]["ours"].append(rollout(policy, tape))
            if with_seed:
                out[sc.name]["seed"].append(rollout(policy, tape, seed_rule_=True))
    return out


def rate(results: list, bad: bool) -> float:
    if bad:
        return sum(caught(r) for r, _ in results) / len(results)
    return sum(r.outcome == "rolled-back" for r, _ in results) / len(results)


def wilson(k: int, n: int) -> str:
    if n == 0:
        return "-"
    z = 1.96
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return f"[{max(0, centre - half):.0%}, {min(1, centre + half):.0%}]"


def main() -> int:
    p = argparse.ArgumentParser(description="the canary judge on the flow's path: simulated rollouts")
    p.add_argument("--rollouts", type=int, default=400, help="rollouts per scenario at --rps")
    p.add_argument("--rps", type=float, default=18.0, help="total requests/s on the endpoint (documented default)")
    p.add_argument("--table-rollouts", type=int, default=200, help="rollouts per point of the traffic table")
    p.add_argument("--table-rps", default="5,8,10,12,15,18,25", help="requests/s for the traffic table")
    p.add_argument("--seed", type=int, default=20261204)
    p.add_argument("--endpoint-rollouts", type=int, default=0,
                   help="rollouts per scenario on a real local endpoint (each takes minutes)")
    p.add_argument("--endpoint-rps", type=float, default=120.0,
                   help="real traffic on the endpoint; bakes are shortened so each holds --rps x 300 s of requests")
    p.add_argument("--rollback-runs", type=int, default=20, help="timed rollbacks on a real LocalEndpoint (0: none)")
    args = p.parse_args()
    policy = CanaryPolicy()
    started = time.perf_counter()
    scores = model_scores()
    print(f"policy (defaults): steps {list(policy.steps)}, bake {policy.bake_seconds:g} s, final bake "
          f"{policy.final_bake_seconds:g} s; alphas errors {policy.error_alpha:g}, latency {policy.latency_alpha:g}, "
          f"predictions {policy.prediction_alpha:g} (spent over {policy.planned_looks} planned looks, rho 2, "
          f"10% reserve for holds); min_latency_increase {policy.min_latency_increase:.0%}, min_prediction_shift "
          f"{policy.min_prediction_shift:g}, max_error_rate {policy.max_error_rate:.0%}")
    per_bake = int(round(args.rps * policy.bake_seconds))
    print(f"traffic: {args.rps:g} requests/s in total = {per_bake:,} requests per bake; stable errs at "
          f"{STABLE_RATE:.0%}; {args.rollouts} rollouts per scenario, seed {args.seed}")
    print()
    res = run_scenarios(policy, args.rps, args.rollouts, args.seed, scores, SCENARIOS)
    head = f"{'scenario':<14}{'goal':<18}{'ours':>8}{'95% CI':>13}{'seed rule':>11}   where ours ended"
    print(head)
    met = True
    for sc in SCENARIOS:
        ours, seed = res[sc.name]["ours"], res[sc.name]["seed"]
        k = sum(caught(r) if sc.bad else r.outcome == "rolled-back" for r, _ in ours)
        r_ours, r_seed = k / len(ours), rate(seed, sc.bad)
        goal = f"detect >= {GOAL_DETECTION:.0%}" if sc.bad else f"false rb <= {GOAL_FALSE_ROLLBACK:.0%}"
        ok = r_ours >= GOAL_DETECTION if sc.bad else r_ours <= GOAL_FALSE_ROLLBACK
        met &= ok
        where: dict[str, int] = {}
        for r, _ in ours:
            label = f"{r.outcome} at {r.percent}%" + (f" ({r.kind})" if r.kind not in ("promoted", "verdict") else "")
            where[label] = where.get(label, 0) + 1
        print(f"{sc.name:<14}{goal:<18}{r_ours:>8.1%}{wilson(k, len(ours)):>13}{r_seed:>11.1%}   "
              + ", ".join(f"{v} {k_}" for k_, v in sorted(where.items())) + ("" if ok else "   NOT MET"))
    mins = [t for r in res["equal"]["ours"] for t in [r[1]]]
    print(f"\na good canary's rollout: {np.mean(mins) / 60:.1f} min on average")
    bad_errors = res["errors 2%"]["ours"]
    print(f"errors 2%: rolled back at " + ", ".join(
        f"{pct}%: {sum(1 for r, _ in bad_errors if r.outcome == 'rolled-back' and r.percent == pct)}"
        for pct in policy.steps))
    print(f"goals at {args.rps:g} requests/s: {'MET' if met else 'NOT MET'}")

    # -- the traffic needed -------------------------------------------------------------------------
    rps_values = [float(x) for x in args.table_rps.split(",") if x.strip()]
    table_sc = [s for s in SCENARIOS if s.name in ("equal", "errors 2%", "latency +30%", "constant", "logit +1")]
    print(f"\ndetection (and false rollback) vs traffic, {args.table_rollouts} rollouts per point:")
    print(f"{'requests/s':>11}{'per bake':>10}" + "".join(f"{s.name:>14}" for s in table_sc))
    for rps in rps_values:
        r = run_scenarios(policy, rps, args.table_rollouts, args.seed + 1, scores, table_sc, with_seed=False)
        print(f"{rps:>11g}{int(round(rps * policy.bake_seconds)):>10,}"
              + "".join(f"{rate(r[s.name]['ours'], s.bad):>14.1%}" for s in table_sc))
    if args.endpoint_rollouts:
        endpoint_rollouts(policy, args)
    if args.rollback_runs:
        rollback_timing(args.rollback_runs)
    print(f"\nwall time {time.perf_counter() - started:.1f} s")
    return 0


def endpoint_rollouts(policy: CanaryPolicy, args: argparse.Namespace) -> None:
    """The flow's own hooks (`flows.canary.EndpointSteps`) on a real local endpoint under real traffic.

    Time is compressed, not the evidence: bakes are shortened so that each holds what --rps would
    serve in the policy's 5 minutes at --endpoint-rps of real traffic; everything else is the default
    policy. The final bake is 5 s (it is judged on the guards alone)."""
    import dataclasses
    import tempfile

    from blocks.local_endpoint import LocalEndpoint
    from deployments.stack import Stack
    from deployments.traffic import Traffic
    from flows.canary import EndpointSteps, rollback
    from training.tabular import fit, make_dataset, save_model, split

    bake = policy.bake_seconds * args.rps / args.endpoint_rps
    fast = dataclasses.replace(policy, bake_seconds=bake, final_bake_seconds=5.0)
    faults = {"equal": None, "errors 2%": {"error_rate": 0.02}, "constant": {"predict_class": "0"},
              "logit +1": {"logit_shift": 1.0}}
    print(f"\nreal local endpoint: {args.endpoint_rps:g} requests/s of real HTTP traffic, bakes of {bake:.0f} s "
          f"(= {args.rps:g} requests/s x {policy.bake_seconds:g} s), {args.endpoint_rollouts} rollouts per scenario; "
          f"stable errs at 1% (an injected fault on both arms)")
    with tempfile.TemporaryDirectory(prefix="modelops-bench-canary-") as home, Stack(Path(home)) as stack:
        stack.start_endpoint()
        ep = LocalEndpoint(url=stack.endpoint_url)
        train, _ = split(make_dataset(1200, seed=1), "churned")
        model = str(save_model(fit(train, "churned", {}), Path(home) / "model"))
        stable_id = ep.deploy(model, "churn:stable", fault={"error_rate": STABLE_RATE})
        ep.set_traffic({stable_id: 100})
        stable = next(m for m in ep.deployed() if m.id == stable_id)
        with Traffic(stack.endpoint_url, rps=args.endpoint_rps, threads=8):
            for name, fault in faults.items():
                outcomes = []
                for i in range(args.endpoint_rollouts):
                    canary_fault = {"error_rate": STABLE_RATE, **(fault or {})}
                    canary_id = ep.deploy(model, f"churn:{name.replace(' ', '-')}-{i}", fault=canary_fault)
                    steps = EndpointSteps(ep, stable, canary_id)
                    result = walk(fast, shift=steps.shift, observe=steps.observe)
                    outcomes.append(result)
                    if result.outcome == "rolled-back":
                        rollback(ep, stable, canary_id, "bench")
                    else:  # back to the stable for the next rollout
                        rollback(ep, stable, canary_id, "bench reset")
                k = sum(caught(r) if fault else r.outcome == "rolled-back" for r in outcomes)
                print(f"  {name:<12} {'rolled back before 100%' if fault else 'rolled back'}: {k}/{len(outcomes)} "
                      + ", ".join(f"{r.outcome} at {r.percent}%" for r in outcomes))


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

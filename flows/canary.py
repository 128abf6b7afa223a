"""canary-rollout: a model version got `production` -> deployed beside the stable one, traffic shifted
in steps, every step judged against the stable version, then promoted or rolled back.

Triggered by `wandb.artifact.alias-added` for alias `production` (see prefect.yaml); also runs ad hoc:

    python -m flows.canary --model churn-model:v3 [--endpoint local] [--steps 10,30,50,100] [--bake 5m] [--approve]

The endpoint's live traffic split and deployed models are the source of truth: a rerun after a crash
reconciles from them (never deploys a version twice, never leaves traffic on a version that is not
deployed) and continues from the current step or rolls back, as the policy says. Rollback order:
traffic to stable first, then undeploy the canary, then record. The steps, looks and verdicts are the
pure `flows.canary_judge.walk` (the benchmark runs the same walk); this module gives it the
endpoint's hooks (`EndpointSteps`) and does the outcome's side effects.
"""


import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeVar

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.input import RunInput

from blocks.endpoint import ArmStats, DeployedModel, EndpointError, TransientEndpointError
from flows.canary_judge import JudgedLook, walk
from flows.canary_verdict import CanaryPolicy, Look
from flows.outcomes import decision, one_line, run_flow, run_link, run_logger

T = TypeVar("T")
DEFAULT_ENTITY = "local"
DEFAULT_PROJECT = "wandb-registry-model"
#: How often a crashed rollout is resumed (prefect.yaml's crash trigger) before it is rolled back.
MAX_RESUMES = 3


class Approval(RunInput):
    """What an operator answers in the UI: approve (or not), with a comment."""

    approve: bool = True
    comment: str = ""


# ------------------------------------------------------------------------------------ resolution


def resolve_endpoint(name: str | None) -> Any:
    """A saved endpoint block (type-slug/name or name), `local`/an http URL, or the local endpoint."""
    from blocks.local_endpoint import LocalEndpoint

    name = name or os.environ.get("MODELOPS_ENDPOINT_BLOCK") or "local"
    if name == "local":
        return LocalEndpoint()
    if name.startswith(("http://", "https://")):
        return LocalEndpoint(url=name)
    if name.startswith("local-endpoint/"):  # no Vertex AI SDK import on the local path
        return LocalEndpoint.load(name.split("/", 1)[1])
    from blocks.vertex_endpoint import VertexAIEndpoint
    from flows.retrain import load_block

    return load_block(name, [LocalEndpoint, VertexAIEndpoint])


def resolve_policy(policy_block: str | None, overrides: dict[str, Any]) -> CanaryPolicy:
    """The policy block ($MODELOPS_ROLLOUT_POLICY_BLOCK by default) with explicit values on top."""
    base: dict[str, Any] = {}
    policy_block = policy_block or os.environ.get("MODELOPS_ROLLOUT_POLICY_BLOCK")
    if policy_block:
        from blocks.policy import RolloutPolicy
        from flows.retrain import load_block

        base = load_block(policy_block, [RolloutPolicy]).to_mapping()
    return CanaryPolicy.from_mapping({**base, **{k: v for k, v in overrides.items() if v is not None}})


def with_retries(what: str, fn: Callable[[], T], attempts: int = 5, first_delay: float = 0.5) -> T:
    """Call `fn`, retrying TransientEndpointError with backoff; the last error propagates."""
    logger = _logger()
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except TransientEndpointError as exc:
            if attempt == attempts:
                raise
            delay = first_delay * 2 ** (attempt - 1)
            logger.warning("%s failed (%s); retry %d/%d in %.1fs", what, exc, attempt, attempts - 1, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def _logger() -> Any:
    return run_logger("modelops.canary")


# ------------------------------------------------------------------------------------ state


@dataclass
class Rollout:
    """Where the rollout stands, rebuilt from the endpoint on every (re)run."""

    name: str  # "<collection>:<version>"
    canary: DeployedModel | None
    stable: DeployedModel | None
    split: dict[str, int]
    others: list[DeployedModel] = field(default_factory=list)  # deployed, neither stable nor canary

    @property
    def canary_share(self) -> int:
        return self.split.get(self.canary.id, 0) if self.canary else 0


def reconcile(endpoint: Any, name: str) -> Rollout:
    """Read the live state: the canary is found by its display name, the stable is the other model
    with the most traffic. Traffic on a model that is not deployed is reported, never kept."""
    deployed = endpoint.deployed()
    split = endpoint.traffic()
    by_id = {m.id: m for m in deployed}
    canary = next((m for m in deployed if m.display_name == name), None)
    serving = sorted((m for m in deployed if m is not canary and split.get(m.id, 0) > 0),
                     key=lambda m: -split.get(m.id, 0))
    stable = serving[0] if serving else None
    ghost = sorted(set(split) - set(by_id))
    if ghost:
        raise EndpointError(f"the endpoint routes traffic to models that are not deployed: {', '.join(ghost)}")
    others = [m for m in deployed if m is not canary and m is not stable]
    return Rollout(name=name, canary=canary, stable=stable, split=split, others=others)


def check_invariant(endpoint: Any) -> dict[str, int]:
    """The split sums to 100 and names only deployed models (checked after every change).

    The reads are retried: a transient read error after a change that went through is not a failed change."""
    split, deployed = with_retries("read endpoint", lambda: (endpoint.traffic(), {m.id for m in endpoint.deployed()}))
    if sum(split.values()) != 100 or not set(split) <= deployed:
        raise EndpointError(f"unsafe endpoint state: split {split} over deployed {sorted(deployed)}")
    return split


# ------------------------------------------------------------------------------------ tasks


@task(name="deploy-canary", cache_policy=NO_CACHE)
def deploy_canary(endpoint: Any, model_uri: str, name: str, fault: dict[str, float] | None) -> str:
    kwargs = {"fault": fault} if fault else {}
    deployed_id = with_retries(f"deploy {name}", lambda: endpoint.deploy(model_uri, name, **kwargs))
    get_run_logger().info("deployed %s as %s at 0%% traffic", name, deployed_id)
    return deployed_id


def _shift(endpoint: Any, split: dict[str, int], label: str) -> dict[str, int]:
    with_retries(f"traffic {label}", lambda: endpoint.set_traffic(split))
    live = check_invariant(endpoint)
    _logger().info("traffic %s: %s", label, live)
    return live


@task(name="shift-traffic", cache_policy=NO_CACHE)
def shift_traffic(endpoint: Any, split: dict[str, int], label: str) -> dict[str, int]:
    return _shift(endpoint, split, label)


@task(name="start-shadow", cache_policy=NO_CACHE)
def start_shadow(endpoint: Any, deployed_id: str, label: str) -> None:
    with_retries(f"shadow {label}", lambda: endpoint.set_shadow(deployed_id))
    _logger().info("shadow: %s answers a copy of every request; its answers are not served", label)


class RolloutConfigError(ValueError):
    """The rollout cannot run as configured (the CLI exits 2)."""


class ShiftFailed(EndpointError):
    """A traffic change the endpoint refused or never confirmed: the rollout rolls back."""


def supports_shadow(endpoint: Any) -> bool:
    return callable(getattr(endpoint, "set_shadow", None))


class EndpointSteps:
    """`walk`'s hooks on a real endpoint: `shift(percent)` moves the split (0: mirror to the canary as a
    shadow), `observe(percent, bake, extra)` bakes, then reads what each arm served since the last look
    (windows do not overlap). The flow passes its Prefect tasks as `shift_task`/`shadow_task`; the
    benchmark uses the same class without them."""

    def __init__(self, endpoint: Any, stable: DeployedModel, canary_id: str, name: str = "the canary", *,
                 shift_task: Callable[..., dict[str, int]] = _shift,
                 shadow_task: Callable[..., None] | None = None,
                 on_shift: Callable[[int, dict[str, int]], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.endpoint, self.stable, self.canary_id, self.name = endpoint, stable, canary_id, name
        self.shift_task, self.on_shift, self.sleep = shift_task, on_shift, sleep
        self.shadow_task = shadow_task or (lambda ep, i, label: with_retries("shadow", lambda: ep.set_shadow(i)))
        self.shadowing = False
        self.since = datetime.now(timezone.utc)

    def shift(self, pct: int) -> None:
        try:
            if pct == 0:
                self.shadow_task(self.endpoint, self.canary_id, self.name)
                self.shadowing = True
                live = check_invariant(self.endpoint)
            else:
                if self.shadowing:
                    with_retries("stop shadow", lambda: self.endpoint.set_shadow(None))
                    self.shadowing = False
                split = {self.stable.id: 100 - pct, self.canary_id: pct} if pct < 100 else {self.canary_id: 100}
                live = self.shift_task(self.endpoint, split, f"{pct}% to {self.name}")
        except EndpointError as exc:
            raise ShiftFailed(f"traffic shift to {pct}% failed: {exc}") from exc
        self.since = datetime.now(timezone.utc)
        if self.on_shift:
            self.on_shift(pct, live)

    def observe(self, pct: int, bake: float, extra: bool) -> Look:
        self.sleep(bake)
        since, until = self.since, datetime.now(timezone.utc)
        c = with_retries("canary stats", lambda: self.endpoint.stats(self.canary_id, since, until))
        s = None if pct == 100 else with_retries("stable stats", lambda: self.endpoint.stats(self.stable.id, since, until))
        self.since = until
        return Look(pct, c, s, extra=extra)


def rollback(endpoint: Any, stable: DeployedModel, canary_id: str | None, reason: str) -> dict[str, int]:
    """Traffic to stable first, then undeploy the canary. Safe to repeat."""
    logger = _logger()
    with_retries("rollback traffic", lambda: endpoint.set_traffic({stable.id: 100}), attempts=8, first_delay=0.25)
    logger.warning("rolled traffic back: 100%% on %s (%s)", stable.display_name, reason)
    if canary_id and canary_id in with_retries("read endpoint", lambda: {m.id for m in endpoint.deployed()}):
        with_retries("undeploy canary", lambda: endpoint.undeploy(canary_id))
    return check_invariant(endpoint)


@task(name="roll-back-traffic", cache_policy=NO_CACHE)
def roll_back_traffic(endpoint: Any, stable: DeployedModel, reason: str) -> None:
    """All traffic to the stable version (the first half of a rollback: users are safe after it)."""
    with_retries("rollback traffic", lambda: endpoint.set_traffic({stable.id: 100}), attempts=8, first_delay=0.25)
    _logger().warning("rolled traffic back: 100%% on %s (%s)", stable.display_name, reason)


@task(name="undeploy", cache_policy=NO_CACHE)
def undeploy_model(endpoint: Any, model_id: str, label: str) -> dict[str, int]:
    """Undeploy one model (once no traffic goes to it); safe to repeat. Returns the checked split."""
    if model_id in with_retries("read endpoint", lambda: {m.id for m in endpoint.deployed()}):
        with_retries(f"undeploy {label}", lambda: endpoint.undeploy(model_id))
        _logger().info("undeployed %s", label)
    return check_invariant(endpoint)


@task(name="promote", cache_policy=NO_CACHE)
def promote(endpoint: Any, name: str, previous: list[DeployedModel]) -> dict[str, int]:
    """The canary keeps 100%; the versions it replaces leave the endpoint. Returns the checked split."""
    for m in previous:
        if m.id in with_retries("read endpoint", lambda: {d.id for d in endpoint.deployed()}):
            with_retries(f"undeploy {m.display_name}", lambda m=m: endpoint.undeploy(m.id))
    split = check_invariant(endpoint)
    _logger().info("promoted %s; %s undeployed", name, ", ".join(m.display_name for m in previous) or "nothing")
    return split


def roll_back(endpoint: Any, stable: DeployedModel, canary_id: str | None, label: str, reason: str) -> dict[str, int]:
    """`rollback` as the flow's two tasks (so the run's graph shows it): traffic first, then undeploy."""
    roll_back_traffic(endpoint, stable, reason)
    return undeploy_model(endpoint, canary_id, label) if canary_id else check_invariant(endpoint)


# ------------------------------------------------------------------------------------ recording


@dataclass
class Recorder:
    """Events, the progress artifact and the table of step verdicts."""

    resource: dict[str, str]
    related: list[dict[str, str]]
    table_key: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    progress_id: Any = None
    policy: CanaryPolicy | None = None
    looks: list[dict[str, Any]] = field(default_factory=list)

    def event(self, name: str, payload: dict[str, Any]) -> None:
        emit_event(event=f"modelops.canary.{name}", resource=self.resource, related=self.related, payload=payload)

    def progress(self, percent: float, description: str) -> None:
        if self.progress_id is None:
            self.progress_id = create_progress_artifact(progress=percent, description=description)
        else:
            update_progress_artifact(self.progress_id, progress=percent, description=description)

    def verdict(self, judged: JudgedLook) -> None:
        self.rows.append(look_row(judged))
        create_table_artifact(key=self.table_key, table=self.rows, description=LOOK_TABLE_DESCRIPTION)
        self.looks.append(look_point(judged))
        try:
            self.plot()
        except Exception as exc:  # noqa: BLE001 - a figure that cannot be drawn costs a warning, not the rollout
            _logger().warning("canary figure not drawn: %s", exc)

    def final(self, outcome: str, reason: str = "") -> None:
        try:
            self.plot(outcome, reason)
        except Exception as exc:  # noqa: BLE001
            _logger().warning("canary figure not drawn: %s", exc)

    def figure(self) -> str | None:
        from flows.plots import canary_figure

        if not self.looks:
            return None
        p = self.policy or CanaryPolicy()
        return canary_figure(self.looks, max_error_rate=p.max_error_rate, min_latency_increase=p.min_latency_increase,
                             title=f"{self.resource.get('prefect.resource.name', 'canary')}: canary vs stable per look")

    def plot(self, outcome: str | None = None, reason: str = "") -> None:
        """The markdown artifact `<table key>-report`: per look, each arm's error rate (with the ceiling)
        and median latency (with the comparative floor), and the decisions so far."""
        from prefect.artifacts import create_markdown_artifact

        from flows.plots import image_markdown

        svg = self.figure()
        if svg is None:
            return
        name = self.resource.get("prefect.resource.name", "canary")
        p = self.policy or CanaryPolicy()
        decisions = "\n".join(f"| {k['label']} | {k['decision']} | {one_line(k['reasons'])[:200]} |" for k in self.looks)
        create_markdown_artifact(
            key=f"{self.table_key}-report",
            markdown=(f"# Canary of `{name}`" + (f": **{outcome}**" if outcome else "") + "\n\n"
                      + (f"{one_line(reason)}\n\n" if reason else "")
                      + image_markdown(svg, f"{name}: error rate and median latency per look") + "\n\n"
                      + f"Dashed: the error-rate ceiling ({p.max_error_rate:.0%}, any window); dotted: stable's "
                        f"median + {p.min_latency_increase:.0%}, the smallest latency increase that can fail a look. "
                        f"The table `{self.table_key}` has every look's counts, p-values and alpha spent.\n\n"
                      + "| look | decision | why |\n|---|---|---|\n" + decisions + "\n"),
            description=f"Canary of {name}: error rate and latency per arm, per look")


LOOK_TABLE_DESCRIPTION = (
    "Canary looks: each row is one look, judged on every window since the canary started (counts are this "
    "window's; p-values are over all windows). A test fails when its p-value is below the look's alpha "
    "(alpha-spending over the planned looks; holds spend a reserve) and the effect is over its floor. "
    "'alpha spent' is the total spent so far per family: errors / latency / predictions.")


def look_point(judged: JudgedLook) -> dict[str, Any]:
    """One look for the canary figure: each arm's error rate and median latency in the look's window."""
    import statistics

    look, v = judged.look, judged.verdict

    def p50(arm: ArmStats | None) -> float | None:
        return statistics.median(arm.latencies_ms) if arm is not None and arm.latencies_ms else None

    return {"label": "shadow" if look.percent == 0 else f"{look.percent}%" + ("+" if look.extra else ""),
            "canary_error_rate": look.canary.error_rate if look.canary.requests else None,
            "stable_error_rate": look.stable.error_rate if look.stable and look.stable.requests else None,
            "canary_p50_ms": p50(look.canary), "stable_p50_ms": p50(look.stable),
            "decision": v.decision.value, "reasons": "; ".join(v.reasons)}


def look_row(judged: JudgedLook) -> dict[str, Any]:
    """One table row per look: the window's counts, each test's p-value and level, the alpha spent."""
    look, v = judged.look, judged.verdict

    def p(name: str) -> float | None:
        c = v.check(name)
        return None if c is None or c.p_value is None else float(f"{c.p_value:.3g}")

    def rate(arm: ArmStats | None) -> str | None:
        return None if arm is None else f"{arm.error_rate * 100:.2f}%"

    a, spent = judged.alphas, judged.spent
    return {
        "look": judged.index, "step": "shadow" if look.percent == 0 else f"{look.percent}%",
        "at": datetime.now(timezone.utc).strftime("%H:%M:%S"), "decision": v.decision.value,
        "canary requests": look.canary.requests, "canary errors": look.canary.errors, "canary error rate": rate(look.canary),
        "stable requests": look.stable.requests if look.stable else None,
        "stable errors": look.stable.errors if look.stable else None, "stable error rate": rate(look.stable),
        "p errors": p("error rate vs stable"), "p latency": p("latency vs stable"),
        "p scores": p("scores vs stable"), "p classes": p("classes vs stable"),
        "alpha errors": float(f"{a.errors:.3g}"),
        "alpha spent": f"{spent.errors:.3g} / {spent.latency:.3g} / {spent.predictions:.3g}",
        "reasons": " | ".join(v.reasons),
    }


OUTCOME_LABELS = {"promoted": "promoted", "rolled-back": "rolled-back", "rejected": "rejected"}


def report_on_review_issue(resource_id: str, outcome: str, text: str, *, close: bool = False) -> str | None:
    """Best effort: tell the model version's review issue how its rollout ended - one comment per
    outcome (a rerun after a crash finds it by its marker and writes nothing), the outcome's label
    (`promoted` / `rolled-back` / `rejected`, the others removed), a link to the run, and with `close`
    the issue closed as completed. Returns the issue's URL, or None when it has none."""
    from flows.review_issue import resolve_issue_backend

    logger = get_run_logger()
    marker = f"<!-- modelops:review-issue {resource_id} -->"
    outcome_marker = f"<!-- modelops:outcome {resource_id} {outcome} -->"
    run_name, run_url = run_link()
    body = text + (f"\n\nRun: [{run_name}]({run_url})" if run_url else "") + f"\n\n{outcome_marker}"
    try:
        backend = resolve_issue_backend(os.environ.get("MODELOPS_GITHUB_BLOCK"))
        ref = backend.find_issue(marker)
        if ref is None:
            return None
        backend.comment(ref.number, body, marker=outcome_marker)
        label = OUTCOME_LABELS.get(outcome)
        if label and hasattr(backend, "mark_outcome"):
            backend.mark_outcome(ref.number, [label], close=close,
                                 remove=[v for v in OUTCOME_LABELS.values() if v != label])
        return ref.url
    except Exception as exc:  # noqa: BLE001 - the rollout's outcome does not depend on the comment
        logger.warning("could not report on the review issue: %s", exc)
        return None


# ------------------------------------------------------------------------------------ approval


def approval_evidence(collection: str, version: str, stable: DeployedModel, policy: CanaryPolicy,
                      registry_block: str | None, resource_id: str, promoted_by: str | None) -> str:
    """What an approver needs in front of them, as markdown (the Resume form's description, and the
    artifact `approval-<collection>-<version>`): who promoted, what triggered the retrain, the gate's
    candidate-vs-production metrics, and the review issue."""
    from flows.retrain import resolve_registry
    from flows.review_issue import resolve_issue_backend

    name = f"{collection}:{version}"
    lines = [f"**Roll out `{name}` beside `{stable.display_name}`?** ({policy.strategy}, steps "
             f"{list(policy.effective_steps)}, {policy.bake_seconds:g} s bakes)", ""]
    lines.append(f"- promoted by: **{promoted_by or 'unknown (not in the event)'}**")
    try:
        mv = resolve_registry(registry_block).get(collection, version)
        meta = mv.metadata
        trigger = meta.get("reason") or "not recorded"
        lines.append(f"- trigger: {trigger}" + (f" (dataset `{meta['dataset']}`)" if meta.get("dataset") else ""))
        gate = meta.get("gate") or {}
        if gate:
            lines.append(f"- gate: **{'passed' if gate.get('passed') else 'refused'}** — {gate.get('reason', '')}")
            cand, prod = gate.get("candidate") or {}, gate.get("production") or {}
            shown = [m for m in ("accuracy", "f1", "roc_auc", "precision", "recall", "log_loss") if m in cand]
            if shown:
                lines += ["", "| metric | candidate | production |", "|---|---|---|"]
                lines += [f"| {m} | {cand[m]:.4f} | " + (f"{prod[m]:.4f}" if isinstance(prod.get(m), (int, float))
                                                         else "—") + " |" for m in shown]
        else:
            metrics = meta.get("metrics") or {}
            lines.append("- gate: not recorded for this version" + (
                "; metrics " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, (int, float)))
                if metrics else ""))
    except Exception as exc:  # noqa: BLE001 - the approver is told what is missing, the question stands
        lines.append(f"- registry: not readable here ({one_line(exc)[:160]})")
    try:
        ref = resolve_issue_backend(os.environ.get("MODELOPS_GITHUB_BLOCK")).find_issue(
            f"<!-- modelops:review-issue {resource_id} -->")
        lines.append(f"- review issue: [{ref.title or f'#{ref.number}'}]({ref.url})" if ref else
                     "- review issue: none found")
    except Exception as exc:  # noqa: BLE001
        lines.append(f"- review issue: not readable here ({one_line(exc)[:160]})")
    lines += ["", "Approve to start the rollout; switch **approve** off and say why in **comment** to reject it "
                  "(nothing is shifted)."]
    return "\n".join(lines)



#: Prefect's own pause deadline is set this much after ours: a pause that expires on the server can only
#: end Failed ("... never resumed"), never in the rollout's own `Rejected` state
PAUSE_MARGIN_SECONDS = 300


def ask_approval(description: str, timeout: float) -> Approval:
    """Pause for an operator (Resume form in the UI); no answer within `timeout` counts as a rejection.

    The run answers itself at the deadline (resumed with approve off and "no answer within ...") so it
    ends `Rejected` like any rejection; Prefect's pause timeout is only a backstop past it."""
    import threading

    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run, resume_flow_run
    from prefect.runtime import flow_run

    logger = get_run_logger()
    logger.info("waiting for approval: %s", description)
    no_answer = f"no answer within {timeout:g}s"

    def reject_at_deadline(run_id: str) -> None:
        try:
            resume_flow_run(run_id, run_input={"approve": False, "comment": no_answer})
            logger.warning("approval: %s; rejected", no_answer)
        except Exception as exc:  # noqa: BLE001 - an operator answered first, or the run is gone
            logger.info("approval deadline: not resumed (%s)", exc)

    run_id = flow_run.get_id()
    timer = threading.Timer(max(1.0, timeout), reject_at_deadline, args=(run_id,)) if run_id else None
    if timer:
        timer.daemon = True
        timer.start()
    try:
        answer = pause_flow_run(wait_for_input=Approval.with_initial_data(description=description, approve=True),
                                timeout=int(max(1, timeout)) + PAUSE_MARGIN_SECONDS, poll_interval=1)
    except FlowPauseTimeout:
        return Approval(approve=False, comment=no_answer)
    finally:
        if timer:
            timer.cancel()
    return answer if isinstance(answer, Approval) else Approval(approve=False, comment="no input")


# ------------------------------------------------------------------------------------ flow


def _run_name() -> str:
    from prefect.runtime import flow_run

    p = flow_run.parameters
    return f"canary-{p.get('collection', 'model')}-{p.get('version', '')}"


def abort_rollout(flow: Any, flow_run: Any, state: Any) -> None:
    """on_cancellation: an operator cancelled the run in the UI (Abort) -> roll back what it shifted.

    The run's process is gone by now; the endpoint says where the rollout stood. Safe to repeat."""
    logger = _logger()
    p = flow_run.parameters
    name = f"{p.get('collection')}:{p.get('version')}"
    endpoint = resolve_endpoint(p.get("endpoint_block"))
    # retried like every other endpoint call: a 503 here must not leave the canary deployed
    state_now = with_retries("read endpoint", lambda: reconcile(endpoint, name), attempts=8, first_delay=0.25)
    if state_now.canary is None or state_now.stable is None:
        logger.info("cancelled rollout of %s: nothing to roll back (%s)", name, state_now.split)
        return
    reason = f"run {flow_run.name} was cancelled by an operator"
    split = rollback(endpoint, state_now.stable, state_now.canary.id, reason)
    resource_id = f"wandb.artifact.{p.get('entity') or DEFAULT_ENTITY}/{p.get('project') or DEFAULT_PROJECT}/{name}"
    emit_event(event="modelops.canary.rolled-back",
               resource={"prefect.resource.id": resource_id, "prefect.resource.name": name},
               related=[{"prefect.resource.id": f"prefect.flow-run.{flow_run.id}", "prefect.resource.role": "flow-run"}],
               payload={"model": name, "stable": state_now.stable.display_name, "reason": reason, "split": split,
                        "aborted": True})


@flow(name="canary-rollout", flow_run_name=_run_name, log_prints=True, on_cancellation=[abort_rollout])
def canary_rollout(
    collection: str,
    version: str,
    entity: str = DEFAULT_ENTITY,
    project: str = DEFAULT_PROJECT,
    model_uri: str | None = None,
    endpoint_block: str | None = None,
    policy_block: str | None = None,
    strategy: str | None = None,
    steps: list[int] | None = None,
    bake: str | float | None = None,
    final_bake: str | float | None = None,
    min_requests: int | None = None,
    require_approval: bool | None = None,
    approve_before_full: bool | None = None,
    approval_timeout: str | float | None = None,
    on_resume: str | None = None,
    registry_block: str | None = None,
    alias: str = "production",
    event_id: str | None = None,
    resumed_from: str | None = None,
    resume_attempt: int = 0,
    promoted_by: str | None = None,
) -> Any:
    """Roll `collection:version` out on the endpoint in judged steps; promote it or roll it back.

    Ends in a state named for the outcome (`flows.outcomes`): `Promoted` / `AlreadyServing`
    (Completed), `RolledBack` / `Rejected` (Failed). `resumed_from` / `resume_attempt` are set by
    prefect.yaml's trigger that reruns a crashed rollout (its worker or host died); after
    `MAX_RESUMES` crashes the rollout is rolled back instead. `promoted_by` (the W&B user who moved the
    alias, from the trigger) is shown to an approver."""
    recorders: list[Recorder] = []  # the rollout's recorder, for W&B below
    result = _roll_out(**locals())  # the parameters, as given
    state = outcome_state(result)
    from flows.retrain import resolve_registry
    from flows.status_board import record_canary

    try:
        registry = resolve_registry(registry_block)
    except Exception:  # noqa: BLE001 - the board reads the default registry then
        registry = None
    if registry is not None and result.get("outcome") in OUTCOME_STATES:
        try:
            result["registry"] = update_registry(registry, collection, version, result)
        except Exception:  # noqa: BLE001 - said in the task's log with the fix; the outcome stands
            result["registry"] = None
    record_canary(collection, result, state.name, registry)
    if recorders and registry is not None:
        log_rollout_to_wandb(registry, result["model"], state.name, recorders[0].rows, recorders[0].figure())
    return state


def _version_of(display_name: str | None, collection: str) -> str | None:
    """The registry version a deployed model is (`<collection>:<version>`), or None."""
    if not display_name or ":" not in display_name:
        return None
    coll, _, version = display_name.rpartition(":")
    return version if coll == collection else None


@task(name="update-registry", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[5, 20])
def update_registry(registry: Any, collection: str, version: str, result: dict[str, Any]) -> dict[str, Any]:
    """Make the registry tell what the endpoint does (`flows.registry_sync`): production on the version
    that serves, the rolled-out version marked with what happened. Returns the aliases after it; a
    registry that cannot be written is a warning with what to fix by hand, never a changed outcome."""
    from flows.registry_sync import plan_registry_update

    logger = get_run_logger()
    outcome = result["outcome"]
    serving = version if outcome in ("promoted", "already-serving") else _version_of(result.get("stable"), collection)
    note = {"outcome": outcome, "reason": result.get("reason") or result.get("comment") or "",
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "run": run_link()[1]}
    try:
        aliases = {a: mv.version for mv in registry.versions(collection) for a in mv.aliases}
        if version not in {mv.version for mv in registry.versions(collection)}:
            logger.info("%s:%s is not in the registry: nothing to record there", collection, version)
            return aliases
        steps = plan_registry_update(outcome=outcome, version=version, serving=serving,
                                     previous=_version_of(result.get("replaced"), collection), aliases=aliases,
                                     note=note)
        for step in steps:
            if step.op == "set-alias":
                registry.set_alias(collection, step.version, step.alias)
            elif step.op == "remove-alias":
                registry.remove_alias(collection, step.alias, step.version)
            else:
                registry.update_metadata(collection, step.version, step.patch or {})
            logger.info("registry: %s", step.describe())
        return {a: mv.version for mv in registry.versions(collection) for a in mv.aliases}
    except Exception as exc:  # noqa: BLE001 - retried by the task; then said, with the fix
        logger.error("the registry was not updated after the %s of %s:%s (%s): set `production` to %s by hand "
                     "(python -m flows.registry promote %s:%s)", outcome, collection, version, exc,
                     serving or "the serving version", collection, serving or "<version>")
        raise


OUTCOME_STATES = {"promoted": ("Promoted", True), "already-serving": ("AlreadyServing", True),
                  "rolled-back": ("RolledBack", False), "rejected": ("Rejected", False)}


def outcome_state(result: dict[str, Any]) -> Any:
    """The rollout's final state: its name says the outcome, its type whether the change went ahead."""
    name, success = OUTCOME_STATES[result["outcome"]]
    if result["outcome"] == "promoted":
        message = f"{result['model']} serves 100%" + (f"; {result['replaced']} undeployed" if result.get("replaced")
                                                      else " (first model on the endpoint)")
    elif result["outcome"] == "already-serving":
        message = f"{result['model']} already served 100%: nothing to roll out"
    elif result["outcome"] == "rejected":
        message = f"not approved: {result.get('comment') or 'no comment'}; nothing was shifted"
    else:
        message = f"rolled back: {result.get('reason')}; 100% on {result.get('stable') or 'the stable version'}"
    return decision(name, success=success, message=message, data=result)


def _roll_out(
    collection: str,
    version: str,
    entity: str = DEFAULT_ENTITY,
    project: str = DEFAULT_PROJECT,
    model_uri: str | None = None,
    endpoint_block: str | None = None,
    policy_block: str | None = None,
    strategy: str | None = None,
    steps: list[int] | None = None,
    bake: str | float | None = None,
    final_bake: str | float | None = None,
    min_requests: int | None = None,
    require_approval: bool | None = None,
    approve_before_full: bool | None = None,
    approval_timeout: str | float | None = None,
    on_resume: str | None = None,
    registry_block: str | None = None,
    alias: str = "production",
    event_id: str | None = None,
    resumed_from: str | None = None,
    resume_attempt: int = 0,
    promoted_by: str | None = None,
    recorders: list[Any] | None = None,
) -> dict[str, Any]:
    """canary-rollout's body: returns the result, whose `outcome` names the final state (its Recorder is
    appended to `recorders`)."""
    logger = get_run_logger()
    name = f"{collection}:{version}"
    if resumed_from:
        logger.info("resuming the rollout of crashed run %s (attempt %d of %d)", resumed_from, resume_attempt,
                    MAX_RESUMES)
    policy = resolve_policy(policy_block, {
        "strategy": strategy, "steps": steps, "bake_seconds": bake, "final_bake_seconds": final_bake,
        "min_requests": min_requests, "require_approval": require_approval,
        "approve_before_full": approve_before_full, "approval_timeout_seconds": approval_timeout,
        "on_resume": on_resume})
    logger.info("canary-rollout of %s (%s, steps %s, bake %gs)", name, policy.strategy,
                list(policy.effective_steps), policy.bake_seconds)
    endpoint = resolve_endpoint(endpoint_block)
    if policy.strategy == "shadow" and not supports_shadow(endpoint):
        raise RolloutConfigError(
            f"strategy 'shadow' needs an endpoint that mirrors requests to a model without serving its answers; "
            f"{type(endpoint).__name__} ({endpoint_block or 'local'}) serves every request from one deployed model "
            f"(Vertex AI endpoints do not mirror traffic): use strategy 'canary', or shadow on the local endpoint")
    resource_id = f"wandb.artifact.{entity}/{project}/{name}"
    rec = Recorder(
        resource={"prefect.resource.id": resource_id, "prefect.resource.name": name, "wandb.collection": collection,
                  "wandb.version": version},
        related=[{"prefect.resource.id": f"modelops.endpoint.{endpoint_block or 'local'}",
                  "prefect.resource.role": "endpoint"}],
        table_key=f"canary-{_key(collection)}-{_key(version)}",
        policy=policy,
    )
    if recorders is not None:
        recorders.append(rec)
    started = time.monotonic()
    result: dict[str, Any] = {"model": name, "strategy": policy.strategy, "steps": []}

    state = with_retries("read endpoint", lambda: reconcile(endpoint, name))
    # -- already done, or nothing to compare with --------------------------------------------
    if state.canary and state.canary_share == 100:
        logger.info("%s already serves 100%%: nothing to roll out", name)
        split = promote(endpoint, name, state.others) if state.others else check_invariant(endpoint)
        return {**result, "outcome": "already-serving", "split": split}
    uri, fault = model_uri, None
    if not state.canary:
        uri, fault = _model_location(collection, version, model_uri, registry_block)
    if state.stable is None:
        canary_id = state.canary.id if state.canary else deploy_canary(endpoint, uri, name, fault)
        shift_traffic(endpoint, {canary_id: 100}, "initial deployment")
        rec.event("promoted", {"model": name, "initial": True, "reason": "no stable version to compare with"})
        rec.progress(100, f"{name} is the first model on the endpoint")
        return {**result, "outcome": "promoted", "initial": True, "split": check_invariant(endpoint)}
    stable = state.stable

    # -- resume or start ----------------------------------------------------------------------
    resuming = state.canary is not None and state.canary_share > 0
    if resuming and resume_attempt > MAX_RESUMES:
        why = f"the rollout crashed {resume_attempt} times; rolling back instead of resuming again"
        split = roll_back(endpoint, stable, state.canary.id, name, why)
        return _rolled_back(rec, result, name, stable, why, split, resource_id)
    if resuming and policy.on_resume == "rollback":
        split = roll_back(endpoint, stable, state.canary.id, name, "resumed after a crash; policy says roll back")
        return _rolled_back(rec, result, name, stable, "resumed after a crash; policy on_resume=rollback", split,
                            resource_id)
    if policy.require_approval and not resuming:
        evidence = approval_evidence(collection, version, stable, policy, registry_block, resource_id, promoted_by)
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(key=f"approval-{_key(collection)}-{_key(version)}", markdown=evidence,
                                 description=f"Evidence for the approval of {name}")
        answer = ask_approval(evidence, policy.approval_timeout_seconds)
        if not answer.approve:
            logger.warning("rollout of %s rejected: %s", name, answer.comment or "no comment")
            rec.event("rolled-back", {"model": name, "rejected": True, "reason": f"rejected: {answer.comment}",
                                      "stable": stable.display_name})
            report_on_review_issue(resource_id, "rejected", f"Rollout of `{name}` **not approved**: "
                                                            f"{answer.comment or 'no comment'}. Nothing was shifted; "
                                                            f"`{stable.display_name}` keeps 100%.")
            return {**result, "outcome": "rejected", "comment": answer.comment, "split": check_invariant(endpoint),
                    "stable": stable.display_name}
        result["approval"] = answer.comment
    canary_id = state.canary.id if state.canary else deploy_canary(endpoint, uri, name, fault)
    rec.event("started", {"model": name, "stable": stable.display_name, "canary_id": canary_id,
                          "stable_id": stable.id, "resumed": resuming, "policy": policy.to_dict()})

    steps_todo = [s for s in policy.effective_steps if s >= state.canary_share] if resuming else list(policy.effective_steps)
    if policy.strategy == "blue-green" and not resuming:
        logger.info("blue-green: %s deployed beside %s; baking %gs before the switch", name, stable.display_name,
                    policy.bake_seconds)
        time.sleep(policy.bake_seconds)

    def on_shift(pct: int, live: dict[str, int]) -> None:
        if pct == 0:
            rec.progress(0, f"{name} answers a shadow copy of the traffic (not served)")
        else:
            rec.progress(pct, f"{pct}% of the traffic on {name}")
        rec.event("step", {"model": name, "percent": pct, "split": live, "shadow": pct == 0})

    def record(judged: JudgedLook) -> None:
        rec.verdict(judged)
        v = judged.verdict
        where = "shadow" if judged.look.percent == 0 else f"step {judged.look.percent}%"
        result["steps"].append({"percent": judged.look.percent, "look": judged.index, "decision": v.decision.value,
                                "reasons": list(v.reasons), "alphas": judged.alphas.to_dict(),
                                "alpha_spent": judged.spent.to_dict()})
        logger.info("%s (look %d): %s — %s", where, judged.index, v.decision.value, "; ".join(v.reasons))

    def ask(question: str) -> tuple[bool, str]:
        answer = ask_approval(question, policy.approval_timeout_seconds)
        return answer.approve, answer.comment

    hooks = EndpointSteps(endpoint, stable, canary_id, name, shift_task=shift_traffic, shadow_task=start_shadow,
                          on_shift=on_shift)
    try:
        outcome = walk(policy, shift=hooks.shift, observe=hooks.observe, record=record, ask=ask, steps=steps_todo,
                       shadow=policy.strategy == "shadow" and not resuming, name=name,
                       start=started)
    except ShiftFailed as exc:
        split = roll_back(endpoint, stable, canary_id, name, str(exc))
        return _rolled_back(rec, result, name, stable, str(exc), split, resource_id)
    if outcome.outcome == "rolled-back":
        reason = f"shadow: {outcome.reason}" if outcome.percent == 0 else outcome.reason
        # at 100% too: the old version stays deployed until promotion, so it can take back
        split = roll_back(endpoint, stable, canary_id, name, reason)
        if outcome.percent == 0:
            result["shadow"] = True
        return _rolled_back(rec, result, name, stable, reason, split, resource_id)

    # -- promoted: the old version leaves ------------------------------------------------------
    split = promote(endpoint, name, [stable, *state.others])
    rec.progress(100, f"{name} promoted")
    rec.final("promoted")
    rec.event("promoted", {"model": name, "replaced": stable.display_name, "split": split, "steps": result["steps"]})
    issue = report_on_review_issue(resource_id, "promoted", f"Canary of `{name}` **promoted**: 100% of the traffic, "
                                                            f"`{stable.display_name}` undeployed.",
                                   close=policy.close_issue_on_promote)
    return {**result, "outcome": "promoted", "split": split, "replaced": stable.display_name, "review_issue": issue}


def log_rollout_to_wandb(registry: Any, name: str, outcome: str, rows: list[dict[str, Any]], svg: str | None) -> str | None:
    """Where the registry is W&B: a run (job type `canary-rollout`) with the look table, the figure and
    the outcome in its summary, so the rollout's evidence sits beside the model in W&B. Best effort."""
    creds = getattr(registry, "credentials", None)
    if creds is None:
        return None
    logger = _logger()
    try:
        import wandb

        from flows.drift_check import wandb_table

        run = creds.init_run(job_type="canary-rollout", config={"model": name})
        try:
            if rows:
                run.log({"canary/looks": wandb_table(rows)})
            if svg:
                run.log({"canary/figure": wandb.Html(svg)})
            run.summary["outcome"] = outcome
        finally:
            run.finish()
        return getattr(run, "path", None)
    except Exception as exc:  # noqa: BLE001 - the rollout's outcome does not depend on W&B
        logger.warning("the rollout of %s was not logged to W&B: %s", name, exc)
        return None


def _rolled_back(rec: Recorder, result: dict[str, Any], name: str, stable: DeployedModel, reason: str,
                 split: dict[str, int], resource_id: str) -> dict[str, Any]:
    rec.progress(100, f"{name} rolled back: {reason}")
    rec.final("rolled back", reason)
    rec.event("rolled-back", {"model": name, "stable": stable.display_name, "reason": reason, "split": split,
                              "steps": result["steps"], "shadow": bool(result.get("shadow"))})
    issue = report_on_review_issue(resource_id, "rolled-back", f"Canary of `{name}` **rolled back**: {reason}\n\n"
                                                               f"100% of the traffic is on `{stable.display_name}`.")
    return {**result, "outcome": "rolled-back", "reason": reason, "split": split, "review_issue": issue,
            "stable": stable.display_name}


def _model_location(collection: str, version: str, model_uri: str | None,
                    registry_block: str | None) -> tuple[str, dict[str, float] | None]:
    """Where the model is (explicit, else from the registry) and a demo fault recorded with it."""
    if model_uri:
        return model_uri, None
    from flows.retrain import resolve_registry

    mv = resolve_registry(registry_block).get(collection, version)
    serving = mv.metadata.get("serving_uri") or mv.uri  # e.g. a Vertex AI Model resource name
    return serving, mv.metadata.get("demo_fault") or None


def _key(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


# ------------------------------------------------------------------------------------ CLI


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flows.canary", description=canary_rollout.__doc__)
    p.add_argument("--model", required=True, help="<collection>:<version>, e.g. churn-model:v3")
    p.add_argument("--endpoint", default=None, help="endpoint block (type-slug/name or name), 'local' or a URL")
    p.add_argument("--steps", help="traffic steps, e.g. 10,30,50,100")
    p.add_argument("--bake", help="bake per step, e.g. 90s, 5m")
    p.add_argument("--final-bake", help="bake at 100%% before the old version is undeployed")
    p.add_argument("--strategy", choices=["canary", "shadow", "blue-green", "immediate"],
                   help="shadow: mirror live requests to the new version (answers never served), judge it, "
                        "then the canary steps")
    p.add_argument("--min-requests", type=int)
    p.add_argument("--approve", action="store_true", help="wait for an operator's approval in the UI first")
    p.add_argument("--policy-block", help="saved rollout policy block")
    p.add_argument("--model-uri", help="where the model is (default: from the registry)")
    p.add_argument("--entity", default=DEFAULT_ENTITY)
    p.add_argument("--project", default=DEFAULT_PROJECT)
    args = p.parse_args(argv)
    from blocks.registry import RegistryError, parse_model_ref

    try:
        collection, version = parse_model_ref(args.model)
        overrides = {"strategy": args.strategy, "bake_seconds": args.bake, "final_bake_seconds": args.final_bake,
                     "steps": args.steps, "min_requests": args.min_requests,
                     "require_approval": True if args.approve else None}
        resolve_policy(args.policy_block, overrides)  # bad options fail here, before any flow run
    except (RegistryError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from flows._cli import prepare_prefect_env

    prepare_prefect_env()
    try:
        result = run_flow(
            canary_rollout, collection=collection, version=version, entity=args.entity, project=args.project,
            model_uri=args.model_uri, endpoint_block=args.endpoint, policy_block=args.policy_block,
            strategy=args.strategy, steps=_steps(args.steps), bake=args.bake, final_bake=args.final_bake,
            min_requests=args.min_requests, require_approval=True if args.approve else None)
    except RolloutConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the CLI reports, the flow run keeps the traceback
        print(f"canary-rollout failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, default=str))
    if result["outcome"] in ("promoted", "already-serving"):
        return 0
    print(f"canary-rollout {result['outcome']}: {one_line(result.get('reason') or 'no reason recorded')}",
          file=sys.stderr)
    return 3



def _steps(text: str | None) -> list[int] | None:
    return [int(s) for s in text.split(",")] if text else None


if __name__ == "__main__":
    raise SystemExit(main())

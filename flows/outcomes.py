"""How each flow ends: a final state whose name says the outcome, typed so that a refusal or a rollback
is visibly not a plain success (the runs list shows the name in the type's colour).

| flow | outcome | state name | type |
|---|---|---|---|
| canary-rollout | promoted | `Promoted` | COMPLETED |
| canary-rollout | already serving 100% | `AlreadyServing` | COMPLETED |
| canary-rollout | rolled back (errors, latency, predictions, shadow, crashes) | `RolledBack` | FAILED |
| canary-rollout | not approved (rejected in the Resume form, or no answer in time) | `Rejected` | FAILED |
| retrain | registered as candidate | `Registered` | COMPLETED |
| retrain | refused by the data contract or the gate | `Refused` | FAILED |
| drift-check | drift found | `Drift` | COMPLETED |
| drift-check | no drift | `NoDrift` | COMPLETED |

A decision that stopped a change is FAILED: the change did not happen, and an operator should look
(a `prefect.flow-run.Failed` automation alerts on it like any failure). It is told apart from an error
by its name (an error's state is the plain `Failed`, a dead process `Crashed`), by the `modelops.*`
event it emits, and by the CLI's exit code (3, not 1). Drift found is COMPLETED: the check did what it
was asked, and its event starts the retrain. Nothing here retries: no flow has retries configured.

In-process callers (CLIs, tests, notebooks) use `run_flow(flow, **params)`: the flow's result for
every named outcome, whatever its type; an error still raises.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DECISION_NAMES", "decision", "one_line", "run_flow", "run_link", "run_logger"]

#: state names of decisions (never of errors): their result is the flow's answer, whatever the type
DECISION_NAMES = frozenset({"Promoted", "AlreadyServing", "RolledBack", "Rejected", "Registered", "Refused",
                            "Drift", "NoDrift"})


def decision(name: str, *, success: bool, message: str, data: Any) -> Any:
    """The final state of a flow that decided: COMPLETED when the change went ahead (or nothing needed
    doing), FAILED when the decision stopped it."""
    from prefect.states import Completed, Failed

    if name not in DECISION_NAMES:
        raise ValueError(f"unknown outcome state {name!r}; one of {sorted(DECISION_NAMES)}")
    message = one_line(message)[:1000]
    return (Completed if success else Failed)(name=name, message=message, data=data)


def run_flow(flow: Any, /, **parameters: Any) -> Any:
    """Call `flow` in this process and return its result for every named outcome (a FAILED `RolledBack`
    or `Refused` included); an error (a plain Failed or Crashed run) raises as Prefect raises it."""
    state = flow(**parameters, return_state=True)
    if state.name in DECISION_NAMES:
        return state.result(raise_on_failure=False)
    return state.result()


def run_link() -> tuple[str | None, str | None]:
    """(name, UI URL) of the flow run this code runs in, as the engine's "View at" line links it
    (`/runs/flow-run/<id>`); (None, None) outside a run."""
    from prefect.runtime import flow_run
    from prefect.utilities.urls import url_for

    run_id = flow_run.get_id()
    if not run_id:
        return None, None
    return flow_run.get_name(), url_for("flow-run", obj_id=run_id)


def one_line(text: Any) -> str:
    """`text` (a message, an exception) on one line: its whitespace runs collapsed to single spaces."""
    return " ".join(str(text).split())


def run_logger(fallback: str) -> Any:
    """The run logger inside a flow or task run; the logger named `fallback` outside one (benchmarks,
    notebooks, helpers called from plain code)."""
    import logging

    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(fallback)

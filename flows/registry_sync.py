"""The registry follows the endpoint: what a finished rollout writes back, so that the registry (local or
W&B) names as `production` the version that serves, and every version says what happened to it.

| rollout outcome | `production` | the rolled-out version | the version it replaced |
|---|---|---|---|
| promoted | on the new version | `candidate` cleared; metadata `rollout` | alias `previous-production`; metadata `replaced` |
| already serving | on it (a no-op when it is) | — | — |
| rolled back | back on the version that serves | alias `rolled-back`; `candidate` cleared; metadata `rollout` | — |
| not approved | back on the version that serves | alias `rejected`; `candidate` cleared; metadata `rollout` | — |

Aliases follow W&B's rule (one version holds an alias in a collection), so `rolled-back` names the
latest version rolled back; each version's metadata `rollout` (outcome, reason, when, the run) keeps
its own story. Moving `production` back sends W&B's alias-added webhook like a human promotion: the
canary-rollout it starts finds that version already serving 100% and ends `AlreadyServing` at once
(writing nothing, so nothing loops), and review-issue finds the version's existing issue.

    plan_registry_update(outcome="rolled-back", version="v2", serving="v1", previous=None,
                         aliases={"production": "v2", "candidate": "v2"}, note={...})  # pure: the steps
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Step", "plan_registry_update"]


@dataclass(frozen=True)
class Step:
    op: Literal["set-alias", "remove-alias", "metadata"]
    version: str
    alias: str = ""
    patch: dict[str, Any] | None = None

    def describe(self) -> str:
        if self.op == "set-alias":
            return f"{self.alias} -> {self.version}"
        if self.op == "remove-alias":
            return f"{self.alias} removed from {self.version}"
        return f"{self.version} metadata: {', '.join(self.patch or {})}"


def plan_registry_update(*, outcome: str, version: str, serving: str | None, previous: str | None,
                         aliases: dict[str, str], note: dict[str, Any]) -> list[Step]:
    """The steps that make the registry tell what the endpoint does after a rollout of `version`.

    `serving`: the version that serves 100% now (None when it is not a version of this collection);
    `previous`: the version a promotion replaced; `aliases`: alias -> version as the registry has them;
    `note`: outcome, reason, when, run URL (the `rollout` metadata). Idempotent: a rerun plans nothing
    for what is already so, apart from rewriting the same metadata."""
    steps: list[Step] = []
    if outcome in ("promoted", "already-serving"):
        if aliases.get("production") != version:
            steps.append(Step("set-alias", version, "production"))
        if outcome == "promoted":
            if aliases.get("candidate") == version:
                steps.append(Step("remove-alias", version, "candidate"))
            steps.append(Step("metadata", version, patch={"rollout": note}))
            if previous and previous != version:
                if aliases.get("previous-production") != previous:
                    steps.append(Step("set-alias", previous, "previous-production"))
                steps.append(Step("metadata", previous, patch={"replaced": {"by": version, **note}}))
        return steps
    if outcome not in ("rolled-back", "rejected"):
        raise ValueError(f"unknown rollout outcome {outcome!r}")
    if serving and serving != version and aliases.get("production") != serving:
        steps.append(Step("set-alias", serving, "production"))
    elif not serving and aliases.get("production") == version:
        # what serves is not a version of this collection: at least production no longer names this one
        steps.append(Step("remove-alias", version, "production"))
    mark = "rolled-back" if outcome == "rolled-back" else "rejected"
    if aliases.get(mark) != version:
        steps.append(Step("set-alias", version, mark))
    if aliases.get("candidate") == version:
        steps.append(Step("remove-alias", version, "candidate"))
    steps.append(Step("metadata", version, patch={"rollout": note}))
    return steps

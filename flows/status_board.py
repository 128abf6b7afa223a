"""The model status board: one markdown artifact per model collection (key `model-status-<collection>`,
under *Artifacts* in the UI, its latest version always the board) that says where the model stands:
the `production` and `candidate` versions, the endpoint's split after the last rollout, the last
canary's outcome, the last retrain and the last drift check, each with a link to its flow run.

Every flow that touches a model updates it: canary-rollout (`record_canary`), retrain
(`record_retrain`), drift-check with its `model` parameter (`record_drift`). Each flow keeps its own
part in its own Prefect Variable (`modelops_status_<collection>_<part>`, JSON, < 5,000 characters),
so two flows finishing at once never overwrite each other's part; the board is rendered from all the
parts and the registry's aliases, read at that moment. Best effort: a board that cannot be written is
a warning in the run's log, never a failed run.

    render_board("churn-model", {"canary": {...}, "drift": {...}}, aliases={"production": "v3"})  # pure
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

__all__ = ["PARTS", "board_key", "record_canary", "record_drift", "record_retrain", "render_board"]

PARTS = ("canary", "retrain", "drift")
_LIMIT = 4500  # a Prefect Variable holds at most 5,000 characters of JSON


def _slug(collection: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", collection.lower()).strip("-") or "model"


def board_key(collection: str) -> str:
    return f"model-status-{_slug(collection)}"


def _variable(collection: str, part: str) -> str:
    return f"modelops_status_{_slug(collection).replace('-', '_')}_{part}"


def _cut(text: Any, n: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def _link(part: dict[str, Any]) -> str:
    url, name = part.get("run_url"), part.get("run_name") or "run"
    return f"[{name}]({url})" if url else str(name)


def render_board(collection: str, parts: dict[str, dict[str, Any]], aliases: dict[str, str] | None = None) -> str:
    """The board's markdown from the parts each flow recorded and the registry's aliases (pure)."""
    aliases = aliases or {}
    canary, retrain, drift = (parts.get(p) or {} for p in PARTS)
    serving = canary.get("serving") or "unknown (no rollout recorded)"
    lines = [f"# {collection}: where it stands", "",
             "| | |", "|---|---|",
             f"| serving (endpoint) | **{serving}**" + (f" ({canary['split']})" if canary.get("split") else "")
             + (f" (after {_link(canary)}, {canary.get('at', '')})" if canary else "") + " |",
             f"| `production` (registry) | {aliases.get('production', '—')} |",
             f"| `candidate` (registry) | {aliases.get('candidate', '—')} |"]
    other = {a: v for a, v in aliases.items() if a not in ("production", "candidate", "latest")}
    if other:
        lines.append("| other aliases | " + ", ".join(f"`{a}`: {v}" for a, v in sorted(other.items())) + " |")
    lines += ["", "| last | outcome | when | run |", "|---|---|---|---|"]
    if canary:
        lines.append(f"| canary of {canary.get('model', '?')} | **{canary.get('state', '?')}** "
                     f"{_cut(canary.get('detail', ''), 160)} | {canary.get('at', '')} | {_link(canary)} |")
    else:
        lines.append("| canary | none yet | | |")
    if retrain:
        lines.append(f"| retrain on {retrain.get('dataset', '?')} | **{retrain.get('state', '?')}** "
                     f"{_cut(retrain.get('detail', ''), 160)} | {retrain.get('at', '')} | {_link(retrain)} |")
    else:
        lines.append("| retrain | none yet | | |")
    if drift:
        lines.append(f"| drift check of {drift.get('dataset', '?')} | **{drift.get('state', '?')}** "
                     f"{_cut(drift.get('detail', ''), 160)} | {drift.get('at', '')} | {_link(drift)} |")
    else:
        lines.append("| drift check | none yet | | |")
    lines += ["", "_Updated by canary-rollout, retrain and drift-check; the registry's aliases as read when it "
                  "was last written._"]
    return "\n".join(lines) + "\n"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _run() -> dict[str, Any]:
    from flows.outcomes import run_link

    name, url = run_link()
    return {"run_name": name, "run_url": url, "at": _now()}


def _update(collection: str, part: str, value: dict[str, Any], registry: Any = None) -> None:
    """Store this flow's part, then render the board from every part (best effort)."""
    import json

    from prefect.artifacts import create_markdown_artifact
    from prefect.variables import Variable

    from flows.outcomes import run_logger

    logger = run_logger("modelops.status")
    try:
        value = {k: v for k, v in value.items() if v is not None}
        while len(json.dumps(value, default=str)) > _LIMIT and value.get("detail"):
            value["detail"] = _cut(value["detail"], max(40, len(value["detail"]) // 2))
        Variable.set(_variable(collection, part), json.loads(json.dumps(value, default=str)), overwrite=True)
        parts = {p: (value if p == part else Variable.get(_variable(collection, p), default=None) or {})
                 for p in PARTS}
        try:
            aliases = _aliases(registry, collection)
        except Exception as exc:  # noqa: BLE001 - the registry's answer is part of the view, not a must
            logger.warning("status board of %s: registry aliases not read (%s)", collection, exc)
            aliases = {"production": "registry unreachable", "candidate": "registry unreachable"}
        create_markdown_artifact(key=board_key(collection), markdown=render_board(collection, parts, aliases),
                                 description=f"Status board of {collection}")
    except Exception as exc:  # noqa: BLE001 - the board is a view; the flow's outcome does not depend on it
        logger.warning("the status board of %s was not updated: %s", collection, exc)


def _aliases(registry: Any, collection: str) -> dict[str, str]:
    if registry is None:
        from flows.retrain import resolve_registry

        registry = resolve_registry(None)
    out: dict[str, str] = {}
    for mv in registry.versions(collection):
        for alias in mv.aliases:
            out[alias] = mv.version
    return out


def record_canary(collection: str, result: dict[str, Any], state_name: str, registry: Any = None) -> None:
    split = result.get("split") or {}
    detail = result.get("reason") or result.get("comment") or ""
    serving = result["model"] if result.get("outcome") in ("promoted", "already-serving") else result.get("stable")
    # the split names deployed-model ids; the board names versions
    shares = sorted(split.values(), reverse=True)
    if shares == [100]:
        where = "100% of the traffic"
    else:
        where = f"split {', '.join(f'{v}%' for v in shares)} (ids: {', '.join(split)})" if split else None
    _update(collection, "canary", {**_run(), "model": result.get("model"), "state": state_name,
                                   "detail": detail, "serving": serving, "split": where}, registry)


def record_retrain(collection: str, result: dict[str, Any], state_name: str, registry: Any = None) -> None:
    if result.get("registered"):
        detail = f"{collection}:{result['registered']} is `candidate`"
    else:
        detail = "; ".join(result.get("data_contract") or []) or str(result.get("gate") or "")
        if result.get("refused_version"):
            detail = f"{collection}:{result['refused_version']} is `refused`: {detail}"
    _update(collection, "retrain", {**_run(), "dataset": result.get("dataset"), "state": state_name,
                                    "detail": detail}, registry)


def record_drift(collection: str, dataset: str, reference: str, result: dict[str, Any]) -> None:
    drifted = [str(f["name"]) for f in result.get("features", []) if f.get("drifted")]
    label = result.get("label_shift") or {}
    detail = (f"in {', '.join(drifted)}" if drifted else "no feature drifted") + f" (against {reference})" + (
        f"; label {label.get('name')} shifted" if label.get("drifted") else "")
    _update(collection, "drift", {**_run(), "dataset": dataset, "state": "Drift" if result.get("drift_detected")
                                  else "NoDrift", "detail": detail})

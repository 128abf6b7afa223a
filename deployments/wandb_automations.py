"""Install the W&B Automations that feed the webhook receiver: `python -m deployments.wandb_automations`.

Every automation sends the shared payload template of `deployments.wandb_events`
(`PAYLOAD_TEMPLATE_ARTIFACT`, `PAYLOAD_TEMPLATE_RUN`) to one W&B webhook integration, so what W&B
posts is what `parse_body` turns into the Prefect events prefect.yaml triggers on:

* `<prefix>-<registry>-alias-<alias>`: alias matching `^<alias>$` added in the model registry
  (`OnAddArtifactAlias`) -> `wandb.artifact.alias-added` -> review-issue, canary-rollout;
* `<prefix>-dataset-created-<collection>`, one per dataset collection: a new version created
  (`OnCreateArtifact`, whose scope must be one artifact collection: the SDK has no collection
  filter) -> `wandb.artifact.created` -> drift-check;
* `<prefix>-<registry>-linked`: a version linked into the model registry (`OnLinkArtifact`)
  -> `wandb.artifact.linked`;
* `<prefix>-run-metric-<metric>` (only with --metric): a run metric crosses a threshold
  (`OnRunMetric` + `MetricThresholdFilter`) -> `wandb.run.metric` -> retrain.

`build_automations(config)` is pure: it returns `AutomationSpec`s holding the SDK's event classes,
filters and the payload objects, with scopes named by path. Only the apply path talks to W&B: it
fetches the webhook integration (`api.webhook_integrations(entity=...)`) and the scope objects
(`api.registry`, `api.artifact_collection`, `api.project`), then creates each automation with
`api.create_automation(event >> action, name=..., description=...)`, or updates the one of the same
name when it differs (description, event, scope, filter, webhook or payload). A second run reports
every automation `unchanged`. An automation disabled in W&B is left disabled.

    python -m deployments.wandb_automations --entity acme --webhook modelops-receiver --dry-run
    WANDB_API_KEY=... python -m deployments.wandb_automations --entity acme --webhook modelops-receiver \\
        --dataset-project acme/churn --metric-project acme/churn --metric val_accuracy --op '<' --threshold 0.85

Exit codes: 0 done (or dry run printed); 2 bad flags or settings (the message names them: --op,
--threshold, WANDB_API_KEY, --webhook, ...); 1 W&B refused or failed. The API key is never printed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from deployments.wandb_events import EVENT_NAMES, PAYLOAD_TEMPLATE_ARTIFACT, PAYLOAD_TEMPLATE_RUN

__all__ = [
    "OPS",
    "AutomationConfig",
    "AutomationSpec",
    "ConfigError",
    "Result",
    "ScopeRef",
    "apply_automations",
    "build_automations",
    "find_webhook",
    "main",
]

PROG = "python -m deployments.wandb_automations"
REGISTRY_PREFIX = "wandb-registry-"
#: Comparisons `MetricThresholdFilter` accepts (the SDK turns them into $lt, $lte, $gt, $gte).
OPS = ("<", "<=", ">", ">=")
#: --agg values -> the SDK's aggregation names (`Agg` accepts "AVERAGE", not "avg").
AGGREGATIONS = {"min": "MIN", "max": "MAX", "avg": "AVERAGE"}
#: prefect.yaml, drift-check trigger: `wandb.collection: ["churn-data", "training-data"]`.
DEFAULT_DATASET_COLLECTIONS = ("churn-data", "training-data")
#: The project runs and datasets go to when a W&B block names none (blocks.wandb.DEFAULT_PROJECT).
DEFAULT_PROJECT = "modelops"
DEFAULT_WEBHOOK = "modelops"
KEY_SETTING = "WANDB_API_KEY (or --wandb-block NAME, a saved WandbCredentials block with an api_key)"

ScopeKind = Literal["registry", "project", "collection"]


class ConfigError(ValueError):
    """Flags or settings that cannot work (exit 2); the message names the flag or setting."""

    def __init__(self, message: str, flag: str) -> None:
        super().__init__(message)
        self.flag = flag


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class ProjectRef:
    """A W&B project, or a registry (the project `wandb-registry-<name>` under the org)."""

    entity: str
    project: str

    @property
    def is_registry(self) -> bool:
        return self.project.startswith(REGISTRY_PREFIX)

    @property
    def path(self) -> str:
        return f"{self.entity}/{self.project}"


def _check_name(value: str, flag: str, what: str) -> str:
    value = value.strip()
    if not value or "/" in value or ":" in value or any(c.isspace() for c in value):
        raise ConfigError(f"{flag}: {what} must be a bare W&B name (no '/', ':' or spaces), got {value!r}", flag)
    return value


def parse_project(value: str, entity: str, flag: str) -> ProjectRef:
    """`ENTITY/PROJECT`, `PROJECT` (under --entity), `registry:NAME` or `[ORG/]wandb-registry-NAME`."""
    text = value.strip()
    if text.startswith("registry:"):
        name = _check_name(text[len("registry:"):], flag, "the registry name")
        return ProjectRef(entity, REGISTRY_PREFIX + name)
    parts = text.split("/")
    if len(parts) == 1:
        return ProjectRef(entity, _check_name(parts[0], flag, "the project"))
    if len(parts) == 2:
        return ProjectRef(_check_name(parts[0], flag, "the entity"), _check_name(parts[1], flag, "the project"))
    raise ConfigError(f"{flag} must be ENTITY/PROJECT, PROJECT or registry:NAME, got {value!r}", flag)


@dataclass(frozen=True)
class AutomationConfig:
    """What to install. Validated by `validate()` (called by `build_automations`)."""

    entity: str
    webhook: str = DEFAULT_WEBHOOK
    registry: str = "model"
    #: The org owning the registry (registries live under the org's entity); default: `entity`.
    org: str | None = None
    #: `ENTITY/PROJECT`, `PROJECT` or `registry:NAME`; default: `<entity>/modelops`.
    dataset_project: str | None = None
    dataset_collections: tuple[str, ...] = DEFAULT_DATASET_COLLECTIONS
    dataset_type: str = "dataset"
    #: `ENTITY/PROJECT` or `PROJECT`; default: `<entity>/modelops`. Used only with `metric`.
    metric_project: str | None = None
    metric: str | None = None
    threshold: float | None = None
    op: str = "<"
    window: int = 1
    agg: str | None = None
    alias: str = "production"
    name_prefix: str = "modelops"
    link: bool = True

    def validate(self) -> None:
        _check_name(self.entity or "", "--entity", "the entity")
        if not self.webhook.strip():
            raise ConfigError("--webhook: the W&B webhook integration name is empty", "--webhook")
        _check_name(self.registry, "--registry", "the registry name")
        if self.org is not None:
            _check_name(self.org, "--org", "the org")
        _check_name(self.dataset_type, "--dataset-type", "the artifact type")
        _check_name(self.name_prefix, "--name-prefix", "the name prefix")
        if not self.alias.strip():
            raise ConfigError("--alias: the alias is empty", "--alias")
        for collection in self.dataset_collections:
            _check_name(collection, "--dataset-collections", "each collection")
        if len(set(self.dataset_collections)) != len(self.dataset_collections):
            raise ConfigError("--dataset-collections lists a collection twice", "--dataset-collections")
        self.dataset_ref  # noqa: B018 - parses --dataset-project
        if self.metric is None:
            if self.threshold is not None:
                raise ConfigError("--threshold is given without --metric (the metric it applies to)", "--metric")
            return
        if not self.metric.strip():
            raise ConfigError("--metric: the metric name is empty", "--metric")
        if self.op not in OPS:
            raise ConfigError(f"--op must be one of {', '.join(OPS)}, got {self.op!r}", "--op")
        if self.threshold is None:
            raise ConfigError(f"--threshold is required with --metric {self.metric}", "--threshold")
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)) \
                or not math.isfinite(self.threshold):
            raise ConfigError(f"--threshold must be a finite number, got {self.threshold!r}", "--threshold")
        if not isinstance(self.window, int) or isinstance(self.window, bool) or self.window < 1:
            raise ConfigError(f"--window must be a whole number >= 1, got {self.window!r}", "--window")
        if self.agg is not None and self.agg not in AGGREGATIONS:
            raise ConfigError(f"--agg must be one of {', '.join(AGGREGATIONS)}, got {self.agg!r}", "--agg")
        if self.window > 1 and self.agg is None:
            raise ConfigError("--window > 1 needs --agg (min, max or avg over the window)", "--agg")
        if self.metric_ref.is_registry:
            raise ConfigError("--metric-project must be a project: run metric automations cannot watch a registry",
                              "--metric-project")

    @property
    def registry_ref(self) -> ProjectRef:
        name = self.registry[len(REGISTRY_PREFIX):] if self.registry.startswith(REGISTRY_PREFIX) else self.registry
        return ProjectRef(self.org or self.entity, REGISTRY_PREFIX + name)

    @property
    def dataset_ref(self) -> ProjectRef:
        return parse_project(self.dataset_project or DEFAULT_PROJECT, self.entity, "--dataset-project")

    @property
    def metric_ref(self) -> ProjectRef:
        return parse_project(self.metric_project or DEFAULT_PROJECT, self.entity, "--metric-project")


# --------------------------------------------------------------------------- the specs


@dataclass(frozen=True)
class ScopeRef:
    """An automation's scope named by path; `resolve_scope` fetches the SDK object for it."""

    kind: ScopeKind
    entity: str
    project: str
    collection: str | None = None
    artifact_type: str | None = None

    @property
    def path(self) -> str:
        base = f"{self.entity}/{self.project}"
        return f"{base}/{self.collection}" if self.collection else base

    @property
    def registry_name(self) -> str | None:
        return self.project[len(REGISTRY_PREFIX):] if self.project.startswith(REGISTRY_PREFIX) else None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "path": self.path}
        if self.artifact_type:
            out["artifact_type"] = self.artifact_type
        return out


@dataclass(frozen=True)
class AutomationSpec:
    """One automation to install: the SDK event class, its filter and the webhook payload.

    `payload` is the shared template object of `deployments.wandb_events` itself, never a copy.
    """

    key: str
    name: str
    description: str
    event_class: type
    scope: ScopeRef
    filter: Any
    payload: dict[str, str]
    #: The `${event_type}` W&B sends for this automation, and the Prefect event it becomes.
    wandb_event_type: str
    prefect_event: str
    #: prefect.yaml deployments whose triggers expect `prefect_event` (informational).
    deployments: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def event(self, scope: Any) -> Any:
        """The SDK event (`OnAddArtifactAlias(...)` etc.) for a fetched scope object."""
        kwargs: dict[str, Any] = {"scope": scope}
        if self.filter is not None:
            kwargs["filter"] = self.filter
        return self.event_class(**kwargs)

    def action(self, integration: Any) -> Any:
        """`SendWebhook` to the integration, with the shared payload template."""
        from wandb.automations import SendWebhook

        return SendWebhook.from_integration(integration, payload=self.payload)

    def automation(self, scope: Any, integration: Any) -> Any:
        """`event >> action`: the SDK's `NewAutomation`, what `api.create_automation` takes."""
        return self.event(scope) >> self.action(integration)

    def filter_json(self) -> Any:
        """The event filter exactly as the SDK serialises it (wrapped, nested JSON decoded)."""
        event = self.event(placeholder_scope(self.scope))
        return canonical_json(event.model_dump(mode="json")["filter"])

    def to_dict(self, webhook: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "key": self.key,
            "name": self.name,
            "description": self.description,
            "event": {"class": self.event_class.__name__, "event_type": self.wandb_event_type},
            "scope": self.scope.to_dict(),
            "filter": self.filter_json(),
            "action": {"class": "SendWebhook", "action_type": "GENERIC_WEBHOOK", "webhook": webhook,
                       "payload": self.payload},
            "prefect_event": self.prefect_event,
            "deployments": list(self.deployments),
        }
        if self.warnings:
            out["warnings"] = list(self.warnings)
        return out


def _name_part(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", value).strip("-") or "x"


def _event_type_of(event_class: type) -> str:
    default = event_class.model_fields["event_type"].default
    return getattr(default, "value", default)


def build_automations(config: AutomationConfig) -> list[AutomationSpec]:
    """The automations `config` asks for, built offline from the SDK's own classes."""
    from wandb.automations import (
        ArtifactEvent,
        EventType,
        MetricThresholdFilter,
        OnAddArtifactAlias,
        OnCreateArtifact,
        OnLinkArtifact,
        OnRunMetric,
    )

    config.validate()
    prefix = config.name_prefix
    registry = config.registry_ref
    registry_scope = ScopeRef("registry", registry.entity, registry.project)
    registry_label = _name_part(registry.project[len(REGISTRY_PREFIX):])
    managed = f"Managed by `{PROG}`: changes made in W&B, other than disabling it, are undone by its next run."
    specs: list[AutomationSpec] = []

    alias_regex = f"^{re.escape(config.alias.strip())}$"
    specs.append(AutomationSpec(
        key="model-alias",
        name=f"{prefix}-{registry_label}-alias-{_name_part(config.alias.strip())}",
        description=(f"Alias matching {alias_regex} added to a version in {registry.path}: POST to the "
                     f"modelops webhook receiver as wandb.artifact.alias-added (review-issue, canary-rollout). "
                     + managed),
        event_class=OnAddArtifactAlias,
        scope=registry_scope,
        filter=ArtifactEvent.alias.matches_regex(alias_regex),
        payload=PAYLOAD_TEMPLATE_ARTIFACT,
        wandb_event_type=_event_type_of(OnAddArtifactAlias),
        prefect_event=EVENT_NAMES[_event_type_of(OnAddArtifactAlias)],
        deployments=("review-issue", "canary-rollout"),
    ))

    dataset = config.dataset_ref
    warnings: tuple[str, ...] = ()
    if dataset.is_registry:
        warnings = (
            f"{dataset.path} is a registry: W&B documents only 'linked' and 'alias added' events for "
            "registries, so a CREATE_ARTIFACT automation on a registry collection may never fire; "
            "watch the project the dataset versions are logged to instead",
        )
    for collection in config.dataset_collections:
        specs.append(AutomationSpec(
            key=f"dataset-created:{collection}",
            name=f"{prefix}-dataset-created-{_name_part(collection)}",
            description=(f"New version of {dataset.path}/{collection} ({config.dataset_type}) created: POST to "
                         f"the modelops webhook receiver as wandb.artifact.created (drift-check). " + managed),
            event_class=OnCreateArtifact,
            scope=ScopeRef("collection", dataset.entity, dataset.project, collection, config.dataset_type),
            filter=None,
            payload=PAYLOAD_TEMPLATE_ARTIFACT,
            wandb_event_type=_event_type_of(OnCreateArtifact),
            prefect_event=EVENT_NAMES[_event_type_of(OnCreateArtifact)],
            deployments=("drift-check",),
            warnings=warnings,
        ))

    if config.link:
        specs.append(AutomationSpec(
            key="model-linked",
            name=f"{prefix}-{registry_label}-linked",
            description=(f"Version linked into {registry.path}: POST to the modelops webhook receiver as "
                         f"wandb.artifact.linked. " + managed),
            event_class=OnLinkArtifact,
            scope=registry_scope,
            filter=None,
            payload=PAYLOAD_TEMPLATE_ARTIFACT,
            # the backend's name for it: EventType.LINK_ARTIFACT == "LINK_MODEL"
            wandb_event_type=_event_type_of(OnLinkArtifact),
            prefect_event=EVENT_NAMES[_event_type_of(OnLinkArtifact)],
        ))

    if config.metric is not None:
        assert config.threshold is not None  # validate()
        metric = config.metric.strip()
        project = config.metric_ref
        metric_filter = MetricThresholdFilter(
            name=metric, cmp=config.op, threshold=float(config.threshold),
            window=config.window, agg=AGGREGATIONS[config.agg] if config.agg else None,
        )
        shown = f"{config.agg}({metric}, last {config.window})" if config.agg else metric
        specs.append(AutomationSpec(
            key="run-metric",
            name=f"{prefix}-run-metric-{_name_part(metric)}",
            description=(f"Run in {project.path} with {shown} {config.op} {config.threshold:g}: POST to the "
                         f"modelops webhook receiver as wandb.run.metric (retrain). " + managed),
            event_class=OnRunMetric,
            scope=ScopeRef("project", project.entity, project.project),
            filter=metric_filter,
            payload=PAYLOAD_TEMPLATE_RUN,
            wandb_event_type=EventType.RUN_METRIC_THRESHOLD.value,
            prefect_event=EVENT_NAMES[EventType.RUN_METRIC_THRESHOLD.value],
            deployments=("retrain",),
        ))

    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"two automations would share a name: {', '.join(names)}", "--dataset-collections")
    return specs


# --------------------------------------------------------------------------- scopes and JSON


def placeholder_scope(ref: ScopeRef) -> Any:
    """An SDK scope object standing for `ref` without any network (id `dry-run:<path>`).

    Used to serialise events offline (the dry run); never sent to W&B.
    """
    from pydantic import TypeAdapter
    from wandb.automations import ArtifactCollectionScope, ProjectScope, RegistryScope

    placeholder_id = f"dry-run:{ref.path}"
    if ref.kind == "registry":
        return RegistryScope(id=placeholder_id, full_name=ref.project)
    if ref.kind == "project":
        return ProjectScope(id=placeholder_id, name=ref.project)
    typename = "ArtifactPortfolio" if ref.registry_name else "ArtifactSequence"
    return TypeAdapter(ArtifactCollectionScope).validate_python(
        {"__typename": typename, "id": placeholder_id, "name": ref.collection}
    )


def canonical_json(value: Any) -> Any:
    """JSON with JSON-encoded strings inside it decoded (the SDK nests them), for display and diffs."""
    if isinstance(value, str):
        text = value.strip()
        if text[:1] in ("{", "["):
            try:
                return canonical_json(json.loads(text))
            except ValueError:
                return value
        return value
    if isinstance(value, Mapping):
        return {k: canonical_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [canonical_json(v) for v in value]
    return value


def resolve_scope(api: Any, ref: ScopeRef, config: AutomationConfig) -> Any:
    """Fetch the W&B object an automation scope needs (registry, artifact collection, project)."""
    flag = {"registry": "--registry/--org", "collection": "--dataset-project/--dataset-collections",
            "project": "--metric-project"}[ref.kind]
    try:
        if ref.kind == "registry":
            obj = api.registry(ref.registry_name, organization=config.org)
        elif ref.kind == "collection":
            obj = api.artifact_collection(type_name=ref.artifact_type, name=ref.path)
        else:
            obj = api.project(ref.project, entity=ref.entity)
        if not getattr(obj, "id", None):  # loads lazily-fetched objects (Project.id)
            raise ValueError("no id")
    except Exception as exc:  # noqa: BLE001 - reported with the flag that names it
        what = {"registry": "registry", "collection": f"{ref.artifact_type} collection", "project": "project"}[ref.kind]
        hint = " (a collection exists once its first version is logged)" if ref.kind == "collection" else ""
        raise ConfigError(f"cannot fetch the W&B {what} {ref.path}{hint}: {exc}", flag) from exc
    return obj


def find_webhook(api: Any, entity: str, name: str) -> Any:
    """The entity's webhook integration called `name`; a `ConfigError` listing the names otherwise."""
    integrations = list(api.webhook_integrations(entity=entity))
    matches = [ig for ig in integrations if getattr(ig, "name", None) == name]
    if len(matches) == 1:
        return matches[0]
    names = sorted({str(getattr(ig, "name", "?")) for ig in integrations})
    if matches:
        raise ConfigError(f"--webhook: {len(matches)} webhook integrations of {entity!r} are named {name!r}; "
                          "rename all but one in Team Settings -> Webhooks", "--webhook")
    available = ", ".join(names) if names else "none (a team admin adds one in Team Settings -> Webhooks)"
    raise ConfigError(f"--webhook: no W&B webhook integration named {name!r} in entity {entity!r}; "
                      f"available: {available}", "--webhook")


# --------------------------------------------------------------------------- apply


@dataclass
class Result:
    name: str
    status: Literal["created", "updated", "unchanged"]
    id: str | None = None
    changed: list[str] = field(default_factory=list)
    enabled: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "id": self.id, "changed": self.changed,
                "enabled": self.enabled}


def _filter_input(event_filter: Any) -> Any:
    # The SDK's own serialisation of an event filter for create/update (private in wandb 0.31.0);
    # saved and input filters are nested differently, this un-nests them alike.
    from wandb.automations._inputs import prepare_event_filter_input

    return canonical_json(prepare_event_filter_input(event_filter))


def _value(x: Any) -> Any:
    return getattr(x, "value", x)


def differences(existing: Any, desired: Any, description: str) -> list[str]:
    """Which of the fields this tool manages differ between a saved `Automation` and the desired one."""
    changed: list[str] = []
    if (existing.description or "") != description:
        changed.append("description")
    if _value(existing.event.event_type) != _value(desired.event.event_type):
        changed.append("event")
    scope = desired.event.scope
    if existing.scope.id != scope.id or _value(existing.scope.scope_type) != _value(scope.scope_type):
        changed.append("scope")
    try:
        same_filter = _filter_input(existing.event.filter) == _filter_input(desired.event.filter)
    except Exception:  # noqa: BLE001 - an unreadable saved filter is rewritten
        same_filter = False
    if not same_filter:
        changed.append("filter")
    action = existing.action
    if _value(getattr(action, "action_type", None)) != "GENERIC_WEBHOOK" \
            or getattr(getattr(action, "integration", None), "id", None) != desired.action.integration_id:
        changed.append("webhook")
    elif getattr(action, "request_payload", None) != desired.action.request_payload:
        changed.append("payload")
    return changed


def _find_existing(api: Any, name: str, entities: Iterable[str | None]) -> Any | None:
    for entity in entities:
        found = [a for a in api.automations(entity=entity, name=name) if a.name == name]
        if len(found) > 1:
            raise RuntimeError(f"{len(found)} W&B automations are named {name!r}; delete all but one")
        if found:
            return found[0]
    return None


def apply_automations(
    api: Any,
    specs: Sequence[AutomationSpec],
    config: AutomationConfig,
    *,
    on_result: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Create or update every spec through `api` (a `wandb.Api`); idempotent by automation name."""
    integration = find_webhook(api, config.entity, config.webhook)
    scopes: dict[ScopeRef, Any] = {}
    results: list[Result] = []
    for spec in specs:
        if spec.scope not in scopes:
            scopes[spec.scope] = resolve_scope(api, spec.scope, config)
        desired = spec.automation(scopes[spec.scope], integration)
        # A registry belongs to the org's entity, not to the --org name the user typed: search the
        # entity that owns the fetched scope first (`Registry.entity`), then the names given.
        owner = getattr(scopes[spec.scope], "entity", None)
        owner = owner if isinstance(owner, str) else None
        entities = list(dict.fromkeys([owner, spec.scope.entity, config.entity]))
        existing = _find_existing(api, spec.name, [e for e in entities if e])
        result: Result | None = None
        if existing is None:
            try:
                saved = api.create_automation(desired, name=spec.name, description=spec.description)
            except Exception as exc:  # W&B's 409: ValueError "... exists", wrapped by the SDK in CommError
                if "exists" not in str(exc):
                    raise
                # named in an entity we did not search (e.g. the org's): find it wherever it is visible
                existing = _find_existing(api, spec.name, [None])
                if existing is None:
                    raise
            else:
                result = Result(spec.name, "created", getattr(saved, "id", None), [],
                                getattr(saved, "enabled", True))
        if result is None:
            changed = differences(existing, desired, spec.description)
            if changed:
                saved = api.update_automation(
                    existing, description=spec.description, event=desired.event,
                    action=desired.action, scope=desired.event.scope,
                )
                result = Result(spec.name, "updated", getattr(saved, "id", existing.id), changed,
                                getattr(saved, "enabled", existing.enabled))
            else:
                result = Result(spec.name, "unchanged", existing.id, [], existing.enabled)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Create or update the W&B Automations that POST to the modelops webhook receiver.",
        epilog="Exit 0 done, 2 bad flags/settings (named in the message), 1 W&B failed.",
    )
    p.add_argument("--entity", default=None,
                   help="team (or org) owning the webhook integration; default $WANDB_ENTITY")
    p.add_argument("--webhook", default=DEFAULT_WEBHOOK,
                   help=f"name of the W&B webhook integration (Team Settings -> Webhooks); default {DEFAULT_WEBHOOK}")
    p.add_argument("--registry", default="model", help="model registry name (project wandb-registry-NAME); default model")
    p.add_argument("--org", default=None, help="organization owning the registry; default: resolved from --entity")
    p.add_argument("--dataset-project", default=None,
                   help=f"ENTITY/PROJECT, PROJECT or registry:NAME holding the datasets; default ENTITY/{DEFAULT_PROJECT}")
    p.add_argument("--dataset-collections", default=",".join(DEFAULT_DATASET_COLLECTIONS),
                   help="comma-separated dataset collections (prefect.yaml drift-check); default %(default)s")
    p.add_argument("--dataset-type", default="dataset", help="artifact type of the datasets; default dataset")
    p.add_argument("--metric-project", default=None,
                   help=f"ENTITY/PROJECT or PROJECT whose runs the metric alert watches; default ENTITY/{DEFAULT_PROJECT}")
    p.add_argument("--metric", default=None, help="metric name for the run-metric alert (no alert without it)")
    p.add_argument("--threshold", default=None, help="threshold the metric is compared with")
    p.add_argument("--op", default="<", help=f"comparison: one of {' '.join(OPS)}; default <")
    p.add_argument("--window", default="1", help="number of latest values aggregated (with --agg); default 1")
    p.add_argument("--agg", default=None, help=f"aggregation over the window: {', '.join(AGGREGATIONS)}")
    p.add_argument("--alias", default="production", help="alias that starts review and rollout (matched as ^ALIAS$)")
    p.add_argument("--no-link", action="store_true", help="do not install the 'linked into the registry' automation")
    p.add_argument("--name-prefix", default="modelops", help="prefix of the automation names; default modelops")
    p.add_argument("--wandb-block", default=None, help="a saved WandbCredentials block (instead of WANDB_API_KEY)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the automations as JSON; no network, no API key needed")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    return p


def config_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> AutomationConfig:
    entity = (args.entity or environ.get("WANDB_ENTITY") or "").strip()
    if not entity:
        raise ConfigError("--entity is required (or set WANDB_ENTITY): the team owning the webhook", "--entity")
    threshold: float | None = None
    if args.threshold is not None:
        try:
            threshold = float(args.threshold)
        except ValueError:
            raise ConfigError(f"--threshold must be a number, got {args.threshold!r}", "--threshold") from None
    try:
        window = int(args.window)
    except ValueError:
        raise ConfigError(f"--window must be a whole number >= 1, got {args.window!r}", "--window") from None
    collections = tuple(c.strip() for c in args.dataset_collections.split(",") if c.strip())
    agg = args.agg.strip().lower() if args.agg else None
    if agg == "average":
        agg = "avg"
    return AutomationConfig(
        entity=entity, webhook=args.webhook.strip(), registry=args.registry.strip(),
        org=args.org.strip() if args.org else None,
        dataset_project=args.dataset_project, dataset_collections=collections,
        dataset_type=args.dataset_type.strip(), metric_project=args.metric_project,
        metric=args.metric, threshold=threshold, op=args.op.strip(), window=window, agg=agg,
        alias=args.alias, name_prefix=args.name_prefix.strip(), link=not args.no_link,
    )


def dry_run_document(specs: Sequence[AutomationSpec], config: AutomationConfig) -> dict[str, Any]:
    warnings = list(dict.fromkeys(w for s in specs for w in s.warnings))
    return {
        "dry_run": True,
        "entity": config.entity,
        "webhook": config.webhook,
        "automations": [s.to_dict(config.webhook) for s in specs],
        "warnings": warnings,
    }


def _api_from_settings(args: argparse.Namespace, config: AutomationConfig, environ: Mapping[str, str]) -> Any:
    """A `wandb.Api`: from --wandb-block, else WANDB_API_KEY. ConfigError (exit 2) without a key."""
    if not args.wandb_block and not environ.get("WANDB_API_KEY", "").strip():
        raise ConfigError(f"no W&B API key: set {KEY_SETTING}, or use --dry-run", "WANDB_API_KEY")
    from blocks.wandb import WandbConfigError, WandbCredentials

    try:
        creds = WandbCredentials.load(args.wandb_block) if args.wandb_block else WandbCredentials.from_env(environ)
    except ValueError as exc:
        raise ConfigError(f"--wandb-block {args.wandb_block!r} cannot be loaded: {exc}", "--wandb-block") from None
    if creds is None or not creds.configured:
        raise ConfigError(f"no W&B API key: set {KEY_SETTING}, or use --dry-run", "WANDB_API_KEY")
    if not creds.entity:
        creds = creds.model_copy(update={"entity": config.entity})
    try:
        return creds.get_api()
    except WandbConfigError as exc:
        raise ConfigError(str(exc), "WANDB_API_KEY") from None


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def main(argv: list[str] | None = None, *, api: Any = None, environ: Mapping[str, str] | None = None) -> int:
    """The command line. `api` (tests) replaces the `wandb.Api` built from the key."""
    env = os.environ if environ is None else environ
    args = build_parser().parse_args(argv)
    secrets = [env.get("WANDB_API_KEY", "").strip()]

    def fail(code: int, message: str) -> int:
        print(f"wandb-automations: {_scrub(message, secrets)}", file=sys.stderr)
        return code

    try:
        config = config_from_args(args, env)
        specs = build_automations(config)
    except ConfigError as exc:
        return fail(2, str(exc))

    if args.dry_run:
        doc = dry_run_document(specs, config)
        print(json.dumps(doc) if args.json else json.dumps(doc, indent=2))
        for warning in doc["warnings"]:
            print(f"wandb-automations: warning: {warning}", file=sys.stderr)
        return 0

    def report(result: Result) -> None:
        if not args.json:
            extra = f" ({', '.join(result.changed)})" if result.changed else ""
            disabled = " [disabled in W&B: left disabled]" if result.enabled is False else ""
            print(f"{result.status:9} {result.name}{extra}{disabled}")

    captured = io.StringIO()
    done: list[Result] = []
    try:
        # wandb may print to stdout: keep stdout for our report / the one JSON document
        with contextlib.redirect_stdout(captured):
            if api is None:
                api = _api_from_settings(args, config, env)
        for warning in dict.fromkeys(w for s in specs for w in s.warnings):
            print(f"wandb-automations: warning: {warning}", file=sys.stderr)
        with contextlib.redirect_stdout(captured):
            apply_automations(api, specs, config, on_result=done.append)
    except ConfigError as exc:
        sys.stderr.write(_scrub(captured.getvalue(), secrets))
        return fail(2, str(exc))
    except Exception as exc:  # noqa: BLE001 - report, don't dump a traceback (or a key) on the operator
        sys.stderr.write(_scrub(captured.getvalue(), secrets))
        progress = ", ".join(f"{r.name} {r.status}" for r in done)
        return fail(1, f"W&B failed: {type(exc).__name__}: {exc}" + (f" (done before: {progress})" if progress else ""))
    sys.stderr.write(_scrub(captured.getvalue(), secrets))
    if args.json:
        print(json.dumps({"dry_run": False, "entity": config.entity, "webhook": config.webhook,
                          "results": [r.to_dict() for r in done]}))
    else:
        for result in done:
            report(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

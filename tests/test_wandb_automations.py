"""The W&B Automations we install, checked offline: what W&B would POST parses into our triggers.

`deployments.wandb_automations` builds the automations from the SDK's own classes
(`OnAddArtifactAlias`, `OnCreateArtifact`, `OnLinkArtifact`, `OnRunMetric`, `SendWebhook`) around the
one payload template of `deployments.wandb_events`. Here every automation's payload is rendered as
W&B renders it, parsed by the receiver's `parse_body` and matched against prefect.yaml's triggers.
The apply path runs against `FakeApi`, which prepares requests with the SDK's own input code
(`prepare_to_create` / `prepare_to_update`) and answers with SDK `Automation` objects, as W&B would.
No network, no Prefect server.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployments.wandb_automations import (
    DEFAULT_DATASET_COLLECTIONS,
    AutomationConfig,
    AutomationSpec,
    ConfigError,
    apply_automations,
    build_automations,
    find_webhook,
    main,
)
from deployments.wandb_events import (
    PAYLOAD_TEMPLATE_ARTIFACT,
    PAYLOAD_TEMPLATE_RUN,
    artifact_body,
    parse_body,
    render_template,
    template_variables,
)

ROOT = Path(__file__).resolve().parents[1]
ENTITY = "acme"
ORG = "acme-org"
WEBHOOK = "modelops-receiver"

# FACTS.md, "W&B webhooks": the documented template variables (`artifact_metadata.KEY` per key).
DOCUMENTED_VARIABLES = {
    "event_type", "event_author", "entity_name", "project_name", "alias", "tag",
    "artifact_collection_name", "artifact_version", "artifact_version_string",
}
# What W&B puts in ${event_type} for each SDK event (the backend enum; LINK_ARTIFACT is "LINK_MODEL").
WANDB_EVENT_TYPE = {
    "OnAddArtifactAlias": "ADD_ARTIFACT_ALIAS",
    "OnCreateArtifact": "CREATE_ARTIFACT",
    "OnLinkArtifact": "LINK_MODEL",
    "OnRunMetric": "RUN_METRIC",
}


def config(**overrides: Any) -> AutomationConfig:
    values: dict[str, Any] = dict(
        entity=ENTITY, webhook=WEBHOOK, dataset_project=f"{ENTITY}/churn", metric_project=f"{ENTITY}/churn",
        metric="val_accuracy", threshold=0.85, op="<",
    )
    values.update(overrides)
    return AutomationConfig(**values)


def by_key(specs: list[AutomationSpec]) -> dict[str, AutomationSpec]:
    return {s.key: s for s in specs}


# =========================================================================== the builder


def test_builder_makes_the_four_kinds_of_automation_with_their_scopes_and_filters() -> None:
    specs = by_key(build_automations(config()))
    assert set(specs) == {"model-alias", "model-linked", "run-metric",
                          *(f"dataset-created:{c}" for c in DEFAULT_DATASET_COLLECTIONS)}

    alias = specs["model-alias"]
    assert alias.event_class.__name__ == "OnAddArtifactAlias"
    assert (alias.scope.kind, alias.scope.path) == ("registry", f"{ENTITY}/wandb-registry-model")
    assert alias.filter_json() == {"$or": [{"$and": [{"alias": {"$regex": "^production$"}}]}]}
    regex = alias.filter_json()["$or"][0]["$and"][0]["alias"]["$regex"]
    assert re.search(regex, "production") and not re.search(regex, "production-old")
    assert not re.search(regex, "pre-production")

    for collection in DEFAULT_DATASET_COLLECTIONS:  # the SDK scopes CREATE_ARTIFACT to one collection
        created = specs[f"dataset-created:{collection}"]
        assert created.event_class.__name__ == "OnCreateArtifact"
        assert (created.scope.kind, created.scope.path) == ("collection", f"{ENTITY}/churn/{collection}")
        assert created.scope.artifact_type == "dataset"

    linked = specs["model-linked"]
    assert linked.event_class.__name__ == "OnLinkArtifact"
    assert linked.scope == alias.scope

    metric = specs["run-metric"]
    assert metric.event_class.__name__ == "OnRunMetric"
    assert (metric.scope.kind, metric.scope.path) == ("project", f"{ENTITY}/churn")
    threshold = metric.filter_json()["run_metric_filter"]["threshold_filter"]
    assert threshold == {"name": "val_accuracy", "agg_op": None, "window_size": 1, "cmp_op": "$lt", "threshold": 0.85}


def test_the_sdk_builds_each_event_and_action_from_the_specs() -> None:
    from wandb.automations import NewAutomation, SendWebhook

    fake = FakeApi()
    integration = find_webhook(fake, ENTITY, WEBHOOK)
    for spec in build_automations(config(metric_project=f"{ENTITY}/churn")):
        automation = spec.automation(fake.scope_for(spec), integration)
        assert isinstance(automation, NewAutomation)
        assert type(automation.event) is spec.event_class
        assert automation.event.event_type.value == WANDB_EVENT_TYPE[spec.event_class.__name__]
        assert isinstance(automation.action, SendWebhook)
        assert automation.action.integration_id == integration.id


def test_every_webhook_payload_is_the_shared_template() -> None:
    specs = build_automations(config())
    for spec in specs:
        expected = PAYLOAD_TEMPLATE_RUN if spec.key == "run-metric" else PAYLOAD_TEMPLATE_ARTIFACT
        assert spec.payload is expected, spec.name
        fake = FakeApi()
        action = spec.action(find_webhook(fake, ENTITY, WEBHOOK))
        assert action.request_payload == expected


def test_builder_options_alias_registry_org_collections_and_no_metric() -> None:
    specs = by_key(build_automations(AutomationConfig(
        entity=ENTITY, org=ORG, registry="wandb-registry-churn", alias="prod.v2",
        dataset_project="registry:dataset", dataset_collections=("events",), link=False, name_prefix="mo",
    )))
    assert set(specs) == {"model-alias", "dataset-created:events"}
    alias = specs["model-alias"]
    assert alias.name == "mo-churn-alias-prod.v2"
    assert alias.scope.path == f"{ORG}/wandb-registry-churn"
    assert alias.filter_json()["$or"][0]["$and"][0]["alias"]["$regex"] == r"^prod\.v2$"
    created = specs["dataset-created:events"]
    assert created.scope.path == f"{ENTITY}/wandb-registry-dataset/events"
    assert created.warnings and "registry" in created.warnings[0]


@pytest.mark.parametrize(
    ("overrides", "flag"),
    [
        (dict(op="=="), "--op"),
        (dict(threshold=float("nan")), "--threshold"),
        (dict(threshold=None), "--threshold"),
        (dict(metric=None), "--metric"),  # a threshold without a metric
        (dict(window=5), "--agg"),
        (dict(agg="median"), "--agg"),
        (dict(metric_project="registry:model"), "--metric-project"),
        (dict(dataset_project="a/b/c"), "--dataset-project"),
        (dict(dataset_collections=("churn-data", "churn-data")), "--dataset-collections"),
        (dict(entity=""), "--entity"),
    ],
)
def test_bad_settings_name_their_flag(overrides: dict[str, Any], flag: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_automations(config(**overrides))
    assert info.value.flag == flag
    assert flag in str(info.value)


def test_aggregated_metric_window() -> None:
    spec = by_key(build_automations(config(window=5, agg="avg", op=">=", threshold=0.3)))["run-metric"]
    assert spec.filter_json()["run_metric_filter"]["threshold_filter"] == {
        "name": "val_accuracy", "agg_op": "AVERAGE", "window_size": 5, "cmp_op": "$gte", "threshold": 0.3}


# =========================================================================== W&B -> receiver -> prefect.yaml


def sample_values(spec: AutomationSpec) -> dict[str, str]:
    """The variables W&B fills in when this automation fires (None of `${alias}`/`${tag}` when absent)."""
    values = {
        "event_type": WANDB_EVENT_TYPE[spec.event_class.__name__],
        "event_author": "alice",
        "entity_name": spec.scope.entity,
        "project_name": spec.scope.project,
    }
    if spec.event_class.__name__ == "OnRunMetric":
        return values
    collection = spec.scope.collection or "churn-model"
    version = "v7"
    values.update({
        "artifact_collection_name": collection,
        "artifact_version": "wandb-artifact://_id/QXJ0aWZhY3Q6NTE3ODg5ODg3",
        "artifact_version_string": f"{spec.scope.entity}/{spec.scope.project}/{collection}:{version}",
    })
    if spec.event_class.__name__ == "OnAddArtifactAlias":
        values["alias"] = "production"
    return values


def _label_matches(value: str | None, expected: Any) -> bool:
    if value is None:
        return False
    for pattern in expected if isinstance(expected, list) else [expected]:
        pattern = str(pattern)
        if pattern.endswith("*") and value.startswith(pattern[:-1]) or value == pattern:
            return True
    return False


def triggered_deployments(event: str, resource: dict[str, str]) -> set[str]:
    """prefect.yaml's deployments whose event triggers fire on this event (expect + match)."""
    doc = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    fired = set()
    for deployment in doc["deployments"]:
        for trigger in deployment.get("triggers") or []:
            if event in trigger.get("expect", []) and all(
                _label_matches(resource.get(k), v) for k, v in (trigger.get("match") or {}).items()
            ):
                fired.add(deployment["name"])
    return fired


@pytest.mark.parametrize("key", ["model-alias", "dataset-created:churn-data", "dataset-created:training-data",
                                 "model-linked", "run-metric"])
def test_what_wandb_sends_becomes_the_event_our_triggers_expect(key: str) -> None:
    spec = by_key(build_automations(config(org=ORG)))[key]
    body = render_template(spec.payload, sample_values(spec))
    event = parse_body(json.dumps(body).encode())
    assert event.event == spec.prefect_event
    assert triggered_deployments(event.event, event.resource) == set(spec.deployments)

    if spec.event_class.__name__ == "OnRunMetric":
        assert event.event == "wandb.run.metric"
        assert event.resource["prefect.resource.id"] == f"wandb.run.{ENTITY}/churn/-"
        assert spec.deployments == ("retrain",)
        return
    collection = spec.scope.collection or "churn-model"
    assert event.resource["prefect.resource.id"] == (
        f"wandb.artifact.{spec.scope.entity}/{spec.scope.project}/{collection}:v7")
    assert event.resource["wandb.collection"] == collection
    assert event.resource["wandb.version"] == "v7"
    assert "wandb.tag" not in event.resource  # ${tag} is blank outside tag events
    if key == "model-alias":
        assert event.event == "wandb.artifact.alias-added"
        assert event.resource["wandb.alias"] == "production"
        assert event.resource["wandb.project"] == "wandb-registry-model"
        assert event.resource["wandb.entity"] == ORG
        assert set(spec.deployments) == {"review-issue", "canary-rollout"}
    elif key.startswith("dataset-created:"):
        assert event.event == "wandb.artifact.created"
        assert event.resource["wandb.collection"] in DEFAULT_DATASET_COLLECTIONS
        assert "wandb.alias" not in event.resource
        assert spec.deployments == ("drift-check",)
    else:
        assert event.event == "wandb.artifact.linked"


def test_docs_name_for_link_events_parses_alike() -> None:
    spec = by_key(build_automations(config()))["model-linked"]
    values = sample_values(spec)
    sdk = parse_body(json.dumps(render_template(spec.payload, values)).encode())
    docs = parse_body(json.dumps(render_template(spec.payload, {**values, "event_type": "LINK_ARTIFACT"})).encode())
    assert sdk.event == docs.event == "wandb.artifact.linked"
    assert sdk.resource == docs.resource


def test_another_alias_does_not_start_review_or_rollout() -> None:
    spec = by_key(build_automations(config()))["model-alias"]
    body = render_template(spec.payload, {**sample_values(spec), "alias": "staging"})
    event = parse_body(json.dumps(body).encode())
    assert triggered_deployments(event.event, event.resource) == set()


# =========================================================================== the shared template


def test_templates_use_only_documented_variables() -> None:
    assert template_variables(PAYLOAD_TEMPLATE_ARTIFACT) == DOCUMENTED_VARIABLES
    assert template_variables(PAYLOAD_TEMPLATE_RUN) == {"event_type", "event_author", "entity_name", "project_name"}
    assert all(v == f"${{{k}}}" for k, v in PAYLOAD_TEMPLATE_ARTIFACT.items())


def test_render_template_substitutes_like_wandb() -> None:
    template = {"a": "${event_type}", "b": "x-${alias}-y", "c": {"d": ["${tag}", 3]}, "e": 1,
                "m": "${artifact_metadata.owner}"}
    before = json.dumps(template)
    out = render_template(template, {"event_type": "CREATE_ARTIFACT", "artifact_metadata.owner": "ml"})
    assert out == {"a": "CREATE_ARTIFACT", "b": "x--y", "c": {"d": ["", 3]}, "e": 1, "m": "ml"}
    assert json.dumps(template) == before  # the template is not modified
    assert render_template(PAYLOAD_TEMPLATE_RUN, {}) == {k: "" for k in PAYLOAD_TEMPLATE_RUN}


def test_local_registry_and_demo_bodies_are_the_rendered_template() -> None:
    body = artifact_body("ADD_ARTIFACT_ALIAS", ENTITY, "wandb-registry-model", "churn-model", "v3",
                         alias="production", author="alice")
    assert render_template(PAYLOAD_TEMPLATE_ARTIFACT, body) == body


def test_readme_payload_block_is_the_constant() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("### The W&B payload template")
    section = readme[start:readme.index("\n### ", start + 1)]
    blocks = re.findall(r"```json\n(.*?)\n```", section, flags=re.S)
    assert len(blocks) == 1
    assert blocks[0] == json.dumps(PAYLOAD_TEMPLATE_ARTIFACT, indent=2)
    assert json.loads(blocks[0]) == PAYLOAD_TEMPLATE_ARTIFACT
    assert "PAYLOAD_TEMPLATE_ARTIFACT" in section and "deployments.wandb_automations" in section


# =========================================================================== the apply path, against a fake Api


class FakeApi:
    """The parts of `wandb.Api` the tool uses; requests are prepared by the SDK's own input code."""

    def __init__(self, webhooks: tuple[str, ...] = (WEBHOOK, "slack-bridge"), hide_from_entity: bool = False) -> None:
        from wandb.automations import WebhookIntegration

        self.integrations = [
            WebhookIntegration.model_validate({
                "__typename": "GenericWebhookIntegration", "id": f"SW50ZWdyYXRpb246{i}", "name": name,
                "urlEndpoint": f"https://hooks.example.com/{name}"})
            for i, name in enumerate(webhooks)
        ]
        self.saved: dict[str, Any] = {}  # id -> Automation
        self.entity_of: dict[str, str] = {}  # automation id -> entity it is listed under
        self.scopes: dict[str, tuple[dict[str, Any], str]] = {}  # scope id -> (GraphQL scope, entity)
        self.calls: list[tuple[Any, ...]] = []
        self.requests: list[dict[str, Any]] = []  # GraphQL inputs sent to create/update
        self.hide_from_entity = hide_from_entity

    # ---- lookups
    def webhook_integrations(self, entity: str | None = None, *, per_page: int = 50, start: str | None = None):
        self.calls.append(("webhook_integrations", entity))
        return iter(list(self.integrations))

    def _scope(self, typename: str, entity: str, name: str, path: str, **extra: Any) -> Any:
        from pydantic import TypeAdapter
        from wandb.automations.scopes import AutomationScope

        scope_id = "U2NvcGU6" + path.replace("/", "_")
        data = {"__typename": typename, "id": scope_id, "name": name, **extra}
        self.scopes[scope_id] = (data, entity)
        if typename == "Project" and extra.get("isRegistry"):
            from wandb.automations import RegistryScope
            return RegistryScope(id=scope_id, full_name=name)
        return TypeAdapter(AutomationScope).validate_python(data)

    def registry(self, name: str, organization: str | None = None) -> Any:
        self.calls.append(("registry", name, organization))
        org = organization or ENTITY
        return self._scope("Project", org, f"wandb-registry-{name}", f"{org}/wandb-registry-{name}", isRegistry=True)

    def project(self, name: str, entity: str | None = None) -> Any:
        self.calls.append(("project", name, entity))
        return self._scope("Project", entity or ENTITY, name, f"{entity}/{name}", isRegistry=False)

    def artifact_collection(self, type_name: str, name: str) -> Any:
        self.calls.append(("artifact_collection", type_name, name))
        entity, project, collection = name.split("/")
        typename = "ArtifactPortfolio" if project.startswith("wandb-registry-") else "ArtifactSequence"
        return self._scope(typename, entity, collection, name)

    def scope_for(self, spec: AutomationSpec) -> Any:
        ref = spec.scope
        if ref.kind == "registry":
            return self.registry(ref.registry_name, organization=ref.entity)
        if ref.kind == "collection":
            return self.artifact_collection(ref.artifact_type, ref.path)
        return self.project(ref.project, entity=ref.entity)

    def automations(self, entity: str | None = None, *, name: str | None = None, per_page: int = 50,
                    start: str | None = None):
        self.calls.append(("automations", entity, name))
        return iter([a for i, a in self.saved.items()
                     if (name is None or a.name == name)
                     and (entity is None or (self.entity_of[i] == entity and not self.hide_from_entity))])

    # ---- writes
    def _as_saved(self, gql: dict[str, Any], automation_id: str) -> Any:
        from wandb.automations import Automation

        scope, entity = self.scopes[gql["scopeID"]]
        event_filter = gql["eventFilter"]
        if not gql["triggeringEventType"].startswith("RUN_"):
            event_filter = json.dumps({"filter": event_filter})  # saved mutation filters come back wrapped
        webhook = gql["triggeredActionConfig"]["genericWebhookActionInput"]
        self.entity_of[automation_id] = entity
        return Automation.model_validate({
            "__typename": "Trigger", "id": automation_id, "createdAt": "2026-01-01T00:00:00Z", "updatedAt": None,
            "name": gql["name"], "description": gql["description"], "enabled": gql["enabled"], "scope": scope,
            "event": {"__typename": "FilterEventTriggeringCondition", "eventType": gql["triggeringEventType"],
                      "filter": event_filter},
            "action": {"__typename": "GenericWebhookTriggeredAction",
                       "integration": {"__typename": "GenericWebhookIntegration", "id": webhook["integrationID"]},
                       "requestPayload": webhook["requestPayload"]},
        })

    def create_automation(self, obj: Any, *, fetch_existing: bool = False, **kwargs: Any) -> Any:
        from wandb.automations._inputs import prepare_to_create

        gql = prepare_to_create(obj, **kwargs).model_dump()
        self.calls.append(("create_automation", gql["name"]))
        if any(a.name == gql["name"] for a in self.saved.values()):
            raise ValueError(f"Automation {gql['name']!r} exists. Unable to create another with the same name.")
        self.requests.append(gql)
        automation_id = f"VHJpZ2dlcjo{len(self.saved)}"
        self.saved[automation_id] = self._as_saved(gql, automation_id)
        return self.saved[automation_id]

    def update_automation(self, obj: Any, *, create_missing: bool = False, **kwargs: Any) -> Any:
        from wandb.automations._inputs import prepare_to_update

        gql = prepare_to_update(obj, **kwargs).model_dump()
        self.calls.append(("update_automation", gql["name"]))
        assert gql["id"] in self.saved
        self.requests.append(gql)
        self.saved[gql["id"]] = self._as_saved(gql, gql["id"])
        return self.saved[gql["id"]]

    def writes(self) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] in ("create_automation", "update_automation")]


def test_first_run_creates_second_run_changes_nothing() -> None:
    fake = FakeApi()
    cfg = config(org=ORG)
    specs = build_automations(cfg)
    first = apply_automations(fake, specs, cfg)
    assert [(r.name, r.status) for r in first] == [(s.name, "created") for s in specs]
    assert ("webhook_integrations", ENTITY) in fake.calls
    for gql, spec in zip(fake.requests, specs):  # what went to W&B: the template, as JSON
        assert gql["name"] == spec.name
        assert gql["triggeredActionType"] == "GENERIC_WEBHOOK"
        webhook = gql["triggeredActionConfig"]["genericWebhookActionInput"]
        assert webhook["integrationID"] == fake.integrations[0].id
        assert json.loads(webhook["requestPayload"]) == spec.payload
        assert gql["triggeringEventType"] == WANDB_EVENT_TYPE[spec.event_class.__name__]
    assert json.loads(fake.requests[0]["eventFilter"]) == {"$or": [{"$and": [{"alias": {"$regex": "^production$"}}]}]}

    writes_before = len(fake.writes())
    second = apply_automations(fake, specs, cfg)
    assert [(r.name, r.status, r.changed) for r in second] == [(s.name, "unchanged", []) for s in specs]
    assert len(fake.writes()) == writes_before


def test_changed_settings_update_in_place() -> None:
    fake = FakeApi()
    apply_automations(fake, build_automations(config()), config())
    cfg = config(threshold=0.8)
    results = {r.name: r for r in apply_automations(fake, build_automations(cfg), cfg)}
    metric = results["modelops-run-metric-val_accuracy"]
    assert (metric.status, metric.changed) == ("updated", ["description", "filter"])
    assert {r.status for n, r in results.items() if n != metric.name} == {"unchanged"}
    saved = next(a for a in fake.saved.values() if a.name == metric.name)
    assert saved.event.filter.metric.threshold_filter.threshold == 0.8
    assert len(fake.saved) == len(results)  # updated, not duplicated

    # someone edits a payload in the W&B UI: the next run puts the template back
    alias_id = next(i for i, a in fake.saved.items() if a.name == "modelops-model-alias-production")
    fake.saved[alias_id].action.request_payload = {"event_type": "${event_type}"}
    results = {r.name: r for r in apply_automations(fake, build_automations(cfg), cfg)}
    assert (results["modelops-model-alias-production"].status,
            results["modelops-model-alias-production"].changed) == ("updated", ["payload"])
    assert fake.saved[alias_id].action.request_payload == PAYLOAD_TEMPLATE_ARTIFACT


def test_a_disabled_automation_stays_disabled() -> None:
    fake = FakeApi()
    cfg = config()
    apply_automations(fake, build_automations(cfg), cfg)
    alias_id = next(i for i, a in fake.saved.items() if a.name == "modelops-model-alias-production")
    fake.saved[alias_id].enabled = False
    fake.saved[alias_id].description = "edited"
    results = {r.name: r for r in apply_automations(fake, build_automations(cfg), cfg)}
    assert results["modelops-model-alias-production"].status == "updated"
    assert results["modelops-model-alias-production"].enabled is False
    assert fake.saved[alias_id].enabled is False


def test_an_automation_listed_elsewhere_is_found_after_the_name_conflict() -> None:
    fake = FakeApi()
    cfg = config()
    apply_automations(fake, build_automations(cfg), cfg)
    fake.hide_from_entity = True  # e.g. saved under an org entity we did not search
    results = apply_automations(fake, build_automations(cfg), cfg)
    assert {r.status for r in results} == {"unchanged"}
    assert ("automations", None, "modelops-model-linked") in fake.calls


def test_unknown_webhook_lists_the_available_names() -> None:
    fake = FakeApi(webhooks=("prod-receiver", "slack-bridge"))
    with pytest.raises(ConfigError) as info:
        apply_automations(fake, build_automations(config()), config())
    assert info.value.flag == "--webhook"
    assert "prod-receiver, slack-bridge" in str(info.value) and WEBHOOK in str(info.value)
    assert fake.writes() == []


# =========================================================================== the command line


def run_main(argv: list[str], *, api: Any = None, environ: dict[str, str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(argv, api=api, environ={} if environ is None else environ)
    return code, out.getvalue(), err.getvalue()


def test_dry_run_json_prints_one_document_without_key_or_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the dry run opened a connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    code, out, err = run_main(["--entity", ENTITY, "--webhook", WEBHOOK, "--dataset-project", "acme/churn",
                               "--metric", "val_accuracy", "--threshold", "0.85", "--op", "<",
                               "--dry-run", "--json"])
    assert code == 0, err
    assert len(out.strip().splitlines()) == 1
    doc = json.loads(out)
    assert doc["dry_run"] is True
    names = [a["name"] for a in doc["automations"]]
    assert names == ["modelops-model-alias-production", "modelops-dataset-created-churn-data",
                     "modelops-dataset-created-training-data", "modelops-model-linked",
                     "modelops-run-metric-val_accuracy"]
    first = doc["automations"][0]
    assert first["action"] == {"class": "SendWebhook", "action_type": "GENERIC_WEBHOOK", "webhook": WEBHOOK,
                               "payload": PAYLOAD_TEMPLATE_ARTIFACT}
    assert first["scope"] == {"kind": "registry", "path": "acme/wandb-registry-model"}
    assert doc["automations"][-1]["action"]["payload"] == PAYLOAD_TEMPLATE_RUN


def test_dry_run_as_a_module() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    proc = subprocess.run([sys.executable, "-m", "deployments.wandb_automations", "--entity", ENTITY,
                           "--dry-run", "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert len(doc["automations"]) == 4  # no metric alert without --metric


def test_without_dry_run_a_missing_key_exits_2_naming_it() -> None:
    code, out, err = run_main(["--entity", ENTITY])
    assert code == 2 and out == ""
    assert "WANDB_API_KEY" in err


@pytest.mark.parametrize(
    ("extra", "flag"),
    [
        (["--metric", "loss", "--threshold", "1", "--op", "=="], "--op"),
        (["--metric", "loss", "--threshold", "abc"], "--threshold"),
        (["--metric", "loss", "--threshold", "inf"], "--threshold"),
        (["--metric", "loss"], "--threshold"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(extra: list[str], flag: str) -> None:
    code, _, err = run_main(["--entity", ENTITY, "--dry-run", *extra])
    assert code == 2
    assert flag in err


def test_missing_entity_exits_2() -> None:
    code, _, err = run_main(["--dry-run"])
    assert code == 2 and "--entity" in err


def test_apply_from_the_command_line_reports_created_then_unchanged() -> None:
    fake = FakeApi()
    argv = ["--entity", ENTITY, "--webhook", WEBHOOK, "--dataset-project", "acme/churn", "--json"]
    code, out, err = run_main(argv, api=fake)
    assert code == 0, err
    assert [r["status"] for r in json.loads(out)["results"]] == ["created"] * 4
    code, out, _ = run_main(argv, api=fake)
    assert code == 0
    assert [r["status"] for r in json.loads(out)["results"]] == ["unchanged"] * 4

    code, out, err = run_main(argv[:-1], api=fake)
    assert code == 0 and out.splitlines()[0].split() == ["unchanged", "modelops-model-alias-production"]


def test_unknown_webhook_on_the_command_line_exits_2_listing_names() -> None:
    code, _, err = run_main(["--entity", ENTITY, "--webhook", "nope"], api=FakeApi())
    assert code == 2
    assert "--webhook" in err and f"{WEBHOOK}, slack-bridge" in err


def test_a_wandb_failure_exits_1_without_printing_the_key() -> None:
    key = "wandb-key-0123456789abcdef"  # test-only value

    class FailingApi(FakeApi):
        def create_automation(self, obj: Any, **kwargs: Any) -> Any:
            raise RuntimeError(f"401 Unauthorized for api_key={key}")

    code, out, err = run_main(["--entity", ENTITY, "--webhook", WEBHOOK], api=FailingApi(),
                              environ={"WANDB_API_KEY": key})
    assert code == 1
    assert key not in out + err
    assert "RuntimeError" in err

"""prefect.yaml as the single source of the served deployments and their triggers."""

from __future__ import annotations

import inspect
import json
import sys
import uuid
from datetime import datetime, timezone
from typing import Any

import pytest

from deployments.serve import deployment_specs, entrypoint_module, read_project
from deployments.wandb_events import artifact_body, parse_body


def render_trigger_parameters(parameters: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """Render trigger parameters with Prefect's own RunDeployment machinery, for a receiver event."""
    from prefect.server.events.actions import RunDeployment
    from prefect.server.events.schemas.events import ReceivedEvent
    from prefect.utilities.schema_tools.hydration import HydrationContext, hydrate

    event = parse_body(json.dumps(body).encode()).to_prefect(str(uuid.uuid4()), datetime.now(timezone.utc).isoformat())
    return render_event_parameters(parameters, event)


def render_event_parameters(parameters: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
    from prefect.server.events.actions import RunDeployment
    from prefect.server.events.schemas.events import ReceivedEvent
    from prefect.utilities.schema_tools.hydration import HydrationContext, hydrate

    received = ReceivedEvent.model_validate({**event, "received": event["occurred"]})
    action = RunDeployment(source="selected", deployment_id=uuid.uuid4(), parameters=parameters)
    upgraded = dict(action.parameters or {})
    RunDeployment._upgrade_v1_templates(upgraded)  # what render_parameters does before hydrating
    return hydrate(upgraded, HydrationContext(raise_on_error=True, render_jinja=True,
                                                       jinja_context={"event": received}))


def test_entrypoint_module() -> None:
    assert entrypoint_module("flows/review_issue.py:review_issue") == ("flows.review_issue", "review_issue")
    with pytest.raises(ValueError, match="path/module.py:function"):
        entrypoint_module("flows.review_issue")


def test_every_deployment_loads_with_valid_triggers() -> None:
    spec = read_project()
    specs = deployment_specs(spec)
    assert [s["name"] for s in specs] == [d["name"] for d in spec["deployments"]]
    review = next(s for s in specs if s["name"] == "review-issue")
    assert review["flow"].name == "review-issue"
    (trigger,) = review["triggers"]
    assert trigger.expect == {"wandb.artifact.alias-added"}
    assert trigger.match.model_dump()["wandb.alias"] == "production"


def test_unknown_deployment_is_a_clear_error() -> None:
    with pytest.raises(SystemExit, match="unknown deployment"):
        deployment_specs(read_project(), ["nope"])


def test_trigger_parameters_render_to_flow_parameters() -> None:
    trigger = read_project()["deployments"][0]["triggers"][0]
    body = artifact_body("ADD_ARTIFACT_ALIAS", "acme", "wandb-registry-model", "churn", "v3",
                         alias="production", author="ana", metadata={"accuracy": 0.93})
    params = render_trigger_parameters(trigger["parameters"], body)
    assert params["entity"] == "acme" and params["project"] == "wandb-registry-model"
    assert params["collection"] == "churn" and params["version"] == "v3"
    assert params["alias"] == "production" and params["author"] == "ana"
    assert params["version_string"] == "acme/wandb-registry-model/churn:v3"
    assert params["metadata"] == {"accuracy": 0.93}, "a single expression keeps its type"
    uuid.UUID(params["event_id"])

    from flows.review_issue import review_issue
    from prefect.utilities.callables import parameter_schema

    schema = parameter_schema(review_issue)
    assert set(params) <= set(schema.properties), "every templated parameter is a flow parameter"


def test_trigger_parameters_survive_a_minimal_body() -> None:
    """W&B bodies carry what the user's template has: missing fields fall back, never break the action."""
    trigger = read_project()["deployments"][0]["triggers"][0]
    body = {"event_type": "ADD_ARTIFACT_ALIAS", "artifact_version_string": "acme/reg/churn:v4", "alias": "production"}
    params = render_trigger_parameters(trigger["parameters"], body)
    assert (params["entity"], params["project"], params["collection"], params["version"]) == ("acme", "reg", "churn", "v4")
    assert params["author"] == "" and params["metadata"] == {} and params["artifact_id"] == ""


def test_prefect_deploy_all_creates_every_deployment_and_trigger(prefect_api: str) -> None:
    """`prefect deploy --all` from the repository root against a fresh work pool."""
    import os
    import subprocess
    import sys

    import httpx

    from deployments.stack import ROOT

    env = dict(os.environ, PREFECT_API_URL=prefect_api)
    prefect = [sys.executable, "-m", "prefect"]
    subprocess.run([*prefect, "work-pool", "create", "modelops-process", "--type", "process", "--overwrite"],
                   cwd=ROOT, env=env, capture_output=True, timeout=120, check=True)
    proc = subprocess.run([*prefect, "--no-prompt", "deploy", "--all"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    spec = read_project()
    names = [f"{s['flow'].name}/{s['name']}" for s in deployment_specs(spec)]
    try:
        for name, d in zip(names, spec["deployments"]):
            deployment = httpx.get(f"{prefect_api}/deployments/name/{name}").json()
            assert deployment["work_pool_name"] == "modelops-process"
            automations = httpx.get(f"{prefect_api}/automations/related-to/prefect.deployment.{deployment['id']}").json()
            assert {a["name"] for a in automations} == {t["name"] for t in d["triggers"]}
            for automation in automations:
                (t,) = [t for t in d["triggers"] if t["name"] == automation["name"]]
                assert automation["trigger"]["expect"] == t["expect"]
            if name == "retrain/retrain":
                assert deployment["global_concurrency_limit"]["limit"] == 1
                assert deployment["concurrency_options"]["collision_strategy"] == "ENQUEUE"
    finally:
        for name in names:
            r = httpx.get(f"{prefect_api}/deployments/name/{name}")
            if r.status_code == 200:
                httpx.delete(f"{prefect_api}/automations/owned-by/prefect.deployment.{r.json()['id']}")
                httpx.delete(f"{prefect_api}/deployments/{r.json()['id']}")


def retrain_trigger(name: str) -> dict[str, Any]:
    (d,) = [d for d in read_project()["deployments"] if d["name"] == "retrain"]
    (t,) = [t for t in d["triggers"] if t["name"] == name]
    return t


def test_retrain_trigger_on_drift_takes_the_drifted_dataset() -> None:
    t = retrain_trigger("retrain on drift")
    assert t["expect"] == ["modelops.drift.detected"]
    event = {"id": str(uuid.uuid4()), "occurred": datetime.now(timezone.utc).isoformat(),
             "event": "modelops.drift.detected",
             "resource": {"prefect.resource.id": "wandb.artifact.acme/churn/churn-data:v7"},
             "payload": {"dataset": "acme/churn/churn-data:v7", "reference": "acme/churn/churn-data:reference"}}
    params = render_event_parameters(t["parameters"], event)
    assert params == {"dataset": "acme/churn/churn-data:v7", "reason": "drift in the dataset", "event_id": event["id"]}
    event["payload"]["drifted_features"] = ["age", "plan"]
    assert render_event_parameters(t["parameters"], event)["reason"] == "drift in age, plan"


def test_retrain_trigger_on_a_wandb_metric_alert() -> None:
    t = retrain_trigger("retrain on W&B metric alert")
    assert t["expect"] == ["wandb.run.metric"]
    body = {"event_type": "RUN_METRIC", "entity_name": "acme", "project_name": "churn", "run_id": "abc123",
            "metric_name": "val_accuracy", "metric_value": "0.71"}
    params = render_trigger_parameters(t["parameters"], body)
    assert params["reason"] == "metric val_accuracy"
    assert "dataset" not in params, "metric alerts train on the deployment's own `dataset` parameter"
    minimal = render_trigger_parameters(t["parameters"], {"event_type": "RUN_METRIC_ZSCORE"})
    assert minimal["reason"] == "metric alert"

    from flows.retrain import retrain
    from prefect.utilities.callables import parameter_schema

    assert set(params) <= set(parameter_schema(retrain).properties)


def test_canary_trigger_on_the_production_alias() -> None:
    (d,) = [d for d in read_project()["deployments"] if d["name"] == "canary-rollout"]
    (t,) = [t for t in d["triggers"] if t["name"] == "canary-rollout on production alias"]
    assert t["expect"] == ["wandb.artifact.alias-added"] and t["match"]["wandb.alias"] == "production"
    body = artifact_body("ADD_ARTIFACT_ALIAS", "local", "wandb-registry-model", "churn-model", "v2",
                         alias="production", author="ada")
    params = render_trigger_parameters(t["parameters"], body)
    assert (params["collection"], params["version"], params["entity"]) == ("churn-model", "v2", "local")
    assert params["promoted_by"] == "ada", "the approver sees who promoted"

    from flows.canary import canary_rollout
    from flows.canary_verdict import CanaryPolicy
    from prefect.utilities.callables import parameter_schema

    assert set(params) | set(d["parameters"]) <= set(parameter_schema(canary_rollout).properties)
    policy = CanaryPolicy()  # no block and no parameters: the documented defaults
    assert policy.steps == (10, 30, 50, 100) and policy.bake_seconds == policy.final_bake_seconds == 300


def test_every_served_flow_validates_its_parameters_when_pickled_by_value() -> None:
    """The runner ships flows to their run process with cloudpickle, by value: a flow's annotations
    must not need its module's globals (a `from __future__ import annotations` string annotation
    naming an imported type fails there with "Model is not fully defined")."""
    import cloudpickle

    for spec in deployment_specs(read_project()):
        module = sys.modules[spec["flow"].fn.__module__]
        cloudpickle.register_pickle_by_value(module)
        try:
            flow = cloudpickle.loads(cloudpickle.dumps(spec["flow"]))
        finally:
            cloudpickle.unregister_pickle_by_value(module)
        required = {name: "x" for name, p in inspect.signature(flow.fn).parameters.items()
                    if p.default is inspect.Parameter.empty}
        flow.validate_parameters(required)  # raises if a type cannot be resolved


def test_canary_crash_trigger_reruns_the_rollout_with_its_parameters() -> None:
    """prefect.yaml's `canary-rollout resumes a crashed rollout`, rendered by Prefect's own action code
    with the crashed run as `flow_run` (what the server hydrates from the event's flow-run resource)."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.server.events.actions import RunDeployment
    from prefect.utilities.schema_tools.hydration import HydrationContext, hydrate

    (d,) = [d for d in read_project()["deployments"] if d["name"] == "canary-rollout"]
    (t,) = [t for t in d["triggers"] if t["name"] == "canary-rollout resumes a crashed rollout"]
    assert t["expect"] == ["prefect.flow-run.Crashed"]
    assert t["match_related"] == {"prefect.resource.role": "flow", "prefect.resource.name": "canary-rollout"}

    def render(parameters: dict[str, Any]) -> dict[str, Any]:
        crashed = FlowRun(flow_id=uuid.uuid4(), name="canary-churn-model-v3", parameters=parameters)
        action = RunDeployment(source="selected", deployment_id=uuid.uuid4(), parameters=t["parameters"])
        upgraded = dict(action.parameters or {})
        RunDeployment._upgrade_v1_templates(upgraded)
        out = hydrate(upgraded, HydrationContext(raise_on_error=True, render_jinja=True,
                                                 jinja_context={"flow_run": crashed}))
        return {**out, "_id": str(crashed.id)}

    first = render({"collection": "churn-model", "version": "v3", "entity": "acme", "event_id": "e-1",
                    "promoted_by": "ada"})
    assert (first["collection"], first["version"], first["entity"], first["event_id"]) == ("churn-model", "v3",
                                                                                          "acme", "e-1")
    assert first["promoted_by"] == "ada"
    assert first["resumed_from"] == first["_id"] and first["resume_attempt"] == 1, "an int, counted from 0"
    again = render({"collection": "churn-model", "version": "v3", "resume_attempt": 2})
    assert again["resume_attempt"] == 3

    from flows.canary import MAX_RESUMES, canary_rollout
    from prefect.utilities.callables import parameter_schema

    assert set(first) - {"_id"} <= set(parameter_schema(canary_rollout).properties)
    assert MAX_RESUMES == 3

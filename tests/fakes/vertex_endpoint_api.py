"""A local Vertex AI endpoint service and Cloud Monitoring API for tests, on top of `FakeGcp`.

`FakeVertexEndpoints` is a `FakeGcp` (same OAuth2 `/token`, self-signed-JWT checks, request log,
`fail_next` faults) that also speaks the REST calls google-cloud-aiplatform's v1 GAPIC clients
make for online-serving endpoints, and the Cloud Monitoring v3 `timeSeries.list` call:

    GET   /v1/projects/P/locations/L/endpoints/E                    endpoint with deployedModels, trafficSplit
    POST  /v1/projects/P/locations/L/endpoints/E:deployModel        long-running operation
    POST  /v1/projects/P/locations/L/endpoints/E:undeployModel      long-running operation
    PATCH /v1/projects/P/locations/L/endpoints/E?updateMask=trafficSplit
    GET   /ui/projects/P/locations/L/endpoints/E/operations/O       polling an operation (also /v1/...)
    GET   /v1/projects/P/locations/L/models/M[@version]
    GET   /v3/projects/P/timeSeries?filter=...&interval.startTime=...&interval.endTime=...

The service's own rules are enforced the way Vertex AI states them: a non-empty traffic split must
sum to 100 and name only deployed models ("0" meaning the model being deployed); an empty split in
deployModel/undeployModel leaves the endpoint's split as it is; a model keeping traffic cannot be
undeployed. Resource names come back with the project number, as Vertex AI answers.

    with FakeVertexEndpoints() as fake:
        info = fake.new_service_account("modelops-test")
        model = fake.add_model("modelops-test", "us-central1", "churn")
        fake.add_endpoint("modelops-test", "us-central1", "4242")
        stable = fake.seed_deployed("4242", "churn:v1", model, traffic=100)
        fake.add_series("prediction_count", "4242", stable, [(when, 120)])
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from tests.fakes.gcp_api import PROJECT_NUMBER, FakeGcp, Reply, _google_error, _json, _timestamp

__all__ = ["FakeVertexEndpoints", "METRIC_PREFIX", "distribution"]

METRIC_PREFIX = "aiplatform.googleapis.com/prediction/online/"
ENDPOINT_RESOURCE_TYPE = "aiplatform.googleapis.com/Endpoint"
# google.cloud.aiplatform.v1.Model.DeploymentResourcesType
RESOURCE_TYPES = {"DEPLOYMENT_RESOURCES_TYPE_UNSPECIFIED": 0, "DEDICATED_RESOURCES": 1, "AUTOMATIC_RESOURCES": 2,
                  "SHARED_RESOURCES": 3}
_V1 = "type.googleapis.com/google.cloud.aiplatform.v1."
_FILTER_CLAUSE = re.compile(r'\s*([A-Za-z_.]+)\s*=\s*"([^"]*)"\s*')


@dataclass
class _Endpoint:
    project: str  # the project id it was created under (requests may also use the number)
    location: str
    endpoint_id: str
    resource: dict[str, Any]

    @property
    def name(self) -> str:
        return self.resource["name"]


@dataclass
class _Operation:
    resource: dict[str, Any]
    polls_left: int
    apply: Any = None  # called once when the operation completes (the change becomes visible then)
    gets: int = 0


@dataclass
class _Series:
    metric_type: str
    metric_labels: dict[str, str]
    resource_labels: dict[str, str]
    value_type: str  # INT64 or DISTRIBUTION
    unit: str
    points: list[tuple[datetime, Any]] = field(default_factory=list)


def distribution(
    bucket_counts: list[int],
    *,
    bounds: list[float] | None = None,
    exponential: tuple[int, float, float] | None = None,
    linear: tuple[int, float, float] | None = None,
) -> dict[str, Any]:
    """A Cloud Monitoring Distribution value in its JSON form.

    `bounds` gives explicit bucket boundaries, `exponential` is (numFiniteBuckets, growthFactor,
    scale) and `linear` is (numFiniteBuckets, width, offset). Bucket 0 is the underflow bucket.
    Trailing empty buckets may be left out of `bucket_counts`, as the real API does.
    """
    if bounds is not None:
        options: dict[str, Any] = {"explicitBuckets": {"bounds": list(bounds)}}
    elif exponential is not None:
        n, growth, scale = exponential
        options = {"exponentialBuckets": {"numFiniteBuckets": n, "growthFactor": growth, "scale": scale}}
    elif linear is not None:
        n, width, offset = linear
        options = {"linearBuckets": {"numFiniteBuckets": n, "width": width, "offset": offset}}
    else:
        raise ValueError("give bounds, exponential or linear bucket options")
    return {"count": str(sum(bucket_counts)), "bucketOptions": options,
            "bucketCounts": [str(count) for count in bucket_counts]}


class FakeVertexEndpoints(FakeGcp):
    """`FakeGcp` plus Vertex AI endpoints/models (v1 REST) and Cloud Monitoring `timeSeries.list`."""

    def __init__(self, *, page_size: int = 2) -> None:
        super().__init__()
        self.page_size = page_size  # time series per timeSeries.list page (small, to exercise paging)
        self._endpoints: dict[tuple[str, str], _Endpoint] = {}
        self._models: dict[str, dict[str, Any]] = {}  # by "locations/L/models/ID"
        self._model_projects: dict[str, str] = {}
        self._operations: dict[str, _Operation] = {}
        self._series: list[_Series] = []
        self._deploy_scripts: list[tuple[int, tuple[int, str] | None]] = []
        self._model_ids = itertools.count(1001)
        self._deployed_ids = itertools.count(5_000_000_000_000_000_001)
        self._operation_ids = itertools.count(8_000_000_000_000_000_001)

    # -- test controls -----------------------------------------------------------------------------

    def add_model(
        self, project: str, location: str, display_name: str, *, version: str = "1",
        resource_types: tuple[str, ...] = ("DEDICATED_RESOURCES",),
    ) -> str:
        """Register a Model version; returns its resource name as a user would write it (project id)."""
        model_id = str(next(self._model_ids))
        now = _timestamp()
        with self._lock:
            self._models[f"locations/{location}/models/{model_id}"] = {
                "name": f"projects/{PROJECT_NUMBER}/locations/{location}/models/{model_id}",
                "displayName": display_name,
                "versionId": version,
                "versionAliases": ["default"],
                "supportedDeploymentResourcesTypes": list(resource_types),
                "createTime": now, "updateTime": now, "versionCreateTime": now, "versionUpdateTime": now,
            }
            self._model_projects[f"locations/{location}/models/{model_id}"] = project
        return f"projects/{project}/locations/{location}/models/{model_id}"

    def add_endpoint(self, project: str, location: str, endpoint_id: str, display_name: str = "churn") -> str:
        """Create an empty endpoint; returns its resource name (with the project number)."""
        now = _timestamp()
        resource = {
            "name": f"projects/{PROJECT_NUMBER}/locations/{location}/endpoints/{endpoint_id}",
            "displayName": display_name,
            "deployedModels": [],
            "trafficSplit": {},
            "etag": "AMEw9yN=",
            "createTime": now,
            "updateTime": now,
        }
        with self._lock:
            self._endpoints[(location, endpoint_id)] = _Endpoint(project, location, endpoint_id, resource)
        return resource["name"]

    def seed_deployed(self, endpoint_id: str, display_name: str, model: str, *, traffic: int = 0) -> str:
        """Put a deployed model on an endpoint directly (as an earlier deployment left it); returns its id.

        `traffic` is set in the split as given; the caller keeps the split summing to 100.
        """
        with self._lock:
            endpoint = self._endpoint_by_id(endpoint_id)
            deployed_id = str(next(self._deployed_ids))
            base, _, version = model.partition("@")
            stored = self._find_model(base)
            endpoint.resource["deployedModels"].append({
                "id": deployed_id,
                "model": stored["name"] if stored else base,
                "modelVersionId": version or (stored or {}).get("versionId", "1"),
                "displayName": display_name,
                "createTime": _timestamp(),
                "dedicatedResources": {"machineSpec": {"machineType": "n1-standard-4"},
                                       "minReplicaCount": 1, "maxReplicaCount": 1},
            })
            endpoint.resource["trafficSplit"][deployed_id] = traffic
        return deployed_id

    def script_deploy(self, *, polls: int = 0, error: tuple[int, str] | None = None) -> None:
        """The next deployModel operation stays running for `polls` GETs of it; with `error`
        ((google.rpc code, message)) it then fails instead of deploying."""
        with self._lock:
            self._deploy_scripts.append((polls, error))

    def add_series(
        self, metric: str, endpoint_id: str, deployed_model_id: str, points: list[tuple[datetime, Any]], *,
        labels: dict[str, str] | None = None, unit: str | None = None,
    ) -> None:
        """A Cloud Monitoring time series of `METRIC_PREFIX + metric` for one deployed model.

        Each point is (end time, value): an int for counts, a `distribution(...)` dict for latencies.
        """
        is_distribution = any(isinstance(value, dict) for _, value in points)
        with self._lock:
            endpoint = self._endpoints_by_id().get(endpoint_id)
            location = endpoint.location if endpoint else "us-central1"
            self._series.append(_Series(
                metric_type=METRIC_PREFIX + metric,
                metric_labels={"deployed_model_id": deployed_model_id, **(labels or {})},
                resource_labels={"resource_container": PROJECT_NUMBER, "location": location,
                                 "endpoint_id": endpoint_id},
                value_type="DISTRIBUTION" if is_distribution else "INT64",
                unit=unit if unit is not None else ("ms" if is_distribution else "1"),
                points=list(points),
            ))

    def endpoint(self, endpoint_id: str) -> dict[str, Any]:
        """A copy of the stored endpoint resource."""
        with self._lock:
            return copy.deepcopy(self._endpoint_by_id(endpoint_id).resource)

    def traffic_updates(self) -> list[dict[str, int]]:
        """The trafficSplit of every update-endpoint PATCH received, in order."""
        return [dict((r.body or {}).get("trafficSplit", {})) for r in self.calls("PATCH", r"/endpoints/[^/:]+$")]

    # -- routing -----------------------------------------------------------------------------------

    def _route(self, method: str, raw_path: str, path: str, query: dict[str, str], body: Any) -> Reply:
        match = re.fullmatch(r"/v1/projects/([^/]+)/locations/([^/]+)/endpoints/([^/:]+)(:deployModel|:undeployModel)?",
                             path)
        if match:
            project, location, endpoint_id, verb = match.groups()
            endpoint, problem = self._lookup_endpoint(project, location, endpoint_id, method)
            if problem is not None:
                return problem
            if verb == ":deployModel" and method == "POST":
                return self._deploy(endpoint, body)
            if verb == ":undeployModel" and method == "POST":
                return self._undeploy(endpoint, body)
            if verb is None and method == "GET":
                return _json(200, endpoint.resource)
            if verb is None and method == "PATCH":
                return self._update(endpoint, query, body)
            return _google_error(405, "Method not allowed")
        # the REST transport polls operations at /ui/... (the first matching rule in its operations client)
        match = re.fullmatch(r"/(?:v1|ui)/(projects/[^/]+/locations/[^/]+/endpoints/[^/]+/operations/[^/]+)", path)
        if match and method == "GET":
            return self._get_operation(match.group(1))
        match = re.fullmatch(r"/v1/projects/([^/]+)/locations/([^/]+)/models/([^/@]+)(?:@([^/]+))?", path)
        if match and method == "GET":
            return self._get_model(*match.groups())
        match = re.fullmatch(r"/v3/projects/([^/]+)/timeSeries", path)
        if match and method == "GET":
            return self._list_time_series(match.group(1), query)
        return super()._route(method, raw_path, path, query, body)

    def _lookup_endpoint(
        self, project: str, location: str, endpoint_id: str, method: str
    ) -> tuple[_Endpoint, None] | tuple[None, Reply]:
        endpoint = self._endpoints.get((location, endpoint_id))
        known_projects = {e.project for e in self._endpoints.values()} | {PROJECT_NUMBER}
        if project not in known_projects or (endpoint is not None and project not in (endpoint.project,
                                                                                      PROJECT_NUMBER)):
            # what Google answers for a project the caller cannot see, whether or not it exists
            permission = "get" if method == "GET" else "update" if method == "PATCH" else "deploy"
            return None, _google_error(
                403, f"Permission 'aiplatform.endpoints.{permission}' denied on resource '//aiplatform.googleapis.com/"
                     f"projects/{project}/locations/{location}/endpoints/{endpoint_id}' (or it may not exist).")
        if endpoint is None:
            return None, _google_error(
                404, f"Endpoint `projects/{PROJECT_NUMBER}/locations/{location}/endpoints/{endpoint_id}` not found.")
        return endpoint, None

    # -- endpoints ---------------------------------------------------------------------------------

    def _deploy(self, endpoint: _Endpoint, body: Any) -> Reply:
        body = body if isinstance(body, dict) else {}
        deployed = body.get("deployedModel") or {}
        split = {str(k): v for k, v in (body.get("trafficSplit") or {}).items()}
        model_name = deployed.get("model", "")
        base, _, version = model_name.partition("@")
        model = self._find_model(base)
        if model is None:
            return _google_error(400, f"Model {model_name or '(empty)'} does not exist.", "INVALID_ARGUMENT")
        if version and version not in (model["versionId"], "default"):
            return _google_error(400, f"Model version {model_name} does not exist.", "INVALID_ARGUMENT")
        resources = deployed.get("dedicatedResources") or deployed.get("automaticResources")
        if not resources:
            return _google_error(400, "Field: deployed_model.dedicated_resources; Message: Required field is not set.",
                                 "INVALID_ARGUMENT")
        if "dedicatedResources" in deployed and not (resources.get("machineSpec") or {}).get("machineType"):
            return _google_error(400, "Field: deployed_model.dedicated_resources.machine_spec.machine_type; Message: "
                                      "Required field is not set.", "INVALID_ARGUMENT")
        if int(resources.get("minReplicaCount") or 0) < 1:
            return _google_error(400, "Field: deployed_model.dedicated_resources.min_replica_count; Message: must be "
                                      "at least 1.", "INVALID_ARGUMENT")
        ids = {m["id"] for m in endpoint.resource["deployedModels"]}
        problem = _split_problem(split, ids | {"0"})
        if problem:
            return _google_error(400, problem, "INVALID_ARGUMENT")

        deployed_id = str(next(self._deployed_ids))
        stored = {
            **copy.deepcopy(deployed),
            "id": deployed_id,
            "model": model["name"],
            "modelVersionId": version if version and version != "default" else model["versionId"],
            "createTime": _timestamp(),
        }
        polls, error = self._deploy_scripts.pop(0) if self._deploy_scripts else (0, None)

        def apply() -> None:
            endpoint.resource["deployedModels"].append(stored)
            if split:
                endpoint.resource["trafficSplit"] = {(deployed_id if k == "0" else k): v for k, v in split.items()}
            endpoint.resource["updateTime"] = _timestamp()

        response = {"@type": _V1 + "DeployModelResponse", "deployedModel": stored}
        return self._start_operation(endpoint, "DeployModelOperationMetadata", response, polls,
                                     None if error else apply, error)

    def _undeploy(self, endpoint: _Endpoint, body: Any) -> Reply:
        body = body if isinstance(body, dict) else {}
        deployed_id = str(body.get("deployedModelId", ""))
        models = endpoint.resource["deployedModels"]
        if deployed_id not in {m["id"] for m in models}:
            return _google_error(404, f"DeployedModel {deployed_id} does not exist in Endpoint {endpoint.name}.")
        split = {str(k): v for k, v in (body.get("trafficSplit") or {}).items()}
        remaining = {m["id"] for m in models} - {deployed_id}
        if split:
            problem = _split_problem(split, remaining | {deployed_id})
            if problem:
                return _google_error(400, problem, "INVALID_ARGUMENT")
            new_split = split
        else:
            new_split = dict(endpoint.resource["trafficSplit"])
        if new_split.get(deployed_id, 0):
            return _google_error(
                400, f"DeployedModel {deployed_id} still has {new_split[deployed_id]}% of the traffic of Endpoint "
                     f"{endpoint.name}; a model can be undeployed only when it receives no traffic.",
                "FAILED_PRECONDITION")
        new_split.pop(deployed_id, None)

        def apply() -> None:
            endpoint.resource["deployedModels"] = [m for m in models if m["id"] != deployed_id]
            endpoint.resource["trafficSplit"] = new_split if remaining else {}
            endpoint.resource["updateTime"] = _timestamp()

        response = {"@type": _V1 + "UndeployModelResponse"}
        return self._start_operation(endpoint, "UndeployModelOperationMetadata", response, 0, apply, None)

    def _update(self, endpoint: _Endpoint, query: dict[str, str], body: Any) -> Reply:
        mask = {path.strip() for path in query.get("updateMask", "").split(",") if path.strip()}
        if not mask:
            return _google_error(400, "Field: update_mask; Message: Required field is not set.", "INVALID_ARGUMENT")
        unsupported = mask - {"trafficSplit", "traffic_split", "displayName", "display_name"}
        if unsupported:
            return _google_error(400, f"Unsupported update mask paths: {sorted(unsupported)}", "INVALID_ARGUMENT")
        body = body if isinstance(body, dict) else {}
        if mask & {"trafficSplit", "traffic_split"}:
            split = {str(k): v for k, v in (body.get("trafficSplit") or {}).items()}
            problem = _split_problem(split, {m["id"] for m in endpoint.resource["deployedModels"]})
            if problem:
                return _google_error(400, problem, "INVALID_ARGUMENT")
            endpoint.resource["trafficSplit"] = split
        if mask & {"displayName", "display_name"}:
            endpoint.resource["displayName"] = body.get("displayName", "")
        endpoint.resource["updateTime"] = _timestamp()
        return _json(200, endpoint.resource)

    def _start_operation(
        self, endpoint: _Endpoint, metadata_type: str, response: dict[str, Any], polls: int, apply: Any,
        error: tuple[int, str] | None,
    ) -> Reply:
        name = f"{endpoint.name}/operations/{next(self._operation_ids)}"
        now = _timestamp()
        resource: dict[str, Any] = {
            "name": name,
            "metadata": {"@type": _V1 + metadata_type, "genericMetadata": {"createTime": now, "updateTime": now}},
        }
        operation = _Operation(resource, polls, apply)
        operation.resource["_outcome"] = {"response": response} if error is None else {
            "error": {"code": error[0], "message": error[1]}}
        self._operations[name] = operation
        self._advance(operation)
        return _json(200, _public(operation.resource))

    def _get_operation(self, name: str) -> Reply:
        operation = self._operations.get(name)
        if operation is None:
            return _google_error(404, f"Operation {name} not found.")
        operation.gets += 1
        self._advance(operation)
        return _json(200, _public(operation.resource))

    def _advance(self, operation: _Operation) -> None:
        if operation.resource.get("done"):
            return
        if operation.gets < operation.polls_left:
            return
        if operation.apply is not None:
            operation.apply()
        operation.resource.update(operation.resource.pop("_outcome"))
        operation.resource["done"] = True

    # -- models ------------------------------------------------------------------------------------

    def _get_model(self, project: str, location: str, model_id: str, version: str | None) -> Reply:
        key = f"locations/{location}/models/{model_id}"
        model = self._models.get(key)
        if model is None or project not in (self._model_projects.get(key), PROJECT_NUMBER):
            return _google_error(404, f"Model projects/{project}/locations/{location}/models/{model_id} not found.")
        if version and version not in (model["versionId"], *model["versionAliases"]):
            return _google_error(404, f"Model version {model_id}@{version} not found.")
        out = copy.deepcopy(model)
        out["supportedDeploymentResourcesTypes"] = [RESOURCE_TYPES[t] for t in out["supportedDeploymentResourcesTypes"]]
        return _json(200, out)

    def _find_model(self, name: str) -> dict[str, Any] | None:
        match = re.fullmatch(r"projects/[^/]+/(locations/[^/]+/models/[^/@]+)", name)
        return self._models.get(match.group(1)) if match else None

    # -- Cloud Monitoring --------------------------------------------------------------------------

    def _list_time_series(self, project: str, query: dict[str, str]) -> Reply:
        known = {e.project for e in self._endpoints.values()} | {PROJECT_NUMBER}
        if project not in known:
            return _google_error(403, f"Permission monitoring.timeSeries.list denied (or the resource may not "
                                      f"exist) for projects/{project}.")
        clauses, problem = _parse_filter(query.get("filter", ""))
        if problem:
            return _google_error(400, problem, "INVALID_ARGUMENT")
        if "interval.endTime" not in query:
            return _google_error(400, "Field interval.endTime had an invalid value: must be set.", "INVALID_ARGUMENT")
        try:
            end = _parse_time(query["interval.endTime"])
            start = _parse_time(query["interval.startTime"]) if query.get("interval.startTime") else end
        except ValueError as exc:
            return _google_error(400, f"Field interval had an invalid value: {exc}", "INVALID_ARGUMENT")
        if start > end:
            return _google_error(400, "Field interval.startTime must not be after interval.endTime.",
                                 "INVALID_ARGUMENT")
        matched = []
        for series in self._series:
            if not _series_matches(series, clauses):
                continue
            points = [(when, value) for when, value in series.points if start < when <= end]
            if points:
                matched.append(_render_series(series, points))
        offset = int(query.get("pageToken") or 0)
        page = matched[offset:offset + self.page_size]
        out: dict[str, Any] = {"timeSeries": page} if page else {}
        if offset + self.page_size < len(matched):
            out["nextPageToken"] = str(offset + self.page_size)
        return _json(200, out)

    # -- helpers -----------------------------------------------------------------------------------

    def _endpoints_by_id(self) -> dict[str, _Endpoint]:
        return {e.endpoint_id: e for e in self._endpoints.values()}

    def _endpoint_by_id(self, endpoint_id: str) -> _Endpoint:
        endpoint = self._endpoints_by_id().get(endpoint_id)
        if endpoint is None:
            raise KeyError(f"no endpoint {endpoint_id}; add_endpoint first")
        return endpoint


def _split_problem(split: dict[str, Any], allowed: set[str]) -> str:
    """Vertex AI's checks on a traffic split; '' when it is acceptable (an empty split always is)."""
    if not split:
        return ""
    for key, value in split.items():
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 100:
            return f"Traffic split value for {key} must be an integer between 0 and 100."
        if key not in allowed:
            return f"Traffic split references DeployedModel {key}, which does not exist in the Endpoint."
    total = sum(split.values())
    if total != 100:
        return f"The sum of traffic split percentages must be 100, but is {total}."
    return ""


def _parse_filter(text: str) -> tuple[dict[str, str], str]:
    """`a = "x" AND b = "y"` as {a: x, b: y}; the monitoring filter subset this fake understands."""
    clauses: dict[str, str] = {}
    for part in re.split(r"\s+AND\s+", text.strip()) if text.strip() else []:
        match = _FILTER_CLAUSE.fullmatch(part)
        if not match:
            return {}, f"Could not parse filter: {text!r}"
        clauses[match.group(1)] = match.group(2)
    if "metric.type" not in clauses:
        return {}, "A filter must specify a metric type (metric.type = \"...\")."
    return clauses, ""


def _series_matches(series: _Series, clauses: dict[str, str]) -> bool:
    for key, value in clauses.items():
        if key == "metric.type":
            actual = series.metric_type
        elif key == "resource.type":
            actual = ENDPOINT_RESOURCE_TYPE
        elif key.startswith("metric.labels."):
            actual = series.metric_labels.get(key[len("metric.labels."):])
        elif key.startswith("resource.labels."):
            actual = series.resource_labels.get(key[len("resource.labels."):])
        else:
            return False
        if actual != value:
            return False
    return True


def _render_series(series: _Series, points: list[tuple[datetime, Any]]) -> dict[str, Any]:
    rendered = []
    for when, value in sorted(points, key=lambda p: p[0], reverse=True):  # newest first, like the API
        stamp = when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        typed = {"distributionValue": value} if series.value_type == "DISTRIBUTION" else {"int64Value": str(value)}
        rendered.append({"interval": {"startTime": stamp, "endTime": stamp}, "value": typed})
    return {
        "metric": {"type": series.metric_type, "labels": dict(series.metric_labels)},
        "resource": {"type": ENDPOINT_RESOURCE_TYPE, "labels": dict(series.resource_labels)},
        "metricKind": "DELTA",
        "valueType": series.value_type,
        "points": rendered,
        "unit": series.unit,
    }


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)


def _public(resource: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps({k: v for k, v in resource.items() if not k.startswith("_")}))

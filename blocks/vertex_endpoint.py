"""Vertex AI online-prediction endpoint block: the `ServingEndpoint` seam over a Vertex AI Endpoint.

Traffic, deployments and undeployments go through google-cloud-aiplatform's v1 GAPIC clients
(`EndpointServiceClient`, `ModelServiceClient`); per-model serving metrics come from the Cloud
Monitoring v3 REST API. Every call carries an explicit timeout and is made once: retrying is the
caller's job, on `TransientEndpointError` only.

Why the GAPIC clients and not the high-level `aiplatform.Endpoint` (checked in 2.7.0's source):
- `Endpoint.deploy` waits on its long-running operation with `operation_future.result(timeout=None)`
  (in `_deploy_call`), so a deploy cannot be bounded by `deploy_timeout_seconds`.
- `Endpoint.traffic_split`, `list_models()` and `aiplatform.Model(...)` fetch with
  `retry=retry.Retry()` and no timeout: a 503 or a refused connection is retried silently for up
  to 120 s.
- `Endpoint.undeploy` redistributes the undeployed model's traffic over the others on the client
  side (`_unallocate_traffic`) when no split is given, and refuses an explicit empty split.
- `aiplatform.init` sets process-wide defaults (endpoint, transport) that the trainer block also
  sets; clients built here from the block's own settings need no global state and no lock.
The GAPIC clients are the ones the SDK itself builds and the REST paths are the same; the one
difference on the wire is that an update sends only `trafficSplit` (the SDK's `Endpoint.update`
sends its cached copy of the whole endpoint, under the same `updateMask=trafficSplit`).

Cloud Monitoring is called over REST with google-auth's `AuthorizedSession` rather than
google-cloud-monitoring: that library (2.32.0, the newest on the package index here) ships only gRPC transports
(`MetricServiceClient(transport="rest")` raises KeyError), so it could not be pointed at an
http(s) endpoint, and the REST call is one GET.

Cloud SDKs are imported inside methods only (prefect_gcp imports aiplatform itself when installed).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from prefect.blocks.core import Block
from prefect_gcp.credentials import GcpCredentials
from pydantic import Field, PrivateAttr, field_validator, model_validator

from blocks import _gcp
from blocks.endpoint import ArmStats, DeployedModel, EndpointError, TransientEndpointError, check_split

if TYPE_CHECKING:
    from google.auth.credentials import Credentials

__all__ = ["VertexAIEndpoint"]

METRIC_PREFIX = "aiplatform.googleapis.com/prediction/online/"
PREDICTION_COUNT = METRIC_PREFIX + "prediction_count"
ERROR_COUNT = METRIC_PREFIX + "error_count"
PREDICTION_LATENCIES = METRIC_PREFIX + "prediction_latencies"
MONITORING_API = "https://monitoring.googleapis.com"
MAX_LATENCY_SAMPLES = 5000
_ENDPOINT_NAME = re.compile(r"^projects/([^/]+)/locations/([^/]+)/endpoints/([^/]+)$")
_ENDPOINT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_DEPLOYED_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_MODEL_NAME = re.compile(r"^projects/([^/]+)/locations/([^/]+)/models/([^/@]+)(?:@([^/@]+))?$")
_SECRETS = re.compile(r"ya29\.[\w.-]+|eyJ[\w-]+\.[\w-]+\.[\w-]+|-----BEGIN [A-Z ]+-----[^-]*-----END [A-Z ]+-----")
_LATENCY_UNITS = {"ms": 1.0, "s": 1000.0, "us": 0.001, "ns": 1e-6, "min": 60_000.0}


class VertexAIEndpoint(Block):
    """A Vertex AI online-prediction endpoint whose traffic split the canary drives."""

    _block_type_name: ClassVar[str] = "Vertex AI Endpoint"
    _block_type_slug: ClassVar[str] = "vertex-ai-endpoint"
    _description: ClassVar[str] = (
        "Deploys model versions to a Vertex AI endpoint at 0% traffic, shifts traffic between them and reads "
        "their serving metrics from Cloud Monitoring."
    )

    gcp_credentials: GcpCredentials = Field(
        description="GCP credentials allowed to deploy to the endpoint and read its Cloud Monitoring metrics."
    )
    project: str = _gcp.project_field()
    location: str = Field(default="us-central1", description="Vertex AI region of the endpoint and its models.")
    endpoint: str = Field(
        description="Endpoint ID, or its full resource name projects/P/locations/L/endpoints/ID.",
        examples=["1234567890123456789"],
    )
    machine_type: str = Field(default="n1-standard-4", min_length=1, description="Machine type of deployed models.")
    min_replica_count: int = Field(default=1, ge=1, le=1000, description="Replicas a deployed model always has.")
    max_replica_count: int = Field(default=1, ge=1, le=1000, description="Replicas a deployed model may scale to.")
    accelerator_type: str = _gcp.accelerator_type_field()
    accelerator_count: int = _gcp.accelerator_count_field()
    service_account: str = Field(
        default="", description="Service account deployed models run as; empty means Vertex AI's default."
    )
    api_endpoint: str = _gcp.api_endpoint_field()
    monitoring_endpoint: str = Field(
        default="",
        description="Cloud Monitoring API endpoint override, as an http(s) URL or a host; empty means "
        f"{MONITORING_API}.",
    )
    request_timeout_seconds: float = Field(default=60, gt=0, le=3600, description="Timeout of each API request.")
    deploy_timeout_seconds: float = Field(
        default=1800, gt=0, le=6 * 3600, description="How long to wait for a deploy or undeploy operation."
    )

    # (the GcpCredentials they came from, google-auth credentials): loading the key costs ~60 ms, and
    # reusing the credentials reuses their access token / self-signed JWTs until they expire
    _credentials_cache: tuple[Any, Any] | None = PrivateAttr(default=None)

    _strip = field_validator(
        "project", "location", "endpoint", "machine_type", "accelerator_type", "service_account"
    )(_gcp.strip)

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, value: str) -> str:
        if not (_ENDPOINT_NAME.match(value) or _ENDPOINT_ID.match(value)):
            raise ValueError(f"endpoint must be an endpoint ID or projects/P/locations/L/endpoints/ID, got {value!r}")
        return value

    _check_api_endpoint = field_validator("api_endpoint")(_gcp.check_api_endpoint)

    @field_validator("monitoring_endpoint")
    @classmethod
    def _check_monitoring_endpoint(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value:
            return ""
        if "://" not in value:
            value = f"https://{value}"
        parsed = urlsplit(value)
        if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.path:
            raise ValueError(f"monitoring_endpoint must be a host or an http(s) URL without a path, such as "
                             f"{MONITORING_API}, got {value!r}")
        return value

    _check_cross_fields = model_validator(mode="after")(_gcp.check_config)

    def config_problem(self) -> str:
        """Why this configuration cannot work (naming the fields), or '' when it can."""
        problem = _gcp.accelerator_problem(self.accelerator_type, self.accelerator_count)
        if problem:
            return problem
        if self.min_replica_count > self.max_replica_count:
            return (f"min_replica_count ({self.min_replica_count}) is larger than max_replica_count "
                    f"({self.max_replica_count})")
        named = _ENDPOINT_NAME.match(self.endpoint)
        if named and named.group(2) != self.location:
            return (f"endpoint {self.endpoint!r} is in location {named.group(2)!r} but location is "
                    f"{self.location!r}: set location to the endpoint's region")
        return ""

    # -- the seam ----------------------------------------------------------------------------------

    def deploy(self, model_uri: str, display_name: str, *, fault: Mapping[str, float] | None = None) -> str:
        """Deploy the Vertex AI Model `model_uri` (projects/P/locations/L/models/ID[@version]) at 0% traffic.

        Idempotent by `display_name`: when a deployed model of that name exists, its id is returned
        and nothing is deployed. Otherwise the deployModel request carries the endpoint's current
        split plus `"0": 0` for the new model (Vertex AI replaces "0" with the new id), so the
        live split is unchanged; an endpoint without traffic keeps an empty split. The new id
        comes from the operation's DeployModelResponse.

        A deploy that has not finished after `deploy_timeout_seconds` raises a (permanent)
        EndpointError naming the operation: it may still complete, and deploying again before it
        shows up on the endpoint would deploy the model twice. `fault` injection is a LocalEndpoint
        feature; any fault raises EndpointError.
        """
        if fault:
            raise EndpointError("fault injection is not supported on a Vertex AI endpoint; deploy without `fault`")
        display_name = display_name.strip()
        if not display_name or len(display_name) > 128:
            raise EndpointError(f"display_name must be 1..128 characters, got {display_name!r}")
        model_match = _MODEL_NAME.match(model_uri.strip())
        if not model_match:
            raise EndpointError(f"model_uri must be a Vertex AI model resource name such as "
                                f"projects/P/locations/{self.location}/models/123[@2], got {model_uri!r}")
        if model_match.group(2) != self.location:
            raise EndpointError(f"model_uri {model_uri!r} is in location {model_match.group(2)!r} but the endpoint "
                                f"is in {self.location!r}: Vertex AI deploys only models from the endpoint's region")
        accelerator = self._accelerator()

        from google.cloud.aiplatform_v1.types import (
            AutomaticResources,
            DedicatedResources,
            MachineSpec,
        )
        from google.cloud.aiplatform_v1.types import DeployedModel as GapicDeployedModel
        from google.cloud.aiplatform_v1.types import Model

        name = self._endpoint_name()
        with self._client() as endpoints:
            current = self._get(endpoints)
        same = [m for m in current.deployed_models if m.display_name == display_name]
        if len(same) > 1:
            raise EndpointError(f"{len(same)} deployed models are named {display_name!r} on endpoint {name} "
                                f"({', '.join(m.id for m in same)}): undeploy the extra ones")
        if same:
            existing = same[0]
            model_id, version = model_match.group(3), model_match.group(4)
            if existing.model.rsplit("/", 1)[-1] != model_id or (
                version and version.isdigit() and existing.model_version_id not in ("", version)
            ):
                raise EndpointError(
                    f"{display_name!r} is already deployed on endpoint {name} (as {existing.id}) from model "
                    f"{existing.model}@{existing.model_version_id}, not from {model_uri}: use another display name"
                )
            return existing.id

        with self._client("model") as models, self._errors(
            f"reading model {model_uri}", f"check model_uri ({model_uri!r}) and the credentials' access to it"
        ):
            model = models.get_model(name=model_uri.strip(), timeout=self.request_timeout_seconds)
        versioned = f"{model.name}@{model.version_id}" if model.version_id else model.name
        kinds = set(model.supported_deployment_resources_types)
        deployed = GapicDeployedModel(model=versioned, display_name=display_name,
                                      service_account=self.service_account)
        if Model.DeploymentResourcesType.DEDICATED_RESOURCES in kinds:
            machine = MachineSpec(machine_type=self.machine_type)
            if accelerator:
                machine.accelerator_type = accelerator
                machine.accelerator_count = self.accelerator_count
            deployed.dedicated_resources = DedicatedResources(
                machine_spec=machine, min_replica_count=self.min_replica_count,
                max_replica_count=self.max_replica_count,
            )
        elif Model.DeploymentResourcesType.AUTOMATIC_RESOURCES in kinds:
            # AutoML models: Vertex AI picks the machines; machine_type and accelerators do not apply
            deployed.automatic_resources = AutomaticResources(
                min_replica_count=self.min_replica_count, max_replica_count=self.max_replica_count
            )
        else:
            raise EndpointError(f"model {model_uri} cannot be deployed to an endpoint (it supports neither "
                                "dedicated nor automatic deployment resources)")

        split = {key: int(value) for key, value in current.traffic_split.items()}
        request_split = {**split, "0": 0} if split else {}
        with self._client() as endpoints, self._errors(
            f"deploying {model_uri} as {display_name!r} to endpoint {name}", self._endpoint_hint()
        ):
            operation = endpoints.deploy_model(endpoint=name, deployed_model=deployed, traffic_split=request_split,
                                               timeout=self.request_timeout_seconds)
            response = self._wait(operation, f"deploying {display_name!r} to endpoint {name}")
        deployed_id = response.deployed_model.id if response is not None else ""
        if deployed_id:
            return deployed_id
        found = [m.id for m in self.deployed() if m.display_name == display_name]
        if len(found) != 1:
            raise EndpointError(f"deploying {display_name!r} to endpoint {name} finished but the endpoint lists "
                                f"{len(found)} deployed models of that name")
        return found[0]

    def set_traffic(self, split: Mapping[str, int]) -> None:
        """Set the absolute split (integer percents summing to 100, deployed ids only; others get 0%).

        The split is checked before anything is sent: its shape before any request, the ids against
        a fresh read of the endpoint before the update.
        """
        split = check_split(split)
        from google.cloud.aiplatform_v1.types import Endpoint
        from google.protobuf import field_mask_pb2

        name = self._endpoint_name()
        with self._client() as endpoints:
            current = self._get(endpoints)
            split = check_split(split, deployed={m.id for m in current.deployed_models})
            with self._errors(f"setting the traffic split of endpoint {name} to {split}", self._endpoint_hint()):
                endpoints.update_endpoint(
                    endpoint=Endpoint(name=name, traffic_split=split),
                    update_mask=field_mask_pb2.FieldMask(paths=["traffic_split"]),
                    timeout=self.request_timeout_seconds,
                )

    def undeploy(self, deployed_id: str) -> None:
        """Undeploy a model that receives no traffic; a model that is not deployed is success.

        Refuses (EndpointError) while the model still has traffic: shift it first with
        set_traffic. The undeployModel request carries the endpoint's split without the model, so
        Vertex AI never spreads traffic by itself (an endpoint without traffic sends no split).
        """
        name = self._endpoint_name()
        with self._client() as endpoints:
            current = self._get(endpoints)
        if deployed_id not in {m.id for m in current.deployed_models}:
            return
        split = {key: int(value) for key, value in current.traffic_split.items()}
        if split.get(deployed_id, 0) > 0:
            raise EndpointError(f"deployed model {deployed_id} still receives {split[deployed_id]}% of the traffic "
                                f"of endpoint {name} ({split}): move its traffic away with set_traffic first")
        remaining = {key: value for key, value in split.items() if key != deployed_id}
        with self._client() as endpoints, self._errors(
            f"undeploying {deployed_id} from endpoint {name}", self._endpoint_hint()
        ):
            operation = endpoints.undeploy_model(endpoint=name, deployed_model_id=deployed_id,
                                                 traffic_split=remaining, timeout=self.request_timeout_seconds)
            self._wait(operation, f"undeploying {deployed_id} from endpoint {name}")

    def traffic(self) -> dict[str, int]:
        """The live split, read fresh: {deployed_id: percent}."""
        with self._client() as endpoints:
            return {key: int(value) for key, value in self._get(endpoints).traffic_split.items()}

    def deployed(self) -> list[DeployedModel]:
        """The deployed models, read fresh; model_uri carries the model version (…/models/ID@version)."""
        with self._client() as endpoints:
            current = self._get(endpoints)
        return [
            DeployedModel(id=m.id, display_name=m.display_name,
                          model_uri=f"{m.model}@{m.model_version_id}" if m.model_version_id else m.model)
            for m in current.deployed_models
        ]

    def stats(self, deployed_id: str, since: datetime, until: datetime | None = None) -> ArmStats:
        """What `deployed_id` served between `since` and `until` (default now), from Cloud Monitoring.

        Sums the DELTA points of `prediction/online/prediction_count` and `error_count`, and turns
        the `prediction_latencies` distributions into approximate samples (each bucket's midpoint
        repeated by its count; the underflow bucket counts from 0, the overflow bucket at its lower
        bound; at most 5000 samples, scaled down in proportion). Points are taken when their end
        time is in (since, until]. Naive datetimes are UTC.

        The metric types and the label names `resource.labels.endpoint_id` and
        `metric.labels.deployed_model_id` are plausible (Vertex AI's metrics documentation, as
        shared/notes/FACTS.md has them) but NOT confirmed against the official list or a live
        project; when they are wrong the
        query finds nothing and the arm shows no requests, which the canary must treat as missing
        data, never as a pass. If latency series carry a `latency_type` label only "total" is used.
        `errors` is counted within `requests` (requests = max(requests, errors) when the two
        metrics' points do not line up in the window).
        """
        if not _DEPLOYED_ID.match(deployed_id):
            raise EndpointError(f"not a deployed model id: {deployed_id!r}")
        start, end = _utc(since), _utc(until) if until is not None else datetime.now(timezone.utc)
        if start >= end:
            raise EndpointError(f"stats window is empty: since {start.isoformat()} is not before {end.isoformat()}")
        project, _, endpoint_id = self._where()
        base = (f"resource.labels.endpoint_id = \"{endpoint_id}\" AND "
                f"metric.labels.deployed_model_id = \"{deployed_id}\"")
        session = self._monitoring_session()
        try:
            served = errors = 0
            for series in self._time_series(session, project, PREDICTION_COUNT, base, start, end):
                served += _sum_points(series)
            for series in self._time_series(session, project, ERROR_COUNT, base, start, end):
                errors += _sum_points(series)
            latency_series = list(self._time_series(session, project, PREDICTION_LATENCIES, base, start, end))
        finally:
            session.close()
        return ArmStats(requests=max(served, errors), errors=errors,
                        latencies_ms=_latency_samples(latency_series, MAX_LATENCY_SAMPLES))

    # -- Vertex AI ---------------------------------------------------------------------------------

    def _where(self) -> tuple[str, str, str]:
        """(project, location, endpoint id) of the endpoint."""
        named = _ENDPOINT_NAME.match(self.endpoint)
        if named:
            return named.group(1), named.group(2), named.group(3)
        return _gcp.project_of(self, EndpointError), self.location, self.endpoint

    def _endpoint_name(self) -> str:
        project, location, endpoint_id = self._where()
        return f"projects/{project}/locations/{location}/endpoints/{endpoint_id}"

    def _endpoint_hint(self) -> str:
        project, location, endpoint_id = self._where()
        return (f"check the `endpoint` setting ({endpoint_id!r}), `project` ({project!r}) and `location` "
                f"({location!r})")

    def _credentials(self) -> Credentials:
        cached = self._credentials_cache
        if cached is not None and cached[0] is self.gcp_credentials:
            return cached[1]
        try:
            credentials = self.gcp_credentials.get_credentials_from_service_account()
        except Exception as exc:  # noqa: BLE001 - a key that cannot be loaded: never show it
            raise EndpointError(f"the GCP credentials could not be loaded ({type(exc).__name__}): check "
                                "`gcp_credentials`") from None
        self._credentials_cache = (self.gcp_credentials, credentials)
        return credentials

    def _client(self, kind: str = "endpoint") -> Any:
        """A Vertex AI GAPIC client ("endpoint" or "model") built from this block's settings only.

        Use it as a context manager: leaving it closes its channel or HTTP session.
        """
        from google.cloud.aiplatform_v1.services.endpoint_service import EndpointServiceClient
        from google.cloud.aiplatform_v1.services.model_service import ModelServiceClient

        self._where()  # a missing project is reported before anything else
        credentials = self._credentials()
        host = self.api_endpoint or f"{self.location}-aiplatform.googleapis.com"
        client_class = EndpointServiceClient if kind == "endpoint" else ModelServiceClient
        try:
            return client_class(credentials=credentials, client_options={"api_endpoint": host},
                                transport=_gcp.api_transport(host))
        except (ValueError, TypeError) as exc:
            raise EndpointError(f"cannot build a Vertex AI client for {host}: {_describe(exc)}; check `api_endpoint` "
                                "and `location`") from exc

    def _get(self, endpoints: Any) -> Any:
        name = self._endpoint_name()
        with self._errors(f"reading endpoint {name}", self._endpoint_hint()):
            return endpoints.get_endpoint(name=name, timeout=self.request_timeout_seconds)

    def _wait(self, operation: Any, action: str) -> Any:
        import concurrent.futures

        try:
            return operation.result(timeout=self.deploy_timeout_seconds)
        except concurrent.futures.TimeoutError:
            raise EndpointError(
                f"{action}: not finished after {self.deploy_timeout_seconds:g} s (operation "
                f"{operation.operation.name}); it may still complete: check the endpoint before trying again"
            ) from None

    def _accelerator(self) -> str:
        problem = _gcp.unknown_accelerator(self.accelerator_type)
        if problem:
            raise EndpointError(problem)
        return self.accelerator_type

    def _errors(self, action: str, hint: str) -> _ErrorMapper:
        return _ErrorMapper(action, hint)

    # -- Cloud Monitoring --------------------------------------------------------------------------

    def _monitoring_session(self) -> Any:
        from google.auth.transport.requests import AuthorizedSession

        return AuthorizedSession(self._credentials())

    def _time_series(
        self, session: Any, project: str, metric_type: str, base_filter: str, start: datetime, end: datetime
    ) -> Iterator[dict[str, Any]]:
        url = f"{self.monitoring_endpoint or MONITORING_API}/v3/projects/{project}/timeSeries"
        params = {
            "filter": f"metric.type = \"{metric_type}\" AND {base_filter}",
            "interval.startTime": _rfc3339(start),
            "interval.endTime": _rfc3339(end),
            "view": "FULL",
        }
        hint = (f"check `project` ({project!r}), the credentials' monitoring.timeSeries.list permission and "
                "`monitoring_endpoint`")
        while True:
            with self._errors(f"reading {metric_type.rsplit('/', 1)[-1]} from Cloud Monitoring", hint):
                response = session.get(url, params=params, timeout=self.request_timeout_seconds)
                if response.status_code >= 400:
                    from google.api_core import exceptions as api_exceptions

                    raise api_exceptions.from_http_response(response)
                try:
                    page = response.json()
                except ValueError as exc:
                    raise EndpointError(f"Cloud Monitoring answered {response.status_code} with a body that is not "
                                        f"JSON; {hint}") from exc
            yield from page.get("timeSeries", [])
            token = page.get("nextPageToken")
            if not token:
                return
            params["pageToken"] = token


class _ErrorMapper:
    """Turns SDK/HTTP errors raised inside the block into TransientEndpointError / EndpointError."""

    def __init__(self, action: str, hint: str) -> None:
        self.action, self.hint = action, hint

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is None or isinstance(exc, EndpointError) or not isinstance(exc, Exception):
            return False
        raise _map_error(exc, self.action, self.hint) from exc


def _map_error(exc: Exception, action: str, hint: str) -> EndpointError:
    import requests
    from google.api_core import exceptions as api_exceptions
    from google.auth import exceptions as auth_exceptions

    text = f"{action} failed: {_describe(exc)}"
    # REST replies map by HTTP status (Forbidden, Unauthorized...), gRPC ones by code (PermissionDenied,
    # Unauthenticated...): the HTTP classes are the gRPC ones' base classes, so both are caught here.
    if isinstance(exc, (api_exceptions.InternalServerError, api_exceptions.BadGateway,
                        api_exceptions.ServiceUnavailable, api_exceptions.GatewayTimeout,
                        api_exceptions.TooManyRequests,
                        requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                        auth_exceptions.TransportError, ConnectionError, TimeoutError)):
        return TransientEndpointError(f"{text}; retrying may help")
    if isinstance(exc, (api_exceptions.Unauthorized, api_exceptions.Forbidden,
                        auth_exceptions.RefreshError, auth_exceptions.DefaultCredentialsError)):
        return EndpointError(f"{text}; the credentials were refused: check `gcp_credentials` (its service account "
                             f"needs Vertex AI and Monitoring access to the project) and {hint.removeprefix('check ')}")
    if isinstance(exc, (api_exceptions.NotFound, api_exceptions.BadRequest)):
        return EndpointError(f"{text}; {hint}")
    return EndpointError(text)


def _describe(exc: BaseException) -> str:
    """A one-line description of an SDK error: its type and message, with anything token-like removed."""
    text = _SECRETS.sub("[redacted]", " ".join(str(exc).split()))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)


def _rfc3339(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _sum_points(series: dict[str, Any]) -> int:
    total = 0
    for point in series.get("points", []):
        value = point.get("value", {})
        if "int64Value" in value:
            total += int(value["int64Value"])
        elif "doubleValue" in value:
            total += round(float(value["doubleValue"]))
    return total


def _latency_samples(series_list: list[dict[str, Any]], cap: int) -> tuple[float, ...]:
    """Approximate latency samples (ms) from distribution points: bucket midpoints repeated by count."""
    typed = [s for s in series_list if "latency_type" in s.get("metric", {}).get("labels", {})]
    if typed:  # per-stage series (overhead/model/total): only the end-to-end one
        series_list = [s for s in typed if s["metric"]["labels"]["latency_type"] == "total"]
    counts: dict[float, int] = {}
    for series in series_list:
        scale = _LATENCY_UNITS.get(series.get("unit") or "ms", 1.0)
        for point in series.get("points", []):
            dist = point.get("value", {}).get("distributionValue")
            if not dist:
                continue
            for index, count in enumerate(int(c) for c in dist.get("bucketCounts", [])):
                if count > 0:
                    mid = _bucket_midpoint(dist.get("bucketOptions", {}), index)
                    if mid is not None:
                        counts[mid * scale] = counts.get(mid * scale, 0) + count
    total = sum(counts.values())
    if total > cap:  # keep the shape: scale every bucket down, largest remainders first
        exact = {value: count * cap / total for value, count in counts.items()}
        scaled = {value: math.floor(share) for value, share in exact.items()}
        short = cap - sum(scaled.values())
        for value in sorted(exact, key=lambda v: exact[v] - scaled[v], reverse=True)[:short]:
            scaled[value] += 1
        counts = scaled
    return tuple(value for value in sorted(counts) for _ in range(counts[value]))


def _bucket_midpoint(options: dict[str, Any], index: int) -> float | None:
    """The representative value of bucket `index` (0 = underflow, N+1 = overflow) of a Distribution."""
    bounds: list[float]
    if "explicitBuckets" in options:
        bounds = [float(b) for b in options["explicitBuckets"].get("bounds", [])]
    elif "exponentialBuckets" in options:
        spec = options["exponentialBuckets"]
        n, growth, scale = int(spec["numFiniteBuckets"]), float(spec["growthFactor"]), float(spec["scale"])
        bounds = [scale * growth ** i for i in range(n + 1)]
    elif "linearBuckets" in options:
        spec = options["linearBuckets"]
        n, width, offset = int(spec["numFiniteBuckets"]), float(spec["width"]), float(spec.get("offset", 0))
        bounds = [offset + width * i for i in range(n + 1)]
    else:
        return None
    if not bounds or index > len(bounds):
        return None
    if index == 0:  # underflow: (-inf, bounds[0]); latencies start at 0
        return max(bounds[0], 0.0) / 2
    if index == len(bounds):  # overflow: [bounds[-1], inf); its lower bound understates it
        return bounds[-1]
    return (bounds[index - 1] + bounds[index]) / 2

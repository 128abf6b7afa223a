"""Vertex AI trainer block: runs one training as a Vertex AI CustomJob and reads back its metrics.

The training container (or Python package) gets `--dataset`, `--target` and `--params <json>`;
Vertex AI sets `AIP_MODEL_DIR` to `<base_output_dir>/model/`, where the training code writes the
model and a `metrics.json` (`{"accuracy": 0.91, ...}`).

google-cloud-aiplatform and google-cloud-storage are imported inside `train`. Note that importing
`prefect_gcp` (for `GcpCredentials`) imports aiplatform itself when it is installed: prefect-gcp's
package `__init__` loads its Vertex AI worker and `credentials.py` tries
`google.cloud.aiplatform.gapic`. This module adds no cloud SDK import of its own.

Job states are polled here (not with the SDK's blocking `run()`), with a timeout per request, a
few retries of transient errors (5xx, 429, dropped connections) and a cancel on timeout. The
create request is never retried: a lost reply could otherwise start the same training twice.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import threading
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from prefect.blocks.core import Block
from prefect_gcp.credentials import GcpCredentials
from pydantic import Field, field_validator, model_validator

from blocks import _gcp
from blocks.training import LogFn, TrainingError, TrainingResult, parse_metrics

if TYPE_CHECKING:
    from google.auth.credentials import Credentials
    from google.cloud.aiplatform import CustomJob

__all__ = ["VertexAITrainer", "VertexConfigError"]

SUCCEEDED = "JOB_STATE_SUCCEEDED"
_FAILED_STATES = {"JOB_STATE_FAILED", "JOB_STATE_EXPIRED", "JOB_STATE_PARTIALLY_SUCCEEDED"}
_CANCELLED_STATES = {"JOB_STATE_CANCELLED", "JOB_STATE_CANCELLING"}
_REQUEST_TIMEOUT = 60.0  # seconds per API call; the GAPIC job methods have no default timeout
_MAX_POLL_FAILURES = 5  # consecutive transient failures tolerated while polling
_MAX_RETRY_DELAY = 60.0
_METRICS_MAX_BYTES = 1 << 20
_LABEL = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
# aiplatform.init() sets process-wide defaults that the CustomJob's API client captures when it is
# built; trainers in other threads must not swap them in between.
_SDK_CONFIG_LOCK = threading.Lock()


class VertexConfigError(ValueError):
    """The trainer block is configured in a way Vertex AI cannot run; fix the named fields."""


class VertexAITrainer(Block):
    """Runs a training as a Vertex AI custom job (container image or Python package) and returns its model."""

    _block_type_name: ClassVar[str] = "Vertex AI Trainer"
    _block_type_slug: ClassVar[str] = "vertex-ai-trainer"
    _description: ClassVar[str] = (
        "Runs model training as a Vertex AI custom job and reads the model's metrics.json from Cloud Storage."
    )

    gcp_credentials: GcpCredentials = Field(
        description="GCP credentials allowed to create Vertex AI custom jobs and read the staging bucket."
    )
    project: str = _gcp.project_field()
    location: str = Field(default="us-central1", description="Vertex AI region, e.g. us-central1.")
    staging_bucket: str = Field(
        description="Bucket for job outputs, as gs://bucket[/prefix].", examples=["gs://acme-ml"]
    )
    base_output_dir: str = Field(
        default="",
        description="gs:// directory for the job's outputs (the model goes to <dir>/model/); empty means "
        "<staging_bucket>/modelops/<display name>, unique per run.",
    )
    container_image_uri: str = Field(
        default="", description="Training container image (set this, or the three python package fields)."
    )
    python_package_gcs_uri: str = Field(default="", description="gs:// URI of the training package (sdist/wheel).")
    python_module: str = Field(default="", description="Module to run from the package, e.g. trainer.task.")
    executor_image_uri: str = Field(
        default="", description="Prebuilt training image that runs the Python package."
    )
    machine_type: str = Field(default="n1-standard-4", min_length=1, description="Compute Engine machine type.")
    accelerator_type: str = _gcp.accelerator_type_field()
    accelerator_count: int = _gcp.accelerator_count_field()
    replica_count: int = Field(default=1, ge=1, le=1000, description="Replicas in the worker pool.")
    service_account: str = Field(
        default="", description="Service account the job runs as; empty means Vertex AI's default."
    )
    labels: dict[str, str] = Field(default_factory=dict, description="Labels put on the custom job.")
    display_name_prefix: str = Field(
        default="modelops-retrain", min_length=1, max_length=100,
        description="Job display names are <prefix>-<UTC timestamp>-<random suffix>.",
    )
    poll_interval_seconds: float = Field(default=15, gt=0, le=3600, description="Seconds between job state polls.")
    timeout_seconds: float = Field(
        default=4 * 3600, gt=0, description="Give up (and cancel the job) after this many seconds from submission."
    )
    api_endpoint: str = _gcp.api_endpoint_field()
    storage_endpoint: str = Field(
        default="", description="Cloud Storage JSON API endpoint override, as an http(s) URL; empty means Google's."
    )

    _strip = field_validator(
        "project", "location", "container_image_uri", "python_package_gcs_uri", "python_module",
        "executor_image_uri", "machine_type", "accelerator_type", "service_account", "display_name_prefix",
    )(_gcp.strip)

    @field_validator("staging_bucket")
    @classmethod
    def _check_staging_bucket(cls, value: str) -> str:
        return _gs_uri(value, "staging_bucket", "gs://acme-ml")

    @field_validator("base_output_dir")
    @classmethod
    def _check_base_output_dir(cls, value: str) -> str:
        return _gs_uri(value, "base_output_dir", "gs://acme-ml/churn/run-42") if value.strip() else ""

    @field_validator("python_package_gcs_uri")
    @classmethod
    def _check_package_uri(cls, value: str) -> str:
        return _gs_uri(value, "python_package_gcs_uri", "gs://acme-ml/pkg/trainer-0.1.tar.gz") if value else ""

    _check_api_endpoint = field_validator("api_endpoint")(_gcp.check_api_endpoint)

    @field_validator("storage_endpoint")
    @classmethod
    def _check_storage_endpoint(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value:
            parsed = urlsplit(value)
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                raise ValueError(f"storage_endpoint must be an http(s) URL such as https://storage.googleapis.com, "
                                 f"got {value!r}")
        return value

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key, label in value.items():
            if not _LABEL.match(key) or not _LABEL_VALUE.match(label):
                raise ValueError(
                    f"label {key}={label!r} is not a valid Vertex AI label: keys start with a lowercase letter, "
                    "keys and values use only lowercase letters, digits, '_' and '-', at most 63 characters"
                )
        return value

    _check_cross_fields = model_validator(mode="after")(_gcp.check_config)

    def config_problem(self) -> str:
        """Why this configuration cannot run (naming the fields), or '' when it can."""
        package = {
            "python_package_gcs_uri": self.python_package_gcs_uri,
            "python_module": self.python_module,
            "executor_image_uri": self.executor_image_uri,
        }
        given = [name for name, value in package.items() if value]
        if self.container_image_uri and given:
            return (f"set either container_image_uri or the python package fields "
                    f"(python_package_gcs_uri, python_module, executor_image_uri), not both: {', '.join(given)} "
                    "is set too")
        if not self.container_image_uri and not given:
            return ("no training code: set container_image_uri, or all of python_package_gcs_uri, "
                    "python_module and executor_image_uri")
        if given and len(given) < len(package):
            missing = [name for name in package if name not in given]
            return (f"the python package form needs python_package_gcs_uri, python_module and executor_image_uri: "
                    f"{', '.join(missing)} is missing")
        return _gcp.accelerator_problem(self.accelerator_type, self.accelerator_count)

    # -- training ----------------------------------------------------------------------------------

    def train(
        self, dataset: str, hyperparameters: dict[str, Any], *, target: str, log: LogFn = print
    ) -> TrainingResult:
        """Submit the custom job, wait for it, and return the model's location and metrics.

        Raises `VertexConfigError` before any request when the configuration cannot run, and
        `TrainingError` when the job cannot be submitted, fails, is cancelled, times out or
        leaves no readable metrics.json.
        """
        problem = self.config_problem()
        if problem:
            raise VertexConfigError(problem)
        project = _gcp.project_of(self, VertexConfigError)
        try:
            params = json.dumps(hyperparameters, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise VertexConfigError(f"hyperparameters must be JSON-serializable: {exc}") from exc
        args = ["--dataset", dataset, "--target", target, "--params", params]

        display_name = f"{self.display_name_prefix}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
        base_output_dir = self.base_output_dir or f"{self.staging_bucket}/modelops/{display_name}"
        model_dir = f"{base_output_dir}/model/"
        credentials = self.gcp_credentials.get_credentials_from_service_account()

        job = self._submit(project, credentials, display_name, base_output_dir, args)
        name = job.resource_name
        console_url = _console_url(job)
        log(f"vertex job {name} submitted ({display_name})" + (f": {console_url}" if console_url else ""))
        resource = self._wait(job, log)

        state = resource.state.name
        if state in _CANCELLED_STATES:
            raise TrainingError(
                f"vertex job {name} was cancelled ({state}){_job_error(resource)}", job=name, state=state
            )
        if state != SUCCEEDED:
            raise TrainingError(f"vertex job {name} failed ({state}){_job_error(resource)}", job=name, state=state)

        metrics = self._read_metrics(project, credentials, f"{model_dir}metrics.json", resource, name)
        details = {"display_name": display_name, "state": state, "base_output_dir": base_output_dir}
        if console_url:
            details["console_url"] = console_url
        return TrainingResult(model_uri=model_dir, metrics=metrics, job=name, trainer="vertex-ai", details=details)

    def worker_pool_specs(self, args: list[str]) -> list[dict[str, Any]]:
        """The single worker pool of the job, in the SDK's dict form."""
        machine: dict[str, Any] = {"machine_type": self.machine_type}
        if self.accelerator_type:
            machine["accelerator_type"] = self.accelerator_type
            machine["accelerator_count"] = self.accelerator_count
        pool: dict[str, Any] = {"machine_spec": machine, "replica_count": self.replica_count}
        if self.container_image_uri:
            pool["container_spec"] = {"image_uri": self.container_image_uri, "args": list(args)}
        else:
            pool["python_package_spec"] = {
                "executor_image_uri": self.executor_image_uri,
                "package_uris": [self.python_package_gcs_uri],
                "python_module": self.python_module,
                "args": list(args),
            }
        return [pool]

    def _submit(
        self, project: str, credentials: Credentials, display_name: str, base_output_dir: str, args: list[str]
    ) -> CustomJob:
        """Create the custom job (one create request, never retried) and return the SDK's job object."""
        from google.api_core import exceptions as api_exceptions
        from google.auth import exceptions as auth_exceptions
        from google.cloud import aiplatform

        where = self.api_endpoint or f"the {self.location} Vertex AI endpoint"
        problem = _gcp.unknown_accelerator(self.accelerator_type)
        if problem:
            raise VertexConfigError(problem)
        try:
            with _SDK_CONFIG_LOCK:
                aiplatform.init(
                    project=project,
                    location=self.location,
                    credentials=credentials,
                    staging_bucket=self.staging_bucket,
                    api_endpoint=self.api_endpoint or None,
                    api_transport=_gcp.api_transport(self.api_endpoint),
                )
                if not self.api_endpoint:
                    # init() cannot clear an endpoint set earlier in this process (by another trainer)
                    aiplatform.initializer.global_config._api_endpoint = None
                job = aiplatform.CustomJob(
                    display_name=display_name,
                    worker_pool_specs=self.worker_pool_specs(args),
                    base_output_dir=base_output_dir,
                    project=project,
                    location=self.location,
                    credentials=credentials,
                    labels=dict(self.labels) or None,
                    staging_bucket=self.staging_bucket,
                )
        except (ValueError, TypeError, KeyError) as exc:  # the SDK's own checks (region, accelerator enum...)
            raise VertexConfigError(f"Vertex AI rejected the job configuration: {exc}") from exc
        try:
            job.submit(
                service_account=self.service_account or None,
                # Vertex AI's own limit too, so the job stops even if this process dies while waiting
                timeout=math.ceil(self.timeout_seconds),
                create_request_timeout=_REQUEST_TIMEOUT,
            )
        except (api_exceptions.GoogleAPIError, auth_exceptions.GoogleAuthError, OSError) as exc:
            raise TrainingError(
                f"could not submit vertex job {display_name} to {where}: {_describe(exc)}"
            ) from exc
        return job

    def _wait(self, job: CustomJob, log: LogFn) -> Any:
        """Poll until the job is terminal; cancel it and raise on timeout. Returns the job resource."""
        name = job.resource_name
        deadline = time.monotonic() + self.timeout_seconds
        state = ""
        failures = 0
        try:
            while True:
                try:
                    resource = job.api_client.get_custom_job(name=name, timeout=_REQUEST_TIMEOUT)
                except Exception as exc:  # noqa: BLE001 - classified below
                    if not _is_transient(exc):
                        raise TrainingError(
                            f"reading the state of vertex job {name} failed: {_describe(exc)}; the job may still be "
                            "running", job=name, state=state or None,
                        ) from exc
                    failures += 1
                    if failures >= _MAX_POLL_FAILURES:
                        raise TrainingError(
                            f"reading the state of vertex job {name} failed {failures} times in a row (last: "
                            f"{_describe(exc)}); the job may still be running", job=name, state=state or None,
                        ) from exc
                    log(f"vertex job {name}: polling failed ({_describe(exc)}), retrying")
                    pause = min(self.poll_interval_seconds * 2 ** (failures - 1), _MAX_RETRY_DELAY)
                else:
                    failures = 0
                    if resource.state.name != state:
                        state = resource.state.name
                        log(f"vertex job {name}: {state}")
                    if state == SUCCEEDED or state in _FAILED_STATES or state in _CANCELLED_STATES:
                        return resource
                    pause = self.poll_interval_seconds
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                time.sleep(min(pause, remaining))
        except TrainingError:
            raise
        except BaseException:
            # the flow run was cancelled or interrupted: do not leave the training running unattended
            self._cancel(job, log)
            raise
        cancelled = self._cancel(job, log)
        raise TrainingError(
            f"vertex job {name} timed out after {self.timeout_seconds:g} s (last state {state or 'unknown'}); "
            + ("cancellation requested" if cancelled else "cancellation request failed: cancel it in the console"),
            job=name,
            state=state or None,
        )

    def _cancel(self, job: CustomJob, log: LogFn, attempts: int = 3) -> bool:
        """Ask Vertex AI to cancel the job (idempotent, so transient errors are retried); True when it accepted."""
        name = job.resource_name
        for attempt in range(1, attempts + 1):
            try:
                job.api_client.cancel_custom_job(name=name, timeout=_REQUEST_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - best effort; the caller reports the outcome
                if attempt < attempts and _is_transient(exc):
                    time.sleep(min(self.poll_interval_seconds, 5.0))
                    continue
                log(f"vertex job {name}: cancellation failed: {_describe(exc)}")
                return False
            log(f"vertex job {name}: cancellation requested")
            return True
        return False

    def _read_metrics(
        self, project: str, credentials: Credentials, uri: str, resource: Any, name: str
    ) -> dict[str, float]:
        """The metrics in `uri` (written by this job, not left over from an earlier run into the same dir)."""
        from google.api_core import exceptions as api_exceptions
        from google.auth import exceptions as auth_exceptions
        from google.cloud import storage

        bucket_name, _, object_name = uri[len("gs://"):].partition("/")
        options = {"api_endpoint": self.storage_endpoint} if self.storage_endpoint else None
        missing = f"vertex job {name} succeeded but wrote no metrics: {uri} does not exist"
        client = None
        try:
            client = storage.Client(project=project, credentials=credentials, client_options=options)
            blob = client.bucket(bucket_name).get_blob(object_name, timeout=_REQUEST_TIMEOUT)
            if blob is None:
                raise TrainingError(missing, job=name, state=SUCCEEDED)
            created = getattr(resource, "create_time", None)
            if blob.updated is not None and created and blob.updated < created:
                raise TrainingError(
                    f"vertex job {name} succeeded but {uri} was last written at {blob.updated.isoformat()}, before "
                    f"the job was created ({created.isoformat()}): it is from an earlier run, not this one",
                    job=name, state=SUCCEEDED,
                )
            if blob.size is not None and blob.size > _METRICS_MAX_BYTES:
                raise TrainingError(f"{uri} is {blob.size} bytes; a metrics file is at most {_METRICS_MAX_BYTES}",
                                    job=name, state=SUCCEEDED)
            raw = blob.download_as_bytes(timeout=_REQUEST_TIMEOUT)
        except api_exceptions.NotFound as exc:
            raise TrainingError(missing, job=name, state=SUCCEEDED) from exc
        except (api_exceptions.GoogleAPIError, auth_exceptions.GoogleAuthError, OSError) as exc:
            raise TrainingError(f"could not read {uri}: {_describe(exc)}", job=name, state=SUCCEEDED) from exc
        finally:
            if client is not None:
                client.close()
        try:
            return parse_metrics(json.loads(raw), uri)
        except ValueError as exc:
            raise TrainingError(f"{uri} is not valid JSON: {exc}", job=name, state=SUCCEEDED) from exc
        except TrainingError as exc:
            raise TrainingError(str(exc), job=name, state=SUCCEEDED) from exc


def _gs_uri(value: str, field: str, example: str) -> str:
    value = value.strip().rstrip("/")
    if not value.startswith("gs://") or not value[len("gs://"):].split("/")[0]:
        raise ValueError(f"{field} must be a gs:// URI such as {example}, got {value!r}")
    return value


def _is_transient(exc: BaseException) -> bool:
    """True for errors worth another try: 5xx, 429, timeouts and dropped connections."""
    import requests  # the REST transport's HTTP client (google-auth's AuthorizedSession)
    from google.api_core import exceptions as api_exceptions
    from google.auth import exceptions as auth_exceptions

    return isinstance(exc, (
        api_exceptions.ServerError, api_exceptions.TooManyRequests, auth_exceptions.TransportError,
        requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
        ConnectionError, TimeoutError,
    ))


def _describe(exc: BaseException) -> str:
    """A one-line description of an SDK error: its type and message (never a credential)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _job_error(resource: Any) -> str:
    error = getattr(resource, "error", None)
    message = getattr(error, "message", "") if error is not None else ""
    code = getattr(error, "code", 0) if error is not None else 0
    if not message:
        return ""
    return f": {message}" + (f" (code {code})" if code else "")


def _console_url(job: Any) -> str | None:
    try:  # the SDK's own (private) helper knows the console's current URL scheme
        return job._dashboard_uri()
    except Exception:  # noqa: BLE001 - a console link is optional
        return None

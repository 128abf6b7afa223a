"""A local Google Cloud server for tests: OAuth2 tokens, Vertex AI custom jobs and Cloud Storage objects.

Real HTTP on 127.0.0.1 (free port), speaking the JSON the real SDKs send and expect, so that
google-auth, google-cloud-aiplatform (REST transport) and google-cloud-storage run end to end:

    with FakeGcp() as fake:
        info = fake.new_service_account("modelops-test")       # RSA key, token_uri -> fake.url/token
        fake.script_job(outcome="succeed", polls=2, metrics={"accuracy": 0.9})
        aiplatform.init(api_endpoint=fake.url, api_transport="rest", ...)
        storage.Client(client_options={"api_endpoint": fake.url}, ...)

Authentication is checked like Google does: every API call needs `Authorization: Bearer <credential>`
where the credential is an access token issued by `POST /token` (google-auth's JWT-bearer grant,
used by google-cloud-storage) or a self-signed JWT (what the aiplatform GAPIC clients send for
service-account credentials), both signed with a service account key registered through
`new_service_account`. Anything else is a 401.

Vertex AI jobs follow a script (`script_job`): RUNNING for `polls` GETs, then the outcome. Faults
are injected per request with `fail_next` (a status, or `reset=True` to drop the connection).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Any, Literal
from urllib.parse import parse_qs, quote, unquote, urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.fakes._http import LoopbackServer, Reply

# google.cloud.aiplatform.v1.JobState, spelled out so the fake does not import the SDK it tests.
JOB_STATES = {
    "JOB_STATE_UNSPECIFIED": 0,
    "JOB_STATE_QUEUED": 1,
    "JOB_STATE_PENDING": 2,
    "JOB_STATE_RUNNING": 3,
    "JOB_STATE_SUCCEEDED": 4,
    "JOB_STATE_FAILED": 5,
    "JOB_STATE_CANCELLING": 6,
    "JOB_STATE_CANCELLED": 7,
    "JOB_STATE_PAUSED": 8,
    "JOB_STATE_EXPIRED": 9,
    "JOB_STATE_UPDATING": 10,
    "JOB_STATE_PARTIALLY_SUCCEEDED": 11,
}
_TERMINAL = {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"}
# google.rpc.Code values used in job errors and error replies
CODE_CANCELLED = 1
CODE_INTERNAL = 13
_STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                 409: "ALREADY_EXISTS", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
PROJECT_NUMBER = "123456789012"  # Vertex AI answers with the project number in resource names
# google-auth signs the token-exchange JWT for Google's endpoint whatever `token_uri` says
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"

Outcome = Literal["succeed", "fail", "cancel", "run"]


@dataclass(frozen=True)
class Request:
    """One request as received; `path` is decoded, `body` is parsed JSON (or the form of /token)."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    auth: str  # "token" (an issued access token), "jwt" (a self-signed JWT) or "" (none / rejected)


@dataclass
class JobScript:
    """What one custom job does once created.

    `succeed`, `fail`, `cancel`: RUNNING for `polls` GETs, then SUCCEEDED / FAILED (with `error`) /
    CANCELLED (as if someone cancelled it in the console). `run`: RUNNING until cancelled.
    On success, `metrics` (when given) is written to `<baseOutputDirectory>/model/metrics.json`.
    """

    outcome: Outcome = "succeed"
    polls: int = 1
    metrics: dict[str, Any] | None = None
    error: str = "The replica workerpool0-0 exited with a non-zero status of 1."
    error_code: int = CODE_INTERNAL


@dataclass
class _Fault:
    method: str
    pattern: str
    status: int
    reset: bool
    body: Any
    times: int


@dataclass
class _Job:
    resource: dict[str, Any]
    script: JobScript
    gets: int = 0
    cancel_requested: bool = False


@dataclass
class _Object:
    data: bytes
    generation: int
    updated: datetime
    content_type: str = "application/json"


@dataclass
class _ServiceAccount:
    email: str
    key_id: str
    public_key: rsa.RSAPublicKey
    info: dict[str, str] = field(repr=False)


class FakeGcp(LoopbackServer):
    """Google Cloud on loopback: `/token`, Vertex AI v1 customJobs and the Cloud Storage JSON API.

    `requests` logs every request received (token exchanges included); `jobs` holds the stored
    CustomJob JSON objects by resource name; `objects` the stored bytes by gs:// URI.
    """

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.tokens: list[str] = []
        self.jobs: dict[str, dict[str, Any]] = {}
        self._jobs: dict[str, _Job] = {}
        self._objects: dict[tuple[str, str], _Object] = {}
        self._accounts: dict[str, _ServiceAccount] = {}
        self._scripts: list[JobScript] = []
        self._faults: list[_Fault] = []
        self._ids = itertools.count(7_000_000_000_000_000_001)
        self._generations = itertools.count(1_700_000_000_000_001)
        self._lock = threading.RLock()
        self.url = f"http://127.0.0.1:{self._serve('fake-gcp', poll_interval=0.05)}"

    # -- test controls -----------------------------------------------------------------------------

    def new_service_account(
        self, project_id: str = "modelops-test", name: str = "modelops-trainer", *, key: rsa.RSAPrivateKey | None = None
    ) -> dict[str, str]:
        """Service-account key JSON whose `token_uri` is this server; the key is trusted from now on.

        `key` defaults to a fresh 2048-bit RSA key (pass one to save the ~0.1 s it takes to make).
        """
        key = key or new_rsa_key()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        email = f"{name}@{project_id}.iam.gserviceaccount.com"
        key_id = secrets.token_hex(20)
        info = {
            "type": "service_account",
            "project_id": project_id,
            "private_key_id": key_id,
            "private_key": pem,
            "client_email": email,
            "client_id": str(100_000_000_000_000_000_000 + len(self._accounts)),
            "auth_uri": f"{self.url}/auth",
            "token_uri": f"{self.url}/token",
            "auth_provider_x509_cert_url": f"{self.url}/certs",
            "client_x509_cert_url": f"{self.url}/certs/{quote(email)}",
            "universe_domain": "googleapis.com",
        }
        with self._lock:
            self._accounts[email] = _ServiceAccount(email, key_id, key.public_key(), info)
        return info

    def script_job(
        self,
        outcome: Outcome = "succeed",
        *,
        polls: int = 1,
        metrics: dict[str, Any] | None = None,
        error: str | None = None,
        error_code: int = CODE_INTERNAL,
    ) -> JobScript:
        """Queue the script for the next custom job created (jobs without a script succeed after 1 GET)."""
        script = JobScript(outcome, polls, metrics, error or JobScript.error, error_code)
        with self._lock:
            self._scripts.append(script)
        return script

    def fail_next(
        self, method: str, pattern: str, status: int = 503, *, times: int = 1, reset: bool = False, body: Any = None
    ) -> None:
        """Answer the next `times` requests whose decoded path matches the regex `pattern` with `status`.

        `reset=True` closes the connection without any reply instead (a connection reset).
        """
        with self._lock:
            self._faults.append(_Fault(method.upper(), pattern, status, reset, body, times))

    def put_object(self, uri: str, data: bytes | str, *, updated: datetime | None = None) -> None:
        """Store an object at gs://bucket/name, as a training container would have written it."""
        bucket, name = _split_gs(uri)
        raw = data.encode() if isinstance(data, str) else bytes(data)
        with self._lock:
            self._objects[(bucket, name)] = _Object(raw, next(self._generations), updated or _now())

    def object(self, uri: str) -> bytes | None:
        with self._lock:
            stored = self._objects.get(_split_gs(uri))
            return stored.data if stored else None

    def calls(self, method: str | None = None, pattern: str | None = None) -> list[Request]:
        """The recorded requests with that method and a decoded path matching `pattern`."""
        with self._lock:
            return [
                r for r in self.requests
                if (method is None or r.method == method.upper()) and (pattern is None or re.search(pattern, r.path))
            ]

    def created_jobs(self) -> list[dict[str, Any]]:
        """The CustomJob bodies sent to create jobs, in order."""
        return [r.body for r in self.calls("POST", r"/customJobs$")]

    # -- request handling --------------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> Reply | None:
        """The reply to one request, or None to drop the connection."""
        split = urlsplit(target)
        path = unquote(split.path)
        query = {key: values[-1] for key, values in parse_qs(split.query, keep_blank_values=True).items()}
        headers = {key.lower(): value for key, value in headers.items()}
        with self._lock:
            body = _parse_body(headers.get("content-type", ""), raw)
            auth = "" if path == "/token" else self._authenticate(headers.get("authorization", ""))
            self.requests.append(Request(method, path, query, body, auth or ""))
            fault = self._take_fault(method, path)
            if fault is not None:
                return None if fault.reset else _fault_reply(fault)
            if path == "/token" and method == "POST":
                return self._token(body)
            if auth is None:
                return _google_error(401, "Request had invalid authentication credentials. Expected OAuth 2 access "
                                          "token, login cookie or other valid authentication credential.")
            return self._route(method, split.path, path, query, body)

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        for fault in self._faults:
            if fault.method == method and re.search(fault.pattern, path):
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _route(self, method: str, raw_path: str, path: str, query: dict[str, str], body: Any) -> Reply:
        jobs = re.fullmatch(r"/v1/projects/([^/]+)/locations/([^/]+)/customJobs", path)
        if jobs:
            if method != "POST":
                return _google_error(405, "Method not allowed")
            return self._create_job(*jobs.groups(), body)
        job = re.fullmatch(r"/v1/(projects/[^/]+/locations/[^/]+/customJobs/[^/:]+)(:cancel)?", path)
        if job:
            name, cancel = job.groups()
            if cancel:
                return self._cancel_job(name) if method == "POST" else _google_error(405, "Method not allowed")
            return self._get_job(name, query) if method == "GET" else _google_error(405, "Method not allowed")
        # object names are percent-encoded in the raw path ("model%2Fmetrics.json")
        obj = re.fullmatch(r"(/download)?/storage/v1/b/([^/]+)/o/(.+)", raw_path)
        if obj and method == "GET":
            download, bucket, name = obj.groups()
            return self._get_object(unquote(bucket), unquote(name), media=bool(download) or query.get("alt") == "media")
        bucket = re.fullmatch(r"/storage/v1/b/([^/]+)", path)
        if bucket and method == "GET":
            return self._get_bucket(bucket.group(1))
        return _google_error(404, f"The requested URL {path} was not found on this server.")

    # -- OAuth2 ------------------------------------------------------------------------------------

    def _token(self, form: Any) -> Reply:
        if not isinstance(form, dict) or form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return _json(400, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type."})
        claims = self._verify_jwt(str(form.get("assertion", "")))
        if claims is None or claims.get("aud") not in self._token_audiences():
            return _json(400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
        token = "ya29.fake-" + secrets.token_urlsafe(24)
        self.tokens.append(token)
        return _json(200, {"access_token": token, "expires_in": 3600, "token_type": "Bearer"})

    def _authenticate(self, header: str) -> str | None:
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            return None
        if credential in self.tokens:
            return "token"
        claims = self._verify_jwt(credential)
        # a self-signed JWT carries the scopes (or an audience) instead of being exchanged for a token
        if claims is not None and claims.get("aud") not in self._token_audiences() and (
            claims.get("scope") or claims.get("aud")
        ):
            return "jwt"
        return None

    def _token_audiences(self) -> set[str]:
        return {f"{self.url}/token", GOOGLE_TOKEN_AUDIENCE}

    def _verify_jwt(self, token: str) -> dict[str, Any] | None:
        """The claims of an RS256 JWT signed by a trusted service account and not expired, else None."""
        try:
            header_b64, claims_b64, signature_b64 = token.split(".")
            header = json.loads(_b64decode(header_b64))
            claims = json.loads(_b64decode(claims_b64))
            account = self._accounts.get(str(claims.get("iss")))
            if account is None or header.get("alg") != "RS256":
                return None
            account.public_key.verify(
                _b64decode(signature_b64), f"{header_b64}.{claims_b64}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except Exception:  # malformed or forged: not authenticated
            return None
        if header.get("kid") not in (None, account.key_id) or float(claims.get("exp", 0)) < time.time():
            return None
        return claims

    # -- Vertex AI custom jobs ---------------------------------------------------------------------

    def _create_job(self, project: str, location: str, body: Any) -> Reply:
        problem = _check_custom_job(body)
        if problem:
            return _google_error(400, problem)
        job_id = str(next(self._ids))
        name = f"projects/{PROJECT_NUMBER}/locations/{location}/customJobs/{job_id}"
        now = _timestamp()
        resource = {
            "name": name,
            "displayName": body["displayName"],
            "jobSpec": body["jobSpec"],
            "state": "JOB_STATE_PENDING",
            "createTime": now,
            "updateTime": now,
        }
        if body.get("labels"):
            resource["labels"] = body["labels"]
        script = self._scripts.pop(0) if self._scripts else JobScript()
        self._jobs[name] = _Job(resource, script)
        self.jobs[name] = resource
        return _json(200, _render(resource, int_enums=True))

    def _get_job(self, name: str, query: dict[str, str]) -> Reply:
        job = self._jobs.get(name)
        if job is None:
            return _google_error(404, f'The CustomJob "{name}" does not exist.')
        job.gets += 1
        self._advance(job)
        return _json(200, _render(job.resource, int_enums="enum-encoding=int" in query.get("$alt", "")))

    def _cancel_job(self, name: str) -> Reply:
        job = self._jobs.get(name)
        if job is None:
            return _google_error(404, f'The CustomJob "{name}" does not exist.')
        state = job.resource["state"]
        if state in _TERMINAL:
            return _google_error(400, f"Cannot cancel CustomJob {name} in state {state}.", "FAILED_PRECONDITION")
        job.cancel_requested = True
        self._set_state(job, "JOB_STATE_CANCELLING")
        return _json(200, {})

    def _advance(self, job: _Job) -> None:
        """Move the job along its script: one GET is one tick."""
        state = job.resource["state"]
        if state in _TERMINAL:
            return
        if job.cancel_requested or state == "JOB_STATE_CANCELLING":
            self._finish(job, "JOB_STATE_CANCELLED", {"code": CODE_CANCELLED, "message": "CANCELED"})
            return
        script = job.script
        if script.outcome == "run" or job.gets <= script.polls:
            if state != "JOB_STATE_RUNNING":
                job.resource["startTime"] = _timestamp()
                self._set_state(job, "JOB_STATE_RUNNING")
            return
        if script.outcome == "succeed":
            if script.metrics is not None:
                base = job.resource["jobSpec"]["baseOutputDirectory"]["outputUriPrefix"].rstrip("/")
                self.put_object(f"{base}/model/metrics.json", json.dumps(script.metrics))
            self._finish(job, "JOB_STATE_SUCCEEDED", None)
        elif script.outcome == "fail":
            self._finish(job, "JOB_STATE_FAILED", {"code": script.error_code, "message": script.error})
        else:
            self._finish(job, "JOB_STATE_CANCELLED", {"code": CODE_CANCELLED, "message": "CANCELED"})

    def _set_state(self, job: _Job, state: str) -> None:
        job.resource["state"] = state
        job.resource["updateTime"] = _timestamp()

    def _finish(self, job: _Job, state: str, error: dict[str, Any] | None) -> None:
        self._set_state(job, state)
        job.resource["endTime"] = job.resource["updateTime"]
        if error is not None:
            job.resource["error"] = error

    # -- Cloud Storage -----------------------------------------------------------------------------

    def _get_bucket(self, bucket: str) -> Reply:
        """Bucket metadata; google-cloud-storage >= 3.17 fetches it in a background thread per bucket."""
        if not any(stored_bucket == bucket for stored_bucket, _ in self._objects):
            return _json(404, {"error": {"code": 404, "message": "The specified bucket does not exist.",
                                         "errors": [{"message": "The specified bucket does not exist.",
                                                     "domain": "global", "reason": "notFound"}]}})
        return _json(200, {"kind": "storage#bucket", "id": bucket, "name": bucket, "projectNumber": PROJECT_NUMBER,
                           "metageneration": "1", "location": "US-CENTRAL1", "locationType": "region",
                           "storageClass": "STANDARD", "timeCreated": "2025-01-01T00:00:00.000Z",
                           "updated": "2025-01-01T00:00:00.000Z", "etag": "CAE="})

    def _get_object(self, bucket: str, name: str, *, media: bool) -> Reply:
        stored = self._objects.get((bucket, name))
        if stored is None:
            return _json(404, {"error": {"code": 404, "message": f"No such object: {bucket}/{name}",
                                         "errors": [{"message": f"No such object: {bucket}/{name}",
                                                     "domain": "global", "reason": "notFound"}]}})
        md5 = base64.b64encode(hashlib.md5(stored.data).digest()).decode()
        hashes_header = f"md5={md5}"
        crc = _crc32c(stored.data)
        if crc is not None:
            hashes_header = f"crc32c={crc},{hashes_header}"
        if media:
            return 200, {
                "Content-Type": stored.content_type,
                "x-goog-hash": hashes_header,
                "x-goog-generation": str(stored.generation),
                "x-goog-metageneration": "1",
                "x-goog-stored-content-length": str(len(stored.data)),
                "x-goog-storage-class": "STANDARD",
            }, stored.data
        stamp = stored.updated.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        metadata = {
            "kind": "storage#object",
            "id": f"{bucket}/{name}/{stored.generation}",
            "selfLink": f"{self.url}/storage/v1/b/{bucket}/o/{quote(name, safe='')}",
            "mediaLink": f"{self.url}/download/storage/v1/b/{bucket}/o/{quote(name, safe='')}"
                         f"?generation={stored.generation}&alt=media",
            "name": name,
            "bucket": bucket,
            "generation": str(stored.generation),
            "metageneration": "1",
            "contentType": stored.content_type,
            "storageClass": "STANDARD",
            "size": str(len(stored.data)),
            "md5Hash": md5,
            "etag": base64.b64encode(str(stored.generation).encode()).decode(),
            "timeCreated": stamp,
            "updated": stamp,
            "timeStorageClassUpdated": stamp,
        }
        if crc is not None:
            metadata["crc32c"] = crc
        return _json(200, metadata)


def new_rsa_key() -> rsa.RSAPrivateKey:
    """A fresh RSA key, the kind Google issues for service accounts."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _check_custom_job(body: Any) -> str:
    """Vertex AI's own validation of a CustomJob, in its words; '' when valid."""
    if not isinstance(body, dict) or not body.get("displayName"):
        return "List of found errors:\t1.Field: custom_job.display_name; Message: Required field is not set."
    spec = body.get("jobSpec") or {}
    pools = spec.get("workerPoolSpecs") or []
    if not pools:
        return ("List of found errors:\t1.Field: custom_job.job_spec.worker_pool_specs; "
                "Message: Required field is not set.")
    if not (spec.get("baseOutputDirectory") or {}).get("outputUriPrefix", "").startswith("gs://"):
        return "Field: custom_job.job_spec.base_output_directory; Message: must be a gs:// URI."
    for index, pool in enumerate(pools):
        where = f"custom_job.job_spec.worker_pool_specs[{index}]"
        machine = pool.get("machineSpec") or {}
        if not machine.get("machineType"):
            return f"Field: {where}.machine_spec.machine_type; Message: Required field is not set."
        count = int(machine.get("acceleratorCount") or 0)
        has_type = machine.get("acceleratorType") not in (None, 0, "ACCELERATOR_TYPE_UNSPECIFIED")
        if count > 0 and not has_type:
            return f"Field: {where}.machine_spec.accelerator_type; Message: Required when accelerator_count > 0."
        if has_type and count <= 0:
            return f"Field: {where}.machine_spec.accelerator_count; Message: Must be positive with an accelerator_type."
        if int(pool.get("replicaCount") or 0) < 1:
            return f"Field: {where}.replica_count; Message: Must be at least 1."
        if ("containerSpec" in pool) == ("pythonPackageSpec" in pool):
            return f"Field: {where}; Message: Exactly one of container_spec or python_package_spec must be set."
        if "containerSpec" in pool and not pool["containerSpec"].get("imageUri"):
            return f"Field: {where}.container_spec.image_uri; Message: Required field is not set."
        package = pool.get("pythonPackageSpec")
        if package is not None:
            for key, snake in (("executorImageUri", "executor_image_uri"), ("packageUris", "package_uris"),
                               ("pythonModule", "python_module")):
                if not package.get(key):
                    return f"Field: {where}.python_package_spec.{snake}; Message: Required field is not set."
    return ""


def _render(resource: dict[str, Any], *, int_enums: bool) -> dict[str, Any]:
    """The JSON of a stored job; enums as numbers when the client asked for `enum-encoding=int`."""
    out = json.loads(json.dumps(resource))
    if int_enums:
        out["state"] = JOB_STATES[out["state"]]
    return out


def _split_gs(uri: str) -> tuple[str, str]:
    if not uri.startswith("gs://") or "/" not in uri[5:]:
        raise ValueError(f"not a gs://bucket/object URI: {uri!r}")
    bucket, _, name = uri[5:].partition("/")
    return bucket, name


def _crc32c(data: bytes) -> str | None:
    try:
        import google_crc32c
    except ImportError:  # google-cloud-storage then skips the check
        return None
    return base64.b64encode(google_crc32c.value(data).to_bytes(4, "big")).decode()


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _timestamp() -> str:
    return _now().strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_body(content_type: str, raw: bytes) -> Any:
    if not raw:
        return None
    if "x-www-form-urlencoded" in content_type:
        return {key: values[-1] for key, values in parse_qs(raw.decode()).items()}
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _json(status: int, data: Any, headers: dict[str, str] | None = None) -> Reply:
    return status, {"Content-Type": "application/json; charset=UTF-8", **(headers or {})}, json.dumps(data).encode()


def _google_error(status: int, message: str, status_name: str | None = None) -> Reply:
    """Google's JSON error body, as `google.api_core.exceptions.from_http_response` reads it."""
    name = status_name or _STATUS_NAMES.get(status, HTTPStatus(status).phrase.upper().replace(" ", "_"))
    return _json(status, {"error": {"code": status, "message": message, "status": name}})


def _fault_reply(fault: _Fault) -> Reply:
    if fault.body is None:
        return _google_error(fault.status, "The service is currently unavailable." if fault.status == 503
                             else HTTPStatus(fault.status).phrase)
    if isinstance(fault.body, (dict, list)):
        return _json(fault.status, fault.body)
    raw = fault.body.encode() if isinstance(fault.body, str) else bytes(fault.body)
    return fault.status, {"Content-Type": "text/html; charset=UTF-8"}, raw


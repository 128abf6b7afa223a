"""W&B webhook deliveries -> Prefect events, without any I/O.

`parse_delivery(headers, body, ...)` verifies the credentials over the raw bytes, validates the
JSON body as a W&B automation payload and returns the Prefect event it maps to. Every failure is a
`DeliveryError` carrying the HTTP status the receiver answers with and a message naming the
problem. The HTTP route in `deployments.webhook` only parses, records and replies.

The mapping is the external contract of DESIGN.md ("Event vocabulary").
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

MAX_BODY_BYTES = 1024 * 1024

#: Deepest nesting of arrays and objects in a body. W&B payloads are a few levels deep; Prefect 3.9.1
#: stores event payloads only up to ~190 levels (500 from ~260) and Python's json gives up near 1000.
MAX_JSON_DEPTH = 64

#: W&B `event_type` -> Prefect event name.
EVENT_NAMES: dict[str, str] = {
    "ADD_ARTIFACT_ALIAS": "wandb.artifact.alias-added",
    "UPDATE_ARTIFACT_ALIAS": "wandb.artifact.alias-added",
    "LINK_ARTIFACT": "wandb.artifact.linked",
    "LINK_MODEL": "wandb.artifact.linked",
    "CREATE_ARTIFACT": "wandb.artifact.created",
    "ADD_ARTIFACT_TAG": "wandb.artifact.tag-added",
    "RUN_METRIC": "wandb.run.metric",
    "RUN_METRIC_CHANGE": "wandb.run.metric",
    "RUN_METRIC_ZSCORE": "wandb.run.metric",
    "RUN_STATE": "wandb.run.state",
}

RUN_EVENT_TYPES = frozenset(k for k, v in EVENT_NAMES.items() if v.startswith("wandb.run."))

#: Optional run/metric fields copied into labels when a user's payload template carries them.
RUN_LABEL_FIELDS = {
    "run_id": "wandb.run.id",
    "run_name": "wandb.run.name",
    "metric_name": "wandb.metric",
    "metric_value": "wandb.metric.value",
    "run_state": "wandb.run.state",
}


class DeliveryError(Exception):
    """A rejected delivery: `status` is the HTTP answer, `str(self)` names the problem."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.field = field

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": str(self)}
        if self.field:
            out["field"] = self.field
        return out


@dataclass(frozen=True)
class Credentials:
    """What the receiver checks. Both unset means unauthenticated (allowed only explicitly)."""

    token: str | None = field(default=None, repr=False)
    secret: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:  # never the values: a repr ends up in logs and tracebacks
        return (f"Credentials(token={'set' if self.token else 'unset'}, "
                f"secret={'set' if self.secret else 'unset'})")

    @property
    def configured(self) -> bool:
        return bool(self.token or self.secret)


@dataclass(frozen=True)
class ArtifactRef:
    entity: str
    project: str
    collection: str
    version: str

    @property
    def resource_id(self) -> str:
        return f"wandb.artifact.{self.entity}/{self.project}/{self.collection}:{self.version}"

    @property
    def name(self) -> str:
        return f"{self.collection}:{self.version}"

    @property
    def path(self) -> str:
        return f"{self.entity}/{self.project}/{self.collection}:{self.version}"


@dataclass(frozen=True)
class WandbEvent:
    """A validated delivery, ready to become a Prefect event."""

    event_type: str
    event: str
    resource: dict[str, str]
    payload: dict[str, Any]
    body_sha256: str = field(repr=False)

    def to_prefect(self, event_id: str, occurred: str) -> dict[str, Any]:
        return {
            "id": event_id,
            "occurred": occurred,
            "event": self.event,
            "resource": dict(self.resource),
            "related": [],
            "payload": self.payload,
        }


# --------------------------------------------------------------------------- credentials


def signature_for(secret: str, body: bytes) -> str:
    """The `X-Wandb-Signature` W&B sends: base64 of HMAC-SHA256 over the raw body."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def _decode_signature(value: str) -> bytes | None:
    value = value.strip()
    if value.lower().startswith("sha256="):
        value = value[len("sha256=") :]
    if len(value) == 64:
        try:
            return bytes.fromhex(value)
        except ValueError:
            pass
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 32 else None


def check_credentials(headers: Mapping[str, str], body: bytes, creds: Credentials) -> None:
    """Fail closed: every configured credential must be present and match (constant time).

    Header names are matched case-insensitively.
    """
    headers = {k.lower(): v for k, v in headers.items()}
    if creds.token:
        auth = headers.get("authorization", "")
        scheme, _, supplied = auth.partition(" ")
        if scheme.lower() != "bearer" or not supplied:
            raise DeliveryError(401, "missing bearer token in Authorization header", "authorization")
        if not hmac.compare_digest(supplied.strip().encode(), creds.token.encode()):
            raise DeliveryError(401, "bearer token does not match WANDB_WEBHOOK_TOKEN", "authorization")
    if creds.secret:
        supplied_sig = headers.get("x-wandb-signature")
        if not supplied_sig:
            raise DeliveryError(401, "missing X-Wandb-Signature header", "x-wandb-signature")
        digest = _decode_signature(supplied_sig)
        expected = hmac.new(creds.secret.encode(), body, hashlib.sha256).digest()
        # compare_digest on equal-length inputs even when the header did not decode
        if not hmac.compare_digest(digest or b"\0" * 32, expected) or digest is None:
            raise DeliveryError(
                401, "X-Wandb-Signature is not the HMAC-SHA256 of the body with WANDB_WEBHOOK_SECRET",
                "x-wandb-signature",
            )


# --------------------------------------------------------------------------- body


def _text(fields: Mapping[str, Any], key: str) -> str | None:
    value = fields.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DeliveryError(422, f"field '{key}' must be a string, got {type(value).__name__}", key)
    text = str(value).strip()
    return text or None


def _flatten(body: Mapping[str, Any]) -> dict[str, Any]:
    """Accept the flat payload template and the GitHub `repository_dispatch` shape of the seed recipe
    (`{"event_type": ..., "client_payload": {...}}`); fields inside `client_payload` win."""
    fields = {k: v for k, v in body.items() if k != "client_payload"}
    inner = body.get("client_payload")
    if inner is not None:
        if not isinstance(inner, dict):
            raise DeliveryError(422, "field 'client_payload' must be a JSON object", "client_payload")
        fields.update(inner)
    return fields


def parse_version_string(value: str) -> tuple[str | None, str | None, str, str]:
    """`entity/project/name:v3` -> (entity, project, name, version). Entity and project may be absent."""
    path, sep, version = value.rpartition(":")
    if not sep or not path or not version or "/" in version:
        raise DeliveryError(
            422,
            f"field 'artifact_version_string' must look like 'entity/project/name:version', got {value!r}",
            "artifact_version_string",
        )
    parts = path.split("/")
    if len(parts) == 3 and all(parts):
        return parts[0], parts[1], parts[2], version
    if len(parts) == 1 and parts[0]:
        return None, None, parts[0], version
    raise DeliveryError(
        422,
        f"field 'artifact_version_string' must look like 'entity/project/name:version', got {value!r}",
        "artifact_version_string",
    )


def _artifact_event(event_type: str, fields: Mapping[str, Any]) -> tuple[dict[str, str], None]:
    version_string = _text(fields, "artifact_version_string")
    if version_string is None:
        raise DeliveryError(
            422, f"field 'artifact_version_string' is required for {event_type} events",
            "artifact_version_string",
        )
    vs_entity, vs_project, vs_collection, version = parse_version_string(version_string)
    entity = _text(fields, "entity_name") or vs_entity
    project = _text(fields, "project_name") or vs_project
    collection = _text(fields, "artifact_collection_name") or vs_collection
    for key, value in (("entity_name", entity), ("project_name", project)):
        if value is None:
            raise DeliveryError(422, f"field '{key}' is required for {event_type} events", key)
    ref = ArtifactRef(entity, project, collection, version)  # type: ignore[arg-type]
    resource = {
        "prefect.resource.id": ref.resource_id,
        "prefect.resource.name": ref.name,
        "wandb.entity": ref.entity,
        "wandb.project": ref.project,
        "wandb.collection": ref.collection,
        "wandb.version": ref.version,
    }
    alias = _text(fields, "alias")
    if alias:
        resource["wandb.alias"] = alias
    tag = _text(fields, "tag")
    if tag:
        resource["wandb.tag"] = tag
    return resource, None


def _run_event(fields: Mapping[str, Any]) -> dict[str, str]:
    entity = _text(fields, "entity_name")
    project = _text(fields, "project_name")
    run = _text(fields, "run_id") or _text(fields, "run_name")
    resource = {
        "prefect.resource.id": f"wandb.run.{entity or '-'}/{project or '-'}/{run or '-'}",
        "prefect.resource.name": _text(fields, "run_name") or run or (project or "wandb-run"),
    }
    if entity:
        resource["wandb.entity"] = entity
    if project:
        resource["wandb.project"] = project
    for key, label in RUN_LABEL_FIELDS.items():
        value = _text(fields, key)
        if value is not None:
            resource[label] = value
    return resource


def _not_json(token: str) -> Any:
    raise ValueError(f"{token} is not a JSON value")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _check_forwardable(doc: Any) -> None:
    """What the sender must post to Prefect as UTF-8 JSON: bounded nesting, no lone surrogates."""
    stack = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
            items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
            stack.extend((item, depth + 1) for item in items)
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("a string holds a lone UTF-16 surrogate") from None


def parse_body(body: bytes) -> WandbEvent:
    """Validate a raw JSON body as a W&B automation payload and map it to a Prefect event.

    Only JSON the sender can post to Prefect is accepted: no NaN/Infinity tokens, no float that
    overflows to infinity (1e400), no lone surrogate, nesting up to MAX_JSON_DEPTH; anything else
    would be a 202 for an event that can never be delivered (or, nested deep enough, a 500).
    """
    try:
        doc = json.loads(body, parse_constant=_not_json, parse_float=_finite)
        _check_forwardable(doc)
    except RecursionError:
        raise DeliveryError(400, f"body is not valid JSON: nested deeper than {MAX_JSON_DEPTH} levels") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise DeliveryError(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise DeliveryError(422, f"body must be a JSON object, got {type(doc).__name__}")
    fields = _flatten(doc)
    event_type_raw = fields.get("event_type")
    if event_type_raw is None or event_type_raw == "":
        raise DeliveryError(422, "field 'event_type' is required", "event_type")
    if not isinstance(event_type_raw, str):
        raise DeliveryError(422, "field 'event_type' must be a string", "event_type")
    event_type = event_type_raw.strip().upper()
    if event_type not in EVENT_NAMES:
        raise DeliveryError(
            422,
            f"field 'event_type' {event_type_raw[:80]!r} is not a known W&B event type "
            f"(expected one of {', '.join(sorted(EVENT_NAMES))})",
            "event_type",
        )
    if event_type in RUN_EVENT_TYPES:
        resource = _run_event(fields)
    else:
        resource, _ = _artifact_event(event_type, fields)
    payload = dict(fields)
    payload["event_type"] = event_type
    return WandbEvent(
        event_type=event_type,
        event=EVENT_NAMES[event_type],
        resource=resource,
        payload=payload,
        body_sha256=hashlib.sha256(body).hexdigest(),
    )


def check_content_type(headers: Mapping[str, str]) -> None:
    ctype = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
    media = ctype.split(";", 1)[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise DeliveryError(
            415, f"Content-Type must be application/json, got {ctype or 'none'!r}", "content-type"
        )


def check_length(headers: Mapping[str, str], limit: int) -> None:
    """Reject a declared length over the limit before any of the body is read."""
    declared = headers.get("content-length")
    if declared is None:
        return
    try:
        length = int(declared)
    except ValueError:
        raise DeliveryError(400, f"Content-Length {declared!r} is not a number", "content-length") from None
    if length > limit:
        raise DeliveryError(413, f"body of {length} bytes is over the limit of {limit} bytes")


def parse_delivery(
    headers: Mapping[str, str], body: bytes, creds: Credentials, *, limit: int = MAX_BODY_BYTES
) -> WandbEvent:
    """The whole check of one delivery, in the order the statuses are documented.

    Credentials come first, so an unauthenticated caller learns nothing about the body rules.
    """
    headers = {k.lower(): v for k, v in headers.items()}
    check_credentials(headers, body, creds)
    if len(body) > limit:
        raise DeliveryError(413, f"body of {len(body)} bytes is over the limit of {limit} bytes")
    check_content_type(headers)
    return parse_body(body)


# --------------------------------------------------------------------------- the sending side


def delivery_headers(body: bytes, *, secret: str | None = None, token: str | None = None) -> dict[str, str]:
    """Headers W&B sends with a delivery (used by the local registry, the demo and the tests)."""
    headers = {"Content-Type": "application/json"}
    if secret:
        headers["X-Wandb-Signature"] = signature_for(secret, body)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def artifact_body(
    event_type: str,
    entity: str,
    project: str,
    collection: str,
    version: str,
    *,
    alias: str = "",
    tag: str = "",
    author: str = "",
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A W&B payload as our recommended automation template renders it for an artifact event."""
    body: dict[str, Any] = {
        "event_type": event_type,
        "event_author": author,
        "entity_name": entity,
        "project_name": project,
        "artifact_collection_name": collection,
        "artifact_version": f"wandb-artifact://_id/{base64.b64encode(f'{collection}:{version}'.encode()).decode()}",
        "artifact_version_string": f"{entity}/{project}/{collection}:{version}",
        "alias": alias,
        "tag": tag,
    }
    if metadata is not None:
        body["artifact_metadata"] = dict(metadata)
    return body


# --------------------------------------------------------------------------- the payload templates
#
# The one definition of what a W&B webhook automation sends us. README.md ("The W&B payload
# template") shows PAYLOAD_TEMPLATE_ARTIFACT verbatim (a test keeps them equal) and
# `python -m deployments.wandb_automations` installs these very objects as the automations' payloads.

#: Payload for artifact events (alias added, artifact created, linked, tag added): every variable
#: W&B documents for them. `${alias}` is blank outside alias events, `${tag}` outside tag events.
#: `${artifact_metadata.KEY}` exists per key only, so no generic metadata field can be templated.
PAYLOAD_TEMPLATE_ARTIFACT: dict[str, str] = {
    "event_type": "${event_type}",
    "event_author": "${event_author}",
    "entity_name": "${entity_name}",
    "project_name": "${project_name}",
    "artifact_collection_name": "${artifact_collection_name}",
    "artifact_version": "${artifact_version}",
    "artifact_version_string": "${artifact_version_string}",
    "alias": "${alias}",
    "tag": "${tag}",
}

#: Payload for run events (run metric threshold/change/z-score, run state). W&B documents no run or
#: metric variables (no run id, run name, metric name or value), only the event-wide ones, so this
#: is what a run delivery can carry; the receiver names the run `wandb.run.<entity>/<project>/-`.
#: Run fields in RUN_LABEL_FIELDS are still read when a user's own template supplies them.
PAYLOAD_TEMPLATE_RUN: dict[str, str] = {
    "event_type": "${event_type}",
    "event_author": "${event_author}",
    "entity_name": "${entity_name}",
    "project_name": "${project_name}",
}

_TEMPLATE_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.\-]*)\}")


def template_variables(template: Any) -> set[str]:
    """The `${name}` variables a payload template uses (in string values, at any depth)."""
    if isinstance(template, str):
        return set(_TEMPLATE_VARIABLE.findall(template))
    if isinstance(template, Mapping):
        return set().union(*(template_variables(v) for v in template.values()))
    if isinstance(template, (list, tuple)):
        return set().union(*(template_variables(v) for v in template))
    return set()


def _render(value: Any, values: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return _TEMPLATE_VARIABLE.sub(lambda m: str(values.get(m.group(1), "") or ""), value)
    if isinstance(value, Mapping):
        return {k: _render(v, values) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_render(v, values) for v in value]
    return value


def render_template(template: Mapping[str, Any], values: Mapping[str, str]) -> dict[str, Any]:
    """The body W&B would send for `template`: every `${name}` replaced by `values[name]`.

    A variable without a value becomes the empty string, as W&B leaves `${alias}` blank outside
    alias events. Substitution happens inside string values (keys and non-string values are kept),
    so the result is always a JSON object; how W&B escapes a value containing `"` in its text-level
    substitution is not documented. The template itself is not modified.
    """
    return _render(template, values)

"""W&B deliveries -> Prefect events: the external contract of DESIGN.md, checked without any I/O.

`deployments.wandb_events` is sans-io (like gidgethub's `sansio.Event.from_http`): headers and the
raw body in, a `WandbEvent` or a `DeliveryError` carrying the HTTP status out. Header keys are lower
case, as the ASGI server hands them to the route.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest

import deployments.wandb_events as wandb_events
from deployments.wandb_events import (
    EVENT_NAMES,
    MAX_BODY_BYTES,
    RUN_EVENT_TYPES,
    Credentials,
    DeliveryError,
    WandbEvent,
    artifact_body,
    check_content_type,
    check_credentials,
    check_length,
    delivery_headers,
    parse_body,
    parse_delivery,
    parse_version_string,
    signature_for,
)
from tests.samples import ENTITY, INVALID_BODIES, PROJECT, SAMPLE_BODIES

# DESIGN.md, "Event vocabulary": W&B event_type -> Prefect event name, copied by hand on purpose so
# a change to EVENT_NAMES that breaks the external contract fails here.
DESIGN_TABLE = {
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
RUN_TYPES = ["RUN_METRIC", "RUN_METRIC_CHANGE", "RUN_METRIC_ZSCORE", "RUN_STATE"]
ARTIFACT_TYPES = [t for t in DESIGN_TABLE if t not in RUN_TYPES]

JSON = {"content-type": "application/json"}
SECRET = "whsec-3b1f"  # test-only values
TOKEN = "tok-9c2e"


def encode(body: Any) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


def version_body(event_type: str, version_string: str = f"{ENTITY}/{PROJECT}/fraud-model:v3", **extra: Any) -> dict:
    return {"event_type": event_type, "artifact_version_string": version_string, **extra}


def rejected(body: Any) -> DeliveryError:
    with pytest.raises(DeliveryError) as info:
        parse_body(encode(body))
    return info.value


# =========================================================================== the event vocabulary


def test_event_names_are_exactly_the_design_table() -> None:
    assert EVENT_NAMES == DESIGN_TABLE, (
        "EVENT_NAMES is the external contract of DESIGN.md's 'Event vocabulary' table: every W&B "
        "event_type and nothing else must map to the documented Prefect event name"
    )
    assert RUN_EVENT_TYPES == frozenset(RUN_TYPES), "exactly the four RUN_* types are run events"


@pytest.mark.parametrize("event_type", ARTIFACT_TYPES)
def test_every_artifact_event_type_maps_to_its_documented_event(event_type: str) -> None:
    event = parse_body(encode(version_body(event_type)))
    assert event.event == DESIGN_TABLE[event_type], f"{event_type} must become {DESIGN_TABLE[event_type]}"
    assert event.event_type == event_type
    assert event.resource["prefect.resource.id"] == f"wandb.artifact.{ENTITY}/{PROJECT}/fraud-model:v3", (
        "artifact events are keyed by entity/project/collection:version so automations can match them"
    )


@pytest.mark.parametrize("event_type", RUN_TYPES)
def test_every_run_event_type_maps_to_its_documented_event(event_type: str) -> None:
    event = parse_body(encode({"event_type": event_type}))
    assert event.event == DESIGN_TABLE[event_type], f"{event_type} must become {DESIGN_TABLE[event_type]}"
    assert event.resource["prefect.resource.id"].startswith("wandb.run."), "run events name a run resource"


# =========================================================================== artifact events


def test_artifact_event_resource_has_the_documented_id_name_and_labels() -> None:
    body = artifact_body("ADD_ARTIFACT_ALIAS", "acme", "churn", "churn-model", "v3", alias="production", tag="gold")
    event = parse_body(encode(body))
    assert event.event == "wandb.artifact.alias-added"
    assert event.resource == {
        "prefect.resource.id": "wandb.artifact.acme/churn/churn-model:v3",
        "prefect.resource.name": "churn-model:v3",
        "wandb.entity": "acme",
        "wandb.project": "churn",
        "wandb.collection": "churn-model",
        "wandb.version": "v3",
        "wandb.alias": "production",
        "wandb.tag": "gold",
    }, "the resource is exactly the documented id, name and labels"


@pytest.mark.parametrize(
    "alias,tag",
    [("", ""), ("   ", "\t"), (None, None)],
    ids=["empty", "blank", "null"],
)
def test_alias_and_tag_labels_only_when_present_and_not_blank(alias: Any, tag: Any) -> None:
    event = parse_body(encode(version_body("ADD_ARTIFACT_ALIAS", alias=alias, tag=tag)))
    assert "wandb.alias" not in event.resource, "a blank alias must not become a label automations match on"
    assert "wandb.tag" not in event.resource, "a blank tag must not become a label"


def test_alias_and_tag_absent_means_no_labels() -> None:
    event = parse_body(encode(version_body("CREATE_ARTIFACT")))
    assert not {"wandb.alias", "wandb.tag"} & set(event.resource), "no alias/tag in the body, no such labels"


def test_alias_and_tag_are_stripped() -> None:
    event = parse_body(encode(version_body("ADD_ARTIFACT_ALIAS", alias="  production\n", tag=" gold ")))
    assert event.resource["wandb.alias"] == "production", "a padded alias must still match 'production'"
    assert event.resource["wandb.tag"] == "gold"


@pytest.mark.parametrize(
    "version_string,expected",
    [
        ("acme/churn/churn-model:v3", ("acme", "churn", "churn-model", "v3")),
        ("acme/churn/churn-model:production", ("acme", "churn", "churn-model", "production")),
        ("acme/churn/churn-model:latest", ("acme", "churn", "churn-model", "latest")),
        ("churn-model:v12", (None, None, "churn-model", "v12")),
        ("acme/wandb-registry-model/fraud:v0", ("acme", "wandb-registry-model", "fraud", "v0")),
    ],
)
def test_parse_version_string(version_string: str, expected: tuple) -> None:
    assert parse_version_string(version_string) == expected, (
        f"{version_string!r}: version is what follows the last ':' (an alias kept as given)"
    )


def test_version_comes_from_the_version_string_and_an_alias_there_is_kept() -> None:
    v3 = parse_body(encode(version_body("ADD_ARTIFACT_ALIAS", "acme/churn/churn-model:v3")))
    assert v3.resource["wandb.version"] == "v3"
    aliased = parse_body(encode(version_body("ADD_ARTIFACT_ALIAS", "acme/churn/churn-model:production")))
    assert aliased.resource["wandb.version"] == "production", "an alias in the version string is kept as given"
    assert aliased.resource["prefect.resource.id"] == "wandb.artifact.acme/churn/churn-model:production"
    assert aliased.resource["prefect.resource.name"] == "churn-model:production"


def test_entity_project_collection_fall_back_to_the_version_string() -> None:
    event = parse_body(encode(version_body("LINK_ARTIFACT", "team/proj/model-a:v7")))
    assert (
        event.resource["wandb.entity"], event.resource["wandb.project"], event.resource["wandb.collection"]
    ) == ("team", "proj", "model-a"), "without explicit fields, the version string's parts name the artifact"


def test_explicit_fields_win_over_the_version_string() -> None:
    event = parse_body(encode(version_body(
        "ADD_ARTIFACT_ALIAS", "old-team/old-proj/old-name:v9",
        entity_name="acme", project_name="churn", artifact_collection_name="churn-model",
    )))
    assert event.resource["prefect.resource.id"] == "wandb.artifact.acme/churn/churn-model:v9", (
        "entity_name/project_name/artifact_collection_name win; the version still comes from the version string"
    )


def test_short_version_string_takes_entity_and_project_from_fields() -> None:
    event = parse_body(encode(version_body("ADD_ARTIFACT_TAG", "fraud-model:v2", entity_name="acme", project_name="p")))
    assert event.resource["prefect.resource.id"] == "wandb.artifact.acme/p/fraud-model:v2"


def test_payload_carries_the_body_with_client_payload_flattened_and_event_type_upper_cased() -> None:
    body = {
        "event_type": "build_and_deploy",
        "ref": "main",
        "client_payload": {
            "event_type": " add_artifact_alias ",
            "artifact_version_string": "acme/churn/churn-model:v3",
            "alias": "production",
            "artifact_metadata": {"auc": 0.91, "rows": 1200},
        },
    }
    event = parse_body(encode(body))
    assert event.event == "wandb.artifact.alias-added", "client_payload's event_type wins over the outer one"
    assert event.payload == {
        "event_type": "ADD_ARTIFACT_ALIAS",
        "ref": "main",
        "artifact_version_string": "acme/churn/churn-model:v3",
        "alias": "production",
        "artifact_metadata": {"auc": 0.91, "rows": 1200},
    }, "the payload is the body's fields, client_payload flattened in, event_type normalised"
    assert "client_payload" not in event.payload, "the wrapper itself is not carried"


def test_body_sha256_is_over_the_raw_bytes() -> None:
    raw = encode(version_body("CREATE_ARTIFACT"))
    assert parse_body(raw).body_sha256 == hashlib.sha256(raw).hexdigest(), (
        "deduplication keys on the hash of the exact bytes delivered"
    )


def test_to_prefect_document() -> None:
    event = parse_body(encode(version_body("CREATE_ARTIFACT")))
    doc = event.to_prefect("0b5c7d8e-0000-4000-8000-000000000001", "2024-05-01T12:00:00+00:00")
    assert doc == {
        "id": "0b5c7d8e-0000-4000-8000-000000000001",
        "occurred": "2024-05-01T12:00:00+00:00",
        "event": "wandb.artifact.created",
        "resource": event.resource,
        "related": [],
        "payload": event.payload,
    }
    doc["resource"]["wandb.alias"] = "tampered"
    assert "wandb.alias" not in event.resource, "the document must not share the event's resource dict"


@pytest.mark.parametrize("body", [b for _, b in SAMPLE_BODIES], ids=[i for i, _ in SAMPLE_BODIES])
def test_every_sample_body_is_accepted_consistently(body: dict) -> None:
    event = parse_body(encode(body))
    assert isinstance(event, WandbEvent)
    assert event.event == EVENT_NAMES[event.event_type]
    assert event.payload["event_type"] == event.event_type, "the payload carries the normalised event_type"
    resource = event.resource
    assert all(isinstance(v, str) and v for v in resource.values()), "labels are non-empty strings"
    if event.event.startswith("wandb.artifact."):
        assert resource["prefect.resource.id"] == (
            f"wandb.artifact.{resource['wandb.entity']}/{resource['wandb.project']}/"
            f"{resource['wandb.collection']}:{resource['wandb.version']}"
        ), "the resource id is built from the labels"
        assert resource["prefect.resource.name"] == f"{resource['wandb.collection']}:{resource['wandb.version']}"


# =========================================================================== run events


def test_run_event_with_every_field() -> None:
    event = parse_body(encode({
        "event_type": "RUN_METRIC", "entity_name": "acme", "project_name": "churn",
        "run_id": "3x9k2a1b", "run_name": "sunny-river-42", "metric_name": "val/auc", "metric_value": 0.912,
    }))
    assert event.resource == {
        "prefect.resource.id": "wandb.run.acme/churn/3x9k2a1b",
        "prefect.resource.name": "sunny-river-42",
        "wandb.entity": "acme",
        "wandb.project": "churn",
        "wandb.run.id": "3x9k2a1b",
        "wandb.run.name": "sunny-river-42",
        "wandb.metric": "val/auc",
        "wandb.metric.value": "0.912",
    }


@pytest.mark.parametrize("event_type", RUN_TYPES)
def test_run_events_are_accepted_with_whatever_is_present(event_type: str) -> None:
    bare = parse_body(encode({"event_type": event_type}))
    assert bare.resource == {"prefect.resource.id": "wandb.run.-/-/-", "prefect.resource.name": "wandb-run"}, (
        "a user's payload template may carry nothing but event_type; the run event is still accepted"
    )
    project_only = parse_body(encode({"event_type": event_type, "project_name": "churn"}))
    assert project_only.resource["prefect.resource.id"] == "wandb.run.-/churn/-"
    assert project_only.resource["wandb.project"] == "churn"


def test_run_events_ignore_artifact_fields() -> None:
    event = parse_body(encode({"event_type": "RUN_STATE", "run_id": "r1", "artifact_version_string": "garbage"}))
    assert event.resource["prefect.resource.id"] == "wandb.run.-/-/r1", (
        "a run event does not require or validate artifact_version_string"
    )


# =========================================================================== rejected bodies


def test_body_not_json_is_400() -> None:
    for raw in (b"event_type=CREATE_ARTIFACT", b"", b"{", b"\xff\xfe{}"):
        err = rejected(raw)
        assert err.status == 400, f"{raw!r} is not JSON: the receiver answers 400"
        assert "not valid JSON" in str(err)


@pytest.mark.parametrize("body", [[{"event_type": "CREATE_ARTIFACT"}], "CREATE_ARTIFACT", 7, None])
def test_json_that_is_not_an_object_is_422(body: Any) -> None:
    err = rejected(body)
    assert err.status == 422, "JSON but not an object: 422, not 400"
    assert "must be a JSON object" in str(err)


@pytest.mark.parametrize(
    "body,field,words",
    [
        ({"artifact_version_string": "a/b/c:v1"}, "event_type", "required"),
        ({"event_type": None}, "event_type", "required"),
        ({"event_type": "webhook", "client_payload": {"artifact_version_string": "a/b/c:v1"}},
         "event_type", "'webhook' is not a known W&B event type"),
        ({"event_type": "DELETE_ARTIFACT"}, "event_type", "not a known W&B event type"),
        ({"event_type": 7}, "event_type", "must be a string"),
        ({"event_type": ["CREATE_ARTIFACT"]}, "event_type", "must be a string"),
        ({"event_type": "ADD_ARTIFACT_ALIAS", "alias": "production"}, "artifact_version_string", "required"),
        (version_body("CREATE_ARTIFACT", "a/b/c"), "artifact_version_string", "must look like"),
        (version_body("CREATE_ARTIFACT", "a/c:v1"), "artifact_version_string", "must look like"),
        (version_body("CREATE_ARTIFACT", "c:v1", project_name="p"), "entity_name", "required"),
        (version_body("CREATE_ARTIFACT", "c:v1", entity_name="e"), "project_name", "required"),
        (version_body("CREATE_ARTIFACT", entity_name=True), "entity_name", "must be a string"),
    ],
    ids=[
        "missing-event-type", "null-event-type", "github-recipe-webhook", "unknown-event-type",
        "numeric-event-type", "list-event-type", "no-version-string", "version-string-no-colon",
        "version-string-two-parts", "missing-entity", "missing-project", "bool-entity",
    ],
)
def test_unknown_or_incomplete_events_are_422_naming_the_field(body: dict, field: str, words: str) -> None:
    err = rejected(body)
    assert err.status == 422, f"a JSON body that is not a valid W&B event is 422 ({err})"
    assert err.field == field, f"the error must name {field!r}, named {err.field!r}: {err}"
    assert field in str(err), f"the message must name {field!r}: {err}"
    assert words in str(err), f"the message must say {words!r}: {err}"
    assert err.to_dict() == {"error": str(err), "field": field}, "the reply body names the field"


@pytest.mark.parametrize(
    "body,field", [(b, f) for _, b, f in INVALID_BODIES], ids=[i for i, _, _ in INVALID_BODIES]
)
def test_every_invalid_sample_is_rejected_naming_its_field(body: Any, field: str | None) -> None:
    err = rejected(body)
    assert err.status == (400 if isinstance(body, bytes) else 422), f"status for {body!r}: {err}"
    assert err.field == field, f"expected field {field!r}, got {err.field!r}: {err}"
    if field:
        assert f"'{field}'" in str(err), f"the message must name the field {field!r}: {err}"
    else:
        assert "field" not in err.to_dict(), "a whole-body problem names no field"


@pytest.mark.parametrize(
    "value", ["a/b/c", "a/b/c:", ":v1", "a/c:v1", "a//c:v1", "/b/c:v1", "a/b/c/d:v1", "a/b/c:v1/x"]
)
def test_malformed_version_strings(value: str) -> None:
    with pytest.raises(DeliveryError) as info:
        parse_version_string(value)
    assert (info.value.status, info.value.field) == (422, "artifact_version_string")
    assert repr(value) in str(info.value), "the message quotes the malformed value"


def test_unknown_event_type_message_lists_the_known_ones_and_truncates_input() -> None:
    err = rejected({"event_type": "X" * 500})
    assert "ADD_ARTIFACT_ALIAS" in str(err), "the message tells the user which event types are known"
    assert "X" * 81 not in str(err), "an attacker-sized event_type is not echoed back in full"


# =========================================================================== credentials


def signed(signature: str) -> dict[str, str]:
    return {**JSON, "x-wandb-signature": signature}


BODY = encode(artifact_body("ADD_ARTIFACT_ALIAS", "acme", "churn", "churn-model", "v3", alias="production"))
HMAC_RAW = hmac.new(SECRET.encode(), BODY, hashlib.sha256).digest()


def test_signature_for_is_base64_hmac_sha256() -> None:
    assert signature_for(SECRET, BODY) == base64.b64encode(HMAC_RAW).decode(), (
        "X-Wandb-Signature is base64 of HMAC-SHA256 over the raw body (DESIGN.md)"
    )


@pytest.mark.parametrize(
    "signature",
    [
        base64.b64encode(HMAC_RAW).decode(),
        HMAC_RAW.hex(),
        HMAC_RAW.hex().upper(),
        "sha256=" + HMAC_RAW.hex(),
        "  " + base64.b64encode(HMAC_RAW).decode() + " ",
    ],
    ids=["base64", "hex", "HEX", "sha256=hex", "padded-base64"],
)
def test_valid_signature_encodings_are_accepted(signature: str) -> None:
    check_credentials(signed(signature), BODY, Credentials(secret=SECRET))
    event = parse_delivery(signed(signature), BODY, Credentials(secret=SECRET))
    assert event.event == "wandb.artifact.alias-added"


@pytest.mark.parametrize(
    "headers",
    [
        {**JSON},
        {**JSON, "x-wandb-signature": ""},
        {**JSON, "x-wandb-signature": signature_for("another-secret", BODY)},
        {**JSON, "x-wandb-signature": signature_for(SECRET, BODY + b" ")},
        {**JSON, "x-wandb-signature": "not base64 at all!"},
        {**JSON, "x-wandb-signature": base64.b64encode(b"short").decode()},
        {**JSON, "x-wandb-signature": "sha256=" + "zz" * 32},
        {**JSON, "x-wandb-signature": base64.b64encode(HMAC_RAW[:-1] + bytes([HMAC_RAW[-1] ^ 1])).decode()},
    ],
    ids=["missing", "empty", "wrong-secret", "other-body", "garbage", "short-digest", "bad-hex", "one-bit-off"],
)
def test_bad_or_missing_signature_is_401(headers: dict[str, str]) -> None:
    with pytest.raises(DeliveryError) as info:
        parse_delivery(headers, BODY, Credentials(secret=SECRET))
    assert info.value.status == 401, f"an unverified delivery must be refused: {info.value}"
    assert info.value.field == "x-wandb-signature"


def test_signature_over_a_different_body_is_refused() -> None:
    other = encode(artifact_body("ADD_ARTIFACT_ALIAS", "acme", "churn", "churn-model", "v4", alias="production"))
    with pytest.raises(DeliveryError) as info:
        parse_delivery(signed(signature_for(SECRET, other)), BODY, Credentials(secret=SECRET))
    assert info.value.status == 401, "a signature replayed onto another body must not verify"


def test_bearer_token_accepted() -> None:
    for scheme in ("Bearer", "bearer", "BEARER"):
        check_credentials({"authorization": f"{scheme} {TOKEN}"}, BODY, Credentials(token=TOKEN))


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", f"Bearer {TOKEN}x", "Bearer wrong", f"Basic {TOKEN}", f"Token {TOKEN}", TOKEN],
    ids=["missing", "empty", "scheme-only", "scheme-space", "longer", "wrong", "basic", "token-scheme", "no-scheme"],
)
def test_bad_or_missing_bearer_token_is_401(authorization: str | None) -> None:
    headers = {**JSON} if authorization is None else {**JSON, "authorization": authorization}
    with pytest.raises(DeliveryError) as info:
        parse_delivery(headers, BODY, Credentials(token=TOKEN))
    assert info.value.status == 401, f"Authorization {authorization!r} must be refused"
    assert info.value.field == "authorization"


def test_with_token_and_secret_both_are_required() -> None:
    creds = Credentials(token=TOKEN, secret=SECRET)
    both = {**JSON, "authorization": f"Bearer {TOKEN}", "x-wandb-signature": signature_for(SECRET, BODY)}
    assert parse_delivery(both, BODY, creds).event == "wandb.artifact.alias-added"

    only_token = {k: v for k, v in both.items() if k != "x-wandb-signature"}
    with pytest.raises(DeliveryError) as info:
        parse_delivery(only_token, BODY, creds)
    assert (info.value.status, info.value.field) == (401, "x-wandb-signature"), "the token alone is not enough"

    only_signature = {k: v for k, v in both.items() if k != "authorization"}
    with pytest.raises(DeliveryError) as info:
        parse_delivery(only_signature, BODY, creds)
    assert (info.value.status, info.value.field) == (401, "authorization"), "the signature alone is not enough"


def test_no_credentials_configured_accepts_anything() -> None:
    creds = Credentials()
    assert not creds.configured, "no token and no secret means unauthenticated"
    check_credentials({"authorization": "Bearer whatever", "x-wandb-signature": "junk"}, BODY, creds)
    assert parse_delivery(JSON, BODY, creds).event == "wandb.artifact.alias-added"
    assert Credentials(token=TOKEN).configured and Credentials(secret=SECRET).configured


def test_credentials_are_checked_before_the_body() -> None:
    with pytest.raises(DeliveryError) as info:
        parse_delivery({"content-type": "text/plain"}, b"not json" * 10, Credentials(token=TOKEN), limit=10)
    assert info.value.status == 401, "an unauthenticated caller learns nothing about the body rules"


def test_comparisons_are_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(wandb_events.hmac, "compare_digest", spy)
    headers = {"authorization": f"Bearer {TOKEN}", "x-wandb-signature": signature_for(SECRET, BODY)}
    check_credentials(headers, BODY, Credentials(token=TOKEN, secret=SECRET))
    assert (TOKEN.encode(), TOKEN.encode()) in calls, "the bearer token must be compared with hmac.compare_digest"
    assert (HMAC_RAW, HMAC_RAW) in calls, "the signature must be compared with hmac.compare_digest"

    calls.clear()
    with pytest.raises(DeliveryError):
        check_credentials({"x-wandb-signature": "garbage!"}, BODY, Credentials(secret=SECRET))
    assert len(calls) == 1, "even an undecodable signature goes through compare_digest (no early timing exit)"


# =========================================================================== content type and length


@pytest.mark.parametrize(
    "ctype",
    ["application/json", "application/json; charset=utf-8", "Application/JSON;charset=UTF-8",
     "application/cloudevents+json"],
)
def test_json_content_types_accepted(ctype: str) -> None:
    check_content_type({"content-type": ctype})


@pytest.mark.parametrize("ctype", [None, "", "text/plain", "application/x-www-form-urlencoded", "text/json"])
def test_other_content_types_are_415(ctype: str | None) -> None:
    headers = {} if ctype is None else {"content-type": ctype}
    with pytest.raises(DeliveryError) as info:
        check_content_type(headers)
    assert info.value.status == 415, f"Content-Type {ctype!r} must be refused with 415"
    assert "application/json" in str(info.value), "the message says what is expected"
    with pytest.raises(DeliveryError) as info:
        parse_delivery(headers, BODY, Credentials())
    assert info.value.status == 415, "parse_delivery applies the same rule"


def test_declared_length_over_the_limit_is_413_before_reading() -> None:
    check_length({"content-length": "1024"}, 1024)
    check_length({}, 1024)  # chunked: the route enforces the limit while reading
    with pytest.raises(DeliveryError) as info:
        check_length({"content-length": "1025"}, 1024)
    assert info.value.status == 413, "a declared length over the limit is refused before any byte is read"
    assert "1025" in str(info.value) and "1024" in str(info.value), "the message names the size and the limit"


@pytest.mark.parametrize("declared", ["abc", "", "1.5", "12abc"])
def test_non_numeric_content_length_is_400(declared: str) -> None:
    with pytest.raises(DeliveryError) as info:
        check_length({"content-length": declared}, 1024)
    assert (info.value.status, info.value.field) == (400, "content-length")


def test_body_over_the_limit_is_413() -> None:
    assert MAX_BODY_BYTES == 1024 * 1024, "DESIGN.md: 1 MiB default"
    with pytest.raises(DeliveryError) as info:
        parse_delivery(JSON, BODY, Credentials(), limit=len(BODY) - 1)
    assert info.value.status == 413, "a body one byte over the limit is refused"
    assert parse_delivery(JSON, BODY, Credentials(), limit=len(BODY)).event, "a body exactly at the limit passes"

    big = encode({"event_type": "RUN_STATE", "pad": "x" * MAX_BODY_BYTES})
    with pytest.raises(DeliveryError) as info:
        parse_delivery(JSON, big, Credentials())
    assert info.value.status == 413, "the default limit is applied"


# =========================================================================== the sending side


def test_delivery_headers_and_artifact_body_round_trip() -> None:
    body = artifact_body(
        "ADD_ARTIFACT_ALIAS", "acme", "churn", "churn-model", "v3",
        alias="production", author="alice", metadata={"auc": 0.93},
    )
    raw = encode(body)
    sent = delivery_headers(raw, secret=SECRET, token=TOKEN)
    assert sent["X-Wandb-Signature"] == signature_for(SECRET, raw)
    assert sent["Authorization"] == f"Bearer {TOKEN}"
    # parse_delivery takes lower-case keys, as the ASGI server gives them to the route
    received = {k.lower(): v for k, v in sent.items()}
    event = parse_delivery(received, raw, Credentials(token=TOKEN, secret=SECRET))
    assert event.event == "wandb.artifact.alias-added"
    assert event.resource["prefect.resource.id"] == "wandb.artifact.acme/churn/churn-model:v3"
    assert event.resource["wandb.alias"] == "production"
    assert event.payload["event_author"] == "alice"
    assert event.payload["artifact_metadata"] == {"auc": 0.93}, "metadata travels in the payload"


def test_delivery_headers_without_credentials() -> None:
    assert delivery_headers(b"{}") == {"Content-Type": "application/json"}, "nothing to sign, nothing added"


def test_artifact_body_leaves_blank_alias_and_tag_out_of_the_labels() -> None:
    event = parse_body(encode(artifact_body("CREATE_ARTIFACT", "acme", "data", "transactions", "v0")))
    assert event.event == "wandb.artifact.created"
    assert not {"wandb.alias", "wandb.tag"} & set(event.resource)
    assert "artifact_metadata" not in event.payload, "no metadata given, none sent"

"""The Prefect Cloud webhook template maps W&B deliveries exactly as the receiver's `parse_body`."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jinja2 import StrictUndefined, Undefined
from prefect.events import Event

from deployments.cloud_webhook import (
    TEMPLATE_PATH,
    cloud_context,
    cloud_environment,
    load_template,
    render_cloud_event,
    render_cloud_text,
)
from deployments.wandb_events import EVENT_NAMES, DeliveryError, WandbEvent, parse_body, _flatten
from tests.samples import INVALID_BODIES, SAMPLE_BODIES

JSON_HEADERS = {"Content-Type": "application/json", "User-Agent": "W&B-Webhook"}

SAMPLES = pytest.mark.parametrize("body", [b for _, b in SAMPLE_BODIES], ids=[i for i, _ in SAMPLE_BODIES])
INVALID = pytest.mark.parametrize(
    "body,field", [(b, f) for _, b, f in INVALID_BODIES], ids=[i for i, _, _ in INVALID_BODIES]
)


def encode(body: Any, *, ascii_only: bool = True) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=ascii_only).encode()


def as_mapped(event: WandbEvent) -> dict[str, Any]:
    return {"event": event.event, "resource": event.resource, "payload": event.payload}


# --------------------------------------------------------------------------- accepted deliveries


@SAMPLES
@pytest.mark.parametrize("ascii_only", [True, False], ids=["ascii-json", "utf8-json"])
def test_template_maps_like_parse_body(body: dict, ascii_only: bool) -> None:
    raw = encode(body, ascii_only=ascii_only)
    rendered = render_cloud_event(raw, JSON_HEADERS)
    assert rendered == as_mapped(parse_body(raw))


@SAMPLES
def test_rendered_event_is_a_valid_prefect_event(body: dict) -> None:
    raw = encode(body)
    event = Event.model_validate(render_cloud_event(raw, JSON_HEADERS))
    expected = parse_body(raw)
    assert event.event == expected.event
    assert event.resource.id == expected.resource["prefect.resource.id"]
    assert dict(event.resource.root) == expected.resource


STRICT = cloud_environment(undefined=StrictUndefined)
AUTOESCAPE = cloud_environment(undefined=Undefined, autoescape=True)


@SAMPLES
@pytest.mark.parametrize("environment", [STRICT, AUTOESCAPE], ids=["strict-undefined", "autoescape"])
def test_template_does_not_depend_on_undefined_or_autoescape(body: dict, environment) -> None:
    raw = encode(body)
    assert render_cloud_event(raw, JSON_HEADERS, environment=environment) == render_cloud_event(raw, JSON_HEADERS)


@SAMPLES
def test_prefects_own_user_template_renderer_agrees(body: dict) -> None:
    """Open-source Prefect's sandbox for user templates (the closest public relative of Cloud's)."""
    from prefect.server.utilities.user_templates import render_user_template_sync

    raw = encode(body)
    text = render_user_template_sync(load_template(), cloud_context(raw, JSON_HEADERS))
    assert json.loads(text) == as_mapped(parse_body(raw))


@SAMPLES
def test_body_sent_as_text_plain_is_parsed_as_json_too(body: dict) -> None:
    raw = encode(body)
    assert render_cloud_event(raw, {"Content-Type": "text/plain"}) == as_mapped(parse_body(raw))


def test_samples_cover_the_vocabulary() -> None:
    flat = [_flatten(body) for _, body in SAMPLE_BODIES]
    event_types = {f["event_type"].strip().upper() for f in flat}
    assert set(EVENT_NAMES) <= event_types
    resources = [parse_body(encode(body)).resource for _, body in SAMPLE_BODIES]
    assert any("wandb.alias" in r for r in resources)
    assert any("wandb.tag" in r for r in resources)
    assert any("wandb.alias" in r and "wandb.tag" in r for r in resources)
    assert any(r.get("prefect.resource.id", "").startswith("wandb.artifact.") and "wandb.alias" not in r
               and "wandb.tag" not in r for r in resources)
    assert any("client_payload" in body for _, body in SAMPLE_BODIES)
    assert any(not r.get("wandb.version", "v0")[1:].isdigit() for r in resources)  # an alias as version
    texts = json.dumps([body for _, body in SAMPLE_BODIES], ensure_ascii=False)
    for needle in ('\\"', "\\\\", "é", "日本語", "🚀", "\\n", "</script>"):
        assert needle in texts
    ids = [i for i, _ in SAMPLE_BODIES]
    assert len(ids) == len(set(ids))


def test_quotes_and_backslashes_survive() -> None:
    body = dict(SAMPLE_BODIES)["quotes-backslashes"]
    rendered = render_cloud_event(encode(body), JSON_HEADERS)
    assert rendered["resource"]["wandb.alias"] == 'prod"uction\\'
    assert rendered["resource"]["wandb.collection"] == 'model "quoted" \\ back\\slash'
    assert rendered["payload"]["event_author"] == "O'Brien \\\\server\\share"


def test_every_mapped_event_type_renders_its_event_name() -> None:
    for event_type, name in EVENT_NAMES.items():
        body = {"event_type": event_type, "artifact_version_string": "e/p/c:v1"}
        assert render_cloud_event(encode(body), JSON_HEADERS)["event"] == name


# --------------------------------------------------------------------------- rejected deliveries


@INVALID
def test_rejected_deliveries_render_no_event(body: Any, field: str | None) -> None:
    """Where the receiver answers 400/422, the template renders `{"error", "field"}`: valid JSON
    but no Prefect event, so Cloud answers 400 and records `prefect-cloud.webhook.failed`."""
    raw = encode(body)
    with pytest.raises(DeliveryError) as rejected:
        parse_body(raw)
    assert rejected.value.field == field

    rendered = render_cloud_event(raw, JSON_HEADERS)
    assert set(rendered) == {"error", "field"}
    assert rendered["field"] == field
    assert rendered["error"]
    with pytest.raises(ValueError):
        Event.model_validate(rendered)


@INVALID
def test_rejected_deliveries_do_not_depend_on_undefined(body: Any, field: str | None) -> None:
    raw = encode(body)
    assert render_cloud_event(raw, JSON_HEADERS, environment=STRICT) == render_cloud_event(raw, JSON_HEADERS)


def test_unknown_event_type_is_not_a_mapped_event() -> None:
    raw = encode({"event_type": "DELETE_ARTIFACT", "artifact_version_string": "e/p/c:v1"})
    rendered = render_cloud_event(raw, JSON_HEADERS)
    assert "event" not in rendered and "resource" not in rendered
    assert rendered["field"] == "event_type"
    assert "DELETE_ARTIFACT" in rendered["error"]


def test_form_encoded_body_is_accepted_by_cloud_unlike_the_receiver() -> None:
    """Documented difference: Cloud parses form bodies into a flat mapping (W&B never sends one)."""
    raw = b"event_type=CREATE_ARTIFACT&artifact_version_string=e/p/c:v1"
    rendered = render_cloud_event(raw, {"Content-Type": "application/x-www-form-urlencoded"})
    assert rendered["event"] == "wandb.artifact.created"
    assert rendered["resource"]["prefect.resource.id"] == "wandb.artifact.e/p/c:v1"
    with pytest.raises(DeliveryError):
        parse_body(raw)


# --------------------------------------------------------------------------- the template itself


def test_template_passes_prefects_user_template_validation() -> None:
    """Loop limits of open-source Prefect's user templates (at most 10 loops, nested 2 deep)."""
    from prefect.server.utilities.user_templates import validate_user_template

    validate_user_template(load_template())


def test_template_file_and_context() -> None:
    assert TEMPLATE_PATH.name == "cloud_webhook_template.json.j2" and TEMPLATE_PATH.is_file()
    context = cloud_context(b"{}", {"Authorization": "Bearer pnu_secret", "X-Wandb-Signature": "abc"})
    assert "authorization" not in context["headers"]
    assert context["headers"]["x-wandb-signature"] == context["headers"]["X-WANDB-SIGNATURE"] == "abc"
    assert context["method"] == "POST" and context["body"] == {}


def test_every_interpolation_is_json_encoded() -> None:
    """`{{ ... }}` always ends in `| tojson`, the guarantee that rendered text stays valid JSON."""
    import re

    expressions = re.findall(r"\{\{(.*?)\}\}", load_template(), flags=re.S)
    assert expressions
    assert all(expr.strip().endswith("| tojson") for expr in expressions), expressions


def test_rendered_text_is_pretty_json() -> None:
    body = dict(SAMPLE_BODIES)["alias-and-tag"]
    text = render_cloud_text(encode(body), JSON_HEADERS)
    assert text.startswith("{\n") and text.endswith("}")
    json.loads(text)

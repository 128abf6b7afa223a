"""The Prefect Cloud webhook path: render `cloud_webhook_template.json.j2` as Prefect Cloud would.

Prefect Cloud's webhooks (`https://api.prefect.cloud/hooks/<slug>`) turn each HTTP request into a
Prefect event by rendering the webhook's Jinja2 template and parsing the result as JSON. The
renderer is closed source; what is documented (docs.prefect.io, "Webhooks", v3/concepts/webhooks):

* context: `method` (upper-cased HTTP method), `headers` (case-insensitive mapping, the
  `Authorization` header removed) and `body` (parsed as JSON for `application/json`, into a flat
  mapping for `application/x-www-form-urlencoded`, otherwise JSON if it parses, else the text);
* all built-in Jinja2 blocks, tests and filters (so `tojson`, which is built in), plus the filters of
  `jinja2-humanize-extension`, plus Cloud's own `from_cloud_event(headers)`. No `from_json` filter is
  documented, and none is needed: the body arrives parsed;
* the rendered text must be a JSON object with at least `event` and `resource["prefect.resource.id"]`.

`cloud_environment()` mirrors that with what open-source Prefect uses for user templates
(`prefect/server/utilities/user_templates.py`: an `ImmutableSandboxedEnvironment` with
`ChainableUndefined` and the humanize extension) — assumed to be no more permissive than Cloud's.
The template needs nothing beyond built-in Jinja2 (no Cloud-only filter), so no filter is registered
here; the tests also render it with `StrictUndefined` and with autoescape on, so it does not
depend on either choice.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from jinja2 import ChainableUndefined, Environment, Template, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

TEMPLATE_PATH = Path(__file__).with_name("cloud_webhook_template.json.j2")

_HUMANIZE = "jinja2_humanize_extension.HumanizeExtension"


class CaseInsensitiveHeaders(Mapping[str, str]):
    """Read-only headers looked up in any case, as Cloud's `headers` template variable."""

    def __init__(self, headers: Mapping[str, str] | None = None) -> None:
        self._items = {k.lower(): (k, v) for k, v in (headers or {}).items()}

    def __getitem__(self, key: str) -> str:
        return self._items[key.lower()][1]

    def __iter__(self) -> Iterator[str]:
        return (original for original, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._items


def cloud_environment(
    *, undefined: type[Undefined] = ChainableUndefined, autoescape: bool = False
) -> Environment:
    """A Jinja environment equivalent to Prefect Cloud's for what the template uses."""
    extensions: list[str] = []
    try:
        import jinja2_humanize_extension  # noqa: F401  (installed with prefect)

        extensions.append(_HUMANIZE)
    except ImportError:  # pragma: no cover - the template does not use it
        pass
    return ImmutableSandboxedEnvironment(
        undefined=undefined, autoescape=autoescape, extensions=extensions
    )


def load_template() -> str:
    return TEMPLATE_PATH.read_text(encoding="utf-8")


@functools.lru_cache(maxsize=16)
def _compiled(environment: Environment) -> Template:
    return environment.from_string(load_template())


@functools.lru_cache(maxsize=1)
def _default_environment() -> Environment:
    return cloud_environment()


def cloud_body(body: bytes, headers: Mapping[str, str] | None = None) -> Any:
    """The `body` template variable: Cloud's documented best-effort parsing of the request body."""
    media = CaseInsensitiveHeaders(headers).get("content-type", "").split(";", 1)[0].strip().lower()
    text = body.decode("utf-8", errors="replace")
    if media == "application/x-www-form-urlencoded":
        return dict(parse_qsl(text, keep_blank_values=True))
    try:
        return json.loads(text)
    except ValueError:
        return text


def cloud_context(body: bytes, headers: Mapping[str, str] | None = None, method: str = "POST") -> dict[str, Any]:
    """The template context Cloud documents: `method`, `headers` (no Authorization) and `body`."""
    visible = {k: v for k, v in (headers or {}).items() if k.lower() != "authorization"}
    return {
        "method": method.upper(),
        "headers": CaseInsensitiveHeaders(visible),
        "body": cloud_body(body, headers),
    }


def render_cloud_text(
    body: bytes,
    headers: Mapping[str, str] | None = None,
    *,
    method: str = "POST",
    environment: Environment | None = None,
) -> str:
    """The template's rendered text for one request (what Cloud then parses as JSON)."""
    if headers is None:
        headers = {"Content-Type": "application/json"}
    template = _compiled(environment or _default_environment())
    return template.render(cloud_context(body, headers, method))


def render_cloud_event(
    body: bytes,
    headers: Mapping[str, str] | None = None,
    *,
    method: str = "POST",
    environment: Environment | None = None,
) -> dict[str, Any]:
    """Render the template for one request and parse it, as Prefect Cloud does.

    A delivery the receiver accepts gives `{"event", "resource", "payload"}` equal to
    `deployments.wandb_events.parse_body(body)`; one it rejects gives `{"error", "field"}`, which is
    not a Prefect event, so Cloud answers 400 and records `prefect-cloud.webhook.failed`.
    `headers` defaults to `Content-Type: application/json`, what W&B sends.
    """
    return json.loads(render_cloud_text(body, headers, method=method, environment=environment))

"""Rendering the promotion review issue: pure functions, no Prefect and no I/O.

The template is a GitHub issue template (the convention of the W&B recipe's PROMOTION_TEMPLATE.md):
YAML front matter with `title`, `labels`, `assignees`, then a Markdown body. The whole file is a
Jinja template over the promotion's fields. A hidden marker naming the artifact version is added to
the body so a rerun or a duplicate event finds the issue instead of opening a second one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import quote

import yaml
from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

DEFAULT_PROJECT = "wandb-registry-model"
DEFAULT_WANDB_URL = "https://wandb.ai"
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


class TemplateProblem(ValueError):
    """The issue template cannot be rendered or its front matter is wrong."""


@dataclass(frozen=True)
class Promotion:
    """An artifact version that received an alias."""

    entity: str
    collection: str
    version: str
    project: str = DEFAULT_PROJECT
    alias: str = "production"
    author: str | None = None
    version_string: str | None = None
    artifact_id: str | None = None
    artifact_type: str = "model"
    metadata: Mapping[str, Any] = field(default_factory=dict)
    wandb_url: str = DEFAULT_WANDB_URL

    def __post_init__(self) -> None:
        for name in ("entity", "project", "collection", "version"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{name} is required (got {value!r})")
            if not _NAME.match(value):
                raise ValueError(f"{name} {value!r} may only contain letters, digits, '-', '_' and '.'")
        if not self.version_string:
            object.__setattr__(self, "version_string", f"{self.entity}/{self.project}/{self.collection}:{self.version}")

    @property
    def resource_id(self) -> str:
        return f"wandb.artifact.{self.entity}/{self.project}/{self.collection}:{self.version}"

    @property
    def artifact_url(self) -> str:
        base = self.wandb_url.rstrip("/")
        parts = [self.entity, self.project, "artifacts", self.artifact_type, self.collection, self.version]
        return base + "/" + "/".join(quote(p, safe="") for p in parts)

    def context(self) -> dict[str, Any]:
        return {
            "entity": self.entity,
            "project": self.project,
            "collection": self.collection,
            "version": self.version,
            "version_string": self.version_string,
            "alias": self.alias,
            "author": self.author,
            "artifact_id": self.artifact_id,
            "artifact_type": self.artifact_type,
            "artifact_url": self.artifact_url,
            "metadata": dict(self.metadata or {}),
            "resource_id": self.resource_id,
        }


@dataclass(frozen=True)
class RenderedIssue:
    title: str
    body: str
    labels: tuple[str, ...]
    assignees: tuple[str, ...]
    marker: str


def issue_marker(promotion: Promotion) -> str:
    """The hidden line that identifies the review issue of one artifact version."""
    return f"<!-- modelops:review-issue {promotion.resource_id} -->"


def _split_front_matter(text: str) -> tuple[str, str]:
    if not text.startswith("---"):
        raise TemplateProblem("the template must start with YAML front matter ('---' ... '---')")
    match = re.match(r"^---[ \t]*\r?\n(?:(.*?)\r?\n)?---[ \t]*(?:\r?\n|$)(.*)$", text, re.S)
    if not match:
        raise TemplateProblem("the template's front matter is not closed by a '---' line")
    return match.group(1) or "", match.group(2)


def _names(value: Any, key: str) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, list):
        items = value
    else:
        raise TemplateProblem(f"front matter '{key}' must be a list or a comma-separated string")
    out: list[str] = []
    for item in items:
        if not isinstance(item, (str, int)):
            raise TemplateProblem(f"front matter '{key}' has a non-text entry {item!r}")
        name = str(item).strip()
        if name and name not in out:
            out.append(name)
    return tuple(out)


_env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


def _render(text: str, context: dict[str, Any], where: str) -> str:
    try:
        return _env.from_string(text).render(context)
    except TemplateError as exc:
        raise TemplateProblem(f"the issue template's {where} does not render: {exc}") from exc


def render_issue(template_text: str, promotion: Promotion) -> RenderedIssue:
    """Render the template for a promotion; errors name what is wrong in the template.

    The front matter is parsed as YAML *before* any value is substituted, and each of its strings
    is rendered on its own: values from the event (an alias, an author) can never change its shape.
    """
    front, body = _split_front_matter(template_text)
    try:
        meta = yaml.safe_load(front) or {}
    except yaml.YAMLError as exc:
        raise TemplateProblem(
            f"the template's front matter is not valid YAML (quote values that start with '{{{{'): {exc}"
        ) from exc
    if not isinstance(meta, dict):
        raise TemplateProblem("the template's front matter must be a mapping")
    context = promotion.context()
    title = _render(str(meta.get("title") or ""), context, "title").strip()
    if not title:
        raise TemplateProblem("the template's front matter has no 'title'")
    labels = tuple(dict.fromkeys(x for x in (_render(n, context, "labels").strip()
                                             for n in _names(meta.get("labels"), "labels")) if x))
    assignees = tuple(dict.fromkeys(x for x in (_render(n, context, "assignees").strip()
                                                for n in _names(meta.get("assignees"), "assignees")) if x))
    marker = issue_marker(promotion)
    return RenderedIssue(
        title=" ".join(title.split())[:256],
        body=_render(body, context, "body").strip() + "\n\n" + marker + "\n",
        labels=labels,
        assignees=assignees,
        marker=marker,
    )

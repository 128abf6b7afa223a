"""review-issue: a model version got the `production` alias -> one review issue on GitHub.

Triggered by `wandb.artifact.alias-added` (see prefect.yaml); also runs ad hoc:

    python -m flows.review_issue --entity acme --collection churn --version v3

Without a GitHub block or GITHUB_TOKEN/GITHUB_REPOSITORY the issue goes to the local issue store,
and in every case the rendered issue and its link are published as a Prefect markdown artifact.
"""


import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from blocks.github import IssueRef, retry_if_transient
from flows.review_render import DEFAULT_PROJECT, Promotion, RenderedIssue, render_issue

TEMPLATE = Path(__file__).resolve().parents[1] / "templates" / "promotion_issue.md"
RETRY_DELAYS = [1, 3, 10, 30]


# ------------------------------------------------------------------------------------ I/O tasks


def resolve_issue_backend(github_block: str | None) -> Any:
    """A named GitHubRepository block, else GITHUB_* variables, else the local issue store."""
    from blocks.github import GitHubRepository

    if github_block:
        return GitHubRepository.load(github_block)
    from_env = GitHubRepository.from_env()
    if from_env is not None:
        return from_env
    from blocks.local import LocalIssueStore

    return LocalIssueStore()


@task(
    name="open-review-issue",
    retries=len(RETRY_DELAYS),
    retry_delay_seconds=RETRY_DELAYS,
    retry_condition_fn=retry_if_transient,
    cache_policy=NO_CACHE,
)
def open_review_issue(backend: Any, issue: RenderedIssue) -> IssueRef:
    """Find the issue by its marker or open it; only transient GitHub errors are retried."""
    ref = backend.open_issue(
        title=issue.title,
        body=issue.body,
        labels=list(issue.labels),
        assignees=list(issue.assignees),
        marker=issue.marker,
    )
    logger = get_run_logger()
    logger.info("%s review issue #%d: %s", "opened" if ref.created else "found existing", ref.number, ref.url)
    return ref


def _artifact_key(promotion: Promotion) -> str:
    raw = f"review-{promotion.collection}-{promotion.version}".lower()
    return re.sub(r"[^a-z0-9-]+", "-", raw).strip("-")[:100]


def publish_artifact(promotion: Promotion, issue: RenderedIssue, ref: IssueRef, backend_kind: str) -> None:
    header = (
        f"### Review issue [#{ref.number}]({ref.url}) for `{promotion.collection}:{promotion.version}`\n\n"
        f"Backend: **{backend_kind}** · {'opened now' if ref.created else 'already open'} · "
        f"alias `{promotion.alias}`\n\n"
    )
    markdown = header
    if backend_kind == "local":
        markdown += f"---\n\n# {issue.title}\n\n{issue.body}"
    create_markdown_artifact(
        key=_artifact_key(promotion),
        markdown=markdown,
        description=f"Review issue for {promotion.version_string}",
    )


def emit_review_opened(promotion: Promotion, ref: IssueRef, backend_kind: str, trigger_event: str | None) -> None:
    related = []
    if trigger_event:
        related.append({"prefect.resource.id": f"prefect.event.{trigger_event}",
                        "prefect.resource.role": "trigger-event"})
    emit_event(
        event="modelops.review.opened",
        resource={
            "prefect.resource.id": promotion.resource_id,
            "prefect.resource.name": f"{promotion.collection}:{promotion.version}",
            "wandb.entity": promotion.entity,
            "wandb.project": promotion.project,
            "wandb.collection": promotion.collection,
            "wandb.version": promotion.version,
            "wandb.alias": promotion.alias,
        },
        payload={
            "issue_number": ref.number,
            "issue_url": ref.url,
            "created": ref.created,
            "backend": backend_kind,
            "version_string": promotion.version_string,
        },
        related=related or None,
    )


def _metadata(value: Any) -> dict[str, Any]:
    """W&B substitutes `${artifact_metadata...}` as text or JSON: accept a dict or a JSON object string."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            parsed = json.loads(value)
        except ValueError:
            return {"metadata": value}
        return parsed if isinstance(parsed, dict) else {}
    return {"metadata": value} if value not in (None, "") else {}


# ------------------------------------------------------------------------------------ the flow


@flow(name="review-issue", flow_run_name="review-{collection}-{version}", log_prints=True)
def review_issue(
    entity: str,
    collection: str,
    version: str,
    project: str = DEFAULT_PROJECT,
    version_string: str | None = None,
    alias: str = "production",
    author: str | None = None,
    artifact_id: str | None = None,
    metadata: dict[str, Any] | str | None = None,
    github_block: str | None = None,
    template: str | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """Render the promotion template and open (or find) the review issue for one model version."""
    logger = get_run_logger()
    logger.info("review-issue for %s/%s/%s:%s (alias %s)", entity, project, collection, version, alias)

    promotion = Promotion(
        entity=entity, project=project, collection=collection, version=version, alias=alias or "production",
        author=author or None, version_string=version_string or None, artifact_id=artifact_id or None,
        metadata=_metadata(metadata),
        wandb_url=os.environ.get("WANDB_BASE_URL", "https://wandb.ai"),
    )
    issue = render_issue(Path(template or TEMPLATE).read_text(), promotion)
    backend = resolve_issue_backend(github_block or os.environ.get("MODELOPS_GITHUB_BLOCK"))
    backend_kind = "github" if type(backend).__name__ == "GitHubRepository" else "local"

    ref = open_review_issue(backend, issue)
    publish_artifact(promotion, issue, ref, backend_kind)
    emit_review_opened(promotion, ref, backend_kind, event_id)
    return {"issue_number": ref.number, "issue_url": ref.url, "created": ref.created, "backend": backend_kind}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flows.review_issue", description=review_issue.__doc__)
    p.add_argument("--entity", required=True)
    p.add_argument("--project", default=DEFAULT_PROJECT)
    p.add_argument("--collection", required=True)
    p.add_argument("--version", required=True, help="artifact version, e.g. v3")
    p.add_argument("--alias", default="production")
    p.add_argument("--author")
    p.add_argument("--version-string", help="entity/project/collection:version as W&B sends it")
    p.add_argument("--github-block", help="name of a saved GitHubRepository block")
    p.add_argument("--template", help=f"issue template (default {TEMPLATE})")
    args = p.parse_args(argv)
    from flows._cli import prepare_prefect_env

    prepare_prefect_env()
    try:
        result = review_issue(
            entity=args.entity, project=args.project, collection=args.collection, version=args.version,
            alias=args.alias, author=args.author, version_string=args.version_string,
            github_block=args.github_block, template=args.template,
        )
    except Exception as exc:  # the CLI reports, the flow run keeps the traceback
        print(f"review-issue failed: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""review-issue: a model version got the `production` alias -> one review issue on GitHub.

Triggered by `wandb.artifact.alias-added` (see prefect.yaml); also runs ad hoc:

    python -m flows.review_issue --entity acme --collection churn --version v3

Without a GitHub block or GITHUB_TOKEN/GITHUB_REPOSITORY the issue goes to the local issue store,
and in every case the rendered issue and its link are published as a Prefect markdown artifact.

One issue per promotion, even when two runs for it overlap (a rerun from the UI while the triggered
run is still going, a redelivery outside the receiver's dedupe window): the find-or-create runs
under a Prefect global concurrency limit of one slot named after the promotion's marker, so the
second run waits and then finds the first one's issue. Should the lock be unavailable, the GitHub
block's check after creating closes a racing duplicate. GitHub errors are retried inside the task:
5xx and network errors after MODELOPS_GITHUB_RETRY_DELAYS (default 1, 3, 10, 30 s), rate limits as
long as GitHub's Retry-After / x-ratelimit-reset asks (at most 5 minutes per wait).
"""


import argparse
import hashlib
import json
import os
import re
import sys
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from blocks.github import MAX_RETRY_WAIT, IssueRef, call_with_retries, retry_delays_from_env
from flows.review_render import DEFAULT_PROJECT, Promotion, RenderedIssue, render_issue

TEMPLATE = Path(__file__).resolve().parents[1] / "templates" / "promotion_issue.md"
# The promotion lock's lease: a crashed holder blocks its promotion this long (60 s is Prefect's minimum)
# plus one pass of the server's lease repossessor; a live holder renews it every 45 s.
LOCK_LEASE_SECONDS = 60.0
# Longest wait for the promotion lock (past a crashed holder's lease); then go on without it.
LOCK_TIMEOUT_SECONDS = 180.0


# ------------------------------------------------------------------------------------ I/O tasks


def resolve_issue_backend(github_block: str | None) -> Any:
    """A named GitHubRepository block, else GITHUB_* variables, else the local issue store."""
    from blocks.github import GitHubRepository

    if github_block:
        from blocks.local import LocalIssueStore

        kinds = {"github-repository": GitHubRepository, "local-issue-store": LocalIssueStore}
        slug, _, bare = github_block.rpartition("/")
        if slug and slug not in kinds:
            raise ValueError(f"github_block {github_block!r}: the block type must be one of {', '.join(kinds)}")
        kind = kinds.get(slug, GitHubRepository)
        try:
            return kind.load(bare)
        except ValueError:
            raise ValueError(
                f"no saved {kind.get_block_type_slug()} block named {bare!r} (github_block / MODELOPS_GITHUB_BLOCK); "
                "create it with `python -m blocks.setup` or in the UI under Blocks") from None
    from_env = GitHubRepository.from_env()
    if from_env is not None:
        return from_env
    from blocks.local import LocalIssueStore

    return LocalIssueStore()


def promotion_lock_name(marker: str) -> str:
    """The global concurrency limit serializing the runs of one promotion (names allow no '/')."""
    return "modelops-review-issue-" + hashlib.sha256(marker.encode()).hexdigest()[:16]


@contextmanager
def promotion_lock(marker: str, *, timeout: float = LOCK_TIMEOUT_SECONDS) -> Iterator[bool]:
    """Hold the promotion's one-slot Prefect global concurrency limit; yields whether it is held.

    Prefect creates no limit on first use (a missing one is skipped, or refused with `strict`), so
    the limit is created here with one slot. After a successful body it is deleted again, so limits
    do not pile up in the UI: once the issue exists a run finds it, lock or not, and a run still
    waiting for the deleted limit goes on without it. Without the lock (server refusal, timeout) the
    body still runs: the GitHub block's check after creating closes a racing duplicate.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.client.schemas.objects import ConcurrencyLeaseHolder
    from prefect.concurrency.sync import concurrency
    from prefect.context import TaskRunContext
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    logger = get_run_logger()
    name = promotion_lock_name(marker)
    # the UI's concurrency limit page then shows which task run holds the promotion
    task_run = TaskRunContext.get()
    holder = ConcurrencyLeaseHolder(type="task_run", id=task_run.task_run.id) if task_run else None
    held = False
    with ExitStack() as stack:
        try:
            with get_client(sync_client=True) as client:
                try:
                    client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
                except ObjectAlreadyExists:
                    pass
            stack.enter_context(concurrency(
                name, timeout_seconds=timeout, lease_duration=LOCK_LEASE_SECONDS, strict=True, holder=holder,
                raise_on_lease_renewal_failure=False,
            ))
            held = True
        except TimeoutError:
            logger.warning("promotion lock %s still taken after %.0fs: going on without it", name, timeout)
        except Exception as exc:
            if exc.__cause__ is None and "must be created" in str(exc):
                logger.info("promotion lock %s is gone: a run for this promotion finished and deleted it, "
                            "so its issue exists; going on without the lock", name)
            else:  # the server refused: the GitHub block's check after creating still closes a duplicate
                logger.warning("promotion lock %s not taken (%s): going on without it", name, exc)
        yield held
    if held:
        try:
            with get_client(sync_client=True) as client:
                client.delete_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            pass
        except Exception as exc:  # a leftover limit costs nothing but a row in the UI
            logger.warning("could not delete the promotion lock %s: %s", name, exc)


@task(name="open-review-issue", cache_policy=NO_CACHE)
def open_review_issue(backend: Any, issue: RenderedIssue) -> IssueRef:
    """Find the issue by its marker or open it, under the promotion's lock.

    Transient GitHub errors are retried here rather than by Prefect's task retries, whose delays
    are fixed: a rate limit waits as long as GitHub's headers ask (capped, and logged).
    """
    logger = get_run_logger()

    def attempt() -> IssueRef:
        with promotion_lock(issue.marker):
            return backend.open_issue(
                title=issue.title,
                body=issue.body,
                labels=list(issue.labels),
                assignees=list(issue.assignees),
                marker=issue.marker,
            )

    ref = call_with_retries(attempt, delays=retry_delays_from_env(), max_wait=MAX_RETRY_WAIT, log=logger.warning)
    logger.info("%s review issue #%d: %s", "opened" if ref.created else "found existing", ref.number, ref.url)
    if ref.closed_duplicates:
        logger.warning("closed %s as duplicate(s) of #%d: opened by runs for the same promotion at the same time",
                       ", ".join(f"#{n}" for n in ref.closed_duplicates), ref.number)
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
    from blocks.github import GitHubConfigError

    try:
        result = review_issue(
            entity=args.entity, project=args.project, collection=args.collection, version=args.version,
            alias=args.alias, author=args.author, version_string=args.version_string,
            github_block=args.github_block, template=args.template,
        )
    except (FileNotFoundError, ValueError, GitHubConfigError) as exc:  # a template, block, repo or token to fix
        print(f"review-issue failed: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except Exception as exc:  # the CLI reports, the flow run keeps the traceback
        print(f"review-issue failed: {' '.join(str(exc).split()) or type(exc).__name__}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""GitHub repository block: finds or opens issues through PyGithub, idempotently.

PyGithub is imported inside the methods that talk to GitHub, so importing this module stays cheap.
PyGithub's own retry is switched off (its default retries POSTs on 5xx and duplicates creates);
callers retry `TransientGitHubError` themselves (`call_with_retries` waits as long as a rate limit's
Retry-After or x-ratelimit-reset asks), and `open_issue` checks for the earlier write first.

Find-then-create is not atomic on GitHub: two runs for one promotion can both find nothing and both
create. `open_issue` therefore checks again after creating: of the issues carrying the marker the
lowest number wins, and the others are closed as duplicates of it (a "Duplicate of #N" comment, the
marker taken out of their body), so every racer returns the same issue.
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

from blocks._urls import http_url

if TYPE_CHECKING:
    from github import Github
    from github.GithubException import GithubException
    from github.Issue import Issue
    from github.Repository import Repository

__all__ = [
    "DEFAULT_RETRY_DELAYS",
    "MAX_RETRY_WAIT",
    "CommentRef",
    "GitHubConfigError",
    "GitHubRepository",
    "IssueRef",
    "TransientGitHubError",
    "call_with_retries",
    "is_transient",
    "retry_delays_from_env",
    "retry_if_transient",
    "retry_wait",
]

TOKEN_SETTING = "the GitHubRepository block's token or GITHUB_TOKEN"
_REPOSITORY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+$")
_PER_PAGE = 100
# Seconds between attempts at a transient failure (5xx, network); a rate limit waits what GitHub asks.
DEFAULT_RETRY_DELAYS: tuple[float, ...] = (1, 3, 10, 30)
# Longest wait for one rate limit, whatever GitHub asks (its primary limit resets within the hour).
MAX_RETRY_WAIT = 300.0
# GitHub: a secondary rate limit without retry-after or x-ratelimit-reset means "wait at least a minute".
_RATE_LIMIT_FLOOR = 60.0
_log = logging.getLogger(__name__)
T = TypeVar("T")


class TransientGitHubError(Exception):
    """GitHub could not answer now (5xx, network, rate limit); the same call may succeed later."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        rate_limited: bool = False,
    ):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after  # seconds GitHub asked to wait (Retry-After or x-ratelimit-reset)
        self.rate_limited = rate_limited


class GitHubConfigError(Exception):
    """GitHub refused the call; retrying will not help until the configuration changes."""

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


def is_transient(exc: object) -> bool:
    """True when `exc` is worth retrying (a `TransientGitHubError`)."""
    return isinstance(exc, TransientGitHubError)


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: retry the task only when it failed with a transient error."""
    return is_transient(getattr(state, "data", None))


def retry_wait(exc: TransientGitHubError, delay: float, max_wait: float = MAX_RETRY_WAIT) -> float:
    """Seconds to wait before retrying after `exc`: what GitHub asked for, else `delay`, at most `max_wait`.

    A rate limit without a wait in its headers waits at least a minute, as GitHub's docs ask.
    """
    if exc.retry_after is not None:
        wanted = max(exc.retry_after, 0.0)
    elif exc.rate_limited:
        wanted = max(delay, _RATE_LIMIT_FLOOR)
    else:
        wanted = delay
    return min(wanted, max_wait)


def retry_delays_from_env(
    environ: Mapping[str, str] = os.environ, default: Sequence[float] = DEFAULT_RETRY_DELAYS
) -> tuple[float, ...]:
    """MODELOPS_GITHUB_RETRY_DELAYS ("1,3,10,30": seconds before each retry), else `default`."""
    raw = environ.get("MODELOPS_GITHUB_RETRY_DELAYS", "").strip()
    if not raw:
        return tuple(default)
    try:
        delays = tuple(float(part) for part in raw.split(","))
    except ValueError:
        raise ValueError(f"MODELOPS_GITHUB_RETRY_DELAYS must be seconds separated by commas, got {raw!r}") from None
    if any(d < 0 or d != d for d in delays):
        raise ValueError(f"MODELOPS_GITHUB_RETRY_DELAYS must not be negative, got {raw!r}")
    return delays


def call_with_retries(
    call: Callable[[], T],
    *,
    delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
    max_wait: float = MAX_RETRY_WAIT,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] | None = None,
) -> T:
    """Call `call()`, retrying `TransientGitHubError` once per entry of `delays`.

    Each wait is `retry_wait(error, delays[i], max_wait)`: a rate limit waits as long as its
    Retry-After / x-ratelimit-reset asks (capped at `max_wait`, and said so in the log), anything
    else the fixed delay. Other exceptions, and the last transient one, propagate.
    """
    say = log or _log.warning
    attempts = len(delays) + 1
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except TransientGitHubError as exc:
            if attempt == attempts:
                raise
            fixed = float(delays[attempt - 1])
            wait = retry_wait(exc, fixed, max_wait)
            if exc.retry_after is not None and exc.retry_after > max_wait:
                why = f"GitHub asks for {_duration(exc.retry_after)}; capped at {_duration(max_wait)}"
            elif exc.retry_after is not None:
                why = "as GitHub's Retry-After/x-ratelimit-reset asks"
            elif exc.rate_limited:
                why = "rate limited without a retry-after header: GitHub asks for at least a minute"
            else:
                why = "fixed backoff"
            say(f"attempt {attempt}/{attempts} failed: {exc}; retrying in {_duration(wait)} ({why})")
            sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True)
class IssueRef:
    """An issue on GitHub; `created` is False when an earlier issue with the marker was found.

    `closed_duplicates` are the numbers of issues with the same marker closed as duplicates of it.
    """

    number: int
    url: str
    title: str
    created: bool
    closed_duplicates: tuple[int, ...] = ()


@dataclass(frozen=True)
class CommentRef:
    """A comment on an issue; `created` is False when an earlier comment with the marker was found."""

    id: int
    url: str
    created: bool


class GitHubRepository(Block):
    """A GitHub (or GitHub Enterprise) repository and a token allowed to open issues in it."""

    _block_type_name: ClassVar[str] = "GitHub Repository"
    _block_type_slug: ClassVar[str] = "github-repository"
    _description: ClassVar[str] = "A GitHub repository and a token to open and find issues in it."

    token: SecretStr = Field(min_length=1, description="Token with Issues read/write access to the repository.")
    repository: str = Field(description="Repository as 'owner/name'.", examples=["acme/models"])
    base_url: str = Field(
        default="https://api.github.com",
        description="REST API root, e.g. https://ghe.example.com/api/v3 for GitHub Enterprise.",
    )
    timeout: float = Field(
        default=15, gt=0, le=300, description="Seconds per HTTP request (rounded up to whole seconds)."
    )

    @field_validator("repository")
    @classmethod
    def _check_repository(cls, value: str) -> str:
        value = value.strip()
        if not _REPOSITORY.match(value) or value.split("/")[1] in (".", ".."):
            raise ValueError(f"repository must be 'owner/name' (like 'acme/models'), got {value!r}")
        return value

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        return http_url(value, "https://api.github.com")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> GitHubRepository | None:
        """Build from GITHUB_TOKEN, GITHUB_REPOSITORY and optional GITHUB_API_URL; None if neither is set."""
        token = environ.get("GITHUB_TOKEN", "").strip()
        repository = environ.get("GITHUB_REPOSITORY", "").strip()
        if not token and not repository:
            return None
        if not token:
            raise ValueError("GITHUB_REPOSITORY is set but GITHUB_TOKEN is not: set both or neither")
        if not repository:
            raise ValueError("GITHUB_TOKEN is set but GITHUB_REPOSITORY is not: set both or neither")
        fields: dict[str, Any] = {"token": SecretStr(token), "repository": repository}
        api_url = environ.get("GITHUB_API_URL", "").strip()
        if api_url:
            fields["base_url"] = api_url
        return cls(**fields)

    def get_client(self, *, lazy: bool = False) -> Github:
        """A PyGithub client for `base_url`, with PyGithub's own retries disabled.

        `lazy=True` builds objects such as the repository without a GET of their own.
        """
        import github

        return github.Github(
            base_url=self.base_url,
            auth=github.Auth.Token(self.token.get_secret_value()),
            timeout=math.ceil(self.timeout),  # PyGithub asserts an int
            retry=None,
            per_page=_PER_PAGE,
            lazy=lazy,
        )

    def find_issue(self, marker: str, labels: Sequence[str] = ()) -> IssueRef | None:
        """The issue (open or closed) whose body contains `marker`, or None; read only.

        Lists the repository's issues, newest first (filtered by the first label), rather than
        searching: GitHub's search index lags behind, a listing sees a new issue at once. Should
        racing runs have opened it twice, the lowest number is the one.
        """
        if not marker:
            raise ValueError("marker must not be empty")
        with self._translate_errors():
            found = self._matching_issues(self._get_repo(), marker, labels)
        return _ref(min(found, key=_number), created=False) if found else None

    def open_issue(
        self,
        title: str,
        body: str,
        labels: Sequence[str],
        assignees: Sequence[str],
        marker: str,
    ) -> IssueRef:
        """Return the issue carrying `marker`, creating it only if none exists yet.

        `body` must contain `marker`, so that a retry after a lost reply finds this issue. After a
        create the listing is read again: if a concurrent run opened one too, the lowest number is
        returned and this run's issue, if it lost, is closed as a duplicate.
        """
        if not marker or marker not in body:
            raise ValueError("body must contain the (non-empty) marker, or a retry could duplicate the issue")
        if isinstance(labels, str) or isinstance(assignees, str):
            raise TypeError("labels and assignees are lists of names, not a single string")
        with self._translate_errors():
            repo = self._get_repo()
            found = self._matching_issues(repo, marker, labels)
            if found:
                return self._settle(repo, found, marker, created=None)
            issue = repo.create_issue(title=title, body=body, labels=list(labels), assignees=list(assignees))
            # Another run may have found nothing at the same time and created its own: check again.
            again = self._matching_issues(repo, marker, labels)
            return self._settle(repo, [issue, *(i for i in again if i.number != issue.number)], marker, created=issue)

    def _settle(self, repo: Repository, found: list[Issue], marker: str, created: Issue | None) -> IssueRef:
        """The lowest-numbered issue of `found` is the review issue; close duplicates of it.

        Right after creating, a run closes only its own issue if it lost (each loser closes its own,
        so a duplicate is not closed and commented twice by two runs); a run that finds duplicates
        without creating closes them all (a racer that died before closing its own).
        """
        keep = min(found, key=_number)
        if created is not None:
            losers = [created] if created.number != keep.number else []
        else:
            losers = [issue for issue in found if issue.number != keep.number]
        for duplicate in sorted(losers, key=_number):
            self._close_duplicate(repo, duplicate, keep, marker)
        return _ref(keep, created=created is not None and created.number == keep.number,
                    closed=tuple(sorted(d.number for d in losers)))

    def _close_duplicate(self, repo: Repository, duplicate: Issue, keep: Issue, marker: str) -> None:
        """Comment "Duplicate of #N" (once), then close it and take the marker out of its body."""
        note_marker = f"<!-- modelops:duplicate-of #{keep.number} -->"
        _log.warning("issue #%d duplicates #%d (same marker, opened by a concurrent run): closing it",
                     duplicate.number, keep.number)
        issue = repo.get_issue(duplicate.number)
        if not any(note_marker in (c.body or "") for c in issue.get_comments()):
            issue.create_comment(
                f"Duplicate of #{keep.number}\n\nA concurrent run opened this review issue a second time; "
                f"the review continues in #{keep.number}.\n\n{note_marker}"
            )
        issue.edit(state="closed", state_reason="not_planned",
                   body=(duplicate.body or "").replace(marker, note_marker))

    def comment(self, issue_number: int, body: str, *, marker: str | None = None) -> CommentRef:
        """Comment on an issue; with `marker` (contained in `body`), an earlier comment carrying it is reused."""
        if marker is not None and (not marker or marker not in body):
            raise ValueError("body must contain the (non-empty) marker")
        with self._translate_errors():
            repo = self._get_repo()
        missing = f"issue #{issue_number} was not found in {self.repository!r} at {self.base_url}"
        with self._translate_errors(not_found=missing):
            issue = repo.get_issue(issue_number)
            if marker is not None:
                for existing in issue.get_comments():
                    if marker in (existing.body or ""):
                        return CommentRef(id=existing.id, url=existing.html_url, created=False)
            new = issue.create_comment(body)
            return CommentRef(id=new.id, url=new.html_url, created=True)

    def mark_outcome(self, issue_number: int, labels: Sequence[str], *, close: bool = False,
                     remove: Sequence[str] = ()) -> list[str]:
        """Add `labels` to the issue (dropping `remove`), and close it as completed with `close`.
        Idempotent: labels it has are kept once, a closed issue stays closed. Returns its labels."""
        missing = f"issue #{issue_number} was not found in {self.repository!r} at {self.base_url}"
        with self._translate_errors(not_found=missing):
            issue = self._get_repo().get_issue(issue_number)
            have = [label.name for label in issue.labels]
            want = [n for n in dict.fromkeys([*have, *labels]) if n not in set(remove) - set(labels)]
            changes: dict[str, Any] = {}
            if want != have:
                changes["labels"] = want
            if close and issue.state != "closed":
                changes.update(state="closed", state_reason="completed")
            if changes:
                issue.edit(**changes)
            return want

    def _get_repo(self) -> Repository:
        # lazy: no GET /repos/{repo} of its own; a wrong name shows as a 404 on the first real call
        return self.get_client(lazy=True).get_repo(self.repository)

    @staticmethod
    def _matching_issues(repo: Repository, marker: str, labels: Sequence[str]) -> list[Issue]:
        """Issues carrying `marker`: the newest one and any others on the same page of the listing.

        Issues opened twice by racing runs are created seconds apart, so they share a page (100
        issues, newest first); the scan stops at the end of the first page holding a match.
        """
        query: dict[str, Any] = {"state": "all", "sort": "created", "direction": "desc"}
        if labels:
            query["labels"] = [labels[0]]
        found: list[Issue] = []
        for index, issue in enumerate(repo.get_issues(**query)):
            # The listing includes pull requests; `issue.pull_request` would cost a GET per item.
            if "/pull/" not in issue.html_url and marker in (issue.body or ""):
                found.append(issue)
            if found and (index + 1) % _PER_PAGE == 0:  # the page's last item: fetch no further page
                break
        return found

    @contextmanager
    def _translate_errors(self, not_found: str | None = None) -> Iterator[None]:
        """Turn PyGithub and requests exceptions into transient or configuration errors."""
        import requests
        from github import GithubException

        try:
            yield
        except GithubException as exc:
            if exc.status == 404 and not_found:
                raise GitHubConfigError(not_found, status=404) from exc
            raise self._classify(exc) from exc
        except requests.exceptions.SSLError as exc:
            raise GitHubConfigError(
                f"TLS (handshake or certificate check) failed for GitHub at {self.base_url}: check `base_url` (GITHUB_API_URL) "
                "and the server's certificate"
            ) from exc
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            raise TransientGitHubError(
                f"could not reach GitHub at {self.base_url}: {type(exc).__name__}"
            ) from exc

    def _classify(self, exc: GithubException) -> TransientGitHubError | GitHubConfigError:
        status: int = exc.status
        headers = {str(k).lower(): str(v) for k, v in (exc.headers or {}).items()}
        message = _github_message(exc.data) or exc.message or ""
        retry_after = _retry_after(headers)
        rate_limited = status == 429 or (
            status == 403
            and (
                "rate limit" in message.lower()
                or "retry-after" in headers
                or headers.get("x-ratelimit-remaining") == "0"
            )
        )
        if status >= 500 or rate_limited:
            kind = "rate limited" if rate_limited else "server error"
            wait = f"; retry after {_duration(retry_after)}" if retry_after is not None else ""
            return TransientGitHubError(
                f"GitHub {kind} ({status}) at {self.base_url}: {message or 'no message'}{wait}",
                status=status,
                retry_after=retry_after,
                rate_limited=rate_limited,
            )
        if status == 401:
            return GitHubConfigError(
                f"GitHub at {self.base_url} rejected the token ({status} {message or 'Unauthorized'}): "
                f"check {TOKEN_SETTING}",
                status=status,
            )
        if status == 404:
            return GitHubConfigError(
                f"repository {self.repository!r} was not found at {self.base_url}: check `repository` "
                "(GITHUB_REPOSITORY), `base_url` (GITHUB_API_URL), and that the token can access it",
                status=status,
            )
        return GitHubConfigError(
            f"GitHub refused the request ({status}) for {self.repository!r} at {self.base_url}: "
            f"{message or 'no message'}",
            status=status,
        )


def _github_message(data: Any) -> str:
    """GitHub's `message`, with the details of a 422's `errors` list appended."""
    if not isinstance(data, dict):
        return ""
    message = str(data.get("message") or "")
    details = []
    for error in data.get("errors") or []:
        if isinstance(error, dict):
            detail = error.get("message") or " ".join(
                f"{key}={error[key]}" for key in ("resource", "field", "code", "value") if key in error
            )
            details.append(str(detail))
        elif error:
            details.append(str(error))
    return f"{message} ({'; '.join(details)})" if details else message


def _duration(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.2g}s"


def _number(issue: Issue) -> int:
    return issue.number


def _ref(issue: Issue, *, created: bool, closed: tuple[int, ...] = ()) -> IssueRef:
    return IssueRef(number=issue.number, url=issue.html_url, title=issue.title, created=created,
                    closed_duplicates=closed)


def _retry_after(headers: Mapping[str, str], now: Callable[[], float] = time.time) -> float | None:
    """Seconds GitHub asks to wait: `retry-after` (seconds or an HTTP date), else, when the primary
    limit is used up (`x-ratelimit-remaining: 0`), until `x-ratelimit-reset` (epoch seconds) plus 1 s
    for clock skew. None when the headers ask for nothing."""
    value = headers.get("retry-after")
    if value is not None:
        seconds = _seconds(value)
        if seconds is None:
            try:
                seconds = parsedate_to_datetime(value).timestamp() - now()
            except (TypeError, ValueError):
                seconds = None
        if seconds is not None:
            return max(seconds, 0.0)
    if headers.get("x-ratelimit-remaining") == "0":
        reset = _seconds(headers.get("x-ratelimit-reset"))
        if reset is not None:
            return max(reset - now(), 0.0) + 1.0
    return None


def _seconds(value: str | None) -> float | None:
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is None or math.isfinite(seconds) else None

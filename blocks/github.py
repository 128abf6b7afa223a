"""GitHub repository block: finds or opens issues through PyGithub, idempotently.

PyGithub is imported inside the methods that talk to GitHub, so importing this module stays cheap.
PyGithub's own retry is switched off (its default retries POSTs on 5xx and duplicates creates);
callers retry `TransientGitHubError` themselves, and `open_issue` checks for the earlier write first.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

from blocks._urls import http_url

if TYPE_CHECKING:
    from github import Github
    from github.GithubException import GithubException
    from github.Repository import Repository

__all__ = [
    "CommentRef",
    "GitHubConfigError",
    "GitHubRepository",
    "IssueRef",
    "TransientGitHubError",
    "is_transient",
    "retry_if_transient",
]

TOKEN_SETTING = "the GitHubRepository block's token or GITHUB_TOKEN"
_REPOSITORY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+$")
_PER_PAGE = 100


class TransientGitHubError(Exception):
    """GitHub could not answer now (5xx, network, rate limit); the same call may succeed later."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


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


@dataclass(frozen=True)
class IssueRef:
    """An issue on GitHub; `created` is False when an earlier issue with the marker was found."""

    number: int
    url: str
    title: str
    created: bool


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

    def get_client(self) -> Github:
        """A PyGithub client for `base_url`, with PyGithub's own retries disabled."""
        import github

        return github.Github(
            base_url=self.base_url,
            auth=github.Auth.Token(self.token.get_secret_value()),
            timeout=math.ceil(self.timeout),  # PyGithub asserts an int
            retry=None,
            per_page=_PER_PAGE,
        )

    def find_issue(self, marker: str, labels: Sequence[str] = ()) -> IssueRef | None:
        """The newest issue (open or closed) whose body contains `marker`, or None.

        Lists the repository's issues (filtered by the first label) rather than searching:
        GitHub's search index lags behind, a listing sees a new issue at once.
        """
        if not marker:
            raise ValueError("marker must not be empty")
        with self._translate_errors():
            return self._find_issue(self._get_repo(), marker, labels)

    def open_issue(
        self,
        title: str,
        body: str,
        labels: Sequence[str],
        assignees: Sequence[str],
        marker: str,
    ) -> IssueRef:
        """Return the issue carrying `marker`, creating it only if none exists yet.

        `body` must contain `marker`, so that a retry after a lost reply finds this issue.
        """
        if not marker or marker not in body:
            raise ValueError("body must contain the (non-empty) marker, or a retry could duplicate the issue")
        if isinstance(labels, str) or isinstance(assignees, str):
            raise TypeError("labels and assignees are lists of names, not a single string")
        with self._translate_errors():
            repo = self._get_repo()
            found = self._find_issue(repo, marker, labels)
            if found is not None:
                return found
            issue = repo.create_issue(title=title, body=body, labels=list(labels), assignees=list(assignees))
            return IssueRef(number=issue.number, url=issue.html_url, title=issue.title, created=True)

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

    def _get_repo(self) -> Repository:
        return self.get_client().get_repo(self.repository)

    @staticmethod
    def _find_issue(repo: Repository, marker: str, labels: Sequence[str]) -> IssueRef | None:
        query: dict[str, Any] = {"state": "all", "sort": "created", "direction": "desc"}
        if labels:
            query["labels"] = [labels[0]]
        for issue in repo.get_issues(**query):
            # The listing includes pull requests; `issue.pull_request` would cost a GET per item.
            if "/pull/" not in issue.html_url and marker in (issue.body or ""):
                return IssueRef(number=issue.number, url=issue.html_url, title=issue.title, created=False)
        return None

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
        retry_after = _seconds(headers.get("retry-after"))
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
            wait = f"; retry after {retry_after:g}s" if retry_after is not None else ""
            return TransientGitHubError(
                f"GitHub {kind} ({status}) at {self.base_url}: {message or 'no message'}{wait}",
                status=status,
                retry_after=retry_after,
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


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None

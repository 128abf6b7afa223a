"""A local GitHub REST server for tests: the endpoints PyGithub uses to find, open and comment on issues.

Real HTTP on 127.0.0.1 (free port), so the real PyGithub client runs end to end:

    with FakeGitHub(token="t0ken", repositories=["acme/models"]) as fake:
        Github(base_url=fake.base_url, auth=Auth.Token("t0ken")).get_repo("acme/models")

Faults are injected per request with `fail_next`; `land=True` performs the write before answering
with the error (the create landed on GitHub, the reply was lost). `chaos` injects seeded random
faults (5xx landed or not, 403 secondary rate limits, 429) on a share of requests; `stall` delays
replies computed already (a slow network between a search and a create, for races).
`timeline` records (monotonic time, method, path, status) of every reply.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from tests.fakes._http import LoopbackServer, Reply

SECONDARY_RATE_LIMIT = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. "
    "If you reach out to GitHub Support for help, please include the request ID ABCD:1234."
)
PRIMARY_RATE_LIMIT = "API rate limit exceeded for user ID 1."
DOCS = "https://docs.github.com/rest"
_EPOCH = datetime(2025, 1, 1, tzinfo=timezone.utc)


@dataclass
class _Fault:
    method: str
    path_suffix: str
    status: int
    land: bool
    headers: dict[str, str]
    body: Any
    times: int
    delay: float


@dataclass
class _Stall:
    method: str
    path_suffix: str
    seconds: float
    times: int | None


@dataclass
class _Chaos:
    rng: random.Random
    share: float
    faults: list[tuple[int, bool, dict[str, str]]]
    methods: set[str]
    budget: int | None
    turns: dict[str, int] = field(default_factory=dict)


# (status, land, headers) of the faults `chaos` picks from by default: GitHub's 5xx, landed or not,
# a secondary rate limit (403) and a 429, both asking for a 1 s wait.
CHAOS_FAULTS: tuple[tuple[int, bool, dict[str, str]], ...] = (
    (502, False, {}),
    (502, True, {}),
    (503, False, {}),
    (500, True, {}),
    (403, False, {"retry-after": "1"}),
    (429, False, {"retry-after": "1"}),
)


class FakeGitHub(LoopbackServer):
    """GitHub REST on loopback: repositories, issues (with Link pagination) and issue comments.

    `issues` and `comments` hold the stored GitHub JSON objects; `requests` logs (method, path)
    for every request received, query string excluded, `prefix` included.
    """

    default_headers = {"Content-Type": "application/json; charset=utf-8"}

    def __init__(
        self,
        token: str = "test-token",
        repositories: list[str] | tuple[str, ...] = ("acme/models",),
        *,
        prefix: str = "",
        users: list[str] | None = None,
        login: str = "modelops-bot",
    ) -> None:
        """`prefix` mimics GitHub Enterprise ("/api/v3"); `users`, when given, are the only valid assignees."""
        self.token = token
        self.repositories = {name.lower(): name for name in repositories}
        self.prefix = prefix.rstrip("/")
        self.users = set(users) if users is not None else None
        self.login = login
        self.issues: list[dict[str, Any]] = []
        self.comments: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        self._labels: dict[tuple[str, str], dict[str, Any]] = {}
        self._faults: list[_Fault] = []
        self._stalls: list[_Stall] = []
        self._chaos: _Chaos | None = None
        self.injected: list[tuple[str, str, int, bool]] = []  # (method, path, status, landed): every fault
        self.timeline: list[tuple[float, str, str, int]] = []  # (time.monotonic(), method, path, status)
        self._lock = threading.RLock()
        self._ids = 1000
        self.origin = f"http://127.0.0.1:{self._serve('fake-github')}"
        self.base_url = self.origin + self.prefix

    # -- test controls -----------------------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        path_suffix: str,
        status: int,
        *,
        land: bool = False,
        headers: dict[str, str] | None = None,
        body: Any = None,
        times: int = 1,
        delay: float = 0.0,
    ) -> None:
        """Answer the next `times` requests whose path ends with `path_suffix` with `status`.

        `land=True` performs the request first (the write lands) and then answers with the error.
        `body` is JSON (dict/list) or raw text; by default `{"message": <reason>}`, and for 403/429
        a rate-limit message with a `retry-after: 60` header. `delay` stalls before answering.
        """
        if status in (403, 429) and body is None:
            body = {"message": SECONDARY_RATE_LIMIT if status == 403 else PRIMARY_RATE_LIMIT, "documentation_url": DOCS}
            headers = {"retry-after": "60", **(headers or {})}
        with self._lock:
            self._faults.append(
                _Fault(method.upper(), path_suffix, status, land, dict(headers or {}), body, times, delay)
            )

    def stall(self, method: str, path_suffix: str, seconds: float, *, times: int | None = None) -> None:
        """Hold the replies to requests whose path ends with `path_suffix` for `seconds` after computing
        them (a listing stalled this way shows the state from before the stall); `times=None`: always."""
        with self._lock:
            self._stalls.append(_Stall(method.upper(), path_suffix, seconds, times))

    def chaos(
        self,
        seed: int,
        share: float,
        *,
        faults: list[tuple[int, bool, dict[str, str]]] | tuple[tuple[int, bool, dict[str, str]], ...] = CHAOS_FAULTS,
        methods: tuple[str, ...] = ("GET", "POST", "PATCH"),
        budget: int | None = None,
    ) -> None:
        """Fail a `share` of the requests (drawn from `random.Random(seed)` in arrival order) with the
        `faults` (status, land, headers) in turn, per method; a GET gets only the faults that do not
        land. At most `budget` faults in all when given. `injected` lists what was injected."""
        with self._lock:
            self._chaos = _Chaos(random.Random(seed), share, list(faults), {m.upper() for m in methods}, budget)

    def calm(self) -> None:
        """Stop `chaos` and every `stall`."""
        with self._lock:
            self._chaos = None
            self._stalls.clear()

    def add_issue(
        self,
        repository: str,
        title: str,
        body: str | None = None,
        *,
        labels: list[str] | tuple[str, ...] = (),
        state: str = "open",
        pull_request: bool = False,
    ) -> dict[str, Any]:
        """Store an issue (or a pull request, as the issues listing shows them) without HTTP."""
        with self._lock:
            issue = self._new_issue(self.repositories[repository.lower()], title, body, list(labels), [])
            issue["state"] = state
            if state == "closed":
                issue["closed_at"] = issue["created_at"]
            if pull_request:
                issue["html_url"] = issue["html_url"].replace("/issues/", "/pull/")
                issue["pull_request"] = {"url": issue["url"].replace("/issues/", "/pulls/")}
            return issue

    def issues_in(self, repository: str) -> list[dict[str, Any]]:
        """The stored issues of one repository, oldest first."""
        url = self._api(f"/repos/{self.repositories[repository.lower()]}")
        return [issue for issue in self.issues if issue["repository_url"] == url]

    # -- request handling --------------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> Reply:
        split = urlsplit(target)
        path = split.path
        query = {key: values[-1] for key, values in parse_qs(split.query).items()}
        with self._lock:
            self.requests.append((method, path))
            fault = self._take_fault(method, path) or self._chaos_fault(method, path)
            stall = self._take_stall(method, path)
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        if fault is not None and not fault.land:
            return self._log(method, path, _fault_reply(fault))
        with self._lock:
            reply = self._route(method, path, query, headers, raw)
        if stall:
            time.sleep(stall)
        return self._log(method, path, _fault_reply(fault) if fault is not None else reply)

    def _log(self, method: str, path: str, reply: Reply) -> Reply:
        with self._lock:
            self.timeline.append((time.monotonic(), method, path, reply[0]))
        return reply

    def _take_stall(self, method: str, path: str) -> float:
        for stall in self._stalls:
            if stall.method == method and path.endswith(stall.path_suffix):
                if stall.times is not None:
                    stall.times -= 1
                    if stall.times <= 0:
                        self._stalls.remove(stall)
                return stall.seconds
        return 0.0

    def _chaos_fault(self, method: str, path: str) -> _Fault | None:
        chaos = self._chaos
        if chaos is None or method not in chaos.methods or chaos.budget == 0:
            return None
        if chaos.rng.random() >= chaos.share:
            return None
        # round robin over the faults that make sense for the method (nothing "lands" on a GET)
        usable = [fault for fault in chaos.faults if not (fault[1] and method == "GET")] or chaos.faults
        turn = chaos.turns.get(method, 0)
        chaos.turns[method] = turn + 1
        status, land, headers = usable[turn % len(usable)]
        land = land and method != "GET"
        if chaos.budget is not None:
            chaos.budget -= 1
        if status in (403, 429):
            body: Any = {"message": SECONDARY_RATE_LIMIT if status == 403 else PRIMARY_RATE_LIMIT, "documentation_url": DOCS}
        else:
            body = {"message": HTTPStatus(status).phrase}
        self.injected.append((method, path, status, land))
        return _Fault(method, path, status, land, dict(headers), body, 1, 0.0)

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        for fault in self._faults:
            if fault.method == method and path.endswith(fault.path_suffix):
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                self.injected.append((method, path, fault.status, fault.land))
                return fault
        return None

    def _route(self, method: str, path: str, query: dict[str, str], headers: dict[str, str], raw: bytes) -> Reply:
        denied = self._check_auth(headers)
        if denied is not None:
            return denied
        if not path.startswith(self.prefix + "/"):
            return _not_found()
        match = re.fullmatch(r"/repos/([^/]+)/([^/]+)(/issues(?:/(\d+)(/comments)?)?)?", path[len(self.prefix) :])
        if match is None:
            return _not_found()
        owner, name, issues, number, comments = match.groups()
        repository = self.repositories.get(f"{owner}/{name}".lower())
        if repository is None:
            return _not_found()
        if issues is None:
            return _json(200, self._repo_json(repository)) if method == "GET" else _not_found()
        if number is None:
            if method == "GET":
                return self._list_issues(repository, query)
            if method == "POST":
                return self._create_issue(repository, _body(raw))
            return _not_found()
        issue = self._find(repository, int(number))
        if issue is None:
            return _not_found()
        if comments is None:
            if method == "GET":
                return _json(200, issue)
            if method == "PATCH":
                return self._edit_issue(repository, issue, _body(raw))
            return _not_found()
        if method == "GET":
            items = [c for c in self.comments if c["issue_url"] == issue["url"]]
            return self._page(items, issue["url"] + "/comments", query)
        if method == "POST":
            return self._create_comment(issue, _body(raw))
        return _not_found()

    def _check_auth(self, headers: dict[str, str]) -> Reply | None:
        value = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        if not value:
            return _json(401, {"message": "Requires authentication", "documentation_url": DOCS})
        scheme, _, credential = value.partition(" ")
        if scheme.lower() not in ("token", "bearer") or credential.strip() != self.token:
            return _json(401, {"message": "Bad credentials", "documentation_url": DOCS, "status": "401"})
        return None

    def _list_issues(self, repository: str, query: dict[str, str]) -> Reply:
        state = query.get("state", "open")
        wanted = {label.strip().lower() for label in query.get("labels", "").split(",") if label.strip()}
        items = [
            issue
            for issue in self.issues_in(repository)
            if (state == "all" or issue["state"] == state)
            and wanted <= {label["name"].lower() for label in issue["labels"]}
        ]
        sort_key = {"created": "created_at", "updated": "updated_at", "comments": "comments"}.get(
            query.get("sort", "created"), "created_at"
        )
        items.sort(key=lambda issue: (issue[sort_key], issue["id"]), reverse=query.get("direction", "desc") != "asc")
        return self._page(items, self._api(f"/repos/{repository}/issues"), query)

    def _create_issue(self, repository: str, payload: Any) -> Reply:
        if not isinstance(payload, dict) or not payload.get("title"):
            return _validation_failed({"resource": "Issue", "code": "missing_field", "field": "title"})
        assignees = list(payload.get("assignees") or ([payload["assignee"]] if payload.get("assignee") else []))
        for login in assignees:
            if self.users is not None and login not in self.users:
                return _validation_failed({"value": login, "resource": "Issue", "field": "assignees", "code": "invalid"})
        issue = self._new_issue(repository, str(payload["title"]), payload.get("body"), payload.get("labels") or [], assignees)
        return _json(201, issue, {"Location": issue["url"]})

    def _edit_issue(self, repository: str, issue: dict[str, Any], payload: Any) -> Reply:
        if not isinstance(payload, dict):
            return _validation_failed({"resource": "Issue", "code": "invalid", "field": "body"})
        state = payload.get("state")
        if state is not None and state not in ("open", "closed"):
            return _validation_failed({"value": state, "resource": "Issue", "field": "state", "code": "invalid"})
        reason = payload.get("state_reason")
        if reason is not None and reason not in ("completed", "not_planned", "duplicate", "reopened"):
            return _validation_failed({"value": reason, "resource": "Issue", "field": "state_reason", "code": "invalid"})
        _, now = self._tick()
        for key in ("title", "body"):
            if key in payload:
                issue[key] = payload[key]
        if "labels" in payload:
            issue["labels"] = [self._label(repository, str(name)) for name in payload["labels"] or []]
        if state is not None and state != issue["state"]:
            issue["state"] = state
            issue["closed_at"] = now if state == "closed" else None
        if state is not None or reason is not None:
            issue["state_reason"] = reason if issue["state"] == "closed" else None
        issue["updated_at"] = now
        return _json(200, issue)

    def _create_comment(self, issue: dict[str, Any], payload: Any) -> Reply:
        if not isinstance(payload, dict) or not payload.get("body"):
            return _validation_failed({"resource": "IssueComment", "code": "missing_field", "field": "body"})
        comment_id, now = self._tick()
        comment = {
            "id": comment_id,
            "node_id": f"IC_{comment_id}",
            "url": self._api(f"/repos/{issue['repository_url'].split('/repos/')[1]}/issues/comments/{comment_id}"),
            "html_url": f"{issue['html_url']}#issuecomment-{comment_id}",
            "issue_url": issue["url"],
            "body": payload["body"],
            "user": self._user(self.login),
            "author_association": "OWNER",
            "created_at": now,
            "updated_at": now,
        }
        self.comments.append(comment)
        issue["comments"] += 1
        issue["updated_at"] = now
        return _json(201, comment, {"Location": comment["url"]})

    def _page(self, items: list[dict[str, Any]], url: str, query: dict[str, str]) -> Reply:
        per_page = max(1, min(100, _int(query.get("per_page"), 30)))
        page = max(1, _int(query.get("page"), 1))
        last = max(1, -(-len(items) // per_page))
        links = []

        def link(number: int, rel: str) -> str:
            return f'<{url}?{urlencode({**query, "per_page": per_page, "page": number})}>; rel="{rel}"'

        if page < last:
            links += [link(page + 1, "next"), link(last, "last")]
        if page > 1:
            links += [link(1, "first"), link(page - 1, "prev")]
        headers = {"Link": ", ".join(links)} if links else {}
        return _json(200, items[(page - 1) * per_page : page * per_page], headers)

    # -- GitHub objects ----------------------------------------------------------------------------

    def _api(self, path: str) -> str:
        return self.base_url + path

    def _tick(self) -> tuple[int, str]:
        """A new id and a timestamp that grows with it, so sorting by time is deterministic."""
        self._ids += 1
        stamp = (_EPOCH + timedelta(seconds=self._ids)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return self._ids, stamp

    def _find(self, repository: str, number: int) -> dict[str, Any] | None:
        return next((issue for issue in self.issues_in(repository) if issue["number"] == number), None)

    def _new_issue(
        self, repository: str, title: str, body: str | None, labels: list[Any], assignees: list[str]
    ) -> dict[str, Any]:
        issue_id, now = self._tick()
        number = 1 + max((issue["number"] for issue in self.issues_in(repository)), default=0)
        url = self._api(f"/repos/{repository}/issues/{number}")
        people = [self._user(login) for login in assignees]
        issue = {
            "id": issue_id,
            "node_id": f"I_{issue_id}",
            "number": number,
            "title": title,
            "body": body,
            "state": "open",
            "state_reason": None,
            "locked": False,
            "url": url,
            "repository_url": self._api(f"/repos/{repository}"),
            "labels_url": url + "/labels{/name}",
            "comments_url": url + "/comments",
            "events_url": url + "/events",
            "html_url": f"{self.origin}/{repository}/issues/{number}",
            "labels": [self._label(repository, str(getattr(label, "name", label))) for label in labels],
            "assignee": people[0] if people else None,
            "assignees": people,
            "milestone": None,
            "comments": 0,
            "user": self._user(self.login),
            "author_association": "OWNER",
            "created_at": now,
            "updated_at": now,
            "closed_at": None,
        }
        self.issues.append(issue)
        return issue

    def _label(self, repository: str, name: str) -> dict[str, Any]:
        key = (repository, name.lower())
        if key not in self._labels:
            label_id, _ = self._tick()
            self._labels[key] = {
                "id": label_id,
                "node_id": f"LA_{label_id}",
                "url": self._api(f"/repos/{repository}/labels/{name}"),
                "name": name,
                "color": "ededed",
                "default": False,
                "description": None,
            }
        return dict(self._labels[key])

    def _user(self, login: str) -> dict[str, Any]:
        return {
            "login": login,
            "id": zlib.crc32(login.encode()),
            "node_id": f"U_{login}",
            "avatar_url": f"{self.origin}/avatars/{login}",
            "url": self._api(f"/users/{login}"),
            "html_url": f"{self.origin}/{login}",
            "type": "User",
            "site_admin": False,
        }

    def _repo_json(self, repository: str) -> dict[str, Any]:
        owner, name = repository.split("/")
        repo_id = zlib.crc32(repository.encode())
        return {
            "id": repo_id,
            "node_id": f"R_{repo_id}",
            "name": name,
            "full_name": repository,
            "owner": self._user(owner),
            "private": True,
            "visibility": "private",
            "fork": False,
            "description": None,
            "html_url": f"{self.origin}/{repository}",
            "url": self._api(f"/repos/{repository}"),
            "issues_url": self._api(f"/repos/{repository}/issues{{/number}}"),
            "has_issues": True,
            "open_issues_count": sum(1 for i in self.issues_in(repository) if i["state"] == "open"),
            "default_branch": "main",
            "created_at": _EPOCH.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "updated_at": _EPOCH.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "pushed_at": _EPOCH.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "permissions": {"admin": False, "maintain": False, "push": True, "triage": True, "pull": True},
        }


def _json(status: int, data: Any, headers: dict[str, str] | None = None) -> Reply:
    return status, dict(headers or {}), json.dumps(data).encode()


def _not_found() -> Reply:
    return _json(404, {"message": "Not Found", "documentation_url": DOCS, "status": "404"})


def _validation_failed(error: dict[str, Any]) -> Reply:
    return _json(422, {"message": "Validation Failed", "errors": [error], "documentation_url": DOCS, "status": "422"})


def _fault_reply(fault: _Fault) -> Reply:
    body = fault.body if fault.body is not None else {"message": HTTPStatus(fault.status).phrase}
    if isinstance(body, (dict, list)):
        return _json(fault.status, body, fault.headers)
    raw = body.encode() if isinstance(body, str) else bytes(body)
    return fault.status, {"Content-Type": "text/html; charset=utf-8", **fault.headers}, raw


def _body(raw: bytes) -> Any:
    try:
        return json.loads(raw or b"null")
    except ValueError:
        return None


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default

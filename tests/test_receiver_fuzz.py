"""Fuzzing the W&B webhook receiver: property-based tests (hypothesis) over bodies, headers,
encodings and sizes, against the real Starlette app in-process.

Each receiver here is `deployments.webhook.create_app` driven by Starlette's `TestClient` (lifespan
included), with a real SQLite outbox in a temporary directory and the sender pointed at a port that
is bound but never listens, so nothing leaves the process and every accepted event stays in the
outbox. The outbox is the oracle for "events emitted": `Outbox.counts()` before and after each
request.

Checked on every request (DESIGN.md, "Webhook receiver"):
  * never a 5xx, never an unhandled exception, and the status is one of 202/400/401/413/415/422;
  * the status is the one the contract gives for what was sent: 413 for a body (or a declared
    Content-Length) over the limit, else 401 for a missing or wrong credential, else 415 for a
    Content-Type that is not JSON, else 400 for a body that is not JSON, else 422 for JSON that is
    not a known W&B event, else 202. Where the case knows what it sent ("a valid W&B event",
    "not JSON", "not an event") that is the oracle; for arbitrary bodies the pure parser
    `wandb_events.parse_body` is (the HTTP layer must agree with it);
  * a non-202 answer is a JSON object with an "error" message and adds no outbox event;
  * a 202 is {"event_id", "event", "duplicate"}: a body not accepted before adds exactly one
    outbox event under that id, a body accepted before is `duplicate` with the same event_id and
    adds none; the event name is the DESIGN.md table's; the Prefect event it stands for can be
    posted to Prefect (strict JSON, as the sender's httpx encodes it, nested no deeper than Prefect
    stores) - an event the sender can never deliver would sit at the head of the outbox forever;
  * after each property: nothing the receiver or its sender logged at ERROR (such as the sender
    loop failing on an event it cannot encode).

The same properties run in `bench/fuzz.py` (10,000 cases in one process); this module is their one
definition. Examples per property: env MODELOPS_FUZZ_EXAMPLES (default 150).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import re
import socket
import string
import time
import unicodedata
import uuid
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

with warnings.catch_warnings():  # "install httpx2 instead": the project pins httpx, which TestClient still uses
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from deployments.outbox import Outbox, utc_now_iso
from deployments.wandb_events import Credentials, DeliveryError, artifact_body, parse_body
from deployments.webhook import ReceiverConfig, create_app
from tests.samples import SAMPLE_BODIES

EXAMPLES = int(os.environ.get("MODELOPS_FUZZ_EXAMPLES", "150"))

LIMIT = 4 * 1024  # small max_body keeps sizes around the limit fast
BIG_LIMIT = 64 * 1024  # for deep nesting and long number tokens that do not fit in 4 KiB
SECRET = "whsec-fuzz-5c1d"  # test-only values
TOKEN = "tok-fuzz-8e2a"
CONTRACT_STATUSES = frozenset({202, 400, 401, 413, 415, 422})

MODES: dict[str, Credentials] = {
    "secret": Credentials(secret=SECRET),  # what a W&B webhook with a secret sends
    "token": Credentials(token=TOKEN),  # the W&B access token as a bearer token
    "both": Credentials(token=TOKEN, secret=SECRET),
    "open": Credentials(),  # --allow-unauthenticated
}

# DESIGN.md, "Event vocabulary", copied by hand: the oracle for the event name of a 202.
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

# What a case knows about its body (None: it does not know, the pure parser decides).
EVENT, NOT_JSON, NOT_EVENT = "event", "not-json", "not-event"
# What a case knows about one header.
OK, BAD, EITHER = "ok", "bad", "either"


# =========================================================================== the cases


@dataclass
class Case:
    """One request. `headers=None` means the right headers for `mode` (signed, bearer, JSON)."""

    body: bytes
    headers: list[tuple[str, str | bytes]] | None = None
    body_label: str | None = None
    token: str = OK  # the Authorization header, when the receiver checks a token
    signature: str = OK  # X-Wandb-Signature, when the receiver checks a secret
    ctype: str = OK  # Content-Type
    mode: str = "secret"
    limit: int = LIMIT
    content_length: str | None = None  # a declared Content-Length instead of the real one
    chunked: bool = False  # no Content-Length at all (Transfer-Encoding: chunked)
    note: str = ""

    def __repr__(self) -> str:  # bodies go up to 1 MiB and headers to 200 kB: cut them short
        body = self.body if len(self.body) <= 600 else self.body[:600] + b"...(%d bytes)" % len(self.body)
        headers = [(k, v if len(v) <= 120 else v[:120] + (b"..." if isinstance(v, bytes) else "..."))
                   for k, v in self.headers or []]
        return (f"Case(note={self.note!r}, mode={self.mode!r}, limit={self.limit}, body_label={self.body_label!r}, "
                f"token={self.token!r}, signature={self.signature!r}, ctype={self.ctype!r}, "
                f"content_length={self.content_length!r}, chunked={self.chunked}, "
                f"headers={headers if self.headers is not None else 'right for mode'!r}, body={body!r})")

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # how hypothesis prints a failing case
        printer.text(repr(self))


def right_headers(body: bytes, mode: str, content_type: str = "application/json") -> list[tuple[str, str]]:
    creds = MODES[mode]
    headers = [("Content-Type", content_type)]
    if creds.secret:
        headers.append(("X-Wandb-Signature", base64.b64encode(_mac(body)).decode()))
    if creds.token:
        headers.append(("Authorization", f"Bearer {creds.token}"))
    return headers


def _mac(body: bytes, secret: str = SECRET) -> bytes:
    return hmac.new(secret.encode(), body, hashlib.sha256).digest()


_CONTENT_LENGTH = re.compile(r"\s*[+-]?[0-9]+\s*")


def reference_statuses(body: bytes) -> set[int]:
    """What the pure parser answers for a body (the oracle when a case does not know)."""
    try:
        parse_body(body)
    except DeliveryError as exc:
        return {exc.status}
    except Exception:  # noqa: BLE001 - the parser itself fails: the receiver must still say 4xx
        return {400, 422}
    return {202}


def allowed_statuses(case: Case, creds: Credentials, limit: int) -> set[int]:
    """The statuses DESIGN.md allows for `case`, in the order the receiver checks."""
    if case.content_length is not None:
        if not _CONTENT_LENGTH.fullmatch(case.content_length):
            return {400}  # a malformed Content-Length is a malformed request
        if int(case.content_length) > limit:
            return {413}  # refused before reading (and before credentials)
    if len(case.body) > limit:
        return {413}
    allowed: set[int] = set()
    gates = []
    if creds.token:
        gates.append((case.token, 401))
    if creds.secret:
        gates.append((case.signature, 401))
    gates.append((case.ctype, 415))
    for label, status in gates:
        if label == BAD:
            return allowed | {status}
        if label == EITHER:
            allowed.add(status)
    body = {EVENT: {202}, NOT_JSON: {400}, NOT_EVENT: {422}}.get(case.body_label or "")
    return allowed | (body if body is not None else reference_statuses(case.body))


# Measured against Prefect 3.9.1 (SQLite): an event whose payload nests 191 levels is stored, one of
# 201-255 levels is answered 204 and never stored, from ~260 levels POST /api/events answers 500.
PREFECT_PAYLOAD_DEPTH = 190


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((x, depth + 1) for x in (item.values() if isinstance(item, dict) else item))
    return deepest


def undeliverable(body: bytes) -> str | None:
    """Why the Prefect event for an accepted body could not be delivered, or None.

    The receiver's outbox stores `build(event_id, occurred)`; the sender posts it with
    `httpx.AsyncClient.post(..., json=[document])`. Encoding it the same way must work, and
    Prefect must be able to store it.
    """
    try:
        document = parse_body(body).to_prefect(str(uuid.uuid4()), utc_now_iso())
        httpx.Request("POST", "http://prefect.invalid/api/events", json=[document])
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {str(exc)[:160]}"
    depth = _depth(document["payload"])
    if depth > PREFECT_PAYLOAD_DEPTH:
        return f"payload nested {depth} deep: Prefect stores no deeper than ~{PREFECT_PAYLOAD_DEPTH + 1}"
    return None


# =========================================================================== the receivers


class _Recorder:
    """ASGI wrapper that remembers unhandled exceptions (Starlette answers 500 and re-raises)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.errors: list[BaseException] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            self.errors.append(exc)
            raise


class _ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(f"{record.name}: {record.getMessage()[:300]}")


class Receiver:
    """One in-process receiver (credentials mode, body limit) with its own outbox."""

    def __init__(self, home: Path, mode: str, limit: int, api_url: str) -> None:
        self.mode, self.limit, self.creds = mode, limit, MODES[mode]
        self.outbox_path = home / f"outbox-{mode}-{limit}.sqlite3"
        config = ReceiverConfig(
            api_url=api_url, credentials=self.creds, outbox_path=str(self.outbox_path),
            dedupe_window=7 * 24 * 3600.0,  # the whole run is one window: duplicates are exact
            max_body=limit,
        )
        self.app = _Recorder(create_app(config))
        self.client = TestClient(self.app, base_url="http://receiver.test", raise_server_exceptions=False)
        self.client.__enter__()  # lifespan: opens the outbox, starts the sender
        self.outbox = Outbox(self.outbox_path)  # a second connection, read only
        self.accepted: dict[str, str] = {}  # sha256 of an accepted body -> its event_id

    def events(self) -> int:
        return sum(self.outbox.counts().values())

    def close(self) -> None:
        self.client.__exit__(None, None, None)
        self.outbox.close()


@dataclass
class Stats:
    cases: Counter = field(default_factory=Counter)  # property -> cases
    requests: Counter = field(default_factory=Counter)  # property -> requests
    statuses: Counter = field(default_factory=Counter)  # status -> requests
    by_property: dict[str, Counter] = field(default_factory=dict)  # property -> status -> requests
    five_xx: int = 0
    rejected_events: int = 0  # outbox events added by rejected requests
    violations: Counter = field(default_factory=Counter)  # kind -> count
    examples: list[str] = field(default_factory=list)

    def record(self, prop: str, status: int) -> None:
        self.requests[prop] += 1
        self.statuses[status] += 1
        self.by_property.setdefault(prop, Counter())[status] += 1
        if status >= 500:
            self.five_xx += 1


class Violation(AssertionError):
    pass


class Receivers:
    """The receivers of a fuzz run, created on first use, sharing one unreachable Prefect API.

    `strict`: a violated property raises (pytest, so hypothesis shrinks it); otherwise it is
    counted in `stats` and the run goes on (the benchmark counts every answer).
    """

    def __init__(self, home: Path, *, strict: bool = True) -> None:
        self.home = home
        self.strict = strict
        self.stats = Stats()
        # bound and never listening: every connection is refused, nothing leaves the process
        self._closed_port = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._closed_port.bind(("127.0.0.1", 0))
        self.api_url = f"http://127.0.0.1:{self._closed_port.getsockname()[1]}/api"
        self._receivers: dict[tuple[str, int], Receiver] = {}
        self.error_log = _ErrorLog()
        self._logger = logging.getLogger("modelops")
        self._propagate = self._logger.propagate
        self._logger.addHandler(self.error_log)
        self._logger.propagate = False
        self._sender_log = logging.getLogger("modelops.outbox")
        self._sender_level = self._sender_log.level
        self._sender_log.setLevel(logging.ERROR)  # "Prefect did not take ...": expected here, not news
        self._errors_seen = 0

    def get(self, mode: str = "secret", limit: int = LIMIT) -> Receiver:
        key = (mode, limit)
        if key not in self._receivers:
            self._receivers[key] = Receiver(self.home, mode, limit, self.api_url)
        return self._receivers[key]

    def close(self) -> None:
        for rx in self._receivers.values():
            rx.close()
        self._logger.removeHandler(self.error_log)
        self._logger.propagate = self._propagate
        self._sender_log.setLevel(self._sender_level)
        self._closed_port.close()

    # ------------------------------------------------------------------ one request, all checks

    def deliver(self, case: Case, prop: str) -> httpx.Response:
        rx = self.get(case.mode, case.limit)
        headers = list(case.headers) if case.headers is not None else right_headers(case.body, case.mode)
        if case.content_length is not None:
            headers.append(("Content-Length", case.content_length))
        content: Any = case.body
        if case.chunked:
            content = iter([case.body[i:i + 1000] for i in range(0, len(case.body), 1000)] or [b""])
        before = rx.events()
        response = rx.client.post("/hooks/wandb", content=content, headers=headers)
        after = rx.events()
        status = response.status_code
        self.stats.record(prop, status)
        problems: list[tuple[str, str]] = []

        if status >= 500:
            problems.append(("5xx answer", f"{status} {response.text[:200]!r}"))
        if rx.app.errors:
            errors, rx.app.errors[:] = list(rx.app.errors), []
            problems.append(("unhandled exception", "; ".join(f"{type(e).__name__}: {e}"[:200] for e in errors)))
        if status not in CONTRACT_STATUSES and status < 500:
            problems.append(("status outside the contract", str(status)))
        allowed = allowed_statuses(case, rx.creds, rx.limit)
        if status not in allowed:
            problems.append(("unexpected status", f"{status}, the contract says {sorted(allowed)}: "
                                                  f"{response.text[:200]}"))
        try:
            answer = response.json()
        except ValueError:
            answer = None
            problems.append(("answer is not JSON", repr(response.content[:200])))

        if status != 202:
            if not (isinstance(answer, dict) and isinstance(answer.get("error"), str) and answer["error"]):
                problems.append(("rejection without an 'error' message", repr(answer)[:200]))
            if after != before:
                self.stats.rejected_events += after - before
                problems.append(("event from a rejected request", f"{status} added {after - before} outbox event(s)"))
        elif isinstance(answer, dict):
            problems += self._check_accepted(rx, case, answer, after - before)

        if problems:
            self.violated(prop, problems, case)
        return response

    def violated(self, prop: str, problems: list[tuple[str, str]], case: Case | None = None) -> None:
        """Count (kind, detail) violations; raise them in strict mode."""
        for kind, _ in problems:
            self.stats.violations[kind] += 1
        text = f"[{prop}] " + "; ".join(f"{k}: {d}" for k, d in problems) + (f"\n    {case!r}" if case else "")
        if len(self.stats.examples) < 20:
            self.stats.examples.append(text)
        if self.strict:
            raise Violation(text)

    def _check_accepted(self, rx: Receiver, case: Case, answer: dict, added: int) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        event_id, event, duplicate = answer.get("event_id"), answer.get("event"), answer.get("duplicate")
        if not (isinstance(event_id, str) and isinstance(duplicate, bool) and event in set(DESIGN_TABLE.values())):
            return [("malformed 202 answer", repr(answer)[:200])]
        sha = hashlib.sha256(case.body).hexdigest()
        earlier = rx.accepted.get(sha)
        if earlier is None:
            if duplicate:
                problems.append(("duplicate of a body never accepted", repr(answer)))
            if added != 1:
                problems.append(("202 did not add exactly one event", f"added {added}"))
            if rx.outbox.state_of(event_id) is None:
                problems.append(("202 event_id not in the outbox", event_id))
            rx.accepted[sha] = event_id
        else:
            if not duplicate or event_id != earlier:
                problems.append(("same body, not the same event", f"{answer!r}, first event_id {earlier}"))
            if added != 0:
                problems.append(("duplicate added events", f"added {added}"))
        try:
            parsed = parse_body(case.body)
        except Exception as exc:  # noqa: BLE001
            return problems + [("202 for a body the parser rejects", f"{type(exc).__name__}: {exc}"[:200])]
        if event != DESIGN_TABLE.get(parsed.event_type):
            problems.append(("event name is not DESIGN.md's", f"{parsed.event_type} -> {event}"))
        resource = parsed.resource
        if parsed.event_type in ARTIFACT_TYPES:
            expected_id = (f"wandb.artifact.{resource.get('wandb.entity')}/{resource.get('wandb.project')}/"
                           f"{resource.get('wandb.collection')}:{resource.get('wandb.version')}")
            if resource.get("prefect.resource.id") != expected_id:
                problems.append(("artifact resource id is not DESIGN.md's", repr(resource)[:200]))
        why = undeliverable(case.body)
        if why:
            problems.append(("accepted an event the sender cannot post to Prefect", why))
        return problems

    def _check_logs(self, problems: list[tuple[str, str]]) -> None:
        records = self.error_log.records
        if len(records) > self._errors_seen:
            new = records[self._errors_seen:]
            self._errors_seen = len(records)
            problems.append(("error logged by the receiver or its sender", " | ".join(new[:3])))

    def settle(self, seconds: float = 0.4) -> None:
        """Give the sender time to try the latest events, then check it logged no error."""
        time.sleep(seconds)
        problems: list[tuple[str, str]] = []
        self._check_logs(problems)
        if problems:
            self.violated("sender", problems)


# =========================================================================== strategies
#
# Every strategy is built once, at import: building strategies inside a draw is what makes
# hypothesis slow, and the benchmark draws 10,000 cases.

_NO_SURROGATES = st.characters(exclude_categories=("Cs",))
_ANY_CHAR = st.one_of(st.characters(exclude_categories=("Cs",)), st.characters(categories=["Cs"]))
text = st.text(_NO_SURROGATES, max_size=24)
any_text = st.text(_ANY_CHAR, max_size=24)  # lone surrogates included
maybe_text = st.one_of(st.just(""), text)
# an artifact path part: anything but '/' and ':' (the separators of artifact_version_string) and
# whitespace at either end (W&B names have none; the receiver strips the version string)
part = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="/:"), min_size=1, max_size=16).filter(
    lambda s: s.strip() == s)
nonblank = text.filter(lambda s: s.strip() != "")
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
                      max_size=60)
finite = st.floats(allow_nan=False, allow_infinity=False)
number = st.one_of(st.integers(), finite)

# JSON a W&B payload may carry and Prefect can store
plain_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), finite, text),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(text, inner, max_size=4)),
    max_leaves=10,
)
# JSON of any shape Python's json module can write: NaN/Infinity tokens, huge ints, surrogates
wild_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.integers(0, 1200).map(lambda n: -(10**n)),
              st.floats(), any_text),
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(any_text, inner, max_size=5)),
    max_leaves=20,
)
scalar = st.one_of(st.none(), text, st.integers(-(10**9), 10**9), finite)
not_a_string = st.one_of(st.none(), st.booleans(), number, st.lists(plain_json, max_size=3),
                         st.dictionaries(text, plain_json, max_size=3))
not_an_object = st.one_of(st.none(), st.booleans(), number, text, st.lists(plain_json, max_size=3))
not_text = st.one_of(st.booleans(), st.lists(plain_json, max_size=3), st.dictionaries(text, plain_json, max_size=3))

ARTIFACT_READ = ["entity_name", "project_name", "artifact_collection_name", "alias", "tag", "artifact_version_string"]
RUN_READ = ["entity_name", "project_name", "run_id", "run_name", "metric_name", "metric_value", "run_state"]
RESERVED = set(ARTIFACT_READ) | set(RUN_READ) | {"event_type", "client_payload"}
extra_key = text.filter(lambda k: k not in RESERVED)
extras = st.dictionaries(extra_key, plain_json, max_size=3)
RAW = "@@raw-7f3a@@"  # placeholder string value, replaced by a raw JSON token in the text


def _known(value: str) -> bool:
    """Whether a string could be read as a known event type (case, whitespace, compatibility forms)."""
    forms = {value, unicodedata.normalize("NFKC", value)}
    return any(f.strip().upper() in DESIGN_TABLE or f.strip().casefold().upper() in DESIGN_TABLE for f in forms)


unknown_event_type = st.one_of(
    st.sampled_from(["DELETE_ARTIFACT", "BUILD_AND_DEPLOY", "webhook", "ADD_ARTIFACT_ALIAS_", "RUN", "RUNSTATE",
                     "LINK-MODEL", "CREATE ARTIFACT", "null", "0"]),
    nonblank,
).filter(lambda s: not _known(s))
bad_event_type = st.one_of(not_a_string, st.sampled_from(["", " ", "\t\n"]))
_mask = st.integers(0, 2**32 - 1)
_pad = st.sampled_from(["", "", " ", "  ", "\t", "\n"])


def spell(draw: st.DrawFn, event_type: str) -> str:
    """A known event type as a payload template may spell it: any case, padded with whitespace."""
    mask = draw(_mask)
    word = "".join(c.lower() if mask >> i & 1 else c for i, c in enumerate(event_type))
    return draw(_pad) + word + draw(_pad)


@st.composite
def artifact_events(draw: st.DrawFn, flat: bool = False) -> dict[str, Any]:
    event_type = draw(st.sampled_from(ARTIFACT_TYPES))
    entity, project, collection, version = draw(part), draw(part), draw(part), draw(part)
    shape = draw(st.sampled_from(["template", "minimal", "short"] if flat else
                                 ["template", "minimal", "short", "dispatch"]))
    if shape == "minimal":
        body: dict[str, Any] = {"artifact_version_string": f"{entity}/{project}/{collection}:{version}"}
    elif shape == "short":
        body = {"artifact_version_string": f"{collection}:{version}",
                "entity_name": draw(nonblank), "project_name": draw(nonblank)}
    else:
        body = artifact_body(event_type, entity, project, collection, version,
                             alias=draw(maybe_text), tag=draw(maybe_text), author=draw(text))
        alias = draw(st.sampled_from(["as-is", "as-is", "null", "number"]))
        if alias != "as-is":
            body["alias"] = None if alias == "null" else draw(st.integers(0, 10**6))
    body["event_type"] = spell(draw, event_type)
    body.update(draw(extras))
    if shape == "dispatch":
        body = {"event_type": draw(unknown_event_type), "client_payload": body}
    return body


@st.composite
def run_events(draw: st.DrawFn, flat: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"event_type": spell(draw, draw(st.sampled_from(RUN_TYPES)))}
    for key in RUN_READ + ["event_author"]:
        if draw(st.booleans()):
            body[key] = draw(scalar)
    body.update(draw(extras))
    if not flat and draw(st.integers(0, 3)) == 0:
        body = {"event_type": draw(unknown_event_type), "client_payload": body}
    return body


sample_bodies = st.sampled_from([body for _, body in SAMPLE_BODIES])
valid_events = st.one_of(artifact_events(), run_events(), sample_bodies)
flat_events = st.one_of(artifact_events(flat=True), run_events(flat=True))
_indent = st.sampled_from([None, None, 0, 2, "\t"])
_separators = st.sampled_from([None, (",", ":"), (", ", ": ")])


def dumped(draw: st.DrawFn, doc: Any, allow_nan: bool = False) -> str:
    """JSON text as different W&B-side encoders might write it."""
    return json.dumps(doc, ensure_ascii=draw(st.booleans()), allow_nan=allow_nan, indent=draw(_indent),
                      separators=draw(_separators), sort_keys=draw(st.booleans()))


def utf8(text_: str) -> bytes:
    return text_.encode("utf-8", "surrogatepass")


# --------------------------------------------------------------------------- bodies


@st.composite
def arbitrary_bytes_cases(draw: st.DrawFn) -> Case:
    """Arbitrary bytes, raw or a valid body with bytes flipped/inserted; signed correctly."""
    kind = draw(st.sampled_from(["random", "random", "flipped", "spliced"]))
    if kind == "random":
        body = draw(st.binary(max_size=600))
    else:
        body = utf8(dumped(draw, draw(valid_events)))
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, 10**6)) % (len(body) + 1)
            noise = draw(st.binary(min_size=1, max_size=4))
            if kind == "flipped":
                body = body[:at] + noise + body[at + len(noise):]
            else:
                body = body[:at] + noise + body[at:]
    stretch = draw(st.sampled_from([None, None, None, LIMIT - 1, LIMIT, LIMIT + 1, 2 * LIMIT]))
    if stretch and body:
        body = (body * (stretch // len(body) + 1))[:stretch]
    return Case(body=body, note=f"bytes/{kind}/{stretch}")


ENCODINGS = ["utf-8", "utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "bom+utf-16-be", "utf-32",
             "utf-32-le", "utf-32-be", "latin-1", "cp1252", "bom+latin-1"]


def encode(text_: str, encoding: str) -> bytes:
    if encoding == "bom+utf-16-be":
        return b"\xfe\xff" + text_.encode("utf-16-be", "surrogatepass")
    if encoding == "bom+latin-1":
        return b"\xef\xbb\xbf" + text_.encode("latin-1", "replace")
    if encoding in ("latin-1", "cp1252"):
        return text_.encode(encoding, "replace")
    return text_.encode(encoding, "surrogatepass")


RAW_TOKENS = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1e-400", "-0", "1E+2", "0.1e1", "01",
              "1.", ".5", "+1", "0x10", "tru", "nul", '"\\ud800"', '"\\udfff\\ud800"', '"\\ud83d\\ude00"',
              '"\\u0000"', '"\\x41"', "'single'", "[1,]", "{\"a\":1,}", '"a" "b"']
# around MAX_JSON_DEPTH, Prefect's limits (~190 stored, 500 from ~260) and Python's recursion limit (1000)
DEPTHS = st.one_of(st.sampled_from([63, 64, 65, 66, 190, 200, 260, 500, 985, 990, 998, 999, 1000, 1001, 1500, 2000,
                                    2040, 5000, 20000]), st.integers(1, 3000))
event_like = st.fixed_dictionaries(
    {"event_type": st.one_of(st.sampled_from(list(DESIGN_TABLE)), unknown_event_type, wild_json)},
    optional={k: st.one_of(scalar, wild_json) for k in ARTIFACT_READ + RUN_READ}
    | {"client_payload": st.one_of(wild_json, st.builds(dict, event_type=st.sampled_from(list(DESIGN_TABLE))))},
)
any_json_doc = st.one_of(wild_json, event_like, valid_events)


@st.composite
def json_cases(draw: st.DrawFn) -> Case:
    """JSON values of any shape, deep nesting, odd number tokens, encodings with and without BOM."""
    shape = draw(st.sampled_from(["as-is", "as-is", "token", "deep", "long-number"]))
    # 64 KiB for some cases: room for nesting thousands deep and number tokens of thousands of digits
    limit = draw(st.sampled_from([LIMIT, BIG_LIMIT] if shape in ("deep", "long-number") else [LIMIT, LIMIT, BIG_LIMIT]))
    doc = draw(any_json_doc)
    raw: str | None = None
    if shape != "as-is":
        if shape == "token":
            raw = draw(st.sampled_from(RAW_TOKENS))
        elif shape == "deep":
            depth = draw(DEPTHS)
            opener, closer = draw(st.sampled_from([("[", "]"), ('{"":', "}"), ('{"a":[', "]}")]))
            raw = opener * depth + draw(st.sampled_from(["1", "null", '"x"', "[]", "{}"])) + closer * depth
        else:
            digits = draw(st.integers(1, 6000))
            raw = draw(st.sampled_from(["", "-"])) + "9" * digits + draw(st.sampled_from(["", ".5", "e5", "e-5"]))
        if isinstance(doc, dict) and draw(st.booleans()):
            doc = {**doc, draw(extra_key): RAW}
        else:
            doc = RAW
    body_text = dumped(draw, doc, allow_nan=True)
    if raw is not None:
        body_text = body_text.replace(json.dumps(RAW), raw)
    body_text = draw(st.sampled_from(["", " ", "\n", "\t\r\n"])) + body_text + draw(st.sampled_from(["", " ", "\n"]))
    encoding = draw(st.sampled_from(ENCODINGS[:3] if shape == "deep" else ENCODINGS))  # deep: mostly UTF-8
    body = encode(body_text, encoding)
    charset = draw(st.sampled_from(["", "; charset=utf-8", f"; charset={encoding}"]))
    return Case(body=body, headers=right_headers(body, "secret", "application/json" + charset),
                limit=limit, note=f"json/{shape}/{encoding}")


MUTATIONS = [
    "none", "drop-event-type", "retype-event-type", "unknown-event-type", "respell-event-type",
    "drop-optional", "retype-read-field", "number-read-field", "retype-unread-field",
    "drop-version-string", "bad-version-string", "short-version-string-alone",
    "client-payload-not-object", "client-payload-null", "root-not-object",
    "truncate", "trailing-garbage", "trailing-whitespace", "non-json-token", "odd-token", "deep-field",
]
BAD_VERSION_STRINGS = ["a/b/c", "a/b/c:", ":v1", "a/c:v1", "a//c:v1", "/b/c:v1", "a/b/:v1", "a/b/c:v1/x",
                       "a/b/c/d:v1", "", "   ", ":", "a/b/c:/", "a/b/c :v1/"]
bad_version_string = st.one_of(st.sampled_from(BAD_VERSION_STRINGS),
                               st.text(st.characters(exclude_categories=("Cs",), exclude_characters=":")))
client_payload_not_object = st.one_of(st.booleans(), st.integers(), text, st.lists(plain_json, max_size=3))
odd_token = st.sampled_from(['"\\ud800"', '"\\udc00x"', "1e400", "-1e999", "1" * 400, "0.0e0", '"\\u0000"'])
field_depth = st.one_of(st.integers(1, 1200), st.sampled_from([62, 63, 64, 65, 300, 990, 1000, 1500, 2000]))


@st.composite
def mutated_cases(draw: st.DrawFn) -> Case:
    """Valid W&B bodies with one field removed, retyped or mangled, labelled with what the contract says."""
    doc: Any = draw(flat_events)
    is_run = doc["event_type"].strip().upper() in RUN_TYPES
    op = draw(st.sampled_from(MUTATIONS))
    label: str | None = EVENT
    raw: str | None = None
    read = RUN_READ if is_run else ARTIFACT_READ
    three_parts = not is_run and doc["artifact_version_string"].count("/") == 2
    if op == "drop-event-type":
        del doc["event_type"]
        label = NOT_EVENT
    elif op == "retype-event-type":
        doc["event_type"] = draw(bad_event_type)
        label = NOT_EVENT
    elif op == "unknown-event-type":
        doc["event_type"] = draw(unknown_event_type)
        label = NOT_EVENT
    elif op == "respell-event-type":
        doc["event_type"] = spell(draw, doc["event_type"].strip().upper())
    elif op == "drop-optional":
        optional = [k for k in doc if k not in ("event_type", "artifact_version_string")
                    and (is_run or three_parts or k not in ("entity_name", "project_name"))]
        if optional:
            del doc[draw(st.sampled_from(optional))]
    elif op == "retype-read-field":
        doc[draw(st.sampled_from(read))] = draw(not_text)
        label = NOT_EVENT
    elif op == "number-read-field":
        key = draw(st.sampled_from(read))
        doc[key] = draw(number)
        # numbers are read as text (the pure parser decides); never a valid artifact_version_string
        label = NOT_EVENT if key == "artifact_version_string" else None
    elif op == "retype-unread-field":
        unread = ["event_author", "artifact_version", draw(extra_key)]
        if is_run:  # a run event reads no artifact field
            unread += [k for k in ARTIFACT_READ if k not in RUN_READ]
        doc[draw(st.sampled_from(unread))] = draw(plain_json)
    elif op == "drop-version-string" and not is_run:
        del doc["artifact_version_string"]
        label = NOT_EVENT
    elif op == "bad-version-string" and not is_run:
        doc["artifact_version_string"] = draw(bad_version_string)
        label = NOT_EVENT
    elif op == "short-version-string-alone" and not is_run:
        doc["artifact_version_string"] = f"{draw(part)}:{draw(part)}"
        doc.pop(draw(st.sampled_from(["entity_name", "project_name"])), None)
        label = NOT_EVENT
    elif op == "client-payload-not-object":
        doc["client_payload"] = draw(client_payload_not_object)
        label = NOT_EVENT
    elif op == "client-payload-null":
        doc["client_payload"] = None
    elif op == "root-not-object":
        doc = draw(st.sampled_from([[doc], doc["event_type"], None])) if draw(st.booleans()) else draw(not_an_object)
        label = NOT_EVENT
    elif op == "non-json-token":
        doc[draw(extra_key)] = RAW
        raw = draw(st.sampled_from(["NaN", "Infinity", "-Infinity"]))
        label = NOT_JSON  # RFC 8259: not JSON
    elif op == "odd-token":
        doc[draw(extra_key)] = RAW
        raw = draw(odd_token)
        label = None
    elif op == "deep-field":
        depth = draw(field_depth)
        doc[draw(extra_key)] = RAW
        raw = "[" * depth + "]" * depth
        label = EVENT if depth <= 16 else None
    if (label == EVENT and isinstance(doc, dict) and not op.startswith("client-payload")
            and draw(st.integers(0, 3)) == 0):
        # the repository_dispatch shape: the same fields inside client_payload
        doc = {"event_type": draw(unknown_event_type), "client_payload": doc}
    body_text = dumped(draw, doc)
    if raw is not None:
        body_text = body_text.replace(json.dumps(RAW), raw)
    body = utf8(body_text)
    if op == "truncate" and body:
        body = body[: draw(st.integers(0, 10**6)) % len(body)]
        label = NOT_JSON  # a proper prefix of a JSON object is never JSON
    elif op == "trailing-garbage":
        body += draw(st.sampled_from([b"x", b"}", b",", b"]", b"{}", b"\x00", b"\xff", b"//"]))
        label = NOT_JSON
    elif op == "trailing-whitespace":
        body += draw(st.sampled_from([b" ", b"\n", b"\r\n\t "]))
    return Case(body=body, body_label=label, note=f"mutation/{'run' if is_run else 'artifact'}/{op}")


# --------------------------------------------------------------------------- headers

_SIG_RIGHT = ["b64", "sha256=b64", "SHA256=b64", "hex", "HEX", "sha256=hex", " b64", "b64  "]
_SIG_EITHER = ["b64-unpadded", "urlsafe-b64", "sha256:hex"]  # the right MAC, written unusually
_SIG_BAD = ["missing", "empty", "sha256=", "flipped-b64", "flipped-hex", "wrong-secret", "token-as-secret",
            "hmac-sha1", "mac-of-body+newline", "plain-sha256", "mac+1-byte", "hex+00"]
_sig_right = st.tuples(st.sampled_from(_SIG_RIGHT), st.none())
signature_kinds = st.one_of(
    _sig_right, _sig_right, _sig_right, _sig_right,  # weighted, so that all headers are often right together
    st.tuples(st.sampled_from(_SIG_EITHER), st.none()),
    st.tuples(st.sampled_from(_SIG_BAD), st.none()),
    st.tuples(st.just("truncated-b64"), st.integers(1, 43)),
    st.tuples(st.just("truncated-hex"), st.integers(1, 63)),
    st.tuples(st.just("random-mac"), st.binary(min_size=32, max_size=32)),
    st.tuples(st.just("mac-of-other-body"), st.binary(max_size=200)),
    st.tuples(st.just("text"), header_text),
    st.tuples(st.just("huge"), st.integers(100, 200_000)),
)


def signature(kind: tuple[str, Any], body: bytes) -> tuple[str | None, str]:
    """(X-Wandb-Signature value, or None for no header; label) of a signature kind for `body`."""
    name, arg = kind
    mac = _mac(body)
    b64, hx = base64.b64encode(mac).decode(), mac.hex()
    if name in _SIG_RIGHT:
        return {"b64": b64, "sha256=b64": "sha256=" + b64, "SHA256=b64": "SHA256=" + b64, "hex": hx,
                "HEX": hx.upper(), "sha256=hex": "sha256=" + hx, " b64": " " + b64, "b64  ": b64 + "  "}[name], OK
    if name in _SIG_EITHER:
        value = {"b64-unpadded": b64.rstrip("="), "urlsafe-b64": base64.urlsafe_b64encode(mac).decode(),
                 "sha256:hex": "sha256:" + hx}[name]
        return value, OK if value == b64 else EITHER
    flipped = bytes([mac[0] ^ 1]) + mac[1:]
    if name in _SIG_BAD:
        return {
            "missing": None, "empty": "", "sha256=": "sha256=", "flipped-b64": base64.b64encode(flipped).decode(),
            "flipped-hex": flipped.hex(), "wrong-secret": base64.b64encode(_mac(body, "not-the-secret")).decode(),
            "token-as-secret": base64.b64encode(_mac(body, TOKEN)).decode(),
            "hmac-sha1": base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha1).digest()).decode(),
            "mac-of-body+newline": base64.b64encode(_mac(body + b"\n")).decode(),
            "plain-sha256": base64.b64encode(hashlib.sha256(body).digest()).decode(),
            "mac+1-byte": base64.b64encode(mac + b"\0").decode(), "hex+00": hx + "00",
        }[name], BAD
    if name == "truncated-b64":
        return b64[:arg], BAD
    if name == "truncated-hex":
        return hx[:arg], BAD
    if name == "random-mac":
        return base64.b64encode(arg).decode(), OK if arg == mac else BAD
    if name == "mac-of-other-body":
        return base64.b64encode(_mac(arg)).decode(), OK if arg == body else BAD
    if name == "text":
        return arg, BAD  # (a random text that is the right MAC: never)
    return "A" * arg, BAD  # huge


_right_authorization = st.sampled_from([(f"Bearer {TOKEN}", OK), (f"bearer {TOKEN}", OK), (f"BEARER {TOKEN}", OK),
                                        (f"Bearer   {TOKEN}", OK), (f"Bearer {TOKEN}  ", OK)])
authorization_variants = st.one_of(
    _right_authorization, _right_authorization, _right_authorization,
    st.sampled_from([(f"Bearer\t{TOKEN}", EITHER)]),  # RFC 7235 says one space; a lenient parser may take a tab
    st.sampled_from([
        (None, BAD), ("", BAD), ("Bearer", BAD), ("Bearer ", BAD), (f"Basic {base64.b64encode(TOKEN.encode()).decode()}", BAD),
        (f"Token {TOKEN}", BAD), (TOKEN, BAD), (f"{TOKEN} Bearer", BAD), (f"Bearer {TOKEN}x", BAD),
        (f"Bearer x{TOKEN}", BAD), (f"Bearer {TOKEN[:-1]}", BAD), (f"Bearer {TOKEN.upper()}", BAD),
        (f"Bearer {TOKEN} {TOKEN}", BAD), (f"Bearer {SECRET}", BAD), ("Bearer null", BAD),
    ]),
    header_text.filter(lambda s: s.strip() != TOKEN).map(lambda s: (f"Bearer {s}", BAD)),
    header_text.map(lambda s: (s, BAD)),
    st.integers(100, 200_000).map(lambda n: ("Bearer " + "t" * n, BAD)),
)

_right_content_type = st.sampled_from([
    ("application/json", OK), ("application/json; charset=utf-8", OK), ("application/json;charset=UTF-8", OK),
    ("Application/JSON", OK), ("APPLICATION/JSON ; charset=\"utf-8\"", OK), ("application/vnd.wandb+json", OK),
    ("application/cloudevents+json; charset=utf-8", OK), ("application/json; charset=latin-1", OK),
    ("application/json; foo", OK), (" application/json", OK),
])
content_type_variants = st.one_of(
    _right_content_type, _right_content_type, _right_content_type,
    st.sampled_from([("text/json", EITHER), ("application/+json", EITHER), ("application/json, text/plain", EITHER)]),
    st.sampled_from([
        (None, BAD), ("", BAD), ("text/plain", BAD), ("text/plain; charset=utf-8", BAD),
        ("application/x-www-form-urlencoded", BAD), ("multipart/form-data; boundary=x", BAD),
        ("application/jsonp", BAD), ("application/json-seq", BAD), ("application/xml", BAD), ("json", BAD),
        ("application", BAD), ("*/*", BAD), ("application/octet-stream", BAD), ("application/json/x", BAD),
        ("text/html; a=application/json", BAD),
    ]),
    header_text.filter(lambda s: "json" not in s.lower()).map(lambda s: (s, BAD)),
)


def _header_value(value: str) -> str | bytes:
    return value if value.isascii() else value.encode("latin-1")


JUNK_NAMES = ["X-Forwarded-For", "X-Request-Id", "Accept", "Cookie", "X-Wandb-Signature-256", "Authorisation",
              "Content-Encoding", "X-Wandb-Event", "Expect"]


@st.composite
def header_cases(draw: st.DrawFn) -> Case:
    """A valid body with Content-Type, Authorization and X-Wandb-Signature variants, duplicated headers,
    junk headers, for every credentials mode."""
    mode = draw(st.sampled_from(list(MODES)))
    body = utf8(dumped(draw, draw(valid_events)))
    labels: dict[str, str] = {}
    headers: list[tuple[str, str | bytes]] = []
    for name in ("Content-Type", "Authorization", "X-Wandb-Signature"):
        present: list[str] = []  # labels of the copies sent
        for _ in range(2 if draw(st.integers(0, 5)) == 0 else 1):  # sometimes the same header twice
            if name == "X-Wandb-Signature":
                value, label = signature(draw(signature_kinds), body)
            else:
                value, label = draw(content_type_variants if name == "Content-Type" else authorization_variants)
            if value is not None:
                headers.append((draw(st.sampled_from([name, name.lower(), name.upper()])), _header_value(value)))
                present.append(label)
        # no copy: as bad as a wrong one; copies that disagree: the receiver may go by either
        labels[name] = BAD if not present else present[0] if len(set(present)) == 1 else EITHER
    for _ in range(draw(st.integers(0, 2))):
        headers.append((draw(st.sampled_from(JUNK_NAMES)), _header_value(draw(header_text))))
    headers = draw(st.permutations(headers))
    return Case(body=body, headers=list(headers), body_label=EVENT, mode=mode, ctype=labels["Content-Type"],
                token=labels["Authorization"], signature=labels["X-Wandb-Signature"], note=f"headers/{mode}")


# --------------------------------------------------------------------------- sizes


@st.composite
def size_cases(draw: st.DrawFn) -> Case:
    """Valid events padded to sizes around the limit, sent with a true, absent or lying Content-Length."""
    target = draw(st.one_of(
        st.sampled_from([LIMIT - 1, LIMIT, LIMIT + 1, 2 * LIMIT, 16 * LIMIT, 256 * LIMIT]),
        st.integers(LIMIT - 8, LIMIT + 8), st.integers(100, 3 * LIMIT),
    ))
    doc = {"event_type": draw(st.sampled_from(RUN_TYPES)), "run_id": draw(st.text(string.ascii_letters, max_size=8)),
           "pad": ""}
    base = len(json.dumps(doc).encode())
    doc["pad"] = "x" * max(0, target - base)
    body = json.dumps(doc).encode()
    transport = draw(st.sampled_from(["true-length", "true-length", "chunked", "declared-smaller",
                                      "declared-larger", "declared-over-limit", "declared-malformed",
                                      "declared-negative"]))
    declared: str | None = None
    if transport == "declared-smaller":
        declared = str(max(0, len(body) - draw(st.integers(1, 50))))
    elif transport == "declared-larger":
        declared = str(len(body) + draw(st.integers(1, 50)))
    elif transport == "declared-over-limit":
        declared = str(draw(st.sampled_from([LIMIT + 1, 10 * LIMIT, 10**12, 10**40])))
    elif transport == "declared-malformed":
        declared = draw(st.sampled_from(["abc", "1.5", "", "0x10", "12abc", "1e3", "--1", "1 2", str(len(body)) + "x"]))
    elif transport == "declared-negative":
        declared = "-1"
    signed = draw(st.integers(0, 3)) > 0
    headers = right_headers(body if signed else b"another body", "secret")
    return Case(body=body, headers=headers, body_label=EVENT, signature=OK if signed else BAD,
                content_length=declared, chunked=transport == "chunked", note=f"size/{target}/{transport}")


# =========================================================================== the properties


def check_one(pool: Receivers, case: Case, prop: str) -> None:
    pool.stats.cases[prop] += 1
    pool.deliver(case, prop)


def check_duplicate(pool: Receivers, drawn: tuple[Any, str, str], prop: str) -> None:
    """The same body twice (signed two ways, Content-Type with and without charset): one event."""
    doc, first_sig, second_ctype = drawn
    body = utf8(json.dumps(doc))
    pool.stats.cases[prop] += 1
    mac = _mac(body)
    sig = {"b64": base64.b64encode(mac).decode(), "hex": mac.hex(), "prefixed": "sha256=" + mac.hex()}
    first = pool.deliver(Case(body=body, body_label=EVENT, headers=[
        ("Content-Type", "application/json"), ("X-Wandb-Signature", sig[first_sig])], note="dup/1"), prop)
    second = pool.deliver(Case(body=body, body_label=EVENT, headers=[
        ("Content-Type", second_ctype), ("X-Wandb-Signature", sig["b64"])], note="dup/2"), prop)
    if first.status_code == 202 and second.status_code == 202:
        a, b = first.json(), second.json()
        ok = a["event_id"] == b["event_id"] and b["duplicate"] is True
    else:
        ok = len(body) > LIMIT and first.status_code == second.status_code == 413
    if not ok:
        pool.violated(prop, [("same body twice, not one event",
                              f"{first.status_code} {first.text} / {second.status_code} {second.text}")])


@dataclass(frozen=True)
class Property:
    strategy: st.SearchStrategy[Any]
    check: Callable[[Receivers, Any, str], None]
    share: float  # of the benchmark's cases
    doc: str


PROPERTIES: dict[str, Property] = {
    "arbitrary-bytes": Property(arbitrary_bytes_cases(), check_one, 0.15,
                                "arbitrary bytes (raw, flipped, spliced, stretched to the limit), signed"),
    "json-any-shape": Property(json_cases(), check_one, 0.25,
                               "JSON of any shape: NaN/Infinity, huge numbers, deep nesting, surrogates, UTF-16/32, latin-1, BOMs"),
    "wandb-mutations": Property(mutated_cases(), check_one, 0.25,
                                "valid W&B bodies with a field removed/retyped/mangled, labelled by the contract"),
    "headers": Property(header_cases(), check_one, 0.20,
                        "Content-Type / Authorization / X-Wandb-Signature variants, duplicates, all credential modes"),
    "sizes": Property(size_cases(), check_one, 0.10,
                      "sizes around the limit with true, absent (chunked) and lying Content-Length"),
    "same-body-twice": Property(
        st.tuples(valid_events, st.sampled_from(["b64", "hex", "prefixed"]),
                  st.sampled_from(["application/json", "application/json; charset=utf-8", "APPLICATION/JSON"])),
        check_duplicate, 0.05, "the same body twice gives the same event_id and one event"),
}


def run_property(pool: Receivers, name: str, max_examples: int, *, seed: int | None = None) -> None:
    """Run one property for `max_examples` cases (derandomized, or from `seed`)."""
    prop = PROPERTIES[name]

    @settings(max_examples=max_examples, deadline=None, derandomize=seed is None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.filter_too_much, HealthCheck.large_base_example])
    @given(prop.strategy)
    def property_(case: Any) -> None:
        prop.check(pool, case, name)

    if seed is not None:
        property_ = hypothesis_seed(seed)(property_)
    property_()
    pool.settle()


# =========================================================================== pytest


# The outbox's sender (retry jitter) uses the global `random` while hypothesis generates cases.
pytestmark = pytest.mark.filterwarnings("ignore:Do not use the `random` module")


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory):
    receivers = Receivers(tmp_path_factory.mktemp("receiver-fuzz"), strict=True)
    yield receivers
    receivers.close()


@pytest.mark.parametrize("name", list(PROPERTIES))
def test_receiver_property(pool: Receivers, name: str) -> None:
    run_property(pool, name, EXAMPLES)
    assert pool.stats.five_xx == 0 and pool.stats.rejected_events == 0

"""A local W&B API server for tests: what the real `wandb` SDK (0.31, its `wandb-core` service included)
sends for runs, artifacts, the registry and automations, answered over real HTTP on 127.0.0.1.

    with FakeWandb(api_key="k" * 40) as fake:
        os.environ["WANDB_BASE_URL"] = fake.url
        wandb.Api(api_key=fake.api_key).artifact("acme/churn/churn-data:latest")

What it serves:
- `POST /graphql`: every query and mutation is parsed (graphql-core) and executed against the
  state below (`tests.fakes._graphql`). A field the fake does not serve, or an operation it does
  not know, is a **400 naming it**, never an empty answer. When the operation is one of the SDK's
  own generated operations (`wandb/**/_generated/operations.py`), the answer is validated with the
  SDK's generated pydantic result model before it is sent: an answer the SDK's models would not
  accept is a 400 naming the model (not retried by the SDK), so the fake cannot drift from what
  W&B's schema promises. Everything refused is also kept in `errors`.
- `POST /files/<entity>/<project>/<run>/file_stream`: the run's history/summary/console stream.
- `PUT`/`GET /storage/<key>`: the signed upload and download URLs the SDK is handed for artifact
  files and manifests (content stored in memory, checked against the digest the SDK declared).
- `POST /sdk/otel/...`: the SDK's telemetry, accepted and dropped.

State, in memory: entities (users, teams, orgs), projects, runs (config, summary, history rows),
artifact types, collections (`ArtifactSequence` for logged artifacts, `ArtifactPortfolio` for
registry collections in `<org>/wandb-registry-<name>`), versions with files, manifests, metadata,
and memberships holding aliases (an alias is held by one version of a collection at a time), webhook
integrations and automations (triggers).

Auth is W&B's: HTTP Basic `api:<key>`; a wrong or missing key is a 401. Faults (`fail_next`,
`slow_next`) answer like W&B under trouble: 401, 404, 429 with `Retry-After`, 500, 502, a slow reply.
`operations` lists every GraphQL operation name received, in order; `requests` every (method, path).
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import itertools
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote, urlsplit

from tests.fakes._graphql import GraphQLFault, Obj, UnknownField, execute, operation_of, parse_document
from tests.fakes._http import LoopbackServer, Reply

__all__ = ["FakeWandb", "sdk_operation_models"]

_GENERATED_PACKAGES = (
    "wandb.sdk.artifacts._generated",
    "wandb.automations._generated",
    "wandb.apis._generated",
    "wandb.sdk.internal._generated",
    "wandb.sdk.projects._generated",
)


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _gid(kind: str, n: int) -> str:
    """W&B's global ids: base64 of `<Type>:<number>`."""
    return base64.b64encode(f"{kind}:{n}".encode()).decode()


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


_MODELS: dict[str, Any] | None = None


def sdk_operation_models() -> dict[str, Any]:
    """Operation name -> the SDK's generated pydantic result model, for every generated operation."""
    global _MODELS
    if _MODELS is None:
        models: dict[str, Any] = {}
        for package in _GENERATED_PACKAGES:
            try:
                ops = importlib.import_module(f"{package}.operations")
            except ImportError:
                continue
            for const in getattr(ops, "__all__", ()):
                text = getattr(ops, const, None)
                if not isinstance(text, str):
                    continue
                name = operation_of(parse_document(text)).name.value
                try:
                    module = importlib.import_module(f"{package}.{_snake(name)}")
                except ImportError:
                    continue
                model = getattr(module, name, None) or getattr(module, name.replace("ID", "Id"), None)
                if model is not None:
                    models[name] = model
        _MODELS = models
    return _MODELS


# --------------------------------------------------------------------------- state


@dataclass
class _Entity:
    id: int
    name: str
    kind: str = "USER"  # USER | TEAM | ORGANIZATION
    org: str | None = None  # the organization a team or user belongs to


@dataclass
class _Project:
    id: int
    entity: str
    name: str
    created: str = field(default_factory=_now)


@dataclass
class _Run:
    id: int
    entity: str
    project: str
    name: str
    display_name: str = ""
    job_type: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    state: str = "running"
    files: dict[str, str] = field(default_factory=dict)  # name -> storage key
    created: str = field(default_factory=_now)
    exitcode: int | None = None


@dataclass
class _Collection:
    id: int
    entity: str
    project: str
    name: str
    type_name: str
    kind: str  # ArtifactSequence | ArtifactPortfolio
    description: str | None = None
    created: str = field(default_factory=_now)
    memberships: list[_Membership] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)


@dataclass
class _Version:
    id: int
    sequence: _Collection
    version_index: int
    digest: str
    metadata: dict[str, Any]
    description: str | None
    state: str = "PENDING"
    created_by: _Run | None = None
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {md5, size, key}
    manifest_key: str | None = None
    created: str = field(default_factory=_now)
    updated: str = field(default_factory=_now)
    used_by: list[_Run] = field(default_factory=list)


@dataclass
class _Membership:
    id: int
    collection: _Collection
    version: _Version
    version_index: int
    aliases: list[str] = field(default_factory=list)
    created: str = field(default_factory=_now)


@dataclass
class _Fault:
    match: str  # an operation name, or a path prefix ("/files/", "/storage/")
    status: int
    headers: dict[str, str]
    body: Any
    times: int
    delay: float


@dataclass
class _Integration:
    id: int
    entity: str
    name: str
    url: str
    secret_ref: str | None = None
    token_ref: str | None = None
    created: str = field(default_factory=_now)


@dataclass
class _Automation:
    id: int
    entity: str
    name: str
    description: str | None
    enabled: bool
    scope_type: str
    scope_id: str
    event_type: str
    event_filter: str
    action_type: str
    action: dict[str, Any]
    created: str = field(default_factory=_now)
    updated: str | None = None


class FakeWandb(LoopbackServer):
    """The W&B API on loopback; `url` is what WANDB_BASE_URL (or a block's base_url) points at."""

    default_headers = {"Content-Type": "application/json"}

    def __init__(self, api_key: str = "local-wandb-key-" + "0" * 30, *, user: str = "ada",
                 teams: tuple[str, ...] = ("acme",), org: str = "acme-corp",
                 registries: tuple[str, ...] = ("model", "dataset"), validate: bool = True) -> None:
        self.api_key = api_key
        self.validate = validate
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self.entities: dict[str, _Entity] = {}
        self.projects: dict[tuple[str, str], _Project] = {}
        self.runs: dict[tuple[str, str, str], _Run] = {}
        self.collections: dict[tuple[str, str, str], _Collection] = {}
        self.versions: dict[int, _Version] = {}
        self.memberships: dict[int, _Membership] = {}
        self.blobs: dict[str, bytes] = {}
        self.integrations: dict[int, _Integration] = {}
        self.automations: dict[int, _Automation] = {}
        self.operations: list[str] = []
        self.requests: list[tuple[str, str]] = []
        self.bodies: list[dict[str, Any]] = []  # every GraphQL request: operation, query, variables
        self.validated: list[str] = []  # operations whose answer passed the SDK's generated model
        self.errors: list[str] = []  # what the fake refused (unknown fields, failed validation)
        self._faults: list[_Fault] = []
        self.user = user
        self.org = org
        self._entity(user, "USER", org)
        self._entity(org, "ORGANIZATION", org)
        for team in teams:
            self._entity(team, "TEAM", org)
        for name in registries:  # W&B's core registries exist in every org; others are created by an admin
            self.add_registry(name)
        self.url = f"http://127.0.0.1:{self._serve('fake-wandb')}"

    # -- set-up helpers for tests ---------------------------------------------------------------

    def _entity(self, name: str, kind: str = "TEAM", org: str | None = None) -> _Entity:
        with self._lock:
            if name not in self.entities:
                self.entities[name] = _Entity(next(self._ids), name, kind, org or self.org)
            return self.entities[name]

    def add_registry(self, name: str) -> None:
        """A registry: the project `wandb-registry-<name>` of the org's entity."""
        with self._lock:
            key = (self.org, f"wandb-registry-{name}")
            self.projects.setdefault(key, _Project(next(self._ids), *key))

    def add_integration(self, entity: str, name: str, url: str) -> int:
        """A generic webhook integration (W&B: team settings -> webhooks), as a W&B admin would add it."""
        with self._lock:
            self._entity(entity)
            iid = next(self._ids)
            self.integrations[iid] = _Integration(iid, entity, name, url)
            return iid

    def fail_next(self, match: str, status: int, *, times: int = 1, headers: dict[str, str] | None = None,
                  body: Any = None, delay: float = 0.0) -> None:
        """The next `times` requests for `match` (a GraphQL operation name or a path prefix) get `status`."""
        with self._lock:
            self._faults.append(_Fault(match, status, dict(headers or {}), body, times, delay))

    def clear_faults(self) -> None:
        """Forget every fault not yet answered."""
        with self._lock:
            self._faults.clear()

    def slow_next(self, match: str, seconds: float, *, times: int = 1) -> None:
        """The next `times` requests for `match` are answered normally, `seconds` late."""
        self.fail_next(match, 0, times=times, delay=seconds)

    def alias_holder(self, entity: str, project: str, collection: str, alias: str) -> int | None:
        """The version index holding `alias` in a collection, or None."""
        with self._lock:
            col = self.collections.get((entity, project, collection))
            for m in col.memberships if col else ():
                if alias in m.aliases:
                    return m.version_index
            return None

    # -- HTTP -----------------------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> Reply | None:
        path = unquote(urlsplit(target).path)
        with self._lock:
            self.requests.append((method, path))
        if path.startswith("/sdk/otel/"):
            return 200, {"Content-Type": "application/x-protobuf"}, b""
        if path.startswith("/storage/"):
            fault = self._fault(path)
            if fault is not None:
                return fault
            return self._storage(method, path[len("/storage/"):], raw)
        if not self._authorized(headers):
            return 401, {}, json.dumps({"errors": [{"message": "user is not logged in"}]}).encode()
        if path == "/graphql" and method == "POST":
            return self._graphql(raw)
        m = re.fullmatch(r"/files/([^/]+)/([^/]+)/([^/]+)/file_stream", path)
        if m and method == "POST":
            fault = self._fault(path)
            return fault if fault is not None else self._file_stream(*m.groups(), raw)
        return 404, {}, json.dumps({"error": f"the fake W&B server does not serve {method} {path}"}).encode()

    def _authorized(self, headers: dict[str, str]) -> bool:
        auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
        if auth.startswith("Basic "):
            try:
                user, _, key = base64.b64decode(auth[6:]).decode().partition(":")
            except ValueError:
                return False
            return key == self.api_key
        if auth.startswith("Bearer "):
            return auth[7:] == self.api_key
        return False

    def _fault(self, name: str) -> Reply | None:
        with self._lock:
            fault = next((f for f in self._faults if name == f.match or (f.match.startswith("/") and name.startswith(f.match))), None)
            if fault is None:
                return None
            fault.times -= 1
            if fault.times <= 0:
                self._faults.remove(fault)
        if fault.delay:
            time.sleep(fault.delay)
        if not fault.status:
            return None
        body = fault.body if fault.body is not None else {"errors": [{"message": f"fault injected: {fault.status}"}]}
        return fault.status, fault.headers, (body if isinstance(body, bytes) else json.dumps(body).encode())

    def _graphql(self, raw: bytes) -> Reply:
        try:
            request = json.loads(raw)
            document = parse_document(request["query"])
            op = operation_of(document)
        except (ValueError, KeyError, TypeError, UnknownField) as exc:
            return self._refuse(400, f"not a GraphQL request: {exc}")
        name = op.name.value if op.name else "(anonymous)"
        with self._lock:
            self.operations.append(name)
            self.bodies.append({"operation": name, "query": request["query"], "variables": request.get("variables")})
        fault = self._fault(name)
        if fault is not None:
            return fault
        try:
            with self._lock:
                answer = execute(document, request.get("variables"), {"query": self._query_root(),
                                                                       "mutation": self._mutation_root()})
        except UnknownField as exc:
            return self._refuse(400, f"operation {name}: {exc}")
        except GraphQLFault as fault_:
            return fault_.status, {}, json.dumps({"errors": [{"message": str(fault_)}], "data": None}).encode()
        except Exception as exc:  # noqa: BLE001 - a bug in the fake: loud, and not retried by the SDK
            import traceback

            return self._refuse(400, f"operation {name}: the fake failed: {exc!r}\n{traceback.format_exc()}")
        if self.validate and "errors" not in answer and (model := sdk_operation_models().get(name)) is not None:
            try:
                model.model_validate(answer["data"])
            except Exception as exc:  # noqa: BLE001 - pydantic's ValidationError, reported whole
                return self._refuse(400, f"operation {name}: the fake's answer fails the SDK's model "
                                         f"{model.__module__}.{model.__name__}: {exc}")
            with self._lock:
                self.validated.append(name)
        return 200, {}, json.dumps(answer).encode()

    def _refuse(self, status: int, message: str) -> Reply:
        with self._lock:
            self.errors.append(message)
        return status, {}, json.dumps({"errors": [{"message": message}]}).encode()

    # -- storage --------------------------------------------------------------------------------

    def _storage_url(self, key: str) -> str:
        return f"{self.url}/storage/{key}"

    def _storage(self, method: str, key: str, raw: bytes) -> Reply:
        with self._lock:
            if method == "PUT":
                self.blobs[key] = raw
                return 200, {}, b""
            if method in ("GET", "HEAD") and key in self.blobs:
                return 200, {"Content-Type": "application/octet-stream"}, self.blobs[key]
        return 404, {}, json.dumps({"error": f"no object {key}"}).encode()

    def blob(self, key: str | None) -> bytes | None:
        with self._lock:
            return self.blobs.get(key) if key else None

    def _file_stream(self, entity: str, project: str, run_name: str, raw: bytes) -> Reply:
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return 400, {}, json.dumps({"error": "file_stream body is not JSON"}).encode()
        with self._lock:
            run = self.runs.get((entity, project, run_name))
            if run is None:
                return 404, {}, json.dumps({"error": f"no run {entity}/{project}/{run_name}"}).encode()
            for fname, chunk in (body.get("files") or {}).items():
                for line in chunk.get("content") or ():
                    try:
                        row = json.loads(line)
                    except ValueError:
                        continue
                    if fname == "wandb-history.jsonl":
                        run.history.append(row)
                    elif fname == "wandb-summary.json":
                        run.summary = row
            if body.get("complete"):
                run.state = "finished" if not body.get("exitcode") else "failed"
                run.exitcode = body.get("exitcode")
        return 200, {}, json.dumps({"exitcode": None, "limits": {}}).encode()

    # -- lookups --------------------------------------------------------------------------------

    def _project(self, entity: str | None, name: str | None, create: bool = False) -> _Project | None:
        entity = entity or self.user
        if not name:
            return None
        key = (entity, name)
        if key not in self.projects:
            if not create or name.startswith("wandb-registry-"):  # registries are created by an admin
                return None
            if entity not in self.entities:
                if not create:
                    return None
                self._entity(entity)
            self.projects[key] = _Project(next(self._ids), entity, name)
        return self.projects[key]

    def _collection(self, entity: str, project: str, name: str) -> _Collection | None:
        return self.collections.get((entity, project, name))

    def _resolve_member(self, entity: str, project: str, name: str) -> _Membership | None:
        """`collection:v3`, `collection:alias` or `collection:latest` in one project."""
        collection, _, ref = name.partition(":")
        col = self._collection(entity, project, collection)
        if col is None:
            return None
        live = [m for m in col.memberships if m.version.state == "COMMITTED"]
        if not ref or ref == "latest":
            explicit = next((m for m in live if "latest" in m.aliases), None)
            return explicit or (max(live, key=lambda m: m.version_index) if live else None)
        if re.fullmatch(r"v\d+", ref):
            return next((m for m in live if m.version_index == int(ref[1:])), None)
        return next((m for m in live if ref in m.aliases), None)

    def _source_membership(self, version: _Version) -> _Membership:
        return next(m for m in version.sequence.memberships if m.version is version)

    # -- GraphQL objects ------------------------------------------------------------------------
    # Each builder returns an `Obj` whose fields are computed when asked for. Names and shapes are
    # W&B's (see the SDK's generated models); only what the SDK asks for is served.

    def _entity_obj(self, e: _Entity) -> Obj:
        org = self.entities.get(e.org or "") if e.org else None
        return Obj(
            "Entity", id=_gid("Entity", e.id), name=e.name, isTeam=e.kind == "TEAM",
            organization=lambda: self._org_obj(org) if org and e.kind != "USER" else None,
            user=lambda: self._user_obj() if e.kind == "USER" else None,
            defaultAccess="USER", readOnlyAdmin=False, privateOnly=False, codeSavingEnabled=False,
            entityType=e.kind.lower(), coreWeaveOrganizationId=None,
            projects=lambda **kw: self._connection([self._project_obj(p) for p in self.projects.values()
                                                    if p.entity == e.name]),
            artifactMemberships=lambda **kw: self._memberships_connection(e, **kw),
            project=lambda name=None: self._project_obj(p) if (p := self._project(e.name, name)) else None,
            integrations=lambda **kw: self._connection([self._integration_obj(g) for g in self.integrations.values()
                                                        if g.entity == e.name]),
            triggers=lambda **kw: self._connection([self._trigger_obj(t) for t in self.automations.values()
                                                    if t.entity == e.name]),
        )

    def _org_obj(self, org: _Entity) -> Obj:
        return Obj("Organization", id=_gid("Organization", org.id), name=org.name,
                   orgEntity=lambda: Obj("Entity", id=_gid("Entity", org.id), name=org.name, entityType="organization",
                                         artifactMemberships=lambda **kw: self._memberships_connection(org, **kw)),
                   advancedRegistryFeatures=Obj("AdvancedRegistryFeatures", advancedSearch=False),
                   coreWeaveOrganizationId=None)

    def _user_obj(self) -> Obj:
        me = self.entities[self.user]
        teams = [e for e in self.entities.values() if e.kind == "TEAM"]
        orgs = [e for e in self.entities.values() if e.kind == "ORGANIZATION"]
        return Obj(
            "User", id=_gid("User", me.id), name=me.name, username=me.name, email=f"{me.name}@example.com",
            admin=False, flags=None, entity=me.name, userInfo=None, deletedAt=None,
            defaultEntity=lambda: self._entity_obj(me),
            teams=lambda **kw: self._connection([self._entity_obj(t) for t in teams]),
            organizations=lambda **kw: [self._org_obj(o) for o in orgs],
            apiKeys=lambda **kw: self._connection([]),
            projects=lambda **kw: self._connection([self._project_obj(p) for p in self.projects.values()]),
        )

    @staticmethod
    def _connection(nodes: list[Any], typename: str = "Connection", edge_fields: list[dict[str, Any]] | None = None) -> Obj:
        extra = edge_fields or [{} for _ in nodes]
        return Obj(typename, edges=[Obj("Edge", node=n, cursor=str(i), **extra[i]) for i, n in enumerate(nodes)],
                   totalCount=len(nodes),
                   pageInfo=Obj("PageInfo", hasNextPage=False, endCursor=str(len(nodes) - 1) if nodes else None))

    def _project_obj(self, p: _Project) -> Obj:
        entity = self.entities[p.entity]
        return Obj(
            "Project", id=_gid("Project", p.id), internalId=_gid("Project", p.id), name=p.name, entityName=p.entity,
            createdAt=p.created, updatedAt=None, isBenchmark=False, readOnly=False, access="PRIVATE", description=None,
            allowAllArtifactTypesInRegistry=True, user=lambda: self._user_obj(),
            entity=lambda: self._entity_obj(entity),
            artifact=lambda name: self._member_artifact(p, name),
            artifactCollectionMembership=lambda name: self._member_obj_or_none(p, name),
            artifactType=lambda name: self._type_obj(p, name),
            artifactTypes=lambda **kw: self._connection([self._type_obj(p, t) for t in self._types(p)]),
            artifactCollection=lambda name: self._collection_or_none(p, name),
            artifactSequence=lambda name: self._collection_or_none(p, name, "ArtifactSequence"),
            triggers=lambda **kw: [self._trigger_obj(t) for t in self.automations.values()
                                   if t.scope_type == "PROJECT" and t.scope_id == _gid("Project", p.id)
                                   or t.scope_type == "ARTIFACT_COLLECTION" and any(
                                       t.scope_id == _gid(c.kind, c.id) for c in self.collections.values()
                                       if (c.entity, c.project) == (p.entity, p.name))],
            run=lambda name: self._run_obj(self.runs[(p.entity, p.name, name)]) if (p.entity, p.name, name) in self.runs else None,
        )

    def _types(self, p: _Project) -> list[str]:
        return sorted({c.type_name for c in self.collections.values() if (c.entity, c.project) == (p.entity, p.name)})

    def _type_obj(self, p: _Project, name: str) -> Obj | None:
        if name not in self._types(p):
            return None
        cols = [c for c in self.collections.values() if (c.entity, c.project, c.type_name) == (p.entity, p.name, name)]
        return Obj("ArtifactType", id=_gid("ArtifactType", abs(hash((p.entity, p.name, name))) % 10**9), name=name,
                   description=None, createdAt=p.created,
                   artifactCollections=lambda **kw: self._connection([self._collection_obj(c) for c in cols]),
                   artifactCollection=lambda name: next((self._collection_obj(c) for c in cols if c.name == name), None),
                   artifact=lambda name: self._member_artifact(p, name))

    def _collection_or_none(self, p: _Project, name: str, kind: str | None = None) -> Obj | None:
        col = self._collection(p.entity, p.name, name.partition(":")[0])
        return self._collection_obj(col) if col and (kind is None or col.kind == kind) else None

    def _collection_obj(self, c: _Collection) -> Obj:
        project = self.projects[(c.entity, c.project)]
        live = [m for m in c.memberships if m.version.state == "COMMITTED"]
        return Obj(
            c.kind, implements=("ArtifactCollection",), id=_gid(c.kind, c.id), name=c.name,
            description=c.description, createdAt=c.created, updatedAt=None,
            project=lambda: self._project_obj(project),
            type=lambda: Obj("ArtifactType", id=_gid("ArtifactType", c.id), name=c.type_name),
            defaultArtifactType=lambda: Obj("ArtifactType", id=_gid("ArtifactType", c.id), name=c.type_name),
            tags=lambda **kw: self._connection([Obj("Tag", id=_gid("Tag", i), name=t, tagCategoryName="")
                                                for i, t in enumerate(c.tags)]),
            aliases=lambda **kw: self._connection([Obj("ArtifactAlias", id=_gid("ArtifactAlias", m.id * 100 + i),
                                                       alias=a, artifactCollectionName=c.name)
                                                   for m in live for i, a in enumerate(m.aliases)]),
            artifactMembership=lambda aliasName: self._member_obj_or_none(project, f"{c.name}:{aliasName}"),
            artifactMemberships=lambda **kw: self._connection(
                [self._membership_obj(m) for m in sorted(live, key=lambda m: -m.version_index)]),
            artifacts=lambda **kw: self._connection(
                [self._version_obj(m.version, m) for m in sorted(live, key=lambda m: -m.version_index)],
                edge_fields=[{"version": f"v{m.version_index}"} for m in sorted(live, key=lambda m: -m.version_index)]),
        )

    def _member_obj_or_none(self, p: _Project, name: str) -> Obj | None:
        m = self._resolve_member(p.entity, p.name, name)
        return self._membership_obj(m) if m else None

    def _member_artifact(self, p: _Project, name: str) -> Obj | None:
        m = self._resolve_member(p.entity, p.name, name)
        return self._version_obj(m.version, m) if m else None

    def _alias_objs(self, v: _Version) -> list[Obj]:
        out = []
        for m in self._memberships_of(v):
            for i, a in enumerate(m.aliases):
                out.append(Obj("ArtifactAlias", id=_gid("ArtifactAlias", m.id * 100 + i), alias=a,
                               artifactCollection=lambda m=m: self._collection_obj(m.collection),
                               artifactCollectionName=m.collection.name))
        return out

    def _memberships_of(self, v: _Version) -> list[_Membership]:
        return [m for m in self.memberships.values() if m.version is v]

    def _version_obj(self, v: _Version, via: _Membership | None = None) -> Obj:
        """An Artifact. `via` is the membership it was reached through (its version index, aliases)."""
        source = self._source_membership(v)
        size = sum(f["size"] for f in v.files.values())
        return Obj(
            "Artifact", id=_gid("Artifact", v.id), digest=v.digest, description=v.description,
            metadata=json.dumps(v.metadata), state=v.state, size=size, fileCount=len(v.files),
            versionIndex=(via or source).version_index, commitHash=v.digest[:20] if v.state == "COMMITTED" else None,
            createdAt=v.created, updatedAt=v.updated, historyStep=None, ttlDurationSeconds=-1, ttlIsInherited=True,
            digestAlgorithm="MANIFEST_MD5", tags=[], labels=None, usedAs=None,
            artifactType=lambda: Obj("ArtifactType", id=_gid("ArtifactType", v.sequence.id), name=v.sequence.type_name),
            artifactSequence=lambda: self._collection_obj(v.sequence),
            aliases=lambda: self._alias_objs(v),
            artifactMemberships=lambda **kw: self._connection([self._membership_obj(m) for m in self._memberships_of(v)]),
            createdBy=lambda: self._run_obj(v.created_by) if v.created_by else None,
            usedBy=lambda **kw: self._connection([self._run_obj(r) for r in v.used_by]),
            currentManifest=lambda: self._manifest_obj(v),
            files=lambda **kw: self._files_connection(v, **kw),
            filesByManifestEntries=lambda **kw: self._files_connection(v, **kw),
        )

    def _membership_obj(self, m: _Membership) -> Obj:
        return Obj(
            "ArtifactCollectionMembership", id=_gid("ArtifactCollectionMembership", m.id),
            versionIndex=m.version_index, createdAt=m.created,
            aliases=[Obj("ArtifactAlias", id=_gid("ArtifactAlias", m.id * 100 + i), alias=a,
                         artifactCollection=lambda: self._collection_obj(m.collection))
                     for i, a in enumerate(m.aliases)],
            artifactCollection=lambda: self._collection_obj(m.collection),
            artifact=lambda: self._version_obj(m.version, m),
            files=lambda **kw: self._files_connection(m.version, **kw),
        )

    def _manifest_obj(self, v: _Version) -> Obj | None:
        if v.manifest_key is None:
            return None
        return Obj("ArtifactManifest", id=_gid("ArtifactManifest", v.id),
                   file=Obj("File", id=_gid("File", v.id), name="wandb_manifest.json",
                            directUrl=self._storage_url(v.manifest_key), url=self._storage_url(v.manifest_key),
                            uploadUrl=None, uploadHeaders=[]))

    def _file_obj(self, v: _Version, name: str) -> Obj:
        f = v.files[name]
        return Obj("File", id=_gid("File", hash((v.id, name)) % 10**9), name=name, displayName=name.rsplit("/", 1)[-1],
                   url=self._storage_url(f["key"]), directUrl=self._storage_url(f["key"]), sizeBytes=f["size"],
                   digest=f["md5"], md5=f["md5"], mimetype="application/octet-stream", updatedAt=v.updated,
                   storagePath=f["key"], uploadUrl=None, uploadHeaders=[])

    def _files_connection(self, v: _Version, names: list[str] | None = None, entries: Any = None, **kw: Any) -> Obj:
        wanted = list(v.files)
        if names:
            wanted = [n for n in wanted if n in names]
        if entries:
            wanted = [e.get("name") for e in entries if e.get("name") in v.files]
        return self._connection([self._file_obj(v, n) for n in wanted])

    def _run_obj(self, r: _Run) -> Obj:
        project = self.projects[(r.entity, r.project)]
        return Obj(
            "Run", id=_gid("Run", r.id), name=r.name, displayName=r.display_name or r.name, jobType=r.job_type,
            config=json.dumps(r.config), summaryMetrics=json.dumps(r.summary), state=r.state, tags=list(r.tags),
            createdAt=r.created, heartbeatAt=r.created, description=None, notes=None, group=None, sweepName=None,
            historyLineCount=len(r.history), eventsLineCount=0, logLineCount=0, historyKeys=None,
            projectId=project.id, commit=None, readOnly=False, systemMetrics="{}",
            project=lambda: self._project_obj(project), user=lambda: self._user_obj(),
            outputArtifacts=lambda **kw: self._connection(
                [self._version_obj(v) for v in self.versions.values() if v.created_by is r]),
            inputArtifacts=lambda **kw: self._connection(
                [self._version_obj(v) for v in self.versions.values() if r in v.used_by]),
            sampledHistory=lambda **kw: [list(r.history)],
            history=lambda **kw: [json.dumps(h) for h in r.history],
        )

    def _memberships_connection(self, e: _Entity, **kw: Any) -> Obj:
        members = [m for m in self.memberships.values() if m.collection.entity == e.name
                   and m.version.state == "COMMITTED"]
        return self._connection([self._membership_obj(m) for m in members])

    # -- roots ----------------------------------------------------------------------------------

    def _query_root(self) -> Obj:
        return Obj(
            "Query",
            viewer=lambda **kw: self._user_obj(),
            serverInfo=lambda: Obj(
                "ServerInfo", features=[Obj("ServerFeature", name=n, isEnabled=on) for n, on in self.features().items()],
                cliVersionInfo=None, latestLocalVersionInfo=None, availableBucketProviders=[],
                defaultCloudRegion=None, exposesExplicitRunQueueAckPath=False),
            project=lambda name=None, entityName=None: (
                self._project_obj(p) if (p := self._project(entityName, name)) else None),
            entity=lambda name=None: self._entity_obj(self.entities[name]) if name in self.entities else None,
            artifact=lambda id: self._artifact_by_gid(id),
            organization=lambda name=None: (
                self._org_obj(self.entities[name]) if self.entities.get(name or "", _Entity(0, "")).kind == "ORGANIZATION"
                else None),
            clientIDMapping=lambda clientID: None,
            artifactCollection=lambda id: next((self._collection_obj(c) for c in self.collections.values()
                                                if _gid(c.kind, c.id) == id), None),
        )

    #: Server features the SDK knows that this fake does not serve (the SDK then takes its other path).
    NOT_SERVED_FEATURES = frozenset({
        "SERVER_FEATURE_UNSPECIFIED", "CLIENT_IDS", "STRUCTURED_CONSOLE_LOGS",
        "ARTIFACT_COLLECTION_MEMBERSHIP_FILE_DOWNLOAD_HANDLER", "ARTIFACT_V2_DOWNLOAD_HANDLER_SUPPORTS_ARTIFACT_ID",
        "MARK_RUN_FILES_UPLOADED", "SWEEPS_QUERY_FILTERING", "SWEEPS_LOCAL_SCHEDULER", "FILESTREAM_GZIP",
        "ARTIFACT_DIGEST_ALGORITHM", "AUTOMATION_LAST_EXECUTED_AT", "AUTOMATION_ACTION_ARIA", "EVAL_TABLES_CES",
    })

    def features(self) -> dict[str, bool]:
        """The server features announced (W&B's SaaS has them all); the SDK picks its code paths from them."""
        from wandb.proto import wandb_internal_pb2 as pb

        return {name: name not in self.NOT_SERVED_FEATURES for name in pb.ServerFeature.keys()}

    def _artifact_by_gid(self, gid: str) -> Obj | None:
        try:
            kind, _, n = base64.b64decode(gid).decode().partition(":")
        except ValueError:
            return None
        v = self.versions.get(int(n)) if kind == "Artifact" and n.isdigit() else None
        return self._version_obj(v) if v else None

    def _version_by_gid(self, gid: str) -> _Version:
        try:
            kind, _, n = base64.b64decode(gid).decode().partition(":")
        except ValueError:
            kind, n = "", ""
        v = self.versions.get(int(n)) if kind == "Artifact" and n.isdigit() else None
        if v is None:
            raise GraphQLFault(f"artifact {gid} not found")
        return v

    def _mutation_root(self) -> Obj:
        return Obj(
            "Mutation",
            upsertBucket=lambda input: self._upsert_bucket(input),
            createArtifact=lambda input: self._create_artifact(input),
            createArtifactManifest=lambda input: self._create_manifest(input),
            updateArtifactManifest=lambda input: self._update_manifest(input),
            createArtifactFiles=lambda input: self._create_files(input),
            commitArtifact=lambda input: self._commit(input),
            useArtifact=lambda input: self._use(input),
            linkArtifact=lambda input: self._link(input),
            updateArtifact=lambda input: self._update_artifact(input),
            addAliases=lambda input: self._add_aliases(input),
            deleteAliases=lambda input: self._delete_aliases(input),
            createFilterTrigger=lambda input: self._create_trigger(input),
            updateFilterTrigger=lambda input: self._update_trigger(input),
            deleteTrigger=lambda input: self._delete_trigger(input),
            createRunFiles=lambda input: self._create_run_files(input),
        )

    # -- mutations ------------------------------------------------------------------------------

    def _upsert_bucket(self, i: dict[str, Any]) -> Obj:
        entity = i.get("entityName") or self.user
        project_name = i.get("modelName") or "uncategorized"
        if entity not in self.entities:
            raise GraphQLFault(f"entity {entity} not found", extensions={"code": "PERMISSION_ERROR"})
        p = self._project(entity, project_name, create=True)
        assert p is not None
        name = i.get("name") or uuid.uuid4().hex[:8]
        key = (entity, p.name, name)
        inserted = key not in self.runs
        run = self.runs.setdefault(key, _Run(next(self._ids), entity, p.name, name))
        if i.get("displayName"):
            run.display_name = i["displayName"]
        if i.get("jobType"):
            run.job_type = i["jobType"]
        if i.get("config"):
            run.config = {k: (v.get("value") if isinstance(v, dict) and "value" in v else v)
                          for k, v in json.loads(i["config"]).items()}
        if i.get("summaryMetrics"):
            run.summary.update(json.loads(i["summaryMetrics"]))
        if i.get("tags") is not None:
            run.tags = list(i["tags"])
        if i.get("state"):
            run.state = i["state"]
        return Obj("UpsertBucketPayload", bucket=lambda: self._run_obj(run), inserted=inserted)

    def _run_of(self, entity: str | None, project: str | None, name: str | None) -> _Run:
        run = self.runs.get((entity or self.user, project or "", name or ""))
        if run is None:
            raise GraphQLFault(f"run {entity}/{project}/{name} not found")
        return run

    def _create_run_files(self, i: dict[str, Any]) -> Obj:
        run = self._run_of(i.get("entityName"), i.get("projectName"), i.get("runName"))
        files = []
        for name in i.get("files") or ():
            key = run.files.setdefault(name, f"runs/{run.id}/{uuid.uuid4().hex}/{name}")
            files.append(Obj("File", name=name, uploadUrl=self._storage_url(key), id=_gid("File", run.id)))
        return Obj("CreateRunFilesPayload", runID=_gid("Run", run.id), uploadHeaders=[], files=files)

    # artifacts: create (pending) -> manifest and files uploaded -> commit; link into a portfolio

    def _new_collection(self, entity: str, project: str, name: str, type_name: str, kind: str) -> _Collection:
        key = (entity, project, name)
        col = self.collections.get(key)
        if col is None:
            if self._project(entity, project, create=True) is None:
                raise GraphQLFault(f"project {entity}/{project} not found (a registry is created by an org admin)")
            col = self.collections[key] = _Collection(next(self._ids), entity, project, name, type_name, kind)
        elif col.type_name != type_name:
            raise GraphQLFault(f"artifact collection {name} has type {col.type_name}, not {type_name}")
        return col

    def _give_alias(self, col: _Collection, member: _Membership, alias: str) -> None:
        """W&B keeps an alias on one version of a collection: giving it takes it from the holder."""
        for m in col.memberships:
            if m is not member and alias in m.aliases:
                m.aliases.remove(alias)
        if alias not in member.aliases:
            member.aliases.append(alias)

    def _create_artifact(self, i: dict[str, Any]) -> Obj:
        entity, project = i.get("entityName") or self.user, i.get("projectName")
        if entity not in self.entities:
            raise GraphQLFault(f"entity {entity} not found", extensions={"code": "PERMISSION_ERROR"})
        col = self._new_collection(entity, project, i["artifactCollectionName"], i["artifactTypeName"], "ArtifactSequence")
        run = self.runs.get((entity, project, i.get("runName") or ""))
        existing = next((m for m in col.memberships if m.version.digest == i["digest"]), None)
        if existing is not None and i.get("enableDigestDeduplication"):
            v = existing.version
            for a in i.get("aliases") or ():
                self._give_alias(col, existing, a["alias"])
        else:
            index = len(col.memberships)
            vid = next(self._ids)
            v = self.versions[vid] = _Version(vid, col, index, i["digest"], json.loads(i.get("metadata") or "{}"),
                                              i.get("description"), created_by=run)
            member = _Membership(next(self._ids), col, v, index)
            self.memberships[member.id] = member
            col.memberships.append(member)
            v.pending_aliases = [a["alias"] for a in i.get("aliases") or ()]  # type: ignore[attr-defined]
        latest = max(col.memberships, key=lambda m: m.version_index).version
        return Obj("CreateArtifactPayload", artifact=Obj(
            "Artifact", id=_gid("Artifact", v.id), state=v.state, digest=v.digest,
            artifactSequence=Obj("ArtifactSequence", id=_gid("ArtifactSequence", col.id), name=col.name,
                                 latestArtifact=Obj("Artifact", id=_gid("Artifact", latest.id),
                                                    versionIndex=self._source_membership(latest).version_index))))

    def _create_manifest(self, i: dict[str, Any]) -> Obj:
        v = self._version_by_gid(i["artifactID"])
        v.manifest_key = f"manifests/{v.id}/{uuid.uuid4().hex}/{i.get('name') or 'wandb_manifest.json'}"
        return Obj("CreateArtifactManifestPayload", artifactManifest=self._upload_manifest_obj(v))

    def _update_manifest(self, i: dict[str, Any]) -> Obj:
        v = next((x for x in self.versions.values() if _gid("ArtifactManifest", x.id) == i.get("artifactManifestID")), None)
        if v is None:
            raise GraphQLFault(f"artifact manifest {i.get('artifactManifestID')} not found")
        return Obj("UpdateArtifactManifestPayload", artifactManifest=self._upload_manifest_obj(v))

    def _upload_manifest_obj(self, v: _Version) -> Obj:
        assert v.manifest_key is not None
        return Obj("ArtifactManifest", id=_gid("ArtifactManifest", v.id),
                   file=Obj("File", id=_gid("File", v.id), name="wandb_manifest.json", displayName="wandb_manifest.json",
                            uploadUrl=self._storage_url(v.manifest_key), uploadHeaders=[],
                            directUrl=self._storage_url(v.manifest_key)))

    def _create_files(self, i: dict[str, Any]) -> Obj:
        nodes = []
        for f in i.get("artifactFiles") or ():
            v = self._version_by_gid(f["artifactID"])
            uploads = getattr(v, "uploads", None)
            if uploads is None:
                uploads = v.uploads = {}  # type: ignore[attr-defined]
            md5 = f.get("md5") or ""
            key = f"files/{hashlib.sha256(md5.encode()).hexdigest()[:32]}/{f['name']}"
            stored = key in self.blobs
            uploads[f["name"]] = {"md5": md5, "key": key}
            nodes.append(Obj("File", id=_gid("File", abs(hash(key)) % 10**9), name=f["name"], displayName=f["name"],
                             uploadUrl=None if stored else self._storage_url(key), uploadHeaders=[],
                             uploadMultipartUrls=None, storagePath=key,
                             artifact=Obj("Artifact", id=_gid("Artifact", v.id))))
        return Obj("CreateArtifactFilesPayload", files=self._connection(nodes))

    def _commit(self, i: dict[str, Any]) -> Obj:
        v = self._version_by_gid(i["artifactID"])
        if v.state != "COMMITTED":
            manifest = self.blob(v.manifest_key)
            if manifest is None:
                raise GraphQLFault(f"artifact {i['artifactID']} cannot be committed: its manifest was never uploaded")
            uploads = getattr(v, "uploads", {})
            files: dict[str, dict[str, Any]] = {}
            for name, entry in json.loads(manifest).get("contents", {}).items():
                up = uploads.get(name)
                if entry.get("ref"):
                    continue  # a reference entry: nothing stored here
                if up is None or up["key"] not in self.blobs:
                    raise GraphQLFault(f"artifact {i['artifactID']} cannot be committed: {name} was never uploaded")
                data = self.blobs[up["key"]]
                md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
                if md5 != entry.get("digest"):
                    raise GraphQLFault(f"artifact file {name}: uploaded content has md5 {md5}, manifest says {entry.get('digest')}")
                files[name] = {"md5": md5, "size": len(data), "key": up["key"]}
            v.files = files
            v.state = "COMMITTED"
            v.updated = _now()
            source = self._source_membership(v)
            for a in getattr(v, "pending_aliases", ()):
                self._give_alias(v.sequence, source, a)
        return Obj("CommitArtifactPayload", artifact=Obj("Artifact", id=_gid("Artifact", v.id), digest=v.digest))

    def _use(self, i: dict[str, Any]) -> Obj:
        v = self._version_by_gid(i["artifactID"])
        run = self.runs.get((i.get("entityName") or self.user, i.get("projectName") or "", i.get("runName") or ""))
        if run is not None and run not in v.used_by:
            v.used_by.append(run)
        return Obj("UseArtifactPayload", artifact=self._version_obj(v))

    def _link(self, i: dict[str, Any]) -> Obj:
        v = self._version_by_gid(i["artifactID"])
        if v.state != "COMMITTED":
            raise GraphQLFault(f"artifact {i['artifactID']} is not committed and cannot be linked")
        entity, project = i.get("entityName") or self.user, i.get("projectName") or ""
        if entity not in self.entities:
            raise GraphQLFault(f"entity {entity} not found", extensions={"code": "PERMISSION_ERROR"})
        col = self._new_collection(entity, project, i["artifactPortfolioName"], v.sequence.type_name, "ArtifactPortfolio")
        member = next((m for m in col.memberships if m.version is v), None)
        if member is None:
            member = _Membership(next(self._ids), col, v, len(col.memberships))
            self.memberships[member.id] = member
            col.memberships.append(member)
            self._give_alias(col, member, "latest")
        for a in i.get("aliases") or ():
            self._give_alias(col, member, a["alias"] if isinstance(a, dict) else a)
        return Obj("LinkArtifactPayload", versionIndex=member.version_index,
                   artifactMembership=lambda: self._membership_obj(member))

    def _update_artifact(self, i: dict[str, Any]) -> Obj:
        v = self._version_by_gid(i["artifactID"])
        if "metadata" in i and i["metadata"] is not None:
            v.metadata = json.loads(i["metadata"])
        if i.get("description") is not None:
            v.description = i["description"]
        v.updated = _now()
        return Obj("UpdateArtifactPayload", artifact=self._version_obj(v))

    def _alias_target(self, v: _Version, a: dict[str, Any]) -> tuple[_Collection, _Membership]:
        entity = a.get("entityName") or v.sequence.entity
        project = a.get("projectName") or v.sequence.project
        col = self._collection(entity, project, a["artifactCollectionName"])
        member = next((m for m in col.memberships if m.version is v), None) if col else None
        if col is None or member is None:
            raise GraphQLFault(f"artifact is not in collection {entity}/{project}/{a['artifactCollectionName']}")
        return col, member

    def _add_aliases(self, i: dict[str, Any]) -> Obj:
        v = self._version_by_gid(i["artifactID"])
        for a in i.get("aliases") or ():
            col, member = self._alias_target(v, a)
            self._give_alias(col, member, a["alias"])
        return Obj("AddAliasesPayload", success=True)

    def _delete_aliases(self, i: dict[str, Any]) -> Obj:
        v = self._version_by_gid(i["artifactID"])
        for a in i.get("aliases") or ():
            _, member = self._alias_target(v, a)
            if a["alias"] in member.aliases:
                member.aliases.remove(a["alias"])
        return Obj("DeleteAliasesPayload", success=True)

    # automations: W&B calls them triggers (scope + triggering condition + triggered action)

    def _integration_obj(self, g: _Integration) -> Obj:
        return Obj("GenericWebhookIntegration", implements=("Integration",), id=_gid("Integration", g.id),
                   name=g.name, urlEndpoint=g.url, createdAt=g.created)

    def _scope_obj(self, scope_type: str, scope_id: str) -> Obj | None:
        kind, _, n = base64.b64decode(scope_id).decode().partition(":")
        if scope_type == "PROJECT":
            p = next((p for p in self.projects.values() if p.id == int(n)), None)
            return self._project_obj(p) if p else None
        if scope_type == "ARTIFACT_COLLECTION":
            c = next((c for c in self.collections.values() if c.id == int(n)), None)
            return self._collection_obj(c) if c else None
        e = next((e for e in self.entities.values() if e.id == int(n)), None)
        return self._entity_obj(e) if e else None

    def _trigger_obj(self, t: _Automation) -> Obj:
        integration = self.integrations.get(t.action.get("integration", -1))
        return Obj(
            "Trigger", id=_gid("Trigger", t.id), createdAt=t.created, updatedAt=t.updated, name=t.name,
            description=t.description, enabled=t.enabled,
            scope=lambda: self._scope_obj(t.scope_type, t.scope_id),
            triggeringCondition=Obj("FilterEventTriggeringCondition", eventType=t.event_type,
                                    filter=self._saved_filter(t.event_type, t.event_filter)),
            triggeredAction=Obj("GenericWebhookTriggeredAction",
                                integration=self._integration_obj(integration) if integration else None,
                                requestPayload=t.action.get("requestPayload")),
        )

    @staticmethod
    def _saved_filter(event_type: str, event_filter: str) -> str:
        """W&B answers an artifact event's filter wrapped one level deeper (`{"filter": ...}`) than it was
        given; run metric and run state filters come back as given (see wandb.automations._inputs)."""
        if event_type.startswith("RUN_"):
            return event_filter
        return json.dumps({"filter": json.loads(event_filter)}, separators=(",", ":"))

    def _check_trigger_input(self, i: dict[str, Any]) -> tuple[str, str, str, str, dict[str, Any]]:
        scope_type, scope_id = i["scopeType"], i["scopeID"]
        if self._scope_obj(scope_type, scope_id) is None:
            raise GraphQLFault(f"scope {scope_type} {scope_id} not found")
        try:
            json.loads(i["eventFilter"])
        except (TypeError, ValueError):
            raise GraphQLFault(f"eventFilter is not JSON: {i.get('eventFilter')!r}") from None
        if i["triggeredActionType"] != "GENERIC_WEBHOOK":
            raise GraphQLFault(f"this fake serves GENERIC_WEBHOOK actions, not {i['triggeredActionType']}")
        hook = (i.get("triggeredActionConfig") or {}).get("genericWebhookActionInput") or {}
        kind, _, n = base64.b64decode(hook.get("integrationID") or "").decode().partition(":")
        if kind != "Integration" or not n.isdigit() or int(n) not in self.integrations:
            raise GraphQLFault(f"integration {hook.get('integrationID')} not found")
        return scope_type, scope_id, i["triggeringEventType"], i["eventFilter"], {
            "integration": int(n), "requestPayload": hook.get("requestPayload")}

    def _scope_entity(self, scope_type: str, scope_id: str) -> str:
        kind, _, n = base64.b64decode(scope_id).decode().partition(":")
        if scope_type == "PROJECT":
            return next(p.entity for p in self.projects.values() if p.id == int(n))
        if scope_type == "ARTIFACT_COLLECTION":
            return next(c.entity for c in self.collections.values() if c.id == int(n))
        return next(e.name for e in self.entities.values() if e.id == int(n))

    def _create_trigger(self, i: dict[str, Any]) -> Obj:
        scope_type, scope_id, event, event_filter, action = self._check_trigger_input(i)
        entity = self._scope_entity(scope_type, scope_id)
        if any(t.name == i["name"] and t.entity == entity for t in self.automations.values()):
            raise GraphQLFault(f"a trigger named {i['name']} already exists", status=409)
        tid = next(self._ids)
        t = self.automations[tid] = _Automation(tid, entity, i["name"], i.get("description"), bool(i.get("enabled", True)),
                                                 scope_type, scope_id, event, event_filter, "GENERIC_WEBHOOK", action)
        return Obj("CreateFilterTriggerPayload", trigger=self._trigger_obj(t))

    def _trigger_by_gid(self, gid: str) -> _Automation:
        kind, _, n = base64.b64decode(gid or "").decode().partition(":")
        t = self.automations.get(int(n)) if kind == "Trigger" and n.isdigit() else None
        if t is None:
            raise GraphQLFault(f"trigger {gid} not found")
        return t

    def _update_trigger(self, i: dict[str, Any]) -> Obj:
        t = self._trigger_by_gid(i["id"])
        merged = {"scopeType": t.scope_type, "scopeID": t.scope_id, "triggeringEventType": t.event_type,
                  "eventFilter": t.event_filter, "triggeredActionType": t.action_type,
                  "triggeredActionConfig": {"genericWebhookActionInput": {
                      "integrationID": _gid("Integration", t.action["integration"]),
                      "requestPayload": t.action.get("requestPayload")}},
                  **{k: v for k, v in i.items() if v is not None}}
        t.scope_type, t.scope_id, t.event_type, t.event_filter, t.action = self._check_trigger_input(merged)
        t.name = merged.get("name") or t.name
        if "description" in i and i["description"] is not None:
            t.description = i["description"]
        if i.get("enabled") is not None:
            t.enabled = bool(i["enabled"])
        t.updated = _now()
        return Obj("UpdateFilterTriggerPayload", trigger=self._trigger_obj(t))

    def _delete_trigger(self, i: dict[str, Any]) -> Obj:
        t = self._trigger_by_gid(i["triggerID"])
        del self.automations[t.id]
        return Obj("DeleteTriggerPayload", success=True)

"""Model registries with stages as aliases: `candidate` -> `staging` -> `production`.

One version holds an alias at a time: giving it to a version takes it from the previous holder.

- `LocalRegistry` (the embedded default): a directory per collection, one sub-directory per version,
  `aliases.json`. Every alias change is announced exactly as W&B would announce it: a signed
  W&B-shaped webhook (`ADD_ARTIFACT_ALIAS`, and `LINK_ARTIFACT` for a new version) to our receiver,
  so the local chain runs through the same automations as production. Announcements are written to
  an on-disk queue in the same step as the change and removed once the receiver answered 202, so a
  receiver that is down loses nothing: the queue is re-sent by the next registry call or by
  `python -m flows.registry announce`.
- `WandbRegistry`: logs the model as a W&B artifact and links it to
  `<org>/wandb-registry-<registry>/<collection>`; W&B then sends its own webhooks.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

from blocks.wandb import WandbCredentials, modelops_home

__all__ = ["STAGES", "LocalRegistry", "ModelVersion", "RegistryError", "WandbRegistry", "parse_model_ref",
           "registry_path"]

STAGES = ("candidate", "staging", "production")
_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*$")
_VERSION = re.compile(r"^v(\d+)$")


class RegistryError(Exception):
    """A registry call that cannot succeed as asked (unknown version, bad name, ...)."""


@dataclass(frozen=True)
class ModelVersion:
    collection: str
    version: str  # "v3"
    aliases: tuple[str, ...]
    metadata: dict[str, Any]
    uri: str  # the model file (local) or the registry path (W&B)
    path: str = ""  # the registry's name for it: <entity>/wandb-registry-<registry>/<collection>:<version>
    created: str = ""
    announced: bool = True  # False when an announcement is still queued (receiver unreachable)

    def to_dict(self) -> dict[str, Any]:
        return {"collection": self.collection, "version": self.version, "aliases": list(self.aliases),
                "metadata": dict(self.metadata), "uri": self.uri, "path": self.path, "created": self.created,
                "announced": self.announced}


def check_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise RegistryError(f"{what} {value!r} is not a valid name (letters, digits, '.', '_', '-')")
    return value


def parse_model_ref(ref: str) -> tuple[str, str]:
    """`churn-model:v3` or `churn-model:production` -> (collection, version-or-alias)."""
    collection, sep, version = ref.rpartition(":")
    if not sep or not collection or not version:
        raise RegistryError(f"model reference {ref!r} must look like <collection>:<version or alias>, e.g. churn-model:v3")
    return check_name(collection.rsplit("/", 1)[-1], "collection"), check_name(version, "version")


def registry_path(org: str, registry: str, collection: str, version: str | None = None) -> str:
    """`acme`, `model`, `churn` (, `v3`) -> `acme/wandb-registry-model/churn(:v3)` (W&B registry naming)."""
    for value, what in ((org, "org"), (registry, "registry"), (collection, "collection")):
        check_name(value, what)
    if registry.startswith("wandb-registry-"):
        registry = registry[len("wandb-registry-"):]
    path = f"{org}/wandb-registry-{registry}/{collection}"
    return f"{path}:{check_name(version, 'version')}" if version else path


class LocalRegistry(Block):
    """Models in a local directory, announcing alias changes to the webhook receiver like W&B does."""

    _block_type_name: ClassVar[str] = "Local Model Registry"
    _block_type_slug: ClassVar[str] = "local-model-registry"
    _description: ClassVar[str] = "Directory-backed model registry with W&B alias semantics and W&B-shaped webhooks."

    path: str = Field(default="", description="Registry directory (default $MODELOPS_HOME/registry/<registry>).")
    entity: str = Field(default="local", description="The org named in announcements: <entity>/wandb-registry-<registry>/...")
    registry: str = Field(default="model", description="Registry name, as in W&B's wandb-registry-<name>.")
    receiver_url: str = Field(
        default="", description="Where alias changes are announced, e.g. http://127.0.0.1:8787/hooks/wandb "
                                "(default $MODELOPS_RECEIVER_URL; empty: not announced).")
    webhook_secret: SecretStr | None = Field(default=None, description="HMAC secret (default $WANDB_WEBHOOK_SECRET).")
    webhook_token: SecretStr | None = Field(default=None, description="Bearer token (default $WANDB_WEBHOOK_TOKEN).")
    author: str = Field(default="modelops", description="event_author of the announcements.")
    announce_timeout: float = Field(default=10.0, gt=0, description="Seconds per announcement attempt.")

    @field_validator("entity", "registry")
    @classmethod
    def _check(cls, value: str) -> str:
        return check_name(value, "registry name")

    # -- layout -----------------------------------------------------------------------------------
    def root(self) -> Path:
        return Path(self.path).resolve() if self.path else modelops_home() / "registry" / self.registry

    def _dir(self, collection: str) -> Path:
        return self.root() / check_name(collection, "collection")

    def project(self) -> str:
        return f"wandb-registry-{self.registry}"

    @contextlib.contextmanager
    def _locked(self, collection: str) -> Iterator[Path]:
        d = self._dir(collection)
        d.mkdir(parents=True, exist_ok=True)
        with open(d / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield d
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @staticmethod
    def _aliases(d: Path) -> dict[str, str]:
        f = d / "aliases.json"
        return json.loads(f.read_text()) if f.exists() else {}

    @staticmethod
    def _numbers(d: Path) -> list[int]:
        return sorted(int(m.group(1)) for p in d.iterdir() if p.is_dir() and (m := _VERSION.match(p.name)))

    def _version(self, d: Path, version: str, aliases: Mapping[str, str]) -> ModelVersion:
        info = json.loads((d / version / "version.json").read_text())
        return ModelVersion(
            collection=d.name, version=version,
            aliases=tuple(sorted((a for a, v in aliases.items() if v == version), key=_alias_order)),
            metadata=info.get("metadata", {}), uri=str(d / version / info["file"]),
            path=f"{self.entity}/{self.project()}/{d.name}:{version}", created=info.get("created", ""),
        )

    # -- reading ----------------------------------------------------------------------------------
    def versions(self, collection: str) -> list[ModelVersion]:
        d = self._dir(collection)
        if not d.exists():
            return []
        aliases = self._aliases(d)
        return [self._version(d, f"v{n}", aliases) for n in self._numbers(d)]

    def get(self, collection: str, ref: str) -> ModelVersion:
        """A version by `vN`, alias or `latest`; RegistryError naming what exists when there is none."""
        d = self._dir(collection)
        if not d.exists():
            raise RegistryError(f"no collection {collection!r} in the registry at {self.root()}")
        aliases = self._aliases(d)
        numbers = self._numbers(d)
        if ref == "latest" and numbers and "latest" not in aliases:
            version = f"v{numbers[-1]}"
        elif ref in aliases:
            version = aliases[ref]
        elif _VERSION.match(ref) and int(ref[1:]) in numbers:
            version = ref
        elif not numbers:
            raise RegistryError(f"{collection} has no versions in the registry at {self.root()}")
        else:
            held = ", ".join(f"{a}={v}" for a, v in sorted(aliases.items())) or "no aliases"
            raise RegistryError(f"{collection}:{ref} is not in the registry (versions v{numbers[0]}..v{numbers[-1]}; {held})")
        return self._version(d, version, aliases)

    def find(self, collection: str, ref: str) -> ModelVersion | None:
        try:
            return self.get(collection, ref)
        except RegistryError:
            return None

    def download(self, mv: ModelVersion) -> str:
        """The version's model file (already local)."""
        return mv.uri

    # -- writing ----------------------------------------------------------------------------------
    def register(self, collection: str, model_file: str | os.PathLike[str], metadata: Mapping[str, Any] | None = None,
                 aliases: tuple[str, ...] | list[str] = ("candidate",), event: str = "LINK_ARTIFACT") -> ModelVersion:
        """Copy the file in as the next version and give it `aliases`; announce it and the aliases.

        `event` is how W&B announces the new version: `LINK_ARTIFACT` for a model linked to the
        registry, `CREATE_ARTIFACT` for a new version of a dataset.
        """
        if event not in ("LINK_ARTIFACT", "CREATE_ARTIFACT"):
            raise RegistryError(f"event must be LINK_ARTIFACT or CREATE_ARTIFACT, got {event!r}")
        src = Path(model_file)
        if not src.is_file():
            raise RegistryError(f"model file {src} does not exist")
        for a in aliases:
            check_name(a, "alias")
        meta = json.loads(json.dumps(dict(metadata or {}), default=str))  # JSON-safe, detached copy
        with self._locked(collection) as d:
            numbers = self._numbers(d)
            version = f"v{numbers[-1] + 1 if numbers else 0}"
            staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=d))
            shutil.copy2(src, staging / src.name)
            _write_json(staging / "version.json", {"file": src.name, "metadata": meta,
                                                   "created": datetime.now(timezone.utc).isoformat()})
            current = self._aliases(d)
            prepared = [self._prepare(self._body(event, collection, version, "", meta))]
            for a in aliases:
                current[a] = version
                prepared.append(self._prepare(self._body("ADD_ARTIFACT_ALIAS", collection, version, a, meta)))
            os.rename(staging, d / version)  # the version appears whole or not at all
            _write_json(d / "aliases.json", current)
            self._commit(prepared)
            mv = self._version(d, version, current)
        return self._with_delivery(mv)

    def set_alias(self, collection: str, version: str, alias: str) -> ModelVersion:
        """Give `alias` to `version` (its previous holder loses it) and announce it. Idempotent."""
        check_name(alias, "alias")
        with self._locked(collection) as d:
            target = self.get(collection, version)
            current = self._aliases(d)
            if current.get(alias) != target.version:
                current[alias] = target.version
                prepared = self._prepare(self._body("ADD_ARTIFACT_ALIAS", collection, target.version, alias,
                                                    target.metadata))
                _write_json(d / "aliases.json", current)
                self._commit([prepared])
            mv = self._version(d, target.version, current)
        return self._with_delivery(mv)

    def remove_alias(self, collection: str, alias: str, version: str | None = None) -> None:
        """Take `alias` away (only from `version` when given: another holder keeps it). No webhook:
        W&B sends none for a removed alias either."""
        with self._locked(collection) as d:
            current = self._aliases(d)
            if alias in current and (version is None or current[alias] == version):
                del current[alias]
                _write_json(d / "aliases.json", current)

    def update_metadata(self, collection: str, version: str, patch: Mapping[str, Any]) -> ModelVersion:
        """Merge `patch` into the version's metadata (top-level keys replaced). No webhook."""
        with self._locked(collection) as d:
            target = self.get(collection, version)
            f = d / target.version / "version.json"
            info = json.loads(f.read_text())
            info["metadata"] = {**info.get("metadata", {}), **json.loads(json.dumps(dict(patch), default=str))}
            _write_json(f, info)
            return self._version(d, target.version, self._aliases(d))

    # -- announcements ----------------------------------------------------------------------------
    def _outbox(self) -> Path:
        return self.root() / ".announcements"

    def _body(self, event_type: str, collection: str, version: str, alias: str, metadata: Mapping[str, Any]) -> dict:
        from deployments.wandb_events import artifact_body

        return artifact_body(event_type, self.entity, self.project(), collection, version, alias=alias,
                             author=self.author, metadata=metadata)

    def _prepare(self, body: dict[str, Any]) -> Path | None:
        """Phase one: the announcement is on disk before the change it announces (as *.prepared)."""
        if not self._receiver():
            return None
        out = self._outbox()
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.prepared"
        _write_json(path, body)
        return path

    @staticmethod
    def _commit(prepared: list[Path | None]) -> None:
        """Phase two, once the change is written: the announcements become sendable."""
        for p in prepared:
            if p is not None:
                os.replace(p, p.with_suffix(".json"))

    def _recover(self) -> None:
        """After a crash between the phases: send what was changed, drop what was not."""
        for p in sorted(self._outbox().glob("*.prepared")) if self._outbox().exists() else []:
            body = json.loads(p.read_text())
            collection = body.get("artifact_collection_name", "")
            version = body.get("artifact_version_string", "").rpartition(":")[2]
            with self._locked(collection) as d:
                if not p.exists():
                    continue  # committed meanwhile by the call that prepared it
                if body.get("event_type") in ("LINK_ARTIFACT", "CREATE_ARTIFACT"):
                    done = (d / version).is_dir()
                else:
                    done = self._aliases(d).get(body.get("alias", "")) == version
                self._commit([p]) if done else p.unlink()

    def _receiver(self) -> str:
        return self.receiver_url or os.environ.get("MODELOPS_RECEIVER_URL", "")

    def _credentials(self) -> tuple[str | None, str | None]:
        secret = self.webhook_secret.get_secret_value() if self.webhook_secret else os.environ.get("WANDB_WEBHOOK_SECRET")
        token = self.webhook_token.get_secret_value() if self.webhook_token else os.environ.get("WANDB_WEBHOOK_TOKEN")
        return secret or None, token or None

    def pending(self) -> list[Path]:
        out = self._outbox()
        return sorted(out.glob("*.json")) if out.exists() else []

    def announce_pending(self, attempts: int = 3) -> int:
        """Send queued announcements in order; returns how many are still queued (0 = all delivered).

        A 4xx other than 429 means the receiver will never take it (bad secret, ...): that raises,
        with the receiver's answer, and the announcement stays queued for when the setting is fixed.
        """
        import httpx

        from deployments.wandb_events import delivery_headers

        url = self._receiver()
        if not url:
            return len(self.pending())
        self._recover()
        secret, token = self._credentials()
        with self._announce_lock(), httpx.Client(timeout=self.announce_timeout) as client:
            for f in self.pending():
                body = f.read_bytes()
                for attempt in range(attempts):
                    try:
                        r = client.post(url, content=body, headers=delivery_headers(body, secret=secret, token=token))
                    except httpx.HTTPError:
                        r = None
                    if r is not None and r.status_code == 202:
                        f.unlink(missing_ok=True)
                        break
                    if r is not None and 400 <= r.status_code < 500 and r.status_code != 429:
                        raise RegistryError(f"the receiver at {url} refused the announcement ({r.status_code}: "
                                            f"{r.text[:200]}); check WANDB_WEBHOOK_SECRET/TOKEN. It stays queued in {f}")
                    time.sleep(min(0.5 * 2 ** attempt, 4))
                else:
                    return len(self.pending())
        return 0

    @contextlib.contextmanager
    def _announce_lock(self) -> Iterator[None]:
        self._outbox().mkdir(parents=True, exist_ok=True)
        with open(self._outbox() / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _with_delivery(self, mv: ModelVersion) -> ModelVersion:
        left = self.announce_pending()
        if left:
            return ModelVersion(**{**mv.__dict__, "announced": False})
        return mv


class WandbRegistry(Block):
    """The W&B Registry: models are artifacts linked to `<org>/wandb-registry-<registry>/<collection>`."""

    _block_type_name: ClassVar[str] = "Wandb Model Registry"
    _block_type_slug: ClassVar[str] = "wandb-model-registry"
    _description: ClassVar[str] = "W&B Registry (wandb-registry-<name>) with stages as aliases."

    credentials: WandbCredentials = Field(description="W&B API key, entity (the team that logs the models) and server.")
    org: str = Field(description="The W&B organization (or its entity) that owns the registry.")
    registry: str = Field(default="model", description="Registry name: models live in wandb-registry-<registry>.")
    project: str = Field(default="modelops", description="Project of the run that logs the model artifact.")

    @field_validator("org", "registry", "project")
    @classmethod
    def _check(cls, value: str) -> str:
        return check_name(value, "W&B name")

    def path(self, collection: str, version: str | None = None) -> str:
        return registry_path(self.org, self.registry, collection, version)

    def _version(self, artifact: Any, collection: str) -> ModelVersion:
        return ModelVersion(collection=collection, version=artifact.version,
                            aliases=tuple(a for a in artifact.aliases if a != "latest"),
                            metadata=dict(artifact.metadata or {}), uri=self.path(collection, artifact.version),
                            path=self.path(collection, artifact.version), created=str(artifact.created_at or ""))

    def register(self, collection: str, model_file: str | os.PathLike[str], metadata: Mapping[str, Any] | None = None,
                 aliases: tuple[str, ...] | list[str] = ("candidate",)) -> ModelVersion:
        """Log the file as a `model` artifact from a `register-model` run and link it into the registry
        collection with `aliases` (W&B moves each alias from its previous holder)."""
        import wandb

        for a in aliases:
            check_name(a, "alias")
        src = Path(model_file)
        if not src.is_file():
            raise RegistryError(f"model file {src} does not exist")
        creds = self.credentials.model_copy(update={"project": self.credentials.project or self.project})
        run = creds.init_run(job_type="register-model", config={"collection": collection})
        target = self.path(collection)
        try:
            artifact = wandb.Artifact(name=collection, type="model", metadata=dict(metadata or {}))
            artifact.add_file(str(src))
            logged = run.log_artifact(artifact)
            logged.wait()
            linked = run.link_artifact(logged, target_path=target, aliases=list(aliases))
        except Exception as exc:  # noqa: BLE001 - translated: which server, what to check
            run.finish(exit_code=1)
            raise self.credentials.failure(exc, f"registering {src.name} as {target}") from None
        run.finish()
        version = getattr(linked, "version", None)
        return self.get(collection, version if version and _VERSION.match(version) else (aliases[0] if aliases else "latest"))

    def _api(self) -> Any:
        return self.credentials.get_api()

    def _artifact(self, collection: str, ref: str) -> Any:
        """The registry's artifact for `collection:ref`; RegistryError when W&B has no such version."""
        from blocks.wandb import WandbNotFound

        path = self.path(collection, ref)
        try:
            return self._api().artifact(path, type="model")
        except Exception as exc:  # noqa: BLE001 - translated below
            failure = self.credentials.failure(exc, f"reading {path}")
        if isinstance(failure, WandbNotFound):
            raise RegistryError(f"{path} is not in the W&B registry ({failure})") from None
        raise failure

    def get(self, collection: str, ref: str) -> ModelVersion:
        """A version by `vN`, alias or `latest`. RegistryError when it does not exist; W&B being
        unreachable or refusing the key raises `WandbUnavailable` / `WandbConfigError`, never "not found"."""
        return self._version(self._artifact(collection, ref), collection)

    def find(self, collection: str, ref: str) -> ModelVersion | None:
        """`get`, or None when the version does not exist (an outage is an error, not "none yet")."""
        try:
            return self.get(collection, ref)
        except RegistryError:
            return None

    def versions(self, collection: str) -> list[ModelVersion]:
        """Every version of the collection, oldest first (as LocalRegistry lists them); [] when none."""
        from blocks.wandb import WandbConfigError, WandbError, WandbNotFound

        path = self.path(collection)
        try:
            api = self._api()
            # the SDK cannot tell a missing collection from a bad answer when listing: ask first
            if not api.artifact_collection_exists(path, "model"):
                return []
            found = [self._version(a, collection) for a in api.artifacts("model", path)]
        except (WandbConfigError, WandbError):
            raise
        except Exception as exc:  # noqa: BLE001 - translated below
            failure = self.credentials.failure(exc, f"listing {path}")
            if isinstance(failure, WandbNotFound):
                return []
            raise failure from None
        return sorted(found, key=lambda mv: int(mv.version[1:]) if _VERSION.match(mv.version) else -1)

    def set_alias(self, collection: str, version: str, alias: str) -> ModelVersion:
        """Give `alias` to the version; W&B takes it from its previous holder in the collection and
        sends the ADD_ARTIFACT_ALIAS webhook itself. Idempotent."""
        check_name(alias, "alias")
        artifact = self._artifact(collection, version)
        if alias not in artifact.aliases:
            artifact.aliases.append(alias)
            try:
                artifact.save()
            except Exception as exc:  # noqa: BLE001 - translated: which server, what to check
                raise self.credentials.failure(exc, f"giving {alias} to {self.path(collection, version)}") from None
        return self.get(collection, artifact.version)

    def remove_alias(self, collection: str, alias: str, version: str | None = None) -> None:
        """Take `alias` away from the version holding it (only from `version` when given)."""
        artifact = self._artifact(collection, version or alias)
        if alias in artifact.aliases:
            artifact.aliases.remove(alias)
            try:
                artifact.save()
            except Exception as exc:  # noqa: BLE001 - translated: which server, what to check
                raise self.credentials.failure(exc, f"removing {alias} from {self.path(collection, version)}") from None

    def update_metadata(self, collection: str, version: str, patch: Mapping[str, Any]) -> ModelVersion:
        """Merge `patch` into the version's metadata (top-level keys replaced), saved to W&B."""
        artifact = self._artifact(collection, version)
        artifact.metadata = {**dict(artifact.metadata or {}), **json.loads(json.dumps(dict(patch), default=str))}
        try:
            artifact.save()
        except Exception as exc:  # noqa: BLE001 - translated: which server, what to check
            raise self.credentials.failure(exc, f"updating the metadata of {self.path(collection, version)}") from None
        return self.get(collection, artifact.version)

    def download(self, mv: ModelVersion) -> str:
        """The version's model file, downloaded under `$MODELOPS_HOME/artifacts/` (the gate scores it)."""
        artifact = self._artifact(mv.collection, mv.version)
        root = modelops_home() / "artifacts" / self.org / f"wandb-registry-{self.registry}" / mv.collection / mv.version
        try:
            where = Path(artifact.download(root=str(root)))
        except Exception as exc:  # noqa: BLE001 - translated: which server, what to check
            raise self.credentials.failure(exc, f"downloading {mv.path}") from None
        files = sorted(p for p in where.rglob("*") if p.is_file())
        if len(files) != 1:
            raise RegistryError(f"{mv.path} holds {len(files)} files ({', '.join(p.name for p in files[:5])}); "
                                "a model version holds one model file")
        return str(files[0])

    def announce_pending(self) -> int:
        return 0  # W&B sends its own webhooks


def _alias_order(alias: str) -> tuple[int, str]:
    return (STAGES.index(alias) if alias in STAGES else len(STAGES), alias)


def _write_json(path: Path, doc: Any) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}.tmp")
    with open(tmp, "w") as fh:
        json.dump(doc, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)

"""Register this project's block types with the Prefect server and save the blocks the flows use.

    python -m blocks.setup [--local | --production] [--config FILE.yaml|json] [--name NAME]
                           [--dry-run] [--overwrite]

Every run registers all block types of the project (and prefect-gcp's `GcpCredentials`) with the
server at PREFECT_API_URL, so they appear in the UI's block catalog, then saves blocks under NAME
(default "default"):

- `--local` (the default when nothing production is configured): `LocalIssueStore`, `LocalTrainer`,
  `LocalRegistry` (the model registry), `LocalEndpoint` and a `RolloutPolicy` with the defaults.
  No dataset registry is saved: no flow reads one (drift-check loads datasets by path or W&B
  reference, and `LocalRegistry` only ever announces model links and aliases).
- `--production` (the default when --config is given, or when GITHUB_TOKEN and GITHUB_REPOSITORY,
  WANDB_API_KEY or GOOGLE_APPLICATION_CREDENTIALS is set): whatever is configured, from the
  environment and/or the config file (config values win over the environment):

      section / variables                                        blocks
      github: GITHUB_TOKEN, GITHUB_REPOSITORY, GITHUB_API_URL    github-repository
      wandb:  WANDB_API_KEY, WANDB_ENTITY, WANDB_PROJECT,        wandb-credentials, and
              WANDB_BASE_URL; wandb.registry.{org,registry,...}  wandb-model-registry (org: wandb.registry.org
                                                                   or the entity), referencing the credentials
      gcp:    GOOGLE_APPLICATION_CREDENTIALS (the key is read     gcp-credentials
              and stored in the block), GOOGLE_CLOUD_PROJECT;
              gcp.{project,service_account_file,service_account_info}
      vertex: vertex.trainer.*, vertex.endpoint.*                vertex-ai-trainer, vertex-ai-endpoint, both
                                                                   referencing the gcp-credentials block
      policy: policy.*                                           rollout-policy (the defaults without a section)

  A config section must be complete; a service only half-configured through the environment is
  skipped, with what is missing in the table. Values may reference environment variables as
  `${VAR}` (`$${` is a literal `${`).

Everything is validated by the blocks' own models before anything is saved: an unknown section or
key, or an invalid value, exits 2 naming the block and field, and nothing is saved. An existing
block of the same name is left as is ("exists") unless --overwrite is given ("updated"); one that
already holds the same values is "unchanged". --dry-run validates and prints without calling the
API. The output ends with the variables (and flow parameters) that make the flows use the blocks.

Secrets (tokens, API keys, private keys) never appear in the output: they are shown as `***`, and
every line printed, including error messages from the API, is scrubbed of the secret values known
to this run.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import difflib
import json
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from pydantic import SecretBytes, SecretStr, ValidationError

if TYPE_CHECKING:
    from prefect.blocks.core import Block

__all__ = ["ConfigError", "Item", "Redactor", "SetupError", "build_plan", "load_config", "main"]

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
DEFAULT_NAME = "default"
SECTIONS = ("github", "wandb", "gcp", "vertex", "policy")
_NAME = re.compile(r"^[a-z0-9-]+$")  # Prefect's rule for block document names
_ENV_REF = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_KEY = re.compile(r"token|secret|password|private_key|api_key", re.IGNORECASE)  # names of secret fields
MASK = "***"


class SetupError(Exception):
    """Setup cannot go on; the message never contains a secret."""

    exit_code = EXIT_FAILED


class ConfigError(SetupError):
    """The configuration (flags, file, environment) is wrong; nothing was saved."""

    exit_code = EXIT_CONFIG


# ------------------------------------------------------------------------------------ secrets


class Redactor:
    """Replaces every secret value it was told about with `***` in a text."""

    def __init__(self) -> None:
        self._values: set[str] = set()

    def __repr__(self) -> str:
        return f"Redactor({len(self._values)} values)"

    def add(self, value: Any) -> None:
        if isinstance(value, (SecretStr, SecretBytes)):
            value = value.get_secret_value()
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        if isinstance(value, Mapping):
            for key, item in value.items():
                if _SECRET_KEY.search(str(key)):
                    self.add(item)
            return
        if not isinstance(value, str) or len(value.strip()) < 4:
            return
        value = value.strip()
        self._values |= {value, json.dumps(value)[1:-1], repr(value)[1:-1]}
        if "\n" in value:  # a PEM key: any of its lines alone is a secret too
            self._values |= {line.strip() for line in value.splitlines() if len(line.strip()) >= 16}

    def add_block(self, block: Block) -> None:
        """Every secret held by `block`: its SecretStr fields, the secret keys inside a SecretDict, and
        those of the blocks nested in it."""
        from prefect.blocks.core import Block

        for name in type(block).model_fields:
            value = getattr(block, name, None)
            if hasattr(value, "get_secret_value"):
                self.add(value.get_secret_value())  # a mapping (SecretDict) gives up the values of its secret keys
            elif isinstance(value, Block):
                self.add_block(value)

    def __call__(self, text: str) -> str:
        for value in sorted(self._values, key=len, reverse=True):
            text = text.replace(value, MASK)
        return text


class Output:
    """Lines to stdout/stderr, scrubbed of secrets."""

    def __init__(self, redact: Redactor, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.redact = redact
        self._out = out
        self._err = err

    def line(self, text: str = "") -> None:
        print(self.redact(text), file=self._out or sys.stdout, flush=True)

    def error(self, text: str) -> None:
        print(self.redact(text), file=self._err or sys.stderr, flush=True)


# ------------------------------------------------------------------------------------ config file


def load_config(path: str | os.PathLike[str], environ: Mapping[str, str], redact: Redactor | None = None) -> dict:
    """The config file as {section: {key: value}}, with `${VAR}` expanded; ConfigError naming what is wrong."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or type(exc).__name__}") from None
    if path.suffix.lower() == ".json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:  # its message has no snippet of the text
            raise ConfigError(f"{path}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    else:
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:  # said without the offending line, which may hold a literal secret
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
            problem = getattr(exc, "problem", None) or type(exc).__name__
            raise ConfigError(f"{path}: not valid YAML: {problem}{where}") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections ({', '.join(SECTIONS)}), "
                          f"got {type(doc).__name__}")
    missing: list[str] = []
    doc = _expand(doc, environ, "", missing)
    if missing:
        raise ConfigError(f"{path}: " + "; ".join(missing))
    if redact is not None:
        _collect_secrets(doc, redact)
    return doc


def _expand(value: Any, environ: Mapping[str, str], where: str, missing: list[str]) -> Any:
    if isinstance(value, dict):
        return {k: _expand(v, environ, f"{where}.{k}" if where else str(k), missing) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, environ, f"{where}[{i}]", missing) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        name = match.group(1)
        if not _ENV_NAME.match(name):
            missing.append(f"{where}: ${{{name}}} is not a valid variable reference")
            return ""
        if name not in environ:
            missing.append(f"{where} references ${{{name}}}, which is not set")
            return ""
        return environ[name]

    return _ENV_REF.sub(sub, value)


def _collect_secrets(doc: Any, redact: Redactor, key: str = "") -> None:
    if isinstance(doc, dict):
        for k, v in doc.items():
            if str(k) == "service_account_info":
                _collect_service_account(v, redact)
            _collect_secrets(v, redact, str(k))
    elif isinstance(doc, list):
        for v in doc:
            _collect_secrets(v, redact, key)
    elif _SECRET_KEY.search(key):
        redact.add(doc)


def _collect_service_account(value: Any, redact: Redactor) -> None:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            redact.add(value)  # unparseable: all of it is treated as secret
            return
    if isinstance(value, Mapping):
        redact.add(value)
        redact.add(value.get("private_key_id"))


# ------------------------------------------------------------------------------------ the plan


@dataclass(eq=False)
class Item:
    """One block to save (or skipped, with the reason in `note`)."""

    cls: type[Block]
    name: str
    where: str  # where its values come from, for messages: "github", "policy", "GITHUB_* variables"
    block: Block | None = None
    note: str = ""
    refs: dict[str, Item] = field(default_factory=dict)  # nested field -> the item it references
    status: str = "pending"
    document_id: Any = None

    @property
    def slug(self) -> str:
        return self.cls.get_block_type_slug()

    def __repr__(self) -> str:  # never the block's values
        return f"Item({self.slug}/{self.name}, {self.status})"


@dataclass
class Plan:
    mode: str
    reason: str
    items: list[Item]
    applied: bool = False  # True once saving started: a 'pending' item was then not saved

    def __repr__(self) -> str:
        return f"Plan({self.mode}, {self.items!r})"


def block_classes() -> list[type[Block]]:
    """Every block type of this project, and prefect-gcp's GcpCredentials (imports aiplatform: ~3 s)."""
    from prefect_gcp.credentials import GcpCredentials

    from blocks.github import GitHubRepository
    from blocks.local import LocalIssueStore, LocalTrainer
    from blocks.local_endpoint import LocalEndpoint
    from blocks.policy import RolloutPolicy
    from blocks.registry import LocalRegistry, WandbRegistry
    from blocks.vertex import VertexAITrainer
    from blocks.vertex_endpoint import VertexAIEndpoint
    from blocks.wandb import WandbCredentials

    return [GitHubRepository, WandbCredentials, WandbRegistry, GcpCredentials, VertexAITrainer, VertexAIEndpoint,
            RolloutPolicy, LocalIssueStore, LocalTrainer, LocalRegistry, LocalEndpoint]


def production_signal(environ: Mapping[str, str]) -> str:
    """Which environment variable makes the default mode production ('' when none does)."""
    if environ.get("GITHUB_TOKEN", "").strip() and environ.get("GITHUB_REPOSITORY", "").strip():
        return "GITHUB_TOKEN and GITHUB_REPOSITORY are set"
    for var in ("WANDB_API_KEY", "GOOGLE_APPLICATION_CREDENTIALS"):
        if environ.get(var, "").strip():
            return f"{var} is set"
    return ""


def build_plan(mode: str | None, config: Mapping[str, Any] | None, name: str = DEFAULT_NAME,
               environ: Mapping[str, str] = os.environ, redact: Redactor | None = None) -> Plan:
    """Every block to save, validated; ConfigError listing every problem when anything is invalid."""
    redact = redact or Redactor()
    for var in ("GITHUB_TOKEN", "WANDB_API_KEY", "PREFECT_API_KEY"):
        redact.add(environ.get(var))
    if not _NAME.match(name or ""):
        raise ConfigError(f"--name {name!r} is not a valid block name: use lowercase letters, digits and '-'")
    if mode is None:
        signal = "--config given" if config is not None else production_signal(environ)
        mode, reason = ("production", signal) if signal else ("local", "nothing production is configured")
    else:
        reason = f"--{mode}"
    if mode == "local":
        if config is not None:
            raise ConfigError("--config configures production blocks: use it with --production (or without --local)")
        return Plan(mode, reason, _local_items(name))
    config = dict(config or {})
    _collect_secrets(config, redact)
    _check_keys(config)
    problems: list[str] = []
    items = _production_items(config, name, environ, problems, redact)
    for item in items:
        if item.block is not None:
            redact.add_block(item.block)
    if problems:  # the exception itself is scrubbed: a secret put in the wrong field is quoted by its check
        raise ConfigError(redact("invalid configuration, nothing was saved:\n"
                                 + "\n".join(f"  {p}" for p in problems)))
    return Plan(mode, reason, items)


def _local_items(name: str) -> list[Item]:
    from blocks.local import LocalIssueStore, LocalTrainer
    from blocks.local_endpoint import DEFAULT_URL, LocalEndpoint
    from blocks.policy import RolloutPolicy
    from blocks.registry import LocalRegistry

    registry = LocalRegistry()
    policy = RolloutPolicy()
    return [
        Item(LocalIssueStore, name, "local", LocalIssueStore(), "issues in $MODELOPS_HOME/issues"),
        Item(LocalTrainer, name, "local", LocalTrainer(), "python -m training.tabular in a subprocess"),
        Item(LocalRegistry, name, "local", registry,
             f"model registry in $MODELOPS_HOME/registry ({registry.entity}/{registry.project()}), "
             "announces to $MODELOPS_RECEIVER_URL"),
        Item(LocalEndpoint, name, "local", LocalEndpoint(), f"$MODELOPS_ENDPOINT_URL or {DEFAULT_URL}"),
        Item(RolloutPolicy, name, "local", policy, _policy_note(policy)),
    ]


def _fields(cls: type[Block], nested: Sequence[str] = ()) -> list[str]:
    return [f for f in cls.model_fields if f not in nested]


def _known_keys() -> dict[str, dict[str, Any]]:
    """Allowed keys per section; a nested mapping for sub-sections."""
    from prefect_gcp.credentials import GcpCredentials

    from blocks.github import GitHubRepository
    from blocks.policy import RolloutPolicy
    from blocks.registry import WandbRegistry
    from blocks.vertex import VertexAITrainer
    from blocks.vertex_endpoint import VertexAIEndpoint
    from blocks.wandb import WandbCredentials

    return {
        "github": dict.fromkeys(_fields(GitHubRepository)),
        "wandb": {**dict.fromkeys(_fields(WandbCredentials)),
                  "registry": dict.fromkeys(_fields(WandbRegistry, ["credentials"]))},
        "gcp": dict.fromkeys(_fields(GcpCredentials)),
        "vertex": {"trainer": dict.fromkeys(_fields(VertexAITrainer, ["gcp_credentials"])),
                   "endpoint": dict.fromkeys(_fields(VertexAIEndpoint, ["gcp_credentials"]))},
        "policy": dict.fromkeys(_fields(RolloutPolicy)),
    }


def _check_keys(config: Mapping[str, Any]) -> None:
    problems: list[str] = []

    def walk(doc: Any, known: Mapping[str, Any], where: str) -> None:
        if doc is None:
            return
        if not isinstance(doc, Mapping):
            problems.append(f"{where} must be a mapping of key: value, got {type(doc).__name__}")
            return
        for key, value in doc.items():
            path = f"{where}.{key}" if where else str(key)
            if key not in known:
                hint = difflib.get_close_matches(str(key), list(known), n=1)
                problems.append(f"unknown {'section' if not where else 'key'} {path}"
                                + (f" (did you mean {hint[0]}?)" if hint else "")
                                + f"; known {'sections' if not where else 'keys of ' + where}: {', '.join(known)}")
            elif isinstance(known[key], Mapping):
                walk(value, known[key], path)

    walk(config, _known_keys(), "")
    if problems:
        raise ConfigError("invalid configuration, nothing was saved:\n" + "\n".join(f"  {p}" for p in problems))


def _env(environ: Mapping[str, str], mapping: Mapping[str, str]) -> dict[str, str]:
    """{field: value} for the variables in `mapping` ({field: VAR}) that are set and not blank."""
    return {f: environ[v].strip() for f, v in mapping.items() if environ.get(v, "").strip()}


def _build(item: Item, values: Mapping[str, Any], problems: list[str], **nested: Any) -> Item:
    """Validate `values` with the block's own model; problems name the block, where and the field."""
    try:
        item.block = item.cls(**values, **nested)
    except ValidationError as exc:
        for err in exc.errors(include_url=False, include_input=False, include_context=False):
            loc = ".".join(str(p) for p in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{item.slug} [{item.where}{'.' + loc if loc else ''}]: {msg}")
    except Exception as exc:  # noqa: BLE001 - e.g. google-auth refusing a key while GcpCredentials loads it
        text = " ".join(str(exc).split())
        problems.append(f"{item.slug} [{item.where}]: {type(exc).__name__}" + (f": {text}" if text else ""))
    return item


def _production_items(config: Mapping[str, Any], name: str, environ: Mapping[str, str], problems: list[str],
                      redact: Redactor) -> list[Item]:
    from prefect_gcp.credentials import GcpCredentials

    from blocks.github import GitHubRepository
    from blocks.policy import RolloutPolicy
    from blocks.registry import WandbRegistry
    from blocks.vertex import VertexAITrainer
    from blocks.vertex_endpoint import VertexAIEndpoint
    from blocks.wandb import WandbCredentials

    items: list[Item] = []

    # -- GitHub
    section = config.get("github")
    values = {**_env(environ, {"token": "GITHUB_TOKEN", "repository": "GITHUB_REPOSITORY",
                               "base_url": "GITHUB_API_URL"}), **(section or {})}
    item = Item(GitHubRepository, name, "github" if section is not None else "GITHUB_* variables")
    if section is None and not ({"token", "repository"} <= set(values)):
        item.note = ("set GITHUB_TOKEN and GITHUB_REPOSITORY (or a github section)" if not values.get("token")
                     and not values.get("repository") else
                     f"{'GITHUB_TOKEN' if values.get('token') else 'GITHUB_REPOSITORY'} is set but "
                     f"{'GITHUB_REPOSITORY' if values.get('token') else 'GITHUB_TOKEN'} is not: set both")
    else:
        _build(item, values, problems)
        if item.block is not None:
            b = item.block
            item.note = f"{b.repository} at {b.base_url}, token {MASK}"
    items.append(item)

    # -- W&B credentials and registry
    section = config.get("wandb")
    wandb = dict(section or {})
    registry_section = wandb.pop("registry", None)
    values = {**_env(environ, {"api_key": "WANDB_API_KEY", "entity": "WANDB_ENTITY", "project": "WANDB_PROJECT",
                               "base_url": "WANDB_BASE_URL"}), **wandb}
    creds = Item(WandbCredentials, name, "wandb" if section is not None else "WANDB_* variables")
    if section is None and not values.get("api_key"):
        creds.note = "set WANDB_API_KEY (or a wandb section)"
    elif not values.get("api_key"):
        problems.append(f"{creds.slug} [wandb.api_key]: required (set WANDB_API_KEY or wandb.api_key)")
    else:
        _build(creds, values, problems)
        if creds.block is not None:
            b = creds.block
            parts = [f"entity {b.entity}" if b.entity else "", f"project {b.project}" if b.project else "",
                     f"server {b.base_url}" if b.base_url else "", f"api_key {MASK}"]
            creds.note = ", ".join(p for p in parts if p)
    items.append(creds)

    registry = Item(WandbRegistry, name, "wandb.registry" if registry_section is not None else "wandb")
    reg_values = dict(registry_section or {})
    if creds.block is not None and not reg_values.get("org") and creds.block.entity:
        reg_values["org"] = creds.block.entity
    if creds.block is None:  # with a wandb section, its problem is listed already
        registry.note = "needs W&B credentials (set WANDB_API_KEY)"
    elif not reg_values.get("org") and registry_section is None:
        registry.note = "set WANDB_ENTITY (or wandb.entity / wandb.registry.org) to name the registry's org"
    else:
        _build(registry, reg_values, problems, credentials=creds.block)
        registry.refs["credentials"] = creds
        if registry.block is not None:
            root = registry.block.path("collection").rsplit("/", 1)[0]
            registry.note = f"{root}/<collection>, credentials: {creds.slug}/{name}"
    items.append(registry)

    # -- GCP credentials
    section = config.get("gcp")
    gcp_values = dict(section or {})
    gcp = Item(GcpCredentials, name, "gcp" if section is not None else "GOOGLE_* variables")
    key_source = ""
    if "service_account_file" in gcp_values or "service_account_info" in gcp_values:
        key_source = "gcp." + ("service_account_file" if "service_account_file" in gcp_values
                               else "service_account_info")
    elif environ.get("GOOGLE_APPLICATION_CREDENTIALS", "").strip():
        key_file = environ["GOOGLE_APPLICATION_CREDENTIALS"].strip()
        key_source = "GOOGLE_APPLICATION_CREDENTIALS"
        info = _read_service_account(key_file, problems, redact)
        if info is not None:
            gcp_values["service_account_info"] = info
    if not gcp_values.get("project") and environ.get("GOOGLE_CLOUD_PROJECT", "").strip():
        gcp_values["project"] = environ["GOOGLE_CLOUD_PROJECT"].strip()
    if "service_account_info" in gcp_values:
        _collect_service_account(gcp_values["service_account_info"], redact)
    if section is None and not key_source:
        gcp.note = "set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file (or a gcp section)"
    elif key_source == "GOOGLE_APPLICATION_CREDENTIALS" and "service_account_info" not in gcp_values:
        pass  # the problem is already listed
    else:
        _build(gcp, gcp_values, problems)
        if gcp.block is not None:
            gcp.note = _gcp_note(gcp.block, key_source)
    items.append(gcp)

    # -- Vertex AI trainer and endpoint
    vertex = config.get("vertex") or {}
    for key, cls in (("trainer", VertexAITrainer), ("endpoint", VertexAIEndpoint)):
        item = Item(cls, name, f"vertex.{key}")
        if key not in vertex:
            item.note = f"add vertex.{key} to the config"
        elif gcp.block is None:
            if gcp.note:  # not configured at all (an invalid gcp section is reported already)
                problems.append(f"{item.slug} [vertex.{key}]: needs GCP credentials: set "
                                "GOOGLE_APPLICATION_CREDENTIALS or a gcp section")
        else:
            _build(item, vertex[key] or {}, problems, gcp_credentials=gcp.block)
            item.refs["gcp_credentials"] = gcp
            if item.block is not None:
                item.note = _vertex_note(item.block, f"{gcp.slug}/{name}")
        items.append(item)

    # -- rollout policy (the defaults without a section, so operators can edit it in the UI)
    section = config.get("policy")
    policy = Item(RolloutPolicy, name, "policy")
    _build(policy, section or {}, problems)
    if policy.block is not None:
        policy.note = _policy_note(policy.block) + ("" if section else " (defaults)")
    items.append(policy)
    return items


def _read_service_account(path: str, problems: list[str], redact: Redactor) -> dict | None:
    where = f"gcp-credentials [GOOGLE_APPLICATION_CREDENTIALS={path}]"
    try:
        text = Path(path).expanduser().read_text()
    except OSError as exc:
        problems.append(f"{where}: cannot read the key file: {exc.strerror or type(exc).__name__}")
        return None
    try:
        info = json.loads(text)
    except ValueError:
        redact.add(text)
        problems.append(f"{where}: the key file is not JSON")
        return None
    if not isinstance(info, dict):
        problems.append(f"{where}: the key file is not a JSON object")
        return None
    _collect_service_account(info, redact)
    if info.get("type") != "service_account":
        problems.append(f"{where}: not a service-account key (type {info.get('type')!r}); create a key for a "
                        "service account, or use a gcp section with only a project for application default "
                        "credentials")
        return None
    return info


def _gcp_note(block: Any, source: str) -> str:
    parts = [f"project {block.project}" if block.project else "project from the credentials"]
    if block.service_account_info is not None:
        email = block.service_account_info.get_secret_value().get("client_email", "")
        parts.append(f"service account {email}" if email else "service account")
        parts.append(f"key {MASK} ({source}, stored in the block)")
    elif block.service_account_file is not None:
        parts.append(f"key file {block.service_account_file} (must exist where flows run)")
    else:
        parts.append("application default credentials")
    return ", ".join(parts)


def _vertex_note(block: Any, credentials: str) -> str:
    where = f"{block.project or block.gcp_credentials.project or '<credentials project>'}/{block.location}"
    if hasattr(block, "staging_bucket"):
        code = block.container_image_uri or f"{block.python_package_gcs_uri} ({block.python_module})"
        return f"custom jobs in {where}, {code}, outputs in {block.staging_bucket}, credentials: {credentials}"
    return f"endpoint {block.endpoint} in {where}, credentials: {credentials}"


def _policy_note(block: Any) -> str:
    return f"{block.strategy} {'/'.join(str(s) for s in block.steps)}%, bake {block.bake_seconds:g} s per step"


# ------------------------------------------------------------------------------------ saving


@contextlib.contextmanager
def cached_json_schemas(classes: Sequence[type[Block]]) -> Iterator[None]:
    """Within the block: each class's JSON schema is generated once, not once per field.

    Prefect regenerates a block's whole JSON schema for every field it serializes (`_field_has_secrets`)
    and again to register it, ~20 ms each: most of the time of this command. The schema of a class
    does not change while it runs; callers get a deep copy, so nothing they change is shared.
    """
    patched = []
    for cls in classes:
        if "model_json_schema" in vars(cls):  # a class with its own override is left alone
            continue
        original = cls.model_json_schema  # bound to cls
        cache: dict[Any, dict[str, Any]] = {}

        def cached(klass: Any, *args: Any, _original: Any = original, _cache: dict = cache, **kwargs: Any) -> Any:
            key = (args, tuple(sorted(kwargs.items())))
            if key not in _cache:
                _cache[key] = _original(*args, **kwargs)
            return copy.deepcopy(_cache[key])

        cls.model_json_schema = classmethod(cached)  # type: ignore[method-assign]
        patched.append(cls)
    try:
        yield
    finally:
        for cls in patched:
            delattr(cls, "model_json_schema")


def register_types(classes: Sequence[type[Block]]) -> None:
    for cls in classes:
        cls.register_type_and_schema()


def apply(plan: Plan, *, overwrite: bool) -> None:
    """Save the plan's blocks in order (referenced blocks first); sets each item's status.

    This is `Block.save` without its re-registration of the type and schema on every call (the
    types were just registered), and with the document built once for both the comparison with
    the saved one and the write: building it generates the block's JSON schema, the slow part.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import BlockDocumentCreate, BlockDocumentUpdate
    from prefect.exceptions import ObjectNotFound

    plan.applied = True
    with get_client(sync_client=True) as client:
        for item in plan.items:
            block = item.block
            if block is None:
                item.status = "skipped"
                continue
            for field_name, dep in item.refs.items():
                if dep.document_id is None:
                    raise SetupError(f"{item.slug}/{item.name} references {dep.slug}/{dep.name}, which was not saved")
                getattr(block, field_name)._block_document_id = dep.document_id  # saved as {"$ref": ...}
            try:
                existing = client.read_block_document_by_name(name=item.name, block_type_slug=item.slug,
                                                              include_secrets=True)
            except ObjectNotFound:
                existing = None
            doc = block._to_block_document(name=item.name, include_secrets=True)
            same = existing is not None and (_comparable(existing.block_schema_id, _with_refs(existing))
                                             == _comparable(doc.block_schema_id, doc.data))
            if existing is None:
                created = client.create_block_document(BlockDocumentCreate(
                    name=item.name, block_schema_id=doc.block_schema_id, block_type_id=doc.block_type_id,
                    data=doc.data, is_anonymous=False))
                item.document_id, item.status = created.id, "created"
            elif same:
                item.document_id, item.status = existing.id, "unchanged"
            elif overwrite:
                client.update_block_document(existing.id, BlockDocumentUpdate(
                    block_schema_id=doc.block_schema_id, data=doc.data, merge_existing_data=False))
                item.document_id, item.status = existing.id, "updated"
            else:
                item.document_id, item.status = existing.id, "exists"
            block._block_document_id, block._block_document_name = item.document_id, item.name


def _plain(value: Any) -> Any:
    if hasattr(value, "get_secret_value"):
        return value.get_secret_value()
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def _normal(doc: Any) -> Any:
    return json.loads(json.dumps(doc, default=_plain, sort_keys=True))


def _with_refs(existing: Any) -> dict[str, Any]:
    """A saved document's data with its nested blocks as the references they are."""
    data = dict(existing.data)
    for field_name, ref in (existing.block_document_references or {}).items():
        data[field_name] = {"$ref": {"block_document_id": str(ref["block_document"]["id"])}}
    return data


def _comparable(schema_id: Any, data: Mapping[str, Any]) -> Any:
    return {"schema": str(schema_id), "data": _normal(data)}


# ------------------------------------------------------------------------------------ output


_EXPORTS: dict[str, tuple[str, str, bool]] = {
    # block type slug: (variable, used by, whether the flows take "slug/name" or a bare name)
    "github-repository": ("MODELOPS_GITHUB_BLOCK", "review-issue, canary-rollout", False),
    "local-trainer": ("MODELOPS_TRAINER_BLOCK", "retrain", True),
    "vertex-ai-trainer": ("MODELOPS_TRAINER_BLOCK", "retrain", True),
    "local-model-registry": ("MODELOPS_REGISTRY_BLOCK", "retrain, registry CLI", True),
    "wandb-model-registry": ("MODELOPS_REGISTRY_BLOCK", "retrain, registry CLI", True),
    "local-endpoint": ("MODELOPS_ENDPOINT_BLOCK", "canary-rollout", True),
    "vertex-ai-endpoint": ("MODELOPS_ENDPOINT_BLOCK", "canary-rollout", True),
}
_PARAMETERS: dict[str, tuple[str, str, bool]] = {
    "rollout-policy": ("policy_block", "canary-rollout (python -m flows.canary --policy-block)", True),
    "wandb-credentials": ("wandb_block", "drift-check, retrain (--wandb-block)", False),
}


def exports(plan: Plan) -> tuple[list[str], list[str]]:
    """`VAR=value` lines, and flow parameter hints, for the blocks that are saved (or would be)."""
    env: list[str] = []
    params: list[str] = []
    for item in plan.items:
        if item.block is None or item.status not in ("pending", "created", "updated", "unchanged", "exists"):
            continue
        if item.status == "pending" and plan.applied:
            continue  # not saved: the run failed before it
        for table, out in ((_EXPORTS, env), (_PARAMETERS, params)):
            if item.slug in table:
                key, used_by, qualified = table[item.slug]
                value = f"{item.slug}/{item.name}" if qualified else item.name
                out.append(f"{key}={value}" if out is env else f"{key}={value}  # {used_by}")
    return env, params


def print_report(plan: Plan, out: Output, *, dry_run: bool) -> None:
    rows = [("BLOCK TYPE", "NAME", "STATUS", "DETAILS")]
    for item in plan.items:
        status = "skipped" if item.block is None else ("would save" if dry_run else item.status)
        rows.append((item.slug, item.name, status, item.note))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        out.line("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  " + row[3])
    if any(i.status == "exists" for i in plan.items):
        out.line("\n'exists': a block of that name holds other values and was left as is; --overwrite replaces it.")
    env, params = exports(plan)
    if env:
        out.line("\nExport these so the flows use the blocks" + (" (once saved)" if dry_run else "") + ":")
        for line in env:
            out.line(f"export {line}")
    if params:
        out.line("\nFlow parameters:")
        for line in params:
            out.line(f"  {line}")


def _api_url() -> str:
    from prefect.settings import PREFECT_API_URL

    return (PREFECT_API_URL.value() or "").strip()


def _shown_url(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.username or parts.password:  # never show credentials embedded in the URL
        parts = parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else ""))
    return urlunsplit(parts)


# ------------------------------------------------------------------------------------ CLI


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m blocks.setup",
        description="Register the project's block types with the Prefect server (PREFECT_API_URL) and save the "
                    "blocks the flows use.",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--local", dest="mode", action="store_const", const="local",
                      help="save the local backends and the default rollout policy (the default when nothing "
                           "production is configured)")
    mode.add_argument("--production", dest="mode", action="store_const", const="production",
                      help="save GitHub, W&B, GCP/Vertex AI and policy blocks from the environment and --config")
    p.add_argument("--config", metavar="FILE", help="YAML or JSON with sections github, wandb, gcp, vertex, policy")
    p.add_argument("--name", default=DEFAULT_NAME, help="name of every saved block (default: %(default)s)")
    p.add_argument("--dry-run", action="store_true", help="validate and print, save nothing (no API calls)")
    p.add_argument("--overwrite", action="store_true", help="replace existing blocks of the same name")
    return p.parse_args(argv)


def run(argv: Sequence[str] | None, environ: Mapping[str, str], out: Output) -> int:
    args = parse_args(argv)
    if args.mode == "local" and args.config:
        raise ConfigError("--config configures production blocks: use it with --production (or without --local)")
    redact = out.redact
    config = load_config(args.config, environ, redact) if args.config else None
    plan = build_plan(args.mode, config, args.name, environ, redact)
    out.line(f"mode: {plan.mode} ({plan.reason})")
    if args.dry_run:
        out.line("dry run: nothing is registered or saved\n")
        print_report(plan, out, dry_run=True)
        return EXIT_OK
    url = _api_url()
    if not url:
        raise ConfigError("PREFECT_API_URL is not set: point it at the Prefect server, e.g. "
                          "export PREFECT_API_URL=http://127.0.0.1:4200/api")
    classes = block_classes()
    with cached_json_schemas(classes):
        try:
            register_types(classes)
        except Exception as exc:  # noqa: BLE001 - said once, scrubbed, without a traceback
            raise SetupError(f"could not register the block types with {_shown_url(url)}: {_describe(exc)}") from None
        out.line(f"registered {len(classes)} block types with {_shown_url(url)}: "
                 + ", ".join(c.get_block_type_slug() for c in classes) + "\n")
        try:
            apply(plan, overwrite=args.overwrite)
        except SetupError:
            print_report(plan, out, dry_run=False)
            raise
        except Exception as exc:  # noqa: BLE001
            print_report(plan, out, dry_run=False)
            raise SetupError(f"saving the blocks failed: {_describe(exc)}; blocks marked 'pending' were not "
                             "saved") from None
    print_report(plan, out, dry_run=False)
    return EXIT_OK


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:500]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None,
         stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    out = Output(Redactor(), stdout, stderr)
    try:
        return run(argv, os.environ if environ is None else environ, out)
    except SetupError as exc:
        out.error(f"error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        out.error("interrupted")
        return 130
    except Exception as exc:  # noqa: BLE001 - never a traceback: it could quote a secret
        out.error(f"error: {_describe(exc)}")
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())

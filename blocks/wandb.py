"""W&B credentials block: builds `wandb.Api` clients and starts runs (offline when no key is configured).

wandb is imported inside the methods that use it, so importing this module stays cheap.
The API key is a `SecretStr`: it never appears in a repr, a log line or an error message.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

from blocks._urls import http_url

if TYPE_CHECKING:
    import wandb.apis.public
    from wandb.sdk.wandb_run import Run

__all__ = ["CREDENTIALS_SETTING", "DEFAULT_PROJECT", "WandbConfigError", "WandbCredentials", "WandbError",
           "WandbNotFound", "WandbUnavailable", "modelops_home", "retry_if_unavailable", "wandb_failure"]

CREDENTIALS_SETTING = "WANDB_API_KEY or a WandbCredentials block with an api_key"
DEFAULT_PROJECT = "modelops"


class WandbConfigError(Exception):
    """W&B cannot be used as configured (no key, a key W&B refuses, no entity...); retrying will not help."""


class WandbError(Exception):
    """W&B answered a request with an error (what it said is in the message)."""


class WandbNotFound(WandbError, LookupError):
    """W&B has no such thing (artifact, version, alias, project)."""


class WandbUnavailable(WandbError):
    """W&B did not answer in time, or kept answering 429/5xx after the SDK's own retries: try again later."""


_AUTH = re.compile(r"\b401\b|not logged in|unauthori[sz]ed|failed to verify credentials|invalid api key|api key",
                   re.IGNORECASE)
_DENIED = re.compile(r"\b403\b|permission|forbidden|access denied", re.IGNORECASE)
_NOT_FOUND = re.compile(r"not found|\b404\b|does not exist", re.IGNORECASE)
_TRANSIENT = re.compile(r"\b(429|500|502|503|504)\b|did not respond in time|timed? ?out|connection (refused|reset)|"
                        r"temporarily|too many requests|unavailable|service process is not running", re.IGNORECASE)


def retry_if_unavailable(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: retry a task only when W&B did not answer (`WandbUnavailable`)."""
    return isinstance(getattr(state, "data", None), WandbUnavailable)


def wandb_failure(exc: BaseException, doing: str, base_url: str | None = None,
                  secrets: tuple[str, ...] = ()) -> Exception:
    """One of our exceptions for what the wandb SDK raised while `doing` something, naming W&B, the
    server and what to check. The SDK retries 429 and 5xx itself; what reaches here has outlasted that.

    `WandbConfigError` for a key W&B refuses or lacks rights for, `WandbNotFound`, `WandbUnavailable`
    for timeouts and server errors, `WandbError` otherwise. `secrets` are blanked from the message.
    """
    server = base_url or os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai"
    text = " ".join(str(exc).split())[:400] or type(exc).__name__
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    kind = type(exc).__name__
    if kind == "AuthenticationError" or _AUTH.search(text):
        return WandbConfigError(f"W&B at {server} refused the API key while {doing} ({text}): "
                                f"check {CREDENTIALS_SETTING} and the server URL (WANDB_BASE_URL or the block's base_url)")
    if _NOT_FOUND.search(text):  # before "denied": W&B says "not found ... or access denied" for both
        return WandbNotFound(f"not found in W&B at {server} while {doing}: {text}")
    if kind == "AuthorizationError" or _DENIED.search(text):
        return WandbConfigError(f"W&B at {server} denied access while {doing} ({text}): check that the API key's "
                                "user or service account is a member of the entity or registry")
    if _TRANSIENT.search(text) or isinstance(exc, (TimeoutError, ConnectionError)):
        return WandbUnavailable(f"W&B at {server} did not answer while {doing} ({text}): it may be down or slow; "
                                "try again, or raise the WandbCredentials block's timeout")
    return WandbError(f"W&B at {server} failed while {doing}: {text}")


def modelops_home(environ: Mapping[str, str] = os.environ) -> Path:
    """Where local state lives: `MODELOPS_HOME`, default `.modelops` in the working directory."""
    return Path(environ.get("MODELOPS_HOME") or ".modelops").resolve()


class WandbCredentials(Block):
    """A W&B API key, with the default entity/project and the server (wandb.ai or a dedicated one)."""

    _block_type_name: ClassVar[str] = "Wandb Credentials"
    _block_type_slug: ClassVar[str] = "wandb-credentials"
    _description: ClassVar[str] = "A Weights & Biases API key, default entity/project and server URL."

    api_key: SecretStr | None = Field(default=None, description="W&B API key (WANDB_API_KEY).")
    entity: str | None = Field(default=None, description="Default entity (user or team), e.g. 'acme'.")
    project: str | None = Field(default=None, description="Default project, e.g. 'churn'.")
    base_url: str | None = Field(
        default=None,
        description="W&B server for W&B Server / Dedicated Cloud, e.g. https://acme.wandb.io; unset means wandb.ai.",
    )
    timeout: int = Field(default=30, ge=1, le=300, description="Seconds per W&B API request.")

    @field_validator("api_key")
    @classmethod
    def _check_api_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        stripped = value.get_secret_value().strip()
        return SecretStr(stripped) if stripped else None

    @field_validator("entity", "project")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not value:
            return None
        if "/" in value or ":" in value:
            raise ValueError(f"must be a bare W&B name without '/' or ':', got {value!r}")
        return value

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        return http_url(value, "https://acme.wandb.io")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> WandbCredentials | None:
        """Build from WANDB_API_KEY, WANDB_ENTITY, WANDB_PROJECT, WANDB_BASE_URL; None when there is no key."""
        key = environ.get("WANDB_API_KEY", "").strip()
        if not key:
            return None
        return cls(
            api_key=SecretStr(key),
            entity=environ.get("WANDB_ENTITY") or None,
            project=environ.get("WANDB_PROJECT") or None,
            base_url=environ.get("WANDB_BASE_URL") or None,
        )

    @property
    def configured(self) -> bool:
        """True when there is an API key, i.e. online calls can be made."""
        return self.api_key is not None

    def get_api(self) -> wandb.apis.public.Api:
        """A `wandb.Api` for `base_url` with this block's key. Needs the network on first use."""
        if self.api_key is None:
            raise WandbConfigError(f"W&B credentials are needed for the W&B API: set {CREDENTIALS_SETTING}")
        import wandb

        overrides: dict[str, Any] = {}
        if self.base_url:
            overrides["base_url"] = self.base_url
        if self.entity:
            overrides["entity"] = self.entity
        if self.project:
            overrides["project"] = self.project
        key = self.api_key.get_secret_value()
        try:
            return wandb.Api(api_key=key, overrides=overrides or None, timeout=self.timeout)
        except Exception as exc:  # noqa: BLE001 - the SDK's many error types, translated once here
            raise self.failure(exc, "logging in") from None

    def failure(self, exc: BaseException, doing: str) -> Exception:
        """`wandb_failure` for this block's server, with its key blanked from the message."""
        key = self.api_key.get_secret_value() if self.api_key else ""
        return wandb_failure(exc, doing, self.base_url, secrets=(key,))

    def run_mode(self, offline: bool = False) -> Literal["online", "offline"]:
        """"offline" when asked to, or when no key is configured; "online" otherwise."""
        return "online" if self.configured and not offline else "offline"

    def init_run(
        self,
        job_type: str,
        config: Mapping[str, Any] | None = None,
        offline: bool = False,
        *,
        name: str | None = None,
        tags: list[str] | None = None,
    ) -> Run:
        """Start a W&B run under `$MODELOPS_HOME/wandb/`; finish it (or use it as a context manager).

        Offline (written locally as `offline-run-*`, uploadable later with `wandb sync`) when `offline`
        is set or no key is configured; `use_artifact`/`link_artifact` do not work offline.
        """
        import wandb

        mode = self.run_mode(offline)
        directory = modelops_home()
        directory.mkdir(parents=True, exist_ok=True)
        # starting a run waits for W&B's answer to the run's creation at most `timeout` + 10 s (the SDK's
        # own default is 90 s), so an outage fails a task in about the time a request would
        settings: dict[str, Any] = {"silent": True, "init_timeout": float(self.timeout + 10)}
        if mode == "online":
            assert self.api_key is not None
            settings["api_key"] = self.api_key.get_secret_value()
            if self.base_url:
                settings["base_url"] = self.base_url
        try:
            return wandb.init(
                entity=self.entity,
                project=self.project or DEFAULT_PROJECT,
                job_type=job_type,
                config=dict(config or {}),
                name=name,
                tags=tags,
                dir=str(directory),
                mode=mode,
                reinit="create_new",
                settings=wandb.Settings(**settings),
            )
        except Exception as exc:  # noqa: BLE001 - translated: which server, what to check
            raise self.failure(exc, f"starting a {job_type} run in {self.entity or 'the default entity'}/"
                                    f"{self.project or DEFAULT_PROJECT}") from None

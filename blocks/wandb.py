"""W&B credentials block: builds `wandb.Api` clients and starts runs (offline when no key is configured).

wandb is imported inside the methods that use it, so importing this module stays cheap.
The API key is a `SecretStr`: it never appears in a repr, a log line or an error message.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

from blocks._urls import http_url

if TYPE_CHECKING:
    import wandb.apis.public
    from wandb.sdk.wandb_run import Run

__all__ = ["CREDENTIALS_SETTING", "DEFAULT_PROJECT", "WandbConfigError", "WandbCredentials", "modelops_home"]

CREDENTIALS_SETTING = "WANDB_API_KEY or a WandbCredentials block with an api_key"
DEFAULT_PROJECT = "modelops"


class WandbConfigError(Exception):
    """W&B cannot be used as configured (no key, no entity...); retrying will not help."""


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
        return wandb.Api(api_key=self.api_key.get_secret_value(), overrides=overrides or None, timeout=self.timeout)

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
        settings: dict[str, Any] = {"silent": True}
        if mode == "online":
            assert self.api_key is not None
            settings["api_key"] = self.api_key.get_secret_value()
            if self.base_url:
                settings["base_url"] = self.base_url
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

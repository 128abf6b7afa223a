"""Settings, validators and helpers shared by the Vertex AI blocks (`blocks.vertex`, `blocks.vertex_endpoint`).

Plain functions, not a base block class: each block keeps its own fields in its own order (the block
schema, and so the saved blocks, depend on them), and nothing here is registered as a block type.
A block uses them as

    project: str = project_field()
    _check_api_endpoint = field_validator("api_endpoint")(check_api_endpoint)

No cloud SDK is imported at module level: importing a block module must not import aiplatform.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pydantic import Field

# -- fields (the same name, default and description on both blocks) ---------------------------------


def project_field() -> Any:
    return Field(default="", description="GCP project ID; empty means the credentials' project.")


def accelerator_type_field() -> Any:
    return Field(default="", description="Accelerator, e.g. NVIDIA_TESLA_T4; empty for none.")


def accelerator_count_field() -> Any:
    return Field(default=0, ge=0, le=16, description="Accelerators per replica.")


def api_endpoint_field() -> Any:
    return Field(
        default="",
        description="Vertex AI API endpoint override (a private endpoint or a test server); empty means the "
        "regional endpoint. A URL with a scheme (http://...) is called over REST, a bare host over gRPC.",
    )


# -- validators (wrap with field_validator / model_validator in the block) ------------------------------


def strip(value: str) -> str:
    return value.strip()


def check_api_endpoint(value: str) -> str:
    """`api_endpoint`: '' (the regional endpoint), a bare host (gRPC) or an http(s) URL without a path (REST)."""
    value = value.strip().rstrip("/")
    if not value:
        return ""
    if "://" in value:
        parsed = urlsplit(value)
        if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.path:
            raise ValueError(f"api_endpoint must be a host (us-central1-aiplatform.googleapis.com) or an "
                             f"http(s) URL without a path, got {value!r}")
    elif "/" in value:
        raise ValueError(
            f"api_endpoint must be a host such as us-central1-aiplatform.googleapis.com, got {value!r}"
        )
    return value


def check_config(block: Any) -> Any:
    """After validation: raise the block's `config_problem()`, if it has one."""
    problem = block.config_problem()
    if problem:
        raise ValueError(problem)
    return block


def accelerator_problem(accelerator_type: str, accelerator_count: int) -> str:
    """Why this accelerator setting cannot work, or '' when it can (both set, or neither)."""
    if accelerator_count > 0 and not accelerator_type:
        return f"accelerator_count is {accelerator_count} but accelerator_type is empty: set both or neither"
    if accelerator_type and accelerator_count <= 0:
        return f"accelerator_type is {accelerator_type!r} but accelerator_count is 0: set both or neither"
    return ""


def unknown_accelerator(accelerator_type: str) -> str:
    """Why `accelerator_type` is not one Vertex AI knows, or '' when it is (or is empty).

    Imports aiplatform's v1 types (only when an accelerator is set).
    """
    if not accelerator_type:
        return ""
    from google.cloud.aiplatform_v1.types import AcceleratorType

    names = [a for a in AcceleratorType.__members__ if not a.endswith("_UNSPECIFIED")]
    if accelerator_type not in names:
        return f"accelerator_type {accelerator_type!r} is not a Vertex AI accelerator type; one of {', '.join(names)}"
    return ""


# -- calling Vertex AI ------------------------------------------------------------------------------


def project_of(block: Any, error: type[Exception]) -> str:
    """The block's `project`, else its GcpCredentials' project; raises `error` when neither is set."""
    project = block.project or (block.gcp_credentials.project or "")
    if not project:
        raise error(f"no GCP project: set `project` on the {type(block).__name__} block or on its GcpCredentials")
    return project


def api_transport(api_endpoint: str) -> str:
    """The transport for `api_endpoint`: gRPC endpoints are bare hosts; a URL with a scheme can only be
    spoken to over REST."""
    return "rest" if "://" in api_endpoint else "grpc"

"""The serving-endpoint seam the canary drives, and the per-arm statistics its verdict judges.

Every endpoint block (`LocalEndpoint`, `VertexAIEndpoint`) implements `ServingEndpoint`:

    deploy(model_uri, display_name, *, fault=None) -> deployed_id   (0% traffic; idempotent by display_name)
    set_traffic({deployed_id: percent, ...})                        (absolute; integers summing to 100)
    undeploy(deployed_id)                                           (idempotent; never the last one with traffic)
    traffic() -> {deployed_id: percent}                             (the live split, fresh from the endpoint)
    deployed() -> [DeployedModel]                                   (fresh)
    stats(deployed_id, since, until=None) -> ArmStats               (requests, errors, latency samples,
                                                                     prediction samples when the endpoint has them)

An endpoint that can mirror requests to a model without serving its answers (the local one) also has
`set_shadow(deployed_id | None)` and `shadow() -> deployed_id | None`: what `strategy: shadow` needs.

`TransientEndpointError` is what a retry may cure (5xx, timeouts, connection refused); any other
`EndpointError` is permanent (unknown model, a split that does not sum to 100...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

__all__ = ["ArmStats", "DeployedModel", "EndpointError", "ServingEndpoint", "TransientEndpointError", "check_split"]


class EndpointError(RuntimeError):
    """The endpoint refused a call; retrying the same call will not help."""


class TransientEndpointError(EndpointError):
    """The endpoint could not be reached or answered 5xx/timeout; retrying may help."""


@dataclass(frozen=True)
class DeployedModel:
    id: str  # the endpoint's deployed-model id
    display_name: str  # "<collection>:<version>", how the canary finds its versions again after a crash
    model_uri: str = ""


@dataclass(frozen=True)
class ArmStats:
    """What one deployed model served in a time window."""

    requests: int = 0
    errors: int = 0
    latencies_ms: tuple[float, ...] = field(default_factory=tuple)  # samples (may be fewer than requests)
    #: prediction samples: the positive-class score and the predicted class per instance answered
    #: (empty when the endpoint does not report predictions)
    scores: tuple[float, ...] = field(default_factory=tuple)
    classes: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.requests < 0 or self.errors < 0 or self.errors > self.requests:
            raise ValueError(f"impossible counts: {self.errors} errors in {self.requests} requests")

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def __add__(self, other: ArmStats) -> ArmStats:
        return ArmStats(self.requests + other.requests, self.errors + other.errors,
                        self.latencies_ms + other.latencies_ms, self.scores + other.scores,
                        self.classes + other.classes)

    def to_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors, "latency_samples": len(self.latencies_ms),
                "prediction_samples": max(len(self.scores), len(self.classes))}


def check_split(split: Mapping[str, int], deployed: set[str] | None = None) -> dict[str, int]:
    """A traffic split as the endpoint will take it: integer percents 0..100 summing to 100, naming only
    deployed models (when `deployed` is given). Raises EndpointError naming what is wrong."""
    out: dict[str, int] = {}
    for key, value in split.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
            raise EndpointError(f"traffic for {key!r} must be an integer percent 0..100, got {value!r}")
        out[str(key)] = value
    if sum(out.values()) != 100:
        raise EndpointError(f"traffic split must sum to 100, got {sum(out.values())}: {out}")
    if deployed is not None:
        unknown = sorted(set(out) - deployed)
        if unknown:
            raise EndpointError(f"traffic split names models that are not deployed: {', '.join(unknown)}")
    return out


class ServingEndpoint(Protocol):
    def deploy(self, model_uri: str, display_name: str, *, fault: Mapping[str, float] | None = None) -> str: ...

    def set_traffic(self, split: Mapping[str, int]) -> None: ...

    def undeploy(self, deployed_id: str) -> None: ...

    def traffic(self) -> dict[str, int]: ...

    def deployed(self) -> list[DeployedModel]: ...

    def stats(self, deployed_id: str, since: datetime, until: datetime | None = None) -> ArmStats: ...

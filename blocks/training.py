"""The trainer seam: start a training job for a dataset and hyperparameters, wait, return the model.

Every trainer block (`LocalTrainer`, `VertexAITrainer`) implements

    train(dataset: str, hyperparameters: dict, *, target: str, log: Callable[[str], None]) -> TrainingResult

and raises `TrainingError` (with the job's own words) when the job fails, is cancelled or times out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

LogFn = Callable[[str], None]


class TrainingError(RuntimeError):
    """A training job did not produce a model: failed, cancelled, timed out or wrote no metrics."""

    def __init__(self, message: str, *, job: str | None = None, state: str | None = None) -> None:
        super().__init__(message)
        self.job = job
        self.state = state


@dataclass(frozen=True)
class TrainingResult:
    """Where the trained model is and how it scored on the trainer's own held-out split."""

    model_uri: str
    metrics: dict[str, float]
    job: str  # the job's id or name: a local run id, or a Vertex AI CustomJob resource name
    trainer: str  # "local" | "vertex-ai"
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"model_uri": self.model_uri, "metrics": dict(self.metrics), "job": self.job,
                "trainer": self.trainer, "details": dict(self.details)}


class Trainer(Protocol):
    def train(self, dataset: str, hyperparameters: dict[str, Any], *, target: str,
              log: LogFn = print) -> TrainingResult: ...


def parse_metrics(doc: Any, where: str) -> dict[str, float]:
    """A metrics JSON document (`{"accuracy": 0.91, ...}`) as floats; anything else is a TrainingError."""
    if not isinstance(doc, dict) or not doc:
        raise TrainingError(f"{where}: metrics must be a non-empty JSON object, got {type(doc).__name__}")
    out: dict[str, float] = {}
    for key, value in doc.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue  # counts and labels may ride along; only numbers are metrics
        out[str(key)] = float(value)
    if not out:
        raise TrainingError(f"{where}: no numeric metric in {sorted(doc)}")
    return out

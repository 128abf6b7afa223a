"""`RolloutPolicy`: a canary policy saved as a block, so operators edit it in the UI.

The fields are those of `flows.canary_verdict.CanaryPolicy` (validated the same way when used);
flow parameters override single fields for one run.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from prefect.blocks.core import Block
from pydantic import Field, model_validator


class RolloutPolicy(Block):
    _block_type_name: ClassVar[str] = "Rollout Policy"
    _block_type_slug: ClassVar[str] = "rollout-policy"
    _description: ClassVar[str] = "How a new model version takes traffic, and when it is rolled back."

    strategy: Literal["canary", "shadow", "blue-green", "immediate"] = "canary"
    steps: list[int] = Field(default_factory=lambda: [10, 30, 50, 100], description="Traffic percents, ending at 100.")
    bake_seconds: float = Field(default=300, description="Bake per step before its verdict.")
    final_bake_seconds: float = Field(default=300, description="Bake at 100% before the old version is undeployed.")
    min_requests: int = Field(default=100, description="Requests per arm before any verdict but HOLD.")
    error_alpha: float = Field(default=0.01, description="Errors: false-rollback budget over the whole rollout.")
    latency_alpha: float = Field(default=0.005, description="Latency: false-rollback budget over the whole rollout.")
    prediction_alpha: float = Field(default=0.005, description="Predictions: false-rollback budget over the rollout.")
    min_prediction_shift: float = Field(default=0.05, description="Prediction shift (KS D / class share) that fails.")
    min_latency_increase: float = Field(default=0.10, description="Relative median slowdown that counts as a failure.")
    min_error_increase: float = 0.0
    max_error_rate: float = Field(default=0.05, description="Absolute error-rate ceiling for the canary.")
    max_p95_latency_ms: float | None = None
    failure_limit: int = 1
    hold_limit: int = 3
    on_hold_limit: Literal["rollback", "pause"] = "rollback"
    on_resume: Literal["continue", "rollback"] = "continue"
    deadline_seconds: float = 3600
    require_approval: bool = False
    approve_before_full: bool = False
    approval_timeout_seconds: float = 3600
    close_issue_on_promote: bool = Field(default=False, description="Close the review issue once its version is promoted.")

    @model_validator(mode="after")
    def _valid(self) -> "RolloutPolicy":
        self.to_policy()  # the same checks as at run time, when the block is saved
        return self

    def to_mapping(self) -> dict[str, Any]:
        from flows.canary_verdict import CanaryPolicy

        names = set(CanaryPolicy.__dataclass_fields__)
        return {k: v for k, v in self.model_dump().items() if k in names}

    def to_policy(self) -> Any:
        from flows.canary_verdict import CanaryPolicy

        return CanaryPolicy.from_mapping(self.to_mapping())

"""`LocalEndpoint`: the serving-endpoint seam over the local prediction server (`deployments.endpoint`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar

from prefect.blocks.core import Block
from pydantic import Field

from blocks.endpoint import ArmStats, DeployedModel, EndpointError, TransientEndpointError, check_split

DEFAULT_URL = "http://127.0.0.1:8788"


class LocalEndpoint(Block):
    """A local HTTP prediction server with weighted routing between deployed model versions."""

    _block_type_name: ClassVar[str] = "Local Endpoint"
    _block_type_slug: ClassVar[str] = "local-endpoint"
    _description: ClassVar[str] = "The embedded stack's prediction server (python -m deployments.endpoint)."

    url: str = Field(default="", description=f"Server address (default $MODELOPS_ENDPOINT_URL or {DEFAULT_URL}).")
    timeout: float = Field(default=10.0, gt=0, description="Seconds per admin call.")

    def base_url(self) -> str:
        return (self.url or os.environ.get("MODELOPS_ENDPOINT_URL") or DEFAULT_URL).rstrip("/")

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        import httpx

        url = f"{self.base_url()}{path}"
        try:
            r = httpx.request(method, url, timeout=self.timeout, **kw)
        except httpx.HTTPError as exc:
            raise TransientEndpointError(f"local endpoint {self.base_url()} unreachable ({type(exc).__name__}) "
                                         f"on {method} {path}") from None
        if r.status_code >= 500 or r.status_code == 429:
            raise TransientEndpointError(f"local endpoint answered {r.status_code} on {method} {path}: {_text(r)}")
        if r.status_code >= 400:
            raise EndpointError(f"local endpoint refused {method} {path} ({r.status_code}): {_text(r)}")
        return r.json() if r.content else None

    def deploy(self, model_uri: str, display_name: str, *, fault: Mapping[str, Any] | None = None) -> str:
        doc = {"model_uri": model_uri, "display_name": display_name}
        if fault:
            doc["fault"] = dict(fault)
        return self._call("POST", "/v1/deployed-models", json=doc)["id"]

    def set_traffic(self, split: Mapping[str, int]) -> None:
        deployed = {m.id for m in self.deployed()}
        self._call("PUT", "/v1/traffic", json={"traffic_split": check_split(split, deployed)})

    def undeploy(self, deployed_id: str) -> None:
        try:
            self._call("DELETE", f"/v1/deployed-models/{deployed_id}")
        except EndpointError as exc:
            if isinstance(exc, TransientEndpointError) or "(404)" not in str(exc):
                raise  # 404: already gone, which is what was asked

    def traffic(self) -> dict[str, int]:
        return {k: int(v) for k, v in self._call("GET", "/v1/endpoint")["traffic_split"].items()}

    def deployed(self) -> list[DeployedModel]:
        return [DeployedModel(id=m["id"], display_name=m["display_name"], model_uri=m["model_uri"])
                for m in self._call("GET", "/v1/endpoint")["deployed_models"]]

    def stats(self, deployed_id: str, since: datetime, until: datetime | None = None) -> ArmStats:
        params = {"since": since.timestamp()}
        if until is not None:
            params["until"] = until.timestamp()
        doc = self._call("GET", f"/v1/deployed-models/{deployed_id}/stats", params=params)
        return ArmStats(requests=int(doc["requests"]), errors=int(doc["errors"]),
                        latencies_ms=tuple(float(x) for x in doc["latencies_ms"]),
                        scores=tuple(float(x) for x in doc.get("scores") or ()),
                        classes=tuple(str(x) for x in doc.get("classes") or ()))

    def set_shadow(self, deployed_id: str | None) -> None:
        """Mirror every served request to `deployed_id` (None: stop); its answers are recorded, never served."""
        self._call("PUT", "/v1/shadow", json={"deployed_model_id": deployed_id})

    def shadow(self) -> str | None:
        return self._call("GET", "/v1/endpoint").get("shadow")


def _text(r: Any) -> str:
    try:
        return str(r.json().get("error", r.text))[:300]
    except ValueError:
        return r.text[:300]

"""The local model endpoint: a real HTTP prediction server with weighted routing between deployed
model versions and per-version metrics. `python -m deployments.endpoint --host H --port P`.

Serving
  POST /v1/predict                 {"instances": [{feature: value, ...}, ...]}
                                   -> 200 {"predictions", "probabilities", "deployed_model_id", "model"}
Admin (what `blocks.local_endpoint.LocalEndpoint` calls; the same operations as a Vertex AI endpoint)
  GET    /v1/endpoint              -> {"deployed_models": [...], "traffic_split": {id: pct}}
  POST   /v1/deployed-models       {"model_uri", "display_name", "fault"?} -> 201 {"id"} (200 if that
                                   display name is already deployed: idempotent)
  PUT    /v1/traffic               {"traffic_split": {id: pct}} (integers summing to 100, deployed ids)
  DELETE /v1/deployed-models/{id}  -> 204; 409 while it still has traffic; 404 unknown
  GET    /v1/deployed-models/{id}/stats?since=EPOCH&until=EPOCH
                                   -> {"requests", "errors", "latencies_ms", "scores", "classes"}
                                   (per answered instance: the positive-class score and the predicted
                                   class; at most 5,000 requests sampled, the same requests for all)
  PUT    /v1/shadow                {"deployed_model_id": id | null}: mirror every served request to
                                   that deployed model (it answers a copy after the response has gone;
                                   its answers are recorded, never returned); null stops mirroring.
                                   A model with traffic cannot be the shadow. GET /v1/endpoint shows it.
  GET    /healthz                  -> {"status", "deployed", "traffic_split", "models": {id: display_name}}
                                   (one consistent snapshot; never faulted: a safe path for observers)

Fault injection on the admin API (for fault tests and demos; `/v1/predict`, `/healthz` and
`/v1/faults` itself are never faulted)
  POST   /v1/faults  {"method", "path", "count", "status"?, "delay_ms"?, "applied"?}
                     the next `count` calls to that route (`path` may end in `*`) fail: answered
                     `status` (default 503) after `delay_ms` (default 0), not applied; with
                     `"applied": true` the call is applied and only its answer is held `delay_ms`
                     (the change landed, the client timed out). A later fault on a route replaces it.
  POST   /v1/faults  {"admin": {"error_rate", "timeout_rate", "late_rate", "delay_ms", "status", "count", "seed"}}
                     every admin call, at random: with `error_rate` answered `status` (default 503) at
                     once, not applied; with `timeout_rate` held `delay_ms` (default 2000) then
                     answered 504, not applied (a hung call); with `late_rate` applied, then its answer
                     held `delay_ms` (a lost answer). Rates are 0..1 and sum to <= 1; `count` (default
                     unlimited) caps the faults injected, `seed` makes them reproducible.
                     `{"admin": null}` turns it off. Route faults are consulted first.
  GET    /v1/faults  -> {"routes": [...], "admin": {...} | null, "injected": {"error", "timeout", "late"}}
  DELETE /v1/faults  -> clears every fault (the `injected` counts stay)

Each request is routed by the live split. A version deployed with `fault: {"error_rate": 0.2,
"extra_latency_ms": 50}` fails that share of its requests and answers that much slower: the demo's
faulty model. Two faults answer 200 with wrong predictions (a model can fail without an error):
`{"predict_class": "0"}` answers that class for every instance (score 1 or 0), and
`{"logit_shift": 1.0}` adds that much to every score's log-odds (odds x e^1: a broken feature
pipeline or a mis-calibrated retrain), the class following the shifted score. Deployed models and the split are kept in a state file, so a restarted endpoint
serves what it served before: the split is the canary's source of truth.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

log = logging.getLogger("modelops.endpoint")

MAX_SAMPLES = 5000  # latency samples returned per stats call
MAX_RECORDS = 500_000  # per deployed model, in memory


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Deployed:
    id: str
    display_name: str
    model_uri: str
    fault: dict[str, Any] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    model: Any = None  # the loaded bundle
    #: (ts, ok, latency_ms, scores, classes) per request; scores/classes per answered instance
    records: deque = field(default_factory=lambda: deque(maxlen=MAX_RECORDS))

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "display_name": self.display_name, "model_uri": self.model_uri,
                "fault": dict(self.fault), "created": self.created}


FAULT_KEYS = ("error_rate", "extra_latency_ms", "logit_shift", "predict_class")


def check_fault(fault: Any) -> dict[str, Any]:
    if fault in (None, {}):
        return {}
    if not isinstance(fault, dict) or set(fault) - set(FAULT_KEYS):
        raise ApiError(422, "fault must be an object with error_rate (0..1), extra_latency_ms (>= 0), "
                            "logit_shift (a number) and/or predict_class (a class label)")
    out: dict[str, Any] = {}
    for key, value in fault.items():
        if key == "predict_class":
            if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value) == "":
                raise ApiError(422, f"fault.predict_class must be a class label, got {value!r}")
            out[key] = str(value)
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or abs(value) == float("inf"):
            raise ApiError(422, f"fault.{key} must be a finite number, got {value!r}")
        out[key] = float(value)
    if not 0 <= out.get("error_rate", 0) <= 1 or out.get("extra_latency_ms", 0) < 0:
        raise ApiError(422, f"fault out of range: {out}")
    return out


def apply_prediction_fault(classes: list[Any], scores: list[float] | None, labels: list[Any],
                           fault: dict[str, Any]) -> tuple[list[Any], list[float] | None]:
    """What a model with `fault` answers instead of (classes, positive-class scores); `labels` are the
    model's classes, the last one the positive class. Pure: the benchmark simulates with it."""
    import math

    if fault.get("predict_class") is not None:
        wanted = fault["predict_class"]
        label = next((c for c in labels if str(c) == wanted), wanted)
        positive = len(labels) and str(labels[-1]) == str(label)
        return [label] * len(classes), None if scores is None else [1.0 if positive else 0.0] * len(classes)
    shift = fault.get("logit_shift")
    if shift and scores is not None and len(labels) == 2:
        eps = 1e-12
        shifted = [1 / (1 + math.exp(-(math.log(max(p, eps) / max(1 - p, eps)) + shift))) for p in scores]
        return [labels[1] if p >= 0.5 else labels[0] for p in shifted], [round(p, 6) for p in shifted]
    return classes, scores


@dataclass
class Fault:
    """What happens to one admin call: answered `status` (not applied) or, with `applied`, applied and
    answered late; either after `delay_ms`."""

    kind: str  # "error" | "timeout" | "late": how GET /v1/faults counts it
    status: int | None
    delay_ms: float = 0.0

    @property
    def applied(self) -> bool:
        return self.status is None


@dataclass
class RouteFault:
    remaining: int
    status: int
    delay_ms: float
    applied: bool

    def public(self, method: str, path: str) -> dict[str, Any]:
        return {"method": method, "path": path, "remaining": self.remaining, "status": self.status,
                "delay_ms": self.delay_ms, "applied": self.applied}


@dataclass
class AdminFaults:
    error_rate: float = 0.0
    timeout_rate: float = 0.0
    late_rate: float = 0.0
    delay_ms: float = 2000.0
    status: int = 503
    count: int | None = None  # faults left to inject; None: unlimited
    seed: int | None = None
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def public(self) -> dict[str, Any]:
        return {"error_rate": self.error_rate, "timeout_rate": self.timeout_rate, "late_rate": self.late_rate,
                "delay_ms": self.delay_ms, "status": self.status, "count": self.count, "seed": self.seed}

    def draw(self) -> Fault | None:
        if self.count is not None and self.count <= 0:
            return None
        u = self.rng.random()
        if u < self.error_rate:
            fault = Fault("error", self.status)
        elif u < self.error_rate + self.timeout_rate:
            fault = Fault("timeout", 504, self.delay_ms)
        elif u < self.error_rate + self.timeout_rate + self.late_rate:
            fault = Fault("late", None, self.delay_ms)
        else:
            return None
        if self.count is not None:
            self.count -= 1
        return fault


def _num(doc: dict[str, Any], key: str, default: float, lo: float, hi: float, what: str) -> float:
    value = doc.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ApiError(400, f"{what}.{key} must be a number in {lo:g}..{hi:g}, got {value!r}")
    return float(value)


def _int(doc: dict[str, Any], key: str, default: int | None, lo: int, hi: int, what: str) -> int | None:
    value = doc.get(key, default)
    if value is None and default is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ApiError(400, f"{what}.{key} must be an integer in {lo}..{hi}, got {value!r}")
    return value


def parse_route_fault(doc: dict[str, Any]) -> tuple[str, str, RouteFault]:
    """`{"method", "path", "count", "status"?, "delay_ms"?, "applied"?}` -> (METHOD, path, fault)."""
    unknown = sorted(set(doc) - {"method", "path", "count", "status", "delay_ms", "applied"})
    if unknown:
        raise ApiError(400, f"unknown fault field(s): {', '.join(unknown)}")
    method, path = doc.get("method"), doc.get("path")
    if not isinstance(method, str) or not method or not isinstance(path, str) or not path.startswith("/"):
        raise ApiError(400, "faults need method (e.g. PUT) and path (e.g. /v1/traffic)")
    applied = doc.get("applied", False)
    if not isinstance(applied, bool):
        raise ApiError(400, f"fault.applied must be true or false, got {applied!r}")
    fault = RouteFault(remaining=_int(doc, "count", 1, 0, 1_000_000, "fault") or 0,
                       status=_int(doc, "status", 503, 400, 599, "fault") or 503,
                       delay_ms=_num(doc, "delay_ms", 0, 0, 600_000, "fault"), applied=applied)
    return method.upper(), path, fault


def parse_admin_faults(doc: Any) -> AdminFaults | None:
    """`{"error_rate", "timeout_rate", "late_rate", "delay_ms", "status", "count", "seed"}` or null."""
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise ApiError(400, "admin faults must be an object or null")
    unknown = sorted(set(doc) - {"error_rate", "timeout_rate", "late_rate", "delay_ms", "status", "count", "seed"})
    if unknown:
        raise ApiError(400, f"unknown admin fault field(s): {', '.join(unknown)}")
    rates = {k: _num(doc, k, 0, 0, 1, "admin") for k in ("error_rate", "timeout_rate", "late_rate")}
    if sum(rates.values()) > 1:
        raise ApiError(400, f"admin fault rates must sum to <= 1, got {sum(rates.values()):g}")
    seed = doc.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ApiError(400, f"admin.seed must be an integer, got {seed!r}")
    return AdminFaults(**rates, delay_ms=_num(doc, "delay_ms", 2000, 0, 600_000, "admin"),
                       status=_int(doc, "status", 503, 400, 599, "admin") or 503,
                       count=_int(doc, "count", None, 0, 1_000_000_000, "admin"), seed=seed, rng=random.Random(seed))


class EndpointState:
    """Deployed models, the traffic split and the per-model request records; persisted to `path`."""

    def __init__(self, path: Path | None, seed: int | None = None) -> None:
        self.path = path
        self.lock = threading.RLock()
        self.models: dict[str, Deployed] = {}
        self.split: dict[str, int] = {}
        self.rng = random.Random(seed)
        self.faults: dict[tuple[str, str], RouteFault] = {}  # (METHOD, path) -> fault
        self.admin_faults: AdminFaults | None = None
        self.injected: dict[str, int] = {"error": 0, "timeout": 0, "late": 0}
        self.shadow: str | None = None  # a deployed model answering mirrored copies of served requests
        if path and path.exists():
            self._load()

    def _load(self) -> None:
        assert self.path is not None
        doc = json.loads(self.path.read_text())
        for m in doc.get("deployed_models", []):
            d = Deployed(id=m["id"], display_name=m["display_name"], model_uri=m["model_uri"],
                         fault=m.get("fault") or {}, created=m.get("created", time.time()))
            d.model = _load_model(d.model_uri)
            self.models[d.id] = d
        self.split = {k: int(v) for k, v in doc.get("traffic_split", {}).items() if k in self.models}
        self.shadow = doc.get("shadow") if doc.get("shadow") in self.models else None
        log.info("restored %d deployed model(s), split %s", len(self.models), self.split)

    def _save(self) -> None:
        if not self.path:
            return
        doc = {"deployed_models": [m.public() for m in self.models.values()], "traffic_split": self.split,
               "shadow": self.shadow}
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "w") as fh:
            json.dump(doc, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def describe(self) -> dict[str, Any]:
        with self.lock:
            return {"deployed_models": [m.public() for m in self.models.values()], "traffic_split": dict(self.split),
                    "shadow": self.shadow}

    def deploy(self, model_uri: str, display_name: str, fault: dict[str, Any]) -> tuple[str, bool]:
        with self.lock:
            for m in self.models.values():
                if m.display_name == display_name:
                    return m.id, False
        bundle = _load_model(model_uri)  # outside the lock: loading may take a moment
        with self.lock:
            for m in self.models.values():
                if m.display_name == display_name:
                    return m.id, False
            d = Deployed(id=f"dm-{uuid.uuid4().hex[:10]}", display_name=display_name, model_uri=model_uri,
                         fault=fault, model=bundle)
            self.models[d.id] = d
            if not self.split:  # the first model serves everything
                self.split = {d.id: 100}
            self._save()
            log.info("deployed %s as %s", display_name, d.id)
            return d.id, True

    def set_traffic(self, split: Any) -> None:
        if not isinstance(split, dict) or not split:
            raise ApiError(400, "traffic_split must be a non-empty object {deployed_model_id: percent}")
        out: dict[str, int] = {}
        for key, value in split.items():
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
                raise ApiError(400, f"traffic for {key!r} must be an integer percent 0..100, got {value!r}")
            out[key] = value
        if sum(out.values()) != 100:
            raise ApiError(400, f"traffic_split must sum to 100, got {sum(out.values())}")
        with self.lock:
            unknown = sorted(set(out) - set(self.models))
            if unknown:
                raise ApiError(400, f"traffic_split names models that are not deployed: {', '.join(unknown)}")
            if self.shadow and out.get(self.shadow, 0) > 0:
                raise ApiError(409, f"{self.shadow} is the shadow: stop mirroring (PUT /v1/shadow null) before it "
                                    f"takes traffic")
            self.split = {k: v for k, v in out.items() if v > 0}
            self._save()
            log.info("traffic split %s", self.split)

    def undeploy(self, deployed_id: str) -> None:
        with self.lock:
            if deployed_id not in self.models:
                raise ApiError(404, f"no deployed model {deployed_id}")
            if self.split.get(deployed_id, 0) > 0:
                raise ApiError(409, f"{deployed_id} still has {self.split[deployed_id]}% of the traffic: shift it first")
            del self.models[deployed_id]
            if self.shadow == deployed_id:
                self.shadow = None
            self._save()
            log.info("undeployed %s", deployed_id)

    def set_shadow(self, deployed_id: Any) -> None:
        with self.lock:
            if deployed_id is not None:
                if not isinstance(deployed_id, str) or deployed_id not in self.models:
                    raise ApiError(404 if isinstance(deployed_id, str) else 400,
                                   f"deployed_model_id must be a deployed model's id or null, got {deployed_id!r}")
                if self.split.get(deployed_id, 0) > 0:
                    raise ApiError(409, f"{deployed_id} serves {self.split[deployed_id]}% of the traffic: a shadow "
                                        f"takes none")
            self.shadow = deployed_id
            self._save()
            log.info("shadow %s", deployed_id or "off")

    def shadow_model(self, served: Deployed) -> Deployed | None:
        with self.lock:
            d = self.models.get(self.shadow) if self.shadow else None
            return d if d is not None and d is not served else None

    def route(self) -> Deployed:
        with self.lock:
            if not self.split:
                raise ApiError(503, "no model is serving: the endpoint has no traffic split")
            ids, weights = zip(*self.split.items())
            return self.models[self.rng.choices(ids, weights=weights)[0]]

    def stats(self, deployed_id: str, since: float, until: float) -> dict[str, Any]:
        with self.lock:
            if deployed_id not in self.models:
                raise ApiError(404, f"no deployed model {deployed_id}")
            records = [r for r in self.models[deployed_id].records if since <= r[0] < until]
        errors = sum(1 for r in records if not r[1])
        sample = records if len(records) <= MAX_SAMPLES else random.Random(0).sample(records, MAX_SAMPLES)
        return {"requests": len(records), "errors": errors, "latencies_ms": [r[2] for r in sample],
                "scores": [x for r in sample for x in r[3]], "classes": [x for r in sample for x in r[4]]}

    def describe_faults(self) -> dict[str, Any]:
        with self.lock:
            return {"routes": [f.public(m, p) for (m, p), f in self.faults.items() if f.remaining > 0],
                    "admin": self.admin_faults.public() if self.admin_faults else None,
                    "injected": dict(self.injected)}

    def take_fault(self, method: str, path: str) -> Fault | None:
        """The fault for this admin call, if any: a route fault first, else a draw of the admin faults."""
        with self.lock:
            fault = None
            for (m, p), entry in self.faults.items():
                if m == method and (p == path or (p.endswith("*") and path.startswith(p[:-1]))) and entry.remaining > 0:
                    entry.remaining -= 1
                    fault = (Fault("late", None, entry.delay_ms) if entry.applied else
                             Fault("timeout" if entry.delay_ms else "error", entry.status, entry.delay_ms))
                    break
            if fault is None and self.admin_faults is not None:
                fault = self.admin_faults.draw()
            if fault is not None:
                self.injected[fault.kind] += 1
            return fault


def _load_model(uri: str) -> Any:
    from training.tabular import ModelFileError, load_model

    try:
        return load_model(uri)
    except ModelFileError as exc:
        raise ApiError(422, f"cannot deploy {uri}: {exc}") from None


def _predict(d: Deployed, instances: list[dict[str, Any]]) -> dict[str, Any]:
    import pandas as pd

    bundle = d.model
    frame = pd.DataFrame(instances)
    missing = [c for c in bundle["features"] if c not in frame.columns]
    if missing:
        raise ApiError(400, f"instances lack the model's feature(s): {', '.join(missing)}")
    pipeline = bundle["pipeline"]
    features = pipeline[:-1].transform(frame[bundle["features"]])  # once, for both answers
    model = pipeline[-1]
    labels = [c.item() if hasattr(c, "item") else c for c in getattr(model, "classes_", [])]  # JSON types
    if hasattr(model, "predict_proba"):
        proba = model.predict_proba(features)
        predictions = model.classes_[proba.argmax(axis=1)].tolist()
        scores: list[float] | None = [round(float(p), 6) for p in proba[:, -1]]
    else:
        predictions, scores = model.predict(features).tolist(), None
    if d.fault.get("predict_class") is not None or d.fault.get("logit_shift"):
        predictions, scores = apply_prediction_fault(predictions, scores, labels, d.fault)
    return {"predictions": predictions} if scores is None else {"predictions": predictions, "probabilities": scores}


def build_app(state: EndpointState) -> Starlette:
    def error(exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    def admin(handler: Any) -> Any:
        """An admin route, subject to the injected faults (see the module docstring)."""

        async def guarded(request: Request) -> Response:
            fault = state.take_fault(request.method, request.url.path)
            if fault is None:
                return await handler(request)
            if not fault.applied:
                if fault.delay_ms:
                    await asyncio.sleep(fault.delay_ms / 1000)
                assert fault.status is not None
                return error(ApiError(fault.status, f"injected {fault.kind} on {request.method} {request.url.path}"))
            response = await handler(request)  # the change lands now; its answer comes late
            await asyncio.sleep(fault.delay_ms / 1000)
            return response

        return guarded

    async def body(request: Request) -> dict[str, Any]:
        try:
            doc = json.loads(await request.body())
        except ValueError:
            raise ApiError(400, "body is not valid JSON") from None
        if not isinstance(doc, dict):
            raise ApiError(400, "body must be a JSON object")
        return doc

    async def answer(d: Deployed, instances: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
        """What `d` answers, recorded against `d`: (status, body)."""
        started = time.perf_counter()
        ok, result = True, {}
        try:
            extra = d.fault.get("extra_latency_ms", 0)
            if extra:
                await asyncio.sleep(extra / 1000)
            if d.fault.get("error_rate") and state.rng.random() < d.fault["error_rate"]:
                raise ApiError(500, f"model {d.display_name} failed (injected fault)")
            result = await run_in_threadpool(_predict, d, instances)
            return 200, {**result, "deployed_model_id": d.id, "model": d.display_name}
        except ApiError as exc:
            ok = exc.status < 500  # a client's bad request is not the model's error
            return exc.status, {"error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - a model crash is a 500 counted against the model
            ok = False
            log.exception("prediction failed on %s", d.id)
            return 500, {"error": f"prediction failed: {type(exc).__name__}"}
        finally:
            d.records.append((time.time(), ok, (time.perf_counter() - started) * 1000,
                              tuple(result.get("probabilities") or ()),
                              tuple(str(c) for c in result.get("predictions") or ())))

    mirrors: set[asyncio.Task] = set()  # running shadow copies (a reference, so none is collected early)

    async def mirror(d: Deployed, instances: list[dict[str, Any]]) -> None:
        await answer(d, instances)

    async def predict(request: Request) -> Response:
        try:
            doc = await body(request)
            instances = doc.get("instances")
            if not isinstance(instances, list) or not instances or not all(isinstance(i, dict) for i in instances):
                raise ApiError(400, "instances must be a non-empty list of objects")
            d = state.route()
        except ApiError as exc:
            return error(exc)
        status, doc = await answer(d, instances)
        shadow = state.shadow_model(d)
        if shadow is not None and not 400 <= status < 500:
            # the copy runs beside this response: the caller never waits for the shadow, nor sees it
            task = asyncio.get_running_loop().create_task(mirror(shadow, instances))
            mirrors.add(task)
            task.add_done_callback(mirrors.discard)
        return JSONResponse(doc, status_code=status)

    async def describe(request: Request) -> Response:
        return JSONResponse(state.describe())

    async def deploy(request: Request) -> Response:
        try:
            doc = await body(request)
            uri, name = doc.get("model_uri"), doc.get("display_name")
            if not isinstance(uri, str) or not uri or not isinstance(name, str) or not name:
                raise ApiError(422, "model_uri and display_name are required strings")
            deployed_id, created = await run_in_threadpool(state.deploy, uri, name, check_fault(doc.get("fault")))
        except ApiError as exc:
            return error(exc)
        return JSONResponse({"id": deployed_id, "created": created}, status_code=201 if created else 200)

    async def traffic(request: Request) -> Response:
        try:
            state.set_traffic((await body(request)).get("traffic_split"))
        except ApiError as exc:
            return error(exc)
        return JSONResponse({"traffic_split": state.describe()["traffic_split"]})

    async def undeploy(request: Request) -> Response:
        try:
            state.undeploy(request.path_params["id"])
        except ApiError as exc:
            return error(exc)
        return Response(status_code=204)

    async def stats(request: Request) -> Response:
        try:
            since = float(request.query_params.get("since", 0))
            until = float(request.query_params.get("until", time.time() + 1))
            return JSONResponse(state.stats(request.path_params["id"], since, until))
        except ValueError:
            return error(ApiError(400, "since/until must be epoch seconds"))
        except ApiError as exc:
            return error(exc)

    async def faults(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse(state.describe_faults())
        if request.method == "DELETE":
            with state.lock:
                state.faults.clear()
                state.admin_faults = None
            return JSONResponse(state.describe_faults())
        try:
            doc = await body(request)
            if "admin" in doc:
                if set(doc) != {"admin"}:
                    raise ApiError(400, "an admin fault body is {\"admin\": {...}} alone")
                admin_faults = parse_admin_faults(doc["admin"])
                with state.lock:
                    state.admin_faults = admin_faults
                log.warning("admin faults: %s", admin_faults.public() if admin_faults else "off")
                return JSONResponse({"admin": admin_faults.public() if admin_faults else None})
            method, path, fault = parse_route_fault(doc)
        except ApiError as exc:
            return error(exc)
        with state.lock:
            state.faults[(method, path)] = fault
        log.warning("route fault: %s", fault.public(method, path))
        return JSONResponse({**fault.public(method, path), "count": fault.remaining})

    async def shadow(request: Request) -> Response:
        try:
            doc = await body(request)
            if set(doc) != {"deployed_model_id"}:
                raise ApiError(400, 'body must be {"deployed_model_id": id | null}')
            state.set_shadow(doc["deployed_model_id"])
        except ApiError as exc:
            return error(exc)
        return JSONResponse({"shadow": state.shadow})

    async def healthz(request: Request) -> Response:
        d = state.describe()
        return JSONResponse({"status": "ok", "deployed": len(d["deployed_models"]), "traffic_split": d["traffic_split"],
                             "models": {m["id"]: m["display_name"] for m in d["deployed_models"]}})

    return Starlette(routes=[
        Route("/v1/predict", predict, methods=["POST"]),
        Route("/v1/endpoint", admin(describe), methods=["GET"]),
        Route("/v1/deployed-models", admin(deploy), methods=["POST"]),
        Route("/v1/traffic", admin(traffic), methods=["PUT"]),
        Route("/v1/deployed-models/{id}", admin(undeploy), methods=["DELETE"]),
        Route("/v1/deployed-models/{id}/stats", admin(stats), methods=["GET"]),
        Route("/v1/shadow", admin(shadow), methods=["PUT"]),
        Route("/v1/faults", faults, methods=["GET", "POST", "DELETE"]),
        Route("/healthz", healthz, methods=["GET"]),
    ])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m deployments.endpoint", description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8788)
    p.add_argument("--state", default=os.environ.get("MODELOPS_ENDPOINT_STATE", ".modelops/endpoint-state.json"),
                   help="state file: deployed models and split survive a restart")
    p.add_argument("--seed", type=int, default=None, help="seed the router (reproducible demos)")
    p.add_argument("--log-level", default="info")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    path = Path(args.state).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    import uvicorn

    uvicorn.run(build_app(EndpointState(path, seed=args.seed)), host=args.host, port=args.port,
                log_level="warning", access_log=False)


if __name__ == "__main__":
    main()

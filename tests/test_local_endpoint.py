"""The local model endpoint over real HTTP: routing by the split, per-version stats, faults, restarts."""

from __future__ import annotations

import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from blocks.endpoint import EndpointError, TransientEndpointError, check_split
from blocks.local_endpoint import LocalEndpoint
from deployments.stack import Stack
from deployments.traffic import Traffic, sample_rows
from training.tabular import fit, make_dataset, save_model, split


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = {}
    for name, seed in (("v1", 1), ("v2", 2)):
        train, _ = split(make_dataset(1500, seed=seed), "churned")
        out[name] = str(save_model(fit(train, "churned", {}), tmp_path_factory.mktemp(name)))
    return out


@pytest.fixture()
def stack(tmp_path: Path) -> Iterator[Stack]:
    st = Stack(tmp_path)
    st.start_endpoint("--seed", "1")
    try:
        yield st
    finally:
        st.stop()


def test_predictions_are_the_models_own(stack: Stack, models: dict[str, str]) -> None:
    ep = LocalEndpoint(url=stack.endpoint_url)
    v1 = ep.deploy(models["v1"], "churn:v1")
    assert ep.traffic() == {v1: 100}, "the first model serves everything"
    rows = sample_rows(5)
    r = httpx.post(f"{stack.endpoint_url}/v1/predict", json={"instances": rows}).json()
    from training.tabular import load_model
    import pandas as pd

    expected = load_model(models["v1"])["pipeline"].predict(pd.DataFrame(rows)).tolist()
    assert r["predictions"] == expected and r["deployed_model_id"] == v1 and r["model"] == "churn:v1"
    assert len(r["probabilities"]) == 5
    bad = httpx.post(f"{stack.endpoint_url}/v1/predict", json={"instances": [{"age": 3}]})
    assert bad.status_code == 400 and "tenure_months" in bad.json()["error"]


def test_traffic_follows_the_split_and_stats_count_each_version(stack: Stack, models: dict[str, str]) -> None:
    ep = LocalEndpoint(url=stack.endpoint_url)
    v1 = ep.deploy(models["v1"], "churn:v1")
    v2 = ep.deploy(models["v2"], "churn:v2", fault={"error_rate": 0.5, "extra_latency_ms": 100})
    assert ep.deploy(models["v2"], "churn:v2") == v2, "deploy is idempotent by display name"
    assert ep.traffic() == {v1: 100}, "a new version starts with no traffic"
    since = datetime.now(timezone.utc)
    ep.set_traffic({v1: 70, v2: 30})
    with Traffic(stack.endpoint_url, rps=50) as traffic:
        time.sleep(5)
    a, b = ep.stats(v1, since), ep.stats(v2, since)
    total = a.requests + b.requests
    assert total == sum(traffic.counts.values()) and total > 150
    assert 0.15 < b.requests / total < 0.45, (a.requests, b.requests)
    assert a.errors == 0 and 0.3 < b.error_rate < 0.7
    assert traffic.counts[500] == b.errors
    assert statistics.median(b.latencies_ms) > statistics.median(a.latencies_ms) + 50
    later = ep.stats(v1, datetime.now(timezone.utc))
    assert later.requests == 0, "the window excludes earlier requests"


def test_unsafe_changes_are_refused_and_change_nothing(stack: Stack, models: dict[str, str]) -> None:
    ep = LocalEndpoint(url=stack.endpoint_url)
    v1 = ep.deploy(models["v1"], "churn:v1")
    v2 = ep.deploy(models["v2"], "churn:v2")
    ep.set_traffic({v1: 50, v2: 50})
    with pytest.raises(EndpointError, match="must sum to 100"):
        ep.set_traffic({v1: 60, v2: 50})
    with pytest.raises(EndpointError, match="not deployed: dm-nope"):
        ep.set_traffic({v1: 50, "dm-nope": 50})
    with pytest.raises(EndpointError, match="still has 50% of the traffic"):
        ep.undeploy(v2)
    # the server refuses on its own, too (not only the client's check)
    r = httpx.put(f"{stack.endpoint_url}/v1/traffic", json={"traffic_split": {v1: 100, "dm-nope": 0}})
    assert r.status_code == 400 and "not deployed" in r.json()["error"]
    assert ep.traffic() == {v1: 50, v2: 50}
    with pytest.raises(EndpointError, match="cannot deploy"):
        ep.deploy(str(Path(models["v1"]).parent / "missing.joblib"), "churn:v9")
    ep.set_traffic({v1: 100, v2: 0})
    ep.undeploy(v2)
    ep.undeploy(v2)  # already gone: idempotent
    assert [m.display_name for m in ep.deployed()] == ["churn:v1"] and ep.traffic() == {v1: 100}


def test_injected_admin_faults_are_transient_errors(stack: Stack, models: dict[str, str]) -> None:
    ep = LocalEndpoint(url=stack.endpoint_url)
    v1 = ep.deploy(models["v1"], "churn:v1")
    httpx.post(f"{stack.endpoint_url}/v1/faults", json={"method": "PUT", "path": "/v1/traffic", "count": 1, "status": 503})
    with pytest.raises(TransientEndpointError, match="503"):
        ep.set_traffic({v1: 100})
    ep.set_traffic({v1: 100})  # the next call goes through



def test_admin_faults_fail_admin_calls_at_random_and_never_serving(stack: Stack, models: dict[str, str]) -> None:
    """`{"admin": {...}}` fails admin calls at the given rate (transient errors for the client), leaves
    prediction and /healthz alone, counts what it injected, stops after `count`, and can be turned off."""
    url = stack.endpoint_url
    ep = LocalEndpoint(url=url)
    v1 = ep.deploy(models["v1"], "churn:v1")
    r = httpx.post(f"{url}/v1/faults", json={"admin": {"error_rate": 1.0, "status": 502, "count": 3}})
    assert r.status_code == 200 and r.json()["admin"]["count"] == 3
    for _ in range(3):
        with pytest.raises(TransientEndpointError, match="502"):
            ep.traffic()
        assert httpx.post(f"{url}/v1/predict", json={"instances": sample_rows(1)}).status_code == 200
        health = httpx.get(f"{url}/healthz").json()
        assert health["traffic_split"] == {v1: 100} and health["models"] == {v1: "churn:v1"}
    assert ep.traffic() == {v1: 100}, "the fault budget is spent"
    assert httpx.get(f"{url}/v1/faults").json()["injected"] == {"error": 3, "timeout": 0, "late": 0}

    httpx.post(f"{url}/v1/faults", json={"admin": {"error_rate": 0.5, "seed": 3}})
    outcomes = []
    for _ in range(40):
        try:
            ep.traffic()
            outcomes.append("ok")
        except TransientEndpointError:
            outcomes.append("503")
    assert 5 <= outcomes.count("503") <= 35, outcomes
    assert httpx.get(f"{url}/v1/faults").json()["injected"]["error"] == 3 + outcomes.count("503")
    assert httpx.post(f"{url}/v1/faults", json={"admin": None}).json() == {"admin": None}
    assert all(ep.traffic() == {v1: 100} for _ in range(10)), "admin faults are off"


def test_hung_and_late_admin_calls_are_client_timeouts(stack: Stack, models: dict[str, str]) -> None:
    """A hung call times out and changes nothing; a late one times out although its change landed."""
    url = stack.endpoint_url
    v1 = LocalEndpoint(url=url).deploy(models["v1"], "churn:v1")  # loading a model may take a while
    v2 = LocalEndpoint(url=url).deploy(models["v2"], "churn:v2")
    ep = LocalEndpoint(url=url, timeout=0.5)

    def split_now() -> dict[str, int]:
        return httpx.get(f"{url}/healthz").json()["traffic_split"]

    httpx.post(f"{url}/v1/faults", json={"method": "PUT", "path": "/v1/traffic", "count": 1, "status": 504,
                                         "delay_ms": 1500})
    with pytest.raises(TransientEndpointError, match="unreachable .*Timeout.* on PUT /v1/traffic"):
        ep.set_traffic({v1: 50, v2: 50})
    time.sleep(1.5)  # the hung call has ended on the server
    assert split_now() == {v1: 100}, "a hung call is not applied"

    httpx.post(f"{url}/v1/faults", json={"method": "PUT", "path": "/v1/traffic", "count": 1, "delay_ms": 1500,
                                         "applied": True})
    with pytest.raises(TransientEndpointError, match="Timeout"):
        ep.set_traffic({v1: 50, v2: 50})
    assert split_now() == {v1: 50, v2: 50}, "a late answer: the change landed before the client gave up"

    httpx.post(f"{url}/v1/faults", json={"admin": {"timeout_rate": 1.0, "delay_ms": 1500, "count": 1}})
    with pytest.raises(TransientEndpointError, match="Timeout"):
        ep.deployed()
    assert ep.traffic() == {v1: 50, v2: 50}
    assert httpx.get(f"{url}/v1/faults").json()["injected"] == {"error": 0, "timeout": 2, "late": 1}
    assert httpx.delete(f"{url}/v1/faults").json()["admin"] is None


@pytest.mark.parametrize(("doc", "needle"), [
    ({"admin": {"error_rate": 0.7, "timeout_rate": 0.5}}, "sum to <= 1"),
    ({"admin": {"error_rate": "lots"}}, "admin.error_rate"),
    ({"admin": {"eror_rate": 0.1}}, "unknown admin fault field(s): eror_rate"),
    ({"admin": {"error_rate": 0.1}, "method": "PUT"}, "alone"),
    ({"method": "PUT", "path": "/v1/traffic", "status": 200}, "fault.status"),
    ({"method": "PUT", "path": "/v1/traffic", "delay_ms": -1}, "fault.delay_ms"),
    ({"method": "PUT"}, "faults need method"),
])
def test_bad_fault_configurations_are_refused(stack: Stack, doc: dict, needle: str) -> None:
    r = httpx.post(f"{stack.endpoint_url}/v1/faults", json=doc)
    assert r.status_code == 400 and needle in r.json()["error"], r.text
    assert httpx.get(f"{stack.endpoint_url}/v1/faults").json()["admin"] is None


def test_a_restarted_endpoint_serves_what_it_served(stack: Stack, models: dict[str, str]) -> None:
    ep = LocalEndpoint(url=stack.endpoint_url)
    v1 = ep.deploy(models["v1"], "churn:v1")
    v2 = ep.deploy(models["v2"], "churn:v2")
    ep.set_traffic({v1: 90, v2: 10})
    stack.services["endpoint"].kill()
    with pytest.raises(TransientEndpointError, match="unreachable"):
        ep.traffic()
    stack.start_endpoint()
    assert ep.traffic() == {v1: 90, v2: 10}
    assert {m.display_name for m in ep.deployed()} == {"churn:v1", "churn:v2"}
    assert httpx.post(f"{stack.endpoint_url}/v1/predict", json={"instances": sample_rows(1)}).status_code == 200


def test_check_split() -> None:
    assert check_split({"a": 90, "b": 10}, {"a", "b"}) == {"a": 90, "b": 10}
    for bad, needle in (({"a": 90}, "sum to 100"), ({"a": 100.0}, "integer percent"), ({"a": 101, "b": -1}, "0..100"),
                        ({"a": True}, "integer percent")):
        with pytest.raises(EndpointError, match=needle):
            check_split(bad)


def test_prediction_faults_answer_200_with_wrong_predictions_and_stats_carry_them(stack: Stack,
                                                                                   models: dict[str, str]) -> None:
    ep = LocalEndpoint(url=stack.endpoint_url)
    good = ep.deploy(models["v1"], "churn:v1")
    rows = sample_rows(40)
    since = datetime.now(timezone.utc)
    honest = httpx.post(f"{stack.endpoint_url}/v1/predict", json={"instances": rows}).json()
    const = ep.deploy(models["v1"], "churn:const", fault={"predict_class": "1"})
    shifted = ep.deploy(models["v1"], "churn:shifted", fault={"logit_shift": 2.0})
    answers = {}
    for deployed_id in (const, shifted):
        ep.set_traffic({deployed_id: 100})
        r = httpx.post(f"{stack.endpoint_url}/v1/predict", json={"instances": rows})
        assert r.status_code == 200
        answers[deployed_id] = r.json()
    assert set(answers[const]["predictions"]) == {1} and set(answers[const]["probabilities"]) == {1.0}
    assert all(b >= a for a, b in zip(honest["probabilities"], answers[shifted]["probabilities"]))
    assert sum(answers[shifted]["predictions"]) > sum(honest["predictions"])
    s = ep.stats(good, since)
    assert s.requests == 1 and len(s.scores) == 40 and s.classes == tuple(str(c) for c in honest["predictions"])
    ep.set_traffic({good: 100})


@pytest.mark.parametrize(("fault", "needle"), [({"predict_class": True}, "predict_class must be a class label"),
                                               ({"logit_shift": "up"}, "logit_shift must be a finite number"),
                                               ({"flip": 1}, "fault must be an object with")])
def test_bad_prediction_faults_are_refused(stack: Stack, models: dict[str, str], fault: dict, needle: str) -> None:
    r = httpx.post(f"{stack.endpoint_url}/v1/deployed-models",
                   json={"model_uri": models["v1"], "display_name": "x", "fault": fault})
    assert r.status_code == 422 and needle in r.json()["error"]

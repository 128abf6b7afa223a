"""VertexAIEndpoint against a local Vertex AI + Cloud Monitoring server, through the real SDKs over HTTP.

The real `GcpCredentials` (a service-account key made for the test), google-auth and
google-cloud-aiplatform's v1 clients (REST transport) talk to `FakeVertexEndpoints`; Cloud
Monitoring is read over REST with google-auth's AuthorizedSession. No Prefect server is involved.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from prefect_gcp.credentials import GcpCredentials
from pydantic import ValidationError

from blocks.endpoint import ArmStats, EndpointError, TransientEndpointError
from blocks.vertex_endpoint import VertexAIEndpoint
from tests.fakes.gcp_api import PROJECT_NUMBER
from tests.fakes.gcp_keys import PROJECT, assert_no_secrets, everything_printed
from tests.fakes.gcp_keys import assert_import_check_passed, import_check_fixture
from tests.fakes.gcp_keys import rsa_key, sa_info  # noqa: F401 - fixtures
from tests.fakes.vertex_endpoint_api import FakeVertexEndpoints, distribution

LOCATION = "us-central1"
ENDPOINT_ID = "4242"
ENDPOINT_PATH = f"/v1/projects/{PROJECT}/locations/{LOCATION}/endpoints/{ENDPOINT_ID}"
T0 = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def fake() -> Iterator[FakeVertexEndpoints]:
    with FakeVertexEndpoints() as server:
        yield server


@pytest.fixture
def models(fake: FakeVertexEndpoints) -> dict[str, str]:
    """Two versions of the churn model in the Model Registry (v1 is serving, v2 is the candidate)."""
    return {
        "v1": fake.add_model(PROJECT, LOCATION, "churn", version="1"),
        "v2": fake.add_model(PROJECT, LOCATION, "churn", version="2"),
    }


@pytest.fixture
def stable(fake: FakeVertexEndpoints, models: dict[str, str]) -> str:
    """The endpoint as production has it: churn:v1 deployed, taking all the traffic."""
    fake.add_endpoint(PROJECT, LOCATION, ENDPOINT_ID)
    return fake.seed_deployed(ENDPOINT_ID, "churn:v1", models["v1"], traffic=100)


def make_endpoint(fake: FakeVertexEndpoints, sa_info: dict[str, str], **fields: Any) -> VertexAIEndpoint:
    config: dict[str, Any] = {
        "gcp_credentials": GcpCredentials(service_account_info=sa_info),
        "endpoint": ENDPOINT_ID,
        "api_endpoint": fake.url,
        "monitoring_endpoint": fake.url,
        "request_timeout_seconds": 10,
        "deploy_timeout_seconds": 20,
    }
    config.update(fields)
    return VertexAIEndpoint(**config)


# -- deploying --------------------------------------------------------------------------------------


def test_deploy_adds_the_new_model_at_0_percent_and_leaves_the_split_unchanged(fake, sa_info, models, stable):
    from google.cloud.aiplatform_v1.types import AcceleratorType

    endpoint = make_endpoint(
        fake, sa_info, machine_type="n1-highmem-4", accelerator_type="NVIDIA_TESLA_T4", accelerator_count=1,
        min_replica_count=1, max_replica_count=3, service_account=f"serving@{PROJECT}.iam.gserviceaccount.com",
    )

    canary = endpoint.deploy(models["v2"], "churn:v2")

    # the model is looked up first (its version pins what gets deployed), then deployed in one call
    (model_get,) = fake.calls("GET", "/models/")
    assert model_get.path == f"/v1/{models['v2']}"
    (deploy,) = fake.calls("POST", ":deployModel$")
    assert deploy.path == f"{ENDPOINT_PATH}:deployModel", "project defaults to the key's"
    assert deploy.body["trafficSplit"] == {stable: 100, "0": 0}, "the live split, plus 0% for the new model"
    sent = deploy.body["deployedModel"]
    model_id = models["v2"].rsplit("/", 1)[1]
    assert sent["model"] == f"projects/{PROJECT_NUMBER}/locations/{LOCATION}/models/{model_id}@2"
    assert sent["displayName"] == "churn:v2"
    assert sent["serviceAccount"] == f"serving@{PROJECT}.iam.gserviceaccount.com"
    machine = sent["dedicatedResources"]["machineSpec"]
    assert machine["machineType"] == "n1-highmem-4"
    assert AcceleratorType(machine["acceleratorType"]).name == "NVIDIA_TESLA_T4", "enums travel as numbers"
    assert machine["acceleratorCount"] == 1
    assert (sent["dedicatedResources"]["minReplicaCount"], sent["dedicatedResources"]["maxReplicaCount"]) == (1, 3)

    # the id is the one Vertex AI gave the new deployed model; it serves nothing yet
    (new,) = [m for m in fake.endpoint(ENDPOINT_ID)["deployedModels"] if m["displayName"] == "churn:v2"]
    assert canary == new["id"]
    assert endpoint.traffic() == {stable: 100, canary: 0}, "production traffic must not move on deploy"
    assert [(m.id, m.display_name) for m in endpoint.deployed()] == [(stable, "churn:v1"), (canary, "churn:v2")]
    assert endpoint.deployed()[1].model_uri.endswith(f"/models/{model_id}@2")
    assert {r.auth for r in fake.calls(pattern="^/v1/")} == {"jwt"}, "every call signed with the service account"


def test_deploy_is_idempotent_by_display_name(fake, sa_info, models, stable):
    endpoint = make_endpoint(fake, sa_info)

    first = endpoint.deploy(models["v2"], "churn:v2")
    again = endpoint.deploy(models["v2"], "churn:v2")  # e.g. a canary run resumed after a crash

    assert again == first
    assert len(fake.calls("POST", ":deployModel$")) == 1, "a deployed display name is never deployed twice"
    assert len(fake.calls("GET", "/models/")) == 1
    assert endpoint.deploy(models["v1"], "churn:v1") == stable, "the serving model is found the same way"
    with pytest.raises(EndpointError, match="'churn:v2' is already deployed .* not from .*: use another display"):
        endpoint.deploy(models["v1"], "churn:v2")  # the name is taken by another model
    assert len(fake.calls("POST", ":deployModel$")) == 1


def test_a_model_with_automatic_resources_is_deployed_without_a_machine_spec(fake, sa_info, stable):
    automl = fake.add_model(PROJECT, LOCATION, "churn-automl", resource_types=("AUTOMATIC_RESOURCES",))
    endpoint = make_endpoint(fake, sa_info, min_replica_count=2, max_replica_count=4)

    endpoint.deploy(automl, "churn:automl")

    (deploy,) = fake.calls("POST", ":deployModel$")
    assert deploy.body["deployedModel"]["automaticResources"] == {"minReplicaCount": 2, "maxReplicaCount": 4}
    assert "dedicatedResources" not in deploy.body["deployedModel"]


def test_first_deploy_to_an_endpoint_without_traffic_waits_for_the_operation(fake, sa_info, models):
    fake.add_endpoint(PROJECT, LOCATION, ENDPOINT_ID)
    fake.script_deploy(polls=1)  # the operation is still running when deployModel answers
    endpoint = make_endpoint(fake, sa_info)

    first = endpoint.deploy(f"{models['v1']}@1", "churn:v1")

    (deploy,) = fake.calls("POST", ":deployModel$")
    assert "trafficSplit" not in deploy.body, "no split to keep: the endpoint's (empty) split is left alone"
    (poll,) = fake.calls("GET", "/operations/")
    # google-cloud-aiplatform 2.7.0's REST operations client polls the /ui/ binding, not /v1/
    assert poll.path.startswith(f"/ui/projects/{PROJECT_NUMBER}/locations/{LOCATION}/endpoints/{ENDPOINT_ID}"
                                "/operations/")
    assert fake.calls("GET", "/models/")[0].path == f"/v1/{models['v1']}@1"
    assert endpoint.traffic() == {}, "deployed at 0%: the caller decides when it serves"

    endpoint.set_traffic({first: 100})
    assert endpoint.traffic() == {first: 100}


def test_a_failed_or_slow_deploy_operation_raises_without_a_second_deploy(fake, sa_info, models, stable):
    endpoint = make_endpoint(fake, sa_info, deploy_timeout_seconds=0.3)
    fake.script_deploy(error=(3, "Machine type n1-standard-4 is not supported for this model."))

    with pytest.raises(EndpointError, match="not supported for this model") as failed:
        endpoint.deploy(models["v2"], "churn:v2")
    assert not isinstance(failed.value, TransientEndpointError)

    fake.script_deploy(polls=1000)  # never finishes within the timeout
    with pytest.raises(EndpointError, match=r"not finished after 0.3 s \(operation projects/.*/operations/\d+\); "
                                            "it may still complete") as slow:
        endpoint.deploy(models["v2"], "churn:v2")
    assert not isinstance(slow.value, TransientEndpointError), "retrying now could deploy the model twice"
    assert endpoint.traffic() == {stable: 100}


# -- shifting traffic -------------------------------------------------------------------------------


def test_a_canary_sequence_sends_exactly_each_split(fake, sa_info, models, stable):
    endpoint = make_endpoint(fake, sa_info, endpoint=f"projects/{PROJECT}/locations/{LOCATION}/endpoints/{ENDPOINT_ID}")
    canary = endpoint.deploy(models["v2"], "churn:v2")
    steps = [{stable: 90, canary: 10}, {stable: 70, canary: 30}, {stable: 50, canary: 50}, {stable: 0, canary: 100}]

    for step in steps:
        endpoint.set_traffic(step)
        # each tick: exactly this split went out, and the endpoint now routes by it
        update = fake.calls("PATCH")[-1]
        assert update.path == ENDPOINT_PATH
        assert update.query["updateMask"] == "trafficSplit"
        assert update.body == {"trafficSplit": step}, "only the split is sent, as given"
        assert endpoint.traffic() == step

    assert fake.traffic_updates() == steps, "one update per step, nothing else"


@pytest.mark.parametrize(
    ("split", "message", "reads"),
    [
        ({"A": 90, "B": 20}, "must sum to 100, got 110", 0),
        ({"A": 50.5, "B": 49.5}, "must be an integer percent", 0),
        ({"STABLE": 90, "7": 10}, "not deployed: 7", 1),
    ],
)
def test_a_bad_split_is_refused_before_it_is_sent(fake, sa_info, stable, split, message, reads):
    endpoint = make_endpoint(fake, sa_info)
    split = {stable if key == "STABLE" else key: value for key, value in split.items()}

    with pytest.raises(EndpointError, match=message):
        endpoint.set_traffic(split)

    assert not fake.calls("PATCH"), "nothing may reach the endpoint's routing"
    assert len(fake.calls(pattern="^/v1/")) == reads, "a malformed split needs no request at all"
    assert fake.endpoint(ENDPOINT_ID)["trafficSplit"] == {stable: 100}


# -- undeploying ------------------------------------------------------------------------------------


def test_undeploy_refuses_a_model_with_traffic_and_then_sends_an_explicit_split(fake, sa_info, models, stable):
    endpoint = make_endpoint(fake, sa_info)
    canary = endpoint.deploy(models["v2"], "churn:v2")
    endpoint.set_traffic({stable: 50, canary: 50})

    with pytest.raises(EndpointError, match=f"{canary} still receives 50% .*set_traffic first"):
        endpoint.undeploy(canary)
    assert not fake.calls("POST", ":undeployModel$"), "traffic first, then cleanup"

    endpoint.set_traffic({stable: 100, canary: 0})  # rollback: traffic back to stable
    endpoint.undeploy(canary)

    (undeploy,) = fake.calls("POST", ":undeployModel$")
    assert undeploy.path == f"{ENDPOINT_PATH}:undeployModel"
    assert undeploy.body == {"deployedModelId": canary, "trafficSplit": {stable: 100}}
    assert [m.id for m in endpoint.deployed()] == [stable], "the canary is gone"
    assert endpoint.traffic() == {stable: 100}


def test_undeploying_a_0_percent_model_never_moves_the_others_traffic(fake, sa_info, models, stable):
    """google-cloud-aiplatform's own `Endpoint.undeploy` (no split) and `deploy(traffic_percentage=0)`
    rescale the remaining split with float arithmetic: 71/29 comes out as 72/28. The explicit split
    keeps it exact."""
    endpoint = make_endpoint(fake, sa_info)
    shadow = endpoint.deploy(models["v1"], "churn:v1-shadow")
    canary = endpoint.deploy(models["v2"], "churn:v2")
    assert fake.calls("POST", ":deployModel$")[-1].body["trafficSplit"] == {stable: 100, shadow: 0, "0": 0}
    endpoint.set_traffic({stable: 71, shadow: 29, canary: 0})

    endpoint.undeploy(canary)

    assert fake.calls("POST", ":undeployModel$")[-1].body["trafficSplit"] == {stable: 71, shadow: 29}
    assert endpoint.traffic() == {stable: 71, shadow: 29}


def test_undeploying_twice_is_a_no_op(fake, sa_info, models, stable):
    endpoint = make_endpoint(fake, sa_info)
    canary = endpoint.deploy(models["v2"], "churn:v2")

    endpoint.undeploy(canary)
    endpoint.undeploy(canary)  # a retried cleanup
    endpoint.undeploy("123")  # never deployed here

    assert len(fake.calls("POST", ":undeployModel$")) == 1
    assert endpoint.traffic() == {stable: 100}


# -- serving metrics --------------------------------------------------------------------------------


def test_stats_reads_the_deployed_models_series_in_the_window(fake, sa_info, models, stable):
    fake.page_size = 1  # one series per page: the block must follow nextPageToken
    endpoint = make_endpoint(fake, sa_info)
    canary = endpoint.deploy(models["v2"], "churn:v2")
    since, until = T0, T0 + timedelta(minutes=10)
    inside, before, after = T0 + timedelta(minutes=4), T0 - timedelta(minutes=1), T0 + timedelta(minutes=11)
    # the canary's points: two series of counts (e.g. two replicas), some outside the window
    fake.add_series("prediction_count", ENDPOINT_ID, canary, [(inside, 100), (before, 1000), (after, 1000)],
                    labels={"replica_id": "a"})
    fake.add_series("prediction_count", ENDPOINT_ID, canary, [(inside + timedelta(minutes=1), 50)],
                    labels={"replica_id": "b"})
    fake.add_series("error_count", ENDPOINT_ID, canary, [(inside, 3), (before, 500)])
    fake.add_series("prediction_latencies", ENDPOINT_ID, canary,
                    [(inside, distribution([0, 2, 1, 0, 1], bounds=[10, 20, 40, 80]))])
    # the stable model's (and another endpoint's) points must not be counted
    fake.add_series("prediction_count", ENDPOINT_ID, stable, [(inside, 900)])
    fake.add_series("error_count", ENDPOINT_ID, stable, [(inside, 90)])
    fake.add_series("prediction_count", "9999", canary, [(inside, 7)])

    stats = endpoint.stats(canary, since, until)

    assert stats == ArmStats(requests=150, errors=3, latencies_ms=(15.0, 15.0, 30.0, 80.0))
    assert stats.error_rate == pytest.approx(0.02)
    lists = fake.calls("GET", "/timeSeries$")
    assert {r.path for r in lists} == {f"/v3/projects/{PROJECT}/timeSeries"}
    assert [r.query.get("pageToken") for r in lists[:2]] == [None, "1"], "followed the second page"
    metrics = [r.query["filter"] for r in lists if "pageToken" not in r.query]
    assert metrics == [
        f'metric.type = "aiplatform.googleapis.com/prediction/online/{metric}" AND resource.labels.endpoint_id = '
        f'"{ENDPOINT_ID}" AND metric.labels.deployed_model_id = "{canary}"'
        for metric in ("prediction_count", "error_count", "prediction_latencies")
    ]
    assert {(r.query["interval.startTime"], r.query["interval.endTime"]) for r in lists} == {
        ("2026-03-02T12:00:00.000000Z", "2026-03-02T12:10:00.000000Z")}
    assert {r.auth for r in lists} == {"token"}, "an access token from the key, via the token endpoint"
    assert endpoint.stats(stable, since, until).requests == 900


def test_stats_turns_latency_distributions_into_bounded_samples(fake, sa_info, stable):
    endpoint = make_endpoint(fake, sa_info)
    inside = T0 + timedelta(minutes=1)
    # per-stage latency series: only "total" describes what callers waited; this one is in seconds
    fake.add_series("prediction_latencies", ENDPOINT_ID, stable,
                    [(inside, distribution([0, 9000, 1000], exponential=(3, 2.0, 0.01)))],
                    labels={"latency_type": "total"}, unit="s")
    fake.add_series("prediction_latencies", ENDPOINT_ID, stable,
                    [(inside, distribution([0, 10_000], linear=(5, 5.0, 0.0)))], labels={"latency_type": "model"})
    fake.add_series("prediction_count", ENDPOINT_ID, stable, [(inside, 10_000)])

    stats = endpoint.stats(stable, T0, T0 + timedelta(minutes=5))

    # buckets [10, 20) ms and [20, 40) ms: midpoints 15 and 30, scaled from 10,000 to 5,000 samples
    assert stats.requests == 10_000
    assert len(stats.latencies_ms) == 5000, "capped: a few thousand samples are enough for a test statistic"
    assert stats.latencies_ms.count(pytest.approx(15.0)) == 4500
    assert stats.latencies_ms.count(pytest.approx(30.0)) == 500


def test_stats_without_data_is_empty_and_bad_arguments_are_refused(fake, sa_info, stable):
    endpoint = make_endpoint(fake, sa_info)

    assert endpoint.stats(stable, T0, T0 + timedelta(minutes=5)) == ArmStats(), "no data is no data, not a pass"
    calls = len(fake.requests)
    with pytest.raises(EndpointError, match="window is empty"):
        endpoint.stats(stable, T0, T0 - timedelta(minutes=5))
    with pytest.raises(EndpointError, match="not a deployed model id"):
        endpoint.stats('1" OR metric.type = "x', T0, T0 + timedelta(minutes=5))  # no filter injection
    assert len(fake.requests) == calls


# -- transient and permanent errors -----------------------------------------------------------------


def test_a_503_on_update_is_transient_and_sent_once(fake, sa_info, models, stable):
    endpoint = make_endpoint(fake, sa_info)
    canary = endpoint.deploy(models["v2"], "churn:v2")
    fake.fail_next("PATCH", f"{ENDPOINT_PATH}$", 503)

    with pytest.raises(TransientEndpointError, match="503") as caught:
        endpoint.set_traffic({stable: 90, canary: 10})

    assert "ServiceUnavailable" in str(caught.value)
    assert len(fake.calls("PATCH")) == 1, "no hidden retries: the caller's retry policy decides"
    assert endpoint.traffic() == {stable: 100, canary: 0}
    endpoint.set_traffic({stable: 90, canary: 10})  # what the retry does
    assert endpoint.traffic() == {stable: 90, canary: 10}


@pytest.mark.parametrize(
    ("method", "pattern", "fault"),
    [
        ("GET", f"{ENDPOINT_PATH}$", {"reset": True}),
        ("GET", f"{ENDPOINT_PATH}$", {"status": 500}),
        ("GET", "/timeSeries$", {"status": 503}),
        ("GET", "/timeSeries$", {"status": 429}),
        ("GET", "/timeSeries$", {"reset": True}),
    ],
)
def test_unavailable_reads_are_transient(fake, sa_info, stable, method, pattern, fault):
    endpoint = make_endpoint(fake, sa_info)
    fake.fail_next(method, pattern, **fault)

    with pytest.raises(TransientEndpointError):
        endpoint.traffic() if "timeSeries" not in pattern else endpoint.stats(stable, T0, T0 + timedelta(minutes=1))


def test_a_closed_port_is_transient(sa_info):
    with FakeVertexEndpoints() as gone:
        url = gone.url  # nothing listens there any more

    endpoint = VertexAIEndpoint(gcp_credentials=GcpCredentials(service_account_info=sa_info), endpoint=ENDPOINT_ID,
                                api_endpoint=url, request_timeout_seconds=5)
    with pytest.raises(TransientEndpointError, match="retrying may help"):
        endpoint.traffic()


def test_an_unknown_endpoint_names_the_endpoint_setting(fake, sa_info, stable):
    endpoint = make_endpoint(fake, sa_info, endpoint="777")

    with pytest.raises(EndpointError, match=r"404 .*check the `endpoint` setting \('777'\), `project` "
                                            r"\('modelops-test'\) and `location` \('us-central1'\)") as caught:
        endpoint.traffic()

    assert not isinstance(caught.value, TransientEndpointError)


def test_another_project_names_the_credentials_and_project(fake, sa_info, stable):
    endpoint = make_endpoint(fake, sa_info, project="someone-else")

    with pytest.raises(EndpointError, match=r"403 .*credentials were refused: check `gcp_credentials`.*`project` "
                                            r"\('someone-else'\)") as caught:
        endpoint.traffic()
    assert not isinstance(caught.value, TransientEndpointError)

    with pytest.raises(EndpointError, match=r"403 .*`project` \('someone-else'\)"):
        endpoint.stats(stable, T0, T0 + timedelta(minutes=1))


def test_an_unknown_model_names_model_uri(fake, sa_info, stable):
    endpoint = make_endpoint(fake, sa_info)

    with pytest.raises(EndpointError, match=r"404 .*check model_uri"):
        endpoint.deploy(f"projects/{PROJECT}/locations/{LOCATION}/models/31337", "churn:v9")

    assert not fake.calls("POST", ":deployModel$")


def test_errors_never_show_the_key_or_a_token(fake, sa_info, stable):
    endpoint = make_endpoint(fake, sa_info)
    endpoint.stats(stable, T0, T0 + timedelta(minutes=1))  # a token is issued and used
    assert fake.tokens
    fake.fail_next("GET", "/timeSeries$", 403)
    with pytest.raises(EndpointError) as refused:
        endpoint.stats(stable, T0, T0 + timedelta(minutes=1))

    with FakeVertexEndpoints() as elsewhere:
        stranger = elsewhere.new_service_account(PROJECT)  # a key this server has never seen
    stranger["token_uri"] = f"{fake.url}/token"
    untrusted = make_endpoint(fake, stranger)
    with pytest.raises(EndpointError, match="401 .*credentials were refused") as unauthenticated:
        untrusted.traffic()
    with pytest.raises(EndpointError, match="credentials were refused") as no_token:
        untrusted.stats(stable, T0, T0 + timedelta(minutes=1))  # the token exchange itself is refused

    for error in (refused.value, unauthenticated.value, no_token.value):
        assert not isinstance(error, TransientEndpointError)
        printed = everything_printed(error) + repr(endpoint) + repr(untrusted)
        assert_no_secrets(printed, sa_info, fake)
        assert_no_secrets(printed, stranger, fake)


# -- refused before any request ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("MODEL", "churn:v2"), {"fault": {"error_rate": 0.5}}, "fault injection is not supported"),
        (("gs://acme-ml/churn/model/", "churn:v2"), {}, "must be a Vertex AI model resource name"),
        ((f"projects/{PROJECT}/locations/europe-west4/models/1", "churn:v2"), {}, "in location 'europe-west4'"),
        (("MODEL", " "), {}, "display_name must be 1..128 characters"),
    ],
)
def test_deploy_arguments_are_checked_before_any_request(fake, sa_info, models, args, kwargs, message):
    endpoint = make_endpoint(fake, sa_info)
    args = tuple(models["v2"] if a == "MODEL" else a for a in args)

    with pytest.raises(EndpointError, match=message):
        endpoint.deploy(*args, **kwargs)

    assert fake.requests == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"endpoint": "projects/p/locations/europe-west4/endpoints/1"}, "in location 'europe-west4' but location"),
        ({"endpoint": "endpoints/1"}, "endpoint must be an endpoint ID"),
        ({"accelerator_count": 1}, "accelerator_count is 1 but accelerator_type is empty"),
        ({"accelerator_type": "NVIDIA_TESLA_T4"}, "accelerator_count is 0"),
        ({"min_replica_count": 3, "max_replica_count": 2}, "min_replica_count .3. is larger than max_replica_count"),
        ({"api_endpoint": "http://127.0.0.1:1/v1"}, "without a path"),
        ({"monitoring_endpoint": "ftp://monitoring"}, "monitoring_endpoint must be"),
        ({"request_timeout_seconds": 0}, "greater than 0"),
    ],
)
def test_bad_configuration_is_refused_when_the_block_is_built(fake, sa_info, fields, message):
    with pytest.raises(ValidationError, match=message):
        make_endpoint(fake, sa_info, **fields)
    assert fake.requests == []


def test_an_unknown_accelerator_is_refused_before_any_request(fake, sa_info, models):
    endpoint = make_endpoint(fake, sa_info, accelerator_type="NVIDIA_TESLA_T5", accelerator_count=1)

    with pytest.raises(EndpointError, match="'NVIDIA_TESLA_T5' is not a Vertex AI accelerator type"):
        endpoint.deploy(models["v2"], "churn:v2")
    assert fake.requests == []


# -- import cost ------------------------------------------------------------------------------------

# As in test_vertex_trainer (see tests/fakes/gcp_keys.py), and google.cloud.monitoring is not loaded either.
import_check = import_check_fixture("blocks.vertex_endpoint", "VertexAIEndpoint", "vertex-ai-endpoint",
                                    also_absent=("google.cloud.monitoring",))


def test_importing_the_block_module_does_not_import_aiplatform(import_check):
    assert_import_check_passed(import_check)

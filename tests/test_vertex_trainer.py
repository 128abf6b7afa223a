"""VertexAITrainer against a local Google Cloud server, through the real SDKs over real HTTP.

The real `GcpCredentials` (a service-account key made for the test), the real google-auth,
google-cloud-aiplatform (REST transport) and google-cloud-storage talk to `FakeGcp`. No Prefect
server is involved: building the blocks and training must not need the Prefect API.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from prefect_gcp.credentials import GcpCredentials
from pydantic import ValidationError

from blocks.training import TrainingError
from blocks.vertex import VertexAITrainer, VertexConfigError
from tests.fakes.gcp_api import FakeGcp
from tests.fakes.gcp_keys import PROJECT, assert_no_secrets, everything_printed
from tests.fakes.gcp_keys import assert_import_check_passed, import_check_fixture
from tests.fakes.gcp_keys import rsa_key, sa_info  # noqa: F401 - fixtures

BUCKET = "gs://acme-ml"
IMAGE = "us-docker.pkg.dev/acme/trainers/churn:1.4.0"
DATASET = "gs://acme-data/churn/2025-06-01.parquet"
PARAMS = {"max_depth": 6, "learning_rate": 0.1}
JOB_GET = r"/customJobs/\d+$"


@pytest.fixture
def fake() -> Iterator[FakeGcp]:
    with FakeGcp() as server:
        yield server


def make_trainer(fake: FakeGcp, sa_info: dict[str, str], **fields: Any) -> VertexAITrainer:
    config: dict[str, Any] = {
        "gcp_credentials": GcpCredentials(service_account_info=sa_info),
        "staging_bucket": BUCKET,
        "container_image_uri": IMAGE,
        "api_endpoint": fake.url,
        "storage_endpoint": fake.url,
        "poll_interval_seconds": 0.05,
        "timeout_seconds": 30,
    }
    config.update(fields)
    return VertexAITrainer(**config)


class Log(list):
    """Collects the trainer's log lines."""

    def __call__(self, line: str) -> None:
        self.append(line)


def the_job_sent(fake: FakeGcp) -> dict[str, Any]:
    (job,) = fake.created_jobs()
    return job


# -- a successful run -------------------------------------------------------------------------------


def test_submits_the_job_spec_polls_and_returns_model_and_metrics(fake, sa_info):
    from google.cloud.aiplatform_v1.types import AcceleratorType

    fake.script_job("succeed", polls=2, metrics={"accuracy": 0.91, "f1": 0.88, "rows": 1200, "label": "churn"})
    trainer = make_trainer(
        fake, sa_info,
        machine_type="n1-highmem-8", accelerator_type="NVIDIA_TESLA_T4", accelerator_count=2, replica_count=1,
        service_account=f"trainer@{PROJECT}.iam.gserviceaccount.com", labels={"team": "ml", "model": "churn"},
        display_name_prefix="churn-retrain",
    )
    log = Log()

    result = trainer.train(DATASET, PARAMS, target="churned", log=log)

    # the create request: one worker pool running our image with dataset/target/params as args
    (create,) = fake.calls("POST", r"/customJobs$")
    assert create.path == f"/v1/projects/{PROJECT}/locations/us-central1/customJobs", "project defaults to the key's"
    assert create.query == {"$alt": "json;enum-encoding=int"}
    job = create.body
    assert job["displayName"].startswith("churn-retrain-")
    (pool,) = job["jobSpec"]["workerPoolSpecs"]
    machine = pool["machineSpec"]
    assert machine["machineType"] == "n1-highmem-8"
    assert AcceleratorType(machine["acceleratorType"]).name == "NVIDIA_TESLA_T4", "enums travel as numbers"
    assert machine["acceleratorCount"] == 2
    assert pool["replicaCount"] == "1", "int64 travels as a JSON string"
    assert pool["containerSpec"]["imageUri"] == IMAGE
    args = pool["containerSpec"]["args"]
    assert args[:4] == ["--dataset", DATASET, "--target", "churned"]
    assert args[4] == "--params" and json.loads(args[5]) == PARAMS
    assert args[5] == json.dumps(PARAMS, sort_keys=True)
    assert "pythonPackageSpec" not in pool
    assert job["jobSpec"]["serviceAccount"] == f"trainer@{PROJECT}.iam.gserviceaccount.com"
    base = job["jobSpec"]["baseOutputDirectory"]["outputUriPrefix"]
    assert base == f"{BUCKET}/modelops/{job['displayName']}", "one fresh output directory per run"
    assert job["labels"] == {"team": "ml", "model": "churn"}
    assert job["jobSpec"]["scheduling"]["timeout"] == "30s", "Vertex AI enforces the timeout too"

    # the result points at the model the job wrote and carries its metrics
    name = next(iter(fake.jobs))
    assert result.job == name
    assert result.trainer == "vertex-ai"
    assert result.model_uri == f"{base}/model/"
    assert result.metrics == {"accuracy": 0.91, "f1": 0.88, "rows": 1200.0}
    assert result.details["display_name"] == job["displayName"]
    assert result.details["state"] == "JOB_STATE_SUCCEEDED"
    assert result.details["base_output_dir"] == base
    assert result.details["console_url"].startswith("https://console.cloud.google.com/")

    # polled until SUCCEEDED, logging each state once; metrics read from the model dir
    assert len(fake.calls("GET", JOB_GET)) == 3
    assert [line for line in log if ": JOB_STATE_" in line] == [
        f"vertex job {name}: JOB_STATE_RUNNING",
        f"vertex job {name}: JOB_STATE_SUCCEEDED",
    ]
    metrics_object = re.escape(base[len(BUCKET) + 1:] + "/model/metrics.json")
    assert fake.calls("GET", f"^/download/storage/v1/b/acme-ml/o/{metrics_object}$")

    # every API call was authenticated with the service account: a self-signed JWT for Vertex AI
    # (GAPIC clients), an access token from the token endpoint for Cloud Storage
    assert {r.auth for r in fake.calls(pattern="^/v1/")} == {"jwt"}
    assert {r.auth for r in fake.calls(pattern="^/(download/)?storage/")} == {"token"}
    assert fake.tokens, "google-cloud-storage exchanged the key for an access token"
    assert not fake.calls(pattern="^/v1/.*:cancel$")


def test_python_package_form_in_another_project_and_region(fake, sa_info):
    fake.script_job("succeed", metrics={"rmse": 3.2})
    trainer = make_trainer(
        fake, sa_info,
        project="acme-training", location="europe-west4", container_image_uri="",
        python_package_gcs_uri="gs://acme-ml/packages/trainer-0.3.0.tar.gz", python_module="trainer.task",
        executor_image_uri="europe-docker.pkg.dev/vertex-ai/training/sklearn-cpu.1-6:latest",
    )

    result = trainer.train(DATASET, {}, target="spend")

    (create,) = fake.calls("POST", r"/customJobs$")
    assert create.path == "/v1/projects/acme-training/locations/europe-west4/customJobs"
    (pool,) = create.body["jobSpec"]["workerPoolSpecs"]
    assert "containerSpec" not in pool
    assert pool["pythonPackageSpec"] == {
        "executorImageUri": "europe-docker.pkg.dev/vertex-ai/training/sklearn-cpu.1-6:latest",
        "packageUris": ["gs://acme-ml/packages/trainer-0.3.0.tar.gz"],
        "pythonModule": "trainer.task",
        "args": ["--dataset", DATASET, "--target", "spend", "--params", "{}"],
    }
    assert pool["machineSpec"] == {"machineType": "n1-standard-4"}, "no accelerator unless configured"
    assert "serviceAccount" not in create.body["jobSpec"], "Vertex AI's default service account"
    assert result.metrics == {"rmse": 3.2}
    assert "/locations/europe-west4/" in result.job


def test_an_explicit_base_output_dir_is_used_as_is(fake, sa_info):
    fake.script_job("succeed", metrics={"accuracy": 0.8})
    trainer = make_trainer(fake, sa_info, base_output_dir="gs://acme-ml/churn/run-42/")

    result = trainer.train(DATASET, PARAMS, target="churned")

    assert the_job_sent(fake)["jobSpec"]["baseOutputDirectory"] == {"outputUriPrefix": "gs://acme-ml/churn/run-42"}
    assert result.model_uri == "gs://acme-ml/churn/run-42/model/"
    assert fake.object("gs://acme-ml/churn/run-42/model/metrics.json") is not None


# -- jobs that produce no model ---------------------------------------------------------------------


def test_a_failed_job_raises_with_the_jobs_error_message_and_never_the_credentials(fake, sa_info):
    fake.script_job("fail", polls=1, error="The replica workerpool0-0 exited with a non-zero status of 137 (OOM).")
    trainer = make_trainer(fake, sa_info)
    log = Log()

    with pytest.raises(TrainingError) as caught:
        trainer.train(DATASET, PARAMS, target="churned", log=log)

    name = next(iter(fake.jobs))
    error = caught.value
    assert "exited with a non-zero status of 137 (OOM)" in str(error)
    assert name in str(error)
    assert error.job == name and error.state == "JOB_STATE_FAILED"
    assert not fake.calls(pattern="storage/"), "a failed job has no metrics to read"
    assert_no_secrets(everything_printed(error) + "\n".join(log) + repr(trainer), sa_info, fake)


def test_a_job_cancelled_in_the_console_raises_cancelled(fake, sa_info):
    fake.script_job("cancel", polls=1)

    with pytest.raises(TrainingError, match="was cancelled") as caught:
        make_trainer(fake, sa_info).train(DATASET, PARAMS, target="churned")

    assert caught.value.state == "JOB_STATE_CANCELLED"
    assert not fake.calls(pattern=":cancel$"), "already cancelled: nothing to cancel"


def test_a_job_still_running_at_the_timeout_is_cancelled(fake, sa_info):
    fake.script_job("run")
    log = Log()

    with pytest.raises(TrainingError, match=r"timed out after 0.3 s \(last state JOB_STATE_RUNNING\); "
                                            r"cancellation requested") as caught:
        make_trainer(fake, sa_info, timeout_seconds=0.3).train(DATASET, PARAMS, target="churned", log=log)

    name = next(iter(fake.jobs))
    assert caught.value.job == name
    (cancel,) = fake.calls("POST", ":cancel$")
    assert cancel.path == f"/v1/{name}:cancel"
    assert fake.jobs[name]["state"] == "JOB_STATE_CANCELLING", "the cancel reached Vertex AI"
    assert len(fake.calls("GET", JOB_GET)) >= 3, "it kept polling until the timeout"
    assert f"vertex job {name}: cancellation requested" in log


def test_interrupting_the_wait_cancels_the_job(fake, sa_info):
    """A cancelled flow run must not leave an expensive training running unattended."""
    fake.script_job("run")

    def interrupt_when_running(line: str) -> None:
        if line.endswith("JOB_STATE_RUNNING"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        make_trainer(fake, sa_info).train(DATASET, PARAMS, target="churned", log=interrupt_when_running)

    assert len(fake.calls("POST", ":cancel$")) == 1


def test_a_job_that_wrote_no_metrics_raises_naming_the_path(fake, sa_info):
    fake.script_job("succeed", metrics=None)

    with pytest.raises(TrainingError, match="wrote no metrics") as caught:
        make_trainer(fake, sa_info).train(DATASET, PARAMS, target="churned")

    base = the_job_sent(fake)["jobSpec"]["baseOutputDirectory"]["outputUriPrefix"]
    assert f"{base}/model/metrics.json" in str(caught.value)
    assert caught.value.state == "JOB_STATE_SUCCEEDED"


def test_metrics_left_by_an_earlier_run_are_not_taken_for_this_runs(fake, sa_info):
    old = datetime.now(timezone.utc) - timedelta(days=3)
    fake.put_object("gs://acme-ml/churn/fixed/model/metrics.json", b'{"accuracy": 0.99}', updated=old)
    fake.script_job("succeed", metrics=None)  # this run wrote nothing

    with pytest.raises(TrainingError, match="from an earlier run"):
        make_trainer(fake, sa_info, base_output_dir="gs://acme-ml/churn/fixed").train(DATASET, {}, target="churned")


def test_metrics_that_are_not_a_json_object_of_numbers_raise(fake, sa_info):
    fake.script_job("succeed", metrics={"note": "no numbers here"})

    with pytest.raises(TrainingError, match="no numeric metric") as caught:
        make_trainer(fake, sa_info).train(DATASET, {}, target="churned")

    assert caught.value.job == next(iter(fake.jobs))


# -- configuration errors, before any request -------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"container_image_uri": ""}, "set container_image_uri, or all of python_package_gcs_uri"),
        ({"python_module": "trainer.task"}, "not both: python_module"),
        ({"container_image_uri": "", "python_package_gcs_uri": "gs://acme-ml/p.tar.gz", "python_module": "t.task"},
         "executor_image_uri is missing"),
        ({"accelerator_count": 1}, "accelerator_count is 1 but accelerator_type is empty"),
        ({"accelerator_type": "NVIDIA_TESLA_T4"}, "accelerator_count is 0"),
        ({"staging_bucket": "acme-ml"}, "staging_bucket must be a gs:// URI"),
        ({"labels": {"Team": "ML"}}, "not a valid Vertex AI label"),
        ({"api_endpoint": "http://127.0.0.1:1/v1"}, "without a path"),
    ],
)
def test_bad_configuration_is_refused_when_the_block_is_built(fake, sa_info, fields, message):
    with pytest.raises(ValidationError, match=message):
        make_trainer(fake, sa_info, **fields)
    assert fake.requests == []


def test_train_rechecks_the_configuration_before_any_request(fake, sa_info):
    trainer = make_trainer(fake, sa_info)
    trainer.container_image_uri = ""  # blocks are mutable; assignment is not validated
    trainer.accelerator_count = 2

    with pytest.raises(VertexConfigError, match="container_image_uri.*python_package_gcs_uri.*python_module"):
        trainer.train(DATASET, PARAMS, target="churned")

    trainer.container_image_uri = IMAGE
    with pytest.raises(VertexConfigError, match="accelerator_count is 2 but accelerator_type is empty"):
        trainer.train(DATASET, PARAMS, target="churned")

    trainer.accelerator_type, trainer.accelerator_count = "NVIDIA_TESLA_T5", 1
    with pytest.raises(VertexConfigError, match="'NVIDIA_TESLA_T5' is not a Vertex AI accelerator type"):
        trainer.train(DATASET, PARAMS, target="churned")

    assert fake.requests == [], "nothing may reach Vertex AI with a configuration it cannot run"


# -- transient and permanent API errors -------------------------------------------------------------


def test_transient_errors_while_polling_are_retried(fake, sa_info):
    fake.script_job("succeed", polls=2, metrics={"accuracy": 0.9})
    fake.fail_next("GET", JOB_GET, 503)
    fake.fail_next("GET", JOB_GET, reset=True)
    log = Log()

    result = make_trainer(fake, sa_info).train(DATASET, PARAMS, target="churned", log=log)

    assert result.metrics == {"accuracy": 0.9}
    assert len(fake.calls("GET", JOB_GET)) == 5, "two failed polls, then RUNNING, RUNNING, SUCCEEDED"
    retries = [line for line in log if "polling failed" in line]
    assert len(retries) == 2 and "503" in retries[0] and "ConnectionError" in retries[1]
    assert not fake.calls(pattern=":cancel$")


def test_polling_gives_up_after_repeated_failures_without_cancelling(fake, sa_info):
    fake.script_job("run")
    fake.fail_next("GET", JOB_GET, 503, times=10)

    with pytest.raises(TrainingError, match="failed 5 times in a row .*the job may still be running"):
        make_trainer(fake, sa_info, poll_interval_seconds=0.01).train(DATASET, PARAMS, target="churned")

    assert len(fake.calls("GET", JOB_GET)) == 5

    assert not fake.calls(pattern=":cancel$"), "losing sight of a job is not a reason to kill it"


def test_a_refused_create_is_reported_and_never_retried(fake, sa_info):
    fake.fail_next("POST", r"/customJobs$", 503)

    with pytest.raises(TrainingError, match="could not submit vertex job .*503"):
        make_trainer(fake, sa_info).train(DATASET, PARAMS, target="churned")

    assert len(fake.calls("POST", r"/customJobs$")) == 1, "a lost reply could mean the job exists: no blind retry"
    assert fake.jobs == {}


def test_credentials_the_server_does_not_trust_are_refused(fake, sa_info):
    with FakeGcp() as elsewhere:
        stranger = elsewhere.new_service_account(PROJECT)  # a key this server has never seen

    with pytest.raises(TrainingError, match="could not submit .*401") as caught:
        make_trainer(fake, stranger).train(DATASET, PARAMS, target="churned")

    assert fake.jobs == {}
    assert stranger["private_key"].splitlines()[1] not in everything_printed(caught.value)


# -- import cost ------------------------------------------------------------------------------------

# aiplatform is made unimportable (prefect_gcp imports it itself when it is installed), and the block
# module must still import without loading any of it on its own: see tests/fakes/gcp_keys.py.
import_check = import_check_fixture("blocks.vertex", "VertexAITrainer", "vertex-ai-trainer")


def test_importing_the_block_module_does_not_import_aiplatform(import_check):
    """blocks.vertex imports the cloud SDKs only inside `train` (checked in a fresh interpreter)."""
    assert_import_check_passed(import_check)

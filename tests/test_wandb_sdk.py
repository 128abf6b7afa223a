"""Every W&B path of the project through the real wandb SDK (0.31, wandb-core included), against the
local W&B API server of `tests.fakes.wandb_api` over real HTTP: the registry (register, find, list,
move aliases, download), the dataset loader, the automations installer, drift reports logged to a
run, and what happens when W&B refuses a key, is slow, rate-limits or fails.

The fake answers only what it was taught, validated against the SDK's own generated models, and
keeps what it refused in `errors`: every test here ends by checking that list is empty, so a call
our code makes wrongly (or a request shape the SDK changed) fails the test that made it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from pydantic import SecretStr

from blocks.registry import RegistryError, WandbRegistry
from blocks.wandb import WandbConfigError, WandbCredentials, WandbUnavailable
from tests.fakes.wandb_api import FakeWandb, sdk_operation_models
from training.tabular import make_dataset

ROOT = Path(__file__).resolve().parents[1]
ENTITY, PROJECT = "acme", "churn"
ORG = "acme-corp"  # the fake's organization: registries are `<org>/wandb-registry-<name>`


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeWandb]:
    with FakeWandb() as server:
        yield server


@pytest.fixture(autouse=True)
def _isolated(fake: FakeWandb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("MODELOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_ARTIFACT_DIR", str(tmp_path / "wandb-artifacts"))  # not ./artifacts in the repo
    for name in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_ENTITY", "WANDB_PROJECT", "MODELOPS_REGISTRY_BLOCK",
                 "MODELOPS_RECEIVER_URL"):
        monkeypatch.delenv(name, raising=False)
    before = len(fake.errors)
    yield
    refused = fake.errors[before:]
    assert not refused, "the W&B server refused requests (our code or the SDK asked for what W&B does not " \
                        f"serve that way):\n" + "\n".join(refused)


def credentials(fake: FakeWandb, **changes: Any) -> WandbCredentials:
    return WandbCredentials(api_key=SecretStr(fake.api_key), entity=ENTITY, project=PROJECT, base_url=fake.url,
                            **changes)


def wandb_env(fake: FakeWandb, key: str | None = None) -> dict[str, str]:
    return {**os.environ, "WANDB_API_KEY": key or fake.api_key, "WANDB_BASE_URL": fake.url, "WANDB_ENTITY": ENTITY,
            "WANDB_PROJECT": PROJECT, "WANDB_SILENT": "true"}


class Ran:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def cli(module: str, *args: str, env: dict[str, str]) -> Ran:
    """`python -m module args` with `env`, in this process (a subprocess costs seconds of imports); one
    test below runs the automations CLI as a real subprocess too."""
    import contextlib
    import importlib
    import io

    saved = dict(os.environ)
    out, err = io.StringIO(), io.StringIO()
    try:
        os.environ.clear()
        os.environ.update(env)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = importlib.import_module(module).main(list(args))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return Ran(code, out.getvalue(), err.getvalue())


def subprocess_cli(module: str, *args: str, env: dict[str, str]) -> Ran:
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    return Ran(proc.returncode, proc.stdout, proc.stderr)


def model_file(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / f"model-{uuid.uuid4().hex[:6]}.bin"
    path.write_bytes(content)
    return path


def log_dataset(fake: FakeWandb, name: str, files: dict[str, Path], kind: str = "dataset",
                aliases: tuple[str, ...] = ()) -> None:
    import wandb

    run = credentials(fake).init_run(job_type="upload-dataset")
    try:
        artifact = wandb.Artifact(name, type=kind)
        for inside, path in files.items():
            artifact.add_file(str(path), name=inside)
        run.log_artifact(artifact, aliases=list(aliases)).wait()
    finally:
        run.finish()


# --------------------------------------------------------------------------- the registry


def test_register_find_list_and_move_production_through_the_sdk(fake: FakeWandb, tmp_path: Path) -> None:
    registry = WandbRegistry(credentials=credentials(fake), org=ORG)
    collection = f"churn-{uuid.uuid4().hex[:6]}"
    meta = {"metrics": {"accuracy": 0.91, "f1": 0.88}, "dataset": "acme/churn/churn-data:v3", "hyperparameters": {"C": 1}}

    first = registry.register(collection, model_file(tmp_path, b"model v0"), metadata=meta)
    assert (first.version, first.aliases) == ("v0", ("candidate",))
    assert first.path == f"{ORG}/wandb-registry-model/{collection}:v0"
    assert first.metadata == meta, "metadata comes back from W&B as it was logged"
    # The model was logged by a run into the team's project, then linked into the org's registry.
    org_registry = (fake.org, "wandb-registry-model", collection)
    assert org_registry in fake.collections and fake.collections[org_registry].kind == "ArtifactPortfolio"
    assert fake.collections[(ENTITY, PROJECT, collection)].kind == "ArtifactSequence"

    second = registry.register(collection, model_file(tmp_path, b"model v1"), metadata={"metrics": {"accuracy": 0.93}})
    assert (second.version, second.aliases) == ("v1", ("candidate",))
    assert registry.get(collection, "v0").aliases == (), "candidate moved to v1: W&B keeps an alias on one version"

    assert [(v.version, v.aliases) for v in registry.versions(collection)] == [("v0", ()), ("v1", ("candidate",))]
    assert registry.get(collection, "candidate").version == "v1"
    assert registry.find(collection, "production") is None and registry.find(collection, "v9") is None
    with pytest.raises(RegistryError, match=rf"{collection}:v9"):
        registry.get(collection, "v9")

    assert registry.set_alias(collection, "v0", "production").aliases == ("production",)
    moved = registry.set_alias(collection, "candidate", "production")
    assert moved.version == "v1" and set(moved.aliases) == {"candidate", "production"}
    assert registry.set_alias(collection, "v1", "production").version == "v1", "giving it again changes nothing"
    assert fake.alias_holder(*org_registry, "production") == 1
    assert registry.get(collection, "v0").aliases == ()

    downloaded = Path(registry.download(registry.get(collection, "production")))
    assert downloaded.read_bytes() == b"model v1"
    assert downloaded.is_relative_to(Path(os.environ["MODELOPS_HOME"]))
    assert {"ArtifactMembershipByName", "LinkArtifact", "ArtifactByID", "ProjectArtifacts"} <= set(fake.validated), \
        "answers were checked against the SDK's generated models"


def test_a_missing_collection_lists_nothing(fake: FakeWandb) -> None:
    registry = WandbRegistry(credentials=credentials(fake), org=ORG)
    assert registry.versions(f"never-{uuid.uuid4().hex[:6]}") == []
    assert registry.find(f"never-{uuid.uuid4().hex[:6]}", "production") is None


def test_an_outage_is_not_a_missing_production_model(fake: FakeWandb, tmp_path: Path) -> None:
    """The gate asks `find(model, "production")`; W&B failing must not read as "no production yet"."""
    registry = WandbRegistry(credentials=credentials(fake, timeout=3), org=ORG)
    collection = f"churn-{uuid.uuid4().hex[:6]}"
    registry.register(collection, model_file(tmp_path, b"m"), aliases=["production"])

    fake.fail_next("ArtifactMembershipByName", 503, times=50)
    try:
        with pytest.raises(WandbUnavailable, match="did not answer") as err:
            registry.find(collection, "production")
        assert fake.url in str(err.value) and "timeout" in str(err.value)
    finally:
        fake.clear_faults()

    fake.slow_next("ArtifactMembershipByName", 6)
    with pytest.raises(WandbUnavailable):
        registry.find(collection, "production")


def test_rate_limits_and_server_errors_are_retried_by_the_sdk(fake: FakeWandb, tmp_path: Path) -> None:
    registry = WandbRegistry(credentials=credentials(fake), org=ORG)
    collection = f"churn-{uuid.uuid4().hex[:6]}"
    registry.register(collection, model_file(tmp_path, b"m"))
    for status, headers in ((429, {"Retry-After": "1"}), (500, {}), (502, {})):
        seen = fake.operations.count("ArtifactMembershipByName")
        fake.fail_next("ArtifactMembershipByName", status, headers=headers)
        assert registry.get(collection, "candidate").version == "v0", f"a single {status} is retried"
        assert fake.operations.count("ArtifactMembershipByName") == seen + 2, f"{status}: one failure, one retry"


def test_a_refused_key_is_a_configuration_error_that_never_shows_the_key(fake: FakeWandb) -> None:
    wrong = "w" * 40
    registry = WandbRegistry(credentials=credentials(fake).model_copy(update={"api_key": SecretStr(wrong)}), org=ORG)
    with pytest.raises(WandbConfigError) as err:
        registry.find("churn-model", "production")
    message = str(err.value)
    assert "refused the API key" in message and fake.url in message and "WANDB_API_KEY" in message
    assert wrong not in message and fake.api_key not in message


def test_registry_cli_with_a_saved_wandb_registry_block(fake: FakeWandb, tmp_path: Path, prefect_api: str) -> None:
    block = f"wandb-reg-{uuid.uuid4().hex[:6]}"
    registry = WandbRegistry(credentials=credentials(fake), org=ORG)
    registry.save(block)
    collection = f"churn-{uuid.uuid4().hex[:6]}"
    registry.register(collection, model_file(tmp_path, b"m0"))
    registry.register(collection, model_file(tmp_path, b"m1"))
    env = {**os.environ}

    promoted = cli("flows.registry", "--registry-block", f"wandb-model-registry/{block}", "promote",
                   f"{collection}:v0", "--alias", "production", env=env)
    assert promoted.returncode == 0, promoted.stderr[-2000:]
    assert json.loads(promoted.stdout)["aliases"] == ["production"]
    listed = cli("flows.registry", "--registry-block", block, "list", collection, env=env)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert [line.split("\t")[:2] for line in listed.stdout.splitlines()] == [
        [f"{collection}:v0", "production"], [f"{collection}:v1", "candidate"]]
    shown = cli("flows.registry", "--registry-block", block, "show", f"{collection}:production", env=env)
    assert json.loads(shown.stdout)["version"] == "v0"

    missing = cli("flows.registry", "--registry-block", block, "promote", f"{collection}:v7", env=env)
    assert missing.returncode == 2 and f"{collection}:v7" in missing.stderr and "Traceback" not in missing.stderr

    WandbRegistry(credentials=credentials(fake).model_copy(update={"api_key": SecretStr("x" * 40)}),
                  org=ORG).save(f"{block}-bad")
    refused = cli("flows.registry", "--registry-block", f"{block}-bad", "list", collection, env=env)
    assert refused.returncode == 2 and "refused the API key" in refused.stderr and "x" * 40 not in refused.stderr


def test_retrain_with_a_wandb_registry_gates_against_production_from_wandb(
        fake: FakeWandb, tmp_path: Path, prefect_api: str) -> None:
    block = f"wandb-reg-{uuid.uuid4().hex[:6]}"
    WandbRegistry(credentials=credentials(fake), org=ORG).save(block)
    model = f"churn-{uuid.uuid4().hex[:6]}"
    old, new = tmp_path / "old.parquet", tmp_path / "new.parquet"
    make_dataset(1500, seed=1).to_parquet(old)
    make_dataset(1500, seed=2, shift=1.0).to_parquet(new)
    env = {**os.environ}

    first = cli("flows.retrain", "--dataset", str(old), "--model", model, "--registry-block", block, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    registered = json.loads(first.stdout)
    assert registered["registered"] == "v0" and registered["path"] == f"{ORG}/wandb-registry-model/{model}:v0"
    promote = cli("flows.registry", "--registry-block", block, "promote", f"{model}:v0", env=env)
    assert promote.returncode == 0, promote.stderr[-2000:]

    # the new data arrives as a W&B dataset artifact: the trainer and the gate both read it from W&B
    log_dataset(fake, f"{model}-data", {"train.parquet": new})
    dataset = f"{ENTITY}/{PROJECT}/{model}-data:latest"
    second = cli("flows.retrain", "--dataset", dataset, "--model", model, "--registry-block", block,
                 env=wandb_env(fake))
    assert second.returncode == 0, second.stderr[-3000:]
    result = json.loads(second.stdout)
    assert result["production_version"] == "v0", "the gate read production from the W&B registry"
    # production was downloaded from W&B and scored on the new data, not taken from its recorded metrics
    assert result["production_metrics"]["accuracy"] != registered["metrics"]["accuracy"]
    assert result["registered"] == "v1"
    registry = WandbRegistry(credentials=credentials(fake), org=ORG)
    mv = registry.get(model, "candidate")
    assert mv.version == "v1" and mv.metadata["dataset"] == dataset and mv.metadata["gate"]["passed"] is True

    # a model the gate refuses is linked as `refused`, its reasons in its metadata; `candidate` stays put
    # (on data of its own: W&B takes a byte-identical model for the version it already has)
    other = tmp_path / "other.parquet"
    make_dataset(1500, seed=3, shift=0.5).to_parquet(other)
    third = cli("flows.retrain", "--dataset", str(other), "--model", model, "--registry-block", block,
                "--floor", "accuracy=0.999", env=wandb_env(fake))
    assert third.returncode == 3, third.stderr[-3000:]
    refused = registry.get(model, "refused")
    assert refused.version == "v2" and refused.aliases == ("refused",)
    assert refused.metadata["refused"]["stage"] == "gate" and "0.999" in refused.metadata["refused"]["reasons"][0]
    assert registry.get(model, "candidate").version == "v1"


# --------------------------------------------------------------------------- datasets


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("wandb-tables")
    out = {}
    for name, seed, shift in (("ref", 1, 0.0), ("cur", 2, 0.6)):
        frame = make_dataset(800, seed=seed, shift=shift)
        out[f"{name}.csv"] = d / f"{name}.csv"
        frame.to_csv(out[f"{name}.csv"], index=False)
        out[f"{name}.parquet"] = d / f"{name}.parquet"
        frame.to_parquet(out[f"{name}.parquet"])
    return out


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_drift_on_wandb_artifacts_equals_drift_on_the_same_files(
        fake: FakeWandb, tables: dict[str, Path], suffix: str, prefect_api: str) -> None:
    tag = uuid.uuid4().hex[:6]
    log_dataset(fake, f"churn-ref-{tag}", {f"data.{suffix}": tables[f"ref.{suffix}"]}, aliases=("reference",))
    log_dataset(fake, f"churn-cur-{tag}", {f"data.{suffix}": tables[f"cur.{suffix}"]})
    env = wandb_env(fake)

    local = cli("flows.drift", "--reference", str(tables[f"ref.{suffix}"]), "--current",
                str(tables[f"cur.{suffix}"]), "--no-wandb", "--json", env=env)
    remote = cli("flows.drift", "--reference", f"{ENTITY}/{PROJECT}/churn-ref-{tag}:reference",
                 "--current", f"wandb://churn-cur-{tag}:latest", "--no-wandb", "--json", env=env)
    assert local.returncode == 0 and remote.returncode == 0, local.stderr[-1500:] + remote.stderr[-1500:]
    a, b = json.loads(local.stdout), json.loads(remote.stdout)
    assert a["drift_detected"] is True
    assert [(f["name"], f["statistic"], f["p_value"], f["n_reference"]) for f in a["features"]] == \
           [(f["name"], f["statistic"], f["p_value"], f["n_reference"]) for f in b["features"]]


def test_missing_artifact_model_artifact_and_tableless_artifact_exit_2(
        fake: FakeWandb, tables: dict[str, Path], tmp_path: Path, prefect_api: str) -> None:
    tag = uuid.uuid4().hex[:6]
    log_dataset(fake, f"weights-{tag}", {"model.bin": model_file(tmp_path, b"w")}, kind="model")
    notes = tmp_path / "README.txt"
    notes.write_text("no table here")
    log_dataset(fake, f"notes-{tag}", {"README.txt": notes})
    env = wandb_env(fake)
    ref = str(tables["ref.csv"])

    missing = cli("flows.drift", "--reference", ref, "--current", f"{ENTITY}/{PROJECT}/nope-{tag}:latest",
                  "--no-wandb", env=env)
    assert missing.returncode == 2, missing.stderr[-2000:]
    last = missing.stderr.strip().splitlines()[-1]  # the CLI's one line (Prefect's run log comes before it)
    assert last.startswith("drift-check: ") and f"nope-{tag}" in last and "not found in W&B" in last, last

    model = cli("flows.drift", "--reference", ref, "--current", f"{ENTITY}/{PROJECT}/weights-{tag}:latest",
                "--no-wandb", env=env)
    last = model.stderr.strip().splitlines()[-1]
    assert model.returncode == 2 and "no table file" in last and "(type model)" in last, model.stderr[-2000:]

    tableless = cli("flows.drift", "--reference", ref, "--current", f"{ENTITY}/{PROJECT}/notes-{tag}:latest",
                    "--no-wandb", env=env)
    assert tableless.returncode == 2 and "README.txt" in tableless.stderr, tableless.stderr

    refused = cli("flows.drift", "--reference", ref, "--current", f"{ENTITY}/{PROJECT}/notes-{tag}:latest",
                  "--no-wandb", env=wandb_env(fake, key="k" * 40))
    assert refused.returncode == 2 and "refused the API key" in refused.stderr and "k" * 40 not in refused.stderr


# --------------------------------------------------------------------------- drift reports


def test_drift_report_is_logged_to_a_wandb_run_and_reads_back(
        fake: FakeWandb, tables: dict[str, Path], prefect_api: str) -> None:
    from flows.drift_check import drift_check

    block = f"wandb-creds-{uuid.uuid4().hex[:6]}"
    credentials(fake).save(block)
    result = drift_check(reference=str(tables["ref.parquet"]), current=str(tables["cur.parquet"]), wandb_block=block)
    assert result["drift_detected"] is True

    (run,) = [r for r in fake.runs.values() if r.job_type == "drift-check" and r.config.get("current") == str(
        tables["cur.parquet"]) and r.summary.get("drift_detected") is True]
    assert run.state == "finished"
    api = credentials(fake).get_api()
    remote = api.run(f"{ENTITY}/{PROJECT}/{run.name}")
    drifted = [f["name"] for f in result["features"] if f["drifted"]]
    assert remote.summary["drift_detected"] is True and list(remote.summary["drifted_features"]) == drifted
    assert remote.config["alpha"] == 0.05
    tables = {a.name.split(":")[0]: a for a in remote.logged_artifacts() if a.type == "run_table"}
    (features_artifact,) = [a for name, a in tables.items() if "driftfeatures" in name]
    table = features_artifact.get("drift/features")
    assert table.columns[:3] == ["feature", "test", "statistic"]
    assert [row[0] for row in table.data] == [f["name"] for f in result["features"]]
    # and what the data contract found, beside it
    (contract_artifact,) = [a for name, a in tables.items() if "data_contract" in name]
    contract = contract_artifact.get("data_contract")
    assert contract.columns[:3] == ["table", "column", "type"]
    assert {(row[0], row[1]) for row in contract.data} >= {("reference", "age"), ("current", "age")}
    assert remote.summary["data_contract"] == "passed"
    # the same figures as the Prefect artifact, one per drifted feature
    plots = {k for k in remote.summary.keys() if k.startswith("drift/plots/")}
    assert plots == {f"drift/plots/{name}" for name in drifted}, plots


def test_a_refusal_by_the_data_contract_is_in_wandb_too(
        fake: FakeWandb, tables: dict[str, Path], tmp_path: Path, prefect_api: str) -> None:
    """Drift-check and retrain runs that the contract refuses leave a W&B run saying why."""
    import pandas as pd

    from flows.drift_check import drift_check
    from flows.data_contract import DataContractError

    dirty = pd.read_csv(tables["cur.csv"])
    dirty["age"] = dirty["age"].astype(object)
    dirty.loc[[3, 7], "age"] = ["#REF!", "oops"]
    path = tmp_path / "dirty.csv"
    dirty.to_csv(path, index=False)
    block = f"wandb-creds-{uuid.uuid4().hex[:6]}"
    credentials(fake).save(block)
    with pytest.raises(DataContractError, match="numeric column 'age': 2 cell"):
        drift_check(reference=str(tables["ref.csv"]), current=str(path), wandb_block=block)
    (run,) = [r for r in fake.runs.values() if r.job_type == "drift-check" and r.config.get("current") == str(path)]
    remote = credentials(fake).get_api().run(f"{ENTITY}/{PROJECT}/{run.name}")
    assert remote.summary["data_contract"] == "refused"
    assert any("numeric column 'age'" in p for p in remote.summary["data_contract_problems"])
    assert "drift_detected" not in remote.summary, "no statistic on a refused table"

    registry_block = f"wandb-reg-{uuid.uuid4().hex[:6]}"
    WandbRegistry(credentials=credentials(fake), org=ORG).save(registry_block)
    model = f"churn-{uuid.uuid4().hex[:6]}"
    refused = cli("flows.retrain", "--dataset", str(path), "--model", model, "--registry-block", registry_block,
                  env={**os.environ})
    assert refused.returncode == 2, refused.stderr[-2000:]
    (run,) = [r for r in fake.runs.values() if r.job_type == "retrain" and r.config.get("model") == model]
    remote = credentials(fake).get_api().run(f"{ENTITY}/{PROJECT}/{run.name}")
    assert remote.summary["data_contract"] == "refused"
    (contract_artifact,) = [a for a in remote.logged_artifacts() if a.type == "run_table"]
    rows = contract_artifact.get("data_contract").data
    assert any(row[0] == "age" and row[4] == "refused" for row in rows), rows


def test_wandb_down_does_not_hold_back_the_drift_verdict(
        fake: FakeWandb, tables: dict[str, Path], prefect_api: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows import drift_check as module

    block = f"wandb-creds-{uuid.uuid4().hex[:6]}"
    credentials(fake, timeout=2).save(block)
    monkeypatch.setattr(module.log_to_wandb, "retries", 0)
    fake.fail_next("UpsertBucket", 503, times=10_000)
    try:
        result = module.drift_check(reference=str(tables["ref.csv"]), current=str(tables["cur.csv"]),
                                    wandb_block=block)
    finally:
        fake.clear_faults()
    assert result["drift_detected"] is True, "the verdict is returned (and emitted) with W&B unreachable"


# --------------------------------------------------------------------------- automations


def test_automations_applied_for_real_then_unchanged_then_updated(fake: FakeWandb, tables: dict[str, Path]) -> None:
    hook = f"receiver-{uuid.uuid4().hex[:6]}"
    fake.add_integration(ENTITY, hook, "https://hooks.example.com/hooks/wandb")
    collection = f"data-{uuid.uuid4().hex[:6]}"
    log_dataset(fake, collection, {"data.csv": tables["ref.csv"]})
    env = wandb_env(fake)
    base = ["--entity", ENTITY, "--webhook", hook, "--dataset-project", f"{ENTITY}/{PROJECT}",
            "--dataset-collections", collection, "--name-prefix", f"t{hook[-6:]}", "--json"]
    metric = ["--metric-project", f"{ENTITY}/{PROJECT}", "--metric", "val_accuracy", "--op", "<"]

    first = cli("deployments.wandb_automations", *base, *metric, "--threshold", "0.85", env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    created = json.loads(first.stdout)["results"]
    assert [r["status"] for r in created] == ["created"] * 4, created
    mine = {a.name: a for a in fake.automations.values() if a.name.startswith(f"t{hook[-6:]}")}
    assert {a.event_type for a in mine.values()} == {"ADD_ARTIFACT_ALIAS", "CREATE_ARTIFACT", "LINK_MODEL", "RUN_METRIC"}
    assert all(fake.integrations[a.action["integration"]].name == hook for a in mine.values())
    alias = next(a for a in mine.values() if a.event_type == "ADD_ARTIFACT_ALIAS")
    assert json.loads(alias.event_filter) == {"$or": [{"$and": [{"alias": {"$regex": "^production$"}}]}]}
    assert "${artifact_version_string}" in alias.action["requestPayload"]

    again = cli("deployments.wandb_automations", *base, *metric, "--threshold", "0.85", env=env)
    assert [r["status"] for r in json.loads(again.stdout)["results"]] == ["unchanged"] * 4, again.stderr[-2000:]
    assert len([a for a in fake.automations.values() if a.name.startswith(f"t{hook[-6:]}")]) == 4, "no duplicates"

    changed = cli("deployments.wandb_automations", *base, *metric, "--threshold", "0.8", env=env)
    statuses = {r["name"]: (r["status"], r["changed"]) for r in json.loads(changed.stdout)["results"]}
    (metric_name,) = [n for n in statuses if "run-metric" in n]
    assert statuses[metric_name][0] == "updated" and "filter" in statuses[metric_name][1]
    assert sum(s == "unchanged" for s, _ in statuses.values()) == 3
    assert "0.8" in fake.automations[mine[metric_name].id].event_filter


def test_automations_with_a_missing_integration_or_a_bad_key_exit_2(fake: FakeWandb) -> None:
    base = ["--entity", ENTITY, "--webhook", "not-there", "--dataset-project", f"{ENTITY}/{PROJECT}"]
    missing = cli("deployments.wandb_automations", *base, env=wandb_env(fake))
    assert missing.returncode == 2 and "no W&B webhook integration named 'not-there'" in missing.stderr

    refused = subprocess_cli("deployments.wandb_automations", *base, env=wandb_env(fake, key="z" * 40))
    assert refused.returncode == 2, refused.stderr
    assert "refused the API key" in refused.stderr and "z" * 40 not in refused.stderr + refused.stdout


# --------------------------------------------------------------------------- the fake itself


def test_the_fake_refuses_what_it_does_not_serve_and_checks_answers_against_the_sdk() -> None:
    import httpx

    with FakeWandb() as server:
        auth = ("api", server.api_key)
        unknown = httpx.post(f"{server.url}/graphql", auth=auth, json={"query": "query Mystery { mystery { id } }"})
        assert unknown.status_code == 400 and "Query.mystery" in unknown.text
        field = httpx.post(f"{server.url}/graphql", auth=auth,
                           json={"query": "query V { viewer { id shoeSize } }"})
        assert field.status_code == 400 and "User.shoeSize" in field.text
        assert httpx.post(f"{server.url}/graphql", auth=("api", "nope"), json={"query": "{ viewer { id } }"}
                          ).status_code == 401
        assert len(server.errors) == 2

        from wandb.sdk.internal._generated.operations import SERVER_FEATURES_QUERY_GQL

        original = server.features
        server.features = lambda: {"LARGE_FILENAMES": "yes please"}  # type: ignore[method-assign,return-value]
        bad = httpx.post(f"{server.url}/graphql", auth=auth,
                         json={"query": SERVER_FEATURES_QUERY_GQL, "operationName": "ServerFeaturesQuery"})
        server.features = original  # type: ignore[method-assign]
        assert bad.status_code == 400 and "fails the SDK's model" in bad.text and "ServerFeaturesQuery" in bad.text
    assert {"ArtifactMembershipByName", "LinkArtifact", "CreateAutomation", "IntegrationsByEntity",
            "ServerFeaturesQuery"} <= set(sdk_operation_models())


def test_a_rollouts_evidence_is_logged_beside_the_model_in_wandb(fake: FakeWandb) -> None:
    """canary-rollout with a W&B registry logs its look table, figure and outcome to a W&B run."""
    from flows.canary import log_rollout_to_wandb
    from flows.plots import canary_figure

    rows = [{"look": 1, "step": "50%", "decision": "rollback", "canary error rate": "30.00%", "p errors": 1e-9}]
    svg = canary_figure([{"label": "50%", "canary_error_rate": 0.3, "stable_error_rate": 0.01,
                          "canary_p50_ms": 80.0, "stable_p50_ms": 78.0}], max_error_rate=0.05,
                        min_latency_increase=0.1, title="churn:v9")
    registry = WandbRegistry(credentials=credentials(fake), org=ORG)
    path = log_rollout_to_wandb(registry, "churn:v9", "RolledBack", rows, svg)
    assert path, "logged online"
    (run,) = [r for r in fake.runs.values() if r.job_type == "canary-rollout" and r.config.get("model") == "churn:v9"]
    remote = credentials(fake).get_api().run(f"{ENTITY}/{PROJECT}/{run.name}")
    assert remote.summary["outcome"] == "RolledBack"
    (looks,) = [a for a in remote.logged_artifacts() if a.type == "run_table"]
    assert looks.get("canary/looks").data[0][:3] == [1, "50%", "rollback"]
    assert log_rollout_to_wandb(object(), "churn:v9", "RolledBack", rows, svg) is None, "no W&B registry: nothing"


def test_the_w_and_b_registry_tells_the_truth_after_a_rollback(fake: FakeWandb, tmp_path: Path,
                                                              prefect_api: str) -> None:
    """canary-rollout's update-registry through the real SDK: production back on what serves, the
    rolled-back version marked (alias and metadata), candidate cleared from it."""
    from prefect import flow

    from flows.canary import update_registry

    registry = WandbRegistry(credentials=credentials(fake), org=ORG)
    coll = f"churn-{uuid.uuid4().hex[:6]}"
    registry.register(coll, model_file(tmp_path, b"v0"), aliases=["production"])
    registry.register(coll, model_file(tmp_path, b"v1"), metadata={"metrics": {"accuracy": 0.9}}, aliases=["candidate"])
    registry.set_alias(coll, "v1", "production")

    @flow(name="wandb-registry-sync")
    def sync() -> dict[str, str]:
        return update_registry(registry, coll, "v1", {"model": f"{coll}:v1", "outcome": "rolled-back",
                                                      "reason": "errors 4% vs 1%", "stable": f"{coll}:v0"})

    assert sync() == {"production": "v0", "rolled-back": "v1"}
    v1 = registry.get(coll, "v1")
    assert v1.aliases == ("rolled-back",) and v1.metadata["metrics"] == {"accuracy": 0.9}, "metadata merged"
    assert v1.metadata["rollout"]["outcome"] == "rolled-back" and v1.metadata["rollout"]["reason"] == "errors 4% vs 1%"
    assert registry.get(coll, "production").version == "v0"
    assert sync() == {"production": "v0", "rolled-back": "v1"}, "a rerun changes nothing"

"""The drift-check flow under the session's Prefect server, its CLI, and its trigger."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from deployments.serve import deployment_specs, read_project
from deployments.stack import ROOT
from deployments.wandb_events import artifact_body, parse_body
from tests.helpers import read_events, wait_until


def write_pair(tmp_path: Path, *, shift: float, seed: int = 7, n: int = 3000) -> tuple[str, str]:
    rng = np.random.default_rng(seed)
    ref = pd.DataFrame({
        "age": rng.normal(40, 10, n),
        "income": rng.lognormal(10, 1, n),
        "plan": rng.choice(["basic", "pro", "team"], n, p=[0.6, 0.3, 0.1]),
    })
    cur = pd.DataFrame({
        "age": rng.normal(40 + shift * 10, 10, n),
        "income": rng.lognormal(10, 1, n),
        "plan": rng.choice(["basic", "pro", "team"], n, p=[0.6, 0.3, 0.1]),
    })
    ref_path, cur_path = tmp_path / f"ref-{uuid.uuid4().hex[:6]}.csv", tmp_path / f"cur-{uuid.uuid4().hex[:6]}.parquet"
    ref.to_csv(ref_path, index=False)
    cur.to_parquet(cur_path)
    return str(ref_path), str(cur_path)


def latest_artifact(api: str, key: str) -> dict[str, Any] | None:
    found = httpx.post(f"{api}/artifacts/latest/filter", json={"artifacts": {"key": {"any_": [key]}}}).json()
    return found[0] if found else None


def test_drift_detected_publishes_artifacts_wandb_offline_and_event(
    prefect_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.drift_check import drift_check

    monkeypatch.setenv("MODELOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    ref, cur = write_pair(tmp_path, shift=0.5)

    result = drift_check(reference=ref, current=cur)

    assert result["drift_detected"] is True
    drifted = {f["name"] for f in result["features"] if f["drifted"]}
    assert drifted == {"age"}, "only the shifted feature drifts"
    tests = {f["name"]: f["test"] for f in result["features"]}
    assert tests == {"age": "ks", "income": "ks", "plan": "chi2"}

    table = latest_artifact(prefect_api, "drift-features")
    assert table is not None and table["type"] == "table"
    rows = json.loads(table["data"]) if isinstance(table["data"], str) else table["data"]
    assert {r["feature"] for r in rows} == {"age", "income", "plan"}
    summary = latest_artifact(prefect_api, "drift-summary")
    assert summary is not None and "`age`" in summary["data"] and "Drift detected" in summary["data"]

    offline_runs = list((tmp_path / "wandb").rglob("offline-run-*")) + list((tmp_path / "home").rglob("offline-run-*"))
    assert offline_runs, "without W&B credentials the report is logged to an offline run kept locally"

    resource = f"modelops.dataset.{cur}"
    events = wait_until(lambda: read_events(prefect_api, event="modelops.drift.detected", resource_prefix=resource),
                        30, message="modelops.drift.detected")
    assert events[0]["payload"]["drifted_features"] == ["age"]
    assert events[0]["payload"]["reference"] == ref


def test_no_drift_emits_checked(prefect_api: str, tmp_path: Path) -> None:
    from flows.drift_check import drift_check

    ref, cur = write_pair(tmp_path, shift=0.0)
    result = drift_check(reference=ref, current=cur, log_wandb=False)
    assert result["drift_detected"] is False
    resource = f"modelops.dataset.{cur}"
    wait_until(lambda: read_events(prefect_api, event="modelops.drift.checked", resource_prefix=resource), 30,
               message="modelops.drift.checked")
    assert read_events(prefect_api, event="modelops.drift.detected", resource_prefix=resource) == []


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flows.drift", *args], cwd=ROOT, env=env or dict(os.environ),
                          capture_output=True, text=True, timeout=180)


def test_cli_prints_exactly_one_json_document(prefect_api: str, tmp_path: Path) -> None:
    ref, cur = write_pair(tmp_path, shift=0.5)
    proc = _cli("--reference", ref, "--current", cur, "--correction", "fdr_bh", "--columns", "age,plan",
                "--no-wandb", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)  # the whole of stdout is one JSON document
    assert doc["drift_detected"] is True and doc["correction"] == "fdr_bh" and doc["alpha"] == 0.05
    assert [f["name"] for f in doc["features"]] == ["age", "plan"]
    assert {"name", "test", "statistic", "p_value", "p_value_adjusted", "drifted", "n_reference",
            "n_current"} <= set(doc["features"][0])


def test_cli_exit_codes(prefect_api: str, tmp_path: Path) -> None:
    ref, cur = write_pair(tmp_path, shift=0.0)
    ok = _cli("--reference", ref, "--current", cur, "--no-wandb", "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["drift_detected"] is False, "no drift still exits 0"

    missing = _cli("--reference", str(tmp_path / "nope.csv"), "--current", cur, "--no-wandb", "--json")
    assert missing.returncode == 2 and "nope.csv" in missing.stderr and missing.stdout == ""

    bad_alpha = _cli("--reference", ref, "--current", cur, "--alpha", "3", "--json")
    assert bad_alpha.returncode == 2 and "alpha" in bad_alpha.stderr


def test_cli_reads_gs_urls_through_gcsfs_with_service_account_credentials(prefect_api: str, tmp_path: Path) -> None:
    """`gs://` tables through the `gcs` extra (real gcsfs, real google-auth) against a local server
    that speaks the Cloud Storage JSON API and Google's OAuth token exchange: the credentials are a
    service-account key file named by GOOGLE_APPLICATION_CREDENTIALS, as on a worker."""
    from tests.fakes.gcp_api import FakeGcp

    ref, cur = write_pair(tmp_path, shift=0.5)
    with FakeGcp() as fake:
        key_file = tmp_path / "sa.json"
        key_file.write_text(json.dumps(fake.new_service_account("modelops-test")))
        fake.put_object("gs://acme-data/churn/reference.csv", Path(ref).read_bytes())
        fake.put_object("gs://acme-data/churn/2026-11/current.parquet", Path(cur).read_bytes())
        env = {**os.environ, "GOOGLE_APPLICATION_CREDENTIALS": str(key_file), "STORAGE_EMULATOR_HOST": fake.url,
               # gcsfs's bucket-type probe speaks gRPC to the storage host; the local server speaks JSON only
               "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return _cli(*args, "--no-wandb", "--json", env=env)

        proc = cli("--reference", "gs://acme-data/churn/reference.csv",
                   "--current", "gs://acme-data/churn/2026-11/current.parquet")
        assert proc.returncode == 0, proc.stderr[-2000:]
        doc = json.loads(proc.stdout)
        local = json.loads(_cli("--reference", ref, "--current", cur, "--no-wandb", "--json").stdout)
        assert doc["drift_detected"] is True
        assert [(f["name"], f["statistic"], f["p_value"]) for f in doc["features"]] == \
            [(f["name"], f["statistic"], f["p_value"]) for f in local["features"]], "the same tables as read locally"
        downloads = [r for r in fake.requests if r.path.startswith("/download/storage/v1/b/acme-data/o/")]
        assert downloads and all(r.auth == "token" for r in downloads), "read from the server, with the key's token"

        missing = cli("--reference", "gs://acme-data/churn/nope.csv", "--current",
                      "gs://acme-data/churn/2026-11/current.parquet")
        assert missing.returncode == 2 and "gs://acme-data/churn/nope.csv" in missing.stderr and missing.stdout == ""


def test_trigger_fires_on_new_dataset_version_with_the_right_refs() -> None:
    from prefect.server.events.schemas.automations import EventTrigger
    from prefect.server.events.schemas.events import ReceivedEvent

    from tests.test_serve import render_trigger_parameters

    spec = next(d for d in read_project()["deployments"] if d["name"] == "drift-check")
    trigger_spec = spec["triggers"][0]
    client_trigger = next(s for s in deployment_specs(read_project()) if s["name"] == "drift-check")["triggers"][0]
    server_trigger = EventTrigger.model_validate(
        {k: v for k, v in client_trigger.model_dump().items() if k in EventTrigger.model_fields})

    def received(body: dict[str, Any]) -> ReceivedEvent:
        ev = parse_body(json.dumps(body).encode()).to_prefect(str(uuid.uuid4()), datetime.now(timezone.utc).isoformat())
        return ReceivedEvent.model_validate({**ev, "received": ev["occurred"]})

    new_data = artifact_body("CREATE_ARTIFACT", "acme", "churn", "churn-data", "v5")
    assert server_trigger.covers(received(new_data))
    other = artifact_body("CREATE_ARTIFACT", "acme", "churn", "model-weights", "v5")
    assert not server_trigger.covers(received(other)), "only the configured dataset collections"
    alias = artifact_body("ADD_ARTIFACT_ALIAS", "acme", "churn", "churn-data", "v5", alias="production")
    assert not server_trigger.covers(received(alias))

    params = render_trigger_parameters(trigger_spec["parameters"], new_data)
    assert params["current"] == "acme/churn/churn-data:v5"
    assert params["reference"] == "acme/churn/churn-data:reference"


def test_the_data_contract_refuses_garbage_before_any_statistic(prefect_api: str, tmp_path: Path) -> None:
    ref, cur = write_pair(tmp_path, shift=0.0)
    dirty = pd.read_parquet(cur)
    dirty["age"] = dirty["age"].astype(object)
    dirty.loc[[4, 9, 19], "age"] = ["#REF!", "oops", "??"]
    dirty["session_id"] = [f"s-{i}" for i in range(len(dirty))]  # an id: left out and reported, not tested
    path = tmp_path / "dirty.csv"
    dirty.to_csv(path, index=False)
    refused = _cli("--reference", ref, "--current", str(path), "--no-wandb", "--json")
    assert refused.returncode == 2 and refused.stdout == ""
    last = refused.stderr.strip().splitlines()[-1]
    assert "numeric column 'age': 3 cell(s) are not numbers (row 5: '#REF!', row 10: 'oops', row 20: '??')" in last
    coerced = _cli("--reference", ref, "--current", str(path), "--no-wandb", "--json", "--coerce-numeric")
    assert coerced.returncode == 0, coerced.stderr[-2000:]
    doc = json.loads(coerced.stdout)
    assert "session_id" not in {f["name"] for f in doc["features"] if f.get("test")}
    artifact = httpx.post(f"{prefect_api}/artifacts/filter", json={"artifacts": {"key": {"any_": ["drift-data-contract"]}},
                                                                  "sort": "CREATED_DESC"}).json()
    rows = artifact[0]["data"] if isinstance(artifact[0]["data"], list) else json.loads(artifact[0]["data"])
    assert {"table": "current", "column": "session_id"}.items() <= next(
        r for r in rows if r["column"] == "session_id" and r["table"] == "current").items()

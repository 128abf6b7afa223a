"""`blocks.wandb.WandbCredentials`: configuration from the environment, secrets kept out of reprs,
and a real offline W&B run written under $MODELOPS_HOME with no network traffic."""

from __future__ import annotations

import json
import re
import socket
import threading
from pathlib import Path
from typing import Iterator

import pandas as pd
import pytest
from pydantic import SecretStr, ValidationError

from blocks.wandb import WandbConfigError, WandbCredentials
from tests.helpers import wait_until

KEY = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WANDB_API_KEY", "WANDB_ENTITY", "WANDB_PROJECT", "WANDB_BASE_URL", "WANDB_MODE"):
        monkeypatch.delenv(name, raising=False)


def test_from_env_without_key_is_none() -> None:
    assert WandbCredentials.from_env({}) is None
    assert WandbCredentials.from_env({"WANDB_ENTITY": "acme", "WANDB_API_KEY": "  "}) is None


def test_from_env_reads_all_variables() -> None:
    creds = WandbCredentials.from_env({
        "WANDB_API_KEY": KEY, "WANDB_ENTITY": "acme", "WANDB_PROJECT": "churn",
        "WANDB_BASE_URL": "https://acme.wandb.io/",
    })
    assert creds is not None
    assert creds.api_key is not None and creds.api_key.get_secret_value() == KEY
    assert (creds.entity, creds.project, creds.base_url) == ("acme", "churn", "https://acme.wandb.io")


def test_from_env_key_only_uses_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    creds = WandbCredentials.from_env()
    assert creds is not None and (creds.entity, creds.project, creds.base_url) == (None, None, None)


def test_validation() -> None:
    with pytest.raises(ValidationError, match="http"):
        WandbCredentials(base_url="acme.wandb.io")
    with pytest.raises(ValidationError, match="bare W&B name"):
        WandbCredentials(entity="acme/churn")


def test_repr_and_errors_hide_the_key() -> None:
    creds = WandbCredentials(api_key=SecretStr(KEY), entity="acme")
    assert KEY not in repr(creds) and KEY not in str(creds)
    assert KEY not in creds.model_dump_json()
    try:
        WandbCredentials(api_key=KEY, base_url="ftp://nope")
    except ValidationError as exc:
        assert KEY not in str(exc), "a validation error must not echo the key"


def test_block_type_slug() -> None:
    assert WandbCredentials.get_block_type_slug() == "wandb-credentials"


def test_get_api_passes_key_server_and_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    import wandb

    built: list[dict] = []

    class RecordingApi:  # stands in for wandb.Api, which would contact the server
        def __init__(self, **kwargs):
            built.append(kwargs)

    monkeypatch.setattr(wandb, "Api", RecordingApi)
    creds = WandbCredentials(api_key=KEY, entity="acme", base_url="https://acme.wandb.io", timeout=12)
    assert isinstance(creds.get_api(), RecordingApi)
    assert built == [{
        "api_key": KEY,
        "overrides": {"base_url": "https://acme.wandb.io", "entity": "acme"},
        "timeout": 12,
    }]
    built.clear()
    WandbCredentials(api_key=KEY).get_api()
    assert built[0]["overrides"] is None, "no base_url: the SDK's default server (wandb.ai)"


def test_get_api_without_key_says_what_to_set() -> None:
    with pytest.raises(WandbConfigError, match="WANDB_API_KEY"):
        WandbCredentials(entity="acme").get_api()


def test_run_mode() -> None:
    assert WandbCredentials().run_mode() == "offline", "no key: runs are written locally"
    assert WandbCredentials(api_key=KEY).run_mode() == "online"
    assert WandbCredentials(api_key=KEY).run_mode(offline=True) == "offline"


@pytest.fixture
def tripwire(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    """A local TCP listener posing as the W&B server and as the HTTP(S) proxy: it records every
    connection, so a test can assert that nothing tried to reach the network."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    seen: list[bytes] = []
    stop = threading.Event()
    # a proxied request for another loopback port is a client an earlier test in this process left
    # behind, calling its own (gone) local fake server: never W&B, which would come here or go out
    stray = re.compile(rb"[A-Z]+ http://127\.0\.0\.1:(?!%d/)\d+/" % server.getsockname()[1])

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    head = conn.recv(200) or b"<connected>"
                except OSError:
                    head = b"<connected>"
                if not stray.match(head):
                    seen.append(head)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}"
    monkeypatch.setenv("WANDB_BASE_URL", url)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, url)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    yield seen
    stop.set()
    thread.join(2)
    server.close()


def test_offline_run_writes_run_table_and_summary_locally(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tripwire: list[bytes]
) -> None:
    import wandb

    home = tmp_path / "home"
    monkeypatch.setenv("MODELOPS_HOME", str(home))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    for name in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))

    # A key is configured, but offline=True must still keep everything local.
    creds = WandbCredentials(api_key=KEY, entity="acme", project="churn")
    run = creds.init_run("drift-check", {"threshold": 0.05}, offline=True)
    try:
        assert run.settings.mode == "offline"
        sample = pd.DataFrame({"feature": ["age", "plan"], "p_value": [0.31, 0.002]})
        run.log({"drift_table": wandb.Table(dataframe=sample)})
        run.summary["drifted_features"] = 1
        run_dir = Path(run.dir).parent
    finally:
        run.finish()

    assert run_dir.parent == home / "wandb", "runs live under $MODELOPS_HOME/wandb"
    assert run_dir.name.startswith("offline-run-")
    run_file = run_dir / f"run-{run.id}.wandb"
    assert run_file.is_file(), "the offline transaction log is what `wandb sync` uploads later"
    tables = list((run_dir / "files" / "media" / "table").glob("drift_table_*.table.json"))
    assert len(tables) == 1, "the logged table is written as a file"
    table = json.loads(tables[0].read_text())
    assert table["columns"] == ["feature", "p_value"] and table["data"][1] == ["plan", 0.002]
    # wandb-core writes the transaction log from its own process; finish() can return a moment before
    # the last records reach the file when the machine is loaded, so wait (bounded) for them.
    def complete_log() -> bytes | None:
        data = run_file.read_bytes()
        return data if b"drifted_features" in data and b"threshold" in data else None

    records = wait_until(complete_log, 60, message="summary and config records in the offline run log")
    assert KEY.encode() not in records, "the API key is not written into an offline run"
    assert tripwire == [], f"an offline run must not touch the network, saw {tripwire!r}"


def test_run_without_key_is_offline_with_default_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tripwire: list[bytes]
) -> None:
    monkeypatch.setenv("MODELOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-dir"))
    for name in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    run = WandbCredentials().init_run("drift-check", {})
    try:
        assert run.settings.mode == "offline" and run.project == "modelops"
    finally:
        run.finish()
    assert tripwire == []

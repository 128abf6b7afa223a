"""Registries: alias semantics, W&B naming, and the local registry announcing like W&B does."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from blocks.registry import LocalRegistry, RegistryError, WandbRegistry, parse_model_ref, registry_path
from blocks.wandb import WandbCredentials
from deployments.stack import Stack, free_port
from flows.registry import main as registry_cli
from tests.helpers import read_events, wait_until

SECRET = "registry-test-secret"


@pytest.fixture()
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.joblib"
    path.write_bytes(b"model bytes " + uuid.uuid4().bytes)
    return path


def local(tmp_path: Path, **kw) -> LocalRegistry:
    return LocalRegistry(path=str(tmp_path / "registry"), **kw)


# ------------------------------------------------------------------------------ alias semantics


def test_register_copies_the_model_and_gives_candidate(tmp_path: Path, model_file: Path) -> None:
    reg = local(tmp_path)
    mv = reg.register("churn", model_file, metadata={"metrics": {"accuracy": 0.9}, "dataset": "d.parquet"})
    assert (mv.version, mv.aliases) == ("v0", ("candidate",))
    assert Path(mv.uri).read_bytes() == model_file.read_bytes() and Path(mv.uri) != model_file
    assert mv.metadata["metrics"] == {"accuracy": 0.9}
    assert mv.path == "local/wandb-registry-model/churn:v0"
    assert reg.get("churn", "v0") == mv


def test_one_version_per_alias_the_previous_holder_loses_it(tmp_path: Path, model_file: Path) -> None:
    reg = local(tmp_path)
    reg.register("churn", model_file)
    reg.register("churn", model_file)
    assert [(v.version, v.aliases) for v in reg.versions("churn")] == [("v0", ()), ("v1", ("candidate",))]

    reg.set_alias("churn", "v0", "production")
    reg.set_alias("churn", "v1", "staging")
    reg.set_alias("churn", "candidate", "production")  # an alias names the version too
    assert [(v.version, v.aliases) for v in reg.versions("churn")] == [
        ("v0", ()), ("v1", ("candidate", "staging", "production"))]
    assert reg.get("churn", "production").version == "v1"
    assert reg.get("churn", "latest").version == "v1"
    reg.set_alias("churn", "v1", "production")  # idempotent
    assert reg.get("churn", "production").version == "v1"


def test_unknown_versions_and_bad_names_are_named(tmp_path: Path, model_file: Path) -> None:
    reg = local(tmp_path)
    with pytest.raises(RegistryError, match="no collection 'churn'"):
        reg.get("churn", "v0")
    reg.register("churn", model_file)
    with pytest.raises(RegistryError, match=r"churn:v7 is not in the registry \(versions v0..v0; candidate=v0\)"):
        reg.get("churn", "v7")
    assert reg.find("churn", "production") is None
    with pytest.raises(RegistryError, match="collection '../x' is not a valid name"):
        reg.register("../x", model_file)
    with pytest.raises(RegistryError, match="alias 'pro duction' is not a valid name"):
        reg.set_alias("churn", "v0", "pro duction")
    with pytest.raises(RegistryError, match="does not exist"):
        reg.register("churn", tmp_path / "missing.joblib")
    assert [v.version for v in reg.versions("churn")] == ["v0"], "failed calls changed nothing"


def test_concurrent_registrations_get_distinct_versions(tmp_path: Path, model_file: Path) -> None:
    reg = local(tmp_path)
    out: list[str] = []
    threads = [threading.Thread(target=lambda: out.append(reg.register("churn", model_file).version)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(out, key=lambda v: int(v[1:])) == [f"v{i}" for i in range(8)]
    assert reg.get("churn", "candidate").version in out


def test_model_refs_and_wandb_registry_paths() -> None:
    assert parse_model_ref("churn-model:v3") == ("churn-model", "v3")
    assert parse_model_ref("acme/wandb-registry-model/churn-model:production") == ("churn-model", "production")
    with pytest.raises(RegistryError, match="must look like <collection>:<version or alias>"):
        parse_model_ref("churn-model")
    assert registry_path("acme", "model", "churn") == "acme/wandb-registry-model/churn"
    assert registry_path("acme", "wandb-registry-model", "churn", "v3") == "acme/wandb-registry-model/churn:v3"
    with pytest.raises(RegistryError, match="org 'ac me'"):
        registry_path("ac me", "model", "churn")
    block = WandbRegistry(credentials=WandbCredentials(), org="acme", registry="fraud")
    assert block.path("churn", "candidate") == "acme/wandb-registry-fraud/churn:candidate"


# ------------------------------------------------------------------------------ announcements


@pytest.fixture(scope="module")
def receiver(prefect_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    st = Stack(tmp_path_factory.mktemp("registry-receiver"), prefect_port=prefect_stack.prefect_port,
               webhook_secret=SECRET)
    st.start_receiver()
    try:
        yield st
    finally:
        st.stop()


def alias_events(api: str, collection: str) -> list[tuple[str, str, str]]:
    events = read_events(api, resource_prefix=f"wandb.artifact.local/wandb-registry-model/{collection}:")
    return sorted((e["event"], e["resource"]["wandb.version"], e["resource"].get("wandb.alias", "")) for e in events)


def test_alias_changes_reach_prefect_as_wandb_events(receiver: Stack, tmp_path: Path, model_file: Path) -> None:
    reg = local(tmp_path, receiver_url=receiver.hook_url, webhook_secret=SECRET)
    collection = f"churn-{uuid.uuid4().hex[:6]}"
    mv = reg.register(collection, model_file, metadata={"metrics": {"accuracy": 0.91}})
    assert mv.announced and reg.pending() == []
    reg.set_alias(collection, "v0", "production")

    expected = [("wandb.artifact.alias-added", "v0", "candidate"), ("wandb.artifact.alias-added", "v0", "production"),
                ("wandb.artifact.linked", "v0", "")]
    wait_until(lambda: alias_events(receiver.api_url, collection) == expected, 30,
               message=f"{expected} in Prefect, got {alias_events(receiver.api_url, collection)}")
    (prod,) = [e for e in read_events(receiver.api_url, event="wandb.artifact.alias-added",
                                      resource_prefix=f"wandb.artifact.local/wandb-registry-model/{collection}:")
               if e["resource"]["wandb.alias"] == "production"]
    assert prod["resource"]["prefect.resource.id"] == f"wandb.artifact.local/wandb-registry-model/{collection}:v0"
    assert prod["payload"]["artifact_metadata"]["metrics"] == {"accuracy": 0.91}


def test_receiver_down_queues_then_delivers_everything_once(prefect_stack: Stack, tmp_path: Path,
                                                           model_file: Path) -> None:
    st = Stack(tmp_path / "late", prefect_port=prefect_stack.prefect_port, webhook_secret=SECRET,
               receiver_port=free_port())
    reg = local(tmp_path, receiver_url=st.hook_url, webhook_secret=SECRET, announce_timeout=1)
    collection = f"churn-{uuid.uuid4().hex[:6]}"
    mv = reg.register(collection, model_file)
    assert not mv.announced and len(reg.pending()) == 2, "link + candidate alias queued"
    assert reg.get(collection, "candidate").version == "v0", "the registry change itself is done"
    st.start_receiver()
    try:
        assert reg.announce_pending() == 0 and reg.pending() == []
        expected = [("wandb.artifact.alias-added", "v0", "candidate"), ("wandb.artifact.linked", "v0", "")]
        wait_until(lambda: alias_events(st.api_url, collection) == expected, 30, message="queued announcements")
    finally:
        st.stop()


def test_wrong_secret_is_a_clear_error_and_nothing_is_dropped(receiver: Stack, tmp_path: Path,
                                                             model_file: Path) -> None:
    reg = local(tmp_path, receiver_url=receiver.hook_url, webhook_secret="not-the-secret")
    with pytest.raises(RegistryError, match="refused the announcement \\(401") as err:
        reg.register("churn", model_file)
    assert "not-the-secret" not in str(err.value)
    assert len(reg.pending()) == 2 and reg.get("churn", "candidate").version == "v0"


def test_a_crash_between_the_phases_sends_only_what_happened(receiver: Stack, tmp_path: Path,
                                                            model_file: Path) -> None:
    reg = local(tmp_path, receiver_url=receiver.hook_url, webhook_secret=SECRET)
    collection = f"churn-{uuid.uuid4().hex[:6]}"
    reg.register(collection, model_file)
    # a process died after preparing these two announcements: only the first change was written
    happened = reg._prepare(reg._body("ADD_ARTIFACT_ALIAS", collection, "v0", "staging", {}))
    reg._prepare(reg._body("ADD_ARTIFACT_ALIAS", collection, "v0", "production", {}))
    aliases = tmp_path / "registry" / collection / "aliases.json"
    aliases.write_text(json.dumps({**json.loads(aliases.read_text()), "staging": "v0"}))
    assert happened is not None

    assert reg.announce_pending() == 0
    assert list((tmp_path / "registry" / ".announcements").glob("*.prepared")) == []
    wait_until(lambda: ("wandb.artifact.alias-added", "v0", "staging") in alias_events(receiver.api_url, collection),
               30, message="the staging announcement")
    assert ("wandb.artifact.alias-added", "v0", "production") not in alias_events(receiver.api_url, collection)


# ------------------------------------------------------------------------------ CLI


def test_cli_promote_list_show(tmp_path: Path, model_file: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("MODELOPS_HOME", str(tmp_path))
    monkeypatch.delenv("MODELOPS_RECEIVER_URL", raising=False)
    LocalRegistry().register("churn", model_file)
    LocalRegistry().register("churn", model_file)

    assert registry_cli(["promote", "churn:v0", "--alias", "production"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == "v0" and shown["aliases"] == ["production"]
    assert registry_cli(["list", "churn"]) == 0
    assert capsys.readouterr().out.splitlines() == ["churn:v0\tproduction\t", "churn:v1\tcandidate\t"]
    assert registry_cli(["show", "churn:production"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == "v0"

    assert registry_cli(["promote", "churn:v9", "--alias", "production"]) == 2
    assert "churn:v9 is not in the registry" in capsys.readouterr().err
    assert registry_cli(["promote", "churn", "--alias", "production"]) == 2
    assert LocalRegistry().get("churn", "production").version == "v0"

"""`python -m blocks.setup` against the session Prefect server: what it saves, what it reports, what it hides.

Every test saves under its own uuid name, so runs on the shared server never collide.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from blocks.setup import ConfigError, Redactor, build_plan, load_config, main

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "ghp_setupTestToken0123456789abcdefABCDEF"
WANDB_KEY = "wandb-setup-test-key-0123456789abcdef0123"
PROJECT = "modelops-setup-test"
SA_EMAIL = f"trainer@{PROJECT}.iam.gserviceaccount.com"
LOCAL_SLUGS = ["local-issue-store", "local-trainer", "local-model-registry", "local-endpoint", "rollout-policy"]
PRODUCTION_SLUGS = ["github-repository", "wandb-credentials", "wandb-model-registry", "gcp-credentials",
                    "vertex-ai-trainer", "vertex-ai-endpoint", "rollout-policy"]
ALL_SLUGS = sorted(set(LOCAL_SLUGS + PRODUCTION_SLUGS))


# ------------------------------------------------------------------------------------ helpers


@pytest.fixture(scope="module")
def private_key_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@pytest.fixture()
def key_file(tmp_path: Path, private_key_pem: str) -> Path:
    path = tmp_path / "service-account.json"
    path.write_text(json.dumps({
        "type": "service_account", "project_id": PROJECT, "private_key_id": "0123456789abcdef",
        "private_key": private_key_pem, "client_email": SA_EMAIL, "client_id": "1234567890",
        "token_uri": "https://oauth2.googleapis.com/token",
    }))
    return path


@pytest.fixture()
def env(key_file: Path) -> dict[str, str]:
    """The production environment: fake GitHub token, fake W&B key, a generated service-account key."""
    return {"GITHUB_TOKEN": TOKEN, "GITHUB_REPOSITORY": "acme/models", "WANDB_API_KEY": WANDB_KEY,
            "WANDB_ENTITY": "acme", "GOOGLE_APPLICATION_CREDENTIALS": str(key_file)}


def production_config(**policy: Any) -> dict[str, Any]:
    return {
        "github": {"token": "${GITHUB_TOKEN}", "base_url": "https://ghe.example.com/api/v3"},
        "wandb": {"project": "churn", "registry": {"registry": "model"}},
        "vertex": {
            "trainer": {"staging_bucket": "gs://acme-ml", "container_image_uri": "us-docker.pkg.dev/acme/train:1",
                        "labels": {"team": "ml"}},
            "endpoint": {"endpoint": "1234567890", "location": "europe-west4", "max_replica_count": 2},
        },
        "policy": {"steps": [5, 50, 100], "bake_seconds": 60, **policy},
    }


def write(tmp_path: Path, doc: Any, name: str = "setup.yaml") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(doc) if name.endswith(".json") else yaml.safe_dump(doc))
    return str(path)


def run(*argv: str, environ: dict[str, str] | None = None) -> tuple[int, str, str]:
    """`python -m blocks.setup ARGV` in this process (it reports to the session server)."""
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), environ=environ or {}, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def statuses(stdout: str, name: str) -> dict[str, str]:
    """{block type slug: status} from the printed table."""
    rows = [line.split() for line in stdout.splitlines() if len(line.split()) >= 3 and line.split()[1] == name]
    return {row[0]: row[2] for row in rows}


def exports(stdout: str) -> dict[str, str]:
    return dict(line.removeprefix("export ").split("=", 1) for line in stdout.splitlines()
                if line.startswith("export "))


def saved(api: str, name: str) -> list[str]:
    """The block types that have a document named `name` on the server."""
    found = []
    for slug in ALL_SLUGS:
        r = httpx.get(f"{api}/block_types/slug/{slug}/block_documents/name/{name}", timeout=10)
        assert r.status_code in (200, 404), r.text
        if r.status_code == 200:
            found.append(slug)
    return found


def document(api: str, slug: str, name: str) -> dict[str, Any]:
    r = httpx.get(f"{api}/block_types/slug/{slug}/block_documents/name/{name}", timeout=10)
    r.raise_for_status()
    return r.json()


def assert_no_secret(texts: list[str], pem: str) -> None:
    secrets = {"GitHub token": TOKEN, "W&B API key": WANDB_KEY}
    secrets |= {f"private key line {i}": line for i, line in enumerate(pem.splitlines()[1:-1])}
    for what, value in secrets.items():
        for text in texts:
            assert value not in text, f"the {what} leaked into: {text[:300]}"


# ------------------------------------------------------------------------------------ local


def test_the_command_line_defaults_to_local_when_nothing_production_is_configured() -> None:
    environ = {k: v for k, v in os.environ.items() if k not in (
        "GITHUB_TOKEN", "WANDB_API_KEY", "GOOGLE_APPLICATION_CREDENTIALS")}
    proc = subprocess.run([sys.executable, "-m", "blocks.setup", "--dry-run", "--name", "cli"], cwd=ROOT,
                          env={**environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("mode: local (nothing production is configured)"), proc.stdout
    assert statuses(proc.stdout, "cli") == dict.fromkeys(LOCAL_SLUGS, "would"), proc.stdout


def test_local_creates_the_local_blocks_and_the_exports_name_them(prefect_api: str, monkeypatch) -> None:
    name = f"local-{uuid.uuid4().hex[:10]}"
    code, out, err = run("--local", "--name", name)
    assert code == 0, err
    assert statuses(out, name) == dict.fromkeys(LOCAL_SLUGS, "created"), out

    # every block type of the project is in the UI's catalog, the GCP credentials included
    catalog = {t["slug"] for t in httpx.post(f"{prefect_api}/block_types/filter", json={}, timeout=10).json()}
    assert set(ALL_SLUGS) <= catalog, f"missing from the block catalog: {set(ALL_SLUGS) - catalog}"

    from prefect.blocks.core import Block

    from blocks.local import LocalIssueStore, LocalTrainer
    from blocks.local_endpoint import LocalEndpoint
    from blocks.policy import RolloutPolicy
    from blocks.registry import LocalRegistry

    for slug, cls in zip(LOCAL_SLUGS, [LocalIssueStore, LocalTrainer, LocalRegistry, LocalEndpoint, RolloutPolicy]):
        assert isinstance(Block.load(f"{slug}/{name}"), cls)
        loaded, default = cls.load(name), cls()
        assert [getattr(loaded, f) for f in cls.model_fields] == [getattr(default, f) for f in cls.model_fields], \
            f"{slug}/{name} should hold the defaults"
    assert LocalRegistry.load(name).registry == "model"

    # the printed exports are what the flows resolve
    printed = exports(out)
    assert printed == {"MODELOPS_TRAINER_BLOCK": f"local-trainer/{name}",
                       "MODELOPS_REGISTRY_BLOCK": f"local-model-registry/{name}",
                       "MODELOPS_ENDPOINT_BLOCK": f"local-endpoint/{name}"}, out
    assert f"policy_block=rollout-policy/{name}" in out
    from flows.canary import resolve_endpoint, resolve_policy
    from flows.retrain import resolve_registry, resolve_trainer

    for var, value in printed.items():
        monkeypatch.setenv(var, value)
    assert isinstance(resolve_trainer(None), LocalTrainer)
    assert isinstance(resolve_registry(None), LocalRegistry)
    assert isinstance(resolve_endpoint(None), LocalEndpoint)
    assert resolve_policy(f"rollout-policy/{name}", {}).steps == (10, 30, 50, 100)


def test_dry_run_validates_and_saves_nothing_without_calling_the_api(prefect_api: str, tmp_path: Path,
                                                                     env: dict[str, str]) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    name = f"dry-{uuid.uuid4().hex[:10]}"
    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):  # nothing listens there
        code, out, err = run("--local", "--dry-run", "--name", name)
        assert code == 0, err
        assert statuses(out, name) == dict.fromkeys(LOCAL_SLUGS, "would"), out
        code, out, err = run("--production", "--config", write(tmp_path, production_config()), "--dry-run",
                             "--name", name, environ=env)
        assert code == 0, err
        assert statuses(out, name) == dict.fromkeys(PRODUCTION_SLUGS, "would"), out
    assert f"MODELOPS_TRAINER_BLOCK=vertex-ai-trainer/{name}" in out
    assert saved(prefect_api, name) == [], "a dry run must not save anything"


# ------------------------------------------------------------------------------------ production


def test_production_from_env_and_yaml_saves_blocks_that_reference_their_credentials(
        prefect_api: str, tmp_path: Path, env: dict[str, str], private_key_pem: str, capfd) -> None:
    name = f"prod-{uuid.uuid4().hex[:10]}"
    config = write(tmp_path, production_config())
    code, out, err = run("--production", "--config", config, "--name", name, environ=env)
    assert code == 0, err
    assert statuses(out, name) == dict.fromkeys(PRODUCTION_SLUGS, "created"), out

    from blocks.github import GitHubRepository
    from blocks.policy import RolloutPolicy
    from blocks.registry import WandbRegistry
    from blocks.vertex import VertexAITrainer
    from blocks.vertex_endpoint import VertexAIEndpoint
    from blocks.wandb import WandbCredentials

    github = GitHubRepository.load(name)
    assert (github.token.get_secret_value(), github.repository, github.base_url) == (
        TOKEN, "acme/models", "https://ghe.example.com/api/v3"), "config overrides the environment, ${VAR} expands"
    wandb = WandbCredentials.load(name)
    assert (wandb.api_key.get_secret_value(), wandb.entity, wandb.project) == (WANDB_KEY, "acme", "churn")
    registry = WandbRegistry.load(name)
    assert registry.org == "acme", "the registry's org defaults to WANDB_ENTITY"
    assert registry.credentials.api_key.get_secret_value() == WANDB_KEY

    # loading the trainer gives its credentials: they are a reference to the saved gcp-credentials block
    trainer = VertexAITrainer.load(name)
    assert trainer.gcp_credentials.service_account_info.get_secret_value()["private_key"] == private_key_pem
    assert trainer.gcp_credentials.project == PROJECT and trainer.labels == {"team": "ml"}
    endpoint = VertexAIEndpoint.load(name)
    assert (endpoint.endpoint, endpoint.location, endpoint.max_replica_count) == ("1234567890", "europe-west4", 2)
    gcp_id = document(prefect_api, "gcp-credentials", name)["id"]
    for slug, field in (("vertex-ai-trainer", "gcp_credentials"), ("vertex-ai-endpoint", "gcp_credentials"),
                        ("wandb-model-registry", "credentials")):
        ref = document(prefect_api, slug, name)["block_document_references"][field]["block_document"]
        assert not ref["is_anonymous"] and ref["name"] == name, f"{slug}.{field} must reference the named block"
    assert document(prefect_api, "vertex-ai-trainer", name)["block_document_references"]["gcp_credentials"][
        "block_document"]["id"] == gcp_id
    assert RolloutPolicy.load(name).steps == [5, 50, 100]

    # the exports name what the flows load
    from flows.retrain import resolve_registry, resolve_trainer

    printed = exports(out)
    assert printed["MODELOPS_GITHUB_BLOCK"] == name
    assert isinstance(resolve_trainer(printed["MODELOPS_TRAINER_BLOCK"]), VertexAITrainer)
    assert isinstance(resolve_registry(printed["MODELOPS_REGISTRY_BLOCK"]), WandbRegistry)
    assert printed["MODELOPS_ENDPOINT_BLOCK"] == f"vertex-ai-endpoint/{name}"
    assert f"wandb_block={name}" in out and f"policy_block=rollout-policy/{name}" in out

    stray = capfd.readouterr()
    assert_no_secret([out, err, stray.out, stray.err, repr(github), repr(wandb), repr(registry), repr(trainer),
                      repr(endpoint), str(trainer), repr(build_plan("production", load_config(config, env),
                                                                    name, env))], private_key_pem)
    assert "***" in out, "that a secret is set is shown as ***"


def test_running_again_reports_unchanged_or_exists_and_overwrite_updates(
        prefect_api: str, tmp_path: Path, env: dict[str, str]) -> None:
    name = f"again-{uuid.uuid4().hex[:10]}"
    config = write(tmp_path, production_config(), "setup.json")  # JSON works as well as YAML
    assert run("--config", config, "--name", name, environ=env)[0] == 0  # --config implies --production

    code, out, err = run("--config", config, "--name", name, environ=env)
    assert code == 0, err
    assert statuses(out, name) == dict.fromkeys(PRODUCTION_SLUGS, "unchanged"), out

    # a changed policy is left as is without --overwrite ...
    changed = write(tmp_path, production_config(bake_seconds=30), "changed.yaml")
    code, out, err = run("--config", changed, "--name", name, environ=env)
    assert code == 0, err
    assert statuses(out, name) == {**dict.fromkeys(PRODUCTION_SLUGS, "unchanged"), "rollout-policy": "exists"}, out
    assert "--overwrite" in out

    from blocks.policy import RolloutPolicy
    from blocks.vertex import VertexAITrainer

    assert RolloutPolicy.load(name).bake_seconds == 60

    # ... and replaced with it; a rotated W&B key updates the credentials block, and the registry,
    # which references that block, stays unchanged yet gives the new key
    rotated = {**env, "WANDB_API_KEY": "wandb-rotated-key-0123456789abcdef0123456"}
    code, out, err = run("--config", changed, "--name", name, "--overwrite", environ=rotated)
    assert code == 0, err
    assert statuses(out, name) == {**dict.fromkeys(PRODUCTION_SLUGS, "unchanged"), "rollout-policy": "updated",
                                   "wandb-credentials": "updated"}, out
    assert RolloutPolicy.load(name).bake_seconds == 30
    from blocks.registry import WandbRegistry

    assert WandbRegistry.load(name).credentials.api_key.get_secret_value() == rotated["WANDB_API_KEY"]
    assert VertexAITrainer.load(name).gcp_credentials.project == PROJECT
    assert rotated["WANDB_API_KEY"] not in out + err


def test_only_what_is_configured_is_created(prefect_api: str) -> None:
    name = f"partial-{uuid.uuid4().hex[:10]}"
    code, out, err = run("--name", name, environ={"GITHUB_TOKEN": TOKEN, "GITHUB_REPOSITORY": "acme/models"})
    assert code == 0, err
    assert out.startswith("mode: production (GITHUB_TOKEN and GITHUB_REPOSITORY are set)"), out
    assert statuses(out, name) == {
        "github-repository": "created", "wandb-credentials": "skipped", "wandb-model-registry": "skipped",
        "gcp-credentials": "skipped", "vertex-ai-trainer": "skipped", "vertex-ai-endpoint": "skipped",
        "rollout-policy": "created"}, out
    assert "set WANDB_API_KEY" in out and "set GOOGLE_APPLICATION_CREDENTIALS" in out
    assert sorted(saved(prefect_api, name)) == ["github-repository", "rollout-policy"]
    assert "MODELOPS_TRAINER_BLOCK" not in out, "no export for a block that was not saved"


# ------------------------------------------------------------------------------------ failures


@pytest.mark.parametrize(("change", "needles"), [
    ({"github": {"tokn": "x"}}, ["github.tokn", "did you mean token"]),
    ({"slack": {"url": "x"}}, ["unknown section slack"]),
    ({"policy": {"steps": [10, 5]}}, ["rollout-policy [policy]", "steps must be strictly increasing"]),
    ({"policy": {"steps": [10, 50]}}, ["rollout-policy [policy]", "steps"]),
    ({"github": {"base_url": "ftp://ghe.example.com"}}, ["github-repository [github.base_url]", "http(s) URL"]),
    ({"wandb": {"base_url": "not a url"}}, ["wandb-credentials [wandb.base_url]"]),
    ({"vertex": {"trainer": {"staging_bucket": "s3://x", "container_image_uri": "i"}}},
     ["vertex-ai-trainer [vertex.trainer.staging_bucket]", "gs://"]),
    ({"github": {"repository": "${GITHUB_TOKEN}"}}, ["github-repository [github.repository]"]),
    ({"github": {"token": "${NOT_SET_ANYWHERE}"}}, ["github.token references ${NOT_SET_ANYWHERE}"]),
])
def test_a_bad_config_exits_2_names_the_problem_and_saves_nothing(
        prefect_api: str, tmp_path: Path, env: dict[str, str], private_key_pem: str, change: dict,
        needles: list[str], capfd) -> None:
    name = f"bad-{uuid.uuid4().hex[:10]}"
    doc = production_config()
    for section, values in change.items():
        doc[section] = {**doc.get(section, {}), **values}
    config = write(tmp_path, doc)
    code, out, err = run("--production", "--config", config, "--name", name, environ=env)
    assert code == 2, (out, err)
    for needle in needles:
        assert needle in err, f"{needle!r} not in: {err}"
    assert saved(prefect_api, name) == [], "every block is validated before the first is saved"

    # the error says nothing secret, even when the token was put in the wrong field
    with pytest.raises(ConfigError) as caught:
        build_plan("production", load_config(config, env), name, env)
    stray = capfd.readouterr()
    assert_no_secret([out, err, stray.out, stray.err, str(caught.value), repr(caught.value)], private_key_pem)


def test_an_unreadable_key_or_a_broken_file_is_a_config_error(tmp_path: Path, env: dict[str, str],
                                                              private_key_pem: str) -> None:
    name = f"broken-{uuid.uuid4().hex[:10]}"
    user_creds = tmp_path / "adc.json"
    user_creds.write_text(json.dumps({"type": "authorized_user", "refresh_token": TOKEN}))
    code, out, err = run("--name", name, "--dry-run",
                         environ={**env, "GOOGLE_APPLICATION_CREDENTIALS": str(user_creds)})
    assert code == 2 and "not a service-account key" in err, err

    broken = tmp_path / "broken.yaml"
    broken.write_text(f"github:\n  token: {TOKEN}\n  repository: [acme/models\n")
    code, out, err = run("--config", str(broken), "--name", name, environ=env)
    assert code == 2 and "not valid YAML" in err and "line" in err, err

    code, out, err = run("--local", "--config", str(broken), environ=env)
    assert code == 2 and "--production" in err, err
    code, out, err = run("--local", "--name", "Not_Valid", environ=env)
    assert code == 2 and "not a valid block name" in err, err
    assert_no_secret([out, err], private_key_pem)


def test_an_unreachable_server_fails_without_a_traceback_or_a_secret(tmp_path: Path, env: dict[str, str],
                                                                     private_key_pem: str, capfd) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:9/api"}):
        code, out, err = run("--config", write(tmp_path, production_config()), environ=env)
    assert code == 1, (out, err)
    assert err.startswith("error: could not register the block types with http://127.0.0.1:9/api"), err
    assert "Traceback" not in err
    stray = capfd.readouterr()
    assert_no_secret([out, err, stray.out, stray.err], private_key_pem)


def test_the_redactor_hides_every_form_of_a_secret(private_key_pem: str) -> None:
    redact = Redactor()
    redact.add(TOKEN)
    redact.add({"private_key": private_key_pem, "client_email": SA_EMAIL})
    text = f"{TOKEN} {json.dumps(private_key_pem)} {private_key_pem.splitlines()[3]} {SA_EMAIL}"
    assert redact(text).count("***") == 3 and SA_EMAIL in redact(text), "only the secrets are hidden"
    assert TOKEN not in repr(redact)

"""One exit-code table for every CLI (README, *Exit codes*): 0 done as asked, 2 bad input or
configuration, 3 refused by a decision, 1 anything else; errors are one line naming the input.

Each CLI is run as a user runs it (`python -m ...`, a subprocess). Codes tested elsewhere:
retrain 0/2/3 (`test_retrain.py`: gate refusal, data contract, bad options), review-issue 0/2
(`test_review_issue.py`), blocks.setup 1/2 (`test_blocks_setup.py`), wandb_automations 0/1/2
(`test_wandb_automations.py`, `test_wandb_sdk.py`), registry 2 for a refused W&B key
(`test_wandb_sdk.py`), canary 0 (`test_canary.py`).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from deployments.stack import ROOT, Stack
from deployments.traffic import Traffic
from tests.test_drift_check import write_pair
from training.tabular import fit, make_dataset, save_model, split

CLIS = ("flows.retrain", "flows.drift", "flows.canary", "flows.registry", "flows.review_issue", "blocks.setup",
        "deployments.wandb_automations")


def run(module: str, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env or dict(os.environ),
                          capture_output=True, text=True, timeout=timeout)


def last_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines, f"exit {proc.returncode} without a word on stderr"
    return lines[-1]


def test_the_readme_table_names_every_cli_and_every_code() -> None:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `python -m ([\w.]+)` \|(.*)\|$", section, flags=re.M)
    assert sorted(m for m, _ in rows) == sorted(CLIS)
    for module, cells in rows:
        assert len(cells.split("|")) == 4, f"{module}: one cell per code 0, 2, 3, 1"
    for code in ("| 0 |", "| 2 |", "| 3 |", "| 1 |"):
        assert code in section


@pytest.fixture()
def env(tmp_path: Path, prefect_api: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "GITHUB_", "MODELOPS_"))}
    out.update(MODELOPS_HOME=str(tmp_path / "home"), PREFECT_API_URL=prefect_api, PYTHONPATH=str(ROOT))
    return out


BAD_INPUT = [
    ("flows.retrain", ["--dataset", "x.parquet", "--params", "{model: 1}"], "--params is not valid JSON"),
    ("flows.retrain", ["--dataset", "x.parquet", "--floor", "accuracy"], "argument --floor"),
    ("flows.retrain", ["--dataset", "{tmp}/missing.parquet"], "table file not found"),
    ("flows.drift", ["--reference", "a.csv", "--current", "b.csv", "--alpha", "2"], "alpha must be"),
    ("flows.drift", ["--reference", "{tmp}/a.csv", "--current", "{tmp}/b.csv", "--no-wandb"], "not found"),
    ("flows.canary", ["--model", "churn:v1", "--steps", "10,abc"], "steps must be integer percents"),
    ("flows.canary", ["--model", "churn", "--steps", "10,30"], "model reference 'churn' must look like"),
    ("flows.canary", ["--model", "churn:v1", "--bake", "soon"], "cannot read 'soon' as a duration"),
    ("flows.registry", ["promote", "churn-model:v9"], "churn-model has no versions"),
    ("flows.registry", ["show", "churn-model"], "must look like <collection>:<version or alias>"),
    ("flows.review_issue", ["--entity", "acme", "--collection", "churn"], "required: --version"),
    ("blocks.setup", ["--production", "--config", "{tmp}/missing.yaml"], "cannot read config file"),
    ("deployments.wandb_automations", ["--webhook", "x"], "--entity is required"),
]


@pytest.mark.parametrize(("module", "args", "needle"), BAD_INPUT, ids=[f"{m}:{n}" for m, _, n in BAD_INPUT])
def test_bad_input_exits_2_with_one_line_naming_it(module: str, args: list[str], needle: str, env: dict[str, str],
                                                   tmp_path: Path) -> None:
    proc = run(module, *[a.replace("{tmp}", str(tmp_path)) for a in args], env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert needle in last_line(proc), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr + proc.stdout


def test_drift_exits_0_with_or_without_drift_and_3_when_told_to_fail_on_it(env: dict[str, str],
                                                                            tmp_path: Path) -> None:
    ref, same = write_pair(tmp_path, shift=0.0)
    _, moved = write_pair(tmp_path, shift=0.8)
    assert run("flows.drift", "--reference", ref, "--current", same, "--no-wandb", "--fail-on-drift",
               env=env).returncode == 0
    reported = run("flows.drift", "--reference", ref, "--current", moved, "--no-wandb", env=env)
    assert reported.returncode == 0 and "drift DETECTED" in reported.stdout, reported.stderr[-2000:]
    refused = run("flows.drift", "--reference", ref, "--current", moved, "--no-wandb", "--fail-on-drift", env=env)
    assert refused.returncode == 3, refused.stderr[-2000:]
    assert "drift detected in" in last_line(refused) and "age" in last_line(refused)


def test_registry_exits_0_when_done_and_1_while_announcements_are_still_queued(
        env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from blocks.registry import LocalRegistry

    model = tmp_path / "model.joblib"
    model.write_bytes(b"not a model, a file to register")
    monkeypatch.setenv("MODELOPS_HOME", env["MODELOPS_HOME"])
    monkeypatch.delenv("MODELOPS_RECEIVER_URL", raising=False)
    LocalRegistry().register("churn-x", model)
    closed = {**env, "MODELOPS_RECEIVER_URL": "http://127.0.0.1:9/hooks/wandb"}  # nobody listens on port 9
    promoted = run("flows.registry", "promote", "churn-x:v0", env=closed)
    assert promoted.returncode == 0, promoted.stderr[-2000:]
    assert "stays queued" in last_line(promoted), "the alias moved; the announcement waits, and it says so"
    queued = run("flows.registry", "announce", env=closed)
    assert queued.returncode == 1 and "still queued" in queued.stdout, queued.stdout + queued.stderr[-2000:]


# ---------------------------------------------------------------------------------------------- canary


@pytest.fixture()
def endpoint(tmp_path: Path, prefect_api: str):
    st = Stack(tmp_path / "stack", prefect_port=int(prefect_api.rsplit(":", 1)[1].split("/")[0]))
    st.start_endpoint("--seed", "11")
    try:
        yield st
    finally:
        st.stop()


def test_canary_exits_3_when_rolled_back_and_1_when_the_endpoint_fails(
        endpoint: Stack, env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from blocks.local_endpoint import LocalEndpoint
    from blocks.registry import LocalRegistry

    train, _ = split(make_dataset(1200, seed=1), "churned")
    model = str(save_model(fit(train, "churned", {}), tmp_path / "m"))
    ep = LocalEndpoint(url=endpoint.endpoint_url)
    coll = f"churn-{uuid.uuid4().hex[:6]}"
    stable = ep.deploy(model, f"{coll}:v0")
    ep.set_traffic({stable: 100})
    monkeypatch.setenv("MODELOPS_HOME", env["MODELOPS_HOME"])
    monkeypatch.delenv("MODELOPS_RECEIVER_URL", raising=False)
    registry = LocalRegistry()
    registry.register(coll, model)
    registry.register(coll, model, metadata={"demo_fault": {"error_rate": 0.6}})  # v1 fails 60% of requests
    args = ["--model", f"{coll}:v1", "--endpoint", endpoint.endpoint_url, "--steps", "50,100", "--bake", "3s",
            "--final-bake", "1s", "--min-requests", "20"]
    with Traffic(endpoint.endpoint_url, rps=40):
        rolled_back = run("flows.canary", *args, env=env)
    assert rolled_back.returncode == 3, rolled_back.stdout[-2000:] + rolled_back.stderr[-2000:]
    assert last_line(rolled_back).startswith("canary-rollout rolled-back: ")
    assert '"outcome": "rolled-back"' in rolled_back.stdout
    assert ep.traffic() == {stable: 100} and [m.id for m in ep.deployed()] == [stable]

    unreachable = run("flows.canary", "--model", f"{coll}:v1", "--endpoint", "http://127.0.0.1:9", "--steps",
                      "50,100", "--bake", "1s", env=env)
    assert unreachable.returncode == 1, unreachable.stderr[-2000:]
    assert "127.0.0.1:9" in last_line(unreachable) and "Traceback" not in last_line(unreachable)

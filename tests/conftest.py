"""One Prefect server per test session, on a free port picked at run time.

PREFECT_API_URL and PREFECT_HOME are set before any test module imports Prefect, so flows run in
this process report to the session server. The server itself starts on first use.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="modelops-tests-"))


def pytest_configure(config: pytest.Config) -> None:
    from deployments.stack import free_port

    port = free_port()
    os.environ["MODELOPS_TEST_PREFECT_PORT"] = str(port)
    os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
    os.environ["PREFECT_HOME"] = str(_SESSION_HOME / "prefect-client")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["PREFECT_LOGGING_TO_API_BATCH_INTERVAL"] = "0.5"
    os.environ["MODELOPS_HOME"] = str(_SESSION_HOME / "modelops")
    for name in ("GITHUB_TOKEN", "GITHUB_REPOSITORY", "GITHUB_API_URL", "WANDB_WEBHOOK_SECRET",
                 "WANDB_WEBHOOK_TOKEN", "MODELOPS_GITHUB_BLOCK"):
        os.environ.pop(name, None)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_SESSION_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def prefect_stack() -> Iterator[Any]:
    """The session's Prefect server (SQLite, or PostgreSQL when MODELOPS_TEST_DATABASE_URL is set)."""
    from deployments.stack import Stack

    stack = Stack(
        _SESSION_HOME / "stack",
        prefect_port=int(os.environ["MODELOPS_TEST_PREFECT_PORT"]),
        database_url=os.environ.get("MODELOPS_TEST_DATABASE_URL") or None,
        ui=True,  # tests/test_ui_browser.py drives the UI in Chromium
    )
    stack.start_prefect()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def prefect_api(prefect_stack: Any) -> str:
    return prefect_stack.api_url


@pytest.fixture
def proxy(prefect_stack: Any) -> Iterator[Any]:
    """A TCP proxy in front of the session's Prefect server: `down()` cuts it off, `up()` restores it."""
    from tests.fakes.tcp_proxy import TcpProxy

    p = TcpProxy(prefect_stack.prefect_port)
    yield p
    p.close()


@pytest.fixture(scope="session")
def churn_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Two real churn models (trained on the demo data, seeds 1 and 2) as files: v1, v2."""
    from training.tabular import fit, make_dataset, save_model, split

    out = {}
    for name, seed in (("v1", 1), ("v2", 2)):
        train, _ = split(make_dataset(1200, seed=seed), "churned")
        out[name] = str(save_model(fit(train, "churned", {}), tmp_path_factory.mktemp(f"churn-{name}")))
    return out


@pytest.fixture()
def local_endpoint(tmp_path: Path, prefect_stack: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    """A local model endpoint of its own (and MODELOPS_HOME, the local registry and issue store, in the
    test's directory): (its Stack, a LocalEndpoint client)."""
    from blocks.local_endpoint import LocalEndpoint
    from deployments.stack import Stack

    monkeypatch.setenv("MODELOPS_HOME", str(tmp_path / "home"))
    for name in ("MODELOPS_RECEIVER_URL", "MODELOPS_REGISTRY_BLOCK", "MODELOPS_GITHUB_BLOCK"):
        monkeypatch.delenv(name, raising=False)
    st = Stack(tmp_path / "stack", prefect_port=prefect_stack.prefect_port)
    st.start_endpoint("--seed", "5")
    try:
        yield st, LocalEndpoint(url=st.endpoint_url)
    finally:
        st.stop()

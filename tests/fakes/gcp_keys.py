"""What the Vertex AI block tests share: a service-account key the fake server trusts, the checks that
no key or token is ever shown, and the check that a block module imports without aiplatform.

The fixtures are imported by the test modules that use them (`from tests.fakes.gcp_keys import
rsa_key, sa_info`); `sa_info` needs a `fake` fixture there, a started `FakeGcp` (or subclass).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fakes.gcp_api import FakeGcp, new_rsa_key

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "modelops-test"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    """One key per test module: making a 2048-bit key takes ~0.1 s."""
    return new_rsa_key()


@pytest.fixture
def sa_info(fake: FakeGcp, rsa_key: rsa.RSAPrivateKey) -> dict[str, str]:
    """Service-account key JSON for PROJECT, trusted by `fake` (its token_uri is `fake`'s)."""
    return fake.new_service_account(PROJECT, key=rsa_key)


def everything_printed(exc: BaseException) -> str:
    """What a log line or a Prefect state message could show: str, repr and the chained traceback."""
    return "\n".join([str(exc), repr(exc), *traceback.format_exception(exc)])


def assert_no_secrets(text: str, sa_info: dict[str, str], fake: FakeGcp) -> None:
    assert sa_info["private_key"].splitlines()[1] not in text, "the service-account key must never be shown"
    assert sa_info["private_key_id"] not in text
    for token in fake.tokens:
        assert token not in text, "an access token must never be shown"
    assert "eyJ" not in text, "nor a self-signed JWT"


# -- import cost ------------------------------------------------------------------------------------

# prefect_gcp itself imports google.cloud.aiplatform when it is importable (its package imports its
# Vertex AI worker, and credentials.py tries `google.cloud.aiplatform.gapic`), so the check makes
# aiplatform unimportable, as prefect-gcp installed without its aiplatform extra would see it: the
# block module must still import, and must not have imported aiplatform on its own.
_IMPORT_CHECK = textwrap.dedent(
    """
    import importlib.abc, sys

    class NoAiplatform(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[:3] == ["google", "cloud", "aiplatform"] or name.startswith("google.cloud.aiplatform_"):
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, NoAiplatform())
    import {module}
    loaded = sorted(m for m in sys.modules if "aiplatform" in m or m.startswith({also_absent!r}))
    assert not loaded, loaded
    assert {module}.{block}.get_block_type_slug() == {slug!r}
    print("ok")
    """
)


def import_check_fixture(module: str, block: str, slug: str, *, also_absent: tuple[str, ...] = ()) -> Any:
    """A module-scoped autouse fixture `import_check`: a fresh interpreter that imports `module` with
    aiplatform unimportable, checks that no module named like aiplatform (or starting with one of
    `also_absent`) got loaded and that `module.block` has the block type slug `slug`.

    It starts with the test module's first test so that its ~5 s of imports overlap the HTTP tests;
    a test collects it with `assert_import_check_passed`.
    """
    script = _IMPORT_CHECK.format(module=module, block=block, slug=slug, also_absent=also_absent)

    @pytest.fixture(scope="module", autouse=True)
    def import_check() -> Iterator[subprocess.Popen[str]]:
        process = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        yield process
        if process.poll() is None:
            process.kill()
            process.communicate()

    return import_check


def assert_import_check_passed(process: subprocess.Popen[str]) -> None:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0 and out.strip() == "ok", out + err

"""What the flows' command lines share."""

from __future__ import annotations

import os


def prepare_prefect_env() -> None:
    """Ad hoc runs without PREFECT_API_URL start Prefect's temporary local server: give it the time
    it needs on a small machine (Prefect's default is 20 s) and keep it from calling home."""
    if not os.environ.get("PREFECT_API_URL"):
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

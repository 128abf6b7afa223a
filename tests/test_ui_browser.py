"""The Prefect UI in a real browser (Playwright driving Debian's Chromium) against the session's
Prefect server: an approval answered through the Resume form itself, outcome state names in the
runs list, a canary's figures rendered inside its artifact, the status board naming the serving
version. Screenshots of each page are kept in the test's directory."""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from deployments.screenshots import artifact_id, browser, images_loaded
from deployments.traffic import Traffic
from flows.outcomes import run_flow
from tests.helpers import flow_runs, wait_until

LENIENT = "rollout-policy/ui-browser-latency-lenient"
FAST = dict(steps=[50, 100], bake=2.0, final_bake=1.0, min_requests=20, policy_block=LENIENT)


@pytest.fixture(scope="module", autouse=True)
def lenient_policy(prefect_api: str) -> None:
    from blocks.policy import RolloutPolicy

    RolloutPolicy(min_latency_increase=1.0).save(LENIENT.split("/", 1)[1], overwrite=True)


def test_the_operator_answers_in_the_resume_form_and_sees_outcomes_figures_and_the_board(
        local_endpoint, churn_models, prefect_stack: Any, tmp_path: Path) -> None:
    from blocks.registry import LocalRegistry
    from flows.canary import canary_rollout

    st, ep = local_endpoint
    models = churn_models
    ui, api = prefect_stack.ui_url, prefect_stack.api_url
    coll = f"churn-{uuid.uuid4().hex[:6]}"
    registry = LocalRegistry()
    registry.register(coll, models["v1"], aliases=["production"])
    registry.register(coll, models["v2"], metadata={"reason": "drift in age"}, aliases=["candidate"])
    registry.register(coll, models["v2"], metadata={"demo_fault": {"error_rate": 0.5}})
    stable = ep.deploy(models["v1"], f"{coll}:v0")
    ep.set_traffic({stable: 100})
    # MODELOPS_SCREENSHOTS=docs/screenshots keeps them for the README (the Resume form is only here)
    shots = Path(os.environ.get("MODELOPS_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)

    # 1. a rollout waiting for approval, answered "no" in the Resume form
    outcome: dict[str, Any] = {}
    waiting = threading.Thread(target=lambda: outcome.update(result=run_flow(
        canary_rollout, collection=coll, version="v1", endpoint_block=st.endpoint_url, require_approval=True,
        approval_timeout=240, promoted_by="ada", **FAST)), daemon=True)
    waiting.start()
    (paused,) = wait_until(lambda: [r for r in flow_runs(api, flow_name="canary-rollout")
                                    if r["name"] == f"canary-{coll}-v1" and r["state_type"] == "PAUSED"], 120,
                           message="the rollout paused for approval")
    with browser() as page:
        page.goto(f"{ui}/runs/flow-run/{paused['id']}")
        page.get_by_role("button", name="Resume").click()
        form = page.get_by_role("dialog")
        form.get_by_text("promoted by:").wait_for()
        assert "ada" in form.inner_text() and "drift in age" in form.inner_text(), "the evidence is in the form"
        switch = form.get_by_role("switch")
        assert switch.get_attribute("aria-checked") == "true"
        switch.click()
        assert switch.get_attribute("aria-checked") == "false"
        form.locator("textarea").fill("latency budget is spent this week")
        page.screenshot(path=str(shots / "resume-form.png"))
        form.get_by_role("button", name="Submit").click()

        def answered() -> bool:  # the browser stays open until the UI's resume call has reached the server
            return httpx.get(f"{api}/flow_runs/{paused['id']}", timeout=10).json()["state_type"] != "PAUSED"

        try:
            wait_until(answered, 90, message="the run resumed by the form's Submit")
        finally:
            page.screenshot(path=str(shots / "after-submit.png"))
    waiting.join(120)
    assert outcome["result"]["outcome"] == "rejected", outcome
    assert outcome["result"]["comment"] == "latency budget is spent this week"
    assert ep.traffic() == {stable: 100}

    # 2. a faulty version rolled back (flows run outside the browser's block: Playwright's sync API
    # owns the thread's event loop while it is open)
    with Traffic(st.endpoint_url, rps=50):
        rolled = run_flow(canary_rollout, collection=coll, version="v2", endpoint_block=st.endpoint_url, **FAST)
    assert rolled["outcome"] == "rolled-back", rolled

    with browser() as page:
        # 3. the runs list shows the outcomes by name
        page.goto(f"{ui}/runs")
        page.get_by_text(f"canary-{coll}-v2").first.wait_for()
        listed = page.locator("body").inner_text()
        assert "RolledBack" in listed and "Rejected" in listed, "outcome state names in the runs list"
        page.screenshot(path=str(shots / "runs.png"))

        # 4. the canary's report renders its figure
        page.goto(f"{ui}/artifacts/artifact/{artifact_id(api, f'canary-{coll}-v2-report')}")
        page.get_by_text("Canary of").first.wait_for()
        images = images_loaded(page)
        assert images and all(i["width"] > 0 and i["height"] > 0 for i in images), images
        assert all(i["src"].startswith("data:image/svg+xml") for i in images)
        page.screenshot(path=str(shots / "canary-report.png"), full_page=True)

        # 5. the status board names the serving version
        page.goto(f"{ui}/artifacts/artifact/{artifact_id(api, f'model-status-{coll}')}")
        page.get_by_text("where it stands").first.wait_for()
        board = page.locator("body").inner_text()
        assert f"{coll}:v0" in board and "RolledBack" in board, board[-2000:]
        page.screenshot(path=str(shots / "status-board.png"), full_page=True)
    run = [r for r in flow_runs(api, flow_name="canary-rollout") if r["name"] == f"canary-{coll}-v1"][-1]
    assert (run["state_type"], run["state_name"]) == ("FAILED", "Rejected")
    assert "latency budget is spent this week" in run["state"]["message"]

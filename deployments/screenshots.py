"""The Prefect UI in a real browser: Debian's Chromium driven by Playwright (PyPI), for the browser
tests and for `make demo KEEP=1 SCREENSHOTS=dir`, which writes the pages an operator looks at:

    python -m deployments.screenshots --ui http://127.0.0.1:4200 --out docs/screenshots

Playwright's own browser download is never used (it cannot be reached here and is not needed): the
browser is `chromium` from PATH (`apt-get install chromium`, done by `make browser`), started headless
with the flags a closed network needs (no background networking, no component updates).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1600, "height": 1000}


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise FileNotFoundError("chromium is not installed: run `make browser` (apt-get install chromium)")
    return found


@contextlib.contextmanager
def browser() -> Iterator[Any]:
    """A headless Chromium page at the operator's window size."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            page = b.new_page(viewport=VIEWPORT)
            page.set_default_timeout(60_000)
            yield page
        finally:
            b.close()


def images_loaded(page: Any, selector: str = "article img") -> list[dict[str, Any]]:
    """Every image under `selector` once the browser has decoded it: src kind and natural size."""
    page.wait_for_function(f"[...document.querySelectorAll({selector!r})].every(i => i.complete)")
    return page.eval_on_selector_all(selector, "els => els.map(i => ({src: i.src.slice(0, 30), "
                                               "width: i.naturalWidth, height: i.naturalHeight}))")


def artifact_id(api_url: str, key: str) -> str:
    found = httpx.post(f"{api_url}/artifacts/filter", json={"artifacts": {"key": {"any_": [key]}},
                                                            "sort": "CREATED_DESC", "limit": 1}, timeout=10).json()
    if not found:
        raise LookupError(f"no artifact with key {key!r}")
    return found[0]["id"]


def demo_pages(api_url: str) -> list[tuple[str, str]]:
    """The pages of the demo's story an operator opens: (file name, path in the UI)."""
    runs = httpx.post(f"{api_url}/flow_runs/filter", json={"sort": "START_TIME_DESC", "limit": 200},
                      timeout=10).json()
    pages = [("runs.png", "/runs")]
    rolled = [r for r in runs if r["state_name"] == "RolledBack"]
    if rolled:
        pages.append(("canary-rolled-back-run.png", f"/runs/flow-run/{rolled[0]['id']}"))
        version = rolled[0]["parameters"].get("version")
        collection = rolled[0]["parameters"].get("collection")
        with contextlib.suppress(LookupError):
            key = f"canary-{collection}-{version}-report".lower()
            pages.append(("canary-report.png", f"/artifacts/artifact/{artifact_id(api_url, key)}"))
        with contextlib.suppress(LookupError):
            pages.append(("status-board.png", f"/artifacts/artifact/{artifact_id(api_url, f'model-status-{collection}')}"))
    with contextlib.suppress(LookupError):
        pages.append(("drift-summary.png", f"/artifacts/artifact/{artifact_id(api_url, 'drift-summary')}"))
    return pages


def capture(ui_url: str, out: Path, pages: list[tuple[str, str]]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with browser() as page:
        for name, path in pages:
            page.goto(ui_url.rstrip("/") + path)
            page.wait_for_load_state("networkidle")
            with contextlib.suppress(Exception):
                images_loaded(page)
            page.screenshot(path=str(out / name), full_page=True)
            written.append(out / name)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deployments.screenshots", description=__doc__.split("\n\n")[0])
    p.add_argument("--ui", default="http://127.0.0.1:4200", help="the Prefect UI's address")
    p.add_argument("--out", required=True, help="directory for the PNG files")
    args = p.parse_args(argv)
    try:
        written = capture(args.ui, Path(args.out), demo_pages(args.ui.rstrip("/") + "/api"))
    except FileNotFoundError as exc:
        print(f"screenshots: {exc}", file=sys.stderr)
        return 2
    except httpx.HTTPError as exc:
        print(f"screenshots: the Prefect API at {args.ui} did not answer ({exc}); is the stack running "
              f"(make demo KEEP=1)?", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Regenerate the manual's admin screenshots from the running demo, light and dark.

    .venv/bin/python scripts/screenshots.py            # writes docs/img/admin-*.png

It starts the demo as ``make demo`` does (``python -m demo_app``: the web app and a
worker) on a fresh instance folder with demo time sped up, drives it through its own
pages (transfers, a gateway outage, documents, a canceled onboarding), waits for the
worker, then photographs the admin in Debian's Chromium at 1280 x 900, once with the
light theme and once with the dark one. The manual therefore never shows an old admin.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
#: The pages photographed: (file name, path under the admin, what must be on it).
PAGES = (
    ("admin-overview", "/", "#geneva-overview"),
    ("admin-list", "/classes/TransferWorkflow", "#geneva-rows-table"),
    ("admin-detail", "/workflows/{paused}", "svg.dag"),
    ("admin-document", "/workflows/{document}", "svg.dag"),
    ("admin-definitions", "/definitions", "section.definition"),
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"the demo did not answer at {url} within {timeout:.0f} s")


def post(page: Any, url: str, **form: str) -> None:
    response = page.request.post(url, form=form, max_redirects=0)
    if response.status not in (200, 302, 303):
        raise SystemExit(f"POST {url} answered {response.status}")


def workflow_ids(page: Any, admin: str, workflow_type: str, state: str) -> list[int]:
    """The ids of a class's workflows in ``state``, read from the admin's list page."""
    page.goto(f"{admin}/classes/{workflow_type}?state={state}")
    values = page.locator('input[name="ids"]').evaluate_all("boxes => boxes.map(b => b.value)")
    return [int(v) for v in values]


def until(page: Any, admin: str, workflow_type: str, state: str, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = workflow_ids(page, admin, workflow_type, state)
        if found:
            return found[0]
        time.sleep(0.5)
    raise SystemExit(f"no {workflow_type} became {state} within {timeout:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args(argv)
    if not os.path.exists(CHROMIUM):
        raise SystemExit(f"needs Chromium at {CHROMIUM} (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    port = free_port()
    with tempfile.TemporaryDirectory() as instance:
        env = dict(os.environ, DEMO_INSTANCE_PATH=instance, DEMO_TIME_SCALE="0.01")
        demo = subprocess.Popen(
            [sys.executable, "-m", "demo_app", "--port", str(port), "--workers", "4"],
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            admin = f"{base}/admin/workflows"
            wait_for(f"{base}/")
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                try:
                    page = browser.new_page()
                    for _ in range(6):
                        post(page, f"{base}/transfers")
                    post(page, f"{base}/switches/gateway_down")
                    post(page, f"{base}/transfers")
                    post(page, f"{base}/documents", filename="annual-report.pdf")
                    post(page, f"{base}/users")
                    paused = until(page, admin, "TransferWorkflow", "paused")
                    post(page, f"{base}/switches/gateway_down")
                    document = until(page, admin, "DocumentPipeline", "finished")
                    ids = {"paused": paused, "document": document}
                    shoot(browser, admin, ids, args.out)
                finally:
                    browser.close()
        finally:
            os.killpg(demo.pid, signal.SIGINT)
            demo.wait(20)
    return 0


def shoot(browser: Any, admin: str, ids: dict[str, int], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for theme in ("light", "dark"):
        page = browser.new_page(viewport={"width": 1280, "height": 900}, color_scheme=theme)
        for name, path, ready in PAGES:
            page.goto(admin + path.format(**ids))
            page.locator(ready).first.wait_for()
            suffix = "" if theme == "light" else "-dark"
            target = out / f"{name}{suffix}.png"
            page.screenshot(path=str(target), full_page=False)
            print(f"wrote {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}")
        page.close()


if __name__ == "__main__":
    raise SystemExit(main())

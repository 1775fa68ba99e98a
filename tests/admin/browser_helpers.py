"""What the browser tests share: Chromium, a page that watches the admin's policy, the
app served on a real port (with or without a real Huey worker), waiting for a state.

A test module imports the fixtures into its namespace (``from browser_helpers import
browser, watched, live``); ``live`` and ``served`` mount the blueprint of that module's
own ``geneva``, as the ``app`` fixture builds the app on its ``db``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextlib import nullcontext
from typing import Any

import pytest
from admin_helpers import PREFIX
from flask import Flask
from helpers import IN_CI
from helpers import Committed
from helpers import running_consumer
from helpers import wait_until
from werkzeug.serving import make_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]

#: Collects every Content-Security-Policy violation the page reports, from the first script.
CSP_LISTENER = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(`${e.violatedDirective} blocked ${e.blockedURI || "inline"}`);
});
"""


@pytest.fixture
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        if IN_CI:
            pytest.fail(f"CI=true requires Chromium at {CHROMIUM}")
        pytest.skip(f"no Chromium at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()


class Watched:
    """A page that records CSP violations: from the DOM event and from the console.

    It answers every ``confirm()`` with ``answer`` (OK unless a test sets it False) and
    keeps the dialogs' messages in ``dialogs``.
    """

    def __init__(self, browser: Any) -> None:
        self.page = browser.new_page()
        self.console: list[str] = []
        self.dialogs: list[str] = []
        self.answer = True
        self.page.add_init_script(CSP_LISTENER)
        self.page.on("console", self._console)
        self.page.on("dialog", self._dialog)

    def _console(self, message: Any) -> None:
        if message.type in ("error", "warning"):
            self.console.append(message.text)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        if self.answer:
            dialog.accept()
        else:
            dialog.dismiss()

    def violations(self) -> list[str]:
        reported = list(self.page.evaluate("window.__cspViolations || []"))
        return reported + [m for m in self.console if "Content Security Policy" in m]


@pytest.fixture
def watched(browser: Any) -> Iterator[Watched]:
    """A new page; the test fails if the admin's policy refused anything on it."""
    page = Watched(browser)
    yield page
    assert page.violations() == []


@contextmanager
def serving(app: Flask, geneva: Any, huey: Any = None) -> Iterator[str]:
    """Serve ``app`` with ``geneva``'s admin on 127.0.0.1; yield the admin's URL.

    With ``huey``, a real consumer runs the steps meanwhile (without it, nothing does).
    """
    app.register_blueprint(geneva.admin_blueprint, url_prefix=PREFIX)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with running_consumer(huey, workers=2) if huey is not None else nullcontext():
            yield f"http://127.0.0.1:{server.server_port}{PREFIX}"
    finally:
        server.shutdown()
        thread.join(5)


@pytest.fixture
def live(app: Flask, huey: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """Serve the app on 127.0.0.1 with a real Huey consumer running steps."""
    with serving(app, request.module.geneva, huey) as url:
        yield url


@pytest.fixture
def served(app: Flask, request: pytest.FixtureRequest) -> Iterator[str]:
    """Serve the app on 127.0.0.1 with no worker: steps run only when the test runs them."""
    with serving(app, request.module.geneva) as url:
        yield url


def wait_for_state(committed: Committed, workflow_id: int, state: str, timeout: float = 10) -> None:
    """Wait until the committed state of the workflow is ``state``."""
    wait_until(
        lambda: committed.state(workflow_id) == state,
        timeout=timeout,
        message=lambda: (
            f"workflow {workflow_id} is {committed.state(workflow_id)!r}, not {state!r}"
        ),
    )

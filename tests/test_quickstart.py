"""The quickstart, followed as a new user would: its commands, verbatim, in a new venv.

tests/test_docs.py runs the page's python blocks as one script in the test suite's own
environment. This test is about the rest: a new virtual environment, the page's
``pip install`` of this checkout (with its dependencies, from the package index), a
``shop.py`` made of the page's blocks up to ``create_app``, and every ``$`` command of
the page run by a shell in a subprocess, in page order: the ``flask --app shop shell``
steps typed on standard input the way the page says, the worker, the migration commands
(the stamp of the database ``create_all()`` made, then a first revision of the app's
own against an empty database) and a login in a real web server that opens the admin.
The test walks the page's commands in order: one it does not expect, or one it never
reaches, fails it.

The only liberties: the checkout's path replaces the page's ``/path/to/flask-geneva``;
the venv is created by this interpreter and "activated" through ``PATH``; the web
server gets a free port instead of 5000.
"""

from __future__ import annotations

import http.cookiejar
import os
import re
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import closing
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import wait_until

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "quickstart.md"
#: How the page names the checkout it installs from.
CHECKOUT = "/path/to/flask-geneva"
#: Seconds one command may take (the install included).
TIMEOUT = 180

#: Processes and a pip install from the package index.
pytestmark = pytest.mark.slow

_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
_HEADING = re.compile(r"^## (.+)$", re.MULTILINE)


def blocks(markdown: str, language: str) -> list[tuple[str, str]]:
    """Return ``(section heading, code)`` for each fenced block in ``language``, in order."""
    found = []
    for match in _BLOCK.finditer(markdown):
        if match.group(1) == language:
            headings = _HEADING.findall(markdown, 0, match.start())
            found.append((headings[-1] if headings else "", match.group(2)))
    return found


def commands(markdown: str) -> list[str]:
    """Every ``$`` command in the page's console blocks, without its trailing comment."""
    found = []
    for _, code in blocks(markdown, "console"):
        for line in code.splitlines():
            if line.startswith("$ "):
                found.append(re.sub(r"\s+#.*$", "", line[2:]).strip())
    return found


def shop_py(markdown: str) -> str:
    """``shop.py`` as the page says: its python blocks up to and including ``create_app``."""
    code = [c for _, c in blocks(markdown, "python")]
    last = next(n for n, c in enumerate(code) if "def create_app(" in c)
    return "\n\n".join(code[: last + 1])


def shell_input(codes: list[str]) -> str:
    """What a user types in ``flask --app shop shell`` for these blocks, as the page says.

    ``from shop import *`` first; ``app = create_app()`` and ``with app.app_context():``
    left out, and the lines under the latter typed without their indentation.
    """
    typed = ["from shop import *"]
    for code in codes:
        under_context = False
        for line in code.splitlines():
            if line.strip() == "app = create_app()":
                continue
            if line.startswith("with app.app_context():"):
                under_context = True
                continue
            if under_context and line.startswith("    "):
                line = line[4:]
            elif line.strip():
                under_context = False
            typed.append(line)
    return "\n".join(typed) + "\n"


def test_shell_input_follows_the_pages_rules() -> None:
    code = [
        "app = create_app()\nwith app.app_context():\n    db.create_all()\n",
        "with app.app_context():\n    x = [\n        1,\n    ]\n\n    y = 2\nz = 3\n",
    ]
    assert shell_input(code).splitlines() == [
        "from shop import *",
        "db.create_all()",
        "x = [",
        "    1,",
        "]",
        "",
        "y = 2",
        "z = 3",
    ]


def test_the_readme_installs_as_the_quickstart_does() -> None:
    readme = commands((ROOT / "README.md").read_text(encoding="utf-8"))
    installs = [c for c in readme if c.startswith("pip install")]
    assert installs and set(installs) <= set(commands(PAGE.read_text(encoding="utf-8")))


class Newcomer:
    """A shell in a project directory with the new venv activated, following the page."""

    def __init__(self, project: Path, venv: Path, page: str) -> None:
        self.project = project
        #: The page's commands not run yet, in page order.
        self.ahead = commands(page)
        path = os.pathsep.join([str(venv / "bin"), os.environ.get("PATH", "")])
        # Nothing of this test run leaks in: no app, settings or import path of ours.
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("FLASK_", "GENEVA_", "PYTHON", "VIRTUAL_ENV"))
        }
        self.env.update(PATH=path, VIRTUAL_ENV=str(venv), PYTHONDONTWRITEBYTECODE="1")

    def command(self, start: str) -> str:
        """The page's next command, which must start with ``start``; the checkout's path in."""
        assert self.ahead, f"the page has no command left; expected {start!r}"
        line = self.ahead.pop(0)
        assert line.startswith(start), f"the page's next command is {line!r}, not {start!r}"
        return line.replace(CHECKOUT, str(ROOT))

    def run(self, start: str) -> subprocess.CompletedProcess[str]:
        """Run the page's command starting with ``start`` and assert it succeeded."""
        line = self.command(start)
        result = subprocess.run(
            ["bash", "-c", line],
            cwd=self.project,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert result.returncode == 0, f"$ {line}\n{result.stdout}\n{result.stderr}"
        return result

    @contextmanager
    def running(self, start: str, *extra: str) -> Iterator[list[str]]:
        """Run a long-lived command of the page until the block ends, then Ctrl-C it."""
        line = " ".join([self.command(start), *map(shlex.quote, extra)])
        process = subprocess.Popen(
            ["bash", "-c", f"exec {line}"],
            cwd=self.project,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        output: list[str] = []
        reader = threading.Thread(target=lambda: output.extend(process.stdout or ()))
        reader.start()
        try:
            yield output
        finally:
            process.send_signal(signal.SIGINT)  # what Ctrl-C sends
            try:
                returncode = process.wait(30)
            finally:
                if process.poll() is None:
                    process.kill()
                reader.join(5)
                if process.stdout is not None:
                    process.stdout.close()
        assert returncode == 0, f"$ {line} ended with {returncode}\n{''.join(output)}"

    def shell(self, codes: list[str]) -> None:
        """Type ``codes`` in ``flask --app shop shell``; nothing may raise."""
        result = subprocess.run(
            ["flask", "--app", "shop", "shell"],
            cwd=self.project,
            env=self.env,
            input=shell_input(codes),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        # The interactive console prints an exception and goes on: read what it printed.
        assert result.returncode == 0 and "Traceback" not in result.stderr, (
            f"$ flask --app shop shell\n{shell_input(codes)}\n{result.stdout}\n{result.stderr}"
        )


def test_the_quickstart_works_verbatim_in_a_new_virtual_environment(tmp_path: Path) -> None:
    page = PAGE.read_text(encoding="utf-8")
    project = tmp_path / "shop"
    project.mkdir()
    venv = project / ".venv"
    me = Newcomer(project, venv, page)

    # Install: a venv, then the checkout with its dependencies (nothing of ours visible).
    me.command("python -m venv .venv")
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=TIMEOUT)
    me.run("pip install -e /path/to/flask-geneva")
    install_seconds = time.monotonic() - started
    python = str(venv / "bin" / "python")
    where = "import flask_geneva, flask_migrate, huey; print(flask_geneva.__file__)"
    imported = subprocess.run(
        [python, "-c", where], env=me.env, capture_output=True, text=True, check=True
    )
    assert imported.stdout.strip() == str(ROOT / "flask_geneva" / "__init__.py")
    me.run('pip install -e "/path/to/flask-geneva[postgres,redis]"')
    subprocess.run([python, "-c", "import psycopg, redis"], env=me.env, check=True)

    # shop.py, then the blocks after it, typed in the shell, up to the admin's.
    (project / "shop.py").write_text(shop_py(page), encoding="utf-8")
    python_blocks = blocks(page, "python")
    first_typed = 1 + next(n for n, (_, c) in enumerate(python_blocks) if "def create_app(" in c)
    typed = python_blocks[first_typed:]
    me.shell([c for heading, c in typed if heading != "The admin"])
    database = project / "instance" / "shop.db"
    assert order_status(database, "grace@example.com") == "paid"  # speedrun in the shell
    assert order_status(database, "ada@example.com") == "new"  # queued for a worker

    # The worker takes the queued "charge" of Ada's order.
    with me.running("flask --app shop geneva worker") as output:
        wait_until(
            lambda: order_status(database, "ada@example.com") == "paid",
            timeout=30,
            message=lambda: f"the worker did not charge Ada's order\n{''.join(output)}",
        )
    assert "flask-geneva worker: 4 thread worker(s) on SqliteHuey" in "".join(output)

    # The migration, on the database create_all() made: stamp it, and upgrade is a no-op.
    me.run("flask --app shop db init")
    written = me.run("flask --app shop geneva migration").stdout.splitlines()
    assert written[0].startswith("wrote migrations/versions/")
    assert written[-1] == "run 'flask db upgrade' to apply them"
    assert "table geneva_workflows already exists" in upgrade_error(me)  # the page's warning
    me.run("flask --app shop db stamp head")
    upgraded = me.run("flask --app shop db upgrade")
    assert "Running upgrade" not in upgraded.stderr  # nothing to do
    assert order_status(database, "ada@example.com") == "paid"  # the data is kept

    # A first revision of the app's own, against an empty database, after flask-geneva's.
    me.run("rm instance/shop.db")  # with its WAL files: a stale one breaks the new file
    assert "flask-geneva tables" in me.run("flask --app shop db upgrade").stderr
    me.run('flask --app shop db migrate -m "orders"')
    (revision,) = (project / "migrations" / "versions").glob("*_orders.py")
    assert "op.create_table('order'" in revision.read_text()
    assert "geneva" not in revision.read_text()  # flask-geneva's tables have their own
    assert "orders" in me.run("flask --app shop db upgrade").stderr
    assert {"order", "geneva_workflows", "geneva_step_executions"} <= tables(database)

    # The admin: 403, then the stand-in login opens it, in the test client (the shell)...
    me.shell([c for heading, c in typed if heading == "The admin"])
    # ... and in a real web server, as in a browser.
    port = free_port()
    with me.running("flask --app shop run", "--port", str(port)) as output:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: listening(port), timeout=20, message=lambda: "".join(output))
        browser = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )
        assert status(browser, base + "/admin/workflows/") == 403
        with browser.open(base + "/login", timeout=10) as response:  # follows the redirect
            assert response.url == base + "/admin/workflows/"
            assert "OrderWorkflow" in response.read().decode()

    assert me.ahead == [], "commands of the page this test never ran"
    # Seconds from a warm package cache; the page promises ten minutes for all of it.
    assert install_seconds < 90, f"the install took {install_seconds:.0f} s"


def order_status(database: Path, email: str) -> str | None:
    with closing(sqlite3.connect(database)) as conn:
        row = conn.execute('SELECT status FROM "order" WHERE email = ?', (email,)).fetchone()
    return None if row is None else str(row[0])


def tables(database: Path) -> set[str]:
    with closing(sqlite3.connect(database)) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {str(name) for (name,) in rows}


def upgrade_error(me: Newcomer) -> str:
    """``flask db upgrade`` before the stamp: it fails, as the page says."""
    result = subprocess.run(
        ["flask", "--app", "shop", "db", "upgrade"],
        cwd=me.project,
        env=me.env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode != 0
    return result.stderr


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def status(opener: urllib.request.OpenerDirector, url: str) -> int:
    try:
        with opener.open(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def make(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``make`` in the checkout and assert it succeeded."""
    result = subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, f"make {' '.join(args)}\n{result.stdout}\n{result.stderr}"
    return result


def test_make_demo_installs_only_the_library_and_the_demo_runs_on_it(tmp_path: Path) -> None:
    venv = tmp_path / "venv"  # what `make demo` makes of a fresh clone's .venv
    make("demo-venv", f"VENV={venv}")
    python = str(venv / "bin" / "python")
    listed = subprocess.run(
        [python, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True
    )
    installed = {line.split("==")[0].lower() for line in listed.stdout.split()}
    assert "flask-geneva" in installed
    assert not installed & {"pytest", "playwright", "mypy", "ruff", "psycopg", "redis"}
    megabytes = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file()) / 2**20
    assert megabytes < 150, f"the demo's venv holds {megabytes:.0f} MB"

    # The demo runs on that venv alone (a dev-only import would stop it here).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "PYTHON"))}
    env.update(DEMO_INSTANCE_PATH=str(tmp_path / "instance"), PYTHONUNBUFFERED="1")
    demo = subprocess.Popen(
        [python, "-m", "demo_app", "--port", "0", "--workers", "1"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(demo.stdout or ()))
    reader.start()
    try:
        banner = re.compile(r"flask-geneva demo: (http://\S+)")
        url = wait_until(
            lambda: (m := banner.search("".join(output))) and m.group(1),
            timeout=30,
            message=lambda: "".join(output),
        )
        with urllib.request.urlopen(url, timeout=10) as response:
            assert "Money transfer" in response.read().decode()
    finally:
        demo.send_signal(signal.SIGINT)
        returncode = demo.wait(30)
        reader.join(5)
        if demo.stdout is not None:
            demo.stdout.close()
    assert returncode == 0, "".join(output)


def test_make_test_installs_the_development_tools() -> None:
    # -B: as on a fresh clone, every target is out of date; -n: print, do not run.
    planned = make("-n", "-B", "test").stdout
    assert "pip install -e '.[dev]'" in planned
    assert "pip install -e '.[dev]'" not in make("-n", "-B", "demo").stdout


def test_make_test_says_when_the_browser_tests_will_skip_for_want_of_chromium() -> None:
    # -o: leave the installed venv as it is; PY=true: run no test, only the recipe.
    quiet = ["-o", ".venv/.installed", "PY=true", "test"]
    missing = make(*quiet, "CHROMIUM=/nonexistent/chromium").stdout
    assert "note: no Chromium at /nonexistent/chromium: the browser tests" in missing
    assert "CI=true" in missing
    present = make(*quiet, f"CHROMIUM={sys.executable}").stdout
    assert "note:" not in present

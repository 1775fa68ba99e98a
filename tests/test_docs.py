"""Every ```python block in docs/*.md runs, so the manual cannot drift from the code.

The blocks of one page run in order as one script, in a fresh Python process whose
working directory is an empty temporary directory, with the repository root on
``PYTHONPATH`` and warnings turned into errors (like the test suite). Each block keeps
its line numbers from the page, so a traceback's ``line 42`` is line 42 of the
Markdown file. Put shell commands and output in ```console or ```text blocks instead.

No page but the architecture and the API page names an internal module: the manual
sends users to the public API of docs/api.md only.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import flask_geneva

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: Seconds one page's script may run.
TIMEOUT = 120

#: Modules users may import besides ``flask_geneva`` itself (docs/api.md).
PUBLIC_MODULES = frozenset({"testing", "signals", "otel"})
#: Pages that name internal modules on purpose: the architecture, for contributors, and
#: the API page, which lists them as internal.
PAGES_NAMING_INTERNALS = frozenset({"architecture.md", "api.md"})
_DOTTED = re.compile(r"\bflask_geneva\.(\w+)")
_FROM_IMPORT = re.compile(r"^\s*from flask_geneva import (.+)$", re.MULTILINE)
#: The per-app state object; its public parts are ``geneva.huey`` and ``geneva.config``.
_STATE = 'extensions["geneva"]'
#: Each page's samples run in a Python process of their own.
pytestmark = pytest.mark.slow

_FENCE = re.compile(r"^```\s*python\s*$")
_CLOSE = re.compile(r"^```\s*$")


def python_script(markdown: str) -> str:
    """Return the page's python blocks as one script, each block on its own line numbers.

    Lines outside python blocks become empty lines, so line N of the script is line N
    of the page.
    """
    out: list[str] = []
    inside = False
    for line in markdown.splitlines():
        if inside and _CLOSE.match(line):
            inside = False
            out.append("")
        elif inside:
            out.append(line)
        else:
            inside = bool(_FENCE.match(line))
            out.append("")
    if inside:
        raise ValueError("a ```python block is never closed")
    return "\n".join(out) + "\n"


def pages_with_python() -> list[str]:
    return [
        page.name
        for page in sorted(DOCS.glob("*.md"))
        if python_script(page.read_text(encoding="utf-8")).strip()
    ]


@pytest.mark.parametrize("page", pages_with_python())
def test_the_python_samples_of_this_docs_page_run(page: str, tmp_path: Path) -> None:
    script = python_script((DOCS / page).read_text(encoding="utf-8"))
    source = tmp_path / "samples" / f"{page}.py"
    source.parent.mkdir()
    source.write_text(script, encoding="utf-8")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "GENEVA_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    try:
        result = subprocess.run(
            [sys.executable, "-W", "error", str(source)],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"docs/{page}: the samples ran longer than {TIMEOUT} s\n{error.stderr}")
    assert result.returncode == 0, (
        f"docs/{page}: the python samples failed (line numbers are the page's)\n"
        f"--- stdout ---\n{result.stdout[-3000:]}\n--- stderr ---\n{result.stderr[-6000:]}"
    )


def test_python_blocks_are_extracted_on_their_page_line_numbers() -> None:
    page = [
        "Intro",  # line 1
        "",
        "```python",
        "x = 1",  # line 4
        "```",
        "",
        "```console",
        "$ ls",
        "```",
        "```python",
        "assert x == 1",  # line 11
        "```",
    ]
    script = python_script("\n".join(page)).splitlines()
    assert script[3] == "x = 1"
    assert script[10] == "assert x == 1"
    assert "$ ls" not in script


def internal_references(text: str) -> list[str]:
    """Return every ``flask_geneva.<x>`` and ``from flask_geneva import <x>`` in ``text``
    whose ``<x>`` is neither exported by the package nor a public module, and the
    extension's internal per-app state if ``text`` reaches for it."""
    public = set(flask_geneva.__all__) | PUBLIC_MODULES
    names = _DOTTED.findall(text)
    for imported in _FROM_IMPORT.findall(text):
        names += [name.strip() for name in imported.strip("()").split(",") if name.strip()]
    if _STATE in text:
        names.append(_STATE)
    return sorted({name for name in names if name not in public})


def test_internal_references_are_found() -> None:
    text = "see `flask_geneva.queries`\nfrom flask_geneva import housekeeping, step\n"
    assert internal_references(text) == ["housekeeping", "queries"]
    assert internal_references('app.extensions["geneva"].config') == ['extensions["geneva"]']
    assert internal_references("from flask_geneva.testing import speedrun") == []


@pytest.mark.parametrize(
    "page",
    ["README.md"]
    + [f"docs/{p.name}" for p in sorted(DOCS.glob("*.md")) if p.name not in PAGES_NAMING_INTERNALS],
)
def test_this_page_sends_users_only_to_the_public_api(page: str) -> None:
    found = internal_references((ROOT / page).read_text(encoding="utf-8"))
    assert not found, (
        f"{page} sends users into internal modules or names: {', '.join(found)}; use the "
        "public API of docs/api.md instead (or make what is needed public there)"
    )

"""The source excerpt of a step with the failing line highlighted (Pygments, escaped).

The failing line comes from the stored traceback: the deepest frame in the step's own
file that falls inside the step function. If the exception was raised in a helper, that
is the line of the step that called it — the line an operator wants to read first.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup
from pygments import highlight  # type: ignore[import-untyped]
from pygments.formatters import HtmlFormatter  # type: ignore[import-untyped]
from pygments.lexers import PythonLexer  # type: ignore[import-untyped]
from pygments.lexers import PythonTracebackLexer

_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+)', re.MULTILINE)


@dataclass(frozen=True)
class SourceExcerpt:
    """A highlighted excerpt of one step function."""

    #: Where the function lives.
    filename: str
    #: First line of the function in the file.
    first_line: int
    #: The failing line (file line number), or None when the traceback does not point
    #: into the function (then the function is shown without a highlight).
    failing_line: int | None
    #: Pygments HTML (escaped by Pygments; safe to insert).
    html: Markup


def failing_line(traceback_text: str | None, filename: str, first: int, last: int) -> int | None:
    """Return the deepest traceback line inside ``filename`` lines ``first..last``."""
    if not traceback_text:
        return None
    found: int | None = None
    for match in _FRAME.finditer(traceback_text):
        line = int(match["line"])
        if _same_file(match["file"], filename) and first <= line <= last:
            found = line
    return found


def _same_file(a: str, b: str) -> bool:
    return a == b or a.endswith(b) or b.endswith(a)


def step_excerpt(definition: Any, traceback_text: str | None) -> SourceExcerpt | None:
    """Return the highlighted source of a step, or None if its source cannot be read.

    :param definition: a :class:`~flask_geneva.steps.StepDefinition`.
    :param traceback_text: the execution's stored ``error_traceback``.
    """
    func = inspect.unwrap(definition.func)
    try:
        lines, first = inspect.getsourcelines(func)
        filename = inspect.getsourcefile(func) or definition.source[0]
    except (OSError, TypeError):
        return None
    first = max(first, 1)
    last = first + len(lines) - 1
    line = failing_line(traceback_text, filename, first, last)
    formatter = HtmlFormatter(
        linenos="inline",
        linenostart=first,
        hl_lines=[line - first + 1] if line is not None else [],
        cssclass="geneva-source",
        wrapcode=True,
    )
    html = highlight("".join(lines), PythonLexer(), formatter)
    return SourceExcerpt(filename, first, line, Markup(html))


def traceback_html(traceback_text: str) -> Markup:
    """Return the traceback syntax-highlighted (escaped by Pygments)."""
    formatter = HtmlFormatter(cssclass="geneva-traceback", wrapcode=True)
    return Markup(highlight(traceback_text, PythonTracebackLexer(), formatter))


def stylesheet() -> str:
    """Return the Pygments CSS for excerpts and tracebacks (served with the admin CSS)."""
    formatter = HtmlFormatter(style="default")
    return "\n".join(
        formatter.get_style_defs(selector) for selector in (".geneva-source", ".geneva-traceback")
    )

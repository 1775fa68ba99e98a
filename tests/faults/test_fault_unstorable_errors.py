"""Errors the database cannot store as they are still pause the workflow, readably.

A message or traceback over MariaDB's 64 KB ``TEXT``, a NUL byte (PostgreSQL refuses
it), a lone surrogate (a file name that was not UTF-8), an exception whose ``__str__``
raises, a class name over the column's 255 characters: each is stored as a cleaned,
trimmed copy that says it was trimmed, the workflow pauses, and nothing loops
(housekeeping afterwards finds nothing to do). On 0.1 each of these left the
execution in progress, and housekeeping ran the body again every hour.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from helpers import Committed

from flask_geneva import Geneva
from flask_geneva import housekeeping
from flask_geneva import step
from flask_geneva.records import MAX_ERROR_BYTES
from flask_geneva.testing import perform_next_step
from flask_geneva.testing import travel

db = SQLAlchemy()
geneva = Geneva(db)
committed = Committed(geneva)


class BrokenStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text for you")


#: An exception class whose qualified name is far longer than the 255-character column.
LongNamed = type("E" * 400, (Exception,), {})


def _chained() -> None:
    try:
        raise KeyError("z" * 80_000)  # the cause: printed in full in the traceback
    except KeyError as cause:
        raise ValueError("the outer error " + "y" * 200) from cause


#: What each step raises: name → a callable that raises.
RAISERS: dict[str, Any] = {
    "huge_message": lambda: (_ for _ in ()).throw(ValueError("x" * 200_000)),
    "huge_multibyte_message": lambda: (_ for _ in ()).throw(ValueError("€" * 40_000)),
    "nul_byte": lambda: (_ for _ in ()).throw(ValueError("before\x00after")),
    "lone_surrogate": lambda: (_ for _ in ()).throw(
        FileNotFoundError(2, "No such file", b"report-\xff.csv".decode("utf-8", "surrogateescape"))
    ),
    "broken_str": lambda: (_ for _ in ()).throw(BrokenStr("hidden")),
    "long_class_name": lambda: (_ for _ in ()).throw(LongNamed("named at length")),
    "long_traceback": _chained,
}


class Unstorable(geneva.Workflow):  # type: ignore[name-defined,misc]
    allow_multiple = True
    kind: str = ""

    @step
    def fail(self) -> None:
        RAISERS[self.kind]()


def stored_error(workflow_id: int) -> Any:
    e = geneva.tables.executions
    with geneva.engine().connect() as conn:
        return conn.execute(
            sa.select(
                e.c.state, e.c.outcome, e.c.error_class, e.c.error_message, e.c.error_traceback
            )
            .where(e.c.workflow_id == workflow_id)
            .order_by(e.c.id)
        ).all()


def run(kind: str) -> tuple[int, Any]:
    Unstorable.kind = kind
    wf = Unstorable.create()
    with pytest.raises(Exception):  # noqa: B017 - each kind raises its own
        perform_next_step(wf)
    db.session.rollback()
    (row,) = stored_error(wf.id)
    return wf.id, row


def assert_no_loop(workflow_id: int) -> None:
    """Paused, nothing in progress; housekeeping, hours later, changes nothing."""
    assert committed.state(workflow_id) == "paused"
    with travel(timedelta(hours=3)):
        summary = housekeeping.run(geneva)
    assert (summary.stuck_reattempted, summary.stuck_canceled, summary.stuck_paused) == (0, 0, 0)
    assert committed.history(workflow_id) == [("fail", "failed", "failed")]


def fits(text: str) -> bool:
    return "\x00" not in text and len(text.encode("utf-8")) <= MAX_ERROR_BYTES


@pytest.mark.parametrize("kind", ["huge_message", "huge_multibyte_message"])
def test_a_message_over_64_kb_is_stored_trimmed_and_says_so(app: Flask, kind: str) -> None:
    workflow_id, row = run(kind)
    assert (row.state, row.outcome) == ("failed", "failed")
    assert fits(row.error_message) and fits(row.error_traceback)
    assert "trimmed" in row.error_message and "bytes in all" in row.error_message
    assert row.error_message.startswith(("xxxx", "€€€€"))
    assert_no_loop(workflow_id)


def test_a_long_traceback_keeps_its_beginning_and_its_last_line(app: Flask) -> None:
    workflow_id, row = run("long_traceback")
    assert row.error_message == "the outer error " + "y" * 200
    assert len(row.error_traceback) > 50_000 and fits(row.error_traceback)
    assert "trimmed" in row.error_traceback
    assert row.error_traceback.startswith("Traceback (most recent call last)")
    assert row.error_traceback.rstrip().endswith("y" * 200)  # the line that says what failed
    assert_no_loop(workflow_id)


def test_a_nul_byte_is_stored_escaped(app: Flask) -> None:
    workflow_id, row = run("nul_byte")
    assert row.error_message == "before\\x00after"
    assert "\x00" not in row.error_traceback and "before\\x00after" in row.error_traceback
    assert_no_loop(workflow_id)


def test_a_lone_surrogate_from_a_file_name_is_stored_escaped(app: Flask) -> None:
    workflow_id, row = run("lone_surrogate")
    assert row.error_class == "FileNotFoundError"
    assert "report-\\udcff.csv" in row.error_message
    assert_no_loop(workflow_id)


def test_an_exception_whose_str_raises_is_described_instead(app: Flask) -> None:
    workflow_id, row = run("broken_str")
    assert row.error_class.endswith("BrokenStr")
    assert "BrokenStr('hidden')" in row.error_message
    assert "__str__ raised RuntimeError" in row.error_message
    assert_no_loop(workflow_id)


def test_a_class_name_over_255_characters_is_cut_to_the_column(app: Flask) -> None:
    workflow_id, row = run("long_class_name")
    assert len(row.error_class) <= 255 and "[cut: " in row.error_class
    assert row.error_class.startswith(f"{__name__}.EEEE")
    assert row.error_message == "named at length"
    assert_no_loop(workflow_id)

"""Hostile input at the edges: admin query strings and forms, CLI arguments, log lines.

Every admin route and every parameter it reads is tried with each class of input a
careless client or an attacker sends: ids beyond BIGINT, malformed keyset cursors, a NUL
byte in a text filter (PostgreSQL refuses NUL in text), time-zoned dates at year 1 or
9999 (they overflow when converted to UTC), and digits that are not ASCII (``int()``
accepts ``'٣'``, ``str.isdigit()`` accepts ``'²'``). Each answers 400 or 404 on every
database, never 500. The CLI answers the same inputs with one ``Error:`` line. A step
name, hero id or exception message with a newline cannot forge a log line.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from flask_sqlalchemy import SQLAlchemy

from flask_geneva import Geneva
from flask_geneva import step
from flask_geneva.cli import geneva_cli
from flask_geneva.executor import execute
from flask_geneva.logging import tagged

db = SQLAlchemy()
geneva = Geneva(db)

PREFIX = "/admin/workflows"
BEYOND_BIGINT = str(10**30)
JUST_BEYOND_BIGINT = str(2**63)
#: Decimal digits ``int()`` accepts, and digits ``str.isdigit()`` accepts but ``int()`` not.
ARABIC_INDIC = "\u0663\u0664"  # '٣٤'
SUPERSCRIPT = "\u00b2"  # '²'
FORGED = "\n[Fake id=1] forged"


class Ticket(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "fhostile_tickets"
    id = sa.Column(sa.Integer, primary_key=True)


class HostileWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def first(self) -> None:
        pass

    @step
    def second(self) -> None:
        pass


class Forged(Exception):
    pass


class ForgingWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def explode(self) -> None:
        raise Forged(f"card declined{FORGED}\r[Fake id=2] also forged\x1b[2J")


@pytest.fixture
def admin(app: Flask) -> FlaskClient:
    app.register_blueprint(geneva.admin_blueprint, url_prefix=PREFIX)
    return app.test_client()


@pytest.fixture
def workflow(app: Flask) -> Any:
    ticket = Ticket()
    db.session.add(ticket)
    db.session.commit()
    return HostileWorkflow.create(hero=ticket)


def _token(client: FlaskClient) -> str:
    client.get(f"{PREFIX}/")
    with client.session_transaction() as session:
        return str(session["_geneva_csrf"])


def _post(client: FlaskClient, path: str, data: dict[str, Any]) -> Any:
    headers = {"X-CSRFToken": _token(client), "HX-Request": "true"}
    return client.post(f"{PREFIX}{path}", data=data, headers=headers)


def _refused(response: Any) -> None:
    assert response.status_code in (400, 404), (response.status_code, response.text[:500])


# -- admin: every route, every parameter ------------------------------------------------------

LIST_ROUTES = ["/workflows", "/classes/HostileWorkflow"]
TEXT_FILTERS = ["type", "hero_type", "hero_id", "step"]
TIME_FILTERS = ["created_after", "created_before", "updated_after", "updated_before"]
ZONED_EDGES = ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00"]
BAD_NUMBERS = [
    BEYOND_BIGINT,
    JUST_BEYOND_BIGINT,
    "-5",
    ARABIC_INDIC,
    SUPERSCRIPT,
    "1_000",
    " 7",
    "1e3",
    "0x10",
]


@pytest.mark.parametrize("route", LIST_ROUTES)
@pytest.mark.parametrize("value", BAD_NUMBERS)
@pytest.mark.parametrize("name", ["before", "limit"])
def test_a_list_refuses_a_malformed_or_out_of_range_cursor_or_limit(
    admin, workflow, route, name, value
):
    _refused(admin.get(f"{PREFIX}{route}", query_string={name: value}))
    _refused(
        admin.get(f"{PREFIX}{route}", query_string={name: value}, headers={"HX-Request": "true"})
    )


@pytest.mark.parametrize("route", LIST_ROUTES)
def test_a_list_still_pages_with_a_valid_cursor_and_a_large_limit(admin, workflow, route):
    page = admin.get(f"{PREFIX}{route}", query_string={"before": workflow.id + 1, "limit": 10**6})
    assert page.status_code == 200
    assert f"#{workflow.id}" in page.text
    older = admin.get(f"{PREFIX}{route}", query_string={"before": workflow.id})
    assert older.status_code == 200 and f"#{workflow.id}<" not in older.text


@pytest.mark.parametrize("route", LIST_ROUTES)
@pytest.mark.parametrize("name", TEXT_FILTERS)
def test_a_list_refuses_a_nul_byte_in_a_text_filter(admin, workflow, route, name):
    _refused(admin.get(f"{PREFIX}{route}", query_string={name: "Ticket\x00"}))


def test_a_class_list_refuses_a_nul_byte_in_the_class_name(admin, workflow):
    _refused(admin.get(f"{PREFIX}/classes/Hostile%00Workflow"))


@pytest.mark.parametrize("route", LIST_ROUTES)
@pytest.mark.parametrize("name", TEXT_FILTERS)
def test_a_list_answers_a_very_long_text_filter_with_no_match(admin, workflow, route, name):
    page = admin.get(f"{PREFIX}{route}", query_string={name: "x" * 5000})
    assert page.status_code in (200, 400)


@pytest.mark.parametrize("route", LIST_ROUTES)
@pytest.mark.parametrize("value", ZONED_EDGES)
@pytest.mark.parametrize("name", TIME_FILTERS)
def test_a_list_refuses_a_zoned_date_that_overflows_in_utc(admin, workflow, route, name, value):
    _refused(admin.get(f"{PREFIX}{route}", query_string={name: value}))


@pytest.mark.parametrize("value", ["0001-01-01T00:00", "9999-12-31T23:59"])
@pytest.mark.parametrize("name", TIME_FILTERS)
def test_a_list_answers_a_naive_date_at_the_ends_of_the_calendar(admin, workflow, name, value):
    page = admin.get(f"{PREFIX}/workflows", query_string={name: value})
    assert page.status_code in (200, 400), page.text[:500]


@pytest.mark.parametrize("value", [BEYOND_BIGINT, JUST_BEYOND_BIGINT, "0", ARABIC_INDIC])
def test_the_detail_page_answers_404_for_an_id_no_workflow_can_have(admin, workflow, value):
    _refused(admin.get(f"{PREFIX}/workflows/{value}"))
    _refused(admin.get(f"{PREFIX}/workflows/{value}", headers={"HX-Request": "true"}))


@pytest.mark.parametrize("value", [BEYOND_BIGINT, JUST_BEYOND_BIGINT, "0", ARABIC_INDIC])
@pytest.mark.parametrize("operation", ["pause", "cancel", "skip"])
def test_an_action_answers_404_for_an_id_no_workflow_can_have(admin, workflow, operation, value):
    _refused(_post(admin, f"/workflows/{value}/{operation}", {}))


@pytest.mark.parametrize("step_name", ["first\x00", "x" * 5000])
@pytest.mark.parametrize("operation", ["skip", "reattempt"])
def test_an_action_refuses_a_hostile_step_name(admin, workflow, operation, step_name):
    response = _post(admin, f"/workflows/{workflow.id}/{operation}", {"step": step_name})
    assert response.status_code in (200, 400), response.text[:500]
    assert _state(workflow.id) == "ready"


@pytest.mark.parametrize("value", [BEYOND_BIGINT, JUST_BEYOND_BIGINT, SUPERSCRIPT, ARABIC_INDIC])
def test_the_row_poll_refuses_a_malformed_row_id(admin, workflow, value):
    response = admin.get(
        f"{PREFIX}/workflows/poll",
        query_string={f"h_row_{workflow.id}": "x", f"h_row_{value}": "y"},
        headers={"HX-Request": "true"},
    )
    _refused(response)


@pytest.mark.parametrize(
    "value", [BEYOND_BIGINT, JUST_BEYOND_BIGINT, SUPERSCRIPT, ARABIC_INDIC, "-1", "0", ""]
)
@pytest.mark.parametrize("confirm", ["", "1"])
def test_a_bulk_action_refuses_a_malformed_selected_id(admin, workflow, value, confirm):
    data = {"op": "pause", "scope": "selected", "ids": [str(workflow.id), value]}
    data["confirm"] = confirm
    _refused(_post(admin, "/workflows/bulk", data))
    assert _state(workflow.id) == "ready"


@pytest.mark.parametrize("value", BAD_NUMBERS)
@pytest.mark.parametrize("name", ["before", "done", "failed"])
def test_a_bulk_action_refuses_a_malformed_progress_field(admin, workflow, name, value):
    data = {"op": "pause", "scope": "filter", "confirm": "1", name: value}
    _refused(_post(admin, "/workflows/bulk", data))
    assert _state(workflow.id) == "ready"


@pytest.mark.parametrize("name", TEXT_FILTERS)
@pytest.mark.parametrize("confirm", ["", "1"])
def test_a_bulk_action_refuses_a_nul_byte_in_a_text_filter(admin, workflow, name, confirm):
    data = {"op": "pause", "scope": "filter", "confirm": confirm, name: "a\x00"}
    _refused(_post(admin, "/workflows/bulk", data))
    assert _state(workflow.id) == "ready"


@pytest.mark.parametrize("value", ZONED_EDGES)
@pytest.mark.parametrize("name", TIME_FILTERS)
def test_a_bulk_action_refuses_a_zoned_date_that_overflows_in_utc(admin, workflow, name, value):
    data = {"op": "pause", "scope": "filter", "confirm": "1", name: value}
    _refused(_post(admin, "/workflows/bulk", data))
    assert _state(workflow.id) == "ready"


def test_a_bulk_action_still_runs_with_a_valid_cursor(admin, workflow):
    data = {"op": "pause", "scope": "filter", "confirm": "1", "before": str(workflow.id + 1)}
    response = _post(admin, "/workflows/bulk", data)
    assert response.status_code == 200 and 'data-mode="done"' in response.text
    assert _state(workflow.id) == "paused"


def _state(workflow_id: int) -> str:
    w = geneva.tables.workflows
    with geneva.engine().connect() as conn:
        return str(conn.execute(sa.select(w.c.state).where(w.c.id == workflow_id)).scalar_one())


# -- CLI --------------------------------------------------------------------------------------


def _cli(app: Flask, *args: str) -> Any:
    return app.test_cli_runner().invoke(geneva_cli, list(args))


def _one_error_line(result: Any) -> None:
    assert result.exit_code != 0, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output


@pytest.mark.parametrize("value", [BEYOND_BIGINT, JUST_BEYOND_BIGINT, "0", "-3", ARABIC_INDIC])
@pytest.mark.parametrize("command", ["show", "pause", "resume", "cancel", "skip", "reattempt"])
def test_the_cli_refuses_an_id_no_workflow_can_have_with_one_error_line(
    app, workflow, command, value
):
    _one_error_line(_cli(app, command, "--", value))
    assert _state(workflow.id) == "ready"


@pytest.mark.parametrize("value", [BEYOND_BIGINT, "0", "-1", ARABIC_INDIC])
def test_the_cli_refuses_an_out_of_range_list_limit_with_one_error_line(app, workflow, value):
    _one_error_line(_cli(app, "list", "--limit", value))


@pytest.mark.parametrize("value", ["0", "-2", BEYOND_BIGINT])
def test_the_cli_refuses_a_worker_without_workers(app, value):
    # In a thread of its own, so a consumer that does start cannot hang the test run.
    results: list[Any] = []
    thread = threading.Thread(
        target=lambda: results.append(_cli(app, "worker", "-w", value)), daemon=True
    )
    thread.start()
    thread.join(timeout=20)
    assert not thread.is_alive(), "the worker started instead of refusing"
    _one_error_line(results[0])


@pytest.mark.parametrize("option", [["--hero", "Ticket:\x00"], ["--step", "first\x00"]])
def test_the_cli_refuses_a_nul_byte_in_a_filter_with_one_error_line(app, workflow, option):
    _one_error_line(_cli(app, "list", *option))
    _one_error_line(_cli(app, "pause", "--yes", *option))
    assert _state(workflow.id) == "ready"


# -- log lines --------------------------------------------------------------------------------


def _single_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    formatter = logging.Formatter("%(levelname)s %(message)s")
    lines = []
    for record in caplog.records:
        text = formatter.format(record)
        assert "\n" not in text and "\r" not in text and "\x1b" not in text, text
        lines.append(text)
    return lines


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_hostile_exception_message_cannot_forge_a_log_line(app, huey, caplog):
    caplog.set_level(logging.DEBUG, logger="flask_geneva")
    ticket = Ticket()
    db.session.add(ticket)
    db.session.commit()
    workflow = ForgingWorkflow.create(hero=ticket)
    for task in huey.pending():
        execute(geneva, app.extensions["geneva"], task.args[0])
    lines = _single_lines(caplog)
    raised = [line for line in lines if "step raised Forged" in line]
    assert len(raised) == 1, lines
    assert raised[0].startswith(f"WARNING [ForgingWorkflow id={workflow.id} hero=Ticket:")
    assert "card declined\\n[Fake id=1] forged\\r[Fake id=2] also forged\\x1b[2J" in raised[0]
    assert not any(line.startswith(("[Fake", "WARNING [Fake", "ERROR [Fake")) for line in lines)


def test_hostile_names_in_the_tag_and_arguments_stay_on_one_line(caplog):
    caplog.set_level(logging.DEBUG, logger="flask_geneva")
    log = tagged(
        f"Evil{FORGED}",
        7,
        "Hero\r\n[Fake id=3]",
        f"id{FORGED}",
        execution_id=9,
        step_name=f"step{FORGED}",
    )
    log.info("did %s with %r and %d and %.1f", f"a{FORGED}", f"b{FORGED}", 3, 2.5)
    log.warning(f"message{FORGED} 100%")
    log.error("mapping %(what)s", {"what": f"c{FORGED}"})
    percent = tagged("Evil", 8, "Hero", "50%s%d", execution_id=1, step_name="%(x)s")
    percent.info("with %s", "an argument")
    lines = _single_lines(caplog)
    assert all(record.pathname == __file__ for record in caplog.records)
    assert (
        lines[-1] == "INFO [Evil id=8 hero=Hero:50%s%d] [execution=1 step=%(x)s] with an argument"
    )
    assert lines[0] == (
        "INFO [Evil\\n[Fake id=1] forged id=7 hero=Hero\\r\\n[Fake id=3]:id\\n[Fake id=1] forged] "
        "[execution=9 step=step\\n[Fake id=1] forged] did a\\n[Fake id=1] forged with "
        "'b\\n[Fake id=1] forged' and 3 and 2.5"
    )
    assert lines[1].endswith("message\\n[Fake id=1] forged 100%")
    assert lines[2].endswith("mapping c\\n[Fake id=1] forged")
    assert caplog.records[0].args is not None  # still lazy: handlers see the arguments

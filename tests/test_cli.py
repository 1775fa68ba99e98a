"""The ``flask geneva`` commands through Flask's CLI runner, on every database."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any
from typing import ClassVar

import pytest
import sqlalchemy as sa
from flask_migrate import Migrate
from flask_migrate import init as migrate_init
from flask_sqlalchemy import SQLAlchemy

from flask_geneva import Geneva
from flask_geneva import step
from flask_geneva.testing import assert_waiting_for
from flask_geneva.testing import assert_workflow_state
from flask_geneva.testing import perform_next_step
from flask_geneva.testing import perform_step_inline
from flask_geneva.testing import speedrun
from flask_geneva.testing import travel

db = SQLAlchemy()
geneva = Geneva(db)


class Order(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "cli_orders"
    id = sa.Column(sa.Integer, primary_key=True)


class FulfilOrder(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def reserve(self) -> None:
        pass

    @step(wait=timedelta(hours=1))
    def charge(self) -> None:
        raise RuntimeError("card declined for order")

    @step(after="reserve")
    def pack(self) -> None:
        pass

    @step(after=["charge", "pack"])
    def ship(self) -> None:
        pass


class AwaitApproval(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def ask(self) -> None:
        pass

    @step(wait_for="approved", timeout=timedelta(days=2))
    def record(self) -> None:
        pass


class Welcome(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def greet(self) -> None:
        pass


class Digest(geneva.Workflow):  # type: ignore[name-defined,misc]
    pages: ClassVar[list[str]] = ["one", "bad", "three"]

    @step
    def split(self) -> list[str]:
        return Digest.pages

    @step(for_each="split")
    def summarise(self) -> str:
        if self.item == "bad":
            raise ValueError(f"cannot summarise\x1b[2J item {self.item_index}")
        return f"\x1b[31m{self.item}\x1b[0m " + "long " * 30

    @step
    def join(self, summarise: list[str]) -> None:
        pass


def invoke(app: Any, *args: str, input: str | None = None) -> Any:
    result = app.test_cli_runner().invoke(args=["geneva", *args], input=input)
    if result.exit_code != 0:  # a user mistake: never a traceback
        assert "Traceback" not in result.output, result.output
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), result.exception
    return result


def error_line(result: Any) -> str:
    """The one line a failed command printed (exit code 1)."""
    assert result.exit_code == 1, result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    return line


def new_order() -> Any:
    order = Order()
    db.session.add(order)
    db.session.commit()
    return order


def failed_fulfilment() -> Any:
    """A FulfilOrder paused on the failing 'charge' step."""
    workflow = FulfilOrder.create(hero=new_order())
    perform_step_inline(workflow, "reserve")
    perform_step_inline(workflow, "pack")
    with pytest.raises(RuntimeError):
        perform_step_inline(workflow, "charge")
    assert_workflow_state(workflow, "paused")
    return workflow


def test_list_shows_workflows_newest_first_and_filters_them(app):
    stuck = failed_fulfilment()
    done = Welcome.create()
    speedrun(done)
    waiting = Welcome.create(allow_multiple=True)

    result = invoke(app, "list")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split() == ["ID", "CLASS", "STATE", "HERO", "CURRENT", "STEPS", "UPDATED"]
    assert [int(line.split()[0]) for line in lines[1:]] == [waiting.id, done.id, stuck.id]
    assert f"FulfilOrder  paused    Order:{stuck.hero_id}  charge (failed)" in result.output

    def ids(*args: str) -> list[int]:
        output = invoke(app, "list", *args).output
        return [int(line.split()[0]) for line in output.splitlines()[1:] if line[0].isdigit()]

    assert ids("--class", "Welcome") == [waiting.id, done.id]
    assert ids("--state", "finished", "--state", "paused") == [done.id, stuck.id]
    assert ids("--hero", f"Order:{stuck.hero_id}") == [stuck.id]
    assert ids("--hero", "Order") == [stuck.id]
    assert ids("--step", "charge") == [stuck.id]
    assert ids("--limit", "1") == [waiting.id]
    assert invoke(app, "list", "--state", "canceled").output == "no workflows match\n"


def test_list_rejects_an_unknown_class_or_state_in_one_line(app):
    Welcome.create()
    line = error_line(invoke(app, "list", "--class", "Nope"))
    known = "AwaitApproval, Digest, Flaky, FulfilOrder, Welcome"
    assert line == f"Error: unknown workflow class 'Nope'; known classes: {known}"
    line = error_line(invoke(app, "list", "--state", "stuck"))
    assert line.startswith("Error: unknown workflow state(s) 'stuck'; expected any of ready")
    assert error_line(invoke(app, "list", "--hero", ":7")).startswith("Error: --hero ':7'")


def test_show_prints_the_dag_position_executions_and_last_error(app):
    workflow = failed_fulfilment()
    result = invoke(app, "show", str(workflow.id))
    assert result.exit_code == 0
    out = result.output
    assert out.startswith(f"FulfilOrder {workflow.id}: paused\n")
    assert f"hero:            Order:{workflow.hero_id}" in out
    steps = out.split("Steps:\n")[1].split("\n\n")[0].splitlines()
    assert [line.split()[:2] for line in steps] == [
        ["✓", "reserve"],
        ["✗", "charge"],
        ["✓", "pack"],
        ["ship", "not"],
    ]
    assert "(after charge, pack)" in steps[3]
    assert "Last error (execution" in out and "step charge" in out
    assert "RuntimeError: card declined for order" in out
    assert 'raise RuntimeError("card declined for order")' in out  # the traceback


def test_show_prints_outputs_cut_and_escaped_and_each_map_steps_progress(app):
    workflow = Digest.create()
    with pytest.raises(ValueError):
        speedrun(workflow)
    out = invoke(app, "show", str(workflow.id)).output
    assert "\x1b" not in out  # control characters print escaped, never raw
    steps = out.split("Steps:\n")[1].split("\n\n")[0].splitlines()
    assert steps[1].split(None, 2) == [
        "✗",
        "summarise",
        "map: 1/3 done · 1 failed · 1 scheduled  (after split)",
    ]
    table = out.split("Executions:\n")[1].split("\n\n")[0].splitlines()
    assert table[0].split()[-1] == "OUTPUT"
    assert table[1].endswith('["one", "bad", "three"]')  # split's output
    assert len(table) == 2  # items are not rows: the map step's line counts them
    assert "Failed items of summarise (1; the first 1):" in out
    assert "item 1 (execution " in out
    assert "ValueError: cannot summarise\\x1b[2J item 1" in out


def test_show_cuts_a_long_output_and_shows_a_cursor(app):
    Digest.pages = ["x"]
    try:
        workflow = Digest.create()
        speedrun(workflow)
    finally:
        Digest.pages = ["one", "bad", "three"]
    e = geneva.tables.executions
    with db.engine.begin() as conn:
        conn.execute(
            e.update()
            .where(e.c.workflow_id == workflow.id, e.c.step_name == "join")
            .values(output="\x1b[2J" + "z" * 500, cursor={"id": 41}, iterations=2, continues_id=7)
        )
    out = invoke(app, "show", str(workflow.id)).output
    assert "\x1b" not in out
    steps = out.split("Steps:\n")[1].split("\n\n")[0].splitlines()
    assert steps[1].split(None, 2) == ["✓", "summarise", "map: 1/1 done  (after split)"]
    table = out.split("Executions:\n")[1].split("\n\n")[0].splitlines()
    assert table[0].split()[-2:] == ["OUTPUT", "CURSOR"]
    (join,) = [line for line in table if " join " in line]
    assert '"\\u001b[2Jzzz' in join and "z" * 60 not in join and "…" in join
    assert join.endswith('cursor {"id": 41} · 2 iterations · continues #7')


def test_show_of_an_unknown_id_is_one_error_line(app):
    assert error_line(invoke(app, "show", "424242")) == "Error: no workflow with id 424242"


def test_pause_and_resume_by_id_then_an_invalid_resume_fails_cleanly(app):
    workflow = Welcome.create()
    result = invoke(app, "pause", str(workflow.id))
    assert (result.exit_code, result.output) == (0, "paused 1 workflow(s)\n")
    assert_workflow_state(workflow, "paused")
    assert invoke(app, "resume", str(workflow.id)).exit_code == 0
    assert_workflow_state(workflow, "ready")

    result = invoke(app, "resume", str(workflow.id))
    assert f"workflow {workflow.id}: Cannot resume a ready workflow" in result.output
    assert error_line(result) == "Error: 1 workflow(s) not resumed"


def test_an_unknown_id_among_several_is_reported_and_the_others_are_done(app):
    workflow = Welcome.create()
    result = invoke(app, "cancel", str(workflow.id), "999999")
    assert "workflow 999999: workflow 999999 does not exist" in result.output
    assert "canceled 1 workflow(s)" in result.output
    assert error_line(result) == "Error: 1 workflow(s) not canceled"
    assert_workflow_state(workflow, "canceled")


def test_an_operation_by_filter_asks_first_and_acts_on_every_match(app):
    paused = [failed_fulfilment() for _ in range(3)]
    other = Welcome.create()

    refused = invoke(app, "cancel", "--state", "paused", input="n\n")
    assert "Cancel 3 workflow(s)? [y/N]" in refused.output
    assert refused.exit_code == 1
    assert_workflow_state(paused[0], "paused")

    accepted = invoke(app, "cancel", "--class", "FulfilOrder", "--state", "paused", input="y\n")
    assert accepted.exit_code == 0
    assert accepted.output.endswith("canceled 3 workflow(s)\n")
    for workflow in paused:
        assert_workflow_state(workflow, "canceled")
    assert_workflow_state(other, "ready")
    assert invoke(app, "pause", "--class", "Welcome", "--yes").output == "paused 1 workflow(s)\n"
    assert_workflow_state(other, "paused")
    assert invoke(app, "resume", "--state", "canceled", "-y").exit_code == 1


def test_skip_and_reattempt_take_the_step_by_name_when_several_are_due(app):
    workflow = FulfilOrder.create(hero=new_order())
    perform_step_inline(workflow, "reserve")  # now charge and pack are both due
    line = error_line(invoke(app, "skip", str(workflow.id)))
    assert line.startswith("Error: 1 workflow(s) not skipped")
    result = invoke(app, "skip", str(workflow.id), "--step", "charge")
    assert result.output == "skipped 1 workflow(s)\n"
    result = invoke(app, "reattempt", "--step", "pack", "--yes")
    assert result.output == "reattempted 1 workflow(s)\n"
    speedrun(workflow)
    assert_workflow_state(workflow, "finished")


def test_operations_need_ids_or_a_filter_but_not_both(app):
    line = error_line(invoke(app, "cancel"))
    assert line.startswith("Error: give workflow ids, or filter options (--class")
    line = error_line(invoke(app, "cancel", "1", "--state", "ready"))
    assert line == "Error: give workflow ids or filter options, not both"
    assert error_line(invoke(app, "pause", "--class", "Nope")).startswith(
        "Error: unknown workflow class 'Nope'"
    )


def test_housekeeping_prints_what_it_did(app):
    workflow = Welcome.create()
    speedrun(workflow)
    with travel(timedelta(days=31)):
        result = invoke(app, "housekeeping")
    assert result.exit_code == 0
    assert result.output.startswith("housekeeping: deleted 1 workflow(s) and 1 execution(s);")


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        (
            "text",
            [
                "FulfilOrder (4 steps)",
                "  reserve                  start",
                "  charge                   after reserve, wait 1:00:00",
                "  pack                     after reserve",
                "  ship                     after charge, pack",
            ],
        ),
        (
            "mermaid",
            [
                "flowchart TD",
                '  reserve["reserve"]',
                '  charge["charge"]',
                '  pack["pack"]',
                '  ship["ship"]',
                "  reserve --> charge",
                "  reserve --> pack",
                "  charge --> ship",
                "  pack --> ship",
            ],
        ),
        (
            "dot",
            [
                'digraph "FulfilOrder" {',
                "  rankdir=TB;",
                '  "reserve";',
                '  "charge";',
                '  "pack";',
                '  "ship";',
                '  "reserve" -> "charge";',
                '  "reserve" -> "pack";',
                '  "charge" -> "ship";',
                '  "pack" -> "ship";',
                "}",
            ],
        ),
    ],
)
def test_graph_prints_the_dag_as_text_mermaid_or_dot(app, fmt, expected):
    result = invoke(app, "graph", "FulfilOrder", "--format", fmt)
    assert result.exit_code == 0
    assert result.output.splitlines() == expected


def test_graph_of_an_unknown_class_is_one_error_line(app):
    assert error_line(invoke(app, "graph", "Nope")).startswith("Error: unknown workflow class")


def test_migration_writes_a_revision_into_the_apps_migrations_folder(app, tmp_path: Path):
    directory = str(tmp_path / "migrations")
    line = error_line(invoke(app, "migration", "--directory", directory))
    assert "run 'flask db init' first" in line
    Migrate(app, db, directory=directory)
    migrate_init(directory)
    result = invoke(app, "migration")
    assert result.exit_code == 0, result.output
    versions = tmp_path / "migrations" / "versions"
    *wrote, last = result.output.splitlines()
    assert last == "run 'flask db upgrade' to apply them"
    written = [Path(line.removeprefix("wrote ")) for line in wrote]
    assert sorted(written) == sorted(versions.glob("*.py"))
    tables, leases = written[:2]
    assert any("op.create_table('geneva_signals'" in p.read_text() for p in written)
    assert "op.create_table('geneva_workflows'" in tables.read_text()
    assert "op.add_column('geneva_step_executions'" in leases.read_text()
    assert any("op.create_table('geneva_schedule_ticks'" in p.read_text() for p in written)
    line = error_line(invoke(app, "migration"))
    assert line.startswith(f"Error: {versions} already holds every flask-geneva revision")


# -- signal ------------------------------------------------------------------------------------


def waiting_for_approval() -> Any:
    workflow = AwaitApproval.create()
    speedrun(workflow)
    assert_waiting_for(workflow, "approved")
    return workflow


def test_signal_wakes_the_waiting_step_and_a_repeat_with_its_key_is_a_duplicate(app):
    workflow = waiting_for_approval()
    args = ("signal", str(workflow.id), "approved", "--payload", '{"by": "ada"}')
    first = invoke(app, *args, "--idempotency-key", "k-1")
    assert first.exit_code == 0, first.output
    assert first.output.startswith(f"signal 'approved' (key 'k-1') to workflow {workflow.id}: ")
    assert "stored as signal" in first.output and "woke step 'record'" in first.output
    again = invoke(app, *args, "--idempotency-key", "k-1")
    assert again.exit_code == 0, again.output
    assert "duplicate of signal" in again.output and "nothing changed" in again.output
    speedrun(workflow)
    assert_workflow_state(workflow, "finished")
    e = geneva.tables.signals
    rows = db.session.execute(sa.select(e.c.payload).where(e.c.workflow_id == workflow.id)).all()
    assert [tuple(r) for r in rows] == [({"by": "ada"},)]


def test_a_signal_nobody_waits_for_yet_is_stored_as_pending(app):
    workflow = AwaitApproval.create()  # 'ask' has not run: nothing waits yet
    result = invoke(app, "signal", str(workflow.id), "approved")
    assert result.exit_code == 0, result.output
    assert result.output.rstrip().endswith("pending (no step waits for it now)")
    speedrun(workflow)  # the buffered signal is consumed when 'record' starts
    assert_workflow_state(workflow, "finished")


def test_a_signal_to_a_paused_workflow_says_it_waits_for_resume(app):
    workflow = waiting_for_approval()
    assert invoke(app, "pause", str(workflow.id)).exit_code == 0
    result = invoke(app, "signal", str(workflow.id), "approved")
    assert result.exit_code == 0, result.output
    assert result.output.rstrip().endswith("pending until the workflow is resumed")
    assert invoke(app, "resume", str(workflow.id)).exit_code == 0
    speedrun(workflow)
    assert_workflow_state(workflow, "finished")


def test_a_waiting_step_shows_in_show_and_list(app):
    workflow = waiting_for_approval()
    steps = invoke(app, "show", str(workflow.id)).output.split("Steps:\n")[1].splitlines()
    assert steps[1].split()[:3] == ["⧗", "record", "waiting,"]
    assert "times out at" in steps[1]
    assert "record (waiting)" in invoke(app, "list").output
    assert [
        line.split()[0] for line in invoke(app, "list", "--step", "record").output.splitlines()[1:]
    ] == [str(workflow.id)]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--payload", "{not json"), "Error: --payload is not JSON: "),
        (("--payload", '"' + "x" * 70_000 + '"'), "Error: the payload of signal 'approved' is "),
    ],
)
def test_signal_refuses_a_bad_payload_in_one_line(app, args, expected):
    workflow = waiting_for_approval()
    line = error_line(invoke(app, "signal", str(workflow.id), "approved", *args))
    assert line.startswith(expected), line
    assert_waiting_for(workflow, "approved")


def test_signal_to_an_unknown_or_finished_workflow_is_one_error_line(app):
    assert error_line(invoke(app, "signal", "987654", "approved")) == (
        "Error: no workflow with id 987654"
    )
    done = Welcome.create()
    speedrun(done)
    line = error_line(invoke(app, "signal", str(done.id), "approved"))
    assert line.startswith("Error: Cannot signal 'approved' to a finished workflow")
    result = invoke(app, "signal", "٣", "approved")
    assert result.exit_code == 2 and "is not a whole number" in result.output


def test_list_and_operations_take_the_attention_filter(app):
    late = Welcome.create()  # its step is due now; no worker runs here
    with travel(timedelta(hours=1)):
        listed = invoke(app, "list", "--attention", "overdue")
        assert listed.exit_code == 0 and f"\n{late.id} " in listed.output
        paused = invoke(app, "pause", "--attention", "overdue", "--yes")
        assert paused.output == "paused 1 workflow(s)\n"
    assert_workflow_state(late, "paused")
    wrong = invoke(app, "list", "--attention", "sick")
    assert wrong.exit_code == 2 and "'sick' is not one of" in wrong.output


class Flaky(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def call(self) -> None:
        raise (KeyError if self.id % 2 else TimeoutError)("upstream gateway")


def test_list_and_operations_take_the_error_filters(app):
    made = [Flaky.create(allow_multiple=True) for _ in range(3)]
    for workflow in made:
        with pytest.raises((KeyError, TimeoutError)):
            perform_next_step(workflow)
    keyed = {w.id for w in made if w.id % 2}
    listed = invoke(app, "list", "--error", "GATEWAY")
    assert listed.exit_code == 0
    assert all(f"\n{w.id} " in listed.output for w in made)
    by_class = invoke(app, "list", "--error-class", "KeyError")
    assert {w.id for w in made if f"\n{w.id} " in by_class.output} == keyed
    canceled = invoke(app, "cancel", "--error-class", "KeyError", "--yes")
    assert canceled.output == f"canceled {len(keyed)} workflow(s)\n"
    for workflow in made:
        assert_workflow_state(workflow, "canceled" if workflow.id in keyed else "paused")
    assert "no workflows match" in invoke(app, "list", "--error", "nothing like it").output
    refused = invoke(app, "list", "--error", "a\x00b")
    assert refused.exit_code != 0 and "NUL" in refused.output

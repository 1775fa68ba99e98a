"""Outputs, map steps and cursors on the detail page (SPEC 11, 12), on every database.

Small maps run through the real executor; the 10,000-item map and the exact progress
sentence with running items are stored as the engine stores them (one row per item,
the producer's ``item_count``), since 10,000 real runs would only slow the test.
"""

from __future__ import annotations

import re
import time
from datetime import timedelta
from html import unescape
from typing import Any
from typing import ClassVar

import pytest
import sqlalchemy as sa
from admin_helpers import PREFIX
from flask_sqlalchemy import SQLAlchemy

from flask_geneva import Geneva
from flask_geneva import clock
from flask_geneva import step
from flask_geneva.admin import items
from flask_geneva.testing import perform_next_step
from flask_geneva.testing import speedrun

db = SQLAlchemy()
geneva = Geneva(db)


class Report(geneva.Workflow):  # type: ignore[name-defined,misc]
    value: ClassVar[Any] = None

    @step
    def build(self) -> Any:
        return Report.value


class Fanout(geneva.Workflow):  # type: ignore[name-defined,misc]
    pages: ClassVar[Any] = ["one", "bad", "three"]
    failing = True

    @step
    def split(self) -> Any:
        return Fanout.pages

    @step(for_each="split")
    def summarise(self) -> str:
        if self.item == "bad" and Fanout.failing:
            raise ValueError(f"cannot summarise item {self.item_index}")
        return str(self.item).upper()

    @step
    def join(self, summarise: list[str]) -> str:
        return " ".join(summarise)


def detail(admin: Any, workflow: Any) -> str:
    response = admin.get(f"{PREFIX}/workflows/{workflow.id}")
    assert response.status_code == 200, response.text
    return str(response.text)


def store_items(workflow: Any, states: list[tuple[str, str | None]], output: Any = None) -> None:
    """Store the producer's row (its item count) and one execution per item."""
    e = geneva.tables.executions
    now = clock.now()
    common = dict(workflow_id=workflow.id, scheduled_for=now, created_at=now, updated_at=now)
    rows = [
        dict(
            common,
            step_name="summarise",
            state=state,
            outcome=outcome,
            item_index=index,
            started_at=None if state == "scheduled" else now,
            finished_at=now if state in ("completed", "failed") else None,
            output=output if state == "completed" else None,
        )
        for index, (state, outcome) in enumerate(states)
    ]
    with db.engine.begin() as conn:
        conn.execute(
            e.insert(),
            [
                dict(
                    common,
                    step_name="split",
                    state="completed",
                    outcome="success",
                    item_count=len(states),
                    output=["x"] * len(states),
                    started_at=now,
                    finished_at=now,
                )
            ],
        )
        for start in range(0, len(rows), 1000):
            conn.execute(e.insert(), rows[start : start + 1000])


def test_an_output_shows_escaped_as_one_line_and_whole_behind_details(app, admin):
    Report.value = {"html": "<script>alert(1)</script>", "n": 1}
    wf = Report.create()
    speedrun(wf)
    html = detail(admin, wf)
    assert "<script>alert(1)</script>" not in html
    cell = re.search(r'<td class="output">(.*?)</td>', html, re.S)
    assert cell is not None
    assert cell.group(1) == (
        "<code>{&#34;html&#34;: &#34;&lt;script&gt;alert(1)&lt;/script&gt;&#34;, "
        "&#34;n&#34;: 1}</code>"
    )


def test_a_long_output_is_cut_in_the_table_and_a_huge_one_links_to_its_whole_value(app, admin):
    Report.value = ["<b>word</b>"] * 20
    wf = Report.create()
    speedrun(wf)
    html = detail(admin, wf)
    summary = re.search(r'<details class="output-value"><summary>(.*?)</summary>', html)
    assert summary is not None
    assert len(unescape(summary.group(1))) == items.OUTPUT_PREVIEW
    assert summary.group(1).endswith("…")
    assert "whole value" not in html
    assert html.count("&lt;b&gt;word&lt;/b&gt;") == 20 + 5  # all in <pre>, 5 in the line

    Report.value = {"blob": "y" * 200_000}
    big = Report.create()
    speedrun(big)
    html = detail(admin, big)
    assert "y" * 3_900 in html
    assert "y" * (items.OUTPUT_SHOWN + 1) not in html  # never the whole value inline
    link = re.search(r'href="([^"]+/output)">whole value</a>', html)
    assert link is not None
    whole = admin.get(link.group(1))
    assert whole.status_code == 200
    assert whole.mimetype == "text/plain"
    assert whole.headers["X-Content-Type-Options"] == "nosniff"
    assert "y" * 200_000 in whole.text
    assert admin.get(f"{PREFIX}/workflows/{wf.id}/executions/{big.id}00/output").status_code == 404


def test_a_map_node_shows_its_progress_and_a_failed_item_its_failure(app, admin):
    Fanout.pages = ["one", "bad", "three"]
    wf = Fanout.create()
    with pytest.raises(ValueError, match="cannot summarise item 1"):
        speedrun(wf)
    assert wf.state == "paused"
    html = detail(admin, wf)
    node = re.search(r'<g class="node state-failed focus" data-step="summarise".*?</g>', html, re.S)
    assert node is not None
    assert '<text x="' in node.group(0)
    assert ">1/3 done · 1 failed · 1 scheduled</text>" in node.group(0)  # paused
    assert "Step <code>summarise</code> item 1 failed" in html
    assert "cannot summarise item 1" in html
    # Items are collapsed under their step: one row for the map, its items behind it.
    assert html.count('data-map="summarise"') == 1
    assert '<tr data-item="1"' in html


def test_the_progress_names_only_the_kinds_that_are_not_zero(app, admin):
    wf = Fanout.create()
    states = [("completed", "success")] * 36 + [("skipped", "skipped")]
    states += [("in_progress", None)] * 2 + [("failed", "failed")]
    store_items(wf, states, output="ok")
    html = detail(admin, wf)
    assert ">37/40 done · 2 running · 1 failed</text>" in html
    other = Fanout.create()
    store_items(other, [("completed", "success")] * 3 + [("scheduled", None)])
    assert ">3/4 done · 1 scheduled</text>" in detail(admin, other)


def test_the_items_page_filters_by_state_a_page_at_a_time(app, admin):
    wf = Fanout.create()
    states = [("completed", "success"), ("failed", "failed")] * 60
    store_items(wf, states, output="<i>ok</i>")
    url = f"{PREFIX}/workflows/{wf.id}/steps/summarise/items"
    page = admin.get(url, query_string={"state": "failed"})
    assert page.status_code == 200
    shown = [int(i) for i in re.findall(r'<tr data-item="(\d+)"', page.text)]
    assert shown == list(range(1, 100, 2))  # the first 50 failed items
    assert "60/120 done · 60 failed" in page.text
    assert 'data-filter="failed" aria-current="page">failed (60)' in page.text
    after = re.search(r'href="([^"]+after=\d+)">next items', page.text)
    assert after is not None
    rest = admin.get(after.group(1).replace("&amp;", "&"))
    assert [int(i) for i in re.findall(r'<tr data-item="(\d+)"', rest.text)] == list(
        range(101, 120, 2)
    )
    assert "next items" not in rest.text
    done = admin.get(url, query_string={"state": "done"})
    assert "&lt;i&gt;ok&lt;/i&gt;" in done.text and "<i>ok</i>" not in done.text
    assert admin.get(url, query_string={"state": "bogus"}).status_code == 400
    assert admin.get(f"{PREFIX}/workflows/{wf.id}/steps/split/items").status_code == 404


def test_an_item_counts_by_its_latest_execution(app, admin):
    Fanout.pages, Fanout.failing = ["one", "bad"], True
    wf = Fanout.create()
    with pytest.raises(ValueError, match="cannot summarise item 1"):
        speedrun(wf)
    assert ">1/2 done · 1 failed</text>" in detail(admin, wf)
    Fanout.failing = False
    try:
        wf.reattempt(step="summarise")
        speedrun(wf)
    finally:
        Fanout.failing = True
    assert wf.state == "finished"
    html = detail(admin, wf)
    assert ">2/2 done</text>" in html
    assert "item 1 failed" not in html


def test_a_10000_item_map_renders_bounded_and_fast(app, admin):
    wf = Fanout.create()
    states = [("completed", "success")] * 9_990 + [("in_progress", None)] * 5
    states += [("scheduled", None)] * 5
    store_items(wf, states, output={"rows": 12})
    detail(admin, wf)  # warm
    started = time.perf_counter()
    html = detail(admin, wf)
    took = time.perf_counter() - started
    assert ">9,990/10,000 done · 5 running · 5 scheduled</text>" in html
    assert len(re.findall(r'<tr data-item="', html)) == 20
    assert len(html) < 200_000
    assert took < 2.0, f"the detail page took {took:.2f} s"
    page = admin.get(f"{PREFIX}/workflows/{wf.id}/steps/summarise/items?state=running")
    assert [int(i) for i in re.findall(r'<tr data-item="(\d+)"', page.text)] == list(
        range(9_990, 9_995)
    )


def test_a_resumable_executions_shows_its_cursor_iterations_and_what_it_continues(app, admin):
    Report.value = None
    wf = Report.create()
    perform_next_step(wf)
    e = geneva.tables.executions
    now = clock.now()
    with db.engine.begin() as conn:
        first = conn.execute(sa.select(e.c.id).where(e.c.workflow_id == wf.id)).scalar_one()
        conn.execute(
            e.update()
            .where(e.c.id == first)
            .values(cursor={"after": "<u>7</u>"}, iterations=3, outcome="success")
        )
        conn.execute(
            e.insert(),
            [
                dict(
                    workflow_id=wf.id,
                    step_name="build",
                    state="scheduled",
                    scheduled_for=now + timedelta(minutes=1),
                    created_at=now,
                    updated_at=now,
                    cursor=1234,
                    iterations=1,
                    continues_id=first,
                )
            ],
        )
    html = detail(admin, wf)
    assert "cursor {&#34;after&#34;: &#34;&lt;u&gt;7&lt;/u&gt;&#34;} · 3 iterations" in html
    assert f"cursor 1234 · 1 iteration · continues #{first}" in html

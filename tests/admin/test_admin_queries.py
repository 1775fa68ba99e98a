"""flask_geneva.queries: filters, keyset pages, batches and capped counts on every database."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy

from flask_geneva import Geneva
from flask_geneva import clock
from flask_geneva import operations
from flask_geneva import queries
from flask_geneva import reads
from flask_geneva import step
from flask_geneva.failures import recent_failures
from flask_geneva.queries import WorkflowFilter
from flask_geneva.testing import perform_next_step
from flask_geneva.testing import travel

db = SQLAlchemy()
geneva = Geneva(db)


class Order(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "adminq_orders"
    id = sa.Column(sa.Integer, primary_key=True)


class Boom(Exception):
    pass


class ShipWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def pick(self) -> None:
        pass

    @step
    def pack(self) -> None:
        raise Boom("no boxes")


class MailWorkflow(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def send(self) -> None:
        pass


def _orders(n: int) -> list[Order]:
    orders = [Order() for _ in range(n)]
    db.session.add_all(orders)
    db.session.commit()
    return orders


def test_filters_select_by_class_state_hero_and_current_step_newest_first(app):
    orders = _orders(3)
    ships = [ShipWorkflow.create(hero=o) for o in orders]
    mail = MailWorkflow.create(hero=orders[0])
    perform_next_step(ships[0])  # pick done; pack scheduled
    try:
        perform_next_step(ships[0])  # pack fails: paused
    except Boom:
        pass
    ships[1].cancel()

    every = queries.list_workflows(geneva, WorkflowFilter(), limit=10)
    assert [r["id"] for r in every] == sorted([w.id for w in ships] + [mail.id], reverse=True)
    by_class = queries.list_workflows(
        geneva, WorkflowFilter(workflow_type="ShipWorkflow"), limit=10
    )
    assert {r["id"] for r in by_class} == {w.id for w in ships}
    paused = WorkflowFilter(states=("paused",))
    assert [r["id"] for r in queries.list_workflows(geneva, paused, limit=10)] == [ships[0].id]
    hero = WorkflowFilter(hero_type="Order", hero_id=str(orders[0].id))
    assert {r["id"] for r in queries.list_workflows(geneva, hero, limit=10)} == {
        ships[0].id,
        mail.id,
    }
    at_pack = WorkflowFilter(step="pack")
    assert [r["id"] for r in queries.list_workflows(geneva, at_pack, limit=10)] == [ships[0].id]
    at_pick = WorkflowFilter(step="pick", workflow_type="ShipWorkflow")
    # ships[1] was canceled: its pick execution is canceled, not current
    assert [r["id"] for r in queries.list_workflows(geneva, at_pick, limit=10)] == [ships[2].id]
    assert queries.current_steps(geneva, [ships[0].id]) == {ships[0].id: [("pack", "failed")]}
    failures = recent_failures(geneva)
    assert [(f["id"], f["step_name"], f["error_class"], f["error_message"]) for f in failures] == [
        (ships[0].id, "pack", f"{__name__}.Boom", "no boxes")
    ]


@pytest.mark.parametrize("limit", [1, 1000], ids=["many-candidates", "few-candidates"])
def test_the_step_filter_finds_the_same_workflows_whichever_plan_it_picks(app, monkeypatch, limit):
    monkeypatch.setattr(queries, "STEP_CANDIDATES_LIMIT", limit)
    orders = _orders(3)
    ships = [ShipWorkflow.create(hero=o) for o in orders]
    for workflow in ships[:2]:
        perform_next_step(workflow)  # pick done, pack scheduled
    with pytest.raises(Boom):
        perform_next_step(ships[0])  # pack failed: paused
    operations.perform(geneva, "reattempt", [ships[0].id])  # a newer pack execution
    at_pack = WorkflowFilter(step="pack")
    assert [r["id"] for r in queries.list_workflows(geneva, at_pack, limit=10)] == [
        ships[1].id,
        ships[0].id,
    ]
    at_pick = WorkflowFilter(step="pick")
    assert [r["id"] for r in queries.list_workflows(geneva, at_pick, limit=10)] == [ships[2].id]
    assert queries.list_workflows(geneva, WorkflowFilter(step="nope"), limit=10) == []


def test_time_filters_bound_creation_and_update_times(app):
    orders = _orders(2)
    old = MailWorkflow.create(hero=orders[0])
    with travel(timedelta(hours=2)):
        new = MailWorkflow.create(hero=orders[1])
        cut = clock.now() - timedelta(hours=1)
    created_after = WorkflowFilter(created_after=cut)
    assert [r["id"] for r in queries.list_workflows(geneva, created_after, limit=5)] == [new.id]
    created_before = WorkflowFilter(created_before=cut)
    assert [r["id"] for r in queries.list_workflows(geneva, created_before, limit=5)] == [old.id]
    assert [
        r["id"] for r in queries.list_workflows(geneva, WorkflowFilter(updated_after=cut), limit=5)
    ] == [new.id]
    assert [
        r["id"] for r in queries.list_workflows(geneva, WorkflowFilter(updated_before=cut), limit=5)
    ] == [old.id]


def test_keyset_pages_and_batches_cover_every_match_once_even_while_acting(app):
    orders = _orders(7)
    created = [MailWorkflow.create(hero=o) for o in orders]
    expected = sorted((w.id for w in created), reverse=True)
    f = WorkflowFilter(workflow_type="MailWorkflow", states=("ready",))
    page1 = queries.list_workflows(geneva, f, limit=3)
    page2 = queries.list_workflows(geneva, f, limit=3, before_id=page1[-1]["id"])
    page3 = queries.list_workflows(geneva, f, limit=3, before_id=page2[-1]["id"])
    assert [r["id"] for r in page1 + page2 + page3] == expected
    seen: list[int] = []
    for batch in queries.iter_ids(geneva, f, batch_size=2):
        assert len(batch) <= 2
        seen.extend(batch)
        operations.perform(geneva, "pause", batch)  # removes them from the filter
    assert seen == expected
    assert queries.count_matching(geneva, f) == 0
    assert queries.count_matching(geneva, WorkflowFilter(states=("paused",))) == 7


def test_counts_per_state_are_exact_or_capped_and_include_every_state(app):
    orders = _orders(5)
    for o in orders:
        MailWorkflow.create(hero=o)
    ShipWorkflow.create(hero=orders[0])
    counts = queries.counts_by_state(geneva, "MailWorkflow")
    assert counts == {"ready": 5, "performing": 0, "paused": 0, "finished": 0, "canceled": 0}
    assert queries.counts_by_state(geneva)["ready"] == 6
    assert queries.counts_by_state(geneva, "MailWorkflow", cap=3)["ready"] == 3
    both = queries.counts_by_type_and_state(geneva, ["MailWorkflow", "ShipWorkflow"], cap=100)
    assert both["ShipWorkflow"]["ready"] == 1 and both["MailWorkflow"]["ready"] == 5
    assert reads.workflow_types(geneva) == ["MailWorkflow", "ShipWorkflow"]
    assert queries.count_matching(geneva, WorkflowFilter(), cap=4) == 4


def test_an_unknown_state_in_a_filter_is_refused_with_the_valid_names():
    with pytest.raises(ValueError, match="'done'.*ready"):
        WorkflowFilter(states=("done",))

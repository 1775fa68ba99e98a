"""The Definitions page and the overview's warning: the deploy census in the admin."""

from __future__ import annotations

import re

import sqlalchemy as sa
from admin_helpers import PREFIX
from flask_sqlalchemy import SQLAlchemy
from helpers import deploy

from flask_geneva import Geneva
from flask_geneva import clock
from flask_geneva import step
from flask_geneva.testing import perform_next_step

db = SQLAlchemy()
geneva = Geneva(db)


class Shipment(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def pack(self) -> None:
        pass

    @step
    def label(self) -> None:
        pass

    @step
    def ship(self) -> None:
        pass


class ShipmentNoLabel(geneva.Workflow):  # type: ignore[name-defined,misc]
    """The next version, which forgot to say what became of ``label``."""

    @step
    def pack(self) -> None:
        pass

    @step
    def ship(self) -> None:
        pass


class ShipmentFixed(geneva.Workflow):  # type: ignore[name-defined,misc]
    removed_steps = ("label",)

    @step
    def pack(self) -> None:
        pass

    @step
    def ship(self) -> None:
        pass


def on_label(cls: type) -> None:
    workflow = Shipment.create()
    perform_next_step(workflow)  # pack; label scheduled
    deploy(geneva, workflow, cls)


def test_a_stranded_workflow_warns_on_the_overview_and_the_page_gives_the_fix(admin):
    on_label(ShipmentNoLabel)
    overview = admin.get(f"{PREFIX}/").text
    assert 'data-stranded="1"' in overview and f'href="{PREFIX}/definitions"' in overview
    page = admin.get(f"{PREFIX}/definitions").text
    assert 'data-stranded="true"' in page
    section = re.search(r'data-type="ShipmentNoLabel".*?</section>', page, re.S).group(0)
    assert re.search(
        r'data-step="label" data-stranded="true"><td><code>label</code></td>\s*'
        r'<td class="num">1</td>',
        section,
    )
    assert "add it to ShipmentNoLabel.removed_steps" in section
    # The workflow was created under Shipment's graph: an older one for this class.
    assert 'data-fingerprint-status="old"' in section


def test_with_removed_steps_the_page_says_nothing_is_stranded(admin):
    on_label(ShipmentFixed)
    overview = admin.get(f"{PREFIX}/").text
    assert "data-stranded" not in overview
    page = admin.get(f"{PREFIX}/definitions").text
    assert 'data-stranded="false"' in page
    assert re.search(r'data-step="label" data-stranded="false">', page)
    assert "skipped by <code>removed_steps</code>" in page


def test_a_type_with_no_class_is_stranded_with_the_pin_as_its_fix(admin):
    w = geneva.tables.workflows
    now = clock.now()
    with geneva.engine().begin() as conn:
        conn.execute(
            sa.insert(w).values(type="RenamedAway", state="ready", created_at=now, updated_at=now)
        )
    page = admin.get(f"{PREFIX}/definitions").text
    section = re.search(r'data-type="RenamedAway".*?</section>', page, re.S).group(0)
    assert "no class" in section and "__geneva_type__ = &#39;RenamedAway&#39;" in section
    # Every class of this process is listed, those with no workflows too.
    assert 'data-type="Shipment"' in page and "No ongoing workflows." in page

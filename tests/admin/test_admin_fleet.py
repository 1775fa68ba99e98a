"""The Fleet page: runs, failures, queue delay and run time per class and step."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from admin_helpers import PREFIX
from flask_sqlalchemy import SQLAlchemy

from flask_geneva import Geneva
from flask_geneva import fleet
from flask_geneva import step
from flask_geneva.testing import perform_next_step
from flask_geneva.testing import travel

db = SQLAlchemy()
geneva = Geneva(db)


class Broken(Exception):
    pass


class Shipping(geneva.Workflow):  # type: ignore[name-defined,misc]
    @step
    def pack(self) -> None:
        pass

    @step
    def label(self) -> None:
        raise Broken("printer jammed")


def test_percentiles_are_nearest_rank():
    assert fleet.percentile([], 50) is None
    assert fleet.percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.0
    assert fleet.percentile([float(n) for n in range(1, 101)], 95) == 95.0


def test_the_fleet_counts_runs_and_failures_per_step_within_the_window(app, admin):
    for _ in range(4):
        workflow = Shipping.create()
        with travel(timedelta(seconds=30)):  # each started 30 s after it was due
            perform_next_step(workflow)  # pack
            with pytest.raises(Broken):
                perform_next_step(workflow)  # label fails: paused
    found = {(s.type, s.step_name): s for s in fleet.fleet(geneva, "1h").steps}
    pack, label = found[("Shipping", "pack")], found[("Shipping", "label")]
    assert (pack.runs, pack.failures, label.runs, label.failures) == (4, 0, 4, 4)
    assert 29 <= pack.queue_p50 <= 31 and label.failure_rate == 1.0
    text = admin.get(f"{PREFIX}/fleet?window=1h").text
    row = re.search(r'<tr data-step="Shipping:label">.*?</tr>', text, re.S).group(0)
    assert 'data-runs="4"' in row and 'data-failure-rate="1.0"' in row
    assert re.search(r'<td class="num" data-share="1.0">100.0 %</td>', text)  # all paused
    with travel(timedelta(hours=2)):
        assert fleet.fleet(geneva, "1h").steps == ()
        assert len(fleet.fleet(geneva, "24h").steps) == 2
        later = admin.get(f"{PREFIX}/fleet?window=1h").text
    assert "No step started in this window." in later


def test_an_unknown_window_is_a_400(admin):
    response = admin.get(f"{PREFIX}/fleet?window=3y")
    assert response.status_code == 400 and "Window must be one of 1h, 24h, 7d" in response.text
    with pytest.raises(ValueError, match="unknown window"):
        fleet.fleet(geneva, "3y")


def test_a_window_with_more_runs_than_the_sample_keeps_the_newest_of_both_ended_states(
    app, admin, monkeypatch: pytest.MonkeyPatch
):
    # Completed and failed runs interleaved in time: the sample is the newest runs
    # whatever their state (each state's range is read on its own, then merged).
    monkeypatch.setattr(fleet, "SAMPLE", 5)
    for n in range(4):
        workflow = Shipping.create()
        with travel(timedelta(minutes=2 * n)):
            perform_next_step(workflow)  # pack: completed
        with travel(timedelta(minutes=2 * n + 1)), pytest.raises(Broken):
            perform_next_step(workflow)  # label: failed
    with travel(timedelta(minutes=8)):
        found = fleet.fleet(geneva, "1h")
        page = admin.get(f"{PREFIX}/fleet?window=1h").text
    runs = {(s.step_name, s.runs, s.failures) for s in found.steps}
    # The newest five of eight runs: the last three labels and the last two packs.
    assert found.sampled and runs == {("label", 3, 3), ("pack", 2, 0)}
    assert "the newest 5 of them" in page

"""The admin's Fleet page: per class and step over 1 h, 24 h or 7 d, as SVG bars.

Runs, failure rate, queue delay and run time (p50 and p95) from
:func:`flask_geneva.fleet.fleet`, and each class's paused share from the capped
counts the overview uses. The charts are SVG drawn by the template: no script, no
build.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Any

from flask import Blueprint
from flask import abort
from flask import render_template
from flask import request

from .. import fleet as fleet_data
from .. import queries
from .. import reads
from ..metrics import paused_share
from .views import COUNT_CAP

if TYPE_CHECKING:
    from ..extension import Geneva


def register(bp: Blueprint, ext: Geneva) -> None:
    """Add the Fleet route to the blueprint."""

    @bp.get("/fleet")
    def fleet() -> Any:
        window = request.args.get("window", "24h")
        if window not in fleet_data.WINDOWS:
            abort(400, description=f"Window must be one of {', '.join(fleet_data.WINDOWS)}.")
        found = fleet_data.fleet(ext, window)
        types = sorted(set(reads.workflow_types(ext)) | set(ext.registry))
        counts = queries.counts_by_type_and_state(ext, types, cap=COUNT_CAP)
        paused = {t: paused_share(counts.get(t, {})) for t in types}
        longest = max((s.run_p95 or 0 for s in found.steps), default=0) or 1
        slowest = max((s.queue_p95 or 0 for s in found.steps), default=0) or 1
        busiest = max((s.runs for s in found.steps), default=0) or 1
        return render_template(
            "geneva/fleet.html",
            fleet=found,
            windows=list(fleet_data.WINDOWS),
            paused=paused,
            cap=COUNT_CAP,
            scale={"run": longest, "queue": slowest, "runs": busiest},
            sample=fleet_data.SAMPLE,
        )

"""The admin's Definitions page: the deploy census, as ``flask geneva check`` reports it.

For every workflow class this process defines, and every stored type with ongoing
workflows: its graph's fingerprint, the ongoing workflows by fingerprint (created
under the current graph, an older one, or before fingerprints were recorded), the
executions waiting on steps the class no longer defines, and the paused workflows
stranded on such a step, each problem with its fix. The overview links here, with a
warning, when something is stranded (:func:`stranded`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING
from typing import Any

from flask import Blueprint
from flask import current_app
from flask import render_template

from .. import census as deploy_census

if TYPE_CHECKING:
    from ..extension import Geneva


def register(bp: Blueprint, ext: Geneva) -> None:
    """Add the Definitions route to the blueprint."""

    @bp.get("/definitions")
    def definitions() -> Any:
        found = deploy_census.census(ext)
        _remember(found)
        return render_template("geneva/definitions.html", census=found)


#: The overview's warning reuses a census this many seconds old: a deploy's effect does
#: not change from second to second, and a census at a million rows takes ~150 ms.
STRANDED_TTL = 30.0
#: Where an app keeps its last count: (when, how many), in ``app.extensions``.
_CACHE_KEY = "geneva.stranded"


def stranded(ext: Geneva) -> int:
    """How many stored types have ongoing workflows a deploy left stranded (the overview).

    Counted at most every :data:`STRANDED_TTL` seconds per app; the Definitions page
    always counts afresh (and refreshes this count).
    """
    cached = current_app.extensions.get(_CACHE_KEY)
    if cached is not None and time.monotonic() - cached[0] < STRANDED_TTL:
        return int(cached[1])
    return _remember(deploy_census.census(ext))


def _remember(found: deploy_census.Census) -> int:
    count = sum(1 for t in found.types if t.stranded)
    current_app.extensions[_CACHE_KEY] = (time.monotonic(), count)
    return count

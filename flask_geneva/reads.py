"""Connections for the console's reads: the lists, counts, census, metrics and fleet.

Each statement they run is bounded by an index, a few milliseconds of work. On
PostgreSQL, though, a correlated ``LIMIT 1`` subquery (the step and error filters'
probe per workflow) carries a cost estimate as if it ran for every row, which crosses
``jit_above_cost``: the server then spends half a second compiling a query that runs
in 20 ms (measured at a million workflows). :func:`connect` turns JIT off for the
transaction of these reads only (``SET LOCAL``), nothing else on the app's engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import sqlalchemy as sa

if TYPE_CHECKING:
    from .extension import Geneva


@contextmanager
def connect(ext: Geneva) -> Iterator[sa.Connection]:
    """A connection of the app's engine for short reads (JIT off on PostgreSQL)."""
    with ext.engine().connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SET LOCAL jit = off")
        yield conn

"""Connections for the console's reads (the lists, counts, census, metrics and fleet),
and the stored workflow types they start from.

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


def workflow_types(ext: Geneva) -> list[str]:
    """Return every stored workflow type, sorted (a loose index scan: one seek per type).

    Includes types that no class in this process declares any more (renamed or deleted
    classes), so the admin can show their orphaned rows.
    """
    w = ext.tables.workflows.c
    found: list[str] = []
    with connect(ext) as conn:
        while True:
            query = sa.select(sa.func.min(w.type))
            if found:
                query = query.where(w.type > found[-1])
            value = conn.execute(query).scalar()
            if value is None:
                return found
            found.append(str(value))

"""Data along the edges: a step's output stored as JSON, read back by its descendants.

A body's return value is checked here before it is recorded (:func:`checked`): JSON,
at most ``GENEVA_MAX_OUTPUT_BYTES``, and, for the producer of a map step, a list of at
most ``GENEVA_MAX_MAP_ITEMS`` elements. The rules store it with the execution's outcome.

A body reads its ancestors' outputs (``self.output_of``, its parameters) and, in a map
step, its item (``self.item``) through :class:`StepData`, on the body's own session:
what it reads belongs to the transaction its writes commit in. Outputs never change
once stored, so a map's list is parsed once per process and shared by its items.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import TYPE_CHECKING
from typing import Any
from typing import ClassVar

import sqlalchemy as sa

from .errors import InvalidStateError
from .errors import OutputError
from .records import json_size
from .states import Outcome
from .states import StepState
from .store import done_clause

if TYPE_CHECKING:
    from .graph import StepGraph
    from .store import Tables


def checked(
    value: Any, step: str, graph: StepGraph, *, max_bytes: int, max_items: int
) -> int | None:
    """Check ``value`` can be stored as step ``step``'s output; return its item count.

    :return: for the producer of a map step, how many items its list holds; else None.
    :raises OutputError: not JSON, too large, or (a producer) not a list or too long.
    """
    if value is None and step not in graph.producers:
        return None
    try:
        size, nul = json_size(value)
    except ValueError as error:
        raise OutputError(
            f"step {step!r} returned {type(value).__name__} that cannot be stored as its "
            f"output: {error}. A step's output is stored as JSON (at most "
            f"GENEVA_MAX_OUTPUT_BYTES={max_bytes:,} bytes): return dicts, lists, strings, "
            "numbers, booleans or None, or store the data in your own table and return its id"
        ) from None
    if nul:
        raise OutputError(
            f"step {step!r} returned a value holding a NUL character, which PostgreSQL's "
            "JSON cannot store (refused on every database alike): escape or drop it. A "
            f"step's output is JSON of at most GENEVA_MAX_OUTPUT_BYTES={max_bytes:,} bytes"
        )
    if size > max_bytes:
        raise OutputError(
            f"step {step!r} returned {size:,} bytes of JSON, over GENEVA_MAX_OUTPUT_BYTES="
            f"{max_bytes:,}: store large data in your own table (or a file store) and "
            "return its id"
        )
    if step not in graph.producers:
        return None
    if not isinstance(value, list | tuple):
        mappers = sorted(m for m, p in graph.maps.items() if p == step)
        raise OutputError(
            f"step {step!r} returned {type(value).__name__}, but map step "
            f"{', '.join(map(repr, mappers))} runs over its output: it must return a list"
        )
    if len(value) > max_items:
        raise OutputError(
            f"step {step!r} returned {len(value):,} items, over GENEVA_MAX_MAP_ITEMS="
            f"{max_items:,}: return fewer (batch them into lists of items) or raise the limit"
        )
    return len(value)


def read(conn: Any, tables: Tables, workflow_id: int, step: str, *, is_map: bool) -> Any:
    """The output of ``step``'s latest done execution (None if skipped or not done).

    A map step's output is the list of its items' outputs in item order (None for a
    skipped item); a map step that was skipped as a whole, or had no items, has the
    output its own row holds (None, or ``[]``).
    """
    e = tables.executions
    where = (
        e.c.workflow_id == workflow_id,
        e.c.step_name == step,
        e.c.superseded_at.is_(None),  # not a rerun's history
        done_clause(e),
    )
    row = conn.execute(
        sa.select(e.c.state, e.c.output)
        .where(*where, e.c.item_index.is_(None))
        .order_by(e.c.id.desc())
        .limit(1)
    ).first()
    if row is not None or not is_map:
        return None if row is None or row.state == StepState.SKIPPED else row.output
    items: dict[int, Any] = {}
    for index, output in conn.execute(
        sa.select(e.c.item_index, e.c.output)
        .where(*where, e.c.item_index.is_not(None))
        .order_by(e.c.item_index, e.c.id)
    ):
        items[index] = output
    if not items:
        return None
    return [items.get(i) for i in range(max(items) + 1)]


class _Lists:
    """The producers' lists already parsed in this process (an output never changes).

    Keyed by the database, the producer's execution and when it completed, so a
    database rebuilt with the same ids (tests, a restore) is not mistaken for another.
    """

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self.lists: OrderedDict[tuple[Any, ...], list[Any]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, conn: Any, tables: Tables, workflow_id: int, producer: str) -> list[Any]:
        e = tables.executions
        found = conn.execute(
            sa.select(e.c.id, e.c.completed_at)
            .where(
                e.c.workflow_id == workflow_id,
                e.c.step_name == producer,
                e.c.item_index.is_(None),
                e.c.superseded_at.is_(None),
                e.c.state == StepState.COMPLETED,
                e.c.outcome == Outcome.SUCCESS,
            )
            .order_by(e.c.id.desc())
            .limit(1)
        ).first()
        if found is None:
            raise InvalidStateError(f"step {producer!r} has no completed execution to map over")
        key = (str(conn.engine.url), found.id, found.completed_at)
        with self.lock:
            cached = self.lists.get(key)
            if cached is not None:
                self.lists.move_to_end(key)
                return cached
        output = conn.execute(sa.select(e.c.output).where(e.c.id == found.id)).scalar()
        value = list(output or [])
        with self.lock:
            self.lists[key] = value
            while len(self.lists) > self.size:
                self.lists.popitem(last=False)
        return value


_lists = _Lists()


def item(conn: Any, tables: Tables, workflow_id: int, producer: str, index: int) -> Any:
    """Element ``index`` of the list ``producer`` returned (a map step's item)."""
    return _lists.get(conn, tables, workflow_id, producer)[index]


class StepData:
    """A workflow's view of data along the edges (mixed into the workflow base class)."""

    _geneva: ClassVar[Any]
    _geneva_step: str | None
    __geneva_definition__: ClassVar[Any]
    id: Any

    #: In a map step's body: the element of the producer's list this execution runs
    #: for, and its index in that list (None in other steps).
    item: Any = None
    item_index: int | None = None

    def output_of(self, step: str) -> Any:
        """The output of ``step``'s latest completed execution (None if it was skipped).

        Inside a body, ``step`` must be an ancestor of the running step: its output is
        final before this step starts. A map step's output is the list of its items'
        outputs, in item order. Outside a body any step may be named (None while it
        has not completed).

        :raises ValueError: inside a body, ``step`` is not an ancestor of it (a parallel
            branch, a descendant, itself or no step at all).
        """
        graph = self.__geneva_definition__.graph
        running = self._geneva_step
        if running is not None and step not in graph.ancestors.get(running, ()):
            if step not in graph.steps:
                problem = "is not a step of this workflow"
            elif step == running:
                problem = "is the running step itself"
            else:
                problem = "is not an ancestor of it (it may still be running or not have run)"
            raise ValueError(
                f"step {running!r} cannot read the output of {step!r}: {step!r} {problem}; "
                "a step reads only the outputs of the steps it runs after"
            )
        if running is None and step not in graph.steps:
            raise ValueError(f"{type(self).__name__} has no step {step!r}")
        ext = self._geneva
        conn = ext.db.session.connection(bind_arguments={"mapper": ext.Workflow})
        return read(conn, ext.tables, self.id, step, is_map=step in graph.maps)

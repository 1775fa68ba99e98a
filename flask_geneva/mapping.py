"""The mapped classes on the app's ``db.Model``: ``Workflow`` and ``StepExecution``.

:func:`build_models` maps :class:`~flask_geneva.workflow.WorkflowBase` onto the
workflows table (application classes subclass the result, one class per workflow,
single-table polymorphism on ``type``) and :class:`StepExecutionBase` onto the step
executions table; :func:`set_row_values` loads a row already read into an instance.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import relationship
from sqlalchemy.orm.attributes import set_committed_value

from . import error_search
from .models import BASE_IDENTITY
from .models import EXECUTIONS_TABLE
from .models import SIGNALS_TABLE
from .models import WORKFLOWS_TABLE
from .models import actions_table
from .models import execution_columns
from .models import execution_indexes
from .models import signal_columns
from .models import signal_indexes
from .models import workflow_columns
from .models import workflow_indexes
from .models_mysql import attach_mysql_ddl
from .workflow import WorkflowBase

if TYPE_CHECKING:
    from .extension import Geneva


def set_row_values(instance: Any, values: Any) -> None:
    """Set a mapped instance's column attributes from a row, as committed (loaded) state."""
    for key, name in _column_keys(type(instance)):
        if name in values:
            set_committed_value(instance, key, values[name])


_COLUMN_KEYS: dict[type, tuple[tuple[str, str], ...]] = {}


def _column_keys(cls: type) -> tuple[tuple[str, str], ...]:
    """(attribute key, column name) of a mapped class: looked up once, not per step."""
    found = _COLUMN_KEYS.get(cls)
    if found is None:
        mapper: Any = sa.inspect(cls)
        found = _COLUMN_KEYS[cls] = tuple(
            (prop.key, prop.columns[0].name) for prop in mapper.column_attrs
        )
    return found


class StepExecutionBase:
    """Behaviour of ``geneva.StepExecution`` rows (one attempt to run a step)."""

    id: Any
    workflow_id: Any
    step_name: Any
    state: Any
    outcome: Any
    scheduled_for: Any
    started_at: Any
    finished_at: Any
    error_class: Any
    error_message: Any
    error_traceback: Any
    meta: Any

    def __repr__(self) -> str:
        return (
            f"<StepExecution id={self.id} workflow={self.workflow_id} "
            f"step={self.step_name} state={self.state}>"
        )


def build_models(db: Any, ext: Geneva) -> tuple[type[Any], type[Any]]:
    """Create the ``Workflow`` and ``StepExecution`` mapped classes on ``db.Model``."""
    workflows = sa.Table(WORKFLOWS_TABLE, db.metadata, *workflow_columns(), *workflow_indexes())
    executions_table = sa.Table(
        EXECUTIONS_TABLE, db.metadata, *execution_columns(), *execution_indexes()
    )
    attach_mysql_ddl(workflows, executions_table)
    error_search.attach(executions_table)
    # Core only (no mapped class): delivery returns a read-only Signal (records.py).
    sa.Table(SIGNALS_TABLE, db.metadata, *signal_columns(), *signal_indexes())
    actions_table(db.metadata)  # Core only: the operator actions (the audit)

    class StepExecution(StepExecutionBase, db.Model):  # type: ignore[misc]
        __table__ = executions_table
        __mapper_args__ = {"properties": {"meta": executions_table.c["metadata"]}}

    class Workflow(WorkflowBase, db.Model):  # type: ignore[misc]
        _geneva_base = True
        _geneva = ext
        __table__ = workflows
        __mapper_args__ = {
            "polymorphic_on": workflows.c.type,
            "polymorphic_identity": BASE_IDENTITY,
        }
        executions = relationship(
            StepExecution,
            order_by=executions_table.c.id,
            viewonly=True,
        )

    # A row whose type names no class (renamed or deleted after a deploy) loads as the
    # base class instead of failing every query that meets it; the executor then pauses
    # it with an error naming the missing type. Subclasses share this map.
    Workflow.__mapper__.polymorphic_map = _FallbackMap(Workflow.__mapper__)
    return Workflow, StepExecution


class _FallbackMap(dict[Any, Any]):
    def __init__(self, base_mapper: Any) -> None:
        super().__init__(base_mapper.polymorphic_map)
        self._base = base_mapper

    def __missing__(self, key: Any) -> Any:
        return self._base


def identities(classes: Iterable[type[WorkflowBase]]) -> list[str]:
    """Return the stored identities of workflow classes."""
    return [c.__geneva_identity__ for c in classes]

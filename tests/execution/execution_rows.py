"""Read-back helpers shared by the execution contract tests.

Each test module has its own ``db``, ``geneva`` and ``Mark`` model (a row a step body
writes to prove it ran); ``Rows`` binds the helpers to them. Every read first ends the
session's transaction, so MariaDB's REPEATABLE READ never shows a snapshot older than
the step that just ran.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa


class Rows:
    """Fresh reads of workflows, executions and marks for one test module."""

    def __init__(self, db: Any, geneva: Any, mark_model: Any) -> None:
        self.db = db
        self.geneva = geneva
        self.mark_model = mark_model

    def fresh(self, instance: Any) -> Any:
        """Reload a row after ending the session's transaction (drops an old snapshot)."""
        self.db.session.commit()
        self.db.session.refresh(instance)
        return instance

    def executions(self, workflow: Any, step_name: str | None = None) -> list[Any]:
        """The workflow's executions (optionally of one step), oldest first, re-read."""
        self.db.session.commit()
        model = self.geneva.StepExecution
        query = (
            sa.select(model)
            .where(model.workflow_id == workflow.id)
            .order_by(model.id)
            .execution_options(populate_existing=True)
        )
        if step_name is not None:
            query = query.where(model.step_name == step_name)
        return list(self.db.session.scalars(query))

    def marks(self, workflow: Any) -> list[str]:
        """The names the workflow's step bodies marked, in the order they committed."""
        self.db.session.commit()
        mark = self.mark_model
        query = sa.select(mark.name).where(mark.workflow_id == workflow.id).order_by(mark.id)
        return list(self.db.session.scalars(query))

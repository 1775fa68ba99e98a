"""Operator commands on workflows by id: pause, resume, cancel, skip, reattempt.

The one service layer that ``Workflow.pause()`` & co., the CLI and the admin share. It
validates the input and loops over the ids; each workflow is one change through the
write path (:func:`flask_geneva.unit.change`), whose rules are in
:mod:`~flask_geneva.commands`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field
from typing import TYPE_CHECKING

from . import commands
from . import unit
from .commands import ALLOWED
from .commands import NEEDS_GRAPH
from .errors import GenevaError

if TYPE_CHECKING:
    from .extension import Geneva

__all__ = ["ALLOWED", "OperationResult", "perform"]


@dataclass
class OperationResult:
    """What a command did to a set of workflows."""

    operation: str
    #: Ids the command applied to.
    done: list[int] = field(default_factory=list)
    #: Ids it could not apply to, with the reason.
    errors: dict[int, str] = field(default_factory=dict)


def perform(
    ext: Geneva,
    operation: str,
    workflow_ids: Iterable[int],
    *,
    step: str | None = None,
    raise_errors: bool = True,
) -> OperationResult:
    """Apply ``operation`` to each workflow, one short transaction each.

    :param operation: ``pause``, ``resume``, ``cancel``, ``skip`` or ``reattempt``.
    :param step: for ``skip`` / ``reattempt``: the step; needed when several are due.
    :param raise_errors: raise the first :class:`GenevaError` instead of collecting it
        in :attr:`OperationResult.errors`.
    :raises InvalidStateError: the command is not allowed in the workflow's state.
    :raises WorkflowNotFoundError: no workflow has that id.
    """
    commands.check(operation)
    result = OperationResult(operation)

    def decide(snap: unit.Snapshot) -> str | None:
        if snap.transition.graph is None and operation in NEEDS_GRAPH:
            raise GenevaError(
                f"workflow {snap.workflow['id']} has type {snap.workflow['type']!r}, which "
                f"names no workflow class in this process; cannot {operation} it (cancel "
                "is still possible)"
            )
        return commands.command(snap.transition, operation, step)

    for workflow_id in workflow_ids:
        try:
            unit.change(ext, workflow_id, decide)
        except GenevaError as error:
            if raise_errors:
                raise
            result.errors[workflow_id] = str(error)
            continue
        result.done.append(workflow_id)
        ext.log.info("[workflow id=%s] %s by operator", workflow_id, operation)
    return result

"""Operator commands on workflows by id: pause, resume, cancel, skip, reattempt, reruns.

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
from typing import Any

from . import commands
from . import unit
from .commands import ALLOWED
from .commands import NEEDS_GRAPH
from .errors import GenevaError

if TYPE_CHECKING:
    from .extension import Geneva
    from .rerun_rules import RerunPlan

__all__ = ["ALLOWED", "OperationResult", "perform"]


@dataclass
class OperationResult:
    """What a command did to a set of workflows."""

    operation: str
    #: Ids the command applied to.
    done: list[int] = field(default_factory=list)
    #: Ids it could not apply to, with the reason.
    errors: dict[int, str] = field(default_factory=dict)
    #: What the command changed in each workflow it applied to, as the audit records it
    #: (``{"rerun": [...]}``, ``{"skipped": [...]}``, ``{"canceled": [...]}``; None: nothing
    #: beyond the command itself).
    details: dict[int, dict[str, Any] | None] = field(default_factory=dict)


def perform(
    ext: Geneva,
    operation: str,
    workflow_ids: Iterable[int],
    *,
    step: str | None = None,
    actor: str | None = None,
    reason: str | None = None,
    raise_errors: bool = True,
) -> OperationResult:
    """Apply ``operation`` to each workflow, one short transaction each.

    Each is recorded in the operator actions with ``actor`` and ``reason``, in the
    transaction that makes the change.

    :param operation: ``pause``, ``resume``, ``cancel``, ``skip``, ``reattempt``,
        ``resume_at`` or ``rerun_from``.
    :param step: for ``skip`` / ``reattempt``: the step; needed when several are due.
        For ``resume_at`` / ``rerun_from``: the step (required).
    :param actor: who gives the command (an e-mail, a user name); stored as given.
    :param reason: why, in words; shown on the workflow's page.
    :param raise_errors: raise the first :class:`GenevaError` instead of collecting it
        in :attr:`OperationResult.errors`.
    :raises InvalidStateError: the command is not allowed in the workflow's state.
    :raises WorkflowNotFoundError: no workflow has that id.
    :raises ValueError: ``actor`` or ``reason`` is not a string of acceptable length.
    """
    commands.check(operation)
    actor, reason = check_audit(actor, reason)
    result = OperationResult(operation)

    def decide(snap: unit.Snapshot) -> dict[str, Any] | None:
        if snap.transition.graph is None and operation in NEEDS_GRAPH:
            raise GenevaError(
                f"workflow {snap.workflow['id']} has type {snap.workflow['type']!r}, which "
                f"names no workflow class in this process; cannot {operation} it (cancel "
                "is still possible)"
            )
        return commands.command(snap.transition, operation, step, actor=actor, reason=reason)

    for workflow_id in workflow_ids:
        try:
            result.details[workflow_id] = unit.change(ext, workflow_id, decide)
        except GenevaError as error:
            if raise_errors:
                raise
            result.errors[workflow_id] = str(error)
            continue
        result.done.append(workflow_id)
        ext.log.info(
            "[workflow id=%s] %s by %s%s",
            workflow_id,
            operation,
            actor or "an operator",
            f": {reason}" if reason else "",
        )
    return result


def plan_rerun(ext: Geneva, workflow_id: int, step: str) -> RerunPlan:
    """What ``rerun_from(step)`` would do to one workflow, read under its lock; no change.

    :raises InvalidStateError: the workflow has no step ``step``.
    :raises WorkflowNotFoundError: no workflow has that id.
    """

    def decide(snap: unit.Snapshot) -> RerunPlan:
        if snap.transition.graph is None:
            raise GenevaError(
                f"workflow {workflow_id} has type {snap.workflow['type']!r}, which names no "
                "workflow class in this process; cannot plan a rerun"
            )
        raise unit.Discard(snap.transition.rerun_plan(step))

    return unit.change(ext, workflow_id, decide)


#: The longest actor the operator actions store (its column), and the longest reason.
MAX_ACTOR = 191
MAX_REASON = 2000


def check_audit(actor: object, reason: object) -> tuple[str | None, str | None]:
    """Check an operator call's ``actor`` and ``reason``; return them stripped (None if blank).

    :raises ValueError: not a string, too long, or holding control characters (which no
        database stores alike).
    """
    found: list[str | None] = []
    for name, value, limit in (("actor", actor, MAX_ACTOR), ("reason", reason, MAX_REASON)):
        if value is None:
            found.append(None)
            continue
        if not isinstance(value, str):
            raise ValueError(f"{name}= must be a string, got {value!r}")
        text = value.strip()
        if len(text) > limit:
            raise ValueError(f"{name}= is {len(text):,} characters long; at most {limit:,}")
        allowed = "\n\t" if name == "reason" else ""
        if any(ord(c) < 32 and c not in allowed for c in text) or "\x7f" in text:
            raise ValueError(f"{name}= holds a control character: {text[:40]!r}")
        found.append(text or None)
    return found[0], found[1]

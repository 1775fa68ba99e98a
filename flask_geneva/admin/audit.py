"""The operator actions of one workflow, as its page shows them.

Every command an operator gives (in the admin, the CLI or the Python API) is a row of
``geneva_operator_actions``, written in the transaction that made the change. The page
lists the newest :data:`MAX_ACTIONS` as sentences ("canceled by ops@example.com at
10:04: duplicate order", "signal approved sent by ops@example.com at 10:06: approved on
the phone") and marks them on the timeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING
from typing import Any

import sqlalchemy as sa

from .present import offset

if TYPE_CHECKING:
    from ..extension import Geneva

#: The page shows at most this many actions (the newest).
MAX_ACTIONS = 50

_DONE = {
    "pause": "paused",
    "resume": "resumed",
    "cancel": "canceled",
    "skip": "skipped step {step}",
    "reattempt": "reattempted step {step}",
    "resume_at": "resumed at step {step}",
    "rerun_from": "rerun from step {step}",
    "signal": "signal {signal} sent",
}

_DETAIL = {"rerun": "re-runs", "skipped": "skipped", "canceled": "canceled"}


@dataclass(frozen=True)
class Action:
    """One recorded operator action."""

    id: int
    action: str
    step_name: str | None
    actor: str | None
    reason: str | None
    detail: Any
    created_at: datetime
    #: Where it is on the timeline, in percent (None: no timeline is drawn).
    left: float | None = None

    @property
    def done(self) -> str:
        """What was done, in words: ``canceled``, ``rerun from step charge``,
        ``signal settled sent``."""
        detail = self.detail if isinstance(self.detail, dict) else {}
        return _DONE.get(self.action, self.action).format(
            step=self.step_name, signal=detail.get("signal", "?")
        )

    @property
    def by(self) -> str:
        return self.actor or "an operator"

    @property
    def changes(self) -> str:
        """What else the command changed: ``re-runs charge, ship``, a signal's ``woke
        step record``; "" when nothing."""
        if self.action == "signal":
            return f"woke step {self.step_name}" if self.step_name else ""
        if not isinstance(self.detail, dict):
            return ""
        parts = []
        for key, label in _DETAIL.items():
            names = self.detail.get(key)
            if isinstance(names, list) and names:
                parts.append(f"{label} {', '.join(map(str, names))}")
        return "; ".join(parts)


def load(ext: Geneva, workflow_id: int) -> tuple[list[Action], bool]:
    """The workflow's newest actions, oldest first, and whether older ones exist."""
    a = ext.tables.actions
    query = (
        sa.select(a)
        .where(a.c.workflow_id == workflow_id)
        .order_by(a.c.id.desc())
        .limit(MAX_ACTIONS + 1)
    )
    with ext.engine().connect() as conn:
        rows = [r._mapping for r in conn.execute(query)]
    found = [
        Action(
            id=r["id"],
            action=r["action"],
            step_name=r["step_name"],
            actor=r["actor"],
            reason=r["reason"],
            detail=r["detail"],
            created_at=r["created_at"],
        )
        for r in rows[:MAX_ACTIONS]
    ]
    return list(reversed(found)), len(rows) > MAX_ACTIONS


def placed(actions: list[Action], start: datetime, span: float) -> list[Action]:
    """The actions with their place on a timeline of ``span`` seconds from ``start``."""
    return [replace(a, left=offset(a.created_at, start, span)) for a in actions]


#: The actions that end a pause (the workflow runs again, or ends).
_ENDS_PAUSE = frozenset({"resume", "resume_at", "rerun_from", "cancel"})


@dataclass(frozen=True)
class Pause:
    """A stretch of the timeline the workflow spent paused, in percent of the span."""

    left: float
    width: float
    #: ``by an operator`` or ``after step charge failed``.
    cause: str


def pauses(
    actions: list[Action],
    executions: list[dict[str, Any]],
    state: str,
    now: datetime,
    start: datetime,
    span: float,
) -> list[Pause]:
    """The paused stretches: from an operator's pause or a step's failure to what ended it.

    A failure pauses the workflow (unless its policy canceled it, which a cancel ends at
    once); the next resume, resume-at, rerun or cancel ends the pause. A pause nothing
    ended yet runs to ``now`` when the workflow is still paused.
    """
    starts = [(a.created_at, "by an operator") for a in actions if a.action == "pause"]
    starts += [
        (x["finished_at"], f"after step {x['step_name']} failed")
        for x in executions
        if x["state"] == "failed" and x["finished_at"] is not None
    ]
    ends = sorted(a.created_at for a in actions if a.action in _ENDS_PAUSE)
    found: list[Pause] = []
    covered_until: datetime | None = None
    for began, cause in sorted(starts):
        if covered_until is not None and began < covered_until:
            continue  # already inside a pause
        end = next((t for t in ends if t >= began), None)
        if end is None:
            if state != "paused":
                continue
            end = now
        left = offset(began, start, span)
        found.append(Pause(left, max(offset(end, start, span) - left, 0.3), cause))
        covered_until = end
    return found

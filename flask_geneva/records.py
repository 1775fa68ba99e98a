"""The values the rules work on: an execution as a record, a step's result, a stored error.

Plain data, no behaviour beyond small views: :mod:`~flask_geneva.transitions` decides
with them, :mod:`~flask_geneva.store` reads and writes them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from dataclasses import field
from datetime import datetime
from datetime import timedelta
from typing import Any

from .states import Outcome
from .states import StepState

#: The most of an error's message or traceback stored, in UTF-8 bytes: under the
#: 65,535 bytes of MariaDB's ``TEXT``, so every database stores the same text.
MAX_ERROR_BYTES = 60_000
#: The most of an exception's class name stored (the column's length).
MAX_CLASS_CHARS = 255


@dataclass
class ErrorInfo:
    """What is kept of an exception on the execution it failed.

    Every value is storable by construction, on every database: NUL bytes (which
    PostgreSQL refuses) and lone surrogates (a file name that was not UTF-8) are
    escaped, and a text too long for the column is cut, saying so.
    """

    error_class: str
    message: str
    traceback: str

    def __post_init__(self) -> None:
        self.error_class = storable(self.error_class, chars=MAX_CLASS_CHARS)
        self.message = storable(self.message)
        self.traceback = storable(self.traceback)

    @classmethod
    def from_exception(cls, error: BaseException, traceback_text: str) -> ErrorInfo:
        kind = type(error)
        name = (
            kind.__qualname__
            if kind.__module__ == "builtins"
            else f"{kind.__module__}.{kind.__qualname__}"
        )
        return cls(name, describe(error), traceback_text)


def describe(error: BaseException) -> str:
    """Return ``str(error)``, or a description of it when its ``__str__`` raises."""
    try:
        return str(error)
    except Exception as broken:
        try:
            shown = repr(error)
        except Exception:
            shown = f"<{type(error).__name__} object>"
        return f"{shown} (its __str__ raised {type(broken).__name__})"


def storable(text: str, *, chars: int | None = None, limit: int = MAX_ERROR_BYTES) -> str:
    """Return ``text`` as every database stores it: escaped, and cut to fit if needed.

    NUL becomes ``\\x00`` and a lone surrogate ``\\udcff``, so what is shown is what
    was there. A text over ``limit`` UTF-8 bytes (or ``chars`` characters) keeps its
    beginning and its end (a traceback's innermost frame is last) around a line that
    says how much was cut.
    """
    if not isinstance(text, str):
        text = str(text)
    text = text.replace("\x00", "\\x00")
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if chars is not None:
        if len(text) <= chars:
            return text
        return f"{text[: chars - 41]}…[cut: {len(text):,} characters]…{text[-20:]}"[:chars]
    size = len(text.encode("utf-8"))
    if size <= limit:
        return text
    note = f"\n… [trimmed: {size:,} bytes in all; the beginning and the end are kept] …\n"
    room = limit - len(note.encode("utf-8"))
    encoded = text.encode("utf-8")
    head = encoded[: room * 2 // 3].decode("utf-8", "ignore")
    tail = encoded[len(encoded) - room // 3 :].decode("utf-8", "ignore")
    return f"{head}{note}{tail}"


def json_size(value: Any) -> tuple[int, bool]:
    """``value`` as the JSON text a column stores: its size in UTF-8 bytes, and whether
    it holds a NUL character (which PostgreSQL's JSON cannot store).

    :raises ValueError: ``value`` is not JSON (an object JSON cannot encode, a NaN or an
        infinity, a cycle, nesting too deep); the message says why.
    """
    try:
        # The separators the JSON columns write with (SQLAlchemy's json.dumps defaults).
        text = json.dumps(value, allow_nan=False, default=_not_json)
    except (TypeError, ValueError, RecursionError) as error:
        raise ValueError(str(error)) from None
    return len(text.encode("utf-8")), "\\u0000" in text


def _not_json(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} {value!r} is not JSON")


@dataclass
class ExecutionRecord:
    """One execution row as the rules see it, with the changes decided for it."""

    id: int | None
    step_name: str
    state: str
    outcome: str | None
    scheduled_for: datetime
    attempt: int = 1
    consecutive_reattempts: int = 0
    huey_task_id: str | None = None
    started_at: datetime | None = None
    updated_at: datetime | None = None
    #: The lease's last refresh while the body ran (None: not yet, or a 0.1 row).
    heartbeat_at: datetime | None = None
    #: A map step's item: its index in the producer's list (None: not a map item).
    item_index: int | None = None
    #: On a producer's completed execution: how many items its output list holds.
    item_count: int | None = None
    #: For a resumable step: the execution this one continues (set when it is created).
    continues_id: int | None = None
    changes: dict[str, Any] = field(default_factory=dict)
    trigger: bool = False

    @property
    def is_done(self) -> bool:
        return self.state == StepState.SKIPPED or (
            self.state == StepState.COMPLETED and self.outcome == Outcome.SUCCESS
        )

    @property
    def is_active(self) -> bool:
        return self.state in (StepState.SCHEDULED, StepState.IN_PROGRESS, StepState.WAITING)


@dataclass
class StepResult:
    """How one execution ended, in the executor's words.

    ``action`` is one of: ``success``, ``finish``, ``skip``, ``reattempt``, ``cancel``,
    ``pause`` (in-step flow control or a precondition), ``failed`` (an exception whose
    policy ends in ``then`` = ``pause`` or ``cancel``), ``drop`` (cancel the execution
    alone: the workflow was not runnable when it was claimed), ``continue`` (a
    resumable step's checkpoint ended the execution; a new one continues it).
    """

    action: str
    wait: timedelta = timedelta(0)
    error: ErrorInfo | None = None
    #: For reattempts: ``flow_control``, ``exception_policy`` or ``precondition``.
    reason: str | None = None
    #: For ``failed``: what happens to the workflow, ``pause`` or ``cancel``.
    then: str = "pause"
    #: The exception itself, when one caused this result (not stored; reported).
    exception: BaseException | None = None
    #: For ``success``: what the body returned, checked storable as JSON (None: nothing).
    output: Any = None
    #: For ``success`` of a map step's producer: how many items its output list holds.
    item_count: int | None = None
    #: For ``continue``: the cursor checkpointed last and the execution's iterations.
    cursor: Any = None
    iterations: int = 0


@dataclass(frozen=True)
class Signal:
    """A stored signal: what ``wf.signal()`` returns and a step body sees.

    Read-only. In a body that waited for it (``@step(wait_for=...)``) it is
    ``self.received_signal``.
    """

    id: int
    workflow_id: int
    name: str
    #: The JSON payload given at delivery (None if none).
    payload: Any
    idempotency_key: str | None
    received_at: datetime
    #: The step that consumed it, its execution, and when (None while pending).
    consumed_step: str | None = None
    consumed_by_execution_id: int | None = None
    consumed_at: datetime | None = None
    #: True when a signal with the same (workflow, name, idempotency key) was stored
    #: before: this is that stored signal, and the delivery changed nothing.
    duplicate: bool = False

    @property
    def pending(self) -> bool:
        """True until a step consumes it."""
        return self.consumed_at is None


@dataclass
class SignalRecord:
    """One signal row as the rules see it, with the changes decided for it."""

    id: int | None
    name: str
    payload: Any
    idempotency_key: str | None
    received_at: datetime
    consumed_step: str | None = None
    consumed_by_execution_id: int | None = None
    consumed_at: datetime | None = None
    changes: dict[str, Any] = field(default_factory=dict)

    @property
    def pending(self) -> bool:
        return self.consumed_at is None

    def public(self, workflow_id: int, *, duplicate: bool = False) -> Signal:
        assert self.id is not None
        return Signal(
            id=self.id,
            workflow_id=workflow_id,
            name=self.name,
            payload=self.payload,
            idempotency_key=self.idempotency_key,
            received_at=self.received_at,
            consumed_step=self.consumed_step,
            consumed_by_execution_id=self.consumed_by_execution_id,
            consumed_at=self.consumed_at,
            duplicate=duplicate,
        )

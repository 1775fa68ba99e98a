"""The one error tree of flask-geneva: every error it raises derives from GenevaError."""

from __future__ import annotations

from typing import Any


class GenevaError(Exception):
    """Base class of every error raised by flask-geneva."""


class DefinitionError(GenevaError):
    """A workflow class is defined wrongly.

    Raised when the class is created (at import time), never later. The message
    names the class and, where one is involved, the step.
    """


class InvalidStateError(GenevaError):
    """An external operation is not allowed in the workflow's current state.

    The message names the operation and the state, for example
    ``Cannot resume a finished workflow``.
    """


class ConfigurationError(GenevaError):
    """A ``GENEVA_*`` setting or an argument to :class:`~flask_geneva.Geneva` is wrong."""


class WorkflowExistsError(GenevaError):
    """An ongoing workflow of the same class already exists for this hero.

    Pass ``allow_multiple=True`` to :meth:`Workflow.create` to allow several.
    """


class StepExecutionError(GenevaError):
    """A step could not run; the recovery state was committed before this was raised.

    :ivar workflow_id: id of the workflow concerned.
    :ivar execution_id: id of the step execution concerned.
    """

    def __init__(self, message: str, *, workflow_id: Any = None, execution_id: Any = None):
        super().__init__(message)
        self.workflow_id = workflow_id
        self.execution_id = execution_id


class StepNotDefinedError(StepExecutionError):
    """The execution names a step that the workflow class no longer defines (after a deploy)."""


class UnresolvedReferenceError(StepExecutionError):
    """A stored reference (workflow type, hero type) names nothing this process knows."""


class WorkflowNotFoundError(GenevaError, LookupError):
    """No workflow has the given id (it was never created, or housekeeping deleted it)."""


class SignalError(GenevaError, ValueError):
    """A signal cannot be stored: its name, key or payload is not what a signal holds.

    The payload must be JSON-serialisable and at most ``GENEVA_MAX_SIGNAL_PAYLOAD``
    bytes as JSON; the message names the limit.
    """


class OutputError(GenevaError, ValueError):
    """A step's return value cannot be stored as its output.

    It must be JSON-serialisable and at most ``GENEVA_MAX_OUTPUT_BYTES`` bytes as JSON;
    a map step's producer must return a list of at most ``GENEVA_MAX_MAP_ITEMS``
    elements. Raised in the step's body, so its exception policy applies; the message
    names the step and the limit.
    """

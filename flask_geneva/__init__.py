"""Durable, multi-step workflows for Flask, stored in the app's SQL database, run by Huey."""

from __future__ import annotations

from .errors import ConfigurationError
from .errors import DefinitionError
from .errors import GenevaError
from .errors import InvalidStateError
from .errors import OutputError
from .errors import SignalError
from .errors import StepExecutionError
from .errors import StepNotDefinedError
from .errors import UnresolvedReferenceError
from .errors import WorkflowExistsError
from .errors import WorkflowNotFoundError
from .executor import ExecutionReport
from .extension import Geneva
from .housekeeping import HousekeepingSummary
from .operations import OperationResult
from .policy import ExceptionPolicy
from .queries import WorkflowFilter
from .records import Signal
from .rerun_rules import RerunPlan
from .steps import step

__version__ = "0.2.0.dev0"

# The public API (docs/api.md): these names, the documented attributes of Geneva and of
# its Workflow class, flask_geneva.testing and flask_geneva.signals. Every other module is
# internal and may change without notice.
__all__ = [
    "ConfigurationError",
    "DefinitionError",
    "ExceptionPolicy",
    "ExecutionReport",
    "Geneva",
    "GenevaError",
    "HousekeepingSummary",
    "InvalidStateError",
    "OperationResult",
    "OutputError",
    "RerunPlan",
    "Signal",
    "SignalError",
    "StepExecutionError",
    "StepNotDefinedError",
    "UnresolvedReferenceError",
    "WorkflowExistsError",
    "WorkflowFilter",
    "WorkflowNotFoundError",
    "step",
]

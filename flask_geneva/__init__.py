"""Durable, multi-step workflows for Flask, stored in the app's SQL database, run by Huey."""

from __future__ import annotations

from .errors import ConfigurationError
from .errors import DefinitionError
from .errors import GenevaError
from .errors import InvalidStateError
from .errors import StepExecutionError
from .errors import StepNotDefinedError
from .errors import WorkflowExistsError
from .errors import WorkflowNotFoundError
from .extension import Geneva
from .policy import ExceptionPolicy
from .steps import step

__version__ = "0.1.0"

__all__ = [
    "ConfigurationError",
    "DefinitionError",
    "ExceptionPolicy",
    "Geneva",
    "GenevaError",
    "InvalidStateError",
    "StepExecutionError",
    "StepNotDefinedError",
    "WorkflowExistsError",
    "WorkflowNotFoundError",
    "step",
]

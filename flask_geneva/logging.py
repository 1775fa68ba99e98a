"""Tagged log lines: ``[PaymentWorkflow id=12 hero=Payment:7] [execution=88 step=capture] ...``."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

#: The logger every flask-geneva message goes to.
logger = logging.getLogger("flask_geneva")


class TaggedLogger(logging.LoggerAdapter):  # type: ignore[type-arg,unused-ignore]
    """Prefixes each message with the workflow (and execution) it concerns."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        return f"{self.extra['geneva_tag']} {msg}" if self.extra else msg, kwargs


def workflow_tag(
    class_name: str, workflow_id: Any, hero_type: str | None, hero_id: str | None
) -> str:
    hero = f" hero={hero_type}:{hero_id}" if hero_type else ""
    return f"[{class_name} id={workflow_id}{hero}]"


def tagged(
    class_name: str,
    workflow_id: Any,
    hero_type: str | None = None,
    hero_id: str | None = None,
    *,
    execution_id: Any = None,
    step_name: str | None = None,
) -> TaggedLogger:
    """Return a logger adapter tagging messages with a workflow and optionally an execution."""
    tag = workflow_tag(class_name, workflow_id, hero_type, hero_id)
    if execution_id is not None:
        tag += f" [execution={execution_id} step={step_name}]"
    return TaggedLogger(logger, {"geneva_tag": tag, "geneva_workflow_id": workflow_id})

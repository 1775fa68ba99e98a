"""Tagged log lines: ``[PaymentWorkflow id=12 hero=Payment:7] [execution=88 step=capture] ...``.

One call, one line. Names in the tag (a class, a hero type and id, a step) and the
message with its arguments may come from anywhere: a hero id typed by a customer, an
exception message built from a bank's answer. Through the tagged logger, control
characters in any of them (a newline, a carriage return, an escape sequence) are written
escaped (``\\n``, ``\\r``, ``\\x1b``), so no value can start a line of its own that reads
like another workflow's log line.
"""

from __future__ import annotations

import logging
import numbers
import re
from collections.abc import Mapping
from collections.abc import MutableMapping
from typing import Any

#: The logger every flask-geneva message goes to.
logger = logging.getLogger("flask_geneva")

#: C0 and C1 control characters, DEL, and the Unicode line and paragraph separators
#: (``str.splitlines`` breaks on those too).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape(text: str) -> str:
    """Return ``text`` with every control character written as an escape (``\\n``, ``\\x1b``)."""
    return _CONTROL.sub(_escape_one, text)


def _text(value: Any, convert: Any = str) -> str:
    # A value whose __str__ raises must not cost the log line (nor raise at the call).
    try:
        return str(convert(value))
    except Exception:
        return f"<unprintable {type(value).__name__}>"


def _escape_one(match: re.Match[str]) -> str:
    char = match.group()
    return _NAMED.get(char) or (
        f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"
    )


class _Escaped:
    """A log argument that formats escaped, however the message formats it (%s or %r)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __str__(self) -> str:
        return escape(_text(self.value))

    def __repr__(self) -> str:
        return escape(_text(self.value, repr))


def _escaped_arg(value: Any) -> Any:
    # Numbers stay as they are, so %d and %.1f still work (their text has no controls).
    return value if isinstance(value, numbers.Number) else _Escaped(value)


class TaggedLogger(logging.LoggerAdapter):  # type: ignore[type-arg,unused-ignore]
    """Prefixes each message with the workflow (and execution) it concerns, escaped."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        text = escape(_text(msg))
        return f"{self.extra['geneva_tag']} {text}" if self.extra else text, kwargs

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        # LoggerAdapter.debug/info/... all end here. The arguments stay lazy (the record
        # formats them only if a handler emits it), each wrapped to format escaped.
        if not self.isEnabledFor(level):
            return
        if args and self.extra:
            # With arguments the whole line is a format string: a '%' in a name (a hero
            # id '50%s') must stay text, not take an argument.
            tag = str(self.extra["geneva_tag"]).replace("%", "%%")
            msg = f"{tag} {escape(_text(msg))}"
        else:
            msg = self.process(msg, kwargs)[0]
        if len(args) == 1 and isinstance(args[0], Mapping) and args[0]:
            args = ({key: _escaped_arg(value) for key, value in args[0].items()},)
        else:
            args = tuple(_escaped_arg(arg) for arg in args)
        # One frame more than LoggerAdapter.log: the record names the caller, not this file.
        kwargs["stacklevel"] = kwargs.get("stacklevel", 1) + 1
        self.logger.log(level, msg, *args, **kwargs)


def workflow_tag(
    class_name: str, workflow_id: Any, hero_type: str | None, hero_id: str | None
) -> str:
    """Return the workflow's part of the tag, with its names escaped."""
    hero = f" hero={escape(_text(hero_type))}:{escape(_text(hero_id))}" if hero_type else ""
    return f"[{escape(_text(class_name))} id={escape(_text(workflow_id))}{hero}]"


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
        tag += f" [execution={escape(_text(execution_id))} step={escape(_text(step_name))}]"
    return TaggedLogger(logger, {"geneva_tag": tag, "geneva_workflow_id": workflow_id})

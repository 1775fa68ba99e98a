"""``GENEVA_*`` settings: defaults, validation, and turning ``GENEVA_HUEY`` into a Huey.

Read once per app in ``init_app`` (``app.config.setdefault`` first, so the effective
defaults are visible in ``app.config``) into a frozen :class:`GenevaConfig`.
"""

from __future__ import annotations

import math
import os
import string
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from huey import Huey
from huey import MemoryHuey
from huey import PriorityRedisHuey
from huey import SqliteHuey

from .errors import ConfigurationError
from .policy import to_wait

#: Every setting with its default.
DEFAULTS: dict[str, Any] = {
    "GENEVA_HUEY": "sqlite:///geneva-huey.db",
    "GENEVA_HUEY_NAME": "geneva",
    "GENEVA_DELETE_FINISHED_AFTER": timedelta(days=30),
    "GENEVA_STUCK_IN_PROGRESS_AFTER": timedelta(hours=1),
    "GENEVA_HEARTBEAT_INTERVAL": timedelta(seconds=30),
    "GENEVA_STUCK_SCHEDULED_AFTER": timedelta(minutes=15),
    "GENEVA_STUCK_RECOVERY": "reattempt",
    "GENEVA_MAX_RECOVERIES": 5,
    "GENEVA_HOUSEKEEPING_BATCH_SIZE": 1000,
    "GENEVA_HOUSEKEEPING_INTERVAL": timedelta(minutes=5),
    "GENEVA_ADMIN_LOGS_URL": None,
    "GENEVA_ADMIN_HERO_URL": None,
    "GENEVA_MAX_SIGNAL_PAYLOAD": 64 * 1024,
    "GENEVA_MAX_OUTPUT_BYTES": 256 * 1024,
    "GENEVA_MAX_MAP_ITEMS": 10_000,
}


@dataclass(frozen=True)
class GenevaConfig:
    """The validated ``GENEVA_*`` settings of one app."""

    huey: Any
    huey_name: str
    delete_finished_after: timedelta | None
    stuck_in_progress_after: timedelta | None
    #: How often a worker renews the lease of a running body (at most a third of the
    #: step's ``stuck_after``).
    heartbeat_interval: timedelta
    stuck_scheduled_after: timedelta | None
    stuck_recovery: str
    max_recoveries: int | None
    housekeeping_batch_size: int
    housekeeping_interval: timedelta | None
    admin_logs_url: str | None
    #: The largest signal payload stored, in bytes of its JSON text.
    max_signal_payload: int = 64 * 1024
    #: The largest step output stored, in bytes of its JSON text.
    max_output_bytes: int = 256 * 1024
    #: The most items a map step's producer may return.
    max_map_items: int = 10_000

    @classmethod
    def from_mapping(cls, config: Any) -> GenevaConfig:
        check_admin_settings(config)
        recovery = config["GENEVA_STUCK_RECOVERY"]
        if recovery not in ("reattempt", "cancel"):
            raise ConfigurationError(
                f"GENEVA_STUCK_RECOVERY must be 'reattempt' or 'cancel', got {recovery!r}"
            )
        batch = config["GENEVA_HOUSEKEEPING_BATCH_SIZE"]
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ConfigurationError(
                f"GENEVA_HOUSEKEEPING_BATCH_SIZE must be a positive integer, got {batch!r}"
            )
        max_recoveries = config["GENEVA_MAX_RECOVERIES"]
        if max_recoveries is not None and (
            isinstance(max_recoveries, bool)
            or not isinstance(max_recoveries, int)
            or max_recoveries < 0
        ):
            raise ConfigurationError(
                "GENEVA_MAX_RECOVERIES must be a whole number of recoveries (0 or more) or "
                f"None for no limit, got {max_recoveries!r}"
            )
        max_payload = _positive(config, "GENEVA_MAX_SIGNAL_PAYLOAD", "number of bytes")
        max_output = _positive(config, "GENEVA_MAX_OUTPUT_BYTES", "number of bytes")
        max_items = _positive(config, "GENEVA_MAX_MAP_ITEMS", "number of items")
        return cls(
            huey=config["GENEVA_HUEY"],
            huey_name=str(config["GENEVA_HUEY_NAME"]),
            delete_finished_after=_duration(config, "GENEVA_DELETE_FINISHED_AFTER", optional=True),
            stuck_in_progress_after=_duration(
                config, "GENEVA_STUCK_IN_PROGRESS_AFTER", optional=True
            ),
            heartbeat_interval=_heartbeat_interval(config),
            stuck_scheduled_after=_duration(config, "GENEVA_STUCK_SCHEDULED_AFTER", optional=True),
            stuck_recovery=recovery,
            max_recoveries=max_recoveries,
            housekeeping_batch_size=batch,
            housekeeping_interval=_interval(config),
            admin_logs_url=config["GENEVA_ADMIN_LOGS_URL"],
            max_signal_payload=max_payload,
            max_output_bytes=max_output,
            max_map_items=max_items,
        )


def _positive(config: Any, name: str, what: str) -> int:
    value = config[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name} must be a positive {what}, got {value!r}")
    return value


#: The shortest ``GENEVA_HEARTBEAT_INTERVAL``: beats are database writes.
MIN_HEARTBEAT_INTERVAL = timedelta(seconds=0.1)


def _heartbeat_interval(config: Any) -> timedelta:
    interval = _duration(config, "GENEVA_HEARTBEAT_INTERVAL")
    assert interval is not None
    if interval < MIN_HEARTBEAT_INTERVAL:
        raise ConfigurationError(
            f"GENEVA_HEARTBEAT_INTERVAL must be at least {MIN_HEARTBEAT_INTERVAL.total_seconds()} "
            f"seconds (each beat is a database write), got {config['GENEVA_HEARTBEAT_INTERVAL']!r}"
        )
    return interval


def _interval(config: Any) -> timedelta | None:
    # Huey's scheduler looks at periodic tasks once a minute, on the minute.
    interval = _duration(config, "GENEVA_HOUSEKEEPING_INTERVAL", optional=True)
    if interval is not None and interval.total_seconds() % 60:
        raise ConfigurationError(
            "GENEVA_HOUSEKEEPING_INTERVAL must be a whole number of minutes (Huey runs "
            f"periodic tasks on the minute), got {config['GENEVA_HOUSEKEEPING_INTERVAL']!r}; "
            "use None to disable the periodic task"
        )
    return interval


def _duration(config: Any, key: str, *, optional: bool = False) -> timedelta | None:
    value = config[key]
    if value is None:
        if optional:
            return None
        raise ConfigurationError(f"{key} cannot be None")
    try:
        delta = to_wait(value)  # a finite duration, at most 100 years
    except TypeError:
        raise ConfigurationError(f"{key} must be a timedelta or seconds, got {value!r}") from None
    except ValueError as error:
        raise ConfigurationError(f"{key}: {error}") from None
    if delta <= timedelta(0):
        raise ConfigurationError(f"{key} must be positive, got {value!r}")
    return delta


# -- admin settings ---------------------------------------------------------------------------

#: The placeholders ``GENEVA_ADMIN_LOGS_URL`` may use.
ADMIN_LOGS_URL_FIELDS = (
    "workflow_id",
    "execution_id",
    "step",
    "type",
    "hero_type",
    "hero_id",
    "started_at",
    "finished_at",
)


#: The placeholders ``GENEVA_ADMIN_HERO_URL`` may use.
ADMIN_HERO_URL_FIELDS = ("workflow_id", "type", "hero_type", "hero_id")


def check_admin_settings(config: Any) -> None:
    """Raise :class:`ConfigurationError` for a wrong ``GENEVA_ADMIN_*`` setting.

    ``init_app`` calls it, and registering the admin blueprint calls it again (the
    admin reads these settings per request, so a value set in between is checked too).
    """
    authorize = config.get("GENEVA_ADMIN_AUTHORIZE")
    if authorize is not None and not callable(authorize):
        raise ConfigurationError(
            "GENEVA_ADMIN_AUTHORIZE must be a function (action) -> bool, or None, "
            f"got {authorize!r}"
        )
    _check_url_template(
        "GENEVA_ADMIN_LOGS_URL", config.get("GENEVA_ADMIN_LOGS_URL"), ADMIN_LOGS_URL_FIELDS
    )
    hero_url = config.get("GENEVA_ADMIN_HERO_URL")
    if not callable(hero_url):  # a callable (hero_type, hero_id) -> URL is checked per call
        _check_url_template("GENEVA_ADMIN_HERO_URL", hero_url, ADMIN_HERO_URL_FIELDS)
    metrics = config.get("GENEVA_ADMIN_METRICS", False)
    if not isinstance(metrics, bool):
        raise ConfigurationError(
            f"GENEVA_ADMIN_METRICS must be True or False (serve /metrics or not), got {metrics!r}"
        )
    interval = config.get("GENEVA_ADMIN_POLL_INTERVAL", 3)
    seconds = interval.total_seconds() if isinstance(interval, timedelta) else interval
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, (int, float))
        or not math.isfinite(seconds)
        or seconds <= 0
    ):
        raise ConfigurationError(
            "GENEVA_ADMIN_POLL_INTERVAL must be a positive number of seconds or a "
            f"timedelta, got {interval!r}"
        )


def _check_url_template(key: str, template: Any, allowed: tuple[str, ...]) -> None:
    if template is None:
        return
    if not isinstance(template, str):
        raise ConfigurationError(f"{key} must be a URL template (str) or None, got {template!r}")
    known = ", ".join("{" + name + "}" for name in allowed)
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(template)]
        unknown = [name for name in fields if name is not None and name not in allowed]
        # A format spec such as {workflow_id:d} fails only when filled (values are text).
        sample = "" if unknown else template.format_map(dict.fromkeys(allowed, "1"))
    except (ValueError, IndexError, KeyError, AttributeError) as error:
        raise ConfigurationError(
            f"{key} {template!r} is not a valid template ({error}); placeholders are {known}, "
            "and a literal brace is written twice"
        ) from None
    if unknown:
        raise ConfigurationError(
            f"{key} {template!r}: unknown placeholder {{{unknown[0]}}}; use {known}"
        )
    if not sample.startswith(("http://", "https://", "/")):
        raise ConfigurationError(
            f"{key} {template!r} must start with http://, https:// or / (the admin shows "
            "web links only)"
        )


def make_huey(value: Any, *, name: str, instance_path: str) -> Huey:
    """Return a Huey for ``GENEVA_HUEY``.

    Accepts a ``huey.Huey`` instance (used as is) or a URL:

    * ``sqlite:///relative/or/absolute/path.db`` — SqliteHuey; a relative path lives in
      the app's instance folder (the embedded default, no server needed);
    * ``redis://host:port/db`` — PriorityRedisHuey (Redis 5 or later), for several worker
      machines; the priority variant, so ``step_job_options`` priorities work;
    * ``memory://`` — MemoryHuey, in-process only (tests; a worker thread in the same
      process consumes it);
    * ``immediate://`` — MemoryHuey in Huey's immediate mode: each step runs as soon as
      its trigger is sent, in the sending thread (tests without a consumer).
    """
    if isinstance(value, Huey):
        return value
    if not isinstance(value, str):
        raise ConfigurationError(f"GENEVA_HUEY must be a huey.Huey or a URL, got {value!r}")
    scheme = urlsplit(value).scheme
    if scheme == "sqlite":
        path = value[len("sqlite:///") :] if value.startswith("sqlite:///") else ""
        if not path:
            raise ConfigurationError(f"GENEVA_HUEY {value!r}: expected sqlite:///path/to/file.db")
        if not os.path.isabs(path):
            os.makedirs(instance_path, exist_ok=True)
            path = os.path.join(instance_path, path)
        return SqliteHuey(name, filename=path)
    if scheme in ("redis", "rediss", "unix"):
        # Blocking reads make a new message reach an idle worker at once.
        return PriorityRedisHuey(name, url=value, blocking=True, read_timeout=1)
    if scheme == "memory":
        return MemoryHuey(name)
    if scheme == "immediate":
        return MemoryHuey(name, immediate=True)
    raise ConfigurationError(
        f"GENEVA_HUEY {value!r}: unsupported scheme {scheme!r}; "
        "use sqlite:///, redis://, memory:// or immediate://"
    )

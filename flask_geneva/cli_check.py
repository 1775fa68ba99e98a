"""``flask geneva check``: the deploy census as a gate for CI.

Run it with the code about to be deployed and the production database: it exits 1 when
an ongoing workflow would be stranded (an execution of a step its class no longer
defines nor lists in ``removed_steps``, a paused workflow that failed on such a step,
or a stored type no class stores) and prints the fix of each; 0 otherwise. The census
itself is :func:`~flask_geneva.census.census`.

``--format json`` prints one object (its keys are stable; new keys may be added)::

    {"stranded": true,
     "fixes": ["..."],
     "types": [{"type": "Signup", "class": "Signup", "stranded": true,
                "current_fingerprint": "9c1f...", "ongoing": 12,
                "fingerprints": [{"state": "ready", "fingerprint": "9c1f...",
                                  "status": "current", "count": 10}],
                "undefined_steps": [{"step": "send_welcome", "scheduled": 2,
                                     "waiting": 0, "in_progress": 0, "total": 2,
                                     "skipped_by": null, "stranded": true, "fix": "..."}],
                "paused": [{"step": "send_welcome", "count": 1, "first_id": 42,
                            "fix": "..."}],
                "fix": null}]}
"""

from __future__ import annotations

import json
from typing import Any

import click

from .census import Census
from .census import TypeCensus
from .census import census
from .cli import _ext
from .cli import geneva_cli

#: How many characters of a fingerprint the text output shows.
SHORT_FINGERPRINT = 12


@geneva_cli.command("check")
@click.option(
    "-f",
    "--format",
    "output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Text for people, JSON for scripts.",
)
def check_command(output: str) -> None:
    """Check that the loaded classes strand no ongoing workflow; exit 1 if one would be.

    For every workflow class: its ongoing workflows by fingerprint, the executions on
    steps it no longer defines, and stored types with no class, with the fix for each
    problem. Run it before a deploy (in CI) with the new code and the live database.
    """
    found = census(_ext())
    if output == "json":
        click.echo(json.dumps(as_json(found), indent=2, sort_keys=True))
    else:
        for line in as_text(found):
            click.echo(line)
    if found.stranded:
        raise SystemExit(1)


def as_json(found: Census) -> dict[str, Any]:
    """The census as the JSON object ``check --format json`` prints."""
    return {
        "stranded": found.stranded,
        "fixes": found.fixes(),
        "types": [_type_json(t) for t in found.types],
    }


def _type_json(t: TypeCensus) -> dict[str, Any]:
    return {
        "type": t.type,
        "class": t.class_name,
        "stranded": t.stranded,
        "current_fingerprint": t.current_fingerprint,
        "ongoing": t.ongoing_count,
        "fingerprints": [
            {"state": c.state, "fingerprint": c.fingerprint, "status": c.status, "count": c.count}
            for c in t.ongoing
        ],
        "undefined_steps": [
            {
                "step": u.step,
                "scheduled": u.scheduled,
                "waiting": u.waiting,
                "in_progress": u.in_progress,
                "total": u.total,
                "skipped_by": u.skipped_by,
                "stranded": u.stranded,
                "fix": u.fix,
            }
            for u in t.undefined_steps
        ],
        "paused": [
            {"step": p.step, "count": p.count, "first_id": p.first_id, "fix": p.fix}
            for p in t.paused
        ],
        "fix": t.fix,
    }


def as_text(found: Census) -> list[str]:
    """The census as the lines ``check`` prints: one block per type, then a verdict."""
    lines: list[str] = []
    for t in found.types:
        label = t.class_name or f"type {t.type!r} (no class)"
        if t.class_name is not None and t.class_name != t.type:
            label += f" (type {t.type!r})"
        mark = "STRANDED" if t.stranded else "ok"
        lines.append(f"{mark:<9}{label}: {t.ongoing_count} ongoing")
        for c in t.ongoing:
            short = (c.fingerprint or "-")[:SHORT_FINGERPRINT]
            lines.append(f"{'':<11}{c.state:<11}{c.status:<9}{short:<13}{c.count}")
        for u in t.undefined_steps:
            why = f"skipped by {u.skipped_by}" if u.skipped_by else "STRANDED"
            lines.append(
                f"{'':<11}step {u.step!r} (not defined, {why}): {u.scheduled} scheduled, "
                f"{u.waiting} waiting, {u.in_progress} in progress"
            )
        for p in t.paused:
            lines.append(f"{'':<11}step {p.step!r} (not defined): {p.count} paused on it")
        for fix in t.fixes():
            lines.append(f"{'':<11}fix: {fix}")
    if not found.types:
        lines.append("no workflow classes and no ongoing workflows")
    problems = len(found.fixes())
    if problems:
        lines.append(f"check failed: {problems} problem(s) would strand ongoing workflows")
    else:
        lines.append("check passed: no ongoing workflow would be stranded")
    return lines

"""The data-along-the-edges part of ``bench/all.py``: map throughput and output sizes.

Each measurement runs in a subprocess of its own through ``bench/all.py``'s runner,
one after another: ``bench/maps.py --throughput-only`` per thread configuration, and
``bench/cost.py``'s output sizes per database.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Callable
from typing import Any

#: Runs ``bench/cost.py``'s output-size measurement on one database.
OUTPUTS_CHILD = """
import json, sys
from bench import common, cost
app = common.make_app(common.DATABASES[sys.argv[1]](), "memory://")
result = {label: list(v) for label, v in cost.measure_outputs(app).items()}
print("RESULT " + json.dumps(result), flush=True)
"""


def measure(
    args: argparse.Namespace,
    configs: list[str],
    known: dict[str, tuple[str, str, str]],
    run: Callable[[list[str], float], dict[str, Any]],
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Map throughput per thread configuration, output-size cost per database."""
    maps: dict[str, dict[str, Any]] = {}
    outputs: dict[str, dict[str, Any]] = {}
    for name in configs:
        db, queue, worker_type = known[name]
        if worker_type != "thread":
            continue
        command = [sys.executable, "-m", "bench.maps", "--db", db, "--queue", queue]
        command += ["--items", str(args.map_items), "--workers", str(args.workers)]
        try:
            maps[name] = run([*command, "--throughput-only", "--json"], args.timeout)
            outputs[db] = run([sys.executable, "-c", OUTPUTS_CHILD, db], args.timeout)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"{name} maps/outputs FAILED: {exc}", file=sys.stderr, flush=True)
            continue
        print(f"{name:<18} maps and outputs measured", file=sys.stderr, flush=True)
    return maps, outputs


def print_tables(
    args: argparse.Namespace,
    maps: dict[str, dict[str, Any]],
    outputs: dict[str, Any],
    known: dict[str, tuple[str, str, str]],
) -> None:
    """Two Markdown tables: map items/s against one-step workflows; output-size cost."""
    if maps:
        print()
        print(
            f"items/s, one map of {args.map_items:,} no-op items against as many one-step "
            f"workflows, {args.workers} worker threads, all queued before the clock starts"
        )
        print()
        print(
            "| database + queue | one-step workflows | map | map/one-step | map, max_parallel=8 "
            "| map 8/one-step |"
        )
        print("|---|---|---|---|---|---|")
        for name, r in maps.items():
            storage = "SQLite + SqliteHuey" if known[name][0] == "sqlite" else "PostgreSQL + Redis"
            plain, every, eight = r["plain_per_s"], r["map_None_per_s"], r["map_8_per_s"]
            print(
                f"| {storage} | {plain:,.0f} | {every:,.0f} | {every / plain:.2f} "
                f"| {eight:,.0f} | {eight / plain:.2f} |"
            )
    if outputs:
        print()
        print("ms and statements per step of a one-step workflow, by the size of its output")
        print()
        sizes = list(next(iter(outputs.values())))
        print("| database | " + " | ".join(f"returns {s}" for s in sizes) + " |")
        print("|---|" + "---|" * len(sizes))
        for db, r in outputs.items():
            cells = [f"{r[s][0]:.1f} ms, {r[s][1]:.0f} statements" for s in sizes]
            print(f"| {db} | " + " | ".join(cells) + " |")

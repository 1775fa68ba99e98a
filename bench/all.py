"""flask-geneva, raw Huey and DBOS back to back, one table of steps/s and ratios.

    python -m bench.all                              # 1,000 workflows x 3 steps, 4 workers
    python -m bench.all --baseline ../other-checkout # also that checkout's engine, same run
    python -m bench.all --setup-dbos                 # create .bench-venv-dbos (once)

For each configuration (SQLite + SqliteHuey and PostgreSQL + Redis, each with 4 worker
threads and with 4 worker processes) and each timing mode (``outside``: all work queued
before the clock starts with the consumer; ``inside``: consumers idle, clock started,
then each workflow started one by one), it measures:

- flask-geneva from this checkout (``bench/throughput.py``'s ``run_geneva``);
- with ``--baseline DIR``, flask-geneva from DIR: the same bench code of this checkout,
  run with DIR first on ``sys.path`` so only the engine differs;
- a raw Huey chain of three no-op tasks per item on the same queue storage;
- DBOS (PostgreSQL rows only) from its own virtualenv, ``bench/dbos_compare.py``.

Then, for the thread configurations (``--no-maps`` skips it), ``bench/maps.py``: one map
of ``--map-items`` no-op items (1,000 by default, to keep the whole run short; the
script alone defaults to 10,000) with ``max_parallel=None`` and 8, against as many
one-step workflows, in items/s; and ``bench/cost.py``'s output sizes (None, 1 KiB,
64 KiB, 256 KiB) in ms and statements per step, per database.

Every measurement runs in a subprocess of its own, so engines share no state, one after
another so they never compete with each other. Each uses a server database and Huey
queue names of its own (``bench_geneva_<pid>``, ``bench_dbos_<pid>``, Redis database 14,
see ``bench/common.py``), never the test suite's nor another run's.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

from . import all_data as data

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DBOS_VENV = ROOT / ".bench-venv-dbos"

#: name -> (database, queue, worker type)
CONFIGS = {
    "sqlite-thread": ("sqlite", "sqlite", "thread"),
    "sqlite-process": ("sqlite", "sqlite", "process"),
    "postgresql-thread": ("postgresql", "redis", "thread"),
    "postgresql-process": ("postgresql", "redis", "process"),
}
MODES = {
    "outside": "workflows created outside the window: all work is queued first, the clock "
    "starts with the consumer (DBOS: with DBOS.launch()) and stops when the last one is done",
    "inside": "workflows started inside the window: the workers are idle and ready, the clock "
    "starts, then each workflow is started one at a time (Workflow.create() with its own "
    "commit; raw Huey: the chain's first task enqueued; DBOS: queue.enqueue())",
}

#: Runs one flask-geneva or raw Huey measurement. This checkout's ``bench`` package is
#: imported first, then the engine's directory goes first on sys.path, so the bench code
#: is always this checkout's and ``flask_geneva`` is the engine's.
CHILD = """
import json, os, sys
spec = json.loads(sys.argv[1])
sys.path.insert(0, spec["root"])
import bench
sys.path.insert(0, spec["engine"])
import flask_geneva
from bench import throughput
if spec["system"] == "huey":
    result = throughput.run_raw_huey(
        spec["queue"], spec["workflows"], spec["workers"], spec["worker_type"], mode=spec["mode"]
    )
else:
    result = throughput.run_geneva(
        spec["db"], spec["queue"], spec["workflows"], spec["workers"],
        worker_type=spec["worker_type"], mode=spec["mode"],
    )
result["engine"] = os.path.dirname(os.path.dirname(os.path.abspath(flask_geneva.__file__)))
print("RESULT " + json.dumps(result), flush=True)
"""

#: Checks that an engine has the API the bench code uses.
PREFLIGHT = """
import inspect, json, os, sys
sys.path.insert(0, sys.argv[1])
import flask_geneva
from flask_geneva import Geneva, step
from flask_geneva.tasks import make_consumer
from flask_sqlalchemy import SQLAlchemy
assert "commit" in inspect.signature(Geneva(SQLAlchemy()).Workflow.create).parameters
print(os.path.dirname(os.path.dirname(os.path.abspath(flask_geneva.__file__))))
"""


@dataclass
class Cell:
    """The repeats of one measurement: steps/s figures, or the error that stopped it."""

    figures: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def value(self) -> float | None:
        return statistics.median(self.figures) if self.figures else None


def _last_result(output: str) -> dict[str, Any]:
    for line in reversed(output.splitlines()):
        if line.startswith("RESULT "):
            return dict(json.loads(line[len("RESULT ") :]))
    raise RuntimeError("no RESULT line in the output")


def _run(command: list[str], timeout: float) -> dict[str, Any]:
    """Run one measurement in a session of its own; kill all of it if it overruns."""
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its worker processes too, for the kill below
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except BaseException:  # a timeout, or ^C: leave no workers behind on the shared queue
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    if proc.returncode != 0:
        tail = (stderr or stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"exit {proc.returncode}: " + " | ".join(tail))
    return _last_result(stdout)


def _describe(directory: Path) -> str:
    """``<commit>`` or ``<commit>+uncommitted`` for a git checkout, else the path."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(directory), "status", "--porcelain", "--", "flask_geneva"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return str(directory)
    return f"{directory} @ {commit}" + (" + uncommitted engine changes" if dirty else "")


def _preflight(engine: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PREFLIGHT, str(engine)],
        cwd="/",
        capture_output=True,
        text=True,
        check=False,
    )
    found = proc.stdout.strip()
    if proc.returncode != 0 or Path(found) != engine:
        detail = proc.stderr.strip().splitlines()[-1:] or [f"imported from {found}"]
        sys.exit(f"{engine}: not a usable flask-geneva engine ({detail[0]})")


def setup_dbos(venv: Path) -> None:
    """Create the DBOS virtualenv (git-ignored by a ``*`` .gitignore inside it)."""
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    (venv / ".gitignore").write_text("*\n")
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "dbos", "psycopg[binary]"], check=True)
    print(f"DBOS installed in {venv}")


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b else "–"


def _figure(cell: Cell | None) -> str:
    if cell is None:
        return "–"
    if cell.value is None:
        return "failed"
    return f"{cell.value:,.0f}"


def _command(
    system: str, name: str, mode: str, args: argparse.Namespace, engines: dict[str, Path]
) -> list[str]:
    """The subprocess that measures ``system`` for one configuration and mode."""
    db, queue, worker_type = CONFIGS[name]
    if system == "dbos":
        return [
            str(args.dbos_python),
            str(ROOT / "bench" / "dbos_compare.py"),
            *("--workflows", str(args.workflows), "--workers", str(args.workers)),
            *("--worker-type", worker_type, "--mode", mode, "--json"),
        ]
    spec = {
        "root": str(ROOT),
        "engine": str(engines.get(system, ROOT)),
        "system": system,
        "db": db,
        "queue": queue,
        "workflows": args.workflows,
        "workers": args.workers,
        "worker_type": worker_type,
        "mode": mode,
    }
    return [sys.executable, "-c", CHILD, json.dumps(spec)]


def measure_all(
    args: argparse.Namespace,
    configs: list[str],
    modes: list[str],
    systems: list[str],
    engines: dict[str, Path],
) -> dict[tuple[str, str, str], Cell]:
    """Every (configuration, mode, system) cell, systems back to back for each cell."""
    cells: dict[tuple[str, str, str], Cell] = {}
    started = time.time()
    for name in configs:
        for mode in modes:
            for _ in range(args.repeat):
                for system in systems:
                    if system == "dbos" and CONFIGS[name][0] != "postgresql":
                        continue  # DBOS needs PostgreSQL
                    cell = cells.setdefault((name, mode, system), Cell())
                    label = f"{name:<18} {mode:<7} {system:<8}"
                    try:
                        result = _run(_command(system, name, mode, args, engines), args.timeout)
                    except (RuntimeError, subprocess.TimeoutExpired) as exc:
                        cell.error = str(exc)
                        print(f"{label} FAILED: {exc}", file=sys.stderr, flush=True)
                        continue
                    if system in engines and Path(result["engine"]) != engines[system]:
                        sys.exit(f"{label}: ran the engine in {result['engine']}, not its own")
                    cell.figures.append(float(result["steps_per_s"]))
                    print(
                        f"{label} {result['steps_per_s']:7.0f} steps/s "
                        f"({result['seconds']:.1f} s, {time.time() - started:.0f} s elapsed)",
                        file=sys.stderr,
                        flush=True,
                    )
    return cells


def print_table(
    args: argparse.Namespace,
    configs: list[str],
    modes: list[str],
    engines: dict[str, Path],
    cells: dict[tuple[str, str, str], Cell],
    seconds: float,
) -> None:
    """One Markdown table: steps/s of every system and every ratio, per row."""

    def value(name: str, mode: str, system: str) -> float | None:
        cell = cells.get((name, mode, system))
        return cell.value if cell else None

    columns = ["geneva", *(["baseline"] if "baseline" in engines else []), "huey", "dbos"]
    ratios = [("geneva", "huey"), ("geneva", "dbos")]
    if "baseline" in engines:
        ratios += [("baseline", "huey"), ("baseline", "dbos"), ("geneva", "baseline")]
    headers = ["database + queue", "workers", "timing"]
    headers += [{"huey": "raw huey"}.get(c, c) for c in columns]
    headers += [f"{a}/{b}" for a, b in ratios]
    print()
    repeats = f", median of {args.repeat}" if args.repeat > 1 else ""
    print(
        f"steps/s, {args.workflows:,} workflows x 3 no-op steps per measurement, "
        f"{args.workers} workers{repeats}; {seconds:.0f} s in all"
    )
    print(f"geneva:   {_describe(ROOT)}")
    if "baseline" in engines:
        print(f"baseline: {_describe(engines['baseline'])} (its engine, this bench code)")
    print("raw huey: a chain of 3 no-op Huey tasks per workflow on the same queue storage")
    print("dbos:     bench/dbos_compare.py, same PostgreSQL, same number of workers")
    for mode in modes:
        print(f"{mode}: {MODES[mode]}")
    print()
    print("| " + " | ".join(headers) + " |")
    print("|" + "|".join("---" for _ in headers) + "|")
    for name in configs:
        db, _, worker_type = CONFIGS[name]
        storage = "SQLite + SqliteHuey" if db == "sqlite" else "PostgreSQL + Redis"
        kind = "threads" if worker_type == "thread" else "processes"
        for mode in modes:
            row = [storage, f"{args.workers} {kind}", mode]
            row += [_figure(cells.get((name, mode, c))) for c in columns]
            row += [_ratio(value(name, mode, a), value(name, mode, b)) for a, b in ratios]
            print("| " + " | ".join(row) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workflows", type=int, default=1000, help="per measurement")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument(
        "--configs",
        default=",".join(CONFIGS),
        help=f"comma-separated, from {', '.join(CONFIGS)} (default: all)",
    )
    parser.add_argument("--modes", default=",".join(MODES), help="outside,inside (default)")
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="DIR",
        help="another checkout whose flask_geneva is measured too (e.g. the last release)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per cell; the median shows")
    parser.add_argument("--no-huey", action="store_true", help="skip raw Huey")
    parser.add_argument("--no-dbos", action="store_true", help="skip DBOS")
    parser.add_argument(
        "--dbos-python",
        type=Path,
        default=Path(
            os.environ.get("GENEVA_BENCH_DBOS_PYTHON", DEFAULT_DBOS_VENV / "bin" / "python")
        ),
        help="a Python with dbos installed (default: .bench-venv-dbos/bin/python)",
    )
    parser.add_argument(
        "--setup-dbos", action="store_true", help=f"create {DEFAULT_DBOS_VENV.name} and exit"
    )
    parser.add_argument("--timeout", type=float, default=1800, help="per measurement (s)")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    parser.add_argument("--map-items", type=int, default=1000, help="items of the map measurement")
    parser.add_argument("--no-maps", action="store_true", help="skip maps and output sizes")
    args = parser.parse_args()

    if args.setup_dbos:
        setup_dbos(DEFAULT_DBOS_VENV)
        return
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for name in configs:
        if name not in CONFIGS:
            parser.error(f"unknown configuration {name!r}; choose from {', '.join(CONFIGS)}")
    for mode in modes:
        if mode not in MODES:
            parser.error(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    engines = {"geneva": ROOT}
    if args.baseline is not None:
        engines["baseline"] = args.baseline.resolve()
    for engine in engines.values():
        _preflight(engine)
    use_dbos = not args.no_dbos and any(CONFIGS[c][0] == "postgresql" for c in configs)
    if use_dbos and not args.dbos_python.exists():
        print(
            f"DBOS skipped: no {args.dbos_python} (python -m bench.all --setup-dbos creates it)",
            file=sys.stderr,
        )
        use_dbos = False

    systems = [*engines, *([] if args.no_huey else ["huey"]), *(["dbos"] if use_dbos else [])]
    started = time.time()
    cells = measure_all(args, configs, modes, systems, engines)
    maps, outputs = ({}, {}) if args.no_maps else data.measure(args, configs, CONFIGS, _run)
    print_table(args, configs, modes, engines, cells, time.time() - started)
    data.print_tables(args, maps, outputs, CONFIGS)
    if args.json is not None:
        figures = [
            {
                "config": name,
                "mode": mode,
                "system": system,
                "steps_per_s": cell.figures,
                "error": cell.error,
            }
            for (name, mode, system), cell in cells.items()
        ]
        summary: dict[str, Any] = {
            "workflows": args.workflows,
            "workers": args.workers,
            "engines": {key: str(path) for key, path in engines.items()},
            "cells": figures,
            "maps": maps,
            "outputs": outputs,
        }
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()

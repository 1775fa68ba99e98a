"""Kill -9 soak: real workers are SIGKILLed at random moments; nothing may be lost.

Usage::

    python -m bench.soak                                  # PostgreSQL + Redis, 500 workflows
    python -m bench.soak --db sqlite                      # SQLite + SqliteHuey
    python -m bench.soak --worker-type process --deliver-twice --repeat 5
    python -m bench.soak --raise-rate 0.2                 # bodies also raise at random

What it does, per round:

1. creates a fresh database (PostgreSQL: a new database on the server; SQLite: a temp
   file) and queue, and ``--workflows`` :class:`bench.soak_app.SoakWorkflow` workflows
   (4 steps each: a fan-out and a join);
2. starts ``--processes`` real ``flask geneva worker`` subprocesses (``-k`` thread or
   process, ``-w`` workers each), each in its own process group;
3. every ``--kill-min``..``--kill-max`` seconds SIGKILLs one worker's whole process
   group at a random moment, and starts it again;
4. runs housekeeping every second with ``GENEVA_STUCK_IN_PROGRESS_AFTER=2`` s and
   ``GENEVA_STUCK_SCHEDULED_AFTER=10`` s, until every workflow is terminal;
5. checks the invariants and prints the figures.

With ``--raise-rate``, that share of body runs raise after writing their effect row:
an ``Exception``, ``SystemExit``, ``GeneratorExit`` or a custom ``BaseException``. The
class reattempts them all, so the same invariants hold, and the raised runs' writes
must be gone with their failures.

Each step body (``bench/soak_app.py``) appends a line to an external run log first,
then writes one effect row through ``db.session`` without committing it: the executor
commits the row with the execution's outcome. On PostgreSQL the body flushes the row
before it sleeps, so most kills in a body find it written but uncommitted (``--flush``;
on SQLite it is left to the executor's flush, as a flushed write holds the one write
lock). A body may *run* more than once (its worker was killed after the log line); its
*effect* must happen once.

Invariants (a violation makes the exit status 1):

* no workflow is lost: every workflow ends ``finished``;
* no execution completed twice: every step of every workflow has exactly one
  ``completed`` execution (none twice, none missing);
* no duplicated body effect: every step of every workflow has exactly one effect row,
  written by its ``completed`` execution (the writes of a killed or recovered run were
  rolled back with it), however many times its body ran;
* a body ran more than once only when its worker was lost (the step has a
  ``recovered`` execution), when it raised (a ``reattempted`` execution) or when its
  finalize was retried after a deadlock (the same execution logged twice): never
  because a trigger was delivered twice;
* no worker thread or process is lost: no worker log says a worker died;
* ``self.idempotency_key`` is the same in every run of a step and in its effect row,
  equals ``idempotency_key_for(step)``, and no two steps (of any workflows) share one.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections import defaultdict
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
POSTGRESQL_URL = os.environ.get(
    "GENEVA_BENCH_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("GENEVA_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")


@dataclass
class Figures:
    """What one round measured."""

    workflows: int = 0
    executions: int = 0
    kills: int = 0
    recovered: int = 0
    retriggered: int = 0
    seconds: float = 0.0
    states: Counter[str] = field(default_factory=Counter)
    #: Workflows that did not end ``finished``.
    lost: int = 0
    #: Steps with more than one / no ``completed`` execution.
    completed_twice: int = 0
    completed_missing: int = 0
    #: Body runs (run log lines), and steps whose body ran more than once.
    runs: int = 0
    bodies_run_twice: int = 0
    #: ... of which the same execution ran its body again (a finalize retried).
    bodies_rerun_in_execution: int = 0
    #: ... of which neither a recovery nor a retried finalize explains the extra run.
    bodies_run_twice_unexplained: int = 0
    runs_without_execution: int = 0
    #: Effect rows; rows beyond the first of a step; steps without one; rows not
    #: written by the step's completed execution.
    effects: int = 0
    effects_duplicated: int = 0
    effects_missing: int = 0
    effects_not_of_completed: int = 0
    #: Steps whose runs or effect row disagree on the idempotency key, or carry
    #: another key than ``idempotency_key_for(step)``; keys shared by two steps.
    key_mismatches: int = 0
    keys_shared: int = 0
    #: Body runs that raised on purpose (``--raise-rate``), by kind.
    raised: Counter[str] = field(default_factory=Counter)
    #: Worker threads or processes the worker logs say died (Huey restarts them).
    workers_lost: int = 0
    violations: list[str] = field(default_factory=list)


#: Must be 0 in every round.
MUST_BE_ZERO = (
    "lost",
    "completed_twice",
    "completed_missing",
    "effects_duplicated",
    "effects_missing",
    "effects_not_of_completed",
    "bodies_run_twice_unexplained",
    "key_mismatches",
    "keys_shared",
    "workers_lost",
)


class Round:
    """One soak round: its own database, queue, log file and worker processes."""

    def __init__(self, args: argparse.Namespace, number: int) -> None:
        self.args = args
        self.dir = Path(tempfile.mkdtemp(prefix=f"geneva-soak-{number}-"))
        token = f"{os.getpid()}_{number}"
        self.pg_database: str | None = None
        #: A round that broke an invariant keeps its database for a post-mortem.
        self.keep = False
        if args.db == "sqlite":
            database_url = f"sqlite:///{self.dir / 'soak.db'}"
            huey_url = f"sqlite:///{self.dir / 'huey.db'}"
        else:
            self.pg_database = f"geneva_soak_{token}"
            with _admin_engine().connect() as conn:
                conn.execute(sa.text(f"CREATE DATABASE {self.pg_database}"))
            database_url = (
                sa.make_url(POSTGRESQL_URL)
                .set(database=self.pg_database)
                .render_as_string(hide_password=False)
            )
            huey_url = REDIS_URL
        self.log_path = self.dir / "runs.log"
        self.env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            SOAK_DATABASE_URL=database_url,
            SOAK_HUEY=huey_url,
            SOAK_HUEY_NAME=f"geneva-soak-{token}",
            SOAK_LOG=str(self.log_path),
            SOAK_STEP_MS=str(args.step_ms),
            SOAK_FLUSH_EARLY="1" if _flush_early(args) else "0",
            SOAK_STUCK_AFTER=str(args.stuck_after),
            SOAK_OVERDUE_AFTER=str(args.overdue_after),
            SOAK_DELIVER_TWICE="1" if args.deliver_twice else "0",
            SOAK_RAISE_RATE=str(args.raise_rate),
            SOAK_INSTANCE=str(self.dir),
        )
        self.workers: list[subprocess.Popen[bytes]] = []

    # -- worker processes ----------------------------------------------------------------

    def start_worker(self, index: int) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "flask", "--app", "bench.soak_app", "geneva", "worker"]
        command += ["-w", str(self.args.workers), "-k", self.args.worker_type]
        with (self.dir / f"worker-{index}.log").open("ab") as log:
            return subprocess.Popen(
                command,
                cwd=self.dir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: a kill takes its children too
            )

    def kill(self, index: int) -> None:
        worker = self.workers[index]
        try:
            os.killpg(worker.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        worker.wait()

    def stop_all(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGINT)
        for index, worker in enumerate(self.workers):
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill(index)

    # -- the round -----------------------------------------------------------------------

    def run(self) -> Figures:
        for key in list(os.environ):
            if key.startswith("SOAK_"):
                del os.environ[key]
        os.environ.update({k: v for k, v in self.env.items() if k.startswith("SOAK_")})
        from bench import soak_app

        app = soak_app.create_app()
        figures = Figures(workflows=self.args.workflows)
        with app.app_context():
            soak_app.db.create_all()
            soak_app.geneva.huey.flush()
            for _ in range(self.args.workflows):
                soak_app.SoakWorkflow.create(allow_multiple=True)
            soak_app.db.session.remove()

            started = time.monotonic()
            self.workers = [self.start_worker(i) for i in range(self.args.processes)]
            next_kill = started + random.uniform(self.args.kill_min, self.args.kill_max)
            next_housekeeping = started + 1
            try:
                while True:
                    now = time.monotonic()
                    if now > started + self.args.timeout:
                        figures.violations.append(f"not all terminal after {self.args.timeout} s")
                        break
                    if now >= next_kill and figures.kills < self.args.max_kills:
                        index = random.randrange(len(self.workers))
                        self.kill(index)
                        figures.kills += 1
                        time.sleep(random.uniform(0, 0.3))
                        self.workers[index] = self.start_worker(index)
                        next_kill = now + random.uniform(self.args.kill_min, self.args.kill_max)
                    if now >= next_housekeeping:
                        summary = soak_app.geneva.housekeeping()
                        figures.recovered += summary.stuck_reattempted + summary.stuck_canceled
                        figures.retriggered += summary.retriggered
                        next_housekeeping = now + 1
                        if self._all_terminal(soak_app.geneva):
                            break
                    time.sleep(0.05)
            finally:
                figures.seconds = time.monotonic() - started
                self.stop_all()
            self._check(soak_app, figures)
            soak_app.geneva.huey.flush()
            for engine in soak_app.db.engines.values():
                engine.dispose()
        return figures

    def _all_terminal(self, geneva: Any) -> bool:
        w = geneva.tables.workflows
        with geneva.engine().connect() as conn:
            ongoing = conn.execute(
                sa.select(sa.func.count()).where(w.c.state.not_in(("finished", "canceled")))
            ).scalar_one()
        return ongoing == 0

    def cleanup(self) -> None:
        if self.keep:
            kept = self.pg_database or self.dir / "soak.db"
            print(f"  kept for inspection: database {kept}, logs in {self.dir}", flush=True)
            return
        if self.pg_database is not None:
            with _admin_engine().connect() as conn:
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS {self.pg_database} WITH (FORCE)"))

    # -- invariants ----------------------------------------------------------------------

    def _check(self, soak_app: Any, f: Figures) -> None:
        geneva = soak_app.geneva
        w, e = geneva.tables.workflows, geneva.tables.executions
        effects = soak_app.SoakEffect.__table__
        with geneva.engine().connect() as conn:
            by_state = sa.select(w.c.state, sa.func.count()).group_by(w.c.state)
            f.states = Counter({str(state): int(n) for state, n in conn.execute(by_state)})
            executions = conn.execute(
                sa.select(e.c.id, e.c.workflow_id, e.c.step_name, e.c.state, e.c.outcome)
            ).all()
            effect_rows = conn.execute(
                sa.select(
                    effects.c.workflow_id,
                    effects.c.step_name,
                    effects.c.execution_id,
                    effects.c.idempotency_key,
                )
            ).all()
        # What every step's key must be, computed here from each workflow's own row.
        expected_key: dict[tuple[int, str], str] = {}
        for workflow in soak_app.db.session.execute(sa.select(soak_app.SoakWorkflow)).scalars():
            for step_name in soak_app.STEPS:
                expected_key[(workflow.id, step_name)] = workflow.idempotency_key_for(step_name)
        soak_app.db.session.remove()
        lines = [line.split() for line in self.log_path.read_text().splitlines()]

        f.executions = len(executions)
        f.lost = self.args.workflows - f.states.get("finished", 0)
        completed: dict[tuple[int, str], list[int]] = defaultdict(list)
        rerun_steps: set[tuple[int, str]] = set()
        for x in executions:
            if x.state == "completed" and x.outcome == "success":
                completed[(x.workflow_id, x.step_name)].append(x.id)
            if x.outcome in ("recovered", "reattempted"):
                rerun_steps.add((x.workflow_id, x.step_name))
        for key in expected_key:
            n = len(completed.get(key, []))
            f.completed_twice += n > 1
            f.completed_missing += n == 0

        # Runs: one log line each ("workflow step execution pid key").
        f.runs = len(lines)
        f.runs_without_execution = sum(1 for p in lines if p[2] == "None")
        f.raised = Counter(p[5] for p in lines if len(p) > 5 and p[5] != "-")
        for log in self.dir.glob("worker-*.log"):
            text = log.read_text(errors="replace")
            f.workers_lost += text.count(" died, restarting") + text.count(" died!")
        runs: dict[tuple[int, str], list[list[str]]] = defaultdict(list)
        for p in lines:
            runs[(int(p[0]), p[1])].append(p)
        for key, step_runs in runs.items():
            if len(step_runs) < 2:
                continue
            f.bodies_run_twice += 1
            ids = Counter(p[2] for p in step_runs if p[2] != "None")
            rerun_in_execution = any(n > 1 for n in ids.values())
            f.bodies_rerun_in_execution += rerun_in_execution
            explained = key in rerun_steps or rerun_in_execution
            f.bodies_run_twice_unexplained += not explained

        # Effects: exactly one row per step, by its completed execution.
        f.effects = len(effect_rows)
        rows: dict[tuple[int, str], list[Any]] = defaultdict(list)
        for r in effect_rows:
            rows[(r.workflow_id, r.step_name)].append(r)
        for key in expected_key:
            step_rows = rows.get(key, [])
            f.effects_duplicated += max(0, len(step_rows) - 1)
            f.effects_missing += not step_rows
            f.effects_not_of_completed += sum(
                1 for r in step_rows if r.execution_id not in completed.get(key, [])
            )
        f.effects_not_of_completed += sum(len(v) for k, v in rows.items() if k not in expected_key)

        # The idempotency key: one per step, the same in every run and in the effect.
        for key, expected in expected_key.items():
            seen = {p[4] for p in runs.get(key, [])} | {
                r.idempotency_key for r in rows.get(key, [])
            }
            f.key_mismatches += bool(seen - {expected})
        steps_of_key: dict[str, set[tuple[int, str]]] = defaultdict(set)
        for key, expected in expected_key.items():
            steps_of_key[expected].add(key)
        for r in effect_rows:
            steps_of_key[r.idempotency_key].add((r.workflow_id, r.step_name))
        f.keys_shared = sum(1 for steps in steps_of_key.values() if len(steps) > 1)

        if f.states.get("finished", 0) != self.args.workflows:
            f.violations.append(f"workflow states {dict(f.states)}")
        for name in MUST_BE_ZERO:
            if getattr(f, name):
                f.violations.append(f"{name} = {getattr(f, name)}")
        if f.violations:
            self.keep = True


def _flush_early(args: argparse.Namespace) -> bool:
    """Bodies flush their effect row before they sleep (``--flush auto``: not on SQLite)."""
    return args.flush == "early" or (args.flush == "auto" and args.db != "sqlite")


def _admin_engine() -> sa.Engine:
    return sa.create_engine(POSTGRESQL_URL, isolation_level="AUTOCOMMIT")


def report(number: int, f: Figures) -> None:
    per_s = f.executions / f.seconds if f.seconds else 0.0
    print(
        f"round {number}: {f.workflows} workflows ({dict(f.states)}), {f.executions} "
        f"executions, {f.kills} kills, {f.recovered} executions recovered, "
        f"{f.retriggered} re-triggered, {f.seconds:.1f} s ({per_s:.0f} executions/s)\n"
        f"  lost workflows {f.lost}; executions completed twice {f.completed_twice}, "
        f"missing {f.completed_missing}\n"
        f"  body runs {f.runs}; bodies run twice: {f.bodies_run_twice} "
        f"(same execution again {f.bodies_rerun_in_execution}, unexplained "
        f"{f.bodies_run_twice_unexplained}); effect rows {f.effects}, effects duplicated: "
        f"{f.effects_duplicated}, missing {f.effects_missing}, not by the completed "
        f"execution {f.effects_not_of_completed}; idempotency key mismatches "
        f"{f.key_mismatches}, shared {f.keys_shared}\n"
        f"  bodies that raised on purpose: {sum(f.raised.values())} {dict(f.raised)}; "
        f"worker threads/processes lost: {f.workers_lost}",
        flush=True,
    )
    for violation in f.violations:
        print(f"  VIOLATION: {violation}", flush=True)


TOTALS = (
    "workflows",
    "executions",
    "kills",
    "recovered",
    "runs",
    "bodies_run_twice",
    "effects",
    *MUST_BE_ZERO,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--workflows", type=int, default=500)
    parser.add_argument("--processes", type=int, default=2, help="worker subprocesses")
    parser.add_argument("--workers", type=int, default=4, help="-w of each worker")
    parser.add_argument("--worker-type", choices=["thread", "process"], default="thread")
    parser.add_argument("--kill-min", type=float, default=0.5)
    parser.add_argument("--kill-max", type=float, default=2.0)
    parser.add_argument("--max-kills", type=int, default=1000)
    parser.add_argument("--step-ms", type=float, default=20.0)
    parser.add_argument(
        "--flush",
        choices=["auto", "early", "late"],
        default="auto",
        help="when a body flushes its effect row: before its sleep (early), or let the "
        "executor flush it (late); auto: early except on SQLite",
    )
    parser.add_argument("--stuck-after", type=float, default=2.0)
    parser.add_argument("--overdue-after", type=float, default=10.0)
    parser.add_argument("--deliver-twice", action="store_true")
    parser.add_argument(
        "--raise-rate",
        type=float,
        default=0.0,
        help="share of body runs that raise (Exception, SystemExit, GeneratorExit, a "
        "custom BaseException) after writing their effect row",
    )
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    if args.seed is not None:
        random.seed(args.seed)
    print(
        f"soak: {args.db}, {args.workflows} workflows x 4 writing steps, {args.processes} "
        f"worker process(es) x {args.workers} {args.worker_type} worker(s), a SIGKILL every "
        f"{args.kill_min}-{args.kill_max} s, effect flushed "
        f"{'early' if _flush_early(args) else 'late'}, deliver twice: {args.deliver_twice}, "
        f"bodies raising: {args.raise_rate:.0%}, "
        f"{os.cpu_count()} CPU(s)",
        flush=True,
    )
    failed = 0
    totals = Counter[str]()
    seconds = 0.0
    for number in range(1, args.repeat + 1):
        soak = Round(args, number)
        try:
            figures = soak.run()
        finally:
            soak.stop_all()
            soak.cleanup()
        report(number, figures)
        failed += bool(figures.violations)
        for name in TOTALS:
            totals[name] += getattr(figures, name)
        totals["raised"] += sum(figures.raised.values())
        seconds += figures.seconds
    t = totals
    print(
        f"total over {args.repeat} round(s), {seconds:.0f} s: {t['workflows']} workflows, "
        f"{t['executions']} executions, {t['kills']} kills, {t['recovered']} recovered; "
        f"lost workflows: {t['lost']}, executions completed twice: {t['completed_twice']}, "
        f"bodies run twice: {t['bodies_run_twice']}, effects duplicated: "
        f"{t['effects_duplicated']} ({t['effects']} effect rows for {t['runs']} body runs, "
        f"{t['raised']} of which raised); worker threads lost: {t['workers_lost']}; "
        f"rounds failed: {failed}",
        flush=True,
    )
    if failed:
        nonzero = {n: t[n] for n in MUST_BE_ZERO if t[n]}
        print(f"  nonzero: {nonzero}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

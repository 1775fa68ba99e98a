"""Kill -9 soak: real workers are SIGKILLed at random moments; nothing may be lost.

Usage::

    python -m bench.soak                                  # PostgreSQL + Redis, 500 workflows
    python -m bench.soak --db sqlite                      # SQLite + SqliteHuey
    python -m bench.soak --worker-type process --deliver-twice --repeat 5

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

Invariants (a violation makes the exit status 1):

* every workflow ends ``finished``;
* every step of every workflow has exactly one ``completed`` execution (none twice,
  none missing);
* every completed execution has exactly one database effect row and one external log
  line: no successful execution's side effect appears twice, and none is missing;
* no execution has two effect rows or two log lines (an execution is claimed once);
* every step whose body ran more than once has a ``recovered`` execution: a body runs
  again only after its worker was lost (at-least-once bodies across a lost worker,
  exactly-once recording).
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
    steps: int = 0
    kills: int = 0
    recovered: int = 0
    retriggered: int = 0
    seconds: float = 0.0
    states: Counter[str] = field(default_factory=Counter)
    completed_twice: int = 0
    completed_missing: int = 0
    effect_rows_per_completed_wrong: int = 0
    log_lines_per_completed_wrong: int = 0
    execution_effect_twice: int = 0
    execution_log_twice: int = 0
    db_effects_of_recovered: int = 0
    bodies_ran_again: int = 0
    bodies_ran_again_unexplained: int = 0
    log_lines_without_execution: int = 0
    violations: list[str] = field(default_factory=list)


class Round:
    """One soak round: its own database, queue, log file and worker processes."""

    def __init__(self, args: argparse.Namespace, number: int) -> None:
        self.args = args
        self.dir = Path(tempfile.mkdtemp(prefix=f"geneva-soak-{number}-"))
        token = f"{os.getpid()}_{number}"
        self.pg_database: str | None = None
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
        self.log_path = self.dir / "effects.log"
        self.env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            SOAK_DATABASE_URL=database_url,
            SOAK_HUEY=huey_url,
            SOAK_HUEY_NAME=f"geneva-soak-{token}",
            SOAK_LOG=str(self.log_path),
            SOAK_STEP_MS=str(args.step_ms),
            SOAK_STUCK_AFTER=str(args.stuck_after),
            SOAK_OVERDUE_AFTER=str(args.overdue_after),
            SOAK_DELIVER_TWICE="1" if args.deliver_twice else "0",
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
                sa.select(effects.c.workflow_id, effects.c.step_name, effects.c.execution_id)
            ).all()
        lines = [line.split() for line in self.log_path.read_text().splitlines()]

        f.steps = len(executions)
        completed: dict[tuple[int, str], list[int]] = defaultdict(list)
        recovered_steps: set[tuple[int, str]] = set()
        state_of: dict[int, str] = {}
        for x in executions:
            state_of[x.id] = x.outcome or x.state
            if x.state == "completed":
                completed[(x.workflow_id, x.step_name)].append(x.id)
            if x.outcome == "recovered":
                recovered_steps.add((x.workflow_id, x.step_name))
        workflow_ids = {x.workflow_id for x in executions}
        for workflow_id in workflow_ids:
            for step_name in soak_app.STEPS:
                n = len(completed.get((workflow_id, step_name), []))
                f.completed_twice += n > 1
                f.completed_missing += n == 0

        effects_per_execution = Counter(r.execution_id for r in effect_rows)
        lines_per_execution = Counter(int(p[2]) for p in lines if p[2] != "None")
        f.log_lines_without_execution = sum(1 for p in lines if p[2] == "None")
        f.execution_effect_twice = sum(1 for n in effects_per_execution.values() if n > 1)
        f.execution_log_twice = sum(1 for n in lines_per_execution.values() if n > 1)
        for ids in completed.values():
            for execution_id in ids:
                f.effect_rows_per_completed_wrong += effects_per_execution[execution_id] != 1
                f.log_lines_per_completed_wrong += lines_per_execution[execution_id] != 1
        f.db_effects_of_recovered = sum(
            n for eid, n in effects_per_execution.items() if state_of.get(eid) == "recovered"
        )
        bodies_per_step = Counter((int(p[0]), p[1]) for p in lines)
        again = [key for key, n in bodies_per_step.items() if n > 1]
        f.bodies_ran_again = len(again)
        f.bodies_ran_again_unexplained = sum(1 for key in again if key not in recovered_steps)

        if set(f.states) != {"finished"} or f.states["finished"] != self.args.workflows:
            f.violations.append(f"workflow states {dict(f.states)}")
        for name in (
            "completed_twice",
            "completed_missing",
            "effect_rows_per_completed_wrong",
            "log_lines_per_completed_wrong",
            "execution_effect_twice",
            "execution_log_twice",
            "bodies_ran_again_unexplained",
        ):
            if getattr(f, name):
                f.violations.append(f"{name} = {getattr(f, name)}")


def _admin_engine() -> sa.Engine:
    return sa.create_engine(POSTGRESQL_URL, isolation_level="AUTOCOMMIT")


def report(number: int, f: Figures) -> None:
    steps_per_s = f.steps / f.seconds if f.seconds else 0.0
    print(
        f"round {number}: {f.workflows} workflows ({dict(f.states)}), {f.steps} executions, "
        f"{f.kills} kills, {f.recovered} executions recovered, {f.retriggered} re-triggered; "
        f"completed twice {f.completed_twice}, missing {f.completed_missing}; "
        f"successful executions with effect rows != 1: {f.effect_rows_per_completed_wrong}, "
        f"with log lines != 1: {f.log_lines_per_completed_wrong}; "
        f"steps whose body ran more than once {f.bodies_ran_again} "
        f"(unexplained by a recovery: {f.bodies_ran_again_unexplained}); "
        f"DB effects of recovered executions {f.db_effects_of_recovered}; "
        f"{f.seconds:.1f} s ({steps_per_s:.0f} executions/s)",
        flush=True,
    )
    for violation in f.violations:
        print(f"  VIOLATION: {violation}", flush=True)


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
    parser.add_argument("--stuck-after", type=float, default=2.0)
    parser.add_argument("--overdue-after", type=float, default=10.0)
    parser.add_argument("--deliver-twice", action="store_true")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    if args.seed is not None:
        random.seed(args.seed)
    print(
        f"soak: {args.db}, {args.workflows} workflows x 4 steps, {args.processes} worker "
        f"process(es) x {args.workers} {args.worker_type} worker(s), a SIGKILL every "
        f"{args.kill_min}-{args.kill_max} s, deliver twice: {args.deliver_twice}, "
        f"{os.cpu_count()} CPU(s)",
        flush=True,
    )
    failed = 0
    totals = Counter[str]()
    for number in range(1, args.repeat + 1):
        soak = Round(args, number)
        try:
            figures = soak.run()
        finally:
            soak.stop_all()
            soak.cleanup()
        report(number, figures)
        failed += bool(figures.violations)
        for name in ("workflows", "steps", "kills", "recovered", "completed_twice"):
            totals[name] += getattr(figures, name)
        totals["bodies_ran_again"] += figures.bodies_ran_again
        totals["db_effects_of_recovered"] += figures.db_effects_of_recovered
        totals["seconds"] += int(figures.seconds)
    print(f"total over {args.repeat} round(s): {dict(totals)}; rounds failed: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

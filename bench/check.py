"""Time the deploy census behind ``flask geneva check`` on a million workflows (not a test).

    python -m bench.check --workflows 1000000

Fills a PostgreSQL database of its own with bulk ``INSERT ... SELECT generate_series``:
``--workflows`` workflows of three classes, 95 % finished (two completed executions
each), 5 % ongoing (a completed and a scheduled execution each; every 20th of those
paused). Fingerprints are the class's, an old one, or NULL (a row from before 0.2). A
few ongoing workflows are on steps their class no longer defines: some scheduled (one
class lists the step in ``removed_steps``, another does not), some paused after failing
on it. Then it times :func:`~flask_geneva.census.census` (median of 5), prints what it
found, times ``Payment.removed_steps_in_flight()`` (the census of one type), and prints
``EXPLAIN ANALYZE`` of the three statements, for every type and for one.
"""

from __future__ import annotations

import argparse
import time

import sqlalchemy as sa

from flask_geneva import step
from flask_geneva.census import census
from flask_geneva.census import statements
from flask_geneva.cli_check import as_text

from . import common

RUNS = 5


class Payment(common.geneva.Workflow):  # type: ignore[misc,name-defined]
    """Its old version had ``notify``; the new one lists it in removed_steps."""

    removed_steps = ("notify",)

    @step
    def authorise(self) -> None:
        pass

    @step
    def capture(self) -> None:
        pass

    @step
    def receipt(self) -> None:
        pass


class Signup(common.geneva.Workflow):  # type: ignore[misc,name-defined]
    """Its old version had ``send_welcome``, renamed without removed_steps: stranded."""

    @step
    def create_account(self) -> None:
        pass

    @step
    def welcome_email(self) -> None:
        pass


class Digest(common.geneva.Workflow):  # type: ignore[misc,name-defined]
    @step
    def collect(self) -> None:
        pass

    @step
    def send(self) -> None:
        pass


CLASSES = (Payment, Signup, Digest)
#: Per class: (first step, the step an ongoing workflow is on, the undefined step).
STEPS = {
    "Payment": ("authorise", "capture", "notify"),
    "Signup": ("create_account", "welcome_email", "send_welcome"),
    "Digest": ("collect", "send", None),
}


def _case(column: str, values: list[str]) -> str:
    arms = " ".join(f"WHEN {i} THEN '{v}'" for i, v in enumerate(values))
    return f"CASE {column} {arms} END"


def fill(conn: sa.Connection, workflows: int) -> None:
    """Insert the workflows and executions in a few statements (ids 1..N)."""
    types = [c.__geneva_identity__ for c in CLASSES]
    prints = [c.step_graph().fingerprint for c in CLASSES]
    # g % 3: the class; g % 20 = 0: ongoing (every 400th paused); g % 7 = 0: an old
    # fingerprint; g % 11 = 0: none.
    conn.execute(
        sa.text(
            "INSERT INTO geneva_workflows (id, type, state, allow_multiple, created_at, "
            "updated_at, transitioned_at, fingerprint) "
            f"SELECT g, {_case('g % 3', types)}, "
            "CASE WHEN g % 400 = 0 THEN 'paused' WHEN g % 20 = 0 THEN 'ready' "
            "ELSE 'finished' END, false, now() - interval '1 day', now(), now(), "
            f"CASE WHEN g % 11 = 0 THEN NULL WHEN g % 7 = 0 THEN 'old' || (g % 3) "
            f"ELSE {_case('g % 3', prints)} END "
            "FROM generate_series(1, :n) AS g"
        ),
        {"n": workflows},
    )
    firsts = [STEPS[t][0] for t in types]
    currents = [STEPS[t][1] for t in types]
    # Every workflow's first step, completed.
    conn.execute(
        sa.text(
            "INSERT INTO geneva_step_executions (workflow_id, step_name, state, outcome, "
            "scheduled_for, created_at, updated_at) "
            f"SELECT g, {_case('g % 3', firsts)}, 'completed', 'success', now(), now(), now() "
            "FROM generate_series(1, :n) AS g"
        ),
        {"n": workflows},
    )
    # Finished ones: the second step completed too. Ongoing ready ones: it is
    # scheduled, on an undefined step for every 1000th. Paused ones: failed there,
    # on an undefined step for every 2000th (Signup only: Digest has none).
    undefined = [STEPS[t][2] or STEPS[t][1] for t in types]
    second = (
        f"CASE WHEN g % 1000 = 0 AND g % 400 <> 0 THEN {_case('g % 3', undefined)} "
        f"WHEN g % 2000 = 0 THEN {_case('g % 3', undefined)} "
        f"ELSE {_case('g % 3', currents)} END"
    )
    conn.execute(
        sa.text(
            "INSERT INTO geneva_step_executions (workflow_id, step_name, state, outcome, "
            "scheduled_for, created_at, updated_at, failed_at) "
            f"SELECT g, {second}, "
            "CASE WHEN g % 400 = 0 THEN 'failed' WHEN g % 20 = 0 THEN 'scheduled' "
            "ELSE 'completed' END, "
            "CASE WHEN g % 400 = 0 THEN 'failed' WHEN g % 20 = 0 THEN NULL ELSE 'success' END, "
            "now(), now() - interval '1 hour', now(), "
            "CASE WHEN g % 400 = 0 THEN now() END "
            "FROM generate_series(1, :n) AS g"
        ),
        {"n": workflows},
    )
    for table in ("geneva_workflows", "geneva_step_executions"):
        conn.execute(
            sa.text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), :n)"),
            {"n": workflows * 3},
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workflows", type=int, default=1_000_000)
    args = parser.parse_args()
    app = common.make_app(common.DATABASES["postgresql"](), "memory://")
    ext = common.geneva
    with app.app_context():
        started = time.perf_counter()
        with ext.engine().begin() as conn:
            fill(conn, args.workflows)
        # As autovacuum would leave them: statistics, and a visibility map for index-only scans.
        with ext.engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM ANALYZE geneva_workflows"))
            conn.execute(sa.text("VACUUM ANALYZE geneva_step_executions"))
        print(
            f"postgresql: {args.workflows:,} workflows, {args.workflows * 2:,} executions "
            f"filled in {time.perf_counter() - started:.1f} s"
        )
        timings = []
        for _ in range(RUNS):
            started = time.perf_counter()
            found = census(ext)
            timings.append((time.perf_counter() - started) * 1000)
        print(
            f"census: median {common.median(timings):.0f} ms of {RUNS} "
            f"(min {min(timings):.0f}, max {max(timings):.0f})"
        )
        for line in as_text(found):
            print("  " + line[:150])
        timings = []
        for _ in range(RUNS):
            started = time.perf_counter()
            in_flight = Payment.removed_steps_in_flight()
            timings.append((time.perf_counter() - started) * 1000)
        print(
            f"Payment.removed_steps_in_flight() = {in_flight}: median "
            f"{common.median(timings):.0f} ms of {RUNS}"
        )
        # Every type's statements, then one type's (what removed_steps_in_flight runs).
        explained = [*statements(ext), *statements(ext, Payment.__geneva_identity__)]
        with ext.engine().connect() as conn:
            for statement in explained:
                sql = statement.compile(
                    dialect=conn.dialect, compile_kwargs={"literal_binds": True}
                )
                print(f"\nEXPLAIN ANALYZE {' '.join(str(sql).split())[:300]}")
                plan = conn.execute(sa.text(f"EXPLAIN (ANALYZE, BUFFERS) {sql}"))
                for (line,) in plan:
                    print("  " + line)


if __name__ == "__main__":
    main()

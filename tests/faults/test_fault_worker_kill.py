"""A real worker process killed with SIGKILL in the middle of a writing step body.

The short version of ``bench/soak.py``: one workflow of the soak app
(``bench/soak_app.py``), one ``flask geneva worker`` subprocess, one kill while the
first step's body runs. Every body appends a run line to an external log, then writes
its effect row through ``db.session`` and flushes it, without committing: the kill
lands while that row is written but uncommitted. Housekeeping, with
``GENEVA_STUCK_IN_PROGRESS_AFTER`` lowered to one second, marks the lost execution
``failed``/``recovered`` and schedules a fresh one; a restarted worker runs it and the
rest of the workflow. The killed body ran (its run line is in the log) but its effect
row went with its transaction: the recovered step's body ran twice, with the same
idempotency key, and every step has exactly one effect row, its completed execution's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from helpers import REDIS_URL
from helpers import RUN_TOKEN
from helpers import TIMEOUT
from helpers import Committed
from helpers import wait_until

from bench import soak_app
from flask_geneva import housekeeping

REPO = Path(__file__).resolve().parents[2]

#: Worker processes started, killed and restarted.
pytestmark = pytest.mark.slow


@pytest.fixture
def soak(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[dict[str, Any]]:
    """The soak app on this test's database, and the environment its workers need."""
    huey_url = f"sqlite:///{tmp_path / 'huey.db'}" if db_url.startswith("sqlite") else REDIS_URL
    env = {
        "SOAK_DATABASE_URL": db_url,
        "SOAK_HUEY": huey_url,
        "SOAK_HUEY_NAME": f"geneva-fault-kill-{RUN_TOKEN}",
        "SOAK_LOG": str(tmp_path / "runs.log"),
        "SOAK_HOLD": str(tmp_path / "hold"),
        "SOAK_FLUSH_EARLY": "1",  # the effect row is written before the body waits
        "SOAK_STEP_MS": "0",
        "SOAK_STUCK_AFTER": "1",
        "SOAK_INSTANCE": str(tmp_path),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(soak_app, "HOLD", env["SOAK_HOLD"])
    app = soak_app.create_app()
    ctx = app.app_context()
    ctx.push()
    soak_app.db.drop_all()
    soak_app.db.create_all()
    app.extensions["geneva"].huey.flush()
    try:
        yield dict(os.environ, PYTHONPATH=str(REPO), **env)
    finally:
        soak_app.db.session.remove()
        app.extensions["geneva"].huey.flush()
        soak_app.db.drop_all()
        for engine in soak_app.db.engines.values():
            engine.dispose()
        ctx.pop()


def start_worker(env: dict[str, str], cwd: Path, worker_type: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "flask", "--app", "bench.soak_app", "geneva", "worker"]
    with (cwd / "worker.log").open("ab") as output:  # the child keeps its own copy
        return subprocess.Popen(
            [*command, "-w", "2", "-k", worker_type],
            cwd=cwd,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the kill takes a process worker's children too
        )


def stop(worker: subprocess.Popen[bytes], signum: int) -> None:
    if worker.poll() is None:
        os.killpg(worker.pid, signum)
    try:
        worker.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=TIMEOUT)


committed = Committed(soak_app.geneva)
executions = committed.history
workflow_state = committed.state


def effect_rows() -> list[tuple[str, int | None, str, str]]:
    """(step, execution id, execution state, idempotency key) of every effect row."""
    effects = soak_app.SoakEffect.__table__
    e = soak_app.geneva.tables.executions
    with soak_app.geneva.engine().connect() as conn:
        return [
            (r.step_name, r.execution_id, r.state, r.idempotency_key)
            for r in conn.execute(
                sa.select(
                    effects.c.step_name,
                    effects.c.execution_id,
                    e.c.state,
                    effects.c.idempotency_key,
                )
                .outerjoin(e, e.c.id == effects.c.execution_id)
                .order_by(effects.c.id)
            )
        ]


def expected_keys(workflow_id: int) -> dict[str, str]:
    """Each step's ``idempotency_key_for``, from the workflow's row as stored."""
    soak_app.db.session.remove()
    workflow = soak_app.db.session.get(soak_app.SoakWorkflow, workflow_id)
    keys = {name: workflow.idempotency_key_for(name) for name in soak_app.STEPS}
    soak_app.db.session.remove()
    return keys


@pytest.mark.parametrize(
    ("db_url", "worker_type"),
    [("sqlite", "thread"), ("postgresql", "process"), ("mariadb", "thread")],
    indirect=["db_url"],
)
def test_a_worker_killed_mid_step_is_recovered_by_housekeeping_and_the_workflow_finishes(
    soak: dict[str, str], tmp_path: Path, worker_type: str
) -> None:
    log = Path(soak["SOAK_LOG"])
    hold = Path(soak["SOAK_HOLD"])
    hold.touch()  # bodies wait while this file exists, their effect row flushed
    reached = Path(soak["SOAK_HOLD"] + ".reached")
    workflow_id = soak_app.SoakWorkflow.create().id

    worker = start_worker(soak, tmp_path, worker_type)
    try:
        wait_until(reached.exists)  # past the run line and the flushed effect row
        stop(worker, signal.SIGKILL)  # mid-body: the effect row is written, not committed
    finally:
        stop(worker, signal.SIGKILL)
    assert executions(workflow_id) == [("receive", "in_progress", None)]
    assert effect_rows() == []  # the killed transaction took its row with it
    hold.unlink()

    recovered = 0

    def housekeeping_recovers() -> bool:
        nonlocal recovered
        recovered += housekeeping.run(soak_app.geneva).stuck_reattempted
        return recovered > 0

    wait_until(housekeeping_recovers, timeout=10)  # past the lowered 1 s threshold
    assert recovered == 1
    assert executions(workflow_id) == [
        ("receive", "failed", "recovered"),
        ("receive", "scheduled", None),
    ]

    worker = start_worker(soak, tmp_path, worker_type)
    try:
        wait_until(lambda: workflow_state(workflow_id) == "finished")
    finally:
        stop(worker, signal.SIGINT)
    assert worker.returncode == 0

    history = executions(workflow_id)
    assert history[0] == ("receive", "failed", "recovered")
    assert Counter((s, st) for s, st, _ in history[1:]) == Counter(
        {(name, "completed"): 1 for name in soak_app.STEPS}
    )
    # Runs: the killed body ran, so receive ran twice; each run saw its step's key.
    keys = expected_keys(workflow_id)
    assert len(set(keys.values())) == len(soak_app.STEPS)
    runs = [line.split() for line in log.read_text().splitlines()]
    assert Counter(p[1] for p in runs) == Counter(
        {"receive": 2, "check": 1, "reserve": 1, "ship": 1}
    )
    assert all(p[4] == keys[p[1]] for p in runs)
    receive_runs = [p for p in runs if p[1] == "receive"]
    assert receive_runs[0][2] != receive_runs[1][2]  # two executions, one key
    # Effects: one row per step, by its completed execution, with its key: not duplicated.
    effects = effect_rows()
    assert sorted((s, st, k) for s, _, st, k in effects) == sorted(
        (name, "completed", keys[name]) for name in soak_app.STEPS
    )
    assert [x for s, x, _, _ in effects if s == "receive"] == [int(receive_runs[1][2])]


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql", "mariadb"], indirect=True)
def test_a_worker_told_to_stop_now_gives_its_running_step_back(
    soak: dict[str, str], tmp_path: Path
) -> None:
    """SIGTERM to a process-worker consumer is Huey's "stop now": it interrupts the
    running task with KeyboardInterrupt. The execution is scheduled again at once (no
    housekeeping needed), not failed and not lost; its body's writes are rolled back."""
    log = Path(soak["SOAK_LOG"])
    hold = Path(soak["SOAK_HOLD"])
    hold.touch()
    reached = Path(soak["SOAK_HOLD"] + ".reached")
    workflow_id = soak_app.SoakWorkflow.create().id

    worker = start_worker(soak, tmp_path, "process")
    try:
        wait_until(reached.exists)
        os.kill(worker.pid, signal.SIGTERM)  # the consumer alone: it interrupts its workers
        worker.wait(timeout=TIMEOUT)
    finally:
        stop(worker, signal.SIGKILL)
    assert executions(workflow_id) == [("receive", "scheduled", None)]
    assert effect_rows() == []
    assert "scheduled again" in (tmp_path / "worker.log").read_text()
    hold.unlink()

    worker = start_worker(soak, tmp_path, "process")
    try:
        wait_until(lambda: workflow_state(workflow_id) == "finished")
    finally:
        stop(worker, signal.SIGINT)
    history = executions(workflow_id)
    assert Counter(history) == Counter(
        {(name, "completed", "success"): 1 for name in soak_app.STEPS}
    )
    runs = [line.split() for line in log.read_text().splitlines()]
    # Each interrupted run gave its execution back (the other worker may take the given
    # back trigger while the consumer shuts down, and be interrupted in turn); then one
    # run went through.
    released = (tmp_path / "worker.log").read_text().count("scheduled again")
    assert released >= 1
    assert Counter(p[1] for p in runs)["receive"] == released + 1
    assert sorted(s for s, _, _, _ in effect_rows()) == sorted(soak_app.STEPS)


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql", "mariadb"], indirect=True)
def test_a_resumable_step_killed_mid_iteration_resumes_from_its_last_checkpoint(
    soak: dict[str, str], tmp_path: Path
) -> None:
    """SIGKILL while iteration 5 has written its row (uncommitted): after recovery the
    step goes on from cursor 4; rows 1-4 are not written again, row 5 is written once."""
    log = Path(soak["SOAK_LOG"])
    hold = Path(soak["SOAK_HOLD"])
    hold.touch()
    reached = Path(soak["SOAK_HOLD"] + ".reached")
    workflow_id = soak_app.SoakWalk.create().id

    worker = start_worker(soak, tmp_path, "thread")
    try:
        wait_until(reached.exists)
        stop(worker, signal.SIGKILL)
    finally:
        stop(worker, signal.SIGKILL)
    hold.unlink()
    walked = [s for s, _, _, _ in effect_rows()]
    assert sorted(walked) == sorted(f"walk {i}" for i in range(1, soak_app.WALK_HOLD_AT))

    recovered = 0

    def housekeeping_recovers() -> bool:
        nonlocal recovered
        recovered += housekeeping.run(soak_app.geneva).stuck_reattempted
        return recovered > 0

    wait_until(housekeeping_recovers, timeout=10)
    worker = start_worker(soak, tmp_path, "thread")
    try:
        wait_until(lambda: workflow_state(workflow_id) == "finished")
    finally:
        stop(worker, signal.SIGINT)
    assert worker.returncode == 0
    rows = Counter(s for s, _, _, _ in effect_rows())
    assert rows == Counter(f"walk {i}" for i in range(1, soak_app.WALK_ITERATIONS + 1))
    # Iteration 5 ran twice (the killed run and the resumed one); no other ran again.
    runs = Counter(line.split()[2] for line in log.read_text().splitlines())
    assert runs == Counter({str(i): 2 if i == soak_app.WALK_HOLD_AT else 1 for i in range(1, 11)})
    history = executions(workflow_id)
    assert history[0] == ("walk", "failed", "recovered")
    assert history[-1] == ("walk", "completed", "success")

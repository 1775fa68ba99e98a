"""A real worker process killed with SIGKILL in the middle of a step body.

The short version of ``bench/soak.py``: one workflow of the soak app
(``bench/soak_app.py``), one ``flask geneva worker`` subprocess, one kill while the
first step's body runs. Housekeeping, with ``GENEVA_STUCK_IN_PROGRESS_AFTER`` lowered
to one second, marks the lost execution ``failed``/``recovered`` and schedules a fresh
one; a restarted worker runs it and the rest of the workflow. The killed body ran (its
external effect is in the log) but never committed, so every successful execution has
exactly one effect, and only the recovered step's body ran twice.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bench import soak_app
from flask_geneva import housekeeping
from tests.conftest import REDIS_URL
from tests.conftest import RUN_TOKEN

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 30


def wait_for(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.05)


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
        "SOAK_LOG": str(tmp_path / "effects.log"),
        "SOAK_HOLD": str(tmp_path / "hold"),
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


def executions(workflow_id: int) -> list[tuple[str, str, str | None]]:
    e = soak_app.geneva.tables.executions
    with soak_app.geneva.engine().connect() as conn:
        return [
            (r.step_name, r.state, r.outcome)
            for r in conn.execute(
                sa.select(e.c.step_name, e.c.state, e.c.outcome)
                .where(e.c.workflow_id == workflow_id)
                .order_by(e.c.id)
            )
        ]


def workflow_state(workflow_id: int) -> str:
    w = soak_app.geneva.tables.workflows
    with soak_app.geneva.engine().connect() as conn:
        return str(conn.execute(sa.select(w.c.state).where(w.c.id == workflow_id)).scalar_one())


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
    hold.touch()  # bodies wait while this file exists
    workflow_id = soak_app.SoakWorkflow.create().id

    worker = start_worker(soak, tmp_path, worker_type)
    try:
        wait_for(lambda: log.exists() and log.read_text().count(" receive ") == 1)
        stop(worker, signal.SIGKILL)  # mid-body: the external effect is done, nothing committed
    finally:
        stop(worker, signal.SIGKILL)
    assert executions(workflow_id) == [("receive", "in_progress", None)]
    hold.unlink()

    recovered = 0

    def housekeeping_recovers() -> bool:
        nonlocal recovered
        recovered += housekeeping.run(soak_app.geneva).stuck_reattempted
        return recovered > 0

    wait_for(housekeeping_recovers, timeout=10)  # past the lowered 1 s threshold
    assert recovered == 1
    assert executions(workflow_id) == [
        ("receive", "failed", "recovered"),
        ("receive", "scheduled", None),
    ]

    worker = start_worker(soak, tmp_path, worker_type)
    try:
        wait_for(lambda: workflow_state(workflow_id) == "finished")
    finally:
        stop(worker, signal.SIGINT)
    assert worker.returncode == 0

    history = executions(workflow_id)
    assert history[0] == ("receive", "failed", "recovered")
    assert Counter((s, st) for s, st, _ in history[1:]) == Counter(
        {(name, "completed"): 1 for name in soak_app.STEPS}
    )
    # The killed body's external effect happened; its database effect never committed.
    lines = Counter(line.split()[1] for line in log.read_text().splitlines())
    assert lines == Counter({"receive": 2, "check": 1, "reserve": 1, "ship": 1})
    effects = soak_app.SoakEffect.__table__
    e = soak_app.geneva.tables.executions
    with soak_app.geneva.engine().connect() as conn:
        effect_states = conn.execute(
            sa.select(effects.c.step_name, e.c.state).join(e, e.c.id == effects.c.execution_id)
        ).all()
    assert sorted(effect_states) == sorted((name, "completed") for name in soak_app.STEPS)

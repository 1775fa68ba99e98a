"""Admin render times as the tables grow (a benchmark script, not a test).

Fills the workflow tables with N workflows (``bench_fill.py``: 5 executions each, two
reattempted tries of the first step then its three steps; mostly finished, some paused
with a failure, some ready/performing; one workflow with a 10,000-item map), then times
every page, and every fragment htmx asks for (``HX-Request: true``: polls, "Load more",
previews, an action's answer), through the Flask test client (median of 7 requests)::

    .venv/bin/python tests/admin/bench_admin.py --db postgresql --sizes 10000 100000
    .venv/bin/python tests/admin/bench_admin.py --db sqlite --sizes 10000 100000

``--keep`` keeps the filled database and prints its URL; ``--reuse URL`` times such a
database again without filling or dropping it (it counts the workflows it holds)::

    .venv/bin/python tests/admin/bench_admin.py --db postgresql --sizes 1000000 --keep
    .venv/bin/python tests/admin/bench_admin.py --reuse postgresql+psycopg://postgres@127.0.0.1:5432/geneva_bench_1764770000

The timed action (pause, then resume, of one ready workflow) leaves it as it found it,
with eight more operator actions (4 pauses, 4 resumes) in its timeline per run.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from bench_fill import CLASSES
from bench_fill import db
from bench_fill import fill
from bench_fill import geneva
from flask import Flask

from flask_geneva.admin.security import CSRF_HEADER
from flask_geneva.admin.security import CSRF_SESSION_KEY

SERVERS = {
    "postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/",
    "mariadb": "mysql+pymysql://root@127.0.0.1:3306/",
}
TOKEN = "bench-csrf-token"
#: A timed request: its name, method, path and form (for a POST).
Request = tuple[str, str, str, dict[str, Any] | None]


@dataclass(frozen=True)
class Targets:
    """What the timed paths point at, read from the filled database."""

    count: int
    #: The highest workflow id, and one in the middle (with its class's second step).
    top: int
    mid: int
    mid_step: str
    #: Two ready workflows: one whose page is polled, one paused and resumed.
    polled: int
    acted: int
    map_id: int
    #: The map's producer execution: its output is a 10,000-element list.
    output_id: int
    #: The newest 400 workflow ids (what a list page and its "Load more" show).
    newest: list[int]


def targets() -> Targets:
    w, e = geneva.tables.workflows, geneva.tables.executions
    with geneva.engine().connect() as conn:
        count = int(conn.scalar(sa.select(sa.func.count()).select_from(w)) or 0)
        top = int(conn.scalar(sa.select(sa.func.max(w.c.id))) or 0)
        mid = top // 2
        mid_type = conn.scalar(sa.select(w.c.type).where(w.c.id == mid))
        ready = list(
            conn.scalars(
                sa.select(w.c.id)
                .where(w.c.state == "ready", w.c.type.in_(list(CLASSES)))
                .order_by(w.c.id.desc())
                .limit(2)
            )
        )
        map_id = conn.scalar(sa.select(w.c.id).where(w.c.type == "ReportWorkflow").limit(1))
        output_id = conn.scalar(
            sa.select(e.c.id).where(e.c.workflow_id == map_id, e.c.step_name == "split")
        )
        newest = list(conn.scalars(sa.select(w.c.id).order_by(w.c.id.desc()).limit(400)))
    if map_id is None or output_id is None or len(ready) < 2 or mid_type not in CLASSES:
        sys.exit(
            "This database lacks what the benchmark times (a ReportWorkflow with its map, "
            "two ready workflows, workflow #top/2): fill one with this script and --keep."
        )
    return Targets(
        count, top, mid, CLASSES[mid_type][1], ready[0], ready[1], map_id, output_id, newest
    )


def pages(t: Targets) -> list[Request]:
    deep = max(1, t.top - 5_000)
    items = f"/admin/workflows/{t.map_id}/steps/render/items"
    return [
        ("overview", "GET", "/admin/", None),
        ("list", "GET", "/admin/workflows", None),
        ("paused", "GET", "/admin/workflows?state=paused", None),
        ("class + step", "GET", "/admin/classes/InvoiceWorkflow?step=collect&state=paused", None),
        ("deep page", "GET", f"/admin/workflows?before={deep}", None),
        ("detail", "GET", f"/admin/workflows/{t.mid}", None),
        ("overdue", "GET", "/admin/workflows?attention=overdue", None),
        ("reattempting", "GET", "/admin/workflows?attention=reattempting", None),
        ("acted on by", "GET", "/admin/workflows?actor=ops@example.com", None),
        ("fleet 24 h", "GET", "/admin/fleet?window=24h", None),
        ("definitions", "GET", "/admin/definitions", None),
        ("/metrics", "GET", "/admin/metrics", None),
        ("map detail (10,000 items)", "GET", f"/admin/workflows/{t.map_id}", None),
        ("items", "GET", items, None),
        ("items: scheduled", "GET", f"{items}?state=scheduled", None),
        ("items: after 9,000", "GET", f"{items}?after=9000", None),
        ("output (10,000 elements)", "GET", _output(t), None),
        ("rerun page", "GET", f"/admin/workflows/{t.mid}/rerun?step={t.mid_step}", None),
        ("bulk page: cancel filter", "POST", "/admin/workflows/bulk", _bulk_filter()),
    ]


def fragments(t: Targets) -> list[Request]:
    more = t.newest[49]  # the "Load more" of a first page
    # Stale digests: the poll answers every row again (as when all of them changed).
    poll = "&".join(f"h_row_{i}=stale" for i in [t.polled, *t.newest[:49]])
    poll_400 = "&".join(f"h_row_{i}=stale" for i in [t.polled, *t.newest[:399]])
    return [
        ("overview poll", "GET", "/admin/", None),
        ("list: load more", "GET", f"/admin/workflows?before={more}", None),
        ("paused: load more", "GET", f"/admin/workflows?state=paused&before={more}", None),
        (
            "class + step: load more",
            "GET",
            f"/admin/classes/InvoiceWorkflow?step=collect&state=paused&before={more}",
            None,
        ),
        ("overdue: load more", "GET", f"/admin/workflows?attention=overdue&before={more}", None),
        (
            "reattempting: load more",
            "GET",
            f"/admin/workflows?attention=reattempting&before={more}",
            None,
        ),
        ("list poll, 50 rows", "GET", f"/admin/workflows/poll?{poll}", None),
        ("list poll, 400 rows", "GET", f"/admin/workflows/poll?{poll_400}", None),
        ("detail poll", "GET", f"/admin/workflows/{t.polled}", None),
        ("map detail poll", "GET", f"/admin/workflows/{t.map_id}", None),
        ("rerun preview", "GET", f"/admin/workflows/{t.mid}/rerun?step={t.mid_step}", None),
        ("map rerun preview", "GET", f"/admin/workflows/{t.map_id}/rerun?step=render", None),
        ("bulk preview: cancel filter", "POST", "/admin/workflows/bulk", _bulk_filter()),
        (
            "bulk preview: 50 rows",
            "POST",
            "/admin/workflows/bulk",
            {"op": "cancel", "scope": "selected", "ids": [str(i) for i in t.newest[:50]]},
        ),
    ]


def _output(t: Targets) -> str:
    return f"/admin/workflows/{t.map_id}/executions/{t.output_id}/output"


def _bulk_filter() -> dict[str, Any]:
    return {"op": "cancel", "scope": "filter"}


def _time(client: Any, request: Request, *, fragment: bool, runs: int = 7) -> float:
    name, method, path, form = request
    headers = {CSRF_HEADER: TOKEN}
    if fragment:
        headers.update({"HX-Request": "true", "HX-Current-URL": "http://localhost/admin/"})
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        response = client.open(path, method=method, headers=headers, data=form)
        samples.append((time.perf_counter() - t0) * 1000)
        assert response.status_code == 200, (name, path, response.status_code)
        head = response.get_data(as_text=True)[:2_000].lower()
        assert ("<html" in head) != fragment or "text/plain" in response.content_type, (
            name,
            head[:200],
        )
    return statistics.median(samples)


def _time_action(client: Any, workflow_id: int, runs: int = 8) -> float:
    """An action's answer (htmx): pause, then resume, the same ready workflow."""
    samples = []
    headers = {CSRF_HEADER: TOKEN, "HX-Request": "true"}
    for n in range(runs):
        operation = ("pause", "resume")[n % 2]
        t0 = time.perf_counter()
        response = client.post(f"/admin/workflows/{workflow_id}/{operation}", headers=headers)
        samples.append((time.perf_counter() - t0) * 1000)
        assert response.status_code == 200, (operation, response.status_code)
        text = response.get_data(as_text=True)
        assert "<html" not in text.lower() and "flash-success" in text, text[:300]
    return statistics.median(samples)


def time_all(client: Any) -> dict[str, float]:
    """Time every page and fragment once (each the median of its requests)."""
    t = targets()
    figures = {r[0]: _time(client, r, fragment=False) for r in pages(t)}
    for r in fragments(t):
        figures[f"~{r[0]}"] = _time(client, r, fragment=True)
    figures["~action: pause / resume"] = _time_action(client, t.acted)
    return figures


def print_tables(results: dict[int, dict[str, float]]) -> None:
    """Two tables, pages then fragments: a row each, a column per size (ms, median)."""
    sizes = sorted(results)
    names = list(results[sizes[0]])
    for title, fragment in (("page", False), ("fragment (htmx)", True)):
        print()
        print(f"| {title} | " + " | ".join(f"{s:,}" for s in sizes) + " |")
        print("|---|" + "---:|" * len(sizes))
        for name in names:
            if name.startswith("~") == fragment:
                cells = " | ".join(f"{results[s][name]:.1f}" for s in sizes)
                print(f"| {name.removeprefix('~')} | {cells} |")
    print("\n(ms, median of 7 requests; the action: of 4 pauses and 4 resumes)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", choices=["sqlite", "postgresql", "mariadb"], default="sqlite")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--keep", action="store_true", help="keep the database (to EXPLAIN)")
    parser.add_argument(
        "--reuse", metavar="URL", help="time this filled database; fill and drop nothing"
    )
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    name = f"geneva_bench_{int(time.time())}"
    admin = None
    if args.reuse:
        url = args.reuse
    elif args.db == "sqlite":
        url = f"sqlite:///{tmp / 'bench.db'}"
    else:
        admin = sa.create_engine(
            SERVERS[args.db] + ("postgres" if args.db == "postgresql" else ""),
            isolation_level="AUTOCOMMIT",
        )
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
        url = SERVERS[args.db] + name
    app = Flask(__name__, instance_path=str(tmp))
    app.config.update(
        SQLALCHEMY_DATABASE_URI=url,
        GENEVA_HUEY="memory://",
        SECRET_KEY="b",
        GENEVA_ADMIN_AUTHORIZE=lambda action: True,
        GENEVA_ADMIN_METRICS=True,
    )
    db.init_app(app)
    geneva.init_app(app)
    app.register_blueprint(geneva.admin_blueprint, url_prefix="/admin")
    client = app.test_client()
    with client.session_transaction() as session:
        session[CSRF_SESSION_KEY] = TOKEN
    results: dict[int, dict[str, float]] = {}
    try:
        with app.app_context():
            if args.reuse:
                results[targets().count] = time_all(client)
            else:
                geneva.create_all()
                results = _fill_and_time(client, args.db, sorted(args.sizes))
    finally:
        with app.app_context():
            if not args.keep and not args.reuse:
                geneva.drop_all()
            for engine in db.engines.values():
                engine.dispose()
        if args.keep:
            print("kept", url, file=sys.stderr)
        elif admin is not None:
            with admin.connect() as conn:
                conn.execute(sa.text(f"DROP DATABASE {name}"))
        if not (args.keep and url.startswith("sqlite:///" + str(tmp))):
            shutil.rmtree(tmp, ignore_errors=True)
    print_tables(results)


def _fill_and_time(client: Any, dialect: str, sizes: list[int]) -> dict[int, dict[str, float]]:
    results = {}
    filled = 0
    for size in sizes:
        started = time.perf_counter()
        while filled < size:
            chunk = min(20_000, size - filled)
            fill(filled + 1, chunk)
            filled += chunk
        if dialect == "postgresql":
            # What autovacuum does in production: statistics and the visibility map
            # (index-only scans skip the heap only for all-visible pages).
            vacuum = geneva.engine().execution_options(isolation_level="AUTOCOMMIT")
            with vacuum.connect() as conn:
                conn.execute(sa.text("VACUUM ANALYZE"))
        filled_in = time.perf_counter() - started
        results[size] = time_all(client)
        took = time.perf_counter() - started - filled_in
        print(
            f"{size:,} workflows: filled in {filled_in:.0f} s, timed in {took:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    return results


if __name__ == "__main__":
    main()

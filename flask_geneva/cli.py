"""The ``flask geneva`` command group: thin adapters over the Python API."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

from .tasks import make_consumer

geneva_cli = AppGroup("geneva", help="Durable workflows: run workers, inspect and fix workflows.")


@geneva_cli.command("worker")
@click.option("-w", "--workers", default=4, show_default=True, help="Number of workers.")
@click.option(
    "-k",
    "--worker-type",
    type=click.Choice(["thread", "process", "greenlet"]),
    default="thread",
    show_default=True,
    help="Worker kind.",
)
def worker_command(workers: int, worker_type: str) -> None:
    """Run a Huey consumer that performs workflow steps for this app."""
    state = current_app.extensions["geneva"]
    consumer = make_consumer(state.huey, workers=workers, worker_type=worker_type)
    click.echo(
        f"flask-geneva worker: {workers} {worker_type} worker(s) on {type(state.huey).__name__}"
    )
    consumer.run()

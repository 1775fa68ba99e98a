"""``python -m demo_app`` (``make demo``): run the web app and a worker until Ctrl-C.

Two child processes, the same two you would run in production:

* ``flask --app demo_app run`` — the web app (the demo pages and the admin);
* ``flask --app demo_app geneva worker`` — the Huey consumer that performs steps.

Each child runs in its own session, so Ctrl-C reaches only this supervisor, which then
stops them in order: the worker gracefully (running steps finish), then the web app.
If either child dies, the other is stopped too.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

from . import create_app

#: How long a child may take to stop before it is killed.
STOP_TIMEOUT = 10.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo_app", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("DEMO_PORT", 5000)))
    parser.add_argument("--workers", type=int, default=8, help="worker threads")
    args = parser.parse_args(argv)

    app = create_app()  # first run: creates the database and tables before the children start
    port = free_port(args.host, args.port)
    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    # Installed before the children start: a handler (unlike an inherited "ignore",
    # which a shell gives background jobs) is reset to the default in each child, so
    # both children always answer SIGINT.
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    flask = [sys.executable, "-m", "flask", "--app", "demo_app"]
    children = {
        "worker": start(flask + ["geneva", "worker", "--workers", str(args.workers)]),
        "web": start(flask + ["run", "--host", args.host, "--port", str(port)]),
    }
    url = f"http://{args.host}:{port}/"
    wait_until_listening(args.host, port, children["web"])
    print(
        f"\n  flask-geneva demo: {url}\n"
        f"  admin:             {url.rstrip('/')}/admin/workflows/\n"
        f"  data:              {app.instance_path}\n"
        "  Ctrl-C stops the web app and the worker.\n",
        flush=True,
    )

    failed = None
    while not stopping:
        failed = next((name for name, p in children.items() if p.poll() is not None), None)
        if failed:
            print(f"demo: the {failed} process exited; stopping the other one", file=sys.stderr)
            break
        time.sleep(0.2)
    print("\ndemo: stopping the worker (running steps finish first) and the web app...", flush=True)
    forced = [name for name in ("worker", "web") if stop(children[name]) != signal.SIGINT]
    for name in forced:
        print(f"demo: the {name} process ignored Ctrl-C and was terminated", file=sys.stderr)
    print("demo: stopped.", flush=True)
    return 1 if failed or forced else 0


def start(command: list[str]) -> subprocess.Popen[bytes]:
    # A new session keeps the terminal's Ctrl-C away from the child: the supervisor
    # decides the order and the kind of shutdown.
    return subprocess.Popen(command, start_new_session=True)


def stop(process: subprocess.Popen[bytes]) -> int | None:
    """Stop a child: SIGINT (graceful for Huey and the web server), then SIGTERM, then kill.

    :return: the signal that stopped it, or None if it had already exited.
    """
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        if process.poll() is not None:
            return None
        process.send_signal(sig)
        try:
            process.wait(STOP_TIMEOUT)
            return sig
        except subprocess.TimeoutExpired:
            continue
    return signal.SIGKILL


def wait_until_listening(host: str, port: int, process: subprocess.Popen[bytes]) -> None:
    """Wait (up to 15 s) until the web app accepts connections, so the URL printed works."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and process.poll() is None:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)


def free_port(host: str, preferred: int) -> int:
    """Return ``preferred`` if nothing listens there, else a free port chosen by the OS."""
    for port in (preferred, 0):
        with socket.socket() as probe:
            # Like the web server: a port left in TIME_WAIT by a previous run is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise RuntimeError(f"no free port on {host}")


if __name__ == "__main__":
    sys.exit(main())

"""The built wheel carries the admin's templates and static files: build it, install it
into a fresh virtual environment, and render the admin from the installed copy."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: Builds the wheel and installs it in a fresh virtualenv.
pytestmark = pytest.mark.slow

APP = textwrap.dedent(
    """
    import json, sys
    from flask import Flask
    from flask_sqlalchemy import SQLAlchemy
    import flask_geneva
    from flask_geneva import Geneva, step

    db = SQLAlchemy()
    geneva = Geneva(db)

    class Boom(Exception):
        pass

    class PackagedWorkflow(geneva.Workflow):
        @step
        def explode(self):
            raise Boom("<b>from the wheel</b>")

    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI="sqlite:///app.db", GENEVA_HUEY="memory://",
                      SECRET_KEY="x", GENEVA_ADMIN_AUTHORIZE=lambda action: True)
    db.init_app(app)
    geneva.init_app(app)
    app.register_blueprint(geneva.admin_blueprint, url_prefix="/admin/workflows")
    with app.app_context():
        geneva.create_all()
        wf = PackagedWorkflow.create()
        from flask_geneva.testing import perform_next_step
        try:
            perform_next_step(wf)
        except Boom:
            pass
        wid = wf.id
    client = app.test_client()
    pages = {
        path: client.get("/admin/workflows" + path)
        for path in ("/", "/workflows", f"/workflows/{wid}",
                     "/static/geneva/htmx-2.0.11.min.js", "/static/geneva/geneva.css")
    }
    detail = pages[f"/workflows/{wid}"].get_data(as_text=True)
    print(json.dumps({
        "file": flask_geneva.__file__,
        "status": {p: r.status_code for p, r in pages.items()},
        "highlighted": '<span class="hll">' in detail,
        "escaped": "&lt;b&gt;from the wheel&lt;/b&gt;" in detail,
    }))
    for response in pages.values():
        response.close()
    """
)


def test_the_wheel_installed_in_a_fresh_virtualenv_renders_the_admin(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("flask_geneva-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # Dependencies come from the test environment; a plain path line (not addsitedir)
    # does not run that environment's .pth files, so its editable flask_geneva stays out.
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            "--quiet",
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )

    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "packaged_app.py").write_text(APP)
    run = subprocess.run(
        [str(python), "packaged_app.py"],
        cwd=app_dir,
        check=True,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert Path(result["file"]).is_relative_to(site), result["file"]
    assert set(result["status"].values()) == {200}, result["status"]
    assert result["highlighted"] and result["escaped"]

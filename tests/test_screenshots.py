"""``scripts/screenshots.py`` photographs the running demo, light and dark."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import IN_CI

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


def test_the_script_writes_every_page_in_both_themes(tmp_path):
    if not os.path.exists(CHROMIUM):
        if IN_CI:
            pytest.fail(f"CI=true requires Chromium at {CHROMIUM}")
        pytest.skip(f"no Chromium at {CHROMIUM}")
    result = subprocess.run(
        [sys.executable, "scripts/screenshots.py", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    names = sorted(p.name for p in tmp_path.glob("*.png"))
    pages = ("admin-definitions", "admin-detail", "admin-document", "admin-list", "admin-overview")
    assert names == sorted([f"{p}.png" for p in pages] + [f"{p}-dark.png" for p in pages])
    assert all(png_size(tmp_path / name) == (1280, 900) for name in names)

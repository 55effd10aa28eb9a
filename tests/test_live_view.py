from __future__ import annotations

import io
import os
import select
import subprocess
import sys
import time

import numpy as np

from hwval.runfile.documents import Page
from hwval.capture.live_view import LiveView


def test_render_shows_latest_watts_rate_and_drops():
    view = LiveView(dropped=lambda name: 3 if name == "wall" else 0, out=io.StringIO())
    view(Page("wall", np.arange(10.0), {"power_w": np.linspace(100, 123.4, 10)}))
    view(Page("gpu", np.arange(5.0), {"energy_j": np.ones(5)}))
    line = view.render(dt_s=2.0, elapsed_s=12.0)
    assert "wall 123.4 W 5/s drop 3" in line
    assert "gpu nan W 2/s" in line and "12.0s" in line


def test_off_when_stdout_is_not_a_tty():
    assert not LiveView.enabled_for(io.StringIO())


def test_capture_on_a_terminal_draws_the_status_line(tmp_path):
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "hwval.cli", "capture", "--no-nvml", "--no-rapl",
                             "-m", "synthetic:constant:77?period_s=0.05&name=wall", "--duration", "2.5",
                             "-o", str(tmp_path / "r.h5")], stdout=slave, stderr=subprocess.DEVNULL)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    proc.wait(10)
    os.close(master)
    assert proc.returncode == 0
    assert b"wall 77.0 W" in out and b"\x1b[K" in out

"""The workload's whole process tree ends with the capture, however the capture ends."""

from __future__ import annotations

import io
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import popen_hwval
from hwval.capture.marker_server import UNOWNED_AGE_S, MarkerServer, remove_stale_dirs
from hwval.capture.session import CaptureRequest, run_capture
from hwval.config import CaptureConfig, SoftwareConfig, parse_meter_spec
from hwval.runfile.reader import open_run
from hwval.sources.registry import Registry

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads process states from /proc")

# Starts a child that ignores SIGTERM, writes "child_pid marker_socket" to argv[1], then the
# leader either exits at once or sleeps (argv[2]).
WORKLOAD = r"""
import os, subprocess, sys, time
out = sys.argv[1]
child = subprocess.Popen([sys.executable, "-c", "import os, signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "open(sys.argv[1] + '.tmp', 'w').write(f\"{os.getpid()} {os.environ.get('HWVAL_MARK_SOCKET', '')}\")\n"
    "os.rename(sys.argv[1] + '.tmp', sys.argv[1])\n"
    "time.sleep(120)", out])
while not os.path.exists(out):  # the child ignores SIGTERM from here on
    time.sleep(0.01)
time.sleep(float(sys.argv[2]))
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(b")") + 2:].split()[0] not in (b"Z", b"X")


def _wait_for(path, timeout_s=20.0):
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)
    return path.read_text().split()


def test_children_that_ignore_sigterm_do_not_outlive_the_capture(tmp_path):
    pids = tmp_path / "pids"
    registry = Registry()
    cfg = CaptureConfig(software=SoftwareConfig(nvml=False, rapl=False),
                        meters=(parse_meter_spec("synthetic:constant:1?period_s=0.01", registry.names()),))
    out = tmp_path / "run.h5"
    code = run_capture(CaptureRequest(config=cfg, command=[sys.executable, "-c", WORKLOAD, str(pids), "0"],
                                      output=str(out), live=False, registry=registry, notes=io.StringIO()))
    assert code == 0
    child = int(_wait_for(pids)[0])
    assert not _alive(child), "a child that ignores SIGTERM outlived the capture"
    with open_run(out) as run:
        assert run.complete
        end = run.events[-1]
        assert end.name == "workload_end" and end.detail["leftover_processes_ended_by"] == "SIGKILL"


def test_kill_9_of_the_capture_ends_the_workload_tree_and_the_next_start_cleans_up(tmp_path):
    pids = tmp_path / "pids"
    # A private, short TMPDIR (a unix socket path has 108 bytes): captures of other tests running
    # in parallel clean stale marker folders of the shared temp folder, this one's among them.
    private_tmp = tempfile.mkdtemp(prefix="hwpt-", dir="/tmp")
    proc = popen_hwval("capture", "--no-nvml", "--no-rapl", "-m", "synthetic:constant:1?period_s=0.01",
                       "-o", str(tmp_path / "run.h5"), "--", sys.executable, "-c", WORKLOAD, str(pids), "120",
                       env={**os.environ, "TMPDIR": private_tmp})
    try:
        child_s, sock = _wait_for(pids)
        child = int(child_s)
        leader = None
        for entry in os.listdir("/proc"):  # the workload leader: the capture's child running python -c
            if entry.isdigit() and entry != str(proc.pid):
                try:
                    with open(f"/proc/{entry}/stat", "rb") as fh:
                        stat = fh.read()
                except OSError:
                    continue
                fields = stat[stat.rfind(b")") + 2:].split()
                if int(fields[1]) == proc.pid and int(fields[2]) == int(entry):
                    leader = int(entry)
        assert leader is not None and _alive(leader) and _alive(child)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=20)
        deadline = time.monotonic() + 15  # the guard's SIGTERM, 2 s grace, SIGKILL
        while (_alive(leader) or _alive(child)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(leader), "the workload leader outlived a kill -9 of the capture"
        assert not _alive(child), "the workload's child outlived a kill -9 of the capture"
    finally:
        if proc.poll() is None:
            proc.kill()
    marks_dir = os.path.dirname(sock)
    assert os.path.isdir(marks_dir)  # the killed capture could not remove it
    assert marks_dir in remove_stale_dirs(os.path.dirname(marks_dir))
    assert not os.path.exists(marks_dir)


def test_a_live_captures_marker_folder_is_kept(tmp_path):
    live = tmp_path / "hwval-marks-live"
    live.mkdir()
    (live / "owner").write_text(str(os.getpid()))
    dead = tmp_path / "hwval-marks-dead"
    dead.mkdir()
    (dead / "owner").write_text("999999999")
    assert remove_stale_dirs(str(tmp_path)) == [str(dead)]
    assert live.exists()


def test_a_marker_folder_whose_owner_is_not_written_yet_is_kept_until_it_is_old(tmp_path):
    """A capture's folder between mkdtemp and its owner file (missing, or empty while being
    written) belongs to a capture starting up: a sweep by another capture must leave it (an
    empty owner once read as pid 0, "dead", and the starting capture's bind failed with ENOENT)."""
    starting = tmp_path / "hwval-marks-starting"
    starting.mkdir()
    (starting / "owner").write_text("")
    unowned = tmp_path / "hwval-marks-unowned"
    unowned.mkdir()
    old_empty = tmp_path / "hwval-marks-old"
    old_empty.mkdir()
    (old_empty / "owner").write_text("")
    aged = time.time() - 2 * UNOWNED_AGE_S
    os.utime(old_empty, (aged, aged))
    assert remove_stale_dirs(str(tmp_path)) == [str(old_empty)]
    assert starting.exists() and unowned.exists()


def test_a_marker_server_leaves_a_whole_owner_file_and_no_partial(tmp_path):
    server = MarkerServer(lambda *a: None, lambda *a: None)
    try:
        assert sorted(os.listdir(server.dir)) == ["mark.sock", "owner"]
        assert Path(server.dir, "owner").read_text() == str(os.getpid())
        assert server.dir not in remove_stale_dirs(os.path.dirname(server.dir))
    finally:
        server.close()

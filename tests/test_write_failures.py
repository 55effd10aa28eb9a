"""Honest completion: a write failure, a dead source thread or an invalid option never gives a
run that says complete; the file is always closed; the operator gets one line per failure."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import popen_hwval
from hwval.capture.session import CaptureRequest, run_capture
from hwval.cli import cli
from hwval.config import CaptureConfig, SoftwareConfig, parse_meter_spec
from hwval.runfile import layout
from hwval.runfile.claim import reserve_path
from hwval.runfile.journal import journal_path
from hwval.runfile.reader import open_run
from hwval.sources.base import Key, StreamInfo
from hwval.sources.registry import Registry

NO_SW = SoftwareConfig(nvml=False, rapl=False)
FAST = "synthetic:constant:100?period_s=0.001&name=syn"


def _capture(tmp_path, specs, duration_s=1.0, registry=None, on_started=None):
    registry = registry or Registry()
    out = tmp_path / "run.h5"
    cfg = CaptureConfig(software=NO_SW, meters=tuple(parse_meter_spec(s, registry.names()) for s in specs))
    notes = io.StringIO()
    code = run_capture(CaptureRequest(config=cfg, duration_s=duration_s, output=str(out), live=False,
                                      registry=registry, notes=notes, on_started=on_started))
    return code, out, notes.getvalue()


def test_enospc_in_the_writer_marks_the_run_incomplete_and_closes_the_file(tmp_path, monkeypatch):
    real = layout.append_columns
    calls = [0]

    def append_or_enospc(ds, columns):
        calls[0] += 1
        if calls[0] >= 5:  # part-way into the second flush (t, power_w, energy_j each): the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(ds, columns)

    monkeypatch.setattr(layout, "append_columns", append_or_enospc)
    code, out, notes = _capture(tmp_path, [FAST], duration_s=1.5)
    assert code == 1, notes
    failures = [line for line in notes.splitlines() if "No space left on device" in line]
    assert len(failures) == 1, notes  # one line for the failure, not one per flush
    assert len(notes.splitlines()) <= 4, notes
    assert calls[0] == 5  # the writer stopped writing at the failure
    with open_run(out) as run:  # closed and readable: no segfault, no half-open file
        assert not run.complete
        assert "No space left on device" in run.attrs["stop_reason"]
        syn = run.stream("syn")  # the half-written second flush was rolled back: columns agree
        assert len(syn.t) > 0 and len(syn.t) == len(syn.data["power_w"])
    assert journal_path(out).exists()  # the journal holds what the file lacks
    assert not reserve_path(out).exists()


def _can_mount_tmpfs(path) -> bool:
    if os.geteuid() != 0:
        return False
    path.mkdir()
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(path)],
                        capture_output=True).returncode == 0
    return ok


def test_full_tmpfs_exits_1_without_a_crash(tmp_path):
    mnt = tmp_path / "small"
    if not _can_mount_tmpfs(mnt):
        pytest.skip("needs root to mount a small tmpfs (the injected ENOSPC test covers the writer)")
    try:
        out = mnt / "run.h5"
        proc = popen_hwval("capture", "--no-nvml", "--no-rapl", "-m", FAST, "-m",
                           FAST.replace("name=syn", "name=syn2"), "--duration", "4", "-o", str(out))
        # wait until the capture records (its journal holds the start record): it has claimed
        # its reserve by then; filling the disk earlier makes the claim refuse (exit 2)
        journal = journal_path(str(out))
        deadline = time.monotonic() + 60
        while not (journal.exists() and journal.stat().st_size > 0):
            assert proc.poll() is None and time.monotonic() < deadline, "the capture never started recording"
            time.sleep(0.02)
        # fill the disk but for ~40 kB, in chunks: the capture writes meanwhile and may fill it
        # first, which is the point, so ENOSPC here just ends the filling
        left = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize - 40_000
        with open(mnt / "filler", "wb", buffering=0) as fh:  # unbuffered: nothing left to flush at close
            try:
                while left > 0:
                    left -= fh.write(b"\0" * min(left, 65536))
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 1, err  # not 139: the file was closed before the exit
        assert "Traceback" not in err and "HDF5-DIAG" not in err, err
        assert len(err.splitlines()) <= 5, err
        assert "No space left on device" in err
        (mnt / "filler").unlink()
        with open_run(out) as run:
            assert not run.complete and "No space left" in run.attrs["stop_reason"]
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


class DiesOnStart:
    """A driver bug outside read(): a period the scheduler cannot use."""

    mode = "polled"

    def __init__(self, spec):
        self.spec, self.period_s = spec, "soon"

    def open(self, ctx):
        return [StreamInfo(self.spec.name, "hardware", "dies", "mem", "wall", None,
                           (Key("power_w", "W", "instant"),))]

    def read(self):
        return {self.spec.name: {"power_w": 1.0}}

    def close(self):
        pass


def test_a_source_thread_that_dies_leaves_an_error_a_gap_and_an_incomplete_run(tmp_path):
    registry = Registry().with_driver("dies", DiesOnStart)
    code, out, notes = _capture(tmp_path, ["dies:x?name=bad", "synthetic:constant:1?period_s=0.01&name=ok"],
                                duration_s=0.5, registry=registry)
    assert code == 1
    assert "source bad stopped" in notes and "Traceback" not in notes
    with open_run(out) as run:
        assert not run.complete and "source bad stopped" in run.attrs["stop_reason"]
        names = [(e.name, e.stream) for e in run.events]
        assert ("gap_start", "bad") in names
        (err,) = [e for e in run.events if e.name == "error"]
        assert err.detail["kind"] == "source_stopped"
        assert len(run.stream("ok").t) > 10 and len(run.stream("bad").t) == 0


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e308", "0", "-1", "1e-9"])
def test_bad_periods_are_refused_from_a_spec(tmp_path, value):
    res = CliRunner().invoke(cli, ["capture", "--no-nvml", "--no-rapl", "-m",
                                   f"synthetic:constant:1?period_s={value}", "--duration", "0.2",
                                   "-o", str(tmp_path / "x.h5")])
    assert res.exit_code == 2 and "period_s must be a number of seconds from" in res.output
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("value", ["nan", "inf", "1e308", "0"])
def test_bad_periods_are_refused_from_toml(tmp_path, value):
    cfg = tmp_path / "lab.toml"
    cfg.write_text(f'[[meters]]\ndriver = "synthetic"\nresource = "constant:1"\nperiod_s = {value}\n')
    res = CliRunner().invoke(cli, ["capture", "-c", str(cfg), "--no-nvml", "--no-rapl", "--duration", "0.2",
                                   "-o", str(tmp_path / "x.h5")])
    assert res.exit_code == 2 and str(cfg) in res.output and "meters[0].period_s" in res.output
    cfg.write_text(f"[software]\nrapl_period_s = {value}\n")
    res = CliRunner().invoke(cli, ["capture", "-c", str(cfg), "--duration", "0.2", "-o", str(tmp_path / "x.h5")])
    assert res.exit_code == 2 and "software.rapl_period_s" in res.output
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.parametrize("name", [".", "..", "-x", "a/b", "é", "x" * 65, ""])
def test_bad_stream_names_are_refused(tmp_path, name):
    res = CliRunner().invoke(cli, ["capture", "--no-nvml", "--no-rapl", "-m",
                                   f"synthetic:constant:1?name={name}", "--duration", "0.2",
                                   "-o", str(tmp_path / "x.h5")])
    assert res.exit_code == 2 and "stream name" in res.output, res.output
    cfg = tmp_path / "lab.toml"
    cfg.write_text(f'[[meters]]\nname = "{name}"\ndriver = "synthetic"\nresource = "constant:1"\n')
    res = CliRunner().invoke(cli, ["capture", "-c", str(cfg), "--no-nvml", "--no-rapl", "--duration", "0.2",
                                   "-o", str(tmp_path / "x.h5")])
    assert res.exit_code == 2 and str(cfg) in res.output and "stream name" in res.output
    assert not (tmp_path / "x.h5").exists()


def test_a_clean_capture_has_no_reserve_left_and_is_complete(tmp_path):
    code, out, notes = _capture(tmp_path, ["synthetic:constant:5?period_s=0.01&name=s"], duration_s=0.3)
    assert code == 0, notes
    assert not reserve_path(out).exists() and not journal_path(out).exists()
    with open_run(out) as run:
        assert run.complete and "stop_reason" not in run.attrs
        assert np.allclose(run.stream("s").data["power_w"], 5.0)

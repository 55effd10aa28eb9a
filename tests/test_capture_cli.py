"""``hwval capture`` and ``hwval info`` through real processes."""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import journaled_readings, popen_hwval, run_hwval
from hwval.cli import cli
from hwval.runfile.documents import Page
from hwval.runfile.journal import journal_path
from hwval.runfile.reader import open_run
from hwval.runfile.recover import read_journal

SYN = "synthetic:constant:100?period_s=0.01&name=syn"

WORKLOAD = """
import sys, time, hwval
hwval.mark("setup", step=0)
time.sleep(0.3)
hwval.mark("epoch", epoch=1, loss=0.5)
time.sleep(0.3)
print("workload done", flush=True)
sys.exit(3)
"""


def test_command_marks_and_exit_code_propagate(tmp_path):
    out = tmp_path / "run.h5"
    res = run_hwval("capture", "--no-nvml", "--no-rapl", "-m", SYN, "-o", str(out), "--",
                    sys.executable, "-c", WORKLOAD)
    assert res.returncode == 3, res.stderr
    assert "workload done" in res.stdout
    with open_run(out) as run:
        assert run.complete
        assert run.attrs["exit_code"] == 3
        assert run.attrs["schema"] == "hwval-run" and run.attrs["schema_version"] == 1
        assert run.command[0] == sys.executable
        names = [e.name for e in run.events]
        assert names == ["workload_start", "mark", "mark", "workload_end"]
        marks = [e for e in run.events if e.name == "mark"]
        assert [m.detail["mark"] for m in marks] == ["setup", "epoch"]
        assert marks[1].detail["epoch"] == 1 and marks[1].detail["loss"] == 0.5
        # the marks sit at least the workload's 0.3 s sleep apart (stamped by the caller's
        # monotonic clock, which sleep never undercuts); the upper bound only catches nonsense
        assert 0.3 <= marks[1].t - marks[0].t < 3.0
        end = run.events[-1]
        assert end.detail["exit_code"] == 3
        syn = run.stream("syn")
        assert len(syn.t) > 30
        assert np.all(np.diff(syn.t) > 0)
        assert np.allclose(syn.data["power_w"], 100.0)
        assert syn.units["power_w"] == "W" and syn.dataset_attrs["power_w"]["semantics"] == "instant"
        # readings cover the workload
        assert syn.t[0] <= marks[0].t and syn.t[-1] >= end.t - 0.05
    assert not (tmp_path / "run.h5.journal").exists()


def test_info_text_and_json(tmp_path):
    out = tmp_path / "run.h5"
    assert run_hwval("capture", "--no-nvml", "--no-rapl", "-m", SYN, "--duration", "0.6",
                     "-o", str(out)).returncode == 0
    text = run_hwval("info", str(out))
    assert text.returncode == 0
    assert "syn" in text.stdout and "complete: yes" in text.stdout
    js = run_hwval("info", str(out), "--json")
    summary = json.loads(js.stdout)
    (stream,) = summary["streams"]
    assert stream["name"] == "syn" and stream["driver"] == "synthetic"
    # The figures are the file's own: on a loaded machine a stalled thread skips deadlines, so
    # the rate may fall and a gap (an interval > 3 periods) may appear, but never disagree.
    with open_run(out) as run:
        t = run.stream("syn").t
    assert stream["samples"] == len(t) and stream["mean_rate_hz"] == pytest.approx((len(t) - 1) / (t[-1] - t[0]))
    assert stream["gaps"] == int(np.count_nonzero(np.diff(t) > 3 * 0.01))
    # absolute deadlines 10 ms apart: the rate cannot exceed 100 Hz but by the first read's lateness
    assert 0 < stream["mean_rate_hz"] <= 100 * 1.05
    assert stream["dropped"] == 0
    assert summary["complete"] is True and summary["exit_code"] == 0


def _wait_recording(proc, out, readings: int, timeout_s: float = 60.0) -> None:
    """Wait until the capture has journaled ``readings`` readings: it is then in its run phase,
    where a signal is handled, not mid-start (an early SIGINT lands in the interpreter's
    start-up on a loaded machine). Event-based: no fixed sleep to outlast the load."""
    deadline = time.monotonic() + timeout_s
    while journaled_readings(out) < readings:
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, f"capture wrote < {readings} readings in {timeout_s} s"
        time.sleep(0.05)


def _wait_line(proc, needle: str, timeout_s: float = 60.0) -> None:
    """Read the child's stdout until a line holding ``needle`` (the workload says it runs)."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"no {needle!r} on stdout within {timeout_s} s"
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            line = proc.stdout.readline()
            assert line, f"stdout closed before {needle!r}: " + proc.communicate()[1]
            if needle in line:
                return


def test_sigint_ends_the_run_cleanly(tmp_path):
    out = tmp_path / "run.h5"
    proc = popen_hwval("capture", "--no-nvml", "--no-rapl", "-m", SYN, "-o", str(out), "--",
                       sys.executable, "-c", "import time; print('workload ready', flush=True); time.sleep(30)")
    # the workload is past its interpreter's start-up, and the capture has readings to keep
    _wait_line(proc, "workload ready")
    _wait_recording(proc, out, readings=60)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    # the workload died of the forwarded SIGINT: 128 + 2, as a shell reports it
    assert proc.returncode == 130, err
    with open_run(out) as run:
        assert run.complete
        names = [e.name for e in run.events]
        assert names[0] == "workload_start" and names[-1] == "workload_end"
        assert run.events[-1].detail["exit_code"] == 130
        assert len(run.stream("syn").t) > 50
        # stopped by the operator, through the workload: not a run that ran its course
        assert run.stop_reason == "stopped by SIGINT (forwarded to the workload)"
        (sig,) = [e for e in run.events if e.name == "signal"]
        assert sig.detail == {"signal": "SIGINT", "action": "forwarded to the workload"}
    info = run_hwval("info", str(out))
    assert "complete: yes (stopped early: stopped by SIGINT (forwarded to the workload))" in info.stdout


def test_sigint_ends_a_duration_capture(tmp_path):
    out = tmp_path / "run.h5"
    proc = popen_hwval("capture", "--no-nvml", "--no-rapl", "-m", SYN, "--duration", "60", "-o", str(out))
    _wait_recording(proc, out, readings=1)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=40)
    assert proc.returncode == 0
    with open_run(out) as run:
        assert run.complete and run.attrs["stop_reason"] == "stopped by SIGINT"


def test_sigkill_leaves_a_recoverable_file_with_old_samples(tmp_path):
    out = tmp_path / "run.h5"
    proc = popen_hwval("capture", "--no-nvml", "--no-rapl", "-m", SYN, "--duration", "60", "-o", str(out))
    # readings are flowing (the claim creates the file before any meter is open), then some more
    _wait_recording(proc, out, readings=1)
    time.sleep(3.0)
    killed_ns = time.monotonic_ns()
    proc.kill()
    proc.wait()
    # what the capture had written ahead before it died: the recovery must keep all of it
    journaled_t = np.concatenate([doc.t for doc in read_journal(journal_path(out))
                                  if isinstance(doc, Page) and doc.stream == "syn"])
    info = run_hwval("info", str(out))
    # Either the file opens directly (flagged incomplete) or hwval names the recover step.
    assert "hwval recover" in info.stdout + info.stderr
    assert run_hwval("recover", str(out)).returncode == 0
    with open_run(out) as run:
        assert not run.complete and run.attrs["recovered"]
        t = run.stream("syn").t
        killed_t = (killed_ns - run.origin_monotonic_ns) / 1e9
        # every journaled reading is there, none lost between pages (an interval here may be
        # long: a loaded machine's scheduler holds the source back, which loses nothing), and
        # the journal was at most a few pages (0.2 s each) behind the kill
        assert np.array_equal(t, journaled_t)
        assert t[-1] >= killed_t - 2.0
        # the first reading is there: the synthetic energy counter is 0 at the first read
        assert run.stream("syn").data["energy_j"][0] == 0.0
    assert not (tmp_path / "run.h5.journal").exists()
    assert "(recovered from journal)" in run_hwval("info", str(out)).stdout


def test_duration_with_command_terminates_the_workload(tmp_path):
    out = tmp_path / "run.h5"
    start = time.monotonic()
    res = run_hwval("capture", "--no-nvml", "--no-rapl", "-m", SYN, "--duration", "1", "-o", str(out),
                    "--", sys.executable, "-c", "import time; time.sleep(30)")
    # well short of the workload's 30 s sleep (start-up on a loaded machine takes seconds)
    assert time.monotonic() - start < 25
    assert res.returncode == 128 + signal.SIGTERM
    with open_run(out) as run:
        assert any(e.detail.get("kind") == "duration" for e in run.events if e.name == "error")
        # the workload did not run its course: not a run that reads as a full one
        assert run.complete and run.stop_reason == "stopped by --duration (1 s reached; the workload was terminated)"
    info = run_hwval("info", str(out))
    assert "complete: yes (stopped early: stopped by --duration (1 s reached; the workload was terminated))" \
        in info.stdout


def test_a_duration_without_a_command_that_runs_out_is_a_full_run(tmp_path):
    """The planned end of a --duration capture: no stop reason, as before."""
    out = tmp_path / "run.h5"
    res = CliRunner().invoke(cli, ["capture", "--no-nvml", "--no-rapl", "-m", SYN, "--duration", "0.3",
                                   "-o", str(out)])
    assert res.exit_code == 0, res.output
    with open_run(out) as run:
        assert run.complete and run.stop_reason == "" and run.error_counts == {}
        assert not [e for e in run.events if e.name == "error"]


@pytest.mark.parametrize("args, needle", [
    (["-m", "nosuch:/dev/x", "--duration", "1"], "unknown driver 'nosuch'"),
    (["-m", "synthetic", "--duration", "1"], "expected DRIVER:RESOURCE"),
    (["-m", "synthetic:constant:1?period_s=-1", "--duration", "1"], "period_s must be"),
    (["-m", "synthetic:constant:1?bogus=1", "--duration", "1"], "unknown option 'bogus'"),
    (["-m", SYN, "--duration", "1", "-o", "/nonexistent-dir/x.h5"], "does not exist"),
    (["-m", SYN], "nothing to capture"),
    # pyvisa-py says "Bad file descriptor" for a host it cannot resolve; hwval says what is wrong
    (["-m", "wt300:TCPIP::999.1.1.1::INSTR", "--duration", "1"], "host '999.1.1.1' is not an IP address"),
    (["-m", SYN, "--duration", "1", "--pulse-chip-s", "0.5"], "--pulse-chip-s needs --sync-pulses"),
    (["-m", SYN, "--duration", "1", "--sync-pulses", "--pulse-chip-s", "0"], "--pulse-chip-s 0.0: must be from 0.01 s"),
    (["-m", SYN, "--duration", "1", "--sync-pulses", "--pulse-chip-s", "0.005"], "--pulse-chip-s 0.005: must be from 0.01 s"),
    (["-m", SYN, "--duration", "1", "--sync-pulses", "--pulse-chip-s", "nan"], "--pulse-chip-s nan: must be from 0.01 s"),
    (["-m", SYN, "--duration", "1", "--sync-pulses", "--pulse-chip-s", "inf"], "--pulse-chip-s inf: must be from 0.01 s"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, args, needle):
    res = run_hwval("capture", "--no-nvml", "--no-rapl", *args, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], res.stderr
    assert not list(tmp_path.glob("**/*.h5"))


def _as_nobody(func):
    """Run ``func()`` in a forked child with uid/gid 65534 (root ignores directory permissions)
    and return what it returned (a string) or the text of what it raised."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop privileges, run, report through the pipe, exit without cleanup
        os.close(read_fd)
        try:
            os.setgid(65534)
            os.setuid(65534)
            result = str(func())
        except BaseException as exc:  # report any failure to the parent as text
            result = f"{type(exc).__name__}: {exc}"
        os.write(write_fd, result.encode())
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as fh:
        out = fh.read()
    os.waitpid(pid, 0)
    return out


def test_unwritable_output_directory(tmp_path):
    from hwval.capture.session import CaptureRequest, resolve_output
    from hwval.config import CaptureConfig

    import shutil
    import tempfile

    # pytest's tmp_path sits under a root-only folder: use one other users can traverse
    base = tempfile.mkdtemp(prefix="hwval-test-")
    try:
        os.chmod(base, 0o755)
        locked = os.path.join(base, "locked")
        os.mkdir(locked, 0o555)
        os.chmod(locked, 0o555)
        hidden = os.path.join(base, "hidden")
        os.mkdir(hidden, 0o700)
        for target, needle in ((locked, "is not writable by this user"),
                               (hidden, "is not accessible by this user")):
            request = CaptureRequest(config=CaptureConfig(), output=os.path.join(target, "sub", "x.h5")
                                     if target == hidden else os.path.join(target, "x.h5"))

            def attempt():
                try:
                    claim = resolve_output(request, "id")
                    claim.release()
                    return str(claim.path)
                except Exception as exc:  # the expected CaptureError, reported as text
                    return f"{type(exc).__name__}: {exc}"

            out = _as_nobody(attempt) if os.geteuid() == 0 else attempt()
            assert out.startswith("CaptureError") and needle in out, out
    finally:
        shutil.rmtree(base)


def test_output_is_a_file_path_under_a_regular_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = run_hwval("capture", "--no-nvml", "--no-rapl", "-m", SYN, "--duration", "1",
                    "-o", str(blocker / "x.h5"))
    assert res.returncode == 2 and f"{blocker} is a file, not a folder" in res.stderr


def test_existing_output_needs_force(tmp_path):
    out = tmp_path / "run.h5"
    out.write_bytes(b"precious")
    res = run_hwval("capture", "--no-nvml", "--no-rapl", "-m", SYN, "--duration", "0.3", "-o", str(out))
    assert res.returncode == 2 and "already exists" in res.stderr and "--force" in res.stderr
    assert out.read_bytes() == b"precious"
    res = run_hwval("capture", "--no-nvml", "--no-rapl", "-m", SYN, "--duration", "0.3", "-o", str(out), "--force")
    assert res.returncode == 0
    with open_run(out) as run:
        assert run.complete


def test_command_not_found_leaves_no_file(tmp_path):
    out = tmp_path / "run.h5"
    res = run_hwval("capture", "--no-nvml", "--no-rapl", "-m", SYN, "-o", str(out), "--", "no-such-command-xyz")
    assert res.returncode == 127
    assert "command not found: 'no-such-command-xyz'" in res.stderr
    assert not out.exists() and not (tmp_path / "run.h5.journal").exists()


def test_command_not_executable(tmp_path):
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    res = run_hwval("capture", "--no-nvml", "--no-rapl", "-m", SYN, "-o", str(tmp_path / "r.h5"), "--", str(script))
    assert res.returncode == 126 and "not executable" in res.stderr


def test_malformed_config_file(tmp_path):
    cfg = tmp_path / "lab.toml"
    cfg.write_text("[software]\nnvml_perod_s = 0.1\n")
    res = run_hwval("capture", "-c", str(cfg), "--duration", "1")
    assert res.returncode == 2
    assert str(cfg) in res.stderr and "software.nvml_perod_s" in res.stderr
    cfg.write_text("output = [\n")
    res = run_hwval("capture", "-c", str(cfg), "--duration", "1")
    assert res.returncode == 2 and "not valid TOML" in res.stderr


def test_config_file_meters_and_output_template(tmp_path):
    cfg = tmp_path / "lab.toml"
    (tmp_path / "runs").mkdir()  # a config's output folder is not created for it
    cfg.write_text(f"""
output = "{tmp_path}/runs/{{date}}-{{time}}.h5"
[software]
nvml = false
rapl = false
[[meters]]
name = "wall"
driver = "synthetic"
resource = "constant:42"
period_s = 0.02
""")
    res = run_hwval("capture", "-c", str(cfg), "--duration", "0.5")
    assert res.returncode == 0, res.stderr
    (path,) = (tmp_path / "runs").glob("*.h5")
    with open_run(path) as run:
        wall = run.stream("wall")
        assert np.allclose(wall.data["power_w"], 42.0)
        assert run.config["meters"][0]["name"] == "wall"
        assert wall.attrs["period_s"] == pytest.approx(0.02)


@pytest.mark.parametrize("content, needle", [
    (b"not hdf5 at all", "not an HDF5 file"),
    (None, "not a hwval run"),
])
def test_info_rejects_non_runs(tmp_path, content, needle):
    path = tmp_path / "x.h5"
    if content is None:
        import h5py
        with h5py.File(path, "w") as f:
            f.create_dataset("data", data=[1, 2, 3])
    else:
        path.write_bytes(content)
    res = run_hwval("info", str(path))
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1 and needle in res.stderr


def test_info_rejects_newer_schema(tmp_path):
    out = tmp_path / "run.h5"
    assert run_hwval("capture", "--no-nvml", "--no-rapl", "-m", SYN, "--duration", "0.3", "-o", str(out)).returncode == 0
    import h5py
    with h5py.File(out, "r+") as f:
        f.attrs["schema_version"] = 2
    res = run_hwval("info", str(out))
    assert res.returncode == 2 and "schema version 2" in res.stderr and "upgrade hwval" in res.stderr


def test_leftover_journal_needs_recover_or_force(tmp_path):
    """A killed capture's journal is the only full copy of its data: never overwrite it silently."""
    out = tmp_path / "run.h5"
    journal = tmp_path / "run.h5.journal"
    journal.write_bytes(b"journal of a killed capture")
    res = run_hwval("capture", "--no-nvml", "--no-rapl", "-m", SYN, "--duration", "0.3", "-o", str(out))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert f"hwval recover {out}" in res.stderr and "--force" in res.stderr
    assert journal.read_bytes() == b"journal of a killed capture" and not out.exists()
    # --force neither: the journal is the data; recovering (or deleting it by hand) comes first
    res = run_hwval("capture", "--no-nvml", "--no-rapl", "-m", SYN, "--duration", "0.3", "-o", str(out), "--force")
    assert res.returncode == 2 and f"hwval recover {out}" in res.stderr
    assert journal.read_bytes() == b"journal of a killed capture" and not out.exists()


def test_info_rejects_a_run_without_schema_version(tmp_path):
    import h5py
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        f.attrs["schema"] = "hwval-run"
    res = run_hwval("info", str(path))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "without a valid schema_version" in res.stderr


def test_summary_line_counts_in_words(tmp_path):
    import io

    from hwval.capture.session import CaptureRequest, run_capture
    from hwval.config import CaptureConfig, SoftwareConfig
    from hwval.sources.base import SourceSpec

    config = CaptureConfig(software=SoftwareConfig(nvml=False, rapl=False),
                           meters=(SourceSpec("synthetic", "constant:100", "syn", 0.05, {}),))
    notes = io.StringIO()
    out = tmp_path / "one.h5"
    assert run_capture(CaptureRequest(config=config, duration_s=0.3, output=str(out), live=False,
                                      notes=notes)) == 0
    with open_run(out) as run:
        n = len(run.stream("syn").t)
    assert f"hwval: wrote {out} (1 stream, {n} readings)" in notes.getvalue()


def test_summary_names_the_emulated_meters_only(tmp_path):
    import io

    from hwval.capture.session import CaptureRequest, run_capture
    from hwval.config import CaptureConfig, SoftwareConfig
    from hwval.emulators.powercap import MARKER, build_tree, plan_zones
    from hwval.sources.base import SourceSpec

    # a powercap tree without the emulator's marker reads as the machine's own (a real meter);
    # the synthetic driver is an emulated bench
    root = tmp_path / "powercap"
    root.mkdir()
    zones = plan_zones(nested=())
    build_tree(root, zones, 262143328850, {z.zone: 100_000_000 for z in zones})
    (root / MARKER).unlink()
    config = CaptureConfig(software=SoftwareConfig(nvml=False, rapl=True, rapl_root=str(root)),
                           meters=(SourceSpec("synthetic", "constant:100", "syn", 0.05, {}),))
    notes = io.StringIO()
    assert run_capture(CaptureRequest(config=config, duration_s=0.3, output=str(tmp_path / "r.h5"),
                                      live=False, notes=notes)) == 0
    lines = [line for line in notes.getvalue().splitlines() if "EMULATED" in line]
    assert lines == ["hwval: EMULATED meters: syn (protocol emulators fed by a bench model, not real instruments)"]

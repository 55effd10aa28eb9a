"""The permission-denied path of RAPL, exercised for real: the check runs in a child process that
drops to uid/gid 65534 (nobody), so the kernel itself refuses ``energy_uj`` files of mode 000
(root would read them regardless of the mode)."""

from __future__ import annotations

import fnmatch
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from hwval.doctor import Finding, run_checks
from hwval.emulators.powercap import build_tree, plan_zones
from hwval.sources.base import SourceSpec
from hwval.sources.rapl.source import RaplSource
from hwval.sources.testing import RecordingContext

NOBODY = 65534


def as_unprivileged(func):
    """Run ``func()`` in a forked child as nobody; return ``("ok", value)`` or
    ``("raised", type name, message)``. Everything the child needs is imported already."""
    if os.getuid() != 0:  # already unprivileged: mode 000 denies us directly
        try:
            return ("ok", func())
        except Exception as exc:
            return ("raised", type(exc).__name__, str(exc))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                payload = pickle.dumps(("ok", func()))
            except Exception as exc:
                payload = pickle.dumps(("raised", type(exc).__name__, str(exc)))
            os.write(w, payload)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the unprivileged child failed"
    return pickle.loads(b"".join(chunks))


@pytest.fixture
def shared_dir():
    """A folder nobody can traverse (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="hwval-test-rapl-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _open_rapl(root: str):
    src = RaplSource(SourceSpec("rapl", root, "rapl", 0.01, {}))
    ctx = RecordingContext(polled=True)
    infos = src.open(ctx)
    values = src.read()
    src.close()
    return [(i.name, i.notes) for i in infos], sorted(values)


def test_unreadable_counters_give_one_message_naming_every_fix(shared_dir):
    zones = plan_zones(2, ("core", "dram"))
    build_tree(shared_dir, zones, 262143328850, {z.zone: 100_000_000 for z in zones})
    for z in zones:
        (shared_dir / z.rel / "energy_uj").chmod(0o000)
    result = as_unprivileged(lambda: _open_rapl(str(shared_dir)))
    assert result[:2] == ("raised", "SourceUnavailable")
    message = result[2]
    assert "\n" not in message
    assert "permission denied" in message and str(shared_dir) in message
    for fix in ("firmware_configs/udev", "chmod", "privileged helper", "CAP_PERFMON", "--no-rapl"):
        assert fix in message
    # The same tree is readable by root: the denial above is the kernel's, not a simulation.
    if os.getuid() == 0:
        names, _ = _open_rapl(str(shared_dir))
        assert len(names) == 6


def test_partly_unreadable_tree_keeps_the_readable_domains_with_a_note(shared_dir):
    zones = plan_zones(1, ("core", "dram"))
    build_tree(shared_dir, zones, 262143328850, {z.zone: 100_000_000 for z in zones})
    (shared_dir / "devices/intel-rapl/intel-rapl:0/intel-rapl:0:1/energy_uj").chmod(0o000)
    result = as_unprivileged(lambda: _open_rapl(str(shared_dir)))
    assert result[0] == "ok", result
    infos, read_streams = result[1]
    assert [name for name, _ in infos] == ["rapl_package_0", "rapl_core_0"]
    assert read_streams == ["rapl_core_0", "rapl_package_0"]
    assert any("skipped as unreadable" in n and "intel-rapl:0:1" in n for n in infos[0][1])


def test_emulator_unreadable_mode_and_doctor_as_a_normal_user(tmp_path):
    ready = tmp_path / "ready.json"
    proc = subprocess.Popen([sys.executable, "-m", "hwval.cli", "emulate", "powercap", "--unreadable",
                             "--update-s", "0.01", "--ready-file", str(ready)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "emulator not ready"
            time.sleep(0.05)
        root = json.loads(ready.read_text())["resource"]
        result = as_unprivileged(lambda: run_checks(rapl_root=root, categories=("rapl",)))
        assert result[0] == "ok", result
        findings: list[Finding] = result[1]
        assert [f.name for f in findings] == ["rapl_package_0", "rapl_core_0", "rapl_dram_0"]
        for f in findings:
            assert not f.usable and "permission denied" in f.detail
            assert "firmware_configs/udev" in f.fix and "CAP_PERFMON" in f.fix
        as_root = run_checks(rapl_root=root, categories=("rapl",))
        assert os.getuid() != 0 or all(f.usable for f in as_root)
        # the capture's source on the same tree refuses to open, with the kernel's reason
        opened = as_unprivileged(lambda: _open_rapl(root))
        assert opened[:2] == ("raised", "SourceUnavailable"), opened
        assert "not readable by this user" in opened[2] and "permission denied" in opened[2]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    assert not Path(root).exists()  # the emulator removes the temporary tree it made


def test_shipped_udev_rule_covers_every_rapl_zone():
    rules = Path(__file__).resolve().parent.parent / "firmware_configs" / "udev" / "99-hwval-rapl.rules"
    text = rules.read_text().replace("\\\n", " ")
    (rule,) = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    kernel = rule.split('KERNEL=="', 1)[1].split('"', 1)[0]
    patterns = kernel.split("|")  # udev's alternatives
    zones = ["intel-rapl:0", "intel-rapl:0:0", "intel-rapl:1:2", "intel-rapl-mmio:0"]
    assert all(any(fnmatch.fnmatchcase(z, p) for p in patterns) for z in zones)
    assert not any(fnmatch.fnmatchcase("intel-rapl", p) for p in patterns)  # the control type
    assert 'ACTION=="add"' in rule and 'SUBSYSTEM=="powercap"' in rule
    assert "chgrp power %S%p/energy_uj" in rule and "chmod g+r %S%p/energy_uj" in rule

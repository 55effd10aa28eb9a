"""``hwval emulate powercap`` as operators run it, read by the rapl source directly and through
``hwval capture --rapl-root``; energies are checked against the bench's exact truth."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hwval.emulators.bench import PowerProfile
from hwval.sources.base import SourceSpec
from hwval.sources.rapl import RaplSource
from hwval.store import open_run

HWVAL = [sys.executable, "-m", "hwval.cli"]


class Ctx:
    def __init__(self):
        self.events = []

    def event(self, name, stream="", t_ns=None, **detail):
        self.events.append((name, stream, detail))

    def count_error(self, stream, kind, message=""):
        self.events.append(("count_error", stream, {"kind": kind, "message": message}))


class Emulator:
    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.ready = tmp_path / "powercap-ready.json"
        self.proc = subprocess.Popen([*HWVAL, "emulate", "powercap", "--ready-file", str(self.ready), *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 20
        while not self.ready.exists():
            if self.proc.poll() is not None:
                raise AssertionError(f"emulator exited: {self.proc.communicate()}")
            assert time.monotonic() < deadline, "emulator not ready in 20 s"
            time.sleep(0.05)
        self.info = json.loads(self.ready.read_text())
        self.root = Path(self.info["resource"])

    def share(self, zone: str) -> float:
        return self.info["zones"][zone]["share"]

    def stop(self) -> subprocess.CompletedProcess:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=10)
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, out, err)


@pytest.fixture
def emulator(tmp_path):
    started: list[Emulator] = []

    def start(*args: str) -> Emulator:
        emu = Emulator(tmp_path, *args)
        started.append(emu)
        return emu

    yield start
    for emu in started:
        emu.stop()


def test_tree_layout_and_announcement(emulator, tmp_path):
    emu = emulator("--root", str(tmp_path / "pc"), "--packages", "2", "--nested", "core,uncore,dram",
                   "--psys", "--max-energy-range-uj", "5000000")
    root = emu.root
    assert root == tmp_path / "pc"
    assert (root / "intel-rapl:1:2").is_symlink()
    assert (root / "intel-rapl:1:2" / "name").read_text() == "dram\n"
    assert (root / "intel-rapl:2" / "name").read_text() == "psys\n"
    assert (root / "intel-rapl:0" / "max_energy_range_uj").read_text() == "5000000\n"
    assert int((root / "intel-rapl:0" / "energy_uj").read_text()) <= 5_000_000
    assert len(emu.info["zones"]) == 9
    truth = json.loads((root / "true_energy_uj.json").read_text())
    assert set(truth["zones"]) == set(emu.info["zones"])
    result = emu.stop()
    assert result.returncode == 0
    assert f"use -m rapl:{root}" in result.stdout and f"--rapl-root {root}" in result.stdout
    assert root.exists()  # an explicit --root is left for inspection


def test_root_that_is_not_an_emulator_tree_is_refused(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    result = subprocess.run([*HWVAL, "emulate", "powercap", "--root", str(tmp_path)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "not empty and not an emulator tree" in result.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_live_counters_wrap_and_the_source_follows_them(emulator):
    # 1 J range at 50 W per package: a wrap every 20 ms, dozens during the test.
    emu = emulator("--packages", "2", "--nested", "", "--profile", "constant:100",
                   "--max-energy-range-uj", "999999", "--update-s", "0.001")
    src = RaplSource(SourceSpec("rapl", str(emu.root), "rapl", 0.005, {}))
    ctx = Ctx()
    infos = src.open(ctx)
    assert [i.name for i in infos] == ["rapl_package_0", "rapl_package_1"]
    first_t = {}
    for _ in range(120):
        out = src.read()
        for st in src.states:
            first_t.setdefault(st.domain.stream, st.last_t_ns)
        time.sleep(0.005)
    bench = PowerProfile.parse("constant:100")
    for st in src.states:
        span_s = (st.last_t_ns - first_t[st.domain.stream]) / 1e9
        true_j = emu.share(st.domain.zone) * bench.energy_j(0, span_s)
        assert st.wraps >= 10
        # Staleness of the 1 ms updates at both ends bounds the difference.
        assert st.total_uj / 1e6 == pytest.approx(true_j, abs=50 * 0.004)
        assert out[st.domain.stream]["power_w"] > 0
    assert [e for e in ctx.events if e[2].get("kind") == "counter_backwards"] == []
    src.close()


def test_capture_of_an_emulated_dual_package_tree_matches_the_true_energy(emulator, tmp_path):
    # Package range 30 J: at up to 70 W per package that is a wrap every ~0.4 s, ~10 per stream.
    profile = "steps:100@1,140@1"
    emu = emulator("--packages", "2", "--nested", "dram", "--profile", profile,
                   "--max-energy-range-uj", "29999999", "--update-s", "0.001")
    out = tmp_path / "run.h5"
    result = subprocess.run([*HWVAL, "capture", "--no-nvml", "--rapl-root", str(emu.root),
                             "--duration", "4", "-o", str(out)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    truth = PowerProfile.parse(profile)
    with open_run(out) as run:
        assert sorted(run.stream_names) == ["rapl_dram_0", "rapl_dram_1", "rapl_package_0",
                                            "rapl_package_1"]
        wraps = 0
        for name in run.stream_names:
            s = run.stream(name)
            assert s.attrs["kind"] == "software" and s.attrs["driver"] == "rapl"
            assert s.attrs["scope"] == ("dram" if "dram" in name else "cpu_package")
            zone = s.identity["zone"]
            t_bench = (run.origin_monotonic_ns + s.t * 1e9 - emu.info["t0_monotonic_ns"]) / 1e9
            energy = s.data["energy_j"]
            assert energy[0] == 0.0 and math.isnan(s.data["power_w"][0])
            assert np.all(np.diff(energy) >= 0)
            true_j = emu.share(zone) * truth.energy_j(t_bench[0], t_bench[-1])
            assert energy[-1] == pytest.approx(true_j, rel=1e-3), name
            wraps += int(energy[-1] // 30)
            # power is the mean over the measured interval: it integrates back to the energy
            integral_j = np.nansum(s.data["power_w"][1:] * s.data["interval_s"][1:])
            assert integral_j == pytest.approx(energy[-1], rel=1e-9)
            assert s.dataset_attrs["power_w"]["semantics"] == "window_mean"
        assert wraps >= 10
        assert [e for e in run.events if e.name == "error"] == []


def test_gain_and_offset_bias_the_counters_and_streams_are_marked_emulated(emulator):
    # a software meter reading 55 % of the truth plus 2 W: what `hwval demo` shows
    emu = emulator("--nested", "", "--profile", "constant:100", "--gain", "0.55", "--offset-w", "2",
                   "--update-s", "0.001")
    src = RaplSource(SourceSpec("rapl", str(emu.root), "rapl", 0.01, {}))
    (info,) = src.open(Ctx())
    assert info.emulated
    src.read()
    t0 = src.states[0].last_t_ns
    time.sleep(0.5)
    out = src.read()
    span_s = (src.states[0].last_t_ns - t0) / 1e9
    expected_j = 0.55 * 100 * span_s + 2 * span_s
    assert out["rapl_package_0"]["energy_j"] == pytest.approx(expected_j, abs=57 * 0.004)
    truth = json.loads((emu.root / "true_energy_uj.json").read_text())
    assert truth["gain"] == 0.55 and truth["offset_w"] == 2
    src.close()

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

from hwval.benchmodel import Bench, PowerProfile
from hwval.emulators.powercap import PowercapWriter, build_tree, plan_zones
from hwval.sources.base import SourceSpec
from hwval.sources.rapl.counter import MIN_POWER_INTERVAL_S
from hwval.sources.rapl.source import RaplSource
from hwval.runfile.reader import open_run
from hwval.sources.testing import RecordingContext
from conftest import StepClock

HWVAL = [sys.executable, "-m", "hwval.cli"]


class Emulator:
    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.ready = tmp_path / f"powercap-ready-{time.monotonic_ns()}.json"
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


def start_before_t0(emulator, lead_s: float, *args: str) -> tuple[Emulator, int]:
    """An emulator whose bench time 0 is ``lead_s`` after its launch, ready before then.

    Until bench time 0 the counters stay at their start value (no energy yet), so whatever reads
    them first sees exactly ``--start-uj``: truth then needs no assumption about how fresh a
    reading was. A launch slower than the lead (a very loaded machine) is retried with a longer
    one instead of failing.
    """
    for lead in (lead_s, 4 * lead_s, 16 * lead_s):
        t0_ns = time.monotonic_ns() + int(lead * 1e9)
        emu = emulator("--t0-ns", str(t0_ns), *args)
        if time.monotonic_ns() < t0_ns - 50_000_000:
            return emu, t0_ns
        emu.stop()
    raise AssertionError(f"the emulator never got ready within {16 * lead_s} s")


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


def test_counters_wrap_and_the_source_follows_them_to_the_microjoule(tmp_path):
    # The emulator's own writer (pwrite in place, as `hwval emulate powercap` does) and the rapl
    # source share one test clock advanced by hand, so how often the test gets the CPU cannot
    # matter: reads are exactly 5 ms apart in the source's eyes, far inside the 67 ms wrap time
    # at the zones' max power (1.5 x 50 W). 5 J range at 50 W per package: a wrap every 100 ms,
    # 13 per stream over 1.3 s. The live process is covered by the capture test below.
    root = tmp_path / "pc"
    root.mkdir()
    clock = StepClock()
    zones = plan_zones(2, (), False, "sysfs")
    max_range_uj, start_uj = 4_999_999, 4_000_000
    build_tree(root, zones, max_range_uj, {z.zone: int(1.5 * 100.0 * z.share * 1e6) for z in zones},
               start_uj)
    writer = PowercapWriter(root, zones, Bench(PowerProfile.parse("constant:100"), t0_ns=clock()),
                            max_range_uj, start_uj)
    src = RaplSource(SourceSpec("rapl", str(root), "rapl", 0.005, {}), clock_ns=clock)
    ctx = RecordingContext(polled=True)
    infos = src.open(ctx)
    try:
        assert [i.name for i in infos] == ["rapl_package_0", "rapl_package_1"]
        writer.update(clock())
        src.read()  # bench time 0: the counters hold the start value, the baseline of each stream
        assert [st.last_raw_uj for st in src.states] == [start_uj, start_uj]
        for _ in range(260):
            clock.advance(0.005)
            writer.update(clock())
            out = src.read()
            assert all(v["power_w"] == pytest.approx(50.0, abs=1e-3) for v in out.values()), out
        for i, st in enumerate(src.states):
            assert st.wraps >= 12
            # exact to the microjoule, every wrap unwrapped: the writer's own true counter...
            assert st.total_uj == writer.counter_uj[i] == writer.true_uj[i]
            # ...and equal to 50 W over 1.3 s (floored to whole uJ)
            assert st.total_uj == pytest.approx(50.0 * 1.3 * 1e6, abs=1.0)
        assert ctx.events == [] and ctx.errors == {}
    finally:
        src.close()
        writer.close()


def test_capture_of_an_emulated_dual_package_tree_matches_the_true_energy(emulator, tmp_path):
    # 2 s of load (100 W then 140 W, split over two packages) between two flat stretches: the
    # capture starts while the counters still hold their start value and ends after they
    # stopped, so the recorded energy must be the true energy of the load, to the microjoule.
    # Package range 50 J: at the zones' max power (1.5 x 70 W) a wrap every 0.48 s, far above
    # the 10 ms polling even when a loaded machine holds a poll back (with 20 J, 0.19 s, a held
    # poll once outlasted a wrap beside two busy loops and the driver rightly left it out);
    # 2 wraps per package.
    profile = "steps:100@1,140@1,0@1000"
    load_j = PowerProfile.parse(profile).energy_j(0.0, 2.0)
    out = tmp_path / "run.h5"
    for lead_s in (1.5, 6.0):
        emu, t0_ns = start_before_t0(emulator, lead_s, "--packages", "2", "--nested", "dram",
                                     "--profile", profile, "--max-energy-range-uj", "49999999",
                                     "--update-s", "0.001")
        duration_s = (t0_ns - time.monotonic_ns()) / 1e9 + 2.6
        result = subprocess.run([*HWVAL, "capture", "--no-nvml", "--rapl-root", str(emu.root),
                                 "--duration", f"{duration_s:.3f}", "-o", str(out)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        emu.stop()
        with open_run(out) as run:
            first_ns = min(run.origin_monotonic_ns + int(run.stream(n).t[0] * 1e9)
                           for n in run.stream_names)
        if first_ns < t0_ns:
            break  # every stream's first reading came before the load began
        out.unlink()
    else:
        raise AssertionError("the capture never started within 6 s")
    with open_run(out) as run:
        assert sorted(run.stream_names) == ["rapl_dram_0", "rapl_dram_1", "rapl_package_0",
                                            "rapl_package_1"]
        wraps = 0
        for name in run.stream_names:
            s = run.stream(name)
            assert s.attrs["kind"] == "software" and s.attrs["driver"] == "rapl"
            assert s.attrs["scope"] == ("dram" if "dram" in name else "cpu_package")
            assert s.attrs["emulated"]
            zone = s.identity["zone"]
            energy = s.data["energy_j"]
            assert energy[0] == 0.0 and math.isnan(s.data["power_w"][0])
            assert np.all(np.diff(energy) >= 0)
            # the emulator's counter is floor(share x true energy) in whole microjoules
            true_uj = math.floor(emu.share(zone) * load_j * 1e6)
            assert energy[-1] == true_uj / 1e6, name
            assert s.t[-1] > (t0_ns - run.origin_monotonic_ns) / 1e9 + 2.0  # read after the load
            wraps += int(energy[-1] // 50)  # the range
            # power is the mean over the measured interval: it integrates back to the energy of
            # those intervals; it is left out (NaN) only over a catch-up read closer than
            # MIN_POWER_INTERVAL_S to the last one (a loaded machine makes some)
            power, interval = s.data["power_w"][1:], s.data["interval_s"][1:]
            has_power = np.isfinite(power)
            assert np.all(interval[~has_power] < MIN_POWER_INTERVAL_S) and has_power.mean() > 0.5, name
            integral_j = np.sum(power[has_power] * interval[has_power])
            assert integral_j == pytest.approx(np.diff(energy)[has_power].sum(), rel=1e-9)
            assert s.dataset_attrs["power_w"]["semantics"] == "window_mean"
        assert wraps >= 4  # 2 per package at least
        assert [e for e in run.events if e.name == "error"] == []


def test_gain_and_offset_bias_the_counters_and_streams_are_marked_emulated(emulator, tmp_path):
    # a software meter reading 55 % of the truth plus 2 W: what `hwval demo` shows
    root = tmp_path / "pc"
    emu, t0_ns = start_before_t0(emulator, 0.5, "--root", str(root), "--nested", "",
                                 "--profile", "constant:100", "--gain", "0.55", "--offset-w", "2",
                                 "--update-s", "0.001")
    src = RaplSource(SourceSpec("rapl", str(root), "rapl", 0.01, {}))
    (info,) = src.open(RecordingContext(polled=True))
    assert info.emulated
    assert src.read()["rapl_package_0"]["energy_j"] == 0.0  # before bench time 0: no energy yet
    time.sleep(max(0.0, (t0_ns - time.monotonic_ns()) / 1e9 + 0.3))
    src.read()
    assert emu.stop().returncode == 0  # the counter keeps the value of the last update
    out = src.read()["rapl_package_0"]
    truth = json.loads((root / "true_energy_uj.json").read_text())
    assert truth["gain"] == 0.55 and truth["offset_w"] == 2
    elapsed_s = (truth["t_monotonic_ns"] - t0_ns) / 1e9
    assert elapsed_s > 0.2  # the load ran between the first and the last read
    assert out["energy_j"] == truth["zones"]["intel-rapl:0"]["counter_uj"] / 1e6
    # 0.55 x 100 W + 2 W over the time of the last update, floored to whole microjoules
    assert out["energy_j"] == pytest.approx((0.55 * 100 + 2) * elapsed_s, abs=2e-6)
    src.close()

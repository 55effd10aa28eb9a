"""The host-following bench: a ring written by one sampler, read as a power profile elsewhere."""

from __future__ import annotations

import json
import multiprocessing
import threading
import time

import numpy as np
import pytest

from conftest import popen_hwval
from hwval.benchmodel import MeterModel
from hwval.benchmodel.host import (HostLoadSampler, HostPowerModel, HostProfile, read_cpu_busy_s)


class FakeLoad:
    """Busy CPU-seconds growing at a scripted share of 2 CPUs: 0 before t_on, `share` after."""

    def __init__(self, share: float, t_on_ns: int, clock_ns=time.monotonic_ns) -> None:
        self.share = share
        self.t_on_ns = t_on_ns
        self.clock_ns = clock_ns

    def __call__(self) -> tuple[float, int]:
        now = self.clock_ns()
        busy_s = 2 * self.share * max(0, now - self.t_on_ns) / 1e9
        return busy_s, 2


def test_ring_energy_follows_the_scripted_load_and_is_conserved(tmp_path):
    ring = tmp_path / "bench.ring"
    load = FakeLoad(share=0.5, t_on_ns=2**62)  # switched on below, once the ring shows idle
    sampler = HostLoadSampler(ring, HostPowerModel(idle_w=50.0, cpu_dynamic_w=100.0), rate_hz=500,
                              read_busy=load)
    thread = threading.Thread(target=sampler.run)
    thread.start()
    try:
        # Wait on the ring's records, not fixed sleeps: a loaded machine holds the sampler thread
        # back, and across a stall the ring can only interpolate, so every check below lies
        # between records that are both before, or both after, the load came on.
        deadline = time.monotonic() + 60
        profile = HostProfile(ring)  # the sampler created the ring before its thread started

        def wait_for(what, done):
            while not done(profile.history()[0]):
                assert time.monotonic() < deadline, f"the ring did not show {what} in 60 s"
                time.sleep(0.02)

        wait_for("20 idle records", lambda t: len(t) >= 20)
        load.t_on_ns = time.monotonic_ns()
        on_s = (load.t_on_ns - profile.t0_ns) / 1e9
        wait_for("0.4 s of load", lambda t: np.count_nonzero(t >= on_s) >= 2 and t[-1] - t[t >= on_s][0] >= 0.4)
        t = profile.history()[0]
        idle_t, busy_t = t[t < on_s], t[t >= on_s]
        # Before the load: idle. After it: idle + 0.5 x 100 W.
        assert profile.mean_w(idle_t[0], idle_t[-1]) == pytest.approx(50.0, abs=1e-6)
        assert profile.mean_w(busy_t[0], busy_t[-1]) == pytest.approx(100.0, rel=1e-3)
        # Energy over adjacent intervals adds up exactly.
        a, b, c = on_s - 0.1, on_s + 0.05, on_s + 0.3
        assert profile.energy_j(a, b) + profile.energy_j(b, c) == pytest.approx(profile.energy_j(a, c), abs=1e-9)
        # A meter model (window, latency) reads it like any profile: the 0.1 s before the last record
        meter = MeterModel(window_s=0.1, latency_s=0.05)
        assert meter.true_mean_w(profile, busy_t[-1] + 0.05) == pytest.approx(100.0, rel=1e-3)
        t, energy = profile.history()
        assert len(t) >= 22 and (energy[1:] >= energy[:-1]).all()  # the records waited for
        profile.close()
    finally:
        sampler.stop()
        thread.join()
        sampler.close()


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_real_proc_stat_sees_a_busy_process(tmp_path):
    busy0, ncpu = read_cpu_busy_s()
    assert ncpu >= 1 and busy0 > 0
    ring = tmp_path / "bench.ring"
    sampler = HostLoadSampler(ring, HostPowerModel(idle_w=0.0, cpu_dynamic_w=100.0), rate_hz=250)
    thread = threading.Thread(target=sampler.run)
    thread.start()
    try:
        profile = HostProfile(ring)
        t_start = (time.monotonic_ns() - profile.t0_ns) / 1e9
        proc = multiprocessing.get_context("spawn").Process(target=_spin, args=(1.0,))
        proc.start()
        proc.join()
        t_end = (time.monotonic_ns() - profile.t0_ns) / 1e9
        time.sleep(0.05)
        # One spinning process keeps at least ~1/ncpu of the machine busy for ~1 s (other load
        # only adds to it): a generous floor, since a loaded machine may preempt the spinner.
        mean = profile.mean_w(t_start, t_end)
        assert mean >= 100.0 / ncpu * 0.4
        profile.close()
    finally:
        sampler.stop()
        thread.join()
        sampler.close()


def test_bad_rings_and_rates_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="cannot open"):
        HostProfile(tmp_path / "missing.ring")
    junk = tmp_path / "junk.ring"
    junk.write_bytes(b"x" * 200)
    with pytest.raises(ValueError, match="not a hwval host-bench ring"):
        HostProfile(junk)
    with pytest.raises(ValueError, match="rate_hz must be >= 200"):
        HostLoadSampler(tmp_path / "r.ring", rate_hz=50)
    with pytest.raises(ValueError, match="idle_w"):
        HostPowerModel(idle_w=float("nan"))


def test_the_ring_wraps_and_keeps_the_newest_records(tmp_path):
    ring = tmp_path / "small.ring"
    # A stepped clock: each record is stamped 2 ms after the last, and the fake load is read at
    # the previous stamp (a constant lag). On the real clock a stall between reading the load
    # and stamping the record (a loaded machine) moved the 50-record mean by 0.17 %.
    clock = {"now_ns": 10 ** 12}

    def step_ns() -> int:
        clock["now_ns"] += 2_000_000
        return clock["now_ns"]

    sampler = HostLoadSampler(ring, rate_hz=500, capacity_s=0.1, clock_ns=step_ns,
                              read_busy=FakeLoad(1.0, 0, clock_ns=lambda: clock["now_ns"]))
    for _ in range(300):  # three times the capacity, written directly (no timing involved)
        sampler.sample()
    profile = HostProfile(ring)
    t, energy = profile.history()
    assert len(t) == sampler.capacity
    assert (t[1:] > t[:-1]).all() and (energy[1:] >= energy[:-1]).all()
    # Full load on a 2-CPU fake: idle 60 + 120 W between the newest records
    assert profile.mean_w(t[-50], t[-1]) == pytest.approx(180.0, rel=1e-9)
    profile.close()
    sampler.close()


def _emulate(*args):
    from click.testing import CliRunner

    from hwval.cli import cli

    return CliRunner().invoke(cli, ["emulate", *args])


@pytest.mark.parametrize("args, needle", [
    (["host-bench", "--ring", "RING", "--rate-hz", "100"], "rate_hz must be >= 200"),
    (["tasmota", "--profile", "host:"], "needs the ring file"),
    (["tasmota", "--profile", "host:NOSUCH"], "start `hwval emulate host-bench --ring FILE` first"),
])
def test_bad_host_bench_options_are_one_clear_line(tmp_path, args, needle):
    args = [a.replace("RING", str(tmp_path / "r.ring")).replace("NOSUCH", str(tmp_path / "none.ring"))
            for a in args]
    res = _emulate(*args)
    assert res.exit_code == 2, res.output
    assert needle in res.output and "Traceback" not in res.output


def test_truth_file_and_profile_host_on_an_emulator(tmp_path):
    # a ring from a sampler, then `hwval emulate powercap --profile host:RING --truth-file F`
    # refuses a --t0-ns other than the ring's, and writes its model and options when it runs
    ring = tmp_path / "bench.ring"
    sampler = HostLoadSampler(ring, HostPowerModel(idle_w=42.0, cpu_dynamic_w=10.0), rate_hz=500,
                              read_busy=lambda: (1.0, 1))
    try:
        res = _emulate("powercap", "--profile", f"host:{ring}", "--t0-ns", str(sampler.t0_ns + 1),
                       "--root", str(tmp_path / "pc"))
        assert res.exit_code == 2 and "differs from the ring's t0" in res.output
        truth, ready = tmp_path / "truth.json", tmp_path / "ready.json"
        proc = popen_hwval("emulate", "powercap", "--profile", f"host:{ring}", "--root", str(tmp_path / "pc"),
                           "--latency-s", "0.05", "--gain", "0.5", "--truth-file", str(truth),
                           "--ready-file", str(ready))
        try:
            deadline = time.monotonic() + 60
            while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
                sampler.sample()
                time.sleep(0.01)
            assert ready.exists(), proc.communicate(timeout=10)
        finally:
            proc.terminate()
            proc.communicate(timeout=20)
    finally:
        sampler.close()
    doc = json.loads(truth.read_text())
    assert doc["device"] == "powercap" and doc["profile"] == f"host:{ring}"
    assert doc["t0_monotonic_ns"] == sampler.t0_ns          # the ring's time zero, not the emulator's
    assert doc["model"]["latency_s"] == 0.05 and doc["model"]["gain"] == 0.5
    assert doc["options"]["root"] == str(tmp_path / "pc")

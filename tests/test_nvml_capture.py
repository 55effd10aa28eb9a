"""NVML through the real capture pipeline (recorder, HDF5 writer, store) in-process, with pynvml
patched by the simulated driver: one GPU is lost mid-run while the other keeps recording."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest

from hwval.capture.session import CaptureRequest, run_capture
from hwval.config import CaptureConfig, SoftwareConfig
from hwval.benchmodel import PowerProfile
from hwval.emulators.nvml_sim import SimGpu, SimNvml
from hwval.runfile.reader import open_run

#: Longest a reading may wait between the NVML call and its receipt stamp on a loaded machine.
SCHEDULING_ALLOWANCE_S = 0.1
UUIDS = ["GPU-aaaaaaaa-0000-0000-0000-000000000000", "GPU-bbbbbbbb-0000-0000-0000-000000000000"]


def test_capture_records_both_gpus_and_a_lost_gpu_becomes_a_gap(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"{UUIDS[1]},{UUIDS[0]}")
    sim = SimNvml([SimGpu(UUIDS[0], update_s=0.02, share=0.5), SimGpu(UUIDS[1], update_s=0.02)],
                  profile=PowerProfile.parse("steps:100@0.3,200@0.3"))
    out = tmp_path / "run.h5"
    lost_at = {}

    def lose_later(recorder):
        def lose():
            lost_at["t_ns"] = time.monotonic_ns()
            sim.lose(UUIDS[0])

        threading.Timer(0.8, lose).start()

    config = CaptureConfig(software=SoftwareConfig(nvml=True, rapl=False, nvml_period_s=0.02))
    notes = io.StringIO()
    with sim.patch():
        code = run_capture(CaptureRequest(config=config, duration_s=1.6, output=str(out), live=False,
                                          notes=notes, on_started=lose_later))
    assert code == 0, notes.getvalue()
    with open_run(out) as run:
        assert sorted(run.stream_names) == ["nvml_gpu0", "nvml_gpu1"]
        gpu0, gpu1 = run.stream("nvml_gpu0"), run.stream("nvml_gpu1")
        # cuda:0 is the second NVML device because CUDA_VISIBLE_DEVICES lists it first.
        assert gpu0.identity["uuid"] == UUIDS[1] and gpu1.identity["uuid"] == UUIDS[0]
        assert gpu0.identity["update_period_s"] == pytest.approx(0.02, abs=0.005)
        assert gpu0.dataset_attrs["power_w"]["semantics"] == "window_mean"
        assert gpu0.dataset_attrs["power_w"]["window_s"] == 1.0
        # The lost GPU stops at the loss (only a read already under way may end after it); the
        # other one records on.
        lost_t = (lost_at["t_ns"] - run.origin_monotonic_ns) / 1e9
        assert np.count_nonzero(gpu1.t > lost_t) <= 1
        assert np.count_nonzero(gpu0.t > lost_t) >= 2 and gpu0.t[-1] > gpu1.t[-1]
        events = [(e.name, e.stream, e.detail.get("kind")) for e in run.events]
        assert ("error", "nvml_gpu1", "gpu_lost") in events
        assert ("gap_start", "nvml_gpu1", None) in events
        assert not any(e[1] == "nvml_gpu0" for e in events)
        # The energy counter of the healthy GPU matches the bench. A reading stamped t holds the
        # counter of the GPU's last update before the call, which came before t: never ahead of
        # t, and behind it by at most one update period plus the time between the call and the
        # stamp (a scheduling allowance on a loaded machine). The first and last readings
        # therefore bound the energy from both sides.
        allowance_ns = int((0.02 + SCHEDULING_ALLOWANCE_S) * 1e9)
        t0 = run.origin_monotonic_ns + int(gpu0.t[0] * 1e9)
        t1 = run.origin_monotonic_ns + int(gpu0.t[-1] * 1e9)
        gpu = sim.gpus[1]
        energy = gpu0.data["energy_j"]
        assert energy[0] == 0.0 and np.all(np.diff(energy) >= 0)
        low_j = sim.true_energy_j(gpu, t0, t1 - allowance_ns) - 0.001
        high_j = sim.true_energy_j(gpu, t0 - allowance_ns, t1) + 0.001
        assert low_j <= energy[-1] <= high_j

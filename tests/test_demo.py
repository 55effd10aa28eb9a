"""``hwval demo`` end to end: real emulator processes, a real (tiny) torch training job."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from conftest import run_hwval
from hwval.runfile.reader import open_run


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="the demo workload needs torch")
def test_demo_captures_training_on_the_emulated_bench(tmp_path):
    work = tmp_path / "demo"
    res = run_hwval("demo", "--workdir", str(work), "--epochs", "2", "--batches", "3", "--idle-s", "1.0",
                    timeout=240)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "complete: yes" in res.stdout
    with open_run(work / "run.h5") as run:
        assert run.complete and run.attrs["exit_code"] == 0
        names = set(run.stream_names)
        assert {"wall", "analyzer", "rapl_package_0"} <= names
        marks = [e.detail["mark"] for e in run.events if e.name == "mark"]
        assert marks == ["idle_before", "train_start",
                         "epoch_start", "epoch", "eval_start", "eval",
                         "epoch_start", "epoch", "eval_start", "eval",
                         "train_end", "idle_after"]
        for name in ("wall", "analyzer", "rapl_package_0"):
            s = run.stream(name)
            assert len(s.t) >= 4, name
            assert s.attrs["emulated"]
            assert np.nanmax(s.data["power_w"]) > 0
        assert run.stream("wall").attrs["kind"] == "hardware"
        assert run.stream("rapl_package_0").attrs["kind"] == "software"
    # emulators were stopped: their logs exist and nothing is left listening
    assert (work / "tasmota.emulator.log").exists()

"""``hwval demo`` end to end: real emulator processes, a real (tiny) torch training run under
capture, then sync, analyze, calibrate, validate and report, with every file checked."""

from __future__ import annotations

import importlib.util
import re
import tomllib

import numpy as np
import pytest

from conftest import run_hwval
from hwval.runfile.reader import open_run


@pytest.mark.e2e
@pytest.mark.slow  # ~1-3 min on 2 loaded cores: the one test of the whole pipeline on real processes
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="the demo workload needs torch")
def test_demo_runs_the_whole_pipeline_and_leaves_every_file(tmp_path):
    work = tmp_path / "demo"
    res = run_hwval("demo", "--quick", "--workdir", str(work), timeout=420)
    out = res.stdout
    assert res.returncode == 0, out[-3000:] + res.stderr[-2000:]
    run_path, report = work / "run.h5", work / "report.html"
    for step in ("capture", "sync", "analyze", "calibrate", "validate", "report"):
        assert f"$ hwval {step} " in out, step
    # every output says the meters are emulated: the banner, the calibration, the report, the headline
    assert out.startswith("hwval demo: EMULATED meters")
    assert "emulated meter(s): this record never applies to a real meter" in out
    assert "EMULATED meters: analyzer" in out
    headline = out.strip().splitlines()[-1]
    m = re.match(r"RAPL package reads ([\d.]+) % of the analyzer \(wall power\) \(\d+ J of \d+ J\); "
                 r"(?:lag of the plug ([-\d.]+) s \+- ([\d.]+) s \(its emulator: 0\.30 s\)"
                 r"|plug: no response to the sync pulses) \[EMULATED meters", headline)
    assert m, headline

    with open_run(run_path) as run:
        assert run.complete and run.attrs["exit_code"] == 0
        names = set(run.stream_names)
        assert names == {"wall", "analyzer", "rapl_package_0"}
        # a sync-pulse block before and after the training, as events of their own
        assert [e.name for e in run.events if e.name.startswith("pulse_")] == \
            (["pulse_start"] + ["pulse_chip"] * 13 + ["pulse_end"]) * 2
        marks = [e.detail["mark"] for e in run.events if e.name == "mark"]
        assert marks == ["idle_before", "train_start",
                         "epoch_start", "epoch", "eval_start", "eval",
                         "epoch_start", "epoch", "eval_start", "eval",
                         "train_end", "idle_after"]
        for name in ("wall", "analyzer", "rapl_package_0"):
            s = run.stream(name)
            assert s.attrs["emulated"] and len(s.t) >= 10, name
            assert np.nanmax(s.data.get("power_w", s.data.get("energy_j"))) > 0
            assert s.error_counts == {}, (name, s.error_counts)
        assert not [e for e in run.events if e.name in ("error", "gap_start")]
        sync = run.read_derived("sync")
        analysis = run.read_derived("analysis")
    # /sync: every stream, the plug's absolute lag from the pulses, its interval near the
    # emulator's configured 0.3 s (a loaded host makes the response lumpy: 0.15 s of margin)
    assert set(sync) == names
    plug = sync["wall"].attrs
    assert plug["reference"] == "pulses" and plug["method"] == "pulse_fit" and plug["absolute"]
    lo, hi = plug["lag_ci_s"]
    assert lo <= plug["lag_s"] <= hi and lo - 0.15 <= 0.3 <= hi + 0.15
    assert m.group(2) is not None, headline  # the plug answered the pulses: its lag is shown
    # printed to 2 decimals: off by up to half a unit, 0.005, which in binary can come out a hair
    # over (a half-width of 0.125 prints "0.12": |0.12 - 0.125| = 0.005000000000000004)
    printed = 0.005 + 1e-9
    assert float(m.group(2)) == pytest.approx(plug["lag_s"], abs=printed)
    assert float(m.group(3)) == pytest.approx((hi - lo) / 2, abs=printed)
    # /analysis: the comparison, the calibrated one, the record applied, the verdict
    comp = analysis["rapl_package_0__vs__analyzer"].attrs
    # analyze says "synchronised" exactly when /sync holds a lag for the candidate
    assert comp["synchronised"] == (sync["rapl_package_0"].attrs["method"] != "no_response")
    share = 100 * comp["energy_cand_j"] / comp["energy_ref_j"]
    assert float(m.group(1)) == pytest.approx(share, abs=0.05)
    assert 45 < share < 65                     # the powercap emulator's gain is 0.55
    calibrated = analysis["rapl_package_0_calibrated__vs__analyzer"].attrs
    assert abs(calibrated["energy_error_pct"]) < 3
    assert analysis["calibration__rapl_package_0"].attrs["emulated"]
    verdict = analysis["validation__rapl_package_0__vs__analyzer"].attrs
    assert verdict["verdict"] == "fail"        # 55 % of the wall is outside +-5 %
    # the calibration record file
    records = list((work / "calibration").glob("*.toml"))
    assert len(records) == 1
    rec = tomllib.loads(records[0].read_text())
    assert rec["meter"]["stream"] == "rapl_package_0" and rec["meter"]["emulated"] is True
    assert rec["reference"]["stream"] == "analyzer"
    # the report: self-contained, emulated banner, every comparison drawn
    page = report.read_text()
    assert "EMULATED METERS" in page and not re.search(r'(src|href)="(?!#|data:)', page)
    assert page.count('data-figure="timeseries"') == sum(1 for n in analysis if "__vs__" in n
                                                           and not n.startswith("validation__"))
    assert "PASS" not in page and "FAIL</b>: rapl_package_0 against analyzer" in page
    # the bench was stopped: its logs and truth files stay, its 29 MB load ring does not
    bench = work / "bench"
    for f in ("host-bench.log", "plug.log", "wt300.log", "rapl.log", "plug.truth.json"):
        assert (bench / f).exists(), f
    assert not (bench / "host-bench.ring").exists()

"""End to end on this machine: ``hwval capture --sync-pulses`` with the host-following bench (a
Tasmota plug on a pty, a WT300 on TCP and a powercap tree, each a process with its own latency),
then ``hwval sync``: every meter's lag, and where its window sits (lag + window / 2), must match
the latency and window its emulator was configured with.

The bench follows only niced CPU time (the pulse workers run at nice 5), so other work on a busy
machine does not add to the signal; it still takes CPU from the workers, which makes the response
weaker and lumpier, hence the margins below.
"""

from __future__ import annotations

import json
import math
import time

import pytest
from click.testing import CliRunner

from conftest import run_hwval
from hwval.cli import cli
from hwval.emulators.host_bench import start_bench
from hwval.runfile import open_run
from hwval.sync.template import pulse_blocks
from hwval.workloads.pulses import BARKER13

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

#: 13 x 1 s per block: four plug readings (0.25 s period, 0.2 s window) per chip, a plateau
#: for each (with 0.5 s chips the plug's amplitude z fell to 2.2 beside two busy loops).
CHIP_S = 1.0
#: Agreement needed when the fit's own 95 % interval is narrower: a loaded host gives the pulse
#: workers CPU in uneven slices, a real deviation from the template the interval does not model.
MARGIN_S = {"plug": 0.1, "wt300": 0.1, "rapl_package_0": 0.05}
#: How far the split of a response into lag and window may go, beside two busy loops: the fitted
#: window of the plug (0.2 s) came out 0.02 to 0.42 s, the WT300's (0.25 s) 0.01 to 0.34 s, the
#: lag moving with it (plug 0.12 to 0.45 s for 0.3 s) under intervals that missed the truth
#: (2026-12-06, 1 to 3 runs in 5 failed the plain margins). So on this live bench the lag is held
#: to the truth widened by the window, and the window's centre to the truth's within
#: CENTRE_MARGIN_S; how close the fit gets with a clean response is tests/test_sync_estimate.py's.
CENTRE_MARGIN_S = {"plug": 0.2, "wt300": 0.2, "rapl_package_0": 0.05}


def _lag_truth(bench) -> dict[str, tuple[float, float, float]]:
    """(lowest lag, highest lag, window) each stream must show: its emulator's latency, plus,
    for a meter that holds a value until the next update (the WT300's interval means, RAPL's
    counter between updates), the age of the value when polled, anywhere in 0..update (the
    polls are not locked to it); the window its values average (the plug's, the WT300's
    update interval; RAPL's counter differences have none)."""
    t = bench.truth
    plug = t["plug"]["model"]["latency_s"]
    wt300, wt300_update = t["wt300"]["model"]["latency_s"], t["wt300"]["options"]["update_s"]
    rapl, rapl_update = t["rapl"]["model"]["latency_s"], t["rapl"]["options"]["update_s"]
    return {"plug": (plug, plug, t["plug"]["model"]["window_s"]),
            "wt300": (wt300, wt300 + wt300_update, t["wt300"]["window_s"]),
            "rapl_package_0": (rapl, rapl + rapl_update, 0.0)}


def test_live_sync_pulses_find_each_meters_configured_latency(tmp_path):
    started = time.monotonic()
    out = tmp_path / "live.h5"
    (tmp_path / "bench").mkdir()
    with start_bench(tmp_path / "bench", cpu_load="niced") as bench:
        # RAPL's package domain only: core and dram follow the same bench, and each costs a fit
        specs = [a for spec in bench.meter_specs
                 for a in ("-m", spec + ("&domains=rapl_package_0" if spec.startswith("rapl:") else ""))]
        res = run_hwval("capture", "--no-nvml", "--no-rapl", "--no-live", *specs, "--sync-pulses",
                        "--pulse-chip-s", str(CHIP_S), "--duration", "0.2", "-o", str(out), timeout=90)
        truth = _lag_truth(bench)
    captured = time.monotonic()
    assert res.returncode == 0, res.stderr

    with open_run(out) as run:
        assert set(run.stream_names) == {"plug", "wt300", "rapl_package_0"}
        for stream in run.streams():
            assert stream.error_counts == {}, (stream.name, stream.error_counts)
        assert [e for e in run.events if e.name in ("error", "gap_start")] == []
        blocks = pulse_blocks(run.events)
        names = [e.name for e in run.events]
    # one block before the --duration wait and one after it, each a whole Barker-13
    assert len(blocks) == 2 and all(b.levels == BARKER13 and b.chip_s == CHIP_S for b in blocks)
    assert names.count("pulse_chip") == 26 and "mark" not in names

    res = CliRunner().invoke(cli, ["sync", str(out), "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    streams = json.loads(res.output)["streams"]
    for name, (true_lo, true_hi, true_window) in truth.items():
        entry = streams[name]
        if name == "rapl_package_0" and entry["method"] == "no_response":
            # At 100 Hz RAPL sees the workers' CPU slices themselves: on a heavily loaded host
            # (load ~15 on 2 cores) its fit can explain too little variance (r2 < 0.2) and says
            # so. Then its lag must be NaN, never a made-up number; the meters must react.
            assert entry["lag_s"] is None and "did not react" in entry["note"]
            continue
        assert entry["method"] == "pulse_fit", (name, entry["note"])
        lag, (lo, hi), window = entry["lag_s"], entry["lag_ci_s"], entry["window_s"]
        assert math.isfinite(lag) and lo <= lag <= hi and math.isfinite(window)
        margin = MARGIN_S[name]
        # where the window sits (its centre, lag + window / 2), unless the edges met the meter's
        # reporting grid at one phase (the plug's telemetry is 0.25 s, a chip 4 of them): then
        # the fit says the window is not resolved and only the lag, its interval widened to half
        # a period, is judged
        centre, half, c_margin = lag + window / 2, true_window / 2, CENTRE_MARGIN_S[name]
        assert "window not resolved" in (entry["note"] or "") or \
            true_lo + half - c_margin <= centre <= true_hi + half + c_margin, \
            (name, lag, window, true_lo, true_hi, true_window)
        # the lag: its interval meets the true range, or it lies within the truth widened by the
        # window it may trade with and the margin
        assert (lo <= true_hi and hi >= true_lo) or \
            true_lo - true_window - margin <= lag <= true_hi + true_window + margin, \
            (name, lag, lo, hi, window, true_lo, true_hi, true_window)
    # bench start-up, capture (3 settles of 1 s, 2 blocks of 13 s), sync: ~37 s beside two busy
    # loops; 60 s at a load of 15 on 2 cores (other test suites running), hence the bound
    assert time.monotonic() - started < 120, (captured - started, time.monotonic() - captured)

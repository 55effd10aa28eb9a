"""The demo's idle periods alone give the calibration step the bins it needs.

On an idle machine the quick demo's training is over in 0.3 s, so the workload's window
(workload_start to workload_end, which ``hwval calibrate`` fits over) is little more than the
two idle periods. With 2 s either side it held 7 one-second bins and the demo stopped at
calibrate (CI, 2026-12-06); this pins the rule that replaced the constant.
"""

from __future__ import annotations

import numpy as np

from hwval.analysis.compare import grid
from hwval.analysis.fit import MIN_FIT_BINS
from hwval.commands.demo import IDLE_S


def test_two_idle_periods_hold_the_calibration_bins_with_a_bin_to_spare_each_side():
    # the window starts at workload_start and the grid is anchored there; the recorded span
    # may cut up to a bin at either end (a stream starting or ending mid-bin after lag correction)
    for start_s in np.linspace(0.0, 1.0, 11):
        edges = grid((start_s + 0.99, start_s + 2 * IDLE_S - 0.99), start_s, 1.0)
        assert len(edges) - 1 >= MIN_FIT_BINS


def test_demo_help_names_the_idle_the_calibration_needs():
    from click.testing import CliRunner
    from hwval.commands.demo import demo

    out = CliRunner().invoke(demo, ["--help"]).output
    assert f"{IDLE_S:g} s idle either side" in " ".join(out.split())

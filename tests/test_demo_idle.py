"""The demo's idle periods alone give its calibration step the bins it needs.

On an idle machine the quick demo's training is over in 0.3 s, so the workload's window
(workload_start to workload_end, which ``hwval calibrate`` fits over) is little more than the
start-up and the two idle periods. With 2 s idle either side it held 7 one-second bins and the
demo stopped at calibrate (CI, 2026-12-06). These tests fit a real run file shaped like the
quick demo's with the start-up left out (the worst case: a fast machine).
"""

from __future__ import annotations

import numpy as np
import pytest

from analysis_runs import Stream, write_run
from hwval.analysis.compare import AnalysisInputError
from hwval.analysis.fit import fit_record
from hwval.analysis.fit_limits import MIN_FIT_BINS
from hwval.commands.demo import IDLE_S, short_idle_warning
from hwval.runfile.reader import open_run

TRAIN_S = 0.3                      # the quick training on this machine when idle
PULSES_S = 11.0                    # a pulse block with its settling, recorded either side


def _demo_like_run(tmp_path, idle_s: float):
    w_start = PULSES_S
    train = (w_start + idle_s, w_start + idle_s + TRAIN_S)
    w_end = train[1] + idle_s
    t = np.arange(0.0, w_end + PULSES_S, 0.25)
    true_w = np.where((t >= train[0]) & (t < train[1]), 180.0, 60.0)
    pulses = (t < w_start) | (t >= w_end)
    true_w = np.where(pulses & (np.mod(t, 1.44) < 0.72), 180.0, true_w)
    path = tmp_path / f"idle{idle_s:g}.h5"
    write_run(path, [Stream("analyzer", "hardware", t, power_w=true_w, driver="wt300", period_s=0.25),
                     Stream("rapl_package_0", "software", t, power_w=0.55 * true_w, driver="rapl", period_s=0.25)],
              events=[(w_start, "workload_start", {"command": ["python", "train.py"]}),
                      (w_end, "workload_end", {"exit_code": 0})])
    return path


def test_the_demos_idle_alone_holds_the_bins_a_calibration_needs(tmp_path):
    with open_run(_demo_like_run(tmp_path, IDLE_S)) as run:
        record = fit_record(run, "rapl_package_0", "analyzer", n_resamples=0)
    assert record.n_bins >= MIN_FIT_BINS
    assert record.bin_s == 1.0
    assert record.gain == pytest.approx(1 / 0.55, rel=1e-6)


def test_the_old_two_seconds_fall_short_as_ci_saw(tmp_path):
    with open_run(_demo_like_run(tmp_path, 2.0)) as run:
        with pytest.raises(AnalysisInputError, match=f"only 4 aligned bins .* at least {MIN_FIT_BINS}"):
            fit_record(run, "rapl_package_0", "analyzer", n_resamples=0)


def test_a_short_idle_is_warned_about_and_the_demos_is_not():
    assert short_idle_warning(IDLE_S) is None
    assert short_idle_warning(MIN_FIT_BINS / 2) is None
    warning = short_idle_warning(2.0)
    assert "--idle-s 2" in warning and "at least 6 s" in warning and f"fewer than {MIN_FIT_BINS} bins" in warning

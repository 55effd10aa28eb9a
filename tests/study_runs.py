"""Run files of `hwval workload train` with known truth for the studies' tests: the workload's
marks (as hwval.workloads.train writes them) on a chosen timeline, and streams computed from a
known true power, written through tests/analysis_runs.py (the run-file layout functions)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis_runs import Stream, energy_of, write_run


@dataclass
class Timeline:
    """The workload's phases in seconds on the run timebase."""

    workload_start_s: float = 1.0
    setup_s: float = 1.0
    idle_s: float = 4.0
    epoch_s: tuple[float, ...] = (10.0, 10.0, 10.0)
    eval_s: float = 2.0
    tail_s: float = 0.5

    def events(self, *, arch="vgg", params=1000, macs=5000, train_samples=100, eval_samples=50,
               accuracies=(0.3, 0.5, 0.7), eval_accuracies=(0.25, 0.45, 0.65), epochs_done=None):
        """The events; ``epochs_done`` < len(epoch_s) makes an interrupted run (no train_end)."""
        n = len(self.epoch_s) if epochs_done is None else epochs_done
        t = self.workload_start_s
        ev = [(t, "workload_start", {})]
        t += self.setup_s
        ev.append((t, "mark", {"mark": "idle_before", "seconds": self.idle_s}))
        t += self.idle_s
        ev.append((t, "mark", {"mark": "train_start", "mode": "train", "arch": arch, "width": 16, "depth": 2,
                               "params": params, "macs": macs, "epochs": len(self.epoch_s)}))
        for k in range(1, n + 1):
            ev.append((t, "mark", {"mark": "epoch_start", "epoch": k, "phase": "train"}))
            t += self.epoch_s[k - 1]
            ev.append((t, "mark", {"mark": "epoch", "epoch": k, "phase": "train", "loss": 1.0 / k,
                                   "accuracy": accuracies[k - 1], "samples": train_samples}))
            ev.append((t, "mark", {"mark": "eval_start", "epoch": k, "phase": "eval"}))
            t += self.eval_s
            ev.append((t, "mark", {"mark": "eval", "epoch": k, "phase": "eval", "loss": 1.0 / k,
                                   "accuracy": eval_accuracies[k - 1], "samples": eval_samples}))
        if epochs_done is None:
            ev.append((t, "mark", {"mark": "train_end", "epochs": n, "samples": n * train_samples,
                                   "accuracy": accuracies[n - 1], "eval_accuracy": eval_accuracies[n - 1],
                                   "params": params, "macs": macs}))
            ev.append((t, "mark", {"mark": "idle_after", "seconds": self.idle_s}))
            t += self.idle_s
        ev.append((t + self.tail_s, "workload_end", {"exit_code": 0}))
        return ev

    @property
    def train_start_s(self) -> float:
        return self.workload_start_s + self.setup_s + self.idle_s

    @property
    def train_s(self) -> float:
        return sum(self.epoch_s) + len(self.epoch_s) * self.eval_s

    @property
    def end_s(self) -> float:
        return self.train_start_s + self.train_s + self.idle_s + self.tail_s


def write_study_run(path, power_fn, timeline: Timeline = Timeline(), *, rapl_share=0.4, wall_period_s=0.05,
                    software_delay_s=0.0, **marks) -> str:
    """A wall meter (instant power at ``wall_period_s``) and a RAPL package counter (100 Hz,
    ``rapl_share`` of the true energy, its stamps ``software_delay_s`` late) over the timeline."""
    end = timeline.end_s + 2.0
    # half a period off the whole seconds: a step of the true power at a whole second falls
    # midway between two readings, where the trapezoid of instant readings is exact
    t_w = np.arange(wall_period_s / 2, end, wall_period_s)
    t_r = np.arange(0.0, end, 0.01)
    e_r = energy_of(t_r - software_delay_s, power_fn)
    streams = [Stream("wall", "hardware", t_w, power_w=power_fn(t_w), driver="tasmota", period_s=wall_period_s),
               Stream("rapl_package_0", "software", t_r, energy_j=rapl_share * e_r, driver="rapl",
                      scope="cpu_package", identity={"zone": "intel-rapl:0", "part_of": None}, period_s=0.01)]
    return write_run(path, streams, timeline.events(**marks))


def true_energy(power_fn, a: float, b: float, step_s: float = 1e-4) -> float:
    """The exact energy of ``power_fn`` over [a, b] (fine trapezoids)."""
    t = np.arange(a, b + step_s / 2, step_s)
    p = power_fn(t)
    return float(np.sum((p[1:] + p[:-1]) / 2 * np.diff(t)))

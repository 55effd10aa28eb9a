"""Run files with known truth for the analysis tests, written with the run-file layout functions
(the same ones the capture's writer uses), so they are real hwval runs."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

from hwval.runfile.documents import Event, Start, Stop
from hwval.runfile.layout import (append_columns, append_events, create_events_group, create_stream_group,
                                  finalize, write_root_attrs)
from hwval.sources.base import Key, StreamInfo

ORIGIN_REALTIME_NS = 1_764_000_000 * 10 ** 9


@dataclass
class Stream:
    name: str
    kind: str
    t: np.ndarray
    power_w: np.ndarray | None = None
    energy_j: np.ndarray | None = None
    driver: str = "synthetic"
    scope: str = "wall"
    semantics: str = "instant"
    window_s: float | None = None
    period_s: float | None = None
    identity: dict[str, Any] = field(default_factory=dict)
    emulated: bool = True

    def info(self) -> StreamInfo:
        keys = []
        if self.power_w is not None:
            keys.append(Key("power_w", "W", self.semantics, self.window_s))
        if self.energy_j is not None:
            keys.append(Key("energy_j", "J", "counter", None))
        return StreamInfo(self.name, self.kind, self.driver, "test", self.scope, self.period_s, tuple(keys),
                          self.identity, self.emulated)


def write_run(path, streams: list[Stream], events: list[tuple[float, str, dict]] = (),
              hostname: str = "testhost") -> str:
    run_id = str(uuid.uuid4())
    with h5py.File(path, "w") as f:
        write_root_attrs(f, Start(run_id, "2026-12-01T10:00:00Z", hostname, ["python", "train.py"],
                                  10 ** 12, ORIGIN_REALTIME_NS, json.dumps({}), "test"))
        ev = create_events_group(f)
        group = f.create_group("streams")
        for s in streams:
            g = create_stream_group(group, s.info())
            append_columns(g["t"], [np.asarray(s.t, dtype=float)])
            if s.power_w is not None:
                append_columns(g["power_w"], [np.asarray(s.power_w, dtype=float)])
            if s.energy_j is not None:
                append_columns(g["energy_j"], [np.asarray(s.energy_j, dtype=float)])
        if events:
            append_events(ev, [Event(t, name, "", dict(detail)) for t, name, detail in events])
        finalize(f, Stop(0, True, {}))
    return run_id


def profile_w(t: np.ndarray) -> np.ndarray:
    """A true power with idle and load plateaus (60 / 250 W, 5 s each) and a slow ripple."""
    base = np.where(np.mod(t, 10.0) < 5.0, 60.0, 250.0)
    return base + 10.0 * np.sin(2 * np.pi * t / 7.0)


def energy_of(t: np.ndarray, power_fn=profile_w, step_s: float = 1e-3) -> np.ndarray:
    """Cumulative true energy at ``t`` (fine trapezoids from t[0])."""
    fine = np.arange(t[0], t[-1] + step_s, step_s)
    p = power_fn(fine)
    cum = np.concatenate([[0.0], np.cumsum((p[1:] + p[:-1]) / 2 * step_s)])
    return np.interp(t, fine, cum)

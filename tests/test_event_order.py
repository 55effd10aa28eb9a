"""Events are written in time order as they come (late marks merged into the tail), so the finish
never re-sorts every event: that took 29 s at 1e6 events."""

from __future__ import annotations

import json
import random

import h5py
import numpy as np

from hwval.runfile import layout
from hwval.runfile.documents import Event


def test_late_events_are_merged_in_time_order_and_ties_keep_arrival_order(tmp_path):
    rng = random.Random(7)
    sent = []
    with h5py.File(tmp_path / "ev.h5", "w") as f:
        ev = layout.create_events_group(f)
        for b in range(60):
            # mostly in order, some late by up to 2 s, some stamps shared (a tie)
            batch = [Event(round(b + rng.random() - (2 if rng.random() < 0.1 else 0), 1), f"e{len(sent) + i}",
                           "", {"i": len(sent) + i}) for i in range(rng.randint(0, 20))]
            sent += batch
            layout.append_events_in_order(ev, batch)
        t, names = ev["t"][:], list(ev["name"].asstr()[:])
        details = [json.loads(d) for d in ev["detail"].asstr()[:]]
    expected = sorted(sent, key=lambda e: e.t)  # stable: arrival order on ties
    assert len(sent) > 300 and any(a.t == b.t for a, b in zip(expected, expected[1:]))
    assert list(t) == [e.t for e in expected] and np.all(np.diff(t) >= 0)
    assert names == [e.name for e in expected] and [d["i"] for d in details] == [e.detail["i"] for e in expected]


def test_a_late_event_rewrites_only_the_tail_it_belongs_in(tmp_path, monkeypatch):
    n = 20_000
    with h5py.File(tmp_path / "ev.h5", "w") as f:
        ev = layout.create_events_group(f)
        layout.append_events_in_order(ev, [Event(i * 0.01, "mark", "", {"i": i}) for i in range(n)])
        writes = []
        real = h5py.Dataset.__setitem__

        def record(ds, key, value):
            writes.append((ds.name, key))
            real(ds, key, value)

        monkeypatch.setattr(h5py.Dataset, "__setitem__", record)
        late_t = (n - 50) * 0.01 - 0.001  # belongs before the last 50 events
        layout.append_events_in_order(ev, [Event(late_t, "late", "", {})])
        monkeypatch.undo()
        assert {w[0] for w in writes} == {"/events/t", "/events/name", "/events/stream", "/events/detail"}
        assert all(isinstance(k, slice) and k.start == n - 50 for _, k in writes), writes
        t = ev["t"][:]
        assert len(t) == n + 1 and np.all(np.diff(t) >= 0)
        assert ev["name"].asstr()[n - 50] == "late" and ev["name"].asstr()[n - 51] == "mark"

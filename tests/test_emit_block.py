"""``emit_block``: readings handed over as arrays are stored exactly as the same readings emitted
one by one (times, values, NaN for a missing key, undeclared keys, gaps, drops), and the n6705
driver, which emits one block per acquisition, records what the instrument measured."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from hwval.benchmodel import Bench, MeterModel, PowerProfile
from hwval.capture.recorder import Recorder
from hwval.emulators.n6705 import N6705
from hwval.runfile.documents import Event, Page, Start
from hwval.sources.base import Key, SourceSpec, StreamInfo, TransientError
from hwval.sources.testing import RecordingContext
from hwval.sources.visa.codec import power_uncertainty_w
from hwval.sources.visa.n6705 import create
from test_visa_support import record, serve  # noqa: F401  (fixture)

KEYS = (Key("power_w", "W", "instant"), Key("voltage_v", "V", "instant"))


def blocks(n_blocks: int = 4, n: int = 250) -> list[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """Blocks with a missing key (no voltage_v in block 1), an undeclared key (block 2) and
    NaN values, on one increasing time line."""
    rng = np.random.default_rng(7)
    out = []
    for b in range(n_blocks):
        t = 1_000_000_000 + (b * n + np.arange(n)) * 1_000_000
        columns = {"power_w": rng.uniform(50, 300, n)}
        columns["power_w"][::97] = np.nan
        if b != 1:
            columns["voltage_v"] = rng.uniform(11.9, 12.1, n)
        if b == 2:
            columns["temperature_c"] = np.full(n, 40.0)
        out.append((t.astype(np.int64), columns))
    return out


class Replay:
    """A streaming source that fails once (a gap), then hands over ``data`` either as blocks
    or as one ``emit`` per reading, and then waits for the end of the capture."""

    mode = "streaming"
    period_s = None

    def __init__(self, data, as_block: bool) -> None:
        self.data, self.as_block = data, as_block
        self.runs = 0
        self.done = threading.Event()

    def open(self, ctx):
        return [StreamInfo("s", "hardware", "replay", "mem", "wall", None, KEYS)]

    def run(self, ctx):
        self.runs += 1
        if self.runs == 1:
            raise TransientError("first read failed")
        for t, columns in self.data:
            if self.as_block:
                ctx.emit_block("s", t, columns)
            else:
                for i in range(len(t)):
                    ctx.emit("s", {k: float(c[i]) for k, c in columns.items()}, t_ns=int(t[i]))
        self.done.set()
        ctx.stop.wait()

    def close(self):
        pass


def capture(source: Replay, queue_size: int = 200_000):
    docs: list = []
    rec = Recorder(Start("t", "now", "host", [], 0, time.time_ns(), "{}", "0"), [docs.append],
                   queue_size=queue_size)
    rec.add_source("s", source)
    rec.start()
    assert source.done.wait(30.0), "the source did not hand over its readings"
    stop = rec.finish(0)
    pages = [d for d in docs if isinstance(d, Page)]
    t = np.concatenate([p.t for p in pages]) if pages else np.zeros(0)
    values = {k: np.concatenate([p.values[k] for p in pages]) for k in (pages[0].values if pages else ())}
    events = [(e.name, e.stream, e.t, e.detail.get("kind")) for e in docs if isinstance(e, Event)]
    return t, values, events, stop.stream_stats["s"]


def test_a_block_is_stored_exactly_as_the_same_readings_emitted_one_by_one():
    data = blocks()
    t_rows, v_rows, ev_rows, st_rows = capture(Replay(data, as_block=False))
    t_block, v_block, ev_block, st_block = capture(Replay(data, as_block=True))
    assert np.array_equal(t_block, t_rows) and len(t_block) == 1000
    assert v_block.keys() == v_rows.keys() == {"power_w", "voltage_v"}
    for key in v_rows:
        assert np.array_equal(v_block[key], v_rows[key], equal_nan=True)
    assert np.isnan(v_block["voltage_v"][250:500]).all()  # block 1 had no voltage
    assert st_block == st_rows
    assert st_block["readings"] == 1000 and st_block["dropped"] == 0
    assert st_block["error_counts"] == {"transient": 1, "undeclared_key": 1}
    # the gap: opened by the failure, closed at the first reading handed over after it
    for events in (ev_rows, ev_block):
        names = [name for name, stream, _, _ in events if stream == "s"]
        assert names.index("gap_start") < names.index("gap_end")
        gap_end = next(t for name, _, t, _ in events if name == "gap_end")
        assert gap_end == t_block[0]


def test_a_full_queue_drops_a_block_and_counts_each_of_its_readings():
    t, _, _, stats = capture(Replay(blocks(4, 250), as_block=True), queue_size=0)
    assert stats["dropped"] == 1000 and stats["readings"] == 0 and len(t) == 0


def test_a_block_whose_columns_do_not_match_its_times_is_counted_not_stored():
    t = np.arange(10, dtype=np.int64) + 1_000_000_000
    bad = [(t, {"power_w": np.ones(9)}), (t, {"power_w": np.full(10, 2.0)})]
    times, values, events, stats = capture(Replay(bad, as_block=True))
    assert stats["error_counts"] == {"transient": 1, "bad_reading": 1}
    assert stats["readings"] == 10 and np.array_equal(values["power_w"], np.full(10, 2.0))
    assert [(name, stream) for name, stream, _, kind in events if kind == "bad_reading"] == [
        ("error", "s")]


def test_the_block_is_copied_so_a_driver_may_refill_its_arrays():
    t = np.arange(5, dtype=np.int64) + 1_000_000_000
    power = np.full(5, 7.0)
    data = [(t, {"power_w": power})]

    class Refill(Replay):
        def run(self, ctx):
            self.runs += 1
            ctx.emit_block("s", t, {"power_w": power})
            power[:] = -1.0  # before the dispatcher has written the page
            self.done.set()
            ctx.stop.wait()

    _, values, _, _ = capture(Refill(data, as_block=True))
    assert values["power_w"].tolist() == [7.0] * 5


def test_n6705_capture_through_the_recorder_equals_the_instrument_sample_for_sample(serve):
    inst = N6705(Bench(PowerProfile.parse("steps:60@0.05,250@0.05")), MeterModel(), rail_v=12.0)
    server = serve(inst)
    points = 100
    src = create(SourceSpec("n6705", server.resource, "rail", None,
                            {"points": points, "interval_s": 0.001, "format": "real", "vi": True}))
    cap = record(src, 20.0, name="rail", until=lambda c: len(c.t_ns) >= 3 * points)
    assert cap.stats["error_counts"] == {}, cap.stats
    assert [e.name for e in cap.events if e.name in ("gap_start", "error")] == []
    n_acq = len(cap.t_ns) // points
    assert n_acq >= 3 and len(cap.t_ns) == n_acq * points
    profile = src.session.profile
    power_range_w = max(profile.voltage_ranges_v) * max(profile.current_ranges_a)
    for k, (start_ns, tint, n) in enumerate(inst.acquisitions[:n_acq]):
        rows = slice(k * points, (k + 1) * points)
        truth = inst.bench.profile.power_w(inst.bench.t_s(start_ns) + np.arange(n) * tint)
        power = cap.values["power_w"][rows]
        assert np.allclose(power, truth, rtol=1e-6)  # float32 on the wire
        # the array arithmetic gives the per-sample formula's value bit for bit
        assert cap.values["power_uncertainty_w"][rows].tolist() == [
            power_uncertainty_w(p, power_range_w, profile.power_pct_reading, profile.power_pct_range)
            for p in power.tolist()]
        assert np.allclose(np.diff(cap.t_ns[rows]), tint * 1e9, atol=1)
    assert np.all(cap.values["voltage_v"] == 12.0)


def test_recording_context_expands_a_block_into_its_readings():
    ctx = RecordingContext()
    ctx.declare([StreamInfo("s", "hardware", "replay", "mem", "wall", None, KEYS)])
    ctx.emit_block("s", [1, 2, 3], {"power_w": [1.0, 2.0, 3.0], "current_a": [0.1, 0.2, 0.3]})
    assert [t for t, _, _ in ctx.readings] == [1, 2, 3]
    assert ctx.values("s", "power_w").tolist() == [1.0, 2.0, 3.0]
    assert ctx.errors == {"undeclared_key": 3} and ctx.undeclared == {"s": {"current_a"}}
    with pytest.raises(AssertionError, match="block column 'power_w'"):
        ctx.emit_block("s", [1, 2], {"power_w": [1.0]})

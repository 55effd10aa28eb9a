"""NVML source against ``pynvml`` patched at the module boundary: every function the source calls
is an autospec of the real one (``hwval.emulators.nvml_sim``) and faults are real ``NVMLError``
codes."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import time

import pynvml
import pytest
from conftest import StepClock

from hwval.benchmodel import PowerProfile
from hwval.sources.base import Disconnected, SourceSpec, SourceUnavailable, TransientError
import hwval.sources.nvml
from hwval.sources.nvml.detect import DETECT_LIMIT_FACTOR, smallest_change_interval_s
from hwval.sources.nvml.devices import NvmlDevice, power_usage_semantics
from hwval.sources.nvml.source import NvmlSource, create
from hwval.sources.nvml.visible import parse_visible, resolve_visible
from hwval.emulators.nvml_sim import SimGpu, SimNvml
from hwval.sources.testing import RecordingContext

UUIDS = ["GPU-11111111-aaaa-bbbb-cccc-000000000000", "GPU-22222222-aaaa-bbbb-cccc-000000000000",
         "GPU-33333333-aaaa-bbbb-cccc-000000000000"]


def fleet(n=2, **kwargs) -> SimNvml:
    return SimNvml([SimGpu(UUIDS[i], serial=f"serial-{i}", **kwargs) for i in range(n)])


def open_source(sim: SimNvml, env=None, resource="", clock=None, **options):
    options.setdefault("detect_s", 0.0)
    src = NvmlSource(SourceSpec("nvml", resource, "nvml", 0.05, options),
                     **({} if clock is None else {"clock_ns": clock}), environ={} if env is None else env)
    ctx = RecordingContext(polled=True)
    return src, ctx, src.open(ctx)


def test_streams_keys_identity_and_semantics():
    sim = SimNvml([SimGpu(UUIDS[0], serial="serial-0"),  # H100: 1 s average
                   SimGpu(UUIDS[1], name="NVIDIA A100-SXM4-80GB", architecture=pynvml.NVML_DEVICE_ARCH_AMPERE,
                          averaging=False, power_limit_mw=400_000),
                   SimGpu(UUIDS[2], name="Tesla V100-SXM2-16GB", architecture=pynvml.NVML_DEVICE_ARCH_VOLTA,
                          averaging=False)])
    with sim.patch() as mocks:
        src, ctx, infos = open_source(sim, env={"CUDA_DEVICE_ORDER": "PCI_BUS_ID"})
        assert [i.name for i in infos] == ["nvml_gpu0", "nvml_gpu1", "nvml_gpu2"]
        h100, a100, v100 = infos
        keys = {k.name: k for k in h100.keys}
        assert set(keys) == {"power_w", "energy_j", "power_instant_w", "power_average_w"}
        assert (keys["power_w"].semantics, keys["power_w"].window_s) == ("window_mean", 1.0)
        assert (keys["power_instant_w"].semantics, keys["power_average_w"].window_s) == ("instant", 1.0)
        assert (keys["energy_j"].unit, keys["energy_j"].semantics) == ("J", "counter")
        assert {k.name: (k.semantics, k.window_s) for k in a100.keys}["power_w"] == ("instant", None)
        assert {k.name: (k.semantics, k.window_s) for k in v100.keys}["power_w"] == ("instant", None)
        assert {k: h100.identity[k] for k in ("name", "uuid", "serial", "driver_version",
                                              "architecture", "power_limit_w", "cuda_index")} == {
            "name": "NVIDIA H100 80GB HBM3", "uuid": UUIDS[0], "serial": "serial-0",
            "driver_version": "560.35.03 HWVAL-EMULATOR", "architecture": "hopper", "power_limit_w": 700.0,
            "cuda_index": 0}
        assert all(i.emulated for i in infos)  # the simulated driver says it is one
        assert a100.identity["power_limit_w"] == 400.0 and a100.identity["architecture"] == "ampere"
        assert all(i.scope == "gpu" and i.kind == "software" and i.resource == u
                   for i, u in zip(infos, UUIDS))
        src.read()
        # The field values asked for are the real NVML ids, in one call per GPU.
        fids = mocks["nvmlDeviceGetFieldValues"].call_args.args[1]
        assert fids == [pynvml.NVML_FI_DEV_POWER_INSTANT, pynvml.NVML_FI_DEV_POWER_AVERAGE]
        src.close()
        assert sim.initialised == 0  # nvmlShutdown balanced nvmlInit


def test_power_and_energy_counter_readings():
    sim = fleet(1, update_s=0.01, share=0.5)
    gpu = sim.gpus[0]
    with sim.patch():
        src, ctx, _ = open_source(sim)
        before0 = time.monotonic_ns()
        first = src.read()["nvml_gpu0"]
        after0 = time.monotonic_ns()
        assert first["energy_j"] == 0.0
        time.sleep(0.3)
        before1 = time.monotonic_ns()
        last = src.read()["nvml_gpu0"]
        after1 = time.monotonic_ns()
    # Exactly the counter's millijoules, zeroed at the first reading.
    assert last["energy_j"] * 1000 == pytest.approx(round(last["energy_j"] * 1000), abs=1e-9)
    # Each counter value is the one of the GPU's last update before the call, so it is at most
    # one update period older than the call: the difference lies between the true energies
    # of the shortest and the longest span those brackets allow (+-1 mJ of flooring).
    update_ns = int(gpu.update_s * 1e9)
    shortest_j = sim.true_energy_j(gpu, after0, before1 - update_ns)
    longest_j = sim.true_energy_j(gpu, before0 - update_ns, after1)
    assert shortest_j - 0.001 <= last["energy_j"] <= longest_j + 0.001
    # Power usage: integer milliwatts converted to watts, the bench's 1 s mean at 50 %.
    assert last["power_w"] * 1000 == pytest.approx(round(last["power_w"] * 1000), abs=1e-9)
    assert 0.5 * 60 - 1e-9 <= last["power_w"] <= 0.5 * 250 + 1e-9
    assert ctx.events == [] and ctx.errors == {}


def test_energy_counter_going_backwards_keeps_the_sum_continuous():
    sim = fleet(1)
    with sim.patch():
        src, ctx, _ = open_source(sim)
        src.read()
        time.sleep(0.05)
        before = src.read()["nvml_gpu0"]["energy_j"]
        sim.gpus[0].base_mj = 0  # driver reloaded: the counter restarts near 0
        after = src.read()["nvml_gpu0"]["energy_j"]
        assert after == pytest.approx(before, abs=0.01)
        assert [(n, d["kind"]) for n, _, d in ctx.events] == [("error", "counter_backwards")]


def test_unsupported_functions_are_skipped_with_a_note():
    sim = SimNvml([SimGpu(UUIDS[0], unsupported=frozenset({"energy", "instant"})),
                   SimGpu(UUIDS[1], unsupported=frozenset({"fields"}))])
    with sim.patch():
        src, ctx, infos = open_source(sim)
        assert [k.name for k in infos[0].keys] == ["power_w", "power_average_w"]
        assert any("total energy counter not available (NVML_ERROR_NOT_SUPPORTED)" in n for n in infos[0].notes)
        assert any("power_instant_w not available" in n for n in infos[0].notes)
        assert [k.name for k in infos[1].keys] == ["power_w", "energy_j"]
        assert any("field values not available" in n for n in infos[1].notes)
        out = src.read()
        assert set(out["nvml_gpu0"]) == {"power_w", "power_average_w"}
        assert set(out["nvml_gpu1"]) == {"power_w", "energy_j"}


def test_gpu_reporting_nothing_is_skipped_and_alone_it_is_unavailable():
    nothing = frozenset({"power", "energy", "fields"})
    sim = SimNvml([SimGpu(UUIDS[0], unsupported=nothing), SimGpu(UUIDS[1])])
    with sim.patch():
        src, ctx, infos = open_source(sim)
        assert [i.name for i in infos] == ["nvml_gpu1"]
        assert ctx.events[0][2]["kind"] == "gpu_without_power"
        src.close()
    sim = SimNvml([SimGpu(UUIDS[0], unsupported=nothing)])
    with sim.patch(), pytest.raises(SourceUnavailable, match="no visible GPU reports power"):
        open_source(sim)
    assert sim.initialised == 0


def test_transient_error_on_the_only_gpu_is_a_gap_of_the_source():
    sim = fleet(1)
    with sim.patch():
        src, ctx, _ = open_source(sim)
        src.read()
        sim.fail(UUIDS[0], "nvmlDeviceGetPowerUsage", pynvml.NVML_ERROR_UNKNOWN)
        with pytest.raises(TransientError, match="nvml_gpu0: NVML_ERROR_UNKNOWN"):
            src.read()
        assert "power_w" in src.read()["nvml_gpu0"]  # the next read works again
        assert ctx.events == []  # the recorder records the gap of a TransientError


def test_transient_error_on_one_gpu_is_a_gap_of_that_stream_only():
    sim = fleet(2)
    with sim.patch():
        src, ctx, _ = open_source(sim)
        src.read()
        sim.fail(UUIDS[1], "nvmlDeviceGetTotalEnergyConsumption", pynvml.NVML_ERROR_TIMEOUT, times=2)
        assert set(src.read()) == {"nvml_gpu0"}
        assert set(src.read()) == {"nvml_gpu0"}
        assert set(src.read()) == {"nvml_gpu0", "nvml_gpu1"}
        assert [(n, s) for n, s, _ in ctx.events] == [("gap_start", "nvml_gpu1"), ("gap_end", "nvml_gpu1")]
        assert "NVML_ERROR_TIMEOUT" in ctx.events[0][2]["reason"]
        assert ctx.error_streams == [("nvml_gpu1", "NVML_ERROR_TIMEOUT")] * 2


def test_gpu_lost_mid_run_stops_its_stream_while_the_others_continue():
    sim = fleet(2)
    with sim.patch():
        src, ctx, _ = open_source(sim)
        src.read()
        sim.lose(UUIDS[0])
        assert set(src.read()) == {"nvml_gpu1"}
        assert [(n, s, d.get("kind")) for n, s, d in ctx.events] == [
            ("error", "nvml_gpu0", "gpu_lost"), ("gap_start", "nvml_gpu0", None)]
        calls_before = sim.calls["nvmlDeviceGetPowerUsage"]
        assert set(src.read()) == {"nvml_gpu1"}
        assert sim.calls["nvmlDeviceGetPowerUsage"] == calls_before + 1  # the lost GPU is not polled
        sim.lose(UUIDS[1])
        with pytest.raises(Disconnected, match="every GPU is lost"):
            src.read()
        # Each stream's own gap is closed: from here the recorder's gap covers the source.
        assert [(n, s) for n, s, _ in ctx.events[2:]] == [
            ("error", "nvml_gpu1"), ("gap_start", "nvml_gpu1"),
            ("gap_end", "nvml_gpu0"), ("gap_end", "nvml_gpu1")]
        # The recorder closes and reopens; once the GPUs are back both streams return.
        src.close()
        sim.restore(UUIDS[0])
        sim.restore(UUIDS[1])
        infos = src.open(ctx)
        assert [i.name for i in infos] == ["nvml_gpu0", "nvml_gpu1"]
        assert set(src.read()) == {"nvml_gpu0", "nvml_gpu1"}


def test_a_lost_gpu_stays_in_a_gap_across_a_gap_of_the_whole_source():
    # GPU 0 is lost; then GPU 1 fails transiently, so the whole source is in the recorder's
    # gap. The recorder ends that gap for every stream on the next good read: GPU 0, still
    # silent, must get its own gap back so that no stream looks alive without data.
    sim = fleet(2)
    with sim.patch():
        src, ctx, _ = open_source(sim)
        src.read()
        sim.lose(UUIDS[0])
        src.read()
        sim.fail(UUIDS[1], "nvmlDeviceGetPowerUsage", pynvml.NVML_ERROR_UNKNOWN)
        with pytest.raises(TransientError):
            src.read()
        assert set(src.read()) == {"nvml_gpu1"}  # the recorder closes its gap after this read
        assert set(src.read()) == {"nvml_gpu1"}
        assert [(n, s) for n, s, _ in ctx.events] == [
            ("error", "nvml_gpu0"), ("gap_start", "nvml_gpu0"),  # lost
            ("gap_end", "nvml_gpu0"),     # handed over to the recorder's gap
            ("gap_start", "nvml_gpu0")]   # open again once the recorder closed its gap
        src.read()
        assert len(ctx.events) == 4


def test_energy_stays_cumulative_across_a_reopen():
    # The recorder closes and reopens the source after Disconnected; energy_j must not restart
    # at 0 then. The counter runs on during the gap: its progress is the gap's energy.
    sim = fleet(1)
    with sim.patch():
        src, ctx, _ = open_source(sim)
        src.read()
        t_before = time.monotonic_ns()
        before_j = src.read()["nvml_gpu0"]["energy_j"]
        src.close()
        sim.gpus[0].base_mj += 5_000_000  # 5 kJ consumed while the source was closed
        src.open(ctx)
        after_j = src.read()["nvml_gpu0"]["energy_j"]
        # plus what the bench drew meanwhile: at most its peak (250 W) over the time between the
        # reads, stretched by one update period of staleness at the first one
        elapsed_s = (time.monotonic_ns() - t_before) / 1e9 + sim.gpus[0].update_s
        assert before_j + 5000 <= after_j <= before_j + 5000 + 250 * elapsed_s + 0.001
        # A driver reload restarts the counter: the gap's energy is unknown, nothing is added.
        src.close()
        sim.gpus[0].base_mj = 0
        src.open(ctx)
        reloaded_j = src.read()["nvml_gpu0"]["energy_j"]
        assert reloaded_j == after_j
        assert ctx.kinds() == ["counter_backwards"]
        src.close()


def test_transient_error_while_probing_does_not_drop_a_key():
    sim = fleet(1)
    sim.fail(UUIDS[0], "nvmlDeviceGetTotalEnergyConsumption", pynvml.NVML_ERROR_UNKNOWN, times=2)
    sim.fail(UUIDS[0], "nvmlDeviceGetFieldValues", pynvml.NVML_ERROR_TIMEOUT, times=1)
    with sim.patch():
        _, _, (info,) = open_source(sim)
        assert {k.name for k in info.keys} == {"power_w", "energy_j", "power_instant_w", "power_average_w"}
    # A transient code that never clears gives up the key, with the code in the note.
    sim = fleet(1)
    sim.fail(UUIDS[0], "nvmlDeviceGetTotalEnergyConsumption", pynvml.NVML_ERROR_UNKNOWN, times=99)
    with sim.patch():
        _, _, (info,) = open_source(sim)
        assert "energy_j" not in info.key_names()
        assert any("total energy counter not available (NVML_ERROR_UNKNOWN)" in n for n in info.notes)


def test_lost_nvml_state_asks_the_recorder_to_reopen():
    sim = fleet(1)
    with sim.patch():
        src, ctx, _ = open_source(sim)
        sim.fail(UUIDS[0], "nvmlDeviceGetPowerUsage", pynvml.NVML_ERROR_UNINITIALIZED)
        with pytest.raises(Disconnected, match="NVML_ERROR_UNINITIALIZED"):
            src.read()


@pytest.mark.parametrize("visible, expected", [
    ("2,0", [UUIDS[2], UUIDS[0]]),
    ("GPU-33333333,GPU-11111111-aaaa", [UUIDS[2], UUIDS[0]]),
    ("1,7,0", [UUIDS[1]]),            # CUDA stops at the first index that does not exist
    ("2,-1,0", [UUIDS[2]]),           # ...and at the first malformed entry
    ("MIG-9d1e-aaaa-0002,0", [UUIDS[1], UUIDS[0]]),
    ("MIG-GPU-33333333-aaaa-bbbb-cccc-000000000000/1/0", [UUIDS[2]]),
    ("1,MIG-9d1e-aaaa-0001", [UUIDS[1]]),  # the same parent twice is measured once
])
def test_cuda_visible_devices_is_matched_by_uuid(visible, expected):
    sim = SimNvml([SimGpu(UUIDS[0]), SimGpu(UUIDS[1], mig_uuids=("MIG-9d1e-aaaa-0001", "MIG-9d1e-aaaa-0002")),
                   SimGpu(UUIDS[2])])
    with sim.patch():
        src, ctx, infos = open_source(sim, env={"CUDA_VISIBLE_DEVICES": visible})
        assert [i.resource for i in infos] == expected
        indices = [int(i.name.removeprefix("nvml_gpu")) for i in infos]
        assert [i.identity["cuda_index"] for i in infos] == indices
        assert infos[0].name == "nvml_gpu0"
        out = src.read()
        assert set(out) == {i.name for i in infos}


def test_mig_and_index_notes_and_resource_override():
    sim = SimNvml([SimGpu(UUIDS[0], mig_uuids=("MIG-aaaa",)),
                   SimGpu(UUIDS[1], name="NVIDIA GeForce RTX 4090",
                          architecture=pynvml.NVML_DEVICE_ARCH_ADA)])
    with sim.patch():
        _, _, infos = open_source(sim, env={"CUDA_VISIBLE_DEVICES": "MIG-aaaa"})
        assert any("MIG instance MIG-aaaa" in n for n in infos[0].notes)
        assert infos[0].identity["mig_instance"] == "MIG-aaaa"
        # Mixed GPUs numbered by index without PCI_BUS_ID order: CUDA may disagree with NVML.
        _, _, infos = open_source(sim, env={})
        assert any("CUDA_DEVICE_ORDER" in n for n in infos[0].notes)
        _, _, infos = open_source(sim, env={"CUDA_DEVICE_ORDER": "PCI_BUS_ID"})
        assert not any("CUDA_DEVICE_ORDER" in n for n in infos[0].notes)
        # The spec's resource overrides the environment.
        _, _, infos = open_source(sim, env={"CUDA_VISIBLE_DEVICES": "0"}, resource="1")
        assert [i.resource for i in infos] == [UUIDS[1]] and infos[0].name == "nvml_gpu0"


@pytest.mark.parametrize("visible", ["", "-1", "5", "GPU-ffff"])
def test_nothing_visible_is_a_clear_message(visible):
    sim = fleet(2)
    with sim.patch(), pytest.raises(SourceUnavailable) as err:
        open_source(sim, env={"CUDA_VISIBLE_DEVICES": visible})
    message = str(err.value)
    assert f"CUDA_VISIBLE_DEVICES={visible!r} selects none of the 2 GPU(s)" in message
    assert UUIDS[0] in message and "--no-nvml" in message and "\n" not in message
    assert sim.initialised == 0


@pytest.mark.parametrize("code, text", [
    (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, "no NVIDIA driver on this machine"),
    (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "kernel driver is not loaded"),
    (pynvml.NVML_ERROR_NO_PERMISSION, "permission denied"),
])
def test_no_driver_is_a_clear_message(code, text):
    sim = SimNvml([SimGpu(UUIDS[0])], init_error=code)
    with sim.patch(), pytest.raises(SourceUnavailable, match=text) as err:
        open_source(sim)
    assert "--no-nvml" in str(err.value)


def test_no_gpu_is_a_clear_message():
    with SimNvml([]).patch(), pytest.raises(SourceUnavailable, match="sees no GPU.*--no-nvml"):
        open_source(SimNvml([]))


def test_real_pynvml_without_driver_is_a_clear_message():
    # This machine has no NVIDIA driver: the real library call fails, and we say so plainly.
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("an NVIDIA driver is present")
    with pytest.raises(SourceUnavailable, match="^no NVIDIA driver|kernel driver is not loaded"):
        create(SourceSpec("nvml", "", "nvml", None, {})).open(RecordingContext(polled=True))


class ReadClock(StepClock):
    """Time that passes only as it is read, ``step_s`` per call, shared by the simulated GPUs and
    the source: the burst's reads and the GPUs' updates fall at the same instants on any machine.

    ``stall_s`` until ``stall_until_s`` (from the start) mimics a loaded machine at its worst:
    the reader is held back across every update of a GPU that updates every ``update_s``, so
    each change falls in a delayed read."""

    def __init__(self, step_s: float = 1e-4, update_s: float = 0.05, stall_s: float = 0.0,
                 stall_until_s: float = 0.0) -> None:
        super().__init__()
        self.t0_ns, self.step_s, self.stall_s = self.t_ns, step_s, stall_s
        self.update_ns, self.stall_until_ns = round(update_s * 1e9), self.t_ns + round(stall_until_s * 1e9)

    def __call__(self) -> int:
        before = self.t_ns
        self.advance(self.step_s)
        crossed = (before - self.t0_ns) // self.update_ns != (self.t_ns - self.t0_ns) // self.update_ns
        if crossed and self.t_ns < self.stall_until_ns:
            self.advance(self.stall_s)
        return self.t_ns


def test_update_period_is_detected_from_a_burst():
    clock = ReadClock()
    sim = SimNvml([SimGpu(UUIDS[0], update_s=0.02), SimGpu(UUIDS[1], update_s=0.05, averaging=False,
                                                            unsupported=frozenset({"energy"}))],
                  # A sine ripple: the instant power differs at every 50 ms update.
                  profile=PowerProfile.parse("constant:100+ripple:50@0.37"), clock_ns=clock)
    with sim.patch():
        src, ctx, infos = open_source(sim, clock=clock, detect_s=0.25)
        # Each change is timed within one read bracket: a few 0.1 ms clock steps.
        assert infos[0].identity["update_period_s"] == pytest.approx(0.02, abs=0.001)
        detected_ms = infos[0].identity["update_period_s"] * 1e3
        assert any(f"energy counter: {detected_ms:.1f} ms" in n and "0.25 s burst" in n for n in infos[0].notes)
        # Without a counter the power readings are used.
        assert infos[1].identity["update_period_s"] == pytest.approx(0.05, abs=0.001)
        assert src.update_periods == {"nvml_gpu0": infos[0].identity["update_period_s"],
                                      "nvml_gpu1": infos[1].identity["update_period_s"]}


def test_update_period_burst_goes_on_while_every_change_falls_in_a_delayed_read():
    # For the first 0.6 s each update comes while the reader is held back 10 ms: no change is
    # timed well enough in the 0.25 s asked for, so the burst goes on until some are.
    clock = ReadClock(update_s=0.05, stall_s=0.01, stall_until_s=0.6)
    sim = SimNvml([SimGpu(UUIDS[0], update_s=0.05)], clock_ns=clock)
    with sim.patch():
        src, ctx, infos = open_source(sim, clock=clock, detect_s=0.25)
    assert src.update_periods["nvml_gpu0"] == pytest.approx(0.05, abs=0.001)
    assert any("in a 0.75 s burst" in n for n in infos[0].notes), infos[0].notes


def test_update_period_burst_is_bounded_when_the_value_never_changes():
    clock = ReadClock()
    sim = SimNvml([SimGpu(UUIDS[0], averaging=False, unsupported=frozenset({"energy"}))],
                  profile=PowerProfile.parse("constant:100"), clock_ns=clock)
    with sim.patch():
        src, ctx, infos = open_source(sim, clock=clock, detect_s=0.25)
    assert src.update_periods == {"nvml_gpu0": None}
    limit_s = DETECT_LIMIT_FACTOR * 0.25
    assert any(f"changed 0 time(s) in a {limit_s:.3g} s burst" in n for n in infos[0].notes), infos[0].notes


def test_an_interval_over_a_held_back_read_is_not_taken_for_the_period():
    widths = [2000] * 50  # reads 2 us apart: brackets wider than ~56 us are not well-timed
    ms = 1_000_000
    # updates every 20 ms; the reader is held back from 10 to 45 ms and sees the 20 and 40 ms
    # updates as one change, then reads on time again
    tight0, held, tight60, tight80 = (-ms // 1000, ms // 1000), (10 * ms, 45 * ms), \
        (60 * ms - 1000, 60 * ms + 1000), (80 * ms - 1000, 80 * ms + 1000)
    # 60 ms over 2 changes is only an upper bound (30 ms): no period yet
    assert smallest_change_interval_s([tight0, held, tight60], widths) is None
    # two neighbouring well-timed changes: one period apart
    assert smallest_change_interval_s([tight0, held, tight60, tight80], widths) == pytest.approx(0.02)


def test_options_are_checked():
    with pytest.raises(ValueError, match="unknown option 'period'.*detect_s, fields"):
        create(SourceSpec("nvml", "", "nvml", None, {"period": 1.0}))
    with pytest.raises(ValueError, match="detect_s"):
        create(SourceSpec("nvml", "", "nvml", None, {"detect_s": -1.0}))


def test_visible_parsing_and_semantics_table():
    assert parse_visible(None).entries is None
    assert parse_visible("0, 1,GPU-ab").entries == ("0", "1", "GPU-ab")
    assert parse_visible("0,foo,1").entries == ("0",)
    assert power_usage_semantics(pynvml.NVML_DEVICE_ARCH_HOPPER, "NVIDIA H100") == ("window_mean", 1.0)
    assert power_usage_semantics(pynvml.NVML_DEVICE_ARCH_AMPERE, "NVIDIA A30") == ("instant", None)
    assert power_usage_semantics(pynvml.NVML_DEVICE_ARCH_AMPERE, "NVIDIA RTX A3000") == ("window_mean", 1.0)
    assert power_usage_semantics(pynvml.NVML_DEVICE_ARCH_TURING, "Tesla T4") == ("instant", None)
    assert power_usage_semantics(None, "?") == ("instant", None)


def test_the_simulation_stands_in_for_every_pynvml_function_the_source_calls():
    # Any function the product calls that the simulation does not patch would reach the real
    # library in tests; every patch must keep the real function's signature (autospec).
    import hwval.doctor

    called = set()
    package = hwval.sources.nvml
    modules = [importlib.import_module(f"{package.__name__}.{m.name}") for m in pkgutil.iter_modules(package.__path__)]
    assert {m.__name__.rsplit(".", 1)[1] for m in modules} >= {"source", "devices", "visible", "errors", "detect"}
    for module in (*modules, hwval.doctor):
        called |= set(re.findall(r"\bpynvml\.(nvml[A-Za-z]+)\b", inspect.getsource(module)))
    assert {"nvmlInit", "nvmlDeviceGetPowerUsage", "nvmlDeviceGetFieldValues"} <= called
    real = {name: inspect.signature(getattr(pynvml, name)) for name in called}
    with SimNvml([]).patch() as mocks:
        assert called <= set(mocks), called - set(mocks)
        for name in called:
            assert getattr(pynvml, name) is mocks[name]
            assert inspect.signature(mocks[name]) == real[name], name
            with pytest.raises(TypeError):  # autospec: a call the real function refuses fails
                mocks[name](*range(len(real[name].parameters) + 1))


def test_a_uuid_prefix_naming_several_gpus_selects_none():
    devices = [NvmlDevice(0, "h0", "GPU-ab12"), NvmlDevice(1, "h1", "GPU-ab34"), NvmlDevice(2, "h2", "GPU-cd56")]
    gpus, notes = resolve_visible(parse_visible("GPU-cd,GPU-ab,0"), devices)
    assert [(g.cuda_index, g.device.uuid) for g in gpus] == [(0, "GPU-cd56")]
    assert notes == ["CUDA_VISIBLE_DEVICES entry 'GPU-ab' matches 2 GPUs: CUDA ignores it and every "
                     "entry after it"]

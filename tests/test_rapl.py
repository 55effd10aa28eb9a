"""RAPL source: discovery, exact unwrapping, glitches, warnings and errors, on trees built by the
powercap emulator's own tree builder (counters written by the test, time from a test clock)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hwval.emulators.powercap import build_tree, format_counter, plan_zones
from hwval.sources.base import SourceSpec, SourceUnavailable, TransientError
from hwval.sources.rapl.counter import MIN_POWER_INTERVAL_S
from hwval.sources.rapl.source import RaplSource, create
from hwval.sources.rapl.zones import discover
from hwval.sources.testing import RecordingContext
from conftest import StepClock


def make_tree(root: Path, packages=1, nested=("core", "dram"), psys=False, layout="sysfs",
              max_range_uj=999_999, max_power_w=100.0, start_uj=0):
    zones = plan_zones(packages, nested, psys, layout)
    build_tree(root, zones, max_range_uj, {z.zone: int(max_power_w * 1e6) for z in zones},
               start_uj, layout)
    return zones


def write_counter(root: Path, zone_rel: str, value_uj: int, max_range_uj: int = 999_999) -> None:
    (root / zone_rel / "energy_uj").write_bytes(format_counter(value_uj, max_range_uj))


def open_source(root: Path, clock=None, period_s=0.01, **options):
    spec = SourceSpec("rapl", str(root), "rapl", period_s, options)
    src = RaplSource(spec, clock_ns=clock or StepClock())
    ctx = RecordingContext(polled=True)
    infos = src.open(ctx)
    return src, ctx, infos


# -- discovery ---------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["sysfs", "nested"])
def test_discovery_names_are_stable_and_nested_domains_belong_to_their_package(tmp_path, layout):
    make_tree(tmp_path, packages=2, nested=("core", "uncore", "dram"), psys=True, layout=layout)
    domains = discover(tmp_path)
    got = {d.stream: (d.zone, d.scope, d.package, d.parent_stream) for d in domains}
    assert got == {
        "rapl_package_0": ("intel-rapl:0", "cpu_package", 0, None),
        "rapl_core_0": ("intel-rapl:0:0", "core", 0, "rapl_package_0"),
        "rapl_uncore_0": ("intel-rapl:0:1", "uncore", 0, "rapl_package_0"),
        "rapl_dram_0": ("intel-rapl:0:2", "dram", 0, None),
        "rapl_package_1": ("intel-rapl:1", "cpu_package", 1, None),
        "rapl_core_1": ("intel-rapl:1:0", "core", 1, "rapl_package_1"),
        "rapl_uncore_1": ("intel-rapl:1:1", "uncore", 1, "rapl_package_1"),
        "rapl_dram_1": ("intel-rapl:1:2", "dram", 1, None),
        "rapl_psys_0": ("intel-rapl:2", "psys", 0, None),
    }
    assert all(d.max_energy_range_uj == 999_999 and d.max_power_w == 100.0 for d in domains)


def test_mmio_duplicate_of_a_package_is_not_read_twice(tmp_path):
    make_tree(tmp_path, nested=())
    mmio = tmp_path / "intel-rapl-mmio:0"
    mmio.mkdir()
    (mmio / "name").write_text("package-0\n")
    (mmio / "max_energy_range_uj").write_text("999999\n")
    (mmio / "energy_uj").write_text("5\n")
    assert [d.zone for d in discover(tmp_path)] == ["intel-rapl:0"]


def test_two_dies_with_the_same_name_stay_two_streams(tmp_path):
    # AMD dual-die parts: two package zones; even if both call themselves package-0, neither may
    # be dropped or merged (codecarbon#788 doubled energy by summing them twice).
    make_tree(tmp_path, packages=2, nested=(), layout="nested")
    (tmp_path / "intel-rapl:1" / "name").write_text("package-0\n")
    streams = [d.stream for d in discover(tmp_path)]
    assert streams == ["rapl_package_0", "rapl_package_0_z1"]


def test_dual_package_tree_gives_one_stream_per_package_with_its_own_counter(tmp_path):
    make_tree(tmp_path, packages=2, nested=())
    clock = StepClock()
    src, ctx, infos = open_source(tmp_path, clock)
    assert [i.name for i in infos] == ["rapl_package_0", "rapl_package_1"]
    assert {i.scope for i in infos} == {"cpu_package"}
    src.read()
    write_counter(tmp_path, "devices/intel-rapl/intel-rapl:0", 300_000)
    write_counter(tmp_path, "devices/intel-rapl/intel-rapl:1", 100_000)
    clock.advance(0.01)
    out = src.read()
    assert out["rapl_package_0"]["energy_j"] == 0.3
    assert out["rapl_package_1"]["energy_j"] == 0.1
    assert out["rapl_package_0"]["power_w"] == pytest.approx(30.0)
    assert out["rapl_package_1"]["power_w"] == pytest.approx(10.0)


# -- unwrapping ------------------------------------------------------------------------------

def test_wraps_are_unwrapped_exactly_to_the_microjoule_over_several_wraps(tmp_path):
    max_range = 999_999  # modulus 1_000_000 uJ = 1 J
    # 20 W max: one wrap takes 50 ms at full power, longer than the 25 ms between reads.
    make_tree(tmp_path, nested=(), max_range_uj=max_range, max_power_w=20.0, start_uj=999_000)
    clock = StepClock()
    src, ctx, _ = open_source(tmp_path, clock)
    first = src.read()["rapl_package_0"]
    assert first["energy_j"] == 0.0 and math.isnan(first["power_w"]) and math.isnan(first["interval_s"])
    counter, total_uj = 999_000, 0
    # About 0.4 J per 25 ms read: a wrap every two or three reads, a dozen in all.
    for step_uj in [400_001, 399_999, 400_000, 1, 999_000, 0, 123_457] * 4:
        counter = (counter + step_uj) % (max_range + 1)
        total_uj += step_uj
        write_counter(tmp_path, "devices/intel-rapl/intel-rapl:0", counter)
        clock.advance(0.025)
        out = src.read()["rapl_package_0"]
        assert src.states[0].total_uj == total_uj  # exact integer sum
        assert out["energy_j"] == total_uj / 1e6
        assert out["interval_s"] == pytest.approx(0.025)
        assert out["power_w"] == pytest.approx(step_uj / 1e6 / 0.025)
    assert src.states[0].wraps >= 10
    assert ctx.events == []


def test_a_catch_up_read_right_after_a_late_one_keeps_the_energy_but_gives_no_power(tmp_path):
    # A late read followed at once by the next: over 50 us the counter moved by one ~1 ms update,
    # a quotient of ~20 kW (what made RAPL streams spike to kilowatts on a loaded host).
    make_tree(tmp_path, nested=(), max_range_uj=99_999_999, max_power_w=100.0, start_uj=0)
    clock = StepClock()
    src, ctx, _ = open_source(tmp_path, clock)
    src.read()
    for counter_uj, dt_s in ((300_000, 0.01), (301_000, 0.00005), (601_000, 0.01)):
        write_counter(tmp_path, "devices/intel-rapl/intel-rapl:0", counter_uj)
        clock.advance(dt_s)
        out = src.read()["rapl_package_0"]
        assert out["energy_j"] == counter_uj / 1e6 and out["interval_s"] == pytest.approx(dt_s)
        if dt_s < MIN_POWER_INTERVAL_S:
            assert math.isnan(out["power_w"])
        else:
            assert out["power_w"] == pytest.approx(30.0)
    assert ctx.events == []


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start=st.integers(0, 999_999),
       steps=st.lists(st.tuples(st.integers(0, 999_999), st.integers(10**6, 10**7)), min_size=1,
                      max_size=30))
def test_unwrapping_equals_the_sum_of_increments(tmp_path_factory, start, steps):
    # Any increment below one wrap (1 J), read within the wrap time at 100 W (10 ms), at a power
    # the domain can reach: the unwrapped energy is the exact sum.
    root = tmp_path_factory.mktemp("tree")
    make_tree(root, nested=(), max_range_uj=999_999, max_power_w=100.0, start_uj=start)
    clock = StepClock()
    src, ctx, _ = open_source(root, clock, period_s=0.001)
    src.read()
    counter, total = start, 0
    for step_uj, dt_ns in steps:
        dt_ns = max(dt_ns, step_uj * 10)  # keep the implied power <= 100 W
        counter = (counter + step_uj) % 1_000_000
        total += step_uj
        write_counter(root, "devices/intel-rapl/intel-rapl:0", counter)
        clock.t_ns += dt_ns
        out = src.read()["rapl_package_0"]
    assert src.states[0].total_uj == total
    assert out["energy_j"] == total / 1e6
    assert ctx.events == []
    src.close()


def test_counter_going_backwards_is_an_error_event_and_restarts_the_baseline(tmp_path):
    make_tree(tmp_path, nested=(), max_range_uj=99_999_999, max_power_w=100.0, start_uj=5_000_000)
    clock = StepClock()
    src, ctx, _ = open_source(tmp_path, clock)
    src.read()
    rel = "devices/intel-rapl/intel-rapl:0"
    write_counter(tmp_path, rel, 5_500_000, 99_999_999)
    clock.advance(0.01)
    assert src.read()["rapl_package_0"]["energy_j"] == 0.5
    # 1000 uJ backwards in 10 ms: a wrap would mean ~100 J in 10 ms, which no 100 W domain does.
    write_counter(tmp_path, rel, 5_499_000, 99_999_999)
    clock.advance(0.01)
    glitch = src.read()["rapl_package_0"]
    assert glitch["energy_j"] == 0.5 and math.isnan(glitch["power_w"])
    assert ctx.kinds() == ["counter_backwards"]
    name, stream, detail = ctx.events[0]
    assert (name, stream) == ("error", "rapl_package_0")
    assert detail["previous_uj"] == 5_500_000 and detail["value_uj"] == 5_499_000
    write_counter(tmp_path, rel, 5_699_000, 99_999_999)  # counted from the new baseline
    clock.advance(0.01)
    assert src.read()["rapl_package_0"]["energy_j"] == pytest.approx(0.7, abs=1e-12)


def test_real_wrap_after_a_long_interval_is_accepted(tmp_path):
    # The same backward step is a plausible wrap when enough time has passed.
    make_tree(tmp_path, nested=(), max_range_uj=999_999, max_power_w=100.0, start_uj=900_000)
    clock = StepClock()
    src, ctx, _ = open_source(tmp_path, clock, period_s=0.001)
    src.read()
    write_counter(tmp_path, "devices/intel-rapl/intel-rapl:0", 899_000)
    clock.advance(0.009)  # 0.999 J in 9 ms = 111 W < 2 x 100 W: a wrap
    out = src.read()["rapl_package_0"]
    assert out["energy_j"] == 0.999 and ctx.events == []


def test_period_too_slow_for_the_wrap_time_is_warned_about(tmp_path):
    make_tree(tmp_path, nested=(), max_range_uj=999_999, max_power_w=100.0)  # wraps every 10 ms
    src, ctx, infos = open_source(tmp_path, period_s=0.05)
    assert ctx.kinds() == ["period_too_slow"]
    assert ctx.events[0][2]["severity"] == "warning"
    assert any("wraps may be lost" in n for n in infos[0].notes)
    src.read()  # the interval check fires on a read spanning more than a wrap time
    src._clock.advance(0.05)
    src.read()
    assert ctx.error_streams == [("rapl_package_0", "interval_exceeds_wrap_time")]


def test_stream_descriptor_declares_units_semantics_and_identity(tmp_path):
    make_tree(tmp_path, nested=("core",), max_range_uj=262143328850, max_power_w=150.0)
    _, ctx, infos = open_source(tmp_path, period_s=0.02)
    pkg, core = infos
    keys = {k.name: k for k in pkg.keys}
    assert (keys["power_w"].unit, keys["power_w"].semantics, keys["power_w"].window_s) == ("W", "window_mean", 0.02)
    assert (keys["energy_j"].unit, keys["energy_j"].semantics) == ("J", "counter")
    assert keys["interval_s"].unit == "s"
    assert pkg.kind == "software" and pkg.driver == "rapl" and pkg.period_s == 0.02
    assert pkg.identity["max_energy_range_uj"] == 262143328850
    assert pkg.identity["max_power_w"] == 150.0
    assert pkg.identity["wrap_time_s_at_max_power"] == pytest.approx(262143.32885 / 150.0)
    assert core.identity["part_of"] == "rapl_package_0"
    assert any("do not add them up" in n for n in core.notes)
    assert ctx.events == []


def test_psys_is_marked_as_covering_the_other_domains(tmp_path):
    make_tree(tmp_path, packages=2, nested=("dram",), psys=True)
    _, _, infos = open_source(tmp_path)
    notes = {i.name: i.notes for i in infos}
    assert any("whole platform" in n for n in notes["rapl_psys_0"])
    assert not any("whole platform" in n or "do not add" in n for n in notes["rapl_package_1"])


def test_domains_option_selects_streams_and_rejects_unknown_names(tmp_path):
    make_tree(tmp_path, packages=2, nested=("core", "dram"))
    _, _, infos = open_source(tmp_path, domains="dram,rapl_package_1")
    assert [i.name for i in infos] == ["rapl_dram_0", "rapl_package_1", "rapl_dram_1"]
    with pytest.raises(SourceUnavailable, match="gpu.*available: rapl_package_0"):
        open_source(tmp_path, domains="gpu")
    with pytest.raises(ValueError, match="unknown option 'bogus'.*domains, max_power_w"):
        create(SourceSpec("rapl", str(tmp_path), "rapl", None, {"bogus": 1}))


def test_no_powercap_tree_says_rapl_is_absent(tmp_path):
    with pytest.raises(SourceUnavailable, match=r"RAPL is absent.*--no-rapl") as err:
        open_source(tmp_path / "nowhere")
    assert "\n" not in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceUnavailable, match="RAPL is absent"):
        open_source(tmp_path / "empty")


def test_one_failing_domain_is_counted_and_the_others_go_on(tmp_path):
    make_tree(tmp_path, nested=("dram",))
    clock = StepClock()
    src, ctx, _ = open_source(tmp_path, clock)
    src.read()
    (tmp_path / "devices/intel-rapl/intel-rapl:0/intel-rapl:0:0/energy_uj").write_bytes(b"garbage\n")
    write_counter(tmp_path, "devices/intel-rapl/intel-rapl:0", 1000)
    clock.advance(0.01)
    out = src.read()
    assert set(out) == {"rapl_package_0"} and out["rapl_package_0"]["energy_j"] == 0.001
    assert ctx.error_streams[0] == ("rapl_dram_0", "read_failed")
    (tmp_path / "devices/intel-rapl/intel-rapl:0/energy_uj").write_bytes(b"")
    with pytest.raises(TransientError, match="every domain failed"):
        src.read()


def test_reopen_after_close_starts_a_new_baseline(tmp_path):
    make_tree(tmp_path, nested=())
    clock = StepClock()
    src, ctx, _ = open_source(tmp_path, clock)
    src.read()
    write_counter(tmp_path, "devices/intel-rapl/intel-rapl:0", 2000)
    clock.advance(0.01)
    assert src.read()["rapl_package_0"]["energy_j"] == 0.002
    src.close()
    assert src.read() == {}
    src.open(ctx)
    assert src.read()["rapl_package_0"]["energy_j"] == 0.0

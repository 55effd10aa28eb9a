"""``emulated`` comes from what a device is, never from where it is: an emulator's identity
carries the mark, and a real-looking identity is real even on 127.0.0.1 or on a pty an emulator
made. The serial drivers whose protocol has no identity (esphome, cse7766, pzem004t) ask the
emulator registry about the terminal they opened: an emulator is emulated by any path, a real
meter is real behind any link, and a stale claim counts for nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import pytest
from click.testing import CliRunner

from hwval.benchmodel import Bench, MeterModel, PowerProfile
from hwval.cli import cli
from hwval.runfile.reader import open_run
from hwval.sources.base import SourceSpec
from hwval.sources.emulated import EMULATOR_MARK, says_emulated
from hwval.sources.registry import Registry
from hwval.sources.serial import emulator_identity
from hwval.sources.serial import esphome_codec
from hwval.sources.serial import pzem004t_codec as codec_pzem
from hwval.sources.serial.framing import FrameScanner
from hwval.sources.testing import RecordingContext
from plain_meter import PlainMeter
from test_cse7766_driver import chip_frame
from test_visa_support import serve  # noqa: F401  (fixture)

REAL_IDN = {"wt300": "YOKOGAWA,WT310,C2PH13047V,F1.03",
            "hmc8015": "Rohde&Schwarz,HMC8015,021123456,01.400",
            "n6705": "Keysight Technologies,N6705C,MY56004321,D.03.03.1234"}


def bench() -> Bench:
    return Bench(PowerProfile.parse("constant:100"))


def instrument(driver: str):
    if driver == "wt300":
        from hwval.emulators.wt300 import Wt300
        return Wt300(bench(), MeterModel(), update_s=0.1)
    if driver == "hmc8015":
        from hwval.emulators.hmc8015 import Hmc8015
        return Hmc8015(bench(), MeterModel())
    from hwval.emulators.n6705 import N6705
    return N6705(bench(), MeterModel())


def open_info(driver: str, resource: str):
    source = Registry().create(SourceSpec(driver, resource, "wall", None, {}))
    ctx = RecordingContext()
    try:
        (info,) = source.open(ctx)
    finally:
        ctx.stop.set()  # a final close (the analyzer's integrator is stopped)
        source.close()
    return info


def test_the_mark_is_found_in_any_field_and_only_there():
    assert says_emulated(["YOKOGAWA", "WT310", EMULATOR_MARK, "F1.03"])
    assert not says_emulated(["YOKOGAWA", "WT310", "C2PH13047V", "F1.03"])
    assert not says_emulated([])


@pytest.mark.parametrize("driver", sorted(REAL_IDN))
def test_analyzer_on_localhost_is_emulated_only_when_its_idn_says_so(serve, driver):
    emulator = serve(instrument(driver))
    assert "127.0.0.1" in emulator.resource
    info = open_info(driver, emulator.resource)
    assert EMULATOR_MARK in info.identity["idn"] and info.emulated
    # the same emulator answering a real instrument's *IDN? (as a real analyzer reached through
    # an SSH tunnel on 127.0.0.1 would): real, whatever the address
    tunnel = serve(instrument(driver), idn=REAL_IDN[driver])
    info = open_info(driver, tunnel.resource)
    assert info.identity["idn"] == REAL_IDN[driver] and not info.emulated


def test_tasmota_plug_is_emulated_from_its_status2_answer(monkeypatch):
    from hwval.emulators import tasmota

    with tasmota.TasmotaEmulator(bench(), MeterModel()) as emu:
        info = open_info("tasmota", emu.path)
    assert EMULATOR_MARK in info.identity["hardware"] and info.emulated
    monkeypatch.setattr(tasmota, "EMULATOR_MARK", "")  # answers as a real plug's firmware does
    with tasmota.TasmotaEmulator(bench(), MeterModel()) as emu:
        info = open_info("tasmota", emu.path)
    assert info.identity["hardware"].strip() == "ESP8266EX" and not info.emulated


def test_wattsup_is_emulated_from_its_version_answer(monkeypatch):
    from hwval.emulators import wattsup

    with wattsup.WattsUpEmulator(bench(), MeterModel()) as emu:
        info = open_info("wattsup", emu.path)
    assert info.identity["extra"] == EMULATOR_MARK and info.emulated
    monkeypatch.setattr(wattsup, "VERSION_FIELDS", wattsup.VERSION_FIELDS[:8])  # the documented #v
    with wattsup.WattsUpEmulator(bench(), MeterModel()) as emu:
        info = open_info("wattsup", emu.path)
    assert info.identity["fw_timestamp"] == "200712212301" and "extra" not in info.identity
    assert not info.emulated


# ---- serial drivers whose protocol carries no identity: the terminal decides -------------------
SERIAL_DRIVERS = ("esphome", "cse7766", "pzem004t")


def serial_emulator(driver: str):
    if driver == "esphome":
        from hwval.emulators.esphome import EspHomeEmulator
        return EspHomeEmulator(bench(), MeterModel(), interval_s=0.05)
    if driver == "cse7766":
        from hwval.emulators.cse7766 import Cse7766Emulator
        return Cse7766Emulator(bench(), MeterModel(), frame_period_s=0.05)
    from hwval.emulators.pzem004t import Pzem004tEmulator
    return Pzem004tEmulator(bench(), MeterModel())


def pzem_answer(data: bytes) -> bytes:
    """A PZEM-004T's replies to the driver's reads (holding 0x03, measurement 0x04)."""
    out = b""
    for frame in FrameScanner(codec_pzem.match_request).feed(data):
        req = codec_pzem.parse_request(frame)
        if req.function == codec_pzem.READ_HOLDING:
            out += codec_pzem.registers_reply(req.address, req.function, [2300, req.address])
        elif req.function == codec_pzem.READ_INPUT:
            m = codec_pzem.Measurement(voltage_v=230.0, current_a=0.5, power_w=100.0, energy_wh=7,
                                       frequency_hz=50.0, power_factor=0.87, alarm=False)
            out += codec_pzem.registers_reply(req.address, req.function,
                                              codec_pzem.encode_measurement(m))
    return out


def real_meter(driver: str, link: str) -> PlainMeter:
    """The protocol spoken on a pty the test opened: what a real meter looks like to a driver."""
    if driver == "esphome":
        return PlainMeter(link, stream=lambda: esphome_codec.encode_state("Power", 100.0, "W", 1))
    if driver == "cse7766":
        return PlainMeter(link, stream=chip_frame)
    return PlainMeter(link, answer=pzem_answer)


@pytest.fixture
def private_registry(tmp_path, monkeypatch):
    """A registry folder of this test's own (tests that damage or fake entries must not touch
    the one the other tests' emulators use)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(emulator_identity, "registry_root", lambda: str(tmp))
    return emulator_identity.registry_dir()


@pytest.mark.parametrize("route", ["link", "pts", "other_symlink"])
@pytest.mark.parametrize("driver", SERIAL_DRIVERS)
def test_a_serial_emulator_is_emulated_by_whatever_path_it_is_opened(tmp_path, driver, route):
    with serial_emulator(driver) as emu:
        pts = os.readlink(emu.path)
        if route == "link":
            resource = emu.path
        elif route == "pts":
            resource = pts
        else:  # an ordinary folder, named like nothing hwval makes
            resource = str(tmp_path / "meters" / "plug")
            os.makedirs(os.path.dirname(resource))
            os.symlink(pts, resource)
        info = open_info(driver, resource)
        entry = os.path.join(emulator_identity.registry_dir(),
                             emulator_identity.entry_name(os.stat(pts).st_rdev))
        assert os.path.isfile(entry)
    assert info.emulated
    assert info.identity["emulator"] == driver
    assert info.identity["emulator_process"]["pty"] == pts
    assert info.identity["emulator_process"]["pid"] == os.getpid()
    assert not os.path.exists(entry), "the emulator removes its entry when it unplugs"


@pytest.mark.parametrize("driver", SERIAL_DRIVERS)
def test_a_real_meter_behind_a_link_in_an_emulator_like_folder_is_real(tmp_path, driver):
    link = str(tmp_path / "hwval-emu-x" / "tty")
    with real_meter(driver, link):
        info = open_info(driver, link)
    assert not info.emulated and "emulator" not in info.identity
    # a fresh pty: this kernel refuses to reopen a pty at 8E1 (cse7766) once it was closed
    with real_meter(driver, None) as meter:
        assert not open_info(driver, meter.pts).emulated


def test_the_emulator_of_a_replugged_pty_is_found_and_the_old_entry_is_gone():
    with serial_emulator("esphome") as emu:
        old = os.readlink(emu.path)
        old_entry = os.path.join(emulator_identity.registry_dir(),
                                 emulator_identity.entry_name(os.stat(old).st_rdev))
        with open(emu.path, "rb"):  # keeps the old pty's number taken while it is replugged
            emu.unplug(0.2)
            assert emu.plugged.wait(5.0)
            assert not os.path.exists(old_entry)
            new = os.readlink(emu.path)
            info = open_info("esphome", emu.path)
    assert new != old
    assert info.emulated and info.identity["emulator_process"]["pty"] == new


def test_an_unplug_whose_link_cannot_be_removed_still_withdraws_the_claim(monkeypatch):
    emu = serial_emulator("esphome")
    emu.start()
    try:
        pts = os.readlink(emu.path)
        entry = os.path.join(emulator_identity.registry_dir(),
                             emulator_identity.entry_name(os.stat(pts).st_rdev))
        assert os.path.isfile(entry)
        real_unlink = os.unlink

        def refuse_link(path, *args, **kwargs):
            if path == emu.path:
                raise PermissionError(13, "refused by the test", path)
            return real_unlink(path, *args, **kwargs)

        monkeypatch.setattr(os, "unlink", refuse_link)
        emu._stop.set()
        emu._thread.join(timeout=5)
        with pytest.raises(PermissionError):
            emu._unplug()
        monkeypatch.undo()
        # the pty is closed and its number free: no claim may be left to call the next one emulated
        assert not os.path.exists(entry)
        assert emu._master is None and emu._slave is None
    finally:
        emu.stop()


def write_entry(folder: str, pts: str, **fields) -> str:
    entry = {"emulator": "esphome", "pid": os.getpid(),
             "pid_start": emulator_identity.process_start(os.getpid()), "pty": pts,
             "started_utc": "2026-12-03T00:00:00Z", **fields}
    os.makedirs(folder, mode=0o700, exist_ok=True)
    path = os.path.join(folder, emulator_identity.entry_name(os.stat(pts).st_rdev))
    with open(path, "w") as fh:
        json.dump(entry, fh)
    return path


KILLED_EMULATOR = """
import os, signal, sys, tempfile
from hwval.sources.serial import emulator_identity
emulator_identity.registry_root = lambda: sys.argv[2]
print(emulator_identity.register(int(sys.argv[1]), "esphome"), flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # dies without unregistering, as a killed emulator does
"""


def test_the_registry_does_not_follow_tmpdir(tmp_path, monkeypatch):
    """A capture started with another TMPDIR than the emulator's (a CI runner, sudo) must find
    the same registry, or it records a live emulator as a real meter."""
    before = emulator_identity.registry_dir()
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    assert tempfile.gettempdir() == str(tmp_path)
    assert emulator_identity.registry_dir() == before == f"/tmp/hwval-emulators-{os.getuid()}"
    with serial_emulator("esphome") as emu:
        assert open_info("esphome", emu.path).emulated


def test_a_stale_entry_of_a_killed_emulator_is_ignored_and_removed(tmp_path, private_registry):
    with real_meter("esphome", None) as meter:
        child = subprocess.run([sys.executable, "-c", KILLED_EMULATOR, str(meter.slave),
                                emulator_identity.registry_root()], pass_fds=(meter.slave,),
                               capture_output=True, text=True, timeout=60)
        assert child.returncode == -9, child.stderr
        path = child.stdout.strip()
        with open(path) as fh:  # the claim is there, its process is not
            assert json.load(fh)["pty"] == meter.pts
        info = open_info("esphome", meter.pts)
        assert not info.emulated and "emulator" not in info.identity
        assert not os.path.exists(path), "the stale entry was cleaned"


def test_the_entry_of_a_killed_emulator_its_parent_has_not_reaped_is_stale(private_registry):
    with real_meter("esphome", None) as meter:
        child = subprocess.Popen([sys.executable, "-c", KILLED_EMULATOR, str(meter.slave),
                                  emulator_identity.registry_root()], pass_fds=(meter.slave,),
                                 stdout=subprocess.PIPE, text=True)
        try:
            path = child.stdout.readline().strip()
            assert path, "the child registered nothing"
            deadline = time.monotonic() + 30.0
            while _state(child.pid) != "Z":  # killed, not reaped: its pid and start time remain
                assert time.monotonic() < deadline, _state(child.pid)
                time.sleep(0.01)
            assert not open_info("esphome", meter.pts).emulated
            assert not os.path.exists(path), "the zombie's entry was cleaned"
        finally:
            child.stdout.close()
            child.wait(timeout=30)


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0]


def test_an_entry_is_believed_only_for_the_live_process_on_the_very_pty(tmp_path, private_registry):
    with real_meter("esphome", None) as meter, real_meter("esphome", None) as other:
        # the test's own live process: believed (the control for the cases below)
        write_entry(private_registry, meter.pts)
        assert open_info("esphome", meter.pts).emulated
        # the pid was reused by another program (a different start time)
        write_entry(private_registry, meter.pts, pid_start=1)
        assert not open_info("esphome", meter.pts).emulated
        # the entry names another pty than the one its key says
        write_entry(private_registry, meter.pts, pty=other.pts)
        assert not open_info("esphome", meter.pts).emulated
        # a folder others can write to: anyone could have planted the claim
        write_entry(private_registry, meter.pts)
        os.chmod(private_registry, 0o777)
        assert not open_info("esphome", meter.pts).emulated
        os.chmod(private_registry, 0o700)
        assert open_info("esphome", meter.pts).emulated
        # an entry file others can write to: refused even in a private folder
        path = write_entry(private_registry, meter.pts)
        os.chmod(path, 0o666)
        assert not open_info("esphome", meter.pts).emulated
        # an entry that is a symlink to a well-formed entry elsewhere: not followed
        elsewhere = write_entry(str(tmp_path / "elsewhere"), meter.pts)
        os.unlink(path)
        os.symlink(elsewhere, path)
        assert not open_info("esphome", meter.pts).emulated


def test_an_emulator_refuses_a_registry_folder_others_can_write(private_registry):
    os.makedirs(private_registry, mode=0o700)
    os.chmod(private_registry, 0o777)
    result = CliRunner().invoke(cli, ["emulate", "esphome"])
    assert result.exit_code == 1, result.output
    assert f"emulator registry {private_registry} is not a folder" in result.output
    assert "Traceback" not in result.output


def test_a_real_capture_records_a_real_meter_behind_an_emulator_like_link_as_real(tmp_path):
    link = str(tmp_path / "hwval-emu-x" / "tty")
    out = tmp_path / "run.h5"
    with real_meter("cse7766", link):
        result = CliRunner().invoke(cli, ["capture", "--no-nvml", "--no-rapl", "-m",
                                          f"cse7766:{link}?name=wall", "--duration", "0.6",
                                          "-o", str(out)])
    assert result.exit_code == 0, result.output
    with open_run(str(out)) as run:
        attrs = dict(run.stream("wall").attrs)
        samples = len(run.stream("wall").t)
    assert samples >= 2 and not attrs["emulated"]
    assert "EMULATED" not in result.output


@pytest.mark.parametrize("argv", [["esphome", "--interval-s", "0"], ["tasmota", "--channels", "0"]])
def test_an_emulator_refusing_an_option_leaves_no_link_folder(private_registry, monkeypatch, argv):
    made = os.path.dirname(private_registry)  # the private temp folder of this test
    # where the base emulator's tempfile.mkdtemp makes link folders (the registry no longer
    # follows the temp folder, so it must be pointed here itself)
    monkeypatch.setattr(tempfile, "tempdir", made)
    result = CliRunner().invoke(cli, ["emulate", *argv])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert [n for n in os.listdir(made) if n.startswith("hwval-emu-")] == []


KILLED_MID_WRITE = """
import json, os, signal, sys
from hwval.sources.serial import emulator_identity
emulator_identity.registry_root = lambda: sys.argv[2]
print(os.getpid(), flush=True)
# dies after the temp file is made and before it is renamed, as an emulator killed mid-write does
json.dump = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
emulator_identity.register(int(sys.argv[1]), "esphome")
"""


#: The documented temp file prefix and age rule (docs/emulated.md), spelled out so that the tests
#: check what the docs promise rather than whatever the module says.
TEMP_PREFIX, TEMP_UNNAMED_STALE_S = ".new-", 60.0


def _temps(folder: str) -> list[str]:
    return sorted(n for n in os.listdir(folder) if n.startswith(TEMP_PREFIX))


def test_the_temp_file_of_an_emulator_killed_mid_write_is_removed_by_the_next(private_registry):
    with real_meter("esphome", None) as meter:
        child = subprocess.run([sys.executable, "-c", KILLED_MID_WRITE, str(meter.slave),
                                emulator_identity.registry_root()], pass_fds=(meter.slave,),
                               capture_output=True, text=True, timeout=60)
        assert child.returncode == -9, child.stderr
        (left,) = _temps(private_registry)  # the half-written entry of the killed writer
        path = emulator_identity.register(meter.slave, "esphome")
        try:
            assert _temps(private_registry) == []
            # named for its writer, so that the cleaner could tell it was dead
            assert left.startswith(f"{TEMP_PREFIX}{child.stdout.strip()}-"), left
            assert open_info("esphome", meter.pts).emulated  # the new entry is whole
        finally:
            emulator_identity.unregister(path)


def test_a_live_writers_temp_file_is_kept_and_an_unnamed_one_only_when_old(private_registry):
    live = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)
    try:
        start = emulator_identity.process_start(live.pid)
        assert start is not None
        os.makedirs(private_registry, mode=0o700)
        prefix = TEMP_PREFIX
        kept = [f"{prefix}{live.pid}-{start}-abc123", f"{prefix}old_format"]
        gone = [f"{prefix}{live.pid}-1-abc123",  # that pid's number, another process's start
                f"{prefix}stale_format"]
        for name in kept + gone:
            with open(os.path.join(private_registry, name), "w") as fh:
                fh.write('{"emulator": "esph')
        stale_s = time.time() - TEMP_UNNAMED_STALE_S - 30.0
        os.utime(os.path.join(private_registry, gone[1]), (stale_s, stale_s))
        with real_meter("esphome", None) as meter:
            path = emulator_identity.register(meter.slave, "esphome")
            emulator_identity.unregister(path)
        assert _temps(private_registry) == sorted(kept)
    finally:
        live.stdin.close()
        live.wait(timeout=30)

"""``hwval doctor``: findings on this bare machine, on an emulated powercap tree and a simulated
NVML fleet; it must never crash and must name a fix for everything unusable."""

from __future__ import annotations

import json
import subprocess
import sys
from unittest import mock

import pynvml
from click.testing import CliRunner
from serial.tools import list_ports

from hwval.commands.doctor import doctor
from hwval.doctor import Finding, _guarded, check_nvml, check_rapl, check_serial, check_visa, run_checks
from hwval.emulators.powercap import build_tree, plan_zones
from hwval.emulators.nvml_sim import SimGpu, SimNvml


def emulated_tree(root, packages=2):
    zones = plan_zones(packages, ("core", "dram"), psys=True)
    build_tree(root, zones, 262143328850, {z.zone: 100_000_000 for z in zones})


def test_bare_machine_reports_everything_missing_with_fixes(tmp_path):
    findings = run_checks(rapl_root=str(tmp_path / "no-powercap"), visa_timeout_s=5)
    assert {f.category for f in findings} == {"serial", "visa", "nvml", "rapl"}
    for f in findings:
        assert isinstance(f, Finding)
        assert f.usable or f.fix, f  # everything unusable says what to do
    rapl = [f for f in findings if f.category == "rapl"]
    assert len(rapl) == 1 and "RAPL is absent" in rapl[0].detail and "hwval emulate powercap" in rapl[0].fix


def test_rapl_domains_of_an_emulated_tree(tmp_path):
    emulated_tree(tmp_path)
    findings = check_rapl(str(tmp_path))
    assert [f.name for f in findings] == ["rapl_package_0", "rapl_core_0", "rapl_dram_0",
                                          "rapl_package_1", "rapl_core_1", "rapl_dram_1", "rapl_psys_0"]
    assert all(f.usable and f.resource == str(tmp_path) for f in findings)
    assert "part of rapl_package_0" in findings[1].detail


def test_nvml_gpus_of_a_simulated_driver():
    sim = SimNvml([SimGpu("GPU-aaaa"), SimGpu("GPU-bbbb", unsupported=frozenset({"power", "energy"}))])
    with sim.patch():
        findings = check_nvml()
    assert [(f.name, f.usable) for f in findings] == [("GPU-aaaa", True), ("GPU-bbbb", False)]
    assert "NVIDIA H100 80GB HBM3 (hopper)" in findings[0].detail and "energy counter" in findings[0].detail
    assert "NVML_ERROR_NOT_SUPPORTED" in findings[1].detail and findings[1].fix
    assert sim.initialised == 0


def test_nvml_without_driver_names_the_fix():
    sim = SimNvml([], init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    with sim.patch():
        (finding,) = check_nvml()
    assert not finding.usable and "no NVIDIA driver" in finding.detail
    assert "install the NVIDIA driver" in finding.fix


def test_no_serial_port_names_the_fix():
    with mock.patch.object(list_ports, "comports", autospec=True, return_value=[]):
        (finding,) = check_serial()
    assert not finding.usable and "hwval emulate tasmota" in finding.fix


def test_visa_listing_is_bounded_and_never_raises():
    findings = check_visa(timeout_s=5)
    assert findings and all(f.category == "visa" for f in findings)
    assert all(f.usable or "SOCKET" in f.fix or "pip install" in f.fix for f in findings)


def test_a_broken_check_becomes_a_finding():
    def broken():
        raise RuntimeError("boom")

    (finding,) = _guarded("nvml", broken)
    assert not finding.usable and "RuntimeError: boom" in finding.detail and finding.fix


def test_command_json_and_text(tmp_path):
    emulated_tree(tmp_path, packages=1)
    runner = CliRunner()
    result = runner.invoke(doctor, ["--rapl-root", str(tmp_path), "--json", "--only", "rapl",
                                    "--only", "nvml"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [d["category"] for d in data][0] == "nvml"
    assert [d["name"] for d in data if d["category"] == "rapl"] == ["rapl_package_0", "rapl_core_0",
                                                                    "rapl_dram_0", "rapl_psys_0"]
    result = runner.invoke(doctor, ["--rapl-root", str(tmp_path / "none"), "--only", "rapl"])
    assert result.exit_code == 0
    assert result.output.splitlines()[0] == "RAPL"
    assert "-- " in result.output and "fix: " in result.output


def test_hwval_doctor_command_line(tmp_path):
    emulated_tree(tmp_path, packages=1)
    result = subprocess.run([sys.executable, "-m", "hwval.cli", "doctor", "--rapl-root", str(tmp_path),
                             "--only", "rapl", "--json"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert [d["usable"] for d in json.loads(result.stdout)] == [True] * 4

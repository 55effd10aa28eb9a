"""What this machine offers for a capture: serial ports, VISA instruments, NVML GPUs, RAPL domains.

:func:`run_checks` returns :class:`Finding` values and never raises: every check runs on its own
and an unexpected failure becomes a finding that says so, so ``hwval doctor`` works on a machine
that has nothing at all (no ports, no VISA backend, no driver, no powercap tree).
"""

from __future__ import annotations

import grp
import os
import threading
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Callable

from hwval.sources.rapl.permissions import check_readable, permission_fixes
from hwval.sources.rapl.zones import DEFAULT_POWERCAP_ROOT, PowercapError, discover

VISA_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Finding:
    """One thing found (or missing). ``usable`` answers: can a capture use it as it is?

    ``resource`` is what to pass to ``-m DRIVER:RESOURCE`` (or the option) when usable; ``fix``
    says what to do when it is not.
    """

    category: str  # serial | visa | nvml | rapl
    name: str
    usable: bool
    detail: str = ""
    resource: str = ""
    fix: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _group_of(path: str) -> str:
    try:
        return grp.getgrgid(os.stat(path).st_gid).gr_name
    except (KeyError, OSError):
        return "the group owning it"


def check_serial() -> list[Finding]:
    from serial.tools import list_ports

    ports = list_ports.comports()
    if not ports:
        return [Finding("serial", "serial ports", False, "no serial port found",
                        fix="plug in the meter's USB-serial adapter and check 'dmesg' for ttyUSB/"
                            "ttyACM; to dry-run, 'hwval emulate tasmota' makes a pty")]
    out = []
    for port in ports:
        ids = f"USB {port.vid:04x}:{port.pid:04x}" if port.vid is not None else (port.hwid or "")
        detail = ", ".join(x for x in (port.description, ids, port.manufacturer, port.serial_number)
                           if x and x != "n/a")
        if os.access(port.device, os.R_OK | os.W_OK):
            out.append(Finding("serial", port.device, True, detail, resource=port.device))
        else:
            group = _group_of(port.device)
            out.append(Finding("serial", port.device, False, detail + "; not readable/writable",
                               fix=f"sudo usermod -aG {group} $USER (then log in again)"))
    return out


def check_visa(timeout_s: float = VISA_TIMEOUT_S) -> list[Finding]:
    """VISA instruments pyvisa-py can list (USB-TMC, GPIB, VXI-11 broadcast), within a timeout."""
    result: dict[str, Any] = {}

    def scan() -> None:
        try:
            import pyvisa

            # pyvisa-py warns about optional discovery packages (psutil, zeroconf) on every
            # listing; the finding below already says what was found.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                rm = pyvisa.ResourceManager("@py")
                try:
                    result["resources"] = list(rm.list_resources("?*::INSTR"))
                finally:
                    rm.close()
        except Exception as exc:  # any backend problem is a finding, not a crash
            result["error"] = f"{type(exc).__name__}: {exc}"

    thread = threading.Thread(target=scan, name="hwval-doctor-visa", daemon=True)
    thread.start()
    thread.join(timeout_s)
    socket_hint = ("raw-socket instruments (TCPIP::HOST::PORT::SOCKET) are never listed: "
                   "use their address directly")
    if thread.is_alive():
        return [Finding("visa", "VISA resources", False, f"listing did not finish in {timeout_s} s",
                        fix="check the network/USB instruments; " + socket_hint)]
    if "error" in result:
        return [Finding("visa", "VISA backend", False, result["error"],
                        fix="pip install pyvisa-py (and pyusb / gpib-ctypes for USB / GPIB)")]
    resources = result.get("resources", [])
    if not resources:
        return [Finding("visa", "VISA resources", False, "no VISA instrument found",
                        fix=socket_hint + "; to dry-run, 'hwval emulate wt300' serves one on 127.0.0.1")]
    return [Finding("visa", r, True, "listed by pyvisa-py", resource=r) for r in resources]


def check_nvml() -> list[Finding]:
    import pynvml

    from hwval.sources.nvml.devices import enumerate_devices, identity
    from hwval.sources.nvml.errors import error_name, init_error_message

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        message = init_error_message(exc)
        return [Finding("nvml", "NVIDIA GPUs", False, message.split(";")[0],
                        fix=message.split(";", 1)[1].strip() if ";" in message else "")]
    try:
        devices = enumerate_devices()
        if not devices:
            return [Finding("nvml", "NVIDIA GPUs", False, "driver loaded, no GPU found",
                            fix="check nvidia-smi and the PCIe slot / VM passthrough")]
        out = []
        for d in devices:
            ident = identity(d)
            supported = []
            for what, func in (("power", pynvml.nvmlDeviceGetPowerUsage),
                               ("energy counter", pynvml.nvmlDeviceGetTotalEnergyConsumption)):
                try:
                    func(d.handle)
                    supported.append(what)
                except pynvml.NVMLError as exc:
                    supported.append(f"no {what} ({error_name(exc)})")
            detail = (f"{ident['name']} ({ident['architecture']}), driver {ident['driver_version']}, "
                      f"nvml index {d.nvml_index}; " + ", ".join(supported))
            usable = any(s in ("power", "energy counter") for s in supported)
            out.append(Finding("nvml", d.uuid, usable, detail, resource=d.uuid,
                               fix="" if usable else "this board reports no power (MIG guest or old "
                                                     "GPU); measure it with a hardware meter"))
        return out
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass  # shutting down a driver that vanished meanwhile: nothing to release


def check_rapl(root: str = DEFAULT_POWERCAP_ROOT) -> list[Finding]:
    try:
        domains = discover(root)
    except PowercapError as exc:
        return [Finding("rapl", root, False, f"malformed powercap tree: {exc}",
                        fix="check the kernel's intel_rapl driver; report the tree layout")]
    if not domains:
        return [Finding("rapl", root, False, "RAPL is absent: no intel-rapl zones",
                        fix="needs an Intel or AMD Zen CPU with 'sudo modprobe intel_rapl_msr' (not "
                            "in most VMs); to dry-run: hwval emulate powercap")]
    out = []
    for d in domains:
        why = check_readable(d)
        detail = f"{d.zone} {d.name!r} -> stream {d.stream}"
        if d.parent_stream:
            detail += f" (part of {d.parent_stream})"
        if why is None:
            out.append(Finding("rapl", d.stream, True, detail, resource=str(root)))
        else:
            out.append(Finding("rapl", d.stream, False, f"{detail}; {why}",
                               fix="since Linux 5.10 energy_uj is root-only: " + permission_fixes(root)))
    return out


def _guarded(category: str, check: Callable[[], list[Finding]]) -> list[Finding]:
    try:
        return check()
    except Exception as exc:  # doctor must report, never crash: the check itself broke
        return [Finding(category, f"{category} check", False,
                        f"the check failed: {type(exc).__name__}: {exc}",
                        fix="report this with the output of 'hwval doctor --json'")]


def run_checks(rapl_root: str = DEFAULT_POWERCAP_ROOT, visa_timeout_s: float = VISA_TIMEOUT_S,
               categories: tuple[str, ...] = ("serial", "visa", "nvml", "rapl")) -> list[Finding]:
    """Every check in ``categories``, in that order."""
    checks = {"serial": check_serial, "visa": lambda: check_visa(visa_timeout_s),
              "nvml": check_nvml, "rapl": lambda: check_rapl(rapl_root)}
    findings: list[Finding] = []
    for category in categories:
        findings.extend(_guarded(category, checks[category]))
    return findings

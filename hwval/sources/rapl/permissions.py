"""Whether this process may read a RAPL counter, and every way to make it readable.

Since Linux 5.10 ``energy_uj`` is readable by root only (the fix for CVE-2020-8694/8695, power
side channels), so an ordinary user usually meets this first.

Sources: Intel security advisory INTEL-SA-00389; docs/measurement.md#rapl.
"""

from __future__ import annotations

import os

from hwval.sources.rapl.zones import RaplDomain


def check_readable(domain: RaplDomain) -> str | None:
    """``None`` when this process can read the domain's counter, else the reason.

    Reads the file rather than trusting ``os.access`` alone: root passes ``os.access`` for any
    mode, and a sysfs attribute may refuse the read itself.
    """
    path = domain.energy_path
    try:
        with open(path, "rb") as fh:
            text = fh.read(64)
        int(text)
    except PermissionError:
        return f"permission denied reading {path}"
    except FileNotFoundError:
        return f"{path} does not exist"
    except IsADirectoryError:
        return f"{path} is not a file"
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    except ValueError:
        return f"{path} does not hold an integer"
    return None


def permission_fixes(root: str | os.PathLike) -> str:
    """The ways to make RAPL counters readable without running everything as root."""
    return (
        # The rule is not package data (a wheel has no firmware_configs/): name where it lives and
        # what it does, so a wheel user can write the one line themselves.
        "install a udev rule that makes energy_uj group-readable (99-hwval-rapl.rules in the hwval "
        "repository's firmware_configs/udev/: on powercap add, chgrp power and chmod g+r "
        "energy_uj), or "
        f"'sudo chmod o+r {root}/intel-rapl:*/energy_uj {root}/intel-rapl:*/intel-rapl:*/energy_uj' "
        "until reboot, or run the capture through a privileged helper (sudo), or use perf_events "
        "power/energy-pkg/ with CAP_PERFMON"
    )


def unreadable_fix(root: str | os.PathLike, unreadable: list[str]) -> str:
    """One message naming what is unreadable and every way to fix it."""
    shown = "; ".join(unreadable[:3]) + (f" (+{len(unreadable) - 3} more)" if len(unreadable) > 3 else "")
    return (
        f"RAPL counters under {root} are not readable by this user ({shown}). "
        f"Since Linux 5.10 energy_uj is root-only (CVE-2020-8694). Fixes: {permission_fixes(root)}; "
        "or capture without RAPL (--no-rapl)."
    )

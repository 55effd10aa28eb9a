"""How a driver tells an hwval emulator from a real meter: by what the device says it is.

Every emulator puts :data:`EMULATOR_MARK` into the identity the protocol lets a device report
(``*IDN?`` serial field of the SCPI analyzers, the ``Hardware`` field of a Tasmota ``Status 2``
answer, a trailing field of the Watts Up? ``#v`` answer). Drivers set ``StreamInfo.emulated``
from the identity they read, never from the address: a real analyzer reached through an SSH
tunnel on 127.0.0.1 is not an emulator, and an emulator cannot pass for the instrument whose
identity it imitates (a calibration record keyed by that identity would be filed under it).
"""

from __future__ import annotations

from typing import Any, Iterable

#: The text every emulator's identity carries (a real meter's never does).
EMULATOR_MARK = "HWVAL-EMULATOR"


def says_emulated(fields: Iterable[Any]) -> bool:
    """True when any of the identity ``fields`` the device reported contains the mark."""
    return any(EMULATOR_MARK in str(field) for field in fields)


#: What an emulated meter is, in every output that names one (``hwval demo``, capture, sync, analyze).
EMULATED_WHAT = "protocol emulators fed by a bench model, not real instruments"


def emulated_note(names: Iterable[str]) -> str | None:
    """The one line saying which meters are emulated; None when none is."""
    names = list(names)
    return f"EMULATED meters: {', '.join(names)} ({EMULATED_WHAT})" if names else None

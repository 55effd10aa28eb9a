"""Pure codec of the Tasmota serial console: log lines, published messages, ENERGY objects.

Facts (docs/protocols/tasmota.md; sources: arendst/Tasmota support.ino (AddLog,
the ``HH:MM:SS.mmm`` prefix and SetOption130 heap), support_tasmota.ino / support_command.ino
(``CMD:`` echo, ``MQT:``/``RSL:`` publishing, ``(retained)``), xdrv_03_energy.ino (ENERGY key
order, resolutions, arrays for multi-channel plugs); tasmota/docs Commands.md):

* a log line is ``HH:MM:SS.mmm[-HEAP] <text>``; old firmware printed ``HH:MM:SS`` only;
* a published message is ``MQT: <topic> = <json>`` (``RSL:`` when MQTT is not connected; with
  MQTT off only the last topic segment is printed), optionally followed by `` (retained)``;
  firmware before 6.x printed ``MQTT:``, accepted too;
* ``Status 8`` / ``Status 10`` answer ``{"StatusSNS":{"Time":..., "ENERGY":{...}}}``; very old
  firmware answered ``Status 8`` with ``{"StatusPWR":{...}}``; ``tele/<topic>/SENSOR`` carries
  ``{"Time":..., "ENERGY":{...}}``;
* ENERGY values: Total/Yesterday/Today kWh, Power W, ApparentPower VA, ReactivePower var,
  Voltage V, Current A, Factor, Frequency Hz; each may be an array on multi-channel plugs.

Nothing here touches a port; :mod:`hwval.sources.serial.tasmota` is the device loop and
:mod:`hwval.emulators.tasmota` uses the encoders below.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

LOG_LINE = re.compile(
    r"^(?P<time>\d{2}:\d{2}:\d{2}(?:\.\d{3})?)(?:-(?P<heap>\d+))? (?P<text>.*)$")
MESSAGE = re.compile(
    r"^(?P<kind>MQT|MQTT|RSL): (?P<topic>\S+) = (?P<payload>.*?)(?P<retained> \(retained\))?$")
ECHO = re.compile(r"^CMD: (?P<command>.*)$")

#: ENERGY key -> (hwval key, factor to SI). Total is handled separately (kWh -> J, relative).
ENERGY_KEYS: Mapping[str, tuple[str, float]] = {
    "Power": ("power_w", 1.0),
    "ApparentPower": ("apparent_power_va", 1.0),
    "ReactivePower": ("reactive_power_var", 1.0),
    "Factor": ("power_factor", 1.0),
    "Frequency": ("frequency_hz", 1.0),
    "Voltage": ("voltage_v", 1.0),
    "Current": ("current_a", 1.0),
}
J_PER_KWH = 3.6e6


class TasmotaDecodeError(ValueError):
    """A line that claims to be a Tasmota message but cannot be decoded."""


@dataclass(frozen=True)
class LogLine:
    time: str
    heap_kb: int | None
    text: str


@dataclass(frozen=True)
class Message:
    """One published message: ``kind`` MQT/RSL, full ``topic``, its last segment ``name``
    (``STATUS10``, ``SENSOR``, ``RESULT``...), the decoded JSON ``payload``."""

    kind: str
    topic: str
    name: str
    payload: Any
    retained: bool


def parse_log_line(line: bytes | str) -> LogLine | None:
    """The parts of a console log line, or ``None`` if it is not one (garbage, boot noise)."""
    if isinstance(line, bytes):
        try:
            line = line.decode("ascii")
        except UnicodeDecodeError:
            return None
    m = LOG_LINE.match(line)
    if m is None:
        return None
    heap = m.group("heap")
    return LogLine(m.group("time"), int(heap) if heap else None, m.group("text"))


def parse_message(text: str) -> Message | None:
    """Decode ``MQT|RSL: topic = json``; ``None`` for other log text (echoes, info lines).

    Raises :class:`TasmotaDecodeError` when the line has the message form but its payload is not
    JSON (a damaged or cut line).
    """
    m = MESSAGE.match(text)
    if m is None:
        return None
    payload_text = m.group("payload")
    try:
        payload = json.loads(payload_text)
    except json.JSONDecodeError as exc:
        raise TasmotaDecodeError(f"malformed JSON in {m.group('topic')}: {exc.msg} "
                                 f"at column {exc.colno}") from None
    topic = m.group("topic")
    return Message(m.group("kind"), topic, topic.rsplit("/", 1)[-1].upper(), payload,
                   m.group("retained") is not None)


def energy_object(payload: Any) -> Mapping[str, Any] | None:
    """The ENERGY mapping of a Status 8/10 answer, an old ``StatusPWR`` answer or a SENSOR
    message; ``None`` when the payload has none (e.g. ``Status 10`` on old firmware)."""
    if not isinstance(payload, Mapping):
        return None
    for container in (payload.get("StatusSNS"), payload):
        if isinstance(container, Mapping) and isinstance(container.get("ENERGY"), Mapping):
            return container["ENERGY"]
    if isinstance(payload.get("StatusPWR"), Mapping):
        return payload["StatusPWR"]
    return None


def _pick(value: Any, channel: int, *, combine: str) -> float | None:
    """A number from a scalar or a per-channel array. ``channel`` is 1-based, 0 = all:
    ``combine`` is ``sum`` (power, current, energy) or ``mean`` (voltage, frequency)."""
    if isinstance(value, bool):
        raise TasmotaDecodeError(f"expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, Sequence) and not isinstance(value, str):
        numbers = [float(v) for v in value if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(numbers) != len(value) or not numbers:
            raise TasmotaDecodeError(f"expected an array of numbers, got {value!r}")
        if channel:
            if channel > len(numbers):
                raise TasmotaDecodeError(
                    f"channel {channel} requested but the plug reports {len(numbers)} channels")
            return numbers[channel - 1]
        return sum(numbers) if combine == "sum" else sum(numbers) / len(numbers)
    if value is None:
        return None
    raise TasmotaDecodeError(f"expected a number or an array, got {value!r}")


def decode_energy(energy: Mapping[str, Any], channel: int = 0) -> dict[str, float]:
    """SI values of an ENERGY object: ``power_w``, ``voltage_v``, ``current_a``,
    ``power_factor``, ``apparent_power_va``, ``reactive_power_var``, ``frequency_hz`` where
    present, and ``total_kwh`` (the plug's own energy counter, not yet relative).

    ``channel`` 1..N selects one channel of a multi-channel plug; 0 sums power, current and
    energy over channels (the plug's total) and averages voltage and frequency; the power
    factor is then recomputed as sum(P)/sum(S) when ApparentPower is given.
    """
    out: dict[str, float] = {}
    for name, (key, factor) in ENERGY_KEYS.items():
        if name not in energy:
            continue
        combine = "mean" if name in ("Voltage", "Frequency", "Factor") else "sum"
        value = _pick(energy[name], channel, combine=combine)
        if value is not None:
            out[key] = value * factor
    if not channel and isinstance(energy.get("Factor"), list) and isinstance(
            energy.get("ApparentPower"), list) and "power_w" in out:
        apparent = out.get("apparent_power_va", 0.0)
        out["power_factor"] = out["power_w"] / apparent if apparent > 0 else 0.0
    if "Total" in energy:
        total = _pick(energy["Total"], channel, combine="sum")
        if total is not None:
            out["total_kwh"] = total
    if "power_w" not in out:
        raise TasmotaDecodeError(f"ENERGY object without Power: {sorted(energy)}")
    for key, value in out.items():
        if not math.isfinite(value):
            raise TasmotaDecodeError(f"{key} is not finite: {value}")
    return out


def firmware_identity(payload: Any) -> dict[str, str]:
    """Identity from a ``Status 2`` answer ``{"StatusFWR":{"Version":...}}`` (empty if none)."""
    if not isinstance(payload, Mapping) or not isinstance(payload.get("StatusFWR"), Mapping):
        return {}
    fwr = payload["StatusFWR"]
    keys = ("Version", "BuildDateTime", "Core", "SDK", "Hardware")
    return {k.lower(): str(fwr[k]) for k in keys if k in fwr}


# ---- encoders (the emulator speaks through these; tests round-trip them) --------------------

def format_number(value: float, decimals: int) -> str:
    """Tasmota's dtostrfd: fixed decimals, integers without a point."""
    return f"{value:.{decimals}f}"


def encode_energy(values: Mapping[str, float | Sequence[float]], res: Mapping[str, int],
                  *, period_wh: float | None = None, total_start: str | None = None,
                  with_frequency: bool = False) -> str:
    """The ENERGY JSON text in firmware key order.

    ``values`` holds ``total_kwh, yesterday_kwh, today_kwh, power_w, apparent_power_va,
    reactive_power_var, power_factor, voltage_v, current_a`` (and ``frequency_hz`` when
    ``with_frequency``); each a number or a per-channel list. ``res`` holds the resolutions
    ``WattRes VoltRes AmpRes EnergyRes FreqRes`` (decimals).
    """
    def num(key: str, decimals: int) -> str:
        value = values[key]
        if isinstance(value, (list, tuple)):
            return "[" + ",".join(format_number(v, decimals) for v in value) + "]"
        return format_number(value, decimals)

    parts = []
    if total_start is not None:
        parts.append(f'"TotalStartTime":"{total_start}"')
    parts += [f'"Total":{num("total_kwh", res["EnergyRes"])}',
              f'"Yesterday":{num("yesterday_kwh", res["EnergyRes"])}',
              f'"Today":{num("today_kwh", res["EnergyRes"])}']
    if period_wh is not None:
        parts.append(f'"Period":{format_number(period_wh, max(0, res["EnergyRes"] - 3))}')
    parts += [f'"Power":{num("power_w", res["WattRes"])}',
              f'"ApparentPower":{num("apparent_power_va", res["WattRes"])}',
              f'"ReactivePower":{num("reactive_power_var", res["WattRes"])}',
              f'"Factor":{num("power_factor", 2)}']
    if with_frequency:
        parts.append(f'"Frequency":{num("frequency_hz", res.get("FreqRes", 0))}')
    parts += [f'"Voltage":{num("voltage_v", res["VoltRes"])}',
              f'"Current":{num("current_a", res["AmpRes"])}']
    return "{" + ",".join(parts) + "}"


def format_log_line(clock_s: float, text: str, heap_kb: int | None = None,
                    with_ms: bool = True) -> bytes:
    """``HH:MM:SS.mmm[-HEAP] text\\r\\n`` for ``clock_s`` seconds since local midnight."""
    ms_total = int(clock_s * 1000) % (24 * 3600 * 1000)
    h, rem = divmod(ms_total, 3600 * 1000)
    m, rem = divmod(rem, 60 * 1000)
    s, ms = divmod(rem, 1000)
    stamp = f"{h:02d}:{m:02d}:{s:02d}" + (f".{ms:03d}" if with_ms else "")
    if heap_kb is not None:
        stamp += f"-{heap_kb:03d}"
    return f"{stamp} {text}\r\n".encode("ascii")


def format_message(kind: str, topic: str, payload_json: str, retained: bool = False) -> str:
    return f"{kind}: {topic} = {payload_json}" + (" (retained)" if retained else "")

"""Keysight N6705C DC power analyzer emulator (one high-power module measuring a DC rail) on a
raw TCP socket.

``hwval emulate n6705 [--port N] [--rail-v 12]`` prints ``-m n6705:TCPIP::127.0.0.1::PORT::SOCKET``.

Behaviour (docs/protocols/n6705.md, from the Keysight N6705C user's and programming guides):
``SENS:SWE:POIN n,(@ch)`` and ``SENS:SWE:TINT t,(@ch)`` (rounded up to the 20.48 us time base)
set the array acquisition; ``MEAS:ARR:POW|VOLT|CURR? (@ch)`` acquires ``n`` samples ``t`` apart,
starting when the command arrives, and answers once the acquisition is complete;
``FETC:ARR:...? (@ch)`` answers the previous acquisition again. Sample ``i`` is the bench's true
power at ``start + i*t`` (the digitizer samples the rail). ``FORM ASC`` gives a comma list,
``FORM REAL`` an IEEE 754 single-precision definite-length block (``FORM:BORD NORM|SWAP``).
Error queue: ``SYST:ERR?`` (``+0,"No error"``).
"""

from __future__ import annotations

import math
import re
import time

import click
import numpy as np

from hwval.benchmodel import Bench, MeterModel
from hwval.emulators.options import announce, bench_options
from hwval.emulators.scpi_server import (ILLEGAL_PARAMETER, Faults, Instrument, ScpiError,
                                         ScpiServer, fault_options, parse_float, serve_until_signal)

TIME_BASE_S = 20.48e-6
MAX_POINTS = 512_000
#: Longest acquisition the emulator performs (points x interval), to keep it responsive.
MAX_ACQUISITION_S = 30.0
CURRENT_RANGE_A = 50.0


def parse_channels(arg: str) -> list[int]:
    """``(@1)``, ``(@1,3)``, ``(@1:2)`` -> channel numbers 1..4."""
    m = re.fullmatch(r"\(@([0-9,:]+)\)", arg.replace(" ", ""))
    if not m:
        raise ScpiError(*ILLEGAL_PARAMETER)
    channels: list[int] = []
    for part in m.group(1).split(","):
        lo, _, hi = part.partition(":")
        channels.extend(range(int(lo), int(hi or lo) + 1))
    if not channels or any(not 1 <= c <= 4 for c in channels):
        raise ScpiError(*ILLEGAL_PARAMETER)
    return channels


class N6705(Instrument):
    error_query = "SYSTem:ERRor"
    no_error = '+0,"No error"'

    def __init__(self, bench: Bench, model: MeterModel, rail_v: float = 12.0) -> None:
        super().__init__()
        self.bench, self.model, self.rail_v = bench, model, rail_v
        self.idn = "Keysight Technologies,N6705C,HWVAL-EMULATOR,D.03.03.1234"
        self.points = {c: 1024 for c in range(1, 5)}
        self.interval_s = {c: TIME_BASE_S for c in range(1, 5)}
        self.format = "ASCII"
        self.big_endian = True
        #: Last acquisition per channel: (start monotonic ns, interval s, power array W).
        self.last: dict[int, tuple[int, float, np.ndarray]] = {}
        #: Every acquisition made (start ns, interval s, points), for tests and operators.
        self.acquisitions: list[tuple[int, float, int]] = []
        self.rng = np.random.default_rng(bench.seed)
        self.add("[SENSe]:SWEep:POINts", self._points)
        self.add("[SENSe]:SWEep:TINTerval", self._tint)
        self.add("FORMat[:DATA]", self._format)
        self.add("FORMat:BORDer", self._border)
        for quantity in ("POWer", "VOLTage", "CURRent"):
            self.add(f"MEASure:ARRay:{quantity}[:DC]", self._array(quantity[:4].upper(), True), data=True)
            self.add(f"FETCh:ARRay:{quantity}[:DC]", self._array(quantity[:4].upper(), False), data=True)

    def _points(self, args: list[str], suffixes: list[int], query: bool) -> str | None:
        if query:
            return str(self.points[parse_channels(args[-1])[0]])
        if len(args) != 2:
            raise ScpiError(-109, "Missing parameter")
        n = int(parse_float(args[0]))
        if not 1 <= n <= MAX_POINTS:
            raise ScpiError(*ILLEGAL_PARAMETER)
        for c in parse_channels(args[1]):
            self.points[c] = n
        return None

    def _tint(self, args: list[str], suffixes: list[int], query: bool) -> str | None:
        if query:
            return f"{self.interval_s[parse_channels(args[-1])[0]]:+.6E}"
        if len(args) != 2:
            raise ScpiError(-109, "Missing parameter")
        value = parse_float(args[0])
        if not TIME_BASE_S * 0.999 <= value <= 40000.0:
            raise ScpiError(*ILLEGAL_PARAMETER)
        # the module rounds the interval up to its time base
        rounded = math.ceil(value / TIME_BASE_S - 1e-9) * TIME_BASE_S
        for c in parse_channels(args[1]):
            self.interval_s[c] = rounded
        return None

    def _format(self, args: list[str], suffixes: list[int], query: bool) -> str | None:
        if query:
            return "REAL" if self.format == "REAL" else "ASC"
        word = (args[0] if args else "").upper()
        if word in ("ASC", "ASCII", "ASCII,0"):
            self.format = "ASCII"
        elif word in ("REAL", "REAL,32"):
            self.format = "REAL"
        else:
            raise ScpiError(*ILLEGAL_PARAMETER)
        return None

    def _border(self, args: list[str], suffixes: list[int], query: bool) -> str | None:
        if query:
            return "NORM" if self.big_endian else "SWAP"
        word = (args[0] if args else "").upper()
        if word not in ("NORM", "NORMAL", "SWAP", "SWAPPED", "SWAPP"):
            raise ScpiError(*ILLEGAL_PARAMETER)
        self.big_endian = word.startswith("NORM")
        return None

    def _acquire(self, channel: int) -> tuple[int, float, np.ndarray]:
        n, tint = self.points[channel], self.interval_s[channel]
        start_ns = time.monotonic_ns()
        duration = min(n * tint, MAX_ACQUISITION_S)
        # the digitizer needs the whole record before it can answer
        time.sleep(max(0.0, duration - (time.monotonic_ns() - start_ns) / 1e9))
        t = self.bench.t_s(start_ns) + np.arange(n) * tint - self.model.latency_s
        power = np.asarray(self.bench.profile.power_w(t), dtype=float)
        power = self.model.gain * power + self.model.offset_w
        if self.model.noise_w:
            power = power + self.rng.normal(0.0, self.model.noise_w, n)
        if self.model.quantum_w:
            power = np.round(power / self.model.quantum_w) * self.model.quantum_w
        self.acquisitions.append((start_ns, tint, n))
        return start_ns, tint, np.maximum(power, 0.0)

    def _array(self, quantity: str, measure: bool):
        def handler(args: list[str], suffixes: list[int], query: bool) -> str | bytes:
            if not query or not args:
                raise ScpiError(*ILLEGAL_PARAMETER)
            channel = parse_channels(args[0])[0]
            if measure or channel not in self.last:
                self.last[channel] = self._acquire(channel)
            power = self.last[channel][2]
            if quantity == "POWE":
                data = power
            elif quantity == "VOLT":
                data = np.full_like(power, self.rail_v)
            else:
                data = power / self.rail_v
            if np.any(power / self.rail_v > CURRENT_RANGE_A * 1.02):
                data = np.where(power / self.rail_v > CURRENT_RANGE_A * 1.02, 9.91e37, data)
            if self.format == "REAL":
                payload = data.astype(">f4" if self.big_endian else "<f4").tobytes()
                length = str(len(payload))
                return f"#{len(length)}{length}".encode("ascii") + payload
            return ",".join(f"{v:+.6E}" for v in data)
        return handler


@click.command("n6705")
@bench_options()
@fault_options
@click.option("--rail-v", type=float, default=12.0, show_default=True, help="DC rail voltage")
def cli(bench: Bench, model: MeterModel, ready_file: str | None, port: int, delay_s: float,
        stall_after: int | None, drop_after: int | None, malformed_every: int, idn: str | None,
        log_file: str | None, rail_v: float) -> None:
    """Emulate a Keysight N6705C DC power analyzer (array measurements) on a TCP socket.

    \b
    Example:
      hwval emulate n6705 --port 0 --profile bursty
      hwval capture -m 'n6705:TCPIP::127.0.0.1::PORT::SOCKET?points=500&interval_s=0.001' --duration 5 -o dc.h5
    """
    if rail_v <= 0:
        raise click.BadParameter("must be > 0 V", param_hint="--rail-v")
    server = ScpiServer(N6705(bench, model, rail_v), port=port,
                        faults=Faults(delay_s, stall_after, drop_after, malformed_every, idn),
                        log_path=log_file)
    serve_until_signal(server, lambda: announce("n6705", server.resource, bench, ready_file))

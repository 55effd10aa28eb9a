"""Rohde & Schwarz HMC8015 power analyzer emulator on a raw TCP socket (the real one listens
on port 5025).

``hwval emulate hmc8015 [--port N]`` prints ``-m hmc8015:TCPIP::127.0.0.1::PORT::SOCKET``.

Behaviour (docs/protocols/hmc8015.md; sources: R&S HMC8015 SCPI manual, Rohde-Schwarz/Examples,
UniStuttgart-VISUS/power-overwhelming ``hmc8015_instrument.cpp``): ``CHAN1:MEAS:FUNC f1,f2,...``
selects the functions ``CHAN1:MEAS:DATA?`` returns, comma-separated in that order (default
URMS,IRMS,P,FPLL,URANge,IRANge,S,Q,LAMBda,PHI). The display cells
``VIEW:NUM:PAGE<n>:CELL<m>:FUNC <f>`` (page size ``VIEW:NUM:PAGE<n>:SIZE 6|10``) only change
what the screen shows. Values refresh every 100 ms (each the mean of the bench's true power
over the last 100 ms; the 100 ms refresh is UNVERIFIED, see
docs/protocols/hmc8015.md#refresh-interval); ``CHAN1:ACQ:VOLT:RANG[:AUTO]`` /
``CHAN1:ACQ:CURR:RANG[:AUTO]`` select ranges, a value above 140 % of a fixed range is
over-range (``INF``). Error queue: ``SYST:ERR?``.
"""

from __future__ import annotations

import math

import click

from hwval.benchmodel import Bench, MeterModel
from hwval.emulators.options import announce, bench_options
from hwval.emulators.scpi_server import (ILLEGAL_PARAMETER, Faults, Instrument, ScpiError,
                                         ScpiServer, UpdateClock, fault_options, parse_bool,
                                         parse_float, serve_until_signal)

UPDATE_S = 0.1
VOLTAGE_RANGES_V = (5.0, 15.0, 30.0, 60.0, 150.0, 300.0, 600.0)
CURRENT_RANGES_A = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0)
OVERRANGE = 1.4
FUNCTIONS = {"P": "P", "S": "S", "Q": "Q", "LAMBDA": "LAMBDA", "LAMB": "LAMBDA", "PHI": "PHI",
             "FU": "FU", "FI": "FI", "URMS": "URMS", "UAVG": "UAVG", "IRMS": "IRMS", "IAVG": "IAVG",
             "UTHD": "UTHD", "ITHD": "ITHD", "FPLL": "FPLL", "TIME": "TIME", "WH": "WH", "WHP": "WHP",
             "WHM": "WHM", "AH": "AH", "AHP": "AHP", "AHM": "AHM", "URANGE": "URANGE",
             "URAN": "URANGE", "IRANGE": "IRANGE", "IRAN": "IRANGE", "EMPTY": "EMPTY", "EMPT": "EMPTY"}
DEFAULT_CELLS = ["URMS", "IRMS", "P", "S", "Q", "LAMBDA", "FU", "FI", "UTHD", "ITHD"]
#: What CHAN1:MEAS:DATA? returns until CHAN1:MEAS:FUNC says otherwise (power-overwhelming notes).
DEFAULT_MEASURED = ["URMS", "IRMS", "P", "FPLL", "URANGE", "IRANGE", "S", "Q", "LAMBDA", "PHI"]


class Hmc8015(Instrument):
    error_query = "SYSTem:ERRor"

    def __init__(self, bench: Bench, model: MeterModel) -> None:
        super().__init__()
        self.bench, self.model = bench, model
        self.idn = "Rohde&Schwarz,HMC8015,HWVAL-EMULATOR,01.400"
        self.clock = UpdateClock(UPDATE_S)
        self.pages = {p: list(DEFAULT_CELLS) for p in range(1, 5)}
        self.page_size = {p: 6 for p in range(1, 5)}
        self.auto = {"voltage": True, "current": True}
        self.fixed = {"voltage": 300.0, "current": 2.0}
        self.add("VIEW:NUMeric:PAGE#:CELL#:FUNCtion", self._cell)
        self.add("VIEW:NUMeric:PAGE#:SIZE", self._size)
        self.measured = list(DEFAULT_MEASURED)
        self.add("CHANnel#:MEASurement:FUNCtions", self._functions)
        self.add("CHANnel#:MEASurement:DATA", self._data, data=True)
        for which, node in (("voltage", "VOLTage"), ("current", "CURRent")):
            self.add(f"CHANnel#:ACQuisition:{node}:RANGe:AUTO", self._auto(which))
            self.add(f"CHANnel#:ACQuisition:{node}:RANGe[:VALue]", self._range(which))

    def _cell(self, args: list[str], suffixes: list[int], query: bool) -> str | None:
        page, cell = suffixes
        if not (1 <= page <= 4 and 1 <= cell <= 10):
            raise ScpiError(*ILLEGAL_PARAMETER)
        if query:
            return self.pages[page][cell - 1]
        func = FUNCTIONS.get(args[0].upper() if args else "")
        if func is None:
            raise ScpiError(*ILLEGAL_PARAMETER)
        self.pages[page][cell - 1] = func
        return None

    def _functions(self, args: list[str], suffixes: list[int], query: bool) -> str | None:
        if suffixes[0] != 1:
            raise ScpiError(*ILLEGAL_PARAMETER)  # one power channel
        if query:
            return ",".join(self.measured)
        funcs = [FUNCTIONS.get(a.strip().upper()) for a in args]
        if not 1 <= len(funcs) <= 10 or None in funcs:
            raise ScpiError(*ILLEGAL_PARAMETER)
        self.measured = [f for f in funcs if f is not None]
        return None

    def _size(self, args: list[str], suffixes: list[int], query: bool) -> str | None:
        page = suffixes[0]
        if query:
            return str(self.page_size[page])
        size = int(parse_float(args[0] if args else ""))
        if size not in (6, 10):
            raise ScpiError(*ILLEGAL_PARAMETER)
        self.page_size[page] = size
        return None

    def _auto(self, which: str):
        def handler(args: list[str], suffixes: list[int], query: bool) -> str | None:
            if suffixes[0] != 1:
                raise ScpiError(*ILLEGAL_PARAMETER)
            if query:
                return "1" if self.auto[which] else "0"
            self.auto[which] = parse_bool(args[0] if args else "")
            return None
        return handler

    def _range(self, which: str):
        ranges = VOLTAGE_RANGES_V if which == "voltage" else CURRENT_RANGES_A

        def handler(args: list[str], suffixes: list[int], query: bool) -> str | None:
            if suffixes[0] != 1:
                raise ScpiError(*ILLEGAL_PARAMETER)
            if query:
                return f"{self._ranges(self.clock.index(self.bench.t_s()))[which]:+.4E}"
            value = parse_float(args[0] if args else "", {"V": 1.0, "MA": 1e-3, "A": 1.0})
            match = [r for r in ranges if math.isclose(r, value, rel_tol=1e-6)]
            if not match:
                raise ScpiError(*ILLEGAL_PARAMETER)
            self.fixed[which], self.auto[which] = match[0], False
            return None
        return handler

    def _power_w(self, index: int) -> float:
        start, end = self.clock.window(index)
        mean = self.bench.profile.mean_w(start - self.model.latency_s, end - self.model.latency_s)
        value = max(self.model.gain * mean + self.model.offset_w, 0.0)
        if self.model.quantum_w:
            value = round(value / self.model.quantum_w) * self.model.quantum_w
        return value

    def _ranges(self, index: int) -> dict[str, float]:
        power = self._power_w(index)
        need = {"voltage": (self.bench.voltage_v, VOLTAGE_RANGES_V),
                "current": (self.bench.current_a(power), CURRENT_RANGES_A)}
        return {w: (next((r for r in rs if r >= v), rs[-1]) if self.auto[w] else self.fixed[w])
                for w, (v, rs) in need.items()}

    def _data(self, args: list[str], suffixes: list[int], query: bool) -> str:
        if not query or suffixes[0] != 1:
            raise ScpiError(*ILLEGAL_PARAMETER)
        index = self.clock.index(self.bench.t_s())
        self.clock.served.append(index)
        power = self._power_w(index)
        volts, amps, pf = self.bench.voltage_v, self.bench.current_a(power), self.bench.power_factor
        ranges = self._ranges(index)
        over_v = volts > ranges["voltage"] * OVERRANGE
        over_i = amps > ranges["current"] * OVERRANGE
        apparent = volts * amps
        values = {"URMS": volts, "UAVG": volts * 0.9, "IRMS": amps, "IAVG": amps * 0.9, "P": power,
                  "S": apparent, "Q": math.sqrt(max(apparent ** 2 - power ** 2, 0.0)),
                  "LAMBDA": pf, "PHI": math.degrees(math.acos(pf)), "FU": 50.0, "FI": 50.0,
                  "FPLL": 50.0, "UTHD": 0.0, "ITHD": 0.0, "URANGE": ranges["voltage"],
                  "IRANGE": ranges["current"]}
        for key in ("URMS", "UAVG", "P", "S", "Q"):
            if over_v:
                values[key] = math.inf
        for key in ("IRMS", "IAVG", "P", "S", "Q"):
            if over_i:
                values[key] = math.inf
        return ",".join("INF" if math.isinf(values.get(f, 0.0)) else f"{values.get(f, 0.0):+.4E}"
                        for f in self.measured if f != "EMPTY")


@click.command("hmc8015")
@bench_options(window_s=0.1)
@fault_options
def cli(bench: Bench, model: MeterModel, ready_file: str | None, port: int, delay_s: float,
        stall_after: int | None, drop_after: int | None, malformed_every: int, idn: str | None,
        log_file: str | None) -> None:
    """Emulate a Rohde & Schwarz HMC8015 power analyzer on a TCP socket.

    \b
    Example:
      hwval emulate hmc8015 --port 5025
      hwval capture -m hmc8015:TCPIP::127.0.0.1::5025::SOCKET --duration 10 -o hmc.h5
    """
    server = ScpiServer(Hmc8015(bench, model), port=port,
                        faults=Faults(delay_s, stall_after, drop_after, malformed_every, idn),
                        log_path=log_file)
    serve_until_signal(server, lambda: announce("hmc8015", server.resource, bench, ready_file))

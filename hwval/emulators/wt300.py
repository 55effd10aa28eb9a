"""Yokogawa WT300E-family emulator (WT310 by default) on a raw TCP socket.

``hwval emulate wt300 [--port N] [--model WT310] [--profile idle-load] [faults]`` prints
``-m wt300:TCPIP::127.0.0.1::PORT::SOCKET``.

Behaviour (facts in docs/protocols/wt300.md; sources: Yokogawa WT310E user's manual, communication
commands; intel/yoko-tool ``yokolibs/_wt310.py``; mlcommons/power-dev):

- numeric values change only at each update (``:SAMP:RATE`` or ``:RATE``, 0.1..5 s); value ``n``
  is the mean of the bench's true power over the ``n``-th interval (``bench.profile.mean_w``),
  seen through the meter model's gain, offset, noise and quantum;
- the UPD condition is high while the numeric data are being updated (the last
  ``UPDATING_S`` before each update boundary; the new values are readable from the boundary);
  ``:STAT:FILT1 RISE|FALL|BOTH|NEVer`` chooses which edges set ``:STAT:EESR?`` bit 0, which
  reading clears (so FALL means "new data ready": yoko-tool waits on the falling edge; RISE
  flags an update whose values are not readable yet); bit 1 while integrating;
- ``:NUM:NORM:NUM``/``ITEM<x> <func>,<elem>`` select what ``:NUM:NORM:VAL?`` returns
  (``NAN`` when a function has no data, ``INF`` when over-range);
- ranges: auto (smallest range holding the value) or fixed; a value above 140 % of a fixed
  range is over-range; changing ranges or the rate while integrating is error 813;
- integration: ``:INTEG:MODE/TIM/STAR/STOP/RES/STAT?``; ``WH`` is the exact integral of the
  measured power from start, updated at each update, exact at stop.
"""

from __future__ import annotations

import math
import random

import click

from hwval.benchmodel import Bench, MeterModel
from hwval.emulators.options import announce, bench_options
from hwval.emulators.scpi_server import (ILLEGAL_PARAMETER, Faults, Instrument, ScpiError,
                                         ScpiServer, UpdateClock, fault_options, format_nr3,
                                         parse_bool, parse_float, serve_until_signal)

RATES_S = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
VOLTAGE_RANGES_V = (15.0, 30.0, 60.0, 150.0, 300.0, 600.0)
#: WT310/WT310E direct input (5 mA..20 A); the WT332/WT333 elements have the 0.5..20 A ones.
CURRENT_RANGES_A = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0)
CURRENT_RANGES_MULTI_A = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0)
OVERRANGE = 1.4
NOT_DURING_INTEGRATION = (813, "Not allowed during integration")
FUNCTIONS = {"U", "I", "P", "S", "Q", "LAMBDA", "LAMB", "PHI", "FU", "FI", "UPPEAK", "UPP",
             "UMPEAK", "UMP", "IPPEAK", "IPP", "IMPEAK", "IMP", "PPPEAK", "PPP", "PMPEAK", "PMP",
             "WH", "WHP", "WHM", "AH", "AHP", "AHM", "TIME", "MATH", "UTHD", "ITHD"}
TIME_UNITS = {"MS": 1e-3, "S": 1.0}
#: How long UPD stays high before the new values are readable (a model value, UNVERIFIED on
#: real units; what drivers depend on is the order: rising edge, then data, then falling edge;
#: docs/protocols/wt300.md#update-flag).
UPDATING_S = 0.01
#: Transition filter values (``:STATus:FILTer<x>``); NEVER until set (assumed power-on value:
#: yoko-tool sets every filter explicitly rather than relying on it).
FILTERS = {"RISE": "RISE", "FALL": "FALL", "BOTH": "BOTH", "NEVER": "NEVER", "NEV": "NEVER"}


class Wt300(Instrument):
    error_query = ":STATus:ERRor"

    def __init__(self, bench: Bench, model: MeterModel, model_name: str = "WT310",
                 rate_headers: str = "both", elements: int = 1, update_s: float = 0.5) -> None:
        super().__init__()
        self.bench, self.model = bench, model
        self.idn = f"YOKOGAWA,{model_name},HWVAL-EMULATOR,F1.03"
        self.elements = elements
        self.current_ranges_a = CURRENT_RANGES_A if elements == 1 else CURRENT_RANGES_MULTI_A
        self.clock = UpdateClock(update_s)
        self.items: dict[int, tuple[str, str]] = {1: ("U", "1"), 2: ("I", "1"), 3: ("P", "1")}
        self.n_items = 3
        self.voltage_auto = self.current_auto = True
        self.voltage_range_v, self.current_range_a = 300.0, 2.0
        self.integ_state = "RESET"
        self.integ_start_s: float | None = None
        self.integ_stop_s: float | None = None
        self.integ_done_j = 0.0
        #: (bench start s, bench stop s) of each integration run, for tests and operators.
        self.integrations: list[tuple[float, float | None]] = []
        #: Bench time of the last :STAT:EESR? read (or *CLS): edges after it set bit 0.
        self.eesr_read_s = bench.t_s()
        self.filters: dict[int, str] = {}
        self.settings: dict[str, str] = {}
        self.add(":STATus:EESR", self._eesr)
        self.add(":STATus:QMESsage", self._qmes)
        self.add(":STATus:FILTer#", self._filter)
        self.add(":COMMunicate:HEADer", self._setting("header"))
        self.add(":COMMunicate:VERBose", self._setting("verbose"))
        self.add(":SYSTem:COMMunicate:COMMand", self._setting("command_set"))
        self.add(":NUMeric:FORMat", self._format)
        self.add(":NUMeric[:NORMal]:NUMber", self._number)
        self.add(":NUMeric[:NORMal]:ITEM#", self._item)
        self.add(":NUMeric[:NORMal]:VALue", self._value, data=True)
        if rate_headers in ("both", "samp"):
            self.add(":SAMPle:RATE", self._rate)
        if rate_headers in ("both", "rate"):
            self.add(":RATE", self._rate)
        self.add(":INPut:VOLTage:RANGe", self._range("voltage"))
        self.add(":INPut:VOLTage:AUTO", self._auto("voltage"))
        self.add(":INPut:CURRent:RANGe", self._range("current"))
        self.add(":INPut:CURRent:AUTO", self._auto("current"))
        self.add(":INPut:MODE", self._setting("input_mode"))
        self.add(":INPut:CFACtor", self._setting("crest_factor"))
        self.add(":INTEGrate:MODE", self._setting("integ_mode"))
        self.add(":INTEGrate:TIMer", self._setting("integ_timer"))
        self.add(":INTEGrate:STARt", self._integ_start)
        self.add(":INTEGrate:STOP", self._integ_stop)
        self.add(":INTEGrate:RESet", self._integ_reset)
        self.add(":INTEGrate:STATe", lambda a, s, q: self.integ_state if q else None)

    # -- generic settings ----------------------------------------------------------------
    def _setting(self, name: str):
        def handler(args: list[str], suffixes: list[int], query: bool) -> str | None:
            if query:
                return self.settings.get(name, "0")
            if not args:
                raise ScpiError(-109, "Missing parameter")
            self.settings[name] = ",".join(args).upper()
            return None
        return handler

    def _qmes(self, args: list[str], suffixes: list[int], query: bool) -> str | None:
        if query:
            return "1" if self.error_messages else "0"
        self.error_messages = parse_bool(args[0] if args else "")
        return None

    def _cls(self, args: list[str], suffixes: list[int], query: bool) -> None:
        super()._cls(args, suffixes, query)
        self.eesr_read_s = self.bench.t_s()

    def _filter(self, args: list[str], suffixes: list[int], query: bool) -> str | None:
        x = suffixes[0]
        if not 1 <= x <= 16:
            raise ScpiError(*ILLEGAL_PARAMETER)
        if query:
            return self.filters.get(x, "NEVER")
        value = FILTERS.get(args[0].upper() if args else "")
        if value is None:
            raise ScpiError(*ILLEGAL_PARAMETER)
        self.filters[x] = value
        return None

    def updating_s(self) -> float:
        return min(UPDATING_S, self.clock.interval_s / 5)

    def _upd_edges(self, t0_s: float, t1_s: float) -> tuple[int, int]:
        """(rising, falling) UPD edges in bench seconds ``(t0, t1]``: UPD rises ``updating_s``
        before each update boundary and falls at the boundary, when the new values are ready."""
        period, lead = self.clock.interval_s, self.updating_s()
        rising = int((t1_s + lead) // period) - int((t0_s + lead) // period)
        falling = int(t1_s // period) - int(t0_s // period)
        return rising, falling

    def _eesr(self, args: list[str], suffixes: list[int], query: bool) -> str:
        now = self.bench.t_s()
        rising, falling = self._upd_edges(self.eesr_read_s, now)
        self.eesr_read_s = now
        edges = {"RISE": rising, "FALL": falling, "BOTH": rising + falling, "NEVER": 0}
        bits = 1 if edges[self.filters.get(1, "NEVER")] else 0
        if self.integ_state == "START":
            bits |= 2
        return str(bits)

    def _format(self, args: list[str], suffixes: list[int], query: bool) -> str | None:
        if query:
            return "ASCII"
        if not args or args[0].upper() not in ("ASCII", "ASC"):
            raise ScpiError(*ILLEGAL_PARAMETER)  # only the ASCII form is emulated
        return None

    def _number(self, args: list[str], suffixes: list[int], query: bool) -> str | None:
        if query:
            return str(self.n_items)
        n = int(parse_float(args[0])) if args else 0
        if not 1 <= n <= 255:
            raise ScpiError(*ILLEGAL_PARAMETER)
        self.n_items = n
        return None

    def _item(self, args: list[str], suffixes: list[int], query: bool) -> str | None:
        x = suffixes[0]
        if not 1 <= x <= 255:
            raise ScpiError(*ILLEGAL_PARAMETER)
        if query:
            func, elem = self.items.get(x, ("U", "1"))
            return f"{func},{elem}"
        if len(args) < 1 or args[0].upper() not in FUNCTIONS:
            raise ScpiError(*ILLEGAL_PARAMETER)
        elem = args[1].upper() if len(args) > 1 else "1"
        if elem not in {str(e) for e in range(1, self.elements + 1)} | {"SIGMA", "SIGM"}:
            raise ScpiError(*ILLEGAL_PARAMETER)
        self.items[x] = (args[0].upper(), elem)
        return None

    def _rate(self, args: list[str], suffixes: list[int], query: bool) -> str | None:
        if query:
            return format_nr3(self.clock.interval_s)
        if self.integ_state == "START":
            raise ScpiError(*NOT_DURING_INTEGRATION)
        value = parse_float(args[0] if args else "", TIME_UNITS)
        match = [r for r in RATES_S if math.isclose(r, value, rel_tol=1e-6)]
        if not match:
            raise ScpiError(*ILLEGAL_PARAMETER)
        self.clock = UpdateClock(match[0], self.clock.served)
        self.eesr_read_s = self.bench.t_s()
        return None

    def _range(self, which: str):
        ranges = VOLTAGE_RANGES_V if which == "voltage" else self.current_ranges_a

        def handler(args: list[str], suffixes: list[int], query: bool) -> str | None:
            if query:
                return format_nr3(self.ranges_now()[0 if which == "voltage" else 1])
            if self.integ_state == "START":
                raise ScpiError(*NOT_DURING_INTEGRATION)
            value = parse_float(args[0] if args else "", {"V": 1.0, "MA": 1e-3, "A": 1.0})
            match = [r for r in ranges if math.isclose(r, value, rel_tol=1e-6)]
            if not match:
                raise ScpiError(*ILLEGAL_PARAMETER)
            setattr(self, f"{which}_range_{'v' if which == 'voltage' else 'a'}", match[0])
            setattr(self, f"{which}_auto", False)  # a fixed range switches auto ranging off
            return None
        return handler

    def _auto(self, which: str):
        def handler(args: list[str], suffixes: list[int], query: bool) -> str | None:
            if query:
                return "1" if getattr(self, f"{which}_auto") else "0"
            if self.integ_state == "START":
                raise ScpiError(*NOT_DURING_INTEGRATION)
            setattr(self, f"{which}_auto", parse_bool(args[0] if args else ""))
            return None
        return handler

    # -- integration -----------------------------------------------------------------------
    def _measured_energy_j(self, t0_s: float, t1_s: float) -> float:
        """The integrator sums measured power: gain and offset apply, noise averages out."""
        return self.model.metered_energy_j(self.bench.profile, t0_s, t1_s)

    def _integ_start(self, args: list[str], suffixes: list[int], query: bool) -> None:
        if self.integ_state == "START":
            raise ScpiError(*NOT_DURING_INTEGRATION)
        self.integ_start_s = self.bench.t_s()
        self.integ_state = "START"
        self.integrations.append((self.integ_start_s, None))

    def _integ_stop(self, args: list[str], suffixes: list[int], query: bool) -> None:
        if self.integ_state != "START":
            raise ScpiError(814, "Integration is not running")
        stop_s = self.bench.t_s()
        assert self.integ_start_s is not None
        self.integ_done_j += self._measured_energy_j(self.integ_start_s, stop_s)
        self.integrations[-1] = (self.integ_start_s, stop_s)
        self.integ_stop_s = stop_s
        self.integ_state = "STOP"

    def _integ_reset(self, args: list[str], suffixes: list[int], query: bool) -> None:
        if self.integ_state == "START":
            raise ScpiError(*NOT_DURING_INTEGRATION)
        self.integ_state = "RESET"
        self.integ_done_j = 0.0
        self.integ_start_s = self.integ_stop_s = None

    def integrated_wh(self, index: int) -> float:
        if self.integ_state == "RESET" or self.integ_start_s is None:
            return 0.0
        if self.integ_state == "START":
            end = max(self.integ_start_s, self.clock.window(index)[1])
            return (self.integ_done_j + self._measured_energy_j(self.integ_start_s, end)) / 3600.0
        return self.integ_done_j / 3600.0

    # -- measurements ----------------------------------------------------------------------
    def power_w(self, index: int) -> float:
        """Displayed active power of update ``index`` (all elements together)."""
        start, end = self.clock.window(index)
        shift = self.model.latency_s
        mean = self.bench.profile.mean_w(start - shift, end - shift)
        value = self.model.gain * mean + self.model.offset_w
        if self.model.noise_w:
            # seeded per update: asking twice for the same update gives the same value
            value += random.Random(hash((self.bench.seed, index))).gauss(0.0, self.model.noise_w)
        if self.model.quantum_w:
            value = round(value / self.model.quantum_w) * self.model.quantum_w
        return max(value, 0.0)

    def ranges_now(self, index: int | None = None) -> tuple[float, float]:
        if index is None:
            index = self.clock.index(self.bench.t_s())
        power = self.power_w(index) / self.elements
        volts = self.bench.voltage_v
        amps = self.bench.current_a(power)
        v_range = _smallest(VOLTAGE_RANGES_V, volts) if self.voltage_auto else self.voltage_range_v
        i_range = _smallest(self.current_ranges_a, amps) if self.current_auto else self.current_range_a
        return v_range, i_range

    def values(self, index: int) -> dict[str, float]:
        """Every function for element 1 (= each element: the load is split evenly)."""
        power = self.power_w(index) / self.elements
        volts = self.bench.voltage_v
        amps = self.bench.current_a(power)
        pf = self.bench.power_factor
        apparent = volts * amps
        v_range, i_range = self.ranges_now(index)
        over_v = volts > v_range * OVERRANGE
        over_i = amps > i_range * OVERRANGE
        inf = math.inf
        out = {
            "U": inf if over_v else volts, "I": inf if over_i else amps,
            "P": inf if over_v or over_i else power, "S": apparent,
            "Q": math.sqrt(max(apparent ** 2 - power ** 2, 0.0)), "LAMBDA": pf,
            "PHI": math.degrees(math.acos(pf)), "FU": 50.0, "FI": 50.0,
            "WH": self.integrated_wh(index) / self.elements, "TIME": self._integ_time_s(),
        }
        out["LAMB"] = out["LAMBDA"]
        return out

    def _integ_time_s(self) -> float:
        if self.integ_start_s is None:
            return 0.0
        end = self.integ_stop_s if self.integ_state == "STOP" else self.bench.t_s()
        return max(end - self.integ_start_s, 0.0)

    def _value(self, args: list[str], suffixes: list[int], query: bool) -> str:
        if not query:
            raise ScpiError(-113, "Undefined header")
        index = self.clock.index(self.bench.t_s())
        self.clock.served.append(index)
        per_element = self.values(index)
        wanted = range(1, self.n_items + 1)
        if args:
            x = int(parse_float(args[0]))
            if not 1 <= x <= self.n_items:
                raise ScpiError(*ILLEGAL_PARAMETER)
            wanted = range(x, x + 1)
        fields = []
        for x in wanted:
            func, elem = self.items.get(x, ("U", "1"))
            value = per_element.get(func, math.nan)
            if elem.startswith("SIGM") and func in ("P", "S", "Q", "WH", "I"):
                value *= self.elements if func != "I" else 1.0
            fields.append(format_nr3(value))
        return ",".join(fields)


def _smallest(ranges: tuple[float, ...], value: float) -> float:
    for r in ranges:
        if r >= value:
            return r
    return ranges[-1]


@click.command("wt300")
@bench_options(window_s=0.5)
@fault_options
@click.option("--model-name", "model_name", default="WT310", show_default=True,
              help="model in *IDN? (WT310, WT310E, WT332, WT333)")
@click.option("--rate-header", type=click.Choice(["both", "samp", "rate"]), default="both",
              show_default=True, help="which update-rate header the firmware knows")
@click.option("--update-s", type=float, default=0.5, show_default=True, help="initial update interval")
def cli(bench: Bench, model: MeterModel, ready_file: str | None, port: int, delay_s: float,
        stall_after: int | None, drop_after: int | None, malformed_every: int, idn: str | None,
        log_file: str | None, model_name: str, rate_header: str, update_s: float) -> None:
    """Emulate a Yokogawa WT310 (WT300E family) power meter on a TCP socket.

    \b
    Example:
      hwval emulate wt300 --port 0 --profile idle-load
      hwval capture -m 'wt300:TCPIP::127.0.0.1::PORT::SOCKET?update_s=0.25' --duration 10 -o wt.h5
    """
    if update_s not in RATES_S:
        raise click.BadParameter(f"must be one of {', '.join(map(str, RATES_S))}", param_hint="--update-s")
    elements = 3 if model_name.upper().startswith("WT333") else 2 if model_name.upper().startswith("WT332") else 1
    instrument = Wt300(bench, model, model_name, rate_header, elements, update_s)
    faults = Faults(delay_s, stall_after, drop_after, malformed_every, idn)
    server = ScpiServer(instrument, port=port, faults=faults, log_path=log_file)
    serve_until_signal(server, lambda: announce("wt300", server.resource, bench, ready_file))

"""CSE7766 driver: the energy chip of the Sonoff POW R2/R3 and S31, read directly at 4800 8E1.

Transport :mod:`hwval.sources.serial.port`, codec :mod:`.cse7766_codec`, and this device loop:
a streaming source that reads the chip's 24-byte frames (about 10 per second), resynchronising
byte by byte on garbage (libsigrok's generic serial loop; Tasmota ``xnrg_02_cse7766.ino`` and
esphome ``cse7766`` do the same), and emits one reading per frame that carries a power value.
Facts: docs/protocols/cse7766.md (ChipSea CSE7766 datasheet, Tasmota and ESPHome sources).

Mapping to SI (decided here, documented for the operator):

- Chip level: ``V = Vparam / Vcycle``, ``I = Iparam / Icycle``, ``P = Pparam / Pcycle``. The
  parameters are the chip's factory calibration, so these are already volts, amperes and watts
  (the checked frame of docs/protocols/cse7766.md#physical-values gives 226.6 V). A chip that
  reports 0xAA "not calibrated" is decoded with Tasmota's default coefficients and counted as
  ``not_calibrated``.
- Operator calibration: options ``voltage_gain``, ``current_gain``, ``power_gain`` (default
  1.0) multiply the chip-level values (``power_gain`` also scales energy). To carry over a
  Tasmota calibration: ``voltage_gain = VoltageCal * 100 / Vparam``, ``current_gain =
  CurrentCal / Iparam``, ``power_gain = PowerCal * 1000 / Pparam`` (Tasmota replaces the chip
  coefficients by its calibration values; the parameters are visible in ``identity``).
- ``power_w``: emitted only from frames where the chip says P was updated (adj bit 4), or as
  0 W on a P-cycle overflow (state 0xF2: no load). Frames without a new power value are not
  emitted; after ``zero_after_invalid`` (128, Tasmota's debounce) such frames in a row the load
  is taken as zero and 0 W is emitted per frame. The value is the mean over one CF pulse period,
  ``Pparam`` microjoules / P (89 ms at 60 W, 1.1 s at 5 W): semantics ``window_mean``,
  ``window_s`` unknown (load-dependent).
- ``voltage_v`` / ``current_a`` are included when valid in that frame (otherwise NaN).
- ``energy_j``: from the 16-bit CF pulse counter, one pulse = ``Pparam`` uJ; deltas are taken
  modulo 2**16 between consecutive frames (across a reconnect too, so energy used while
  unplugged is kept, provided the counter wrapped less than once: 65536 pulses is about 23 min
  at 250 W), 0 at the first emitted reading (frames before it, such as ones without a new
  power value, move the counter but not the origin). A delta implying more than ``max_power_w`` (5500 W, the POW
  R3 rating Tasmota checks against) is counted as ``energy_jump`` and re-baselined.

Frames whose state says a V/I cycle overflow or coefficient error are unusable (the datasheet
calls their values invalid) and are counted as ``abnormal_state``. Garbage, bad checksums and
truncated frames are counted (``garbage``, ``bad_checksum``, ``truncated``). Nothing parseable
for ``silence_s`` (3 s) raises :class:`TransientError` with the likely cause (wrong baud rate if
bytes arrive, wiring/power if none), which the recorder records as a gap.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

from hwval.sources.base import (
    Key, SourceContext, SourceSpec, SourceUnavailable, StreamInfo, TransientError,
)
from hwval.sources.options import DriverOptions, Option
from hwval.sources.serial import cse7766_codec as codec
from hwval.sources.serial.common import require_positive
from hwval.sources.serial.emulator_identity import emulated_identity
from hwval.sources.serial.framing import FrameScanner
from hwval.sources.serial.port import (
    SilenceWatch, close_quietly, line_settings, open_serial, read_available,
)

DRIVER = "cse7766"
FRAME_PERIOD_S = 0.1
#: Tasmota's CSE_MAX_INVALID_POWER: invalid-power frames in a row before the load counts as 0 W.
ZERO_AFTER_INVALID_FRAMES = 128

OPTIONS = DriverOptions(DRIVER, "a CSE7766 metering chip's 4800 8E1 frame stream (Sonoff POW R2/R3, S31)",
                        "a serial port (/dev/ttyUSB0)", (
    Option("voltage_gain", float, 1.0, "calibration factor applied to voltage", gt=0),
    Option("current_gain", float, 1.0, "calibration factor applied to current", gt=0),
    Option("power_gain", float, 1.0, "calibration factor applied to power and energy", gt=0),
    Option("zero_after_invalid", int, ZERO_AFTER_INVALID_FRAMES,
           "invalid-power frames in a row before the load counts as 0 W (Tasmota's rule)", ge=1),
    Option("max_power_w", float, 5500.0, "a larger energy step is a counter jump, re-baselined",
           "W", gt=0),
    Option("silence_s", float, 3.0, "no frame for this long is a gap (and a likely wiring fault)",
           "s", gt=0),
    Option("open_timeout_s", float, 2.0, "wait this long for a first frame at open", "s", gt=0),
    Option("baudrate", int, 4800, "line speed (the chip's is fixed at 4800)", "baud", gt=0),
))


class Cse7766Source:
    """Streaming source for one CSE7766 chip (see module docstring)."""

    mode = "streaming"

    def __init__(self, spec: SourceSpec, options: Mapping[str, Any] | None = None) -> None:
        options = OPTIONS.parse(spec) if options is None else options
        self.spec = spec
        self.resource = spec.resource
        self.stream = spec.name
        #: informative only: the chip decides the cadence (about one frame per 100 ms)
        self.period_s = spec.period_s if spec.period_s is not None else FRAME_PERIOD_S
        self.voltage_gain = options["voltage_gain"]
        self.current_gain = options["current_gain"]
        self.power_gain = options["power_gain"]
        self.zero_after_invalid = options["zero_after_invalid"]
        self.max_power_w = options["max_power_w"]
        self.silence_s = options["silence_s"]
        self.open_timeout_s = options["open_timeout_s"]
        self.baudrate = options["baudrate"]
        require_positive(DRIVER, period_s=self.period_s)
        self.settings = line_settings(self.baudrate, 8, "E", 1)
        self._port = None
        self._ctx: SourceContext | None = None
        self._scanner = FrameScanner(self._match)
        self._skipping = False
        self._pending: list[tuple[int, bytes]] = []
        self._bytes_since_frame = 0
        # energy state survives reconnects: the chip's counter keeps running while unplugged
        self._cf_last: int | None = None
        self._cf_last_ns = 0
        self._energy_j = 0.0
        #: counted energy at the first *emitted* reading: frames decoded before it (without a
        #: new power value, or before a gap) move the counter but must not start it above 0
        self._energy_origin_j: float | None = None
        self._invalid_run = 0

    # ------------------------------------------------------------------------------ framing
    def _match(self, buf: bytes) -> int:
        """Codec matcher plus fault classification (each skip episode counted once)."""
        n = codec.match_frame(buf)
        if n > 0:
            self._skipping = False
        elif n < 0:
            header = (len(buf) >= codec.FRAME_LENGTH and codec.is_state_byte(buf[0])
                      and buf[1] == codec.HEADER)
            if header:
                # a frame header whose checksum fails: cut short by the next frame's header,
                # or damaged in place
                cut = any(codec.is_state_byte(buf[k]) and buf[k + 1] == codec.HEADER
                          for k in range(2, min(len(buf) - 1, codec.FRAME_LENGTH)))
                if cut:
                    self._count("truncated", "a frame was cut short; resynchronised")
                else:
                    self._count("bad_checksum", f"frame checksum {buf[23]:#04x} != "
                                                f"{codec.checksum(buf):#04x}; resynchronised")
            elif not self._skipping:
                self._count("garbage", "bytes that start no frame; resynchronising")
            self._skipping = True
        return n

    def _count(self, kind: str, message: str) -> None:
        if self._ctx is not None:
            self._ctx.count_error(self.stream, kind, message)

    # ------------------------------------------------------------------------------ lifecycle
    def open(self, ctx: SourceContext) -> list[StreamInfo]:
        """Open the port and wait (``open_timeout_s``) for one valid frame: a chip that is not
        there, or a wrong line setting, is refused before the capture starts."""
        self._ctx = ctx
        self._scanner.clear()
        self._skipping = False
        self._port = open_serial(self.resource, baudrate=self.baudrate, parity="E",
                                 timeout_s=0.05)
        received = 0
        deadline = time.monotonic() + self.open_timeout_s
        try:
            while time.monotonic() < deadline:
                data = read_available(self._port, self.resource)
                t_ns = time.monotonic_ns()
                received += len(data)
                frames = self._scanner.feed(data) if data else []
                if frames:
                    self._pending = [(t_ns, f) for f in frames]
                    break
            else:
                raise SourceUnavailable(self._silence_message(self.open_timeout_s, received))
        except BaseException:
            self.close()
            raise
        first = codec.decode_frame(self._pending[0][1])
        return [self._stream_info(first)]

    def close(self) -> None:
        close_quietly(self._port)
        self._port = None

    def _silence_message(self, silent_s: float, received: int) -> str:
        if received:
            baud = ("" if self.baudrate == 4800 else
                    f"; baudrate={self.baudrate} differs from the chip's fixed 4800 8E1")
            return (SilenceWatch.message(self.resource, silent_s, self.settings)
                    + f": {received} bytes arrived, no CSE7766 frame among them{baud}")
        return (f"no CSE7766 frame on {self.resource} for {silent_s:.1f} s (no bytes at all, "
                f"expected {self.settings}): connect the chip's TX to the adapter's RX (and "
                "GND), power the plug from mains (the chip only runs on mains), and make sure "
                "the ESP does not hold the line")

    def _stream_info(self, first: codec.Frame) -> StreamInfo:
        v_param, i_param, p_param = first.coefficients()
        identity = {"model": "CSE7766", "line": self.settings, "state": first.state_text(),
                    "v_param": v_param, "i_param": i_param, "p_param": p_param,
                    "voltage_gain": self.voltage_gain, "current_gain": self.current_gain,
                    "power_gain": self.power_gain}
        # the frames carry no identity: an emulator is known by the terminal it owns
        emulated, claim = emulated_identity(self._port)
        identity.update(claim)
        keys = (
            Key("power_w", "W", "window_mean", None,
                "active power, mean over one CF pulse period (Pparam uJ / P: 89 ms at 60 W); "
                "emitted only from frames with a new power value"),
            Key("energy_j", "J", "counter", None,
                f"CF pulses since the first frame x Pparam uJ ({p_param * 1e-6:.2f} J per pulse)"),
            Key("voltage_v", "V", None, None, "RMS voltage (Vparam / Vcycle x voltage_gain)"),
            Key("current_a", "A", None, None, "RMS current (Iparam / Icycle x current_gain)"),
        )
        return StreamInfo(
            name=self.stream, kind="hardware", driver=DRIVER, resource=self.resource,
            scope="wall", period_s=FRAME_PERIOD_S, keys=keys, identity=identity,
            emulated=emulated,
            notes=("power_w is emitted per chip frame carrying a new power value (~10/s above "
                   "60 W, fewer at low load)",),
        )

    # ------------------------------------------------------------------------------ streaming
    def run(self, ctx: SourceContext) -> None:
        self._ctx = ctx
        watch = SilenceWatch(self.silence_s)
        pending, self._pending = self._pending, []
        for t_ns, raw in pending:
            self._handle(raw, t_ns)
            watch.frame()
        self._bytes_since_frame = 0
        port = self._port
        while not ctx.stop.is_set():
            if port is None:
                raise TransientError(f"{self.stream}: port {self.resource} is not open")
            data = read_available(port, self.resource)  # Disconnected when unplugged
            t_ns = time.monotonic_ns()
            if data:
                self._bytes_since_frame += len(data)
                frames = self._scanner.feed(data)
                for raw in frames:
                    self._handle(raw, t_ns)
                if frames:
                    watch.frame()
                    self._bytes_since_frame = 0
            silent = watch.check()
            if silent is not None:
                received, self._bytes_since_frame = self._bytes_since_frame, 0
                self._count("silence", self._silence_message(silent, received))
                raise TransientError(f"{self.stream}: " + self._silence_message(silent, received))

    def _handle(self, raw: bytes, t_ns: int) -> None:
        frame = codec.decode_frame(raw)
        if frame.is_abnormal:
            self._count("abnormal_state", f"chip state {frame.state:#04x}: {frame.state_text()}; "
                                          "frame ignored")
            return
        if not frame.is_calibrated:
            self._count("not_calibrated", "chip reports 0xAA (not calibrated): decoded with "
                                          "Tasmota's default coefficients; calibrate with *_gain")
        energy_j = self._update_energy(frame, t_ns)
        power_w = frame.power_w()
        if power_w is None:
            self._invalid_run += 1
            if self._invalid_run < self.zero_after_invalid:
                return  # no new power value in this frame
            power_w = 0.0
        else:
            self._invalid_run = 0
        if self._energy_origin_j is None:
            self._energy_origin_j = energy_j
        values = {"power_w": power_w * self.power_gain, "energy_j": energy_j - self._energy_origin_j}
        voltage_v = frame.voltage_v()
        if voltage_v is not None:
            values["voltage_v"] = voltage_v * self.voltage_gain
        current_a = frame.current_a()
        if current_a is not None:
            values["current_a"] = current_a * self.current_gain
        if self._ctx is not None:
            self._ctx.emit(self.stream, values, t_ns)

    def _update_energy(self, frame: codec.Frame, t_ns: int) -> float:
        if self._cf_last is None:
            self._cf_last, self._cf_last_ns = frame.cf_pulses, t_ns
            return self._energy_j
        pulses = codec.cf_delta(self._cf_last, frame.cf_pulses)
        joules = pulses * frame.joules_per_pulse() * self.power_gain
        elapsed_s = max((t_ns - self._cf_last_ns) / 1e9, FRAME_PERIOD_S)
        # twice the rated maximum over the elapsed time, with one frame period of slack for
        # frames that arrive in a burst
        if joules > 2.0 * self.max_power_w * elapsed_s:
            self._count("energy_jump", f"CF counter jumped {pulses} pulses in {elapsed_s:.2f} s "
                                       f"(> {self.max_power_w:g} W); re-baselined")
        else:
            self._energy_j += joules
        self._cf_last, self._cf_last_ns = frame.cf_pulses, t_ns
        return self._energy_j


def create(spec: SourceSpec) -> Cse7766Source:
    return Cse7766Source(spec, OPTIONS.parse(spec))

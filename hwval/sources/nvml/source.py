"""``nvml``: NVIDIA GPU board power and energy through NVML (package ``nvidia-ml-py``).

Spec: ``nvml:[VISIBLE][?period_s=0.05&detect_s=0.25&fields=true]``. VISIBLE overrides
``CUDA_VISIBLE_DEVICES`` (same syntax); empty = what the environment makes visible. One stream
``nvml_gpu<i>`` per visible GPU, where ``i`` is the index the workload uses (``cuda:i``), matched
by UUID (see :mod:`hwval.sources.nvml.visible`). Keys, each only where the GPU supports it:

``power_w``
    ``nvmlDeviceGetPowerUsage`` (mW -> W), whole board. A 1 s mean on Ampere and newer except
    GA100 (``semantics = window_mean``, ``window_s = 1``), an instantaneous value otherwise.
``energy_j``
    ``nvmlDeviceGetTotalEnergyConsumption`` (mJ since driver load, Volta+), summed from the
    first reading in exact integer millijoules until converted. It stays cumulative when the
    recorder reopens the source: the first reading after a reopen adds the counter's progress
    since the last reading before it (the energy of the gap), or, when the counter restarted (a
    driver reload), nothing for the gap, with an ``error`` event ``counter_backwards``.
``power_instant_w`` / ``power_average_w``
    Field values ``NVML_FI_DEV_POWER_INSTANT`` / ``NVML_FI_DEV_POWER_AVERAGE`` (GPU scope).

At open the update period is detected (a burst of back-to-back reads of the energy counter, or
of the power when there is no counter, for ``detect_s`` seconds, longer on a loaded machine until
two neighbouring changes are well timed; the smallest interval between value changes) and
recorded in the identity and the notes.

Faults: a function that answers NOT_SUPPORTED at open is skipped with a note (a transient error
at open is retried a few times first, so a passing glitch does not drop a key); a transient error
(UNKNOWN, TIMEOUT...) is a gap of that GPU's stream (of the whole source when every GPU failed,
via :class:`TransientError`); GPU_IS_LOST records an ``error`` and a ``gap_start`` for that
stream, which then stops reporting while the other GPUs go on (when every GPU is lost the source
raises :class:`Disconnected` and the recorder reopens it with backoff). No driver or no visible
GPU is a :class:`SourceUnavailable` with the fix.

Sources: NVML API reference (nvmlDeviceGetPowerUsage, nvmlDeviceGetTotalEnergyConsumption,
nvmlDeviceGetFieldValues, NVML_FI_DEV_POWER_*); nvidia-ml-py (pynvml.py); docs/measurement.md#nvml
(1 s window, update period detection as in Zeus, transient errors, UUID matching).
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import pynvml

from hwval.runfile.schema import EventName
from hwval.sources.emulated import says_emulated
from hwval.sources.base import (Disconnected, Key, SourceContext, SourceSpec, SourceUnavailable,
                                StreamInfo, TransientError)
from hwval.sources.options import DriverOptions, Option
from hwval.sources.nvml.detect import Detected, detect_update_periods
from hwval.sources.nvml.devices import enumerate_devices, field_value, identity, power_usage_semantics
from hwval.sources.nvml.errors import (LOST_CODES, REOPEN_CODES, TRANSIENT_CODES, UNSUPPORTED_CODES,
                                       error_name, init_error_message)
from hwval.sources.nvml.visible import VisibleGpu, order_note, parse_visible, resolve_visible

DEFAULT_PERIOD_S = 0.05
DEFAULT_DETECT_S = 0.25
#: Calls at open that fail with a transient code are tried this many times before the key is
#: given up for the whole capture.
PROBE_ATTEMPTS = 3
OPTIONS = DriverOptions("nvml", "NVIDIA GPUs through NVML (one stream per visible GPU)",
                        "GPUs to read, as CUDA_VISIBLE_DEVICES (indices or UUIDs; empty: that variable)", (
    Option("detect_s", float, DEFAULT_DETECT_S,
           "time spent at open measuring how often the driver refreshes power (0: skip)", "s", ge=0),
    Option("fields", bool, True, "also read the instant/average power fields where supported"),
))

#: Field values read where supported: (field id, key, semantics, window_s, description).
POWER_FIELDS = (
    (pynvml.NVML_FI_DEV_POWER_INSTANT, "power_instant_w", "instant", None,
     "NVML_FI_DEV_POWER_INSTANT (GPU scope)"),
    (pynvml.NVML_FI_DEV_POWER_AVERAGE, "power_average_w", "window_mean", 1.0,
     "NVML_FI_DEV_POWER_AVERAGE (GPU scope; NVIDIA documents a 1 s average)"),
)


@dataclass
class _Gpu:
    """Reading state of one visible GPU."""

    stream: str
    visible: VisibleGpu
    has_power: bool = False
    has_energy: bool = False
    fields: list[tuple[int, str]] = field(default_factory=list)
    #: Last counter value read (mJ) and the energy summed so far (mJ), both exact integers.
    last_energy_mj: int | None = None
    energy_total_mj: int = 0
    lost: bool = False
    in_gap: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def handle(self) -> Any:
        return self.visible.device.handle


class NvmlSource:
    """Polled source over every visible NVIDIA GPU."""

    mode = "polled"

    def __init__(self, spec: SourceSpec, options: Mapping[str, Any] | None = None,
                 clock_ns: Callable[[], int] = time.monotonic_ns,
                 environ: Mapping[str, str] | None = None) -> None:
        opts = OPTIONS.parse(spec) if options is None else options
        self.spec = spec
        self.period_s = DEFAULT_PERIOD_S if spec.period_s is None else spec.period_s
        if not self.period_s > 0:
            raise ValueError(f"nvml: period_s must be > 0, got {self.period_s!r}")
        self.detect_s = opts["detect_s"]
        self.read_fields = opts["fields"]
        self.prefix = spec.name if spec.name and spec.name != "nvml" else "nvml"
        self.environ = os.environ if environ is None else environ
        self._clock = clock_ns
        self._gpus: list[_Gpu] = []
        self._initialised = False
        #: The last read raised TransientError: the recorder holds a gap over every stream and
        #: closes it (for the lost GPUs too) when a read next succeeds.
        self._in_recorder_gap = False
        #: Lost GPUs whose own gap must be opened again, one read after the recorder's closed.
        self._reopen_lost_gaps = False
        self.ctx: SourceContext | None = None
        #: Update period detected per stream at open (seconds or None); also in the identity.
        self.update_periods: dict[str, float | None] = {}
        #: GPU UUID -> (last counter value, energy summed) in mJ, kept across close/open so a
        #: reopened stream's ``energy_j`` goes on from where it was instead of restarting at 0.
        self._energy_by_uuid: dict[str, tuple[int, int]] = {}

    # -- lifecycle ---------------------------------------------------------------------------
    def open(self, ctx: SourceContext) -> list[StreamInfo]:
        self.close()
        self.ctx = ctx
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise SourceUnavailable(init_error_message(exc)) from None
        self._initialised = True
        try:
            return self._open_devices(ctx)
        except BaseException:
            self.close()
            raise

    def _open_devices(self, ctx: SourceContext) -> list[StreamInfo]:
        resource = self.spec.resource.strip()
        raw_visible = resource if resource else self.environ.get("CUDA_VISIBLE_DEVICES")
        visible = parse_visible(raw_visible)
        try:
            devices = enumerate_devices()
        except pynvml.NVMLError as exc:
            raise SourceUnavailable(f"cannot list GPUs ({error_name(exc)}: {exc}); check "
                                    "nvidia-smi, or use --no-nvml") from None
        if not devices:
            raise SourceUnavailable("the NVIDIA driver is loaded but sees no GPU; check "
                                    "nvidia-smi, or capture without NVML (--no-nvml)")
        gpus, notes = resolve_visible(visible, devices)
        where = "the nvml resource" if resource else "CUDA_VISIBLE_DEVICES"
        if not gpus:
            raise SourceUnavailable(
                f"{where}={raw_visible!r} selects none of the {len(devices)} GPU(s) "
                f"({', '.join(d.uuid for d in devices)}); fix it or use --no-nvml"
                + (f" ({'; '.join(notes)})" if notes else ""))
        identities = {g.device.uuid: identity(g.device) for g in gpus}
        note = order_note(visible, [i["name"] or "" for i in identities.values()],
                          self.environ.get("CUDA_DEVICE_ORDER"))
        if note:
            notes.append(note)
        for g in gpus:
            gpu = _Gpu(f"{self.prefix}_gpu{g.cuda_index}", g, notes=list(g.notes) + notes)
            if g.device.uuid in self._energy_by_uuid:
                gpu.last_energy_mj, gpu.energy_total_mj = self._energy_by_uuid[g.device.uuid]
            self._probe(gpu)
            if gpu.has_power or gpu.has_energy or gpu.fields:
                self._gpus.append(gpu)
            else:
                ctx.event(EventName.ERROR, "", kind="gpu_without_power", uuid=g.device.uuid,
                          message=f"nvml: {g.device.uuid} reports neither power nor energy; skipped")
        if not self._gpus:
            raise SourceUnavailable("no visible GPU reports power or energy (NOT_SUPPORTED "
                                    "on every GPU, e.g. MIG guests or old boards); use --no-nvml")
        self._detect_update_periods()
        return [self._info(gpu, identities[gpu.visible.device.uuid]) for gpu in self._gpus]

    @staticmethod
    def _probe_call(func: Callable[..., Any], *args: Any) -> tuple[Any, pynvml.NVMLError | None]:
        """``(value, None)``, or ``(None, error)`` once the call failed for good: a transient
        code (TRANSIENT_CODES) is retried up to PROBE_ATTEMPTS times, any other code is final."""
        attempt = 1
        while True:
            try:
                return func(*args), None
            except pynvml.NVMLError as exc:
                if exc.value not in TRANSIENT_CODES or attempt >= PROBE_ATTEMPTS:
                    return None, exc
            attempt += 1

    def _probe(self, gpu: _Gpu) -> None:
        """Find out which readings this GPU supports; note the ones it does not."""
        h = gpu.handle
        for attr, func, what in (("has_power", pynvml.nvmlDeviceGetPowerUsage, "power usage"),
                                 ("has_energy", pynvml.nvmlDeviceGetTotalEnergyConsumption,
                                  "total energy counter")):
            _, exc = self._probe_call(func, h)
            if exc is None:
                setattr(gpu, attr, True)
            else:
                gpu.notes.append(f"{what} not available ({error_name(exc)}): key skipped")
        if not self.read_fields:
            return
        ids = [fid for fid, *_ in POWER_FIELDS]
        values, exc = self._probe_call(pynvml.nvmlDeviceGetFieldValues, h, ids)
        if exc is not None:
            gpu.notes.append(f"field values not available ({error_name(exc)}): "
                             "power_instant_w / power_average_w skipped")
            return
        for (fid, key, *_), value in zip(POWER_FIELDS, values):
            if value.nvmlReturn == pynvml.NVML_SUCCESS:
                gpu.fields.append((fid, key))
            else:
                gpu.notes.append(f"{key} not available "
                                 f"({error_name(pynvml.NVMLError(value.nvmlReturn))}): key skipped")

    def _detect_update_periods(self) -> None:
        """The update period of every GPU (see :func:`detect_update_periods`), noted per stream."""
        self.update_periods = {}
        if self.detect_s <= 0:
            for gpu in self._gpus:
                self.update_periods[gpu.stream] = None
            return
        reads = {}
        for gpu in self._gpus:
            # The energy counter changes at every update, even when the power stays the same.
            func = (pynvml.nvmlDeviceGetTotalEnergyConsumption if gpu.has_energy
                    else pynvml.nvmlDeviceGetPowerUsage if gpu.has_power else None)
            if func is not None:
                reads[gpu.stream] = functools.partial(func, gpu.handle)
        detected, burst_s = detect_update_periods(reads, self.detect_s, self._clock)
        for gpu in self._gpus:
            found = detected.get(gpu.stream, Detected(None, 0))
            period = found.period_s
            self.update_periods[gpu.stream] = period
            what = "energy counter" if gpu.has_energy else "power"
            if period is None:
                gpu.notes.append(f"update period not detected: the {what} changed "
                                 f"{found.changes} time(s) in a {burst_s:.3g} s burst, never twice "
                                 "in a row between well-timed reads (a busy machine?)")
            else:
                gpu.notes.append(f"detected update period of the {what}: {period * 1e3:.1f} ms "
                                 f"(smallest interval between {found.changes} changes in a "
                                 f"{burst_s:.3g} s burst)")
                if self.period_s > period:
                    gpu.notes.append(f"period {self.period_s} s is longer than the update period: "
                                     "some power updates are never seen (the energy counter "
                                     f"loses nothing); poll every {period / 2:.3g} s to see all")

    def _info(self, gpu: _Gpu, ident: dict[str, Any]) -> StreamInfo:
        ident = dict(ident)
        semantics, window_s = power_usage_semantics(ident.get("architecture_code"), ident.get("name") or "")
        keys = []
        if gpu.has_power:
            keys.append(Key("power_w", "W", semantics, window_s,
                            "nvmlDeviceGetPowerUsage, whole board"
                            + (" (1 s mean per NVIDIA)" if window_s else " (instantaneous)")))
        if gpu.has_energy:
            keys.append(Key("energy_j", "J", "counter", None,
                            "nvmlDeviceGetTotalEnergyConsumption since the first reading"))
        for fid, key in gpu.fields:
            _, _, sem, win, desc = next(f for f in POWER_FIELDS if f[0] == fid)
            keys.append(Key(key, "W", sem, win, desc))
        ident.update(cuda_index=gpu.visible.cuda_index, visible_entry=gpu.visible.entry,
                     mig_instance=gpu.visible.via_mig,
                     update_period_s=self.update_periods.get(gpu.stream),
                     power_semantics=semantics, power_window_s=window_s)
        return StreamInfo(name=gpu.stream, kind="software", driver="nvml",
                          resource=gpu.visible.device.uuid, scope="gpu", period_s=self.period_s,
                          keys=tuple(keys), identity=ident, notes=tuple(gpu.notes),
                          emulated=says_emulated(ident.get(k) for k in ("driver_version", "name", "serial")))

    def close(self) -> None:
        self._gpus = []
        self._in_recorder_gap = self._reopen_lost_gaps = False  # a reopen starts every GPU afresh
        if self._initialised:
            self._initialised = False
            try:
                pynvml.nvmlShutdown()
            except pynvml.NVMLError:
                pass  # the driver is gone already; nothing left to release

    # -- reading -----------------------------------------------------------------------------
    def read(self) -> Mapping[str, Mapping[str, float]]:
        if self._reopen_lost_gaps:
            # The recorder ended its gap after the previous read for every stream, the lost
            # GPUs' too; they still report nothing, so their gap is open again.
            self._reopen_lost_gaps = False
            for gpu in self._gpus:
                if gpu.lost and not gpu.in_gap:
                    gpu.in_gap = True
                    self._emit_event(EventName.GAP_START, gpu.stream, reason="GPU lost")
        out: dict[str, dict[str, float]] = {}
        failures: list[tuple[_Gpu, pynvml.NVMLError]] = []
        active = [g for g in self._gpus if not g.lost]
        for gpu in active:
            try:
                out[gpu.stream] = self._read_gpu(gpu)
            except pynvml.NVMLError as exc:
                if exc.value in REOPEN_CODES:
                    self._hand_gaps_to_recorder()
                    raise Disconnected(f"nvml: {error_name(exc)} ({exc}); reopening NVML") from None
                if exc.value in LOST_CODES:
                    self._lose(gpu, exc)
                else:
                    failures.append((gpu, exc))
                continue
            if gpu.in_gap:
                gpu.in_gap = False
                self._emit_event(EventName.GAP_END, gpu.stream)
        still_active = [g for g in self._gpus if not g.lost]
        if not still_active:
            self._hand_gaps_to_recorder()
            raise Disconnected("nvml: every GPU is lost (GPU_IS_LOST); reopening NVML")
        if failures and len(failures) == len(still_active):
            self._hand_gaps_to_recorder()
            self._in_recorder_gap = True
            names = "; ".join(f"{g.stream}: {error_name(e)}" for g, e in failures)
            raise TransientError(f"nvml: {names}")
        if self._in_recorder_gap:
            self._in_recorder_gap = False
            self._reopen_lost_gaps = any(g.lost for g in self._gpus)
        for gpu, exc in failures:
            if self.ctx is not None:
                self.ctx.count_error(gpu.stream, error_name(exc), str(exc))
            if not gpu.in_gap:
                gpu.in_gap = True
                self._emit_event(EventName.GAP_START, gpu.stream, reason=f"{error_name(exc)}: {exc}")
        return out

    def _hand_gaps_to_recorder(self) -> None:
        # The recorder is about to open a gap for every stream of this source: close ours first
        # so each gap_start of a stream has exactly one gap_end.
        for gpu in self._gpus:
            if gpu.in_gap:
                gpu.in_gap = False
                self._emit_event(EventName.GAP_END, gpu.stream)

    def _read_gpu(self, gpu: _Gpu) -> dict[str, float]:
        h = gpu.handle
        values: dict[str, float] = {}
        if gpu.has_power:
            values["power_w"] = pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0
        if gpu.has_energy:
            values["energy_j"] = self._energy_j(gpu, pynvml.nvmlDeviceGetTotalEnergyConsumption(h))
        if gpu.fields:
            fvs = pynvml.nvmlDeviceGetFieldValues(h, [fid for fid, _ in gpu.fields])
            for (fid, key), fv in zip(list(gpu.fields), fvs):
                if fv.nvmlReturn == pynvml.NVML_SUCCESS:
                    values[key] = field_value(fv) / 1000.0
                elif fv.nvmlReturn in UNSUPPORTED_CODES:
                    gpu.fields.remove((fid, key))
                    self._emit_event(EventName.ERROR, gpu.stream, kind="field_unsupported", key=key,
                                     message=f"{key} became NOT_SUPPORTED; no longer read")
                elif self.ctx is not None:
                    self.ctx.count_error(gpu.stream, f"{key}:{fv.nvmlReturn}",
                                         f"field {key} failed with NVML code {fv.nvmlReturn}")
        return values

    def _energy_j(self, gpu: _Gpu, counter_mj: int) -> float:
        last = gpu.last_energy_mj
        if last is not None and counter_mj < last:
            # Driver reloaded (the counter restarts at 0): keep the sum continuous from here;
            # whatever was consumed between the two readings is unknown and not added.
            self._emit_event(EventName.ERROR, gpu.stream, kind="counter_backwards",
                             message=f"energy counter went from {last} to {counter_mj} mJ; "
                                     "baseline restarted",
                             previous_mj=last, value_mj=counter_mj)
        elif last is not None:
            gpu.energy_total_mj += counter_mj - last
        gpu.last_energy_mj = counter_mj
        self._energy_by_uuid[gpu.visible.device.uuid] = (counter_mj, gpu.energy_total_mj)
        return gpu.energy_total_mj / 1000.0

    def _lose(self, gpu: _Gpu, exc: pynvml.NVMLError) -> None:
        gpu.lost = True
        message = (f"{gpu.stream} ({gpu.visible.device.uuid}) is lost ({error_name(exc)}); it "
                   "stops reporting until the capture reopens NVML (a GPU reset is usually needed)")
        self._emit_event(EventName.ERROR, gpu.stream, kind="gpu_lost", message=message)
        if not gpu.in_gap:
            gpu.in_gap = True
            self._emit_event(EventName.GAP_START, gpu.stream, reason=error_name(exc))

    def _emit_event(self, name: str, stream: str, **detail: Any) -> None:
        if self.ctx is not None:
            self.ctx.event(name, stream, **detail)

    @property
    def streams(self) -> list[str]:
        return [g.stream for g in self._gpus]


def create(spec: SourceSpec) -> NvmlSource:
    return NvmlSource(spec, OPTIONS.parse(spec))

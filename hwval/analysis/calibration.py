"""Calibration records: a meter's gain and offset against a reference, as TOML files.

A record says ``reference_w = gain * meter_w + offset_w`` for one meter identity, with the
intervals of the fit, the meter power range it was fitted over, both meters' identities, the run
it came from (run id, file name, the file's SHA-256) and when it was made. The format is
documented in ``calibration/README.md``; :func:`record_to_toml` and :func:`record_from_toml`
are its only writer and reader.

Matching (:func:`matches`) decides which records apply to a stream of another run. It compares
the meter's *identifying* fields, never the whole identity (a pty path or a detected update
period changes from run to run):

1. a GPU UUID (``uuid``) when the identity has one;
2. otherwise a serial number (``serial``) with ``manufacturer`` and ``model`` when present
   (instruments' ``*IDN?``);
3. otherwise the driver, the stream name, the host and every identity field except the
   per-session ones in :data:`SESSION_FIELDS` (plugs without serial numbers, RAPL domains).

The driver must always agree, and ``emulated`` must agree: a record fitted on an emulated meter
(or against an emulated reference) is marked ``emulated = true`` and never applies to a real one
(nor a real one to an emulator).
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import tomli_w

FORMAT = "hwval-calibration"
FORMAT_VERSION = 1
#: Identity fields that change between sessions of the same meter (ports, paths, detected
#: timings, process-local indices): left out of matching.
SESSION_FIELDS = frozenset({
    "port", "path", "resource", "settings", "line", "state", "banner", "t0_monotonic_ns",
    "update_period_s", "cuda_index", "visible_entry", "nvml_index", "wrap_time_s_at_max_power",
    "holding_registers", "energy_reset_at_start", "polled_address", "emulator_process",
})


class CalibrationError(Exception):
    """A record cannot be read or written; the message names the file and the problem."""


@dataclass(frozen=True)
class MeterDescription:
    """What a record remembers about one meter (the calibrated one or the reference)."""

    stream: str
    driver: str
    kind: str
    scope: str
    emulated: bool
    host: str
    identity: dict[str, Any]

    @classmethod
    def from_stream(cls, name: str, attrs: dict[str, Any], host: str) -> "MeterDescription":
        identity = attrs.get("identity", "{}")
        if isinstance(identity, str):
            identity = json.loads(identity or "{}")
        return cls(name, str(attrs.get("driver", "")), str(attrs.get("kind", "")),
                   str(attrs.get("scope", "")), bool(attrs.get("emulated", False)), host, dict(identity))

    def match_fields(self) -> dict[str, Any]:
        """The fields :func:`matches` compares (see the module docstring)."""
        ident = self.identity
        out: dict[str, Any] = {"driver": self.driver, "emulated": self.emulated}
        if ident.get("uuid"):
            out["uuid"] = ident["uuid"]
        elif ident.get("serial"):
            out.update({k: ident[k] for k in ("manufacturer", "model", "serial") if ident.get(k)})
        else:
            out["stream"] = self.stream
            out["host"] = self.host
            out.update({k: v for k, v in ident.items() if k not in SESSION_FIELDS and v is not None})
        return _plain(out)

    def as_table(self) -> dict[str, Any]:
        return {"stream": self.stream, "driver": self.driver, "kind": self.kind, "scope": self.scope,
                "emulated": self.emulated, "host": self.host, "identity": _plain(self.identity),
                "match": self.match_fields()}


@dataclass(frozen=True)
class CalibrationRecord:
    meter: MeterDescription
    reference: MeterDescription
    gain: float
    gain_ci: tuple[float, float]
    offset_w: float
    offset_w_ci: tuple[float, float]
    r2: float
    residual_rmse_w: float
    valid_min_w: float
    valid_max_w: float
    n_bins: int
    bin_s: float
    synchronised: bool
    run_id: str
    run_file: str
    run_sha256: str
    window_start_s: float
    window_stop_s: float
    created_utc: str
    hwval_version: str
    bootstrap: dict[str, Any] = field(default_factory=dict)
    path: str = ""  # where it was read from (not written)

    @property
    def emulated(self) -> bool:
        return self.meter.emulated or self.reference.emulated

    def apply(self, power_w):
        """The meter's power corrected onto the reference's scale."""
        return self.gain * power_w + self.offset_w

    def summary(self) -> str:
        where = f" ({Path(self.path).name})" if self.path else ""
        return (f"{self.meter.stream}: gain {self.gain:.4f} [{self.gain_ci[0]:.4f}, {self.gain_ci[1]:.4f}], "
                f"offset {self.offset_w:+.2f} W against {self.reference.stream}, fitted "
                f"{self.created_utc[:10]} on run {self.run_id[:8]}{where}"
                + (" [emulated meters]" if self.emulated else ""))

    def derived_attrs(self) -> dict[str, Any]:
        """Flat attributes for the ``/analysis/calibration__<stream>`` entry."""
        return {"record_file": self.path, "meter": self.meter.stream, "reference": self.reference.stream,
                "gain": self.gain, "gain_ci": list(self.gain_ci), "offset_w": self.offset_w,
                "offset_w_ci": list(self.offset_w_ci), "r2": self.r2, "valid_min_w": self.valid_min_w,
                "valid_max_w": self.valid_max_w, "emulated": self.emulated,
                "fitted_run_id": self.run_id, "fitted_run_sha256": self.run_sha256,
                "fitted_utc": self.created_utc, "meter_identity": self.meter.identity,
                "match": self.meter.match_fields()}


def _plain(value: Any) -> Any:
    """JSON-like value made TOML-writable: None dropped from tables, tuples as lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value if v is not None]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


def record_to_toml(rec: CalibrationRecord) -> str:
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": "reference_w = gain * meter_w + offset_w",
        "created_utc": rec.created_utc,
        "hwval_version": rec.hwval_version,
        "emulated": rec.emulated,
        "meter": rec.meter.as_table(),
        "reference": rec.reference.as_table(),
        "fit": {
            "gain": rec.gain, "gain_ci": list(rec.gain_ci),
            "offset_w": rec.offset_w, "offset_w_ci": list(rec.offset_w_ci),
            "r2": rec.r2, "residual_rmse_w": rec.residual_rmse_w,
            "valid_min_w": rec.valid_min_w, "valid_max_w": rec.valid_max_w,
            "n_bins": rec.n_bins, "bin_s": rec.bin_s, "synchronised": rec.synchronised,
            "bootstrap": _plain(rec.bootstrap),
        },
        "source": {
            "run_id": rec.run_id, "file": rec.run_file, "sha256": rec.run_sha256,
            "window_start_s": rec.window_start_s, "window_stop_s": rec.window_stop_s,
        },
    }
    head = ("# hwval calibration record (format: calibration/README.md).\n"
            f"# {rec.meter.stream} against {rec.reference.stream}: reference_w = gain * meter_w + offset_w\n")
    return head + tomli_w.dumps(doc)


def _meter(table: dict[str, Any], where: str) -> MeterDescription:
    try:
        return MeterDescription(str(table["stream"]), str(table["driver"]), str(table.get("kind", "")),
                                str(table.get("scope", "")), bool(table["emulated"]),
                                str(table.get("host", "")), dict(table.get("identity", {})))
    except (KeyError, TypeError) as exc:
        raise CalibrationError(f"{where}: missing or malformed key {exc}") from None


def record_from_toml(text: str, path: str = "<text>") -> CalibrationRecord:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CalibrationError(f"{path}: not valid TOML ({exc})") from None
    if doc.get("format") != FORMAT:
        raise CalibrationError(f"{path}: not a hwval calibration record (format={doc.get('format')!r}, "
                               f"expected {FORMAT!r})")
    if doc.get("format_version") != FORMAT_VERSION:
        raise CalibrationError(f"{path}: calibration format_version {doc.get('format_version')!r}; this "
                               f"hwval reads version {FORMAT_VERSION}")
    try:
        fit, src = doc["fit"], doc["source"]
        return CalibrationRecord(
            meter=_meter(doc["meter"], f"{path} [meter]"),
            reference=_meter(doc["reference"], f"{path} [reference]"),
            gain=float(fit["gain"]), gain_ci=tuple(map(float, fit["gain_ci"])),
            offset_w=float(fit["offset_w"]), offset_w_ci=tuple(map(float, fit["offset_w_ci"])),
            r2=float(fit["r2"]), residual_rmse_w=float(fit["residual_rmse_w"]),
            valid_min_w=float(fit["valid_min_w"]), valid_max_w=float(fit["valid_max_w"]),
            n_bins=int(fit["n_bins"]), bin_s=float(fit["bin_s"]), synchronised=bool(fit["synchronised"]),
            bootstrap=dict(fit.get("bootstrap", {})),
            run_id=str(src["run_id"]), run_file=str(src["file"]), run_sha256=str(src["sha256"]),
            window_start_s=float(src["window_start_s"]), window_stop_s=float(src["window_stop_s"]),
            created_utc=str(doc["created_utc"]), hwval_version=str(doc.get("hwval_version", "")),
            path=str(path))
    except (KeyError, TypeError, ValueError) as exc:
        raise CalibrationError(f"{path}: missing or malformed key {exc}") from None


def default_file_name(rec: CalibrationRecord) -> str:
    """``<driver>-<identifying value>.toml``: one file per meter identity."""
    m = rec.meter.match_fields()
    key = m.get("uuid") or "-".join(str(m[k]) for k in ("model", "serial") if k in m) \
        or f"{rec.meter.host}-{rec.meter.stream}"
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{rec.meter.driver}-{key}").strip("_")
    return stem + ("-emulated" if rec.emulated else "") + ".toml"


def write_record(rec: CalibrationRecord, target: str | Path) -> Path:
    """Write ``rec`` to ``target``: a ``.toml`` file, or a folder (then the default name)."""
    target = Path(target)
    path = target if target.suffix == ".toml" else target / default_file_name(rec)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(record_to_toml(rec), encoding="utf-8")
    except OSError as exc:
        raise CalibrationError(f"{path}: cannot write the record ({exc.strerror or exc})") from None
    return path


def load_records(folder: str | Path) -> list[CalibrationRecord]:
    """Every ``*.toml`` record in ``folder`` (sorted by name); a malformed one is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CalibrationError(f"{folder}: no such folder of calibration records")
    out = []
    for path in sorted(folder.glob("*.toml")):
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CalibrationError(f"{path}: cannot be read ({exc.strerror or exc})") from None
        out.append(record_from_toml(text, str(path)))
    return out


def matches(rec: CalibrationRecord, meter: MeterDescription) -> bool:
    """Whether ``rec`` applies to ``meter`` (module docstring). Emulated never meets real: nor
    does a real meter's record fitted against an emulated reference (its gain is the emulator's)."""
    return rec.emulated == meter.emulated and rec.meter.match_fields() == meter.match_fields()


def pick(records: list[CalibrationRecord], meter: MeterDescription) -> CalibrationRecord | None:
    """The newest record matching ``meter``, if any."""
    found = [r for r in records if matches(r, meter)]
    return max(found, key=lambda r: r.created_utc) if found else None


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


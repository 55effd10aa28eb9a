"""Candidate meters from files: CodeCarbon's ``emissions.csv`` and generic CSV / JSONL series.

Formats (``hwval validate --format``):

- ``codecarbon``: CodeCarbon's ``emissions.csv``. Each row's ``timestamp`` is when the
  measurement ENDED (ISO 8601; without an offset it is local time, which is how CodeCarbon writes
  it: ``datetime.now()`` formatted to whole seconds), ``duration`` is in seconds and
  ``energy_consumed`` in kWh, covering ``[timestamp - duration, timestamp]``. Rows that share a
  ``run_id`` are cumulative (``flush()`` writes the totals so far from one start): hwval turns
  them into consecutive increments. The whole-second timestamp is truncated, so the true end
  lies in ``[timestamp, timestamp + 1 s)``; the durations are exact (``perf_counter``), so the
  common start is the intersection of every row's ``[timestamp - duration, ... + 1 s)`` and
  hwval uses its middle, with half its width as the time uncertainty.
- ``csv`` / ``jsonl``: a column / key ``timestamp`` (Unix seconds, or ISO 8601 where a naive
  time is local time) and ``power_w`` (W, instantaneous) and/or ``energy_j`` (J, cumulative).
  No other column is accepted: a typo must not silently drop the data.

File times are mapped onto the run's timebase through the run's anchor pair
(``origin_realtime_ns`` is the realtime clock at the run's origin): t_run = unix_s -
origin_realtime_ns / 1e9. The realtime clock of the machine that wrote the file must be the
capture host's (or synchronised to it). What remains between the file's stamps and the
reference (the meter's reporting delay, a clock offset of up to ``max_lag_s``) is fitted by
:func:`estimate_series_lag`, as the synchroniser fits a stream of the run.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from hwval.sync.timing import Timing

FORMATS = ("auto", "codecarbon", "csv", "jsonl")
SERIES_COLUMNS = ("timestamp", "power_w", "energy_j")
CODECARBON_REQUIRED = ("timestamp", "duration", "energy_consumed")
J_PER_KWH = 3.6e6


class ExternalFormatError(Exception):
    """The file cannot be used; the message names the file, the line or column, and what is accepted."""


@dataclass
class Intervals:
    """Energy over intervals of the run's timebase (CodeCarbon)."""

    start_s: np.ndarray
    stop_s: np.ndarray
    energy_j: np.ndarray
    time_uncertainty_s: float
    notes: list[str] = field(default_factory=list)


@dataclass
class Series:
    """A time series on the run's timebase: ``power_w`` (instant) or ``energy_j`` (counter)."""

    t_s: np.ndarray
    key: str
    values: np.ndarray
    notes: list[str] = field(default_factory=list)


def detect_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".csv":
        header = _csv_header(path)
        if all(col in header for col in CODECARBON_REQUIRED):
            return "codecarbon"
        return "csv"
    raise ExternalFormatError(f"{path}: cannot tell the format from the name; pass --format "
                              "codecarbon, csv or jsonl")


def _csv_header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as fh:
        row = next(csv.reader(fh), None)
    if not row:
        raise ExternalFormatError(f"{path}: empty file (expected a header line)")
    return [c.strip() for c in row]


def parse_time(text: str, where: str) -> float:
    """Unix seconds from a number or an ISO 8601 text (naive = local time)."""
    text = str(text).strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ExternalFormatError(f"{where}: timestamp {text!r} is neither Unix seconds nor ISO 8601") from None
    return stamp.timestamp()  # a naive datetime is taken as local time here, as intended


def _whole_seconds(texts: list[str]) -> bool:
    """True when no timestamp carries a fraction of a second (CodeCarbon truncates)."""
    for t in texts:
        clock = t.split("T")[-1] if "T" in t else t.split(" ")[-1]
        if "." in clock.split("+")[0].split("-")[0].split("Z")[0]:
            return False
    return True


def _number(value: str, where: str, column: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ExternalFormatError(f"{where}: {column} {value!r} is not a number") from None
    if not math.isfinite(x):
        raise ExternalFormatError(f"{where}: {column} is {value!r}: give a finite number, or leave the row out")
    return x


def read_codecarbon(path: Path, origin_realtime_ns: int) -> Intervals:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    header = _csv_header(path)
    missing = [c for c in CODECARBON_REQUIRED if c not in header]
    if missing:
        raise ExternalFormatError(f"{path}: not a CodeCarbon emissions.csv: missing column(s) "
                                  f"{', '.join(missing)} (needs {', '.join(CODECARBON_REQUIRED)})")
    if not rows:
        raise ExternalFormatError(f"{path}: no rows after the header")
    origin_s = origin_realtime_ns / 1e9
    groups: dict[str, list[tuple[float, float, float, str]]] = {}
    for line, row in enumerate(rows, start=2):
        where = f"{path}:{line}"
        ts = parse_time(row["timestamp"], where) - origin_s
        duration = _number(row["duration"], where, "duration")
        energy_j = _number(row["energy_consumed"], where, "energy_consumed") * J_PER_KWH
        if duration <= 0:
            raise ExternalFormatError(f"{where}: duration {duration} s must be > 0")
        groups.setdefault(row.get("run_id") or "", []).append((ts, duration, energy_j, row["timestamp"]))
    whole = _whole_seconds([r[3] for g in groups.values() for r in g])
    slack = 1.0 if whole else 0.0
    starts, stops, energies, notes = [], [], [], []
    uncertainty = 0.0
    for run_id, group in groups.items():
        group.sort(key=lambda r: r[1])
        ts = np.array([r[0] for r in group])
        dur = np.array([r[1] for r in group])
        e = np.array([r[2] for r in group])
        begin = ts - dur
        lo, hi = float(begin.max()), float(begin.min()) + slack
        cumulative = len(group) > 1 and np.all(np.diff(e) >= 0) and hi - lo > -0.5
        if len(group) == 1 or cumulative:
            if hi < lo:  # slightly inconsistent stamps: fall back to the median start
                lo = hi = float(np.median(begin)) + slack / 2
            start = (lo + hi) / 2
            uncertainty = max(uncertainty, (hi - lo) / 2)
            ends = start + dur
            edges = np.concatenate([[start], ends])
            increments = np.diff(np.concatenate([[0.0], e]))
            starts += list(edges[:-1])
            stops += list(edges[1:])
            energies += list(increments)
            if cumulative:
                notes.append(f"run_id {run_id or '(none)'}: {len(group)} cumulative rows turned into "
                             "consecutive increments")
        else:
            for t_end, d, ej, _ in group:
                start = t_end - d + slack / 2
                starts.append(start)
                stops.append(start + d)
                energies.append(ej)
            uncertainty = max(uncertainty, slack / 2)
    if whole:
        notes.append("timestamps have whole seconds (CodeCarbon truncates them): interval ends are "
                     f"known to +-{uncertainty:.2f} s")
    order = np.argsort(starts, kind="stable")
    return Intervals(np.asarray(starts)[order], np.asarray(stops)[order], np.asarray(energies)[order],
                     uncertainty, notes)


def _series_from_records(records: list[tuple[str, dict]], path: Path, origin_realtime_ns: int) -> Series:
    if not records:
        raise ExternalFormatError(f"{path}: no data rows")
    first_where, first = records[0]
    keys = set(first)
    unknown = sorted(k for k in keys if k not in SERIES_COLUMNS)
    if unknown:
        raise ExternalFormatError(f"{path}: unknown column(s) {', '.join(map(repr, unknown))} "
                                  f"(accepted: {', '.join(SERIES_COLUMNS)})")
    if "timestamp" not in keys or not keys & {"power_w", "energy_j"}:
        raise ExternalFormatError(f"{path}: needs 'timestamp' and 'power_w' or 'energy_j' "
                                  f"(found: {', '.join(sorted(keys)) or 'nothing'})")
    key = "energy_j" if "energy_j" in keys else "power_w"
    origin_s = origin_realtime_ns / 1e9
    t, v = [], []
    for where, rec in records:
        extra = sorted(k for k in rec if k not in SERIES_COLUMNS)
        if extra:
            raise ExternalFormatError(f"{where}: unknown key(s) {', '.join(map(repr, extra))} "
                                      f"(accepted: {', '.join(SERIES_COLUMNS)})")
        if key not in rec or "timestamp" not in rec:
            raise ExternalFormatError(f"{where}: missing {'timestamp' if 'timestamp' not in rec else key}")
        t.append(parse_time(rec["timestamp"], where) - origin_s)
        v.append(_number(rec[key], where, key))
    t_arr, v_arr = np.asarray(t), np.asarray(v)
    order = np.argsort(t_arr, kind="stable")
    notes = [] if np.all(np.diff(t_arr) >= 0) else ["rows were not in time order: sorted"]
    t_arr, v_arr = t_arr[order], v_arr[order]
    if len(t_arr) < 2:
        raise ExternalFormatError(f"{path}: a series needs at least two rows")
    if key == "energy_j":
        if np.any(np.diff(v_arr) < 0):
            raise ExternalFormatError(f"{path}: energy_j decreases: it must be a cumulative counter")
        v_arr = v_arr - v_arr[0]
    return Series(t_arr, key, v_arr, notes)


def read_series_csv(path: Path, origin_realtime_ns: int) -> Series:
    header = _csv_header(path)
    unknown = [c for c in header if c not in SERIES_COLUMNS]
    if unknown:
        raise ExternalFormatError(f"{path}: unknown column(s) {', '.join(map(repr, unknown))} "
                                  f"(accepted: {', '.join(SERIES_COLUMNS)})")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        records = [(f"{path}:{i}", {k.strip(): v for k, v in row.items() if k is not None and v not in (None, "")})
                   for i, row in enumerate(reader, start=2)]
    return _series_from_records(records, path, origin_realtime_ns)


def read_series_jsonl(path: Path, origin_realtime_ns: int) -> Series:
    records = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ExternalFormatError(f"{path}:{i}: not JSON ({exc.msg})") from None
            if not isinstance(rec, dict):
                raise ExternalFormatError(f"{path}:{i}: expected a JSON object per line")
            records.append((f"{path}:{i}", rec))
    return _series_from_records(records, path, origin_realtime_ns)


def read_candidate_file(path: str | Path, fmt: str, origin_realtime_ns: int) -> tuple[str, Intervals | Series]:
    """``(format, data)`` for a candidate file; raises :class:`ExternalFormatError`."""
    path = Path(path)
    if fmt not in FORMATS:
        raise ExternalFormatError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if not path.is_file():
        raise ExternalFormatError(f"{path}: no such file")
    try:
        if fmt == "auto":
            fmt = detect_format(path)
        if fmt == "codecarbon":
            return fmt, read_codecarbon(path, origin_realtime_ns)
        if fmt == "csv":
            return fmt, read_series_csv(path, origin_realtime_ns)
        return fmt, read_series_jsonl(path, origin_realtime_ns)
    except UnicodeDecodeError:
        raise ExternalFormatError(f"{path}: not UTF-8 text") from None
    except csv.Error as exc:
        raise ExternalFormatError(f"{path}: malformed CSV ({exc})") from None


# -- a file's series as a stream of the run: its lag, like any stream's ------------------------

#: Name the file's series goes by while the synchroniser fits it (never written to the run).
SERIES_STREAM = "_candidate_file"


@dataclass
class SeriesLag:
    """The file series' timing against the run, and how it was found.

    ``timing`` is None when the lag could not be estimated (``note`` says why); otherwise it is
    the series' lag on the run's aligned timebase: the lag fitted against the reference's raw
    stamps plus the reference's own lag from ``/sync`` (0 without it), so that aligning the
    series with ``timing`` and the reference as :func:`hwval.sync.align` does puts both on the
    same true time.
    """

    timing: Timing | None
    relative_lag_s: float = math.nan
    relative_lag_ci_s: tuple[float, float] = (math.nan, math.nan)
    window_s: float = math.nan
    quality: float = 0.0
    note: str = ""

    def attrs(self) -> dict:
        return {"lag_estimated": self.timing is not None, "lag_s": getattr(self.timing, "lag_s", math.nan),
                "lag_relative_s": self.relative_lag_s, "lag_relative_ci_s": list(self.relative_lag_ci_s),
                "lag_window_s": self.window_s, "lag_quality": self.quality, "lag_note": self.note}


class _SeriesReader:
    """A file's series behind the run stream reader's interface (the parts hwval.sync reads)."""

    def __init__(self, name: str, series: Series) -> None:
        self.name = name
        self._t = np.asarray(series.t_s, dtype=float)
        self._v = np.asarray(series.values, dtype=float)
        self._key = series.key
        self.attrs = {"kind": "software", "driver": "file", "period_s": None}

    @property
    def n(self) -> int:
        return len(self._t)

    @property
    def keys(self) -> list[str]:
        return [self._key]

    def dataset_attrs(self, key: str) -> dict:
        # the accepted formats define power_w as instantaneous (declared window 0: the fit still
        # finds a window if the meter averages, and falls back to 0 when lag and window cannot be
        # told apart) and energy_j as a counter
        return {"semantics": "instant", "window_s": 0.0} if key == "power_w" else {"semantics": "counter"}

    def index_at(self, t_s: float) -> int:
        return int(np.searchsorted(self._t, t_s, side="left"))

    def read(self, keys: list[str], start: int = 0, stop: int | None = None) -> dict:
        out = {"t": self._t[start:stop]}
        for key in keys:
            out[key] = self._v[start:stop]
        return out


class _RunWithSeries:
    """The run, with the file's series as one more stream (read-only, in memory)."""

    def __init__(self, run, series: Series) -> None:
        self._run = run
        self._reader = _SeriesReader(SERIES_STREAM, series)

    @property
    def stream_names(self) -> list[str]:
        return [*self._run.stream_names, SERIES_STREAM]

    def stream_reader(self, name: str):
        return self._reader if name == SERIES_STREAM else self._run.stream_reader(name)

    def __getattr__(self, name: str):
        return getattr(self._run, name)


def estimate_series_lag(run, reference: str, series: Series, max_lag_s: float | None = None) -> SeriesLag:
    """Fit the series' lag (and averaging window) like any stream without pulses' reference.

    The synchroniser's fallback (:func:`hwval.sync.synchronise.synchronise` with a stream as the
    reference) fits the series' readings to the reference's own power changes over stretches of
    the run; the series is given to it as one more stream of the run, so the fit is exactly the
    one ``hwval sync --reference`` makes for a stream. A series that does not follow the
    reference's changes, or overlaps it too briefly, keeps its own timestamps (``timing`` None).
    """
    from hwval.sync.align import timings_from_sync
    from hwval.sync.synchronise import DEFAULT_MAX_LAG_S, SyncInputError, synchronise
    from hwval.sync.timing import Timing

    max_lag_s = DEFAULT_MAX_LAG_S if max_lag_s is None else float(max_lag_s)
    try:
        result = synchronise(_RunWithSeries(run, series), reference=reference, streams=[SERIES_STREAM],
                             max_lag_s=max_lag_s)
    except SyncInputError as exc:
        return SeriesLag(None, note=f"lag not estimated ({exc}): the file's own timestamps are used")
    st = result.streams[SERIES_STREAM]
    if not st.synced:
        why = st.note or st.method
        return SeriesLag(None, quality=st.quality,
                         note=f"lag not estimated ({why.replace(SERIES_STREAM, 'the file')}): "
                              "the file's own timestamps are used")
    lo, hi = st.lag_ci_s
    if not (math.isfinite(lo) and math.isfinite(hi)) or (hi - lo) / 2 > max_lag_s:
        # the reference's changes did not pin the series (smooth load, few edges in the fitted
        # stretches): a lag known to worse than the whole search range would only add error
        return SeriesLag(None, st.lag_s, (lo, hi), quality=st.quality,
                         note=f"lag not estimated (the fit against {reference}'s power changes leaves it within "
                              f"[{lo:+.2f}, {hi:+.2f}] s, wider than the +-{max_lag_s:g} s searched): the file's "
                              "own timestamps are used")
    ref_timing = timings_from_sync(run).get(reference, Timing())
    window = st.window_s if math.isfinite(st.window_s) else 0.0
    # the fit is against the reference's raw stamps; the reference itself is aligned with its
    # /sync lag, so the series' lag on that timebase is the sum (drifts add likewise)
    timing = Timing(lag_s=st.lag_s + float(ref_timing.lag_at(st.drift_origin_s)), window_s=window,
                    drift_ppm=st.drift_ppm + ref_timing.drift_ppm, drift_origin_s=st.drift_origin_s)
    note = (f"lag {st.lag_s:+.3f} s [{lo:+.3f}, {hi:+.3f}] against {reference}'s power changes "
            f"(quality {st.quality:.2f}"
            + (f", window {window:.2f} s" if st.window_fitted else "")
            + (f", drift {st.drift_ppm:+.0f} ppm" if st.n_blocks > 1 else "") + ")"
            + ("" if not st.note else f"; {st.note}"))
    return SeriesLag(timing, st.lag_s, (lo, hi), window, st.quality, note)

"""``hwval info``: what a run file holds, as a dict (for --json) and as text.

Everything is read by blocks (``CHUNK_ROWS`` readings, ``EVENT_BLOCK_ROWS`` events), so memory
stays flat at any run length: per stream only ``t`` and ``power_w`` are read (never the energy
counter or other columns), and only the events that are shown are parsed. ``--json`` writes
the events as it reads them (:func:`write_json`) instead of building them all in memory.
"""

from __future__ import annotations

import json
import math
import shlex
from typing import IO, Any

import numpy as np

from hwval.runfile.reader import RunFile, StreamReader
from hwval.runfile.schema import EventName, RootAttr, StreamAttr, printable

#: An interval longer than this many nominal periods (or median intervals) counts as a gap.
GAP_FACTOR = 3.0
#: Readings read per block (2 MB per float64 column; larger blocks are no faster).
CHUNK_ROWS = 1 << 18


def _expected_interval(period_s: Any, first_dt: np.ndarray) -> float | None:
    """The nominal period when the stream has one, else the median interval of the first block
    (a stream without a nominal period is event-driven: its first block of intervals is typical)."""
    if isinstance(period_s, (int, float)) and period_s > 0 and math.isfinite(period_s):
        return float(period_s)
    return float(np.median(first_dt)) if len(first_dt) else None


def stream_figures(reader: StreamReader, gap_starts_t: np.ndarray) -> dict:
    """Samples, span, timing gaps (and how many of them no ``gap_start`` event explains) and the
    mean power of one stream, in one pass over ``t`` and ``power_w`` by blocks."""
    n = reader.n
    period = reader.attrs.get(StreamAttr.PERIOD_S)
    has_power = "power_w" in reader.keys
    timing_gaps = unflagged = 0
    power_sum, power_count = 0.0, 0
    first_t = last_t = None
    expected = None
    prev_t = None
    gap_starts_t = np.sort(gap_starts_t)
    for block in reader.iter_chunks(["power_w"] if has_power else [], rows=CHUNK_ROWS):
        t = block["t"]
        if not len(t):
            continue
        if first_t is None:
            first_t = float(t[0])
        last_t = float(t[-1])
        joined = t if prev_t is None else np.concatenate(([prev_t], t))
        dt = np.diff(joined)
        if expected is None:
            expected = _expected_interval(period, dt)
        if expected is not None and len(dt):
            long = np.flatnonzero(dt > GAP_FACTOR * expected)
            timing_gaps += len(long)
            if len(long):
                a, b = joined[long], joined[long + 1]
                i = np.searchsorted(gap_starts_t, a, side="left")
                explained = (i < len(gap_starts_t)) & (gap_starts_t[np.minimum(i, len(gap_starts_t) - 1)] <= b) \
                    if len(gap_starts_t) else np.zeros(len(a), dtype=bool)
                unflagged += int(np.count_nonzero(~explained))
        prev_t = float(t[-1])
        if has_power:
            p = block["power_w"]
            ok = ~np.isnan(p)
            power_count += int(np.count_nonzero(ok))
            power_sum += float(np.sum(p[ok], dtype=np.float64))
    span = (last_t - first_t) if n > 1 and first_t is not None else 0.0
    return {"samples": n, "mean_rate_hz": (n - 1) / span if span > 0 else 0.0,
            "first_t_s": first_t, "last_t_s": last_t,
            "timing_gaps": timing_gaps, "unflagged_gaps": unflagged,
            "mean_power_w": power_sum / power_count if power_count else None}


def emulated_streams(run: RunFile) -> dict[str, bool]:
    """Each stream's ``emulated`` attribute (set by its driver from the device's identity)."""
    return {name: bool(run.stream_reader(name).attrs.get(StreamAttr.EMULATED, False))
            for name in run.stream_names}


def summarize(run: RunFile, events_limit: int | None = None) -> dict:
    """The run's summary. ``events`` holds the first ``events_limit`` events in time order (all
    when None); ``event_count`` is always the total."""
    gap_t, gap_stream = run.event_rows_named(EventName.GAP_START)
    streams = []
    for name in run.stream_names:
        reader = run.stream_reader(name)
        attrs = reader.attrs
        mine = gap_t[gap_stream == name] if len(gap_t) else np.zeros(0)
        fig = stream_figures(reader, mine)
        period = attrs.get(StreamAttr.PERIOD_S)
        streams.append({
            "name": name, "kind": attrs.get(StreamAttr.KIND), "driver": attrs.get(StreamAttr.DRIVER),
            "resource": attrs.get(StreamAttr.RESOURCE), "scope": attrs.get(StreamAttr.SCOPE),
            "emulated": bool(attrs.get(StreamAttr.EMULATED, False)),
            "period_s": None if period is None or math.isnan(period) else period,
            "samples": fig["samples"], "mean_rate_hz": fig["mean_rate_hz"],
            "first_t_s": fig["first_t_s"], "last_t_s": fig["last_t_s"],
            # One count of gaps: every gap_start event, plus each long interval no event explains
            # (a gap the source reported is also a long interval: it is not counted twice).
            "gaps": len(mine) + fig["unflagged_gaps"],
            "gap_events": len(mine), "unflagged_gaps": fig["unflagged_gaps"],
            "dropped": int(attrs.get(StreamAttr.DROPPED_READINGS, 0)),
            "error_counts": json.loads(attrs.get(StreamAttr.ERROR_COUNTS, "{}") or "{}"),
            "mean_power_w": fig["mean_power_w"],
            "keys": sorted(reader.keys),
        })
    a = run.attrs
    summary = {
        "path": str(run.path), "run_id": a.get(RootAttr.RUN_ID), "hwval_version": a.get(RootAttr.HWVAL_VERSION),
        "schema_version": a.get(RootAttr.SCHEMA_VERSION), "created_utc": a.get(RootAttr.CREATED_UTC),
        "hostname": a.get(RootAttr.HOSTNAME), "command": run.command,
        "exit_code": a.get(RootAttr.EXIT_CODE), "complete": run.complete,
        "stop_reason": run.stop_reason or None,
        "recovered": bool(a.get(RootAttr.RECOVERED, False)),
        "marks_lost": run.marks_lost,
        "marks_refused": run.marks_refused,
        "error_counts": run.error_counts,
        "streams": streams,
        "warnings": [],
        "event_count": run.event_count,
    }
    if not run.complete:
        hint = (f"run `hwval recover {run.path}` to rebuild it from {run.journal}" if run.journal
                else "it holds what was flushed before the capture stopped")
        summary["warnings"].append(f"capture did not finish cleanly (complete=false); {hint}")
    elif run.journal:
        # Killed between finishing the file and removing the journal: the file has everything.
        summary["warnings"].append(f"the run is complete; its leftover crash journal {run.journal} "
                                   "is not needed and can be deleted")
    if run.marks_lost:
        summary["warnings"].append(f"{run.marks_lost} marks sent by the workload were lost (the capture "
                                   "could not take them in time): intervals between marks may be merged")
    if run.marks_refused:
        summary["warnings"].append(f"{run.marks_refused} marks were refused (a time stamp outside the "
                                   "capture, or malformed; see the error events)")
    emulated = [s["name"] for s in streams if s["emulated"]]
    if emulated:
        summary["warnings"].append(f"emulated (not real meters): {', '.join(emulated)}")
    summary["events"] = [
        {"t": t, "name": name, "stream": stream, "detail": detail}
        for t, name, stream, detail in run.iter_event_rows(0, events_limit, parsed=True)]
    return summary


def write_json(run: RunFile, out: IO[str]) -> None:
    """``hwval info --json``: the summary with every event, written block by block."""
    summary = summarize(run, events_limit=0)
    summary.pop("events")
    head = json.dumps({**summary, "events": []}, indent=2)
    assert head.endswith("[]\n}")
    out.write(head[:-len("[]\n}")] + "[")
    sep = "\n"
    lines: list[str] = []
    # A run has few distinct names and streams: each is JSON-encoded once.
    encoded: dict[str, str] = {}
    for t, name, stream, detail in run.iter_event_rows():
        n = encoded.get(name) or encoded.setdefault(name, json.dumps(name))
        s = encoded.get(stream) or encoded.setdefault(stream, json.dumps(stream))
        tj = repr(t) if t - t == 0 else json.dumps(t)  # json.dumps's NaN/Infinity for non-finite
        # detail is the file's own JSON text, already checked to be one object: written as it is.
        lines.append(f'{sep}    {{"t": {tj}, "name": {n}, "stream": {s}, "detail": {detail or "{}"}}}')
        sep = ",\n"
        if len(lines) >= 4096:
            out.write("".join(lines))
            lines.clear()
    out.write("".join(lines))
    out.write("\n  ]\n}\n" if summary["event_count"] else "]\n}\n")


def _command_text(command: list[str]) -> str:
    return printable(shlex.join(command)) if command else "(none: --duration)"


def format_summary(summary: dict, max_events: int = 40) -> str:
    """The text form. Every string that came from the file is escaped (:func:`printable`): a
    hostname, command or stream name cannot send escape codes to the terminal."""
    p = printable
    completion = "yes" if summary["complete"] else "NO"
    if summary.get("stop_reason"):
        # A run stopped early (SIGINT, --duration, a write failure) must not read as a full one.
        completion += f" (stopped early: {p(summary['stop_reason'])})"
    lines = [f"{p(summary['path'])}  run {p(summary['run_id'])}  ({p(summary['created_utc'])}, {p(summary['hostname'])})",
             f"command: {_command_text(summary['command'])}  exit code: {summary['exit_code']}"
             f"  complete: {completion}"
             + ("  (recovered from journal)" if summary["recovered"] else "")]
    if summary.get("marks_lost") is not None:
        lines.append(f"marks lost: {summary['marks_lost']}"
                     + (f", refused: {summary['marks_refused']}" if summary.get("marks_refused") is not None else ""))
    if summary.get("error_counts"):
        lines.append("run errors: " + ", ".join(f"{p(k)}={v}" for k, v in summary["error_counts"].items()))
    for w in summary["warnings"]:
        lines.append(f"warning: {p(w)}")
    lines.append("")
    header = (f"{'stream':<20} {'kind':<8} {'driver':<10} {'emu':<3} {'samples':>8} {'rate Hz':>8} "
              f"{'gaps':>5} {'drops':>6} {'mean W':>9}  errors")
    lines.append(header)
    lines.append("-" * len(header))
    for s in summary["streams"]:
        mean = f"{s['mean_power_w']:.2f}" if s["mean_power_w"] is not None else "-"
        errors = ", ".join(f"{p(k)}={v}" for k, v in s["error_counts"].items()) or "-"
        lines.append(f"{p(s['name']):<20} {p(s['kind'] or ''):<8} {p(s['driver'] or ''):<10} "
                     f"{'yes' if s['emulated'] else '-':<3} {s['samples']:>8} "
                     f"{s['mean_rate_hz']:>8.2f} {s['gaps']:>5} {s['dropped']:>6} {mean:>9}  {errors}")
    events = summary["events"][:max_events]
    total = summary.get("event_count", len(summary["events"]))
    lines.append("")
    lines.append(f"events: {total}")
    for e in events:
        detail = json.dumps(e["detail"], sort_keys=True) if e["detail"] else ""
        lines.append(f"  {e['t']:10.3f}  {p(e['name']):<15} {p(e['stream'] or '-'):<16} {p(detail)}")
    if total > len(events):
        lines.append(f"  ... {total - len(events)} more (use --json)")
    return "\n".join(lines)

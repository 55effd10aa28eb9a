"""``hwval info``: what a run file holds, as a dict (for --json) and as text."""

from __future__ import annotations

import json
import math

import numpy as np

from hwval.runfile.reader import RunFile
from hwval.runfile.schema import EventName

#: An interval longer than this many nominal periods (or median intervals) counts as a gap.
GAP_FACTOR = 3.0


def stream_gaps(t: np.ndarray, period_s: float | None) -> int:
    """Number of inter-sample intervals longer than GAP_FACTOR x the expected interval."""
    if len(t) < 2:
        return 0
    dt = np.diff(t)
    expected = period_s if period_s and period_s > 0 and not math.isnan(period_s) else float(np.median(dt))
    return int(np.count_nonzero(dt > GAP_FACTOR * expected))


def summarize(run: RunFile) -> dict:
    events = run.events
    streams = []
    for s in run.streams():
        period = s.attrs.get("period_s")
        n = len(s.t)
        span = float(s.t[-1] - s.t[0]) if n > 1 else 0.0
        power = s.data.get("power_w")
        streams.append({
            "name": s.name, "kind": s.attrs.get("kind"), "driver": s.attrs.get("driver"),
            "resource": s.attrs.get("resource"), "scope": s.attrs.get("scope"),
            "emulated": bool(s.attrs.get("emulated", False)),
            "period_s": None if period is None or math.isnan(period) else period,
            "samples": n, "mean_rate_hz": (n - 1) / span if span > 0 else 0.0,
            "first_t_s": float(s.t[0]) if n else None, "last_t_s": float(s.t[-1]) if n else None,
            "gaps": stream_gaps(s.t, period),
            "gap_events": sum(1 for e in events if e.name == EventName.GAP_START and e.stream == s.name),
            "dropped": int(s.attrs.get("dropped_readings", 0)),
            "error_counts": s.error_counts,
            "mean_power_w": float(np.nanmean(power)) if power is not None and n and not np.all(np.isnan(power)) else None,
            "keys": sorted(s.data),
        })
    summary = {
        "path": str(run.path), "run_id": run.attrs.get("run_id"), "hwval_version": run.attrs.get("hwval_version"),
        "schema_version": run.attrs.get("schema_version"), "created_utc": run.attrs.get("created_utc"),
        "hostname": run.attrs.get("hostname"), "command": run.command,
        "exit_code": run.attrs.get("exit_code"), "complete": run.complete,
        "recovered": bool(run.attrs.get("recovered", False)),
        "streams": streams,
        "events": [{"t": e.t, "name": e.name, "stream": e.stream, "detail": e.detail} for e in events],
        "warnings": [],
    }
    if not run.complete:
        hint = (f"run `hwval recover {run.path}` to rebuild it from {run.journal}" if run.journal
                else "it holds what was flushed before the capture stopped")
        summary["warnings"].append(f"capture did not finish cleanly (complete=false); {hint}")
    elif run.journal:
        # Killed between finishing the file and removing the journal: the file has everything.
        summary["warnings"].append(f"the run is complete; its leftover crash journal {run.journal} "
                                   "is not needed and can be deleted")
    return summary


def format_summary(summary: dict, max_events: int = 40) -> str:
    lines = [f"{summary['path']}  run {summary['run_id']}  ({summary['created_utc']}, {summary['hostname']})",
             f"command: {' '.join(summary['command']) or '(none: --duration)'}  exit code: {summary['exit_code']}"
             f"  complete: {'yes' if summary['complete'] else 'NO'}"
             + ("  (recovered from journal)" if summary["recovered"] else "")]
    for w in summary["warnings"]:
        lines.append(f"warning: {w}")
    lines.append("")
    header = f"{'stream':<20} {'kind':<8} {'driver':<10} {'samples':>8} {'rate Hz':>8} {'gaps':>5} {'drops':>6} {'mean W':>9}  errors"
    lines.append(header)
    lines.append("-" * len(header))
    for s in summary["streams"]:
        mean = f"{s['mean_power_w']:.2f}" if s["mean_power_w"] is not None else "-"
        errors = ", ".join(f"{k}={v}" for k, v in s["error_counts"].items()) or "-"
        lines.append(f"{s['name']:<20} {s['kind'] or '':<8} {s['driver'] or '':<10} {s['samples']:>8} "
                     f"{s['mean_rate_hz']:>8.2f} {s['gaps'] + s['gap_events']:>5} {s['dropped']:>6} {mean:>9}  {errors}")
    events = summary["events"]
    lines.append("")
    lines.append(f"events: {len(events)}")
    for e in events[:max_events]:
        detail = json.dumps(e["detail"], sort_keys=True) if e["detail"] else ""
        lines.append(f"  {e['t']:10.3f}  {e['name']:<15} {e['stream'] or '-':<16} {detail}")
    if len(events) > max_events:
        lines.append(f"  ... {len(events) - max_events} more (use --json)")
    return "\n".join(lines)

"""``/sync/<stream>``: writing the synchroniser's results and the characterisation into the run.

Written only through ``run.replace_derived("sync", ...)``: ``hwval sync`` replaces the whole
group (``whole=True``), ``hwval characterize`` adds its attributes to each stream's entry and
keeps the rest. Raw data is never touched.
"""

from __future__ import annotations

import math
from typing import Any

from hwval import __version__
from hwval.runfile import DerivedEntry
from hwval.sync.synchronise import StreamTiming, SyncResult

#: Attributes every ``/sync/<stream>`` entry has (the design's list, then hwval's additions).
SYNC_ATTRS = ("reference", "lag_s", "lag_ci_s", "window_s", "drift_ppm", "method", "quality",
              "window_ci_s", "window_fitted", "declared_window_s", "drift_ci_ppm", "drift_origin_s",
              "semantics", "key", "interval_s", "r2", "amp_z", "n_blocks", "n_readings", "n_clusters",
              "block_times_s", "block_lags_s", "absolute", "note", "run_notes", "hwval_version", "created_utc")


def _utc_now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def entry_attrs(st: StreamTiming, result: SyncResult, created_utc: str) -> dict[str, Any]:
    return {
        "reference": st.reference, "lag_s": st.lag_s, "lag_ci_s": list(st.lag_ci_s),
        "window_s": st.window_s, "drift_ppm": st.drift_ppm, "method": st.method, "quality": st.quality,
        "window_ci_s": list(st.window_ci_s), "window_fitted": st.window_fitted,
        "declared_window_s": st.declared_window_s, "drift_ci_ppm": list(st.drift_ci_ppm),
        "drift_origin_s": st.drift_origin_s, "semantics": st.semantics, "key": st.key,
        "interval_s": st.interval_s, "r2": st.r2, "amp_z": st.amp_z if math.isfinite(st.amp_z) else math.nan,
        "n_blocks": st.n_blocks, "n_readings": st.n_readings, "n_clusters": st.n_clusters,
        "block_times_s": list(st.block_times_s) or [math.nan], "block_lags_s": list(st.block_lags_s) or [math.nan],
        "absolute": result.absolute, "note": st.note, "run_notes": list(result.notes),
        "hwval_version": __version__, "created_utc": created_utc,
    }


def write_sync(run, result: SyncResult) -> list[str]:
    """Replace ``/sync`` with one entry per stream of ``result``; returns the names written."""
    now = _utc_now()
    entries = {name: DerivedEntry(attrs=entry_attrs(st, result, now)) for name, st in result.streams.items()}
    run.replace_derived("sync", entries, whole=True)
    return list(entries)


def add_attrs(run, per_stream: dict[str, dict[str, Any]]) -> None:
    """Merge attributes into existing ``/sync/<stream>`` entries (creating missing ones), keeping
    every other attribute and entry."""
    existing = run.read_derived("sync")
    entries = {}
    for name, attrs in per_stream.items():
        base = existing.get(name, DerivedEntry())
        entries[name] = DerivedEntry(attrs={**base.attrs, **attrs}, datasets=base.datasets, children=base.children)
    run.replace_derived("sync", entries)

"""Small real run files and journals written through the project's own layout and journal writer,
for the reader, validator, info and recover tests (no capture needed: milliseconds per file)."""

from __future__ import annotations

import h5py
import numpy as np

from hwval.runfile import layout
from hwval.runfile.documents import Descriptor, Event, Page, Start, Stop
from hwval.runfile.journal import JournalWriter
from hwval.sources.base import Key, StreamInfo

PERIOD_S = 0.01


def start_doc(hostname: str = "lab-host", command: tuple[str, ...] = ("python", "train.py")) -> Start:
    return Start(run_id="0f4e5d3c-0000-4000-8000-000000000001", created_utc="2026-12-01T10:00:00Z",
                 hostname=hostname, command=list(command), origin_monotonic_ns=1_000_000_000,
                 origin_realtime_ns=1_764_000_000_000_000_000, config_json="{}", hwval_version="0.test")


def stream_info(name: str = "wall", emulated: bool = True) -> StreamInfo:
    return StreamInfo(name, "hardware", "synthetic", "idle-load", "wall", PERIOD_S,
                      (Key("power_w", "W", "instant"), Key("energy_j", "J", "counter")),
                      emulated=emulated)


def pages(name: str, n: int, t0: float = 0.01, per_page: int = 20, value0: int = 1) -> list[Page]:
    """Readings ``value0, value0+1, ...`` (power_w = the reading's number), PERIOD_S apart."""
    out = []
    for lo in range(0, n, per_page):
        k = np.arange(lo, min(lo + per_page, n))
        out.append(Page(name, t0 + k * PERIOD_S, {"power_w": (k + value0).astype(float),
                                                   "energy_j": k * PERIOD_S * 10.0}))
    return out


def documents(n: int = 100, streams: tuple[str, ...] = ("wall",), events: list[Event] | None = None,
              stop: Stop | None = None, start: Start | None = None) -> list:
    docs: list = [start or start_doc()]
    docs += [Descriptor(stream_info(s)) for s in streams]
    for s in streams:
        docs += pages(s, n)
    docs += events if events is not None else [
        Event(0.005, "workload_start", "", {"command": ["python", "train.py"], "pid": 42}),
        Event(0.2, "mark", "", {"mark": "epoch", "epoch": 1}),
        Event(n * PERIOD_S, "workload_end", "", {"exit_code": 0}),
    ]
    docs.append(stop or Stop(exit_code=0, complete=True, stream_stats={
        s: {"dropped": 0, "error_counts": {}, "missed_deadlines": 0} for s in streams}))
    return docs


def write_file(path, docs: list) -> None:
    """The run file these documents make, through the layout writer (no journal)."""
    with h5py.File(path, "w") as f:
        f.create_group("streams")
        layout.create_events_group(f)
        events = []
        for doc in docs:
            if isinstance(doc, Start):
                layout.write_root_attrs(f, doc)
            elif isinstance(doc, Descriptor):
                layout.create_stream_group(f["streams"], doc.info)
            elif isinstance(doc, Page):
                g = f["streams"][doc.stream]
                layout.append_columns(g["t"], [doc.t])
                for key in g:
                    if key != "t":
                        layout.append_columns(g[key], [layout.page_column(doc, key)])
            elif isinstance(doc, Event):
                events.append(doc)
            elif isinstance(doc, Stop):
                if events:
                    layout.append_events(f["events"], events)
                layout.finalize(f, doc)


def write_journal(run_path, docs: list) -> None:
    """The crash journal these documents make, through the capture's journal writer."""
    writer = JournalWriter(str(run_path))
    for doc in docs:
        writer(doc)
    writer.close()

"""`hwval info` reads by blocks: memory does not grow with the run, columns it does not need
(energy_j) are never read, and only the events it shows are parsed."""

from __future__ import annotations

import json
import tracemalloc

import h5py
import numpy as np
from click.testing import CliRunner

from hwval.cli import cli
from hwval.runfile import info
from hwval.runfile.documents import Event
from hwval.runfile.reader import open_run
from runfile_builder import documents, write_file


def _big_run(path, n: int) -> None:
    write_file(path, documents(n=20))
    with h5py.File(path, "r+") as f:
        g = f["streams/wall"]
        k = np.arange(n, dtype=np.float64)
        for key, values in (("t", 0.01 + k * 0.01), ("power_w", k + 1), ("energy_j", k)):
            g[key].resize((n,))
            g[key][:] = values


def test_energy_j_is_never_read(tmp_path):
    """energy_j stored outside the file, then that storage deleted: reading it would fail."""
    out = tmp_path / "run.h5"
    write_file(out, documents(n=200))
    external = tmp_path / "energy.bin"
    with h5py.File(out, "r+") as f:
        g = f["streams/wall"]
        del g["energy_j"]
        ds = g.create_dataset("energy_j", shape=(200,), dtype=np.float64, external=[(str(external), 0, 1600)])
        ds.attrs["unit"] = "J"
    external.write_bytes(np.zeros(200).tobytes())
    with open_run(out) as run:
        assert run.stream("wall").data["energy_j"].shape == (200,)  # readable while the storage exists
    external.unlink()
    res = CliRunner().invoke(cli, ["info", "--json", str(out)])
    assert res.exit_code == 0, res.output
    (stream,) = json.loads(res.output)["streams"]
    assert stream["samples"] == 200 and stream["keys"] == ["energy_j", "power_w"]
    assert stream["mean_power_w"] == np.mean(np.arange(1, 201))


def test_memory_stays_flat_at_any_length(tmp_path, monkeypatch):
    """2e6 readings (16 MB per column) summarised in blocks of 65536 rows: the peak of Python
    allocations stays far below one column, where the old code loaded every column whole."""
    out = tmp_path / "run.h5"
    n = 2_000_000
    _big_run(out, n)
    monkeypatch.setattr(info, "CHUNK_ROWS", 1 << 16)
    with open_run(out) as run:
        tracemalloc.start()
        try:
            summary = info.summarize(run, events_limit=40)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    (stream,) = summary["streams"]
    assert stream["samples"] == n and stream["gaps"] == 0
    assert stream["mean_power_w"] == (n + 1) / 2
    assert peak < 4e6, f"{peak / 1e6:.1f} MB"


def test_only_the_events_shown_are_parsed(tmp_path):
    out = tmp_path / "run.h5"
    write_file(out, documents(events=[Event(0.001 * i, "mark", "", {"mark": "step", "i": i}) for i in range(2000)]))
    with h5py.File(out, "r+") as f:
        f["events/detail"][1500] = "{broken"
    res = CliRunner().invoke(cli, ["info", str(out)])
    assert res.exit_code == 0 and "events: 2000" in res.output and "... 1960 more" in res.output
    res = CliRunner().invoke(cli, ["info", "--json", str(out)])
    assert res.exit_code == 2 and "/events/detail[1500] is not JSON" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_events_stored_out_of_order_are_listed_in_time_order(tmp_path):
    """A killed capture's events are not sorted at the finish: info sorts what it shows."""
    out = tmp_path / "run.h5"
    write_file(out, documents(events=[Event(0.001 * i, "mark", "", {"mark": "step", "i": i}) for i in range(300)]))
    with h5py.File(out, "r+") as f:
        ev = f["events"]
        perm = np.random.default_rng(3).permutation(300)
        for key in ("t", "name", "stream", "detail"):
            ev[key][:] = ev[key][:][perm]
    events = json.loads(CliRunner().invoke(cli, ["info", "--json", str(out)]).output)["events"]
    assert [e["detail"]["i"] for e in events] == list(range(300))

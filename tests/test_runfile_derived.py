"""A run opened with mode="r+" lets sync and analysis add /sync and /analysis, and nothing else:
no raw HDF5 handle, read-only attribute mappings, and every name checked before anything is
written, so /streams, /events and the root's attributes cannot be changed through it."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from hwval.runfile.reader import DerivedEntry, RunFileError, open_run
from runfile_builder import documents, write_file


def _raw_state(path) -> dict:
    """Everything outside the derived groups: root attrs, every stream and event column."""
    out = {}
    with h5py.File(path, "r") as f:
        out["/"] = {k: str(v) for k, v in f.attrs.items()}

        def keep(name, obj):
            if name.split("/")[0] in ("streams", "events"):
                content = obj[()].tolist() if isinstance(obj, h5py.Dataset) else sorted(obj)
                out[name] = ({k: str(v) for k, v in obj.attrs.items()}, content)
        f.visititems(keep)
    return out


@pytest.fixture
def run_path(tmp_path):
    path = tmp_path / "run.h5"
    write_file(path, documents(n=30))
    return path


def test_sync_and_analysis_entries_are_written_and_read_back(run_path):
    with open_run(run_path, mode="r+") as run:
        assert run.mode == "r+"
        run.replace_derived("sync", {"wall": DerivedEntry(attrs={"lag_s": 0.25, "lag_ci_s": [0.2, 0.3]})}, whole=True)
        run.replace_derived("analysis", {"a__vs__b": DerivedEntry(
            attrs={"bias_w": 1.5}, datasets={"t": np.arange(3.0)},
            children={"idle": DerivedEntry(attrs={"bias_w": 0.5})})})
    with open_run(run_path) as run:
        assert run.read_derived("sync")["wall"].attrs["lag_s"] == 0.25
        entry = run.read_derived("analysis")["a__vs__b"]
        assert entry.datasets["t"].tolist() == [0.0, 1.0, 2.0] and entry.children["idle"].attrs["bias_w"] == 0.5


@pytest.mark.parametrize("group, entries, needle", [
    ("streams", {"wall": DerivedEntry()}, "expected one of sync, analysis"),
    ("events", {"x": DerivedEntry()}, "expected one of sync, analysis"),
    ("/", {"x": DerivedEntry()}, "expected one of sync, analysis"),
    ("sync", {"/streams/wall": DerivedEntry()}, "entry name '/streams/wall'"),
    ("sync", {"..": DerivedEntry()}, "entry name '..'"),
    # an absolute dataset path from inside /sync would land in /streams: refused, nothing written
    ("sync", {"ok": DerivedEntry(datasets={"/streams/wall/power_w2": np.zeros(30)})},
     "dataset name '/streams"),
    ("analysis", {"ok": DerivedEntry(children={"/events/evil": DerivedEntry()})}, "entry name '/events/evil'"),
    ("analysis", {"ok": DerivedEntry(children={"a": DerivedEntry(datasets={"x/y": np.zeros(1)})})}, "dataset name 'x/y'"),
])
def test_writing_anything_but_a_derived_group_is_refused_and_changes_nothing(run_path, group, entries, needle):
    before = _raw_state(run_path)
    with open_run(run_path, mode="r+") as run:
        with pytest.raises(ValueError) as err:
            run.replace_derived(group, entries, whole=True)
        assert needle in str(err.value)
    assert _raw_state(run_path) == before
    with h5py.File(run_path, "r") as f:
        assert "sync" not in f and "analysis" not in f  # checked before anything was written


def test_the_run_hands_out_no_writable_handle(run_path):
    with open_run(run_path, mode="r+") as run:
        assert not hasattr(run, "file") and not hasattr(run.stream_reader("wall"), "group")
        with pytest.raises(TypeError):
            run.attrs["complete"] = False  # type: ignore[index]
        with pytest.raises(TypeError):
            run.stream_reader("wall").attrs["driver"] = "x"  # type: ignore[index]
        run.stream("wall").t[:] = -1.0  # a copy: the file keeps its stamps
    with open_run(run_path) as run:
        assert run.stream("wall").t[0] > 0 and run.attrs["complete"]
        with pytest.raises(RunFileError, match="opened read-only"):
            run.replace_derived("sync", {"wall": DerivedEntry()})


@pytest.mark.parametrize("alias", ["streams", "streams/wall", "soft"])
def test_a_derived_group_aliasing_raw_data_is_refused(run_path, alias):
    with h5py.File(run_path, "r+") as f:
        f["sync"] = h5py.SoftLink("/streams") if alias == "soft" else f[alias]
    before = _raw_state(run_path)
    with open_run(run_path, mode="r+") as run:
        with pytest.raises(RunFileError, match="/sync is not a group of its own"):
            run.replace_derived("sync", {"wall": DerivedEntry(attrs={"lag_s": 1.0})})
        run.replace_derived("sync", {"wall": DerivedEntry(attrs={"lag_s": 1.0})}, whole=True)  # unlinks it
    assert _raw_state(run_path) == before
    with open_run(run_path) as run:
        assert run.read_derived("sync")["wall"].attrs["lag_s"] == 1.0

"""Fuzz: whatever the run file's attributes and datasets, and whatever the journal's bytes,
`hwval info` and `hwval recover` end with exit 0 or with one error line (exit 2): never a
traceback, never a leftover RUN.h5.recovering, never fewer readings than the run file held."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import h5py
import numpy as np
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hwval.cli import cli
from hwval.runfile.documents import Stop
from hwval.runfile.journal import journal_path
from hwval.runfile.reader import open_run
from runfile_builder import documents, write_file, write_journal

FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

_TEMPLATES = Path(tempfile.mkdtemp(prefix="hwval-fuzz-"))
_GOOD = _TEMPLATES / "good.h5"
_INCOMPLETE = _TEMPLATES / "incomplete.h5"
_DOCS = documents(n=120, streams=("wall", "gpu"))
write_file(_GOOD, _DOCS)
write_file(_INCOMPLETE, _DOCS[:-1] + [Stop(exit_code=-1, complete=False, reason="killed")])
write_journal(_TEMPLATES / "j.h5", _DOCS)
_JOURNAL = journal_path(_TEMPLATES / "j.h5").read_bytes()

OBJECTS = ["/", "/streams", "/streams/wall", "/streams/gpu", "/streams/wall/t", "/streams/wall/power_w",
           "/events", "/events/t", "/events/name", "/events/detail"]
ATTRS = ["schema_version", "command", "config", "exit_code", "complete", "hostname", "origin_monotonic_ns",
         "stop_reason", "marks_lost", "marks_refused", "recovered", "kind", "period_s", "emulated", "identity", "notes",
         "error_counts", "dropped_readings", "unit", "run_id", "\x1b[31mx"]

def texts(max_size: int):
    return st.text(st.characters(blacklist_characters="\x00"), max_size=max_size)  # HDF5 strings end at NUL


json_texts = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | texts(8),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts(5), inner, max_size=3),
                          max_leaves=6).map(json.dumps)
values = st.one_of(texts(12), json_texts, st.integers(-2**63, 2**63 - 1), st.floats(),
                   st.booleans(), st.binary(max_size=8).map(np.void),
                   st.lists(st.floats(allow_nan=False), min_size=1, max_size=4).map(np.array))
datasets = st.one_of(
    st.lists(st.floats(), max_size=30).map(lambda v: np.array(v, dtype=np.float64)),
    st.tuples(st.integers(0, 5), st.integers(0, 5)).map(lambda s: np.zeros(s)),
    st.lists(texts(6), min_size=1, max_size=5).map(lambda v: np.array(v, dtype=h5py.string_dtype())),
    st.lists(json_texts | texts(10), min_size=1, max_size=5).map(
        lambda v: np.array(v, dtype=h5py.string_dtype())),
    st.integers(0, 3).map(np.arange),
)
mutations = st.lists(st.one_of(
    st.tuples(st.just("set"), st.sampled_from(OBJECTS), st.sampled_from(ATTRS), values),
    st.tuples(st.just("del"), st.sampled_from(OBJECTS), st.sampled_from(ATTRS)),
    st.tuples(st.just("replace"), st.sampled_from(OBJECTS[1:]), datasets),
    st.tuples(st.just("group"), st.sampled_from(OBJECTS[4:])),
    st.tuples(st.just("row"), st.sampled_from(["/events/name", "/events/detail", "/events/stream"]),
              st.integers(0, 2), json_texts | texts(10)),
), min_size=1, max_size=4)


def _apply(f: h5py.File, mutation) -> None:
    kind, obj = mutation[0], mutation[1]
    if obj not in f:
        return
    if kind == "set":
        f[obj].attrs[mutation[2]] = mutation[3]
    elif kind == "del" and mutation[2] in f[obj].attrs:
        del f[obj].attrs[mutation[2]]
    elif kind in ("replace", "group"):
        del f[obj]
        f.create_group(obj) if kind == "group" else f.create_dataset(obj, data=mutation[2])
    elif kind == "row" and isinstance(f[obj], h5py.Dataset) and f[obj].ndim == 1 and mutation[2] < f[obj].shape[0]:
        f[obj][mutation[2]] = mutation[3]


def _one_line_or_ok(res) -> None:
    assert res.exit_code in (0, 2), (res.exit_code, res.output, res.exception)
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    if res.exit_code == 2:
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("hwval: error: "), res.stderr
        assert "\x1b" not in res.stderr


@FUZZ
@given(mutations)
def test_info_on_mutated_run_files(mutation_list):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.h5"
        shutil.copy(_GOOD, path)
        with h5py.File(path, "r+") as f:
            for m in mutation_list:
                _apply(f, m)
        for extra in ([], ["--json"]):
            res = CliRunner().invoke(cli, ["info", str(path), *extra])
            _one_line_or_ok(res)
            if res.exit_code == 0 and extra:
                json.loads(res.output)
            if res.exit_code == 0 and not extra:
                assert "\x1b" not in res.output


def _samples(path: Path) -> int:
    with open_run(path) as run:
        return sum(run.stream_reader(s).n for s in run.stream_names)


journal_edits = st.lists(st.one_of(
    st.tuples(st.just("flip"), st.integers(0, len(_JOURNAL) - 1), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.integers(0, len(_JOURNAL))),
    st.tuples(st.just("insert"), st.integers(0, len(_JOURNAL)), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("splice"), st.integers(0, len(_JOURNAL)), st.integers(0, len(_JOURNAL)), st.integers(1, 400)),
), min_size=1, max_size=5)


@FUZZ
@given(journal_edits, st.sampled_from(["none", "incomplete", "garbage"]))
def test_recover_on_damaged_journals(edits, beside):
    data = bytearray(_JOURNAL)
    for e in edits:
        if e[0] == "flip" and e[1] < len(data):
            data[e[1]] ^= e[2]
        elif e[0] == "cut":
            del data[e[1]:]
        elif e[0] == "insert":
            data[e[1]:e[1]] = e[2]
        elif e[0] == "splice":  # copy a stretch of the journal elsewhere (a duplicated or shifted record)
            data[e[2]:e[2]] = data[e[1]:e[1] + e[3]]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.h5"
        journal_path(path).write_bytes(bytes(data))
        before = 0
        if beside == "incomplete":
            shutil.copy(_INCOMPLETE, path)
            before = _samples(path)
        elif beside == "garbage":
            path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(data[:50]))
        res = CliRunner().invoke(cli, ["recover", str(path)])
        _one_line_or_ok(res)
        assert not Path(f"{path}.recovering").exists()
        if res.exit_code == 0:
            assert not journal_path(path).exists()
            assert _samples(path) >= before
            _one_line_or_ok(CliRunner().invoke(cli, ["info", str(path)]))
        else:
            assert journal_path(path).exists()

"""The validator: a malformed run file is one error line naming the object and what is wrong, for
`hwval info` and `hwval recover` alike (exit 2, no traceback)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from hwval.cli import cli
from hwval.runfile import schema
from hwval.runfile.reader import RunFileError, open_run
from runfile_builder import documents, write_file


def _set(obj: str, attr: str, value):
    def mutate(f):
        f[obj].attrs[attr] = value
    return mutate


def _del(obj: str, attr: str):
    def mutate(f):
        del f[obj].attrs[attr]
    return mutate


def _replace(path: str, data):
    def mutate(f):
        del f[path]
        f.create_dataset(path, data=data)
    return mutate


def _streams_as_dataset(f):
    del f["streams"]
    f.create_dataset("streams", data=[1, 2, 3])


# (mutation, text the one error line must contain)
MALFORMED = {
    "command not JSON": (_set("/", "command", "python train.py"), "/ attribute 'command' is not JSON"),
    "command a dict": (_set("/", "command", '{"a": 1}'), "/ attribute 'command' is JSON dict, expected a list"),
    "command items": (_set("/", "command", "[1, 2]"), "'command' is a list with non-text items"),
    "config not JSON": (_set("/", "config", "{oops"), "/ attribute 'config' is not JSON"),
    "exit_code text": (_set("/", "exit_code", "0"), "/ attribute 'exit_code' is '0', expected an integer"),
    "complete missing": (_del("/", "complete"), "/ attribute 'complete' is missing"),
    "hostname missing": (_del("/", "hostname"), "/ attribute 'hostname' is missing"),
    "origin text": (_set("/", "origin_monotonic_ns", "soon"), "'origin_monotonic_ns' is 'soon', expected an integer"),
    "marks_lost negative": (_set("/", "marks_lost", -3), "'marks_lost' is negative"),
    "marks_refused text": (_set("/", "marks_refused", "2"), "'marks_refused' is '2', expected an integer"),
    "root error_counts not JSON": (_set("/", "error_counts", "bad_mark=1"), "/ attribute 'error_counts' is not JSON"),
    "root error_counts negative": (_set("/", "error_counts", '{"bad_mark": -1}'),
                                   "/ attribute 'error_counts' gives 'bad_mark' the count -1"),
    "streams a dataset": (_streams_as_dataset, "/streams is a dataset, expected a group"),
    "streams missing": (lambda f: f.__delitem__("streams"), "/streams is missing"),
    "stream a dataset": (_replace("streams/wall", [1.0]), "/streams/wall is a dataset, expected a group"),
    "period_s text": (_set("streams/wall", "period_s", "0.01"),
                      "/streams/wall attribute 'period_s' is '0.01', expected a number"),
    "period_s inf": (_set("streams/wall", "period_s", np.inf), "'period_s' is inf, expected a positive"),
    "period_s negative": (_set("streams/wall", "period_s", -1.0), "'period_s' is -1.0"),
    "kind missing": (_del("streams/wall", "kind"), "/streams/wall attribute 'kind' is missing"),
    "emulated text": (_set("streams/wall", "emulated", "yes"), "'emulated' is 'yes', expected true or false"),
    "identity not JSON": (_set("streams/wall", "identity", "IDN?"), "/streams/wall attribute 'identity' is not JSON"),
    "error_counts not JSON": (_set("streams/wall", "error_counts", "timeout=3"),
                              "/streams/wall attribute 'error_counts' is not JSON"),
    "error_counts a list": (_set("streams/wall", "error_counts", "[3]"), "'error_counts' is JSON list"),
    "error_counts text count": (_set("streams/wall", "error_counts", '{"timeout": "3"}'),
                                "gives 'timeout' the count '3'"),
    "dropped negative": (_set("streams/wall", "dropped_readings", -1), "'dropped_readings' is negative"),
    "t 2-D": (_replace("streams/wall/t", np.zeros((10, 10))), "/streams/wall/t has shape (10, 10), expected one dimension"),
    "t text": (_replace("streams/wall/t", np.array([b"a", b"b"])), "/streams/wall/t holds |S1, expected numbers"),
    "t missing": (lambda f: f.__delitem__("streams/wall/t"), "/streams/wall/t is missing"),
    "column short": (_replace("streams/wall/power_w", np.zeros(3)), "/streams/wall/power_w has 3 rows, but /streams/wall/t has 100"),
    "column a group": (lambda f: (f.__delitem__("streams/wall/power_w"), f.create_group("streams/wall/power_w")),
                       "/streams/wall/power_w is a group, expected a dataset"),
    "events a dataset": (_replace("events", [1.0]), "/events is a dataset, expected a group"),
    "events column missing": (lambda f: f.__delitem__("events/detail"), "/events/detail is missing"),
    "events lengths": (_replace("events/name", np.array(["a"], dtype=object).astype(h5py.string_dtype())),
                       "/events columns differ in length"),
    "events t text": (_replace("events/t", np.array(["a", "b", "c"], dtype=h5py.string_dtype())),
                      "/events/t holds object, expected numbers"),
    "detail not JSON": (lambda f: f["events/detail"].__setitem__(1, "{'mark': 'epoch'}"),
                        "/events/detail[1] is not JSON"),
    "detail a list": (lambda f: f["events/detail"].__setitem__(2, "[1, 2]"), "/events/detail[2] is JSON list, expected an object"),
    "sync a dataset": (lambda f: f.create_dataset("sync", data=[1]), "/sync is a dataset, expected a group"),
    "escape in name": (lambda f: f.move("streams/wall", "streams/w\x1b[2Jall") or
                       f["streams/w\x1b[2Jall"].attrs.__setitem__("kind", 3),
                       "/streams/w\\x1b[2Jall attribute 'kind' is 3, expected text"),
}


@pytest.fixture
def good_run(tmp_path):
    path = tmp_path / "run.h5"
    write_file(path, documents())
    return path


def test_the_good_file_passes_and_every_event_name_is_a_schema_constant(good_run):
    with open_run(good_run) as run:
        assert run.stream_names == ["wall"] and run.event_count == 3
        assert {e.name for e in run.events} <= set(schema.EVENT_NAMES)
    assert schema.EventName.GAP_START in schema.EVENT_NAMES and len(schema.EVENT_NAMES) == 11


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_file_is_one_line_naming_the_object(good_run, case):
    mutate, needle = MALFORMED[case]
    with h5py.File(good_run, "r+") as f:
        mutate(f)
    # the reader itself raises the one error (every later stage opens runs through it)
    with pytest.raises(RunFileError) as err:
        with open_run(good_run) as run:
            run.events  # noqa: B018 -- per-row detail JSON is checked when read
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert "\x1b" not in str(err.value)
    res = CliRunner().invoke(cli, ["info", str(good_run)])
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit), res.output  # not a traceback
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and str(good_run) in lines[0], res.stderr
    res = CliRunner().invoke(cli, ["info", "--json", str(good_run)])
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1 and needle in res.stderr

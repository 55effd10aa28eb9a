"""`hwval recover`: merges the journal with what the run file holds (never fewer readings), never
leaves RUN.h5.recovering behind, and survives any journal bytes (damaged records are skipped and
counted). Journals are written by the capture's own JournalWriter; damage is then done by hand."""

from __future__ import annotations

import errno
import json
import signal
import struct
import sys
import time

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from hwval.cli import cli
from hwval.runfile import layout
from conftest import popen_hwval
from hwval.runfile.documents import Event, Stop
from hwval.runfile.error_counts import counts_from_events
from hwval.runfile.journal import journal_path
from hwval.runfile.reader import open_run
from hwval.runfile.recover import JournalDamage, read_journal
from runfile_builder import documents, write_file, write_journal


def _incomplete_stop() -> Stop:
    return Stop(exit_code=-1, complete=False, reason="write failed: No space left on device")


def _recover(path):
    res = CliRunner().invoke(cli, ["recover", str(path)])
    assert not (path.parent / f"{path.name}.recovering").exists()
    return res


def _values(path, stream="wall"):
    with open_run(path) as run:
        return run.stream(stream).data["power_w"]


def _record(header: dict, payload: bytes = b"") -> bytes:
    head = json.dumps(header).encode()
    return struct.pack("<I", len(head)) + head + payload


def _record_offsets(jpath) -> list[int]:
    data, pos, out = jpath.read_bytes(), 0, []
    while pos + 4 <= len(data):
        out.append(pos)
        (n,) = struct.unpack_from("<I", data, pos)
        header = json.loads(data[pos + 4:pos + 4 + n])
        pos += 4 + n + (8 * header["n"] * (1 + len(header["keys"])) if header["type"] == "page" else 0)
    return out


def test_a_complete_file_longer_than_its_journal_is_left_untouched(tmp_path):
    """The full-disk case of the issue: the journal stopped early, the file went on and finished."""
    out = tmp_path / "run.h5"
    write_file(out, documents(n=7675))
    before = out.read_bytes()
    write_journal(out, documents(n=7675)[:2 + 200])  # start, descriptor, 200 pages: 4000 readings
    reserve = tmp_path / "run.h5.reserve"  # what a killed capture leaves beside its file
    reserve.write_bytes(b"\0" * 4096)
    res = _recover(out)
    assert res.exit_code == 0, res.output
    assert "already holds everything in its journal" in res.output
    assert out.read_bytes() == before and not journal_path(out).exists() and not reserve.exists()
    with open_run(out) as run:
        assert run.complete and len(run.stream("wall").t) == 7675


def test_an_incomplete_file_longer_than_its_journal_keeps_every_reading(tmp_path):
    out = tmp_path / "run.h5"
    docs = documents(n=600)
    write_file(out, docs[:-1] + [_incomplete_stop()])
    write_journal(out, docs[:2 + 10])  # 10 pages = 200 readings, no stop
    res = _recover(out)
    assert res.exit_code == 0, res.output
    assert "1 stream, 600 samples (400 kept from the run file" in res.output and "complete: no" in res.output
    assert np.array_equal(_values(out), np.arange(1, 601))
    with open_run(out) as run:
        assert run.attrs["recovered"] and not run.complete
        assert [e.name for e in run.events] == ["workload_start", "mark", "workload_end"]


def test_a_journal_damaged_early_does_not_empty_a_good_file(tmp_path):
    out = tmp_path / "run.h5"
    write_file(out, documents(n=400, streams=("wall", "gpu"))[:-1] + [_incomplete_stop()])
    write_journal(out, documents(n=400, streams=("wall", "gpu"))[:-1])
    jpath = journal_path(out)
    data = bytearray(jpath.read_bytes())
    data[4:40] = b"\xff" * 36  # the start record's header: garbage
    jpath.write_bytes(bytes(data))
    res = _recover(out)
    assert res.exit_code == 0, res.output
    assert "2 streams, 800 samples" in res.output and "skipped 1 damaged journal record" in res.output
    for s in ("wall", "gpu"):
        assert np.array_equal(_values(out, s), np.arange(1, 401))


def test_damaged_pages_in_the_middle_are_filled_from_the_run_file(tmp_path):
    out = tmp_path / "run.h5"
    docs = documents(n=400)
    write_file(out, docs[:-1] + [_incomplete_stop()])
    write_journal(out, docs)
    jpath = journal_path(out)
    data = bytearray(jpath.read_bytes())
    offsets = _record_offsets(jpath)
    for k in (5, 9):  # two page records: break their JSON headers
        data[offsets[k] + 8] = ord("#")
    jpath.write_bytes(bytes(data))
    damage = JournalDamage()
    assert len(list(read_journal(jpath, damage))) == len(docs) - 2 and damage.skipped_records == 2
    res = _recover(out)
    assert res.exit_code == 0, res.output
    assert "(40 kept from the run file" in res.output and "skipped 2 damaged journal records" in res.output
    assert np.array_equal(_values(out), np.arange(1, 401))
    with open_run(out) as run:
        assert run.complete  # the journal's clean stop


def test_a_kill_inside_an_append_leaves_rows_the_journal_replaces(tmp_path):
    """Killed inside the writer's append: 30 rows have their stamps but not their values, and 30
    more were resized but never written (fill zeros). The journal, written ahead, has them all."""
    out = tmp_path / "run.h5"
    docs = documents(n=230)
    write_file(out, docs[:2 + 10] + docs[-4:-1] + [_incomplete_stop()])  # 200 readings
    with h5py.File(out, "r+") as f:
        g = f["streams/wall"]
        for key in ("t", "power_w", "energy_j"):
            g[key].resize((260,))
        g["t"][200:230] = docs[2 + 10].t.tolist() + docs[2 + 11].t[:10].tolist()
    write_journal(out, docs[:-1])
    res = _recover(out)
    assert res.exit_code == 0, res.output
    assert "1 stream, 230 samples" in res.output and "dropped 30 unwritten rows of the run file" in res.output
    assert np.array_equal(_values(out), np.arange(1, 231))


def test_no_run_file_and_crafted_records_are_skipped_and_counted(tmp_path):
    out = tmp_path / "run.h5"
    write_journal(out, documents(n=100)[:-1])
    good = journal_path(out).read_bytes()
    offsets = _record_offsets(journal_path(out))
    crafted = b"".join([
        _record({"type": "page", "stream": "wall", "n": 10**12, "keys": ["power_w"]}),
        _record({"type": "page", "stream": "../x", "n": 1, "keys": []}, b"\0" * 8),
        _record({"type": "page", "stream": "wall", "n": 1, "keys": ["t"]}, b"\0" * 16),
        _record({"type": "page", "stream": "wall", "n": 2, "keys": []}, np.array([5.0, np.nan]).tobytes()),
        _record({"type": "descriptor", "info": {"name": "a/b", "kind": "x"}}),
        _record({"type": "descriptor", "info": "wall"}),
        _record({"type": "event", "t": float("nan"), "name": "mark", "stream": "", "detail": {}}),
        _record({"type": "event", "t": 1.0, "name": ["mark"], "stream": "", "detail": {}}),
        _record({"type": "start", "command": 3}),
        _record({"type": "stop", "exit_code": "0", "complete": True}),
        _record({"type": "surprise"}),
        b"\x00\x00\x10\x00garbage that is no record at all",
    ])
    at = offsets[3]  # after start, descriptor and one page
    journal_path(out).write_bytes(good[:at] + crafted + good[at:] + b"\x07\x00\x00")
    (tmp_path / "run.h5.recovering").write_bytes(b"left by an old hwval")
    res = _recover(out)
    assert res.exit_code == 0, res.output
    assert "recovered" in res.output and "1 stream, 100 samples" in res.output
    assert "skipped 12 damaged journal records" in res.output
    assert np.array_equal(_values(out), np.arange(1, 101))
    with open_run(out) as run:
        assert run.stream_names == ["wall"] and run.command == ["python", "train.py"]


def test_nothing_to_rebuild_from_is_one_line_and_leaves_both_files(tmp_path):
    out = tmp_path / "run.h5"
    out.write_bytes(b"not hdf5 at all")
    journal_path(out).write_bytes(b"\x05\x00\x00\x00[1,2]garbage")
    res = _recover(out)
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit)
    (line,) = res.stderr.strip().splitlines()
    assert "no usable start record" in line and "not readable as HDF5" in line and "left as they are" in line
    assert out.read_bytes() == b"not hdf5 at all" and journal_path(out).exists()


def test_a_write_failure_during_recovery_leaves_no_temporary_file(tmp_path, monkeypatch):
    out = tmp_path / "run.h5"
    docs = documents(n=300)
    write_file(out, docs[:-1] + [_incomplete_stop()])
    before = out.read_bytes()
    write_journal(out, docs)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(layout, "append_columns", full_disk)
    res = _recover(out)
    assert res.exit_code == 2 and "recovery failed, the run file is unchanged" in res.stderr
    assert "No space left on device" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert out.read_bytes() == before and journal_path(out).exists()


def test_recover_rebuilds_an_unreadable_file_from_its_journal_and_keeps_the_old_one(tmp_path):
    out = tmp_path / "run.h5"
    write_file(out, documents())
    write_journal(out, documents())
    with h5py.File(out, "r+") as f:
        f["/"].attrs["command"] = "not json"
    res = _recover(out)
    assert res.exit_code == 0, res.output
    assert "attribute 'command' is not JSON" in res.output and f"{out}.damaged" in res.output
    with open_run(out) as run:
        assert run.command == ["python", "train.py"] and len(run.stream("wall").t) == 100 and run.complete
    with h5py.File(f"{out}.damaged") as f:
        assert f.attrs["command"] == "not json"


@pytest.mark.parametrize("case", ["command not JSON", "streams a dataset", "t 2-D", "detail not JSON"])
def test_recover_of_a_malformed_file_without_journal_is_one_line(tmp_path, case):
    from test_runfile_schema import MALFORMED
    out = tmp_path / "run.h5"
    write_file(out, documents())
    mutate, needle = MALFORMED[case]
    with h5py.File(out, "r+") as f:
        mutate(f)
    res = _recover(out)
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit)
    (line,) = res.stderr.strip().splitlines()
    assert "no crash journal" in line and (needle in line or case == "detail not JSON")


def test_recover_keeps_the_mark_counts_of_the_journal_stop_and_skips_crafted_ones(tmp_path):
    out = tmp_path / "run.h5"
    docs = documents(n=50)
    write_journal(out, docs[:-1] + [Stop(exit_code=0, complete=True, marks_lost=3, marks_refused=1)])
    journal_path(out).write_bytes(journal_path(out).read_bytes()
                                  + _record({"type": "stop", "exit_code": 0, "complete": True, "marks_lost": -5}))
    res = _recover(out)
    assert res.exit_code == 0, res.output
    assert "skipped 1 damaged journal record" in res.output
    with open_run(out) as run:
        assert run.marks_lost == 3 and run.marks_refused == 1 and run.complete


def test_recover_writes_the_run_level_error_counts_of_the_journal_stop(tmp_path):
    out = tmp_path / "run.h5"
    write_journal(out, documents(n=50)[:-1] + [Stop(exit_code=0, complete=True,
                                                    error_counts={"bad_mark": 4, "mark_refused": 1})])
    assert _recover(out).exit_code == 0
    with open_run(out) as run:
        assert run.error_counts == {"bad_mark": 4, "mark_refused": 1} and run.complete
    # a crafted stop record's counts cannot make the file invalid: they read as 0
    out2 = tmp_path / "run2.h5"
    write_journal(out2, documents(n=50)[:-1])
    journal_path(out2).write_bytes(journal_path(out2).read_bytes() + _record(
        {"type": "stop", "exit_code": 0, "complete": True, "error_counts": {"bad_mark": -2, "x": "many"}}))
    assert _recover(out2).exit_code == 0
    with open_run(out2) as run:
        assert run.error_counts == {"bad_mark": 0, "x": 0}


#: A workload whose capture is killed: one mark stamped before the capture (refused), then an
#: unreadable datagram every 0.2 s (bad marks, rate-limited to one event a second) until its
#: capture is gone (its parent changes), so it never outlives the test.
BAD_MARKS_UNTIL_ORPHANED = """
import os, socket, time, hwval.markers as m
parent = os.getppid()
m._send(time.monotonic_ns() - 1326 * 10**9, "past", {})
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
for _ in range(600):
    if os.getppid() != parent:
        break
    sock.sendto(b"\\xff", os.environ[m.ENV_SOCKET])
    time.sleep(0.2)
"""


def _run_level_errors(jpath) -> list:
    return [d for d in read_journal(jpath) if isinstance(d, Event) and d.name == "error" and d.stream == ""]


def test_a_killed_capture_gets_its_run_level_error_counts_back_from_the_events(tmp_path):
    """No stop record, so no totals: recover rebuilds the root's error_counts from the running
    counts its error events carry (more bad marks than bad_mark events: a count of the events
    themselves would be short), and `hwval info` shows them."""
    out = tmp_path / "run.h5"
    proc = popen_hwval("capture", "--no-nvml", "--no-rapl", "-m", "synthetic:constant:100?name=syn&period_s=0.05",
                       "-o", str(out), "--", sys.executable, "-c", BAD_MARKS_UNTIL_ORPHANED)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            errors = _run_level_errors(journal_path(out)) if journal_path(out).exists() else []
            bad = [e.detail["count"] for e in errors if e.detail["kind"] == "bad_mark"]
            # the journal holds a bad_mark event whose count is more than the events so far
            if any(e.detail["kind"] == "mark_refused" for e in errors) and bad and max(bad) > len(bad):
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"no rate-limited bad marks in the journal within 60 s: {proc.poll()}")
    finally:
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, err[-2000:]
    assert _recover(out).exit_code == 0
    with open_run(out) as run:
        events = [e for e in run.events if e.name == "error" and e.stream == ""]
        bad = [e.detail["count"] for e in events if e.detail["kind"] == "bad_mark"]
        assert run.attrs["recovered"] and not run.complete
        assert run.error_counts == {"bad_mark": max(bad), "mark_refused": 1}
        assert max(bad) > len(bad) >= 1
        assert run.stream("syn").error_counts == {}  # a clean meter: nothing rebuilt there
    info = CliRunner().invoke(cli, ["info", str(out)])
    assert f"run errors: bad_mark={max(bad)}, mark_refused=1" in info.output, info.output


def test_rebuilt_counts_take_only_named_kinds_with_whole_running_counts():
    events = [Event(1.0, "error", "", {"kind": "bad_mark", "count": 1}),
              Event(2.0, "error", "", {"kind": "bad_mark", "count": 5}),
              Event(3.0, "error", "", {"kind": "bad_mark", "count": 4}),  # out of order: still 5
              Event(4.0, "error", "", {"kind": "duration", "message": "--duration reached"}),
              Event(5.0, "error", "wall", {"kind": "timeout", "count": 2}),
              Event(6.0, "mark", "", {"kind": "x", "count": 9}),
              *(Event(7.0, "error", "", {"kind": k, "count": n})
                for k, n in (("a", True), ("b", -1), ("c", "3"), ("", 2), (None, 2), ("d", 1.5)))]
    assert counts_from_events(events) == {"": {"bad_mark": 5}, "wall": {"timeout": 2}}


def test_a_journal_without_stop_rebuilds_each_streams_counts_and_no_crafted_name_reaches_others(tmp_path):
    """Per-stream counts come back from the stream's own error events; an event naming "." or
    "/" or "wall/t" (h5py finds all three in the streams group) writes nowhere."""
    out = tmp_path / "run.h5"
    events = [Event(0.005, "workload_start", "", {"command": ["python", "train.py"], "pid": 42}),
              Event(0.1, "error", "wall", {"kind": "timeout", "count": 1}),
              Event(0.3, "error", "wall", {"kind": "timeout", "count": 7}),
              Event(0.4, "error", "wall", {"kind": "bad_checksum", "count": 2}),
              Event(0.5, "error", "", {"kind": "bad_mark", "count": 3}),
              *(Event(0.6, "error", name, {"kind": "crafted", "count": 99}) for name in (".", "/", "wall/t"))]
    write_journal(out, documents(n=50, events=events)[:-1])  # killed: no stop record
    res = _recover(out)
    assert res.exit_code == 0, res.output
    with open_run(out) as run:
        assert not run.complete and run.attrs["recovered"]
        assert run.stream("wall").error_counts == {"timeout": 7, "bad_checksum": 2}
        assert run.error_counts == {"bad_mark": 3}
    with h5py.File(out, "r") as f:
        assert "error_counts" not in f["streams"].attrs
        assert "error_counts" not in f["streams"]["wall"]["t"].attrs

"""`hwval info` shows what a reader must know: stop reason, emulated streams, lost marks; one gap
count in text and JSON; strings from the file escaped; the command as a shell would take it."""

from __future__ import annotations

import json

import h5py
from click.testing import CliRunner

from hwval.cli import cli
from hwval.runfile.documents import Descriptor, Event, Page, Stop
from runfile_builder import documents, start_doc, stream_info, write_file


def _info(path, *extra):
    res = CliRunner().invoke(cli, ["info", str(path), *extra])
    assert res.exit_code == 0, res.output
    return res.output


def test_a_run_stopped_by_sigint_does_not_read_as_a_full_one(tmp_path):
    out = tmp_path / "run.h5"
    write_file(out, documents(stop=Stop(exit_code=0, complete=True, reason="stopped by SIGINT")))
    text = _info(out)
    assert "complete: yes (stopped early: stopped by SIGINT)" in text
    assert json.loads(_info(out, "--json"))["stop_reason"] == "stopped by SIGINT"
    write_file(out, documents())
    assert "stopped early" not in _info(out) and json.loads(_info(out, "--json"))["stop_reason"] is None


def test_emulated_streams_and_lost_marks_are_shown(tmp_path):
    out = tmp_path / "run.h5"
    docs = documents(streams=("wall",))
    docs.insert(2, Descriptor(stream_info("gpu", emulated=False)))
    write_file(out, docs)
    text = _info(out)
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.startswith(("wall ", "gpu "))}
    assert rows["wall"][3] == "yes" and rows["gpu"][3] == "-"
    assert "warning: emulated (not real meters): wall" in text
    assert "marks lost" not in text and json.loads(_info(out, "--json"))["marks_lost"] is None
    with h5py.File(out, "r+") as f:
        f.attrs["marks_lost"] = 7
    text = _info(out)
    assert "marks lost: 7" in text and "warning: 7 marks sent by the workload were lost" in text
    summary = json.loads(_info(out, "--json"))
    assert summary["marks_lost"] == 7 and {s["name"]: s["emulated"] for s in summary["streams"]} == {"wall": True, "gpu": False}


def test_control_characters_from_the_file_never_reach_the_terminal(tmp_path):
    out = tmp_path / "run.h5"
    evil = "\x1b]0;owned\x07\x1b[2J"
    docs = documents(start=start_doc(hostname=f"lab{evil}", command=("python", f"x{evil}.py")),
                     events=[Event(0.1, f"mark{evil}", "", {"mark": evil}),
                             Event(0.2, "error", "wall", {"kind": f"k{evil}"})])
    write_file(out, docs)
    with h5py.File(out, "r+") as f:
        f.move("streams/wall", f"streams/w{evil}")
        f[f"streams/w{evil}"].attrs["error_counts"] = json.dumps({f"timeout{evil}": 2})
    text = _info(out)
    assert "\x1b" not in text and "\x07" not in text
    assert "lab\\x1b]0;owned\\x07\\x1b[2J" in text and "w\\x1b]0;owned" in text and "timeout\\x1b" in text
    # --json is for programs: JSON escapes the same characters itself
    raw = _info(out, "--json")
    assert "\x1b" not in raw and json.loads(raw)["hostname"] == f"lab{evil}"


def test_the_command_is_printed_as_a_shell_would_take_it(tmp_path):
    out = tmp_path / "run.h5"
    write_file(out, documents(start=start_doc(command=("python", "my train.py", "--tag", "a'b"))))
    assert "command: python 'my train.py' --tag 'a'\"'\"'b'  exit code: 0" in _info(out)


def test_one_gap_count_in_text_and_json(tmp_path):
    """Three gap_start events, one long interval holding one of them, one long interval without
    an event: 4 gaps in both forms (the text table once counted 3 + 2)."""
    out = tmp_path / "run.h5"
    docs = documents(n=300, events=[Event(0.5, "gap_start", "wall", {"reason": "timeout"}),
                                    Event(0.6, "gap_end", "wall", {}),
                                    Event(1.05, "gap_start", "wall", {"reason": "unplugged"}),
                                    Event(1.25, "gap_end", "wall", {}),
                                    Event(2.5, "gap_start", "wall", {"reason": "timeout"}),
                                    Event(2.55, "gap_end", "wall", {})])
    pages = [d for d in docs if isinstance(d, Page)]
    # readings 100..119 missing (t 1.01 .. 1.20): explained by the event at 1.05; readings
    # 200..219 missing: nothing explains it
    docs = [d for d in docs if d is not pages[5] and d is not pages[10]]
    write_file(out, docs)
    (stream,) = json.loads(_info(out, "--json"))["streams"]
    assert (stream["gaps"], stream["gap_events"], stream["unflagged_gaps"]) == (4, 3, 1)
    row = next(line for line in _info(out).splitlines() if line.startswith("wall "))
    assert row.split()[6] == "4"


def test_many_events_list_the_first_and_count_the_rest(tmp_path):
    out = tmp_path / "run.h5"
    write_file(out, documents(events=[Event(0.001 * i, "mark", "", {"mark": "step", "i": i}) for i in range(95)]))
    text = _info(out)
    assert "events: 95" in text and "... 55 more (use --json)" in text
    events = json.loads(_info(out, "--json"))["events"]
    assert [e["detail"]["i"] for e in events] == list(range(95))


def test_run_level_error_counts_are_shown_in_text_and_json(tmp_path):
    """Errors of stream "" (unreadable or refused marks) are counted on the root, not only as
    rate-limited events; info shows them beside the per-stream ones."""
    out = tmp_path / "run.h5"
    counts = {"bad_mark": 3, "mark_refused": 2}
    write_file(out, documents(stop=Stop(exit_code=0, complete=True, error_counts=counts, stream_stats={
        "wall": {"dropped": 0, "error_counts": {"timeout": 1}, "missed_deadlines": 0}})))
    with h5py.File(out, "r") as f:
        assert json.loads(f.attrs["error_counts"]) == counts
    text = _info(out)
    assert "run errors: bad_mark=3, mark_refused=2" in text
    summary = json.loads(_info(out, "--json"))
    assert summary["error_counts"] == counts and summary["streams"][0]["error_counts"] == {"timeout": 1}
    write_file(out, documents())  # none: written as {}, and no line
    assert "run errors" not in _info(out) and json.loads(_info(out, "--json"))["error_counts"] == {}

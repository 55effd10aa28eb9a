from __future__ import annotations

import importlib
import os
import stat
import subprocess
import sys
import timeit

import hwval.markers as markers
from hwval.capture.marker_server import MarkerServer


def test_mark_outside_capture_is_a_sub_microsecond_no_op(monkeypatch):
    monkeypatch.delenv(markers.ENV_SOCKET, raising=False)
    mod = importlib.reload(markers)
    assert mod._SOCKET_PATH is None
    n = 200_000
    best = min(timeit.repeat(lambda: mod.mark("x", a=1), number=n, repeat=5)) / n
    assert best < 1e-6, f"mark() costs {best * 1e9:.0f} ns outside a capture"


def test_server_is_private_and_records_marks():
    got, errors = [], []
    server = MarkerServer(lambda *a: got.append(a), lambda *a: errors.append(a))
    try:
        mode = stat.S_IMODE(os.stat(server.dir).st_mode)
        assert mode == 0o700
        server.start()
        code = ("import hwval, time; t=time.monotonic_ns(); hwval.mark('m', k=[1,2]); print(t)")
        out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **server.env},
                             capture_output=True, text=True, check=True)
        t_before = int(out.stdout)
    finally:
        server.close()
    assert not os.path.exists(server.dir)
    ((name, stream, t_ns, detail),) = got
    assert name == "mark" and stream == "" and detail["mark"] == "m" and detail["k"] == [1, 2]
    assert 0 <= t_ns - t_before < 50_000_000
    assert not errors


def test_garbage_datagrams_are_counted_not_fatal():
    got, errors = [], []
    server = MarkerServer(lambda *a: got.append(a), lambda *a: errors.append(a))
    try:
        server.handle(b"\xff not json")
        server.handle(b'{"name": "x"}')
        server.handle(b'{"t_ns": 5, "name": "ok", "detail": {}}')
    finally:
        server.close()
    assert len(errors) == 2 and errors[0][1] == "bad_mark"
    assert len(got) == 1


def test_mark_after_capture_ended_warns_once_and_does_not_raise(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(markers.ENV_SOCKET, str(tmp_path / "gone.sock"))
    mod = importlib.reload(markers)
    try:
        mod.mark("a")
        mod.mark("b")
        err = capsys.readouterr().err
        assert err.count("could not reach the capture") == 1
    finally:
        monkeypatch.delenv(markers.ENV_SOCKET)
        importlib.reload(markers)

"""The training workload end to end, as a capture runs it: a real process, its marks sent over the
capture's real marker socket (hwval.capture.marker_server), its --json-out file, save/infer."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")

from hwval.capture.marker_server import MarkerServer  # noqa: E402

# Tiny and single-threaded: the machine running the tests is shared.
TINY = ["--width", "4", "--batch-size", "16", "--train-samples", "64", "--eval-samples", "32", "--threads", "1"]


def run_marked(module: str, *args: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """Run ``python -m module args`` with HWVAL_MARK_SOCKET pointing at a live marker server."""
    marks, errors = [], []
    server = MarkerServer(lambda name, stream, t_ns, detail: marks.append({"t_ns": t_ns, **detail}),
                          lambda *a: errors.append(a))
    server.start()
    try:
        env = {**os.environ, **server.env, "PYTHONUNBUFFERED": "1"}
        res = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                             timeout=120, env=env)
    finally:
        server.close()
    assert not errors, errors
    return res, marks


def names(marks):
    return [m["mark"] for m in marks]


def finite(x):
    return isinstance(x, float) and math.isfinite(x)


def test_two_epochs_mark_every_phase_with_loss_and_accuracy(tmp_path):
    out = tmp_path / "m.json"
    res, marks = run_marked("hwval.workloads.train", "--arch", "resnet", "--epochs", "2",
                            "--batches-per-epoch", "2", "--json-out", str(out), *TINY)
    assert res.returncode == 0, res.stderr
    assert names(marks) == ["idle_before", "train_start",
                            "epoch_start", "epoch", "eval_start", "eval",
                            "epoch_start", "epoch", "eval_start", "eval",
                            "train_end", "idle_after"]
    assert [m["t_ns"] for m in marks] == sorted(m["t_ns"] for m in marks)

    epochs = [m for m in marks if m["mark"] == "epoch"]
    assert [m["epoch"] for m in epochs] == [1, 2]
    for m in epochs:
        assert m["phase"] == "train" and finite(m["loss"]) and 0.0 <= m["accuracy"] <= 1.0
        assert m["samples"] == 2 * 16 and m["batches"] == 2 and m["duration_s"] > 0
    evals = [m for m in marks if m["mark"] == "eval"]
    assert [m["epoch"] for m in evals] == [1, 2]
    assert all(m["phase"] == "eval" and finite(m["loss"]) and m["samples"] == 32 for m in evals)

    start = marks[1]
    assert start["arch"] == "resnet" and start["width"] == 4 and start["depth"] == 2
    assert start["params"] > 0 and start["macs"] == start["macs_conv"] + start["macs_linear"] > 0
    assert start["data"] == {"source": "synthetic", "classes": 10, "train_samples": 64, "eval_samples": 32,
                             "sample_shape": [3, 32, 32]}
    assert start["device"] == "cpu" and start["threads"] == 1 and start["optimizer"] == "sgd"
    end = marks[-2]
    assert end["epochs"] == 2 and end["samples"] == 64 and end["loss"] == epochs[-1]["loss"]
    assert end["eval_accuracy"] == evals[-1]["accuracy"]

    # stdout: one line per epoch
    assert [line.split(":")[0] for line in res.stdout.splitlines()] == ["epoch 1/2", "epoch 2/2"]

    doc = json.loads(out.read_text())
    assert doc["format"] == "hwval-workload-metrics" and doc["mode"] == "train"
    assert [e["epoch"] for e in doc["epochs"]] == [1, 2]
    for rec, mark in zip(doc["epochs"], epochs):
        assert rec["loss"] == mark["loss"] and rec["accuracy"] == mark["accuracy"]
        # CLOCK_MONOTONIC bounds of the epoch: bracket the marks' own stamps
        assert rec["start_ns"] <= mark["t_ns"] <= rec["end_ns"]
        assert rec["eval"]["start_ns"] >= rec["end_ns"]
    assert doc["summary"]["epochs"] == 2 and doc["workload"]["params"] == start["params"]


@pytest.fixture
def marks_here(monkeypatch):
    """Marks of workloads run in this process, through a live marker server (no torch start-up
    per run: the subprocess test above covers the real process boundary)."""
    import torch

    import hwval.markers as markers

    marks, errors = [], []
    server = MarkerServer(lambda name, stream, t_ns, detail: marks.append({"t_ns": t_ns, **detail}),
                          lambda *a: errors.append(a))
    server.start()
    threads = torch.get_num_threads()
    monkeypatch.setattr(markers, "_SOCKET_PATH", server.path)
    monkeypatch.setattr(markers, "_sock", None)
    yield marks
    if markers._sock is not None:
        markers._sock.close()
    server.close()
    torch.set_num_threads(threads)
    assert not errors, errors


def take(marks):
    got = list(marks)
    marks.clear()
    return got


def test_saved_weights_reproduce_the_last_evaluation_in_infer_mode(tmp_path, marks_here, capsys):
    from hwval.workloads.train import main

    ckpt = tmp_path / "w.pt"
    assert main(["--epochs", "1", "--batches-per-epoch", "3", "--save", str(ckpt), *TINY]) == 0
    # marks are datagrams: wait until the server has them all (it drains on close; here it runs on)
    last_eval = [m for m in wait_for(marks_here, "idle_after") if m["mark"] == "eval"][-1]

    assert main(["--mode", "infer", "--epochs", "2", "--checkpoint", str(ckpt), *TINY]) == 0
    marks = wait_for(marks_here, "idle_after")
    assert names(marks) == ["idle_before", "infer_start", "infer_pass_start", "infer_pass",
                            "infer_pass_start", "infer_pass", "infer_end", "idle_after"]
    passes = [m for m in marks if m["mark"] == "infer_pass"]
    assert [p["pass"] for p in passes] == [1, 2]
    for p in passes:
        # the whole evaluation split (32 samples in 2 batches of 16), through the trained weights
        assert p["phase"] == "infer" and p["samples"] == 32 and p["batches"] == 2
        assert p["accuracy"] == last_eval["accuracy"]
        assert p["loss"] == pytest.approx(last_eval["loss"], rel=1e-5)
    assert marks[1]["checkpoint"] == str(ckpt) and marks[-2]["samples"] == 64
    assert [line.split(":")[0] for line in capsys.readouterr().out.splitlines()][-2:] == ["pass 1/2", "pass 2/2"]

    # a checkpoint for another model is refused in one line
    assert main(["--mode", "infer", "--checkpoint", str(ckpt), *TINY, "--width", "8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"hwval: error: --checkpoint {ckpt}: saved for a different model or data: "
                          "width 4 (here 8)")
    assert err.count("\n") == 1


def wait_for(marks, last: str, timeout_s: float = 10.0) -> list[dict]:
    import time

    deadline = time.monotonic() + timeout_s
    while not (marks and marks[-1]["mark"] == last) and time.monotonic() < deadline:
        time.sleep(0.01)
    return take(marks)


def test_cnn_alias_keeps_its_command_line_and_passes_train_options_through(marks_here):
    from hwval.workloads.cnn import main

    assert main(["--epochs", "1", "--batches", "1", "--idle-s", "0", "--arch", "mobilenet",
                 "--eval-batches", "0", *TINY]) == 0
    marks = wait_for(marks_here, "idle_after")
    assert names(marks) == ["idle_before", "train_start", "epoch_start", "epoch", "train_end", "idle_after"]
    assert marks[1]["arch"] == "mobilenet" and marks[1]["batches_per_epoch"] == 1


@pytest.mark.parametrize("args,message", [
    (["--mode", "infer", "--lr", "0.1"], "--lr applies to train only, not infer"),
    (["--width", "0"], "--width must be at least 1 (got 0)"),
    (["--classes", "3", "--data", "x.npz"], "--classes applies to --data synthetic only (got --data x.npz)"),
    (["--device", "gpu"], "--device must be auto, cpu, cuda or cuda:N (got 'gpu')"),
])
def test_bad_options_are_one_line_errors(args, message, capsys):
    from hwval.workloads.train import main

    assert main(args) == 2
    assert capsys.readouterr().err == f"hwval: error: {message}\n"


def test_training_learns_the_synthetic_classes(marks_here):
    # the loop really trains: the training loss falls every epoch and the held-out accuracy ends
    # far above chance (10 classes: 0.1); seeded, single-threaded, so the run repeats
    from hwval.workloads.train import main

    assert main(["--width", "8", "--epochs", "3", "--batch-size", "32", "--train-samples", "512",
                 "--eval-samples", "256", "--threads", "1"]) == 0
    marks = wait_for(marks_here, "idle_after")
    losses = [m["loss"] for m in marks if m["mark"] == "epoch"]
    accuracy = [m["accuracy"] for m in marks if m["mark"] == "eval"]
    assert len(losses) == len(accuracy) == 3
    assert losses[0] > losses[1] > losses[2] and losses[2] < 0.8 * losses[0], losses
    assert accuracy[-1] > 0.25, accuracy


def test_cuda_asked_for_where_there_is_none_is_one_line(capsys):
    import torch

    from hwval.workloads.train import main

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["--device", "cuda:0", *TINY]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hwval: error: --device cuda:0: CUDA is not available here (torch ") and err.count("\n") == 1
    assert err.rstrip().endswith("use --device cpu or auto")

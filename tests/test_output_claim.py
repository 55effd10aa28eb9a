"""Exclusive outputs: a capture creates its run file and journal exclusively, so no second
capture (same name, same second, --force) can empty a live or unrecovered run."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import popen_hwval
from hwval.capture.session import CaptureError, CaptureRequest, resolve_output
from hwval.cli import cli
from hwval.config import CaptureConfig, SoftwareConfig
from hwval.runfile.claim import OutputRefused, claim_output
from hwval.runfile.journal import journal_in_use, journal_path
from hwval.runfile.reader import open_run

SYN = "synthetic:constant:100?period_s=0.01&name=syn"
NO_SW = ["--no-nvml", "--no-rapl"]


def _capture(*args):
    return CliRunner().invoke(cli, ["capture", *NO_SW, "-m", SYN, *args])


def test_generated_names_in_the_same_second_are_distinct(tmp_path):
    # {date} only: the same name for every capture of the day, so the test cannot pass by the
    # clock ticking between the two claims
    cfg = CaptureConfig(output=str(tmp_path / "{date}.h5"), path="lab.toml")
    first = resolve_output(CaptureRequest(config=cfg), "a")
    second = resolve_output(CaptureRequest(config=cfg), "b")
    try:
        assert first.path != second.path
        assert second.path.name == f"{first.path.stem}-2.h5"
        assert first.path.exists() and second.path.exists()
        assert journal_in_use(first.path) and journal_in_use(second.path)
    finally:
        first.release()
        second.release()
    assert not list(tmp_path.iterdir())


def test_a_live_capture_is_never_emptied_by_a_second_one(tmp_path):
    out = tmp_path / "run.h5"
    first = popen_hwval("capture", *NO_SW, "-m", SYN, "--duration", "2", "-o", str(out))
    try:
        deadline = time.monotonic() + 20
        while not journal_in_use(out):
            assert time.monotonic() < deadline and first.poll() is None, first.communicate()
            time.sleep(0.02)
        for extra in ([], ["--force"]):
            res = _capture("--duration", "0.2", "-o", str(out), *extra)
            assert res.exit_code == 2, res.output
            assert "being written by another capture" in res.output
        _, err = first.communicate(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err
    with open_run(out) as run:
        assert run.complete and len(run.stream("syn").t) > 50


def test_claim_race_on_the_journal_is_refused(tmp_path):
    out = tmp_path / "run.h5"
    held = claim_output(out)
    try:
        with pytest.raises(OutputRefused, match="being written by another capture"):
            claim_output(out, force=True)
    finally:
        held.release()
    assert not out.exists() and not journal_path(out).exists()


def test_force_never_touches_a_leftover_journal(tmp_path):
    out = tmp_path / "run.h5"
    out.write_bytes(b"partial run")
    journal_path(out).write_bytes(b"journal of a killed capture")
    res = _capture("--duration", "0.2", "-o", str(out), "--force")
    assert res.exit_code == 2
    assert len(res.output.strip().splitlines()) == 1
    assert f"hwval recover {out}" in res.output and "--force does not overwrite" in res.output
    assert out.read_bytes() == b"partial run"
    assert journal_path(out).read_bytes() == b"journal of a killed capture"


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs procfs (Linux)")
def test_output_in_a_pseudo_filesystem_fails_before_the_workload(tmp_path):
    # /proc refuses file creation even to root, where os.access(W_OK) says yes
    marker = tmp_path / "workload-ran"
    res = _capture("-o", "/proc/self/x.h5", "--", "touch", str(marker))
    assert res.exit_code == 2, res.output
    assert "/proc/self/x.h5" in res.output and len(res.output.strip().splitlines()) == 1
    assert not marker.exists()


@pytest.mark.parametrize("folder", ["/sys", "/proc/self"])
def test_a_folder_that_refuses_files_is_one_line_saying_why(tmp_path, folder):
    """As root, /sys passes every permission check and still refuses the file: the line must not
    send root looking for a permission problem, and must say what to do."""
    if not os.path.isdir(folder):
        pytest.skip(f"no {folder} here")
    res = _capture("-o", f"{folder}/x.h5", "--duration", "1")
    assert res.exit_code == 2, res.output
    (line,) = res.output.strip().splitlines()
    assert line.startswith(f"hwval: error: output {folder}/x.h5: directory {folder} ")
    if os.access(folder, os.W_OK):  # root on /sys: the permissions allow it, the filesystem does not
        assert "does not accept new files" in line and "not writable by this user" not in line
        assert line.endswith("(a virtual filesystem such as /sys or /proc); choose another -o on a disk")
    else:  # a user without write permission is told so; procfs refuses with ENOENT whoever asks
        assert ("is not writable by this user; choose another -o" in line
                or "does not accept new files (No such file or directory)" in line)


def test_read_only_folder_fails_up_front(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    req = CaptureRequest(config=CaptureConfig(), output=str(ro / "x.h5"))
    if os.geteuid() == 0:
        pytest.skip("root writes into a 0555 folder; the /proc case covers root")
    with pytest.raises(CaptureError, match="not writable"):
        resolve_output(req, "id")


def test_output_under_a_regular_file_says_so(tmp_path):
    blocker = tmp_path / "file.h5"
    blocker.write_text("x")
    res = _capture("--duration", "0.2", "-o", str(blocker / "x.h5"))
    assert res.exit_code == 2
    assert f"{blocker} is a file, not a folder" in res.output


def test_config_output_does_not_create_folders(tmp_path):
    cfg = tmp_path / "lab.toml"
    target = tmp_path / "typo" / "runs"
    cfg.write_text(f'output = "{target}/{{date}}-{{time}}.h5"\n[software]\nnvml = false\nrapl = false\n')
    res = CliRunner().invoke(cli, ["capture", "-c", str(cfg), "-m", SYN, "--duration", "0.2"])
    assert res.exit_code == 2, res.output
    assert f"mkdir -p {target}" in res.output and str(cfg) in res.output
    assert not (tmp_path / "typo").exists()


def test_default_output_creates_runs_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = CaptureConfig(software=SoftwareConfig(nvml=False, rapl=False))
    claim = resolve_output(CaptureRequest(config=cfg, notes=io.StringIO()), "id")
    try:
        assert claim.path.parent.resolve() == (tmp_path / "runs").resolve()
        assert claim.path.exists()
    finally:
        claim.release()



def _claim_message(path: Path, uid: int | None) -> str:
    """The refusal of claiming ``path``, claimed by a forked child running as ``uid`` (root
    passes every permission check, so a real refusal needs another user); "" when it succeeds."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: only modules already imported, and never back into pytest
        status = 1
        try:
            os.close(read_fd)
            if uid is not None:
                os.setgroups([])
                os.setresgid(uid, uid, uid)
                os.setresuid(uid, uid, uid)
            try:
                claim_output(path).release()  # a claim that should have failed leaves nothing
                message = ""
            except OutputRefused as exc:
                message = str(exc)
            os.write(write_fd, message.encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as fh:
        message = fh.read().decode()
    assert os.waitpid(pid, 0)[1] == 0
    return message


def test_a_writable_folder_without_search_permission_is_a_permission_problem(tmp_path):
    """Creating a file needs w and x on the folder: a folder with w only refuses the create, and
    the line must say so, not blame a virtual filesystem. As root the claim runs as ``nobody``."""
    root = os.geteuid() == 0
    # under /tmp, not tmp_path: nobody must reach the folder, and pytest's base is root's 0700
    base = Path(tempfile.mkdtemp(prefix="hwval-noexec-", dir="/tmp")) if root else tmp_path
    folder = base / "w-only"
    folder.mkdir()
    # w and no x for the claiming user: nobody is "others" (0o002) when root claims, the owner
    # (0o200) otherwise
    folder.chmod(0o702 if root else 0o200)
    base.chmod(0o755)
    try:
        message = _claim_message(folder / "x.h5", 65534 if root else None)
    finally:
        folder.chmod(0o700)
        if root:
            shutil.rmtree(base)
    assert message == (f"output {folder}/x.h5: directory {folder} is not searchable by this "
                       "user (no x permission); choose another -o")

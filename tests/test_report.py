"""``hwval report`` rendered by a real browser (headless Chromium): it loads with no console
message, every figure has content, the numbers shown are those stored in /analysis, and text
from streams, marks and devices arrives escaped."""

from __future__ import annotations

import hashlib
import html
import html.parser
import json
import math
import re
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from hwval.cli import cli
from hwval.runfile import open_run
from report_runs import HOSTILE_IDENTITY, HOSTILE_MARK, HOSTILE_STREAM, write_report_run

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                                    "(.ci/run installs it: apt-get install -y chromium)")
NUMBER = re.compile(r"[-+]?\d+(?:\.(\d+))?")


def _invoke(*args):
    res = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return res


def chromium(tmp_path, url: str, *args: str) -> subprocess.CompletedProcess:
    """One headless Chromium run; its stderr carries every console message as ``CONSOLE``."""
    profile = tmp_path / f"chromium-profile-{len(list(tmp_path.glob('chromium-profile-*')))}"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--no-first-run", "--disable-extensions", f"--user-data-dir={profile}", "--enable-logging=stderr",
           "--v=0", *args, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


class Dom(html.parser.HTMLParser):
    """The rendered DOM: numbers by (entry, key), figures' element counts, every tag and text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.numbers: list[tuple[str, str, str]] = []
        self.figures: list[dict] = []
        self.text: list[str] = []
        self._open_number: list | None = None
        self._depth_number = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "figure":
            self.figures.append({"kind": a.get("data-figure"), "svg": 0, "drawn": 0, "text": 0})
        elif self.figures and self.figures[-1].get("open", True):
            fig = self.figures[-1]
            fig["svg"] += tag == "svg"
            fig["drawn"] += tag in ("path", "use", "polyline", "rect", "line")
            fig["text"] += tag == "text"
        if "data-entry" in a and "data-key" in a and self._open_number is None:
            self._open_number = [a["data-entry"], a["data-key"], ""]
            self._depth_number = 0
        elif self._open_number is not None:
            self._depth_number += 1

    def handle_endtag(self, tag):
        if tag == "figure" and self.figures:
            self.figures[-1]["open"] = False
        if self._open_number is not None:
            if self._depth_number == 0:
                self.numbers.append(tuple(self._open_number))
                self._open_number = None
            else:
                self._depth_number -= 1

    def handle_data(self, data):
        self.text.append(data)
        if self._open_number is not None:
            self._open_number[2] += data


def _stored(analysis, entry: str, key: str) -> float:
    parts = entry.split("/")
    e = analysis[parts[0]]
    for child in parts[1:]:
        e = e.children[child]
    return float(e.attrs[key])


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    """A synced, analysed and validated run, and its report."""
    tmp = tmp_path_factory.mktemp("report")
    path = tmp / "run.h5"
    write_report_run(path)
    assert _invoke("sync", path).exit_code == 0
    res = _invoke("analyze", path, "--resamples", "200")
    assert res.exit_code == 0, res.output
    assert _invoke("analyze", path, "--epochs").exit_code == 0
    res = _invoke("validate", path, "--candidate", "rapl_package_0", "--max-energy-error-pct", "5",
                  "--resamples", "100")
    assert res.exit_code == 1 and "FAIL" in res.output     # it reads 40 % of the wall
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    out = tmp / "report.html"
    res = _invoke("report", path, "-o", out)
    assert res.exit_code == 0, res.output
    assert "computed" not in res.output                      # everything came from the file
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    return tmp, path, out


@needs_chromium
def test_report_renders_in_chromium_with_stored_numbers_and_escaped_text(analysed):
    tmp, path, out = analysed
    url = out.resolve().as_uri()
    dumped = chromium(tmp, url, "--dump-dom")
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    console = [line for line in dumped.stderr.splitlines() if "CONSOLE" in line]
    assert console == [], console
    shot = tmp / "report.png"
    shown = chromium(tmp, url, f"--screenshot={shot}", "--window-size=1200,3000")
    assert shown.returncode == 0 and [ln for ln in shown.stderr.splitlines() if "CONSOLE" in ln] == []
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1200, 3000)
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 200         # text, curves and shading, not a blank page

    dom = Dom()
    dom.feed(dumped.stdout)
    # every figure: one svg with curves, axes and labels
    kinds = [f["kind"] for f in dom.figures]
    assert kinds.count("lag") == 3                             # wall, rapl, the hostile stream
    for kind in ("timeseries", "scatter", "bland-altman"):
        assert kinds.count(kind) == 3, kinds                   # two software streams + software_total
    for fig in dom.figures:
        assert fig["svg"] == 1 and fig["drawn"] >= 15 and fig["text"] >= 5, fig

    # the numbers shown are the stored ones (parsed from the page, compared within its rounding)
    compared = 0
    with open_run(path) as run:
        analysis = run.read_derived("analysis")
    for entry, key, text in dom.numbers:
        m = NUMBER.search(text)
        assert m, (entry, key, text)
        stored = _stored(analysis, entry, key)
        if not math.isfinite(stored):
            assert text.strip() == "-"
            continue
        half_ulp = 0.5 * 10.0 ** -len(m.group(1) or "")
        assert abs(float(m.group(0)) - stored) <= half_ulp + 1e-9, (entry, key, text, stored)
        compared += 1
    assert compared >= 3 * 13 + 3 * 4                          # each comparison's metrics and its phases
    # and the per-epoch energies are /analysis/epochs__wall's
    cells = re.findall(r'data-epoch="([^"]*)" data-stream="([^"]*)" data-key="energy_j">([^<]*)<', dumped.stdout)
    assert len(cells) >= 3 * 3
    ep = analysis["epochs__wall"]
    names = json.loads(ep.attrs["intervals"]) if isinstance(ep.attrs["intervals"], str) else ep.attrs["intervals"]
    for interval, stream, text in cells:
        stored = float(ep.children[html.unescape(stream)].datasets["energy_j"][names.index(html.unescape(interval))])
        assert abs(float(text) - stored) <= 0.05 + 1e-9, (interval, stream, text, stored)
    entries = {e for e, _, _ in dom.numbers}
    assert f"{HOSTILE_STREAM}__vs__wall" in entries and "software_total__vs__wall" in entries

    # escaped: no script or injected element anywhere, the hostile text shown as text
    raw = out.read_text()
    assert "<script" not in raw.lower() and "<img" not in raw.lower()
    assert "&lt;script&gt;alert(&#39;stream&#39;)" in raw
    tags = {t for t, _ in dom.tags}
    assert "script" not in tags and "img" not in tags
    text = "".join(dom.text)
    for hostile in (HOSTILE_STREAM, HOSTILE_MARK, HOSTILE_IDENTITY):
        assert hostile in text, hostile
    # self-contained: nothing points outside the page
    for tag, attrs in dom.tags:
        for name in ("src", "href", "xlink:href"):
            value = attrs.get(name)
            assert value is None or value.startswith("#") or value.startswith("data:"), (tag, name, value)
    # the verdict and the emulated banner
    assert "FAIL" in text and "EMULATED METERS" in text


def test_report_computes_missing_stages_in_memory_and_saves_only_when_asked(tmp_path):
    path = tmp_path / "run.h5"
    write_report_run(path, seed=5)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    out = tmp_path / "mem.html"
    res = _invoke("report", path, "-o", out)
    assert res.exit_code == 0, res.output
    assert "computed sync, analysis, epochs in memory, not saved" in res.output
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest      # never written
    page = out.read_text()
    assert "in memory (the run file was not changed" in page
    with open_run(path) as run:
        assert run.read_derived("sync") == {} and run.read_derived("analysis") == {}

    res = _invoke("report", path, "-o", tmp_path / "saved.html", "--save")
    assert res.exit_code == 0 and "saved into" in res.output
    with open_run(path) as run:
        sync = run.read_derived("sync")
        analysis = run.read_derived("analysis")
        assert sync["wall"].attrs["method"] == "pulse_fit"
        assert {"rapl_package_0__vs__wall", "software_total__vs__wall", "epochs__wall"} <= set(analysis)
        bias = analysis["rapl_package_0__vs__wall"].attrs["bias_w"]
    # the saved numbers are the ones the in-memory report showed
    dom = Dom()
    dom.feed(page)
    shown = {(e, k): t for e, k, t in dom.numbers}
    assert float(shown[("rapl_package_0__vs__wall", "bias_w")]) == pytest.approx(bias, abs=0.005)
    # a second report reads what was saved and computes nothing
    res = _invoke("report", path, "-o", tmp_path / "again.html")
    assert res.exit_code == 0 and "computed" not in res.output


def test_report_counts_each_gap_once_and_names_timing_gaps_no_event_explains(tmp_path):
    from hwval.runfile.info import summarize

    path = tmp_path / "run.h5"
    write_report_run(path, seed=5, cut_wall_s=(10.0, 12.0))
    with open_run(path) as run:
        wall = next(s for s in summarize(run)["streams"] if s["name"] == "wall")
    assert wall["unflagged_gaps"] == 1 and wall["gap_events"] == 0 and wall["gaps"] == 1
    # the page without its figures (they are not what is tested, and they take most of the time)
    from hwval.report.gather import gather
    from hwval.report.overlay import DerivedOverlay
    from hwval.report.page import render
    with open_run(path) as run:
        data = gather(DerivedOverlay(run))
    blank = {c.entry: "" for c in data.comparisons}
    page = render(data, {"lag": {name: "" for name in data.sync}, "ts": blank, "scatter": blank, "ba": blank},
                  "", str(tmp_path / "r.html"))
    assert 'id="no-gaps"' not in page
    assert 'id="timing-gaps"' in page and "1 timing gap with no gap event" in page
    # the meters table's gaps column: the summary's own count, not gaps + gap events again
    row = re.search(r"<tr><td>wall</td>.*?</tr>", page, re.S).group(0)
    cells = re.findall(r'<td class="num">([^<]*)</td>', row)
    assert cells[2] == "1", row


def test_report_of_a_missing_or_foreign_file_is_one_line(tmp_path):
    res = CliRunner().invoke(cli, ["report", str(tmp_path / "nope.h5")])
    assert res.exit_code == 2 and res.output.strip().splitlines() == [f"hwval: error: {tmp_path / 'nope.h5'}: no such file"]
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    res = CliRunner().invoke(cli, ["report", str(junk)])
    assert res.exit_code == 2 and "not an HDF5 file" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "junk.html").exists()

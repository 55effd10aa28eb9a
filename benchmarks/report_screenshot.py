"""The README's picture of a report: `hwval demo` at its defaults, its report rendered by headless
Chromium, and how long the demo took.

    python benchmarks/report_screenshot.py [-o docs/report.png] [--width 1100] [--height 2600]

Needs Debian's ``chromium`` (``apt-get install -y chromium``). The picture shows the report's header
(the emulated-meters banner) and its first comparisons (aligned curves, scatter with the
calibration line, Bland-Altman plot, per-phase table): a copy of the page is rendered with the
run summary and synchronisation sections hidden (headless Chromium does not scroll to an anchor
before its screenshot). The report itself is unchanged.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-o", "--output", default="docs/report.png")
    ap.add_argument("--width", type=int, default=1100)
    ap.add_argument("--height", type=int, default=2600)
    ap.add_argument("--whole", action="store_true", help="the page from its top, nothing hidden")
    args = ap.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        print("chromium not found: apt-get install -y chromium", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "demo"
        t0 = time.monotonic()
        res = subprocess.run([sys.executable, "-m", "hwval.cli", "demo", "--workdir", str(work)],
                             capture_output=True, text=True)
        took_s = time.monotonic() - t0
        if res.returncode:
            print(res.stdout[-3000:], res.stderr[-3000:], file=sys.stderr)
            return 1
        page = (work / "report.html").read_text()
        if not args.whole:
            page = page.replace("</head>", "<style>#summary, #sync { display: none; }</style></head>", 1)
        shown = work / "shown.html"
        shown.write_text(page)
        url = shown.resolve().as_uri()
        out = Path(args.output).resolve()
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--hide-scrollbars", f"--user-data-dir={tmp}/profile", f"--screenshot={out}",
                        f"--window-size={args.width},{args.height}", url],
                       check=True, capture_output=True, timeout=120)
        print(res.stdout.strip().splitlines()[-1])
        print(f"demo took {took_s:.0f} s; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

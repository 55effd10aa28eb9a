"""Matplotlib figures as SVG fragments to place inline in one HTML page.

Text stays text (``svg.fonttype = none``: small, selectable, readable by a screen reader) and
matplotlib's SVG writer escapes it as XML. Several SVGs share one document, so every ``id`` and
its references get a per-figure prefix: two figures whose clip paths hash alike would otherwise
point at each other's definitions.
"""

from __future__ import annotations

import io
import re

import matplotlib

matplotlib.use("Agg")  # no display: the report is built on servers and in CI

import matplotlib.pyplot as plt  # noqa: E402

STYLE = {"svg.fonttype": "none", "svg.hashsalt": "hwval-report", "font.size": 9,
         "axes.spines.top": False, "axes.spines.right": False, "figure.dpi": 100,
         "text.usetex": False, "axes.titlesize": 10, "legend.fontsize": 8}

_ID = re.compile(r'\bid="([^"]+)"')
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)


def label(text: str) -> str:
    """User or device text made literal for matplotlib (a ``$`` would start mathtext)."""
    return str(text).replace("\\", "\\\\").replace("$", r"\$")


def to_svg(fig, prefix: str) -> str:
    """The figure as an ``<svg>`` element (no XML prolog), ids prefixed with ``prefix``."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    text = _METADATA.sub("", text)     # the RDF block names matplotlib's namespaces, nothing else
    ids = set(_ID.findall(text))
    for old in sorted(ids, key=len, reverse=True):
        new = f"{prefix}-{old}"
        text = text.replace(f'id="{old}"', f'id="{new}"').replace(f"url(#{old})", f"url(#{new})") \
            .replace(f'href="#{old}"', f'href="#{new}"')
    return text

"""The report's figures, each drawn from what ``/analysis`` and ``/sync`` store.

- time series: the aligned bins of the reference and of the candidate (the very arrays the
  metrics were computed on), phases shaded, the workload's marks drawn;
- scatter: candidate vs reference bins with the stored calibration line
  ``ref = slope * cand + intercept`` and the identity;
- Bland-Altman: difference vs mean with the stored bias and limits of agreement;
- lag fit: a stream's readings over a pulse block against the forward model at the fitted lag,
  the band between the models at the ends of the lag's interval.
"""

from __future__ import annotations

import math

import numpy as np

from hwval.report.svg import STYLE, label, plt, to_svg

PHASE_COLOURS = {"idle": "#9e9e9e", "pulses": "#f2c14e", "epoch": "#4e79a7", "eval": "#59a14f",
                 "train": "#b07aa1", "idle_before": "#9e9e9e", "idle_after": "#9e9e9e"}
REF_COLOUR, CAND_COLOUR, MODEL_COLOUR = "#222222", "#e15759", "#4e79a7"
#: Marks drawn with their name at most (one per training step would be unreadable).
MAX_MARK_LABELS = 40


def _fig(width_in: float = 7.5, height_in: float = 3.0):
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(width_in, height_in))
    return fig, ax


def _phase_colour(row) -> str | None:
    if row.kind == "mark":
        head = row.name.rsplit("_", 1)[0]
        return PHASE_COLOURS.get(head)
    return PHASE_COLOURS.get(row.kind)


def time_series(comp, marks, prefix: str) -> str:
    with plt.rc_context(STYLE):
        fig, ax = _fig()
        t = comp.t_s
        ax.step(t, comp.ref_w, where="mid", color=REF_COLOUR, lw=1.2, label=label(f"{comp.reference} (reference)"))
        ax.step(t, comp.cand_w, where="mid", color=CAND_COLOUR, lw=1.0, label=label(comp.candidate))
        shaded = set()
        for row in comp.phases:
            colour = _phase_colour(row)
            if colour is None or not (math.isfinite(row.start_s) and math.isfinite(row.stop_s)):
                continue
            kind = row.name.rsplit("_", 1)[0] if row.kind == "mark" else row.kind
            ax.axvspan(row.start_s, row.stop_s, color=colour, alpha=0.12, lw=0,
                       label=None if kind in shaded else label(kind))
            shaded.add(kind)
        if len(t):
            lo, hi = float(t[0]), float(t[-1])
            shown = [m for m in marks if lo <= m["t"] <= hi]
            for i, m in enumerate(shown):
                ax.axvline(m["t"], color="#555555", lw=0.5, ls=":")
                if i < MAX_MARK_LABELS:
                    ax.text(m["t"], 1.0, label(m["mark"]), transform=ax.get_xaxis_transform(), rotation=90,
                            fontsize=6, va="top", ha="right", color="#555555")
        if len(t):
            half = 0.5 * float(comp.attrs.get("bin_s", 0) or 0)
            ax.set_xlim(float(t[0]) - half, float(t[-1]) + half)   # the analysed window only
        ax.set_xlabel("run time (s)")
        ax.set_ylabel("power (W)")
        ax.set_title(label(f"{comp.candidate} against {comp.reference}, {comp.attrs.get('bin_s', 0):g} s bins"))
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        return to_svg(fig, prefix)


def scatter(comp, prefix: str) -> str:
    with plt.rc_context(STYLE):
        fig, ax = _fig(4.2, 3.6)
        ok = np.isfinite(comp.ref_w) & np.isfinite(comp.cand_w)
        x, y = comp.cand_w[ok], comp.ref_w[ok]
        ax.plot(x, y, "o", ms=3, color=CAND_COLOUR, alpha=0.6, label="bins")
        if len(x):
            span = np.array([min(x.min(), y.min()), max(x.max(), y.max())])
            ax.plot(span, span, color="#999999", lw=0.8, ls="--", label="identity")
            slope, intercept = float(comp.attrs.get("slope", math.nan)), float(comp.attrs.get("intercept", math.nan))
            if math.isfinite(slope) and math.isfinite(intercept):
                xs = np.array([x.min(), x.max()])
                ax.plot(xs, slope * xs + intercept, color=MODEL_COLOUR, lw=1.5,
                        label=f"ref = {slope:.3f} x cand {intercept:+.1f} W")
        ax.set_xlabel(label(f"{comp.candidate} (W)"))
        ax.set_ylabel(label(f"{comp.reference} (W)"))
        ax.set_title("calibration line")
        ax.legend(loc="upper left", frameon=False)
        return to_svg(fig, prefix)


def bland_altman(comp, prefix: str) -> str:
    with plt.rc_context(STYLE):
        fig, ax = _fig(4.2, 3.6)
        ok = np.isfinite(comp.ref_w) & np.isfinite(comp.cand_w)
        mean = (comp.ref_w[ok] + comp.cand_w[ok]) / 2
        diff = comp.cand_w[ok] - comp.ref_w[ok]
        ax.plot(mean, diff, "o", ms=3, color=CAND_COLOUR, alpha=0.6)
        for key, style, name in (("bias_w", "-", "bias"), ("loa_low_w", "--", "limits of agreement"),
                                 ("loa_high_w", "--", None)):
            v = float(comp.attrs.get(key, math.nan))
            if math.isfinite(v):
                ax.axhline(v, color=MODEL_COLOUR, ls=style, lw=1.0, label=name and f"{name}" + (
                    f" {v:+.2f} W" if key == "bias_w" else ""))
        ax.set_xlabel("mean of the two (W)")
        ax.set_ylabel("candidate - reference (W)")
        ax.set_title("Bland-Altman")
        ax.legend(loc="best", frameon=False)
        return to_svg(fig, prefix)


def lag_fit(fit, prefix: str) -> str:
    with plt.rc_context(STYLE):
        fig, ax = _fig(7.5, 2.6)
        if len(fit.command_t_s):
            lo, hi = float(np.nanmin(fit.measured_w)), float(np.nanmax(fit.measured_w))
            ax.fill_between(fit.command_t_s, lo, lo + (hi - lo) * fit.command_level, step="post", color="#cccccc",
                            alpha=0.5, lw=0, label="commanded load")
        ax.fill_between(fit.t_s, np.minimum(fit.model_lo_w, fit.model_hi_w), np.maximum(fit.model_lo_w, fit.model_hi_w),
                        color=MODEL_COLOUR, alpha=0.25, lw=0, label="model over the lag's 95 % interval")
        ax.plot(fit.t_s, fit.measured_w, ".", ms=2.5, color=CAND_COLOUR, label="measured")
        ax.plot(fit.t_s, fit.model_w, "-", lw=1.0, color=MODEL_COLOUR, label="model at the fitted lag")
        lo_ci, hi_ci = fit.lag_ci_s
        ci = f" [{lo_ci * 1e3:.1f}, {hi_ci * 1e3:.1f}]" if math.isfinite(lo_ci) and math.isfinite(hi_ci) else ""
        kind = "absolute" if fit.absolute else f"relative to {fit.reference}"
        ax.set_title(label(f"{fit.stream}: lag {fit.lag_s * 1e3:.1f} ms{ci} ({kind}), window {fit.window_s:.3g} s"))
        ax.set_xlabel("run time (s)")
        ax.set_ylabel("power (W)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        return to_svg(fig, prefix)

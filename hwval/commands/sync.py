"""``hwval sync`` and ``hwval characterize``: each stream's timing into /sync, and a table."""

from __future__ import annotations

import json
import math

import click


def _open(run_path: str):
    from hwval.cli import fail
    from hwval.runfile import RunFileError, open_run

    try:
        return open_run(run_path, mode="r+")
    except RunFileError as exc:
        fail(str(exc))
    except OSError as exc:  # permissions: h5py says why
        fail(f"{run_path}: cannot be opened for writing ({exc})")


def _json_value(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    return v


def _ms(v: float) -> str:
    return "-" if not math.isfinite(v) else f"{v * 1e3:.2f}"


def _ci_ms(ci) -> str:
    lo, hi = ci
    return "" if not (math.isfinite(lo) and math.isfinite(hi)) else f"[{lo * 1e3:.2f}, {hi * 1e3:.2f}]"


def format_sync(result, emulated: dict[str, bool] | None = None) -> str:
    """The table; ``emulated`` (stream -> bool) marks the emulated streams and adds a note."""
    from hwval.sources.emulated import emulated_note

    emulated = emulated or {}
    lines = []
    kind = "absolute (against the pulse commands)" if result.absolute else f"relative to {result.reference}"
    lines.append(f"reference: {result.reference}  ({kind})")
    lines += [f"note: {n}" for n in result.notes]
    note = emulated_note(n for n in result.streams if emulated.get(n))
    if note:
        lines.append(note)
    head = f"{'stream':<20} {'emu':<3} {'method':<11} {'lag ms':>9} {'95% CI':>20} {'window ms':>10} {'95% CI':>20} " \
           f"{'drift ppm':>10} {'95% CI':>16} {'quality':>7}"
    lines.append(head)
    for name, st in result.streams.items():
        d_ci = st.drift_ci_ppm
        drift_ci = f"[{d_ci[0]:.1f}, {d_ci[1]:.1f}]" if all(math.isfinite(x) for x in d_ci) else ""
        drift = f"{st.drift_ppm:.2f}" if math.isfinite(st.lag_s) else "-"
        lines.append(f"{name:<20} {'yes' if emulated.get(name) else '-':<3} {st.method:<11} {_ms(st.lag_s):>9} {_ci_ms(st.lag_ci_s):>20} "
                     f"{_ms(st.window_s):>10} {_ci_ms(st.window_ci_s):>20} {drift:>10} {drift_ci:>16} "
                     f"{st.quality:>7.2f}")
        if st.note:
            lines.append(f"{'':<24} {st.note}")
    return "\n".join(lines)


@click.command("sync")
@click.argument("run_path", metavar="RUN.h5", type=click.Path(dir_okay=False))
@click.option("--reference", default="pulses", show_default=True, metavar="pulses|STREAM",
              help="'pulses': absolute lags from the run's sync pulses; a stream name: lags relative to it, "
                   "fitted to its power changes")
@click.option("--max-lag-s", type=float, default=3.0, show_default=True, metavar="S",
              help="largest lag searched (s)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def sync(run_path, reference, max_lag_s, as_json):
    """Estimate every stream's lag, averaging window and clock drift; write /sync.

    A reading stamped t covers the true power over [t - lag - window, t - lag]. With the run's
    sync pulses the lag is absolute; without them (or with --reference STREAM) each stream is
    fitted to a reference stream's power changes and its lag is relative to that stream.
    Running it again replaces /sync.

    \b
    Example:
      hwval capture -m tasmota:/dev/ttyUSB0 -o run.h5 -- sh -c 'python -m hwval.workloads.pulses && python train.py'
      hwval sync run.h5 && hwval analyze run.h5
    """
    from hwval.cli import fail
    from hwval.runfile.info import emulated_streams
    from hwval.sync.store import entry_attrs, write_sync
    from hwval.sync.synchronise import SyncInputError, synchronise

    with _open(run_path) as run:
        try:
            result = synchronise(run, reference=reference, max_lag_s=max_lag_s)
        except SyncInputError as exc:
            fail(str(exc))
        write_sync(run, result)
        emulated = emulated_streams(run)
    if as_json:
        out = {"reference": result.reference, "absolute": result.absolute, "notes": result.notes,
               "streams": {n: {k: _json_value(v) for k, v in entry_attrs(st, result, "").items()
                               if k not in ("created_utc", "hwval_version", "run_notes")}
                              | {"emulated": emulated.get(n, False)}
                           for n, st in result.streams.items()}}
        click.echo(json.dumps(out, indent=2, allow_nan=False))
    else:
        click.echo(format_sync(result, emulated))
        from hwval.runfile.recover import plural

        click.echo(f"written: /sync ({plural(len(result.streams), 'stream')})")


def format_characteristics(chars) -> str:
    def num(v, scale=1.0, fmt=".3g"):
        return "-" if not math.isfinite(v) else format(v * scale, fmt)

    def ci(c, scale=1.0, fmt=".3g"):
        lo, hi = c
        return "" if not (math.isfinite(lo) and math.isfinite(hi)) else f"[{lo * scale:{fmt}}, {hi * scale:{fmt}}]"

    lines = [f"{'stream':<20} {'latency ms':>11} {'95% CI':>20} {'window ms':>10} {'95% CI':>20} "
             f"{'update s':>9} {'95% CI':>18} {'noise W':>8} {'95% CI':>18} {'quantum W':>10}"]
    for name, c in chars.items():
        lines.append(f"{name:<20} {num(c.lag_s, 1e3, '.2f'):>11} {ci(c.lag_ci_s, 1e3, '.2f'):>20} "
                     f"{num(c.window_s, 1e3, '.1f'):>10} {ci(c.window_ci_s, 1e3, '.1f'):>20} "
                     f"{num(c.update_period_s):>9} {ci(c.update_period_ci_s):>18} {num(c.noise_w):>8} "
                     f"{ci(c.noise_ci_w):>18} {num(c.quantum_w):>10}")
        for note in c.notes:
            lines.append(f"{'':<20} {note}")
    return "\n".join(lines)


@click.command("characterize")
@click.argument("run_path", metavar="RUN.h5", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def characterize(run_path, as_json):
    """Each meter's latency, averaging window, update period, noise floor and quantisation.

    Latency and window come from /sync (estimated now, as `hwval sync` does, when the run has
    none); the rest from the readings. Stored as further /sync/<stream> attributes.

    \b
    Example:
      hwval sync run.h5 && hwval characterize run.h5 --json
    """
    from hwval.cli import fail
    from hwval.sync.characterize import characterize as do_characterize
    from hwval.sync.store import add_attrs, write_sync
    from hwval.sync.synchronise import SyncInputError, synchronise
    from hwval.sync.template import TemplateError

    with _open(run_path) as run:
        try:
            if not any("lag_s" in e.attrs for e in run.read_derived("sync").values()):
                write_sync(run, synchronise(run))
            chars = do_characterize(run, run.read_derived("sync"))
        except (SyncInputError, TemplateError) as exc:
            fail(str(exc))
        add_attrs(run, {n: c.attrs() for n, c in chars.items()})
    if as_json:
        out = {n: {"latency_s": _json_value(c.lag_s), "latency_ci_s": _json_value(list(c.lag_ci_s)),
                   "window_s": _json_value(c.window_s), "window_ci_s": _json_value(list(c.window_ci_s)),
                   **{k: _json_value(v) for k, v in c.attrs().items()}}
               for n, c in chars.items()}
        click.echo(json.dumps(out, indent=2, allow_nan=False))
    else:
        click.echo(format_characteristics(chars))

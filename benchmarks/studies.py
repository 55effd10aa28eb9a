"""The studies hwval exists for, on this machine's CPU and the emulated bench: two architectures'
training runs, their accuracy/energy trade-off with CO2 per location, the error of `hwval
predict` at 10 %, 25 % and 50 % profiles (and one epoch) against the full run, a model-size
estimator judged by `hwval validate`, and a sweep of three strategies.

    python benchmarks/studies.py [--workdir DIR] [--quick] [--bench auto|host|profile]

The bench: with ``hwval emulate host-bench`` present (and ``--bench auto`` or ``host``), the
emulators' true power follows this machine's CPU load (``--profile host:RING``), so energy really
depends on what the training does; each study run then starts with a block of sync pulses and
synchronised against them (``hwval sync``) before it is analysed. Without it, the emulators play
the fixed ``steps`` profile (60/120/250/180 W, 2 s each, repeating): energy then depends only on
how long a run takes, and ``hwval sync`` fits the lags against the sharpest stream's power steps
instead (no pulses). The sweep's trials are too short to synchronise and are analysed on raw
stamps. The output says which bench was used.

Meters: a Tasmota plug on a pty (the hardware reference ``wall``: 0.5 s polling with a 1.5 s
reply timeout, 0.5 s window,
0.3 s latency, 1 W steps, 0.5 W noise, gain 1.02) and a powercap tree read as RAPL (package 55 %
of the bench, core and DRAM subdomains), as in ``hwval demo``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HWVAL = [sys.executable, "-m", "hwval.cli"]
ARCHS = ("vgg", "resnet")
PROFILE_PCTS = (10, 25, 50)
LOCATIONS = ("US/OR", "US/SC", "TW/Taipei")


def host_bench_available() -> bool:
    from hwval.emulators import EMULATORS

    return "host-bench" in EMULATORS


class Proc:
    """A background ``hwval emulate`` process, stopped by :meth:`stop` (never left behind)."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.log = open(log, "w")
        self.proc = subprocess.Popen([*HWVAL, "emulate", *args], stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)

    def wait_for(self, path: Path, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if path.exists():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise SystemExit(f"emulator did not start ({self.proc.args}); log: {self.log.name}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def start_bench(work: Path, use_host: bool) -> tuple[list[Proc], dict]:
    procs = []
    if use_host:
        ring = work / "host.ring"
        sampler = Proc(["host-bench", "--ring", str(ring)], work / "host-bench.log")
        procs.append(sampler)
        sampler.wait_for(ring)
        bench = ["--profile", f"host:{ring}", "--seed", "1"]
    else:
        bench = ["--profile", "steps", "--t0-ns", str(time.monotonic_ns()), "--seed", "1"]
    ready = {}
    for device, extra in (("tasmota", ["--window-s", "0.5", "--latency-s", "0.3", "--quantum-w", "1",
                                       "--noise-w", "0.5", "--gain", "1.02"]),
                          ("powercap", ["--root", str(work / "powercap"), "--gain", "0.55"])):
        rf = work / f"{device}.ready.json"
        p = Proc([device, *bench, *extra, "--ready-file", str(rf)], work / f"{device}.log")
        procs.append(p)
        p.wait_for(rf)
        ready[device] = json.loads(rf.read_text())["resource"]
    return procs, ready


def hwval(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HWVAL_MARK_SOCKET"}
    r = subprocess.run([*HWVAL, *args], capture_output=True, text=True, env=env)
    if check and r.returncode != 0:
        raise SystemExit(f"hwval {' '.join(args)} failed ({r.returncode}):\n{r.stderr[-2000:]}")
    return r


def capture_args(ready: dict) -> list[str]:
    # a generous reply timeout: on a loaded shared machine the emulator can answer late, and a
    # reply missed is a gap that leaves every interval it touches without hardware energy
    return ["-m", f"tasmota:{ready['tasmota']}?name=wall&period_s=0.5&reply_timeout_s=1.5",
            "--rapl-root", ready["powercap"], "--no-nvml"]


def pct(x) -> str:
    return "-" if x is None else f"{x:+.1f} %"


def num(x, fmt: str = ".0f") -> str:
    """A number from the JSON outputs (None where hwval had no value: a gap)."""
    return "-" if x is None else format(x, fmt)


def err(value, ref):
    return None if value is None or not ref else 100.0 * (value - ref) / ref


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default=None, help="keep the run files here (default: a temporary folder)")
    ap.add_argument("--quick", action="store_true", help="fewer epochs and trials (a smoke test)")
    ap.add_argument("--bench", choices=("auto", "host", "profile"), default="auto")
    args = ap.parse_args()
    have_host = host_bench_available()
    if args.bench == "host" and not have_host:
        raise SystemExit("--bench host: `hwval emulate host-bench` is not in this hwval")
    use_host = have_host and args.bench != "profile"
    epochs, samples, trials, sweep_epochs = (2, 512, 2, 1) if args.quick else (5, 2048, 3, 2)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="hwval-studies-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"bench: {'host-following (true power follows this CPU load)' if use_host else 'fixed steps profile'}"
          + ("" if have_host else " -- `hwval emulate host-bench` is not available in this hwval: energy "
             "depends only on run time; rerun when it lands"))
    print(f"machine: {os.cpu_count()} CPUs, load average before {os.getloadavg()[0]:.2f}; "
          f"{time.strftime('%Y-%m-%d')}")
    procs, ready = start_bench(work, use_host)
    try:
        train = ["--epochs", str(epochs), "--train-samples", str(samples), "--idle-s", "3", "--threads", "2"]
        runs = []
        for arch in ARCHS:
            path = work / f"{arch}.h5"
            cmd = ["hwval", "workload", "train", "--arch", arch, *train]
            if use_host:
                cmd = ["sh", "-c", f"{sys.executable} -m hwval.workloads.pulses --blocks 1 && "
                       + " ".join([sys.executable, "-m", "hwval.workloads.train", "--arch", arch, *train])]
            hwval("capture", *capture_args(ready), "--force", "-o", str(path), "--", *cmd)
            synced = hwval("sync", str(path), check=False)  # pulses with the host bench, else the fallback fit
            if synced.returncode != 0:
                print(f"note: {path.stem}: not synchronised: {synced.stderr.strip()}")
            runs.append(path)
        print(f"\nstudy runs: {', '.join(ARCHS)}; {epochs} epochs of {samples} synthetic samples, batch 64, "
              "2 torch threads, 3 s idle before and after")
        out = hwval("analyze", runs[0].as_posix(), "--epochs")
        print(f"\nper-interval energy of {runs[0].stem} (`hwval analyze {runs[0].name} --epochs`):")
        print("\n```\n" + out.stdout.rstrip() + "\n```")
        out = hwval("analyze", "--tradeoff", *map(str, runs), *sum((["--location", loc] for loc in LOCATIONS), []))
        print(f"\n`hwval analyze --tradeoff {' '.join(r.name for r in runs)} "
              + " ".join(f"--location {loc}" for loc in LOCATIONS) + "`:")
        print("\n```\n" + out.stdout.rstrip() + "\n```")
        trade = json.loads(hwval("analyze", "--tradeoff", *map(str, runs), "--json").stdout)

        print("\nprediction error against the full run's hardware energy (error = (predicted - truth) / truth; "
              "in brackets: the meter's own extrapolation error):\n")
        meters = [m for m in trade["runs"][0]["energy_j"]]
        print("| run | profile | method | " + " | ".join(meters) + " |")
        print("|---|---|---|" + "---|" * len(meters))
        for path in runs:
            for p in [("--profile-pct", str(x)) for x in PROFILE_PCTS] + [("--profile-epochs", "1")]:
                doc = json.loads(hwval("predict", str(path), *p, "--json").stdout)
                cells = {s["stream"]: f"{pct(s['error_pct'])} ({pct(s['extrapolation_error_pct'])})"
                         for s in doc["streams"]}
                label = f"{p[1]} % ({doc['profile']['seconds']:.1f} s)" if p[0] == "--profile-pct" else \
                    f"1 of {doc['epochs']} epochs ({100 * doc['profile']['share']:.0f} %)"
                print(f"| {path.stem} | {label} | {doc['method']} | "
                      + " | ".join(cells.get(m, "-") for m in meters) + " |")

        sweep_dir = work / "sweep"
        sweep = json.loads(hwval("sweep", *capture_args(ready), "--strategy", "grid", "--strategy", "random",
                                 "--strategy", "bayes", "--trials", str(trials), "--epochs", str(sweep_epochs),
                                 "-o", str(sweep_dir), "--force", "--json", "--", "--train-samples",
                                 str(samples // 2), "--threads", "2", "--idle-s", "2").stdout)
        names = ", ".join(p["name"] for p in sweep["space"])
        print(f"\nsweep: {trials} trials per strategy, {sweep_epochs} epochs of {samples // 2} samples each, "
              f"space {names} (the default), 2 s idle before and after; energy of each trial's whole workload:\n")
        ref = sweep["trials"][0]["reference"]
        sw_meters = [m for m in sweep["trials"][0]["energy_j"] if m != ref]
        print("| trial | params | accuracy | " + f"{ref} J | " + " | ".join(f"{m} J (err)" for m in sw_meters) + " |")
        print("|---|---|---|---|" + "---|" * len(sw_meters))
        for t in sweep["trials"]:
            hw = t["energy_j"].get(ref)
            params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["spec"]["params"].items())
            acc = "-" if t["objective"] is None else f"{t['objective']:.3f}"
            print(f"| {t['label']} | {params} | {acc} | {num(hw)} | " + " | ".join(
                f"{num(t['energy_j'].get(m))} ({pct(err(t['energy_j'].get(m), hw))})" for m in sw_meters) + " |")
        print("\n| strategy | trials | best accuracy | energy to best J | total " + ref + " J | "
              + " | ".join(f"total {m} J (err)" for m in sw_meters) + " |")
        print("|---|---|---|---|---|" + "---|" * len(sw_meters))
        for s in sweep["summary"]:
            best = "-" if s["best_objective"] is None else f"{s['best_objective']:.3f} ({s['best_trial']})"
            e2b = num(s["energy_to_best_j"])
            print(f"| {s['strategy']} | {s['trials']} | {best} | {e2b} | {num(s['energy_j'].get(ref))} | " + " | ".join(
                f"{num(s['energy_j'].get(m))} ({pct(s['error_pct'].get(m))})" for m in sw_meters) + " |")

        trial_runs = sorted(str(p) for p in sweep_dir.glob("*.h5"))
        model = work / "size_model.toml"
        fit = json.loads(hwval("predict", "--fit-size", *trial_runs, "-o", str(model), "--force", "--json").stdout)
        print(f"\nsize model fitted on the {len(trial_runs)} sweep trials (MACs): E_train = {num(fit['intercept_j'], '.1f')} J + "
              f"{num(fit['j_per_unit'], '.3g')} J x MACs x (3 x train + eval samples), r2 = {num(fit['r2'], '.3f')}")
        for path in runs:
            est = json.loads(hwval("predict", str(path), "--size-model", str(model), "--meter-out",
                                   str(work / f"{path.stem}.size.jsonl"), "--force", "--json").stdout)
            verdict = hwval("validate", str(path), "--candidate", str(work / f"{path.stem}.size.jsonl"), "--json",
                            check=False)
            v = json.loads(verdict.stdout)
            ccc = v["metrics"].get("ccc")
            print(f"- {path.stem}: training energy {num(est['predicted_j'])} J predicted vs {num(est['truth_j'])} J "
                  f"measured ({pct(est['error_pct'])}); as a meter over the workload: "
                  f"`hwval validate` {v['verdict'].upper()} (energy error {pct(v['metrics'].get('energy_error_pct'))}, "
                  f"CCC {'-' if ccc is None else format(ccc, '.3f')})")
        print(f"\n1-min load average after: {os.getloadavg()[0]:.2f}")
    finally:
        for p in reversed(procs):
            p.stop()
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

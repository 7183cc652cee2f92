"""Time a sweep trial spends outside training, for one-worker and two-worker trials.

    python benchmarks/sweep_overhead.py [--trial-seconds 30] [--trials 2]

Runs real sweeps (Ray Tune + the training engine on the embedded digits data), one
trial at a time, each trial training for about ``--trial-seconds`` (the engine's
``training.max_minutes`` budget). For each trial the driver records when Tune started
and finished it (``started_at`` / ``ended_at`` in the store); the engine records its
own wall time (``time_s``: data, model, epochs, evaluation, checkpoints), and the
trial the seconds it spent in reports (``report_s``). Wall - time_s + report_s is
what Ray and astray add around training: worker start-up and imports,
Ray Train's worker group for DDP trials, reporting, checkpoint upload and the store
writes. Prints a table and writes JSON. Target: <= 15 % of a 30 s trial, one worker.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from astray.sweep.store import read_trials  # noqa: E402
from astray.config.sweep import load_sweep_spec  # noqa: E402
from astray.sweep.runner import run_sweep  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def measure(workers: int, trials: int, trial_seconds: float, tmp: str) -> dict:
    spec = load_sweep_spec(str(REPO / "configs/quickstart.yaml"), [
        f"sweep.name=overhead-{workers}w", f"sweep.results_dir={tmp}", f"search.num_samples={trials}",
        "search.baselines={}", "search.repeats=1", "search.max_concurrent=1", f"resources.workers_per_trial={workers}",
        "resources.cpus_per_worker=1", "training.epochs=1000", f"training.max_minutes={trial_seconds / 60}",
        "search.sampler=random"])
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        root = run_sweep(spec)
    sweep_wall = time.perf_counter() - t0
    rows = read_trials(root).to_pylist()
    per_trial = []
    for r in rows:
        wall = r["ended_at"] - r["started_at"]
        # time_s includes the reports made between epochs; count those as outside training.
        report = r["report_s"] or 0.0
        outside = wall - r["time_s"] + report
        per_trial.append({"trial_id": r["trial_id"], "status": r["status"], "trial_wall_s": wall,
                          "engine_s": r["time_s"] - report, "report_s": report, "outside_training_s": outside,
                          "fraction_of_trial": outside / wall})
    return {"workers_per_trial": workers, "sweep_wall_s": sweep_wall, "trials": per_trial,
            "outside_training_s_mean": statistics.fmean(t["outside_training_s"] for t in per_trial),
            "fraction_mean": statistics.fmean(t["fraction_of_trial"] for t in per_trial),
            "fraction_of_30s_trial": statistics.fmean(t["outside_training_s"] for t in per_trial) / 30.0}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trial-seconds", type=float, default=30.0)
    p.add_argument("--trials", type=int, default=2)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--out", default=str(REPO / "benchmarks/results/sweep_overhead.json"))
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for w in args.workers:
            results.append(measure(w, args.trials, args.trial_seconds, tmp))
            r = results[-1]
            print(f"workers {w}: {[round(t['outside_training_s'], 1) for t in r['trials']]} s outside training",
                  flush=True)
    print(f"\nsweep overhead, {os.cpu_count()} cores, trials of ~{args.trial_seconds:.0f} s training, "
          f"{args.trials} trials each, one at a time")
    print(f"{'workers/trial':>13s} {'trial wall s':>13s} {'engine s':>9s} {'outside s':>10s} "
          f"{'share of trial':>15s} {'of a 30 s trial':>16s}")
    for r in results:
        walls = statistics.fmean(t["trial_wall_s"] for t in r["trials"])
        eng = statistics.fmean(t["engine_s"] for t in r["trials"])
        print(f"{r['workers_per_trial']:>13d} {walls:>13.1f} {eng:>9.1f} {r['outside_training_s_mean']:>10.1f} "
              f"{100 * r['fraction_mean']:>14.1f}% {100 * r['fraction_of_30s_trial']:>15.1f}%")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": {"command": " ".join(sys.argv), "cores": os.cpu_count(),
                                        "date": time.strftime("%Y-%m-%d"), "trial_seconds": args.trial_seconds},
                               "results": results}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

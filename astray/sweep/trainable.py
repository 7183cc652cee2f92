"""One sweep trial: the training engine inside Ray Tune (one worker) or Ray Train (several).

What a trial reports to Tune after each epoch is a running *trial summary* (best
validation accuracy, energy so far, ...) — the objectives Optuna reads at the end —
plus that epoch's engine row as JSON, which the driver's result store writes as is.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from astray import distributed as dist
from astray import ray_adapter
from astray.config import build_config
from astray.errors import TrainingDiverged
from astray.metrics import read_metrics
from astray.store import summarize
from astray.sweep_config import SweepSpec, set_dotted
from astray.train import run

CHECKPOINT_FILES = ("last.pt", "best.pt", "metrics.parquet", "config.yaml")


def trial_run_config(spec: SweepSpec, config: dict[str, Any], work_dir: Path | None = None) -> dict[str, Any]:
    """The raw run config of a trial: base + searched values (+ dense for the baseline)."""
    if config.get(ray_adapter.BASELINE_ATTR):
        # The baseline is the base config trained dense: searched values (which Optuna
        # needs it to carry) are not applied, so it has the budget the sweep started from.
        raw = set_dotted(spec.raw_run, {"ast.strategy": "dense"})
    else:
        raw = set_dotted(spec.raw_run, {p.key: config[p.key] for p in spec.search.params if p.key in config})
    if work_dir is not None:
        raw = set_dotted(raw, {"logging.output_dir": str(work_dir)})
    # Meters read whole devices: say so when other trials share the device.
    res = spec.resources
    shared = 0 < res.gpus_per_worker < 1 or (res.gpus_per_worker == 0 and spec.search.max_concurrent > 1)
    if shared:
        raw = set_dotted(raw, {"energy.device_shared": True})
    threads = raw.get("training", {}).get("threads", 0)
    if not threads and spec.resources.gpus_per_worker == 0:
        # One intra-op thread per reserved CPU: trials sharing a node must not oversubscribe it.
        raw = set_dotted(raw, {"training.threads": max(1, int(spec.resources.cpus_per_worker))})
    return raw


def _metrics(rows: list[dict[str, Any]], row: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    summary = summarize("", rows)
    summary.pop("trial_id")
    return {**summary, **extra, "status": "running", "error": "", "epoch_row": json.dumps(row)}


def diverged_metrics(exc: Exception, extra: dict[str, Any]) -> dict[str, Any]:
    """Final report of a diverged trial: NaN objectives, so Optuna records a failure."""
    return {**extra, "status": "diverged", "error": str(exc), "val_acc": math.nan, "final_val_acc": math.nan,
            "energy_j": math.nan, "flops": math.nan, "time_s": math.nan, "activation_rate": math.nan,
            "val_macro_f1": math.nan}


def astray_trial(config: dict[str, Any], spec: SweepSpec) -> None:
    """The Tune function trainable."""
    tid = ray_adapter.trial_id()
    work = Path(tempfile.gettempdir()) / "astray-trials" / f"{spec.sweep.name}-{tid}"
    raw = trial_run_config(spec, config, work)
    extra = {ray_adapter.BASELINE_ATTR: bool(config.get(ray_adapter.BASELINE_ATTR)), "node_ids": ray_adapter.node_id()}
    if spec.resources.workers_per_trial > 1:
        storage = spec.sweep.storage or str(Path(spec.sweep.results_dir, spec.sweep.name, "ray").resolve())
        ray_adapter.run_torch_trainer(_worker_loop, {"raw": raw, "extra": extra}, spec.resources,
                                      name=f"train-{tid}", storage_path=storage)
        return
    shutil.rmtree(work, ignore_errors=True)
    try:
        resume = ray_adapter.restore_checkpoint_into(work)
        cfg = build_config(raw)

        def report(row: dict[str, Any], out: Path) -> None:
            t0 = time.perf_counter()
            rows = read_metrics(out / "metrics.parquet")
            ray_adapter.report(_metrics(rows, row, extra), [out / f for f in CHECKPOINT_FILES])
            # Time spent handing results and checkpoints to Ray, carried in the next report.
            extra["report_s"] = extra.get("report_s", 0.0) + time.perf_counter() - t0

        try:
            run(cfg, resume=resume, report=report)
        except TrainingDiverged as exc:
            ray_adapter.report(diverged_metrics(exc, extra))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _worker_loop(loop_config: dict[str, Any]) -> None:
    """Runs on each Ray Train worker; Ray has already made the gloo/nccl process group."""
    raw, extra = loop_config["raw"], dict(loop_config["extra"])
    rank = ray_adapter.train_context_rank()
    work = Path(raw["logging"]["output_dir"] + f"-rank{rank}")
    raw = set_dotted(raw, {"logging.output_dir": str(work)})
    shutil.rmtree(work, ignore_errors=True)
    extra["node_ids"] = ",".join(sorted(set(dist.gather_strings(ray_adapter.node_id()))))
    # Every rank restores the same checkpoint: optimizer, controller, score table and
    # epoch must match on all ranks, not just the weights DDP broadcasts.
    resume = ray_adapter.restore_checkpoint_into(work, in_train_worker=True)
    cfg = build_config(raw)

    def report(row: dict[str, Any], out: Path) -> None:
        if rank == 0:
            t0 = time.perf_counter()
            rows = read_metrics(out / "metrics.parquet")
            ray_adapter.train_worker_report(_metrics(rows, row, extra), [out / f for f in CHECKPOINT_FILES])
            extra["report_s"] = extra.get("report_s", 0.0) + time.perf_counter() - t0
        else:
            ray_adapter.train_worker_report({"epoch": row["epoch"]}, None)

    try:
        run(cfg, resume=resume, report=report)
    except TrainingDiverged as exc:
        ray_adapter.train_worker_report(diverged_metrics(exc, extra), None)
    finally:
        shutil.rmtree(work, ignore_errors=True)

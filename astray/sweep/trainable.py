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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from astray.config.dotted import set_dotted
from astray.config.load import build_config
from astray.config.sweep import SweepSpec
from astray.engine import ddp
from astray.engine.records import read_metrics
from astray.engine.state import BEST, CONFIG, LAST, METRICS
from astray.engine.trainer import run, set_log_prefix
from astray.errors import TrainingDiverged
from astray.schema import BASELINE_FLAG, DIVERGED, KIND_SEARCHED, OBJECTIVE_METRICS, RUNNING
from astray.sweep import ray_adapter
from astray.sweep.checkpoints import copy_checkpoint
from astray.sweep.store import trial_summary


def running_metrics(rows: list[dict[str, Any]], row: dict[str, Any], extra: dict[str, Any],
                    steps: list[dict[str, Any]] | None = None, history: bool = False) -> dict[str, Any]:
    """An epoch's report: the trial summary so far, and the epoch's row (and its step
    trace, when the run keeps one) for the store; with ``history``, every row so far."""
    summary = trial_summary("", rows)
    summary.pop("trial_id")
    out = {**summary, **extra, "status": RUNNING, "error": "", "epoch_row": json.dumps(row)}
    if history:
        out["epoch_rows"] = json.dumps(rows)
    if steps:
        out["steps_rows"] = json.dumps(steps)  # NaN travels as JSON's NaN, which json.loads reads back
    return out


class EpochReporter:
    """The ``report`` a trial's training run calls after each epoch: the running summary
    and the epoch's row to Ray, with the epoch's files as the checkpoint.

    An attempt that resumed from a checkpoint also re-sends the epochs it restored, once:
    a driver killed after Ray saved a checkpoint but before it wrote that epoch's row to
    the store never got the row (the store rewrites an epoch idempotently). When the
    checkpoint already held every epoch, the run reports nothing, so :meth:`catch_up`
    sends them.
    """

    def __init__(self, extra: dict[str, Any], every: int, resumed: bool,
                 send: Callable[[dict[str, Any], list[Path] | None], None], primary: bool = True,
                 rungs: tuple[int, ...] = ()) -> None:
        self.extra, self.every, self.send, self.primary, self.rungs = extra, every, send, primary, rungs
        self.history_due = resumed

    def __call__(self, row: dict[str, Any], out: Path, improved: bool = False, final: bool = False,
                 steps: list[dict[str, Any]] | None = None) -> None:
        if not self.primary:
            # Ray Train's report is a barrier: every rank calls it; the primary's files exist (rule 5).
            self.send({"epoch": row["epoch"]}, None)
            self.history_due = False
            return
        t0 = time.perf_counter()
        rows = read_metrics(out / METRICS)
        metrics = {**running_metrics(rows, row, self.extra, steps, history=self.history_due),
                   ray_adapter.CHECKPOINT_SCORE: checkpoint_score(row, improved)}
        self.send(metrics, handed_files(row, out, self.every, improved, final or row["epoch"] in self.rungs))
        self.history_due = False
        # Time spent handing results and checkpoints to Ray, carried in the next report.
        self.extra["report_s"] = self.extra.get("report_s", 0.0) + time.perf_counter() - t0

    def catch_up(self, out: Path) -> None:
        """After the run: re-send the restored epochs if no epoch report carried them."""
        if not self.history_due:
            return
        self.history_due = False
        rows = read_metrics(out / METRICS) if (out / METRICS).exists() else []
        if not self.primary:
            self.send({"epoch": rows[-1]["epoch"] if rows else 0}, None)
        elif rows:
            self.send(running_metrics(rows, rows[-1], self.extra, history=True), None)


def handed_files(row: dict[str, Any], out: Path, every: int, improved: bool, final: bool) -> list[Path]:
    """The files an epoch hands to Ray as its checkpoint; none on most epochs when
    ``sweep.checkpoint_every_epochs`` > 1.

    An epoch is checkpointed when its number is a multiple of ``every``, when it improved
    (best.pt is handed only then), and when it is the run's last or an early-stopping rung
    (a replicate paused there resumes from it). A checkpoint always holds
    last.pt, metrics and config: a retried trial resumes from the newest one.
    """
    if not (improved or final or row["epoch"] % every == 0):
        return []
    return [out / f for f in (LAST, METRICS, CONFIG)] + ([out / BEST] if improved else [])


def checkpoint_score(row: dict[str, Any], improved: bool) -> float:
    """What Ray ranks checkpoints by (``ray_adapter.CHECKPOINTS_KEPT`` best ones stay, and the
    newest): the epoch's val_acc where it handed a new best.pt, else -1."""
    return float(row["val_acc"]) if improved else -1.0


def diverged_metrics(exc: Exception, extra: dict[str, Any]) -> dict[str, Any]:
    """Final report of a diverged trial: NaN objectives, so Optuna records a failure."""
    return {**extra, "status": DIVERGED, "error": str(exc), **{m: math.nan for m in OBJECTIVE_METRICS}}


def trial_prefix(config: dict[str, Any]) -> str:
    """``[search-0003 r1] ``: what each of the trial's lines starts with on the driver's console."""
    return f"[{config.get('config_id', '?')} r{config.get('replicate', 0)}] "


def trial_rungs(spec: SweepSpec) -> tuple[int, ...]:
    """The early-stopping rungs (none when ``sweep.early_stop`` is off)."""
    early = spec.sweep.early_stop
    return tuple(early.rungs(spec.run.training.epochs)) if early.enabled else ()


def astray_trial(config: dict[str, Any], spec: SweepSpec, storage: str) -> None:
    """The Tune function trainable; ``storage`` is the driver's resolved Ray storage path.

    ``config`` comes from ``astray.sweep.plan``: ``run`` is the run config to train (resolved
    by the driver), ``trial_id`` astray's stable id of the trial, and ``resume_from`` the
    checkpoint an earlier attempt (of a driver that died) left, used when Tune has none
    of its own for this attempt.
    """
    work = Path(tempfile.gettempdir()) / "astray-trials" / f"{spec.sweep.name}-{ray_adapter.trial_id()}"
    set_log_prefix(trial_prefix(config))
    raw = set_dotted(config["run"], {"logging.output_dir": str(work)})
    extra = {BASELINE_FLAG: config.get("baseline_kind", KIND_SEARCHED) != KIND_SEARCHED,
             "node_ids": ray_adapter.node_id()}
    if spec.resources.workers_per_trial > 1:
        loop_config = {"raw": raw, "extra": extra, "every": spec.sweep.checkpoint_every_epochs,
                       "prefix": trial_prefix(config),
                       "rungs": list(trial_rungs(spec)),
                       "resume_from": config.get("resume_from")}
        ray_adapter.run_torch_trainer(_worker_loop, loop_config, spec.resources,
                                      name=ray_adapter.train_run_name(config["trial_id"]), storage_path=storage)
        return
    every = spec.sweep.checkpoint_every_epochs
    shutil.rmtree(work, ignore_errors=True)
    try:
        resume = ray_adapter.restore_checkpoint_into(work) or copy_checkpoint(config.get("resume_from"), work)
        cfg = build_config(raw)
        report = EpochReporter(extra, every, resume, ray_adapter.report, rungs=trial_rungs(spec))
        try:
            run(cfg, resume=resume, report=report)
            report.catch_up(work)
        except TrainingDiverged as exc:
            ray_adapter.report(diverged_metrics(exc, extra))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _worker_loop(loop_config: dict[str, Any]) -> None:
    """Runs on each Ray Train worker; Ray has already made the gloo/nccl process group."""
    raw, extra = loop_config["raw"], dict(loop_config["extra"])
    set_log_prefix(loop_config.get("prefix", ""))
    work = Path(raw["logging"]["output_dir"] + f"-rank{ddp.rank()}")
    raw = set_dotted(raw, {"logging.output_dir": str(work)})
    shutil.rmtree(work, ignore_errors=True)
    extra["node_ids"] = ",".join(sorted(set(ddp.gather_objects(ray_adapter.node_id()))))
    extra[ray_adapter.TRAIN_PLACEMENT_GROUP] = ray_adapter.current_placement_group_id()
    # Every rank restores the same checkpoint: optimizer, controller, score table and
    # epoch must match on all ranks, not just the weights DDP broadcasts.
    resume = (ray_adapter.restore_checkpoint_into(work, in_train_worker=True)
              or copy_checkpoint(loop_config.get("resume_from"), work))
    cfg = build_config(raw)
    report = EpochReporter(extra, loop_config.get("every", 1), resume, ray_adapter.train_worker_report,
                           primary=ddp.is_primary(), rungs=tuple(loop_config.get("rungs", ())))
    try:
        run(cfg, resume=resume, report=report)
        report.catch_up(work)
    except TrainingDiverged as exc:
        ray_adapter.train_worker_report(diverged_metrics(exc, extra), None)
    finally:
        shutil.rmtree(work, ignore_errors=True)

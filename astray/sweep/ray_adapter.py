"""Every Ray call astray makes, in one module (Ray 2.60, Train V2).

Ray's training and reporting APIs have moved several times; keeping them here means
the next move is one edit. Facts this module relies on (checked on Ray 2.60):

- In a Tune function trial, report with ``ray.tune.report`` and read the checkpoint
  with ``ray.tune.get_checkpoint`` (``ray.train.*`` raises there).
- ``Tuner(TorchTrainer(...))`` raises under Train V2. A multi-worker trial builds a
  ``TorchTrainer`` itself and forwards rank 0's reports with ``TuneReportCallback``.
  Every worker must call ``ray.train.report`` (it is a barrier).
- A trial that only drives Train workers must reserve no CPU, or its workers never fit
  on a small machine; Ray rejects an empty request, so it asks for 1 byte of memory.
- astray never calls ``Tuner.restore``: Ray's experiment state is a periodic snapshot
  that a driver killed early has not written yet (restore then logs an error and runs
  on with what it has), and that lags the store whenever it exists. Each driver, fresh
  or ``--resume``, builds a new Tuner around the plan astray rebuilt from its store and
  Optuna journal (docs/design.md §9); the searcher below holds no state to save.
- Tune calls the searcher's ``on_trial_complete`` before the callbacks'; the plan is
  told from ``StoreCallback``, after the store has the trial's final row.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # must be set before Tune loads
# Every trial line carries its configuration and replicate (trainable.trial_prefix); Ray's
# deduplication would fold two trials' look-alike lines into "[repeated 2x across cluster]".
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray._raylet import PlacementGroupID  # noqa: E402  (Ray's own id type; no public path)
from ray.tune.schedulers import FIFOScheduler, TrialScheduler  # noqa: E402
from ray.tune.search import Searcher  # noqa: E402
from ray.util.placement_group import PlacementGroup, remove_placement_group  # noqa: E402

from astray.config.sweep import ResourcesConfig  # noqa: E402
from astray.schema import KIND_SEARCHED, PHASE_CONFIRM  # noqa: E402
from astray.sweep.early_stop import STOP as STOP_DECISION, rung_values  # noqa: E402
from astray.sweep.plan import TrialPlan  # noqa: E402
from astray.extras import require_extra  # noqa: E402


# Checkpoints Ray keeps per trial, Tune and Train alike, ranked by CHECKPOINT_SCORE (the
# val_acc of a checkpoint that handed a new best.pt, else -1): the two best stay, and Ray
# always keeps the newest besides, which is what a retry or --resume restores. So a trial
# holds at most CHECKPOINTS_KEPT + 1 checkpoints, and its best.pt is among them.
CHECKPOINTS_KEPT = 2
CHECKPOINT_SCORE = "checkpoint_score"


# --------------------------------------------------------------------------- cluster

class _Quiet(logging.Filter):
    """Drops Ray's notice that token authentication is on (it is, and stays on: astray wants
    it, clusters/README.md); ``-v`` shows it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled")


def init(address: str | None, num_cpus: int | None = None, verbose: int = 0) -> dict[str, float]:
    """Join a cluster (``address``) or start a local instance sized to the machine."""
    if not verbose:
        logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(_Quiet())
    kwargs: dict[str, Any] = dict(logging_level=logging.WARNING, log_to_driver=True,
                                  logging_config=ray.LoggingConfig(log_level="WARNING"))
    if address:
        ray.init(address=address, **kwargs)
    else:
        # "local": always a fresh instance of our own, never a cluster that happens to
        # run on this machine (Ray would otherwise pick up its address file in /tmp/ray).
        ray.init(address="local", num_cpus=num_cpus, **kwargs)
    logging.getLogger("ray.tune").setLevel(logging.ERROR)
    return dict(ray.cluster_resources())


def node_resources() -> list[dict[str, float]]:
    """Every alive node's total resources (CPU, GPU, memory, custom)."""
    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]


def shutdown() -> None:
    if ray.is_initialized():
        ray.shutdown()


def node_id() -> str:
    return ray.get_runtime_context().get_node_id()


# --------------------------------------------------------------------------- search

class PlanSearcher(Searcher):
    """Hands Tune the plan's trials (``astray.sweep.plan``): baselines, seed replicates and
    the configurations the plan asks Optuna for.

    Holds no state of its own: the plan is rebuilt from the store and the Optuna journal
    by every driver, so there is nothing for Tune's experiment snapshot to save.
    """

    def __init__(self, plan: TrialPlan) -> None:
        super().__init__()
        self.plan = plan

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | str:
        return self.plan.next_trial() or Searcher.FINISHED

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        pass  # the plan hears of it from StoreCallback, once the store has the trial's final row

    def save(self, checkpoint_path: str) -> None:
        pass  # nothing to save: see the class docstring

    def restore(self, checkpoint_path: str) -> None:
        pass


class RungScheduler(FIFOScheduler):
    """Early stopping at rungs (``astray.sweep.early_stop``) as a Tune scheduler.

    Why a Tune scheduler and not an Optuna pruner: Optuna's pruners judge one trial on one
    objective (``Trial.should_prune`` refuses multi-objective studies), and an Optuna
    trial here is a configuration whose replicates are several Tune trials; only Tune sees
    each replicate's epochs as they come, and can hold one while its siblings catch up.

    A searched replicate reporting a rung epoch is recorded there. If a sibling replicate
    is live in Tune (running or pending) and has not reached the rung yet, the replicate
    is paused (its checkpoint is that epoch's) and waits; once none is left to wait for,
    the configuration is decided: stopped replicates end (``stop_trial``), kept ones are
    handed back to Tune to run on (:meth:`choose_trial_to_run`). A sibling not handed out
    yet is not waited for: it would wait on a slot a paused replicate holds. Baselines
    and confirmation trials pass through untouched. As HyperBand's synchronous mode does,
    this uses Tune's ``pause_trial``/``stop_trial`` on the controller it is handed.
    """

    def __init__(self, early: Any, on_stop: Callable[[str], None] | None = None,
                 on_wait: Callable[[str, int, int], None] | None = None, pause: bool = True) -> None:
        super().__init__()
        self.early = early
        # pause=False (multi-worker trials): a Ray Train trial paused at a rung was never
        # started again in the 2-worker test, and its sibling then waited for it forever;
        # such trials are judged on the replicates that reached the rung, without waiting.
        self.pause = pause
        self.on_stop = on_stop or (lambda config_id: None)
        self.on_wait = on_wait or (lambda config_id, replicate, rung: None)
        self.waiting: dict[tuple[str, int], set[Any]] = {}  # (config, rung) -> paused replicates
        self.to_unpause: set[Any] = set()

    @staticmethod
    def judged(trial: Any) -> bool:
        c = trial.config
        return c.get("baseline_kind", KIND_SEARCHED) == KIND_SEARCHED and c.get("search_phase") != PHASE_CONFIRM

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        self.to_unpause.discard(trial)
        if not self.judged(trial) or "epoch_row" not in result:
            return TrialScheduler.CONTINUE
        cid, replicate = trial.config["config_id"], int(trial.config["replicate"])
        if self.early.stopped(cid):
            return TrialScheduler.STOP
        for epoch, (val_acc, energy) in sorted(rung_values(result, self.early.rungs).items()):
            self.early.record(cid, replicate, epoch, val_acc, energy)
            if (self.pause and self.early.decided(cid, epoch) is None
                    and self._wait_for(tune_controller, trial, cid, epoch)):
                self.waiting.setdefault((cid, epoch), set()).add(trial)
                self.on_wait(cid, replicate, epoch)
                return TrialScheduler.PAUSE
            if self._decide(tune_controller, cid, epoch, current=trial) == TrialScheduler.STOP:
                return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def _wait_for(self, tune_controller: Any, trial: Any, cid: str, rung: int) -> bool:
        """Whether a sibling live in Tune has still to reach the rung."""
        done = self.early.reported(cid, rung)
        return any(t is not trial and t.config.get("config_id") == cid and self.judged(t)
                   and int(t.config["replicate"]) not in done and t.status in ("RUNNING", "PENDING")
                   for t in tune_controller.get_trials())

    def _decide(self, tune_controller: Any, cid: str, rung: int, current: Any = None) -> str:
        verdict = self.early.decide(cid, rung)
        if verdict == STOP_DECISION:
            self.on_stop(cid)
        for t in self.waiting.pop((cid, rung), set()):
            if t is current:
                continue
            if verdict == STOP_DECISION:
                tune_controller.stop_trial(t)
            else:
                self.to_unpause.add(t)
        return TrialScheduler.STOP if verdict == STOP_DECISION else TrialScheduler.CONTINUE

    def _release(self, tune_controller: Any, trial: Any) -> None:
        """A replicate ended: the ones waiting for it at a rung wait no more."""
        self.to_unpause.discard(trial)
        for (cid, rung), paused in list(self.waiting.items()):
            paused.discard(trial)
            if cid != trial.config.get("config_id"):
                continue
            if not paused:
                self.waiting.pop((cid, rung), None)
                if self.early.reported(cid, rung) and self.early.decided(cid, rung) is None:
                    self.early.decide(cid, rung)
                continue
            first = next(iter(paused))
            if not self._wait_for(tune_controller, first, cid, rung):
                self._decide(tune_controller, cid, rung)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self._release(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self._release(tune_controller, trial)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._release(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        for trial in tune_controller.get_trials():
            if trial.status == "PENDING":
                return trial
        for trial in tune_controller.get_trials():
            if trial.status == "PAUSED" and trial in self.to_unpause:
                return trial
        return None

    def debug_string(self) -> str:
        return "astray early stopping at rungs " + ", ".join(map(str, self.early.rungs))


# --------------------------------------------------------------------------- trials

def trial_resources(resources: ResourcesConfig) -> dict[str, float]:
    """What the Tune trial itself reserves."""
    if resources.workers_per_trial == 1:
        req = {"CPU": resources.cpus_per_worker}
        if resources.gpus_per_worker:
            req["GPU"] = resources.gpus_per_worker
        return req
    # The trial only drives a TorchTrainer whose workers reserve their own resources.
    return {"CPU": 0, "memory": 1}


def trial_id() -> str:
    return tune.get_context().get_trial_id()


def train_run_name(trial_id: str) -> str:
    """The Ray Train run of a multi-worker trial, named by astray's stable trial id: a Tune
    retry and a resumed driver's new attempt both find its checkpoints (Train restores a
    run of the same name), and so does ``astray.sweep.checkpoints``."""
    return f"train-{trial_id}"


def trial_dirname(trial: Any) -> str:
    """A Tune trial's folder: astray's stable trial id, then Ray's id of this attempt, so
    ``astray.sweep.checkpoints`` finds every attempt's checkpoints by the stable id."""
    return f"{trial.config['trial_id']}_{trial.trial_id}"


@contextlib.contextmanager
def _staged(files: list[Path]):
    """A temporary directory holding copies of ``files`` (Ray uploads it as the checkpoint)."""
    with tempfile.TemporaryDirectory(prefix="astray-ckpt-") as tmp:
        for f in files:
            if f.exists():
                shutil.copy2(f, Path(tmp) / f.name)
        yield tmp


def report(metrics: dict[str, Any], checkpoint_files: list[Path] | None = None) -> None:
    """Report from a Tune function trial, with the given files as the checkpoint."""
    if not checkpoint_files:
        tune.report(metrics)
        return
    with _staged(checkpoint_files) as tmp:
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))


def restore_checkpoint_into(target: Path, *, in_train_worker: bool = False) -> bool:
    """Copy the latest reported checkpoint (if any) into ``target``."""
    ckpt = ray.train.get_checkpoint() if in_train_worker else tune.get_checkpoint()
    if ckpt is None:
        return False
    target.mkdir(parents=True, exist_ok=True)
    with ckpt.as_directory() as d:
        for f in Path(d).iterdir():
            shutil.copy2(f, target / f.name)
    return True


def train_worker_report(metrics: dict[str, Any], checkpoint_files: list[Path] | None) -> None:
    """Report from a Ray Train worker: all ranks call this; rank 0 passes files."""
    import ray.train  # Ray Train loads only in multi-worker trials, which alone report through it

    if not checkpoint_files:
        ray.train.report(metrics)
        return
    with _staged(checkpoint_files) as tmp:
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def run_torch_trainer(loop: Callable[[dict[str, Any]], None], loop_config: dict[str, Any],
                      resources: ResourcesConfig, name: str, storage_path: str) -> None:
    """Run ``loop`` on ``workers_per_trial`` DDP workers, forwarding rank 0's reports to Tune.

    The run is named from the Tune trial id, so when Tune retries the trial, Train
    finds the same run in storage and hands the workers its latest checkpoint.
    """
    # Ray Train (and its torch integration) loads only when a trial has several workers.
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    gpus = resources.gpus_per_worker
    per_worker = {"CPU": resources.cpus_per_worker}
    if gpus:
        per_worker["GPU"] = gpus
    trainer = TorchTrainer(
        loop,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=resources.workers_per_trial, use_gpu=gpus > 0, resources_per_worker=per_worker,
            placement_strategy=resources.placement_strategy),
        run_config=ray.train.RunConfig(
            name=name, storage_path=storage_path, callbacks=[TuneReportCallback()],
            failure_config=ray.train.FailureConfig(max_failures=0),  # Tune owns retries
            # Unset, Train keeps every epoch's checkpoint (64 full ones per ImageNet trial).
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT,
                                                        checkpoint_score_attribute=CHECKPOINT_SCORE)),
    )
    trainer.fit()


# --------------------------------------------------------------------------- sweeps

class StoreCallback(tune.Callback):
    """Forwards Tune's driver-side trial events to a :class:`astray.sweep.recorder.SweepRecorder`."""

    def __init__(self, recorder: Any) -> None:
        self.recorder = recorder

    def on_trial_start(self, iteration, trials, trial, **info):
        self.recorder.on_start(trial.config)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.recorder.on_result(trial.config, result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.recorder.on_complete(trial.config)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.recorder.on_error(trial.config, trial_error_text(trial))

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.recorder.on_retry(trial.config)


TRAIN_PLACEMENT_GROUP = "train_placement_group"  # result key: a multi-worker trial's worker group


def current_placement_group_id() -> str | None:
    """The placement group this (Ray Train worker) process runs in, as hex."""
    pg = ray.util.get_current_placement_group()
    return pg.id.hex() if pg is not None else None


class TrainGroupCleaner(tune.Callback):
    """Removes the worker placement group of a multi-worker trial once Tune has ended it.

    Tune ends a trial it stops (early stopping), or one that fails, by removing the
    trial's own placement group, which kills the Ray Train controller inside it without a
    shutdown. The workers' placement group, made by that controller, then stays reserved
    for as long as the driver lives: Ray removes a placement group when its creator and
    the creator's job are both gone, and Train's own cleaner actor asks the state API,
    which needs Ray's dashboard and reports nothing without it. On a small cluster two
    such leaks hold every CPU and the sweep waits for ever (docs/design.md §9). The
    workers report their group's id (:data:`TRAIN_PLACEMENT_GROUP`); a group already
    removed (a trial that ended by itself) is left alone.
    """

    def __init__(self) -> None:
        self.groups: dict[str, set[str]] = {}  # Tune trial id -> worker placement groups

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get(TRAIN_PLACEMENT_GROUP):
            self.groups.setdefault(trial.trial_id, set()).add(result[TRAIN_PLACEMENT_GROUP])

    def _remove(self, trial: Any) -> None:
        for hex_id in self.groups.pop(trial.trial_id, set()):
            pg = PlacementGroup(PlacementGroupID.from_hex(hex_id))
            try:
                if ray.util.placement_group_table(pg).get("state", "REMOVED") != "REMOVED":
                    remove_placement_group(pg)
            except Exception as exc:  # a cleanup that fails must not end the sweep; say so instead
                print(f"[astray] could not free the workers' placement group {hex_id} of trial "
                      f"{trial.trial_id}: {exc}", flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._remove(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._remove(trial)

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._remove(trial)  # the failed attempt's group; the retry makes its own


def make_trainable(fn: Callable[..., Any], resources: dict[str, float], **params: Any) -> Any:
    """``fn(config, **params)`` as a Tune trainable reserving ``resources``."""
    return tune.with_resources(tune.with_parameters(fn, **params), resources)


def make_tuner(trainable: Any, searcher: PlanSearcher, num_samples: int, max_concurrent: int,
               name: str, storage_path: str, callbacks: list[Any], max_failures: int,
               verbose: int = 0, scheduler: Any = None) -> tune.Tuner:
    """``verbose`` is Ray Tune's: 0 leaves the console to astray's own lines, 1 adds Ray's
    ``== Status ==`` table (about 170 lines a minute on the quickstart)."""
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=num_samples, scheduler=scheduler,
                                    max_concurrent_trials=max_concurrent, trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(
            name=name, storage_path=storage_path, callbacks=callbacks, verbose=verbose,
            failure_config=tune.FailureConfig(max_failures=max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT,
                                                    checkpoint_score_attribute=CHECKPOINT_SCORE)),
    )


def trial_error_text(trial: Any) -> str:
    """The last line of a failed trial's error (its exception type and message)."""
    path = getattr(trial, "error_file", None)
    try:
        lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip()] if path else []
    except OSError:
        lines = []
    return lines[-1].strip() if lines else "trial failed (no error text recorded)"


# --------------------------------------------------------------------------- trackers

def mlflow_uri(store: Path) -> str:
    """The sweep's MLflow tracking store: SQLite in the store (MLflow 3 refuses its old file
    store by default)."""
    return f"sqlite:///{(store / 'mlflow.db').resolve()}"


def logger_callbacks(names: list[str], store: Path, sweep_name: str) -> list[Any]:
    """Ray Tune's own logger callbacks for ``sweep.loggers``: TensorBoard events in each
    trial's Ray folder; an MLflow store at ``<store>/mlflow.db`` (experiment = the sweep's
    name); W&B runs under ``<store>/wandb``, offline unless WANDB_MODE says otherwise."""
    out: list[Any] = []
    for name in names:
        if name == "tensorboard":
            require_extra("tensorboard", "tensorboardX", "sweep.loggers: tensorboard")
            out.append(tune.logger.TBXLoggerCallback())
        elif name == "mlflow":
            require_extra("mlflow", "mlflow", "sweep.loggers: mlflow")
            # Ray's MLflow integration imports mlflow: only when asked for.
            from ray.air.integrations.mlflow import MLflowLoggerCallback

            class TaggedMLflowLogger(MLflowLoggerCallback):
                """Each trial's run also carries its baseline flags as tags (Ray's callback
                tags every run alike)."""

                def log_trial_start(self, trial: Any) -> None:
                    common, config = self.tags, trial.config
                    self.tags = {**common, "astray.config_id": str(config.get("config_id", "")),
                                 "astray.baseline_kind": str(config.get("baseline_kind", "")),
                                 "astray.is_baseline": str(bool(config.get("baseline_kind"))).lower(),
                                 "astray.replicate": str(config.get("replicate", 0))}
                    try:
                        super().log_trial_start(trial)
                    finally:
                        self.tags = common

            out.append(TaggedMLflowLogger(tracking_uri=mlflow_uri(store), experiment_name=sweep_name,
                                          tags={"astray.sweep": sweep_name}))
        elif name == "wandb":
            require_extra("wandb", "wandb", "sweep.loggers: wandb")
            # Ray's W&B integration imports wandb: only when asked for.
            from ray.air.integrations.wandb import WandbLoggerCallback

            (store / "wandb").mkdir(parents=True, exist_ok=True)
            out.append(WandbLoggerCallback(project=sweep_name, mode=os.environ.get("WANDB_MODE", "offline"),
                                           dir=str(store.resolve()), log_config=True))
    return out

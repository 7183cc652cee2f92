"""Every Ray call astray makes, in one module (Ray 2.60, Train V2, Optuna 5).

Ray's training and reporting APIs have moved several times; keeping them here means
the next move is one edit. Facts this module relies on (checked on Ray 2.60):

- In a Tune function trial, report with ``ray.tune.report`` and read the checkpoint
  with ``ray.tune.get_checkpoint`` (``ray.train.*`` raises there).
- ``Tuner(TorchTrainer(...))`` raises under Train V2. A multi-worker trial builds a
  ``TorchTrainer`` itself and forwards rank 0's reports with ``TuneReportCallback``.
  Every worker must call ``ray.train.report`` (it is a barrier).
- A trial that only drives Train workers must reserve no CPU, or its workers never fit
  on a small machine; Ray rejects an empty request, so it asks for 1 byte of memory.
- ``Tuner.restore`` brings back the callbacks pickled at construction and the searcher
  state; the experiment snapshot is periodic, so it is made frequent.
- ``OptunaSearch`` keeps each asked trial in ``_ot_trials`` (Tune trial id → Optuna
  trial) and its study in ``_ot_study``; ``PlanSearcher`` reads them (and nothing else
  private) to label Optuna trials with their config_id and to close orphans on resume.
- Tune wraps any searcher in a ``ConcurrencyLimiter`` (``max_concurrent_trials``), which
  saves and restores only the searcher it wraps: ``PlanSearcher.save`` must hold all.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Must be set before Tune starts: a short snapshot period means a killed driver loses
# (and re-runs) at most a second or two of finished trials on --resume.
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

import optuna  # noqa: E402
import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.search import Searcher  # noqa: E402
from ray.tune.search.optuna import OptunaSearch  # noqa: E402

from astray.config.sweep import Param, ResourcesConfig, SearchConfig  # noqa: E402
from astray.sweep.plan import TrialPlan  # noqa: E402
from astray.trackers import require  # noqa: E402


# Checkpoints Ray keeps per trial, Tune and Train alike, ranked by CHECKPOINT_SCORE (the
# val_acc of a checkpoint that handed a new best.pt, else -1): the two best stay, and Ray
# always keeps the newest besides, which is what a retry or --resume restores. So a trial
# holds at most CHECKPOINTS_KEPT + 1 checkpoints, and its best.pt is among them.
CHECKPOINTS_KEPT = 2
CHECKPOINT_SCORE = "checkpoint_score"


# --------------------------------------------------------------------------- cluster

def init(address: str | None, num_cpus: int | None = None) -> dict[str, float]:
    """Join a cluster (``address``) or start a local instance sized to the machine."""
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

class SearchSpace:
    """Optuna define-by-run space: suggests each searched parameter.

    A class (not a closure) so the Tuner can pickle it for ``--resume``.
    """

    def __init__(self, params: list[Param]) -> None:
        self.params = params

    def __call__(self, trial: optuna.Trial) -> None:
        for p in self.params:
            if p.type == "uniform":
                trial.suggest_float(p.key, p.low, p.high, step=p.step)
            elif p.type == "loguniform":
                trial.suggest_float(p.key, p.low, p.high, log=True)
            elif p.type == "int":
                trial.suggest_int(p.key, int(p.low), int(p.high), step=int(p.step or 1))
            else:
                trial.suggest_categorical(p.key, list(p.values))


def make_sampler(search: SearchConfig) -> optuna.samplers.BaseSampler:
    if search.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=search.seed)
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=search.seed)
    return optuna.samplers.TPESampler(seed=search.seed, multivariate=True)


def optuna_storage(journal: Path) -> optuna.storages.JournalStorage:
    """The study's persistent storage: an Optuna journal file (``optuna.load_study`` and
    ``optuna-dashboard`` open it, also while the sweep runs)."""
    journal.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))


class PlanSearcher(Searcher):
    """Baselines and seed replicates around an OptunaSearch (``astray.sweep.plan``).

    Tune asks this searcher for every trial; it hands out baselines and replicates
    itself and asks Optuna only for new searched configurations, which Optuna is told
    about once, with the mean of their replicates.
    """

    def __init__(self, inner: OptunaSearch, plan: TrialPlan) -> None:
        self.inner = inner
        self.plan = plan
        super().__init__(metric=inner.metric, mode=inner.mode)

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return self.inner.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str) -> dict[str, Any] | None | str:
        out = self.plan.suggest(trial_id, self.inner.suggest)
        return Searcher.FINISHED if out == "FINISHED" else out

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        pass  # no pruning: Optuna only ever sees a configuration's replicate mean

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.plan.complete(trial_id, result, error, self._tell)

    def _tell(self, owner: str, mean: dict[str, Any] | None, error: bool) -> None:
        # Ray keeps the Optuna trial of each asked trial id here (ray/tune/search/optuna);
        # the attributes let optuna.load_study users find the configuration in the store.
        ot_trial = getattr(self.inner, "_ot_trials", {}).get(owner)
        if ot_trial is not None:
            cid = self.plan.trials[owner][0]
            ot_trial.set_user_attr("config_id", cid)
            ot_trial.set_user_attr("replicates", len(self.plan.results[cid]))
            ot_trial.set_user_attr("replicates_good", int((mean or {}).get("replicates", 0)))
        self.inner.on_trial_complete(owner, result=mean, error=error)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))
        # The journal outlives the driver: a configuration Optuna proposed after the last
        # snapshot was never trained and is proposed afresh; close it as failed so the
        # study shows no trial running forever. Tune logs an exception raised here and
        # then waits forever for trials (Ray 2.60), so nothing may escape.
        try:
            close_orphans(self.inner)
        except Exception as exc:  # noqa: BLE001 — a courtesy to the study, never a reason to stop
            logging.getLogger("astray").warning("could not close orphaned Optuna trials: %s", exc)


def close_orphans(inner: OptunaSearch) -> int:
    """Mark RUNNING Optuna trials that no Tune trial owns as failed; returns how many."""
    study = getattr(inner, "_ot_study", None)
    if study is None:
        return 0
    known = {t.number for t in getattr(inner, "_ot_trials", {}).values()}
    orphans = [t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
               if t.number not in known]
    for number in orphans:
        study.tell(number, state=optuna.trial.TrialState.FAIL)
    return len(orphans)


def make_searcher(search: SearchConfig, study_name: str, journal: Path, base_seed: int) -> PlanSearcher:
    """Multi-objective OptunaSearch on a journal file, wrapped with the sweep's baselines and repeats."""
    sampler = make_sampler(search)
    directions = [o.direction for o in search.parsed_objectives]
    storage = optuna_storage(journal)
    study = optuna.create_study(study_name=study_name, storage=storage, sampler=sampler, directions=directions)
    study.set_user_attr("repeats", search.repeats)
    study.set_user_attr("objective_value", "mean over a configuration's seed replicates")
    inner = OptunaSearch(
        space=SearchSpace(search.params), metric=[o.metric for o in search.parsed_objectives],
        mode=[o.mode for o in search.parsed_objectives], sampler=sampler, study_name=study_name,
        storage=storage,
    )
    plan = TrialPlan(search.parsed_baselines, search.num_samples, search.repeats, base_seed,
                     [o.metric for o in search.parsed_objectives])
    return PlanSearcher(inner, plan)


def unique_study_name(sweep_name: str) -> str:
    return f"astray-{sweep_name}-{uuid.uuid4().hex[:8]}"


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
    """The Ray Train run of a multi-worker trial (``astray.sweep.checkpoints`` finds it by this)."""
    return f"train-{trial_id}"


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
    """Forwards Tune's driver-side trial events to a :class:`astray.sweep.recorder.SweepRecorder`.

    Pickled into the experiment at construction and brought back by ``Tuner.restore``;
    ``setup`` runs at the start of every ``fit`` and reloads what the store holds.
    """

    def __init__(self, recorder: Any) -> None:
        self.recorder = recorder

    def setup(self, **info: Any) -> None:
        self.recorder.load_existing()

    def on_trial_start(self, iteration, trials, trial, **info):
        self.recorder.on_start(trial.trial_id, trial.config)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.recorder.on_result(trial.trial_id, trial.config, result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.recorder.on_complete(trial.trial_id, trial.config)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.recorder.on_error(trial.trial_id, trial.config, trial_error_text(trial))

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.recorder.on_retry(trial.trial_id, trial.config)


def make_trainable(fn: Callable[..., Any], resources: dict[str, float], **params: Any) -> Any:
    """``fn(config, **params)`` as a Tune trainable reserving ``resources``."""
    return tune.with_resources(tune.with_parameters(fn, **params), resources)


def make_tuner(trainable: Any, searcher: OptunaSearch, num_samples: int, max_concurrent: int,
               name: str, storage_path: str, callbacks: list[Any], max_failures: int,
               verbose: int = 0) -> tune.Tuner:
    """``verbose`` is Ray Tune's: 0 leaves the console to astray's own lines, 1 adds Ray's
    ``== Status ==`` table (about 170 lines a minute on the quickstart)."""
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=num_samples,
                                    max_concurrent_trials=max_concurrent),
        run_config=tune.RunConfig(
            name=name, storage_path=storage_path, callbacks=callbacks, verbose=verbose,
            failure_config=tune.FailureConfig(max_failures=max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT,
                                                    checkpoint_score_attribute=CHECKPOINT_SCORE)),
    )


def can_restore(path: str) -> bool:
    return tune.Tuner.can_restore(path)


def restore_tuner(path: str, trainable: Any) -> tune.Tuner:
    return tune.Tuner.restore(path, trainable=trainable, resume_errored=True)


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
            require("tensorboard", "tensorboardX", "sweep.loggers: tensorboard")
            out.append(tune.logger.TBXLoggerCallback())
        elif name == "mlflow":
            require("mlflow", "mlflow", "sweep.loggers: mlflow")
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
            require("wandb", "wandb", "sweep.loggers: wandb")
            # Ray's W&B integration imports wandb: only when asked for.
            from ray.air.integrations.wandb import WandbLoggerCallback

            (store / "wandb").mkdir(parents=True, exist_ok=True)
            out.append(WandbLoggerCallback(project=sweep_name, mode=os.environ.get("WANDB_MODE", "offline"),
                                           dir=str(store.resolve()), log_config=True))
    return out

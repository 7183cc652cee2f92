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
"""

from __future__ import annotations

import contextlib
import logging
import os
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
from ray.tune.search.optuna import OptunaSearch  # noqa: E402

from astray.config.sweep import Param, ResourcesConfig, SearchConfig  # noqa: E402
from astray.schema import BASELINE_FLAG  # noqa: E402


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


def shutdown() -> None:
    if ray.is_initialized():
        ray.shutdown()


def node_id() -> str:
    return ray.get_runtime_context().get_node_id()


# --------------------------------------------------------------------------- search

class SearchSpace:
    """Optuna define-by-run space: suggests each param, flags the enqueued baseline.

    A class (not a closure) so the Tuner can pickle it for ``--resume``.
    """

    def __init__(self, params: list[Param]) -> None:
        self.params = params

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        for p in self.params:
            if p.type == "uniform":
                trial.suggest_float(p.key, p.low, p.high, step=p.step)
            elif p.type == "loguniform":
                trial.suggest_float(p.key, p.low, p.high, log=True)
            elif p.type == "int":
                trial.suggest_int(p.key, int(p.low), int(p.high), step=int(p.step or 1))
            else:
                trial.suggest_categorical(p.key, list(p.values))
        return {BASELINE_FLAG: bool(trial.user_attrs.get(BASELINE_FLAG, False))}


def make_sampler(search: SearchConfig) -> optuna.samplers.BaseSampler:
    if search.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=search.seed)
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=search.seed)
    return optuna.samplers.TPESampler(seed=search.seed, multivariate=True)


def make_searcher(search: SearchConfig, study_name: str, baseline_params: dict[str, Any] | None) -> OptunaSearch:
    """Multi-objective OptunaSearch; the dense baseline is enqueued first, flagged."""
    sampler = make_sampler(search)
    directions = [o.direction for o in search.parsed_objectives]
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(study_name=study_name, storage=storage, sampler=sampler, directions=directions)
    if baseline_params is not None:
        study.enqueue_trial(baseline_params, user_attrs={BASELINE_FLAG: True})
    return OptunaSearch(
        space=SearchSpace(search.params), metric=[o.metric for o in search.parsed_objectives],
        mode=[o.mode for o in search.parsed_objectives], sampler=sampler, study_name=study_name,
        storage=storage,
    )


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
            failure_config=ray.train.FailureConfig(max_failures=0)),  # Tune owns retries
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
               name: str, storage_path: str, callbacks: list[Any], max_failures: int) -> tune.Tuner:
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=num_samples,
                                    max_concurrent_trials=max_concurrent),
        run_config=tune.RunConfig(
            name=name, storage_path=storage_path, callbacks=callbacks, verbose=1,
            failure_config=tune.FailureConfig(max_failures=max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2)),
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

"""Run a sweep: check everything Ray-free first, then start Ray, the searcher and the store.

Optuna searches the config's ``search.space`` on Ray Tune as a multi-objective study
(default: validation accuracy up, energy down). A sweep also trains its baselines
(dense at each budget, random subsets), and every configuration ``search.repeats``
times (``astray.sweep.plan``). Results land in the Parquet store at
``<sweep.results_dir>/<sweep.name>/``, the Optuna study in ``optuna/journal.log`` there.
The command is ``astray.cli.tune``.
"""

from __future__ import annotations

import os
from pathlib import Path

from astray.config.sweep import SweepSpec
from astray.sweep import ray_adapter
from astray.sweep.provenance import manifest
from astray.sweep.recorder import SweepRecorder
from astray.sweep.store import ResultStore
from astray.sweep.trainable import astray_trial
from astray.sweep.trial_config import (
    check_before_start,
    check_data_on_driver,
    check_trial_fits,
    resolved_sweep_config,
    sweep_paths,
)


def run_sweep(spec: SweepSpec, resume: bool = False, address: str | None = None, num_cpus: int | None = None,
              verbose: int = 0) -> Path:
    """Run (or finish) a sweep; returns the store directory."""
    check_before_start(spec, resume)
    paths = sweep_paths(spec)
    root = paths.store
    search = spec.search
    total = search.trials_per_sweep
    address = address or os.environ.get("RAY_ADDRESS")
    check_data_on_driver(spec)
    cluster = ray_adapter.init(address, num_cpus=num_cpus)
    try:
        waiting = check_trial_fits(spec.resources, ray_adapter.node_resources())
        if waiting:
            print(waiting, flush=True)
        trainable = ray_adapter.make_trainable(astray_trial, ray_adapter.trial_resources(spec.resources),
                                               spec=spec, storage=paths.storage)
        store = ResultStore(root, {p.key: p.arrow_type() for p in spec.search.params}).open()
        if resume:
            print(f"[astray] resuming sweep {spec.sweep.name} from {paths.experiment}", flush=True)
            tuner = ray_adapter.restore_tuner(paths.experiment, trainable)
        else:
            study = ray_adapter.unique_study_name(spec.sweep.name)
            store.write_manifest(manifest(resolved_sweep_config(spec), study_name=study, cluster_resources=cluster,
                                          total_trials=total, storage_path=paths.storage,
                                          optuna_storage=optuna_storage_entry(paths.journal)))
            searcher = ray_adapter.make_searcher(search, study, paths.journal, spec.run.training.seed)
            recorder = SweepRecorder(store, spec, total)
            tuner = ray_adapter.make_tuner(trainable, searcher, total, search.max_concurrent,
                                           spec.sweep.name, paths.storage,
                                           [ray_adapter.StoreCallback(recorder),
                                            *ray_adapter.logger_callbacks(spec.sweep.loggers, root, spec.sweep.name)],
                                           spec.sweep.max_failures, verbose)
            baselines = ", ".join(b.config_id for b in search.parsed_baselines) or "none"
            print(f"[astray] sweep {spec.sweep.name}: {search.num_samples} searched configurations + baselines "
                  f"({baselines}), {search.repeats} seed(s) each = {total} trials, {search.max_concurrent} at a "
                  f"time, objectives {', '.join(f'{o.metric} ({o.mode})' for o in search.parsed_objectives)}; "
                  f"store {root}; Optuna study {study} in {paths.journal}", flush=True)
        tuner.fit()
    finally:
        ray_adapter.shutdown()
    print(f"[astray] sweep {spec.sweep.name} finished; results in {root}", flush=True)
    return root


def optuna_storage_entry(journal: Path) -> dict[str, str]:
    """How ``sweep.json`` names the study's storage, and how to open it."""
    return {"kind": "journal", "path": str(journal),
            "open_with": "optuna.load_study(study_name=<study_name>, storage=optuna.storages.JournalStorage("
                         f"optuna.storages.journal.JournalFileBackend({str(journal)!r})))",
            "dashboard": f"optuna-dashboard {journal}"}

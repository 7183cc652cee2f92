"""Run a sweep: check everything Ray-free first, then start Ray, the searcher and the store.

Optuna searches the config's ``search.space`` on Ray Tune as a multi-objective study
(default: validation accuracy up, energy down). Every sweep also runs one dense
baseline trial with the same budget. Results land in the Parquet store at
``<sweep.results_dir>/<sweep.name>/``. The command is ``astray.cli.tune``.
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
from astray.sweep.trial_config import baseline_params, check_before_start, resolved_sweep_config, sweep_paths


def run_sweep(spec: SweepSpec, resume: bool = False, address: str | None = None, num_cpus: int | None = None) -> Path:
    """Run (or finish) a sweep; returns the store directory."""
    check_before_start(spec, resume)
    paths = sweep_paths(spec)
    root = paths.store
    total = spec.search.num_samples + (1 if spec.search.baseline else 0)
    cluster = ray_adapter.init(address or os.environ.get("RAY_ADDRESS"), num_cpus=num_cpus)
    try:
        trainable = ray_adapter.make_trainable(astray_trial, ray_adapter.trial_resources(spec.resources),
                                               spec=spec, storage=paths.storage)
        store = ResultStore(root, {p.key: p.arrow_type() for p in spec.search.params}).open()
        if resume:
            print(f"[astray] resuming sweep {spec.sweep.name} from {paths.experiment}", flush=True)
            tuner = ray_adapter.restore_tuner(paths.experiment, trainable)
        else:
            study = ray_adapter.unique_study_name(spec.sweep.name)
            store.write_manifest(manifest(resolved_sweep_config(spec), study_name=study, cluster_resources=cluster,
                                          total_trials=total, storage_path=paths.storage))
            searcher = ray_adapter.make_searcher(spec.search, study,
                                                 baseline_params(spec) if spec.search.baseline else None)
            recorder = SweepRecorder(store, spec, total)
            tuner = ray_adapter.make_tuner(trainable, searcher, total, spec.search.max_concurrent,
                                           spec.sweep.name, paths.storage, [ray_adapter.StoreCallback(recorder)],
                                           spec.sweep.max_failures)
            print(f"[astray] sweep {spec.sweep.name}: {spec.search.num_samples} searched trials"
                  f"{' + 1 dense baseline' if spec.search.baseline else ''}, {spec.search.max_concurrent} at a time, "
                  f"objectives {', '.join(f'{o.metric} ({o.mode})' for o in spec.search.parsed_objectives)}; "
                  f"store {root}", flush=True)
        tuner.fit()
    finally:
        ray_adapter.shutdown()
    print(f"[astray] sweep {spec.sweep.name} finished; results in {root}", flush=True)
    return root

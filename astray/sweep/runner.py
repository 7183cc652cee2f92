"""Run a sweep: check everything Ray-free first, then start Ray, the plan and the store.

Optuna searches the config's ``search.space`` as a multi-objective study (default:
validation accuracy up, energy down), on Ray Tune. A sweep also trains its baselines
(dense at each budget, random subsets), and every configuration ``search.repeats``
times (``astray.sweep.plan``). Results land in the Parquet store at
``<sweep.results_dir>/<sweep.name>/``, the Optuna study in ``optuna/journal.log`` there.

A fresh driver and a ``--resume`` one run the same way: the plan is built from the store
and the journal, and a new Ray Tune run trains what the plan still lacks
(docs/design.md §9). A run that ends with planned trials missing (Ctrl+C, a lost
driver's Ray run) raises :class:`astray.errors.SweepIncomplete`. The command is
``astray.cli.tune``.
"""

from __future__ import annotations

import datetime as _dt
import functools
import os
import sys
from pathlib import Path
from typing import Any, Callable

from astray.config.sweep import SamplerSpec, SweepSpec, legacy_sampler
from astray.errors import SweepIncomplete
from astray.sweep import ray_adapter
from astray.sweep.checkpoints import resume_point
from astray.sweep.cost import sweep_cost
from astray.sweep.early_stop import EarlyStopping
from astray.sweep.plan import ConfirmationPlan, TrialPlan
from astray.sweep.provenance import git_commit, manifest
from astray.sweep.recorder import SweepRecorder
from astray.sweep.store import ResultStore, read_trials
from astray.sweep.study import OBJECTIVE_VALUE, SweepStudy, unique_study_name
from astray.sweep.trainable import astray_trial
from astray.sweep.trial_config import (
    check_before_start,
    check_data_on_driver,
    check_trial_fits,
    resolved_sweep_config,
    resolved_trial_run,
    sweep_paths,
)


Picker = Callable[[Path], tuple[list[str], str]]


def run_sweep(spec: SweepSpec, resume: bool = False, address: str | None = None, num_cpus: int | None = None,
              verbose: int = 0, pick: Picker | None = None) -> Path:
    """Run (or finish) a sweep; returns the store directory.

    With ``search.confirm`` and a ``pick`` (the store → the configuration ids to confirm,
    headline first, and why; the analysis layer's, handed in by the command), the
    finished search is followed by the confirmation trials (:class:`ConfirmationPlan`).
    """
    if resume and not check_before_start(spec, resume):
        print(f"[astray] --resume: nothing of sweep {spec.sweep.name} was written yet; starting it", flush=True)
        resume = False
    paths = sweep_paths(spec)
    root = paths.store
    search = spec.search
    address = address or os.environ.get("RAY_ADDRESS")
    check_data_on_driver(spec)
    confirm: ConfirmationPlan | None = None
    cluster = ray_adapter.init(address, num_cpus=num_cpus, verbose=verbose)
    try:
        waiting = check_trial_fits(spec.resources, ray_adapter.node_resources())
        if waiting:
            print(waiting, flush=True)
        store = ResultStore(root, {p.key: p.arrow_type() for p in search.params})
        # The manifest comes first: from here on a killed driver leaves a sweep --resume finds.
        sampler = search.parsed_sampler
        if resume:
            recorded = store.read_manifest()
            study_name = recorded["study_name"]
            sampler = resumed_sampler(recorded, spec)
            store.add_resume({"at": _now(), "command": " ".join(sys.argv), "git_commit": git_commit(),
                              "cluster_resources": cluster})
        else:
            study_name = unique_study_name(spec.sweep.name)
            store.write_manifest(manifest(resolved_sweep_config(spec), study_name=study_name, cluster_resources=cluster,
                                          total_trials=search.trials_per_sweep, storage_path=paths.storage,
                                          optuna_storage=optuna_storage_entry(paths.journal),
                                          sampler=sampler.manifest(), objective_value=OBJECTIVE_VALUE))
        store.open()
        study = SweepStudy(search, study_name, paths.journal, sampler)
        study.close_orphans()
        recorder = SweepRecorder(store, spec).load()
        early = early_stopping(spec, root)
        recorder.early = early
        plan = recorder.plan = TrialPlan(search.parsed_baselines, search.num_samples, search.repeats,
                                         spec.run.training.seed, search.parsed_objectives,
                                         study, recorder.records.values(),
                                         checkpoint_of=functools.partial(resume_point, paths.storage),
                                         resolve=functools.partial(resolved_trial_run, spec), early=early)
        recorder.finish_stopped(plan.stopped_unfinished, plan.checkpoint_of)
        print(start_line(spec, plan, resume, root, study_name, paths.journal, sampler), flush=True)
        if plan.to_train():
            trainable = ray_adapter.make_trainable(astray_trial, ray_adapter.trial_resources(spec.resources),
                                                   spec=spec, storage=paths.storage)
            callbacks = trial_callbacks(spec, recorder, root)
            scheduler = None if early is None else ray_adapter.RungScheduler(
                early, on_stop=stop_printer(early), on_wait=wait_printer,
                pause=spec.resources.workers_per_trial == 1)
            ray_adapter.make_tuner(trainable, ray_adapter.PlanSearcher(plan), plan.to_train(), search.max_concurrent,
                                   spec.sweep.name, paths.storage, callbacks, spec.sweep.max_failures, verbose,
                                   scheduler=scheduler).fit()
        if search.confirm and pick is not None and not plan.missing():
            confirm = confirmation_plan(store, plan, search.confirm, root, pick)
            if confirm is not None and confirm.to_train():
                recorder.plan = confirm
                trainable = ray_adapter.make_trainable(astray_trial, ray_adapter.trial_resources(spec.resources),
                                                       spec=spec, storage=paths.storage)
                callbacks = trial_callbacks(spec, recorder, root)
                ray_adapter.make_tuner(trainable, ray_adapter.PlanSearcher(confirm), confirm.to_train(),
                                       search.max_concurrent, spec.sweep.name, paths.storage, callbacks,
                                       spec.sweep.max_failures, verbose).fit()
        record_cost(store, search.repeats, early)
    finally:
        ray_adapter.shutdown()
    if plan.missing():
        raise SweepIncomplete(plan.missing_line(spec.sweep.name))
    if confirm is not None and confirm.missing():
        raise SweepIncomplete(confirm.missing_line(spec.sweep.name))
    print(f"[astray] sweep {spec.sweep.name} finished; results in {root}", flush=True)
    return root


def trial_callbacks(spec: SweepSpec, recorder: SweepRecorder, root: Path) -> list[Any]:
    """Tune's driver-side callbacks: the store, the trackers, and for multi-worker trials the
    removal of the worker placement groups Tune's stops would leave behind."""
    callbacks = [ray_adapter.StoreCallback(recorder),
                 *ray_adapter.logger_callbacks(spec.sweep.loggers, root, spec.sweep.name)]
    if spec.resources.workers_per_trial > 1:
        callbacks.append(ray_adapter.TrainGroupCleaner())
    return callbacks


def record_cost(store: ResultStore, repeats: int, early: EarlyStopping | None) -> None:
    """``sweep.json``'s ``cost`` (``astray.sweep.cost``) and ``early_stop`` (the rungs and
    who stopped where), from what the store holds now."""
    manifest = store.read_manifest()
    manifest["cost"] = sweep_cost(read_trials(store.root).to_pylist(), repeats)
    if early is not None:
        manifest["early_stop"] = early.summary()
    store.write_manifest(manifest)


def early_stopping(spec: SweepSpec, root: Path) -> EarlyStopping | None:
    """The sweep's early stopping, with the decisions an earlier driver took (None: off)."""
    cfg = spec.sweep.early_stop
    if not cfg.enabled:
        return None
    return EarlyStopping(root, cfg.rungs(spec.run.training.epochs), cfg.reduction_factor)


def stop_printer(early: EarlyStopping) -> Callable[[str], None]:
    def say(config_id: str) -> None:
        rung = early.stopped_at(config_id)
        print(f"[astray] {config_id} stopped early at epoch {rung}: not in the top 1/{early.reduction_factor:g} "
              "by validation accuracy and energy so far among the configurations that reached it", flush=True)
    return say


def wait_printer(config_id: str, replicate: int, rung: int) -> None:
    print(f"[astray] {config_id} r{replicate} waits at epoch {rung} for its other replicates (paused; "
          "it continues or stops with them)", flush=True)


def confirmation_plan(store: ResultStore, plan: TrialPlan, n: int, root: Path, pick: Picker) -> ConfirmationPlan | None:
    """The confirmation of a finished search: which configurations, picked once and
    recorded in ``sweep.json`` (``confirmation``), so a resumed driver confirms the same
    ones; None, with a line saying why, when there is nothing to confirm."""
    manifest = store.read_manifest()
    recorded = manifest.get("confirmation")
    if recorded is None:
        picked, why = pick(root)
        replicates = list(range(plan.repeats, plan.repeats + n))
        recorded = {"configs": picked, "why": why, "replicates": replicates,
                    "seeds": [plan.base_seed + r for r in replicates], "picked_at": _now()}
        manifest["confirmation"] = recorded
        store.write_manifest(manifest)
    if not recorded["configs"]:
        print(f"[astray] search.confirm: nothing to confirm ({recorded['why']})", flush=True)
        return None
    confirm = ConfirmationPlan(plan, recorded["configs"], n)
    head, *dense = recorded["configs"]
    print(f"[astray] confirming {head} against {' and '.join(dense)} on {n} fresh seed(s) "
          f"({', '.join(map(str, recorded['seeds']))}): {confirm.to_train()} trial(s) to train", flush=True)
    return confirm


def resumed_sampler(recorded: dict[str, Any], spec: SweepSpec) -> SamplerSpec:
    """The sampler a resumed sweep goes on with: the config's, which ``--resume`` has
    checked is the one ``sweep.json`` records; a sweep recorded before sampler options
    existed (no ``sampler`` there) goes on with the sampler it started with."""
    if "sampler" in recorded:
        return spec.search.parsed_sampler
    return legacy_sampler(spec.search.sampler, spec.search.seed)


def start_line(spec: SweepSpec, plan: TrialPlan, resume: bool, root: Path, study: str, journal: Path,
               sampler: SamplerSpec | None = None) -> str:
    search = spec.search
    if resume:
        return (f"[astray] resuming sweep {spec.sweep.name}: {plan.to_train()} of {plan.total} planned trials to "
                f"train, {search.max_concurrent} at a time; store {root}; Optuna study {study} in {journal}")
    baselines = ", ".join(b.config_id for b in search.parsed_baselines) or "none"
    return (f"[astray] sweep {spec.sweep.name}: {search.num_samples} searched configurations + baselines "
            f"({baselines}), {search.repeats} seed(s) each = {plan.total} trials, {search.max_concurrent} at a "
            f"time, objectives {', '.join(f'{o.metric} ({o.mode})' for o in search.parsed_objectives)}, "
            f"{sampler_words(sampler or search.parsed_sampler)}; store {root}; Optuna study {study} in {journal}")


def sampler_words(sampler: SamplerSpec) -> str:
    """``sampler tpe (random until 2 configurations are told, then guided)``."""
    start = sampler.startup_trials
    if start is None:
        return f"sampler {sampler.name} (every configuration at random)"
    return f"sampler {sampler.name} (random until {start} configurations are told, then guided)"


def optuna_storage_entry(journal: Path) -> dict[str, str]:
    """How ``sweep.json`` names the study's storage, and how to open it."""
    return {"kind": "journal", "path": str(journal),
            "open_with": "optuna.load_study(study_name=<study_name>, storage=optuna.storages.JournalStorage("
                         f"optuna.storages.journal.JournalFileBackend({str(journal)!r})))",
            "dashboard": f"optuna-dashboard {journal}"}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat()

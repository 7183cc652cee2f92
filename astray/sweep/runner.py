"""Sweeps: ``python -m astray.tune CONFIG [--set key=value ...] [--resume] [--address auto|HOST:PORT]``.

Optuna searches the config's ``search.space`` on Ray Tune as a multi-objective study
(default: validation accuracy up, energy down). Every sweep also runs one dense
baseline trial with the same budget. Results land in the Parquet store at
``<sweep.results_dir>/<sweep.name>/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

from astray.errors import ConfigError, cli_entry
from astray.models import check_model_name
from astray.sweep_config import Param, SweepSpec, load_sweep


def _get_dotted(raw: dict[str, Any], key: str, default: Any) -> Any:
    node: Any = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def baseline_params(spec: SweepSpec) -> dict[str, Any]:
    """Values the baseline's Optuna trial carries: the base config's, kept inside the space.

    The baseline trains dense, so these values do not change what it does; they only
    have to be valid points of the space.
    """
    run = spec.run.to_dict()
    out = {}
    for p in spec.search.params:
        value = _get_dotted(run, p.key, None)
        out[p.key] = _clip(p, value)
    return out


def _clip(p: Param, value: Any) -> Any:
    if p.type == "choice":
        return value if value in p.values else p.values[0]
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        value = p.low
    value = min(max(value, p.low), p.high)
    return int(round(value)) if p.type == "int" else float(value)


def sweep_paths(spec: SweepSpec) -> tuple[Path, str, str]:
    """(store root, Ray storage_path, Ray experiment path)."""
    root = Path(spec.sweep.results_dir, spec.sweep.name).resolve()
    storage = spec.sweep.storage or str(root / "ray")
    if "://" not in storage:
        storage = str(Path(storage).resolve())
    return root, storage, f"{storage.rstrip('/')}/{spec.sweep.name}"


def check_before_start(spec: SweepSpec, resume: bool) -> None:
    """Everything that can be checked without Ray; nothing is written."""
    check_model_name(spec.run.model.name)
    root, _, experiment = sweep_paths(spec)
    if resume:
        if "://" not in experiment and not Path(experiment, "tuner.pkl").exists():
            raise ConfigError(f"--resume: no sweep to resume at {experiment!r} "
                              f"(sweep.name={spec.sweep.name!r}, sweep.results_dir={spec.sweep.results_dir!r})")
    elif (root / "trials").exists() or ("://" not in experiment and Path(experiment).exists()):
        raise ConfigError(f"sweep.name={spec.sweep.name!r} already has results at {str(root)!r}; "
                          "pass --resume to finish it, or choose another sweep.name")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m astray.tune", description=__doc__.splitlines()[0])
    p.add_argument("config", help="YAML config with search/sweep/resources sections (see configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set search.num_samples=16 (repeatable)")
    p.add_argument("--resume", action="store_true", help="finish an interrupted sweep of the same name")
    p.add_argument("--address", default=None,
                   help="join a running Ray cluster (auto or HOST:PORT; default: $RAY_ADDRESS, else a local instance)")
    return p.parse_args(argv)


def run_sweep(spec: SweepSpec, resume: bool = False, address: str | None = None, num_cpus: int | None = None) -> Path:
    """Run (or finish) a sweep; returns the store directory."""
    check_before_start(spec, resume)
    from astray import ray_adapter
    from astray.provenance import manifest
    from astray.recorder import SweepRecorder
    from astray.store import ResultStore
    from astray.trial import astray_trial

    root, storage, experiment = sweep_paths(spec)
    total = spec.search.num_samples + (1 if spec.search.baseline else 0)
    cluster = ray_adapter.init(address or os.environ.get("RAY_ADDRESS"), num_cpus=num_cpus)
    try:
        trainable = ray_adapter.make_trainable(astray_trial, ray_adapter.trial_resources(spec.resources), spec=spec)
        store = ResultStore(root, {p.key: p.arrow_type() for p in spec.search.params}).open()
        if resume:
            print(f"[astray] resuming sweep {spec.sweep.name} from {experiment}", flush=True)
            tuner = ray_adapter.restore_tuner(experiment, trainable)
        else:
            study = ray_adapter.unique_study_name(spec.sweep.name)
            store.write_manifest(manifest(_resolved(spec), study_name=study, cluster_resources=cluster,
                                          total_trials=total, storage_path=storage))
            searcher = ray_adapter.make_searcher(spec.search, study,
                                                 baseline_params(spec) if spec.search.baseline else None)
            recorder = SweepRecorder(store, spec, total)
            tuner = ray_adapter.make_tuner(trainable, searcher, total, spec.search.max_concurrent,
                                           spec.sweep.name, storage, [ray_adapter.StoreCallback(recorder)],
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


def _resolved(spec: SweepSpec) -> dict[str, Any]:
    return {**spec.run.to_dict(), "search": {k: v for k, v in dataclasses.asdict(spec.search).items()},
            "sweep": dataclasses.asdict(spec.sweep), "resources": dataclasses.asdict(spec.resources)}


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    spec = load_sweep(args.config, args.overrides)
    try:
        run_sweep(spec, resume=args.resume, address=args.address)
    except KeyboardInterrupt:
        print("[astray] interrupted: finished trials are in the store; continue with --resume", flush=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

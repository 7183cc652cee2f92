"""What a sweep trial trains, where a sweep keeps its files, and what must hold before
it starts: pure config policy, no Ray."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from astray.config.dotted import get_dotted, set_dotted
from astray.config.load import build_config
from astray.config.sweep import Baseline, ResourcesConfig, SweepSpec, baseline_overrides
from astray.engine.data import build_datasets
from astray.engine.models import check_model_name
from astray.errors import ConfigError
from astray.schema import KIND_SEARCHED
from astray.sweep.store import MANIFEST, TRIALS

# What a --resume may change: how trials are placed, retried, checkpointed and logged,
# never what they train. (results_dir and storage find the sweep: a moved one still resumes.)
RESUME_MAY_CHANGE = ("search.max_concurrent", "sweep.max_failures", "sweep.loggers",
                     "sweep.checkpoint_every_epochs", "sweep.results_dir", "sweep.storage", "resources.")


@dataclasses.dataclass(frozen=True)
class SweepPaths:
    store: Path  # the Parquet result store, <results_dir>/<name>/
    storage: str  # Ray's storage_path (absolute, or a URI such as s3://...)
    experiment: str  # Ray's experiment folder under storage: <storage>/<name>

    @property
    def local(self) -> bool:
        return "://" not in self.storage

    @property
    def journal(self) -> Path:
        """The Optuna study's journal file, inside the store."""
        return self.store / "optuna" / "journal.log"


def sweep_paths(spec: SweepSpec) -> SweepPaths:
    """Resolved once, in the driver: trials get these absolute paths, not relative ones
    that would resolve against a Ray worker's working directory."""
    root = Path(spec.sweep.results_dir, spec.sweep.name).resolve()
    storage = spec.sweep.storage or str(root / "ray")
    if "://" not in storage:
        storage = str(Path(storage).resolve())
    return SweepPaths(root, storage, f"{storage.rstrip('/')}/{spec.sweep.name}")


def check_before_start(spec: SweepSpec, resume: bool) -> bool:
    """Everything that can be checked without Ray; nothing is written. Returns whether the
    run resumes a sweep.

    A sweep exists once its manifest (``sweep.json``) does: the driver writes it before
    its first trial, so a driver killed at any later moment leaves a sweep ``--resume``
    finds. ``--resume`` of a sweep of which nothing was written yet (its driver died in
    its first seconds) starts it: there is nothing to lose, and a resume loop after a
    pre-empted driver must not stop there.
    """
    check_model_name(spec.run.model.name)
    paths = sweep_paths(spec)
    manifest = paths.store / MANIFEST
    written = any((paths.store / TRIALS).glob("*.parquet")) or (paths.local and Path(paths.experiment).exists())
    if resume and manifest.is_file():
        check_resume_matches(spec, json.loads(manifest.read_text()))
        return True
    if manifest.exists() or written:
        if resume:
            raise ConfigError(f"--resume: {str(paths.store)!r} holds results but no {MANIFEST}; it is not a sweep "
                              "astray can resume (choose another sweep.name)")
        raise ConfigError(f"sweep.name={spec.sweep.name!r} already has results at {str(paths.store)!r}; "
                          "pass --resume to finish it, or choose another sweep.name")
    return False


def check_resume_matches(spec: SweepSpec, manifest: dict[str, Any]) -> None:
    """``--resume`` trains the rest of the sweep ``sweep.json`` describes: a config that
    would train something else (another epoch count, space, seed ...) is refused in one
    line naming the first key that differs. Keys an older astray did not record are not
    compared."""
    now = _flat(json.loads(json.dumps(resolved_sweep_config(spec), default=str)))
    then = _flat(manifest.get("config") or {})
    for key in sorted(now.keys() & then.keys()):
        if now[key] != then[key] and not key.startswith(RESUME_MAY_CHANGE):
            raise ConfigError(f"--resume: {key}={now[key]!r}, but sweep {spec.sweep.name!r} started with "
                              f"{then[key]!r} ({MANIFEST}); resume with the config and --set values it started "
                              f"with (a resume may change only {', '.join(RESUME_MAY_CHANGE)})")


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_data_on_driver(spec: SweepSpec) -> None:
    """Open the dataset once on the driver, before any trial is placed: a class count that
    is not ``dataset.num_classes``, or data that does not load, is one line here, not an
    error in every trial. (Config loading already checked that its paths exist.)"""
    build_datasets(spec.run.dataset)


def worker_bundle(res: ResourcesConfig) -> dict[str, float]:
    """What one training worker reserves (a one-worker trial is its own worker)."""
    bundle = {"CPU": float(res.cpus_per_worker)}
    if res.gpus_per_worker:
        bundle["GPU"] = float(res.gpus_per_worker)
    return bundle


def _fits(node: dict[str, float], bundle: dict[str, float]) -> int:
    """How many ``bundle``s one node can hold at once."""
    counts = [node.get(k, 0.0) / v for k, v in bundle.items() if v > 0]
    return int(min(counts) + 1e-9) if counts else 1_000_000


def check_trial_fits(res: ResourcesConfig, nodes: list[dict[str, float]]) -> str | None:
    """Whether the cluster's ``nodes`` (their total resources) can ever place one trial.

    A trial is ``workers_per_trial`` bundles placed by ``placement_strategy``: PACK and
    SPREAD may split them over nodes, STRICT_PACK needs them on one node, STRICT_SPREAD
    on as many distinct nodes. When no placement exists, raise a one-line ConfigError
    naming the resources keys; with ``resources.autoscaling`` the cluster may still add
    a node, so return the line to print once instead. None: it fits.
    """
    bundle, n = worker_bundle(res), res.workers_per_trial
    holds = [_fits(node, bundle) for node in nodes]
    strategy = res.placement_strategy
    if strategy == "STRICT_PACK":
        ok = any(h >= n for h in holds)
    elif strategy == "STRICT_SPREAD":
        ok = sum(h >= 1 for h in holds) >= n
    else:
        ok = sum(holds) >= n
    if ok:
        return None
    ask = ", ".join(f"{k} {v:g}" for k, v in bundle.items())
    have = "; ".join(", ".join(f"{k} {node.get(k, 0.0):g}" for k in bundle) for node in nodes) or "no nodes"
    what = (f"resources.workers_per_trial={n} worker(s) of {{{ask}}} "
            f"(resources.cpus_per_worker, resources.gpus_per_worker; placement {strategy})")
    if res.autoscaling:
        return f"[astray] no node can place a trial yet: {what}; waiting for the autoscaler to add one"
    raise ConfigError(f"{what} fits on no node of this cluster (nodes: {have}); lower those resources.* "
                      "values, or set resources.autoscaling: true on a cluster that adds nodes")


def trial_run_config(spec: SweepSpec, config: dict[str, Any]) -> dict[str, Any]:
    """The raw run config of a trial: base + searched values, or base + a baseline's
    overrides; then the replicate's seed (``astray.sweep.plan`` makes ``config``)."""
    kind = config.get("baseline_kind", KIND_SEARCHED)
    if kind == KIND_SEARCHED:
        raw = set_dotted(spec.raw_run, {p.key: config[p.key] for p in spec.search.params if p.key in config})
    else:
        # A baseline is the base config trained dense (for a share of the epochs) or on
        # random subsets: searched values are not applied.
        b = Baseline(kind, float(config["baseline_value"]))
        raw = set_dotted(spec.raw_run, baseline_overrides(b, spec.run.training))
    if config.get("seed") is not None:
        raw = set_dotted(raw, {"training.seed": int(config["seed"])})
    # Meters read whole devices: say so when other trials share the device.
    res = spec.resources
    shared = 0 < res.gpus_per_worker < 1 or (res.gpus_per_worker == 0 and spec.search.max_concurrent > 1)
    if shared:
        raw = set_dotted(raw, {"energy.device_shared": True})
    if not get_dotted(raw, "training.threads", 0) and res.gpus_per_worker == 0:
        # One intra-op thread per reserved CPU: trials sharing a node must not oversubscribe it.
        raw = set_dotted(raw, {"training.threads": max(1, int(res.cpus_per_worker))})
    return raw


def resolved_trial_run(spec: SweepSpec, config: dict[str, Any]) -> dict[str, Any]:
    """What a trial trains, resolved and validated once in the driver: the plan puts it in
    the trial's config (``run``), the trial trains it and the store records it."""
    return build_config(trial_run_config(spec, config)).to_dict()


def resolved_sweep_config(spec: SweepSpec) -> dict[str, Any]:
    """The whole sweep config as it runs, for the manifest."""
    return {**spec.run.to_dict(), "search": dataclasses.asdict(spec.search),
            "sweep": dataclasses.asdict(spec.sweep), "resources": dataclasses.asdict(spec.resources)}

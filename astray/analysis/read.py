"""Reading sweeps into typed records, and choosing the objectives to analyse them on.

The only part of the analysis that touches files: bad paths and unreadable stores raise
a one-line AstrayError.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from astray.analysis.results import EpochSeries, StepSeries, SweepData, TrialRecord
from astray.engine.records import controller_rows
from astray.errors import AstrayError, ConfigError
from astray.schema import (
    BASELINE_FLAG,
    DEFAULT_OBJECTIVES,
    KIND_DENSE,
    KIND_SEARCHED,
    OBJECTIVE_METRICS,
    Objective,
)
from astray.sweep.store import MANIFEST, TRIAL_COLUMNS, is_store, read_epochs, read_steps, read_trials

# Trial metrics the analysis carries: the objective metrics and the dense FLOPs.
METRIC_COLUMNS = OBJECTIVE_METRICS + ("flops_dense",)


def parse_objectives(text: str) -> tuple[Objective, ...]:
    """``"val_acc:max,energy_j:min"`` → objectives; a bad item is a one-line ConfigError."""
    items = [s.strip() for s in text.split(",") if s.strip()]
    out: list[Objective] = []
    for item in items:
        metric, sep, mode = item.partition(":")
        if not sep:
            raise ConfigError(f"--objectives item {item!r} must be METRIC:max or METRIC:min")
        out.append(Objective.parse(metric.strip(), mode.strip(), f"--objectives item {item!r}"))
    return check_objectives(out, "--objectives")


def objectives_from_manifest(manifest: Mapping[str, Any]) -> tuple[Objective, ...]:
    """The objectives a sweep was searched with (``sweep.json``), else astray's defaults."""
    raw = manifest.get("config", {}).get("search", {}).get("objectives")
    if not raw:
        return DEFAULT_OBJECTIVES
    return tuple(Objective.parse(o.get("metric"), o.get("mode"), "sweep.json search.objectives") for o in raw)


def check_objectives(objectives: list[Objective], where: str) -> tuple[Objective, ...]:
    if len(objectives) < 2:
        raise ConfigError(f"{where} needs at least two objectives for a trade-off, "
                          f"got {len(objectives)} (e.g. val_acc:max,energy_j:min)")
    metrics = [o.metric for o in objectives]
    for m in metrics:
        if metrics.count(m) > 1:
            raise ConfigError(f"{where} names {m!r} twice; each metric may appear once")
    return tuple(objectives)



def choose_objectives(text: str | None, sweeps: Sequence[SweepData]) -> tuple[tuple[Objective, ...], str]:
    """--objectives, else the objectives the (first) sweep searched; and a note saying which."""
    if text is not None:
        return parse_objectives(text), "objectives from --objectives"
    per = [objectives_from_manifest(s.manifest) for s in sweeps]
    if len(per[0]) < 2:
        raise ConfigError(f"sweep {sweeps[0].name!r} searched one objective ({per[0][0]}); "
                          "pass --objectives with two or more, e.g. val_acc:max,energy_j:min")
    note = "objectives from the sweep's search.objectives"
    if any(p != per[0] for p in per[1:]):
        note = (f"the sweeps searched different objectives; all are compared on {sweeps[0].name}'s "
                "(pass --objectives to choose)")
    return per[0], note



def sweep_from_rows(name: str, trial_rows: Iterable[Mapping[str, Any]],
                    epoch_rows: Iterable[Mapping[str, Any]] = (),
                    manifest: Mapping[str, Any] | None = None, path: str = "",
                    step_rows: Iterable[Mapping[str, Any]] = ()) -> SweepData:
    """Type the rows of a trials table (and epochs table) as the store returns them."""
    fixed = {n for n, _ in TRIAL_COLUMNS}
    rows = list(trial_rows)
    searched: list[str] = []
    for row in rows:
        searched += [k for k in row if k not in fixed and k not in searched]
    trials = tuple(_trial(name, i, row, searched) for i, row in enumerate(rows))
    by_trial: dict[str, list[Mapping[str, Any]]] = {}
    for r in epoch_rows:
        by_trial.setdefault(r["trial_id"], []).append(r)
    epochs = {}
    for tid, rs in by_trial.items():
        rs = sorted(rs, key=lambda r: r["epoch"])
        epochs[tid] = EpochSeries(tuple(int(r["epoch"]) for r in rs),
                                  tuple(_float(r.get("activation_rate")) for r in rs),
                                  tuple(_float(r.get("threshold")) for r in rs))
    return SweepData(name, path, dict(manifest or {}), tuple(searched), trials, epochs, _step_series(step_rows))


def _step_series(rows: Iterable[Mapping[str, Any]]) -> dict[str, StepSeries]:
    by_trial: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        by_trial.setdefault(r["trial_id"], []).append(r)
    out = {}
    for tid, trial_rows in by_trial.items():
        rs = controller_rows(trial_rows)
        out[tid] = StepSeries(tuple(_float(r["progress"]) for r in rs), tuple(_float(r["activation"]) for r in rs),
                              tuple(_float(r["threshold"]) for r in rs))
    return out


def _trial(sweep: str, order: int, row: Mapping[str, Any], searched: Sequence[str]) -> TrialRecord:
    try:
        config = json.loads(row.get("config_json") or "{}")
    except json.JSONDecodeError:
        config = {}
    ast = config.get("ast", {}) if isinstance(config, dict) else {}
    training = config.get("training", {}) if isinstance(config, dict) else {}
    target = ast.get("target_activation")
    ended = row.get("ended_at")
    trial_id = str(row["trial_id"])
    is_baseline = bool(row.get(BASELINE_FLAG))
    # A store written before baselines had kinds and configurations had replicates
    # lacks these columns (or holds nulls): its one baseline is the dense one at the
    # whole budget, and every trial is a configuration of its own (docs/design.md §9).
    kind = row.get("baseline_kind")
    if not kind:
        kind = KIND_DENSE if is_baseline else KIND_SEARCHED
    budget = _float(row.get("budget"))
    seed = row.get("seed")
    if seed is None and isinstance(training, dict) and isinstance(training.get("seed"), int):
        seed = training["seed"]
    return TrialRecord(
        sweep=sweep, trial_id=trial_id, status=str(row.get("status")),
        is_baseline=is_baseline,
        metrics={m: _float(row.get(m)) for m in METRIC_COLUMNS},
        energy_source=row.get("energy_source"),
        energy_scope=row.get("energy_scope"),
        params={k: row.get(k) for k in searched if k in row},
        error=row.get("error"),
        ended_at=None if ended is None or math.isnan(ended) else float(ended),
        order=order,
        target_activation=None if target is None else float(target),
        strategy=ast.get("strategy"),
        baseline_kind=str(kind),
        budget=1.0 if math.isnan(budget) else budget,
        config_id=str(row.get("config_id") or trial_id),
        replicate=int(row.get("replicate") or 0),
        seed=None if seed is None else int(seed),
        search_phase=row.get("search_phase") or None,
        stopped_early=bool(row.get("stopped_early")),
    )


def _float(x: Any) -> float:
    return math.nan if x is None else float(x)


def read_sweep(path: str | Path) -> SweepData:
    """Read a sweep's store — finished or still running — as typed records.

    Bad paths and unreadable files raise a one-line AstrayError.
    """
    root = Path(path)
    if not root.exists():
        raise AstrayError(f"sweep directory {str(root)!r} does not exist")
    if not is_store(root):
        raise AstrayError(f"{str(root)!r} has no trials/ folder; pass a sweep's store directory "
                          "(<sweep.results_dir>/<sweep.name>/)")
    try:
        trials = read_trials(root).to_pylist()
        epochs = read_epochs(root).to_pylist()
        steps = read_steps(root).to_pylist()
    except (pa.ArrowException, OSError) as exc:
        raise AstrayError(f"cannot read the store at {str(root)!r}: {str(exc).splitlines()[0]}") from None
    if not trials:
        raise AstrayError(f"{str(root / 'trials')!r} holds no trial rows yet; nothing to report")
    manifest: dict[str, Any] = {}
    if (root / MANIFEST).exists():
        try:
            manifest = json.loads((root / MANIFEST).read_text())
        except (json.JSONDecodeError, OSError) as exc:
            raise AstrayError(f"cannot read {str(root / MANIFEST)!r}: {exc}") from None
    return sweep_from_rows(root.resolve().name, trials, epochs, manifest, str(root), steps)



def load_sweeps(paths: Sequence[str]) -> list[SweepData]:
    """Read each sweep once; two sweeps with one folder name get their parent's name too."""
    resolved = [Path(p).resolve() for p in paths]
    for i, r in enumerate(resolved):
        if r in resolved[:i]:
            raise ConfigError(f"SWEEP_DIR {paths[i]!r} is given twice")
    sweeps = [read_sweep(p) for p in paths]
    names = [s.name for s in sweeps]
    return [replace(s, name=f"{r.parent.name}/{s.name}") if names.count(s.name) > 1 else s
            for s, r in zip(sweeps, resolved)]


"""A sweep's store as pandas DataFrames, for notebooks: ``astray.load_sweep`` and ``astray.front``.

    import astray
    sweep = astray.load_sweep("results/sweeps/quickstart")
    done = sweep.trials[sweep.trials.status == "completed"]
    astray.front(done[~done.is_baseline], ["val_acc:max", "energy_j:min"])

The store is read as ``astray report`` reads it (``analysis.read.read_sweep``: a legacy store
gets the same defaults), so a notebook and a report never disagree on which trial is a
baseline or a replicate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from astray.pareto import non_dominated
from astray.analysis.read import check_objectives, objectives_from_manifest, read_sweep
from astray.errors import AstrayError, ConfigError
from astray.schema import DEFAULT_OBJECTIVES, Objective
from astray.sweep.store import read_epochs, read_trials


@dataclass
class Sweep:
    """One sweep's results. ``trials``: one row per trial, the store's columns with the
    baseline columns filled for legacy stores, then one column per searched key;
    ``epochs``: one row per (trial, epoch); ``searched``: the searched dotted keys."""

    path: Path
    trials: pd.DataFrame
    epochs: pd.DataFrame
    searched: tuple[str, ...]
    objectives: tuple[Objective, ...]
    manifest: dict[str, Any] = field(repr=False, default_factory=dict)


def load_sweep(path: str | Path) -> Sweep:
    """Read the store at ``path`` (finished or still running). A bad path is one-line AstrayError."""
    data = read_sweep(path)  # checks the path and types the rows
    root = Path(path)
    trials = read_trials(root).to_pandas()
    by_id = {t.trial_id: t for t in data.trials}
    ids = trials["trial_id"].astype(str)
    # The baseline columns as the report understands them, typed, legacy stores included.
    trials["is_baseline"] = ids.map(lambda i: by_id[i].is_baseline).astype(bool)
    trials["baseline_kind"] = ids.map(lambda i: by_id[i].baseline_kind).astype(str)
    trials["budget"] = ids.map(lambda i: by_id[i].budget).astype(float)
    trials["config_id"] = ids.map(lambda i: by_id[i].config_id).astype(str)
    trials["replicate"] = ids.map(lambda i: by_id[i].replicate).astype("int64")
    trials["seed"] = ids.map(lambda i: by_id[i].seed).astype("Int64")
    for key in data.searched:
        if key in trials and trials[key].dtype == object:
            numeric = pd.to_numeric(trials[key], errors="coerce")
            if numeric.notna().sum() == trials[key].notna().sum():  # all numbers: a numeric column
                trials[key] = numeric
    epochs = read_epochs(root).to_pandas()
    if not epochs.empty:
        epochs = epochs.sort_values(["trial_id", "epoch"], kind="stable").reset_index(drop=True)
    objectives = _manifest_objectives(data.manifest)
    return Sweep(root, trials, epochs, tuple(data.searched), objectives, data.manifest)


def front(df: pd.DataFrame, objectives: Sequence[str | Objective] | str | None = None) -> pd.DataFrame:
    """The rows of ``df`` no other row dominates on ``objectives``.

    ``objectives``: ``["val_acc:max", "energy_j:min"]`` (the default), a comma-separated
    string of the same, or :class:`astray.schema.Objective` values. Rows with a missing or
    NaN objective are left out; equal rows are all kept. An unknown metric, a bad
    direction or a metric ``df`` lacks is a one-line error.
    """
    objs = _objectives(objectives)
    missing = [o.metric for o in objs if o.metric not in df.columns]
    if missing:
        raise AstrayError(f"front: the DataFrame has no column {', '.join(missing)}; "
                          f"it has {', '.join(map(str, df.columns))}")
    points = df[[o.metric for o in objs]].astype(float).to_numpy().tolist()
    keep = non_dominated(points, [o.maximize for o in objs])
    return df.iloc[keep]


def _objectives(objectives: Sequence[str | Objective] | str | None) -> tuple[Objective, ...]:
    if objectives is None:
        return DEFAULT_OBJECTIVES
    if isinstance(objectives, str):
        objectives = [o for o in objectives.split(",") if o.strip()]
    out: list[Objective] = []
    for o in objectives:
        if isinstance(o, Objective):
            out.append(o)
            continue
        metric, sep, mode = str(o).partition(":")
        if not sep:
            raise ConfigError(f"front: objective {o!r} must be METRIC:max or METRIC:min")
        out.append(Objective.parse(metric.strip(), mode.strip(), f"front: objective {o!r}"))
    return check_objectives(out, "front objectives")


def _manifest_objectives(manifest: dict[str, Any]) -> tuple[Objective, ...]:
    try:
        return objectives_from_manifest(manifest)
    except ConfigError:  # a hand-edited manifest: the report says so; a notebook gets the default
        return DEFAULT_OBJECTIVES

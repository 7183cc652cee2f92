"""What a sweep itself cost: its trials' energy by kind, its wall time, and what early
stopping saved (docs/design.md §9). Written to ``sweep.json`` (``cost``) by every driver
and shown by the report. From the store's trial rows only; no Ray here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from astray.schema import PHASE_CONFIRM

KINDS = ("baselines", "searched", "stopped early", "confirmation")


def kind_of(row: Mapping[str, Any]) -> str:
    if row.get("search_phase") == PHASE_CONFIRM:
        return "confirmation"
    if row.get("is_baseline"):
        return "baselines"
    return "stopped early" if row.get("stopped_early") else "searched"


def _num(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return 0.0
    return v if math.isfinite(v) else 0.0


def planned_epochs(row: Mapping[str, Any]) -> int:
    try:
        return int(json.loads(row.get("config_json") or "{}")["training"]["epochs"])
    except (KeyError, TypeError, ValueError):
        return int(row.get("epochs") or 0)


def sweep_cost(rows: Iterable[Mapping[str, Any]], repeats: int = 1) -> dict[str, Any]:
    """Per kind: trials, epochs trained, training and evaluation energy (J); the wall time
    from the first trial's start to the last one's end; and early stopping's saving.

    The saving is an estimate, labelled so: each stopped trial's epochs not run × its own
    measured energy per epoch (training + evaluation), plus, for a replicate of a stopped
    configuration that was never started, its configuration's planned epochs × the mean
    energy per epoch of the replicates that ran.
    """
    rows = list(rows)
    by_kind = {k: {"trials": 0, "epochs": 0, "energy_j": 0.0, "val_energy_j": 0.0} for k in KINDS}
    sources = sorted({str(r["energy_source"]) for r in rows if r.get("energy_source")})
    for r in rows:
        k = by_kind[kind_of(r)]
        k["trials"] += 1
        k["epochs"] += int(r.get("epochs") or 0)
        k["energy_j"] += _num(r.get("energy_j"))
        k["val_energy_j"] += _num(r.get("val_energy_j"))
    saved_j, epochs_not_run = 0.0, 0
    stopped: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        if kind_of(r) == "stopped early":
            stopped.setdefault(str(r["config_id"]), []).append(r)
    for reps in stopped.values():
        per_epoch = [(_num(r.get("energy_j")) + _num(r.get("val_energy_j"))) / r["epochs"] for r in reps
                     if int(r.get("epochs") or 0) > 0]
        mean = sum(per_epoch) / len(per_epoch) if per_epoch else 0.0
        for r in reps:
            n = int(r.get("epochs") or 0)
            left = max(0, planned_epochs(r) - n)
            epochs_not_run += left
            saved_j += left * ((_num(r.get("energy_j")) + _num(r.get("val_energy_j"))) / n if n else mean)
        never = max(0, repeats - len(reps))
        epochs_not_run += never * planned_epochs(reps[0])
        saved_j += never * planned_epochs(reps[0]) * mean
    starts = [_num(r.get("started_at")) for r in rows if r.get("started_at")]
    ends = [_num(r.get("ended_at")) for r in rows if r.get("ended_at")]
    total = sum(k["energy_j"] + k["val_energy_j"] for k in by_kind.values())
    return {
        "energy_source": ", ".join(sources) or None,
        "by_kind": by_kind,
        "total_energy_j": total,
        "wall_s": (max(ends) - min(starts)) if starts and ends else None,
        "wall_rule": "first trial's start to the last trial's end, over every driver (gaps between drivers included)",
        "early_stop_saved_j": saved_j,
        "early_stop_epochs_not_run": epochs_not_run,
        "early_stop_saved_share": saved_j / (total + saved_j) if total + saved_j > 0 else 0.0,
        "early_stop_saving_rule": ("an estimate: each stopped trial's epochs not run x its measured energy per "
                                   "epoch (training + evaluation); a never-started replicate at its siblings' mean"),
    }

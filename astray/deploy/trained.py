"""Find trained models to export or evaluate: a training run's directory, or sweep trials.

A *run directory* is what ``python -m astray.train`` writes (``config.yaml`` next to
``best.pt``/``last.pt``); a Ray checkpoint folder has the same files and counts as one.
A *sweep directory* is the result store (``sweep.json``, ``trials/``); each trial's
weights are in the Ray checkpoints under the manifest's ``storage_path``:
``<storage>/<sweep name>/<trial dir naming the trial id>/checkpoint_00000N/`` for one-worker
trials and ``<storage>/train-<trial id>/checkpoint_<timestamp>/`` for multi-worker ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from torch import nn

from astray.checkpoint import load_checkpoint
from astray.config import RunConfig, build_config, load_config
from astray.errors import AstrayError, ConfigError
from astray.models import create_model

CHECKPOINT_FILES = ("best.pt", "last.pt")  # in order of preference
MAX_LISTED_IDS = 12  # an unknown trial id lists at most this many existing ones


@dataclass(frozen=True)
class Trained:
    """One trained model: where its weights are and the config it was trained with."""

    name: str  # the trial id, or the run directory's name
    config: RunConfig
    checkpoint: Path  # best.pt, or last.pt when there is no best.pt
    status: str  # the trial's status in the store; "run" for a run directory
    out_root: Path  # the sweep or run directory: default outputs go under it

    @property
    def is_run(self) -> bool:
        return self.status == "run"

    @property
    def checkpoint_note(self) -> str:
        if self.checkpoint.name == "best.pt":
            return "best.pt (the epoch with the highest val_acc)"
        return "last.pt: no best.pt next to it, so the final epoch's weights are used"


def find_trained(path: str | Path, trial: str = "best") -> list[Trained]:
    """The models ``path`` names: the run itself, or the sweep trials ``trial`` selects.

    ``trial`` is ``best`` (highest val_acc among completed trials; ties: lower energy,
    then trial id), ``front`` (every trial on the sweep's Pareto front, as the sweep
    report draws it), or a trial id. It is ignored for a run directory.
    """
    root = Path(path)
    if not root.is_dir():
        raise AstrayError(f"{str(root)!r}: no such directory; pass a sweep directory (sweep.json, trials/) "
                          "or a training run directory (config.yaml, best.pt)")
    if (root / "config.yaml").is_file():
        return [_run_dir(root)]
    if (root / "trials").is_dir():
        return _sweep_trials(root, trial)
    raise AstrayError(f"{str(root)!r} is neither a sweep directory (sweep.json, trials/) "
                      "nor a training run directory (config.yaml, best.pt)")


def _run_dir(root: Path) -> Trained:
    ckpt = _pick_file(root)
    if ckpt is None:
        raise AstrayError(f"{str(root)!r} has config.yaml but no best.pt or last.pt; nothing to load")
    return Trained(root.resolve().name, load_config(root / "config.yaml"), ckpt, "run", root)


def _pick_file(folder: Path) -> Path | None:
    return next((folder / f for f in CHECKPOINT_FILES if (folder / f).is_file()), None)


def _sweep_trials(root: Path, trial: str) -> list[Trained]:
    from astray.analysis import analyze, objectives_from_manifest, read_sweep
    from astray.store import read_trials

    sweep = read_sweep(root)
    rows = {str(r["trial_id"]): r for r in read_trials(root).to_pylist()}
    if trial == "best":
        done = [t for t in sweep.trials if t.status == "completed" and math.isfinite(t.metrics["val_acc"])]
        if not done:
            raise AstrayError(f"sweep {str(root)!r} has no completed trial with a val_acc; nothing is 'best'")
        ids = [min(done, key=_best_first).trial_id]
    elif trial == "front":
        ids = [t.trial_id for t in analyze([sweep], objectives_from_manifest(sweep.manifest)).front_trials()]
        if not ids:
            raise AstrayError(f"sweep {str(root)!r} has no completed trials with finite objectives; the front is empty")
    elif trial in rows:
        ids = [trial]
    else:
        known = sorted(rows)
        shown = ", ".join(known[:MAX_LISTED_IDS]) + (f", ... ({len(known) - MAX_LISTED_IDS} more)"
                                                      if len(known) > MAX_LISTED_IDS else "")
        raise AstrayError(f"--trial {trial!r}: no such trial in {str(root)!r}; use best, front or one of: {shown}")
    storage = _storage(root, sweep.manifest)
    return [_sweep_trial(root, rows[tid], storage) for tid in ids]


def _best_first(t: Any) -> tuple[float, float, str]:
    """Highest val_acc; on a tie the lower training energy, then the trial id."""
    energy = t.metrics.get("energy_j", math.nan)
    return -t.metrics["val_acc"], energy if math.isfinite(energy) else math.inf, t.trial_id


def _storage(root: Path, manifest: dict[str, Any]) -> Path:
    """Where Ray kept the checkpoints; a sweep folder copied elsewhere still finds its ``ray/``."""
    recorded = manifest.get("storage_path")
    for candidate in ([Path(recorded)] if recorded else []) + [root / "ray"]:
        if candidate.is_dir():
            return candidate
    raise AstrayError(f"sweep {str(root)!r}: Ray checkpoint storage {recorded or str(root / 'ray')!r} "
                      f"is not a local directory; copy it next to the sweep as {str(root / 'ray')!r}")


def _sweep_trial(root: Path, row: dict[str, Any], storage: Path) -> Trained:
    tid = str(row["trial_id"])
    folder = latest_checkpoint(storage, tid)
    if folder is None:
        raise AstrayError(f"trial {tid}: no Ray checkpoint with best.pt or last.pt under {str(storage)!r}")
    ckpt = _pick_file(folder)
    assert ckpt is not None  # latest_checkpoint only returns folders holding one
    return Trained(tid, _trial_config(row, folder), ckpt, str(row.get("status")), root)


def _trial_config(row: dict[str, Any], folder: Path) -> RunConfig:
    """The store's config_json; the checkpoint's config.yaml if the store has none."""
    text = row.get("config_json")
    if text:
        try:
            return build_config(json.loads(text))
        except json.JSONDecodeError:
            pass
    if (folder / "config.yaml").is_file():
        return load_config(folder / "config.yaml")
    raise AstrayError(f"trial {row['trial_id']}: no readable config_json in the store and no config.yaml "
                      f"in {str(folder)!r}")


def latest_checkpoint(storage: Path, trial_id: str) -> Path | None:
    """The newest ``checkpoint_*`` folder of ``trial_id`` that holds best.pt or last.pt.

    Trial folders sit one or two levels under ``storage`` and carry the id as a whole
    word (``astray_trial_<id>_3_...``, ``train-<id>``). Newest = most epochs in its
    metrics.parquet, then the folder name (Tune numbers them, Train time-stamps them).
    """
    word = re.compile(rf"(?<![0-9A-Za-z]){re.escape(trial_id)}(?![0-9A-Za-z])")
    trial_dirs = [d for d in list(storage.glob("*")) + list(storage.glob("*/*"))
                  if d.is_dir() and word.search(d.name)]
    found = [c for d in trial_dirs for c in d.glob("checkpoint_*") if c.is_dir() and _pick_file(c)]
    return max(found, key=lambda c: (_epochs_in(c), c.name), default=None)


def _epochs_in(folder: Path) -> int:
    try:
        return pq.read_metadata(folder / "metrics.parquet").num_rows
    except OSError:
        return -1


def load_model(trained: Trained) -> tuple[nn.Module, dict[str, Any]]:
    """The model in eval mode on the CPU, and the checkpoint's bookkeeping (epoch, ...)."""
    ckpt = load_checkpoint(trained.checkpoint)
    name = ckpt.get("model_name", trained.config.model.name)
    if name != trained.config.model.name:
        raise AstrayError(f"{str(trained.checkpoint)!r} holds a {name!r} but the config says "
                          f"model.name={trained.config.model.name!r}")
    # The weights come from the checkpoint: never ask the hub for pretrained ones.
    model = create_model(dataclasses.replace(trained.config.model, pretrained=False), int(ckpt["num_classes"]))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise AstrayError(f"{str(trained.checkpoint)!r}: weights do not fit {name!r} "
                          f"({str(exc).splitlines()[0]})") from None
    meta = {k: v for k, v in ckpt.items() if isinstance(v, (int, float, str))}
    return model.eval(), meta


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line and exit 2 (through ``cli_entry``), not a usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        usage = " ".join(self.format_usage().split()[1:])
        raise ConfigError(f"{message} (usage: {usage})")


def add_source_args(p: argparse.ArgumentParser, out_default: str) -> None:
    """The arguments every trained-model command shares: what to load, where to write."""
    p.add_argument("path", metavar="SWEEP_DIR", help="a sweep directory, or a training run directory")
    p.add_argument("--trial", default=None, help="sweeps: best, front, or a trial id (default: best); "
                   "ignored for a run directory")
    p.add_argument("--out", type=Path, default=None, help=f"output directory (default: {out_default})")

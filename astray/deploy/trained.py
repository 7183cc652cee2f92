"""Find trained models to export or evaluate: a training run's directory, or sweep trials.

A *run directory* is what ``python -m astray.train`` writes (``config.yaml`` next to
``best.pt``/``last.pt``); a Ray checkpoint folder has the same files and counts as one.
A *sweep directory* is the result store (``sweep.json``, ``trials/``); each trial's
weights are in the Ray checkpoints under the manifest's ``storage_path``, which
``astray.sweep.checkpoints`` knows how to find (without starting Ray).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from astray.analysis.compute import analyze
from astray.analysis.read import objectives_from_manifest, read_sweep
from astray.config.load import build_saved_config, load_saved_config
from astray.config.run import RunConfig
from astray.engine.models import create_model
from astray.engine.state import BEST, CONFIG, load_checkpoint
from astray.errors import AstrayError
from astray.schema import COMPLETED
from astray.sweep.checkpoints import checkpoint_storage, deployable_checkpoint, weights_file
from astray.sweep.store import is_store, read_trials

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
        if self.checkpoint.name == BEST:
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
    if (root / CONFIG).is_file():
        return [_run_dir(root)]
    if is_store(root):
        return _sweep_trials(root, trial)
    raise AstrayError(f"{str(root)!r} is neither a sweep directory (sweep.json, trials/) "
                      "nor a training run directory (config.yaml, best.pt)")


def _run_dir(root: Path) -> Trained:
    ckpt = weights_file(root)
    if ckpt is None:
        raise AstrayError(f"{str(root)!r} has config.yaml but no best.pt or last.pt; nothing to load")
    return Trained(root.resolve().name, load_saved_config(root / CONFIG), ckpt, "run", root)


def _sweep_trials(root: Path, trial: str) -> list[Trained]:
    sweep = read_sweep(root)
    rows = {str(r["trial_id"]): r for r in read_trials(root).to_pylist()}
    if trial == "best":
        done = [t for t in sweep.trials if t.status == COMPLETED and math.isfinite(t.metrics["val_acc"])]
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
    storage = checkpoint_storage(root, sweep.manifest)
    return [_sweep_trial(root, rows[tid], storage) for tid in ids]


def _best_first(t: Any) -> tuple[float, float, str]:
    """Highest val_acc; on a tie the lower training energy, then the trial id."""
    energy = t.metrics.get("energy_j", math.nan)
    return -t.metrics["val_acc"], energy if math.isfinite(energy) else math.inf, t.trial_id


def _sweep_trial(root: Path, row: dict[str, Any], storage: Path) -> Trained:
    tid = str(row["trial_id"])
    folder = deployable_checkpoint(storage, tid)
    if folder is None:
        raise AstrayError(f"trial {tid}: no Ray checkpoint with best.pt or last.pt under {str(storage)!r}")
    ckpt = weights_file(folder)
    assert ckpt is not None  # deployable_checkpoint only returns folders holding one
    return Trained(tid, _trial_config(row, folder), ckpt, str(row.get("status")), root)


def _trial_config(row: dict[str, Any], folder: Path) -> RunConfig:
    """The store's config_json; the checkpoint's config.yaml if the store has none."""
    text = row.get("config_json")
    if text:
        try:
            return build_saved_config(json.loads(text))
        except json.JSONDecodeError:
            pass
    if (folder / CONFIG).is_file():
        return load_saved_config(folder / CONFIG)
    raise AstrayError(f"trial {row['trial_id']}: no readable config_json in the store and no config.yaml "
                      f"in {str(folder)!r}")


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

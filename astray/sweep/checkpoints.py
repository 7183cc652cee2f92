"""Where Ray keeps a sweep trial's checkpoints on disk: the folder names Ray writes.

This reads folders and calls no Ray API, so exporting a trained model never starts Ray.
One-worker trials: ``<storage>/<sweep name>/<trial id>_<Ray's id of the attempt>/checkpoint_00000N/``;
multi-worker trials: ``<storage>/train-<trial id>/checkpoint_<timestamp>/``
(``astray.sweep.ray_adapter`` names them so). A trial a resumed driver continued has a
folder per attempt; the newest checkpoint is the one with the most epochs.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from astray.engine.state import BEST, METRICS, WEIGHTS_BY_PREFERENCE
from astray.errors import AstrayError


def weights_file(folder: Path) -> Path | None:
    """best.pt, else last.pt, in ``folder``; None when it holds neither."""
    return next((folder / f for f in WEIGHTS_BY_PREFERENCE if (folder / f).is_file()), None)


def checkpoint_storage(root: Path, manifest: dict[str, Any]) -> Path:
    """Where Ray kept the checkpoints; a sweep folder copied elsewhere still finds its ``ray/``."""
    recorded = manifest.get("storage_path")
    for candidate in ([Path(recorded)] if recorded else []) + [root / "ray"]:
        if candidate.is_dir():
            return candidate
    raise AstrayError(f"sweep {str(root)!r}: Ray checkpoint storage {recorded or str(root / 'ray')!r} "
                      f"is not a local directory; copy it next to the sweep as {str(root / 'ray')!r}")


def trial_checkpoints(storage: Path, trial_id: str) -> list[Path]:
    """The ``checkpoint_*`` folders of ``trial_id`` that hold best.pt or last.pt, newest first.

    Trial folders sit one or two levels under ``storage`` and carry the id as a whole
    word (``astray_trial_<id>_3_...``, ``train-<id>``). Newest = most epochs in its
    metrics.parquet, then the folder name (Tune numbers them, Train time-stamps them).
    """
    word = re.compile(rf"(?<![0-9A-Za-z]){re.escape(trial_id)}(?![0-9A-Za-z])")
    trial_dirs = [d for d in list(storage.glob("*")) + list(storage.glob("*/*"))
                  if d.is_dir() and word.search(d.name)]
    found = [c for d in trial_dirs for c in d.glob("checkpoint_*") if c.is_dir() and weights_file(c)]
    return sorted(found, key=lambda c: (_epochs_in(c), c.name), reverse=True)


def latest_checkpoint(storage: Path, trial_id: str) -> Path | None:
    """The newest checkpoint folder of ``trial_id`` (what a retry resumes from), or None."""
    return next(iter(trial_checkpoints(storage, trial_id)), None)


def resume_point(storage: str, trial_id: str) -> str | None:
    """Where a new attempt of ``trial_id`` continues from: its newest checkpoint folder in
    Ray's ``storage``, or None (no checkpoint yet, or storage that is not a local or mounted
    directory: the attempt then trains from its first epoch)."""
    if "://" in storage or not Path(storage).is_dir():
        return None
    found = latest_checkpoint(Path(storage), trial_id)
    return str(found) if found else None


def copy_checkpoint(folder: str | None, target: Path) -> bool:
    """Copy the files of checkpoint ``folder`` into ``target``; False when there is none."""
    if not folder or not Path(folder).is_dir():
        return False
    target.mkdir(parents=True, exist_ok=True)
    for f in Path(folder).iterdir():
        if f.is_file():
            shutil.copy2(f, target / f.name)
    return True


def deployable_checkpoint(storage: Path, trial_id: str) -> Path | None:
    """The folder whose weights to deploy: the newest that holds best.pt (a trial hands
    best.pt to Ray only in the epochs that improved it, and Ray keeps that checkpoint,
    docs/design.md §10), else the newest with last.pt."""
    found = trial_checkpoints(storage, trial_id)
    return next((c for c in found if (c / BEST).is_file()), next(iter(found), None))


def _epochs_in(folder: Path) -> int:
    try:
        return pq.read_metadata(folder / METRICS).num_rows
    except OSError:
        return -1

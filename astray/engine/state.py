"""What a run leaves on disk, and the full training state its checkpoints hold.

Everything saved is a tensor, a number, a string, or a dict/list of those, so
checkpoints load with ``torch.load(weights_only=True)``: a checkpoint file cannot
run code when it is opened.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from astray.io import write_with

# The files of a run directory (``logging.output_dir``).
LAST = "last.pt"  # full state after the latest epoch: what --resume continues from
BEST = "best.pt"  # full state after the epoch with the highest val_acc
METRICS = "metrics.parquet"  # one row per epoch (astray.engine.records)
STEPS = "steps.parquet"  # the controller step by step (astray.engine.records.TRACE_SCHEMA)
CONFIG = "config.yaml"  # the resolved config
LABEL_NOISE = "label_noise.parquet"  # the labels dataset.label_noise flipped (astray.engine.records.FLIPS_SCHEMA)
RUN_FILES = (LAST, BEST, METRICS, CONFIG)  # everything a resumed run needs
WEIGHTS_BY_PREFERENCE = (BEST, LAST)  # which weights to deploy, best first


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    write_with(path, lambda tmp: torch.save(state, tmp))


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as plain tensors and numbers."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": _to_lists(random.getstate()),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def seed_everything(seed: int) -> None:
    """Python, NumPy and torch (CPU and CUDA) generators from one seed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_to_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(x: Any) -> Any:
    return [_to_lists(v) for v in x] if isinstance(x, tuple) else x


def _to_tuples(x: Any) -> Any:
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Always onto the CPU: RNG states must be CPU tensors to be restored, and
    ``load_state_dict`` moves weights and optimizer state to their parameters' device.
    (Loading onto the training device broke every resume on a GPU.)"""
    return torch.load(path, map_location="cpu", weights_only=True)

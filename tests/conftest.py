"""Shared fixtures: small, fast configurations on real data and real models."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

# Two cores: one intra-op thread per process keeps multi-process tests from thrashing.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def small_overrides(out: Path, **extra: object) -> list[str]:
    """--set overrides for a fast run: synthetic images, tiny timm ResNet, CPU."""
    values: dict[str, object] = {
        "model.name": "test_resnet",
        "dataset.type": "synthetic",
        "dataset.num_classes": 4,
        "dataset.image_size": 16,
        "dataset.synthetic_samples": 256,
        "training.batch_size": 32,
        "training.epochs": 2,
        "training.lr": 0.05,
        "training.device": "cpu",
        "logging.output_dir": str(out),
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


@pytest.fixture
def env_one_thread() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env

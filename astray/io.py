"""Atomic file writes: a reader never sees half a file."""

from __future__ import annotations

import os
from pathlib import Path


def atomic_path(path: Path) -> Path:
    """A dot-prefixed temporary name in the same directory (readers ignore dot files)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")

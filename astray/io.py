"""Atomic file writes: a reader never sees half a file, and a crash leaves none behind.
(Also :func:`progress`, the progress bar long loops show in a terminal.)

Every writer puts its bytes under a dot-prefixed temporary name in the target's own
directory, then ``os.replace``-s it into place (docs/design.md §6). Readers of the
result store skip dot files, so a file is either absent, the old one, or the new one.
A reader must also read a file through *one* open handle (:func:`read_parquet`):
``pq.read_table(path)`` opens the path once for the footer and again for the pages, and
a replace in between pairs the old footer with the new file's bytes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm


def temporary_name(path: Path) -> Path:
    """A dot-prefixed name beside ``path``, unique to this process."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_with(path: str | Path, write: Callable[[Path], Any]) -> None:
    """Atomically create ``path`` with ``write(temporary_path)`` (e.g. ``torch.save``)."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes) -> None:
    write_with(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: str | Path, text: str) -> None:
    write_with(path, lambda tmp: tmp.write_text(text))


def write_parquet(path: str | Path, table: pa.Table) -> None:
    write_with(path, lambda tmp: pq.write_table(table, tmp))


def read_parquet(path: str | Path) -> pa.Table:
    """Read a Parquet file that a live writer may replace at any moment: one open handle
    pins one version of the file (see the module docstring)."""
    with open(path, "rb") as handle:
        return pq.ParquetFile(handle).read()


def progress(iterable, total: int, desc: str):
    """``iterable`` with a progress bar on stdout when stdout is a terminal, else as is
    (piped output and Ray trials keep their plain lines)."""
    if not sys.stdout.isatty():
        return iterable
    return tqdm(iterable, total=total, desc=desc, unit="batch", file=sys.stdout, leave=False, dynamic_ncols=True)

"""What produced a result: config, code version, library versions, hardware."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from astray import __version__

LIBRARIES = ("torch", "torchvision", "timm", "ray", "optuna", "pyarrow", "numpy", "datasets", "scikit-learn")


def git_commit(path: Path | None = None) -> str | None:
    """HEAD of the checkout astray runs from, with '+dirty' for uncommitted changes."""
    where = str(path or Path(__file__).resolve().parent)
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        if not sha:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {"machine": platform.machine(), "platform": platform.platform(),
                            "cpu_count": os.cpu_count(), "python": sys.version.split()[0]}
    try:
        info["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # hardware facts are best-effort; they never stop a sweep
        pass
    return info


def manifest(resolved_config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"astray_version": __version__, "git_commit": git_commit(), "libraries": library_versions(),
            "hardware": hardware(), "created": _dt.datetime.now(_dt.timezone.utc).isoformat(),
            "command": " ".join(sys.argv), "config": resolved_config, **extra}

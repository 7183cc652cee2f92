"""The sdist and wheel: what they hold, and a wheel installed into a fresh venv runs."""

from __future__ import annotations

import subprocess
import sysconfig
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

from tests.conftest import PYTHON, REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: build with this venv's setuptools (no download at test time).
    proc = subprocess.run([PYTHON, "-m", "build", "--no-isolation", "--sdist", "--wheel", "--outdir", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def test_the_wheel_and_sdist_carry_the_configs_and_py_typed(dist):
    (wheel,) = dist.glob("astray-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"astray/py.typed", "astray/configs/quickstart.yaml", "astray/configs/fashion.yaml"} <= names
    assert not any(n.startswith("tests/") for n in names)
    (sdist,) = dist.glob("astray-*.tar.gz")
    members = tarfile.open(sdist).getnames()
    assert any(m.endswith("astray/configs/quickstart.yaml") for m in members)


def test_the_installed_wheel_runs_outside_the_repository(dist, tmp_path):
    """A fresh venv gets the wheel itself (--no-deps); its dependencies come from this
    test venv's site-packages through a .pth line, not from another download of torch
    and Ray. The run starts in an empty folder, so the repository's files cannot help."""
    (wheel,) = dist.glob("astray-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "deps-from-test-venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = subprocess.run([py, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel)],
                         capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr[-3000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run([py, "-c", "import astray; print(astray.__file__)"], cwd=work, capture_output=True,
                           text=True, check=True).stdout.strip()
    assert where.startswith(str(env_dir)), where  # the installed copy, not the repository's
    help_ = subprocess.run([env_dir / "bin" / "astray", "--help"], cwd=work, capture_output=True, text=True,
                           timeout=120)
    assert help_.returncode == 0 and "train" in help_.stdout and "tune" in help_.stdout
    train = subprocess.run([py, "-m", "astray.train", "quickstart", "--set", "training.epochs=1",
                            "--set", "dataset.image_size=16", "--set", "logging.output_dir=run"],
                           cwd=work, capture_output=True, text=True, timeout=300)
    assert train.returncode == 0, train.stdout[-2000:] + train.stderr[-2000:]
    assert (work / "run" / "metrics.parquet").is_file() and "done (completed)" in train.stdout
    unknown = subprocess.run([py, "-m", "astray.train", "quickstrat"], cwd=work, capture_output=True, text=True,
                             timeout=120)
    assert unknown.returncode == 2 and "quickstart" in unknown.stderr and len(unknown.stderr.splitlines()) == 1

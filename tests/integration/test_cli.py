"""The command line: one clear line and exit code 2 for bad input, nothing lost."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import PYTHON, REPO, small_overrides


def _train(*args: str, env=None):
    return subprocess.run([PYTHON, "-m", "astray.train", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.mark.parametrize("args, needle", [
    (["--set", "ast.target_activation=1.5"], "ast.target_activation=1.5"),
    (["--set", "ast.kp=-1"], "ast.kp=-1"),
    (["--set", "ast.strategy=masked"], "ast.strategy='masked'"),
    (["--set", "training.epocs=3"], "training.epocs"),
    (["--set", "model.name=resnet19"], "resnet18"),
    (["--set", "dataset.type=folder", "--set", "dataset.train_dir=/nonexistent/train"], "/nonexistent/train"),
    (["--set", "training.batch_size=big"], "training.batch_size"),
], ids=["target", "gain", "strategy", "typo", "model", "path", "type"])
def test_bad_input_is_one_line_exit_2_before_any_write(tmp_path, args, needle):
    out = tmp_path / "never"
    proc = _train(str(REPO / "configs/quickstart.yaml"), "--set", f"logging.output_dir={out}", *args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("astray: error:"), proc.stderr
    assert needle in lines[0]
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_missing_config_file():
    proc = _train("configs/nope.yaml")
    assert proc.returncode == 2 and "configs/nope.yaml" in proc.stderr and "Traceback" not in proc.stderr


def test_existing_run_is_not_overwritten_and_resume_continues(tmp_path, env_one_thread):
    out = tmp_path / "run"
    base = [str(REPO / "configs/quickstart.yaml")]
    for item in small_overrides(out, **{"training.epochs": 1}):
        base += ["--set", item]
    first = _train(*base, env=env_one_thread)
    assert first.returncode == 0, first.stderr
    assert "epoch 1/1" in first.stdout
    before = (out / "last.pt").read_bytes()
    again = _train(*base, env=env_one_thread)
    assert again.returncode == 2 and "--resume" in again.stderr
    assert (out / "last.pt").read_bytes() == before
    more = _train(*base, "--set", "training.epochs=2", "--resume", env=env_one_thread)
    assert more.returncode == 0, more.stderr
    assert "resuming" in more.stdout and "epoch 2/2" in more.stdout and "epoch 1/2" not in more.stdout


def test_resume_without_a_checkpoint(tmp_path):
    proc = _train(str(REPO / "configs/quickstart.yaml"), "--set", f"logging.output_dir={tmp_path}/x", "--resume")
    assert proc.returncode == 2 and "no checkpoint" in proc.stderr

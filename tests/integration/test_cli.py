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


def _in_a_terminal(args: list[str], columns: int = 120) -> tuple[int, str]:
    """Run a command with stdout and stderr on a pseudo-terminal of ``columns`` columns."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen(args, cwd=REPO, stdout=slave, stderr=slave)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return proc.wait(timeout=120), out.decode(errors="replace")


def test_a_terminal_gets_a_progress_bar_and_a_pipe_gets_plain_lines(tmp_path):
    args = [PYTHON, "-m", "astray.train", str(REPO / "configs/quickstart.yaml"),
            *[a for o in small_overrides(tmp_path / "tty", **{"training.epochs": 2}) for a in ("--set", o)]]
    rc, shown = _in_a_terminal(args)
    assert rc == 0, shown[-2000:]
    # tqdm writes "step/s", or "s/step" when a step takes over a second (a loaded machine).
    frames = [f for f in shown.split("\r") if "step/s" in f or "s/step" in f]
    assert frames, shown[-2000:]
    assert any("epoch 2/2 [stale]" in f and "img/s" in f and "loss" in f and "act" in f and "/0.3" in f
               and "thr" in f for f in frames), frames[-3:]
    assert "epoch 2/2 [stale] train_loss" in shown  # the epoch's line stays when the bar goes

    piped = subprocess.run([PYTHON, "-m", "astray.train", str(REPO / "configs/quickstart.yaml"),
                            *[a for o in small_overrides(tmp_path / "pipe", **{"training.epochs": 2})
                              for a in ("--set", o)]], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0 and "\r" not in piped.stdout and "step/s" not in piped.stdout
    assert "epoch 2/2 [stale] train_loss" in piped.stdout


def test_evaluation_shows_progress_in_a_terminal(tmp_path):
    from astray.config.load import load_config
    from astray.engine.trainer import run

    run(load_config(REPO / "configs/quickstart.yaml", small_overrides(tmp_path / "r", **{"training.epochs": 1})))
    rc, shown = _in_a_terminal([PYTHON, "-m", "astray.eval", str(tmp_path / "r"), "--batch-size", "4"])
    assert rc == 0, shown[-2000:]
    assert any("predicting" in f and "batch" in f for f in shown.split("\r")), shown[-1500:]


def test_a_score_scale_the_model_cannot_take_is_one_line_exit_2(tmp_path):
    """A ViT built for 224 px cannot score a 112 px copy: said before training, naming
    the key, not a traceback from the first sparse step."""
    sets = small_overrides(tmp_path / "vit", **{"model.name": "vit_tiny_patch16_224", "dataset.image_size": 224,
                                                "dataset.synthetic_samples": 64, "ast.strategy": "reforward",
                                                "ast.reforward.score_scale": 0.5})
    proc = _train(str(REPO / "configs/quickstart.yaml"), *[a for s in sets for a in ("--set", s)])
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "ast.reforward.score_scale=0.5 scores (224, 224) px images at (112, 112) px" in lines[0]
    assert "model.name=vit_tiny_patch16_224 cannot take" in lines[0]

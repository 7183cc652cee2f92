"""The ``astray`` console script: one subcommand per command, the same one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from astray import __version__
from astray.cli import COMMANDS, main
from tests.conftest import PYTHON, REPO

SCRIPT = Path(sys.executable).parent / "astray"


def test_every_command_is_a_subcommand_and_a_module():
    assert sorted(COMMANDS) == ["eval", "explain", "export", "report", "train", "tune"]
    for name in COMMANDS:
        assert (REPO / "astray" / f"{name}.py").is_file()  # python -m astray.<name>
        assert (REPO / "astray" / "cli" / f"{name}.py").is_file()


def test_unknown_command_is_one_line_and_exit_2(capsys):
    assert main(["trian"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown command 'trian'" in err[0] and "train" in err[0]


def test_no_command_prints_usage_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage: astray" in capsys.readouterr().out
    assert main(["--help"]) == 0


def test_subcommand_errors_name_the_subcommand(capsys, tmp_path):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert main(["train", "configs/quickstart.yaml", "--bogus"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and "does not exist" in lines[0]
    assert "unrecognized arguments: --bogus" in lines[1] and "usage: astray train" in lines[1]


@pytest.mark.skipif(not SCRIPT.exists(), reason="astray is not installed in this environment")
def test_console_script_is_installed():
    proc = subprocess.run([str(SCRIPT), "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == f"astray {__version__}"


def test_python_dash_m_astray_dispatches(tmp_path):
    proc = subprocess.run([PYTHON, "-m", "astray", "report", str(tmp_path / "nope")], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("astray: error:")

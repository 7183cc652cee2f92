"""``astray report RUN_DIR [--baseline RUN_DIR]``: the report of one training run, on real runs."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pandas as pd
import pytest
from matplotlib.image import imread

from astray.cli.report import main
from astray.config.load import load_config
from astray.engine.trainer import run
from tests.conftest import REPO, small_overrides


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for name, strategy in (("dense", "dense"), ("stale", "stale")):
        run(load_config(REPO / "configs/quickstart.yaml",
                        small_overrides(root / name, **{"ast.strategy": strategy, "training.epochs": 3})))
    return root


def test_a_run_against_its_baseline(runs, capsys):
    assert main([str(runs / "stale"), "--baseline", str(runs / "dense")]) == 0
    out = runs / "stale" / "report"
    image = imread(out / "run.png")
    assert image.shape[0] > 600 and image.shape[1] > 900  # four readable panels
    svg = ET.parse(out / "run.svg").getroot()
    assert svg.tag.endswith("svg")
    text = (out / "report.md").read_text()
    stale = pd.read_parquet(runs / "stale" / "metrics.parquet")
    dense = pd.read_parquet(runs / "dense" / "metrics.parquet")
    assert f"{stale.val_acc.iloc[-1]:.4f}" in text and f"{dense.val_acc.iloc[-1]:.4f}" in text
    ratio = stale.energy_j.sum() / dense.energy_j.sum()
    assert f"{ratio:.3f} × its training energy" in text
    assert "model" in text  # the energy source is named
    assert "wrote" in capsys.readouterr().out


def test_a_run_alone_and_bad_input(runs, capsys, tmp_path):
    assert main([str(runs / "dense"), "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "run.png").stat().st_size > 10_000
    assert "Against the baseline" not in (tmp_path / "r" / "report.md").read_text()
    capsys.readouterr()
    assert main([str(runs / "stale"), "--baseline", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--baseline" in err and "nope" in err

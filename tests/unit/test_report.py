"""``python -m astray.report`` end to end on real Parquet stores built in tmp_path."""

from __future__ import annotations

import csv
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pyarrow as pa
import pytest
from matplotlib.image import imread

from astray.analysis.compute import analyze
from astray.analysis.read import parse_objectives, read_sweep
from astray.analysis.report import FILES
from astray.cli.report import main
from astray.sweep.store import ResultStore
from tests.conftest import PYTHON, REPO
from tests.unit.test_analysis import trial_row

SEARCHED = {"ast.target_activation": pa.float64(), "ast.kp": pa.float64()}


def build_store(root: Path, rows: list[dict], source: str = "model") -> Path:
    """A sweep store as the driver writes it: manifest, one trial file and one epochs file per trial."""
    store = ResultStore(root, SEARCHED).open()
    store.write_manifest({
        "astray_version": "0.1.0", "git_commit": "abc123", "total_trials": len(rows) + 1,
        "hardware": {"cpu": "test", "cpu_count": 2}, "libraries": {"torch": "x"},
        "config": {"search": {"objectives": [{"metric": "val_acc", "mode": "max"},
                                             {"metric": "energy_j", "mode": "min"}],
                              "space": {"ast.kp": {"type": "loguniform", "low": 0.1, "high": 5.0}},
                              "num_samples": len(rows) - 1, "sampler": "tpe"},
                   "sweep": {"name": root.name}, "resources": {"workers_per_trial": 1}},
    })
    for i, row in enumerate(rows):
        row = dict(row, energy_source=source, **{"ast.kp": 0.5 + i})
        store.write_trial(row)
        if row["status"] != "running":
            epochs = [{"epoch": e, "val_acc": row["val_acc"], "activation_rate": 1.0 if e == 1 else 0.4,
                       "threshold": 1.0 / e, "energy_j": 1.0, "energy_source": row["energy_source"]}
                      for e in (1, 2, 3)]
            store.write_epochs(row["trial_id"], epochs)
    return root


def sweep_rows() -> list[dict]:
    return [trial_row("base", 0.95, 100.0, is_baseline=True, ended_at=1.0),
            trial_row("t1", 0.94, 40.0, ended_at=2.0, target=0.4),
            trial_row("t2", 0.90, 30.0, ended_at=3.0, target=0.2),
            trial_row("t3", 0.90, 60.0, ended_at=4.0),
            trial_row("t4", 0.90, 30.0, ended_at=5.0, target=0.2),  # equal to t2: both on the front
            trial_row("div", 0.1, 20.0, status="diverged", error="loss became nan at epoch 2", ended_at=6.0),
            trial_row("err", None, None, status="error", error="RuntimeError: CUDA out of memory", ended_at=7.0),
            trial_row("run", 0.5, 5.0, status="running")]


def check_outputs(out: Path) -> list[list[str]]:
    for name in FILES:
        assert (out / name).stat().st_size > 0, name
    for png in ("pareto.png", "controller.png", "hypervolume.png"):
        image = imread(out / png)
        assert image.shape[0] > 100 and image.shape[1] > 100
    ET.parse(out / "pareto.svg")  # well-formed XML
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3
    assert not [s for s in re.findall(r'(?:src|href)="([^"]*)"', page) if not s.startswith("data:")]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left
    md = (out / "report.md").read_text()
    assert "![" in md and "(pareto.png)" in md
    with open(out / "front.csv") as f:
        return list(csv.reader(f))


def test_report_of_a_sweep_still_running(tmp_path, capsys):
    root = build_store(tmp_path / "sweep-a", sweep_rows())
    assert main([str(root)]) == 0
    out = root / "report"
    rows = check_outputs(out)
    analysis = analyze([read_sweep(root)], parse_objectives("val_acc:max,energy_j:min"))
    front = analysis.groups[0].fronts[0].front
    assert {t.trial_id for t in front} == {"base", "t1", "t2", "t4"}
    assert len(rows) - 1 == len(front)
    header = rows[0]
    assert {"trial_id", "ast.target_activation", "ast.kp", "energy_saving"} <= set(header)
    assert {r[header.index("trial_id")] for r in rows[1:]} == {t.trial_id for t in front}
    printed = capsys.readouterr().out
    assert "1 unfinished" in printed and "1 diverged" in printed and "1 error" in printed
    md = (out / "report.md").read_text()
    assert "CUDA out of memory" in md and "loss became nan" in md  # failed trials and why
    assert "+60.0 %" in md  # t1's energy saving against the baseline (40 J vs 100 J)


def test_a_sweep_with_shared_and_exclusive_devices_reports_them_apart(tmp_path, capsys):
    rows = [dict(r, energy_scope="device-shared" if r["trial_id"] in ("t2", "t3") else "device")
            for r in sweep_rows()[:4]]
    root = build_store(tmp_path / "s", rows, source="rapl")
    assert main([str(root), "--out", str(tmp_path / "rep")]) == 0
    check_outputs(tmp_path / "rep")
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "energy source rapl (device-shared)" in md and "energy source rapl\n" in md
    assert "other energy source or device sharing" in md
    assert "[rapl (device-shared)] front" in capsys.readouterr().out


def test_comparison_of_two_sweeps_with_different_energy_sources(tmp_path, capsys):
    a = build_store(tmp_path / "a", sweep_rows()[:4])
    b = build_store(tmp_path / "b", [trial_row("base", 0.93, 80.0, is_baseline=True),
                                      trial_row("u1", 0.92, 20.0)], source="nvml")
    out = tmp_path / "cmp"
    assert main([str(a), str(b), "--out", str(out), "--objectives", "val_acc:max,energy_j:min"]) == 0
    rows = check_outputs(out)
    analysis = analyze([read_sweep(a), read_sweep(b)], parse_objectives("val_acc:max,energy_j:min"))
    assert analysis.split_by_energy_source
    shown = sum(len(f.front) for g in analysis.groups for f in list(g.fronts) + [g.combined])
    assert len(rows) - 1 == shown
    assert "different sources" in capsys.readouterr().out
    assert "energy source nvml" in (out / "report.md").read_text()


def test_three_objectives_render(tmp_path):
    root = build_store(tmp_path / "s", sweep_rows()[:5])
    assert main([str(root), "--objectives", "val_acc:max,energy_j:min,time_s:min", "--out", str(tmp_path / "o")]) == 0
    check_outputs(tmp_path / "o")


@pytest.mark.parametrize("args, needle", [
    (["{tmp}/missing"], "does not exist"),
    (["{tmp}/empty"], "no trials/"),
    (["{sweep}", "--objectives", "val_acc:up"], "'up'"),
    (["{sweep}", "--objectives", "val_accuracy:max,energy_j:min"], "val_accuracy"),
    (["{sweep}", "{sweep}"], "given twice"),
    ([], "SWEEP_DIR"),
], ids=["missing", "no-trials", "direction", "metric", "twice", "no-args"])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, args, needle):
    (tmp_path / "empty").mkdir()
    sweep = build_store(tmp_path / "sweep", sweep_rows()[:3])
    argv = [a.format(tmp=tmp_path, sweep=sweep) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("astray: error:") and needle in err[0], err
    assert not (sweep / "report").exists()


def test_module_entry_point_exits_2_without_a_traceback(tmp_path):
    proc = subprocess.run([PYTHON, "-m", "astray.report", str(tmp_path / "nope")], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("astray: error:") and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr


def test_controller_figure_draws_steps_where_the_store_has_them(tmp_path):
    from astray.analysis.figures import controller_figure

    root = build_store(tmp_path / "s", sweep_rows())
    store = ResultStore(root, SEARCHED).open()
    for tid in ("t1", "t2", "t4"):  # the front's searched trials
        store.write_steps(tid, [{"epoch": 1 + k // 20, "step": k % 20, "progress": k / 20, "source": "step",
                                 "activation": 1.0 if k < 20 else 0.3, "threshold": 1.0 + k / 100, "error": 0.0,
                                 "integral": 0.0, "loss": 1.0, "lr": 0.1} for k in range(60)])
    fig = controller_figure(analyze([read_sweep(root)], parse_objectives("val_acc:max,energy_j:min")))
    rate, thr = fig.axes[:2]
    assert "per step" in rate.get_title() and "fractional" in rate.get_xlabel()
    assert {len(line.get_xdata()) for line in rate.get_lines() if len(line.get_xdata()) > 2} == {60}
    # A store without steps/ draws per epoch, as before.
    plain = controller_figure(analyze([read_sweep(build_store(tmp_path / "p", sweep_rows()))],
                                      parse_objectives("val_acc:max,energy_j:min")))
    assert "per epoch" in plain.axes[0].get_title()

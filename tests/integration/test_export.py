"""ONNX export and per-class evaluation of a really trained model, from a run and from a sweep store.

One tiny model is trained once (synthetic data, ``test_resnet``); the sweep store is
built with :class:`astray.sweep.store.ResultStore` and the trained files are laid out the way
Ray keeps trial checkpoints, so the commands find them exactly as in a real sweep.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from astray.cli import eval as eval_cli
from astray.cli import export as export_cli
from astray.deploy import export
from astray.config.load import load_config
from astray.engine.data import build_datasets
from astray.errors import AstrayError
from astray.engine.models import create_model
from astray.sweep.store import ResultStore
from astray.deploy.trained import find_trained
from astray.sweep.checkpoints import latest_checkpoint
from astray.engine.trainer import run
from tests.conftest import PYTHON, REPO, small_overrides

OBJECTIVES = [{"metric": "val_acc", "mode": "max"}, {"metric": "energy_j", "mode": "min"}]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train") / "run"
    run(load_config(None, small_overrides(out)))
    return out


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory, run_dir) -> Path:
    """A sweep store with four trials; two have Ray-style checkpoint folders."""
    root = tmp_path_factory.mktemp("sweeps") / "s1"
    storage = root.parent / "ray-storage"
    config_json = json.dumps(load_config(run_dir / "config.yaml").to_dict())
    store = ResultStore(root, {}).open()
    store.write_manifest({"storage_path": str(storage), "config": {"search": {"objectives": OBJECTIVES}}})
    for tid, status, acc, energy in [("bbbb2222", "completed", 0.9, 10.0), ("aaaa1111", "completed", 0.5, 5.0),
                                     ("cccc3333", "diverged", 0.99, 1.0), ("dddd4444", "completed", 0.1, 50.0)]:
        store.write_trial({"trial_id": tid, "status": status, "is_baseline": False, "val_acc": acc,
                           "energy_j": energy, "energy_source": "model", "config_json": config_json})
    # One-worker trial as Tune keeps it: an older checkpoint, the one that handed best.pt,
    # and the newest, which did not improve (so it holds last.pt only); a multi-worker
    # trial as Train keeps it, with only last.pt. dddd4444 has none.
    tune_trial = storage / "s1" / "astray_trial_bbbb2222_2_ast_kp=0.5_2026-01-01_00-00-00"
    for name, files in [("checkpoint_000000", ["last.pt"]),
                        ("checkpoint_000001", ["best.pt", "last.pt", "metrics.parquet", "config.yaml"]),
                        ("checkpoint_000002", ["last.pt", "config.yaml"])]:
        (tune_trial / name).mkdir(parents=True)
        for f in files:
            shutil.copy(run_dir / f, tune_trial / name / f)
    metrics = pq.read_table(run_dir / "metrics.parquet")  # one epoch more than checkpoint_000001
    pq.write_table(pa.concat_tables([metrics, metrics.slice(0, 1)]), tune_trial / "checkpoint_000002" / "metrics.parquet")
    train_ckpt = storage / "train-aaaa1111" / "checkpoint_2026-01-01_00-00-05.000001"
    train_ckpt.mkdir(parents=True)
    shutil.copy(run_dir / "last.pt", train_ckpt / "last.pt")
    return root


def reference(run_dir: Path) -> tuple[torch.nn.Module, torch.Tensor]:
    """The trained PyTorch model from best.pt and the validation images, built independently."""
    cfg = load_config(run_dir / "config.yaml")
    ckpt = torch.load(run_dir / "best.pt", weights_only=True)
    model = create_model(cfg.model, ckpt["num_classes"])
    model.load_state_dict(ckpt["model"])
    val = build_datasets(cfg.dataset).val
    return model.eval(), torch.stack([val[i][0] for i in range(len(val))])


def test_fp32_export_matches_pytorch_and_has_a_dynamic_batch_axis(run_dir, tmp_path):
    assert export_cli.main([str(run_dir), "--out", str(tmp_path), "--samples", "0", "--batch-size", "32"]) == 0
    folder = tmp_path / f"{run_dir.name}-fp32"
    record = json.loads((folder / "export.json").read_text())
    model, images = reference(run_dir)
    parity = record["parity"]
    assert parity["samples"] == len(images) and parity["passed"]
    assert parity["max_abs_diff"] <= 1e-4 and parity["top1_agreement"] == 1.0
    assert len(parity["batch_sizes"]) == 2  # 32 and the remainder
    assert record["checkpoint_used"].startswith("best.pt") and record["opset"] == export.DEFAULT_OPSET

    path = folder / "model.onnx"
    onnx.checker.check_model(str(path), full_check=True)
    batch_dim = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        for x in (images[:1], images[3:10]):
            got = session.run(None, {"input": x.numpy()})[0]
            assert got.shape == (len(x), record["num_classes"])
            assert np.abs(got - model(x).numpy()).max() <= 1e-4


def test_fp16_export_runs_in_onnxruntime_and_agrees_on_top1(run_dir, tmp_path):
    assert export_cli.main([str(run_dir), "--out", str(tmp_path), "--precision", "fp16", "--samples", "0"]) == 0
    folder = tmp_path / f"{run_dir.name}-fp16"
    record = json.loads((folder / "export.json").read_text())
    assert record["precision"] == "fp16" and record["parity"]["passed"]
    graph = onnx.load(str(folder / "model.onnx")).graph
    weights = [i for i in graph.initializer if len(i.dims) > 1]
    assert weights and all(i.data_type == onnx.TensorProto.FLOAT16 for i in weights)

    model, images = reference(run_dir)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    got = np.concatenate([session.run(None, {"input": images[i:i + 33].numpy()})[0]
                          for i in range(0, len(images), 33)])
    with torch.no_grad():
        ref = model(images).numpy()
    assert got.dtype == np.float32  # half inside, float32 at the interface
    assert (got.argmax(1) == ref.argmax(1)).mean() >= export.FP16_MIN_TOP1
    assert np.abs(got - ref).max() <= export.FP16_REL_DIFF * max(1.0, np.abs(ref).max())
    assert np.abs(got - ref).max() > 1e-6  # really computed in half precision


def test_eval_writes_report_png_and_one_row_per_test_image(run_dir):
    """Evaluation reads the test split: the one split that selected nothing."""
    assert eval_cli.main([str(run_dir)]) == 0
    out = run_dir / "eval"
    images = build_datasets(load_config(run_dir / "config.yaml").dataset).test
    table = pq.read_table(out / "predictions.parquet")
    assert table.num_rows == len(images)
    assert sorted(table.column("index").to_pylist()) == list(range(len(images)))
    probs = np.array(table.column("probs").to_pylist())
    assert probs.shape == (len(images), 4) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert np.array_equal(probs.argmax(1), table.column("prediction").to_numpy())
    assert np.allclose(table.column("max_prob").to_numpy(), probs.max(1))

    report = json.loads((out / "classification_report.json").read_text())
    correct = table.column("correct").to_numpy()
    assert report["accuracy"] == pytest.approx(correct.mean())
    # Same checkpoint, same split, same preprocessing as training's test evaluation at the
    # selected epoch: same accuracy (up to one near-tie flipped by a different batch size).
    rows = pq.read_table(run_dir / "metrics.parquet").to_pylist()
    selected = next(r for r in rows if r["epoch"] == report["checkpoint_epoch"])
    assert abs(report["accuracy"] - selected["test_acc"]) <= 1 / len(images) + 1e-9
    per_class = report["classification_report"]
    assert set(per_class) >= {"0", "1", "2", "3", "macro avg", "weighted avg"}
    assert sum(per_class[c]["support"] for c in "0123") == len(images)
    labels, preds = table.column("label").to_numpy(), table.column("prediction").to_numpy()
    recall_0 = (preds[labels == 0] == 0).mean()
    assert per_class["0"]["recall"] == pytest.approx(recall_0)
    assert "macro avg" in (out / "classification_report.txt").read_text()
    assert (out / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sweep_trials_are_found_in_ray_checkpoint_folders(sweep_dir):
    assert [t.name for t in find_trained(sweep_dir, "best")] == ["bbbb2222"]  # the diverged 0.99 does not count
    assert {t.name for t in find_trained(sweep_dir, "front")} == {"aaaa1111", "bbbb2222"}
    best = find_trained(sweep_dir, "bbbb2222")[0]
    # The newest checkpoint is what a retry resumes from; the deployed weights are the
    # best.pt an earlier epoch handed to Ray.
    assert best.checkpoint.name == "best.pt" and best.checkpoint.parent.name == "checkpoint_000001"
    storage = sweep_dir.parent / "ray-storage"
    assert latest_checkpoint(storage, "bbbb2222").name == "checkpoint_000002"
    fallback = find_trained(sweep_dir, "aaaa1111")[0]
    assert fallback.checkpoint.name == "last.pt" and fallback.checkpoint.parent.parent.name == "train-aaaa1111"
    with pytest.raises(AstrayError, match="trial dddd4444: no Ray checkpoint"):
        find_trained(sweep_dir, "dddd4444")


def test_sweep_export_and_eval_write_under_the_sweep(sweep_dir):
    assert export_cli.main([str(sweep_dir), "--trial", "aaaa1111", "--samples", "32"]) == 0
    record = json.loads((sweep_dir / "export" / "aaaa1111-fp32" / "export.json").read_text())
    assert record["checkpoint_used"].startswith("last.pt") and record["parity"]["passed"]
    assert record["parity"]["samples"] == 32
    assert eval_cli.main([str(sweep_dir), "--trial", "bbbb2222"]) == 0
    assert (sweep_dir / "eval" / "bbbb2222" / "predictions.parquet").is_file()


def test_unknown_trial_lists_the_ids_truncated(tmp_path):
    store = ResultStore(tmp_path, {}).open()
    for i in range(15):
        store.write_trial({"trial_id": f"t{i:02d}", "status": "running"})
    with pytest.raises(AstrayError) as info:
        find_trained(tmp_path, "nope")
    assert "t00, t01" in str(info.value) and "(3 more)" in str(info.value) and "t14" not in str(info.value)


def test_run_dir_without_weights_is_a_clear_error(run_dir, tmp_path):
    shutil.copy(run_dir / "config.yaml", tmp_path / "config.yaml")
    with pytest.raises(AstrayError, match="no best.pt or last.pt"):
        find_trained(tmp_path)


def test_bad_input_is_one_line_and_exit_2(run_dir, sweep_dir, tmp_path):
    cases = {
        "missing dir": (["astray.export", str(tmp_path / "nope")], "no such directory"),
        "unknown trial": (["astray.export", str(sweep_dir), "--trial", "zzzz9999"], "aaaa1111, bbbb2222"),
        "bad opset": (["astray.export", str(run_dir), "--opset", "99"], "--opset 99"),
    }
    # Concurrently: each process spends its few seconds importing torch.
    procs = {name: subprocess.Popen([PYTHON, "-m", *args], cwd=REPO, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for name, (args, _) in cases.items()}
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=120)
        lines = err.strip().splitlines()
        assert proc.returncode == 2, (name, err)
        assert len(lines) == 1 and lines[0].startswith("astray: error:"), (name, err)
        assert cases[name][1] in lines[0], (name, err)
    assert not (tmp_path / "nope").exists() and not (run_dir / "export").exists()


def test_eval_shares_the_one_line_errors(sweep_dir, capsys):
    assert eval_cli.main([str(sweep_dir), "--trial", "zzzz9999"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such trial" in err[0] and "aaaa1111" in err[0]
    assert eval_cli.main([str(sweep_dir), "--batch-size", "zero"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_opset_range_follows_the_installed_onnx():
    lo, hi = export.opset_range()
    assert lo <= export.DEFAULT_OPSET <= hi <= onnx.defs.onnx_opset_version()
    with pytest.raises(AstrayError, match=f"{lo}..{hi}"):
        export.check_opset(hi + 1)

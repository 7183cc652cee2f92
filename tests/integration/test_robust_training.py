"""Real training runs with label noise and noise-robust significance: the flips file, the
noisy share trained, the irreducible-loss models and what they cost."""

from __future__ import annotations

import pandas as pd
import torch

from astray.config.load import load_config
from astray.engine.data import build_datasets
from astray.engine.records import read_flips
from astray.engine.trainer import run
from tests.conftest import REPO, small_overrides

QUICKSTART = REPO / "configs/quickstart.yaml"
NOISY = {"dataset.label_noise.rate": 0.3, "dataset.label_noise.seed": 5, "dataset.synthetic_samples": 400}


def _cfg(out, **extra):
    return load_config(QUICKSTART, small_overrides(out, **extra))


def test_a_noisy_run_records_its_flips_and_the_noisy_share_it_trains(tmp_path):
    cfg = _cfg(tmp_path / "run", **NOISY, **{"ast.strategy": "reforward", "training.epochs": 3})
    run(cfg)
    flips = pd.DataFrame(read_flips(tmp_path / "run" / "label_noise.parquet"))
    data = build_datasets(cfg.dataset)
    for split in ("train", "val"):
        mine = flips[flips["split"] == split]
        assert len(mine) == round(0.3 * len(getattr(data, split)))
        assert mine["index"].tolist() == data.flips[split].index.tolist()
        assert (mine["label"] != mine["noisy_label"]).all()
    df = pd.read_parquet(tmp_path / "run" / "metrics.parquet")
    # The dense warm-up trains every sample, so it trains exactly the dataset's noisy share
    # (the loader drops a last batch of one, at most one sample off).
    n = len(data.train)
    assert abs(df["noisy_share"].iloc[0] - data.flips["train"].index.numel() / n) <= 1.5 / n
    assert ((df["noisy_share"] > 0) & (df["noisy_share"] < 1)).all()

    run(_cfg(tmp_path / "clean", **{"ast.strategy": "reforward", "training.epochs": 2}))
    assert (pd.read_parquet(tmp_path / "clean" / "metrics.parquet")["noisy_share"] == 0).all()
    assert not (tmp_path / "clean" / "label_noise.parquet").exists()


def test_reducible_significance_trains_held_out_models_and_counts_their_cost(tmp_path):
    extra = {**NOISY, "ast.strategy": "reforward", "training.epochs": 3, "ast.significance": "reducible",
             "ast.irreducible.epochs": 2}
    run(_cfg(tmp_path / "rho", **extra))
    run(_cfg(tmp_path / "plain", **{k: v for k, v in extra.items() if not k.startswith(("ast.sig", "ast.irr"))}))
    rho, plain = (pd.read_parquet(tmp_path / name / "metrics.parquet") for name in ("rho", "plain"))
    first = rho.iloc[0]
    # Two models, each 2 epochs on half the data, then one scoring forward per sample:
    # 2 dense epochs of forward + backward and a third of one (forward ≈ 1/3 of a step).
    assert 2.0 < first["setup_flops"] / first["flops_dense"] < 2.6
    assert first["setup_energy_j"] > 0 and first["setup_time_s"] > 0
    # ... included in the first epoch's totals, which otherwise match the plain run's work.
    assert first["flops"] == plain.iloc[0]["flops"] + first["setup_flops"]
    assert first["energy_j"] > first["setup_energy_j"] and first["train_time_s"] > first["setup_time_s"]
    assert (rho["setup_flops"].iloc[1:] == 0).all() and (rho["setup_energy_j"].iloc[1:] == 0).all()
    # The irreducible losses live in the checkpoint: a resumed run does not retrain them.
    ckpt = torch.load(tmp_path / "rho" / "last.pt", weights_only=True)
    assert ckpt["irreducible"].shape == (len(build_datasets(_cfg(tmp_path / "x", **extra).dataset).train),)
    assert torch.isfinite(ckpt["irreducible"]).all()


def test_mislabelled_samples_get_higher_irreducible_losses(tmp_path):
    """The held-out models predict the true class of a flipped sample, so its loss under
    the (noisy) label is high: that is what reducible loss subtracts."""
    from astray.engine.trainer import Trainer, resolve_device

    cfg = _cfg(tmp_path / "t", **{**NOISY, "dataset.synthetic_samples": 600, "ast.strategy": "reforward",
                                  "ast.significance": "reducible", "ast.irreducible.epochs": 4})
    out = tmp_path / "t"
    trainer = Trainer(cfg, out, resolve_device("cpu"), resume=False)
    il = trainer.method.irreducible.cpu()
    noisy = trainer.data.noisy_mask()
    assert float(il[noisy].mean()) > float(il[~noisy].mean()) + 0.5

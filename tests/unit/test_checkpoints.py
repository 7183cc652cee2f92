"""Which files an epoch hands to Ray, and how Ray ranks the checkpoints it keeps."""

from __future__ import annotations

from pathlib import Path

import pytest

from astray.config.sweep import load_sweep_spec
from astray.errors import ConfigError
from astray.sweep.trainable import checkpoint_score, handed_files

OUT = Path("/run")


def _names(files: list[Path]) -> set[str]:
    return {f.name for f in files}


def test_every_epoch_hands_last_pt_and_best_pt_only_when_it_improved():
    row = {"epoch": 3, "val_acc": 0.8}
    assert _names(handed_files(row, OUT, 1, improved=False, final=False)) == {"last.pt", "metrics.parquet",
                                                                                "config.yaml"}
    assert _names(handed_files(row, OUT, 1, improved=True, final=False)) == {"last.pt", "best.pt",
                                                                               "metrics.parquet", "config.yaml"}


@pytest.mark.parametrize("epoch,improved,final,handed", [
    (1, False, False, False), (2, False, False, True), (3, False, False, False),
    (3, True, False, True),  # a new best is never left out
    (5, False, True, True),  # nor the run's last epoch
])
def test_checkpoint_every_n_epochs(epoch, improved, final, handed):
    files = handed_files({"epoch": epoch, "val_acc": 0.5}, OUT, 2, improved, final)
    assert bool(files) == handed
    if files:
        assert "last.pt" in _names(files)  # a retry can always resume from the newest


def test_checkpoint_score_ranks_only_checkpoints_that_hold_a_new_best():
    assert checkpoint_score({"val_acc": 0.9}, improved=True) == 0.9
    assert checkpoint_score({"val_acc": 0.95}, improved=False) == -1.0


def test_checkpoint_every_epochs_must_be_positive():
    with pytest.raises(ConfigError, match="sweep.checkpoint_every_epochs"):
        load_sweep_spec("configs/quickstart.yaml", ["sweep.checkpoint_every_epochs=0"])

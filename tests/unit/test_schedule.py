"""Which epochs are sparse: warm-up, the final dense share (rounded half up), InfoBatch's anneal."""

from __future__ import annotations

import pytest

from astray.config.load import build_config
from astray.engine.schedule import epoch_is_sparse
from astray.errors import ConfigError


def _plan(**ast) -> list[bool]:
    cfg = build_config({"ast": ast, "training": {"epochs": ast.pop("epochs", 10)}})
    return [epoch_is_sparse(cfg, e) for e in range(cfg.training.epochs)]


def test_final_dense_fraction_rounds_half_up():
    # 0.25 x 10 = 2.5 final dense epochs: 3, not round()'s banker's 2.
    assert _plan(strategy="stale", warmup_epochs=1, final_dense_fraction=0.25) == [False] + [True] * 6 + [False] * 3


def test_infobatch_trains_dense_from_its_anneal_point():
    assert _plan(strategy="infobatch", warmup_epochs=0, infobatch_anneal=0.875, epochs=8) == [True] * 7 + [False]
    assert _plan(strategy="infobatch", warmup_epochs=1, infobatch_anneal=0.5, epochs=8) == \
        [False] + [True] * 3 + [False] * 4


def test_stale_without_a_dense_warm_up_is_refused_in_one_line():
    with pytest.raises(ConfigError) as info:
        build_config({"ast": {"strategy": "stale", "warmup_epochs": 0}})
    message = str(info.value)
    assert "ast.warmup_epochs=0" in message and "ast.strategy=stale" in message and "\n" not in message
    build_config({"ast": {"strategy": "reforward", "warmup_epochs": 0}})  # scores are measured, not stored

"""docs/design.md §2 shows how to add a method; this runs that very code block: it
registers, passes the contract every method passes, is configured by its own
``ast.<name>`` section, and trains through the real loop."""

from __future__ import annotations

import re

import pytest
import torch

from astray.config.load import load_config
from astray.engine.trainer import run
from astray.errors import ConfigError
from astray.sparse import METHODS, PIController
from tests.conftest import REPO, small_overrides
from tests.helpers import make_method


def _example_source() -> str:
    design = (REPO / "docs" / "design.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", design, flags=re.S)
    (block,) = [b for b in blocks if "@register" in b]
    return block


@pytest.fixture
def easy_half():
    namespace: dict = {}
    exec(compile(_example_source(), "docs/design.md", "exec"), namespace)
    try:
        yield METHODS["easy-half"]
    finally:
        METHODS.pop("easy-half", None)


def test_the_documented_example_is_short():
    assert len(_example_source().strip().splitlines()) <= 45


def test_the_documented_method_registers_and_keeps_the_lowest_scores(easy_half):
    method = make_method("easy-half", 100, seed=2, share=0.3)
    scores = torch.linspace(0, 1, 100)
    method.observe(torch.arange(100), scores)
    controller = PIController(target=0.3, kp=1.0, ki=0.02)
    plan = method.plan_epoch(3, controller, dense=False)
    assert sorted(plan.indices.tolist()) == list(range(30))  # the 30 lowest scores
    again = make_method("easy-half", 100, seed=2, share=0.3)
    again.load_state_dict(method.state_dict())
    assert torch.equal(again.plan_epoch(3, controller, dense=False).indices, plan.indices)  # deterministic
    assert sorted(method.plan_epoch(4, controller, dense=True).indices.tolist()) == list(range(100))
    assert method.recalibrates_batchnorm(sparse=True) and not method.recalibrates_batchnorm(sparse=False)


def test_the_documented_method_is_configured_and_trained_like_any_other(easy_half, tmp_path):
    with pytest.raises(ConfigError, match=r"ast.easy-half.share=1.5 is out of range"):
        load_config(None, ["ast.strategy=easy-half", "ast.easy-half.share=1.5"])
    cfg = load_config(None, small_overrides(tmp_path / "run", **{
        "ast.strategy": "easy-half", "ast.easy-half.share": 0.25, "training.epochs": 2}))
    rows = run(cfg).rows
    assert [r["strategy"] for r in rows] == ["dense", "easy-half"]
    assert rows[1]["samples_backward"] == round(0.25 * rows[1]["samples_total"])

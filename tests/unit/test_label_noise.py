"""dataset.label_noise: which labels flip, to what, in which splits; and the sections
inside a section that carry it (dotted keys, errors, searchable)."""

from __future__ import annotations

import pytest
import torch

from astray.config.load import load_config
from astray.config.run import LabelNoiseConfig
from astray.config.sweep import leaf_keys
from astray.engine.data import _labels_of, _stratified_folds, build_datasets, flip_labels
from astray.errors import ConfigError


def _labels(n: int = 1000, classes: int = 10) -> torch.Tensor:
    return torch.arange(n) % classes


@pytest.mark.parametrize("kind", ["symmetric", "pairs"])
def test_flips_exactly_the_rate_and_always_to_another_class(kind):
    labels = _labels()
    noisy, flips = flip_labels(labels, 10, LabelNoiseConfig(rate=0.3, kind=kind, seed=4), stream=0)
    changed = torch.nonzero(noisy != labels).flatten()
    assert changed.numel() == 300
    assert torch.equal(changed, flips.index)
    assert torch.equal(flips.label, labels[flips.index]) and torch.equal(flips.noisy_label, noisy[flips.index])
    assert bool((flips.noisy_label != flips.label).all())
    if kind == "pairs":
        assert torch.equal(flips.noisy_label, (flips.label + 1) % 10)
    else:  # symmetric: every other class is reached, roughly evenly
        offsets = torch.bincount((flips.noisy_label - flips.label) % 10, minlength=10)
        assert offsets[0] == 0 and int(offsets[1:].min()) >= 15


def test_flips_are_fixed_by_the_noise_seed_and_differ_across_seeds_and_streams():
    labels = _labels()
    a = flip_labels(labels, 10, LabelNoiseConfig(rate=0.2, seed=1), stream=0)[1]
    b = flip_labels(labels, 10, LabelNoiseConfig(rate=0.2, seed=1), stream=0)[1]
    c = flip_labels(labels, 10, LabelNoiseConfig(rate=0.2, seed=2), stream=0)[1]
    d = flip_labels(labels, 10, LabelNoiseConfig(rate=0.2, seed=1), stream=1)[1]
    assert torch.equal(a.index, b.index) and torch.equal(a.noisy_label, b.noisy_label)
    assert not torch.equal(a.index, c.index) and not torch.equal(a.index, d.index)


def test_train_and_validation_are_noisy_and_the_test_split_is_clean():
    clean = build_datasets(load_config(None, ["dataset.type=digits"]).dataset)
    noisy = build_datasets(load_config(None, ["dataset.type=digits", "dataset.label_noise.rate=0.25",
                                              "dataset.label_noise.seed=3"]).dataset)
    for split in ("train", "val"):
        before, after = _labels_of(getattr(clean, split).base), _labels_of(getattr(noisy, split).base)
        flips = noisy.flips[split]
        assert int((before != after).sum()) == flips.index.numel() == round(0.25 * before.numel())
        # What the loader hands training is the noisy label.
        i = int(flips.index[0])
        assert getattr(noisy, split)[i][1] == int(flips.noisy_label[0]) != getattr(clean, split)[i][1]
    assert torch.equal(_labels_of(clean.test.base), _labels_of(noisy.test.base))
    assert "test" not in noisy.flips
    assert int(noisy.noisy_mask().sum()) == noisy.flips["train"].index.numel()
    assert clean.noisy_mask() is None and not clean.flips


def test_bad_noise_settings_are_one_line_errors_naming_the_key():
    with pytest.raises(ConfigError, match=r"dataset\.label_noise\.rate=1\.2 is out of range"):
        load_config(None, ["dataset.label_noise.rate=1.2"])
    with pytest.raises(ConfigError, match=r"dataset\.label_noise\.kind='flip'.*symmetric, pairs"):
        load_config(None, ["dataset.label_noise.kind=flip"])
    with pytest.raises(ConfigError, match=r"unknown config key 'dataset\.label_noise\.ratio'.*rate"):
        load_config(None, ["dataset.label_noise.ratio=0.2"])
    with pytest.raises(ConfigError, match=r"dataset\.label_noise must be a mapping"):
        load_config(None, ["dataset.label_noise=0.2"])


def test_sections_inside_sections_and_method_settings_are_searchable_keys():
    keys = leaf_keys(load_config(None))
    assert {"dataset.label_noise.rate", "ast.upper_quantile", "ast.significance", "ast.irreducible.epochs",
            "ast.irreducible.folds", "ast.stale.keep_prob", "ast.infobatch.prune_ratio"} <= keys
    assert "dataset.label_noise" not in keys and "ast.methods" not in keys


def test_folds_cover_every_sample_once_and_keep_class_shares():
    labels = torch.cat([torch.zeros(60), torch.ones(30), torch.full((11,), 2)]).long()
    folds = _stratified_folds(labels, 2, seed=0)
    assert torch.equal(torch.cat(folds).sort().values, torch.arange(labels.numel()))
    for c, n in ((0, 60), (1, 30), (2, 11)):
        counts = [int((labels[f] == c).sum()) for f in folds]
        assert sum(counts) == n and max(counts) - min(counts) <= 1

"""Model registry: timm and torchvision names, fresh heads, one-line errors."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from astray.config.run import ModelConfig
from astray.errors import ConfigError
from astray.engine.models import check_model_name, create_model


def test_timm_model_has_requested_classes():
    torch.manual_seed(0)
    model = create_model(ModelConfig(name="test_resnet"), num_classes=7)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 7)


def test_resnet18_has_requested_head():
    torch.manual_seed(0)
    model = create_model(ModelConfig(name="resnet18"), num_classes=5)
    assert isinstance(model.fc, nn.Linear)
    assert model.fc.out_features == 5
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 5)


def test_torchvision_only_model_builds_with_head():
    torch.manual_seed(0)
    model = create_model(ModelConfig(name="shufflenet_v2_x0_5"), num_classes=3)
    assert isinstance(model, torchvision.models.ShuffleNetV2)
    assert model.fc.out_features == 3
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 3)


def test_unknown_name_lists_close_matches_on_one_line():
    with pytest.raises(ConfigError) as info:
        create_model(ModelConfig(name="resnet19"), num_classes=10)
    message = str(info.value)
    assert "\n" not in message
    assert "model.name='resnet19'" in message
    assert "resnet18" in message


def test_unknown_name_without_close_match_is_still_one_line():
    with pytest.raises(ConfigError) as info:
        check_model_name("zzzz_not_a_model_qqq")
    assert "\n" not in str(info.value)
    assert "zzzz_not_a_model_qqq" in str(info.value)


def test_known_names_pass_check():
    check_model_name("test_resnet")
    check_model_name("mobilenet_v3_small")

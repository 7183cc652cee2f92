"""Model registry: any timm model or torchvision classification model, by name."""

from __future__ import annotations

import difflib
import functools

import timm
import torchvision
from torch import nn

from astray.config.run import ModelConfig
from astray.errors import ConfigError


@functools.lru_cache(maxsize=1)
def _timm_names() -> frozenset[str]:
    return frozenset(timm.list_models())


@functools.lru_cache(maxsize=1)
def _torchvision_names() -> frozenset[str]:
    return frozenset(torchvision.models.list_models(module=torchvision.models))


def check_model_name(name: str) -> None:
    """Raise a one-line error with close matches when ``name`` is no known model."""
    if name in _timm_names() or name in _torchvision_names():
        return
    known = sorted(_timm_names() | _torchvision_names())
    close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    hint = f"; close matches: {', '.join(close)}" if close else ""
    raise ConfigError(f"model.name={name!r} is not a timm or torchvision classification model{hint}")


def create_model(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """Build ``model.name`` with a fresh ``num_classes`` head.

    timm names win over torchvision names where both exist (timm's variants take a
    ``num_classes`` argument and need no head surgery).
    """
    check_model_name(cfg.name)
    if cfg.name in _timm_names():
        return timm.create_model(cfg.name, pretrained=cfg.pretrained, num_classes=num_classes)
    if cfg.pretrained:
        weights = torchvision.models.get_model_weights(cfg.name).DEFAULT
        model = torchvision.models.get_model(cfg.name, weights=weights)
        return _replace_head(model, num_classes)
    return torchvision.models.get_model(cfg.name, weights=None, num_classes=num_classes)


def _replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    for attr in ("fc", "classifier", "head", "heads"):
        head = getattr(model, attr, None)
        if isinstance(head, nn.Linear):
            setattr(model, attr, nn.Linear(head.in_features, num_classes))
            return model
        if isinstance(head, nn.Sequential):
            for i in range(len(head) - 1, -1, -1):
                if isinstance(head[i], nn.Linear):
                    head[i] = nn.Linear(head[i].in_features, num_classes)
                    return model
    raise ConfigError(f"model.pretrained=true: cannot find the classifier head of {type(model).__name__}")

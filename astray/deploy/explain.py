"""Grad-CAM overlays of a trained model's validation images (Captum's ``LayerGradCam``).

The target layer is chosen per model family (the last convolutional stage, whose maps
still have a spatial extent); ``--layer`` names another. A model with no such layer, or
a layer name the model lacks, is a one-line error.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from astray.analysis.figures import png_svg
from astray.deploy.per_class import class_names, predict
from astray.deploy.trained import Trained, load_model
from astray.engine.data import build_datasets
from astray.errors import AstrayError
from astray.io import write_bytes
from astray.extras import require_extra

# Model-name prefix -> the layer Grad-CAM reads (module path), for timm and torchvision names.
TARGET_LAYERS: tuple[tuple[str, str], ...] = (
    ("test_resnet", "layer4"), ("resnet", "layer4"), ("resnext", "layer4"), ("wide_resnet", "layer4"),
    ("seresnet", "layer4"), ("resnetv2", "stages.3"), ("convnext", "stages.3"),
    ("efficientnet", "conv_head"), ("mobilenetv3", "conv_head"), ("densenet", "features"),
    ("regnet", "s4"), ("vgg", "features"),
)


def target_layer_name(model_name: str, model: nn.Module, override: str | None = None) -> str:
    """The layer to explain: ``override``, else the model family's; checked against ``model``."""
    names = dict(model.named_modules())
    if override:
        if override not in names:
            close = difflib.get_close_matches(override, [n for n in names if n], n=5)
            raise AstrayError(f"--layer {override!r} is not a layer of {model_name}"
                              + (f"; close matches: {', '.join(close)}" if close else ""))
        return override
    for prefix, layer in TARGET_LAYERS:
        if model_name.startswith(prefix) and layer in names:
            return layer
    known = ", ".join(p for p, _ in TARGET_LAYERS)
    raise AstrayError(f"Grad-CAM has no target layer for model {model_name!r} (families: {known}); "
                      "name a convolutional layer with --layer")


def gradcam(model: nn.Module, layer: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Grad-CAM maps (N, H, W) in [0, 1], upsampled to the input size, for class ``target``."""
    captum = require_extra("explain", "captum.attr", "astray explain")  # the optional extra
    attr = captum.LayerGradCam(model, layer).attribute(x, target=target, relu_attributions=True)
    if attr.dim() != 4:
        raise AstrayError(f"the target layer's output has shape {tuple(attr.shape)}; Grad-CAM needs "
                          "(N, C, H, W) feature maps: choose a convolutional layer with --layer")
    maps = captum.LayerAttribution.interpolate(attr, tuple(x.shape[-2:]), interpolate_mode="bilinear")[:, 0]
    flat = maps.flatten(1)
    lo, hi = flat.min(1).values[:, None, None], flat.max(1).values[:, None, None]
    return ((maps - lo) / (hi - lo).clamp_min(1e-12)).detach()


@dataclass
class Explained:
    images: np.ndarray  # (N, H, W, 3) in [0, 1], for display
    maps: np.ndarray  # (N, H, W) Grad-CAM in [0, 1]
    labels: list[int]
    preds: list[int]
    confidence: list[float]
    names: list[str]
    layer: str


def explain(trained: Trained, n_images: int, device: torch.device, layer: str | None = None) -> Explained:
    """Grad-CAM for ``n_images`` validation images: the most confident correct ones and the
    most confident mistakes, half each (all correct when the model makes too few mistakes)."""
    model, _ = load_model(trained)
    model = model.to(device).eval()
    layer_name = target_layer_name(trained.config.model.name, model, layer)
    val = build_datasets(trained.config.dataset).val
    pred = predict(model, val, 256, device)
    guessed = pred.probs.argmax(1)
    conf = pred.probs.max(1)
    wrong = [i for i in np.argsort(-conf) if guessed[i] != pred.label[i]]
    right = [i for i in np.argsort(-conf) if guessed[i] == pred.label[i]]
    n_wrong = min(len(wrong), n_images // 2)
    chosen = wrong[:n_wrong] + right[: n_images - n_wrong]
    if not chosen:
        raise AstrayError(f"{trained.name}: the validation split is empty")
    x = torch.stack([val[int(pred.index[i])][0] for i in chosen]).to(device)
    targets = torch.as_tensor([int(guessed[i]) for i in chosen], device=device)
    maps = gradcam(model, dict(model.named_modules())[layer_name], x, targets)
    shown = x.detach().cpu().permute(0, 2, 3, 1).numpy()
    lo = shown.reshape(len(chosen), -1).min(1)[:, None, None, None]
    hi = shown.reshape(len(chosen), -1).max(1)[:, None, None, None]
    shown = (shown - lo) / np.maximum(hi - lo, 1e-12)
    return Explained(shown, maps.cpu().numpy(), [int(pred.label[i]) for i in chosen],
                     [int(guessed[i]) for i in chosen], [float(conf[i]) for i in chosen],
                     class_names(val, pred.probs.shape[1]), layer_name)


def gradcam_figure(e: Explained, title: str) -> Figure:
    n = len(e.labels)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(3.2 * cols, 3.5 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for k, ax in enumerate(axes):
        ax.axis("off")
        if k >= n:
            continue
        ax.imshow(e.images[k])
        ax.imshow(e.maps[k], cmap="jet", alpha=0.45, vmin=0, vmax=1)
        ok = e.labels[k] == e.preds[k]
        ax.set_title(f"true {e.names[e.labels[k]]} / pred {e.names[e.preds[k]]}\n"
                     f"confidence {e.confidence[k]:.2f}", fontsize=9, color="green" if ok else "red")
    fig.suptitle(f"{title}: Grad-CAM at {e.layer!r} for the predicted class (red: misclassified)", fontsize=10)
    return fig


def write_gradcam(trained: Trained, out: Path, n_images: int, device: torch.device, layer: str | None) -> Path:
    e = explain(trained, n_images, device, layer)
    png, _ = png_svg(gradcam_figure(e, trained.name))
    out.mkdir(parents=True, exist_ok=True)
    write_bytes(out / "gradcam.png", png)
    return out / "gradcam.png"

"""``astray explain``: Grad-CAM of a trained model, on a real trained run."""

from __future__ import annotations

import pytest
import torch
from matplotlib.image import imread

from astray.cli.explain import main
from astray.config.load import load_config
from astray.deploy.explain import gradcam, target_layer_name
from astray.deploy.trained import find_trained, load_model
from astray.engine.data import build_datasets
from astray.engine.models import create_model
from astray.config.run import ModelConfig
from astray.engine.trainer import run
from astray.errors import AstrayError
from tests.conftest import REPO, small_overrides


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("explain") / "run"
    # 64 px: the target layer keeps a spatial map (4 x 4) for Grad-CAM to localise on.
    run(load_config(REPO / "configs/quickstart.yaml",
                    small_overrides(out, **{"training.epochs": 2, "dataset.image_size": 64})))
    return out


def test_explain_writes_a_grid_of_labelled_overlays(run_dir, capsys):
    assert main([str(run_dir), "--images", "6"]) == 0
    image = imread(run_dir / "explain" / "gradcam.png")
    assert image.shape[0] > 400 and image.shape[1] > 600  # 2 rows of 4 panels
    assert "gradcam.png" in capsys.readouterr().out


def test_the_maps_are_grad_cam_of_the_chosen_layer(run_dir):
    """Captum's maps against Grad-CAM computed by hand with hooks: the channel weights are
    the spatial mean of the class score's gradient, the map is ReLU of the weighted sum."""
    (trained,) = find_trained(run_dir)
    model, _ = load_model(trained)
    name = target_layer_name(trained.config.model.name, model)
    assert name == "layer4"
    layer = dict(model.named_modules())[name]
    x = torch.stack([build_datasets(trained.config.dataset).val[i][0] for i in range(4)])
    target = model(x).argmax(1)
    maps = gradcam(model, layer, x, target)
    saved = {}
    handle = layer.register_forward_hook(lambda _m, _i, out: saved.update(a=out))
    scores = model(x).gather(1, target[:, None]).sum()
    handle.remove()
    grads = torch.autograd.grad(scores, saved["a"])[0]
    cam = torch.relu((grads.mean((2, 3), keepdim=True) * saved["a"]).sum(1, keepdim=True))
    cam = torch.nn.functional.interpolate(cam, size=x.shape[-2:], mode="bilinear")[:, 0]
    flat = cam.flatten(1)
    span = (flat.max(1).values - flat.min(1).values).clamp_min(1e-12)
    cam = (cam - flat.min(1).values[:, None, None]) / span[:, None, None]
    assert saved["a"].shape[-1] > 1  # a real map, not one pixel
    assert (maps.flatten(1).max(1).values > 0.99).all()  # every map localises something
    torch.testing.assert_close(maps, cam.detach(), atol=1e-4, rtol=1e-3)


def test_unknown_model_family_and_layer_are_clear_errors(run_dir, capsys):
    vit = create_model(ModelConfig(name="vit_tiny_patch16_224"), 10)
    with pytest.raises(AstrayError, match="no target layer for model 'vit_tiny_patch16_224'"):
        target_layer_name("vit_tiny_patch16_224", vit)
    assert main([str(run_dir), "--layer", "layer9"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--layer 'layer9'" in err and "layer4" in err

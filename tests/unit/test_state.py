"""Checkpoints load onto the CPU whatever device their tensors were saved from."""

from __future__ import annotations

import contextlib

import pytest
import torch

from astray.engine.state import load_checkpoint, rng_state, save_checkpoint, set_rng_state

FAKE = "astrayfakegpu"
_tagging = False


def _tagger(storage):
    return FAKE if _tagging else None


def _restore(storage, location):
    if location == FAKE:
        raise RuntimeError(f"device {FAKE} is not available on this machine")
    return None


torch.serialization.register_package(5, _tagger, _restore)


@contextlib.contextmanager
def _saved_on_another_device():
    """torch.save tags every storage with a device this machine lacks, as a checkpoint
    written on a GPU node and read elsewhere (or read back with map_location=device)."""
    global _tagging
    _tagging = True
    try:
        yield
    finally:
        _tagging = False


def test_checkpoint_from_another_device_loads_onto_the_cpu_and_restores_rng(tmp_path):
    path = tmp_path / "last.pt"
    state = {"rng": rng_state(), "model": {"w": torch.randn(3)}, "epoch": 2}
    with _saved_on_another_device():
        save_checkpoint(state, path)
    with pytest.raises(RuntimeError, match=FAKE):
        torch.load(path, weights_only=True)  # the file really names another device
    ckpt = load_checkpoint(path)
    assert ckpt["model"]["w"].device.type == "cpu" and ckpt["rng"]["torch"].device.type == "cpu"
    torch.testing.assert_close(ckpt["model"]["w"], state["model"]["w"])
    set_rng_state(ckpt["rng"])  # raised when the RNG state landed on the training device
    expected = torch.rand(4)
    set_rng_state(ckpt["rng"])
    assert torch.equal(torch.rand(4), expected)


def test_save_is_atomic_and_leaves_no_temporary_file(tmp_path):
    save_checkpoint({"epoch": 1}, tmp_path / "last.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]

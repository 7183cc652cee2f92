"""Datasets: synthetic, digits, ImageFolder and local Hugging Face data, all offline."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from astray.config.run import DatasetConfig
from astray.engine.data import build_datasets
from astray.errors import ConfigError

# ---------------------------------------------------------------------------- synthetic


def test_synthetic_items_are_image_label_index():
    cfg = DatasetConfig(type="synthetic", num_classes=4, image_size=16, synthetic_samples=64)
    splits = build_datasets(cfg)
    assert splits.num_classes == 4
    assert len(splits.train) + len(splits.val) + len(splits.test) == 64
    for ds in (splits.train, splits.val, splits.test):
        for position in range(len(ds)):
            image, label, index = ds[position]
            assert isinstance(image, torch.Tensor) and image.shape == (3, 16, 16)
            assert image.dtype == torch.float32
            assert type(label) is int and 0 <= label < 4
            assert type(index) is int and index == position


def test_synthetic_is_deterministic_for_seed():
    cfg = DatasetConfig(type="synthetic", num_classes=3, image_size=8, synthetic_samples=32, seed=4)
    a, b = build_datasets(cfg), build_datasets(cfg)
    for i in range(len(a.train)):
        img_a, y_a, _ = a.train[i]
        img_b, y_b, _ = b.train[i]
        assert torch.equal(img_a, img_b) and y_a == y_b
    other = build_datasets(DatasetConfig(type="synthetic", num_classes=3, image_size=8,
                                         synthetic_samples=32, seed=5))
    assert not torch.equal(a.train[0][0], other.train[0][0])


def _stack(ds):
    images, labels = zip(*[(img, y) for img, y, _ in (ds[i] for i in range(len(ds)))])
    return torch.stack(images), torch.tensor(labels)


def test_synthetic_is_learnable_by_nearest_class_mean():
    cfg = DatasetConfig(type="synthetic")  # defaults: 10 classes, 32 px, 512 samples
    splits = build_datasets(cfg)
    x_train, y_train = _stack(splits.train)
    x_val, y_val = _stack(splits.val)
    means = torch.stack([x_train[y_train == c].mean(0) for c in range(splits.num_classes)])
    dist = torch.cdist(x_val.flatten(1), means.flatten(1))
    accuracy = (dist.argmin(1) == y_val).float().mean().item()
    assert accuracy > 0.8


# ------------------------------------------------------------------------------- digits


def _digits(**kw):
    return build_datasets(DatasetConfig(type="digits", augment=False, **kw))


def test_digits_split_deterministic_stratified_and_complete():
    a, b = _digits(seed=0), _digits(seed=0)
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    assert a.num_classes == 10
    assert abs(len(a.test) / 1797 - 0.2) < 0.01  # test held out first,
    assert abs(len(a.val) / (1797 - len(a.test)) - 0.2) < 0.01  # then validation carved from the rest
    for split in ("val", "test"):
        x_a, y_a = _stack(getattr(a, split))
        x_b, y_b = _stack(getattr(b, split))
        assert torch.equal(x_a, x_b) and torch.equal(y_a, y_b)
        assert set(y_a.tolist()) == set(range(10))  # every class in each held-out split
        assert int(torch.bincount(y_a, minlength=10).min()) >= 25  # stratified: ~16-20% of each class
    assert torch.equal(_stack(a.train)[1], _stack(b.train)[1])

    image, label, index = a.train[5]
    assert image.shape == (3, 32, 32) and type(label) is int and index == 5


def test_digits_split_changes_with_seed():
    x0, _ = _stack(_digits(seed=0).val)
    x1, _ = _stack(_digits(seed=1).val)
    assert not torch.equal(x0, x1)


def test_digits_train_val_and_test_disjoint():
    splits = _digits(image_size=8)
    x_train, _ = _stack(splits.train)
    # at 8 px the images are the originals; no held-out image is a training image
    # (digits has a handful of exact duplicates, so compare counts loosely)
    train_set = {tuple(x.flatten().tolist()) for x in x_train}
    val_set = {tuple(x.flatten().tolist()) for x in _stack(splits.val)[0]}
    for held_out in (splits.val, splits.test):
        overlap = sum(tuple(x.flatten().tolist()) in train_set for x in _stack(held_out)[0])
        assert overlap <= 5
    assert sum(tuple(x.flatten().tolist()) in val_set for x in _stack(splits.test)[0]) <= 5


def test_digits_wrong_num_classes():
    with pytest.raises(ConfigError) as info:
        _digits(num_classes=5)
    assert "dataset.num_classes" in str(info.value)
    assert "\n" not in str(info.value)


def test_digits_augment_keeps_shape():
    torch.manual_seed(0)
    splits = build_datasets(DatasetConfig(type="digits", augment=True, image_size=24))
    image, label, index = splits.train[3]
    assert image.shape == (3, 24, 24) and index == 3


# ------------------------------------------------------------------------- ImageFolder

CLASSES = ["cat", "dog", "emu"]


def _image(color: int, size: tuple[int, int] = (40, 30)) -> Image.Image:
    return Image.new("RGB", size, (color, 255 - color, (color * 7) % 256))


def _folder_tree(root: Path, per_class: dict[str, int], classes=CLASSES) -> Path:
    for c, name in enumerate(classes):
        d = root / name
        d.mkdir(parents=True)
        for i in range(per_class[name]):
            _image(40 * c + i).save(d / f"{i}.png")
    return root


@pytest.fixture
def folder_dirs(tmp_path):
    train = _folder_tree(tmp_path / "train", {"cat": 4, "dog": 3, "emu": 5})
    val = _folder_tree(tmp_path / "val", {"cat": 2, "dog": 2, "emu": 1})
    return train, val


@pytest.mark.parametrize("augment", [False, True])
def test_image_folder_loads(folder_dirs, augment):
    train, val = folder_dirs
    cfg = DatasetConfig(type="folder", train_dir=str(train), val_dir=str(val), num_classes=3,
                        image_size=24, augment=augment)
    splits = build_datasets(cfg)
    # validation carved from train_dir (one of each class at 0.2), val_dir is the test split
    assert (len(splits.train), len(splits.val), len(splits.test), splits.num_classes) == (9, 3, 5, 3)
    train_labels = [splits.train[i][1] for i in range(9)]
    assert sorted(train_labels) == [0] * 3 + [1] * 2 + [2] * 4
    assert sorted(splits.val[i][1] for i in range(3)) == [0, 1, 2]
    assert sorted(splits.test[i][1] for i in range(5)) == [0, 0, 1, 1, 2]
    for ds in (splits.train, splits.val, splits.test):
        image, label, index = ds[1]
        assert image.shape == (3, 24, 24) and image.dtype == torch.float32
        assert index == 1


def test_image_folder_grayscale_becomes_rgb(tmp_path):
    for split in ("train", "val"):
        for name in ("a", "b"):
            d = tmp_path / split / name
            d.mkdir(parents=True)
            for i in range(2):
                Image.new("L", (20, 20), 128).save(d / f"x{i}.png")
    cfg = DatasetConfig(type="folder", train_dir=str(tmp_path / "train"), val_dir=str(tmp_path / "val"),
                        num_classes=2, image_size=16)
    assert build_datasets(cfg).test[0][0].shape == (3, 16, 16)


def test_image_folder_num_classes_mismatch(folder_dirs):
    train, val = folder_dirs
    cfg = DatasetConfig(type="folder", train_dir=str(train), val_dir=str(val), num_classes=10)
    with pytest.raises(ConfigError) as info:
        build_datasets(cfg)
    message = str(info.value)
    assert "dataset.num_classes" in message and "\n" not in message


def test_image_folder_val_classes_differ(tmp_path):
    train = _folder_tree(tmp_path / "train", {"cat": 1, "dog": 1, "emu": 1})
    val = _folder_tree(tmp_path / "val", {"cat": 1, "dog": 1, "fox": 1}, classes=["cat", "dog", "fox"])
    cfg = DatasetConfig(type="folder", train_dir=str(train), val_dir=str(val), num_classes=3)
    with pytest.raises(ConfigError) as info:
        build_datasets(cfg)
    assert "dataset.val_dir" in str(info.value) and "\n" not in str(info.value)


def test_image_folder_without_images(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    cfg = DatasetConfig(type="folder", train_dir=str(tmp_path / "train"), val_dir=str(tmp_path / "val"),
                        num_classes=3)
    with pytest.raises(ConfigError) as info:
        build_datasets(cfg)
    assert "dataset.train_dir" in str(info.value) and "\n" not in str(info.value)


# ------------------------------------------------------------------------ Hugging Face


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=3)})

    def split(n: int, offset: int) -> datasets.Dataset:
        labels = [i % 3 for i in range(n)]
        images = [_image(17 * i + offset, size=(20 + i, 18)) for i in range(n)]
        return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)

    path = tmp_path_factory.mktemp("hf") / "toy"
    datasets.DatasetDict({"train": split(9, 0), "validation": split(6, 100)}).save_to_disk(str(path))
    return path


def _hf_cfg(path: Path, **kw) -> DatasetConfig:
    args = dict(type="hf", hf_path=str(path), num_classes=3, image_size=16, augment=False)
    args.update(kw)
    return DatasetConfig(**args)


def test_hf_dataset_dict_loads(hf_dir):
    splits = build_datasets(_hf_cfg(hf_dir))
    assert (len(splits.train), len(splits.val), len(splits.test), splits.num_classes) == (6, 3, 6, 3)
    assert sorted(splits.train[i][1] for i in range(6)) == [0, 0, 1, 1, 2, 2]
    assert sorted(splits.val[i][1] for i in range(3)) == [0, 1, 2]
    image, label, index = splits.test[4]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32
    assert label == 1 and index == 4


def test_hf_custom_split_names(hf_dir):
    splits = build_datasets(_hf_cfg(hf_dir, hf_train_split="validation", hf_val_split="train"))
    assert (len(splits.train) + len(splits.val), len(splits.test)) == (6, 9)


@pytest.mark.parametrize("key, value", [
    ("hf_val_split", "test"),
    ("hf_train_split", "training"),
    ("image_column", "img"),
    ("label_column", "labels"),
])
def test_hf_missing_split_or_column_names_key(hf_dir, key, value):
    with pytest.raises(ConfigError) as info:
        build_datasets(_hf_cfg(hf_dir, **{key: value}))
    message = str(info.value)
    assert f"dataset.{key}" in message and repr(value) in message
    assert "\n" not in message


def test_hf_num_classes_mismatch(hf_dir):
    with pytest.raises(ConfigError) as info:
        build_datasets(_hf_cfg(hf_dir, num_classes=5))
    assert "dataset.num_classes" in str(info.value) and "\n" not in str(info.value)


def test_hf_single_split_dataset_is_rejected(hf_dir, tmp_path):
    import datasets

    single = tmp_path / "single"
    datasets.load_from_disk(str(hf_dir))["train"].save_to_disk(str(single))
    with pytest.raises(ConfigError) as info:
        build_datasets(_hf_cfg(single))
    message = str(info.value)
    assert "dataset.hf_path" in message and str(single) in message
    assert "\n" not in message


# --------------------------------------------------------------------------- transforms by resolution

def _pil(size: int = 28, seed: int = 0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8), mode="L")


@pytest.mark.parametrize("image_size, recipe", [(28, "small"), (32, "small"), (64, "imagenet"), (224, "imagenet")])
def test_auto_transforms_follow_the_resolution(image_size, recipe):
    from astray.engine.data import pick_recipe

    assert pick_recipe(DatasetConfig(image_size=image_size)) == recipe
    assert pick_recipe(DatasetConfig(image_size=image_size, transforms="imagenet")) == "imagenet"


@pytest.mark.parametrize("recipe", ["small", "imagenet"])
@pytest.mark.parametrize("source", [28, 40])
def test_validation_sees_what_non_augmented_training_sees(recipe, source):
    """No zoom or crop that training never saw: the two pipelines give the same tensor."""
    from astray.engine.data import pil_transforms

    train, val, _ = pil_transforms(DatasetConfig(image_size=28, transforms=recipe, augment=False))
    image = _pil(source)
    assert torch.equal(train(image), val(image))
    assert val(image).shape == (3, 28, 28)


def test_small_images_are_augmented_by_pad_and_crop_not_resized_crops():
    from torchvision import transforms as T

    from astray.engine.data import pil_transforms

    train, _, what = pil_transforms(DatasetConfig(image_size=28, augment=True, hflip=False))
    kinds = [type(t) for t in train.transforms]
    assert T.RandomCrop in kinds and T.RandomResizedCrop not in kinds and T.RandomHorizontalFlip not in kinds
    assert "pad 3 + random crop" in what and "flip" not in what
    torch.manual_seed(0)
    out = train(_pil(28))
    assert out.shape == (3, 28, 28)


# --------------------------------------------------------------------------- Fashion-MNIST

def _write_idx(path, array: np.ndarray, gz: bool) -> None:
    import gzip

    code = {np.uint8: 0x08}[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.tobytes()
    (path.with_name(path.name + ".gz").write_bytes(gzip.compress(data)) if gz else path.write_bytes(data))


@pytest.fixture
def fashion_root(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "fmnist"
    root.mkdir()
    for split, n, gz in (("train", 200, True), ("t10k", 50, False)):
        labels = np.arange(n, dtype=np.uint8) % 10
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        images[:, :4, :4] = labels[:, None, None] * 25  # a class mark in the corner
        _write_idx(root / f"{split}-images-idx3-ubyte", images, gz)
        _write_idx(root / f"{split}-labels-idx1-ubyte", labels, gz)
    return root


def test_fashion_mnist_reads_idx_files_gzipped_or_not(fashion_root):
    splits = build_datasets(DatasetConfig(type="fashion_mnist", root=str(fashion_root), image_size=28))
    assert (len(splits.train), len(splits.val), len(splits.test), splits.num_classes) == (160, 40, 50, 10)
    x, y, i = splits.test[13]
    assert x.shape == (3, 28, 28) and y == 3 and i == 13
    assert splits.test.base.classes[0] == "T-shirt/top"
    assert "small" in splits.preprocessing


def test_fashion_mnist_train_subset_is_stratified_and_seeded(fashion_root):
    cfg = dict(type="fashion_mnist", root=str(fashion_root), image_size=28, train_subset=100)
    a = build_datasets(DatasetConfig(**cfg, seed=1)).train.base
    b = build_datasets(DatasetConfig(**cfg, seed=1)).train.base
    c = build_datasets(DatasetConfig(**cfg, seed=2)).train.base
    assert len(a) == 100 and np.bincount(a.dataset.labels[a.indices], minlength=10).tolist() == [10] * 10
    assert a.indices == b.indices and a.indices != c.indices


def test_fashion_mnist_validation_is_carved_first_and_never_trained(fashion_root):
    """The validation images are the same with or without a train_subset, and none of
    them is trained on."""
    cfg = dict(type="fashion_mnist", root=str(fashion_root), image_size=28, val_size=30, seed=3)
    whole, subset = build_datasets(DatasetConfig(**cfg)), build_datasets(DatasetConfig(**cfg, train_subset=100))
    assert whole.val.base.indices == subset.val.base.indices and len(whole.val) == 30
    assert not set(whole.val.base.indices) & set(whole.train.base.indices)
    assert not set(subset.val.base.indices) & set(subset.train.base.indices)
    assert len(whole.train) == 170 and len(subset.train) == 100


def test_val_size_leaving_no_training_data_is_one_line(fashion_root):
    with pytest.raises(ConfigError) as info:
        build_datasets(DatasetConfig(type="fashion_mnist", root=str(fashion_root), val_size=200))
    assert "dataset.val_size=200" in str(info.value) and "\n" not in str(info.value)


def test_fashion_mnist_missing_root_or_file_is_one_line(fashion_root, tmp_path):
    with pytest.raises(ConfigError) as info:
        DatasetConfig(type="fashion_mnist", root=str(tmp_path / "nowhere"))
    assert "nowhere" in str(info.value) and "apt-get install dataset-fashion-mnist" in str(info.value)
    (fashion_root / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(ConfigError, match="t10k-labels-idx1-ubyte"):
        build_datasets(DatasetConfig(type="fashion_mnist", root=str(fashion_root)))


def test_fashion_mnist_rejects_a_file_that_is_not_idx(fashion_root):
    (fashion_root / "t10k-images-idx3-ubyte").write_bytes(b"not an idx file at all")
    with pytest.raises(ConfigError, match="not an IDX file"):
        build_datasets(DatasetConfig(type="fashion_mnist", root=str(fashion_root)))


REAL_FASHION = "/usr/share/datasets/fashion-mnist"


@pytest.mark.skipif(not os.path.isdir(REAL_FASHION),
                    reason=f"{REAL_FASHION} is absent: apt-get install dataset-fashion-mnist installs the real files")
def test_real_fashion_mnist_files():
    splits = build_datasets(DatasetConfig(type="fashion_mnist", image_size=28))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (48000, 12000, 10000)
    assert np.bincount(splits.test.base.labels).tolist() == [1000] * 10
    assert np.bincount(splits.val.base.dataset.labels[splits.val.base.indices]).tolist() == [1200] * 10

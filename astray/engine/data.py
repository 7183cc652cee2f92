"""Datasets: ImageFolder, local Hugging Face datasets, the embedded digits, synthetic.

Every sample comes back as ``(image, label, index)``: the dataset index is what
per-sample state (the stale score table, loss weights) is keyed by.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T
from torchvision.datasets import ImageFolder

from astray.config.run import DatasetConfig
from astray.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class IndexedDataset(Dataset):
    """Wrap a ``(image, label)`` dataset so items also carry their index."""

    def __init__(self, base: Any, transform: Any = None) -> None:
        self.base = base
        self.transform = transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        image, label = self.base[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(label), index


class TensorImages(Dataset):
    """In-memory float images ``(N, 3, H, W)`` with integer labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return self.labels.numel()

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])


@dataclass
class DataSplits:
    train: IndexedDataset
    val: IndexedDataset
    num_classes: int


def _to_rgb(image: Any) -> Any:
    return image.convert("RGB")


def pil_transforms(image_size: int, augment: bool) -> tuple[Any, Any]:
    """Standard ImageNet-style train and validation transforms for PIL images."""
    normalize = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    to_rgb = T.Lambda(_to_rgb)
    if augment:
        train = T.Compose([to_rgb, T.RandomResizedCrop(image_size, antialias=True),
                           T.RandomHorizontalFlip(), T.ToTensor(), normalize])
    else:
        train = T.Compose([to_rgb, T.Resize(image_size, antialias=True), T.CenterCrop(image_size),
                           T.ToTensor(), normalize])
    val = T.Compose([to_rgb, T.Resize(int(round(image_size / 0.875)), antialias=True),
                     T.CenterCrop(image_size), T.ToTensor(), normalize])
    return train, val


def _stratified_split(labels: torch.Tensor, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic per-class split: the same seed gives the same split everywhere."""
    gen = torch.Generator().manual_seed(seed)
    train, val = [], []
    for c in torch.unique(labels):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        n_val = max(1, int(round(val_fraction * idx.numel())))
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return torch.cat(train).sort().values, torch.cat(val).sort().values


def _digits(cfg: DatasetConfig) -> DataSplits:
    from sklearn.datasets import load_digits  # ~1 s to import; only this dataset needs scikit-learn

    if cfg.num_classes != 10:
        raise ConfigError(f"dataset.num_classes={cfg.num_classes} but digits has 10 classes; set 10")
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N,1,8,8) in [0,1]
    images = F.interpolate(images, size=(cfg.image_size, cfg.image_size), mode="bilinear", align_corners=False)
    images = ((images - 0.5) / 0.5).expand(-1, 3, -1, -1).contiguous()
    labels = torch.tensor(digits.target, dtype=torch.int64)
    train_idx, val_idx = _stratified_split(labels, cfg.val_fraction, cfg.seed)
    # Digits are not mirror-symmetric: augment with small shifts, rotations and scales only.
    augment = T.RandomAffine(degrees=8, translate=(0.08, 0.08), scale=(0.9, 1.1), fill=-1.0) if cfg.augment else None
    return DataSplits(
        IndexedDataset(TensorImages(images[train_idx], labels[train_idx]), augment),
        IndexedDataset(TensorImages(images[val_idx], labels[val_idx])),
        10,
    )


class SyntheticImages(Dataset):
    """Learnable synthetic data: a smooth random template per class plus per-sample noise.

    Images are generated from ``(seed, index)`` on access, so any size fits in memory
    and every worker and rank sees the same pixels.
    """

    def __init__(self, n: int, num_classes: int, image_size: int, seed: int, noise: float = 0.8) -> None:
        gen = torch.Generator().manual_seed(seed)
        coarse = torch.randn(num_classes, 3, 4, 4, generator=gen)
        self.templates = F.interpolate(coarse, size=(image_size, image_size), mode="bilinear", align_corners=False)
        self.labels = torch.randint(0, num_classes, (n,), generator=gen)
        self.seed = seed
        self.noise = noise

    def __len__(self) -> int:
        return self.labels.numel()

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        label = int(self.labels[index])
        gen = torch.Generator().manual_seed(self.seed * 7919 + index + 1)
        noise = torch.randn(self.templates.shape[1:], generator=gen)
        return self.templates[label] + self.noise * noise, label


def _synthetic(cfg: DatasetConfig) -> DataSplits:
    full = SyntheticImages(cfg.synthetic_samples, cfg.num_classes, cfg.image_size, cfg.seed)
    train_idx, val_idx = _stratified_split(full.labels, cfg.val_fraction, cfg.seed)
    sub = torch.utils.data.Subset
    return DataSplits(IndexedDataset(sub(full, train_idx.tolist())), IndexedDataset(sub(full, val_idx.tolist())),
                      cfg.num_classes)


def _folder(cfg: DatasetConfig) -> DataSplits:
    train_tf, val_tf = pil_transforms(cfg.image_size, cfg.augment)
    try:
        train = ImageFolder(cfg.train_dir)
        val = ImageFolder(cfg.val_dir)
    except (FileNotFoundError, OSError) as exc:
        raise ConfigError(f"dataset.train_dir/val_dir: not an ImageFolder tree ({exc})") from None
    if len(train.classes) != cfg.num_classes:
        raise ConfigError(f"dataset.num_classes={cfg.num_classes} but dataset.train_dir={cfg.train_dir!r} "
                          f"has {len(train.classes)} class folders")
    if val.classes != train.classes:
        raise ConfigError(f"dataset.val_dir={cfg.val_dir!r} class folders {val.classes} differ from "
                          f"dataset.train_dir's {train.classes}")
    return DataSplits(IndexedDataset(train, train_tf), IndexedDataset(val, val_tf), cfg.num_classes)


class HFImages(Dataset):
    def __init__(self, ds: Any, image_column: str, label_column: str) -> None:
        self.ds = ds
        self.image_column = image_column
        self.label_column = label_column

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        row = self.ds[index]
        image = row[self.image_column]
        if not isinstance(image, Image.Image):
            image = Image.fromarray(np.asarray(image))
        return image, int(row[self.label_column])


def _hf(cfg: DatasetConfig) -> DataSplits:
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import datasets  # ~1 s to import, and it reads the offline switches above when imported

    path = Path(cfg.hf_path)
    try:
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            ds = datasets.load_from_disk(str(path))
        else:
            ds = datasets.load_dataset(str(path))
    except Exception as exc:  # datasets raises many types; the user needs the path and the reason
        raise ConfigError(f"dataset.hf_path={cfg.hf_path!r}: cannot load a local dataset "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(ds, datasets.DatasetDict):
        raise ConfigError(f"dataset.hf_path={cfg.hf_path!r} holds one split; need a DatasetDict with "
                          f"{cfg.hf_train_split!r} and {cfg.hf_val_split!r}")
    for key in ("hf_train_split", "hf_val_split"):
        split = getattr(cfg, key)
        if split not in ds:
            raise ConfigError(f"dataset.{key}={split!r} not in dataset; splits: {', '.join(ds)}")
    columns = ds[cfg.hf_train_split].column_names
    for key in ("image_column", "label_column"):
        col = getattr(cfg, key)
        if col not in columns:
            raise ConfigError(f"dataset.{key}={col!r} not in dataset; columns: {', '.join(columns)}")
    feature = ds[cfg.hf_train_split].features[cfg.label_column]
    n_classes = getattr(feature, "num_classes", None)
    if n_classes is not None and n_classes != cfg.num_classes:
        raise ConfigError(f"dataset.num_classes={cfg.num_classes} but the label column has {n_classes} classes")
    train_tf, val_tf = pil_transforms(cfg.image_size, cfg.augment)
    return DataSplits(
        IndexedDataset(HFImages(ds[cfg.hf_train_split], cfg.image_column, cfg.label_column), train_tf),
        IndexedDataset(HFImages(ds[cfg.hf_val_split], cfg.image_column, cfg.label_column), val_tf),
        cfg.num_classes,
    )


DATASETS = {"digits": _digits, "synthetic": _synthetic, "folder": _folder, "hf": _hf}


def build_datasets(cfg: DatasetConfig) -> DataSplits:
    """Build train and validation datasets for ``dataset.type``."""
    factory = DATASETS.get(cfg.type)
    if factory is None:
        raise ConfigError(f"dataset.type={cfg.type!r} is not allowed; choose one of {', '.join(DATASETS)}")
    return factory(cfg)

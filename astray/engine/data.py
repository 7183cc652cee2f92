"""Datasets: ImageFolder, local Hugging Face datasets, Fashion-MNIST's IDX files, the
embedded digits, synthetic.

Every dataset type gives three splits (docs/design.md §9): **train**; **validation**,
carved from the training data (stratified, ``dataset.val_fraction`` or
``dataset.val_size``, fixed by ``dataset.seed`` and so the same for every seed and
configuration of a sweep), which alone selects epochs, checkpoints and what a search is
told; and **test**, the dataset's own held-out split (Fashion-MNIST's test files,
``val_dir``, ``hf_val_split``; a stratified ``dataset.test_fraction`` for digits and
synthetic data), evaluated and stored but never used to choose anything.

Every sample comes back as ``(image, label, index)``: the dataset index is what
per-sample state (the stale score table, loss weights) is keyed by.

``dataset.label_noise`` flips a seeded share of the training labels and of the
validation split's (a real noisy dataset validates on noisy labels too), never the test
split's (docs/design.md §11). :class:`LabelFlips` says which were flipped.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset, Sampler
from torchvision import transforms as T
from torchvision.datasets import ImageFolder

from astray.config.run import DatasetConfig, LabelNoiseConfig
from astray.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SMALL_IMAGE_LIMIT = 64  # pixels: below this, transforms=auto takes the small-image recipe


class IndexedDataset(Dataset):
    """Wrap a ``(image, label)`` dataset so items also carry their index."""

    def __init__(self, base: Any, transform: Any = None) -> None:
        self.base = base
        self.transform = transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        if isinstance(key, tuple):
            # (index, seed) from a PlanSampler feeding loader workers: the sample's
            # augmentation is drawn from its own seed, whichever worker loads it.
            index, seed = key
            torch.manual_seed(seed)
        else:
            index = key
        image, label = self.base[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(label), index


class PlanSampler(Sampler):
    """The run's one training sampler. Each epoch the trainer hands it that epoch's plan
    (this rank's share, in order), so the DataLoader and its worker processes persist
    across epochs: stale, random and infobatch plans change the list, not the loader.

    With loader workers, it yields ``(index, seed)``: one seed per epoch, drawn from the
    trainer's RNG stream, plus the sample's position. Augmentation then does not depend
    on which worker loads a sample or on how long the workers have lived, so a resumed
    run draws what an uninterrupted one draws. Without workers, augmentation runs in the
    training process on its RNG stream, as before, and it yields plain indices.
    """

    def __init__(self, seeded: bool) -> None:
        self.seeded = seeded
        self.indices: list[int] = []
        self.seed = 0

    def set_plan(self, indices: list[int]) -> None:
        self.indices = indices
        if self.seeded:
            self.seed = int(torch.randint(0, 2 ** 62, ()))

    def __iter__(self):
        if not self.seeded:
            return iter(self.indices)
        return iter([(i, self.seed + pos) for pos, i in enumerate(self.indices)])

    def __len__(self) -> int:
        return len(self.indices)


class TensorImages(Dataset):
    """In-memory float images ``(N, 3, H, W)`` with integer labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return self.labels.numel()

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])


@dataclass(frozen=True)
class LabelFlips:
    """The labels ``dataset.label_noise`` flipped in one split: positions in the split
    (its dataset indices), the true label and the label training sees."""

    index: torch.Tensor  # int64, sorted
    label: torch.Tensor  # int64, the true label
    noisy_label: torch.Tensor  # int64, never equal to ``label``

    def mask(self, size: int) -> torch.Tensor:
        """A bool per sample of a split of ``size``: True where the label was flipped."""
        out = torch.zeros(size, dtype=torch.bool)
        out[self.index] = True
        return out


class NoisyLabels(Dataset):
    """A ``(image, label)`` dataset whose labels are replaced by ``labels``."""

    def __init__(self, base: Any, labels: torch.Tensor) -> None:
        self.base, self.labels = base, labels

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return self.base[index][0], int(self.labels[index])


def flip_labels(labels: torch.Tensor, num_classes: int, noise: LabelNoiseConfig,
                stream: int) -> tuple[torch.Tensor, LabelFlips]:
    """Exactly ``round(rate * n)`` labels flipped, which and to what fixed by
    (``noise.seed``, ``stream``): ``symmetric`` moves a label to one of the other classes
    uniformly, ``pairs`` moves class c to c + 1 (mod C), the confusable-neighbour noise of
    Han et al. (2018). Returns the noisy labels and the flips."""
    n = labels.numel()
    gen = torch.Generator().manual_seed(noise.seed * 1_000_003 + stream)
    index = torch.randperm(n, generator=gen)[: round(noise.rate * n)].sort().values
    true = labels[index]
    if noise.kind == "pairs":
        flipped = (true + 1) % num_classes
    else:
        flipped = (true + torch.randint(1, num_classes, (index.numel(),), generator=gen)) % num_classes
    noisy = labels.clone()
    noisy[index] = flipped
    return noisy, LabelFlips(index, true, flipped)


@dataclass
class DataSplits:
    train: IndexedDataset
    val: IndexedDataset  # carved from the training data: selection uses it alone
    test: IndexedDataset  # held out: evaluated and stored, never used to select
    num_classes: int
    preprocessing: str = ""  # what the images go through, for the run's first line
    flips: dict[str, LabelFlips] = field(default_factory=dict)  # "train", "val": dataset.label_noise's flips

    def noisy_mask(self) -> torch.Tensor | None:
        """True per training sample whose label was flipped; None without label noise."""
        return self.flips["train"].mask(len(self.train)) if "train" in self.flips else None


def _to_rgb(image: Any) -> Any:
    return image.convert("RGB")


def pick_recipe(cfg: DatasetConfig) -> str:
    """``small`` below SMALL_IMAGE_LIMIT pixels, ``imagenet`` above, unless the config names one."""
    if cfg.transforms != "auto":
        return cfg.transforms
    return "small" if cfg.image_size < SMALL_IMAGE_LIMIT else "imagenet"


def pil_transforms(cfg: DatasetConfig) -> tuple[Any, Any, str]:
    """Train and validation transforms for PIL images, and a one-line description.

    ``small`` (CIFAR-style): the image is resized to ``image_size``; augmentation pads by
    an eighth of the size and crops back at random. ``imagenet``: augmentation is a
    random resized crop; validation resizes to ``image_size / 0.875`` and crops the
    centre. Either way, non-augmented training sees exactly the validation framing: a
    zoom at validation that training never saw costs accuracy.
    """
    size, recipe = cfg.image_size, pick_recipe(cfg)
    to_rgb, normalize = T.Lambda(_to_rgb), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    flip = [T.RandomHorizontalFlip()] if cfg.hflip else []
    if recipe == "small":
        pad = max(1, size // 8)
        frame = [to_rgb, T.Resize((size, size), antialias=True)]
        augment = frame + [T.RandomCrop(size, padding=pad)] + flip
        parts = [f"small: resize to {size} px"] + ([f"pad {pad} + random crop"] if cfg.augment else [])
    else:
        resize = int(round(size / 0.875))
        frame = [to_rgb, T.Resize(resize, antialias=True), T.CenterCrop(size)]
        augment = [to_rgb, T.RandomResizedCrop(size, antialias=True)] + flip
        parts = [f"imagenet: resize {resize} + centre crop {size}"] + (["random resized crop"] if cfg.augment else [])
    what = ", ".join(parts + (["flip"] if cfg.augment and cfg.hflip else []))
    val = T.Compose(frame + [T.ToTensor(), normalize])
    train = T.Compose(augment + [T.ToTensor(), normalize]) if cfg.augment else val
    return train, val, what


def _stratified_split(labels: torch.Tensor, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic per-class split: the same seed gives the same split everywhere."""
    gen = torch.Generator().manual_seed(seed)
    train, val = [], []
    for c in torch.unique(labels):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        # At least one held out, and at least one kept where a class has two or more.
        n_val = min(max(1, int(round(val_fraction * idx.numel()))), max(idx.numel() - 1, 0))
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return torch.cat(train).sort().values, torch.cat(val).sort().values


def _stratified_folds(labels: torch.Tensor, folds: int, seed: int) -> list[torch.Tensor]:
    """``folds`` disjoint index sets covering every sample, each class dealt round the
    folds in a seeded order (so every fold holds each class's share, within one)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + 17)
    parts: list[list[torch.Tensor]] = [[] for _ in range(folds)]
    start = 0
    for c in torch.unique(labels):
        idx = torch.nonzero(labels == c).flatten()
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        for k in range(folds):
            parts[(k + start) % folds].append(idx[k::folds])
        start += idx.numel()  # the next class starts where this one's remainder left off
    return [torch.cat(p).sort().values for p in parts]


def _labels_of(base: Any) -> torch.Tensor:
    """Every label of a ``(image, label)`` dataset, without decoding its images where the
    dataset keeps them apart (ImageFolder targets, in-memory labels, a Hugging Face column)."""
    for attr in ("targets", "labels"):
        if hasattr(base, attr):
            value = getattr(base, attr)
            if isinstance(value, torch.Tensor):
                return value.to(torch.int64)
            return torch.tensor(np.array(value), dtype=torch.int64)
    if isinstance(base, HFImages):
        return torch.as_tensor(list(base.ds[base.label_column]), dtype=torch.int64)
    if isinstance(base, torch.utils.data.Subset):
        return _labels_of(base.dataset)[torch.as_tensor(base.indices, dtype=torch.int64)]
    return torch.tensor([int(base[i][1]) for i in range(len(base))], dtype=torch.int64)


def carve_validation(base: Any, cfg: DatasetConfig, train_tf: Any, val_tf: Any,
                     labels: torch.Tensor | None = None) -> tuple[IndexedDataset, IndexedDataset]:
    """Training data split into train and validation, stratified and fixed by ``dataset.seed``
    (never ``training.seed``: every replicate of a sweep validates on the same images).
    ``dataset.val_size`` (a count) overrides ``dataset.val_fraction``."""
    labels = _labels_of(base) if labels is None else labels
    fraction = cfg.val_size / labels.numel() if cfg.val_size else cfg.val_fraction
    if cfg.val_size and cfg.val_size >= labels.numel():
        raise ConfigError(f"dataset.val_size={cfg.val_size} leaves no training data: the training split has "
                          f"{labels.numel()} samples")
    train_idx, val_idx = _stratified_split(labels, fraction, cfg.seed)
    if not val_idx.numel():
        raise ConfigError(f"dataset.val_fraction={cfg.val_fraction:g} carves no validation images from "
                          f"{labels.numel()} training samples (one per class): add data or set dataset.val_size")
    sub = torch.utils.data.Subset
    return (IndexedDataset(sub(base, train_idx.tolist()), train_tf),
            IndexedDataset(sub(base, val_idx.tolist()), val_tf))


def _digits(cfg: DatasetConfig) -> DataSplits:
    from sklearn.datasets import load_digits  # ~1 s to import; only this dataset needs scikit-learn

    if cfg.num_classes != 10:
        raise ConfigError(f"dataset.num_classes={cfg.num_classes} but digits has 10 classes; set 10")
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N,1,8,8) in [0,1]
    images = F.interpolate(images, size=(cfg.image_size, cfg.image_size), mode="bilinear", align_corners=False)
    images = ((images - 0.5) / 0.5).expand(-1, 3, -1, -1).contiguous()
    labels = torch.tensor(digits.target, dtype=torch.int64)
    rest, test_idx = _stratified_split(labels, cfg.test_fraction, cfg.seed + 1)
    # Digits are not mirror-symmetric: augment with small shifts, rotations and scales only.
    augment = T.RandomAffine(degrees=8, translate=(0.08, 0.08), scale=(0.9, 1.1), fill=-1.0) if cfg.augment else None
    train, val = carve_validation(TensorImages(images[rest], labels[rest]), cfg, augment, None)
    return DataSplits(train, val, IndexedDataset(TensorImages(images[test_idx], labels[test_idx])),
                      10, f"digits: 8 px upsampled to {cfg.image_size}" + (", small affine" if cfg.augment else ""))


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
    rest, test_idx = _stratified_split(full.labels, cfg.test_fraction, cfg.seed + 1)
    sub = torch.utils.data.Subset
    train, val = carve_validation(sub(full, rest.tolist()), cfg, None, None, full.labels[rest])
    return DataSplits(train, val, IndexedDataset(sub(full, test_idx.tolist())), cfg.num_classes, "synthetic: none")


def _folder(cfg: DatasetConfig) -> DataSplits:
    train_tf, val_tf, what = pil_transforms(cfg)
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
    train_split, val_split = carve_validation(train, cfg, train_tf, val_tf)
    return DataSplits(train_split, val_split, IndexedDataset(val, val_tf), cfg.num_classes, what)


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
    train_tf, val_tf, what = pil_transforms(cfg)
    train, val = carve_validation(HFImages(ds[cfg.hf_train_split], cfg.image_column, cfg.label_column), cfg,
                                  train_tf, val_tf)
    return DataSplits(train, val, IndexedDataset(HFImages(ds[cfg.hf_val_split], cfg.image_column, cfg.label_column),
                                                 val_tf), cfg.num_classes, what)


# Fashion-MNIST's original files (Zalando's names); each may be gzipped.
FASHION_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                 "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (LeCun's MNIST format), plain or gzipped, as a NumPy array."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ConfigError(f"{str(path)!r} is not an IDX file (bad magic number)")
    dtype, ndim = np.dtype(_IDX_TYPES[raw[2]]), raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    start = 4 + 4 * ndim
    count = int(np.prod(shape)) if shape else 0
    if len(raw) - start < count * dtype.itemsize:
        raise ConfigError(f"{str(path)!r} is truncated: header says {shape}, file holds less")
    return np.frombuffer(raw, dtype=dtype, count=count, offset=start).reshape(shape)


def _idx_path(root: Path, name: str) -> Path:
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"dataset.root={str(root)!r} has no {name} or {name}.gz; Fashion-MNIST is read from "
                      "its original IDX files (apt-get install dataset-fashion-mnist), never downloaded")


class ArrayImages(Dataset):
    """In-memory uint8 grayscale images ``(N, H, W)``, served as PIL images."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, classes: tuple[str, ...]) -> None:
        self.images, self.labels, self.classes = images, labels, list(classes)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        return Image.fromarray(self.images[index], mode="L"), int(self.labels[index])


def stratified_subset(labels: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """``size`` indices (sorted) with each class in its original share, fixed by ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    frac = size / labels.numel()
    parts = []
    for c in torch.unique(labels):
        idx = torch.nonzero(labels == c).flatten()
        parts.append(idx[torch.randperm(idx.numel(), generator=gen)][: max(1, int(round(frac * idx.numel())))])
    return torch.cat(parts).sort().values


def _fashion_mnist(cfg: DatasetConfig) -> DataSplits:
    if cfg.num_classes != 10:
        raise ConfigError(f"dataset.num_classes={cfg.num_classes} but fashion_mnist has 10 classes; set 10")
    root = Path(cfg.root)
    splits = {}
    for split, (images_name, labels_name) in FASHION_FILES.items():
        images, labels = read_idx(_idx_path(root, images_name)), read_idx(_idx_path(root, labels_name))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ConfigError(f"dataset.root={str(root)!r}: {split} images {images.shape} and labels "
                              f"{labels.shape} do not pair up")
        splits[split] = (images, labels)
    train_images, train_labels = splits["train"]
    train_tf, val_tf, what = pil_transforms(cfg)
    # Validation is carved from all 60 000 training images first, so it is the same
    # whatever dataset.train_subset trains on; the subset is drawn from the rest.
    train, val = carve_validation(ArrayImages(train_images, train_labels, FASHION_CLASSES), cfg, train_tf, val_tf)
    if cfg.train_subset:
        rest = torch.as_tensor(train.base.indices)
        if cfg.train_subset > rest.numel():
            raise ConfigError(f"dataset.train_subset={cfg.train_subset} is larger than the {rest.numel()} "
                              f"training images left after the validation split ({len(val)})")
        keep = stratified_subset(torch.from_numpy(train_labels[rest.numpy()].astype(np.int64)), cfg.train_subset,
                                 cfg.seed)
        train = IndexedDataset(torch.utils.data.Subset(train.base.dataset, rest[keep].tolist()), train_tf)
    return DataSplits(train, val, IndexedDataset(ArrayImages(*splits["test"], FASHION_CLASSES), val_tf), 10, what)


DATASETS = {"digits": _digits, "synthetic": _synthetic, "folder": _folder, "hf": _hf,
            "fashion_mnist": _fashion_mnist}


def build_datasets(cfg: DatasetConfig) -> DataSplits:
    """Build the train, validation and test datasets for ``dataset.type``."""
    factory = DATASETS.get(cfg.type)
    if factory is None:
        raise ConfigError(f"dataset.type={cfg.type!r} is not allowed; choose one of {', '.join(DATASETS)}")
    splits = factory(cfg)
    noise = cfg.label_noise
    if noise.rate > 0:
        for stream, name in enumerate(("train", "val")):
            split = getattr(splits, name)
            labels, flips = flip_labels(_labels_of(split.base), splits.num_classes, noise, stream)
            split.base = NoisyLabels(split.base, labels)
            splits.flips[name] = flips
        splits.preprocessing += (f"; label noise {noise.kind} {noise.rate:g}: {len(splits.flips['train'].index)} "
                                 f"train and {len(splits.flips['val'].index)} val labels flipped, test clean")
    return splits

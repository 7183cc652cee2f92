"""Typed run configuration: one dataclass per YAML section, validated when built.

A YAML file maps onto :class:`RunConfig`; ``--set dotted.key=value`` overrides are
applied before validation (values are parsed as YAML, so ``0.3``, ``true`` and
``[1, 2]`` mean what they look like). Every error names the dotted key, the bad value
and what is allowed, in one line.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from astray.errors import ConfigError


def _choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of {', '.join(allowed)}")


def _range(key: str, value: float, lo: float | None = None, hi: float | None = None,
           lo_open: bool = False, hi_open: bool = False) -> None:
    ok = True
    if lo is not None:
        ok &= value > lo if lo_open else value >= lo
    if hi is not None:
        ok &= value < hi if hi_open else value <= hi
    if not ok:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        lo_s = "-inf" if lo is None else f"{lo:g}"
        hi_s = "inf" if hi is None else f"{hi:g}"
        raise ConfigError(f"{key}={value!r} is out of range; allowed {left}{lo_s}, {hi_s}{right}")


@dataclass
class ModelConfig:
    name: str = "resnet18"  # any timm model name or torchvision classification model
    pretrained: bool = False  # hub weights need network access
    channels_last: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("model.name='' is empty; give a timm or torchvision model name")


DatasetType = Literal["folder", "hf", "digits", "synthetic"]


@dataclass
class DatasetConfig:
    type: str = "digits"
    train_dir: str | None = None  # folder: ImageFolder root of the training split
    val_dir: str | None = None  # folder: ImageFolder root of the validation split
    hf_path: str | None = None  # hf: a save_to_disk folder or a local dataset script/dir
    hf_train_split: str = "train"
    hf_val_split: str = "validation"
    image_column: str = "image"
    label_column: str = "label"
    num_classes: int = 10
    image_size: int = 32  # pixels, square
    val_fraction: float = 0.2  # digits/synthetic: held-out share, split deterministically
    synthetic_samples: int = 512  # synthetic: training + validation samples in all
    augment: bool = True
    num_workers: int = 0  # DataLoader worker processes per training process
    pin_memory: bool = False
    seed: int = 0  # fixes the digits/synthetic split and synthetic images

    def __post_init__(self) -> None:
        _choice("dataset.type", self.type, ("folder", "hf", "digits", "synthetic"))
        _range("dataset.num_classes", self.num_classes, lo=2)
        _range("dataset.image_size", self.image_size, lo=8, hi=1024)
        _range("dataset.val_fraction", self.val_fraction, lo=0, hi=1, lo_open=True, hi_open=True)
        _range("dataset.synthetic_samples", self.synthetic_samples, lo=16)
        _range("dataset.num_workers", self.num_workers, lo=0)
        if self.type == "folder":
            for key in ("train_dir", "val_dir"):
                path = getattr(self, key)
                if not path:
                    raise ConfigError(f"dataset.{key} is required when dataset.type=folder")
                if not Path(path).is_dir():
                    raise ConfigError(f"dataset.{key}={path!r}: no such directory")
        if self.type == "hf":
            if not self.hf_path:
                raise ConfigError("dataset.hf_path is required when dataset.type=hf")
            if not Path(self.hf_path).exists():
                raise ConfigError(
                    f"dataset.hf_path={self.hf_path!r}: no such path "
                    "(a local dataset folder; astray does not download)")


@dataclass
class ASTConfig:
    strategy: str = "dense"  # dense | reforward | stale
    target_activation: float = 0.3  # share of samples that get a backward pass
    entropy_weight: float = 0.1  # significance = loss + entropy_weight * H / log(C)
    kp: float = 1.0  # proportional gain, log-threshold per unit of activation error
    ki: float = 0.02  # integral gain, same units, per controller update
    ema_alpha: float = 0.3  # weight of the newest activation rate in its EMA
    integral_limit: float = 1.0  # anti-windup clamp on the integral term
    initial_threshold: float = 1.0  # significance units
    min_threshold: float = 1e-6
    max_threshold: float = 1e3
    kp_warmup_epochs: float = 0.0  # ramp kp linearly from 0 over this many epochs
    ki_warmup_epochs: float = 0.0  # ramp ki linearly from 0 over this many epochs
    warmup_epochs: int = 1  # dense epochs first (they calibrate threshold and scores)
    min_active_fraction: float = 0.05  # per-step floor, filled by top-k significance
    stale_keep_prob: float = 0.0  # stale: keep a below-threshold sample with this prob. (weight 1/p)
    final_dense_fraction: float = 0.0  # train dense for this last share of epochs

    def __post_init__(self) -> None:
        _choice("ast.strategy", self.strategy, ("dense", "reforward", "stale"))
        _range("ast.target_activation", self.target_activation, lo=0, hi=1, lo_open=True)
        _range("ast.entropy_weight", self.entropy_weight, lo=0)
        _range("ast.kp", self.kp, lo=0)
        _range("ast.ki", self.ki, lo=0)
        _range("ast.ema_alpha", self.ema_alpha, lo=0, hi=1, lo_open=True)
        _range("ast.integral_limit", self.integral_limit, lo=0)
        _range("ast.initial_threshold", self.initial_threshold, lo=0, lo_open=True)
        _range("ast.min_threshold", self.min_threshold, lo=0, lo_open=True)
        _range("ast.max_threshold", self.max_threshold, lo=self.min_threshold, lo_open=True)
        _range("ast.kp_warmup_epochs", self.kp_warmup_epochs, lo=0)
        _range("ast.ki_warmup_epochs", self.ki_warmup_epochs, lo=0)
        _range("ast.warmup_epochs", self.warmup_epochs, lo=0)
        _range("ast.min_active_fraction", self.min_active_fraction, lo=0, hi=1)
        _range("ast.stale_keep_prob", self.stale_keep_prob, lo=0, hi=1, hi_open=True)
        _range("ast.final_dense_fraction", self.final_dense_fraction, lo=0, hi=1)


@dataclass
class TrainingConfig:
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 2e-3  # per 256 samples of global batch (scaled linearly)
    weight_decay: float = 0.05
    momentum: float = 0.9  # sgd only
    batch_size: int = 64  # per training process
    epochs: int = 5
    lr_warmup_epochs: float = 0.5  # linear warm-up before the cosine decay
    label_smoothing: float = 0.0
    grad_accum_steps: int = 1
    grad_clip: float = 0.0  # max global grad norm; 0 = off
    mixed_precision: str = "none"  # none | bf16 | fp16 (CUDA only; ignored on CPU)
    early_stop_patience: int = 0  # epochs without val_acc gain; 0 = off
    max_minutes: float = 0.0  # wall-clock budget for training; 0 = off
    max_loss: float = 1e4  # mean per-sample loss above this counts as diverged; 0 = only NaN/inf
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch intra-op threads; 0 = torch's default

    def __post_init__(self) -> None:
        _choice("training.optimizer", self.optimizer, ("adamw", "sgd"))
        _range("training.lr", self.lr, lo=0, lo_open=True)
        _range("training.weight_decay", self.weight_decay, lo=0)
        _range("training.momentum", self.momentum, lo=0, hi=1)
        _range("training.batch_size", self.batch_size, lo=2)
        _range("training.epochs", self.epochs, lo=1)
        _range("training.lr_warmup_epochs", self.lr_warmup_epochs, lo=0)
        _range("training.label_smoothing", self.label_smoothing, lo=0, hi=1, hi_open=True)
        _range("training.grad_accum_steps", self.grad_accum_steps, lo=1)
        _range("training.grad_clip", self.grad_clip, lo=0)
        _choice("training.mixed_precision", self.mixed_precision, ("none", "bf16", "fp16"))
        _range("training.early_stop_patience", self.early_stop_patience, lo=0)
        _range("training.max_minutes", self.max_minutes, lo=0)
        _range("training.max_loss", self.max_loss, lo=0)
        _choice("training.device", self.device, ("auto", "cpu", "cuda"))
        _range("training.threads", self.threads, lo=0)


@dataclass
class EnergyConfig:
    meter: str = "auto"  # auto | nvml | rapl | model
    model_watts: float = 65.0  # power per training process assumed by the `model` meter (an estimate)
    subtract_idle: bool = False  # subtract idle power x training seconds (labelled in idle_w)
    idle_seconds: float = 5.0  # how long idle power is measured before training
    device_shared: bool = False  # the metered device also serves other jobs (set by sweeps)

    def __post_init__(self) -> None:
        _choice("energy.meter", self.meter, ("auto", "nvml", "rapl", "model"))
        _range("energy.model_watts", self.model_watts, lo=0, lo_open=True)
        _range("energy.idle_seconds", self.idle_seconds, lo=0, lo_open=True)


@dataclass
class LoggingConfig:
    output_dir: str = "results/runs/run"
    log_every_steps: int = 0  # progress line every N steps inside an epoch; 0 = off

    def __post_init__(self) -> None:
        if not self.output_dir:
            raise ConfigError("logging.output_dir='' is empty; give a directory path")
        _range("logging.log_every_steps", self.log_every_steps, lo=0)


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    ast: ASTConfig = field(default_factory=ASTConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    energy: EnergyConfig = field(default_factory=EnergyConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Sections other commands read (the sweep runner); the training run ignores them.
FOREIGN_SECTIONS: set[str] = {"search", "sweep", "resources"}


def _type_ok(value: Any, hint: Any) -> tuple[bool, Any]:
    """Check ``value`` against a simple type hint; return (ok, coerced value)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            ok, coerced = _type_ok(value, arg)
            if ok:
                return True, coerced
        return False, value
    if hint is type(None):
        return value is None, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        if isinstance(value, str):  # PyYAML reads 1e-3 (no dot) as a string
            try:
                return True, float(value)
            except ValueError:
                pass
        return False, value
    if hint is str:
        return isinstance(value, str), value
    return True, value


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def _unknown(key: str, name: str, allowed: list[str]) -> ConfigError:
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}; allowed: {', '.join(allowed)}")


def _build_section(cls: type, section: str, raw: Any) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{section} must be a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            raise _unknown(f"{section}.{key}", str(key), names)
        ok, coerced = _type_ok(value, hints[key])
        if not ok:
            raise ConfigError(
                f"{section}.{key}={value!r} has the wrong type; expected {_type_name(hints[key])}")
        kwargs[key] = coerced
    return cls(**kwargs)


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r} is not KEY=VALUE (e.g. ast.target_activation=0.3)")
    key, text = item.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"--set key {key!r} is not a dotted section.key (e.g. training.lr=0.01)")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    return parts, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each ``dotted.key=value`` in a nested dict (values parsed as YAML)."""
    for item in overrides:
        parts, value = _parse_override(item)
        node = raw
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return raw


def load_raw(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict, with one-line errors."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r}: no such file")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {str(p)!r}{where}: not valid YAML") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(p)!r}: top level must be a mapping of sections")
    return raw


SECTIONS: dict[str, type] = {
    f.name: f.default_factory  # type: ignore[misc]
    for f in dataclasses.fields(RunConfig)
}


def build_config(raw: dict[str, Any]) -> RunConfig:
    """Validate a nested dict into a :class:`RunConfig`; foreign sections are skipped."""
    allowed = sorted(SECTIONS) + sorted(FOREIGN_SECTIONS)
    for name in raw:
        if name not in SECTIONS and name not in FOREIGN_SECTIONS:
            raise _unknown(str(name), str(name), allowed)
    sections = {name: _build_section(cls, name, raw.get(name)) for name, cls in SECTIONS.items()}
    return RunConfig(**sections)


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Load a YAML file (or defaults when ``path`` is None), apply overrides, validate."""
    raw = load_raw(path) if path is not None else {}
    raw = apply_overrides(raw, list(overrides or []))
    return build_config(raw)


def save_config(cfg: RunConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))

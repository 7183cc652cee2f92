"""Run configuration: one dataclass per YAML section, each validated when built.

Every check raises a one-line ConfigError naming the dotted key, the bad value and what
is allowed. Loading YAML and ``--set`` overrides is ``astray.config.load``'s job.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from astray.config.checks import choice, in_range
from astray.errors import ConfigError


@dataclass
class ModelConfig:
    name: str = "resnet18"  # any timm model name or torchvision classification model
    pretrained: bool = False  # hub weights need network access
    channels_last: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("model.name='' is empty; give a timm or torchvision model name")


DATASET_TYPES = ("folder", "hf", "digits", "synthetic", "fashion_mnist")
NOISE_KINDS = ("symmetric", "pairs")


@dataclass
class LabelNoiseConfig:
    """``dataset.label_noise``: flip a share of the training labels (and of the validation
    split carved from them), never the test split's (docs/design.md §11)."""

    rate: float = 0.0  # share of labels flipped, exactly round(rate * n) per split; 0 = off
    kind: str = "symmetric"  # symmetric: to another class, uniformly | pairs: class c to c + 1 (mod C)
    seed: int = 0  # which labels flip and to what: the same for every training.seed of a sweep

    def __post_init__(self) -> None:
        in_range("dataset.label_noise.rate", self.rate, lo=0, hi=1, hi_open=True)
        choice("dataset.label_noise.kind", self.kind, NOISE_KINDS)
FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"  # where Debian's dataset-fashion-mnist puts it


@dataclass
class DatasetConfig:
    type: str = "digits"
    root: str = FASHION_MNIST_ROOT  # fashion_mnist: folder of the four original IDX files (.gz or not)
    train_subset: int = 0  # fashion_mnist: train on a stratified, seeded subset of this size; 0 = all
    train_dir: str | None = None  # folder: ImageFolder root of the training split
    val_dir: str | None = None  # folder: ImageFolder root of the validation split
    hf_path: str | None = None  # hf: a save_to_disk folder or a local dataset script/dir
    hf_train_split: str = "train"
    hf_val_split: str = "validation"
    image_column: str = "image"
    label_column: str = "label"
    num_classes: int = 10
    image_size: int = 32  # pixels, square
    val_fraction: float = 0.2  # validation share carved from the training data (every type), stratified
    val_size: int = 0  # validation images carved from the training data; 0 = use val_fraction
    test_fraction: float = 0.2  # digits/synthetic: the test share held out first (other types have a test split)
    synthetic_samples: int = 512  # synthetic: training + validation samples in all
    augment: bool = True
    transforms: str = "auto"  # auto | small (pad + random crop, < 64 px) | imagenet (random resized crop)
    hflip: bool = True  # random horizontal flips when augmenting (off when mirrored means another class)
    num_workers: int = 0  # DataLoader worker processes per training process
    pin_memory: bool = False
    seed: int = 0  # fixes the splits (the same for every training.seed) and synthetic images
    label_noise: LabelNoiseConfig = field(default_factory=LabelNoiseConfig)

    def __post_init__(self) -> None:
        choice("dataset.type", self.type, DATASET_TYPES)
        choice("dataset.transforms", self.transforms, ("auto", "small", "imagenet"))
        in_range("dataset.train_subset", self.train_subset, lo=0)
        in_range("dataset.num_classes", self.num_classes, lo=2)
        in_range("dataset.image_size", self.image_size, lo=8, hi=1024)
        in_range("dataset.val_fraction", self.val_fraction, lo=0, hi=1, lo_open=True, hi_open=True)
        in_range("dataset.val_size", self.val_size, lo=0)
        in_range("dataset.test_fraction", self.test_fraction, lo=0, hi=1, lo_open=True, hi_open=True)
        in_range("dataset.synthetic_samples", self.synthetic_samples, lo=16)
        in_range("dataset.num_workers", self.num_workers, lo=0)
        if self.type == "folder":
            for key in ("train_dir", "val_dir"):
                path = getattr(self, key)
                if not path:
                    raise ConfigError(f"dataset.{key} is required when dataset.type=folder")
                if not Path(path).is_dir():
                    raise ConfigError(f"dataset.{key}={path!r}: no such directory")
        if self.type == "fashion_mnist" and not Path(self.root).is_dir():
            raise ConfigError(f"dataset.root={self.root!r}: no such directory; Fashion-MNIST's IDX files are "
                              "read from disk, never downloaded (apt-get install dataset-fashion-mnist puts them "
                              f"in {FASHION_MNIST_ROOT})")
        if self.type == "hf":
            if not self.hf_path:
                raise ConfigError("dataset.hf_path is required when dataset.type=hf")
            if not Path(self.hf_path).exists():
                raise ConfigError(
                    f"dataset.hf_path={self.hf_path!r}: no such path "
                    "(a local dataset folder; astray does not download)")


SIGNIFICANCES = ("loss", "reducible")


@dataclass
class IrreducibleConfig:
    """``ast.irreducible``: the models whose held-out losses ``ast.significance=reducible``
    subtracts (RHO-LOSS, docs/design.md §11). The training split is cut into ``folds``
    stratified parts (fixed by dataset.seed); for each, a model of ``model.name`` trains
    densely on the other parts for ``epochs`` epochs and scores that part once, so every
    sample's irreducible loss comes from a model that never trained on it, and the main
    run still trains on all of the data."""

    folds: int = 2  # 2: the "two halves" variant; more folds train more, bigger models (cost ≈ folds - 1 dense passes per epoch)
    epochs: int = 2  # dense epochs of each irreducible-loss model

    def __post_init__(self) -> None:
        in_range("ast.irreducible.folds", self.folds, lo=2, hi=10)
        in_range("ast.irreducible.epochs", self.epochs, lo=1)


@dataclass
class ASTConfig:
    """The AST loop's shared settings; each sparse method's own are ``ast.<method>``
    (``methods``), typed and validated by the method (``astray.sparse``)."""

    strategy: str = "dense"  # the sparse method (astray.sparse.METHODS)
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
    final_dense_fraction: float = 0.0  # train dense for this last share of epochs
    bn_recalibration_samples: int = 1024  # after each sparse epoch of a method that trains biased batches,
    #                                       re-estimate BatchNorm statistics from this many random training
    #                                       samples; 0 = off
    bn_recalibration_fraction: float = 0.1  # ... but at most this share of the training set
    significance: str = "loss"  # loss | reducible: softplus(loss - irreducible loss) (RHO-LOSS, docs/design.md §11)
    irreducible: IrreducibleConfig = field(default_factory=IrreducibleConfig)  # significance=reducible only
    upper_quantile: float = 1.0  # samples scoring above this quantile of the scores are not trained
    #                              (a band against label noise, docs/design.md §11); 1 = off
    # ast.<method>: that method's settings object; filled by astray.config.load.build_config
    # (every method's, defaults when absent). Not a key of its own.
    methods: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        in_range("ast.target_activation", self.target_activation, lo=0, hi=1, lo_open=True)
        in_range("ast.entropy_weight", self.entropy_weight, lo=0)
        in_range("ast.kp", self.kp, lo=0)
        in_range("ast.ki", self.ki, lo=0)
        in_range("ast.ema_alpha", self.ema_alpha, lo=0, hi=1, lo_open=True)
        in_range("ast.integral_limit", self.integral_limit, lo=0)
        in_range("ast.initial_threshold", self.initial_threshold, lo=0, lo_open=True)
        in_range("ast.min_threshold", self.min_threshold, lo=0, lo_open=True)
        in_range("ast.max_threshold", self.max_threshold, lo=self.min_threshold, lo_open=True)
        in_range("ast.kp_warmup_epochs", self.kp_warmup_epochs, lo=0)
        in_range("ast.ki_warmup_epochs", self.ki_warmup_epochs, lo=0)
        in_range("ast.warmup_epochs", self.warmup_epochs, lo=0)
        in_range("ast.min_active_fraction", self.min_active_fraction, lo=0, hi=1)
        in_range("ast.final_dense_fraction", self.final_dense_fraction, lo=0, hi=1)
        in_range("ast.bn_recalibration_samples", self.bn_recalibration_samples, lo=0)
        in_range("ast.bn_recalibration_fraction", self.bn_recalibration_fraction, lo=0, hi=1)
        choice("ast.significance", self.significance, SIGNIFICANCES)
        in_range("ast.upper_quantile", self.upper_quantile, lo=0, hi=1, lo_open=True)


@dataclass
class TrainingConfig:
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 2e-3  # per 256 samples of global batch (scaled linearly)
    weight_decay: float = 0.05
    momentum: float = 0.9  # sgd only
    batch_size: int = 64  # per training process
    epochs: int = 5
    lr_warmup_epochs: float = 0.5  # linear warm-up first (cosine, step, constant)
    schedule: str = "cosine"  # cosine | step | onecycle | constant: the lr after warm-up, by progress in epochs
    lr_milestones: list = field(default_factory=lambda: [])  # step: epochs at which the lr is multiplied by lr_gamma
    lr_gamma: float = 0.1  # step: the factor at each milestone
    onecycle_pct_start: float = 0.3  # onecycle: share of the epochs spent rising to the peak lr
    onecycle_div_factor: float = 25.0  # onecycle: the lr starts at peak / this
    onecycle_final_div_factor: float = 1e4  # onecycle: ... and ends at start / this
    label_smoothing: float = 0.0
    grad_accum_steps: int = 1
    grad_clip: float = 0.0  # max global grad norm; 0 = off
    mixed_precision: str = "none"  # none | bf16 | fp16 (CUDA only; ignored on CPU)
    early_stop_patience: int = 0  # epochs without val_acc gain; 0 = off
    max_minutes: float = 0.0  # wall-clock budget for training; 0 = off
    max_loss: float = 1e4  # mean per-sample loss above this counts as diverged; 0 = only NaN/inf
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch intra-op threads; 0 = OMP_NUM_THREADS, else the CPUs of the affinity mask / local processes
    compile: bool = False  # torch.compile the model (measured slower on CPU; see the README)

    def __post_init__(self) -> None:
        choice("training.optimizer", self.optimizer, ("adamw", "sgd"))
        in_range("training.lr", self.lr, lo=0, lo_open=True)
        in_range("training.weight_decay", self.weight_decay, lo=0)
        in_range("training.momentum", self.momentum, lo=0, hi=1)
        in_range("training.batch_size", self.batch_size, lo=2)
        in_range("training.epochs", self.epochs, lo=1)
        in_range("training.lr_warmup_epochs", self.lr_warmup_epochs, lo=0)
        choice("training.schedule", self.schedule, ("cosine", "step", "onecycle", "constant"))
        in_range("training.lr_gamma", self.lr_gamma, lo=0, hi=1, lo_open=True)
        in_range("training.onecycle_pct_start", self.onecycle_pct_start, lo=0, hi=1, lo_open=True, hi_open=True)
        in_range("training.onecycle_div_factor", self.onecycle_div_factor, lo=1)
        in_range("training.onecycle_final_div_factor", self.onecycle_final_div_factor, lo=1)
        milestones = self.lr_milestones
        if (not isinstance(milestones, list) or not all(isinstance(m, (int, float)) and not isinstance(m, bool)
                                                        for m in milestones)
                or any(b <= a for a, b in zip(milestones, milestones[1:]))
                or any(not 0 < m < self.epochs for m in milestones)):
            raise ConfigError(f"training.lr_milestones={milestones!r} must be a strictly increasing list of "
                              f"epochs between 0 and training.epochs={self.epochs} (exclusive)")
        if self.schedule == "step" and not milestones:
            raise ConfigError("training.schedule=step needs training.lr_milestones, e.g. [30, 60] "
                              "(the lr is multiplied by training.lr_gamma at each)")
        in_range("training.label_smoothing", self.label_smoothing, lo=0, hi=1, hi_open=True)
        in_range("training.grad_accum_steps", self.grad_accum_steps, lo=1)
        in_range("training.grad_clip", self.grad_clip, lo=0)
        choice("training.mixed_precision", self.mixed_precision, ("none", "bf16", "fp16"))
        in_range("training.early_stop_patience", self.early_stop_patience, lo=0)
        in_range("training.max_minutes", self.max_minutes, lo=0)
        in_range("training.max_loss", self.max_loss, lo=0)
        choice("training.device", self.device, ("auto", "cpu", "cuda"))
        in_range("training.threads", self.threads, lo=0)


@dataclass
class EnergyConfig:
    meter: str = "auto"  # auto | nvml | rapl | model
    model_watts: float = 65.0  # power per training process assumed by the `model` meter (an estimate)
    subtract_idle: bool = False  # subtract idle power x training seconds (labelled in idle_w)
    idle_seconds: float = 5.0  # how long idle power is measured before training
    device_shared: bool = False  # the metered device also serves other jobs (set by sweeps)

    def __post_init__(self) -> None:
        choice("energy.meter", self.meter, ("auto", "nvml", "rapl", "model"))
        in_range("energy.model_watts", self.model_watts, lo=0, lo_open=True)
        in_range("energy.idle_seconds", self.idle_seconds, lo=0, lo_open=True)


@dataclass
class LoggingConfig:
    output_dir: str = "results/runs/run"
    log_every_steps: int = 0  # progress line every N steps inside an epoch; 0 = off
    progress: str = "auto"  # auto (a bar per epoch in a terminal, plain lines elsewhere) | bar | lines
    steps_every: int = 10  # steps.parquet: the controller every N training steps (and stale plan windows); 0 = off
    tensorboard: bool = False  # also write epoch rows, the step trace and the config as TensorBoard events

    def __post_init__(self) -> None:
        if not self.output_dir:
            raise ConfigError("logging.output_dir='' is empty; give a directory path")
        in_range("logging.log_every_steps", self.log_every_steps, lo=0)
        choice("logging.progress", self.progress, ("auto", "bar", "lines"))
        in_range("logging.steps_every", self.steps_every, lo=0)


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    ast: ASTConfig = field(default_factory=ASTConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    energy: EnergyConfig = field(default_factory=EnergyConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def to_dict(self) -> dict[str, Any]:
        """As the YAML reads: each method's settings under ``ast.<method>``."""
        out = dataclasses.asdict(self)
        out["ast"].update((name, settings) for name, settings in out["ast"].pop("methods").items() if settings)
        return out

"""Typed sweep configuration: the ``search``, ``sweep`` and ``resources`` sections.

``search.space`` maps any dotted run-config key to a distribution::

    search:
      space:
        ast.target_activation: {type: uniform, low: 0.1, high: 0.6}
        training.lr: {type: loguniform, low: 1.0e-3, high: 1.0e-1}
        training.batch_size: {type: int, low: 32, high: 128, step: 32}
        ast.strategy: {type: choice, values: [reforward, stale]}

Every key is checked against the run config (it must exist), and every value the
space can produce is checked by building the run config with it, so a bad space fails
before Ray starts.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
import warnings
from dataclasses import dataclass, field
from typing import Any

import optuna
import pyarrow as pa

from astray.config.checks import in_range, share_of_epochs, unknown_key
from astray.config.dotted import set_dotted
from astray.config.load import (
    FOREIGN_SECTIONS,
    _type_name,
    _type_ok,
    apply_overrides,
    build_config,
    build_section,
    load_raw,
)
from astray.config.run import RunConfig, TrainingConfig
from astray.errors import ConfigError
from astray.sparse.dense import Dense
from astray.sparse.uniform import RandomSubset
from astray.schema import (
    DEFAULT_OBJECTIVES,
    KIND_DENSE,
    KIND_RANDOM,
    OBJECTIVE_METRICS,
    PHASE_GUIDED,
    PHASE_STARTUP,
    TEST_METRICS,
    Objective,
)

DISTRIBUTIONS = ("uniform", "loguniform", "int", "choice")

DEFAULT_SPACE: dict[str, dict[str, Any]] = {
    "ast.kp": {"type": "loguniform", "low": 0.1, "high": 5.0},
    "ast.ki": {"type": "loguniform", "low": 1e-3, "high": 0.2},
    "ast.target_activation": {"type": "uniform", "low": 0.1, "high": 0.6},
    "ast.entropy_weight": {"type": "uniform", "low": 0.0, "high": 0.5},
}



@dataclass(frozen=True)
class Param:
    """One searched dimension."""

    key: str
    type: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    values: tuple[Any, ...] = ()

    def arrow_type(self) -> pa.DataType:
        if self.type in ("uniform", "loguniform"):
            return pa.float64()
        if self.type == "int":
            return pa.int64()
        if all(isinstance(v, bool) for v in self.values):
            return pa.bool_()
        if all(isinstance(v, int) and not isinstance(v, bool) for v in self.values):
            return pa.int64()
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in self.values):
            return pa.float64()
        return pa.string()

    def corners(self) -> list[Any]:
        """Values at the edges of the space, used to validate it up front."""
        if self.type == "choice":
            return list(self.values)
        if self.type == "int":
            return [int(self.low), int(self.high)]
        return [self.low, self.high]


def parse_param(key: str, spec: Any) -> Param:
    where = f"search.space.{key}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}={spec!r} must be a mapping like {{type: uniform, low: 0.1, high: 0.5}}")
    kind = spec.get("type")
    if kind not in DISTRIBUTIONS:
        raise ConfigError(f"{where}.type={kind!r} is not allowed; choose one of {', '.join(DISTRIBUTIONS)}")
    allowed = {"type", "values"} if kind == "choice" else {"type", "low", "high", "step"}
    for extra in set(spec) - allowed:
        raise ConfigError(f"unknown key {where}.{extra!r} for type {kind}; allowed: {', '.join(sorted(allowed))}")
    if kind == "choice":
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}.values={values!r} must be a non-empty list")
        return Param(key, kind, values=tuple(values))
    low, high, step = spec.get("low"), spec.get("high"), spec.get("step")
    for name, v in (("low", low), ("high", high)):
        try:
            float(v)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}.{name}={v!r} must be a number") from None
    low, high = float(low), float(high)
    if not low < high:
        raise ConfigError(f"{where}: low={low:g} must be below high={high:g}")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{where}.low={low:g} must be > 0 for loguniform")
    if kind == "int" and (low != int(low) or high != int(high)):
        raise ConfigError(f"{where}: int bounds must be whole numbers, got {low:g}..{high:g}")
    if step is not None:
        in_range(f"{where}.step", float(step), lo=0, lo_open=True)
    return Param(key, kind, low, high, None if step is None else float(step))


@dataclass(frozen=True)
class Baseline:
    """One baseline configuration a sweep trains besides the searched ones (docs/design.md §9)."""

    kind: str  # astray.schema.KIND_DENSE | KIND_RANDOM
    value: float  # dense: share of training.epochs; random: ast.target_activation

    @property
    def config_id(self) -> str:
        """``dense@0.5``, ``random@0.3``: the store's config_id for its replicates."""
        return f"{self.kind}@{self.value:g}"


def budget_epochs(epochs: int, budget: float) -> int:
    """Epochs a dense baseline at ``budget`` trains: the share rounded half up, at least one."""
    return max(1, share_of_epochs(budget, epochs))


def parse_baselines(raw: Any) -> tuple[Baseline, ...]:
    """``search.baselines`` → baselines, dense budgets first; each value checked."""
    where = "search.baselines"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}={raw!r} must be a mapping like {{dense_budgets: [1.0, 0.5], random: [0.3]}}")
    for extra in set(raw) - {"dense_budgets", "random"}:
        raise unknown_key(f"{where}.{extra}", str(extra), ["dense_budgets", "random"])
    out: list[Baseline] = []
    for key, kind, lo_open in (("dense_budgets", KIND_DENSE, True), ("random", KIND_RANDOM, True)):
        values = raw.get(key, [])
        if values is None:
            values = []
        if not isinstance(values, list):
            raise ConfigError(f"{where}.{key}={values!r} must be a list of numbers in (0, 1]")
        seen: list[float] = []
        for i, v in enumerate(values):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(f"{where}.{key}[{i}]={v!r} must be a number in (0, 1]")
            in_range(f"{where}.{key}[{i}]", float(v), lo=0, hi=1, lo_open=lo_open)
            if float(v) in seen:
                raise ConfigError(f"{where}.{key} lists {v!r} twice; each value may appear once")
            seen.append(float(v))
            out.append(Baseline(kind, float(v)))
    return tuple(out)


# ------------------------------------------------------------------ the sampler
# ``search.sampler`` names the Optuna sampler, ``search.sampler_options`` passes keyword
# arguments to its constructor (besides ``seed``, which is ``search.seed``)::
#
#     search:
#       sampler: tpe
#       sampler_options: {n_startup_trials: 4, constant_liar: false}
#
# A TPE or NSGA-II sampler draws its first configurations at random and models the told
# results only after that (TPE: until ``n_startup_trials`` configurations are told;
# NSGA-II: its first generation, ``population_size`` of them). Optuna's TPE default of 10
# would make a sweep of 8 configurations a random search, so astray's default is
# ``max(2, num_samples // 3)``; a start-up the config chooses that leaves no configuration
# to be guided is refused.

SAMPLERS: dict[str, str] = {"tpe": "TPESampler", "nsga2": "NSGAIISampler", "random": "RandomSampler"}
# The option that says how many told configurations a sampler waits for before it guides.
STARTUP_OPTION: dict[str, str] = {"tpe": "n_startup_trials", "nsga2": "population_size"}
LEGACY_TPE_STARTUP = 10  # Optuna's default, which sweeps recorded before sampler options ran with

_YAML_TYPES: dict[str, type] = {"bool": bool, "int": int, "float": float, "str": str, "None": type(None)}


def sampler_class(name: str) -> type[optuna.samplers.BaseSampler]:
    return getattr(optuna.samplers, SAMPLERS[name])


def settable_options(cls: type) -> dict[str, Any]:
    """The constructor arguments a config can give, each with its type hint: those whose
    annotation names only bool, int, float, str or None (a YAML value cannot be a callable
    or an Optuna object), less ``seed`` (``search.seed``)."""
    out: dict[str, Any] = {}
    for name, p in inspect.signature(cls).parameters.items():
        if name == "seed" or p.kind not in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
            continue
        text = p.annotation if isinstance(p.annotation, str) else inspect.formatannotation(p.annotation)
        parts = [s.strip() for s in text.split("|")]
        if all(s in _YAML_TYPES for s in parts):
            out[name] = typing.Union[tuple(_YAML_TYPES[s] for s in parts)]
    return out


def default_options(name: str, num_samples: int) -> dict[str, Any]:
    """What astray passes when the config gives nothing: multivariate TPE with a start-up
    phase of about a third of the sweep, at least 2; NSGA-II's population is Optuna's."""
    if name == "tpe":
        return {"multivariate": True, "n_startup_trials": max(2, num_samples // 3)}
    if name == "nsga2":
        return {"population_size": inspect.signature(sampler_class(name)).parameters["population_size"].default}
    return {}


@dataclass(frozen=True)
class SamplerSpec:
    """The sampler as it runs: its constructor is ``<class>(seed=seed, **options)``."""

    name: str  # search.sampler
    seed: int
    options: dict[str, Any]  # every keyword argument besides seed, defaults included
    defaults: tuple[str, ...] = ()  # the option keys astray chose, not the config

    @property
    def class_name(self) -> str:
        return SAMPLERS[self.name]

    @property
    def startup_trials(self) -> int | None:
        """Told configurations the sampler waits for before it guides; None: it never
        guides (the random sampler)."""
        key = STARTUP_OPTION.get(self.name)
        return None if key is None else int(self.options[key])

    def phase(self, told: int) -> str:
        """``startup`` or ``guided``: what the sampler does with its next suggestion, once
        ``told`` configurations are COMPLETE (TPE and NSGA-II count those; failed ones
        teach them nothing)."""
        start = self.startup_trials
        return PHASE_STARTUP if start is None or told < start else PHASE_GUIDED

    def build(self) -> optuna.samplers.BaseSampler:
        return sampler_class(self.name)(seed=self.seed, **self.options)

    def manifest(self) -> dict[str, Any]:
        """``sweep.json``'s ``sampler`` entry."""
        return {"name": self.name, "optuna_class": f"optuna.samplers.{self.class_name}", "seed": self.seed,
                "options": dict(self.options), "astray_defaults": list(self.defaults),
                "startup_trials": self.startup_trials}


def parse_sampler(name: str, seed: int, raw: Any, num_samples: int, max_concurrent: int) -> SamplerSpec:
    """``search.sampler_options`` checked against the sampler's constructor, astray's
    defaults filled in; every error is one line naming ``search.sampler_options.<key>``."""
    where = "search.sampler_options"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}={raw!r} must be a mapping of {SAMPLERS[name]} keyword arguments, "
                          "like {n_startup_trials: 4}")
    cls = sampler_class(name)
    allowed = settable_options(cls)
    given: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "seed":
            raise ConfigError(f"{where}.seed: the sampler's seed is search.seed; set that instead")
        if key not in allowed:
            raise ConfigError(f"{where}.{key} is not an option of search.sampler={name} (optuna.samplers."
                              f"{cls.__name__}); allowed: {', '.join(sorted(allowed)) or 'none besides seed'}")
        ok, coerced = _type_ok(value, allowed[key])
        if not ok:
            raise ConfigError(f"{where}.{key}={value!r} has the wrong type; expected {_type_name(allowed[key])}")
        given[key] = coerced
    if "n_startup_trials" in given:
        in_range(f"{where}.n_startup_trials", given["n_startup_trials"], lo=0)
    defaults = {k: v for k, v in default_options(name, num_samples).items() if k not in given}
    spec = SamplerSpec(name, seed, {**defaults, **given}, tuple(defaults))
    try:
        with warnings.catch_warnings():  # deprecation notes come once, when the sweep builds it
            warnings.simplefilter("ignore")
            spec.build()
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}={raw!r}: optuna.samplers.{cls.__name__} refuses them: "
                          f"{' '.join(str(exc).split())}") from None
    check_guided_phase(spec, STARTUP_OPTION.get(name) in given, num_samples, max_concurrent)
    return spec


def check_guided_phase(spec: SamplerSpec, explicit: bool, num_samples: int, max_concurrent: int) -> None:
    """A start-up phase the config chose must leave the sweep a guided configuration.

    When configuration ``k`` is asked, up to ``max_concurrent - 1`` earlier ones may still
    be running, untold; so only ``num_samples >= startup + max_concurrent`` guarantees one
    guided suggestion. astray's own default is never refused: a sweep too small for it is
    a random search, and its record says so (``search_phase``)."""
    start = spec.startup_trials
    if not explicit or start is None or num_samples >= start + max_concurrent:
        return
    key = STARTUP_OPTION[spec.name]
    fixes = [f"search.num_samples to at least {start + max_concurrent}"]
    if num_samples - max_concurrent >= (2 if spec.name == "nsga2" else 0):  # NSGA-II needs two parents
        fixes.insert(0, f"{key} to at most {num_samples - max_concurrent}")
    raise ConfigError(f"search.sampler_options.{key}={start} leaves search.num_samples={num_samples} no guided "
                      f"configuration: {spec.name} draws at random until {start} configurations are told, and "
                      f"with search.max_concurrent={max_concurrent} up to {max_concurrent - 1} more may still run "
                      f"when the next is asked; set {' or '.join(fixes)}")


def legacy_sampler(name: str, seed: int) -> SamplerSpec:
    """The sampler a sweep recorded before ``search.sampler_options`` existed ran with
    (its ``sweep.json`` has no ``sampler``): a resumed one goes on with it."""
    options: dict[str, Any] = {}
    if name == "tpe":
        options = {"multivariate": True, "n_startup_trials": LEGACY_TPE_STARTUP}
    elif name == "nsga2":
        options = default_options(name, 0)
    return SamplerSpec(name, seed, options, tuple(options))


@dataclass
class SearchConfig:
    space: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_SPACE))
    objectives: list[Any] = field(default_factory=lambda: [{"metric": o.metric, "mode": o.mode}
                                                           for o in DEFAULT_OBJECTIVES])
    sampler: str = "tpe"  # tpe | nsga2 | random
    # Keyword arguments of the Optuna sampler's constructor (parse_sampler); unset
    # TPE options: multivariate, n_startup_trials = max(2, num_samples // 3).
    sampler_options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    num_samples: int = 8  # searched configurations (baselines come on top; each runs `repeats` times)
    max_concurrent: int = 2  # trials running at once (always bounded)
    baseline: bool | None = None  # short form: true = baselines {dense_budgets: [1.0]}, false = none
    baselines: dict[str, Any] | None = None  # {dense_budgets: [1.0, 0.5], random: [0.3]}; default dense 1.0
    repeats: int = 1  # seed replicates of every configuration, searched or baseline
    # After the search: fresh seeds for the headline configuration, the two dense
    # budgets bracketing it and their frontier neighbours (docs/design.md §9); 0 = none.
    confirm: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.space, dict) or not self.space:
            raise ConfigError("search.space must map dotted config keys to distributions")
        self.params = [parse_param(k, v) for k, v in self.space.items()]
        objectives = []
        if not isinstance(self.objectives, list) or not self.objectives:
            raise ConfigError("search.objectives must be a non-empty list of {metric, mode}")
        for i, o in enumerate(self.objectives):
            if not isinstance(o, dict) or set(o) != {"metric", "mode"}:
                raise ConfigError(f"search.objectives[{i}]={o!r} must be {{metric: NAME, mode: max|min}}")
            allowed = [m for m in OBJECTIVE_METRICS if m not in TEST_METRICS]
            if o["metric"] in TEST_METRICS:
                raise ConfigError(f"search.objectives[{i}].metric={o['metric']!r} is the test split, which never "
                                  f"selects anything (docs/design.md §9); choose one of {', '.join(allowed)}")
            if o["metric"] not in OBJECTIVE_METRICS:
                raise ConfigError(f"search.objectives[{i}].metric={o['metric']!r} is not allowed; "
                                  f"choose one of {', '.join(allowed)}")
            if o["mode"] not in ("max", "min"):
                raise ConfigError(f"search.objectives[{i}].mode={o['mode']!r} is not allowed; choose max or min")
            objectives.append(Objective(o["metric"], o["mode"] == "max"))
        self.parsed_objectives = objectives
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"search.sampler={self.sampler!r} is not allowed; choose one of {', '.join(SAMPLERS)}")
        in_range("search.num_samples", self.num_samples, lo=1)
        in_range("search.max_concurrent", self.max_concurrent, lo=1)
        self.parsed_sampler = parse_sampler(self.sampler, self.seed, self.sampler_options, self.num_samples,
                                            self.max_concurrent)
        in_range("search.repeats", self.repeats, lo=1)
        if self.baselines is not None and self.baseline is not None:
            raise ConfigError("search.baseline and search.baselines are both set; give one "
                              "(baseline: true is short for baselines: {dense_budgets: [1.0]})")
        if self.baselines is not None:
            self.parsed_baselines = parse_baselines(self.baselines)
        elif self.baseline is False:
            self.parsed_baselines = ()
        else:
            self.parsed_baselines = (Baseline(KIND_DENSE, 1.0),)
        in_range("search.confirm", self.confirm, lo=0)
        dense = [b for b in self.parsed_baselines if b.kind == KIND_DENSE]
        if self.confirm and len(dense) < 2:
            raise ConfigError(f"search.confirm={self.confirm} confirms against the dense frontier, which needs at "
                              f"least 2 dense budgets in search.baselines.dense_budgets; got {len(dense)}")

    @property
    def trials_per_sweep(self) -> int:
        """Trials the sweep runs: every configuration, searched or baseline, ``repeats`` times,
        and ``confirm`` fresh seeds of the headline configuration and its two dense budgets."""
        return (self.num_samples + len(self.parsed_baselines)) * self.repeats + CONFIRMED_CONFIGS * self.confirm


CONFIRMED_CONFIGS = 5  # at most: the headline configuration, the two dense budgets bracketing it and their neighbours
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


SWEEP_LOGGERS = ("tensorboard", "mlflow", "wandb")


@dataclass
class EarlyStopConfig:
    """``sweep.early_stop``: stop searched configurations at rungs (``astray.sweep.early_stop``)."""

    enabled: bool = False
    reduction_factor: float = 3.0  # η: a rung keeps the top 1/η of the configurations that reached it
    min_epochs: int = 1  # the first rung; the next ones at min_epochs × η^k, below training.epochs

    def __post_init__(self) -> None:
        in_range("sweep.early_stop.reduction_factor", self.reduction_factor, lo=1.0, lo_open=True)
        in_range("sweep.early_stop.min_epochs", self.min_epochs, lo=1)

    def rungs(self, epochs: int) -> list[int]:
        """The epochs at which a searched configuration is judged: ``min_epochs × η^k``,
        rounded, each below ``epochs`` (the last epoch is no rung: the trial is done)."""
        out: list[int] = []
        k = 0
        while True:
            at = int(round(self.min_epochs * self.reduction_factor ** k))
            if at >= epochs:
                return out
            if not out or at > out[-1]:
                out.append(at)
            k += 1


@dataclass
class SweepConfig:
    name: str = "sweep"  # names the result folder and the Ray experiment
    results_dir: str = "results/sweeps"  # the Parquet store goes to <results_dir>/<name>/
    storage: str = ""  # Ray storage_path (checkpoints); "" = <results_dir>/<name>/ray. Shared FS or s3:// for multi-node
    max_failures: int = 1  # retries of a crashed trial, from its last checkpoint
    checkpoint_every_epochs: int = 1  # hand last.pt to Ray every N epochs (and on a new best, and at the end)
    loggers: list = field(default_factory=lambda: [])  # tensorboard | mlflow | wandb: Ray Tune's logger callbacks
    early_stop: EarlyStopConfig = field(default_factory=EarlyStopConfig)  # rungs that stop searched configurations

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(f"sweep.name={self.name!r} must be letters, digits, '_', '-', '.' (a folder name)")
        in_range("sweep.max_failures", self.max_failures, lo=0)
        in_range("sweep.checkpoint_every_epochs", self.checkpoint_every_epochs, lo=1)
        if not isinstance(self.loggers, list) or any(x not in SWEEP_LOGGERS for x in self.loggers):
            raise ConfigError(f"sweep.loggers={self.loggers!r} is not allowed; a list of "
                              f"{', '.join(SWEEP_LOGGERS)} (each needs its extra: pip install 'astray[<name>]')")


@dataclass
class ResourcesConfig:
    workers_per_trial: int = 1  # >1: a Ray Train TorchTrainer runs the trial with DDP
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0  # fractional (<1) lets one-worker trials share a GPU
    placement_strategy: str = "PACK"  # PACK | SPREAD: how a trial's workers are placed on nodes
    autoscaling: bool = False  # the cluster adds nodes on demand: wait for one instead of failing at once

    def __post_init__(self) -> None:
        in_range("resources.workers_per_trial", self.workers_per_trial, lo=1)
        in_range("resources.cpus_per_worker", self.cpus_per_worker, lo=0)
        in_range("resources.gpus_per_worker", self.gpus_per_worker, lo=0)
        if self.workers_per_trial > 1 and 0 < self.gpus_per_worker < 1:
            raise ConfigError(f"resources.gpus_per_worker={self.gpus_per_worker:g}: fractional GPUs only for "
                              "one-worker trials (DDP needs a whole GPU per worker)")
        if self.placement_strategy not in ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"):
            raise ConfigError(f"resources.placement_strategy={self.placement_strategy!r} is not allowed; "
                              "choose PACK, SPREAD, STRICT_PACK or STRICT_SPREAD")


@dataclass
class SweepSpec:
    """Everything ``astray.tune`` needs: the base run config and the sweep sections."""

    run: RunConfig
    raw_run: dict[str, Any]  # the run sections as a nested dict (trial configs start from it)
    search: SearchConfig
    sweep: SweepConfig
    resources: ResourcesConfig


def leaf_keys(run: RunConfig) -> set[str]:
    """Every dotted key a run config has a value at: ``section.key``, the keys of a section
    inside one (``dataset.label_noise.rate``) and each method's (``ast.stale.keep_prob``)."""
    keys: set[str] = set()

    def walk(node: Any, prefix: str) -> None:
        for f in dataclasses.fields(node):
            value = getattr(node, f.name)
            if f.name == "methods" and isinstance(value, dict):  # ast.<method>: each method's settings
                for name, settings in value.items():
                    walk(settings, f"{prefix}.{name}")
            elif dataclasses.is_dataclass(value):
                walk(value, f"{prefix}.{f.name}")
            else:
                keys.add(f"{prefix}.{f.name}")

    for section in dataclasses.fields(RunConfig):
        walk(getattr(run, section.name), section.name)
    return keys


def load_sweep_spec(path: str, overrides: list[str] | None = None) -> SweepSpec:
    """Load and validate a sweep config; every error is one line, before Ray starts."""
    raw = apply_overrides(load_raw(path), list(overrides or []))
    run = build_config(raw)
    search = build_section(SearchConfig, "search", raw.get("search"))
    sweep = build_section(SweepConfig, "sweep", raw.get("sweep"))
    resources = build_section(ResourcesConfig, "resources", raw.get("resources"))
    raw_run = {k: v for k, v in raw.items() if k not in FOREIGN_SECTIONS}
    if sweep.early_stop.enabled and not sweep.early_stop.rungs(run.training.epochs):
        raise ConfigError(f"sweep.early_stop.min_epochs={sweep.early_stop.min_epochs} leaves no rung below "
                          f"training.epochs={run.training.epochs}; give min_epochs < {run.training.epochs} "
                          "or set sweep.early_stop.enabled: false")
    run_keys = leaf_keys(run)
    for p in search.params:
        if p.key not in run_keys:
            raise unknown_key(f"search.space.{p.key}", p.key, sorted(run_keys))
        for value in p.corners():
            try:
                build_config(set_dotted(raw_run, {p.key: value}))
            except ConfigError as exc:
                raise ConfigError(f"search.space.{p.key} can produce {value!r}, which the run rejects: {exc}") from None
    if search.repeats > 1 and any(p.key == "training.seed" for p in search.params):
        raise ConfigError(f"search.repeats={search.repeats} sets training.seed per replicate; "
                          "remove training.seed from search.space or set search.repeats: 1")
    by_epochs: dict[int, float] = {}
    for b in search.parsed_baselines:
        if b.kind == KIND_DENSE:
            n = budget_epochs(run.training.epochs, b.value)
            if n in by_epochs:
                raise ConfigError(f"search.baselines.dense_budgets: {by_epochs[n]:g} and {b.value:g} both train "
                                  f"{n} of training.epochs={run.training.epochs}; give budgets that differ")
            by_epochs[n] = b.value
        try:
            build_config(set_dotted(raw_run, baseline_overrides(b, run.training)))
        except ConfigError as exc:
            raise ConfigError(f"search.baselines: {b.config_id} is a run the config rejects: {exc}") from None
    return SweepSpec(run, raw_run, search, sweep, resources)


def baseline_overrides(b: Baseline, training: TrainingConfig) -> dict[str, Any]:
    """The dotted keys a baseline sets on the base config (nothing searched is applied).

    A dense baseline keeps the schedule defined over its own (shorter) epoch count, as a
    user running a shorter job would: ``training.lr_milestones``, given in epochs of the
    base run, move to the same shares of the baseline's epochs. Neither baseline selects
    by significance, so the significance options go back to plain loss and no band.
    """
    plain = {"ast.significance": "loss", "ast.upper_quantile": 1.0}
    if b.kind == KIND_DENSE:
        epochs = budget_epochs(training.epochs, b.value)
        out: dict[str, Any] = {"ast.strategy": Dense.name, "training.epochs": epochs, **plain}
        if training.lr_milestones:
            out["training.lr_milestones"] = scaled_milestones(training.lr_milestones, training.epochs, epochs)
        return out
    return {"ast.strategy": RandomSubset.name, "ast.target_activation": b.value, **plain}


def scaled_milestones(milestones: list[float], configured: int, epochs: int) -> list[float]:
    """Milestones in epochs of a ``configured``-epoch run, at the same shares of an
    ``epochs``-epoch one (whole epochs stay ints)."""
    scaled = [m * epochs / configured for m in milestones]
    return [int(m) if m.is_integer() else m for m in scaled]


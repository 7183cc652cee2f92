"""A sparse-training method is one class: the loop asks it, by name of the question, and
never names a method (docs/design.md §2).

A method says when an epoch is sparse, which samples to load (its epoch plan), whether a
step scores the batch before its backward and which of it to train, how a step
normalises its weighted loss, whether BatchNorm must be re-estimated after a sparse
epoch, which entropy weight its significance uses, and what it checkpoints. Its own
settings are a typed dataclass, ``ast.<name>`` in the config, validated with one-line
errors when the config is built.

``@register`` adds a method to :data:`METHODS`, the one list of names: config
validation, the docs and the README tests read it. Adding a method is a file in
``astray/sparse/`` with one such class, imported by ``astray/sparse/__init__.py``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from astray.config.checks import share_of_epochs, unknown_key
from astray.config.run import ASTConfig
from astray.errors import ConfigError
from astray.sparse.controller import PIController
from astray.sparse.selection import EpochPlan, full_plan


@dataclass(frozen=True)
class NoSettings:
    """The settings of a method that has none of its own."""


@dataclass(frozen=True)
class MethodContext:
    """What a method is built for: the run around it."""

    dataset_size: int  # training samples
    seed: int  # training.seed: every draw comes from (seed, epoch)
    epochs: int  # training.epochs
    batch_size: int  # per training process
    world: int = 1  # training processes (DDP ranks)

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world


class SparseMethod:
    """The base method trains densely; subclasses override what they change.

    Class attributes document the method (the docs tables are built from them) and
    answer the loop's yes/no questions.
    """

    name: ClassVar[str] = ""
    Settings: ClassVar[type] = NoSettings
    what: ClassVar[str] = ""  # what runs, one sentence (docs table)
    cost: ClassVar[str] = ""  # compute relative to dense, by the model of docs/design.md §1
    weaknesses: ClassVar[str] = ""
    #: Keys of its settings that were flat ``ast.`` keys before methods had sections (or
    #: were first named so, as ``ast.score_scale``): flat name -> key in the section, so
    #: such a config gets a one-line pointer.
    renamed: ClassVar[dict[str, str]] = {}
    #: The step scores the loaded batch without gradients, then trains the selected subset.
    scores_before_backward: ClassVar[bool] = False
    #: It selects by the PI controller's threshold: dense epochs before a sparse one
    #: calibrate it (one small all-reduce per step under DDP).
    uses_controller: ClassVar[bool] = False
    #: Its sparse epochs aim at ``ast.target_activation`` (with the controller, or by drawing it).
    aims_at_target: ClassVar[bool] = False
    #: A sparse epoch trains a biased subset (chosen by score before loading), which pulls
    #: BatchNorm's running statistics off the data: precise BN after it (docs/design.md §4).
    biased_batches: ClassVar[bool] = False
    #: It chooses what to train by significance, so ``ast.significance`` and
    #: ``ast.upper_quantile`` change what it trains (docs/design.md §11).
    selects_by_significance: ClassVar[bool] = False

    def __init__(self, ast: ASTConfig, ctx: MethodContext) -> None:
        if ctx.dataset_size <= 0:
            raise ValueError("dataset_size must be positive")
        self.ast = ast
        self.settings = settings_of(ast, type(self))
        self.ctx = ctx
        #: ``ast.significance=reducible``: each training sample's irreducible loss (set by
        #: the trainer before the first epoch; in the checkpoint with the run).
        self.irreducible: torch.Tensor | None = None

    @classmethod
    def check(cls, ast: ASTConfig, settings: Any) -> None:
        """Checks across ``ast`` and the method's settings; a one-line ConfigError."""

    @classmethod
    def check_significance(cls, ast: ASTConfig) -> None:
        """``ast.significance`` and ``ast.upper_quantile`` only mean something to a method
        that selects by significance; elsewhere they are a one-line error, not ignored."""
        if cls.selects_by_significance:
            return
        users = ", ".join(m.name for m in METHODS.values() if m.selects_by_significance)
        if ast.significance != "loss":
            raise ConfigError(f"ast.significance={ast.significance!r} is not allowed with ast.strategy={cls.name}, "
                              f"which does not select by significance; use it with {users}, or set loss")
        if ast.upper_quantile < 1:
            raise ConfigError(f"ast.upper_quantile={ast.upper_quantile:g} is not allowed with "
                              f"ast.strategy={cls.name}, which does not select by significance; use it with "
                              f"{users}, or set 1")

    # ------------------------------------------------------------------ significance
    def score(self, sig: torch.Tensor, indices: torch.Tensor | None) -> torch.Tensor:
        """The significance it selects by, from the plain one (loss + entropy term) of
        dataset ``indices``. With ``ast.significance=reducible``: softplus(loss + entropy
        term − irreducible loss), so a sample the held-out model also gets wrong (a
        mislabelled one) scores low (docs/design.md §11). Softplus keeps it positive, as
        the controller's threshold is, and keeps the ranking."""
        if self.irreducible is None or indices is None:
            return sig
        il = self.irreducible.to(sig.device)[indices.to(sig.device)]
        return torch.nn.functional.softplus(sig - il)

    def ceiling(self, scores: torch.Tensor) -> float:
        """``ast.upper_quantile`` of the finite ``scores``: above it a sample is not trained
        (+inf when the band is off or no score is finite)."""
        q = self.ast.upper_quantile
        if q >= 1:
            return float("inf")
        finite = scores[torch.isfinite(scores)]
        return float(torch.quantile(finite.float(), q)) if finite.numel() else float("inf")

    # ------------------------------------------------------------------ when
    def is_sparse(self, epoch: int) -> bool:
        """AST's window: dense for ``ast.warmup_epochs``, then sparse up to the last
        ``ast.final_dense_fraction`` of the epochs (rounded half up), which are dense."""
        epochs = self.ctx.epochs
        final_dense = share_of_epochs(self.ast.final_dense_fraction, epochs)
        return self.ast.warmup_epochs <= epoch < epochs - final_dense

    # ------------------------------------------------------------------ what to load
    def plan_epoch(self, epoch: int, controller: PIController, dense: bool) -> EpochPlan:
        """Which samples to load this epoch. ``dense`` forces every sample in."""
        return full_plan(self.ctx.dataset_size, self.ctx.seed, epoch)

    # ------------------------------------------------------------------ what to train
    def select(self, sig: torch.Tensor, threshold: float) -> torch.Tensor:
        """Which of a loaded batch get a backward pass (indices into the batch); asked
        only when :attr:`scores_before_backward`."""
        return torch.arange(sig.numel(), device=sig.device)

    def observe(self, indices: torch.Tensor, sig: torch.Tensor) -> None:
        """The significance measured for dataset ``indices`` in the epoch just trained."""

    @property
    def score_scale(self) -> float:
        """The scoring forward (:attr:`scores_before_backward`) runs on the batch resized by
        this factor; its FLOPs are counted at that size (docs/design.md §12)."""
        return 1.0

    @property
    def entropy_weight(self) -> float:
        """The weight of the entropy term in the significance it selects by."""
        return self.ast.entropy_weight

    def step_divisor(self, trained: int | torch.Tensor, weight_sum: float | torch.Tensor) -> float | torch.Tensor:
        """What a step divides its summed, weighted loss by (both counted over all ranks
        and the accumulation window). AST's rule: the sum of the weights, so a step is
        the weighted *mean* over what it trained and a kept-by-chance sample's 1/p weight
        never scales the step (docs/design.md §4)."""
        return weight_sum

    def recalibrates_batchnorm(self, sparse: bool) -> bool:
        return sparse and self.biased_batches

    @property
    def bounded_shapes(self) -> bool:
        """Its backward batches take few distinct sizes (so per-shape autotuning pays)."""
        return True

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


METHODS: dict[str, type[SparseMethod]] = {}


def register(cls: type[SparseMethod]) -> type[SparseMethod]:
    """Class decorator: add a method to :data:`METHODS` under its ``name``."""
    if not cls.name or cls.name in METHODS:
        raise ValueError(f"method name {cls.name!r} is empty or taken")
    METHODS[cls.name] = cls
    return cls


def method_class(name: str) -> type[SparseMethod]:
    """The method registered as ``name``; an unknown name is one line listing the valid ones."""
    cls = METHODS.get(name)
    if cls is None:
        raise ConfigError(f"ast.strategy={name!r} is not allowed; choose one of {', '.join(METHODS)}")
    return cls


def settings_of(ast: ASTConfig, cls: type[SparseMethod]) -> Any:
    """The method's settings in ``ast`` (``ast.<name>``), its defaults when absent."""
    found = ast.methods.get(cls.name)
    return found if isinstance(found, cls.Settings) else cls.Settings()


def resolve_methods(ast: ASTConfig, build: Any) -> None:
    """Validate ``ast.strategy`` and the ``ast.<method>`` sections, in place: each
    section (raw mapping) becomes its method's typed settings (every method's, defaults
    for absent ones, so every ``ast.<method>.<key>`` is a known dotted key), then the
    chosen method checks them against the rest of ``ast``. ``build(cls, section, raw)``
    builds a dataclass from a mapping (``astray.config.load.build_section``)."""
    cls = method_class(ast.strategy)
    for key in ast.methods:
        if key not in METHODS:
            raise _unknown(str(key))
    ast.methods = {name: value if isinstance(value, m.Settings) else build(m.Settings, f"ast.{name}", value)
                   for name, m in METHODS.items() for value in [ast.methods.get(name)]}
    cls.check(ast, ast.methods[cls.name])
    cls.check_significance(ast)


def _unknown(key: str) -> ConfigError:
    for m in METHODS.values():
        if key in m.renamed:
            return ConfigError(f"ast.{key} is now ast.{m.name}.{m.renamed[key]}: each method's settings are a "
                               f"section of their own (ast.{m.name}: {{{m.renamed[key]}: ...}})")
    shared = [f.name for f in dataclasses.fields(ASTConfig) if f.name != "methods"]
    return unknown_key(f"ast.{key}", key, shared + list(METHODS))


def methods_table() -> str:
    """The README's table of methods, from the registry (a test holds the README to it)."""
    rows = ["| method (`ast.strategy`) | what runs | compute / dense (docs/design.md §1) | known weaknesses |",
            "|---|---|---|---|"]
    rows += [f"| `{m.name}` | {m.what} | {m.cost} | {m.weaknesses} |" for m in METHODS.values()]
    return "\n".join(rows)


def upgrade_saved(raw_ast: dict[str, Any]) -> dict[str, Any]:
    """The ``ast`` section of a config astray saved before methods had sections (a run's
    config.yaml, a store's ``config_json``): its flat method keys moved into them."""
    out = dict(raw_ast)
    for m in METHODS.values():
        for old, new in m.renamed.items():
            if old in out:
                out[m.name] = {**(out.get(m.name) or {}), new: out.pop(old)}
    return out


def create_method(ast: ASTConfig, ctx: MethodContext) -> SparseMethod:
    """Build the method ``ast.strategy`` names."""
    cls = method_class(ast.strategy)
    cls.check(ast, settings_of(ast, cls))
    cls.check_significance(ast)
    return cls(ast, ctx)

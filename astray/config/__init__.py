"""Configuration: the run's typed sections, loading with ``--set``, and the sweep sections.

- ``run``: one dataclass per YAML section of a training run, validated when built;
- ``load``: YAML file + dotted overrides + type checks into a :class:`RunConfig`;
- ``sweep``: the ``search``/``sweep``/``resources`` sections of ``astray tune``;
- ``dotted``: the one getter and setter of dotted keys; ``checks``: shared value checks.
"""

from astray.config.dotted import get_dotted, set_dotted
from astray.config.load import apply_overrides, build_config, load_config, load_raw, save_config
from astray.config.run import (
    ASTConfig,
    DatasetConfig,
    EnergyConfig,
    LoggingConfig,
    ModelConfig,
    RunConfig,
    TrainingConfig,
)
from astray.config.sweep import ResourcesConfig, SearchConfig, SweepConfig, SweepSpec, load_sweep

__all__ = [
    "ASTConfig", "DatasetConfig", "EnergyConfig", "LoggingConfig", "ModelConfig", "ResourcesConfig", "RunConfig",
    "SearchConfig", "SweepConfig", "SweepSpec", "TrainingConfig", "apply_overrides", "build_config", "get_dotted",
    "load_config", "load_raw", "load_sweep", "save_config", "set_dotted",
]

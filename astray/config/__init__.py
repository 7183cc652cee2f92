"""Configuration: the run's typed sections, loading with ``--set``, and the sweep sections.

- ``run``: one dataclass per YAML section of a training run, validated when built;
- ``load``: YAML file + dotted overrides + type checks into a :class:`RunConfig` (the
  ``ast.<method>`` sections are typed by the methods themselves, ``astray.sparse``);
- ``sweep``: the ``search``/``sweep``/``resources`` sections of ``astray tune``;
- ``dotted``: the one getter and setter of dotted keys; ``checks``: shared value checks.

Import the modules themselves: this package file stays empty, so that ``astray.sparse``
(which ``load`` imports) can import ``run`` and ``checks`` without a cycle.
"""

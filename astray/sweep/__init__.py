"""Sweeps on Ray: what each trial trains (``trial_config``, pure), every Ray call
(``ray_adapter``), the trial function (``trainable``), the driver's bookkeeping
(``recorder``) and the Parquet result store (``store``). Only this package imports Ray,
and only ``ray_adapter``, ``trainable`` and ``runner`` load it.
"""

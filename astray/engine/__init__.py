"""The training engine: no Ray here, and every rank rule in ``ddp``.

``trainer`` (the run: setup, epochs, evaluation, checkpoints) drives ``step`` (one
training step) with ``schedule`` (optimizer, learning rate, dense or sparse epochs),
``data``, ``models``, ``flops`` and ``energy``; ``records`` is the epoch row and
``state`` what a run leaves on disk. Import the modules themselves: this package file
stays empty so that readers of ``records`` (the result store) do not load the engine.
"""

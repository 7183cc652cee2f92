"""Small real models and a fixed selection policy for step-level tests."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from astray.config.run import ASTConfig
from astray.sparse import METHODS, MethodContext, SparseMethod, create_method


def tiny_mlp(in_features: int = 3 * 4 * 4, classes: int = 5, seed: int = 0) -> nn.Module:
    """A model without BatchNorm, so per-rank and whole-batch gradients are comparable."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(in_features, 16), nn.ReLU(), nn.Linear(16, classes))


def make_method(name: str, dataset_size: int = 300, seed: int = 0, batch: int = 64, epochs: int = 10,
                world: int = 1, **kw) -> SparseMethod:
    """The method ``name`` as a run would build it: keyword arguments that are fields of
    its settings (``ast.<name>``) go there, the rest to the ``ast`` section."""
    cls = METHODS[name]
    own = {f.name for f in dataclasses.fields(cls.Settings)}
    ast = ASTConfig(strategy=name, **{k: v for k, v in kw.items() if k not in own})
    ast.methods = {name: cls.Settings(**{k: v for k, v in kw.items() if k in own})}
    return create_method(ast, MethodContext(dataset_size, seed, epochs, batch, world))


class FixedSelection(SparseMethod):
    """A reforward-style method that selects given batch positions (for exact checks).
    Not registered: tests hand it to the step directly."""

    name = "fixed"
    scores_before_backward = True

    def __init__(self, chosen: list[int]) -> None:
        super().__init__(ASTConfig(), MethodContext(dataset_size=1, seed=0, epochs=1, batch_size=1))
        self.chosen = torch.tensor(chosen, dtype=torch.int64)

    def select(self, sig: torch.Tensor, threshold: float) -> torch.Tensor:
        return self.chosen


def wandb_records(path) -> list:
    """The records of an offline W&B run file (``run-<id>.wandb``), parsed with W&B's own
    protobuf schema. The file is W&B's transaction log: a 7-byte header, then LevelDB-log
    style records (checksum, length, type) in 32 KiB blocks; wandb >= 0.2x ships no Python
    reader for it, so the framing is read here."""
    from pathlib import Path

    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", "not a W&B transaction log"
    pos, block, chunks, partial = 7, 32768, [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a record header never straddles a block: the tail is padding
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            chunks.append(chunk)
        elif kind == 2:
            partial = chunk
        elif kind == 3:
            partial += chunk
        elif kind == 4:
            chunks.append(partial + chunk)
    records = []
    for c in chunks:
        r = wandb_internal_pb2.Record()
        r.ParseFromString(c)
        records.append(r)
    return records

"""DDP rules of docs/design.md §3, checked with two real gloo processes on the CPU."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
import torch.nn.functional as F

from astray.engine import ddp as dist
from astray.config.run import ASTConfig
from astray.sparse import MethodContext, PIController
from astray.sparse.reforward import Reforward
from astray.engine.step import StepSettings, train_step
from tests.conftest import PYTHON, REPO, small_overrides
from tests.helpers import FixedSelection, make_method, tiny_mlp

SETTINGS = StepSettings(entropy_weight=0.1, label_smoothing=0.0, autocast=contextlib.nullcontext)
WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _global_batch(n: int = 24):
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, 3, 4, 4, generator=g), torch.randint(0, 5, (n,), generator=g)


def _worker(rank: int, port: int, out: str, scenario: str, arg: object) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    tdist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60))
    try:
        result = SCENARIOS[scenario](rank, arg)
        torch.save(result, Path(out) / f"rank{rank}.pt")
        # Both ranks done before either tears gloo down: a rank that destroyed its group
        # while its peer was still finishing a collective aborted ("terminate called
        # without an active exception"), about once in twenty spawns here.
        tdist.barrier()
    finally:
        tdist.destroy_process_group()


def _grad_scenario(rank: int, chosen_per_rank: list[list[int]]) -> dict:
    """Each rank trains its half of one global batch on its own selection."""
    x, y = _global_batch()
    half = x.shape[0] // WORLD
    xs, ys = x[rank * half:(rank + 1) * half], y[rank * half:(rank + 1) * half]
    model = dist.wrap_model(tiny_mlp(), torch.device("cpu"))
    controller = PIController(target=0.3, kp=1.0, ki=0.02)
    s = train_step(model, xs, ys, torch.ones(half), FixedSelection(chosen_per_rank[rank]), controller, SETTINGS,
                   sparse=True, progress=1.0)
    grads = [p.grad / s.global_active for p in model.parameters()]
    return {"grads": grads, "global_active": s.global_active, "backward": s.backward,
            "threshold": controller.threshold}


class _RecordingReforward(Reforward):
    """Reforward selection with shape buckets that remembers what it chose, and what the
    threshold alone would have chosen."""

    def select(self, sig: torch.Tensor, threshold: float) -> torch.Tensor:
        chosen = super().select(sig, threshold)
        self.record = {"chosen": chosen.tolist(), "above": int((sig > threshold).sum())}
        return chosen


def _bucketed_scenario(rank: int, threshold: float) -> dict:
    """Each rank's subset size is rounded to a bucket (quantum 4 of 12); the gradient must
    still be the exact mean over the samples every rank really trained."""
    x, y = _global_batch()
    half = x.shape[0] // WORLD
    model = dist.wrap_model(tiny_mlp(), torch.device("cpu"))
    controller = PIController(target=0.3, kp=0.0, ki=0.0, initial_threshold=threshold)
    ast = ASTConfig(strategy="reforward")
    ast.methods = {"reforward": Reforward.Settings(shape_buckets=3)}
    strategy = _RecordingReforward(ast, MethodContext(dataset_size=1000, seed=0, epochs=1, batch_size=half))
    s = train_step(model, x[rank * half:(rank + 1) * half], y[rank * half:(rank + 1) * half], None, strategy,
                   controller, SETTINGS, sparse=True, progress=1.0)
    return {**strategy.record, "grads": [p.grad / s.global_active for p in model.parameters()],
            "global_active": s.global_active}


def _threshold_scenario(rank: int, steps: int) -> dict:
    """Real reforward selection on different data per rank: thresholds must stay equal."""
    model = dist.wrap_model(tiny_mlp(), torch.device("cpu"))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    controller = PIController(target=0.3, kp=1.0, ki=0.05)
    strategy = make_method("reforward", 1000, shape_buckets=0, min_active_fraction=0.0)
    g = torch.Generator().manual_seed(100 + rank)
    thresholds, backward = [], []
    for step in range(steps):
        x, y = torch.randn(16, 3, 4, 4, generator=g) * (1 + rank), torch.randint(0, 5, (16,), generator=g)
        s = train_step(model, x, y, torch.ones(16), strategy, controller, SETTINGS, sparse=True, progress=step / steps)
        if s.global_active:
            for p in model.parameters():
                p.grad /= s.global_active
            opt.step()
        opt.zero_grad()
        thresholds.append(controller.threshold)
        backward.append(s.backward)
    dist.check_same_on_all_ranks(controller.threshold, "threshold")
    return {"thresholds": thresholds, "backward": backward}


def _stale_scenario(rank: int, n: int) -> dict:
    """Ranks see different samples; after the gather they must plan the same epoch."""
    strategy = make_method("stale", n, seed=7, batch=32, keep_prob=0.1, min_active_fraction=0.0)
    controller = PIController(target=0.3, kp=1.0, ki=0.02)
    plan = strategy.plan_epoch(0, controller, dense=True)
    mine = dist.shard(plan.indices)
    local_scores = torch.rand(mine.numel(), generator=torch.Generator().manual_seed(rank))
    strategy.observe(dist.all_gather_cat(mine), dist.all_gather_cat(local_scores))
    plan = strategy.plan_epoch(1, controller, dense=False)
    return {"kept": plan.indices, "weights": plan.weights, "shard": dist.shard(plan.indices),
            "threshold": controller.threshold, "scores": strategy.table.scores}


def _energy_scenario(rank: int, _: object) -> dict:
    """Whole-device meters: a device two ranks share is counted once, distinct ones add."""
    return {"shared": dist.sum_over_devices(["gpu:same"], 10.0 + rank),
            "distinct": dist.sum_over_devices([f"gpu:{rank}"], 10.0 + rank)}


def _accum_scenario(rank: int, chosen: list[list[list[int]]]) -> dict:
    """A window of two micro-steps (rule 6): the first under no_sync, the second all-reduces;
    when the second trains nothing anywhere, the window's gradients are averaged by hand."""
    x, y = _global_batch()
    half = x.shape[0] // WORLD
    model = dist.wrap_model(tiny_mlp(), torch.device("cpu"))
    controller = PIController(target=0.3, kp=1.0, ki=0.02)
    first_local, active, unsynced, s = None, 0, False, None
    for micro, window_end in ((0, False), (1, True)):
        rows = slice(rank * half, (rank + 1) * half)
        xs, ys = x[rows] + micro, y[rows]  # micro-step 1 sees shifted inputs: other gradients
        s = train_step(model, xs, ys, torch.ones(half), FixedSelection(chosen[micro][rank]), controller, SETTINGS,
                       sparse=True, progress=1.0, window_end=window_end)
        active += s.global_active
        unsynced |= s.global_active > 0 and not s.synced
        if micro == 0:
            first_local = [p.grad.clone() for p in model.parameters()]
    if unsynced and not s.synced:
        dist.average_gradients_(model)
    return {"first_local": first_local, "grads": [p.grad / active for p in model.parameters()],
            "synced": s.synced, "active": active}


SCENARIOS = {"grad": _grad_scenario, "bucketed": _bucketed_scenario, "accum": _accum_scenario, "threshold": _threshold_scenario, "stale": _stale_scenario,
             "energy": _energy_scenario}


def _spawn(tmp_path: Path, scenario: str, arg: object, timeout_s: float = 120) -> list[dict]:
    ctx = mp.start_processes(_worker, args=(_free_port(), str(tmp_path), scenario, arg), nprocs=WORLD,
                             join=False, start_method="spawn")
    deadline = time.monotonic() + timeout_s
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"{scenario}: ranks did not finish in {timeout_s} s (hang in a collective?)")
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def _reference(chosen_per_rank: list[list[int]]) -> list[torch.Tensor]:
    x, y = _global_batch()
    half = x.shape[0] // WORLD
    rows = [r * half + i for r, chosen in enumerate(chosen_per_rank) for i in chosen]
    model = tiny_mlp()
    F.cross_entropy(model(x[rows]), y[rows]).backward()
    return [p.grad for p in model.parameters()]


@pytest.mark.parametrize("chosen", [
    [list(range(12)), [3, 7]],   # 12 vs 2: per-rank means would be far off
    [[0, 5, 6], []],             # rank 1 selects nothing: no hang, no corruption
], ids=["uneven", "one-rank-empty"])
def test_ddp_gradient_equals_single_process_reference(tmp_path, chosen):
    results = _spawn(tmp_path, "grad", chosen)
    ref = _reference(chosen)
    for r, res in enumerate(results):
        assert res["global_active"] == sum(len(c) for c in chosen)
        for g, ref_g in zip(res["grads"], ref):
            torch.testing.assert_close(g, ref_g, rtol=1e-5, atol=1e-7)
    # The empty rank still ran a (zero-weight) backward, so its peers were not left waiting.
    assert results[1]["backward"] == (2 if not chosen[1] else len(chosen[1]))
    assert results[0]["threshold"] == results[1]["threshold"]


def test_bucketed_subsets_keep_the_exact_gradient(tmp_path):
    results = _spawn(tmp_path, "bucketed", 1.65)
    chosen = [res["chosen"] for res in results]
    assert all(len(c) % 4 == 0 for c in chosen)  # sizes come from the buckets
    assert any(len(res["chosen"]) != res["above"] for res in results)  # and rounding really happened
    ref = _reference(chosen)
    for res in results:
        assert res["global_active"] == sum(len(c) for c in chosen)
        for g, ref_g in zip(res["grads"], ref):
            torch.testing.assert_close(g, ref_g, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("chosen", [
    [[[0, 1, 2], [4]], [[5], [1, 2, 3, 9]]],   # both micro-steps train: the second all-reduces
    [[[0, 1, 2], [4]], [[], []]],              # the second trains nothing anywhere: averaged by hand
], ids=["both-train", "last-empty"])
def test_accumulation_window_all_reduces_once_and_exactly(tmp_path, chosen):
    results = _spawn(tmp_path, "accum", chosen)
    x, y = _global_batch()
    half = x.shape[0] // WORLD
    model = tiny_mlp()
    inputs = [x[r * half + i] + micro for micro, per_rank in enumerate(chosen)
              for r, picks in enumerate(per_rank) for i in picks]
    targets = [y[r * half + i] for per_rank in chosen for r, picks in enumerate(per_rank) for i in picks]
    F.cross_entropy(model(torch.stack(inputs)), torch.stack(targets)).backward()
    for res in results:
        assert res["active"] == len(targets)
        assert res["synced"] == bool(chosen[1][0] or chosen[1][1])
        for g, ref in zip(res["grads"], (p.grad for p in model.parameters())):
            torch.testing.assert_close(g, ref, rtol=1e-5, atol=1e-7)
    # The first micro-step ran under no_sync: each rank held only its own gradient then.
    assert any(not torch.allclose(a, b) for a, b in zip(results[0]["first_local"], results[1]["first_local"]))


def test_thresholds_are_identical_on_every_rank(tmp_path):
    a, b = _spawn(tmp_path, "threshold", 12)
    assert a["thresholds"] == b["thresholds"]
    assert len(set(a["thresholds"])) > 1  # the controller really moved
    assert a["backward"] != b["backward"]  # while the ranks selected differently


def test_stale_kept_lists_identical_and_split_evenly(tmp_path):
    a, b = _spawn(tmp_path, "stale", 203)
    assert torch.equal(a["scores"], b["scores"])
    assert torch.equal(a["kept"], b["kept"])
    assert torch.equal(a["weights"], b["weights"])
    assert a["shard"].numel() == b["shard"].numel()
    assert set(a["shard"].tolist()) | set(b["shard"].tolist()) == set(a["kept"].tolist())
    assert 0 < a["kept"].numel() < 203


def test_energy_is_summed_over_distinct_devices(tmp_path):
    a, b = _spawn(tmp_path, "energy", None)
    assert a == b == {"shared": 10.0, "distinct": 21.0}


@pytest.mark.slow
@pytest.mark.parametrize("strategy, accum", [("stale", 1), ("reforward", 2)])
def test_torchrun_two_processes_end_to_end(tmp_path, env_one_thread, strategy, accum):
    """``accum`` 2: windows of two micro-steps, the first under no_sync (rule 6)."""
    out = tmp_path / "run"
    cmd = [PYTHON, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           "-m", "astray.train", str(REPO / "configs/quickstart.yaml")]
    for item in small_overrides(out, **{"ast.strategy": strategy, "ast.warmup_epochs": 1,
                                        "training.grad_accum_steps": accum}):
        cmd += ["--set", item]
    proc = subprocess.run(cmd, cwd=REPO, env=env_one_thread, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("epoch 2/2") == 1  # only rank 0 prints
    rows = pq.read_table(out / "metrics.parquet").to_pylist()
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[1]["samples_backward"] < rows[1]["samples_total"]
    assert rows[1]["flops"] < rows[1]["flops_dense"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left
    # Each rank draws its own random stream (augmentation, loader workers), and each
    # rank's state is saved so that a resume continues every one of them.
    states = torch.load(out / "last.pt", weights_only=True)["rng_per_rank"]
    assert len(states) == 2 and not torch.equal(states[0]["torch"], states[1]["torch"])


@pytest.mark.slow
def test_torchrun_noisy_labels_and_reducible_significance(tmp_path, env_one_thread):
    """Two ranks with label noise and reducible significance under stale, whose plan every
    rank builds from its score table: the irreducible losses must be the same on every rank
    (rank 0's are kept), or the thresholds would differ and the run stop (rule 3). Both
    ranks train the irreducible models, and both ranks' work is counted."""
    out = tmp_path / "run"
    cmd = [PYTHON, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           "-m", "astray.train", str(REPO / "configs/quickstart.yaml")]
    extra = {"ast.strategy": "stale", "ast.warmup_epochs": 1, "ast.significance": "reducible",
             "ast.irreducible.epochs": 1, "ast.upper_quantile": 0.9, "dataset.label_noise.rate": 0.3}
    for item in small_overrides(out, **extra):
        cmd += ["--set", item]
    proc = subprocess.run(cmd, cwd=REPO, env=env_one_thread, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = pq.read_table(out / "metrics.parquet").to_pylist()
    first = rows[0]
    # 2 ranks × (1 epoch on each half of the data + a scoring forward of every sample).
    assert 2 * 1.2 < first["setup_flops"] / first["flops_dense"] < 2 * 1.5
    assert all(0 < r["noisy_share"] < 1 for r in rows)
    assert pq.read_table(out / "label_noise.parquet").num_rows > 0
    assert torch.isfinite(torch.load(out / "last.pt", weights_only=True)["irreducible"]).all()

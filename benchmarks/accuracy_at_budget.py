"""Accuracy at a matched budget: does AST beat simply training less, and random subsets?

Every arm trains on real Fashion-MNIST (the original IDX files; ``apt-get install
dataset-fashion-mnist``) through the real engine (``astray.engine.trainer.run``), with
several seeds:

- ``dense``: the full epoch budget — the reference every ratio is taken against;
- ``dense 1/2``, ``dense 1/3``: training less (fewer epochs, the cosine schedule over
  each arm's own epochs, as a user running a shorter job would);
- ``random``, ``stale``, ``reforward`` at activation 0.3 and 0.5, and ``infobatch`` at two
  prune ratios r (its activation follows the losses; the table shows what it realised).

Per arm: mean ± standard deviation over seeds of test_acc at the epoch the validation
split selected (the first with the highest val_acc, as the store and best.pt do; the
test split never selects), the final epoch's test_acc, the best val_acc, and
training FLOPs, train time and energy as ratios to dense at the full budget (warm-up and
BatchNorm recalibration included). Energy is the run's meter: ``model`` (seconds ×
watts, an estimate) on a CPU machine without RAPL, ``nvml`` on a GPU.

A second, short part (``--quickstart``, on by default) trains the quickstart digits with
``model.name=resnet18`` for 6 epochs at target 0.3 (2 seeds): dense, reforward, stale.

Results go to ``benchmarks/results/accuracy_at_budget.json`` after every run, so an
interrupted benchmark keeps what it finished and ``--resume`` skips it.

    python benchmarks/accuracy_at_budget.py                 # CPU: ~10k-image subset, tiny ResNet
    python benchmarks/accuracy_at_budget.py --subset 0 --model resnet18 --epochs 15   # a GPU: full data
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from astray.config.load import load_config  # noqa: E402
from astray.engine.trainer import run  # noqa: E402
from astray.sweep.store import trial_summary  # noqa: E402
from astray.sweep.provenance import git_commit, hardware, library_versions  # noqa: E402
from regimes import frontier_savings  # noqa: E402  (this script's folder is on sys.path)

RESULTS = REPO / "benchmarks" / "results" / "accuracy_at_budget.json"
AST_STRATEGIES = ("stale", "reforward", "infobatch")


@dataclass(frozen=True)
class Arm:
    name: str
    strategy: str
    epochs_share: float = 1.0  # of the epoch budget
    overrides: dict = field(default_factory=dict)


def fashion_arms() -> list[Arm]:
    arms = [Arm("dense", "dense"), Arm("dense 1/2", "dense", 0.5), Arm("dense 1/3", "dense", 1 / 3)]
    for a in (0.3, 0.5):
        for strategy in ("random", "stale", "reforward"):
            arms.append(Arm(f"{strategy} a={a}", strategy, overrides={"ast.target_activation": a}))
        for s in (0.75, 0.5):  # scoring on a smaller copy (ast.reforward.score_scale)
            arms.append(Arm(f"reforward a={a} s={s}", "reforward",
                            overrides={"ast.target_activation": a, "ast.reforward.score_scale": s}))
    for r in (0.5, 0.8):
        arms.append(Arm(f"infobatch r={r}", "infobatch", overrides={"ast.infobatch.prune_ratio": r}))
    return arms


def quickstart_arms() -> list[Arm]:
    return [Arm("dense", "dense"), Arm("reforward a=0.3", "reforward", overrides={"ast.target_activation": 0.3}),
            Arm("stale a=0.3", "stale", overrides={"ast.target_activation": 0.3})]


def train_once(config: str, base: list[str], arm: Arm, epochs: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="astray-bench-") as tmp:
        arm_epochs = max(1, round(epochs * arm.epochs_share))
        overrides = base + [f"ast.strategy={arm.strategy}", f"training.epochs={arm_epochs}",
                            f"training.seed={seed}", f"logging.output_dir={tmp}/run"]
        overrides += [f"{k}={v}" for k, v in arm.overrides.items()]
        t0 = time.perf_counter()
        rows = run(load_config(REPO / config, overrides)).rows
        sparse = [r for r in rows if r["strategy"] != "dense"]
        summary = trial_summary("bench", rows)  # the store's rule: the epoch validation selects
        return {
            "arm": arm.name, "seed": seed, "epochs": arm_epochs, "selected_epoch": summary["selected_epoch"],
            "test_acc": summary["test_acc"], "final_test_acc": summary["final_test_acc"],
            "best_val_acc": summary["val_acc"], "final_val_acc": summary["final_val_acc"],
            "flops": sum(r["flops"] for r in rows), "train_time_s": sum(r["train_time_s"] for r in rows),
            "energy_j": sum(r["energy_j"] for r in rows), "energy_source": rows[-1]["energy_source"],
            "sparse_activation": (statistics.fmean(r["activation_rate"] for r in sparse) if sparse else 1.0),
            "wall_s": time.perf_counter() - t0,
        }


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else math.nan)


def summarise(runs: list[dict], arms: list[Arm]) -> list[dict]:
    ref = [r for r in runs if r["arm"] == "dense"]
    ref_flops = statistics.fmean(r["flops"] for r in ref)
    ref_time = statistics.fmean(r["train_time_s"] for r in ref)
    ref_energy = statistics.fmean(r["energy_j"] for r in ref)
    # Energy saved at equal test accuracy against the dense arms' frontier, paired by seed.
    savings = frontier_savings(runs, {a.name: a.epochs_share for a in arms if a.strategy == "dense"},
                               [a.name for a in arms if a.strategy != "dense"])
    out = []
    for arm in arms:
        rs = [r for r in runs if r["arm"] == arm.name]
        if not rs:
            continue
        row = {"arm": arm.name, "strategy": arm.strategy, "seeds": len(rs), "epochs": rs[0]["epochs"],
               "energy_source": rs[0]["energy_source"]}
        for key in ("test_acc", "final_test_acc", "best_val_acc", "final_val_acc", "sparse_activation"):
            row[key], row[key + "_sd"] = _mean_sd([r[key] for r in rs])
        row["flops_ratio"], row["flops_ratio_sd"] = _mean_sd([r["flops"] / ref_flops for r in rs])
        row["time_ratio"], row["time_ratio_sd"] = _mean_sd([r["train_time_s"] / ref_time for r in rs])
        row["energy_ratio"], row["energy_ratio_sd"] = _mean_sd([r["energy_j"] / ref_energy for r in rs])
        row.update(savings.get(arm.name, {"saving": math.nan, "saving_lo": math.nan, "saving_hi": math.nan,
                                          "saving_note": "the frontier" if arm.strategy == "dense" else ""}))
        out.append(row)
    return out


def judge(table: list[dict], metric: str = "test_acc") -> list[dict]:
    """The targets, one verdict per AST arm that costs at most half of dense's FLOPs."""
    dense = next(r for r in table if r["arm"] == "dense")
    cheap = [r for r in table if r["strategy"] in ("random", "dense") and r["arm"] != "dense"]
    verdicts = []
    for r in table:
        if r["strategy"] not in AST_STRATEGIES:
            continue
        # The rivals at the same cost: random and "dense for fewer epochs" nearest in FLOPs.
        rivals = {}
        for kind in ("random", "dense"):
            pool = [c for c in cheap if c["strategy"] == kind]
            if pool:
                rivals[kind] = min(pool, key=lambda c: abs(c["flops_ratio"] - r["flops_ratio"]))
        gap = (dense[metric] - r[metric]) * 100
        beats = {k: (r[metric] - c[metric]) > (c[metric + "_sd"] if not math.isnan(c[metric + "_sd"]) else 0.0)
                 for k, c in rivals.items()}
        verdicts.append({"arm": r["arm"], "flops_ratio": r["flops_ratio"], "points_below_dense": gap,
                         "within_0.3_points": gap <= 0.3, "flops_at_most_half": r["flops_ratio"] <= 0.5,
                         "rivals": {k: c["arm"] for k, c in rivals.items()}, "beats_rival_by_more_than_sd": beats,
                         "meets_target": gap <= 0.3 and r["flops_ratio"] <= 0.5 and all(beats.values())})
    return verdicts


def print_table(title: str, table: list[dict]) -> None:
    print(f"\n{title}")
    print(f"{'arm':<22} {'epochs':>6} {'test_acc':>16} {'final test_acc':>16} {'best val_acc':>16} {'FLOPs':>12} "
          f"{'time':>12} {'energy':>12} {'activation':>11} {'saving vs frontier [95% CI]':>28}")
    for r in table:
        def pm(key: str, scale: float = 1.0, digits: int = 4) -> str:
            sd = r[key + "_sd"]
            return f"{r[key] * scale:.{digits}f}±{'nan' if math.isnan(sd) else f'{sd * scale:.{digits}f}'}"
        saving = ("—" if math.isnan(r["saving"]) else
                  f"{100 * r['saving']:+.1f}% [{100 * r['saving_lo']:+.1f}..{100 * r['saving_hi']:+.1f}]")
        print(f"{r['arm']:<22} {r['epochs']:>6} {pm('test_acc'):>16} {pm('final_test_acc'):>16} {pm('best_val_acc'):>16} "
              f"{pm('flops_ratio', digits=3):>12} {pm('time_ratio', digits=3):>12} {pm('energy_ratio', digits=3):>12} "
              f"{r['sparse_activation']:>11.3f} {saving:>28}")
    print(f"ratios to dense at the full budget; energy source: {table[0]['energy_source']}; mean±sd over seeds")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=10, help="the full epoch budget (dense)")
    p.add_argument("--subset", type=int, default=10000, help="stratified training subset; 0 = all 60,000")
    p.add_argument("--model", default="test_resnet")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--root", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-quickstart", action="store_true", help="skip the resnet18 quickstart part")
    p.add_argument("--arms", default="", help="run only these Fashion-MNIST arms (comma-separated names, e.g. "
                   "'dense,infobatch r=0.5'); dense, the reference of every ratio, is always run")
    p.add_argument("--resume", action="store_true", help="keep the runs already in the JSON file")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)

    settings = {k: v for k, v in vars(args).items() if k not in ("resume", "out")}
    done: list[dict] = []
    if args.resume and args.out.exists():
        saved = json.loads(args.out.read_text())
        # Which arms is not a setting of the runs: resuming with more arms keeps the others.
        same = ("arms", "no_quickstart")
        if {k: v for k, v in saved.get("settings", {}).items() if k not in same} == \
                {k: v for k, v in settings.items() if k not in same}:
            done = saved.get("runs", [])
        else:
            print(f"[accuracy] --resume: {args.out} was written with other settings; starting afresh", flush=True)
        settings["arms"] = ",".join(x for x in (saved.get("settings", {}).get("arms", ""), args.arms) if x) \
            if done else args.arms
    record = {"settings": settings, "git_commit": git_commit(), "hardware": hardware(),
              "libraries": library_versions(), "command": " ".join(sys.argv), "runs": done}

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(f".{args.out.name}.tmp")
        tmp.write_text(json.dumps(record, indent=2))
        tmp.replace(args.out)

    fashion = ("configs/fashion.yaml", [f"model.name={args.model}", f"dataset.train_subset={args.subset}",
                                        f"dataset.root={args.root}", f"training.batch_size={args.batch_size}",
                                        f"training.device={args.device}", "energy.meter=auto"])
    quick = ("configs/quickstart.yaml", ["model.name=resnet18", f"training.device={args.device}"])
    chosen = {a.strip() for a in args.arms.split(",") if a.strip()}
    arms = [a for a in fashion_arms() if not chosen or a.name in chosen | {"dense"}]
    unknown = chosen - {a.name for a in fashion_arms()}
    if unknown:
        p.error(f"--arms: no arm named {sorted(unknown)[0]!r}; arms: {', '.join(a.name for a in fashion_arms())}")
    parts = [("fashion", fashion, arms, args.epochs, args.seeds)]
    if not args.no_quickstart:
        parts.append(("quickstart", quick, quickstart_arms(), 6, 2))
    started = time.perf_counter()
    for part, (config, base), arms, epochs, seeds in parts:
        for seed in range(seeds):
            for arm in arms:
                if any(r["part"] == part and r["arm"] == arm.name and r["seed"] == seed for r in record["runs"]):
                    continue
                result = train_once(config, base, arm, epochs, seed)
                record["runs"].append({"part": part, **result})
                save()
                print(f"[{time.perf_counter() - started:7.0f} s] {part} {arm.name} seed {seed}: "
                      f"test_acc {result['test_acc']:.4f} (epoch {result['selected_epoch']}), "
                      f"final {result['final_test_acc']:.4f}, {result['wall_s']:.0f} s", flush=True)
    for part, _, arms, _, _ in parts:
        table = summarise([r for r in record["runs"] if r["part"] == part], arms)
        record[f"{part}_table"] = table
        print_table(f"{part}: {'Fashion-MNIST' if part == 'fashion' else 'quickstart digits, resnet18, 6 epochs'}",
                    table)
    record["fashion_targets"] = judge(record["fashion_table"])
    if "quickstart_table" in record:
        qt = {r["arm"]: r for r in record["quickstart_table"]}
        record["quickstart_targets"] = {
            arm: {"points_below_dense": (qt["dense"]["test_acc"] - qt[arm]["test_acc"]) * 100,
                  "within_1_point": (qt["dense"]["test_acc"] - qt[arm]["test_acc"]) * 100 <= 1.0}
            for arm in ("reforward a=0.3", "stale a=0.3")}
    save()
    print("\ntargets (test_acc at the epoch validation selected):")
    for v in record["fashion_targets"]:
        print(f"  {v['arm']:<18} FLOPs {v['flops_ratio']:.3f}, {v['points_below_dense']:+.2f} points below dense, "
              f"beats {v['rivals']} by more than their sd: {v['beats_rival_by_more_than_sd']} -> "
              f"{'MET' if v['meets_target'] else 'missed'}")
    for arm, v in record.get("quickstart_targets", {}).items():
        print(f"  quickstart {arm}: {v['points_below_dense']:+.2f} points below dense -> "
              f"{'MET' if v['within_1_point'] else 'missed'}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

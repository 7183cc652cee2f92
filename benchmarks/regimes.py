"""Where selection can win: every method against training less, in four regimes.

Real Fashion-MNIST (the original IDX files; ``apt-get install dataset-fashion-mnist``),
the same small model (``test_resnet``) in every regime, every arm through the real
engine (``astray.engine.trainer.run``), several seeds shared by all arms (paired):

- ``clean``: 10 epochs on a 10,000-image subset (the matched-budget benchmark's regime);
- ``clean-long``: 40 epochs on 5,000 images;
- ``noise-20``, ``noise-40``: 20 epochs on 10,000 images with 20 % / 40 % of the training
  (and validation) labels flipped symmetrically; the test split stays clean.

Arms: the dense frontier (the full epoch budget and 0.75 / 0.5 / 0.3 of it, each on a
cosine schedule over its own epochs), ``random``, ``infobatch`` (r = 0.5), ``stale`` and
``reforward`` at activation 0.3, and the noise-robust significance of docs/design.md §11
on ``reforward`` at 0.3: the band (``ast.upper_quantile`` 0.9) and the reducible loss
(``ast.significance: reducible``, 2 folds × 2 epochs, its cost included).

Per regime and arm: test accuracy at the epoch validation selected (mean ± sd), FLOPs,
time and energy as ratios to dense at the full budget, the share of the samples trained
whose label was flipped, and the energy saving at equal accuracy against that regime's
dense frontier with its paired 95 % interval (the report's statistics,
``astray.analysis.frontier.advantage``). Energy is the run's meter (``model``, seconds ×
watts, an estimate on this CPU machine; ``nvml`` on a GPU): run nothing else beside it.

Results go to ``benchmarks/results/regimes.json`` after every run, so an interrupted
benchmark keeps what it finished and ``--resume`` skips it. On 2 CPU cores each noisy
regime took 1.16-1.23 h (30 runs of 20 epochs), clean-long 1.34 h and clean 0.53 h;
the whole benchmark 4.25 hours of training there. Run
a regime's seeds in one session, alone: its energies compare within the regime only.

    python benchmarks/regimes.py --resume                       # all four regimes, 3 seeds
    python benchmarks/regimes.py --regimes noise-40 --resume    # one regime
    python benchmarks/regimes.py --quick                        # digits, 2 epochs: checks the script (~3 min alone)
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

from astray.analysis.frontier import advantage, estimate, upper_envelope  # noqa: E402
from astray.analysis.results import FrontierPoint, Run  # noqa: E402
from astray.config.load import load_config  # noqa: E402
from astray.engine.trainer import run  # noqa: E402
from astray.sweep.provenance import git_commit, hardware, library_versions  # noqa: E402
from astray.sweep.store import trial_summary  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "regimes.json"
FASHION = "configs/fashion.yaml"


@dataclass(frozen=True)
class Regime:
    name: str
    epochs: int
    overrides: dict = field(default_factory=dict)
    noise: float = 0.0


REGIMES = (
    Regime("clean", 10, {"dataset.train_subset": 10000}),
    Regime("clean-long", 40, {"dataset.train_subset": 5000}),
    Regime("noise-20", 20, {"dataset.train_subset": 10000}, 0.2),
    Regime("noise-40", 20, {"dataset.train_subset": 10000}, 0.4),
)
QUICK = (Regime("quick-noise-30", 2, {}, 0.3),)  # digits


@dataclass(frozen=True)
class Arm:
    name: str
    strategy: str
    epochs_share: float = 1.0
    overrides: dict = field(default_factory=dict)

    @property
    def dense(self) -> bool:
        return self.strategy == "dense"


A = {"ast.target_activation": 0.3}
ARMS = (
    Arm("dense", "dense"), Arm("dense 0.75", "dense", 0.75), Arm("dense 0.5", "dense", 0.5),
    Arm("dense 0.3", "dense", 0.3),
    Arm("random a=0.3", "random", overrides=A),
    Arm("infobatch r=0.5", "infobatch", overrides={"ast.infobatch.prune_ratio": 0.5}),
    Arm("stale a=0.3", "stale", overrides=A),
    Arm("reforward a=0.3", "reforward", overrides=A),
    Arm("band q=0.9", "reforward", overrides={**A, "ast.upper_quantile": 0.9}),
    Arm("reducible", "reforward", overrides={**A, "ast.significance": "reducible"}),
)


def train_once(config: str, base: dict, regime: Regime, arm: Arm, seed: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="astray-regimes-") as tmp:
        epochs = max(1, round(regime.epochs * arm.epochs_share))
        values = {**base, **regime.overrides, "ast.strategy": arm.strategy, "training.epochs": epochs,
                  "training.seed": seed, "logging.output_dir": f"{tmp}/run", **arm.overrides}
        if regime.noise:
            values |= {"dataset.label_noise.rate": regime.noise, "dataset.label_noise.kind": "symmetric"}
        t0 = time.perf_counter()
        rows = run(load_config(REPO / config, [f"{k}={v}" for k, v in values.items()])).rows
        s = trial_summary("bench", rows)
        return {"regime": regime.name, "arm": arm.name, "seed": seed, "epochs": epochs,
                "test_acc": s["test_acc"], "final_test_acc": s["final_test_acc"], "val_acc": s["val_acc"],
                "selected_epoch": s["selected_epoch"], "flops": s["flops"], "time_s": sum(r["train_time_s"] for r in rows),
                "energy_j": s["energy_j"], "setup_energy_j": s["setup_energy_j"], "energy_source": s["energy_source"],
                "noisy_share": s["noisy_share"], "activation_rate": s["activation_rate"],
                "wall_s": time.perf_counter() - t0}


def _ms(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else math.nan)


def frontier_savings(runs: list[dict], dense: dict[str, float], others: list[str]) -> dict[str, dict]:
    """Each of ``others``' energy saving at equal test accuracy against the frontier of
    the ``dense`` arms (name -> share of the epoch budget), paired by seed: the report's
    statistics (``astray.analysis.frontier.advantage``). Runs are dicts with ``arm``,
    ``seed``, ``energy_j`` and ``test_acc``."""
    def runs_of(name: str) -> list[Run]:
        return [Run(r["seed"], r["seed"], r["energy_j"], r["test_acc"]) for r in runs if r["arm"] == name]

    frontier = upper_envelope([FrontierPoint(estimate([x.energy for x in rs]), estimate([x.accuracy for x in rs]),
                                             name, share, tuple(rs))
                               for name, share in dense.items() for rs in [runs_of(name)] if rs])
    out = {}
    for name in others:
        mine = runs_of(name)
        if mine:
            adv = advantage(estimate([x.accuracy for x in mine]), estimate([x.energy for x in mine]), frontier,
                            mine, "test_acc")
            out[name] = {"saving": adv.energy_saving, "saving_lo": adv.energy_saving_lo,
                         "saving_hi": adv.energy_saving_hi, "saving_note": adv.note}
    return out


def summarise(runs: list[dict], arms: tuple[Arm, ...]) -> list[dict]:
    """One row per arm of one regime; the saving against that regime's dense frontier."""
    ref = [r for r in runs if r["arm"] == "dense"]
    if not ref:
        return []
    ref_flops, ref_time, ref_energy = (statistics.fmean(r[k] for r in ref) for k in ("flops", "time_s", "energy_j"))
    savings = frontier_savings(runs, {a.name: a.epochs_share for a in arms if a.dense},
                               [a.name for a in arms if not a.dense])
    out = []
    for arm in arms:
        rs = [r for r in runs if r["arm"] == arm.name]
        if not rs:
            continue
        row = {"arm": arm.name, "seeds": len(rs), "epochs": rs[0]["epochs"], "energy_source": rs[0]["energy_source"]}
        for key in ("test_acc", "final_test_acc", "noisy_share", "activation_rate"):
            row[key], row[key + "_sd"] = _ms([r[key] for r in rs])
        row["flops_ratio"] = statistics.fmean(r["flops"] for r in rs) / ref_flops
        row["time_ratio"] = statistics.fmean(r["time_s"] for r in rs) / ref_time
        row["energy_ratio"] = statistics.fmean(r["energy_j"] for r in rs) / ref_energy
        row["setup_energy_share"] = statistics.fmean(r["setup_energy_j"] / r["energy_j"] for r in rs)
        if arm.dense:
            row.update(saving=math.nan, saving_lo=math.nan, saving_hi=math.nan, saving_note="the frontier")
        else:
            row.update(savings[arm.name])
        out.append(row)
    return out


def targets(tables: dict[str, list[dict]]) -> list[dict]:
    """The issue's targets, met or missed, from the tables that exist."""
    out = []
    robust = ("band q=0.9", "reducible")
    for name in ("noise-40",):
        rows = {r["arm"]: r for r in tables.get(name, [])}
        wins = [a for a, r in rows.items() if a not in ("random a=0.3",) and not a.startswith("dense")
                and r["saving_lo"] > 0 and r["energy_ratio"] <= 0.5]
        out.append({"target": f"{name}: an astray method saves energy at equal accuracy, interval above 0, "
                              "at <= 0.5x dense energy", "met": bool(wins), "by": wins})
    for name, rate in (("noise-20", 0.2), ("noise-40", 0.4)):
        rows = {r["arm"]: r for r in tables.get(name, [])}
        for arm in robust:
            if arm in rows:
                out.append({"target": f"{name}: {arm} trains a noisy share below the rate {rate}",
                            "met": rows[arm]["noisy_share"] < rate, "by": rows[arm]["noisy_share"]})
    for name in ("clean", "clean-long"):
        rows = {r["arm"]: r for r in tables.get(name, [])}
        for arm in robust:
            if arm in rows and "reforward a=0.3" in rows:
                gap = (rows["reforward a=0.3"]["test_acc"] - rows[arm]["test_acc"]) * 100
                out.append({"target": f"{name}: {arm} loses <= 0.3 points against reforward a=0.3",
                            "met": gap <= 0.3, "by": gap})
    return out


def print_table(name: str, table: list[dict]) -> None:
    print(f"\n{name}")
    print(f"{'arm':<17} {'ep':>3} {'test_acc mean±sd':>17} {'FLOPs':>6} {'time':>6} {'energy':>6} "
          f"{'noisy':>6} {'saving vs frontier [95% CI]':>30}")
    for r in table:
        sd = "nan" if math.isnan(r["test_acc_sd"]) else f"{r['test_acc_sd']:.4f}"
        saving = ("—" if not math.isfinite(r["saving"]) else
                  f"{100 * r['saving']:+.1f}% [{100 * r['saving_lo']:+.1f}..{100 * r['saving_hi']:+.1f}]")
        print(f"{r['arm']:<17} {r['epochs']:>3} {r['test_acc']:.4f}±{sd:<6} {r['flops_ratio']:>6.2f} "
              f"{r['time_ratio']:>6.2f} {r['energy_ratio']:>6.2f} {r['noisy_share']:>6.3f} {saving:>30}")
    if table:
        print(f"ratios to dense at the full budget; energy source: {table[0]['energy_source']}; {table[0]['seeds']} seeds")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--regimes", default="", help="comma-separated regime names (default: all four)")
    p.add_argument("--root", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--device", default="auto")
    p.add_argument("--quick", action="store_true", help="digits with 30 %% noise, 2 epochs, 2 seeds: checks the script")
    p.add_argument("--resume", action="store_true", help="keep the runs already in the JSON file")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    out = args.out or (RESULTS.with_name("regimes_quick.json") if args.quick else RESULTS)
    if args.quick:
        config, base, regimes, seeds = "configs/quickstart.yaml", {"training.device": args.device}, QUICK, 2
    else:
        base = {"model.name": "test_resnet", "dataset.root": args.root, "training.device": args.device,
                "energy.meter": "auto"}
        config, seeds = FASHION, args.seeds
        chosen = {r.strip() for r in args.regimes.split(",") if r.strip()}
        unknown = chosen - {r.name for r in REGIMES}
        if unknown:
            p.error(f"--regimes: no regime named {sorted(unknown)[0]!r}; regimes: {', '.join(r.name for r in REGIMES)}")
        regimes = tuple(r for r in REGIMES if not chosen or r.name in chosen)
    settings = {"seeds": seeds, "root": args.root, "device": args.device, "quick": args.quick}
    record = {"settings": settings, "runs": []}
    if args.resume and out.exists():
        saved = json.loads(out.read_text())
        if saved.get("settings") == settings:
            record = saved
    here = {"git_commit": git_commit(), "hardware": hardware(), "libraries": library_versions(),
            "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:])}
    record.update(here)  # the last invocation; each regime keeps its own below, as --resume mixes them
    provenance = record.setdefault("provenance", {})

    def save() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(json.dumps(record, indent=2))
        tmp.replace(out)

    started = time.perf_counter()
    for regime in regimes:
        for seed in range(seeds):  # seed-major: an interrupted benchmark has whole seeds of every arm
            for arm in ARMS:
                if any(r["regime"] == regime.name and r["arm"] == arm.name and r["seed"] == seed
                       for r in record["runs"]):
                    continue
                result = train_once(config, base, regime, arm, seed)
                record["runs"].append(result)
                provenance[regime.name] = here
                save()
                print(f"[{time.perf_counter() - started:7.0f} s] {regime.name} {arm.name} seed {seed}: test_acc "
                      f"{result['test_acc']:.4f}, noisy share {result['noisy_share']:.3f}, {result['wall_s']:.0f} s",
                      flush=True)
    names = sorted({r["regime"] for r in record["runs"]}, key=lambda n: [g.name for g in REGIMES + QUICK].index(n))
    record["tables"] = {n: summarise([r for r in record["runs"] if r["regime"] == n], ARMS) for n in names}
    record["targets"] = targets(record["tables"])
    record["wall_s"] = sum(r["wall_s"] for r in record["runs"])
    save()
    for n, table in record["tables"].items():
        print_table(n, table)
    print("\ntargets:")
    for t in record["targets"]:
        print(f"  {'MET   ' if t['met'] else 'missed'} {t['target']} ({t['by']})")
    print(f"wrote {out}; {record['wall_s'] / 3600:.2f} h of training in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What early stopping saves a whole sweep, and whether it changes the answer.

Runs the Fashion-MNIST frontier sweep (``benchmarks/frontier_sweep.py``: the same
configurations, seeds, baselines and confirmation) twice on this machine, one after the
other and alone on it (energy is time-based on a CPU): with ``sweep.early_stop`` off and
on (``configs/fashion.yaml``'s rungs, epochs 2 and 6 of 10, η = 3). Then it compares the
sweep's own cost (``sweep.json`` ``cost``: training and evaluation energy of every trial,
by kind, and the wall time), the configurations on the front, and the headline.

Target (issue 24): at least 40 % less sweep energy, with the same headline and the same
front configurations.

Writes ``benchmarks/results/early_stop_effect.json``; each sweep's own JSON goes beside
it (``frontier_sweep.json`` for the off run, ``frontier_sweep_early_stop.json`` for the
on run).

    python benchmarks/early_stop_effect.py                      # both sweeps, then the comparison
    python benchmarks/early_stop_effect.py --on ON.json          # run only the off sweep
    python benchmarks/early_stop_effect.py --off OFF.json --on ON.json  # compare finished ones
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
TARGET_SAVING = 0.40


def run(early_stop: bool, out: Path, results: str | None) -> None:
    args = [sys.executable, str(REPO / "benchmarks" / "frontier_sweep.py"), "--out", str(out)]
    args += (["--early-stop"] if early_stop else []) + (["--results", results] if results else [])
    subprocess.run(args, cwd=REPO, check=True)


def summary(d: dict) -> dict:
    cost = d["sweep_cost"]
    kinds = {k: v["energy_j"] + v["val_energy_j"] for k, v in cost["by_kind"].items()}
    return {
        "total_energy_j": cost["total_energy_j"],
        "energy_by_kind_j": kinds,
        "epochs_by_kind": {k: v["epochs"] for k, v in cost["by_kind"].items()},
        "trials_by_kind": {k: v["trials"] for k, v in cost["by_kind"].items()},
        "wall_s": d["sweep_wall_s"],
        "front": sorted(r["config_id"] for r in d["configurations"] if r["on_front"]),
        "closest": closest(d["headlines"]),
        "beats": [not h.startswith("No searched configuration beats") for h in d["headlines"]],
        "headlines": d["headlines"],
        "stopped": (d.get("early_stop") or {}).get("stopped", {}),
        "estimated_saving_j": cost.get("early_stop_saved_j", 0.0),
        "energy_source": cost.get("energy_source"),
    }


def closest(headlines: list[str]) -> list[str]:
    """The configuration each headline names first (the closest or the winner)."""
    out = []
    for h in headlines:
        words = [w.strip(",.;:") for w in h.split()]
        out.append(next((w for w in words if w.startswith("search-")), "—"))
    return out


def compare(off: dict, on: dict) -> dict:
    a, b = summary(off), summary(on)
    saving = 1 - b["total_energy_j"] / a["total_energy_j"]
    searched_off = a["energy_by_kind_j"]["searched"] + a["energy_by_kind_j"]["stopped early"]
    searched_on = b["energy_by_kind_j"]["searched"] + b["energy_by_kind_j"]["stopped early"]
    same_front, same_headline = a["front"] == b["front"], (a["closest"], a["beats"]) == (b["closest"], b["beats"])
    return {
        "off": a, "on": b,
        "sweep_energy_saving": saving,
        "searched_energy_saving": 1 - searched_on / searched_off if searched_off else math.nan,
        "wall_saving": 1 - b["wall_s"] / a["wall_s"],
        "same_front": same_front, "same_headline": same_headline,
        "target": f">= {TARGET_SAVING:.0%} less sweep energy, same headline and front",
        "target_met": saving >= TARGET_SAVING and same_front and same_headline,
    }


def table(c: dict) -> str:
    a, b = c["off"], c["on"]
    rows = [("sweep energy [J]", f"{a['total_energy_j']:.0f}", f"{b['total_energy_j']:.0f}",
             f"{100 * c['sweep_energy_saving']:+.1f}%")]
    for k in a["energy_by_kind_j"]:
        rows.append((f"  {k} [J] (epochs)", f"{a['energy_by_kind_j'][k]:.0f} ({a['epochs_by_kind'][k]})",
                     f"{b['energy_by_kind_j'][k]:.0f} ({b['epochs_by_kind'][k]})", ""))
    rows.append(("  searched + stopped [J]", "", "", f"{100 * c['searched_energy_saving']:+.1f}%"))
    rows.append(("wall time [s]", f"{a['wall_s']:.0f}", f"{b['wall_s']:.0f}", f"{100 * c['wall_saving']:+.1f}%"))
    rows.append(("front", ", ".join(a["front"]), ", ".join(b["front"]), "same" if c["same_front"] else "changed"))
    rows.append(("headline names", ", ".join(a["closest"]) + (" (beats)" if any(a["beats"]) else " (no win)"),
                 ", ".join(b["closest"]) + (" (beats)" if any(b["beats"]) else " (no win)"),
                 "same" if c["same_headline"] else "changed"))
    rows.append(("stopped (config: rung)", "—", ", ".join(f"{k}: {v}" for k, v in b["stopped"].items()) or "none", ""))
    lines = ["| | early stopping off | on | change |", "|---|---|---|---|"]
    lines += [f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--off", default=None, help="a finished off sweep's frontier_sweep.py JSON (else it is run)")
    p.add_argument("--on", default=None, help="a finished on sweep's frontier_sweep.py JSON (else it is run)")
    p.add_argument("--results", default=None, help="where the sweeps' stores go (default: temporary folders)")
    p.add_argument("--out", default=str(RESULTS / "early_stop_effect.json"))
    args = p.parse_args()
    out = Path(args.out)
    off = Path(args.off) if args.off else out.parent / "frontier_sweep.json"
    on = Path(args.on) if args.on else out.parent / "frontier_sweep_early_stop.json"
    if not args.off:
        run(False, off, args.results)
    if not args.on:
        run(True, on, args.results)
    c = compare(json.loads(off.read_text()), json.loads(on.read_text()))
    print(table(c))
    print(f"target {c['target']}: {'met' if c['target_met'] else 'missed'} "
          f"(sweep energy {100 * c['sweep_energy_saving']:+.1f}%; energy source {c['on']['energy_source']})")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
                               "off_json": str(off), "on_json": str(on), **c}, indent=2, default=str))
    print(f"[early-stop] wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

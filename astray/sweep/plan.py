"""Which trial comes next, what Optuna is told, and what is still missing: baselines,
seed replicates and replicate means, rebuilt from what is durable (docs/design.md §9).

A sweep trains every configuration ``search.repeats`` times in a row, with seeds
``training.seed + r``. The baselines, in config order, are spread evenly among the
searched configurations Optuna proposes (:func:`launch_order`), so that trials running
side by side (``search.max_concurrent``) give baselines the same kind of neighbours as
searched ones. Each (configuration, replicate) is one trial with a
stable id, ``<config_id>-r<replicate>``: the store keys its rows by it, Ray's trial
folders carry it, and a trial a killed driver left half done continues under it.

Nothing here lives only in memory. Every driver, the first or a resumed one, builds the
plan from the store's trial rows (what ran) and the Optuna journal (what was proposed and
told): a driver killed at any moment leaves nothing behind that the next one cannot see.
Optuna sees each searched configuration once: it is asked for it when its first replicate
is handed out, and told once all have finished: the mean of the replicates' objectives,
a diverged or failed replicate counted at the worst finished one's value, or failed when
more than half of them diverged or failed (:func:`replicate_mean`); a configuration that
early stopping stopped at a rung is told PRUNED, and none of its replicates is handed
out again. Baselines are never
shown to Optuna: their parameters are not points of the searched space. No Ray here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from astray.config.sweep import Baseline
from astray.schema import COMPLETED, DIVERGED, ERROR, KIND_SEARCHED, PHASE_CONFIRM, Objective

Result = dict[str, Any] | None
MISSING_LISTED = 12  # a missing-trials line names at most this many


def searched_config_id(index: int) -> str:
    return f"search-{index:04d}"


def trial_key(config_id: str, replicate: int) -> str:
    """The stable id of a configuration's replicate (store rows, Ray folders)."""
    return f"{config_id}-r{replicate}"


def launch_order(baselines: int, searched: int) -> list[tuple[bool, int]]:
    """The order configurations are launched in, as ``(is_baseline, index)``: of the
    ``n = baselines + searched`` slots, baseline ``i`` takes slot
    ``(2i + 1) * n // (2 * baselines)``, the middle of its share, and the searched ones
    the rest, in order."""
    n = baselines + searched
    at = {(2 * i + 1) * n // (2 * baselines): i for i in range(baselines)}
    order: list[tuple[bool, int]] = []
    j = 0
    for slot in range(n):
        if slot in at:
            order.append((True, at[slot]))
        else:
            order.append((False, j))
            j += 1
    return order


class Proposal(Protocol):
    config_id: str
    params: dict[str, Any]
    told: bool
    phase: str | None  # astray.schema PHASE_*: how the sampler drew it


class Study(Protocol):
    """What the plan needs from the searcher (``astray.sweep.study.SweepStudy``)."""

    def proposals(self) -> Sequence[Proposal]: ...

    def ask(self, config_id: str) -> Proposal: ...

    def tell(self, config_id: str, mean: Result, pruned: bool = False) -> None: ...


class EarlyStops(Protocol):
    """What the plan needs from early stopping (``astray.sweep.early_stop.EarlyStopping``)."""

    def stopped(self, config_id: str) -> bool: ...


@dataclass
class Configuration:
    config_id: str
    kind: str  # astray.schema KIND_*
    value: float | None  # a baseline's budget or activation
    params: dict[str, Any] = field(default_factory=dict)  # searched values (empty for a baseline)
    told: bool = False  # searched: Optuna has its result
    phase: str | None = None  # searched: startup or guided (astray.schema PHASE_*)


class TrialPlan:
    """Hands out trial configs, collects their results and tells Optuna.

    ``records`` are the store's trial rows (a resumed sweep's; none at the start). A
    (configuration, replicate) whose row is ``completed`` or ``diverged`` has run and is
    never handed out again; one that is missing, still ``running`` (its driver died) or
    ``error`` is handed out, under the id of its earlier attempt, and
    ``checkpoint_of(trial_id)`` says where that attempt left a checkpoint to continue from.
    Trials are handed out in :meth:`config_order`, whichever driver hands them out.
    ``resolve(config)`` is the run config the trial trains (``trial_config.resolved_trial_run``),
    worked out once, here, and handed on in the trial's config as ``run``.
    """

    def __init__(self, baselines: Sequence[Baseline], num_samples: int, repeats: int, base_seed: int,
                 objectives: Sequence[Objective], study: Study, records: Iterable[dict[str, Any]] = (),
                 checkpoint_of: Callable[[str], str | None] = lambda trial_id: None,
                 resolve: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                 early: EarlyStops | None = None) -> None:
        self.num_samples = num_samples
        self.repeats = repeats
        self.base_seed = base_seed
        self.objectives = list(objectives)
        self.metrics = [o.metric for o in self.objectives]
        self.study = study
        self.checkpoint_of = checkpoint_of
        self.resolve = resolve
        self.configs: dict[str, Configuration] = {
            b.config_id: Configuration(b.config_id, b.kind, b.value) for b in baselines}
        self.baseline_ids = list(self.configs)
        self.baselines = len(self.configs)
        for p in study.proposals():
            self.configs[p.config_id] = Configuration(p.config_id, KIND_SEARCHED, None, dict(p.params), p.told,
                                                      p.phase)
        # (configuration, replicate) -> its row, once it has ended: ran in an earlier driver
        # (completed, diverged), or ended in this one (error too).
        self.rows: dict[tuple[str, int], dict[str, Any]] = {}
        # ... -> the trial id of an earlier attempt that did not run to a result, to continue.
        self.previous: dict[tuple[str, int], str] = {}
        for rec in records:
            key = (rec.get("config_id"), int(rec.get("replicate") or 0))
            if _ran(rec):
                self.rows[key] = rec
                self.previous.pop(key, None)
            elif key not in self.rows:
                # Stores written before stable ids may hold a (configuration, replicate)
                # twice: the one that ran wins.
                self.previous[key] = rec["trial_id"]
        # Early stopping (``astray.sweep.early_stop``): a stopped configuration's replicates
        # are never handed out again; the attempts a killed driver left unfinished are
        # ``stopped_unfinished``, for the driver to record as stopped.
        self.early = early
        self.in_flight: set[tuple[str, int]] = set()  # handed out by this driver, not finished
        self.stopped_unfinished = [tid for (cid, _), tid in self.previous.items() if self._stopped(cid)]
        # Searched configurations not proposed yet are queued under the ids they will get.
        self.queue = [(cid, r) for cid in self.config_order() for r in range(repeats)
                      if (cid, r) not in self.rows and not self._stopped(cid)]
        # A driver killed between a configuration's last replicate and the tell: tell now.
        for c in self.searched():
            self._maybe_tell(c)

    # ------------------------------------------------------------------ counts

    @property
    def total(self) -> int:
        """Trials the sweep plans: every configuration, searched or baseline, ``repeats`` times."""
        return (self.num_samples + self.baselines) * self.repeats

    def planned(self) -> int:
        """:attr:`total` less the replicates early stopping means never to train (of a
        stopped configuration, neither run nor handed out): what the progress line counts to."""
        never = sum(1 for cid in self.configs if self._stopped(cid) for r in range(self.repeats)
                    if (cid, r) not in self.rows and (cid, r) not in self.in_flight)
        return self.total - never

    def searched(self) -> list[Configuration]:
        return [c for c in self.configs.values() if c.kind == KIND_SEARCHED]

    def config_order(self) -> list[str]:
        """Every planned configuration's id in launch order (:func:`launch_order`);
        searched configurations Optuna has not proposed yet by the ids they will get."""
        searched = [c.config_id for c in self.searched()]
        searched += [searched_config_id(i) for i in range(len(searched), self.num_samples)]
        return [self.baseline_ids[i] if is_baseline else searched[i]
                for is_baseline, i in launch_order(len(self.baseline_ids), len(searched))]

    def to_train(self) -> int:
        """Trials this driver has still to hand out."""
        return len(self.queue)

    def missing(self) -> list[str]:
        """Planned trials that have not run (``completed``, ``diverged`` or ``error``), as
        ``<config_id> r<replicate>``, in plan order."""
        return [f"{cid} r{r}" for cid in self.config_order() for r in range(self.repeats)
                if not _ended(self.rows.get((cid, r))) and not self._stopped(cid)]

    def _stopped(self, config_id: str) -> bool:
        return self.early is not None and self.early.stopped(config_id)

    def missing_line(self, sweep: str) -> str:
        """One line naming what :meth:`missing` found."""
        gone = self.missing()
        shown = ", ".join(gone[:MISSING_LISTED]) + (f" and {len(gone) - MISSING_LISTED} more"
                                                     if len(gone) > MISSING_LISTED else "")
        return (f"sweep {sweep} ended with {len(gone)} of {self.total} planned trials missing ({shown}); "
                "run the same command with --resume to train them")

    # ------------------------------------------------------------------ events

    def next_trial(self) -> dict[str, Any] | None:
        """The next trial's config (None when every planned trial has been handed out).

        Besides the searched (dotted ``section.key``) values, plain keys that say what the
        trial is; they never collide with a dotted key.
        """
        while self.queue and self._stopped(self.queue[0][0]):  # stopped at a rung since it was queued
            self.queue.pop(0)
        if not self.queue:
            return None
        cid, replicate = self.queue.pop(0)
        self.in_flight.add((cid, replicate))
        if cid not in self.configs:  # a searched configuration's first replicate: ask Optuna for it
            p = self.study.ask(cid)
            self.configs[cid] = Configuration(cid, KIND_SEARCHED, None, dict(p.params), phase=p.phase)
        c = self.configs[cid]
        previous = self.previous.get((cid, replicate))
        tid = previous or trial_key(cid, replicate)
        config = {**c.params, "baseline_kind": c.kind, "baseline_value": c.value, "config_id": cid,
                  "search_phase": c.phase, "replicate": replicate, "seed": self.base_seed + replicate,
                  "trial_id": tid, "resume_from": self.checkpoint_of(tid) if previous else None}
        if self.resolve is not None:
            config["run"] = self.resolve(config)
        return config

    def finished(self, record: dict[str, Any]) -> None:
        """A trial ended (its final store row); once a searched configuration's replicates
        have all run, tell Optuna their value (:func:`replicate_mean`)."""
        cid = record["config_id"]
        self.rows[(cid, int(record["replicate"]))] = record
        self.in_flight.discard((cid, int(record["replicate"])))
        c = self.configs.get(cid)
        if c is not None and c.kind == KIND_SEARCHED:
            self._maybe_tell(c)

    def _maybe_tell(self, c: Configuration) -> None:
        rows = [self.rows.get((c.config_id, r)) for r in range(self.repeats)]
        if c.told:
            return
        if self._stopped(c.config_id):
            # Stopped at a rung: Optuna hears PRUNED once no replicate of it is still training.
            if not any(cid == c.config_id for cid, _ in self.in_flight):
                self.study.tell(c.config_id, None, pruned=True)
                c.told = True
            return
        if not all(_ended(row) for row in rows):
            return
        self.study.tell(c.config_id, replicate_mean([self._objectives(row) for row in rows], self.objectives))
        c.told = True

    def _objectives(self, row: dict[str, Any]) -> Result:
        if row["status"] != COMPLETED:
            return None
        values = {m: _finite(row.get(m)) for m in self.metrics}
        return None if any(v is None for v in values.values()) else values


class ConfirmationPlan:
    """Fresh seeds, after the search, for the configurations it picked (docs/design.md §9):
    the headline configuration, the dense budgets bracketing it and their neighbours, each trained
    ``n`` more times as replicates ``repeats .. repeats + n − 1`` (seeds
    ``training.seed + replicate``, never used by the search). Its trials carry
    ``search_phase = confirmation`` and Optuna is never told them. Like the search's
    plan it is rebuilt from the store, so a resumed driver trains only what is missing.
    """

    def __init__(self, plan: TrialPlan, picked: Sequence[str], n: int) -> None:
        unknown = [cid for cid in picked if cid not in plan.configs]
        if unknown:
            raise ValueError(f"confirmation of unknown configurations {unknown}")
        self.plan = plan
        self.picked = list(picked)
        self.replicates = list(range(plan.repeats, plan.repeats + n))
        self.queue = [(cid, r) for cid in self.picked for r in self.replicates if (cid, r) not in plan.rows]

    @property
    def total(self) -> int:
        return self.plan.total + len(self.picked) * len(self.replicates)

    def planned(self) -> int:
        return self.plan.planned() + len(self.picked) * len(self.replicates)

    def to_train(self) -> int:
        return len(self.queue)

    def missing(self) -> list[str]:
        return [f"{cid} r{r}" for cid in self.picked for r in self.replicates
                if not _ended(self.plan.rows.get((cid, r)))]

    def missing_line(self, sweep: str) -> str:
        gone = self.missing()
        return (f"sweep {sweep} ended with {len(gone)} confirmation trials missing ({', '.join(gone[:MISSING_LISTED])}); "
                "run the same command with --resume to train them")

    def next_trial(self) -> dict[str, Any] | None:
        if not self.queue:
            return None
        cid, replicate = self.queue.pop(0)
        c, plan = self.plan.configs[cid], self.plan
        previous = plan.previous.get((cid, replicate))
        tid = previous or trial_key(cid, replicate)
        config = {**c.params, "baseline_kind": c.kind, "baseline_value": c.value, "config_id": cid,
                  "search_phase": PHASE_CONFIRM, "replicate": replicate, "seed": plan.base_seed + replicate,
                  "trial_id": tid, "resume_from": plan.checkpoint_of(tid) if previous else None}
        if plan.resolve is not None:
            config["run"] = plan.resolve(config)
        return config

    def finished(self, record: dict[str, Any]) -> None:
        self.plan.rows[(record["config_id"], int(record["replicate"]))] = record


def replicate_mean(results: Sequence[Result], objectives: Sequence[Objective]) -> Result:
    """What Optuna is told for a configuration, from its replicates' objectives (None: the
    replicate diverged, failed, or finished without finite objectives).

    None (told as failed) when more than half of them are None; otherwise, per objective,
    the mean over all replicates with each None counted at the worst finished replicate's
    value (the lowest accuracy, the highest energy). Averaging only the survivors would
    reward a configuration for the seeds it lost: two of three diverged would leave the
    lucky one's value standing for the configuration.
    """
    good = [r for r in results if r is not None]
    failed = len(results) - len(good)
    if not good or 2 * failed > len(results):
        return None
    out: dict[str, Any] = {}
    for o in objectives:
        values = [r[o.metric] for r in good]
        worst = min(values) if o.maximize else max(values)
        out[o.metric] = (sum(values) + failed * worst) / len(results)
    return out | {"replicates": len(good), "failed": failed}


def _ran(row: dict[str, Any] | None) -> bool:
    """Ran to a result that --resume keeps: completed, or diverged (a result, §6)."""
    return row is not None and row.get("status") in (COMPLETED, DIVERGED)


def _ended(row: dict[str, Any] | None) -> bool:
    """Ran, or failed for good in this driver (``error``; a --resume retries it)."""
    return row is not None and row.get("status") in (COMPLETED, DIVERGED, ERROR)


def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None

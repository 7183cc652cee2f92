"""The sweep's Optuna study: one Optuna trial per searched configuration, kept in a journal.

The journal (``<store>/optuna/journal.log``, Optuna's file backend) is appended to at
every ask and every tell, so it survives the driver: it is the searcher's whole memory,
and a resumed driver reads back from it which configurations Optuna proposed and which
it was told about (docs/design.md §9). Each proposal carries its ``config_id`` and its
``search_phase`` (whether the sampler drew it at random or guided by told results) as
user attributes, set right after the ask. Optuna only: no Ray here.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from astray.config.sweep import Param, SamplerSpec, SearchConfig

CONFIG_ATTR = "config_id"  # the user attribute naming a proposal's configuration
PHASE_ATTR = "search_phase"  # ... and the one saying how the sampler drew it (astray.schema PHASE_*)
# What each Optuna trial's values are (a study user attribute; astray.sweep.plan.replicate_mean).
OBJECTIVE_VALUE = ("mean over a configuration's seed replicates, each diverged or failed one counted at the "
                   "worst finished replicate's value; failed when more than half of them diverged or failed")
# Trial states the TPE and NSGA-II samplers learn from (and count towards their start-up phase).
LEARNED_STATES = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


class SearchSpace:
    """Optuna define-by-run space: suggests each searched parameter."""

    def __init__(self, params: list[Param]) -> None:
        self.params = params

    def __call__(self, trial: optuna.Trial) -> None:
        for p in self.params:
            if p.type == "uniform":
                trial.suggest_float(p.key, p.low, p.high, step=p.step)
            elif p.type == "loguniform":
                trial.suggest_float(p.key, p.low, p.high, log=True)
            elif p.type == "int":
                trial.suggest_int(p.key, int(p.low), int(p.high), step=int(p.step or 1))
            else:
                trial.suggest_categorical(p.key, list(p.values))


def journal_storage(journal: Path) -> optuna.storages.JournalStorage:
    """The study's persistent storage: an Optuna journal file (``optuna.load_study`` and
    ``optuna-dashboard`` open it, also while the sweep runs)."""
    journal.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))


def unique_study_name(sweep_name: str) -> str:
    return f"astray-{sweep_name}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Proposal:
    """A configuration Optuna proposed, as the journal holds it."""

    config_id: str
    params: dict[str, Any]
    told: bool  # Optuna has its result (COMPLETE or FAIL)
    phase: str | None = None  # astray.schema PHASE_*; None in journals written before it was recorded


class SweepStudy:
    """Ask for a configuration, tell its replicate mean once; read back what was proposed.

    ``sampler`` is what the study samples with: the config's (``search.parsed_sampler``)
    unless the sweep was started with another (``astray.config.sweep.legacy_sampler``).
    """

    def __init__(self, search: SearchConfig, name: str, journal: Path, sampler: SamplerSpec | None = None) -> None:
        # Optuna logs each study it creates or loads at INFO; the sweep's own start line
        # names the study and its journal.
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # load_if_exists: a driver killed between writing sweep.json and creating the
        # study left no study; the resumed one creates it.
        self.sampler = sampler or search.parsed_sampler
        self.study = optuna.create_study(study_name=name, storage=journal_storage(journal),
                                         sampler=self.sampler.build(), load_if_exists=True,
                                         directions=[o.direction for o in search.parsed_objectives])
        self.study.set_user_attr("repeats", search.repeats)
        self.study.set_user_attr("objective_value", OBJECTIVE_VALUE)
        self.study.set_user_attr("sampler", self.sampler.manifest())
        self.space = SearchSpace(search.params)
        self.metrics = [o.metric for o in search.parsed_objectives]
        self._numbers: dict[str, int] = {}  # config_id -> Optuna trial number

    def proposals(self) -> list[Proposal]:
        """Every configuration Optuna proposed, in the order it proposed them."""
        out = []
        for t in self.study.get_trials(deepcopy=False):
            cid = t.user_attrs.get(CONFIG_ATTR)
            if cid is not None:
                self._numbers[cid] = t.number
                out.append(Proposal(cid, dict(t.params), t.state.is_finished(), t.user_attrs.get(PHASE_ATTR)))
        return out

    def close_orphans(self) -> int:
        """Fail the proposals a killed driver asked for but never labelled (so never
        trained): the study shows no trial running for ever. Returns how many."""
        orphans = [t.number for t in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
                   if CONFIG_ATTR not in t.user_attrs]
        for number in orphans:
            self.study.tell(number, state=optuna.trial.TrialState.FAIL)
        return len(orphans)

    def ask(self, config_id: str) -> Proposal:
        """A new configuration's searched values and phase, recorded in the journal under
        ``config_id``.

        The phase is the sampler's own rule, applied to what the study holds when it samples:
        TPE and NSGA-II draw at random until ``startup_trials`` configurations are told
        COMPLETE. The phase is labelled before ``config_id``: a labelled proposal always has one.
        """
        phase = self.sampler.phase(len(self.study.get_trials(deepcopy=False, states=LEARNED_STATES)))
        trial = self.study.ask()
        self.space(trial)
        trial.set_user_attr(PHASE_ATTR, phase)
        trial.set_user_attr(CONFIG_ATTR, config_id)
        self._numbers[config_id] = trial.number
        return Proposal(config_id, dict(trial.params), False, phase)

    def tell(self, config_id: str, mean: dict[str, Any] | None, pruned: bool = False) -> None:
        """Tell the configuration's value (``astray.sweep.plan.replicate_mean``; None: told
        as failed), or that early stopping stopped it (``pruned``: the journal shows
        PRUNED, which the samplers learn from). A configuration already told stays as it
        was told."""
        number = self._numbers[config_id]
        if pruned:
            self.study.tell(number, state=optuna.trial.TrialState.PRUNED, skip_if_finished=True)
        elif mean is None:
            self.study.tell(number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        else:
            self.study.tell(number, [mean[m] for m in self.metrics], skip_if_finished=True)

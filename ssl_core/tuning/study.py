"""The Optuna study behind ``sslrun tune``: its storage, sampler and pruner.

The study lives in the tune folder as an Optuna journal file (``study.journal``), so
running the same ``sslrun tune`` again continues it. ``--storage`` points it elsewhere:
a journal file on a file system every node sees, or an RDB URL (``sqlite:///…``,
``postgresql://…``) for large studies, shared by tune processes on several machines.

The pruner is described by a small dict kept in the study's user attributes, so the
``tune`` plugin inside each trial's run builds the very pruner the study was made with
(:func:`make_pruner`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.samplers import BaseSampler
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from ssl_core.errors import RecipeError
from ssl_core.tuning.space import Parameter

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "halving", "hyperband", "none")
#: The study's user attribute holding the pruner's description.
PRUNER_ATTR = "sslrun.pruner"
#: A trial's user attribute: the folder holding its run folders (``…/trials/trial-0007``).
FOLDER_ATTR = "sslrun.folder"
#: A trial's user attribute set by the first of its runs the pruner stops.
PRUNED_ATTR = "sslrun.pruned_after_epoch"
#: A trial's user attribute holding its runs' results, written when it ends.
RESULT_ATTR = "sslrun.result"

#: URL schemes of the relational databases Optuna's RDB storage takes.
RDB_SCHEMES = ("sqlite", "postgresql", "mysql", "oracle", "mssql")


def quiet_optuna() -> None:
    """Optuna's own per-trial INFO lines would interleave with sslrun's; keep warnings."""
    optuna.logging.set_verbosity(logging.WARNING)


def is_url(storage: str) -> bool:
    scheme = storage.partition("://")[0].split("+")[0]
    return "://" in storage and scheme in RDB_SCHEMES


def open_storage(storage: str) -> BaseStorage:
    """A journal file (a path) or a relational database (an RDB URL) as Optuna storage."""
    quiet_optuna()
    if is_url(storage):
        try:
            return RDBStorage(storage)
        except Exception as exc:  # SQLAlchemy's errors for a bad URL or a missing driver
            reason = " ".join(str(exc).split())[:200]
            raise RecipeError(f"--storage {storage}: cannot open it ({reason})") from None
    path = Path(storage)
    if not path.parent.is_dir():
        raise RecipeError(f"--storage {storage}: no folder {path.parent} for the journal file")
    return JournalStorage(JournalFileBackend(str(path)))


def make_sampler(name: str, parameters: Sequence[Parameter], seed: int) -> BaseSampler:
    """TPE (the default), random search, or a grid over parameters that are all choices.

    ``seed`` seeds the sampler; ``sslrun tune`` passes the study's seed plus the number
    of trials so far, so a continued study does not draw its first trials again.
    """
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    ranges = [p.key for p in parameters if not p.choices]
    if ranges:
        raise RecipeError(
            f"--sampler grid: every parameter must be choices; '{ranges[0]}' is a range"
        )
    return StudyGridSampler({p.key: p.categories for p in parameters}, seed=seed)


class StudyGridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler for a study driven by ask and tell.

    Optuna's own stops ``study.optimize`` once the grid is covered, which outside
    ``optimize`` is an error at the last ``tell``; ``sslrun tune`` caps ``--trials`` at
    the grid's size instead (:func:`grid_size`).
    """

    def after_trial(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        state: optuna.trial.TrialState,
        values: Sequence[float] | None,
    ) -> None:
        return None


def grid_size(parameters: Sequence[Parameter]) -> int:
    size = 1
    for parameter in parameters:
        size *= len(parameter.choices)
    return size


def pruner_description(name: str, warmup: int, epochs: int) -> dict[str, Any]:
    """What :func:`make_pruner` builds: the pruner's name, warm-up epochs and budget."""
    return {"name": name, "warmup_epochs": warmup, "epochs": epochs}


def make_pruner(description: Mapping[str, Any]) -> optuna.pruners.BasePruner:
    """The pruner a study's description names; it compares trials epoch by epoch.

    ``median``: stop a trial whose mean validation accuracy is below the median of the
    earlier trials at the same epoch (after ``warmup_epochs`` and 5 complete trials);
    ``halving``: asynchronous successive halving; ``hyperband``: Hyperband over
    1 … ``epochs`` epochs; ``none``: never stop a trial.
    """
    name, warmup = description["name"], int(description["warmup_epochs"])
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=warmup)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, warmup))
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=max(1, warmup), max_resource=int(description["epochs"])
        )
    return optuna.pruners.NopPruner()


def check_choices(sampler: str, pruner: str) -> None:
    if sampler not in SAMPLERS:
        raise RecipeError(f"--sampler {sampler}: give one of {', '.join(SAMPLERS)}")
    if pruner not in PRUNERS:
        raise RecipeError(f"--pruner {pruner}: give one of {', '.join(PRUNERS)}")


def open_study(
    storage: BaseStorage,
    name: str,
    sampler: BaseSampler | None = None,
    pruner: Mapping[str, Any] | None = None,
) -> optuna.Study:
    """The study ``name`` in ``storage``, created (maximising) if it is not there yet.

    ``pruner`` is recorded with a new study; an existing study keeps the one it was
    made with (its trials were pruned by it).
    """
    quiet_optuna()
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        sampler=sampler,
        direction="maximize",
        load_if_exists=True,
    )
    recorded = study.user_attrs.get(PRUNER_ATTR)
    if recorded is None and pruner is not None:
        study.set_user_attr(PRUNER_ATTR, dict(pruner))
    return study


def load_study(storage: BaseStorage, name: str) -> optuna.Study:
    """An existing study (for a report or a trial's pruning); refused if it is not there."""
    quiet_optuna()
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise RecipeError(f"no study '{name}' in its storage") from None

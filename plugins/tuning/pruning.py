"""The ``tune`` plugin: a trial's run reports its validation accuracy to the study.

``sslrun tune`` enables it in every trial's runs (``[plugins.tune]`` names the storage,
the study, the trial and the trial's seeds); nobody writes it into a recipe by hand.
After each epoch the run records its validation accuracy under the trial (a user
attribute per seed). Once every seed of the trial has reached an epoch, the mean
over seeds (the study's objective, epoch by epoch) becomes the trial's intermediate
value, and the study's pruner decides whether the trial goes on. A pruned trial's
runs end cleanly after their checkpoint, with status ``pruned`` (never ``failed``):
``sslrun resume`` and a rerun study leave them as they are.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field

from ssl_core import Plugin, PluginSettings, Run, hookimpl
from ssl_core.errors import RecipeError, TrainingError
from ssl_core.tuning.study import (
    PRUNED_ATTR,
    PRUNER_ATTR,
    load_study,
    make_pruner,
    open_storage,
)


class TuneSettings(PluginSettings):
    storage: str = Field(
        min_length=1, description="the study's storage: a journal file or an RDB URL"
    )
    study: str = Field(min_length=1, description="the study's name in its storage")
    trial: int = Field(ge=0, description="the trial's number in the study")
    seeds: list[int] = Field(min_length=1, description="every seed the trial trains")


def curve_key(seed: int) -> str:
    """The trial's user attribute holding one seed's validation accuracy per epoch."""
    return f"sslrun.val_acc.seed-{seed}"


class TrialReporter(Plugin):
    """Reports each epoch's validation accuracy to the study and obeys its pruner."""

    name: ClassVar[str] = "tune"
    order: ClassVar[int] = 900  # after every method plugin; the metrics are complete
    Settings: ClassVar[type[PluginSettings]] = TuneSettings

    @property
    def s(self) -> TuneSettings:
        return self.settings  # type: ignore[return-value]

    @hookimpl
    def sslrun_setup(self, run: Run) -> None:
        if run.recipe.data.validation <= 0:
            raise RecipeError(
                "plugins.tune: the study's objective is validation accuracy;"
                " set data.validation > 0"
            )
        if run.recipe.seed not in self.s.seeds:
            raise RecipeError(
                f"plugins.tune: the run's seed {run.recipe.seed} is not among the trial's"
                f" seeds {self.s.seeds}"
            )

    @hookimpl
    def sslrun_epoch_end(self, run: Run, epoch: int, metrics: Mapping[str, Any]) -> None:
        if not run.world.is_main:
            return
        try:
            self.report(run, epoch + 1, float(metrics["val_acc"]))
        except (RecipeError, TrainingError):
            raise
        except Exception as exc:  # the storage is out of reach or the trial has ended
            reason = " ".join(str(exc).split())[:200]
            raise TrainingError(
                f"plugins.tune: cannot report to study '{self.s.study}' ({reason})"
            ) from None

    def report(self, run: Run, epochs_done: int, accuracy: float) -> None:
        """Record this seed's accuracy; report the seeds' mean once all have it; prune."""
        storage = open_storage(self.s.storage)
        study = load_study(storage, self.s.study)
        study_id = storage.get_study_id_from_name(self.s.study)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, self.s.trial)
        key = curve_key(run.recipe.seed)
        recorded = storage.get_trial_user_attrs(trial_id).get(key, [])
        storage.set_trial_user_attr(trial_id, key, [*recorded[: epochs_done - 1], accuracy])
        trial = storage.get_trial(trial_id)
        if PRUNED_ATTR in trial.user_attrs:  # another seed of the trial was stopped
            self.stop(run, trial.user_attrs[PRUNED_ATTR])
            return
        curves = [trial.user_attrs.get(curve_key(seed), []) for seed in self.s.seeds]
        if any(len(curve) < epochs_done for curve in curves):
            return  # the trial's other seeds have not reached this epoch yet
        if epochs_done not in trial.intermediate_values:
            mean = statistics.fmean(curve[epochs_done - 1] for curve in curves)
            storage.set_trial_intermediate_value(trial_id, epochs_done, mean)
            trial = storage.get_trial(trial_id)
        pruner = make_pruner(study.user_attrs[PRUNER_ATTR])
        if epochs_done < run.recipe.train.epochs and pruner.prune(study, trial):
            storage.set_trial_user_attr(trial_id, PRUNED_ATTR, epochs_done)
            self.stop(run, epochs_done)

    def stop(self, run: Run, after_epoch: int) -> None:
        run.stop_early(
            self.name,
            f"trial {self.s.trial} of study '{self.s.study}' pruned after epoch {after_epoch}",
            status="pruned",
        )


@hookimpl
def sslrun_register_plugins(register) -> None:  # noqa: ANN001 - pluggy passes a callable
    register(TrialReporter)

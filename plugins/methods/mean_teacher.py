"""Mean Teacher (Tarvainen & Valpola 2017): consistency with an averaged teacher.

The teacher is the classifier's exponential moving average (:class:`AveragedModel`, the
same average as the ``ema`` plugin's). On every unlabeled batch the student (the
classifier being trained) is pulled towards the teacher's prediction:

    weight · ramp(t) · mean over images and classes of (softmax(g_student) − softmax(g_teacher))²

the squared difference of the softmaxes (their ``softmax_mse_loss``), with the sigmoid
ramp-up ramp(t) = exp(−5 (1 − t)²), t the share of ``rampup_epochs`` done (a pure
function of the step, so a resumed run ramps exactly like an uninterrupted one).

Both forwards run in training mode on the same batch, with batch statistics and the
running ones left alone (:func:`ssl_core.frozen_bn_stats`); the teacher's without
gradient. Its accuracy is scored every epoch as ``mean_teacher_test_acc``.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from ssl_plugins.methods.ema import AveragedModel
from torch import Tensor, nn

from ssl_core import (
    BatchContext,
    Plugin,
    PluginSettings,
    Run,
    frozen_bn_stats,
    full_precision,
    hookimpl,
)


class MeanTeacherSettings(PluginSettings):
    decay: float = Field(0.999, gt=0, lt=1, description="the teacher's averaging decay")
    weight: float = Field(10.0, ge=0, description="weight of the consistency term after ramp-up")
    rampup_epochs: float = Field(
        5.0, ge=0, description="epochs of the sigmoid ramp-up of the weight (0: none)"
    )


def rampup(step: int, iterations_per_epoch: int, rampup_epochs: float) -> float:
    """exp(−5 (1 − t)²) with t = min(1, epochs done / rampup_epochs) (Laine & Aila 2017)."""
    if rampup_epochs <= 0:
        return 1.0
    progress = min(1.0, step / (iterations_per_epoch * rampup_epochs))
    return math.exp(-5.0 * (1.0 - progress) ** 2)


class MeanTeacher(Plugin):
    """weight · ramp · MSE(softmax student, softmax teacher) on unlabeled data."""

    name: ClassVar[str] = "mean_teacher"
    order: ClassVar[int] = 400
    Settings: ClassVar[type[PluginSettings]] = MeanTeacherSettings

    teacher: AveragedModel

    @property
    def s(self) -> MeanTeacherSettings:
        return self.settings  # type: ignore[return-value]

    @hookimpl
    def sslrun_setup(self, run: Run) -> None:
        self.teacher = AveragedModel(run.classifier)
        run.register_state("mean_teacher.model", self.teacher.module)

    @hookimpl
    def sslrun_collect_losses(self, run: Run, batch: BatchContext) -> dict[str, Tensor]:
        x = batch.x_unlabeled
        teacher = self.teacher.module
        teacher.train()
        with frozen_bn_stats(run.classifier):
            student = full_precision(run.model(x))
        with torch.no_grad(), frozen_bn_stats(teacher):
            target = full_precision(teacher(x))
        consistency = F.mse_loss(F.softmax(student, dim=-1), F.softmax(target, dim=-1))
        ramp = rampup(
            batch.global_step, run.recipe.train.iterations_per_epoch, self.s.rampup_epochs
        )
        return {"mt_consistency": self.s.weight * ramp * consistency}

    @hookimpl
    def sslrun_after_step(self, run: Run, batch: BatchContext) -> None:
        self.teacher.update(run.classifier, AveragedModel.decay_at(batch.global_step, self.s.decay))

    @hookimpl
    def sslrun_evaluation_model(self) -> nn.Module:
        return self.teacher.module


@hookimpl
def sslrun_register_plugins(register) -> None:  # noqa: ANN001 - pluggy passes a callable
    register(MeanTeacher)

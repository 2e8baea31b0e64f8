"""An exponential moving average of the classifier, scored every epoch as ``ema_test_acc``.

USB, TorchSSL and the FixMatch reference evaluate with such an average; it smooths the
last epochs' oscillations of the weights. After every classifier step the average moves
towards the weights, θ̄ ← d·θ̄ + (1 − d)·θ, with d = min(decay, 1 − 1/(step + 1)) so that
the first steps are not dominated by the initial weights (Tarvainen & Valpola 2017, the
Mean Teacher's schedule).

Batch norm: the running statistics are *copied* from the classifier at each update, not
averaged. They are already an average over the labeled passes, and averaging them again
would make them lag behind the weights they are used with.

Processes: every rank updates its own copy from the same weights (DDP has averaged the
gradients) and the same batch-norm buffers (DDP broadcasts rank 0's), so the copies
agree; the core broadcasts rank 0's buffers again before scoring, and checkpoints rank 0's.
"""

from __future__ import annotations

import copy
from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from ssl_core import BatchContext, Plugin, PluginSettings, Run, hookimpl


class AveragedModel:
    """A frozen copy of a module whose parameters follow it by exponential averaging."""

    def __init__(self, model: nn.Module) -> None:
        self.module = copy.deepcopy(model)
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)

    @staticmethod
    def decay_at(step: int, decay: float) -> float:
        """min(decay, 1 − 1/(step + 1)): a plain mean over the first steps, then ``decay``."""
        return min(decay, 1.0 - 1.0 / (step + 1))

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float) -> None:
        """θ̄ ← decay·θ̄ + (1 − decay)·θ for every parameter; buffers copied."""
        for mine, theirs in zip(self.module.parameters(), model.parameters(), strict=True):
            mine.lerp_(theirs, 1.0 - decay)
        for mine, theirs in zip(self.module.buffers(), model.buffers(), strict=True):
            mine.copy_(theirs)


class EmaSettings(PluginSettings):
    decay: float = Field(0.999, gt=0, lt=1, description="d in θ̄ ← d·θ̄ + (1 − d)·θ after every step")


class Ema(Plugin):
    """The classifier's exponential moving average, scored beside it (``ema_<split>_acc``)."""

    name: ClassVar[str] = "ema"
    order: ClassVar[int] = 400
    Settings: ClassVar[type[PluginSettings]] = EmaSettings

    average: AveragedModel

    @hookimpl
    def sslrun_setup(self, run: Run) -> None:
        self.average = AveragedModel(run.classifier)
        run.register_state("ema.model", self.average.module)

    @hookimpl
    def sslrun_after_step(self, run: Run, batch: BatchContext) -> None:
        decay = AveragedModel.decay_at(batch.global_step, self.settings.decay)  # type: ignore[attr-defined]
        self.average.update(run.classifier, decay)

    @hookimpl
    def sslrun_evaluation_model(self) -> nn.Module:
        return self.average.module


@hookimpl
def sslrun_register_plugins(register) -> None:  # noqa: ANN001 - pluggy passes a callable
    register(Ema)

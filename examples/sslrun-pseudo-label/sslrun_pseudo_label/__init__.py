"""Pseudo-labelling (Lee, 2013) as an sslrun plugin: the worked example of docs/writing-plugins.md.

Unlabeled images the classifier already predicts with probability above a threshold
are trained on as if their predicted class were their label.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field

from ssl_core import BatchContext, Plugin, PluginSettings, Run, frozen_bn_stats, hookimpl


class PseudoLabelSettings(PluginSettings):
    weight: float = Field(1.0, ge=0, description="weight of the pseudo-label cross-entropy")
    threshold: float = Field(0.95, gt=0, le=1, description="confidence needed to pseudo-label")


class PseudoLabel(Plugin):
    """Cross-entropy on unlabeled images predicted confidently, their prediction as label."""

    name: ClassVar[str] = "pseudo_label"
    order: ClassVar[int] = 150
    Settings: ClassVar[type[PluginSettings]] = PseudoLabelSettings

    @hookimpl
    def sslrun_collect_losses(self, run: Run, batch: BatchContext) -> dict[str, torch.Tensor]:
        with frozen_bn_stats(run.classifier):
            logits = run.model(batch.x_unlabeled)
        confidence, target = logits.detach().softmax(dim=1).max(dim=1)
        mask = (confidence >= self.settings.threshold).float()
        batch.stats["pseudo_labeled"] = mask.sum()  # a tensor: the step never waits for it
        loss = (F.cross_entropy(logits, target, reduction="none") * mask).mean()
        return {"pseudo_ce": self.settings.weight * loss}


@hookimpl
def sslrun_register_plugins(register) -> None:  # noqa: ANN001 - pluggy passes a callable
    register(PseudoLabel)

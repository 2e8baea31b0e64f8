"""Cross-entropy on the labeled batch: the first term of every method (eqs. 2, 3, 8)."""

from __future__ import annotations

from typing import ClassVar

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from ssl_core import hookimpl
from ssl_core.api.plugin import Plugin, PluginSettings
from ssl_core.engine.context import BatchContext
from ssl_core.engine.run import Run


class SupervisedSettings(PluginSettings):
    weight: float = Field(1.0, ge=0)


class Supervised(Plugin):
    """-E[log p(y|x)] on labeled data; its forward pass updates batch-norm statistics."""

    name: ClassVar[str] = "supervised"
    order: ClassVar[int] = 0
    Settings: ClassVar[type[PluginSettings]] = SupervisedSettings

    @hookimpl
    def sslrun_collect_losses(self, run: Run, batch: BatchContext) -> dict[str, Tensor]:
        logits = run.model(batch.x_labeled)
        return {"ce": self.settings.weight * F.cross_entropy(logits, batch.y_labeled)}


@hookimpl
def sslrun_register_plugins(register) -> None:  # noqa: ANN001 - pluggy passes a callable
    register(Supervised)

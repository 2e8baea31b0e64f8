"""Cross-entropy on the labeled batch: the first term of every method (eqs. 2, 3, 8).

Batch norm (``batch_norm``): with ``"separate"`` (the default, as in the VAT and Bad GAN
code) the labeled batch goes through the network alone and is normalised with its own
statistics. With few labels those are the statistics of a handful of distinct images:
at 20 labels a 100-image labeled batch holds each image five times, and a network can
then fit the labels under the labeled batch's statistics while mapping every unlabeled
batch, normalised with its own, to one class, which no VAT or FAT term penalises (a
constant prediction is perfectly smooth; docs/results.md, section ``paper_ablations``).
``"joint"`` normalises the labeled batch together with the unlabeled one, one forward
over [x_labeled; x_unlabeled] with the loss on the labeled rows, as FixMatch (Sohn et
al., 2020) concatenates its batches; it costs one more forward and backward over the
unlabeled batch. The running statistics are then those of the joint batches.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from ssl_core import hookimpl
from ssl_core.api.plugin import Plugin, PluginSettings
from ssl_core.engine.context import BatchContext
from ssl_core.engine.run import Run


class SupervisedSettings(PluginSettings):
    weight: float = Field(1.0, ge=0)
    batch_norm: Literal["separate", "joint"] = Field(
        "separate",
        description="'separate': the labeled batch is normalised with its own batch"
        " statistics; 'joint': together with the unlabeled batch, in one forward over both"
        " (for very few labels)",
    )


class Supervised(Plugin):
    """-E[log p(y|x)] on labeled data; its forward pass updates batch-norm statistics."""

    name: ClassVar[str] = "supervised"
    order: ClassVar[int] = 0
    Settings: ClassVar[type[PluginSettings]] = SupervisedSettings
    graph_safe: ClassVar[bool] = True  # the same tensor work every step, no host reads

    @hookimpl
    def sslrun_collect_losses(self, run: Run, batch: BatchContext) -> dict[str, Tensor]:
        if self.settings.batch_norm == "joint":
            both = torch.cat([batch.x_labeled, batch.x_unlabeled])
            logits = run.model(both)[: len(batch.x_labeled)]
        else:
            logits = run.model(batch.x_labeled)
        return {"ce": self.settings.weight * F.cross_entropy(logits, batch.y_labeled)}


@hookimpl
def sslrun_register_plugins(register) -> None:  # noqa: ANN001 - pluggy passes a callable
    register(Supervised)

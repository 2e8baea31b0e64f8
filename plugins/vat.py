"""Virtual adversarial training (paper §2.1, eq. (1)-(2)) with FAT's sign correction (§4.2).

The plugin publishes the unit adversarial direction of the unlabeled batch in
``batch.shared["adversarial_direction"]`` (and the clean outputs in
``batch.shared["clean_logits"]``) so that the bad-sample plugin reuses them instead
of running a second power iteration.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor

from ssl_core import hookimpl
from ssl_core.adversarial import (
    kl_divergence_from_logits,
    power_iteration_direction,
    sign_corrected_direction,
)
from ssl_core.bn import frozen_bn_stats
from ssl_core.context import BatchContext
from ssl_core.kplus1 import conditional_entropy
from ssl_core.plugin import Plugin, PluginSettings
from ssl_core.run import Run

CLEAN_LOGITS = "clean_logits"
DIRECTION = "adversarial_direction"


class VatSettings(PluginSettings):
    eps: float = Field(1.5, gt=0, description="radius ε of r_adv (L2 norm per sample)")
    xi: float = Field(
        1e-6,
        gt=0,
        description="finite-difference step of the power iteration; 1e-6 underflows in"
        " float32 on [0, 1] images, use ~0.1 (see docs/fat.md)",
    )
    iterations: int = Field(1, ge=1, description="power iterations")
    variant: Literal["original", "sign_corrected"] = Field(
        "original", description="'sign_corrected' keeps the larger-KL side of ±v (§4.2)"
    )
    weight: float = Field(1.0, ge=0, description="weight of the VAT term")
    entropy_weight: float = Field(
        0.0, ge=0, description="conditional-entropy minimisation on unlabeled data (0 = off)"
    )


def clean_unlabeled_logits(run: Run, batch: BatchContext) -> Tensor:
    """p(·|x; θ̂) on the unlabeled batch, computed once per batch and shared.

    No gradient, running statistics untouched: it is the fixed target of eq. (1).
    """
    if CLEAN_LOGITS not in batch.shared:
        with torch.no_grad(), frozen_bn_stats(run.classifier):
            batch.shared[CLEAN_LOGITS] = run.classifier(batch.x_unlabeled)
    return batch.shared[CLEAN_LOGITS]


def adversarial_direction(
    run: Run,
    batch: BatchContext,
    xi: float,
    iterations: int,
    sign_corrected: bool,
    eps: float,
) -> Tensor:
    """The unit direction r_adv/‖r_adv‖ of the unlabeled batch (power iteration, §2.1).

    Gradients are taken with respect to the perturbation only; batch-norm running
    statistics are left alone. With ``sign_corrected`` the side of ±v with the larger
    KL at radius ``eps`` is kept per sample (§4.2).
    """
    x = batch.x_unlabeled
    clean = clean_unlabeled_logits(run, batch)
    with frozen_bn_stats(run.classifier):
        direction = power_iteration_direction(run.classifier, x, clean, xi, iterations)
        if sign_corrected:
            direction, sign = sign_corrected_direction(run.classifier, x, clean, direction, eps)
            batch.stats["sign_flipped"] = float((sign < 0).float().mean())
    return direction


class Vat(Plugin):
    """L^VAT = KL(p(·|x; θ̂) ‖ p(·|x + r_adv; θ)) on unlabeled data, weighted."""

    name: ClassVar[str] = "vat"
    order: ClassVar[int] = 100
    Settings: ClassVar[type[PluginSettings]] = VatSettings

    @hookimpl
    def sslrun_collect_losses(self, run: Run, batch: BatchContext) -> dict[str, Tensor]:
        s: VatSettings = self.settings  # type: ignore[assignment]
        clean = clean_unlabeled_logits(run, batch)
        direction = adversarial_direction(
            run, batch, s.xi, s.iterations, s.variant == "sign_corrected", s.eps
        )
        batch.shared[DIRECTION] = direction
        with frozen_bn_stats(run.classifier):
            adversarial = run.model(batch.x_unlabeled + s.eps * direction)
        terms = {"vat": s.weight * kl_divergence_from_logits(clean, adversarial).mean()}
        if s.entropy_weight > 0:
            with frozen_bn_stats(run.classifier):
                logits = run.model(batch.x_unlabeled)
            terms["vat_entropy"] = s.entropy_weight * conditional_entropy(logits).mean()
        return terms


@hookimpl
def sslrun_register_plugins(register) -> None:  # noqa: ANN001 - pluggy passes a callable
    register(Vat)

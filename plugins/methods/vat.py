"""Virtual adversarial training (paper §2.1, eqs. (1)-(2)) with FAT's sign correction (§4.2).

Per batch: the clean prediction p(·|x; θ̂) (no gradient), the direction of r_adv by
power iteration (gradients with respect to the perturbation only), optionally the
sign correction, then one forward at x + ε·r_adv/‖r_adv‖ whose KL is back-propagated.
In passes of one forward over the unlabeled batch (a full backward ≈ 2, an input-only
backward ≈ 1): clean 1 + power iteration 2 + adversarial 3 = 6; the sign correction
adds one no-grad forward over 2B (+2).

The plugin publishes the clean logits and the unit direction in ``batch.shared``
(keys in :mod:`ssl_plugins.methods.adversarial_batch`), so ``bad_samples`` reuses them
instead of running a second power iteration.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from ssl_plugins.methods.adversarial_batch import (
    CLEAN_LOGITS,
    DIRECTION,
    estimate_direction,
    warn_about_xi,
)
from torch import Tensor

from ssl_core import hookimpl
from ssl_core.api.plugin import Plugin, PluginSettings
from ssl_core.engine.bn import frozen_bn_stats
from ssl_core.engine.context import BatchContext
from ssl_core.engine.precision import full_precision
from ssl_core.engine.run import Run
from ssl_core.math.adversarial import kl_divergence_from_logits
from ssl_core.math.kplus1 import conditional_entropy


class VatSettings(PluginSettings):
    eps: float = Field(1.5, gt=0, description="radius ε of r_adv, L2 norm per sample (eq. (1))")
    xi: float = Field(
        1e-6,
        gt=0,
        description="finite-difference step ξ of the power iteration; the paper's 1e-6"
        " underflows in float32 on [0, 1] images, MNIST recipes use 0.1 (docs/fat.md)",
    )
    iterations: int = Field(1, ge=1, description="power iterations")
    direction: Literal["finite_difference", "hvp"] = Field(
        "finite_difference",
        description="how the power iteration multiplies by the KL's Hessian: a finite"
        " difference of step xi, in float32 even in a bf16 run, or exact Hessian-vector"
        " products ('hvp', no xi, in the training precision; docs/precision.md)",
    )
    variant: Literal["original", "sign_corrected"] = Field(
        "original", description="'sign_corrected': of ±v keep the larger-KL side (§4.2)"
    )
    weight: float = Field(1.0, ge=0, description="weight of the VAT term")
    entropy_weight: float = Field(
        0.0, ge=0, description="weight of entropy minimisation on unlabeled data (0 = off)"
    )


class Vat(Plugin):
    """L^VAT = KL(p(·|x; θ̂) ‖ p(·|x + r_adv; θ)) on unlabeled data (eq. (2)), weighted."""

    name: ClassVar[str] = "vat"
    order: ClassVar[int] = 100
    Settings: ClassVar[type[PluginSettings]] = VatSettings
    graph_safe: ClassVar[bool] = True  # the same tensor work every step, no host reads

    @hookimpl
    def sslrun_setup(self, run: Run) -> None:
        s: VatSettings = self.settings  # type: ignore[assignment]
        warn_about_xi(run, "plugins.vat.xi", s.xi, s.direction)

    @hookimpl
    def sslrun_collect_losses(self, run: Run, batch: BatchContext) -> dict[str, Tensor]:
        s: VatSettings = self.settings  # type: ignore[assignment]
        terms: dict[str, Tensor] = {}
        if s.entropy_weight > 0:
            # The entropy term needs a clean forward with gradient anyway: it becomes the
            # shared clean pass (detached) unless an earlier plugin already made one.
            with frozen_bn_stats(run.classifier):
                logits = run.model(batch.x_unlabeled)
            if logits.dtype in (torch.float32, torch.float64):  # bfloat16 is no target
                batch.shared.setdefault(CLEAN_LOGITS, logits.detach())
            entropy = conditional_entropy(full_precision(logits)).mean()
            terms["vat_entropy"] = s.entropy_weight * entropy
        sign_eps = s.eps if s.variant == "sign_corrected" else None
        direction = estimate_direction(run, batch, s.xi, s.iterations, sign_eps, s.direction)
        batch.shared[DIRECTION] = direction
        clean = batch.shared[CLEAN_LOGITS]

        # x + r_adv is formed in float32; the forward itself runs in the training
        # precision (train.precision), the KL again in float32.
        x_adv = full_precision(batch.x_unlabeled) + s.eps * full_precision(direction)
        with frozen_bn_stats(run.classifier):
            adversarial_logits = full_precision(run.model(x_adv))
        kl = kl_divergence_from_logits(full_precision(clean), adversarial_logits)
        terms["vat"] = s.weight * kl.mean()
        return terms


@hookimpl
def sslrun_register_plugins(register) -> None:  # noqa: ANN001 - pluggy passes a callable
    register(Vat)

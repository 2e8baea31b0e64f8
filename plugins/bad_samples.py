"""FAT's adversarial bad samples and the K+1 terms of eq. (8) (paper §4.1, §4.3).

Bad samples are x + C·r_adv/‖r_adv‖ on the unlabeled batch. With the ``vat`` plugin
enabled, r_adv is the direction it published for the same batch (no second power
iteration); without it, this plugin runs its own. Candidates the classifier still
calls one class with probability above 1 − α are dropped (§4.1.2).

The loss is λ·(E_unlabeled[L_true] + E_bad[L_fake]) with the K+1-th class expressed
through the K pre-softmax outputs (fake logit 0) and λ warmed up per epoch (§4.3,
§5.1). ``true_loss = "entropy"`` is eq. (8) as printed; ``"entropy_not_fake"`` adds
Bad GAN's "not fake" term −log Σ_k p(k|x), without which L_true is also minimised
by calling every real image fake (see ssl_core.kplus1 and docs/fat.md).

Batch norm: real and bad inputs go through one forward over their concatenation, so
bad samples are normalised with statistics dominated by real data (a shift common
to all bad samples stays visible to L_fake) and the L_true and L_fake forwards cost
one pass; running statistics are left untouched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from ssl_plugins.vat import DIRECTION, adversarial_direction
from ssl_plugins.visuals import save_bad_sample_figure
from torch import Tensor

from ssl_core import hookimpl
from ssl_core.adversarial import bad_samples, keep_uncertain
from ssl_core.bn import frozen_bn_stats
from ssl_core.context import BatchContext
from ssl_core.kplus1 import fake_loss, not_fake_loss, true_entropy_loss
from ssl_core.plugin import Plugin, PluginSettings
from ssl_core.run import Run

TrueLoss = Literal["entropy", "entropy_not_fake"]


class BadSampleSettings(PluginSettings):
    radius: float = Field(2.0, gt=0, description="distance C of a bad sample from x (§4.1)")
    alpha: float = Field(0.01, gt=0, lt=1, description="drop x_bad if max_k p(k|x_bad) > 1-α")
    true_loss: TrueLoss = Field(
        "entropy_not_fake",
        description="'entropy' = eq. (8) as printed; 'entropy_not_fake' adds -log Σ_k p(k|x)",
    )
    lambda_start: float = Field(0.0, ge=0, description="λ in the first epoch")
    lambda_step: float = Field(0.1, ge=0, description="λ increase after every epoch")
    lambda_max: float = Field(1.0, ge=0, description="λ cap")
    batch_norm: Literal["joint", "separate"] = Field(
        "joint",
        description="'joint': one forward over [x; x_bad] (shared batch statistics);"
        " 'separate': bad samples normalised with their own batch statistics",
    )
    fraction: float = Field(
        1.0, gt=0, le=1, description="share of the unlabeled batch that gets the K+1 terms"
    )
    eps: float = Field(1.5, gt=0, description="ε for the own direction (only without vat)")
    xi: float = Field(1e-6, gt=0, description="ξ for the own direction (only without vat)")
    iterations: int = Field(1, ge=1, description="power iterations (only without vat)")
    sign_corrected: bool = Field(True, description="sign correction (only without vat)")


def warmup_lambda(settings: BadSampleSettings, epoch: int) -> float:
    """λ for a 0-based epoch: start, plus one step after every epoch, capped (§4.3, §5.1).

    A pure function of the epoch, so a resumed run gets exactly the same λ.
    """
    return min(settings.lambda_max, settings.lambda_start + settings.lambda_step * epoch)


class BadSamples(Plugin):
    """L_true on unlabeled data and L_fake on kept bad samples, weighted by λ (eq. (8))."""

    name: ClassVar[str] = "bad_samples"
    order: ClassVar[int] = 200
    Settings: ClassVar[type[PluginSettings]] = BadSampleSettings

    def __init__(self, settings: PluginSettings) -> None:
        super().__init__(settings)
        self.last_bad: Tensor | None = None

    @hookimpl
    def sslrun_collect_losses(self, run: Run, batch: BatchContext) -> dict[str, Tensor]:
        s: BadSampleSettings = self.settings  # type: ignore[assignment]
        lam = warmup_lambda(s, batch.epoch)
        if lam == 0:
            return {}
        direction = batch.shared.get(DIRECTION)
        if direction is None:
            direction = adversarial_direction(
                run, batch, s.xi, s.iterations, s.sign_corrected, s.eps
            )
        count = max(1, round(s.fraction * len(batch.x_unlabeled)))
        x = batch.x_unlabeled[:count]
        x_bad = bad_samples(x, direction[:count], s.radius)
        with frozen_bn_stats(run.classifier):
            if s.batch_norm == "joint":
                real, bad = run.model(torch.cat([x, x_bad])).split(count)
            else:
                real, bad = run.model(x), run.model(x_bad)
        keep = keep_uncertain(bad.detach(), s.alpha)
        kept = int(keep.sum())
        batch.stats["bad_kept"] = float(kept)
        batch.stats["bad_kept_fraction"] = kept / count
        self.last_bad = x_bad[keep].detach()

        l_true = true_entropy_loss(real).mean()
        if s.true_loss == "entropy_not_fake":
            l_true = l_true + not_fake_loss(real).mean()
        l_fake = (fake_loss(bad) * keep).sum() / max(kept, 1)
        return {"l_true": lam * l_true, "l_fake": lam * l_fake}

    @hookimpl
    def sslrun_epoch_end(self, run: Run, epoch: int) -> dict[str, Any]:
        return {"lambda": warmup_lambda(self.settings, epoch)}  # type: ignore[arg-type]

    @hookimpl
    def sslrun_run_end(self, run: Run) -> None:
        if run.out_dir is None or self.last_bad is None or not run.world.is_main:
            return
        save_bad_sample_figure(run, self.last_bad, Path(run.out_dir))


@hookimpl
def sslrun_register_plugins(register) -> None:  # noqa: ANN001 - pluggy passes a callable
    register(BadSamples)

"""FAT's adversarial bad samples and the K+1 terms of eq. (8) (paper §4.1, §4.3).

Bad samples are x_bad = x + C·r_adv/‖r_adv‖ on the unlabeled batch (§4.1.2). With the
``vat`` plugin enabled, r_adv is the direction it published for the same batch (no
second power iteration); without it this plugin estimates its own. A candidate the
classifier still calls one class with probability above 1 − α is dropped.

The loss is weight·λ·(E_unlabeled[L_true] + E_bad[L_fake]) with the K+1-th class
expressed through the K pre-softmax outputs g (fake logit 0, :mod:`ssl_core.math.kplus1`)
and λ warmed up per epoch (§4.3, §5.1). ``true_loss = "entropy"`` is eq. (8) as
printed; ``"entropy_not_fake"`` adds Bad GAN's "not fake" term −log Σ_k p(k|x)
(eq. (3)), without which L_true is also minimised by calling every real image fake
(see docs/fat.md for what each does to accuracy).

Batch norm (``batch_norm = "joint"``, the default): real and bad inputs go through
one forward over their concatenation, so bad samples are normalised with statistics
that real data shares (mostly real with ``bad_fraction`` < ``true_fraction``, as in
recipes/fat_mnist.toml). Normalised only with their own batch statistics
(``"separate"``), a shift common to all bad samples would be invisible to the network,
and with the paper's batch norm on the output layer the mean logit of each class over
an all-bad batch is pinned, so L_fake could not lower it for the batch as a whole. The
joint pass also serves L_true, L_fake and the α filter (its outputs, detached, are
p(·|x_bad; θ̂)) at once; running statistics are never updated by it. docs/fat.md
gives the measured accuracy of each choice.

Cost, in passes of one forward over the unlabeled batch B (a full backward ≈ 2): the
joint pass over t·B real and b·B bad inputs costs 3·(t + b), with ``true_fraction = t``
and ``bad_fraction = b`` (6 at the default t = b = 1); plus 3 for the clean pass and the
power iteration when ``vat`` is off, +2 with the sign correction. Sub-batches are the
first rows of the (randomly drawn) unlabeled batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator
from ssl_plugins.methods.adversarial_batch import DIRECTION, estimate_direction, warn_about_xi
from ssl_plugins.methods.visuals import save_bad_sample_figure
from torch import Tensor

from ssl_core import hookimpl
from ssl_core.api.plugin import Plugin, PluginSettings
from ssl_core.engine.bn import frozen_bn_stats
from ssl_core.engine.context import BatchContext
from ssl_core.engine.precision import full_precision
from ssl_core.engine.run import Run
from ssl_core.math.adversarial import bad_samples, keep_uncertain
from ssl_core.math.kplus1 import fake_loss, log_prob_fake, not_fake_loss, true_entropy_loss

TrueLoss = Literal["entropy", "entropy_not_fake"]


class BadSampleSettings(PluginSettings):
    radius: float = Field(2.0, gt=0, description="distance C of a bad sample from x (§4.1.2)")
    alpha: float = Field(0.01, gt=0, lt=1, description="drop x_bad if max_k p(k|x_bad) > 1-α")
    true_loss: TrueLoss = Field(
        "entropy_not_fake",
        description="'entropy': L_true of eq. (8) as printed; 'entropy_not_fake': plus"
        " Bad GAN's -log Σ_k p(k|x), which stops real images drifting to 'fake'",
    )
    weight: float = Field(1.0, ge=0, description="weight of λ·(L_true + L_fake)")
    lambda_start: float = Field(0.0, ge=0, description="λ during the first epoch")
    lambda_step: float = Field(0.1, ge=0, description="λ increase after every epoch")
    lambda_max: float = Field(1.0, ge=0, description="λ cap")
    batch_norm: Literal["joint", "separate"] = Field(
        "joint",
        description="'joint': one forward over [x; x_bad], bad samples normalised with"
        " real data; 'separate': two forwards, each with its own batch statistics",
    )
    true_fraction: float = Field(
        1.0, gt=0, le=1, description="share of the unlabeled batch given L_true"
    )
    bad_fraction: float = Field(
        1.0, gt=0, le=1, description="share of the unlabeled batch turned into bad samples"
    )
    eps: float = Field(1.5, gt=0, description="ε of the own direction (only without vat)")
    xi: float = Field(1e-6, gt=0, description="ξ of the own direction (only without vat)")
    iterations: int = Field(1, ge=1, description="power iterations (only without vat)")
    direction: Literal["finite_difference", "hvp"] = Field(
        "finite_difference",
        description="the power iteration's product with H, as vat's (only without vat)",
    )
    sign_corrected: bool = Field(True, description="§4.2 sign correction (only without vat)")

    @model_validator(mode="after")
    def _lambda_range(self) -> BadSampleSettings:
        if self.lambda_start > self.lambda_max:
            raise ValueError(
                f"lambda_start ({self.lambda_start}) exceeds lambda_max ({self.lambda_max})"
            )
        return self


def warmup_lambda(settings: BadSampleSettings, epoch: int) -> float:
    """λ of eq. (8) during a 0-based epoch: start, +step after every epoch, capped (§5.1).

    A pure function of the epoch rather than a counter, so a resumed run uses exactly
    the λ an uninterrupted one would, with nothing to checkpoint.
    """
    return min(settings.lambda_max, settings.lambda_start + settings.lambda_step * epoch)


class BadSamples(Plugin):
    """λ·(L_true on unlabeled data + L_fake on kept adversarial bad samples), eq. (8)."""

    name: ClassVar[str] = "bad_samples"
    order: ClassVar[int] = 200
    Settings: ClassVar[type[PluginSettings]] = BadSampleSettings
    graph_safe: ClassVar[bool] = True  # the same tensor work every step, no host reads

    def __init__(self, settings: PluginSettings) -> None:
        super().__init__(settings)
        #: The most recent batch (epoch, images, their bad samples, which were kept),
        #: drawn at the end of the run.
        self.last_batch: tuple[int, Tensor, Tensor, Tensor] | None = None

    @hookimpl
    def sslrun_setup(self, run: Run) -> None:
        """Warn about settings under which the plugin would do nothing useful."""
        s: BadSampleSettings = self.settings  # type: ignore[assignment]
        epochs = run.recipe.train.epochs
        if all(warmup_lambda(s, epoch) * s.weight == 0 for epoch in range(epochs)):
            run.warn(
                f"plugins.bad_samples: λ stays 0 for all {epochs} epoch(s) of this run (it"
                f" starts at {s.lambda_start:g} and grows by {s.lambda_step:g} after each"
                " epoch), so the bad samples add nothing; train for more epochs or set"
                " plugins.bad_samples.lambda_start"
            )
        if "vat" not in run.resolved.enabled_plugins:  # its own direction, with its own ξ
            warn_about_xi(run, "plugins.bad_samples.xi", s.xi, s.direction)

    @hookimpl
    def sslrun_collect_losses(self, run: Run, batch: BatchContext) -> dict[str, Tensor]:
        s: BadSampleSettings = self.settings  # type: ignore[assignment]
        scale = s.weight * warmup_lambda(s, batch.epoch)
        if scale == 0:
            return {}  # nothing to learn: no pass, no random draw
        direction = batch.shared.get(DIRECTION)
        if direction is None:
            sign_eps = s.eps if s.sign_corrected else None
            direction = estimate_direction(run, batch, s.xi, s.iterations, sign_eps, s.direction)

        size = len(batch.x_unlabeled)
        n_true = max(1, round(s.true_fraction * size))
        n_bad = max(1, round(s.bad_fraction * size))
        x = batch.x_unlabeled[:n_true]
        x_bad = bad_samples(batch.x_unlabeled[:n_bad], direction[:n_bad], s.radius)
        with frozen_bn_stats(run.classifier):
            if s.batch_norm == "joint":
                joint = full_precision(run.model(torch.cat([x, x_bad])))
                real, bad = joint[:n_true], joint[n_true:]
            else:
                real, bad = full_precision(run.model(x)), full_precision(run.model(x_bad))

        # Counts and means stay tensors: nothing here waits for the device.
        keep = keep_uncertain(bad.detach(), s.alpha)
        kept = keep.sum()
        batch.stats["bad_kept"] = kept.float()
        batch.stats["bad_kept_fraction"] = kept.float() / n_bad
        batch.stats["real_p_fake"] = log_prob_fake(real.detach()).exp().mean()
        self.last_batch = (batch.epoch, batch.x_unlabeled[:n_bad], x_bad.detach(), keep)

        terms = {"l_true": scale * true_entropy_loss(real).mean()}
        if s.true_loss == "entropy_not_fake":
            terms["l_not_fake"] = scale * not_fake_loss(real).mean()
        # E over the kept bad samples; the masked sum keeps every parameter in the graph.
        terms["l_fake"] = scale * (fake_loss(bad) * keep).sum() / kept.clamp_min(1)
        return terms

    @hookimpl
    def sslrun_epoch_end(self, run: Run, epoch: int) -> dict[str, Any]:
        return {"lambda": warmup_lambda(self.settings, epoch)}  # type: ignore[arg-type]

    @hookimpl
    def sslrun_run_end(self, run: Run) -> None:
        if run.out_dir is None or self.last_batch is None or not run.world.is_main:
            return
        epoch, clean, candidates, keep = self.last_batch
        s: BadSampleSettings = self.settings  # type: ignore[assignment]
        kept = int(keep.sum())
        title = (
            f"{run.recipe.data.name}, {run.recipe.name}: bad samples of epoch {epoch + 1}"
            f" (λ = {warmup_lambda(s, epoch):g}, kept {kept}/{len(keep)}, C = {s.radius:g})"
        )
        save_bad_sample_figure(run, clean[keep], candidates[keep], Path(run.out_dir), title)


@hookimpl
def sslrun_register_plugins(register) -> None:  # noqa: ANN001 - pluggy passes a callable
    register(BadSamples)

"""Bad GAN (Dai et al. 2017; paper §2.2): a bad generator and the K+1-class terms of eq. (3).

The plugin owns a generator and its Adam optimizer (checkpointed by the core). Each
iteration:

1. ``sslrun_pre_batch`` generates a batch without gradient and publishes it in
   ``batch.shared["generated"]``.
2. ``sslrun_collect_losses`` returns the classifier's (discriminator's) terms of eq. (3),
   the K+1-th class being "fake" with its logit fixed at 0 (``ssl_core.math.kplus1``):

   ========================  =================================================  ==============
   eq. (3) term              value per sample                                   term name
   ========================  =================================================  ==============
   −E_L log p(y|x, y ≤ K)    cross-entropy on softmax(g)                        ``ce`` (supervised)
   −E_U log Σ_k p(k|x)       ``not_fake_loss(g)``                               ``badgan_unl``
   −E_G log p(K+1|x)         ``fake_loss(g)``                                   ``badgan_fake``
   −E_U Σ_k p log p          ``conditional_entropy(g)`` (K-class prediction)    ``badgan_ent``
   ========================  =================================================  ==============

3. ``sslrun_after_step`` trains the generator on the paper's generator objective:
   ‖E_U v(x; θ̂) − E_G v(x; θ̂)‖² (feature matching on the classifier's penultimate
   features, with a second unlabeled batch) plus, when another plugin supplies a
   density model, E_G[log p(x) · 1(p(x) > τ)] (see :class:`DensityModel`). Gradients are
   taken with respect to the generator's parameters only, so the classifier is never
   updated by this step; the classifier's terms see generated images without a graph,
   so its step never reaches the generator.

Batch norm: generated images are not data, so every classifier pass of this plugin
runs inside :func:`ssl_core.engine.bn.frozen_bn_stats` (running statistics come from the
labeled pass of ``supervised``, as for VAT and FAT). With ``batch_norm = "joint"``
(default) real and generated images go through *one* forward, so both are normalised
with the same batch statistics: a separate pass would normalise each hidden unit of
the generated batch to the same mean as the real batch, hiding exactly the
differences the "fake" term and feature matching must see. ``"separate"`` is kept for
the ablation. The weight-normalised ``mnist_wn_mlp`` has no batch norm at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import torch
from pydantic import Field
from ssl_plugins.methods.badgan_generators import GeneratorKind, ImageGenerator, build_generator
from ssl_plugins.methods.visuals import save_decision_scatter, save_image_grid
from torch import Tensor

from ssl_core import hookimpl
from ssl_core.api.plugin import Plugin, PluginSettings
from ssl_core.engine.bn import frozen_bn_stats
from ssl_core.engine.context import BatchContext
from ssl_core.engine.data import EpochlessSampler
from ssl_core.engine.optim import adam, epoch_hyperparameters
from ssl_core.engine.precision import full_precision
from ssl_core.engine.run import Run
from ssl_core.errors import TrainingError
from ssl_core.math.kplus1 import conditional_entropy, fake_loss, not_fake_loss

GENERATED = "generated"
DENSITY_MODEL = "density_model"
GRID_NAME = "generated.png"


@dataclass(frozen=True)
class DensityModel:
    """A pre-trained density p^pt for the generator's penalty (§2.2; PixelCNN++ in Bad GAN).

    Contract: a plugin that has one puts an instance under
    ``batch.shared["density_model"]`` in any hook of the batch before ``badgan``'s
    ``sslrun_after_step`` (its ``sslrun_pre_batch`` or ``sslrun_collect_losses``).
    ``log_prob`` maps generated images (B, *shape) to log p^pt(x) of shape (B,),
    differentiably; ``log_threshold`` is log τ. The generator loss then adds
    ``density_weight · E_G[log p(x) · 1(log p(x) > log τ)]``, pushing samples out of
    the high-density region of the data.
    """

    log_prob: Callable[[Tensor], Tensor]
    log_threshold: float


class BadGanSettings(PluginSettings):
    generator: GeneratorKind = Field(
        "auto", description="'mlp', 'conv' (32x32 images) or 'auto' (conv for 32x32)"
    )
    noise_dim: int = Field(100, gt=0, description="dimension of z ~ U[0, 1)")
    generator_batch: int | None = Field(
        None, gt=0, description="generated images per iteration (default: the unlabeled batch)"
    )
    generator_lr: float = Field(1e-3, gt=0, description="Adam lr of the generator")
    generator_beta1: float = Field(0.0, ge=0, lt=1)
    generator_beta2: float = Field(0.9999, ge=0, lt=1)
    unlabeled_weight: float = Field(1.0, ge=0, description="weight of -log Σ_k p(k|x) on U")
    fake_weight: float = Field(1.0, ge=0, description="weight of -log p(K+1|x) on generated")
    entropy_weight: float = Field(
        1.0, ge=0, description="weight of the conditional entropy on U (0 = term off)"
    )
    density_weight: float = Field(
        1.0, ge=0, description="weight of the density penalty (when a density model is shared)"
    )
    batch_norm: Literal["joint", "separate"] = Field(
        "joint",
        description="'joint': real and generated images in one forward (shared batch"
        " statistics); 'separate': each normalised with its own",
    )
    feature_matching: Literal["sum", "mean"] = Field(
        "sum",
        description="‖E_U v − E_G v‖² summed over the features ('sum', §2.2) or averaged"
        " ('mean', as the official Bad GAN code computes it)",
    )


def discriminator_terms(
    unlabeled: Tensor, generated: Tensor, settings: BadGanSettings
) -> dict[str, Tensor]:
    """The unlabeled and generated terms of eq. (3), weighted, from pre-softmax outputs g."""
    terms = {
        "badgan_unl": settings.unlabeled_weight * not_fake_loss(unlabeled).mean(),
        "badgan_fake": settings.fake_weight * fake_loss(generated).mean(),
    }
    if settings.entropy_weight > 0:
        terms["badgan_ent"] = settings.entropy_weight * conditional_entropy(unlabeled).mean()
    return terms


def feature_matching_loss(real: Tensor, generated: Tensor, reduction: str = "sum") -> Tensor:
    """‖E_U v(x) − E_G v(x)‖², the squared L2 distance of the batch-mean features (§2.2).

    ``reduction = "mean"`` divides it by the number of features, as the official Bad GAN
    code (``torch.mean`` of the squares) does; with Adam the two differ only through
    its ε, since a constant factor on the loss cancels in its update.
    """
    squares = (full_precision(real).mean(0) - full_precision(generated).mean(0)).pow(2)
    return squares.mean() if reduction == "mean" else squares.sum()


def density_penalty(log_prob: Tensor, log_threshold: float) -> Tensor:
    """E_G[log p(x) · 1(p(x) > τ)]: only samples denser than τ are pushed (§2.2)."""
    return (log_prob * (log_prob > log_threshold)).mean()


def paired_forward(
    fn: Callable[[Tensor], Tensor], real: Tensor, generated: Tensor, joint: bool
) -> tuple[Tensor, Tensor]:
    """``fn`` on real and generated inputs, in one batch (``joint``) or two."""
    if joint:
        out = fn(torch.cat([real, generated]))
        return out[: len(real)], out[len(real) :]
    return fn(real), fn(generated)


class BadGan(Plugin):
    """Bad generator + feature matching; the "not fake", "fake" and entropy terms of eq. (3)."""

    name: ClassVar[str] = "badgan"
    order: ClassVar[int] = 300
    Settings: ClassVar[type[PluginSettings]] = BadGanSettings

    generator: ImageGenerator
    optimizer: torch.optim.Adam
    sampler: EpochlessSampler

    @property
    def s(self) -> BadGanSettings:
        return self.settings  # type: ignore[return-value]

    @hookimpl
    def sslrun_setup(self, run: Run) -> None:
        s = self.s
        shape = run.data.input_shape
        try:
            generator = build_generator(s.generator, s.noise_dim, shape)
        except ValueError as exc:
            raise TrainingError(f"plugins.badgan.generator: {exc}") from None
        self.generator = generator.to(run.device)
        self.optimizer = adam(
            self.generator.parameters(),
            lr=s.generator_lr,
            betas=(s.generator_beta1, s.generator_beta2),
        )
        # The generator's second unlabeled batch has its own seeded, checkpointed stream;
        # like the core's samplers it draws one global batch and each rank takes its share.
        batch = s.generator_batch or run.recipe.train.unlabeled_batch
        device = run.device if run.device.type != "cpu" else None  # no per-step copies
        self.sampler = EpochlessSampler(
            len(run.data.unlabeled_x), batch * run.world.size, run.recipe.seed + 3, device
        )
        run.register_state("badgan_generator", self.generator)
        run.register_state("badgan_generator_optimizer", self.optimizer)
        run.register_state("badgan_unlabeled_sampler", self.sampler)

    @hookimpl
    def sslrun_epoch_start(self, run: Run, epoch: int) -> None:
        """The generator's lr follows the classifier's schedule (a pure function of epoch)."""
        spec = run.recipe.optim
        lr, _ = epoch_hyperparameters(spec, epoch, run.recipe.train.epochs)
        for group in self.optimizer.param_groups:
            group["lr"] = self.s.generator_lr * lr / spec.lr

    @hookimpl
    def sslrun_pre_batch(self, run: Run, batch: BatchContext) -> None:
        self.generator.train()
        with torch.no_grad():
            batch.shared[GENERATED] = self.generator.sample(self._batch_size(batch))

    @hookimpl
    def sslrun_collect_losses(self, run: Run, batch: BatchContext) -> dict[str, Tensor]:
        generated = batch.shared[GENERATED].detach()
        with frozen_bn_stats(run.classifier):
            unlabeled, fake = paired_forward(
                run.model, batch.x_unlabeled, generated, self.s.batch_norm == "joint"
            )
        # Classified as real when Σ_k exp g_k > 1, i.e. p(K+1|x) < 1/2.
        batch.stats["badgan_unl_real"] = (unlabeled.detach().logsumexp(1) > 0).float().mean()
        batch.stats["badgan_gen_fake"] = (fake.detach().logsumexp(1) < 0).float().mean()
        return discriminator_terms(unlabeled, fake, self.s)

    @hookimpl
    def sslrun_after_step(self, run: Run, batch: BatchContext) -> None:
        loss = self.generator_loss(run, batch)
        params = [p for p in self.generator.parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, params)
        self.optimizer.zero_grad(set_to_none=True)
        for param, grad in zip(params, grads, strict=True):
            param.grad = grad
        run.world.average_gradients(params)  # the generator is not DDP-wrapped
        self.optimizer.step()

    def generator_loss(self, run: Run, batch: BatchContext) -> Tensor:
        """Feature matching on a second unlabeled batch, plus the density penalty if shared."""
        self.generator.train()
        real = run.data.unlabeled_x[run.world.shard(self.sampler.next_indices())]
        generated = self.generator.sample(self._batch_size(batch))
        with frozen_bn_stats(run.classifier):
            real_features, fake_features = paired_forward(
                run.classifier.features, real, generated, self.s.batch_norm == "joint"
            )
        loss = feature_matching_loss(real_features, fake_features, self.s.feature_matching)
        batch.stats["badgan_fm"] = loss.detach()
        density = batch.shared.get(DENSITY_MODEL)
        if density is not None:
            if not isinstance(density, DensityModel):
                raise TrainingError(
                    f"batch.shared['{DENSITY_MODEL}'] must be a"
                    f" ssl_plugins.methods.badgan.DensityModel, got {type(density).__name__}"
                )
            penalty = density_penalty(density.log_prob(generated), density.log_threshold)
            batch.stats["badgan_density"] = penalty.detach()
            loss = loss + self.s.density_weight * penalty
        return loss

    def _batch_size(self, batch: BatchContext) -> int:
        return self.s.generator_batch or len(batch.x_unlabeled)

    @hookimpl
    def sslrun_run_end(self, run: Run) -> None:
        """An image grid of 100 generated samples (a scatter for 2-D data) in the run folder."""
        if run.out_dir is None or not run.world.is_main:
            return
        samples = self.samples(100)
        shape = run.data.input_shape
        title = (
            f"{run.recipe.data.name}, {run.recipe.name}: Bad GAN generator's samples"
            f" after epoch {run.epoch + 1}"
        )
        if len(shape) == 3:
            save_image_grid(samples, Path(run.out_dir) / GRID_NAME, title=title)
        elif shape == (2,):
            save_decision_scatter(run, samples, "generated", Path(run.out_dir) / GRID_NAME, title)

    def samples(self, n: int) -> Tensor:
        """``n`` generated images with the generator in evaluation mode (running BN stats)."""
        was_training = self.generator.training
        self.generator.eval()
        with torch.no_grad():
            images = self.generator.sample(n)
        self.generator.train(was_training)
        return images


@hookimpl
def sslrun_register_plugins(register) -> None:  # noqa: ANN001 - pluggy passes a callable
    register(BadGan)

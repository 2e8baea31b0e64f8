"""Bad GAN's MNIST discriminator (Dai et al. 2017), offered as the classifier ``mnist_wn_mlp``.

Weight-normalised fully connected layers 784-1000-500-250-250-250-K with ReLU and
additive Gaussian noise on the input (σ = 0.3) and before every later layer (σ = 0.5),
active in training mode only. It has no batch norm, so no pass on generated data can
disturb running statistics. Weight normalisation follows Salimans & Kingma (2016):
w = g · v/‖v‖ with a data-dependent initialisation of g and the bias on the first
training batch.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from ssl_core import hookimpl
from ssl_core.api.providers import ModelProvider, ProviderSettings
from ssl_core.engine.noise import GaussianNoise


class WeightNormLinear(nn.Module):
    """y = x (g · v/‖v‖)ᵀ + b, rows of v normalised, with data-dependent initialisation.

    On the first forward in training mode g and b are set so that every output unit
    has zero mean and standard deviation ``init_scale`` on that batch (Salimans &
    Kingma 2016, §3); under torchrun every rank takes rank 0's values (each rank's
    first batch differs, and DDP synchronises gradients, not values set by hand).
    ``trainable_scale = False`` keeps g at that initial value, as Bad GAN's hidden
    layers do; only the output layer learns its scale. Whether the
    initialisation has happened is a buffer, so a restored checkpoint is not re-initialised.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        trainable_scale: bool = False,
        init_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.direction = nn.Parameter(torch.randn(out_features, in_features) * 0.05)
        self.bias = nn.Parameter(torch.zeros(out_features))
        scale = torch.ones(out_features)
        if trainable_scale:
            self.scale = nn.Parameter(scale)
        else:
            self.register_buffer("scale", scale)
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self._known_initialized = False
        self.init_scale = init_scale

    def weight(self) -> Tensor:
        return self.direction * (self.scale / self.direction.norm(dim=1)).unsqueeze(1)

    def forward(self, x: Tensor) -> Tensor:
        # The buffer is read on the host only until it says True (then remembered), so
        # steps after the first do not wait for the device.
        if self.training and not self._known_initialized:
            if not bool(self.initialized):
                self._initialize(x)
            self._known_initialized = True
        return F.linear(x, self.weight(), self.bias)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._known_initialized = False  # the loaded buffer decides again
        super()._load_from_state_dict(*args, **kwargs)

    @torch.no_grad()
    def _initialize(self, x: Tensor) -> None:
        projected = F.linear(x, self.direction / self.direction.norm(dim=1, keepdim=True))
        mean = projected.mean(0)
        std = (projected.var(0, unbiased=False) + 1e-6).sqrt()
        self.scale.copy_(self.init_scale / std)
        self.bias.copy_(-mean * self.init_scale / std)
        if dist.is_available() and dist.is_initialized():  # torchrun: one initialisation
            dist.broadcast(self.scale, src=0)  # every rank takes rank 0's batch statistics
            dist.broadcast(self.bias, src=0)
        self.initialized.fill_(True)


class WnMlp(nn.Module):
    """Bad GAN's MNIST discriminator: Gaussian noise, then weight-normalised linear + ReLU.

    ``features`` is the last hidden layer (the v(x; θ) of feature matching, §2.2);
    ``forward`` returns the K pre-softmax outputs g (the fake logit is fixed at 0).
    """

    def __init__(
        self,
        in_features: int,
        hidden: list[int],
        num_classes: int,
        input_noise: float,
        hidden_noise: float,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for depth, size in enumerate(hidden):
            sigma = input_noise if depth == 0 else hidden_noise
            layers += [GaussianNoise(sigma), WeightNormLinear(width, size), nn.ReLU()]
            width = size
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(
            GaussianNoise(hidden_noise), WeightNormLinear(width, num_classes, trainable_scale=True)
        )

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


class WnMlpSettings(ProviderSettings):
    hidden: list[int] = Field(default_factory=lambda: [1000, 500, 250, 250, 250], min_length=1)
    input_noise: float = Field(0.3, ge=0, description="σ of the Gaussian noise on the input")
    hidden_noise: float = Field(0.5, ge=0, description="σ of the noise before later layers")


class WnMlpProvider(ModelProvider):
    """Bad GAN's MNIST discriminator: 784-1000-500-250-250-250-K, weight norm, noise."""

    name: ClassVar[str] = "mnist_wn_mlp"
    Settings: ClassVar[type[ProviderSettings]] = WnMlpSettings

    def build(
        self, settings: ProviderSettings, input_shape: tuple[int, ...], num_classes: int
    ) -> nn.Module:
        assert isinstance(settings, WnMlpSettings)
        if any(size <= 0 for size in settings.hidden):
            raise ValueError("model.hidden: every layer needs a positive width")
        return WnMlp(
            math.prod(input_shape),
            settings.hidden,
            num_classes,
            settings.input_noise,
            settings.hidden_noise,
        )


@hookimpl
def sslrun_register_models(register) -> None:  # noqa: ANN001 - pluggy passes a callable
    register(WnMlpProvider)

"""Bad GAN's networks (Dai et al. 2017; paper §2.2): bad generators and the MNIST discriminator.

Generators map noise z ~ U[0, 1)^d to images in [0, 1] (the range every built-in
dataset uses), shaped like the data:

- :class:`MlpGenerator` — Bad GAN's MNIST generator: d -> 500 -> 500 -> prod(shape),
  batch norm and softplus after each hidden layer, a weight-normalised output layer
  and a sigmoid. Works for any image shape (it is fully connected).
- :class:`ConvGenerator` — the transposed-convolution generator of Bad GAN's
  SVHN/CIFAR code for 32x32 images: d -> 512x4x4 -> 256x8x8 -> 128x16x16 -> Cx32x32,
  batch norm and ReLU between, a sigmoid output (not tanh: pixels live in [0, 1] here).

The discriminator is the one Bad GAN used on MNIST, offered as the classifier
``model.name = "mnist_wn_mlp"``: weight-normalised fully connected layers
784-1000-500-250-250-250-K with ReLU and additive Gaussian noise on the input
(σ = 0.3) and before every later layer (σ = 0.5), active in training mode only. It has
no batch norm, so no pass on generated data can disturb running statistics. Weight
normalisation follows Salimans & Kingma (2016): w = g · v/‖v‖ with a data-dependent
initialisation of g and the bias on the first training batch.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from ssl_core import hookimpl
from ssl_core.noise import GaussianNoise
from ssl_core.registry import ModelProvider, ProviderSettings

GeneratorKind = Literal["auto", "mlp", "conv"]


# --- generators -----------------------------------------------------------------------


class ImageGenerator(nn.Module):
    """A generator of images in [0, 1] from uniform noise; subclasses define ``forward(z)``."""

    def __init__(self, noise_dim: int, image_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.noise_dim = noise_dim
        self.image_shape = tuple(image_shape)

    def noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """z ~ U[0, 1)^d, the prior of Bad GAN's MNIST generator."""
        device = next(self.parameters()).device
        return torch.rand(n, self.noise_dim, generator=generator, device=device)

    def sample(self, n: int) -> Tensor:
        """``n`` images of the data's shape (with gradient to the generator)."""
        return self(self.noise(n))


class MlpGenerator(ImageGenerator):
    """d -> 500 -> 500 -> prod(shape): BN + softplus, weight-normalised sigmoid output."""

    def __init__(
        self, noise_dim: int, image_shape: tuple[int, ...], hidden: tuple[int, ...] = (500, 500)
    ) -> None:
        super().__init__(noise_dim, image_shape)
        layers: list[nn.Module] = []
        width = noise_dim
        for size in hidden:
            # The bias is redundant before batch norm (its shift absorbs it).
            layers += [nn.Linear(width, size, bias=False), nn.BatchNorm1d(size), nn.Softplus()]
            width = size
        layers += [weight_norm(nn.Linear(width, math.prod(self.image_shape))), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).view(len(z), *self.image_shape)


class ConvGenerator(ImageGenerator):
    """d -> 512x4x4 -> 256x8x8 -> 128x16x16 -> Cx32x32 (5x5 transposed convs, stride 2)."""

    def __init__(self, noise_dim: int, image_shape: tuple[int, ...]) -> None:
        if len(image_shape) != 3 or tuple(image_shape[1:]) != (32, 32):
            raise ValueError(f"the conv generator makes (C, 32, 32) images, not {image_shape}")
        super().__init__(noise_dim, image_shape)
        channels = image_shape[0]
        self.project = nn.Sequential(
            nn.Linear(noise_dim, 512 * 4 * 4, bias=False), nn.BatchNorm1d(512 * 4 * 4), nn.ReLU()
        )
        self.upsample = nn.Sequential(
            *_up(512, 256),
            *_up(256, 128),
            weight_norm(nn.ConvTranspose2d(128, channels, 5, 2, 2, 1), dim=1),
            nn.Sigmoid(),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.upsample(self.project(z).view(len(z), 512, 4, 4))


def _up(cin: int, cout: int) -> list[nn.Module]:
    """Double the resolution: 5x5 transposed conv, stride 2 (output padding 1), BN, ReLU."""
    return [nn.ConvTranspose2d(cin, cout, 5, 2, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


def build_generator(
    kind: GeneratorKind, noise_dim: int, image_shape: tuple[int, ...]
) -> ImageGenerator:
    """The generator for the data's shape; ``auto`` takes the conv one for (C, 32, 32) images."""
    is_32 = len(image_shape) == 3 and tuple(image_shape[1:]) == (32, 32)
    if kind == "conv" or (kind == "auto" and is_32):
        return ConvGenerator(noise_dim, image_shape)
    return MlpGenerator(noise_dim, image_shape)


# --- the MNIST discriminator ----------------------------------------------------------


class WeightNormLinear(nn.Module):
    """y = x (g · v/‖v‖)ᵀ + b, rows of v normalised, with data-dependent initialisation.

    On the first forward in training mode g and b are set so that every output unit
    has zero mean and standard deviation ``init_scale`` on that batch (Salimans &
    Kingma 2016, §3). ``trainable_scale = False`` keeps g at that initial value, as
    Bad GAN's hidden layers do; only the output layer learns its scale. Whether the
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

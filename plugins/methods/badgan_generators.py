"""Bad GAN's bad generators (Dai et al. 2017; paper §2.2), owned by the ``badgan`` plugin.

Generators map noise z ~ U[0, 1)^d to images in [0, 1] (the range every built-in
dataset uses), shaped like the data:

- :class:`MlpGenerator` — Bad GAN's MNIST generator: d -> 500 -> 500 -> prod(shape),
  batch norm and softplus after each hidden layer, a weight-normalised output layer
  and a sigmoid. Works for any image shape (it is fully connected).
- :class:`ConvGenerator` — the transposed-convolution generator of Bad GAN's
  SVHN/CIFAR code for 32x32 images: d -> 512x4x4 -> 256x8x8 -> 128x16x16 -> Cx32x32,
  batch norm and ReLU between, a sigmoid output (not tanh: pixels live in [0, 1] here).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

GeneratorKind = Literal["auto", "mlp", "conv"]


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

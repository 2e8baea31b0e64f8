"""Built-in classifiers: the paper's BN MLP (MNIST, 2-D) and 13-layer CNN (Table 4)."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field
from torch import Tensor, nn

from ssl_core import hookimpl
from ssl_core.api.providers import ModelProvider, ProviderSettings
from ssl_core.engine.noise import GaussianNoise


class MLP(nn.Module):
    """Fully connected ReLU net, batch norm after every layer including the output.

    Appendix 7.4.1: 784-1200-600-300-150-K with BN after every fully connected
    layer. ``features`` is the last hidden layer (feature matching uses it).
    ``noise`` > 0 adds N(0, noise²) to every hidden layer's output in training mode,
    as the VAT journal's MNIST network does (σ = 0.5; :mod:`ssl_core.engine.noise`);
    ``input_noise`` > 0 adds it to the input, as Improved GAN's and Bad GAN's MNIST
    networks do (σ = 0.3).
    """

    def __init__(
        self,
        in_features: int,
        hidden: list[int],
        num_classes: int,
        batch_norm: bool = True,
        noise: float = 0.0,
        input_noise: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        layers += [GaussianNoise(input_noise)] if input_noise > 0 else []
        width = in_features
        for size in hidden:
            layers += [nn.Linear(width, size)]
            layers += [nn.BatchNorm1d(size)] if batch_norm else []
            layers += [nn.ReLU()]
            layers += [GaussianNoise(noise)] if noise > 0 else []
            width = size
        self.body = nn.Sequential(*layers)
        head: list[nn.Module] = [nn.Linear(width, num_classes)]
        head += [nn.BatchNorm1d(num_classes)] if batch_norm else []
        self.head = nn.Sequential(*head)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


class MlpSettings(ProviderSettings):
    hidden: list[int] = Field(default_factory=lambda: [100, 100], min_length=1)
    batch_norm: bool = True
    noise: float = Field(
        0.0,
        ge=0,
        description="σ of the Gaussian noise added to every hidden layer in training"
        " (0 = none; the VAT journal's MNIST network uses 0.5)",
    )
    input_noise: float = Field(
        0.0,
        ge=0,
        description="σ of the Gaussian noise added to the input in training (0 = none;"
        " Improved GAN's and Bad GAN's MNIST networks use 0.3)",
    )


class MnistMlpSettings(MlpSettings):
    hidden: list[int] = Field(default_factory=lambda: [1200, 600, 300, 150], min_length=1)


class MlpProvider(ModelProvider):
    """A small MLP (default 2 x 100 units, the paper's Figure 6 network)."""

    name: ClassVar[str] = "mlp"
    Settings: ClassVar[type[ProviderSettings]] = MlpSettings

    def build(
        self, settings: ProviderSettings, input_shape: tuple[int, ...], num_classes: int
    ) -> nn.Module:
        assert isinstance(settings, MlpSettings)
        if any(size <= 0 for size in settings.hidden):
            raise ValueError("model.hidden: every layer needs a positive width")
        return MLP(
            math.prod(input_shape),
            settings.hidden,
            num_classes,
            settings.batch_norm,
            settings.noise,
            settings.input_noise,
        )


class MnistMlpProvider(MlpProvider):
    """The paper's MNIST network: 784-1200-600-300-150-K with batch norm."""

    name: ClassVar[str] = "mnist_mlp"
    Settings: ClassVar[type[ProviderSettings]] = MnistMlpSettings


#: Table 4 widths: (block 1, block 2, block 3 as (3x3, 1x1, 1x1)).
CNN_WIDTHS = {
    "svhn": (64, 128, (128, 128, 128)),
    "cifar10": (96, 192, (192, 192, 192)),
    "cifar100": (128, 256, (512, 256, 128)),
}


def _conv(cin: int, cout: int, kernel: int, padding: int, slope: float) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, kernel, padding=padding),
        nn.BatchNorm2d(cout),
        nn.LeakyReLU(slope),
    ]


class CNN13(nn.Module):
    """The 13-layer CNN of the paper's Table 4 (from VAT): lReLU, BN, dropout, GAP."""

    def __init__(
        self, in_channels: int, num_classes: int, widths: tuple, dropout: float, slope: float
    ) -> None:
        super().__init__()
        w1, w2, (w3a, w3b, w3c) = widths
        layers: list[nn.Module] = []
        for cin, cout in ((in_channels, w1), (w1, w1), (w1, w1)):
            layers += _conv(cin, cout, 3, 1, slope)
        layers += [nn.MaxPool2d(2, 2), nn.Dropout(dropout)]
        for cin, cout in ((w1, w2), (w2, w2), (w2, w2)):
            layers += _conv(cin, cout, 3, 1, slope)
        layers += [nn.MaxPool2d(2, 2), nn.Dropout(dropout)]
        layers += _conv(w2, w3a, 3, 0, slope)
        layers += _conv(w3a, w3b, 1, 0, slope)
        layers += _conv(w3b, w3c, 1, 0, slope)
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(w3c, num_classes), nn.BatchNorm1d(num_classes))

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


class CnnSettings(ProviderSettings):
    widths: Literal["svhn", "cifar10", "cifar100"] = "cifar10"
    dropout: float = Field(0.5, ge=0, lt=1)
    leaky_slope: float = Field(0.1, ge=0)


class Cnn13Provider(ModelProvider):
    name: ClassVar[str] = "cnn13"
    Settings: ClassVar[type[ProviderSettings]] = CnnSettings

    def build(
        self, settings: ProviderSettings, input_shape: tuple[int, ...], num_classes: int
    ) -> nn.Module:
        assert isinstance(settings, CnnSettings)
        if len(input_shape) != 3:
            raise ValueError(
                f"model cnn13 needs (C, H, W) images, the data has shape {input_shape}"
            )
        if min(input_shape[1:]) < 12:
            # Two 2x2 poolings and a 3x3 valid convolution need at least 12 pixels a side.
            raise ValueError(f"model cnn13 needs images of at least 12x12, got {input_shape}")
        widths = CNN_WIDTHS[settings.widths]
        return CNN13(input_shape[0], num_classes, widths, settings.dropout, settings.leaky_slope)


@hookimpl
def sslrun_register_models(register) -> None:  # noqa: ANN001 - pluggy passes a callable
    for provider in (MnistMlpProvider, MlpProvider, Cnn13Provider):
        register(provider)

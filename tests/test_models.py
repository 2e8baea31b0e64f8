"""The paper's models: shapes, batch norm placement, penultimate features."""

from __future__ import annotations

import pytest
import torch
from ssl_plugins.models.paper import (
    Cnn13Provider,
    CnnSettings,
    MlpProvider,
    MlpSettings,
    MnistMlpProvider,
    MnistMlpSettings,
)
from torch import nn

from ssl_core.engine.noise import GaussianNoise, noise_free


def test_mnist_mlp_is_the_papers_architecture():
    model = MnistMlpProvider().build(MnistMlpSettings(), (1, 28, 28), 10)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (784, 1200),
        (1200, 600),
        (600, 300),
        (300, 150),
        (150, 10),
    ]
    norms = [m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    assert norms == [1200, 600, 300, 150, 10]  # BN after every layer, the output included
    x = torch.rand(5, 1, 28, 28)
    assert model(x).shape == (5, 10)
    assert model.features(x).shape == (5, 150)


def test_small_mlp_adapts_to_2d_inputs():
    model = MlpProvider().build(MlpSettings(), (2,), 2)
    assert model(torch.randn(7, 2)).shape == (7, 2)
    assert model.features(torch.randn(7, 2)).shape == (7, 100)


@pytest.mark.parametrize(
    ("widths", "classes", "feature_dim"),
    [("svhn", 10, 128), ("cifar10", 10, 192), ("cifar100", 100, 128)],
)
def test_cnn13_matches_table4(widths, classes, feature_dim):
    model = Cnn13Provider().build(CnnSettings(widths=widths), (3, 32, 32), classes)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 9 and len([m for m in model.modules() if isinstance(m, nn.Linear)]) == 1
    assert [c.kernel_size[0] for c in convs] == [3] * 7 + [1, 1]
    model.eval()
    x = torch.rand(2, 3, 32, 32)
    assert model(x).shape == (2, classes)
    assert model.features(x).shape == (2, feature_dim)


def test_cnn13_refuses_flat_inputs():
    with pytest.raises(ValueError, match=r"needs \(C, H, W\) images"):
        Cnn13Provider().build(CnnSettings(), (2,), 2)


def test_cnn13_refuses_images_too_small_for_its_poolings():
    with pytest.raises(ValueError, match=r"at least 12x12"):
        Cnn13Provider().build(CnnSettings(), (1, 8, 8), 10)


def test_mlp_noise_is_added_after_every_hidden_layer_in_training_only():
    model = MlpProvider().build(MlpSettings(hidden=[8, 6], noise=0.5), (3,), 2)
    noises = [m for m in model.modules() if isinstance(m, GaussianNoise)]
    assert [n.sigma for n in noises] == [0.5, 0.5]
    x = torch.randn(16, 3)
    model.train()
    torch.manual_seed(0)
    first = model(x)
    assert not torch.equal(first, model(x))  # fresh noise every training forward
    model.eval()
    assert torch.equal(model(x), model(x))


def test_mlp_without_noise_keeps_its_layout_and_noise_follows_each_relu():
    def kinds(noise: float) -> list[str]:
        model = MlpProvider().build(MlpSettings(hidden=[8, 6], noise=noise), (3,), 2)
        return [type(m).__name__ for m in model.body]

    assert kinds(0.0) == [
        "Flatten", "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU"
    ]  # fmt: skip
    assert kinds(0.5) == [
        "Flatten",
        *["Linear", "BatchNorm1d", "ReLU", "GaussianNoise"] * 2,
    ]


def test_noise_free_switches_only_the_noise_off():
    model = MlpProvider().build(MlpSettings(hidden=[8], noise=1.0), (3,), 2)
    model.train()
    x = torch.randn(16, 3)
    with noise_free(model):
        assert torch.equal(model(x), model(x))
        assert model.training  # batch norm still normalises with the batch
    assert all(m.training for m in model.modules())
    assert not torch.equal(model(x), model(x))

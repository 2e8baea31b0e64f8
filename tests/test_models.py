"""The paper's models: shapes, batch norm placement, penultimate features."""

from __future__ import annotations

import pytest
import torch
from ssl_plugins.models import (
    Cnn13Provider,
    CnnSettings,
    MlpProvider,
    MlpSettings,
    MnistMlpProvider,
    MnistMlpSettings,
)
from torch import nn


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

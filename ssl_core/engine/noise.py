"""Gaussian noise layers, and forward passes that leave them out.

The VAT journal's MNIST network (Miyato et al. 2017, Appendix C; the author's answer in
``takerum/vat`` issue 3) adds N(0, 0.5²) noise to every hidden layer in training,
following Salimans et al. (2016). Noise is part of the *training* forwards, the ones
whose losses are back-propagated. The adversarial direction, however, is the dominant
eigenvector of the KL's Hessian of one fixed network (paper §2.1, §4.2): with fresh
noise in the clean pass and in the probe x + ξd, the finite difference would measure
the noise rather than the curvature. :func:`noise_free` switches the noise layers off
for such passes while batch norm keeps normalising with the batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn


class GaussianNoise(nn.Module):
    """x + N(0, σ²) in training mode, the identity in evaluation mode."""

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.sigma = sigma

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.sigma == 0:
            return x
        return x + self.sigma * torch.randn_like(x)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"


@contextmanager
def noise_free(model: nn.Module) -> Iterator[None]:
    """Forward passes inside add no noise; every other layer keeps its mode."""
    layers = [m for m in model.modules() if isinstance(m, GaussianNoise) and m.training]
    for layer in layers:
        layer.train(False)
    try:
        yield
    finally:
        for layer in layers:
            layer.train(True)

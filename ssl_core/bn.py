"""Keep batch-norm running statistics for the clean data the model is evaluated on.

Adversarial, perturbed and bad-sample forward passes still normalise with their own
batch statistics (the model stays in training mode, as in VAT), but they must not
move the running statistics used at evaluation: perturbed inputs are not the data
distribution. :func:`frozen_bn_stats` makes any forward pass leave them untouched.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


def batch_norms(model: nn.Module) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


@contextmanager
def frozen_bn_stats(model: nn.Module) -> Iterator[None]:
    """Forward passes inside leave every running mean, variance and counter unchanged.

    Momentum 0 makes the running-average update a no-op (also for cumulative
    averaging, momentum=None); the batch counter is restored on exit.
    """
    saved = [(bn, bn.momentum, bn.num_batches_tracked.clone()) for bn in batch_norms(model)]
    for bn, _, _ in saved:
        bn.momentum = 0.0
    try:
        yield
    finally:
        for bn, momentum, count in saved:
            bn.momentum = momentum
            bn.num_batches_tracked.copy_(count)

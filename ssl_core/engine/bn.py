"""Batch-norm running statistics: kept for clean data, or re-estimated for evaluation.

Adversarial, perturbed and bad-sample forward passes still normalise with their own
batch statistics (the model stays in training mode, as in VAT), but they must not
move the running statistics used at evaluation: perturbed inputs are not the data
distribution. :func:`frozen_bn_stats` makes any forward pass leave them untouched.

The running statistics therefore come from the labeled passes alone: on MNIST-20,
from 20 distinct images. :func:`reestimated_copy` gives evaluation a copy of the model
whose statistics are averaged over unlabeled images instead, as the Theano VAT code
does after training, without touching the model that trains.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm


def batch_norms(model: nn.Module) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


@contextmanager
def frozen_bn_stats(model: nn.Module) -> Iterator[None]:
    """Forward passes inside leave every running mean, variance and counter unchanged.

    Momentum 0 makes the running-average update a no-op (also for cumulative
    averaging, momentum=None); the batch counter is restored on exit.
    """
    saved = [(bn, bn.momentum, _counter(bn).clone()) for bn in batch_norms(model)]
    for bn, _, _ in saved:
        bn.momentum = 0.0
    try:
        yield
    finally:
        for bn, momentum, count in saved:
            bn.momentum = momentum
            _counter(bn).copy_(count)


def _counter(bn: _BatchNorm) -> Tensor:
    """The batch counter, present on every norm that tracks running statistics."""
    assert bn.num_batches_tracked is not None
    return bn.num_batches_tracked


@contextmanager
def untracked_bn_stats(model: nn.Module) -> Iterator[None]:
    """Like :func:`frozen_bn_stats`, for passes under ``torch.func`` transforms.

    Batch norm stops tracking running statistics (``track_running_stats = False``), so
    in training mode it normalises with the batch and touches no buffer at all, where
    momentum 0 would still update them in place, which ``torch.func.jvp`` refuses.
    """
    norms = batch_norms(model)
    for bn in norms:
        bn.track_running_stats = False
    try:
        yield
    finally:
        for bn in norms:
            bn.track_running_stats = True


@torch.no_grad()
def reestimated_copy(model: nn.Module, x: Tensor, batch_size: int) -> nn.Module:
    """A copy of ``model`` in evaluation mode whose batch-norm statistics come from ``x``.

    The copy's running means and variances are reset, then set to the plain average of
    the batch statistics over ``x`` in near-equal chunks of at most ``batch_size``
    (momentum ``None``: a cumulative average; no chunk is a single image). Every other
    layer is in evaluation mode during those passes (no noise, no dropout): the
    statistics are those of the network that is evaluated. The model itself, its
    buffers and the RNG are left as they were.
    """
    twin = copy.deepcopy(model).eval()
    norms = batch_norms(twin)
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    if norms:
        for chunk in torch.tensor_split(x, max(1, -(-len(x) // batch_size))):
            twin(chunk)
    return twin.eval()

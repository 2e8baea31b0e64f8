"""Batch-norm running statistics survive perturbed forward passes."""

from __future__ import annotations

import torch
from torch import nn

from ssl_core.bn import frozen_bn_stats


def bn_state(model: nn.Module) -> list[torch.Tensor]:
    return [
        t.clone()
        for name, t in model.state_dict().items()
        if "running" in name or "num_batches" in name
    ]


def test_forward_inside_frozen_bn_leaves_running_stats_unchanged():
    model = nn.Sequential(
        nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2), nn.BatchNorm1d(2)
    )
    model.train()
    model(torch.randn(16, 3))
    before = bn_state(model)
    with frozen_bn_stats(model):
        out = model(10 + 5 * torch.randn(16, 3))
    assert all(torch.equal(a, b) for a, b in zip(before, bn_state(model), strict=True))
    assert abs(float(out.detach().mean())) < 1.0  # still normalised with the batch's own statistics
    model(torch.randn(16, 3))
    assert not torch.equal(before[0], bn_state(model)[0])  # updates resume afterwards


def test_frozen_bn_also_holds_for_cumulative_averaging():
    bn = nn.BatchNorm1d(3, momentum=None)
    bn(torch.randn(8, 3))
    before = bn_state(bn)
    with frozen_bn_stats(bn):
        bn(torch.randn(8, 3) + 3)
    assert all(torch.equal(a, b) for a, b in zip(before, bn_state(bn), strict=True))
    assert bn.momentum is None

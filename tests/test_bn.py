"""Batch-norm running statistics survive perturbed forward passes."""

from __future__ import annotations

import torch
from torch import nn

from ssl_core.engine.bn import frozen_bn_stats, reestimated_copy
from ssl_core.engine.noise import GaussianNoise


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


def test_reestimated_copy_takes_the_statistics_of_the_given_images():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    model.train()
    model(torch.randn(16, 3))  # running statistics of some other data
    before = bn_state(model)
    x = 2 + 3 * torch.randn(400, 3)
    rng = torch.get_rng_state()
    twin = reestimated_copy(model, x, batch_size=100)
    hidden = model[0](x).detach()
    bn = twin[1]
    torch.testing.assert_close(bn.running_mean, hidden.mean(0))
    # The average of the four chunks' unbiased variances, close to the whole set's.
    torch.testing.assert_close(bn.running_var, hidden.var(0), rtol=0.05, atol=0.0)
    assert not twin.training and model.training
    assert all(torch.equal(a, b) for a, b in zip(before, bn_state(model), strict=True))
    assert torch.equal(rng, torch.get_rng_state())


def test_reestimated_copy_never_normalises_a_single_image():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    reestimated_copy(model, torch.randn(201, 3), batch_size=100)  # chunks of 67, not 100 + 1


def test_reestimation_passes_have_no_noise():
    model = nn.Sequential(nn.Linear(3, 4), GaussianNoise(100.0), nn.BatchNorm1d(4))
    x = torch.randn(300, 3)
    twin = reestimated_copy(model, x, batch_size=300)
    torch.testing.assert_close(twin[2].running_mean, model[0](x).detach().mean(0))

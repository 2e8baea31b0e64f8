"""The (K+1)-class terms against hand-computed values (fake logit fixed at 0)."""

from __future__ import annotations

import math

import pytest
import torch

from ssl_core.math.kplus1 import (
    conditional_entropy,
    fake_loss,
    log_prob_fake,
    not_fake_loss,
    true_entropy_loss,
)

# Row 0: g = (0, 0): partition 1 + 1 + 1 = 3, q = (1/3, 1/3), fake 1/3.
# Row 1: g = (log 2, 0): partition 1 + 2 + 1 = 4, q = (1/2, 1/4), fake 1/4.
G = torch.tensor([[0.0, 0.0], [math.log(2.0), 0.0]], dtype=torch.float64)


def test_fake_loss_is_minus_log_fake_probability():
    assert fake_loss(G).tolist() == pytest.approx([math.log(3), math.log(4)])
    assert log_prob_fake(G).tolist() == pytest.approx([-math.log(3), -math.log(4)])


def test_not_fake_loss_is_minus_log_real_mass():
    assert not_fake_loss(G).tolist() == pytest.approx([-math.log(2 / 3), -math.log(3 / 4)])


def test_true_entropy_sums_over_the_first_k_probabilities_only():
    row0 = -2 * (1 / 3) * math.log(1 / 3)
    row1 = -(0.5 * math.log(0.5) + 0.25 * math.log(0.25))
    assert true_entropy_loss(G).tolist() == pytest.approx([row0, row1])


def test_conditional_entropy_is_the_k_class_entropy():
    p = (2 / 3, 1 / 3)
    expected = [math.log(2), -(p[0] * math.log(p[0]) + p[1] * math.log(p[1]))]
    assert conditional_entropy(G).tolist() == pytest.approx(expected)


def test_probabilities_of_k_plus_1_classes_sum_to_one():
    g = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    real = torch.exp(-not_fake_loss(g))
    assert (real + log_prob_fake(g).exp()).tolist() == pytest.approx([1.0] * 5)


def test_entropy_identity_links_the_three_terms():
    g = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    real = torch.exp(-not_fake_loss(g))
    expected = real * (not_fake_loss(g) + conditional_entropy(g))
    assert torch.allclose(true_entropy_loss(g), expected)


def test_printed_l_true_is_minimised_by_calling_real_images_fake():
    """The degenerate reading of eq. (8): shifting every logit down drives L_true to 0."""
    g = torch.tensor([[1.0, 0.5, -0.3]], dtype=torch.float64)
    shifted = [true_entropy_loss(g - shift).item() for shift in (0.0, 5.0, 20.0, 50.0)]
    assert shifted == sorted(shifted, reverse=True) and shifted[-1] < 1e-15
    guards = [not_fake_loss(g - shift).item() for shift in (0.0, 5.0, 20.0, 50.0)]
    assert guards == sorted(guards) and guards[-1] > 40  # the not-fake term pushes back


@pytest.mark.parametrize("scale", [1000.0, -1000.0])
def test_terms_stay_finite_for_extreme_logits(scale):
    g = torch.tensor([[scale, 0.0], [scale, scale]], requires_grad=True)
    total = sum(
        f(g).sum() for f in (fake_loss, not_fake_loss, true_entropy_loss, conditional_entropy)
    )
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(g.grad).all()


def test_terms_match_an_explicit_k_plus_1_softmax_with_fake_logit_zero():
    g = torch.randn(5, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    log_p = torch.log_softmax(torch.cat([g, torch.zeros(5, 1, dtype=g.dtype)], dim=1), dim=1)
    p = log_p.exp()
    torch.testing.assert_close(log_prob_fake(g), log_p[:, -1])
    torch.testing.assert_close(not_fake_loss(g), -torch.log(p[:, :-1].sum(1)))
    torch.testing.assert_close(true_entropy_loss(g), -(p[:, :-1] * log_p[:, :-1]).sum(1))
    torch.testing.assert_close(fake_loss(g) - not_fake_loss(g), torch.logsumexp(g, dim=1))


def test_extreme_logits_give_the_limiting_values():
    # g = +1000 everywhere: real with certainty, fake loss ~ 1000 + log K, L_true -> log K.
    high = torch.full((1, 2), 1000.0)
    torch.testing.assert_close(fake_loss(high), torch.tensor([1000.0 + math.log(2)]))
    torch.testing.assert_close(not_fake_loss(high), torch.tensor([0.0]))
    torch.testing.assert_close(true_entropy_loss(high), torch.tensor([math.log(2)]))
    # g = -1000 everywhere: fake with certainty, the degenerate minimum L_true = 0.
    low = torch.full((1, 2), -1000.0)
    torch.testing.assert_close(fake_loss(low), torch.tensor([0.0]))
    torch.testing.assert_close(not_fake_loss(low), torch.tensor([1000.0 - math.log(2)]))
    torch.testing.assert_close(true_entropy_loss(low), torch.tensor([0.0]))

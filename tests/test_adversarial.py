"""Tests for ssl_core.math.adversarial: VAT direction, FAT sign correction, bad samples."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import Tensor, nn
from torch.autograd.functional import hessian

from ssl_core.math.adversarial import (
    bad_samples,
    hessian_vector_direction,
    keep_uncertain,
    kl_divergence_from_logits,
    normalize_per_sample,
    power_iteration_direction,
    sign_corrected_direction,
)


def tiny_mlp(seed: int, d_in: int = 5, classes: int = 3, dtype: torch.dtype = torch.float64):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, 4), nn.Tanh(), nn.Linear(4, classes)).to(dtype)


def exact_dominant_eigenvectors(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """Per sample, in float64: the top eigenvector and eigenvalues of ∇²_r KL(p(x)||p(x+r))|_0."""
    model = copy.deepcopy(model).double()
    vectors, spectra = [], []
    for xi in x.double():
        with torch.no_grad():
            clean = model(xi[None])

        def kl_at(r: Tensor, xi: Tensor = xi, clean: Tensor = clean) -> Tensor:
            return kl_divergence_from_logits(clean, model((xi + r)[None])).sum()

        h = hessian(kl_at, torch.zeros_like(xi), vectorize=True)
        eigenvalues, eigenvectors = torch.linalg.eigh(h)
        vectors.append(eigenvectors[:, -1])
        spectra.append(eigenvalues)
    return torch.stack(vectors), torch.stack(spectra)


def abs_cosine(a: Tensor, b: Tensor) -> Tensor:
    a, b = a.flatten(1).double(), b.flatten(1).double()
    return (a * b).sum(1).abs() / (a.norm(dim=1) * b.norm(dim=1))


# --- KL ---------------------------------------------------------------------------------


def test_kl_matches_hand_computed_values():
    p_logits = torch.tensor([[0.0, 0.0, 0.0], [math.log(3), 0.0, math.log(2)]], dtype=torch.float64)
    q_logits = torch.tensor([[math.log(2), 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    # row 0: p = (1/3, 1/3, 1/3), q = (1/2, 1/4, 1/4)
    row0 = (1 / 3) * (math.log((1 / 3) / (1 / 2)) + 2 * math.log((1 / 3) / (1 / 4)))
    # row 1: p = (1/2, 1/6, 1/3), q = (1/3, 1/3, 1/3)
    row1 = 0.5 * math.log(1.5) + (1 / 6) * math.log(0.5) + (1 / 3) * math.log(1.0)
    kl = kl_divergence_from_logits(p_logits, q_logits)
    assert kl.shape == (2,)
    torch.testing.assert_close(kl, torch.tensor([row0, row1], dtype=torch.float64))


def test_kl_of_identical_logits_is_zero():
    logits = torch.randn(6, 10, generator=torch.Generator().manual_seed(0)) * 5
    assert torch.equal(kl_divergence_from_logits(logits, logits), torch.zeros(6))


def test_kl_is_invariant_to_adding_a_constant_to_logits():
    gen = torch.Generator().manual_seed(1)
    p, q = torch.randn(4, 5, generator=gen), torch.randn(4, 5, generator=gen)
    shift = torch.tensor([[3.0], [-7.0], [100.0], [0.5]])
    torch.testing.assert_close(
        kl_divergence_from_logits(p + shift, q - 2 * shift), kl_divergence_from_logits(p, q)
    )


def test_kl_stays_finite_for_confident_predictions():
    p = torch.tensor([[1000.0, 0.0, -1000.0]])
    q = torch.tensor([[-1000.0, 0.0, 1000.0]])
    kl = kl_divergence_from_logits(p, q)
    torch.testing.assert_close(kl, torch.tensor([2000.0]))


# --- normalisation ------------------------------------------------------------------------


def test_normalize_per_sample_gives_unit_norm_over_non_batch_dims():
    d = torch.randn(3, 2, 4, 5, generator=torch.Generator().manual_seed(0))
    d[1] *= 1e3
    d[2] *= 1e-30  # squaring this underflows in float32 without the max-abs rescale
    norms = normalize_per_sample(d).flatten(1).norm(dim=1)
    torch.testing.assert_close(norms, torch.ones(3))


def test_normalize_per_sample_keeps_a_zero_sample_finite_and_zero():
    d = torch.zeros(2, 1, 3, 3)
    d[1, 0, 0, 0] = 2.0
    out = normalize_per_sample(d)
    assert torch.isfinite(out).all()
    assert torch.equal(out[0], torch.zeros(1, 3, 3))
    assert out[1, 0, 0, 0] == 1.0


# --- power iteration ----------------------------------------------------------------------


def test_power_iteration_finds_the_dominant_eigenvector_of_the_kl_hessian():
    model = tiny_mlp(seed=3)
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(103), dtype=torch.float64)
    expected, spectra = exact_dominant_eigenvectors(model, x)
    # 3 classes -> H has rank 2; 5 iterations shrink the second component by (l2/l1)^5.
    assert (spectra[:, -2] / spectra[:, -1]).max() < 0.6
    with torch.no_grad():
        clean = model(x)
    v = power_iteration_direction(
        model, x, clean, xi=1e-3, iterations=5, generator=torch.Generator().manual_seed(0)
    )
    assert v.dtype == torch.float64
    torch.testing.assert_close(v.norm(dim=1), torch.ones(4, dtype=torch.float64))
    assert abs_cosine(v, expected).min() > 0.99


def test_xi_1e_6_in_float32_loses_the_direction_that_xi_0_1_finds():
    # SPEC pitfall: pixels near 1, 100 inputs, float32. With 2 classes H has rank one, so
    # a single iteration is exact up to the finite difference and rounding: what is lost
    # is lost to xi alone. Measured mean |cos| with xi=1e-6 for seeds 0..5:
    # 0.88, 0.77, 0.41, 0.74, 0.51, 0.57; with xi=0.1 every cosine is >= 0.999.
    cos_tiny, cos_large = [], []
    for seed in range(3):
        model = tiny_mlp(seed, d_in=100, classes=2, dtype=torch.float32)
        x = 1.0 - 0.05 * torch.rand(8, 100, generator=torch.Generator().manual_seed(50 + seed))
        expected, _ = exact_dominant_eigenvectors(model, x)
        with torch.no_grad():
            clean = model(x)
        for xi, out in ((1e-6, cos_tiny), (1e-1, cos_large)):
            gen = torch.Generator().manual_seed(seed)
            v = power_iteration_direction(model, x, clean, xi=xi, iterations=1, generator=gen)
            out.append(abs_cosine(v, expected))
    cos_tiny, cos_large = torch.cat(cos_tiny), torch.cat(cos_large)
    assert cos_large.min() > 0.99
    assert cos_tiny.mean() < 0.9
    assert cos_tiny.mean() < cos_large.mean() - 0.2


def test_xi_1e_6_probe_rounds_away_on_pixels_near_one_in_float32():
    # The mechanism: a unit direction over 784 pixels moves each by ~1e-6/28 ~ 4e-8,
    # under half the float32 spacing just below 1.0 (6e-8) for most pixels.
    x = 1.0 - 1e-3 * torch.rand(4, 784, generator=torch.Generator().manual_seed(0))
    d = normalize_per_sample(torch.randn(4, 784, generator=torch.Generator().manual_seed(1)))
    unchanged_tiny = (x + 1e-6 * d == x).float().mean().item()
    unchanged_large = (x + 1e-1 * d == x).float().mean().item()
    unchanged_f64 = (x.double() + 1e-6 * d.double() == x.double()).float().mean().item()
    assert unchanged_tiny > 0.5
    assert unchanged_large == 0.0
    assert unchanged_f64 == 0.0


def test_power_iteration_returns_a_unit_vector_when_the_model_is_flat():
    # A zero gradient (probe rounded away, or a flat model) must not yield a zero
    # direction: x_bad would then equal x and a real image would be labelled fake.
    x = torch.randn(3, 6)

    def flat(z: Tensor) -> Tensor:
        return (0.0 * z[:, :1]).expand(-1, 4)

    start = normalize_per_sample(torch.randn(3, 6, generator=torch.Generator().manual_seed(7)))
    v = power_iteration_direction(
        flat, x, torch.zeros(3, 4), xi=0.1, iterations=2, generator=torch.Generator().manual_seed(7)
    )
    torch.testing.assert_close(v, start)


def test_power_iteration_takes_no_parameter_gradients():
    model = tiny_mlp(seed=0, dtype=torch.float32)
    x = torch.randn(4, 5, requires_grad=True)
    clean = model(x)  # still attached to the graph, as a caller's clean pass would be
    v = power_iteration_direction(model, x, clean, xi=0.1, iterations=2)
    assert all(p.grad is None for p in model.parameters())
    assert x.grad is None
    assert not v.requires_grad


def test_power_iteration_runs_in_float32_under_bfloat16_autocast():
    model = tiny_mlp(seed=1, d_in=8, dtype=torch.float32)
    x = torch.randn(6, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        clean = model(x)
    reference = power_iteration_direction(
        model, x, clean, xi=0.1, iterations=2, generator=torch.Generator().manual_seed(3)
    )
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        with torch.no_grad():
            clean_bf16 = model(x)
        v = power_iteration_direction(
            model, x, clean_bf16, xi=0.1, iterations=2, generator=torch.Generator().manual_seed(3)
        )
    assert clean_bf16.dtype == torch.bfloat16
    assert v.dtype == torch.float32
    assert abs_cosine(v, reference).min() > 0.99


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_hessian_vector_products_find_the_dominant_eigenvector_without_xi(dtype):
    model = tiny_mlp(seed=3, dtype=dtype)
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(103), dtype=dtype)
    expected, _ = exact_dominant_eigenvectors(model, x)
    v, clean = hessian_vector_direction(
        model, x, iterations=5, generator=torch.Generator().manual_seed(0)
    )
    assert v.dtype == dtype and not v.requires_grad
    torch.testing.assert_close(clean, model(x).detach())  # the forward gives p(x) for free
    torch.testing.assert_close(v.norm(dim=1), torch.ones(4, dtype=dtype))
    assert abs_cosine(v, expected).min() > 0.999


def test_one_hessian_vector_product_equals_the_exact_hessian_times_d():
    model = tiny_mlp(seed=4)
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    d = normalize_per_sample(torch.randn(3, 5, generator=torch.Generator().manual_seed(2)).double())
    v, _ = hessian_vector_direction(
        model, x, iterations=1, generator=torch.Generator().manual_seed(2)
    )
    for row in range(3):
        xi = x[row]
        clean = model(xi[None]).detach()

        def kl_at(r: Tensor, xi: Tensor = xi, clean: Tensor = clean) -> Tensor:
            return kl_divergence_from_logits(clean, model((xi + r)[None])).sum()

        hd = hessian(kl_at, torch.zeros_like(xi)) @ d[row]
        torch.testing.assert_close(v[row], hd / hd.norm())


def test_hessian_vector_direction_holds_under_bfloat16_autocast():
    # No ξ to vanish: in bfloat16 the exact product keeps the direction, where a
    # finite difference of the same network in bfloat16 loses it.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(100, 64), nn.Tanh(), nn.Linear(64, 2))
    x = torch.rand(16, 100, generator=torch.Generator().manual_seed(5))
    expected, _ = exact_dominant_eigenvectors(model, x)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        v, clean = hessian_vector_direction(model, x, generator=torch.Generator().manual_seed(1))
    assert clean.dtype == torch.bfloat16
    assert abs_cosine(v, expected).min() > 0.99


def test_hessian_vector_direction_takes_no_parameter_gradients():
    model = tiny_mlp(seed=0, dtype=torch.float32)
    x = torch.randn(4, 5, requires_grad=True)
    hessian_vector_direction(model, x, iterations=2)
    assert all(p.grad is None for p in model.parameters())
    assert x.grad is None


def test_power_iteration_rejects_negative_iterations_and_non_positive_xi():
    model = tiny_mlp(seed=0)
    x = torch.randn(2, 5, dtype=torch.float64)
    with pytest.raises(ValueError):
        power_iteration_direction(model, x, model(x), xi=0.1, iterations=-1)
    with pytest.raises(ValueError):
        power_iteration_direction(model, x, model(x), xi=0.0)


# --- sign correction (§4.2) and Proposition 2 ---------------------------------------------


def logistic(w: Tensor, b: float):
    """2-class linear logistic model of §4.1.1 with logits [0, w'x + b]."""

    def forward(z: Tensor) -> Tensor:
        return torch.stack([torch.zeros(z.shape[0], dtype=z.dtype), z @ w + b], dim=1)

    return forward


def test_sign_corrected_direction_moves_toward_the_linear_decision_boundary():
    # Proposition 2: for small eps, x + eps * r_adv is closer to {b + w'x = 0} than x.
    w = torch.randn(4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    b, eps = 0.3, 0.01
    forward = logistic(w, b)
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    clean = forward(x)
    v = power_iteration_direction(
        forward, x, clean, xi=1e-3, generator=torch.Generator().manual_seed(2)
    )
    r, _ = sign_corrected_direction(forward, x, clean, v, eps)
    margin = (x @ w + b).abs()
    assert ((x + eps * r) @ w + b).abs().lt(margin).all()


def test_unsigned_power_iteration_direction_points_away_from_the_boundary_for_some_points():
    # +v and -v are both dominant eigenvectors; the random start picks the sign. Measured:
    # 31 of 64 points move away with v; sign correction flips exactly those 31.
    w = torch.randn(4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    b, eps = 0.3, 0.01
    forward = logistic(w, b)
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    clean = forward(x)
    v = power_iteration_direction(
        forward, x, clean, xi=1e-3, generator=torch.Generator().manual_seed(2)
    )
    assert abs_cosine(v, w.expand(64, 4)).min() > 0.999  # H has rank one, along w
    margin = (x @ w + b).abs()
    away = ((x + eps * v) @ w + b).abs() > margin
    _, sign = sign_corrected_direction(forward, x, clean, v, eps)
    assert away.sum() >= 10
    assert torch.equal(sign < 0, away)


def test_sign_correction_keeps_the_larger_kl_side():
    model = tiny_mlp(seed=4, d_in=6)
    x = torch.randn(32, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    v = normalize_per_sample(
        torch.randn(32, 6, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    )
    eps = 0.5
    with torch.no_grad():
        clean = model(x)
        kl_plus = kl_divergence_from_logits(clean, model(x + eps * v))
        kl_minus = kl_divergence_from_logits(clean, model(x - eps * v))
    r, sign = sign_corrected_direction(model, x, clean, v, eps)
    with torch.no_grad():
        kl_kept = kl_divergence_from_logits(clean, model(x + eps * r))
    torch.testing.assert_close(kl_kept, torch.maximum(kl_plus, kl_minus))
    assert set(sign.tolist()) == {1.0, -1.0}  # both signs occur in this batch
    torch.testing.assert_close(r, v * sign[:, None])


def test_sign_correction_calls_forward_once_on_both_sides():
    model = tiny_mlp(seed=0)
    calls: list[int] = []

    def counting_forward(z: Tensor) -> Tensor:
        calls.append(z.shape[0])
        return model(z)

    x = torch.randn(5, 5, dtype=torch.float64)
    v = normalize_per_sample(torch.randn(5, 5, dtype=torch.float64))
    sign_corrected_direction(counting_forward, x, model(x), v, eps=0.3)
    assert calls == [10]


def test_sign_correction_ties_keep_plus_v():
    def flat(z: Tensor) -> Tensor:
        return torch.zeros(z.shape[0], 3)

    x = torch.randn(4, 2, 3)
    v = normalize_per_sample(torch.randn(4, 2, 3))
    r, sign = sign_corrected_direction(flat, x, torch.zeros(4, 3), v, eps=1.0)
    assert torch.equal(sign, torch.ones(4))
    assert torch.equal(r, v)


# --- bad samples (§4.1.2) -------------------------------------------------------------------


def test_bad_samples_lie_at_distance_c_from_x():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 4, 4, generator=gen)
    direction = torch.randn(3, 1, 4, 4, generator=gen) * torch.tensor([1e-3, 1.0, 50.0]).view(
        -1, 1, 1, 1
    )
    x_bad = bad_samples(x, direction, radius=2.0)
    torch.testing.assert_close((x_bad - x).flatten(1).norm(dim=1), torch.full((3,), 2.0))
    assert (abs_cosine(x_bad - x, direction) > 0.9999).all()


def test_keep_uncertain_drops_confident_bad_samples():
    alpha = 0.01

    def two_class_logits(p: float) -> list[float]:
        return [math.log(p / (1 - p)), 0.0]  # softmax gives (p, 1 - p)

    logits = torch.tensor(
        [
            [10.0, 0.0],  # p = 0.99995 > 0.99: dropped
            [0.5, 0.0],  # p = 0.62: kept
            two_class_logits(0.991),  # just above 1 - alpha: dropped
            two_class_logits(0.989),  # just below 1 - alpha: kept
        ],
        dtype=torch.float64,
    )
    assert keep_uncertain(logits, alpha).tolist() == [False, True, False, True]


def test_keep_uncertain_keeps_the_exact_boundary():
    # max_k p == 1 - alpha is not "> 1 - alpha", so it is kept (0.5 is exact in binary).
    assert keep_uncertain(torch.tensor([[0.0, 0.0]]), alpha=0.5).tolist() == [True]

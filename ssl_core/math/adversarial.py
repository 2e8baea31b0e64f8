"""Virtual-adversarial directions and adversarial bad samples.

The math shared by the VAT perturbation plugin and FAT's bad-sample plugin
("Understanding and Improving Virtual Adversarial Training", Kim, Choi, Kim 2019):

* the VAT direction r_adv of eq. (1), estimated as the dominant eigenvector of
  the Hessian of the KL at r = 0 by power iteration (Miyato et al. 2017, §2.1);
* FAT's sign correction (§4.2): ±v are both dominant eigenvectors, so keep the
  one that actually increases the KL more;
* bad samples x + C·r/‖r‖ and their α filter (§4.1.2).

Everything here is a pure function of its tensors and a ``forward`` callable;
the callable decides how batch norm behaves (the caller should make the
adversarial passes leave the evaluation statistics alone, SPEC "Batch norm").
Only gradients with respect to the perturbation are ever taken, never
parameter gradients, so nothing here touches ``param.grad``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

Forward = Callable[[Tensor], Tensor]


def kl_divergence_from_logits(p_logits: Tensor, q_logits: Tensor) -> Tensor:
    """Per-sample KL(softmax(p_logits) || softmax(q_logits)), shape (B,).

    This is the divergence inside L^VAT (§2.1) and eq. (1). Both sides go
    through ``log_softmax`` so that confident predictions (probabilities that
    underflow to 0) give finite values instead of ``0 * log 0`` NaNs.
    Logits are (B, K); classes are on the last dimension.
    """
    log_p = F.log_softmax(p_logits, dim=-1)
    log_q = F.log_softmax(q_logits, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


def normalize_per_sample(d: Tensor, eps: float = 1e-12) -> Tensor:
    """Scale each sample of ``d`` to unit L2 norm over all non-batch dimensions.

    VAT's ε and ξ and FAT's C are per-sample radii (eq. (1), §4.1.2), so the
    norm is taken per sample, not over the batch. Each sample is first divided
    by its largest absolute entry: power-iteration gradients can be so small
    (ξ·Hd with a confident classifier) that squaring them underflows in
    float32, which would turn a good direction into zero. A zero sample stays
    zero (the norm is clamped at ``eps``) rather than becoming NaN.
    """
    flat = d.flatten(1)
    tiny = torch.finfo(flat.dtype).tiny
    flat = flat / flat.abs().amax(dim=1, keepdim=True).clamp_min(tiny)
    flat = flat / flat.norm(dim=1, keepdim=True).clamp_min(eps)
    unit: Tensor = flat.view_as(d)
    return unit


def _working_dtype(dtype: torch.dtype) -> torch.dtype:
    """At least float32: half precision cannot resolve ξ-sized steps; float64 stays."""
    return torch.promote_types(dtype, torch.float32)


def power_iteration_direction(
    forward: Forward,
    x: Tensor,
    clean_logits: Tensor,
    xi: float,
    iterations: int = 1,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Unit estimate v of the dominant eigenvector of H = ∇²_r KL(p(x) || p(x + r))|_{r=0}.

    Miyato et al. (2017) approximate r_adv of eq. (1) by ε·v (paper §4.2).
    H is never formed: starting from d ~ N(0, I), each iteration takes the
    gradient of KL(p(x) || p(x + ξd)) with respect to d, which is ξ·H·d up to
    O(ξ²) (the KL's value and gradient vanish at r = 0), and renormalises it.

    Only ``torch.autograd.grad(kl, d)`` is used: no parameter gradients are
    computed or accumulated, and ``clean_logits`` is detached (it is p(·|x; θ̂),
    a constant target).

    ξ is the L2 norm of the per-sample probe ξ·d (d has unit norm per sample).
    ξ = 1e-6 is the paper's / official default, but in float32 a unit direction
    spread over many pixels moves each pixel by far less than the spacing of
    floats near 1.0 (≈ 1.2e-7), so ``x + ξd`` rounds back to ``x`` and the
    returned direction is mostly noise (SPEC pitfall "ξ = 1e-6 in float32").
    When the probe rounds away completely the gradient is exactly zero; such
    a sample keeps its previous iterate (the random start after one
    iteration), so the result is always a unit vector but not an eigenvector.
    Use a larger ξ, e.g. 0.1 for MNIST; the finite difference then has an
    O(ξ) bias instead (on a 2-class model, where H has rank one, one
    iteration with ξ = 0.1 still has |cosine| > 0.99 with the exact
    eigenvector; see tests/test_adversarial.py).

    The computation runs with autocast disabled and in at least float32
    (float64 inputs stay float64), because ξ-sized differences vanish in
    float16/bfloat16. The returned direction, detached, has that dtype and x's
    shape. ``forward`` must not mix samples (e.g. batch norm in training mode
    would), or the per-sample directions interact.
    """
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    if xi <= 0:
        raise ValueError(f"xi must be > 0, got {xi}")
    dtype = _working_dtype(x.dtype)
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.detach().to(dtype)
        target = clean_logits.detach().to(_working_dtype(clean_logits.dtype))
        d = torch.randn(x.shape, generator=generator, device=x.device, dtype=dtype)
        d = normalize_per_sample(d)
        for _ in range(iterations):
            d.requires_grad_(True)
            perturbed_logits = forward(x + xi * d)
            kl = kl_divergence_from_logits(target, perturbed_logits.to(target.dtype)).sum()
            (grad,) = torch.autograd.grad(kl, d, allow_unused=True)
            d = d.detach()
            if grad is not None:
                # A sample whose gradient is exactly zero carries no information
                # (the probe rounded away, or the model is flat there): keep its
                # previous iterate so the result is always a unit vector.
                alive = grad.flatten(1).abs().amax(dim=1) > 0
                alive = alive.view(-1, *([1] * (d.dim() - 1)))
                d = torch.where(alive, normalize_per_sample(grad), d)
    return d


def hessian_vector_direction(
    forward: Forward,
    x: Tensor,
    iterations: int = 1,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Power iteration with exact products H·d; returns the unit direction and p(x)'s logits.

    At r = 0 the Hessian of KL(p(x) ‖ p(x + r)) is exactly H = Jᵀ(diag p − ppᵀ)J, with J
    the Jacobian of the logits at x: the logits' own second derivative is multiplied by
    p − p = 0. Each iteration takes J·d by forward-mode differentiation
    (``torch.func.jvp``, whose primal output is the logits at x), forms
    u = (diag p − ppᵀ)Jd in at least float32, and Jᵀu by one backward to x. No ξ, no
    finite difference: nothing vanishes in bfloat16, so unlike
    :func:`power_iteration_direction` this runs in the ambient (autocast) precision.

    ``forward`` must not update buffers in place (``torch.func`` refuses it): wrap batch
    norm in :func:`ssl_core.engine.bn.untracked_bn_stats`. Only gradients with respect to the
    input are taken. The logits returned are those of the first iteration's forward at
    x, detached: the clean prediction p(·|x; θ̂), for free.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    x = x.detach().requires_grad_(True)
    d = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    d = normalize_per_sample(d)
    clean: Tensor | None = None
    for _ in range(iterations):
        primal_and_tangent = torch.func.jvp(forward, (x,), (d,))
        logits, jd = primal_and_tangent[0], primal_and_tangent[1]
        clean = logits.detach() if clean is None else clean
        p = F.softmax(logits.detach().to(_working_dtype(logits.dtype)), dim=-1)
        jd = jd.detach().to(p.dtype)
        u = p * jd - p * (p * jd).sum(dim=-1, keepdim=True)
        (hd,) = torch.autograd.grad(logits, x, grad_outputs=u.to(logits.dtype))
        alive = hd.flatten(1).abs().amax(dim=1) > 0
        alive = alive.view(-1, *([1] * (d.dim() - 1)))
        d = torch.where(alive, normalize_per_sample(hd.to(d.dtype)), d)
    assert clean is not None
    return d.detach(), clean


def sign_corrected_direction(
    forward: Forward, x: Tensor, clean_logits: Tensor, v: Tensor, eps: float
) -> tuple[Tensor, Tensor]:
    """Of ±v keep, per sample, the side with the larger KL(p(x) || p(x ± ε·v)) (§4.2).

    Both signs are dominant eigenvectors of H, so the power iteration's sign
    is an accident of the random start; the second-order Taylor expansion
    cannot tell them apart but the third-order term can. For a linear logistic
    model the larger-KL side is the one toward the decision boundary
    (Proposition 2), which is what makes x + C·r/‖r‖ a useful bad sample.

    Both sides are evaluated in a single call of ``forward`` on the
    concatenation [x + ε·v; x − ε·v], under ``torch.no_grad`` (choosing a sign
    is not differentiated), in the ambient precision (bfloat16 under autocast),
    the KLs in at least float32. At radius ε the two KLs differ by far more than
    bfloat16's rounding except near ties, where either side is as good; the
    signs chosen in bfloat16 agree with float32's for most samples
    (docs/results.md, section precision_direction). Ties keep +v. ``v`` is
    assumed to be a unit direction per sample.

    Returns the signed direction (same dtype as ``v``) and the per-sample sign
    as a float tensor of ±1, shape (B,).
    """
    batch = x.shape[0]
    dtype = _working_dtype(torch.promote_types(x.dtype, v.dtype))
    with torch.no_grad():
        xw = x.detach().to(dtype)
        step = eps * v.detach().to(dtype)
        target = clean_logits.detach().to(_working_dtype(clean_logits.dtype))
        logits = forward(torch.cat([xw + step, xw - step], dim=0)).to(target.dtype)
        kl_plus = kl_divergence_from_logits(target, logits[:batch])
        kl_minus = kl_divergence_from_logits(target, logits[batch:])
        sign = torch.where(kl_plus >= kl_minus, 1.0, -1.0).to(v.dtype)
    direction = v.detach() * sign.view(-1, *([1] * (v.dim() - 1)))
    return direction, sign


def bad_samples(x: Tensor, direction: Tensor, radius: float) -> Tensor:
    """x_bad = x + C·r/‖r‖ (§4.1.2), the norm taken per sample.

    Proposition 2: moving along the (sign-corrected) adversarial direction
    moves x toward the decision boundary, so at distance C the point lands in
    the low-density region between classes, the kind of sample Bad GAN's
    generator is trained to produce. Normalising here means any positive
    multiple of r_adv (e.g. ε·v) can be passed.
    """
    return x + radius * normalize_per_sample(direction)


def keep_uncertain(logits: Tensor, alpha: float) -> Tensor:
    """Boolean mask of bad samples to keep: max_k p(k|x_bad) <= 1 − α (§4.1.2).

    A candidate the classifier still calls confidently one class is not near
    a decision boundary (C too small, or too large so it crossed into another
    cluster), so it would teach "fake" on a region that looks real; such
    candidates are dropped. ``logits`` are the K-class logits of x_bad, (B, K).
    """
    return F.softmax(logits, dim=-1).amax(dim=-1) <= 1.0 - alpha

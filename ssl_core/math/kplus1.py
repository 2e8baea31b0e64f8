"""(K+1)-class terms with the fake class's logit fixed at 0.

Bad GAN (paper eq. (3)) and FAT (eq. (8)) both treat K-class classification as
a (K+1)-class problem whose extra class means "fake". Following eq. (8), the
K+1-th logit is fixed at 0 and everything is written through the K
pre-softmax outputs g of the ordinary classifier, so

    p(k | x)   = exp(g_k) / (1 + Σ_j exp(g_j))   for k ≤ K,
    p(K+1 | x) = 1 / (1 + Σ_j exp(g_j)),

and the K-class prediction softmax(g) is unchanged. Fixing the fake logit
removes the over-parameterisation of a K+1 softmax (Salimans et al. 2016).
With S = logsumexp(g), log(1 + Σ exp g) = softplus(S), which is how every term
below is computed: no exp of a large logit is ever formed, so g = ±1000 gives
finite values and gradients. One implementation serves both FAT's bad-sample
plugin and the Bad GAN plugin. All functions take g of shape (B, K) (classes on
the last dimension) and return per-sample values of shape (B,).

The degenerate reading of eq. (8)
---------------------------------
Eq. (8) as printed puts only ``true_entropy_loss`` on real unlabeled data:
L_true = −Σ_{k≤K} q_k log q_k with q_k = p(k|x) over the K+1 classes. That is
intended to make real images confidently one of the K classes, but it is also
minimised by calling every real image *fake*: letting all g → −∞ sends every
q_k → 0, so L_true → 0 while the image is classified as class K+1. Nothing in
eq. (8) pushes back on real data (L_fake only acts on bad samples), and
K-class terms built on softmax(g), such as a cross-entropy p(y|x, y ≤ K) as in
Bad GAN's eq. (3), are invariant to a common shift of g, so they do not resist
the drift either. Bad GAN's eq. (3) guards against this with
its second term, −log Σ_{k≤K} p(k|x) on unlabeled data ("this is not fake"),
provided here as ``not_fake_loss`` so a plugin can add it as an option (SPEC
pitfall "Eq. (8) as printed": a bare FAT loop with only the entropy form lost
accuracy once λ > 0; adding this term kept it stable).

Useful identity, with P_real = Σ_{k≤K} q_k = exp(−not_fake_loss):
true_entropy_loss = P_real · (not_fake_loss + conditional_entropy).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _log_partition(g: Tensor) -> Tensor:
    """log(1 + Σ_k exp g_k) = softplus(logsumexp(g)), the (K+1)-class normaliser."""
    return F.softplus(torch.logsumexp(g, dim=-1))


def log_prob_fake(g: Tensor) -> Tensor:
    """log p(K+1 | x) = −log(1 + Σ_k exp g_k) = −softplus(logsumexp(g))."""
    return -_log_partition(g)


def fake_loss(g: Tensor) -> Tensor:
    """L_fake of eq. (8): −log p(K+1 | x) = softplus(logsumexp(g)).

    Applied to bad samples (FAT) or generated samples (Bad GAN's third term of
    eq. (3)) to teach the classifier that they belong to no real class.
    """
    return _log_partition(g)


def not_fake_loss(g: Tensor) -> Tensor:
    """−log Σ_{k≤K} p(k | x) = softplus(logsumexp(g)) − logsumexp(g) = softplus(−logsumexp(g)).

    Bad GAN eq. (3)'s second term on real unlabeled data: it says "real images
    are not fake" and is what rules out the degenerate minimum of
    ``true_entropy_loss`` (see the module docstring). Computed as
    softplus(−S), which avoids the cancellation of softplus(S) − S for large S.
    """
    return F.softplus(-torch.logsumexp(g, dim=-1))


def true_entropy_loss(g: Tensor) -> Tensor:
    """L_true of eq. (8) as printed: −Σ_{k≤K} q_k log q_k, q_k = exp(g_k)/(1 + Σ_j exp g_j).

    The sum runs over the first K of the K+1 probabilities only (the fake
    class is left out), so it is not a full entropy. log q_k is computed as
    g_k − softplus(logsumexp(g)); when q_k underflows to 0 the product
    q_k · log q_k is 0 with a finite gradient.
    """
    log_q = g - _log_partition(g).unsqueeze(-1)
    return -(log_q.exp() * log_q).sum(dim=-1)


def conditional_entropy(g: Tensor) -> Tensor:
    """Entropy of the K-class prediction, −Σ_k p_k log p_k with p = softmax(g).

    Bad GAN eq. (3)'s fourth term on unlabeled data: it pushes predictions to
    be confident, i.e. the decision boundary away from the data.
    """
    log_p = F.log_softmax(g, dim=-1)
    return -(log_p.exp() * log_p).sum(dim=-1)

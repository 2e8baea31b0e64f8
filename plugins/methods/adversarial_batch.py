"""Per-batch adversarial quantities that ``vat`` and ``bad_samples`` share.

Both plugins need the clean prediction p(·|x; θ̂) of the unlabeled batch and its
virtual-adversarial direction r_adv/‖r_adv‖ (§2.1, §4.1.2). Each is computed at most
once per batch and left in ``batch.shared`` under the keys documented in
:class:`ssl_core.engine.context.BatchContext`:

- ``"clean_logits"`` (:data:`CLEAN_LOGITS`): outputs on ``batch.x_unlabeled`` without
  gradient, written by whichever plugin needs them first;
- ``"adversarial_direction"`` (:data:`DIRECTION`): the unit per-sample direction,
  written by ``vat``; ``bad_samples`` estimates its own only when it is absent.

Every pass here goes through the bare ``run.classifier`` (nothing is back-propagated
into the parameters, so nothing takes part in gradient synchronisation) inside
:func:`ssl_core.engine.bn.frozen_bn_stats`: the batch is normalised with its own statistics
(training mode, as in VAT) but the running statistics used at evaluation stay those
of the supervised plugin's labeled forward. They also run without the model's noise
layers (:func:`ssl_core.engine.noise.noise_free`): the target p(·|x; θ̂) and the direction
belong to one fixed network, so its curvature, not fresh noise, decides r_adv.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ssl_core.engine.bn import frozen_bn_stats, untracked_bn_stats
from ssl_core.engine.context import BatchContext
from ssl_core.engine.noise import noise_free
from ssl_core.engine.precision import full_precision
from ssl_core.engine.run import Run
from ssl_core.math.adversarial import (
    hessian_vector_direction,
    power_iteration_direction,
    sign_corrected_direction,
)

CLEAN_LOGITS = "clean_logits"
DIRECTION = "adversarial_direction"


def shared_clean_logits(run: Run, batch: BatchContext) -> Tensor:
    """p(·|x; θ̂) of the unlabeled batch as logits: the fixed target of eq. (1).

    Computed once per batch (one no-grad forward) and reused by every later reader.
    It runs in at least float32 with autocast off, like the power iteration that starts
    from it: were the target rounded to bfloat16 and the probes not, the finite
    difference would pick up the rounding gap as a first-order term larger than ξ·Hd.
    """
    if CLEAN_LOGITS not in batch.shared:
        x = batch.x_unlabeled
        with (
            torch.no_grad(),
            torch.autocast(device_type=x.device.type, enabled=False),
            frozen_bn_stats(run.classifier),
            noise_free(run.classifier),
        ):
            batch.shared[CLEAN_LOGITS] = run.classifier(full_precision(x))
    return batch.shared[CLEAN_LOGITS]


#: Below this, a finite-difference probe of a float32 image rounds away (docs/fat.md).
SMALLEST_SAFE_XI = 1e-3


def warn_about_xi(run: Run, key: str, xi: float, method: str) -> None:
    """Warn when ξ is too small for the finite difference on float32 images."""
    if method == "finite_difference" and xi < SMALLEST_SAFE_XI and len(run.data.input_shape) > 1:
        run.warn(
            f"{key} = {xi:g}: a probe that small rounds away on float32 images and the"
            " power iteration returns mostly its random start (docs/fat.md); the MNIST"
            f' recipes use 0.1, or set {key.rsplit(".", 1)[0]}.direction = "hvp"'
        )


def estimate_direction(
    run: Run,
    batch: BatchContext,
    xi: float,
    iterations: int,
    sign_eps: float | None,
    method: str = "finite_difference",
) -> Tensor:
    """Unit direction of r_adv for the unlabeled batch (power iteration, §2.1).

    ``method = "finite_difference"``: the gradient of KL(p(x) ‖ p(x + ξd)) with respect
    to d, in float32 even under autocast, from the shared clean logits
    (:func:`ssl_core.math.adversarial.power_iteration_direction`). ``"hvp"``: exact
    Hessian-vector products in the training precision, whose own forward at x gives
    the clean logits (:func:`ssl_core.math.adversarial.hessian_vector_direction`). Only
    gradients with respect to the perturbation are taken. With ``sign_eps`` set, of ±v
    the side with the larger KL at radius ``sign_eps`` is kept per sample (§4.2; one
    no-grad forward over the 2B inputs, in the training precision) and the share of
    flipped samples is logged as ``sign_flipped``. After this call ``batch.shared``
    holds the clean logits.
    """
    x = batch.x_unlabeled
    model = run.classifier
    with noise_free(model):
        if method == "hvp":
            with untracked_bn_stats(model):
                direction, logits = hessian_vector_direction(model, x, iterations)
            clean = batch.shared.setdefault(CLEAN_LOGITS, logits)
        else:
            clean = shared_clean_logits(run, batch)
            with frozen_bn_stats(model):
                direction = power_iteration_direction(model, x, clean, xi, iterations)
        if sign_eps is not None:
            with frozen_bn_stats(model):
                direction, sign = sign_corrected_direction(model, x, clean, direction, sign_eps)
            batch.stats["sign_flipped"] = (sign < 0).float().mean()
    return direction.to(x.dtype)

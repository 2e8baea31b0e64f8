"""Training precision: one switch, ``train.precision``, through ``torch.autocast``.

``"bf16"`` runs the training forwards (every plugin's ``sslrun_pre_batch``,
``sslrun_collect_losses`` and ``sslrun_after_step``) under ``torch.autocast`` with
bfloat16, on the CPU and on CUDA alike; weights, optimizer states and gradients stay
float32, and evaluation is float32. The numerically delicate parts keep their own
precision explicitly: losses, softmaxes, KLs and the K+1 terms are computed from
:func:`full_precision` logits, and VAT's finite-difference power iteration runs in
float32 with autocast off (:func:`ssl_core.math.adversarial.power_iteration_direction`),
since a ξ-sized probe vanishes in bfloat16.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch
from torch import Tensor

PRECISIONS = ("fp32", "bf16")


def autocast(precision: str, device: torch.device) -> AbstractContextManager[None]:
    """The context the training forwards run in: bfloat16 autocast, or nothing."""
    return torch.autocast(
        device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16"
    )


def full_precision(t: Tensor) -> Tensor:
    """``t`` in at least float32 (float64 stays): KLs and K+1 terms are never taken in half."""
    return t.to(torch.promote_types(t.dtype, torch.float32))

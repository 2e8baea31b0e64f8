"""Adam and the per-epoch learning-rate schedules of the paper and of VAT."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from ssl_core.recipe.spec import OptimSpec


def build_optimizer(
    model: nn.Module, spec: OptimSpec, capturable: bool = False
) -> torch.optim.Adam:
    """Adam for ``model``; ``capturable`` keeps its step count on the device (CUDA graphs)."""
    settings: dict[str, Any] = {"capturable": True} if capturable else {}
    return adam(
        model.parameters(),
        lr=spec.lr,
        betas=(spec.beta1, spec.beta2),
        weight_decay=spec.weight_decay,
        **settings,
    )


def adam(params: Iterable[Tensor], **settings: Any) -> torch.optim.Adam:
    """Adam with the fused kernel where this torch and device have one.

    The fused update is the same arithmetic in one kernel over all parameters; on one
    CPU thread it takes the MNIST MLP's step from about 5.8 to 1.2 ms (docs/results.md,
    section precision_timing), a tenth of a supervised step. Older torch versions, or
    devices without the kernel, get the ordinary implementation.
    """
    params = list(params)
    try:
        return torch.optim.Adam(params, fused=True, **settings)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, **settings)


def epoch_hyperparameters(spec: OptimSpec, epoch: int, epochs: int) -> tuple[float, float]:
    """(learning rate, Adam β1) for a 0-based epoch; a pure function, so resume is exact.

    ``exponential``: lr · decay^epoch (paper §5.1 setting: Adam, decayed per epoch).
    ``linear``: VAT's schedule, constant then linearly to 0 over the last
    ``decay_fraction`` of the epochs with β1 switched to ``beta1_decay``.
    """
    if spec.schedule == "constant":
        return spec.lr, spec.beta1
    if spec.schedule == "exponential":
        return spec.lr * spec.decay**epoch, spec.beta1
    decay_start = int(round(epochs * (1.0 - spec.decay_fraction)))
    if epoch < decay_start:
        return spec.lr, spec.beta1
    return spec.lr * (epochs - epoch) / max(epochs - decay_start, 1), spec.beta1_decay


def apply_hyperparameters(optimizer: torch.optim.Optimizer, lr: float, beta1: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
        group["betas"] = (beta1, group["betas"][1])

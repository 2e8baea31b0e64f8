"""The per-batch channel between plugins."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor


@dataclass
class BatchContext:
    """One training iteration's inputs and the results plugins share about them.

    ``shared`` holds per-batch results under documented keys, written by one plugin
    and read by later ones (plugins run in their declared order). Built-in keys:

    - ``"clean_logits"``: classifier outputs on ``x_unlabeled`` without gradient,
      batch-norm running statistics untouched (written by ``vat`` or ``bad_samples``,
      whichever needs them first).
    - ``"adversarial_direction"``: unit-norm per-sample direction r_adv/||r_adv||
      of the unlabeled batch (written by ``vat``; ``bad_samples`` reuses it instead
      of running a second power iteration).
    - ``"generated"``: the Bad GAN generator's batch (written by ``badgan``).
    - ``"density_model"``: a ``ssl_plugins.methods.badgan.DensityModel`` (log p(x) and a
      threshold τ) written by a density plugin before ``sslrun_after_step``; ``badgan``
      adds the density penalty of its generator objective (paper §2.2).

    ``terms`` holds the batch's loss terms by name once every plugin has returned its
    own (from ``sslrun_after_step`` on; a logger reads them there).

    ``stats`` collects per-batch numbers that are not losses (e.g. how many bad
    samples were kept); the core averages them over the epoch and logs them. Give
    them as tensors (``keep.sum()``, not ``int(keep.sum())``): reading a value on the
    host makes the step wait for the device.
    """

    epoch: int
    iteration: int
    global_step: int
    x_labeled: Tensor
    y_labeled: Tensor
    x_unlabeled: Tensor
    shared: dict[str, Any] = field(default_factory=dict)
    terms: dict[str, Tensor] = field(default_factory=dict)
    stats: dict[str, Tensor | float] = field(default_factory=dict)

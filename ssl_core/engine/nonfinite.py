"""The non-finite guard: loss terms watched on the device, read every few steps.

Reading a tensor's value on the host (``float(t)``, ``bool(t)``, ``t.item()``) waits for
the device to finish everything queued; one such read per step stalls a GPU. The guard
records, per step and without reading anything, which of the step's terms are not
finite, and reads its record every ``train.check_every`` steps, before every checkpoint
and at the end of every epoch. A fault stops the run with an error that names the first
non-finite terms, their plugins and the step where they appeared; no checkpoint is
written after the fault, so the last good one is kept, as with a check at every step.
(``train.on_nonfinite = "skip"`` must decide before each step; it reads every step.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ssl_core.engine.distributed import World
from ssl_core.errors import TrainingError


@dataclass(frozen=True)
class StepTerms:
    """Where a recorded step was, and which plugin returned each of its terms."""

    epoch: int
    iteration: int
    owners: dict[str, str]


class NonFiniteGuard:
    """Per-step non-finite flags of the loss terms, kept on the device until read."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.steps: list[StepTerms] = []
        self.flags: list[Tensor] = []

    def record(
        self, epoch: int, iteration: int, terms: dict[str, Tensor], owners: dict[str, str]
    ) -> None:
        """Note which of this step's terms are not finite (no host read)."""
        values = torch.stack([value.detach().reshape(()).float() for value in terms.values()])
        self.flags.append(~torch.isfinite(values))
        self.steps.append(StepTerms(epoch, iteration, {name: owners[name] for name in terms}))

    @property
    def due(self) -> bool:
        return len(self.flags) >= self.every

    def check(self, world: World) -> None:
        """Read every recorded step at once (all ranks together); raise on a fault."""
        steps, flags = self.steps, self.flags
        self.steps, self.flags = [], []
        local = torch.stack([f.any() for f in flags]).tolist() if flags else []
        first = next((i for i, bad in enumerate(local) if bad), None)
        (fault,) = world.any(first is not None)
        if not fault:
            return
        if first is None:
            where = _where(steps[-1]) if steps else "this step"
            raise TrainingError(
                f"non-finite loss on another process at or before {where};"
                " the last good checkpoint is kept"
            )
        step = steps[first]
        bad = flags[first].tolist()
        culprit = ", ".join(
            f"'{name}' of plugin '{owner}'"
            for (name, owner), is_bad in zip(step.owners.items(), bad, strict=True)
            if is_bad
        )
        suffix = f" (rank {world.rank})" if world.rank else ""
        raise TrainingError(
            f"non-finite loss at {_where(step)}{suffix}: {culprit}; the last good checkpoint"
            ' is kept (train.on_nonfinite = "skip" skips such batches instead)'
        )


def _where(step: StepTerms) -> str:
    return f"epoch {step.epoch + 1}, iteration {step.iteration + 1}"

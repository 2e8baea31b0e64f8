"""The process group a run belongs to: one process, or one rank of a torchrun job."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class World:
    """Rank and size of the job; rank 0 alone writes files and shows progress."""

    rank: int = 0
    size: int = 1
    device: torch.device | None = None

    @classmethod
    def single(cls) -> World:
        return cls()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module training forwards go through (the bare module in one process)."""
        return model

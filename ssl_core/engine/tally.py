"""The epoch in progress: running sums of the loss terms and stats, and the epoch's record."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

from ssl_core.engine.optim import epoch_hyperparameters
from ssl_core.engine.run import Run
from ssl_core.engine.scores import scores
from ssl_core.errors import TrainingError


@dataclass
class EpochTally:
    """The epoch so far on this rank: summed terms and stats, steps taken and skipped.

    Tensors are summed as tensors, exactly as an uninterrupted epoch sums them, and
    checkpointed as they are, so an epoch resumed mid-way reports the same averages.
    """

    sums: dict[str, Tensor | float] = field(default_factory=dict)
    steps: int = 0
    skipped: int = 0
    seconds: float = 0.0
    last_terms: dict[str, Tensor] = field(default_factory=dict)
    _clock: float = 0.0

    def add(self, terms: dict[str, Tensor], stats: dict[str, Tensor | float]) -> None:
        for name, value in [*terms.items(), *stats.items()]:
            value = value.detach() if isinstance(value, Tensor) else value
            self.sums[name] = self.sums.get(name, 0.0) + value
        self.steps += 1
        self.last_terms = {name: value.detach() for name, value in terms.items()}

    def skip(self) -> None:
        self.skipped += 1

    def resume_clock(self) -> None:
        self._clock = time.perf_counter()

    def elapsed(self) -> float:
        """Training seconds of the epoch, over every process that ran part of it."""
        return self.seconds + time.perf_counter() - self._clock

    def state_dict(self) -> dict[str, Any]:
        return {
            "sums": dict(self.sums),
            "steps": self.steps,
            "skipped": self.skipped,
            "seconds": self.elapsed(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], device: torch.device) -> EpochTally:
        sums = {
            name: value.to(device) if isinstance(value, Tensor) else value
            for name, value in state["sums"].items()
        }
        return cls(sums, int(state["steps"]), int(state["skipped"]), float(state["seconds"]))


def epoch_metrics(run: Run, epoch: int, tally: EpochTally) -> dict[str, Any]:
    """The epoch's record: mean terms and stats over every rank's steps, accuracies, extras."""
    if run.device.type == "cuda":  # the clock must not stop before the queued work does
        torch.cuda.synchronize(run.device)
    seconds = tally.elapsed()
    lr, _ = epoch_hyperparameters(run.recipe.optim, epoch, run.recipe.train.epochs)
    metrics: dict[str, Any] = {"epoch": epoch + 1, "lr": tidy(lr)}  # 1 for the first, as on screen
    ranks = run.world.gather(({k: float(v) for k, v in tally.sums.items()}, tally.steps))
    steps = sum(count for _, count in ranks)
    for name in ranks[0][0]:
        metrics[name] = sum(sums.get(name, 0.0) for sums, _ in ranks) / max(steps, 1)
    if run.recipe.train.on_nonfinite == "skip":
        metrics["skipped_batches"] = tally.skipped
    metrics.update(scores(run))
    metrics["seconds"] = seconds
    # In plugin order, each seeing the extras of those before it (a logger sees all).
    for plugin, extra in run.plugins.call_in_turn(
        "sslrun_epoch_end", run=run, epoch=epoch, metrics=MappingProxyType(metrics)
    ):
        for key, value in (extra or {}).items():
            if key in metrics:
                raise TrainingError(f"plugin '{plugin.name}' returned metric '{key}' twice")
            metrics[key] = plain_metric(plugin.name, key, value)
    return metrics


def tidy(value: float) -> float:
    """``value`` to 12 significant digits: a schedule's 0.1 * 3 is logged as 0.3, not
    0.30000000000000004 (the digits dropped are rounding error, not information)."""
    return float(f"{value:.12g}")


def plain_metric(plugin: str, key: str, value: Any) -> int | float | str | bool:
    """A metric as a plain JSON and checkpoint value (numbers from numpy or torch too)."""
    if isinstance(value, float):
        return tidy(value)
    if isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, Tensor) and value.numel() == 1:
        item = value.item()
        return tidy(item) if isinstance(item, float) else item
    try:
        return tidy(float(value))
    except (TypeError, ValueError):
        raise TrainingError(
            f"plugin '{plugin}' returned metric '{key}' of type {type(value).__name__};"
            " metrics are numbers or strings"
        ) from None
